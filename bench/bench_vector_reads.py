"""Reading stored image embeddings a chunk at a time: decoded by vlsr, against FiftyOne's decoding.

Usage (from the repository root)::

    .venv/bin/python bench/bench_vector_reads.py [n_samples dim rounds]   # default 50000 512 6

A dataset of ``n_samples`` samples gets random float32 vectors of ``dim`` in a VectorField (as
the runs store image embeddings). Then, in one run of this script, rounds interleaved: every
vector read with ``chunks.iter_chunks`` as FiftyOne decodes them (``values`` of the field),
and as stored (``chunks.stored``), decoded by ``chunks.vectors``; medians and their ratio.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402

from vlsr_core.fo import chunks  # noqa: E402
from usage import sizes  # noqa: E402


def main(n_samples=50_000, dim=512, rounds=6):
    ds = fo.Dataset()
    try:
        ds.add_samples([fo.Sample(filepath=f"/bench/{i}.png") for i in range(n_samples)],
                       progress=False)
        ds.add_sample_field("embedding", fo.VectorField)
        rng = np.random.default_rng(0)
        ds.set_values("embedding", list(rng.normal(size=(n_samples, dim)).astype(np.float32)),
                      progress=False)
        ids = chunks.sample_ids(ds)
        ways = {"FiftyOne decodes (values of the field)": "embedding",
                "as stored, decoded by chunks.vectors": chunks.stored("embedding")}
        times = {name: [] for name in ways}
        for _ in range(rounds):
            for name, field in ways.items():
                t = time.perf_counter()
                for _, (values,) in chunks.iter_chunks(ds, [field], ids=ids):
                    chunks.vectors(values, dim)
                times[name].append(time.perf_counter() - t)
        medians = {name: float(np.median(t)) for name, t in times.items()}
        base = medians["FiftyOne decodes (values of the field)"]
        print(f"{n_samples:,} vectors of {dim}, median of {rounds} rounds")
        print(f"{'read':<42} {'s':>6} {'ratio':>6}")
        for name, seconds in medians.items():
            print(f"{name:<42} {seconds:>6.2f} {seconds / base:>6.2f}")
    finally:
        ds.delete()


if __name__ == "__main__":
    main(*sizes(sys.argv[1:], __doc__, most=3))

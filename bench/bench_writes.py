"""How the size of a bulk write of image embeddings sets its speed: the grain at which the
embedding stage can keep finished work without slowing down.

    .venv/bin/python bench/bench_writes.py [n_samples] [dim]     # default 8192 768

Writes ``n_samples`` embeddings (and the error field, as the stage does) with one
``set_values`` per batch, for batch sizes from 8 to 1,024, in a throwaway database, and prints
samples/s and the ratio to 1,024-sample writes, measured in the same run. The embedding stage
writes every ``WRITE_EVERY`` samples or ``WRITE_SECONDS``, whichever comes first.
"""

import os
import sys
import time

os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402
from usage import sizes  # noqa: E402

BATCHES = (8, 32, 128, 1024)


def main(n=8192, dim=768):
    rng = np.random.default_rng(0)
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=f"/img/{i}.jpg") for i in range(n)], progress=False)
    dataset.add_sample_field("emb", fo.VectorField)
    dataset.add_sample_field("err", fo.StringField)
    ids = dataset.values("id")
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    rates = {}
    try:
        for _ in range(2):  # two rounds, interleaved: the best of each
            for batch in BATCHES:
                dataset.clear_sample_field("emb")
                start = time.perf_counter()
                for i in range(0, n, batch):
                    part = ids[i : i + batch]
                    dataset.set_values("emb", dict(zip(part, vectors[i : i + batch])), key_field="id")
                    dataset.set_values("err", dict.fromkeys(part), key_field="id")
                rate = n / (time.perf_counter() - start)
                rates[batch] = max(rates.get(batch, 0.0), rate)
    finally:
        dataset.delete()
    print(f"set_values of {n:,} {dim}-d embeddings (+ the error field), best of 2 interleaved rounds")
    print(f"{'batch':>6} {'samples/s':>10} {'vs 1,024':>9}")
    for batch in BATCHES:
        print(f"{batch:>6} {rates[batch]:>10,.0f} {rates[batch] / rates[1024]:>9.2f}")


if __name__ == "__main__":
    main(*sizes(sys.argv[1:], __doc__, most=2))

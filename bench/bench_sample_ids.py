"""Reading a collection's sample ids: one streamed query (``chunks.sample_ids``) against the
pages with ``skip`` it replaced, and against one ``values("_id")`` list.

Usage (from the repository root)::

    .venv/bin/python bench/bench_sample_ids.py [n ...]     # default 200000

For each n, a dataset of n samples (a filepath and one Classification each) is inserted, then
each way reads the ids of the dataset, of a view matching half of it, and of the dataset sorted
by a field, best of 3; tracemalloc gives each way's peak Python allocation. The skip pages (16,384
ids each, as before) cost n²/(2 x 16,384) skipped documents, and a sorted view sorts once per
page.
"""

import os
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402
from fiftyone import ViewField as F  # noqa: E402

from vlsr_core.fo import chunks  # noqa: E402
from usage import sizes  # noqa: E402

PAGE = 16_384


def skip_pages(samples):
    """The way before: a page of ids at a time, each page skipping the ones before it."""
    n = len(samples)
    return np.concatenate([chunks.packed_ids(samples.skip(s).limit(PAGE).values("_id"))
                           for s in range(0, n, PAGE)])


def one_list(samples):
    return chunks.packed_ids(samples.values("_id"))


def build(n):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=f"/img/{i}.jpg", rank=int(i * 7919 % n),
                              gt=fo.Classification(label="ab"[i % 2])) for i in range(n)],
                   progress=False)
    return ds


def timed(fn, samples):
    best, peak, ids = np.inf, 0, None
    for _ in range(3):
        tracemalloc.start()
        start = time.perf_counter()
        ids = fn(samples)
        best = min(best, time.perf_counter() - start)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak, ids


def main():
    ways = {"streamed (sample_ids)": chunks.sample_ids, "skip pages (before)": skip_pages,
            "one values() list": one_list}
    for n in sizes(sys.argv[1:], __doc__, [200_000]):
        start = time.perf_counter()
        ds = build(n)
        print(f"\nn = {n:,} samples (inserted in {time.perf_counter() - start:.0f} s)")
        try:
            views = {"dataset": ds, "match (half)": ds.match(F("gt.label") == "a"),
                     "sorted by a field": ds.sort_by("rank")}
            print(f"  {'collection':18} {'way':22} {'seconds':>8} {'x streamed':>11} {'peak MB':>8}")
            for what, view in views.items():
                figures = {way: timed(fn, view) for way, fn in ways.items()}
                base = figures["streamed (sample_ids)"]
                assert all(np.array_equal(f[2], base[2]) for f in figures.values())
                for way, (seconds, peak, _) in figures.items():
                    print(f"  {what:18} {way:22} {seconds:8.2f} {seconds / base[0]:11.2f} "
                          f"{peak / 2**20:8.1f}")
        finally:
            ds.delete()


if __name__ == "__main__":
    main()

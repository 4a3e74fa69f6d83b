"""Apply of a few review edits on a large run: it writes only the samples they change.

Usage (from the repository root)::

    .venv/bin/python bench/bench_apply.py [n_samples n_labels]   # default 50000 10000

The run is built as in ``bench_panel.py`` (no model: labels around random centres, a fake
encoder). Then, in one run of this script: an Apply of two edits (a rename of the largest
cluster, and a label split out of another), an Apply with nothing new, and a write of every
sample (an Apply that takes every sample for changed, as every Apply did before); each with the
samples it wrote (the sample writes counted) and the ratio to the whole write.
"""

import sys
import time

from bench_panel import built_run  # (sets the database name and plugins dir)
from usage import sizes
from vlsr_core.fo import cluster, review
from vlsr_core.fo.stage_run import _Run


def timed_apply(ds, written, **kwargs):
    written.clear()
    t = time.perf_counter()
    review.apply_review(ds, "vlsr", **kwargs)
    return time.perf_counter() - t, len(written)


def main(n_samples=50_000, n_labels=10_000):
    with built_run(n_samples, n_labels) as (ds, _):
        written = []
        write = _Run.write_sample_values
        _Run.write_sample_values = lambda self, samples, chunk, values: (
            written.extend(chunk.ids), write(self, samples, chunk, values))[-1]
        label_map = review.review_state(ds, "vlsr").label_map
        sizes = {}
        for label, c in label_map.canonical.items():
            sizes[c] = sizes.get(c, 0) + 1
        largest = max(sizes, key=sizes.get)
        member = next(l for l, c in label_map.canonical.items()  # (one split can be:
                      if c != largest and l.casefold() != c.casefold())  # not a case twin)
        review.add_edit(ds, "vlsr", "rename", largest, largest + " (renamed)")
        review.add_edit(ds, "vlsr", "split", member)
        rows = [("two edits", *timed_apply(ds, written)),
                ("nothing new", *timed_apply(ds, written))]
        cluster._changed = lambda new, old, path, ids_too=True: list(range(len(new.names)))
        rows.append(("every sample (the former Apply)", *timed_apply(ds, written)))
        whole = rows[-1][1]
        print(f"{'apply':<34} {'s':>7} {'samples written':>16} {'ratio':>6}")
        for name, seconds, n in rows:
            print(f"{name:<34} {seconds:>7.1f} {n:>16,} {seconds / whole:>6.2f}")


if __name__ == "__main__":
    main(*sizes(sys.argv[1:], __doc__, most=2))

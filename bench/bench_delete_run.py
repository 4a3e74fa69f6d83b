"""Deleting a large run: its fields go in one pass over the samples.

Usage (from the repository root)::

    .venv/bin/python bench/bench_delete_run.py [n_samples n_labels]   # default 50000 10000

The run is built as in ``bench_panel.py`` (no model: labels around random centres, a fake
encoder) and cloned. Then, in one run of this script: ``vlsr delete-run``'s deletion of the
run, and the deletion of the same fields one ``delete_sample_field`` call each on the clone
(a pass over the samples a field, as delete-run did before), with the ratio between them.
"""

import sys

from bench_panel import built_run, timed  # (sets the database name and plugins dir)
from usage import sizes
from vlsr_core.fo import runs


def main(n_samples=50_000, n_labels=10_000):
    with built_run(n_samples, n_labels) as (ds, _):
        clone = ds.clone()
        try:
            fields = [f for f in runs.owned_fields(ds, "vlsr", ds.get_run_info("vlsr").config)
                      if ds.has_field(f)]
            one_pass = timed(lambda: runs.delete_run(ds, "vlsr"))

            def field_by_field():
                for field in fields:
                    clone.delete_sample_field(field)

            by_field = timed(field_by_field)
            assert sorted(ds.get_field_schema(flat=True)) == sorted(
                clone.get_field_schema(flat=True))
            print(f"{len(fields)} fields: {', '.join(fields)}")
            print(f"{'delete':<40} {'s':>7} {'ratio':>6}")
            for name, seconds in (("delete-run (one pass)", one_pass),
                                  ("a pass a field (delete-run before)", by_field)):
                print(f"{name:<40} {seconds:>7.1f} {seconds / by_field:>6.2f}")
        finally:
            clone.delete()


if __name__ == "__main__":
    main(*sizes(sys.argv[1:], __doc__, most=2))

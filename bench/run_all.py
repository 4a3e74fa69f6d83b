"""Run every speed benchmark in turn and keep its table.

Usage: python bench/run_all.py [--smoke]

Runs bench_clustering, bench_similarity, bench_embedding, bench_memory, bench_writes,
bench_label_docs, bench_exact, bench_review_import and bench_rare_listing with their default
sizes (about 47 minutes on 2 cores; --smoke: small sizes, about two minutes), one at a time
since they compete for the same cores, prints each table and writes it to
bench/results/<name>.txt. docs/benchmarks.md discusses the tables measured on the project's
machine.
"""

import subprocess
import sys
import time
from pathlib import Path

from usage import sizes

HERE = Path(__file__).resolve().parent
SMOKE_ARGS = {
    "bench_clustering": ["1000"],
    "bench_similarity": ["4000", "2000", "1000", "2000", "200"],
    "bench_embedding": ["tiny=32"],
    "bench_memory": ["1500", "3000"],
    "bench_writes": ["2048"],
    "bench_label_docs": ["2048"],
    "bench_exact": ["1000", "2000", "100000", "--rounds", "1"],
    "bench_review_import": ["3000"],
    "bench_rare_listing": ["3000"],
}


def main(smoke):
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed = []
    for name, smoke_args in SMOKE_ARGS.items():
        args = smoke_args if smoke else []
        print(f"== {name} {' '.join(args)}", flush=True)
        t0 = time.time()
        run = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args],
                             capture_output=True, text=True)
        print(run.stdout, flush=True)
        (out_dir / f"{name}.txt").write_text(run.stdout)
        if run.returncode:
            failed.append(name)
            print(run.stderr[-3000:], file=sys.stderr)
        print(f"({name}: {time.time() - t0:.0f} s)\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sizes(sys.argv[1:], __doc__, flags=("--smoke",), most=0)  # (-h, or a typo: it takes no sizes)
    sys.exit(main("--smoke" in sys.argv[1:]))

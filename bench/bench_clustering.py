"""Time and peak memory of cluster_labels against scikit-learn's DBSCAN on random unit vectors.

Usage: python bench/bench_clustering.py [n ...]   (default: 1000 6426 20000 100000)
Each case runs in a fresh process so that its peak resident memory is its own.
"""

import json
import resource
import subprocess
import sys
import time

DIM, EPS, MIN_SAMPLES = 768, 0.07, 1
SKLEARN_LIMIT_S = 1800
MEMORY_LIMIT_BYTES = 12 * 2**30  # a dense matrix beyond half this machine's memory is not tried


def _case(method, n):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # imported before the clock starts: importing vlsr_core or scikit-learn takes ~1 s
    from sklearn.cluster import DBSCAN
    from sklearn.metrics.pairwise import cosine_distances

    from vlsr_core import cluster_labels

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if method == "vlsr":
        labels = cluster_labels(x, eps=EPS, min_samples=MIN_SAMPLES)
    else:
        metric = method.split(":")[1]
        if metric == "precomputed":
            x = cosine_distances(x)
        labels = DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric=metric).fit_predict(x)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(method=method, n=n, seconds=seconds, peak_mb=peak / 1024,
                          input_mb=base / 1024, clusters=int(labels.max()) + 1)))


def main(ns):
    print(f"{'n':>8} {'method':<20} {'seconds':>9} {'peak MB':>9} {'clusters':>9}")
    for n in ns:
        rows = {}
        for method in ("vlsr", "sklearn:cosine", "sklearn:precomputed"):
            if method.endswith("precomputed") and n * n * 4 > MEMORY_LIMIT_BYTES:
                print(f"{n:>8} {method:<20} {'skipped':>9} (needs a {n * n * 4 / 2**30:.0f} GiB dense matrix)")
                continue
            try:
                out = subprocess.run(
                    [sys.executable, __file__, "--case", method, str(n)],
                    capture_output=True, text=True, timeout=SKLEARN_LIMIT_S,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
                why = out.stderr.strip().splitlines()[-1] if out.returncode else ""
            except subprocess.TimeoutExpired:
                r, why = None, f"timed out after {SKLEARN_LIMIT_S} s"
            rows[method] = r
            if r:
                print(f"{n:>8} {method:<20} {r['seconds']:>9.2f} {r['peak_mb']:>9.0f} {r['clusters']:>9}")
            else:
                print(f"{n:>8} {method:<20} {'failed':>9} ({why[:80]})")
        if rows["vlsr"] and rows["sklearn:cosine"]:
            print(f"{n:>8} ratio sklearn:cosine / vlsr time: "
                  f"{rows['sklearn:cosine']['seconds'] / rows['vlsr']['seconds']:.2f}x")
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        _case(sys.argv[2], int(sys.argv[3]))
    else:
        main([int(a) for a in sys.argv[1:]] or [1000, 6426, 20000, 100000])

"""Time and peak memory of cluster_labels against scikit-learn's DBSCAN, and against a matrix-product floor.

Usage: python bench/bench_clustering.py [--data clustered|random] [n ...]   (default: clustered, 20000 100000)

``clustered`` data (the default) are 768-d unit vectors in n // 5 groups of long-tailed sizes (half
singletons, some of 2-10, a few of 20-100) whose members lie 0.02-0.06 from their group's centre,
with some at 0.065-0.075 from another member, so that clusters form and the eps edge is crossed.
``random`` data are random unit vectors, none within eps of another: every label its own cluster.
``vlsr`` screens pairs with int8 products where the machine has the kernel (vlsr_core.engine.screening),
``vlsr:float`` with float32 products, as before the int8 screen. ``gemm`` is the float32 floor: the
products of the upper triangle in cluster_labels' tiles, thrown away; ``gemm-int8`` the same in int8
(rounding and packing included); ``gemm-full`` the float32 products over all columns, as
scikit-learn computes them. The labels of vlsr and scikit-learn are compared: the same partition,
and the same numbering. PyTorch is imported and the int8 self-check run before the clock starts.
Each case runs in a fresh process so that its peak resident memory is its own.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

DIM, EPS, MIN_SAMPLES = 768, 0.07, 1
SKLEARN_LIMIT_S = 1800
MEMORY_LIMIT_BYTES = 12 * 2**30  # a dense matrix beyond half this machine's memory is not tried
METHODS = ("vlsr", "vlsr:float", "sklearn:cosine", "sklearn:precomputed", "gemm", "gemm-int8", "gemm-full")
FULL_BLOCK_ROWS = 4096  # rows per block of gemm-full

# clustered data
MAX_GROUP = 100
SIZE_EXPONENT = 1.728  # P(size = k) ~ k^-1.728 on 1..100: mean 5, 51 % singletons, 6 % of 20-100
MEMBER_DISTANCE = (0.02, 0.06)  # cosine distance of a member to its centre, skewed towards the near end
NEAR_EPS_DISTANCE = (0.065, 0.075)  # of the members placed relative to their group's first member
NEAR_EPS_FRACTION = 0.1  # of the members that are not the first of their group
GENERATE_ROWS = 8192  # rows generated at a time, so that float64 temporaries stay small


def _random(n, rng):
    import numpy as np

    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _around(a, d, rng):
    """Unit float64 rows at cosine distance ``d`` from the unit rows ``a``, in a random direction."""
    import numpy as np

    u = rng.normal(size=a.shape)
    u -= np.sum(u * a, axis=1, keepdims=True) * a
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    c = 1.0 - d
    return c[:, None] * a + np.sqrt(1.0 - c * c)[:, None] * u


def _group_sizes(n, n_groups, rng):
    """``n_groups`` long-tailed sizes in 1..MAX_GROUP that sum to ``n``."""
    import numpy as np

    k = np.arange(1, MAX_GROUP + 1)
    p = k ** -SIZE_EXPONENT
    sizes = rng.choice(k, size=n_groups, p=p / p.sum())
    # to reach n exactly, add to (take from) groups in proportion to their size (size - 1)
    while (diff := n - int(sizes.sum())) != 0:
        room = MAX_GROUP - sizes if diff > 0 else sizes - 1
        weight = (sizes if diff > 0 else sizes - 1) * (room > 0)
        step = rng.multinomial(abs(diff), weight / weight.sum())
        sizes += np.sign(diff) * np.minimum(step, room)
    return sizes


def _clustered(n, rng):
    """Float32 unit rows in groups (shuffled): see the module docstring."""
    import numpy as np

    n_groups = max(n // 5, 1)
    group = rng.permutation(np.repeat(np.arange(n_groups), _group_sizes(n, n_groups, rng)))
    centres = rng.normal(size=(n_groups, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    lo, hi = MEMBER_DISTANCE
    d = lo + (hi - lo) * rng.random(n) ** 2
    x = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, GENERATE_ROWS):
        sl = slice(start, start + GENERATE_ROWS)
        x[sl] = _around(centres[group[sl]], d[sl], rng)
    del centres
    # some members at a distance near eps from their group's first row, so that the exact threshold matters
    _, first = np.unique(group, return_index=True)
    anchor = first[group]
    others = np.flatnonzero(anchor != np.arange(n))
    near = others[rng.random(others.size) < NEAR_EPS_FRACTION]
    for start in range(0, near.size, GENERATE_ROWS):
        rows = near[start : start + GENERATE_ROWS]
        a = x[anchor[rows]].astype(np.float64)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        x[rows] = _around(a, rng.uniform(*NEAR_EPS_DISTANCE, size=rows.size), rng)
    return x


def _case(method, n, data, labels_path=None, repeat=1):
    import numpy as np

    rng = np.random.default_rng(0)
    x = _clustered(n, rng) if data == "clustered" else _random(n, rng)
    # imported before the clock starts: importing vlsr_core or scikit-learn takes ~1 s
    from sklearn.cluster import DBSCAN
    from sklearn.metrics.pairwise import cosine_distances

    from vlsr_core import cluster_labels
    from vlsr_core.engine import screening
    from vlsr_core.engine.clustering import DEFAULT_BLOCK_ROWS, TILE_COLS

    if screening._int8_works() and method == "vlsr:float":  # imports PyTorch, checks the kernel
        screening._int8_works = lambda: False

    def run():
        if method.startswith("vlsr"):
            return cluster_labels(x, eps=EPS, min_samples=MIN_SAMPLES)
        if method == "gemm":  # the products cluster_labels needs: upper triangle, its tiles
            for start in range(0, n, DEFAULT_BLOCK_ROWS):
                for left in range(start, n, TILE_COLS):
                    x[start : start + DEFAULT_BLOCK_ROWS] @ x[left : left + TILE_COLS].T
            return None
        if method == "gemm-int8":
            products = screening.Int8Tiles(x, TILE_COLS)
            for start in range(0, n, DEFAULT_BLOCK_ROWS):
                block = products.block(x[start : start + DEFAULT_BLOCK_ROWS])
                for tile in products.tiles(start):
                    products.products(block, tile)
            return None
        if method == "gemm-full":  # all n x n products
            for start in range(0, n, FULL_BLOCK_ROWS):
                x[start : start + FULL_BLOCK_ROWS] @ x.T
            return None
        metric = method.split(":")[1]
        data = cosine_distances(x) if metric == "precomputed" else x
        return DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric=metric).fit_predict(data)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        labels = run()
        seconds.append(time.perf_counter() - t0)
    seconds = min(seconds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = dict(method=method, n=n, data=data, seconds=seconds, peak_mb=peak / 1024, input_mb=base / 1024)
    if labels is not None:
        sizes = np.bincount(labels[labels >= 0])
        out.update(clusters=int(sizes.size), non_singleton=int((sizes > 1).sum()),
                   largest=int(sizes.max(initial=0)), noise=int((labels < 0).sum()))
        if labels_path:
            np.save(labels_path, labels)
    print(json.dumps(out))


def _same_partition(a, b):
    """Whether two label arrays group the rows alike, whatever the label values."""
    import numpy as np

    if a.shape != b.shape:
        return False
    pairs = np.unique(np.stack([a, b]), axis=1).shape[1]
    return pairs == np.unique(a).size == np.unique(b).size


def _disagreements(n, data, a, b):
    """The pairs the two labellings decide differently (one links them, the other does not), as
    (exact cosine distance - eps): scikit-learn decides on float32 products, cluster_labels on
    exact ones, so pairs within float32 rounding of eps may go either way."""
    import numpy as np
    from sklearn.metrics.pairwise import cosine_distances

    rng = np.random.default_rng(0)
    x = _clustered(n, rng) if data == "clustered" else _random(n, rng)
    out = []
    for labels, other in ((a, b), (b, a)):
        for cluster in np.unique(labels):
            members = np.flatnonzero(labels == cluster)
            if np.unique(other[members]).size == 1:
                continue
            x64 = x[members].astype(np.float64)
            x64 /= np.linalg.norm(x64, axis=1, keepdims=True)
            exact, float32 = 1 - x64 @ x64.T, cosine_distances(x[members])
            split = other[members][:, None] != other[members][None, :]
            differ = split & ((exact <= EPS) != (float32 <= EPS))
            out += [float(exact[i, j] - EPS) for i, j in zip(*np.nonzero(np.triu(differ)))]
    return sorted(set(out), key=abs)


def main(ns, data, repeat):
    import numpy as np

    print(f"data: {data}")
    print(f"{'n':>8} {'method':<20} {'seconds':>9} {'peak MB':>9} {'clusters':>9} {'non-single':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in ns:
            rows, labels = {}, {}
            for method in METHODS:
                if method.endswith("precomputed") and n * n * 4 > MEMORY_LIMIT_BYTES:
                    print(f"{n:>8} {method:<20} {'skipped':>9} (needs a {n * n * 4 / 2**30:.0f} GiB dense matrix)")
                    continue
                if method == "gemm-full" and min(n, FULL_BLOCK_ROWS) * n * 4 > MEMORY_LIMIT_BYTES:
                    print(f"{n:>8} {method:<20} {'skipped':>9} (a block needs "
                          f"{FULL_BLOCK_ROWS * n * 4 / 2**30:.0f} GiB)")
                    continue
                path = os.path.join(tmp, f"{method.replace(':', '-')}-{n}.npy")
                try:
                    out = subprocess.run(
                        [sys.executable, __file__, "--case", method, "--data", data, "--labels", path,
                         "--repeat", str(repeat), str(n)],
                        capture_output=True, text=True, timeout=SKLEARN_LIMIT_S,
                    )
                    r = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
                    why = out.stderr.strip().splitlines()[-1] if out.returncode else ""
                except subprocess.TimeoutExpired:
                    r, why = None, f"timed out after {SKLEARN_LIMIT_S} s"
                rows[method] = r
                if r and "clusters" in r:
                    labels[method] = np.load(path)
                    print(f"{n:>8} {method:<20} {r['seconds']:>9.2f} {r['peak_mb']:>9.0f} "
                          f"{r['clusters']:>9} {r['non_singleton']:>10}")
                elif r:
                    print(f"{n:>8} {method:<20} {r['seconds']:>9.2f} {r['peak_mb']:>9.0f} {'-':>9} {'-':>10}")
                else:
                    print(f"{n:>8} {method:<20} {'failed':>9} ({why[:80]})")
                sys.stdout.flush()
            for method in ("vlsr:float", "sklearn:cosine", "sklearn:precomputed"):
                if "vlsr" in labels and method in labels:
                    same = _same_partition(labels["vlsr"], labels[method])
                    numbering = np.array_equal(labels["vlsr"], labels[method])
                    print(f"{n:>8} vlsr vs {method}: partitions identical: {'yes' if same else 'no'} "
                          f"(numbering identical: {'yes' if numbering else 'no'})")
                    if not same:
                        gaps = _disagreements(n, data, labels["vlsr"], labels[method])
                        print(f"{n:>8}   decided differently: {len(gaps)} pairs, exact distance - eps: "
                              + ", ".join(f"{g:+.1e}" for g in gaps[:5]))
            for top, bottom in (("sklearn:cosine", "vlsr"), ("vlsr:float", "vlsr"), ("vlsr", "gemm"),
                                ("vlsr", "gemm-int8"), ("sklearn:cosine", "gemm")):
                if rows.get(top) and rows.get(bottom):
                    print(f"{n:>8} ratio {top} / {bottom} time: "
                          f"{rows[top]['seconds'] / rows[bottom]['seconds']:.2f}x")
            sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("clustered", "random"), default="clustered")
    parser.add_argument("--case", choices=METHODS, help=argparse.SUPPRESS)  # one case, in this process
    parser.add_argument("--labels", help=argparse.SUPPRESS)  # where --case saves its labels
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs of each case")
    parser.add_argument("n", type=int, nargs="*")
    args = parser.parse_args()
    if args.case:
        _case(args.case, args.n[0], args.data, args.labels, args.repeat)
    else:
        main(args.n or [20000, 100000], args.data, args.repeat)

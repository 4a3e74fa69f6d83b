"""The cost of exact scoring: exact float64 dots against plain float32, and against an older tree.

Usage: python bench/bench_exact.py [n_images n_labels n_pairs] [--rounds R]
       (default: 10000 20000 1000000, 3 rounds, ~5 min; smoke run: 1000 2000 100000 --rounds 1)
       python bench/bench_exact.py --versions OLD_TREE NEW_TREE [--rounds R] [--only CASE,...]
       (section 5 of docs/benchmarks.md; default 3 rounds, 25-40 min, most of it the six runs
       of cluster-random at 1-3 min each; cases: pairs, topk-random, topk-g10, topk-g100,
       topk-g1000, cluster-grouped, cluster-random, labelmap)

Default mode, in the current tree: every decision of ``vlsr_core`` is taken on
``vlsr_core.engine.dots.exact_dots`` (float64 products of the float32 vectors, summed in numpy's
pairwise order); this measures what that costs against the plain float32 computation a
non-exact version would do, on 768-d random unit float32 vectors:

(a) ``pair_scores`` on n_pairs random (image, label) pairs of 20,000 images x 3,000 labels, against
    ``np.einsum("ij,ij->i", E[ii], T[li])`` in float32, PAIR_CHUNK pairs at a time.
(b) ``top_k_labels`` (k = 5) for n_images images against n_labels labels: plain random labels, and
    labels in near-duplicate groups of 10, 100 and 1,000 (each member the group's centre plus a
    random offset of norm 1e-4, renormalised; groups shuffled together; the groups of 1,000 with
    n_images / 2 images). The baseline is what top_k_labels does without the exact re-ranking:
    the float32 product in the same blocks of images, then argpartition and an argsort of the k,
    on row slices in the same threads. Near-duplicates all score within the product's rounding
    margin (9.2e-5 at 768-d) of each other, so every member of a group near the k-th best gets an
    exact product: that is the worst case of the exact re-ranking.
Methods alternate (float32, exact, float32, exact, ...) R rounds per case; the ratio is exact /
float32 by medians, with the range of the per-round ratios. The exact case then also runs the
baseline (outside the clock) and reports how many images got a different top-k list from it.

--versions mode: the section-5 cases for two (or more) source trees, e.g. git worktrees of two
commits (``git worktree add /tmp/old ef981ef``), each case in a fresh process with
``PYTHONPATH=<tree>`` (the modules are found under ``vlsr_core/engine/`` or, in older trees,
``vlsr_core/``), interleaved (old, new, old, new, ...). Cases: pair_scores on 1M pairs; top-k of
20,000 random labels and of labels in near-duplicate groups of 10 / 100 (10,000 images) and 1,000
(5,000 images); ``cluster_labels`` on 20,000 clustered labels (groups of 1-19 around random
centres, offsets of norm 0.1-0.35, so that pairs fall on both sides of eps = 0.07) and on 100,000
random labels (generated as in bench_clustering.py); ``build_label_map`` on 6,426 clustered labels
with 1-3 samples each (``mode="paper"`` in trees that have merge modes). The ratio is last tree / first tree by medians.

Each case runs in a fresh process: peak RSS = resource.getrusage ru_maxrss; "input" is the RSS
just before the timed call (interpreter, imports, the vectors); "work" = peak - input.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from usage import sizes

DIM, K = 768, 5
PAIR_IMAGES, PAIR_LABELS = 20_000, 3_000
PAIR_CHUNK = 1024  # float32 baseline: the fastest of 256 / 1,024 / 4,096 / 65,536 here (2 x 3 MB gathered)
NEAR_DUP_SPREAD = 1e-4  # norm of a near-duplicate's offset from its group centre
CASE_TIMEOUT_S = 1800
TOPK_BLOCK_BYTES = 64 * 2**20  # fallback when the tree's similarity module has none


# ---------------------------------------------------------------------------------------- data

def _unit_inplace(x, chunk=8192):
    import numpy as np

    for i in range(0, len(x), chunk):
        x[i : i + chunk] /= np.linalg.norm(x[i : i + chunk], axis=1, keepdims=True)
    return x


def _unit(rng, n):
    """n random unit float32 vectors."""
    import numpy as np

    return _unit_inplace(rng.standard_normal((n, DIM), dtype=np.float32))


def _groups(rng, n, sizes, spread):
    """n unit vectors in groups of the given sizes around random centres; each member is the
    centre plus a random offset of norm ``spread`` (a scalar or one per member), renormalised;
    rows shuffled."""
    import numpy as np

    sizes = np.asarray(sizes)
    x = np.repeat(_unit(rng, len(sizes)), sizes, axis=0)[:n]
    spread = np.broadcast_to(np.asarray(spread, dtype=np.float32), (n,))
    for i in range(0, n, 8192):  # offsets in chunks: no second n x dim array
        off = rng.standard_normal((min(8192, n - i), DIM), dtype=np.float32)
        off *= (spread[i : i + 8192] / np.linalg.norm(off, axis=1))[:, None]
        x[i : i + 8192] += off
    return _unit_inplace(x)[rng.permutation(n)]


def _near_duplicates(rng, n, group):
    """n unit vectors in groups of ``group`` within NEAR_DUP_SPREAD of their centre (1: random)."""
    if group <= 1:
        return _unit(rng, n)
    return _groups(rng, n, [group] * -(-n // group), NEAR_DUP_SPREAD)


def _clustered(rng, n):
    """n unit vectors in groups of 1-19, offsets of norm 0.1-0.35 (cosine distance within a group
    about (a^2 + b^2) / 2: 0.01-0.12, so that eps 0.07 splits some groups and chains others)."""
    import numpy as np

    sizes = rng.integers(1, 20, n)  # more than enough groups; the last is cut at n
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    return _groups(rng, n, sizes, rng.uniform(0.1, 0.35, n).astype(np.float32))


# ---------------------------------------------------------------------------------- the cases

def _similarity_module():
    """vlsr_core's similarity module, from the tree vlsr_core was imported from. Chosen by the
    tree's layout, not by trying imports: the editable install's finder would otherwise serve
    ``vlsr_core.engine`` from the installed checkout to a tree that has no ``engine/``."""
    import importlib

    import vlsr_core

    package = os.path.dirname(os.path.abspath(vlsr_core.__file__))
    name = ("vlsr_core.engine.similarity" if os.path.exists(os.path.join(package, "engine", "similarity.py"))
            else "vlsr_core.similarity")  # trees before the engine/ fo/ model/ split
    module = importlib.import_module(name)
    if not os.path.abspath(module.__file__).startswith(package + os.sep):
        raise RuntimeError(f"{name} came from {module.__file__}, not from {package}")
    return module


def _has_merge_mode():
    """Whether this tree's MergeParams has a ``mode`` (checked by layout first, as above)."""
    import dataclasses
    import importlib

    import vlsr_core

    package = os.path.dirname(os.path.abspath(vlsr_core.__file__))
    if not os.path.exists(os.path.join(package, "engine", "params.py")):
        return False
    params = importlib.import_module("vlsr_core.engine.params")
    return any(f.name == "mode" for f in dataclasses.fields(params.MergeParams))


def _float32_pairs(e, t, ii, li):
    import numpy as np

    out = np.empty(ii.size, dtype=np.float32)
    for start in range(0, ii.size, PAIR_CHUNK):
        sl = slice(start, start + PAIR_CHUNK)
        out[sl] = np.einsum("ij,ij->i", e[ii[sl]], t[li[sl]])
    return out


def _float32_top_k(images, labels, k, rows):
    """top_k_labels without the exact re-ranking: the float32 product in blocks of ``rows``
    images, argpartition and an argsort of the k on row slices in threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def rows_top_k(s):
        m = s.shape[1]
        part = np.argpartition(s, m - k, axis=1)[:, m - k :]
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)

    n = len(images)
    indices = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float32)
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, n, rows):
            s = images[start : start + rows] @ labels.T
            step = -(-len(s) // workers)
            at = start
            for idx, sc in pool.map(lambda i: rows_top_k(s[i : i + step]), range(0, len(s), step)):
                indices[at : at + len(idx)], scores[at : at + len(idx)] = idx, sc
                at += len(idx)
    return indices, scores


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _case(kind, method, args, check):
    import numpy as np

    import vlsr_core

    rng = np.random.default_rng(0)
    out = dict(kind=kind, method=method, args=args,
               tree=os.path.dirname(os.path.dirname(os.path.abspath(vlsr_core.__file__))))
    if kind == "pairs":
        n_images, n_labels, n_pairs = args
        e, t = _unit(rng, n_images), _unit(rng, n_labels)
        ii, li = rng.integers(0, n_images, n_pairs), rng.integers(0, n_labels, n_pairs)
        pair_scores = _similarity_module().pair_scores
        run = (lambda: pair_scores(e, t, ii, li)) if method == "vlsr" else (
            lambda: _float32_pairs(e, t, ii, li))
    elif kind == "topk":
        group, n_images, n_labels = args
        labels = _near_duplicates(rng, n_labels, group)
        images = _unit(rng, n_images)
        similarity = _similarity_module()
        block_bytes = getattr(similarity, "TOPK_BLOCK_BYTES", TOPK_BLOCK_BYTES)
        rows = max(1, block_bytes // (9 * n_labels))  # top_k_labels' blocks (no twins here)
        run = (lambda: similarity.top_k_labels(images, labels, K)) if method == "vlsr" else (
            lambda: _float32_top_k(images, labels, K, rows))
    elif kind == "cluster-random":
        (n,) = args
        x = rng.normal(size=(n, DIM)).astype(np.float32)  # as bench_clustering.py generates them
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        run = lambda: vlsr_core.cluster_labels(x, eps=0.07, min_samples=1)
    elif kind == "cluster-grouped":
        (n,) = args
        x = _clustered(rng, n)
        run = lambda: vlsr_core.cluster_labels(x, eps=0.07, min_samples=1)
    elif kind == "labelmap":
        (n,) = args
        x = _clustered(rng, n)
        frequencies = rng.integers(1, 4, n)
        vocabulary = [f"label {i}" for i in rng.permutation(n)]
        # the paper's steps 4-6 in every tree: trees from ffc3222 on default to mode="recommended"
        paper = {"mode": "paper"} if _has_merge_mode() else {}
        run = lambda: vlsr_core.build_label_map(vocabulary, x, frequencies, **paper)
    else:
        raise ValueError(kind)
    # every vlsr_core module in use must come from the tree of the package itself
    strays = sorted(m.__file__ for name, m in sys.modules.items() if name.startswith("vlsr_core")
                    and getattr(m, "__file__", None) and not m.__file__.startswith(out["tree"] + os.sep))
    if strays:
        raise RuntimeError(f"modules from outside {out['tree']}: {strays}")
    out["input_mb"] = _rss_mb()
    t0 = time.perf_counter()
    result = run()
    out["seconds"] = time.perf_counter() - t0
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if kind == "topk":
        idx, sc = result
        out["checksum"] = int(idx.sum())
        if check and method == "vlsr":
            ref_idx, ref_sc = _float32_top_k(images, labels, K, rows)
            out["differ"] = int((ref_idx != idx).any(axis=1).sum())
            out["max_score_diff"] = float(np.abs(ref_sc - sc).max())
    elif kind == "pairs":
        out["checksum"] = float(result.astype(np.float64).sum())
        if check and method == "vlsr":
            out["max_score_diff"] = float(np.abs(_float32_pairs(e, t, ii, li) - result).max())
    elif kind.startswith("cluster"):
        out["clusters"] = int(result.max()) + 1
    else:
        out["clusters"] = int(result.clusters.max()) + 1
        out["dbscan_clusters"] = int(result.dbscan_clusters.max()) + 1
    print(json.dumps(out))


# ---------------------------------------------------------------------------------- the driver

def _run(kind, method, args, tree=None, check=False):
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--case", kind, method, *map(str, args)]
    try:
        r = subprocess.run(cmd + (["--check"] if check else []), capture_output=True, text=True,
                           timeout=CASE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {CASE_TIMEOUT_S} s"
    if r.returncode:
        return None, (r.stderr.strip().splitlines() or ["?"])[-1]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if tree and out["tree"] != os.path.abspath(tree):
        return None, f"vlsr_core imported from {out['tree']}, not {tree}"
    return out, ""


def _rounds_line(name, runs):
    times = [r["seconds"] for r in runs]
    peak = statistics.median(r["peak_mb"] for r in runs)
    work = statistics.median(r["peak_mb"] - r["input_mb"] for r in runs)
    listed = " / ".join(f"{s:.2f}" for s in times)
    print(f"  {name:<14} {statistics.median(times):>8.2f} s  peak {peak:>6.0f} MB  work {work:>6.0f} MB"
          f"   runs: {listed}", flush=True)


def _compare(title, variants, rounds, names, same_results=False):
    """variants: list of (kind, method, args, tree, check); runs them interleaved, rounds times.
    Prints each one's median and the ratio of the last to the first (and, with same_results,
    whether all gave the same checksum of their output)."""
    print(title, flush=True)
    runs = [[] for _ in variants]
    for _ in range(rounds):
        for i, (kind, method, args, tree, check) in enumerate(variants):
            r, why = _run(kind, method, args, tree, check)
            if r is None:
                print(f"  {names[i]}: failed: {why[:200]}", flush=True)
                return
            runs[i].append(r)
    for name, rs in zip(names, runs):
        _rounds_line(name, rs)
    first, last = runs[0], runs[-1]
    per_round = sorted(b["seconds"] / a["seconds"] for a, b in zip(first, last))
    ratio = statistics.median(r["seconds"] for r in last) / statistics.median(r["seconds"] for r in first)
    extra = []
    for key in ("clusters", "dbscan_clusters"):
        if key in last[0]:
            extra.append(f"{key} {' / '.join(str(rs[0][key]) for rs in runs)}")
    if same_results and "checksum" in last[0]:
        same = len({r["checksum"] for rs in runs for r in rs}) == 1
        extra.append(f"same results: {'yes' if same else 'no'}")
    if "differ" in last[0]:
        extra.append(f"top-{K} lists differing from float32: {last[0]['differ']:,} of {last[0]['args'][1]:,} "
                     f"images (max score diff {last[0]['max_score_diff']:.1e})")
    elif "max_score_diff" in last[0]:
        extra.append(f"max |exact - float32| {last[0]['max_score_diff']:.1e}")
    print(f"  {names[-1]} / {names[0]} = {ratio:.2f} by medians (per round {per_round[0]:.2f}-"
          f"{per_round[-1]:.2f}); {'; '.join(extra)}\n", flush=True)


def main_baseline(n_images, n_labels, n_pairs, rounds):
    print(f"exact (vlsr_core) against plain float32, {DIM}-d random unit vectors, k = {K}, "
          f"{rounds} interleaved rounds, each run a fresh process\n")
    names = ["float32", "exact"]
    _compare(f"pair_scores, {n_pairs:,} pairs of {PAIR_IMAGES:,} images x {PAIR_LABELS:,} labels",
             [("pairs", m, (PAIR_IMAGES, PAIR_LABELS, n_pairs), None, True) for m in ("float32", "vlsr")],
             rounds, names)
    for group in (1, 10, 100, 1000):
        n = n_images if group < 1000 else n_images // 2
        what = "random labels" if group == 1 else f"near-duplicate groups of {group:,}"
        _compare(f"top_k_labels, {n:,} images x {n_labels:,} labels, {what}",
                 [("topk", m, (group, n, n_labels), None, True) for m in ("float32", "vlsr")],
                 rounds, names)


VERSION_CASES = {
    "pairs": ("pair_scores, 1,000,000 pairs of 20,000 images x 3,000 labels",
              "pairs", (PAIR_IMAGES, PAIR_LABELS, 1_000_000)),
    "topk-random": ("top-k, 10,000 images x 20,000 random labels", "topk", (1, 10_000, 20_000)),
    "topk-g10": ("top-k, 10,000 images, 20,000 labels in near-duplicate groups of 10",
                 "topk", (10, 10_000, 20_000)),
    "topk-g100": ("top-k, 10,000 images, near-duplicate groups of 100", "topk", (100, 10_000, 20_000)),
    "topk-g1000": ("top-k, 5,000 images, near-duplicate groups of 1,000", "topk", (1000, 5_000, 20_000)),
    "cluster-grouped": ("cluster_labels, 20,000 clustered labels", "cluster-grouped", (20_000,)),
    "cluster-random": ("cluster_labels, 100,000 random labels", "cluster-random", (100_000,)),
    "labelmap": ("build_label_map, 6,426 clustered labels", "labelmap", (6_426,)),
}


def main_versions(trees, rounds, only):
    names = [os.path.basename(os.path.normpath(t)) for t in trees]
    print(f"{' vs '.join(names)}: {rounds} interleaved rounds, each run a fresh process with "
          f"PYTHONPATH=<tree>\n")
    for key in only or VERSION_CASES:
        title, kind, args = VERSION_CASES[key]
        _compare(f"[{key}] {title}", [(kind, "vlsr", args, t, False) for t in trees], rounds, names,
                 same_results=True)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--case"]:
        check = "--check" in argv
        argv = [a for a in argv if a != "--check"]
        _case(argv[1], argv[2], [int(a) for a in argv[3:]], check)
        sys.exit(0)
    rounds, only, trees = 3, None, None
    if "--rounds" in argv:
        i = argv.index("--rounds")
        rounds, argv = int(argv[i + 1]), argv[:i] + argv[i + 2:]
    if "--only" in argv:
        i = argv.index("--only")
        only, argv = argv[i + 1].split(","), argv[:i] + argv[i + 2:]
    if "--versions" in argv:
        i = argv.index("--versions")
        trees, argv = argv[i + 1:], argv[:i]
    if trees:
        main_versions(trees, rounds, only)
    else:
        n_images, n_labels, n_pairs = sizes(argv, __doc__, [10_000, 20_000, 1_000_000], most=3)
        main_baseline(n_images, n_labels, n_pairs, rounds)

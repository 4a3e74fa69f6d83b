"""Time of turning an edited label map into review edits (``vlsr review import``), against
applying those edits, which every panel load and every ``vlsr apply`` does.

Usage: python bench/bench_review_import.py [n_labels ...]   (default: 10000 100000)

Each vocabulary of n labels lies in n // 3 clusters of random sizes; the edited map renames
n // 30 whole clusters and moves n // 30 labels to another label's canonical label (a label that
names a cluster stays in it, as the import requires). ``import`` is ``edits_to_reach``, which
applies its edits twice to check them; ``apply`` is ``review_label_map`` with those edits.
"""

import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from vlsr_core.engine.pipeline import LabelMap  # noqa: E402
from vlsr_core.engine.review import edits_to_reach, review_label_map  # noqa: E402
from usage import sizes  # noqa: E402

DIM = 64


def make_case(n, seed=0):
    """A clustered label map, its label embeddings, and an edited map of it."""
    rng = np.random.default_rng(seed)
    clusters = np.unique(np.sort(rng.integers(0, n // 3, n)), return_inverse=True)[1]
    vocabulary = [f"label {i}" for i in range(n)]
    frequencies = rng.integers(1, 50, n)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    starts = np.flatnonzero(np.r_[True, clusters[1:] != clusters[:-1]])
    ends = np.r_[starts[1:], n]
    reps = [vocabulary[s + int(np.argmax(frequencies[s:e]))] for s, e in zip(starts, ends)]
    label_map = LabelMap(vocabulary=vocabulary, frequencies=frequencies,
                         dbscan_clusters=clusters.copy(), clusters=clusters.copy(),
                         representatives=reps, distance_to_canonical=np.zeros(n, np.float32),
                         steps=None)
    wanted = dict(label_map.canonical)
    k = max(n // 30, 1)
    for c in rng.choice(len(starts), k, replace=False):
        for i in range(starts[c], ends[c]):
            wanted[vocabulary[i]] = f"new name {c}"
    for i in rng.choice(n, k, replace=False):
        wanted[vocabulary[i]] = wanted[vocabulary[rng.integers(n)]]
    for name in set(wanted.values()):
        if name in wanted:
            wanted[name] = name
    return label_map, emb, wanted


def main(sizes):
    print(f"{'labels':>8} {'changed':>8} {'edits':>6} {'import s':>9} {'apply s':>8} {'ratio':>6}")
    for n in sizes:
        label_map, emb, wanted = make_case(n)
        changed = sum(wanted[l] != c for l, c in label_map.canonical.items())
        t = time.perf_counter()
        edits = edits_to_reach(label_map, emb, [], wanted)
        t_import = time.perf_counter() - t
        t = time.perf_counter()
        reviewed, _ = review_label_map(label_map, emb, edits)
        t_apply = time.perf_counter() - t
        assert reviewed.canonical == wanted
        print(f"{n:>8} {changed:>8} {len(edits):>6} {t_import:>9.2f} {t_apply:>8.2f} "
              f"{t_import / t_apply:>6.1f}")


if __name__ == "__main__":
    main(sizes(sys.argv[1:], __doc__, [10000, 100000]))

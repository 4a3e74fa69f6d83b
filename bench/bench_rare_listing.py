"""Time of the rare-cluster listing (the panel's List: rare clusters, ``vlsr review show --rare``)
against the default cluster listing of the same review state.

Usage: python bench/bench_rare_listing.py [n_labels ...]   (default: 10000 100000)

Each vocabulary of n labels (384-d random unit vectors, as MiniLM's width) lies in 0.7 n
clusters of random sizes with Zipf frequencies; clusters under 10 samples are rare. Timed:
``cluster_rows`` (the default listing, the baseline), the first ``rare_rows`` (an exact search of
the whole vocabulary for each label of a rare cluster), ``rare_rows`` again on the same state
(kept with it) and on a new state after a review edit that joined two clusters (neighbours kept
for the run's clustering: only labels not asked about before are searched).
"""

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlsr_core.engine.pipeline import LabelMap  # noqa: E402
from vlsr_core.fo.browse import cluster_rows, rare_clusters, rare_rows  # noqa: E402
from vlsr_core.fo.review import ReviewState  # noqa: E402
from usage import sizes  # noqa: E402

DIM, MIN_SIZE = 384, 10


def make_state(n, seed=0):
    rng = np.random.default_rng(seed)
    clusters = np.unique(rng.integers(0, int(n * 0.7), n), return_inverse=True)[1]
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    frequencies = rng.zipf(1.5, n).clip(max=10_000)
    vocabulary = [f"label {i}" for i in range(n)]
    reps = [vocabulary[i] for i in np.unique(clusters, return_index=True)[1]]
    label_map = LabelMap(vocabulary, frequencies, clusters, clusters, reps,
                         np.zeros(n, np.float32), {})
    return ReviewState([], label_map, [], clustered=label_map, embeddings=emb,
                       clustering=("bench", n, seed))


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def main(sizes):
    print(f"{'labels':>8} {'rare':>7} {'rows':>7} {'clusters s':>10} {'rare s':>7} {'ratio':>6} "
          f"{'again s':>8} {'after edit s':>12}")
    for n in sizes:
        state = make_state(n)
        n_rare = int(rare_clusters(state.label_map, MIN_SIZE).sum())
        _, t_base = timed(lambda: cluster_rows(state))
        rows, t_rare = timed(lambda: rare_rows(state, MIN_SIZE))
        _, t_again = timed(lambda: rare_rows(state, MIN_SIZE))
        clusters = np.asarray(state.label_map.clusters).copy()
        clusters[clusters == clusters[1]] = clusters[0]  # an edit joined two clusters
        edited = dataclasses.replace(state, memo={}, label_map=dataclasses.replace(
            state.label_map, clusters=clusters))
        _, t_edit = timed(lambda: rare_rows(edited, MIN_SIZE))
        print(f"{n:>8} {n_rare:>7} {len(rows):>7} {t_base:>10.2f} {t_rare:>7.1f} "
              f"{t_rare / t_base:>6.0f} {t_again:>8.3f} {t_edit:>12.2f}")


if __name__ == "__main__":
    main(sizes(sys.argv[1:], __doc__, [10000, 100000]))

"""Results that depend on the vectors alone: not on the BLAS kernel, the block size, the thread
count or the order of the vocabulary. The inputs put decisions within float32 rounding (pairs at
the eps boundary, near-tied scores, twin labels), where a blocked product alone would flip them."""

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from vlsr_core import build_label_map, cluster_labels, sanitize
from vlsr_core.engine.clustering import number_by_first_occurrence

EPS = 0.07
SETTINGS = [(block_rows, threads) for block_rows in (1, 7, 256) for threads in (1, 2)]


def unit(rng, n, dim):
    x = rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def boundary_pairs(rng, n_pairs, dim, jitter):
    """Pairs of float32 unit vectors at cosine distance eps +- jitter, unrelated to other pairs."""
    a = unit(rng, n_pairs, dim)
    o = unit(rng, n_pairs, dim)
    o -= (o * a).sum(1, keepdims=True) * a
    o /= np.linalg.norm(o, axis=1, keepdims=True)
    cos = 1 - EPS + rng.uniform(-jitter, jitter, n_pairs)
    b = cos[:, None] * a + np.sqrt(1 - cos[:, None] ** 2) * o
    x = np.empty((2 * n_pairs, dim), dtype=np.float32)
    x[0::2], x[1::2] = a, b
    return x / np.sqrt((x.astype(np.float64) ** 2).sum(1, keepdims=True)).astype(np.float32)


def exact_components(x, eps):
    """DBSCAN with min_samples=1 by definition: components of 1 - x.y <= eps, exactly."""
    x64 = x.astype(np.float64)
    s = (x64[:, None, :] * x64[None, :, :]).sum(-1)
    rows, cols = np.nonzero(1.0 - s <= eps)
    graph = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(len(x), len(x)))
    return number_by_first_occurrence(connected_components(graph, directed=False)[1])


@pytest.mark.parametrize("dim", [64, 768])
def test_pairs_at_the_eps_boundary_are_decided_exactly(dim):
    x = boundary_pairs(np.random.default_rng(dim), 60, dim, jitter=3e-7)
    expected = exact_components(x, EPS)
    assert 60 < expected.max() + 1 < 120  # some pairs join, some do not
    for block_rows, threads in SETTINGS:
        with threadpool_limits(threads):
            got = cluster_labels(x, eps=EPS, block_rows=block_rows)
        assert np.array_equal(got, expected), (block_rows, threads)


def test_core_points_at_the_boundary_are_the_same_for_every_block_size():
    x = boundary_pairs(np.random.default_rng(5), 60, 256, jitter=3e-7)
    x = np.vstack([x, x[::3]])  # duplicates make some points core at min_samples=3
    runs = [cluster_labels(x, eps=EPS, min_samples=3, block_rows=b) for b in (1, 5, 64, 500)]
    for got in runs[1:]:
        assert np.array_equal(got, runs[0])


def vocabulary_with_twins_and_near_ties(rng, dim=128):
    """Label strings and embeddings: synonym groups whose members sit near the eps boundary,
    casing twins with identical embeddings, and frequencies with ties."""
    x = boundary_pairs(rng, 40, dim, jitter=3e-7)
    words = [f"label {i:03d}" for i in range(len(x))]
    twins = rng.choice(len(x), 12, replace=False)
    x = np.vstack([x, x[twins]])
    words += [words[i].upper() for i in twins]
    frequencies = rng.integers(1, 4, len(words))
    return words, x, frequencies


@pytest.mark.parametrize("min_cluster_size", [1, 4])
def test_label_map_ignores_vocabulary_order_blocks_and_threads(min_cluster_size):
    rng = np.random.default_rng(11)
    words, x, freq = vocabulary_with_twins_and_near_ties(rng)
    reference = build_label_map(words, x, freq, min_cluster_size=min_cluster_size)
    assert len(set(reference.representatives)) < len(words)  # merges happen
    for (block_rows, threads), seed in zip(SETTINGS, range(100)):
        perm = np.random.default_rng(seed).permutation(len(words))
        with threadpool_limits(threads):
            got = build_label_map([words[i] for i in perm], x[perm], freq[perm],
                                  min_cluster_size=min_cluster_size, block_rows=block_rows)
        assert got.canonical == reference.canonical
        assert got.cluster == reference.cluster  # the ids too, not only the partition
        assert dict(zip(got.vocabulary, got.dbscan_clusters.tolist())) == \
            dict(zip(reference.vocabulary, reference.dbscan_clusters.tolist()))


def test_suggestions_replacements_and_final_labels_ignore_vocabulary_order():
    rng = np.random.default_rng(12)
    words, x, freq = vocabulary_with_twins_and_near_ties(rng)
    # images that sit on labels, so that near-tied and twin labels compete for the top places
    images = (x[rng.integers(0, len(x), 80)] + 1e-4 * rng.normal(size=(80, x.shape[1])))
    images = (images / np.linalg.norm(images, axis=1, keepdims=True)).astype(np.float32)
    image_labels = [[words[j] for j in rng.choice(len(words), 3, replace=False)] for _ in range(80)]

    def run(vocabulary, embeddings, threads):
        with threadpool_limits(threads):
            return sanitize(images, image_labels, vocabulary, embeddings, top_k=6,
                            replace_margin=0.0, min_cluster_size=3)

    reference = run(words, x, 2)
    perm = rng.permutation(len(words))
    got = run([words[i] for i in perm], x[perm], 1)
    assert got.suggestions == reference.suggestions
    assert got.replacements == reference.replacements
    assert got.final_labels == reference.final_labels
    assert got.canonical_labels == reference.canonical_labels
    for a, b in zip(got.similarity, reference.similarity):
        assert np.array_equal(a, b)
    # a twin of an assigned label is never a replacement for it
    twin = {w: w.upper() for w in words if w.upper() in words and w.upper() != w}
    twin.update({v: k for k, v in twin.items()})
    for labels, replaced in zip(image_labels, reference.replacements):
        for label, r in zip(labels, replaced):
            assert r is None or r != twin.get(label)


def test_a_small_cluster_merges_into_the_exactly_nearest_of_near_tied_neighbours():
    """Each small cluster has two big neighbours whose distances differ by less than float32
    rounding; it must join the one that is nearer in exact arithmetic."""
    from vlsr_core import merge_small_clusters

    rng = np.random.default_rng(4)
    dim, n_small = 512, 30
    small = unit(rng, n_small, dim)
    points, expected = [], []
    for i, p in enumerate(small):
        o = unit(rng, 2, dim)
        o -= np.outer(o @ p, p)
        o /= np.linalg.norm(o, axis=1, keepdims=True)
        cos = 0.8 + rng.uniform(-2e-8, 2e-8, 2)
        pair = (cos[:, None] * p + np.sqrt(1 - cos[:, None] ** 2) * o).astype(np.float32)
        points += [p.astype(np.float32), *pair]
    x = np.array(points, dtype=np.float32)
    x /= np.sqrt((x.astype(np.float64) ** 2).sum(1, keepdims=True)).astype(np.float32)
    for i in range(n_small):
        d = [1 - (x[3 * i].astype(np.float64) * x[3 * i + j].astype(np.float64)).sum() for j in (1, 2)]
        expected.append(3 * i + 1 + int(np.argmin(d)))
    clusters = np.arange(len(x))
    freq = np.tile([1, 100, 100], n_small)
    with threadpool_limits(1):
        merged = merge_small_clusters(x, clusters, freq, min_cluster_size=50)
    for i, target in enumerate(expected):
        assert merged[3 * i] == merged[target], i

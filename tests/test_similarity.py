"""Image-to-label scores: the blocked, threaded top-k against a full sort of exact scores, and
results that do not move with the block size, the thread count or the vocabulary order."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from vlsr_core.engine.similarity import pair_scores, top_k_labels


def unit(rng, n, dim=16):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_scores(images, labels):
    """Every image-label score in float64 from exact products, summed without BLAS."""
    return (images[:, None, :].astype(np.float64) * labels[None, :, :].astype(np.float64)).sum(-1)


def reference_top_k(images, labels, k):
    """Stable sort of exact scores: equal scores keep label-index order."""
    s = exact_scores(images, labels)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1).astype(np.float32)


@pytest.mark.parametrize("block_rows", [None, 1, 7])
@pytest.mark.parametrize("k", [1, 5, 40, 43])
def test_top_k_is_the_k_best_labels_best_first(block_rows, k):
    rng = np.random.default_rng(k)
    images, labels = unit(rng, 50), unit(rng, 40)
    labels[[3, 17, 29]] = labels[11]  # twins: equal scores, listed in label-index order
    idx, scores = top_k_labels(images, labels, k, block_rows=block_rows)
    ref_idx, ref_scores = reference_top_k(images, labels, min(k, 40))
    assert idx.shape == scores.shape == (50, min(k, 40))
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    assert np.array_equal(scores, ref_scores)
    assert np.array_equal(idx, ref_idx)


@pytest.mark.parametrize("block_rows", [None, 1, 7])
def test_one_per_vector_gives_twins_one_place_under_the_first_in_tie_order(block_rows):
    rng = np.random.default_rng(5)
    images, labels = unit(rng, 30), unit(rng, 20)
    labels[[3, 17]] = labels[11]  # twins of 11
    rank = rng.permutation(20)
    idx, scores = top_k_labels(images, labels, 6, block_rows=block_rows, tie_rank=rank,
                               one_per_vector=True)
    # the reference: the 18 distinct vectors, 11's place taken by the twin of lowest rank
    keep = np.array([i for i in range(20) if i not in (3, 11, 17)] +
                    [min((3, 11, 17), key=rank.__getitem__)])
    ref_idx, ref_scores = reference_top_k(images, labels[keep], 6)
    assert np.array_equal(idx, keep[ref_idx])
    assert np.array_equal(scores, ref_scores)
    # k is capped at the distinct vectors
    assert top_k_labels(images, labels, 20, one_per_vector=True)[0].shape == (30, 18)


def near_ties(rng, n_labels, dim, spread):
    """Labels that score within ``spread`` of each other on one image (the first row of
    ``images``), closer than a float32 product can tell apart, plus twins of some of them."""
    image = unit(rng, 1, dim)[0]
    other = unit(rng, n_labels, dim)
    other -= np.outer(other @ image, image)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    cos = 0.3 + spread * rng.random(n_labels)
    labels = (cos[:, None] * image + np.sqrt(1 - cos[:, None] ** 2) * other).astype(np.float32)
    labels[n_labels // 2 :: 7] = labels[1]
    return np.vstack([image, unit(rng, 30, dim)]).astype(np.float32), labels


@pytest.mark.parametrize("dim", [16, 512])
def test_top_k_ranks_near_ties_by_exact_score_whatever_the_blocks_and_threads(dim):
    rng = np.random.default_rng(dim)
    images, labels = near_ties(rng, 97, dim, spread=1e-6)
    ref_idx, ref_scores = reference_top_k(images, labels, 10)
    for block_rows in (None, 1, 4):
        for threads in (1, 2):
            with threadpool_limits(threads):
                idx, scores = top_k_labels(images, labels, 10, block_rows=block_rows)
            assert np.array_equal(idx, ref_idx), (block_rows, threads)
            assert np.array_equal(scores, ref_scores)


def test_top_k_under_a_permuted_vocabulary_keeps_labels_and_tie_order():
    """The same labels in another order, with tie ranks that follow the labels: the same
    suggestions, twins included, in the same order."""
    rng = np.random.default_rng(3)
    images, labels = near_ties(rng, 61, 64, spread=1e-6)
    rank = rng.permutation(61)  # a fixed order of the labels, e.g. their strings' order
    idx, scores = top_k_labels(images, labels, 12, tie_rank=rank)
    perm = rng.permutation(61)
    p_idx, p_scores = top_k_labels(images, labels[perm], 12, tie_rank=rank[perm], block_rows=3)
    assert np.array_equal(perm[p_idx], idx)
    assert np.array_equal(p_scores, scores)


def test_top_k_reports_progress_up_to_one():
    rng = np.random.default_rng(0)
    seen = []
    top_k_labels(unit(rng, 10), unit(rng, 6), 2, block_rows=4, progress=seen.append)
    assert seen == [0.4, 0.8, 1.0]


@pytest.mark.parametrize("n, m, k", [(0, 5, 3), (4, 0, 3), (4, 5, 0)])
def test_top_k_of_nothing_is_empty(n, m, k):
    rng = np.random.default_rng(0)
    idx, scores = top_k_labels(unit(rng, n), unit(rng, m), k)
    assert idx.shape == scores.shape == (n, min(k, m))


def test_pair_scores_equal_the_top_k_scores_of_the_same_pairs_bit_for_bit():
    rng = np.random.default_rng(1)
    images, labels = unit(rng, 30, 512), unit(rng, 9, 512)
    i, j = rng.integers(0, 30, 100), rng.integers(0, 9, 100)
    got = pair_scores(images, labels, i, j)
    assert np.array_equal(got, exact_scores(images, labels)[i, j].astype(np.float32))
    idx, scores = top_k_labels(images, labels, 9)
    assert np.array_equal(pair_scores(images, labels, np.repeat(np.arange(30), 9), idx.ravel()),
                          scores.ravel())

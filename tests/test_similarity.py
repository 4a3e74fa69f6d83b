"""Image-to-label scores: the blocked, threaded top-k against a full sort of the score matrix."""

import numpy as np
import pytest

from vlsr_core.similarity import pair_scores, top_k_labels


def unit(rng, n, dim=16):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_top_k(images, labels, k):
    """Full matrix, stable sort by descending score: equal scores keep label-index order."""
    s = images @ labels.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


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
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    assert np.array_equal(idx, ref_idx)


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


def test_pair_scores_are_dot_products_of_the_chosen_pairs():
    rng = np.random.default_rng(1)
    images, labels = unit(rng, 30), unit(rng, 9)
    i, j = rng.integers(0, 30, 100), rng.integers(0, 9, 100)
    got = pair_scores(images, labels, i, j, chunk=7)
    np.testing.assert_allclose(got, np.einsum("ij,ij->i", images[i], labels[j]), atol=1e-6)

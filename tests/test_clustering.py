"""cluster_labels must give scikit-learn's DBSCAN(metric="cosine") labels, without an n x n matrix."""

import numpy as np
import pytest
from sklearn.cluster import DBSCAN

from vlsr_core import cluster_labels


def _sklearn(x, eps, min_samples):
    return DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(x)


def _blobs(rng, n, dim, k, spread):
    centers = rng.normal(size=(k, dim))
    return centers[rng.integers(0, k, n)] + rng.normal(scale=spread, size=(n, dim))


@pytest.mark.parametrize("seed", range(40))
def test_equals_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(1, 120)), int(rng.integers(2, 12))
    x = _blobs(rng, n, dim, int(rng.integers(1, 8)), float(rng.choice([0.02, 0.1, 0.3])))
    if seed % 2:
        x = x.astype(np.float32)
    block_rows = int(rng.integers(1, 40))
    for eps in (0.01, 0.07, 0.1, 0.3):
        for min_samples in (1, 2, 3, 5):
            ours = cluster_labels(x, eps=eps, min_samples=min_samples, block_rows=block_rows)
            np.testing.assert_array_equal(ours, _sklearn(x, eps, min_samples), err_msg=f"{eps=} {min_samples=}")


@pytest.mark.parametrize("min_samples", [1, 2, 4])
def test_duplicates_and_near_duplicates(min_samples):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(6, 16))
    x = np.concatenate([base, base[[0, 0, 3]], base[[1, 2]] * (1 + 1e-7), base[[4]] + 1e-9])
    rng.shuffle(x)
    ours = cluster_labels(x, eps=0.07, min_samples=min_samples, block_rows=3)
    np.testing.assert_array_equal(ours, _sklearn(x, 0.07, min_samples))
    # every duplicate sits in a cluster with its original (noise only when too few copies)
    assert len(set(ours[ours >= 0])) <= 6


def test_all_identical_rows_form_one_cluster_with_small_blocks():
    x = np.tile(np.arange(1.0, 9.0), (500, 1))
    labels = cluster_labels(x, eps=0.07, min_samples=3, block_rows=16)
    assert (labels == 0).all()


def test_border_point_goes_to_the_first_cluster_that_reaches_it():
    # two dense groups on the unit circle and one point between them, within eps of both
    angles = np.array([0.0, 0.01, 0.02, 0.40, 0.41, 0.42, 0.21])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    eps = 1 - np.cos(0.2)
    ours = cluster_labels(x, eps=eps, min_samples=3)
    np.testing.assert_array_equal(ours, _sklearn(x, eps, 3))
    assert ours[-1] == 0  # reachable from both clusters; the lower-numbered one wins


def test_zero_rows_match_sklearn():
    x = np.array([[1.0, 0.0], [0.0, 0.0], [0.99, 0.05], [0.0, 0.0]])
    for eps in (0.07, 1.0, 1.5):
        for min_samples in (1, 2):
            ours = cluster_labels(x, eps=eps, min_samples=min_samples)
            np.testing.assert_array_equal(ours, _sklearn(x, eps, min_samples))


def test_single_row_and_empty_input():
    np.testing.assert_array_equal(cluster_labels(np.ones((1, 4))), [0])
    np.testing.assert_array_equal(cluster_labels(np.ones((1, 4)), min_samples=2), [-1])
    out = cluster_labels(np.empty((0, 4)))
    assert out.shape == (0,) and out.dtype == np.int64


def test_high_dimensional_paper_setting():
    rng = np.random.default_rng(3)
    x = _blobs(rng, 400, 768, 40, 0.1).astype(np.float32)
    np.testing.assert_array_equal(cluster_labels(x, block_rows=64), _sklearn(x, 0.07, 1))


def test_rejects_bad_parameters():
    x = np.eye(3)
    for eps in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be a finite number > 0"):
            cluster_labels(x, eps=eps)
    with pytest.raises(ValueError, match="min_samples"):
        cluster_labels(x, min_samples=0)
    with pytest.raises(ValueError, match="2-D"):
        cluster_labels(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        cluster_labels(np.array([[1.0, np.nan], [1.0, 0.0]]))
    # each once accepted: a negative block split every label apart, None/True/"0.1" were
    # read as numbers or failed deep inside, a complex input lost its imaginary part
    for name, value in (("block_rows", -1), ("block_rows", 0), ("eps", None), ("eps", "0.1"),
                        ("min_samples", None), ("min_samples", True), ("min_samples", 2.5),
                        ("eps", 10**400)):
        with pytest.raises(ValueError, match=f"{name} must be .*got {value!r}"):
            cluster_labels(np.ones((5, 4)), **{name: value})
    with pytest.raises(TypeError, match="real numbers, got dtype complex128"):
        cluster_labels(x * (1 + 1j))


def test_rows_too_large_or_too_small_to_square_keep_their_direction():
    """1e200 squared overflows float64 (the rows came out as zeros, two labels apart), 1e-300
    squared vanishes: each row is first divided by its largest value."""
    for scale in (1e200, 1e-300):
        np.testing.assert_array_equal(cluster_labels(np.array([[1.0, 1.0], [1.0, 1.01], [1.0, -1.0]])
                                                     * scale, eps=0.01), [0, 0, 1])


@pytest.mark.parametrize("int8", [True, False])
def test_memory_is_bounded_by_the_tile(monkeypatch, int8):
    """No product tile larger than block_rows x TILE_COLS is ever formed, whatever n."""
    import vlsr_core.engine.clustering as clustering
    from vlsr_core.engine import screening

    shapes = []
    real = screening._decide

    def spy(rows, cols, eps, approx, *args, **kwargs):
        shapes.append(approx.shape)
        return real(rows, cols, eps, approx, *args, **kwargs)

    monkeypatch.setattr(screening, "_decide", spy)
    monkeypatch.setattr(screening, "_int8_works", lambda: int8)
    monkeypatch.setattr(screening, "INT8_MIN_PRODUCTS", 0)
    monkeypatch.setattr(clustering, "TILE_COLS", 300)
    x = np.random.default_rng(0).normal(size=(1000, 8))
    for min_samples in (1, 3):
        shapes.clear()
        assert np.array_equal(cluster_labels(x, min_samples=min_samples, block_rows=50),
                              DBSCAN(eps=0.07, min_samples=min_samples, metric="cosine").fit_predict(x))
        assert max(r for r, _ in shapes) == 50 and max(c for _, c in shapes) == 300


def test_edges_folded_a_few_at_a_time_give_the_same_partition(monkeypatch):
    import vlsr_core.engine.clustering as clustering

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, 16))
    x = centres[rng.integers(0, 30, 400)] + 0.12 * rng.normal(size=(400, 16))
    expected = DBSCAN(eps=0.07, metric="cosine", min_samples=1).fit_predict(x)
    assert len(set(expected)) < 300  # clusters formed
    for buffer in (1, 7, 1 << 20):
        monkeypatch.setattr(clustering, "EDGE_BUFFER", buffer)
        assert np.array_equal(cluster_labels(x, block_rows=64), expected), buffer


def test_progress_rises_to_one():
    x = np.random.default_rng(0).normal(size=(300, 8))
    for min_samples in (1, 3):
        seen = []
        cluster_labels(x, min_samples=min_samples, block_rows=32, progress=seen.append)
        assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 5

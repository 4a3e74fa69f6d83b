"""The int8 products that screen neighbour pairs: within their stated bound, and never a change
of the partition against float products or scikit-learn."""

import platform

import numpy as np
import pytest
from sklearn.cluster import DBSCAN

from vlsr_core import cluster_labels
from vlsr_core.engine import screening
from vlsr_core.engine.dots import unit_rows

# fbgemm is PyTorch's x86 kernel; elsewhere (ARM: qnnpack) clustering uses float products only
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the int8 screen runs on x86 only")


def test_the_int8_kernel_passes_its_self_check_here():
    """On x86 with PyTorch the screen must be in use: a PyTorch release that changes the
    quantised API would otherwise slow clustering down without a word."""
    assert screening._int8_works()


@pytest.fixture(autouse=True)
def _int8_at_any_size(monkeypatch):
    monkeypatch.setattr(screening, "INT8_MIN_PRODUCTS", 0)


def _near_eps(rng, n, dim, eps=0.07):
    """Unit rows in groups whose members sit around eps from each other: most pairs of a group
    fall inside the int8 bound of the threshold, so the exact re-check decides them."""
    centres = rng.normal(size=(max(n // 6, 1), dim))
    x = centres[rng.integers(0, len(centres), n)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # a member at cosine distance d from its centre: pairs land near 2 d
    d = rng.uniform(0.5 * eps / 2, 1.5 * eps / 2, size=n)
    u = rng.normal(size=x.shape)
    u -= np.sum(u * x, axis=1, keepdims=True) * x
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return ((1 - d)[:, None] * x + np.sqrt(1 - (1 - d) ** 2)[:, None] * u).astype(np.float32)


@pytest.mark.parametrize("case", ["isotropic", "outlier dimension", "sparse", "zero rows", "float64"])
def test_int8_products_stay_within_their_bound(case):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(700, 64))
    if case == "outlier dimension":
        x[:, 3] *= 30  # one large component in every row, as some text encoders give
    elif case == "sparse":
        x *= rng.random(size=x.shape) < 0.05
    elif case == "zero rows":
        x[::7] = 0
    x = unit_rows(x if case == "float64" else x.astype(np.float32))
    screen = screening.Int8Tiles(x, 256)
    block = screen.block(x[100:400])
    exact = x[100:400].astype(np.float64) @ x.astype(np.float64).T
    for tile in screen.tiles(0):
        approx = screen.products(block, tile) / screening.OUT_LEVELS
        truth = np.clip(exact[:, tile[0] : tile[0] + tile[1]], 0, 1)
        assert np.abs(approx - truth).max() <= block[2]
    # the bound is a fraction of the distances that matter, not a blanket "re-check all"
    assert block[2] < 0.1


def test_few_products_stay_in_float(monkeypatch):
    monkeypatch.setattr(screening, "INT8_MIN_PRODUCTS", 1000)
    x = unit_rows(np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32))
    assert isinstance(screening.tiles(x, 4096, 999), screening.FloatTiles)
    assert isinstance(screening.tiles(x, 4096, 1000), screening.Int8Tiles)


@pytest.mark.parametrize("seed", range(6))
def test_int8_and_float_products_give_the_same_clusters(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    x = _near_eps(rng, int(rng.integers(300, 1500)), int(rng.choice([16, 96, 384])))
    if seed % 3 == 2:
        x = x.astype(np.float64)
    block_rows = int(rng.choice([64, 333, 1024]))
    monkeypatch.setattr("vlsr_core.engine.clustering.TILE_COLS", int(rng.choice([512, 4096])))
    for min_samples in (1, 3):
        int8 = cluster_labels(x, min_samples=min_samples, block_rows=block_rows)
        with monkeypatch.context() as m:
            m.setattr(screening, "_int8_works", lambda: False)
            floats = cluster_labels(x, min_samples=min_samples, block_rows=block_rows)
        np.testing.assert_array_equal(int8, floats)
        assert len(set(int8)) < 0.9 * len(x)  # clusters formed: the threshold was crossed
        np.testing.assert_array_equal(int8, DBSCAN(eps=0.07, min_samples=min_samples,
                                                   metric="cosine").fit_predict(x))


def test_a_kernel_that_breaks_the_bound_is_not_used(monkeypatch):
    real = screening.Int8Tiles.products
    monkeypatch.setattr(screening.Int8Tiles, "products", lambda self, block, tile: real(self, block, tile) // 2)
    assert screening._int8_works.__wrapped__() is False
    monkeypatch.setattr(screening, "_int8_works", screening._int8_works.__wrapped__)
    x = unit_rows(np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32))
    assert isinstance(screening.tiles(x, 4096, 10**9), screening.FloatTiles)


def test_without_pytorch_float_products_are_used(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" raises ImportError
    assert screening._int8_works.__wrapped__() is False


@pytest.mark.parametrize("eps", [0.95, 1.0, 1.01, 1.5, 1.99])
def test_thresholds_near_or_below_zero_products_give_the_same_clusters(eps):
    """Products are clipped at 0: a threshold 1 - eps near or below 0 is decided on float ones."""
    opposite = np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]], dtype=np.float32)  # at distance 2
    assert list(cluster_labels(opposite, eps=eps)) == [0, 1]
    x = np.concatenate([opposite, np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)])
    for min_samples in (1, 2, 5):
        np.testing.assert_array_equal(cluster_labels(x, eps=eps, min_samples=min_samples),
                                      DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(x))


def test_anisotropic_embeddings_fall_back_to_float_products():
    """Text-encoder-like embeddings (a common direction, an outlier dimension) put most pairs
    within the int8 bound of the threshold; the screen then hands the tiles to float products
    instead of computing most pairs exactly."""
    rng = np.random.default_rng(0)
    x = 3.0 * np.eye(256)[0] + rng.normal(size=(3000, 256)) / 16  # median cosine ~0.9
    x[:, 7] *= 6
    x = unit_rows(x.astype(np.float32))
    screen = screening.Int8Tiles(x, 1024)
    floats = screening.FloatTiles(x, 1024)
    block = screen.block(x[:1024])
    got = screen.pairs(block, (1024, 1024), 0.07)
    assert screen.float_only
    expected = floats.pairs(x[:1024], (1024, 1024), 0.07)
    np.testing.assert_array_equal(np.stack(got), np.stack(expected))
    assert len(expected[0]) > 0  # the threshold is crossed
    np.testing.assert_array_equal(cluster_labels(x, min_samples=3),
                                  DBSCAN(eps=0.07, min_samples=3, metric="cosine").fit_predict(x))

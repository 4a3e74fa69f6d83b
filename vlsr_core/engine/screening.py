"""The pairs of unit rows whose dot product reaches a threshold, found tile by tile from fast,
approximate products whose error is bounded, and decided exactly.

Clustering spends nearly all its time forming the products of every pair of labels. On x86,
PyTorch's int8 kernel (fbgemm) forms them 1.3-1.7x faster than float32 BLAS here, with an error that
can be bounded for every pair: the rows are rounded to int8 here, so each row's rounding error is
known; the integer sums are exact; and the result, rounded to steps of 1/255, is off by at most
half a step more. A pair whose approximate product clears the threshold by more than the bound is
decided at once; a pair within the bound is re-computed by :func:`~vlsr_core.engine.dots.exact_dots`.
The answer is therefore that of exact products, whichever kernel formed the approximation.

Without a usable int8 kernel (no PyTorch, a quantised engine other than fbgemm's, or a failed
self-check on first use) float32 BLAS products are screened the same way, with their rounding
bound (:func:`~vlsr_core.engine.dots.rounding_bound`).
"""

import functools
import math
import warnings

import numpy as np

from .dots import exact_dots, rounding_bound, unit_rows

# The int8 products are rounded to steps of 1 / OUT_LEVELS over [0, 1] (uint8, zero point 0).
OUT_LEVELS = 255
# Activations use 7 bits (values 1..127 around the zero point 64) so that fbgemm's 16-bit pair
# sums cannot saturate: 2 x 127 x 127 < 2**15.
ROW_LEVELS, ROW_ZERO = 63, 64
COL_LEVELS = 127
# Below this many products float BLAS is as fast: about 11,600 labels' triangle.
INT8_MIN_PRODUCTS = 1 << 26
# Columns near the diagonal go in tiles this wide, the rest in tiles of the caller's width.
FINE_COLS = 1024
# Added to every int8 bound: the float32 rounding of the scales and of the requantisation.
SLACK = 1e-5
# A tile with more than 1 / NEAR_SHARE of its pairs within the bound costs more in exact products
# (about 1 us each) than int8 saves over float32 (about 30 ms a 1,024 x 4,096 tile here).
NEAR_SHARE = 256


def _decide(rows, cols, eps, approx, lo, hi, joined=None, max_near=None):
    """Local ``(i, j)`` with cosine distance ``1 - rows[i] . cols[j] <= eps``: candidates are the
    pairs with ``approx >= lo``, those with ``approx > hi`` are sure, the rest computed exactly,
    except those that ``joined`` (local ``i, j`` -> bool) says need no answer, which are left out.
    None if more than ``max_near`` pairs would need an exact product."""
    candidates = np.flatnonzero(approx >= lo)  # few: 1-D is cheap
    r, c = np.divmod(candidates, approx.shape[1])
    sure = approx.ravel()[candidates] > hi
    near = np.flatnonzero(~sure)
    if near.size and joined is not None:
        near = near[~joined(r[near], c[near])]
    if max_near is not None and near.size > max_near:
        return None
    if near.size:
        sure[near] = 1.0 - exact_dots(rows, cols, r[near], c[near]) <= eps
    return r[sure], c[sure]


class FloatTiles:
    """Products of row blocks with tiles of ``cols`` by float BLAS, within their rounding bound."""

    def __init__(self, cols, tile_cols):
        self.cols = cols
        self.tile_cols = tile_cols
        self.band = rounding_bound(cols.shape[1], cols.dtype) + 2 * np.finfo(cols.dtype).eps

    def tiles(self, start):
        """``(left, width)`` of the tiles that cover the columns from ``start`` on."""
        return [(left, self.tile_cols) for left in range(start, len(self.cols), self.tile_cols)]

    def block(self, rows):
        return rows

    def pairs(self, block, tile, eps, joined=None):
        """Local ``(i, j)`` (``j`` counted from the tile's first column) at cosine distance <= eps;
        pairs that would need an exact product and ``joined(i, j)`` holds for are left out."""
        cols = self.cols[tile[0] : tile[0] + tile[1]]
        t = block.dtype.type
        return _decide(block, cols, eps, block @ cols.T, t(1.0 - eps - self.band), t(1.0 - eps + self.band),
                       joined)


class Int8Tiles:
    """Products of row blocks with tiles of ``cols`` by fbgemm's int8 kernel, within a bound.
    Rows and columns must have norms of at most 1 (unit or zero rows, as clustering passes): the
    kernel's requantisation overflows on products of millions.

    ``cols`` are rounded per row to ``COL_LEVELS`` steps each side of zero and packed once; each
    block of rows is rounded with one scale to ``ROW_LEVELS`` steps. With ``e`` a row's rounding
    error and ``~`` a rounded row, ``|x.y - ~x.~y| <= |e_x| |~y| + |x| |e_y|``; the products come
    back clipped to [0, 1] and rounded to steps of 1 / OUT_LEVELS, half a step more.
    """

    def __init__(self, cols, tile_cols):
        import torch

        self.torch = torch
        self.cols = cols
        self.tile_cols = tile_cols
        self.fine_cols = FINE_COLS if tile_cols % FINE_COLS == 0 else tile_cols
        self.floats, self.float_only = FloatTiles(cols, tile_cols), False
        self.col_error = self.col_norm = 0.0
        self.packed = {}
        # rounded a tile at a time, so that no float copy of all the columns is made
        for left in range(0, len(cols), tile_cols):
            q, scale, error, norm = self._rounded(left, tile_cols)
            self.col_error, self.col_norm = max(self.col_error, error), max(self.col_norm, norm)
            self.packed[left, tile_cols] = self._pack(q, scale)
        # the fine tiles of the stripe of tile_cols columns last asked for: packed when first needed
        self.fine = {}

    def _rounded(self, left, width):
        tile = self.cols[left : left + width]
        return _rounded(tile, np.abs(tile).max(axis=1) / COL_LEVELS, COL_LEVELS)

    def _pack(self, q, scale):
        torch = self.torch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch marks quantised tensors as deprecated
            w = torch._make_per_channel_quantized_tensor(
                torch.from_numpy(q.astype(np.int8)), torch.from_numpy(scale), torch.zeros(len(q), dtype=torch.long), 0)
            return torch.ops.quantized.linear_prepack(w, None)

    def _packed(self, tile):
        if tile[1] == self.tile_cols:
            return self.packed[tile]
        if tile not in self.fine:
            if any(left // self.tile_cols != tile[0] // self.tile_cols for left, _ in self.fine):
                self.fine.clear()
            q, scale, _, _ = self._rounded(*tile)  # rows are rounded alone: as in their full tile
            self.fine[tile] = self._pack(q, scale)
        return self.fine[tile]

    def tiles(self, start):
        """``(left, width)`` of the tiles that cover the columns from ``start`` on: fine ones up to
        a multiple of ``tile_cols``, so that little of the lower triangle is computed, then full ones."""
        fine, n = self.fine_cols, len(self.cols)
        first = min(-(-start // self.tile_cols) * self.tile_cols, n)
        return ([(left, fine) for left in range(start - start % fine, first, fine)]
                + [(left, self.tile_cols) for left in range(first, n, self.tile_cols)])

    def block(self, rows):
        """The rows, rounded for the kernel, and their share of the bound."""
        q, scale, error, _ = _rounded(rows, np.full(len(rows), np.abs(rows).max(initial=0.0) / ROW_LEVELS), ROW_LEVELS)
        norm = float(_norm_bound(rows).max(initial=0.0))
        scale = float(scale[0]) if len(rows) else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = self.torch._make_per_tensor_quantized_tensor(
                self.torch.from_numpy((q + ROW_ZERO).astype(np.uint8)), scale, ROW_ZERO)
        return rows, quantized, error * self.col_norm + norm * self.col_error + 0.5 / OUT_LEVELS + SLACK

    def products(self, block, tile):
        """The block's products with a tile, in steps of 1 / OUT_LEVELS (uint8)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.torch.ops.quantized.linear(block[1], self._packed(tile), 1.0 / OUT_LEVELS, 0)
        return np.asarray(_Bytes(out))

    def pairs(self, block, tile, eps, joined=None):
        """As :meth:`FloatTiles.pairs`. Float products decide instead, from this tile on, where
        the int8 products cannot screen: a threshold within a step of 0 (where the products are
        clipped), or a tile in which more than 1 / NEAR_SHARE of the pairs lie within the bound
        (strongly anisotropic embeddings: the bound grows with the largest component)."""
        rows, _, band = block
        if not self.float_only and (1.0 - eps - band) * OUT_LEVELS >= 2:
            # in output steps, outward by one for the rounding of these bounds
            lo = math.floor((1.0 - eps - band) * OUT_LEVELS) - 1
            hi = math.ceil((1.0 - eps + band) * OUT_LEVELS) + 1
            approx = self.products(block, tile)
            cols = self.cols[tile[0] : tile[0] + tile[1]]
            found = _decide(rows, cols, eps, approx, lo, hi, joined, max_near=approx.size // NEAR_SHARE)
            if found is not None:
                return found
            self.float_only = True
        return self.floats.pairs(rows, tile, eps, joined)


def tiles(cols, tile_cols, products):
    """How to screen ``products`` products with ``cols``: in int8 where this machine passes the
    self-check and there are enough of them to repay packing (and importing PyTorch), else float."""
    if products >= INT8_MIN_PRODUCTS and _int8_works():
        return Int8Tiles(cols, tile_cols)
    return FloatTiles(cols, tile_cols)


@functools.lru_cache(maxsize=1)
def _int8_works():
    """Whether fbgemm's int8 products are here and keep the promise the screening relies on, on
    a known case: every product within the block's bound of the exact one, clipped to [0, 1].
    The case has 768 dimensions, an outlier dimension, near pairs, constant rows (the largest
    integer sums) and opposite rows, in full and in narrow tiles."""
    try:
        import torch

        if torch.backends.quantized.engine not in ("x86", "fbgemm"):
            return False
        rng = np.random.default_rng(0)
        x = rng.normal(size=(600, 768))
        x[:, 0] *= 8  # an outlier dimension
        x[300:] = x[:300] + 0.05 * rng.normal(size=(300, 768))
        x[[10, 11, 12]] = [np.ones(768), -np.ones(768), np.eye(768)[5]]
        x = unit_rows(x.astype(np.float32))
        screen = Int8Tiles(x, 2048)
        exact = x.astype(np.float64) @ x.astype(np.float64).T
        for start in (0, 256):
            block = screen.block(x[start : start + 256])
            for left, width in screen.tiles(0) + [(0, screen.fine_cols)]:
                approx = screen.products(block, (left, width)) / OUT_LEVELS
                truth = np.clip(exact[start : start + 256, left : left + width], 0.0, 1.0)
                if not np.abs(approx - truth).max() <= block[2]:
                    return False
        return True
    except Exception:  # no PyTorch, no fbgemm, or an API that changed: float products
        return False


class _Bytes:
    """The bytes of a contiguous quint8 tensor, for numpy to read without a copy (``int_repr``
    copies: 5-7 % of the clustering's time); the array keeps the tensor alive."""

    def __init__(self, tensor):
        assert tensor.is_contiguous() and tensor.element_size() == 1
        self.tensor = tensor
        self.__array_interface__ = {"data": (tensor.data_ptr(), True), "shape": tuple(tensor.shape),
                                    "typestr": "|u1", "version": 3}


def _rounded(x, scale, levels):
    """Rows rounded to integer multiples of a scale each (made exact in float32, as the kernel
    keeps it), at most ``levels`` either side of zero: ``(q, scale, error, norm)`` with ``q`` the
    integers (float), ``error`` and ``norm`` upper bounds on the largest norm of a row's rounding
    error and of a rounded row."""
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = x * (1 / scale).astype(x.dtype)[:, None]
    np.clip(np.rint(q, out=q), -levels, levels, out=q)
    rounded = q * scale[:, None]
    u = np.finfo(rounded.dtype).eps / 2
    norm = _norm_bound(rounded) * (1 + u)
    # |fl(x - q s) - (x - q s)| <= u (|x| + 2 |x - q s|) element-wise, and |x - q s| <= |x|
    error = _norm_bound(np.subtract(x, rounded, out=rounded)) + 3 * u * _norm_bound(x)
    return q, scale.astype(np.float64), float(error.max(initial=0.0)), float(norm.max(initial=0.0))


def _norm_bound(x):
    """Row norms, rounded up beyond the float error of their sum."""
    d = x.shape[1]
    u = np.finfo(x.dtype).eps / 2
    return np.sqrt(np.einsum("ij,ij->i", x, x)) / (1 - (d + 2) * u)

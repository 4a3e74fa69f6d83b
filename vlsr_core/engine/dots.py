"""Dot products whose outcome does not depend on the BLAS kernel, the block size or the thread count.

A BLAS matrix product may sum in any order, so the same pair of vectors can get scores that differ
in the last bits from one machine (``OPENBLAS_CORETYPE``), block shape or column position to
another. The engine therefore uses BLAS products only to *find candidates*, with a margin that
covers their worst-case rounding (:func:`rounding_bound`), and decides every comparison that matters
(order, ties, thresholds) on :func:`exact_dots`: products formed in float64, which is exact for
float32 inputs, summed in numpy's fixed pairwise order. Identical vectors then get bitwise identical
scores, and every outcome is a function of the vectors alone.
"""

import numpy as np

# Pairs per chunk in exact_dots: 256 x 768 float64 = 1.5 MB stays in cache (2.7x faster per pair than 8,192).
EXACT_CHUNK = 256


def exact_dots(a, b, a_index=None, b_index=None, chunk=EXACT_CHUNK):
    """Row-wise dot products ``a[a_index[p]] . b[b_index[p]]`` in float64, the same on every machine.

    Args:
        a: ndarray of shape (n_a, dim).
        b: ndarray of shape (n_b, dim).
        a_index, b_index: int arrays of shape (n_pairs,); default: row p of each (equal lengths).
        chunk: pairs computed at a time; memory is about ``24 * chunk * dim`` bytes.

    Returns:
        float64 ndarray of shape (n_pairs,). For float32 inputs each product is exact, and the
        sum is numpy's pairwise summation along a contiguous row, whose order depends only on
        ``dim``: the value of a pair does not depend on which other pairs are computed with it.
    """
    a_index = np.arange(len(a)) if a_index is None else np.asarray(a_index, dtype=np.int64)
    b_index = np.arange(len(b)) if b_index is None else np.asarray(b_index, dtype=np.int64)
    if a_index.shape != b_index.shape:
        raise ValueError(f"{a_index.size} rows of a paired with {b_index.size} rows of b")
    out = np.empty(a_index.size, dtype=np.float64)
    for start in range(0, a_index.size, chunk):
        sl = slice(start, start + chunk)
        prod = np.asarray(a[a_index[sl]], dtype=np.float64)
        prod *= b[b_index[sl]]
        out[sl] = prod.sum(axis=1)
    return out


def rounding_bound(dim, dtype, norm_a=1.0, norm_b=1.0):
    """Largest possible error of a BLAS dot product of two ``dim``-vectors of these norms.

    ``|fl(a.b) - a.b| <= gamma(dim) * sum|a_i b_i| <= gamma(dim) * |a| |b|`` with
    ``gamma(n) = n u / (1 - n u)`` and ``u`` the unit roundoff, whatever the summation order or FMA
    use (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1). Doubled, plus the float64
    rounding of :func:`exact_dots`, so that two products of the same pair may be compared.
    """
    u = np.finfo(dtype).eps / 2
    nu = max(int(dim), 1) * u
    gamma = nu / (1 - nu)
    exact_err = 2 * max(int(dim), 1) * np.finfo(np.float64).eps
    return float(2 * (gamma + exact_err) * norm_a * norm_b)


PEAK_RANGE = 1e-15, 1e15  # a row whose largest value lies outside is first divided by it


def real_array(x, name):
    """``x`` as an ndarray of real numbers: TypeError, naming ``name``, for complex numbers
    (their imaginary part would be dropped), text or other objects."""
    try:
        x = np.asarray(x)
        if x.dtype == object:  # (None as NaN, as numpy reads it)
            x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array of numbers: {e}") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def in_range(x):
    """``x`` (2-D) with each row whose largest absolute value is outside :data:`PEAK_RANGE`
    scaled to unit length (a copy then), by way of that value: the squares of its values
    would overflow (``1e20`` in float32) or vanish (``1e-200``) on the way."""
    if not x.size or x.dtype.kind != "f":
        return x
    with np.errstate(invalid="ignore"):  # (no |x| copy of a large matrix)
        peak = np.maximum(np.max(x, axis=1), -np.min(x, axis=1)).astype(np.float64)
    low, high = PEAK_RANGE
    odd = ((peak > 0) & (peak < low)) | ((peak > high) & np.isfinite(peak))
    if not odd.any():
        return x
    x = np.array(x)
    rows = x[odd] / peak[odd, None]  # (its largest value 1: its squares are safe)
    x[odd] = rows / np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
    return x


def unit_rows(x, dtype=None):
    """Rows scaled to unit length, with norms taken by :func:`exact_dots` (all-zero rows stay zero).

    Args:
        x: ndarray of shape (n, dim).
        dtype: of the result; default float32 for float32 input, else float64.
    """
    x = in_range(np.asarray(x))
    dtype = dtype or (np.float32 if x.dtype == np.float32 else np.float64)
    norms = np.sqrt(exact_dots(x, x))
    norms[norms == 0] = 1.0
    # divided in the result's type: no float64 copy of a float32 matrix
    out = np.array(x, dtype=dtype, order="C")
    out /= norms.astype(dtype)[:, None]
    return out


def rows_equal_groups(x):
    """Groups of bitwise-equal rows: ``(first, inverse)`` as from ``np.unique(..., axis=0)``.

    ``first`` holds the index of the first row of each distinct vector (in row order), ``inverse``
    the group of every row, so that ``x[first][inverse]`` equals ``x``. Twin labels (e.g. casings
    that a model embeds alike) are found once here rather than by comparing rounded scores.
    """
    x = np.ascontiguousarray(x)
    if x.shape[0] == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    keys = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1])))[:, 0]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    # number groups by first appearance, so that groups follow the row order
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order].astype(np.int64), rank[inverse.reshape(-1)].astype(np.int64)


def sampled_pairs(n, max_pairs):
    """Index pairs (a, b), a != b, of n items: all pairs a < b when there are at most
    ``max_pairs``, else ``max_pairs`` drawn with a fixed seed (the same on every call)."""
    if n * (n - 1) // 2 <= max_pairs:
        return np.triu_indices(n, 1)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, n, max_pairs), rng.integers(0, n - 1, max_pairs)
    return a, b + (b >= a)  # never an item with itself

"""DBSCAN with cosine distance, computed in tiles of the upper triangle so that no n x n matrix
is ever held and the time stays close to that of the matrix product alone.

The result is the partition *and the label numbering* of scikit-learn's
``DBSCAN(eps, min_samples, metric="cosine")``: the same normalisation and distance formula,
the same ``distance <= eps`` neighbourhood (a point is its own neighbour), core points where the
neighbourhood holds at least ``min_samples`` points, clusters numbered in the order of their
lowest-index core point, and a border point given to the lowest-numbered cluster that reaches it.

Whether two labels are neighbours is decided on :func:`~vlsr_core.engine.dots.exact_dots`: the blocked
matrix product (int8 where the machine has PyTorch's fbgemm kernel, else float BLAS:
:mod:`~vlsr_core.engine.screening`) only finds the pairs, and the pairs whose product lies within
its error bound of the threshold are re-checked exactly. The partition therefore depends on the
vectors alone, not on the kernel, ``block_rows``, the tile shape or the thread count. Where a pair's
exact distance is within float rounding of ``eps``, scikit-learn (whose product is a float BLAS one)
may decide it the other way.
"""

import numbers

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .defaults import DEFAULT_EPS, DEFAULT_MIN_SAMPLES
from . import screening
from .dots import real_array, unit_rows

# Products are formed in tiles of block_rows x TILE_COLS (1,024 x 4,096 float32 = 16 MB), whatever
# n; each tile is compared once with the threshold and only its candidate pairs are kept.
DEFAULT_BLOCK_ROWS = 1024
TILE_COLS = 4096
# Edges joining two components gathered before they are folded into the components.
EDGE_BUFFER = 1 << 20


def cluster_labels(embeddings, eps=DEFAULT_EPS, min_samples=DEFAULT_MIN_SAMPLES, block_rows=DEFAULT_BLOCK_ROWS,
                   progress=None):
    """Cluster label embeddings with DBSCAN under cosine distance ``1 - cos(a, b)``.

    Args:
        embeddings: array-like of shape (n_labels, dim); need not be normalised. Float32
            input is computed in float32, anything else in float64 (as scikit-learn does).
        eps: the largest cosine distance at which two labels are neighbours (the paper: 0.07).
        min_samples: neighbourhood size (the point included) that makes a core point; with 1
            every label is a core point and clusters are the connected components of the graph
            "cosine similarity >= 1 - eps".
        block_rows: rows of the distance matrix computed at a time; memory is about
            ``block_rows * TILE_COLS`` distances whatever n, beside a unit-length copy of the
            embeddings (and, with the int8 kernel, two int8 copies), time
            ``n_labels**2 * dim / 2`` multiply-adds.
        progress: optional callable taking the fraction done.

    Returns:
        ndarray of shape (n_labels,) and dtype int64: the cluster id of each row, 0, 1, ... in
        order of first core point; -1 marks noise (only when ``min_samples > 1``). An all-zero
        row is, as in scikit-learn, at distance 1 from every other row.

    Example:
        >>> cluster_labels(np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]]), eps=0.07)
        array([0, 0, 1])
    """
    check_number("eps", eps)
    check_number("min_samples", min_samples, whole=True)
    check_number("block_rows", block_rows, whole=True)
    x = _normalized(embeddings)
    n = x.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)

    report = progress or (lambda fraction: None)
    if min_samples == 1:
        # Every point is core: the clusters are the connected components, in one pass.
        labels = number_by_first_occurrence(_components(x, eps, block_rows, progress=report)[0])
        report(1.0)
        return labels

    # three passes: neighbourhood sizes, components of the core points, border points
    labels = np.full(n, -1, dtype=np.int64)
    counts = _components(x, eps, block_rows, edges=False, progress=lambda f: report(0.5 * f))[1]
    core = np.flatnonzero(counts >= min_samples)
    if core.size:
        comp = _components(x[core], eps, block_rows, progress=lambda f: report(0.5 + 0.4 * f))[0]
        labels[core] = number_by_first_occurrence(comp)
        border = np.flatnonzero(counts < min_samples)
        if border.size:
            labels[border] = _nearest_cluster_of_border(x[border], x[core], labels[core], eps, block_rows)
    report(1.0)
    return labels


def check_number(name, value, whole=False, zero=False):
    """ValueError unless ``value`` is a finite number > 0 (``zero``: >= 0), an integer if
    ``whole`` (not a bool, which numpy and Python would read as 0 or 1)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # (text, None, 10**400)
        number = np.nan
    ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
          and np.isfinite(number) and (number >= 0 if zero else number > 0)
          and (not whole or number == int(number)))
    if not ok:
        kind = (("an integer" if whole else "a finite number")
                + (" >= 0" if zero else (" >= 1" if whole else " > 0")))
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def _normalized(embeddings):
    x = real_array(embeddings, "embeddings")
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n_labels, dim), got shape {x.shape}")
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.shape[0] and not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return unit_rows(x)


def neighbour_pairs(embeddings, radius, block_rows=DEFAULT_BLOCK_ROWS):
    """Yield ``(i, j)``, int ndarrays, a tile at a time: every pair of rows ``i < j`` within cosine
    distance ``radius``, decided as :func:`cluster_labels` decides neighbours (in memory bounded
    whatever n)."""
    check_number("radius", radius)
    check_number("block_rows", block_rows, whole=True)
    x = _normalized(embeddings)
    if x.shape[0]:
        for _, i, j, _ in _upper_pairs(x, radius, block_rows):
            yield i, j


def _upper_pairs(x, eps, block_rows, joined=None):
    """Yield, a tile of products at a time, ``(stop, i, j, last)``: the neighbour pairs ``i < j``
    found in a tile of the block of rows ending at ``stop``, and whether it is the block's last.

    Only the upper triangle is computed (the decision is symmetric: exact values decide it),
    in tiles of ``block_rows`` x :data:`TILE_COLS` products, so memory does not grow with n.
    A pair that needs an exact product and for which ``joined(i, j)`` holds is left out.
    """
    n = x.shape[0]
    products = screening.tiles(x, TILE_COLS, n * (n + 1) // 2)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = products.block(x[start:stop])
        tiles = products.tiles(start)
        for k, (left, width) in enumerate(tiles):
            local = None if joined is None else (lambda i, j, s=start, l=left: joined(i + s, j + l))
            i, j = products.pairs(block, (left, width), eps, local)
            i += start
            j += left
            upper = j > i
            yield stop, i[upper], j[upper], k == len(tiles) - 1


def _components(x, eps, block_rows, edges=True, progress=None):
    """Connected components of the neighbour graph and every row's neighbourhood size.

    Edges are folded into the components (each row's current component id) after each block of
    rows, and whenever :data:`EDGE_BUFFER` of them joining different components have gathered,
    so memory stays bounded even when every label duplicates every other; a pair already inside
    one component then needs no exact product. ``edges=False`` counts only (every pair decided).
    ``progress`` gets the fraction of the triangle's area done after each tile.
    """
    n = x.shape[0]
    comp = np.arange(n)
    counts = np.ones(n, dtype=np.int64)  # a point is its own neighbour, as in scikit-learn
    pending = []

    def fold(comp):
        if not pending:
            return comp
        a, b = np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending])
        pending.clear()
        graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
        return connected_components(graph, directed=False)[1][comp]

    def joined(i, j):
        return comp[i] == comp[j]

    for stop, i, j, last in _upper_pairs(x, eps, block_rows, joined if edges else None):
        if edges:
            a, b = comp[i], comp[j]
            join = a != b
            pending.append((a[join], b[join]))
            if last or sum(p[0].size for p in pending) >= EDGE_BUFFER:
                comp = fold(comp)
        else:
            counts += np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
        if progress is not None:
            progress(1 - ((n - stop) / n) ** 2)
    return fold(comp), counts


def number_by_first_occurrence(comp):
    """Renumber ids 0, 1, ... in order of each id's first occurrence."""
    uniq, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(uniq.size)
    return rank[inverse]


def _nearest_cluster_of_border(border, core, core_labels, eps, block_rows):
    """For each non-core point, the lowest cluster id among its core neighbours, else -1."""
    out = np.full(border.shape[0], np.iinfo(np.int64).max)
    products = screening.tiles(core, TILE_COLS, len(border) * len(core))
    for start in range(0, border.shape[0], block_rows):
        block = products.block(border[start : start + block_rows])
        for tile in products.tiles(0):
            i, j = products.pairs(block, tile, eps)
            np.minimum.at(out, i + start, core_labels[j + tile[0]])
    out[out == np.iinfo(np.int64).max] = -1
    return out

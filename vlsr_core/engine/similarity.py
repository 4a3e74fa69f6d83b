"""Image-to-label cosine scores (spec steps 2 and 3), in chunks of bounded memory.

Embeddings are expected L2-normalised, so a cosine similarity is a dot product. Every score
returned is an :func:`~vlsr_core.engine.dots.exact_dots` value rounded to float32, so the same
(image, label) pair scores bitwise the same in both functions, on every machine; twin labels
(identical embeddings) score exactly alike.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .dots import exact_dots, rounding_bound, rows_equal_groups

# Working memory of vocabulary top-k per block of images: 9 bytes per image-label pair (the
# float32 scores, their partitioned copy, a bool mask); 64 MiB = 372 images x 20,000 labels.
TOPK_BLOCK_BYTES = 64 * 2**20


def pair_scores(image_embeddings, label_embeddings, image_index, label_index):
    """Dot products of chosen (image, label) pairs: ``s[p] = e[image_index[p]] . t[label_index[p]]``.

    Args:
        image_embeddings: ndarray of shape (n_images, dim).
        label_embeddings: ndarray of shape (n_labels, dim).
        image_index, label_index: int arrays of shape (n_pairs,).

    Returns:
        float32 ndarray of shape (n_pairs,).
    """
    return exact_dots(image_embeddings, label_embeddings, image_index, label_index).astype(np.float32)


def top_k_labels(image_embeddings, label_embeddings, k, block_rows=None, tie_rank=None,
                 one_per_vector=False, progress=None):
    """The k labels of highest score for every image, best first.

    A float32 matrix product over the distinct label vectors finds the candidates, with a margin
    that covers its rounding; the candidates are then ranked on exact scores. The result depends
    only on the vectors and ``tie_rank``, not on the BLAS kernel, ``block_rows`` or the threads.

    Args:
        image_embeddings: ndarray of shape (n_images, dim).
        label_embeddings: ndarray of shape (n_labels, dim).
        k: labels per image; capped at n_labels.
        block_rows: images scored at a time (default: as many as fit in ``TOPK_BLOCK_BYTES``);
            working memory is about ``9 * block_rows * n_distinct_labels`` bytes.
        tie_rank: int ndarray of shape (n_labels,), distinct values: of equal scores (twin labels
            with identical embeddings), the lower rank comes first. Default: the label index.
        one_per_vector: if True, twin labels take one place, under the label of lowest
            ``tie_rank``: k distinct vectors, not k labels of which several say the same.
        progress: optional callable taking the fraction done.

    Returns:
        (indices, scores): int64 and float32 ndarrays of shape (n_images, min(k, n_labels)),
        or (n_images, min(k, n_distinct_vectors)) with ``one_per_vector``.
    """
    n, m = image_embeddings.shape[0], label_embeddings.shape[0]
    labels = _Labels(np.ascontiguousarray(label_embeddings, dtype=np.float32),
                     np.arange(m) if tie_rank is None else np.asarray(tie_rank, dtype=np.int64),
                     one_per_vector)
    k = min(int(k), len(labels.distinct) if one_per_vector else m)
    indices = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float32)
    if k == 0 or n == 0:
        return indices, scores
    rows = block_rows or max(1, TOPK_BLOCK_BYTES // (9 * len(labels.distinct)))
    # the product uses every core through BLAS; the selection, single-threaded in numpy, runs
    # on row slices in threads (numpy releases the GIL), which measured 3x faster on 2 cores
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, n, rows):
            x = np.asarray(image_embeddings[start : start + rows], dtype=np.float32)
            s = x @ labels.distinct.T
            step = -(-len(s) // workers)
            parts = pool.map(lambda i: labels.top_k(x[i : i + step], s[i : i + step], k),
                             range(0, len(s), step))
            at = start
            for idx, sc in parts:
                indices[at : at + len(idx)], scores[at : at + len(idx)] = idx, sc
                at += len(idx)
            if progress is not None:
                progress(min(start + rows, n) / n)
    return indices, scores


class _Labels:
    """The label matrix as distinct vectors, each with its labels in tie order (only the first
    with ``one_per_vector``)."""

    def __init__(self, embeddings, tie_rank, one_per_vector=False):
        first, group = rows_equal_groups(embeddings)
        self.distinct = embeddings[first]
        self.tie_rank = tie_rank
        # labels listed group by group, each group in tie order
        self.members = np.lexsort((tie_rank, group))
        self.group_size = np.bincount(group, minlength=len(first))
        if one_per_vector:
            self.members = self.members[np.cumsum(self.group_size) - self.group_size]
            self.group_size = np.ones_like(self.group_size)
        self.group_start = np.cumsum(self.group_size) - self.group_size
        norms = np.sqrt(exact_dots(self.distinct, self.distinct))
        self.norm = float(norms.max()) if norms.size else 0.0

    def top_k(self, x, s, k):
        """Top-k (label indices, scores) of the images ``x``, given their float32 scores ``s``
        against the distinct vectors; ranked by exact score, then tie rank."""
        n_rows, n_distinct = s.shape
        k_distinct = min(k, n_distinct)
        kth = np.partition(s, n_distinct - k_distinct, axis=1)[:, n_distinct - k_distinct]
        # every vector that may beat the k-th best (at least k labels in every row)
        margin = rounding_bound(x.shape[1], np.float32, _max_norm(x), self.norm)
        row, vec = np.nonzero(s >= (kth - np.float32(margin) - _ULP * np.abs(kth))[:, None])
        exact = exact_dots(x, self.distinct, row, vec)
        # one entry per label of each candidate vector
        size = self.group_size[vec]
        offset = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
        label = self.members[np.repeat(self.group_start[vec], size) + offset]
        row, exact = np.repeat(row, size), np.repeat(exact, size)
        order = np.lexsort((self.tie_rank[label], -exact, row))
        first = np.searchsorted(row[order], np.arange(n_rows))
        take = order[first[:, None] + np.arange(k)]
        return label[take], exact[take].astype(np.float32)


# float32 values near kth lie within a few units in the last place of it
_ULP = np.float32(4 * np.finfo(np.float32).eps)


def _max_norm(x):
    return float(np.sqrt(exact_dots(x, x).max())) if len(x) else 0.0

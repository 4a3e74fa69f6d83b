"""Image-to-label cosine scores (spec steps 2 and 3), in chunks of bounded memory.

Embeddings are expected L2-normalised, so a cosine similarity is a dot product.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Two float32 products of the same unit vectors (a matrix product and a row-wise dot product)
# can differ by about 1e-7; score differences up to this are rounding, not evidence.
SCORE_TOLERANCE = 1e-5
# Pairs per chunk for assigned-label scores: 65,536 x 768 float32 gathered twice = 400 MB.
PAIR_CHUNK = 65_536
# Working memory of vocabulary top-k per block of images: 13 bytes per image-label pair (the
# float32 scores, argpartition's int64 indices, a bool mask); 64 MiB = 258 images x 20,000 labels.
TOPK_BLOCK_BYTES = 64 * 2**20

def pair_scores(image_embeddings, label_embeddings, image_index, label_index, chunk=PAIR_CHUNK):
    """Dot products of chosen (image, label) pairs: ``s[p] = e[image_index[p]] . t[label_index[p]]``.

    Args:
        image_embeddings: ndarray of shape (n_images, dim).
        label_embeddings: ndarray of shape (n_labels, dim).
        image_index, label_index: int arrays of shape (n_pairs,).

    Returns:
        float32 ndarray of shape (n_pairs,).
    """
    image_index = np.asarray(image_index, dtype=np.int64)
    label_index = np.asarray(label_index, dtype=np.int64)
    out = np.empty(image_index.size, dtype=np.float32)
    for start in range(0, image_index.size, chunk):
        sl = slice(start, start + chunk)
        out[sl] = np.einsum(
            "ij,ij->i", image_embeddings[image_index[sl]], label_embeddings[label_index[sl]]
        )
    return out


def top_k_labels(image_embeddings, label_embeddings, k, block_rows=None, progress=None):
    """The k labels of highest score for every image, best first.

    Args:
        image_embeddings: ndarray of shape (n_images, dim).
        label_embeddings: ndarray of shape (n_labels, dim).
        k: labels per image; capped at n_labels.
        block_rows: images scored at a time (default: as many as fit in ``TOPK_BLOCK_BYTES``);
            working memory is ``13 * block_rows * n_labels`` bytes.
        progress: optional callable taking the fraction done.

    Returns:
        (indices, scores): int64 and float32 ndarrays of shape (n_images, min(k, n_labels)).
        Of equal scores, the lower label index comes first (and is kept at the k-th place).
    """
    n, m = image_embeddings.shape[0], label_embeddings.shape[0]
    k = min(int(k), m)
    indices = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float32)
    if k == 0:
        return indices, scores
    t = np.ascontiguousarray(label_embeddings, dtype=np.float32)
    rows = block_rows or max(1, TOPK_BLOCK_BYTES // (13 * m))
    # the product uses every core through BLAS; the selection, single-threaded in numpy, runs
    # on row slices in threads (numpy releases the GIL), which measured 3x faster on 2 cores
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, n, rows):
            s = np.asarray(image_embeddings[start : start + rows], dtype=np.float32) @ t.T
            step = -(-len(s) // workers)
            starts = range(0, len(s), step)
            for i, (idx, sc) in zip(starts, pool.map(lambda i: _top_k_rows(s[i : i + step], k), starts)):
                indices[start + i : start + i + len(idx)] = idx
                scores[start + i : start + i + len(idx)] = sc
            if progress is not None:
                progress(min(start + rows, n) / n)
    return indices, scores


def _top_k_rows(s, k):
    """Top-k (indices, scores) of each row of the score matrix ``s``, best first; of equal
    scores, the lower label index first, also where ties straddle the k-th place."""
    m = s.shape[1]
    if k < m:
        part = np.argpartition(s, m - k, axis=1)[:, m - k :]  # no negated copy of s
    else:
        part = np.broadcast_to(np.arange(m), s.shape)
    part_scores = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    part = np.take_along_axis(part, order, axis=1)
    part_scores = np.take_along_axis(part_scores, order, axis=1)
    if k < m:
        # argpartition keeps any of the labels tied at the k-th score (twin labels, e.g. casing
        # variants, which CLIP embeds alike): in those rows, re-rank the labels at or above it
        for r in np.flatnonzero(np.count_nonzero(s >= part_scores[:, -1:], axis=1) > k):
            candidates = np.flatnonzero(s[r] >= part_scores[r, -1])
            part[r] = candidates[np.argsort(-s[r, candidates], kind="stable")[:k]]
            part_scores[r] = s[r, part[r]]
    return part, part_scores

"""Image-to-label cosine scores (spec steps 2 and 3), in chunks of bounded memory.

Embeddings are expected L2-normalised, so a cosine similarity is a dot product.
"""

import numpy as np

# Two float32 products of the same unit vectors (a matrix product and a row-wise dot product)
# can differ by about 1e-7; score differences up to this are rounding, not evidence.
SCORE_TOLERANCE = 1e-5
# Pairs per chunk for assigned-label scores: 65,536 x 768 float32 gathered twice = 400 MB.
PAIR_CHUNK = 65_536
# Image rows per block for vocabulary top-k: 1,024 x 20,000 labels float32 = 80 MB.
TOPK_BLOCK_ROWS = 1_024


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


def top_k_labels(image_embeddings, label_embeddings, k, block_rows=TOPK_BLOCK_ROWS, progress=None):
    """The k labels of highest score for every image, best first.

    Args:
        image_embeddings: ndarray of shape (n_images, dim).
        label_embeddings: ndarray of shape (n_labels, dim).
        k: labels per image; capped at n_labels.
        block_rows: images scored at a time; memory is ``block_rows * n_labels`` floats.
        progress: optional callable taking the fraction done.

    Returns:
        (indices, scores): int64 and float32 ndarrays of shape (n_images, min(k, n_labels)).
        Equal scores among the k are listed in label-index order.
    """
    n, m = image_embeddings.shape[0], label_embeddings.shape[0]
    k = min(int(k), m)
    indices = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float32)
    if k == 0:
        return indices, scores
    t = np.ascontiguousarray(label_embeddings, dtype=np.float32)
    for start in range(0, n, block_rows):
        s = np.asarray(image_embeddings[start : start + block_rows], dtype=np.float32) @ t.T
        if k < m:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(m), s.shape).copy()
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        indices[start : start + len(s)] = np.take_along_axis(part, order, axis=1)
        scores[start : start + len(s)] = np.take_along_axis(part_scores, order, axis=1)
        if progress is not None:
            progress(min(start + block_rows, n) / n)
    return indices, scores

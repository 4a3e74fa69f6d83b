"""Small-cluster merging (spec step 5) and cluster representatives (spec step 6)."""

import heapq
from collections import Counter

import numpy as np

from .clustering import check_number, number_by_first_occurrence
from .dots import exact_dots, real_array, rounding_bound
from .lexical import read_form, singular_form, tidy_form

SIZE_BY = ("samples", "labels")
# Cosine closeness to a centroid within this of the closest member's is a tie (float rounding
# of embeddings is about 1e-7; real differences between labels are far larger)
CLOSENESS_TIE = 1e-5
LINKAGES = ("centroid", "representative")
# Distance rows computed in one matrix product: the next small clusters are scored together,
# which is compute-bound, instead of one memory-bound matrix-vector product per merge.
PREFETCH_ROWS = 256
PREFETCH_FLOATS = 1 << 25  # 128 MB of float32 rows at most


def merge_small_clusters(
    embeddings,
    clusters,
    frequencies,
    min_cluster_size,
    *,
    vocabulary=None,
    size_by="samples",
    linkage="centroid",
    max_merge_distance=None,
    complete=False,
    progress=None,
):
    """Fold every cluster smaller than ``min_cluster_size`` into its nearest neighbour, one at a time.

    A cluster's size is the sum of its members' frequencies (``size_by="samples"``, the spec's
    choice: an image carrying two of its labels counts twice) or its number of distinct labels
    (``"labels"``). While some cluster is
    too small, the smallest (ties: lowest id) merges into the nearest other cluster (ties: lowest
    id); the merged cluster keeps the target's id and its centroid is recomputed before the next
    step. Noise labels (id -1) first become clusters of their own.

    Args:
        embeddings: ndarray of shape (n_labels, dim), L2-normalised label embeddings.
        clusters: int ndarray of shape (n_labels,), e.g. from :func:`cluster_labels`.
        frequencies: int ndarray of shape (n_labels,): samples carrying each label.
        min_cluster_size: the smallest size a cluster may keep; 0 or 1 merges nothing.
        vocabulary: the label strings, needed for ``linkage="representative"`` (tie-breaking).
        size_by: ``"samples"`` (default; the paper's aim is enough examples per class) or ``"labels"``.
        linkage: distance between clusters: ``"centroid"`` (cosine distance of the re-normalised
            mean embeddings; the paper's Results section) or ``"representative"`` (of the
            representative labels; the paper's Method section).
        max_merge_distance: if set, a small cluster whose nearest neighbour is farther than this
            cosine distance is left alone instead of merged into something unrelated.
        complete: also require every pair of members of the two clusters to lie within
            ``max_merge_distance`` (complete linkage), so that merges cannot drift A~B~C.
        progress: optional callable taking the share of the small clusters dealt with (merged
            away, grown to the size, or left alone): at 100,000 labels this step can take
            most of the clustering's time.

    Returns:
        int ndarray of shape (n_labels,): cluster ids 0, 1, ... numbered in order of first label.
    """
    if size_by not in SIZE_BY:
        raise ValueError(f"size_by must be one of {SIZE_BY}, got {size_by!r}")
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    if complete and max_merge_distance is None:
        raise ValueError("complete=True needs max_merge_distance")
    if linkage == "representative" and vocabulary is None:
        raise ValueError('linkage="representative" needs the vocabulary')
    check_number("min_cluster_size", min_cluster_size, zero=True)
    if max_merge_distance is not None:
        check_number("max_merge_distance", max_merge_distance, zero=True)
    emb, ids, freq = _checked(embeddings, clusters, frequencies, vocabulary, noise=True)
    ids = _with_noise_as_singletons(ids)
    n_clusters = int(ids.max()) + 1 if ids.size else 0

    members = [[] for _ in range(n_clusters)]
    for i, c in enumerate(ids):
        members[c].append(i)
    weights = freq if size_by == "samples" else np.ones_like(freq)
    size = np.bincount(ids, weights=weights, minlength=n_clusters).astype(np.int64)
    sums = np.zeros((n_clusters, emb.shape[1]), dtype=np.float64)
    np.add.at(sums, ids, emb)

    def point(c):
        """The vector that stands for cluster c in the distance."""
        if linkage == "centroid":
            return _unit(sums[c])
        rep = representative_of(members[c], emb, freq, vocabulary, _unit(sums[c]))
        return emb[rep]

    points = np.stack([point(c) for c in range(n_clusters)]) if n_clusters else emb[:0]
    alive = np.ones(n_clusters, dtype=bool)
    rows = _DistanceRows(points, alive)
    heap = [(int(size[c]), c) for c in range(n_clusters) if size[c] < min_cluster_size]
    heapq.heapify(heap)
    n_alive = n_clusters
    small = size < min_cluster_size  # (the clusters to deal with: merged, grown or left)
    n_start, n_done, shown = int(small.sum()), 0, 0.0

    def dealt(c):
        nonlocal n_done
        n_done += bool(small[c])
        small[c] = False

    while heap and n_alive > 1:
        if progress is not None and n_done >= (shown + 0.005) * n_start:
            shown = n_done / n_start
            progress(shown)
        s, c = heapq.heappop(heap)
        if not alive[c] or s != size[c]:
            continue  # stale entry: merged away, or grown since it was pushed
        dist = rows.pop(c, lambda: [u for v, u in heapq.nsmallest(rows.batch, heap)
                                    if alive[u] and v == size[u]])
        target, close_enough = rows.nearest(c, dist, max_merge_distance)
        if close_enough and complete:
            close_enough = _farthest_pair(emb, members[c], members[target]) <= max_merge_distance
        dealt(c)  # (merged away, or left alone)
        if not close_enough:
            continue  # nothing close enough: the cluster stays as it is
        if size[target] + size[c] >= min_cluster_size:
            dealt(target)  # (grown to the size)
        members[target].extend(members[c])
        members[c] = []
        size[target] += size[c]
        sums[target] += sums[c]
        alive[c] = False
        n_alive -= 1
        points[target] = point(target)
        rows.merged(c, target)
        if size[target] < min_cluster_size:
            heapq.heappush(heap, (int(size[target]), target))

    final = np.empty(ids.size, dtype=np.int64)
    for c in range(n_clusters):
        final[members[c]] = c
    return number_by_first_occurrence(final)


def as_counts(frequencies):
    """``frequencies`` as int64: counts of images, whole numbers not below 0."""
    f = np.asarray(frequencies)
    if f.ndim != 1:  # (a number: its len() failed further on, in Python's words)
        got = repr(frequencies) if f.ndim == 0 else f"shape {f.shape}"
        raise ValueError(f"frequencies must be one count per label (a 1-D array), got {got}")
    if f.dtype.kind not in "iuf":
        raise ValueError(f"frequencies must be counts of images (as label_frequencies gives), "
                         f"got dtype {f.dtype}")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(f) & (f >= 0) & (f <= np.iinfo(np.int64).max)) | (
            np.isfinite(f) & (f != np.floor(f)))
    if bad.any():
        raise ValueError(f"frequencies must be counts of images (whole numbers >= 0, as "
                         f"label_frequencies gives), got {f[bad][:3].tolist()}")
    return f.astype(np.int64)


def _checked(embeddings, clusters, frequencies, vocabulary, noise):
    """The label arrays as float32 unit rows, int64 cluster ids and int64 counts, or a
    ValueError naming what does not fit: one row, id and count a label; ids >= 0 (and -1,
    noise) if ``noise``, else 0, 1, ... without gaps."""
    emb = real_array(embeddings, "embeddings")
    if emb.ndim != 2 or not np.isfinite(emb).all():
        raise ValueError(f"embeddings must be a finite 2-D array (n_labels, dim), got shape "
                         f"{emb.shape}" + ("" if emb.ndim != 2 else " with NaN or infinite values"))
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", emb, emb))
    if np.any((norms > 0) & (np.abs(norms - 1) > 1e-3)):
        raise ValueError("embeddings must be rows of unit length (L2-normalised: each row "
                         "divided by its norm)")
    ids = np.asarray(clusters)
    if ids.size and ids.dtype.kind not in "iu":
        raise ValueError(f"clusters must be integer ids, got {ids.dtype}")
    if ids.shape != (len(emb),):
        raise ValueError(f"{len(emb)} embeddings and clusters of shape {ids.shape}: one id a label")
    ids = ids.astype(np.int64)
    if noise and ids.size and ids.min() < -1:
        raise ValueError("clusters must be ids >= 0, and -1 for noise")
    if not noise and ids.size and (ids.min() < 0 or np.unique(ids).size != ids.max() + 1):
        raise ValueError("clusters must be ids 0, 1, ... without gaps (no -1: a noise label "
                         "needs a cluster of its own, as merge_small_clusters gives)")
    freq = as_counts(frequencies)
    if freq.shape != ids.shape:
        raise ValueError(f"frequencies has shape {freq.shape}, for {ids.size} labels")
    if vocabulary is not None and len(vocabulary) != ids.size:
        raise ValueError(f"{len(vocabulary)} vocabulary labels for {ids.size} embeddings")
    return emb, ids, freq


class _DistanceRows:
    """Cosine distances from the next clusters to merge to every cluster, kept exact across merges.

    Rows are computed a batch at a time; after each merge the cached rows are patched (the source
    column becomes infinite, the target column is recomputed), and the rows of the two clusters
    involved are dropped, so every row read equals a fresh ``1 - points @ points[c]``.
    """

    def __init__(self, points, alive):
        self.points, self.alive, self.cached = points, alive, {}
        self.batch = max(1, min(PREFETCH_ROWS, PREFETCH_FLOATS // max(len(points), 1)))
        self.band = rounding_bound(points.shape[1], points.dtype) + 4 * np.finfo(points.dtype).eps

    def pop(self, c, upcoming):
        """Distances from cluster c (itself and dead clusters at infinity); ``upcoming()`` names
        the clusters likely needed next, whose rows are computed in the same product."""
        row = self.cached.pop(c, None)
        if row is None:
            batch = [c] + [u for u in upcoming() if u != c and u not in self.cached][: self.batch - 1]
            block = 1.0 - self.points[batch] @ self.points.T
            block[:, ~self.alive] = np.inf
            block[np.arange(len(batch)), batch] = np.inf
            row = block[0]
            self.cached.update(zip(batch[1:], block[1:]))
        return row

    def nearest(self, c, dist, threshold=None):
        """The nearest cluster to c and whether it lies within ``threshold`` (None: no limit),
        given c's row ``dist``. Clusters within the row's rounding of its minimum are compared
        on exact distances (ties: lowest id), and so is the threshold when the distance is
        within rounding of it: neither answer depends on the BLAS kernel or on which rows
        shared a product. A single clear candidate (the usual case) needs no exact product."""
        low = dist.min()
        near = np.flatnonzero(dist <= low + self.band)
        if near.size == 1 and (threshold is None or abs(low - threshold) > self.band):
            return int(near[0]), threshold is None or bool(low <= threshold)
        exact = 1.0 - exact_dots(self.points, self.points, np.full(near.size, c), near)
        best = int(np.argmin(exact))
        return int(near[best]), threshold is None or bool(exact[best] <= threshold)

    def merged(self, source, target):
        """Patch the cached rows after ``source`` merged into ``target`` (whose point moved)."""
        self.cached.pop(source, None)
        self.cached.pop(target, None)
        if self.cached:
            owners = np.fromiter(self.cached, dtype=np.int64)
            to_target = 1.0 - self.points[owners] @ self.points[target]
            for owner, d in zip(owners, to_target):
                row = self.cached[owner]
                row[source], row[target] = np.inf, d


def distance_to_canonical(embeddings, representatives, clusters):
    """float32 (n,): the exact cosine distance from each row of unit-length ``embeddings`` to
    the row of its cluster's representative (``representatives``: a row index per cluster)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    canonical = np.asarray(representatives, dtype=np.int64)[np.asarray(clusters, dtype=np.int64)]
    return (1.0 - exact_dots(emb, emb, np.arange(len(emb)), canonical)).astype(np.float32)


def representatives(vocabulary, embeddings, clusters, frequencies, preference=None):
    """The representative label index of every cluster (spec step 6).

    The member carried by most samples; with a ``preference`` (the recommended mode's
    :func:`~vlsr_core.engine.lexical.spelling_preference`), the samples of a word count
    together over its ways of writing (plural, case, spacing, punctuation), then over its
    casings, then over the forms that show alike on screen
    (:func:`~vlsr_core.engine.lexical.tidy_form`: ``wrench`` on 13 and ``"wrench "`` on 14
    name the cluster ``wrench``), and ties go to the lowest preference; then to the
    member closest to the cluster centroid (cosine), then to the lexically smallest string.
    Members within :data:`CLOSENESS_TIE` of the closest count as equally close: the two
    members of a two-label cluster are exactly as close to its centroid, and the rounding of
    their embeddings (a batch size, another machine) would otherwise decide.

    Args:
        vocabulary: list of n_labels strings.
        embeddings: ndarray of shape (n_labels, dim), L2-normalised.
        clusters: int ndarray of shape (n_labels,) with ids 0..n_clusters-1 (no noise).
        frequencies: int ndarray of shape (n_labels,).
        preference: optional int ndarray of shape (n_labels,), lower first.

    Returns:
        int ndarray of shape (n_clusters,): the vocabulary index of each cluster's representative.
    """
    emb, clusters, freq = _checked(embeddings, clusters, frequencies, vocabulary, noise=False)
    if preference is not None and np.shape(preference) != clusters.shape:
        raise ValueError(f"preference has shape {np.shape(preference)}, for {clusters.size} labels")
    if clusters.size == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(clusters, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(clusters))[:-1])
    centroids = [_unit(emb[g].sum(axis=0, dtype=np.float64)) for g in groups]
    return np.array(
        [representative_of(g, emb, freq, vocabulary, c, preference)
         for g, c in zip(groups, centroids)],
        dtype=np.int64,
    )


def representative_of(member_index, embeddings, frequencies, vocabulary, centroid,
                      preference=None):
    """The representative of one cluster given its member indices (same rule as :func:`representatives`)."""
    member_index = np.asarray(member_index)
    closeness = exact_dots(embeddings[member_index], centroid.astype(np.float32)[None, :],
                           b_index=np.zeros(member_index.size, dtype=np.int64))
    if preference is None:  # (the paper's step 6)
        first = [(-int(frequencies[i]), 0) for i in member_index]
    else:  # samples counted over the ways of writing a word (plural, case, spacing,
        # punctuation), then over its casings, then as it shows: "dispatched" on 3 samples,
        # "DISPATCHED" on 2 and "Dispatched" on 1 outvote "disptached" on 3
        forms = [tidy_form(vocabulary[i]) for i in member_index]
        keys = [(singular_form(read_form(form)), form.casefold(), form) for form in forms]
        votes = [Counter(), Counter(), Counter()]
        for key, i in zip(keys, member_index):
            for counter, k in zip(votes, key):
                counter[k] += int(frequencies[i])
        first = [(*(-counter[k] for counter, k in zip(votes, key)), int(preference[i]))
                 for key, i in zip(keys, member_index)]
    best = min(first)
    tied = [k for k, key in enumerate(first) if key == best]
    closest = max(closeness[k] for k in tied)
    near = [k for k in tied if closeness[k] >= closest - CLOSENESS_TIE]
    return int(member_index[min(near, key=lambda k: vocabulary[member_index[k]])])


def _farthest_pair(emb, a, b):
    """Largest exact cosine distance between a member of a and a member of b."""
    return float((1.0 - exact_dots(emb, emb, np.repeat(a, len(b)), np.tile(b, len(a)))).max())


def _with_noise_as_singletons(ids):
    ids = ids.copy()
    noise = np.flatnonzero(ids < 0)
    start = int(ids.max()) + 1 if ids.size and ids.max() >= 0 else 0
    ids[noise] = np.arange(start, start + noise.size)
    return ids


def _unit(v):
    norm = np.sqrt(np.multiply(v, v, dtype=np.float64).sum())  # fixed pairwise order, no BLAS
    return (v / norm if norm > 0 else v).astype(np.float32)

"""Image-side evidence for merging: do two labels annotate images that look alike?

Two names of one thing ("milling machine", "vertical milling machine"; "drill press",
"drilling machine") are put on the same kind of image, which a text encoder cannot know: it may
place them as far apart as two related but different things. The evidence is each label's
*image prototype*, the mean embedding of the images that carry it, compared by a two-sample
statistic (Welch's, summed over dimensions) that accounts for how many images each mean rests on
and how varied each label's images are:

    separation(a, b) = |m_a - m_b|^2 / (v_a / n_a + v_b / n_b)

``m`` is a label's mean image embedding, ``n`` its number of images and ``v`` the variance of its
images around their mean (summed over dimensions; for a label on one image, the median ``v`` of
the labels on two or more). If the images of a and b come from one distribution, the separation
is about 1, however many images there are; distinct kinds of image add their squared distance on
top, which counts for more the more images vouch for each mean and the tighter each label's
images are. The statistic has no unit: it does not depend on the encoder's scale.

Everything adds up over chunks of images (:meth:`ImagePrototypes.add`), so it is computed while
the images are read, in memory ``n_labels x dim`` whatever the number of images. Sums of squares
are numpy's fixed-order sums, not BLAS products: no decision depends on the BLAS kernel.
"""

import numpy as np

from .dots import exact_dots, sampled_pairs
from .lexical import UnionFind

# Rows (labels or pairs) computed at a time: 4,096 x 768 float64 = 25 MB.
ROW_CHUNK = 4096
# Candidate joins kept per group: its most alike ones (bounds memory and the sequential part).
CANDIDATES_PER_GROUP = 16


class ImagePrototypes:
    """Per label: the number of images that carry it, the sum of their embeddings and of their
    squared norms, and the sum over every other one of its images (the first, third, ...: the
    two halves of a label give the separation that chance alone produces), accumulated a chunk
    of images at a time. Sums are float32: memory is ``8 x n_labels x dim`` bytes.

    Args:
        vocabulary: the n_labels distinct label strings.
        dim: the image embeddings' dimension.

    Example:
        >>> p = ImagePrototypes(["a", "b"], 2)
        >>> p.add(np.array([[1.0, 0.0], [0.0, 1.0]]), [["a"], ["a", "b"]])
        >>> p.counts
        array([2, 1])
    """

    def __init__(self, vocabulary, dim):
        self.vocabulary = list(vocabulary)
        self._index = {label: i for i, label in enumerate(self.vocabulary)}
        n = len(self.vocabulary)
        self.sums = np.zeros((n, int(dim)), dtype=np.float32)
        self.half_sums = np.zeros((n, int(dim)), dtype=np.float32)
        self.squares = np.zeros(n, dtype=np.float64)
        self.counts = np.zeros(n, dtype=np.int64)

    def add(self, image_embeddings, image_labels):
        """Count a chunk of images: ndarray (n_images, dim) and, per image, its labels. Images
        without an embedding (a row of NaN) and labels outside the vocabulary are skipped."""
        emb = np.asarray(image_embeddings, dtype=np.float32)
        ok = np.isfinite(emb).all(axis=1)
        rows, labels = [], []
        for r, ls in enumerate(image_labels):
            if ok[r]:
                for label in dict.fromkeys(ls):
                    i = self._index.get(label)
                    if i is not None:
                        rows.append(r)
                        labels.append(i)
        if not rows:
            return
        rows, labels = np.asarray(rows), np.asarray(labels)
        # each occurrence's number among its label's images so far: even ones make the half
        order = np.argsort(labels, kind="stable")
        first = np.searchsorted(labels[order], labels[order])
        number = np.empty(labels.size, dtype=np.int64)
        number[order] = np.arange(labels.size) - first + self.counts[labels[order]]
        half = number % 2 == 0
        np.add.at(self.sums, labels, emb[rows])
        np.add.at(self.half_sums, labels[half], emb[rows[half]])
        np.add.at(self.squares, labels, _squared_norms(emb[rows]))
        self.counts += np.bincount(labels, minlength=self.counts.size)

    @classmethod
    def from_images(cls, image_embeddings, image_labels, vocabulary):
        """The prototypes of one batch of images (see :meth:`add`)."""
        out = cls(vocabulary, np.asarray(image_embeddings).shape[1])
        out.add(image_embeddings, image_labels)
        return out

    def take(self, index):
        """The prototypes of the labels ``index`` (int ndarray), in that order."""
        out = ImagePrototypes([self.vocabulary[i] for i in index], self.sums.shape[1])
        out.sums, out.half_sums = self.sums[index], self.half_sums[index]
        out.squares, out.counts = self.squares[index], self.counts[index]
        return out

    def grouped(self, groups):
        """(sums, squares, counts) of groups of labels (int ndarray (n_labels,) of group ids
        0..k-1): each group's images are its members' (an image carrying two counts twice)."""
        k = int(groups.max()) + 1 if groups.size else 0
        sums = np.zeros((k, self.sums.shape[1]), dtype=np.float32)
        np.add.at(sums, groups, self.sums)
        return (sums, np.bincount(groups, weights=self.squares, minlength=k),
                np.bincount(groups, weights=self.counts, minlength=k))

    def typical_variance(self, labels=None):
        """The median variance ``v`` of the labels (default: all) carried by two images or more;
        NaN when there are none. It stands in for the variance of a label on one image."""
        labels = np.arange(self.counts.size) if labels is None else np.asarray(labels)
        many = labels[self.counts[labels] >= 2]
        if not many.size:
            return float("nan")
        return float(np.median(_variances(self.sums[many], self.squares[many], self.counts[many])))

    def separation(self, a, b, labels=None):
        """float64 ndarray (n_pairs,): the separation of the labels ``a[p]`` and ``b[p]`` (module
        docstring; single-image labels take the typical variance of ``labels``, default all); NaN
        where either label has no image, or has one and no label has two."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        both = np.union1d(a, b)
        var = np.full(self.counts.size, np.nan)
        var[both] = _variances(self.sums[both], self.squares[both], self.counts[both],
                               self.typical_variance(labels))
        return _separation(self.sums, self.counts, var, a, b)

    def typical_separation(self, labels, max_pairs):
        """The median separation of two different labels among ``labels`` (int ndarray), over
        all their pairs or ``max_pairs`` drawn with a fixed seed; NaN with fewer than two."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size < 2:
            return float("nan")
        a, b = sampled_pairs(labels.size, max_pairs)
        sep = self.separation(labels[a], labels[b], labels)
        return float(np.median(sep)) if np.isfinite(sep).all() else float("nan")

    def self_separation(self, labels=None):
        """float64 ndarray: for each of the labels (default: all) carried by two images or more,
        the separation of its two halves (every other image against the rest) with the label's
        own variance: what the statistic gives two sets of images of one label, from which a
        threshold is drawn (empty when there are none)."""
        labels = np.arange(self.counts.size) if labels is None else np.asarray(labels)
        many = labels[self.counts[labels] >= 2]
        out = np.empty(many.size)
        for start in range(0, many.size, ROW_CHUNK):
            rows = many[start:start + ROW_CHUNK]
            n = self.counts[rows]
            half = (n + 1) // 2
            var = _variances(self.sums[rows], self.squares[rows], n)
            diff = np.asarray(self.half_sums[rows], dtype=np.float64) / half[:, None]
            diff -= (np.asarray(self.sums[rows], dtype=np.float64)
                     - self.half_sums[rows]) / (n - half)[:, None]
            out[start:start + ROW_CHUNK] = _squared_norms(diff) / (var * (1 / half + 1 / (n - half)))
        return out


def image_links(groups, embeddings, prototypes, radius, eligible, max_separation, min_images,
                block_rows=1024, spellings=()):
    """Join groups of labels whose texts are near, or whose spellings are, and whose images agree.

    Candidates are the pairs of labels within text distance ``radius`` whose groups, each on at
    least ``min_images`` images, have a separation of at most ``max_separation``: a text
    encoder's "somewhat close" confirmed by the images, for names it places beyond DBSCAN's eps.
    Each group keeps its :data:`CANDIDATES_PER_GROUP` most alike candidates. They are joined most
    alike first, each join checked again on the groups as they stand by then: their pooled images
    must still agree, and every label of one must be within ``radius`` of every label of the
    other (complete linkage), so that no chain of joins drifts from one thing to another.

    Then the ``spellings`` pairs are judged by the images alone, most alike first: a variant
    that lexical grouping proposed and the text encoder placed beyond its guard ("ambluance",
    which the encoder tears into other tokens) joins its word when their groups' images agree,
    while two words one letter apart ("hammer", "hamper") stay apart by their images. They come
    last so that a join far in text never blocks a text candidate's complete-linkage check.

    Args:
        groups: int ndarray (n_labels,): group ids 0..k-1 (lexical groups).
        embeddings: float32 ndarray (n_labels, dim) of unit rows (text).
        prototypes: :class:`ImagePrototypes` of the labels.
        radius: the largest text distance between two labels of a joined group.
        eligible: bool ndarray (n_labels,): labels that may take part.
        max_separation: the largest separation that joins.
        min_images: the fewest images a group needs to be judged by them.
        block_rows: rows of text products computed at a time (memory, not results).
        spellings: (i, j) label pairs that a spelling rule relates
            (:attr:`~vlsr_core.engine.lexical.LexicalGroups.refused`).

    Returns:
        (groups, joins, n_spelling): the new group ids, numbered by first label; per join the
        (i, j) pair of labels, one of each group, nearest in text (a spelling join: its pair);
        and how many of the joins (the last ones) came from ``spellings``.
    """
    from .clustering import neighbour_pairs, number_by_first_occurrence

    k = int(groups.max()) + 1 if groups.size else 0
    sums, squares, counts = prototypes.grouped(groups)
    fallback = prototypes.typical_variance(np.flatnonzero(eligible))
    var = _variances(sums, squares, counts, fallback)
    index = np.flatnonzero(eligible & (counts[groups] >= min_images))
    if k < 2 or index.size < 2:
        return groups, [], 0
    found, kept = [], 0  # passing candidate pairs of groups and their separations
    for i, j in neighbour_pairs(embeddings[index], radius, block_rows):
        gi, gj = groups[index[i]], groups[index[j]]
        differ = gi != gj
        if not differ.any():
            continue
        pairs = np.unique(np.stack([np.minimum(gi, gj), np.maximum(gi, gj)], axis=1)[differ],
                          axis=0)
        sep = _separation(sums, counts, var, pairs[:, 0], pairs[:, 1])
        ok = sep <= max_separation
        found.append((pairs[ok], sep[ok]))
        kept += int(ok.sum())
        if kept > 2 * CANDIDATES_PER_GROUP * k:  # prune as they gather: memory stays O(k)
            found = [_most_alike(found)]
            kept = found[0][0].shape[0]
    pairs, sep = _most_alike(found)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], sep))  # most alike first; ties by group ids

    by_group = np.argsort(groups, kind="stable")
    starts = np.searchsorted(groups[by_group], np.arange(k + 1))
    members = {}
    uf = UnionFind(k)

    def labels_of(g):
        return members.get(g) or by_group[starts[g]:starts[g + 1]].tolist()

    def agree(ra, rb):
        return ra != rb and _separation(sums, counts, var, [ra], [rb])[0] <= max_separation

    def join(ra, rb):
        uf.union(ra, rb)
        keep, gone = min(ra, rb), max(ra, rb)
        sums[keep] += sums[gone]
        squares[keep] += squares[gone]
        counts[keep] += counts[gone]
        var[keep] = _variances(sums[keep:keep + 1], squares[keep:keep + 1], counts[keep:keep + 1],
                               fallback)[0]
        members[keep] = labels_of(ra) + labels_of(rb)
        members.pop(gone, None)

    joins = []
    for a, b in pairs[order]:
        ra, rb = uf.find(a), uf.find(b)
        if not agree(ra, rb):
            continue
        la, lb = labels_of(ra), labels_of(rb)
        text = 1.0 - exact_dots(embeddings, embeddings, np.repeat(la, len(lb)), np.tile(lb, len(la)))
        if not text.max() <= radius:
            continue
        nearest = int(np.argmin(text))
        joins.append((la[nearest // len(lb)], lb[nearest % len(lb)]))
        join(ra, rb)

    n_text = len(joins)
    pairs = np.array([p for p in spellings if eligible[p[0]] and eligible[p[1]]],
                     dtype=np.int64).reshape(-1, 2)
    roots = np.array([uf.find(g) for g in range(k)], dtype=np.int64)
    ends = roots[groups[pairs]]  # the groups as the text joins left them
    ok = (counts[ends[:, 0]] >= min_images) & (counts[ends[:, 1]] >= min_images)
    sep = _separation(sums, counts, var, ends[ok, 0], ends[ok, 1])
    for p in np.flatnonzero(ok)[np.argsort(sep, kind="stable")]:  # most alike first
        ra, rb = uf.find(ends[p, 0]), uf.find(ends[p, 1])
        if agree(ra, rb):
            joins.append((int(pairs[p, 0]), int(pairs[p, 1])))
            join(ra, rb)
    roots = np.array([uf.find(g) for g in range(k)], dtype=np.int64)
    return number_by_first_occurrence(roots[groups]), joins, len(joins) - n_text


def _most_alike(found):
    """The candidate pairs (and separations) among ``found`` that are among the
    :data:`CANDIDATES_PER_GROUP` most alike of either of their groups."""
    if not found:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    pairs = np.concatenate([f[0] for f in found]).reshape(-1, 2)
    sep = np.concatenate([f[1] for f in found])
    ends = np.concatenate([pairs[:, 0], pairs[:, 1]])  # each pair once from each of its groups
    others = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.lexsort((others, np.concatenate([sep, sep]), ends))
    rank = np.arange(order.size) - np.searchsorted(ends[order], ends[order])
    keep = np.zeros(sep.size, dtype=bool)
    keep[order[rank < CANDIDATES_PER_GROUP] % sep.size] = True
    return pairs[keep], sep[keep]


def _separation(sums, counts, var, a, b):
    """Separation (module docstring) of the rows ``a[p]`` and ``b[p]`` of per-label (or per-group)
    image sums, counts and variances; NaN where either has no image or no variance."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    out = np.full(a.size, np.nan)
    for start in range(0, a.size, ROW_CHUNK):  # memory bounded whatever the number of pairs
        pa, pb = a[start:start + ROW_CHUNK], b[start:start + ROW_CHUNK]
        na, nb = counts[pa], counts[pb]
        ok = (na > 0) & (nb > 0)
        pa, pb, na, nb = pa[ok], pb[ok], na[ok], nb[ok]
        diff = np.asarray(sums[pa], dtype=np.float64) / na[:, None]
        diff -= np.asarray(sums[pb], dtype=np.float64) / nb[:, None]
        out[start:start + ROW_CHUNK][ok] = _squared_norms(diff) / (var[pa] / na + var[pb] / nb)
    return out


def _variances(sums, squares, counts, single=float("nan")):
    """float64 ndarray: each row's variance ``v`` of its images around their mean, summed over
    dimensions (``single`` for a row of one image, NaN for none)."""
    counts = np.asarray(counts, dtype=np.float64)
    out = np.full(counts.size, float(single))
    many = counts >= 2
    out[counts < 1] = np.nan
    for start in range(0, counts.size, ROW_CHUNK):
        sl = slice(start, start + ROW_CHUNK)
        rows = np.flatnonzero(many[sl]) + start
        if rows.size:
            scatter = squares[rows] - _squared_norms(sums[rows]) / counts[rows]
            out[rows] = np.maximum(scatter, 0.0) / (counts[rows] - 1)
    return out


def _squared_norms(x):
    """float64 ndarray (n,): the squared norm of each row, summed in numpy's fixed order."""
    x = np.asarray(x, dtype=np.float64)
    return (x * x).sum(axis=1)

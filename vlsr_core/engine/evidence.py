"""Image-side evidence for merging: do two labels annotate images that look alike?

Two spellings or synonyms of one thing ("hex key", "allen wrench") are put on the same kind of
image, which a text encoder cannot know: it may place them farther apart than two related but
different things ("hammer drill", "hand drill"). The evidence is each label's *image prototype*,
the mean embedding of the images that carry it, compared by a two-sample statistic that accounts
for how many images each mean rests on:

    separation(a, b) = |m_a - m_b|^2 / (s^2 (1/n_a + 1/n_b))

``m`` is a label's mean image embedding, ``n`` its number of images and ``s^2`` the pooled
within-label variance (the mean squared distance of an image from its label's mean, summed over
dimensions). If the images of a and b come from one distribution, the expected numerator is the
denominator and the separation is about 1, however many images there are; distinct kinds of image
add their squared distance ``|mu_a - mu_b|^2`` on top, which counts for more the more images
vouch for each mean. The statistic has no unit: it does not depend on the encoder's scale.

Everything adds up over chunks of images (:meth:`ImagePrototypes.add`), so it is computed while
the images are read, in memory ``n_labels x dim`` whatever the number of images. Sums of squares
are numpy's fixed-order sums, not BLAS products: a decision does not depend on the BLAS kernel.
"""

import numpy as np

from .dots import sampled_pairs

# Pairs whose separation is computed at a time: 4,096 x 768 float64 = 25 MB.
PAIR_CHUNK = 4096


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
        """(sums, counts) of groups of labels (int ndarray (n_labels,) of group ids 0..k-1):
        each group's images are its members' (an image carrying two members counts twice)."""
        k = int(groups.max()) + 1 if groups.size else 0
        sums = np.zeros((k, self.sums.shape[1]), dtype=np.float32)
        np.add.at(sums, groups, self.sums)
        return sums, np.bincount(groups, weights=self.counts, minlength=k)

    @property
    def spread(self):
        """The pooled within-label variance ``s^2`` (summed over dimensions), from the labels
        carried by two images or more; NaN when there are none."""
        many = self.counts >= 2
        if not many.any():
            return float("nan")
        sums, n = self.sums[many].astype(np.float64), self.counts[many]
        scatter = self.squares[many] - _squared_norms(sums) / n
        return float(max(scatter.sum(), 0.0) / (n - 1).sum())

    def separation(self, a, b):
        """float64 ndarray (n_pairs,): the separation of the labels ``a[p]`` and ``b[p]`` (module
        docstring); NaN where either label has no image or the spread is unknown or zero."""
        spread = self.spread
        if not (np.isfinite(spread) and spread > 0):
            return np.full(np.size(a), np.nan)
        return _separation(self.sums, self.counts, a, b, spread)

    def typical_separation(self, labels, max_pairs):
        """The median separation of two different labels among ``labels`` (int ndarray), over
        all their pairs or ``max_pairs`` drawn with a fixed seed; NaN with fewer than two."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size < 2:
            return float("nan")
        a, b = sampled_pairs(labels.size, max_pairs)
        sep = self.separation(labels[a], labels[b])
        return float(np.median(sep)) if np.isfinite(sep).all() else float("nan")

    def self_separation(self):
        """float64 ndarray: for each label carried by two images or more, the separation of its
        two halves (every other image against the rest): what the statistic gives two sets of
        images of one label, from which a threshold is drawn (empty when there are none)."""
        many = np.flatnonzero(self.counts >= 2)
        spread = self.spread
        if not many.size or not (np.isfinite(spread) and spread > 0):
            return np.empty(0)
        n = self.counts[many]
        half = (n + 1) // 2
        sums = np.concatenate([self.half_sums[many], self.sums[many] - self.half_sums[many]])
        counts = np.concatenate([half, n - half])
        return _separation(sums, counts, np.arange(many.size), np.arange(many.size) + many.size,
                           spread)


def image_links(groups, embeddings, prototypes, radius, eligible, max_separation,
                block_rows=1024):
    """Join groups of labels whose texts are near and whose images agree.

    Candidates are the pairs of labels within text distance ``radius`` whose groups' image
    prototypes have a separation of at most ``max_separation``: a text encoder's "somewhat close"
    confirmed by the images, for synonyms and variants it places beyond DBSCAN's eps. They are
    joined most alike first, each join checked again on the groups as they stand by then: their
    pooled images must still agree, and every label of the joined group must lie within
    ``radius`` of the group's text centroid, so that no chain of joins drifts from one thing to
    another (while variants around one name, each near it, may join).

    Args:
        groups: int ndarray (n_labels,): group ids 0..k-1 (lexical groups).
        embeddings: float32 ndarray (n_labels, dim) of unit rows (text).
        prototypes: :class:`ImagePrototypes` of the labels.
        radius: cosine distance: of a candidate pair, and of any label from its group's centroid.
        eligible: bool ndarray (n_labels,): labels that may take part.
        max_separation: the largest separation that joins.
        block_rows: rows of text products computed at a time (memory, not results).

    Returns:
        (groups, links): the new group ids, numbered by first label, and the number of joins.
    """
    from .clustering import neighbour_pairs, number_by_first_occurrence

    spread = prototypes.spread
    k = int(groups.max()) + 1 if groups.size else 0
    index = np.flatnonzero(eligible)
    if not (np.isfinite(spread) and spread > 0) or k < 2 or index.size < 2:
        return groups, 0
    sums, counts = prototypes.grouped(groups)
    found = []  # candidate pairs of groups that pass, a tile at a time
    for i, j in neighbour_pairs(embeddings[index], radius, block_rows):
        gi, gj = groups[index[i]], groups[index[j]]
        differ = gi != gj
        if differ.any():
            pairs = np.unique(np.stack([np.minimum(gi, gj), np.maximum(gi, gj)], axis=1)[differ],
                              axis=0)
            found.append(pairs[_separation(sums, counts, pairs[:, 0], pairs[:, 1], spread)
                               <= max_separation])
    pairs = np.unique(np.concatenate(found), axis=0) if found else np.empty((0, 2), np.int64)
    sep = _separation(sums, counts, pairs[:, 0], pairs[:, 1], spread)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], sep))  # most alike first; ties by group ids

    by_group = index[np.argsort(groups[index], kind="stable")]
    starts = np.searchsorted(groups[by_group], np.arange(k + 1))
    members = {}
    parent = np.arange(k)

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    links = 0
    for a, b in pairs[order]:
        ra, rb = find(a), find(b)
        if ra == rb or _separation(sums, counts, [ra], [rb], spread)[0] > max_separation:
            continue
        joined = members.get(ra, by_group[starts[ra]:starts[ra + 1]].tolist()) + \
            members.get(rb, by_group[starts[rb]:starts[rb + 1]].tolist())
        text = embeddings[joined].astype(np.float64)
        centre = text.sum(axis=0)
        centre /= np.sqrt(_squared_norms(centre[None])[0])
        if (1.0 - (text * centre).sum(axis=1)).max() > radius:
            continue
        keep, gone = min(ra, rb), max(ra, rb)
        parent[gone] = keep
        sums[keep] += sums[gone]
        counts[keep] += counts[gone]
        members[keep] = joined
        members.pop(gone, None)
        links += 1
    roots = np.array([find(g) for g in range(k)], dtype=np.int64)
    return number_by_first_occurrence(roots[groups]), links


def _separation(sums, counts, a, b, spread):
    """Separation (module docstring) of the rows ``a[p]`` and ``b[p]`` of per-label (or per-group)
    image sums and counts; NaN where either has no image."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    out = np.full(a.size, np.nan)
    na, nb = counts[a], counts[b]
    ok = (na > 0) & (nb > 0)
    if not ok.any():
        return out
    a, b, na, nb = a[ok], b[ok], na[ok], nb[ok]
    sq = np.empty(a.size)
    for start in range(0, a.size, PAIR_CHUNK):  # memory bounded whatever the number of pairs
        sl = slice(start, start + PAIR_CHUNK)
        diff = np.asarray(sums[a[sl]], dtype=np.float64) / na[sl, None]
        diff -= np.asarray(sums[b[sl]], dtype=np.float64) / nb[sl, None]
        sq[sl] = _squared_norms(diff)
    out[ok] = sq / (spread * (1.0 / na + 1.0 / nb))
    return out


def _squared_norms(x):
    """float64 ndarray (n,): the squared norm of each row, summed in numpy's fixed order."""
    x = np.asarray(x, dtype=np.float64)
    return (x * x).sum(axis=1)

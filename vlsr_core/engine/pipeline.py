"""The VLSR pipeline on embeddings (spec steps 2-7): scores, suggestions, clusters, final labels."""

import unicodedata
from dataclasses import dataclass

import numpy as np

from .clustering import DEFAULT_BLOCK_ROWS, cluster_labels, number_by_first_occurrence
from .defaults import DEFAULT_EPS
from .dots import in_range, real_array, unit_rows
from .evidence import ImagePrototypes
from .grouping import Steps, paper_steps, recommended_clusters
from .lexical import spelling_preference
from .merging import as_counts, distance_to_canonical, merge_small_clusters, representatives
from .params import MergeParams, ScoreParams
from .similarity import pair_scores, top_k_labels
from ..wording import quoted


@dataclass
class LabelMap:
    """Steps 4-6 on the vocabulary: clusters and the canonical label of every label.

    Attributes:
        vocabulary: the n_labels label strings, as given.
        frequencies: int ndarray (n_labels,): images carrying each label.
        dbscan_clusters: int ndarray (n_labels,): DBSCAN ids before merging (-1 = noise).
        clusters: int ndarray (n_labels,): final cluster ids after merging.
        representatives: list (n_clusters,) of the representative label of each cluster.
        distance_to_canonical: float32 ndarray (n_labels,): cosine distance from each label to
            its canonical label (the merges most worth checking are the farthest).
        steps: :class:`~vlsr_core.engine.grouping.Steps`: what each step did; in a label map
            read back from a run, its record: a dict of the same names (a run of an earlier
            version may lack some).
        names: the canonical label of each cluster after a review
            (:func:`~vlsr_core.engine.review.review_label_map`), which may rename it; None:
            the representatives.
        naming: int ndarray (n_labels,): in the recommended mode, each label's rank as a name
            when frequencies tie (lower first, :func:`~vlsr_core.engine.lexical.spelling_preference`),
            which a review also names by; None: the paper's tie-break (nearest the centroid).
    """

    vocabulary: list
    frequencies: np.ndarray
    dbscan_clusters: np.ndarray
    clusters: np.ndarray
    representatives: list
    distance_to_canonical: np.ndarray
    steps: Steps
    names: list | None = None
    naming: np.ndarray | None = None

    @property
    def cluster(self):
        """dict: label -> final cluster id (built on each read: read it once, not per label)."""
        return dict(zip(self.vocabulary, self.clusters.tolist()))

    @property
    def cluster_names(self):
        """list (n_clusters,): each cluster's canonical label: its name after a review, else its
        representative."""
        return self.names or self.representatives

    @property
    def canonical(self):
        """dict: label -> canonical label (its cluster's name): the label map (built on each
        read: read it once, not per label)."""
        names = self.cluster_names
        return {l: names[c] for l, c in zip(self.vocabulary, self.clusters)}


@dataclass
class FinalLabels:
    """Step 7, per image (lists follow the input images).

    Attributes:
        canonical_labels: per image, its distinct canonical labels in order of first appearance.
        canonical_scores: per image, float32 ndarray of their scores, or None.
        final_labels: per image, the chosen canonical label; None if it has no labels or no
            usable embedding.
        final_scores: per image, the final label's score, or None.
    """

    canonical_labels: list
    canonical_scores: list
    final_labels: list
    final_scores: list


@dataclass
class LabelRefinement(LabelMap, FinalLabels):
    """Steps 4-7: a :class:`LabelMap` and the :class:`FinalLabels` it gives."""


@dataclass
class ImageScores:
    """Steps 2-3, per image.

    Attributes:
        similarity: per image, float32 ndarray of scores aligned with that image's labels;
            None for an image without a usable embedding.
        suggestions: per image, the top-k ``(label, score)`` of the whole vocabulary, best first;
            twin labels (one embedding: casings that CLIP's lowercasing tokenizer reads alike)
            take one place, under the spelling on most images.
        replacements: per image, aligned with its labels: the best suggestion where it scores
            higher than that label by more than ``replace_margin`` (the paper's auto-replace
            rule), else None.
        min_similarity: per image, the lowest score of its labels (None: no score).
        best_gap: per image, the best suggestion's score minus the best assigned label's: above
            0, a better label exists; exactly 0 when the best suggestion is assigned or is a
            twin (same embedding) of an assigned label, as exact scores tie exactly; None
            without a score.
    """

    similarity: list
    suggestions: list
    replacements: list
    min_similarity: list
    best_gap: list


@dataclass
class SanitizeResult(LabelRefinement, ImageScores):
    """Everything :func:`sanitize` computes: a :class:`LabelRefinement` and :class:`ImageScores`."""


def sanitize(image_embeddings, image_labels, vocabulary, vocabulary_embeddings, score=None,
             merge=None, *, unknown_words=None, block_rows=DEFAULT_BLOCK_ROWS, **overrides):
    """Run VLSR steps 2-7 on precomputed CLIP embeddings (rows need not be normalised: each
    is scaled to unit length, so every score is a cosine similarity).

    Args:
        image_embeddings: ndarray of shape (n_images, dim); a row with NaN (or infinite)
            values marks an image that could not be embedded (it still counts for label
            frequencies and gets canonical labels, but no scores). An all-zero row, image or
            label, has no direction: it scores 0 against everything.
        image_labels: list of n_images lists of label strings (empty for an unlabelled image).
        vocabulary: list of n_labels distinct strings, containing every label of ``image_labels``,
            in the order of the rows of ``vocabulary_embeddings`` (a set is refused).
        vocabulary_embeddings: ndarray of shape (n_labels, dim).
        score: :class:`~vlsr_core.engine.params.ScoreParams` of steps 2-3 (default: the defaults).
        merge: :class:`~vlsr_core.engine.params.MergeParams` of steps 4-6 (default: the defaults).
        unknown_words: optional float ndarray (n_labels,), to name clusters by labels of known
            words (see :func:`build_label_map`).
        block_rows: rows per block in clustering.
        **overrides: single parameters of either class, e.g. ``eps=0.1, top_k=3``.

    Returns:
        a :class:`SanitizeResult`.

    Example:
        >>> vocab = ["helmet", "Helmets", "bolt"]
        >>> vocab_emb = np.array([[1, 0], [0.99, 0.1], [0, 1]])
        >>> images = np.array([[1, 0.05], [0.9, 0.3]])
        >>> r = sanitize(images, [["helmet"], ["Helmets", "bolt"]], vocab, vocab_emb)
        >>> r.canonical["Helmets"], r.final_labels[1]
        ('helmet', 'helmet')
    """
    image_labels, vocabulary = list(image_labels), as_vocabulary(vocabulary)  # (read twice)
    score_names = {s.name for s in ScoreParams.specs()}
    scores = score_images(image_embeddings, image_labels, vocabulary, vocabulary_embeddings, score,
                          **{k: v for k, v in overrides.items() if k in score_names})
    refined = refine_labels(image_embeddings, image_labels, vocabulary, vocabulary_embeddings, merge,
                            unknown_words=unknown_words, block_rows=block_rows,
                            **{k: v for k, v in overrides.items() if k not in score_names})
    return SanitizeResult(**vars(refined), **vars(scores))


def score_images(image_embeddings, image_labels, vocabulary, vocabulary_embeddings, params=None, *,
                 frequencies=None, progress=None, **overrides):
    """Steps 2-3 alone: scores of the assigned labels, top-k suggestions and, per assigned label,
    the paper's auto-replace candidate (see :func:`sanitize`).

    Args:
        params: :class:`~vlsr_core.engine.params.ScoreParams`; ``overrides`` replace single fields.
        frequencies: optional int ndarray (n_labels,): images carrying each label in the whole
            collection, which picks the spelling a suggestion of twin labels shows (then the
            string order). Default: counted on ``image_labels``; give the collection's counts
            when scoring it a chunk at a time, so that every chunk shows the same spelling.

    Returns:
        an :class:`ImageScores`.
    """
    params = ScoreParams.resolve(params, **overrides)
    image_labels = list(image_labels)  # (read twice: a generator would be empty the second time)
    image_embeddings, vocab_emb, vocabulary, labels_idx = _prepared(
        image_embeddings, image_labels, vocabulary, vocabulary_embeddings
    )
    valid = np.isfinite(image_embeddings).all(axis=1)
    similarity = _scores_per_image(image_embeddings, vocab_emb, labels_idx, valid)
    suggestions = [[] for _ in labels_idx]
    if frequencies is None:
        frequencies = label_frequencies(image_labels, vocabulary)
    top_idx, top_scores = top_k_labels(image_embeddings[valid], vocab_emb, params.top_k,
                                       tie_rank=_suggestion_rank(vocabulary, frequencies),
                                       one_per_vector=True, progress=progress)
    for row, i in enumerate(np.flatnonzero(valid)):
        suggestions[i] = [(vocabulary[j], float(s)) for j, s in zip(top_idx[row], top_scores[row])]
    replacements = [
        _replacements(idx, sims, sugg, vocabulary, params.replace_margin)
        for idx, sims, sugg in zip(labels_idx, similarity, suggestions)
    ]
    scored = [sims is not None and len(sims) > 0 for sims in similarity]
    min_similarity = [float(sims.min()) if ok else None for sims, ok in zip(similarity, scored)]
    best_gap = [
        (0.0 if sugg[0][0] in labels else sugg[0][1] - float(sims.max())) if ok and sugg else None
        for labels, sims, sugg, ok in zip(image_labels, similarity, suggestions, scored)
    ]
    return ImageScores(similarity, suggestions, replacements, min_similarity, best_gap)


class ScoreTally:
    """Every label score of a collection, added a chunk of images at a time (4 bytes a score),
    and each vocabulary label's best score: what the review thresholds come from.

    Example::

        tally = ScoreTally(vocabulary)
        for chunk_labels, chunk_embeddings in chunks:
            tally.add(chunk_labels, score_images(chunk_embeddings, chunk_labels, vocabulary,
                                                 vocabulary_embeddings).similarity)
        low = tally.threshold(0.1)
        weak = tally.weak_labels(low)
    """

    def __init__(self, vocabulary):
        self.vocabulary = list(vocabulary)
        self._index = {label: i for i, label in enumerate(self.vocabulary)}
        self._scores = []
        self._best = np.full(len(self.vocabulary), -np.inf)

    def add(self, image_labels, similarity):
        """Scores of a chunk: per image its labels and their scores (None: not scored)."""
        scored = [(labels, s) for labels, s in zip(image_labels, similarity) if s is not None and len(s)]
        if scored:
            scores = np.concatenate([s for _, s in scored])
            self._scores.append(scores)
            np.maximum.at(self._best, [self._index[l] for labels, _ in scored for l in labels], scores)

    @property
    def n_scores(self):
        return sum(s.size for s in self._scores)

    def threshold(self, quantile):
        """The ``quantile`` of all scores (0.0 when there are none): below it a label is low."""
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0, np.float32)
        return float(np.quantile(scores, quantile)) if scores.size else 0.0

    def weak_labels(self, threshold, most=None):
        """The labels scoring below ``threshold`` on every image they are on, sorted; with
        ``most``, only that many of them, the weakest (ties: the first in string order)."""
        weak = [(b, l) for l, b in zip(self.vocabulary, self._best) if np.isfinite(b) and b < threshold]
        return sorted(l for _, l in (weak if most is None else sorted(weak)[:most]))


def refine_labels(image_embeddings, image_labels, vocabulary, vocabulary_embeddings, params=None, *,
                  unknown_words=None, block_rows=DEFAULT_BLOCK_ROWS, progress=None, **overrides):
    """Steps 4-7 alone: clusters, label map and final labels (see :func:`sanitize`).

    The same as :func:`label_frequencies`, then :func:`build_label_map`, then
    :func:`final_labels`; call those three to process images in chunks. ``progress``, an optional
    callable taking the fraction done, follows the clustering (the long part).

    Args:
        params: :class:`~vlsr_core.engine.params.MergeParams`; ``overrides`` replace single fields.
        unknown_words: as in :func:`build_label_map`.

    Returns:
        a :class:`LabelRefinement`.
    """
    params = MergeParams.resolve(params, **overrides)
    image_labels, vocabulary = list(image_labels), as_vocabulary(vocabulary)  # (read twice)
    frequencies = label_frequencies(image_labels, vocabulary)
    prototypes = None
    if params.image_evidence:
        image_embeddings = unit_length(image_embeddings, "image_embeddings", missing_rows=True)
        _check_inputs(image_embeddings, image_labels, as_vocabulary(vocabulary),
                      np.asarray(vocabulary_embeddings))
        prototypes = ImagePrototypes.from_images(image_embeddings, image_labels, vocabulary)
    label_map = build_label_map(vocabulary, vocabulary_embeddings, frequencies, params,
                                prototypes=prototypes, unknown_words=unknown_words,
                                block_rows=block_rows, progress=progress)
    final = final_labels(image_embeddings, image_labels, label_map, vocabulary_embeddings)
    return LabelRefinement(**vars(label_map), **vars(final))


def label_frequencies(image_labels, vocabulary):
    """int64 ndarray of shape (n_labels,): how many images carry each vocabulary label.

    Counts add up over chunks of images, so large collections can be counted chunk by chunk.
    """
    vocabulary = as_vocabulary(vocabulary)
    image_labels = list(image_labels)  # (read twice: a generator of a chunk's label lists too)
    _check_label_lists(image_labels)
    index = {label: i for i, label in enumerate(vocabulary)}
    frequencies = np.zeros(len(index), dtype=np.int64)
    try:
        for labels in image_labels:
            frequencies[[index[l] for l in set(labels)]] += 1
    except KeyError as e:
        raise ValueError(f"labels missing from the vocabulary: [{quoted(e.args[0])}]") from None
    return frequencies


def as_vocabulary(vocabulary):
    """``vocabulary`` as a list of distinct ``str``, in the order of its embeddings' rows. A set
    is refused: its order changes from one process to the next, and so would the rows each
    label gets."""
    if isinstance(vocabulary, (set, frozenset, str)):
        raise TypeError(f"vocabulary must be a list in the order of its embeddings' rows, not "
                        f"a {type(vocabulary).__name__}")
    vocabulary = list(vocabulary)
    not_str = [v for v in vocabulary if not isinstance(v, str)]
    if not_str:
        raise ValueError(f"labels must be strings; the vocabulary holds {not_str[0]!r} "
                         f"({type(not_str[0]).__name__})")
    seen, repeated = set(), []
    for label in vocabulary:
        if label in seen:
            repeated.append(label)
        seen.add(label)
    if repeated:
        raise ValueError(f"vocabulary has repeated labels: {', '.join(map(quoted, repeated[:5]))}")
    return [str(v) for v in vocabulary]  # (numpy strings as str)


def _check_label_lists(image_labels):
    """Refuse what is not a list of label strings per image, naming the image (an int label
    was said to be missing from a vocabulary that held its string)."""
    for i, labels in enumerate(image_labels):
        if isinstance(labels, str):
            raise ValueError(f"image_labels[{i}] is the string {labels!r}: give each image a "
                             f"list of labels ([{labels!r}])")
        if labels is None:
            raise ValueError(f"image_labels[{i}] is None: give an unlabelled image []")
        if not hasattr(labels, "__iter__"):  # (NaN, as pandas gives an empty cell)
            raise ValueError(f"image_labels[{i}] is {labels!r}: give each image a list of "
                             "labels ([] for an unlabelled image)")
        odd = next((l for l in labels if not isinstance(l, str)), "")
        if not isinstance(odd, str):
            raise TypeError(f"image_labels[{i}] holds {odd!r} ({type(odd).__name__}): labels "
                            "are strings")


def build_label_map(vocabulary, vocabulary_embeddings, frequencies, params=None, *,
                    prototypes=None, unknown_words=None, block_rows=DEFAULT_BLOCK_ROWS,
                    progress=None, **overrides):
    """Steps 4-6: cluster the vocabulary, merge small clusters, pick each cluster's label.

    Args:
        vocabulary: list of n_labels distinct strings.
        vocabulary_embeddings: ndarray of shape (n_labels, dim) (need not be normalised).
        frequencies: int ndarray of shape (n_labels,), from :func:`label_frequencies`.
        params: :class:`~vlsr_core.engine.params.MergeParams`; ``overrides`` replace single fields.
        prototypes: :class:`~vlsr_core.engine.evidence.ImagePrototypes` of the vocabulary, which
            ``image_evidence=True`` needs (:func:`refine_labels` computes them from the images).
        unknown_words: optional float ndarray (n_labels,): the share of each label's words that
            the label encoder's tokenizer splits into pieces
            (:func:`~vlsr_core.model.tokens.unknown_words`). In the recommended mode, a
            plural or short-word typo that the tokenizer does not know as a word of its own
            joins within the looser lexical guard (``clothespins``, ``waggon``:
            :func:`~vlsr_core.engine.lexical.lexical_groups`), and where frequencies and
            spelling in use tie, a cluster is named by a label of known words (``balloon``
            rather than ``baloon``).
        block_rows: rows per block in clustering (memory, not results).
        progress: optional callable taking the fraction done, 1.0 at the end.

    Returns:
        a :class:`LabelMap`.
    """
    params = MergeParams.resolve(params, **overrides)
    if params.image_evidence and prototypes is None:
        raise ValueError("image_evidence needs the labels' image prototypes: pass prototypes= "
                         "(ImagePrototypes.from_images), or call refine_labels or sanitize")
    vocabulary = as_vocabulary(vocabulary)
    if prototypes is not None and prototypes.vocabulary != vocabulary:
        raise ValueError("prototypes were computed for another vocabulary")
    vocab_emb = unit_length(vocabulary_embeddings, "vocabulary_embeddings")
    frequencies = as_counts(frequencies)
    if not len(vocabulary) == len(vocab_emb) == len(frequencies):
        raise ValueError(f"{len(vocabulary)} labels, {len(vocab_emb)} label embeddings and "
                         f"{len(frequencies)} frequencies")
    if unknown_words is not None:
        unknown_words = np.asarray(unknown_words, dtype=np.float64).reshape(-1)
        if len(unknown_words) != len(vocabulary):
            raise ValueError(f"{len(vocabulary)} labels and {len(unknown_words)} unknown_words")
        if not np.all((unknown_words >= 0) & (unknown_words <= 1)):
            raise ValueError("unknown_words must be shares between 0 and 1 (no NaN)")
    advance = progress or (lambda fraction: None)
    # computed in the labels' string order and mapped back: every id and tie-break is then
    # the same whatever order the vocabulary came in
    order = np.argsort(_string_rank(vocabulary), kind="stable")
    back = np.argsort(order, kind="stable")
    sorted_vocabulary = [vocabulary[i] for i in order]
    sorted_emb, sorted_freq = vocab_emb[order], frequencies[order]
    if params.paper:
        eps = DEFAULT_EPS if params.eps is None else params.eps
        # (measured at 100,000 labels: a fifth of the time DBSCAN, the rest merging)
        dbscan = cluster_labels(sorted_emb, eps=eps, min_samples=params.min_samples,
                                block_rows=block_rows, progress=lambda f: advance(0.2 * f))
        clusters = merge_small_clusters(
            sorted_emb, dbscan, sorted_freq, params.min_cluster_size, vocabulary=sorted_vocabulary,
            size_by=params.size_by, linkage=params.linkage,
            max_merge_distance=params.max_merge_distance,
            progress=lambda f: advance(0.2 + 0.7 * f),
        )
        steps = paper_steps(sorted_emb, dbscan, eps, params.max_merge_distance,
                            sorted_vocabulary)
    else:
        dbscan, clusters, steps = recommended_clusters(
            sorted_vocabulary, sorted_emb, sorted_freq, params, block_rows=block_rows,
            progress=lambda f: advance(0.9 * f),
            prototypes=prototypes.take(order) if params.image_evidence else None,
            unknown_words=None if unknown_words is None else unknown_words[order])
    steps.lexical_groups = number_by_first_occurrence(steps.lexical_groups[back])
    # the paper's step 6 as written; the recommended mode names a cluster by its spelling in
    # use when frequencies tie (most labels of a long tail are on one sample)
    naming = None if params.paper else spelling_preference(
        sorted_vocabulary, sorted_freq,
        None if unknown_words is None else unknown_words[order])
    reps = representatives(sorted_vocabulary, sorted_emb, clusters, sorted_freq, naming)
    distance = distance_to_canonical(sorted_emb, reps, clusters)
    advance(1.0)
    return LabelMap(vocabulary=vocabulary, frequencies=frequencies, dbscan_clusters=dbscan[back],
                    clusters=clusters[back], representatives=[sorted_vocabulary[r] for r in reps],
                    distance_to_canonical=distance[back], steps=steps,
                    naming=None if naming is None else naming[back])


def final_labels(image_embeddings, image_labels, label_map, vocabulary_embeddings):
    """Step 7: each image's canonical labels, their scores, and the best of them.

    Images are independent, so a large collection can go through in chunks. A canonical label
    is scored by its cluster's representative and named by its name (a review may rename it).

    Args:
        image_embeddings: ndarray of shape (n_images, dim); NaN rows for images without one
            (a row with any NaN or infinite value counts as one).
        image_labels: list of n_images lists of label strings of ``label_map.vocabulary``.
        label_map: a :class:`LabelMap`.
        vocabulary_embeddings: ndarray of shape (n_labels, dim), rows as ``label_map.vocabulary``.

    Returns:
        a :class:`FinalLabels`.
    """
    image_embeddings, vocab_emb, vocabulary, labels_idx = _prepared(
        image_embeddings, image_labels, label_map.vocabulary, vocabulary_embeddings
    )
    valid = np.isfinite(image_embeddings).all(axis=1)
    index = {label: i for i, label in enumerate(vocabulary)}
    canonical_of = np.array([index[r] for r in label_map.representatives], dtype=np.int64)
    name = dict(zip(canonical_of.tolist(), label_map.cluster_names))
    canonical_of = canonical_of[np.asarray(label_map.clusters, dtype=np.int64)]

    canonical_idx = [_distinct_in_order(canonical_of[idx]) for idx in labels_idx]
    canonical_scores = _scores_per_image(image_embeddings, vocab_emb, canonical_idx, valid)
    best_labels, best_scores = [None] * len(labels_idx), [None] * len(labels_idx)
    for i, (cands, scores) in enumerate(zip(canonical_idx, canonical_scores)):
        if scores is not None and len(cands):
            tied = np.flatnonzero(scores == scores.max())  # (equal: by name, whatever the
            best = int(min(tied, key=lambda k: name[cands[k]]))  # order of the labels)
            best_labels[i], best_scores[i] = name[cands[best]], float(scores[best])
    return FinalLabels(
        canonical_labels=[[name[j] for j in idx] for idx in canonical_idx],
        canonical_scores=canonical_scores,
        final_labels=best_labels,
        final_scores=best_scores,
    )


def _prepared(image_embeddings, image_labels, vocabulary, vocabulary_embeddings):
    """Checked float32 arrays, the vocabulary as a list, and each image's label indices."""
    image_embeddings = unit_length(image_embeddings, "image_embeddings", missing_rows=True)
    vocab_emb = unit_length(vocabulary_embeddings, "vocabulary_embeddings")
    vocabulary = as_vocabulary(vocabulary)
    _check_inputs(image_embeddings, image_labels, vocabulary, vocab_emb)
    index = {label: i for i, label in enumerate(vocabulary)}
    labels_idx = [np.array([index[l] for l in labels], dtype=np.int64) for labels in image_labels]
    return image_embeddings, vocab_emb, vocabulary, labels_idx


def unit_length(embeddings, name, missing_rows=False):
    """``embeddings`` as float32 rows of unit length, so that every score is a cosine whatever
    the caller's scaling (raw CLIP features are not normalised); rows already of unit length
    to float32's rounding (within 1e-5) are left as they are, and not copied: features
    normalised in half precision (norms off by 1e-3) are not (left so, they put a suggestion
    before a better one and a distance below 0). ``missing_rows``: NaN rows mark a missing
    embedding (images); otherwise a row that is not finite is an error."""
    x = real_array(embeddings, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {x.shape}")
    x = np.asarray(in_range(x), dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # NaN or inf for a row that is not finite
    finite = np.isfinite(norms)
    if not missing_rows and not finite.all():
        bad = np.flatnonzero(~finite)
        rows = ", ".join(map(str, bad[:5])) + (", ..." if bad.size > 5 else "")
        raise ValueError(f"{name} has NaN or infinite values in {bad.size} of its rows "
                         f"({rows}): embed those again")
    off = finite & (norms > 0) & (np.abs(norms - 1) > 1e-5)
    if off.all():  # (raw features: one copy, not three)
        return unit_rows(x)
    if off.any():
        x = x.copy()
        x[off] = unit_rows(x[off])
    return x


def _check_inputs(image_embeddings, image_labels, vocabulary, vocab_emb):
    if image_embeddings.ndim != 2 or vocab_emb.ndim != 2:
        raise ValueError("image_embeddings and vocabulary_embeddings must be 2-D arrays")
    _check_label_lists(image_labels)
    if len(image_labels) != image_embeddings.shape[0]:
        raise ValueError(
            f"{len(image_labels)} label lists for {image_embeddings.shape[0]} image embeddings"
        )
    if len(vocabulary) != vocab_emb.shape[0]:
        raise ValueError(f"{len(vocabulary)} labels for {vocab_emb.shape[0]} label embeddings")
    if image_embeddings.shape[0] and vocab_emb.shape[0] and image_embeddings.shape[1] != vocab_emb.shape[1]:
        raise ValueError(
            f"image embeddings are {image_embeddings.shape[1]}-d, label embeddings "
            f"{vocab_emb.shape[1]}-d: were they made by the same model?"
        )
    known = set(vocabulary)
    unknown = {l for labels in image_labels for l in labels if l not in known}
    if unknown:
        listed = ", ".join(map(quoted, sorted(unknown, key=str)[:10]))
        raise ValueError(f"labels missing from the vocabulary: [{listed}]")


def _scores_per_image(image_embeddings, label_embeddings, labels_idx, valid):
    """Per image, the scores of its label indices (None where the image has no embedding)."""
    counts = np.array([len(idx) if ok else 0 for idx, ok in zip(labels_idx, valid)], dtype=np.int64)
    image_index = np.repeat(np.arange(len(labels_idx)), counts)
    label_index = np.concatenate(
        [idx for idx, ok in zip(labels_idx, valid) if ok] or [np.empty(0, np.int64)]
    )
    flat = pair_scores(image_embeddings, label_embeddings, image_index, label_index)
    parts = np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []
    return [part if ok else None for part, ok in zip(parts, valid)]


def _replacements(label_idx, sims, suggestions, vocabulary, margin):
    """For one image: the top suggestion where it beats an assigned label by more than margin.
    Both scores are exact, so a twin label with the same embedding (e.g. another casing) scores
    exactly the same and never counts as better."""
    if sims is None or not suggestions:
        return [None] * len(label_idx)
    best, best_score = suggestions[0]
    return [
        best if best != vocabulary[j] and best_score - s > margin else None
        for j, s in zip(label_idx, sims)
    ]


def _string_rank(vocabulary):
    """int64 ndarray (n_labels,): each label's place in code-point order of the strings, the
    tie-break that does not depend on the order the vocabulary came in."""
    rank = np.empty(len(vocabulary), dtype=np.int64)
    rank[sorted(range(len(vocabulary)), key=vocabulary.__getitem__)] = np.arange(len(vocabulary))
    return rank


def _suggestion_rank(vocabulary, frequencies):
    """int64 ndarray (n_labels,): each label's place by images carried (most first), then in
    Unicode's composed form first (``café`` before the twin ``cafe\\u0301``, as clusters are
    named), then by :func:`_string_rank`."""
    frequencies = as_counts(frequencies)
    if frequencies.shape != (len(vocabulary),):
        raise ValueError(f"frequencies has shape {frequencies.shape}, for "
                         f"{len(vocabulary)} vocabulary labels")
    rank = np.empty(len(vocabulary), dtype=np.int64)
    decomposed = np.array([not unicodedata.is_normalized("NFC", l) for l in vocabulary], dtype=bool)
    rank[np.lexsort((_string_rank(vocabulary), decomposed, -frequencies))] = np.arange(
        len(vocabulary))
    return rank


def _distinct_in_order(idx):
    _, first = np.unique(idx, return_index=True)
    return idx[np.sort(first)]

"""The recommended merge: lexical groups, DBSCAN of the groups, guarded small-cluster merging.

The paper's steps 4-6 merge every cluster below the minimum size into its nearest neighbour,
however far it is: in a long-tailed vocabulary most clusters are small, and most of those merges
join unrelated labels. The recommended mode keeps the paper's DBSCAN and merging, and adds:

1. lexical grouping first (:mod:`~vlsr_core.engine.lexical`): case, Unicode, punctuation,
   plural, spacing and typo variants, which a string rule finds better than any embedding;
2. thresholds from the data: the *background distance* (the median cosine distance between two
   labels of the vocabulary) sets the scale, since encoders differ mainly by how much a common
   direction compresses all their distances (CLIP's text tower far more than a sentence encoder);
3. a guard on merging: a small cluster joins its nearest neighbour only when every pair of
   their groups lies within ``max_merge_distance`` (complete linkage: no A~B~C drift);
   what stays small is kept and reported as rare, never forced into an unrelated cluster;
4. labels an embedding cannot place are kept apart from the embedding steps: no letter or digit
   (emoji, symbols), digits only, or longer than ``LONG_LABEL`` characters (an encoder truncates
   long text, so two such labels may embed alike).
"""

from dataclasses import dataclass, field

import numpy as np

from .clustering import cluster_labels, number_by_first_occurrence
from .dots import exact_dots, sampled_pairs
from .evidence import image_links
from .lexical import lexical_groups, normal_form, read_form
from .merging import merge_small_clusters

# Calibrated on all-MiniLM-L6-v2 as fractions of the background distance (docs/quality.md).
EPS_SCALE = 0.08  # DBSCAN radius: about 0.065 for MiniLM, whose background distance is ~0.8
# A typo or word-form variant joins its word within GUARD_SCALE: they change a word's tokens, so
# the encoder may put them far from it (real misspellings 0.23-0.77 with MiniLM); a plural within
# PLURAL_SCALE: it barely changes the tokens, so true plurals sit close to their singular (97% of
# the generated plurals of imagenet1k_variants within 0.3), and one farther is a word of its own
# ("glasses", "trunks"); a spacing variant within SPACING_SCALE: the same letters in the same
# order, its tokens change most ("sawmill" / "saw mill" at 0.62), and of the six sets' spacing
# pairs beyond 0.6, 25 of 25 within 0.9 are true; a typo in a long word the tokenizer splits in
# both spellings within LONG_TYPO_SCALE: one edit reshuffles its pieces ("parakeet" /
# "parrakeet" at 0.99), and of the six sets' such pairs at 0.6-1.0, 67 of 68 are true.
GUARD_SCALE = 0.6
PLURAL_SCALE = 0.3
SPACING_SCALE = 0.9
LONG_TYPO_SCALE = 1.0
# Image evidence (evidence.py): labels within EVIDENCE_SCALE join when the separation of their
# images is within JOIN_QUANTILE of the separations between the two halves of one label, drawn
# from at least MIN_HALVES labels carried by two images or more. (At 0.6, on the harness's
# smallest setting, its precision fell from 0.98 to 0.96.)
EVIDENCE_SCALE = 0.5
JOIN_QUANTILE = 0.9
MIN_HALVES = 10
MIN_IMAGES = 2  # a group on one image is not judged by it: one image says little of a label
BACKGROUND_PAIRS = 20_000  # label pairs sampled for the background distance
# below it, labels too alike to scale by (a toy vocabulary of synonyms: eps then fell within
# float rounding, and identical labels merged or not by the sign of a rounding error); a real
# vocabulary's is 0.2 to 0.9
MIN_BACKGROUND = 1e-3
UNDERIVED = "the default: too few labels, or too alike, to derive one"  # eps then, in words
LONG_LABEL = 100  # characters


@dataclass
class Steps:
    """What steps 4-6 did, for the report (either mode).

    Attributes:
        mode: ``"recommended"`` or ``"paper"``.
        background_distance: median cosine distance between two labels of the vocabulary.
        derived_eps: the eps the recommended mode derives from it (shown in paper mode too).
        eps, max_merge_distance: the values used (None: no limit).
        lexical_groups: int ndarray (n_labels,): each label's lexical group (paper: its own).
        lexical_links: labels joined by each lexical rule (paper: none).
        typo_joins: the ``[label, label]`` pairs the typo rule joined, worth a look (two real
            words may be one letter apart: "tweezer" and "tweeter"; paper: none), the
            farthest apart in the embeddings first.
        kept_apart: labels kept out of the embedding steps, by reason (paper: none).
        n_dbscan: clusters after DBSCAN, before merging, noise labels (and, in recommended
            mode, kept-apart groups) counted one each.
        image_evidence: with image evidence, ``{"labels with images": labels it could judge,
            "max separation": the join threshold drawn from the data, "typical separation": of
            two different labels, "image links": joins made, "spelling links": how many of
            them joined spelling variants that the text guard refused, "joins": per join the
            ``[label, label]`` pair, one of each group, nearest in text, "groups": groups after
            them, "not used": why the images were not used, else None}``; else None.
    """

    mode: str
    background_distance: float
    derived_eps: float
    eps: float
    max_merge_distance: float | None
    lexical_groups: np.ndarray
    lexical_links: dict
    kept_apart: dict
    n_dbscan: int
    image_evidence: dict | None = None
    typo_joins: list = field(default_factory=list)

    def as_record(self):
        """The JSON-serialisable part (no per-label array), as a run stores it."""
        d = {k: v for k, v in vars(self).items() if k != "lexical_groups"}
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def background_distance(embeddings, vocabulary=None):
    """Median cosine distance between two labels: of all pairs of a small vocabulary, else of
    ``BACKGROUND_PAIRS`` pairs drawn with a fixed seed (exact products: the same everywhere).
    Given the ``vocabulary``, one label of each reading (:func:`~.lexical.read_form`) counts:
    144 casings of "helmet" (one vector to a lowercasing tokenizer) brought the median, and
    with it every threshold of the run, near 0."""
    if vocabulary is not None:
        first = {}
        for i, label in enumerate(vocabulary):
            first.setdefault(read_form(label), i)
        embeddings = embeddings[np.sort(np.fromiter(first.values(), dtype=np.int64))]
    if len(embeddings) < 2:
        return float("nan")
    a, b = sampled_pairs(len(embeddings), BACKGROUND_PAIRS)
    return float(np.median(1.0 - exact_dots(embeddings, embeddings, a, b)))


def _farthest_first(vocabulary, embeddings, pairs):
    """The ``[label, label]`` pairs, the farthest apart first (ties in the order given)."""
    if not pairs:
        return []
    a, b = np.array(pairs, dtype=np.int64).T
    order = np.argsort(exact_dots(embeddings, embeddings, a, b), kind="stable")
    return [[vocabulary[a[k]], vocabulary[b[k]]] for k in order.tolist()]


def kept_apart_reason(label):
    """Why a label stays out of the embedding steps (it still groups with equal spellings), or None."""
    normal = normal_form(label)
    if not normal:
        return "no letter or digit"
    if normal.replace(" ", "").isdigit():
        return "digits only"
    if len(label) > LONG_LABEL:
        return f"longer than {LONG_LABEL} characters"
    return None


def recommended_clusters(vocabulary, embeddings, frequencies, params, block_rows=256, progress=None,
                         prototypes=None, unknown_words=None):
    """Cluster ids of the recommended merge, and its :class:`Steps`.

    Args:
        vocabulary: n distinct label strings (results depend on their order only through ids:
            :func:`~vlsr_core.engine.pipeline.build_label_map` passes them in string order).
        embeddings: float32 ndarray (n, dim) of unit rows.
        frequencies: int ndarray (n,).
        params: :class:`~vlsr_core.engine.params.MergeParams`.
        block_rows, progress: as in :func:`~vlsr_core.engine.clustering.cluster_labels`.
        prototypes: :class:`~vlsr_core.engine.evidence.ImagePrototypes` of the labels, to use
            image evidence: labels within ``EVIDENCE_SCALE``, and spelling variants the
            lexical guard refused, join before DBSCAN when their images agree
            (:func:`~vlsr_core.engine.evidence.image_links`; None: text only).
        unknown_words: optional float ndarray (n,), what the tokenizer knows of each label, for
            the lexical guards (:func:`~vlsr_core.engine.lexical.lexical_groups`).

    Returns:
        (dbscan, clusters, steps): DBSCAN ids per label (-1: noise or kept apart), final
        cluster ids per label numbered by first label, and :class:`Steps`.
    """
    n = len(vocabulary)
    background = background_distance(embeddings, vocabulary)
    scale = _scale(background)
    eps = params.eps if params.eps is not None else EPS_SCALE * scale
    limit = params.max_merge_distance if params.max_merge_distance is not None else eps
    guard = GUARD_SCALE * scale
    lexical, links, typos, refused = lexical_groups(vocabulary, embeddings, guard,
                                                    PLURAL_SCALE * scale, unknown_words,
                                                    SPACING_SCALE * scale,
                                                    LONG_TYPO_SCALE * scale)
    groups, evidence = lexical, None
    if prototypes is not None:
        groups, evidence = _image_evidence(vocabulary, embeddings, prototypes, lexical, refused,
                                           EVIDENCE_SCALE * scale, block_rows)
    # (measured at 100,000 labels: about a fifth of the time grouping, a tenth DBSCAN, the
    # rest merging)
    advance = progress or (lambda fraction: None)
    advance(0.2)
    n_groups = int(groups.max()) + 1 if n else 0

    # each group is represented by its most frequent member (ties: the first in string order)
    order = np.lexsort((np.arange(n), -np.asarray(frequencies), groups))
    rep = order[np.searchsorted(groups[order], np.arange(n_groups))]
    weights = frequencies if params.size_by == "samples" else np.ones(n, dtype=np.int64)
    group_size = np.bincount(groups, weights=weights, minlength=n_groups).astype(np.int64)
    reasons = [kept_apart_reason(vocabulary[r]) for r in rep]
    members = np.bincount(groups, minlength=n_groups)
    kept_apart = {}
    for g, reason in enumerate(reasons):
        if reason:
            kept_apart[reason] = kept_apart.get(reason, 0) + int(members[g])
    placed = np.array([r is None for r in reasons], dtype=bool)

    group_db = np.full(n_groups, -1, dtype=np.int64)
    group_final = np.arange(n_groups, dtype=np.int64) + n_groups  # kept apart: their own
    if placed.any():
        points = embeddings[rep[placed]]
        group_db[placed] = cluster_labels(points, eps=eps, min_samples=params.min_samples,
                                          block_rows=block_rows,
                                          progress=lambda f: advance(0.2 + 0.1 * f))
        group_final[placed] = merge_small_clusters(
            points, group_db[placed], group_size[placed], params.min_cluster_size,
            vocabulary=[vocabulary[r] for r in rep[placed]], size_by="samples",
            linkage=params.linkage, max_merge_distance=limit, complete=True,
            progress=lambda f: advance(0.3 + 0.7 * f),
        )
    steps = Steps(mode=params.mode, background_distance=background,
                  derived_eps=EPS_SCALE * scale, eps=float(eps), max_merge_distance=float(limit),
                  lexical_groups=lexical, lexical_links=links, kept_apart=kept_apart,
                  n_dbscan=_n_clusters(group_db),  # kept-apart groups are -1: one cluster each
                  image_evidence=evidence,
                  typo_joins=_farthest_first(vocabulary, embeddings, typos))
    return group_db[groups], number_by_first_occurrence(group_final[groups]), steps


def _image_evidence(vocabulary, embeddings, prototypes, groups, spellings, radius, block_rows):
    """Groups joined by image evidence (near texts, and the spelling variants in ``spellings``
    that the text guard refused), and the report of that step. The images are used only if
    enough labels have two images to draw the threshold from, and if two different labels are
    typically more separated than it (else the images do not tell labels apart: all images
    alike, or labels put on images at random)."""
    placeable = np.array([kept_apart_reason(v) is None for v in vocabulary], dtype=bool)
    with_images = np.flatnonzero(placeable & (prototypes.counts > 0))
    halves = prototypes.self_separation(with_images)
    halves = halves[np.isfinite(halves)]
    threshold = typical = None
    if halves.size < MIN_HALVES:
        why = f"fewer than {MIN_HALVES} labels are carried by two images or more"
    else:
        threshold = float(np.quantile(halves, JOIN_QUANTILE))
        typical = prototypes.typical_separation(with_images, BACKGROUND_PAIRS)
        why = None if typical > threshold else (
            "two different labels' images are typically no more separated than one label's")
    joins, n_spelling = [], 0
    if why is None:
        groups, joins, n_spelling = image_links(groups, embeddings, prototypes, radius, placeable,
                                                threshold, MIN_IMAGES, block_rows, spellings)
    return groups, {"labels with images": int(with_images.size), "max separation": threshold,
                    "typical separation": typical if typical is None or np.isfinite(typical)
                    else None, "image links": len(joins), "spelling links": n_spelling,
                    "joins": [[vocabulary[i], vocabulary[j]] for i, j in joins],
                    "groups": int(groups.max()) + 1 if groups.size else 0, "not used": why}


def paper_steps(embeddings, dbscan, eps, max_merge_distance, vocabulary=None):
    """:class:`Steps` of the paper's mode: nothing grouped or kept apart; the derived eps shown."""
    background = background_distance(embeddings, vocabulary)
    return Steps(mode="paper", background_distance=background,
                 derived_eps=EPS_SCALE * _scale(background), eps=float(eps),
                 max_merge_distance=max_merge_distance, lexical_groups=np.arange(len(embeddings)),
                 lexical_links={}, kept_apart={}, n_dbscan=_n_clusters(dbscan))


def _n_clusters(dbscan):
    """Clusters after DBSCAN, each noise point (-1) counted as a cluster of its own."""
    return len(set(dbscan[dbscan >= 0].tolist())) + int((dbscan < 0).sum())


def _scale(background):
    return background if derives(background) else 1.0


def derives(background):
    """Whether the ``background`` distance of a vocabulary gives its thresholds (else, with
    fewer than two labels, None as a run stores NaN, or labels nearly alike, they are the
    scales themselves)."""
    return background is not None and bool(np.isfinite(background) and background > MIN_BACKGROUND)


def join_reasons(vocabulary, lexical_groups, dbscan_clusters, clusters, representatives,
                 image_joins=()):
    """Per label, the step that put it with its cluster's representative, for a curator checking
    the map label by label: ``""`` (it is the representative), ``"spelling"`` (lexical
    grouping), ``"images"`` (image evidence), ``"DBSCAN"`` or ``"merge"`` (small-cluster
    merging), the earliest step that holds both.

    Args:
        vocabulary: the n label strings.
        lexical_groups: int ndarray (n,) (another length, as in a run made before lexical
            grouping was recorded: every label its own group).
        dbscan_clusters, clusters: int ndarrays (n,): DBSCAN ids (-1: noise) and final ids.
        representatives: per final cluster id, its representative label.
        image_joins: the ``[label, label]`` pairs image evidence joined (``Steps.image_evidence``).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vocabulary)
    if n == 0:
        return []
    index = {label: i for i, label in enumerate(vocabulary)}
    lexical = np.asarray(lexical_groups, dtype=np.int64)
    lexical = lexical if lexical.size == n else np.arange(n)
    dbscan = np.asarray(dbscan_clusters, dtype=np.int64)
    rep = np.array([index[r] for r in representatives], dtype=np.int64)[np.asarray(clusters)]
    # the groups after image evidence: each label linked to its lexical group's first label,
    # and the joined pairs
    ids, first = np.unique(lexical, return_index=True)
    pairs = [(index[a], index[b]) for a, b in image_joins if a in index and b in index]
    a = np.concatenate([np.arange(n), [p[0] for p in pairs]]).astype(np.int64)
    b = np.concatenate([first[np.searchsorted(ids, lexical)], [p[1] for p in pairs]]).astype(np.int64)
    _, image_groups = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)),
                                           directed=False)
    reasons = np.full(n, "merge", dtype=object)
    reasons[(dbscan >= 0) & (dbscan == dbscan[rep])] = "DBSCAN"
    reasons[image_groups == image_groups[rep]] = "images"
    reasons[lexical == lexical[rep]] = "spelling"
    reasons[np.arange(n) == rep] = ""
    return reasons.tolist()

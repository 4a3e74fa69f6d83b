"""What the VLSR panel shows, computed without the App: the score histogram, the counts of each
merge step, and the cluster browser's rows (the most doubtful merges first)."""

import math
from dataclasses import dataclass

import numpy as np
from fiftyone import ViewField as F

from ..engine.defaults import JOIN_STEPS
from ..engine.grouping import kept_apart_reason
from ..engine.review import nearest_other_cluster
from ..engine.similarity import top_k_labels
from ..wording import folded, one_line
from .labels import label_path, one_of
from .runs import label_attributes, review_attribute, run_samples


@dataclass
class Histogram:
    """Label scores in bins: ``counts[i]`` scores lie in ``[edges[i], edges[i + 1])``."""

    counts: list
    edges: list

    def range_of(self, xs):
        """The score range covered by the bins whose centres are ``xs`` (clicked or selected)."""
        centres = (np.asarray(self.edges[:-1]) + np.asarray(self.edges[1:])) / 2
        bins = [int(np.argmin(np.abs(centres - x))) for x in xs]
        return self.edges[min(bins)], self.edges[max(bins) + 1]


def score_histogram(dataset, key):
    """A :class:`Histogram` of every label score of run ``key``, or None before scoring: the one
    kept at scoring time, else (a run scored by an older version) counted now."""
    config = dataset.get_run_info(key).config
    if config.score_histogram:
        return Histogram(**config.score_histogram)
    return count_score_histogram(run_samples(dataset, key), config.label_field,
                                 review_attribute(config, key))


def count_score_histogram(samples, label_field, attribute, bins=40):
    """A :class:`Histogram` of every score in label ``attribute`` of ``label_field`` in ``samples``
    (:func:`~vlsr_core.fo.runs.review_attribute`), counted by MongoDB (two aggregations,
    whatever the size), or None when there is none."""
    field = f"{label_path(samples, label_field)}.{attribute}"
    if not samples.has_field(field):
        return None
    bounds = samples.bounds(field)
    if bounds[0] is None:
        return None
    lo, hi = bounds
    hi = hi if hi > lo else lo + 1e-6
    counts, edges, _ = samples.histogram_values(field, bins=bins, range=[lo, hi + 1e-9])
    return Histogram([int(c) for c in counts], [float(e) for e in edges])


def labels_scoring_between(samples, key, label_field, lo, hi):
    """The view of the labels of run ``key`` whose review score (image or crop, as the
    histogram's) is in ``[lo, hi]``."""
    score = F(review_attribute(samples._dataset.get_run_info(key).config, key))
    return samples.filter_labels(label_field, (score >= lo) & (score <= hi))


def labels_named(samples, key, label_field, labels=None, canonical=None):
    """The view of the labels that are one of ``labels``, or whose canonical label (as last
    applied) is ``canonical``."""
    if labels is not None:
        return samples.filter_labels(label_field, one_of(F("label"), labels))
    return samples.filter_labels(label_field, one_of(F(label_attributes(key)["canonical"]),
                                                     [canonical]))


def merge_steps(state):
    """``(step, number of labels or clusters)`` from the vocabulary to the reviewed label map."""
    label_map = state.label_map
    steps = label_map.steps or {}
    rows = [("Labels", len(label_map.vocabulary))]
    if steps.get("mode") == "recommended":
        rows.append(("After lexical grouping", len(set(np.asarray(steps.get("lexical_groups", []))
                                                       .tolist())) or None))
        if steps.get("image_evidence") and not steps["image_evidence"].get("not used"):
            rows.append(("After image evidence", steps["image_evidence"]["groups"]))
    if steps.get("n_dbscan") is not None:
        rows.append((f"After DBSCAN (eps {steps['eps']:.3f})", steps["n_dbscan"]))
    rows.append(("Canonical labels after merging", len(state.clustered.representatives)))
    n = len(state.in_force)
    rows.append((f"After the review ({n} edit{'' if n == 1 else 's'})", len(label_map.representatives)))
    return [(step, n) for step, n in rows if n is not None]


def joined_by_step(state, step):
    """bool ndarray of shape (n_labels,): the labels of the vocabulary that ``step`` (one of
    :data:`JOIN_STEPS`) put with their cluster's representative label
    (:attr:`~vlsr_core.fo.review.ReviewState.joined_by`); ``"typo"``: those joined by spelling
    that are one of a pair the typo rule joined (``Steps.typo_joins``). A cluster's
    representative is joined by no step."""
    reasons = np.array(state.joined_by, dtype=object).reshape(-1)
    if step != "typo":
        return reasons == step
    typos = {l for pair in (state.clustered.steps or {}).get("typo_joins") or [] for l in pair}
    in_pair = np.array([l in typos for l in state.label_map.vocabulary], dtype=bool).reshape(-1)
    return (reasons == "spelling") & in_pair


def join_choices(state):
    """``(step, number of labels it joined)`` for each of :data:`JOIN_STEPS` that joined a label
    in the run (with the review's edits in force), in that order: the "Joined by" choices."""
    counts = [(step, int(joined_by_step(state, step).sum())) for step in JOIN_STEPS]
    return [(step, n) for step, n in counts if n]


def page_of(rows, page, size):
    """The rows of page ``page`` (from 0; clamped to the last page) of ``size`` rows:
    ``(rows of the page, page, number of pages, words such as "101-200 of 3,412")``. No rows
    make one empty page ("0 of 0")."""
    pages = max(1, -(-len(rows) // size))
    page = min(max(page or 0, 0), pages - 1)
    shown = rows[page * size:(page + 1) * size]
    span = (f"{page * size + 1:,}-{page * size + len(shown):,} of {len(rows):,}" if shown
            else "0 of 0")
    return shown, page, pages, span


def cluster_rows(state, query="", joined=None):
    """One row per cluster of the reviewed label map, the most doubtful first: the clusters
    whose farthest member is farthest from the canonical label, then the largest.

    ``query`` keeps the clusters with a member or name containing it (:func:`_containing`);
    ``joined`` (one of :data:`JOIN_STEPS`; None: any) those with a member that step joined
    (:func:`joined_by_step`).
    Rows: ``cluster``, ``label`` (its representative label, which names it across edits),
    ``canonical``, ``labels`` (members), ``occurrences`` (label occurrences on samples),
    ``farthest`` (largest member distance), ``edited``.
    """
    label_map = state.label_map
    names = label_map.cluster_names
    clusters = np.asarray(label_map.clusters, dtype=np.int64)
    n = len(names)
    distance = np.asarray(label_map.distance_to_canonical, dtype=np.float64)
    farthest = np.zeros(n)
    np.maximum.at(farthest, clusters, distance)
    sizes = cluster_sizes(label_map, by_samples=False)
    occurrences = cluster_sizes(label_map)
    # edited: a cluster that holds a label the edits moved, or lost one (it holds labels that
    # were clustered with a label the edits moved: helmet after helmit was taken out of it)
    index = {l: i for i, l in enumerate(label_map.vocabulary)}
    moved = np.array([index[l] for l in state.edited_labels], dtype=np.int64)
    edited = np.zeros(n, dtype=bool)
    edited[clusters[moved]] = True
    if state.clustered is not None and moved.size:
        before = np.asarray(state.clustered.clusters, dtype=np.int64)
        edited[clusters[np.isin(before, before[moved])]] = True
    keep = np.ones(n, dtype=bool)
    if query:
        hit = _containing(label_map.vocabulary, query)
        keep = np.bincount(clusters[hit], minlength=n) > 0
        keep |= _containing(names, query)
    if joined:
        keep &= np.bincount(clusters[joined_by_step(state, joined)], minlength=n) > 0
    # (by the distance as shown: float noise of 1e-7 on clusters of one spelling ordered them
    # at random, before larger clusters)
    order = np.lexsort((-occurrences, -np.round(farthest, 3)))
    return [dict(cluster=int(c), label=label_map.representatives[c], canonical=names[c],
                 labels=int(sizes[c]),
                 occurrences=int(occurrences[c]), farthest=round(float(farthest[c]), 3),
                 edited="yes" if edited[c] else "")
            for c in order if keep[c]]


def _containing(labels, query):
    """bool ndarray over ``labels``: those containing ``query`` as :func:`~vlsr_core.wording.folded`
    compares them (any case; a tab, a line break or their glyph as a space), as a curator types
    what the panel shows: a typed escape finds the label shown with it (``drill\\xa0``)."""
    q = folded(query)
    if not q and query:  # white space alone (a tab, "⇥", "␣"): found as the labels show it
        glyphs = str(query).replace("\t", "⇥").replace("\n", "⏎")
        return np.array([glyphs in one_line(l, math.inf) for l in labels], dtype=bool)
    shown = "\\" in q  # (and only then: showing labels takes longer than folding them)
    return np.array([q in folded(l) or shown and q in folded(one_line(l, math.inf))
                     for l in labels], dtype=bool)


def cluster_sizes(label_map, by_samples=True):
    """int ndarray (n_clusters,): each cluster's size in samples (label occurrences) or, unless
    ``by_samples``, in labels."""
    clusters = np.asarray(label_map.clusters, dtype=np.int64)
    n = len(label_map.representatives)
    if by_samples:
        return np.bincount(clusters, weights=label_map.frequencies, minlength=n).astype(np.int64)
    return np.bincount(clusters, minlength=n)


def rare_clusters(label_map, min_size, by_samples=True):
    """bool ndarray over the clusters of ``label_map``: those under ``min_size`` (samples, or
    labels unless ``by_samples``), which merging left alone as rare. Clusters of labels kept
    out of the embedding steps (no letter, digits only, very long) are not among them, nor, in
    the paper's mode (which forces every small cluster into a neighbour), any cluster."""
    if _step(label_map, "mode") == "paper":
        return np.zeros(len(label_map.representatives), dtype=bool)
    return (cluster_sizes(label_map, by_samples) < min_size) & np.array(
        [kept_apart_reason(r) is None for r in label_map.representatives], dtype=bool)


def _step(label_map, name):
    """What the merge steps of ``label_map`` recorded as ``name`` (a run's record is a dict,
    the engine's :class:`~vlsr_core.engine.grouping.Steps` an object), or None."""
    steps = label_map.steps or {}
    return steps.get(name) if isinstance(steps, dict) else getattr(steps, name, None)


def merge_limit(label_map):
    """The distance within which merging asked every pair of two clusters' labels to lie
    (None: the paper's mode, or a run that did not record it)."""
    if _step(label_map, "mode") == "paper":
        return None
    return _step(label_map, "max_merge_distance")


def rare_distance_note(label_map):
    """What the distance of :func:`rare_rows` is, beside what merging asked for: a rare
    cluster 0.004 from one label of a large cluster was not merged because other labels of
    that cluster lie far from it."""
    limit = merge_limit(label_map)
    return "between their closest labels" + (
        f"; merging joins two clusters only when all their labels lie within {limit:.3f} of "
        "each other" if limit is not None else "")


def count_rare(state, min_size, by_samples=True):
    """How many :func:`rare_clusters` the reviewed map has; kept with ``state``, as the panel
    asks on every click."""
    key = ("n_rare", min_size, by_samples)
    if key not in state.memo:
        state.memo[key] = int(rare_clusters(state.label_map, min_size, by_samples).sum())
    return state.memo[key]


def rare_rows(state, min_size, by_samples=True, query=""):
    """The :func:`rare_clusters` of the reviewed map, each with the nearest cluster to it
    (labels kept out of the embedding steps are never it), the nearest first: where a curator
    looks for the variants the run missed. Two rare clusters nearest to each other make one
    row. ``query`` as for :func:`cluster_rows`, on a row's own labels, those of the other
    cluster of a pair, and the name and nearest label of its nearest cluster (not every label
    of a large one, which would list most rows). Rows:
    ``cluster``, ``label``, ``canonical``, ``labels``, ``occurrences`` as :func:`cluster_rows`
    gives them, ``nearest`` and ``nearest_cluster`` (the nearest cluster's name and id),
    ``nearest_label`` (its label nearest to one of the row's labels), ``distance`` (their
    cosine distance) and ``pair`` (the nearest cluster is rare too, and this one nearest to
    it: the row stands for both). Kept with ``state`` (:attr:`~vlsr_core.fo.review.ReviewState.memo`)."""
    key = ("rare", min_size, by_samples)
    if key not in state.memo:
        state.memo[key] = _rare_rows(state, rare_clusters(state.label_map, min_size,
                                                             by_samples))
    rows = state.memo[key]
    if query:
        vocabulary, clusters = state.label_map.vocabulary, state.label_map.clusters
        hit = {int(clusters[i]) for i in np.flatnonzero(_containing(vocabulary, query))}
        rows = [r for r in rows if r["cluster"] in hit
                or (r["pair"] and r["nearest_cluster"] in hit)
                or _containing([r["nearest"], r["nearest_label"]], query).any()]
    return rows


def _rare_rows(state, rare):
    label_map = state.label_map
    names = label_map.cluster_names
    clusters = np.asarray(label_map.clusters, dtype=np.int64)
    vocabulary = label_map.vocabulary
    occurrences = cluster_sizes(label_map)
    labels = cluster_sizes(label_map, by_samples=False)
    rows = np.flatnonzero(rare[clusters])
    if state.embeddings is None or not len(rows):
        return []
    among = np.flatnonzero([kept_apart_reason(l) is None for l in vocabulary])
    # (not the cluster the review took a label out of: the curator just said no to that join)
    before = np.asarray(state.clustered.clusters, dtype=np.int64) if state.in_force else None
    nearest, distance = nearest_other_cluster(
        clusters, rows, *_neighbours(state, rows, among, NEIGHBOURS), clustered=before)
    lost = np.flatnonzero(nearest < 0)  # all NEIGHBOURS in its own cluster: ask for more
    if len(lost):
        passed = labels[clusters[rows[lost]]]  # the candidates passed over: its cluster's,
        if before is not None:  # and its cluster's before the review
            passed = passed + np.bincount(before)[before[rows[lost]]]
        k = min(int(passed.max()) + 1, len(among))
        found = nearest_other_cluster(clusters, rows[lost],
                                      *_neighbours(state, rows[lost], among, k, keep=False),
                                      clustered=before)
        nearest[lost], distance[lost] = found
    best = {}  # cluster -> (distance, nearest label) of its closest member
    for i, j, d in zip(rows.tolist(), nearest.tolist(), distance.tolist()):
        c = int(clusters[i])
        if j >= 0 and (c not in best or d < best[c][0]):
            best[c] = (d, j)
    order = sorted(best, key=lambda c: (best[c][0], -occurrences[c], c))
    # two rare clusters nearest to each other are one row (the first: the more used), one join
    target = {c: int(clusters[j]) for c, (_, j) in best.items()}
    listed, shown = [], set()
    for c in order:
        if not (target.get(target[c]) == c and target[c] in shown):
            listed.append(c)
            shown.add(c)
    order = listed
    return [dict(cluster=c, label=label_map.representatives[c], canonical=names[c],
                 labels=int(labels[c]), occurrences=int(occurrences[c]),
                 nearest=names[target[c]], nearest_cluster=target[c],
                 nearest_label=vocabulary[best[c][1]], distance=round(max(best[c][0], 0.0), 3),
                 pair=target.get(target[c]) == c)
            for c in order]


NEIGHBOURS = 16  # nearest labels kept per rare label: more than a rare cluster has, mostly
_NEIGHBOUR_CACHE = {}  # (clustering, k) -> {label: (its nearest labels, their scores)}, the last 2


def _neighbours(state, rows, among, k, keep=True):
    """The ``k`` labels of ``among`` nearest to each of ``rows``, and their scores; with
    ``keep``, kept for the run's clustering, so that a review edit (which makes a new state)
    searches only for labels not asked about before. A search over the whole vocabulary costs
    0.5 s at 10,000 labels, about a minute at 100,000."""
    key = (state.clustering, k)
    cache = _NEIGHBOUR_CACHE.get(key, {}) if keep and state.clustering else {}
    missing = [i for i in rows.tolist() if i not in cache]
    if missing:
        emb = np.asarray(state.embeddings, dtype=np.float32)
        idx, score = top_k_labels(emb[missing], emb[among], min(k, len(among)))
        cache.update(zip(missing, zip(among[idx], score)))
        if keep and state.clustering:
            _NEIGHBOUR_CACHE.pop(key, None)
            while len(_NEIGHBOUR_CACHE) >= 2:
                _NEIGHBOUR_CACHE.pop(next(iter(_NEIGHBOUR_CACHE)))
            _NEIGHBOUR_CACHE[key] = cache
    return (np.stack([cache[i][0] for i in rows.tolist()]),
            np.stack([cache[i][1] for i in rows.tolist()]))


def member_rows(state, cluster, query="", joined=None, longest=80):
    """The members of one cluster (``joined``, one of :data:`JOIN_STEPS`: only those that step
    joined, :func:`joined_by_step`), those containing ``query`` (:func:`_containing`) first, then
    the farthest from its canonical label first: ``label``, ``shown`` (the label on one line,
    one over ``longest`` characters cut, marked if it is the canonical one), ``is_canonical``,
    ``frequency``, ``distance``, ``joined_by`` (the step that put it
    there: :attr:`~vlsr_core.fo.review.ReviewState.joined_by`, with ", kept" once a review
    accepted it), ``clustered_with`` (its canonical label before the review) and ``found``
    (it contains ``query``)."""
    label_map = state.label_map
    vocabulary = label_map.vocabulary
    chosen = np.asarray(label_map.clusters) == cluster
    if joined:
        chosen &= joined_by_step(state, joined)
    members = np.flatnonzero(chosen)
    name = label_map.cluster_names[cluster]  # none of them if renamed so
    distance = np.asarray(label_map.distance_to_canonical)
    miss = ~_containing([vocabulary[i] for i in members], query)
    found = dict(zip(members.tolist(), (~miss).tolist()))
    order = members[np.lexsort((-distance[members], miss))] if len(members) else members
    clustered = state.clustered.canonical
    kept = {e.label for e in state.in_force if e.action == "accept"}
    reasons = [r + (", kept" if l in kept and r != "review" else "")
               for l, r in zip(vocabulary, state.joined_by)]
    return [dict(label=vocabulary[i],
                 shown=one_line(vocabulary[i], longest) + (" (canonical)" if vocabulary[i] == name else ""),
                 is_canonical=vocabulary[i] == name,
                 frequency=int(label_map.frequencies[i]),
                 distance=round(max(float(distance[i]), 0.0), 3),  # not -0.0 from rounding
                 joined_by=reasons[i], clustered_with=clustered.get(vocabulary[i], ""),
                 found=bool(query) and found[i])
            for i in order]

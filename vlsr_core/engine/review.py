"""A curator's review of a run: edits of the label map and decisions on suggestions.

Edits are keyed by label strings, never by cluster ids, which change whenever the vocabulary is
clustered again: the same edits then apply to the new label map (:func:`review_label_map`), and
one that no longer can (its label left the vocabulary) is reported as stale, not dropped.

Label map edits, applied in the order they were made:

- ``accept``: ``label`` belongs with the canonical label ``to`` (kept there, or moved back there
  if a new clustering separates them);
- ``reject``: ``label`` does not belong with ``to``: it is split out if they are together;
- ``split``: ``label`` becomes a cluster of its own;
- ``move``: ``label`` joins the cluster of label ``to``;
- ``rename``: the cluster of ``label`` is called ``to`` (clusters given one name become one, and
  so does a cluster named like a label of another cluster, which the rename joins: a label and
  the name of its cluster always agree; a cluster whose name reads as ``to``, case, punctuation
  and spaces aside, joins it too: an export would carry two categories of one thing).

Decisions on suggestions (``accept_suggestion`` / ``reject_suggestion`` of the vocabulary label
``label`` for some ``samples``, or for some ``label_ids`` of them) are read by
:func:`suggestion_decisions`; the last decision on a sample or label wins.
"""

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..wording import code, count, quoted
from .lexical import ALIKE, by_normal_form, read_form
from .merging import distance_to_canonical, representative_of

MAP_ACTIONS = ("accept", "reject", "split", "move", "rename")
SUGGESTION_ACTIONS = ("accept_suggestion", "reject_suggestion")
ACTIONS = MAP_ACTIONS + SUGGESTION_ACTIONS
NEEDS_TARGET = ("accept", "reject", "move", "rename")  # actions whose ``to`` is required


@dataclass(frozen=True)
class Edit:
    """One review decision, as stored on the run (:meth:`as_record`).

    Attributes:
        id: its number on the run (1, 2, ...), by which it can be undone.
        action: one of :data:`ACTIONS`.
        label: the label the edit is about (for suggestion decisions: the suggested label).
        to: the canonical label (accept, reject), the label to join (move) or the new name
            (rename); None otherwise.
        samples: sample ids a suggestion decision is about.
        label_ids: label ids (of those samples) a suggestion decision is about; empty: the
            decision is about the samples' final label.
        time: when it was made (ISO 8601, UTC).
        undone: when it was undone, or None while it is in force.
    """

    id: int
    action: str
    label: str
    to: str | None = None
    samples: tuple = ()
    label_ids: tuple = ()
    time: str = ""
    undone: str | None = None

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"unknown review action {self.action!r}; one of {list(ACTIONS)}")
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"a review edit needs a label, not {self.label!r}")
        if self.action in NEEDS_TARGET and (not isinstance(self.to, str) or not self.to.strip()):
            raise ValueError(f"{self.action!r} needs a target label (to=...)")
        if self.action in SUGGESTION_ACTIONS and not self.samples:
            raise ValueError(f"{self.action!r} needs the samples it is about")
        if isinstance(self.samples, str) or isinstance(self.label_ids, str):
            raise TypeError("samples and label_ids are lists of ids: one id is [id] (a string "
                            "alone would be read a character at a time)")
        if not isinstance(self.id, int) or isinstance(self.id, bool):
            raise TypeError(f"an edit's id is a whole number, not {self.id!r}")
        object.__setattr__(self, "samples", tuple(self.samples))
        object.__setattr__(self, "label_ids", tuple(self.label_ids))

    def as_record(self):
        """A JSON-serialisable dict (lists for the id tuples)."""
        d = asdict(self)
        d["samples"], d["label_ids"] = list(self.samples), list(self.label_ids)
        return d

    @classmethod
    def from_record(cls, d):
        return cls(**d)

    def describe(self):
        """One line a curator reads: what the edit does."""
        n = len(self.label_ids) or len(self.samples)
        unit = ("label" if self.label_ids else "sample") + ("" if n == 1 else "s")
        label, to = code(self.label), code(self.to or "")
        return {
            "accept": f"keep {label} in {to}",
            "reject": f"take {label} out of {to}",
            "split": f"split {label} out on its own",
            "move": f"move {label} to the cluster of {to}",
            # (to its own label: the cluster had another name, one of its labels or a new one)
            "rename": f"rename the cluster of {label} to {to}" if self.label != self.to else
                      f"make {label} the name of its cluster",
            "accept_suggestion": f"accept suggestion {label} on {n} {unit}",
            "reject_suggestion": f"reject suggestion {label} on {n} {unit}",
        }[self.action]


@dataclass
class Outcome:
    """What one edit did to a label map: ``status`` is ``"applied"`` (it changed the map),
    ``"unchanged"`` (the map already was as it asks) or ``"stale"`` (it no longer applies:
    ``reason`` says why)."""

    edit: Edit
    status: str
    reason: str = ""


def _edit_list(edits):
    """``edits`` as a list of :class:`Edit` objects, read once (a generator read twice is
    empty the second time: its edits were ignored)."""
    edits = None if edits is None or isinstance(edits, Edit) else list(edits)
    if edits is None or not all(isinstance(e, Edit) for e in edits):
        raise TypeError("edits must be a list of Edit objects (Edit.from_record reads a stored "
                        "one)")
    return edits


def active(edits):
    """The edits in force (not undone), in the order they were made."""
    return [e for e in edits if e.undone is None]


def review_label_map(label_map, embeddings, edits):
    """The label map with the map edits among ``edits`` applied, and what each of them did.

    Args:
        label_map: a :class:`~vlsr_core.engine.pipeline.LabelMap` (as clustered, unreviewed).
        embeddings: ndarray (n_labels, dim), rows as ``label_map.vocabulary`` (need not be
            normalised, as for ``build_label_map``): a cluster that loses its representative
            gets a new one by the rule that named it
            (:func:`~vlsr_core.engine.merging.representatives`, with ``label_map.naming``).
        edits: a list of :class:`Edit` objects; undone ones and suggestion decisions are ignored.

    Returns:
        ``(reviewed, outcomes)``: a new :class:`LabelMap` (``dbscan_clusters`` and ``steps`` as
        clustered; ``names`` holds each cluster's canonical label, renamed or not) and one
        :class:`Outcome` per map edit in force.
    """
    from .pipeline import LabelMap, unit_length

    if not isinstance(label_map, LabelMap):
        raise TypeError(f"label_map must be a LabelMap (build_label_map's), not "
                        f"{type(label_map).__name__}")
    vocabulary = list(label_map.vocabulary)
    # (raw rows gave a wrong representative, and distances of -25,705)
    embeddings = unit_length(embeddings, "embeddings")
    if len(embeddings) != len(vocabulary):
        raise ValueError(f"embeddings must have a row per label of label_map.vocabulary "
                         f"({len(vocabulary)}), got {len(embeddings)}")
    edits = _edit_list(edits)
    index = {l: i for i, l in enumerate(vocabulary)}
    cluster = np.asarray(label_map.clusters, dtype=np.int64).copy()
    names = list(label_map.cluster_names)
    rep = {c: index[r] for c, r in enumerate(label_map.representatives)}
    renamed = {}
    outcomes = []
    for edit in active(edits):
        if edit.action not in MAP_ACTIONS:
            continue
        status, reason = _apply(edit, index, cluster, rep, renamed)
        outcomes.append(Outcome(edit, status, reason))
    if not any(o.status == "applied" for o in outcomes):  # (a new map, not one sharing arrays)
        return replace(label_map, names=list(names), clusters=np.array(label_map.clusters),
                       distance_to_canonical=np.array(label_map.distance_to_canonical)), outcomes
    cluster, rep, final_names = _settle(vocabulary, embeddings, label_map.frequencies,
                                        label_map.naming, cluster, rep, renamed)
    return replace(label_map, clusters=cluster, representatives=[vocabulary[r] for r in rep],
                   names=final_names,
                   distance_to_canonical=distance_to_canonical(embeddings, rep, cluster)), outcomes


def _apply(edit, index, cluster, rep, renamed):
    """Apply one map edit in place; returns ``(status, reason)``."""
    if edit.label not in index:
        return "stale", f"`{edit.label}` is no longer in the vocabulary"
    i = index[edit.label]
    if edit.action == "rename":
        c = int(cluster[i])
        if edit.to in index:  # a label of another cluster: the two become one
            other = int(cluster[index[edit.to]])
        else:  # the name of another cluster: likewise, now (so that later edits see one cluster)
            other = next((k for k, n in renamed.items()
                          if n == edit.to and k != c and np.any(cluster == k)), c)
        if other != c:
            renamed.pop(c, None)  # the emptied cluster's name names nothing now
            cluster[cluster == c] = c = other
        renamed[c] = edit.to
        return "applied", ""
    if edit.action == "split":
        if np.count_nonzero(cluster == cluster[i]) == 1:
            return "unchanged", ""
        _new_cluster(i, cluster, rep)
        return "applied", ""
    if edit.to in index:
        target = int(cluster[index[edit.to]])
    else:
        # accept/reject name the canonical label, which a rename may have replaced: the
        # cluster so named now (not through its representative, which an edit may have moved)
        named = [c for c, n in renamed.items() if n == edit.to and np.any(cluster == c)]
        if not named:
            return "stale", f"`{edit.to}` is no longer in the vocabulary"
        target = named[-1]
    together = cluster[i] == target
    if edit.action == "reject":
        if not together:
            return "unchanged", ""
        _new_cluster(i, cluster, rep)
        return "applied", ""
    if together:
        return "unchanged", ""
    cluster[i] = target  # accept, move
    return "applied", ""


def _new_cluster(i, cluster, rep):
    c = max(rep) + 1
    cluster[i] = c
    rep[c] = i


def _settle(vocabulary, embeddings, frequencies, naming, cluster, rep, renamed):
    """After the edits: representatives for clusters that lost theirs, renames, clusters of one
    name joined, ids made 0..k-1 (a cluster keeps its id unless it is one of the highest: those
    take, in order, the ids the edits emptied)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    freq = np.asarray(frequencies)
    ids, sizes = np.unique(cluster, return_counts=True)
    order = np.argsort(cluster, kind="stable")  # one sort, not a scan of the labels per cluster
    members = dict(zip(ids.tolist(), np.split(order, np.cumsum(sizes)[:-1])))
    for c, m in members.items():
        if cluster[rep[c]] != c:
            centroid = emb[m].sum(axis=0, dtype=np.float64)
            centroid = (centroid / max(np.linalg.norm(centroid), 1e-30)).astype(np.float32)
            rep[c] = representative_of(m, emb, freq, vocabulary, centroid, naming)
    index = {l: i for i, l in enumerate(vocabulary)}
    # a name that a later edit took away (its label moved to another cluster) is dropped: a
    # label's canonical label is the name of its own cluster
    name = {c: renamed[c] if c in renamed and cluster[index.get(renamed[c], rep[c])] == c
            else vocabulary[rep[c]] for c in members}
    for c in members:  # renamed to one of its own labels: that label represents it
        if c in renamed and renamed[c] in index and cluster[index[renamed[c]]] == c:
            rep[c] = index[renamed[c]]
    # a name that reads as one an edit gave is that name ("mallet", clustered since, beside a
    # rename to "Mallet"): the two clusters join, as an edit making them would have been refused
    edited = {read_form(renamed[c]): renamed[c] for c in members if name[c] == renamed.get(c)}
    first = {}
    for c in members:  # ids in order: the lowest id of a name keeps the others
        if edited:  # (read_form costs 6.5 us a name)
            name[c] = edited.get(read_form(name[c]), name[c])
        target = first.setdefault(name[c], c)
        if target != c:
            cluster[members[c]] = target
            own = [k for k in (target, c) if vocabulary[rep[k]] == name[c]]
            rep[target] = rep[own[0] if own else target]
    # ids made 0..k-1 again, the fewest changed: each id left empty takes a cluster of an id
    # >= k (not all the ids above it shifted down, which rewrote the cluster of every label
    # after one join and broke a curator's filters on cluster ids)
    kept = np.unique(cluster)
    old_of = np.arange(len(kept))
    holes = np.setdiff1d(old_of, kept)
    old_of[holes] = kept[kept >= len(kept)]
    new_of = np.empty(int(kept[-1]) + 1, dtype=np.int64)
    new_of[old_of] = np.arange(len(kept))
    return (new_of[cluster], np.array([rep[int(c)] for c in old_of], dtype=np.int64),
            [name[int(c)] for c in old_of])


def edits_to_reach(label_map, embeddings, edits, wanted):
    """The map edits which, made after ``edits``, give each label the canonical label ``wanted``
    says: a curator's label map edited in a spreadsheet, turned into review edits (each one
    shown, undoable, and applied to a new clustering like any other).

    Args:
        label_map, embeddings: as for :func:`review_label_map` (as clustered).
        edits: the run's edits so far.
        wanted: dict label -> canonical label; labels it leaves out keep the one they have.

    Returns:
        :class:`Edit` objects numbered after ``edits``: splits, then moves, then renames (none
        if the map already is as wanted).

    Raises:
        ValueError: a label not in the vocabulary. :class:`MapError`: a canonical label that
        is a label which ``wanted`` puts elsewhere (a label and the name of its cluster always
        agree); two canonical labels that read alike (two categories of one thing in an
        export), whether both are in ``wanted`` or one is the name that the labels it leaves
        out keep.
    """
    edits = _edit_list(edits)
    reviewed, _ = review_label_map(label_map, embeddings, edits)
    vocabulary, current = reviewed.vocabulary, reviewed.canonical
    wanted = dict(wanted)  # (a pandas Series too)
    bad = next(((l, n) for l, n in wanted.items() if not isinstance(n, str) or not n.strip()),
               None)
    if bad:
        raise ValueError(f"wanted gives {quoted(bad[0]) if isinstance(bad[0], str) else bad[0]!r} "
                         f"the canonical label {bad[1]!r}: give each a name (a non-blank string)")
    unknown = [l for l in wanted if l not in current]
    if unknown:
        raise ValueError(f"{count(len(unknown), 'label')} not in the vocabulary, e.g. "
                         f"{quoted(unknown[0])}")
    want = {l: wanted.get(l, current[l]) for l in vocabulary}
    problems = _spelling_problems(set(want.values()), wanted)  # all at once: one round of fixes
    clash = [(n, l) for l, n in want.items() if n in want and want[n] != n]
    if clash:
        name, label = clash[0]
        names = list(dict.fromkeys(n for n, _ in clash))
        listed = ", ".join(map(quoted, names[:5])) + (", ..." if len(names) > 5 else "")
        problems.append((f"{quoted(label)} is to be in the cluster named {quoted(name)}, but "
                         f"the label {quoted(name)} is to be in {quoted(want[name])}: a cluster "
                         "named like a label must hold that label, so name it otherwise or put "
                         f"{quoted(name)} in it "
                         f"({count(len(names), 'name')} of a label placed elsewhere, given to "
                         f"{count(len(clash), 'label')}: {listed})",
                         list(dict.fromkeys(x for n, l in clash for x in (l, n) if x in wanted))))
    if problems:
        raise MapError(problems)
    index = {l: i for i, l in enumerate(vocabulary)}
    cluster = np.asarray(reviewed.clusters)
    freq = np.asarray(reviewed.frequencies)
    groups = {}
    for i, l in enumerate(vocabulary):
        groups.setdefault(want[l], []).append(i)
    anchor, homes = {}, {}
    for name, members in groups.items():
        if name in index:  # named after one of its labels: that label anchors it
            a = index[name]
        else:  # where most of its labels are, the most frequent of them there
            ids, counts = np.unique(cluster[members], return_counts=True)
            there = [m for m in members if cluster[m] == ids[np.argmax(counts)]]
            a = max(there, key=lambda m: (freq[m], -m))
        anchor[name] = a
        homes.setdefault(int(cluster[a]), []).append(name)
    split = set()
    current_name = reviewed.cluster_names
    for home, names in homes.items():  # one group keeps a cluster: the one with most labels
        # there, else the one already so named (no rename), else the first
        keeper = max(names, key=lambda n: (np.count_nonzero(cluster[groups[n]] == home),
                                           n == current_name[home], -anchor[n]))
        split.update(n for n in names if n != keeper)
    made = []
    for name in sorted(split, key=anchor.get):
        made.append(("split", vocabulary[anchor[name]], None))
    for name, members in groups.items():
        a = anchor[name]
        made += [("move", vocabulary[m], vocabulary[a]) for m in members
                 if m != a and (name in split or cluster[m] != cluster[a])]
    first = max((e.id for e in edits), default=0) + 1
    new = [Edit(first + k, *e) for k, e in enumerate(made)]
    trial, _ = review_label_map(label_map, embeddings, list(edits) + new)
    named = trial.canonical
    renames = {name: vocabulary[anchor[name]] for name in groups if named[vocabulary[anchor[name]]] != name}
    # a rename to the name another cluster has now would join the two: that one is renamed first
    taken = {named[vocabulary[anchor[n]]]: n for n in renames}
    order = []
    while renames:
        free = [n for n in renames if taken.get(n) not in renames]
        if not free:
            raise ValueError(f"clusters swap names ({', '.join(map(repr, sorted(renames)[:4]))}): "
                             "rename one of them in one file, the rest in another")
        for n in sorted(free, key=lambda n: anchor[n]):
            order.append(("rename", renames.pop(n), n))
    new += [Edit(first + len(new) + k, *e) for k, e in enumerate(order)]
    final, _ = review_label_map(label_map, embeddings, list(edits) + new)
    wrong = [l for l, n in final.canonical.items() if n != want[l]]
    if wrong:  # a defect of this function, never of the input: say so rather than store it
        raise RuntimeError(f"the edits would leave {count(len(wrong), 'label')} apart from the "
                           f"wanted map, e.g. {quoted(wrong[0])}")
    return new


class MapError(ValueError):
    """A wanted label map that no edits can reach; ``problems``: each what is wrong, and the
    labels of the map at fault."""

    def __init__(self, problems):
        super().__init__("; ".join(what for what, _ in problems))
        self.problems = problems


def _spelling_problems(names, wanted):
    """What is wrong with canonical ``names`` of which two read alike (equal normal forms:
    :data:`ALIKE`) and the curator wrote one (in ``wanted``), the others being the names that
    labels the map leaves out keep: (what, the labels at fault) per group. Names alike that the
    map did not write (a review split "Drill" from "drill") are the review's, not the map's:
    left alone."""
    given = set(wanted.values())
    problems = []
    for alike in by_normal_form(sorted(names)).values():
        if len(alike) < 2 or not any(n in given for n in alike):
            continue
        at_fault = [l for l, n in wanted.items() if n in alike]
        kept = [n for n in alike if n not in given]
        if not kept:
            problems.append((f"The canonical labels {', '.join(map(quoted, alike))} read alike "
                             f"({ALIKE}): write them one way", at_fault))
            continue
        written = next(n for n in alike if n in given)
        problems.append((f"The canonical label {quoted(written)} reads as {quoted(kept[0])}, the "
                         f"name of a cluster whose labels the map leaves out ({ALIKE}): write "
                         f"{quoted(kept[0])} to join that cluster, or list its labels too",
                         at_fault))
    return problems


def nearest_other_cluster(clusters, rows, candidates, scores, clustered=None):
    """For each label of ``rows``, the nearest label in another cluster: where a rare label left
    alone most likely belongs, if anywhere.

    Args:
        clusters: int array (n_labels,): each label's cluster.
        rows: int array of the labels asked about.
        candidates, scores: arrays (len(rows), k): each row's nearest labels, the nearest first,
            and their cosine similarities, as :func:`~vlsr_core.engine.similarity.top_k_labels`
            gives them (exact scores: the outcome is the same on every machine).
        clustered: optional int array (n_labels,): each label's cluster before the review. A
            label that shared the row's cluster there and no longer does was taken out of it by
            the review, so it is not offered back.

    Returns:
        ``(nearest, distance)``: int64 and float64 arrays of shape (len(rows),), the first
        candidate outside the row's cluster (-1 if none is: ask with a larger k) and its cosine
        distance (inf if none).
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    nearest, distance = np.full(len(rows), -1), np.full(len(rows), np.inf)
    candidates = np.asarray(candidates, dtype=np.int64)
    if not candidates.size:  # (no row, or k = 0)
        return nearest, distance
    candidates = candidates.reshape(len(rows), -1)
    # (-1: no neighbour, as faiss pads; it read as the last label)
    outside = (candidates >= 0) & (clusters[candidates] != clusters[rows][:, None])
    if clustered is not None:
        clustered = np.asarray(clustered, dtype=np.int64)
        outside &= clustered[candidates] != clustered[rows][:, None]
    first, found = outside.argmax(axis=1), outside.any(axis=1)
    at = np.arange(len(rows))
    nearest[found] = candidates[at, first][found]
    distance[found] = 1.0 - np.asarray(scores, dtype=np.float64).reshape(len(rows), -1)[
        at, first][found]
    return nearest, distance


def suggestion_decisions(edits, vocabulary=None):
    """The decisions on suggestions in force: the last one per sample and per label wins.

    Args:
        edits: :class:`Edit` objects (undone ones and map edits are ignored).
        vocabulary: if given, decisions on labels outside it are left out (stale).

    Returns:
        ``(by_sample, by_label)``: a dict from a sample id to its deciding :class:`Edit`, and
        one from a label id to the decisions on it, each with the set of its samples, to read
        with :func:`label_decision` (one label id may be on several samples: a sample cloned
        or merged from another keeps its labels' ids).
    """
    known = None if vocabulary is None else set(vocabulary)
    by_sample, by_label = {}, {}
    for edit in active(edits):
        if edit.action not in SUGGESTION_ACTIONS or (known is not None and edit.label not in known):
            continue
        if edit.label_ids:
            decision = (frozenset(edit.samples), edit)
            for label_id in edit.label_ids:
                by_label.setdefault(label_id, []).append(decision)
        else:
            by_sample.update(dict.fromkeys(edit.samples, edit))
    return by_sample, by_label


def label_decision(by_label, sample_id, label_id):
    """The decision in force on label ``label_id`` of sample ``sample_id`` (``by_label`` from
    :func:`suggestion_decisions`), or None."""
    for samples, edit in reversed(by_label.get(label_id, ())):
        if sample_id in samples:
            return edit
    return None

"""A curator's review of a run, stored on the run: edits of the label map, decisions on
suggestions, undo, and Apply (:func:`apply_review`), which writes the reviewed result.

Edits live in the run's config (``config.review``, a list of :class:`~vlsr_core.engine.review.Edit`
records), so they survive restarts and travel with the run; they are keyed by label strings and
sample or label ids, so clustering again never loses them (:func:`review_state` reports those
that no longer apply). ``config.applied`` records which edits the run's fields show: the ones in
force at the last Apply or clustering.
"""

import codecs
import csv
import io
import json
import numbers
import os
import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property

from ..csv_text import not_text
from ..engine.defaults import DEFAULT_KEY
from ..engine.grouping import join_reasons
from ..engine.lexical import (ALIKE, INVISIBLE, by_normal_form, normal_form, read_form,
                              spelling_preference)
from ..engine.merging import distance_to_canonical
from ..engine.pipeline import LabelMap, unit_length
from ..engine.review import (
    MAP_ACTIONS,
    SUGGESTION_ACTIONS,
    Edit,
    MapError,
    Outcome,
    active,
    edits_to_reach,
    review_label_map,
)
from ..wording import SHORT, ZWSP, count, one_line, plain, quoted
from .chunks import sample_ids
from .labels import USABLE, LabelFieldError, first_match, holds, label_path, usable
from .lease import collection, holds_run
from .runs import (
    OUTDATED,
    STAGE_NAMES,
    VLSRRunConfig,
    load_results,
    outdated_note,
    reload_run,
    run_collection,
    sample_fields,
    sharded_stages,
    stage_stopped,
    stored_review,
    update_run_doc,
)


CLUSTER_FIRST = "cluster and merge first (`vlsr run`, or VLSR 3 in the App)"  # what to do first


def cluster_first(config):
    """What a run without clusters needs first: :data:`CLUSTER_FIRST`, or the scores before
    them (the panel sent a run only embedded to VLSR 3, which skips its scores and views)."""
    if (config.stages or {}).get("score") == "complete":
        return CLUSTER_FIRST
    return ("score the labels, then cluster and merge (`vlsr run`, or VLSR 2 then VLSR 3 in the "
            "App)")


class ReviewError(ValueError):
    """An edit that cannot be made as asked; the message says why, ``about`` which argument it
    concerns (``"label"`` or ``"to"``), so that a form marks that field."""

    def __init__(self, message, about="label"):
        super().__init__(message)
        self.about = about


class ReviewChanged(ReviewError):
    """The run's review changed between the read an edit was made from and its write (an
    edit of another window, process or click); nothing was written."""


@dataclass
class ReviewState:
    """Where a run's review stands.

    Attributes:
        edits: every edit made, undone ones included, oldest first.
        label_map: the clustered label map with the edits in force applied.
        outcomes: what each map edit in force did (:class:`~vlsr_core.engine.review.Outcome`).
        applied: ids of the edits the run's fields show (None: nothing applied since the
            edits were first made, or a run older than reviews).
        applied_time: when they were applied.
        applied_partly: an Apply of a part of the run wrote the edits then in force on some
            samples since: the fields show :attr:`applied` only on the others.
        apply_stopped: the last Apply has not finished (stopped part-way, or running): the
            fields are partly written.
        edited_labels: the labels whose canonical label the edits changed.
        clustered: the label map as clustered, before the review.
        embeddings: the label embeddings the clustering used, rows as the vocabulary.
        memo: what was computed from this state, kept with it (the panel's rare clusters).
        clustering: what identifies the clustering and the embeddings the state was made from
            (the same after review edits), for what can be kept across edits; None: unknown.
    """

    edits: list
    label_map: LabelMap
    outcomes: list
    edited_labels: set = field(default_factory=set)
    clustered: LabelMap | None = None
    applied: list | None = None
    applied_time: str | None = None
    embeddings: object = None
    memo: dict = field(default_factory=dict, repr=False, compare=False)
    clustering: tuple | None = None
    applied_partly: bool = False
    apply_stopped: bool = False

    @property
    def in_force(self):
        return active(self.edits)

    @cached_property
    def joined_by(self):
        """Per label of the vocabulary, the step that put it with its cluster's representative
        label (:func:`~vlsr_core.engine.grouping.join_reasons`), or "review" where an edit parted
        it from that label, or gave its cluster the name of a label of another. A rename to a
        member makes that member the one the steps are told against (``Gloves`` joined
        ``glove`` by spelling, and so did ``Glove``, the name before). A run that used image
        evidence before its joins were recorded says "DBSCAN or images" where it cannot tell
        the two apart."""
        clustered, reviewed = self.clustered, self.label_map
        steps = clustered.steps or {}
        evidence = steps.get("image_evidence") or {}
        after = dict(zip(reviewed.vocabulary, reviewed.clusters))
        before = dict(zip(clustered.vocabulary, clustered.clusters))
        named = [reviewed.representatives[after[r]] for r in clustered.representatives]
        # per cluster of the clustering: its name now names another's labels (a join)
        joined = [n in before and before[n] != c for c, n in enumerate(named)]
        representatives = [n if n in before and not joined[c] else r
                           for c, (n, r) in enumerate(zip(named, clustered.representatives))]
        reasons = join_reasons(clustered.vocabulary, steps.get("lexical_groups", ()),
                               clustered.dbscan_clusters, clustered.clusters,
                               representatives, evidence.get("joins") or ())
        unknown = bool(evidence) and not evidence.get("not used") and "joins" not in evidence
        return ["review" if joined[c] or after[label] != after[clustered.representatives[c]]
                else "DBSCAN or images" if unknown and r == "DBSCAN" else r
                for label, c, r in zip(clustered.vocabulary, clustered.clusters, reasons)]

    @property
    def pending(self):
        """Whether the fields differ from the edits in force: Apply to write them."""
        return (self.applied_partly or self.apply_stopped
                or [e.id for e in self.in_force] != list(self.applied or []))

    @property
    def stale(self):
        """The edits in force that no longer apply: map edits, by their outcome, and suggestion
        decisions on a label that has left the vocabulary."""
        known = set(self.label_map.vocabulary)
        return [o for o in self.outcomes if o.status == "stale"] + [
            Outcome(e, "stale", f"`{e.label}` is no longer in the vocabulary")
            for e in self.in_force if e.action in SUGGESTION_ACTIONS and e.label not in known]

    def decisions_in_effect(self, dataset, ids=None):
        """How many suggestion decisions (of those in force, or of edits ``ids``) reach a
        sample: their label still in the vocabulary, one of their samples still there."""
        known = set(self.label_map.vocabulary)
        decisions = [e for e in self.edits if e.action in SUGGESTION_ACTIONS and e.label in known
                     and (e.id in ids if ids is not None else not e.undone)]
        there = _present(dataset, [i for e in decisions for i in e.samples])
        return sum(any(i in there for i in e.samples) for e in decisions)

    def summary(self):
        """One paragraph of Markdown."""
        if not self.edits:
            return "**Review:** no edits yet"
        n, undone = len(self.in_force), len(self.edits) - len(self.in_force)
        text = f"**Review:** {count(n, 'edit')} in force" + (f" ({undone} undone)" if undone else "")
        if self.applied is not None:
            text += f"; the fields were last written on {shown_time(self.applied_time)}"
        if self.apply_stopped:
            text += ("; **the last Apply has not finished** (it stopped part-way, or runs now): "
                     "*Apply* writes the fields")
        else:
            text += ("; **not applied yet**: *Apply* writes the edits to the fields"
                     if self.pending else "; all applied")
        if self.applied_partly:
            text += " (an Apply of a part of the run wrote only its samples)"
        if self.stale:
            text += ("; no longer apply after clustering again: "
                     + "; ".join(f"#{o.edit.id} {o.edit.describe()} ({o.reason})" for o in self.stale))
        return text


def _present(dataset, ids, page=10_000):
    """The sample ``ids`` still in ``dataset``: one query a page of them (a query per decision
    took seconds for thousands of decisions, at each render of a form; all ids in one query
    may pass MongoDB's 16 MB)."""
    ids = list(dict.fromkeys(ids))
    return {i for start in range(0, len(ids), page)
            for i in dataset.select(ids[start:start + page]).values("id")}


def export_note(dataset, key=DEFAULT_KEY, results=None, apply="Apply"):
    """One sentence on which review edits an export of run ``key`` contains (``results``: the
    run's, if already loaded; ``apply``: what writes pending edits, the App's button or the
    command)."""
    state = review_state(dataset, key, results)
    if state.applied_partly:  # (the export refuses the run's mixed fields)
        return (f"An Apply of a part of the run wrote the review on its samples only: to export "
                f"the run, {apply[0].lower()}{apply[1:]} on the whole run first.")
    shown = set(state.applied or [])
    # counted as Apply counts them: the map edits that still apply after a new clustering (of
    # those applied: the edits in force, unless some were made or undone since)
    applied = review_state(dataset, key, results, applied_only=True) if state.pending else state
    n_map = sum(o.status != "stale" for o in applied.outcomes) if shown else 0
    n_decisions = state.decisions_in_effect(dataset, shown)
    what = " and ".join([*([count(n_map, "label map edit")] if n_map else []),
                         *([count(n_decisions, "suggestion decision")] if n_decisions else [])])
    text = ("The label map as clustered (no review edits)." if not what else
            f"The label map {'with' if n_map else 'as clustered, with'} the {what} applied on "
            f"{shown_time(state.applied_time)}.")
    if state.pending:
        text += f" Edits made or undone since are not in it: {apply} first to include them."
    return text


def import_summary(made):
    """``made`` of :func:`import_label_map` in words: ``3 edits (1 split, 2 moves)``."""
    kinds = Counter(e.action for e in made)
    counts = ", ".join(count(kinds[k], k) for k in ("split", "move", "rename") if kinds[k])
    return f"{count(len(made), 'edit')} ({counts})"


@dataclass
class ApplyReport:
    """What :func:`apply_review` wrote."""

    n_samples: int = 0
    n_map_edits: int = 0
    n_decisions: int = 0
    stale: list = field(default_factory=list)
    copy_to: str | None = None
    outdated_copies: list = field(default_factory=list)
    n_left: int = 0  # samples of the run not written (an Apply of a part of it)
    n_changed: int = 0  # samples whose fields changed (the others already were so)
    n_renumbered: int = 0  # of them, those whose labels' cluster ids alone changed
    n_unscored: int = 0  # labels changed by hand or given since scoring (their scores: not theirs)
    left_behind: bool = True  # the samples left show other edits (the review: not applied)

    def summary(self):
        text = (f"applied {count(self.n_map_edits, 'label map edit')} and "
                f"{count(self.n_decisions, 'suggestion decision')} to "
                f"{count(self.n_samples, 'sample')}"
                + f" ({self.n_changed:,} changed"
                + (f", {self.n_renumbered:,} of them in their labels' cluster ids alone"
                   if self.n_renumbered else "") + ")")
        if self.n_left and self.left_behind:
            text += (f"; the run's other {count(self.n_left, 'sample')} "
                     f"{'keeps its' if self.n_left == 1 else 'keep their'} earlier labels, and "
                     "the review reads as not applied, until an Apply of the whole run")
        elif self.n_left:  # (its last whole Apply wrote these edits: they show them already)
            text += (f"; the run's other {count(self.n_left, 'sample')} "
                     f"{'was' if self.n_left == 1 else 'were'} left as "
                     f"{'it was' if self.n_left == 1 else 'they were'}, with these edits applied "
                     "already")
        if self.copy_to:
            text += (f"; final labels also copied to {self.copy_to!r}, on "
                     + (f"the {count(self.n_samples, 'sample')} applied only" if self.n_left
                        else "every sample"))
        text += "".join(f"; {copy_note(name, n)}" for name, n in self.outdated_copies)
        if self.n_unscored:
            text += (f"; {count(self.n_unscored, 'label')} changed by hand or given since the "
                     "labels were scored carry the score of another label or none: score "
                     "again (VLSR 2, or vlsr run), which the export waits for")
        if self.stale:
            n = len(self.stale)
            text += (f"; {count(n, 'edit')} no longer {'applies' if n == 1 else 'apply'} (see the "
                     "summary)")
        return text


def edits_of(config):
    """The :class:`Edit` objects stored in a run config."""
    return [Edit.from_record(r) for r in (getattr(config, "review", None) or [])]


def clustered_label_map(dataset, key, results=None):
    """The run's label map as clustered (before the review), with the label embeddings its
    steps used; raises :class:`ReviewError` before the first clustering."""
    config = _config(dataset, key)
    results = results or load_results(dataset, key)
    if results is None or not results.vocabulary:  # (None: registered, stopped before a write)
        raise ReviewError(f"Run {key!r} has no clusters yet: {cluster_first(config)}")
    table = "merge_embeddings" if config.label_model else "label_embeddings"
    try:
        embeddings = results.embeddings_of(results.vocabulary, table)
    except KeyError:  # embedded again with another model since the clustering
        raise ReviewError(f"The labels of run {key!r} were embedded again since they were "
                          f"clustered: {CLUSTER_FIRST}") from None
    label_map = LabelMap(
        vocabulary=list(results.vocabulary), frequencies=results.frequencies,
        dbscan_clusters=results.dbscan_clusters, clusters=results.clusters,
        representatives=list(results.representatives),
        distance_to_canonical=_distances(results, embeddings),
        steps=dict(results.merge_steps or {}, lexical_groups=results.lexical_groups),
        naming=_naming(results))
    return label_map, embeddings


def _distances(results, embeddings):
    """Each label's distance to its canonical label; for a run clustered before they were
    recorded, computed as clustering computes them (their export listed no label, and the
    review's listing failed on them)."""
    if len(results.distance_to_canonical) == len(results.vocabulary):
        return results.distance_to_canonical
    index = {l: i for i, l in enumerate(results.vocabulary)}
    return distance_to_canonical(unit_length(embeddings, "label embeddings"),
                                 [index[r] for r in results.representatives], results.clusters)


def _naming(results):
    """The naming rank of the run's vocabulary (None in the paper's mode); for a run clustered
    before it was recorded, computed as the recommended mode computes it."""
    if len(results.naming) == len(results.vocabulary):
        return results.naming
    if (results.merge_steps or {}).get("mode", "paper") == "paper":
        return None
    return spelling_preference(results.vocabulary, results.frequencies,
                               results.unknown_words_of(results.vocabulary))


def after_undo(dataset, key, undone, apply="Apply"):
    """What undoing the edits ``undone`` leaves to do: write the change with ``apply`` (the
    App's button, or the command), or nothing when the fields never showed them; and when
    later edits keep the label map as it was, which."""
    applied = getattr(_config(dataset, key), "applied", None) or {}
    if applied.get("partly") or {e.id for e in undone} & set(applied.get("edits", [])):
        text = f"{apply} writes the change to the fields"
    else:
        text = f"nothing to write: the fields never showed {'it' if len(undone) == 1 else 'them'}"
    keeping = _kept_by_later(dataset, key, undone)
    if keeping:  # (audit: "undid the move", the label still in the cluster a rename joined)
        text += ("; the label map stays as it was all the same: a later edit does the same ("
                 + "; ".join(f"#{e.id} {plain(e.describe())}" for e in keeping[:3])
                 + ("; ..." if len(keeping) > 3 else "") + ")")
    return text


def _kept_by_later(dataset, key, undone):
    """The edits in force made after the first of ``undone`` if those changed the label map and
    it is the same without them (a rename to a label joins it again: the move of it undone),
    else []."""
    ids = {e.id for e in undone}
    edits = edits_of(_config(dataset, key))
    label_map, emb = clustered_label_map(dataset, key)
    redone = [replace(e, undone=None) if e.id in ids else e for e in edits]
    before, outcomes = review_label_map(label_map, emb, redone)
    if not any(o.edit.id in ids and o.status == "applied" for o in outcomes):
        return []
    if before.canonical != review_label_map(label_map, emb, edits)[0].canonical:
        return []
    return [e for e in active(edits) if e.id > min(ids) and e.action in MAP_ACTIONS]


def review_state(dataset, key=DEFAULT_KEY, results=None, applied_only=False, edit_ids=None):
    """The run's :class:`ReviewState`; ``applied_only`` reviews the label map with the edits
    the fields show instead of those in force (what an export writes); ``edit_ids``, with
    those edits alone, in force (the shards of one clustering share the edits it began with)."""
    if results is None:  # (a stage passes the results of the run it holds, as it holds it)
        reload_run(dataset, key)  # an edit, undo or Apply of another process (the App)
    config = _config(dataset, key)
    applied = getattr(config, "applied", None) or {}
    edits = edits_of(config)
    if edit_ids is not None:
        wanted = set(edit_ids)
        edits = [replace(e, undone=None) for e in edits if e.id in wanted]
    label_map, emb = clustered_label_map(dataset, key, results)
    use = applied_edits(edits, applied.get("edits")) if applied_only else edits
    reviewed, outcomes = review_label_map(label_map, emb, use)
    before, after = label_map.canonical, reviewed.canonical
    edited = {l for l in before if before[l] != after[l]}
    return ReviewState(edits, reviewed, outcomes, edited, label_map, applied.get("edits"),
                       applied.get("time"), emb, clustering=_clustering_stamp(dataset, key, config),
                       applied_partly=bool(applied.get("partly")),
                       apply_stopped=stage_stopped(config, "apply"))


def applied_edits(edits, applied):
    """The ``edits`` the run's fields show (ids ``applied``, None: none), as in force: one
    undone since is in the fields still, until the next Apply."""
    shown = set(applied or [])
    return [replace(e, undone=None) for e in edits if e.id in shown]


_CACHE = {}  # (dataset, key, what the state depends on) -> ReviewState, the last few
_CACHE_SIZE = 4


def cached_review_state(dataset, key=DEFAULT_KEY):
    """:func:`review_state`, kept while the run's edits, clusters and models stay the same: a
    panel re-renders on every click, and a run's results hold every label embedding."""
    config = _config(dataset, key)
    stamp = _clustering_stamp(dataset, key, config) + (
        json.dumps(getattr(config, "review", None) or []),
        json.dumps(getattr(config, "applied", None)))
    if stamp not in _CACHE:
        state = review_state(dataset, key)
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[stamp] = state
    return _CACHE[stamp]


def _clustering_stamp(dataset, key, config):
    """What changes when the run's labels are embedded or clustered again (not by its review)."""
    return (dataset.name, key, json.dumps(config.stages or {}), config.model_fingerprint,
            config.label_model)


def add_edit(dataset, key, action, label, to=None, samples=(), label_ids=(), *, dry_run=False,
             state=None):
    """Record one review edit on run ``key`` and return it (the fields change on Apply).

    Args:
        dataset: the dataset of the run.
        key: the run key.
        action: one of :data:`~vlsr_core.engine.review.ACTIONS`.
        label: the label the edit is about; for map edits a label of the vocabulary or the
            canonical label of a cluster; for suggestion decisions the suggested label.
        to: accept / reject: the canonical label (default: the label's current one); move:
            a label of the cluster to join; rename: the new name.
        samples, label_ids: the samples (and, optionally, their labels) a suggestion decision
            is about.
        dry_run: only check the edit (a form does, before Execute) and return it unsaved.
        state: the run's :class:`ReviewState`, if already computed.

    Raises:
        ReviewError: the edit does not fit the run (unknown label, nothing to change...).
    """
    samples, label_ids = _check_types(label, to, samples, label_ids)
    if state is None:  # (one given was read in this request)
        reload_run(dataset, key)
    state = state or review_state(dataset, key)
    samples = list(dict.fromkeys(samples))  # a sample given twice (a view and its id) counts once
    canonical = state.label_map.canonical
    names = state.label_map.cluster_names
    vocabulary = set(canonical)
    if action in MAP_ACTIONS:
        label = _as_written(label, state)
        label = _member(label, vocabulary, state.label_map, memo=state.memo)
        current = canonical[label]
        if action in ("accept", "reject"):
            to = current if to is None else _as_written(to, state)
            if to == label:
                taken = next((e for e in reversed(state.in_force) if e.label == label
                              and e.action in ("reject", "split")), None)
                if action == "reject" and taken is not None:  # a repeat
                    raise ReviewError(f"Edit #{taken.id} already took {quoted(label)} out of its "
                                      f"cluster: {plain(taken.describe())}")
                if taken is not None:  # an accept after a take-out, made by mistake
                    raise ReviewError(f"{quoted(label)} is a cluster of its own since edit "
                                      f"#{taken.id} ({plain(taken.describe())}): undo "
                                      "that edit to put it back, or name the cluster to keep it in")
                raise ReviewError(f"{quoted(label)} is the canonical label of its cluster; rename "
                                  "the cluster or move another label instead")
            if to not in names:
                named = state.label_map.canonical.get(to)  # (a label of a cluster: its name)
                raise ReviewError(f"{quoted(to)} is not a canonical label of run {key!r}" + (
                    f": it is a label of the cluster named {quoted(named)}; give that name"
                    if named is not None else ""), "to")
        elif action == "move":
            if to is None:
                raise ReviewError(f"Name the label whose cluster {quoted(label)} moves to "
                                  "(to=...)", "to")
            target = _member(_as_written(to, state), vocabulary, state.label_map, about="to",
                             memo=state.memo)
            if canonical[target] == current:  # (by the clustering, or an edit: named)
                by = next((e for e in reversed(state.in_force) if e.label == label
                           and e.action in ("move", "accept")
                           and canonical.get(e.to, e.to) == current), None)
                raise ReviewError(f"{quoted(label)} is already in the cluster of "
                                  f"{quoted(current)}" + (
                                      f" (edit #{by.id}: {plain(by.describe())})"
                                      if by is not None else ""), "to")
            to = target
        elif action == "split" and list(canonical.values()).count(current) == 1:
            raise ReviewError(f"{quoted(label)} is already a cluster of its own")
        if action in ("reject", "split") and label != current:  # a cluster named ``label``
            twin = _reads_as(label, state.label_map, state.memo,
                             unless=lambda s: s == label or s not in names)
            if twin is not None:
                raise ReviewError(
                    f"On its own, {quoted(label)} would be a cluster beside {quoted(twin)}, "
                    f"which reads alike ({ALIKE}): an export would carry both. "
                    f"Rename the cluster {quoted(twin)} first, or move "
                    f"{quoted(label)} to another cluster")
        elif action == "rename":
            # a name of the run as it is ("␣gizmo", the panel's join to its nearest), else as typed
            to = to if to in vocabulary or to in names else _as_written((to or "").strip(), state)
            if not to:
                raise ReviewError("Give the new name of the cluster", "to")
            if to == current:
                raise ReviewError(f"The cluster is already called {quoted(to)}", "to")
            if _unprintable(to) and to not in vocabulary and to not in names:
                raise ReviewError("A name cannot hold a line break, a control character or an "
                                  "invisible one (a zero-width space)", "to")
            # a new name must not read as a label or name of another cluster; a label or name
            # of the run joins its cluster, as asked, and must not read as another cluster's
            # name (that cluster would join too, unasked)
            known, joined = to in vocabulary or to in names, canonical.get(to, to)
            twin = _reads_as(to, state.label_map, state.memo, unless=lambda s: (
                canonical.get(s, s) in (current, joined) or (known and s not in names)))
            if twin is not None:
                raise ReviewError(
                    f"{quoted(to)} reads as {quoted(twin)} of the cluster "
                    f"{quoted(canonical.get(twin, twin))} ({ALIKE}): rename to "
                    f"{quoted(twin)} to join that cluster, or choose another name", "to")
    elif action in SUGGESTION_ACTIONS:
        if label not in vocabulary:
            raise ReviewError(f"{quoted(label)} is not in the vocabulary of run {key!r}")
        if not samples:
            raise ReviewError("Select the samples or labels the decision is about")
        _check_samples(dataset, samples)
        if not label_ids:  # a decision on final labels: only samples with suggestions have one
            seen = set(dataset.select(samples).exists(sample_fields(key)["embedding"])
                       .values("id"))
            if not seen:
                unreadable = len(dataset.select(samples).exists(sample_fields(key)["error"]))
                why = ("an unreadable image" if unreadable == len(samples) else
                       "not embedded by the run: outside the view it was made on, or added since"
                       if not unreadable else "unreadable images, or not embedded by the run")
                raise ReviewError(
                    f"The sample has no image embedding ({why}), so no suggestions"
                    if len(samples) == 1 else f"None of the {len(samples)} samples has an image "
                    f"embedding ({why}), so none has suggestions")
            samples = [s for s in samples if s in seen]  # (a view's unreadable images: left out)
    try:
        edit = Edit(max((e.id for e in state.edits), default=0) + 1, action, label, to,
                    tuple(samples), tuple(label_ids), time=_now())
    except ValueError as e:
        raise ReviewError(str(e)) from None
    if action == "split" and label == current:  # (a take-out of a canonical label is refused)
        _check_rest_named_apart(state, edit)
    # the latest edit in force about the same label (and some of the same samples) asking the
    # same: a repeat would change nothing (after an edit that undid it, even for one of the
    # samples, it is a change again)
    last = next((e for e in reversed(state.in_force) if e.label == label
                 and (e.action in MAP_ACTIONS) == (action in MAP_ACTIONS)
                 and (not edit.samples or set(e.samples) & set(edit.samples))), None)
    if last is not None and (last.action, last.to, set(last.samples), set(last.label_ids)) == (
            action, to, set(edit.samples), set(edit.label_ids)):
        raise ReviewError(f"Edit #{last.id} already does this: {plain(edit.describe())}")
    if dry_run:
        return edit
    _save_review(dataset, key, state.edits, [*state.edits, edit])
    return edit


def _check_types(label, to, samples, label_ids):
    """``samples`` and ``label_ids`` as lists, after refusing arguments of the wrong type with
    what they should be (``samples="5f3..."`` was read as one id a character, ``to=5`` failed
    inside a string method)."""
    if not isinstance(label, str):
        raise ReviewError(f"The label is a string, not {label!r}")
    if to is not None and not isinstance(to, str):
        raise ReviewError(f"'to' is a label or a name, a string, not {to!r}", "to")
    lists = []
    for name, ids in (("samples", samples), ("label_ids", label_ids)):
        ids = ids if isinstance(ids, str) else list(ids)
        if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
            raise ReviewError(f"{name!r} is a list of ids, each a string: {name}=[...], not "
                              f"{ids!r}"[:200])
        lists.append(ids)
    return lists


def _edit_number(edit_id):
    """``edit_id`` as an int, or a :class:`ReviewError` saying what it should be."""
    if isinstance(edit_id, bool) or not isinstance(edit_id, numbers.Integral):
        raise ReviewError(f"An edit is given by its number, an int (3 for #3), not {edit_id!r}")
    return int(edit_id)


def add_suggestion_decisions(dataset, key, decision, groups, label_ids=None, *, dry_run=False,
                             state=None):
    """Record one suggestion decision per suggested label of ``groups`` (label -> the sample
    ids it is decided for; ``label_ids``: label id -> sample id, if labels were chosen) and
    return them, in one write: all are recorded or, if one does not fit, none."""
    if state is None:
        reload_run(dataset, key)
        state = review_state(dataset, key)
    label_ids = label_ids or {}
    first = max((e.id for e in state.edits), default=0) + 1
    edits = []
    for i, (label, ids) in enumerate(groups.items()):
        members = set(ids)
        chosen = [l for l, s in label_ids.items() if s in members]
        edit = add_edit(dataset, key, decision, label, samples=ids, label_ids=chosen,
                        dry_run=True, state=state)
        edits.append(replace(edit, id=first + i))
    if edits and not dry_run:
        _save_review(dataset, key, state.edits, [*state.edits, *edits])
    return edits


def left_out(samples, *edits):
    """What a suggestion decision on ``samples`` left out, in words ("" if none): the samples
    without an image embedding (unreadable images, or samples the run did not embed: outside
    the view it was made on, or added since), which have no suggestions."""
    kept = {s for e in edits for s in e.samples}
    n = len(set(samples) - kept) if all(not e.label_ids for e in edits) else 0
    return (f"; {count(n, 'sample')} without an image embedding (an unreadable image, or one "
            f"the run did not embed) {'is' if n == 1 else 'are'} left out" if n else "")


def not_suggested(dataset, key, edit):
    """A suggestion decision's samples that were never suggested its label, in words ("" if
    none): the command line takes any label of the vocabulary, where the App offers the
    selected samples' suggestions."""
    from fiftyone import ViewField as F

    if edit.action not in SUGGESTION_ACTIONS or edit.label_ids:
        return ""
    field = f"{sample_fields(key)['suggestions']}.classifications.label"
    n = len(edit.samples)
    suggested = dataset.select(list(edit.samples)).match(holds(F(field), edit.label)).count()
    if suggested == n:
        return ""
    if n == 1:
        return f"; {quoted(edit.label)} is not among the sample's suggestions"
    return f"; {quoted(edit.label)} is among the suggestions of {suggested} of the {n} samples"


def _save_review(dataset, key, seen, edits):
    """Store ``edits`` as the review of run ``key``, unless its stored edits are no longer
    ``seen``, those the new ones were made from: one made or undone meanwhile in another window
    or process would be lost."""
    stored = stored_review(dataset, key)
    if [Edit.from_record(r) for r in stored or []] != list(seen) or not update_run_doc(
            dataset, key, {"$set": {"config.review": [e.as_record() for e in edits]}},
            where={"config.review": stored}):
        reload_run(dataset, key)  # (RunDeletedError if the run itself is gone)
        raise ReviewChanged(f"The review of run {key!r} changed while this was being done (an "
                          "edit made or undone in another window or process); nothing was "
                          "recorded: look at the review again, then do it again")


def _check_rest_named_apart(state, edit):
    """Refuse to split a cluster's canonical label out when the name the rest of its cluster
    then takes reads alike (``Drill`` out of {``Drill``, ``drill``}: an export would carry
    both)."""
    canonical = state.label_map.canonical
    names = set(state.label_map.cluster_names)
    rest = [l for l, c in canonical.items() if c == canonical[edit.label] and l != edit.label]
    trial, _ = review_label_map(state.clustered, state.embeddings, [*state.edits, edit])
    tried = trial.canonical
    name = tried[rest[0]]
    if any(tried[l] == name for l, c in canonical.items() if c != canonical[edit.label]):
        # the rest took a name reading as a cluster's a rename gave, and joined that cluster
        raise ReviewError(
            f"Without {quoted(edit.label)}, the rest of its cluster would take a name that "
            f"reads as the cluster name {quoted(name)} ({ALIKE}), and join that cluster. Rename "
            f"the cluster first, or move {quoted(edit.label)} to another cluster")
    twin = edit.label if normal_form(name) == normal_form(edit.label) else _reads_as(
        name, state.label_map, state.memo, unless=lambda s: s == edit.label or s not in names)
    if normal_form(name) and twin is not None:
        raise ReviewError(
            f"Without {quoted(edit.label)}, the rest of its cluster would be named "
            f"{quoted(name)}, which reads as the cluster name {quoted(twin)} ({ALIKE}): an "
            "export would carry both. Rename the cluster first, or move "
            f"{quoted(edit.label)} to another cluster")


def _reads_as(name, label_map, memo, unless=lambda spelling: False):
    """The cluster name, else the label, of ``label_map`` that reads as ``name`` (equal normal
    forms: case, punctuation and extra spaces aside) and is not ``unless``, or None. The normal
    forms are computed once per review state (``memo``: 0.5 s at 100,000 labels)."""
    form = normal_form(name)
    if "spellings" not in memo:
        memo["spellings"] = by_normal_form(dict.fromkeys(
            [*label_map.cluster_names, *sorted(label_map.vocabulary)]))
    return next((s for s in memo["spellings"].get(form, []) if not unless(s)), None) if form \
        else None


# a tab, a line break, a space before or after, and the escapes of what does not print or of
# combining marks: as one_line shows them
SHOWN_AS = ("⇥", "⏎", "␣", "\\")


def _uncut(name, state):
    """The label or cluster name of ``state`` that a long one shown cut gives (its start, "…",
    its end and its length, as a table cell or a message shows it:
    :func:`~vlsr_core.wording.one_line`), or None (none, or two shown alike)."""
    if "cut" not in state.memo:
        label_map, cut = state.label_map, {}
        for l in {*label_map.vocabulary, *label_map.cluster_names}:
            for longest in (SHORT, 80):
                if len(l) > longest:
                    shown = one_line(l, longest)
                    cut[shown] = None if cut.get(shown, l) != l else l
        state.memo["cut"] = cut
    return state.memo["cut"].get(name)


def _as_written(name, state):
    """The label or cluster name of ``state`` that ``name`` gives as the App shows it (a tab as
    "⇥", a line break as "⏎", an edge space as "␣", a no-break space as "\\xa0":
    :func:`~vlsr_core.wording.one_line`; a long word with the
    zero-width spaces a table cell breaks it at: :func:`~vlsr_core.wording.breakable`; the
    same characters in another Unicode form, as text pasted from elsewhere may be; a long one
    cut: :func:`_uncut`), else ``name``: a curator can type or paste what is on the screen."""
    label_map = state.label_map
    if not name or name in label_map.canonical or name in (label_map.names or
                                                          label_map.representatives):
        return name
    if "composed" not in state.memo:
        state.memo["composed"] = _by_composed([*label_map.cluster_names,
                                              *label_map.vocabulary])
    same = state.memo["composed"].get(unicodedata.normalize("NFC", name))
    if same is None and "…" in name:  # (a long one shown cut)
        same = _uncut(name.replace(ZWSP, ""), state)
    if same is not None or not any(c in name for c in (*SHOWN_AS, ZWSP)):
        return same or name
    if ZWSP in name:
        name = name.replace(ZWSP, "")
        if not any(c in name for c in SHOWN_AS):
            return name
    if "shown" not in state.memo:  # (of two shown alike, the first in string order)
        shown = {}
        for l in sorted({*label_map.vocabulary, *label_map.cluster_names},
                        reverse=True):
            if (line := one_line(l, longest=float("inf"))) != l:
                shown[line] = l
        state.memo["shown"] = shown
    return state.memo["shown"].get(name, name)


def _by_composed(strings, strip=False):
    """Each string's composed Unicode form (NFC; of the string stripped, with ``strip``) -> the
    string, the first in string order: what a name typed or pasted in another form (a
    spreadsheet's, another system's) is among the run's labels and names."""
    out = {}
    for s in sorted(strings):
        out.setdefault(unicodedata.normalize("NFC", s.strip() if strip else s), s)
    return out


def _unprintable(name):
    """Whether ``name`` holds a line break, a control character or an invisible format
    character (a zero-width space: two names would look alike and differ)."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in INVISIBLE for ch in name)


def import_label_map(dataset, key, wanted, *, dry_run=False):
    """Record the review edits that give each label the canonical label ``wanted`` says (a
    label map edited outside, e.g. ``label_map.csv`` of an export in a spreadsheet; labels it
    leaves out keep theirs) and return them, in one write; none if the map already is so.
    Each is an ordinary edit: shown, undoable, written by Apply."""
    if not isinstance(wanted, Mapping):  # (a list of pairs read as labels: "('a', 'b')")
        raise ReviewError(f"Give the label map as a mapping of label to canonical label (a dict, "
                          f"or read_label_map's), not {type(wanted).__name__}")
    lines = getattr(wanted, "lines", {})  # label -> its line, from read_label_map
    reload_run(dataset, key)
    config = _config(dataset, key)
    label_map, emb = clustered_label_map(dataset, key)
    canonical = label_map.canonical  # (a property that builds the dict: once, not per row)
    unknown = [l for l in wanted if l not in canonical]
    if unknown:
        raise ReviewError(f"{count(len(unknown), 'label')} not in the vocabulary of run {key!r}: "
                          + ", ".join(f"{l!r}{_lines_of(lines, [l])}" for l in unknown[:5])
                          + (", ..." if len(unknown) > 5 else ""))
    # names the run has already (labels as written, with their spaces and tabs) are kept;
    # a new name is checked as a rename is
    known = {*label_map.vocabulary, *label_map.cluster_names}
    stripped = _by_composed(known, strip=True)
    wanted = {l: n if n in known else stripped.get(unicodedata.normalize("NFC", n.strip()),
                                                   n.strip())
              for l, n in wanted.items()}
    bad = next((n for n in set(wanted.values()) - known if not n or _unprintable(n)), None)
    if bad is not None:
        raise ReviewError(f"A canonical label cannot be blank or hold a line break, a control "
                          f"character or an invisible one: {bad!r}"
                          + _lines_of(lines, [l for l, n in wanted.items() if n == bad]))
    edits = edits_of(config)
    try:
        made = edits_to_reach(label_map, emb, edits, wanted)
    except MapError as e:  # each problem with the lines of the labels at fault (the first
        # SHOWN_PROBLEMS: a file of a 10,000-label map could make a line of 819)
        problems = [what + _lines_of(lines, labels) for what, labels in e.problems]
        more = len(problems) - SHOWN_PROBLEMS
        raise ReviewError("; ".join(problems[:SHOWN_PROBLEMS]) + (
            f"; and {count(more, 'more problem')}" if more > 0 else "")
            ) from None
    except ValueError as e:
        raise ReviewError(str(e)) from None
    now = _now()
    made = [replace(e, time=now) for e in made]
    if made and not dry_run:
        _save_review(dataset, key, edits, edits + made)
    return made


SHOWN_PROBLEMS = 10  # problems of an imported label map said at most


def takes_back(state, wanted):
    """What importing ``wanted`` takes back of the map edits in force, in words, or None: the
    labels it gives the canonical label they had as clustered, which an edit in force changed,
    as a label map exported before those edits would."""
    clustered, current = state.clustered.canonical, state.label_map.canonical
    back = {l for l, n in wanted.items() if l in current and n == clustered.get(l) != current[l]}
    edits = [e for e in state.in_force if e.action in MAP_ACTIONS
             and (e.label in back or e.action == "rename"
                  and any(current.get(l) == e.to for l in back))]
    if not back or not edits:
        return None
    ids = ", ".join(f"#{e.id}" for e in edits[:8]) + (", ..." if len(edits) > 8 else "")
    return (f"it gives {count(len(back), 'label')} the canonical label "
            f"{'it' if len(back) == 1 else 'they'} had before {'an edit' if len(edits) == 1 else 'edits'}"
            f" in force changed it ({ids}), as a file exported before those edits would: if this "
            "file is one, edit the latest label_map.csv instead")


def _lines_of(lines, labels):
    """The lines of a file that give ``labels`` (``lines``: label -> line), in words."""
    at = sorted(lines[l] for l in labels if l in lines)
    return f" ({'line' if len(at) == 1 else 'lines'} {', '.join(map(str, at[:5]))})" if at else ""


def _unclosed(text):
    """Whether the CSV ``text`` ends inside a quoted cell (the strict reader's "unexpected end
    of data"; a closed cell of several lines on the last row is fine)."""
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), strict=True):
            pass
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


class LabelMapFile(dict):
    """label -> canonical label as a file gives them, ``lines``: label -> its line, and
    ``clustered``: label -> its ``clustered_canonical`` cell (an export's), if it has them."""

    def __init__(self, wanted, lines, clustered=None):
        super().__init__(wanted)
        self.lines = lines
        self.clustered = clustered or {}


def other_clustering(state, wanted):
    """Why a label map file seems made from another clustering than the run's, in words, or
    None: its ``clustered_canonical`` column (an export's) differs from what the run's
    clustering made of its labels (another run, another dataset, or a clustering since)."""
    ours = state.clustered.canonical
    shared = [l for l in getattr(wanted, "clustered", {}) if l in ours]
    differ = [l for l in shared if wanted.clustered[l].strip() != ours[l].strip()]
    if not differ:
        return None
    l = differ[0]
    return (f"its clustered_canonical column differs from this run's clustering on "
            f"{count(len(differ), 'label')} of {len(shared):,} (e.g. {quoted(l)}: "
            f"{quoted(wanted.clustered[l].strip())} in the file, {quoted(ours[l])} here): it "
            "seems exported from another run, or before the run was clustered again; its "
            "canonical column is what is imported")


def read_label_map(path, vocabulary=None):
    """label -> canonical label, from a CSV with the columns ``label`` and ``canonical`` (any
    others, such as those of an exported ``label_map.csv``, are ignored; a row with more cells
    than the header, a name with an unquoted comma, is refused). Labels and canonical
    labels are read as written (:func:`import_label_map` matches a canonical label to a name
    of the run with surrounding spaces aside); :class:`ReviewError` lists the rows
    that cannot be read, and, given the run's ``vocabulary``, those of a label not in it: a
    curator fixing the file in a spreadsheet hears of every kind of problem at once."""
    if not os.path.exists(path):
        raise ReviewError(f"No file {path}")
    if os.path.isdir(path):
        raise ReviewError(f"{path} is a folder, not a CSV file")
    with open(path, "rb") as f:
        data = f.read()
    problem = not_text(data, nul=True)  # (a workbook read as text: "its first row is 'pk...'")
    if problem:
        raise ReviewError(f"{path} {problem}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        at = e.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line = len(re.split(b"\r\n|\r|\n", data[:at]))
        raise ReviewError(f"{path} is not UTF-8 text (line {line}: byte "
                          f"0x{data[at]:02x}): save it as CSV UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    # (the header: the first row that is not blank)
    header = next((row for row in reader if any(c.strip() for c in row)), [])
    header = [h.strip().casefold() for h in header]
    if not header:
        raise ReviewError(f"{path} is empty: it needs the columns label and canonical")
    if "label" not in header or "canonical" not in header:
        seen = ",".join(header)[:80]
        hint = (" (its cells seem separated by ';' or tabs: the CSV must use commas)"
                if any(c in seen for c in ";\t") else
                ": name its columns label and canonical" if len(header) == 2 and (
                    "label" in header or "canonical" in header) else
                ": if it names the columns, name them label and canonical; if it is a label and "
                "its canonical label, add the row label,canonical above it" if len(header) == 2
                else "")
        raise ReviewError(f"{path} needs the columns label and canonical, as label_map.csv of an "
                          f"export has; its first row is {seen!r}{hint}")
    at, to = header.index("label"), header.index("canonical")
    made = header.index("clustered_canonical") if "clustered_canonical" in header else None
    wanted, where, problems, clustered = {}, {}, {}, {}  # problems: line -> what
    last = None  # (the line and cells of the last row that is not blank)
    while True:
        line = reader.line_num + 1  # where the row starts
        try:
            cells = next(reader, None)
        except csv.Error as e:
            problems[line] = str(e)
            break
        if cells is None:
            break
        if not any(c.strip() for c in cells):
            continue
        last = line, cells
        label, name = (cells[at] if at < len(cells) else ""), (cells[to] if to < len(cells) else "")
        if len(cells) < len(header) and any("\n" in c or "\r" in c for c in cells):
            end = reader.line_num
            problems[line] = ("a quote (\") opened there "
                              + (f"makes lines {line}-{end} one cell" if end > line else
                                 "is not closed") + ": close it, or remove it")
        elif any(c.strip() for c in cells[len(header):]):  # a comma in a name, unquoted?
            problems[line] = (f"{len(cells)} cells under a header of {len(header)}: put a label "
                              "or name that holds a comma in quotes (\"hand, tool\"), or name "
                              f"column {len(header) + 1} (columns other than label and "
                              "canonical are ignored)")
        elif not label.strip() or not name.strip():
            problems[line] = f"{'label' if not label.strip() else 'canonical'} is empty"
        elif wanted.get(label, name).strip() != name.strip():
            problems[line] = (f"{label!r} is given {name.strip()!r} here and "
                              f"{wanted[label].strip()!r} on line {where[label]}")
        else:
            wanted[label], where[label] = name, line
            if made is not None and made < len(cells) and cells[made].strip():
                clustered[label] = cells[made]
    if (last and any("\n" in c or "\r" in c for c in last[1])
            and not any("quote" in p for p in problems.values()) and _unclosed(text)):
        # a quote that opens a cell and is never closed runs to the end of the file, the last
        # row then reading as complete (a quote inside a cell, 12" helmet, is a character)
        problems[last[0]] = "a quote (\") opened there is not closed: close it, or remove it"
    if not wanted and not problems:
        raise ReviewError(f"{path} has no row under its header: no label to import")
    if vocabulary is not None:
        known = set(vocabulary)
        unknown = [l for l in wanted if l not in known]
        # a label in another Unicode form than the run's (a spreadsheet's) is the run's label
        composed = _by_composed(vocabulary) if unknown else {}
        for l in unknown:
            ours = composed.get(unicodedata.normalize("NFC", l))
            if ours is not None and ours not in wanted:
                wanted[ours], where[ours] = wanted.pop(l), where.pop(l)
                if l in clustered:
                    clustered[ours] = clustered.pop(l)
        unknown = [l for l in wanted if l not in known]
        alike = by_normal_form(vocabulary) if unknown else {}  # (a label edited by hand)
        for l in unknown:
            twin = next((t for t in alike.get(read_form(l), ()) if t not in wanted), None)
            problems[where[l]] = f"{quoted(l)} is not a label of the run" + (
                f"; it has {quoted(twin)}, which reads alike ({ALIKE})" if twin else "")
    if problems:
        rows = [f"line {line}: {what}" for line, what in sorted(problems.items())[:5]]
        raise ReviewError(f"{path}: {count(len(problems), 'row')} cannot be "
                          f"{'read' if vocabulary is None else 'imported'}: "
                          + "; ".join(rows) + ("; ..." if len(problems) > 5 else ""))
    return LabelMapFile(wanted, where, clustered)


def join_note(state, edit, shown=quoted):
    """What a rename does beyond renaming, in words: ``it joins the cluster 'drill'`` (the
    cluster so named, or the one holding a label so written; the two then bear the new name:
    ``..., and the two are named 'helmet'`` when that cluster is named otherwise); which
    cluster a move to a label that does not name its cluster joins: ``the cluster of 'drills'
    is named 'drill'``; that a reject is about two labels apart already; the canonical label an
    accepted suggestion gives; or None. ``shown``: how a label is written (as code, in
    Markdown)."""
    label_map = state.label_map
    canonical = label_map.canonical
    if edit.action in SUGGESTION_ACTIONS:  # (a final label is a canonical label)
        name = canonical.get(edit.label)
        return (f"the outputs show it as {shown(name)}, the canonical label of "
                f"{shown(edit.label)}" if edit.action == "accept_suggestion"
                and name not in (None, edit.label) else None)
    if edit.action == "reject":  # (made to keep two apart after a new clustering)
        return (f"{shown(edit.label)} is not in {shown(edit.to)} now: the edit keeps them apart "
                "after a new clustering" if canonical.get(edit.label) != edit.to else None)
    if edit.action == "move":
        name = canonical.get(edit.to)
        return (f"the cluster of {shown(edit.to)} is named {shown(name)}"
                if name not in (None, edit.to) else None)
    if edit.action != "rename":
        return None
    own = canonical[_member(edit.label, set(canonical), label_map)]
    other = canonical.get(edit.to, edit.to if edit.to in (label_map.names or
                                                         label_map.representatives) else None)
    if other in (None, own):
        return None
    named = f", and the two are named {shown(edit.to)}" if other != edit.to else ""
    return f"it joins the cluster {shown(other)}{named}"


def replaced_note(state, *edits):
    """The earlier decisions in force that the suggestion decisions ``edits`` (of one request,
    all on samples or all on labels) take the place of on some of their samples or labels, in
    words, or "": the last decision on one wins. Decisions that no longer apply (their label
    left the vocabulary) are not counted."""
    if not edits or edits[0].action not in SUGGESTION_ACTIONS:
        return ""
    on_labels, ids = bool(edits[0].label_ids), {e.id for e in edits}
    mine = {x for e in edits for x in (e.label_ids or e.samples)}
    deciding = {}  # sample or label -> the decision on it now (not one a later took over)
    canonical = state.label_map.canonical
    for e in state.in_force:
        if (e.action in SUGGESTION_ACTIONS and bool(e.label_ids) == on_labels
                and e.id not in ids and e.label in canonical):
            deciding.update((x, e.id) for x in mine & set(e.label_ids or e.samples))
    taken, earlier = set(deciding), [f"#{i}" for i in sorted(set(deciding.values()))]
    if not earlier:
        return ""
    listed = ", ".join(earlier[:5]) + (", ..." if len(earlier) > 5 else "")
    return (f"it replaces {'edit' if len(earlier) == 1 else 'edits'} {listed} on "
            f"{count(len(taken), 'label' if on_labels else 'sample')}")


def replaced_later(state):
    """For each suggestion decision in force, the later decisions in force that take its
    place on some of its samples (or labels: the last decision on one wins), and on how many:
    ``{edit id: (n, [later edit ids])}``."""
    latest, replaced = {}, {}  # (kind, sample or label id) -> the last decision on it
    canonical = state.label_map.canonical
    for e in reversed(state.in_force):
        if e.action not in SUGGESTION_ACTIONS or e.label not in canonical:
            continue
        kind, later = bool(e.label_ids), set()
        n = 0
        for x in e.label_ids or e.samples:
            if (kind, x) in latest:
                n += 1
                later.add(latest[kind, x])
            else:
                latest[kind, x] = e.id
        if n:
            replaced[e.id] = (n, sorted(later))
    return replaced


def decided_later(state):
    """For each edit in force about where one label goes (keep, take out, move, split), the
    later one in force about the same label, which decides in its place (the last one wins):
    ``{edit id: later edit id}``."""
    last, decided = {}, {}
    for e in reversed(state.in_force):
        if e.action in ("accept", "reject", "move", "split"):
            if e.label in last:
                decided[e.id] = last[e.label]
            else:
                last[e.label] = e.id
    return decided


def edit_numbers(edits):
    """The numbers of ``edits`` as a curator reads them: ``#3 to #7`` when they follow each
    other, else listed (``#2, #4``: an undo from #2 when #3 was undone already)."""
    ids = [e.id for e in edits]
    if len(ids) > 1 and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"#{ids[0]} to #{ids[-1]}"
    return ", ".join(f"#{i}" for i in ids[:10]) + (", ..." if len(ids) > 10 else "")


def undo_edit(dataset, key=DEFAULT_KEY, edit_id=None):
    """Undo edit ``edit_id`` (default: the last one in force) and return it; the fields change on
    Apply. The edit stays on the run, marked undone."""
    in_force = _in_force(dataset, key)
    edit_id = in_force[-1].id if edit_id is None else _edit_number(edit_id)
    if edit_id not in {e.id for e in in_force}:
        undone = next((e for e in edits_of(_config(dataset, key)) if e.id == edit_id), None)
        raise ReviewError(f"Run {key!r} has no edit #{edit_id} in force" + (
            f": it was undone on {shown_time(undone.undone)}" if undone is not None else ""))
    return _undo(dataset, key, {edit_id})[0]


def undo_edits_from(dataset, key, edit_id):
    """Undo edit ``edit_id`` and every edit in force made after it (those of one
    :func:`import_label_map`, say), in one write; returns them (``edit_id`` itself may have been
    undone already: the later ones are still undone)."""
    edit_id = _edit_number(edit_id)
    later = {e.id for e in _in_force(dataset, key) if e.id >= edit_id}
    if not later:
        raise ReviewError(f"Run {key!r} has no edit #{edit_id} or later in force")
    return _undo(dataset, key, later)


def _in_force(dataset, key):
    reload_run(dataset, key)
    in_force = active(edits_of(_config(dataset, key)))
    if not in_force:
        raise ReviewError(f"Run {key!r} has no review edit to undo")
    return in_force


def _undo(dataset, key, ids):
    """Mark the edits ``ids`` undone now; returns them."""
    edits, now = edits_of(_config(dataset, key)), _now()
    after = [replace(e, undone=now) if e.id in ids else e for e in edits]
    _save_review(dataset, key, edits, after)
    return [e for e in after if e.id in ids]


@holds_run("apply the review")
def apply_review(samples, key=DEFAULT_KEY, *, copy_to=None, progress=None):
    """Write the reviewed label map and the suggestion decisions in force to the run's fields.

    Each label's ``{key}_canonical`` and ``{key}_cluster``, ``{key}_labels`` and ``{key}_label``
    are rewritten (the clustering is not run again); ``{key}_label`` is tagged with the review
    state (:data:`~vlsr_core.fo.runs.REVIEW_TAGS`). Input labels are never modified.

    Args:
        samples: the run's collection (or a part of it, to write only those samples).
        key: the run key.
        copy_to: also write each sample's final label to this new field (a Classification,
            created and recorded by the run, so deleting the run removes it).
        progress: optional callable taking the fraction done.

    Returns:
        an :class:`ApplyReport`.
    """
    from .cluster import copy_problem, write_label_map
    from .stage_run import VLSRError, mark_stage, open_run

    problem = apply_problem(samples._dataset, key)
    if problem:
        raise ReviewError(problem)
    # (refused before the apply is marked running: nothing is written)
    problem = copy_to and samples._dataset.has_run(key) and copy_problem(samples._dataset, key,
                                                                         copy_to)
    if problem:
        raise VLSRError(problem)
    dataset = samples._dataset
    results = load_results(dataset, key) if dataset.has_run(key) else None
    # (before open_run, which would ask to embed labels a view the run was made on left out)
    problem = results is not None and labels_problem(
        samples, dataset.get_run_info(key).config, results.vocabulary)
    if problem:
        raise ReviewError(problem)
    run = open_run(samples, key, results=results)
    state = review_state(run.dataset, key, run.results)
    stopped = stage_stopped(run.config, "apply")
    mark_stage(run, "apply", "running")
    n_samples, n_changed, n_renumbered, n_unscored = write_label_map(
        run, samples, state, copy_to=copy_to, progress=progress)
    n_left = samples_left(run)
    # the edits the run's fields show: those of its last whole write, on the samples a partial
    # one left out
    behind = record_applied(run, state, partly=bool(n_left))
    # an apply stopped part-way is over once one has written every sample of the run
    mark_stage(run, "apply", "running" if stopped and n_left else "complete")
    n_map = sum(o.status != "stale" for o in state.outcomes)
    # (counted if they reach a sample: one deleted since takes its decisions' effect with it)
    n_decisions = state.decisions_in_effect(dataset)
    return ApplyReport(n_samples, n_map, n_decisions, state.stale, copy_to,
                       outdated_copies(samples, key, written=copy_to), n_left, n_changed,
                       n_renumbered, n_unscored, behind)


def outdated_copies(samples, key=DEFAULT_KEY, written=None):
    """The copies of run ``key``'s final labels (Apply's "copy to" fields, but ``written``)
    that differ from them on ``samples``, each with the number of those samples: a copy is
    written only when asked for, and the final labels change on every Apply and clustering."""
    from fiftyone import ViewField as F

    final = sample_fields(key)["label"]
    copies = [f for f in _config(samples._dataset, key).copies
              if f != written and samples.has_field(f)]
    differ = [(f, samples.match(F(f"{f}.label") != F(f"{final}.label")).count()) for f in copies]
    return [(f, n) for f, n in differ if n]


def run_copies_outdated(dataset, key, state):
    """:func:`outdated_copies` on the whole run, kept with the run's review ``state`` (which an
    Apply or a clustering, the only changes to the final labels, replaces): a panel asks on
    every click."""
    if "outdated_copies" not in state.memo:
        state.memo["outdated_copies"] = outdated_copies(run_collection(dataset, key), key)
    return state.memo["outdated_copies"]


def samples_left(run):
    """How many samples of the run's collection the samples ``run`` was opened on leave out
    (0 when that collection cannot be found again: an unsaved view, a saved view deleted)."""
    collection = run_collection(run.dataset, run.key)
    if collection is run.dataset and run.config.collection is not None:  # (not found again)
        return 0
    written = {bytes(i) for i in run.ids}
    return sum(bytes(i) not in written for i in sample_ids(collection))


def copy_note(name, n):
    """What a copy of the final labels that differs from them on ``n`` samples needs."""
    return (f"{name!r}, a copy of the final labels, differs from them on {count(n, 'sample')}: "
            f"apply with the copy to {name!r} to update it")


QUICK_CHECK = 8 * 2 ** 20  # bytes of labels up to which labels_problem's query lists them
# (MongoDB refuses a query over 16 MB)


def labels_problem(samples, config, clustered):
    """Why the labels of ``samples`` cannot be given the run's label map (by Apply or export),
    or None: labels given since the run's clustering, which the map (of the ``clustered``
    labels) lacks. (A view that filters them is the callers' own check:
    :func:`~.labels.label_filter_problem`.)"""
    try:
        path = label_path(samples, config.label_field)
    except LabelFieldError as e:
        return str(e)
    known = set(clustered)
    # no label outside the map: one query, without listing the labels
    if sum(len(l.encode()) + 16 for l in known) <= QUICK_CHECK:
        other = {**USABLE, "$nin": sorted(known)}
        if not first_match(samples, {f"{path}.label": other} if path == config.label_field
                           else {path: {"$elemMatch": {"label": other}}}):
            return None
    new = [l for l in samples.distinct(f"{path}.label") if usable(l) and l not in known]
    if not new:
        return None
    verb = "is" if len(new) == 1 else "are"
    name, dataset = config.collection, samples._dataset
    if name and getattr(samples, "name", None) != name and dataset.has_saved_view(name) and (
            not set(new) & set(dataset.load_saved_view(name).distinct(f"{path}.label"))):
        return (f"{count(len(new), 'label')} of these samples {verb} outside the saved view "
                f"{name!r} the run was made on, e.g. {new[:3]}: target that view (loaded in the "
                "App) to leave them out, or run the stages on these samples")
    return (f"{count(len(new), 'label')} of these samples {verb} not in the run's label map "
            f"yet, e.g. {new[:3]}: embed, score and cluster them first (VLSR 1 to 3 in the App, "
            "vlsr run on the command line)")


def apply_problem(dataset, key=DEFAULT_KEY):
    """Why :func:`apply_review` would refuse, or None: a clustering that stopped part-way may
    not have stored its label map, so the map to apply is not known."""
    if not dataset.has_run(key):
        return None  # open_run says so
    reload_run(dataset, key)  # (as stored now: a clustering of another process)
    config = dataset.get_run_info(key).config
    if stage_stopped(config, "cluster"):
        if config.stages["cluster"] == OUTDATED:
            return (f"Run {key!r}: {outdated_note(config)}; apply the review after that (the "
                    "edits stay on the run)")
        return (f"Run {key!r}: cluster and merge stopped part-way; run it again before applying "
                "the review (the edits stay on the run)")
    if STAGE_NAMES["cluster"] in sharded_stages(config):
        return (f"Run {key!r}: cluster and merge runs in shards, and the shards still to run "
                "would write the label map over what an Apply writes now; apply the review when "
                "the last shard is done (the edits stay on the run)")
    return None


def record_applied(run, state, partly=False):
    """Set in the run's config which edits its fields now show (after they were written);
    ``partly``: on some samples only, the others keeping what was recorded before. The caller
    saves it with the stage's mark (:func:`~.stage_run.mark_stage`), in one write: a Ctrl-C
    between two writes left an Apply recorded as done and marked as stopped part-way. Returns
    whether the review reads as applied in part only."""
    # (the id tells two writes within a second apart, for cached_review_state)
    prior = getattr(run.config, "applied", None) or {}
    if partly and not prior.get("partly") and prior.get("edits") == [e.id for e in state.in_force]:
        partly = False  # the rest already showed these edits: so does the whole run now
    if partly:
        run.config.applied = dict(getattr(run.config, "applied", None) or {}, partly=True,
                                  id=uuid.uuid4().hex)
    else:
        run.config.applied = dict(edits=[e.id for e in state.in_force], time=_now(),
                                  id=uuid.uuid4().hex)
    return partly


def _check_samples(dataset, ids):
    """Refuse sample ids that are not the dataset's (a typo on the command line)."""
    from bson import ObjectId

    valid = [i for i in ids if ObjectId.is_valid(i)]
    found = set(dataset.select(valid).values("id")) if valid else set()
    missing = [i for i in ids if i not in found]
    if missing:
        raise ReviewError(f"{count(len(missing), 'sample id')} of {len(ids)} "
                          f"{'is' if len(missing) == 1 else 'are'} not in dataset "
                          f"{dataset.name!r}, e.g. {missing[0]!r}")


def _member(label, vocabulary, label_map, about="label", memo=None):
    """A vocabulary label standing for ``label``: itself, or the representative of the cluster
    it names; ``about``: the argument it was given as, for the error (which names a label that
    reads alike; ``memo``: the review state's, see :func:`_reads_as`)."""
    if label in vocabulary:
        return label
    if not usable(label):  # (it said "'' is neither a label nor ...": the run skips these)
        raise ReviewError(f"{quoted(label)} is a blank label, which the run skips (left as it "
                          "is): name a label of the run", about)
    names = label_map.cluster_names
    if label in names:
        return label_map.representatives[names.index(label)]
    twin = _reads_as(label, label_map, {} if memo is None else memo)
    hint = f"; did you mean {quoted(twin)}?" if twin is not None else ""
    if (memo or {}).get("cut", {}).get(label.replace(ZWSP, ""), "") is None:  # (:func:`_uncut`)
        hint = "; it is how several long labels are shown, cut: type the one meant whole"
    raise ReviewError(f"{quoted(label)} is neither a label nor a canonical label of this run{hint}",
                      about)


def _config(dataset, key):
    dataset = collection(dataset)
    if not dataset.has_run(key):
        raise ReviewError(f"No VLSR run {key!r} on this dataset")
    config = dataset.get_run_info(key).config
    if not isinstance(config, VLSRRunConfig):
        raise ReviewError(f"Run {key!r} is not a VLSR run")
    return config


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def shown_time(stamp):
    """A stored time (ISO 8601; UTC if it names no zone, as FiftyOne's) as a curator reads it:
    ``2026-12-04 03:21 UTC``."""
    try:
        when = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return stamp
    when = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")

"""Stage 3, :func:`cluster_and_merge`: steps 4-6 on the vocabulary into the run's label map,
written onto every label and sample by :func:`write_label_map` (also in shards)."""

import dataclasses
from dataclasses import dataclass

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from ..engine.defaults import DEFAULT_KEY, is_field_name
from ..engine.evidence import ImagePrototypes
from ..engine.params import MergeParams
from ..engine.pipeline import build_label_map, final_labels
from ..engine.review import label_decision, suggestion_decisions
from . import batches
from .crops import box_rows, crop_read_fields, read_crops
from .labels import (
    as_label_lists,
    classification_doc,
    classifications_doc,
    is_list_field,
    label_sets,
    tags_by_label,
    usable,
)
from .lease import holds_run
from .review import labels_problem, record_applied, review_state, samples_left
from .runs import (
    OUTDATED,
    REVIEW_TAGS,
    holds_classifications,
    label_attributes,
    sample_fields,
    save_config,
    save_results,
    saved_view_names,
    stage_stopped,
)
from .stage_run import (
    VLSRError,
    _check_inside,
    _check_shardable,
    _create_index,
    _create_outputs,
    _float,
    _floats,
    _only,
    _save_view,
    _shard_run,
    mark_stage,
    open_run,
)

# How far a stored score may be from its label's score computed again and still be that
# label's (two computations differ in their last bits)
SCORE_TOLERANCE = 1e-4


@holds_run("cluster and merge")
def cluster_and_merge(samples, key=DEFAULT_KEY, params=None, *, progress=None, **overrides):
    """Cluster the vocabulary, merge small clusters, pick canonical and final labels (steps 4-7).

    Writes ``{key}_canonical`` and ``{key}_cluster`` on each label of the run's label field,
    ``{key}_labels`` (the sample's canonical labels, confidence = score) and ``{key}_label`` (the
    final label), stores the vocabulary, frequencies, clusters and label map in the run record
    and saves the view of samples whose final label is none of their original labels.

    Args:
        samples: the dataset or view (its labels are the vocabulary).
        key: the run key used by :func:`compute_embeddings`.
        params: :class:`~vlsr_core.engine.params.MergeParams` (default: the defaults, whatever the run
            used before; the App's form offers those); ``overrides`` replace single fields,
            e.g. ``eps=0.1``.
        progress: optional callable taking the fraction done.

    The curator's review edits stored on the run (:mod:`vlsr_core.fo.review`) are applied to the
    new clusters; those that no longer apply are reported by the summary.

    Returns:
        the :class:`LabelMap` written: the one computed, with the run's review edits applied.
    """
    advance = progress or (lambda fraction: None)
    run, state = _cluster(samples, key, params, overrides, lambda f: advance(0.5 * f))
    write_label_map(run, samples, state, progress=lambda f: advance(0.5 + 0.49 * f))
    _finish_clustering(run, samples, state)
    advance(1.0)
    return state.label_map


@holds_run("cluster and merge")
def prepare_cluster_shards(samples, key=DEFAULT_KEY, params=None, *, batch="shards", progress=None,
                           **overrides):
    """Stage 3 in shards, first part: cluster the vocabulary of ``samples`` and store the label
    map in the run record. Then run :func:`cluster_shard` on disjoint parts of ``samples``, in any
    processes, and :func:`finish_cluster_shards` once on ``samples`` after all of them, each with
    the same ``batch`` name (see :func:`prepare_score_shards`).

    Returns the :class:`LabelMap` the shards will write (the run's review edits applied).
    """
    _check_shardable(samples)
    with batches.refusal_noted(samples._dataset, key, "cluster", batch):
        run, review = _cluster(samples, key, params, overrides,
                               progress or (lambda fraction: None), f"shards:{batch}")
    batches.open_batch(run.dataset, key, "cluster", batch, run.ids)
    return review.label_map


@holds_run("cluster and merge", shared=True)
def cluster_shard(samples, key=DEFAULT_KEY, *, batch="shards", progress=None):
    """Write the label map :func:`prepare_cluster_shards` stored onto ``samples``, one shard of
    its collection: canonical labels and clusters on every label, the canonical label sets and
    the final labels (rewriting the samples whose values change). Returns the number of
    samples of the shard."""
    run = _shard_run(samples, key, "cluster", batch, "vocabulary")
    problem = labels_problem(samples, run.config, run.vocabulary)
    if problem:
        raise VLSRError(f"Nothing written: {problem}")
    n = write_label_map(run, samples, _shard_review(run), progress=progress)[0]
    batches.record_part(run.dataset, key, "cluster", batch, run.ids)
    return n


def _shard_review(run):
    """The review state the shards of a clustering write: with the edits in force when it was
    prepared."""
    return review_state(run.dataset, run.key, run.results,
                        edit_ids=getattr(run.config, "cluster_shard_edits", None))


@holds_run("cluster and merge")
def finish_cluster_shards(samples, key=DEFAULT_KEY, *, batch="shards"):
    """Stage 3 in shards, last part, once every shard is written: record the review edits the
    fields show and save the view of changed samples. Returns the :class:`LabelMap` written."""
    run = _shard_run(samples, key, "cluster", batch, "vocabulary", finish=True)
    state = _shard_review(run)
    _finish_clustering(run, samples, state)
    batches.close_batch(run.dataset, key, "cluster", batch)
    return state.label_map


def _cluster(samples, key, params, overrides, progress, state="running"):
    """Steps 4-6 on the vocabulary of ``samples``: the label map, recorded in the run's results,
    the stage marked ``state``. Returns the run and its review state (edits on the new clusters)."""
    _check_inside(samples, key, warn=True)
    run = open_run(samples, key)
    params = MergeParams.resolve(params, **overrides)
    prototypes, clustering = None, progress
    if params.image_evidence:  # a read of the images first: 0.3 of the stage's progress
        prototypes = _image_prototypes(run, samples, lambda f: progress(0.3 * f))
        clustering = lambda f: progress(0.3 + 0.7 * f)  # noqa: E731

    label_map = build_label_map(run.vocabulary, run.merge_emb, run.frequencies, params,
                                prototypes=prototypes,
                                unknown_words=run.results.unknown_words_of(run.vocabulary),
                                progress=clustering)
    run.config.record(params)
    mark_stage(run, "cluster", state)
    results = run.results
    results.vocabulary = label_map.vocabulary
    results.frequencies = label_map.frequencies
    results.dbscan_clusters = label_map.dbscan_clusters
    results.clusters = label_map.clusters
    results.representatives = label_map.representatives
    results.lexical_groups = label_map.steps.lexical_groups
    results.distance_to_canonical = label_map.distance_to_canonical
    results.naming = np.zeros(0, np.int64) if label_map.naming is None else label_map.naming
    results.merge_steps = label_map.steps.as_record()
    save_results(run.dataset, key, results)
    review = review_state(run.dataset, key, results)
    if state.startswith("shards:"):  # its shards and finish review with these edits alone: an
        # edit made between two shards waits for Apply, instead of reaching only some samples
        run.config.cluster_shard_edits = [e.id for e in review.in_force]
        save_config(run.dataset, key, run.config)
    return run, review


def _image_prototypes(run, samples, progress):
    """The image prototypes of the run's vocabulary: its samples' embeddings read a chunk at a
    time (samples without one are left out). On a run with crops each box counts with its own
    crop, so that objects pictured together do not share a prototype; a box too small to cut,
    or changed since its crop was cut, is left out."""
    prototypes = ImagePrototypes(run.vocabulary, run.dim or 0)
    crops = bool(run.config.crops)
    done = 0
    for chunk in run.read_chunks(samples, crop_read_fields(run.key, run.path) if crops else ()):
        if crops:
            stored, boxes = read_crops(chunk.extra, run.path)
            box = box_rows(chunk.images, chunk.label_ids, chunk.labels, boxes, stored)
            box.rows[np.array([f is not False for f in box.fallback], dtype=bool)] = np.nan
            prototypes.add(box.rows, box.labels)
        else:
            prototypes.add(chunk.images, chunk.sets)
        done += len(chunk.ids)
        progress(done / max(len(run.ids), 1))
    return prototypes


def _finish_clustering(run, samples, state):
    """The global part of stage 3, once the label map is written on ``samples``."""
    record_applied(run, state)
    fields = sample_fields(run.key)
    final = F("$" + fields["label"] + ".label")
    if is_list_field(run.path):
        kept = F(run.path).filter(F("label") == final).length() > 0
    else:
        kept = F(run.path + ".label") == final
    changed = samples.match(F(fields["label"]).exists() & ~kept)
    _save_view(run, saved_view_names(run.key)["changed"], changed,
               "samples whose final label is none of the labels they had")
    if stage_stopped(run.config, "apply") and not samples_left(run):  # it wrote all that the apply stopped part-way did
        mark_stage(run, "apply", None)
    mark_stage(run, "cluster", "complete")


def write_label_map(run, samples, state, *, copy_to=None, progress=None):
    """Write a reviewed label map and the suggestion decisions in force onto the run's fields:
    ``{key}_canonical`` and ``{key}_cluster`` on every label, ``{key}_labels`` and ``{key}_label``
    (tagged with the review state, :data:`REVIEW_TAGS`), and ``copy_to`` if given, on the
    samples whose values change (those of ``copy_to``, on the samples where it differs from the
    final label: labels written again get new ids, and a selection of them in the App is
    lost). Returns the number of
    samples read, of those whose values changed, of those changed in their cluster ids alone
    (renumbered by an edit of other clusters), and
    of the label objects whose scores are not of their label (:func:`_unscored`: the scoring,
    if it was complete, is then out of date).

    Args:
        run: from :func:`open_run`.
        samples: the samples to write.
        state: a :class:`~vlsr_core.fo.review.ReviewState` (its label map and edits in force).
        copy_to: a new field that also gets each sample's final label (checked by the
            caller with :func:`copy_problem`, before it marks anything).
        progress: optional callable taking the fraction done.
    """
    label_map = state.label_map
    by_sample, by_label = suggestion_decisions(state.in_force, label_map.vocabulary)
    key, attrs, fields = run.key, label_attributes(run.key), sample_fields(run.key)
    outputs = {
        f"{run.path}.{attrs['canonical']}": run.add_field(fo.StringField),
        f"{run.path}.{attrs['cluster']}": run.add_field(fo.IntField),
        fields["labels"]: run.add_field(fo.EmbeddedDocumentField,
                                        embedded_doc_type=fo.Classifications),
        fields["label"]: run.add_field(fo.EmbeddedDocumentField,
                                       embedded_doc_type=fo.Classification),
    }
    if copy_to:
        outputs[copy_to] = outputs[fields["label"]]
        if copy_to not in run.config.copies:
            run.config.copies = [*run.config.copies, copy_to]
            save_config(run.dataset, key, run.config)
    _create_outputs(run.dataset, key, run.config, outputs)
    canonical, cluster = label_map.canonical, label_map.cluster
    # the map's whole vocabulary (``samples`` may hold only part of it)
    vocab_emb = run.results.embeddings_of(label_map.vocabulary)
    # what the fields hold, read to write only the samples that change (an Apply of one edit
    # rewrote every sample), and to keep a curator's own tags
    stored = [
        f"{run.path}.{attrs['canonical']}", f"{run.path}.{attrs['cluster']}",
        f"{fields['labels']}.classifications.label",
        f"{fields['labels']}.classifications.confidence",
        f"{fields['labels']}.classifications.tags",
        f"{fields['label']}.label", f"{fields['label']}.confidence", f"{fields['label']}.tags",
        # (to tell labels changed since they were scored)
        f"{run.path}.{attrs['similarity']}", fields["min_similarity"]]
    summaries = _score_summary_fields(key, run.path, bool(run.config.crops))
    copy = [f"{copy_to}.label", f"{copy_to}.confidence", f"{copy_to}.tags"] if copy_to else []
    row = {l: i for i, l in enumerate(label_map.vocabulary)}
    done = written = renumbered = unscored = 0
    for chunk in run.read_chunks(samples, stored + copy + summaries):
        *values, scores, lowest = chunk.extra[:len(stored)]
        copies = [(l, _float(s), t) if l is not None else None
                  for l, s, t in zip(*chunk.extra[len(stored):len(stored) + len(copy)])]
        scores = as_label_lists(scores, run.path)
        unscored += _unscored(chunk, scores, lowest, row, vocab_emb)
        # (labels removed or cleared by hand: the lowest score of a label gone, say)
        resummed, summary = _score_summaries(key, chunk, scores, lowest,
                                             chunk.extra[len(stored) + len(copy):], run.path)
        labels = [[_decided(label_decision(by_label, s, i), "accept_suggestion", l)
                   for i, l in zip(ids, ls)]
                  for s, ids, ls in zip(chunk.ids, chunk.label_ids, chunk.labels)]
        sets = label_sets(labels)
        # (a sample whose image has no embedding now, an image failing since the decision, has
        # no suggestions: the decision waits)
        seen = np.isfinite(chunk.images).all(axis=1) & (chunk.images.shape[1] > 0)
        chosen = [_decided(by_sample.get(s), "accept_suggestion", None) if ok else None
                  for s, ok in zip(chunk.ids, seen)]
        for labels_of, suggestion in zip(sets, chosen):
            if suggestion is not None and suggestion not in labels_of:
                labels_of.append(suggestion)
        final = final_labels(chunk.images, sets, label_map, vocab_emb)
        for k, suggestion in enumerate(chosen):
            if suggestion is not None and final.canonical_scores[k] is not None:
                i = final.canonical_labels[k].index(canonical[suggestion])
                final.final_labels[k] = final.canonical_labels[k][i]
                final.final_scores[k] = float(final.canonical_scores[k][i])
        old = _MapValues.read(values, run.path)
        # the review's tags, then those a curator gave the final label (the App tags every
        # label field ticked), which an Apply deleted: while it stays that label
        tags = [_review_tags(s, ids, set_, by_sample, by_label, state.edited_labels)
                + [t for t in (f[2] or [] if f and f[0] == label else [])
                   if t not in REVIEW_TAGS.values()]
                for s, ids, set_, f, label in zip(chunk.ids, chunk.label_ids, sets, old.final,
                                                  final.final_labels)]
        new = _MapValues(
            canonical=[[canonical.get(l) if usable(l) else None for l in ls] for ls in labels],
            cluster=[[cluster.get(l) if usable(l) else None for l in ls] for ls in labels],
            names=final.canonical_labels,
            scores=[_floats(scores, len(names))
                    for names, scores in zip(final.canonical_labels, final.canonical_scores)],
            set_tags=old.set_tags,
            final=[(l, _float(s), t) if l is not None else None
                   for l, s, t in zip(final.final_labels, final.final_scores, tags)])
        changed = _changed(new, old, run.path)
        if changed:  # (their labels as they were: a cluster renumbered by an edit elsewhere)
            renumbered += len(changed) - len(_changed(new.only(changed), old.only(changed),
                                                      run.path, ids_too=False))
        if changed:
            _write_map_values(run, samples, _only(chunk, changed), new.only(changed))
        copied = copy_to and [k for k, (f, c) in enumerate(zip(new.final, copies)) if f != c]
        if copied:
            run.write_sample_values(samples, _only(chunk, copied), {copy_to: [
                classification_doc(*f) if f is not None else None
                for f in new.only(copied).final]})
        if resummed:
            run.write_sample_values(samples, _only(chunk, resummed), summary)
        done, written = done + len(chunk.ids), written + len(set(changed) | set(resummed))
        if progress is not None:
            progress(min(0.99, done / len(run.ids)))
    _create_index(run.dataset, f"{fields['label']}.confidence")
    if unscored and (run.config.stages or {}).get("score") == "complete":
        run.config.stages = {**run.config.stages, "score": OUTDATED}
        save_config(run.dataset, run.key, run.config)
    if progress is not None:
        progress(1.0)
    return done, written, renumbered, unscored


def _score_summary_fields(key, path, crops):
    """What :func:`_score_summaries` reads beside the labels' scores: the top suggestion, the
    best gap, and with crops the boxes' crop scores and their lowest."""
    attrs, fields = label_attributes(key), sample_fields(key)
    return [f"{fields['suggestions']}.classifications.label",
            f"{fields['suggestions']}.classifications.confidence", fields["best_gap"],
            *([f"{path}.{attrs['crop_similarity']}", fields["min_crop_similarity"]]
              if crops else [])]


def _score_summaries(key, chunk, scores, lowest, stored, path):
    """The scored samples of ``chunk`` whose lowest score or best gap (and lowest crop score)
    no longer follow from the scores their labels carry now, as scoring computes them
    (:func:`~vlsr_core.engine.pipeline.score_images`), and their values: ``(positions,
    {field: a value per position})``. A label removed or cleared by hand leaves its score on
    them, and the grid sorted by the lowest score shows the sample for a label it no longer
    has."""
    fields = sample_fields(key)
    suggested, confidences, gaps, *crop = stored
    at, values = [], {fields["min_similarity"]: [], fields["best_gap"]: []}
    if crop:
        values[fields["min_crop_similarity"]] = []
    for k, (labels, sims, low) in enumerate(zip(chunk.labels, scores, lowest)):
        least, gap = low, _float(gaps[k])
        if low is not None:  # (scored)
            held = [(l, v) for l, v in zip(labels, sims) if usable(l) and v is not None]
            top = suggested[k][0] if suggested[k] else None
            least = min((v for _, v in held), default=None)
            gap = None if not held or top is None else 0.0 if top in {l for l, _ in held} else (
                float(confidences[k][0]) - max(v for _, v in held))
        new = [least, gap]
        if crop:  # (scoring leaves the boxes without a usable label out)
            new.append(crop[1][k] if crop[1][k] is None else min(
                (v for l, v in zip(labels, as_label_lists([crop[0][k]], path)[0])
                 if usable(l) and v is not None), default=None))
        if new != [low, _float(gaps[k]), *([crop[1][k]] if crop else [])]:
            at.append(k)
            for name, value in zip(values, new):
                values[name].append(value)
    return at, values


def _unscored(chunk, scores, lowest, row, vocab_emb):
    """How many label objects of ``chunk``, of the labels of a label map (``row``: their rows
    of ``vocab_emb``) on a scored sample (its ``lowest`` score is not None: a scoring of a part
    of the run leaves the others), hold no score of their label (``scores``: the stored ones,
    per sample): a label changed by hand, or given, since it was scored. Told by the score
    itself, so that a label changed into one that scores alike (a twin spelling) is no
    change."""
    at, rows, had = [], [], []
    for k, (labels, sims, low) in enumerate(zip(chunk.labels, scores, lowest)):
        if low is None:
            continue
        for label, score in zip(labels, sims):
            if label in row:
                at.append(k)
                rows.append(row[label])
                had.append(np.nan if score is None else score)
    if not at or chunk.images.shape[1] == 0:
        return 0
    images = chunk.images[at]
    now = np.einsum("ij,ij->i", images, vocab_emb[rows])
    off = ~(np.abs(now - np.asarray(had, dtype=np.float64)) <= SCORE_TOLERANCE)
    return int((np.isfinite(images).all(axis=1) & off).sum())


def _write_map_values(run, samples, chunk, new):
    """Write :class:`_MapValues` ``new`` on the samples of ``chunk`` (see write_label_map)."""
    attrs, fields = label_attributes(run.key), sample_fields(run.key)
    run.write_object_values(samples, chunk, attrs["canonical"], new.canonical)
    run.write_object_values(samples, chunk, attrs["cluster"], new.cluster)
    run.write_sample_values(samples, chunk, {
        fields["labels"]: [classifications_doc(zip(names, scores), tags)
                           for names, scores, tags in zip(new.names, new.scores, new.set_tags)],
        fields["label"]: [classification_doc(*f) if f is not None else None for f in new.final],
    })


@dataclass
class _MapValues:
    """What :func:`write_label_map` writes on a chunk's samples, per sample: the canonical
    label and the cluster of each label object, the canonical label set's names, scores and
    tags (:func:`tags_by_label`: a name keeps its tags while it stays in the set), and the
    final label as (label, score, tags) or None."""

    canonical: list
    cluster: list
    names: list
    scores: list
    set_tags: list
    final: list

    @classmethod
    def read(cls, extra, path):
        """The values the fields hold, from the chunk's ``extra`` (write_label_map's order)."""
        canonical, cluster, names, scores, set_tags, label, score, tags = extra
        return cls(as_label_lists(canonical, path), as_label_lists(cluster, path), names, scores,
                   [tags_by_label(n, t) for n, t in zip(names, set_tags)],
                   [(l, _float(s), t) if l is not None else None
                    for l, s, t in zip(label, score, tags)])

    def only(self, keep):
        """The values of the samples at positions ``keep``."""
        return _MapValues(**{f.name: [getattr(self, f.name)[k] for k in keep]
                             for f in dataclasses.fields(self)})


def _changed(new, old, path, ids_too=True):
    """The positions of the samples whose values ``new`` differ from the ``old`` ones read
    back (of a field of one label a sample, a None attribute reads as no value); without
    ``ids_too``, cluster ids aside."""
    names = ("canonical", "cluster", "names", "scores", "final") if ids_too else (
        "canonical", "names", "scores", "final")

    def written(name, k):
        value = getattr(new, name)[k]
        if name in ("canonical", "cluster") and not is_list_field(path):
            return [v for v in value if v is not None]
        return value

    return [k for k in range(len(new.names))
            if any(written(name, k) != getattr(old, name)[k] for name in names)]


def copy_problem(dataset, key, name):
    """Why the final labels of run ``key`` cannot be copied to field ``name``, or None."""
    config = dataset.get_run_info(key).config
    if not is_field_name(name):
        return (f"{name!r} cannot name a field: use letters, digits and underscores, starting "
                "with a letter")
    owned = set(config.created_fields or [])
    if name in sample_fields(key).values() or name == config.label_field.split(".")[0]:
        return f"{name!r} is a field of run {key!r} or its input: choose a new name"
    if dataset.has_field(name) and name not in owned:
        return f"Field {name!r} exists and was not created by run {key!r}: choose a new name"
    if dataset.has_field(name) and not holds_classifications(dataset, name):
        return (f"Field {name!r} holds no Classification, so it is not a copy of the final labels "
                f"of run {key!r}: choose a new name")
    return None


def _decided(edit, action, default):
    """The suggested label of ``edit`` if it is an ``action``, else ``default``."""
    return edit.label if edit is not None and edit.action == action else default


def _review_tags(sample_id, label_ids, labels, by_sample, by_label, edited):
    """The review tags of a sample's final label."""
    decisions = [by_sample.get(sample_id)] + [label_decision(by_label, sample_id, i)
                                              for i in label_ids]
    actions = {e.action for e in decisions if e is not None}
    tags = [tag for action, tag in (("accept_suggestion", REVIEW_TAGS["accepted"]),
                                    ("reject_suggestion", REVIEW_TAGS["rejected"]))
            if action in actions]
    if edited.intersection(labels):
        tags.append(REVIEW_TAGS["edited"])
    return tags

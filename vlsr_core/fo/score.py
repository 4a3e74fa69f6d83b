"""Stage 2, :func:`score_labels`: ``{key}_similarity`` on every label, ``{key}_suggestions``,
the per-sample summaries, the low-score threshold and the review views (also in shards)."""

import dataclasses
from dataclasses import dataclass

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from ..engine.defaults import DEFAULT_KEY
from ..engine.params import ScoreParams
from ..engine.pipeline import ScoreTally, score_images
from ..wording import count
from . import batches
from .browse import count_score_histogram
from .chunks import iter_chunks
from .crops import BoxScores, crop_read_fields, read_crops, score_boxes, write_box_scores
from .labels import (
    QUERY_BYTES,
    as_label_lists,
    blank_labels,
    blank_note,
    classifications_doc,
    is_list_field,
    label_counts,
    one_of,
    query_bytes,
    tags_by_label,
    usable,
)
from .lease import holds_run
from .runs import (
    label_attributes,
    review_attribute,
    run_samples,
    sample_fields,
    save_results,
    saved_view_names,
)
from .stage_run import (
    _check_inside,
    _check_shardable,
    _create_index,
    _create_outputs,
    _float,
    _only,
    _save_view,
    _shard_run,
    mark_stage,
    open_run,
)


@dataclass
class ScoreReport:
    """What :func:`score_labels` did."""

    n_samples: int = 0  # samples scored
    n_unscored: int = 0  # samples without an image embedding (unreadable or not embedded)
    n_scores: int = 0  # labels given a score (a label repeated on an image: each time)
    low_similarity_threshold: float = None  # the low-similarity view's threshold (None: a shard's)
    crops: bool = False  # the review used the boxes' crop scores
    n_box_scores: int = 0  # boxes given a crop score
    n_box_fallback: int = 0  # of those, scored on the whole image
    n_box_stale: int = 0  # boxes without a crop as they are now (embed again)
    n_new_labels: int = 0  # labels not in a sharded scoring's vocabulary, left unscored
    n_blank_labels: int = 0  # label objects with an empty or blank label, skipped

    def summary(self):
        text = f"scored {count(self.n_scores, 'label')} on {count(self.n_samples, 'sample')}"
        if self.n_unscored:  # (not among those: "on 58 samples (2 without ...)" read as if so)
            text += (f"; {count(self.n_unscored, 'sample')} without an image embedding "
                     "(unreadable or not embedded) left out")
        if self.crops:
            text += (f"; {count(self.n_box_scores, 'box')}: "
                     f"{self.n_box_scores - self.n_box_fallback} on their crops, "
                     f"{self.n_box_fallback} on the whole image (too small, outside the image "
                     "or without coordinates)")
            if self.n_box_stale:
                text += (f", {count(self.n_box_stale, 'box')} not (they changed since their crops were "
                         "cut: compute embeddings again)")
        if self.n_new_labels:
            text += (f"; {count(self.n_new_labels, 'label')} given since the scoring was prepared left "
                     "unscored (score again to include them)")
        text += blank_note(self.n_blank_labels)
        if self.low_similarity_threshold is None:
            return text
        score = "crop scores" if self.crops else "labels"
        return text + f"; {score} below {self.low_similarity_threshold:.3f} count as low"


@holds_run("score labels")
def score_labels(samples, key=DEFAULT_KEY, params=None, *, progress=None, **overrides):
    """Score every label against its image and suggest the top-k vocabulary labels (steps 2-3).

    Writes ``{key}_similarity`` on each label of the run's label field, ``{key}_suggestions``,
    ``{key}_min_similarity`` (the lowest score of the sample's labels: sort ascending to find
    suspects) and ``{key}_best_gap`` (best suggestion minus best assigned label: above 0, a better
    label exists), and saves the review views.

    Args:
        samples: the dataset or view to score (the vocabulary is that of these samples).
        key: the run key used by :func:`compute_embeddings`.
        params: :class:`~vlsr_core.engine.params.ScoreParams` (default: the defaults, whatever the run
            used before; the App's form offers those); ``overrides`` replace single fields,
            e.g. ``top_k=3``.
        progress: optional callable taking the fraction done.

    Returns:
        a :class:`ScoreReport`.
    """
    run = _start_scoring(samples, key, params, overrides)
    advance = progress or (lambda fraction: None)
    report = _score_chunks(run, samples, lambda f: advance(0.95 * f))
    _finish_scoring(run, samples, report)
    report.n_blank_labels = blank_labels(label_counts(samples, run.config.label_field))
    advance(1.0)
    return report


@holds_run("score labels")
def prepare_score_shards(samples, key=DEFAULT_KEY, params=None, *, batch="shards", **overrides):
    """Stage 2 in shards, first part: check, record the parameters and the vocabulary of
    ``samples`` (what every shard suggests from) and create the outputs. Then run
    :func:`score_shard` on disjoint parts of ``samples`` (:func:`~vlsr_core.fo.chunks.shards`), in
    any processes, and :func:`finish_score_shards` once on ``samples`` after all of them, each
    with the same ``batch`` name: a later scoring of the run supersedes the batch, and its
    shards then refuse to write. The shards share the run's lease (:mod:`.lease`): no other
    stage of the run starts while one of them writes.

    Returns the number of vocabulary labels.
    """
    _check_shardable(samples)
    with batches.refusal_noted(samples._dataset, key, "score", batch):
        run = _start_scoring(samples, key, params, overrides, f"shards:{batch}")
    run.results.score_vocabulary = run.vocabulary
    run.results.score_frequencies = run.frequencies
    save_results(run.dataset, key, run.results)
    batches.open_batch(run.dataset, key, "score", batch, run.ids)
    return len(run.vocabulary)


@holds_run("score labels", shared=True)
def score_shard(samples, key=DEFAULT_KEY, *, batch="shards", progress=None):
    """Score the labels of ``samples``, one shard of the collection :func:`prepare_score_shards`
    prepared, against its vocabulary and with its parameters; writes sample fields and label
    attributes only. A shard may be empty, or hold no embedded image. Returns the shard's
    :class:`ScoreReport` (without a threshold)."""
    run = _shard_run(samples, key, "score", batch, "score_vocabulary")
    report = _score_chunks(run, samples, progress or (lambda fraction: None))
    batches.record_part(run.dataset, key, "score", batch, run.ids)
    if progress is not None:
        progress(1.0)
    return report


@holds_run("score labels")
def finish_score_shards(samples, key=DEFAULT_KEY, *, batch="shards"):
    """Stage 2 in shards, last part, once every shard is scored: the low-score threshold from
    every score of ``samples``, the histogram and the review views. Returns the threshold."""
    run = _shard_run(samples, key, "score", batch, "score_vocabulary", finish=True)
    report = ScoreReport(crops=bool(run.config.crops))
    _finish_scoring(run, samples, report)
    batches.close_batch(run.dataset, key, "score", batch)
    return report.low_similarity_threshold


def _start_scoring(samples, key, params, overrides, state="running"):
    """Open the run for scoring ``samples``: record the parameters, mark the stage ``state``
    and create the outputs."""
    _check_inside(samples, key)
    run = open_run(samples, key)
    config = run.config
    params = ScoreParams.resolve(params, **overrides)
    config.record(params)
    mark_stage(run, "score", state)
    attrs, fields = label_attributes(key), sample_fields(key)
    outputs = {
        f"{run.path}.{attrs['similarity']}": run.add_field(fo.FloatField),
        fields["suggestions"]: run.add_field(fo.EmbeddedDocumentField,
                                             embedded_doc_type=fo.Classifications),
        fields["min_similarity"]: run.add_field(fo.FloatField),
        fields["best_gap"]: run.add_field(fo.FloatField),
    }
    if config.crops:
        outputs.update({
            f"{run.path}.{attrs['crop_similarity']}": run.add_field(fo.FloatField),
            f"{run.path}.{attrs['crop_fallback']}": run.add_field(fo.BooleanField),
            f"{run.path}.{attrs['crop_suggestions']}": run.add_field(fo.ListField,
                                                                     subfield=fo.StringField),
            f"{run.path}.{attrs['crop_gap']}": run.add_field(fo.FloatField),
            fields["min_crop_similarity"]: run.add_field(fo.FloatField),
        })
    _create_outputs(run.dataset, key, config, outputs)
    return run


def _score_chunks(run, samples, progress):
    """Score ``samples`` a chunk at a time with the run's recorded parameters, writing every
    label's score, the suggestions and the per-sample summaries (and the boxes' crop scores).
    Returns a :class:`ScoreReport` without a threshold."""
    key, config = run.key, run.config
    params = config.params(ScoreParams)
    attrs, fields = label_attributes(key), sample_fields(key)
    crops = bool(config.crops)
    # what is stored (written again only where it changes: a re-run leaves the samples, and
    # their last change, as they were), with the suggestions' tags, which a curator's are kept
    # with (a suggestion made again)
    extra = [*_ScoreValues.fields(key, run.path, crops),
             f"{fields['suggestions']}.classifications.tags",
             *(crop_read_fields(key, run.path) if crops else [])]
    n_stored = len(extra) - 1 - (len(crop_read_fields(key, run.path)) if crops else 0)
    report = ScoreReport(crops=crops)
    known = set(run.vocabulary)
    for chunk in run.read_chunks(samples, extra):
        stored_values, (suggestion_tags, *crop_values) = (chunk.extra[:n_stored],
                                                          chunk.extra[n_stored:])
        old = _ScoreValues.read(stored_values, run.path, crops)
        unknown = {l for labels in chunk.sets for l in labels if l not in known}
        if unknown:  # labels given since a sharded scoring recorded its vocabulary: unscored
            report.n_new_labels += len(unknown)
            chunk.sets = [[l for l in labels if l in known] for labels in chunk.sets]
            chunk.labels = [[l if l in known else None for l in labels] for labels in chunk.labels]
        scores = score_images(chunk.images, chunk.sets, run.vocabulary, run.vocab_emb, params,
                              frequencies=run.frequencies)
        box = None
        if crops:
            stored, boxes = read_crops(crop_values, run.path)
            box = score_boxes(chunk.images, chunk.label_ids, chunk.labels, boxes, stored,
                              run.vocabulary, run.vocab_emb, params, run.frequencies)
        new = _ScoreValues.of(chunk, scores, box)
        keep = new.changed(old, run.path)
        if keep:
            part, new = _only(chunk, keep), new.only(keep)
            suggested = stored_values[1]  # (their tags go with the labels as stored)
            tags = [tags_by_label(suggested[k], suggestion_tags[k]) for k in keep]
            run.write_object_values(samples, part, attrs["similarity"], new.similarity)
            run.write_sample_values(samples, part, {
                fields["suggestions"]: [classifications_doc(sugg, t) if sugg else None
                                        for sugg, t in zip(new.suggestions, tags)],
                fields["min_similarity"]: new.min_similarity,
                fields["best_gap"]: new.best_gap,
            })
            if crops:
                write_box_scores(samples, run.path, key, part.ids, part.label_ids, new.box)
                run.write_sample_values(samples, part, {fields["min_crop_similarity"]: new.min_crop})
        if crops:
            report.n_box_scores += box.n_cut + box.n_fallback
            report.n_box_fallback += box.n_fallback
            report.n_box_stale += box.n_stale
        n_scored = sum(s is not None for s in scores.similarity)
        report.n_samples += n_scored
        report.n_unscored += len(chunk.ids) - n_scored
        # each label on a scored image, a label repeated on one counted each time (as its boxes)
        for labels_of, set_of, sims in zip(chunk.labels, chunk.sets, scores.similarity):
            if sims is not None:
                scored = set(set_of)
                report.n_scores += sum(l in scored for l in labels_of)
        progress(min(0.99, (report.n_samples + report.n_unscored) / len(run.ids)))
    return report


@dataclass
class _ScoreValues:
    """What :func:`_score_chunks` writes on a chunk's samples, per sample: each label object's
    score, the suggestions as ``(label, score)`` pairs (None: none), the lowest score and the
    best gap, and with crops, the boxes' crop scores (:class:`~.crops.BoxScores`) and their
    lowest."""

    similarity: list
    suggestions: list
    min_similarity: list
    best_gap: list
    box: BoxScores | None = None
    min_crop: list | None = None

    BOX_VALUES = ("similarity", "fallback", "suggestions", "gap")  # (BoxScores' attributes)

    @classmethod
    def fields(cls, key, path, crops):
        """The fields that hold them, in :meth:`read`'s order."""
        attrs, fields = label_attributes(key), sample_fields(key)
        suggestions = f"{fields['suggestions']}.classifications"
        return [f"{path}.{attrs['similarity']}", f"{suggestions}.label",
                f"{suggestions}.confidence", fields["min_similarity"], fields["best_gap"],
                *([f"{path}.{attrs['crop_' + a]}" for a in cls.BOX_VALUES]
                  + [fields["min_crop_similarity"]] if crops else [])]

    @classmethod
    def read(cls, values, path, crops):
        """The values the fields of :meth:`fields` hold."""
        similarity, labels, confidences, lowest, gap, *crop = values
        suggestions = [list(zip(l, map(_float, c))) if l is not None else None
                       for l, c in zip(labels, confidences)]
        box = BoxScores(*(as_label_lists(v, path) for v in crop[:4]), labels=None) if crops else None
        return cls(as_label_lists(similarity, path), suggestions, [_float(v) for v in lowest],
                   [_float(v) for v in gap], box, [_float(v) for v in crop[4]] if crops else None)

    @classmethod
    def of(cls, chunk, scores, box):
        """The values to write for ``scores`` (and ``box``) of ``chunk``."""
        similarity = []
        for labels_of, labels, sims in zip(chunk.labels, chunk.sets, scores.similarity):
            by_label = dict(zip(labels, sims.tolist())) if sims is not None else {}
            similarity.append([by_label.get(l) if usable(l) else None for l in labels_of])
        return cls(similarity, [[(l, float(c)) for l, c in s] if s else None
                                for s in scores.suggestions],
                   [_float(v) for v in scores.min_similarity],
                   [_float(v) for v in scores.best_gap], box,
                   [_float(v) for v in box.min_similarity] if box is not None else None)

    def changed(self, old, path):
        """The positions of the samples whose values differ from the ``old`` ones read back (of
        a field of one label a sample, a None attribute reads as no value)."""
        one = not is_list_field(path)

        def same(new, stored):
            return ([v for v in new if v is not None] if one else new) == stored

        def same_boxes(k):
            return self.box is None or (self.min_crop[k] == old.min_crop[k] and all(
                same(getattr(self.box, a)[k], getattr(old.box, a)[k]) for a in self.BOX_VALUES))

        return [k for k in range(len(self.similarity))
                if not (same(self.similarity[k], old.similarity[k])
                        and self.suggestions[k] == old.suggestions[k]
                        and self.min_similarity[k] == old.min_similarity[k]
                        and self.best_gap[k] == old.best_gap[k] and same_boxes(k))]

    def only(self, keep):
        """The values of the samples at positions ``keep``."""
        def pick(values):
            return [values[k] for k in keep]

        box = self.box and dataclasses.replace(self.box, **{
            a: pick(getattr(self.box, a)) for a in (*self.BOX_VALUES, "labels")})
        return _ScoreValues(pick(self.similarity), pick(self.suggestions),
                            pick(self.min_similarity), pick(self.best_gap), box,
                            self.min_crop and pick(self.min_crop))


def _fitting(weak, weakest):
    """The labels ``weak`` if a saved view can ask for them all, else the most of
    ``weakest(most)`` (the ``most`` weakest of them) that it can: the view is one query,
    which MongoDB caps at 16 MB."""
    def fits(labels):
        return query_bytes(one_of(F("label"), labels)) <= QUERY_BYTES

    if fits(weak):
        return weak
    low, high = 0, len(weak) - 1  # (the most that fit is in [low, high])
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(weakest(middle)) else (low, middle - 1)
    return weakest(low)


def _stored_tally(run, samples):
    """A :class:`ScoreTally` of the scores written on ``samples``, read back a chunk at a time:
    each sample's distinct labels with their scores, or with crops each box with its crop score
    (what the review uses). The same whether one process or many shards wrote them."""
    crops = bool(run.config.crops)
    attribute = label_attributes(run.key)["crop_similarity" if crops else "similarity"]
    tally, known = ScoreTally(run.vocabulary), set(run.vocabulary)
    for _, values in iter_chunks(samples, [f"{run.path}.label", f"{run.path}.{attribute}"],
                                 ids=run.ids):
        labels, scores = [], []
        for labels_of, scores_of in zip(*(as_label_lists(v, run.path) for v in values)):
            # (a sample added since the shards were queued may hold another run's scores)
            scored = [(l, s) for l, s in zip(labels_of, scores_of) if l in known and s is not None]
            if crops:  # one entry a box
                labels += [[l] for l, _ in scored]
                scores += [np.float32([s]) for _, s in scored]
            else:  # one entry a sample, a label repeated on it counted once
                once = dict(scored)
                labels.append(list(once))
                scores.append(np.float32(list(once.values())))
        tally.add(labels, scores)
    return tally


def _finish_scoring(run, samples, report):
    """The global part of scoring, once every label of ``samples`` is scored: indexes, the
    low-score threshold (into ``report``), the histogram and the review views."""
    key, config = run.key, run.config
    params = config.params(ScoreParams)
    attrs, fields = label_attributes(key), sample_fields(key)
    crops = bool(config.crops)
    # indexed, so that the App can sort the grid by them and filter large datasets quickly
    indexed = [fields["min_similarity"], fields["best_gap"], f"{run.path}.{attrs['similarity']}"]
    if crops:
        indexed += [fields["min_crop_similarity"], f"{run.path}.{attrs['crop_similarity']}"]
    for name in indexed:
        _create_index(run.dataset, name)

    tally = _stored_tally(run, samples)
    low = tally.threshold(params.low_quantile)
    report.low_similarity_threshold = config.low_similarity_threshold = low
    weak = tally.weak_labels(low)
    # every score of the run (also those of samples outside ``samples``), for the review panel
    hist = count_score_histogram(run_samples(run.dataset, key), config.label_field,
                                 review_attribute(config, key))
    config.score_histogram = dict(counts=hist.counts, edges=hist.edges) if hist else None
    views = saved_view_names(key)
    score = F(review_attribute(config, key))
    what, where = ("boxes", "crop") if crops else ("labels", "image")
    # the worst first: sorted on an indexed field before filtering, so that MongoDB reads the
    # index in order rather than sorting what the filter leaves
    worst_first = samples.sort_by(fields["min_crop_similarity" if crops else "min_similarity"])
    _save_view(run, views["low_similarity"],
               worst_first.filter_labels(config.label_field, (score != None) & (score < low)),
               f"{what} scoring below {low:.3f} on their {where}, the {params.low_quantile:.0%} "
               f"quantile of run {key!r}")
    margin = params.replace_margin
    if crops:
        better = samples.filter_labels(config.label_field, F(attrs["crop_gap"]) > margin)
    else:
        better = samples.sort_by(fields["best_gap"], reverse=True).match(
            F(fields["best_gap"]) > margin)
    _save_view(run, views["better_label"], better,
               f"{'boxes' if crops else 'samples'} where a vocabulary label beats "
               f"{'the box label on its crop' if crops else 'every assigned label'} by > {margin}")
    n_weak = len(weak)
    weak = _fitting(weak, lambda most: tally.weak_labels(low, most))
    _save_view(run, views["weak_labels"],
               worst_first.filter_labels(config.label_field, one_of(F("label"), weak)),
               (f"the {len(weak):,} weakest of the {n_weak:,} " if len(weak) < n_weak else "")
               + f"labels that score below {low:.3f} on every {where} they are on")
    mark_stage(run, "score", "complete")

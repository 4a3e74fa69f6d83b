"""VLSR on a FiftyOne collection in three stages that read, compute and write in bulk, a chunk of
samples at a time (:mod:`vlsr_core.fo.chunks`), so that memory stays flat as the collection grows.

1. :func:`compute_embeddings` — images onto ``{key}_embedding`` (streamed, resumable), labels
   into the run record;
2. :func:`score_labels` — ``{key}_similarity`` on every label, ``{key}_suggestions``, per-sample
   summaries and review views;
3. :func:`cluster_and_merge` — ``{key}_canonical`` / ``{key}_cluster`` on every label,
   ``{key}_labels``, ``{key}_label`` and the label map in the run record.

:func:`run_vlsr` runs all three. Every stage records its parameters in the run's config.
"""

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, field

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from ..engine.defaults import DEFAULT_KEY, is_field_name
from ..engine.params import PARAM_CLASSES, EmbedParams, MergeParams, ParamError, ScoreParams
from ..engine.evidence import ImagePrototypes
from ..engine.pipeline import ScoreTally, build_label_map, final_labels, score_images
from ..engine.review import label_decision, suggestion_decisions
from ..model.model_source import MINILM, as_recorded
from ..model.tokens import unknown_words
from ..wording import count
from . import batches, chunks
from .browse import count_score_histogram
from .chunks import iter_chunks, packed_ids, sample_ids
from .crops import (
    BoxScores,
    box_rows,
    crop_paths,
    crop_read_fields,
    crop_record,
    crop_record_fields,
    crops_current,
    read_crops,
    score_boxes,
    write_box_scores,
)
from .labels import (
    QUERY_BYTES,
    LabelFieldError,
    as_label_lists,
    blank_labels,
    blank_note,
    classification_doc,
    classifications_doc,
    is_list_field,
    label_counts,
    label_filter_problem,
    label_selection_problem,
    label_objects,
    label_path,
    label_sets,
    media_problem,
    one_of,
    query_bytes,
    set_label_attribute,
    tags_by_label,
    unlabelled_problem,
    usable,
)
from .lease import check_held, dataset_document, holder, holds_run, running_note
from .review import labels_problem, record_applied, review_state, samples_left, shown_time
from .runs import (
    CROP_RECORD,
    OUTDATED,
    REVIEW_TAGS,
    STAGE_NAMES,
    RunDeletedError,
    VLSRResults,
    VLSRRunConfig,
    drop_saved_views,
    holds_classifications,
    label_attributes,
    load_results,
    narrowing_note,
    output_problem,
    outside_problem,
    persistence_kept,
    reload_dataset,
    reload_run,
    run_collection,
    review_attribute,
    run_samples,
    sample_fields,
    save_config,
    save_results,
    saved_view_names,
    stage_stopped,
    update_run_doc,
    utc_now,
)

logger = logging.getLogger(__name__)

# Embeddings are written in bulk every WRITE_EVERY samples or WRITE_SECONDS, whichever comes
# first: a crash loses at most a few seconds of work, and fast runs still write in large batches.
WRITE_EVERY = 1024
WRITE_SECONDS = 5.0
_clock = time.monotonic
# The reason recorded for an image whose embedding came out NaN or infinite.
NON_FINITE = "the model returned a non-finite embedding (NaN or inf)"
# What a recompute tags the file stamp of each image it is to embed again, in place of the
# :func:`embedding_tag`: one stopped part-way goes on, when run again without recompute, with
# the images it had not reached (they looked current).
RECOMPUTE = "recompute"
# How far a stored score may be from its label's score computed again and still be that
# label's (two computations differ in their last bits)
SCORE_TOLERANCE = 1e-4


class VLSRError(ValueError):
    """A stage cannot run on this collection as asked; the message says what to do."""


class BatchFinished(VLSRError):
    """A shard run again after its stage was finished: it has nothing to do."""


@dataclass
class EmbeddingReport:
    """What :func:`compute_embeddings` did."""

    n_embedded: int = 0  # images embedded now
    n_skipped: int = 0  # images that already had an embedding from this model
    n_labels_embedded: int = 0  # distinct label strings embedded now
    failures: list = field(default_factory=list)  # (sample id, filepath, reason)
    n_crops: int = 0  # boxes cut and embedded now (runs with crops), of usable labels
    n_crop_fallback: int = 0  # boxes of the images embedded now left to the whole image, idem
    n_changed: int = 0  # images embedded again because their file changed since
    n_foreign: int = 0  # images embedded again because another model embedded them
    n_missing: int = 0  # images embedded before whose file cannot be found now (kept)
    kept: list = field(default_factory=list)  # (id, filepath, reason): a recompute failed on
    # them, their embedding kept (:func:`_kept`)
    n_stamped: int = 0  # embeddings of an earlier version given their file's stamp now
    n_blank_labels: int = 0  # label objects with an empty or blank label, skipped
    n_merge_embedded: int = 0  # labels embedded now by the label model (for merging only)
    label_model: str = None  # that model

    def summary(self):
        # (the images tried again are among those embedded or unreadable: the counts add up)
        one = self.n_changed == 1
        text = (f"embedded {count(self.n_embedded, 'image')} ({self.n_skipped:,} already done, "
                f"{len(self.failures):,} unreadable) and "
                f"{count(self.n_labels_embedded, 'new label')}"
                + (f"; {count(self.n_merge_embedded, 'label')} embedded by {self.label_model} for "
                   "merging" if self.n_merge_embedded else "")
                + (f"; {count(self.n_changed, 'image')} tried again, as "
                   f"{'its file' if one else 'their files'} changed since "
                   f"{'it was' if one else 'they were'} embedded" if self.n_changed else "")
                + (f"; {count(self.n_foreign, 'image')} tried again, as another model "
                   f"embedded {'it' if self.n_foreign == 1 else 'them'}" if self.n_foreign else "")
                + (f"; {count(self.n_missing, 'image')} embedded before cannot be found now "
                   f"(a drive not mounted? {'it keeps its' if self.n_missing == 1 else 'they keep their'}"
                   " embedding)" if self.n_missing else "")
                + (f"; {count(len(self.kept), 'image')} could not be embedded again (e.g. "
                   f"{self.kept[0][1]}: {self.kept[0][2]}): "
                   f"{'it keeps its' if len(self.kept) == 1 else 'they keep their'} embedding, "
                   "marked to be embedded again" if self.kept else "")
                + (f"; {count(self.n_stamped, 'image')} embedded by an earlier version of vlsr "
                   f"{'was' if self.n_stamped == 1 else 'were'} noted as {'its file is' if self.n_stamped == 1 else 'their files are'} "
                   "now, so that a later change is noticed (a file replaced before is not: "
                   "--recompute embeds every image again)" if self.n_stamped else ""))
        if self.n_crops:
            text += (f"; cut and embedded {count(self.n_crops, 'box')} ({self.n_crop_fallback:,} more too "
                     "small, off the image or without coordinates: scored on the whole image)")
        elif self.n_crop_fallback:
            text += (f"; no box cut: {'the' if self.n_crop_fallback == 1 else 'all'} "
                     f"{count(self.n_crop_fallback, 'box')} too small, off the image or without "
                     "coordinates (scored on the whole image)")
        return text + blank_note(self.n_blank_labels)


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


@holds_run("compute embeddings")
def compute_embeddings(samples, label_field, key=DEFAULT_KEY, params=None, *, recompute=False,
                       encoder=None, label_encoder=None, images=True, progress=None, **overrides):
    """Embed the distinct labels of ``label_field`` into the run record, then the images.

    Images that already have an embedding from the same model (prompt, JPEG decoding and
    precision) are skipped unless ``recompute``, so an interrupted run resumes where it stopped.
    Unreadable images are skipped and their reason written to ``{key}_error`` (see
    :func:`unreadable_images`).

    Args:
        samples: a FiftyOne dataset or view of images.
        label_field: a Classification, Classifications or Detections field.
        key: the run key; fields are named ``{key}_...``.
        params: :class:`~vlsr_core.engine.params.EmbedParams` (default: the defaults); ``overrides``
            replace single fields, e.g. ``model="./clip", device="cpu"``.
        recompute: embed every image again.
        encoder: an already loaded :class:`CLIPEncoder`; its model, prompt, batch size and
            ``jpeg_draft`` and ``precision`` are used instead of the parameters of the same names.
        label_encoder: an already loaded encoder for ``label_model`` (anything with
            ``embed_texts``), instead of loading a :class:`SentenceEncoder`.
        images: False embeds the labels only and leaves the images to :func:`compute_image_embeddings`
            (e.g. in shards run by several workers).
        progress: optional callable taking the fraction done.

    Returns:
        an :class:`EmbeddingReport`.
    """
    params = EmbedParams.resolve(params, **overrides)
    if params.label_model and params.label_model != MINILM:  # (a folder: by its full path)
        params = dataclasses.replace(params, label_model=as_recorded(params.label_model))
    _check_collection(samples)
    path = _label_path(samples, label_field)
    _check_outputs(samples, key, label_field)
    problem = label_selection_problem(samples, label_field, key)
    if problem:
        raise VLSRError(problem)
    if params.crops and not path.endswith(".detections"):
        raise VLSRError(f"Crops need boxes: {label_field!r} is not a Detections field")
    if params.crops and params.jpeg_draft:
        raise ParamError("jpeg_draft", "jpeg_draft must be off with crops: crops are cut from "
                                       "full-resolution pixels")
    vocabulary, _ = _scan_labels(samples, path, sample_ids(samples))
    problem = not vocabulary and unlabelled_problem(samples._dataset, label_field)
    if problem:
        raise VLSRError(problem)
    own, encoder = encoder is None, encoder or _encoder(params)
    dataset = samples._dataset
    new_run = not dataset.has_run(key)
    if own and new_run:
        encoder.load()  # (before the run is registered: a model that cannot be had leaves none)
    if new_run and params.label_model and label_encoder is None:  # (so is the label model)
        from ..model.sentence_encoder import SentenceEncoder

        label_encoder = SentenceEncoder(params.label_model)
    config, results = _load_or_init(dataset, key, label_field)
    model_changes = not _same_model(config, encoder) or config.prompt != encoder.prompt
    # the tokenizer of steps 4-6 changed: the words of every label are counted again
    tokenizer_changes = (config.label_model != params.label_model
                         or (model_changes and not params.label_model))
    if own and (model_changes or tokenizer_changes
                or _image_setup(config) != _image_setup(encoder)
                or _crop_setup(config) != _crop_setup(params)
                or not set(vocabulary) <= set(results.labels)):
        # the weights load before anything is changed: a model that cannot be had leaves the
        # run as it was (with nothing of the labels to embed, they load on first use, if any:
        # a run that clusters again never loads them)
        encoder.load()
    if params.label_model and label_encoder is None and (
            model_changes or config.label_model != params.label_model
            or len(results.merge_embeddings) < len(results.labels)
            or not set(vocabulary) <= set(results.labels)):
        # loaded before anything is changed: a model that cannot be had leaves the run as it was
        from ..model.sentence_encoder import SentenceEncoder

        label_encoder = SentenceEncoder(params.label_model)
    if new_run or samples is dataset:  # a later embedding of the whole dataset widens the run
        config.collection = _collection_name(samples)
    fields = sample_fields(key)
    if model_changes:
        # embeddings of another model are not comparable: drop them all, not only this view's
        results.labels, results.label_embeddings = [], np.zeros((0, encoder.dim), np.float32)
        results.merge_embeddings = np.zeros((0, 0), np.float32)  # aligned with the labels
        results.unknown_words = np.zeros(0, np.float32)
        _clear(dataset, fields["embedding"], *crop_record_fields(key))
    elif _image_setup(config) != _image_setup(encoder):
        # images decoded or computed another way: keep the label embeddings, not a mix of two
        _clear(dataset, fields["embedding"], *crop_record_fields(key))
    if _crop_setup(config) != _crop_setup(params):  # cut again, or no longer
        _clear(dataset, *(crop_record_fields(key) if params.crops else crop_paths(key, path)))
    if model_changes or _image_setup(config) != _image_setup(encoder) or _crop_setup(
            config) != _crop_setup(params):
        config.stages = _outdated(config.stages)
    config.model, config.prompt, config.batch_size = encoder.model_name, encoder.prompt, encoder.batch_size
    config.jpeg_draft, config.precision = _image_setup(encoder)
    config.crops, config.crop_padding, config.crop_min_size = _crop_setup(params)
    config.model_fingerprint = _fingerprint(encoder)
    if model_changes:  # the old model's label embeddings go first: stopped before the new
        # ones are stored, a run of the new model recorded beside them took them for its own
        save_results(dataset, key, results)
    save_config(dataset, key, config)
    progress = progress or (lambda fraction: None)

    known = set(results.labels)
    new = [l for l in vocabulary if l not in known]
    if new:
        emb = _label_vectors(encoder, new, results, lambda f: progress(0.04 * f))
        results.labels = list(results.labels) + new
        results.label_embeddings = np.vstack([results.label_embeddings.reshape(-1, encoder.dim), emb])
    merged_by, merged_weights = config.label_model, getattr(config, "label_model_fingerprint",
                                                             None)
    n_merge = _embed_for_merging(config, results, params.label_model, label_encoder,
                                       lambda f: progress(0.04 + 0.01 * f))
    # another label model, or other weights under its name (not a fingerprint recorded anew)
    relabelled = config.label_model != merged_by or (
        merged_weights is not None and config.label_model_fingerprint != merged_weights)
    if relabelled and (config.stages or {}).get("cluster") == "complete":
        config.stages = {**config.stages, "cluster": OUTDATED}  # (clustered by the one before)
    words_changed = _count_unknown_words(results, label_encoder if params.label_model else encoder,
                                         params.label_model, tokenizer_changes)
    if new or n_merge is not None or model_changes or words_changed:
        save_config(dataset, key, config)
        save_results(dataset, key, results)
    blank = blank_labels(label_counts(samples, label_field))
    if not images:
        progress(1.0)
        report = EmbeddingReport()
    else:
        report = compute_image_embeddings(samples, key, recompute=recompute, encoder=encoder,
                                          progress=lambda f: progress(0.05 + 0.95 * f))
    report.n_labels_embedded, report.n_blank_labels = len(new), blank
    report.n_merge_embedded, report.label_model = n_merge or 0, params.label_model
    return report


def _label_vectors(encoder, labels, results, progress):
    """Embeddings of the new ``labels``. A label the encoder reads as one embedded before (its
    ``text_keys``: ``DRILL`` after ``drill``, for CLIP's lowercasing tokenizer) gets that
    label's vector, bitwise, as it would in one call: the two then score exactly alike."""
    keys_of = getattr(encoder, "text_keys", None)
    if keys_of is None or not len(results.labels):
        return encoder.embed_texts(labels, progress=progress)
    table = np.asarray(results.label_embeddings, dtype=np.float32).reshape(-1, encoder.dim)
    row = {}
    for i, key in enumerate(keys_of(results.labels)):
        row.setdefault(key, i)
    keys = keys_of(labels)
    todo = [l for l, key in zip(labels, keys) if key not in row]
    embedded = dict(zip(todo, encoder.embed_texts(todo, progress=progress)))
    return np.stack([table[row[key]] if key in row else embedded[l]
                     for l, key in zip(labels, keys)])


def _collection_name(samples):
    """What a run records as its collection: a saved view's name, None for the dataset, ""
    for an unsaved view (which cannot be found again: forms then keep the open view)."""
    if getattr(samples, "is_saved", False):
        return samples.name
    return None if samples is samples._dataset else ""


def _embed_for_merging(config, results, label_model, label_encoder, progress):
    """Embed with ``label_model`` the labels that lack a merge embedding (all of them when the
    model changed); drop the table when there is no label model. Returns how many labels it
    embedded, None when nothing changed."""
    table = np.asarray(results.merge_embeddings, dtype=np.float32)
    if not label_model:
        changed = config.label_model is not None or table.size > 0
        config.label_model = config.label_model_fingerprint = None
        results.merge_embeddings = np.zeros((0, 0), np.float32)
        return 0 if changed else None
    # (weights replaced under the same name: the table's rows would be of two models)
    fingerprint = getattr(label_encoder, "fingerprint", None)
    stored = getattr(config, "label_model_fingerprint", None)
    if config.label_model != label_model or table.ndim != 2 or (
            fingerprint and stored and fingerprint != stored):
        table = np.zeros((0, 0), np.float32)
    todo = list(results.labels)[len(table):]
    if not todo:  # (a run recorded before the fingerprint was kept gets it now)
        if fingerprint and not stored:
            config.label_model_fingerprint = fingerprint
            return 0
        return None
    emb = label_encoder.embed_texts(todo, progress=progress)
    results.merge_embeddings = emb if not len(table) else np.vstack([table, emb])
    config.label_model, config.label_model_fingerprint = label_model, fingerprint
    return len(todo)


def _count_unknown_words(results, encoder, label_model, recount):
    """Count, with the tokenizer of the encoder of steps 4-6, the words it splits into pieces
    (what names clusters) of the labels not counted yet (the counts follow :attr:`labels` as
    :attr:`merge_embeddings` do), or of all of them when that tokenizer changed (``recount``).
    ``encoder`` is None when ``label_model`` was not loaded (nothing of it changed, as in a run
    made before the counts): its tokenizer alone is then loaded, and if it cannot be, the
    counts are left for a later run. An encoder without a tokenizer gives no evidence (zeros).
    Returns whether the counts changed."""
    counted = np.zeros(0, np.float32) if recount else np.asarray(results.unknown_words, np.float32)
    todo = list(results.labels)[len(counted):]
    if not todo:
        changed = len(counted) != len(results.unknown_words)
        results.unknown_words = counted
        return changed
    if encoder is None:
        from ..model.sentence_encoder import load_tokenizer

        tokenizer = load_tokenizer(label_model)
        if tokenizer is None:
            return False
    else:
        tokenizer = getattr(encoder, "tokenizer", None)
    more = np.zeros(len(todo), np.float32) if tokenizer is None else unknown_words(tokenizer, todo)
    results.unknown_words = np.concatenate([counted, more])
    return True


@holds_run("compute embeddings", shared=True)
def compute_image_embeddings(samples, key=DEFAULT_KEY, *, recompute=False, encoder=None,
                             device="auto", num_workers=None, max_pixels=None, progress=None):
    """Embed the images of ``samples`` for an existing run, with the run's model, prompt, JPEG
    decoding and precision (an ``encoder`` given must match them: mixed embeddings are not
    comparable), on ``device`` with ``num_workers`` decoding processes, refusing images over
    ``max_pixels`` (see :class:`EmbedParams`).

    The image half of :func:`compute_embeddings`; it writes sample fields only, so several
    processes may run it at once on disjoint views of one dataset (one shard each), sharing
    the run's lease: no other stage of the run starts while one of them writes.

    Returns:
        an :class:`EmbeddingReport`.
    """
    _check_collection(samples)
    dataset = samples._dataset
    reload_dataset(dataset, key)  # (the fields another shard's process created)
    if not dataset.has_run(key):
        raise VLSRError(f"No VLSR run {key!r} on this dataset: compute embeddings first")
    config = dataset.get_run_info(key).config
    _check_outputs(samples, key, config.label_field)
    if encoder is None:
        encoder = _encoder(config.params(EmbedParams, device=device, num_workers=num_workers,
                                         max_pixels=max_pixels))
        if not _same_model(config, encoder):  # (the folder's weights replaced, or another copy)
            raise VLSRError(f"The model {config.model!r} holds other weights ({_fingerprint(encoder)}) "
                            f"than those run {key!r} embedded with "
                            f"({getattr(config, 'model_fingerprint', None)}): embeddings of two "
                            "models are not comparable; use compute_embeddings to switch the run "
                            "to these")
    elif not _same_model(config, encoder) or (encoder.prompt, _image_setup(encoder)) != (
        config.prompt, _image_setup(config)
    ):
        def setup(obj, model):
            draft, precision = _image_setup(obj)
            return f"{model}, prompt {obj.prompt!r}, jpeg_draft {draft}, precision {precision}"

        raise VLSRError(f"This encoder ({setup(encoder, encoder.model_name)}) is not the one of run "
                        f"{key!r} ({setup(config, config.model)}): use compute_embeddings to switch")
    fields = sample_fields(key)
    outputs = {
        fields["embedding"]: lambda name: dataset.add_sample_field(name, fo.VectorField),
        fields["error"]: lambda name: dataset.add_sample_field(name, fo.StringField),
        # a list of no declared type: bookkeeping, not shown among the App's sidebar filters
        fields["image_file"]: lambda name: dataset.add_sample_field(name, fo.ListField),
    }
    crops = config.crops
    path = _label_path(samples, config.label_field)
    if crops:
        outputs[fields["crop_embeddings"]] = lambda name: dataset.add_sample_field(name, fo.ArrayField)
        # lists of no declared type: bookkeeping, not shown among the App's sidebar filters
        outputs[fields["crop_ids"]] = lambda name: dataset.add_sample_field(name, fo.ListField)
        outputs[fields["crop_boxes"]] = lambda name: dataset.add_sample_field(name, fo.ListField)
    _create_outputs(dataset, key, config, outputs)
    tag = embedding_tag(config)
    # the weights load before anything is marked: a model that cannot be had (out of memory,
    # say) leaves the run as it was
    load = getattr(encoder, "load", lambda: encoder)
    if recompute:
        load()
        _mark_for_recompute(samples, fields)
    current = crops_current(key, path) if crops else F(fields["embedding"]).exists()
    if getattr(config, "stamped", None):  # (a kill between the writes of an embedding and of
        # its stamp, written last: the file's changes went unnoticed for good)
        current = current & F(fields["image_file"]).exists()
        n_stamped = 0
    else:  # a run made before: its embeddings are stamped as their files are now
        n_stamped = _stamp_earlier(samples, fields, tag)
        if samples is dataset or len(samples) >= len(run_collection(dataset, key)):
            # all of them: from now on, one without its stamp is a write a kill cut short
            update_run_doc(dataset, key, {"$set": {"config.stamped": True}})
    todo = samples.match(~current)
    # and the images whose file changed since they were embedded (or marked to be again)
    changed, marked, foreign, missing = _changed_images(samples.match(current),
                                                        fields["image_file"], tag)
    if len(changed):  # their scores and final labels are of the pictures before, until the
        # stages run again (a run stopped before they did left them, without a word)
        load()
        config.stages = _outdated(config.stages)
        save_config(dataset, key, config)
    ids = sample_ids(todo)
    n_todo = len(ids) + len(changed)
    report = EmbeddingReport(n_skipped=len(samples) - n_todo,
                             n_changed=len(changed) - marked - foreign, n_foreign=foreign,
                             n_missing=missing, n_stamped=n_stamped)
    buffer = _Writer(dataset, key, fields, crops)
    read = ["filepath", fields["image_file"], fields["error"]] + (
        [f"{path}.id", f"{path}.bounding_box", f"{path}.label"] if crops else [])
    size = chunks.EMBED_CHUNK_SIZE
    done, resized = 0, []  # (the embedded images whose file was replaced: read their size)
    try:  # what is embedded is written, however the loop ends (Ctrl-C, a failure): resumes skip it
        # a chunk of images at a time, so that no per-image list grows with n; those not
        # embedded from the to-do view (one another process embeds meanwhile leaves it), then
        # the changed ones, which hold an embedding
        for embedded, (chunk_ids, (paths, before, stored_error, *boxes)) in itertools.chain(
                zip(itertools.repeat(False), iter_chunks(todo, read, size, ids)),
                zip(itertools.repeat(True), iter_chunks(samples, read, size, changed))
                if len(changed) else ()):
            # before reading: a later change shows; with what embeds them, as a merge of
            # another run's samples brings its embeddings
            stamps = [stamp and [*stamp, tag] for stamp in map(file_stamp, paths)]
            resized += [i for i, now, then in zip(chunk_ids, stamps, before)
                        if embedded and replaced(now, then)]
            if crops:
                box_ids, boxes, box_labels = (as_label_lists(v, path) for v in boxes)
                batches = encoder.iter_image_batches(paths, boxes, (config.crop_padding,
                                                                    config.crop_min_size))
            else:
                batches = encoder.iter_image_batches(paths)
            for batch in batches:
                for k, (i, e) in enumerate(zip(batch.indices, batch.embeddings)):
                    if np.isfinite(e).all():
                        record = None
                        if crops:
                            record = crop_record(box_ids[i], boxes[i], batch.crops[k])
                            # (of the boxes scored: a blank label's is cut, for a label
                            # given it later, and not counted)
                            scored = np.array([usable(l) for l in box_labels[i]], dtype=bool)
                            cut = np.isfinite(batch.crops[k]).all(axis=1)
                            report.n_crops += int((cut & scored).sum())
                            report.n_crop_fallback += int((~cut & scored).sum())
                        buffer.add(chunk_ids[i], e, None, record, stamps[i])
                        report.n_embedded += 1
                    else:  # e.g. a float16 overflow; a stored NaN would also hide the image from resumes
                        buffer.add(chunk_ids[i], None, NON_FINITE, replaces=embedded)
                        report.failures.append((chunk_ids[i], paths[i], NON_FINITE))
                for f in batch.failures:
                    if embedded and _kept(before[f.index], stamps[f.index]):
                        report.kept.append((chunk_ids[f.index], f.path, f.reason))
                        continue
                    if not embedded and stored_error[f.index] == f.reason:
                        # (unreadable as before: rewriting the same error bumped the sample's
                        # last_modified_at on every run, and with it the export's date_created)
                        report.failures.append((chunk_ids[f.index], f.path, f.reason))
                        continue
                    buffer.add(chunk_ids[f.index], None, f.reason, replaces=embedded)
                    report.failures.append((chunk_ids[f.index], f.path, f.reason))
                if buffer.due():
                    buffer.flush()
                done += len(batch.indices) + len(batch.failures)
                if progress is not None:
                    progress((done + batch.partly) / max(n_todo, 1))
    finally:
        buffer.flush()
    if resized:  # the size read of the picture before is not this one's (an export's boxes)
        dataset.select(resized).exists("metadata").compute_metadata(overwrite=True,
                                                                    progress=False)
    if progress is not None:
        progress(1.0)
    return report


def file_stamp(path):
    """``[size, mtime_ns]`` of a local image file, or None (no such file, or not a local path:
    a change to it is not noticed)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


def replaced(now, then):
    """Whether a file whose :func:`file_stamp` is ``now`` is no longer the one of the stamp
    ``then`` a run kept (another size or time of change; a tag after them aside); a file not
    found now, or a stamp without them, tells nothing."""
    return now is not None and bool(then) and then[0] is not None and now[:2] != then[:2]


def embedding_tag(config):
    """A short id of what makes a run's image embeddings: the model's weights and how images are
    decoded and computed. Kept beside each image's :func:`file_stamp`: an embedding brought
    from another run (``merge_samples``) is another model's, however alike its length."""
    made = [getattr(config, "model_fingerprint", None) or config.model, *_image_setup(config)]
    return hashlib.sha256(json.dumps(made).encode()).hexdigest()[:16]


def _kept(then, now):
    """Whether an embedded image that could not be embedded again keeps its embedding: a
    recompute's (``then``, its stamp, marked :data:`RECOMPUTE`) of the file it embedded
    (``now``, its stamp read before with the tag, not another file): what fails is this
    reading (a ``max_pixels`` too low, say), and the embedding is still the picture's."""
    return (bool(then) and len(then) == 3 and then[2] == RECOMPUTE
            and not replaced(now, then))


def _outdated(stages):
    """The run's stage states once image embeddings it used are made anew: the shards of a
    scoring or clustering still to run would write with other embeddings than those that
    ran: they refuse, and the stage reads as stopped part-way (run it again); one that ran
    is out of date (its scores and labels, of the embeddings before, would be exported as
    the new ones')."""
    return {stage: "running" if state.startswith("shards:") else
            OUTDATED if state == "complete" and stage in ("score", "cluster")
            else state for stage, state in (stages or {}).items()}


def _mark_for_recompute(samples, fields):
    """Tag the file stamp of every embedded image of ``samples`` :data:`RECOMPUTE`, keeping
    the file's size and time if any: each is embedded again as if its file had changed."""
    stamp = fields["image_file"]
    for ids, (stamps,) in iter_chunks(samples.exists(fields["embedding"]), [stamp]):
        check_held(samples._dataset)
        samples.set_values(stamp, {i: [*(s or [None, None])[:2], RECOMPUTE]
                                   for i, s in zip(ids, stamps)}, key_field="id", validate=False)


def recompute_left(samples, key):
    """How many images of ``samples`` a recompute stopped part-way left to embed again
    (:data:`RECOMPUTE`)."""
    stamp = sample_fields(key)["image_file"]
    if not samples._dataset.has_field(stamp):
        return 0
    return samples.mongo([{"$match": {f"{stamp}.2": RECOMPUTE}}]).count()


def foreign_problem(samples, key):
    """Why the image embeddings of ``samples`` are not all of run ``key``'s model, or None:
    some were made by another run's (brought by ``merge_samples``, say)."""
    config = samples._dataset.get_run_info(key).config
    fields = sample_fields(key)
    stamp = fields["image_file"]
    if not samples._dataset.has_field(stamp):
        return None
    # (of an embedding there: a model switched since drops them, and leaves their stamps)
    # (a fourth value: the stamps of two runs' samples merged, see _foreign_stamp)
    other = {f"{stamp}.2": {"$exists": True, "$nin": [embedding_tag(config), RECOMPUTE]}}
    foreign = samples.mongo([{"$match": {"$or": [other, {f"{stamp}.3": {"$exists": True}}],
                                         fields["embedding"]: {"$ne": None}}}])
    n = foreign.count()
    if not n:
        return None
    return (f"{count(n, 'image')} {'holds an embedding' if n == 1 else 'hold embeddings'}"
            f" that another model made (brought from another run, by merge_samples say), e.g. "
            f"{foreign.first().filepath}: embed {'it' if n == 1 else 'them'} again (vlsr run, or "
            "VLSR 1 in the App: only they are embedded)")


def _changed_images(embedded, stamp, tag):
    """The ids (as :func:`sample_ids`) of the ``embedded`` samples whose image file is no longer
    the one embedded: another size or time of change in field ``stamp``, embedded by another
    model than the one of ``tag`` (:func:`embedding_tag`), or marked :data:`RECOMPUTE`; how
    many of them were so marked, and how many another model embedded; and how many files
    cannot be found now (a drive not mounted: not a change, their embeddings stay)."""
    # one streamed query, as sample_ids (a select a chunk: 4.1 s against 1.7 s at 100,000 samples)
    cursor = embedded.exists(stamp)._aggregate(
        post_pipeline=[{"$project": {"filepath": True, stamp: True}}])
    cursor.batch_size(chunks.ID_PAGE)
    changed, marked, foreign, missing = [], 0, 0, 0
    for doc in cursor:
        now, then = file_stamp(doc["filepath"]), doc[stamp]
        again = len(then) > 2 and then[2] == RECOMPUTE  # (a tag, not this model's)
        other = _foreign_stamp(then, tag)
        if again or other or replaced(now, then):
            changed.append(doc["_id"])
            marked, foreign = marked + again, foreign + other
        elif now is None and then[0] is not None:
            missing += 1
    return packed_ids(changed), marked, foreign, missing


def _stamp_earlier(samples, fields, tag):
    """Give the embeddings of ``samples`` that a version before file stamps made the stamps of
    their files as they are now, so that a later change to a file is noticed (one replaced
    before cannot be); how many."""
    unstamped = samples.exists(fields["embedding"]).exists(fields["image_file"], False)
    n = 0
    for ids, (paths,) in iter_chunks(unstamped, ["filepath"]):
        check_held(samples._dataset)
        stamps = {i: [*s, tag] for i, s in zip(ids, map(file_stamp, paths)) if s}
        samples._dataset.set_values(fields["image_file"], stamps, key_field="id",
                                    validate=False)
        n += len(stamps)
    return n


def _foreign_stamp(stamp, tag):
    """Whether a file stamp says another model than ``tag``'s made the embedding beside it:
    another tag, or a fourth value, which ``merge_samples`` appends (the stamps of two runs'
    samples merged as lists) while it keeps one embedding, the one brought."""
    return len(stamp) > 3 or len(stamp) == 3 and stamp[2] not in (tag, RECOMPUTE)


def unreadable_images(samples, key=DEFAULT_KEY):
    """``(sample id, filepath, reason)`` of every image of ``samples`` that could not be embedded."""
    error = sample_fields(key)["error"]
    if not samples.has_field(error):
        return []
    return list(zip(*samples.exists(error).values(["id", "filepath", error])))


def _image_setup(obj):
    """How images are turned into embeddings besides the model: (jpeg_draft, precision), of an
    encoder or a run's config (encoders without a precision compute at full precision)."""
    return obj.jpeg_draft, getattr(obj, "precision", "full")


def _crop_setup(obj):
    """Whether and how boxes are cut, of parameters or a run's config: (crops, padding, min size)."""
    crops = obj.crops
    return (crops, obj.crop_padding, obj.crop_min_size) if crops else (False, None, None)


def _clear(dataset, *paths):
    """Empty the fields or label attributes that exist among ``paths`` (the sample fields in
    one pass over the samples)."""
    dataset.clear_sample_fields([path for path in paths if dataset.has_field(path)])


def _fingerprint(encoder):
    return getattr(encoder, "fingerprint", None) or encoder.model_name


def _same_model(config, encoder):
    """Whether ``encoder`` holds the run's model: the same weights, wherever they are (runs
    recorded before fingerprints compare the model's name; those recorded with a sampled one,
    that)."""
    from ..model.model_source import model_fingerprint

    stored = getattr(config, "model_fingerprint", None)
    if not stored:  # (a relative path then recorded: read from here, as it was then)
        return encoder.model_name in (config.model, as_recorded(config.model or ""))
    if stored.startswith("sha256:") and not _fingerprint(encoder).startswith("sha256:"):
        return stored == model_fingerprint(encoder.model_name, sampled=True)
    return stored == _fingerprint(encoder)


def _encoder(params):
    from ..model.encoder import CLIPEncoder

    limit = {} if params.max_pixels is None else dict(max_pixels=params.max_pixels)
    return CLIPEncoder(params.model, device=None if params.device == "auto" else params.device,
                       batch_size=params.batch_size, num_workers=params.num_workers,
                       prompt=params.prompt, jpeg_draft=params.jpeg_draft,
                       precision=params.precision, load=False, **limit)


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


def _check_shardable(samples):
    problem = chunks.shard_problem(samples)
    if problem:
        raise VLSRError(problem)


def _shard_run(samples, key, stage, batch, vocabulary, finish=False):
    """:func:`open_run` for a shard or the last part (``finish``: refused while a sample of
    ``samples`` is in no shard done) of ``stage`` in ``batch``, on the vocabulary its
    preparation recorded in the results' ``vocabulary`` attribute."""
    dataset = samples._dataset
    try:  # (the run and fields as stored: the process may have loaded the dataset before them)
        reload_dataset(dataset, key)
    except RunDeletedError:
        pass  # (said below, as of a shard)
    if not dataset.has_run(key):
        raise VLSRError(f"Nothing written: there is no VLSR run {key!r} on this dataset "
                        "(deleted since the shards were prepared?)")
    state = dataset.get_run_info(key).config.stages.get(stage)
    if state != f"shards:{batch}":
        whose = "the shards'" if finish else "this shard's"
        ended = batches.finished(dataset, key, stage, batch)
        if ended:
            when = f" at {shown_time(ended['finished_at'])}" if "finished_at" in ended else ""
            refused = (f"; a prepare of it again at {shown_time(ended['refused_at'])} was "
                       f"refused ({ended['refused']}): prepare it again once that is done"
                       if "refused_at" in ended else "")
            raise BatchFinished(f"Nothing to do: {whose} {STAGE_NAMES[stage]} of run {key!r} "
                                f"(batch {batch!r}) was finished already{when}, every shard "
                                f"done{refused}")
        raise VLSRError(f"Nothing written: {whose} {STAGE_NAMES[stage]} of run {key!r} is not "
                        f"the one in progress (the stage is {_state_text(state)}): a later run "
                        "of the stage superseded its batch (which then has nothing to do), or "
                        "it was never prepared")
    left = finish and batches.missing(samples, key, stage, batch)
    if left:
        raise VLSRError(f"Nothing finished: {count(left, 'sample')} of these "
                        f"{'is' if left == 1 else 'are'} in no shard of this "
                        f"{STAGE_NAMES[stage]} done yet: run every shard, then finish")
    results = load_results(dataset, key)
    run = open_run(samples, key, vocabulary=list(getattr(results, vocabulary)), results=results,
                   shard=True)
    if stage == "score" and len(results.score_frequencies) == len(run.vocabulary):
        run.frequencies = results.score_frequencies  # (none in a batch prepared before they were)
    return run


def _state_text(state):
    if state is None:
        return "not started"
    return "in other shards" if state.startswith("shards:") else state


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
    samples whose values change (with ``copy_to``, on every sample). Returns the number of
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
    # rewrote every sample; a new copy is written whole), and to keep a curator's own tags
    stored = [
        f"{run.path}.{attrs['canonical']}", f"{run.path}.{attrs['cluster']}",
        f"{fields['labels']}.classifications.label",
        f"{fields['labels']}.classifications.confidence",
        f"{fields['labels']}.classifications.tags",
        f"{fields['label']}.label", f"{fields['label']}.confidence", f"{fields['label']}.tags",
        # (to tell labels changed since they were scored)
        f"{run.path}.{attrs['similarity']}", fields["min_similarity"]]
    summaries = _score_summary_fields(key, run.path, bool(run.config.crops))
    row = {l: i for i, l in enumerate(label_map.vocabulary)}
    done = written = renumbered = unscored = 0
    for chunk in run.read_chunks(samples, stored + summaries):
        *values, scores, lowest = chunk.extra[:len(stored)]
        scores = as_label_lists(scores, run.path)
        unscored += _unscored(chunk, scores, lowest, row, vocab_emb)
        # (labels removed or cleared by hand: the lowest score of a label gone, say)
        resummed, summary = _score_summaries(key, chunk, scores, lowest,
                                             chunk.extra[len(stored):], run.path)
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
        to_write = range(len(chunk.ids)) if copy_to else changed
        if to_write:
            _write_map_values(run, samples, _only(chunk, to_write), new.only(to_write), copy_to)
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


def _write_map_values(run, samples, chunk, new, copy_to):
    """Write :class:`_MapValues` ``new`` on the samples of ``chunk`` (see write_label_map)."""
    attrs, fields = label_attributes(run.key), sample_fields(run.key)
    run.write_object_values(samples, chunk, attrs["canonical"], new.canonical)
    run.write_object_values(samples, chunk, attrs["cluster"], new.cluster)

    def final_docs():  # new documents (ids) on every call
        return [classification_doc(*f) if f is not None else None for f in new.final]

    run.write_sample_values(samples, chunk, {
        fields["labels"]: [classifications_doc(zip(names, scores), tags)
                           for names, scores, tags in zip(new.names, new.scores, new.set_tags)],
        fields["label"]: final_docs(),
        **({copy_to: final_docs()} if copy_to else {}),
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


def _only(chunk, keep):
    """The samples of ``chunk`` at positions ``keep``."""
    return _Chunk([chunk.ids[k] for k in keep], [chunk.label_ids[k] for k in keep],
                  [chunk.labels[k] for k in keep], [chunk.sets[k] for k in keep],
                  chunk.images[keep], [])


def _float(x):
    return None if x is None else float(x)


def _floats(scores, n):
    return [None] * n if scores is None else [float(x) for x in scores]


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


@holds_run("vlsr run")
def run_vlsr(samples, label_field, key=DEFAULT_KEY, embed=None, score=None, merge=None, *,
             recompute=False, encoder=None, progress=None, **overrides):
    """All three stages: embed, score, cluster and merge. Returns the :class:`EmbeddingReport`.

    Args:
        embed, score, merge: the parameters of each stage (:class:`EmbedParams`,
            :class:`ScoreParams`, :class:`MergeParams`); ``overrides`` replace single fields of
            any of them, e.g. ``model="./clip", top_k=3, eps=0.1``.
        progress: called as ``progress(stage_name, fraction)`` with stage names ``embed``,
            ``score`` and ``cluster``.
        others: see :func:`compute_embeddings`.
    """
    progress = progress or (lambda stage, fraction: None)
    embed, score, merge = (
        cls.resolve(given, **{k: v for k, v in overrides.items() if k in cls.names()})
        for cls, given in ((EmbedParams, embed), (ScoreParams, score), (MergeParams, merge))
    )
    unknown = set(overrides) - {n for cls in PARAM_CLASSES for n in cls.names()}
    if unknown:
        raise ParamError(sorted(unknown)[0], f"unknown parameter(s) {sorted(unknown)}")
    dataset = samples._dataset
    config = dataset.get_run_info(key).config if dataset.has_run(key) else None
    # what scoring would refuse, said before the model loads and the images are embedded
    problem = label_filter_problem(samples, label_field, getattr(config, "collection", ""),
                                   key)
    if problem:
        raise VLSRError(problem)
    if isinstance(config, VLSRRunConfig):
        if samples is not dataset:  # (of the whole dataset: its embedding widens the run)
            _check_inside(samples, key)
    report = compute_embeddings(samples, label_field, key, embed, recompute=recompute,
                                encoder=encoder, progress=lambda f: progress("embed", f))
    score_labels(samples, key, score, progress=lambda f: progress("score", f))
    cluster_and_merge(samples, key, merge, progress=lambda f: progress("cluster", f))
    return report


def _check_collection(samples):
    if len(samples) == 0 and not _count_repaired(samples):
        raise VLSRError("There are no samples to process (empty dataset or view)")
    problem = media_problem(samples)
    if problem:
        raise VLSRError(problem)


def _load_or_init(dataset, key, label_field):
    """The run's config and results, registering a new run if there is none."""
    if dataset.has_run(key):  # a VLSR run on this label field: checked by _check_outputs
        reload_run(dataset, key)  # (as stored now, not as this process first read it)
        config = dataset.get_run_info(key).config
        results = load_results(dataset, key)
        if results is not None:
            return config, results
    else:
        config = VLSRRunConfig(label_field=label_field, model=None, created_fields=[],
                               created_views=[], stamped=True)
        with dataset_document(dataset):
            dataset.register_run(key, config)
    return config, VLSRResults(dataset, config, key)


@dataclass
class _Chunk:
    """A chunk of samples as the stages read it: ids, per sample its label objects' ids and
    strings (:func:`label_objects`) and its distinct usable labels, and a float32 (n, dim)
    matrix of image embeddings with NaN rows for images that have none."""

    ids: list
    label_ids: list
    labels: list
    sets: list
    images: np.ndarray
    extra: list  # values of the extra fields asked for, one list per field


@dataclass
class _Run:
    """What stages 2 and 3 know before their chunk loop: the run, the sample ids (12 bytes a
    sample, the only state that grows with the collection) and the vocabulary."""

    key: str
    dataset: fo.Dataset
    config: VLSRRunConfig
    results: VLSRResults
    path: str
    ids: np.ndarray
    vocabulary: list
    frequencies: np.ndarray
    vocab_emb: np.ndarray
    merge_emb: np.ndarray  # the vocabulary embedded for steps 4-6 (label_model, else vocab_emb)

    def read_chunks(self, samples, extra=()):
        """Yield a :class:`_Chunk` of ``samples`` at a time, with the values of ``extra`` fields."""
        fields = [f"{self.path}.id", f"{self.path}.label",
                  chunks.stored(sample_fields(self.key)["embedding"])]
        seen = 0
        for ids, (label_ids, labels, embeddings, *more) in iter_chunks(samples, [*fields, *extra],
                                                                        ids=self.ids):
            seen += len(ids)
            label_ids, labels = label_objects(self.path, label_ids, labels)
            try:
                images = chunks.vectors(embeddings, self.dim)
            except chunks.VectorSizeError as e:
                raise VLSRError(
                    f"Sample {ids[e.row]} holds an image embedding of {e.size} values where "
                    f"the model of run {self.key!r} gives {e.dim} (copied from another run, by "
                    "merge_samples say): embed the images again (`vlsr run --recompute`, or "
                    "*Recompute* in VLSR 1's form)") from None
            yield _Chunk(ids, label_ids, labels, label_sets(labels), images, more)
        if seen < len(self.ids):
            # e.g. a view sorted and limited by a field this stage writes
            logger.warning("%d of %d samples left the view while it was being processed and "
                           "were skipped", len(self.ids) - seen, len(self.ids))

    def write_object_values(self, samples, chunk, attribute, values):
        """Set ``attribute`` on every label object of the chunk, in one bulk write: per sample,
        a value per label object."""
        set_label_attribute(samples, self.path, attribute, chunk.ids, chunk.label_ids, values)

    def write_sample_values(self, samples, chunk, values):
        """Set sample fields of the chunk, one bulk write a field: ``{field: per-sample values}``,
        values as stored (numbers, None, :func:`classification_doc`), written unvalidated."""
        check_held(self.dataset)
        for name, per_sample in values.items():
            samples.set_values(name, dict(zip(chunk.ids, per_sample)), key_field="id",
                               validate=False)

    def add_field(self, ftype, **kwargs):
        """A creator of a field of this type, for :func:`_create_outputs`."""
        return lambda name: self.dataset.add_sample_field(name, ftype, **kwargs)

    @property
    def dim(self):
        return self.vocab_emb.shape[1] if self.vocab_emb.ndim == 2 and self.vocab_emb.shape[1] else None


def open_run(samples, key, vocabulary=None, results=None, shard=False):
    """Check that stages 2 and 3 can run on ``samples``, and read what they need up front:
    ``vocabulary`` (default: the distinct labels of ``samples``) and ``results`` (default: the
    run's, loaded). A ``shard`` of a prepared collection may be empty or hold no embedding."""
    if not shard:
        _check_collection(samples)
    dataset = samples._dataset
    reload_dataset(dataset, key)  # (as stored now, not as this process first read it)
    if not dataset.has_run(key):
        raise VLSRError(f"No VLSR run {key!r} on this dataset: compute embeddings first")
    config = dataset.get_run_info(key).config
    results = results or load_results(dataset, key)
    path = _label_path(samples, config.label_field)
    _check_outputs(samples, key, config.label_field)
    problem = label_filter_problem(samples, config.label_field, config.collection, key)
    if problem:
        raise VLSRError(problem)
    problem = not shard and (embeddings_problem(samples, key) or foreign_problem(samples, key))
    if problem:
        raise VLSRError(problem)
    ids = sample_ids(samples)
    if vocabulary is None:
        vocabulary, frequencies = _scan_labels(samples, path, ids)
    else:
        frequencies = None
    try:
        vocab_emb = results.embeddings_of(vocabulary)
    except KeyError as e:
        raise VLSRError(f"{e.args[0]}: embed them first (VLSR 1: compute embeddings in the App, "
                        "vlsr run on the command line)") from None
    merge_emb = vocab_emb
    if config.label_model:
        try:
            merge_emb = results.embeddings_of(vocabulary, "merge_embeddings")
        except KeyError:
            raise VLSRError(f"Labels of run {key!r} lack their {config.label_model!r} embeddings: "
                            "run compute embeddings again") from None
    return _Run(key, dataset, config, results, path, ids, vocabulary, frequencies, vocab_emb,
                merge_emb)


def embeddings_problem(samples, key):
    """Why ``samples`` hold no image embedding of run ``key`` to score or cluster, or None."""
    fields, dataset = sample_fields(key), samples._dataset
    if dataset.has_sample_field(fields["embedding"]) and samples.exists(
            fields["embedding"]).limit(1).count():
        return None
    if dataset.has_sample_field(fields["error"]) and samples.limit(1).count() and not samples.exists(
            fields["error"], False).limit(1).count():
        return (f"No image of these could be read ({count(len(samples), 'unreadable image')}; "
                f"why is in {fields['error']!r}, and in the summary): there is no image "
                "embedding to work with")
    busy = holder(dataset, key)  # (embedding again, with another model: its fields emptied)
    if busy is not None and {"compute embeddings", "vlsr run"} & set(
            busy.get("stages") or [busy["stage"]]):
        return (f"No image embeddings for run {key!r} here yet: {running_note(busy)}; run this "
                "when it is done")
    return f"No image embeddings for run {key!r} here: compute embeddings first"


def _scan_labels(samples, path, ids):
    """The distinct usable labels of ``samples`` in order of first appearance, and how many
    samples carry each, read a chunk at a time."""
    counts = {}  # insertion-ordered: the vocabulary
    for _, (values,) in iter_chunks(samples, [f"{path}.label"], ids=ids):
        for labels in label_sets(as_label_lists(values, path)):
            for l in labels:
                counts[l] = counts.get(l, 0) + 1
    return list(counts), np.fromiter(counts.values(), dtype=np.int64, count=len(counts))


def _label_path(samples, label_field):
    try:
        return label_path(samples, label_field)
    except LabelFieldError as e:
        raise VLSRError(str(e)) from None


def _create_index(dataset, name):
    """Index ``name`` for the App's sorting; a collection at MongoDB's limit of 64 indexes (20
    runs or so on one dataset) goes without it, with a warning: the 21st scoring failed."""
    from pymongo.errors import OperationFailure

    try:
        dataset.create_index(name)
    except OperationFailure as e:
        if "too many indexes" not in str(e):
            raise
        logger.warning("%s is not indexed (the dataset has as many indexes as MongoDB allows: "
                       "delete runs no longer used): sorting by it is slower", name)


def mark_stage(run, stage, state):
    """Record in the run's config that ``stage`` is running (before it writes) or complete
    (None: drop its mark)."""
    stages = {**(run.config.stages or {}), stage: state}
    run.config.stages = {k: v for k, v in stages.items() if v is not None}
    save_config(run.dataset, run.key, run.config)


def _check_inside(samples, key, warn=False):
    """Refuse samples outside the saved view the run was made on; ``warn``, for the stage that
    makes the label map again: of samples outside ``samples`` that keep the old one's labels."""
    if not samples._dataset.has_run(key):
        return
    problem = outside_problem(samples, key)
    if problem:
        raise VLSRError(problem)
    note = warn and narrowing_note(samples, key)
    if note:
        logger.warning(note)


def _count_repaired(samples):
    """Whether a dataset counted empty holds samples, its count now repaired: MongoDB's fast
    count (``len(dataset)``) can read 0 after an unclean shutdown (a mongod killed), and every
    run then refused a dataset of 1,500 samples as empty. Its ``validate`` command recounts."""
    if samples is not samples._dataset:  # (a view is counted exactly)
        return False
    collection = samples._dataset._sample_collection
    held = collection.count_documents({}, limit=1)
    if held:
        collection.database.command("validate", collection.name)
        logger.warning("MongoDB counted the samples of dataset %r as none (after an unclean "
                       "shutdown of the database?); recounted: %s", samples._dataset.name,
                       count(len(samples), "sample"))
    return bool(held)


def _check_outputs(samples, key, label_field):
    problem = output_problem(samples, key, label_field)
    if problem:
        raise VLSRError(problem)


def _create_outputs(dataset, key, config, creators):
    """Create the missing output fields of run ``key`` (``{name: creator(name)}``), each recorded
    in the run's config before it is created, so that deleting the run removes exactly them."""
    if all(dataset.has_field(name) for name in creators):
        return
    with dataset_document(dataset):
        missing = [name for name in creators if not dataset.has_field(name)]
        if not missing:
            return
        if config.created_fields is not None:
            config.created_fields = list(config.created_fields) + missing
            save_config(dataset, key, config)
        for name in missing:
            creators[name](name)
        _ticked_in_the_grid(dataset, key, missing)


def _ticked_in_the_grid(dataset, key, created):
    """Which label fields the App's grid ticks, now that the run created ``created``: the input
    labels and the final label, not the suggestions and canonical label sets (FiftyOne ticks
    every label field by default, four of them crowding each tile). The dataset's own choice
    is kept: its ticked fields get the final label, its unticked ones the two sets."""
    fields = sample_fields(key)
    quiet = [n for n in created if n in (fields["suggestions"], fields["labels"])]
    shown = [n for n in created if n == fields["label"]]
    active = dataset.app_config.active_fields
    if not (quiet or shown):
        return
    if active is None:
        active = fo.DatasetAppConfig.default_active_fields(dataset)  # every label field
        active.paths = [p for p in active.paths if p not in quiet]
    elif active.exclude:
        active.paths = list(active.paths) + [n for n in quiet if n not in active.paths]
    else:
        active.paths = list(active.paths) + [n for n in shown if n not in active.paths]
    dataset.app_config.active_fields = active
    dataset.save()


def _save_view(run, name, view, description):
    """Save a review view of the run, recording it first if the run creates it now."""
    check_held(run.dataset)
    if not run.dataset.has_saved_view(name) and run.config.created_views is not None:
        run.config.created_views = list(run.config.created_views) + [name]
        save_config(run.dataset, run.key, run.config)
    with dataset_document(run.dataset), persistence_kept(run.dataset):
        run.dataset.save_view(name, view, description=description, overwrite=True)
        drop_saved_views(run.dataset, name, keep=1)  # (the same view, saved at once elsewhere)


FLUSH_ORDER = ["embedding", "error", "crop_embeddings", "crop_boxes", "crop_ids", "image_file"]


class _Writer:
    """Buffers per-sample embeddings (and crops) and errors and writes them with one bulk update
    a field, when :data:`WRITE_EVERY` samples or :data:`WRITE_SECONDS` have gathered; run
    ``key`` records when embeddings changed (a map made before is out of date)."""

    def __init__(self, dataset, key, fields, crops=False):
        self.dataset, self.key, self.fields = dataset, key, fields
        self.names = ["embedding", "error", "image_file", *(CROP_RECORD if crops else ())]
        self.values = {name: {} for name in self.names}
        self.changes = False
        self.since = _clock()

    def add(self, sample_id, embedding, error, crops=None, stamp=None, replaces=False):
        """Buffer a sample's values; ``crops`` from :func:`crop_record` and the image file's
        ``stamp`` (:func:`file_stamp`), both None when it was not embedded; ``replaces``: the
        sample held an embedding, which this one (or the error) replaces."""
        row = [embedding, error, stamp, *(crops or (None, None, None))]
        for name, value in zip(self.names, row):
            self.values[name][sample_id] = value
        self.changes |= embedding is not None or replaces

    def due(self):
        n = len(self.values["error"])
        return n >= WRITE_EVERY or (n and _clock() - self.since >= WRITE_SECONDS)

    def flush(self):
        if self.values["error"]:
            check_held(self.dataset)
            # the fields a resume reads as "done" last: the crops' ids (with their boxes, a
            # sample's crops read as current) after the crops, the file stamp after all; a
            # kill between two writes left new ids beside the old crops, taken for done
            for name in sorted(self.names, key=FLUSH_ORDER.index):
                self.dataset.set_values(self.fields[name], self.values[name], key_field="id")
            if self.changes:
                update_run_doc(self.dataset, self.key,
                               {"$set": {"config.images_changed": utc_now()}})
        self.values = {name: {} for name in self.names}
        self.changes = False
        self.since = _clock()

"""Stage 1, :func:`compute_embeddings`: the labels into the run record, then the images onto
``{key}_embedding``, streamed and resumable (:func:`compute_image_embeddings`, also in shards)."""

import dataclasses
import itertools
import time
from dataclasses import dataclass, field

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from ..engine.defaults import DEFAULT_KEY
from ..engine.params import EmbedParams, ParamError
from ..model.model_source import MINILM, as_recorded
from ..model.tokens import unknown_words
from ..wording import count
from . import chunks
from .chunks import iter_chunks, sample_ids
from .crops import crop_paths, crop_record, crop_record_fields, crops_current
from .labels import (
    as_label_lists,
    blank_labels,
    blank_note,
    label_counts,
    label_selection_problem,
    unlabelled_problem,
    usable,
)
from .lease import check_held, collection, dataset_document, holds_run
from .runs import (
    CROP_RECORD,
    OUTDATED,
    VLSRResults,
    VLSRRunConfig,
    load_results,
    reload_dataset,
    reload_run,
    run_collection,
    sample_fields,
    save_config,
    save_results,
    update_run_doc,
    utc_now,
)
from .stage_run import (
    VLSRError,
    _check_collection,
    _check_outputs,
    _create_outputs,
    _label_path,
    _scan_labels,
)
from .stamps import (
    _changed_images,
    _image_setup,
    _kept,
    _mark_for_recompute,
    _stamp_earlier,
    embedding_tag,
    file_stamp,
    replaced,
)

# Embeddings are written in bulk every WRITE_EVERY samples or WRITE_SECONDS, whichever comes
# first: a crash loses at most a few seconds of work, and fast runs still write in large batches.
WRITE_EVERY = 1024

WRITE_SECONDS = 5.0

_clock = time.monotonic

# The reason recorded for an image whose embedding came out NaN or infinite.
NON_FINITE = "the model returned a non-finite embedding (NaN or inf)"


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
    first_seen = False  # (whether an image without an embedding got one: see _outdate_stages)
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
                        if not embedded and not first_seen:
                            first_seen = _outdate_stages(dataset, key)
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


def _outdated(stages):
    """The run's stage states once image embeddings it used are made anew: the shards of a
    scoring or clustering still to run would write with other embeddings than those that
    ran: they refuse, and the stage reads as stopped part-way (run it again); one that ran
    is out of date (its scores and labels, of the embeddings before, would be exported as
    the new ones')."""
    return {stage: "running" if state.startswith("shards:") else
            OUTDATED if state == "complete" and stage in ("score", "cluster")
            else state for stage, state in (stages or {}).items()}


def _outdate_stages(dataset, key):
    """Mark the scoring and clustering of run ``key`` out of date (:func:`_outdated`) before the
    first embedding of an image they did not see is written: one scheduled while image shards
    still ran covered a third of the samples, and read as complete. Returns True."""
    reload_run(dataset, key)  # (as stored now: another shard may have marked them)
    config = dataset.get_run_info(key).config
    stages = _outdated(config.stages)
    if stages != (config.stages or {}):
        config.stages = stages
        save_config(dataset, key, config)
    return True


def unreadable_images(samples, key=DEFAULT_KEY):
    """``(sample id, filepath, reason)`` of every image of ``samples`` that could not be embedded."""
    samples = collection(samples)
    error = sample_fields(key)["error"]
    if not samples.has_field(error):
        return []
    return list(zip(*samples.exists(error).values(["id", "filepath", error])))


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

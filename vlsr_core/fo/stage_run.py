"""What the stages share: opening a run on a collection (:func:`open_run`), reading it a chunk
at a time (:class:`_Run`), the checks each stage makes first, and creating and recording the
run's output fields and saved views."""

import logging
from dataclasses import dataclass

import fiftyone as fo
import numpy as np

from ..wording import count
from . import batches, chunks
from .chunks import iter_chunks, sample_ids
from .labels import (
    LabelFieldError,
    as_label_lists,
    label_filter_problem,
    label_objects,
    label_path,
    label_sets,
    media_problem,
    set_label_attribute,
)
from .lease import check_held, dataset_document, holder, running_note
from .review import shown_time
from .runs import (
    STAGE_NAMES,
    RunDeletedError,
    VLSRResults,
    VLSRRunConfig,
    drop_saved_views,
    load_results,
    narrowing_note,
    output_problem,
    outside_problem,
    persistence_kept,
    reload_dataset,
    sample_fields,
    save_config,
)
from .stamps import foreign_problem

logger = logging.getLogger(__name__)


class VLSRError(ValueError):
    """A stage cannot run on this collection as asked; the message says what to do."""


class BatchFinished(VLSRError):
    """A shard run again after its stage was finished: it has nothing to do."""


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


def _only(chunk, keep):
    """The samples of ``chunk`` at positions ``keep``."""
    return _Chunk([chunk.ids[k] for k in keep], [chunk.label_ids[k] for k in keep],
                  [chunk.labels[k] for k in keep], [chunk.sets[k] for k in keep],
                  chunk.images[keep], [])


def _float(x):
    return None if x is None else float(x)


def _floats(scores, n):
    return [None] * n if scores is None else [float(x) for x in scores]


def _check_collection(samples):
    if len(samples) == 0 and not _count_repaired(samples):
        raise VLSRError("There are no samples to process (empty dataset or view)")
    problem = media_problem(samples)
    if problem:
        raise VLSRError(problem)


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
        _ticked_in_the_grid(dataset, key, config, missing)


def _ticked_in_the_grid(dataset, key, config, created):
    """Which label fields the App's grid ticks, now that the run created ``created``: the input
    labels and the final label, not the suggestions and canonical label sets (FiftyOne ticks
    every label field by default, four of them crowding each tile). The dataset's own choice
    is kept: its ticked fields get the final label, its unticked ones the two sets. A dataset
    that made no choice gets one, and the run records FiftyOne's default it replaced
    (``grid_default``), which deleting the run puts back unless the choice changed since."""
    fields = sample_fields(key)
    quiet = [n for n in created if n in (fields["suggestions"], fields["labels"])]
    shown = [n for n in created if n == fields["label"]]
    active = dataset.app_config.active_fields
    if not (quiet or shown):
        return
    if active is None:
        active = fo.DatasetAppConfig.default_active_fields(dataset)  # every label field
        config.grid_default = [p for p in active.paths if p not in fields.values()]
        save_config(dataset, key, config)
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

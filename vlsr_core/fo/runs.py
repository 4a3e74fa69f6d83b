"""The VLSR run record on a FiftyOne dataset: config (every parameter), run (fields), results (arrays).

A run lives under a key (default ``vlsr``); its fields are named after the key, so runs with
different keys (two models, say) sit side by side. The config records every field and saved view
the run created (before creating it); ``dataset.delete_run(key)`` removes exactly those through
:meth:`VLSRRun.cleanup`. A stage refuses to start where one of its outputs would land on a field,
label attribute or view that the run did not create (:func:`output_problem`), so the input labels
and anything else of the user's are never written over or deleted.
"""

import contextlib
import logging
import time
from copy import deepcopy
from datetime import datetime, timezone

import eta.core.serial as etas
from mongoengine.errors import DoesNotExist
import fiftyone as fo
import fiftyone.core.runs as fors
from fiftyone import ViewField as F
from fiftyone.core.utils import to_slug
import numpy as np

from ..engine.defaults import DEFAULT_KEY, key_problem
from ..engine.params import PARAM_CLASSES
from ..wording import count
from . import batches
from .chunks import every_field
from .labels import A_VALUE, first_match, input_fields
from .lease import (RunBusyError, check_held, collection, dataset_document, holder, run_lease,
                    running_note)

logger = logging.getLogger(__name__)

# Field name suffixes, appended to the run key ("vlsr" -> "vlsr_embedding", ...).
SAMPLE_FIELDS = {
    "embedding": "embedding",  # image embedding (VectorField)
    "error": "error",  # why the image could not be embedded
    "image_file": "image_file",  # [size, mtime_ns] of the image file embedded (a change: again)
    "suggestions": "suggestions",  # top-k vocabulary labels (Classifications)
    "min_similarity": "min_similarity",  # lowest score of the sample's labels
    "best_gap": "best_gap",  # best suggestion's score minus best assigned label's score
    "labels": "labels",  # canonical label set (Classifications)
    "label": "label",  # final label (Classification)
    # with crops (Detections fields): the crops embedded, as of the boxes they were cut from
    "crop_embeddings": "crop_embeddings",  # float32 (boxes, dim); NaN: scored on the image
    "crop_ids": "crop_ids",  # the ids of the boxes, aligned with the rows
    "crop_boxes": "crop_boxes",  # their bounding boxes when cut (a moved box is cut again)
    "min_crop_similarity": "min_crop_similarity",  # lowest crop score of the sample's boxes
}
# Tags on a sample's final label ({key}_label) saying what the review decided; the input labels
# are never tagged.
REVIEW_TAGS = {
    "accepted": "suggestion-accepted",  # a suggested label was accepted for it
    "rejected": "suggestion-rejected",  # a suggestion was rejected: the labels stay
    "edited": "map-edited",  # a review edit changed the canonical label of one of its labels
}
LABEL_ATTRIBUTES = {
    "similarity": "similarity",  # image-to-label score
    "canonical": "canonical",  # the label's canonical label
    "cluster": "cluster",  # the label's final cluster id
    # with crops (Detections fields)
    "crop_similarity": "crop_similarity",  # box-to-label score (the image's if not cut)
    "crop_fallback": "crop_fallback",  # True: too small or no coordinates, scored on the image
    "crop_suggestions": "crop_suggestions",  # top-k vocabulary labels for the box, best first
    "crop_gap": "crop_gap",  # best suggestion's crop score minus the box label's
}
# The sample fields and label attributes written only when the run embeds crops.
CROP_RECORD = ("crop_ids", "crop_boxes", "crop_embeddings")  # a sample's crops, in this order
CROP_FIELDS = (*CROP_RECORD, "min_crop_similarity")
CROP_ATTRIBUTES = ("crop_similarity", "crop_fallback", "crop_suggestions", "crop_gap")


class VLSRRunConfig(fors.RunConfig):
    """Every parameter of a VLSR run, JSON-serialisable, stored with the run record.

    The recorded fields of :class:`~vlsr_core.engine.params.EmbedParams`, :class:`ScoreParams` and
    :class:`MergeParams` are attributes of the config (flat, as stored by every version), read back
    with :meth:`params`.

    Args:
        label_field: the input label field.
        created_fields, created_views: what the run created, recorded before it was created, so
            that deleting the run removes nothing else. None for runs made before vlsr kept
            this record: every existing output of the run then counts as its own.
        stages: ``{"score": "running" | "complete" | "shards:<batch>", "cluster": ...,
            "apply": ...}``: a
            stage is marked running before it writes and complete after; one still running when
            it is read stopped part-way, and its fields mix old and new results until it is run
            again. ``shards:<batch>``: prepared for delegated shards of that batch, which alone
            may write, the last of them completing it.
        collection: the saved view the run was made on, None for the whole dataset, "" for an
            unsaved view: what the vocabulary-wide stages (clustering, export) take by default.
        created_brain_runs: the FiftyOne Brain runs made on the run's embeddings
            (:mod:`vlsr_core.fo.brain`), deleted with it.
        brain_runs: Brain key -> ``{"token", "made"}`` of the run's Brain run of that name
            (:func:`mark_brain_run`; :func:`owned_brain_runs`: one of that name made since, by
            hand, is not the run's); a run of the day before tokens: when it was stamped.
        images_changed: when image embeddings were last written or taken back, ISO UTC
            (None: not since this was kept): a map made before shows the embeddings before.
        stamped: whether each image embedding of the run was written with its file's stamp
            (runs made since stamps are written with the embeddings, not runs made before),
            so that an embedding without one is a write a kill cut short, to make again.
        review: the curator's review edits (:mod:`vlsr_core.fo.review`), as records.
        applied: ``{"edits": [ids], "time": ...}``: the review edits the fields show.
        score_histogram: ``{"counts": [...], "edges": [...]}``: every label score of the run in
            bins, counted at the end of each scoring for the review panel (None: not scored, or
            scored by a version before it was kept).
        model_fingerprint: what the model is (:func:`~vlsr_core.model.model_source.model_fingerprint`),
            so that the same weights under another path keep the embeddings.
        label_model_fingerprint: likewise for the label model (None: none, or recorded before
            it was kept), so that other weights under its name embed every label again.
        copies: the fields the final labels were copied to (Apply's "copy to"), which a later
            Apply without them leaves as they are.
        cluster_shard_edits: the ids of the review edits in force when a clustering in shards
            was prepared, which its shards write (None: not sharded).
        finished: stage name ("score labels") -> when it last finished, ISO UTC (the clock
            of the machine that ran it), written by the stage (:func:`~.lease.holds_run`).
        grid_default: the label fields the App's grid ticked by default (FiftyOne's default,
            the dataset having made no choice) before the run gave it one (None: it had one).
        **kwargs: parameter values (defaults: the parameter classes') and FiftyOne's own keys.
    """

    def __init__(self, label_field=None, created_fields=None, created_views=None,
                 model_fingerprint=None, stages=None, collection=None, review=None, applied=None,
                 created_brain_runs=None, score_histogram=None, copies=None,
                 cluster_shard_edits=None, label_model_fingerprint=None, finished=None,
                 brain_runs=None, images_changed=None, stamped=None, grid_default=None,
                 **kwargs):
        kwargs.setdefault("method", "vlsr")
        if "eps" in kwargs and "mode" not in kwargs:
            kwargs["mode"] = "paper"  # stored by a version before merge modes: the paper's steps
        for cls in PARAM_CLASSES:
            for spec in cls.specs():
                if spec.recorded:
                    kwargs.setdefault(spec.name, spec.default)
        super().__init__(**kwargs)
        self.label_field = label_field
        self.created_fields = created_fields
        self.created_views = created_views
        self.model_fingerprint = model_fingerprint
        self.label_model_fingerprint = label_model_fingerprint
        self.stages = stages or {}
        self.collection = collection
        self.review = review or []
        self.created_brain_runs = created_brain_runs or []
        self.brain_runs = brain_runs or {}
        self.images_changed = images_changed
        self.stamped = stamped
        self.applied = applied
        self.score_histogram = score_histogram
        self.copies = copies or []
        self.cluster_shard_edits = cluster_shard_edits
        self.finished = finished or {}
        self.grid_default = grid_default
        # what save_config compares with (not the review, which it never writes)
        self._as_read = {k: deepcopy(v) for k, v in self.serialize().items() if k != "review"}

    def params(self, cls, **overrides):
        """The run's recorded parameters of class ``cls`` (e.g. :class:`MergeParams`), with
        ``overrides`` (execution details such as the device) on top."""
        return cls.from_dict(vars(self), **overrides)

    def record(self, params):
        """Store the recorded fields of a parameter object."""
        for name, value in params.to_dict().items():
            setattr(self, name, value)


def run_collection(dataset, key):
    """The collection run ``key`` was made on: its saved view if it still exists, else the
    dataset (also for a run made on an unsaved view, which cannot be found again)."""
    name = dataset.get_run_info(key).config.collection
    return (every_field(dataset.load_saved_view(name)) if name and dataset.has_saved_view(name)
            else dataset)


def run_samples(dataset, key):
    """The samples of run ``key`` as one collection (the grid's view of a cluster, the
    scores' histogram): :func:`run_collection`; of a grouped dataset run on an unsaved view,
    the image slices' samples the run embedded or found unreadable (the dataset alone is the
    slice the App shows, which may not be the run's)."""
    samples = run_collection(dataset, key)
    if samples is dataset and dataset.media_type == "group":
        fields = sample_fields(key)
        samples = dataset.select_group_slices(media_type="image").match(
            F(fields["embedding"]).exists() | F(fields["error"]).exists())
    return samples


def outside_problem(samples, key, by_count=False):
    """Why scoring or clustering run ``key`` on ``samples`` would mix two label maps, or None:
    ``samples`` holds samples outside the saved view the run was made on (another slice of a
    grouped dataset), whose vocabulary would replace the run's while the run's own samples
    keep outputs of the old one. A run made on the dataset, or on a view that cannot be found
    again, holds every sample (and embedding the whole dataset makes a run one of the
    dataset: :func:`~vlsr_core.fo.stages.run_vlsr` on it is fine). ``by_count``: only tell
    a target larger than the view (two counts, for a form; the ids of both otherwise: 3 s
    at 200,000 samples)."""
    dataset = samples._dataset
    name = getattr(dataset.get_run_info(key).config, "collection", None)
    if not name or not dataset.has_saved_view(name):
        return None
    if getattr(samples, "is_saved", False) and samples.name == name:
        return None
    view = dataset.load_saved_view(name)
    if by_count:
        outside = max(len(samples) - len(view), 0)
    else:
        inside = set(view.values("_id"))
        outside = sum(i not in inside for i in samples.values("_id"))
    if not outside:
        return None
    return (f"Run {key!r} was made on saved view {name!r}, and this target holds "
            f"{count(outside, 'sample')} {'more than' if by_count else 'outside'} it: scoring "
            "or clustering samples outside it under the run "
            f"would replace its label map with one of other labels, while the samples of "
            f"{name!r} keep the old one. Use another run key for those, or the saved view {name!r}")


def narrowing_note(samples, key):
    """What scoring or clustering run ``key`` on ``samples`` leaves behind, or None: samples
    outside them that hold the run's final labels (a run made on the dataset, then one view;
    two unsaved views one after the other) keep those of the old label map. (The App's forms
    warn likewise, by counts.)"""
    dataset, final = samples._dataset, sample_fields(key)["label"]
    if samples is dataset or not dataset.has_field(final):
        return None
    # (of a grouped dataset, every slice: the dataset alone is its default one)
    every = (dataset.select_group_slices(media_type="image") if dataset.media_type == "group"
             else dataset)
    outside = every.exists(final).count() - samples.exists(final).count()
    if outside <= 0:
        return None
    return (f"Run {key!r} gave final labels to {count(outside, 'sample')} outside this view: "
            "its label map is made again from the view's labels alone, and those samples keep "
            "the old one's until the run is scored and clustered on the dataset (or a view "
            "holding them), or an Apply on them writes the new one's. Use another run key to "
            "keep the two apart")


class RunDeletedError(ValueError):
    """The run was deleted by another process while this one used it."""


GROWN_LISTS = ("created_fields", "created_views", "created_brain_runs", "copies")  # sets


def save_results(dataset, key, results):
    """``dataset.save_run_results``, unless this process lost the run (:func:`check_held`)."""
    check_held(dataset)
    dataset.save_run_results(key, results)


def save_config(dataset, key, config):
    """Store what changed in ``config`` of run ``key`` since it was read or last saved, but its
    review edits: a stage holds its config for minutes, while a curator records edits and
    another stage may run, whose changes a write of the whole config would drop. Changed
    entries of a dict (``stages``) are set one by one, names added to or removed from a list of
    what the run created are added or pulled: two stages marking themselves, or creating
    fields, at once keep both. Raises :class:`RunDeletedError` if the run was deleted
    meanwhile."""
    check_held(dataset)
    values = deepcopy(config.serialize())
    before = config._as_read
    updates = [{}]  # ($addToSet and $pull on one field need two updates)
    for k, v in values.items():
        old = before.get(k)
        if k == "review" or (k in before and v == old):
            continue
        path = f"config.{k}"
        if isinstance(v, dict) and isinstance(old, dict):
            for sub in v.keys() | old.keys():
                if sub not in v:
                    updates[0].setdefault("$unset", {})[f"{path}.{sub}"] = ""
                elif sub not in old or v[sub] != old[sub]:
                    updates[0].setdefault("$set", {})[f"{path}.{sub}"] = v[sub]
        elif k in GROWN_LISTS and isinstance(v, list) and isinstance(old, list):
            added, gone = [x for x in v if x not in old], [x for x in old if x not in v]
            if added:
                updates[0].setdefault("$addToSet", {})[path] = {"$each": added}
            if gone:
                updates.append({"$pull": {path: {"$in": gone}}})
        else:
            updates[0].setdefault("$set", {})[path] = v
    for update in updates:
        if update and not update_run_doc(dataset, key, update):
            raise RunDeletedError(f"Run {key!r} was deleted while this ran: nothing more of it "
                                  "is stored")
    config._as_read = {k: v for k, v in values.items() if k != "review"}


def stored_review(dataset, key):
    """The review records of run ``key`` as stored now (read from the database, not from the
    dataset's copy of the run, which another process may have changed since)."""
    if not dataset.has_run(key):
        raise _deleted(key)
    doc = fors.Run._get_run_doc(dataset, key)
    stored = doc._get_collection().find_one({"_id": doc.id}, {"config.review": 1}) or {}
    return (stored.get("config") or {}).get("review")


def reload_dataset(dataset, key):
    """Read the dataset's fields and runs, and run ``key``, again from the database: a stage
    run in a process that loaded the dataset before another process (a shard, the App) added
    the fields it reads would not see them."""
    had = dataset.has_run(key)
    dataset._reload(hard=True)  # (its field schema: reload() would also re-read every sample held)
    if had and not dataset.has_run(key):
        raise _deleted(key)
    reload_run(dataset, key)


def reload_run(dataset, key):
    """Read run ``key`` again from the database: another process may have changed it since the
    dataset was loaded (a review edit in the App while a notebook holds the dataset)."""
    if collection(dataset).has_run(key):
        try:
            fors.Run._get_run_doc(dataset, key).reload("config")
        except DoesNotExist:
            raise _deleted(key) from None


def _deleted(key):
    return RunDeletedError(f"Run {key!r} was deleted (by another process or window) since this "
                           "dataset was loaded")


def load_results(dataset, key, tries=3, wait=0.5):
    """The results of run ``key``, read from the database. Another process rewriting them
    (a stage of the run run elsewhere) deletes the stored file, then puts the new one and
    points the run at it: a read that fails so is made again from the run as stored now, then
    refused in one line. Any other failure is raised as it is."""
    if not collection(dataset).has_run(key):  # (FiftyOne's own error)
        return dataset.load_run_results(key, cache=False)
    stopped = half_deleted(dataset, key)
    if stopped:
        raise RunDeletedError(stopped)
    for attempt in range(tries):
        doc = fors.Run._get_run_doc(dataset, key)  # (what load_run_results reads)
        read = doc.results.grid_id if doc.results else None
        try:
            return dataset.load_run_results(key, cache=False)
        except Exception as e:  # noqa: BLE001 (FiftyOne's read of a file deleted under it)
            doc.reload()
            now = doc.results.grid_id if doc.results else None
            if now == read and not (doc.results and doc.results.get() is None):
                raise  # not a rewrite: the results are as they were, and unreadable
            if attempt == tries - 1:
                raise RunBusyError(
                    f"Run {key!r}: its results could not be read ({type(e).__name__}: {e}); "
                    "another process is writing them (a stage of this run running "
                    "elsewhere): run this again when it is done") from e
            time.sleep(wait)


def update_run_doc(dataset, key, update, where=None):
    """Apply the MongoDB ``update`` to the run document of ``key`` if it matches ``where``
    (a filter on its stored fields) and reload the dataset's copy; whether it matched (not
    if the run was deleted meanwhile, by another process)."""
    doc = fors.Run._get_run_doc(dataset, key)
    collection = doc._get_collection()
    matched = collection.update_one({"_id": doc.id, **(where or {})}, update).matched_count
    if matched or collection.count_documents({"_id": doc.id}, limit=1):
        reload_run(dataset, key)
    return bool(matched)


def delete_run(dataset, key):
    """``dataset.delete_run(key)``: the run and what it created, unless a stage of the run is
    running (:class:`RunBusyError`): deleted under it, the stage would stop and leave behind
    what it created after. The run is marked as being deleted first: what a deletion stopped
    part-way leaves is refused by every stage (:func:`load_results`), not taken for a run. A
    failure while its fields go is raised with the run kept, marked (FiftyOne's own
    ``delete_run`` logs it and deletes the record, leaving the fields no run owns)."""
    dataset = collection(dataset)._root_dataset  # (a view's run is its dataset's; a patches
    # view's _dataset is one of the patches)
    if not dataset.has_run(key):  # (FiftyOne's words: "Dataset has no run key")
        raise ValueError(f"No VLSR run {key!r} on this dataset (runs: "
                         f"{', '.join(map(repr, list_vlsr_runs(dataset))) or 'none'})")
    with run_lease(dataset, key, "delete the run"):
        config = dataset.get_run_info(key).config
        config.stages = {**(config.stages or {}), "delete": "running"}
        save_config(dataset, key, config)
        config.build().cleanup(dataset, key)
        with dataset_document(dataset):
            fors.Run.delete_run(dataset, key, cleanup=False)
        batches.forget(dataset, key)


def renamed_from(config, key):
    """The key run ``key`` was made under, if FiftyOne's ``rename_run`` renamed it since, else
    None: its fields keep the names of that key, and VLSR finds a run's fields by its key."""
    made = [f for f in config.created_fields or [] if "." not in f]
    if not made or set(made) & set(sample_fields(key).values()):
        return None
    return next((name[:-len(suffix)] for name in made for suffix in sample_fields("").values()
                 if name.endswith(suffix) and len(name) > len(suffix)), None)


def renamed_note(key, old):
    """What to do about a run renamed from ``old`` to ``key``, in words."""
    return (f"Run {key!r} was renamed from {old!r} (FiftyOne's rename_run), and its fields, label "
            f"attributes and views keep the names of {old!r} ({old}_label, ...), by which VLSR "
            f"finds them: rename it back (in Python, dataset.rename_run({key!r}, {old!r})), or "
            "delete it")


def half_deleted(dataset, key):
    """What a curator reads of run ``key`` if it is not a run to use as it is: a deletion of it
    runs or stopped part-way, or it was renamed (:func:`renamed_from`); else None."""
    config = dataset.get_run_info(key).config
    old = renamed_from(config, key)
    if old is not None:
        return renamed_note(key, old)
    if not stage_stopped(config, "delete"):
        return None
    lease = holder(dataset, key)
    if lease is not None:
        return f"Run {key!r} is being deleted: {running_note(lease)}"
    return (f"Run {key!r} was being deleted when its process stopped: what is left of it is not "
            f"a run to use; delete it again (`vlsr delete-run --key {key} --yes`, or *VLSR: "
            "delete run* in the App)")


@contextlib.contextmanager
def persistence_kept(dataset):
    """Keep ``dataset`` persistent while one of its saved views is overwritten or deleted.
    FiftyOne takes a saved view whose stages' text holds ``_state`` for a generated view (of
    patches, say) and marks its backing dataset non-persistent, to be deleted when the last
    process leaves: of a review view on a label ``united_states``, a field ``object_state`` or
    a run key ``pre_state``, that is the dataset itself, which vanished after a run again or
    ``vlsr delete-run``."""
    persistent = dataset.persistent
    try:
        yield
    finally:
        if persistent and not dataset.persistent:
            dataset.persistent = True


def drop_saved_views(dataset, name, keep=0):
    """Delete the saved views called ``name`` but ``keep`` of them. Two processes saving one
    view at once (a stage of a run started twice, by a version before leases) can leave two
    of that name, and FiftyOne deletes one per call: one left behind outlived its run and
    blocked its key."""
    for _ in range(100):  # (each pass deletes one)
        dataset._doc.reload("saved_views")  # as stored, as FiftyOne reads them to delete one
        if sum(v.name == name for v in dataset._doc.get_saved_views()) <= keep:
            return
        try:  # (the first of that name: the oldest, as another process deleting too would)
            with persistence_kept(dataset):
                dataset.delete_saved_view(name)
        except ValueError:  # deleted meanwhile by another process: look again
            continue


class VLSRRun(fors.Run):
    """Knows the fields a VLSR run created, so FiftyOne can list and delete them."""

    def rename(self, samples, key, new_key):
        # FiftyOne logs this and renames the run anyway: every use of it then says the same
        named = renamed_from(self.config, key) or key  # (the key its fields are named by)
        if new_key != named and any("." not in f for f in self.config.created_fields or []):
            raise ValueError(renamed_note(new_key, named))  # (a run with no field yet: fine)

    def get_fields(self, samples, key):
        copies = set(getattr(self.config, "copies", None) or [])
        # (a copy deleted by hand, then a field of its name made: the curator's own)
        return [f for f in owned_fields(samples, key, self.config) if samples.has_field(f)
                and (f not in copies or holds_classifications(samples, f))]

    def cleanup(self, samples, key):
        dataset = samples._dataset
        with dataset_document(dataset):  # (the fields as stored: another run may add some)
            fields = self.get_fields(dataset, key)
            # all in one pass over the samples: a pass a field took 99 s at 200,000 samples
            dataset.delete_sample_fields(fields, error_level=1)
        _default_ticks_back(dataset, self.config.grid_default)
        copies = [f for f in self.config.copies or [] if f in fields]
        if copies:  # (said before by vlsr delete-run and the App; not by dataset.delete_run)
            logger.warning("Deleted %s with run %r: the copy of the final labels that Apply "
                           "made is the run's", ", ".join(map(repr, copies)), key)
        for view in owned_views(key, self.config):
            with dataset_document(dataset):
                drop_saved_views(dataset, view)
        for brain_key in owned_brain_runs(dataset, self.config):
            dataset.delete_brain_run(brain_key)


def _default_ticks_back(dataset, default):
    """Give back FiftyOne's default choice of the fields the grid ticks (``default``: the
    fields it ticked, see :class:`VLSRRunConfig`'s ``grid_default``), once the run's fields
    are deleted, unless the choice the run made changed since: a label field added later is
    then ticked by default again, as before the run."""
    if default is None:
        return
    with dataset_document(dataset):
        active = dataset.app_config.active_fields
        if active is not None and not active.exclude and set(active.paths) == set(default):
            dataset.app_config.active_fields = None
            dataset.save()


class VLSRResults(fors.RunResults):
    """Arrays of a run: the label embedding table, and the vocabulary's clusters and label map.

    Attributes:
        labels: every label string embedded so far (a superset of the vocabulary).
        label_embeddings: float32 ndarray (len(labels), dim).
        merge_embeddings: float32 ndarray: the first rows of ``labels`` embedded by the run's
            ``label_model`` for steps 4-6 (empty without one).
        unknown_words: float32 ndarray: for the first labels of :attr:`labels` (all of them
            once embedded), the share of their words that the tokenizer of the encoder of
            steps 4-6 splits into pieces (:func:`~vlsr_core.model.tokens.unknown_words`), which
            names clusters.
        vocabulary: the labels of the samples last clustered.
        score_vocabulary: the labels of the samples last prepared for scoring in shards (what
            each shard suggests from), and ``score_frequencies`` their samples (which spelling
            of twin labels each shard suggests).
        frequencies, dbscan_clusters, clusters: int ndarrays aligned with ``vocabulary``.
        representatives: the canonical label of each final cluster.
        lexical_groups, distance_to_canonical, naming: per label, as in :class:`LabelMap`
            (``naming`` empty in the paper's mode).
        merge_steps: what steps 4-6 did (:class:`~vlsr_core.engine.grouping.Steps` without
            its arrays): mode, distances used, lexical links, labels kept apart, DBSCAN count.
    """

    _ARRAYS = ("label_embeddings", "merge_embeddings", "unknown_words", "frequencies",
               "score_frequencies", "dbscan_clusters", "clusters", "lexical_groups",
               "distance_to_canonical", "naming")

    def __init__(self, samples, config, key, backend=None, **kwargs):
        defaults = dict(
            labels=[], label_embeddings=np.zeros((0, 0), np.float32),
            merge_embeddings=np.zeros((0, 0), np.float32), unknown_words=np.zeros(0, np.float32),
            vocabulary=[], score_vocabulary=[], score_frequencies=np.zeros(0, np.int64),
            frequencies=np.zeros(0, np.int64), dbscan_clusters=np.zeros(0, np.int64),
            clusters=np.zeros(0, np.int64), representatives=[],
            lexical_groups=np.zeros(0, np.int64), distance_to_canonical=np.zeros(0, np.float32),
            naming=np.zeros(0, np.int64), merge_steps={},
        )
        defaults.update(kwargs)
        super().__init__(samples, config, key, backend=backend, **defaults)

    @property
    def canonical(self):
        """dict: vocabulary label -> canonical label (as :attr:`LabelMap.canonical`)."""
        return {l: self.representatives[c] for l, c in zip(self.vocabulary, self.clusters)}

    def embeddings_of(self, labels, table="label_embeddings"):
        """Rows of ``table`` (:attr:`label_embeddings` or :attr:`merge_embeddings`, whose rows
        follow :attr:`labels`) for ``labels``; KeyError names the missing ones."""
        rows = np.asarray(getattr(self, table), dtype=np.float32)
        n = len(rows) if rows.ndim == 2 else 0
        row = {l: i for i, l in enumerate(self.labels) if i < n}
        missing = [l for l in labels if l not in row]
        if missing:
            raise KeyError(f"{count(len(missing), 'label')} without an embedding yet, e.g. "
                           f"{missing[:3]}")
        return rows[[row[l] for l in labels]]

    def unknown_words_of(self, labels):
        """:attr:`unknown_words` of ``labels``; None for a run embedded before they were counted."""
        words = np.asarray(self.unknown_words, dtype=np.float32)
        if len(words) != len(self.labels):
            return None
        row = {l: i for i, l in enumerate(self.labels)}
        return words[[row[l] for l in labels]]

    def attributes(self):
        # the arrays are added by serialize() as base64 .npy: left to the generic serializer,
        # each would first become nested Python lists (~16 KB a 512-d label; at 16,757 labels
        # the stage's peak RSS was +522 MB, +223 MB without them, bench_scale)
        return [a for a in super().attributes() if a not in self._ARRAYS]

    def serialize(self, *args, **kwargs):
        d = super().serialize(*args, **kwargs)
        for name in self._ARRAYS:
            d[name] = etas.serialize_numpy_array(np.asarray(getattr(self, name)))
        return d

    @classmethod
    def _from_dict(cls, d, samples, config, key):
        d = dict(d)
        for name in cls._ARRAYS:
            if isinstance(d.get(name), str):
                d[name] = etas.deserialize_numpy_array(d[name])
        return cls(samples, config, key, **d)


def sample_fields(key):
    """The sample fields of run ``key``, by role."""
    return {role: f"{key}_{suffix}" for role, suffix in SAMPLE_FIELDS.items()}


def label_attributes(key):
    """The attributes the run ``key`` sets on each input label, by role."""
    return {role: f"{key}_{suffix}" for role, suffix in LABEL_ATTRIBUTES.items()}


def review_attribute(config, key):
    """The label attribute the review views, thresholds and panel of a run use: the crop score
    when the run embeds crops, else the image score."""
    return label_attributes(key)["crop_similarity" if config.crops else "similarity"]


def saved_view_names(key):
    """Saved review views of run ``key``, by role."""
    return {
        "low_similarity": f"{key}-low-similarity",
        "better_label": f"{key}-better-label-exists",
        "weak_labels": f"{key}-labels-low-everywhere",
        "changed": f"{key}-final-label-changed",
    }


def output_fields(samples, key, label_field):
    """Every field path run ``key`` on ``label_field`` may write: its sample fields and the
    attributes it sets on the label objects."""
    from .labels import LabelFieldError, label_path

    fields = list(sample_fields(key).values())
    try:
        path = label_path(samples, label_field)
    except LabelFieldError:
        return fields
    return fields + [f"{path}.{a}" for a in label_attributes(key).values()]


def holds_classifications(samples, name):
    """Whether sample field ``name`` holds a ``Classification``, as a copy of the final labels
    does (a field of another type, of a copy's name, is not one)."""
    field = samples.get_field(name)
    return isinstance(field, fo.EmbeddedDocumentField) and issubclass(field.document_type,
                                                                      fo.Classification)


def owned_fields(samples, key, config):
    """The fields run ``key`` created (for a run made before they were recorded, those of its
    outputs that exist)."""
    if config.created_fields is not None:
        return list(config.created_fields)
    if not config.label_field:
        return list(sample_fields(key).values())
    return output_fields(samples, key, config.label_field)


def deleted_outputs(dataset, key, roles=("label", "labels", "suggestions")):
    """The sample fields of run ``key`` (by role, see :func:`sample_fields`) that it created
    and that are gone since (a user deleted them): a stage that reads them would fail. With
    ``roles`` None: every field and label attribute of its results it created (the scores the
    review views sort by, too), not its bookkeeping."""
    config = dataset.get_run_info(key).config
    created = set(config.created_fields or [])
    if roles is None:  # (nor the copies of the final labels: Apply writes them, if asked)
        from .labels import LabelFieldError, label_path

        kept = {sample_fields(key)[r] for r in ("embedding", "error", "image_file", "crop_ids",
                                                "crop_boxes", "crop_embeddings")}
        kept.update(getattr(config, "copies", None) or [])
        try:  # (the attributes on the labels of the input field as it is now: of a field
            # gone, or made another type since, the others are not the run's to write back)
            path = label_path(dataset, config.label_field)
        except LabelFieldError:
            path = None

        def on_labels_now(f):
            return (not f.startswith(config.label_field + ".")
                    or path is not None and f.rpartition(".")[0] == path)

        return [f for f in config.created_fields or []
                if f not in kept and on_labels_now(f) and not dataset.has_field(f)]
    return [f for role, f in sample_fields(key).items()
            if role in roles and f in created and not dataset.has_field(f)]


def deleted_note(fields):
    """What to do about :func:`deleted_outputs` ``fields``, in words."""
    one = len(fields) == 1
    return (f"{'field' if one else 'fields'} {', '.join(map(repr, fields))} "
            f"{'was' if one else 'were'} deleted after the run wrote {'it' if one else 'them'}: "
            f"run again to write {'it' if one else 'them'} back (`vlsr run`, or VLSR 2 and 3 in "
            "the App)")


def input_gone(dataset, config):
    """Why the input field of a run is no longer there, with what to do, or None."""
    if dataset.has_field(config.label_field):  # (inside an embedded document too: meta.gt)
        return None
    return (f"its input field {config.label_field!r} is no longer in the dataset (renamed or "
            "deleted): if you renamed it, rename it back (in Python, dataset.rename_sample_field) "
            "to go on with the run, or to delete the run with the attributes it set on those "
            "labels")


def utc_now():
    """Now, as a run's config records times: naive UTC ISO 8601, to the millisecond, as
    FiftyOne stamps its runs and delegated jobs (so that the two compare)."""
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds")


def brain_run_time(dataset, brain_key):
    """When FiftyOne stamped Brain run ``brain_key``, as a run's config records it: to the
    millisecond, as MongoDB stores it (the stamp read back has lost its microseconds)."""
    stamp = dataset.get_brain_info(brain_key).timestamp
    return stamp.replace(tzinfo=None).isoformat(timespec="milliseconds")


BRAIN_TOKEN = "vlsr_token"  # the key, in a Brain run's config, of the token of the run that made it


def mark_brain_run(dataset, brain_key):
    """Write a new token into Brain run ``brain_key``'s config and return what the VLSR run
    that made it records: the token (a clone copies it with the Brain run; one made by hand
    under that name has none) and when FiftyOne stamped the Brain run."""
    import uuid

    token = uuid.uuid4().hex
    doc = dataset._doc.brain_methods[brain_key]
    doc.config[BRAIN_TOKEN] = token
    doc.save()
    return {"token": token, "made": brain_run_time(dataset, brain_key)}


def owned_brain_runs(dataset, config):
    """The Brain runs of a run's ``config`` that exist and are its own: made by it, and not
    replaced since by one of the same name (its own deleted by hand, then another made: vlsr
    took that one for its own, made it again and deleted it with the run); a clone's copies
    of them too. Told by the token it wrote into them (:func:`mark_brain_run`); a run that
    recorded only their time (the day before tokens) by that time, or a clone's."""
    times = getattr(config, "brain_runs", None) or {}
    cloned = dataset.created_at and dataset.created_at.isoformat(timespec="milliseconds")

    def own(brain_key):
        kept = times.get(brain_key)
        if isinstance(kept, dict):
            return getattr(dataset.get_brain_info(brain_key).config, BRAIN_TOKEN,
                           None) == kept.get("token")
        made = brain_run_time(dataset, brain_key)
        return kept is None or made == kept or (made == cloned and kept < made)

    return [b for b in getattr(config, "created_brain_runs", None) or []
            if dataset.has_brain_run(b) and own(b)]


def what_goes(dataset, key, done=False):
    """What deleting run ``key`` removes, in words: its fields, saved views, Brain runs and
    review edits (the input labels stay); ``done``: said once deleted, when no advice on
    what to do first helps."""
    config = dataset.get_run_info(key).config
    fields = VLSRRun(config).get_fields(dataset, key)
    views = [v for v in owned_views(key, config) if dataset.has_saved_view(v)]
    brain = owned_brain_runs(dataset, config)
    records = getattr(config, "review", None) or []
    undone = sum(1 for r in records if r.get("undone"))
    parts = [f"{count(len(fields), 'field')} ({', '.join(fields) or 'none'})",
             f"{count(len(views), 'saved view')}"]
    if brain:
        parts.append(f"{count(len(brain), 'Brain run')} ({', '.join(brain)})")
    if records:  # counted as the panel counts them: those in force, then the undone ones
        parts.append(f"{count(len(records) - undone, 'review edit')} in force"
                     + (f" ({undone} undone)" if undone else ""))
    inputs = {k: dataset.get_run_info(k).config.label_field for k in list_vlsr_runs(dataset)}
    stay = input_gone(dataset, config) or f"the input labels of {config.label_field!r} stay"
    if done and not dataset.has_field(config.label_field):
        stay = (f"its input field {config.label_field!r} was no longer in the dataset: if it "
                "was renamed, the attributes the run set on its labels are still there")
    read = "".join(f". Run {k!r} was made on {field!r}, which goes too: that run can then no "
                   "longer be scored, clustered or reviewed"
                   for k, field in inputs.items() if k != key and field in fields)
    read += "".join(f". Run {k!r} was made on the saved view {made_on!r}, which goes too: that "
                    "run then has no view of its own (the vlsr commands ask for one with "
                    "--view; the App's forms and Python take the whole dataset)"
                    for k in inputs if k != key
                    and (made_on := dataset.get_run_info(k).config.collection) in views)
    copies = [f for f in config.copies or [] if f in fields]
    kept = (f". That includes {', '.join(map(repr, copies))}, the copy of the final labels that "
            "Apply made: clone the field first to keep it (the App's operator Clone sample "
            "field, or dataset.clone_sample_field in Python)"
            if copies else "")
    return (f"{', '.join(parts[:-1])} and {parts[-1]} of run {key!r} on {dataset.name!r}; {stay}"
            f"{read}{kept}")


def owned_views(key, config):
    """The saved views run ``key`` created (likewise)."""
    if config.created_views is not None:
        return list(config.created_views)
    return list(saved_view_names(key).values())


def output_problem(samples, key, label_field):
    """Why run ``key`` on ``label_field`` would write over something it did not create, or None.

    Checked before a stage writes anything: the input field named like one of the run's outputs
    (``--label-field gt_labels --key gt``), a field, label attribute or saved view of the run's
    names that exists but is not the run's own, or a key that cannot prefix field names.
    """
    problem = key_problem(key)
    if problem:
        return problem
    root = label_field.split(".")[0]
    if root in sample_fields(key).values():
        return (f"The label field {label_field!r} has the name of an output of run {key!r} "
                f"({key}_...); its labels would be overwritten: choose another run key")
    dataset = samples._dataset
    config = dataset.get_run_info(key).config if dataset.has_run(key) else None
    if config is not None and not isinstance(config, VLSRRunConfig):
        return f"Run {key!r} exists and is not a VLSR run; choose another key"
    deleting = config is not None and half_deleted(dataset, key)
    if deleting:
        return deleting
    if config is None:
        renamed = next((other for other in list_vlsr_runs(dataset) if renamed_from(
            dataset.get_run_info(other).config, other) == key), None)
        if renamed is not None:  # (its fields have this key's names)
            return renamed_note(renamed, key)
        problem = _names_problem(dataset, key, label_field)
        if problem:
            return problem
        writer = run_outputs(dataset).get(root)
        if writer is not None:
            return (f"Field {root!r} is an output of run {writer!r}: deleting or running that run "
                    "again would change it under this run. Choose the labels you mean to clean "
                    f"(label fields no run wrote: {input_fields(dataset) or 'none'})")
    if config is not None and config.label_field != label_field:
        gone = input_gone(dataset, config)
        return (f"Run {key!r} was made on field {config.label_field!r}, not {label_field!r}; "
                + (f"{gone}; or choose another run key" if gone else
                   "choose another run key, or delete that run first (VLSR: delete run in the "
                   f"App, vlsr delete-run --key {key} on the command line)"))
    owned = set(owned_fields(dataset, key, config)) if config else set()
    outputs = [f for f in output_fields(dataset, key, label_field) if f not in owned]
    # a label attribute may hold values without being declared in the schema
    held = [f for f in outputs if dataset.has_field(f)] or (
        [f for f in outputs if "." in f and first_match(dataset, {f: A_VALUE})]
        if first_match(dataset, {f: A_VALUE for f in outputs if "." in f}, how="$or") else [])
    if held:
        copied = config is None and all(dataset.has_field(f) for f in (
            sample_fields(key)["embedding"], sample_fields(key)["label"]))
        return (f"Field {held[0]!r} exists and was not created by run {key!r}; writing there "
                "would overwrite it: choose another run key" + (
                    f" (the fields of a run {key!r} seem copied here without the run, as "
                    "FiftyOne's clone of a view and merge_samples copy fields but not runs: if "
                    "you do not need them, delete them in FiftyOne to use this key)"
                    if copied else ""))
    views = set(owned_views(key, config)) if config else set()
    # FiftyOne saves a view over any view of the same slug ("K2 Low Similarity" for
    # "k2-low-similarity", or run "CB"'s view for run "cb"'s), not only one of its name
    slugs = {to_slug(v): v for v in dataset.list_saved_views() if v not in views}
    for view in saved_view_names(key).values():
        other = slugs.get(to_slug(view))
        if other == view:
            return (f"A saved view {view!r} exists and was not created by run {key!r}: choose "
                    "another run key")
        if other is not None:
            return (f"A saved view {other!r} exists, which FiftyOne cannot tell apart from run "
                    f"{key!r}'s view {view!r} (both are {to_slug(view)!r} in the App's "
                    "address): saving that view would delete it; choose another run key")
    return None


def _names_problem(dataset, key, label_field):
    """Why a new run ``key`` on ``label_field`` would name fields as another VLSR run of
    ``dataset`` may, or None: a sample field ("vlsr_crop" writes "vlsr_crop_ids", run "vlsr"'s
    crop record), or a label attribute on the same labels ("vlsr_crop_similarity")."""
    def names(k, field):
        return ({f"{k}_{suffix}" for suffix in SAMPLE_FIELDS.values()}
                | {f"{field}.{k}_{suffix}" for suffix in LABEL_ATTRIBUTES.values()})

    mine = names(key, label_field)
    for other in list_vlsr_runs(dataset):
        shared = sorted(mine & names(other, dataset.get_run_info(other).config.label_field))
        if shared:
            return (f"The run key {key!r} names fields as run {other!r} does "
                    f"({shared[0].rsplit('.', 1)[-1]!r}): choose another run key")
    return None


def run_outputs(dataset):
    """field -> the VLSR run of ``dataset`` that created it."""
    return {f: key for key in list_vlsr_runs(dataset)
            for f in owned_fields(dataset, key, dataset.get_run_info(key).config)}


def list_vlsr_runs(dataset):
    """The keys of the VLSR runs of ``dataset``."""
    return [k for k in dataset.list_runs() if isinstance(dataset.get_run_info(k).config, VLSRRunConfig)]


def default_run_key(keys):
    """The run a form or the panel opens on: the default key's if there is one, else the first."""
    return DEFAULT_KEY if DEFAULT_KEY in keys else (keys[0] if keys else None)


STAGE_NAMES = {"score": "score labels", "cluster": "cluster and merge", "apply": "apply the review"}
OUTDATED = "outdated"  # a stage's state once the embeddings it ran on are made again


def incomplete_stages(config):
    """The stages of a run that stopped part-way (see :class:`VLSRRunConfig`), with their names
    (a deletion stopped part-way: :func:`half_deleted`)."""
    return [STAGE_NAMES[s] for s, state in (config.stages or {}).items()
            if state == "running" and s in STAGE_NAMES]


def outdated_stages(config):
    """The names of the stages of a run that ran on embeddings made again since (another model,
    prompt, decoding, crops or label model): their fields hold what the embeddings before
    gave."""
    return [STAGE_NAMES[s] for s, state in (config.stages or {}).items()
            if state == OUTDATED and s in STAGE_NAMES]


def outdated_note(config):
    """:func:`outdated_stages` in words, with what to do, or None."""
    names = outdated_stages(config)
    if not names:
        return None
    one = len(names) == 1
    return (f"{' and '.join(names)} ran before the last change of model, prompt, decoding, "
            "crops or label model, of image files embedded again, or of labels edited by hand: "
            f"{'its' if one else 'their'} fields hold what those gave "
            f"until {'it runs' if one else 'they run'} again (vlsr run, or VLSR 2 and 3 in the "
            "App)")


def stage_activity(dataset, key):
    """The lease of the process running a stage of run ``key`` (None: none runs) and the
    names of the stages that stopped part-way (marked running, but for the one running now)."""
    lease = holder(dataset, key)
    stopped = incomplete_stages(dataset.get_run_info(key).config)
    return lease, [s for s in stopped if not lease or s != lease["stage"]]


def sharded_stages(config):
    """The names of a run's stages in progress as shards (see :mod:`.batches`): until the last
    one finishes, the run's fields mix the stage's old and new results."""
    return [STAGE_NAMES[s] for s, state in (config.stages or {}).items()
            if state.startswith("shards:") and s in STAGE_NAMES]


def stage_stopped(config, stage):
    """Whether ``stage`` (a key of :data:`STAGE_NAMES`) of the run stopped part-way, or is out
    of date (:data:`OUTDATED`): either way, to run again before its fields are used."""
    return (getattr(config, "stages", None) or {}).get(stage) in ("running", OUTDATED)

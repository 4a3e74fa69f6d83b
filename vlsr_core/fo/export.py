"""Export a VLSR run: per-sample CSV, the label map CSV and COCO files with canonical labels.

Files written to the export directory:

- ``samples.csv``: ``filepath, final_label, final_score, original_labels, canonical_labels,
  suggestions``; list columns are JSON (``["helmet", "Helmets"]``, suggestions as
  ``[["helmet", 0.31], ...]``), since labels may contain any character; ``original_labels``
  are the sample's distinct labels as written, but the blank ones the run skips.
- ``label_map.csv``: ``label, canonical, cluster, frequency, dbscan_cluster,
  clustered_canonical, joined_by, distance_to_canonical``: the label map with the review edits
  the run's fields show (those of the last Apply or clustering; ``clustered_canonical`` is the
  label's canonical label before the review); ``joined_by`` the step that put the label with
  its canonical label (empty for the canonical label itself, unless an edit made it so;
  ``spelling``, ``images``, ``DBSCAN``, ``merge``, or ``review`` for an edit), ``distance_to_canonical`` the cosine
  distance of their text embeddings: sort by it to check the farthest first.
- ``image_labels.json``: COCO-style image-level labels: ``images`` and ``categories`` as in
  COCO (the same categories and ids as the COCO detections: :func:`_categories`), and one
  ``annotations`` entry per canonical label of an image, with ``score`` and ``final`` (true
  for the image's final label) and no ``bbox``; an image whose size cannot be read (the
  run's unreadable images) has ``width`` and ``height`` null.
- ``detections/labels.json`` (with ``detections_field``): the boxes of a Detections field with
  canonical labels (:func:`coco_boxes`), written by FiftyOne's COCO exporter; ``file_name``
  is relative to the images' common folder (:func:`coco_image_root`, the ``data_path`` to give
  FiftyOne's importer); its ``info`` is the dataset's, dated by the samples' last change;
  its image ids are those of ``image_labels.json``.

An export of unchanged samples writes the same bytes as the last one.

Each file is written as ``NAME.partial`` and renamed once all are written; the renames are not
cut short by Ctrl-C. The ``.partial`` files that a killed export leaves behind do not make the
folder "not empty", and the next export replaces them.
"""

import contextlib
import csv
import json
import logging
import math
import os
import shutil
import tempfile
from datetime import timezone
from itertools import chain, repeat

import fiftyone as fo
from bson import ObjectId
from fiftyone.core.expressions import ViewExpression

from ..engine.defaults import DEFAULT_KEY
from ..engine.review import suggestion_decisions
from ..interrupts import uninterrupted
from ..wording import count, quoted
from .chunks import every_field, iter_chunks, sample_ids
from .labels import (
    QUERY_BYTES,
    USABLE,
    as_label_lists,
    is_list_field,
    label_filter_problem,
    label_path,
    label_sets,
    looked_up,
    media_problem,
    named,
    query_bytes,
)
from .lease import holds_run, running_note
from .review import applied_edits, cluster_first, labels_problem, review_state
from .runs import (
    deleted_note,
    deleted_outputs,
    half_deleted,
    label_attributes,
    list_vlsr_runs,
    load_results,
    outdated_note,
    sample_fields,
    sharded_stages,
    stage_activity,
)
from .stamps import file_stamp, foreign_problem, replaced


logger = logging.getLogger(__name__)


FILES = ("samples.csv", "label_map.csv", "image_labels.json")  # what every export writes
COCO_FILE = os.path.join("detections", "labels.json")  # and the boxes, when asked
# the keys of a COCO annotation FiftyOne writes first, in its order; the boxes' attributes follow
COCO_KEYS = ("id", "image_id", "category_id", "bbox", "keypoints", "num_keypoints", "segmentation",
             "score", "area", "iscrowd")
# the box attributes written under another name (box_score): FiftyOne's exporter gives these
# keys itself (an attribute ``score`` failed the export; one ``area`` was dropped)
COCO_NAMES = ("image_id", "category_id", "bbox", "keypoints", "num_keypoints", "segmentation",
              "score", "area", "visible")
CUT_MASK = "vlsr_cut_mask"  # the id of a masked box cut to the image, for _cut_masks
SAMPLES_HEADER = ["filepath", "final_label", "final_score", "original_labels", "canonical_labels",
                  "suggestions"]  # the columns of samples.csv


class ExportError(ValueError):
    """The export cannot be written as asked (existing files, no results yet)."""


@holds_run("export")
def export_run(samples, export_dir, key=DEFAULT_KEY, *, detections_field=None, overwrite=False,
               progress=None):
    """Write the run's results for ``samples`` to ``export_dir``; returns the paths written.

    Args:
        samples: the dataset or view to export.
        export_dir: a directory; it must not hold files yet unless ``overwrite``.
        key: the run key.
        detections_field: optional Detections field to export as COCO with canonical labels.
        overwrite: replace the files of an earlier export.
        progress: optional callable taking the fraction done.
    """
    if not export_dir:  # (the form's check lets none pass: nothing typed yet)
        raise ExportError(f"export_dir is {export_dir!r}: give the folder to export to")
    dataset = samples._dataset
    results = load_results(dataset, key) if dataset.has_run(key) else None
    problem = export_problem(samples, export_dir, key, detections_field, overwrite, results)
    if problem:
        raise ExportError(problem)
    config = dataset.get_run_info(key).config
    state = review_state(dataset, key, results, applied_only=True)  # what the fields show
    label_map = state.label_map.canonical
    _compute_sizes(samples, key)  # (before the folder is made: the slow part of a start)
    # read once, after the sizes (a view sorted by them moves): both streamed files visit the
    # same samples in order
    ids = sample_ids(samples)
    boxes = coco_boxes(samples, detections_field, key, label_map) if detections_field else None
    made = _missing_folders(export_dir)
    try:
        os.makedirs(export_dir, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {export_dir}: {e.strerror}") from None
    if not os.access(export_dir, os.W_OK):
        raise ExportError(f"{export_dir} is not writable")
    with _only_export(export_dir):  # (checked again: another export may have written it)
        problem = folder_problem(export_dir, detections_field, overwrite)
        if problem:
            raise ExportError(problem)
        coco = os.path.join(export_dir, COCO_FILE)

        # each file is written beside its place and moved there once all are written: an export
        # stopped part-way (Ctrl-C, an error) leaves no file that looks whole, nor a mix of two
        names = [*FILES, *([COCO_FILE] if detections_field else [])]
        written = [os.path.join(export_dir, name) for name in names]
        partial = [path + PARTIAL for path in written]
        # the share of the time each file takes, roughly (samples.csv, label_map.csv, the
        # image-level labels, the COCO detections)
        shares = (0.25, 0.05, 0.1, 0.3, 0.3) if detections_field else (0.35, 0.05, 0.15, 0.45)
        parts = _parts(progress, [0.99 * share for share in shares])  # (100 % once renamed)
        error, writing = None, iter(written)  # (an error of a write names no file: say which)
        try:
            where = next(writing)
            _samples_csv(samples, ids, key, config.label_field, partial[0], next(parts))
            where = next(writing)
            _label_map_csv(state, partial[1])
            next(parts)(1.0)
            categories = _categories(samples, ids, key, label_map, boxes, detections_field,
                                     next(parts))
            where = next(writing)
            sized = _image_labels_json(samples, ids, key, categories, partial[2], next(parts))
            if detections_field:
                where = next(writing)
                _coco_detections(samples, boxes, detections_field, categories, sized, partial[3],
                                 next(parts))
            where = None
            with uninterrupted():  # all renamed, or none: not a mix of two exports
                for done, path in zip(partial, written):
                    os.replace(done, path)
                removed = overwrite_removes(export_dir, detections_field)
                if removed:  # an earlier export's boxes would pass for this run's
                    os.remove(removed)
                    logger.warning("removed %s: the boxes of an earlier export (this one has "
                                   "none)", removed)
            if progress is not None:
                progress(1.0)
        except OSError as e:  # a disk full, a folder made read-only meanwhile
            error = e
        finally:
            left = _clean_up(export_dir, coco, made)
        if error is not None:
            where = error.filename and str(error.filename).removesuffix(PARTIAL) or where
            where = f" {where}" if where else ""
            raise ExportError(f"cannot write{where}: {error.strerror or error}; " + (
                f"remove this export's unfinished files by hand ({', '.join(left)})" if left
                else "this export's unfinished files were removed"))
    return written


@contextlib.contextmanager
def _only_export(export_dir):
    """Hold ``export_dir`` while this export writes: another export into it (of another run or
    dataset, in any process) is refused meanwhile. Two at once each removed the other's
    unfinished files and left a mix of both, one reporting success. An advisory lock of the
    folder, which the system releases when the process ends however it ends."""
    try:
        import fcntl
    except ImportError:  # (Windows: no such lock)
        yield
        return
    fd = os.open(export_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"Another export is writing to {export_dir} now: export when it "
                              "is done, or to another folder") from None
        yield
    finally:
        os.close(fd)


def _clean_up(export_dir, coco, made):
    """Remove an export's unfinished files, and those a killed export left, and the folders
    it made if empty (quietly: the error that stopped the export is the one to tell); returns
    the files that could not be removed."""
    left = []
    for path in _leftovers(export_dir):
        try:
            os.remove(path)
        except OSError:
            left.append(path)
    for folder in [os.path.dirname(coco), *made]:
        with contextlib.suppress(OSError):
            _remove_if_empty(folder)
    return left


def _missing_folders(path):
    """The folders of ``path`` that do not exist yet, innermost first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _parts(progress, shares):
    """A progress callable per part of a task, each taking its own fraction done, for a
    ``progress`` of the whole (None: callables that do nothing)."""
    start = 0.0
    for share in shares:
        if progress is None:
            yield lambda fraction: None
        else:
            yield lambda fraction, start=start, share=share: progress(start + share * fraction)
        start += share


PARTIAL = ".partial"  # the suffix of a file being written


def overwrite_removes(export_dir, detections_field=None):
    """The file of an earlier export in ``export_dir`` that an export without boxes (no
    ``detections_field``) removes, or None: its COCO detections."""
    path = os.path.join(export_dir, COCO_FILE)
    return path if not detections_field and os.path.isfile(path) else None


def _leftovers(export_dir):
    """The ``.partial`` files of an export in ``export_dir`` (one being written, or one killed)."""
    return [p + PARTIAL for p in _export_paths(export_dir) if os.path.isfile(p + PARTIAL)]


def _export_paths(export_dir):
    """The paths of every file an export writes in ``export_dir``."""
    return [os.path.join(export_dir, name) for name in (*FILES, COCO_FILE)]


def export_files(export_dir):
    """The files of an export in ``export_dir`` as they are now (each path with its inode and
    time of change): two readings differ once an export was written there."""
    stats = {}
    for path in _export_paths(export_dir):
        if os.path.isfile(path):
            st = os.stat(path)
            stats[path] = (st.st_ino, st.st_mtime_ns)
    return stats


def _holds_files(export_dir):
    """Whether ``export_dir`` holds anything but the leftovers of an export."""
    leftovers = set(_leftovers(export_dir))
    coco_dir = os.path.join(export_dir, os.path.dirname(COCO_FILE))
    for name in os.listdir(export_dir):
        path = os.path.join(export_dir, name)
        if path == coco_dir and os.path.isdir(path):
            if any(os.path.join(path, n) not in leftovers for n in os.listdir(path)):
                return True
        elif path not in leftovers:
            return True
    return False


def coco_image_root(samples):
    """The folder that the file names of the COCO detections are relative to (the images'
    common folder: basenames alone could collide); FiftyOne's importer takes it as
    ``data_path``."""
    sized = samples.exists("metadata.width")
    return os.path.commonpath([os.path.dirname(p) for p in sized.values("filepath")] or ["/"])


def _coco_detections(samples, boxes, detections_field, categories, image_ids, path, progress):
    """The boxes of :func:`coco_boxes` by FiftyOne's COCO exporter, with the export's
    ``categories`` (names in id order, from 1) and ``image_ids`` (sample id -> its image's id in
    ``image_labels.json``): an id means one category, and one image, in both files."""
    boxes.export(
        rel_dir=coco_image_root(samples),
        labels_path=path,
        dataset_type=fo.types.COCODetectionDataset,
        label_field=detections_field,
        categories=[dict(id=i, name=n, supercategory=None) for i, n in enumerate(categories, 1)],
        info=_coco_info(samples),
        export_media=False,
        overwrite=True,
        progress=lambda bar: bar.progress is not None and progress(bar.progress),
    )
    with open(path, encoding="utf-8") as f:  # (a NaN attribute, no JSON, becomes null)
        coco = json.load(f, parse_constant=lambda constant: None)
    # FiftyOne numbers the images it wrote from 1, in the order of the view it walked;
    # image_labels.json lists the unreadable too: each takes the id of its sample there
    order = boxes.values("id")
    if len(order) != len(coco["images"]) or not set(order) <= image_ids.keys():
        raise ExportError("Samples were added or deleted while this export ran: export again")
    for image in coco["images"]:
        image["id"] = image_ids[order[image["id"] - 1]]
    for annotation in coco.get("annotations", []):
        annotation["image_id"] = image_ids[order[annotation["image_id"] - 1]]
    _cut_masks(samples, detections_field, coco)
    described = (samples.info or {}).get("description")
    if isinstance(described, str):  # (a key of COCO's info that FiftyOne's exporter leaves out)
        info = coco.setdefault("info", {})
        coco["info"] = {**{k: info[k] for k in ("year", "version") if k in info},
                        "description": described, **info}
    # FiftyOne leaves the key out when no box is left, and writes a box's attributes in the
    # order of a set of their names, which changes from process to process: put in order, an
    # export of unchanged samples is the same bytes as the last
    coco["annotations"] = [
        {**{k: a[k] for k in COCO_KEYS if k in a}, **{k: a[k] for k in sorted(a) if k not in
                                                        COCO_KEYS}}
        for a in coco.get("annotations", [])]
    with open(path, "w", encoding="utf-8") as f:  # (as FiftyOne writes it)
        f.write(json.dumps(coco, separators=(",", ": "), ensure_ascii=False, allow_nan=False))
    progress(1.0)


def _cut_masks(samples, detections_field, coco):
    """The segmentations of the masked boxes :func:`coco_boxes` cut to the image (marked
    :data:`CUT_MASK`), from the part of each mask on the image: FiftyOne's exporter would
    stretch the whole mask over the part of its box that is left."""
    from fiftyone.utils.coco import COCOObject

    cut = {a.pop(CUT_MASK): a for a in coco.get("annotations", []) if CUT_MASK in a}
    if not cut:
        return
    images = {image["id"]: image for image in coco["images"]}
    F = fo.ViewField
    for box in samples._dataset.filter_labels(
            detections_field, F("_id").is_in([ObjectId(i) for i in cut])).values(
            f"{detections_field}.detections", unwind=True):
        annotation = cut[box.id]
        image = images[annotation["image_id"]]
        width, height = image["width"], image["height"]
        x, y, w, h = box.bounding_box
        mask = box.get_mask()
        rows, cols = mask.shape[:2]
        left, top = max(x, 0), max(y, 0)
        right, bottom = min(x + w, 1), min(y + h, 1)
        # (whole pixels that reach the image: a sliver on it is a pixel, not no segmentation)
        part = mask[math.floor((top - y) / h * rows):math.ceil((bottom - y) / h * rows),
                    math.floor((left - x) / w * cols):math.ceil((right - x) / w * cols)]
        on_image = fo.Detection(bounding_box=[left, top, right - left, bottom - top],
                                mask=part, iscrowd=annotation.get("iscrowd", 0))
        annotation["segmentation"] = COCOObject.from_label(
            on_image, fo.ImageMetadata(width=width, height=height)).segmentation


def _coco_info(samples):
    """The COCO ``info`` of the boxes: the dataset's (of which FiftyOne's exporter writes
    COCO's keys but the description, put back by :func:`_coco_detections`), dated by the last
    change to the samples exported unless it gives a date (FiftyOne's exporter dates it now,
    and an export of unchanged samples would differ from the last in that line alone)."""
    info = dict(samples.info or {})
    if "date_created" not in info and samples.has_field("last_modified_at"):
        last = samples.max("last_modified_at")
        if last is not None:
            last = last if last.tzinfo else last.replace(tzinfo=timezone.utc)
            info["date_created"] = last.astimezone(timezone.utc).isoformat(timespec="seconds")
    return info


def _placed(box):
    """A box with its four coordinates, finite, a width and height, and on the image (a COCO
    ``bbox`` needs them: NaN or infinity is no JSON; crops score a box off the image on the
    whole image). A box partly off the image is kept, cut to it (:func:`_cut_to_image`)."""
    F = fo.ViewField
    finite = F().is_number() & (F() > -math.inf) & (F() < math.inf)  # (NaN: below -inf here)
    return (box.is_array() & (box.length() == 4) & (box.filter(~finite).length() == 0)
            & (box[2] > 0) & (box[3] > 0) & (box[0] < 1) & (box[1] < 1)
            & (box[0] + box[2] > 0) & (box[1] + box[3] > 0))


def _partly_off(box):
    """The expression "the box reaches off the image" (relative ``[x, y, w, h]``)."""
    return (box[0] < 0) | (box[1] < 0) | (box[0] + box[2] > 1) | (box[1] + box[3] > 1)


def _cut_to_image(box):
    """``box`` cut to the part of it on the image (COCO tools refuse a ``bbox`` of negative
    coordinates or reaching past the image, which FiftyOne's exporter writes as they are);
    a box on the image stays bit for bit."""
    left, top = box[0].max(0), box[1].max(0)
    right, bottom = (box[0] + box[2]).min(1), (box[1] + box[3]).min(1)
    return _partly_off(box).if_else([left, top, right - left, bottom - top], box)


def _readable(samples, key):
    """The expression "its image size is known and the run could read it" (COCO boxes are in
    pixels; a truncated file may give a size from its header and still be unreadable)."""
    F = fo.ViewField
    readable = F("metadata.width").exists()
    error = sample_fields(key)["error"]
    return readable & ~F(error).exists() if samples.has_field(error) else readable


def _not_unreadable(samples, key):
    """``samples`` but those the run found unreadable (files of these it need not look at)."""
    error = sample_fields(key)["error"]
    return samples.exists(error, False) if samples.has_field(error) else samples


def coco_boxes(samples, detections_field, key, label_map):
    """What the COCO detections hold: images of :func:`_readable` (images without boxes stay: an
    image with nothing on it is an answer too), their boxes that have a label and coordinates,
    each labelled with its canonical label. For the run's own label field, that is the
    canonical label the run's fields show for that box (``{key}_canonical``: a suggestion
    accepted for the box is in it), else the label map's; a label the map lacks stays as
    written. The box attributes of other VLSR runs are left out. Labels are matched as data,
    not read as field paths (a label ``$cost``)."""
    F = fo.ViewField
    mapped = {"$let": {"vars": {"label": "$$this.label"}, "in": canonical_of("$$label", label_map)}}
    size = query_bytes(mapped)
    if size > QUERY_BYTES:
        changed = sum(c != l for l, c in label_map.items())
        raise ExportError(
            f"The label map has {changed:,} labels with another canonical label: mapping the "
            f"boxes to them takes a query of {size / 2 ** 20:.0f} MB, over the "
            f"{QUERY_BYTES / 2 ** 20:.0f} MB MongoDB can be given with the rest; export without "
            "the COCO boxes (label_map.csv maps every label to its canonical label)")
    config = samples._dataset.get_run_info(key).config
    if label_path(samples, config.label_field) == f"{detections_field}.detections":
        attribute = label_attributes(key)["canonical"]
        mapped = {"$ifNull": [f"$$this.{attribute}", mapped]}
    kept = samples.match(_readable(samples, key)).filter_labels(
        detections_field, named(F("label")) & _placed(F("bounding_box")), only_matches=False
    ).select_fields(detections_field)  # (the exporter reads whole samples: 2.9x the time)
    # the box attributes of other runs on the field would contradict the category
    others = [f"{detections_field}.detections.{attribute}"
              for other in list_vlsr_runs(samples._dataset) if other != key
              for attribute in label_attributes(other).values()]
    kept = kept.exclude_fields([f for f in others if kept.has_field(f)])
    box = F("bounding_box")
    # a mask is stretched over its box: a cut box's is cut after the export (_cut_masks)
    masked = _partly_off(box) & (F("mask").exists() | F("mask_path").exists())
    return kept.set_field(f"{detections_field}.detections", F("detections").map(
        masked.if_else(F().set_field(CUT_MASK, F("_id").to_string()).set_field("mask", None)
                       .set_field("mask_path", None), F())
        .set_field("label", ViewExpression(mapped)).set_field("bounding_box", _cut_to_image(box))
        .apply(ViewExpression(_coco_safe("$$expr")))))


def _taken_names(pairs):
    """The expression "the names among ``pairs`` (a ``$objectToArray`` of a box) that
    FiftyOne's COCO exporter cannot write as attributes": COCO's own keys (it gives a box's
    ``score`` twice, and fails), and an ``iscrowd`` that is no number (it takes ``int()`` of
    it)."""
    crowd = {"$or": [{"$in": [{"$type": "$$kv.v"}, ["bool", "null"]]},
                     {"$and": [{"$isNumber": "$$kv.v"}, {"$gt": ["$$kv.v", -math.inf]},
                               {"$lt": ["$$kv.v", math.inf]}]}]}  # (NaN is below -inf)
    return {"$map": {"input": {"$filter": {"input": pairs, "as": "kv", "cond": {"$or": [
        {"$in": ["$$kv.k", list(COCO_NAMES)]},
        {"$and": [{"$eq": ["$$kv.k", "iscrowd"]}, {"$not": [crowd]}]}]}}}, "in": "$$this.k"}}


def _coco_safe(box):
    """The box document ``box`` with the attributes of :func:`_taken_names` renamed
    ``box_{name}`` (``score`` is ``box_score``; ``box_score_2`` beside a ``box_score``), so
    that nothing is lost or fails."""
    renamed = {"$concat": ["box_", "$$kv.k"]}
    rename = {"$cond": [{"$in": ["$$kv.k", "$$taken"]}, {"$cond": [
        {"$in": [renamed, "$$names"]}, {"$concat": [renamed, "_2"]}, renamed]},  # (box_score
        "$$kv.k"]}  # there already: it stays)
    return {"$let": {"vars": {"pairs": {"$objectToArray": box}}, "in": {"$let": {
        "vars": {"taken": _taken_names("$$pairs"),
                 "names": {"$map": {"input": "$$pairs", "in": "$$this.k"}}},
        "in": {"$arrayToObject": {"$map": {"input": "$$pairs", "as": "kv", "in": {
            "k": rename, "v": "$$kv.v"}}}}}}}}


def canonical_of(label, label_map):
    """The MongoDB expression "the canonical label of ``label`` in ``label_map``, or ``label``
    if the map keeps it or lacks it", a search of the labels that change
    (:func:`~vlsr_core.fo.labels.looked_up`): with a lookup in a list of the map's labels,
    mapping 200,020 boxes took 34.9 s at 20,000 labels (6,022 changed), against 1.2 s now
    (0.8 s to read them unmapped; ``bench/bench_export.py``)."""
    return looked_up(label, {l: c for l, c in label_map.items() if c != l}, label)


def coco_left_out(samples, detections_field, key=DEFAULT_KEY):
    """What the COCO detections leave out of ``detections_field`` or keep as written, in
    words, or None: boxes on images whose size cannot be read or that the run could not read
    (unreadable), boxes with an empty or blank label or without usable coordinates, labels the
    run's label map does not have (kept as written), and images that are the file of several
    samples (listed once a sample, under one file_name: a COCO importer keeps one of them)."""
    samples = every_field(samples)  # (a view that hides the fields read: read them all the same)
    F = fo.ViewField
    detections = f"{detections_field}.detections"
    sized, unsized = (samples.match(e) for e in (_readable(samples, key), ~_readable(samples, key)))
    unreadable = unsized.count(detections)
    images = len(unsized.match(F(detections).length() > 0))
    blank = sized.filter_labels(detections_field, ~named(F("label"))).count(detections)
    unplaced = sized.filter_labels(
        detections_field, named(F("label")) & ~_placed(F("bounding_box"))).count(detections)
    parts = ([f"{count(unreadable, 'box')} on {count(images, 'unreadable image')}"]
             if unreadable else []) + (
        [f"{count(blank, 'box')} with an empty or blank label"] if blank else []) + (
        [f"{count(unplaced, 'box')} without usable coordinates (missing, not finite, of no "
         "width or height, or off the image)"] if unplaced else [])
    notes = [" and ".join(parts) + " left out of the COCO detections"] if parts else []
    cut = sized.filter_labels(detections_field, named(F("label")) & _placed(F("bounding_box"))
                              & _partly_off(F("bounding_box"))).count(detections)
    if cut:
        notes.append(f"{count(cut, 'box')} partly off the image cut to the part on it")
    taken = ViewExpression(_taken_names({"$objectToArray": "$$this"}))
    renamed = sized.filter_labels(detections_field, named(F("label")) & _placed(
        F("bounding_box")) & (taken.length() > 0))
    n = renamed.count(detections)
    if n:
        names = sorted({f"box_{name}" for boxes in renamed.values(F(detections).map(taken))
                        for names in boxes for name in names})
        notes.append(f"{count(n, 'box')} with attributes named as COCO's own keys "
                     f"({', '.join(names)}) written under those names")
    known = set(load_results(samples._dataset, key).vocabulary)
    strange = {l: n for l, n in sized.filter_labels(
        detections_field, named(F("label")) & _placed(F("bounding_box"))).count_values(
        f"{detections}.label").items() if l not in known}
    if strange:
        n = sum(strange.values())
        shown = ", ".join(map(quoted, sorted(strange)[:5])) + (", ..." if len(strange) > 5 else "")
        notes.append(f"{count(n, 'box')} with a label the run does not have ({shown}) kept as "
                     "written")
    shared = next(sized._aggregate(post_pipeline=[
        {"$group": {"_id": "$filepath", "n": {"$sum": 1}}}, {"$match": {"n": {"$gt": 1}}},
        {"$group": {"_id": None, "files": {"$sum": 1}, "samples": {"$sum": "$n"}}}]), None)
    if shared:
        notes.append(f"{count(shared['files'], 'image file')} {'is' if shared['files'] == 1 else 'are'}"
                     f" the file of {shared['samples']} samples, each listed as an image of its own "
                     "under the same file_name: FiftyOne's COCO importer keeps the boxes of one "
                     "of them only")
    return "; ".join(notes) or None


def unclustered_note(samples, key=DEFAULT_KEY):
    """What an export of ``samples`` lacks for samples with labels the run did not cluster
    (labelled since, or outside the collection it was made on): their rows have no canonical or
    final label; and for those whose image it has not embedded (added since, then applied):
    no final label. In words, or None."""
    samples = every_field(samples)  # (a view that hides the fields read: read them all the same)
    F = fo.ViewField
    config = samples._dataset.get_run_info(key).config
    fields = sample_fields(key)
    labelled = samples.filter_labels(config.label_field, named(F("label")))
    n = len(labelled.exists(fields["labels"], False))
    notes = []
    if n:
        has, them = ("has", "it") if n == 1 else ("have", "them")
        notes.append(f"{count(n, 'sample')} with labels {has} no canonical or final label in this "
                     f"export, as the run did not cluster {them} (labelled since, or outside the "
                     f"collection it was made on): run it again on a collection that holds {them} "
                     "(vlsr run, or VLSR 1 to 3 in the App)")
    unembedded = labelled.exists(fields["labels"]).exists(fields["embedding"], False)
    if samples.has_field(fields["error"]):  # (an unreadable image is said as such)
        unembedded = unembedded.exists(fields["error"], False)
    n = len(unembedded)
    if n:
        has, its = ("has", "its image is") if n == 1 else ("have", "their images are")
        notes.append(f"{count(n, 'sample')} with labels {has} no final label in this export, as "
                     f"{its} not embedded yet (added since the run): run it again (vlsr run, or "
                     "VLSR 1 to 3 in the App)")
    return "; ".join(notes) or None


def image_files_note(samples, key=DEFAULT_KEY, shown=3):
    """The images an export of ``samples`` lists whose file cannot be found now (a drive not
    mounted, files moved since the run read them), or whose file is not the one the run
    embedded (another size or time of change: replaced by another picture), in words with a
    few of them, or None: they are listed with the labels and scores the run gave them, and
    the size read before (if it was read: else null, and no COCO box). The run's unreadable
    images, told as such, and paths that are not local files are not looked at."""

    samples = every_field(samples)  # (a view that hides the fields read: read them all the same)
    stamp = sample_fields(key)["image_file"]
    read = [stamp] if samples.has_field(stamp) else []
    gone, changed = [], []
    for _, (paths, *stamps) in iter_chunks(_not_unreadable(samples, key), ["filepath", *read]):
        for path, then in zip(paths, stamps[0] if stamps else [None] * len(paths)):
            if "://" in path:
                continue
            now = file_stamp(path)
            if now is None:
                gone.append(path)
            elif replaced(now, then):
                changed.append(path)
    notes = []
    if gone:
        one = len(gone) == 1
        notes.append(
            f"{count(len(gone), 'image')} in this export {'has' if one else 'have'} no file at "
            f"{'its' if one else 'their'} path now (a drive not mounted? moved since?), e.g. "
            f"{', '.join(gone[:shown])}: {'it is' if one else 'they are'} listed with the labels "
            f"and scores the run gave {'it' if one else 'them'}, and the size if read before")
    if changed:
        one = len(changed) == 1
        notes.append(
            f"{count(len(changed), 'image file')} changed since the run embedded "
            f"{'it' if one else 'them'} (replaced by another picture?), e.g. "
            f"{', '.join(changed[:shown])}: {'its' if one else 'their'} scores and final labels "
            "in this export are of the picture before; run again to embed and score "
            f"{'it' if one else 'them'} (vlsr run, or VLSR 1 to 3 in the App)")
    return "; ".join(notes) or None


def _remove_if_empty(folder):
    if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


def _uncreatable(export_dir):
    """Why the export could not create or write ``export_dir``: it, or its nearest existing
    folder, is a file, or this process may not write there (tried with an empty folder made and
    removed at once: permissions alone do not tell, for root, a read-only disk or /proc)."""
    target = os.path.abspath(export_dir)
    missing = _missing_folders(target)
    existing = os.path.dirname(missing[-1]) if missing else target
    if not os.path.isdir(existing):
        if existing == target:
            return f"{export_dir} is a file, not a directory; choose a directory to export to"
        return (f"{existing} is a file, so {export_dir} cannot be created; choose another "
                "directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".vlsr-check-", dir=existing))
    except OSError as e:
        return (f"No folder can be made in {existing} ({e.strerror.lower()}); choose another "
                "directory")
    return None


def export_problem(samples, export_dir, key=DEFAULT_KEY, detections_field=None, overwrite=False,
                   results=None):
    """Why :func:`export_run` would refuse these arguments, or None: checked before any file is
    written, and by the App's form before Execute. ``results``: the run's, if already loaded."""
    samples = every_field(samples)  # (as the export reads it)
    problem = media_problem(samples)  # (a patches view: its dataset is not the run's)
    if problem:
        return problem
    dataset = samples._dataset
    if not dataset.has_run(key):
        return f"No VLSR run {key!r} on this dataset"
    if not samples.limit(1).count():  # (not len(): a filtered view of many samples is slow)
        return "There are no samples to export in this view"
    stopped = half_deleted(dataset, key)
    if stopped:
        return stopped
    if results is None:
        results = load_results(dataset, key)
    if not results.vocabulary:
        return f"Run {key!r} has no clusters yet: {cluster_first(dataset.get_run_info(key).config)}"
    running, stopped = stage_activity(dataset, key)
    if running:
        return f"Run {key!r} is busy: {running_note(running)}; export it when it is done"
    if stopped:
        return (f"Run {key!r}: {' and '.join(stopped)} stopped part-way and its results are "
                "mixed; run it again before exporting")
    config = dataset.get_run_info(key).config
    outdated = outdated_note(config)
    if outdated:
        return f"Run {key!r}: {outdated}; export after that"
    sharded = sharded_stages(config)
    if sharded:
        return (f"Run {key!r}: {' and '.join(sharded)} runs in shards, and until the last one "
                "is done its results are mixed (a new label map beside old final labels); "
                "export when it is done")
    if (getattr(config, "applied", None) or {}).get("partly"):
        return (f"Run {key!r}: an Apply of a part of the run wrote the review on its samples "
                "only, so the run's fields are mixed (the label map would not match those "
                "samples): apply the review to the whole run before exporting")
    gone = deleted_outputs(dataset, key)
    if gone:
        return f"Run {key!r}: {deleted_note(gone)}, then export"
    problem = (label_filter_problem(samples, config.label_field, config.collection, key)
               or labels_problem(samples, config, results.vocabulary)
               or foreign_problem(samples, key)
               or "; also, ".join(changed_by_hand(samples, key, results)))
    if problem:
        return problem
    problem = export_dir and folder_problem(export_dir, detections_field, overwrite)
    if problem:
        return problem
    if detections_field:
        boxes = detections_fields(samples)
        field = samples.get_field(detections_field)
        if field is None:
            return (f"No field {detections_field!r} to export as COCO detections; Detections "
                    f"fields here: {boxes or 'none'}")
        if detections_field not in boxes:
            kind = getattr(field, "document_type", None) or type(field)
            if issubclass(kind, fo.Detections):  # (in an embedded document)
                return (f"Field {detections_field!r} is inside an embedded document: the COCO "
                        f"export takes a top-level Detections field; here: {boxes or 'none'}")
            return (f"Field {detections_field!r} holds {kind.__name__}, not Detections; "
                    f"Detections fields here: {boxes or 'none'}")
    return None


def folder_problem(export_dir, detections_field=None, overwrite=False):
    """Why the export cannot write its files in ``export_dir``, or None (the form tells it
    under the folder, apart from what is wrong with the run or the samples)."""
    problem = _uncreatable(export_dir)
    if problem:
        return problem
    if os.path.isdir(export_dir) and _holds_files(export_dir) and not overwrite:
        if _leftovers(export_dir) and any(map(os.path.isfile, _export_paths(export_dir))):
            # (files of a new export beside those of an old one)
            return (f"{export_dir} holds the .partial files of a stopped export beside the files "
                    "of an export, which may then not all be of one export; choose another "
                    "directory, or overwrite the files of an earlier export there")
        return (f"{export_dir} is not empty; choose another directory, or overwrite the files "
                "of an earlier export there")
    # (every export writes all three; the boxes' file alone is not an export's either: an
    # overwrite would replace it, or remove it when no Detections field is given)
    held = [name for name in (*FILES, COCO_FILE) if os.path.isfile(os.path.join(export_dir, name))]
    if overwrite and held and not set(FILES) <= set(held):
        return (f"{export_dir} holds {', '.join(held)}, which the export would replace, but not "
                f"the other files of an earlier export ({', '.join(sorted(set(FILES) - set(held)))}"
                "): it may be a file of yours; move it, or choose another directory")
    for name in [*FILES, *([COCO_FILE] if detections_field else [])]:
        path = os.path.join(export_dir, name)
        folder = os.path.dirname(path)
        if os.path.isdir(path):
            return (f"{path} is a folder where the export writes a file; move it, or choose "
                    "another directory")
        if os.path.exists(folder) and not os.path.isdir(folder):
            return (f"{folder} is a file where the export writes a folder; move it, or choose "
                    "another directory")
    return None


def relabelled_problem(samples, key=DEFAULT_KEY, results=None):
    """Why the run's fields do not show the labels of ``samples`` as they are now, or None:
    labels changed by hand to another label of the map since the fields were written keep the
    old label's canonical label, which the export would write (a fix undone in the COCO file).
    A label written by an Apply of part of the run, with the edits in force, is no change."""
    F = fo.ViewField
    dataset = samples._dataset
    config = dataset.get_run_info(key).config
    attribute = label_attributes(key)["canonical"]
    condition, decided = named(F("label")) & F(attribute).exists(), []
    for label_map, decisions in _written_states(dataset, key, results):
        _, by_label = suggestion_decisions(decisions, label_map.vocabulary)
        decided += [ObjectId(i) for i in by_label]  # (an accepted suggestion's: so)
        condition &= F(attribute) != ViewExpression({"$let": {
            "vars": {"label": F("label")}, "in": canonical_of("$$label", label_map.canonical)}})
    changed = samples.filter_labels(config.label_field, condition & ~F("_id").is_in(decided))
    path = label_path(samples, config.label_field)
    n = changed.count(f"{path}.label")
    if not n:
        return None
    label, written = (v[0] for v in changed.limit(1).values(
        [f"{path}.label", f"{path}.{attribute}"], unwind=True))
    return (f"{count(n, 'label')} of {config.label_field!r} changed since the run's fields were "
            f"written, e.g. {label!r}, which they still give as {written!r} (with its score): "
            "score the labels again and apply the review (VLSR 2, then Apply, in the App; vlsr "
            "run on the command line), then export")


def stale_samples_note(samples, key=DEFAULT_KEY, results=None):
    """"N samples have labels of 'gt' removed, given or cleared by hand since ..., e.g. ...",
    and N; (None, 0) if there are none (see :func:`stale_samples`)."""
    n, examples = stale_samples(samples, key, results)
    if not n:
        return None, 0
    field = samples._dataset.get_run_info(key).config.label_field
    return (f"{count(n, 'sample')} {'has' if n == 1 else 'have'} labels of {field!r} removed, "
            f"given or cleared by hand since the run's fields were written, "
            f"{'e.g. ' if n > len(examples) else ''}{', '.join(examples)}"), n


def stale_samples_problem(samples, key=DEFAULT_KEY, results=None):
    """Why the run's final labels do not show the labels of ``samples`` as they are now, or
    None."""
    note, n = stale_samples_note(samples, key, results)
    return note and (f"{note}, so that {'its' if n == 1 else 'their'} final labels may be of "
                     "labels gone: apply the review to bring them up to date (VLSR 5 in the "
                     "App, vlsr apply on the command line), then export")


def changed_by_hand(samples, key=DEFAULT_KEY, results=None):
    """What was changed by hand in ``samples`` since the run's fields were written, each in
    words (none: []): all of them, as each asks for its own mending (Apply for labels, a run
    again for boxes), and one said alone was followed by the next."""
    return [problem for problem in (relabelled_problem(samples, key, results),
                                    stale_samples_problem(samples, key, results),
                                    moved_boxes_problem(samples, key)) if problem]


def moved_boxes_problem(samples, key=DEFAULT_KEY, examples=3):
    """Why the crop scores of ``samples`` are not those of their boxes as they are now, or
    None: boxes moved (or added, or removed) by hand since their crops were cut keep the score
    of the crop before, which the export would write; the next embedding cuts them again."""
    from .crops import crops_current

    config = samples._dataset.get_run_info(key).config
    fields = sample_fields(key)
    if not getattr(config, "crops", False) or not samples.has_field(fields["crop_ids"]):
        return None
    path = label_path(samples, config.label_field)
    moved = samples.exists(fields["crop_ids"]).match(~crops_current(key, path))
    n = moved.count()
    if not n:
        return None
    shown = moved.limit(examples).values("filepath")
    return (f"{count(n, 'sample')} {'has' if n == 1 else 'have'} boxes of "
            f"{config.label_field!r} moved, added or removed by hand since their crops were "
            f"cut, {'e.g. ' if n > len(shown) else ''}{', '.join(shown)}, so that "
            f"{'its' if n == 1 else 'their'} crop scores are of the boxes before: run again to "
            "cut and score them (vlsr run, or VLSR 1 to 3 in the App), then export")


def _usable(label):
    """The MongoDB expression "``label`` is usable", as :func:`~.labels.usable`: a string with
    a character that is not blank."""
    return {"$cond": [{"$eq": [{"$type": label}, "string"]},
                      {"$regexMatch": {"input": label, "regex": USABLE["$regex"]}}, False]}


def stale_lowest_scores(samples, key=DEFAULT_KEY):
    """How many scored samples of ``samples`` hold a lowest score (``{key}_min_similarity``)
    that is not the lowest of their labels' scores now: a label removed or cleared by hand,
    whose canonical label another of their labels still gives (the final labels are right),
    left its score there, and the grid sorted by it shows the sample for a label it no longer
    has. Apply brings it in step (:func:`~.cluster.write_label_map`)."""
    config = samples._dataset.get_run_info(key).config
    path = label_path(samples, config.label_field)
    score = f"$$l.{label_attributes(key)['similarity']}"
    lowest = sample_fields(key)["min_similarity"]
    scored = {"$and": [_usable("$$l.label"), {"$ne": [{"$ifNull": [score, None]}, None]}]}
    objects = {"$ifNull": [f"${path}", []]} if is_list_field(path) else {
        "$cond": [{"$eq": [{"$type": f"${path}"}, "object"]}, [f"${path}"], []]}
    now = {"$min": {"$map": {"input": {"$filter": {"input": objects, "as": "l", "cond": scored}},
                             "as": "l", "in": score}}}
    return samples.mongo([{"$match": {lowest: {"$ne": None},
                                      "$expr": {"$ne": [now, f"${lowest}"]}}}]).count()


def _written_states(dataset, key, results):
    """The label maps and suggestion decisions the run's fields may show: those of the last
    Apply of the whole run, and those of the edits in force, which an Apply of part of it
    wrote (its samples read as changed by hand, their labels' canonical labels of the edits
    since)."""
    applied = review_state(dataset, key, results, applied_only=True)
    now = review_state(dataset, key, results)
    return [(applied.label_map, applied_edits(applied.edits, applied.applied)),
            (now.label_map, now.in_force)]


def stale_samples(samples, key=DEFAULT_KEY, results=None, examples=3):
    """How many samples of ``samples`` the run's fields no longer show as they are, and the
    file paths of the first ``examples``: samples whose labels were removed, given or
    cleared by hand since the fields were written, so that their canonical label set
    (``{key}_labels``) holds a label none of their labels maps to, or lacks one they map to
    (the final label, chosen from it, may be of a label gone). Told by the canonical label on
    each label object; a sample given a suggestion by a decision may hold that one more.
    Samples the fields were never written on are left to the export's note
    (:func:`unclustered_note`)."""
    dataset = samples._dataset
    config = dataset.get_run_info(key).config
    path = label_path(samples, config.label_field)
    attribute = label_attributes(key)["canonical"]

    if is_list_field(path):
        mapped = {"$map": {"input": {"$filter": {"input": {"$ifNull": [f"${path}", []]},
                                                 "as": "l", "cond": _usable("$$l.label")}},
                           "as": "l", "in": f"$$l.{attribute}"}}
    else:
        mapped = {"$cond": [_usable(f"${path}.label"), [f"${path}.{attribute}"], []]}
    names = sample_fields(key)["labels"]
    shown = {"$ifNull": [f"${names}.classifications.label", []]}
    given = {}  # the canonical label a decision gives -> its samples
    for label_map, decisions in _written_states(dataset, key, results):
        by_sample, _ = suggestion_decisions(decisions, label_map.vocabulary)
        for sample_id, edit in by_sample.items():
            if edit.action == "accept_suggestion":
                given.setdefault(label_map.canonical[edit.label], []).append(ObjectId(sample_id))
    # (a sample may hold the suggestion of either)
    extra = {"$concatArrays": [{"$cond": [{"$in": ["$_id", ids]}, [{"$literal": c}], []]}
                               for c, ids in given.items()]} if given else []

    def some(a, b):
        return {"$gt": [{"$size": {"$setDifference": [a, b]}}, 0]}

    # (of the samples the fields were written on: one added since gets a note of the export)
    stale = samples.mongo([{"$match": {names: {"$ne": None}, "$expr": {"$or": [
        some(mapped, shown), some(shown, {"$concatArrays": [mapped, extra]})]}}}])
    n = stale.count()
    return n, (stale.limit(examples).values("filepath") if n else [])


def detections_fields(samples):
    """The Detections fields of ``samples``, which COCO detections can be exported from."""
    samples = every_field(samples)  # (a view that hides the fields read: read them all the same)
    return sorted(samples.get_field_schema(embedded_doc_type=fo.Detections))


def _samples_csv(samples, ids, key, label_field, path, progress):
    fields = sample_fields(key)
    labels_path = label_path(samples, label_field)
    columns = [
        "filepath",
        f"{labels_path}.label",
        f"{fields['label']}.label",
        f"{fields['label']}.confidence",
        f"{fields['labels']}.classifications.label",
        f"{fields['suggestions']}.classifications.label",
        f"{fields['suggestions']}.classifications.confidence",
    ]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(SAMPLES_HEADER)
        done = 0
        for _, (filepaths, original, final, score, canonical, sugg_labels, sugg_scores) in (
            iter_chunks(samples, columns, ids=ids)
        ):
            original = label_sets(as_label_lists(original, labels_path))
            for row in zip(filepaths, final, score, original, canonical, sugg_labels, sugg_scores):
                fp, fl, fs, orig, canon, sl, ss = row
                w.writerow([
                    fp, fl or "", "" if fs is None else f"{fs:.6f}",
                    json.dumps(orig, ensure_ascii=False), json.dumps(canon or [], ensure_ascii=False),
                    json.dumps([[l, round(s, 6)] for l, s in zip(sl or [], ss or [])],
                               ensure_ascii=False),
                ])
            done += len(filepaths)
            progress(done / max(len(ids), 1))
    return path


def _label_map_csv(state, path):
    """The reviewed label map of ``state``, what the clustering had made of each label, and the
    step that put it with its canonical label."""
    label_map = state.label_map
    canonical, clustered = label_map.canonical, state.clustered.canonical
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "canonical", "cluster", "frequency", "dbscan_cluster",
                    "clustered_canonical", "joined_by", "distance_to_canonical"])
        for label, cluster, freq, dbscan, reason, distance in zip(
                label_map.vocabulary, label_map.clusters, label_map.frequencies,
                label_map.dbscan_clusters, state.joined_by, label_map.distance_to_canonical):
            distance = max(float(distance), 0.0) + 0.0  # not "-0.0000"
            w.writerow([label, canonical[label], int(cluster), int(freq), int(dbscan),
                        clustered[label], reason, f"{distance:.4f}"])
    return path


def _compute_sizes(samples, key):
    """Image sizes (COCO files give them, and boxes in pixels) for the images without them and
    for those whose file changed since they were read: its size on disk differs (a file
    replaced after an earlier export), or it is not the file the run embedded (a picture
    turned by its EXIF tag keeps its number of bytes). The run's unreadable images would only
    fail again."""

    readable = _not_unreadable(samples, key)
    readable.exists("metadata", False).compute_metadata()
    stamp = sample_fields(key)["image_file"]
    read = [stamp] if samples.has_field(stamp) else []
    changed = []
    for ids, (paths, sizes, *stamps) in iter_chunks(readable.exists("metadata"),
                                                    ["filepath", "metadata.size_bytes", *read]):
        for sample_id, path, size, then in zip(ids, paths, sizes,
                                               stamps[0] if read else repeat(None)):
            now = file_stamp(path)  # (not a local file, or gone since: the size stays as read)
            if now is not None and (now[0] != size or read and replaced(now, then)):
                changed.append(sample_id)
    if not changed:
        return
    # read again, and written only where they differ: a file replaced since the run is read at
    # every export until the run embeds it again, and a write would each time move the
    # samples' last change (and the COCO file's date: the same export, other bytes)
    ids, paths, old = readable.select(changed).values(["id", "filepath", "metadata"])
    new = {}
    for sample_id, path, then in zip(ids, paths, old):
        try:
            now = fo.ImageMetadata.build_for(path)
        except Exception:  # (gone or unreadable since: as compute_metadata, the size stays)
            continue
        if then is None or now.to_dict() != then.to_dict():
            new[sample_id] = now
    if new:
        readable.set_values("metadata", new, key_field="id")


def _categories(samples, ids, key, label_map, boxes, detections_field, progress):
    """The export's categories, names in id order from 1, shared by ``image_labels.json`` and
    the COCO detections: every canonical label of the run's label map, sorted (an id then
    means one label in every export of the run as it is), then any other label either file
    holds, sorted (one a suggestion gave, or a box label the map lacks)."""
    names = set(label_map.values())
    found, done = set(), 0
    labels = f"{sample_fields(key)['labels']}.classifications.label"
    for _, (ls,) in iter_chunks(samples, [labels], ids=ids):
        found.update(chain.from_iterable(x or [] for x in ls))
        done += len(ls)
        progress(0.9 * done / max(len(ids), 1))
    if boxes is not None:
        found.update(boxes.distinct(f"{detections_field}.detections.label"))
    progress(1.0)
    return sorted(names) + sorted(found - names)


def _image_labels_json(samples, ids, key, categories, path, progress):
    """COCO-style image-level labels, streamed a chunk of samples at a time: images are
    written first and their annotations to a side file appended at the end, so that a large
    export never sits in memory. Returns {sample id: image id} of the images the COCO
    detections list (those of :func:`_readable`)."""
    fields = sample_fields(key)
    labels = f"{fields['labels']}.classifications.label"
    category_id = {name: i for i, name in enumerate(categories, 1)}
    done, sized = 0, {}
    errors = [fields["error"]] if samples.has_field(fields["error"]) else []
    columns = ["filepath", "metadata.width", "metadata.height", labels,
               f"{fields['labels']}.classifications.confidence", f"{fields['label']}.label",
               *errors]

    with open(path, "w", encoding="utf-8") as f, tempfile.TemporaryFile("w+", encoding="utf-8") as side:
        info = dict(description=f"VLSR image-level labels of run {key!r}")
        f.write('{\n "info": ' + json.dumps(info, ensure_ascii=False))
        categories = [dict(id=i, name=n) for n, i in category_id.items()]
        f.write(',\n "categories": ' + json.dumps(categories, ensure_ascii=False))
        f.write(',\n "images": [')
        image_id, annotation_id = 0, 0
        for sids, (filepaths, widths, heights, ls, ss, finals, *error) in iter_chunks(
                samples, columns, ids=ids):
            for sid, fp, w, h, sample_labels, scores, final, failed in zip(
                sids, filepaths, widths, heights, ls, ss, finals,
                error[0] if error else repeat(None)
            ):
                image_id += 1
                if w is not None and failed is None:
                    sized[sid] = image_id
                image = dict(id=image_id, file_name=fp, width=w, height=h, sample_id=sid)
                f.write(("\n  " if image_id == 1 else ",\n  ") + json.dumps(image, ensure_ascii=False))
                for l, s in zip(sample_labels or [], scores or []):
                    annotation_id += 1
                    annotation = dict(id=annotation_id, image_id=image_id,
                                      category_id=category_id[l], score=s, final=l == final)
                    side.write(("\n  " if annotation_id == 1 else ",\n  ")
                               + json.dumps(annotation, ensure_ascii=False))
            done += len(sids)
            progress(done / max(len(ids), 1))
        f.write('\n ],\n "annotations": [')
        side.seek(0)
        shutil.copyfileobj(side, f)
        f.write("\n ]\n}\n")
    return sized


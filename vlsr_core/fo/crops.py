"""Boxes scored on their own crops: which crops are current, and the scores of a chunk's boxes.

A run with ``crops`` keeps, per sample, the embeddings of its boxes' crops (``{key}_crop_embeddings``,
one float32 row a box; NaN for a box scored on the whole image) beside the ids and the bounding
boxes they were cut from. A box that was added, removed or moved since then is cut again by the
next embedding, and is not scored on a stale crop meanwhile.
"""

from dataclasses import dataclass

import numpy as np
from fiftyone import ViewField as F

from ..engine.pipeline import score_images
from .labels import as_label_lists, set_label_attribute, usable
from .runs import CROP_ATTRIBUTES, CROP_FIELDS, CROP_RECORD, label_attributes, sample_fields


def crop_paths(key, path):
    """The sample fields and label attribute paths of run ``key``'s crops."""
    fields, attrs = sample_fields(key), label_attributes(key)
    return [fields[f] for f in CROP_FIELDS] + [f"{path}.{attrs[a]}" for a in CROP_ATTRIBUTES]


def crop_record_fields(key):
    """The sample fields of run ``key`` that keep a sample's crops, in :func:`crop_record`'s order."""
    return [sample_fields(key)[f] for f in CROP_RECORD]


def crops_current(key, path):
    """A match expression: the sample has its image embedding and a crop for each of its boxes
    as they are now (the same ids, the same coordinates)."""
    fields = sample_fields(key)
    return (F(fields["embedding"]).exists()
            & (F(fields["crop_ids"]) == F(path).map(F("_id").to_string()).if_null([]))
            & (F(fields["crop_boxes"]) == F(path).map(F("bounding_box")).if_null([])))


def crop_record(label_ids, boxes, embeddings):
    """The values of ``{key}_crop_ids``, ``{key}_crop_boxes`` and ``{key}_crop_embeddings`` of a
    sample whose boxes (ids and coordinates) gave the crop ``embeddings``."""
    return list(label_ids), [list(b) if b is not None else None for b in boxes], embeddings


@dataclass
class BoxScores:
    """Crop scores of a chunk's boxes, per sample (lists aligned with its label objects)."""

    similarity: list  # per sample, a score or None per box
    fallback: list  # per sample, per box: True when scored on the whole image, None unscored
    suggestions: list  # per sample, per box: the top-k labels, best first, or None
    gap: list  # per sample, per box: best suggestion's score minus the box label's, or None
    labels: list  # per sample, per box: [its label] if usable, else []
    n_cut: int = 0  # boxes scored on their crop
    n_fallback: int = 0  # boxes scored on the whole image
    n_stale: int = 0  # boxes of embedded images without a current crop

    @property
    def min_similarity(self):
        """Per sample, its boxes' lowest crop score, or None."""
        return [min((s for s in sims if s is not None), default=None) for sims in self.similarity]


@dataclass
class BoxRows:
    """What each box of a chunk is judged on, in the order of its samples and their boxes."""

    rows: np.ndarray  # float32 (n_boxes, dim): its crop, the whole image, or NaN (neither)
    fallback: list  # per box: True on the whole image (too small to cut), False on its crop, None
    labels: list  # per box: [its label] if usable, else []
    n_stale: int  # boxes of embedded images without a current crop


def box_rows(images, label_ids, labels, boxes, crops):
    """Each box's row: its stored crop if it was cut from the box as it is now, the whole image if
    the box was too small to cut, NaN if the image has no embedding or the box changed since.

    Args:
        images: float32 (n, dim): the chunk's image embeddings, NaN rows where missing.
        label_ids, labels, boxes: per sample, per box: its id, label string and coordinates.
        crops: per sample, ``(crop_ids, crop_boxes, crop_embeddings)`` as stored, or Nones.
    """
    dim = images.shape[1]
    missing = np.full(dim, np.nan, np.float32)
    rows, fallback = [], []
    n_stale = 0
    for image, ids, coords, (crop_ids, crop_boxes, crop_emb) in zip(images, label_ids, boxes, crops):
        stored = {}
        emb = None if crop_emb is None else np.asarray(crop_emb, dtype=np.float32)
        # (a record of other lengths was written part-way, a kill between its writes: no crop
        # of it is current, and the next embedding cuts them again)
        if crop_ids is not None and emb is not None and emb.size == len(crop_ids) * dim and (
                len(crop_boxes or ()) == len(crop_ids)):
            emb = emb.reshape(len(crop_ids), dim)
            stored = {i: (b, e) for i, b, e in zip(crop_ids, crop_boxes, emb)}
        for box_id, box in zip(ids, coords):
            cut_from, crop = stored.get(box_id, (None, None))
            if not np.isfinite(image).all():  # no image embedding: nothing to score on
                rows.append(missing)
                fallback.append(None)
            elif crop is None or not _same_box(cut_from, box):
                rows.append(missing)  # added or moved since the crops were cut
                fallback.append(None)
                n_stale += 1
            else:
                cut = bool(np.isfinite(crop).all())
                rows.append(crop if cut else image)
                fallback.append(not cut)
    box_labels = [[l] if usable(l) else [] for labels_of in labels for l in labels_of]
    return BoxRows(np.asarray(rows, dtype=np.float32).reshape(len(rows), dim), fallback,
                   box_labels, n_stale)


def _same_box(cut_from, box):
    """Whether a crop cut from the coordinates ``cut_from`` is of ``box`` as it is now, a NaN
    coordinate equal to a NaN as MongoDB compares them (:func:`crops_current`: a box at NaN
    read as current there and as moved here was never scored)."""
    if cut_from is None or box is None:
        return cut_from is None and box is None
    box = list(box)
    return len(cut_from) == len(box) and all(a == b or (a != a and b != b)
                                             for a, b in zip(cut_from, box))


def score_boxes(images, label_ids, labels, boxes, crops, vocabulary, vocab_emb, params,
                frequencies=None):
    """Score every box of a chunk on its crop: the engine's image scoring, each box as an image.

    Args:
        images, label_ids, labels, boxes, crops: as for :func:`box_rows`.
        vocabulary, vocab_emb, params, frequencies: as for
            :func:`~vlsr_core.engine.pipeline.score_images`.

    Returns:
        a :class:`BoxScores`.
    """
    box = box_rows(images, label_ids, labels, boxes, crops)
    # a box without a usable label is not scored: not counted as scored on its crop or image
    box.fallback = [f if l else None for f, l in zip(box.fallback, box.labels)]
    scores = score_images(box.rows, box.labels, vocabulary, vocab_emb, params,
                          frequencies=frequencies)
    similarity = [float(s[0]) if s is not None and len(s) else None for s in scores.similarity]
    suggestions = [[l for l, _ in sugg] or None for sugg in scores.suggestions]
    return BoxScores(
        _per_sample(similarity, label_ids), _per_sample(box.fallback, label_ids),
        _per_sample(suggestions, label_ids), _per_sample(scores.best_gap, label_ids),
        _per_sample(box.labels, label_ids),
        n_cut=box.fallback.count(False), n_fallback=box.fallback.count(True),
        n_stale=box.n_stale)


def write_box_scores(samples, path, key, sample_ids, label_ids, scores):
    """Write a chunk's :class:`BoxScores` onto its boxes, one bulk write an attribute."""
    attrs = label_attributes(key)
    for name, values in (("crop_similarity", scores.similarity), ("crop_fallback", scores.fallback),
                         ("crop_suggestions", scores.suggestions), ("crop_gap", scores.gap)):
        set_label_attribute(samples, path, attrs[name], sample_ids, label_ids, values)


def crop_read_fields(key, path):
    """The fields to read with a chunk of run ``key`` to judge its boxes (:func:`read_crops`)."""
    return [*crop_record_fields(key), f"{path}.bounding_box"]


def read_crops(values, path):
    """A chunk's stored crops, per sample ``(crop_ids, crop_boxes, crop_embeddings)``, and its
    boxes, from ``values`` of :func:`crop_read_fields`."""
    crop_ids, crop_boxes, crop_emb, boxes = values
    return list(zip(crop_ids, crop_boxes, crop_emb)), as_label_lists(boxes, path)


def _per_sample(flat, label_ids):
    out, start = [], 0
    for ids in label_ids:
        out.append(flat[start : start + len(ids)])
        start += len(ids)
    return out

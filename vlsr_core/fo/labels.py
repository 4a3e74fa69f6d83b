"""Reading image label sets from a FiftyOne label field, and writing values onto each label.

A field may hold a ``Classification`` (one label), ``Classifications`` (the main, multi-label
case) or ``Detections`` (the image's label set is its distinct object labels).
"""

import bson
import fiftyone as fo
from bson import ObjectId
from fiftyone.core.expressions import ViewExpression

from ..engine.lexical import INVISIBLE
from ..wording import count
from .lease import check_held

LABEL_TYPES = (fo.Classification, fo.Classifications, fo.Detections)
_LIST_ATTR = {fo.Classifications: "classifications", fo.Detections: "detections"}
# what a blank label holds alone: white space (all of Python's, which MongoDB's $trim does
# not know in full: a full-width space) and the invisible characters
BLANK = "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + INVISIBLE
# a label usable() calls usable, as a MongoDB condition: a string with a character not blank
USABLE = {"$type": "string", "$regex": f"[^{BLANK}]"}
# a value of any type but null, as a MongoDB condition
A_VALUE = {"$type": ["number", "string", "bool", "object", "array", "date", "objectId",
                     "binData"]}


class LabelFieldError(ValueError):
    """The label field is missing or of a type VLSR cannot read."""


def label_fields(samples):
    """Names of the fields of ``samples`` that VLSR can read, for forms and error messages:
    those of a label type, also inside embedded documents (``meta.gt``), but not inside labels
    (an attribute of a box)."""
    schema = samples.get_field_schema(flat=True)

    def document(name):  # (a field that holds other fields, not labels)
        field = schema.get(name)
        return isinstance(field, fo.EmbeddedDocumentField) and not issubclass(
            field.document_type, fo.Label)

    return [
        name
        for name, field in schema.items()
        if isinstance(field, fo.EmbeddedDocumentField) and issubclass(field.document_type, LABEL_TYPES)
        and all(document(name.rsplit(".", k)[0]) for k in range(1, name.count(".") + 1))
    ]


def input_fields(samples):
    """The label fields of ``samples`` that no VLSR run wrote: those a user means to clean."""
    from .runs import run_outputs

    written = run_outputs(samples._dataset)
    return [f for f in label_fields(samples) if f not in written]


def media_problem(samples):
    """Why VLSR cannot run on ``samples`` (not images, or a patches or frames view), or None.
    A grouped dataset's image slices can be run on one at a time, as an image view: the message
    says how."""
    if samples._is_generated:  # patches, frames or clips: sample fields would not reach the samples
        kind = next(k for k in ("patches", "frames", "clips") if getattr(samples, f"_is_{k}"))
        if kind == "patches":
            return ("VLSR runs on a dataset's own samples, not on a view of its patches: target "
                    "the dataset, or a view of its samples (boxes are scored on their own crops "
                    "with the crops option of VLSR 1)")
        return (f"VLSR runs on a dataset's own images, not on a view of a video's {kind}"
                + (": to run it on the frames, clone this view into a dataset of images "
                   "(in Python, dataset.to_frames(...).clone('frames')) and run on that"
                   if kind == "frames" else ""))
    if getattr(samples, "_is_dynamic_groups", False):  # (its media type reads "group")
        return ("VLSR runs on the samples of a view, not on groups of them: remove the view's "
                "group_by stage (in the App, leave the grouped view) and target the samples")
    if samples.media_type in ("image", None):  # (None: an empty dataset, refused as such)
        return None
    problem = f"VLSR works on image datasets; this one holds {samples.media_type} samples"
    slices = [s for s, m in (samples.group_media_types or {}).items() if m == "image"]
    if samples.media_type != "group" or not slices:
        return problem
    if samples.group_slice in slices:  # the slice shown: the one to name first
        slices.remove(samples.group_slice)
        slices.insert(0, samples.group_slice)
    return (f"{problem}: run it on one image slice, as a view: in the App, add the view stage "
            f"SelectGroupSlices with slices {slices[0]!r} and target the current view; in "
            f"Python, run_vlsr(dataset.select_group_slices({slices[0]!r}), ...); with vlsr run, "
            f"save that view and give its name with --view (image slices: "
            f"{', '.join(map(repr, slices))})")


def label_path(samples, label_field):
    """The path of the label objects in ``label_field`` (``gt.classifications`` or ``gt``)."""
    field = samples.get_field(label_field)
    if field is None:
        raise LabelFieldError(
            f"No field {label_field!r}; label fields here: {input_fields(samples) or 'none'}"
        )
    doc_type = getattr(field, "document_type", None)
    if doc_type not in (fo.Classification, *_LIST_ATTR):
        parts, fields = label_field.split("."), input_fields(samples)
        parent = next((p for p in (".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1))
                       if p in fields), None)  # gt.detections, gt.detections.label: gt
        hint = parent and f": give {parent!r}"
        raise LabelFieldError(
            f"Field {label_field!r} is {type(field).__name__}"
            + (f" of {doc_type.__name__}" if doc_type else "")
            + "; VLSR reads Classification, Classifications or Detections fields"
            + (hint or "")
        )
    parts = label_field.split(".")
    listed = next((p for p in (".".join(parts[:k]) for k in range(1, len(parts)))
                   if isinstance(samples.get_field(p), fo.ListField)), None)
    if listed:  # (its labels were read as lists, and scoring failed part-way)
        raise LabelFieldError(f"Field {label_field!r} is inside {listed!r}, a list: VLSR reads a "
                              "label field of a sample, or of an embedded document on it, not "
                              "one in a list")
    attr = _LIST_ATTR.get(doc_type)
    return f"{label_field}.{attr}" if attr else label_field


def label_filter_problem(samples, label_field, collection, key):
    """Why a stage of run ``key`` made on ``collection`` (as the run records it: None for the
    dataset, a saved view's name, "" for an unsaved view) cannot work on ``samples``, or None:
    :func:`label_selection_problem`, or a view that filters the labels of ``label_field``
    (``filter_labels``, such as the run's review views) when the run was made on them whole
    would score, merge or write part of each sample's labels, and drop the rest from its
    outputs. (A run made on filtered labels works on filtered labels: that is how labels are
    kept out of a run.)"""
    problem = label_selection_problem(samples, label_field, key)
    if problem:
        return problem
    dataset = samples._dataset
    if collection == "" or not _filters_labels(samples, label_field) or (
            collection and dataset.has_saved_view(collection)
            and _filters_labels(dataset.load_saved_view(collection), label_field)):
        return None
    name = f"The saved view {samples.name!r}" if samples.is_saved else "The view"
    return (f"{name} filters the labels of {label_field!r}, and the run was made on them whole: it "
            "would work on part of each sample's labels and drop the rest from its outputs. "
            "Choose the dataset, or a view that selects samples without filtering their labels")


def label_selection_problem(samples, label_field, key):
    """Why no stage of run ``key`` can work on ``samples``, or None. A stage reads and writes
    through its view, so a view must show the labels it reads and writes whole: one that
    selects labels (``select_labels``: every other label field hidden, the input's too),
    filters or edits the labels of a field the run writes (``filter_labels`` on
    ``vlsr_labels``, a copy of its final labels; an ``exclude_labels`` without ``fields``
    filters every label field, those created later too), or edits the input's labels
    (``set_field``, ``map_labels``) had stages read no labels, Apply wipe or half-write the
    outputs, and a new run write no label sets. (``concat`` and ``mongo`` stages are not
    looked into.)"""
    if not isinstance(label_field, str):  # (a Field object failed inside FiftyOne)
        return (f"The label field is given by its name, a string such as 'ground_truth', not "
                f"{label_field!r:.120}")
    stages = getattr(samples, "_stages", None)
    if not stages:
        return None
    import fiftyone.core.stages as fos

    from .runs import sample_fields

    dataset = samples._dataset
    written = {sample_fields(key)[role] for role in ("label", "labels", "suggestions")}
    if dataset.has_run(key):
        written.update(getattr(dataset.get_run_info(key).config, "copies", None) or ())
    name = f"The saved view {samples.name!r}" if samples.is_saved else "The view"
    advice = (" Target the dataset, or a view of the samples that have such labels with all "
              "their labels (in the App's sidebar, \"Show samples with ...\" rather than "
              "\"Select labels with ...\"; in Python, match_labels); to keep labels of "
              f"{label_field!r} out of a new run, filter_labels on {label_field!r} (a run made "
              "on them whole refuses such a view)")
    for stage in stages:
        kind = type(stage).__name__
        if isinstance(stage, fos.SelectLabels):
            return (f"{name} selects labels ({kind}), which hides every label field it does not "
                    f"select from ({label_field!r} or the run's own) and filters the others: a stage "
                    "would read or write part of them." + advice)
        if isinstance(stage, fos.ExcludeLabels) and stage.fields is None and stage.labels is None:
            return (f"{name} excludes labels ({kind}) of every label field, the run's own among "
                    "them (those a run creates later too): a stage would write part of them. "
                    f"For a new run, give exclude_labels fields={label_field!r}." + advice)
        edited = _edited_paths(stage, dataset)
        hit = sorted(w for w in written if _touches(edited, w))
        if hit:
            return (f"{name} filters or edits the labels of {hit[0]!r} ({kind}), a field that "
                    f"run {key!r} writes: a stage would write part of them, and leave the rest "
                    "as they were." + advice)
        if _touches(edited, label_field) and kind in ("SetField", "MapLabels", "MapValues"):
            return (f"{name} edits the labels of {label_field!r} ({kind}), and VLSR reads and writes "
                    "labels as stored: clone the view into a dataset (view.clone()) and run on "
                    "that")
    return None


def _edited_paths(stage, dataset):
    """The fields whose values the view stage ``stage`` filters or edits."""
    return set(stage.get_edited_fields(dataset) or ())


def _touches(paths, field):
    """Whether one of ``paths`` is ``field``, a field inside it, or a document holding it."""
    return any(p == field or p.startswith(field + ".") or field.startswith(p + ".")
               for p in paths)


def _filters_labels(samples, label_field):
    """Whether the view ``samples`` leaves out some labels of ``label_field``."""
    stages = getattr(samples, "_stages", None)
    if not stages:
        return False
    import fiftyone.core.stages as fos

    paths = set(samples._get_filtered_fields() or ())  # lists of labels filtered
    paths.update(s.field for s in stages if isinstance(s, (fos.FilterLabels, fos.FilterField)))
    paths.update(label_field for s in stages if isinstance(s, fos.ExcludeLabels)
                 and _touches(_edited_paths(s, samples._dataset), label_field))
    return _touches(paths, label_field)


def is_list_field(path):
    """Whether ``path`` (from :func:`label_path`) holds a list of labels per sample."""
    return path.endswith((".classifications", ".detections"))


def as_label_lists(values, path):
    """``values(f"{path}.<attribute>")`` as one list per sample, an entry per label object
    (None entries kept); a sample without label objects gets an empty list."""
    if is_list_field(path):
        return [list(v) if v else [] for v in values]
    return [[v] if v is not None else [] for v in values]


def label_objects(path, label_ids, labels):
    """Per sample, the ids and the label strings of its label objects, aligned, from
    ``values(f"{path}.id")`` and ``values(f"{path}.label")`` (an object whose label is None keeps
    its place, so that values written back with :func:`set_label_attribute` reach it)."""
    ids = as_label_lists(label_ids, path)
    if is_list_field(path):
        return ids, as_label_lists(labels, path)
    return ids, [[l] if i else [] for i, l in zip(ids, labels)]


def usable(label):
    """Whether a label string can be embedded: not None, not empty, nor only white space and
    invisible characters (a zero-width space alone)."""
    return isinstance(label, str) and label.strip(BLANK) != ""


def unlabelled_problem(dataset, label_field):
    """Why ``label_field`` gives a run nothing to clean, or None: no usable label in the whole
    dataset (unlabelled images of a labelled dataset are fine: they get suggestions)."""
    if first_match(dataset, {f"{label_path(dataset, label_field)}.label": USABLE}):
        return None
    return (f"Field {label_field!r} holds no labels in this dataset (none, or only empty ones): "
            "there is nothing to clean")


def first_match(samples, conditions, how="$and"):
    """Whether a sample of ``samples`` meets the MongoDB ``conditions`` (``{field path:
    condition}``), all of them or with ``how="$or"`` any: one query that stops at the first
    such sample, where FiftyOne's ``count`` or ``distinct`` of a label path reads every label."""
    if not conditions:
        return False
    match = {how: [{samples._handle_db_field(p): c} for p, c in conditions.items()]}
    if samples is samples._dataset:  # (a find, not an aggregation: the quickest)
        return samples._sample_collection.find_one(match, {"_id": True}) is not None
    return bool(list(samples._aggregate(post_pipeline=[{"$match": match}, {"$limit": 1},
                                                       {"$project": {"_id": True}}])))


def one_of(expression, labels):
    """The expression "``expression`` is one of ``labels``", each label taken as data:
    FiftyOne's ``is_in`` and ``==`` read a string starting with "$" as a field path (the
    label ``$cost`` matched nothing). Searched as :func:`looked_up` searches: ``$in`` of a
    list compares a label with every one (counting the samples and labels of the run's view
    of 1,434 weak labels took 5.7 s at 100,000 samples, against 0.6 s now;
    ``bench/bench_export.py``)."""
    return ViewExpression({"$let": {"vars": {"label": expression},
                                    "in": looked_up("$$label", dict.fromkeys(labels, True), False)}})


SEARCH_LEAF = 16  # labels that a branch of looked_up's search compares one by one
QUERY_BYTES = 12 * 2 ** 20  # the largest lookup written into a query (MongoDB takes 16 MB)


def query_bytes(expression):
    """The size of ``expression`` (a MongoDB expression or a ViewExpression) in a query."""
    if isinstance(expression, ViewExpression):
        expression = expression.to_mongo()
    return len(bson.encode({"e": expression}))


def looked_up(value, table, default):
    """The MongoDB expression "``table[value]`` if ``value`` is a key of ``table`` (strings),
    else ``default``": a binary search of the keys sorted as MongoDB compares strings (by
    their UTF-8 bytes), a few comparisons a value where a list costs one a key."""
    def search(keys):
        if len(keys) <= SEARCH_LEAF:  # (arrays: a label's bytes once, and its value's)
            return {"$arrayElemAt": [
                {"$concatArrays": [{"$literal": [table[k] for k in keys]}, [default]]},
                {"$indexOfArray": [{"$literal": keys}, value]}]}  # (-1: the last, the default)
        middle = len(keys) // 2
        return {"$cond": [{"$lt": [value, {"$literal": keys[middle]}]},
                          search(keys[:middle]), search(keys[middle:])]}

    return search(sorted(table, key=lambda k: k.encode())) if table else default


def holds(expression, label):
    """The expression "the list ``expression`` (None: empty) holds ``label``", the label
    taken as data (see :func:`one_of`)."""
    return ViewExpression({"$in": [{"$literal": label}, {"$ifNull": [expression, []]}]})


def named(label):
    """The expression "``label`` is a usable label" (not missing, empty or blank: as
    :func:`usable`, invisible characters aside), for ``filter_labels``."""
    return label.exists() & (label.strip(BLANK) != "")


def label_counts(samples, label_field):
    """How many label objects of ``label_field`` carry each label (None, empty and blank ones
    too); empty if the field is gone."""
    try:
        path = label_path(samples, label_field)
    except LabelFieldError:
        return {}
    if path == label_field:  # one label a sample: a sample without one counts no None label
        samples = samples.exists(label_field)
    return samples.count_values(f"{path}.label")


def blank_labels(counts):
    """How many label objects of :func:`label_counts` a run skips: None, empty or blank labels."""
    return sum(n for label, n in counts.items() if not usable(label))


def blank_note(n):
    """A report's words for ``n`` skipped label objects ("" for none)."""
    return (f"; {count(n, 'label object')} with an empty or blank label skipped (left as "
            f"{'it is' if n == 1 else 'they are'})" if n else "")


def label_sets(raw_labels):
    """Per sample, its distinct usable labels in order of first appearance."""
    return [list(dict.fromkeys(l for l in labels if usable(l))) for labels in raw_labels]


def set_label_attribute(samples, path, attribute, sample_ids, label_ids, values):
    """Set ``attribute`` on the given label objects, in one bulk write, by label id: what a
    view shows (label filters, even on the attribute being written) cannot shift the values.

    Args:
        samples: the collection the labels were read from.
        path: from :func:`label_path`.
        attribute: an attribute declared on the label objects (so the App can filter by it).
        sample_ids: sample ids.
        label_ids, values: per sample, its label ids (:func:`label_objects`) and a value each.
    """
    check_held(samples._dataset)
    items = [
        dict(sample_id=s, label_id=l, value=v)
        for s, ids, vals in zip(sample_ids, label_ids, values)
        for l, v in zip(ids, vals)
    ]
    if items:
        samples.set_label_values(f"{path}.{attribute}", items)


def classification_doc(label, confidence=None, tags=()):
    """A Classification as FiftyOne stores it (what ``Classification(...).to_mongo()`` gives),
    built directly: written with ``set_values(..., validate=False)``, a chunk of suggestions
    costs a ninth of the same written as FiftyOne label objects (bench/bench_label_docs.py)."""
    doc = {"_id": ObjectId(), "_cls": "Classification", "tags": list(tags), "label": label}
    if confidence is not None:
        doc["confidence"] = float(confidence)
    return doc


def classifications_doc(pairs, tags=None):
    """Classifications of ``(label, confidence)`` pairs as FiftyOne stores them, each label
    with its tags in ``tags`` (a dict by label: a curator's, kept over a rewrite)."""
    tags = tags or {}
    return {"_cls": "Classifications",
            "classifications": [classification_doc(l, c, tags.get(l, ())) for l, c in pairs]}


def tags_by_label(labels, tags):
    """The tags of the label objects of a Classifications field as read back (``labels`` and
    ``tags`` of its ``classifications``, None for no value), by label: what
    :func:`classifications_doc` keeps."""
    return {l: t for l, t in zip(labels or [], tags or []) if t}

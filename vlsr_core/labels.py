"""Reading image label sets from a FiftyOne label field, and writing values onto each label.

A field may hold a ``Classification`` (one label), ``Classifications`` (the main, multi-label
case) or ``Detections`` (the image's label set is its distinct object labels).
"""

import fiftyone as fo
from fiftyone import ViewField as F

LABEL_TYPES = (fo.Classification, fo.Classifications, fo.Detections)
_LIST_ATTR = {fo.Classifications: "classifications", fo.Detections: "detections"}


class LabelFieldError(ValueError):
    """The label field is missing or of a type VLSR cannot read."""


def label_fields(samples):
    """Names of the fields of ``samples`` that VLSR can read, for forms and error messages."""
    schema = samples.get_field_schema(embedded_doc_type=None)
    return [
        name
        for name, field in schema.items()
        if isinstance(field, fo.EmbeddedDocumentField) and issubclass(field.document_type, LABEL_TYPES)
    ]


def label_path(samples, label_field):
    """The path of the label objects in ``label_field`` (``gt.classifications`` or ``gt``)."""
    field = samples.get_field(label_field)
    if field is None:
        raise LabelFieldError(
            f"No field {label_field!r}; label fields here: {label_fields(samples) or 'none'}"
        )
    doc_type = getattr(field, "document_type", None)
    if doc_type not in (fo.Classification, *_LIST_ATTR):
        raise LabelFieldError(
            f"Field {label_field!r} is {type(field).__name__}"
            + (f" of {doc_type.__name__}" if doc_type else "")
            + "; VLSR reads Classification, Classifications or Detections fields"
        )
    attr = _LIST_ATTR.get(doc_type)
    return f"{label_field}.{attr}" if attr else label_field


def is_list_field(path):
    """Whether ``path`` (from :func:`label_path`) holds a list of labels per sample."""
    return path.endswith((".classifications", ".detections"))


def read_labels(samples, path):
    """Per sample, the label strings of its label objects in order (None entries kept).

    Returns a list (one per sample) of lists (one per label object), so that values written
    back with :func:`write_label_attribute` line up with the objects.
    """
    values = samples.values(f"{path}.label")
    if is_list_field(path):
        return [list(v) if v else [] for v in values]
    return [[v] if v is not None else [] for v in values]


def usable(label):
    """Whether a label string can be embedded: not None, not empty or only white space."""
    return isinstance(label, str) and label.strip() != ""


def label_sets(raw_labels):
    """Per sample, its distinct usable labels in order of first appearance."""
    return [list(dict.fromkeys(l for l in labels if usable(l))) for labels in raw_labels]


def write_label_attribute(samples, path, attribute, values, ftype):
    """Set ``attribute`` on every label object in bulk, declared in the schema so that the App
    can filter by it and deleting the run removes it.

    Args:
        samples: the collection the labels were read from, in the same order.
        path: from :func:`label_path`.
        attribute: attribute name, e.g. ``vlsr_similarity``.
        values: per sample, a list aligned with :func:`read_labels` for that sample.
        ftype: the FiftyOne field class, e.g. ``fo.FloatField``.
    """
    dataset = samples._dataset
    if not dataset.has_sample_field(f"{path}.{attribute}"):
        dataset.add_sample_field(f"{path}.{attribute}", ftype)
    # only where the field holds a label: setting ``gt.attr`` where ``gt`` is None would create
    # a label object, modifying the input
    label_field = path.split(".", 1)[0]
    has_label = samples.values(F(label_field).exists())
    if not all(has_label):
        samples = samples.exists(label_field)
        values = [v for v, h in zip(values, has_label) if h]
    if is_list_field(path):
        samples.set_values(f"{path}.{attribute}", values)
    else:
        samples.set_values(f"{path}.{attribute}", [v[0] if v else None for v in values])

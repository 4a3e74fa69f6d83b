"""vlsr_core: the VLSR engine (arXiv 2506.23465) — CLIP scores, label clustering, final labels.

Public API: the run parameters (:class:`EmbedParams`, :class:`ScoreParams`, :class:`MergeParams`),
:func:`cluster_labels`, :func:`sanitize` (with :class:`SanitizeResult`), its halves
:func:`score_images` and :func:`refine_labels` (itself :func:`label_frequencies`,
:func:`build_label_map` and :func:`final_labels`, for chunked use) and :class:`CLIPEncoder`
(imported lazily, so that numpy-only use never loads torch).
"""

from .engine.clustering import cluster_labels
from .engine.merging import merge_small_clusters, representatives
from .engine.defaults import DEFAULT_MIN_CLUSTER_SIZE
from .engine.params import EmbedParams, MergeParams, ParamError, ScoreParams
from .engine.pipeline import (
    FinalLabels,
    ImageScores,
    LabelMap,
    LabelRefinement,
    SanitizeResult,
    build_label_map,
    final_labels,
    label_frequencies,
    refine_labels,
    sanitize,
    score_images,
)

__all__ = [
    "EmbedParams",
    "MergeParams",
    "ParamError",
    "ScoreParams",
    "FinalLabels",
    "ImageScores",
    "LabelMap",
    "build_label_map",
    "final_labels",
    "label_frequencies",
    "LabelRefinement",
    "refine_labels",
    "score_images",
    "CLIPEncoder",
    "DEFAULT_MIN_CLUSTER_SIZE",
    "SanitizeResult",
    "cluster_labels",
    "merge_small_clusters",
    "representatives",
    "sanitize",
]


def __getattr__(name):
    if name == "CLIPEncoder":
        from .model.encoder import CLIPEncoder

        return CLIPEncoder
    raise AttributeError(f"module 'vlsr_core' has no attribute {name!r}")

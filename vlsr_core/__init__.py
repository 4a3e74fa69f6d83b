"""vlsr_core: the VLSR engine (arXiv 2506.23465) — CLIP scores, label clustering, final labels.

Public API: the run parameters (:class:`EmbedParams`, :class:`ScoreParams`, :class:`MergeParams`),
:func:`cluster_labels`, :func:`sanitize` (with :class:`SanitizeResult`), its halves
:func:`score_images` and :func:`refine_labels` (itself :func:`label_frequencies`,
:func:`build_label_map` and :func:`final_labels`, for chunked use), the paper's steps 5 and 6
alone (:func:`merge_small_clusters`, :func:`representatives`, :data:`DEFAULT_MIN_CLUSTER_SIZE`),
:class:`CLIPEncoder` and :func:`unknown_words` (what its tokenizer knows of each label, which
names clusters); :class:`ParamError` and the result classes of these functions.

Each is imported on first use, so that ``import vlsr_core`` is instant: numpy-only use never loads
torch, and the ``vlsr`` command answers Ctrl-C from its first moment.
"""

import importlib

_HOMES = {  # public name -> the module defining it
    **dict.fromkeys(["EmbedParams", "MergeParams", "ParamError", "ScoreParams"], ".engine.params"),
    **dict.fromkeys(["FinalLabels", "ImageScores", "LabelMap", "LabelRefinement", "SanitizeResult",
                     "build_label_map", "final_labels", "label_frequencies", "refine_labels",
                     "sanitize", "score_images"], ".engine.pipeline"),
    "cluster_labels": ".engine.clustering",
    **dict.fromkeys(["merge_small_clusters", "representatives"], ".engine.merging"),
    "DEFAULT_MIN_CLUSTER_SIZE": ".engine.defaults",
    "CLIPEncoder": ".model.encoder",
    "unknown_words": ".model.tokens",
}

__all__ = list(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'vlsr_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""VLSR on a FiftyOne collection in three stages that read, compute and write in bulk, a chunk of
samples at a time (:mod:`vlsr_core.fo.chunks`), so that memory stays flat as the collection grows.

1. :func:`compute_embeddings` — images onto ``{key}_embedding`` (streamed, resumable), labels
   into the run record;
2. :func:`score_labels` — ``{key}_similarity`` on every label, ``{key}_suggestions``, per-sample
   summaries and review views;
3. :func:`cluster_and_merge` — ``{key}_canonical`` / ``{key}_cluster`` on every label,
   ``{key}_labels``, ``{key}_label`` and the label map in the run record.

:func:`run_vlsr` runs all three. Every stage records its parameters in the run's config. Each
stage is a module of its own (:mod:`.embed`, :mod:`.score`, :mod:`.cluster`, with what they share in
:mod:`.stage_run` and :mod:`.stamps`); this one gathers their entry points, in one run or in shards.
"""

from ..engine.defaults import DEFAULT_KEY
from ..engine.params import PARAM_CLASSES, EmbedParams, MergeParams, ParamError, ScoreParams
from .cluster import cluster_and_merge, cluster_shard, finish_cluster_shards, prepare_cluster_shards
from .embed import EmbeddingReport, compute_embeddings, compute_image_embeddings, unreadable_images
from .labels import label_filter_problem
from .lease import holds_run
from .runs import VLSRRunConfig
from .score import ScoreReport, finish_score_shards, prepare_score_shards, score_labels, score_shard
from .stage_run import BatchFinished, VLSRError, _check_inside

__all__ = [
    "BatchFinished", "EmbeddingReport", "ScoreReport", "VLSRError", "cluster_and_merge",
    "cluster_shard", "compute_embeddings", "compute_image_embeddings", "finish_cluster_shards",
    "finish_score_shards", "prepare_cluster_shards", "prepare_score_shards", "run_vlsr",
    "score_labels", "score_shard", "unreadable_images",
]


@holds_run("vlsr run")
def run_vlsr(samples, label_field, key=DEFAULT_KEY, embed=None, score=None, merge=None, *,
             recompute=False, encoder=None, progress=None, **overrides):
    """All three stages: embed, score, cluster and merge. Returns the :class:`EmbeddingReport`.

    Args:
        embed, score, merge: the parameters of each stage (:class:`EmbedParams`,
            :class:`ScoreParams`, :class:`MergeParams`); ``overrides`` replace single fields of
            any of them, e.g. ``model="./clip", top_k=3, eps=0.1``.
        progress: called as ``progress(stage_name, fraction)`` with stage names ``embed``,
            ``score`` and ``cluster``.
        others: see :func:`compute_embeddings`.
    """
    progress = progress or (lambda stage, fraction: None)
    embed, score, merge = (
        cls.resolve(given, **{k: v for k, v in overrides.items() if k in cls.names()})
        for cls, given in ((EmbedParams, embed), (ScoreParams, score), (MergeParams, merge))
    )
    unknown = set(overrides) - {n for cls in PARAM_CLASSES for n in cls.names()}
    if unknown:
        raise ParamError(sorted(unknown)[0], f"unknown parameter(s) {sorted(unknown)}")
    dataset = samples._dataset
    config = dataset.get_run_info(key).config if dataset.has_run(key) else None
    # what scoring would refuse, said before the model loads and the images are embedded
    problem = label_filter_problem(samples, label_field, getattr(config, "collection", ""),
                                   key)
    if problem:
        raise VLSRError(problem)
    if isinstance(config, VLSRRunConfig):
        if samples is not dataset:  # (of the whole dataset: its embedding widens the run)
            _check_inside(samples, key)
    report = compute_embeddings(samples, label_field, key, embed, recompute=recompute,
                                encoder=encoder, progress=lambda f: progress("embed", f))
    score_labels(samples, key, score, progress=lambda f: progress("score", f))
    cluster_and_merge(samples, key, merge, progress=lambda f: progress("cluster", f))
    return report

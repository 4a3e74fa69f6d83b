"""Operator: cluster the vocabulary, merge small clusters, choose canonical and final labels (4-7)."""

import dataclasses

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_EPS, DEFAULT_KEY
from vlsr_core.engine.grouping import EPS_SCALE, UNDERIVED, derives
from vlsr_core.engine.params import MergeParams
from vlsr_core.wording import count

from .common import (
    check_target,
    chosen_run_key,
    chosen_target,
    delegable,
    execution_flags,
    finish,
    param_inputs,
    params_from,
    queued_message,
    run_key_choice,
    run_name,
    run_params,
    run_target,
    run_with_progress,
    shard_count,
    shards_input,
    target_view,
)
from .run_shard import new_batch, queue_shards


class ClusterAndMerge(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="cluster_and_merge",
            label="VLSR 3: cluster and merge labels",
            description="Step 3: fold label variants into canonical labels and pick one final label per "
                        "image",
            icon="merge",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = target_view(ctx, inputs, key=chosen_run_key(ctx))
        key = run_key_choice(ctx, inputs, "cluster labels") if view is not None else None
        if key is not None and check_target(
                ctx, inputs, key, view, "This replaces the run's whole vocabulary, clusters and "
                "label map with ones computed from their labels only.", rebuilds=True):
            base, hidden = _base(ctx, key)
            param_inputs(ctx, inputs, MergeParams, base, hidden=hidden)
            shards_input(ctx, inputs, view, "cluster the labels now, and queue the writing of the label map on the samples")
            last = _last_steps(ctx, key)
            if last:
                background = last.get("background_distance")  # (None: fewer than 2 labels)
                derived = (f"derives {last['derived_eps']:.3f} from these labels ({EPS_SCALE} "
                           f"x their median distance {background:.3f})" if derives(background)
                           else f"uses {last['derived_eps']:.3f}, {UNDERIVED}")
                inputs.view("last_eps", types.Notice(label=(
                    f"Last clustering ({last['mode']} mode) used eps {last['eps']:.3f}; the "
                    f"recommended mode {derived}. "
                    f"An empty eps means: derive it (recommended) or {DEFAULT_EPS} (paper)")))
        return types.Property(inputs, view=types.View(label=self.config.label))

    def resolve_run_name(self, ctx):
        return run_name(ctx, "cluster and merge")

    @delegable
    def execute(self, ctx):
        from vlsr_core.fo.stages import cluster_and_merge, prepare_cluster_shards
        from vlsr_core.fo.summary import summarize_run

        key, shards = ctx.params.get("key", DEFAULT_KEY), shard_count(ctx)
        params = params_from(ctx, MergeParams, *_base(ctx, key))
        target = chosen_target(ctx, run_target(ctx, key))
        if shards > 1:
            batch = new_batch()
            label_map = yield from run_with_progress(ctx, "Clustering", lambda progress: (
                prepare_cluster_shards(target, key, params, batch=batch, progress=progress)))
            queued = queue_shards(ctx, target, shards, "cluster", key, batch)
            message = queued_message(len(queued), (
                f"Run {key!r}: clustered {count(len(label_map.vocabulary), 'label')} into "
                f"{count(len(label_map.representatives), 'canonical label')}"))
            return (yield from finish(ctx, message, message + ". The last shard to finish saves "
                                      "the view of changed samples."))
        yield from run_with_progress(ctx, "Clustering", lambda progress: cluster_and_merge(
            target, key, params, progress=progress))
        return (yield from finish(ctx, f"Clustered the labels of run {key!r}",
                                  summarize_run(ctx.dataset, key)))


def _last_steps(ctx, key):
    """What the run's last clustering recorded about its steps (None before the first)."""
    from vlsr_core.fo.runs import load_results

    try:
        results = load_results(ctx.dataset, key)
    except ValueError:  # no such run, or its results being rewritten elsewhere (RunBusyError)
        return None
    steps = getattr(results, "merge_steps", None)  # None: not embedded yet
    return steps if steps and steps.get("derived_eps") is not None else None


def _base(ctx, key):
    """The run's last merge parameters and the inputs the form leaves out: in the paper's mode,
    image evidence (part of the recommended mode only), off."""
    base = run_params(ctx, key, MergeParams)
    if ctx.params.get("mode", base.mode) != "paper":
        return base, ()
    return dataclasses.replace(base, image_evidence=False), ("image_evidence",)

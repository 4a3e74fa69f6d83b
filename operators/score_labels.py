"""Operator: score every label against its image and suggest better vocabulary labels (steps 2-3)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY
from vlsr_core.engine.params import ScoreParams

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


class ScoreLabels(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="score_labels",
            label="VLSR 2: score labels",
            description="Step 2: score every label against its image and suggest better labels from the "
                        "vocabulary",
            icon="rule",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = target_view(ctx, inputs, key=chosen_run_key(ctx))
        key = run_key_choice(ctx, inputs, "score labels") if view is not None else None
        if key is not None and check_target(
                ctx, inputs, key, view, "Their suggestions are then drawn from their own labels "
                "only, and the low-score threshold and the review views are computed from them "
                "alone.", rebuilds=True):
            param_inputs(ctx, inputs, ScoreParams, run_params(ctx, key, ScoreParams))
            shards_input(ctx, inputs, view, "queue the scoring (the last job to finish saves the review views)")
        return types.Property(inputs, view=types.View(label=self.config.label))

    def resolve_run_name(self, ctx):
        return run_name(ctx, "score labels")

    @delegable
    def execute(self, ctx):
        from vlsr_core.fo.runs import saved_view_names
        from vlsr_core.fo.stages import prepare_score_shards, score_labels

        key, shards = ctx.params.get("key", DEFAULT_KEY), shard_count(ctx)
        params = params_from(ctx, ScoreParams, run_params(ctx, key, ScoreParams))
        target = chosen_target(ctx, run_target(ctx, key))
        if shards > 1:
            batch = new_batch()
            n_labels = prepare_score_shards(target, key, params, batch=batch)
            queued = queue_shards(ctx, target, shards, "score", key, batch)
            message = queued_message(len(queued), f"Run {key!r}: prepared to score against "
                                                  f"{n_labels} vocabulary labels")
            return (yield from finish(ctx, message, message + ". The last shard to finish saves "
                                      "the review views."))
        report = yield from run_with_progress(ctx, "Scoring", lambda progress: score_labels(
            target, key, params, progress=progress))
        views = [v for role, v in saved_view_names(key).items() if role != "changed"]
        crop = "crop_" if report.crops else ""  # the scores the review views use
        message = f"Run {key!r}: {report.summary()}"
        return (yield from finish(
            ctx, message,
            f"{message}\n\nSort by `{key}_min_{crop}similarity` (samples without a score, "
            "such as unreadable or unlabelled images, come first), filter labels by "
            f"`{key}_{crop}similarity`, or open the review views: "
            + ", ".join(f"`{v}`" for v in views)))

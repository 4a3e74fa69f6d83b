"""Operator: score every label against its image and suggest better vocabulary labels (steps 2-3)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.defaults import DEFAULT_KEY, DEFAULT_TOP_K

from .common import execution_flags, finish, run_key_choice, run_with_progress, target_view


class ScoreLabels(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="score_labels",
            label="VLSR: score labels",
            description="Score each label against its image, suggest better labels, save review views",
            icon="rule",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = target_view(ctx, inputs)
        if view is not None and run_key_choice(ctx, inputs, "scoring") is not None:
            inputs.int("top_k", default=DEFAULT_TOP_K, min=1, label="Suggestions per sample",
                       description="Labels of the whole vocabulary offered per image, best first")
            inputs.float("replace_margin", default=0.0, min=0.0, label="Better-label margin",
                         description="A suggestion must beat every assigned label by more than "
                                     "this to put the sample in the better-label view")
        return types.Property(inputs, view=types.View(label="VLSR: score labels"))

    def execute(self, ctx):
        from vlsr_core.runs import saved_view_names
        from vlsr_core.stages import score_labels

        key = ctx.params.get("key", DEFAULT_KEY)
        report = yield from run_with_progress(ctx, "Scoring", lambda progress: score_labels(
            ctx.target_view(), key, top_k=ctx.params.get("top_k", DEFAULT_TOP_K),
            replace_margin=ctx.params.get("replace_margin", 0.0), progress=progress,
        ))
        views = [v for role, v in saved_view_names(key).items() if role != "changed"]
        yield from finish(ctx, f"Run {key!r}: {report.summary()}",
                          f"Sort by `{key}_min_similarity`, filter labels by `{key}_similarity`, "
                          "or open the review views: " + ", ".join(f"`{v}`" for v in views))

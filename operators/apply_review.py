"""Operator: write the reviewed label map and the decisions on suggestions to the run's fields."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY

from .common import (
    block,
    check_target,
    chosen_run_key,
    chosen_target,
    delegable,
    execution_flags,
    finish,
    review_state_input,
    run_key_choice,
    run_name,
    run_target,
    run_with_progress,
    target_view,
)


class ApplyReview(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="apply_review",
            label="VLSR 5: apply the review",
            description="Step 5: write the reviewed label map and the accepted suggestions to the run's "
                        "canonical labels and final label (the input labels stay as they are)",
            icon="task_alt",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        form = types.Property(inputs, view=types.View(label=self.config.label))
        view = target_view(ctx, inputs, key=chosen_run_key(ctx))
        key = run_key_choice(ctx, inputs, "apply a review") if view is not None else None
        state = review_state_input(ctx, inputs, key) if key is not None else None
        if state is None:
            return form
        from vlsr_core.fo.review import (apply_problem, copy_note, labels_problem,
                                         run_copies_outdated)

        problem = apply_problem(ctx.dataset, key)
        if problem:  # (in place of the warning that the run is out of date, if it is that)
            outdated = "outdated" in inputs.properties and problem.startswith(
                inputs.properties["outdated"].view.label)
            block(inputs, "outdated" if outdated else "apply_error", problem)
            return form
        if not check_target(ctx, inputs, key, view, "Only their fields are rewritten."):
            return form
        problem = labels_problem(view, ctx.dataset.get_run_info(key).config,
                                 state.label_map.vocabulary)
        if problem:
            block(inputs, "apply_error", problem)
            return form
        from vlsr_core.fo.export import stale_lowest_scores, stale_samples_note
        from vlsr_core.wording import count

        note, n = stale_samples_note(view, key)
        if note:  # (the export refuses them, and sends the curator here)
            inputs.view("by_hand", types.Notice(label=(
                f"{note}: this Apply brings {'its' if n == 1 else 'their'} canonical and final "
                "labels up to date")))
        lowest = stale_lowest_scores(view, key)
        if lowest:  # (as the summary says it; of those above too)
            inputs.view("by_hand_scores", types.Notice(label=(
                f"{count(lowest, 'sample')} {'holds' if lowest == 1 else 'hold'} as lowest "
                "score that of a label removed by hand since: this Apply writes the lowest "
                "scores anew")))
        for name, n in run_copies_outdated(ctx.dataset, key, state):
            inputs.view(f"outdated_{name}", types.Warning(label=copy_note(name, n)))
        prop = inputs.str("copy_to", label="Also copy the final labels to a new field (optional)",
                          description="A Classification field the run creates (and deletes "
                                      "with the run), e.g. reviewed_label")
        name = ctx.params.get("copy_to")
        if name:
            from vlsr_core.fo.cluster import copy_problem

            problem = copy_problem(ctx.dataset, key, name)
            if problem:
                prop.invalid, prop.error_message = True, problem
        return form

    def resolve_run_name(self, ctx):
        return run_name(ctx, "apply review")

    @delegable
    def execute(self, ctx):
        from vlsr_core.fo.review import apply_review, review_state

        key = ctx.params.get("key", DEFAULT_KEY)
        report = yield from run_with_progress(ctx, "Applying", lambda progress: apply_review(
            chosen_target(ctx, run_target(ctx, key)), key,
            copy_to=ctx.params.get("copy_to") or None, progress=progress))
        message = f"Run {key!r}: {report.summary()}"
        return (yield from finish(ctx, message,
                                  f"{message}\n\n{review_state(ctx.dataset, key).summary()}"))

"""Operator: undo a review edit of a run (the last one, or any one in force)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY

from .common import block, reported, review_state_input, run_key_choice


class UndoReviewEdit(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="undo_review_edit",
            label="VLSR 4: undo a review edit",
            description="Step 4: take back an edit of the label map or a decision on suggestions",
            icon="undo",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        form = types.Property(inputs, view=types.View(label="VLSR: undo a review edit"))
        key = run_key_choice(ctx, inputs, "review") if ctx.dataset is not None else None
        state = review_state_input(ctx, inputs, key) if key is not None else None
        if state is None:
            return form
        edits = state.in_force[::-1]  # the latest first
        if not edits:
            block(inputs, "undo_error", f"Run {key!r} has no review edit to undo")
            return form
        choices = types.Dropdown(label="Edit to undo")
        for e in edits:
            choices.add_choice(e.id, label=f"#{e.id} {e.describe().replace('`', '')}",
                               description=e.time)
        inputs.enum("edit_id", choices.values(), default=edits[0].id, view=choices,
                    description="The latest edit comes first; undoing keeps it on record")
        return form

    @reported
    def execute(self, ctx):
        from vlsr_core.fo.review import undo_edit

        key = ctx.params.get("key", DEFAULT_KEY)
        edit = undo_edit(ctx.dataset, key, ctx.params.get("edit_id"))
        message = f"Undid edit #{edit.id} of run {key!r} ({edit.describe().replace('`', '')}); Apply to write it"
        ctx.ops.notify(message, variant="success")
        return dict(message=message, edit=edit.as_record())

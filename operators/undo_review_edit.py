"""Operator: undo a review edit of a run (the last one, or any one in force)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY
from vlsr_core.wording import count, plain

from .common import block, done, reported, review_form


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
        from vlsr_core.fo.review import shown_time

        inputs, form, key, state = review_form(ctx, self.config.label)
        if state is None:
            return form
        edits = state.in_force[::-1]  # the latest first
        if not edits:
            block(inputs, "undo_error", f"Run {key!r} has no review edit to undo")
            return form
        choices = types.Dropdown(label="Edit to undo")
        for e in edits:
            choices.add_choice(e.id, label=f"#{e.id} {plain(e.describe())}",
                               description=shown_time(e.time))
        prop = inputs.enum("edit_id", choices.values(), default=edits[0].id, view=choices,
                           description="The latest edit comes first; undoing keeps it on record")
        inputs.bool("with_later", default=False, label="Also undo every edit made after it",
                    description="All the edits of an import, say")
        chosen = ctx.params.get("edit_id") or edits[0].id
        if chosen not in {e.id for e in edits}:  # (undone meanwhile, say in another window)
            prop.invalid, prop.error_message = True, (
                f"Edit {chosen!r} is not an edit of run {key!r} in force: choose one from the list")
            return form
        if ctx.params.get("with_later"):
            going = [e for e in edits if e.id >= chosen]
            inputs.view("going", types.Notice(label=(
                f"Undoes {count(len(going), 'edit')}: "
                + ", ".join(f"#{e.id}" for e in going[::-1][:20])
                + (", ..." if len(going) > 20 else ""))))
        return form

    @reported
    def execute(self, ctx):
        from vlsr_core.fo.review import after_undo, edit_numbers, undo_edit, undo_edits_from

        key = ctx.params.get("key", DEFAULT_KEY)
        edit_id = ctx.params.get("edit_id")
        if ctx.params.get("with_later") and edit_id is not None:
            undone = undo_edits_from(ctx.dataset, key, edit_id)
            message = (f"Undid {count(len(undone), 'edit')} of run {key!r}, "
                       f"{edit_numbers(undone)}; {after_undo(ctx.dataset, key, undone)}")
        else:
            undone = [undo_edit(ctx.dataset, key, edit_id)]
            message = (f"Undid edit #{undone[0].id} of run {key!r} "
                       f"({plain(undone[0].describe())}); "
                       f"{after_undo(ctx.dataset, key, undone)}")
        done(ctx, message)
        return dict(message=message, edits=[e.as_record() for e in undone])

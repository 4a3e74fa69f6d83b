"""Operator: delete a run's fields, label attributes, saved views and record; inputs stay."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY

from .common import delegable, done, reads_run, run_key_choice, run_name


class DeleteRun(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="delete_run",
            label="VLSR: delete run",
            description="Start over: remove every field, label attribute, view and Brain run of one "
                        "VLSR run",
            icon="delete",
            dynamic=True,
            execute_as_generator=True,  # (a refusal is then shown as a message, not a traceback)
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = None
        if ctx.dataset is not None:  # of several runs, the user picks which one goes
            key = run_key_choice(ctx, inputs, "delete a run", preselect=False, deleting=True)
        if key is not None:
            from vlsr_core.fo.runs import what_goes

            inputs.view("what", types.Warning(label=f"Deletes {what_goes(ctx.dataset, key)}"))
            # a tick of its own for each run: one given for another run, then switched to this
            # one, stayed ticked (a script may give confirm=True)
            name = f"confirm_{key}"
            inputs.bool(name, default=False, label="Delete them")
            if not (ctx.params.get(name) or ctx.params.get("confirm") is True):
                prop = inputs.view("confirm_note", types.Notice(label="Tick the box to confirm"))
                prop.invalid, prop.error_message = True, "Tick the box to confirm the deletion"
        return types.Property(inputs, view=types.View(label=self.config.label))

    def resolve_run_name(self, ctx):
        return run_name(ctx, "delete run")

    @delegable
    def execute(self, ctx):
        from vlsr_core.fo.runs import delete_run, saved_view_names

        key = ctx.params.get("key", DEFAULT_KEY)
        # (the name the App holds, which may be of a view deleted since: ctx.view would fail)
        shown = (ctx.request_params.get("view_name") in saved_view_names(key).values()
                 or reads_run(ctx, key))
        delete_run(ctx.dataset, key)
        if shown:  # the App would keep the deleted view's name in its URL, and its stages
            yield ctx.ops.set_view(view=ctx.dataset.view())
        else:
            yield ctx.ops.reload_dataset()
        yield from done(ctx, f"Deleted VLSR run {key!r}" + (
            "; the App shows the whole dataset, as the view open read its fields" if shown
            else ""), deleted=key)


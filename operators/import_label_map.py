"""Operator: a label map edited outside the App (label_map.csv of an export, in a spreadsheet),
recorded as the review edits that make it."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY

from .common import done, full_path, reported, review_form

SHOWN = 10  # edits listed in the form's preview


class ImportLabelMap(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="import_label_map",
            label="VLSR 4: import an edited label map",
            description="Step 4: a CSV of labels and canonical labels (label_map.csv of an export, "
                        "edited) becomes review edits, written by Apply",
            icon="upload_file",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs, form, key, state = review_form(ctx, self.config.label)
        if state is None:
            return form
        prop = inputs.str("file", required=True, label="Label map CSV",
                          description="A full path on the machine running FiftyOne to a CSV with "
                                      "the columns label and canonical, such as label_map.csv of "
                                      "an export; labels it leaves out keep their canonical label")
        if not ctx.params.get("file"):
            return form
        from vlsr_core.fo.review import ReviewError, import_summary, other_clustering, takes_back

        try:
            wanted = _read(ctx, state.label_map.vocabulary)
            made = _import(ctx, key, wanted, dry_run=True)
        except ReviewError as e:
            prop.invalid, prop.error_message = True, str(e)
            return form
        if not made:  # (Execute would record nothing)
            nothing = "The label map already is as the file says: there is nothing to import"
            prop = inputs.view("preview", types.Notice(label=nothing))
            prop.invalid, prop.error_message = True, nothing
            return form
        more = f"\n- ... and {len(made) - SHOWN} more" if len(made) > SHOWN else ""
        for name, note in (("other_clustering", other_clustering(state, wanted)),
                           ("takes_back", takes_back(state, wanted))):
            if note:
                inputs.view(name, types.Warning(label=note[0].upper() + note[1:]))
        inputs.str("preview", label=f"Execute records {import_summary(made)}, #{made[0].id} to "
                                    f"#{made[-1].id}; Apply writes them to the fields",
                   default="\n".join(f"- #{e.id} {e.describe()}" for e in made[:SHOWN]) + more,
                   view=types.MarkdownView(read_only=True))
        return form

    @reported
    def execute(self, ctx):
        from vlsr_core.fo.review import import_summary

        key = ctx.params.get("key", DEFAULT_KEY)
        made = _import(ctx, key, _read(ctx))
        if not made:
            message = f"The label map of run {key!r} already is as the file says: no edit made"
        else:
            message = (f"Recorded {import_summary(made)} on run {key!r}, #{made[0].id} to "
                       f"#{made[-1].id}; Apply to write them (Undo a review edit from "
                       f"#{made[0].id}, with the later ones, takes them all back, and any edit made "
                       "after them)")
        done(ctx, message)
        return dict(message=message, edits=[e.as_record() for e in made])


def _read(ctx, vocabulary=None):
    """The label map of the chosen file (checked against the run's ``vocabulary``, if given)."""
    from vlsr_core.fo.review import ReviewError, read_label_map

    path, problem = full_path(ctx.params["file"])
    if problem:
        raise ReviewError(problem)
    return read_label_map(path, vocabulary)


def _import(ctx, key, wanted, dry_run=False):
    """The edits ``wanted`` makes (recorded unless ``dry_run``)."""
    from vlsr_core.fo.review import import_label_map

    return import_label_map(ctx.dataset, key, wanted, dry_run=dry_run)

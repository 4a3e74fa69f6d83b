"""Operator: export a run to CSV and COCO files in a directory the user types."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY
from vlsr_core.fo.export import detections_fields, export_problem, folder_problem, overwrite_removes
from vlsr_core.wording import plain

from .common import (
    block,
    check_target,
    chosen_run_key,
    chosen_target,
    delegable,
    execution_flags,
    finish,
    full_path,
    run_key_choice,
    run_name,
    run_target,
    run_with_progress,
    target_view,
)

# the choice of no COCO file (no field name: parentheses are not allowed in one)
NO_BOXES = "(none)"


class ExportResults(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="export_results",
            label="VLSR 6: export cleaned labels",
            description="Step 6: write samples.csv, label_map.csv, COCO-style image labels and COCO "
                        "detections",
            icon="download",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = target_view(ctx, inputs, key=chosen_run_key(ctx))
        key = run_key_choice(ctx, inputs, "export") if view is not None else None
        if key is None or not check_target(ctx, inputs, key, view, "Only they are exported."):
            return types.Property(inputs, view=types.View(label=self.config.label))
        from vlsr_core.fo.runs import load_results

        results = load_results(ctx.dataset, key)  # once, for both checks
        boxes = _detections_field(ctx, key)
        # what is wrong with the run or the samples, above the folder (under it, it read as a
        # folder's fault); the folder's, under it
        problem = export_problem(view, None, key, boxes, results=results)
        if problem:  # (an error's text is plain: no code marks)
            block(inputs, "export_error", plain(problem))
        prop = inputs.str("directory", required=True, label="Export directory",
                          description="A full path to a folder on the machine running FiftyOne, "
                                      "such as /data/exports/run1 or ~/exports/run1")
        inputs.bool("overwrite", default=False, label="Overwrite",
                    description="Replace the files of an earlier export")
        directory, folder = full_path(ctx.params.get("directory"))
        folder = folder or directory and folder_problem(
            directory, boxes, overwrite=ctx.params.get("overwrite", False))
        if folder:
            prop.invalid, prop.error_message = True, plain(folder)
        from vlsr_core.fo.review import ReviewError, export_note

        try:
            inputs.view("review_note", types.Notice(label=export_note(ctx.dataset, key, results)))
        except ReviewError:
            pass  # not clustered yet: the directory's check says so
        detections = _detections_fields(ctx)
        if not detections:
            inputs.view("no_boxes", types.Notice(
                label="No Detections field on this dataset: no COCO detections are written "
                      "(image_labels.json holds the image-level labels, COCO-style)"))
        else:
            choices = types.Dropdown(label="Detections to export as COCO")
            choices.add_choice(NO_BOXES, label="none: no COCO file")
            for f in detections:
                choices.add_choice(f, label=f)
            inputs.enum("detections_field", choices.values(), view=choices,
                        default=_run_boxes(ctx, key) or NO_BOXES,
                        description="Its boxes are exported with canonical labels (the run's "
                                    "own field, if it holds boxes, unless you choose another)")
        removes = directory and not problem and overwrite_removes(directory, boxes)
        if removes:
            inputs.view("removes", types.Warning(
                label=f"Overwrite also removes {removes}, the boxes of the earlier export: choose "
                      "a Detections field above to export boxes again"))
        return types.Property(inputs, view=types.View(label=self.config.label))

    def resolve_run_name(self, ctx):
        return run_name(ctx, "export")

    @delegable
    def execute(self, ctx):
        from vlsr_core.fo.export import (coco_image_root, coco_left_out, export_run,
                                         image_files_note, unclustered_note)
        from vlsr_core.fo.review import export_note

        key = ctx.params.get("key", DEFAULT_KEY)
        directory, problem = full_path(ctx.params["directory"])
        if problem:
            raise ValueError(problem)
        target = chosen_target(ctx, run_target(ctx, key))
        boxes = _detections_field(ctx, key)
        written = yield from run_with_progress(ctx, "Exporting", lambda progress: export_run(
            target, directory, key, detections_field=boxes,
            overwrite=ctx.params.get("overwrite", False), progress=progress,
        ))
        listed = [f"- `{p}`" for p in written]
        if boxes:
            listed[-1] += (f" (image file names relative to `{coco_image_root(target)}`, the "
                           "data_path to give FiftyOne's COCO importer)")
            left_out = coco_left_out(target, boxes, key)
            if left_out:
                listed.append(f"\n{left_out[0].upper()}{left_out[1:]}.")
        for note in (unclustered_note(target, key), image_files_note(target, key)):
            if note:
                listed.append(f"\n{note[0].upper()}{note[1:]}.")
        note = export_note(ctx.dataset, key)
        return (yield from finish(ctx, f"Exported {len(written)} files to {directory}",
                                  "\n".join(listed) + "\n\n" + note))


def _detections_fields(ctx):
    """The dataset's Detections fields."""
    return detections_fields(ctx.dataset)


def _run_boxes(ctx, key):
    """The run's own label field if it holds boxes (what the COCO file exports first), or None."""
    field = ctx.dataset.get_run_info(key).config.label_field
    return field if field in _detections_fields(ctx) else None


def _detections_field(ctx, key):
    """The Detections field chosen for the COCO file, None for none."""
    field = ctx.params.get("detections_field", _run_boxes(ctx, key))
    return None if field in (NO_BOXES, "") else field

"""Operator: embed the target's images and its label vocabulary with CLIP (spec step 1)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY
from vlsr_core.model.model_source import label_model_problem, model_problem
from vlsr_core.engine.params import EmbedParams
from vlsr_core.fo.labels import label_selection_problem

from .common import (
    block,
    chosen_target,
    delegable,
    execution_flags,
    finish,
    label_field_input,
    new_run_key_input,
    param_inputs,
    params_from,
    queued_message,
    run_name,
    run_params,
    run_target,
    run_with_progress,
    shard_count,
    shards_input,
    target_view,
)
from .run_shard import queue_shards


class ComputeEmbeddings(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="compute_embeddings",
            label="VLSR 1: compute embeddings",
            description="Step 1: embed the images and the distinct labels with CLIP (resumable)",
            icon="memory",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        # the run's collection, or the dataset for a new run: not a selection left in the grid
        view = target_view(ctx, inputs, key=ctx.params.get("key") or DEFAULT_KEY)
        # (a target refused, a frames view say: its fields are not the dataset's)
        label_field = label_field_input(ctx, inputs) if view is not None else None
        problem = view is not None and label_field is not None and label_selection_problem(
            view, label_field, ctx.params.get("key") or DEFAULT_KEY)  # (said before Execute, as the other stages' forms say it)
        if problem:
            block(inputs, "filter_error", problem)
        elif view is not None and label_field is not None:
            key = new_run_key_input(ctx, inputs, label_field)
            # a delegated job may run where the device exists; an immediate one runs here
            here = not ctx.requesting_delegated_execution
            base = _run_params(ctx, key)
            reduced = ctx.params.get("precision", base.precision) != "full"
            # (torch is imported only for a reduced precision, and not for a job run elsewhere)
            device = _device_here(ctx.params.get("device") or "auto") if reduced and here \
                else None
            params = param_inputs(ctx, inputs, EmbedParams, base,
                                  hidden=_hidden_crop_inputs(ctx, label_field, base),
                                  checks={
                                      "model": model_problem,
                                      "label_model": label_model_problem,
                                      "precision": lambda p: _precision_problem(p, device),
                                      "crops": lambda c: _crops_problem(ctx, c, base),
                                      **({"device": _missing_here} if here else {})})
            if params is not None and params.precision == "bf16" and device and device.type == "cpu":
                _bf16_note(inputs)
            inputs.bool("recompute", default=False, label="Recompute",
                        description="Embed again samples that already have an embedding from this model")
            shards_input(ctx, inputs, view, "embed the labels now, and queue the images")
        return types.Property(inputs, view=types.View(label=self.config.label))

    def resolve_run_name(self, ctx):
        return run_name(ctx, "compute embeddings")

    @delegable
    def execute(self, ctx):
        from vlsr_core.fo.stages import compute_embeddings

        p = ctx.params
        key, shards = p.get("key", DEFAULT_KEY), shard_count(ctx)
        base = _run_params(ctx, key)
        # (the inputs the form hid keep the run's values: not what the form last held, crops
        # ticked for a field of boxes before another field was chosen)
        params = params_from(ctx, EmbedParams, base,
                             hidden=_hidden_crop_inputs(ctx, p["label_field"], base))
        target = chosen_target(ctx, run_target(ctx, key))
        if shards > 1:
            from vlsr_core.fo.chunks import shard_problem

            problem = shard_problem(target)  # before the labels are embedded
            if problem:
                raise ValueError(problem)
        report = yield from run_with_progress(ctx, "Embedding", lambda progress: compute_embeddings(
            target, p["label_field"], key, params, recompute=p.get("recompute", False),
            images=shards == 1, progress=progress,
        ))
        if shards > 1:
            queued = queue_shards(ctx, target, shards, "embed", key,
                                  recompute=p.get("recompute", False), device=params.device,
                                  num_workers=params.num_workers, max_pixels=params.max_pixels)
            message = queued_message(len(queued), f"Embedded {report.n_labels_embedded} new labels")
            return (yield from finish(ctx, message, message))
        failures = "".join(f"\n- `{path}`: {reason}" for _, path, reason in report.failures[:20])
        return (yield from finish(ctx, report.summary(), f"**{report.summary()}**{failures}"))


def _missing_here(device):
    """Why an immediate run cannot use ``device`` on this machine, or None."""
    from vlsr_core.model.devices import device_problem

    return None if device == "auto" else device_problem(device)


def _device_here(device):
    """The torch device an immediate run would use on this machine (``"auto"`` resolved), or
    None when the name is not a device (its own field says so)."""
    import torch

    try:
        return torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                            if device == "auto" else device)
    except (RuntimeError, TypeError, ValueError):
        return None


def _hidden_crop_inputs(ctx, label_field, base):
    """The crop inputs that do not apply: all of them unless the field holds boxes, their
    settings while crops are off."""
    from vlsr_core.fo.labels import LabelFieldError, label_path

    try:
        boxes = label_path(ctx.target_view(), label_field).endswith(".detections")
    except LabelFieldError:
        boxes = False
    if not boxes:
        return ("crops", "crop_padding", "crop_min_size")
    return () if ctx.params.get("crops", base.crops) else ("crop_padding", "crop_min_size")


def _crops_problem(ctx, crops, base):
    if crops and ctx.params.get("jpeg_draft", base.jpeg_draft):
        return "Crops are cut from full-resolution pixels: turn off fast JPEG decoding"
    return None


def _precision_problem(precision, device):
    if device is None:  # full precision (nothing to check), or the job runs elsewhere
        return None
    from vlsr_core.model.precision import precision_problem

    return precision_problem(precision, device)


def _bf16_note(inputs):
    from vlsr_core.model.precision import native_bf16

    if native_bf16() is False:
        inputs.view("bf16_note", types.Warning(
            label="This machine's CPU has no bfloat16 instructions (AVX512-BF16 or AMX)",
            description="On it bf16 is emulated and likely slower than full precision; it pays "
                        "off on CPUs that have them, or on a GPU"))


def _run_params(ctx, key):
    """The embedding parameters run ``key`` last used; for a new run the defaults, with the
    model of the dataset's latest run (a local CLIP folder is typed once, not for every key)."""
    if key and ctx.dataset.has_run(key) and getattr(ctx.dataset.get_run_info(key).config, "model", None):
        return run_params(ctx, key, EmbedParams)
    from vlsr_core.fo.runs import list_vlsr_runs

    infos = [ctx.dataset.get_run_info(k) for k in list_vlsr_runs(ctx.dataset)]
    used = [(i.timestamp, i.config.model) for i in infos if getattr(i.config, "model", None)]
    return EmbedParams(model=max(used)[1]) if used else EmbedParams()

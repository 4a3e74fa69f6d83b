"""Operator: embed the target's images and its label vocabulary with CLIP (spec step 1)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.defaults import DEFAULT_BATCH_SIZE, DEFAULT_KEY, DEFAULT_MODEL
from vlsr_core.model_source import model_problem

from .common import (
    execution_flags,
    finish,
    label_field_input,
    new_run_key_input,
    run_with_progress,
    target_view,
)
from .embed_shard import queue_shards

DEVICES = ("auto", "cpu", "cuda")


class ComputeEmbeddings(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="compute_embeddings",
            label="VLSR: compute embeddings",
            description="Embed images and labels with CLIP, the first step of label cleaning",
            icon="memory",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = target_view(ctx, inputs)
        label_field = label_field_input(ctx, inputs)
        if view is not None and label_field is not None:
            new_run_key_input(ctx, inputs, label_field)
            _model_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="VLSR: compute embeddings"))

    def execute(self, ctx):
        from vlsr_core.stages import compute_embeddings

        p = ctx.params
        key, shards = p.get("key", DEFAULT_KEY), p.get("num_shards", 1)
        device = None if p.get("device", "auto") == "auto" else p["device"]
        report = yield from run_with_progress(ctx, "Embedding", lambda progress: compute_embeddings(
            ctx.target_view(), p["label_field"], key, p.get("model") or DEFAULT_MODEL,
            prompt=p.get("prompt") or None, batch_size=p.get("batch_size", DEFAULT_BATCH_SIZE),
            device=device, jpeg_draft=p.get("jpeg_draft", False),
            recompute=p.get("recompute", False), images=shards == 1, progress=progress,
        ))
        if shards > 1:
            queued = queue_shards(ctx, ctx.target_view(), shards, key, p.get("recompute", False), device)
            message = (f"Embedded {report.n_labels_embedded} new labels and queued {len(queued)} "
                       "image shards: run `fiftyone delegated launch` on any number of machines")
            yield from finish(ctx, message, message)
            return
        failures = "".join(f"\n- `{path}`: {reason}" for _, path, reason in report.failures[:20])
        yield from finish(ctx, report.summary(), f"**{report.summary()}**{failures}")


def _model_inputs(ctx, inputs):
    model = ctx.params.get("model", DEFAULT_MODEL)
    prop = inputs.str("model", default=DEFAULT_MODEL, required=True, label="CLIP model",
                      description="A Hugging Face hub id or the path of a local directory written "
                                  "by save_pretrained (safetensors weights)")
    problem = model_problem(model)
    if problem:
        prop.invalid, prop.error_message = True, problem
    inputs.int("batch_size", default=DEFAULT_BATCH_SIZE, min=1, label="Batch size",
               description="Images per forward pass; lower it if memory runs out")
    devices = types.RadioGroup(orientation="horizontal")
    for d in DEVICES:
        devices.add_choice(d, label=d)
    inputs.enum("device", devices.values(), default="auto", view=devices, label="Device",
                description="auto: CUDA (half precision) when available, else CPU")
    inputs.str("prompt", label="Prompt template (optional)",
               description='e.g. "a photo of a {}"; empty embeds labels exactly as written')
    inputs.bool("jpeg_draft", default=False, label="Fast JPEG decoding",
                description="Decode JPEGs at reduced scale (1/2 to 1/8, still at least the "
                            "model's input size): about a third of the decoding time, pixels slightly "
                            "different from the reference preprocessing")
    inputs.bool("recompute", default=False, label="Recompute",
                description="Embed again samples that already have an embedding from this model")
    inputs.int("num_shards", default=1, min=1, label="Shards",
               description="Above 1: embed the labels now and queue the images as this many "
                           "delegated jobs, which any number of `fiftyone delegated launch` "
                           "workers sharing the database run in parallel")

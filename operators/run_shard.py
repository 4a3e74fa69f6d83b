"""Operator (unlisted): embed the images of one shard of a run, queued by compute_embeddings.

Each shard is a delegated operation on a disjoint range of sample ids, so any number of
``fiftyone delegated launch`` workers sharing the database can process the shards at once.
"""

import math

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone import ViewField as F

from vlsr_core.engine.defaults import DEFAULT_KEY

URI = "@vlsr/vlsr/embed_shard"


class EmbedShard(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="embed_shard",
            label="VLSR: embed one shard of images",
            unlisted=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("key", default=DEFAULT_KEY, label="Run key")
        inputs.str("device", label="Device")
        inputs.bool("recompute", default=False, label="Recompute")
        inputs.str("shard", label="Shard")
        return types.Property(inputs)

    def execute(self, ctx):
        from vlsr_core.fo.stages import compute_image_embeddings

        label = f"Embedding shard {ctx.params.get('shard', '')}".strip()
        report = compute_image_embeddings(
            ctx.target_view(), ctx.params.get("key", DEFAULT_KEY),
            recompute=ctx.params.get("recompute", False), device=ctx.params.get("device") or "auto",
            progress=lambda f: ctx.set_progress(progress=f, label=label),
        )
        return dict(summary=report.summary(), n_embedded=report.n_embedded,
                    n_failed=len(report.failures))


def queue_shards(ctx, view, n_shards, key, recompute=False, device="auto"):
    """Split ``view`` into ``n_shards`` id ranges and queue one delegated EmbedShard for each.

    Returns the ids of the queued operations.
    """
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    ids = sorted(view.values("_id"))
    size = math.ceil(len(ids) / n_shards)
    service, queued = DelegatedOperationService(), []
    for i, start in enumerate(range(0, len(ids), size)):
        in_range = F("_id") >= ids[start]
        if start + size < len(ids):
            in_range &= F("_id") < ids[start + size]
        shard = f"{i + 1}/{math.ceil(len(ids) / size)}"
        request = dict(
            dataset_name=ctx.dataset.name,
            dataset_id=str(ctx.dataset._doc.id),
            view=view.match(in_range)._serialize(),
            params=dict(key=key, recompute=recompute, device=device, shard=shard),
            delegated=True,
        )
        op = service.queue_operation(
            operator=URI, label=f"VLSR: embed images, shard {shard}",
            context=ExecutionContext(request_params=request).serialize(),
        )
        queued.append(str(op.id))
    return queued

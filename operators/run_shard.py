"""Operator (unlisted): one shard of a stage, queued by the stage's operator with ``num_shards``.

Each shard is a delegated operation on a disjoint range of sample ids, so any number of
``fiftyone delegated launch`` workers sharing the database process the shards at once. A stage
with a global last part (scoring: the threshold and the review views; clustering: the changed
view) has it run by whichever shard finishes last, found with an atomic compare-and-set on the
dataset's execution store; a failed shard, re-run from the App's runs page, then finishes it.
"""

import uuid

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY

URI = "@vlsr/vlsr/run_shard"
STORE = "vlsr_shards"  # the dataset's execution store: batch id -> the shards done
STAGES = {"embed": "embed images", "score": "score labels", "cluster": "write the label map"}


class RunShard(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="run_shard",
            label="VLSR: one shard of a stage",
            unlisted=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.enum("stage", list(STAGES), required=True, label="Stage")
        inputs.str("key", default=DEFAULT_KEY, label="Run key")
        inputs.str("shard", label="Shard", description="i/n")
        inputs.str("batch", label="Batch", description="what the shards of one request share")
        inputs.str("device", label="Device")
        inputs.bool("recompute", default=False, label="Recompute")
        return types.Property(inputs)

    def execute(self, ctx):
        from vlsr_core.fo import stages

        p = ctx.params
        stage, key, shard = p["stage"], p.get("key", DEFAULT_KEY), p.get("shard", "1/1")
        label = f"{STAGES[stage].capitalize()}, shard {shard}"
        progress = lambda f: ctx.set_progress(progress=f, label=label)  # noqa: E731
        view = ctx.target_view()
        if stage == "embed":
            report = stages.compute_image_embeddings(
                view, key, recompute=p.get("recompute", False), device=p.get("device") or "auto",
                progress=progress)
            return dict(summary=report.summary(), n_embedded=report.n_embedded,
                        n_failed=len(report.failures))
        if stage == "score":
            result = dict(summary=stages.score_shard(view, key, progress=progress).summary())
        else:
            result = dict(summary=f"wrote the label map on "
                                  f"{stages.cluster_shard(view, key, progress=progress)} samples")
        if _last(ctx.store(STORE), p["batch"], shard):
            target = _view(ctx, p["target"])
            if stage == "score":
                low = stages.finish_score_shards(target, key)
                result["finished"] = (f"all shards scored; below {low:.3f} counts as low; the "
                                      "review views are saved")
            else:
                stages.finish_cluster_shards(target, key)
                result["finished"] = "all shards written; the view of changed samples is saved"
            ctx.store(STORE).delete(p["batch"])
        return result


def queue_shards(ctx, view, n_shards, stage, key, **params):
    """Split ``view`` into ``n_shards`` id ranges and queue one delegated RunShard of ``stage``
    for each (``params``: the stage's, e.g. the device). Returns the ids of the queued operations."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    from vlsr_core.fo.chunks import shards

    parts, batch = shards(view, n_shards), uuid.uuid4().hex
    ctx.store(STORE).set(batch, [])
    service, queued = DelegatedOperationService(), []
    for i, part in enumerate(parts):
        shard = f"{i + 1}/{len(parts)}"
        request = dict(
            dataset_name=ctx.dataset.name,
            dataset_id=str(ctx.dataset._doc.id),
            view=part.view()._serialize(),
            params=dict(stage=stage, key=key, shard=shard, batch=batch,
                        target=view.view()._serialize(), **params),
            delegated=True,
        )
        op = service.queue_operation(
            operator=URI, label=f"VLSR: {STAGES[stage]}, shard {shard}",
            context=ExecutionContext(request_params=request).serialize(),
        )
        queued.append(str(op.id))
    return queued


def _last(store, batch, shard):
    """Record ``shard`` ("i/n") of ``batch`` as done; whether every shard of it now is (the
    caller then runs the stage's last part). Atomic: of shards ending together, one sees all."""
    n = int(shard.split("/")[1])
    while True:
        done = store.get(batch)
        if done is None:  # finished already: a shard run again after the others
            return False
        now = sorted(set(done) | {shard})
        if store.compare_and_set(batch, done, now):
            return len(now) == n


def _view(ctx, stages):
    import fiftyone.server.view as fosv

    return fosv.get_view(ctx.dataset, stages=stages)

"""Operator (unlisted): one shard of a stage, queued by the stage's operator with ``num_shards``.

Each shard is a delegated operation on a disjoint range of sample ids, so any number of
``fiftyone delegated launch`` workers sharing the database process the shards at once. A stage
with a global last part (scoring: the threshold and the review views; clustering: the changed
view) has it run by the shard that finishes last, as told by atomic updates of the batch's
record (:mod:`vlsr_core.fo.batches`): a shard run again, or one that failed and is run again
(``fiftyone delegated rerun``), counts once. That part runs holding the run's lease alone, so
once: a shard that finds another finishing leaves it to that one, and a shard run again after
the finishing one was killed finishes in its place.
"""

import uuid

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY
from vlsr_core.fo.jobs import OPERATOR, shard_tag
from vlsr_core.wording import count

from .common import note_failure


URI = OPERATOR
STAGES = {"embed": "embed images", "score": "score labels", "cluster": "write the label map"}
LEASED_AS = {"embed": "compute embeddings", "score": "score labels", "cluster": "cluster and merge"}


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
        inputs.int("max_pixels", label="Largest image (pixels)")
        inputs.int("num_workers", label="Decoding workers")
        inputs.bool("recompute", default=False, label="Recompute")
        return types.Property(inputs)

    def execute(self, ctx):
        from vlsr_core.fo.stages import BatchFinished

        try:
            return self._run(ctx)
        except BatchFinished as e:  # (run again after the stage was finished)
            return dict(summary=str(e))
        except Exception as e:
            note_failure(ctx, e)
            raise

    def _run(self, ctx):
        from vlsr_core.fo import batches, stages
        from vlsr_core.fo.lease import RunBusyError, holder, run_lease

        p = ctx.params
        stage, key, shard, batch = p["stage"], p.get("key", DEFAULT_KEY), p.get("shard", "1/1"), p.get("batch")
        label = f"{STAGES[stage].capitalize()}, shard {shard}"
        progress = lambda f: ctx.set_progress(progress=f, label=label)  # noqa: E731
        view = ctx.target_view()
        # (tagged: the forms tell a shard heard from from one whose worker stopped)
        lease = dict(key=key, stage=LEASED_AS[stage], tag=shard_tag(batch, shard))
        with run_lease(ctx.dataset, shared=True, **lease):
            if stage == "embed":
                report = stages.compute_image_embeddings(
                    view, key, recompute=p.get("recompute", False),
                    device=p.get("device") or "auto", num_workers=p.get("num_workers"),
                    max_pixels=p.get("max_pixels"), progress=progress)
                return dict(summary=report.summary(), n_embedded=report.n_embedded,
                            n_failed=len(report.failures))
            if stage == "score":
                result = dict(summary=stages.score_shard(view, key, batch=batch,
                                                         progress=progress).summary())
            else:
                n = stages.cluster_shard(view, key, batch=batch, progress=progress)
                result = dict(summary=f"the label map is on its {count(n, 'sample')}")
        if not batches.shard_done(ctx.dataset, key, stage, batch, shard):
            return result
        try:
            with run_lease(ctx.dataset, **lease):
                if not batches.is_open(ctx.dataset, key, stage, batch):
                    return result  # another shard finished it meanwhile
                target = _view(ctx, p["target"])
                if stage == "score":
                    low = stages.finish_score_shards(target, key, batch=batch)
                    result["finished"] = (f"all shards scored; labels below {low:.3f} count as "
                                          "low; the review views are saved")
                else:
                    stages.finish_cluster_shards(target, key, batch=batch)
                    result["finished"] = "all shards written; the view of changed samples is saved"
        except RunBusyError:
            finishing = holder(ctx.dataset, key)
            if finishing and (finishing.get("tag") or "").startswith(shard_tag(batch, "")):
                return result  # another shard of the batch holds the run: it finishes the stage
            raise
        return result


def queue_shards(ctx, view, n_shards, stage, key, batch=None, **params):
    """Split ``view`` into ``n_shards`` id ranges and queue one delegated RunShard of ``stage``
    for each, in ``batch`` (the name a stage's preparation recorded; embedding needs none), with
    ``params`` (the stage's, e.g. the device). Returns the ids of the queued operations."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    from vlsr_core.fo.batches import expect_shards
    from vlsr_core.fo.chunks import shards

    parts = shards(view, n_shards)
    if batch is None:  # (embedding: a name that tells its shards from an earlier request's)
        batch = new_batch()
    else:  # (recorded by the stage's preparation)
        expect_shards(ctx.dataset, key, stage, batch, len(parts))
    target = view.view()._serialize()  # where the last shard finishes the stage
    service, queued = DelegatedOperationService(), []
    for i, part in enumerate(parts):
        shard = f"{i + 1}/{len(parts)}"
        request = dict(
            dataset_name=ctx.dataset.name,
            dataset_id=str(ctx.dataset._doc.id),
            view=part._serialize(),
            params=dict(stage=stage, key=key, shard=shard, batch=batch,
                        target=target, **params),
            delegated=True,
        )
        op = service.queue_operation(
            operator=URI, label=f"VLSR {STAGES[stage]}, shard {shard}: run {key!r} on "
                                f"{ctx.dataset.name}",
            context=ExecutionContext(request_params=request).serialize(),
        )
        queued.append(str(op.id))
    return queued


def new_batch():
    """A name for the shards of one request."""
    return uuid.uuid4().hex


def _view(ctx, stages):
    import fiftyone.server.view as fosv

    return fosv.get_view(ctx.dataset, stages=stages)

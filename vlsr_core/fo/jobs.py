"""The plugin's delegated operations on a run, as FiftyOne lists them (``fiftyone delegated
list``): those scheduled and waiting for a worker, and where a stage in progress as delegated
shards stands, told with what to run for a shard that failed or whose worker stopped (a worker
killed mid-shard leaves its operation "running" for ever, and only the run's lease,
:mod:`.lease`, tells it from one that writes)."""

import re
from datetime import datetime, timedelta

from ..engine.defaults import DEFAULT_KEY
from .lease import TTL, holder, live_tags, server_time
from .labels import first_match
from .runs import STAGE_NAMES, sample_fields

PLUGIN = "@vlsr/vlsr/"
OPERATOR = PLUGIN + "run_shard"  # the plugin's operator that runs one shard
# the stage each of the plugin's operators runs (its lease's name: :func:`.lease.holds_run`)
STAGE_OF = {"compute_embeddings": "compute embeddings", "score_labels": "score labels",
            "cluster_and_merge": "cluster and merge", "apply_review": "apply the review",
            "export_results": "export", "map_embeddings": "map the embeddings"}
FAILED = "Failed: "  # what a delegated operation of the plugin's that fails leaves as its
# status, before its reason (FiftyOne keeps only the traceback)


def queued_note(dataset, key=None):
    """The plugin's operations on run ``key`` (None: on any run) that were scheduled and wait
    for a worker, in words (a curator who sees no sign of them schedules them again); None if
    there are none. Shards are told by :func:`shard_note`."""
    from fiftyone.operators.delegated import DelegatedOperationService

    ops = DelegatedOperationService().list_operations(
        operator={"$regex": "^" + re.escape(PLUGIN), "$ne": OPERATOR},
        dataset_id=dataset._doc.id, run_state={"$in": ["queued", "scheduled"]})
    ops = sorted((op for op in ops if key is None or _params(op).get("key", DEFAULT_KEY) == key),
                 key=lambda op: op.queued_at or op.scheduled_at)
    if not ops:
        return None
    jobs = "; ".join(f"*{op.label or op.operator}* (scheduled at "
                     f"{op.queued_at or op.scheduled_at:%Y-%m-%d %H:%M} UTC)" for op in ops)
    return (f"{'An operation waits' if len(ops) == 1 else f'{len(ops)} operations wait'} for a "
            f"delegated worker (`fiftyone delegated launch`): {jobs}. Scheduling "
            f"{'it' if len(ops) == 1 else 'one'} again would run it twice; "
            "`fiftyone delegated list` lists them. FiftyOne's worker runs the operation "
            "scheduled last first: to run stages in order (Apply, then export), schedule the "
            "next one when this one is done.")


def stopped_note(dataset, key):
    """The plugin's operations on run ``key`` that FiftyOne lists as running though no process
    runs a stage of the run (their worker was killed: they stay "running" for ever), in words
    with what to run; None if there are none. Shards are told by :func:`shard_note`."""
    from fiftyone.operators.delegated import DelegatedOperationService

    ops = DelegatedOperationService().list_operations(
        operator={"$regex": "^" + re.escape(PLUGIN), "$ne": OPERATOR},
        dataset_id=dataset._doc.id, run_state="running")
    now = server_time()
    ops = [op for op in ops if _params(op).get("key", DEFAULT_KEY) == key and op.started_at
           and now - _last_heard(op) > timedelta(seconds=TTL)]
    if not ops or holder(dataset, key) is not None:
        return None
    finished = (getattr(dataset.get_run_info(key).config, "finished", None) or {}
                if dataset.has_run(key) else {})

    def note(op):
        # its stage run to its end since it started (another job, the CLI): a rerun would
        # write its older parameters over that
        done = finished.get(STAGE_OF.get(op.operator[len(PLUGIN):]))
        done = done and datetime.fromisoformat(done)
        return (f"FiftyOne lists *{op.label or op.operator}* as running since "
                f"{op.started_at:%Y-%m-%d %H:%M} UTC, but no process runs a stage of run "
                f"{key!r}: its worker stopped. `fiftyone delegated fail {op.id}` marks it failed"
                + (f" (its stage has run since, to its end at {done:%Y-%m-%d %H:%M} UTC: do not "
                   "run it again)." if done and done > op.started_at else
                   f"; `fiftyone delegated rerun {op.id}` runs it again."))

    return " ".join(map(note, ops))


def failed_note(dataset, key):
    """The plugin's delegated operations on run ``key`` (shards aside) that failed, the last
    of their kind, in words with their reasons and what to run; None if there are none. One
    that failed before its stage began leaves no other trace on the run, and a curator who
    scheduled it takes it as done (also when a later job of another kind went through)."""
    from fiftyone.operators.delegated import DelegatedOperationService

    if not dataset.has_run(key):
        return None
    ops = DelegatedOperationService().list_operations(
        operator={"$regex": "^" + re.escape(PLUGIN), "$ne": OPERATOR},
        dataset_id=dataset._doc.id, queued_at={"$ne": None})
    last = {}  # operator -> its last scheduled
    for op in ops:
        if _params(op).get("key", DEFAULT_KEY) == key and (
                op.operator not in last or op.queued_at > last[op.operator].queued_at):
            last[op.operator] = op
    info = dataset.get_run_info(key)
    finished = getattr(info.config, "finished", None) or {}

    def told(op):
        if op.run_state != "failed":
            return False
        # (of a run of this key deleted since; one that made the run failed after it began)
        if (op.failed_at or op.queued_at) < info.timestamp:
            return False
        # its stage run since by other means (the CLI, an immediate run in the App)
        done = finished.get(STAGE_OF.get(op.operator[len(PLUGIN):]))
        return not (done and op.failed_at and datetime.fromisoformat(done) > op.failed_at)

    failed = sorted((op for op in last.values() if told(op)), key=lambda op: op.queued_at)
    return " ".join(
        f"The last delegated *{op.label or op.operator}* scheduled on run {key!r} failed"
        f"{f' at {op.failed_at:%Y-%m-%d %H:%M} UTC' if op.failed_at else ''}: "
        f"{failure(op).rstrip('.')}. `fiftyone delegated rerun {op.id}` runs it again."
        for op in failed) or None


def _last_heard(op):
    """When operation ``op`` last gave a sign of life: its start or its last progress (an
    operation whose stage has just ended, its report still to store, holds no lease)."""
    progress = getattr(op.status, "updated_at", None) if op.status else None
    return max(op.started_at, progress) if progress else op.started_at


def _params(op):
    return op.context.request_params.get("params", {}) if op.context else {}


def shard_tag(batch, shard):
    """What tells shard ``shard`` ("2/3") of ``batch`` among the holders of a run's lease."""
    return f"{batch}:{shard}"


def shard_note(dataset, key):
    """How far the stages of run ``key`` in progress as delegated shards got, shard by shard
    as FiftyOne lists them, with what to run for a failed shard or one whose worker stopped;
    None if no stage is in shards. Image embedding counts while a shard of its last request is
    not done (it has no last part, nor a mark on the run), a failed one while images are left
    to embed."""
    from fiftyone.operators.delegated import DelegatedOperationService

    info = dataset.get_run_info(key)
    states = info.config.stages or {}
    batches = {stage: state.split(":", 1)[1] for stage, state in states.items()
               if state.startswith("shards:")}
    service, params = DelegatedOperationService(), "context.request_params.params."
    embedding = service.list_operations(  # (not those of a run deleted since, of this key)
        operator=OPERATOR, dataset_id=dataset._doc.id, queued_at={"$gte": info.timestamp},
        **{params + "stage": "embed", params + "key": key})
    ops = service.list_operations(operator=OPERATOR, dataset_id=dataset._doc.id,
                                  **{params + "batch": {"$in": list(batches.values())}}
                                  ) if batches else []
    # (the database's time, as the workers' times of start are UTC: machines' clocks differ)
    heard, now = live_tags(dataset, key), server_time()
    notes = []
    if embedding:
        batch = _params(max(embedding, key=lambda o: o.queued_at or now)).get("batch")
        latest = _latest(embedding, batch, now)
        failed = [op for op in latest.values() if op.run_state == "failed"]
        if {op.run_state for op in latest.values()} - {"completed", "failed"} or (
                _images_left(dataset, key, failed)):
            notes.append(_shards_note("embed images", batch, latest, heard, now, last_part=False))
    for stage, batch in batches.items():
        latest = _latest(ops, batch, now)
        if latest:
            notes.append(_shards_note(STAGE_NAMES[stage], batch, latest, heard, now))
        else:  # (shards run from Python)
            notes.append(f"*{STAGE_NAMES[stage]}* runs in shards, from Python: "
                         f"`finish_{stage}_shards` completes it once every shard is done.")
    if not notes:
        return None
    return " ".join(notes) + (" Running a stage again starts over, and its pending shards then "
                              "write nothing." if batches else "")


def _images_left(dataset, key, ops):
    """Whether a sample of the image shards ``ops`` (their views, as queued) has neither an
    image embedding of run ``key`` nor the reason why not: a failed shard's images may have
    been embedded since without shards."""
    import fiftyone.server.view as fosv  # (as the shard builds its view: run_shard._view)

    fields = sample_fields(key)
    return any(first_match(fosv.get_view(dataset, stages=op.context.request_params["view"]),
                           {fields["embedding"]: None, fields["error"]: None}) for op in ops)


def _latest(ops, batch, now):
    """The last operation of each shard of ``batch`` among ``ops`` (a shard run again is a new
    one), by shard ("2/3")."""
    latest = {}
    for op in sorted(ops, key=lambda o: o.queued_at or now):
        params = _params(op)
        if params.get("batch") == batch:
            latest[params.get("shard") or "1/1"] = op
    return latest


def failure(op, most=200):
    """Why delegated operation ``op`` failed, in a line: the reason the plugin's operators leave
    in its status (:data:`FAILED`), else the exception that ends its traceback, all its lines
    (the reason alone of a form's "Validation error"), cut at a word after ``most``
    characters."""
    label = getattr(op.status, "label", None) or ""
    if label.startswith(FAILED):
        return label[len(FAILED):]
    lines = ((op.result.error if op.result else None) or "").strip().splitlines()
    if not lines:
        return "no error kept"
    # (a message of several lines: "...Error: Could not load...\nIt must hold config.json...")
    start = max((i for i, line in enumerate(lines) if re.match(r"[A-Za-z_][\w.]*: ", line)),
                default=len(lines) - 1)
    told = " ".join(lines[start:])
    told = told.rsplit(" Reason: ", 1)[-1]  # (FiftyOne's "Validation error. Path: model. ...")
    return told if len(told) <= most else told[:most].rsplit(" ", 1)[0] + " …"


def _shards_note(name, batch, latest, heard, now, last_part=True):
    """Where the shards of stage ``name`` stand, as the ``latest`` operation of each tells, with
    what to run for those that failed or stopped (and, for a stage with a ``last_part`` that
    the last shard runs, for every shard done without it)."""
    tally, todo = {}, []
    for shard, op in sorted(latest.items(), key=lambda item: int(item[0].split("/")[0])):
        state = op.run_state
        if state == "running" and shard_tag(batch, shard) not in heard and (
                op.started_at and now - op.started_at > timedelta(seconds=TTL)):
            state = "not heard from"
            todo.append(f"shard {shard} has not been heard from since it started at "
                        f"{op.started_at:%H:%M:%S} UTC (its worker stopped?): "
                        f"`fiftyone delegated fail {op.id}`, then `fiftyone delegated rerun "
                        f"{op.id}`")
        elif state == "failed":  # (refused for what a rerun cannot change: its reason says
            # what to do instead, as labels given since the clustering was prepared)
            why = failure(op)
            todo.append(f"shard {shard} failed ({why})" + (
                "" if why.startswith("Nothing written: ") else
                f": `fiftyone delegated rerun {op.id}`"))
        tally[state] = tally.get(state, 0) + 1
    n = shard.split("/")[-1]
    if last_part and tally == {"completed": int(n)} and not any(
            t.startswith(shard_tag(batch, "")) for t in heard):
        todo.append(f"every shard is done, but the stage's last part has not run (its "
                    f"process stopped?): `fiftyone delegated rerun {latest[shard].id}` runs it")
    parts = ", ".join(f"{k} {'done' if s == 'completed' else s}" for s, k in tally.items())
    ending = "the last to finish completes it" if last_part else "each embeds its images"
    return (f"*{name}* runs as {n} delegated shards ({parts}); {ending}."
            + "".join(f" {t[0].upper()}{t[1:]}." for t in todo))

"""The record of a stage run in shards (a batch): the samples each shard covered, so that the
stage's last part refuses to run before every sample is done, however the shards were run
(delegated operations, or any processes through the Python API); and, for delegated shards,
which of them are done, so that the last one runs that part.

One record a run's stage, in a MongoDB collection of its own: shards in many processes update
it atomically, where the run's config is written whole."""

import contextlib
import hashlib
from datetime import datetime, timezone

import numpy as np
from bson import ObjectId

COLLECTION = "vlsr_shard_batches"


def _records():
    from fiftyone.core.odm import get_db_conn

    return get_db_conn()[COLLECTION]


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _id(dataset, key, stage):
    return f"{dataset._doc.id}/{key}/{stage}"


def _sorted(ids):
    """Packed sample ids (:func:`~.chunks.sample_ids`) in ObjectId order."""
    return ids[np.lexsort(ids.T[::-1])] if len(ids) else ids


def open_batch(dataset, key, stage, batch, ids):
    """Record ``batch`` of ``stage`` of run ``key``, on the samples of packed ``ids``, in place
    of any earlier batch of that stage (whose shards then refuse, by the run's stage mark)."""
    last = _sorted(ids)[-1].tobytes().hex() if len(ids) else None
    _records().replace_one({"_id": _id(dataset, key, stage)},
                           dict(batch=batch, last_id=last, parts={}), upsert=True)


def record_part(dataset, key, stage, batch, ids):
    """Record that a shard of ``batch`` wrote the samples of packed ``ids``: their number and
    first and last id (a shard run again counts once)."""
    ids = _sorted(ids)
    part = dict(n=len(ids), first=ids[0].tobytes().hex(), last=ids[-1].tobytes().hex()) if len(
        ids) else dict(n=0)
    _records().update_one({"_id": _id(dataset, key, stage), "batch": batch},
                          {"$set": {f"parts.{hashlib.sha1(ids.tobytes()).hexdigest()}": part}})


def missing(samples, key, stage, batch):
    """How many samples of ``samples`` the shards of ``batch`` recorded so far leave out (samples
    added since it was opened aside: no shard has them); None if the batch has no record (one
    opened by an earlier version). Shards that each wrote every sample of their id range
    (:func:`~.chunks.shards`) are told exactly, as the samples in none of them, also when a
    shard run again covered another range; others (parts by tag, say) by how many samples
    they wrote."""
    from fiftyone import ViewField as F

    record = _records().find_one({"_id": _id(samples._dataset, key, stage), "batch": batch})
    if record is None:
        return None
    if record["last_id"] is None:
        return 0
    samples = samples.match(F("_id") <= ObjectId(record["last_id"]))
    parts = sorted((p for p in record["parts"].values() if p["n"]), key=lambda p: p["first"])
    inside = [(F("_id") >= ObjectId(p["first"])) & (F("_id") <= ObjectId(p["last"]))
              for p in parts]
    # each part wrote every sample of its range (fewer: deleted since), however the ranges
    # overlap (a shard run again after samples were added or deleted: its cuts moved)
    if all(samples.match(i).count() <= p["n"] for i, p in zip(inside, parts)):
        return samples.match(~F.any(inside)).count() if inside else samples.count()
    return max(0, samples.count() - sum(p["n"] for p in parts))


def close_batch(dataset, key, stage, batch):
    """Mark ``batch`` finished, its stage done: a shard of it run again then has nothing to do
    (:func:`finished`), until the stage's next batch replaces the record."""
    _records().update_one({"_id": _id(dataset, key, stage), "batch": batch},
                          {"$set": {"finished": True, "parts": {}, "finished_at": _now()},
                           "$unset": {"refused_at": "", "refused": ""}})
    _records().delete_one({"_id": batch})  # (a record of an earlier version's)


def finished(dataset, key, stage, batch):
    """The record of ``batch`` if it is the last batch of the stage and was finished (with
    ``finished_at``, and ``refused_at`` and ``refused`` if a prepare of the batch again was
    refused since: times ISO 8601, UTC; none of them if an earlier version wrote it), or None."""
    return _records().find_one({"_id": _id(dataset, key, stage), "batch": batch, "finished": True})


@contextlib.contextmanager
def refusal_noted(dataset, key, stage, batch):
    """Note on the stage's last batch of that name a prepare of it again that is refused (a
    label not embedded yet, say): its shards, run by workers that did not see the refusal,
    then say so rather than that there is nothing to do."""
    try:
        yield
    except ValueError as e:
        _records().update_one({"_id": _id(dataset, key, stage), "batch": batch}, {"$set": {
            "refused_at": _now(), "refused": str(e)}})
        raise


def is_open(dataset, key, stage, batch):
    """Whether ``batch`` is the stage's batch in progress (not finished, nor superseded)."""
    return any(_records().count_documents(match) for match in _matches(dataset, key, stage, batch))


def expect_shards(dataset, key, stage, batch, n):
    """Record that ``batch`` runs as ``n`` delegated shards, named ``"i/n"``."""
    _records().update_one({"_id": _id(dataset, key, stage), "batch": batch},
                          {"$set": {"n": n, "done": []}})


def shard_done(dataset, key, stage, batch, shard):
    """Record delegated shard ``shard`` of ``batch`` as done; whether every shard is done (and
    the batch still open: its last part not run yet)."""
    from pymongo import ReturnDocument

    for match in _matches(dataset, key, stage, batch):
        record = _records().find_one_and_update(match, {"$addToSet": {"done": shard}},
                                                return_document=ReturnDocument.AFTER)
        if record is not None:
            return len(record.get("done", [])) == record.get("n")
    return False


def _matches(dataset, key, stage, batch):
    """Where the record of ``batch`` in progress is: this module's, or for delegated shards
    queued by an earlier version, the record of their own it keyed by the batch."""
    return ({"_id": _id(dataset, key, stage), "batch": batch, "finished": {"$ne": True}},
            {"_id": batch})


def forget(dataset, key):
    """Drop the records of run ``key``'s batches (the run is deleted)."""
    from re import escape

    _records().delete_many({"_id": {"$regex": f"^{escape(f'{dataset._doc.id}/{key}/')}"}})

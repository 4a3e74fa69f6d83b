"""One stage of a run at a time: a stage holds its run's lease while it writes, so that a run
started twice at once (two terminals, an operator executed twice) is refused in one line
instead of both writing. The shards of a stage (disjoint parts of its samples, written by
several workers at once) share the lease: no other stage runs while one of them writes.

A lease is a document of the collection ``vlsr_leases`` in FiftyOne's database, renewed every
:data:`RENEW` seconds by a thread of the process holding it. It is free once released, once
its process is gone (on this machine: its pid no longer runs, so ``kill -9`` frees it at once),
or once nothing renewed it for :data:`TTL` seconds (a process on another machine that stopped).
Times are the database server's, so machines with clocks apart agree; leases left by processes
that stopped are deleted by the database an hour after their last renewal.
"""

import functools
import inspect
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

import fiftyone.core.collections as foc
import fiftyone.core.odm as foo
import fiftyone.core.sample as fos
import psutil
from pymongo.errors import DuplicateKeyError

from .chunks import every_field

logger = logging.getLogger(__name__)

COLLECTION = "vlsr_leases"
TTL = 60.0  # seconds without renewal after which a lease is free
RENEW = 10.0  # seconds between renewals
HOST = socket.gethostname()
FORGET = 3600  # seconds after its last renewal that the database deletes a lease


def _machine():
    """What tells this machine and its process ids from others': the host name and, on Linux,
    the boot id and the pid namespace (containers with the host's network share its name,
    not its process ids)."""
    parts = [HOST]
    for path, read in (("/proc/sys/kernel/random/boot_id", lambda p: open(p).read().strip()),
                       ("/proc/self/ns/pid", os.readlink)):
        try:
            parts.append(read(path))
        except OSError:
            pass
    return "/".join(parts)


MACHINE = _machine()
_held = threading.local()
_indexed = []  # (the expiry index, made once a process)


class RunBusyError(ValueError):
    """Another process is running a stage of the run, or was rewriting its stored results as
    this one read them."""


class LeaseLostError(RunBusyError):
    """This process lost a run it held (another process may have taken it over) after it was
    not heard from for :data:`TTL` seconds (paused with Ctrl-Z, a machine asleep): it stops
    before writing."""


def check_held(dataset):
    """Raise :class:`LeaseLostError` if a run of ``dataset`` whose lease this thread holds is
    no longer held by it in the database; called before each write, so that a process that
    was paused while another took its run over stops instead of writing beside it."""
    prefix = f"{dataset._doc.id}:"
    for lease_id, (token, shared) in list(_leases_held().items()):
        key = lease_id[len(prefix):]
        if not lease_id.startswith(prefix) or key == ".document":
            continue
        mine = {"_id": lease_id, "holders.token" if shared else "token": token}
        if not _leases().count_documents(mine, limit=1):
            raise LeaseLostError(
                f"Run {key!r}: this process was not heard from for {TTL:.0f} s (paused, or "
                "its machine asleep) and lost the run (another process may have taken it "
                "over), so it stopped before writing again; see what the run holds now (vlsr "
                "summary), and run this again if it is still needed")


def _leases_held():
    """This thread's leases: id -> (token, whether shared)."""
    if not hasattr(_held, "leases"):
        _held.leases = {}
    return _held.leases


def _leases():
    leases = foo.get_db_conn()[COLLECTION]
    if not _indexed:
        leases.create_index("beat", expireAfterSeconds=FORGET)
        _indexed.append(True)
    return leases


def _lease_id(dataset, key):
    return f"{dataset._doc.id}:{key}"


def server_time():
    """The database server's time (naive UTC, as pymongo reads dates): one clock for every
    machine sharing the database."""
    return foo.get_db_conn().command("hello")["localTime"]


def _free(lease, now):
    """Whether ``lease`` (a stored holder) no longer holds: not renewed for :data:`TTL`
    seconds, or its process on this machine is gone (``psutil.pid_exists``: ``os.kill(pid, 0)``
    would end the process on Windows) or its id was given since to a process started at
    another time (the run was held for 60 s by a ``sleep`` that had its killed holder's id)."""
    if now - lease["beat"] > timedelta(seconds=TTL):
        return True
    if lease.get("machine") != MACHINE:
        return False
    if not psutil.pid_exists(lease["pid"]):
        return True
    ticks = lease.get("start_ticks")
    return ticks is not None and _start_ticks(lease["pid"]) not in (None, ticks)


def _start_ticks(pid):
    """When process ``pid`` started, or None: what tells it from a later process given its id.
    On Linux in clock ticks since boot (/proc): psutil's start time there is boot time plus
    those, and moves with the clock (NTP, a VM resumed); elsewhere psutil's. Read for the
    process, not at import, which a forked child shares with its parent."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])  # field 22, starttime
    except FileNotFoundError:
        if os.path.isdir("/proc"):  # (the process is gone)
            return None
    except (OSError, ValueError, IndexError):
        return None
    try:  # (no /proc: macOS, Windows)
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _live(lease, now):
    """The holders of a stored lease still alive: the stage holding it alone, or the shards
    sharing it (a ``shared`` lease lists them in ``holders``)."""
    holders = lease.get("holders") if lease.get("shared") else [lease]
    return [h for h in holders if not _free(h, now)]


def _as_one(lease, live):
    """One holder standing for the ``live`` holders of ``lease``, as :func:`running_note` reads
    it: the stage holding it, or for shards the first of them, with ``shards`` their number and
    ``stages`` the names of their stages."""
    if not lease.get("shared"):
        return live[0]
    first = min(live, key=lambda h: h["started"])
    return {**first, "shards": len(live), "beat": max(h["beat"] for h in live),
            "stages": sorted({h["stage"] for h in live})}


def holder(dataset, key):
    """The stored lease of run ``key`` if another live process or thread holds it (a dict:
    ``stage``, ``host``, ``pid``, ``started``, ``beat``; for shards sharing it, the first one's
    with ``shards``, their number), else None."""
    if _lease_id(dataset, key) in _leases_held():
        return None
    lease, live = _stored(dataset, key)
    return _as_one(lease, live) if live else None


def _stored(dataset, key):
    """The stored lease of run ``key`` (None if there is none) and its live holders."""
    lease = _leases().find_one({"_id": _lease_id(dataset, key)})
    return lease, (_live(lease, server_time()) if lease else [])


def running_note(lease):
    """Which stage holds a run, where and since when, as a curator reads it."""
    where = "on this machine" if lease.get("machine") == MACHINE else f"on {lease['host']!r}"
    heard = max(0, round((server_time() - lease["beat"]).total_seconds()))
    since = lease.get("stage_started", lease["started"])
    if "shards" in lease:
        stages = " and ".join(repr(s) for s in lease["stages"])
        what = ("a shard of {} has" if lease["shards"] == 1
                else f"{lease['shards']} shards of {{}} have").format(stages)
        first = "the first " if lease["shards"] > 1 else ""
        return (f"{what} been running since {since:%Y-%m-%d %H:%M:%S} UTC ({first}in process "
                f"{lease['pid']} {where}; last heard from {heard} s ago)")
    return (f"{lease['stage']!r} has been running since {since:%Y-%m-%d %H:%M:%S} UTC in "
            f"process {lease['pid']} {where} (last heard from {heard} s ago)")


IMPORT = ".import"  # the lease of a dataset's imports (no run key holds a ".")


def busy_message(key, lease):
    """What a stage refused because ``lease`` holds run ``key`` tells the curator."""
    if key == IMPORT:
        return (f"Another import into this dataset runs: {running_note(lease)}; import again "
                "when it is done (the images it added are not added twice)")
    return (f"Run {key!r} is busy: {running_note(lease)}; run this again when it is done. A "
            f"process that was stopped frees the run at once on this machine, {TTL:.0f} s after "
            "it was last heard from on another")


def live_tags(dataset, key):
    """The ``tag`` of each live holder of run ``key`` (see :func:`run_lease`) that has one."""
    return {h["tag"] for h in _stored(dataset, key)[1] if h.get("tag")}


def _take(dataset, key, stage, shared, tag):
    """Store a lease of run ``key`` for ``stage`` in place of none or of a free one, or, for a
    ``shared`` one (a shard), join the shards holding it; its token. Raises
    :class:`RunBusyError` if a live process holds the run otherwise."""
    leases, lease_id = _leases(), _lease_id(dataset, key)
    for _ in range(5):  # (another process taking or releasing it meanwhile: look again)
        now = server_time()
        mine = dict(token=uuid.uuid4().hex, stage=stage, host=HOST, machine=MACHINE,
                    pid=os.getpid(), start_ticks=_start_ticks(os.getpid()), started=now,
                    stage_started=now, beat=now, tag=tag)
        if shared:  # (joined only by shards of the same stage)
            alone = {"$not": {"$elemMatch": {"stage": {"$ne": stage}}}}
            if leases.update_one({"_id": lease_id, "shared": True, "holders": alone},
                                 {"$push": {"holders": mine}, "$set": {"beat": now}}).matched_count:
                return mine["token"]
            record = dict(shared=True, holders=[mine], beat=now, dataset=dataset.name, key=key)
        else:
            record = dict(mine, dataset=dataset.name, key=key)
        try:
            leases.insert_one({"_id": lease_id, **record})
            return mine["token"]
        except DuplicateKeyError:
            pass
        lease = leases.find_one({"_id": lease_id})
        if lease is None:
            continue
        live = _live(lease, now)
        if shared and lease.get("shared"):  # the shards of another stage, or some gone
            record["holders"] = [h for h in live if h["stage"] == stage] + [mine]
            live = [h for h in live if h["stage"] != stage]
        if live:
            raise RunBusyError(busy_message(key, _as_one(lease, live)))
        # (as read: the same holder, and for shards the same ones as read, none alive)
        same = {"token": lease.get("token"), "holders": lease.get("holders")}
        if leases.replace_one({"_id": lease_id, **same}, record).matched_count:
            logger.info("Run %r: took over the lease of %r (process %s on %s, last heard from "
                        "at %s)", key, lease.get("stage", "shards"), lease.get("pid"),
                        lease.get("host"), lease["beat"])
            return mine["token"]
    raise RunBusyError(f"Run {key!r} is busy: other processes keep starting and stopping its "
                       "stages; run this again when they are done")


def _renew(lease_id, token, shared, stop):
    """Renew the lease every :data:`RENEW` seconds until ``stop`` is set."""
    if shared:
        mine, beat = {"_id": lease_id, "holders.token": token}, {"holders.$.beat": True, "beat": True}
    else:
        mine, beat = {"_id": lease_id, "token": token}, {"beat": True}
    while not stop.wait(RENEW):
        try:
            renewed = _leases().update_one(mine, {"$currentDate": beat}).matched_count
        except Exception as e:  # noqa: BLE001 (the database away for a moment: try again)
            logger.warning("Could not renew the lease of %s: %s", lease_id, e)
            continue
        if not renewed:
            logger.warning("The lease of %s was taken by another process (this one was not heard "
                           "from for %.0f s): this one stops before its next write", lease_id, TTL)
            return


def _release(lease_id, token, shared):
    if not shared:
        _leases().delete_one({"_id": lease_id, "token": token})
        return
    _leases().update_one({"_id": lease_id}, {"$pull": {"holders": {"token": token}}})
    _leases().delete_one({"_id": lease_id, "shared": True, "holders": {"$size": 0}})


@contextmanager
def run_lease(dataset, key, stage, shared=False, tag=None):
    """Hold run ``key`` of ``dataset`` for ``stage`` (its name, as a curator reads it) while the
    block runs; ``shared``: with the other shards of a stage, which hold it so too; ``tag``
    tells this holder from others (:func:`live_tags`: which shards are heard from). A thread
    holding it already (a stage inside :func:`run_vlsr`) enters again, naming its stage for that
    time; any other holder alive raises :class:`RunBusyError`."""
    held = _leases_held()
    lease_id = _lease_id(dataset, key)
    if lease_id in held:
        token, held_shared = held[lease_id]
        if held_shared and not shared:
            raise RuntimeError(f"{stage!r} cannot run inside a shard of run {key!r}")
        if held_shared or shared:  # (a shard's own part: the name of the shard stays)
            yield
            return
        mine = {"_id": lease_id, "token": token}
        before = _leases().find_one_and_update(
            mine, {"$set": {"stage": stage, "stage_started": server_time()}})
        try:
            yield
        finally:
            if before is not None:
                _leases().update_one(mine, {"$set": {
                    "stage": before["stage"],
                    "stage_started": before.get("stage_started", before["started"])}})
        return
    token = _take(dataset, key, stage, shared, tag)
    held[lease_id] = token, shared
    stop = threading.Event()
    renewal = threading.Thread(target=_renew, args=(lease_id, token, shared, stop), daemon=True,
                               name=f"vlsr-lease-{key}")
    renewal.start()
    try:
        yield
    finally:
        try:
            stop.set()
            renewal.join()
        finally:  # (a second Ctrl-C in the join: the lease is still given back)
            del held[lease_id]
            _release(lease_id, token, shared)


def collection(samples):
    """``samples``, a FiftyOne dataset or view; else a TypeError that says what to give (a
    dataset's name failed on "'str' object has no attribute ...", a sample on its ``len``)."""
    if isinstance(samples, foc.SampleCollection):
        return samples
    if isinstance(samples, str):
        raise TypeError(f"Give a FiftyOne dataset or view, not the name {samples!r:.80}: "
                        f"fo.load_dataset({samples!r:.80})")
    if isinstance(samples, (fos.Sample, fos.SampleView)):
        raise TypeError("Give a FiftyOne dataset or view, not a sample: "
                        "dataset.select(sample.id) is a view of it")
    raise TypeError(f"Give a FiftyOne dataset or view, not {type(samples).__name__}")


def holds_run(stage, shared=False):
    """Decorate a stage function ``f(samples, ..., key=..., ...)`` to run holding the lease of
    its run (:func:`run_lease`), ``shared`` for a shard, on ``samples`` with every field
    (:func:`~.chunks.every_field`)."""

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            samples = bound.arguments["samples"] = every_field(collection(bound.arguments["samples"]))
            dataset, key = samples._dataset, bound.arguments["key"]
            if not isinstance(key, (str, type(None))):  # (parameters given in its place
                # failed in MongoDB; None is said not to name fields)
                raise TypeError(f"The run key is a string such as 'vlsr', not {key!r:.120}; give a "
                                "stage's parameters after it, or by name")
            with run_lease(dataset, key, stage, shared):
                result = function(*bound.args, **bound.kwargs)
                if not shared and dataset.has_run(key):
                    _finished(samples, key, stage)
                return result

        return wrapper

    return decorate


def _finished(samples, key, stage):
    """Record in run ``key``'s config when ``stage`` last finished on all of the run's samples
    (``finished``, UTC by this machine's clock, as FiftyOne times delegated jobs): a delegated
    job of that stage that failed before is no longer news. A part (a view) does not count."""
    from .runs import run_collection, update_run_doc, utc_now  # (runs holds stages by their leases)

    dataset = samples._dataset
    if samples is not dataset and len(samples) < len(run_collection(dataset, key)):
        return
    update_run_doc(dataset, key, {"$set": {f"config.finished.{stage}": utc_now()}})


DOCUMENT_WAIT = 1800.0  # seconds to wait for another process's change of a dataset's document


@contextmanager
def dataset_document(dataset):
    """Change the document of ``dataset`` (its fields, runs and saved views) one process at a
    time, on the document as stored: FiftyOne writes its lists of fields and views whole, so
    two runs adding fields at once each dropped the other's from the schema (their values
    stayed on the samples, where no run could see, nor delete, them). Re-entrant in a
    thread."""
    lock_id = f"{dataset._doc.id}:.document"  # (no run key holds a ".": not a run's lease)
    held = _leases_held()
    if lock_id in held:
        yield
        return
    leases, token = _leases(), uuid.uuid4().hex
    end = time.monotonic() + DOCUMENT_WAIT
    while True:
        now = server_time()
        try:
            leases.insert_one(dict(_id=lock_id, dataset=dataset.name, token=token,
                                   pid=os.getpid(), machine=MACHINE, host=HOST, started=now,
                                   beat=now))
            break
        except DuplicateKeyError:
            stored = leases.find_one({"_id": lock_id})
            if stored is None:  # (released meanwhile)
                continue
            if _free(stored, now):
                leases.delete_one({"_id": lock_id, "token": stored["token"]})
                continue
            if time.monotonic() > end:  # (renewed all along: alive, but stuck?)
                raise RunBusyError(
                    f"Dataset {dataset.name!r}: another process (pid {stored['pid']} on "
                    f"{stored['host']}) has been changing its fields, runs or saved views "
                    f"for {DOCUMENT_WAIT / 60:.0f} minutes; try again") from None
            time.sleep(0.05)
    held[lock_id] = (token, False)
    stop = threading.Event()  # (renewed as a run's lease: deleting a field of many samples
    # can take longer than TTL)
    renewal = threading.Thread(target=_renew, args=(lock_id, token, False, stop), daemon=True,
                               name="vlsr-dataset-document")
    renewal.start()
    try:
        # the document and schema as stored (the fields, runs and views other processes added
        # meanwhile); not ``reload()``, which also reloads in-memory samples, losing their
        # unsaved edits
        dataset._reload(hard=True)
        yield
    finally:
        stop.set()
        renewal.join()
        del held[lock_id]
        _release(lock_id, token, False)

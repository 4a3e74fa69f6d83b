"""One stage of a run at a time: a stage holds its run's lease while it writes, so that a run
started twice at once (two terminals, an operator executed twice) is refused in one line
instead of both writing.

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
import uuid
from contextlib import contextmanager
from datetime import timedelta

import fiftyone.core.odm as foo
import psutil
from pymongo.errors import DuplicateKeyError

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


def _leases_held():
    """This thread's leases: id -> token."""
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


def _server_time():
    return foo.get_db_conn().command("hello")["localTime"]  # (naive UTC, as pymongo reads dates)


def _free(lease, now):
    """Whether ``lease`` (a stored document) no longer holds: not renewed for :data:`TTL`
    seconds, or its process on this machine is gone (``psutil.pid_exists``: ``os.kill(pid, 0)``
    would end the process on Windows)."""
    if now - lease["beat"] > timedelta(seconds=TTL):
        return True
    return lease.get("machine") == MACHINE and not psutil.pid_exists(lease["pid"])


def holder(dataset, key):
    """The stored lease of run ``key`` if another live process or thread holds it (a dict:
    ``stage``, ``host``, ``pid``, ``started``, ``beat``), else None."""
    lease_id = _lease_id(dataset, key)
    if lease_id in _leases_held():
        return None
    lease = _leases().find_one({"_id": lease_id})
    return None if lease is None or _free(lease, _server_time()) else lease


def running_note(lease):
    """Which stage holds a run, where and since when, as a curator reads it."""
    where = "on this machine" if lease.get("machine") == MACHINE else f"on {lease['host']!r}"
    heard = max(0, round((_server_time() - lease["beat"]).total_seconds()))
    since = lease.get("stage_started", lease["started"])
    return (f"{lease['stage']!r} has been running since {since:%Y-%m-%d %H:%M:%S} UTC in "
            f"process {lease['pid']} {where} (last heard from {heard} s ago)")


def busy_message(key, lease):
    """What a stage refused because ``lease`` holds run ``key`` tells the curator."""
    return (f"Run {key!r} is busy: {running_note(lease)}; run this again when it is done. A "
            f"process that was stopped frees the run at once on this machine, {TTL:.0f} s after "
            "it was last heard from on another")


def _take(dataset, key, stage):
    """Store a new lease of run ``key`` for ``stage`` in place of none or of a free one;
    its token. Raises :class:`RunBusyError` if a live process holds the run."""
    leases, lease_id = _leases(), _lease_id(dataset, key)
    for _ in range(5):  # (another process taking or releasing it meanwhile: look again)
        now = _server_time()
        mine = dict(token=uuid.uuid4().hex, stage=stage, host=HOST, machine=MACHINE,
                    pid=os.getpid(), dataset=dataset.name, key=key, started=now,
                    stage_started=now, beat=now)
        try:
            leases.insert_one({"_id": lease_id, **mine})
            return mine["token"]
        except DuplicateKeyError:
            pass
        lease = leases.find_one({"_id": lease_id})
        if lease is None:
            continue
        if not _free(lease, now):
            raise RunBusyError(busy_message(key, lease))
        if leases.replace_one({"_id": lease_id, "token": lease["token"]}, mine).matched_count:
            logger.info("Run %r: took over the lease of %r (process %s on %s, last heard from "
                        "at %s)", key, lease["stage"], lease["pid"], lease["host"], lease["beat"])
            return mine["token"]
    raise RunBusyError(f"Run {key!r} is busy: other processes keep starting and stopping its "
                       "stages; run this again when they are done")


def _renew(lease_id, token, stop):
    """Renew the lease every :data:`RENEW` seconds until ``stop`` is set."""
    while not stop.wait(RENEW):
        try:
            renewed = _leases().update_one({"_id": lease_id, "token": token},
                                           {"$currentDate": {"beat": True}}).matched_count
        except Exception as e:  # noqa: BLE001 (the database away for a moment: try again)
            logger.warning("Could not renew the lease of %s: %s", lease_id, e)
            continue
        if not renewed:
            logger.warning("The lease of %s was taken by another process (this one was not heard "
                           "from for %.0f s): both may now write the run", lease_id, TTL)
            return


@contextmanager
def run_lease(dataset, key, stage):
    """Hold run ``key`` of ``dataset`` for ``stage`` (its name, as a curator reads it) while the
    block runs. A thread holding it already (a stage inside :func:`run_vlsr`) enters again,
    naming its stage for that time; any other holder alive raises :class:`RunBusyError`."""
    held = _leases_held()
    lease_id = _lease_id(dataset, key)
    if lease_id in held:
        mine = {"_id": lease_id, "token": held[lease_id]}
        before = _leases().find_one_and_update(
            mine, {"$set": {"stage": stage, "stage_started": _server_time()}})
        try:
            yield
        finally:
            if before is not None:
                _leases().update_one(mine, {"$set": {
                    "stage": before["stage"],
                    "stage_started": before.get("stage_started", before["started"])}})
        return
    token = _take(dataset, key, stage)
    held[lease_id] = token
    stop = threading.Event()
    renewal = threading.Thread(target=_renew, args=(lease_id, token, stop), daemon=True,
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
            _leases().delete_one({"_id": lease_id, "token": token})


def holds_run(stage):
    """Decorate a stage function ``f(samples, ..., key=..., ...)`` to run holding the lease of
    its run (:func:`run_lease`)."""

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            samples = bound.arguments["samples"]
            with run_lease(samples._dataset, bound.arguments["key"], stage):
                return function(*args, **kwargs)

        return wrapper

    return decorate

"""One stage of a run at a time: a stage holds its run's lease while it writes, so that a run
started twice at once (two terminals, an operator executed twice) is refused in one line
instead of both writing.

A lease is a document of the collection ``vlsr_leases`` in FiftyOne's database, renewed every
:data:`RENEW` seconds by a thread of the process holding it. It is free once released, once
its process is gone (on this machine: its pid no longer runs, so ``kill -9`` frees it at once),
or once nothing renewed it for :data:`TTL` seconds (a process on another machine that stopped).
Times are the database server's, so machines with clocks apart agree.
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
from pymongo.errors import DuplicateKeyError

logger = logging.getLogger(__name__)

COLLECTION = "vlsr_leases"
TTL = 60.0  # seconds without renewal after which a lease is free
RENEW = 10.0  # seconds between renewals
HOST = socket.gethostname()

_held = threading.local()


class RunBusyError(ValueError):
    """Another process is running a stage of the run, or was rewriting its stored results as
    this one read them."""


def _leases_held():
    """This thread's leases: id -> [token, depth]."""
    if not hasattr(_held, "leases"):
        _held.leases = {}
    return _held.leases


def _leases():
    return foo.get_db_conn()[COLLECTION]


def _lease_id(dataset, key):
    return f"{dataset._doc.id}:{key}"


def _server_time():
    return foo.get_db_conn().command("hello")["localTime"]  # (naive UTC, as pymongo reads dates)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _free(lease, now):
    """Whether ``lease`` (a stored document) no longer holds: not renewed for :data:`TTL`
    seconds, or its process on this machine is gone."""
    if now - lease["beat"] > timedelta(seconds=TTL):
        return True
    return lease["host"] == HOST and not _alive(lease["pid"])


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
    where = "on this machine" if lease["host"] == HOST else f"on {lease['host']!r}"
    heard = max(0, round((_server_time() - lease["beat"]).total_seconds()))
    return (f"{lease['stage']!r} has been running since {lease['started']:%H:%M:%S} UTC in "
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
        mine = dict(token=uuid.uuid4().hex, stage=stage, host=HOST, pid=os.getpid(),
                    dataset=dataset.name, key=key, started=now, beat=now)
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
    block runs. A thread holding it already (a stage inside :func:`run_vlsr`) enters again
    and names its stage; any other holder alive raises :class:`RunBusyError`."""
    held = _leases_held()
    lease_id = _lease_id(dataset, key)
    if lease_id in held:
        token = held[lease_id][0]
        _leases().update_one({"_id": lease_id, "token": token}, {"$set": {"stage": stage}})
        held[lease_id][1] += 1
        try:
            yield
        finally:
            held[lease_id][1] -= 1
        return
    token = _take(dataset, key, stage)
    held[lease_id] = [token, 1]
    stop = threading.Event()
    renewal = threading.Thread(target=_renew, args=(lease_id, token, stop), daemon=True,
                               name=f"vlsr-lease-{key}")
    renewal.start()
    try:
        yield
    finally:
        stop.set()
        renewal.join()
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

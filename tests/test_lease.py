"""One stage of a run at a time: a run that another process is running is refused in one line,
and freed as soon as that process is gone."""

import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from fiftyone.operators.executor import ExecutionContext, Executor
from fiftyone.operators.registry import OperatorRegistry
from test_operators import URI, form

from vlsr_core.cli import main as cli
from vlsr_core.fo import lease
from vlsr_core.fo.export import export_run
from vlsr_core.fo.lease import RunBusyError, run_lease
from vlsr_core.fo.review import apply_review
from vlsr_core.fo.runs import delete_run, saved_view_names
from vlsr_core.fo.chunks import shards
from vlsr_core.fo.stages import (
    VLSRError,
    cluster_and_merge,
    compute_embeddings,
    compute_image_embeddings,
    finish_score_shards,
    prepare_score_shards,
    score_labels,
    score_shard,
)
from vlsr_core.fo.summary import summarize_run

HOLD = """
import sys, time
import fiftyone as fo
from vlsr_core.fo.lease import run_lease
with run_lease(fo.load_dataset(sys.argv[1]), "vlsr", sys.argv[2], shared=sys.argv[3] == "shard"):
    print("held", flush=True)
    time.sleep(300)
"""


@contextmanager
def held_elsewhere(dataset, stage, shard=False):
    """Another process holding run 'vlsr' of ``dataset`` for ``stage`` (as one of its shards,
    ``shard``); killed on exit."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, dataset.name, stage,
                             "shard" if shard else "stage"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def leases_of(dataset):
    return lease._leases().count_documents({"dataset": dataset.name})


def outputs(dataset):
    return dataset.values("vlsr_label.label"), dataset.values("gt.classifications.label")


def test_every_stage_is_refused_while_another_process_runs_one_and_free_once_it_is_killed(
        ran, tmp_path, capsys):
    dataset = ran[0]
    before = outputs(dataset)
    with held_elsewhere(dataset, "score labels") as proc:
        busy = (r"Run 'vlsr' is busy: 'score labels' has been running since "
                r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC "
                rf"in process {proc.pid} on this machine \(last heard from \d+ s ago\); run "
                "this again when it is done")
        for stage in (lambda: score_labels(dataset), lambda: cluster_and_merge(dataset),
                      lambda: apply_review(dataset),
                      lambda: export_run(dataset, str(tmp_path / "x")),
                      lambda: delete_run(dataset, "vlsr")):
            with pytest.raises(RunBusyError, match=busy):
                stage()
        assert cli(["delete-run", "--dataset", dataset.name, "--yes"]) == 2
        assert re.fullmatch(f"vlsr: error: {busy}.*\n", capsys.readouterr().err)
        assert dataset.has_run("vlsr") and outputs(dataset) == before
        assert not (tmp_path / "x").exists()
        summary = summarize_run(dataset, "vlsr")
        assert "**Busy:** 'score labels' has been running since" in summary
        # the stage it runs is marked running: in progress, not stopped part-way
        config = dataset.get_run_info("vlsr").config
        config.stages = {**config.stages, "score": "running"}
        dataset.update_run_config("vlsr", config)
        assert "stopped part-way" not in summarize_run(dataset, "vlsr")
    # killed (kill -9): its lease is free at once, not after the time it could be renewed in
    assert lease.TTL >= 60
    score_labels(dataset)
    assert "Busy:" not in summarize_run(dataset, "vlsr")
    assert leases_of(dataset) == 0


def test_shards_of_a_stage_run_together_and_no_other_stage_runs_while_one_writes(ran, tmp_path):
    """A stage started while shards write (a model switch clearing the embeddings a shard is
    writing, a deletion, a scoring superseding theirs) is refused until the last one is gone;
    the shards themselves run side by side."""
    dataset, _, encoder, _ = ran
    prepare_score_shards(dataset, "vlsr")
    before = outputs(dataset)
    with held_elsewhere(dataset, "score labels", shard=True) as first:
        with held_elsewhere(dataset, "score labels", shard=True):
            busy = (r"Run 'vlsr' is busy: 2 shards of 'score labels' have been running since "
                    rf"\S+ \S+ UTC \(the first in process {first.pid} on this machine; last "
                    r"heard from \d+ s ago\); run this again when it is done")
            for stage in (lambda: compute_embeddings(dataset, "gt", encoder=encoder,
                                                     recompute=True),
                          lambda: score_labels(dataset), lambda: cluster_and_merge(dataset),
                          lambda: apply_review(dataset),
                          lambda: export_run(dataset, str(tmp_path / "x")),
                          lambda: delete_run(dataset, "vlsr")):
                with pytest.raises(RunBusyError, match=busy):
                    stage()
            assert outputs(dataset) == before and not (tmp_path / "x").exists()
            assert "**Busy:** 2 shards of 'score labels' have been running" in summarize_run(
                dataset, "vlsr")
            parts = shards(dataset, 2)
            assert score_shard(parts[0], "vlsr").n_samples > 0  # a shard beside them
            assert leases_of(dataset) == 1
        with pytest.raises(RunBusyError, match=r"a shard of .score labels. has been running since \S+ \S+ UTC \(in process \d+ on this machine; last heard"):
            score_labels(dataset)
    score_shard(parts[1], "vlsr")
    finish_score_shards(dataset, "vlsr")
    assert leases_of(dataset) == 0
    score_labels(dataset)


def test_shards_of_two_stages_do_not_share_the_run(ran):
    """Score shards queued while embedding shards were still queued: the workers would run
    both, and score images whose embeddings are being written."""
    dataset = ran[0]
    prepare_score_shards(dataset, "vlsr")
    with held_elsewhere(dataset, "compute embeddings", shard=True):
        with pytest.raises(RunBusyError, match="a shard of 'compute embeddings' has been running"):
            score_shard(dataset, "vlsr")
    score_shard(dataset, "vlsr")  # (the other stage's shard gone)
    assert leases_of(dataset) == 0


def test_a_shard_is_refused_while_another_stage_runs(ran):
    dataset, _, encoder, _ = ran
    prepare_score_shards(dataset, "vlsr")
    before = outputs(dataset), dataset.values("gt.classifications.vlsr_similarity")
    with held_elsewhere(dataset, "compute embeddings"):
        for shard in (lambda: score_shard(dataset, "vlsr"),
                      lambda: compute_image_embeddings(dataset, "vlsr", encoder=encoder,
                                                       recompute=True)):
            with pytest.raises(RunBusyError, match="'compute embeddings' has been running since"):
                shard()
    assert (outputs(dataset), dataset.values("gt.classifications.vlsr_similarity")) == before
    score_shard(dataset, "vlsr")
    assert leases_of(dataset) == 0


def test_a_lease_not_renewed_for_its_time_to_live_is_taken_from_another_machine(ran):
    dataset = ran[0]
    now = lease.server_time()
    record = dict(_id=lease._lease_id(dataset, "vlsr"), token="t", stage="cluster and merge",
                  host="gpu-box-7", pid=1, dataset=dataset.name, key="vlsr",
                  started=now - timedelta(hours=1))
    lease._leases().insert_one({**record, "beat": now - timedelta(seconds=5)})
    with pytest.raises(RunBusyError, match=r"'cluster and merge' has been running since .* in "
                                           r"process 1 on 'gpu-box-7' \(last heard from [5-9] s "
                                           r"ago\)"):
        score_labels(dataset)
    lease._leases().update_one({"_id": record["_id"]},
                               {"$set": {"beat": now - timedelta(seconds=lease.TTL + 1)}})
    score_labels(dataset)
    assert leases_of(dataset) == 0


def test_a_process_given_the_id_of_a_killed_holder_does_not_hold_its_run(ran):
    """A holder killed, its process id given to another process: the run was refused for 60 s
    as held by that process "on this machine"."""
    import subprocess

    dataset = ran[0]
    other = subprocess.Popen(["sleep", "30"])  # (the holder's id, as if given again)
    try:
        now = lease.server_time()
        record = dict(_id=lease._lease_id(dataset, "vlsr"), token="t", stage="score labels",
                      host=lease.HOST, machine=lease.MACHINE, pid=other.pid, dataset=dataset.name,
                      key="vlsr", started=now, beat=now - timedelta(seconds=2))
        ticks = lease._start_ticks(other.pid)
        lease._leases().insert_one({**record, "start_ticks": ticks})  # its holder: that process
        with pytest.raises(RunBusyError, match=f"in process {other.pid} on this machine"):
            score_labels(dataset)
        lease._leases().update_one({"_id": record["_id"]}, {"$set": {"start_ticks": ticks - 500}})
        score_labels(dataset)  # another process had that id: the run is free
        assert leases_of(dataset) == 0
    finally:
        other.kill()
        other.wait()


def test_a_lease_taken_in_a_forked_child_holds_while_the_child_runs(ran):
    """A child forked after import recorded its parent's start time with its own id: every
    other process judged its lease free, and took the run from it."""
    import multiprocessing

    dataset = ran[0]
    taken, release = multiprocessing.get_context("fork").Event(), multiprocessing.get_context(
        "fork").Event()

    def hold():
        with lease.run_lease(dataset, "vlsr", "score labels"):
            taken.set()
            release.wait(30)

    child = multiprocessing.get_context("fork").Process(target=hold)
    child.start()
    try:
        assert taken.wait(30)
        with pytest.raises(RunBusyError, match=f"in process {child.pid} on this machine"):
            score_labels(dataset)
    finally:
        release.set()
        child.join(30)
    score_labels(dataset)


def test_a_process_of_another_pid_namespace_on_this_host_is_not_judged_by_its_pid(ran):
    """A container with the host's network has its name, not its process ids: a pid that
    runs nowhere here says nothing of a lease taken there, renewed 2 s ago."""
    dataset = ran[0]
    now = lease.server_time()
    lease._leases().insert_one(dict(
        _id=lease._lease_id(dataset, "vlsr"), token="t", stage="score labels", host=lease.HOST,
        machine=lease.HOST + "/another-boot/pid:[1]", pid=4_194_301, dataset=dataset.name,
        key="vlsr", started=now, beat=now - timedelta(seconds=2)))
    with pytest.raises(RunBusyError, match=f"in process 4194301 on {lease.HOST!r}"):
        score_labels(dataset)
    lease._leases().delete_many({"dataset": dataset.name})


@pytest.mark.parametrize("shard", [False, True])
def test_the_process_holding_a_run_renews_its_lease(ran, monkeypatch, shard):
    dataset = ran[0]
    monkeypatch.setattr(lease, "RENEW", 0.05)

    def beat():
        stored = lease._leases().find_one({"dataset": dataset.name})
        return stored["holders"][0]["beat"] if shard else stored["beat"]

    with run_lease(dataset, "vlsr", "score labels", shared=shard):
        first = beat()
        time.sleep(0.5)
        assert beat() > first
    assert leases_of(dataset) == 0


def test_stages_within_a_held_run_go_on_and_another_thread_is_refused(ran):
    dataset = ran[0]
    refused = []

    def other_thread():
        try:
            cluster_and_merge(dataset)
        except RunBusyError as e:
            refused.append(str(e))

    with run_lease(dataset, "vlsr", "vlsr run"):
        score_labels(dataset)  # (as run_vlsr calls it)
        with run_lease(dataset, "vlsr", "score labels"):  # named for its time, and timed so
            stored = lease._leases().find_one({"dataset": dataset.name})
            assert stored["stage"] == "score labels"
            assert stored["stage_started"] >= stored["started"]
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        assert lease._leases().find_one({"dataset": dataset.name})["stage"] == "vlsr run"
    assert len(refused) == 1 and "'score labels' has been running" in refused[0]
    assert leases_of(dataset) == 0


def test_a_stage_that_fails_frees_its_run(ran):
    dataset = ran[0]
    with pytest.raises(VLSRError, match="no samples"):
        score_labels(dataset.limit(0))
    assert leases_of(dataset) == 0
    score_labels(dataset)


def test_the_forms_say_a_run_is_busy_and_which_stage_runs(ran):
    dataset = ran[0]
    assert "running" not in form("cluster_and_merge", dataset)["type"]["properties"]
    with held_elsewhere(dataset, "apply the review"):
        for name in ("compute_embeddings", "cluster_and_merge", "score_labels", "apply_review",
                     "delete_run"):
            props = form(name, dataset, key="vlsr")["type"]["properties"]
            assert re.match(r"Run 'vlsr' is busy: 'apply the review' has been running since .*; "
                            "executing this now is refused until it is done",
                            props["running"]["view"]["label"]), name
        # executed anyway: the App shows the refusal as a message, not a traceback
        ctx = ExecutionContext(request_params=dict(dataset_name=dataset.name, params=dict(
            key="vlsr", confirm=True)), executor=Executor())
        with pytest.raises(RunBusyError):
            list(OperatorRegistry().get_operator(URI + "delete_run").execute(ctx))
        told = {r["operator_uri"]: r["params"] for r in ctx.executor.to_json()["requests"]}
        assert told["notify"]["message"].startswith(
            "VLSR: delete run failed: Run 'vlsr' is busy: 'apply the review' has been running")
        assert told["show_output"]["results"]["error"] == told["notify"]["message"]
    assert dataset.has_run("vlsr")


def test_a_stage_without_embeddings_while_another_process_embeds_says_to_wait(ran):
    """Audit: a delegated scoring refused while another worker embedded the run again (with
    another model: its fields emptied) said "compute embeddings first"."""
    from vlsr_core.fo.stage_run import embeddings_problem

    dataset = ran[0]
    dataset.set_values("vlsr_embedding", [None] * len(dataset))
    assert embeddings_problem(dataset, "vlsr") == (
        "No image embeddings for run 'vlsr' here: compute embeddings first")
    with held_elsewhere(dataset, "compute embeddings"):
        assert re.match(r"No image embeddings for run 'vlsr' here yet: 'compute embeddings' has "
                        r"been running since .*; run this when it is done$",
                        embeddings_problem(dataset, "vlsr"))


def test_the_panel_says_a_run_is_busy_until_refreshed_after(ran):
    from test_panel import Panel

    dataset = ran[0]
    with held_elsewhere(dataset, "cluster and merge"):
        panel = Panel(dataset).event("on_load")
        assert re.match(r"\*\*Busy:\*\* 'cluster and merge' has been running since .*: Apply is "
                        "refused until it is done", panel.state["busy"])
        assert "busy" in str(panel.layout)
    assert panel.event("refresh").state["busy"] is None
    assert "'busy'" not in str(panel.layout)


def test_a_stage_inside_a_shard_of_its_run_is_an_error_not_a_silent_pass(ran):
    dataset = ran[0]
    with run_lease(dataset, "vlsr", "score labels", shared=True):
        with pytest.raises(RuntimeError, match="'cluster and merge' cannot run inside a shard"):
            cluster_and_merge(dataset)
    assert leases_of(dataset) == 0


ADD_OUTPUTS = """
import sys, time
import fiftyone as fo
from vlsr_core.fo.stage_run import _create_outputs
dataset, key, start = fo.load_dataset(sys.argv[1]), sys.argv[2], float(sys.argv[3])
config = type("Config", (), {"created_fields": None})()
time.sleep(max(0.0, start - time.time()))
for i in range(30):
    _create_outputs(dataset, key, config, {f"{key}_{i}": lambda name: dataset.add_sample_field(
        name, fo.FloatField)})
"""


def test_two_runs_creating_fields_at_once_keep_each_others(dataset):
    """FiftyOne writes a dataset's list of fields whole: two processes adding fields at once
    dropped some of each other's from the schema (their runs then could not see, nor delete,
    them). Each process here creates 30 outputs of its run, starting together."""
    import fiftyone as fo

    dataset.add_sample(fo.Sample(filepath="/x.png"))
    dataset.persistent = True  # (seen by the other processes)
    start = time.time() + 4
    procs = [subprocess.Popen([sys.executable, "-c", ADD_OUTPUTS, dataset.name, key, str(start)])
             for key in ("ka", "kb")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    dataset.reload()
    schema = dataset.get_field_schema()
    assert [sum(name.startswith(key + "_") for name in schema) for key in ("ka", "kb")] == [30, 30]
    assert not leases_of(dataset)


def test_a_long_change_of_a_datasets_fields_keeps_the_others_waiting(dataset, monkeypatch):
    """The lock of a dataset's document is renewed as a run's lease is: deleting a field of
    many samples can take longer than the time after which an unrenewed lock is free."""
    monkeypatch.setattr(lease, "TTL", 1.0)
    monkeypatch.setattr(lease, "RENEW", 0.2)
    events = []

    def long_change():
        with lease.dataset_document(dataset):
            events.append("first in")
            time.sleep(3)
            events.append("first out")

    first = threading.Thread(target=long_change)
    first.start()
    time.sleep(1.5)
    with lease.dataset_document(dataset):  # (another thread: as another process would)
        events.append("second in")
    first.join()
    assert events == ["first in", "first out", "second in"]


def test_the_dataset_document_lock_is_no_runs_lease_and_keeps_unsaved_sample_edits(dataset):
    """A run may be called "document"; a sample edited in memory, not saved, keeps its edit."""
    import fiftyone as fo

    dataset.add_sample(fo.Sample(filepath="/x.png", note="old"))
    sample = dataset.first()
    sample["note"] = "edited"  # (not saved)
    with run_lease(dataset, "document", "score labels"):
        with lease.dataset_document(dataset):
            assert lease._leases().count_documents({"dataset": dataset.name}) == 2
    assert sample["note"] == "edited"
    assert not leases_of(dataset)


def test_a_process_whose_run_was_taken_over_stops_before_its_next_write(ran, monkeypatch):
    """Audit: a run paused (kill -STOP) past the lease's time to live was taken over by a
    second run; resumed, the first went on writing chunk after chunk and ended last, so the
    run held the first one's settings while the second had reported its own."""
    from vlsr_core.fo import chunks

    dataset = ran[0]
    monkeypatch.setattr(chunks, "CHUNK_SIZE", 2)
    dataset.set_values("vlsr_min_similarity", [-5.0] * len(dataset))
    taker = dict(token="other", stage="score labels", host="elsewhere", pid=1, dataset=dataset.name,
                 key="vlsr")
    taken = []

    def take_over(fraction):  # after the first chunk: another process takes the run
        if fraction > 0 and not taken:
            now = lease.server_time()
            lease._leases().replace_one({"_id": lease._lease_id(dataset, "vlsr")},
                                        {**taker, "started": now, "beat": now})
            taken.append(True)

    with pytest.raises(lease.LeaseLostError, match=r"lost the run \(another process may have "
                                                   r"taken it over\), so it stopped before "
                                                   "writing again"):
        score_labels(dataset, progress=take_over)
    assert taken
    written = [v for v in dataset.values("vlsr_min_similarity") if v != -5.0]
    assert 0 < len(written) <= 2  # the first chunk only
    assert lease._leases().find_one({"_id": lease._lease_id(dataset, "vlsr")})["token"] == "other"
    lease._leases().delete_one({"_id": lease._lease_id(dataset, "vlsr")})
    # taken over once every chunk is written: the review views are not saved over either
    from vlsr_core.fo import score

    views = {n: dataset.get_saved_view_info(n)["description"]
             for n in saved_view_names("vlsr").values() if dataset.has_saved_view(n)}
    histogram = score.count_score_histogram
    monkeypatch.setattr(score, "count_score_histogram", lambda *args: (
        take_over(1.0), histogram(*args))[1])
    taken.clear()
    with pytest.raises(lease.LeaseLostError):
        score_labels(dataset, low_quantile=0.5)
    assert {n: dataset.get_saved_view_info(n)["description"] for n in views} == views
    lease._leases().delete_one({"_id": lease._lease_id(dataset, "vlsr")})

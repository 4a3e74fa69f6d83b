"""The run record: input untouched, idempotent, side by side, deletable, persistent, chunked,
and loadable when stored by an earlier module layout.

Behaviour is judged by what the stages leave in the database, on the fake CLIP of
:mod:`fake_clip`, whose right answers are known.
"""

import os
import re

import fiftyone as fo
import fiftyone.core.runs as fors
import numpy as np
import pytest
from bson import json_util
from fiftyone import ViewField as F

from vlsr_core.engine.params import MergeParams, ScoreParams
from vlsr_core.fo import chunks, cluster, embed, stages
from vlsr_core.fo.runs import VLSRResults, VLSRRunConfig, label_attributes, sample_fields, saved_view_names
from vlsr_core.fo.stages import VLSRError, cluster_and_merge, compute_embeddings, run_vlsr, score_labels

from fake_clip import (
    CANONICAL,
    FINAL,
    UNREADABLE,
    VOCAB,
    FakeEncoder,
    axis,
    by_name,
    dot,
    label_snapshot,
    label_vector,
    run_fields,
    unit,
    view_labels,
    view_names,
)

# ---------------------------------------------------------------------------------------------
# The run record: input untouched, idempotent, side by side, deletable, persistent
# ---------------------------------------------------------------------------------------------


def test_input_labels_are_never_modified(main):
    dataset, images = main
    before = label_snapshot(dataset)
    ids_before = dataset.values("gt.classifications.id")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.reload()
    assert label_snapshot(dataset) == before
    assert dataset.values("gt.classifications.id") == ids_before
    dataset.delete_run("vlsr")
    dataset.reload()
    assert [l.to_dict() if l else None for l in dataset.values("gt")] == [
        before[os.path.basename(p)] for p in dataset.values("filepath")]


def snapshot(dataset, key="vlsr"):
    """Every value a run wrote, by field (label ids aside: new label objects get new ids)."""
    out, schema = {}, dataset.get_field_schema(flat=True)
    for field in run_fields(dataset, key):
        if field.endswith(".id") or isinstance(schema[field], (fo.EmbeddedDocumentField, fo.ListField)):
            continue  # whole labels are compared below, without their ids
        values = dataset.values(field)
        out[field] = [np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for v in values]
    for field in (f"{key}_suggestions", f"{key}_labels", f"{key}_label"):
        out[field] = [None if v is None else {k: x for k, x in v.to_dict().items() if k != "_id"}
                      for v in dataset.values(field)]
    return out


def _close(a, b, tol=1e-6):
    """Equal, floats within ``tol``, recursively through lists and dicts."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    return a == b


def _strip_ids(d):
    if isinstance(d, dict):
        return {k: _strip_ids(v) for k, v in d.items() if k not in ("_id", "id")}
    if isinstance(d, list):
        return [_strip_ids(v) for v in d]
    return d


def test_rerun_is_idempotent(main):
    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    first, schema = _strip_ids(snapshot(dataset)), sorted(dataset.get_field_schema(flat=True))
    views = sorted(dataset.list_saved_views())
    results = dataset.load_run_results("vlsr", cache=False)

    again = FakeEncoder(images)
    run_vlsr(dataset, "gt", encoder=again, min_cluster_size=1)
    assert again.texts == [] and sorted(map(os.path.basename, again.path_calls[0])) == sorted(UNREADABLE)
    assert _strip_ids(snapshot(dataset)) == first
    assert sorted(dataset.get_field_schema(flat=True)) == schema
    assert sorted(dataset.list_saved_views()) == views and len(views) == 4
    assert dataset.list_runs() == ["vlsr"]
    second = dataset.load_run_results("vlsr", cache=False)
    assert second.labels == results.labels and second.vocabulary == results.vocabulary
    assert np.array_equal(second.label_embeddings, results.label_embeddings)
    assert len(stages.unreadable_images(dataset)) == 2


@pytest.mark.parametrize("chunk", [1, 3])
def test_results_do_not_depend_on_the_chunk_size(main, monkeypatch, chunk):
    """The stages read, compute and write a chunk of samples at a time (bounded memory); on a
    sorted, label-filtered view with unreadable and unlabelled samples, chunks of 1 or 3 samples
    give exactly what one chunk gives."""
    dataset, images = main
    view = dataset.sort_by("filepath", reverse=True).filter_labels(
        "gt", F("label") != "Lathe Information", only_matches=False)

    def run():
        run_vlsr(view, "gt", encoder=FakeEncoder(images), top_k=2, min_cluster_size=2)
        results = dataset.load_run_results("vlsr", cache=False)
        out = (_strip_ids(snapshot(dataset)), sorted(dataset.list_saved_views()),
               results.vocabulary, results.frequencies.tolist(), results.clusters.tolist(),
               [len(dataset.load_saved_view(v)) for v in sorted(dataset.list_saved_views())],
               sorted(stages.unreadable_images(dataset)))
        dataset.delete_run("vlsr")
        return out

    whole = run()
    monkeypatch.setattr(chunks, "CHUNK_SIZE", chunk)
    monkeypatch.setattr(chunks, "EMBED_CHUNK_SIZE", chunk)
    chunked = run()
    # scores may differ in the last bits: BLAS rounds a 1-row product unlike a 14-row one
    for field, values in whole[0].items():
        assert _close(chunked[0][field], values), field
    assert chunked[1:] == whole[1:]
    assert whole[2] == ["helmet", "Screwdrivers", "screwdriver", "drill", "helmit", "Helmets"]


def test_two_runs_side_by_side_and_deleting_one(main):
    dataset, images = main
    before = label_snapshot(dataset)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images, model_name="fake-L"), min_cluster_size=1)
    b32_images = {n: unit(v + 0.2 * axis(15)).astype(np.float32) for n, v in images.items()}
    run_vlsr(dataset, "gt", "b32", encoder=FakeEncoder(b32_images, model_name="fake-B"), min_cluster_size=1)

    assert sorted(dataset.list_runs()) == ["b32", "vlsr"]
    assert dataset.get_run_info("b32").config.model == "fake-B"
    assert dataset.get_run_info("vlsr").config.model == "fake-L"
    for key, vectors in (("vlsr", images), ("b32", b32_images)):
        embedded = by_name(dataset, sample_fields(key)["embedding"])
        for name, vector in vectors.items():
            assert np.array_equal(embedded[name], vector)
        sims = by_name(dataset, f"gt.classifications.{label_attributes(key)['similarity']}")
        assert sims["h1.png"] == [pytest.approx(float(vectors["h1.png"] @ label_vector("helmet")), abs=1e-6)]
    b32_fields = run_fields(dataset, "b32")
    assert len(b32_fields) == len(run_fields(dataset, "vlsr")) > 0
    b32_values = snapshot(dataset, "b32")
    b32_views = {v: view_labels(dataset, v) for v in saved_view_names("b32").values()}
    b32_results = dataset.load_run_results("b32", cache=False)

    dataset.delete_run("vlsr")
    dataset.reload()
    assert dataset.list_runs() == ["b32"]
    assert run_fields(dataset, "vlsr") == []
    assert not dataset.has_field("gt.classifications.vlsr_similarity")
    assert not any(v.startswith("vlsr-") for v in dataset.list_saved_views())
    assert all("vlsr_" not in k for c in dataset.values("gt.classifications") if c for x in c
               for k in x.to_dict())
    # the other run and the input are untouched
    assert run_fields(dataset, "b32") == b32_fields
    assert {k: v for k, v in snapshot(dataset, "b32").items() if k.startswith("b32")} == {
        k: v for k, v in b32_values.items() if k.startswith("b32")}
    assert {v: view_labels(dataset, v) for v in saved_view_names("b32").values()} == b32_views
    assert dataset.load_run_results("b32", cache=False).canonical == b32_results.canonical
    assert label_snapshot(dataset) == before


def test_same_key_on_another_label_field_is_refused(main):
    dataset, images = main
    dataset.clone_sample_field("gt", "other")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    with pytest.raises(VLSRError, match="'vlsr' was made on field 'gt'"):
        compute_embeddings(dataset, "other", encoder=FakeEncoder(images))
    with pytest.raises(VLSRError, match="another run key"):
        run_vlsr(dataset, "other", encoder=FakeEncoder(images))
    assert dataset.get_run_info("vlsr").config.label_field == "gt"
    assert not dataset.has_field("other.classifications.vlsr_similarity")
    # another key works
    run_vlsr(dataset, "other", "vlsr2", encoder=FakeEncoder(images), min_cluster_size=1)
    assert by_name(dataset, "vlsr2_label.label") == FINAL


def test_run_results_survive_a_reload(ran):
    dataset, images, _, _ = ran
    before = dataset.load_run_results("vlsr", cache=False)
    name = dataset.name
    fo.Dataset._instances.pop(name, None)  # forget the in-memory dataset: read it back from MongoDB
    reloaded = fo.load_dataset(name)
    assert reloaded is not dataset
    results = reloaded.load_run_results("vlsr", cache=False)
    assert results is not before and isinstance(results, VLSRResults)
    assert results.labels == VOCAB
    assert results.label_embeddings.dtype == np.float32
    assert np.array_equal(results.label_embeddings, np.stack([label_vector(l) for l in VOCAB]))
    assert results.vocabulary == before.vocabulary
    for array in ("frequencies", "dbscan_clusters", "clusters"):
        assert np.array_equal(getattr(results, array), getattr(before, array)), array
    assert results.representatives == before.representatives
    assert results.canonical == CANONICAL
    assert sorted(os.path.basename(f[1]) for f in stages.unreadable_images(dataset)) == sorted(UNREADABLE)
    config = reloaded.get_run_info("vlsr").config
    assert (config.label_field, config.model, config.top_k, config.min_cluster_size) == ("gt", "fake-clip", 3, 1)
    stored = by_name(reloaded, "vlsr_embedding")
    assert all(np.array_equal(stored[n], v) for n, v in images.items())


def test_two_stages_holding_the_config_at_once_keep_each_others_changes(ran):
    """Apply and a clustering (say, delegated) read the run's config when they start and store
    it as they go: each stores what it changed, not the other's fields as it read them."""
    from vlsr_core.fo.runs import save_config

    dataset = ran[0]
    first, second = (dataset.get_run_info("vlsr").config for _ in range(2))
    first.copies = ["reviewed"]
    save_config(dataset, "vlsr", first)
    second.stages = {**second.stages, "apply": "running"}
    save_config(dataset, "vlsr", second)
    second.stages = {k: v for k, v in second.stages.items() if k != "apply"}  # back as read
    save_config(dataset, "vlsr", second)  # (still a change: from what it last stored)
    config = dataset.get_run_info("vlsr").config
    assert config.copies == ["reviewed"] and "apply" not in config.stages
    fo.Dataset._instances.pop(dataset.name, None)  # and so it is in MongoDB
    dataset = fo.load_dataset(dataset.name)
    config = dataset.get_run_info("vlsr").config
    assert config.copies == ["reviewed"] and "apply" not in config.stages
    # within one key too: each marks its own stage, each adds the fields it creates
    first, second = (dataset.get_run_info("vlsr").config for _ in range(2))
    first.stages = {**first.stages, "apply": "running"}
    first.created_fields = [*first.created_fields, "reviewed"]
    save_config(dataset, "vlsr", first)
    second.stages = {**second.stages, "score": "running"}
    second.created_fields = [*second.created_fields, "vlsr_crop_ids"]
    save_config(dataset, "vlsr", second)
    first.stages = {k: v for k, v in first.stages.items() if k != "apply"}  # apply done
    save_config(dataset, "vlsr", first)
    config = dataset.get_run_info("vlsr").config
    assert config.stages["score"] == "running" and "apply" not in config.stages
    assert {"reviewed", "vlsr_crop_ids"} <= set(config.created_fields)


def test_a_stage_reads_the_run_as_stored_and_says_when_it_was_deleted_meanwhile(ran):
    """A notebook holds the dataset while the App (another process) changes or deletes the
    run: the notebook's stages read the run as it is now, not as they first read it."""
    import fiftyone.core.runs as fors

    from vlsr_core.fo.review import apply_review
    from vlsr_core.fo.runs import RunDeletedError, save_config

    dataset = ran[0]
    doc = fors.Run._get_run_doc(dataset, "vlsr")
    runs = doc._get_collection()  # written as another process writes: not through this dataset
    runs.update_one({"_id": doc.id}, {"$set": {"config.stages.cluster": "running"}})
    with pytest.raises(Exception, match="cluster and merge stopped part-way"):
        apply_review(dataset, "vlsr")
    config = dataset.get_run_info("vlsr").config
    runs.delete_one({"_id": doc.id})
    config.top_k = 4
    with pytest.raises(RunDeletedError, match="'vlsr' was deleted while this ran"):
        save_config(dataset, "vlsr", config)
    with pytest.raises(RunDeletedError, match="deleted .* since this dataset was loaded"):
        cluster_and_merge(dataset, "vlsr")


def test_a_run_renamed_by_fiftyone_is_refused_in_one_line_until_renamed_back(ran, tmp_path,
                                                                          caplog):
    """Audit: after dataset.rename_run("vlsr", "v2") the run's fields kept their vlsr_ names:
    the export ended in a traceback (no field 'v2_label'), the summary said no image was
    embedded, and a run of v2 embedded every image again beside the vlsr_ fields."""
    from vlsr_core.fo.export import export_run
    from vlsr_core.fo.review import apply_review
    from vlsr_core.fo.runs import delete_run
    from vlsr_core.fo.summary import summarize_run

    dataset, images = ran[0], ran[1]
    with caplog.at_level("WARNING"):
        dataset.rename_run("vlsr", "v2")  # (FiftyOne renames it whatever the run says)
    said = ("Run 'v2' was renamed from 'vlsr' (FiftyOne's rename_run), and its fields, label "
            "attributes and views keep the names of 'vlsr' (vlsr_label, ...), by which VLSR finds "
            "them: rename it back (in Python, dataset.rename_run('v2', 'vlsr')), or delete it")
    assert said in caplog.text
    for use in (lambda: export_run(dataset, str(tmp_path / "out"), "v2"),
                lambda: summarize_run(dataset, "v2"), lambda: apply_review(dataset, "v2"),
                lambda: score_labels(dataset, "v2"),
                lambda: run_vlsr(dataset, "gt", "v2", encoder=FakeEncoder(images))):
        with pytest.raises(Exception) as e:
            use()
        assert str(e.value) == said
    with pytest.raises(VLSRError, match=re.escape(said)):  # a new run under the old key
        run_vlsr(dataset, "gt", encoder=FakeEncoder(images))
    assert not dataset.has_field("v2_embedding") and not (tmp_path / "out").exists()

    caplog.clear()
    with caplog.at_level("WARNING"):
        dataset.rename_run("v2", "vlsr")  # back: no warning, and the run works
    assert "rename" not in caplog.text
    assert "Final labels" in summarize_run(dataset, "vlsr")
    dataset.rename_run("vlsr", "v3")
    delete_run(dataset, "v3")  # a renamed run can still be deleted, with all it made
    assert not [f for f in dataset.get_field_schema() if f.startswith("vlsr")]
    assert dataset.list_saved_views() == [] and dataset.list_runs() == []
    # a run with no field yet (its labels embedded only) is renamed as any run
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), images=False)
    caplog.clear()
    with caplog.at_level("WARNING"):
        dataset.rename_run("vlsr", "fresh")
    assert "rename" not in caplog.text
    compute_embeddings(dataset, "gt", "fresh", encoder=FakeEncoder(images))
    assert dataset.count("fresh_embedding") == 12


def test_a_view_saved_twice_at_once_is_kept_once_and_deleted_with_its_run(ran, monkeypatch):
    """Two processes running one stage at once each saved the run's views: two views of one
    name, of which deleting the run removed one, and the other then blocked the run key."""
    dataset = ran[0]
    name = saved_view_names("vlsr")["low_similarity"]
    view = dataset.load_saved_view(name)

    def saved_twice():  # as two processes race: neither sees the other's view to replace it
        with monkeypatch.context() as m:
            m.setattr(type(dataset), "_validate_saved_view_name",
                      lambda self, n, skip=None, overwrite=False: n)
            dataset.save_view(name, view, overwrite=True)
        dataset._doc.reload("saved_views")
        return [v.name for v in dataset._doc.get_saved_views()].count(name)

    def stored():  # the views of that name in the database
        dataset._doc.reload("saved_views")
        return [v.name for v in dataset._doc.get_saved_views()].count(name)

    assert saved_twice() == 2
    score_labels(dataset, "vlsr")  # saving it again keeps one
    assert stored() == 1
    # one saved by another process meanwhile, which this process has not read: FiftyOne's
    # overwrite replaces the copy it knows of, and the other stays beside the new one
    mine = dataset._get_saved_view_doc(name)
    other = type(mine)(**{f: getattr(mine, f) for f in (
        "dataset_id", "name", "slug", "description", "view_stages", "created_at",
        "last_modified_at")})
    other.save(upsert=True)
    dataset._doc._get_collection().update_one({"_id": dataset._doc.id},
                                              {"$push": {"saved_views": other.id}})
    assert stored() == 2
    dataset._doc.saved_views = [v for v in dataset._doc.saved_views if v.id != other.id]
    score_labels(dataset, "vlsr")
    assert stored() == 1
    assert saved_twice() == 2
    dataset.delete_run("vlsr")  # both go with the run, and the key can be used again
    assert not dataset.has_saved_view(name) and dataset.list_saved_views() == []
    run_vlsr(dataset, "gt", encoder=ran[2], top_k=3, min_cluster_size=1)
    assert dataset.has_saved_view(name)


def test_results_another_process_rewrote_are_read_again_or_refused_in_one_line(ran,
                                                                             monkeypatch):
    """Another process rewriting the results deletes the stored file and points the run at a
    new one: a process holding the dataset read the deleted file ('str' object has no
    attribute 'decode'), every time."""
    import subprocess
    import sys

    from fiftyone.operators.registry import OperatorRegistry
    from test_operators import URI, form

    from vlsr_core.fo.runs import RunBusyError, load_results

    dataset = ran[0]
    dataset.persistent = True  # (for the other process)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import fiftyone as fo; d = fo.load_dataset(%r); "
            "d.save_run_results('vlsr', d.load_run_results('vlsr', cache=False))" % dataset.name)

    def rewrite():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=root, env={**os.environ, "PYTHONPATH": root}, timeout=120)
        assert out.returncode == 0, out.stderr
        with pytest.raises(Exception):  # the premise: FiftyOne reads the file it knew of
            dataset.load_run_results("vlsr", cache=False)

    # a rewrite between two reads of one form: it opens as usual (it raised AttributeError)
    for name, before, shown in (("export_results", "check_target", "review_note"),
                                ("cluster_and_merge", "shards_input", "last_eps")):
        module = sys.modules[type(OperatorRegistry().get_operator(URI + name)).__module__]
        real_step = getattr(module, before)
        monkeypatch.setattr(module, before, lambda *a, _step=real_step, **k: (
            _step(*a, **k), rewrite())[0])
        assert shown in form(name, dataset, key="vlsr")["type"]["properties"]
        monkeypatch.undo()
    rewrite()
    assert load_results(dataset, "vlsr", wait=0).labels == VOCAB

    # a rewrite still under way (the file deleted, the run not yet pointed at the new one)
    doc = fors.Run._get_run_doc(dataset, "vlsr")
    real = type(dataset).load_run_results
    monkeypatch.setattr(type(doc.results), "get", lambda self, *a, **k: None)
    monkeypatch.setattr(type(dataset), "load_run_results", lambda self, key, **kwargs: (
        _ for _ in ()).throw(AttributeError("'str' object has no attribute 'decode'")))
    with pytest.raises(RunBusyError, match="its results could not be read .*another process is "
                                           "writing them"):
        load_results(dataset, "vlsr", tries=2, wait=0)
    monkeypatch.undo()
    # a failure that is no rewrite is raised as it is, at once
    monkeypatch.setattr(type(dataset), "load_run_results", lambda self, key, **kwargs: (
        _ for _ in ()).throw(ValueError("results of another FiftyOne version")))
    with pytest.raises(ValueError, match="^results of another FiftyOne version$"):
        load_results(dataset, "vlsr", wait=0)
    monkeypatch.undo()
    assert real is type(dataset).load_run_results


def test_saving_the_label_table_does_not_copy_it_into_python_numbers(dataset):
    """The run record of 5,000 labels x 512 (10 MB of float32) is serialised without turning
    the table into lists of Python floats (~80 MB), and reads back bit for bit."""
    import tracemalloc

    dataset.register_run("vlsr", VLSRRunConfig(label_field="gt"))
    table = np.random.default_rng(0).standard_normal((5000, 512)).astype(np.float32)
    results = VLSRResults(dataset, dataset.get_run_info("vlsr").config, "vlsr",
                          labels=[f"label {i}" for i in range(5000)], label_embeddings=table)
    tracemalloc.start()
    try:
        results.serialize()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the .npy bytes and their base64 text: 3.4x the table, measured; as Python lists: 11.4x
    assert peak < 5 * table.nbytes, peak / 1e6
    dataset.save_run_results("vlsr", results)
    assert np.array_equal(dataset.load_run_results("vlsr", cache=False).label_embeddings, table)


def test_stages_on_a_view_write_only_its_samples(main):
    dataset, images = main
    view = dataset.match(F("filepath").re_match(r".*/(h1|h3|s3|d1)\.png$"))
    encoder = FakeEncoder(images)
    compute_embeddings(view, "gt", encoder=encoder)
    assert sorted(map(os.path.basename, encoder.path_calls[0])) == ["d1.png", "h1.png", "h3.png", "s3.png"]
    assert sorted(encoder.texts) == ["Helmets", "drill", "helmet"]
    score_labels(view, top_k=2)
    cluster_and_merge(view, min_cluster_size=1)

    inside = {"h1.png", "h3.png", "s3.png", "d1.png"}
    for field in ("vlsr_embedding", "vlsr_suggestions", "vlsr_min_similarity", "vlsr_labels", "vlsr_label"):
        values = by_name(dataset, field)
        assert {n for n, v in values.items() if v is not None} == inside, field
    for attribute in ("vlsr_similarity", "vlsr_canonical", "vlsr_cluster"):
        values = by_name(dataset, f"gt.classifications.{attribute}")
        assert {n for n, v in values.items() if v and any(x is not None for x in v)} == inside
    assert by_name(dataset, "vlsr_label.label")["h3.png"] == "helmet"
    assert dataset.load_run_results("vlsr").vocabulary == ["helmet", "Helmets", "drill"]
    assert view_names(dataset, saved_view_names("vlsr")["changed"]) == {"h3.png"}

    # a random subset works the same way
    subset = dataset.take(3, seed=1)
    chosen = set(map(os.path.basename, subset.values("filepath")))
    compute_embeddings(subset, "gt", encoder=FakeEncoder(images), recompute=True)
    assert {n for n, v in by_name(dataset, "vlsr_embedding").items() if v is not None} == (
        inside | (chosen - set(UNREADABLE)))


def test_stages_on_a_label_filtered_view_write_to_the_right_labels(main):
    """In the App one often works on filtered labels; the hidden labels must stay untouched and
    the values must land on the labels they belong to."""
    dataset, images = main
    before = label_snapshot(dataset)
    view = dataset.filter_labels("gt", F("label") != "Lathe Information")
    encoder = FakeEncoder(images)
    run_vlsr(view, "gt", encoder=encoder, min_cluster_size=1)
    assert "Lathe Information" not in encoder.texts
    sims = by_name(dataset, "gt.classifications.vlsr_similarity")
    canon = by_name(dataset, "gt.classifications.vlsr_canonical")
    assert sims["h4.png"] == [None, pytest.approx(dot(images, "h4.png", "helmit"), abs=1e-6)]
    assert canon["h4.png"] == [None, "helmet"]
    assert sims["hs.png"] == pytest.approx(
        [dot(images, "hs.png", "screwdriver"), dot(images, "hs.png", "helmet")], abs=1e-6)
    assert by_name(dataset, "vlsr_labels.classifications.label")["h4.png"] == ["helmet"]
    assert label_snapshot(dataset) == before


OLD = "vlsr_core.runs."


def as_saved_before_the_move(dataset, key):
    """Rewrite the stored class paths of run ``key`` as the earlier module layout wrote them."""
    doc = fors.Run._get_run_doc(dataset, key)
    doc.config["cls"] = OLD + "VLSRRunConfig"
    results = json_util.loads(doc.results.read().decode())
    results["cls"] = OLD + "VLSRResults"
    doc.results.delete()
    doc.results.put(json_util.dumps(results).encode(), content_type="application/json")
    doc.save()
    dataset.reload()


def test_a_run_stored_under_the_old_class_paths_loads_and_runs_on(ran):
    dataset, _, _, _ = ran
    before = label_snapshot(dataset)
    as_saved_before_the_move(dataset, "vlsr")
    assert fors.Run._get_run_doc(dataset, "vlsr").config["cls"] == OLD + "VLSRRunConfig"
    config = dataset.get_run_info("vlsr").config
    assert isinstance(config, VLSRRunConfig) and config.top_k == 3
    results = dataset.load_run_results("vlsr", cache=False)
    assert isinstance(results, VLSRResults) and results.canonical == CANONICAL
    score_labels(dataset, top_k=2)  # the stored run goes on
    assert dataset.get_run_info("vlsr").config.params(ScoreParams).top_k == 2
    dataset.delete_run("vlsr")
    assert dataset.list_runs() == [] and not dataset.has_field("vlsr_label")
    assert label_snapshot(dataset) == before


def test_a_run_stored_before_merge_modes_reads_as_paper_mode_and_its_report_still_renders(ran):
    from vlsr_core.fo.summary import summarize_run

    dataset, _, _, _ = ran
    doc = fors.Run._get_run_doc(dataset, "vlsr")
    del doc.config["mode"]
    doc.config["eps"] = 0.07
    results = json_util.loads(doc.results.read().decode())
    for name in ("merge_steps", "lexical_groups", "distance_to_canonical"):
        results.pop(name)
    doc.results.delete()
    doc.results.put(json_util.dumps(results).encode(), content_type="application/json")
    doc.save()
    dataset.reload()

    params = dataset.get_run_info("vlsr").config.params(MergeParams)
    assert (params.mode, params.eps) == ("paper", 0.07)
    report = summarize_run(dataset, "vlsr")
    assert "**Vocabulary:** 7 labels → 4 canonical labels" in report
    cluster_and_merge(dataset)  # clustered again: the recommended mode, recorded
    assert dataset.get_run_info("vlsr").config.mode == "recommended"
    report = summarize_run(dataset, "vlsr")
    assert "**Merging (recommended mode):** 7 labels → 4 after lexical grouping" in report
    # the typo join is listed for a look (a record made before lists nothing: above)
    assert "typo: `helmet` / `helmit`" in report and "Joins worth a look" in report


def test_a_stage_stopped_part_way_is_marked_said_and_refused_for_export_and_apply(main, monkeypatch, tmp_path):
    """A crash in the middle of cluster and merge leaves mixed results: the run record says so,
    the summary says so, the export and the review's apply refuse, and running the stage again
    completes it."""
    from vlsr_core.fo.export import ExportError, export_run
    from vlsr_core.fo.review import ReviewError, apply_review
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    monkeypatch.setattr(chunks, "CHUNK_SIZE", 3)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert dataset.get_run_info("vlsr").config.stages == {"score": "complete", "cluster": "complete"}

    real = cluster.final_labels
    calls = []

    def crash_on_the_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(cluster, "final_labels", crash_on_the_third_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        cluster_and_merge(dataset, mode="paper", eps=0.001, min_cluster_size=1)
    config = dataset.get_run_info("vlsr").config
    assert config.stages["cluster"] == "running" and config.eps == 0.001
    said = summarize_run(dataset, "vlsr")
    assert "**Incomplete:** *cluster and merge* stopped part-way" in said
    assert "Changed by hand" not in said  # (audit: a killed Apply's part "changed by hand")
    with pytest.raises(ExportError, match="cluster and merge stopped part-way"):
        export_run(dataset, str(tmp_path / "out"))
    with pytest.raises(ReviewError, match="cluster and merge stopped part-way"):
        apply_review(dataset)

    monkeypatch.setattr(cluster, "final_labels", real)
    cluster_and_merge(dataset, mode="paper", eps=0.001, min_cluster_size=1)
    assert dataset.get_run_info("vlsr").config.stages["cluster"] == "complete"
    assert "Incomplete" not in summarize_run(dataset, "vlsr")
    assert by_name(dataset, "vlsr_label.label")["h3.png"] == "Helmets"  # every chunk redone
    assert export_run(dataset, str(tmp_path / "out"))


def test_the_summary_counts_images_not_embedded_yet(main, monkeypatch):
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    monkeypatch.setattr(embed, "WRITE_EVERY", 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images, batch_size=2, fail_after=2))
    assert f"**Not embedded yet:** {len(dataset) - 4} images" in summarize_run(dataset, "vlsr")


def test_the_summary_of_a_run_stopped_before_its_labels_were_embedded(main, monkeypatch):
    """Ctrl-C while the labels are embedded: the run is registered, nothing is stored yet."""
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main

    def interrupted(self, texts, progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(FakeEncoder, "embed_texts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    report = summarize_run(dataset, "vlsr")
    assert f"**Not embedded yet:** {len(dataset)} images" in report
    assert "**Labels embedded:** none yet; run again" in report


def test_the_summary_says_when_the_labels_on_the_samples_are_no_longer_those_clustered(ran):
    """Samples deleted and added after clustering: the label map lists a label no sample has,
    and a new label has no final label; the summary says so until the run is clustered again
    (it said the review was all applied, and export wrote the stale label map)."""
    from vlsr_core.fo.summary import summarize_run

    dataset, images, encoder, _ = ran
    assert "Changed since clustering" not in summarize_run(dataset, "vlsr")
    dataset.delete_samples(dataset.filter_labels("gt", F("label") == "Lathe Information"))
    sample = dataset.first()
    sample["gt"].classifications.append(fo.Classification(label="ladder"))
    sample.save()
    assert ("**Changed since clustering:** 2 labels of the label map on no sample now "
            "(`Lathe Information`, `helmit`); 1 label on samples that were not clustered (`ladder`): "
            "the label map has none of them (what their samples show is of the labels before, or "
            "nothing). Samples were deleted, added or relabelled since") in (
        summarize_run(dataset, "vlsr"))
    sample["gt"].classifications.pop()
    sample.save()
    cluster_and_merge(dataset, "vlsr", min_cluster_size=1)
    assert "Changed since clustering" not in summarize_run(dataset, "vlsr")
    # a run made on an unsaved view (which cannot be found again): its samples are unknown
    run_vlsr(dataset.match(F("filepath").ends_with("d1.png")), "gt", "part", encoder=encoder,
             min_cluster_size=1)
    assert "Changed since clustering" not in summarize_run(dataset, "part")


def test_deleting_a_run_that_is_not_there_says_which_runs_are(ran):
    """Audit (README walk): FiftyOne's bare "Dataset has no run key 'vlsr2'"."""
    from vlsr_core.fo.runs import delete_run

    dataset = ran[0]
    with pytest.raises(ValueError, match=r"^No VLSR run 'vlsr2' on this dataset \(runs: 'vlsr'\)$"):
        delete_run(dataset, "vlsr2")
    assert dataset.has_run("vlsr")

"""Nothing of the user's is written over or deleted: a run refuses to start where one of its
outputs would land on the input field or on any field, label attribute or saved view it did not
create, and deleting a run removes exactly what it created."""

import json
import re
import subprocess
import sys

import fiftyone as fo
import pymongo
import pytest

from vlsr_core.fo.runs import delete_run, output_problem, sample_fields, saved_view_names
from vlsr_core.fo.stages import VLSRError, compute_embeddings, run_vlsr, score_labels

from fake_clip import FakeEncoder, build, by_name, label_snapshot


def samples_passes(dataset, monkeypatch):
    """The updates of every sample of ``dataset`` made from now on (the filters of its sample
    collection's ``update_many`` calls), as a list filled as they happen."""
    passes, update_many = [], pymongo.collection.Collection.update_many

    def counted(collection, where, *args, **kwargs):
        if collection.name == dataset._sample_collection_name and not where:
            passes.append(where)
        return update_many(collection, where, *args, **kwargs)

    monkeypatch.setattr(pymongo.collection.Collection, "update_many", counted)
    return passes


def field_values(dataset, field):
    return [v.to_dict() if hasattr(v, "to_dict") else v for v in dataset.values(field)]


@pytest.mark.parametrize("suffix", sorted(set(sample_fields("gt").values())))
def test_a_label_field_named_like_an_output_of_the_run_is_refused(dataset, tmp_path, suffix):
    """--label-field gt_labels --key gt once overwrote the input with the output, and deleting
    the run deleted the input: no output name may equal the input field."""
    field = suffix  # e.g. "gt_labels", "gt_label", "gt_embedding"
    images = build(dataset, tmp_path / "images", field=field)
    before = label_snapshot(dataset, field)
    with pytest.raises(VLSRError, match=f"label field '{field}'.*output of run 'gt'"):
        compute_embeddings(dataset, field, key="gt", encoder=FakeEncoder(images))
    assert not dataset.has_run("gt")
    assert label_snapshot(dataset, field) == before
    # with another key the same field is an input like any other
    run_vlsr(dataset, field, "clean", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.delete_run("clean")
    assert label_snapshot(dataset, field) == before


@pytest.mark.slow
def test_from_the_cli_the_clash_is_one_line_and_exit_2(dataset, tmp_path, tiny_clip):
    build(dataset, tmp_path / "images", field="gt_labels")
    dataset.persistent = True
    before = label_snapshot(dataset, "gt_labels")
    done = subprocess.run(  # (found before the model loads)
        [sys.executable, "-m", "vlsr_core.cli", "run", "--dataset", dataset.name,
         "--label-field", "gt_labels", "--key", "gt", "--model", tiny_clip],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    errors = [l for l in done.stderr.splitlines() if l.strip()]
    assert len(errors) == 1 and "gt_labels" in errors[0] and "another run key" in errors[0]
    dataset.reload()
    assert not dataset.has_run("gt")
    assert label_snapshot(dataset, "gt_labels") == before


def test_a_users_own_field_with_an_output_name_is_neither_written_nor_deleted(main):
    dataset, images = main
    dataset.add_sample_field("vlsr_label", fo.StringField)
    dataset.set_values("vlsr_label", [f"mine {i}" for i in range(len(dataset))])
    with pytest.raises(VLSRError, match="'vlsr_label' exists and was not created by run 'vlsr'"):
        run_vlsr(dataset, "gt", encoder=FakeEncoder(images))
    assert not dataset.has_run("vlsr")
    assert dataset.values("vlsr_label") == [f"mine {i}" for i in range(len(dataset))]


def test_a_runs_fields_cloned_without_the_run_are_said_to_be_so(main, tmp_path):
    """FiftyOne's clone of a view copies the run's fields, not the run: the key was refused as
    if the fields were the user's own."""
    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    clone = dataset.limit(4).clone()
    try:
        assert clone.list_runs() == [] and clone.has_field("vlsr_label")
        with pytest.raises(VLSRError, match="choose another run key \\(the fields of a run "
                                            "'vlsr' seem copied here without the run"):
            run_vlsr(clone, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
        run_vlsr(clone, "gt", key="again", encoder=FakeEncoder(images), min_cluster_size=1)
    finally:
        clone.delete()


def test_a_field_created_between_stages_stops_the_next_stage(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    dataset.add_sample_field("vlsr_best_gap", fo.StringField)
    dataset.set_values("vlsr_best_gap", ["keep"] * len(dataset))
    with pytest.raises(VLSRError, match="'vlsr_best_gap' exists and was not created"):
        score_labels(dataset)
    dataset.delete_run("vlsr")
    assert dataset.values("vlsr_best_gap") == ["keep"] * len(dataset)
    assert not dataset.has_field("vlsr_embedding")


def test_a_label_attribute_of_the_users_with_an_output_name_is_refused(main):
    dataset, images = main
    sample = dataset.match({"filepath": {"$regex": "h1.png$"}}).first()
    sample.gt.classifications[0]["vlsr_canonical"] = "my own note"  # undeclared attribute
    sample.save()
    with pytest.raises(VLSRError, match="'gt.classifications.vlsr_canonical' exists"):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert not dataset.has_run("vlsr")
    # the same labels under another key: the note stays where it is, through the run's deletion
    run_vlsr(dataset, "gt", "clean", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.delete_run("clean")
    assert by_name(dataset, "gt.classifications.vlsr_canonical")["h1.png"] == ["my own note"]


def test_a_users_saved_view_with_a_review_view_name_is_kept(main):
    dataset, images = main
    name = saved_view_names("vlsr")["low_similarity"]
    dataset.save_view(name, dataset.limit(2), description="mine")
    with pytest.raises(VLSRError, match=f"saved view '{name}'"):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert len(dataset.load_saved_view(name)) == 2


def test_a_users_saved_view_of_a_name_that_reads_as_a_review_views_is_kept(main):
    """FiftyOne saves a view over any view of the same slug: a run deleted "K2 Low Similarity",
    another's view, to save its "k2-low-similarity"."""
    dataset, images = main
    dataset.save_view("Vlsr Low Similarity", dataset.limit(2), description="my picks")
    with pytest.raises(VLSRError, match="'Vlsr Low Similarity' exists, which FiftyOne cannot "
                                        "tell apart from run 'vlsr'.s view 'vlsr-low-simil"):
        run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert len(dataset.load_saved_view("Vlsr Low Similarity")) == 2
    assert dataset.list_runs() == []


def test_run_keys_apart_only_by_case_keep_each_others_saved_views(main):
    dataset, images = main
    run_vlsr(dataset, "gt", key="cb", encoder=FakeEncoder(images), min_cluster_size=1)
    views = dataset.list_saved_views()
    with pytest.raises(VLSRError, match="'cb-low-similarity' exists, which FiftyOne cannot tell"):
        run_vlsr(dataset, "gt", key="CB", encoder=FakeEncoder(images), min_cluster_size=1)
    assert dataset.list_saved_views() == views and dataset.list_runs() == ["cb"]


@pytest.mark.parametrize("first, second", [("vlsr", "vlsr_crop"), ("vlsr_crop", "vlsr")])
def test_a_run_key_that_names_fields_as_another_run_does_is_refused(main, first, second):
    """Run "vlsr_crop" writes "vlsr_crop_similarity", which is run "vlsr"'s crop score: the
    export of one left out the other's score as its own, and each blocked the other."""
    dataset, images = main
    dataset.clone_sample_field("gt", "gt2")  # (the same labels, before any run wrote on them)
    run_vlsr(dataset, "gt", key=first, encoder=FakeEncoder(images), min_cluster_size=1)
    with pytest.raises(VLSRError, match=f"The run key '{second}' names fields as run '{first}' "
                                        "does \\('vlsr_crop_similarity'\\)"):
        compute_embeddings(dataset, "gt", key=second, encoder=FakeEncoder(images))
    assert dataset.list_runs() == [first]
    # keys whose names meet only on different paths are fine: "vlsr_min"'s label attribute
    # "vlsr_min_crop_similarity" is not run "vlsr"'s sample field of that name; and on other
    # labels, "vlsr_crop"'s scores are not "vlsr"'s crop scores
    for key, field in (("vlsr_min", "gt"), ("vlsr_crop", "gt2"), ("vlsr", "gt2")):
        if key != first:
            compute_embeddings(dataset, field, key=key, encoder=FakeEncoder(images))


@pytest.mark.parametrize("key", ["", "a.b", "my run", "1st", "_x", None])
def test_a_run_key_that_cannot_name_fields_is_refused(main, key):
    dataset, images = main
    with pytest.raises(VLSRError, match="cannot name fields"):
        compute_embeddings(dataset, "gt", key=key, encoder=FakeEncoder(images))
    assert dataset.list_runs() == []


def test_a_renamed_input_field_is_said_and_renamed_back_the_run_goes_on(main):
    """The summary asked to cluster again, which refused; a run on the new name was refused
    with "delete that run first", which left the run's attributes on the renamed labels."""
    from vlsr_core.fo.runs import what_goes
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    before = label_snapshot(dataset)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.rename_sample_field("gt", "labels")
    gone = "input field 'gt' is no longer in the dataset (renamed or deleted): if you renamed it"
    summary = summarize_run(dataset, "vlsr")
    assert gone in summary and "Changed since" not in summary
    # (audit: "10 differ from every label they had": of a field that is gone)
    assert "**Final labels:**" in summary and "differ from every label" not in summary
    assert gone in what_goes(dataset, "vlsr")
    with pytest.raises(VLSRError, match=re.escape(f"not 'labels'; its {gone}")):
        compute_embeddings(dataset, "labels", encoder=FakeEncoder(images))
    dataset.rename_sample_field("labels", "gt")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    delete_run(dataset, "vlsr")
    assert label_snapshot(dataset) == before


def test_deleting_a_run_removes_exactly_what_it_created(main, monkeypatch):
    dataset, images = main
    before = label_snapshot(dataset)
    schema = set(dataset.get_field_schema(flat=True))
    views = set(dataset.list_saved_views())
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    config = dataset.get_run_info("vlsr").config
    created = set(config.created_fields)
    assert set(dataset.get_field_schema(flat=True)) - schema <= created | {
        # the schema also lists the embedded documents' own subfields of a created field
        f for f in dataset.get_field_schema(flat=True) if f.split(".")[0] in created}
    assert {"vlsr_embedding", "vlsr_label", "gt.classifications.vlsr_similarity"} <= created
    assert set(config.created_views) == set(saved_view_names("vlsr").values())
    # the grid ticks the input and the final label, not the suggestions and canonical label sets
    active = dataset.app_config.active_fields
    assert not active.exclude and active.paths == ["gt", "vlsr_label"]
    passes = samples_passes(dataset, monkeypatch)
    dataset.delete_run("vlsr")
    # every field goes in one pass over the samples (a pass a field: 99 s at 200,000 samples)
    assert len(passes) == 1 and len(created) > 5
    dataset.reload()
    assert set(dataset.get_field_schema(flat=True)) == schema
    assert dataset.app_config.active_fields is None  # (FiftyOne's default, as before the run)
    assert set(dataset.list_saved_views()) == views
    assert label_snapshot(dataset) == before


@pytest.mark.parametrize("changed", [False, True])
def test_deleting_a_run_gives_back_the_default_ticks_unless_they_changed(main, changed):
    """A label field added after the run (predictions, say) was no longer ticked by default
    once the run was deleted: the run had given the dataset a list of its own (audit)."""
    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.add_sample_field("predictions", fo.EmbeddedDocumentField,
                             embedded_doc_type=fo.Classification)
    if changed:  # the curator's choice since: the predictions ticked too
        dataset.app_config.active_fields.paths += ["predictions"]
        dataset.save()
    delete_run(dataset, "vlsr")
    dataset.reload()
    active = dataset.app_config.active_fields
    if changed:  # (the run's fields gone from it)
        assert not active.exclude and active.paths == ["gt", "predictions"]
    else:
        assert active is None
        assert fo.DatasetAppConfig.default_active_fields(dataset).paths == ["gt", "predictions"]


@pytest.mark.parametrize("exclude", [False, True])
def test_the_fields_a_dataset_ticks_in_the_grid_stay_ticked(main, exclude):
    dataset, images = main
    dataset.add_sample_field("mine", fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    dataset.app_config.active_fields = fo.ActiveFields(exclude=exclude, paths=["mine"])
    dataset.save()  # the curator's choice: only "mine" ticked, or all but "mine"
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.reload()
    active = dataset.app_config.active_fields
    assert active.exclude == exclude
    assert active.paths == (["mine", "vlsr_suggestions", "vlsr_labels"] if exclude else
                            ["mine", "vlsr_label"])


def test_a_run_recorded_before_vlsr_kept_its_fields_still_loads_and_deletes(main):
    """Stored configs of earlier versions have no created_fields: their existing outputs count
    as theirs, as before."""
    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    doc = dataset._doc.runs["vlsr"]
    info = dataset.get_run_info("vlsr")
    config = json.loads(info.config.to_str())
    config.pop("created_fields"), config.pop("created_views")
    from vlsr_core.fo.runs import VLSRRunConfig

    dataset.update_run_config("vlsr", VLSRRunConfig.from_dict(config))
    assert dataset.get_run_info("vlsr").config.created_fields is None
    assert doc is not None
    score_labels(dataset)  # a legacy run can still be continued
    dataset.delete_run("vlsr")
    assert not dataset.has_field("vlsr_label")
    assert not dataset.has_field("gt.classifications.vlsr_similarity")
    assert output_problem(dataset, "vlsr", "gt") is None


def test_an_input_field_made_another_type_and_run_again_leaves_no_deleted_note(main):
    """Audit: after the labels of ``gt`` became one Classification a sample and the run ran
    again, the summary said for good that the attributes on the old Classifications "were
    deleted after the run wrote them: run again to write them back"."""
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    first = [c.classifications[0].label if c and c.classifications else None
             for c in dataset.values("gt")]
    dataset.delete_sample_field("gt")
    dataset.set_values("gt", [fo.Classification(label=l) if l else None for l in first])
    assert "**Deleted:**" not in summarize_run(dataset, "vlsr")  # (a changed input: said so)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert dataset.count("gt.vlsr_similarity") > 0
    assert "**Deleted:**" not in summarize_run(dataset, "vlsr")
    dataset.delete_sample_field("gt.vlsr_similarity")  # a deletion of the run's is still said
    assert ("**Deleted:** Field 'gt.vlsr_similarity' was deleted after the run wrote it"
            in summarize_run(dataset, "vlsr"))

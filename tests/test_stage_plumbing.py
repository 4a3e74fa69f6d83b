"""The stages with a tiny random CLIP loaded through the real code path: shapes, batching, plumbing.

Behaviour is judged by what the stages leave in the database, on the fake CLIP of
:mod:`fake_clip`, whose right answers are known.
"""

import re

import fiftyone as fo
import numpy as np
import pytest
from bson import ObjectId
from fiftyone import ViewField as F

from vlsr_core.fo import chunks
from vlsr_core.fo.runs import sample_fields, saved_view_names
from vlsr_core.fo.stages import cluster_and_merge, run_vlsr

from fake_clip import (
    UNREADABLE,
    VOCAB,
    FakeEncoder,
    by_name,
)

# ---------------------------------------------------------------------------------------------
# The real encoder, for the plumbing
# ---------------------------------------------------------------------------------------------


def test_end_to_end_with_a_tiny_random_clip(main, tmp_path):
    from vlsr_core.model.random_clip import save_random_clip

    dataset, images = main
    model = save_random_clip(str(tmp_path / "clip"))
    stages_seen = set()
    report = run_vlsr(dataset, "gt", model=model, device="cpu", num_workers=0, batch_size=5,
                      top_k=3, min_cluster_size=1, progress=lambda s, f: stages_seen.add(s))
    assert stages_seen == {"embed", "score", "cluster"}
    assert (report.n_embedded, len(report.failures), report.n_labels_embedded) == (12, 2, len(VOCAB))

    fields = sample_fields("vlsr")
    embeddings = by_name(dataset, fields["embedding"])
    readable = [n for n in embeddings if n not in UNREADABLE]
    for name in readable:
        assert embeddings[name].shape == (16,)  # the tiny CLIP's projection_dim
        assert np.linalg.norm(embeddings[name]) == pytest.approx(1.0, abs=1e-4)
    assert by_name(dataset, fields["error"]) == {n: UNREADABLE.get(n) for n in embeddings}

    sims = by_name(dataset, "gt.classifications.vlsr_similarity")
    labels = by_name(dataset, "gt.classifications.label")
    for name in readable:
        if labels[name] is None:
            assert sims[name] is None
            continue
        assert len(sims[name]) == len(labels[name])
        assert all(isinstance(s, float) and -1.0001 <= s <= 1.0001 for s in sims[name])
    assert all(len(s) == 3 for n, s in by_name(dataset, "vlsr_suggestions.classifications.label").items()
               if n in readable)
    final = by_name(dataset, "vlsr_label.label")
    assert {n for n, l in final.items() if l is not None} == {
        n for n in readable if labels[n]}
    label_map = dataset.load_run_results("vlsr").canonical
    assert set(label_map) == set(VOCAB)
    for name in readable:
        if final[name]:
            assert final[name] in {label_map[l] for l in labels[name]}
    config = dataset.get_run_info("vlsr").config
    assert config.model == model and config.batch_size == 5
    assert set(saved_view_names("vlsr").values()) <= set(dataset.list_saved_views())


@pytest.mark.parametrize("make_view", [
    lambda ds: ds,
    lambda ds: ds.sort_by("filepath", reverse=True),
    lambda ds: ds.match(F("filepath").re_match(r".*/[hs].*")).sort_by("filepath"),
])
def test_sample_ids_streamed_in_pages_are_the_views_ids_in_order(main, make_view, monkeypatch):
    dataset, _ = main
    view = make_view(dataset)
    expected = [str(i) for i in view.values("_id")]
    for page in (1, 3, 100):
        monkeypatch.setattr(chunks, "ID_PAGE", page)
        ids = chunks.sample_ids(view)
        assert [str(ObjectId(i.tobytes())) for i in ids] == expected
    read = [i for ids, _ in chunks.iter_chunks(view, ["filepath"], size=4) for i in ids]
    assert read == expected


def test_object_ids_ending_in_zero_bytes_survive():
    oids = [ObjectId(b"\x01" * 11 + b"\x00"), ObjectId(b"\x00" * 12)]
    ids = chunks.packed_ids(oids)
    assert [ObjectId(i.tobytes()) for i in ids] == oids


def test_stored_vectors_read_as_fiftyone_reads_them(dataset):
    """The stages decode the image embeddings from their stored bytes themselves (FiftyOne
    parses each array's header: 1.7x the time): every vector as FiftyOne gives it, whatever its
    type or length, NaN where there is none."""
    import fiftyone as fo

    rng = np.random.default_rng(0)
    values = [rng.normal(size=6).astype(np.float32), None, rng.normal(size=6),  # float64
              rng.normal(size=6).astype(np.float16), [1, 2, 3, 4, 5, 6],
              rng.normal(size=6).astype(np.float32)]
    dataset.add_samples([fo.Sample(filepath=f"/{i}.png") for i in range(len(values))])
    dataset.add_sample_field("v", fo.VectorField)
    dataset.set_values("v", values)
    [(_, (stored,))] = chunks.iter_chunks(dataset, [chunks.stored("v")])
    assert sum(isinstance(v, bytes) for v in stored) == 5
    expected = np.float32([np.full(6, np.nan) if v is None else v for v in dataset.values("v")])
    np.testing.assert_array_equal(chunks.vectors(stored), expected)
    np.testing.assert_array_equal(chunks.vectors(stored, 6), expected)
    assert chunks.vectors([None, None], 6).shape == (2, 6)
    np.testing.assert_array_equal(chunks.vectors([None, [1, 2]]), [[np.nan, np.nan], [1, 2]])


def test_values_land_on_their_labels_when_the_view_filters_on_what_is_written(main):
    """Label values are written by label id: a view that filters labels on the very attributes
    being written (canonical first, then cluster) cannot shift them onto other labels."""
    dataset, images = main
    # a run made on filtered labels (one made on whole labels refuses views that filter them)
    kept = dataset.filter_labels("gt", F("label") != "Lathe Information", only_matches=False)
    run_vlsr(kept, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    view = kept.filter_labels("gt", F("vlsr_canonical") != F("label"), only_matches=False)
    shown = {i for ids in view.values("gt.classifications.id") for i in ids or []}
    assert 0 < len(shown) < dataset.count("gt.classifications")
    cluster_and_merge(view, min_cluster_size=1)
    results = dataset.load_run_results("vlsr", cache=False)
    cluster = dict(zip(results.vocabulary, results.clusters.tolist()))
    written = 0
    for ids, labels, canon, clusters in zip(*dataset.values([
        "gt.classifications.id", "gt.classifications.label", "gt.classifications.vlsr_canonical",
        "gt.classifications.vlsr_cluster",
    ])):
        for i, l, a, c in zip(ids or [], labels or [], canon or [], clusters or []):
            if i in shown:
                assert (a, c) == (results.canonical[l], cluster[l]), l
                written += 1
    assert written == len(shown)


def test_a_view_that_hides_fields_is_run_on_with_every_field(main):
    """``select_fields`` and ``exclude_fields`` (the App's field visibility adds one to an
    operator's view) hide the run's own fields; a run on such a view crashed after embedding,
    and so did the summary of a run made on a saved one."""
    from vlsr_core.fo.review import add_edit, apply_review
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    run_vlsr(dataset, "gt", key="whole", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.save_view("mine", dataset.select_fields("gt"))
    run_vlsr(dataset.load_saved_view("mine"), "gt", encoder=FakeEncoder(images),
             min_cluster_size=1)
    assert dataset.values("vlsr_label.label") == dataset.values("whole_label.label")
    assert dataset.values("gt.classifications.vlsr_canonical") == dataset.values(
        "gt.classifications.whole_canonical")
    assert dataset.get_run_info("vlsr").config.collection == "mine"  # (the view's name kept)
    assert "(saved view `mine`)" in summarize_run(dataset, "vlsr")
    add_edit(dataset, "vlsr", "rename", "drill", "power drill")
    apply_review(dataset.exclude_fields(["vlsr_label", "vlsr_labels"]), "vlsr")
    assert "power drill" in dataset.distinct("vlsr_label.label")


def test_a_view_that_selects_labels_is_refused_before_it_wipes_the_final_labels(main):
    """``select_labels(fields="vlsr_label")`` (the final labels a curator tagged) hides the
    input field whole: Apply through it wiped those samples' final labels and scoring their
    scores, both reporting success. Without ``fields`` the run's output fields are filtered
    too, and a new run wrote no ``vlsr_labels``. Such views are refused; an ``exclude_labels``
    of the input alone is a filter of its labels, as ``filter_labels`` is."""
    from vlsr_core.fo.review import apply_review
    from vlsr_core.fo.stages import VLSRError, compute_embeddings, score_labels

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    finals = dataset.values("vlsr_label.label")
    scores = dataset.values("vlsr_min_similarity")
    dataset.limit(5).tag_labels("bad", label_fields="vlsr_label")
    tagged = dataset.select_labels(tags="bad", fields="vlsr_label")
    for stage in (apply_review, score_labels, cluster_and_merge):
        with pytest.raises(VLSRError, match=r"The view selects labels \(SelectLabels\).* "
                           r"Target the dataset, or a view .* \(in the App's sidebar, \"Show samples with "
                           r"\.\.\.\" rather than \"Select labels with \.\.\.\"; in Python, "
                           r"match_labels\)"):
            stage(tagged, "vlsr")
    # a view that filters or edits the labels of a field a run writes: Apply wrote part of them
    # ("12 changed") and left the rest as they were
    gt_label = dataset.exists("vlsr_labels").first().gt.classifications[0].id
    for view, words in [
            (dataset.exclude_labels(tags="bad", fields="vlsr_label"),
             r"filters or edits the labels of 'vlsr_label' \(ExcludeLabels\), a field that run "
             "'vlsr' writes"),
            (dataset.filter_labels("vlsr_labels", F("label") == "zzz", only_matches=False),
             r"filters or edits the labels of 'vlsr_labels' \(FilterLabels\)"),
            (dataset.limit_labels("vlsr_labels", 0), r"'vlsr_labels' \(LimitLabels\)"),
            (dataset.exclude_labels(ids=[gt_label]),  # no fields: every label field
             # (audit: the advice, followed for this run, was refused as a filter of its labels)
             r"excludes labels \(ExcludeLabels\) of every label field.* For a new run, give "
             r"exclude_labels fields='gt'.* out of a new run, filter_labels on 'gt' \(a run made "
             r"on them whole refuses such a view\)"),
            (dataset.set_field("gt.classifications", F("gt.classifications")[:1]),
             r"edits the labels of 'gt' \(SetField\), and VLSR reads and writes labels as "
             r"stored: clone the view"),
            (dataset.map_labels("gt", {"helmit": "helmet"}), r"'gt' \(MapLabels\)")]:
        with pytest.raises(VLSRError, match=words):
            apply_review(view, "vlsr")
    # the fields of another run, and other label fields, are not this run's to refuse
    dataset.clone_sample_field("gt", "predictions")
    run_vlsr(dataset, "predictions", key="pred", encoder=FakeEncoder(images), min_cluster_size=1)
    apply_review(dataset.filter_labels("vlsr_label", F("label") != "zzz", only_matches=False),
                 "pred")
    apply_review(dataset.exclude_labels(tags="nope", fields="predictions"), "vlsr")
    assert dataset.values("vlsr_label.label") == finals
    assert dataset.values("vlsr_label.label") == finals
    assert dataset.values("vlsr_min_similarity") == scores
    assert dataset.count_label_tags("vlsr_label") == {"bad": 5}
    apply_review(dataset.match_labels(tags="bad", fields="vlsr_label"), "vlsr")  # the advice
    assert dataset.values("vlsr_label.label") == finals

    dataset.tag_labels("ok", label_fields="gt")
    for stage in (lambda v: run_vlsr(v, "gt", key="new", encoder=FakeEncoder(images)),
                  lambda v: compute_embeddings(v, "gt", key="new", encoder=FakeEncoder(images))):
        with pytest.raises(VLSRError, match="The view selects labels"):
            stage(dataset.select_labels(tags="ok"))
    assert not dataset.has_run("new")
    one = dataset.exists("vlsr_labels").first().gt.classifications[0].id
    run_vlsr(dataset.exclude_labels(ids=[one], fields="gt"), "gt", key="new",
             encoder=FakeEncoder(images), min_cluster_size=1)
    assert dataset.count("new_labels.classifications") == dataset.count(
        "vlsr_labels.classifications") - 1


def test_a_second_view_run_under_one_key_says_the_first_ones_samples_keep_the_old_map(
        main, caplog):
    """Two unsaved views run one after the other under one key: the label map was made again
    from the second's labels alone, while the first's samples kept the old one's final labels,
    without a word (the App's forms warn of a narrowed target; the API said nothing)."""
    dataset, images = main
    ids = dataset.values("id")
    first, second = dataset.select(ids[:7]), dataset.select(ids[7:])
    for view in (first, first, dataset, dataset):  # a rerun, a widening: nothing to say
        run_vlsr(view, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert "outside this view" not in caplog.text
    run_vlsr(second, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    n = len(first.exists("vlsr_label"))
    warned = [r.getMessage() for r in caplog.records if "outside this view" in r.getMessage()]
    assert warned == [f"Run 'vlsr' gave final labels to {n} samples outside this view: its "
                      "label map is made again from the view's labels alone, and those samples "
                      "keep the old one's until the run is scored and clustered on the dataset "
                      "(or a view holding them), or an Apply on them writes the new one's. Use "
                      "another run key to keep the two apart"]


def test_an_image_embedding_of_another_size_is_said_with_what_to_do(main):
    """Samples merged in from a dataset embedded by another model keep that model's embeddings:
    of another size, scoring failed with numpy's broadcast error."""
    from vlsr_core.fo.stages import VLSRError, score_labels

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    sample = dataset.exists("vlsr_embedding").first()
    sample["vlsr_embedding"] = np.ones(3, dtype=np.float32)
    sample.save()
    with pytest.raises(VLSRError, match=f"Sample {sample.id} holds an image embedding of 3 "
                                        "values where the model of run 'vlsr' gives 16 .*--recompute"):
        score_labels(dataset)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1, recompute=True)
    assert len(dataset[sample.id]["vlsr_embedding"]) == 16


def test_the_same_model_at_another_path_keeps_the_embeddings(main, tmp_path, monkeypatch):
    """A local model is recognised by what it is: a moved copy, given by a relative path,
    keeps every embedding; other weights of the same architecture embed everything again."""
    import shutil

    from vlsr_core.fo.stages import compute_embeddings
    from vlsr_core.model.random_clip import save_random_clip

    dataset, _ = main
    model = save_random_clip(str(tmp_path / "clip"))
    shutil.copytree(model, tmp_path / "elsewhere" / "copy")
    first = compute_embeddings(dataset, "gt", model=model, device="cpu", num_workers=0)
    assert first.n_embedded > 0
    stored = dataset.values("vlsr_embedding")

    monkeypatch.chdir(tmp_path / "elsewhere")
    again = compute_embeddings(dataset, "gt", model="./copy", device="cpu", num_workers=0)
    assert (again.n_embedded, again.n_labels_embedded) == (0, 0)
    assert all((a is None and b is None) or np.array_equal(a, b)
               for a, b in zip(dataset.values("vlsr_embedding"), stored))
    # recorded by its full path: a later run from another folder reads it as the same folder
    assert dataset.get_run_info("vlsr").config.model == str(tmp_path / "elsewhere" / "copy")

    other = save_random_clip(str(tmp_path / "other"), seed=1)
    third = compute_embeddings(dataset, "gt", model=other, device="cpu", num_workers=0)
    assert third.n_embedded == first.n_embedded and third.n_labels_embedded == first.n_labels_embedded


@pytest.mark.parametrize("confidence, tags", [(0.25, ["suggestion-accepted"]), (None, [])])
def test_label_documents_are_what_fiftyone_stores(confidence, tags):
    """The stages write label objects as built documents; they must read back as FiftyOne's."""
    import fiftyone as fo

    from vlsr_core.fo.labels import classification_doc, classifications_doc

    doc = classification_doc("helmet", confidence, tags)
    stored = fo.Classification(label="helmet", confidence=confidence, tags=tags).to_mongo()
    assert isinstance(doc["_id"], ObjectId) and doc.pop("_id") != stored.pop("_id")
    assert list(doc.items()) == list(stored.items())
    many = classifications_doc([("helmet", confidence), ("drill", 0.5)])
    read = fo.Classifications.from_dict(many)
    assert [(c.label, c.confidence) for c in read.classifications] == [("helmet", confidence),
                                                                      ("drill", 0.5)]


def test_parameters_given_for_the_key_or_a_field_for_its_name_are_refused_saying_so(ran):
    """Audit: ``cluster_and_merge(dataset, MergeParams())`` failed in MongoDB ("cannot encode
    object"), ``run_vlsr(dataset, dataset.get_field("gt"))`` inside FiftyOne ("no attribute
    'split'")."""
    from vlsr_core import MergeParams, ScoreParams
    from vlsr_core.fo.stages import VLSRError, score_labels

    dataset, _, encoder, _ = ran
    with pytest.raises(TypeError, match="The run key is a string such as 'vlsr', not "
                                        "MergeParams\\(mode="):
        cluster_and_merge(dataset, MergeParams())
    with pytest.raises(TypeError, match="not ScoreParams"):
        score_labels(dataset, ScoreParams(top_k=3))
    for field in (dataset.get_field("gt"), None):
        with pytest.raises(VLSRError, match="The label field is given by its name, a string "
                                            "such as 'ground_truth', not "):
            run_vlsr(dataset, field, encoder=encoder)


def test_a_dataset_given_by_its_name_is_refused_saying_how_to_load_it(ran):
    """Audit (a notebook): ``run_vlsr("aud", ...)``, ``review_state("aud")`` and the others
    failed on "'str' object has no attribute '_dataset'" (or 'has_run'); ``delete_run`` on a
    view on "no attribute '_doc'"."""
    from vlsr_core.fo.export import export_run
    from vlsr_core.fo.review import add_edit, apply_review, review_state
    from vlsr_core.fo.runs import delete_run
    from vlsr_core.fo.summary import summarize_run

    dataset = ran[0]
    name = dataset.name
    for call in (lambda: run_vlsr(name, "gt"), lambda: cluster_and_merge(name),
                 lambda: review_state(name), lambda: add_edit(name, "vlsr", "split", "helmit"),
                 lambda: apply_review(name, "vlsr"), lambda: summarize_run(name, "vlsr"),
                 lambda: export_run(name, "/tmp/nowhere"), lambda: delete_run(name, "vlsr")):
        with pytest.raises(TypeError, match=re.escape(
                f"Give a FiftyOne dataset or view, not the name {name!r}: "
                f"fo.load_dataset({name!r})")):
            call()
    with pytest.raises(TypeError, match="Give a FiftyOne dataset or view, not list"):
        review_state([dataset])
    for sample in dataset.limit(2):
        sample["boxes"] = fo.Detections(detections=[fo.Detection(label="x", bounding_box=[
            0.1, 0.1, 0.2, 0.2])])
        sample.save()
    # a view's run is its dataset's (review: one of a patches view was "no VLSR run")
    delete_run(dataset.to_patches("boxes"), "vlsr")
    assert not dataset.has_run("vlsr")


def test_the_wrong_kind_of_argument_is_named_in_one_line(ran):
    """Audit of the Python API: a sample failed on "object of type 'Sample' has no len()", a
    name given to unreadable_images on "'str' object has no attribute 'has_field'", a view given
    to summarize_run on "'DatasetView' object has no attribute '_doc'", 2.5 shards on numpy's
    words while 0 and -1 gave one shard, and a label map given as pairs was read as labels."""
    from vlsr_core.fo.review import ReviewError, import_label_map
    from vlsr_core.fo.stages import unreadable_images
    from vlsr_core.fo.summary import summarize_run

    dataset, _, encoder, _ = ran
    for sample in (dataset.first(), next(iter(dataset.limit(1)))):  # (a Sample, a SampleView)
        with pytest.raises(TypeError, match=re.escape(
                "Give a FiftyOne dataset or view, not a sample: dataset.select(sample.id) is a "
                "view of it")):
            run_vlsr(sample, "gt", encoder=encoder)
    with pytest.raises(TypeError, match=re.escape(f"not the name {dataset.name!r}")):
        unreadable_images(dataset.name)
    assert summarize_run(dataset.limit(3), "vlsr") == summarize_run(dataset, "vlsr")
    for n in (2.5, 0, -1, True, "2"):
        with pytest.raises(ValueError, match=re.escape(
                f"n is the number of shards, a whole number from 1: got {n!r}")):
            chunks.shards(dataset, n)
    assert len(chunks.shards(dataset, np.int64(2))) == 2
    with pytest.raises(ReviewError, match="Give the label map as a mapping of label to "
                                          "canonical label .*, not list"):
        import_label_map(dataset, "vlsr", [("helmit", "helmet")])

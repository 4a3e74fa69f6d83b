"""The FiftyOne stages of VLSR (vlsr_core.fo.stages), judged by what they leave in the database.

Behaviour is tested on the fake CLIP of :mod:`fake_clip`, whose right answers are known; one test
runs the whole thing with a tiny random CLIP, for the plumbing only.
"""

import collections
import os

import fiftyone as fo
import numpy as np
import pytest
from bson import ObjectId
from fiftyone import ViewField as F

from vlsr_core.fo import chunks, stages
from vlsr_core.engine.params import ScoreParams
from vlsr_core.fo.runs import VLSRResults, VLSRRunConfig, label_attributes, sample_fields, saved_view_names
from vlsr_core.fo.stages import VLSRError, cluster_and_merge, compute_embeddings, run_vlsr, score_labels

from fake_clip import (
    CANONICAL,
    DIM,
    FINAL,
    MAIN,
    UNREADABLE,
    VOCAB,
    FakeEncoder,
    axis,
    build,
    by_name,
    dot,
    image_vector,
    label_snapshot,
    label_vector,
    run_fields,
    unit,
    view_labels,
    view_names,
)

# ---------------------------------------------------------------------------------------------
# compute_embeddings
# ---------------------------------------------------------------------------------------------


def test_embeddings_written_for_readable_images_and_reasons_for_unreadable(main):
    dataset, images = main
    encoder = FakeEncoder(images)
    report = compute_embeddings(dataset, "gt", encoder=encoder)

    fields = sample_fields("vlsr")
    dataset.reload()
    embeddings, errors = by_name(dataset, fields["embedding"]), by_name(dataset, fields["error"])
    for name, vector in images.items():
        assert np.array_equal(np.asarray(embeddings[name], dtype=np.float32), vector), name
        assert errors[name] is None
    for name, reason in UNREADABLE.items():
        assert embeddings[name] is None
        assert errors[name] == reason
    assert isinstance(dataset.get_field(fields["embedding"]), fo.VectorField)

    assert (report.n_embedded, report.n_skipped, len(report.failures)) == (12, 0, 2)
    assert report.n_labels_embedded == len(VOCAB)
    assert "embedded 12 images" in report.summary() and "2 unreadable" in report.summary()
    failures = {os.path.basename(path): reason for _, path, reason in report.failures}
    assert failures == UNREADABLE
    ids, paths = by_name(dataset, "id"), by_name(dataset, "filepath")
    assert sorted(map(tuple, stages.unreadable_images(dataset))) == sorted(
        (ids[name], paths[name], reason) for name, reason in UNREADABLE.items()
    )


def test_non_finite_embedding_is_never_stored(main):
    """A model that returns NaN for an image (fp16 overflow does) must not leave NaN in the
    database, where it would also hide the image from every later resume."""
    dataset, images = main
    images = dict(images, **{"d2.png": np.full(DIM, np.nan, np.float32)})
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))

    fields = sample_fields("vlsr")
    stored = [e for e in dataset.values(fields["embedding"]) if e is not None]
    assert len(stored) == 11 and all(np.isfinite(e).all() for e in stored)
    assert by_name(dataset, fields["embedding"])["d2.png"] is None
    assert "finite" in by_name(dataset, fields["error"])["d2.png"]
    assert report.n_embedded == 11
    assert "d2.png" in {os.path.basename(p) for _, p, _ in report.failures}

    # fixed on the next run: only that image (and the unreadable ones) are tried again
    images["d2.png"] = image_vector("drill", "d2.png")
    again = FakeEncoder(images)
    compute_embeddings(dataset, "gt", encoder=again)
    assert sorted(os.path.basename(p) for p in again.path_calls[0]) == [
        "d2.png", "missing.png", "zero.png"
    ]
    assert by_name(dataset, fields["error"])["d2.png"] is None
    assert np.array_equal(by_name(dataset, fields["embedding"])["d2.png"], images["d2.png"])


def test_rerun_embeds_only_new_images_and_new_labels(main, tmp_path):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    images.update(build(dataset, tmp_path / "more", [
        ("g1.png", "glove", ["glove", "helmet"]),
        ("g2.png", "glove", ["glove"]),
    ]))

    spy = FakeEncoder(images)
    report = compute_embeddings(dataset, "gt", encoder=spy)
    # the unreadable images are tried again (they have no embedding), nothing else
    assert sorted(os.path.basename(p) for p in spy.path_calls[0]) == [
        "g1.png", "g2.png", "missing.png", "zero.png"
    ]
    assert spy.texts == ["glove"]
    assert (report.n_embedded, report.n_skipped, report.n_labels_embedded) == (2, 12, 1)
    results = dataset.load_run_results("vlsr", cache=False)
    assert results.labels == VOCAB + ["glove"]
    assert np.array_equal(results.label_embeddings, np.stack([label_vector(l) for l in VOCAB + ["glove"]]))
    embedded = by_name(dataset, "vlsr_embedding")
    assert np.array_equal(embedded["g1.png"], images["g1.png"])
    # the still unreadable images are listed once each
    assert sorted(os.path.basename(f[1]) for f in stages.unreadable_images(dataset)) == ["missing.png", "zero.png"]

    # nothing left to do: no image and no label is embedded a third time
    idle = FakeEncoder(images)
    report = compute_embeddings(dataset, "gt", encoder=idle)
    assert sorted(os.path.basename(p) for p in idle.path_calls[0]) == ["missing.png", "zero.png"]
    assert idle.texts == [] and report.n_embedded == 0 and report.n_skipped == 14


def test_interrupted_run_keeps_written_batches_and_resumes(main, monkeypatch):
    dataset, images = main
    monkeypatch.setattr(stages, "WRITE_EVERY", 2)
    crashing = FakeEncoder(images, batch_size=2, fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        compute_embeddings(dataset, "gt", encoder=crashing)

    names = [n for n, _, _ in MAIN]
    embedded = by_name(dataset, "vlsr_embedding")
    assert [n for n in names if embedded[n] is not None] == names[:4]  # two batches of two

    resumed = FakeEncoder(images, batch_size=2)
    report = compute_embeddings(dataset, "gt", encoder=resumed)
    assert [os.path.basename(p) for p in resumed.path_calls[0]] == names[4:]
    assert resumed.texts == []  # the labels were embedded before the crash
    assert report.n_skipped == 4 and report.n_embedded == 8
    embedded = by_name(dataset, "vlsr_embedding")
    for name, vector in images.items():
        assert np.array_equal(embedded[name], vector)


def test_other_model_reembeds_every_image_and_label(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))

    other_images = {n: image_vector("glove", "other" + n) for n in images}
    other = FakeEncoder(other_images, model_name="other-clip")
    report = compute_embeddings(dataset, "gt", encoder=other)
    assert sorted(os.path.basename(p) for p in other.path_calls[0]) == sorted(n for n, _, _ in MAIN)
    assert sorted(other.texts) == sorted(VOCAB)
    assert report.n_skipped == 0 and report.n_labels_embedded == len(VOCAB)
    assert dataset.get_run_info("vlsr").config.model == "other-clip"
    results = dataset.load_run_results("vlsr", cache=False)
    assert sorted(results.labels) == sorted(VOCAB)  # replaced, not appended
    embedded = by_name(dataset, "vlsr_embedding")
    for name, vector in other_images.items():
        assert np.array_equal(embedded[name], vector)


def test_switching_jpeg_draft_reembeds_the_images_but_not_the_labels(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert dataset.get_run_info("vlsr").config.jpeg_draft is False

    draft = FakeEncoder(images, jpeg_draft=True)
    report = compute_embeddings(dataset, "gt", encoder=draft)
    assert sorted(os.path.basename(p) for p in draft.path_calls[0]) == sorted(n for n, _, _ in MAIN)
    assert draft.texts == [] and report.n_skipped == 0
    assert dataset.get_run_info("vlsr").config.jpeg_draft is True

    again = FakeEncoder(images, jpeg_draft=True)  # same setting: a resume embeds nothing new
    compute_embeddings(dataset, "gt", encoder=again)
    assert sorted(map(os.path.basename, again.path_calls[0])) == sorted(UNREADABLE)


def test_compute_image_embeddings_refuses_an_encoder_unlike_the_runs(main):
    """A shard embedded by another model, prompt or decoding would mix incomparable vectors."""
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), images=False)
    for other, shown in [(FakeEncoder(images, jpeg_draft=True), "jpeg_draft True"),
                         (FakeEncoder(images, model_name="other-clip"), "other-clip"),
                         (FakeEncoder(images, prompt="a photo of a {}"), "a photo of a")]:
        with pytest.raises(VLSRError, match=shown):
            stages.compute_image_embeddings(dataset, encoder=other)
    assert not dataset.has_sample_field("vlsr_embedding")  # refused before anything was written
    assert stages.compute_image_embeddings(dataset, encoder=FakeEncoder(images)).n_embedded == len(images)


def test_other_model_on_a_view_drops_the_old_embeddings_of_the_rest(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    view = dataset.limit(2)
    other_images = {n: image_vector("glove", "other" + n) for n in images}
    compute_embeddings(view, "gt", encoder=FakeEncoder(other_images, model_name="other-clip"))
    # the samples outside the view hold no embedding of the old model any more
    outside = dataset.exclude(view.values("id"))
    assert outside.count("vlsr_embedding") == 0
    assert view.count("vlsr_embedding") == 2


def test_recompute_reembeds_every_image(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    new = {n: image_vector("glove", "new" + n) for n in images}
    spy = FakeEncoder(new)
    report = compute_embeddings(dataset, "gt", encoder=spy, recompute=True)
    assert len(spy.path_calls[0]) == len(MAIN) and report.n_skipped == 0
    assert spy.texts == []  # same model: the label embeddings are still valid
    embedded = by_name(dataset, "vlsr_embedding")
    for name, vector in new.items():
        assert np.array_equal(embedded[name], vector)


def test_labels_embedded_once_each_and_blank_labels_skipped(dataset, tmp_path):
    spec = [
        ("a.png", "helmet", ["helmet", "", "   ", None, "helmet"]),
        ("b.png", "drill", ["", "drill"]),
        ("c.png", "helmet", ["helmet"]),
    ]
    images = build(dataset, tmp_path, spec)
    encoder = FakeEncoder(images)  # KeyError on any string other than the planned labels
    run_vlsr(dataset, "gt", encoder=encoder, min_cluster_size=1)

    assert collections.Counter(encoder.texts) == {"helmet": 1, "drill": 1}
    results = dataset.load_run_results("vlsr", cache=False)
    assert results.labels == ["helmet", "drill"] and results.vocabulary == ["helmet", "drill"]
    sims = by_name(dataset, "gt.classifications.vlsr_similarity")
    canon = by_name(dataset, "gt.classifications.vlsr_canonical")
    clusters = by_name(dataset, "gt.classifications.vlsr_cluster")
    h = dot(images, "a.png", "helmet")
    assert sims["a.png"] == [pytest.approx(h, abs=1e-6), None, None, None, pytest.approx(h, abs=1e-6)]
    assert canon["a.png"] == ["helmet", None, None, None, "helmet"]
    assert clusters["a.png"][1:4] == [None, None, None]
    assert sims["b.png"][0] is None and canon["b.png"] == [None, "drill"]
    assert by_name(dataset, "vlsr_labels.classifications.label") == {
        "a.png": ["helmet"], "b.png": ["drill"], "c.png": ["helmet"]
    }
    assert by_name(dataset, "gt.classifications.label")["a.png"] == ["helmet", "", "   ", None, "helmet"]


# ---------------------------------------------------------------------------------------------
# score_labels
# ---------------------------------------------------------------------------------------------


def test_similarity_on_every_label_is_the_dot_product(ran):
    dataset, images, _, _ = ran
    dataset.reload()
    sims = by_name(dataset, "gt.classifications.vlsr_similarity")
    labels = by_name(dataset, "gt.classifications.label")
    for name, _, _ in MAIN:
        if labels[name] is None:
            assert sims[name] is None
        elif name in images:
            assert sims[name] == pytest.approx([dot(images, name, l) for l in labels[name]], abs=1e-6)
        else:
            assert sims[name] == [None] * len(labels[name])  # no score without an image
    assert isinstance(dataset.get_field("gt.classifications.vlsr_similarity"), fo.FloatField)
    # the premise of the review tests below
    assert sims["h4.png"][0] < 0.2 < 0.9 < sims["h4.png"][1]


def test_suggestions_are_the_top_k_vocabulary_labels_by_score(ran):
    dataset, images, _, _ = ran
    labels = by_name(dataset, "vlsr_suggestions.classifications.label")
    scores = by_name(dataset, "vlsr_suggestions.classifications.confidence")
    for name, _, _ in MAIN:
        if name not in images:
            assert labels[name] is None
            continue
        expected = sorted(VOCAB, key=lambda l: -dot(images, name, l))[:3]
        assert labels[name] == expected, name
        assert scores[name] == pytest.approx([dot(images, name, l) for l in expected], abs=1e-6)
    # a suggestion is offered even where nothing was assigned
    assert labels["n1.png"][0] == "helmet"
    assert labels["s3.png"][0] == "screwdriver"


def test_min_similarity_and_best_gap(ran):
    dataset, images, _, _ = ran
    minimum, gap = by_name(dataset, "vlsr_min_similarity"), by_name(dataset, "vlsr_best_gap")
    labels = by_name(dataset, "gt.classifications.label")
    for name, _, _ in MAIN:
        if name not in images or not labels[name]:
            assert minimum[name] is None and gap[name] is None, name
            continue
        assigned = [dot(images, name, l) for l in labels[name]]
        best = max(dot(images, name, l) for l in VOCAB)
        assert minimum[name] == pytest.approx(min(assigned), abs=1e-6)
        assert gap[name] == pytest.approx(best - max(assigned), abs=1e-6)
    assert gap["s3.png"] > 0.5  # "helmet" on a screwdriver
    assert gap["h3.png"] > 0 and gap["h4.png"] > 0  # "helmet" beats "Helmets" and "helmit"
    for name in ("h1.png", "h2.png", "hs.png", "s1.png", "s2.png", "d1.png", "d2.png"):
        assert gap[name] == 0.0, name  # its best vocabulary label is one it has


def test_best_gap_is_exactly_zero_when_the_best_label_is_assigned(dataset, tmp_path):
    """Suggestions and assigned-label scores come from different products; rounding must not
    make an image look as if a better label existed when its best label is already assigned."""
    concepts = ["helmet", "screwdriver", "drill", "glove"]
    spec = [
        (f"i{i}.png", concepts[i % 4], [["helmet", "screwdriver", "drill", "glove"][i % 4], "Helmets"])
        for i in range(40)
    ]
    images = build(dataset, tmp_path, spec)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert set(dataset.values("vlsr_best_gap")) == {0.0}
    assert len(dataset.load_saved_view(saved_view_names("vlsr")["better_label"])) == 0


def test_review_views(ran):
    dataset, images, _, _ = ran
    names = saved_view_names("vlsr")
    assert set(names.values()) <= set(dataset.list_saved_views())
    # the irrelevant label and the wrong label are the low ones; labels without a score
    # (unreadable images) are not "low"
    assert view_labels(dataset, names["low_similarity"]) == {
        ("h4.png", "Lathe Information"), ("s3.png", "helmet")
    }
    # the threshold is the 10% quantile of the scores of each image's distinct labels
    low = dataset.get_run_info("vlsr").config.low_similarity_threshold
    scores = [dot(images, n, l) for n, ls in by_name(dataset, "gt.classifications.label").items()
              if n in images and ls for l in dict.fromkeys(ls)]
    assert low == pytest.approx(float(np.quantile(scores, ScoreParams().low_quantile)), abs=1e-6)
    # images where a vocabulary label beats every assigned one
    assert view_names(dataset, names["better_label"]) == {"h3.png", "h4.png", "s3.png"}
    # "helmet" is low on s3 but fine elsewhere; "Lathe Information" is low wherever it is
    assert view_labels(dataset, names["weak_labels"]) == {("h4.png", "Lathe Information")}
    # final label none of the original ones
    assert view_names(dataset, names["changed"]) == {"h3.png", "h4.png"}


def test_replace_margin_sets_what_counts_as_a_better_label(ran):
    dataset, images, _, _ = ran
    # "helmet" beats "Helmets" on h3 by ~0.005 and "helmit" on h4 by ~0.019
    assert 0 < dot(images, "h3.png", "helmet") - dot(images, "h3.png", "Helmets") < 0.01
    assert dot(images, "h4.png", "helmet") - dot(images, "h4.png", "helmit") > 0.01
    # the run's other score parameters (top_k 3), with another margin
    score_labels(dataset, "vlsr", dataset.get_run_info("vlsr").config.params(ScoreParams),
                 replace_margin=0.01)
    assert view_names(dataset, saved_view_names("vlsr")["better_label"]) == {"h4.png", "s3.png"}
    config = dataset.get_run_info("vlsr").config
    assert config.replace_margin == 0.01 and config.top_k == 3
    assert len(by_name(dataset, "vlsr_suggestions.classifications.label")["h1.png"]) == 3
    # no parameters: the defaults, whatever the run used before
    score_labels(dataset)
    assert dataset.get_run_info("vlsr").config.params(ScoreParams) == ScoreParams()
    assert len(by_name(dataset, "vlsr_suggestions.classifications.label")["h1.png"]) == 5


def test_score_before_embeddings_is_refused(main):
    dataset, _ = main
    with pytest.raises(VLSRError, match="compute embeddings first"):
        score_labels(dataset)
    with pytest.raises(VLSRError, match="compute embeddings first"):
        cluster_and_merge(dataset)


def test_score_where_nothing_is_embedded_is_refused(main):
    dataset, images = main
    compute_embeddings(dataset.match(F("filepath").ends_with("h1.png")), "gt", encoder=FakeEncoder(images))
    with pytest.raises(VLSRError, match="No image embeddings"):
        score_labels(dataset.match(F("filepath").ends_with("h2.png")))  # "helmet" is embedded
    # a label of the view that was never embedded
    with pytest.raises(VLSRError, match="no embedding yet.*compute embeddings"):
        score_labels(dataset)
    assert not dataset.has_field("gt.classifications.vlsr_similarity")


@pytest.mark.parametrize("stage", ["embed", "score", "cluster"])
def test_empty_view_is_refused(main, stage):
    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    empty = dataset.match(F("filepath") == "nowhere")
    call = {
        "embed": lambda: compute_embeddings(empty, "gt", encoder=FakeEncoder(images)),
        "score": lambda: score_labels(empty),
        "cluster": lambda: cluster_and_merge(empty),
    }[stage]
    with pytest.raises(VLSRError, match="no samples"):
        call()


def test_video_dataset_is_refused(dataset, tmp_path):
    dataset.add_sample(fo.Sample(filepath=str(tmp_path / "clip.mp4"),
                                 gt=fo.Classification(label="helmet")))
    with pytest.raises(VLSRError, match="image datasets.*video"):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder({}))
    with pytest.raises(VLSRError, match="image datasets"):
        score_labels(dataset)
    assert not dataset.has_run("vlsr")


def test_label_field_missing_or_not_labels_is_refused(main):
    dataset, images = main
    dataset.set_values("note", ["x"] * len(dataset))
    with pytest.raises(VLSRError, match="No field 'nope'.*gt"):
        compute_embeddings(dataset, "nope", encoder=FakeEncoder(images))
    with pytest.raises(VLSRError, match="'note' is StringField.*Classification"):
        compute_embeddings(dataset, "note", encoder=FakeEncoder(images))
    assert not dataset.has_run("vlsr") and not dataset.has_field("vlsr_embedding")


# ---------------------------------------------------------------------------------------------
# cluster_and_merge
# ---------------------------------------------------------------------------------------------


def test_canonical_and_cluster_on_every_label(ran):
    dataset, _, _, _ = ran
    labels = by_name(dataset, "gt.classifications.label")
    canon = by_name(dataset, "gt.classifications.vlsr_canonical")
    cluster = by_name(dataset, "gt.classifications.vlsr_cluster")
    for name, _, _ in MAIN:
        # unreadable images get canonical labels too: clustering needs no picture
        assert canon[name] == ([CANONICAL[l] for l in labels[name]] if labels[name] else labels[name])
    ids = {}
    for name in labels:
        for l, c in zip(labels[name] or [], cluster[name] or []):
            ids.setdefault(l, set()).add(c)
    assert all(len(c) == 1 for c in ids.values())
    ids = {l: c.pop() for l, c in ids.items()}
    assert ids["helmet"] == ids["Helmets"] == ids["helmit"]
    assert ids["screwdriver"] == ids["Screwdrivers"]
    assert len({ids["helmet"], ids["screwdriver"], ids["drill"], ids["Lathe Information"]}) == 4
    assert isinstance(dataset.get_field("gt.classifications.vlsr_cluster"), fo.IntField)


def test_canonical_label_sets_and_final_labels(ran):
    dataset, images, _, _ = ran
    canon_sets = by_name(dataset, "vlsr_labels.classifications.label")
    canon_scores = by_name(dataset, "vlsr_labels.classifications.confidence")
    assert canon_sets["h2.png"] == ["helmet"]  # de-duplicated
    assert canon_sets["s2.png"] == ["screwdriver"]
    assert canon_sets["h4.png"] == ["Lathe Information", "helmet"]
    assert canon_sets["hs.png"] == ["screwdriver", "helmet"]
    assert canon_sets["zero.png"] == ["helmet"] and canon_scores["zero.png"] == [None]
    assert not canon_sets["n1.png"] and not canon_sets["n2.png"]
    for name in images:
        if canon_sets[name]:
            assert canon_scores[name] == pytest.approx(
                [dot(images, name, l) for l in canon_sets[name]], abs=1e-6)

    final = by_name(dataset, "vlsr_label.label")
    assert final == FINAL
    scores = by_name(dataset, "vlsr_label.confidence")
    for name, label in FINAL.items():
        if label is None:
            assert scores[name] is None
        else:
            assert scores[name] == pytest.approx(dot(images, name, label), abs=1e-6)
            assert scores[name] == pytest.approx(max(dot(images, name, l) for l in canon_sets[name]))
    assert isinstance(dataset.get_field("vlsr_label"), fo.EmbeddedDocumentField)
    assert dataset.get_field("vlsr_label").document_type is fo.Classification
    assert dataset.get_field("vlsr_labels").document_type is fo.Classifications


def test_run_results_and_config_are_recorded(ran):
    dataset, _, _, _ = ran
    results = dataset.load_run_results("vlsr", cache=False)
    assert isinstance(results, VLSRResults)
    assert results.vocabulary == VOCAB
    freq = dict(zip(results.vocabulary, results.frequencies.tolist()))
    # images carrying the label (h2 has "helmet" twice; unreadable images count)
    assert freq == {"helmet": 5, "Helmets": 1, "Lathe Information": 1, "helmit": 1,
                    "screwdriver": 3, "Screwdrivers": 1, "drill": 3}
    assert results.canonical == CANONICAL
    assert sorted(results.representatives) == sorted(["helmet", "Lathe Information", "screwdriver", "drill"])
    clusters = dict(zip(results.vocabulary, results.clusters.tolist()))
    assert all(results.representatives[clusters[l]] == c for l, c in CANONICAL.items())
    assert len(results.dbscan_clusters) == len(VOCAB)
    cluster_attr = by_name(dataset, "gt.classifications.vlsr_cluster")
    labels = by_name(dataset, "gt.classifications.label")
    for name in labels:
        for l, c in zip(labels[name] or [], cluster_attr[name] or []):
            assert clusters[l] == c

    info = dataset.get_run_info("vlsr")
    config = info.config
    assert isinstance(config, VLSRRunConfig) and config.method == "vlsr"
    assert (config.label_field, config.model, config.prompt, config.batch_size) == ("gt", "fake-clip", None, 4)
    assert (config.eps, config.min_samples, config.min_cluster_size) == (0.07, 1, 1)
    assert (config.size_by, config.linkage, config.max_merge_distance) == ("samples", "centroid", None)
    assert (config.top_k, config.replace_margin, config.low_quantile) == (3, 0.0, 0.1)
    assert dataset.list_runs() == ["vlsr"]


def test_cluster_parameters_are_used_and_recorded(ran):
    dataset, _, _, _ = ran
    # eps below the helmet/Helmets distance keeps the variants apart
    cluster_and_merge(dataset, eps=0.001, min_cluster_size=1)
    assert dataset.load_run_results("vlsr", cache=False).canonical["Helmets"] == "Helmets"
    assert by_name(dataset, "vlsr_label.label")["h3.png"] == "Helmets"
    assert dataset.get_run_info("vlsr").config.eps == 0.001

    # merging: clusters under 4 samples join their nearest neighbour unless farther than 0.5
    cluster_and_merge(dataset, min_cluster_size=4, max_merge_distance=0.5, size_by="labels")
    config = dataset.get_run_info("vlsr").config
    assert (config.eps, config.min_cluster_size, config.max_merge_distance, config.size_by) == (
        0.07, 4, 0.5, "labels")
    assert dataset.load_run_results("vlsr", cache=False).canonical == CANONICAL

    cluster_and_merge(dataset, min_cluster_size=10)  # everything folds into the biggest cluster
    label_map = dataset.load_run_results("vlsr", cache=False).canonical
    assert set(label_map.values()) == {"helmet"}
    assert set(by_name(dataset, "gt.classifications.vlsr_canonical")["d1.png"]) == {"helmet"}
    assert by_name(dataset, "vlsr_label.label")["d1.png"] == "helmet"


# ---------------------------------------------------------------------------------------------
# Other label types
# ---------------------------------------------------------------------------------------------


def test_classification_field(dataset, tmp_path):
    spec = [
        ("a.png", "helmet", "Helmets"),
        ("b.png", "helmet", "helmet"),
        ("c.png", "screwdriver", "screwdriver"),
        ("d.png", "helmet", None),  # no label at all
        ("e.png", "drill", ""),  # a blank label
        ("f.png", "helmet", "helmet"),
    ]
    images = build(dataset, tmp_path, spec, kind="classification")
    before = label_snapshot(dataset)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)

    assert by_name(dataset, "gt.vlsr_similarity") == {
        "a.png": pytest.approx(dot(images, "a.png", "Helmets"), abs=1e-6),
        "b.png": pytest.approx(dot(images, "b.png", "helmet"), abs=1e-6),
        "c.png": pytest.approx(dot(images, "c.png", "screwdriver"), abs=1e-6),
        "d.png": None, "e.png": None, "f.png": pytest.approx(dot(images, "f.png", "helmet"), abs=1e-6),
    }
    assert by_name(dataset, "gt.vlsr_canonical") == {
        "a.png": "helmet", "b.png": "helmet", "c.png": "screwdriver", "d.png": None, "e.png": None,
        "f.png": "helmet",
    }
    assert by_name(dataset, "vlsr_label.label") == {
        "a.png": "helmet", "b.png": "helmet", "c.png": "screwdriver", "d.png": None, "e.png": None,
        "f.png": "helmet",
    }
    assert dataset.load_run_results("vlsr").vocabulary == ["Helmets", "helmet", "screwdriver"]
    assert view_names(dataset, saved_view_names("vlsr")["changed"]) == {"a.png"}
    # the unlabelled sample is still unlabelled (no label object created to carry attributes)
    assert label_snapshot(dataset) == before
    assert by_name(dataset, "gt")["d.png"] is None


def test_detections_field(dataset, tmp_path):
    spec = [
        ("a.png", "helmet", ["helmet", "Helmets", "helmet"]),
        ("b.png", "screwdriver", ["screwdriver", "helmet"]),  # a helmet lies next to it
        ("c.png", "drill", []),
        ("d.png", "drill", None),
    ]
    images = build(dataset, tmp_path, spec, kind="detections")
    before = label_snapshot(dataset)
    encoder = FakeEncoder(images)
    run_vlsr(dataset, "gt", encoder=encoder, min_cluster_size=1)

    assert collections.Counter(encoder.texts) == {"helmet": 1, "Helmets": 1, "screwdriver": 1}
    sims = by_name(dataset, "gt.detections.vlsr_similarity")
    assert sims["a.png"] == pytest.approx([dot(images, "a.png", l) for l in ["helmet", "Helmets", "helmet"]],
                                          abs=1e-6)
    assert sims["b.png"] == pytest.approx([dot(images, "b.png", l) for l in ["screwdriver", "helmet"]],
                                          abs=1e-6)
    canon = by_name(dataset, "gt.detections.vlsr_canonical")
    assert canon["a.png"] == ["helmet"] * 3 and canon["b.png"] == ["screwdriver", "helmet"]
    cluster = by_name(dataset, "gt.detections.vlsr_cluster")
    assert cluster["a.png"][0] == cluster["a.png"][1] == cluster["a.png"][2] == cluster["b.png"][1]
    assert cluster["b.png"][0] != cluster["b.png"][1]

    results = dataset.load_run_results("vlsr", cache=False)
    # the image's label set is its distinct object labels: "helmet" counts once on a.png
    assert dict(zip(results.vocabulary, results.frequencies.tolist())) == {
        "helmet": 2, "Helmets": 1, "screwdriver": 1}
    assert by_name(dataset, "vlsr_labels.classifications.label") == {
        "a.png": ["helmet"], "b.png": ["screwdriver", "helmet"], "c.png": [], "d.png": []}
    assert by_name(dataset, "vlsr_label.label") == {
        "a.png": "helmet", "b.png": "screwdriver", "c.png": None, "d.png": None}
    assert by_name(dataset, "vlsr_min_similarity")["b.png"] == pytest.approx(
        dot(images, "b.png", "helmet"), abs=1e-6)
    assert view_labels(dataset, saved_view_names("vlsr")["low_similarity"], "gt.detections") == {
        ("b.png", "helmet")}
    assert label_snapshot(dataset) == before


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
    with pytest.raises(VLSRError, match="another key"):
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
def test_sample_ids_read_in_pages_are_the_views_ids_in_order(main, make_view):
    dataset, _ = main
    view = make_view(dataset)
    expected = [str(i) for i in view.values("_id")]
    for page in (1, 3, 100):
        ids = chunks.sample_ids(view, page=page)
        assert [str(ObjectId(i.tobytes())) for i in ids] == expected
    read = [i for ids, _ in chunks.iter_chunks(view, ["filepath"], size=4) for i in ids]
    assert read == expected


def test_object_ids_ending_in_zero_bytes_survive():
    oids = [ObjectId(b"\x01" * 11 + b"\x00"), ObjectId(b"\x00" * 12)]
    ids = chunks._binary(oids)
    assert [ObjectId(i.tobytes()) for i in ids] == oids


def test_sample_ids_fall_back_to_one_read_when_pages_disagree():
    """Pages rely on the view giving the same order on every query; a view whose order changes
    between queries (ties in a sort) would repeat and miss samples: then the ids are read at once."""
    oids = [ObjectId() for _ in range(10)]

    class Unstable:  # a collection whose order changes on every query
        def __init__(self, calls, start=0, stop=None):
            self.calls, self.start, self.stop = calls, start, stop

        def __len__(self):
            return len(oids)

        def skip(self, start):
            return Unstable(self.calls, start)

        def limit(self, n):
            return Unstable(self.calls, self.start, self.start + n)

        def values(self, field):
            self.calls[0] += 1
            order = oids[self.calls[0] % 3:] + oids[: self.calls[0] % 3]
            return order[self.start : self.stop]

    ids = chunks.sample_ids(Unstable([0]), page=4)
    assert sorted(ObjectId(i.tobytes()) for i in ids) == sorted(oids)


def test_values_land_on_their_labels_when_the_view_filters_on_what_is_written(main):
    """Label values are written by label id: a view that filters labels on the very attributes
    being written (canonical first, then cluster) cannot shift them onto other labels."""
    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    view = dataset.filter_labels("gt", F("vlsr_canonical") != F("label"), only_matches=False)
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

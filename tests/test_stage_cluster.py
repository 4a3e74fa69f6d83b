"""The clustering stage (cluster_and_merge), and all stages on Classification and Detections fields.

Behaviour is judged by what the stages leave in the database, on the fake CLIP of
:mod:`fake_clip`, whose right answers are known.
"""

import collections
import os

import fiftyone as fo
import numpy as np
import pytest

from vlsr_core.fo.review import clustered_label_map
from vlsr_core.fo.runs import VLSRResults, VLSRRunConfig, saved_view_names
from vlsr_core.fo.stages import cluster_and_merge, compute_embeddings, run_vlsr, score_labels

from fake_clip import (
    CANONICAL,
    CONCEPT_AXIS,
    LABELS,
    FINAL,
    MAIN,
    VOCAB,
    FakeEncoder,
    build,
    by_name,
    dot,
    label_snapshot,
    view_labels,
    view_names,
    wordpiece,
)

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
    assert (config.mode, config.eps, config.min_samples, config.min_cluster_size) == (
        "recommended", None, 1, 1)
    assert (config.size_by, config.linkage, config.max_merge_distance) == ("samples", "centroid", None)
    assert (config.top_k, config.replace_margin, config.low_quantile) == (3, 0.0, 0.1)
    assert dataset.list_runs() == ["vlsr"]


def test_cluster_parameters_are_used_and_recorded(ran):
    dataset, _, _, _ = ran
    # paper mode: eps below the helmet/Helmets distance keeps the variants apart (the
    # recommended mode groups them by spelling first)
    cluster_and_merge(dataset, mode="paper", eps=0.001, min_cluster_size=1)
    assert dataset.load_run_results("vlsr", cache=False).canonical["Helmets"] == "Helmets"
    assert by_name(dataset, "vlsr_label.label")["h3.png"] == "Helmets"
    assert dataset.get_run_info("vlsr").config.eps == 0.001

    # merging: clusters under 4 samples join their nearest neighbour unless farther than 0.5
    cluster_and_merge(dataset, mode="paper", min_cluster_size=4, max_merge_distance=0.5,
                      size_by="labels")
    config = dataset.get_run_info("vlsr").config
    assert (config.eps, config.min_cluster_size, config.max_merge_distance, config.size_by) == (
        None, 4, 0.5, "labels")
    assert dataset.load_run_results("vlsr", cache=False).canonical == CANONICAL

    # the paper's forced merging: everything folds into the biggest cluster
    cluster_and_merge(dataset, mode="paper", min_cluster_size=10)
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


class WordEncoder:
    """A label model that embeds each label as its concept, but "Lathe Information" as "drill";
    counts what it embeds."""

    model_name = "words"

    def __init__(self):
        self.texts = []

    def embed_texts(self, texts, progress=None):
        self.texts.extend(texts)
        out = np.zeros((len(texts), 32), np.float32)
        for i, t in enumerate(texts):
            concept = LABELS[t][0]
            out[i, CONCEPT_AXIS["drill" if concept == "lathe" else concept]] = 1.0
        return out


def test_a_label_model_embeds_the_labels_for_merging_while_scores_stay_clip(main):
    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    scores = by_name(dataset, "gt.classifications.vlsr_similarity")
    assert dataset.load_run_results("vlsr", cache=False).canonical == CANONICAL

    words = WordEncoder()
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), label_model="words",
                                label_encoder=words)
    assert sorted(words.texts) == sorted(VOCAB)  # every label once, the images untouched
    # the report says so (it said "0 new labels" alone: those are the labels new to CLIP)
    assert (report.n_labels_embedded, report.n_merge_embedded) == (0, len(VOCAB))
    assert f"{len(VOCAB)} labels embedded by words for merging" in report.summary()
    assert dataset.get_run_info("vlsr").config.label_model == "words"
    score_labels(dataset)
    cluster_and_merge(dataset, min_cluster_size=1)
    canonical = dataset.load_run_results("vlsr", cache=False).canonical
    assert canonical["Lathe Information"] == "drill"  # merged by the label model's embeddings
    assert canonical["Helmets"] == "helmet"
    assert by_name(dataset, "gt.classifications.vlsr_similarity") == scores  # scored by CLIP

    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), label_model="words",
                                label_encoder=words)
    assert len(words.texts) == len(VOCAB)  # nothing new to embed
    assert report.n_merge_embedded == 0 and "for merging" not in report.summary()
    # other weights under the name: every label again, not a table of two models' rows
    words.fingerprint, other = "sha256-all:a", WordEncoder()
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), label_model="words",
                       label_encoder=words)
    cluster_and_merge(dataset, min_cluster_size=1)
    other.fingerprint = "sha256-all:b"
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), label_model="words",
                       label_encoder=other)
    assert sorted(other.texts) == sorted(VOCAB)
    config = dataset.get_run_info("vlsr").config
    assert config.label_model_fingerprint == "sha256-all:b"
    # the clusters of the label model before are out of date: Apply and the export wait
    assert config.stages["cluster"] == "outdated" and config.stages["score"] == "complete"

    cluster_and_merge(dataset, min_cluster_size=1)
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))  # back to CLIP's text tower
    assert dataset.get_run_info("vlsr").config.label_model is None
    assert dataset.get_run_info("vlsr").config.stages["cluster"] == "outdated"
    cluster_and_merge(dataset, min_cluster_size=1)
    assert dataset.load_run_results("vlsr", cache=False).canonical == CANONICAL


def test_the_words_a_tokenizer_splits_are_counted_by_the_encoder_of_the_merge(main):
    """They name clusters (tests/test_grouping.py): counted with CLIP's tokenizer, or the label
    model's when there is one; a run recorded before the counts gets them without embedding."""
    dataset, images = main
    encoder = FakeEncoder(images)
    encoder.tokenizer = wordpiece(["helmet", "screwdriver", "drill", "lathe"])
    run_vlsr(dataset, "gt", encoder=encoder, min_cluster_size=1)
    results = dataset.load_run_results("vlsr", cache=False)
    words = dict(zip(results.labels, results.unknown_words.tolist()))
    assert (words["helmet"], words["helmit"], words["Helmets"], words["Lathe Information"]) == (
        0.0, 1.0, 1.0, 0.5)
    assert len(results.naming) == len(results.vocabulary)
    naming = results.naming

    # as a run clustered before the naming was recorded: a review names as the run did
    results.naming = np.zeros(0, np.int64)
    dataset.save_run_results("vlsr", results, overwrite=True)
    assert np.array_equal(clustered_label_map(dataset, "vlsr")[0].naming, naming)

    # as a run embedded before the words were counted: the next embedding counts them
    results.unknown_words = np.zeros(0, np.float32)
    dataset.save_run_results("vlsr", results, overwrite=True)
    n_texts = len(encoder.texts)
    compute_embeddings(dataset, "gt", encoder=encoder, images=False)
    results = dataset.load_run_results("vlsr", cache=False)
    assert len(encoder.texts) == n_texts  # nothing embedded again
    assert dict(zip(results.labels, results.unknown_words.tolist())) == words

    words = WordEncoder()
    words.tokenizer = wordpiece(["helmit"])
    compute_embeddings(dataset, "gt", encoder=encoder, label_model="words", label_encoder=words)
    results = dataset.load_run_results("vlsr", cache=False)
    counts = dict(zip(results.labels, results.unknown_words.tolist()))
    assert (counts["helmit"], counts["helmet"]) == (0.0, 1.0)


def test_a_label_model_that_cannot_be_loaded_leaves_the_run_as_it_was(main, tmp_path):
    from vlsr_core.model.encoder import ModelLoadError

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    n_embedded = dataset.count("vlsr_embedding")
    with pytest.raises(ModelLoadError):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images, model_name="other-clip"),
                           label_model=str(tmp_path / "nowhere"))
    config = dataset.get_run_info("vlsr").config
    assert (config.model, config.label_model) == ("fake-clip", None)
    assert dataset.count("vlsr_embedding") == n_embedded
    assert dataset.load_run_results("vlsr", cache=False).canonical == CANONICAL


def test_image_evidence_joins_a_synonym_whose_images_agree(dataset, tmp_path, monkeypatch):
    """"power drill" sits 0.36 from "drill" in text (beyond eps, within the image-evidence radius) and is
    put on drill pictures: image evidence joins it. "screw gun", as near to "screwdriver", is put
    on drill pictures too: it stays apart. Without image evidence both do."""
    import fake_clip
    from fake_clip import MAIN, build
    from vlsr_core.fo.summary import summarize_run

    monkeypatch.setitem(fake_clip.LABELS, "power drill", ("drill", 9, 1.2))
    monkeypatch.setitem(fake_clip.LABELS, "screw gun", ("screwdriver", 10, 1.2))
    spec = MAIN + [(f"pd{i}.png", "drill", ["power drill"]) for i in range(2)] + [
        (f"sg{i}.png", "drill", ["screw gun"]) for i in range(2)]
    images = build(dataset, tmp_path / "images", spec)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    canonical = dataset.load_run_results("vlsr", cache=False).canonical
    assert canonical["power drill"] == "power drill" and canonical["screw gun"] == "screw gun"

    # 9 labels: too few to draw the threshold from, and the summary says so
    cluster_and_merge(dataset, min_cluster_size=1, image_evidence=True)
    assert dataset.load_run_results("vlsr", cache=False).canonical["power drill"] == "power drill"
    assert ("image evidence not used (fewer than 10 labels are carried by two images or more)"
            in summarize_run(dataset, "vlsr"))

    monkeypatch.setattr("vlsr_core.engine.grouping.MIN_HALVES", 3)  # this small set suffices
    cluster_and_merge(dataset, min_cluster_size=1, image_evidence=True)
    results = dataset.load_run_results("vlsr", cache=False)
    assert results.canonical == CANONICAL | {"power drill": "drill", "screw gun": "screw gun"}
    assert dataset.get_run_info("vlsr").config.image_evidence is True
    evidence = results.merge_steps["image_evidence"]
    assert evidence["image links"] == 1 and evidence["labels with images"] == 9
    power = [s.id for s in dataset if os.path.basename(s.filepath).startswith("pd")]
    assert {dataset[i].vlsr_label.label for i in power} == {"drill"}
    report = summarize_run(dataset, "vlsr")
    assert "after image evidence (1 join; 9 labels with images)" in report
    assert evidence["joins"] == [["drill", "power drill"]]
    assert "image evidence: `drill` / `power drill`" in report


def test_image_evidence_joins_a_misspelling_far_in_text_whose_images_agree(dataset, tmp_path,
                                                                           monkeypatch):
    """"dirll" is one swap from "drill" but 0.68 from it in text, beyond the typo guard and the
    image-evidence radius; on drill pictures it joins "drill" by its images, and the summary
    lists it. "screwdiver", as far from "screwdriver" and also on drill pictures, stays apart."""
    import fake_clip
    from fake_clip import MAIN, build
    from vlsr_core.fo.summary import summarize_run

    monkeypatch.setitem(fake_clip.LABELS, "dirll", ("drill", 9, 3.0))
    monkeypatch.setitem(fake_clip.LABELS, "screwdiver", ("screwdriver", 10, 3.0))
    spec = MAIN + [(f"dl{i}.png", "drill", ["dirll"]) for i in range(2)] + [
        (f"sd{i}.png", "drill", ["screwdiver"]) for i in range(2)]
    images = build(dataset, tmp_path / "images", spec)
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    canonical = dataset.load_run_results("vlsr", cache=False).canonical
    assert canonical["dirll"] == "dirll" and canonical["screwdiver"] == "screwdiver"

    monkeypatch.setattr("vlsr_core.engine.grouping.MIN_HALVES", 3)
    cluster_and_merge(dataset, min_cluster_size=1, image_evidence=True)
    results = dataset.load_run_results("vlsr", cache=False)
    assert results.canonical == CANONICAL | {"dirll": "drill", "screwdiver": "screwdiver"}
    evidence = results.merge_steps["image_evidence"]
    assert evidence["spelling links"] == 1 and evidence["joins"] == [["dirll", "drill"]]
    report = summarize_run(dataset, "vlsr")
    assert "(1 join, 1 of spelling variants far in text; 9 labels with images)" in report
    assert "spelling variants far in text, by the images: `dirll` / `drill`" in report


def test_the_summary_warns_of_one_cluster_holding_much_of_the_vocabulary(dataset, tmp_path,
                                                                         tiny_clip):
    """DBSCAN at an eps too large chains labels into one cluster whose canonical label would
    name them all: the summary says so, with what to do; a run of separate clusters does not."""
    from PIL import Image

    from vlsr_core.fo.summary import summarize_run

    rng = np.random.default_rng(0)
    labels = [f"part {chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(60)]
    for i, label in enumerate(labels):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        dataset.add_sample(fo.Sample(filepath=str(path), gt=fo.Classification(label=label)))
    run_vlsr(dataset, "gt", model=tiny_clip, mode="paper", eps=1.99, min_cluster_size=1)
    summary = summarize_run(dataset, "vlsr")
    assert "**One cluster holds 60 of 60 labels (100%):**" in summary
    assert "cluster again with a smaller eps (the cluster form's *eps*, `vlsr run --eps`)" in summary
    cluster_and_merge(dataset, mode="paper", eps=1e-6, min_cluster_size=1)
    assert "One cluster holds" not in summarize_run(dataset, "vlsr")
    # the casings of one label, joined by spelling, are no chain (App audit: 95 casings of
    # "helmet" were said to come from DBSCAN chaining, to be clustered with a smaller eps)
    casings = ["".join(c.upper() if k >> j & 1 else c for j, c in enumerate("helmet"))
               for k in range(64)]
    dataset.set_values("gt", [fo.Classification(label=casings[i]) for i in range(len(dataset))])
    run_vlsr(dataset, "gt", key="casings", model=tiny_clip, min_cluster_size=1)
    summary = summarize_run(dataset, "casings")
    assert "1 canonical label" in summary and "One cluster holds" not in summary
    # chained, it says so in the readings it counts (review: "60 of 1,000 labels (6%)")
    dataset.set_values("gt", [fo.Classification(label=l) for l in labels[:56] + casings[:4]])
    run_vlsr(dataset, "gt", key="chained", model=tiny_clip, mode="paper", eps=1.99,
             min_cluster_size=1)
    assert ("**One cluster holds 60 of 60 labels, 57 of the 57 ways they read (100%):**"
            in summarize_run(dataset, "chained"))


def test_a_run_clustered_before_distances_were_recorded_lists_and_exports_every_label(
        main, tmp_path):
    """Audit: a run of a version that kept no distance to the canonical label exported a
    label_map.csv of its header alone, said to be done, and `vlsr review show` failed."""
    import csv

    from vlsr_core.fo.browse import cluster_rows
    from vlsr_core.fo.export import export_run
    from vlsr_core.fo.review import review_state

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1, mode="paper",
             eps=0.2)
    results = dataset.load_run_results("vlsr", cache=False)
    distance = dict(zip(results.vocabulary, results.distance_to_canonical.tolist()))
    results.distance_to_canonical = np.zeros(0, np.float32)
    dataset.save_run_results("vlsr", results, overwrite=True)
    state = review_state(dataset, "vlsr")
    assert np.allclose([distance[l] for l in state.label_map.vocabulary],
                       state.label_map.distance_to_canonical, atol=1e-6)
    assert cluster_rows(state)  # (it failed: "array is not broadcastable")
    export_run(dataset, str(tmp_path / "out"))
    with open(tmp_path / "out" / "label_map.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["label"]: round(float(r["distance_to_canonical"]), 4) for r in rows} == {
        l: round(max(d, 0.0), 4) for l, d in distance.items()}


def test_the_most_doubtful_clusters_come_first_by_the_distance_shown(main):
    """App walk: clusters at distances of float noise (1e-7, shown 0.000) were listed in any
    order, a cluster on 2 samples before one on 12."""
    from vlsr_core.fo.browse import cluster_rows
    from vlsr_core.fo.review import review_state

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1, mode="paper",
             eps=0.001)
    results = dataset.load_run_results("vlsr", cache=False)
    rng = np.random.default_rng(0)
    results.distance_to_canonical = rng.uniform(-1e-7, 1e-7, len(results.vocabulary)).astype(
        np.float32)
    dataset.save_run_results("vlsr", results, overwrite=True)
    rows = cluster_rows(review_state(dataset, "vlsr"))
    assert {r["farthest"] for r in rows} == {0.0}
    occurrences = [r["occurrences"] for r in rows]
    assert occurrences == sorted(occurrences, reverse=True)

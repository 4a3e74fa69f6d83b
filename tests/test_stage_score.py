"""The scoring stage (score_labels): scores on every label, suggestions, review views.

Behaviour is judged by what the stages leave in the database, on the fake CLIP of
:mod:`fake_clip`, whose right answers are known.
"""

import fiftyone as fo
import os

import numpy as np
import pytest
from fiftyone import ViewField as F

from vlsr_core.engine.params import ScoreParams
from vlsr_core.fo.runs import saved_view_names
from vlsr_core.fo.stages import VLSRError, cluster_and_merge, compute_embeddings, run_vlsr, score_labels

from fake_clip import (
    MAIN,
    VOCAB,
    FakeEncoder,
    build,
    by_name,
    dot,
    view_labels,
    view_names,
)

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


def test_a_view_of_more_weak_labels_than_one_query_holds_keeps_the_weakest(ran, monkeypatch):
    """Review: the weak labels are written into the saved view's query, which MongoDB caps
    at 16 MB; past it, saving the view failed at the end of the scoring. The view now holds
    the weakest labels that fit, and says so."""
    from vlsr_core.fo import labels, score

    dataset = ran[0]
    name = saved_view_names("vlsr")["weak_labels"]
    score_labels(dataset, low_quantile=0.99)
    weak = {l for _, l in view_labels(dataset, name)}
    best = {}
    for ls, ss in zip(*dataset.values(["gt.classifications.label",
                                       "gt.classifications.vlsr_similarity"])):
        for l, sc in zip(ls or [], ss or []):
            if sc is not None:
                best[l] = max(best.get(l, -1.0), sc)
    weakest = sorted(weak, key=lambda l: (best[l], l))[:len(weak) // 2]
    fits = labels.query_bytes(labels.one_of(F("label"), weakest))
    monkeypatch.setattr(score, "QUERY_BYTES", fits)
    score_labels(dataset, low_quantile=0.99)
    assert len(weak) >= 4 and {l for _, l in view_labels(dataset, name)} == set(weakest)
    assert dataset.get_saved_view_info(name)["description"].startswith(
        f"the {len(weakest)} weakest of the {len(weak)} labels that score below ")


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
    # the worst first, as a curator reviews them (the dataset holds h3, h4, s3 in this order)
    def in_order(name):
        return [os.path.basename(p) for p in dataset.load_saved_view(name).values("filepath")]

    assert in_order(names["low_similarity"]) == ["s3.png", "h4.png"]  # by vlsr_min_similarity
    assert in_order(names["better_label"]) == ["s3.png", "h4.png", "h3.png"]  # by vlsr_best_gap


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
    with pytest.raises(VLSRError, match=r"6 labels without an embedding yet.*: embed them first \(VLSR 1: compute "
                                        r"embeddings in the App, vlsr run on the command line\)"):
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
    with pytest.raises(VLSRError, match="'note' is StringField.*Detections fields$"):
        compute_embeddings(dataset, "note", encoder=FakeEncoder(images))
    # the path of the labels in a field, rather than the field: the field is named
    for path in ("gt.classifications", "gt.classifications.label"):
        with pytest.raises(VLSRError, match=f"'{path}' is .*Detections fields: give 'gt'$"):
            compute_embeddings(dataset, path, encoder=FakeEncoder(images))
    assert not dataset.has_run("vlsr") and not dataset.has_field("vlsr_embedding")


def test_a_label_starting_with_a_dollar_is_matched_as_written(dataset, tmp_path, monkeypatch):
    """FiftyOne's ``is_in`` and ``==`` read '$lathe' as the field path 'lathe': the weak-labels
    view and the panel's views of a label or a cluster held none of its samples."""
    import fake_clip
    from vlsr_core.fo.browse import labels_named

    monkeypatch.setitem(fake_clip.LABELS, "$lathe", ("lathe", None, 0.0))
    images = build(dataset, tmp_path / "images", spec=[
        ("h1.png", "helmet", ["helmet"]), ("h4.png", "helmet", ["$lathe", "helmet"]),
        ("s1.png", "screwdriver", ["screwdriver"])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert ("h4.png", "$lathe") in view_labels(dataset, saved_view_names("vlsr")["weak_labels"])
    for view in (labels_named(dataset, "vlsr", "gt", labels=["$lathe"]),
                 labels_named(dataset, "vlsr", "gt", canonical="$lathe")):
        assert view.values("gt.classifications.label") == [["$lathe"]]
    # an accepted '$lathe' suggestion is told as suggested, not "not among the suggestions"
    from vlsr_core.fo.review import add_edit, not_suggested

    h4 = next(s for s in dataset if s.filepath.endswith("h4.png"))
    assert "$lathe" in [c.label for c in h4.vlsr_suggestions.classifications]
    edit = add_edit(dataset, "vlsr", "accept_suggestion", "$lathe", samples=[h4.id])
    assert not_suggested(dataset, "vlsr", edit) == ""


def test_a_dataset_at_mongodbs_index_limit_is_scored_without_the_indexes(main, caplog):
    """Each run indexes a few fields for sorting: the 21st scored run of one dataset failed
    with MongoDB's "add index fails, too many indexes"."""
    from pymongo.errors import OperationFailure

    dataset, images = main
    try:
        for i in range(64):  # (MongoDB's limit, the _id index included)
            dataset._sample_collection.create_index(f"filler_{i}")
    except OperationFailure as e:
        assert "too many indexes" in str(e)
    with caplog.at_level("WARNING"):
        run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert dataset.count("gt.classifications.vlsr_similarity") > 0
    assert "vlsr_min_similarity is not indexed (the dataset has as many indexes as MongoDB " \
           "allows" in caplog.text


def test_a_curators_tags_on_suggestions_stay_on_a_suggestion_made_again(ran):
    """Tags given in the App to suggestions were lost when the labels were scored again."""
    dataset = ran[0]
    dataset.filter_labels("vlsr_suggestions", F("label") == "helmet").tag_labels(
        "good", label_fields="vlsr_suggestions")
    tagged = {n for n, ls in by_name(dataset, "vlsr_suggestions.classifications.label").items()
              if ls and "helmet" in ls}
    score_labels(dataset, "vlsr", top_k=5)
    labels = by_name(dataset, "vlsr_suggestions.classifications.label")
    tags = by_name(dataset, "vlsr_suggestions.classifications.tags")
    assert tagged and all(len(labels[n]) == 5 for n in tagged)
    for name in tagged:
        assert all((t == ["good"]) == (l == "helmet") for l, t in zip(labels[name], tags[name]))


def test_scoring_again_writes_only_what_changed(ran):
    """Audit: a run again that changed nothing wrote every sample again, so their last change
    moved and an export of them was not the same bytes (its COCO date is that change)."""
    dataset = ran[0]
    dataset.filter_labels("vlsr_suggestions", F("label") == "helmet").tag_labels(
        "good", label_fields="vlsr_suggestions")
    before = dict(zip(dataset.values("filepath"), dataset.values("last_modified_at")))
    snapshot = [s.to_dict() for s in dataset]
    score_labels(dataset, "vlsr", top_k=3)  # (as the run's: ran)
    assert dict(zip(dataset.values("filepath"), dataset.values("last_modified_at"))) == before
    assert [s.to_dict() for s in dataset] == snapshot
    # one score spoilt by hand: that sample alone is written again, and its score is right
    sample = dataset.match(F("filepath").ends_with("h1.png")).first()
    sample.gt.classifications[0]["vlsr_similarity"] = 0.123
    sample.save()
    touched = sample.last_modified_at
    score_labels(dataset, "vlsr", top_k=3)
    after = dict(zip(dataset.values("filepath"), dataset.values("last_modified_at")))
    assert [p for p in after if after[p] != before[p]] == [sample.filepath]
    assert after[sample.filepath] > touched
    now = [s.to_dict() for s in dataset]
    assert [d for d in now if d["filepath"] != sample.filepath] == [
        d for d in snapshot if d["filepath"] != sample.filepath]
    old, new = ([d for d in docs if d["filepath"] == sample.filepath][0] for docs in (snapshot, now))
    assert new["gt"] == old["gt"]  # its score as it was
    assert [(c["label"], c["tags"]) for c in new["vlsr_suggestions"]["classifications"]] == [
        (c["label"], c["tags"]) for c in old["vlsr_suggestions"]["classifications"]]


def test_a_run_again_or_deleted_keeps_its_dataset_when_its_views_read_state(main):
    """Audit: FiftyOne takes a saved view whose text holds "_state" for a generated view, and
    marks the dataset non-persistent when it is overwritten or deleted: with a run key (or a
    label, or a field) holding "_state", a second run or a delete-run lost the whole dataset
    when the process left."""
    from vlsr_core.fo.runs import delete_run

    dataset, images = main
    dataset.persistent = True  # (the fixture deletes it all the same)

    def persistent():
        dataset._doc.reload("persistent")  # as stored: what FiftyOne's clean-up reads
        return dataset.persistent

    for _ in range(2):  # the second run overwrites the review views
        run_vlsr(dataset, "gt", "pre_state", encoder=FakeEncoder(images), min_cluster_size=1)
        assert persistent()
    delete_run(dataset, "pre_state")
    assert persistent() and not dataset.list_saved_views()

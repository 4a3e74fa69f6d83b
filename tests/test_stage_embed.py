"""The embedding stage (compute_embeddings, compute_image_embeddings): what it writes, resumes, skips and refuses.

Behaviour is judged by what the stages leave in the database, on the fake CLIP of
:mod:`fake_clip`, whose right answers are known.
"""

import collections
import itertools
import os

import fiftyone as fo
import numpy as np
import pytest
from fiftyone import ViewField as F

from vlsr_core.fo import embed, stages, stamps
from vlsr_core.fo.runs import sample_fields
from vlsr_core.fo.stages import VLSRError, compute_embeddings, run_vlsr

from fake_clip import (
    DIM,
    MAIN,
    UNREADABLE,
    VOCAB,
    FakeEncoder,
    build,
    by_name,
    dot,
    image_vector,
    label_vector,
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
    # tried again, unreadable as before: reported, and not written again (audit: each run
    # moved their last change, and with it the date of the next export's COCO file)
    changed = dataset.max("last_modified_at")
    report = compute_embeddings(dataset, "gt", encoder=encoder)
    assert sorted(os.path.basename(p) for _, p, _ in report.failures) == sorted(UNREADABLE)
    assert dataset.max("last_modified_at") == changed


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


def test_an_image_replaced_since_it_was_embedded_is_embedded_again(main):
    from PIL import Image

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    path = next(p for p in dataset.values("filepath") if p.endswith("d1.png"))
    Image.new("RGB", (48, 32), (200, 10, 10)).save(path)  # a curator fixes the picture
    images["d1.png"] = image_vector("glove", "d1-new")
    spy = FakeEncoder(images)
    report = compute_embeddings(dataset, "gt", encoder=spy)
    assert sorted(os.path.basename(p) for call in spy.path_calls for p in call) == [
        "d1.png", "missing.png", "zero.png"]
    assert (report.n_embedded, report.n_changed, report.n_skipped) == (1, 1, 11)
    assert report.summary().startswith(
        "embedded 1 image (11 already done, 2 unreadable) and 0 new labels; 1 image tried "
        "again, as its file changed since it was embedded")
    assert np.array_equal(by_name(dataset, "vlsr_embedding")["d1.png"], images["d1.png"])
    # changed again, into a file that cannot be read: counted once, as unreadable
    with open(path, "wb") as f:
        f.write(b"not an image")
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert report.summary().startswith("embedded 0 images (11 already done, 3 unreadable)")
    assert report.n_embedded + report.n_skipped + len(report.failures) == len(dataset)
    Image.new("RGB", (48, 32), (200, 10, 10)).save(path)
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    # a folder out of reach (a drive not mounted) is not a change: the embeddings stay
    folder = os.path.dirname(path)
    os.rename(folder, folder + "-away")
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert (report.n_embedded, report.n_changed, report.n_skipped) == (0, 0, 12)
    assert len(dataset.exists("vlsr_embedding")) == 12
    # said (audit: nothing did)
    assert report.n_missing == 12 and "; 12 images embedded before cannot be found now (a " \
        "drive not mounted? they keep their embedding)" in report.summary()
    os.rename(folder + "-away", folder)
    # once embedded again it is current
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).n_changed == 0
    # an embedding without its stamp (a kill between the two writes) is made again, stamped
    # (audit: it was taken for done, and a change to its file went unnoticed for good)
    os.utime(path, ns=(0, 0))
    dataset.match(F("filepath") == path).set_field("vlsr_image_file", None).save()
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).n_embedded == 1
    assert by_name(dataset, "vlsr_image_file")["d1.png"][:2] == [os.path.getsize(path), 0]
    # the embeddings of a run made before files were stamped are stamped as their files are
    # now, not embedded again (audit: a file replaced after the upgrade went unnoticed too)
    from vlsr_core.fo.runs import update_run_doc

    dataset.set_values("vlsr_image_file", [None] * len(dataset))
    update_run_doc(dataset, "vlsr", {"$unset": {"config.stamped": ""}})
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert report.n_embedded == 0 and report.n_stamped == 12
    assert ("; 12 images embedded by an earlier version of vlsr were noted as their files are "
            "now, so that a later change is noticed (a file replaced before is not: --recompute "
            "embeds every image again)") in report.summary()
    Image.new("RGB", (40, 32), (9, 10, 10)).save(path)
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert (report.n_embedded, report.n_changed, report.n_stamped) == (1, 1, 0)
    # once all are stamped, the run is one that stamps: a stamp lost is a kill's, embedded
    # again (review: it was stamped anew, for good)
    assert dataset.get_run_info("vlsr").config.stamped is True
    dataset.match(F("filepath") == path).set_field("vlsr_image_file", None).save()
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).n_embedded == 1


def test_embeddings_another_runs_model_made_brought_by_a_merge_are_refused_then_embedded_again(
        main, tmp_path):
    """Audit: merge_samples of a dataset run with another model of the same size brought its
    embeddings under the run's field: a resume took them as done ("330 already done"), and
    scores and clusters mixed the two models without a word."""
    from vlsr_core.fo.export import ExportError, export_run
    from vlsr_core.fo.stages import cluster_and_merge, score_labels
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    other = fo.Dataset()
    theirs = build(other, tmp_path / "other", MAIN[:4])
    run_vlsr(other, "gt", encoder=FakeEncoder(theirs, model_name="other-clip"), min_cluster_size=1)
    dataset.merge_samples(other)
    said = r"^4 images hold embeddings that another model made \(brought from another run"
    with pytest.raises(VLSRError, match=said):
        score_labels(dataset)
    with pytest.raises(ExportError, match=said):
        export_run(dataset, str(tmp_path / "out"))
    assert "**Embedded by another model:** 4 images hold" in summarize_run(dataset, "vlsr")
    spy = FakeEncoder(images)
    report = compute_embeddings(dataset, "gt", encoder=spy)  # only those, without --recompute
    embedded = [p for call in spy.path_calls for p in call]
    assert sorted(embedded) == sorted(other.values("filepath") + [
        p for p in dataset.values("filepath") if p.endswith(("missing.png", "zero.png"))])
    assert (report.n_changed, report.n_foreign) == (0, 4)
    assert "; 4 images tried again, as another model embedded them" in report.summary()
    score_labels(dataset)  # the run's own model's embeddings now
    with pytest.raises(ExportError, match="cluster and merge ran before the last change"):
        export_run(dataset, str(tmp_path / "out"))  # (the final labels of those 4: the other's)
    cluster_and_merge(dataset, min_cluster_size=1)
    export_run(dataset, str(tmp_path / "out"))
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).n_embedded == 0


def test_embeddings_of_another_model_merged_onto_images_the_run_embedded_are_embedded_again(
        main):
    """Audit: merge_samples of the same images, run with another model, kept the other
    model's embeddings and appended its stamp to the run's: read as the run's own, they were
    scored without a word, and a run again did not embed them."""
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    other = fo.Dataset()
    other.add_samples([fo.Sample(filepath=s.filepath, gt=fo.Classifications(classifications=[
        fo.Classification(label=c.label, _id=c._id) for c in s.gt.classifications]))
        for s in dataset.match(F("gt").exists()).limit(3)])  # (the same labels)
    run_vlsr(other, "gt", encoder=FakeEncoder(images, model_name="other-clip"), min_cluster_size=1)
    dataset.merge_samples(other)  # (by file path: onto the run's own samples)
    merged = set(other.values("filepath"))
    assert "**Embedded by another model:** 3 images hold" in summarize_run(dataset, "vlsr")
    spy = FakeEncoder(images)
    report = compute_embeddings(dataset, "gt", encoder=spy)
    assert merged <= {p for call in spy.path_calls for p in call}
    assert (report.n_changed, report.n_foreign) == (0, 3)
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).n_foreign == 0


def test_a_shard_embeds_again_only_the_changed_images_of_its_own_samples(main):
    from PIL import Image

    from vlsr_core.fo.chunks import shards

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    for name in ("h1.png", "d1.png"):  # one in each half
        path = next(p for p in dataset.values("filepath") if p.endswith(name))
        Image.new("RGB", (48, 32), (200, 10, 10)).save(path)
    first, second = shards(dataset, 2)
    for part, name in ((first, "h1.png"), (second, "d1.png")):
        spy = FakeEncoder(images)
        report = compute_embeddings(part, "gt", encoder=spy)
        called = sorted(os.path.basename(p) for call in spy.path_calls for p in call)
        assert (report.n_changed, report.n_embedded) == (1, 1)
        assert called == sorted([name, *(["missing.png", "zero.png"] if part is second else [])])
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).n_changed == 0


def test_interrupted_run_keeps_written_batches_and_resumes(main, monkeypatch):
    dataset, images = main
    monkeypatch.setattr(embed, "WRITE_EVERY", 2)
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


def test_an_image_embedded_again_puts_the_scores_and_labels_out_of_date_until_they_run(
        main, tmp_path):
    """Audit: a run stopped after images changed on disk were embedded again left the scores
    and final labels of the pictures before, and the summary and export said nothing."""
    from PIL import Image

    from vlsr_core.fo.export import ExportError, export_run
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    path = next(p for p in dataset.values("filepath") if p.endswith("d1.png"))
    Image.new("RGB", (48, 32), (200, 10, 10)).save(path)
    images["d1.png"] = image_vector("glove", "d1-new")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))  # (then stopped)
    assert "**Out of date:** score labels and cluster and merge ran before" in summarize_run(
        dataset, "vlsr")
    with pytest.raises(ExportError, match="of image files embedded again"):
        export_run(dataset, tmp_path / "out")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert "Out of date" not in summarize_run(dataset, "vlsr")
    export_run(dataset, tmp_path / "out")
    # nothing embedded again: nothing out of date
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert "Out of date" not in summarize_run(dataset, "vlsr")


def test_a_recompute_stopped_part_way_goes_on_with_the_images_it_had_not_reached(
        main, monkeypatch):
    """Audit: after a recompute was interrupted, a run without recompute (as the message said)
    took every image as done, the ones not reached keeping embeddings of their old pictures."""
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    monkeypatch.setattr(embed, "WRITE_EVERY", 2)
    new = {n: image_vector("glove", "new" + n) for n in images}  # files replaced in place
    with pytest.raises(RuntimeError, match="simulated crash"):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(new, batch_size=2, fail_after=3),
                           recompute=True)
    embedded = by_name(dataset, "vlsr_embedding")
    redone = {n for n in images if np.array_equal(embedded[n], new[n])}
    assert 0 < len(redone) < len(images)
    summary = summarize_run(dataset, "vlsr")
    assert "wait to be embedded again" in summary and "another model" not in summary
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(new))
    assert report.n_embedded == len(images) - len(redone) and report.n_changed == 0
    embedded = by_name(dataset, "vlsr_embedding")
    assert all(np.array_equal(embedded[n], new[n]) for n in images)
    assert "wait to be embedded again" not in summarize_run(dataset, "vlsr")
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(new)).n_embedded == 0


def test_a_slow_run_writes_its_embeddings_every_few_seconds(main, monkeypatch):
    """Far fewer than WRITE_EVERY images, but more than WRITE_SECONDS of work: what was done
    before a crash is kept."""
    dataset, images = main
    clock = itertools.count(0, 3)  # every look at the writer's clock is 3 s later
    monkeypatch.setattr(embed, "_clock", lambda: next(clock))
    crashing = FakeEncoder(images, batch_size=2, fail_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        compute_embeddings(dataset, "gt", encoder=crashing)
    embedded = by_name(dataset, "vlsr_embedding")
    assert sum(v is not None for v in embedded.values()) == 6  # nothing embedded is lost


def test_ctrl_c_keeps_every_image_embedded_before_it(main, monkeypatch):
    """Ctrl-C between two writes lost what was embedded since the last one (a CLI walk kept 64
    of about 150 images); what is in the writer's buffer is written on the way out."""
    dataset, images = main

    def interrupted(paths, *args):
        batches = FakeEncoder(images, batch_size=2).iter_image_batches(paths, *args)
        yield from itertools.islice(batches, 3)
        raise KeyboardInterrupt

    encoder = FakeEncoder(images)
    monkeypatch.setattr(encoder, "iter_image_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compute_embeddings(dataset, "gt", encoder=encoder)
    embedded = by_name(dataset, "vlsr_embedding")
    assert sum(v is not None for v in embedded.values()) == 6


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


@pytest.mark.parametrize("change", [dict(model_name="other-clip"), dict(prompt="a photo of a {}")])
def test_another_model_stopped_while_it_embeds_the_labels_embeds_them_all_when_run_again(
        main, change):
    """The new model was recorded before its label embeddings: stopped between the two (Ctrl-C,
    kill -9), the next run took the old model's label embeddings for the new one's and scored
    every label with them, with no word of it."""
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    other = FakeEncoder(images, **change)
    stopped = FakeEncoder(images, **change)

    def interrupted(texts, progress=None):
        raise KeyboardInterrupt

    stopped.embed_texts = interrupted
    with pytest.raises(KeyboardInterrupt):
        compute_embeddings(dataset, "gt", encoder=stopped)
    report = compute_embeddings(dataset, "gt", encoder=other)
    assert sorted(other.texts) == sorted(VOCAB)
    assert report.n_labels_embedded == len(VOCAB)


def test_scores_and_clusters_of_the_model_before_are_out_of_date_until_run_again(main, tmp_path):
    """VLSR 1 alone with another model (or a run stopped after it): the old model's scores,
    clusters and final labels stayed "complete", and were exported under the new model's name."""
    from vlsr_core.fo.export import ExportError, export_run
    from vlsr_core.fo.review import apply_review
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    other = FakeEncoder(images, prompt="a photo of a {}")
    compute_embeddings(dataset, "gt", encoder=other)
    said = ("score labels and cluster and merge ran before the last change of model, prompt, "
            "decoding, crops or label model, of image files embedded again, or of labels edited by hand: "
            "their fields hold what those gave until they run again")
    assert f"**Out of date:** {said}" in summarize_run(dataset, "vlsr")
    with pytest.raises(ExportError, match=said):
        export_run(dataset, tmp_path / "out")
    with pytest.raises(ValueError, match="cluster and merge ran before the last change"):
        apply_review(dataset, "vlsr")
    stages.score_labels(dataset, "vlsr")
    assert "**Out of date:** cluster and merge ran" in summarize_run(dataset, "vlsr")
    stages.cluster_and_merge(dataset, "vlsr", min_cluster_size=1)
    assert "Out of date" not in summarize_run(dataset, "vlsr")
    export_run(dataset, tmp_path / "out")


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


def test_switching_precision_reembeds_the_images_but_not_the_labels(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert dataset.get_run_info("vlsr").config.precision == "full"
    int8 = FakeEncoder(images, precision="int8")
    report = compute_embeddings(dataset, "gt", encoder=int8)
    assert sorted(os.path.basename(p) for p in int8.path_calls[0]) == sorted(n for n, _, _ in MAIN)
    assert int8.texts == [] and report.n_labels_embedded == 0
    assert dataset.get_run_info("vlsr").config.precision == "int8"
    from vlsr_core.fo.summary import summarize_run

    assert "**Embedded by** `fake-clip`; images at int8 precision" in summarize_run(dataset, "vlsr")
    # a shard at another precision would mix them
    with pytest.raises(VLSRError, match="precision full\\) is not the one of run 'vlsr' .*precision int8"):
        stages.compute_image_embeddings(dataset, encoder=FakeEncoder(images))


def test_compute_image_embeddings_refuses_an_encoder_unlike_the_runs(main):
    """A shard embedded by another model, prompt or decoding would mix incomparable vectors."""
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), images=False)
    for other, shown in [(FakeEncoder(images, jpeg_draft=True), "jpeg_draft True"),
                         (FakeEncoder(images, precision="bf16"), "precision bf16"),
                         (FakeEncoder(images, model_name="other-clip"), "other-clip"),
                         (FakeEncoder(images, prompt="a photo of a {}"), "a photo of a")]:
        with pytest.raises(VLSRError, match=shown):
            stages.compute_image_embeddings(dataset, encoder=other)
    assert not dataset.has_sample_field("vlsr_embedding")  # refused before anything was written
    assert stages.compute_image_embeddings(dataset, encoder=FakeEncoder(images)).n_embedded == len(images)


def test_an_image_shard_refuses_a_model_folder_whose_weights_changed(dataset, tmp_path):
    """A shard loads the run's model from its path: other weights there (replaced, or another
    copy on another machine) embedded a second model's vectors beside the first's."""
    import shutil

    from PIL import Image

    from vlsr_core.model.random_clip import save_random_clip

    for i in range(2):
        Image.new("RGB", (30, 20), (40 * i, 90, 9)).save(tmp_path / f"{i}.png")
        dataset.add_sample(fo.Sample(filepath=str(tmp_path / f"{i}.png"),
                                     gt=fo.Classification(label="drill")))
    model = save_random_clip(str(tmp_path / "clip"))
    compute_embeddings(dataset, "gt", model=model, images=False)
    shutil.rmtree(model)
    save_random_clip(model, seed=1)
    with pytest.raises(VLSRError, match=r"The model '.*clip' holds other weights "
                                        r"\(sha256-all:.*\) than those run 'vlsr' embedded with "
                                        r"\(sha256-all:.*\)"):
        stages.compute_image_embeddings(dataset, "vlsr")
    assert not dataset.has_sample_field("vlsr_embedding") or dataset.count("vlsr_embedding") == 0


def test_a_new_model_supersedes_the_scoring_shards_still_to_run(main):
    """Shards scored after a switch of model mixed two models' scores in one stage, and the
    last one marked it complete."""
    from vlsr_core.fo.chunks import shards
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    first, second = shards(dataset, 2)
    stages.prepare_score_shards(dataset, "vlsr", top_k=3)
    stages.score_shard(first, "vlsr")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images, model_name="other-clip"))
    with pytest.raises(VLSRError, match="Nothing written: this shard's score labels of run 'vlsr' "
                                        "is not the one in progress .the stage is running"):
        stages.score_shard(second, "vlsr")
    assert "**Incomplete:** *score labels* stopped part-way" in summarize_run(dataset, "vlsr")
    # so do the shards of a clustering, after another prompt
    stages.score_labels(dataset, "vlsr", top_k=3)
    stages.prepare_cluster_shards(dataset, "vlsr", min_cluster_size=1)
    stages.cluster_shard(first, "vlsr")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images, model_name="other-clip",
                                                          prompt="a photo of a {}"))
    with pytest.raises(VLSRError, match="cluster and merge of run 'vlsr' is not the one in "
                                        "progress .the stage is running"):
        stages.cluster_shard(second, "vlsr")


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
    # nor are they taken for embeddings of another model (their files' stamps stay)
    assert stamps.foreign_problem(dataset, "vlsr") is None


def test_recompute_reembeds_every_image(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    new = {n: image_vector("glove", "new" + n) for n in images}
    spy = FakeEncoder(new)
    report = compute_embeddings(dataset, "gt", encoder=spy, recompute=True)
    assert sorted(p for call in spy.path_calls for p in call) == sorted(dataset.values("filepath"))
    assert report.n_skipped == 0 and report.n_changed == 0  # (no file changed)
    assert spy.texts == []  # same model: the label embeddings are still valid
    embedded = by_name(dataset, "vlsr_embedding")
    for name, vector in new.items():
        assert np.array_equal(embedded[name], vector)


def test_images_embedded_after_a_scoring_make_it_and_the_clustering_out_of_date(main):
    """Audit (delegated shards): a scoring scheduled while image shards still ran scored a third
    of the samples, and stayed "complete" once the other shards had embedded the rest: no word
    of it in the summary, the threshold and views of a third, the export without suggestions
    for the others."""
    from vlsr_core.fo.runs import OUTDATED, outdated_note
    from vlsr_core.fo.stages import cluster_and_merge, compute_image_embeddings, score_labels

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), images=False)  # (as VLSR 1
    compute_image_embeddings(dataset.limit(6), encoder=FakeEncoder(images))  # queues shards)
    score_labels(dataset)
    cluster_and_merge(dataset, min_cluster_size=1)
    compute_image_embeddings(dataset, encoder=FakeEncoder(images))  # the other shards
    config = dataset.get_run_info("vlsr").config
    assert config.stages == {"score": OUTDATED, "cluster": OUTDATED}
    assert outdated_note(config).startswith("score labels and cluster and merge ran before")
    score_labels(dataset)
    cluster_and_merge(dataset, min_cluster_size=1)
    # embedding again with nothing new (the unreadable images tried again) leaves them be
    compute_image_embeddings(dataset, encoder=FakeEncoder(images))
    assert dataset.get_run_info("vlsr").config.stages == {"score": "complete",
                                                           "cluster": "complete"}


def test_a_recompute_of_an_image_whose_file_is_gone_says_so_rather_than_to_go_on(main):
    """Audit: after `vlsr run --recompute` with one file deleted, the summary said forever that
    the recompute stopped part-way and to run again to go on, which kept the image waiting."""
    from vlsr_core.fo.summary import summarize_run

    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    path = dataset.exists("vlsr_embedding").first().filepath
    os.rename(path, path + ".away")
    try:
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), recompute=True)
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))  # gone on: still gone
        assert stamps.recompute_left(dataset, "vlsr") == (1, [path])
        summary = summarize_run(dataset, "vlsr")
        assert "stopped part-way" not in summary
        assert (f"**Not embedded again:** 1 image that a recompute is to embed again cannot be "
                f"found now, e.g. {path} (a drive not mounted, a file deleted?): it keeps its "
                "embedding of the picture before, and is embedded again once found.") in summary
    finally:
        os.rename(path + ".away", path)
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).n_embedded == 1
    assert stamps.recompute_left(dataset, "vlsr") == (0, [])


def test_a_recompute_that_cannot_read_the_images_keeps_their_embeddings(main, monkeypatch):
    """Audit: `vlsr run --recompute --max-pixels 10` (a limit for this run only) refused
    every image and wrote None over each good embedding: hours of embedding gone."""
    import fake_clip
    from vlsr_core.model.images import BadImageError

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    before = by_name(dataset, "vlsr_embedding")
    read = fake_clip.load_image

    def too_large(path, **kwargs):
        raise BadImageError(path, "refused: 32 x 32 = 1,024 pixels exceeds the limit of 10")

    monkeypatch.setattr(fake_clip, "load_image", too_large)
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), recompute=True)
    assert len(report.kept) == 12 and report.n_embedded == 0
    assert sorted(os.path.basename(p) for _, p, _ in report.failures) == sorted(UNREADABLE)
    assert "; 12 images could not be embedded again (e.g. " in report.summary()
    assert report.summary().endswith(": refused: 32 x 32 = 1,024 pixels exceeds the limit of "
                                     "10): they keep their embedding, marked to be embedded again")
    after = by_name(dataset, "vlsr_embedding")
    assert {n: v is None for n, v in after.items()} == {n: v is None for n, v in before.items()}
    assert all(np.array_equal(after[n], v) for n, v in before.items() if v is not None)
    assert {n for n, e in by_name(dataset, "vlsr_error").items() if e} == set(UNREADABLE)
    assert stamps.recompute_left(dataset, "vlsr") == (12, [])  # (the summary says they wait)
    monkeypatch.setattr(fake_clip, "load_image", read)  # the limit raised: they are embedded
    assert compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).n_embedded == 12
    assert stamps.recompute_left(dataset, "vlsr") == (0, [])
    # (review) marked, then without their embeddings (a switch of model clears them): none to keep
    stamps._mark_for_recompute(dataset, sample_fields("vlsr"))
    dataset.set_values("vlsr_embedding", [None] * len(dataset))
    monkeypatch.setattr(fake_clip, "load_image", too_large)
    report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert report.kept == [] and len(report.failures) == 14


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


def test_a_label_the_tokenizer_reads_as_one_embedded_before_gets_its_vector(
        dataset, tmp_path, tiny_clip):
    """CLIP's tokenizer lowercases and trims: ``DRILL`` added later is ``drill`` to the model.
    It gets the vector ``drill`` got, bitwise, not one computed in another batch (whose padding
    moves the last bits): the two then score exactly alike and take one suggestion."""
    build(dataset, tmp_path, [("d1.png", "drill", ["drill", "helmet", "high visibility vest"])])
    compute_embeddings(dataset, "gt", model=tiny_clip, num_workers=0)
    build(dataset, tmp_path / "more", [("d2.png", "drill", ["DRILL", "Drill ", "glove"])])
    report = compute_embeddings(dataset, "gt", model=tiny_clip, num_workers=0)
    assert report.n_labels_embedded == 3
    results = dataset.load_run_results("vlsr", cache=False)
    vector = dict(zip(results.labels, results.label_embeddings))
    assert np.array_equal(vector["DRILL"], vector["drill"])
    assert np.array_equal(vector["Drill "], vector["drill"])
    assert not np.allclose(vector["glove"], vector["drill"], atol=1e-3)
    stages.score_labels(dataset, top_k=6)  # every label: a random model's ranking is no matter
    for suggested in dataset.values("vlsr_suggestions.classifications.label"):
        assert len([l for l in suggested if l.strip().lower() == "drill"]) == 1, suggested


def test_an_image_over_the_pixel_limit_is_read_once_the_limit_is_raised(dataset, tmp_path,
                                                                         tiny_clip):
    """The refusal names the setting that lets it through, and that setting exists."""
    build(dataset, tmp_path, [("scan.png", "drill", ["drill"]), ("b.png", "helmet", ["helmet"])])
    big = next(p for p in dataset.values("filepath") if p.endswith("scan.png"))
    from PIL import Image

    Image.new("RGB", (300, 200)).save(big)  # 60,000 pixels
    report = compute_embeddings(dataset, "gt", model=tiny_clip, num_workers=0, max_pixels=50_000)
    (_, path, reason), = report.failures
    assert path == big and "raise max_pixels, vlsr run --max-pixels" in reason
    report = compute_embeddings(dataset, "gt", model=tiny_clip, num_workers=0, max_pixels=60_000)
    assert report.n_embedded == 1 and not report.failures
    assert not hasattr(dataset.get_run_info("vlsr").config, "max_pixels")  # a one-off


def test_the_weights_load_only_when_something_is_to_embed(dataset, tmp_path, tiny_clip,
                                                          monkeypatch):
    """`vlsr run` to cluster again loaded CLIP (some 6 s of a 15 s run) with nothing to embed.
    A model that cannot be had still fails before the run changes."""
    from vlsr_core.model import encoder as encoder_module
    from vlsr_core.model.model_source import ModelLoadError

    loads, load = [], encoder_module._load
    monkeypatch.setattr(encoder_module, "_load", lambda m: loads.append(m) or load(m))
    build(dataset, tmp_path, [("d1.png", "drill", ["drill", "helmet"]),
                              ("d2.png", "helmet", ["helmet"])])
    run_vlsr(dataset, "gt", model=tiny_clip, num_workers=0, min_cluster_size=1)
    assert len(loads) == 1
    run_vlsr(dataset, "gt", model=tiny_clip, num_workers=0, min_cluster_size=2, eps=0.2)
    assert len(loads) == 1 and dataset.get_run_info("vlsr").config.eps == 0.2
    build(dataset, tmp_path / "more", [("d3.png", "drill", ["drill"])])  # an image, no label
    report = run_vlsr(dataset, "gt", model=tiny_clip, num_workers=0)
    assert len(loads) == 2 and report.n_embedded == 1

    def gone(model):
        raise ModelLoadError("no weights")

    monkeypatch.setattr(encoder_module, "_load", gone)
    build(dataset, tmp_path / "new", [("d4.png", "glove", ["glove"])])  # a label to embed
    before = dataset.load_run_results("vlsr", cache=False).labels
    with pytest.raises(ModelLoadError):
        run_vlsr(dataset, "gt", model=tiny_clip, num_workers=0)
    assert dataset.load_run_results("vlsr", cache=False).labels == before
    # (review: a recompute marked every image, and put the stages out of date, first)
    before = dataset.get_run_info("vlsr").config.stages
    for recompute in (True, False):
        with pytest.raises(ModelLoadError):
            stages.compute_image_embeddings(dataset, recompute=recompute)
        assert stamps.recompute_left(dataset, "vlsr") == (0, [])
        assert dataset.get_run_info("vlsr").config.stages == before == {
            "score": "complete", "cluster": "complete"}
    dataset.delete_run("vlsr")
    with pytest.raises(ModelLoadError):
        compute_embeddings(dataset, "gt", model=tiny_clip, num_workers=0)
    assert not dataset.has_run("vlsr")
    # audit: a label model that cannot be had (a typo) left a run registered with nothing in
    # it, on which the review and the panel then failed with an AttributeError
    monkeypatch.setattr(encoder_module, "_load", load)
    with pytest.raises(ModelLoadError):
        compute_embeddings(dataset, "gt", model=tiny_clip, num_workers=0,
                           label_model=str(tmp_path / "minilmm"))
    assert not dataset.has_run("vlsr")


def test_a_run_that_cut_no_box_says_so_not_cut_and_embedded_0_boxes():
    from vlsr_core.fo.stages import EmbeddingReport

    assert EmbeddingReport(n_crop_fallback=332).summary().endswith(
        "; no box cut: all 332 boxes too small, off the image or without coordinates (scored on the whole image)")
    assert "; cut and embedded 2 boxes (3 more too small" in EmbeddingReport(
        n_crops=2, n_crop_fallback=3).summary()

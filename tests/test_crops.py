"""Boxes scored on their own crops (``crops=True`` on a Detections field).

A workshop photo shows a drill press and, small, a screw and a glove. Against the whole image
the screw's correct label scores low, like a wrong one; on their crops the right and the wrong
labels separate. The fake CLIP says what each
crop shows (:class:`fake_clip.FakeEncoder` ``crop_vector``); what is tested is what the stages
leave in the database.
"""

import re

import fiftyone as fo
import pytest
from PIL import Image

from vlsr_core.fo.runs import saved_view_names
from vlsr_core.fo.stages import VLSRError, compute_embeddings, run_vlsr, score_labels
from vlsr_core.fo.summary import summarize_run
from vlsr_core.model.crops import crop_region

from fake_clip import FakeEncoder, build, by_name, image_vector, view_labels

SCREW = '2" wood screw, "large"'
WHOLE = [0.0, 0.0, 1.0, 1.0]
SCREW_BOX = [0.1, 0.5, 0.2, 0.3]
GLOVE_BOX = [0.6, 0.5, 0.3, 0.4]
TINY_BOX = [0.45, 0.1, 0.02, 0.02]  # under a pixel at 40 x 30: scored on the whole image
SHOWS = {  # what each box's crop shows
    tuple(SCREW_BOX): "screw",
    tuple(GLOVE_BOX): "glove",
    tuple(WHOLE): None,  # the image itself
}
# file name, what the whole image shows, its boxes: (label, box)
PHOTOS = [
    ("w1.png", {"drill": 1.0, "screw": 0.12, "glove": 0.12},
     [("drill", WHOLE), (SCREW, SCREW_BOX), ("helmet", GLOVE_BOX), ("glove", TINY_BOX)]),
    ("w2.png", {"drill": 1.0, "screw": 0.12, "glove": 0.12},
     [("drill", WHOLE), (SCREW, SCREW_BOX), ("glove", GLOVE_BOX)]),
    ("w3.png", "helmet", [("helmet", WHOLE)]),
    ("w4.png", "drill", []),
    ("gone.png", "missing", [("drill", WHOLE)]),
]


def crop_vector(images):
    def vector(name, box):
        shows = SHOWS[tuple(box)]
        return images[name] if shows is None else image_vector(shows, (name, tuple(box)))
    return vector


@pytest.fixture
def photos(dataset, tmp_path):
    images = build(dataset, tmp_path / "images", [(n, c, []) for n, c, _ in PHOTOS], kind="detections")
    for sample, (name, _, boxes) in zip(dataset, PHOTOS):
        if name != "gone.png":
            Image.new("RGB", (40, 30), (90, 90, 160)).save(sample.filepath)
        sample["gt"] = fo.Detections(detections=[
            fo.Detection(label=l, bounding_box=b) for l, b in boxes])
        sample.save()
    return dataset, images


def run(dataset, images, **kwargs):
    encoder = FakeEncoder(images, crop_vector=crop_vector(images))
    kwargs = dict(crops=True, crop_min_size=4, top_k=3, min_cluster_size=1, **kwargs)
    return encoder, run_vlsr(dataset, "gt", encoder=encoder, **kwargs)


def boxes_of(dataset, attribute):
    """{(file name, label): value of the box's ``attribute``}."""
    labels = by_name(dataset, "gt.detections.label")
    values = by_name(dataset, f"gt.detections.{attribute}")
    return {(n, l): v for n in labels for l, v in zip(labels[n] or [], values[n] or [])}


def test_every_box_gets_a_crop_score_and_whole_image_boxes_score_as_the_image(photos):
    dataset, images = photos
    _, report = run(dataset, images)
    crop, image = boxes_of(dataset, "vlsr_crop_similarity"), boxes_of(dataset, "vlsr_similarity")
    fallback = boxes_of(dataset, "vlsr_crop_fallback")
    readable = {k for k in crop if k[0] != "gone.png"}
    assert len(readable) == 8 and all(crop[k] is not None for k in readable)
    assert crop[("gone.png", "drill")] is None  # no image, no crop
    for k in [("w1.png", "drill"), ("w2.png", "drill"), ("w3.png", "helmet"), ("w1.png", "glove")]:
        assert crop[k] == pytest.approx(image[k], abs=1e-6), k
    assert {k for k in readable if fallback[k]} == {("w1.png", "glove")}
    assert (report.n_crops, report.n_crop_fallback) == (7, 1)


def test_the_score_summary_counts_boxes_and_labels_alike(photos):
    """Two gloves on one image are two labels scored, as they are two boxes (it said 8 labels
    and 9 boxes)."""
    dataset, images = photos
    sample = dataset.match(fo.ViewField("filepath").ends_with("w2.png")).first()
    sample.gt.detections.append(fo.Detection(label="glove", bounding_box=SCREW_BOX))
    # audit: boxes of a blank label, not scored, were counted as scored on a crop or image
    sample.gt.detections.append(fo.Detection(label=" ", bounding_box=SCREW_BOX))
    sample.gt.detections.append(fo.Detection(label="", bounding_box=TINY_BOX))
    sample.save()
    embedded = compute_embeddings(dataset, "gt", crops=True, crop_min_size=4,
                                  encoder=FakeEncoder(images, crop_vector=crop_vector(images)))
    # audit: the embedding's counts took in the blank labels' boxes, the scoring's did not
    assert (embedded.n_crops, embedded.n_crop_fallback) == (8, 1)
    assert "; cut and embedded 8 boxes (1 more too small" in embedded.summary()
    report = score_labels(dataset, "vlsr")
    assert report.n_scores == report.n_box_scores == 9
    assert report.summary().startswith("scored 9 labels on 4 samples; 1 sample without an image "
                                       "embedding (unreadable or not embedded) left out; 9 boxes: "
                                       "8 on their crops, 1 on the whole image")
    summary = summarize_run(dataset, "vlsr")
    assert "9 boxes scored: 8 on their crops, 1 on the whole image" in summary


def test_a_small_object_is_judged_on_its_crop(photos):
    dataset, images = photos
    run(dataset, images, low_quantile=0.3)
    crop, image = boxes_of(dataset, "vlsr_crop_similarity"), boxes_of(dataset, "vlsr_similarity")
    # on the whole image the right screw label scores as low as a wrong label would
    assert image[("w1.png", SCREW)] < 0.2 and image[("w1.png", "drill")] > 0.9
    assert crop[("w1.png", SCREW)] > 0.9 > 0.2 > crop[("w1.png", "helmet")]
    low = view_labels(dataset, saved_view_names("vlsr")["low_similarity"], "gt.detections")
    assert ("w1.png", "helmet") in low and ("w1.png", SCREW) not in low
    suggestions, gap = boxes_of(dataset, "vlsr_crop_suggestions"), boxes_of(dataset, "vlsr_crop_gap")
    assert suggestions[("w1.png", "helmet")][0] == "glove" and gap[("w1.png", "helmet")] > 0.5
    assert suggestions[("w2.png", "glove")][0] == "glove" and gap[("w2.png", "glove")] == 0.0
    better = view_labels(dataset, saved_view_names("vlsr")["better_label"], "gt.detections")
    assert ("w1.png", "helmet") in better and ("w1.png", SCREW) not in better
    mins = by_name(dataset, "vlsr_min_crop_similarity")
    assert mins["w1.png"] == pytest.approx(crop[("w1.png", "helmet")])
    info = dataset.get_saved_view_info(saved_view_names("vlsr")["low_similarity"])
    assert "crop" in info["description"]


def test_a_box_at_nan_is_scored_on_the_whole_image_not_stale_forever(photos):
    """Audit: MongoDB reads a NaN coordinate as equal to itself, Python not: the box read as
    current to the embedding and as moved to the scoring, which asked, forever, to embed again."""
    dataset, images = photos
    sample = dataset.match(fo.ViewField("filepath").ends_with("w3.png")).first()
    sample.gt.detections.append(fo.Detection(label="glove", bounding_box=[float("nan"), 0.1,
                                                                          0.2, 0.2]))
    sample.save()
    run(dataset, images)
    report = score_labels(dataset, "vlsr")
    assert report.n_box_stale == 0 and "compute embeddings again" not in report.summary()
    assert boxes_of(dataset, "vlsr_crop_fallback")[("w3.png", "glove")] is True
    assert boxes_of(dataset, "vlsr_crop_similarity")[("w3.png", "glove")] is not None


def test_crops_are_cut_once_and_again_only_for_a_moved_box(photos):
    dataset, images = photos
    encoder, _ = run(dataset, images)
    assert len(encoder.boxes_cut) == 7  # every box but the tiny one
    encoder = FakeEncoder(images, crop_vector=crop_vector(images))
    report = compute_embeddings(dataset, "gt", encoder=encoder, crops=True, crop_min_size=4)
    assert (report.n_embedded, encoder.boxes_cut) == (0, [])
    sample = dataset.match(fo.ViewField("filepath").ends_with("w2.png")).first()
    sample.gt.detections[1].bounding_box = GLOVE_BOX  # the screw box moved onto the glove
    sample.save()
    stale = score_labels(dataset, "vlsr")
    assert stale.n_box_stale == 1 and "compute embeddings again" in stale.summary()
    assert boxes_of(dataset, "vlsr_crop_similarity")[("w2.png", SCREW)] is None
    report = compute_embeddings(dataset, "gt", encoder=encoder, crops=True, crop_min_size=4)
    assert report.n_embedded == 1 and len(encoder.boxes_cut) == 3
    score_labels(dataset, "vlsr")
    assert boxes_of(dataset, "vlsr_crop_similarity")[("w2.png", SCREW)] < 0.2  # it shows a glove


def test_a_box_moved_by_hand_is_said_and_its_old_crop_score_not_exported(photos, tmp_path):
    """Audit: a box moved by hand after the run kept its old crop score; the summary and
    Apply said nothing and the COCO export wrote that score on the moved box."""
    from vlsr_core.fo.export import ExportError, export_run
    from vlsr_core.fo.review import apply_review

    dataset, images = photos
    run(dataset, images)
    sample = dataset.match(fo.ViewField("filepath").ends_with("w2.png")).first()
    sample.gt.detections[1].bounding_box = GLOVE_BOX
    sample.save()
    said = ("1 sample has boxes of 'gt' moved, added or removed by hand since their crops were "
            f"cut, {sample.filepath}, so that its crop scores are of the boxes before: run again")
    assert f"**Changed by hand:** {said}" in summarize_run(dataset, "vlsr")
    apply_review(dataset)  # (it cannot cut a crop)
    with pytest.raises(ExportError, match=re.escape(said)):
        export_run(dataset, str(tmp_path / "out"), detections_field="gt")
    encoder = FakeEncoder(images, crop_vector=crop_vector(images))
    run_vlsr(dataset, "gt", encoder=encoder, crops=True, crop_min_size=4)
    assert "Changed by hand" not in summarize_run(dataset, "vlsr")
    assert export_run(dataset, str(tmp_path / "out"), detections_field="gt")


def test_every_change_by_hand_is_said_at_once(photos, tmp_path):
    """App walk: with a box moved and another sample's labels cleared, the summary and the
    export said only the labels (apply, then export); after Apply the moved box was refused."""
    from vlsr_core.fo.export import ExportError, export_run

    dataset, images = photos
    run(dataset, images)
    moved = dataset.match(fo.ViewField("filepath").ends_with("w2.png")).first()
    moved.gt.detections[1].bounding_box = GLOVE_BOX
    moved.save()
    F = fo.ViewField
    cleared = dataset.match((F("gt.detections").length() > 0)
                            & ~F("filepath").ends_with("w2.png")).first()
    cleared.gt = None
    cleared.save()
    said = summarize_run(dataset, "vlsr")
    assert "**Changed by hand:** 1 sample has labels of 'gt' removed, given or cleared" in said
    assert "**Changed by hand:** 2 samples have boxes of 'gt' moved, added or removed" in said
    with pytest.raises(ExportError, match="cleared by hand .*; also, 2 samples have boxes"):
        export_run(dataset, str(tmp_path / "out"), detections_field="gt")


class Killed(BaseException):
    """The process killed between two writes."""


def test_a_run_killed_between_the_writes_of_a_crop_record_cuts_it_again(photos, monkeypatch):
    """Audit: a kill after the new box ids and coordinates were written, before their crops,
    left a sample read as done: its boxes were scored on the old crops, or every scoring ended
    in a traceback (an added box: 'cannot reshape array')."""
    dataset, images = photos
    run(dataset, images)
    sample = dataset.match(fo.ViewField("filepath").ends_with("w2.png")).first()
    sample.gt.detections.append(fo.Detection(label="glove", bounding_box=SCREW_BOX))  # added
    sample.save()
    write = fo.Dataset.set_values
    for last in ("vlsr_crop_embeddings", "vlsr_crop_boxes", "vlsr_crop_ids"):
        def killed_after(self, field, *args, last=last, **kwargs):
            write(self, field, *args, **kwargs)
            if field == last:
                raise Killed

        monkeypatch.setattr(fo.Dataset, "set_values", killed_after)
        with pytest.raises(Killed):
            compute_embeddings(dataset, "gt", encoder=FakeEncoder(
                images, crop_vector=crop_vector(images)), crops=True, crop_min_size=4)
        monkeypatch.setattr(fo.Dataset, "set_values", write)
        # the crops are as cut, or not current: said, not used
        stale = score_labels(dataset, "vlsr").n_box_stale
        assert stale == (0 if last == "vlsr_crop_ids" else 4), last
    # the record written whole but the file's stamp: the sample is done, its crops its own
    encoder = FakeEncoder(images, crop_vector=crop_vector(images))
    assert compute_embeddings(dataset, "gt", encoder=encoder, crops=True,
                              crop_min_size=4).n_embedded == 0
    assert boxes_of(dataset, "vlsr_crop_fallback")[("w2.png", "glove")] is False


def test_a_replaced_picture_has_its_crops_cut_again(photos):
    dataset, images = photos
    run(dataset, images)
    path = next(p for p in dataset.values("filepath") if p.endswith("w1.png"))
    Image.new("RGB", (80, 60), (200, 90, 10)).save(path)  # a curator fixes the picture
    encoder = FakeEncoder(images, crop_vector=crop_vector(images))
    report = compute_embeddings(dataset, "gt", encoder=encoder, crops=True, crop_min_size=4)
    assert (report.n_embedded, report.n_changed) == (1, 1)
    assert len(encoder.boxes_cut) == 3  # its boxes but the tiny one, and no other image's
    assert compute_embeddings(dataset, "gt", encoder=encoder, crops=True,
                              crop_min_size=4).n_changed == 0


def test_another_padding_cuts_every_crop_again_and_no_crops_removes_them(photos):
    dataset, images = photos
    run(dataset, images)
    encoder = FakeEncoder(images, crop_vector=crop_vector(images))
    compute_embeddings(dataset, "gt", encoder=encoder, crops=True, crop_min_size=4, crop_padding=0.3)
    assert len(encoder.boxes_cut) == 7
    assert dataset.get_run_info("vlsr").config.crop_padding == 0.3
    compute_embeddings(dataset, "gt", encoder=encoder)
    report = score_labels(dataset, "vlsr", low_quantile=0.5)
    assert set(boxes_of(dataset, "vlsr_crop_similarity").values()) == {None}
    # on image scores, the right screw labels are among the suspects
    low = view_labels(dataset, saved_view_names("vlsr")["low_similarity"], "gt.detections")
    assert {("w1.png", SCREW), ("w2.png", SCREW)} <= low, report.low_similarity_threshold
    assert dataset.count("vlsr_crop_embeddings") == 0
    # the review is back on the image scores
    assert "crop" not in dataset.get_saved_view_info(saved_view_names("vlsr")["low_similarity"])["description"]
    dataset.delete_run("vlsr")
    assert not [f for f in dataset.get_field_schema() if f.startswith("vlsr")]


def test_crops_need_a_detections_field(main):
    dataset, images = main
    with pytest.raises(VLSRError, match="not a Detections field"):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), crops=True)


def test_crops_need_full_resolution(photos, tiny_clip, capsys):
    from vlsr_core.cli import main
    from vlsr_core.engine.params import ParamError

    dataset, images = photos
    with pytest.raises(ParamError, match="jpeg_draft must be off with crops: crops are cut from "
                                         "full-resolution pixels"):
        compute_embeddings(dataset, "gt", encoder=FakeEncoder(images, jpeg_draft=True), crops=True,
                           jpeg_draft=True)
    assert main(["run", "--dataset", dataset.name, "--label-field", "gt", "--model", tiny_clip,
                 "--crops", "--jpeg-draft"]) == 2  # named as its flag
    assert capsys.readouterr().err == ("vlsr: error: --jpeg-draft must be off with crops: crops "
                                       "are cut from full-resolution pixels\n")


def test_crop_region_pads_squares_and_stays_inside():
    assert crop_region(WHOLE, 40, 30, 0.1, 4) == (0, 0, 40, 30)  # the whole image, exactly
    assert crop_region([0.5, 0.5, 0.1, 0.1], 100, 100, 0.0, 4) == (50, 50, 60, 60)
    assert crop_region([0.5, 0.5, 0.1, 0.1], 100, 100, 0.5, 4) == (45, 45, 65, 65)
    # a tall box is squared about its centre; at the edge it is moved inside
    assert crop_region([0.4, 0.2, 0.1, 0.4], 100, 100, 0.0, 4) == (25, 20, 65, 60)
    assert crop_region([0.0, 0.2, 0.1, 0.4], 100, 100, 0.0, 4) == (0, 20, 40, 60)
    # too small, empty, off the image, no coordinates: None (scored on the whole image)
    for box in ([0.5, 0.5, 0.03, 0.5], [0.5, 0.5, 0.0, 0.2], [1.2, 0.1, 0.3, 0.3], None,
                [0.1, float("nan"), 0.2, 0.2], [0.1, 0.2]):
        assert crop_region(box, 100, 100, 0.1, 4) is None, box
    # audit: a 1-pixel box from 3.5 to 4.5 rounded to 4..4 (halves to even), a crop of no
    # width, and its whole image failed as unreadable
    assert crop_region([3.5 / 640, 0.5, 1 / 640, 1 / 480], 640, 480, 0.0, 1) == (4, 240, 5, 241)
    assert crop_region([639 / 640, 0.5, 1 / 640, 1 / 480], 640, 480, 0.0, 1) == (639, 240, 640, 241)


BOX_A, BOX_B = [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]
# file name, what the whole image shows, its boxes: (label, box, what the box's crop shows)
BENCHES = [scene for i in range(3) for scene in (
    (f"d{i}.png", "drill", [("drill", BOX_A, "drill")]),
    # a screw gun (near "screwdriver" in text) always pictured beside a screwdriver
    (f"s{i}.png", "screwdriver", [("screwdriver", BOX_A, "screwdriver"), ("screw gun", BOX_B, "drill")]),
    # a power drill (near "drill" in text) pictured on a glove-covered bench
    (f"p{i}.png", "glove", [("power drill", BOX_A, "drill"), ("glove", BOX_B, "glove")]),
    (f"h{i}.png", "helmet", [("helmet", BOX_A, "helmet")]),
)] + [("d3.png", "drill", [("drill", BOX_A, "drill")])]  # "drill" the most frequent: the name


def test_image_evidence_of_a_run_with_crops_compares_the_objects_not_their_pictures(
        dataset, tmp_path, monkeypatch):
    """Whole images join the screw gun to the screwdriver it is always pictured with, and keep the
    power drill from the drill, whose pictures differ; the boxes' crops show what each object
    is: the power drill joins the drill, and the screw gun stays apart."""
    import fake_clip
    from vlsr_core.fo.summary import summarize_run

    monkeypatch.setitem(fake_clip.LABELS, "power drill", ("drill", 9, 1.2))  # 0.36 from "drill"
    monkeypatch.setitem(fake_clip.LABELS, "screw gun", ("screwdriver", 10, 1.2))
    monkeypatch.setattr("vlsr_core.engine.grouping.MIN_HALVES", 3)  # 6 labels: enough here
    images = build(dataset, tmp_path / "images", [(n, c, []) for n, c, _ in BENCHES],
                   kind="detections")
    shows = {}
    for sample, (name, _, boxes) in zip(dataset, BENCHES):
        Image.new("RGB", (40, 30), (90, 90, 160)).save(sample.filepath)
        sample["gt"] = fo.Detections(detections=[
            fo.Detection(label=l, bounding_box=b) for l, b, _ in boxes])
        sample.save()
        shows.update({(name, tuple(b)): what for _, b, what in boxes})
    encoder = FakeEncoder(images, crop_vector=lambda name, box: image_vector(
        shows[name, tuple(box)], (name, tuple(box))))

    def merged(key, crops):
        run_vlsr(dataset, "gt", key, encoder=encoder, crops=crops, crop_min_size=4,
                 min_cluster_size=1, image_evidence=True)
        canonical = dataset.load_run_results(key, cache=False).canonical
        # (which of two joined labels on as many images names them is string order's choice)
        return (canonical["power drill"] == canonical["drill"],
                canonical["screw gun"] == canonical["screwdriver"])

    assert merged("whole", crops=False) == (False, True)  # the screw gun joins the screwdriver
    assert merged("vlsr", crops=True) == (True, False)  # the power drill joins the drill
    evidence = dataset.load_run_results("vlsr", cache=False).merge_steps["image_evidence"]
    assert evidence["image links"] == 1 and evidence["labels with images"] == 6
    assert ("after image evidence from the boxes' crops (1 join; 6 labels with crops)"
            in summarize_run(dataset, "vlsr"))


def test_embedding_progress_moves_while_an_image_of_many_boxes_is_cut(dataset, tmp_path, tiny_clip):
    """Progress counted whole images: one image of thousands of boxes held it still."""
    from vlsr_core.fo.stages import compute_image_embeddings

    build(dataset, tmp_path / "images", [("many.png", "drill", [])], kind="detections")
    sample = dataset.first()
    Image.new("RGB", (40, 30), (90, 90, 160)).save(sample.filepath)
    sample["gt"] = fo.Detections(detections=[
        fo.Detection(label="screw", bounding_box=[0.1 * (k % 5), 0.5, 0.2, 0.3]) for k in range(9)])
    sample.save()
    compute_embeddings(dataset, "gt", model=tiny_clip, crops=True, crop_min_size=4, batch_size=2,
                       num_workers=0, images=False)
    seen = []
    compute_image_embeddings(dataset, num_workers=0, progress=seen.append)
    assert seen[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and seen[-1] == 1.0


def test_scoring_again_leaves_the_boxes_and_their_samples_as_they_were(photos):
    """A run again that changed nothing wrote every sample again (their last change moved);
    a box changed since is scored again, and its sample alone is written."""
    dataset, images = photos
    run(dataset, images)
    before = dict(zip(dataset.values("filepath"), dataset.values("last_modified_at")))
    snapshot = [s.to_dict() for s in dataset]
    score_labels(dataset, "vlsr", top_k=3)
    assert [s.to_dict() for s in dataset] == snapshot
    sample = dataset.match(fo.ViewField("filepath").ends_with("w2.png")).first()
    sample.gt.detections[1].bounding_box = GLOVE_BOX  # the screw box moved: its crop is stale
    sample.save()
    score_labels(dataset, "vlsr", top_k=3)
    after = dict(zip(dataset.values("filepath"), dataset.values("last_modified_at")))
    assert [p for p in after if after[p] != before[p]] == [sample.filepath]
    assert boxes_of(dataset, "vlsr_crop_similarity")[("w2.png", SCREW)] is None


def test_apply_brings_the_lowest_crop_score_in_step_with_boxes_changed_by_hand(photos):
    """Audit: after a box was removed or its label blanked by hand, Apply kept that box's
    crop score as the sample's lowest, by which the worst-first view sorts."""
    from vlsr_core.fo.review import apply_review

    dataset, images = photos
    run(dataset, images)
    fields = ["vlsr_min_crop_similarity", "vlsr_min_similarity", "vlsr_best_gap"]
    changed = []
    for sample in dataset.match(fo.ViewField("gt.detections").length() > 1):
        lowest = min(sample.gt.detections, key=lambda d: d.vlsr_crop_similarity)
        if changed:
            lowest.label = ""  # blanked
        else:
            sample.gt.detections = [d for d in sample.gt.detections if d is not lowest]
        sample.save()
        changed.append(sample.id)
    assert len(changed) >= 2
    before = {f: dataset.values(f) for f in fields}
    apply_review(dataset, "vlsr")
    applied = {f: dataset.values(f) for f in fields}
    assert applied != before
    score_labels(dataset, "vlsr")  # what scoring gives the boxes as they are
    assert {f: dataset.values(f) for f in fields} == applied

"""export_run: the files a user takes away from a VLSR run, checked against the dataset they
came from (and, for COCO, read back with FiftyOne's own importer)."""

import csv
import json
import logging
import os
import re

import fiftyone as fo
import pytest
from fiftyone import ViewField as F

from fake_clip import FakeEncoder, build, by_name, dot
from vlsr_core.fo import chunks
from vlsr_core.cli import main
from vlsr_core.fo.export import (
    COCO_FILE,
    FILES,
    ExportError,
    coco_image_root,
    coco_left_out,
    detections_fields,
    export_run,
    unclustered_note,
)
from vlsr_core.fo.stages import compute_embeddings, run_vlsr, score_labels

SCREW = '2" wood screw, "large"'  # quotes and a comma, as in Factorynet
# file name, what the picture shows, its objects' labels
SPEC = [
    ("h1.png", "helmet", ["helmet", "Helmets"]),
    ("h2.png", "helmet", ["helmet"]),
    ("h3.png", "helmet", ["Helmets"]),
    ("h4.png", "helmet", ["Lathe Information", "helmit", "helmet"]),
    ("s1.png", "screwdriver", ["screwdriver"]),
    ("s2.png", {"screwdriver": 1.0, "helmet": 0.4}, ["Screwdrivers", "helmet"]),
    ("w1.png", "screw", [SCREW]),
    ("w2.png", "screw", [SCREW, SCREW]),
    ("n1.png", "drill", []),
    ("zero.png", "empty", ["helmit"]),
]
VOCAB = ["helmet", "Helmets", "Lathe Information", "helmit", "screwdriver", "Screwdrivers", SCREW]
CANONICAL = {"helmet": "helmet", "Helmets": "helmet", "helmit": "helmet",
             "Lathe Information": "Lathe Information", "screwdriver": "screwdriver",
             "Screwdrivers": "screwdriver", SCREW: SCREW}
FINAL = {"h1.png": "helmet", "h2.png": "helmet", "h3.png": "helmet", "h4.png": "helmet",
         "s1.png": "screwdriver", "s2.png": "screwdriver", "w1.png": SCREW, "w2.png": SCREW,
         "n1.png": None, "zero.png": None}


@pytest.fixture
def run(dataset, tmp_path):
    """SPEC with boxes in ``objects``, fully run; returns the dataset, image folder and embeddings."""
    folder = tmp_path / "images"
    images = build(dataset, folder, SPEC, kind="detections", field="objects")
    run_vlsr(dataset, "objects", encoder=FakeEncoder(images), top_k=3, min_cluster_size=1)
    assert by_name(dataset, "vlsr_label.label") == FINAL  # the premise of every test here
    return dataset, folder, images


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_samples_csv(run, tmp_path):
    dataset, _, images = run
    out = tmp_path / "export"
    written = export_run(dataset, str(out))
    assert sorted(os.path.basename(p) for p in written) == ["image_labels.json", "label_map.csv", "samples.csv"]
    assert all(os.path.isfile(p) for p in written)

    rows = read_csv(out / "samples.csv")
    assert list(rows[0]) == ["filepath", "final_label", "final_score", "original_labels",
                             "canonical_labels", "suggestions"]
    assert [r["filepath"] for r in rows] == dataset.values("filepath")  # one row per sample
    final_scores = by_name(dataset, "vlsr_label.confidence")
    canonical = by_name(dataset, "vlsr_labels.classifications.label")
    sugg_labels = by_name(dataset, "vlsr_suggestions.classifications.label")
    sugg_scores = by_name(dataset, "vlsr_suggestions.classifications.confidence")
    for row in rows:
        name = os.path.basename(row["filepath"])
        assert row["final_label"] == (FINAL[name] or "")
        if FINAL[name] is None:
            assert row["final_score"] == ""
        else:
            assert float(row["final_score"]) == pytest.approx(final_scores[name], abs=1e-6)
            assert float(row["final_score"]) == pytest.approx(dot(images, name, FINAL[name]), abs=1e-5)
        objects = next(s for n, _, s in SPEC if n == name)
        assert json.loads(row["original_labels"]) == list(dict.fromkeys(objects))  # distinct
        assert json.loads(row["canonical_labels"]) == canonical[name]
        suggestions = json.loads(row["suggestions"])
        assert [l for l, _ in suggestions] == (sugg_labels[name] or [])
        assert [s for _, s in suggestions] == pytest.approx(sugg_scores[name] or [], abs=1e-6)
    by_file = {os.path.basename(r["filepath"]): r for r in rows}
    # labels with quotes and commas survive the CSV and the JSON inside it
    assert json.loads(by_file["w2.png"]["original_labels"]) == [SCREW]
    assert json.loads(by_file["h4.png"]["canonical_labels"]) == ["Lathe Information", "helmet"]
    assert json.loads(by_file["n1.png"]["original_labels"]) == []
    assert len(json.loads(by_file["h1.png"]["suggestions"])) == 3
    assert json.loads(by_file["zero.png"]["suggestions"]) == []


def test_label_map_csv(run, tmp_path):
    dataset, _, _ = run
    export_run(dataset, str(tmp_path / "export"))
    rows = read_csv(tmp_path / "export" / "label_map.csv")
    assert [r["label"] for r in rows] == VOCAB  # every vocabulary label exactly once
    assert {r["label"]: r["canonical"] for r in rows} == CANONICAL
    results = dataset.load_run_results("vlsr", cache=False)
    assert {r["label"]: int(r["frequency"]) for r in rows} == dict(
        zip(results.vocabulary, results.frequencies.tolist()))
    assert {r["label"]: int(r["frequency"]) for r in rows}["helmet"] == 4  # images, not objects
    assert {r["label"]: int(r["frequency"]) for r in rows}[SCREW] == 2
    cluster = {r["label"]: int(r["cluster"]) for r in rows}
    assert cluster["helmet"] == cluster["Helmets"] == cluster["helmit"] != cluster["screwdriver"]
    assert all(int(r["dbscan_cluster"]) >= 0 for r in rows)
    # why each label is where it is, and how far from its canonical label, to check the farthest
    joined = {r["label"]: (r["joined_by"], float(r["distance_to_canonical"])) for r in rows}
    assert {label: reason for label, (reason, _) in joined.items()} == {
        "helmet": "", "Helmets": "spelling", "helmit": "spelling", "Lathe Information": "",
        "screwdriver": "", "Screwdrivers": "spelling", SCREW: ""}
    assert joined["helmet"][1] == 0.0 < joined["Helmets"][1] < joined["helmit"][1] < 0.1
    assert not any(r["distance_to_canonical"].startswith("-") for r in rows)  # no "-0.0000"


def test_image_labels_json_is_coco_with_final_flags(run, tmp_path, caplog):
    dataset, _, images = run
    export_run(dataset, str(tmp_path / "export"))
    # the run's unreadable image is not read again for its size (a warning per file, each time)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with open(tmp_path / "export" / "image_labels.json", encoding="utf-8") as f:
        coco = json.load(f)

    assert {"images", "categories", "annotations"} <= set(coco)
    categories = {c["id"]: c["name"] for c in coco["categories"]}
    assert len(categories) == len(coco["categories"])  # unique ids
    assert sorted(categories.values()) == sorted({"helmet", "Lathe Information", "screwdriver", SCREW})
    image_by_id = {im["id"]: im for im in coco["images"]}
    assert len(image_by_id) == len(dataset)
    assert sorted(im["file_name"] for im in coco["images"]) == sorted(dataset.values("filepath"))
    sizes = {os.path.basename(im["file_name"]): (im["width"], im["height"]) for im in coco["images"]}
    assert sizes["h1.png"] == (24, 16)

    ann_ids = [a["id"] for a in coco["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    per_image = {}
    for a in coco["annotations"]:
        assert a["image_id"] in image_by_id and a["category_id"] in categories
        assert "bbox" not in a
        name = os.path.basename(image_by_id[a["image_id"]]["file_name"])
        per_image.setdefault(name, []).append((categories[a["category_id"]], a["score"], a["final"]))

    canonical = by_name(dataset, "vlsr_labels.classifications.label")
    for name in FINAL:
        entries = per_image.get(name, [])
        assert [c for c, _, _ in entries] == (canonical[name] or [])
        assert [c for c, _, final in entries if final] == ([FINAL[name]] if FINAL[name] else [])
        for c, score, _ in entries:
            if name in images:
                assert score == pytest.approx(dot(images, name, c), abs=1e-6)
            else:
                assert score is None  # unreadable: canonical labels but no score
    assert per_image["h4.png"] == [
        ("Lathe Information", pytest.approx(dot(images, "h4.png", "Lathe Information"), abs=1e-6), False),
        ("helmet", pytest.approx(dot(images, "h4.png", "helmet"), abs=1e-6), True),
    ]


def test_coco_detections_reimport_with_canonical_labels_and_same_boxes(run, tmp_path):
    dataset, folder, _ = run
    out = tmp_path / "export"
    written = export_run(dataset, str(out), detections_field="objects")
    labels_path = out / "detections" / "labels.json"
    assert str(labels_path) in written
    assert coco_image_root(dataset) == str(folder)
    with open(labels_path) as f:
        file_names = [im["file_name"] for im in json.load(f)["images"]]
    # FiftyOne writes the file names relative to the images' folder: data_path says where
    assert not any(os.path.isabs(n) for n in file_names)
    # every image whose size can be read is there (with or without boxes); the empty file is not
    assert sorted(file_names) == sorted(n for n, _, _ in SPEC if n != "zero.png")

    back = fo.Dataset.from_dir(
        dataset_type=fo.types.COCODetectionDataset,
        data_path=str(folder),
        labels_path=str(labels_path),
        label_types="detections",
        label_field="objects",
    )
    try:
        imported = {os.path.basename(p): d for p, d in zip(back.values("filepath"), back.values("objects"))}
        original = by_name(dataset, "objects")
        exported = {n for n, d in original.items() if d is not None and d.detections} - {"zero.png"}
        assert exported <= set(imported)
        for name in exported:
            before = original[name].detections
            after = imported[name].detections
            assert [d.label for d in after] == [CANONICAL[d.label] for d in before], name
            for a, b in zip(after, before):
                assert a.bounding_box == pytest.approx(b.bounding_box, abs=1e-3)
        # every canonical label arrives, with its quotes and comma
        assert {d.label for n in exported for d in imported[n].detections} == {
            "helmet", "Lathe Information", "screwdriver", SCREW}
        for name in set(imported) - exported:
            assert not imported[name] or not imported[name].detections
    finally:
        back.delete()
    # the dataset's own labels are not changed by the export
    assert by_name(dataset, "objects.detections.label")["h1.png"] == ["helmet", "Helmets"]


def test_the_coco_boxes_left_out_are_counted_and_said(run, tmp_path, capsys):
    dataset, _, _ = run
    dataset.persistent = True  # (the CLI opens it by name)
    for sample in dataset:  # a second box field: on the unreadable image, and one unnamed
        name = os.path.basename(sample.filepath)
        labels = {"zero.png": ["helmet", "helmet"], "h2.png": ["helmet", "  "],
                  "s1.png": [""]}.get(name, [])
        sample["extra"] = fo.Detections(detections=[
            fo.Detection(label=l, bounding_box=[0.1, 0.1, 0.5, 0.5]) for l in labels])
        sample.save()
    out = tmp_path / "export"
    assert main(["export", "--dataset", dataset.name, "--out", str(out),
                 "--detections-field", "extra"]) == 0
    assert ("note: 2 boxes on 1 unreadable image and 2 boxes with an "
            "empty or blank label left out of the COCO detections") in capsys.readouterr().out
    with open(out / "detections" / "labels.json") as f:
        coco = json.load(f)
    assert "  " not in [c["name"] for c in coco["categories"]]  # no unnamed category
    assert len(coco["annotations"]) == 1
    assert coco_left_out(dataset, "objects") == ("1 box on 1 unreadable image left out of the "
                                                 "COCO detections")
    assert coco_left_out(dataset.exists("metadata.width"), "objects") is None
    # the dataset's boxes are as they were
    assert by_name(dataset, "extra.detections.label")["h2.png"] == ["helmet", "  "]

    # an export without boxes says which field it could have written them from
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "plain")]) == 0
    assert ("no COCO detections written: give --detections-field (extra, objects here)"
            in capsys.readouterr().out)


def test_boxes_of_nan_infinite_or_no_size_are_left_out_and_the_file_is_strict_json(run, tmp_path):
    """Audit: a box at NaN or infinity was written as it was: ``"bbox": [NaN, ...]`` is no JSON
    (Node and strict parsers refuse the whole file), and a box of negative width gave a negative
    area. Such boxes are left out and counted; a NaN attribute becomes null."""
    dataset, _, _ = run
    nan, inf = float("nan"), float("inf")
    n1 = next(s for s in dataset if s.filepath.endswith("n1.png"))
    n1["extra"] = fo.Detections(detections=[
        fo.Detection(label="helmet", bounding_box=box, rating=nan) for box in (
            [nan, .1, .1, .1], [inf, 0, .1, .1], [.2, .2, -.1, .1], [.1, .1, 0, 0],
            [1.2, .1, .3, .3], [-.5, -.5, .3, .3], [.1, .1, .5, .5])])
    n1.save()
    export_run(dataset, str(tmp_path / "out"), detections_field="extra")

    def refuse(constant):
        raise ValueError(f"{constant} is no JSON")

    with open(tmp_path / "out" / COCO_FILE, encoding="utf-8") as f:
        coco = json.loads(f.read(), parse_constant=refuse)
    assert len(coco["annotations"]) == 1
    box = coco["annotations"][0]
    assert box["area"] > 0 and box["rating"] is None
    assert coco_left_out(dataset, "extra") == (
        "6 boxes without usable coordinates (missing, not finite, of no width or height, or off "
        "the image) left out of the COCO detections")


def test_a_box_partly_off_the_image_is_cut_to_it_and_said(run, tmp_path):
    """Audit: such boxes were written as they were, ``[-16.0, -6.0, 40.0, 30.0]`` and
    ``[40.0, 30.0, 72.0, 54.0]`` on an 80 x 60 image: COCO tools refuse them."""
    dataset, _, _ = run
    n1 = next(s for s in dataset if s.filepath.endswith("n1.png"))
    n1["extra"] = fo.Detections(detections=[
        fo.Detection(label="helmet", bounding_box=box) for box in (
            [-.2, -.1, .5, .5], [.5, .5, .9, .9], [.1, .2, .3, .4])])
    n1.save()
    export_run(dataset, str(tmp_path / "out"), detections_field="extra")
    with open(tmp_path / "out" / COCO_FILE, encoding="utf-8") as f:
        coco = json.load(f)
    width, height = n1.metadata.width, n1.metadata.height
    boxes = [a["bbox"] for a in coco["annotations"]]
    assert boxes[0] == pytest.approx([0, 0, .3 * width, .4 * height])
    assert boxes[1] == pytest.approx([.5 * width, .5 * height, .5 * width, .5 * height])
    assert boxes[2] == [.1 * width, .2 * height, .3 * width, .4 * height]  # (as FiftyOne writes it)
    assert coco_left_out(dataset, "extra") == "2 boxes partly off the image cut to the part on it"
    assert dataset[n1.id].extra.detections[0].bounding_box == [-.2, -.1, .5, .5]  # (the input)


def test_a_masked_box_partly_off_the_image_keeps_the_part_of_its_mask_on_it(run, tmp_path):
    """Audit: the box was cut, and FiftyOne stretched its whole mask over the part left: the
    segmentation covered pixels the mask left out. Here the mask is the right half of a box
    whose left half is off the image: the part on the image is all mask."""
    import numpy as np

    dataset, _, _ = run
    n1 = next(s for s in dataset if s.filepath.endswith("n1.png"))
    mask = np.zeros((50, 40), dtype=bool)
    mask[:, 20:] = True
    inside = np.zeros((10, 10), dtype=bool)
    inside[:, :5] = True
    n1["extra"] = fo.Detections(detections=[
        fo.Detection(label="helmet", bounding_box=[-.5, .2, 1.0, .5], mask=mask),
        fo.Detection(label="helmet", bounding_box=[.6, .1, .2, .2], mask=inside),
        fo.Detection(label="helmet", bounding_box=[-.95, .2, 1.0, .5],
                     mask=np.ones((10, 10), dtype=bool))])  # (on the image: half a mask column)
    n1.save()
    export_run(dataset, str(tmp_path / "out"), detections_field="extra")
    with open(tmp_path / "out" / COCO_FILE, encoding="utf-8") as f:
        cut, whole, sliver = json.load(f)["annotations"]
    assert sliver["segmentation"], sliver  # (review: a sliver on the image gave [])
    width, height = n1.metadata.width, n1.metadata.height
    assert cut["bbox"] == pytest.approx([0, .2 * height, .5 * width, .5 * height])
    [polygon] = cut["segmentation"]
    xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
    area = abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2
    assert xs.max() <= .5 * width and ys.min() >= .2 * height - 1 and ys.max() <= .7 * height
    assert area > .8 * cut["area"]  # (stretched, the mask's empty half covered half the box)
    assert "vlsr_cut_mask" not in cut and "vlsr_cut_mask" not in whole
    [polygon] = whole["segmentation"]  # (a box on the image: as FiftyOne writes it)
    assert max(polygon[0::2]) <= .7 * width + 1


def test_box_attributes_named_as_coco_keys_are_kept_under_another_name(run, tmp_path):
    """Audit: a box attribute ``score`` (as boxes converted from other tools carry),
    ``image_id`` or ``category_id``, or an ``iscrowd`` of "no", failed the export with a
    traceback in FiftyOne's exporter; an attribute ``area`` was dropped."""
    dataset, _, _ = run
    n1 = next(s for s in dataset if s.filepath.endswith("n1.png"))
    n1["extra"] = fo.Detections(detections=[
        fo.Detection(label="helmet", bounding_box=[.1, .1, .2, .2], score=0.5, area=3,
                     image_id=7, category_id="c", iscrowd="no", kind="a"),
        fo.Detection(label="helmet", bounding_box=[.1, .1, .2, .2], iscrowd=1, confidence=.9),
        fo.Detection(label="helmet", bounding_box=[.1, .1, .2, .2], score=0.5, box_score=0.1,
                     visible=True)])  # (audit: FiftyOne's exporter drops "visible" silently)
    n1.save()
    export_run(dataset, str(tmp_path / "out"), detections_field="extra")
    with open(tmp_path / "out" / COCO_FILE, encoding="utf-8") as f:
        coco = json.load(f)
    named, crowd, both = coco["annotations"]
    assert {k: named[k] for k in ("box_score", "box_area", "box_image_id", "box_category_id",
                                  "box_iscrowd", "kind", "iscrowd")} == dict(
        box_score=0.5, box_area=3, box_image_id=7, box_category_id="c", box_iscrowd="no",
        kind="a", iscrowd=0)
    assert (both["box_score"], both["box_score_2"]) == (0.1, 0.5)  # (review: 0.1 was lost)
    assert both["box_visible"] is True and "visible" not in both
    assert named["image_id"] == crowd["image_id"] != 7 and "score" not in named
    assert crowd["iscrowd"] == 1 and crowd["score"] == .9 and "box_iscrowd" not in crowd
    assert coco_left_out(dataset, "extra") == (
        "2 boxes with attributes named as COCO's own keys (box_area, box_category_id, "
        "box_image_id, box_iscrowd, box_score, box_visible) written under those names")


def test_the_coco_file_and_image_labels_json_give_an_image_one_id(run, tmp_path, monkeypatch):
    """Audit: FiftyOne numbers the images of the COCO file from 1, and leaves out those it
    cannot read, which image_labels.json lists: after an unreadable image, each id of one
    file was another image in the other. Review: so too in a view sorted by the image sizes
    the export reads first, of more than a chunk of samples."""
    from PIL import Image

    dataset, folder, _ = run

    def exported(view, name):
        export_run(view, str(tmp_path / name), detections_field="objects")
        files = {}
        for file in ("image_labels.json", COCO_FILE):
            with open(tmp_path / name / file, encoding="utf-8") as f:
                data = json.load(f)
            files[file] = {im["id"]: os.path.basename(im["file_name"]) for im in data["images"]}
            if file == COCO_FILE:
                boxes = {(files[file][a["image_id"]], a["category_id"])
                         for a in data["annotations"]}
        return files["image_labels.json"], files[COCO_FILE], boxes

    first, coco, boxes = exported(dataset.sort_by("filepath", reverse=True), "out")
    assert first[1] == "zero.png" and 1 not in coco  # (zero.png, unreadable, first)
    assert coco == {i: n for i, n in first.items() if n != "zero.png"}
    assert ("w2.png", 1 + sorted(set(CANONICAL.values())).index(SCREW)) in boxes
    dataset.set_values("metadata", [None] * len(dataset))  # (read again by the export)
    Image.new("RGB", (90, 70), (10, 200, 10)).save(folder / "w2.png")  # the largest file now
    monkeypatch.setattr(chunks, "CHUNK_SIZE", 3)
    first, coco, _ = exported(dataset.sort_by("metadata.size_bytes", reverse=True), "sorted")
    assert first[1] == "w2.png" and coco == {i: n for i, n in first.items() if n != "zero.png"}


def test_the_attributes_of_a_coco_box_are_in_one_order_whatever_the_process(run, tmp_path,
                                                                              monkeypatch):
    """Audit: three exports of unchanged samples gave two checksums. FiftyOne writes a box's
    attributes in the order of a set of their names (by the process's hash seed); here the
    order of another process is played by reversing it."""
    dataset = run[0]
    export_run(dataset, str(tmp_path / "first"), detections_field="objects")
    names = fo.Detection.iter_attributes
    monkeypatch.setattr(fo.Detection, "iter_attributes",
                        lambda self: reversed(list(names(self))))
    export_run(dataset, str(tmp_path / "again"), detections_field="objects")
    assert (tmp_path / "first" / COCO_FILE).read_bytes() == (tmp_path / "again" / COCO_FILE).read_bytes()
    with open(tmp_path / "again" / COCO_FILE, encoding="utf-8") as f:
        box = json.load(f)["annotations"][0]
    assert list(box)[:6] == ["id", "image_id", "category_id", "bbox", "area", "iscrowd"]
    assert list(box)[6:] == sorted(list(box)[6:]) and "vlsr_similarity" in box


def test_an_image_file_of_two_samples_is_said_by_the_export(dataset, tmp_path):
    """COCO lists each sample apart, both under the file's name, and FiftyOne's COCO importer
    keeps the boxes of one of them: the export kept every box, silently lost on re-import."""
    images = build(dataset, tmp_path / "images", SPEC, kind="detections", field="objects")
    h1 = dataset.match(F("filepath").ends_with("/h1.png")).first()
    dataset.add_sample(fo.Sample(filepath=h1.filepath, objects=fo.Detections(detections=[
        fo.Detection(label="helmet", bounding_box=[0.2, 0.2, 0.3, 0.3])])))
    run_vlsr(dataset, "objects", encoder=FakeEncoder(images), min_cluster_size=1)
    out = tmp_path / "export"
    export_run(dataset, str(out), detections_field="objects")
    with open(out / "detections" / "labels.json") as f:
        coco = json.load(f)
    assert len(coco["annotations"]) == dataset.count("objects.detections") - 1  # (zero.png's)
    assert sum(i["file_name"] == "h1.png" for i in coco["images"]) == 2
    assert coco_left_out(dataset, "objects") == (
        "1 box on 1 unreadable image left out of the COCO detections; 1 image file is the file "
        "of 2 samples, each listed as an image of its own under the same file_name: FiftyOne's COCO "
        "importer keeps the boxes of one of them only")


def test_the_canonical_label_lookup_of_the_coco_boxes_finds_every_label(dataset):
    """The COCO boxes' labels are mapped by a binary search in MongoDB (a list lookup took 36 s
    for 200,000 boxes at 20,000 labels): it must order labels as MongoDB compares them,
    whatever their characters, and leave labels the map keeps or lacks as written."""
    import random

    from fiftyone.core.odm.database import get_db_conn

    from vlsr_core.fo.export import canonical_of
    from vlsr_core.fo.labels import one_of

    rng = random.Random(0)
    pieces = ["a", "B", "é", "e\u0301", "ﬁ", "\ufffd", "\uffff", "😀", "𝔸", "漢", "$cost", " ",
              "\xa0", "\t", ".", "0", "Z", "z", "ß", "İ", "\U0010fffd"]
    labels = sorted({"".join(rng.choices(pieces, k=rng.randint(1, 4))) for _ in range(3000)})
    label_map = {l: rng.choice(labels[:50]) if rng.random() < 0.6 else l for l in labels[:-200]}
    expression = canonical_of("$label", label_map)
    got = {d["label"]: d["canonical"] for d in get_db_conn().aggregate([
        {"$documents": {"$literal": [{"label": l} for l in labels]}},
        {"$project": {"label": True, "canonical": expression}}])}
    assert got == {l: label_map.get(l, l) for l in labels}
    assert sum(label_map[l] != l for l in label_map) > 900 and len(labels) > 1800
    some = set(labels[::3])  # and the saved views' "label is one of these", searched so too
    got = {d["label"]: d["in"] for d in get_db_conn().aggregate([
        {"$documents": {"$literal": [{"label": l} for l in labels]}},
        {"$project": {"label": True, "in": one_of("$label", some).to_mongo()}}])}
    assert got == {l: l in some for l in labels}
    assert canonical_of("$label", {"helmet": "helmet"}) == "$label"  # nothing to change


def test_a_label_map_of_100000_labels_is_one_query_mongodb_takes(dataset):
    """The search is written into the query, which MongoDB caps at 16 MB: a map of 100,000
    labels of 40 characters, each to another, takes 12 MB (as $switch branches MongoDB refused
    the query as too large)."""
    import random

    from fiftyone.core.odm.database import get_db_conn

    from vlsr_core.fo.export import canonical_of

    rng = random.Random(0)
    labels = sorted({"".join(rng.choices("abcdefghij klmnop", k=40)) for _ in range(100_000)})
    label_map = dict(zip(labels, labels[1:] + labels[:1]))
    asked = [labels[0], labels[54_321], labels[-1], "not in the map"]
    got = [d["canonical"] for d in get_db_conn().aggregate([
        {"$documents": {"$literal": [{"label": l} for l in asked]}},
        {"$project": {"canonical": canonical_of("$label", label_map)}}])]
    assert got == [labels[1], labels[54_322], labels[0], "not in the map"]


def test_boxes_of_a_label_map_too_large_for_one_query_are_refused_in_one_line(run, tmp_path,
                                                                              monkeypatch):
    """Review: past MongoDB's 16 MB the export with COCO boxes ended in pymongo's
    DocumentTooLarge, after writing part of the files."""
    from vlsr_core.fo import export

    monkeypatch.setattr(export, "QUERY_BYTES", 100)
    out = tmp_path / "new" / "export"
    with pytest.raises(ExportError, match=r"^The label map has 3 labels with another canonical "
                                          r"label: mapping the boxes to them takes a query of"):
        export_run(run[0], str(out), detections_field="objects")
    assert not (tmp_path / "new").exists()
    assert len(export_run(run[0], str(out))) == 3  # (without the boxes)


def test_coco_boxes_get_what_the_fields_show_under_the_export_categories(run, tmp_path):
    """Auditor's findings: a suggestion accepted for one box reached samples.csv, not COCO; a
    label or name starting with '$' was read as a field path (the box kept its label, or the
    export crashed); the two JSON files gave one id to two names; a box without coordinates
    crashed FiftyOne's exporter; the boxes of an image the run could not read (a truncated
    file whose header gives a size) were exported."""
    from vlsr_core.fo.review import add_edit, apply_review

    dataset, _, images = run
    dataset.persistent = True  # (the CLI opens it by name)
    s1 = next(s for s in dataset if s.filepath.endswith("s1.png"))
    s1.objects.detections.append(fo.Detection(label="helmet"))  # no coordinates
    s1.save()
    run_vlsr(dataset, "objects", encoder=FakeEncoder(images), top_k=3, min_cluster_size=1)
    h4 = next(s for s in dataset if s.filepath.endswith("h4.png"))
    lathe = next(d for d in h4.objects.detections if d.label == "Lathe Information")
    add_edit(dataset, "vlsr", "accept_suggestion", "helmet", samples=[h4.id], label_ids=[lathe.id])
    add_edit(dataset, "vlsr", "rename", "screwdriver", to="$tool.x")
    apply_review(dataset, "vlsr")
    h3 = next(s for s in dataset if s.filepath.endswith("h3.png"))
    h3["vlsr_error"] = "image file is truncated"  # as the run writes for such a file
    h3.save()
    out = tmp_path / "export"
    assert main(["export", "--dataset", dataset.name, "--out", str(out),
                 "--detections-field", "objects"]) == 0
    with open(out / "detections" / "labels.json", encoding="utf-8") as f:
        coco = json.load(f)
    with open(out / "image_labels.json", encoding="utf-8") as f:
        image_level = json.load(f)
    assert coco["categories"] == [dict(c, supercategory=None) for c in image_level["categories"]]
    name = {c["id"]: c["name"] for c in coco["categories"]}
    image = {im["id"]: os.path.basename(im["file_name"]) for im in coco["images"]}
    boxes = {}
    for a in coco["annotations"]:
        boxes.setdefault(image[a["image_id"]], []).append(name[a["category_id"]])
    assert boxes["h4.png"] == ["helmet", "helmet", "helmet"]  # Lathe Information: accepted
    assert boxes["s1.png"] == ["$tool.x"]  # the box without coordinates left out
    assert boxes["s2.png"] == ["$tool.x", "helmet"]
    assert "h3.png" not in image.values()
    assert coco_left_out(dataset, "objects") == (
        "2 boxes on 2 unreadable images and 1 box without usable coordinates (missing, not "
        "finite, of no width or height, or off the image) left out of the COCO detections")
    # a view without boxes still has its annotations, none
    export_run(dataset.match(F("filepath").ends_with("n1.png")), str(tmp_path / "none"),
               detections_field="objects")
    with open(tmp_path / "none" / "detections" / "labels.json", encoding="utf-8") as f:
        assert json.load(f)["annotations"] == []


def test_a_label_fixed_by_hand_since_the_fields_were_written_waits_for_apply(run, tmp_path):
    """Audit: a box relabelled by hand to another label of the map was exported under its old
    label's canonical label (in COCO, samples.csv and image_labels.json), the fix undone
    without a word. The export now refuses until Apply writes the fields from the map; a box
    whose accepted suggestion gives it another canonical label is no such change."""
    from vlsr_core.fo.review import add_edit, apply_review, undo_edit

    dataset, _, _ = run
    h4 = next(s for s in dataset if s.filepath.endswith("h4.png"))
    lathe = next(d for d in h4.objects.detections if d.label == "Lathe Information")
    accepted = add_edit(dataset, "vlsr", "accept_suggestion", "helmet", samples=[h4.id],
                        label_ids=[lathe.id])
    apply_review(dataset, "vlsr")
    export_run(dataset, str(tmp_path / "accepted"), detections_field="objects")  # not a change
    undo_edit(dataset, "vlsr", accepted.id)  # (review: refused as a change, until applied)
    export_run(dataset, str(tmp_path / "undone"), detections_field="objects")

    s2 = next(s for s in dataset if s.filepath.endswith("s2.png"))
    s2.objects.detections[0].label = "helmit"  # was Screwdrivers: a curator's fix
    s2.save()
    with pytest.raises(ExportError, match=r"^1 label of 'objects' changed since the run's fields "
                       r"were written, e.g. 'helmit', which they still give as 'screwdriver' "
                       r"\(with its score\): score the labels again and apply the review"):
        export_run(dataset, str(tmp_path / "stale"), detections_field="objects")
    assert not (tmp_path / "stale").exists()
    # Apply writes the label map's canonical label; the box's score is still the old label's
    # (audit: exported as helmit's), and the export waits for the scoring too
    assert "; 1 label changed by hand or given since the labels were scored carry the score " \
        "of another label or none" in apply_review(dataset, "vlsr").summary()
    with pytest.raises(ExportError, match="score labels ran before .* or of labels edited by "
                                          "hand"):
        export_run(dataset, str(tmp_path / "fixed"), detections_field="objects")
    score_labels(dataset)
    helmit = by_name(dataset, "objects.detections.vlsr_similarity")["s2.png"][0]
    assert helmit == pytest.approx(dot(run[2], "s2.png", "helmit"), abs=1e-5)
    assert apply_review(dataset, "vlsr").n_unscored == 0
    export_run(dataset, str(tmp_path / "fixed"), detections_field="objects")
    with open(tmp_path / "fixed" / COCO_FILE, encoding="utf-8") as f:
        coco = json.load(f)
    name = {c["id"]: c["name"] for c in coco["categories"]}
    image = {im["id"]: os.path.basename(im["file_name"]) for im in coco["images"]}
    boxes = {}
    for a in coco["annotations"]:
        boxes.setdefault(image[a["image_id"]], []).append(name[a["category_id"]])
    assert boxes["s2.png"] == ["helmet", "helmet"]
    assert boxes["h4.png"] == ["Lathe Information", "helmet", "helmet"]  # (the accept undone)
    rows = {os.path.basename(r["filepath"]): r for r in read_csv(tmp_path / "fixed" / "samples.csv")}
    assert json.loads(rows["s2.png"]["canonical_labels"]) == ["helmet"]


def test_labels_a_scoring_of_a_part_of_the_run_left_are_not_labels_changed_by_hand(
        dataset, tmp_path):
    """Review: after scoring a part of the run, an Apply of the whole took the others'
    labels, without a score, for labels changed by hand and put the scoring out of date."""
    from vlsr_core.fo.review import apply_review
    from vlsr_core.fo.stages import cluster_and_merge

    images = build(dataset, tmp_path / "images", SPEC, kind="detections", field="objects")
    compute_embeddings(dataset, "objects", encoder=FakeEncoder(images))
    score_labels(dataset.limit(4))
    cluster_and_merge(dataset, min_cluster_size=1)
    assert apply_review(dataset, "vlsr").n_unscored == 0
    assert dataset.get_run_info("vlsr").config.stages["score"] == "complete"
    sample = dataset.skip(1).first()  # (scored) a label changed by hand is one
    sample.objects.detections[0].label = "helmit" if sample.objects.detections[0].label != \
        "helmit" else "helmet"
    sample.save()
    assert apply_review(dataset, "vlsr").n_unscored == 1


def test_coco_of_another_field_says_which_labels_the_run_does_not_have(run, tmp_path):
    dataset, _, _ = run
    for sample in dataset:
        sample["pred"] = fo.Detections(detections=[
            fo.Detection(label=l, bounding_box=[0.1, 0.1, 0.5, 0.5]) for l in ("Helmets", "$cost")])
        sample.save()
    export_run(dataset, str(tmp_path / "export"), detections_field="pred")
    with open(tmp_path / "export" / "detections" / "labels.json", encoding="utf-8") as f:
        coco = json.load(f)
    assert {c["name"] for c in coco["categories"]} >= {"helmet", "$cost"}
    assert coco_left_out(dataset, "pred") == (
        "2 boxes on 1 unreadable image left out of the COCO detections; 9 boxes with a label "
        "the run does not have ('$cost') kept as written")


def test_a_view_that_hides_fields_exports_as_its_samples_with_every_field(run, tmp_path):
    """The fields the export reads, hidden by select_fields or exclude_fields (the App's field
    visibility adds one to an operator's view), are read all the same."""
    dataset, _, _ = run
    export_run(dataset, str(tmp_path / "whole"), detections_field="objects")
    for i, view in enumerate((dataset.select_fields("objects"),
                              dataset.exclude_fields(["objects.detections.vlsr_canonical",
                                                      "vlsr_error", "vlsr_label"]))):
        export_run(view, str(tmp_path / f"view{i}"), detections_field="objects")
        for name in ("samples.csv", "label_map.csv", "image_labels.json", COCO_FILE):
            assert (tmp_path / f"view{i}" / name).read_bytes() == (
                tmp_path / "whole" / name).read_bytes(), name
    # (audit: the notes after an export raised "DatasetView has no field 'objects'", and the
    # Detections fields to export were said without it)
    hiding = dataset.exclude_fields("objects")
    assert coco_left_out(hiding, "objects") == coco_left_out(dataset, "objects")
    assert unclustered_note(hiding) == unclustered_note(dataset)
    assert detections_fields(hiding) == ["objects"]


@pytest.mark.parametrize("field", ["vlsr_label", "vlsr_labels", "vlsr_suggestions"])
def test_an_output_field_deleted_by_hand_is_said_and_written_again_by_a_run(run, tmp_path, field):
    """The summary and the export failed with a traceback on a field of the run a user deleted."""
    from vlsr_core.fo.summary import summarize_run

    dataset, _, images = run
    dataset.delete_sample_field(field)
    words = f"ield '{field}' was deleted after the run wrote it: run again to write it back"
    assert f"**Deleted:** F{words}" in summarize_run(dataset, "vlsr")
    with pytest.raises(ExportError, match=re.escape(f"Run 'vlsr': f{words}")):
        export_run(dataset, str(tmp_path / "export"))
    assert not os.path.exists(tmp_path / "export")
    run_vlsr(dataset, "objects", encoder=FakeEncoder(images), top_k=3, min_cluster_size=1)
    assert "Deleted" not in summarize_run(dataset, "vlsr")
    assert by_name(dataset, "vlsr_label.label") == FINAL
    export_run(dataset, str(tmp_path / "export"))


@pytest.mark.parametrize("field", ["vlsr_min_similarity", "objects.detections.vlsr_similarity"])
def test_a_score_field_deleted_by_hand_is_said_by_the_summary(run, tmp_path, field):
    """Audit: with a run's scores deleted or renamed the review views showed nothing, and the
    summary said nothing of it. The export does not need them and goes on."""
    from vlsr_core.fo.summary import summarize_run

    dataset, _, images = run
    dataset.delete_sample_field(field)
    assert (f"**Deleted:** Field '{field}' was deleted after the run wrote it: run again to "
            "write it back") in summarize_run(dataset, "vlsr")
    export_run(dataset, str(tmp_path / "export"))
    run_vlsr(dataset, "objects", encoder=FakeEncoder(images), top_k=3, min_cluster_size=1)
    assert "Deleted" not in summarize_run(dataset, "vlsr") and dataset.has_field(field)


def test_views_the_export_cannot_read_are_refused_in_words(run, tmp_path):
    dataset, _, _ = run
    for view, words in (
        (dataset.to_patches("objects"), "not on a view of its patches"),
        (dataset.match(F("filepath") == "nowhere"), "There are no samples to export"),
    ):
        with pytest.raises(ExportError, match=re.escape(words)):
            export_run(view, str(tmp_path / "export"))
    assert not os.path.exists(tmp_path / "export")


def test_samples_labelled_since_the_clustering_are_said(run, tmp_path, capsys):
    """Auditor: a sample added after the run was exported without its canonical and final
    labels, and nothing said so."""
    dataset, folder, images = run
    dataset.persistent = True  # (the CLI opens it by name)
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "a")]) == 0
    assert "did not cluster" not in capsys.readouterr().out
    dataset.add_sample(fo.Sample(filepath=str(folder / "h1.png"), objects=fo.Detections(
        detections=[fo.Detection(label="helmet", bounding_box=[0, 0, 1, 1])])))
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "b")]) == 0
    assert ("note: 1 sample with labels has no canonical or final label in this export, as the "
            "run did not cluster it (labelled since, or outside the collection it was made on): "
            "run it again on a collection that holds it") in capsys.readouterr().out
    # audit: once applied, it has canonical labels, still no final label, and nothing said so
    assert main(["apply", "--dataset", dataset.name]) == 0
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "did not cluster" not in out
    assert ("note: 1 sample with labels has no final label in this export, as its image is not "
            "embedded yet (added since the run): run it again") in out
    run_vlsr(dataset, "objects", encoder=FakeEncoder(images), top_k=3, min_cluster_size=1)
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "d")]) == 0
    assert "note: " not in capsys.readouterr().out


def test_an_image_replaced_since_an_export_gets_its_new_size(run, tmp_path):
    """Audit: after a file was replaced by a larger picture, the next export still gave the
    old width and height, and the COCO boxes in pixels of the old size."""
    from PIL import Image

    dataset, folder, _ = run
    export_run(dataset, str(tmp_path / "before"), detections_field="objects")
    Image.new("RGB", (48, 32), (10, 200, 10)).save(folder / "h1.png")  # was 24 x 16
    export_run(dataset, str(tmp_path / "after"), detections_field="objects")
    for name in ("image_labels.json", "detections/labels.json"):
        with open(tmp_path / "after" / name, encoding="utf-8") as f:
            sizes = {os.path.basename(im["file_name"]): (im["width"], im["height"])
                     for im in json.load(f)["images"]}
        assert sizes["h1.png"] == (48, 32) and sizes["h2.png"] == (24, 16), name
    # audit: until the run embedded it again, every export read the file anew and wrote its
    # metadata, so that the same export gave other bytes (the COCO file's date) and changed
    # the dataset
    changed = dataset.max("last_modified_at")
    export_run(dataset, str(tmp_path / "again"), detections_field="objects")
    assert dataset.max("last_modified_at") == changed
    for name in ("samples.csv", "label_map.csv", "image_labels.json", "detections/labels.json"):
        assert ((tmp_path / "after" / name).read_bytes()
                == (tmp_path / "again" / name).read_bytes()), name


def test_a_picture_turned_in_place_by_its_exif_tag_gets_its_new_size(run, tmp_path):
    """Audit: a JPEG whose EXIF orientation was set right in place keeps its number of bytes:
    the export, and the export after a run again, gave the size and pixel boxes of the
    picture before."""
    from PIL import Image

    dataset, folder, images = run
    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter: 24 x 16 pixels, shown 16 x 24
    Image.new("RGB", (24, 16), (200, 10, 10)).save(folder / "h1.png", "JPEG", exif=exif)
    run_vlsr(dataset, "objects", encoder=FakeEncoder(images), top_k=3, min_cluster_size=1)
    h1 = next(s for s in dataset if s.filepath.endswith("h1.png"))
    box = h1.objects.detections[0].bounding_box

    def exported(name):
        export_run(dataset, str(tmp_path / name), detections_field="objects")
        with open(tmp_path / name / COCO_FILE, encoding="utf-8") as f:
            coco = json.load(f)
        [image] = [im for im in coco["images"] if im["file_name"].endswith("h1.png")]
        return (image["width"], image["height"]), next(
            a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"])

    size, bbox = exported("before")
    assert size == (16, 24) and bbox == pytest.approx([box[0] * 16, box[1] * 24, box[2] * 16,
                                                       box[3] * 24])
    data = (folder / "h1.png").read_bytes()
    tag = b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06"  # (PIL writes it big-endian)
    assert data.count(tag) == 1
    (folder / "h1.png").write_bytes(data.replace(tag, tag[:-2] + b"\x00\x01"))  # upright now
    size, bbox = exported("set right")
    assert size == (24, 16) and bbox == pytest.approx([box[0] * 24, box[1] * 16, box[2] * 24,
                                                       box[3] * 16])
    assert run_vlsr(dataset, "objects", encoder=FakeEncoder(images), top_k=3,
                    min_cluster_size=1).n_changed == 1
    assert dataset[h1.id].metadata.width == 24  # (the run read the new picture)
    assert exported("run again") == (size, bbox)


def test_images_whose_file_is_gone_since_the_run_are_said_by_the_export(run, tmp_path, capsys):
    """Left alone before: the export listed them with the size and labels read before, and
    nothing said their files were gone (a drive not mounted)."""
    dataset, folder, _ = run
    dataset.persistent = True  # (the CLI opens it by name)
    dataset.compute_metadata()  # (as an export does: their sizes were read before)
    os.remove(folder / "h1.png")
    os.remove(folder / "s1.png")
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "a"),
                 "--detections-field", "objects"]) == 0
    assert (f"note: 2 images in this export have no file at their path now (a drive not "
            f"mounted? moved since?), e.g. {folder / 'h1.png'}, {folder / 's1.png'}: they are "
            "listed with the labels and scores the run gave them, and the size if read before\n"
            ) in capsys.readouterr().out
    with open(tmp_path / "a" / "detections" / "labels.json", encoding="utf-8") as f:
        assert {os.path.basename(im["file_name"]) for im in json.load(f)["images"]} >= {
            "h1.png", "s1.png"}
    from PIL import Image

    Image.new("RGB", (24, 16)).save(folder / "h1.png")  # one is back, another picture
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert (f"note: 1 image in this export has no file at its path now (a drive not mounted? "
            f"moved since?), e.g. {folder / 's1.png'}: it is listed") in out
    # audit: a file replaced by another picture was exported with the scores of the one before
    assert (f"; 1 image file changed since the run embedded it (replaced by another picture?), "
            f"e.g. {folder / 'h1.png'}: its scores and final labels in this export are of the "
            "picture before; run again to embed and score it") in out


def test_a_detections_field_inside_an_embedded_document_is_refused_in_words(run, tmp_path):
    """Audit: 'Field 'ann.ground_truth' holds Detections, not Detections'."""
    dataset = run[0]
    for sample in dataset:
        sample["ann"] = fo.DynamicEmbeddedDocument(ground_truth=sample.objects)
        sample.save()
    dataset.add_dynamic_sample_fields()
    with pytest.raises(ExportError, match="Field 'ann.ground_truth' is inside an embedded "
                                          "document: the COCO export takes a top-level "
                                          r"Detections field; here: \['objects'\]"):
        export_run(dataset, str(tmp_path / "out"), detections_field="ann.ground_truth")


def test_the_coco_boxes_carry_no_attributes_of_another_run(run, tmp_path):
    """Audit: exported for run 'vlsr', a box carried 'other_canonical: hammer' of another run
    on the same field beside its category."""
    dataset, _, images = run
    run_vlsr(dataset, "objects", "other", encoder=FakeEncoder(images), min_cluster_size=1)
    export_run(dataset, str(tmp_path / "out"), detections_field="objects")
    with open(tmp_path / "out" / "detections" / "labels.json", encoding="utf-8") as f:
        annotations = json.load(f)["annotations"]
    attributes = set().union(*(a.get("attributes", a) for a in annotations))
    assert "vlsr_canonical" in attributes
    assert not any(a.startswith("other_") for a in attributes), sorted(attributes)


def test_the_coco_exporter_reads_only_the_boxes_of_each_sample(run, tmp_path, monkeypatch):
    """FiftyOne's exporter makes each sample whole: with the run's embeddings, suggestions and
    label sets in it, the COCO file took 2.9x the time (bench/bench_export.py)."""
    read, export = [], fo.core.collections.SampleCollection.export
    monkeypatch.setattr(fo.core.collections.SampleCollection, "export",
                        lambda self, *a, **k: (read.append(set(self.get_field_schema())),
                                               export(self, *a, **k))[-1])
    export_run(run[0], str(tmp_path / "out"), detections_field="objects")
    assert read == [{"id", "filepath", "tags", "metadata", "created_at", "last_modified_at",
                     "objects"}]
    with open(tmp_path / "out" / "detections" / "labels.json", encoding="utf-8") as f:
        assert len(json.load(f)["annotations"]) == sum(  # (an empty file has no size)
            len(boxes) for name, _, boxes in SPEC if name != "zero.png")


def test_an_empty_detections_field_name_is_no_coco(run, tmp_path):
    """Review: `--detections-field ""` ended in an AttributeError traceback."""
    written = export_run(run[0], str(tmp_path / "out"), detections_field="")
    assert sorted(map(os.path.basename, written)) == ["image_labels.json", "label_map.csv",
                                                      "samples.csv"]


def test_export_of_a_view(run, tmp_path):
    dataset, _, _ = run
    view = dataset.match(F("vlsr_label.label") == "helmet")
    export_run(view, str(tmp_path / "export"))
    rows = read_csv(tmp_path / "export" / "samples.csv")
    assert sorted(os.path.basename(r["filepath"]) for r in rows) == ["h1.png", "h2.png", "h3.png", "h4.png"]
    with open(tmp_path / "export" / "image_labels.json", encoding="utf-8") as f:
        assert len(json.load(f)["images"]) == 4


def test_a_view_that_filters_labels_or_labels_not_in_the_map_are_refused(run, tmp_path):
    """Exported from the review view of low scores, samples.csv listed part of each sample's
    labels as its labels; with labels given since the clustering, the export wrote them with
    no canonical label, where apply refused."""
    dataset, _, _ = run
    review = dataset.load_saved_view("vlsr-low-similarity")
    assert 0 < review.count("objects.detections") < dataset.select(
        review.values("id")).count("objects.detections")  # part of the samples' boxes
    with pytest.raises(ExportError, match="The saved view 'vlsr-low-similarity' filters the "
                                          "labels of 'objects'"):
        export_run(review, str(tmp_path / "export"))
    sample = dataset.first()
    sample.objects.detections.append(fo.Detection(label="welding mask",
                                                  bounding_box=[0, 0, 1, 1]))
    sample.save()
    with pytest.raises(ExportError, match=r"1 label of these samples is not in the run's label "
                                          r"map yet, e.g. \['welding mask'\]: embed, score and "
                                          "cluster them first"):
        export_run(dataset, str(tmp_path / "export"))
    assert not os.path.exists(tmp_path / "export")
    export_run(dataset.skip(1), str(tmp_path / "export"))  # the other samples are as clustered


def test_two_exports_into_one_folder_at_once_never_mix(run, tmp_path, monkeypatch):
    """Audit: two exports started together into one folder each passed the check that it was
    empty, then each removed the other's unfinished files; the folder held samples.csv of one
    and the other files of the other, and one export said it succeeded. The second is refused
    while the first writes, and the folder is checked again once held."""
    import fcntl

    from vlsr_core.fo import export

    dataset, _, _ = run
    out = tmp_path / "export"
    out.mkdir()
    held = os.open(out, os.O_RDONLY)  # another export writing there now
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ExportError, match=re.escape(
                f"Another export is writing to {out} now: export when it is done, or to "
                "another folder")):
            export_run(dataset, str(out))
    finally:
        os.close(held)
    assert os.listdir(out) == []
    # one that finished while this one read the samples (both found the folder empty)
    sizes = export._compute_sizes

    def another_export_meanwhile(*args):
        (out / "samples.csv").write_text("the other export's")
        return sizes(*args)

    monkeypatch.setattr(export, "_compute_sizes", another_export_meanwhile)
    with pytest.raises(ExportError, match="not empty"):
        export_run(dataset, str(out))
    assert os.listdir(out) == ["samples.csv"]
    assert (out / "samples.csv").read_text() == "the other export's"


def test_non_empty_directory_is_refused_unless_overwrite(run, tmp_path):
    dataset, _, _ = run
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_run(dataset, str(out))
    assert os.listdir(out) == ["notes.txt"]

    export_run(dataset, str(out), detections_field="objects", overwrite=True)
    rows = read_csv(out / "samples.csv")
    assert len(rows) == len(dataset)
    # a second export over the first one
    with pytest.raises(ExportError, match="not empty"):
        export_run(dataset, str(out), detections_field="objects")
    dataset.match(F("filepath").ends_with("h3.png")).set_field("vlsr_label.label", "replaced").save()
    export_run(dataset, str(out), detections_field="objects", overwrite=True)
    by_file = {os.path.basename(r["filepath"]): r for r in read_csv(out / "samples.csv")}
    assert by_file["h3.png"]["final_label"] == "replaced"
    assert os.path.isfile(out / "detections" / "labels.json")
    # without the boxes, the earlier boxes go, and their folder
    export_run(dataset, str(out), overwrite=True)
    assert sorted(os.listdir(out)) == ["image_labels.json", "label_map.csv", "notes.txt",
                                       "samples.csv"]
    # a file of the curator's of an export's name, in a folder of no earlier export: refused,
    # overwrite or not (audit: replaced without a word)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "samples.csv").write_text("my precious,data\n")
    with pytest.raises(ExportError, match=re.escape(
            f"{mine} holds samples.csv, which the export would replace, but not the other files "
            "of an earlier export (image_labels.json, label_map.csv): it may be a file of yours")):
        export_run(dataset, str(mine), overwrite=True)
    assert (mine / "samples.csv").read_text() == "my precious,data\n"
    # audit: a COCO file of the curator's under the export's name was replaced, or removed as
    # "the boxes of the earlier export"
    theirs = tmp_path / "theirs"
    (theirs / "detections").mkdir(parents=True)
    (theirs / COCO_FILE).write_text('{"mine": true}')
    for boxes in ("objects", None):
        with pytest.raises(ExportError, match=re.escape(
                f"{theirs} holds {COCO_FILE}, which the export would replace, but not the other "
                "files of an earlier export (image_labels.json, label_map.csv, samples.csv)")):
            export_run(dataset, str(theirs), detections_field=boxes, overwrite=True)
    assert (theirs / COCO_FILE).read_text() == '{"mine": true}'


def test_an_export_stopped_part_way_leaves_the_files_as_they_were(run, tmp_path, monkeypatch):
    from vlsr_core.fo import export

    dataset, _, _ = run
    out = tmp_path / "export"

    def stop(*args):
        raise KeyboardInterrupt  # Ctrl-C while the image labels are written

    monkeypatch.setattr(export, "_image_labels_json", stop)
    with pytest.raises(KeyboardInterrupt):
        export_run(dataset, str(out), detections_field="objects")
    # no samples.csv that looks whole, no .partial file, nor the empty folder it made
    assert not os.path.exists(out)
    with pytest.raises(KeyboardInterrupt):  # nor the folders above it that it made
        export_run(dataset, str(tmp_path / "p1" / "p2" / "out"), detections_field="objects")
    assert not os.path.exists(tmp_path / "p1")
    out.mkdir()  # a folder there before stays
    with pytest.raises(KeyboardInterrupt):
        export_run(dataset, str(out), detections_field="objects")
    assert os.listdir(out) == []
    monkeypatch.undo()
    export_run(dataset, str(out), detections_field="objects")
    before = {f: (out / f).read_bytes() for f in ("samples.csv", "label_map.csv",
                                                  "image_labels.json", "detections/labels.json")}
    dataset.exists("vlsr_label").set_field("vlsr_label.label", "replaced").save()
    monkeypatch.setattr(export, "_coco_detections", stop)
    with pytest.raises(KeyboardInterrupt):
        export_run(dataset, str(out), detections_field="objects", overwrite=True)
    # the earlier export stays whole, not a mix of two
    assert {f: (out / f).read_bytes() for f in before} == before
    assert sorted(os.listdir(out)) == ["detections", "image_labels.json", "label_map.csv",
                                       "samples.csv"]


def test_a_disk_full_is_one_line_not_a_traceback_and_leaves_the_files_as_they_were(
        run, tmp_path, monkeypatch, capsys):
    """Audit: a write failing part-way (a disk full, a folder made read-only) printed a
    traceback; the cleanup could fail in turn and print a second one."""
    import errno

    from vlsr_core.cli import main
    from vlsr_core.fo import export

    dataset, _, _ = run
    out = tmp_path / "export"
    export_run(dataset, str(out), detections_field="objects")
    before = {f: (out / f).read_bytes() for f in ("samples.csv", "label_map.csv",
                                                  "image_labels.json", "detections/labels.json")}
    write = export._coco_detections

    def full(*args):
        write(*args)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # (a write says no file name)

    monkeypatch.setattr(export, "_coco_detections", full)
    assert main(["export", "--dataset", dataset.name, "--out", str(out), "--overwrite",
                 "--detections-field", "objects"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"\nvlsr: error: cannot write {out / 'detections' / 'labels.json'}: "
                        "No space left on device; this export's unfinished files were removed\n")
    assert "Traceback" not in err
    assert {f: (out / f).read_bytes() for f in before} == before
    assert not [f for f in os.listdir(out) + os.listdir(out / "detections") if "partial" in f]
    # the cleanup failing in turn: one line still, which says so (review: it said "removed")
    remove = os.remove
    monkeypatch.setattr(os, "remove", lambda path: os.rmdir("/proc"))
    assert main(["export", "--dataset", dataset.name, "--out", str(out), "--overwrite",
                 "--detections-field", "objects"]) == 2
    assert capsys.readouterr().err.endswith(
        f": No space left on device; remove this export's unfinished files by hand "
        f"({out / 'samples.csv.partial'}, {out / 'label_map.csv.partial'}, "
        f"{out / 'image_labels.json.partial'}, {out / 'detections' / 'labels.json.partial'})\n")
    monkeypatch.setattr(os, "remove", remove)
    for nothing in ("", None):  # (audit: "cannot create : ..." after the slow part; a TypeError)
        with pytest.raises(ExportError, match=f"^export_dir is {nothing!r}: give the folder"):
            export_run(dataset, nothing)


def test_the_files_are_renamed_whole_even_when_ctrl_c_comes_between_two_renames(run, tmp_path,
                                                                               monkeypatch):
    import signal

    dataset, _, _ = run
    out = tmp_path / "export"
    export_run(dataset, str(out), detections_field="objects")
    before = {f: (out / f).read_bytes() for f in ("samples.csv", "image_labels.json")}
    dataset.exists("vlsr_label").set_field("vlsr_label.label", "replaced").save()
    replace = os.replace

    def ctrl_c_then_replace(*args):
        signal.raise_signal(signal.SIGINT)  # after the first rename, the rest still go
        replace(*args)

    monkeypatch.setattr(os, "replace", ctrl_c_then_replace)
    with pytest.raises(KeyboardInterrupt):
        export_run(dataset, str(out), detections_field="objects", overwrite=True)
    after = {f: (out / f).read_bytes() for f in before}
    assert all(after[f] != before[f] for f in before)  # all of the new export, none of the old
    assert "replaced" in after["samples.csv"].decode()
    assert sorted(os.listdir(out)) == ["detections", "image_labels.json", "label_map.csv",
                                       "samples.csv"]


def test_the_leftovers_of_a_killed_export_do_not_block_the_next(run, tmp_path):
    dataset, _, _ = run
    out = tmp_path / "export"
    (out / "detections").mkdir(parents=True)
    for leftover in ("samples.csv.partial", "detections/labels.json.partial"):
        (out / leftover).write_text("cut short")  # as kill -9 leaves them
    export_run(dataset, str(out))  # not "not empty": they are an export's own
    assert sorted(os.listdir(out)) == ["image_labels.json", "label_map.csv", "samples.csv"]
    assert len(read_csv(out / "samples.csv")) == len(dataset)
    # the files of an export are not leftovers, and beside leftovers (a kill while the
    # files were renamed) they may be of two exports (audit: "not empty" said nothing of it)
    (out / "label_map.csv.partial").write_text("cut short")
    with pytest.raises(ExportError, match="holds the .partial files of a stopped export beside "
                                          "the files of an export"):
        export_run(dataset, str(tmp_path / "export"))
    (out / "detections").mkdir()
    (out / "detections" / "mine.txt").write_text("a file of the user's")
    for name in ("samples.csv", "label_map.csv", "image_labels.json"):
        (out / name).unlink()
    with pytest.raises(ExportError, match="not empty"):
        export_run(dataset, str(out))


def test_export_before_clustering_is_refused(dataset, tmp_path):
    images = build(dataset, tmp_path / "images", SPEC, kind="detections", field="objects")
    with pytest.raises(ExportError, match="No VLSR run"):
        export_run(dataset, str(tmp_path / "export"))
    compute_embeddings(dataset, "objects", encoder=FakeEncoder(images))
    score_labels(dataset)
    with pytest.raises(ExportError, match="cluster and merge first"):
        export_run(dataset, str(tmp_path / "export"))
    assert not os.path.exists(tmp_path / "export")


def test_export_written_a_chunk_at_a_time_is_the_same(run, tmp_path, monkeypatch):
    """samples.csv and image_labels.json are streamed a chunk of samples at a time; chunks of
    3 samples (of 10) give the same files as one chunk, on a sorted view."""
    dataset = run[0]
    view = dataset.sort_by("filepath", reverse=True)
    export_run(view, str(tmp_path / "whole"))
    monkeypatch.setattr(chunks, "CHUNK_SIZE", 3)
    export_run(view, str(tmp_path / "chunked"))
    for name in ("samples.csv", "image_labels.json", "label_map.csv"):
        assert (tmp_path / "chunked" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    rows = read_csv(tmp_path / "chunked" / "samples.csv")
    assert [r["filepath"] for r in rows] == view.values("filepath")
    with open(tmp_path / "chunked" / "image_labels.json", encoding="utf-8") as f:
        coco = json.load(f)
    assert [im["file_name"] for im in coco["images"]] == view.values("filepath")


def test_export_reports_its_progress_file_by_file(run, tmp_path, monkeypatch, capsys):
    """A long export shows how far it is (the App's bar, the CLI's): a chunk at a time through
    every file, the COCO detections included, up to 1."""
    dataset = run[0]
    monkeypatch.setattr(chunks, "CHUNK_SIZE", 3)
    seen = []
    export_run(dataset, str(tmp_path / "out"), detections_field="objects", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    # 100 % only once the files are in place (audit: a kill at 100 % left a mixed folder)
    assert seen[-2] < 1.0
    # samples.csv and both passes of image_labels.json report each of their 4 chunks
    assert len([f for f in seen if 0 < f < 0.7]) >= 12
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "cli"),
                 "--detections-field", "objects"]) == 0
    assert "export: 100%" in capsys.readouterr().err


def test_the_command_keeps_progress_bars_out_of_what_it_prints(run, tmp_path):
    """`vlsr export ... > log`: its own bar goes to stderr, and FiftyOne's COCO exporter drew
    one on stdout, control characters and all, before the lines a script reads."""
    import subprocess
    import sys

    dataset = run[0]
    done = subprocess.run([sys.executable, "-m", "vlsr_core.cli", "export", "--dataset",
                           dataset.name, "--out", str(tmp_path / "out"), "--detections-field",
                           "objects"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout and done.stdout.startswith("wrote ")
    assert "export: 100%" in done.stderr
    # (audit: the bars gave the time spent alone, not the time left)
    assert re.search(r"export: 100%\|[^|]*\| \d\d:\d\d<\d\d:\d\d", done.stderr)


def test_exporting_unchanged_samples_again_writes_the_same_bytes(run, tmp_path, monkeypatch):
    """Audit: FiftyOne's COCO exporter dated the boxes' file at the time of the export, so a
    re-export of unchanged samples differed from the last (a change in DVC or git). It is
    dated by the samples' last change; an export after a change gets the new date."""
    import datetime
    import fiftyone.utils.coco as fouc

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2031, 1, 2, 3, 4, 5)

    dataset = run[0]
    export_run(dataset, str(tmp_path / "first"), detections_field="objects")
    monkeypatch.setattr(fouc, "datetime", Later)  # the clock moved on
    export_run(dataset, str(tmp_path / "again"), detections_field="objects")
    for name in (*FILES, COCO_FILE):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()

    def dated(folder):
        with open(tmp_path / folder / COCO_FILE, encoding="utf-8") as f:
            created = json.load(f)["info"]["date_created"]
        last = dataset.max("last_modified_at").replace(microsecond=0)
        return created == last.isoformat() + "+00:00"

    assert dated("again")
    sample = dataset.first()
    sample["objects"].detections[0].label = "helmet"
    sample.save()
    export_run(dataset, str(tmp_path / "changed"), detections_field="objects")
    assert dated("changed")


def test_the_coco_info_of_the_dataset_is_kept(run, tmp_path):
    """A dataset imported from COCO keeps its ``info`` (its own date too) in the export."""
    dataset = run[0]
    dataset.info = {"contributor": "crowd", "date_created": "2019/05/01", "year": 2019,
                    "description": "Helmets, 2019"}
    dataset.save()
    export_run(dataset, str(tmp_path / "out"), detections_field="objects")
    with open(tmp_path / "out" / COCO_FILE, encoding="utf-8") as f:
        info = json.load(f)["info"]
    assert (info["contributor"], info["date_created"], info["year"]) == ("crowd", "2019/05/01",
                                                                          2019)
    # audit: its description, a key of COCO's info, was left out (by FiftyOne's exporter)
    assert list(info)[:3] == ["year", "version", "description"]
    assert info["description"] == "Helmets, 2019"


def test_the_export_of_a_run_on_boxes_inside_a_document_says_why_no_coco(run, tmp_path, capsys):
    """Audit: it said "give --detections-field (objects here)", another field, and refused the
    run's own, inside an embedded document, when given."""
    dataset, _, images = run
    dataset.set_values("meta", [fo.DynamicEmbeddedDocument(dets=d)
                                for d in dataset.values("objects")])
    dataset.add_dynamic_sample_fields()
    run_vlsr(dataset, "meta.dets", key="m", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.persistent = True  # (the CLI opens it by name)
    assert main(["export", "--dataset", dataset.name, "--key", "m", "--out",
                 str(tmp_path / "out")]) == 0
    assert ("no COCO detections written: the run's boxes, 'meta.dets', are inside an embedded "
            "document, and the COCO export takes a top-level Detections field") in \
        capsys.readouterr().out

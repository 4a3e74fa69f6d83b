"""Tests of vlsr_core.fo.importers: Factorynet folders and plain CSVs, built in tmp_path."""

import os
import re
import shutil

import fiftyone as fo
from fiftyone import ViewField as F
import pytest
from PIL import Image

from vlsr_core.fo import importers
from vlsr_core.fo.importers import (
    FactorynetRow,
    InputFileError,
    import_csv,
    import_factorynet,
    read_factorynet_csv,
)


def _image(path, size=(500, 400), orientation=None):
    """Write a small solid image (format from the extension), optionally with an EXIF orientation."""
    image = Image.new("RGB", size, (120, 60, 30))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".webp": "WEBP",
           ".tif": "TIFF", ".bmp": "BMP"}[path.suffix.lower()]
    if orientation is None:
        image.save(path, format=fmt)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(path, format=fmt, exif=exif)
    return path


def _text(path, text, encoding="utf-8"):
    """Write a text file with exact contents (no newline translation)."""
    path.write_bytes(text.encode(encoding))
    return path


def _pair(folder, stem, csv_text, ext=".jpg", size=(500, 400), orientation=None):
    """A Factorynet pair: stem.csv with csv_text beside a stem+ext image; returns the image path."""
    _text(folder / f"{stem}.csv", csv_text)
    return _image(folder / f"{stem}{ext}", size, orientation)


def _samples(dataset):
    """The dataset's samples by factorynet_id."""
    return {s.factorynet_id: s for s in dataset}


def _labels(sample, field="ground_truth"):
    """The sample's classification labels, in order."""
    return [c.label for c in sample[field].classifications]


def _boxes(sample, field="ground_truth_detections"):
    """The sample's detections as (label, bounding_box, source), in order."""
    return [(d.label, d.bounding_box, d["source"]) for d in sample[field].detections]


def _problem(report, where, *words):
    """Whether a problem is at exactly `where` (path or path:line) with all `words` in its reason."""
    where = str(where)
    return any(w == where and all(word in r for word in words) for w, r in report.problems)


# ---------------------------------------------------------------- read_factorynet_csv


def test_read_factorynet_csv_rows_and_quirks(tmp_path):
    path = _text(
        tmp_path / "1711609735362.csv",
        '"Screw, 2"" wood",10,20,30,40,user\n'  # 1: quoted comma and quote, 6 columns
        "helmet,0,0,400,600\n"  # 2: 5 columns
        " Helmet ,1.5,2,3,4,wikimedia\n"  # 3: whitespace around the label stripped, casing kept
        '2" wood screw,5,6,7,8\n'  # 4: an unquoted inch mark stays in the label
        "glove,,,,\n"  # 5: blank coordinates
        "gear,0,0,0,50,user\n"  # 6: zero height
        "bolt,abc,1,2,3\n"  # 7: text in a coordinate
        "nut,1,2\n"  # 8: 3 columns
        ",1,2,3,4\n"  # 9: empty label
        "washer,1,2,3,4,user,extra\n"  # 10: 7 columns
        "drill,1,,3,4\n"  # 11: partly blank coordinates
        "\n"  # 12: blank line, ignored
        '"multi\nline",1,2,3,4\n'  # 13-14: a line break in a label, as an unclosed quote makes
        "pliers,nan,1,2,3\n"  # 15: not a finite number
        "file,1,2,3,4,scraped\n"  # 16: unknown source, kept
        "nut;1;2;3;4\n",  # 17: semicolons, as a spreadsheet of another locale writes
    )
    rows, problems = read_factorynet_csv(path)
    assert [row[:3] for row in rows] == [
        ('Screw, 2" wood', (10.0, 20.0, 40.0, 30.0), "user"),
        ("helmet", (0.0, 0.0, 600.0, 400.0), None),
        ("Helmet", (1.5, 2.0, 4.0, 3.0), "wikimedia"),
        ('2" wood screw', (5.0, 6.0, 8.0, 7.0), None),
        ("glove", None, None),
        ("gear", None, "user"),
        ("bolt", None, None),  # (audit: coordinates that do not read lost the label)
        ("drill", None, None),
        ("pliers", None, None),
        ("file", (1.0, 2.0, 4.0, 3.0), "scraped"),
    ]
    assert [row.line for row in rows] == [1, 2, 3, 4, 5, 6, 7, 11, 15, 16]
    expected = {
        5: "blank coordinates",
        6: "zero-size",
        7: "non-numeric coordinates ['abc', '1', '2', '3']; image-level label only",
        8: "3 columns",
        9: "empty label",
        10: "7 columns",
        11: "non-numeric",
        13: "lines 13-14",
        15: "non-numeric",
        16: "unexpected source",
        17: "1 column, expected label, X, Y, height, width[, source]; row skipped (its cells "
            "seem separated by ';' or tabs: the CSV must use commas)",
    }
    assert len(problems) == len(expected)
    for line, words in expected.items():
        assert any(w == f"{path}:{line}" and words in r for w, r in problems), (line, problems)


def test_read_factorynet_csv_bom_and_latin1(tmp_path):
    bom = _text(tmp_path / "a.csv", "helmet,0,0,10,10\nMaß,1,1,2,2\n", encoding="utf-8-sig")
    rows, problems = read_factorynet_csv(bom)
    assert [r.label for r in rows] == ["helmet", "Maß"]
    assert problems == []

    latin = _text(tmp_path / "b.csv", "Schlüssel,0,0,10,10,user\n", encoding="latin-1")
    rows, problems = read_factorynet_csv(latin)
    assert rows == [FactorynetRow("Schlüssel", (0.0, 0.0, 10.0, 10.0), "user", 1)]
    assert problems == [(str(latin), WINDOWS)]


WINDOWS = ("not UTF-8; read as Windows-1252 (Excel's \"CSV\"): save it as \"CSV UTF-8\" to be sure "
           "of its accents")


def test_a_csv_of_excel_and_a_csv_with_one_stray_byte_keep_their_labels(tmp_path, dataset):
    """Read as latin-1, Excel's quotes and dashes became control characters, and one stray byte
    garbled every UTF-8 accent of the file ('SchlÃ¼ssel')."""
    _plain_images(tmp_path)
    excel = tmp_path / "excel.csv"
    excel.write_bytes("imgs/a.jpg,Archimedes\u2019 screw\nimgs/b.png,\u20ac coin\n".encode("cp1252"))
    report = import_csv(excel, dataset, label_field="labels")
    assert dataset.distinct("labels.classifications.label") == ["Archimedes\u2019 screw", "\u20ac coin"]
    assert report.problems == [(str(excel), WINDOWS)]
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes("imgs/a.jpg,Schlüssel\n".encode() + b"imgs/b.png,caf\xe9\n")
    report = import_csv(mixed, dataset, label_field="more")
    assert dataset.distinct("more.classifications.label") == ["Schlüssel", "café"]
    assert report.problems == [(f"{mixed}:2", "not UTF-8, unlike the rest of the file; read as "
                                              "Windows-1252: check its accents")]


def test_an_unclosed_quote_in_a_large_csv_skips_only_the_rows_it_takes_in(tmp_path, dataset):
    """Past csv's limit of 131,072 characters a cell, the rest of the file was skipped, at a
    line far from the quote and without a word of it."""
    _plain_images(tmp_path)
    rows = ["imgs/a.jpg,\"helmet", *["imgs/a.jpg," + "x" * 60] * 2500, "imgs/a.jpg,drill\"",
            "imgs/b.png,after"]
    path = _text(tmp_path / "q.csv", "\n".join(rows) + "\n")
    report = import_csv(path, dataset, label_field="labels")
    assert dataset.distinct("labels.classifications.label") == ["after"]
    assert len(report.problems) == 1 and report.problems[0][0] == f"{path}:1"
    assert report.problems[0][1].startswith("a quoted cell runs over lines 1-2502")


def test_one_import_into_a_dataset_at_a_time(tmp_path, dataset):
    """Two imports at once each added the images the other had not yet added: 3,000 images
    made 5,963 samples."""
    import threading

    from vlsr_core.fo.lease import IMPORT, RunBusyError, run_lease

    _plain_images(tmp_path)
    path = _text(tmp_path / "l.csv", "imgs/a.jpg,helmet\nimgs/b.png,drill\n")
    refused = []

    def other_import():
        try:
            import_csv(path, dataset, label_field="labels")
        except RunBusyError as e:
            refused.append(str(e))

    with run_lease(dataset, IMPORT, "import"):  # (an import in another process, running)
        thread = threading.Thread(target=other_import)
        thread.start()
        thread.join()
    assert len(refused) == 1 and refused[0].startswith(
        "Another import into this dataset runs: 'import' has been running since")
    assert len(dataset) == 0
    assert import_csv(path, dataset, label_field="labels").n_samples == 2


def test_a_csv_of_pandas_or_with_another_name_of_the_image_column_is_said_so(tmp_path, dataset):
    """An index column read as image paths said only "no such file"; a header naming the image
    column image_path was said not to start with the image path."""
    _plain_images(tmp_path)
    indexed = _text(tmp_path / "pd.csv", ",filepath,label\n0,imgs/b.png,drill\n")
    report = import_csv(indexed, dataset, label_field="labels")
    assert (f"{indexed}:2", f"no such file {tmp_path / '0'}; row skipped (the first column holds "
            "row numbers, as pandas writes with index=True: write the CSV with index=False, the "
            "image path first)") in report.problems
    named = _text(tmp_path / "named.csv", "image_path,label\nimgs/b.png,drill\n")
    assert import_csv(named, dataset, label_field="labels").problems == []


def test_file_urls_and_windows_paths_in_a_csv(tmp_path, dataset):
    """'#' in a file:// URL was read as a fragment (the path cut there), file://tmp/... lost its
    first folder, and a Windows path got a bare "no such file"."""
    _plain_images(tmp_path)
    odd = tmp_path / "imgs" / "a #1.jpg"
    odd.write_bytes((tmp_path / "imgs" / "a.jpg").read_bytes())
    path = _text(tmp_path / "u.csv", f"file://{odd},helmet\nfile:/{tmp_path}/imgs/b.png,drill\n"
                                     "imgs\\b.png,drill\n")
    report = import_csv(path, dataset, label_field="labels")
    assert dataset.values("filepath") == [str(odd)]
    host = str(tmp_path).split("/")[1]
    assert _problem(report, f"{path}:2", f"names the host {host!r}", "(three slashes)")
    assert _problem(report, f"{path}:3", "a Windows path: write the folders with /")


def test_read_factorynet_csv_empty(tmp_path):
    assert read_factorynet_csv(_text(tmp_path / "e.csv", "")) == ([], [])


def test_read_factorynet_csv_a_cell_past_the_csv_modules_limit(tmp_path):
    # A quoted cell beyond the csv module's field size limit (131,072) is read as any other:
    # the rows after it were skipped as "malformed CSV".
    runaway = '"' + "x" * 140_000 + '",0,0,1,1\n'
    path = _text(tmp_path / "r.csv", "helmet,0,0,10,10\n" + runaway + "glove,0,0,1,1\n")
    rows, problems = read_factorynet_csv(path)
    assert [(r.label[:3], r.line) for r in rows] == [("hel", 1), ("xxx", 2), ("glo", 3)]
    assert problems == []


# ---------------------------------------------------------------- import_factorynet


def test_factorynet_labels_sources_and_repeats(tmp_path, dataset):
    image = _pair(
        tmp_path,
        "1711609735362",
        '"Screw, 2"" wood",50,40,80,100,user\n'
        "helmet,250,200,40,50,wikimedia\n"
        '"Screw, 2"" wood",0,200,80,100\n'
        "helmet,,,,,user\n"
        "bolt,abc,1,2,3\n"
        "Helmet,100,100,40,50\n",
    )  # 500 x 400, no whole-image box: canvas 500 x 400
    report = import_factorynet(tmp_path, dataset)

    assert report.n_samples == 1 and len(dataset) == 1
    assert report.n_labels == 6
    sample = dataset.first()
    assert sample.filepath == str(image)
    assert sample.factorynet_id == "1711609735362"
    assert (sample.metadata.width, sample.metadata.height) == (500, 400)  # shown in the App
    assert sample.metadata.size_bytes == image.stat().st_size
    assert _labels(sample) == ['Screw, 2" wood', "helmet", "bolt", "Helmet"]
    boxes = _boxes(sample)
    assert [(label, source) for label, _, source in boxes] == [
        ('Screw, 2" wood', "user"),
        ("helmet", "wikimedia"),
        ('Screw, 2" wood', None),
        ("Helmet", None),
    ]
    assert boxes[0][1] == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert boxes[1][1] == pytest.approx([0.5, 0.5, 0.1, 0.1])
    assert boxes[2][1] == pytest.approx([0.0, 0.5, 0.2, 0.2])
    assert boxes[3][1] == pytest.approx([0.2, 0.25, 0.1, 0.1])
    assert "ground_truth_detections.detections.source" in dataset.get_field_schema(flat=True)
    csv_path = tmp_path / "1711609735362.csv"
    assert _problem(report, f"{csv_path}:4", "blank coordinates")
    assert _problem(report, f"{csv_path}:5", "non-numeric")
    assert len(report.problems) == 2


def test_factorynet_whole_image_box_gives_canvas_width(tmp_path, dataset):
    # 1200 x 800 image (aspect 1.5); the canvas is 600 wide, given by the whole-image box.
    _pair(
        tmp_path,
        "a",
        "part,0,0,100,100\n"  # X = Y = 0 but aspect 1: not a whole-image box
        "whole,0,0,400,600\n"
        "smaller whole,0,0,200,300\n"  # a later whole-image box does not override the first
        "bolt,60,40,100,150\n",
        ext=".png",
        size=(1200, 800),
    )
    # Within 2 % of the aspect ratio (600 / 404 = 1.485) still counts; its height is clipped.
    _pair(tmp_path, "b", "whole,0,0,404,600\nnut,300,200,100,150\n", ext=".png", size=(1200, 800))
    report = import_factorynet(tmp_path, dataset)

    samples = _samples(dataset)
    a = dict((label, box) for label, box, _ in _boxes(samples["a"]))
    assert a["part"] == pytest.approx([0.0, 0.0, 1 / 6, 0.25])
    assert a["whole"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert a["smaller whole"] == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert a["bolt"] == pytest.approx([0.1, 0.1, 0.25, 0.25])
    b = dict((label, box) for label, box, _ in _boxes(samples["b"]))
    assert b["whole"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert b["nut"] == pytest.approx([0.5, 0.5, 0.25, 0.25])
    assert report.problems == []


def test_a_whole_image_box_without_a_label_still_sizes_the_canvas(tmp_path, dataset):
    """Audit (a real Factorynet file, ``,0,0,594.0,891,user``): the row was skipped before the
    canvas was read, the canvas taken for the image's 600 wide, and every box scaled 1.5 times
    too large; a box near the corner was dropped as outside the canvas."""
    _pair(tmp_path, "a", ",0,0,594.0,891,user\n"
                         "gloves,100,100,148.5,222.75\n"
                         "hammer,383,488,42,286\n", ext=".png", size=(600, 400))
    csv_path = tmp_path / "a.csv"
    report = import_factorynet(tmp_path, dataset)
    sample = _samples(dataset)["a"]
    assert [c.label for c in sample.ground_truth.classifications] == ["gloves", "hammer"]
    boxes = dict((label, box) for label, box, _ in _boxes(sample))
    assert sorted(boxes) == ["gloves", "hammer"]
    assert boxes["gloves"] == pytest.approx([100 / 891, 100 / 594, 0.25, 0.25])
    assert boxes["hammer"][2] == pytest.approx(286 / 891)
    assert report.n_labels == 2
    assert report.problems == [(f"{csv_path}:1", "empty label; its box at 0, 0 only sizes the "
                                                 "canvas")]


def test_factorynet_canvas_fallback(tmp_path, dataset):
    # 2000 px wide: canvas min(2000, 891) = 891 wide, 445.5 high.
    _pair(tmp_path, "wide", "nut,89.1,44.55,89.1,178.2\n", size=(2000, 1000))
    # 500 px wide: canvas 500 x 400; boxes beyond it are clipped, wholly outside dropped.
    _pair(
        tmp_path,
        "small",
        "x,50,40,80,100\nbig,400,300,200,200\nfar,600,10,10,10\nedge,0,0,401,500\n",
        size=(500, 400),
    )
    report = import_factorynet(tmp_path, dataset)

    samples = _samples(dataset)
    [(label, box, _)] = _boxes(samples["wide"])
    assert label == "nut" and box == pytest.approx([0.1, 0.1, 0.2, 0.2])
    small = dict((label, box) for label, box, _ in _boxes(samples["small"]))
    assert set(small) == {"x", "big", "edge"}
    assert small["x"] == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert small["big"] == pytest.approx([0.8, 0.75, 0.2, 0.25])
    assert small["edge"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert _labels(samples["small"]) == ["x", "big", "far", "edge"]
    csv_path = tmp_path / "small.csv"
    assert _problem(report, f"{csv_path}:2", "'big'", "clipped")  # at its line, to find it
    assert _problem(report, f"{csv_path}:3", "'far'", "outside the canvas")
    assert len(report.problems) == 2  # the whole-image box 0.25 % too high is not worth reporting


def test_factorynet_exif_rotated_jpeg(tmp_path, dataset):
    # Stored 300 x 200, orientation 6: shown 200 x 300. Canvas 300 x 450 from the whole-image box,
    # whose aspect ratio matches the rotated image only.
    _pair(
        tmp_path,
        "rot",
        "whole,0,0,450,300,user\npart,30,45,90,60,user\n",
        size=(300, 200),
        orientation=6,
    )
    report = import_factorynet(tmp_path, dataset)

    boxes = dict((label, box) for label, box, _ in _boxes(dataset.first()))
    assert boxes["whole"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert boxes["part"] == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert report.problems == []


def test_factorynet_image_extensions_and_preference(tmp_path, dataset):
    row = "helmet,0,0,10,10\n"
    for stem, ext in [("a", ".JPG"), ("b", ".gif"), ("c", ".png"), ("d", ".jpeg"),
                      # audit: "no image beside it" for these
                      ("w", ".webp"), ("t", ".tif"), ("m", ".bmp")]:
        _pair(tmp_path, stem, row, ext=ext)
    _pair(tmp_path, "g", row, ext=".png")
    _image(tmp_path / "g.jpg")  # .jpg preferred over .png
    _pair(tmp_path, "h", row, ext=".jpeg")
    _image(tmp_path / "h.JPG")  # .JPG preferred over .jpeg
    _pair(tmp_path, "k", row, ext=".JPG")
    _image(tmp_path / "k.jpg")  # .jpg preferred over .JPG
    report = import_factorynet(tmp_path, dataset)

    files = {s.factorynet_id: os.path.basename(s.filepath) for s in dataset}
    assert files == {
        "a": "a.JPG",
        "b": "b.gif",
        "c": "c.png",
        "d": "d.jpeg",
        "w": "w.webp",
        "t": "t.tif",
        "m": "m.bmp",
        "g": "g.jpg",
        "h": "h.JPG",
        "k": "k.jpg",
    }
    for sample in dataset:
        assert _labels(sample) == ["helmet"]
        assert len(sample.ground_truth_detections.detections) == 1
    assert _problem(report, tmp_path / "g.csv", "several images", "using g.jpg")
    assert _problem(report, tmp_path / "h.csv", "several images", "using h.JPG")
    assert _problem(report, tmp_path / "k.csv", "several images", "using k.jpg")
    assert len(report.problems) == 3


def test_factorynet_orphans_empty_csv_and_unreadable_image(tmp_path, dataset):
    _text(tmp_path / "nocsv_image.csv", "helmet,0,0,10,10\n")  # CSV without image
    _image(tmp_path / "lonely.jpg")  # image without CSV
    _text(tmp_path / "notes.txt", "not part of the dataset")
    _pair(tmp_path, "empty", "")  # empty CSV: unlabelled sample
    _text(tmp_path / "broken.csv", "helmet,50,40,80,100,user\nglove,,,,\n")
    (tmp_path / "broken.jpg").write_bytes(b"")  # unreadable image
    report = import_factorynet(tmp_path, dataset)

    samples = _samples(dataset)
    assert set(samples) == {"empty", "broken"}
    assert report.n_samples == 2
    assert _labels(samples["empty"]) == []
    assert samples["empty"].ground_truth_detections.detections == []
    assert _labels(samples["broken"]) == ["helmet", "glove"]
    assert samples["broken"].ground_truth_detections is None
    assert samples["broken"].metadata is None and samples["empty"].metadata.width > 0
    assert _problem(report, tmp_path / "nocsv_image.csv", "no image")
    assert _problem(report, tmp_path / "lonely.jpg", "no CSV")
    assert _problem(report, tmp_path / "empty.csv", "no labels", "unlabelled")
    assert _problem(report, tmp_path / "broken.jpg", "unreadable image", "no boxes")
    assert _problem(report, f"{tmp_path / 'broken.csv'}:2", "blank coordinates")
    assert len(report.problems) == 5


def test_an_unreadable_image_in_a_folder_given_relative_is_reported_once(tmp_path, dataset,
                                                                          monkeypatch):
    (tmp_path / "fn").mkdir()
    _text(tmp_path / "fn" / "broken.csv", "helmet,50,40,80,100\n")
    (tmp_path / "fn" / "broken.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    report = import_factorynet("fn", dataset)
    assert [w for w, r in report.problems if "unreadable image" in r] == ["fn/broken.jpg"]


def test_factorynet_custom_fields_and_recursion(tmp_path, dataset):
    _pair(tmp_path, "top", "helmet,0,0,10,10\n")
    (tmp_path / "sub").mkdir()
    _pair(tmp_path / "sub", "deep", "glove,0,0,10,10\n")

    report = import_factorynet(tmp_path, dataset, "labels", "boxes", recursive=False)
    assert report.n_samples == 1
    assert [c.label for c in dataset.first().labels.classifications] == ["helmet"]
    assert [d.label for d in dataset.first().boxes.detections] == ["helmet"]

    report = import_factorynet(tmp_path, dataset, "labels", "boxes")
    assert report.n_samples == 1 and report.n_existing == 1
    assert sorted(dataset.values("factorynet_id")) == ["deep", "top"]


def test_factorynet_reimport_does_not_duplicate(tmp_path, dataset):
    _pair(tmp_path, "a", "helmet,0,0,10,10\n")
    _pair(tmp_path, "b", "glove,0,0,10,10\n")
    first = import_factorynet(tmp_path, dataset)
    assert first.n_samples == 2 and first.n_existing == 0

    ids = dataset.values("ground_truth.classifications.id")
    again = import_factorynet(tmp_path, dataset)
    assert again.n_samples == 0 and again.n_existing == 2 and again.n_updated == 0
    assert len(dataset) == 2 and dataset.values("ground_truth.classifications.id") == ids
    assert again.problems == []  # meeting known images is not a problem
    assert "0 samples added" in again.summary() and "2 images already in the dataset (unchanged)" in again.summary()

    _pair(tmp_path, "c", "drill,0,0,10,10\n")
    third = import_factorynet(tmp_path, dataset)
    assert third.n_samples == 1 and third.n_existing == 2
    assert sorted(dataset.values("factorynet_id")) == ["a", "b", "c"]
    assert "1 sample added" in third.summary() and "2 images already" in third.summary()


def test_factorynet_reimport_adds_the_rows_a_csv_gained_and_keeps_the_rest(tmp_path, dataset):
    _pair(tmp_path, "a", "helmet,0,0,10,10\n")
    import_factorynet(tmp_path, dataset)
    kept = dataset.first().ground_truth.classifications[0].id
    _text(tmp_path / "a.csv", "hard hat,0,0,10,10\nhelmet,0,0,10,10\nglove,50,50,100,100,user\n")

    again = import_factorynet(tmp_path, dataset)
    a = dataset.first()
    assert (again.n_samples, again.n_existing, again.n_updated) == (0, 1, 1)
    assert _labels(a) == ["helmet", "hard hat", "glove"] and a.ground_truth.classifications[0].id == kept
    assert [label for label, _, _ in _boxes(a)] == ["helmet", "hard hat", "glove"]
    assert _boxes(a)[2][2] == "user" and again.problems == []
    assert "1 of them given the labels they lacked: 'hard hat', 'glove'" in again.summary()
    # once more: nothing left to add
    third = import_factorynet(tmp_path, dataset)
    assert third.n_updated == 0 and len(dataset.first().ground_truth_detections.detections) == 3


def test_factorynet_reimport_of_a_moved_box_adds_it_and_reports_the_old_one(tmp_path, dataset):
    _pair(tmp_path, "a", "hammer,5,5,10,10\n")
    import_factorynet(tmp_path, dataset)
    _text(tmp_path / "a.csv", "hammer,6,6,10,10\n")
    again = import_factorynet(tmp_path, dataset)
    assert len(_boxes(dataset.first())) == 2 and again.n_updated == 1 and not again.new_labels
    assert "(1 of them given 1 box)" in again.summary()  # not "the labels they lacked"
    assert _problem(again, tmp_path / "a.jpg", "1 box of ['hammer']", "no longer gives", "kept")


def test_a_reimport_gives_the_metadata_an_interrupted_import_left_out(tmp_path, dataset):
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", "imgs/a.jpg,helmet\nimgs/b.png,glove\n")
    import_csv(csv_path, dataset)
    dataset.set_values("metadata", [None, None])  # Ctrl-C while FiftyOne computed it
    again = import_csv(csv_path, dataset)
    assert dataset.count("metadata") == 2 and again.problems == []
    # what it did is said: not "unchanged"
    assert "2 images already in the dataset (2 images given their size now)" in again.summary()
    assert "(unchanged)" in import_csv(csv_path, dataset).summary()  # nothing left to do


def test_a_reimport_reads_the_metadata_of_an_image_changed_since_again(tmp_path, dataset):
    images = _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", "imgs/a.jpg,helmet\nimgs/b.png,glove\nimgs/c.gif,vise\n")
    import_csv(csv_path, dataset)
    _image(images / "a.jpg", size=(80, 60))  # replaced by a larger version: COCO boxes in pixels
    (images / "b.png").write_bytes(b"not a png")  # broken since
    again = import_csv(csv_path, dataset)
    a, b, c = dataset.sort_by("filepath")
    assert (a.metadata.width, a.metadata.height) == (80, 60)
    assert b.metadata is None and _problem(again, images / "b.png", "unreadable image")
    assert (c.metadata.width, c.metadata.height) == (40, 30) and len(again.problems) == 1
    assert again.n_sized == 1  # a.jpg: b.png could not be read


def test_an_image_under_another_name_is_not_added_twice(tmp_path, dataset):
    images = _plain_images(tmp_path)
    import_csv(_text(tmp_path / "l.csv", "imgs/a.jpg,helmet\n"), dataset)
    os.symlink(images / "a.jpg", tmp_path / "link.jpg")
    os.symlink(images, tmp_path / "linked")
    again = import_csv(_text(tmp_path / "m.csv", "link.jpg,hard hat\nlinked/a.jpg,glove\n"), dataset)
    assert len(dataset) == 1 and (again.n_samples, again.n_existing, again.n_updated) == (0, 1, 1)
    assert _labels(dataset.first()) == ["helmet", "hard hat", "glove"]


def test_import_csv_reports_an_unreadable_image(tmp_path, dataset):
    _plain_images(tmp_path)
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"not a jpeg")
    report = import_csv(_text(tmp_path / "l.csv", "imgs/bad.jpg,helmet\nimgs/a.jpg,glove\n"), dataset)
    assert report.n_samples == 2 and len(report.problems) == 1
    assert _problem(report, tmp_path / "imgs" / "bad.jpg", "unreadable image")


@pytest.mark.parametrize("text", ["", "\n \n", ",,\n"])
def test_an_empty_csv_says_so(tmp_path, dataset, text):
    """It read as "0 samples added, 0 labels read, 0 problems", as if the rows were fine."""
    path = _text(tmp_path / "l.csv", text)
    with pytest.raises(InputFileError, match=f"{re.escape(str(path))} is empty: it lists no image"):
        import_csv(path, dataset)
    assert len(dataset) == 0


@pytest.mark.parametrize("fields, words", [
    (dict(label_field="boxes"), "field 'boxes' of dataset"),
    (dict(label_field="filepath"), "'filepath' cannot be a label field"),
    (dict(label_field="a.b"), "'a.b' cannot be a label field"),
    (dict(label_field=""), "'' cannot be a label field")])
def test_a_field_that_cannot_take_the_labels_is_refused_before_anything_is_written(
        tmp_path, dataset, fields, words):
    _plain_images(tmp_path)
    dataset.add_sample_field("boxes", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    schema = dataset.get_field_schema()
    with pytest.raises(InputFileError, match=re.escape(words)):
        import_csv(_text(tmp_path / "l.csv", "imgs/a.jpg,helmet\n"), dataset, **fields)
    with pytest.raises(InputFileError):
        import_factorynet(tmp_path, dataset, **fields)
    with pytest.raises(InputFileError, match="two fields"):
        import_factorynet(tmp_path, dataset, "same", "same")
    assert len(dataset) == 0 and dataset.get_field_schema() == schema


@pytest.mark.parametrize("kind", ["video", "group"])
def test_a_dataset_that_cannot_take_images_is_refused_before_anything_is_written(
        tmp_path, dataset, kind):
    """Both imports into a video or grouped dataset ended in FiftyOne's traceback at the first
    write, leaving the label fields they had declared on the dataset."""
    _plain_images(tmp_path)
    _pair(tmp_path, "img0", "helmet,0,0,10,10\n", size=(40, 32))
    if kind == "video":
        dataset.media_type = "video"
    else:
        dataset.add_group_field("group", default="left")
        group = fo.Group()
        dataset.add_sample(fo.Sample(filepath=str(tmp_path / "imgs" / "a.jpg"),
                                     group=group.element("left")))
    schema = dataset.get_field_schema()
    for do in (lambda: import_csv(_text(tmp_path / "l.csv", "imgs/b.png,helmet\n"), dataset),
               lambda: import_factorynet(tmp_path, dataset)):
        with pytest.raises(InputFileError, match=f"dataset '{dataset.name}' holds {kind} samples: "
                           "images are imported into an image dataset"):
            do()
    assert len(dataset) == (kind == "group") and dataset.get_field_schema() == schema


def test_factorynet_adds_in_chunks_and_reports_progress(tmp_path, dataset, monkeypatch):
    for i in range(5):
        _pair(tmp_path, f"img{i}", "helmet,0,0,10,10\n", size=(40, 32))
    _text(tmp_path / "orphan.csv", "helmet,0,0,10,10\n")
    monkeypatch.setattr(importers, "CHUNK_SIZE", 2)
    monkeypatch.setattr(importers, "PROGRESS_EVERY", 1)
    chunks = []
    add_samples = fo.Dataset.add_samples

    def spy(self, samples, *args, **kwargs):
        chunks.append(len(samples))
        return add_samples(self, samples, *args, **kwargs)

    monkeypatch.setattr(fo.Dataset, "add_samples", spy)
    fractions = []
    report = import_factorynet(tmp_path, dataset, progress=fractions.append)

    assert chunks == [2, 2, 1]
    assert report.n_samples == 5 and len(dataset) == 5
    assert fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    assert fractions[-1] == 1.0 and len(fractions) >= 5


def test_summary_lines(tmp_path, dataset):
    _text(tmp_path / "x.csv", "helmet,0,0,10,10\n")
    report = import_factorynet(tmp_path, dataset)
    lines = report.summary().splitlines()
    assert lines[0] == "0 samples added, 0 labels read, 2 problems"
    assert lines[1].startswith("first problem: ") and "x.csv" in lines[1]
    assert importers.ImportReport(3, 4).summary() == "3 samples added, 4 labels read, 0 problems"


def test_a_folder_with_no_factorynet_image_says_what_one_is(tmp_path, dataset):
    assert _problem(import_factorynet(tmp_path, dataset), tmp_path,
                    "no Factorynet image: each image needs a CSV of its boxes beside it")
    _image(tmp_path / "a.jpg")  # images alone: maybe a plain CSV's
    report = import_factorynet(tmp_path, dataset)
    assert _problem(report, tmp_path, "1 image here had none", "use vlsr import-csv")


def test_linked_subfolders_are_walked_once_and_a_link_loop_ends(tmp_path, dataset):
    (tmp_path / "real").mkdir()
    _pair(tmp_path / "real", "0001", "helmet,0,0,10,10\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(tmp_path / "real")
    (root / "again").symlink_to(tmp_path / "real")
    (root / "loop").symlink_to(root)
    report = import_factorynet(root, dataset)
    assert report.n_samples == 1 and len(dataset) == 1


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("link", ["0000link", "zzzlink"])  # read before or after the image
def test_an_image_and_a_link_to_it_in_one_folder_are_one_sample_and_keep_every_label(
        tmp_path, dataset, monkeypatch, chunk, link):
    """A Factorynet folder holding an image and a link to it made two samples of it; a second
    import then read the samples' labels by position with the linked one counted twice, and
    wrote each sample the labels of another (a curator's own labels gone, boxes shifted). Each
    name's labels are not "no longer given" by the other, also with the two names in
    different chunks of the import (``chunk``: its size)."""
    if chunk:
        monkeypatch.setattr(importers, "CHUNK_SIZE", chunk)
    root = tmp_path / "fn"
    root.mkdir()
    for stem, label in [("1002", "rocket"), ("1004", "motorcycle"), ("1005", "horse")]:
        _pair(root, stem, f"{label},0,0,10,10\n")
    import_factorynet(root, dataset)
    for sample in dataset:  # what a curator adds in the App
        sample.ground_truth.classifications.append(fo.Classification(label=f"mine-{sample.factorynet_id}"))
        sample.save()
    before = {s.factorynet_id: (_labels(s), _boxes(s)) for s in dataset}
    (root / f"{link}.jpg").symlink_to(root / "1002.jpg")
    _text(root / f"{link}.csv", "helmet,0,0,10,10\n")
    for _ in range(2):  # the link first seen, then seen again
        report = import_factorynet(root, dataset)
        assert len(dataset) == 3 and report.n_samples == 0
        assert report.n_existing == 3  # (the image and its link are one: it said 4)
        # each name's labels are the other's, not labels "the input no longer gives" (the
        # curator's own are)
        told = " ".join(why for _, why in report.problems if "no longer gives" in why)
        assert "rocket" not in told and "helmet" not in told and "mine-1002" in told
        after = {s.factorynet_id: (_labels(s), _boxes(s)) for s in dataset}
        assert {k: v for k, v in after.items() if k != "1002"} == {
            k: v for k, v in before.items() if k != "1002"}
        assert after["1002"][0] == ["rocket", "mine-1002", "helmet"]

    fresh = fo.Dataset()
    try:
        reports = [import_factorynet(root, fresh) for _ in range(2)]
        for report in reports:
            assert not [p for p in report.problems if "no longer gives" in p[1]], report.problems
        # the link of an image added now is not one already in the dataset
        assert [(r.n_samples, r.n_existing) for r in reports] == [(3, 0), (0, 3)]
        assert len(fresh) == 3 and sorted(sorted(_labels(s)) for s in fresh) == [
            ["helmet", "rocket"], ["horse"], ["motorcycle"]]
    finally:
        fresh.delete()


def test_factorynet_missing_directory(tmp_path, dataset):
    with pytest.raises(NotADirectoryError, match=f"^no such folder: {tmp_path / 'nope'}$"):
        import_factorynet(tmp_path / "nope", dataset)
    # audit: a CSV given was "not a directory", as a folder missing was
    with pytest.raises(NotADirectoryError, match="is a file, not a folder: .* for one CSV of "
                                                 "image paths and labels, use vlsr import-csv"):
        import_factorynet(_text(tmp_path / "l.csv", "imgs/a.jpg,helmet\n"), dataset)


# ---------------------------------------------------------------- import_csv


def _plain_images(tmp_path):
    """tmp_path/imgs with a.jpg, b.png and c.gif."""
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ["a.jpg", "b.png", "c.gif"]:
        _image(images / name, size=(40, 30))
    return images


@pytest.mark.parametrize(
    "header", ["filepath,labels\n", "Image,label 1,label 2\n", "PATH\n", "file,\n", ""]
)
def test_import_csv_merges_rows_and_resolves_paths(tmp_path, dataset, header):
    images = _plain_images(tmp_path)
    csv_path = _text(
        tmp_path / "labels.csv",
        header
        + "imgs/a.jpg,helmet,glove\n"  # relative to the CSV's folder
        + f"{images / 'b.png'},drill\n"  # absolute
        + 'imgs/a.jpg,glove, "Screw, 2"" wood", ,\n'  # merged into a.jpg; blank cells ignored
        + "\n"
        + "imgs/c.gif,\n"  # no labels
        + "imgs/missing.jpg,nut\n"
        + "labels.csv,csv\n",  # exists, but not an image
    )
    offset = 1 if header else 0
    report = import_csv(csv_path, dataset)

    assert [os.path.basename(p) for p in dataset.values("filepath")] == ["a.jpg", "b.png", "c.gif"]
    labels = {os.path.basename(s.filepath): _labels(s) for s in dataset}
    assert labels == {"a.jpg": ["helmet", "glove", 'Screw, 2" wood'], "b.png": ["drill"], "c.gif": []}
    assert all(s.metadata.width > 0 and s.metadata.height > 0 for s in dataset)
    assert report.n_samples == 3 and report.n_labels == 4 and report.n_repeats == 1  # glove
    assert "4 labels read (1 repeat of a label on the same image, kept once)" in report.summary()
    assert _problem(report, f"{csv_path}:{5 + offset}", "no labels", "unlabelled")
    assert _problem(report, f"{csv_path}:{6 + offset}", "no such file", "missing.jpg")
    assert _problem(report, f"{csv_path}:{7 + offset}", "not an image")
    assert len(report.problems) == 3


def test_columns_a_header_does_not_name_as_labels_are_left_out_and_reported(tmp_path, dataset):
    """Every cell after the path was a label: a ``split`` column gave each image the label
    ``train``, a ``score`` column one per number, and an import of vlsr's own samples.csv gave
    scores and suggestion lists as labels."""
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv",
                     "image_path,Label,split,final_label,tag_2,score,,Object Class\n"
                     "imgs/a.jpg,helmet,train,glove,drill,0.91,vise,nut,extra\n"
                     "imgs/b.png,hammer,val,,,0.5\n")
    report = import_csv(csv_path, dataset)
    labels = {os.path.basename(s.filepath): _labels(s) for s in dataset}
    assert labels == {"a.jpg": ["helmet", "glove", "drill", "vise", "nut", "extra"],
                      "b.png": ["hammer"]}
    assert _problem(report, f"{csv_path}:1", "columns 'split' (column 3), 'score' (column 6) of "
                    "the header are not named as labels: left out", "rename a column")
    assert len(report.problems) == 1 and "1 problem" in report.summary()
    # headers of label tools and pandas: label words in any case, but not a label's id or count
    csv_path = _text(tmp_path / "tools.csv",
                     "filename,ground_truth,className,choice,class_id,annotation_id,label_count\n"
                     "imgs/a.jpg,saw,file,clamp,3,17,2\n")
    report = import_csv(csv_path, dataset, label_field="tools")
    assert dataset.match(F("filepath").ends_with("a.jpg")).values(
        "tools.classifications.label") == [["saw", "file", "clamp"]]
    assert _problem(report, f"{csv_path}:1", "'class_id' (column 5), 'annotation_id' (column 6), "
                    "'label_count' (column 7) of the header are not named as labels")
    # label lists written as JSON or as pandas writes them give their labels
    csv_path = _text(tmp_path / "lists.csv",
                     "filepath,final_label,final_score,original_labels,suggestions\n"
                     'imgs/c.gif,vise,0.8,"[""vise"", ""Vises"", "" ""]","[[""nut"", 0.7]]"\n'
                     'imgs/c.gif,"[not json]",,"[]",\n'
                     "imgs/c.gif,\"['cat', 'dog']\"\n"
                     # audit: numpy arrays, as pandas writes them, were joined: 'hard hathelmet'
                     "imgs/c.gif,\"['hard hat' 'helmet']\"\n")
    import_csv(csv_path, dataset)
    assert _labels(dataset.match(F("filepath").ends_with("c.gif")).first()) == [
        "vise", "Vises", "[not json]", "cat", "dog", "hard hat", "helmet"]
    # JSON escapes as JSON reads them: a surrogate pair (json.dumps' default), "\/" (PHP's)
    csv_path = _text(tmp_path / "escaped.csv",
                     'filepath,labels\nimgs/b.png,"[""\\ud840\\udc00 radical"", ""a\\/b""]"\n'
                     'imgs/b.png,"[{[]}]"\n')
    import_csv(csv_path, dataset, label_field="escaped")
    assert dataset.match(F("filepath").ends_with("b.png")).values(
        "escaped.classifications.label") == [["\U00020000 radical", "a/b", "[{[]}]"]]
    # an export's samples.csv gives its final labels, not the noisy ones beside them
    csv_path = _text(tmp_path / "export.csv",  # (its header retouched in a spreadsheet)
                     "Filepath,final_label,final_score,original_labels,canonical_labels,"
                     "suggestions,notes\n"
                     'imgs/b.png,hammer,0.8,"[""hamer"", ""drill""]","[""hammer"", ""drill""]",'
                     '"[[""nut"", 0.7]]"\n')
    report = import_csv(csv_path, dataset, label_field="cleaned")
    assert dataset.match(F("filepath").ends_with("b.png")).values("cleaned.classifications.label") \
        == [["hammer"]]
    assert _problem(report, f"{csv_path}:1", "an export's samples.csv: its final labels are "
                    "imported (column 'final_label')")


def test_import_csv_header_only_on_first_row(tmp_path, dataset):
    _plain_images(tmp_path)
    (tmp_path / "image").mkdir()  # a later "image" row is a path (here not a file), not a header
    csv_path = _text(tmp_path / "l.csv", "imgs/a.jpg,helmet\nimage,x\n")
    report = import_csv(csv_path, dataset)
    assert len(dataset) == 1 and _labels(dataset.first()) == ["helmet"]
    assert _problem(report, f"{csv_path}:2", "is a folder, not an image file")


def test_import_csv_says_why_a_path_names_no_image(tmp_path, dataset, monkeypatch):
    """A URL, a folder, a header whose first column is not the path, a path written from the
    current folder rather than the CSV's: each gets its reason and what to do."""
    _plain_images(tmp_path)
    (tmp_path / "csvs").mkdir()
    monkeypatch.chdir(tmp_path)
    csv_path = _text(tmp_path / "csvs" / "l.csv", "label,filepath\nhttps://example.com/a.jpg,x\n"
                                                  "imgs/a.jpg,helmet\n../imgs,x\n")
    report = import_csv(csv_path, dataset)
    assert len(dataset) == 0
    assert _problem(report, f"{csv_path}:1", "the first row (label, filepath) reads as a header",
                    "a header names the image column filepath or path", "and it comes first")
    assert _problem(report, f"{csv_path}:2", "is a URL: only image files on this machine")
    assert _problem(report, f"{csv_path}:3", "paths are read from the CSV's folder",
                    "imgs/a.jpg is a file from the current folder")
    assert _problem(report, f"{csv_path}:4", "is a folder, not an image file")
    # audit: an image named by a hash alone was "not an image file", a JPEG as it was
    shutil.copy(tmp_path / "imgs" / "a.jpg", tmp_path / "imgs" / "3f9a2c0d1e")
    (tmp_path / "imgs" / "clip.mp4").write_bytes(b"")
    csv_path = _text(tmp_path / "csvs" / "n.csv", "../imgs/3f9a2c0d1e,x\n../imgs/clip.mp4,x\n")
    report = import_csv(csv_path, dataset)
    assert _problem(report, f"{csv_path}:1", "3f9a2c0d1e: its name has no extension, and FiftyOne "
                    "tells an image by the extension of its file name: rename it with its image "
                    "extension (.jpg, .png, ...)")
    assert _problem(report, f"{csv_path}:2", "clip.mp4 is a video, not an image file")


def test_import_csv_with_semicolons_says_the_cells_need_commas(tmp_path, dataset):
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", "filepath;label\nimgs/a.jpg;helmet\n")
    report = import_csv(csv_path, dataset)
    assert len(dataset) == 0 and len(report.problems) == 2
    assert _problem(report, f"{csv_path}:2", "seem separated by ';' or tabs: the CSV must use commas")


def test_import_csv_reimport_and_latin1(tmp_path, dataset):
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", "imgs/a.jpg,Schlüssel\nimgs/b.png,Maß\n", encoding="latin-1")
    fractions = []
    first = import_csv(csv_path, dataset, label_field="labels", progress=fractions.append)
    assert first.n_samples == 2 and fractions[-1] == 1.0
    assert [c.label for c in dataset.first().labels.classifications] == ["Schlüssel"]
    assert first.problems == [(str(csv_path), WINDOWS)]

    again = import_csv(csv_path, dataset, label_field="labels")
    assert again.n_samples == 0 and again.n_existing == 2 and len(dataset) == 2
    assert again.problems == [(str(csv_path), WINDOWS)]


def test_import_csv_says_labels_that_read_as_utf8_decoded_as_windows_1252(tmp_path, dataset):
    """Audit: ``cafÃ©`` (a UTF-8 file opened as Windows-1252, then saved) went in beside
    ``café`` without a word."""
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", "imgs/a.jpg,caf\u00c3\u00a9\nimgs/b.png,Schl\u00fcssel,"
                                         "\u5b89\u5168\u5e3d\n")
    report = import_csv(csv_path, dataset)
    assert report.n_samples == 2
    assert report.problems == [(str(csv_path), (
        "1 label reads as UTF-8 decoded as Windows-1252, e.g. 'caf\u00c3\u00a9' for 'caf\u00e9': "
        "the file was opened with the wrong encoding and saved; they are imported as written: "
        "fix them in the file (or open the original as UTF-8) and import again"))]


def test_import_csv_again_after_fixing_a_quote_loses_no_label(tmp_path, dataset):
    """An unclosed quote took an image's second row; importing the fixed CSV gave the new image
    but dropped 'hard hat' of the image already imported, reporting no problem."""
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", 'imgs/a.jpg,helmet\nimgs/b.png,"glove\nimgs/a.jpg,hard hat\n')
    import_csv(csv_path, dataset)
    assert len(dataset) == 1 and _labels(dataset.first()) == ["helmet"]

    _text(tmp_path / "l.csv", 'imgs/a.jpg,helmet\nimgs/b.png,"glove"\nimgs/a.jpg,hard hat\n')
    fixed = import_csv(csv_path, dataset)
    assert (fixed.n_samples, fixed.n_existing, fixed.n_updated) == (1, 1, 1) and fixed.problems == []
    labels = dict(zip(*dataset.values(["filepath", "ground_truth.classifications.label"])))
    assert labels == {str(tmp_path / "imgs/a.jpg"): ["helmet", "hard hat"],
                      str(tmp_path / "imgs/b.png"): ["glove"]}
    assert fixed.new_labels == {"hard hat": 1}
    assert "1 sample added, 3 labels read, 1 image already in the dataset (1 of them given the " \
           "labels they lacked: 'hard hat'), 0 problems" == fixed.summary()


def test_import_csv_again_keeps_labels_the_csv_dropped_and_says_so(tmp_path, dataset):
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", "imgs/a.jpg,hrose,saddle\n")
    import_csv(csv_path, dataset)
    _text(tmp_path / "l.csv", "imgs/a.jpg,horse,saddle\n")
    fixed = import_csv(csv_path, dataset)
    assert _labels(dataset.first()) == ["hrose", "saddle", "horse"] and fixed.n_updated == 1
    assert _problem(fixed, tmp_path / "imgs/a.jpg", "['hrose']", "no longer gives", "kept")
    assert len(fixed.problems) == 1
    # a field of another kind is refused, not overwritten
    dataset.set_values("other", [fo.Detections(detections=[fo.Detection(label="x")])])
    with pytest.raises(InputFileError, match="field 'other' of dataset .* holds Detections, not "
                                             "Classifications: give another field"):
        import_csv(csv_path, dataset, label_field="other")
    assert [d.label for d in dataset.first().other.detections] == ["x"]


@pytest.mark.parametrize("tail", ["", "imgs/c.gif,glove\n"])
def test_import_csv_an_unclosed_quote_is_reported_not_swallowed(tmp_path, dataset, tail):
    """An unclosed quote once took the next row into a label ('bolt\\nimg/b.jpg,nut'), losing an
    image with no problem reported. The rows it spans are skipped and named."""
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", 'imgs/a.jpg,"bolt\nimgs/b.png,nut\n' + tail)
    report = import_csv(csv_path, dataset)
    assert len(dataset) == 0 and report.n_samples == 0
    last = 3 if tail else 2
    assert _problem(report, f"{csv_path}:1", f"lines 1-{last}", "unclosed quote", "'imgs/b.png,nut'")
    assert len(report.problems) == 1
    # once the quote is closed, everything is imported
    _text(tmp_path / "l.csv", 'imgs/a.jpg,"bolt"\nimgs/b.png,nut\n' + tail)
    fixed = import_csv(csv_path, dataset)
    assert fixed.n_samples == (3 if tail else 2) and fixed.problems == []


def test_import_csv_rows_after_a_closed_multiline_cell_are_kept(tmp_path, dataset):
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", 'imgs/a.jpg,"two\nlines"\nimgs/b.png,nut\n')
    report = import_csv(csv_path, dataset)
    assert [os.path.basename(p) for p in dataset.values("filepath")] == ["b.png"]
    assert _problem(report, f"{csv_path}:1", "lines 1-2", "'lines'")
    assert len(report.problems) == 1


def test_read_factorynet_csv_an_unclosed_quote_is_reported(tmp_path):
    path = _text(tmp_path / "q.csv", 'helmet,0,0,10,10\n"glove,0,0,1,1\nbolt,0,0,2,2\n')
    rows, problems = read_factorynet_csv(path)
    assert rows == [FactorynetRow("helmet", (0.0, 0.0, 10.0, 10.0), None, 1)]
    assert len(problems) == 1 and problems[0][0] == f"{path}:2" and "unclosed quote" in problems[0][1]


@pytest.mark.parametrize("kind", ["folder", "binary"])
def test_import_csv_a_folder_or_a_binary_file_is_refused_before_anything(tmp_path, dataset, kind):
    path = tmp_path / "labels.csv"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(InputFileError, match="folder, not a CSV" if kind == "folder" else "binary file"):
        import_csv(path, dataset)
    assert len(dataset) == 0


def test_factorynet_a_binary_csv_is_one_problem_not_the_end_of_the_import(tmp_path, dataset):
    folder = tmp_path / "fn"
    folder.mkdir()
    for stem in ("1", "2"):
        _image(folder / f"{stem}.jpg", size=(40, 30))
    (folder / "1.csv").write_text("helmet,0,0,10,10\n")
    (folder / "2.csv").write_bytes(b"\x00\x01\x02" * 100)
    report = import_factorynet(folder, dataset)
    assert report.n_samples == 1
    assert _problem(report, str(folder / "2.csv"), "binary file")


def test_an_import_into_a_field_a_run_writes_is_refused(tmp_path, dataset):
    """Imported into vlsr_labels, the labels were emptied by the next `vlsr run` (and would go
    with `vlsr delete-run`)."""
    from fake_clip import FakeEncoder, build

    from vlsr_core.fo.stages import run_vlsr

    run_vlsr(dataset, "gt", encoder=FakeEncoder(build(dataset, tmp_path / "images")))
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", "imgs/a.jpg,helmet\n")
    n, schema = len(dataset), dataset.get_field_schema()
    for field in ("vlsr_labels", "vlsr_suggestions"):
        with pytest.raises(InputFileError, match=re.escape(
                f"field {field!r} is an output of run 'vlsr': running that run again or deleting "
                "it would take what you import with it")):
            import_csv(csv_path, dataset, label_field=field)
        with pytest.raises(InputFileError, match="is an output of run 'vlsr'"):
            import_factorynet(tmp_path, dataset, label_field=field)
    with pytest.raises(InputFileError, match="is an output of run 'vlsr'"):
        import_factorynet(tmp_path, dataset, detections_field="vlsr_suggestions")
    # a field named as a run's output before any run: the first run would write over it
    other = fo.Dataset()
    with pytest.raises(InputFileError, match="'vlsr_label' is the name of an output of a run"):
        import_csv(csv_path, other, label_field="vlsr_label")
    assert len(dataset) == n and dataset.get_field_schema() == schema and len(other) == 0
    other.delete()


def test_a_csv_as_a_spreadsheet_may_save_it(tmp_path, dataset):
    """UTF-16 was called a binary file, a header alone read as a clean import of nothing, a
    file:// address was refused as a URL, and a field name with a space was taken (Apply's
    copy refuses it)."""
    images = _plain_images(tmp_path)
    utf16 = tmp_path / "u.csv"
    utf16.write_bytes("filepath,label\nimgs/a.jpg,helmet\n".encode("utf-16"))
    with pytest.raises(InputFileError, match=re.escape(
            'is UTF-16 text (a spreadsheet\'s "Unicode Text"): save it as "CSV UTF-8"')):
        import_csv(utf16, dataset)
    # audit: without its byte order mark, an .xlsx or a .gz: "a binary file", no more
    utf16.write_bytes("filepath,label\nimgs/a.jpg,helmet\n".encode("utf-16-le"))
    with pytest.raises(InputFileError, match=re.escape(
            'binary file (it holds NUL bytes), not a CSV file; it looks like UTF-16 text')):
        import_csv(utf16, dataset)
    # an executable's header, mostly NUL, is not (audit: called UTF-16 text)
    utf16.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x03\x00\x3e\x00\x01" + bytes(183))
    with pytest.raises(InputFileError) as refused:
        import_csv(utf16, dataset)
    assert str(refused.value).endswith("is a binary file (it holds NUL bytes), not a CSV file")
    import gzip
    import zipfile
    with zipfile.ZipFile(tmp_path / "book.xlsx", "w") as book:
        book.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(InputFileError, match=re.escape('is a workbook or zip archive, not a CSV '
                                                       'file: save it as "CSV UTF-8"')):
        import_csv(tmp_path / "book.xlsx", dataset)
    (tmp_path / "l.csv.gz").write_bytes(gzip.compress(b"imgs/a.jpg,helmet\n"))
    with pytest.raises(InputFileError, match=r"is compressed \(gzip\), not a CSV file"):
        import_csv(tmp_path / "l.csv.gz", dataset)
    with pytest.raises(InputFileError, match="holds a header row and nothing else: it lists no"):
        import_csv(_text(tmp_path / "h.csv", "filepath,label\n"), dataset)
    with pytest.raises(InputFileError, match="'my field' cannot be a label field"):
        import_csv(_text(tmp_path / "l.csv", "imgs/a.jpg,helmet\n"), dataset,
                   label_field="my field")
    assert len(dataset) == 0
    url = (images / "a.jpg").as_uri().replace("a.jpg", "a%2Ejpg")  # as a browser writes it
    report = import_csv(_text(tmp_path / "f.csv", f"{url},helmet\n"), dataset)
    assert not report.problems
    assert [(s.filepath, _labels(s)) for s in dataset] == [(str(images / "a.jpg"), ["helmet"])]


def test_read_factorynet_csv_trailing_empty_columns_and_a_comma_in_a_label(tmp_path):
    """Audit: Excel's trailing empty column dropped every row of the file (7 columns); an
    unquoted comma shifted the box and was said as an unexpected source alone."""
    path = _text(tmp_path / "a.csv", "helmet,10,10,100,200,user,\r\nglove,10,10,100,200,,\r\n"
                                     "size 10, 12,20,20,50,50\r\n")
    rows, problems = read_factorynet_csv(path)
    assert [row[:3] for row in rows] == [("helmet", (10.0, 10.0, 200.0, 100.0), "user"),
                                         ("glove", (10.0, 10.0, 200.0, 100.0), None),
                                         ("size 10", (12.0, 20.0, 50.0, 20.0), "50")]
    assert problems == [(f"{path}:3", "unexpected source '50'; kept as written (a number: if "
                                      "the label holds a comma, quote it, as here it reads "
                                      "'size 10')")]


def test_import_csv_headers_of_other_names_keep_their_other_columns_out(tmp_path, dataset):
    """Audit: a header named file_path, File Path or img, or of names the importer does not
    know, made every other column labels: a split column gave each image the label train."""
    _plain_images(tmp_path)
    for k, header in enumerate(["file_path,label,confidence", "File Path,Label,Split",
                                "img,label,annotator", "picture,label,split"]):
        csv_path = _text(tmp_path / f"h{k}.csv", f"{header}\nimgs/a.jpg,cat,train\n")
        report = import_csv(csv_path, dataset, label_field=f"gt{k}")
        assert dataset.values(f"gt{k}.classifications.label") == [["cat"]], header
        assert _problem(report, f"{csv_path}:1", "of the header is not named as labels: left out")
    assert _problem(report, f"{csv_path}:1", "reads as a header of unknown names")


def test_import_csv_says_when_cells_seem_to_list_several_labels(tmp_path, dataset):
    """Audit: cat;dog, cat|dog and [cat, dog] each became one label, and nothing said so."""
    _plain_images(tmp_path)
    csv_path = _text(tmp_path / "l.csv", "filepath,labels\nimgs/a.jpg,cat;dog\nimgs/b.png,cat|dog\n"
                                         'imgs/c.gif,"[cat, dog]"\n')
    report = import_csv(csv_path, dataset)
    assert sorted(dataset.values("ground_truth.classifications.label", unwind=True)) == [
        "[cat, dog]", "cat;dog", "cat|dog"]  # (as written: a cell is one label)
    assert report.problems == [(str(csv_path), (
        "3 cells hold ';' or '|', or a list that does not read as one, e.g. 'cat;dog': a cell "
        "is one label, so they are imported as written; if a cell lists several labels, give "
        'each its own cell, or write them as a list: ["cat", "dog"]'))]


def test_import_csv_finds_a_name_in_the_other_unicode_form_and_hints_at_case(tmp_path, dataset):
    """Audit: a path with accents written decomposed (as macOS saves names) was "no such file"
    printed as the file that exists; a.JPG for a.jpg said no more than that."""
    import unicodedata

    folder = tmp_path / "imgs"
    folder.mkdir()
    _image(folder / unicodedata.normalize("NFC", "ünï.jpg"), size=(40, 30))
    _image(folder / "a.jpg", size=(40, 30))
    csv_path = _text(tmp_path / "l.csv", f"imgs/{unicodedata.normalize('NFD', 'ünï.jpg')},cat\n"
                                         "imgs/a.JPG,dog\n")
    report = import_csv(csv_path, dataset)
    assert dataset.values("filepath") == [str(folder / unicodedata.normalize("NFC", "ünï.jpg"))]
    assert report.problems == [(f"{csv_path}:2", (
        f"no such file {folder / 'a.JPG'}; row skipped (the file a.jpg differs in case only: "
        "file names here tell upper and lower case apart)"))]

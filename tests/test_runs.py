"""Stored runs: a run saved when the run classes lived in ``vlsr_core.runs`` still loads, runs on
and deletes cleanly."""

import fiftyone.core.runs as fors
from bson import json_util

from vlsr_core.fo.runs import VLSRResults, VLSRRunConfig
from vlsr_core.fo.stages import score_labels
from vlsr_core.engine.params import ScoreParams

from fake_clip import CANONICAL, label_snapshot

OLD = "vlsr_core.runs."


def as_saved_before_the_move(dataset, key):
    """Rewrite the stored class paths of run ``key`` as the earlier module layout wrote them."""
    doc = fors.Run._get_run_doc(dataset, key)
    doc.config["cls"] = OLD + "VLSRRunConfig"
    results = json_util.loads(doc.results.read().decode())
    results["cls"] = OLD + "VLSRResults"
    doc.results.delete()
    doc.results.put(json_util.dumps(results).encode(), content_type="application/json")
    doc.save()
    dataset.reload()


def test_a_run_stored_under_the_old_class_paths_loads_and_runs_on(ran):
    dataset, _, _, _ = ran
    before = label_snapshot(dataset)
    as_saved_before_the_move(dataset, "vlsr")
    assert fors.Run._get_run_doc(dataset, "vlsr").config["cls"] == OLD + "VLSRRunConfig"
    config = dataset.get_run_info("vlsr").config
    assert isinstance(config, VLSRRunConfig) and config.top_k == 3
    results = dataset.load_run_results("vlsr", cache=False)
    assert isinstance(results, VLSRResults) and results.canonical == CANONICAL
    score_labels(dataset, top_k=2)  # the stored run goes on
    assert dataset.get_run_info("vlsr").config.params(ScoreParams).top_k == 2
    dataset.delete_run("vlsr")
    assert dataset.list_runs() == [] and not dataset.has_field("vlsr_label")
    assert label_snapshot(dataset) == before

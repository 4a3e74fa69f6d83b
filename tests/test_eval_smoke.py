"""The quality harness (eval/) still runs end to end: a small dataset, one seed."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_eval_harness_runs_and_prints_its_tables(tmp_path):
    out = subprocess.run(
        [sys.executable, "eval/run.py", "--concepts", "20", "--images", "300", "--seeds", "1",
         "--no-fiftyone"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for expected in ("AUROC", "keep first label", "string normalisation", "VLSR"):
        assert expected in out.stdout


def test_crop_scoring_separates_wrong_labels_of_small_objects_better():
    from eval.crops import SceneConfig, compare

    rows = {r["group"]: r for r in compare(SceneConfig(n_images=400, n_concepts=40), seed=1)}
    small = rows["small objects, cropped"]
    assert small["auroc_crop"] > small["auroc_image"] + 0.2
    tiny = rows["small objects, too small to crop"]  # scored on the whole image either way
    assert tiny["auroc_crop"] == tiny["auroc_image"]


def test_the_synonym_sets_of_a_public_clone_leave_out_factorynet_alone(tmp_path, monkeypatch,
                                                                      capsys):
    """Install audit: in a clone without ../shared/data, eval/synonyms.py stopped at once, and
    measured none of the public sets either."""
    from eval import synonym_sets

    monkeypatch.setattr(synonym_sets, "FACTORYNET", tmp_path / "absent.tsv")
    assert [name for name, _ in synonym_sets.available_sets()] == [
        name for name in synonym_sets.SETS if name != "factorynet"]
    assert "factorynet: left out" in capsys.readouterr().err

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

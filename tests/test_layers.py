"""The layers stay apart: the engine imports neither FiftyOne nor torch, the model side not
FiftyOne, so each can be used, tested and benchmarked alone."""

import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = sorted(f"vlsr_core.engine.{p.stem}" for p in
                (Path(__file__).resolve().parents[1] / "vlsr_core" / "engine").glob("[!_]*.py"))


@pytest.mark.parametrize("modules, absent", [
    (["vlsr_core", *ENGINE], ["fiftyone", "torch", "transformers"]),  # (every module of it)
    (["vlsr_core.model.encoder", "vlsr_core.model.images", "vlsr_core.model.random_clip"],
     ["fiftyone"]),
])
def test_a_layer_imports_nothing_of_the_layers_above(modules, absent):
    code = (f"import sys, {', '.join(modules)}; "
            f"print([m for m in {absent!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_default_parameters_need_no_torch():
    code = ("import sys; from vlsr_core import EmbedParams, MergeParams, ScoreParams; "
            "EmbedParams(device='auto'); MergeParams(); ScoreParams(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_clustering_a_small_vocabulary_needs_no_torch():
    """PyTorch's int8 kernel is only worth importing for large vocabularies (engine/screening.py)."""
    code = ("import sys, numpy as np; from vlsr_core import cluster_labels; "
            "cluster_labels(np.random.default_rng(0).normal(size=(2000, 32))); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr

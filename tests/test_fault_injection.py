"""kill -9 during each stage of `vlsr run`, at points chosen by the progress it reports, then run
again: the results equal an uninterrupted run's and the input labels are untouched."""

import os
import re
import signal
import subprocess
import sys
import threading

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image


pytestmark = pytest.mark.slow

WORDS = ["bolt", "Bolts", "nut", "gear", "Gear", "washer", "spring", "lathe", "drill", "vise"]
N_IMAGES = 150


@pytest.fixture
def datasets(tmp_path):
    """Two persistent datasets with the same images and labels: one to kill, one for reference."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(N_IMAGES):
        path = tmp_path / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path)
        labels = list(dict.fromkeys(rng.choice(WORDS, int(rng.integers(1, 4)))))
        samples.append(fo.Sample(filepath=str(path), gt=fo.Classifications(classifications=[
            fo.Classification(label=l, confidence=float(rng.random()), note=f"n{i}") for l in labels])))
    names = [f"vlsr-fault-{os.getpid()}-{rng.integers(1 << 30)}-{k}" for k in ("victim", "ref")]
    made = []
    for name in names:
        ds = fo.Dataset(name, persistent=True)
        ds.add_samples([s.copy() for s in samples])
        made.append(ds)
    yield made
    for ds in made:
        ds.delete()


def cli(dataset, model):
    return [sys.executable, "-m", "vlsr_core.cli", "run", "--dataset", dataset.name,
            "--label-field", "gt", "--model", model, "--batch-size", "1", "--num-workers", "0",
            "--min-cluster-size", "3", "--device", "cpu"]


def run_and_kill(argv, stage, percent):
    """Run ``argv``; SIGKILL it once its progress bar for ``stage`` shows ``percent`` % or more.
    Returns the exit code (-9 when killed)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = bytearray()

    def watch():
        while chunk := proc.stderr.read1(4096):
            seen.extend(chunk)
            done = [int(p) for p in re.findall(rf"{stage}:\s+(\d+)%".encode(), bytes(seen))]
            if done and max(done) >= percent:
                os.kill(proc.pid, signal.SIGKILL)
                return

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    code = proc.wait(timeout=600)
    reader.join(timeout=10)
    return code


def outputs(dataset):
    """Everything the run wrote, per image, comparable across datasets."""
    dataset.reload()
    names = [os.path.basename(p) for p in dataset.values("filepath")]
    values = {}
    for field in ("vlsr_label.label", "vlsr_labels.classifications.label",
                  "vlsr_suggestions.classifications.label", "gt.classifications.vlsr_canonical",
                  "gt.classifications.vlsr_cluster"):
        values[field] = dict(zip(names, dataset.values(field)))
    for field in ("vlsr_embedding", "gt.classifications.vlsr_similarity", "vlsr_min_similarity"):
        values[field] = dict(zip(names, (np.asarray(v, dtype=np.float64) if v is not None else None
                                         for v in dataset.values(field))))
    return values


def inputs(dataset):
    """The input labels as they are stored, without the attributes the run adds."""
    dataset.reload()
    return {os.path.basename(p): [{k: v for k, v in c.to_dict().items() if not k.startswith("vlsr_")}
                                  for c in labels.classifications]
            for p, labels in zip(dataset.values("filepath"), dataset.values("gt"))}


@pytest.mark.parametrize("stage, percent", [("embed", 30), ("embed", 80), ("score", 1),
                                            ("cluster", 60)])
def test_killed_then_rerun_equals_an_uninterrupted_run(datasets, tiny_clip, stage, percent):
    victim, reference = datasets
    before = inputs(victim)
    assert subprocess.run(cli(reference, tiny_clip), capture_output=True, timeout=600).returncode == 0
    assert run_and_kill(cli(victim, tiny_clip), stage, percent) == -signal.SIGKILL
    assert inputs(victim) == before

    done = subprocess.run(cli(victim, tiny_clip), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert inputs(victim) == before
    victim.reload()
    assert victim.get_run_info("vlsr").config.stages == {"score": "complete", "cluster": "complete"}
    got, want = outputs(victim), outputs(reference)
    for field in want:
        for name, value in want[field].items():
            if isinstance(value, np.ndarray):
                np.testing.assert_allclose(got[field][name], value, atol=1e-6, err_msg=f"{field} {name}")
            else:
                assert got[field][name] == value, (field, name)
    assert victim.load_run_results("vlsr").canonical == reference.load_run_results("vlsr").canonical

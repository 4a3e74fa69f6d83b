"""Embedding split into shards, run by two `fiftyone delegated launch` workers, equals one run
(images and the crops of their boxes)."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from PIL import Image

from vlsr_core.model.random_clip import save_random_clip
from vlsr_core.fo.stages import compute_embeddings

pytestmark = pytest.mark.slow

N_IMAGES = 24


@pytest.fixture
def persistent(tmp_path):
    """A persistent dataset, visible to worker processes, deleted afterwards."""
    ds = fo.Dataset(f"vlsr-shards-{uuid.uuid4().hex[:8]}", persistent=True)
    samples = []
    for i in range(N_IMAGES):
        path = tmp_path / f"img{i:02d}.png"
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
        samples.append(fo.Sample(filepath=str(path), gt=fo.Detections(detections=[
            fo.Detection(label=["helmet", "drill", "glove"][i % 3], bounding_box=[0.1, 0.2, 0.5, 0.6]),
            fo.Detection(label="glove", bounding_box=[0, 0, 1, 1])][: 1 + i % 2])))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    samples.append(fo.Sample(filepath=str(tmp_path / "broken.jpg"), gt=fo.Detections()))
    ds.add_samples(samples)
    yield ds
    ds.delete()


def _workers(n):
    """Start n delegated-operation workers: separate processes, as on other machines."""
    bin_dir = Path(sys.executable).parent
    return [subprocess.Popen([str(bin_dir / "fiftyone"), "delegated", "launch"], env=os.environ.copy(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(n)]


def test_two_workers_process_the_shards_and_equal_a_single_run(persistent, tmp_path):
    ds = persistent
    clip = save_random_clip(str(tmp_path / "clip"))
    service = DelegatedOperationService()
    r = foo.execute_operator("@vlsr/vlsr/compute_embeddings", dataset=ds, params=dict(
        label_field="gt", model=clip, batch_size=4, num_shards=3, key="sharded", crops=True,
        crop_min_size=8))
    ops = service.list_operations(dataset_name=ds.name, operator="@vlsr/vlsr/embed_shard")
    assert len(ops) == 3 and all(op.run_state == "queued" for op in ops)
    assert sorted(ds.load_run_results("sharded").labels) == ["drill", "glove", "helmet"]
    assert "queued 3 image shards" in str(r.executor.to_json()["requests"])

    workers = _workers(2)
    try:
        end = time.time() + 300
        while time.time() < end:
            states = [service.get(op.id).run_state for op in ops]
            if all(s in ("completed", "failed") for s in states):
                break
            time.sleep(1)
        docs = [service.get(op.id) for op in ops]
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)
    assert [d.run_state for d in docs] == ["completed"] * 3, [d.result for d in docs]
    assert sum(d.result.result["n_embedded"] for d in docs) == N_IMAGES
    assert sum(d.result.result["n_failed"] for d in docs) == 1

    # the same images embedded in one run give the same embeddings
    compute_embeddings(ds, "gt", key="single", model=clip, batch_size=4, num_workers=0, crops=True,
                       crop_min_size=8)
    ds.reload()
    sharded, single = ds.values("sharded_embedding"), ds.values("single_embedding")
    assert sum(e is not None for e in sharded) == N_IMAGES
    for a, b in zip(sharded, single):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert ds.values("sharded_error") == ds.values("single_error")
    assert ds.values("sharded_crop_ids") == ds.values("gt.detections.id")[:N_IMAGES] + [None]
    n_crops = 0
    for a, b in zip(ds.values("sharded_crop_embeddings"), ds.values("single_crop_embeddings")):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, atol=1e-5)
            n_crops += len(a)
    assert n_crops == N_IMAGES * 3 // 2

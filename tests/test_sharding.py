"""Every stage split into shards, run by two `fiftyone delegated launch` workers, equals one run:
the embeddings of the images and of the crops of their boxes, the scores, the label map and the
review views."""

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
from vlsr_core.fo.stages import cluster_and_merge, compute_embeddings, score_labels

from test_stage_shards import outputs, review

pytestmark = pytest.mark.slow

N_IMAGES = 24
RUN_SHARD = "@vlsr/vlsr/run_shard"


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


def _wait(service, ops, timeout=300):
    """The operations' documents once all of them have completed or failed."""
    end = time.time() + timeout
    while time.time() < end:
        docs = [service.get(op.id) for op in ops]
        if all(d.run_state in ("completed", "failed") for d in docs):
            return docs
        time.sleep(1)
    return [service.get(op.id) for op in ops]


def _queued(service, ds, stage):
    """The shards of ``stage`` queued (maybe started already by a worker)."""
    ops = [op for op in service.list_operations(dataset_name=ds.name, operator=RUN_SHARD)
           if op.context.request_params["params"]["stage"] == stage]
    assert len(ops) == 3, stage
    return ops


def test_two_workers_run_every_stage_in_shards_and_equal_a_single_run(persistent, tmp_path):
    ds = persistent
    clip = save_random_clip(str(tmp_path / "clip"))
    service = DelegatedOperationService()
    r = foo.execute_operator("@vlsr/vlsr/compute_embeddings", dataset=ds, params=dict(
        label_field="gt", model=clip, batch_size=4, num_shards=3, key="sharded", crops=True,
        crop_min_size=8, num_workers=0))
    embed_ops = _queued(service, ds, "embed")
    assert all(op.run_state == "queued" for op in embed_ops)  # no worker yet
    # each shard decodes as the form said (in the worker's process: 0 decoding processes)
    assert [op.context.request_params["params"]["num_workers"] for op in embed_ops] == [0] * 3
    assert sorted(ds.load_run_results("sharded").labels) == ["drill", "glove", "helmet"]
    assert "queued 3 shards" in str(r.executor.to_json()["requests"])

    workers = _workers(2)
    try:
        embedded = _wait(service, embed_ops)
        foo.execute_operator("@vlsr/vlsr/score_labels", dataset=ds, params=dict(
            key="sharded", num_shards=3, top_k=2, low_quantile=0.3))
        scored = _wait(service, _queued(service, ds, "score"))
        foo.execute_operator("@vlsr/vlsr/cluster_and_merge", dataset=ds, params=dict(
            key="sharded", num_shards=3, min_cluster_size=1))
        written = _wait(service, _queued(service, ds, "cluster"))
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
        for op in service.list_operations(dataset_name=ds.name):
            service.delete_operation(op.id)
    for docs in (embedded, scored, written):
        assert [d.run_state for d in docs] == ["completed"] * 3, [d.result for d in docs]
    assert sum(d.result.result["n_embedded"] for d in embedded) == N_IMAGES
    assert sum(d.result.result["n_failed"] for d in embedded) == 1
    # exactly one shard of each stage with a last part ran it
    for docs in (scored, written):
        assert sum("finished" in d.result.result for d in docs) == 1
    assert ds.get_run_info("sharded").config.stages == {"score": "complete", "cluster": "complete"}

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

    # scored and merged in one run from the same embeddings (a random CLIP's scores nearly tie,
    # so 1e-5 apart would reorder suggestions), they give the same results
    for field in ("embedding", "crop_embeddings"):
        ds.set_values(f"single_{field}", ds.values(f"sharded_{field}"))
    score_labels(ds, "single", top_k=2, low_quantile=0.3)
    cluster_and_merge(ds, "single", min_cluster_size=1)
    assert outputs(ds, "sharded", "single") == outputs(ds, "single", "sharded")
    assert review(ds, "sharded", "gt.detections") == review(ds, "single", "gt.detections")

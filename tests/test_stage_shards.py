"""Stages 2 and 3 split into shards (prepare, one call a shard, finish) leave exactly what one
run leaves: every score, suggestion, canonical and final label, the threshold, the histogram and
the review views. The shards here run in one process; tests/test_sharding.py runs them as
delegated operations on two workers."""

import pytest

from vlsr_core.fo.chunks import shards
from vlsr_core.fo.runs import saved_view_names
from vlsr_core.fo.stages import (
    VLSRError,
    cluster_and_merge,
    cluster_shard,
    compute_embeddings,
    finish_cluster_shards,
    finish_score_shards,
    prepare_cluster_shards,
    prepare_score_shards,
    score_labels,
    score_shard,
)

from fake_clip import FakeEncoder, view_labels
from test_crops import crop_vector, photos  # noqa: F401 (a fixture)

MERGE = dict(min_cluster_size=1)


def outputs(dataset, key, other):
    """Every sample as a dict with run ``key``'s fields and attributes renamed ``run_...``,
    run ``other``'s left out, and the ids of the objects the runs created dropped."""
    def normal(d):
        if isinstance(d, dict):
            return {k.replace(f"{key}_", "run_", 1): normal(v) for k, v in d.items()
                    if not k.startswith(f"{other}_") and k != "_id"}
        if isinstance(d, list):
            return [normal(v) for v in d]
        return d

    dataset.reload()
    return [normal(s.to_dict()) for s in dataset]


def review(dataset, key, path):
    """The run's threshold, histogram and the labels in each of its review views."""
    config = dataset.get_run_info(key).config
    views = {role: view_labels(dataset, name, path) for role, name in saved_view_names(key).items()
             if dataset.has_saved_view(name)}
    return config.low_similarity_threshold, config.score_histogram, views, dict(config.stages)


def in_shards(dataset, key, n, **params):
    """Stages 2 and 3 as shards would run them, each shard a separate call."""
    prepare_score_shards(dataset, key, **{k: v for k, v in params.items() if k != "min_cluster_size"})
    reports = [score_shard(part, key) for part in shards(dataset, n)]
    low = finish_score_shards(dataset, key)
    prepare_cluster_shards(dataset, key, **MERGE)
    written = sum(cluster_shard(part, key) for part in shards(dataset, n))
    finish_cluster_shards(dataset, key)
    return reports, low, written


def test_scoring_and_merging_in_three_shards_equal_one_run(main):
    dataset, images = main
    for key in ("one", "split"):
        compute_embeddings(dataset, "gt", key, encoder=FakeEncoder(images))
    report = score_labels(dataset, "one", top_k=3, low_quantile=0.3)
    cluster_and_merge(dataset, "one", **MERGE)
    reports, low, written = in_shards(dataset, "split", 3, top_k=3, low_quantile=0.3)

    assert sorted(r.n_samples + r.n_unscored for r in reports) == [4, 5, 5]
    assert sum(r.n_scores for r in reports) == report.n_scores == 13  # distinct labels of the scored images
    assert low == report.low_similarity_threshold and written == len(dataset)
    assert outputs(dataset, "split", "one") == outputs(dataset, "one", "split")
    split, one = review(dataset, "split", "gt.classifications"), review(dataset, "one", "gt.classifications")
    assert split == one
    assert ("h4.png", "Lathe Information") in one[2]["low_similarity"]  # not an empty match
    assert one[3] == {"score": "complete", "cluster": "complete"}


def test_crop_scores_in_shards_equal_one_run(photos):  # noqa: F811
    dataset, images = photos
    for key in ("one", "split"):
        compute_embeddings(dataset, "gt", key, crops=True, crop_min_size=4,
                           encoder=FakeEncoder(images, crop_vector=crop_vector(images)))
    report = score_labels(dataset, "one", top_k=3, low_quantile=0.3)
    cluster_and_merge(dataset, "one", **MERGE)
    _, low, _ = in_shards(dataset, "split", 2, top_k=3, low_quantile=0.3)
    assert low == report.low_similarity_threshold
    assert outputs(dataset, "split", "one") == outputs(dataset, "one", "split")
    assert review(dataset, "split", "gt.detections") == review(dataset, "one", "gt.detections")


def test_a_shard_needs_its_stage_prepared(main):
    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    with pytest.raises(VLSRError, match="no score stage in progress: prepare the shards first"):
        score_shard(dataset, "vlsr")
    score_labels(dataset)
    with pytest.raises(VLSRError, match="no cluster stage in progress"):
        finish_cluster_shards(dataset, "vlsr")

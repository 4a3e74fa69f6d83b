"""Brain runs on a VLSR run's embeddings: FiftyOne's Embeddings panel and similarity search."""

import numpy as np
import pytest

from vlsr_core.fo.brain import BrainRunError, map_embeddings, map_problem

from fake_clip import FakeEncoder, build


@pytest.fixture
def embedded(dataset, tmp_path):
    from vlsr_core.fo.stages import compute_embeddings

    images = build(dataset, tmp_path / "images")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    return dataset, images


def test_a_map_and_a_similarity_index_of_the_embedded_samples(embedded):
    dataset, images = embedded
    report = map_embeddings(dataset, "vlsr")
    assert (report.n_samples, report.n_left_out) == (12, 2)  # the two unreadable images
    assert set(dataset.list_brain_runs()) == {"vlsr_map", "vlsr_image_index"}
    points = dataset.load_brain_results("vlsr_map")
    assert points.points.shape == (12, 2) and np.isfinite(points.points).all()
    # sort by similarity finds the image nearest to a helmet picture among the helmets
    query = dataset.match({"filepath": {"$regex": "h1.png$"}}).first().id
    nearest = dataset.sort_by_similarity(query, k=4, brain_key="vlsr_image_index")
    helmets = {"h1.png", "h2.png", "h3.png", "h4.png", "n1.png"}  # pictures of a helmet
    found = [p.rsplit("/", 1)[-1] for p in nearest.values("filepath")]
    assert found[0] == "h1.png" and set(found) <= helmets
    map_embeddings(dataset, "vlsr")  # again: replaced, not refused
    assert dataset.get_run_info("vlsr").config.created_brain_runs == ["vlsr_image_index", "vlsr_map"]
    from vlsr_core.fo.runs import what_goes

    assert " and 2 Brain runs (vlsr_image_index, vlsr_map) of run 'vlsr'" in what_goes(dataset, "vlsr")
    dataset.delete_run("vlsr")
    assert dataset.list_brain_runs() == []


def test_brain_runs_of_others_and_missing_methods_are_refused(embedded):
    import fiftyone.brain as fob

    dataset, _ = embedded
    try:
        import umap  # noqa: F401
    except ImportError:
        assert "pip install umap-learn" in map_problem(dataset, "vlsr", "umap")
    fob.compute_visualization(dataset.exists("vlsr_embedding"), embeddings="vlsr_embedding",
                              method="pca", brain_key="vlsr_map")
    with pytest.raises(BrainRunError, match="was not made by run 'vlsr'"):
        map_embeddings(dataset, "vlsr")
    assert map_problem(dataset, "other") == "No VLSR run 'other' on this dataset: compute embeddings first"

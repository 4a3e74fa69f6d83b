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


def test_a_map_of_too_few_embeddings_is_refused_and_the_map_before_kept(embedded):
    """Audit: a map of one embedded sample deleted the map before, then failed in
    scikit-learn ("n_components=2 must be between 1 and ..."), leaving a Brain run of none."""
    dataset, _ = embedded
    map_embeddings(dataset, "vlsr")
    one = dataset.exists("vlsr_embedding").limit(1)
    with pytest.raises(BrainRunError, match="A map by PCA needs 2 image embeddings or more; "
                                            "this target has 1"):
        map_embeddings(one, "vlsr")
    assert dataset.load_brain_results("vlsr_map").points.shape == (12, 2)


def test_a_brain_run_made_by_hand_under_a_deleted_ones_name_is_not_the_runs(embedded):
    """Audit: after the run's Brain runs were deleted by hand and a curator made one of the
    same name, vlsr took it for its own: a map again replaced it without a word, and deleting
    the run deleted it."""
    import fiftyone.brain as fob

    from vlsr_core.fo.runs import delete_run, what_goes

    dataset, _ = embedded
    map_embeddings(dataset, "vlsr")
    dataset.delete_brain_runs()
    fob.compute_visualization(dataset.exists("vlsr_embedding"), embeddings="vlsr_embedding",
                              method="pca", brain_key="vlsr_map")  # the curator's own
    with pytest.raises(BrainRunError, match="'vlsr_map' exists and was not made by run 'vlsr'"):
        map_embeddings(dataset, "vlsr")
    assert "Brain run" not in what_goes(dataset, "vlsr")
    delete_run(dataset, "vlsr")
    assert dataset.list_brain_runs() == ["vlsr_map"]


def test_a_map_holds_the_run_and_says_which_samples_wait_for_an_embedding(embedded):
    """Audit: `vlsr delete-run` went ahead in the middle of a map, which then failed inside
    FiftyOne; a map made while embedding had stopped part-way said its left-out samples were
    without an embedding, read as unreadable."""
    import threading

    from vlsr_core.fo.lease import RunBusyError, run_lease

    dataset, _ = embedded
    seen = []
    with run_lease(dataset, "vlsr", "delete the run"):
        other = threading.Thread(target=lambda: seen.append(_raised(map_embeddings, dataset)))
        other.start()
        other.join()
    assert isinstance(seen[0], RunBusyError)
    dataset.limit(3).set_values("vlsr_embedding", [None] * 3)  # (not embedded yet)
    assert map_embeddings(dataset, "vlsr").summary() == (
        "made the map 'vlsr_map' and similarity index 'vlsr_image_index' of 9 image embeddings "
        "(5 samples without an embedding left out: 2 unreadable, 3 not embedded yet, which a "
        "run again embeds (then map again)): open the Embeddings panel to see them")


def _raised(function, *args):
    try:
        function(*args)
    except Exception as e:
        return e


def test_a_map_made_before_images_were_embedded_again_is_said_to_be_out_of_date(embedded):
    """Audit: after a picture was replaced and embedded again, the map kept its old point
    without a word (the similarity index reads the field, and follows)."""
    from PIL import Image

    from vlsr_core.fo.brain import outdated_map
    from vlsr_core.fo.stages import compute_embeddings
    from vlsr_core.fo.summary import summarize_run

    from fake_clip import image_vector

    dataset, images = embedded
    map_embeddings(dataset, "vlsr")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))  # nothing to embed
    assert outdated_map(dataset, "vlsr") is None
    assert "Map out of date" not in summarize_run(dataset, "vlsr")
    path = next(p for p in dataset.values("filepath") if p.endswith("d1.png"))
    Image.new("RGB", (48, 32), (200, 10, 10)).save(path)  # a curator fixes the picture
    images["d1.png"] = image_vector("glove", "d1-new")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert outdated_map(dataset, "vlsr").startswith("the map 'vlsr_map' (made ")
    assert ("**Map out of date:** The map 'vlsr_map' (made " in summarize_run(dataset, "vlsr")
            and "map the embeddings again to see them (*VLSR: map the embeddings* in the "
            "App)." in summarize_run(dataset, "vlsr"))
    map_embeddings(dataset, "vlsr")
    assert outdated_map(dataset, "vlsr") is None
    # a picture that cannot be read now takes its embedding back: the map shows it still
    with open(path, "wb") as f:
        f.write(b"not an image")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))
    assert dataset.match({"filepath": path}).first()["vlsr_embedding"] is None
    assert outdated_map(dataset, "vlsr") is not None


def test_a_clones_copies_of_the_runs_brain_runs_are_its_own(embedded):
    """Audit: FiftyOne stamps the runs a clone copies anew, and vlsr then took the clone's map
    for a stranger's: mapping again was refused, and deleting the run left both behind."""
    from vlsr_core.fo.runs import delete_run, what_goes

    dataset, _ = embedded
    map_embeddings(dataset, "vlsr")
    clone = dataset.clone()
    try:
        assert "2 Brain runs (vlsr_image_index, vlsr_map)" in what_goes(clone, "vlsr")
        map_embeddings(clone, "vlsr")  # made again, not refused
        delete_run(clone, "vlsr")
        assert clone.list_brain_runs() == []
        assert sorted(dataset.list_brain_runs()) == ["vlsr_image_index", "vlsr_map"]
    finally:
        clone.delete()
    # a map the curator made by hand under the run's name is theirs in a clone too (review:
    # the clone's stamp made it the run's, and deleting the run deleted it)
    import fiftyone.brain as fob

    dataset.delete_brain_run("vlsr_map")
    fob.compute_visualization(dataset.exists("vlsr_embedding"), embeddings="vlsr_embedding",
                              method="pca", brain_key="vlsr_map", progress=False)
    clone = dataset.clone()
    try:
        assert "1 Brain run (vlsr_image_index)" in what_goes(clone, "vlsr")
        delete_run(clone, "vlsr")
        assert clone.list_brain_runs() == ["vlsr_map"]
    finally:
        clone.delete()

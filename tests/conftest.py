"""Test set-up: a database of the tests' own on the real MongoDB that FiftyOne starts."""

import os
from pathlib import Path

# Before fiftyone is imported anywhere: keep test datasets out of the user's database.
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-tests")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
# the repository root is the plugin directory
os.environ.setdefault("FIFTYONE_PLUGINS_DIR", str(Path(__file__).resolve().parents[1]))
# run.sh installs MongoDB 6.0, which FiftyOne supports but warns about on every connection
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

import signal
import uuid

import pytest

# a suite started in the background by a script (`cmd &`, nohup) inherits SIGINT ignored, and
# the tests of what Ctrl-C does would see nothing: Python's own handler, as in a terminal
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A directory holding a tiny random CLIP (weights, character-level tokenizer, image
    processor), loaded by the same code as real weights."""
    from vlsr_core.model.random_clip import save_random_clip

    return save_random_clip(str(tmp_path_factory.mktemp("tiny-clip")))


@pytest.fixture
def dataset():
    """An empty, non-persistent FiftyOne dataset, deleted after the test."""
    import fiftyone as fo

    ds = fo.Dataset(f"vlsr-test-{uuid.uuid4().hex[:12]}")
    yield ds
    if not ds.deleted:
        ds.delete()


@pytest.fixture
def main(dataset, tmp_path):
    """The MAIN dataset of :mod:`fake_clip` (Classifications in ``gt``) and its image
    embeddings, nothing run yet."""
    from fake_clip import build

    return dataset, build(dataset, tmp_path / "images")


@pytest.fixture
def ran(main):
    """MAIN after a full run (top 3 suggestions, no merging of small clusters)."""
    from fake_clip import FakeEncoder

    from vlsr_core.fo.stages import run_vlsr

    dataset, images = main
    encoder = FakeEncoder(images)
    report = run_vlsr(dataset, "gt", encoder=encoder, top_k=3, min_cluster_size=1)
    return dataset, images, encoder, report


def pytest_collection_modifyitems(items):
    """Mark every test that builds on the ``dataset`` fixture ``db``, so that
    ``-m "not db and not browser and not slow"`` runs the engine and model tiers alone."""
    for item in items:
        if "dataset" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so that fixtures can see whether it failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)

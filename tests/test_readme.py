"""README.md's Python API block runs as written, on a small dataset built here.

The block names the paper's CLIP by its hub id and a local folder; no weights can be downloaded
here, so both resolve to a tiny random CLIP (the hub id through the loader, the folder as a
link beside the block's working directory). Every other line runs unchanged.
"""

import os

import fiftyone as fo
import numpy as np
from PIL import Image

import vlsr_core.model.encoder as encoder_module
from vlsr_core.engine.defaults import DEFAULT_MODEL

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
LABELS = [["helmet", "Helmets"], ["helmit"], ["screwdriver"], ["drill"],
          ["Lathe Information", "helmet"], ["drill", "screwdriver"]]


def python_api_block():
    text = open(README, encoding="utf-8").read()
    return text.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]


def _unit(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def test_the_python_api_block_of_the_readme_runs(dataset, tiny_clip, tmp_path, monkeypatch):
    load = encoder_module._load
    monkeypatch.setattr(encoder_module, "_load",
                        lambda model: load(tiny_clip if model == DEFAULT_MODEL else model))
    (tmp_path / "clip-vit-large-patch14").symlink_to(tiny_clip)
    monkeypatch.chdir(tmp_path)
    paths = []
    for i, labels in enumerate(LABELS):
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
        paths.append(path)
        dataset.add_sample(fo.Sample(
            filepath=path,
            ground_truth=fo.Classifications(classifications=[fo.Classification(label=l) for l in labels]),
            ground_truth_detections=fo.Detections(detections=[
                fo.Detection(label=l, bounding_box=[0.1, 0.1, 0.5, 0.5]) for l in labels])))
    (tmp_path / "label_map.csv").write_text("label,canonical\nhelmit,helmit\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    vocabulary = sorted({l for labels in LABELS for l in labels})
    vocabulary_embeddings = _unit(rng.normal(size=(len(vocabulary), 16)))
    names = dict(dataset=dataset, paths=paths, vocabulary=vocabulary, image_labels=LABELS,
                 vocabulary_embeddings=vocabulary_embeddings, label_embeddings=vocabulary_embeddings,
                 image_embeddings=_unit(rng.normal(size=(len(LABELS), 16))), i=0,
                 sample_id=dataset.first().id)

    exec(compile(python_api_block(), "README.md (Python API)", "exec"), names)

    # what the block did is on the dataset
    from vlsr_core.fo.review import review_state

    assert set(dataset.list_runs()) == {"vlsr", "boxes"}
    assert dataset.count("reviewed_label") == len(LABELS)  # apply_review(copy_to=...)
    assert review_state(dataset, "vlsr").label_map.canonical["helmit"] == "helmit"  # the import
    assert names["reviewed"].canonical["helmit"] == "helmit"  # the engine's split


def test_the_images_the_readme_shows_are_in_the_repository():
    import re

    text = open(README, encoding="utf-8").read()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images, "no image found: the pattern no longer matches README's"
    root = os.path.dirname(README)
    assert [i for i in images if not os.path.isfile(os.path.join(root, i))] == []

"""A small demo dataset: scikit-image's sample photographs with labels showing each kind of noise.

The photographs ship inside the scikit-image package, so the demo needs no download. Each
image carries a plausible label plus noisy variants: misspelling, casing, plural, synonym,
over-specific, a minor object of the scene, and an irrelevant label. One file is empty on
purpose, to show how unreadable images are reported.
"""

import os
import shutil

import fiftyone as fo

DEMO_DATASET = "vlsr-demo"

# file in skimage/data -> labels (noise kind in the comment)
DEMO_LABELS = {
    "astronaut.png": ["astronaut", "Astronaut", "astronaut in a white space suit", "flag"],
    # casing, over-specific, minor object
    "chelsea.png": ["cat", "cats", "kitten", "invoice"],  # plural, synonym, irrelevant
    "coffee.png": ["coffee", "cofee", "cup of coffee", "saucer"],  # misspelling, specific, minor
    "rocket.jpg": ["rocket", "Rockets", "space rocket on the launch pad"],  # casing+plural, specific
    "motorcycle_left.png": ["motorcycle", "motorbike"],  # synonym
    "motorcycle_right.png": ["Motorcycle", "motorcylce"],  # casing, misspelling
    "camera.png": ["cameraman", "camera", "tripod"],  # minor objects
    "horse.png": ["horse", "hrose"],  # misspelling
    "coins.png": ["coins", "coin", "Lathe Information"],  # singular, irrelevant
    "moon.png": ["moon", "Moon surface"],  # casing, over-specific
    "hubble_deep_field.jpg": ["galaxies", "galaxy", "spreadsheet"],  # singular, irrelevant
    "page.png": ["text", "page of text", "cat"],  # over-specific, wrong label
    "clock_motion.png": ["clock", "Clocks"],  # casing+plural
    "brick.png": ["brick wall", "bricks"],  # synonym-ish
    "grass.png": ["grass", "gras"],  # misspelling
}
BROKEN = "broken.jpg"  # an empty file: reported and skipped by the embedding step


MARKER = ".vlsr-demo"  # written in the demo's folder: a folder holding it is the demo's own
RANDOM_CLIP = "random-clip"  # the folder of the random CLIP the demo writes without weights


class DemoFolderError(ValueError):
    """The demo's folder cannot take its files without writing over someone else's."""


def check_demo_folder(image_dir):
    """Refuse a folder the demo would write over (files it did not write) or cannot write in;
    create it otherwise. Called before the dataset is touched."""
    if os.path.exists(image_dir) and not os.path.isdir(image_dir):
        raise DemoFolderError(f"{image_dir} is a file, not a folder: give the demo a new or empty "
                              "folder with --dir")
    present = set(os.listdir(image_dir)) if os.path.isdir(image_dir) else set()
    # a folder the demo wrote (its marker) may hold its files, which it replaces; another none
    own = set(DEMO_LABELS) | {BROKEN, MARKER, RANDOM_CLIP} if MARKER in present else set()
    others = sorted(present - own)
    if others:
        raise DemoFolderError(
            f"{image_dir} holds files the demo did not write ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); its images would go among them: give a new "
            "or empty folder with --dir")
    try:
        os.makedirs(image_dir, exist_ok=True)
        with open(os.path.join(image_dir, MARKER), "w") as f:
            f.write("written by vlsr demo: its images and files here are replaced by the next one\n")
    except OSError as e:
        raise DemoFolderError(f"the demo cannot write in {image_dir}: {e.strerror}; give another "
                              "folder with --dir") from None


def build_demo_dataset(image_dir, name=DEMO_DATASET, label_field="ground_truth"):
    """Copy the photographs to ``image_dir`` (see :func:`check_demo_folder`) and (re)create the
    persistent dataset ``name``."""
    from skimage import data as skdata

    source = os.path.dirname(skdata.__file__)
    check_demo_folder(image_dir)
    samples = []
    for filename, labels in DEMO_LABELS.items():
        path = os.path.join(image_dir, filename)
        shutil.copyfile(os.path.join(source, filename), path)
        samples.append(_sample(path, labels, label_field))
    broken = os.path.join(image_dir, BROKEN)
    open(broken, "wb").close()
    samples.append(_sample(broken, ["cat"], label_field))
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples(samples, progress=False)
    return dataset


def _sample(path, labels, label_field):
    return fo.Sample(
        filepath=path,
        **{label_field: fo.Classifications(classifications=[fo.Classification(label=l) for l in labels])},
    )

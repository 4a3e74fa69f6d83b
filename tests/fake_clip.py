"""A fake CLIP with constructed embeddings, and FiftyOne datasets built on it, for stage tests.

A random CLIP gives meaningless scores, so behaviour is tested with a fake encoder (the interface of
CLIPEncoder) whose embeddings are built here: every concept is an axis, label variants ("helmet",
"Helmets", "helmit") sit within cosine distance 0.07 of each other, unrelated labels are
orthogonal, and each picture points mostly along the axis of what it shows. The right answers are
then known.
"""

import os
import zlib

import fiftyone as fo
import numpy as np
from PIL import Image

from vlsr_core.model.crops import crop_region
from vlsr_core.model.encoder import ImageBatch, ImageFailure
from vlsr_core.model.images import BadImageError, load_image

# ---------------------------------------------------------------------------------------------
# The fake CLIP
# ---------------------------------------------------------------------------------------------

DIM = 16
CONCEPT_AXIS = {"helmet": 0, "screwdriver": 1, "lathe": 2, "drill": 3, "glove": 4, "screw": 5}
VARIANT_AXES = [8, 9, 10]  # never in an image embedding, so a variant scores below its plain form
# label string -> (concept, variant axis, weight of that axis)
LABELS = {
    "helmet": ("helmet", None, 0.0),
    "Helmets": ("helmet", 8, 0.1),
    "helmit": ("helmet", 9, 0.2),
    "screwdriver": ("screwdriver", None, 0.0),
    "Screwdrivers": ("screwdriver", 10, 0.15),
    "Lathe Information": ("lathe", None, 0.0),
    "drill": ("drill", None, 0.0),
    "Drill": ("drill", None, 0.0),  # a twin of "drill": CLIP's tokenizer lowercases
    "glove": ("glove", None, 0.0),
    '2" wood screw, "large"': ("screw", None, 0.0),
}


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def axis(i):
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


# Everything is turned by one fixed rotation, so that embeddings are dense like real ones (and
# products rounded like real ones) while every dot product and distance stays as designed.
ROTATION = np.linalg.qr(np.random.default_rng(7).normal(size=(DIM, DIM)))[0]


def label_vector(label):
    """The text embedding of a label; KeyError for any string the test did not plan to embed."""
    concept, variant, weight = LABELS[label]
    v = axis(CONCEPT_AXIS[concept])
    if variant is not None:
        v = v + weight * axis(variant)
    return unit(ROTATION @ unit(v)).astype(np.float32)


def image_vector(content, seed):
    """A picture of ``content`` (a concept, or {concept: weight}) plus a little unrelated content."""
    content = {content: 1.0} if isinstance(content, str) else content
    rng = np.random.default_rng(zlib.crc32(str(seed).encode()))
    noise = rng.normal(size=DIM)
    noise[VARIANT_AXES] = 0.0
    noise[[CONCEPT_AXIS[c] for c in content]] = 0.0
    v = sum(w * axis(CONCEPT_AXIS[c]) for c, w in content.items()) + 0.3 * unit(noise)
    return unit(ROTATION @ unit(v)).astype(np.float32)


def wordpiece(known):
    """A real WordPiece tokenizer that holds the words ``known`` whole and spells any other
    lower-case word letter by letter."""
    from transformers import BertTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *known, *letters,
              *("##" + c for c in letters)]
    return BertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(tokens))})


class FakeEncoder:
    """CLIPEncoder's interface with chosen embeddings; records what it is asked to embed.

    Args:
        images: file name -> embedding for readable files. Unreadable files are found by
            vlsr_core.model.images.load_image, as the real encoder does, and reported as failures.
        fail_after: raise after yielding this many image batches (an interrupted run).
    """

    def __init__(self, images, model_name="fake-clip", prompt=None, batch_size=4, fail_after=None,
                 jpeg_draft=False, precision="full", crop_vector=None):
        self.images = images
        # (file name, box) -> the embedding of that box's crop (default: the image's)
        self.crop_vector = crop_vector or (lambda name, box: images[name])
        self.boxes_cut = []  # (file name, box) of every crop embedded
        self.model_name = model_name
        self.prompt = prompt
        self.batch_size = batch_size
        self.jpeg_draft = jpeg_draft
        self.precision = precision
        self.dim = DIM
        self.fail_after = fail_after
        self.texts = []  # every string embedded
        self.path_calls = []  # the path list of every iter_image_batches call

    def embed_texts(self, texts, progress=None):
        texts = list(texts)
        self.texts.extend(texts)
        if progress is not None:
            progress(1.0)
        if not texts:
            return np.zeros((0, DIM), np.float32)
        return np.stack([label_vector(t) for t in texts])

    def iter_image_batches(self, paths, boxes=None, crop=None):
        paths = list(paths)
        self.path_calls.append(paths)
        for n, start in enumerate(range(0, len(paths), self.batch_size)):
            if self.fail_after is not None and n >= self.fail_after:
                raise RuntimeError("simulated crash")
            indices, vectors, failures, crops = [], [], [], []
            for i in range(start, min(start + self.batch_size, len(paths))):
                try:
                    image = load_image(paths[i])
                except BadImageError as e:
                    failures.append(ImageFailure(i, paths[i], e.reason))
                    continue
                indices.append(i)
                name = os.path.basename(paths[i])
                vectors.append(self.images[name])
                if boxes is not None:
                    crops.append(self._crops(name, image.size, boxes[i], crop))
            yield ImageBatch(
                np.asarray(indices, dtype=np.int64),
                np.asarray(vectors, dtype=np.float32).reshape(-1, DIM),
                failures,
                crops if boxes is not None else None,
            )

    def _crops(self, name, size, boxes, crop):
        """A box's crop embeds as ``crop_vector`` says, where the real encoder would cut it."""
        rows = np.full((len(boxes), DIM), np.nan, dtype=np.float32)
        for j, box in enumerate(boxes):
            if crop_region(box, *size, *crop) is not None:
                rows[j] = self.crop_vector(name, list(box))
                self.boxes_cut.append((name, list(box)))
        return rows


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

# file name, what the picture shows ("empty": zero-byte file, "missing": no file), its labels
MAIN = [
    ("h1.png", "helmet", ["helmet"]),
    ("h2.png", "helmet", ["helmet", "helmet"]),  # the same label twice
    ("h3.png", "helmet", ["Helmets"]),  # a plural variant
    ("h4.png", "helmet", ["Lathe Information", "helmit"]),  # irrelevant + misspelt
    ("hs.png", {"helmet": 0.8, "screwdriver": 0.6}, ["screwdriver", "helmet"]),  # shows both
    ("s1.png", "screwdriver", ["screwdriver"]),
    ("s2.png", "screwdriver", ["Screwdrivers", "screwdriver"]),
    ("s3.png", "screwdriver", ["helmet"]),  # wrong label: "screwdriver" fits better
    ("d1.png", "drill", ["drill"]),
    ("d2.png", "drill", ["drill"]),
    ("n1.png", "helmet", []),  # unlabelled (empty Classifications)
    ("n2.png", "glove", None),  # unlabelled (no value in the field)
    ("zero.png", "empty", ["helmet"]),
    ("missing.png", "missing", ["drill"]),
]
VOCAB = ["helmet", "Helmets", "Lathe Information", "helmit", "screwdriver", "Screwdrivers", "drill"]
UNREADABLE = {"zero.png": "empty file (0 bytes)", "missing.png": "file not found"}
FINAL = {
    "h1.png": "helmet", "h2.png": "helmet", "h3.png": "helmet", "h4.png": "helmet",
    "hs.png": "helmet", "s1.png": "screwdriver", "s2.png": "screwdriver", "s3.png": "helmet",
    "d1.png": "drill", "d2.png": "drill", "n1.png": None, "n2.png": None,
    "zero.png": None, "missing.png": None,
}
CANONICAL = {
    "helmet": "helmet", "Helmets": "helmet", "helmit": "helmet",
    "screwdriver": "screwdriver", "Screwdrivers": "screwdriver",
    "Lathe Information": "Lathe Information", "drill": "drill",
}


def make_label(kind, labels):
    if kind == "classification":
        return fo.Classification(label=labels)
    if kind == "classifications":
        return fo.Classifications(classifications=[fo.Classification(label=l) for l in labels])
    return fo.Detections(detections=[
        fo.Detection(label=l, bounding_box=[0.05 * i, 0.1, 0.3, 0.25 + 0.05 * i])
        for i, l in enumerate(labels)
    ])


def build(dataset, folder, spec=MAIN, kind="classifications", field="gt"):
    """Write the images of ``spec`` to ``folder``, add one sample each; returns name -> embedding."""
    folder.mkdir(parents=True, exist_ok=True)
    images, samples = {}, []
    for name, content, labels in spec:
        path = folder / name
        if content == "empty":
            path.write_bytes(b"")
        elif content != "missing":
            Image.new("RGB", (24, 16), (40 * len(name) % 255, 90, 160)).save(path)
            images[name] = image_vector(content, name)
        sample = fo.Sample(filepath=str(path))
        if labels is not None:
            sample[field] = make_label(kind, labels)
        samples.append(sample)
    dataset.add_samples(samples)
    return images


def by_name(collection, field):
    """{file name: value of ``field``} over the samples of ``collection``."""
    names = [os.path.basename(p) for p in collection.values("filepath")]
    return dict(zip(names, collection.values(field)))


def label_snapshot(dataset, field="gt"):
    """Every input label as a dict, without the attributes the dataset's runs recorded that
    they created: a run that wrote any other attribute of an input label shows."""
    created = {name.rsplit(".", 1)[-1] for key in dataset.list_runs()
               for name in getattr(dataset.get_run_info(key).config, "created_fields", None) or []}

    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if k not in created}
        if isinstance(d, list):
            return [strip(v) for v in d]
        return d

    return {
        os.path.basename(p): strip(l.to_dict()) if l is not None else None
        for p, l in zip(dataset.values("filepath"), dataset.values(field))
    }


def run_fields(dataset, key):
    """The fields and label attributes of run ``key`` present in the dataset's schema."""
    schema = dataset.get_field_schema(flat=True)
    return sorted(f for f in schema if f.startswith(key + "_") or f".{key}_" in f)


def view_labels(dataset, view_name, path="gt.classifications"):
    """{(file name, label)} of the labels left in a saved view."""
    view = dataset.load_saved_view(view_name)
    pairs = set()
    for fp, labels in zip(view.values("filepath"), view.values(path + ".label")):
        labels = labels if isinstance(labels, list) else [labels]
        pairs |= {(os.path.basename(fp), l) for l in labels if l is not None}
    return pairs


def view_names(dataset, view_name):
    return {os.path.basename(p) for p in dataset.load_saved_view(view_name).values("filepath")}


def dot(images, name, label):
    return float(images[name].astype(np.float64) @ label_vector(label).astype(np.float64))

"""Baselines run on the same generated data as VLSR.

* :func:`keep_first`: the final label is the image's first label; the label map is the identity.
* :func:`string_normalisation`: labels grouped by a normalised string (lower-case, punctuation
  stripped, a trailing plural "s" dropped); each group's representative is its most frequent member;
  the final label is the first label's representative.
* :func:`fiftyone_mistakenness`: FiftyOne Brain's ``compute_mistakenness`` on CLIP-style zero-shot
  predictions (logits ``100 * image . text`` over the vocabulary) against the first label, on the
  raw strings and, optionally, with both labels mapped through a label map.
"""

import logging
import re
import string
import uuid
from collections import Counter

import numpy as np

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def keep_first(image_labels, vocabulary):
    """Returns (label_map, final_labels): identity map, first label of each image (None if none)."""
    return {l: l for l in vocabulary}, [ls[0] if ls else None for ls in image_labels]


def normalise(label):
    """Lower-case, strip punctuation, collapse spaces, drop one trailing "s" (not "ss")."""
    s = " ".join(_PUNCTUATION.sub("", label.lower()).split())
    if len(s) > 3 and s.endswith("s") and not s.endswith("ss"):
        s = s[:-1]
    return s


def string_normalisation(image_labels, vocabulary):
    """Returns (label_map, final_labels) of grouping by :func:`normalise`.

    The representative of a group is its member carried by most images (ties: lexical order).
    """
    frequency = Counter(l for ls in image_labels for l in set(ls))
    groups = {}
    for l in vocabulary:
        groups.setdefault(normalise(l), []).append(l)
    rep = {key: min(members, key=lambda l: (-frequency[l], l)) for key, members in groups.items()}
    label_map = {l: rep[normalise(l)] for l in vocabulary}
    return label_map, [label_map[ls[0]] if ls else None for ls in image_labels]


def zero_shot_logits(image_embeddings, vocabulary_embeddings, scale=100.0):
    """Zero-shot logits ``scale * image . text`` of shape (n_images, n_labels) (CLIP: 100)."""
    return scale * (np.asarray(image_embeddings, np.float32) @ np.asarray(vocabulary_embeddings,
                                                                          np.float32).T)


def fiftyone_mistakenness(image_embeddings, image_labels, vocabulary, vocabulary_embeddings,
                          label_maps=None, use_logits=True):
    """Mistakenness of each image's first label by ``fiftyone.brain.compute_mistakenness``.

    A temporary FiftyOne dataset (database ``$FIFTYONE_DATABASE_NAME``, set by ``eval/run.py`` to
    ``vlsr-eval``) gets one sample per labelled image, with dummy file paths (no media is read):
    ``predictions`` = ``Classification`` of the top zero-shot label, its softmax confidence and
    the logits over the vocabulary; ``ground_truth`` = ``Classification`` of the first label. For
    every extra label map, a second pair of fields holds the same two labels mapped through it
    (same logits), and mistakenness is computed again on those. The dataset is deleted afterwards.

    Args:
        image_embeddings, image_labels, vocabulary, vocabulary_embeddings: as for ``sanitize``.
        label_maps: optional dict name -> label map (label -> canonical label).
        use_logits: passed to ``compute_mistakenness``.

    Returns:
        dict name -> float ndarray (n_images,): the mistakenness (higher = more likely wrong),
        NaN for images without labels; name ``"raw"`` for the unmapped labels. Above 0.5 exactly
        when the (mapped) zero-shot top label differs from the (mapped) first label.
    """
    import fiftyone as fo
    import fiftyone.brain as fob
    from scipy.special import softmax

    logging.getLogger("fiftyone.brain").setLevel(logging.WARNING)  # no "Computing mistakenness..."
    maps = {"raw": None, **(label_maps or {})}
    logits = zero_shot_logits(image_embeddings, vocabulary_embeddings)
    probs = softmax(logits, axis=1)
    top = logits.argmax(axis=1)
    labelled = [i for i, ls in enumerate(image_labels) if ls]

    def sample(i):
        fields = {}
        for k, (name, m) in enumerate(maps.items()):
            pred, gt = vocabulary[top[i]], image_labels[i][0]
            if m is not None:
                pred, gt = m[pred], m[gt]
            fields[f"pred_{k}"] = fo.Classification(
                label=pred, confidence=float(probs[i, top[i]]), logits=logits[i].astype(float))
            fields[f"gt_{k}"] = fo.Classification(label=gt)
        return fo.Sample(filepath=f"/tmp/vlsr-eval/{i}.jpg", index=i, **fields)

    dataset = fo.Dataset(f"vlsr-eval-{uuid.uuid4().hex[:12]}")
    out = {}
    try:
        dataset.add_samples([sample(i) for i in labelled], progress=False)
        for k, name in enumerate(maps):
            fob.compute_mistakenness(dataset, f"pred_{k}", label_field=f"gt_{k}",
                                     mistakenness_field=f"mistakenness_{k}",
                                     use_logits=use_logits, progress=False)
            index, value = dataset.values(["index", f"mistakenness_{k}"])
            out[name] = np.full(len(image_labels), np.nan)
            out[name][np.asarray(index, dtype=np.int64)] = np.asarray(value, dtype=float)
    finally:
        dataset.delete()
    return out

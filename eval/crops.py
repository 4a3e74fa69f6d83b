"""Crop scoring against whole-image scoring on synthetic scenes with boxes: wrong-label AUROC.

Each image shows several objects, one large and a few small, each in a box with a label; some
labels are wrong: the name of another object of the same picture (a swap) or of an object that
is not there. A label is scored against the whole image (what VLSR does without crops) and
against its box's crop (``crops=True``), through the engine's own scoring
(:func:`vlsr_core.engine.pipeline.score_images`). Nothing here is CLIP; the geometry extends
:mod:`eval.generate`'s, with these assumptions (stated again in docs/quality.md):

* the whole image holds each object in proportion to its share of the boxes' area: its component
  has squared norm ``area / total area``, so a small object barely moves the image embedding;
* a crop holds its object over ``1 / (1 + 2 padding)^2`` of its area and the image's content
  (all objects, as in the whole image) over the rest;
* a box whose side is under the model's input (224 pixels) loses signal to blur: its object's
  component is scaled by ``sqrt(side / 224)``; a box under ``crop_min_size`` pixels is scored on
  the whole image, as the product does.

Run: ``python -m eval.crops`` (a table in a few seconds).
"""

import argparse
from dataclasses import dataclass

import numpy as np

from vlsr_core.engine.defaults import DEFAULT_CROP_MIN_SIZE, DEFAULT_CROP_PADDING
from vlsr_core.engine.pipeline import score_images

from .generate import GeneratorConfig, _Space
from .metrics import LOW_QUANTILE, auroc

MODEL_SIDE = 224  # CLIP's input side in pixels


@dataclass
class SceneConfig:
    """Scenes with boxes; the embedding geometry is :class:`GeneratorConfig`'s."""

    n_images: int = 3000
    n_concepts: int = 150
    image_side: int = 640  # pixels of the longer side
    extra_objects: float = 2.0  # mean small objects besides the main one (Poisson, at most 6)
    main_area: tuple = (0.25, 0.8)  # the main object's box area, uniform, fraction of the image
    small_area: tuple = (0.0005, 0.1)  # the small objects', log-uniform
    wrong_rate: float = 0.2  # boxes whose label is wrong
    swap_share: float = 0.4  # of the wrong labels: another object of the same image
    padding: float = DEFAULT_CROP_PADDING
    min_size: int = DEFAULT_CROP_MIN_SIZE


def scenes(cfg, seed=0, geometry=None):
    """Synthetic boxes: per box its image, area, side in pixels, label, whether the label is
    wrong and how; the image and crop embeddings; the vocabulary and its embeddings."""
    g = geometry or GeneratorConfig(n_concepts=cfg.n_concepts)
    rng = np.random.default_rng(seed)
    space = _Space(g, rng)
    r = space.free(cfg.n_concepts)
    q = space.free(cfg.n_concepts, full=True)
    vocab = [f"concept_{c}" for c in range(cfg.n_concepts)]
    vocab_emb = np.stack([space.text(v) for v in r]).astype(np.float32)
    a_coef = (g.image_text_match - g.image_text_base) / np.sqrt(1 - g.text_common)
    c_coef, b_coef = g.image_text_base / np.sqrt(g.text_common), np.sqrt(g.image_private)
    d_coef = np.sqrt(g.image_common)
    noise_sd = np.sqrt(max(1 - (a_coef**2 + b_coef**2 + c_coef**2 + d_coef**2), 0) / g.dim)
    base = c_coef * space.g + d_coef * space.h

    def content(c):
        return a_coef * r[c] + b_coef * q[c]

    def embed(v):
        v = v + rng.standard_normal(g.dim) * noise_sd
        return v / np.linalg.norm(v)

    rows = []
    images, crops = [], []
    for i in range(cfg.n_images):
        m = 1 + min(int(rng.poisson(cfg.extra_objects)), 6)
        concepts = rng.choice(cfg.n_concepts, size=m, replace=False)
        lo, hi = np.log(cfg.small_area)
        areas = np.r_[rng.uniform(*cfg.main_area), np.exp(rng.uniform(lo, hi, m - 1))]
        share = areas / areas.sum()
        scene = sum(np.sqrt(s) * content(c) for s, c in zip(share, concepts))
        image = embed(base + scene)
        images.append(image)
        for j, (c, area) in enumerate(zip(concepts, areas)):
            side = np.sqrt(area) * cfg.image_side
            if side < cfg.min_size:
                crop, fallback = image, True
            else:
                own = 1 / (1 + 2 * cfg.padding) ** 2
                blur = np.sqrt(min(1.0, side / MODEL_SIDE))
                crop = embed(base + np.sqrt(own) * blur * content(c) + np.sqrt(1 - own) * scene)
                fallback = False
            crops.append(crop)
            label, kind = c, "correct"
            if rng.random() < cfg.wrong_rate:
                others = [o for o in concepts if o != c]
                if others and rng.random() < cfg.swap_share:
                    label, kind = int(rng.choice(others)), "swap"
                else:
                    absent = np.setdiff1d(np.arange(cfg.n_concepts), concepts)
                    label, kind = int(rng.choice(absent)), "absent"
            rows.append((i, area, side, vocab[label], kind, fallback, j == 0))
    return rows, np.float32(images), np.float32(crops), vocab, vocab_emb


def compare(cfg, seed=0):
    """Wrong-label AUROC and the share of right labels flagged low, whole image against crops,
    overall and by kind of box."""
    rows, images, crops, vocab, vocab_emb = scenes(cfg, seed)
    labels = [[row[3]] for row in rows]
    signals = {}
    for name, emb in (("image", images[[row[0] for row in rows]]), ("crop", crops)):
        scores = score_images(emb, labels, vocab, vocab_emb, top_k=1)
        signals[name] = (np.array([s[0] for s in scores.similarity]), np.array(scores.best_gap))
    kind = np.array([row[4] for row in rows])
    main = np.array([row[6] for row in rows])
    fallback = np.array([row[5] for row in rows])
    wrong = kind != "correct"
    groups = {
        "all boxes": np.ones(len(rows), bool),
        "main object": main,
        "small objects, cropped": ~main & ~fallback,
        "small objects, too small to crop": ~main & fallback,
    }
    out = []
    for name, group in groups.items():
        row = dict(group=name, boxes=int(group.sum()), wrong=int((wrong & group).sum()))
        for score_name, (score, gap) in signals.items():
            row[f"auroc_{score_name}"] = auroc(-score[group], wrong[group])
            row[f"auroc_gap_{score_name}"] = auroc(gap[group], wrong[group])
            swaps = group & ((kind == "swap") | (kind == "correct"))
            row[f"auroc_swap_{score_name}"] = auroc(-score[swaps], wrong[swaps])
            low = np.quantile(score, LOW_QUANTILE)
            right = group & ~wrong
            row[f"right_low_{score_name}"] = float((score[right] < low).mean()) if right.any() else float("nan")
        out.append(row)
    return out


def format_table(results):
    header = ("| boxes | n (wrong) | AUROC score: image | crop | AUROC gap: image | crop "
              "| swaps, AUROC score: image | crop "
              f"| right labels below the {LOW_QUANTILE:.0%} quantile: image | crop |")
    lines = [header, "|" + "---|" * 10]
    for r in results:
        lines.append(f"| {r['group']} | {r['boxes']} ({r['wrong']}) | {r['auroc_image']:.3f} | "
                     f"{r['auroc_crop']:.3f} | {r['auroc_gap_image']:.3f} | {r['auroc_gap_crop']:.3f} "
                     f"| {r['auroc_swap_image']:.3f} | {r['auroc_swap_crop']:.3f} "
                     f"| {r['right_low_image']:.1%} | {r['right_low_crop']:.1%} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=SceneConfig.n_images)
    args = parser.parse_args(argv)
    cfg = SceneConfig(n_images=args.images)
    runs = [compare(cfg, seed) for seed in range(args.seeds)]
    mean = [{k: (np.mean([run[i][k] for run in runs]) if not isinstance(v, str) else v)
             for k, v in row.items()} for i, row in enumerate(runs[0])]
    for row in mean:
        row["boxes"], row["wrong"] = int(round(row["boxes"])), int(round(row["wrong"]))
    print(f"{cfg}\nmean of {args.seeds} seeds\n")
    print(format_table(mean))


if __name__ == "__main__":
    main()

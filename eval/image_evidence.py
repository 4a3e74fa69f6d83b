"""Image evidence for merging, measured on the synthetic harness under several generator settings.

Usage (from the repository root; about a minute on 2 cores)::

    .venv/bin/python eval/image_evidence.py            # prints the table, writes it into docs/quality.md
    .venv/bin/python eval/image_evidence.py --no-write

The recommended mode with text alone and with ``image_evidence=True`` run on the same generated
datasets (``eval/generate.py``): the default generator, images whose concepts are less distinct
(``image_private`` 0.10 and 0.02 instead of 0.25), more labels per image (4 instead of 2.2), a
small dataset (300 images of 40 concepts), misspellings the text encoder places as far from
their word as an unrelated label (as MiniLM does with many real ones: "ambulance" /
"ambluance"), and images shuffled across samples, which then say
nothing of their labels (the images must not be used). Figures are means over seeds 0-2 of the label map's
pairwise precision and recall against the true concepts, the final-label accuracy and the number
of canonical labels (the true concepts are given for comparison). Last, how often two labels
on one image are synonyms: the co-occurrence evidence the issue suggested.
"""

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.generate import GeneratorConfig, generate  # noqa: E402
from eval.run import _quality  # noqa: E402
from vlsr_core.engine.pipeline import refine_labels  # noqa: E402

DOC = ROOT / "docs" / "quality.md"
BEGIN = "<!-- eval/image_evidence.py: generated, begin -->"
END = "<!-- eval/image_evidence.py: generated, end -->"
SETTINGS = {  # name: (generator, images shuffled across samples)
    "default generator": (GeneratorConfig(), False),
    "concepts' images less distinct (image_private 0.10)": (GeneratorConfig(image_private=0.10),
                                                           False),
    "concepts' images barely distinct (image_private 0.02)": (GeneratorConfig(image_private=0.02),
                                                            False),
    "4 labels per image": (GeneratorConfig(labels_per_image=4.0), False),
    "300 images, 40 concepts": (GeneratorConfig(n_images=300, n_concepts=40), False),
    "misspellings as far in text as unrelated labels (variant cos 0.6)": (GeneratorConfig(
        variant_cos=GeneratorConfig().variant_cos | {"misspelling": (0.6, 0.04)}), False),
    "images shuffled across samples (they say nothing of the labels)": (GeneratorConfig(), True),
}
SEEDS = (0, 1, 2)


def measure(cfg, shuffled=False, seeds=SEEDS):
    """{"text": row, "images": row}: mean figures over the seeds, a row a dict (with images:
    also the image joins and the number of seeds whose images were used)."""
    rows = {"text": [], "images": []}
    for seed in seeds:
        data = generate(cfg, seed)
        images = data.image_embeddings
        if shuffled:
            images = images[np.random.default_rng(seed).permutation(len(images))]
        args = (images, data.image_labels, data.vocabulary, data.vocabulary_embeddings)
        for name, kwargs in (("text", {}), ("images", {"image_evidence": True})):
            refined = refine_labels(*args, **kwargs)
            row = _quality(data, refined.canonical, refined.final_labels)
            evidence = refined.steps.image_evidence
            if evidence:
                row.update(joins=evidence["image links"], used=evidence["not used"] is None)
            rows[name].append(row)
    out = {name: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for name, rs in rows.items()}
    out["images"]["used"] = sum(r["used"] for r in rows["images"])
    return out


def co_occurrence(data):
    """(share of synonym pairs of strings that share an image, share of the other pairs)."""
    index = {label: i for i, label in enumerate(data.vocabulary)}
    concept = data.vocabulary_concept
    shared = {(a, b) for labels in data.image_labels
              for a, b in itertools.combinations(sorted({index[l] for l in labels}), 2)}
    same = sum(concept[a] == concept[b] for a, b in shared)
    sizes = np.bincount(concept)
    synonym_pairs = int((sizes * (sizes - 1) // 2).sum())
    other_pairs = len(concept) * (len(concept) - 1) // 2 - synonym_pairs
    return same / synonym_pairs, (len(shared) - same) / other_pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    lines = ["| generator | true concepts | text only: precision / recall | final accuracy | "
             "canonical labels | with image evidence: used (seeds) | image joins | precision / "
             "recall | final accuracy | canonical labels |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, (cfg, shuffled) in SETTINGS.items():
        m = measure(cfg, shuffled)
        t, i = m["text"], m["images"]
        lines.append(f"| {name} | {t['n_concepts']:.0f} | {t['pair_precision']:.3f} / "
                     f"{t['pair_recall']:.3f} | {t['final_accuracy']:.3f} | {t['n_canonical']:.0f} | "
                     f"{i['used']} of {len(SEEDS)} | {i['joins']:.0f} | "
                     f"{i['pair_precision']:.3f} / {i['pair_recall']:.3f} | "
                     f"{i['final_accuracy']:.3f} | {i['n_canonical']:.0f} |")
        print(lines[-1], flush=True)
    same, other = co_occurrence(generate(GeneratorConfig(), 0))
    lines.append(f"\nCo-occurrence (default generator, seed 0): {same:.1%} of the synonym pairs of "
                 f"strings share an image, {other:.2%} of the other pairs.")
    print(lines[-1])
    if not args.no_write:
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])


if __name__ == "__main__":
    main()

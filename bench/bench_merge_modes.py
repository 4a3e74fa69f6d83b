"""Time of the recommended merge against the paper's mode on the same labels, as a ratio.

Usage (from the repository root)::

    .venv/bin/python bench/bench_merge_modes.py            # 100,000 labels, 768-d (~10 min)
    .venv/bin/python bench/bench_merge_modes.py 20000 384

Labels are clustered: groups of 1-8 labels around random centres (members within 0.01-0.15
cosine distance), a third of them spelling variants of their group's first label (case, plural,
typo), with Zipf frequencies. Each mode runs in a fresh process, interleaved (paper, recommended,
paper, recommended); the ratio of medians is printed with the peak memory of each process.
"""

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_labels(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    labels, rows, seen = [], [], set()
    centre = None
    while len(labels) < n:
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
    emb = np.asarray(rows[:n], dtype=np.float32)
    return labels[:n], emb, rng.zipf(1.5, n).clip(max=10_000)


def case(mode, n, dim):
    from vlsr_core.engine.pipeline import build_label_map

    labels, emb, freq = make_labels(n, dim)
    t = time.perf_counter()
    label_map = build_label_map(labels, emb, freq, mode=mode)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "canonical": len(label_map.representatives),
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(n=100_000, dim=768, repeats=2):
    runs = {"paper": [], "recommended": []}
    for _ in range(repeats):
        for mode in runs:
            out = subprocess.run([sys.executable, __file__, "--case", mode, str(n), str(dim)],
                                 capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = runs[mode][-1]
            print(f"{mode:12s} {r['seconds']:8.1f} s  {r['canonical']:7d} canonical labels  "
                  f"peak {r['rss_mb']:.0f} MB", flush=True)
    med = {m: float(np.median([r["seconds"] for r in rs])) for m, rs in runs.items()}
    print(f"{n} labels x {dim}: recommended / paper = {med['recommended'] / med['paper']:.2f} "
          f"(medians {med['recommended']:.1f} s / {med['paper']:.1f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        case(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main(*map(int, sys.argv[1:3]))

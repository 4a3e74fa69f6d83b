"""Peak memory of embedding one image's crops, against its number of boxes.

Usage: python bench/bench_crop_memory.py [--photo] [n_boxes ...]   (default: 250 1000 2000;
with --photo: 0 31)

The goal: the memory an image's crops take while embedded must not grow with its number of
boxes (it grew by some 0.6 MB a box: every crop of an image was preprocessed at once). A random
CLIP of ViT-B/32's shapes (224-pixel input), batch size 32, num_workers=0, one torch thread, one
1024 x 768 JPEG with n boxes of 10 % of its sides. Each case runs in a fresh process and
reports its peak RSS (ru_maxrss) before and after ``iter_image_batches``; the growth of the
case with 0 boxes (the whole image only) is the baseline, and the ratio is against it.

``--photo``: an 8000 x 6000 JPEG with boxes of 40 % of its sides, whose crops are large: what
must not grow with them is the memory of a part's crops (each is preprocessed alone).
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from usage import sizes

DEFAULT_NS = [250, 1000, 2000]


def _maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case(model_dir, image, n, side):
    """In this process: embed ``image`` and its n boxes of ``side`` of its sides; print peak RSS
    figures as JSON."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from vlsr_core.model.encoder import CLIPEncoder

    enc = CLIPEncoder(model_dir, device="cpu", batch_size=32, num_workers=0)
    enc.embed_images([image] * 32)  # a full batch's forward pass is in the base
    base = _maxrss_mb()
    rng = np.random.default_rng(0)
    boxes = [[float(x), float(y), side, side] for x, y in rng.uniform(0, 1 - side, (n, 2))]
    start = time.perf_counter()
    crops = [c for b in enc.iter_image_batches([image], [boxes]) for c in b.crops]
    assert len(crops) == 1 and crops[0].shape == (n, enc.dim)
    print(json.dumps({"n": n, "base": base, "peak": _maxrss_mb(),
                      "seconds": time.perf_counter() - start}))


def main():
    photo = "--photo" in sys.argv
    ns = sizes(sys.argv[1:], __doc__, [0, 31] if photo else DEFAULT_NS, flags=["--photo"],
               least=0)  # (0 boxes: the whole image alone)
    height, width, side = (6000, 8000, 0.4) if photo else (768, 1024, 0.1)
    import numpy as np
    from PIL import Image

    from vlsr_core.model.random_clip import save_random_clip

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "clip")
        save_random_clip(model_dir, size="vit-b-32")
        image = os.path.join(tmp, "scene.jpg")
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(image)
        rows = []
        for n in sorted(set(ns)):
            out = subprocess.run([sys.executable, __file__, "--case", model_dir, image, str(n),
                                  str(side)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    baseline = rows[0]["peak"] - rows[0]["base"]
    against = f"vs {rows[0]['n']} boxes"
    print(f"{'boxes':>6} {'growth MB':>10} {against:>14} {'seconds':>8}")
    for r in rows:
        growth = r["peak"] - r["base"]
        print(f"{r['n']:>6} {growth:>10.1f} {growth / max(baseline, 0.1):>13.2f}x "
              f"{r['seconds']:>8.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        case(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()

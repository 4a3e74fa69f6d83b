"""ONNX Runtime as the image tower's runtime: speed against PyTorch float32, and int8 agreement on
real weights (docs/benchmarks.md section 9, "An exported runtime"). A probe of an option that was
not built; it needs ``pip install onnx onnxruntime`` (not project dependencies).

Usage (from the repository root)::

    .venv/bin/python bench/bench_onnx.py [vit-b-32|vit-l-14] [--rounds 3]

1. The random CLIP's image tower (``vlsr_core.model.random_clip``) exported to ONNX (opset 17),
   run by ONNX Runtime on 2 threads in float32 and after ``quantize_dynamic`` (int8, per
   channel), against ``CLIPEncoder.embed_pixels`` in float32 on the same 32 images; rounds
   interleaved, best kept. Printed: images/s, ratio to PyTorch, median ``1 - cos``.
2. all-MiniLM-L6-v2 (real weights) exported and quantised the same way: cosine of its label
   embeddings with PyTorch float32 on the 523 Factorynet labels, per tensor and per channel.
"""

import argparse
import importlib.util
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_precision import images  # noqa: E402


def _export(module, args, path, names, axes):
    torch.onnx.export(module.eval(), args, path, input_names=names[:-1], output_names=names[-1:],
                      dynamic_axes=axes, dynamo=False, opset_version=17)


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _int8(path, per_channel=True):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.replace(".onnx", f".int8{'pc' if per_channel else ''}.onnx")
    quantize_dynamic(path, out, weight_type=QuantType.QInt8, per_channel=per_channel)
    return out


def tower(size, rounds, tmp):
    from vlsr_core.model.encoder import CLIPEncoder
    from vlsr_core.model.random_clip import save_random_clip

    encoder = CLIPEncoder(save_random_clip(tmp, size=size), device="cpu", num_workers=0)

    class Tower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            out = self.model.get_image_features(pixel_values=x)
            return out if torch.is_tensor(out) else out.pooler_output

    x = images(32, encoder.processor.image_processor.crop_size["height"])
    path = f"{tmp}/tower.onnx"
    _export(Tower(encoder.model), (x[:2],), path, ["x", "y"], {"x": {0: "b"}, "y": {0: "b"}})

    def ort_run(session):
        def run(batch):
            y = session.run(None, {"x": batch.numpy()})[0]
            return y / np.linalg.norm(y, axis=1, keepdims=True)
        return run

    runs = {"pytorch float32": encoder.embed_pixels, "onnx float32": ort_run(_session(path)),
            "onnx int8": ort_run(_session(_int8(path)))}
    best, out = dict.fromkeys(runs, np.inf), {}
    for run in runs.values():
        run(x[:2])  # warm up
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            out[name] = run(x)
            best[name] = min(best[name], time.perf_counter() - t)
    for name in runs:
        cos = (out[name] * out["pytorch float32"]).sum(1)
        print(f"{size} {name:16} {len(x) / best[name]:7.2f} images/s  "
              f"x{best['pytorch float32'] / best[name]:.2f}  median 1 - cos {np.median(1 - cos):.1e}")


def minilm(tmp):
    from eval import synonym_sets
    from vlsr_core.model.sentence_encoder import SentenceEncoder

    texts = synonym_sets.factorynet()[0]
    encoder = SentenceEncoder("minilm", device="cpu")
    full = encoder.embed_texts(texts)
    tokens = encoder.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")

    class Hidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids, mask):
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    path = f"{tmp}/minilm.onnx"
    axes = {k: {0: "b", 1: "t"} for k in ("ids", "mask", "h")}
    _export(Hidden(encoder.model), (tokens["input_ids"][:2], tokens["attention_mask"][:2]), path,
            ["ids", "mask", "h"], axes)
    mask = tokens["attention_mask"].numpy()[..., None].astype(np.float32)
    for per_channel in (False, True):
        session = _session(_int8(path, per_channel))
        hidden = session.run(None, {"ids": tokens["input_ids"].numpy(), "mask": tokens["attention_mask"].numpy()})[0]
        e = (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, as SentenceEncoder
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        cos = (e * full).sum(1)
        print(f"minilm onnx int8 ({'per channel' if per_channel else 'per tensor'}): "
              f"cosine with float32 min {cos.min():.4f} median {np.median(cos):.4f} ({len(texts)} labels)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", default="vit-l-14", choices=("tiny", "vit-b-32", "vit-l-14"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"bench_onnx.py needs {' and '.join(missing)}: pip install onnx onnxruntime "
                 "(not project dependencies)")
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tower(args.size, args.rounds, tmp)
        minilm(tmp)

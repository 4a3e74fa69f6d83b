"""Peak memory of the three stages against the number of images.

Usage: python bench/bench_memory.py [n ...] [--trace n]   (default: 4000 8000 16000 32000)

The goal: peak memory must not grow with the number of images beyond the outputs held. A
random tiny CLIP (16-d) on tiny JPEGs (64 x 48), num_workers=0, batch size 32, one torch thread,
a fixed vocabulary of VOCABULARY labels with 1-3 labels per image, top-k = 5. Each dataset is
built by a helper process; each case loads one in a fresh process, then runs compute_embeddings,
score_labels and cluster_and_merge. The stages work a chunk of CHUNK_SIZE (1,024) samples at a
time, so the default sizes span 4 to 32 chunks.

- base: the process's peak RSS once imports, the model and the dataset object are loaded;
- embed, score, cluster: its peak RSS (ru_maxrss) after each stage;
- outputs: what the stages hold by design for the whole collection: the sample ids (12 bytes a
  sample) and every label's score (4 bytes a label, for the low-similarity quantile);
- peak: the peak after the three stages; growth = peak - base;
- extra = growth - outputs: what grows beyond the outputs.

The slope is the least-squares fit of extra against n, in MB per 1,000 images. MongoDB's own
memory (another process) is not counted. ``--trace n`` runs one case under tracemalloc and
prints, at the moments score_labels writes its results, the Python allocations alive by site.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from usage import sizes

os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

DEFAULT_NS = [4000, 8000, 16000, 32000]
VOCABULARY = 500
TOP_K = 5
BATCH_SIZE = 32
CASE_TIMEOUT_S = 1800


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(image_dir, n, seed=0):
    """A dataset of n tiny JPEGs with 1-3 labels each (persistent: the case, another process,
    loads it and deletes it)."""
    import fiftyone as fo
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        path = os.path.join(image_dir, f"{i:06d}.jpg")
        if not os.path.exists(path):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
        labels = rng.choice(VOCABULARY, rng.integers(1, 4), replace=False)
        samples.append(fo.Sample(filepath=path, gt=fo.Classifications(classifications=[
            fo.Classification(label=f"label {int(j)}") for j in labels
        ])))
    ds = fo.Dataset(f"vlsr-bench-memory-{uuid.uuid4().hex[:12]}", persistent=True)
    ds.add_samples(samples, progress=False)
    return ds


def _setup(tmp, n):
    """In a process of its own: the model (first time) and a dataset of n images; prints both."""
    from vlsr_core.model.random_clip import save_random_clip

    model_dir, image_dir = os.path.join(tmp, "model"), os.path.join(tmp, "images")
    if not os.path.exists(model_dir):
        save_random_clip(model_dir, size="tiny")
    os.makedirs(image_dir, exist_ok=True)
    print(json.dumps(dict(model_dir=model_dir, dataset=build(image_dir, n).name)))


def _delete(name):
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)


def _case(name, model_dir, trace):
    import fiftyone as fo
    import torch

    from vlsr_core.model.encoder import CLIPEncoder

    # One thread: this benchmark is about memory, and on a shared machine the tiny model's
    # microsecond-sized ops otherwise each wait for a preempted OpenMP thread (seconds per run).
    torch.set_num_threads(1)
    enc = CLIPEncoder(model_dir, device="cpu", batch_size=BATCH_SIZE, num_workers=0)
    ds = fo.load_dataset(name)
    try:
        _measure(ds, enc, trace)
    finally:
        ds.delete()


def _measure(ds, enc, trace):
    import gc

    from vlsr_core.fo import stages

    n, n_labels = len(ds), ds.count("gt.classifications")
    gc.collect()
    out = dict(n=n, n_labels=n_labels, dim=enc.dim, base_mb=_maxrss_mb(), base_now_mb=_rss_mb())
    if trace:
        _trace_writes()
    t0 = time.perf_counter()
    stages.compute_embeddings(ds, "gt", encoder=enc)
    out["embed_s"], out["embed_mb"] = time.perf_counter() - t0, _maxrss_mb()
    t0 = time.perf_counter()
    stages.score_labels(ds, top_k=TOP_K)
    out["score_s"], out["score_mb"] = time.perf_counter() - t0, _maxrss_mb()
    t0 = time.perf_counter()
    stages.cluster_and_merge(ds)
    out["cluster_s"], out["cluster_mb"] = time.perf_counter() - t0, _maxrss_mb()
    out["outputs_mb"] = (n * 12 + n_labels * 4) / 2**20
    print(json.dumps(out))


def _trace_writes():
    """Print the biggest live Python allocation sites whenever score_labels writes results."""
    import tracemalloc

    import fiftyone.core.collections as foc

    tracemalloc.start(8)
    original = foc.SampleCollection.set_values

    def set_values(self, field_name, *args, **kwargs):
        current, peak = tracemalloc.get_traced_memory()
        print(f"--- set_values({field_name!r}): traced {current / 2**20:.1f} MB now, "
              f"{peak / 2**20:.1f} MB peak; RSS {_rss_mb():.0f} MB", file=sys.stderr)
        stats = tracemalloc.take_snapshot().statistics("lineno")
        for s in stats[:8]:
            print(f"    {s.size / 2**20:7.2f} MB {s.count:>8} blocks  {s.traceback[0]}", file=sys.stderr)
        return original(self, field_name, *args, **kwargs)

    foc.SampleCollection.set_values = set_values


def _fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")


def _sub(*args, capture=True):
    return subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=capture,
                          text=True, timeout=CASE_TIMEOUT_S)


def main(ns, trace=None):
    # This process imports nothing heavy and builds nothing itself: a child's ru_maxrss starts
    # at its parent's peak RSS (Linux carries the high-water mark across fork and exec).
    with tempfile.TemporaryDirectory(prefix="vlsr-bench-memory-") as tmp:
        if trace:
            setup = json.loads(_sub("--setup", tmp, trace).stdout.strip().splitlines()[-1])
            try:
                _sub("--case", setup["dataset"], setup["model_dir"], "trace", capture=False)
            finally:
                _sub("--delete", setup["dataset"])
            return
        print(f"tiny random CLIP, num_workers=0, 1 torch thread, batch {BATCH_SIZE}, vocabulary {VOCABULARY}, "
              f"top-k {TOP_K}; MB = 2**20 bytes")
        print(f"{'n':>6} {'labels':>7} {'base MB':>8} {'embed MB':>9} {'score MB':>9} "
              f"{'peak MB':>8} {'outputs':>8} {'growth':>7} {'extra':>7} {'embed s':>8} "
              f"{'score s':>8} {'cluster s':>9}")
        rows = []
        for n in ns:
            p = _sub("--setup", tmp, n)
            if p.returncode:
                print(f"{n:>6} setup failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:100]}")
                continue
            setup = json.loads(p.stdout.strip().splitlines()[-1])
            try:
                p = _sub("--case", setup["dataset"], setup["model_dir"], "")
            except subprocess.TimeoutExpired:
                print(f"{n:>6} timed out")
                continue
            finally:
                _sub("--delete", setup["dataset"])
            if p.returncode:
                print(f"{n:>6} failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:100]}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["growth"] = r["cluster_mb"] - r["base_mb"]
            r["extra"] = r["growth"] - r["outputs_mb"]
            rows.append(r)
            print(f"{n:>6} {r['n_labels']:>7} {r['base_mb']:>8.1f} {r['embed_mb']:>9.1f} "
                  f"{r['score_mb']:>9.1f} {r['cluster_mb']:>8.1f} {r['outputs_mb']:>8.2f} "
                  f"{r['growth']:>7.1f} {r['extra']:>7.1f} {r['embed_s']:>8.2f} "
                  f"{r['score_s']:>8.2f} {r['cluster_s']:>9.2f}")
            sys.stdout.flush()
        if len(rows) >= 2:
            xs = [r["n"] / 1000 for r in rows]
            for key, what in (("base_mb", "base (imports, model, dataset loaded)"),
                              ("embed_mb", "peak after compute_embeddings"),
                              ("score_mb", "peak after score_labels"),
                              ("cluster_mb", "peak after cluster_and_merge"),
                              ("extra", "extra (beyond outputs)")):
                print(f"slope of {what}: {_fit(xs, [r[key] for r in rows]):.2f} MB per 1,000 images")
            per_image = _fit([r["n"] for r in rows], [r["extra"] * 2**20 for r in rows])
            print(f"i.e. {per_image / 1024:.1f} KiB per image beyond the outputs "
                  f"({per_image * 100_000 / 2**30:.2f} GiB at 100,000 images), against "
                  f"{rows[-1]['outputs_mb'] * 2**20 / rows[-1]['n'] / 1024:.2f} KiB of outputs per image")


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--case"]:
        _case(argv[1], argv[2], bool(argv[3]) if len(argv) > 3 else False)
    elif argv[:1] == ["--setup"]:
        _setup(argv[1], int(argv[2]))
    elif argv[:1] == ["--delete"]:
        _delete(argv[1])
    elif argv[:1] == ["--trace"]:
        main([], trace=int(argv[1]))
    else:
        main(sizes(argv, __doc__, DEFAULT_NS))

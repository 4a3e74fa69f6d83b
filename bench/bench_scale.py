"""Time and memory of each stage against the number of images, fitted and projected to 1,000,000.

Usage (from the repository root)::

    .venv/bin/python bench/bench_scale.py [n ...] [--no-tracemalloc]   # default 10000 30000 100000

For each n, a helper process inserts a dataset of n samples into MongoDB (a filepath that need not
exist and a ``gt`` Classifications field of 1-3 labels per sample, drawn from a long-tailed
vocabulary: label r is drawn with probability ~ 1 / r**ZIPF_EXPONENT among min(n / 5, 20,000)
random letter strings). A fresh process then loads it and runs the three stages in order, MongoDB
included:

- embed: ``compute_embeddings(dataset, "gt", encoder=RandomEncoder())``;
- score: ``score_labels(dataset, "vlsr")``;
- cluster: ``cluster_and_merge(dataset, "vlsr", min_cluster_size=MIN_CLUSTER_SIZE)`` (the default
  of 10), other parameters at their defaults.

"Random embeddings": the model is not the subject here, so ``RandomEncoder`` (CLIPEncoder's
interface, 512-d) returns random unit vectors without reading any file: a label's vector is
seeded by a CRC of its string (the same in every process), images get rows of one seeded
generator in batches of 64. What is measured is the engine: chunked reads, the numpy work, the
clustering of the vocabulary and the bulk writes to MongoDB. The model's own time is added in the
note under the projection, from IMAGES_PER_S (docs/benchmarks.md).

Per stage: wall seconds; the process's peak RSS during the stage (the kernel's high-water mark is
reset before each stage by writing 5 to /proc/self/clear_refs, so ``ru_maxrss`` read after the
stage is that stage's own peak, and ``ru_maxrss`` after minus before is what the stage added);
the peak of Python allocations (tracemalloc, which slows allocation, so measured in a second pass
that runs the three stages again and is not timed); and MongoDB's data size of the samples
collection after the stage (``collStats`` size, indexes not included). Each n runs in processes
of its own, so that peak RSS belongs to that n alone; the insert is timed but is not a stage.

Each stage's seconds and memory are fitted as a * n**b by least squares on log-log over the
measured points, and projected to PROJECT_N images: b above 1 means a stage grows faster than
the number of images.
"""

import json
import os
import resource
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from usage import sizes

os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_NS = [10_000, 30_000, 100_000]
PROJECT_N = 1_000_000
STAGES = ("embed", "score", "cluster")
KEY = "vlsr"
DIM = 512
IMAGE_BATCH = 64
VOCAB_PER_SAMPLE = 1 / 5  # distinct labels: about n / 5 ...
VOCAB_CAP = 20_000  # ... but at most this many
ZIPF_EXPONENT = 1.0
MIN_CLUSTER_SIZE = 10  # vlsr_core.engine.defaults.DEFAULT_MIN_CLUSTER_SIZE
INSERT_BATCH = 5_000  # samples built and inserted at a time
# The real model's end-to-end speed on this machine's CPU (AVX2, no AVX-512): ViT-L/14 at full
# precision, docs/benchmarks.md section 9 (section 1's older machine with AVX-512 gave 0.84-0.88).
IMAGES_PER_S = 0.56
IMAGES_PER_S_MODEL = "ViT-L/14, full precision, 2 cores"
CASE_TIMEOUT_S = 6 * 3600
MARK = "BENCH_SCALE "  # prefix of the JSON lines the helper processes print


# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------


class RandomEncoder:
    """CLIPEncoder's interface (as tests/fake_clip.FakeEncoder) with random unit vectors; reads no
    file. A label's vector depends only on its string; image rows come from one seeded generator."""

    def __init__(self, dim=DIM, batch_size=IMAGE_BATCH, seed=0):
        import numpy as np

        self.model_name = f"random-unit-{dim}"
        self.prompt = None
        self.batch_size = batch_size
        self.jpeg_draft = False
        self.precision = "full"
        self.dim = dim
        self._rng = np.random.default_rng(seed)

    def _unit(self, rows):
        import numpy as np

        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def embed_texts(self, texts, progress=None):
        import numpy as np

        texts = list(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i] = np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim)
        if progress is not None:
            progress(1.0)
        return self._unit(out)

    def iter_image_batches(self, paths, boxes=None, crop=None):
        import numpy as np

        from vlsr_core.model.encoder import ImageBatch

        if boxes is not None:
            raise NotImplementedError("RandomEncoder embeds whole images only (no crops)")
        n = len(paths)
        for start in range(0, n, self.batch_size):
            k = min(self.batch_size, n - start)
            rows = self._unit(self._rng.standard_normal((k, self.dim), dtype=np.float32))
            yield ImageBatch(np.arange(start, start + k, dtype=np.int64), rows, [])


# ---------------------------------------------------------------------------------------------
# Helper processes
# ---------------------------------------------------------------------------------------------


def vocabulary(size, seed=0):
    """``size`` distinct random lowercase labels of one or two words (no lexical variants of
    each other to speak of), in rank order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    seen, out = set(), []
    while len(out) < size:
        words = ["".join(rng.choice(letters, rng.integers(4, 10)))
                 for _ in range(1 + (rng.random() < 0.3))]
        label = " ".join(words)
        if label not in seen:
            seen.add(label)
            out.append(label)
    return out


def vocab_size(n):
    return max(10, min(VOCAB_CAP, int(n * VOCAB_PER_SAMPLE)))


def _build(n, seed=0):
    """Insert a persistent dataset of n samples; print its name and the insert time."""
    import fiftyone as fo
    import numpy as np

    vocab = vocabulary(vocab_size(n), seed)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** ZIPF_EXPONENT
    p /= p.sum()
    rng = np.random.default_rng(seed + 1)
    ds = fo.Dataset(f"vlsr-bench-scale-{uuid.uuid4().hex[:12]}", persistent=True)
    seconds = 0.0
    for start in range(0, n, INSERT_BATCH):
        m = min(INSERT_BATCH, n - start)
        counts = rng.integers(1, 4, m)
        drawn = rng.choice(len(vocab), size=(m, 3), p=p)
        samples = [
            fo.Sample(filepath=f"/nonexistent/vlsr-bench-scale/{start + i:07d}.jpg",
                      gt=fo.Classifications(classifications=[
                          fo.Classification(label=vocab[j])
                          for j in dict.fromkeys(drawn[i, : counts[i]].tolist())]))
            for i in range(m)
        ]
        t0 = time.perf_counter()
        ds.add_samples(samples, progress=False)
        seconds += time.perf_counter() - t0
    print(MARK + json.dumps(dict(dataset=ds.name, insert_s=seconds)), flush=True)


def _delete(name):
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)


def _reset_peak():
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _case(name, trace):
    """Load dataset ``name``, run and measure the stages, print one JSON line; delete it."""
    import gc
    import tracemalloc

    import fiftyone as fo
    import fiftyone.core.odm as foo

    from vlsr_core.fo import stages
    # imports torch (ImageBatch's module): loaded before the first stage, as a real run loads it
    # with the model, so that the import's seconds and memory do not count as the embed stage's
    from vlsr_core.model import encoder  # noqa: F401

    ds = fo.load_dataset(name)
    try:
        db = foo.get_db_conn()
        enc = RandomEncoder()
        runs = {
            "embed": lambda recompute: stages.compute_embeddings(ds, "gt", key=KEY, encoder=enc,
                                                                 recompute=recompute),
            "score": lambda recompute: stages.score_labels(ds, KEY),
            "cluster": lambda recompute: stages.cluster_and_merge(
                ds, KEY, min_cluster_size=MIN_CLUSTER_SIZE),
        }

        def mongo_mb():
            stats = db.command("collStats", ds._sample_collection_name)
            return stats["size"] / 2**20, stats["totalIndexSize"] / 2**20

        gc.collect()
        out = dict(n=len(ds), n_labels=ds.count("gt.classifications"),
                   n_vocab=len(ds.distinct("gt.classifications.label")),
                   base_mb=_maxrss_mb(), mongo_mb=mongo_mb()[0], reset=True)
        for stage in STAGES:  # pass 1: time, RSS, MongoDB size
            gc.collect()
            out["reset"] &= _reset_peak()
            before = _maxrss_mb()
            t0 = time.perf_counter()
            runs[stage](False)
            seconds = time.perf_counter() - t0
            after = _maxrss_mb()
            data, index = mongo_mb()
            out[stage] = dict(s=seconds, rss_mb=after, rss_delta_mb=after - before,
                              mongo_mb=data, index_mb=index)
        if trace:  # pass 2, untimed: Python allocations under tracemalloc (recomputes everything)
            for stage in STAGES:
                gc.collect()
                tracemalloc.start()
                runs[stage](True)
                out[stage]["traced_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
        print(MARK + json.dumps(out), flush=True)
    finally:
        ds.delete()


# ---------------------------------------------------------------------------------------------
# The parent: runs the cases, prints tables, fits and projects
# ---------------------------------------------------------------------------------------------


def _sub(*args):
    return subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True,
                          text=True, timeout=CASE_TIMEOUT_S)


def _result(p):
    """The JSON line a helper printed, or raise with the tail of its stderr."""
    lines = [l for l in p.stdout.splitlines() if l.startswith(MARK)]
    if p.returncode or not lines:
        tail = "\n    ".join(p.stderr.strip().splitlines()[-8:]) or "?"
        raise RuntimeError(f"exit code {p.returncode}:\n    {tail}")
    return json.loads(lines[-1][len(MARK):])


def fit(ns, ys):
    """(a, b) of y = a * n**b, least squares on log-log; None below 2 points or with y <= 0."""
    import math

    pts = [(math.log(n), math.log(y)) for n, y in zip(ns, ys) if y and y > 0]
    if len(pts) < 2 or len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return math.exp(my - b * mx), b


def _duration(s):
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _projection(ns, ys, unit, fmt):
    f = fit(ns, ys)
    if f is None:
        return "no fit", None
    a, b = f
    y = a * PROJECT_N**b
    return f"b = {b:.2f} -> {fmt(y)}{unit}", y


def main(ns, trace=True):
    print(f"random {DIM}-d unit embeddings (no model), image batches of {IMAGE_BATCH}; vocabulary "
          f"min(n/{round(1 / VOCAB_PER_SAMPLE)}, {VOCAB_CAP:,}) labels, Zipf exponent "
          f"{ZIPF_EXPONENT}, 1-3 labels a sample; min_cluster_size {MIN_CLUSTER_SIZE}; MB = 2**20 "
          "bytes")
    rows = []
    for n in ns:
        try:
            built = _result(_sub("--build", n))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"n = {n:,}: insert failed: {e}")
            continue
        try:
            r = _result(_sub("--case", built["dataset"], int(trace)))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"n = {n:,}: stages failed: {e}")
            continue
        finally:
            _sub("--delete", built["dataset"])  # if the case died before deleting it
        r["insert_s"] = built["insert_s"]
        rows.append(r)
        print(f"n = {n:,}: {r['n_labels']:,} labels, {r['n_vocab']:,} distinct; inserted in "
              f"{r['insert_s']:.1f} s ({1000 * r['insert_s'] / n:.3f} s per 1,000); base RSS "
              f"{r['base_mb']:.0f} MB; MongoDB {r['mongo_mb']:.1f} MB; "
              + ", ".join(f"{s} {r[s]['s']:.1f} s" for s in STAGES), flush=True)
    if not rows:
        return
    if not all(r["reset"] for r in rows):
        print("(could not reset the RSS high-water mark: peak RSS is the process's peak so far)")

    traced = all("traced_mb" in r[s] for r in rows for s in STAGES)
    print("\npeak RSS: the process's peak during the stage (ru_maxrss after a reset of the "
          "high-water mark);\n+RSS: ru_maxrss after minus before the stage; tracemalloc: peak of "
          "Python allocations\n(second, untimed pass); MongoDB: data size of the samples "
          "collection after the stage")
    for stage in STAGES:
        print(f"\n{stage}")
        print(f"  {'n':>9} {'seconds':>9} {'s/1,000':>8} {'peak RSS MB':>12} {'+RSS MB':>8} "
              f"{'tracemalloc MB':>15} {'MongoDB MB':>11}")
        for r in rows:
            m = r[stage]
            tm = f"{m['traced_mb']:15.1f}" if "traced_mb" in m else f"{'-':>15}"
            print(f"  {r['n']:>9,} {m['s']:9.2f} {1000 * m['s'] / r['n']:8.3f} "
                  f"{m['rss_mb']:12.0f} {m['rss_delta_mb']:8.0f} {tm} {m['mongo_mb']:11.1f}")

    ns_ = [r["n"] for r in rows]
    print(f"\nfit a * n**b over n = {', '.join(f'{n:,}' for n in ns_)}; projection at "
          f"n = {PROJECT_N:,}:")
    total = 0.0
    for stage in STAGES:
        t, y = _projection(ns_, [r[stage]["s"] for r in rows], "", _duration)
        total = total + y if (y is not None and total is not None) else None
        rss, _ = _projection(ns_, [r[stage]["rss_mb"] for r in rows], " MB", "{:,.0f}".format)
        parts = [f"time {t}", f"peak RSS {rss}"]
        if traced:
            tm, _ = _projection(ns_, [r[stage]["traced_mb"] for r in rows], " MB", "{:,.0f}".format)
            parts.append(f"tracemalloc {tm}")
        mongo, _ = _projection(ns_, [r[stage]["mongo_mb"] for r in rows], " MB", "{:,.0f}".format)
        parts.append(f"MongoDB {mongo}")
        print(f"  {stage:8} " + "; ".join(parts))
    insert, _ = _projection(ns_, [r["insert_s"] for r in rows], "", _duration)
    print(f"  {'insert':8} time {insert} (not a stage, not in the total)")
    model_s = PROJECT_N / IMAGES_PER_S
    if total is not None:
        print(f"  total of the three stages without the model: {_duration(total)} "
              f"({total:,.0f} s)")
    print(f"\nNote: the projection assumes this machine ({os.cpu_count()} cores, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB), the same "
          "load and the same label distribution, and extrapolates\n"
          f"{PROJECT_N / max(ns_):.0f}x beyond the largest point. It leaves out the model: at "
          f"{IMAGES_PER_S} images/s ({IMAGES_PER_S_MODEL}, docs/benchmarks.md sections 1 and 9),\n"
          f"embedding {PROJECT_N:,} images takes {_duration(model_s)} ({model_s:,.0f} s)"
          + (f", {model_s / total:,.0f}x the three stages' projected total." if total else "."))


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--build"]:
        _build(int(argv[1]))
    elif argv[:1] == ["--case"]:
        _case(argv[1], bool(int(argv[2])))
    elif argv[:1] == ["--delete"]:
        _delete(argv[1])
    else:
        trace = "--no-tracemalloc" not in argv
        main(sizes([a for a in argv if a != "--no-tracemalloc"], __doc__, DEFAULT_NS), trace)

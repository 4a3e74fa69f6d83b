"""Vocabulary top-k against a one-shot score matrix, and bulk label writes against sample saves.

Usage: python bench/bench_similarity.py [n_images n_labels naive_n write_n loop_n] [--only topk|write]
       (default: 100000 20000 10000 100000 2000; smoke run: 4000 2000 1000 2000 200)

(a) ``vlsr_core.engine.similarity.top_k_labels`` (blocks of TOPK_BLOCK_BYTES of scores and indices) for n_images x
    n_labels random unit float32 vectors of 768-d, k = 5, against the naive one-shot version
    that forms the whole n_images x n_labels score matrix, then argpartition and sort. The naive
    version needs n x m x 16 bytes (scores, their negation, int64 argpartition indices): above
    MEMORY_LIMIT_BYTES it is not run at n_images; it is always run at naive_n images, where
    top_k_labels also runs (a same-size ratio and a check that both give the same labels), and
    its time at n_images is extrapolated linearly (the work is linear in the number of images).
    Each case runs in a fresh process: peak RSS = resource.getrusage ru_maxrss; "input" is the
    RSS just before the call (interpreter, imports, the embeddings), "work" = peak - input.
(b) Writing one float on every label of ``gt`` (Classifications, 1-3 labels per sample, 2 on
    average) of a FiftyOne dataset of write_n samples (built with add_samples in bulk):
    ``set_values("gt.classifications.<attr>", values)`` on all write_n samples, what the stages
    do (label ids read and values written by label id, CHUNK_SIZE samples at a time), against a loop
    ``for s in view.iter_samples(autosave=False): ...; s.save()`` on loop_n samples scaled
    linearly to write_n (and both, plus iter_samples(autosave=True), on the same loop_n samples).
"""

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from usage import sizes

os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

DIM, K = 768, 5
MEMORY_LIMIT_BYTES = 12 * 2**30  # a one-shot matrix beyond half this machine's memory is not tried
CASE_TIMEOUT_S = 3600
SCORE_TOLERANCE = 1e-5  # a score may differ by this: vlsr's are exact dots, naive's float32 products
LABELS_PER_SAMPLE = (1, 2, 3)  # uniform: 2 on average


def _unit(rng, n, chunk=8192):
    """n random unit vectors, normalised in chunks (no whole-array temporaries)."""
    import numpy as np

    x = rng.standard_normal((n, DIM), dtype=np.float32)
    for i in range(0, n, chunk):
        x[i : i + chunk] /= np.linalg.norm(x[i : i + chunk], axis=1, keepdims=True)
    return x


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def naive_top_k(images, labels, k):
    """The whole score matrix at once, then argpartition and an ordered sort of the k."""
    import numpy as np

    s = images @ labels.T
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def _topk_case(method, n, m):
    import numpy as np

    from vlsr_core.engine.similarity import top_k_labels

    rng = np.random.default_rng(0)
    labels = _unit(rng, m)
    images = _unit(rng, n)
    base = _rss_mb()
    t0 = time.perf_counter()
    if method == "vlsr":
        idx, scores = top_k_labels(images, labels, K)
    else:
        idx, scores = naive_top_k(images, labels, K)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()
                if i["user_api"] == "blas"]
    except ImportError:
        blas = []
    print(json.dumps(dict(method=method, n=n, m=m, seconds=seconds, peak_mb=peak / 1024,
                          blas=", ".join(dict.fromkeys(blas)) or "unknown",
                          input_mb=base,
                          indices=hashlib.sha1(idx.astype(np.int64).tobytes()).hexdigest(),
                          score_sum=float(scores.astype(np.float64).sum()))))


def _write_case(n, n_loop):
    import fiftyone as fo
    import numpy as np

    rng = np.random.default_rng(0)
    counts = rng.choice(LABELS_PER_SAMPLE, n)
    ds = fo.Dataset(f"vlsr-bench-write-{uuid.uuid4().hex[:12]}")
    out = dict(n=n, n_loop=n_loop, labels=int(counts.sum()))
    try:
        t0 = time.perf_counter()
        ds.add_samples((
            fo.Sample(filepath=f"/nonexistent/{i:07d}.jpg", gt=fo.Classifications(classifications=[
                fo.Classification(label=f"label {int(j)}") for j in rng.integers(0, 20000, c)
            ]))
            for i, c in enumerate(counts)
        ), progress=False)
        out["build_s"] = time.perf_counter() - t0
        values = [rng.random(c).tolist() for c in counts]
        attrs = ("vlsr_similarity", "sim_chunks", "sim_bulk_sub", "sim_loop", "sim_autosave")
        for a in attrs:  # declared first, as the stages do (declare_label_attribute)
            ds.add_sample_field(f"gt.classifications.{a}", fo.FloatField)

        t0 = time.perf_counter()
        ds.set_values("gt.classifications.vlsr_similarity", values)
        out["bulk_s"] = time.perf_counter() - t0

        # what score_labels does: label ids read and values written by label id, a chunk at a time
        from vlsr_core.fo.chunks import iter_chunks
        from vlsr_core.fo.labels import label_objects, set_label_attribute

        t0, done, path = time.perf_counter(), 0, "gt.classifications"
        for ids, (label_ids, labels) in iter_chunks(ds, [f"{path}.id", f"{path}.label"]):
            label_ids, _ = label_objects(path, label_ids, labels)
            set_label_attribute(ds, path, "sim_chunks", ids, label_ids, values[done : done + len(ids)])
            done += len(ids)
        out["chunks_s"] = time.perf_counter() - t0
        assert ds.values(f"{path}.sim_chunks") == values, "chunked write lost values"

        sub = ds.limit(n_loop)
        t0 = time.perf_counter()
        sub.set_values("gt.classifications.sim_bulk_sub", values[:n_loop])
        out["bulk_sub_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        for s, vals in zip(sub.iter_samples(autosave=False, progress=False), values):
            for c, v in zip(s.gt.classifications, vals):
                c.sim_loop = v
            s.save()
        out["loop_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        for s, vals in zip(sub.iter_samples(autosave=True, progress=False), values):
            for c, v in zip(s.gt.classifications, vals):
                c.sim_autosave = v
        out["autosave_s"] = time.perf_counter() - t0

        got = ds.values("gt.classifications.vlsr_similarity")
        assert got == values, "bulk write lost values"
        for a in attrs[2:]:
            got = sub.values(f"gt.classifications.{a}")
            assert got == values[:n_loop], f"{a}: values differ"
    finally:
        ds.delete()
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _run(args):
    try:
        r = subprocess.run([sys.executable, __file__, "--case", *map(str, args)],
                           capture_output=True, text=True, timeout=CASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {CASE_TIMEOUT_S} s"
    if r.returncode:
        return None, (r.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(r.stdout.strip().splitlines()[-1]), ""


def main_topk(n, m, naive_n):
    # This process imports nothing heavy: a child's ru_maxrss starts at its parent's peak RSS
    # (Linux carries the high-water mark across fork and exec).
    print(f"(a) top-{K} of {m:,} labels per image, {DIM}-d float32, numpy's BLAS threads as "
          f"configured")
    print(f"{'images':>8} {'method':<8} {'seconds':>8} {'img/s':>9} {'peak MB':>8} {'input MB':>9} "
          f"{'work MB':>8}")
    rows = {}
    for method, size in (("vlsr", n), ("naive", n), ("vlsr", naive_n), ("naive", naive_n)):
        if (method, size) in rows:
            continue
        need = size * m * 16
        if method == "naive" and need > MEMORY_LIMIT_BYTES:
            print(f"{size:>8} {method:<8} skipped: needs ~{need / 2**30:.0f} GiB "
                  f"(scores, negated scores, int64 indices) > {MEMORY_LIMIT_BYTES / 2**30:.0f} GiB guard")
            continue
        r, why = _run(["topk", method, size, m])
        rows[method, size] = r
        if r is None:
            print(f"{size:>8} {method:<8} failed: {why[:100]}")
            continue
        if len(rows) == 1:
            print(f"{'':>8} (BLAS: {r['blas']})")
        print(f"{size:>8} {method:<8} {r['seconds']:>8.2f} {size / r['seconds']:>9.0f} "
              f"{r['peak_mb']:>8.0f} {r['input_mb']:>9.0f} {r['peak_mb'] - r['input_mb']:>8.0f}")
        sys.stdout.flush()
    v_small, n_small = rows.get(("vlsr", naive_n)), rows.get(("naive", naive_n))
    if v_small and n_small:
        same = (v_small["indices"] == n_small["indices"]
                and abs(v_small["score_sum"] - n_small["score_sum"]) <= SCORE_TOLERANCE * naive_n * K)
        print(f"at {naive_n:,} images: naive / vlsr time = {n_small['seconds'] / v_small['seconds']:.2f}x, "
              f"working memory naive / vlsr = "
              f"{(n_small['peak_mb'] - n_small['input_mb']) / (v_small['peak_mb'] - v_small['input_mb']):.1f}x, "
              f"same top-{K}: {same} (the same labels in the same order, and score sums within "
              f"{SCORE_TOLERANCE:g} a score)")
    v_big = rows.get(("vlsr", n))
    if v_big and n_small and not rows.get(("naive", n)):
        scaled = n_small["seconds"] * n / naive_n
        print(f"at {n:,} images: naive extrapolated from {naive_n:,} = {scaled:.1f} s "
              f"(and ~{n * m * 16 / 2**30:.0f} GiB) vs vlsr {v_big['seconds']:.1f} s measured: "
              f"naive / vlsr = {scaled / v_big['seconds']:.2f}x")
    elif v_big and rows.get(("naive", n)):
        print(f"at {n:,} images: naive / vlsr = {rows['naive', n]['seconds'] / v_big['seconds']:.2f}x")
    print()


def main_write(n, n_loop):
    print(f"(b) one float on every label of {n:,} samples (1-3 labels each); per-sample save on "
          f"{n_loop:,} samples")
    r, why = _run(["write", n, n_loop])
    if r is None:
        print(f"failed: {why[:200]}")
        return
    scale = n / n_loop
    print(f"dataset of {n:,} samples and {r['labels']:,} labels built with add_samples in "
          f"{r['build_s']:.1f} s; peak RSS {r['peak_mb']:.0f} MB")
    print(f"{'method':<42} {'samples':>8} {'seconds':>9} {'samples/s':>10}")
    for name, size, s in (
        ("set_values (bulk)", n, r["bulk_s"]),
        ("vlsr: by label id, in chunks (score_labels)", n, r["chunks_s"]),
        ("set_values (bulk), on the subset", n_loop, r["bulk_sub_s"]),
        ("iter_samples(autosave=False) + save()", n_loop, r["loop_s"]),
        ("iter_samples(autosave=True)", n_loop, r["autosave_s"]),
        (f"save() loop scaled to {n:,}", n, r["loop_s"] * scale),
    ):
        print(f"{name:<42} {size:>8} {s:>9.2f} {size / s:>10.0f}")
    print(f"speedup of the chunked writes over the save() loop: "
          f"{r['loop_s'] * scale / r['chunks_s']:.0f}x at {n:,} (loop scaled)")
    print(f"speedup set_values over save() loop: {r['loop_s'] * scale / r['bulk_s']:.0f}x at "
          f"{n:,} (loop scaled), {r['loop_s'] / r['bulk_sub_s']:.0f}x measured at {n_loop:,}; "
          f"over autosave: {r['autosave_s'] / r['bulk_sub_s']:.1f}x at {n_loop:,}")
    print()


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--case"]:
        if argv[1] == "topk":
            _topk_case(argv[2], int(argv[3]), int(argv[4]))
        else:
            _write_case(int(argv[2]), int(argv[3]))
    else:
        only = None
        if "--only" in argv:
            i = argv.index("--only")
            only, argv = argv[i + 1], argv[:i] + argv[i + 2:]
        n, m, naive_n, write_n, loop_n = sizes(argv, __doc__, [100000, 20000, 10000, 100000, 2000], most=5)
        if only in (None, "topk"):
            main_topk(n, m, naive_n)
        if only in (None, "write"):
            main_write(write_n, loop_n)

"""Where crop embeddings are kept: one float32 array a sample (what runs with crops do) against
an attribute on each box, as a binary array or as a list of numbers.

Usage (from the repository root)::

    .venv/bin/python bench/bench_crop_storage.py [n_boxes] [boxes_per_sample] [dim]

Defaults: 50,000 boxes, 5 a sample, 768 dimensions (ViT-L/14). For each way, the embeddings of
random unit vectors are written to a dataset of boxes in bulk (``set_values`` a sample field, or
``set_label_values`` by box id), then read back a chunk of 1,024 samples at a time as the
scoring stage reads them; the table gives MongoDB's data size (``collStats`` size, and on disk
after compression), the seconds to write and read, and the ratio of each to the per-sample array.
Per million boxes is the data size scaled linearly.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402

from vlsr_core.fo.chunks import CHUNK_SIZE, iter_chunks, sample_ids  # noqa: E402
from usage import sizes  # noqa: E402


def build(n_samples, per_sample):
    ds = fo.Dataset()
    ds.add_samples([
        fo.Sample(filepath=f"/img/{i}.jpg", gt=fo.Detections(detections=[
            fo.Detection(label="ab"[j % 2], bounding_box=[0.1 * j, 0.1, 0.1, 0.2])
            for j in range(per_sample)]))
        for i in range(n_samples)], progress=False)
    return ds


def stored_sizes(ds):
    """(data size, size on disk) of the samples collection, after a checkpoint (without one the
    size on disk lags behind the writes)."""
    db = ds._sample_collection.database
    db.client.admin.command("fsync")
    stats = db.command("collStats", ds._sample_collection_name)
    return stats["size"], stats["storageSize"]


def per_sample_array(ds, emb, per_sample):
    ds.add_sample_field("crop_embeddings", fo.ArrayField)
    ids = ds.values("id")
    start = time.perf_counter()
    for s in range(0, len(ids), CHUNK_SIZE):
        chunk = ids[s:s + CHUNK_SIZE]
        ds.set_values("crop_embeddings", {i: emb[(s + k) * per_sample:(s + k + 1) * per_sample]
                                          for k, i in enumerate(chunk)}, key_field="id")
    return time.perf_counter() - start, "crop_embeddings"


def per_box(kind):
    def write(ds, emb, per_sample):
        path = "gt.detections.crop_embedding"
        ds.add_sample_field(path, fo.ArrayField if kind == "array" else fo.ListField,
                            **({} if kind == "array" else {"subfield": fo.FloatField}))
        box_ids = ds.values("gt.detections.id")
        sample_ids_ = ds.values("id")
        start = time.perf_counter()
        for s in range(0, len(sample_ids_), CHUNK_SIZE):
            items = []
            for k, sid in enumerate(sample_ids_[s:s + CHUNK_SIZE]):
                for j, bid in enumerate(box_ids[s + k]):
                    row = emb[(s + k) * per_sample + j]
                    items.append(dict(sample_id=sid, label_id=bid,
                                      value=row if kind == "array" else row.tolist()))
            ds.set_label_values(path, items)
        return time.perf_counter() - start, path
    return write


def read(ds, path):
    start = time.perf_counter()
    n = 0
    for _, (values,) in iter_chunks(ds, [path], ids=sample_ids(ds)):
        n += sum(len(v) for v in values if v is not None)
    return time.perf_counter() - start, n


def main(n_boxes=50_000, per_sample=5, dim=768):
    n_samples = n_boxes // per_sample
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n_samples * per_sample, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rows = []
    for name, write in (("one float32 array a sample (chosen)", per_sample_array),
                        ("a binary array on each box", per_box("array")),
                        ("a list of numbers on each box", per_box("list"))):
        ds = build(n_samples, per_sample)
        base_size, base_disk = stored_sizes(ds)
        seconds_write, path = write(ds, emb, per_sample)
        size, disk = stored_sizes(ds)
        seconds_read, n = read(ds, path)
        assert n == n_boxes, (name, n)
        rows.append((name, (size - base_size) / n_boxes, (disk - base_disk) / n_boxes,
                     seconds_write, seconds_read))
        ds.delete()
    print(f"{n_boxes:,} boxes, {per_sample} a sample, {dim} dimensions "
          f"(float32 alone: {4 * dim:,} bytes a box)\n")
    print("| kept as | bytes a box | on disk a box | GB per million boxes | write s | read s "
          "| size / chosen | write / chosen | read / chosen |")
    print("|---|---|---|---|---|---|---|---|---|")
    _, b0, _, w0, r0 = rows[0]
    for name, b, d, w, r in rows:
        print(f"| {name} | {b:,.0f} | {d:,.0f} | {b * 1e6 / 1e9:.2f} | {w:.2f} | {r:.2f} "
              f"| {b / b0:.2f} | {w / w0:.2f} | {r / r0:.2f} |")


if __name__ == "__main__":
    main(*sizes(sys.argv[1:], __doc__, most=3))

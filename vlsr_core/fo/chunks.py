"""Reading a FiftyOne collection a chunk of samples at a time, so that memory stays bounded.

``collection.values(...)`` on a whole collection builds Python objects for every sample at once
(an embedding list alone doubles the memory of the embeddings). The stages instead hold only the
sample ids (12 bytes a sample) and read, compute and write one chunk after another.
"""

import numpy as np
from bson import ObjectId

# Sample ids read at a time, 12 bytes each once read (~0.5 KB each while being read: 8 MB).
# Each page skips the ones before it, so n ids cost ~n²/(2 ID_PAGE) skips: at 200,000 ids the
# pages took 1.4 s (a label-filtered view 5.2 s) against 0.5 s (1.8 s) for one read. Pages of
# 65,536 would cost a quarter of that and keep 33 MB at a time instead of 8.
ID_PAGE = 16_384
# Samples read, computed and written at a time. Working memory is linear in it: ~27 KB a sample
# at the peak of a write (label objects converted to BSON): 112 MB at 4,096 and 43 MB at 1,024,
# measured, at the same speed.
CHUNK_SIZE = 1024
# Images embedded per chunk: each chunk starts a DataLoader (and its worker processes) of its
# own, and holds only ids and file paths.
EMBED_CHUNK_SIZE = 16 * CHUNK_SIZE


def sample_ids(samples, page=ID_PAGE):
    """The ids of ``samples`` in their order, as a uint8 ndarray of shape (n, 12) (ObjectIds).

    Read ``page`` at a time: reading a million ids at once costs ~0.5 GB of Python objects.
    Pages rely on the view's order being the same on every query; where it is not (a sort with
    ties may differ between queries), they would miss or repeat samples, which the count check
    catches: the ids are then read at once.
    """
    n = len(samples)
    if n <= page:
        return _binary(samples.values("_id"))
    ids = np.concatenate([
        _binary(samples.skip(start).limit(page).values("_id")) for start in range(0, n, page)
    ])
    if len(np.unique(ids, axis=0)) != n:
        ids = _binary(samples.values("_id"))
    return ids


def _binary(object_ids):
    # not dtype "S12": numpy strips trailing zero bytes from those, and ObjectIds can end in them
    return np.frombuffer(b"".join(i.binary for i in object_ids), dtype=np.uint8).reshape(-1, 12)


def iter_chunks(samples, fields, size=None, ids=None):
    """Yield ``(ids, values)`` for consecutive chunks of ``samples``.

    Args:
        samples: a dataset or view; each chunk is that view restricted to the chunk's ids, so
            label filters and other stages of the view apply.
        fields: field paths to read, as for ``samples.values``.
        size: samples per chunk (default :data:`CHUNK_SIZE`).
        ids: the ids to visit (default :func:`sample_ids` of ``samples``); samples that have left
            the view since (e.g. embedded by another worker) are skipped.

    Yields:
        ids: list of the chunk's sample id strings.
        values: list (one per field) of lists aligned with ``ids``.
    """
    ids = sample_ids(samples) if ids is None else ids
    size = size or CHUNK_SIZE
    for start in range(0, len(ids), size):
        chunk = [ObjectId(i.tobytes()) for i in ids[start : start + size]]
        got = samples.select(chunk).values(["id", *fields])
        yield got[0], got[1:]


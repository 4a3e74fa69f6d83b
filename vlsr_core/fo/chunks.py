"""Reading a FiftyOne collection a chunk of samples at a time, so that memory stays bounded.

``collection.values(...)`` on a whole collection builds Python objects for every sample at once
(an embedding list alone doubles the memory of the embeddings). The stages instead hold only the
sample ids (12 bytes a sample) and read, compute and write one chunk after another.
"""

import io
import zlib

import numpy as np
from bson import ObjectId
import fiftyone as fo
import fiftyone.core.stages as fost
from fiftyone import ViewField as F

# Sample ids packed at a time while they stream in (12 bytes each once packed).
ID_PAGE = 16_384
# Samples read, computed and written at a time. Working memory is linear in it: ~27 KB a sample
# at the peak of a write (label objects converted to BSON): 112 MB at 4,096 and 43 MB at 1,024,
# measured, at the same speed.
CHUNK_SIZE = 1024
# Images embedded per chunk: each chunk starts a DataLoader (and its worker processes) of its
# own, and holds only ids and file paths.
EMBED_CHUNK_SIZE = 16 * CHUNK_SIZE


def stored(field):
    """What to give :func:`iter_chunks` for a VectorField ``field``: its values as stored (the
    compressed ``.npy`` bytes FiftyOne writes), which :func:`vectors` decodes. FiftyOne's own
    reading parses each array's header: 50,000 embeddings of 512 took 2.12 s to read and
    decode, against 1.27 s (``bench/bench_vector_reads.py``)."""
    return F(field)


def vectors(values, dim=None):
    """A chunk's vectors, as :func:`stored` reads them (or as lists; None where missing), as a
    float32 ndarray (n, dim), NaN where missing. An ``.npy`` header is parsed once for every
    array that has the same. A vector of another length raises :class:`VectorSizeError`."""
    layouts, rows = {}, []
    for value in values:
        if isinstance(value, bytes):
            raw = zlib.decompress(value)
            end = 10 + int.from_bytes(raw[8:10], "little") if raw[6] == 1 else (
                12 + int.from_bytes(raw[8:12], "little"))  # (format 1.0, else 2.0 and 3.0)
            layout = layouts.get(raw[:end])
            if layout is None:
                array = np.load(io.BytesIO(raw), allow_pickle=False)
                layout = layouts[raw[:end]] = (array.dtype, array.shape,
                                               "F" if np.isfortran(array) else "C")
            dtype, shape, order = layout
            value = np.frombuffer(raw, dtype, offset=end).reshape(shape, order=order)
        rows.append(value)
    if dim is None:
        dim = next((len(v) for v in rows if v is not None), 0)
    out = np.full((len(rows), dim), np.nan, dtype=np.float32)
    for i, value in enumerate(rows):
        if value is not None:
            if len(value) != dim:
                raise VectorSizeError(i, len(value), dim)
            out[i] = value
    return out


class VectorSizeError(ValueError):
    """A vector of a chunk (``row``) has ``size`` values, not the ``dim`` of the others."""

    def __init__(self, row, size, dim):
        super().__init__(f"a vector of {size} values among vectors of {dim}")
        self.row, self.size, self.dim = row, size, dim


def every_field(samples):
    """``samples`` without the stages that only hide fields (``select_fields``,
    ``exclude_fields``, and the App's field visibility, which adds one to an operator's view):
    a run reads and writes fields of its own through its target. Its samples and labels, and
    a saved view's name, stay those of ``samples``."""
    stages = getattr(samples, "_stages", None)
    hiding = (fost.SelectFields, fost.ExcludeFields)
    if not stages or not any(isinstance(s, hiding) for s in stages):
        return samples
    return fo.DatasetView._build(samples._dataset, [s._serialize() for s in stages
                                                    if not isinstance(s, hiding)],
                                 name=samples.name)


def sample_ids(samples):
    """The ids of ``samples`` in their order, as a uint8 ndarray of shape (n, 12) (ObjectIds).

    One query whose cursor is packed ``ID_PAGE`` ids at a time: reading a million ids as one
    list costs ~0.5 GB of Python objects, and paging with skip costs n²/(2 page) skipped
    documents (and a view's sort once per page).
    """
    packed, page = [], []
    cursor = samples._aggregate(post_pipeline=[{"$project": {"_id": True}}])
    cursor.batch_size(ID_PAGE)  # else a batch holds up to 16 MB of ids (~600,000) as dicts
    for doc in cursor:
        page.append(doc["_id"])
        if len(page) == ID_PAGE:
            packed.append(packed_ids(page))
            page = []
    packed.append(packed_ids(page))
    return np.concatenate(packed)


def packed_ids(object_ids):
    """ObjectIds as :func:`sample_ids` gives them."""
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


# View stages whose samples depend on the others' (a limit moves as a stage writes): a shard's
# range of such a view is not the part of the whole it was meant to be.
POSITIONAL_STAGES = ("Limit", "Skip", "Take", "Shuffle", "SortBySimilarity", "GeoNear")


def shard_problem(samples):
    """Why ``samples`` cannot be split into shards, or None."""
    positional = [type(s).__name__ for s in getattr(samples, "_stages", [])
                  if type(s).__name__ in POSITIONAL_STAGES]
    if positional:
        return (f"Shards need a target whose samples do not depend on their position: this view "
                f"has {', '.join(positional)}; save the samples' ids as a view (select) or run "
                "in one process")
    return None


def shards(samples, n):
    """``samples`` split into at most ``n`` disjoint, non-empty views of consecutive sample id
    ranges, of sizes differing by at most one: what the stages' delegated shards each process.
    Every range is closed on both sides, so samples added later fall in none of them."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n is the number of shards, a whole number from 1: got {n!r}")
    problem = shard_problem(samples)
    if problem:
        raise ValueError(problem)
    ids = sample_ids(samples)
    ids = ids[np.lexsort(ids.T[::-1])]  # ObjectId order: bytes, most significant first
    if not len(ids):
        return []
    n = min(n, len(ids))  # (at most a sample a shard: a huge n would allocate its cuts)
    cuts = sorted({0, *(int(k) for k in np.linspace(0, len(ids), n + 1)[1:-1])} - {len(ids)})
    first = [ObjectId(ids[k].tobytes()) for k in cuts]
    last = ObjectId(ids[-1].tobytes())
    return [samples.match((F("_id") >= start) & (F("_id") < end if end else F("_id") <= last))
            for start, end in zip(first, [*first[1:], None])]

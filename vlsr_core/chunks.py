"""Reading a FiftyOne collection a chunk of samples at a time, so that memory stays bounded.

``collection.values(...)`` on a whole collection builds Python objects for every sample at once
(an embedding list alone doubles the memory of the embeddings). The stages instead hold only the
sample ids (24 bytes a sample) and read, compute and write one chunk after another.
"""

import numpy as np

# Samples read, computed and written at a time. Working memory is linear in it: ~15 KB a sample
# at the peak of a write (label objects converted to BSON), i.e. ~60 MB at 4,096.
CHUNK_SIZE = 4096


def sample_ids(samples):
    """The ids of ``samples`` in their order, as a compact ``S24`` ndarray of shape (n,)."""
    return np.array(samples.values("id"), dtype="S24")


def iter_chunks(samples, fields, size=CHUNK_SIZE, ids=None):
    """Yield ``(ids, values)`` for consecutive chunks of ``samples``.

    Args:
        samples: a dataset or view; each chunk is that view restricted to the chunk's ids, so
            label filters and other stages of the view apply.
        fields: field paths to read, as for ``samples.values``.
        size: samples per chunk.
        ids: the ids to visit (default :func:`sample_ids` of ``samples``); samples that have left
            the view since (e.g. embedded by another worker) are skipped.

    Yields:
        ids: list of the chunk's sample id strings.
        values: list (one per field) of lists aligned with ``ids``.
    """
    ids = sample_ids(samples) if ids is None else ids
    for start in range(0, len(ids), size):
        chunk = [i.decode() for i in ids[start : start + size]]
        got = samples.select(chunk).values(["id", *fields])
        yield got[0], got[1:]


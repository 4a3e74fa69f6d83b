"""The cost of writing label objects: FiftyOne's label classes against the stored documents.

    .venv/bin/python bench/bench_label_docs.py [n_samples] [k]     # default 8192 5

Writes ``k`` suggestions a sample (a ``Classifications`` field, what the scoring stage writes
as ``{key}_suggestions``) onto ``n_samples`` samples, a chunk of 1,024 a ``set_values``, in a
throwaway database, two ways, interleaved, best of two rounds:

- objects: ``fo.Classifications(classifications=[fo.Classification(...)])`` per sample, written
  validated (what the stages did before);
- documents: :func:`vlsr_core.fo.labels.classifications_doc`, written with ``validate=False``
  (what the stages do).

Prints samples/s and the ratio, and checks that both read back as the same labels.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402

from vlsr_core.fo.chunks import CHUNK_SIZE  # noqa: E402
from vlsr_core.fo.labels import classifications_doc  # noqa: E402
from usage import sizes  # noqa: E402


def as_objects(pairs):
    return fo.Classifications(classifications=[fo.Classification(label=l, confidence=c)
                                                for l, c in pairs])


def main(n=8192, k=5):
    rng = np.random.default_rng(0)
    dataset = fo.Dataset()
    try:
        dataset.add_samples([fo.Sample(filepath=f"/img/{i}.jpg") for i in range(n)], progress=False)
        ids = dataset.values("id")
        suggestions = [[(f"label {j}", float(s)) for j, s in zip(rng.integers(0, 20000, k),
                                                                  np.sort(rng.random(k))[::-1])]
                       for _ in range(n)]
        ways = {"objects": (as_objects, True), "documents": (classifications_doc, False)}
        for name in ways:
            dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Classifications)
        best = {}
        for _ in range(2):
            for name, (build, validate) in ways.items():
                dataset.clear_sample_field(name)
                start = time.perf_counter()
                for i in range(0, n, CHUNK_SIZE):
                    part = slice(i, i + CHUNK_SIZE)
                    dataset.set_values(name, dict(zip(ids[part], map(build, suggestions[part]))),
                                       key_field="id", validate=validate)
                rate = n / (time.perf_counter() - start)
                best[name] = max(best.get(name, 0.0), rate)
        same = (dataset.values("objects.classifications.label") == dataset.values("documents.classifications.label")
                and dataset.values("objects.classifications.confidence") == dataset.values("documents.classifications.confidence"))
        print(f"{n} samples x {k} suggestions, chunks of {CHUNK_SIZE}, best of 2 interleaved rounds")
        print("| written as | samples/s | vs objects |\n|---|---|---|")
        for name in ways:
            print(f"| {name} | {best[name]:,.0f} | {best[name] / best['objects']:.1f}x |")
        print(f"read back the same: {same}")
    finally:
        dataset.delete()


if __name__ == "__main__":
    main(*sizes(sys.argv[1:], __doc__, most=2))

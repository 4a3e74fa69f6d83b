"""An export with COCO boxes of a large run, against FiftyOne's own COCO export of the boxes.

Usage (from the repository root)::

    .venv/bin/python bench/bench_export.py [n_samples n_labels]   # default 50000 10000

The run is built as in ``bench_panel.py`` (no model: labels around random centres, a fake
encoder); a Detections field ``boxes`` then gets one box per label of each sample, with its
label. Then, in one run of this script: ``vlsr export --detections-field boxes`` (the four
files), and FiftyOne's COCO export of ``boxes`` alone (``dataset.export``, no media), with the
ratio between them.
"""

import sys

import fiftyone as fo
import numpy as np

from bench_panel import built_run, timed  # (sets the database name and plugins dir)
from vlsr_core.fo.export import export_run


def main(n_samples=50_000, n_labels=10_000):
    with built_run(n_samples, n_labels) as (ds, tmp):
        rng = np.random.default_rng(0)
        ds.set_values("boxes", [
            fo.Detections(detections=[fo.Detection(label=label,
                                                   bounding_box=list(rng.uniform(0, 0.5, 4)))
                                      for label in labels])
            for labels in ds.values("gt.classifications.label")])
        ds.compute_metadata(progress=False)
        vlsr = timed(lambda: export_run(ds, f"{tmp}/vlsr", detections_field="boxes"))
        coco = timed(lambda: ds.export(
            labels_path=f"{tmp}/fiftyone.json", dataset_type=fo.types.COCODetectionDataset,
            label_field="boxes", export_media=False, progress=False))
        print(f"{'export':<46} {'s':>7} {'ratio':>6}")
        for name, seconds in (("vlsr export, 4 files with the COCO boxes", vlsr),
                              ("FiftyOne's COCO export of the boxes alone", coco)):
            print(f"{name:<46} {seconds:>7.1f} {seconds / coco:>6.2f}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))

"""An export with COCO boxes of a large run, against FiftyOne's own COCO export of the boxes.

Usage (from the repository root)::

    .venv/bin/python bench/bench_export.py [n_samples n_labels]   # default 50000 10000

The run is built as in ``bench_panel.py`` (no model: labels around random centres, a fake
encoder); a Detections field ``boxes`` then gets one box per label of each sample, with its
label. Then, in one run of this script: ``vlsr export --detections-field boxes`` (the four
files), and FiftyOne's COCO export of ``boxes`` (``dataset.export``, no media) of the dataset
and of ``select_fields("boxes")``, with the ratios to the former. Last, the two lookups of
labels written into a query (``labels.looked_up``), each against the list it replaced (``$in``
of the labels, ``$indexOfArray`` for the value): reading every box label mapped to its
canonical label (and unmapped), and counting the samples and labels of the view of the
labels weak everywhere.
"""

import sys

import fiftyone as fo
import numpy as np

from bench_panel import built_run, timed  # (sets the database name and plugins dir)
from fiftyone import ViewField as F
from fiftyone.core.expressions import ViewExpression
from usage import sizes
from vlsr_core.fo.export import canonical_of, export_run
from vlsr_core.fo.labels import one_of
from vlsr_core.fo.review import review_state
from vlsr_core.fo.runs import saved_view_names


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

        def coco(samples, name):
            return timed(lambda: samples.export(
                labels_path=f"{tmp}/{name}.json", dataset_type=fo.types.COCODetectionDataset,
                label_field="boxes", export_media=False, progress=False))

        whole, alone = coco(ds, "whole"), coco(ds.select_fields("boxes"), "alone")
        print(f"{'export':<58} {'s':>7} {'ratio':>6}")
        for name, seconds in (("vlsr export, 4 files with the COCO boxes", vlsr),
                              ("FiftyOne's COCO export of the boxes of the dataset", whole),
                              ("FiftyOne's COCO export of select_fields('boxes')", alone)):
            print(f"{name:<58} {seconds:>7.1f} {seconds / whole:>6.2f}")
        lookups(ds)


def lookups(ds):
    """The lookups written into a query, against the lists they replaced, in one run."""
    label_map = review_state(ds, "vlsr").label_map.canonical
    keys = list(label_map)
    listed = {"$let": {
        "vars": {"keys": {"$literal": keys}, "values": {"$literal": [label_map[k] for k in keys]},
                 "label": "$$this.label"},
        "in": {"$cond": [{"$in": ["$$label", "$$keys"]},
                         {"$arrayElemAt": ["$$values", {"$indexOfArray": ["$$keys", "$$label"]}]},
                         "$$label"]}}}
    searched = {"$let": {"vars": {"label": "$$this.label"},
                         "in": canonical_of("$$label", label_map)}}

    def mapped(expression):
        view = ds.select_fields("boxes")
        if expression is not None:
            view = view.set_field("boxes.detections", F("detections").map(
                F().set_field("label", ViewExpression(expression))))
        return timed(lambda: view.values("boxes.detections.label"))

    weak = ds.load_saved_view(saved_view_names("vlsr")["weak_labels"]).distinct(
        "gt.classifications.label")
    by_list = ViewExpression({"$in": [F("label"), {"$literal": weak}]})

    def counted(expression):
        view = ds.filter_labels("gt", expression)
        return timed(lambda: (view.count(), view.count("gt.classifications")))

    changed = sum(c != l for l, c in label_map.items())
    print(f"\n{sum(map(len, ds.values('boxes.detections')))} boxes, {len(label_map)} labels "
          f"({changed} changed), {len(weak)} weak labels")
    rows = [("box labels mapped, list lookup (before)", mapped(listed)),
            ("box labels mapped, search", mapped(searched)),
            ("box labels read, not mapped", mapped(None)),
            ("weak-labels view counted, $in list (before)", counted(by_list)),
            ("weak-labels view counted, search (one_of)", counted(one_of(F("label"), weak)))]
    print(f"{'lookup':<46} {'s':>7}")
    for name, seconds in rows:
        print(f"{name:<46} {seconds:>7.2f}")


if __name__ == "__main__":
    main(*sizes(sys.argv[1:], __doc__, most=2))

"""The vlsr FiftyOne plugin: operators over the vlsr_core engine, one per module in operators/."""

import os
import sys

# The engine lives beside this file; a plugin folder is not on sys.path by itself. Import it
# absolutely everywhere (``import vlsr_core``), never relatively, so there is one module object.
_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)


def register(p):
    # imported here, where FiftyOne has loaded this file as a package: a test runner that
    # imports the file on its own (the repository root is also a project root) must not fail
    from .operators.apply_review import ApplyReview
    from .operators.cluster_and_merge import ClusterAndMerge
    from .operators.compute_embeddings import ComputeEmbeddings
    from .operators.delete_run import DeleteRun
    from .operators.edit_label_map import EditLabelMap
    from .operators.run_shard import RunShard
    from .operators.export_results import ExportResults
    from .operators.import_label_map import ImportLabelMap
    from .operators.map_embeddings import MapEmbeddings
    from .operators.review_suggestions import ReviewSuggestions
    from .operators.score_labels import ScoreLabels
    from .operators.undo_review_edit import UndoReviewEdit
    from .operators.vlsr_panel import VLSRPanel

    # in pipeline order, which the labels' numbers also give in the App's operator list
    for operator in (ComputeEmbeddings, RunShard, ScoreLabels, ClusterAndMerge, EditLabelMap,
                     ImportLabelMap, ReviewSuggestions, UndoReviewEdit, ApplyReview, ExportResults, MapEmbeddings,
                     DeleteRun, VLSRPanel):
        p.register(operator)

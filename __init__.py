"""The vlsr FiftyOne plugin: operators over the vlsr_core engine, one per module in operators/."""

import os
import sys

# The engine lives beside this file; a plugin folder is not on sys.path by itself. Import it
# absolutely everywhere (``import vlsr_core``), never relatively, so there is one module object.
_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

from .operators.cluster_and_merge import ClusterAndMerge  # noqa: E402
from .operators.compute_embeddings import ComputeEmbeddings  # noqa: E402
from .operators.delete_run import DeleteRun  # noqa: E402
from .operators.export_results import ExportResults  # noqa: E402
from .operators.score_labels import ScoreLabels  # noqa: E402


def register(p):
    p.register(ComputeEmbeddings)
    p.register(ScoreLabels)
    p.register(ClusterAndMerge)
    p.register(ExportResults)
    p.register(DeleteRun)

"""Where runs stored before vlsr_core.fo existed find their classes: their records name
``vlsr_core.runs.VLSRRunConfig`` (and ``VLSRRun``, ``VLSRResults``)."""

from .fo.runs import VLSRResults, VLSRRun, VLSRRunConfig

__all__ = ["VLSRResults", "VLSRRun", "VLSRRunConfig"]

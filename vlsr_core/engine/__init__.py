"""The numeric engine: numpy in, numpy out; no FiftyOne, and torch only where it pays (a device
name given to check, PyTorch's int8 kernel for a large vocabulary in :mod:`.screening`). Run
parameters (:mod:`.params`, defaults in :mod:`.defaults`), exact dot products (:mod:`.dots`),
scores and suggestions (:mod:`.similarity`), DBSCAN (:mod:`.clustering`, its candidate pairs
from :mod:`.screening`), the paper's merging and naming (:mod:`.merging`), the recommended merge
(:mod:`.grouping`, from :mod:`.lexical` variants and :mod:`.evidence` of the images), a
curator's edits (:mod:`.review`) and the VLSR steps on embeddings (:mod:`.pipeline`)."""

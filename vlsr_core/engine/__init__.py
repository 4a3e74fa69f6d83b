"""The numeric engine: numpy in, numpy out; no FiftyOne, no torch (a device name is checked with
torch only when one is given). Run parameters (:mod:`.params`), exact dot products (:mod:`.dots`),
scores and suggestions (:mod:`.similarity`), DBSCAN (:mod:`.clustering`), merging
(:mod:`.merging`) and the VLSR steps on embeddings (:mod:`.pipeline`)."""

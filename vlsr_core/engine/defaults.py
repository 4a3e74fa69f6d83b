"""Defaults shared by the engine, the run record and the CLI (kept free of heavy imports)."""

DEFAULT_MODEL = "openai/clip-vit-large-patch14"  # the paper's model; 768-d embeddings
DEFAULT_BATCH_SIZE = 32
DEFAULT_KEY = "vlsr"  # run key, and the prefix of every field a run writes


def is_field_name(name):
    """Whether FiftyOne can name a sample field ``name``: an identifier, not starting with
    ``_`` (FiftyOne keeps those for itself)."""
    return isinstance(name, str) and name.isidentifier() and not name.startswith("_")


def key_problem(key):
    """Why ``key`` cannot be a run key (it prefixes field names), or None."""
    if is_field_name(key):
        return None
    return (f"The run key {key!r} cannot name fields: use letters, digits and underscores, "
            "starting with a letter")


DEFAULT_EPS = 0.07  # DBSCAN radius in cosine distance: the paper's best (0.1 drifted)
DEFAULT_MIN_SAMPLES = 1  # DBSCAN core-point neighbourhood: every label is a core point
DEFAULT_TOP_K = 5  # vocabulary suggestions per image
PRECISIONS = ("full", "bf16", "int8")  # the image tower's arithmetic (vlsr_core.model.precision)
# Crops of boxes (vlsr_core.model.crops): context around each box, as a fraction of its sides,
# and the shorter side in pixels below which a box is scored on the whole image (CLIP sees
# 224 pixels: a smaller box is blown up from less than a seventh of them).
DEFAULT_CROP_PADDING = 0.1
DEFAULT_CROP_MIN_SIZE = 32

# Samples a cluster must reach before it may stand alone (spec step 5, size_by="samples").
# Ten examples is about the least a classifier can learn a class from (the paper's reason to
# merge); a larger floor forces unrelated labels together on small datasets. On Factorynet
# (~12,000 label occurrences) it bounds the vocabulary at ~1,200, which DBSCAN's clusters then
# bring down to the paper's order of hundreds. Raise it for large datasets.
DEFAULT_MIN_CLUSTER_SIZE = 10

# The steps a label can be joined to its cluster's canonical label by, in the order of the
# panel's "Joined by" choice and `vlsr review show --joined-by`; "typo" is the part of
# "spelling" made by the typo rule (two real words may be one letter apart: worth a look)
JOIN_STEPS = ("spelling", "typo", "images", "DBSCAN", "DBSCAN or images", "merge", "review")

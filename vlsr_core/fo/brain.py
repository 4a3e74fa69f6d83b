"""FiftyOne Brain runs on a VLSR run's image embeddings, so that FiftyOne's own Embeddings panel
(a 2-D map to colour by ``{key}_label`` or a score) and similarity search work with them.

Made with fiftyone-brain's public API from the ``{key}_embedding`` field: nothing is embedded
again. Samples without an embedding (unreadable images) are left out. The runs are recorded in
the VLSR run's config before they are made, and deleting the VLSR run deletes them.
"""

from dataclasses import dataclass
from datetime import datetime

from ..engine.defaults import DEFAULT_KEY
from ..wording import count
from .chunks import every_field
from .lease import holds_run
from .review import shown_time
from .runs import (brain_run_time, mark_brain_run, owned_brain_runs, reload_run, sample_fields,
                   save_config)
from .stage_run import embeddings_problem

METHODS = ("pca", "umap")  # umap needs the optional umap-learn package
MIN_POINTS = {"pca": 2, "umap": 4}  # fewer fail inside scikit-learn / umap


class BrainRunError(ValueError):
    """The Brain runs cannot be made as asked; the message says why."""


@dataclass
class BrainReport:
    """What :func:`map_embeddings` made."""

    visualization_key: str
    similarity_key: str | None
    n_samples: int
    n_left_out: int
    n_unreadable: int = 0  # of those left out, the images the run could not read

    def summary(self):
        made = f"map {self.visualization_key!r}" + (
            f" and similarity index {self.similarity_key!r}" if self.similarity_key else "")
        waiting = self.n_left_out - self.n_unreadable  # (an embedding stopped part-way)
        left = (f" ({count(self.n_left_out, 'sample')} without an embedding left out"
                + (f": {self.n_unreadable:,} unreadable, {waiting:,} not embedded yet, which "
                   "a run again embeds (then map again)" if waiting else "") + ")"
                if self.n_left_out else "")
        return (f"made the {made} of {count(self.n_samples, 'image embedding')}{left}: open the "
                "Embeddings panel to see them")


def brain_keys(key):
    """The Brain keys a VLSR run ``key`` uses: its 2-D map and its similarity index of images
    (not ``{key}_similarity``: that names each label's score)."""
    return {"visualization": f"{key}_map", "similarity": f"{key}_image_index"}


def available_methods():
    """The map methods that can run here (UMAP only with umap-learn installed)."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return ["pca"]
    return list(METHODS)


@holds_run("map the embeddings")  # (a deletion of the run meanwhile failed it in FiftyOne)
def map_embeddings(samples, key=DEFAULT_KEY, method="pca", similarity=True, progress=None):
    """Make (or make again) the 2-D map, and the similarity index, of run ``key``'s embeddings.

    Args:
        samples: the dataset or view whose embedded samples to map.
        key: the VLSR run key.
        method: ``"pca"`` (always available) or ``"umap"`` (``pip install umap-learn``).
        similarity: also build a similarity index (sort by similarity, in the App).
        progress: optional callable taking the fraction done.

    Returns:
        a :class:`BrainReport`.
    """
    samples = every_field(samples)  # (a view that hides the embeddings: read them all the same)
    import fiftyone.brain as fob

    dataset = samples._dataset
    problem = map_problem(samples, key, method)
    if problem:
        raise BrainRunError(problem)
    reload_run(dataset, key)
    config = dataset.get_run_info(key).config
    field = sample_fields(key)["embedding"]
    embedded = samples.exists(field)
    keys = brain_keys(key)
    wanted = [keys["visualization"]] + ([keys["similarity"]] if similarity else [])
    config.created_brain_runs = sorted(set(config.created_brain_runs or []) | set(wanted))
    for brain_key in wanted:  # (owned by name while made: a failure leaves it the run's)
        config.brain_runs.pop(brain_key, None)
    save_config(dataset, key, config)
    advance = progress or (lambda fraction: None)
    for n, brain_key in enumerate(wanted):
        if dataset.has_brain_run(brain_key):  # ours (map_problem checked): made again
            dataset.delete_brain_run(brain_key)
        if brain_key == keys["visualization"]:
            fob.compute_visualization(embedded, embeddings=field, method=method, num_dims=2,
                                      brain_key=brain_key, progress=False)
        else:
            fob.compute_similarity(embedded, embeddings=field, brain_key=brain_key,
                                   backend="sklearn", progress=False)
        config.brain_runs[brain_key] = mark_brain_run(dataset, brain_key)
        save_config(dataset, key, config)
        advance((n + 1) / len(wanted))
    error = sample_fields(key)["error"]
    return BrainReport(keys["visualization"], keys["similarity"] if similarity else None,
                       len(embedded), len(samples) - len(embedded),
                       samples.exists(error).count() if samples.has_field(error) else 0)


def outdated_map(dataset, key=DEFAULT_KEY):
    """Why run ``key``'s own 2-D map shows embeddings before the run's last change to them
    (its points are kept; the similarity index reads the field, and follows), or None."""
    if not dataset.has_run(key):
        return None
    config = dataset.get_run_info(key).config
    changed, brain_key = getattr(config, "images_changed", None), brain_keys(key)["visualization"]
    if not changed or brain_key not in owned_brain_runs(dataset, config):
        return None
    # (when the run made it: a clone stamps the runs it copies anew)
    kept = config.brain_runs.get(brain_key)
    made = (kept.get("made") if isinstance(kept, dict) else kept) or brain_run_time(dataset,
                                                                                    brain_key)
    if datetime.fromisoformat(made) >= datetime.fromisoformat(changed):
        return None
    return (f"the map {brain_key!r} (made {shown_time(made)}) shows the image embeddings before "
            f"those written on {shown_time(changed)}: map the embeddings again to see them")


def map_problem(samples, key=DEFAULT_KEY, method="pca"):
    """Why :func:`map_embeddings` cannot run as asked, or None (a form checks before Execute)."""
    samples = every_field(samples)  # (a view that hides the embeddings: read them all the same)
    dataset = samples._dataset
    if not dataset.has_run(key):
        return f"No VLSR run {key!r} on this dataset: compute embeddings first"
    if method not in available_methods():
        return (f"Method {method!r} is not available here: " + (
            "pip install umap-learn" if method == "umap" else f"one of {list(METHODS)}"))
    problem = embeddings_problem(samples, key)
    if problem:
        return problem
    embedded = samples.exists(sample_fields(key)["embedding"]).count()
    if embedded < MIN_POINTS[method]:  # (the map made again fails, the one before deleted)
        return (f"A map by {method.upper()} needs {MIN_POINTS[method]} image embeddings or "
                f"more; this target has {embedded}")
    owned = set(owned_brain_runs(dataset, dataset.get_run_info(key).config))
    for brain_key in brain_keys(key).values():
        if dataset.has_brain_run(brain_key) and brain_key not in owned:
            return (f"A Brain run {brain_key!r} exists and was not made by run {key!r}; "
                    "delete it or use another run key")
    return None

"""A short report of a run, as Markdown: shown by ``vlsr summary`` and in the App after clustering."""

from collections import Counter

from .labels import LabelFieldError, label_path, usable
from .runs import incomplete_stages, sample_fields, saved_view_names
from .stages import unreadable_images


def summarize_run(dataset, key, n_clusters=10):
    """The vocabulary before and after, the largest clusters with members, failures, views.

    Args:
        dataset: a FiftyOne dataset with the VLSR run ``key``.
        key: the run key.
        n_clusters: how many of the largest clusters to list.

    Returns:
        a Markdown string.
    """
    results = dataset.load_run_results(key, cache=False)
    fields, views = sample_fields(key), saved_view_names(key)
    lines = [f"**Run `{key}`** on `{dataset.name}`: {len(dataset)} samples"]
    config = dataset.get_run_info(key).config
    for stage in incomplete_stages(config):
        lines.append(f"**Incomplete:** *{stage}* stopped part-way; its fields mix old and new "
                     "results. Run it again to finish.")
    if dataset.has_field(fields["embedding"]) and dataset.has_field(fields["error"]):
        waiting = len(dataset) - dataset.count(fields["embedding"]) - dataset.count(fields["error"])
        if waiting > 0:
            lines.append(f"**Not embedded yet:** {waiting} images; compute embeddings again to finish.")
    if results.vocabulary:
        lines.append(
            f"**Vocabulary:** {len(results.vocabulary)} labels → "
            f"{len(results.representatives)} canonical labels"
        )
        sizes, members = Counter(), {}
        for label, cluster, freq in zip(results.vocabulary, results.clusters, results.frequencies):
            sizes[cluster] += int(freq)
            members.setdefault(cluster, []).append(label)
        lines.append("**Largest clusters** (canonical label, samples: members):")
        bullets = []
        for cluster, size in sizes.most_common(n_clusters):
            names = members[cluster]
            shown = ", ".join(f"`{n}`" for n in names[:8])
            more = f", +{len(names) - 8} more" if len(names) > 8 else ""
            bullets.append(f"- `{results.representatives[cluster]}` ({size}): {shown}{more}")
        lines.append("\n".join(bullets))
        if dataset.has_saved_view(views["changed"]):
            lines.append(
                f"**Final labels:** {dataset.count(fields['label'])} samples; "
                f"{len(dataset.load_saved_view(views['changed']))} differ from every label they had"
            )
    else:
        lines.append(f"**Labels embedded:** {len(results.labels)}; not clustered yet")
    skipped = _unusable_labels(dataset, config.label_field)
    if skipped:
        lines.append(f"**Skipped labels:** {skipped} label objects with an empty or blank label "
                     "(not scored, not clustered, left as they are)")
    failures = unreadable_images(dataset, key)
    if failures:
        lines.append(f"**Unreadable images** ({len(failures)}), skipped:")
        lines.append("\n".join(f"- `{path}`: {reason}" for _, path, reason in failures[:10]))
    present = [v for v in views.values() if dataset.has_saved_view(v)]
    if present:
        lines.append("**Review views:** " + ", ".join(f"`{v}`" for v in present))
    return "\n\n".join(lines)  # paragraphs


def _unusable_labels(dataset, label_field):
    """How many label objects of ``label_field`` have no usable label (None, empty, blank)."""
    try:
        path = label_path(dataset, label_field)
    except LabelFieldError:
        return 0
    counts = dataset.count_values(f"{path}.label")
    return sum(n for label, n in counts.items() if not usable(label))

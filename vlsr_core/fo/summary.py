"""A short report of a run, as Markdown: shown by ``vlsr summary`` and in the App after clustering."""

from collections import Counter

import numpy as np
from fiftyone import ViewField

from ..engine.defaults import DEFAULT_KEY
from ..engine.grouping import UNDERIVED, derives
from ..engine.lexical import read_form
from ..engine.review import MAP_ACTIONS
from ..wording import code, count
from .brain import outdated_map
from .browse import cluster_sizes, merge_limit, rare_clusters
from .export import changed_by_hand, stale_lowest_scores
from .labels import blank_labels, label_counts, label_path, named, usable
from .lease import collection, running_note
from .review import copy_note, labels_problem, review_state, run_copies_outdated
from .runs import (
    deleted_note,
    deleted_outputs,
    input_gone,
    label_attributes,
    load_results,
    outdated_note,
    review_attribute,
    run_collection,
    run_samples,
    sample_fields,
    saved_view_names,
    stage_activity,
)
from .jobs import failed_note, queued_note, shard_note, stopped_note
from .embed import unreadable_images
from .stamps import foreign_problem, recompute_left


def summarize_run(dataset, key, n_clusters=10):
    """The vocabulary before and after, the largest clusters with members, failures, views.

    Args:
        dataset: a FiftyOne dataset with the VLSR run ``key`` (or a view of it: its run).
        key: the run key.
        n_clusters: how many of the largest clusters to list.

    Returns:
        a Markdown string.
    """
    dataset = collection(dataset)._root_dataset
    results = load_results(dataset, key)
    fields, views = sample_fields(key), saved_view_names(key)
    config = dataset.get_run_info(key).config
    # what the run covers: the saved view it was made on (one slice of a grouped dataset, say)
    samples = run_collection(dataset, key)
    on = f" (saved view `{samples.name}`)" if samples is not dataset else ""
    lines = [f"**Run `{key}`** on `{dataset.name}`{on}: {count(len(samples), 'sample')}"]
    if getattr(config, "model", None):
        how = [f"prompt `{config.prompt}`" if config.prompt else None,
               "JPEGs decoded at reduced scale" if config.jpeg_draft else None,
               f"images at {config.precision} precision" if config.precision != "full" else None,
               (f"each box scored on its crop ({config.crop_padding:.0%} context, boxes under "
                f"{config.crop_min_size} pixels on the whole image)")
               if config.crops else None]
        lines.append(f"**Embedded by** `{config.model}`" +
                     "".join(f"; {h}" for h in how if h))
    running, incomplete = stage_activity(dataset, key)
    if running:
        lines.append(f"**Busy:** {running_note(running)}")
    for stage in incomplete:
        lines.append(f"**Incomplete:** *{stage}* stopped part-way; its fields hold part of its "
                     "results (beside older ones, if any). Run it again to finish.")
    outdated = outdated_note(config)
    if outdated:
        lines.append(f"**Out of date:** {outdated}.")
    old_map = outdated_map(dataset, key)
    if old_map:
        lines.append(f"**Map out of date:** {old_map[0].upper()}{old_map[1:]} (*VLSR: map the "
                     "embeddings* in the App).")
    sharded = shard_note(dataset, key)
    if sharded:
        lines.append(f"**In progress:** {sharded}")
    queued, stopped = queued_note(dataset, key), stopped_note(dataset, key)
    if stopped:
        lines.append(f"**Stopped:** {stopped}")
    failed = failed_note(dataset, key)
    if failed:
        lines.append(f"**Failed:** {failed}")
    if queued:
        lines.append(f"**Scheduled:** {queued}")
    if getattr(config, "model", None):  # a run whose images have not all been embedded
        done = sum(samples.count(fields[f]) for f in ("embedding", "error")
                   if dataset.has_field(fields[f]))
        waiting = len(samples) - done
        if waiting > 0:
            lines.append(f"**Not embedded yet:** {count(waiting, 'image')}; embed again to finish (`vlsr run`, "
                         "or *VLSR 1: compute embeddings* in the App).")
        left, gone = recompute_left(samples, key)
        if left > len(gone):
            n = left - len(gone)
            lines.append(f"**Recompute stopped part-way:** {count(n, 'image')} "
                         f"{'waits' if n == 1 else 'wait'} to be embedded again (until then "
                         "embeddings of the pictures before are used); run `vlsr run` without "
                         "--recompute, or *VLSR 1: compute embeddings* in the App, to go on.")
        if gone:  # (audit: said to go on, which could never end the "part-way")
            one = len(gone) == 1
            lines.append(f"**Not embedded again:** {count(len(gone), 'image')} that a recompute "
                         f"is to embed again cannot be found now, e.g. {gone[0]} (a drive not "
                         f"mounted, a file deleted?): {'it keeps its' if one else 'they keep their'}"
                         f" embedding of the picture before, and {'is' if one else 'are'} "
                         "embedded again once found.")
        foreign = foreign_problem(samples, key)
        if foreign:
            lines.append(f"**Embedded by another model:** {foreign}.")
    counts = label_counts(samples, config.label_field)
    # (of a run made on a view that cannot be found again, the samples clustered are unknown)
    known = getattr(config, "collection", None) is None or samples is not dataset
    input_left = input_gone(dataset, config)
    if input_left:
        lines.append(f"**Input gone:** {input_left[0].upper()}{input_left[1:]}.")
    elif results is not None and results.vocabulary:
        drift = known and _drift(counts, results.vocabulary)
        if drift:
            lines.append(drift)
        if not (running or incomplete):  # (a stage stopped part-way, or running now, left
            # some of its fields written: nothing was by hand)
            lines.extend(by_hand_lines(dataset, key, results))
    if results is None or not results.labels:  # stopped before its labels were embedded
        lines.append("**Labels embedded:** none yet; run again to embed them (`vlsr run`, or "
                     "*VLSR 1: compute embeddings* in the App)")
    elif results.vocabulary:
        state = review_state(dataset, key, results)
        lines.extend(_merge_report(results, state, config, n_clusters))
        lines.append(state.summary())
        gone = deleted_outputs(dataset, key, roles=None)
        if gone:
            note = deleted_note(gone)
            lines.append(f"**Deleted:** {note[0].upper()}{note[1:]}")
        if dataset.has_saved_view(views["changed"]) and dataset.has_field(fields["label"]):
            copies = run_copies_outdated(dataset, key, state)
            # (with the input gone, every final label "differs" from the labels of no field)
            differ = "" if input_left else f"; {_differ(len(dataset.load_saved_view(views['changed'])))}"
            lines.append(
                f"**Final labels:** {_final_count(samples, fields, config.label_field)}{differ}" +
                "".join(f"; {copy_note(name, n)}" for name, n in copies))
    else:
        lines.append(f"**Labels embedded:** {len(results.labels):,}; not clustered yet")
    skipped = blank_labels(counts)
    if skipped:
        lines.append(f"**Skipped labels:** {count(skipped, 'label object')} with an empty or "
                     "blank label "
                     "(not scored, not clustered, left as they are)")
    failures = unreadable_images(samples, key)
    if failures:
        lines.append(f"**Unreadable images** ({len(failures)}), skipped:")
        listed = [f"- `{path}`: {reason}" for _, path, reason in failures[:10]]
        if len(failures) > 10:
            listed.append(f"- … and {len(failures) - 10:,} more: the samples with a "
                          f"`{fields['error']}` field (a sidebar filter in the App) hold them all")
        lines.append("\n".join(listed))
    scores = _score_line(samples, key, config)
    if scores:
        lines.append(scores)
    present = [v for v in views.values() if dataset.has_saved_view(v)]
    if present:
        lines.append("**Review views:** " + ", ".join(f"`{v}`" for v in present))
    return "\n\n".join(lines)  # paragraphs


WIDE_SHARE, WIDE_LABELS = 0.25, 50  # a cluster this much of the vocabulary is chained


def _wide_cluster(label_map, names, members):
    """A warning when one cluster holds a quarter or more of the vocabulary (and 50 labels or
    more), counted in readings (:func:`~vlsr_core.engine.lexical.read_form`: 95 casings of
    "helmet" are one, joined by spelling, not chained): DBSCAN chained labels step by step (an
    eps too large for the encoder, or an encoder that puts every label close), and its
    canonical label would name them all."""
    reading = {l: read_form(l) for l in label_map.vocabulary}
    n_labels, n_readings = len(reading), len(set(reading.values()))
    cluster, labels = max(members.items(), key=lambda item: len({reading[l] for l in item[1]}))
    readings = len({reading[l] for l in labels})
    if readings < max(WIDE_SHARE * n_readings, WIDE_LABELS):
        return None
    ids = np.flatnonzero(np.asarray(label_map.clusters) == cluster)
    farthest = float(np.max(np.asarray(label_map.distance_to_canonical)[ids], initial=0.0))
    read = ("" if (readings, n_readings) == (len(labels), n_labels) else
            f", {readings:,} of the {n_readings:,} ways they read")
    return (f"**One cluster holds {len(labels):,} of {n_labels:,} labels{read} "
            f"({readings / n_readings:.0%}):** {code(names[cluster])}, its farthest member "
            f"{farthest:.3f} from it. A cluster this wide comes from DBSCAN chaining labels "
            "step by step: look at its members (the panel's *Members*), or cluster again with "
            "a smaller eps (the cluster form's *eps*, `vlsr run --eps`)")


def _final_count(samples, fields, label_field):
    """How many samples have a final label, and why the others have none (so that the count
    adds up with the run's samples)."""
    given = samples.count(fields["label"])
    if given == len(samples):
        return count(given, "sample")
    without = samples.exists(fields["label"], False)
    readable = (without.exists(fields["error"], False) if samples.has_field(fields["error"])
                else without)
    unreadable = len(without) - len(readable)
    waiting = len(readable.filter_labels(label_field, named(ViewField("label")))) if (
        samples.has_field(label_field)) else 0  # (the input gone: said apart)
    why = [w for w in (
        count(unreadable, "unreadable image") if unreadable else None,
        f"{count(len(readable) - waiting, 'sample')} without a usable label"
        if len(readable) > waiting else None,
        f"{count(waiting, 'sample')} with labels not clustered or applied yet (labelled since, "
        "or the final labels cleared)" if waiting else None) if w]
    todo = ": run again to give them one (`vlsr run`)" if waiting else ""
    return (f"{given:,} of {count(len(samples), 'sample')} (none for "
            f"{' and '.join([', '.join(why[:-1]), why[-1]] if len(why) > 1 else why)}{todo})")


def _differ(n):
    return f"{n} differs from every label it had" if n == 1 else \
        f"{n:,} differ from every label they had"


def _score_line(samples, key, config):
    """Which score the review uses and its low threshold, and how the boxes were scored; None
    before scoring."""
    threshold = getattr(config, "low_similarity_threshold", None)
    if threshold is None or (config.stages or {}).get("score") is None:
        return None
    attribute = review_attribute(config, key)
    line = f"**Scores:** the review uses `{attribute}`; below {threshold:.3f} counts as low"
    if config.crops:
        path = f"{label_path(samples, config.label_field)}.{label_attributes(key)['crop_fallback']}"
        counts = samples.count_values(path)
        whole, cropped = counts.get(True, 0), counts.get(False, 0)
        line += (f". {count(whole + cropped, 'box')} scored: {cropped} on their crops, {whole} on "
                 f"the whole image (under {count(config.crop_min_size, 'pixel')}, outside it or "
                 "without coordinates)")
    return line


def _image_step(evidence, crops):
    """The image-evidence step of the recommended mode's counts ("" when it was off); a run with
    crops drew it from its boxes' crops, each crop counted as an image."""
    if not evidence:
        return ""
    source = " from the boxes' crops" if crops else ""
    if evidence.get("not used"):
        counted = " (each crop counted as an image)" if crops else ""
        return f"image evidence{source}{counted} not used ({evidence['not used']}) → "
    joins, spelling = evidence["image links"], evidence.get("spelling links", 0)
    spelling = f", {spelling} of spelling variants far in text" if spelling else ""
    return (f"{evidence['groups']} after image evidence{source} ({count(joins, 'join')}"
            f"{spelling}; {count(evidence['labels with images'], 'label')} "
            f"with {'crops' if crops else 'images'}) → ")


def joins_to_check(steps, shown=10, see_all=None, canonical=None):
    """The recommended mode's joins that no closeness of text vouches for, listed: the typo
    rule's (two real words may be one letter apart) and image evidence's, those of spelling
    variants far in text apart; "" if none. Beyond ``shown`` of a kind, "+N more", followed by
    ``see_all(step)`` if given: words on how to see them all, given the step that made them
    (``"typo"`` or ``"images"``, as :data:`~vlsr_core.fo.browse.JOIN_STEPS` names it).
    ``canonical``: the reviewed map's label -> canonical label; a join a review edit took
    apart is decided, and left out."""
    evidence = steps.get("image_evidence") or {}
    image = evidence.get("joins") or []
    n_text = len(image) - evidence.get("spelling links", 0)
    parts = []
    for what, step, pairs in (("typo", "typo", steps.get("typo_joins")),
                              ("spelling variants far in text, by the images", "images",
                               image[n_text:]),
                              ("image evidence", "images", image[:n_text])):
        if canonical is not None:
            pairs = [(a, b) for a, b in pairs or [] if canonical.get(a) == canonical.get(b)]
        if pairs:
            listed = ", ".join(f"{code(a)} / {code(b)}" for a, b in pairs[:shown])
            more = f", +{len(pairs) - shown:,} more" if len(pairs) > shown else ""
            if more and see_all:
                more += f" ({see_all(step)})"
            parts.append(f"{what}: {listed}{more}")
    return ("**Joins worth a look** (made by a spelling rule or by the images, beyond the "
            "closeness of text that DBSCAN asks for; two real words can be one letter apart): "
            + "; ".join(parts)) if parts else ""


def _merge_report(results, state, config, n_clusters, n_merges=5):
    """Paragraphs on steps 4-6: the counts of each step (and after the review), then, on the
    label map with the review's edits in force (``state``, a
    :class:`~vlsr_core.fo.review.ReviewState`), the largest clusters, the farthest merges (the
    ones most worth checking) and the rare clusters left alone."""
    steps = results.merge_steps or {}
    n_labels, n_canonical = len(results.vocabulary), len(results.representatives)
    floor = config.min_cluster_size
    unit = "samples" if config.size_by == "samples" else "labels"
    unmerged = f" (no small-cluster merging: minimum cluster size {floor})" if floor <= 1 else None
    if steps.get("mode") == "recommended":
        links = ", ".join(f"{k} {v}" for k, v in steps["lexical_links"].items() if v) or "none"
        source = ("derived from the labels" if derives(steps.get("background_distance", 1.0))
                  else UNDERIVED)
        eps = (f"eps {steps['eps']:.3f}, {source}"
               if f"{steps['eps']:.3f}" == f"{steps['derived_eps']:.3f}" else
               f"eps {steps['eps']:.3f}; {source}: {steps['derived_eps']:.3f}")
        head = (f"**Merging (recommended mode):** {count(n_labels, 'label')} → "
                f"{len(set(results.lexical_groups.tolist())):,} after lexical grouping ({links}) → "
                + _image_step(steps.get("image_evidence"), bool(config.crops)) +
                f"{steps['n_dbscan']:,} after DBSCAN ({eps}) → {count(n_canonical, 'canonical label')}" + (
                    unmerged or f" after merging clusters under {floor} {unit} into neighbours "
                                f"within {steps['max_merge_distance']:.3f}"))
    elif steps:
        head = (f"**Merging (paper mode):** {count(n_labels, 'label')} → {steps['n_dbscan']:,} after DBSCAN "
                f"(eps {steps['eps']:.3f}; the recommended mode would derive "
                f"{steps['derived_eps']:.3f} from these labels) → {count(n_canonical, 'canonical label')}" + (
                    unmerged or f" after merging clusters under {floor} {unit} into their "
                                "nearest neighbour"))
    else:  # a run clustered before the steps were recorded
        head = f"**Vocabulary:** {count(n_labels, 'label')} → {count(n_canonical, 'canonical label')}"
    label_map = state.label_map
    names = label_map.cluster_names
    if state.in_force:
        head += f" → {len(names):,} after the review"
    if getattr(config, "label_model", None):
        head += f"; labels embedded for merging by `{config.label_model}`"
    lines = [head]
    joins = joins_to_check(steps, canonical=state.label_map.canonical, see_all=lambda step: (
        f"`vlsr review show --joined-by {step}` lists them all; in the panel, choose {step} in "
        "Only clusters with a member joined by"))
    if joins:
        lines.append(joins)
    if steps.get("kept_apart"):
        reasons = "; ".join(f"{k}: {v}" for k, v in steps["kept_apart"].items())
        lines.append(f"**Kept out of the embedding steps** (grouped only with equal spellings): "
                     f"{reasons}")

    vocabulary, clusters = label_map.vocabulary, label_map.clusters
    sizes, members = Counter(), {}
    for label, cluster, freq in zip(vocabulary, clusters, label_map.frequencies):
        sizes[cluster] += int(freq)
        members.setdefault(cluster, []).append(label)
    lines.append("**Largest clusters** (canonical label, label occurrences on samples, labels: "
                 "members):")
    bullets = []
    for cluster, size in sizes.most_common(n_clusters):
        labels = members[cluster]
        bullets.append(f"- {code(names[cluster])} ({size}, {len(labels)}): {_some(labels, 8)}")
    lines.append("\n".join(bullets))
    wide = _wide_cluster(label_map, names, members)
    if wide:
        lines.append(wide)

    distance = label_map.distance_to_canonical
    if len(distance) == n_labels:
        merged = [i for i in np.argsort(-distance, kind="stable")
                  if label_map.representatives[clusters[i]] != vocabulary[i]]
        if merged:
            lines.append("**Farthest merges** (most worth checking; cosine distance to the "
                         "canonical label): " + ", ".join(
                             f"{code(vocabulary[i])} → {code(names[clusters[i]])} "
                             f"({max(float(distance[i]), 0.0):.3f})"  # not -0.000
                             for i in merged[:n_merges]))
    # what merging left small, and what of it the review left: the examples are of the latter
    # (a rare label a review edit joined to a cluster is no longer to review)
    rare = np.flatnonzero(rare_clusters(state.clustered, floor, unit == "samples"))
    if len(rare) and steps.get("mode") == "recommended":
        lines.append(_rare_line(state, len(rare), floor, unit))
    return lines


def _rare_line(state, n_rare, floor, unit):
    """The summary's line on the rare clusters: how many merging left, how many there are
    after the review edits, a few of those (the smallest first) and where to see them all."""
    by_samples = unit == "samples"
    label_map = state.label_map  # as reviewed
    left = np.flatnonzero(rare_clusters(label_map, floor, by_samples))
    size = cluster_sizes(label_map, by_samples)
    names = label_map.cluster_names
    shown = ", ".join(code(names[c]) for c in sorted(left.tolist(), key=lambda c: size[c])[:8])
    reviewed = ""  # (edits join rare clusters, and split labels out as new ones)
    if any(e.action in MAP_ACTIONS for e in state.in_force):
        rare = count(len(left), "cluster") if len(left) else "none"
        reviewed = f"; after the review edits, {rare} {'is' if len(left) <= 1 else 'are'} rare"
    limit = merge_limit(label_map)
    one = n_rare == 1
    close = (f"whose nearest cluster's labels did not all lie within {limit:.3f} of "
             f"{'its own' if one else 'their own'}" if limit is not None
             else "with no close neighbour")
    if len(state.clustered.representatives) < 2:  # as merging found them
        close = "(there is no other cluster to join)"
    # the list is of the clusters left rare, each with its nearest other one
    listed = len(left) and len(names) > 1
    return (f"**Rare labels to review:** {count(n_rare, 'cluster')} under {floor} {unit} "
            f"{close} {'was' if one else 'were'} kept as "
            f"{'it is' if n_rare == 1 else 'they are'}{reviewed}" + (f", e.g. {shown}" if shown else "")
            + (" (the panel's List: rare clusters, or `vlsr review show --rare`, gives the "
               "nearest cluster to each)" if listed else ""))


def by_hand_lines(dataset, key=DEFAULT_KEY, results=None):
    """The summary's "Changed by hand" lines of run ``key`` (the panel shows them too): labels
    or boxes changed by hand since the run's fields were written, which Apply or a run again
    brings in step, and the export waits for."""
    config = dataset.get_run_info(key).config
    results = results if results is not None else load_results(dataset, key)
    # (the samples of the run's fields, wherever it was made; labels the map lacks are the
    # drift's to say: Apply refuses them)
    written = run_samples(dataset, key).exists(sample_fields(key)["labels"])
    if not results.vocabulary or labels_problem(written, config, results.vocabulary):
        return []
    lines = []
    lowest = stale_lowest_scores(written, key)
    if lowest:
        lines.append(f"**Changed by hand:** {count(lowest, 'sample')} "
                     f"{'holds' if lowest == 1 else 'hold'} as lowest score "
                     f"(`{sample_fields(key)['min_similarity']}`) that of a label removed "
                     "by hand since: *Apply* writes the lowest scores anew.")
    for by_hand in changed_by_hand(written, key, results):  # (each: Apply mends one alone)
        lines.append(f"**Changed by hand:** {by_hand[0].upper()}{by_hand[1:]}.")
    return lines


def _drift(counts, vocabulary):
    """A warning when the labels on the samples (``counts``) are no longer the vocabulary the
    run clustered: samples deleted or relabelled since, whose label map then lists labels no
    sample has, and leaves new labels without a canonical or final label."""
    present = {label for label, n in counts.items() if n and usable(label)}
    clustered = set(vocabulary)
    gone = [label for label in vocabulary if label not in present]
    new = sorted(present - clustered)
    if not gone and not new:
        return None
    parts = []
    if gone:
        parts.append(f"{count(len(gone), 'label')} of the label map on no sample now "
                     f"({_some(gone)})")
    if new:
        parts.append(f"{count(len(new), 'label')} on samples that were not clustered "
                     f"({_some(new)}): the label map has none of them (what their samples "
                     "show is of the labels before, or nothing)")
    return (f"**Changed since clustering:** {'; '.join(parts)}. Samples were deleted, added or "
            "relabelled since, or only some were clustered: cluster again to bring the label map "
            "and the final labels up to date (`vlsr run`, or *VLSR 3: cluster and merge labels* "
            "in the App).")


def _some(labels, n=5):
    """The first ``n`` of ``labels`` as code, and how many more there are."""
    shown = ", ".join(code(label) for label in labels[:n])
    return shown + (f", +{len(labels) - n:,} more" if len(labels) > n else "")

"""Quality metrics of label cleaning against the generator's ground truth.

Definitions (also in docs/quality.md):

* **wrong label**: an (image, label) pair whose label names another concept than the image's.
* **AUROC**: probability that a random wrong pair is ranked more suspect than a random correct one
  (ties count half); for VLSR the suspicion is ``-similarity`` or the *gap* ``best vocabulary
  score - similarity``.
* **flagged at the 10% quantile**: score strictly below the 10% quantile of all assigned-label
  scores of the dataset, the threshold of the plugin's ``{key}-low-similarity`` review view
  (``ScoreParams.low_quantile``).
* **replacement rule**: the top vocabulary label beats the assigned one by more than the margin
  (``SanitizeResult.replacements``, the paper's auto-replace rule).
* **final-label accuracy**: fraction of images whose final label names the image's concept.
* **label-map accuracy**: fraction of label occurrences whose canonical label names the same
  concept as the label itself (a variant folded into its own concept, a concept not folded into
  another).
* **cluster agreement**: the label map's partition of the vocabulary against the partition by true
  concept: adjusted Rand index, and pairwise precision (pairs put together that share a concept) and
  recall (pairs sharing a concept that are put together), over distinct strings.
"""

import numpy as np
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from vlsr_core.engine.params import ScoreParams

LOW_QUANTILE = ScoreParams().low_quantile


def auroc(suspicion, wrong):
    """AUROC of ``suspicion`` (higher = more likely wrong) for boolean ``wrong``; NaN if one class."""
    wrong = np.asarray(wrong, dtype=bool)
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, np.asarray(suspicion, dtype=float)))


def precision_recall(flagged, wrong):
    """(precision, recall) of boolean flags against boolean truth; NaN precision if none flagged."""
    flagged, wrong = np.asarray(flagged, dtype=bool), np.asarray(wrong, dtype=bool)
    tp = float((flagged & wrong).sum())
    precision = tp / flagged.sum() if flagged.any() else float("nan")
    recall = tp / wrong.sum() if wrong.any() else float("nan")
    return precision, recall


def flatten(per_image, first_only=False):
    """Concatenate per-image sequences (or only their first elements) into one ndarray."""
    if first_only:
        return np.array([x[0] for x in per_image if len(x)])
    return np.concatenate([np.asarray(x) for x in per_image if len(x)] or [np.zeros(0)])


def detection(similarity, suggestions, replacements, label_correct, *, first_only=False,
              quantile=LOW_QUANTILE):
    """Wrong-label detection from VLSR's scores.

    Args:
        similarity: per image, the scores of its labels (``SanitizeResult.similarity``).
        suggestions: per image, the top-k ``(label, score)`` (``SanitizeResult.suggestions``).
        replacements: per image, the replacement or None of each label, or None if not computed.
        label_correct: per image, bool ndarray aligned with its labels.
        first_only: evaluate the first label of each image only (comparable with per-image
            baselines); the quantile threshold is still that of all labels, as in the plugin.
        quantile: the low-score quantile.

    Returns:
        dict: n, wrong_rate, auroc_similarity, auroc_gap, threshold, precision_q / recall_q
        (flagged below the quantile), precision_replace / recall_replace.
    """
    sims_all = flatten(similarity)
    threshold = float(np.quantile(sims_all, quantile)) if sims_all.size else float("nan")
    best = [np.full(len(s), sugg[0][1] if sugg else np.nan) for s, sugg in zip(similarity, suggestions)]
    sims = flatten(similarity, first_only)
    wrong = ~flatten(label_correct, first_only).astype(bool)
    gap = flatten(best, first_only) - sims
    out = dict(n=int(wrong.size), wrong_rate=float(wrong.mean()) if wrong.size else float("nan"),
               auroc_similarity=auroc(-sims, wrong), auroc_gap=auroc(gap, wrong),
               threshold=threshold)
    out["precision_q"], out["recall_q"] = precision_recall(sims < threshold, wrong)
    if replacements is not None:
        flagged = flatten([[r is not None for r in rs] for rs in replacements], first_only)
        out["precision_replace"], out["recall_replace"] = precision_recall(flagged, wrong)
    return out


def final_accuracy(final_labels, image_concept, concept_of_label):
    """Fraction of images whose final label names their concept (None counts as wrong)."""
    right = [l is not None and concept_of_label[l] == c for l, c in zip(final_labels, image_concept)]
    return float(np.mean(right)) if right else float("nan")


def label_map_accuracy(label_map, image_labels, concept_of_label):
    """Fraction of label occurrences whose canonical label names the label's own concept."""
    right = [concept_of_label[label_map[l]] == concept_of_label[l] for ls in image_labels for l in ls]
    return float(np.mean(right)) if right else float("nan")


def pairwise_agreement(predicted, truth):
    """Pairwise (precision, recall) of a predicted partition against a true one.

    Args:
        predicted, truth: int arrays of shape (n,), cluster ids.

    Returns:
        (precision, recall): of the pairs the prediction puts together, the share truly together;
        of the pairs truly together, the share put together (NaN where there are no such pairs).
    """
    _, p = np.unique(predicted, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    cells = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64) if p.size else np.zeros((0, 0))
    np.add.at(cells, (p, t), 1)

    def pairs(counts):
        counts = np.asarray(counts, dtype=np.int64)
        return float((counts * (counts - 1) // 2).sum())

    both, pred_pairs, true_pairs = pairs(cells), pairs(cells.sum(1)), pairs(cells.sum(0))
    precision = both / pred_pairs if pred_pairs else float("nan")
    recall = both / true_pairs if true_pairs else float("nan")
    return precision, recall


def label_map_quality(label_map, vocabulary, vocabulary_concept, image_labels):
    """Vocabulary reduction and cluster agreement of a label map.

    Args:
        label_map: dict label -> canonical label.
        vocabulary: list of n_labels strings; vocabulary_concept: int ndarray (n_labels,).
        image_labels: per image, its labels (for the occurrence-weighted label-map accuracy).

    Returns:
        dict: n_labels, n_canonical, n_concepts (true concepts named by the vocabulary), ari,
        pair_precision, pair_recall, map_accuracy.
    """
    concept_of = dict(zip(vocabulary, vocabulary_concept.tolist()))
    canon = [label_map[l] for l in vocabulary]
    _, predicted = np.unique(np.array(canon, dtype=object).astype(str), return_inverse=True)
    precision, recall = pairwise_agreement(predicted, vocabulary_concept)
    return dict(
        n_labels=len(vocabulary),
        n_canonical=len(set(canon)),
        n_concepts=len(set(vocabulary_concept.tolist())),
        ari=float(adjusted_rand_score(vocabulary_concept, predicted)),
        pair_precision=precision,
        pair_recall=recall,
        map_accuracy=label_map_accuracy(label_map, image_labels, concept_of),
    )


def per_kind(data, similarity=None, replacements=None, threshold=None, label_maps=None):
    """Per label kind: occurrences, mean score, shares flagged, and share mapped to its own concept.

    Args:
        data: a generated ``Dataset``.
        similarity, replacements, threshold: VLSR's scores and flags (optional).
        label_maps: dict method name -> label map (optional).

    Returns:
        dict kind -> dict of figures (NaN where not applicable).
    """
    concept_of = dict(zip(data.vocabulary, data.vocabulary_concept.tolist()))
    rows = {}
    kinds = flatten(data.label_kind)
    labels = flatten(data.image_labels)
    sims = flatten(similarity) if similarity is not None else None
    repl = (flatten([[r is not None for r in rs] for rs in replacements])
            if replacements is not None else None)
    for kind in dict.fromkeys(kinds.tolist()):
        m = kinds == kind
        row = dict(share=float(m.mean()))
        if sims is not None:
            row["mean_score"] = float(sims[m].mean())
            row["flag_q"] = float((sims[m] < threshold).mean())
        if repl is not None:
            row["flag_replace"] = float(repl[m].mean())
        for name, lm in (label_maps or {}).items():
            row[f"own_{name}"] = float(np.mean([concept_of[lm[l]] == concept_of[l] for l in labels[m]]))
        rows[kind] = row
    return rows


def ceiling_accuracy(label_correct):
    """Share of images carrying at least one correct label: the best any label picker can reach."""
    return float(np.mean([bool(np.any(c)) for c in label_correct]))


def gap_to_other_clusters(image_embeddings, vocabulary_embeddings, image_labels, vocabulary,
                          label_map):
    """Per image and label: the best score of a vocabulary label *of another canonical label*
    minus the label's score (a variant of the replacement rule that ignores the label's own
    variants; evaluated here as a proposed change, not part of vlsr_core).

    Returns:
        list (n_images,) of float ndarrays aligned with each image's labels.
    """
    index = {l: j for j, l in enumerate(vocabulary)}
    _, canon = np.unique(np.array([label_map[l] for l in vocabulary], dtype=str),
                         return_inverse=True)
    v = np.asarray(vocabulary_embeddings, np.float32)
    out = []
    for e, labels in zip(np.asarray(image_embeddings, np.float32), image_labels):
        if not labels:
            out.append(np.zeros(0))
            continue
        s = v @ e
        order = np.argsort(-s)
        gaps = []
        for l in labels:
            j = index[l]
            best = next((s[k] for k in order if canon[k] != canon[j]), np.nan)
            gaps.append(best - s[j])
        out.append(np.array(gaps))
    return out

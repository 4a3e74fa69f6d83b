"""sanitize(): steps 2-7 end to end on embeddings built so that the right answer is known."""

import re
import warnings

import numpy as np
import pytest

from vlsr_core import (
    MergeParams,
    ScoreParams,
    build_label_map,
    label_frequencies,
    sanitize,
    score_images,
)


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


DIM = 16
AXES = np.eye(DIM)

# Three concepts on orthogonal axes; label variants sit very close to their concept.
VOCAB = ["helmet", "Helmets", "helmit", "screwdriver", "Screwdrivers", "Lathe Information"]
CONCEPT = [0, 0, 0, 1, 1, 2]


def vocab_embeddings(rng):
    noise = rng.normal(scale=0.01, size=(len(VOCAB), DIM))
    return unit(AXES[CONCEPT] + noise)


def image(concept, rng, purity=0.9):
    """An image embedding mostly along one concept axis."""
    return unit(purity * AXES[concept] + 0.3 * unit(rng.normal(size=DIM)))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    labels = [
        ["helmet"],
        ["Helmets", "helmet"],
        ["helmit", "Lathe Information"],
        ["screwdriver"],
        ["Screwdrivers"],
        ["helmet", "screwdriver"],  # multi-label: shows a screwdriver
        [],  # unlabelled
        ["helmet"],  # its file could not be read
    ]
    images = np.stack([image(c, rng) for c in (0, 0, 0, 1, 1, 1, 0, 0)])
    images[7] = np.nan
    return images, labels, vocab_embeddings(rng)


def test_label_map_and_final_labels(data):
    images, labels, vemb = data
    r = sanitize(images, labels, VOCAB, vemb, min_cluster_size=1)
    # variants fold into the most frequent member of their cluster
    assert r.canonical["Helmets"] == r.canonical["helmit"] == "helmet"
    assert r.canonical["Screwdrivers"] == "screwdriver"  # tie on frequency (2 each) -> closer/lexical
    assert r.canonical["Lathe Information"] == "Lathe Information"
    assert r.cluster["helmet"] == r.cluster["helmit"] != r.cluster["screwdriver"]
    assert r.final_labels[:6] == ["helmet", "helmet", "helmet", "screwdriver", "screwdriver", "screwdriver"]
    # the multi-label image picks the canonical label that scores highest on it
    assert r.final_scores[5] == pytest.approx(float(images[5] @ vemb[VOCAB.index("screwdriver")]), abs=1e-5)
    assert r.canonical_labels[2] == ["helmet", "Lathe Information"]
    assert r.canonical_labels[1] == ["helmet"]  # de-duplicated


def test_unlabelled_and_unreadable_images(data):
    images, labels, vemb = data
    r = sanitize(images, labels, VOCAB, vemb, min_cluster_size=1)
    assert r.final_labels[6] is None and r.final_scores[6] is None
    assert r.canonical_labels[6] == [] and len(r.similarity[6]) == 0
    assert len(r.suggestions[6]) == 5  # an unlabelled image still gets suggestions
    # no embedding: canonical labels yes, scores no
    assert r.canonical_labels[7] == ["helmet"]
    assert r.similarity[7] is None and r.final_labels[7] is None and r.suggestions[7] == []
    # the unreadable image still counts for frequencies: "helmet" is on images 0, 1, 5 and 7
    assert r.frequencies[VOCAB.index("helmet")] == 4


def test_similarity_is_aligned_with_the_image_labels(data):
    images, labels, vemb = data
    r = sanitize(images, labels, VOCAB, vemb, min_cluster_size=1)
    for i, labs in enumerate(labels[:7]):
        expected = [images[i] @ vemb[VOCAB.index(l)] for l in labs]
        np.testing.assert_allclose(r.similarity[i], expected, atol=1e-5)
    # the irrelevant label scores far below the right one on the same image
    assert r.similarity[2][1] < r.similarity[2][0] - 0.5


def test_suggestions_are_the_top_k_of_the_whole_vocabulary(data):
    images, labels, vemb = data
    r = sanitize(images, labels, VOCAB, vemb, top_k=3)
    for i in range(7):
        scores = images[i] @ vemb.T
        best = np.argsort(-scores)[:3]
        assert [l for l, _ in r.suggestions[i]] == [VOCAB[j] for j in best]
        np.testing.assert_allclose([s for _, s in r.suggestions[i]], scores[best], atol=1e-5)
    # an image labelled only "helmet" gets a helmet variant first, not a screwdriver
    assert r.suggestions[0][0][0] in {"helmet", "Helmets", "helmit"}


def test_replacements_follow_the_margin(data):
    images, labels, vemb = data
    r = sanitize(images, labels, VOCAB, vemb, replace_margin=0.5)
    assert r.replacements[2][1] is not None  # "Lathe Information" on a helmet image
    assert r.replacements[2][0] is None  # "helmit" is within 0.5 of the best
    assert r.replacements[5][0] is not None  # "helmet" on a screwdriver image
    assert r.replacements[7] == [None]  # no embedding, no replacement
    # the default margin is 0: any strictly better top suggestion replaces
    r0 = sanitize(images, labels, VOCAB, vemb)
    for sims, sugg, image_labels, replaced in zip(r0.similarity, r0.suggestions, labels, r0.replacements):
        if sims is None:
            assert replaced == [None] * len(image_labels)
            continue
        best, best_score = sugg[0]
        assert replaced == [best if best != l and best_score > s else None
                            for l, s in zip(image_labels, sims)]
    assert any(x is not None for row in r0.replacements for x in row)


def test_paper_mode_merges_rare_labels_into_their_nearest_cluster(data):
    images, labels, vemb = data
    # "Lathe Information" is on one image only: with a floor of 2 samples it merges into the
    # nearest cluster and disappears from the vocabulary, however far that cluster is
    r = sanitize(images, labels, VOCAB, vemb, min_cluster_size=2, mode="paper")
    assert r.canonical["Lathe Information"] in {"helmet", "screwdriver"}
    assert len(r.representatives) == 2


def test_recommended_mode_keeps_a_rare_label_that_has_no_close_neighbour(data):
    images, labels, vemb = data
    r = sanitize(images, labels, VOCAB, vemb, min_cluster_size=2)
    assert r.canonical["Lathe Information"] == "Lathe Information"
    assert r.canonical["Helmets"] == "helmet"
    assert len(r.representatives) == 3


def test_deterministic(data):
    images, labels, vemb = data
    a = sanitize(images, labels, VOCAB, vemb)
    b = sanitize(images, labels, VOCAB, vemb)
    assert a.canonical == b.canonical and a.final_labels == b.final_labels


def test_input_errors(data):
    images, labels, vemb = data
    with pytest.raises(ValueError, match="missing from the vocabulary"):
        sanitize(images, labels[:-1] + [["hammer"]], VOCAB, vemb)
    with pytest.raises(ValueError, match="label lists"):
        sanitize(images, labels[:-1], VOCAB, vemb)
    with pytest.raises(ValueError, match="same model"):
        sanitize(images[:, :8], labels, VOCAB, vemb)
    with pytest.raises(ValueError, match="repeated"):
        sanitize(images, labels, VOCAB + ["helmet"], np.vstack([vemb, vemb[:1]]))
    # a label list given as a string, labels that are not strings, a label not embedded
    with pytest.raises(ValueError, match=r"image_labels\[0\] is the string 'helmet': give each "
                                         r"image a list of labels \(\['helmet'\]\)"):
        sanitize(images, ["helmet"] + labels[1:], VOCAB, vemb)
    with pytest.raises(ValueError, match=r"labels must be strings; the vocabulary holds 7 \(int\)"):
        sanitize(images, labels, VOCAB[:-1] + [7], vemb)
    broken = vemb.copy()
    broken[[1, 4]] = np.nan
    with pytest.raises(ValueError, match=r"vocabulary_embeddings has NaN or infinite values in 2 "
                                         r"of its rows \(1, 4\)"):
        sanitize(images, labels, VOCAB, broken)


def test_odd_vocabularies_parameters_and_counts_are_refused(data):
    images, labels, vemb = data
    # a set's order changes with each process's string hashing: rows would pair with other labels
    with pytest.raises(TypeError, match="vocabulary must be a list in the order of its "
                                        "embeddings' rows, not a set"):
        sanitize(images, labels, set(VOCAB), vemb)
    # parameters of the other step were dropped silently: every default applied instead
    with pytest.raises(TypeError, match=r"expected ScoreParams, got MergeParams\(mode='paper'"):
        sanitize(images, labels, VOCAB, vemb, MergeParams(mode="paper"))
    with pytest.raises(TypeError, match="expected MergeParams, got ScoreParams"):
        build_label_map(VOCAB, vemb, np.ones(len(VOCAB)), ScoreParams(top_k=3))
    with pytest.raises(ValueError, match=r"whole numbers >= 0.*got \[-1.0, 1.5\]"):
        build_label_map(VOCAB, vemb, [-1.0, 1.5] + [1] * (len(VOCAB) - 2))
    with pytest.raises(ValueError, match="vocabulary has repeated labels: 'helmet'"):
        build_label_map(VOCAB + ["helmet"], np.vstack([vemb, vemb[:1]]), [1] * (len(VOCAB) + 1))
    # a string iterated as its characters: 'ab' counted as 'a' and 'b'
    with pytest.raises(ValueError, match=r"image_labels\[0\] is the string 'ab'"):
        label_frequencies(["ab"], ["a", "b", "ab"])
    with pytest.raises(ValueError, match="repeated labels: 'a'"):
        label_frequencies([["a"]], ["a", "b", "a"])
    # an int label (a COCO category id) was "missing from the vocabulary: ['1']" beside '1'
    with pytest.raises(TypeError, match=r"image_labels\[1\] holds 1 \(int\): labels are strings"):
        label_frequencies([["a"], ["b", 1]], ["a", "b", "1"])
    with pytest.raises(TypeError, match=r"image_labels\[0\] holds 1 \(int\)"):
        sanitize(images, [[1]] + labels[1:], VOCAB, vemb)
    with pytest.raises(ValueError, match=r"image_labels\[0\] is None: give an unlabelled image \[\]"):
        label_frequencies([None], ["a"])
    # a chunk's label lists as a generator are counted, not read up by the check
    np.testing.assert_array_equal(label_frequencies((l for l in [["a"], ["a", "b"]]), ["a", "b"]),
                                  [2, 1])
    with pytest.raises(ValueError, match=r"whole numbers >= 0.*got \[1e\+30\]"):
        build_label_map(VOCAB, vemb, [1e30] + [1] * (len(VOCAB) - 1))  # (past int64)
    # a decomposed label missing from a composed vocabulary reads as what is missing
    with pytest.raises(ValueError, match=re.escape("missing from the vocabulary: ['cafe\\u0301']")):
        label_frequencies([["cafe\u0301"]], ["caf\u00e9"])


def test_rows_beyond_float32_keep_their_direction(data):
    """1e20 squared overflowed float32 (the row was left unscaled: scores of 2e19), a float64
    1e40 became infinite (an image without scores), 1e-200 became zero (scores of 0)."""
    images, labels, vemb = data
    expected = sanitize(images, labels, VOCAB, vemb)
    for images_scale, labels_scale in ((1e20, 1), (1, 1e20), (1e40, 1), (1e-200, 1e-200)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nor an overflow warning on the way
            got = sanitize(images.astype(np.float64) * images_scale, labels, VOCAB,
                           vemb.astype(np.float64) * labels_scale)
        assert [a is None for a in got.similarity] == [b is None for b in expected.similarity]
        for a, b in zip(got.similarity, expected.similarity):
            if b is not None:
                np.testing.assert_allclose(a, b, atol=1e-6)
        assert got.canonical == expected.canonical


def test_embeddings_need_not_be_normalised(data):
    """Raw CLIP features are not of unit length: each row is scaled, so the scores are cosines
    and the label map is the one of the normalised embeddings."""
    images, labels, vemb = data
    rng = np.random.default_rng(1)
    images[0] = np.nan  # an image that could not be embedded stays without scores
    scaled = sanitize(images * rng.uniform(0.2, 30, (len(images), 1)), labels, VOCAB,
                      vemb * rng.uniform(0.2, 30, (len(VOCAB), 1)))
    unit_rows = sanitize(images, labels, VOCAB, vemb)
    assert scaled.canonical == unit_rows.canonical
    assert scaled.final_labels == unit_rows.final_labels
    assert scaled.similarity[0] is None
    scored = [(a, b) for a, b in zip(scaled.similarity, unit_rows.similarity) if b is not None]
    assert len(scored) >= 5
    for a, b in scored:
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert np.all(np.abs(a) <= 1 + 1e-6)
    assert [[l for l, _ in s] for s in scaled.suggestions] == [
        [l for l, _ in s] for s in unit_rows.suggestions]


def test_empty_dataset():
    r = sanitize(np.empty((0, 4)), [], [], np.empty((0, 4)))
    assert r.final_labels == [] and r.canonical == {} and r.representatives == []


def test_twin_labels_take_one_suggestion_under_the_spelling_on_most_images():
    """CLIP's tokenizer lowercases: ``Drill`` and ``drill`` embed alike, and would take two of
    the k places with the same score."""
    rng = np.random.default_rng(1)
    vocab = ["Drill", "drill", "glove", "helmet", "vest"]
    t = unit(rng.normal(size=(4, 32)))
    vemb = t[[0, 0, 1, 2, 3]]
    images = unit(t[[0, 0, 0, 2]] + 0.1 * unit(rng.normal(size=(4, 32))))
    labels = [["drill"], ["drill"], ["Drill"], ["helmet"]]
    r = score_images(images, labels, vocab, vemb, top_k=3)
    for sugg in r.suggestions:
        assert len({l for l, _ in sugg}) == 3 and not {"Drill", "drill"} <= {l for l, _ in sugg}
    assert [l for l, _ in r.suggestions[0]][0] == "drill"  # on 2 images, "Drill" on 1
    # scored a chunk at a time, the collection's counts keep the spelling the same
    chunk = score_images(images[2:3], labels[2:3], vocab, vemb, top_k=3,
                         frequencies=np.array([1, 2, 0, 1, 0]))
    assert chunk.suggestions[0] == r.suggestions[2]
    assert score_images(images[2:3], labels[2:3], vocab, vemb, top_k=3
                        ).suggestions[0][0][0] == "Drill"
    with pytest.raises(ValueError, match="frequencies"):
        score_images(images, labels, vocab, vemb, frequencies=np.ones(4))
    assert len(score_images(images, labels, vocab, vemb, top_k=9).suggestions[0]) == 4
    # on as many images, the spelling in Unicode's composed form, as clusters are named (walk:
    # suggestions said "cafe\u0301", the first in string order, of a cluster named "café")
    twins = ["cafe\u0301", "caf\xe9", "glove"]
    r = score_images(images[:2], [["caf\xe9"], ["cafe\u0301"]], twins, t[[0, 0, 1]], top_k=2)
    assert [[l for l, _ in sugg] for sugg in r.suggestions] == [["caf\xe9", "glove"]] * 2


def test_a_twin_label_with_the_same_embedding_is_never_a_replacement():
    rng = np.random.default_rng(0)
    t = unit(rng.normal(size=(1, 64)))
    images = unit(rng.normal(size=(200, 64)))
    r = sanitize(images, [["Helmet"]] * 200, ["helmet", "Helmet"], np.repeat(t, 2, axis=0),
                 min_cluster_size=1, replace_margin=0.0)
    assert all(x == [None] for x in r.replacements)


def test_label_map_of_unnormalised_label_embeddings():
    """The lexical guards read cosine distances: scaled rows must not pass a plural that is a
    word of its own."""
    from vlsr_core.engine.pipeline import build_label_map

    rng = np.random.default_rng(2)
    vocab = [f"tool {i}" for i in range(40)] + ["glass", "glasses"]
    emb = unit(rng.normal(size=(len(vocab), DIM)))
    emb[41] = unit(emb[40] + 3 * unit(rng.normal(size=DIM)))  # far from "glass"
    freq = np.ones(len(vocab), dtype=np.int64)
    ref = build_label_map(vocab, emb, freq)
    assert ref.clusters[40] != ref.clusters[41]
    scaled = build_label_map(vocab, emb * 3, freq)
    assert list(scaled.clusters) == list(ref.clusters)
    assert scaled.representatives == ref.representatives


@pytest.mark.parametrize("mode", ["paper", "recommended"])
def test_the_clustering_progress_goes_on_while_small_clusters_merge(mode):
    """Audit: at 100,000 labels the merging of small clusters took 70 s of the paper mode's
    89 s with the bar still at the 0.9 DBSCAN ended on; the recommended mode 27 s of 40 s."""
    from vlsr_core.engine.merging import merge_small_clusters

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(600, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    vocabulary = [f"label {i}" for i in range(600)]
    # every label alone (eps too small to join any two), each on one sample: all are small
    calls = []
    build_label_map(vocabulary, emb, np.ones(600, dtype=np.int64), mode=mode, eps=1e-6,
                    min_cluster_size=10, max_merge_distance=2.0, progress=calls.append)
    assert calls == sorted(calls) and calls[-1] == 1.0
    merging = [c for c in calls if 0.3 < c < 0.9]  # after DBSCAN (and grouping), before the end
    assert len(merging) >= 20
    steps = []
    merge_small_clusters(emb, np.arange(600), np.ones(600, dtype=np.int64), 10,
                         progress=steps.append)
    assert steps == sorted(steps) and 0 < steps[0] < 0.02 and steps[-1] > 0.95


def test_rows_normalised_in_half_precision_are_scaled_to_unit_length_too():
    """Audit: rows within 1e-3 of unit length (features normalised in half precision) were
    left as they were: a suggestion came before a better one, the worse label replaced the
    better, a distance was below 0 and a score above 1."""
    t = np.random.default_rng(0).normal(size=(2, 8))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    image = t[0] + t[1] + 1e-4 * t[0]  # a little nearer to "a"
    image /= np.linalg.norm(image)
    vocab_emb = np.vstack([t[0], t[1] * 1.0009]).astype(np.float32)
    r = sanitize(image[None].astype(np.float32), [["a"]], ["a", "b"], vocab_emb)
    assert [label for label, _ in r.suggestions[0]] == ["a", "b"] and r.replacements[0] == [None]
    assert (build_label_map(["a", "b"], vocab_emb, [1, 1], min_cluster_size=0)
            .distance_to_canonical >= 0).all()
    x = t[:1].astype(np.float32) * 1.0009
    assert sanitize(x, [["a"]], ["a"], x).similarity[0][0] <= 1.0


def test_labels_given_as_generators_or_with_a_nan_image_are_read_once_or_refused(data):
    """Audit: a generator of label lists failed in len(); a vocabulary generator was read up
    by the first step, and the second said its labels were missing from it; an image whose
    labels were NaN (an empty pandas cell) failed with "'float' object is not iterable"."""
    images, labels, vemb = data
    want = sanitize(images, labels, VOCAB, vemb, min_cluster_size=1)
    got = sanitize(images, (l for l in labels), (v for v in VOCAB), vemb, min_cluster_size=1)
    assert got.final_labels == want.final_labels and got.canonical == want.canonical
    with pytest.raises(ValueError, match=r"image_labels\[1\] is nan: give each image a list"):
        sanitize(images, [labels[0], float("nan"), *labels[2:]], VOCAB, vemb)


@pytest.mark.parametrize("module", ["pipeline", "params", "clustering", "evidence"])
def test_the_examples_in_the_engines_docstrings_run(module):
    """Audit: sanitize's example used names it never defined, and ScoreTally's was
    pseudo-code written as a doctest."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"vlsr_core.engine.{module}"))
    assert result.attempted and not result.failed


def test_a_final_label_among_candidates_scoring_alike_does_not_follow_the_labels_order():
    """Audit: two canonical labels scoring exactly alike (twins a review split apart) gave the
    final label by the order of the image's labels."""
    from vlsr_core.engine.pipeline import final_labels
    from vlsr_core.engine.review import Edit, review_label_map

    t = unit(np.random.default_rng(3).normal(size=(2, 16)))
    vocab, vemb = ["beta", "alpha", "glove"], t[[0, 0, 1]]  # "beta" and "alpha" embed alike
    label_map = build_label_map(vocab, vemb, np.array([1, 1, 1]), mode="paper",
                                min_cluster_size=1)
    split, _ = review_label_map(label_map, vemb, [Edit(1, "split", "alpha")])
    assert split.canonical["alpha"] != split.canonical["beta"]
    images = unit(t[[0]] + 0.1 * t[[1]])
    finals = {final_labels(images, [labels], split, vemb).final_labels[0]
              for labels in (["alpha", "beta"], ["beta", "alpha"])}
    assert finals == {"alpha"}

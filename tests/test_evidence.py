"""Image evidence for merging (vlsr_core.engine.evidence): image prototypes, their separation, and
the joins they confirm, alone and through build_label_map / refine_labels."""

import numpy as np
import pytest

from vlsr_core.engine.evidence import ImagePrototypes, image_links
from vlsr_core.engine.params import MergeParams, ParamError
from vlsr_core.engine.pipeline import build_label_map, label_frequencies, refine_labels

DIM = 64


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def images_of(centre, n, rng, noise=0.5):
    """n unit image embeddings around a class centre."""
    return unit(centre + noise * rng.normal(size=(n, DIM)) / np.sqrt(DIM)).astype(np.float32)


@pytest.fixture
def classes():
    rng = np.random.default_rng(0)
    return unit(rng.normal(size=(12, DIM))), rng


def test_separation_is_about_one_for_one_kind_of_image_and_large_for_two(classes):
    centres, rng = classes
    for n in (1, 3, 30):
        emb = np.concatenate([images_of(centres[k], n, rng) for k in (0, 0, 1)]
                             + [images_of(centres[2], 40, rng)])  # the spread comes from all labels
        labels = [["a"]] * n + [["b"]] * n + [["c"]] * n + [["d"]] * 40
        p = ImagePrototypes.from_images(emb, labels, ["a", "b", "c", "d"])
        same, other = p.separation([0, 0], [1, 2])
        assert same < 2.0 and other > 3 * same, (n, same, other)
    # the statistic has no unit: scaling every embedding leaves it as it is
    scaled = ImagePrototypes.from_images(3.0 * emb, labels, ["a", "b", "c", "d"])
    assert scaled.separation([0, 0], [1, 2]) == pytest.approx(p.separation([0, 0], [1, 2]))


def test_two_tight_labels_are_judged_by_their_own_spread_not_by_broad_labels(classes):
    """Two specific labels whose images are tight around different centres stay far apart, even
    when broad labels with varied images make up most of the images (a pooled spread would let
    them pass as alike)."""
    centres, rng = classes
    near = unit(centres[0] + 0.15 * centres[1])  # two close but different kinds of image
    vocab = ["hammer drill", "hand drill"] + [f"broad {i}" for i in range(30)]
    emb = np.concatenate([images_of(centres[0], 6, rng, noise=0.1), images_of(near, 6, rng, noise=0.1)]
                         + [images_of(centres[2 + i % 10], 20, rng, noise=1.5) for i in range(30)])
    labels = [[vocab[0]]] * 6 + [[vocab[1]]] * 6 + [[vocab[2 + i // 20]] for i in range(600)]
    p = ImagePrototypes.from_images(emb, labels, vocab)
    halves = p.self_separation()
    assert p.separation([0], [1])[0] > 5 * np.quantile(halves, 0.9)


def test_separation_is_the_same_whatever_the_pairs_computed_together(classes, monkeypatch):
    centres, rng = classes
    emb = np.concatenate([images_of(centres[k % 8], 3, rng) for k in range(20)])
    vocab = [f"l{k}" for k in range(20)]
    p = ImagePrototypes.from_images(emb, [[vocab[i // 3]] for i in range(60)], vocab)
    a, b = np.triu_indices(20, 1)
    whole, halves = p.separation(a, b), p.self_separation()
    monkeypatch.setattr("vlsr_core.engine.evidence.ROW_CHUNK", 7)
    np.testing.assert_array_equal(p.separation(a, b), whole)
    np.testing.assert_array_equal(p.self_separation(), halves)


def test_prototypes_add_up_over_chunks_and_skip_what_cannot_count(classes):
    centres, rng = classes
    emb = images_of(centres[0], 7, rng)
    emb[3] = np.nan  # an image that could not be embedded
    labels = [["a"], ["a", "a"], ["b"], ["a"], ["a", "b"], ["not in vocab"], []]
    whole = ImagePrototypes.from_images(emb, labels, ["a", "b"])
    parts = ImagePrototypes(["a", "b"], DIM)
    for start in (0, 2, 5):
        parts.add(emb[start:start + 3][: {0: 2, 2: 3, 5: 2}[start]],
                  labels[start:start + {0: 2, 2: 3, 5: 2}[start]])
    assert whole.counts.tolist() == [3, 2]  # "a" twice on one image counts once; NaN row skipped
    np.testing.assert_array_equal(parts.sums, whole.sums)
    np.testing.assert_array_equal(parts.half_sums, whole.half_sums)
    np.testing.assert_array_equal(parts.counts, whole.counts)
    # the half of "a" is its 1st and 3rd image (rows 0 and 4), of "b" its 1st (row 2)
    np.testing.assert_allclose(whole.half_sums[0], emb[0] + emb[4], rtol=1e-6)
    np.testing.assert_allclose(whole.half_sums[1], emb[2], rtol=1e-6)
    np.testing.assert_allclose(whole.sums[0], emb[[0, 1, 4]].sum(axis=0), rtol=1e-6)


def test_the_halves_of_a_label_give_the_separation_chance_alone_gives(classes):
    """Halves of one label's images are two samples of one kind: their separations centre near 1,
    below those of two kinds; labels on one image have no halves."""
    centres, rng = classes
    vocab = [f"l{i}" for i in range(40)] + ["single"]
    emb = np.concatenate([images_of(centres[i % 8], 6, rng) for i in range(40)]
                         + [images_of(centres[0], 1, rng)])
    labels = [[vocab[i]] for i in range(40) for _ in range(6)] + [["single"]]
    p = ImagePrototypes.from_images(emb, labels, vocab)
    halves = p.self_separation()
    assert halves.size == 40
    assert 0.7 < np.median(halves) < 1.3
    other = p.separation(np.arange(0, 7), np.arange(1, 8))  # labels of different classes
    assert other.min() > np.quantile(halves, 0.9)


def test_separation_is_nan_without_images_or_a_variance_to_use():
    p = ImagePrototypes(["a", "b", "c"], 2)
    assert np.isnan(p.separation([0], [1])).all()  # no image at all
    p.add(np.array([[1.0, 0.0], [0.0, 1.0]]), [["a"], ["b"]])
    assert np.isnan(p.typical_variance())  # no label on two images: no variance to stand in
    assert np.isnan(p.separation([0], [1])).all()
    p.add(np.array([[1.0, 0.0], [0.9, 0.1]]), [["a"], ["a"]])
    assert np.isfinite(p.separation([0], [1])).all()  # "b" takes the typical variance
    assert np.isnan(p.separation([0], [2])).all()  # "c" has no image


def _text_pair(rng, distance):
    """Two unit text vectors at the given cosine distance."""
    a = unit(rng.normal(size=DIM))
    w = unit(rng.normal(size=DIM) - (rng.normal(size=DIM) @ a) * a)
    w = unit(w - (w @ a) * a)
    cos = 1 - distance
    return a, cos * a + np.sqrt(1 - cos ** 2) * w


def test_texts_near_join_when_their_images_agree_and_not_otherwise(classes):
    centres, rng = classes
    hex_key, allen = _text_pair(rng, 0.3)
    drill, hand_drill = _text_pair(rng, 0.3)
    text = np.stack([hex_key, allen, drill, hand_drill]).astype(np.float32)
    vocab = ["hex key", "allen wrench", "hammer drill", "hand drill"]
    emb = np.concatenate([images_of(centres[0], 10, rng), images_of(centres[0], 4, rng),
                          images_of(centres[1], 10, rng), images_of(centres[2], 4, rng)])
    labels = [["hex key"]] * 10 + [["allen wrench"]] * 4 + [["hammer drill"]] * 10 + [["hand drill"]] * 4
    p = ImagePrototypes.from_images(emb, labels, vocab)
    groups, joins, _ = image_links(np.arange(4), text, p, radius=0.4, eligible=np.ones(4, bool),
                                max_separation=2.0, min_images=1)
    assert joins == [(0, 1)]  # "hex key" and "allen wrench", the pair it joined
    assert groups[0] == groups[1] and len({groups[0], groups[2], groups[3]}) == 3
    # beyond the radius, images alone join nothing
    groups, joins, _ = image_links(np.arange(4), text, p, radius=0.2, eligible=np.ones(4, bool),
                                max_separation=2.0, min_images=1)
    assert joins == [] and len(set(groups.tolist())) == 4
    # nor does a label that may not take part
    groups, joins, _ = image_links(np.arange(4), text, p, radius=0.4,
                                eligible=np.array([True, False, True, True]), max_separation=2.0, min_images=1)
    assert joins == []


def test_a_spelling_far_in_text_joins_its_word_when_their_images_agree(classes):
    """"ambluance" is far from "ambulance" in text (the encoder tears it into other tokens), but
    on the same images: it joins. "hamper" is as far from "hammer" and on other images: it stays.
    The spelling join comes after the text join of "ambulance car", which it would block."""
    centres, rng = classes
    ambulance, far = _text_pair(rng, 1.0)
    _, car = _text_pair(rng, 0.3)
    car = unit(0.7 * ambulance + 0.3 * car)
    hammer, hamper = _text_pair(rng, 1.0)
    text = np.stack([ambulance, far, car, hammer, hamper]).astype(np.float32)
    assert 1 - text[0] @ text[2] < 0.4 < 1 - text[1] @ text[2]
    vocab = ["ambulance", "ambluance", "ambulance car", "hammer", "hamper"]
    emb = np.concatenate([images_of(centres[0], 24, rng), images_of(centres[1], 6, rng),
                          images_of(centres[2], 6, rng)])
    labels = [[vocab[i % 3]] for i in range(24)] + [["hammer"]] * 6 + [["hamper"]] * 6
    p = ImagePrototypes.from_images(emb, labels, vocab)
    groups, joins, n_spelling = image_links(np.arange(5), text, p, radius=0.4,
                                            eligible=np.ones(5, bool), max_separation=2.0,
                                            min_images=2, spellings=[(0, 1), (3, 4)])
    assert joins == [(0, 2), (0, 1)] and n_spelling == 1
    assert groups.tolist() == [0, 0, 0, 1, 2]
    # without the spelling pairs, text alone leaves "ambluance" out
    groups, joins, n_spelling = image_links(np.arange(5), text, p, radius=0.4,
                                            eligible=np.ones(5, bool), max_separation=2.0,
                                            min_images=2)
    assert groups.tolist() == [0, 1, 0, 2, 3] and n_spelling == 0


def test_a_chain_of_near_labels_on_alike_images_does_not_drift(classes):
    """Labels along an arc, each 0.1 from the next, all on one kind of image: single linkage would
    join the whole arc (0.9 from end to end); no two labels of a joined group are farther apart
    than the radius (complete linkage), and the joins do not depend on the block size."""
    centres, rng = classes
    start, end = _text_pair(rng, 1.0)  # orthogonal
    angles = np.arccos(0.9) * np.arange(8)
    text = np.stack([np.cos(t) * start + np.sin(t) * end for t in angles]).astype(np.float32)
    vocab = [f"label {i}" for i in range(8)]
    emb = images_of(centres[0], 80, rng)
    labels = [[vocab[i % 8]] for i in range(80)]
    p = ImagePrototypes.from_images(emb, labels, vocab)
    radius = 0.15
    groups, joins, _ = image_links(np.arange(8), text, p, radius=radius, eligible=np.ones(8, bool),
                                max_separation=5.0, min_images=2)
    assert 0 < len(joins) < 7
    assert len(set(groups.tolist())) == 8 - len(joins)
    for i, j in joins:  # each join names two labels now in one group, 0.1 apart: neighbours
        assert groups[i] == groups[j] and abs(i - j) == 1
    for g in set(groups.tolist()):
        members = text[groups == g].astype(np.float64)
        assert (1 - members @ members.T).max() <= radius + 1e-9
    for rows in (1, 3):
        assert (image_links(np.arange(8), text, p, radius=radius, eligible=np.ones(8, bool),
                            max_separation=5.0, min_images=2, block_rows=rows)[0] == groups).all()
    # a label on fewer images than asked for is not judged by them
    groups, joins, _ = image_links(np.arange(8), text, p, radius=radius, eligible=np.ones(8, bool),
                                max_separation=5.0, min_images=11)
    assert joins == []


def _synonym_data(rng, centres):
    """Two synonyms beyond eps but within the guard, with agreeing images, among unrelated labels."""
    hex_key, allen = _text_pair(rng, 0.3)
    others = unit(rng.normal(size=(10, DIM)))
    vocab = ["hex key", "allen wrench"] + [f"thing {i}" for i in range(10)]
    text = np.concatenate([[hex_key, allen], others]).astype(np.float32)
    image_labels, emb = [], []
    for i, label in enumerate(vocab):
        k = 0 if i < 2 else i - 1  # the synonyms show class 0, each other label its own class
        emb.append(images_of(centres[k], 5, rng))
        image_labels += [[label]] * 5
    return vocab, text, np.concatenate(emb), image_labels


def test_refine_labels_with_image_evidence_joins_synonyms_the_text_leaves_apart(classes):
    centres, rng = classes
    vocab, text, emb, image_labels = _synonym_data(rng, centres)
    plain = refine_labels(emb, image_labels, vocab, text)
    assert plain.canonical["allen wrench"] != plain.canonical["hex key"]
    assert plain.steps.image_evidence is None
    with_images = refine_labels(emb, image_labels, vocab, text, image_evidence=True)
    assert with_images.canonical["allen wrench"] == with_images.canonical["hex key"]
    assert len(set(with_images.canonical.values())) == 11
    evidence = with_images.steps.image_evidence
    assert {k: evidence[k] for k in ("labels with images", "image links", "groups", "not used")} == {
        "labels with images": 12, "image links": 1, "groups": 11, "not used": None}
    assert 0.5 < evidence["max separation"] < 3 < evidence["typical separation"]
    assert with_images.steps.as_record()["image_evidence"]["image links"] == 1
    # the lexical groups reported are those before the images joined anything
    assert len(set(with_images.steps.lexical_groups.tolist())) == 12

    # the same partition whatever order the vocabulary comes in (prototypes follow the labels)
    order = np.random.default_rng(2).permutation(len(vocab))
    shuffled = refine_labels(emb, image_labels, [vocab[i] for i in order], text[order],
                             image_evidence=True)
    assert shuffled.canonical == with_images.canonical


def test_images_that_do_not_tell_labels_apart_are_not_used(classes):
    """Images put on labels at random, or too few labels with two images to draw the threshold
    from: nothing is joined, and the report says why."""
    centres, rng = classes
    vocab, text, emb, image_labels = _synonym_data(rng, centres)
    shuffled = emb[np.random.default_rng(3).permutation(len(emb))]
    r = refine_labels(shuffled, image_labels, vocab, text, image_evidence=True)
    assert r.steps.image_evidence["image links"] == 0
    assert "typically no more separated" in r.steps.image_evidence["not used"]
    assert len(set(r.canonical.values())) == 12
    few = [i for i, ls in enumerate(image_labels) if ls[0] in vocab[:9]]
    r = refine_labels(emb[few], [image_labels[i] for i in few], vocab[:9], text[:9],
                      image_evidence=True)
    assert r.steps.image_evidence["not used"] == ("fewer than 10 labels are carried by two "
                                                  "images or more")
    assert r.canonical["allen wrench"] != r.canonical["hex key"]


def test_image_evidence_needs_prototypes_of_the_same_vocabulary_and_the_recommended_mode(classes):
    centres, rng = classes
    vocab, text, emb, image_labels = _synonym_data(rng, centres)
    freq = label_frequencies(image_labels, vocab)
    with pytest.raises(ValueError, match="image prototypes"):
        build_label_map(vocab, text, freq, image_evidence=True)
    wrong = ImagePrototypes.from_images(emb, image_labels, vocab[::-1])
    with pytest.raises(ValueError, match="another vocabulary"):
        build_label_map(vocab, text, freq, image_evidence=True, prototypes=wrong)
    with pytest.raises(ParamError, match="recommended mode") as e:
        MergeParams(mode="paper", image_evidence=True)
    assert e.value.name == "image_evidence"
    # prototypes given with image_evidence off change nothing
    right = ImagePrototypes.from_images(emb, image_labels, vocab)
    assert (build_label_map(vocab, text, freq, prototypes=right).clusters
            == build_label_map(vocab, text, freq).clusters).all()


def test_each_group_keeps_its_most_alike_candidates(classes, monkeypatch):
    from vlsr_core.engine import evidence

    centres, rng = classes
    monkeypatch.setattr(evidence, "CANDIDATES_PER_GROUP", 2)
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [2, 3], [3, 4]])
    sep = np.array([0.5, 0.1, 0.3, 0.9, 0.8, 0.7])
    kept, kept_sep = evidence._most_alike([(pairs[:3], sep[:3]), (pairs[3:], sep[3:])])
    # with two each, every pair is one of its groups' two most alike; with one each, (1,2) and
    # (2,3) are no group's best
    assert sorted(map(tuple, kept.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3), (3, 4)]
    monkeypatch.setattr(evidence, "CANDIDATES_PER_GROUP", 1)
    kept, _ = evidence._most_alike([(pairs, sep)])
    assert sorted(map(tuple, kept.tolist())) == [(0, 1), (0, 2), (0, 3), (3, 4)]

    # pruned while gathering (20 labels near each other on one kind of image: 190 candidates
    # for 20 groups), the joins still hold to complete linkage
    centre, _ = _text_pair(rng, 0.01)
    text = unit(centre + 0.05 * rng.normal(size=(20, DIM)) / np.sqrt(DIM)).astype(np.float32)
    vocab = [f"l{i}" for i in range(20)]
    p = ImagePrototypes.from_images(images_of(centres[0], 100, rng), [[vocab[i % 20]] for i in range(100)],
                                    vocab)
    groups, joins, _ = image_links(np.arange(20), text, p, radius=0.01, eligible=np.ones(20, bool),
                                max_separation=5.0, min_images=2)
    assert joins
    for g in set(groups.tolist()):
        members = text[groups == g].astype(np.float64)
        assert (1 - members @ members.T).max() <= 0.01 + 1e-9

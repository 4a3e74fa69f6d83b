"""The recommended merge: lexical variants, guarded merges, thresholds from the data, bad labels."""

import numpy as np
import pytest

from vlsr_core.engine.grouping import LONG_LABEL, join_reasons, recommended_clusters
from vlsr_core.engine.lexical import lexical_groups, normal_form, singular
from vlsr_core.engine.merging import merge_small_clusters
from vlsr_core.engine.params import MergeParams
from vlsr_core.engine.pipeline import build_label_map


def spread(n, dim=64, seed=0):
    """n unit vectors in general position (pairwise distances near 1)."""
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near(v, distance, seed=1):
    """A unit vector at about ``distance`` cosine distance from unit vector v."""
    w = np.random.default_rng(seed).standard_normal(v.shape)
    w -= (w @ v) * v
    w /= np.linalg.norm(w)
    cos = 1.0 - distance
    return (cos * v + np.sqrt(1 - cos**2) * w).astype(np.float32)


def groups_of(vocabulary, label_map):
    canonical = label_map.canonical
    return {frozenset(l for l in vocabulary if canonical[l] == c) for c in set(canonical.values())}


def test_normal_form_reads_labels_as_an_eye_does():
    assert normal_form("Safety-Helmet_2 ") == normal_form("safety helmet 2")
    assert normal_form("Black & Decker") == normal_form("black and decker")
    assert normal_form("Archimedes' screw") == normal_form("archimedes screw")
    assert normal_form("caf\u00e9") == normal_form("cafe\u0301")  # NFC and NFD
    assert normal_form("\uff28\uff45\uff4c\uff4d") == "helm"  # full-width letters (NFKC)
    # symbols that carry meaning stay, and a decimal point is no separator
    assert len({normal_form(x) for x in ["C++", "C#", "C"]}) == 3
    assert normal_form("50%") != normal_form("50")
    assert normal_form("1.5 inch") != normal_form("15 inch")
    assert normal_form("St. Bernard") == normal_form("st bernard")
    for no_words in ["", "   ", "\U0001f528\U0001f527", "---", "!?"]:
        assert normal_form(no_words) == ""


@pytest.mark.parametrize("plural, one", [
    ("helmets", "helmet"), ("boxes", "box"), ("batteries", "battery"), ("knives", "knife"),
    ("benches", "bench"), ("men", "man"), ("glasses", "glass"), ("tomatoes", "tomato"),
    ("bus", "bus"), ("glass", "glass"), ("analysis", "analysis"), ("gas", "gas"),
])
def test_singular(plural, one):
    assert singular(plural) == one


def test_lexical_variants_group_and_each_rule_is_counted():
    vocabulary = ["helmet", "Helmets", "HELMET", "helmit", "screw driver", "screwdrivers",
                  "Screwdriver", "drill", "grill", "stapler", "staples", "back saw", "buck saw"]
    emb = spread(len(vocabulary))
    # the guard: every variant close to its word, the rest far apart
    word = {"Helmets": 0, "HELMET": 0, "helmit": 0, "screwdrivers": 4, "Screwdriver": 4}
    for i, label in enumerate(vocabulary):
        if label in word:
            emb[i] = near(emb[word[label]], 0.1, seed=i)
    groups, links, typos, _ = lexical_groups(vocabulary, emb, guard=0.3)
    together = {frozenset(l for l, g in zip(vocabulary, groups) if g == k) for k in set(groups)}
    assert frozenset({"helmet", "Helmets", "HELMET", "helmit"}) in together
    assert frozenset({"screw driver", "screwdrivers", "Screwdriver"}) in together
    # a first-letter or last-letter change is no typo; "back" / "buck" is one, but far apart
    for alone in ["drill", "grill", "stapler", "staples", "back saw", "buck saw"]:
        assert frozenset({alone}) in together
    assert links == {"normal form": 1, "plural": 2, "spacing": 1, "typo": 1, "word form": 0}
    assert [(vocabulary[i], vocabulary[j]) for i, j in typos] == [("helmet", "helmit")]


def test_word_forms_of_modifiers_group_but_a_head_nouns_ing_stays():
    vocabulary = ["fishing hook", "fish hook", "machining tools", "machine tool", "broadaxe",
                  "broadax", "camping", "camp", "lighting", "light"]
    emb = spread(len(vocabulary))
    for i in range(1, len(vocabulary), 2):
        emb[i] = near(emb[i - 1], 0.1, seed=i)  # every pair close: the rule alone decides
    groups, links, _, _ = lexical_groups(vocabulary, emb, guard=0.3)
    same = [bool(groups[i] == groups[i + 1]) for i in range(0, len(vocabulary), 2)]
    assert same == [True, True, True, False, False]
    assert links["word form"] == 3


def test_the_guard_keeps_apart_variants_the_encoder_puts_far_apart():
    vocabulary = ["glass", "glasses", "helmet", "helmets"]
    emb = spread(4)
    emb[3] = near(emb[2], 0.1)  # "helmets" close to "helmet"; "glasses" as far as a stranger
    groups, _, _, refused = lexical_groups(vocabulary, emb, guard=0.3)
    assert groups[0] != groups[1] and groups[2] == groups[3]
    assert refused == [(0, 1)]  # for the images to judge


def test_a_plural_far_from_its_singular_stays_apart_where_a_spacing_variant_joins():
    """At one distance (0.2, between the plural guard 0.15 and the guard 0.3) "trunks" is a word
    of its own (swimming trunks), while "wrist band" still joins "wristband"; and the looser
    spacing key does not join again the plural pair its own guard refused."""
    vocabulary = ["trunk", "trunks", "wristband", "wrist band", "helmet", "helmets"]
    emb = spread(len(vocabulary))
    emb[1] = near(emb[0], 0.2, seed=1)
    emb[3] = near(emb[2], 0.2, seed=3)
    emb[5] = near(emb[4], 0.1, seed=5)
    groups, links, _, _ = lexical_groups(vocabulary, emb, guard=0.3, plural_guard=0.15)
    assert groups[0] != groups[1] and groups[2] == groups[3] and groups[4] == groups[5]
    assert links["plural"] == 1 and links["spacing"] == 1
    # without a plural guard of its own, the plural joins at the common guard
    groups, _, _, _ = lexical_groups(vocabulary, emb, guard=0.3)
    assert groups[0] == groups[1]


def test_a_typo_in_a_short_word_needs_a_closer_embedding():
    """One edit from a 4- or 5-letter word is often another real word ("belt" / "bolt"): such a
    typo joins within half the guard, one in a longer word within the whole guard."""
    vocabulary = ["belt", "bolt", "mouse", "moose", "jacket", "jackat", "ambulance", "ambulence",
                  "sofa", "sfoa", "bag", "bog"]
    emb = spread(len(vocabulary))
    distances = {1: 0.2, 3: 0.1, 5: 0.25, 7: 0.25, 9: 0.01, 11: 0.01}  # guard 0.3, half 0.15
    for i, d in distances.items():
        emb[i] = near(emb[i - 1], d, seed=i)
    groups, links, typos, _ = lexical_groups(vocabulary, emb, guard=0.3)
    same = [bool(groups[i] == groups[i + 1]) for i in range(0, len(vocabulary), 2)]
    # a swap is a typo too; a 3-letter word never has one, however close
    assert same == [False, True, True, True, True, False]
    assert links["typo"] == 4


def test_a_misspelling_one_edit_from_two_words_joins_the_nearer_and_keeps_them_apart():
    """"drial" is one edit from "drill" and from "dial", two words far apart: it joins the
    nearer, and never both (which would export every drill as a dial). Two words that a
    misspelling bridges and that are close themselves ("jewelry" - "jewelery" - "jewellery",
    one word spelled two ways) share its group."""
    vocabulary = ["dial", "drial", "drill", "jewellery", "jewelery", "jewelry"]
    unknown = np.array([0, 1, 0, 0, 1, 0], dtype=np.float32)
    for nearer, farther in ((2, 0), (0, 2)):
        emb = spread(len(vocabulary))
        emb[nearer] = near(emb[1], 0.08, seed=7)
        toward = near(emb[1], 0.1, seed=7)  # the same side as the nearer one: the other side
        emb[farther] = 2 * (toward @ emb[1]) * emb[1] - toward  # of "drial", 0.34 from it
        emb[3] = near(emb[4], 0.1, seed=3)
        emb[5] = near(emb[4], 0.1, seed=5)
        for counts in (unknown, None):
            groups, _, typos, refused = lexical_groups(vocabulary, emb, guard=0.3,
                                                       unknown_words=counts)
            assert groups[1] == groups[nearer] != groups[farther]
            assert (min(1, nearer), max(1, nearer)) in typos
            # a close pair kept apart so is not one for the images to judge (they would bridge)
            assert (min(1, farther), max(1, farther)) not in refused
            assert groups[3] == groups[4] == groups[5]


def test_no_spelling_rule_bridges_two_words_a_rule_refused_or_far_apart():
    """"belt" / "bolt" are refused as a pair (a 4-letter word's typo guard): "bilt", near both,
    does not bring them together. "electrone" is a typo of "electrode" and, by its word form
    (a long word's final "e" dropped), of "electron": the word form does not bridge them."""
    vocabulary = ["belt", "bilt", "bolt", "electrode", "electrone", "electron"]
    emb = spread(len(vocabulary))
    for middle, (one, d1), (other, d2) in ((1, (0, 0.06), (2, 0.07)), (4, (3, 0.08), (5, 0.1))):
        emb[one] = near(emb[middle], d1, seed=middle)
        toward = near(emb[middle], d2, seed=middle)  # the same side: the other one opposite
        emb[other] = 2 * (toward @ emb[middle]) * emb[middle] - toward
    # "bolt" 0.25 from "belt" (beyond their 0.15), "electron" 0.34 from "electrode" (beyond 0.3)
    assert 0.15 < 1 - emb[0] @ emb[2] < 0.3 and 1 - emb[3] @ emb[5] > 0.3
    for counts in (np.array([0, 1, 0, 0, 1, 0], dtype=np.float32), None):
        groups, _, _, refused = lexical_groups(vocabulary, emb, guard=0.3, unknown_words=counts)
        assert groups[0] == groups[1] != groups[2]
        assert groups[3] == groups[4] != groups[5]


def test_the_tight_guards_hold_only_between_words_the_tokenizer_knows():
    """At 0.25 (between the tight guards, 0.15, and the guard, 0.3): "glasses" and "bolt" are
    words the tokenizer holds whole and stay apart from "glass" and "belt"; a plural of a word it
    splits ("clothespins") and a misspelling torn into pieces beside a known word ("waggon")
    join, as a spacing variant does. Without the tokenizer's counts every pair is as if known."""
    vocabulary = ["glass", "glasses", "belt", "bolt", "clothespin", "clothespins", "wagon",
                  "waggon", "rasher", "rusher"]
    unknown = np.array([0, 0, 0, 0, 1, 1, 0, 1, 1, 1], dtype=np.float32)
    emb = spread(len(vocabulary))
    distances = {1: 0.25, 3: 0.25, 5: 0.25, 7: 0.25, 9: 0.25}
    for i, d in distances.items():
        emb[i] = near(emb[i - 1], d, seed=i)
    groups, links, typos, refused = lexical_groups(vocabulary, emb, guard=0.3, plural_guard=0.15,
                                                   unknown_words=unknown)
    same = [bool(groups[i] == groups[i + 1]) for i in range(0, len(vocabulary), 2)]
    # "rasher" / "rusher": two spellings the tokenizer splits alike are not a known word and its
    # misspelling (two rare words, as often as not); "rasher" is 6 letters: the whole guard
    assert same == [False, False, True, True, True]
    assert links["plural"] == 1 and links["typo"] == 2 and typos == [(6, 7), (8, 9)]
    assert refused == [(0, 1), (2, 3)]
    groups, _, _, _ = lexical_groups(vocabulary, emb, guard=0.3, plural_guard=0.15)
    assert [bool(groups[i] == groups[i + 1]) for i in range(0, 10, 2)] == [False, False, False,
                                                                          False, True]


def test_a_typo_in_a_long_word_the_tokenizer_splits_has_a_looser_guard():
    """At 0.4 (beyond the guard, 0.3, within the long-typo guard, 0.5): two spellings of an
    8-letter word that the tokenizer splits both ("caravansary") join; one it holds whole in one
    spelling ("wristband" beside "waistband") or a 7-letter word does not, nor a pair beyond the
    long-typo guard; without the counts, or without that guard, the typo guard holds."""
    vocabulary = ["caravansary", "caravansery", "wristband", "waistband", "scuffer", "scoffer",
                  "tensiometer", "tensimeter", "acme wristband", "acme waistband"]
    # "acme" split in both: half of each label's words, whichever spelling of the other is known
    unknown = np.array([1, 1, 0, 1, 1, 1, 1, 1, 0.5, 0.5], dtype=np.float32)
    emb = spread(len(vocabulary))
    for i, d in {1: 0.4, 3: 0.4, 5: 0.4, 7: 0.6, 9: 0.4}.items():
        emb[i] = near(emb[i - 1], d, seed=i)

    def same(**kwargs):
        groups, _, _, _ = lexical_groups(vocabulary, emb, guard=0.3, **kwargs)
        return [bool(groups[i] == groups[i + 1]) for i in range(0, len(vocabulary), 2)]

    assert same(unknown_words=unknown, long_typo_guard=0.5) == [True, False, False, False, False]
    assert same(unknown_words=unknown) == same(long_typo_guard=0.5) == [False] * 5


def test_build_label_map_reads_the_tokenizer_counts_in_the_vocabulary_order():
    """Labels come in any order; their counts follow them (the map works in string order)."""
    pairs = [("waggon", "wagon", 1.0, 0.0, 0.4), ("glasses", "glass", 0.0, 0.0, 0.4),
             ("clothespins", "clothespin", 1.0, 1.0, 0.4)]
    filler = [f"w{i:03d}" for i in range(60)]
    vocabulary = [a for a, *_ in pairs] + filler + [b for _, b, *_ in pairs]
    unknown = np.array([u for _, _, u, _, _ in pairs] + [0.0] * 60 + [u for *_, u, _ in pairs])
    emb = spread(len(vocabulary), dim=128, seed=2)
    for k, (*_, distance) in enumerate(pairs):
        emb[k] = near(emb[len(vocabulary) - len(pairs) + k], distance, seed=k)
    freq = np.ones(len(vocabulary), dtype=np.int64)
    label_map = build_label_map(vocabulary, emb, freq, unknown_words=unknown)
    canonical = label_map.canonical
    # guards of this vocabulary: 0.3 x 1.0 for a plural or short typo of known words, else 0.6
    assert [canonical[a] == canonical[b] for a, b, *_ in pairs] == [True, False, True]
    assert build_label_map(vocabulary, emb, freq).canonical["waggon"] == "waggon"
    with pytest.raises(ValueError, match="between 0 and 1"):
        build_label_map(vocabulary, emb, freq, unknown_words=np.full(len(vocabulary), np.nan))


def test_sizes_model_numbers_and_years_are_no_typos_or_plurals():
    """One character apart, and close in any encoder, but not spellings of one word."""
    vocabulary = ["10mm bolt", "12mm bolt", "A320", "A330", "2009", "2019", "1990s", "1990"]
    emb = spread(len(vocabulary))
    for i in range(1, len(vocabulary), 2):
        emb[i] = near(emb[i - 1], 0.01, seed=i)
    groups, links, typos, refused = lexical_groups(vocabulary, emb, guard=0.3)
    assert len(set(groups.tolist())) == len(vocabulary) and typos == [] and refused == []
    assert singular("1990s") == "1990s"
    # letters with marks are letters: a typo in Devanagari or Thai is still one
    vocabulary = ["हथौड़ा", "हथौड़ाा", "ค้อนนน", "ค้อนนนน"]
    emb = spread(4)
    emb[1], emb[3] = near(emb[0], 0.01, seed=1), near(emb[2], 0.01, seed=3)
    groups, links, _, _ = lexical_groups(vocabulary, emb, guard=0.3)
    assert groups.tolist() == [0, 0, 1, 1] and links["typo"] == 2


def test_groups_a_refused_pair_holds_are_not_joined_by_a_looser_rule():
    """"stripping tool" / "striping tool" is a typo the guard refuses (0.54 apart); the word form
    ("strip tool") must not join them again through "Stripping tools", which is near both."""
    vocabulary = ["Stripping tools", "stripping tool", "striping tool"]
    x, y = spread(2)
    y = y - (y @ x) * x
    y /= np.linalg.norm(y)
    angles = [0.0, -np.arccos(0.9), np.arccos(0.8)]  # 0.1 and 0.2 from the first
    emb = np.stack([np.cos(t) * x + np.sin(t) * y for t in angles]).astype(np.float32)
    groups, links, _, refused = lexical_groups(vocabulary, emb, guard=0.3)
    assert groups.tolist() == [0, 0, 1] and refused == [(1, 2)]
    assert links["plural"] == 1 and links["word form"] == 0


def test_two_close_spellings_join_though_a_third_of_their_key_is_far():
    """"box", "boxes" and "boxs" share the singular form; "box" (first) is far from the other two,
    which are close: they join each other, not "box"."""
    vocabulary = ["box", "boxes", "boxs"]
    emb = spread(3)
    emb[2] = near(emb[1], 0.05)
    groups, links, _, _ = lexical_groups(vocabulary, emb, guard=0.3)
    assert groups[1] == groups[2] != groups[0] and links["plural"] == 1


def test_default_guards_let_a_misspelling_farther_than_a_plural_join():
    """With the defaults, in a vocabulary whose labels are about 1.0 apart: a misspelling 0.55
    away joins its word (the encoder tears a misspelt word into other tokens), a plural 0.4
    away does not (a plural that far is a word of its own), a plural 0.2 away does; a spacing
    variant 0.75 away joins (closing a compound changes its tokens most), a typo that far not."""
    pairs = [("ambulance", "ambulence", 0.55), ("trunk", "trunks", 0.4), ("helmet", "helmets", 0.2),
             ("sawmill", "saw mill", 0.75), ("cabinet", "cabinat", 0.75)]
    vocabulary = [f"w{i:03d}" for i in range(60)] + [w for a, b, _ in pairs for w in (a, b)]
    emb = spread(len(vocabulary), dim=128, seed=2)
    for k, (_, _, distance) in enumerate(pairs):
        i = 60 + 2 * k
        emb[i + 1] = near(emb[i], distance, seed=i)
    label_map = build_label_map(vocabulary, emb, np.ones(len(vocabulary), dtype=np.int64))
    assert 0.95 < label_map.steps.background_distance < 1.05
    canonical = label_map.canonical
    assert [canonical[a] == canonical[b] for a, b, _ in pairs] == [True, False, True, True, False]


def test_complete_linkage_stops_chains():
    # the centroid of {B, C} is 0.079 from A, but C is 0.122 from A: with a limit of 0.1 the
    # small cluster {A} joins {B, C} only without the complete-linkage check
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(0.3), np.sin(0.3), 0.0])
    c = np.array([np.cos(0.5), np.sin(0.5), 0.0])
    emb = np.stack([a, b, c]).astype(np.float32)
    start = np.array([0, 1, 1])
    freq = np.array([1, 5, 5])
    single = merge_small_clusters(emb, start, freq, 3, max_merge_distance=0.1)
    complete = merge_small_clusters(emb, start, freq, 3, max_merge_distance=0.1, complete=True)
    assert single.tolist() == [0, 0, 0]
    assert complete.tolist() == [0, 1, 1]


def test_default_mode_keeps_far_rare_labels_that_the_paper_mode_forces_together():
    vocabulary = [f"label {i}" for i in range(30)]
    emb = spread(30)
    freq = np.ones(30, dtype=np.int64)
    recommended = build_label_map(vocabulary, emb, freq)
    paper = build_label_map(vocabulary, emb, freq, mode="paper")
    assert len(recommended.representatives) == 30  # nothing close: nothing merged
    assert len(paper.representatives) <= 3  # every cluster under 10 samples merged
    assert recommended.steps.mode == "recommended" and paper.steps.mode == "paper"


def test_paper_mode_is_the_papers_steps_exactly():
    from vlsr_core.engine.clustering import cluster_labels
    from vlsr_core.engine.merging import representatives

    vocabulary = sorted(f"l{i:02d}" for i in range(40))
    rng = np.random.default_rng(3)
    centres = spread(6, seed=3)
    emb = np.stack([near(centres[i % 6], rng.uniform(0.01, 0.2), seed=i) for i in range(40)])
    freq = rng.integers(1, 9, 40)
    label_map = build_label_map(vocabulary, emb, freq, mode="paper")
    dbscan = cluster_labels(emb, eps=0.07)
    clusters = merge_small_clusters(emb, dbscan, freq, 10, vocabulary=vocabulary)
    assert label_map.dbscan_clusters.tolist() == dbscan.tolist()
    assert label_map.clusters.tolist() == clusters.tolist()
    assert label_map.representatives == [vocabulary[r] for r in
                                         representatives(vocabulary, emb, clusters, freq)]
    assert label_map.steps.eps == 0.07


def test_a_cluster_is_named_by_the_spelling_its_vocabulary_uses_when_frequencies_tie():
    # variants of one thing, each on one sample: the spec's tie-break (closest to the centroid,
    # then string order) would name clusters "AIRSHIP", "hekmet" and "pit  bull terriers"
    # (double space)
    vocabulary = ["AIRSHIP", "airship", "hekmet", "helmet", "safety helmet", "bike helmet",
                  "pit  bull terriers", "pit bull terrier", "pit bull terriers", "bull terrier",
                  "galaxies", "galaxy", "cafe\u0301", "caf\xe9"]
    centres = spread(8, seed=5)
    at = [0, 0, 1, 1, 2, 3, 4, 4, 4, 5, 6, 6, 7, 7]
    emb = np.stack([centres[c] for c in at])  # variants on one vector: the centroid can't tell
    freq = np.ones(len(vocabulary), dtype=np.int64)
    names = build_label_map(vocabulary, emb, freq).canonical
    assert names["AIRSHIP"] == "airship"  # no evidence either way: lower case
    assert names["hekmet"] == "helmet"  # "safety helmet" and "bike helmet" use the word
    # "pit bull terriers" shows on two samples (once with a double space), the singular on one
    assert names["pit bull terrier"] == names["pit  bull terriers"] == "pit bull terriers"
    assert names["galaxies"] == "galaxy"  # no evidence either way: the singular
    assert names["cafe\u0301"] == "caf\xe9"  # Unicode's composed form (not first in string order)
    # a label on more samples still wins, as in the paper
    freq[0] = 2
    assert build_label_map(vocabulary, emb, freq).canonical["airship"] == "AIRSHIP"
    # the paper's mode keeps the paper's rule
    paper = build_label_map(vocabulary, emb, np.ones(len(vocabulary), dtype=np.int64),
                            mode="paper", min_cluster_size=1).canonical
    assert paper["airship"] == "AIRSHIP" and paper["helmet"] == "hekmet"


def test_spellings_that_show_alike_count_their_samples_together_to_name_a_cluster():
    """App audit: "wrench " on 14 samples and "wrench" on 13 named the cluster "wrench " (a
    COCO category with a trailing space). Forms that show alike on screen (white space,
    invisible characters, Unicode form) are one spelling by their samples; the tidy one names
    the cluster. A form on more samples than both together still wins, as in the paper."""
    vocabulary = ["wrench ", "wrench", "Wrenches", "cafe\u0301", "caf\xe9", "tool\u200b"]
    centres = spread(3, seed=7)
    emb = np.stack([centres[c] for c in (0, 0, 0, 1, 1, 2)])
    names = build_label_map(vocabulary, emb, np.array([14, 13, 20, 5, 4, 3])).canonical
    assert names["Wrenches"] == names["wrench "] == "wrench"  # 27 show as "wrench"
    assert names["caf\xe9"] == "caf\xe9"  # 9 show as café: the composed one
    assert names["tool\u200b"] == "tool\u200b"  # (the only member)
    assert build_label_map(vocabulary, emb, np.array([14, 13, 30, 5, 4, 3])).canonical[
        "wrench"] == "Wrenches"
    paper = build_label_map(vocabulary, emb, np.array([14, 13, 20, 5, 4, 3]), mode="paper",
                            min_cluster_size=1, eps=0.01).canonical
    assert paper["wrench"] == "Wrenches" and paper["caf\xe9"] == "cafe\u0301"  # as before


def test_the_casings_and_plurals_of_a_word_count_their_samples_together_to_name_a_cluster():
    """Audit (10,000 labels): "disptached" on 3 samples named the cluster of "dispatched",
    "DISPATCHED" and "Dispatched" (8 between them), and "Archivepaths" (4) that of "archivepath" (3),
    "Archivepath" (2) and "ARCHIVEPATH" (1): the word's samples, split over its casings, lost
    to one spelling. A word's samples count together over its ways of writing, then over its
    casings, then as written."""
    vocabulary = ["disptached", "dispatched", "DISPATCHED", "Dispatched",
                  "Archivepaths", "archivepath", "Archivepath", "ARCHIVEPATH",
                  "INVALIDATE", "invalidate", "Invalidate"]
    centres = spread(3, seed=5)
    emb = np.stack([centres[c] for c in (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2)])
    freq = np.array([3, 2, 2, 1, 4, 3, 2, 1, 4, 1, 2])
    names = build_label_map(vocabulary, emb, freq).canonical
    assert names["disptached"] == "dispatched"  # 5 samples of the word, 3 of the typo
    assert names["Archivepaths"] == "archivepath"  # 6 of the singular, then 3 as written
    assert names["invalidate"] == "INVALIDATE"  # one word: its spelling on most samples
    paper = build_label_map(vocabulary, emb, freq, mode="paper", min_cluster_size=1,
                            eps=0.01).canonical
    assert paper["dispatched"] == "disptached" and paper["archivepath"] == "Archivepaths"


def test_a_tie_nothing_in_the_vocabulary_decides_goes_to_the_words_the_tokenizer_knows():
    # two spellings on one vector, each on one sample, no other label using either: the
    # tokenizer holds "balloon" whole and splits "ballon"
    vocabulary, unknown = ["ballon", "balloon", "kite"], np.array([1.0, 0.0, 0.0])
    emb = np.stack([spread(2, seed=3)[i] for i in (0, 0, 1)])
    freq = np.ones(3, dtype=np.int64)
    assert build_label_map(vocabulary, emb, freq).canonical["ballon"] == "ballon"  # string order
    named = build_label_map(vocabulary, emb, freq, unknown_words=unknown)
    assert named.canonical["ballon"] == "balloon"
    assert named.naming[1] < named.naming[0]
    # the tokenizer only breaks ties: the spelling on more samples still names the cluster
    assert build_label_map(vocabulary, emb, np.array([2, 1, 1]),
                           unknown_words=unknown).canonical["balloon"] == "ballon"
    # the paper's mode keeps the paper's rule, and records no naming rank
    paper = build_label_map(vocabulary, emb, freq, mode="paper", min_cluster_size=1,
                            unknown_words=unknown)
    assert paper.canonical["balloon"] == "ballon" and paper.naming is None
    with pytest.raises(ValueError, match="3 labels and 2 unknown_words"):
        build_label_map(vocabulary, emb, freq, unknown_words=unknown[:2])


def test_a_review_names_a_cluster_that_lost_its_name_by_the_rule_that_named_it():
    from vlsr_core.engine.review import Edit, review_label_map

    vocabulary = ["AIRSHIP", "airship", "airships", "kite"]
    emb = np.stack([spread(2, seed=4)[i] for i in (0, 0, 0, 1)])
    label_map = build_label_map(vocabulary, emb, np.array([1, 1, 3, 1]))
    assert label_map.canonical["airship"] == "airships"  # on most samples
    reviewed, _ = review_label_map(label_map, emb, [Edit(1, "move", "airships", to="kite")])
    # the two left tie on samples and sit on one vector: fewer capitals, as the run names
    assert reviewed.canonical["AIRSHIP"] == "airship"
    paper = build_label_map(vocabulary, emb, np.array([1, 1, 3, 1]), mode="paper",
                            min_cluster_size=1)
    reviewed, _ = review_label_map(paper, emb, [Edit(1, "move", "airships", to="kite")])
    assert reviewed.canonical["airship"] == "AIRSHIP"  # the paper's tie-break: string order


def test_thresholds_follow_the_encoders_scale():
    """A common direction added to every embedding (as CLIP's text tower has) shrinks every
    distance by one factor; the derived eps shrinks with it and the partition stays the same."""
    rng = np.random.default_rng(5)
    centres = spread(40, dim=32, seed=5)
    x = np.stack([near(centres[i % 40], rng.choice([0.01, 0.03, 0.3]), seed=i) for i in range(200)])
    vocabulary = [f"w{i:03d}" for i in range(200)]  # no lexical variants: embeddings decide
    freq = np.ones(200, dtype=np.int64)
    offset = np.zeros((200, 1), dtype=np.float32) + 2.0  # orthogonal to every x
    squeezed = np.hstack([x, offset])
    squeezed /= np.linalg.norm(squeezed, axis=1, keepdims=True)
    a = build_label_map(vocabulary, np.hstack([x, 0 * offset]), freq)
    b = build_label_map(vocabulary, squeezed, freq)
    assert b.steps.background_distance == pytest.approx(a.steps.background_distance / 5, rel=1e-3)
    assert b.steps.eps == pytest.approx(a.steps.eps / 5, rel=1e-3)
    assert groups_of(vocabulary, a) == groups_of(vocabulary, b)
    assert 40 <= len(a.representatives) < 200  # the close pairs merged, the far ones did not


def test_bad_labels_each_get_a_clear_outcome_and_none_is_lost():
    long_a = "a very long description of a tool " * 15
    long_b = long_a + "with a different ending"
    vocabulary = ["", "   ", "\U0001f528", "\U0001f527\U0001f529", "123", "456", long_a, long_b,
                  "caf\u00e9", "cafe\u0301", "helmet"]
    emb = spread(len(vocabulary))
    # what an encoder does to such labels: every emoji, every number and the two truncated long
    # labels embed alike
    for group in ([0, 1, 2, 3], [4, 5], [6, 7]):
        emb[group] = emb[group[0]]
    label_map = build_label_map(vocabulary, emb, np.ones(len(vocabulary), dtype=np.int64))
    canonical = label_map.canonical
    assert set(canonical) == set(vocabulary)
    for label in vocabulary[:8]:
        assert canonical[label] == label, repr(label)
    assert canonical["cafe\u0301"] == canonical["caf\u00e9"]
    assert label_map.steps.kept_apart == {
        "no letter or digit": 4, "digits only": 2, f"longer than {LONG_LABEL} characters": 2}
    # each kept-apart label passes DBSCAN as a cluster of its own: the report's counts add up
    assert label_map.steps.n_dbscan == len(label_map.representatives) == 10


def test_labels_without_a_letter_or_digit_join_only_their_own_spellings():
    """"🔨" and "🔨 " stayed two clusters, two export categories, in a map that the review's own
    check refuses ("read alike")."""
    vocabulary = ["\U0001f528", "\U0001f528 ", " \U0001f528\u200b", "\U0001f528\U0001f528", "#",
                  "# ", "hammer"]
    emb = spread(len(vocabulary))
    emb[:6] = emb[0]  # (an encoder embeds such labels alike)
    label_map = build_label_map(vocabulary, emb, np.array([1, 5, 1, 1, 1, 1, 1]))
    assert groups_of(vocabulary, label_map) == {
        frozenset(["#", "# "]), frozenset(["hammer"]),
        frozenset(["\U0001f528", "\U0001f528 ", " \U0001f528\u200b"]),
        frozenset(["\U0001f528\U0001f528"])}
    # "🔨 " is on most samples, and shows as "🔨": the tidy spelling names the three
    assert label_map.canonical["\U0001f528 "] == "\U0001f528"
    assert label_map.steps.kept_apart == {"no letter or digit": 6}


def test_recommended_clusters_are_independent_of_the_vocabulary_order():
    vocabulary = ["helmet", "Helmets", "helmit", "screwdriver", "Screw driver", "drill", "drills"]
    emb = spread(7)
    for i, j in [(1, 0), (2, 0), (4, 3), (6, 5)]:
        emb[i] = near(emb[j], 0.1, seed=i)
    freq = np.array([5, 2, 1, 4, 1, 3, 3])
    a = build_label_map(vocabulary, emb, freq)
    perm = np.random.default_rng(0).permutation(7)
    b = build_label_map([vocabulary[i] for i in perm], emb[perm], freq[perm])
    assert a.canonical == b.canonical
    assert a.canonical["helmit"] == "helmet" and a.canonical["Screw driver"] == "screwdriver"
    assert a.canonical["drills"] == "drill"  # tie on frequency: the first in string order


def test_recommended_mode_records_what_it_did():
    vocabulary = ["helmet", "Helmets", "bolt"]
    emb = spread(3)
    emb[1] = near(emb[0], 0.1)
    _, clusters, steps = recommended_clusters(vocabulary, emb, np.array([3, 1, 2]), MergeParams())
    assert clusters.tolist() == [0, 0, 1]
    assert steps.lexical_groups.tolist() == [0, 0, 1]
    assert steps.lexical_links["plural"] == 1 and steps.n_dbscan == 2
    assert steps.max_merge_distance == steps.eps == pytest.approx(0.08 * steps.background_distance)


def test_typo_joins_are_listed_farthest_first():
    """The summary shows the first ten typo joins: the ones the encoder puts farthest apart
    are the likeliest to be two words, not a word and its misspelling."""
    vocabulary = ["ambulance", "ambulence", "cabinet", "cabinat", "jacket", "jackat"]
    emb = spread(len(vocabulary), dim=128, seed=2)
    for i, d in ((1, 0.05), (3, 0.4), (5, 0.2)):
        emb[i] = near(emb[i - 1], d, seed=i)
    _, _, steps = recommended_clusters(vocabulary, emb, np.ones(6, dtype=np.int64), MergeParams())
    assert steps.typo_joins == [["cabinet", "cabinat"], ["jacket", "jackat"],
                                ["ambulance", "ambulence"]]


def test_each_label_says_which_step_put_it_with_its_canonical_label():
    vocabulary = ["helmet", "Helmets", "hard hat", "safety helmet", "hat", "cap", "glove"]
    lexical = np.array([0, 0, 1, 2, 3, 4, 5])
    dbscan = np.array([0, 0, 0, 1, 2, 2, -1])  # "safety helmet" in a DBSCAN cluster of its own
    clusters = np.array([0, 0, 0, 0, 1, 1, 2])  # ... merged into "helmet"
    reasons = join_reasons(vocabulary, lexical, dbscan, clusters, ["helmet", "cap", "glove"],
                           image_joins=[["Helmets", "hard hat"]])
    assert reasons == ["", "spelling", "images", "merge", "DBSCAN", "", ""]
    # a run recorded before lexical grouping was: every label its own group
    assert join_reasons(vocabulary, np.zeros(0), dbscan, clusters, ["helmet", "cap", "glove"]
                        )[:4] == ["", "DBSCAN", "DBSCAN", "merge"]


def test_symbol_labels_read_as_their_symbols_invisible_characters_aside():
    from vlsr_core.engine.lexical import by_normal_form

    groups = sorted(by_normal_form(["🦺", "🔨", "🦺\u200b", "hel\u200bmet", "helmet"]).values())
    assert groups == [["hel\u200bmet", "helmet"], ["🔨"], ["🦺", "🦺\u200b"]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_labels_all_alike_merge_at_the_default_scale_not_by_rounding(dtype):
    """A toy vocabulary of synonyms: eps derived from a median distance within float rounding
    (2e-9) kept identical labels apart or not by the sign of a rounding error."""
    same = np.tile(np.array([0.3, 0.5, 0.8], dtype=dtype), (3, 1))
    label_map = build_label_map(["car", "automobile", "auto"], same, [5, 3, 2], min_cluster_size=0)
    assert set(label_map.canonical.values()) == {"car"}
    assert label_map.steps.eps == pytest.approx(0.08)  # the scale itself, as for one label
    close = np.vstack([near(spread(1)[0], 4e-4, seed=s) for s in range(8)])
    words = [f"word {i}" for i in range(8)]
    assert len(set(build_label_map(words, close, [1] * 8, min_cluster_size=0).canonical
                   .values())) == 1


def test_the_thresholds_do_not_follow_how_many_spellings_one_label_has():
    """App audit: 144 casings of "helmet" (one vector to a lowercasing tokenizer) brought the
    median distance between labels, and every threshold derived from it, near 0: "broom" /
    "brooms" and "helmit" / "helmet" were left apart. One label of each reading counts."""
    words = ["helmet", "broom", "drill", "glove", "ladder", "hammer", "sander", "mallet"]
    centres = spread(len(words), seed=11)
    vocabulary, rows = list(words), list(centres)
    for k in range(144):  # HELMET, Helmet, hElmet, ...: one vector
        casing = "".join(c.upper() if k >> i & 1 else c for i, c in enumerate("helmet"))
        if casing not in vocabulary:
            vocabulary.append(casing)
            rows.append(centres[0])
    freq = np.ones(len(vocabulary), dtype=np.int64)
    alone = build_label_map(words, np.stack(centres), np.ones(len(words), dtype=np.int64))
    crowded = build_label_map(vocabulary, np.stack(rows), freq)
    assert crowded.steps.derived_eps == pytest.approx(alone.steps.derived_eps)
    assert crowded.steps.background_distance == alone.steps.background_distance

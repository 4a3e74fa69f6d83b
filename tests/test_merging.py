"""Small-cluster merging (spec step 5) and representatives (step 6) on constructed embeddings."""

import numpy as np
import pytest

from vlsr_core import merge_small_clusters, representatives


def unit(*rows):
    x = np.array(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def angles(*degrees):
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1)


def test_smallest_cluster_merges_into_the_nearest_centroid():
    emb = angles(0, 10, 40, 100)
    clusters = np.array([0, 0, 1, 2])
    freq = np.array([5, 5, 1, 20])
    out = merge_small_clusters(emb, clusters, freq, min_cluster_size=5)
    # cluster 1 (size 1, at 40 deg) is nearer to cluster 0's centroid (5 deg) than to 100 deg
    np.testing.assert_array_equal(out, [0, 0, 0, 1])


def test_merging_is_iterative_and_recomputes_the_centroid():
    # a at 0, b at 50, c at 62 (sizes 10, 3, 4; threshold 5)
    # step 1: b (smallest) -> nearest is c (12 deg) -> bc, size 7, centroid at 56.6 deg.
    # bc is then big enough, so nothing more merges; with a stale centroid of c alone the answer
    # would be the same, so also check the order: b must go to c, not a.
    emb = angles(0, 50, 62)
    out = merge_small_clusters(emb, np.array([0, 1, 2]), np.array([10, 3, 4]), 5)
    np.testing.assert_array_equal(out, [0, 1, 1])
    # with threshold 8, bc (size 7) must then merge into a, using its new centroid
    out = merge_small_clusters(emb, np.array([0, 1, 2]), np.array([10, 3, 4]), 8)
    np.testing.assert_array_equal(out, [0, 0, 0])


def test_centroid_moves_after_merge():
    # x at 0 (size 100), y at 92 (size 100), s1 at 40 (size 1), s2 at 50 (size 2).
    # s1 goes first (smallest): nearest is s2 (10 deg) -> cluster at 45 deg, size 3, nearer x
    # (45 deg) than y (47 deg). A stale s2-only centroid (50 deg) would pick y.
    emb = angles(0, 92, 40, 50)
    out = merge_small_clusters(emb, np.array([0, 1, 2, 3]), np.array([100, 100, 1, 2]), 10)
    np.testing.assert_array_equal(out, [0, 1, 0, 0])


def test_ties_smallest_size_then_lowest_id():
    # two clusters of size 1 at 0 and 30 deg, a big one at 50 deg.
    # id 0 goes first: nearest is id 1 (30 deg, not 50) -> {0, 1} of size 2: done.
    # Had id 1 gone first, it would have joined id 2 (20 deg) and then id 0 would follow.
    emb = angles(0, 30, 50)
    out = merge_small_clusters(emb, np.array([0, 1, 2]), np.array([1, 1, 5]), 2)
    np.testing.assert_array_equal(out, [0, 0, 1])
    # nearest-neighbour tie (id 1 at 30 deg is as far from id 0 as id 2 at -30 deg): lower id
    emb = angles(0, 30, -30)
    out = merge_small_clusters(emb, np.array([0, 1, 2]), np.array([1, 5, 5]), 2)
    np.testing.assert_array_equal(out, [0, 0, 1])


def test_size_by_labels_counts_distinct_labels():
    emb = angles(0, 5, 90)
    clusters = np.array([0, 0, 1])
    freq = np.array([1, 1, 1])
    by_samples = merge_small_clusters(emb, clusters, freq, 2, size_by="samples")
    np.testing.assert_array_equal(by_samples, [0, 0, 0])  # cluster 1 has 1 sample < 2
    freq = np.array([1, 1, 50])
    by_labels = merge_small_clusters(emb, clusters, freq, 2, size_by="labels")
    np.testing.assert_array_equal(by_labels, [0, 0, 0])  # 50 samples but one label
    np.testing.assert_array_equal(merge_small_clusters(emb, clusters, freq, 2), [0, 0, 1])


def test_noise_labels_become_their_own_clusters():
    emb = angles(0, 3, 80, 85)
    out = merge_small_clusters(emb, np.array([0, 0, -1, -1]), np.array([5, 5, 5, 5]), 1)
    np.testing.assert_array_equal(out, [0, 0, 1, 2])


def test_max_merge_distance_leaves_unrelated_small_clusters_alone():
    emb = angles(0, 5, 90)
    clusters = np.array([0, 0, 1])
    freq = np.array([10, 10, 1])
    np.testing.assert_array_equal(merge_small_clusters(emb, clusters, freq, 5), [0, 0, 0])
    out = merge_small_clusters(emb, clusters, freq, 5, max_merge_distance=0.5)
    np.testing.assert_array_equal(out, [0, 0, 1])


def test_representative_linkage_uses_representative_labels():
    # cluster 0: "a" at 0 deg (freq 9) and "b" at 80 deg (freq 1): centroid ~40 deg, rep "a".
    # small cluster "s" at 60 deg; cluster 2 "c" at 110 deg.
    # centroid linkage: s -> cluster 0 (20 deg away); representative linkage: s -> "c"
    # (50 deg) rather than "a" (60 deg).
    emb = angles(0, 80, 60, 110)
    vocab = ["a", "b", "s", "c"]
    clusters = np.array([0, 0, 1, 2])
    freq = np.array([9, 1, 1, 10])
    out = merge_small_clusters(emb, clusters, freq, 5, vocabulary=vocab)
    np.testing.assert_array_equal(out, [0, 0, 0, 1])
    out = merge_small_clusters(emb, clusters, freq, 5, vocabulary=vocab, linkage="representative")
    np.testing.assert_array_equal(out, [0, 0, 1, 1])


def test_nothing_to_merge_and_single_cluster():
    emb = angles(0, 90)
    np.testing.assert_array_equal(merge_small_clusters(emb, [0, 1], [1, 1], 0), [0, 1])
    np.testing.assert_array_equal(merge_small_clusters(emb, [0, 0], [1, 1], 100), [0, 0])
    assert merge_small_clusters(np.empty((0, 2)), [], [], 5).shape == (0,)


def test_rejects_unknown_options():
    with pytest.raises(ValueError, match="size_by"):
        merge_small_clusters(angles(0), [0], [1], 1, size_by="images")
    with pytest.raises(ValueError, match="vocabulary"):
        merge_small_clusters(angles(0), [0], [1], 1, linkage="representative")


def test_mismatched_or_odd_inputs_are_refused_by_name():
    """Each once gave a silent result (float ids truncated, a NaN distance merging nothing) or
    a numpy error that named nothing of the call."""
    emb, ids, freq = angles(0, 10, 90, 100), [0, 0, 1, 1], [1, 1, 1, 1]
    for call, words in (
        (lambda: merge_small_clusters(emb[:3], ids, freq, 2), "3 embeddings and clusters of shape"),
        (lambda: merge_small_clusters(emb, ids, freq[:3], 2), r"frequencies has shape \(3,\)"),
        (lambda: merge_small_clusters(emb, [0.0, 0, 1, 1], freq, 2), "integer ids, got float64"),
        (lambda: merge_small_clusters(emb * np.nan, ids, freq, 2), "NaN or infinite"),
        (lambda: merge_small_clusters(emb * 3, ids, freq, 2), "unit length"),
        (lambda: merge_small_clusters(emb, ids, [1, -1, 1, 1], 2), r"whole numbers >= 0.*\[-1\]"),
        (lambda: merge_small_clusters(emb, ids, 3, 2), "one count per label .a 1-D array., got 3"),
        (lambda: merge_small_clusters(emb, ids, freq, None), "min_cluster_size must be"),
        (lambda: merge_small_clusters(emb, ids, freq, 2, max_merge_distance=float("nan")),
         "max_merge_distance must be"),
        (lambda: representatives(list("abcd"), emb, [0, 0, 1, -1], freq), "without gaps"),
        (lambda: representatives(list("abcd"), emb, [0, 0, 2, 2], freq), "without gaps"),
        (lambda: representatives(list("abc"), emb, ids, freq), "3 vocabulary labels for 4"),
    ):
        with pytest.raises(ValueError, match=words):
            call()


def test_representative_is_most_frequent_then_closest_then_lexical():
    vocab = ["helmet", "Helmets", "hard hat", "helmit"]
    emb = angles(0, 2, 10, 1)
    # most frequent wins outright
    reps = representatives(vocab, emb, np.array([0, 0, 0, 0]), np.array([3, 9, 1, 1]))
    assert [vocab[r] for r in reps] == ["Helmets"]
    # frequency tie between "helmet" (0 deg) and "hard hat" (10 deg): centroid at ~3.25 deg
    reps = representatives(vocab, emb, np.array([0, 0, 0, 0]), np.array([5, 1, 5, 1]))
    assert [vocab[r] for r in reps] == ["helmet"]
    # full tie (same embedding, same frequency): lexical order ("Helmets" < "helmet")
    emb2 = angles(0, 0, 90, 90)
    reps = representatives(vocab, emb2, np.array([0, 0, 1, 1]), np.array([4, 4, 2, 2]))
    assert [vocab[r] for r in reps] == ["Helmets", "hard hat"]


def test_a_two_label_cluster_is_named_alike_whatever_the_rounding_of_its_embeddings():
    """Both labels of a two-label cluster are exactly as close to its centroid: rounding (an
    embedding batch size of 7 rather than 32, in an audit) named the cluster IMG_88 or IMG_85."""
    a, b = angles(5, -5)
    names = set()
    for noise in (-3e-7, -1e-7, 0.0, 1e-7, 3e-7):
        emb = np.stack([a, b + noise * np.array([1.0, -1.0])]).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        for vocab in (["IMG_85", "IMG_88"], ["IMG_88", "IMG_85"]):
            (r,) = representatives(vocab, emb, np.array([0, 0]), np.array([1, 1]))
            names.add(vocab[r])
    assert names == {"IMG_85"}


def _naive_merge(emb, clusters, freq, min_size, vocab, linkage, max_dist):
    """The definition, step by step: one fresh distance row per merge."""
    from vlsr_core.engine.merging import representative_of

    groups = {c: list(np.flatnonzero(clusters == c)) for c in np.unique(clusters)}
    size = {c: int(freq[m].sum()) for c, m in groups.items()}

    def point(c):
        centroid = emb[groups[c]].sum(axis=0, dtype=np.float64)
        centroid = (centroid / np.linalg.norm(centroid)).astype(np.float32)
        if linkage == "centroid":
            return centroid
        return emb[representative_of(groups[c], emb, freq, vocab, centroid)]

    frozen = set()
    while True:
        small = [c for c in sorted(groups) if size[c] < min_size and c not in frozen]
        if not small or len(groups) == 1:
            break
        c = min(small, key=lambda k: (size[k], k))
        others = [k for k in sorted(groups) if k != c]
        d = [1.0 - float(point(k) @ point(c)) for k in others]
        t = others[int(np.argmin(d))]
        if max_dist is not None and min(d) > max_dist:
            frozen.add(c)
            continue
        groups[t] += groups.pop(c)
        size[t] += size.pop(c)
        frozen.discard(t)
    out = np.empty(len(clusters), dtype=np.int64)
    for c, m in groups.items():
        out[m] = c
    return out


@pytest.mark.parametrize("seed", range(12))
def test_batched_distance_rows_give_the_definitions_result(seed, monkeypatch):
    import vlsr_core.engine.merging as merging

    monkeypatch.setattr(merging, "PREFETCH_ROWS", 3)  # many batches and patched rows
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    emb = rng.normal(size=(n, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    clusters = rng.integers(0, max(1, n // 2), n)
    clusters = np.unique(clusters, return_inverse=True)[1]
    freq = rng.integers(1, 5, n)
    vocab = [f"label{i:03d}" for i in range(n)]
    linkage = ["centroid", "representative"][seed % 2]
    max_dist = [None, 0.6][seed % 3 == 0]
    ours = merge_small_clusters(emb, clusters, freq, 8, vocabulary=vocab, linkage=linkage,
                                max_merge_distance=max_dist)
    naive = _naive_merge(emb.astype(np.float32), clusters, freq, 8, vocab, linkage, max_dist)
    # same partition
    assert len(set(zip(ours, naive))) == len(set(ours)) == len(set(naive))

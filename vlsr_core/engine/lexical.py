"""Lexical grouping of label variants: case, Unicode form, punctuation, plurals, spacing, typos.

Crowd-sourced labels carry the same word written many ways ("Helmets", "helmet", "helmit",
"safety-helmet"). A string rule finds these more reliably than any embedding, which often places
a typo far from its word. Four keys, from strict to loose:

1. the *normal form*: Unicode NFKC, case folded, ``&`` read as "and", apostrophes dropped, other
   punctuation, hyphens and underscores as spaces (but "+", "#", "%", "$" kept, and "." or ","
   between digits), whitespace collapsed;
2. the *singular form*: every word of the normal form singularised by English rules;
3. the *compact form*: the singular form without spaces (``screw driver`` = ``screwdriver``);
4. the *word form*: the singular form with a modifier's "-ing" and a long word's final "e"
   dropped (``fishing hook`` = ``fish hook``, ``machining tools`` = ``machine tools``).

Labels with equal normal forms always group. Equal singular, compact or word forms, and forms
one edit apart inside one word (a typo: an insertion, deletion, substitution or swap, in a
word of at least 4 letters, not in its first or last letter, so that "stapler" and "staples" or
"drill" and "grill" are not typos of each other), group only when the two labels' embeddings
are within a guard distance: "glass" and "glasses", or "rivets" and "rivers", stay apart when
the encoder puts them far apart. A plural has a guard of its own, tighter: it changes a word's
tokens less than a spacing or a typo does; a spacing variant one looser: it changes them most.
A typo's guard depends on the length of its word (``TYPO_GUARDS``): the shorter the word, the
more of its one-edit neighbours are real words ("belt" / "bolt", "truck" / "trunk"). Both
tight guards are for spellings the label encoder knows as words: given what its tokenizer
holds whole, a plural of a label with a word it splits, and a short-word typo of which one
spelling is held whole and the other torn into pieces, join within the typo guard of long
words; a typo in a word of ``LONG_TYPO_LENGTH`` letters or more that the tokenizer holds whole
in neither spelling has a guard of its own, looser: the encoder reads both as pieces, which one
edit reshuffles, while two long words one edit apart are rarely two words ("parakeet" /
"parrakeet"). Only words of letters have plurals or typos ("10mm" / "12mm", "2009" / "2019" are not
variants). Two groups holding a pair that a rule refused are
not joined by a looser rule after it. Typos join nearest first, and a misspelling one edit from
two known words ("drial": "drill", "dial") joins the nearer only, unless the two are close
themselves ("jewelry", "jewellery") and no rule refused them as a pair; so does a word form
("electrone": "electrode", "electron"). Labels without a letter or digit are never grouped.
"""

import re
import unicodedata
from itertools import combinations
from typing import NamedTuple

import numpy as np

from .dots import exact_dots

# A typo's guard as a share of the guard, by the length of the shorter spelling of the word it
# changes (at least the first length): one edit from a 4- or 5-letter word is often another real
# word ("belt" / "bolt"), from a longer word less often ("hammer" / "hamper"). docs/quality.md
# measures the bands on six label sets; a looser guard for long words joined "waistband" and
# "wristband".
TYPO_GUARDS = ((4, 0.5), (6, 1.0))
# The word length from which a typo that the tokenizer knows in neither spelling has the
# ``long_typo_guard`` of lexical_groups.
LONG_TYPO_LENGTH = 8

_IRREGULAR = {
    "men": "man", "women": "woman", "children": "child", "feet": "foot", "teeth": "tooth",
    "geese": "goose", "mice": "mouse", "lice": "louse", "people": "person", "oxen": "ox",
    "dice": "die", "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf",
    "loaves": "loaf", "halves": "half", "calves": "calf", "wolves": "wolf", "shelves": "shelf",
    "thieves": "thief", "scarves": "scarf", "hooves": "hoof", "indices": "index",
    "matrices": "matrix", "vertices": "vertex", "axes": "axe", "data": "datum",
    "criteria": "criterion", "phenomena": "phenomenon", "cacti": "cactus", "fungi": "fungus",
}
# words that end in "s" and are not plurals
_SINGULAR_S = re.compile(r"(ss|us|is|ous|ics|ias|os)$")
_WORD_CHAR = re.compile(r"\w")
# nothing on screen: zero-width space, word joiner, BOM, soft hyphen, the direction marks,
# embeddings, overrides and isolates, and the invisible operators; not ZWJ / ZWNJ (scripts and
# emoji use them) nor tag characters (flags). Left in, `\u200fhelmet` was a second category
# beside `helmet`, and a review rename to it was taken.
INVISIBLE = ("\u00ad\u061c\u180e\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061"
             "\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff")
_INVISIBLE = str.maketrans("", "", INVISIBLE)
# "+", "#", "%" and "$" carry meaning ("C++", "C#", "50%") and stay; "." and "," only between
# digits ("1.5 inch")
_SEPARATORS = re.compile(r"[\s\-_‐-―/\\|;:!?()\[\]{}<>\"*=~^`@]+")
_PUNCTUATION = re.compile(r"(?<!\d)[.,]|[.,](?!\d)")


ALIKE = "only case, punctuation, Unicode form or extra spaces differ"  # two labels of one
# normal form, in a message


def _folded(label):
    """The label in NFKC, case folded, without invisible characters."""
    return unicodedata.normalize("NFKC", str(label).translate(_INVISIBLE)).casefold()


def normal_form(label):
    """The label as compared by eye: NFKC, case folded, punctuation and separators as one space,
    invisible characters (:data:`INVISIBLE`) gone.

    "" for a label without a letter or digit (emoji, symbols, whitespace only).
    """
    s = _folded(label).replace("&", " and ").replace("'", "").replace("\u2019", "")
    s = " ".join(w for w in _SEPARATORS.split(_PUNCTUATION.sub(" ", s)) if w)
    return s if _WORD_CHAR.search(s) else ""


def tidy_form(label):
    """The label as it shows on screen: white space runs as one space, none at its ends, no
    invisible characters, in Unicode's composed form (``"wrench "`` and ``wrench`` show alike)."""
    return unicodedata.normalize("NFC", " ".join(str(label).translate(_INVISIBLE).split()))


def read_form(label):
    """What ``label`` reads as: its :func:`normal_form`, or for a label without a letter or
    digit (``🦺``, ``🔨 ``) its symbols, case, spaces and Unicode form aside (not "", which
    every such label would share)."""
    return normal_form(label) or " ".join(_folded(label).split())


def by_normal_form(strings):
    """normal form -> the ``strings`` that read so, in the order given (case, punctuation and
    extra spaces aside: what reads alike to a curator), by :func:`read_form`."""
    spellings = {}
    for s in strings:
        spellings.setdefault(read_form(s), []).append(s)
    return spellings


def singular(word):
    """English singular of one lower-case word by rule (irregular forms, -ies, -ves, -es, -s); a
    word with a digit or a symbol stays as it is ("1990s", "10mm")."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or not _letters(word) or not word.endswith("s") or _SINGULAR_S.search(word):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zzes")):
        return word[:-2]
    if word.endswith("oes") and len(word) > 5:
        return word[:-2]
    return word[:-1]


def _letters(word):
    """The word is made of letters (and the marks that some scripts put on them): no digit or
    symbol."""
    return all(unicodedata.category(c)[0] in "LM" for c in word)


def singular_form(normal):
    return " ".join(singular(w) for w in normal.split())


def _one_edit(a, b):
    """Damerau-Levenshtein distance of a and b is exactly 1 (same first letter assumed)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


class UnionFind:
    """Disjoint sets of 0..n-1; a union keeps the lower root (so ids follow the first member)."""

    def __init__(self, n):
        self.parent = np.arange(n)

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i, j):
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


class LexicalGroups(NamedTuple):
    """What :func:`lexical_groups` found.

    Attributes:
        groups: int ndarray (n,) of group ids numbered by first member.
        kinds: how many labels joined by each rule (``"normal form"``, ``"plural"``,
            ``"spacing"``, ``"typo"``, ``"word form"``), a link counted only when it joined two
            groups.
        typos: the (i, j) label pairs the typo rule joined, the links most worth checking (two
            real words may be one letter apart: "tweezer" and "tweeter").
        refused: the (i, j) label pairs a rule proposed and the guard refused, whose groups
            stayed apart: spellings of one word to the eye, far apart to the encoder ("glass" /
            "glasses", or a misspelling it tears into other tokens); the images can judge them.
    """

    groups: np.ndarray
    kinds: dict
    typos: list
    refused: list


def lexical_groups(vocabulary, embeddings, guard, plural_guard=None, unknown_words=None,
                   spacing_guard=None, long_typo_guard=None):
    """Group label variants (see the module docstring).

    Args:
        vocabulary: n distinct label strings.
        embeddings: float ndarray (n, dim) of unit rows: the guard of the looser keys.
        guard: the largest cosine distance at which a typo or word-form variant joins (and a
            spacing variant, without ``spacing_guard``); a typo's is ``guard`` times the share
            ``TYPO_GUARDS`` gives its word's length.
        plural_guard: the same for a plural (None: ``guard``). A plural changes a word's tokens
            less than the other rules do, so a true plural sits closer to its singular; a
            plural far from it is a word of its own ("glasses", "trunks").
        unknown_words: optional float ndarray (n,): the share of each label's words that the
            label encoder's tokenizer splits into pieces
            (:func:`~vlsr_core.model.tokens.unknown_words`). The tight guards are for two
            spellings the encoder knows as words: with these shares, a plural of a label with
            a word the tokenizer splits ("clothespins") joins within ``guard``, and so does a
            typo in a short word when one spelling is held whole and the other is not (the
            misspelling of a known word: "wagon" / "waggon"). None: every pair as if known.
        spacing_guard: the same for a spacing variant (None: ``guard``). Joining or splitting
            a compound changes its tokens most ("sawmill" is "saw ##mill" to WordPiece), so the
            encoder may put the two spellings farther apart than any other variant.
        long_typo_guard: with ``unknown_words``, the guard of a typo in a word of at least
            ``LONG_TYPO_LENGTH`` letters between two labels whose every word the tokenizer
            splits (None: the typo guard of its length).

    Returns:
        :class:`LexicalGroups`.
    """
    n = len(vocabulary)
    uf = UnionFind(n)
    kinds = {"normal form": 0, "plural": 0, "spacing": 0, "typo": 0, "word form": 0}
    typos, refused = [], []
    apart = {}  # group root -> the roots of groups it holds a refused pair with
    normal = [normal_form(v) for v in vocabulary]
    words = [i for i in range(n) if normal[i]]

    def key_pairs(keys, previous):
        """The pairs of labels of equal keys: of one label of each ``previous`` key, so that a
        pair a stricter rule refused is not joined again by a looser one; every pair of those (a
        few spellings a key), so that two close spellings join even when a third is far."""
        first = {}
        for i in words:
            first.setdefault(keys[i], {}).setdefault(previous[i], i)
        return [p for d in first.values() for p in combinations(d.values(), 2)]

    def link(pairs, kind, guarded, bridges=None, nearest_first=False):
        """Join the pairs within ``guarded`` (a distance, one per pair, or None: unguarded),
        but those ``bridges(ri, rj)`` refuses (two groups whose union it forbids); the nearest
        first if ``nearest_first`` (a misspelling one edit from two words joins the nearer)."""
        if not pairs:
            return
        a, b = _ends(pairs)
        ok = np.ones(a.size, dtype=bool)
        if guarded is not None:
            distance = 1.0 - exact_dots(embeddings, embeddings, a, b)
            ok = distance <= guarded
            if nearest_first:
                order = np.argsort(distance, kind="stable")
                a, b, ok = a[order], b[order], ok[order]
        far = list(zip(a[~ok].tolist(), b[~ok].tolist()))
        if bridges is not None:
            bridges.refuse(far)
        bridged = []
        for k in np.flatnonzero(ok).tolist():
            i, j = int(a[k]), int(b[k])
            ri, rj = uf.find(i), uf.find(j)
            if ri == rj or rj in apart.get(ri, ()):  # a stricter rule refused one of their pairs
                continue
            if bridges is not None and bridges(ri, rj):
                bridged.append((ri, rj))
                continue
            uf.union(ri, rj)
            keep, gone = min(ri, rj), max(ri, rj)
            for r in apart.pop(gone, set()):
                apart[r].discard(gone)
                apart[r].add(keep)
                apart.setdefault(keep, set()).add(r)
            kinds[kind] += 1
            if kind == "typo":
                typos.append((i, j))
        # what this rule refused binds the looser rules after it (within one rule, two close
        # spellings still join through a third that is far from one of them); a bridge refused
        # is no pair far to the encoder, for the images to judge (they would make the bridge)
        refused.extend(far)
        for i, j in [*far, *bridged]:
            ri, rj = uf.find(i), uf.find(j)
            if ri != rj:
                apart.setdefault(ri, set()).add(rj)
                apart.setdefault(rj, set()).add(ri)

    unknown = None if unknown_words is None else np.asarray(unknown_words, dtype=np.float64)
    read = {}  # equal spellings, unguarded; also of labels without a letter or digit ("🔨 ")
    for i, label in enumerate(vocabulary):
        form = normal[i] or read_form(label)  # (read_form only where the normal form is "")
        if form:  # (blank labels: each alone)
            read.setdefault(form, []).append(i)
    link([(same[0], j) for same in read.values() for j in same[1:]], "normal form", None)
    single = {i: singular_form(normal[i]) for i in words}
    plurals = key_pairs(single, previous=normal)
    guards = np.full(len(plurals), guard if plural_guard is None else plural_guard)
    if unknown is not None and plurals:
        a, b = _ends(plurals)
        guards[(unknown[a] > 0) | (unknown[b] > 0)] = guard
    link(plurals, "plural", guards)
    compact = {i: single[i].replace(" ", "") for i in words}
    link(key_pairs(compact, previous=single), "spacing",
         guard if spacing_guard is None else spacing_guard)
    typo_pairs, lengths = _typo_pairs(single, normal)
    guards = guard * _typo_share(lengths)
    if unknown is not None and typo_pairs:
        a, b = _ends(typo_pairs)
        guards[unknown[a] != unknown[b]] = guard
        if long_typo_guard is not None:
            # every word split in both: the one the typo changes is (a share under 1 may come
            # from another word)
            long = (np.asarray(lengths) >= LONG_TYPO_LENGTH) & (unknown[a] == 1) & (unknown[b] == 1)
            guards[long] = long_typo_guard
    bridges = _Bridges(uf, words, compact, unknown, embeddings, guard)
    link(typo_pairs, "typo", guards, bridges, nearest_first=True)
    link(key_pairs({i: _word_form(single[i]) for i in words}, previous=compact), "word form",
         guard, bridges)

    roots = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    refused = sorted({(min(i, j), max(i, j)) for i, j in refused if roots[i] != roots[j]})
    return LexicalGroups(rank[inverse.reshape(-1)], kinds, typos, refused)


class _Bridges:
    """Refuses a typo or word-form link that would put two known words (every word held whole
    by the tokenizer; without ``unknown``, every label) in one group through a spelling near
    each ("drill" - "drial" - "dial", "electrode" - "electrone" - "electron"), unless the two
    lie within ``guard`` of each other ("jewelry" - "jewelery" - "jewellery": one word spelled
    two ways) and are no pair a rule refused ("belt" - "bilt" - "bolt")."""

    def __init__(self, uf, words, compact, unknown, embeddings, guard):
        self.compact, self.embeddings, self.guard, self.refused = compact, embeddings, guard, set()
        self.known = {}  # group root -> {compact form of a known word: a label spelling it}
        for i in words:
            if unknown is None or unknown[i] == 0:
                self.known.setdefault(uf.find(i), {}).setdefault(compact[i], i)

    def refuse(self, pairs):
        """Pairs of labels a rule's guard refused: their spellings never share a group."""
        self.refused.update(frozenset((self.compact[i], self.compact[j])) for i, j in pairs)

    def __call__(self, ri, rj):
        """Whether joining the groups of roots ``ri`` and ``rj`` is refused; if not, their
        known words are the kept root's."""
        a, b = self.known.get(ri, {}), self.known.get(rj, {})
        pairs = [(x, y, i, j) for x, i in a.items() for y, j in b.items() if x != y]
        if any(frozenset((x, y)) in self.refused for x, y, _, _ in pairs):
            return True
        if pairs:
            i, j = _ends([(i, j) for _, _, i, j in pairs])
            if (1.0 - exact_dots(self.embeddings, self.embeddings, i, j) > self.guard).any():
                return True
        self.known.pop(ri, None), self.known.pop(rj, None)
        if a or b:
            self.known[min(ri, rj)] = {**b, **a}  # (the root a union keeps)
        return False


def _ends(pairs):
    """The first and the second labels of (i, j) pairs, as two int arrays."""
    ends = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return ends[:, 0], ends[:, 1]


def _word_form(single):
    """The singular form with modifiers' "-ing" endings and words' final "e" dropped, so that
    "fishing hook" meets "fish hook" and "broadaxe" meets "broadax". The last word (the head
    noun) keeps its "-ing": "camping" is not "camp", nor "lighting" "light"."""
    words = single.split()
    return " ".join(_without_e(_without_ing(w) if k < len(words) - 1 else w)
                    for k, w in enumerate(words))


def _without_ing(word):
    if not word.endswith("ing") or len(word) < 7:
        return word
    word = word[:-3]
    if word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # "cutting" -> "cut"
    return word


def _without_e(word):
    return word[:-1] if word.endswith("e") and len(word) >= 6 else word


def _typo_share(lengths):
    """The share of the guard that ``TYPO_GUARDS`` gives each word length."""
    starts, shares = zip(*TYPO_GUARDS)
    return np.array(shares)[np.searchsorted(starts, np.asarray(lengths, dtype=np.int64),
                                            side="right") - 1]


def _typo_pairs(single, normal):
    """Pairs of labels whose singular forms differ by one edit inside one word (not its first or
    last letter; both spellings at least ``TYPO_GUARDS[0][0]`` letters), found by shared
    deletions, and the length of the shorter spelling of that word, per pair. A singular form
    is represented by a label written so if there is one ("helmet" rather than "Helmets"): the
    pair is judged, and reported, as the two spellings."""
    min_length = TYPO_GUARDS[0][0]
    by_key = {}
    for i, key in single.items():
        if key not in by_key or (normal[i] == key != normal[by_key[key]]):
            by_key[key] = i
    buckets = {}
    for key in by_key:
        words = key.split()
        for j, w in enumerate(words):
            if len(w) < min_length - 1 or not _letters(w):
                continue
            for d in {w[:i] + w[i + 1 :] for i in range(1, len(w) - 1)} | {w}:
                buckets.setdefault((j, " ".join(words[:j] + [d] + words[j + 1 :])), []).append(key)
    pairs = {}
    for keys in buckets.values():
        for x in range(len(keys)):
            for y in range(x + 1, len(keys)):
                a, b = keys[x], keys[y]
                if _one_edit(a, b) and (length := _typo_word_length(a, b)) >= min_length:
                    i, j = by_key[a], by_key[b]
                    pairs[min(i, j), max(i, j)] = length
    pairs = sorted(pairs.items())
    return [p for p, _ in pairs], [length for _, length in pairs]


def _typo_word_length(a, b):
    """Length of the shorter spelling of the one word in which a and b differ."""
    return min(len(x) for wa, wb in zip(a.split(), b.split()) if wa != wb for x in (wa, wb))


def spelling_preference(vocabulary, frequencies, unknown_words=None):
    """A rank per label (lower = the better name for its cluster) that breaks frequency ties
    between written forms by what the vocabulary itself uses, the recommended mode's step 6.

    A label's *support* is the mean, over its words, of the samples of the vocabulary's labels
    that use the word as written (as it shows: :func:`tidy_form`): a typo (``tefrier``), an odd joining
    (``Asiatic_buffalo``), a plural or a casing (``AIRSHIP``) is seldom used beyond its own
    label, the established spelling is (``safety helmet`` and ``bike helmet`` vouch for
    ``helmet``, not for ``helmit``). Of equal support, the label with the smaller share of
    words unknown to the encoder's tokenizer comes first (``balloon`` is one token, ``baloon``
    two), then one written tidily (no extra whitespace, and in Unicode's composed form: ``café``
    before its decomposed twin ``cafe\\u0301``), then a singular, then the one with
    fewer capitals: with no evidence either way, the singular and lower case are the usual form
    of a class name.

    Args:
        vocabulary: list of n_labels strings.
        frequencies: int ndarray of shape (n_labels,): samples per label.
        unknown_words: optional float ndarray of shape (n_labels,): the share of each label's
            words that the label encoder's tokenizer splits into pieces
            (:func:`~vlsr_core.model.tokens.unknown_words`); None: not a criterion.

    Returns:
        int64 ndarray of shape (n_labels,): equal for labels equally preferred.
    """
    frequencies = np.asarray(frequencies, dtype=np.int64)
    shown = [tidy_form(label) for label in vocabulary]
    words = [form.split() for form in shown]  # (café is one word however it is encoded)
    use = {}
    for ws, f in zip(words, frequencies.tolist()):
        for w in set(ws):
            use[w] = use.get(w, 0) + f
    support = np.array([sum(use[w] for w in ws) / len(ws) if ws else 0 for ws in words])
    untidy = np.array([label != form for label, form in zip(vocabulary, shown)])
    normal = [normal_form(label) for label in vocabulary]
    plural = np.array([n != singular_form(n) for n in normal])
    capitals = np.array([sum(c.isupper() for c in label) for label in vocabulary], dtype=np.int64)
    unknown = np.zeros(len(vocabulary)) if unknown_words is None else np.asarray(unknown_words,
                                                                                 dtype=np.float64)
    keys = np.stack([-support, unknown, untidy, plural, capitals], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)

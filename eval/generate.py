"""Seeded noisy multi-label datasets in a CLIP-like embedding space, with ground truth.

Nothing here is CLIP: the vectors are built so that the *statistics* VLSR relies on resemble
CLIP's (the assumptions are listed with :class:`GeneratorConfig` and in ``docs/quality.md``).

Geometry (all vectors unit length, ``dim``-dimensional):

* text: ``t = sqrt(a0) g + beta_l h + sqrt(1 - a0 - beta_l^2) r``. ``g`` is a direction shared by
  all text (CLIP's text embeddings are anisotropic: unrelated phrases have cosine ``a0`` =
  ``text_common``); ``r`` is a label's own unit direction, orthogonal to ``g`` and ``h``. A concept's
  ``r_c`` mixes a family direction and its own, so that concepts of one family (the near misses of
  each other) have text cosine ``text_sibling``. A variant of concept ``c`` with target cosine
  ``tau`` has ``r_v = cos' r_c + sin' w`` (``w`` random, orthogonal), ``cos' = (tau - a0)/(1 - a0)``,
  so its text cosine to the concept's canonical name is exactly ``tau``. ``beta_l`` gives each label
  string a score offset shared by all images (some strings score low everywhere, like the paper's
  "Lathe Information").
* image: ``e = C g + D h + A k r_c + B q_c + M r_m + noise``, re-normalised. ``h`` is a direction
  shared by all images (image-image cosine ~ ``image_common``; ``h`` is orthogonal to ``g``, the
  modality gap), ``q_c`` the concept's image-only direction, ``k`` the image's clarity, ``r_m`` a
  minor object in the scene. ``C`` and ``A`` are set so that an image scores ``image_text_base``
  with an unrelated label and ``image_text_match`` with its concept's canonical name.

Label strings: canonical names ``concept_17``; casing variants (``Concept_17``, ``CONCEPT_17S``)
share the embedding of their lower-case form, as CLIP's tokenizer lower-cases; plurals
(``concept_17s``), misspellings (``concpet_17``), synonyms (``syn_17_b``) and over-specific
labels (``concept_17 with part 3``) get their own embedding near the concept's; wrong labels are
near misses (a sibling concept's name), irrelevant labels (any other concept's name), minor objects
(the name of a concept that is weakly present in the image) and junk labels (``junk_2``: strings
naming no depicted object, used on many images).
"""

from dataclasses import asdict, dataclass, field

import numpy as np

CORRECT_KINDS = ("canonical", "casing", "plural", "misspelling", "synonym", "overspecific")
WRONG_KINDS = ("near_miss", "irrelevant", "minor", "junk")
KINDS = CORRECT_KINDS + WRONG_KINDS


def _default_rates():
    # Relative frequency of each kind among all label occurrences (normalised on use).
    return dict(canonical=0.40, casing=0.08, plural=0.08, misspelling=0.05, synonym=0.06,
                overspecific=0.08, near_miss=0.06, irrelevant=0.08, minor=0.08, junk=0.03)


def _default_variant_cos():
    # (mean, sd) of the text cosine between a variant and its concept's canonical name; casing
    # variants are identical (cosine 1) by construction. Assumptions, not measurements: see
    # docs/quality.md.
    return dict(plural=(0.94, 0.02), misspelling=(0.88, 0.04), synonym=(0.84, 0.05),
                overspecific=(0.86, 0.04))


def _default_pool_sizes():
    # Distinct strings of each variant kind per concept (each occurrence picks one uniformly);
    # casing: at most 4 (Capitalised / UPPER, of the name and of its plural), plural: at most 2.
    return dict(casing=3, plural=1, misspelling=3, synonym=2, overspecific=6)


@dataclass
class GeneratorConfig:
    """Every parameter of :func:`generate` (JSON-serialisable, printed into docs/quality.md).

    Attributes:
        n_concepts: concepts (true classes).
        n_images: images; each depicts one concept.
        dim: embedding dimension (CLIP ViT-L/14: 768; ViT-B/32: 512).
        family_size: concepts per family; siblings in a family are each other's near misses.
        text_common: text cosine of unrelated concepts (CLIP text embeddings are anisotropic;
            unrelated short phrases typically have cosine 0.5-0.8).
        text_sibling: text cosine of two concepts of one family.
        text_dim: dimension of the subspace holding the labels' own text directions (None: all
            of it). CLIP's text embeddings have a low effective dimension; the smaller this, the
            wider the spread of cosines between unrelated labels and the more unrelated pairs
            come within a small eps of each other (see ``realised_statistics``).
        image_text_match: image-text cosine of an image with its concept's canonical name
            (at clarity 1; CLIP ViT-L/14 with raw label strings: roughly 0.25-0.32).
        image_text_base: image-text cosine of an image with an unrelated label (CLIP: ~0.1-0.15).
        image_common: squared norm of the shared image direction, about the image-image cosine
            of images of different concepts.
        image_private: squared norm of the concept's image-only direction (images of one concept
            are more alike than their text would explain).
        clarity_sd: relative sd of how clearly an image shows its concept (clipped to 0.3-1.7).
        minor_strength: a minor object's component, relative to the main concept's.
        label_bias_sd: sd of each label string's score offset, shared by all images.
        concept_zipf: images per concept proportional to rank ** -concept_zipf (ranks shuffled
            against families).
        labels_per_image: mean labels per image (1 + Poisson, capped at max_labels).
        max_labels: most labels on one image.
        n_junk: distinct junk strings.
        rates: relative frequency of each label kind (see ``KINDS``).
        variant_cos: (mean, sd) text cosine of each embedded variant kind to its concept.
        pool_sizes: distinct strings per concept of each variant kind.
    """

    n_concepts: int = 150
    n_images: int = 3000
    dim: int = 512
    family_size: int = 5
    text_common: float = 0.60
    text_sibling: float = 0.80
    text_dim: int = 24
    image_text_match: float = 0.27
    image_text_base: float = 0.13
    image_common: float = 0.40
    image_private: float = 0.25
    clarity_sd: float = 0.15
    minor_strength: float = 0.45
    label_bias_sd: float = 0.02
    concept_zipf: float = 0.8
    labels_per_image: float = 2.2
    max_labels: int = 6
    n_junk: int = 5
    rates: dict = field(default_factory=_default_rates)
    variant_cos: dict = field(default_factory=_default_variant_cos)
    pool_sizes: dict = field(default_factory=_default_pool_sizes)

    def as_dict(self):
        return asdict(self)


@dataclass
class Dataset:
    """A generated dataset: the inputs of ``vlsr_core.sanitize`` and the ground truth.

    Attributes:
        image_embeddings: float32 ndarray of shape (n_images, dim), unit rows.
        image_labels: list of n_images lists of distinct label strings.
        vocabulary: list of the n_labels distinct strings, in order of first appearance.
        vocabulary_embeddings: float32 ndarray of shape (n_labels, dim), unit rows.
        image_concept: int ndarray (n_images,): the concept each image depicts.
        label_correct: per image, bool ndarray aligned with its labels: names the image's concept.
        label_kind: per image, list of the kind (see ``KINDS``) of each of its labels.
        vocabulary_concept: int ndarray (n_labels,): the concept each string names; junk strings
            get ids ``n_concepts, n_concepts + 1, ...`` (concepts no image depicts).
        concept_names: list (n_concepts,) of canonical names.
        config: the :class:`GeneratorConfig`; seed: the seed.
    """

    image_embeddings: np.ndarray
    image_labels: list
    vocabulary: list
    vocabulary_embeddings: np.ndarray
    image_concept: np.ndarray
    label_correct: list
    label_kind: list
    vocabulary_concept: np.ndarray
    concept_names: list
    config: GeneratorConfig
    seed: int


class _Space:
    """The shared directions and the text-embedding constructor."""

    def __init__(self, cfg, rng):
        self.cfg, self.rng, self.dim = cfg, rng, cfg.dim
        k = min(cfg.text_dim or cfg.dim - 2, cfg.dim - 2)
        basis = np.linalg.qr(rng.standard_normal((cfg.dim, 2 + k)))[0].T
        self.g, self.h = basis[0], basis[1]
        self.text_basis = basis[2:]  # (k, dim): where the labels' own directions live
        self.a0 = cfg.text_common
        # the label bias is a component along the image-common direction h: score offset = D * beta
        self.d_img = np.sqrt(cfg.image_common)

    def free(self, n, avoid=(), full=False):
        """n random unit vectors of the text subspace (or of all of the space orthogonal to g and
        h, when ``full``), orthogonal to the given unit vectors."""
        if full:
            v = self.rng.standard_normal((n, self.dim))
            v -= np.outer(v @ self.g, self.g) + np.outer(v @ self.h, self.h)
        else:
            v = self.rng.standard_normal((n, len(self.text_basis))) @ self.text_basis
        for u in avoid:
            v -= np.outer(v @ u, u)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def text(self, r):
        """Text embedding of own direction r (unit, orthogonal to g and h), with a label bias."""
        beta = self.rng.normal(0.0, self.cfg.label_bias_sd) / self.d_img
        t = np.sqrt(self.a0) * self.g + beta * self.h + np.sqrt(max(1 - self.a0 - beta**2, 0)) * r
        return t / np.linalg.norm(t)

    def variant_direction(self, r_c, tau):
        """An own direction whose text cosine to r_c's (bias aside) is tau."""
        c = float(np.clip((tau - self.a0) / (1 - self.a0), -1.0, 1.0))
        w = self.free(1, avoid=(r_c,))[0]
        return c * r_c + np.sqrt(1 - c * c) * w


def _misspell(word, rng):
    """One random edit of the letters of word: swap, drop, double or replace one letter."""
    i = int(rng.integers(1, len(word) - 1))
    op = rng.integers(4)
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:
        return word[:i] + word[i + 1:]
    if op == 2:
        return word[:i] + word[i] + word[i:]
    letters = [ch for ch in "aeiounrst" if ch != word[i]]
    return word[:i] + letters[int(rng.integers(len(letters)))] + word[i + 1:]


def generate(config=None, seed=0):
    """Generate a noisy multi-label dataset with ground truth (see the module docstring).

    Args:
        config: a :class:`GeneratorConfig` (default: the defaults).
        seed: seed of everything random.

    Returns:
        a :class:`Dataset`.

    Example:
        >>> d = generate(GeneratorConfig(n_concepts=20, n_images=300), seed=1)
        >>> d.image_embeddings.shape, len(d.image_labels)
        ((300, 512), 300)
    """
    cfg = config or GeneratorConfig()
    rng = np.random.default_rng(seed)
    space = _Space(cfg, rng)
    n_c = cfg.n_concepts

    # concepts: families, own text directions, image-only directions
    family = np.arange(n_c) // cfg.family_size
    b = (cfg.text_sibling - cfg.text_common) / (1 - cfg.text_common)  # sibling cosine of r
    fam_dir = space.free(int(family.max()) + 1)
    own = space.free(n_c)
    r_concept = np.sqrt(b) * fam_dir[family] + np.sqrt(1 - b) * own
    r_concept /= np.linalg.norm(r_concept, axis=1, keepdims=True)
    q_concept = space.free(n_c, full=True)
    names = [f"concept_{c}" for c in range(n_c)]

    # strings -> (concept, embedding); the embedding is keyed by the lower-case string
    string_concept, embedding_of = {}, {}

    def add_string(s, concept, r):
        string_concept[s] = concept
        key = s.lower()
        if key not in embedding_of:
            embedding_of[key] = space.text(r)
        return s

    for c in range(n_c):
        add_string(names[c], c, r_concept[c])
    junk = [add_string(f"junk_{j}", n_c + j, space.free(1)[0]) for j in range(cfg.n_junk)]

    pools = {}  # (concept, kind) -> list of strings, built on first use

    def variant_pool(c, kind):
        if (c, kind) in pools:
            return pools[(c, kind)]
        size = cfg.pool_sizes.get(kind, 1)
        out = []
        if kind == "casing":
            forms = [names[c]] + variant_pool(c, "plural")
            cased = dict.fromkeys(f(base) for f in (str.capitalize, str.upper) for base in forms)
            out = [add_string(s, c, None) for s in list(cased)[:size]]  # lower-case form's embedding
        else:
            mean, sd = cfg.variant_cos[kind]
            for k in range(size):
                if kind == "plural":
                    s = names[c] + ("s", "es")[min(k, 1)]
                elif kind == "misspelling":
                    s = None
                    for _ in range(50):
                        s = f"{_misspell('concept', rng)}_{c}"
                        if s not in string_concept:
                            break
                elif kind == "synonym":
                    s = f"syn_{c}_{chr(ord('a') + k)}"
                else:  # overspecific
                    s = f"{names[c]} with part {k}"
                if s in string_concept:
                    out.append(s)
                    continue
                tau = float(np.clip(rng.normal(mean, sd), cfg.text_common, 1.0))
                out.append(add_string(s, c, space.variant_direction(r_concept[c], tau)))
        pools[(c, kind)] = out
        return out

    # images: concept by Zipf over shuffled ranks
    weights = np.arange(1, n_c + 1, dtype=float) ** -cfg.concept_zipf
    weights = weights[rng.permutation(n_c)]
    image_concept = rng.choice(n_c, size=cfg.n_images, p=weights / weights.sum())

    kinds = list(KINDS)
    p_kind = np.array([cfg.rates.get(k, 0.0) for k in kinds], dtype=float)
    p_kind /= p_kind.sum()
    n_labels = np.minimum(1 + rng.poisson(cfg.labels_per_image - 1, cfg.n_images), cfg.max_labels)

    siblings_of = [np.flatnonzero(family == f) for f in range(int(family.max()) + 1)]
    image_labels, label_correct, label_kind, minor = [], [], [], []
    for i, c in enumerate(image_concept):
        labels, kinds_i, minors = [], [], []
        for _ in range(50):
            if len(labels) == n_labels[i]:
                break
            kind = kinds[rng.choice(len(kinds), p=p_kind)]
            siblings = siblings_of[family[c]][siblings_of[family[c]] != c]
            if kind == "near_miss" and siblings.size == 0:
                kind = "irrelevant"
            if kind == "canonical":
                s = names[c]
            elif kind in CORRECT_KINDS:
                pool = variant_pool(c, kind)
                s = pool[int(rng.integers(len(pool)))]
            elif kind == "near_miss":
                s = names[int(rng.choice(siblings))]
            elif kind == "irrelevant":
                s = names[int(rng.choice(np.delete(np.arange(n_c), c)))]
            elif kind == "minor":
                m = int(rng.choice(np.delete(np.arange(n_c), c)))
                s = names[m]
            else:  # junk
                s = junk[int(rng.integers(len(junk)))]
            if s in labels:
                continue
            labels.append(s)
            kinds_i.append(kind)
            if kind == "minor":
                minors.append(m)
        image_labels.append(labels)
        label_kind.append(kinds_i)
        label_correct.append(np.array([string_concept[s] == c for s in labels], dtype=bool))
        minor.append(minors)

    # image embeddings
    a_coef = (cfg.image_text_match - cfg.image_text_base) / np.sqrt(1 - cfg.text_common)
    c_coef = cfg.image_text_base / np.sqrt(cfg.text_common)
    b_coef, d_coef = np.sqrt(cfg.image_private), np.sqrt(cfg.image_common)
    rest = 1 - (a_coef**2 + b_coef**2 + c_coef**2 + d_coef**2)
    if rest <= 0:
        raise ValueError("image_common + image_private leave no room for the concept signal")
    clarity = np.clip(rng.normal(1.0, cfg.clarity_sd, cfg.n_images), 0.3, 1.7)
    e = (
        c_coef * space.g
        + d_coef * space.h
        + (a_coef * clarity)[:, None] * r_concept[image_concept]
        + b_coef * q_concept[image_concept]
        + rng.standard_normal((cfg.n_images, cfg.dim)) * np.sqrt(rest / cfg.dim)
    )
    for i, ms in enumerate(minor):
        for m in ms:
            e[i] += cfg.minor_strength * a_coef * r_concept[m]
    e /= np.linalg.norm(e, axis=1, keepdims=True)

    vocabulary = list(dict.fromkeys(s for labels in image_labels for s in labels))
    vocab_emb = np.stack([embedding_of[s.lower()] for s in vocabulary]) if vocabulary else \
        np.zeros((0, cfg.dim))
    return Dataset(
        image_embeddings=e.astype(np.float32),
        image_labels=image_labels,
        vocabulary=vocabulary,
        vocabulary_embeddings=vocab_emb.astype(np.float32),
        image_concept=image_concept.astype(np.int64),
        label_correct=label_correct,
        label_kind=label_kind,
        vocabulary_concept=np.array([string_concept[s] for s in vocabulary], dtype=np.int64),
        concept_names=names,
        config=cfg,
        seed=seed,
    )


def realised_statistics(data):
    """Measured cosines of a generated dataset, to check the generator against its parameters.

    Returns:
        dict of name -> float: mean text cosine of unrelated / sibling concepts' canonical names,
        mean image-text cosine of each label kind, image-image cosine within / across concepts.
    """
    cfg = data.config
    index = {s: j for j, s in enumerate(data.vocabulary)}
    canon = [index[n] for n in data.concept_names if n in index]
    t = data.vocabulary_embeddings[canon]
    conc = data.vocabulary_concept[canon]
    fam = conc // cfg.family_size
    sim = t @ t.T
    off = ~np.eye(len(canon), dtype=bool)
    same_fam = (fam[:, None] == fam[None, :]) & off
    out = {
        "text cos, unrelated concepts: mean": float(sim[off & ~same_fam].mean()),
        "text cos, unrelated concepts: sd": float(sim[off & ~same_fam].std()),
        "text cos, sibling concepts: mean": float(sim[same_fam].mean()) if same_fam.any() else np.nan,
    }
    # every pair of distinct strings naming different concepts (siblings included)
    v = data.vocabulary_embeddings
    all_sim = v @ v.T
    other = data.vocabulary_concept[:, None] != data.vocabulary_concept[None, :]
    upper = np.triu(np.ones_like(other), 1)
    for cos in (0.93, 0.9):
        out[f"string pairs of different concepts with text cos >= {cos}"] = int(
            (other & upper & (all_sim >= cos)).sum())
    same = ~other & upper
    for cos in (0.93,):
        out[f"share of same-concept string pairs with text cos >= {cos}"] = float(
            (all_sim[same] >= cos).mean()) if same.any() else np.nan
    scores = {k: [] for k in KINDS}
    for i, (labels, kinds) in enumerate(zip(data.image_labels, data.label_kind)):
        for s, k in zip(labels, kinds):
            scores[k].append(float(data.image_embeddings[i] @ data.vocabulary_embeddings[index[s]]))
    for k in KINDS:
        if scores[k]:
            out[f"image-label cos, {k}: mean"] = float(np.mean(scores[k]))
            out[f"image-label cos, {k}: sd"] = float(np.std(scores[k]))
    rng = np.random.default_rng(0)
    a, b = rng.integers(len(data.image_concept), size=(2, 4000))
    same = data.image_concept[a] == data.image_concept[b]
    cos = np.einsum("ij,ij->i", data.image_embeddings[a], data.image_embeddings[b])
    keep = a != b
    if (same & keep).any():
        out["image-image cos, same concept"] = float(cos[same & keep].mean())
    out["image-image cos, different concepts"] = float(cos[~same].mean())
    return out

"""Real label sets whose synonym groups are known, for measuring label merging (steps 4-6).

Each loader returns ``(labels, groups)``: distinct label strings and, aligned, the id of the
synonym group each belongs to. Sets:

- ``factorynet``: 523 real Factorynet labels in 370 groups (``factorynet_synonyms_dev.tsv``
  beside the checkout: half of a third party's Wikidata mapping).
- ``imagenet1k``: the WordNet lemmas of the 1,000 ImageNet classes ("tench, Tinca tinca"),
  from the data files of the PyPI wheel ``timm``; lemmas that read alike in two synsets are
  dropped.
  Synonyms here are mostly different words, as in LVIS.
- ``imagenet21k``: the same for a seeded sample of the 21,843 ImageNet-21k synsets, most of
  which have a single lemma (a long tail of labels with no synonym, as in real vocabularies).
- ``lvis``: the 1,203 LVIS v1 categories' synonyms, from the data files of the PyPI wheel
  ``ultralytics`` (lvis.yaml); names that read alike in two categories are dropped.
- ``lvis_misspellings``: those names plus, for each name with a word that people are known to
  misspell, one real misspelling of it from the PyPI wheel ``codespell`` (its dictionary of
  misspellings collected from real text: "ambulence", "avacado").
- ``imagenet1k_variants``: each ImageNet-1k lemma plus seeded case, plural, spacing and typo
  variants of it, as crowd-sourced labels have them.
"""

import random
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "eval" / ".cache"
FACTORYNET = ROOT.parent / "shared" / "data" / "factorynet_synonyms_dev.tsv"
TIMM = "timm==1.0.31"
LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"
IMAGENET1K = "timm/data/_info/imagenet_synsets.txt"
ULTRALYTICS = "ultralytics==8.4.190"
LVIS = "ultralytics/cfg/datasets/lvis.yaml"
CODESPELL = "codespell==2.4.1"
MISSPELLINGS = "codespell_lib/data/dictionary.txt"


def factorynet(path=FACTORYNET):
    """The Factorynet development half: labels and their synonym groups."""
    if not Path(path).is_file():
        sys.exit(f"{path} not found: the Factorynet synonym set is read from "
                 "../shared/data/ beside the checkout (it is not in the repository)")
    labels, groups = [], []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            label, group = line.rstrip("\n").split("\t")
            labels.append(label)
            groups.append(group)
    return labels, groups


def _wheel_file(requirement, name):
    """A data file of a PyPI wheel, downloaded once into eval/.cache (no dependencies)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    pattern = requirement.replace("==", "-") + "-*.whl"  # the pinned version only
    if not sorted(CACHE.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                        str(CACHE), requirement], check=True)
    with zipfile.ZipFile(sorted(CACHE.glob(pattern))[-1]) as z:
        return z.read(name).decode("utf-8")


def _unambiguous(names):
    """(labels, groups) from {group: its names}, without names that read alike in two groups
    ("Cardigan" the dog, "cardigan" the sweater): no label can tell those apart."""
    from vlsr_core.engine.lexical import normal_form

    names = {g: list(dict.fromkeys(ws)) for g, ws in names.items()}
    owners = {}
    for g, ws in names.items():
        for w in ws:
            owners.setdefault(normal_form(w), set()).add(g)
    pairs = [(w, g) for g, ws in names.items() for w in ws if len(owners[normal_form(w)]) == 1]
    return [w for w, _ in pairs], [g for _, g in pairs]


def _lemma_groups(synsets):
    """(labels, groups) of the given ImageNet synsets' WordNet lemmas."""
    lemmas = {}
    for line in _wheel_file(TIMM, LEMMAS).splitlines():
        synset, _, text = line.partition("\t")
        lemmas[synset] = [w.strip() for w in text.split(",") if w.strip()]
    return _unambiguous({s: lemmas[s] for s in synsets})


def imagenet1k():
    return _lemma_groups(_wheel_file(TIMM, IMAGENET1K).split())


def imagenet21k(n_synsets=5000, seed=0):
    synsets = [line.partition("\t")[0] for line in _wheel_file(TIMM, LEMMAS).splitlines()]
    return _lemma_groups(sorted(random.Random(seed).sample(synsets, n_synsets)))


def lvis():
    """The 1,203 LVIS v1 categories with their synonyms ("trash can/garbage can/wastebin"), as
    the ``ultralytics`` wheel ships them (underscores and parentheses already made spaces)."""
    names = {}
    for line in _wheel_file(ULTRALYTICS, LVIS).splitlines():
        key, sep, text = line.strip().partition(": ")
        if sep and key.isdigit() and line.startswith("  "):
            names[int(key)] = [w.strip() for w in text.split("/") if w.strip()]
    return _unambiguous(names)


def lvis_misspellings(seed=0):
    """The LVIS names, each with a real misspelling of one of its words where one is known:
    misspellings that people made, collected by the spell checker ``codespell`` (its wheel's
    dictionary: "ambulence->ambulance"), one drawn per label (seeded)."""
    rng = random.Random(seed)
    known = {}
    for line in _wheel_file(CODESPELL, MISSPELLINGS).splitlines():
        wrong, _, right = line.partition("->")
        for word in right.split(","):
            word = word.strip()
            if word and " " not in word:
                known.setdefault(word.lower(), []).append(wrong.strip())
    labels, groups = lvis()
    out = dict(zip(labels, groups))
    for label, group in zip(labels, groups):
        words = label.split(" ")
        spots = [k for k, w in enumerate(words) if w.lower() in known]
        if spots:
            k = rng.choice(spots)
            variant = " ".join(words[:k] + [rng.choice(known[words[k].lower()])] + words[k + 1 :])
            out.setdefault(variant, group)
    return list(out), list(out.values())


def imagenet1k_variants(seed=0):
    """Each lemma with 0-3 variants: other casing, plural, spacing, one typo (seeded)."""
    rng = random.Random(seed)
    labels, groups = imagenet1k()
    out, out_groups = dict(zip(labels, groups)), None
    for label, group in zip(labels, groups):
        for make in rng.sample(_VARIANTS, rng.randint(0, 3)):
            variant = make(label, rng)
            if variant and variant not in out:
                out[variant] = group
    out_groups = list(out.values())
    return list(out), out_groups


def _case(label, rng):
    return rng.choice([label.title(), label.upper(), label.capitalize(), label.lower()])


def _plural(label, rng):
    if label.endswith(("s", "x", "ch", "sh")):
        return label + "es"
    if label.endswith("y") and label[-2:-1] not in "aeiou":
        return label[:-1] + "ies"
    return label + "s"


def _spacing(label, rng):
    if " " in label:
        return label.replace(" ", rng.choice(["", "-", "_"]), 1)
    return None


def _typo(label, rng):
    if len(label) < 5:
        return None
    i = rng.randrange(1, len(label) - 1)
    kind = rng.choice(["drop", "swap", "double", "replace"])
    if kind == "drop":
        return label[:i] + label[i + 1 :]
    if kind == "swap":
        return label[:i] + label[i + 1] + label[i] + label[i + 2 :]
    if kind == "double":
        return label[:i] + label[i] + label[i:]
    return label[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + label[i + 1 :]


_VARIANTS = [_case, _plural, _spacing, _typo]

SETS = {
    "factorynet": factorynet,
    "imagenet1k": imagenet1k,
    "imagenet21k": imagenet21k,
    "imagenet1k_variants": imagenet1k_variants,
    "lvis": lvis,
    "lvis_misspellings": lvis_misspellings,
}


def available_sets():
    """The (name, loader) of :data:`SETS` that can be read here: the Factorynet set only beside
    the checkout (``../shared/data``, not in the repository); a set left out is said on stderr."""
    for name, load in SETS.items():
        if load is factorynet and not Path(FACTORYNET).is_file():
            print(f"{name}: left out, {FACTORYNET} not found (it is not in the repository)",
                  file=sys.stderr)
            continue
        yield name, load

"""What an encoder's tokenizer knows of a label's words: evidence for naming a cluster.

A tokenizer's vocabulary holds the words common in its training text whole and splits the
others into pieces: ``balloon`` is one token, the misspelling ``baloon`` two. Among spellings that
nothing else tells apart, the one whose words the tokenizer holds whole is the usual one
(:func:`~vlsr_core.engine.lexical.spelling_preference`).
"""

import numpy as np

from ..engine.lexical import normal_form


def text_list(texts, name="texts"):
    """``texts`` as a list of strings, or a TypeError naming ``name``: a string alone would be
    read a character at a time, and ``None`` or NaN embedded as the text "None" or "nan"."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not one string (give [{texts!r}])")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be strings: item {i} is {text!r}")
    return texts


def unknown_words(tokenizer, labels):
    """float32 ndarray (n,): per label, the share of its words (of its normal form: case
    folded, punctuation as spaces) that ``tokenizer`` does not hold whole: split into two pieces
    or more, or read as its unknown token; 0.0 for a label without a word. Each distinct word is
    tokenized once.

    Args:
        tokenizer: a Hugging Face tokenizer (CLIP's byte-pair or a sentence encoder's WordPiece).
        labels: n label strings.
    """
    words = [normal_form(label).split() for label in text_list(labels, "labels")]
    distinct = list(dict.fromkeys(w for ws in words for w in ws))
    ids = tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
    unk = tokenizer.unk_token_id
    split = {w: len(i) > 1 or (unk is not None and unk in i) for w, i in zip(distinct, ids)}
    return np.array([sum(split[w] for w in ws) / len(ws) if ws else 0.0 for ws in words],
                    dtype=np.float32)

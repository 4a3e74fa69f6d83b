"""Words in messages: counts with the noun in the right number (``1 label``, ``2 labels``,
``3 boxes``), and labels on one line, plain or as Markdown code."""

import re


def count(n, noun, plural=None) -> str:
    """``n`` and ``noun``, made plural unless n is 1 (``-es`` after s, x, ch, sh; else ``-s``),
    or ``plural`` as given."""
    if n != 1:
        noun = plural or noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n} {noun}"


def one_line(label, longest=80):
    """A label on one line, as written: line breaks as "⏎", tabs as "⇥", a long one cut to
    its start and its length."""
    label = str(label).replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
    label = label.replace("\t", "⇥")
    return f"{label[:60]}… ({len(label)} characters)" if len(label) > longest else label


def code(label):
    """A label as Markdown code (:func:`one_line`), fenced with more backticks than it holds in
    a row."""
    label = one_line(label)
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", label)), default=0))
    pad = " " if label.startswith("`") or label.endswith("`") else ""
    return f"{fence}{pad}{label}{pad}{fence}"

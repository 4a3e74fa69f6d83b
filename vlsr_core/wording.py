"""Counts in messages, with the noun in the right number: ``1 label``, ``2 labels``, ``3 boxes``."""


def count(n, noun, plural=None) -> str:
    """``n`` and ``noun``, made plural unless n is 1 (``-es`` after s, x, ch, sh; else ``-s``),
    or ``plural`` as given."""
    if n != 1:
        noun = plural or noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n} {noun}"

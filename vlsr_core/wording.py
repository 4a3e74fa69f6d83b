"""Words in messages: counts with the noun in the right number (``1 label``, ``2 labels``,
``3 boxes``), and labels on one line."""


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

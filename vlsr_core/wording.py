"""Words in messages: counts with the noun in the right number (``1 label``, ``2 labels``,
``3 boxes``), and labels on one line, plain or as Markdown code."""

import re
import unicodedata


def count(n, noun, plural=None) -> str:
    """``n`` (with thousands separators, as the App's grid shows counts) and ``noun``, made
    plural unless n is 1 (``-es`` after s, x, ch, sh; else ``-s``), or ``plural`` as given."""
    if n != 1:
        noun = plural or noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n:,} {noun}"


def one_line(label, longest=80):
    """A label on one line, as written: line breaks as "⏎", tabs as "⇥", spaces before or
    after its text as "␣" (``Glove `` beside ``Glove`` would look the same), other characters
    that do not print as their escapes (``drill\\xa0``: a no-break space; but a joiner between
    two emoji), a backslash as two (so that an escape reads as one), and in a label not in
    Unicode's composed form (NFC) its combining marks as escapes (``cafe\\u0301``, or it would
    read as its twin ``café``); one longer than ``longest`` cut to its first half and last
    quarter, and its length."""
    head, tail = _cut(_marked(label), longest)
    return _escaped(head) + tail


def quoted(label, longest=80):
    """A label in a message: on one line (the glyphs of :func:`one_line`, cut as it cuts it),
    quoted, with Python's escapes for what does not print (``'drill\\xa0'``) and
    :func:`one_line`'s for combining marks (``'cafe\\u0301'``)."""
    head, tail = _cut(_marked(label), longest)
    text = repr(head + tail)
    if text.startswith("'") and '"' in text:  # both quotes in it: no backslash before each '
        text = text.replace("\\'", "'")  # (O'Brien's "hot", not O\'Brien\'s "hot")
    return _combining_escaped(text)


def _marked(label):
    """``label`` with the glyphs of :func:`one_line` for line breaks, tabs and edge spaces."""
    label = str(label).replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
    label = label.replace("\t", "⇥")
    text = label.strip(" ")
    if text != label:
        before = len(label) - len(label.lstrip(" "))
        label = "␣" * before + text + "␣" * (len(label) - before - len(text))
    return label


def _cut(text, longest):
    """``text`` and "", or for one longer than ``longest`` its first half and last quarter
    (two long labels often differ at their end) and the words that say its length."""
    if len(text) <= longest:
        return text, ""
    return text[:longest // 2] + "…" + text[-(longest // 4):], f" ({len(text)} characters)"


def _escaped(text):
    """``text`` with its backslashes doubled, what does not print as its escape (but a joiner
    between two emoji) and, out of composed form, its combining marks as escapes."""
    return _combining_escaped("".join(
        "\\\\" if c == "\\" else c if c.isprintable() or _joins_emoji(text, i) else repr(c)[1:-1]
        for i, c in enumerate(text)))


def _joins_emoji(text, i):
    """Whether ``text[i]`` is a zero-width joiner between two emoji (a family, a profession)."""
    return (text[i] == ZWJ and 0 < i < len(text) - 1
            and unicodedata.category(text[i - 1]) in ("So", "Mn")
            and unicodedata.category(text[i + 1]) == "So")


def _combining_escaped(text):
    """``text`` with its combining marks as escapes if it is not in composed form (NFC)."""
    if unicodedata.normalize("NFC", text) == text:
        return text
    return "".join(f"\\u{ord(c):04x}" if unicodedata.combining(c) else c for c in text)


def breakable(text, every=12):
    """``text`` with a zero-width space after each ``every`` characters of a run without
    spaces, where a browser may wrap it: a table cell is as wide as its longest word."""
    return re.sub(rf"\S{{{every}}}(?=\S)", lambda m: m.group() + ZWSP, text)


def folded(text):
    """``text`` as a search compares it: case-folded, its runs of white space (a tab, a line
    break, or the glyphs of :func:`one_line`) one space, without :func:`breakable`'s breaks."""
    text = str(text).replace(ZWSP, "").replace("⇥", " ").replace("⏎", " ").replace("␣", " ")
    return " ".join(text.casefold().split())


ZWSP = "\u200b"
ZWJ = "\u200d"  # joins emoji into one (a family, a profession)
SHORT = 40  # the longest label shown whole in a table cell or a dropdown, beside the grid


def code(label, longest=80):
    """A label as Markdown code (:func:`one_line`), fenced with more backticks than it holds in
    a row."""
    label = one_line(label, longest)
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", label)), default=0))
    pad = " " if label.startswith("`") or label.endswith("`") else ""
    return f"{fence}{pad}{label}{pad}{fence}"


def as_markdown(text):
    """Plain ``text`` (a label, or a message quoting labels) escaped for a view that renders
    Markdown: ``'*helmet*'`` would read as an italic 'helmet', ``[x](y)`` as a link."""
    return re.sub(r"([\\`*_\[\]<>#~|&!])", r"\\\1", str(text))


def plain(markdown):
    """Markdown of a summary as a terminal shows it best: without the marks of bold, italics and
    code (what is inside code is left exactly as it is, in quotes when it holds a comma, so
    that the label `rocket, big` does not read as two in a list)."""
    parts = re.split(r"((`+) ?.*? ?\2)", markdown)  # text, code span, its fence, text, ...
    out = []
    for i in range(0, len(parts), 3):
        out.append(re.sub(r"\*\*|(?<![\w*])\*(?=[^\s*])|(?<=[^\s*])\*(?![\w*])", "", parts[i]))
        if i + 1 < len(parts):
            fence = parts[i + 2]
            inner = re.sub(f"^{fence} ?|(?<=.) ?{fence}$", "", parts[i + 1])
            out.append(f"'{inner}'" if "," in inner else inner)
    return "".join(out)

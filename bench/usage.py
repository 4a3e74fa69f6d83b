"""The command line of a benchmark: its sizes, or its usage on ``-h``, ``--help`` or a bad one."""

import argparse
import sys


def sizes(argv, doc, default=(), flags=(), least=1, most=None):
    """``argv`` as integers of at least ``least``, or ``default`` when it holds none; ``flags``
    are the options the benchmark takes, left out. ``most``: the number of sizes a benchmark of
    fixed sizes takes (more are refused; the last ones not given are ``default``'s). On ``-h``
    or ``--help`` print the benchmark's docstring ``doc`` and exit 0; on another argument, say
    so, print it to stderr and exit 2 (rather than run a benchmark of an hour with its
    defaults, or crash on a size of 0)."""
    if "-h" in argv or "--help" in argv:
        print(doc.strip())
        sys.exit(0)
    argv = [a for a in argv if a not in flags]
    values = []
    for a in argv:
        try:
            values.append(int(a))
        except ValueError:
            _refuse(f"{a!r} is not a size{' nor an option' if a.startswith('-') else ''}", doc)
        if values[-1] < least:
            _refuse(f"{a!r} is not a size: sizes are {least} or more", doc)
    if most is None:
        return values or list(default)
    if len(values) > most:
        took = f"{most} size{'s' * (most != 1)} at most" if most else "no sizes"
        _refuse(f"{' '.join(argv)}: it takes {took}", doc)
    return values + list(default)[len(values):]


def model_size(text):
    """``size=n`` as (size, n), size a random CLIP's (``vlsr_core.model.random_clip.SIZES``) and
    n >= 1: the ``type`` of an argparse argument, which prints the usage and exits 2 on a bad one."""
    from vlsr_core.model.random_clip import SIZES

    size, _, n = text.partition("=")
    if size not in SIZES or not n.isdecimal() or int(n) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not size=n, size one of {', '.join(SIZES)} and n 1 or more")
    return size, int(n)


def _refuse(why, doc):
    """Say ``why`` and print the usage ``doc``, on stderr; exit 2."""
    print(f"{why}\n\n{doc.strip()}", file=sys.stderr)
    sys.exit(2)

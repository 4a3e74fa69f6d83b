"""The command line of a benchmark: its sizes, or its usage on ``-h``, ``--help`` or a bad one."""

import sys


def sizes(argv, doc, default=(), flags=()):
    """``argv`` as integers, or ``default`` when it holds none; ``flags`` are the options the
    benchmark takes, left out. On ``-h`` or ``--help`` print the benchmark's docstring ``doc``
    and exit 0; on another argument, say so, print it to stderr and exit 2 (rather than run a
    benchmark of an hour with its defaults)."""
    if "-h" in argv or "--help" in argv:
        print(doc.strip())
        sys.exit(0)
    argv = [a for a in argv if a not in flags]
    try:
        return [int(a) for a in argv] or list(default)
    except ValueError:
        bad = next(a for a in argv if not a.lstrip("-").isdigit())
        print(f"{bad!r} is not a size{' nor an option' if bad.startswith('-') else ''}\n\n"
              f"{doc.strip()}", file=sys.stderr)
        sys.exit(2)

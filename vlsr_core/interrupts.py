"""Ctrl-C held back while something must not be cut short."""

import signal
import threading
from contextlib import contextmanager


@contextmanager
def uninterrupted():
    """Ctrl-C (SIGINT) held back until the block is done, then raised, in the main thread (the
    CLI) when it is not ignored; the App's operators run elsewhere and cannot be interrupted
    that way."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):  # (nohup: nothing to hold)
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
    if caught:
        raise KeyboardInterrupt

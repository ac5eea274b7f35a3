"""Signals for the lab's scripts: SIGTERM and SIGHUP clean up like Ctrl-C does."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def raise_interrupt(signum: int, _frame: object) -> None:
    """Signal handler: raise KeyboardInterrupt, so ``finally`` blocks remove what was built."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn the clean-up signals into KeyboardInterrupt inside the block; on the way out
    ignore them, so a second Ctrl-C cannot cut the (bounded) clean-up short."""
    for sig in CLEANUP_SIGNALS:
        signal.signal(sig, raise_interrupt)
    try:
        yield
    finally:
        for sig in CLEANUP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

"""Bulk configuration without the cyclic garbage collector in the way.

Loading 100,000 peers allocates millions of container objects that all live on. CPython's
collector runs a full pass each time the survivors grow by a quarter, and every full pass walks
everything alive: about 40% of a bulk load went there, for no garbage (peers hold no cycles;
reference counting frees them). So a UAPI set request runs with the collector paused, and after
a large one the survivors are frozen (``gc.freeze``) into the permanent generation, so later
full passes, which the data path's allocations still trigger, skip the whole table.

The pause nests and is shared by threads: the collector comes back when the last pause ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FREEZE_AFTER_PEERS", "gc_paused", "settle_after"]

FREEZE_AFTER_PEERS = 1_000  # a change naming this many peers freezes what survived it

_lock = threading.Lock()
_depth = 0
_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()


def settle_after(peers: int) -> None:
    """After a change naming ``peers`` peers: freeze the survivors if it was a bulk load."""
    if peers >= FREEZE_AFTER_PEERS:
        gc.freeze()

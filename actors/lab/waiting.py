"""Bounded waits for a condition that another thread or process makes true.

Tests and scripts wait for events (a restart, a counter, a process gone) instead of sleeping a
fixed time, so they pass on a loaded machine and still fail, after a named bound, when the
event never comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .command import LabTimeout

WAIT_S = 10.0  # seconds a wait may take when the caller names no bound
STEP_S = 0.05  # seconds between two looks at the condition


def wait_until(
    predicate: Callable[[], object], timeout: float = WAIT_S, step: float = STEP_S
) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds; it is looked at once more
    after the deadline, so a condition met while the waiter slept still counts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def wait_for(
    predicate: Callable[[], object],
    timeout: float = WAIT_S,
    step: float = STEP_S,
    what: str = "condition",
) -> None:
    """Like :func:`wait_until`, but a condition never met raises :class:`LabTimeout`, so a test
    fails with ``what`` named instead of going on."""
    if not wait_until(predicate, timeout, step):
        raise LabTimeout(f"{what} not reached within {timeout:g} s")

"""When the responder is "under load" and answers handshakes with cookies (whitepaper 5.3).

Cookie mode costs every real peer a round trip and, with wireguard-go, a 5 s retry, so it must
start only when handshakes arrive faster than the stage can work through them, not merely when
many arrive: a valid mac1 needs nothing but our public key, so a cheap trickle of junk must not
switch it on. wireguard-go switches when 128 handshakes wait in its queue (the kernel at 512).

The core is sans-I/O and has no queue of its own to look at, so it keeps a virtual one: every
mac1-valid handshake message adds one unit of work, and the work drains at the rate the stage
can absorb. When arrivals outpace that rate the backlog grows, exactly as a real queue would;
above :data:`UNDER_LOAD_BACKLOG` the device is under load, and stays so for
:data:`UNDER_LOAD_HOLD` after the last overloaded arrival, as wireguard-go's
``UnderLoadAfterTime`` does.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "HANDSHAKE_CAPACITY_PER_SECOND",
    "UNDER_LOAD_BACKLOG",
    "UNDER_LOAD_HOLD",
    "HandshakeLoad",
]

# The handshake messages per second the decrypt stage is credited with absorbing. Measured on a
# 2-core VM shared with other work (tests/test_core_conformance.py::test_handshake_capacity_figure
# prints it): answering one initiation (consume, respond, derive keys) costs 0.67-0.73 ms, so
# 1370-1500/s would take a whole core; refusing valid-mac1 junk costs 0.12-0.15 ms. The stage
# must keep most of its time for transport data, so it is credited with about a third of that.
HANDSHAKE_CAPACITY_PER_SECOND: Final = 500.0
# Handshakes waiting before cookies are required (wireguard-go: QueueHandshakeSize / 8).
UNDER_LOAD_BACKLOG: Final = 128
# Cookie mode lasts this long after the backlog was last above the limit (UnderLoadAfterTime).
UNDER_LOAD_HOLD: Final = 1.0


class HandshakeLoad:
    """A virtual handshake queue, drained at ``capacity`` per second of monotonic time."""

    __slots__ = ("_backlog", "_last", "_under_load_until", "capacity", "threshold")

    def __init__(
        self,
        *,
        capacity: float = HANDSHAKE_CAPACITY_PER_SECOND,
        threshold: int = UNDER_LOAD_BACKLOG,
    ) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self._backlog = 0.0
        self._last = float("-inf")
        self._under_load_until = float("-inf")

    def arrive(self, now: float) -> bool:
        """One more handshake message at ``now``; True if cookies are required for it."""
        elapsed = now - self._last
        if elapsed > 0:
            self._backlog = max(0.0, self._backlog - elapsed * self.capacity)
            self._last = now
        self._backlog += 1
        if self._backlog > self.threshold:
            self._under_load_until = now + UNDER_LOAD_HOLD
        return now < self._under_load_until

    @property
    def backlog(self) -> float:
        return self._backlog

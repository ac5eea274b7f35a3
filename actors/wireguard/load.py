"""When the responder is "under load" and answers handshakes with cookies (whitepaper 5.3).

Cookie mode costs every real peer a round trip and, with wireguard-go, a 5 s retry, so it must
start only when handshakes arrive faster than the stage can work through them, not merely when
many arrive: a valid mac1 needs nothing but our public key, so a cheap trickle of junk must not
switch it on. wireguard-go switches when 128 handshakes wait in its queue (the kernel at 512).

The core is sans-I/O and has no queue of its own to look at, so it keeps a virtual one: every
handshake message the device actually works on (Diffie-Hellman and all) adds one unit, and the
work drains at the rate the stage can absorb. When that work outpaces the rate the backlog
grows, exactly as a real queue would; at :data:`UNDER_LOAD_BACKLOG` the device is under load,
and stays so for :data:`UNDER_LOAD_HOLD` after the backlog was last that long, as wireguard-go's
``UnderLoadAfterTime`` does. Messages answered with a cookie or refused by the rate limiter cost
little and add nothing, so the state ends soon after the work stops, not after a flood of cheap
refusals has drained.
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

    def under_load(self, now: float) -> bool:
        """True if a handshake message arriving at ``now`` must carry a valid cookie."""
        self._drain(now)
        if self._backlog >= self.threshold:
            self._under_load_until = now + UNDER_LOAD_HOLD
        return now < self._under_load_until

    def worked(self, now: float) -> None:
        """A handshake message at ``now`` was worked on (it passed the under-load checks)."""
        self._drain(now)
        self._backlog += 1

    def _drain(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._backlog = max(0.0, self._backlog - elapsed * self.capacity)
            self._last = now

    @property
    def backlog(self) -> float:
        return self._backlog

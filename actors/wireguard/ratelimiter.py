"""Per-source token buckets for handshake initiations under load (whitepaper section 5.3).

Sources are grouped as wireguard-go does: an IPv4 address on its own, an IPv6 address by its /64,
since one host usually owns a whole /64. The table is bounded (RATELIMIT_MAX_SOURCES): when full,
idle buckets are swept, and if every bucket is busy the new source is refused rather than the
table grown: under a spoofed flood, refusing strangers is the safe failure.
"""

from __future__ import annotations

from .constants import RATELIMIT_BURST, RATELIMIT_MAX_SOURCES, RATELIMIT_PACKETS_PER_SECOND

__all__ = ["RateLimiter"]


class RateLimiter:
    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(
        self,
        rate: float = RATELIMIT_PACKETS_PER_SECOND,
        burst: int = RATELIMIT_BURST,
        max_sources: int = RATELIMIT_MAX_SOURCES,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        # source key -> (tokens, time of last refill)
        self._buckets: dict[bytes, tuple[float, float]] = {}

    @staticmethod
    def source_key(address: bytes) -> bytes:
        return address[:8] if len(address) == 16 else address

    def allow(self, address: bytes, now: float) -> bool:
        """Spend one token of ``address``'s bucket; False if it has none left."""
        key = self.source_key(address)
        entry = self._buckets.get(key)
        if entry is None:
            if len(self._buckets) >= self.max_sources:
                self.sweep(now)
                if len(self._buckets) >= self.max_sources:
                    return False
            self._buckets[key] = (self.burst - 1.0, now)
            return True
        tokens, last = entry
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def sweep(self, now: float) -> None:
        """Forget sources whose buckets have refilled: they carry no information any more."""
        full_after = self.burst / self.rate
        stale = [k for k, (_, last) in self._buckets.items() if now - last >= full_after]
        for k in stale:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)

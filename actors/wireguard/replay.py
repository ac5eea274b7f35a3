"""The anti-replay sliding window of RFC 6479, sized for WireGuard.

A ring of 64-bit words: advancing the window clears whole words instead of shifting a long bitmap,
so the cost per packet is constant however far the counter jumps. With RING_WORDS words the window
is (RING_WORDS - 1) * 64 counters: one word is always the partly-filled current one.

The window must only be updated for packets that have already been authenticated; otherwise a
forged counter could slide it forward and make the real packets look old.
"""

from __future__ import annotations

from .constants import REJECT_AFTER_MESSAGES

__all__ = ["WINDOW_SIZE", "ReplayWindow"]

WORD_BITS = 64
RING_WORDS = 128  # a power of two, so the ring index is a mask
# 8128 counters, as wireguard-go (replay.RejectAfterMessages' ringBlocks = 128) and the kernel
# (COUNTER_BITS_TOTAL = 8192, minus one word) keep: reordering costs no more here than there.
WINDOW_SIZE = (RING_WORDS - 1) * WORD_BITS
_RING_MASK = RING_WORDS - 1


class ReplayWindow:
    """Accepts each counter at most once, and none older than WINDOW_SIZE behind the newest."""

    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        self._last = 0
        self._ring = [0] * RING_WORDS

    def check(self, counter: int) -> bool:
        """True if ``counter`` is new and inside the window; does not record it."""
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        if counter > self._last:
            return True
        if self._last - counter > WINDOW_SIZE:
            return False
        word = self._ring[(counter >> 6) & _RING_MASK]
        return not (word >> (counter & 63)) & 1

    @property
    def newest(self) -> int:
        """The highest counter recorded (0 before any): every counter above it, up to the
        limit, passes :meth:`check`, which lets a batch skip the call for in-order packets."""
        return self._last

    def update(self, counter: int) -> bool:
        """Record ``counter``; False if it is a replay, too old, or past the limit."""
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        ring = self._ring
        block = counter >> 6
        last = self._last
        if counter > last:
            current = last >> 6
            if block != current:  # in-order traffic mostly stays in the current word
                advance = block - current
                if advance > RING_WORDS:
                    advance = RING_WORDS
                for i in range(current + 1, current + advance + 1):
                    ring[i & _RING_MASK] = 0
            self._last = counter
        elif last - counter > WINDOW_SIZE:
            return False
        index = block & _RING_MASK
        bit = 1 << (counter & 63)
        word = ring[index]
        if word & bit:
            return False
        ring[index] = word | bit
        return True

    def update_run(self, first: int, last: int) -> None:
        """Record every counter from ``first`` to ``last``: what :meth:`update` on each in turn
        does, for a run the caller knows is new (``newest < first <= last`` and ``last`` below
        the limit), at a cost per ring word instead of per counter."""
        if not self._last < first <= last < REJECT_AFTER_MESSAGES:
            raise ValueError("update_run takes new counters in increasing order")
        ring = self._ring
        old_block = self._last >> 6
        last_block = last >> 6
        oldest_kept = last_block - RING_WORDS + 1  # words before it were lapped by later ones
        for block in range(max(old_block + 1, oldest_kept), last_block + 1):
            ring[block & _RING_MASK] = 0
        low = max(first, oldest_kept << 6)
        for block in range(low >> 6, last_block + 1):
            a = max(low, block << 6)
            z = min(last, (block << 6) | 63)
            ring[block & _RING_MASK] |= ((1 << (z - a + 1)) - 1) << (a & 63)
        self._last = last

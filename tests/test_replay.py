"""The anti-replay window of actors/wireguard/replay.py (RFC 6479 ring of 64-bit words)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.wireguard.constants import REJECT_AFTER_MESSAGES
from actors.wireguard.replay import RING_WORDS, WINDOW_SIZE, WORD_BITS, ReplayWindow

RING_SPAN = RING_WORDS * WORD_BITS


def test_geometry() -> None:
    assert WORD_BITS == 64
    assert RING_WORDS & (RING_WORDS - 1) == 0
    assert WINDOW_SIZE == (RING_WORDS - 1) * WORD_BITS
    assert WINDOW_SIZE >= 2048


def test_in_order_all_accepted_and_duplicates_rejected() -> None:
    w = ReplayWindow()
    n = 3 * RING_SPAN + 17
    for c in range(n):
        assert w.check(c)
        assert w.update(c)
        assert not w.check(c)
        assert not w.update(c)
    # everything still inside the window is a duplicate now
    for c in range(n - WINDOW_SIZE - 1, n):
        assert not w.check(c)
        assert not w.update(c)


def test_first_counter_zero_accepted_once() -> None:
    w = ReplayWindow()
    assert w.update(0)
    assert not w.update(0)
    assert w.update(1)


def test_reordered_within_window_accepted_once() -> None:
    w = ReplayWindow()
    assert w.update(1000)
    order = [999, 500, 1, 0, 998, 64, 63, 65, 700, 2]
    for c in order:
        assert w.update(c), c
    for c in order:
        assert not w.update(c), c
        assert not w.check(c), c
    assert not w.update(1000)
    assert w.update(1001)


def test_reverse_order_whole_window() -> None:
    w = ReplayWindow()
    top = WINDOW_SIZE + 500
    assert w.update(top)
    for c in range(top - 1, top - WINDOW_SIZE - 1, -1):
        assert w.update(c), c
    assert not w.update(top - WINDOW_SIZE - 1)
    for c in range(top - WINDOW_SIZE, top + 1):
        assert not w.check(c), c


@pytest.mark.parametrize("newest", [WINDOW_SIZE, WINDOW_SIZE + 1, 10_000, 10_000 + 63, 2**40 + 5])
def test_window_edge(newest: int) -> None:
    w = ReplayWindow()
    assert w.update(newest)
    assert w.check(newest - WINDOW_SIZE)
    assert not w.check(newest - WINDOW_SIZE - 1)
    assert not w.update(newest - WINDOW_SIZE - 1)
    assert w.update(newest - WINDOW_SIZE)
    assert not w.update(newest - WINDOW_SIZE)


def test_far_jump_ahead() -> None:
    w = ReplayWindow()
    for c in range(100):
        assert w.update(c)
    assert w.update(10**6)
    assert not w.update(50)
    assert not w.update(99)
    assert not w.check(10**6 - WINDOW_SIZE - 1)
    assert w.update(10**6 - 1)
    assert w.update(10**6 - WINDOW_SIZE)
    assert w.update(10**6 + 1)
    assert w.update(10**6 + 1000)
    assert not w.update(10**6)


@pytest.mark.parametrize("jump", [RING_SPAN, RING_SPAN + 1, RING_SPAN - 1, 2 * RING_SPAN, 10**6])
@pytest.mark.parametrize("base", [5, 0, 63, 64, RING_SPAN - 1])
def test_jump_clears_stale_ring_words(base: int, jump: int) -> None:
    w = ReplayWindow()
    # mark a dense run of counters so every word of the ring has bits set
    for c in range(base, base + RING_SPAN):
        assert w.update(c)
    newest = base + RING_SPAN - 1 + jump
    assert w.update(newest)
    # every counter still in the window is new: its ring word was last used an earlier lap
    for c in range(newest - WINDOW_SIZE, newest):
        if c >= base + RING_SPAN:
            assert w.check(c), c
    for c in range(max(base + RING_SPAN, newest - WINDOW_SIZE), newest):
        assert w.update(c), c


def test_one_ring_lap_example() -> None:
    w = ReplayWindow()
    assert w.update(5)
    assert w.update(5 + RING_SPAN)
    assert w.check(5 + RING_SPAN - 10)
    assert w.update(5 + RING_SPAN - 10)
    assert not w.update(5 + RING_SPAN - 10)
    # every counter in the same word as the old counter 5, one lap later, is fresh
    for c in range(RING_SPAN, RING_SPAN + 5):
        assert w.update(c), c


def test_more_than_one_ring_lap() -> None:
    w = ReplayWindow()
    for c in (5, 6, 64, 4000):
        assert w.update(c)
    top = 5 + 3 * RING_SPAN + 100
    assert w.update(top)
    for c in (5, 6, 64, 4000):
        shifted = c + 3 * RING_SPAN
        assert w.check(shifted), shifted
        assert w.update(shifted), shifted
        assert not w.update(shifted)


def test_small_steps_across_ring_wraparound() -> None:
    w = ReplayWindow()
    step = 37
    for c in range(0, 4 * RING_SPAN, step):
        assert w.update(c), c
        if c >= step:
            # the skipped counter just behind is fresh, even if its ring bit was used a lap ago
            assert w.check(c - 1), c
            assert not w.check(c - step), c


@pytest.mark.parametrize("seq", [[63, 64, 65], [65, 64, 63], [64, 63, 65], [127, 128], [128, 127]])
def test_word_boundaries(seq: list[int]) -> None:
    w = ReplayWindow()
    for c in seq:
        assert w.check(c)
        assert w.update(c)
    for c in seq:
        assert not w.update(c)
    # the neighbours are untouched
    for c in (62, 66, 126, 129):
        if c not in seq:
            assert w.check(c), c


def test_last_bit_of_last_ring_word() -> None:
    w = ReplayWindow()
    last = RING_SPAN - 1  # bit 63 of the last ring word
    assert w.update(last)
    assert not w.update(last)
    assert w.check(last - 1)
    assert w.check(last - 64)
    assert w.update(63)  # bit 63 of word 0, exactly WINDOW_SIZE behind
    assert w.update(RING_SPAN - 64)  # bit 0 of the last word
    assert not w.update(RING_SPAN - 64)
    assert w.check(RING_SPAN - 63)
    # the next counter wraps around to word 0 of the ring, which is cleared
    assert w.update(last + 1)
    assert not w.check(63)  # now out of the window
    assert w.update(last + 1 + 64)
    # bit 63 of word 0 was set by counter 63 a lap ago; counter 4096 + 63 must not inherit it
    assert w.check(RING_SPAN + 63)
    assert w.update(RING_SPAN + 63)
    assert not w.update(last)
    assert not w.update(RING_SPAN - 64)
    assert w.update(last - 1)


def test_check_does_not_record() -> None:
    w = ReplayWindow()
    for c in (0, 5, 10_000, 9_999, 10_000 - WINDOW_SIZE):
        assert w.check(c)
        assert w.check(c)
    assert w.update(7)
    # check of a far-future counter does not advance the window
    assert w.check(10**9)
    assert w.update(6)
    assert w.update(0)
    assert not w.check(7)


def test_reject_after_messages() -> None:
    w = ReplayWindow()
    for c in (REJECT_AFTER_MESSAGES, REJECT_AFTER_MESSAGES + 1, 2**64 - 1, 2**64):
        assert not w.check(c)
        assert not w.update(c)
    # a refused counter did not move the window
    assert w.update(0)
    assert w.update(1)
    last_ok = REJECT_AFTER_MESSAGES - 1
    assert w.check(last_ok)
    assert w.update(last_ok)
    assert not w.update(last_ok)
    assert not w.check(REJECT_AFTER_MESSAGES)
    assert not w.update(REJECT_AFTER_MESSAGES)
    assert w.update(last_ok - 1)
    assert w.update(last_ok - WINDOW_SIZE)
    assert not w.update(last_ok - WINDOW_SIZE - 1)


def test_windows_are_independent() -> None:
    a, b = ReplayWindow(), ReplayWindow()
    assert a.update(3)
    assert b.update(3)
    assert a.update(10**6)
    assert b.update(4)


# --- model test --------------------------------------------------------------------------------


class Model:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.max: int | None = None

    def check(self, c: int) -> bool:
        if c >= REJECT_AFTER_MESSAGES or c in self.seen:
            return False
        return self.max is None or c > self.max or self.max - c <= WINDOW_SIZE

    def update(self, c: int) -> bool:
        ok = self.check(c)
        if ok:
            self.seen.add(c)
            self.max = c if self.max is None else max(self.max, c)
        return ok


@st.composite
def counter_sequences(draw: st.DrawFn) -> list[int]:
    """Counters around a moving base: small reorders, near-window edges, ring laps, big jumps."""
    base = draw(
        st.sampled_from([0, 60, RING_SPAN - 5, 2**32, REJECT_AFTER_MESSAGES - 3 * RING_SPAN])
    )
    out: list[int] = []
    for _ in range(draw(st.integers(1, 120))):
        step = draw(
            st.one_of(
                st.integers(-8, 8),
                st.integers(-WINDOW_SIZE - 70, -WINDOW_SIZE + 70),
                st.integers(-70, 70).map(lambda d: d + RING_SPAN),
                st.integers(-70, 70).map(lambda d: d - RING_SPAN),
                st.sampled_from([WORD_BITS, -WORD_BITS, 2 * RING_SPAN, 10**6]),
                st.integers(-3 * RING_SPAN, 3 * RING_SPAN),
            )
        )
        base = max(0, base + step)
        out.append(base)
    return out


@settings(max_examples=300)
@given(counter_sequences())
def test_matches_reference_model(counters: list[int]) -> None:
    w = ReplayWindow()
    m = Model()
    for c in counters:
        assert w.check(c) == m.check(c), c
        assert w.update(c) == m.update(c), c
        assert not w.check(c)


@settings(max_examples=300)
@given(st.lists(st.integers(0, 3 * RING_SPAN), max_size=200))
def test_matches_reference_model_dense(counters: list[int]) -> None:
    w = ReplayWindow()
    m = Model()
    for c in counters:
        assert w.update(c) == m.update(c), c
    # and a final sweep of check() over the whole recent region agrees too
    if m.max is not None:
        for c in range(max(0, m.max - WINDOW_SIZE - 3), m.max + 3):
            assert w.check(c) == m.check(c), c

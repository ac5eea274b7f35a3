"""The bounded two-lane mailbox, and the stage base class built on it."""

from __future__ import annotations

import threading
import time

import pykka
import pytest

from actors.mailbox import CONTROL_CAPACITY, WAKE, Batch, Letter, Mailbox
from actors.stages.base import GetStats, Outlet, PipelineActor

WAIT = 10.0  # seconds any wait in the tests added here may take before the test fails


def test_data_is_bounded_in_packets_and_drop_policy_counts() -> None:
    box = Mailbox("t", capacity=10)
    assert box.push(tuple(range(6)), block=False)
    assert box.push(tuple(range(4)), block=False)
    assert not box.push((1,), block=False)  # full: refused at once, counted
    stats = box.stats()
    assert (stats.depth, stats.high_water, stats.dropped, stats.accepted) == (10, 10, 1, 10)


def test_blocking_push_waits_for_room_then_succeeds() -> None:
    box = Mailbox("t", capacity=4)
    box.push((1, 2, 3, 4))
    done = threading.Event()

    def producer() -> None:
        assert box.push((5, 6), block=True, timeout=5)
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.1)
    assert not done.is_set()  # blocked: that is the backpressure
    assert box.take() == (1, 2, 3, 4)
    assert done.wait(2)
    t.join(2)
    assert box.depth == 2


def test_blocking_push_is_bounded_in_time() -> None:
    box = Mailbox("t", capacity=1)
    box.push((1,))
    start = time.monotonic()
    assert not box.push((2,), block=True, timeout=0.2)
    assert 0.15 < time.monotonic() - start < 2
    assert box.stats().dropped == 1


def test_closed_mailbox_releases_blocked_senders() -> None:
    box = Mailbox("t", capacity=1)
    box.push((1,))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(box.push((2,), block=True, timeout=30)))
    t.start()
    time.sleep(0.05)
    box.close()
    t.join(2)
    assert result == [False]


def test_oversized_batch_enters_an_empty_mailbox() -> None:
    box = Mailbox("t", capacity=3)
    assert box.push(tuple(range(10)), block=False)  # cannot wedge: let in when empty
    assert not box.push((1,), block=False)


def test_control_overtakes_data_and_is_never_refused() -> None:
    box = Mailbox("t", capacity=2)
    box.push((1, 2))
    assert not box.push((3,), block=False)
    box.tell("stop")  # data lane is full; control still goes in
    letter = box.take()
    assert isinstance(letter, Letter) and letter.message == "stop"
    assert box.take() == (1, 2)
    assert box.take() is None
    assert box.empty()


class _Inbox:
    """Stands in for an actor's ref: records what the mailbox sends through pykka."""

    def __init__(self) -> None:
        self.told: list[object] = []

    def tell(self, message: object) -> None:
        self.told.append(message)


def test_one_wake_per_idle_to_busy_transition() -> None:
    box = Mailbox("t", capacity=100)
    ref = _Inbox()
    box.push((1,))
    box.attach(ref)  # type: ignore[arg-type]
    assert ref.told == [WAKE]  # mail was waiting
    box.push((2,))
    box.tell("x")
    assert ref.told == [WAKE]  # still scheduled: no second wake-up
    assert isinstance(box.take(), Letter)
    assert box.take() == (1,)
    assert box.take() == (2,)
    assert box.take() is None  # idle again
    box.push((3,))
    assert ref.told == [WAKE, WAKE]


def test_close_fails_waiting_asks_and_later_ones() -> None:
    box = Mailbox("t")
    result: list[object] = []

    def asker() -> None:
        try:
            box.ask("q", timeout=5)
        except pykka.ActorDeadError as e:
            result.append(e)

    t = threading.Thread(target=asker)
    t.start()
    time.sleep(0.05)
    box.close()
    t.join(2)
    assert len(result) == 1
    with pytest.raises(pykka.ActorDeadError):
        box.ask("q", timeout=1)


def test_wait_drained() -> None:
    box = Mailbox("t", capacity=10)
    box.push((1,))
    assert not box.wait_drained(0.05)
    threading.Timer(0.05, box.take).start()
    assert box.wait_drained(2)


def test_control_capacity_is_named_and_large() -> None:
    assert CONTROL_CAPACITY >= 1000


class Recorder(PipelineActor):
    def __init__(self, mailbox: Mailbox, outlet: Outlet | None = None, fail_on: object = None):
        super().__init__(mailbox)
        self.seen: list[object] = []
        self.outlet = outlet
        self.fail_on = fail_on

    def on_batch(self, batch: Batch) -> None:
        for item in batch.items:
            if item == self.fail_on:
                raise RuntimeError("boom")
        self.seen.extend(batch.items)
        self.stats.packets_in += len(batch)
        if self.outlet is not None:
            self.emit(self.outlet, batch.items, 0, batch.arrival)

    def on_control(self, message: object) -> object:
        if message == "seen":
            return list(self.seen)
        return super().on_control(message)


def test_stage_uses_the_given_mailbox_and_passes_batches_on() -> None:
    first, second = Mailbox("first"), Mailbox("second")
    sink = Recorder.start(second)
    source = Recorder.start(first, Outlet(second))
    try:
        first.push((1, 2, 3))
        first.push((4,))
        deadline = time.monotonic() + 5
        while sink.ask("seen") != [1, 2, 3, 4] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.ask("seen") == [1, 2, 3, 4]
        snap = source.ask(GetStats())
        assert snap.packets_in == 4 and snap.packets_out == 4
        assert snap.mailbox.high_water >= 1
    finally:
        source.stop()
        sink.stop()


def test_a_crashed_stage_leaves_its_queued_data_in_the_mailbox() -> None:
    box = Mailbox("crashy")
    ref = Recorder.start(box, None, "bad")
    box.push(("bad",))
    box.push((7, 8))
    deadline = time.monotonic() + 5
    while ref.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ref.is_alive()
    # pykka would have drained the inbox; ours keeps the batch for the next incarnation
    successor = Recorder.start(box)
    try:
        deadline = time.monotonic() + 5
        while successor.ask("seen") != [7, 8] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert successor.ask("seen") == [7, 8]
    finally:
        successor.stop()


def test_stop_while_data_is_full_is_not_stuck() -> None:
    box = Mailbox("busy", capacity=1)
    ref = Recorder.start(box)
    box.push(tuple(range(5)))
    ref.stop(block=True, timeout=5)
    assert not ref.is_alive()


def test_ask_to_a_dead_stage_raises() -> None:
    box = Mailbox("dead")
    ref = Recorder.start(box)
    ref.stop(block=True, timeout=5)
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("seen", timeout=1)


def test_a_timed_out_ask_withdraws_its_letter() -> None:
    """Asks to a stage that does not answer (stuck, or between two instances) do not pile up
    in its control lane."""
    box = Mailbox("t")
    for _ in range(3):
        with pytest.raises(pykka.Timeout):
            box.ask(GetStats(), timeout=0.01)
    assert box.stats().control_depth == 0
    box.tell("kept")
    with pytest.raises(pykka.Timeout):
        box.ask(GetStats(), timeout=0.01)
    letter = box.take()
    assert isinstance(letter, Letter) and letter.message == "kept" and box.take() is None


def test_a_full_control_lane_holds_its_sender_only_until_a_deadline() -> None:
    box = Mailbox("t")
    for i in range(CONTROL_CAPACITY):
        box.tell(i)
    outcome: list[object] = []

    def ask() -> None:
        try:
            box.ask(GetStats(), timeout=0.2)
        except pykka.Timeout as e:
            outcome.append(e)
        outcome.append(box.tell("late", timeout=0.2))

    sender = threading.Thread(target=ask, daemon=True)
    sender.start()
    sender.join(WAIT)
    assert not sender.is_alive(), "a sender was held by a full control lane"
    assert isinstance(outcome[0], pykka.Timeout) and outcome[1] is False
    assert box.stats().control_refused == 2 and box.stats().control_depth == CONTROL_CAPACITY
    assert isinstance(box.take(), Letter)  # room again: the next tell gets in
    assert box.tell("in time", timeout=0.2)

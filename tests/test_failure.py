"""The failure policy of custom stages, in process: cost, log rate, no-progress escalation,
on_error, and the supervisor's side of it (replacement and escalation)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from custom_stages import FailEvery, FailOnStart
from loguru import logger
from wgsim import udp4

from actors import Packet, Stage
from actors.failure import (
    LOG_INTERVAL,
    NO_PROGRESS_MIN_FAILURES,
    NO_PROGRESS_SECONDS,
    ErrorCarry,
    ErrorPolicy,
)
from actors.lab import wait_for
from actors.mailbox import Mailbox
from actors.stage import wiring
from actors.stages.base import GetStats
from actors.supervisor import (
    AddChild,
    Backoff,
    ChildSpec,
    GetSupervisorStats,
    RemoveChild,
    ReplaceChild,
    RestartBudget,
    Shutdown,
    Supervision,
    Supervisor,
)

WAIT = 10.0
PACKET = udp4("10.0.0.1", "10.0.0.2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


def test_failures_are_logged_once_per_interval_with_the_count(warnings: list[str]) -> None:
    clock = Clock()
    policy = ErrorPolicy("s", clock=clock)
    for i in range(10_000):  # 10,000 errors a second for 10 s, with progress in between
        clock.now += 0.001
        policy.failed(RuntimeError(f"e{i}"))
        policy.progress()
    assert 2 <= len(warnings) <= 1 + int(10 / LOG_INTERVAL)
    assert "RuntimeError('e0')" in warnings[0]
    assert "more stage errors in 5.0 s" in warnings[1] and "RuntimeError(" in warnings[1]
    assert policy.stalled is None  # it passes packets between its failures: kept


def test_no_progress_for_the_named_time_is_stalled() -> None:
    clock = Clock()
    policy = ErrorPolicy("s", clock=clock)
    while clock.now < 1000 + NO_PROGRESS_SECONDS - 0.01:
        policy.failed(RuntimeError("x"))
        assert policy.stalled is None
        clock.now += 0.5
    clock.now = 1000 + NO_PROGRESS_SECONDS
    policy.failed(RuntimeError("x"))
    assert policy.stalled is not None and "let no packet through" in policy.stalled


def test_too_few_failures_are_not_stalled_however_long() -> None:
    clock = Clock()
    policy = ErrorPolicy("s", clock=clock)
    for _ in range(NO_PROGRESS_MIN_FAILURES - 1):
        policy.failed(RuntimeError("x"))
        clock.now += 100
    assert policy.stalled is None


def test_a_carried_streak_continues_in_the_successor(warnings: list[str]) -> None:
    clock = Clock()
    first = ErrorPolicy("s", "restart", clock=clock)
    first.failed(RuntimeError("x"))
    second = ErrorPolicy("s", "restart", first.carry(), clock=clock)
    clock.now += NO_PROGRESS_SECONDS
    second.failed(RuntimeError("x"))
    second.failed(RuntimeError("x"))
    assert second.stalled is not None
    # the successor did not announce its first failure again; it logged at the interval
    assert sum("process raised" in w for w in warnings) == 1
    assert "1 more stage errors in 5.0 s" in warnings[-1]


def test_unknown_on_error_is_refused() -> None:
    with pytest.raises(ValueError, match="on_error"):
        ErrorPolicy("s", "explode")


def test_an_exception_costs_only_the_packet_that_raised() -> None:
    stage = FailEvery(every=25)
    out = stage.process_batch((PACKET,) * 100)
    assert len(out) == 96
    assert stage.stats.drops["stage_error"] == 4


def test_an_overridden_process_batch_costs_its_batch() -> None:
    class BatchBug(Stage):
        def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
            raise KeyError("bug")

    stage = BatchBug()
    assert stage.run_batch((PACKET,) * 7).passed == []
    assert stage.stats.drops["stage_error"] == 7


def test_actors_testing_runs_the_same_policy_as_the_pipeline() -> None:
    """restart replaces at once and carries the streak (one "process raised" line in all);
    a stage that lets nothing through is reported as the pipeline would escalate it."""
    from actors.testing import StageRunner

    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        with StageRunner((FailEvery, {"every": 5}), on_error="restart", batch_size=8) as runner:
            result = runner.feed([PACKET] * 32)
    finally:
        logger.remove(sink)
    # the instance is replaced after each failing batch, so each fresh one fails at packet 5
    assert result.restarts == 4 and result.drops == {"stage_error": 4}
    assert len(result.passed) == 28 and result.stalled is None
    assert sum("process raised" in w for w in warnings) == 1

    class Broken(Stage):
        def process(self, packet: Packet) -> Packet:
            raise ValueError("always")

    with StageRunner(Broken) as runner:
        runner.stages[0].errors.failing_since = time.monotonic() - NO_PROGRESS_SECONDS
        result = runner.feed([PACKET] * NO_PROGRESS_MIN_FAILURES)
    assert result.passed == [] and result.stalled is not None and "let no packet" in result.stalled


def test_on_start_failure_raises_when_called_in_process() -> None:
    with pytest.raises(OSError, match="injected"):
        FailOnStart().on_start()


# -- under a supervisor


class Tree:
    def __init__(self, on_error: str = "drop", every: int = 3, budget: RestartBudget | None = None):
        self.sink = Mailbox("sink", 100_000)
        self.box = Mailbox("fail")
        self.escalated = threading.Event()
        self.reasons: list[str] = []
        self.spec = ChildSpec(
            "fail", self._start(every), self.box, on_error=on_error, budget=budget
        )
        self.sup = Supervisor.start(
            [ChildSpec("sink", self._sink_start, self.sink), self.spec],
            backoff=Backoff(base=0.01, factor=2.0, cap=0.5, jitter=0.0),
            on_escalate=self._escalate,
        )

    def _escalate(self, reason: str) -> None:
        self.reasons.append(reason)
        self.escalated.set()

    def _sink_start(self, box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
        with wiring(box, None, sup, "sink"):
            return Stage.start()

    def _start(self, every: int) -> Any:
        def start(box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
            from actors.stages.base import Outlet

            with wiring(box, Outlet(self.sink), sup, "fail"):
                return FailEvery.start(every=every)

        return start

    def children(self) -> dict[str, Any]:
        return self.sup.ask(GetSupervisorStats(), timeout=WAIT)["children"]

    def close(self) -> None:
        if self.sup.is_alive():
            self.sup.ask(Shutdown(), timeout=WAIT)
            self.sup.stop(block=True, timeout=WAIT)


def test_drop_keeps_the_instance_and_its_state() -> None:
    tree = Tree("drop", every=3)
    try:
        for _ in range(30):
            tree.box.push((PACKET,))
        wait_for(lambda: tree.box.ask(GetStats(), WAIT).packets_in == 30)
        snap = tree.box.ask(GetStats(), WAIT)
        assert dict(snap.drops)["stage_error"] == 10 and dict(snap.extra)["raised"] == 10
        assert tree.children()["fail"]["incarnation"] == 1
        assert not tree.escalated.is_set()
    finally:
        tree.close()


def test_restart_replaces_the_instance_without_losing_queued_packets() -> None:
    tree = Tree("restart", every=3)
    try:
        batch = tuple(udp4("10.0.0.1", "10.0.0.2", dport=1000 + i) for i in range(9))
        for packet in batch:
            tree.box.push((packet,))
        # each instance fails on its 3rd packet and is replaced: 9 packets, 3 instances, 3 lost
        wait_for(lambda: tree.children()["fail"]["replacements"] >= 3)
        wait_for(lambda: tree.sink.ask(GetStats(), WAIT).packets_in == 6)
        assert tree.children()["fail"]["restarts"] == 0  # not counted against the budget
        assert not tree.escalated.is_set()
    finally:
        tree.close()


@pytest.mark.parametrize("on_error", ["drop", "restart"])
def test_a_stage_that_lets_nothing_through_escalates(on_error: str) -> None:
    tree = Tree(on_error, every=1)
    try:
        start = time.monotonic()
        while not tree.escalated.is_set() and time.monotonic() - start < NO_PROGRESS_SECONDS + 5:
            tree.box.push((PACKET,))
            time.sleep(0.02)
        assert tree.escalated.is_set()
        assert "let no packet through" in tree.reasons[0]
        assert time.monotonic() - start < NO_PROGRESS_SECONDS + 2
    finally:
        tree.close()


def test_on_start_failures_follow_budget_and_backoff() -> None:
    box = Mailbox("nostart")
    escalated = threading.Event()
    reasons: list[str] = []

    def start(b: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
        with wiring(b, None, sup, "nostart"):
            return FailOnStart.start()

    def escalate(reason: str) -> None:
        reasons.append(reason)
        escalated.set()

    begin = time.monotonic()
    sup = Supervisor.start(
        [ChildSpec("nostart", start, box)],
        budget=RestartBudget(4, 30.0),
        backoff=Backoff(base=0.05, factor=2.0, cap=1.0, jitter=0.0),
        on_escalate=escalate,
    )
    try:
        assert escalated.wait(WAIT)
        took = time.monotonic() - begin
        assert "more than 4 restarts" in reasons[0] and "OSError" in reasons[0]
        assert took >= 0.05 + 0.1 + 0.2 + 0.4  # the backoff before each of the 4 restarts
    finally:
        if sup.is_alive():
            sup.stop(block=True, timeout=WAIT)


def test_children_can_be_added_replaced_and_removed_in_place() -> None:
    tree = Tree("drop", every=1_000_000)
    try:
        extra = Mailbox("extra")

        def start(box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
            with wiring(box, None, sup, "extra"):
                return Stage.start()

        assert tree.sup.ask(AddChild(ChildSpec("extra", start, extra), "sink"), timeout=WAIT)
        stats = tree.sup.ask(GetSupervisorStats(), timeout=WAIT)
        assert stats["order"] == ["sink", "extra", "fail"]
        tree.box.push((PACKET,) * 5)
        wait_for(lambda: tree.box.ask(GetStats(), WAIT).packets_in == 5)
        assert tree.sup.ask(ReplaceChild(tree.spec), timeout=WAIT)
        assert tree.box.ask(GetStats(), WAIT).packets_in == 0  # a fresh instance
        assert tree.children()["fail"]["incarnation"] == 2
        assert tree.sup.ask(RemoveChild("extra"), timeout=WAIT)
        assert tree.sup.ask(GetSupervisorStats(), timeout=WAIT)["order"] == ["sink", "fail"]
        assert not tree.escalated.is_set()
    finally:
        tree.close()


def test_carry_is_immutable() -> None:
    carry = ErrorCarry(1.0, 2, 3.0, 4, "x")
    with pytest.raises(AttributeError):
        carry.failures = 0  # type: ignore[misc]

"""The failure policy of custom stages, in process: cost, log rate, the failing report, on_error,
the supervisor's side of it (replacement, never escalation on packets), and where a failing
stage shows (status, Prometheus, systemd's STATUS=)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from custom_stages import DropUdpPort, FailEvery, FailOnStart
from loguru import logger
from wgsim import udp4

from actors import Packet, Stage
from actors.failure import LOG_INTERVAL, ON_ERROR, RATE_WINDOW, ErrorCarry, ErrorPolicy
from actors.lab import wait_for
from actors.mailbox import Mailbox
from actors.stages.base import GetStats
from actors.stages.custom import start_stage
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
from actors.testing import run

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
    for i in range(10_000):  # 10,000 errors a second for 10 s
        clock.now += 0.001
        policy.failed(RuntimeError(f"e{i}"))
    assert 2 <= len(warnings) <= 1 + int(10 / LOG_INTERVAL)
    assert "RuntimeError('e0')" in warnings[0]
    assert "more stage errors in 5.0 s" in warnings[1] and "RuntimeError(" in warnings[1]
    assert policy.errors == 10_000


def _raise_here() -> None:
    raise ZeroDivisionError("narrow bug")


RAISE_LINE = _raise_here.__code__.co_firstlineno + 1


def _caught() -> Exception:
    try:
        _raise_here()
    except ZeroDivisionError as e:
        return e
    raise AssertionError("unreachable")


def test_the_first_error_is_logged_with_its_traceback_later_ones_at_debug(
    warnings: list[str],
) -> None:
    """The first error names the file and line that raised; later ones are summarised at the
    interval, and only with -v (debug) do the summaries carry a traceback too."""
    debug: list[str] = []
    sink = logger.add(lambda m: debug.append(str(m)), level="DEBUG", format="{message}")
    try:
        clock = Clock()
        policy = ErrorPolicy("s", clock=clock)
        for _ in range(1000):  # 100 errors a second for 10 s
            clock.now += 0.01
            policy.failed(_caught())
    finally:
        logger.remove(sink)
    where = f'test_failure.py", line {RAISE_LINE}'
    assert where in warnings[0] and "Traceback" in warnings[0]
    assert all(where not in w for w in warnings[1:]) and len(warnings) >= 2
    tracebacks = [d for d in debug if where in d]
    assert 2 <= len(tracebacks) <= 1 + int(10 / LOG_INTERVAL)  # rate-limited with -v too


def test_the_error_rate_and_failing_come_from_the_last_window() -> None:
    clock = Clock()
    policy = ErrorPolicy("s", clock=clock)
    assert not policy.report().failing and policy.report().errors_per_second == 0
    for _ in range(30):  # 3 s at 10 errors a second
        clock.now += 0.1
        policy.failed(RuntimeError("x"))
    report = policy.report()
    assert report.failing and report.errors == 30 and report.last_error == "RuntimeError('x')"
    assert report.errors_per_second == pytest.approx(30 / RATE_WINDOW)
    clock.now += RATE_WINDOW + 1
    later = policy.report()
    assert not later.failing and later.errors_per_second == 0 and later.errors == 30


def test_a_carried_record_continues_in_the_successor(warnings: list[str]) -> None:
    clock = Clock()
    first = ErrorPolicy("s", "restart", clock=clock)
    first.failed(RuntimeError("x"))
    second = ErrorPolicy("s", "restart", first.carry(), clock=clock)
    clock.now += LOG_INTERVAL
    second.failed(RuntimeError("x"))
    assert second.report().errors == 2
    # the successor did not announce its first failure again; it logged at the interval
    assert sum("process raised" in w for w in warnings) == 1
    assert "1 more stage errors in 5.0 s" in warnings[-1]


def test_on_error_is_drop_pass_or_restart() -> None:
    assert ON_ERROR == ("drop", "pass", "restart")
    for choice in ON_ERROR:
        assert ErrorPolicy("s", choice).on_error == choice
    with pytest.raises(ValueError, match="on_error"):
        ErrorPolicy("s", "explode")


def test_pass_sends_the_packet_on_unchanged_and_counts_it() -> None:
    from actors.testing import run

    packets = [udp4("10.0.0.1", "10.0.0.2", dport=1000 + i) for i in range(50)]
    result = run((FailEvery, {"every": 5}), packets, on_error="pass")
    assert result.passed == packets  # fail-open: nothing lost, nothing changed, in order
    assert result.drops == {} and result.stage_error_passed == 10 and len(result.errors) > 0
    failure = result.stats["failevery"]["failure"]
    assert failure["stage_error_passed"] == 10 and failure["errors"] == 10
    assert failure["failing"] and failure["on_error"] == "pass"


def test_pass_with_an_overridden_process_batch_passes_the_batch() -> None:
    class BatchBug(Stage):
        def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
            raise KeyError("bug")

    from actors.testing import run

    result = run(BatchBug, [PACKET] * 7, on_error="pass")
    assert result.passed == [PACKET] * 7 and result.stage_error_passed == 7


def test_an_exception_costs_only_the_packet_that_raised() -> None:
    from actors.testing import run

    result = run((FailEvery, {"every": 25}), [PACKET] * 100)
    assert len(result.passed) == 96 and result.drops == {"stage_error": 4}
    # one exception per failing packet, not one per batch
    assert [str(e) for e in result.errors] == [
        f"injected fault on packet {n}" for n in (25, 50, 75, 100)
    ]


def test_result_errors_are_bounded() -> None:
    from actors.testing import MAX_RESULT_ERRORS, run

    result = run((FailEvery, {"every": 1}), [PACKET] * (MAX_RESULT_ERRORS + 5))
    assert len(result.errors) == MAX_RESULT_ERRORS and result.errors_dropped == 5


def test_an_overridden_process_batch_costs_its_batch() -> None:
    class BatchBug(Stage):
        def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
            raise KeyError("bug")

    from actors.testing import run

    result = run(BatchBug, [PACKET] * 7)
    assert result.passed == [] and result.drops == {"stage_error": 7}
    assert len(result.errors) == 1  # one call raised


def test_actors_testing_runs_the_same_policy_as_the_pipeline() -> None:
    """restart replaces at once, keeps the counters and the error record (one "process
    raised" line in all); a stage that raises on everything is reported failing, never
    judged broken."""
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
    assert len(result.passed) == 28
    assert sum("process raised" in w for w in warnings) == 1
    stats = result.stats["failevery"]
    assert stats["packets_in"] == 32 and stats["failure"]["errors"] == 4

    class Broken(Stage):
        def process(self, packet: Packet) -> Packet:
            raise ValueError("always")

    with StageRunner(Broken) as runner:
        for _ in range(20):
            result = runner.feed([PACKET] * 64)
        assert result.passed == [] and result.drops == {"stage_error": 64}
    failure = result.stats["broken"]["failure"]
    assert failure["failing"] and failure["errors"] == 20 * 64
    assert failure["last_error"] == "ValueError('always')"


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
        self.spec = ChildSpec("fail", self._start(every, on_error), self.box, budget=budget)
        self.sup = Supervisor.start(
            [ChildSpec("sink", self._sink_start, self.sink), self.spec],
            backoff=Backoff(base=0.01, factor=2.0, cap=0.5, jitter=0.0),
            on_escalate=self._escalate,
        )

    def _escalate(self, reason: str) -> None:
        self.reasons.append(reason)
        self.escalated.set()

    def _sink_start(self, box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
        return start_stage(Stage, box, None, supervision=sup)

    def _start(self, every: int, on_error: str) -> Any:
        def start(box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
            from actors.stages.base import Outlet

            return start_stage(
                FailEvery,
                box,
                Outlet(self.sink),
                options={"every": every},
                supervision=sup,
                on_error=on_error,
            )

        return start

    def replacements(self) -> int:
        return int(dict(self.box.ask(GetStats(), WAIT).extra)["replacements"])

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
        wait_for(lambda: tree.replacements() >= 3)
        wait_for(lambda: tree.sink.ask(GetStats(), WAIT).packets_in == 6)
        assert tree.children()["fail"]["restarts"] == 0  # not counted against the budget
        assert not tree.escalated.is_set()
    finally:
        tree.close()


OLD_ESCALATION = 5.0  # seconds of nothing but errors after which the process used to end
STEADY_ERRORS = 60  # errors, one every STEADY_GAP at least: longer than that window
STEADY_GAP = 0.1


def errors_of(box: Mailbox) -> int:
    """The stage's stage_error drops (-1 while it has no running instance)."""
    try:
        return int(dict(box.ask(GetStats(), WAIT).drops).get("stage_error", 0))
    except (pykka.Timeout, pykka.ActorDeadError):  # between two instances (restart)
        return -1


@pytest.mark.parametrize("on_error", ["drop", "restart"])
def test_a_stage_that_raises_on_every_packet_never_escalates(on_error: str) -> None:
    """A steady trickle of packets that all raise, for longer than the old no-progress
    window: the stage stays (or is replaced), is reported failing, and nothing escalates."""
    tree = Tree(on_error, every=1)
    try:
        start = time.monotonic()
        for n in range(1, STEADY_ERRORS + 1):
            tree.box.push((PACKET,))
            wait_for(lambda n=n: tree.escalated.is_set() or errors_of(tree.box) >= n)
            assert not tree.escalated.is_set(), tree.reasons
            time.sleep(STEADY_GAP)
        assert time.monotonic() - start > OLD_ESCALATION  # the premise, not a timing check
        assert not tree.escalated.is_set(), tree.reasons
        failure = tree.box.ask(GetStats(), WAIT).failure
        assert failure.failing and failure.errors == STEADY_ERRORS
        assert "injected fault" in failure.last_error
        child = tree.children()["fail"]
        assert child["alive"] and child["restarts"] == 0 and child["incarnation"] == 1
        replaced = STEADY_ERRORS if on_error == "restart" else 0
        assert tree.replacements() == replaced
    finally:
        tree.close()


def test_restart_keeps_the_counters() -> None:
    tree = Tree("restart", every=3)
    try:
        for i in range(9):
            tree.box.push((udp4("10.0.0.1", "10.0.0.2", dport=1000 + i),))
        wait_for(lambda: tree.replacements() >= 3)
        wait_for(lambda: errors_of(tree.box) == 3)
        snap = tree.box.ask(GetStats(), WAIT)
        assert snap.packets_in == 9 and snap.packets_out == 6
        assert dict(snap.drops)["stage_error"] == 3
    finally:
        tree.close()


def test_on_start_failures_follow_budget_and_backoff() -> None:
    box = Mailbox("nostart")
    escalated = threading.Event()
    reasons: list[str] = []

    def start(b: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
        return start_stage(FailOnStart, b, None, supervision=sup)

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
            return start_stage(Stage, box, None, supervision=sup)

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
    carry = ErrorPolicy("s").carry()
    assert isinstance(carry, ErrorCarry)
    with pytest.raises(AttributeError):
        carry.errors = 0  # type: ignore[misc]


# -- where a failing stage shows


def failing_stages() -> dict[str, Any]:
    """`status --json`'s stages part, with one custom stage failing and one fine."""
    from actors.testing import StageRunner

    with StageRunner((FailEvery, {"every": 2}), (DropUdpPort, {"port": 9})) as runner:
        runner.feed([PACKET] * 10)
        stats = runner.stats()
    return {"mode": "actors", "stages": list(stats.values())}


def test_status_names_the_failing_stage_with_its_rate_and_last_error() -> None:
    from actors.status import render

    stages = failing_stages()
    info: dict[str, Any] = {
        "interface": "wg0",
        "public_key": None,
        "listen_port": 1,
        "fwmark": 0,
        "peers": [],
        "stages": stages,
    }
    text = render(info)
    failing = [line for line in text.splitlines() if "failing" in line]
    assert len(failing) == 1, text
    assert "failevery" in failing[0] and "errors/s" in failing[0] and "5 in all" in failing[0]
    assert "RuntimeError('injected fault on packet 10')" in failing[0]
    by_name = {s["name"]: s for s in stages["stages"]}
    assert by_name["failevery"]["failure"]["failing"] is True
    assert by_name["dropudpport"]["failure"]["failing"] is False


def test_prometheus_has_a_failing_gauge_per_custom_stage() -> None:
    from actors.metrics import render

    text = render([{"interface": "wg0", "peers": [], "stages": failing_stages()}])
    assert "# TYPE wgactors_stage_failing gauge" in text
    assert 'wgactors_stage_failing{interface="wg0",stage="failevery"} 1' in text
    assert 'wgactors_stage_failing{interface="wg0",stage="dropudpport"} 0' in text
    assert 'wgactors_stage_errors_total{interface="wg0",stage="failevery"} 5' in text


def test_systemd_status_names_the_failing_stage_when_that_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import socket

    from actors import sdnotify, settings

    stages = failing_stages()
    answers = [json.dumps({"stages": []}), json.dumps(stages), json.dumps(stages)]
    clock = Clock()
    health = sdnotify.FailingStages("wg0 up", answers.pop, interval=1.0, clock=clock)
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        monkeypatch.setenv(settings.NOTIFY_SOCKET.name, path)
        health.poll()  # too soon: nothing asked
        assert len(answers) == 3
        sent = []
        for _ in range(3):
            clock.now += 1.0
            health.poll()
            with contextlib.suppress(BlockingIOError):
                sent.append(sock.recv(4096).decode())
    assert len(sent) == 2, sent  # failing, then fine again; the repeat is not sent again
    assert sent[0].startswith("STATUS=wg0 up; stage failing: failevery (") and "errors/s" in sent[0]
    assert "RuntimeError(" in sent[0] and "dropudpport" not in sent[0]
    assert sent[1] == "STATUS=wg0 up"


class _ReprFails(Exception):
    """An exception whose repr raises (e.g. ``ValueError(obj)`` with a broken ``__repr__``)."""

    def __repr__(self) -> str:
        raise _ReprFails()


class ReprBomb(Stage):
    """Raises such an exception on UDP, passes everything else."""

    def process(self, packet: Packet) -> Packet:
        if packet.protocol == 17:
            raise _ReprFails()
        return packet


def test_an_exception_whose_repr_raises_costs_its_packet_in_process() -> None:
    result = run(ReprBomb, [PACKET] * 4)
    assert result.drops == Counter({"stage_error": 4})
    assert result.stats["reprbomb"]["failure"]["last_error"] == "<_ReprFails: its repr failed>"


@pytest.mark.parametrize("on_error", ["drop", "pass"])
def test_an_exception_whose_repr_raises_never_escalates(on_error: str) -> None:
    """Its repr runs in the handler of its own failure: that must not turn one bad packet into
    a crash loop and exit status 3."""

    class BombTree(Tree):
        def _start(self, every: int, on_error: str) -> Any:
            def start(box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
                from actors.stages.base import Outlet

                return start_stage(
                    ReprBomb, box, Outlet(self.sink), supervision=sup, on_error=on_error
                )

            return start

    tree = BombTree(on_error)
    try:
        for _ in range(12):  # twice the default restart budget
            tree.box.push((PACKET,))
        wait_for(lambda: failures_of(tree.box) >= 12)
        assert not tree.escalated.is_set(), tree.reasons
        assert tree.children()["fail"]["restarts"] == 0
    finally:
        tree.close()


def failures_of(box: Mailbox) -> int:
    """Packets that raised in the stage, dropped or passed on (-1 between instances)."""
    try:
        report = box.ask(GetStats(), WAIT).failure
    except (pykka.Timeout, pykka.ActorDeadError):
        return -1
    return report.errors if report is not None else 0


class ExitsOnUdp(Stage):
    """Raises SystemExit on UDP (a stage calling sys.exit, or a library that does)."""

    def process(self, packet: Packet) -> Packet:
        if packet.protocol == 17:
            raise SystemExit(3)
        return packet


def test_a_stage_raising_systemexit_costs_its_packet_not_the_daemon() -> None:
    """Not an Exception, but a peer's packet must not end the data plane through it."""
    result = run(ExitsOnUdp, [PACKET] * 3)
    assert result.drops == Counter({"stage_error": 3})
    assert [type(e) for e in result.errors] == [SystemExit] * 3

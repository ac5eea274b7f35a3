"""The supervisor, in process: strategies, restart types, budget, backoff, no loss, no leaks."""

from __future__ import annotations

import gc
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka
import pytest

from actors.faults import Fault
from actors.lab import wait_for
from actors.mailbox import Batch, Mailbox
from actors.stages.base import Outlet, PipelineActor
from actors.supervisor import (
    Backoff,
    ChildSpec,
    GetSupervisorStats,
    Restart,
    RestartBudget,
    Shutdown,
    StopChildren,
    Strategy,
    Supervision,
    Supervisor,
)

FAST = Backoff(base=0.001, factor=1.0, cap=0.001, jitter=0.0)
ROOMY = RestartBudget(50, 10.0)
WAIT = 10.0  # seconds any wait in this file may take before the test fails


class Worker(PipelineActor):
    """Forwards items to a sink; 'crash' raises, 'quit' stops normally, 'hang' blocks."""

    def __init__(self, mailbox: Mailbox, sink: Mailbox | None, **kw: Any) -> None:
        super().__init__(mailbox, **kw)
        self.sink = Outlet(sink) if sink is not None else None

    def on_batch(self, batch: Batch) -> None:
        for item in batch.items:
            if item == "crash":
                raise RuntimeError("crash requested")
            if item == "quit":
                self.stop()
                return
            if item == "hang":
                time.sleep(5)
        if self.sink is not None:
            self.emit(self.sink, tuple((self.name, i) for i in batch.items), 0, batch.arrival)


def drain(box: Mailbox, count: int) -> list[Any]:
    """Take ``count`` items from a sink mailbox (bounded wait)."""
    out: list[Any] = []
    deadline = time.monotonic() + WAIT
    while len(out) < count and time.monotonic() < deadline:
        item = box.take()
        if item is None:
            time.sleep(0.0002)
            continue
        out.extend(item)
    return out


class Tree:
    """A supervisor over workers a, b, c forwarding to one sink."""

    def __init__(
        self,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        *,
        restart: dict[str, Restart] | None = None,
        budget: RestartBudget = ROOMY,
        backoff: Backoff = FAST,
        faults: Callable[[str, int], Fault | None] = lambda name, inc: None,
        names: tuple[str, ...] = ("a", "b", "c"),
    ) -> None:
        self.sink = Mailbox("sink", 100_000)
        self.boxes = {n: Mailbox(n) for n in names}
        self.escalations: list[str] = []
        self.escalated = threading.Event()

        def starter(name: str) -> Callable[[Mailbox, Supervision], pykka.ActorRef[Any]]:
            return lambda box, sup: Worker.start(
                box, self.sink, supervision=sup, fault=faults(name, sup.incarnation)
            )

        specs = [
            ChildSpec(n, starter(n), self.boxes[n], (restart or {}).get(n, Restart.PERMANENT))
            for n in names
        ]

        def escalate(reason: str) -> None:
            self.escalations.append(reason)
            self.escalated.set()

        self.sup = Supervisor.start(
            specs, strategy=strategy, budget=budget, backoff=backoff, on_escalate=escalate, seed=7
        )

    def stats(self) -> dict[str, Any]:
        return self.sup.ask(GetSupervisorStats(), timeout=WAIT)["children"]

    def incarnations(self) -> dict[str, int]:
        return {n: c["incarnation"] for n, c in self.stats().items()}

    def close(self) -> None:
        if self.sup.is_alive():
            self.sup.ask(Shutdown(), timeout=WAIT)
            self.sup.stop(block=True, timeout=WAIT)


@pytest.fixture
def tree_factory():
    trees: list[Tree] = []

    def make(*args: Any, **kw: Any) -> Tree:
        tree = Tree(*args, **kw)
        trees.append(tree)
        return tree

    yield make
    for tree in trees:
        tree.close()


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, {"a": 1, "b": 2, "c": 1}),
        (Strategy.REST_FOR_ONE, {"a": 1, "b": 2, "c": 2}),
        (Strategy.ONE_FOR_ALL, {"a": 2, "b": 2, "c": 2}),
    ],
)
def test_strategy_decides_which_siblings_restart(tree_factory, strategy, expected) -> None:
    tree = tree_factory(strategy)
    wait_for(lambda: tree.incarnations() == {"a": 1, "b": 1, "c": 1})
    tree.boxes["b"].push(("crash",))
    wait_for(lambda: tree.incarnations() == expected)
    # every child works afterwards
    for name in ("a", "b", "c"):
        tree.boxes[name].push((f"hello-{name}",))
    got = drain(tree.sink, 3)
    assert sorted(got) == [("a", "hello-a"), ("b", "hello-b"), ("c", "hello-c")]


def test_restart_types(tree_factory) -> None:
    tree = tree_factory(
        restart={"a": Restart.TEMPORARY, "b": Restart.TRANSIENT, "c": Restart.PERMANENT}
    )
    wait_for(lambda: tree.incarnations() == {"a": 1, "b": 1, "c": 1})
    tree.boxes["a"].push(("crash",))  # temporary: never restarted
    tree.boxes["b"].push(("quit",))  # transient, normal exit: not restarted
    tree.boxes["c"].push(("quit",))  # permanent, normal exit: restarted
    wait_for(lambda: tree.incarnations()["c"] == 2)
    wait_for(lambda: not tree.stats()["a"]["alive"] and not tree.stats()["b"]["alive"])
    time.sleep(0.1)  # a wrong restart of a or b would come within the first backoff
    stats = tree.stats()
    assert (stats["a"]["alive"], stats["a"]["incarnation"]) == (False, 1)
    assert (stats["b"]["alive"], stats["b"]["incarnation"]) == (False, 1)
    assert stats["c"]["alive"]


def test_transient_child_is_restarted_after_a_crash(tree_factory) -> None:
    tree = tree_factory(restart={"b": Restart.TRANSIENT})
    tree.boxes["b"].push(("crash",))
    wait_for(lambda: tree.incarnations()["b"] == 2)
    assert tree.stats()["b"]["last_error"].startswith("RuntimeError")


def test_no_queued_packet_is_lost_only_the_batch_that_raised(tree_factory) -> None:
    tree = tree_factory()
    box = tree.boxes["b"]
    items = [f"p{i}" for i in range(200)]
    for i, item in enumerate(items):
        box.push(("crash",) if i == 50 else (item,))
    got = drain(tree.sink, 199)
    assert [i for _, i in got] == items[:50] + items[51:]  # in order, only p50 missing
    stats = tree.stats()["b"]
    assert stats["restarts"] == 1 and stats["lost"] == 1


def test_a_stage_that_fails_every_batch_escalates_within_seconds(tree_factory) -> None:
    tree = tree_factory(
        budget=RestartBudget(5, 10.0),
        backoff=Backoff(),  # the real defaults
        faults=lambda name, inc: Fault(every=1) if name == "b" else None,
    )
    start = time.monotonic()
    for _ in range(20):
        tree.boxes["b"].push(("x",))
    assert tree.escalated.wait(WAIT)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    assert "stage b failed" in tree.escalations[0] and "more than 5 restarts" in tree.escalations[0]
    wait_for(lambda: not any(c["alive"] for c in tree.stats().values()))


def test_backoff_grows_exponentially(tree_factory) -> None:
    tree = tree_factory(
        names=("a",), backoff=Backoff(base=0.05, factor=2.0, cap=1.0, jitter=0.0, reset_after=60)
    )
    times = []
    for k in range(4):
        tree.boxes["a"].push(("crash",))
        wait_for(lambda k=k: tree.incarnations()["a"] == k + 2)
        times.append(time.monotonic())
    # each restart waited at least base * 2**k after the crash that caused it
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[1] > 0.09 and gaps[2] > 0.19


def test_on_start_failure_is_seen_and_restarted(tree_factory) -> None:
    tree = tree_factory(faults=lambda name, inc: Fault(on_start=True) if inc == 1 else None)
    wait_for(lambda: all(i == 2 for i in tree.incarnations().values()))
    assert all("on_start" in c["last_error"] for c in tree.stats().values())
    tree.boxes["a"].push(("ok",))
    assert drain(tree.sink, 1) == [("a", "ok")]


def test_on_start_failing_forever_escalates(tree_factory) -> None:
    tree = tree_factory(
        names=("a",),
        budget=RestartBudget(3, 10.0),
        faults=lambda name, inc: Fault(on_start=True),
    )
    assert tree.escalated.wait(WAIT)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_hundred_restarts_leak_no_threads_fds_or_memory(tree_factory) -> None:
    import logging
    import tracemalloc

    from loguru import logger

    # The test runner keeps every captured log record; silence logging so that only what the
    # supervisor and the stages retain is measured.
    logging.disable(logging.CRITICAL)
    logger.disable("actors")
    try:
        _hundred_restarts(tree_factory, tracemalloc)
    finally:
        logging.disable(logging.NOTSET)
        logger.enable("actors")


def _hundred_restarts(tree_factory, tracemalloc) -> None:  # type: ignore[no-untyped-def]
    tree = tree_factory(names=("a",), budget=RestartBudget(1000, 1.0))
    tree.boxes["a"].push(("warm",))
    drain(tree.sink, 1)
    gc.collect()
    threads, fds = threading.active_count(), _fds()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    latencies = []
    for k in range(100):
        t0 = time.monotonic()
        tree.boxes["a"].push(("crash",))
        tree.boxes["a"].push((k,))
        assert drain(tree.sink, 1) == [("a", k)]
        latencies.append(time.monotonic() - t0)
    assert tree.incarnations()["a"] == 101
    wait_for(lambda: threading.active_count() <= threads)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert threading.active_count() <= threads
    assert _fds() <= fds
    assert growth < 64 * 1024, f"{growth} bytes retained after 100 restarts"
    latencies.sort()
    print(
        f"restart latency: median {latencies[50] * 1000:.1f} ms, p95 {latencies[95] * 1000:.1f} ms"
    )


def test_shutdown_is_bounded_with_a_stuck_stage(tree_factory) -> None:
    tree = tree_factory(names=("a", "b"))
    tree.boxes["b"].push(("hang",))
    time.sleep(0.05)
    start = time.monotonic()
    tree.sup.ask(Shutdown(timeout=0.3), timeout=WAIT)
    assert time.monotonic() - start < 2.0
    assert not tree.stats()["a"]["alive"]


def test_stopping_children_ends_at_the_deadline_however_many_are_stuck(
    tree_factory: Callable[..., Tree],
) -> None:
    """Each child's own shutdown timeout (3 s) would add up; a deadline bounds them together."""
    tree = tree_factory(names=("a", "b", "c"))
    for name in ("a", "b", "c"):
        tree.boxes[name].push(("hang",))
    wait_for(lambda: all(tree.boxes[n].stats().depth == 0 for n in ("a", "b", "c")))
    bound = 2.5  # well under the 9 s of three timeouts, well over the 0.3 s asked for
    tree.sup.ask(StopChildren(("a",), deadline=time.monotonic() + 0.2), timeout=bound)
    tree.sup.ask(Shutdown(deadline=time.monotonic() + 0.3), timeout=bound)


def test_shutdown_stops_children_in_reverse_start_order(
    tree_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tree_factory()
    stopped: list[str] = []
    detach = Mailbox.detach

    def recording(box: Mailbox, ref: Any) -> None:
        # A stopping stage detaches from its mailbox on its own thread, in the order the
        # supervisor stops them (watchers woken by actor_stopped may run in any order).
        stopped.append(box.name)
        detach(box, ref)

    monkeypatch.setattr(Mailbox, "detach", recording)
    tree.sup.ask(Shutdown(), timeout=WAIT)
    assert stopped == ["c", "b", "a"]


def test_a_childs_own_budget_replaces_the_shared_one() -> None:
    """A child with a budget of its own is judged by it alone: the shared budget (1 restart)
    neither ends it nor is used up by it."""
    sink = Mailbox("sink", 100_000)
    boxes = {n: Mailbox(n) for n in ("own", "shared")}
    reasons: list[str] = []
    escalated = threading.Event()

    def starter(name: str) -> Callable[[Mailbox, Supervision], pykka.ActorRef[Any]]:
        return lambda box, sup: Worker.start(box, sink, supervision=sup)

    def escalate(reason: str) -> None:
        reasons.append(reason)
        escalated.set()

    sup = Supervisor.start(
        [
            ChildSpec("own", starter("own"), boxes["own"], budget=RestartBudget(20, 10.0)),
            ChildSpec("shared", starter("shared"), boxes["shared"]),
        ],
        budget=RestartBudget(1, 10.0),
        backoff=FAST,
        on_escalate=escalate,
    )

    def incarnation(name: str) -> int:
        child = sup.ask(GetSupervisorStats(), timeout=WAIT)["children"][name]
        return int(child["incarnation"]) if child["alive"] else 0

    try:
        for n in range(1, 6):
            boxes["own"].push(("crash",))
            wait_for(lambda n=n: escalated.is_set() or incarnation("own") == n + 1)
            assert not escalated.is_set(), reasons
        boxes["shared"].push(("crash",))  # the shared budget's one restart is still there
        wait_for(lambda: escalated.is_set() or incarnation("shared") == 2)
        assert not escalated.is_set(), reasons
        boxes["shared"].push(("crash",))
        assert escalated.wait(WAIT) and "stage shared" in reasons[0]
    finally:
        if sup.is_alive():
            sup.ask(Shutdown(), timeout=WAIT)
            sup.stop(block=True, timeout=WAIT)


@pytest.mark.parametrize("restart", [Restart.TRANSIENT, Restart.PERMANENT])
def test_an_on_start_from_a_mixin_is_a_reported_failure(restart: Restart) -> None:
    """The on_start a stage inherits from a mixin is guarded like its own: the failure is
    reported, so even a transient child is restarted (an unreported exit is a normal one)."""
    from custom_stages import MixinStart

    from actors.stages.custom import start_stage

    box = Mailbox("mixin")

    def start(b: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
        return start_stage(MixinStart, b, None, supervision=sup)

    sup = Supervisor.start([ChildSpec("mixin", start, box, restart)], backoff=FAST, budget=ROOMY)
    try:

        def child() -> dict[str, Any]:
            children: dict[str, Any] = sup.ask(GetSupervisorStats(), timeout=WAIT)["children"]
            return children["mixin"]  # type: ignore[no-any-return]

        wait_for(lambda: child()["incarnation"] == 2 and child()["alive"])
        assert "mixin on_start failed" in str(child()["last_error"])
    finally:
        sup.ask(Shutdown(), timeout=WAIT)
        sup.stop(block=True, timeout=WAIT)

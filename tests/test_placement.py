"""CPU placement (actors.placement): parsing, the choice of a CPU, and confining threads."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from actors.placement import (
    ALL,
    COMPACT,
    KERNEL_PLACEMENT,
    REBALANCE_INTERVAL,
    WATCHER_NAME,
    CpuTimes,
    Placement,
    batch_policy_for,
    confine_own,
    listed_cpus,
    own_threads,
    parse_cpu_list,
    parse_proc_stat,
    pick_cpu,
    worker_cpu,
)
from actors.stages.base import name_os_thread

STAT = """cpu  300 0 100 1600 0 0 0 0 0 0
cpu0 100 0 50 850 0 0 0 0 0 0
cpu1 200 0 50 740 10 0 0 0 0 0
intr 12345
ctxt 999
"""


def test_parse_proc_stat_reads_the_per_cpu_lines() -> None:
    times = parse_proc_stat(STAT)
    assert times == {0: CpuTimes(150, 1000), 1: CpuTimes(250, 1000)}  # iowait counts as idle


@pytest.mark.parametrize(
    ("text", "cpus"), [("1", {1}), ("0,2-3", {0, 2, 3}), (" 4 - 5 ".replace(" ", ""), {4, 5})]
)
def test_parse_cpu_list(text: str, cpus: set[int]) -> None:
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "1,", "3-1", "-2", "1-", "99999", "compact"])
def test_parse_cpu_list_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="CPU"):
        parse_cpu_list(text)


def _times(**busy: float) -> tuple[dict[int, CpuTimes], dict[int, CpuTimes]]:
    """Two readings 1000 jiffies apart with each CPU busy for the given share."""
    before = {int(k[3:]): CpuTimes(0, 0) for k in busy}
    after = {int(k[3:]): CpuTimes(round(v * 1000), 1000) for k, v in busy.items()}
    return before, after


def test_pick_cpu_without_a_current_cpu_takes_the_idlest() -> None:
    before, after = _times(cpu0=0.9, cpu1=0.2, cpu2=0.5)
    assert pick_cpu({0, 1, 2}, before, after, None, 0) == 1


def test_pick_cpu_subtracts_our_own_work_from_our_cpu() -> None:
    # cpu0 is 90% busy, 80 points of it ours: 10% other work, less than cpu1's 30%.
    before, after = _times(cpu0=0.9, cpu1=0.3)
    assert pick_cpu({0, 1}, before, after, 0, 800) == 0
    # Without subtracting, the busier-looking CPU would be left.
    assert pick_cpu({0, 1}, before, after, 0, 0) == 1


def test_pick_cpu_moves_only_past_the_margin() -> None:
    before, after = _times(cpu0=0.5, cpu1=0.3)
    assert pick_cpu({0, 1}, before, after, 0, 0, margin=0.25) == 0  # 20 points: stay
    assert pick_cpu({0, 1}, before, after, 0, 0, margin=0.1) == 1


def test_pick_cpu_keeps_to_the_allowed_cpus_and_needs_readings() -> None:
    before, after = _times(cpu0=0.9, cpu1=0.0)
    assert pick_cpu({0}, before, after, 0, 0) == 0
    assert pick_cpu({7}, before, after, None, 0) is None
    # a CPU on which no time passed (offline) is not taken for an idle one
    stalled = {**after, 1: before[1]}
    assert pick_cpu({0, 1}, before, stalled, 0, 0) == 0


def test_check_names_the_problem() -> None:
    assert Placement.check("") is None
    assert Placement.check(COMPACT) is None
    assert Placement.check(ALL) is None
    assert "not a CPU list such as 1 or 0,2-3, compact or all" in (Placement.check("fast") or "")
    allowed = os.sched_getaffinity(0)
    outside = max(allowed) + 1
    assert f"none of CPUs {outside}" in (Placement.check(str(outside)) or "")
    assert Placement.check(str(min(allowed))) is None


def test_worker_cpu_gives_each_worker_its_own_until_they_wrap() -> None:
    assert [worker_cpu({5, 1, 3}, (i, 3)) for i in range(3)] == [1, 3, 5]
    assert [worker_cpu({0, 1}, (i, 4)) for i in range(4)] == [0, 1, 0, 1]  # more workers
    assert worker_cpu(set(), (0, 2)) is None


def test_listed_cpus_keeps_to_the_allowed_ones_and_splits_them_among_workers() -> None:
    assert listed_cpus({0, 2, 3}, {0, 1, 2}, (0, 1)) == {0, 2}  # the only worker: all of them
    assert listed_cpus({0, 2, 3}, {0, 1, 2}, (1, 2)) == {2}
    assert listed_cpus({0, 2, 3}, {0, 1, 2}, (2, 3)) == {0}  # wraps over the usable ones
    assert listed_cpus({3}, {0, 1}, (0, 2)) == frozenset()


@pytest.mark.parametrize(
    ("policy", "becomes"),
    [
        (os.SCHED_OTHER, os.SCHED_BATCH),
        (os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.SCHED_BATCH | os.SCHED_RESET_ON_FORK),
        (os.SCHED_BATCH, None),
        (os.SCHED_IDLE, None),
        (os.SCHED_FIFO, None),
        (os.SCHED_RR | os.SCHED_RESET_ON_FORK, None),
        (6, None),  # SCHED_DEADLINE, which Python does not name
        (7, None),  # SCHED_EXT
    ],
)
def test_only_the_normal_policy_is_changed(policy: int, becomes: int | None) -> None:
    assert batch_policy_for(policy) == becomes


def test_own_threads_are_the_main_thread_and_those_named_by_the_daemon() -> None:
    threads = [(10, "wga:decrypt"), (11, "Thread-3 (poll)"), (12, "MainThread"), (None, "wga:x")]
    assert own_threads(threads, 12) == {10, 12}
    assert own_threads([(13, "mywga:thing"), (14, "wga:placement")], None) == {14}


def test_a_worker_must_be_one_of_its_count() -> None:
    for worker in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="worker"):
            Placement(COMPACT, worker=worker)


WAIT = 10 * REBALANCE_INTERVAL  # bound on waiting for the watcher's next passes
JOIN_TIMEOUT = 10.0  # seconds for a test's own thread to end once told to


def _wait_until(predicate: Callable[[], object], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


T = TypeVar("T")


def _per_thread(read: Callable[[int], T]) -> dict[int, T]:
    """What ``read`` says of each thread of this process, by thread id."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            out[int(task.name)] = read(int(task.name))
    return out


def _affinity(tid: int) -> frozenset[int]:
    return frozenset(os.sched_getaffinity(tid))


def _comm(tid: int) -> str:
    return Path(f"/proc/self/task/{tid}/comm").read_text().strip()


def _watcher(placement: Placement) -> int:
    assert placement._thread is not None and placement._thread.native_id is not None
    return placement._thread.native_id


def _taskset(cpus: set[int] | frozenset[int]) -> None:
    """What an administrator runs to move a running process: every thread of it."""
    cpu_list = ",".join(str(c) for c in sorted(cpus))
    subprocess.run(
        ["taskset", "-a", "-p", "-c", cpu_list, str(os.getpid())],
        check=True,
        capture_output=True,
        timeout=30,
    )


class Placed:
    """Placements a test starts, stopped (and their watchers ended) at its end."""

    def __init__(self, saved: frozenset[int]) -> None:
        self.saved = saved
        self.started: list[Placement] = []

    def start(self, spec: str, worker: tuple[int, int] = (0, 1)) -> Placement:
        placement = Placement(spec, worker=worker)
        self.started.append(placement)
        placement.start()
        return placement

    def two_cpus(self) -> list[int]:
        if len(self.saved) < 2:
            pytest.skip("needs a process that may use two CPUs")
        return sorted(self.saved)


@pytest.fixture
def placed() -> Iterator[Placed]:
    """Puts every thread of the test process back where it was, under the normal policy."""
    placed = Placed(frozenset(os.sched_getaffinity(0)))
    yield placed
    for placement in placed.started:
        placement.stop()
        if placement._thread is not None:
            placement._thread.join(JOIN_TIMEOUT)
    for tid in _per_thread(lambda tid: tid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, placed.saved)
            if os.sched_getscheduler(tid) == os.SCHED_BATCH:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))


class Threads:
    """Threads that run a set-up (naming themselves as a stage does, setting a policy) and then
    wait to be told to end: stand-ins for a stage's thread and for a thread a user's code
    starts."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, key: str, setup: Callable[[], object] = lambda: None) -> int:
        ready = threading.Event()

        def run() -> None:
            setup()
            self.ids[key] = threading.get_native_id()
            ready.set()
            self._stop.wait()

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()
        assert ready.wait(JOIN_TIMEOUT)
        return self.ids[key]

    def end(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)


@pytest.fixture
def threads() -> Iterator[Threads]:
    made = Threads()
    yield made
    made.end()


def test_confine_own_sets_the_daemons_threads_and_new_threads_inherit(
    placed: Placed, threads: Threads
) -> None:
    low, high = placed.two_cpus()[:2]
    os.sched_setaffinity(0, {high})
    stage = threads.start("stage", lambda: name_os_thread("wga:stage"))
    user = threads.start("user")
    confine_own({low})
    assert (_affinity(0), _affinity(stage), _affinity(user)) == (
        frozenset({low}),
        frozenset({low}),
        frozenset({high}),
    )
    seen: list[set[int]] = []
    newer = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
    newer.start()
    newer.join()
    assert seen == [{low}]


def test_compact_placement_puts_the_daemons_threads_on_one_allowed_cpu(
    placed: Placed, threads: Threads
) -> None:
    stage = threads.start("stage", lambda: name_os_thread("wga:stage"))
    placement = placed.start(COMPACT)
    assert placement.cpu in placed.saved
    assert _affinity(0) == _affinity(stage) == {placement.cpu}
    # The watcher keeps the set the process may use: it is where changes to it show.
    assert _affinity(_watcher(placement)) == placed.saved
    assert _comm(_watcher(placement)) == WATCHER_NAME
    # no wake-up preemption among the threads that share the CPU (and the GIL)
    assert os.sched_getscheduler(0) == os.sched_getscheduler(stage) == os.SCHED_BATCH
    assert placement.description == f"compact (CPU {placement.cpu})"


def test_the_periodic_pass_leaves_threads_a_stage_started_alone(
    placed: Placed, threads: Threads
) -> None:
    """A stage's own thread inherits the stage's placement once, and its kernel name too, but
    what its author (or an administrator) sets on it afterwards stays."""
    placed.two_cpus()
    placement = placed.start(COMPACT)
    assert placement.cpu is not None
    spawned: dict[str, int] = {}

    def stage() -> None:
        name_os_thread("wga:stage")
        done = threading.Event()

        def own() -> None:
            spawned["tid"] = threading.get_native_id()
            os.sched_setaffinity(0, placed.saved)  # its author's choice
            done.set()
            threads._stop.wait()

        threading.Thread(target=own, daemon=True).start()
        done.wait(JOIN_TIMEOUT)

    stage_tid = threads.start("stage", stage)
    user = spawned["tid"]
    assert _comm(user) == "wga:stage"  # why the kernel's name cannot tell them apart
    os.sched_setaffinity(stage_tid, placed.saved)  # one of ours left elsewhere
    placement.step(placed.saved, {}, {}, 0)
    assert _affinity(stage_tid) == {placement.cpu}
    assert _affinity(user) == placed.saved
    assert os.sched_getscheduler(user) == os.SCHED_BATCH  # inherited at creation only


def test_a_policy_placement_did_not_set_is_kept(placed: Placed, threads: Threads) -> None:
    def named(name: str, policy: int, priority: int = 0) -> Callable[[], None]:
        def setup() -> None:
            name_os_thread(name)
            with contextlib.suppress(PermissionError):  # real-time needs a privilege
                os.sched_setscheduler(0, policy, os.sched_param(priority))

        return setup

    idle = threads.start("idle", named("wga:idle", os.SCHED_IDLE))
    fifo = threads.start("fifo", named("wga:fifo", os.SCHED_FIFO, 1))
    normal = threads.start("normal", named("wga:normal", os.SCHED_OTHER))
    user = threads.start("user")
    had_fifo = os.sched_getscheduler(fifo)
    try:
        placement = placed.start(COMPACT)
        assert placement.cpu is not None
        assert os.sched_getscheduler(idle) == os.SCHED_IDLE
        assert os.sched_getscheduler(fifo) == had_fifo
        assert os.sched_getscheduler(normal) == os.sched_getscheduler(0) == os.SCHED_BATCH
        assert os.sched_getscheduler(user) == os.SCHED_OTHER
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(fifo, os.SCHED_OTHER, os.sched_param(0))
    if os.geteuid() == 0:
        assert had_fifo == os.SCHED_FIFO, "root could not set SCHED_FIFO: not tested"


def test_all_leaves_placement_to_the_kernel(placed: Placed) -> None:
    placement = placed.start(ALL)
    assert placement.description == "all CPUs, placed by the kernel"
    assert os.sched_getaffinity(0) == placed.saved
    assert placement._thread is None
    assert os.SCHED_BATCH not in _per_thread(os.sched_getscheduler).values()


def test_the_default_is_compact_for_actors_under_a_gil_and_all_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gil = getattr(sys, "_is_gil_enabled", None)
    assert Placement("").spec == (COMPACT if gil is None or gil() else ALL)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert Placement("").spec == ALL
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert Placement("").spec == COMPACT
    # the single loop's one busy thread has no neighbour to share a CPU with
    assert Placement("", default=ALL).spec == ALL
    assert Placement(COMPACT, default=ALL).spec == COMPACT


def test_a_cpu_list_confines_the_daemons_threads(placed: Placed, threads: Threads) -> None:
    cpu = max(placed.saved)
    user = threads.start("user")
    placement = placed.start(f"{cpu},4000")  # CPUs this process may not use are left out
    assert _affinity(0) == {cpu}
    assert _affinity(user) == placed.saved
    assert placement.description == f"CPUs {cpu}"


def test_a_worker_takes_one_cpu_of_a_list(placed: Placed) -> None:
    cpus = placed.two_cpus()
    spec = ",".join(str(c) for c in cpus)
    placement = placed.start(spec, worker=(1, 2))
    assert _affinity(0) == {cpus[1]}
    assert placement.description == f"CPUs {cpus[1]} (worker 1 of 2)"


def test_workers_take_cpus_of_their_own_and_follow_taskset(placed: Placed) -> None:
    """Worker 1 of 2 takes the second CPU; moved with ``taskset -a`` to the first alone, it
    follows; given both again, it goes back to its own, never staying on its sibling's."""
    cpus = placed.two_cpus()
    placement = placed.start(COMPACT, worker=(1, 2))
    assert placement.cpu == cpus[1]
    assert placement.description == f"compact (CPU {cpus[1]}, worker 1 of 2)"
    _taskset({cpus[0]})
    assert _wait_until(lambda: placement.cpu == cpus[0]), placement.description
    assert placement.allowed == {cpus[0]}
    _taskset(placed.saved)
    assert _wait_until(lambda: placement.cpu == cpus[1] and _affinity(0) == {cpus[1]}), (
        placement.description
    )
    assert placement.allowed == placed.saved
    assert _affinity(_watcher(placement)) == placed.saved


def test_compact_follows_the_cpus_the_process_may_use(placed: Placed) -> None:
    """The only worker, on CPU c; an administrator moves the process off it: it follows, and
    does not pull the threads back onto c."""
    cpus = placed.two_cpus()
    placement = placed.start(COMPACT)
    other = next(c for c in cpus if c != placement.cpu)
    _taskset({other})
    assert _wait_until(lambda: placement.cpu == other), placement.description
    assert placement.allowed == {other}
    assert _affinity(0) == {other}


def test_a_step_moves_the_threads_to_an_idler_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    confined: list[set[int]] = []
    monkeypatch.setattr(
        "actors.placement.confine_own",
        lambda cpus, spare=None: confined.append(set(cpus)),
    )
    placement = Placement(COMPACT)
    placement.cpu = 0
    before, after = _times(cpu0=0.9, cpu1=0.1)  # cpu0 busy with others' work, not ours
    assert placement.step({0, 1}, before, after, own_busy=100)
    assert (placement.cpu, placement.moves, confined) == (1, 1, [{1}])
    # now ours is the busy one, and it is our own work: stay, and apply it again (a thread
    # started meanwhile, or a cpuset change, may have left one elsewhere)
    before, after = _times(cpu0=0.2, cpu1=0.95)
    assert not placement.step({0, 1}, before, after, own_busy=900)
    assert (placement.cpu, placement.moves, confined) == (1, 1, [{1}, {1}])
    # the CPU taken away, and no readings to judge by: the first one left
    assert placement.step({0}, {}, {}, own_busy=0)
    assert (placement.cpu, placement.allowed, confined[-1]) == (0, frozenset({0}), {0})


def test_a_worker_never_moves_onto_a_siblings_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    confined: list[set[int]] = []
    monkeypatch.setattr(
        "actors.placement.confine_own",
        lambda cpus, spare=None: confined.append(set(cpus)),
    )
    placement = Placement(COMPACT, worker=(0, 2))
    placement.cpu = 0
    before, after = _times(cpu0=0.9, cpu1=0.1)
    assert not placement.step({0, 1}, before, after, own_busy=0)
    assert (placement.cpu, confined) == (0, [{0}])
    assert placement.step({1, 2}, before, after, own_busy=0)  # its CPU was taken away
    assert (placement.cpu, confined[-1]) == (1, {1})


def test_a_refused_move_keeps_the_threads_where_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cpus: object, spare: object = None) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr("actors.placement.confine_own", refuse)
    placement = Placement(COMPACT)
    placement.cpu = 0
    before, after = _times(cpu0=0.9, cpu1=0.1)
    assert not placement.step({0, 1}, before, after, own_busy=0)
    assert (placement.cpu, placement.moves) == (0, 0)


def test_a_refused_placement_leaves_the_kernel_in_charge(
    monkeypatch: pytest.MonkeyPatch, placed: Placed
) -> None:
    def refuse(cpus: object, spare: object = None) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr("actors.placement.confine_own", refuse)
    for spec in (COMPACT, str(min(placed.saved))):
        placement = placed.start(spec)  # no exception
        assert placement.spec == ALL and placement._thread is None
        assert os.SCHED_BATCH not in _per_thread(os.sched_getscheduler).values()


@pytest.mark.parametrize("spec", [COMPACT, "0"])
def test_start_survives_a_kernel_that_will_not_say_where_threads_may_run(
    monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    """sched_getaffinity itself failing (no affinity support, a seccomp filter) must leave the
    kernel in charge with one warning, not raise from the clean-up path."""

    def refuse(pid: int) -> set[int]:
        raise OSError(38, "Function not implemented")

    confined: list[set[int]] = []
    monkeypatch.setattr(os, "sched_getaffinity", refuse)
    monkeypatch.setattr(
        "actors.placement.confine_own",
        lambda cpus, spare=None: confined.append(set(cpus)),
    )
    placement = Placement(spec)
    placement.start()
    assert (placement.spec, placement.cpu, confined) == (ALL, None, [])
    assert placement.description == KERNEL_PLACEMENT
    placement.stop()

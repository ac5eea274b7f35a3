"""CPU placement (actors.placement): parsing, the choice of a CPU, and confining threads."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from actors.placement import (
    ALL,
    COMPACT,
    KERNEL_PLACEMENT,
    CpuTimes,
    Placement,
    confine,
    parse_cpu_list,
    parse_proc_stat,
    pick_cpu,
)

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


T = TypeVar("T")


def _per_thread(read: Callable[[int], T]) -> set[T]:
    """What ``read`` says of each thread of this process."""
    out = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            out.add(read(int(task.name)))
    return out


def _affinities() -> set[frozenset[int]]:
    return _per_thread(lambda tid: frozenset(os.sched_getaffinity(tid)))


@pytest.fixture
def restore_affinity():  # type: ignore[no-untyped-def]
    saved = os.sched_getaffinity(0)
    policy = os.sched_getscheduler(0)
    yield saved
    confine(saved)
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setscheduler(int(task.name), policy, os.sched_param(0))


def _policies() -> set[int]:
    return _per_thread(os.sched_getscheduler)


def test_confine_sets_every_thread_and_new_threads_inherit(restore_affinity: set[int]) -> None:
    cpu = min(restore_affinity)
    stop = threading.Event()
    older = threading.Thread(target=stop.wait, daemon=True)
    older.start()
    try:
        confine({cpu})
        assert _affinities() == {frozenset({cpu})}
        seen: list[set[int]] = []
        newer = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        newer.start()
        newer.join()
        assert seen == [{cpu}]
    finally:
        stop.set()
        older.join()


def test_compact_placement_puts_every_thread_on_one_allowed_cpu(
    restore_affinity: set[int],
) -> None:
    placement = Placement(COMPACT)
    placement.start()
    try:
        assert placement.cpu in restore_affinity
        assert _affinities() == {frozenset({placement.cpu})}
        # no wake-up preemption among the threads that share the CPU (and the GIL)
        assert _policies() == {os.SCHED_BATCH}
        assert placement.description == f"compact (CPU {placement.cpu})"
    finally:
        placement.stop()


def test_all_leaves_placement_to_the_kernel(restore_affinity: set[int]) -> None:
    placement = Placement(ALL)
    placement.start()
    assert placement.description == "all CPUs, placed by the kernel"
    assert os.sched_getaffinity(0) == restore_affinity
    assert placement._thread is None
    assert os.SCHED_BATCH not in _policies()


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


def test_a_cpu_list_confines_every_thread(restore_affinity: set[int]) -> None:
    cpu = max(restore_affinity)
    placement = Placement(f"{cpu},4000")  # CPUs this process may not use are left out
    placement.start()
    assert _affinities() == {frozenset({cpu})}
    assert placement.description == f"CPUs {cpu}"


def test_a_step_moves_every_thread_to_an_idler_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    confined: list[set[int]] = []
    monkeypatch.setattr("actors.placement.confine", lambda cpus: confined.append(set(cpus)))
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


def test_a_refused_move_keeps_the_threads_where_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cpus: object) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr("actors.placement.confine", refuse)
    placement = Placement(COMPACT)
    placement.cpu = 0
    before, after = _times(cpu0=0.9, cpu1=0.1)
    assert not placement.step({0, 1}, before, after, own_busy=0)
    assert (placement.cpu, placement.moves) == (0, 0)


def test_a_refused_placement_leaves_the_kernel_in_charge(
    monkeypatch: pytest.MonkeyPatch, restore_affinity: set[int]
) -> None:
    def refuse(cpus: object) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr("actors.placement.confine", refuse)
    for spec in (COMPACT, str(min(restore_affinity))):
        placement = Placement(spec)
        placement.start()  # no exception
        assert placement.spec == ALL and placement._thread is None
        assert os.SCHED_BATCH not in _policies()


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
    monkeypatch.setattr("actors.placement.confine", lambda cpus: confined.append(set(cpus)))
    placement = Placement(spec)
    placement.start()
    assert (placement.spec, placement.cpu, confined) == (ALL, None, [])
    assert placement.description == KERNEL_PLACEMENT
    placement.stop()

"""Where the daemon's threads run: CPU placement for a pipeline that holds one GIL.

CPython runs Python code on one CPU at a time. The stages' threads take turns with the GIL, and
when the kernel spreads them over several CPUs, every turn moves the GIL, the packets' objects
and their reference counts from one CPU's cache to another's, after a cross-CPU wake-up. On a
machine whose CPUs are busy with other work too, that is paid on every hop. Confining every
thread of the daemon to one CPU keeps all of it in one cache; what it gives up is running the
kernel's half of a system call (a ``sendmmsg``, a TUN write) on another CPU while Python goes
on, which pays only when a spare CPU exists. Measured figures are in the README
(Performance, CPU placement).

Within that CPU, a stage woken by a neighbour would by default preempt the neighbour at once,
find the GIL still held, and sleep again: three thread switches for one hand-off. Compact mode
therefore also runs the threads under ``SCHED_BATCH``, the Linux policy without wake-up
preemption (no privilege needed), so a woken stage waits for the running one to block, which is
when the GIL is free anyway.

So placement is a choice, ``WGACTORS_CPUS``:

- ``compact`` (the default in actors mode): all threads on one CPU of those the process may use,
  the one least busy with other work, looked at again every :data:`REBALANCE_INTERVAL` and moved
  when another CPU is idler by :data:`MOVE_MARGIN`, under ``SCHED_BATCH``;
- ``all``: the kernel places the threads on any CPU the process may use. The default of the
  single-threaded mode, whose one busy thread has no neighbour to share a cache with, and of an
  interpreter without a GIL, where the threads really run in parallel;
- a CPU list (``1``, ``0,2-3``): all threads on those CPUs, as ``taskset -c`` would.

New threads inherit their creator's affinity and policy, so stages started (or restarted) later
follow. The choice of a CPU is a pure function of two readings of ``/proc/stat`` (:func:`pick_cpu`);
only :class:`Placement` touches the system.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

__all__ = [
    "ALL",
    "COMPACT",
    "KERNEL_PLACEMENT",
    "MOVE_MARGIN",
    "REBALANCE_INTERVAL",
    "CpuTimes",
    "Placement",
    "default_policy",
    "parse_cpu_list",
    "parse_proc_stat",
    "pick_cpu",
    "set_batch_policy",
]

COMPACT = "compact"
ALL = "all"
KERNEL_PLACEMENT = "all CPUs, placed by the kernel"  # how `status` shows ALL
REBALANCE_INTERVAL = 2.0  # seconds between looks at the CPUs' load in compact mode
MOVE_MARGIN = 0.25  # share of a CPU by which another must be idler before the threads move
MAX_CPU_INDEX = 4095  # the largest CPU number a list may name (the kernel's NR_CPUS bound)


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """One CPU's cumulative jiffies from ``/proc/stat``: busy (all but idle and iowait) and
    the total."""

    busy: int
    total: int


def parse_cpu_list(text: str) -> frozenset[int]:
    """``0,2-3`` -> {0, 2, 3}; ValueError with the reason for anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list such as 1 or 0,2-3")
        first, last = int(low), int(high) if sep else int(low)
        if first > last or last > MAX_CPU_INDEX:
            raise ValueError(f"{part!r} is not a CPU range (0 to {MAX_CPU_INDEX}, low-high)")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def parse_proc_stat(text: str) -> dict[int, CpuTimes]:
    """The per-CPU lines (``cpuN user nice system idle iowait irq softirq steal ...``)."""
    out: dict[int, CpuTimes] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit():
            continue
        fields = [int(f) for f in rest.split()]
        if len(fields) < 4:
            continue
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        total = sum(fields[:8])  # guest time is counted in user already
        out[int(name[3:])] = CpuTimes(total - idle, total)
    return out


def pick_cpu(
    allowed: Iterable[int],
    before: Mapping[int, CpuTimes],
    after: Mapping[int, CpuTimes],
    current: int | None,
    own_busy: int,
    margin: float = MOVE_MARGIN,
) -> int | None:
    """The CPU the threads should be on, from two readings of the CPUs' times.

    A CPU's load is its busy share between the readings, less ours on the CPU we are on
    (``own_busy``: our process's jiffies in between): what matters is the other work we would
    share it with. Without a ``current`` CPU the idlest is chosen; with one, the threads move
    only to a CPU idler by ``margin`` (a share of a CPU), so that noise does not bounce them.
    None when no allowed CPU has two readings."""
    loads: dict[int, float] = {}
    for cpu in sorted(allowed):
        if cpu not in before or cpu not in after:
            continue
        total = after[cpu].total - before[cpu].total
        if total <= 0:  # no time passed on it (offline?): nothing to judge it by
            continue
        busy = after[cpu].busy - before[cpu].busy
        if cpu == current:
            busy -= own_busy
        loads[cpu] = max(0.0, busy / total)
    if not loads:
        return None
    best = min(loads, key=lambda cpu: (loads[cpu], cpu))
    if current is None or current not in loads:
        return best
    return best if loads[current] - loads[best] > margin else current


def default_policy() -> str:
    """For threads that hand work to each other: ``compact`` where a GIL serialises them,
    ``all`` where the interpreter has none. (A data plane of one busy thread asks for ``all``
    itself: see :meth:`actors.dataplane.DataPlane.default_placement`.)"""
    gil = getattr(sys, "_is_gil_enabled", None)
    return COMPACT if gil is None or gil() else ALL


class Placement:
    """Applies a ``WGACTORS_CPUS`` value (empty: :func:`default_policy`) to this process;
    :meth:`start` once before the stages start, :meth:`stop` at shutdown."""

    def __init__(self, spec: str, *, default: str | None = None) -> None:
        """``default`` is the data plane's own choice when ``spec`` is empty (None: the choice
        of :func:`default_policy` for a pipeline of threads)."""
        self.spec = spec.strip() or default or default_policy()
        self.cpu: int | None = None  # compact mode: where the threads are now
        self.applied: frozenset[int] = frozenset()  # a CPU list's CPUs, as the kernel took them
        self.moves = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def check(cls, spec: str) -> str | None:
        """Why ``spec`` cannot be applied here (None if it can)."""
        spec = spec.strip()
        if spec in ("", COMPACT, ALL):
            return None
        try:
            wanted = parse_cpu_list(spec)
        except ValueError as e:
            return f"{e}, {COMPACT} or {ALL}"
        allowed = os.sched_getaffinity(0)
        if not wanted & allowed:
            return f"none of CPUs {spec} is one this process may use ({_cpu_list(allowed)})"
        return None

    @property
    def description(self) -> str:
        if self.spec == ALL:
            return KERNEL_PLACEMENT
        if self.spec == COMPACT:
            return f"compact (CPU {self.cpu})"
        return f"CPUs {_cpu_list(self.applied)}"

    def start(self) -> None:
        """Apply the placement. Never raises: a system that refuses it (a cpuset changed under
        us, no /proc, a kernel without affinity) leaves the kernel in charge, with one warning."""
        if self.spec == ALL:
            return
        allowed: set[int] | None = None
        try:
            allowed = os.sched_getaffinity(0)
            if self.spec != COMPACT:
                confine(parse_cpu_list(self.spec) & allowed)
                self.applied = frozenset(os.sched_getaffinity(0))
                logger.info("threads confined to CPUs {}", _cpu_list(self.applied))
                return
            # With no history yet, the CPU the main thread runs on now is as good as any.
            cpu = _current_cpu(allowed)
            confine({cpu})
            self.cpu = cpu
            batch = set_batch_policy()
            before = read_cpu_times()
            thread = threading.Thread(
                target=self._rebalance, args=(allowed, before), name="wga:placement", daemon=True
            )
            thread.start()
        except (OSError, RuntimeError) as e:
            logger.warning(
                "{}: cannot confine the threads ({}); the kernel places them", self.spec, e
            )
            self.spec, self.cpu = ALL, None
            if allowed is not None:  # undo a partial confinement
                with contextlib.suppress(OSError):
                    confine(allowed)
            return
        self._thread = thread
        logger.info(
            "threads confined to CPU {} (compact; re-chosen as load moves{})",
            self.cpu,
            ", SCHED_BATCH" if batch else "",
        )

    def stop(self) -> None:
        self._stop.set()

    def _rebalance(self, allowed: frozenset[int] | set[int], before: dict[int, CpuTimes]) -> None:
        own_before = own_cpu_jiffies()
        while not self._stop.wait(REBALANCE_INTERVAL):
            after, own_after = read_cpu_times(), own_cpu_jiffies()
            self.step(allowed, before, after, own_after - own_before)
            before, own_before = after, own_after

    def step(
        self,
        allowed: Iterable[int],
        before: Mapping[int, CpuTimes],
        after: Mapping[int, CpuTimes],
        own_busy: int,
    ) -> bool:
        """One look at the CPUs (compact mode): move every thread if another CPU is idler by
        the margin. True if they moved."""
        chosen = pick_cpu(allowed, before, after, self.cpu, own_busy)
        if chosen is None or chosen == self.cpu:
            # Again each time: a thread started during the last pass, or a cpuset change,
            # may have left some thread elsewhere.
            with contextlib.suppress(OSError):
                confine({self.cpu} if self.cpu is not None else allowed)
            return False
        try:
            confine({chosen})
        except OSError as e:  # e.g. the cpuset lost that CPU: stay, look again next time
            logger.debug("compact placement: cannot move to CPU {} ({})", chosen, e)
            return False
        logger.debug("compact placement: CPU {} -> {} (less other work)", self.cpu, chosen)
        self.cpu = chosen
        self.moves += 1
        return True


def confine(cpus: Iterable[int]) -> None:
    """Set the affinity of every thread of this process (and so of threads they create)."""
    cpus = set(cpus)
    os.sched_setaffinity(0, cpus)
    _each_thread(lambda tid: os.sched_setaffinity(tid, cpus))


def _each_thread(apply: Callable[[int], object]) -> None:
    """``apply`` to each thread id of this process; a thread that ends meanwhile is skipped.
    OSError if the threads cannot be listed (no /proc)."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            apply(int(task.name))


def set_batch_policy() -> bool:
    """Put every thread of this process (and so the threads they create) under ``SCHED_BATCH``.
    False where the system does not have it or refuses it: placement works without it."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError:
        return False
    with contextlib.suppress(OSError):
        _each_thread(lambda tid: os.sched_setscheduler(tid, policy, os.sched_param(0)))
    return True


def read_cpu_times() -> dict[int, CpuTimes]:
    try:
        return parse_proc_stat(Path("/proc/stat").read_text())
    except OSError:
        return {}


def own_cpu_jiffies() -> int:
    """This process's user + system time in clock ticks (the unit of ``/proc/stat``)."""
    times = os.times()
    return round((times.user + times.system) * os.sysconf("SC_CLK_TCK"))


def _current_cpu(allowed: Iterable[int]) -> int:
    try:
        fields = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
        cpu = int(fields[36])  # field 39, "processor", counted after the ")"
    except (OSError, IndexError, ValueError):
        cpu = -1
    pool = sorted(allowed)
    return cpu if cpu in pool else pool[0]


def _cpu_list(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))

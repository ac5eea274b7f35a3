"""Where the daemon's threads run: CPU placement for a pipeline that holds one GIL.

CPython runs Python code on one CPU at a time. The stages' threads take turns with the GIL, and
when the kernel spreads them over several CPUs, every turn moves the GIL, the packets' objects
and their reference counts from one CPU's cache to another's, after a cross-CPU wake-up. On a
machine whose CPUs are busy with other work too, that is paid on every hop. Confining the
daemon's threads to one CPU keeps all of it in one cache; what it gives up is running the
kernel's half of a system call (a ``sendmmsg``, a TUN write) on another CPU while Python goes
on, which pays only when a spare CPU exists. Measured figures are in the README
(Performance, CPU placement).

Within that CPU, a stage woken by a neighbour would by default preempt the neighbour at once,
find the GIL still held, and sleep again: three thread switches for one hand-off. Compact mode
therefore also moves the threads from the normal policy to ``SCHED_BATCH``, the Linux policy
without wake-up preemption (no privilege needed), so a woken stage waits for the running one to
block, which is when the GIL is free anyway. A thread under any other policy (real-time, idle,
deadline: an administrator's choice) keeps it.

So placement is a choice, ``WGACTORS_CPUS``:

- ``compact`` (the default in actors mode): the threads on one CPU of those the process may use,
  the one least busy with other work, looked at again every :data:`REBALANCE_INTERVAL` and moved
  when another CPU is idler by :data:`MOVE_MARGIN`, under ``SCHED_BATCH``. One worker of several
  (``worker=(i, n)``) instead takes the i-th allowed CPU, so that workers never share one;
- ``all``: the kernel places the threads on any CPU the process may use. The default of the
  single-threaded mode, whose one busy thread has no neighbour to share a cache with, and of an
  interpreter without a GIL, where the threads really run in parallel;
- a CPU list (``1``, ``0,2-3``): the threads on those CPUs, as ``taskset -c`` would; one worker
  of several takes one of them.

**Which threads.** Only the daemon's own: the main thread and the Python threads whose name
starts with :data:`OWN_PREFIX` (the stages name theirs in ``on_start``; the daemon's helpers
are created with such names). A thread that a custom stage starts itself inherits its creator's
affinity and policy once, at creation (the kernel's rule), but placement never sets them again.
The mark is the Python name, not the kernel's (``comm``): the kernel copies ``comm`` into every
thread a thread creates, so a stage's own threads carry the stage's ``comm`` and would pass for
the stage. Python names a new thread ``Thread-N`` whoever creates it. The set is read afresh
from :func:`threading.enumerate` on each pass: nothing to keep in step.

**Which CPUs.** What the process may use changes under it: a cgroup's cpuset shrinks or grows,
an administrator runs ``taskset -a -p``, a CPU goes offline. The affinity of a confined thread
says only where placement put it, so the truth is read from the one thread placement never
confines: the watcher (``wga:placement``), created before anything is confined and never given
an affinity of its own. The kernel rewrites the affinity of every thread of a cgroup when its
cpuset changes (v1 and v2 alike; since Linux 6.2 intersected with the mask the thread asked for,
and the watcher asked for none, so it follows growth as well as shrinking), and ``taskset -a``
sets it like any other thread's. Reading the cgroup's ``cpuset.cpus.effective`` instead would
take finding the cgroup in two layouts (v1, v2) and still miss ``taskset``; the watcher's own
affinity covers both with one system call. (Plain ``taskset -p PID`` sets the main thread
alone, and is overridden like any change to a confined thread.)

The choice of a CPU is a pure function of two readings of ``/proc/stat`` (:func:`pick_cpu`),
the choices for workers and policies are pure too (:func:`worker_cpu`, :func:`listed_cpus`,
:func:`batch_policy_for`, :func:`own_threads`); only :class:`Placement` touches the system.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from .stages.base import name_os_thread

__all__ = [
    "ALL",
    "COMPACT",
    "KERNEL_PLACEMENT",
    "MOVE_MARGIN",
    "OWN_PREFIX",
    "REBALANCE_INTERVAL",
    "WATCHER_NAME",
    "CpuTimes",
    "Placement",
    "batch_policy_for",
    "confine_own",
    "default_policy",
    "listed_cpus",
    "own_threads",
    "parse_cpu_list",
    "parse_proc_stat",
    "pick_cpu",
    "set_batch_policy",
    "worker_cpu",
]

COMPACT = "compact"
ALL = "all"
KERNEL_PLACEMENT = "all CPUs, placed by the kernel"  # how `status` shows ALL
OWN_PREFIX = "wga:"  # the start of the Python name of every thread the daemon starts
WATCHER_NAME = "wga:placement"  # the thread that re-places the others and is never confined
REBALANCE_INTERVAL = 2.0  # seconds between looks at the CPUs' load in compact mode
MOVE_MARGIN = 0.25  # share of a CPU by which another must be idler before the threads move
MAX_CPU_INDEX = 4095  # the largest CPU number a list may name (the kernel's NR_CPUS bound)
SINGLE = (0, 1)  # the worker of a daemon that has one


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


def worker_cpu(cpus: Iterable[int], worker: tuple[int, int]) -> int | None:
    """Worker ``i`` of ``n``: the i-th of ``cpus`` in order, wrapping when there are more
    workers than CPUs, so that workers share a CPU only then. None for no CPUs."""
    pool = sorted(cpus)
    return pool[worker[0] % len(pool)] if pool else None


def listed_cpus(
    wanted: Iterable[int], allowed: Iterable[int], worker: tuple[int, int]
) -> frozenset[int]:
    """A CPU list's share for ``worker``: the listed CPUs the process may use, all of them for
    the only worker, one of them (:func:`worker_cpu`) for one of several. Empty if none of them
    may be used."""
    usable = frozenset(wanted) & frozenset(allowed)
    if worker[1] <= 1:
        return usable
    cpu = worker_cpu(usable, worker)
    return frozenset() if cpu is None else frozenset({cpu})


def batch_policy_for(policy: int) -> int | None:
    """The policy to give a thread now under ``policy`` (as ``sched_getscheduler`` returns it):
    ``SCHED_BATCH`` for the normal policy, with its reset-on-fork flag kept; None (leave it) for
    any other, because real-time, idle or deadline scheduling, or a batch policy, was someone's
    choice and batch would be a change of it (for real-time, a demotion)."""
    reset = getattr(os, "SCHED_RESET_ON_FORK", 0)
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or policy & ~reset != os.SCHED_OTHER:
        return None
    return int(batch | (policy & reset))


def own_threads(threads: Iterable[tuple[int | None, str]], main: int | None) -> frozenset[int]:
    """The thread ids among ``threads`` (thread id, Python name) that are the daemon's: its
    ``main`` thread and those named with :data:`OWN_PREFIX`. A thread not yet started has no
    id and is left out (it will inherit its creator's placement)."""
    tids = {tid for tid, name in threads if tid is not None and name.startswith(OWN_PREFIX)}
    if main is not None:
        tids.add(main)
    return frozenset(tids)


def _own_threads() -> dict[int, str]:
    """This process's own threads now, by thread id, with their Python names."""
    threads = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    main = threading.main_thread().native_id
    return {tid: threads.get(tid, "main") for tid in own_threads(threads.items(), main)}


def default_policy() -> str:
    """For threads that hand work to each other: ``compact`` where a GIL serialises them,
    ``all`` where the interpreter has none. (A data plane of one busy thread asks for ``all``
    itself: see :meth:`actors.dataplane.DataPlane.default_placement`.)"""
    gil = getattr(sys, "_is_gil_enabled", None)
    return COMPACT if gil is None or gil() else ALL


class Placement:
    """Applies a ``WGACTORS_CPUS`` value (empty: :func:`default_policy`) to the daemon's threads
    in this process; :meth:`start` once, from the main thread, before the stages start (they
    inherit its placement), :meth:`stop` at shutdown."""

    def __init__(
        self, spec: str, *, default: str | None = None, worker: tuple[int, int] = SINGLE
    ) -> None:
        """``default`` is the data plane's own choice when ``spec`` is empty (None: the choice
        of :func:`default_policy` for a pipeline of threads). ``worker`` is (this worker, of
        how many), counted from 0: with several, each takes a CPU of its own."""
        index, count = worker
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"worker {index} of {count}: expected 0 <= worker < count")
        self.spec = spec.strip() or default or default_policy()
        self.worker = (index, count)
        self.cpu: int | None = None  # compact mode: where the threads are now
        self.applied: frozenset[int] = frozenset()  # a CPU list's CPUs, as the kernel took them
        self.allowed: frozenset[int] = frozenset()  # the CPUs the process may use, last seen
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
        index, count = self.worker
        of = f", worker {index} of {count}" if count > 1 else ""
        if self.spec == COMPACT:
            return f"compact (CPU {self.cpu}{of})"
        return f"CPUs {_cpu_list(self.applied)}" + (f" (worker {index} of {count})" if of else "")

    def start(self) -> None:
        """Apply the placement. Never raises: a system that refuses it (a cpuset changed under
        us, no /proc, a kernel without affinity) leaves the kernel in charge, with one warning."""
        if self.spec == ALL:
            return
        allowed: frozenset[int] | None = None
        batch = 0
        try:
            allowed = frozenset(os.sched_getaffinity(0))
            self.allowed = allowed
            if self.spec == COMPACT:
                cpu = (
                    _current_cpu(allowed)  # with no history yet, as good as any
                    if self.worker[1] == 1
                    else worker_cpu(allowed, self.worker)
                )
                target = frozenset() if cpu is None else frozenset({cpu})
            else:
                target = listed_cpus(parse_cpu_list(self.spec), allowed, self.worker)
            if not target:
                raise OSError(errno.EINVAL, f"none of CPUs {self.spec} may be used")
            # The watcher first, so that it keeps the whole set (see the module's docstring).
            self._thread = threading.Thread(target=self._watch, name=WATCHER_NAME, daemon=True)
            self._thread.start()
            confine_own(target, spare=self._thread.native_id)
            if self.spec == COMPACT:
                self.cpu = min(target)
                batch = set_batch_policy()
            else:
                self.applied = target
        except (OSError, RuntimeError, ValueError) as e:
            logger.warning(
                "{}: cannot confine the threads ({}); the kernel places them", self.spec, e
            )
            self._stop.set()
            self.spec, self.cpu, self._thread = ALL, None, None
            if allowed is not None:  # undo a partial confinement
                with contextlib.suppress(OSError):
                    confine_own(allowed)
            return
        if self.spec == COMPACT:
            logger.info(
                "threads confined to CPU {} (compact{}{})",
                self.cpu,
                f", worker {self.worker[0]} of {self.worker[1]}"
                if self.worker[1] > 1
                else "; re-chosen as load moves",
                f", {batch} under SCHED_BATCH" if batch else "",
            )
        else:
            logger.info("threads confined to CPUs {}", _cpu_list(self.applied))

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        name_os_thread(WATCHER_NAME)
        before, own_before = read_cpu_times(), own_cpu_jiffies()
        while not self._stop.wait(REBALANCE_INTERVAL):
            try:
                allowed = os.sched_getaffinity(0)
            except OSError:
                continue
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
        """One look, with the CPUs the process may use now: re-derive where the daemon's
        threads belong (in compact mode with one worker, move them if another CPU is idler by
        the margin) and put them there. True if that changed."""
        allowed = frozenset(allowed)
        if allowed != self.allowed:
            logger.info(
                "the process may now use CPUs {} (was {})",
                _cpu_list(allowed),
                _cpu_list(self.allowed),
            )
            self.allowed = allowed
        if self.spec == COMPACT:
            return self._step_compact(allowed, before, after, own_busy)
        target = listed_cpus(parse_cpu_list(self.spec), allowed, self.worker) or allowed
        try:
            confine_own(target, spare=self._spare())
        except OSError as e:
            logger.debug("placement: cannot confine to CPUs {} ({})", _cpu_list(target), e)
            return False
        if target == self.applied:
            return False
        logger.info("threads confined to CPUs {}", _cpu_list(target))
        self.applied = target
        self.moves += 1
        return True

    def _step_compact(
        self,
        allowed: frozenset[int],
        before: Mapping[int, CpuTimes],
        after: Mapping[int, CpuTimes],
        own_busy: int,
    ) -> bool:
        if self.worker[1] > 1:  # a CPU of its own: no moving onto a sibling's
            chosen = worker_cpu(allowed, self.worker)
        else:
            chosen = pick_cpu(allowed, before, after, self.cpu, own_busy)
            if chosen is None:  # no readings: stay, unless the CPU was taken away
                chosen = self.cpu if self.cpu in allowed else worker_cpu(allowed, SINGLE)
        if chosen is None:
            return False
        try:
            # Again each time: a thread started during the last pass, a cpuset change, or a
            # `taskset -a` may have left one of ours elsewhere.
            confine_own({chosen}, spare=self._spare())
        except OSError as e:  # e.g. the cpuset lost that CPU: stay, look again next time
            logger.debug("compact placement: cannot move to CPU {} ({})", chosen, e)
            return False
        if chosen == self.cpu:
            return False
        logger.debug("compact placement: CPU {} -> {}", self.cpu, chosen)
        self.cpu = chosen
        self.moves += 1
        return True

    def _spare(self) -> int | None:
        return None if self._thread is None else self._thread.native_id


def confine_own(cpus: Iterable[int], *, spare: int | None = None) -> int:
    """Set the affinity of the daemon's own threads (:func:`own_threads`), but for ``spare``,
    and so of the threads they create from now on. Returns how many were set. A thread that
    ended meanwhile is skipped; any other refusal (``EINVAL``: none of ``cpus`` may be used)
    raises OSError."""
    cpus = set(cpus)
    count = 0
    for tid in _own_threads():
        if tid == spare:
            continue
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue
        count += 1
    return count


def set_batch_policy() -> int:
    """Move the daemon's own threads that run under the normal policy to ``SCHED_BATCH``
    (:func:`batch_policy_for`), and so the threads they create from now on. Returns how many
    moved: 0 where the system does not have the policy or refuses it, which placement does
    without."""
    moved = 0
    for tid, name in _own_threads().items():
        try:
            policy = batch_policy_for(os.sched_getscheduler(tid))
            if policy is None:
                logger.debug("thread {} keeps its scheduling policy", name)
                continue
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except OSError:
            continue
        moved += 1
    return moved


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

"""CPU placement under a real cpuset cgroup that an administrator shrinks and grows.

A child process joins a cgroup the test makes, starts a placement and says, when asked, how it
is placed and which CPUs it sees as allowed. The test changes the cgroup's CPUs underneath it.
Needs root and a cpuset hierarchy (cgroup v1, or v2 with cpuset enabled at its root); without
them the test skips, and fails under CI=true. The cgroup is removed at the end."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.placement import REBALANCE_INTERVAL

WAIT = 10 * REBALANCE_INTERVAL  # bound on waiting for the child's watcher to see a change
ANSWER_TIMEOUT = 30.0  # seconds for the child to start or answer one question
REMOVE_TIMEOUT = 10.0  # seconds for the kernel to let the emptied cgroup go
REPO = Path(__file__).resolve().parent.parent

CHILD = """
import os, sys
from pathlib import Path
Path(sys.argv[1], "cgroup.procs").write_text(str(os.getpid()))
from actors.placement import Placement
placement = Placement("compact", worker=(int(sys.argv[2]), int(sys.argv[3])))
placement.start()
for _ in sys.stdin:
    allowed = ",".join(str(c) for c in sorted(placement.allowed))
    mine = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    print(f"{placement.cpu} {allowed} {mine}", flush=True)
"""


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: refusing to skip)", pytrace=False)
    pytest.skip(reason)


def _cpuset_root() -> Path | None:
    """Where a cpuset cgroup can be made: the cgroup v1 cpuset mount, or the cgroup v2 root if
    cpuset is enabled for its children."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mount, kind, options = Path(fields[1]), fields[2], fields[3].split(",")
        if kind == "cgroup" and "cpuset" in options:
            return mount
        if kind == "cgroup2":
            with contextlib.suppress(OSError):
                if "cpuset" in (mount / "cgroup.subtree_control").read_text().split():
                    return mount
    return None


@pytest.fixture
def cpuset() -> Iterator[Path]:
    """A cpuset cgroup of this test's own, with the CPUs this process may use."""
    if os.geteuid() != 0:
        _skip_or_fail("a cpuset cgroup needs root")
    root = _cpuset_root()
    if root is None:
        _skip_or_fail("no cpuset cgroup hierarchy to make a cgroup in")
        return
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a process that may use two CPUs")
    group = root / f"wgactors-test-placement-{os.getpid()}"
    group.mkdir()
    try:
        if (root / "cpuset.mems").exists():  # v1: a cpuset takes no task without its memory
            (group / "cpuset.mems").write_text((root / "cpuset.mems").read_text())
        _set_cpus(group, os.sched_getaffinity(0))
        yield group
    finally:
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while True:
            try:
                group.rmdir()
                break
            except OSError:  # EBUSY while the child is not yet reaped
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _set_cpus(group: Path, cpus: set[int] | list[int]) -> None:
    (group / "cpuset.cpus").write_text(",".join(str(c) for c in sorted(cpus)))


class Child:
    def __init__(self, group: Path, worker: tuple[int, int]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(group), str(worker[0]), str(worker[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    def ask(self) -> tuple[int, set[int], set[int]]:
        """(its compact CPU, the CPUs its placement sees as allowed, its main thread's)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], ANSWER_TIMEOUT)
        assert ready, "the child did not answer"
        cpu, allowed, mine = self.proc.stdout.readline().split()
        return int(cpu), _cpus(allowed), _cpus(mine)

    def wait_for(self, want: tuple[int, set[int], set[int]]) -> None:
        deadline = time.monotonic() + WAIT
        seen = self.ask()
        while seen != want and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = self.ask()
        assert seen == want

    def end(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(ANSWER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(ANSWER_TIMEOUT)


def _cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",")}


@pytest.mark.parametrize("worker", [(0, 1), (1, 2)])
def test_placement_follows_a_cpuset_that_shrinks_and_grows(
    cpuset: Path, worker: tuple[int, int]
) -> None:
    """The only worker, or worker 1 of 2: when the cgroup loses the CPU the threads are on,
    they go to one it has; when the cgroup gets its CPUs back, the placement sees all of them
    again (worker 1 returns to its own CPU), which a watcher confined like the others would
    not, since the kernel keeps a thread within the mask it was given."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    _set_cpus(cpuset, cpus)
    child = Child(cpuset, worker)
    try:
        first, allowed, mine = child.ask()
        assert allowed == set(cpus) and mine == {first}
        if worker == (1, 2):
            assert first == cpus[1]
        other = next(c for c in cpus if c != first)
        _set_cpus(cpuset, {other})
        child.wait_for((other, {other}, {other}))
        _set_cpus(cpuset, cpus)
        if worker == (1, 2):
            child.wait_for((cpus[1], set(cpus), {cpus[1]}))
        else:  # the only worker stays where it is, unless the load says otherwise
            deadline = time.monotonic() + WAIT
            while child.ask()[1] != set(cpus) and time.monotonic() < deadline:
                time.sleep(0.1)
            cpu, allowed, mine = child.ask()
            assert allowed == set(cpus) and mine == {cpu}
    finally:
        child.end()

"""What the lab reads from ``/proc`` about a tunnel end: CPU time, peak memory, context
switches, and which process (under ``ip netns exec`` and the launcher) is the real daemon."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from .command import run

MAX_TREE_WALK = 1000  # processes visited at most when looking for a descendant


def read_text(path: str | Path) -> str | None:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name; index 0 is field 3 (state)."""
    stat = read_text(f"/proc/{pid}/stat")
    return None if stat is None else stat.rsplit(")", 1)[-1].split()


def _children() -> dict[int, list[int]]:
    """PPID -> child PIDs, for every process still there to read."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and len(fields) > 1 and fields[1].isdigit():
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def find_process(root: int, match: Callable[[int, list[str]], bool]) -> int | None:
    """The first process, ``root`` or one of its descendants, whose command line matches."""
    tree = _children()
    queue: list[int] = [root]
    seen: set[int] = set()
    while queue and len(seen) < MAX_TREE_WALK:
        pid = queue.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        if match(pid, cmdline(pid)):
            return pid
        queue.extend(tree.get(pid, []))
    return None


def is_wgactors_python(pid: int, argv: list[str]) -> bool:
    """The Python interpreter running ``-m actors.cli`` (not the bash launcher, not ``ip``)."""
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return False
    return exe.startswith("python") and "actors.cli" in argv


def is_wireguard_go(_pid: int, argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) == "wireguard-go"


def runs_binary(binary: str) -> Callable[[int, list[str]], bool]:
    """A :func:`find_process` match for a process started as ``binary`` (a path, or a name
    looked up on PATH): any build of wireguard-go, whatever its file is called."""
    name = os.path.basename(binary)

    def match(_pid: int, argv: list[str]) -> bool:
        return bool(argv) and (argv[0] == binary or os.path.basename(argv[0]) == name)

    return match


def children(pid: int) -> list[int]:
    """The process's child processes now (a daemon's workers), from every thread's list."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        text = read_text(f"/proc/{pid}/task/{tid}/children") or ""
        out += [int(tok) for tok in text.split() if tok.isdigit()]
    return sorted(set(out))


def descendants(pid: int) -> list[int]:
    """Children, their children and so on (at most MAX_TREE_WALK): a daemon's workers also
    when a helper process (a fork server) is their parent."""
    out: list[int] = []
    queue = children(pid)
    while queue and len(out) < MAX_TREE_WALK:
        child = queue.pop(0)
        if child not in out:
            out.append(child)
            queue += children(child)
    return out


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    try:
        assert fields is not None
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    except (AssertionError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def run_seconds(pid: int) -> float | None:
    """Time on a CPU of the process's threads now, summed, in seconds: nanosecond-exact
    (``/proc/PID/task/TID/schedstat``), where utime + stime moves in whole clock ticks and
    rounds a short load to nothing. A thread that has exited takes its time with it."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tids:
        text = read_text(f"/proc/{pid}/task/{tid}/schedstat")
        if text and text.split()[0].isdigit():
            total += int(text.split()[0])
    return total / 1e9


def peak_rss_mb(pid: int) -> float | None:
    status = read_text(f"/proc/{pid}/status")
    if status and (m := re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.M)):
        return int(m.group(1)) / 1024
    return None


_SWITCHES = re.compile(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", re.M)


def context_switches_by_thread(pid: int) -> dict[str, int] | None:
    """Voluntary + involuntary context switches of each thread the process has now, summed
    per thread name (``comm``; wgactors names its stage threads ``wga:STAGE``).

    Read per task, because ``/proc/PID/status`` counts only the main thread. A thread that
    has exited takes its count with it; the daemons measured here keep theirs for their life.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out: dict[str, int] = {}
    for tid in tasks:
        status = read_text(f"/proc/{pid}/task/{tid}/status")
        if not status:
            continue
        name = (read_text(f"/proc/{pid}/task/{tid}/comm") or "?").strip()
        out[name] = out.get(name, 0) + sum(int(n) for n in _SWITCHES.findall(status))
    return out


def context_switches(pid: int) -> int | None:
    """Voluntary + involuntary context switches of all the process's threads."""
    by_thread = context_switches_by_thread(pid)
    return None if by_thread is None else sum(by_thread.values())


def link_packets(ns_name: str, dev: str) -> int | None:
    """Packets received + sent on interface ``dev`` in namespace ``ns_name`` so far."""
    res = run(["ip", "-n", ns_name, "-j", "-s", "link", "show", "dev", dev], check=False)
    if res.returncode != 0:
        return None
    try:
        stats = json.loads(res.stdout)[0]["stats64"]
        return int(stats["rx"]["packets"]) + int(stats["tx"]["packets"])
    except (ValueError, LookupError, TypeError):
        return None

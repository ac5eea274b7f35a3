"""One case, once: the bench's measurements and the figures they leave in a :class:`RunResult`.

Every measurement runs from namespace a against the case's target in b: iperf3 TCP each way,
small-packet UDP, ping idle and under load; around them the a end's counters (CPU time,
context switches, packets through its interface, peak RSS) are read before and after. A
measurement that fails is recorded and the next one still runs.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..command import LabError, run, tail
from ..netns import Netns
from ..pair import Keys, Lab, Tunnel
from ..procfs import (
    context_switches_by_thread,
    cpu_seconds,
    descendants,
    link_packets,
    peak_rss_mb,
)
from ..traffic import iperf3, ping, tcp_mbps, tcp_retransmits, udp_received_pps
from ..wgactors import launcher_argv

PING_COUNT = 20
PING_INTERVAL = 0.05  # seconds (root may go below 0.2)
LOADED_RAMP = 1.0  # seconds of TCP upload before the loaded ping starts
LOADED_MIN_SECONDS = 3  # the upload under the loaded ping lasts at least this long
UDP_LEN = 64  # bytes of UDP payload
SETTLE = 0.3  # seconds between measurements, for queues to drain
WARMUP_TRIES = 5  # pings (2 s each at most) to get the handshake done before measuring
STATUS_TIMEOUT = 10.0
PACKETS_PER = 1000  # context switches are counted per this many packets

# (key, label, format); "a end" is the process on namespace a's side of the tunnel.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("tcp_up_mbps", "TCP upload Mbit/s", "{:.1f}"),
    ("tcp_down_mbps", "TCP download Mbit/s", "{:.1f}"),
    ("tcp_sum_mbps", "TCP up+down Mbit/s", "{:.1f}"),
    ("tcp_retrans", "TCP retransmissions (up+down)", "{:.0f}"),
    ("udp_pps", f"UDP {UDP_LEN} B received pkt/s", "{:.0f}"),
    ("ping_idle_ms", "ping idle avg ms", "{:.3f}"),
    ("ping_loaded_ms", "ping under TCP upload avg ms", "{:.2f}"),
    ("rss_mb", "a end peak RSS MB (per worker process)", "{:.1f}"),
    ("cpu_pct", "a end CPU % of one core (workers included)", "{:.0f}"),
    ("ctx_per_kpkt", f"a end context switches / {PACKETS_PER} pkt", "{:.0f}"),
)

# Whether a larger value of a metric is the better one (the rest: smaller is better).
HIGHER_IS_BETTER = frozenset({"tcp_up_mbps", "tcp_down_mbps", "tcp_sum_mbps", "udp_pps"})


@dataclass
class RunResult:
    case: str
    round: int
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, **self.metrics, **self.extra, "errors": self.errors}


@dataclass(frozen=True)
class Pinning:
    """CPU lists (taskset syntax) for the peer's side and for the side under test."""

    peer: str | None = None
    ours: str | None = None

    @classmethod
    def split(cls, cpus: Sequence[int]) -> Pinning:
        """The first half of ``cpus`` for the peer, the second half for us."""
        cpus = sorted(cpus)
        if len(cpus) < 2:
            raise LabError(f"--pin needs at least 2 usable CPUs, this process has {len(cpus)}")
        half = len(cpus) // 2
        return cls(",".join(str(c) for c in cpus[:half]), ",".join(str(c) for c in cpus[half:]))


@dataclass
class Setup:
    """Where a case's traffic goes and what is measured on the a side."""

    target: str  # the address in b that iperf3 and ping aim at
    dev_a: str  # a's interface whose packet counters count the case's packets
    tunnel: Tunnel | None = None
    pid: int | None = None  # the a end's process (tunnel cases)
    checkout: Path | None = None  # where the a end's wgactors runs from (None: this checkout)


@dataclass(frozen=True)
class Counters:
    """The a side's cumulative counters at one moment."""

    t: float
    cpu_s: float | None
    switches: dict[str, int] | None  # per thread name
    packets: int | None

    @classmethod
    def read(cls, lab: Lab, setup: Setup) -> Counters:
        """The daemon and its worker processes together (each worker's threads named
        ``wN/THREAD``, where N is its place among the children)."""
        pid = setup.pid
        if pid is None:
            return cls(time.monotonic(), None, None, link_packets(lab.ns_a, setup.dev_a))
        cpu = cpu_seconds(pid)
        switches = context_switches_by_thread(pid)
        for n, child in enumerate(descendants(pid)):
            child_cpu = cpu_seconds(child)
            if cpu is not None and child_cpu is not None:
                cpu += child_cpu
            for name, count in (context_switches_by_thread(child) or {}).items():
                if switches is not None:
                    switches[f"w{n}/{name}"] = switches.get(f"w{n}/{name}", 0) + count
        return cls(time.monotonic(), cpu, switches, link_packets(lab.ns_a, setup.dev_a))


@dataclass
class Bench:
    """What every case run needs: the lab, its keys, the settings; ``baseline`` is the other
    checkout the ``@base`` cases run wgactors from."""

    lab: Lab
    keys: Keys
    seconds: int
    pin: Pinning = field(default_factory=Pinning)
    baseline: Path | None = None

    def iperf3(self, name: str, target: str, seconds: int, *extra: Any, **kw: Any) -> Any:
        return iperf3(
            self.lab.a,
            self.lab.b,
            target,
            seconds,
            *extra,
            workdir=self.lab.tmp,
            name=name,
            client_cpus=self.pin.ours,
            server_cpus=self.pin.peer,
            **kw,
        )


def ping_avg(ns: Netns, target: str, count: int = PING_COUNT) -> tuple[float, float]:
    """Average rtt (ms) and loss (%) of ``count`` pings; LabError if none came back."""
    result = ping(ns, target, count, PING_INTERVAL)
    if result.rtt_avg_ms is None:
        raise LabError(f"ping {target}: {result.error}")
    return result.rtt_avg_ms, result.loss_pct or 0.0


def warm_up(
    ns: Netns,
    target: str,
    *,
    alive: Callable[[], bool] = lambda: True,
    failure: str | None = None,
    log: Path | None = None,
) -> None:
    """Pings until one comes back (the handshake), not measured; a :class:`LabError` with
    ``failure`` (and ``log``) after WARMUP_TRIES, or as soon as ``alive`` says the end under
    test is gone."""
    for attempt in range(1, WARMUP_TRIES + 1):
        try:
            ping_avg(ns, target, count=1)
            return
        except LabError:
            if attempt == WARMUP_TRIES or not alive():
                raise LabError(failure or f"no ping to {target} (handshake?)", log) from None


def warm_up_case(bench: Bench, setup: Setup) -> None:
    """:func:`warm_up` for a case's target, giving up early if its a end exited."""
    tunnel = setup.tunnel
    warm_up(bench.lab.a, setup.target, alive=lambda: tunnel is None or tunnel.a_alive())


def measure_idle_ping(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    rtt, loss = ping_avg(bench.lab.a, setup.target)
    result.metrics["ping_idle_ms"] = rtt
    result.extra["ping_idle_loss_pct"] = loss


def measure_tcp_up(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    report = bench.iperf3(f"tcp-up-{serial}", setup.target, bench.seconds)
    result.metrics["tcp_up_mbps"] = tcp_mbps(report)
    result.extra["tcp_up_retrans"] = tcp_retransmits(report)


def measure_tcp_down(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    report = bench.iperf3(f"tcp-down-{serial}", setup.target, bench.seconds, "-R")
    result.metrics["tcp_down_mbps"] = tcp_mbps(report)
    result.extra["tcp_down_retrans"] = tcp_retransmits(report)


def measure_loaded_ping(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    found: dict[str, Any] = {}

    def ping_meanwhile() -> None:
        time.sleep(LOADED_RAMP)
        try:
            found["ping"] = ping_avg(bench.lab.a, setup.target)
        except LabError as e:
            found["error"] = e

    up_seconds = max(bench.seconds, LOADED_MIN_SECONDS)
    report = bench.iperf3(f"loaded-{serial}", setup.target, up_seconds, during=ping_meanwhile)
    if "error" in found:
        raise found["error"]
    result.metrics["ping_loaded_ms"] = found["ping"][0]
    result.extra["ping_loaded_loss_pct"] = found["ping"][1]
    result.extra["loaded_tcp_up_mbps"] = tcp_mbps(report)


def measure_udp(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    extra = ("-u", "-l", UDP_LEN, "-b", 0)
    report = bench.iperf3(f"udp-{serial}", setup.target, bench.seconds, *extra)
    got, sent = udp_received_pps(report)
    result.metrics["udp_pps"] = got
    result.extra["udp_sent_pps"] = sent


Measurement = Callable[[Bench, Setup, RunResult, int], None]
MEASUREMENTS: tuple[tuple[str, Measurement], ...] = (
    ("ping idle", measure_idle_ping),
    ("TCP upload", measure_tcp_up),
    ("TCP download", measure_tcp_down),
    ("ping under load", measure_loaded_ping),
    ("UDP pps", measure_udp),
)


def measure(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    """Every measurement in turn; one that fails is recorded and the next one still runs."""
    for name, step in MEASUREMENTS:
        try:
            step(bench, setup, result, serial)
        except LabError as e:
            result.errors.append(f"{name}: {e}")
            if e.log is not None:
                result.extra.setdefault("log_tails", {})[e.log.name] = tail(e.log)
        time.sleep(SETTLE)


def record_counters(result: RunResult, setup: Setup, before: Counters, after: Counters) -> None:
    """CPU share, context switches per 1000 packets, peak RSS: from the two readings."""
    wall = after.t - before.t
    if before.cpu_s is not None and after.cpu_s is not None and wall > 0:
        result.metrics["cpu_pct"] = 100 * (after.cpu_s - before.cpu_s) / wall
        result.extra["cpu_s"], result.extra["wall_s"] = after.cpu_s - before.cpu_s, wall
    packets = None
    if before.packets is not None and after.packets is not None:
        packets = after.packets - before.packets
        result.extra["link_packets"] = packets
    if before.switches is not None and after.switches is not None:
        by_thread = {
            name: n - before.switches.get(name, 0) for name, n in sorted(after.switches.items())
        }
        switches = sum(by_thread.values())
        result.extra["context_switches"] = switches
        result.extra["context_switches_by_thread"] = by_thread
        if packets:
            result.metrics["ctx_per_kpkt"] = PACKETS_PER * switches / packets
    if setup.pid is not None:
        # with worker processes: the largest worker's peak (each is a whole pipeline), and
        # the parent's beside it
        workers = [r for r in map(peak_rss_mb, descendants(setup.pid)) if r is not None]
        rss = max(workers) if workers else peak_rss_mb(setup.pid)
        if workers:
            result.extra["parent_rss_mb"] = peak_rss_mb(setup.pid)
            result.extra["worker_rss_mb"] = workers
        if rss is not None:
            result.metrics["rss_mb"] = rss
        else:
            result.errors.append(f"could not read VmHWM of PID {setup.pid}")


def record_tunnel(result: RunResult, setup: Setup) -> None:
    """What wireguard-go in b counted (the traffic did go through the tunnel), and wgactors's
    own per-stage counters."""
    tunnel = setup.tunnel
    if tunnel is None:
        return
    if not tunnel.a_alive():
        result.errors.append("the a end exited while measured")
    rx_tx = tunnel.b_end.transfer()
    if rx_tx is not None:
        result.extra["b_rx_bytes"], result.extra["b_tx_bytes"] = rx_tx
    if tunnel.is_wgactors:
        result.extra["status"] = wgactors_status(tunnel.a_end.iface, setup.checkout)


def wgactors_status(iface: str, checkout: Path | None = None) -> dict[str, Any] | None:
    """``wgactors status IFACE --json`` (per-stage counters) from the checkout the daemon runs
    from, or None."""
    with contextlib.suppress(Exception):
        argv = [*launcher_argv(checkout), "status", iface, "--json"]
        res = run(argv, timeout=STATUS_TIMEOUT, check=False)
        if res.returncode == 0:
            status: dict[str, Any] = json.loads(res.stdout)
            return status
    return None

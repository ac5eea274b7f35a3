"""Traffic through the lab: ping and iperf3, run inside namespaces, with results parsed.

Every run is bounded twice: by its own count or duration, and by a wall-clock timeout on the
command, so a tunnel that stops forwarding fails the measurement instead of hanging it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .command import LabError, pinned, tail
from .netns import POLL_S, Netns

IPERF_PORT = 5201
IPERF_CONNECT_TIMEOUT_MS = 3000
IPERF_SLACK_S = 30  # seconds an iperf3 client may run past its -t before it counts as hung
LISTEN_TIMEOUT_S = 5.0  # seconds for an iperf3 server to listen
PING_WAIT_S = 2  # seconds ping waits for each reply
PING_SLACK_S = 10  # seconds of slack on top of count x interval for the whole ping run
REACH_INTERVAL_S = 0.2  # the shortest interval ping allows without root
REACH_TIMEOUT_S = 30.0  # seconds one reachability check may take, start-up of ping included
SERVER_STOP_GRACE_S = 2.0


@dataclass
class PingResult:
    ok: bool = False
    rtt_avg_ms: float | None = None
    loss_pct: float | None = None
    error: str = ""


def ping(ns: Netns, target: str, count: int = 3, interval: float = 0.2) -> PingResult:
    """``count`` pings from ``ns`` to ``target``; intervals below 0.2 s need root."""
    deadline = int(count * interval + PING_SLACK_S)
    argv = ["ping", "-n", "-q", "-c", count, "-i", interval, "-W", PING_WAIT_S, "-w", deadline]
    res = ns.run(*argv, target, timeout=deadline + 5, check=False)
    result = PingResult(ok=res.returncode == 0)
    if m := re.search(r"([\d.]+)% packet loss", res.stdout):
        result.loss_pct = float(m.group(1))
    if m := re.search(r"= [\d.]+/([\d.]+)/", res.stdout):
        result.rtt_avg_ms = float(m.group(1))
    if not result.ok:
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        result.error = lines[-1] if lines else f"exit status {res.returncode}"
    return result


def reachable(ns: Netns, target: str, count: int = 3, *, source: str | None = None) -> bool:
    """Whether any of ``count`` pings from ``ns`` (from address ``source``, if given) to
    ``target`` came back: what a test asserts a tunnel carries, or must not carry.

    Unlike :func:`ping` it sets no overall deadline, so ping stops after ``count`` probes and a
    check that must fail costs seconds, not the ping deadline.
    """
    extra = ("-I", source) if source else ()
    argv = ["ping", "-c", count, "-i", REACH_INTERVAL_S, "-W", PING_WAIT_S, *extra, target]
    return ns.run(*argv, check=False, timeout=REACH_TIMEOUT_S).returncode == 0


def wait_listening(ns: Netns, port: int, proc: subprocess.Popen[Any], log: Path | None) -> None:
    """Wait (bounded) until something in ``ns`` listens on TCP or UDP ``port``."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while True:
        res = ns.run("ss", "-Hln", f"sport = :{port}", check=False, timeout=10)
        if res.returncode == 0 and res.stdout.strip():
            return
        if proc.poll() is not None:
            raise LabError(f"iperf3 server exited with {proc.returncode}", log)
        if time.monotonic() > deadline:
            raise LabError(f"iperf3 server is not listening after {LISTEN_TIMEOUT_S:g} s", log)
        time.sleep(POLL_S)


class IperfServer:
    """``iperf3 -s`` bound to ``address`` in ``ns``, listening once started; a context manager.

    ``one_off`` serves a single test and exits (``-1``), so each measurement gets a fresh one.
    """

    def __init__(
        self,
        ns: Netns,
        address: str,
        log: Path,
        *,
        port: int = IPERF_PORT,
        one_off: bool = True,
        cpus: str | None = None,
    ) -> None:
        self.ns, self.address, self.log, self.port = ns, address, log, port
        self.one_off, self.cpus = one_off, cpus
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> IperfServer:
        argv = ["iperf3", "-s", *(["-1"] if self.one_off else []), "-B", self.address]
        with open(self.log, "wb") as fh:
            self.proc = self.ns.popen(
                *pinned(self.cpus), *argv, "-p", self.port, stdout=fh, stderr=subprocess.STDOUT
            )
        wait_listening(self.ns, self.port, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.ns.stop(self.proc, grace=SERVER_STOP_GRACE_S)

    def __enter__(self) -> IperfServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def iperf3(
    client_ns: Netns,
    server_ns: Netns,
    server_addr: str,
    seconds: int,
    *extra: Any,
    workdir: Path,
    name: str,
    during: Callable[[], Any] | None = None,
    client_cpus: str | None = None,
    server_cpus: str | None = None,
) -> dict[str, Any]:
    """One iperf3 test from ``client_ns`` to a fresh server in ``server_ns``; its JSON report.

    ``extra`` are more client arguments (``-R``, ``-u -l 64 -b 0``...). ``during`` runs while
    the client does (a ping under load). Logs go to ``workdir/NAME-*``. Raises
    :class:`LabError` with the reason when the test did not produce a report.
    """
    with IperfServer(
        server_ns, server_addr, workdir / f"{name}-server.log", cpus=server_cpus
    ) as server:
        out, err = workdir / f"{name}-client.json", workdir / f"{name}-client.log"
        argv = ["iperf3", "-c", server_addr, "-p", server.port, "-t", seconds, "-J"]
        argv += ["--connect-timeout", IPERF_CONNECT_TIMEOUT_MS, *extra]
        with open(out, "wb") as fh_out, open(err, "wb") as fh_err:
            client = client_ns.popen(*pinned(client_cpus), *argv, stdout=fh_out, stderr=fh_err)
        try:
            if during is not None:
                during()
            try:
                client.wait(seconds + IPERF_SLACK_S)
            except subprocess.TimeoutExpired:
                raise LabError(
                    f"iperf3 {name} did not finish within {seconds + IPERF_SLACK_S} s"
                ) from None
        finally:
            client_ns.stop(client, grace=SERVER_STOP_GRACE_S)
        text = out.read_text(errors="replace")
        try:
            report: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:
            detail = (tail(err, 5) or text[-300:]).strip()
            raise LabError(
                f"iperf3 {name} printed no JSON (exit {client.returncode}): {detail}"
            ) from None
        if report.get("error"):
            raise LabError(f"iperf3 {name}: {report['error']}")
        if client.returncode != 0:
            raise LabError(f"iperf3 {name} exited with {client.returncode}")
        return report


def tcp_mbps(report: dict[str, Any]) -> float:
    """The receiver's TCP throughput of a report, in Mbit/s."""
    try:
        bps = float(report["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError):
        raise LabError("iperf3 JSON has no end.sum_received.bits_per_second") from None
    if bps <= 0:
        raise LabError("iperf3: nothing received")
    return bps / 1e6


def tcp_retransmits(report: dict[str, Any]) -> int | None:
    """The sender's TCP retransmissions over a report (None when iperf3 gave none: the
    sender's count is Linux-only, and in reverse mode comes from the server)."""
    try:
        return int(report["end"]["sum_sent"]["retransmits"])
    except (KeyError, TypeError, ValueError):
        return None


def udp_received_pps(report: dict[str, Any]) -> tuple[float, float]:
    """(received, sent) packets per second of a UDP test, from the receiver's figures."""
    end = report.get("end", {})
    recv = end.get("sum_received") or end.get("sum") or {}
    sent = end.get("sum_sent") or end.get("sum") or {}
    try:
        got = int(recv["packets"]) - int(recv["lost_packets"])
        seconds = float(recv["seconds"])
        sent_pps = int(sent["packets"]) / float(sent["seconds"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise LabError("iperf3 UDP JSON has no end.sum_received packets/lost_packets") from None
    if got <= 0 or seconds <= 0:
        raise LabError(f"iperf3 UDP: {got} packets received")
    return got / seconds, sent_pps

"""A soak test: wgactors against wireguard-go for minutes, then many start/stop cycles.

Run through ``sudo scripts/soak`` (which first runs ``scripts/setup``). Not part of CI. As root it
builds two network namespaces joined by a veth pair (10.87.0.1/24 <-> 10.87.0.2/24), runs
``scripts/wgactors up`` in ``a`` and wireguard-go in ``b`` (tunnel 10.97.0.1 <-> 10.97.0.2), and:

1. **Load**: iperf3 TCP through the tunnel for ``--minutes`` (default 10), in back-to-back chunks
   of ``--chunk`` seconds (default 30) carrying both directions at once (``--bidir``; or
   alternating upload and download with ``--alternate``), while wgactors's RSS (VmRSS), thread
   count and open descriptors are sampled every ``--interval`` seconds (default 10). After the
   ``--warmup`` (default 60 s) the RSS must not grow by 5 % or more (median of the last three
   samples against the median of the first three after the warm-up) and the thread and
   descriptor counts must not grow at all. Every chunk must carry data, and wgactors must still
   be running at the end and exit 0 on SIGTERM.
2. **Cycles**: ``--cycles`` (default 50) times start wgactors, ping through the tunnel once, and
   stop it with SIGTERM (exit 0). After each cycle nothing may be left: no interface, no UAPI
   socket, no UDP socket in the namespace, no wgactors process.

It prints a report, writes it as JSON with ``--json PATH``, and exits 0 when every check passed,
1 otherwise (130 when interrupted). Everything it creates is removed on the way out, also on
Ctrl-C or SIGTERM. Every wait is bounded; no traffic leaves its own namespaces.

Quick check of the script itself: ``sudo scripts/soak --minutes 1 --cycles 3 --warmup 10``.

It is built on the lab (``actors.lab``) that the tests, the demo and the bench share.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from actors.lab import (
    DAEMON_ENV_VARS,
    WG_SOCKET_DIR,
    Netns,
    Wgactors,
    WgPeer,
    WireguardGo,
    gen_keypair,
    preflight,
    veth_pair,
    write_conf,
)
from actors.lab.signals import raise_interrupt

UNDERLAY_A, UNDERLAY_B = "10.87.0.1", "10.87.0.2"
TUNNEL_A, TUNNEL_B = "10.97.0.1", "10.97.0.2"
OUR_PORT, PEER_PORT, IPERF_PORT = 51821, 51820, 5201
RSS_GROWTH_LIMIT = 5.0  # percent
BASELINE_SAMPLES = 3  # samples averaged (median) at each end of the post-warm-up window
MIN_CHUNK = 2  # seconds: a shorter remainder is not worth an iperf3 run
CHUNK_SLACK = 30.0  # seconds an iperf3 client may run past its -t before it is killed
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL for wgactors at teardown


# --------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    t: float  # seconds since the load phase started
    rss_kb: int
    threads: int
    fds: int
    cpu_s: float


def sample(pid: int, t: float) -> Sample | None:
    """VmRSS, Threads, open descriptors and CPU seconds of ``pid``; None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Sample(
        t=round(t, 2),
        rss_kb=int(fields["VmRSS"].split()[0]),
        threads=int(fields["Threads"]),
        fds=fds,
        cpu_s=(int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"),
    )


class Sampler(threading.Thread):
    """Samples ``pid`` every ``interval`` seconds (the first at once) until stopped."""

    def __init__(self, pid: int, interval: float, start: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.pid, self.interval, self.t0 = pid, interval, start
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        n = 0
        while True:
            s = sample(self.pid, time.monotonic() - self.t0)
            if s is None:
                return
            self.samples.append(s)
            n += 1
            delay = self.t0 + n * self.interval - time.monotonic()
            if self._stop_event.wait(max(0.0, delay)):
                return

    def stop(self) -> list[Sample]:
        self._stop_event.set()
        self.join(10)
        return self.samples


# --------------------------------------------------------------------------- the report


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    args: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    final_stats: Any = None
    error: str | None = None

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        return bool(ok)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "args": self.args,
            "error": self.error,
            "checks": [asdict(c) for c in self.checks],
            "figures": self.figures,
            "samples": [asdict(s) for s in self.samples],
            "chunks": self.chunks,
            "cycles": self.cycles,
            "final_stats": self.final_stats,
        }


def parse_final_stats(log: str) -> Any:
    if "final stats:" not in log:
        return None
    line = log.rsplit("final stats:", 1)[1].strip().splitlines()[0]
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError):
        return line


def log_tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- the soak


class Soak:
    def __init__(self, args: argparse.Namespace, report: Report) -> None:
        self.args = args
        self.report = report
        self.tmp = Path(tempfile.mkdtemp(prefix="wga-soak-"))
        self.iface = f"wgs{secrets.token_hex(3)}"
        self.stack = contextlib.ExitStack()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- set-up

    def setup(self) -> None:
        self.a = self.stack.enter_context(Netns())
        self.b = self.stack.enter_context(Netns())
        veth_pair(self.a, self.b, UNDERLAY_A, UNDERLAY_B)
        ours, our_pub = gen_keypair()
        theirs, _ = gen_keypair()
        self.wggo = self.stack.enter_context(
            WireguardGo(
                self.b,
                theirs,
                listen_port=PEER_PORT,
                addresses=[f"{TUNNEL_B}/24"],
                peers=[WgPeer(our_pub, [f"{TUNNEL_A}/32"], endpoint=(UNDERLAY_A, OUR_PORT))],
            )
        )
        self.conf = write_conf(
            self.tmp,
            self.iface,
            {"PrivateKey": ours, "ListenPort": OUR_PORT, "Address": f"{TUNNEL_A}/24"},
            [
                {
                    "PublicKey": self.wggo.public_key,
                    "AllowedIPs": f"{TUNNEL_B}/32",
                    "Endpoint": f"{UNDERLAY_B}:{PEER_PORT}",
                }
            ],
        )

    def ping(self, count: int = 1) -> bool:
        res = self.a.run(
            "ping", "-c", count, "-i", "0.2", "-W", "2", TUNNEL_B, check=False, timeout=30
        )
        return res.returncode == 0

    def start_daemon(self) -> Wgactors:
        daemon = Wgactors(self.a, self.conf, log_dir=self.tmp)
        self.stack.callback(self.stop_daemon, daemon)
        return daemon.start()

    def stop_daemon(self, daemon: Wgactors) -> None:
        """Teardown (also on Ctrl-C): SIGTERM so wgactors removes its UAPI socket itself, SIGKILL
        only if it does not exit; then remove a socket a killed daemon left. Never raises."""
        proc = daemon.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.terminate()
                proc.wait(STOP_GRACE)
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    proc.kill()
                    proc.wait(STOP_GRACE)
        with contextlib.suppress(OSError):
            if proc is not None and proc.poll() is not None:
                (WG_SOCKET_DIR / f"{self.iface}.sock").unlink(missing_ok=True)

    # -- phase 1: load

    def start_iperf_server(self) -> None:
        log = open(self.tmp / "iperf3-server.log", "wb")  # noqa: SIM115 (closed by the stack)
        self.stack.callback(log.close)
        self.b.popen(
            "iperf3", "-s", "-B", TUNNEL_B, "-p", IPERF_PORT, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 5
        while f":{IPERF_PORT} " not in self.b.run("ss", "-tlnH").stdout + " ":
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server is not listening after 5 s")
            time.sleep(0.05)

    def iperf_chunk(self, seconds: int, direction: str) -> dict[str, Any]:
        """One iperf3 run from namespace a: ``upload``, ``download`` (-R) or ``bidir``."""
        argv = ["iperf3", "-c", TUNNEL_B, "-p", IPERF_PORT, "-t", seconds, "-J"]
        argv += {"upload": [], "download": ["-R"], "bidir": ["--bidir"]}[direction]
        chunk: dict[str, Any] = {"direction": direction, "s": seconds}
        try:
            res = self.a.run(*argv, check=False, timeout=seconds + CHUNK_SLACK)
        except subprocess.TimeoutExpired:
            chunk.update(ok=False, error=f"iperf3 ran past {seconds + CHUNK_SLACK:g} s")
            return chunk
        try:
            end = json.loads(res.stdout)["end"]
            # from a's point of view: what b received is our upload, what we received our download
            if direction == "bidir":
                up = end["sum_received"]["bits_per_second"]
                down = end["sum_received_bidir_reverse"]["bits_per_second"]
                retrans = [end["sum_sent"].get("retransmits"),
                           end["sum_sent_bidir_reverse"].get("retransmits")]  # fmt: skip
            else:
                bps = end["sum_received"]["bits_per_second"]
                up, down = (bps, None) if direction == "upload" else (None, bps)
                retrans = [end["sum_sent"].get("retransmits")]
        except (ValueError, KeyError, TypeError):
            err = (res.stdout or res.stderr).strip()[-300:]
            chunk.update(ok=False, error=f"exit {res.returncode}: {err}")
            return chunk
        rates = [r for r in (up, down) if r is not None]
        chunk.update(
            ok=res.returncode == 0 and all(r > 0 for r in rates),
            upload_mbit_s=None if up is None else round(up / 1e6, 1),
            download_mbit_s=None if down is None else round(down / 1e6, 1),
            retransmits=retrans,
        )
        return chunk

    def load_phase(self) -> None:
        args, report = self.args, self.report
        print(
            f"\n== load: iperf3 through the tunnel for {args.minutes:g} min "
            f"({args.chunk} s chunks, {'alternating' if args.alternate else 'both ways at once'}), "
            f"sampling every {args.interval:g} s, "
            f"warm-up {args.warmup:g} s",
            flush=True,
        )
        daemon = self.start_daemon()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        report.check("first ping", self.ping(3), f"{TUNNEL_A} -> {TUNNEL_B}")
        self.start_iperf_server()
        duration = args.minutes * 60
        t0 = time.monotonic()
        sampler = Sampler(pid, args.interval, t0)
        sampler.start()
        directions = ["upload", "download"] if args.alternate else ["bidir"]
        try:
            while True:
                remaining = duration - (time.monotonic() - t0)
                if remaining < MIN_CHUNK:
                    break
                if daemon.proc.poll() is not None:
                    break
                seconds = int(min(args.chunk, remaining))
                chunk = self.iperf_chunk(seconds, directions[len(report.chunks) % len(directions)])
                chunk["t"] = round(time.monotonic() - t0, 1)
                report.chunks.append(chunk)
                last = sampler.samples[-1] if sampler.samples else None
                rates = " ".join(
                    f"{name} {chunk[f'{name}_mbit_s']:>6.1f}"
                    for name in ("upload", "download")
                    if chunk.get(f"{name}_mbit_s") is not None
                )
                print(
                    f"  t={chunk['t']:>6.1f}s {chunk['direction']:<8} "
                    + (f"{rates} Mbit/s" if chunk["ok"] else f"FAILED: {chunk.get('error')}")
                    + (
                        f"  rss={last.rss_kb / 1024:.1f} MiB threads={last.threads} fds={last.fds}"
                        if last
                        else ""
                    ),
                    flush=True,
                )
                if not chunk["ok"]:
                    time.sleep(1)  # bounded: the loop ends with the duration
        finally:
            samples = sampler.stop()
        elapsed = time.monotonic() - t0
        last = sample(pid, elapsed)
        if last is not None:
            samples.append(last)
        report.samples = samples
        alive = daemon.proc.poll() is None
        report.check("wgactors survived the load", alive, f"pid {pid} after {elapsed:.0f} s")
        failed = [c for c in report.chunks if not c["ok"]]
        report.check(
            "every iperf3 chunk carried data",
            bool(report.chunks) and not failed,
            f"{len(report.chunks) - len(failed)}/{len(report.chunks)} chunks"
            + (f"; first failure: {failed[0].get('error')}" if failed else ""),
        )
        self.analyse(samples)
        rc = daemon.terminate() if alive else daemon.proc.returncode
        report.check("SIGTERM after the load exits 0", rc == 0, f"exit {rc}")
        report.final_stats = parse_final_stats(daemon.log())
        if rc != 0 or not alive:
            print(log_tail(daemon.log()), flush=True)
        fig = report.figures
        fig["load_seconds"] = round(elapsed, 1)
        fig["iperf_chunks"] = len(report.chunks)
        for name in ("upload", "download"):
            values = [c[f"{name}_mbit_s"] for c in report.chunks if c.get(f"{name}_mbit_s")]
            if values:
                fig[f"{name}_mbit_s"] = {
                    "mean": round(statistics.mean(values), 1),
                    "min": min(values),
                    "max": max(values),
                }
        if len(samples) >= 2:
            cpu = samples[-1].cpu_s - samples[0].cpu_s
            wall = samples[-1].t - samples[0].t
            fig["cpu_percent_of_one_core"] = round(100 * cpu / wall, 1) if wall > 0 else None

    def analyse(self, samples: list[Sample]) -> None:
        args, report = self.args, self.report
        post = [s for s in samples if s.t >= args.warmup]
        fig = report.figures
        if samples:
            fig["rss_mib_start"] = round(samples[0].rss_kb / 1024, 1)
            fig["rss_mib_peak"] = round(max(s.rss_kb for s in samples) / 1024, 1)
        if len(post) < 2:
            report.check(
                "enough samples after the warm-up",
                False,
                f"{len(post)} sample(s) after {args.warmup:g} s: run longer or sample faster",
            )
            return
        k = max(1, min(BASELINE_SAMPLES, len(post) // 2))
        head, tail = post[:k], post[-k:]
        rss0 = statistics.median(s.rss_kb for s in head)
        rss1 = statistics.median(s.rss_kb for s in tail)
        growth = 100 * (rss1 - rss0) / rss0
        fig.update(
            rss_mib_after_warmup=round(rss0 / 1024, 1),
            rss_mib_end=round(rss1 / 1024, 1),
            rss_growth_percent=round(growth, 2),
            threads=[min(s.threads for s in post), max(s.threads for s in post)],
            fds=[min(s.fds for s in post), max(s.fds for s in post)],
            samples_after_warmup=len(post),
        )
        report.check(
            f"RSS growth after the warm-up < {RSS_GROWTH_LIMIT:g} %",
            growth < RSS_GROWTH_LIMIT,
            f"{rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB ({growth:+.2f} %, "
            f"median of {k} samples at each end of {len(post)})",
        )
        th0, th1 = max(s.threads for s in head), max(s.threads for s in tail)
        report.check("no thread growth", th1 <= th0, f"{th0} -> {th1} (max {fig['threads'][1]})")
        fd0, fd1 = max(s.fds for s in head), max(s.fds for s in tail)
        report.check("no descriptor growth", fd1 <= fd0, f"{fd0} -> {fd1} (max {fig['fds'][1]})")

    # -- phase 2: start/stop cycles

    def leftovers(self) -> list[str]:
        """What a stopped wgactors must not leave behind (bounded wait for it to go)."""
        sock = WG_SOCKET_DIR / f"{self.iface}.sock"
        deadline = time.monotonic() + 3
        while True:
            found = []
            if self.a.ip("link", "show", "dev", self.iface, check=False).returncode == 0:
                found.append(f"interface {self.iface}")
            if sock.exists():
                found.append(str(sock))
            udp = self.a.run("ss", "-uanH", check=False).stdout.strip()
            if udp:
                found.append(f"UDP sockets: {udp.splitlines()}")
            pids = self.a.pids()
            if pids:
                found.append(f"processes in the namespace: {pids}")
            ours = self.our_processes()
            if ours:
                found.append(f"wgactors processes: {ours}")
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def our_processes(self) -> list[int]:
        """Processes anywhere whose command line names our configuration file."""
        needle = str(self.conf).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
        return pids

    def cycle_phase(self) -> None:
        args, report = self.args, self.report
        print(f"\n== cycles: {args.cycles} x (start, ping, SIGTERM)", flush=True)
        problems: list[str] = []
        for i in range(1, args.cycles + 1):
            t = time.monotonic()
            entry: dict[str, Any] = {"cycle": i}
            try:
                daemon = self.start_daemon()
                entry["up_s"] = round(time.monotonic() - t, 2)
                entry["ping"] = self.ping(1)
                entry["exit"] = daemon.terminate()
            except (RuntimeError, TimeoutError, AssertionError) as e:
                entry["error"] = str(e).splitlines()[0][:300]
            entry["leftovers"] = self.leftovers()
            entry["s"] = round(time.monotonic() - t, 2)
            report.cycles.append(entry)
            ok = (
                "error" not in entry
                and entry.get("exit") == 0
                and entry.get("ping")
                and not entry["leftovers"]
            )
            if not ok:
                problems.append(f"cycle {i}: {entry}")
            if not ok or i == args.cycles or i % 10 == 0:
                print(
                    f"  cycle {i:>3}: up {entry.get('up_s', '-')} s, "
                    f"ping {'ok' if entry.get('ping') else 'FAILED'}, exit {entry.get('exit')}, "
                    f"leftovers {entry['leftovers'] or 'none'}",
                    flush=True,
                )
        n = len(report.cycles)
        exits = sum(1 for c in report.cycles if c.get("exit") == 0)
        pings = sum(1 for c in report.cycles if c.get("ping"))
        clean = sum(1 for c in report.cycles if not c["leftovers"] and "error" not in c)
        report.check("every cycle exited 0 on SIGTERM", exits == n, f"{exits}/{n}")
        report.check("the tunnel worked in every cycle", pings == n, f"{pings}/{n}")
        report.check(
            "nothing left after any cycle (interface, UAPI socket, UDP socket, process)",
            clean == n,
            f"{clean}/{n} clean" + (f"; first problem: {problems[0]}" if problems else ""),
        )
        if report.cycles:
            report.figures["cycle_seconds_mean"] = round(
                statistics.mean(c["s"] for c in report.cycles), 2
            )

    def run(self) -> None:
        self.setup()
        if self.args.minutes > 0:
            self.load_phase()
        if self.args.cycles > 0:
            self.cycle_phase()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/soak",
        description="Soak test: iperf3 through wgactors for minutes, then start/stop cycles.",
    )
    p.add_argument("--minutes", type=float, default=10, help="load duration (10)")
    p.add_argument("--warmup", type=float, default=60, help="seconds before RSS counts (60)")
    p.add_argument("--cycles", type=int, default=50, help="start/stop cycles (50)")
    p.add_argument("--interval", type=float, default=10, help="seconds between samples (10)")
    p.add_argument("--chunk", type=int, default=30, help="seconds per iperf3 run (30)")
    p.add_argument(
        "--alternate",
        action="store_true",
        help="alternate upload and download chunks instead of both at once (iperf3 --bidir)",
    )
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    args = p.parse_args(argv)
    if args.minutes < 0 or args.cycles < 0 or args.interval <= 0 or args.chunk < MIN_CHUNK:
        p.error("--minutes and --cycles must be >= 0, --interval > 0, --chunk >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = preflight("soak")
    if reason:
        print(f"scripts/soak: {reason}", file=sys.stderr)
        return 1
    for var in DAEMON_ENV_VARS:
        os.environ.pop(var, None)
    signal.signal(signal.SIGTERM, raise_interrupt)
    report = Report(args=vars(args))
    soak = Soak(args, report)
    started = time.monotonic()
    interrupted = False
    try:
        soak.run()
    except KeyboardInterrupt:
        interrupted = True
        report.error = "interrupted"
    except Exception as e:
        report.error = f"{type(e).__name__}: {e}"
        print(f"\nscripts/soak: {report.error}", file=sys.stderr)
    finally:
        soak.close()
    report.figures["total_seconds"] = round(time.monotonic() - started, 1)
    print("\n== report")
    for k, v in report.figures.items():
        print(f"  {k}: {v}")
    failed = [c for c in report.checks if not c.ok]
    for c in failed:
        print(f"  FAILED: {c.name}: {c.detail}")
    verdict = "INTERRUPTED" if interrupted else "PASS" if report.passed else "FAIL"
    print(f"  {verdict}: {len(report.checks) - len(failed)}/{len(report.checks)} checks passed")
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"  report written to {args.json}")
    if interrupted:
        return 130
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""A live tunnel demo: wgactors against the reference wireguard-go, in network namespaces.

Run through ``sudo scripts/demo`` (which first runs ``scripts/setup``). As root it builds two
network namespaces joined by a veth pair (10.88.0.1/24 <-> 10.88.0.2/24) and, in turn, runs
three tunnels (10.99.0.1 <-> 10.99.0.2) across it:

1. reference: wireguard-go in both namespaces;
2. wgactors (``scripts/wgactors up``) in namespace a, wireguard-go in b;
3. the same with ``--single-threaded``.

For each it pings both ways and measures TCP throughput with iperf3 in both directions, then
prints a table comparing the wgactors cases with the reference. Every wait is bounded, and
everything it created (processes, namespaces, temp files) is removed on the way out, also on
Ctrl-C or SIGTERM. No traffic leaves its own namespaces.

Exit status: 0 when every ping and transfer succeeded, 1 otherwise (the failures and the
tail of the relevant log are printed), 130 when interrupted.

Self-contained on purpose: it uses only the standard library and the command-line tools
(ip, wg, wireguard-go, ping, iperf3), not the test suite's helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "wgactors"
WG_SOCKET_DIR = Path("/var/run/wireguard")

UNDERLAY_A, UNDERLAY_B = "10.88.0.1", "10.88.0.2"
TUNNEL_A, TUNNEL_B = "10.99.0.1", "10.99.0.2"
WG_PORT = 51820
IPERF_PORT = 5201
MTU = 1280

IFACE_TIMEOUT = 5.0  # seconds for an interface to appear (and get its address)
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
IFACE_GONE_TIMEOUT = 3.0  # seconds for a stopped end's interface to go before it is deleted
LOG_TAIL_LINES = 30
TOOLS = ("ip", "wg", "wireguard-go", "ping", "iperf3", "ss")
# Environment variables that would change what `wgactors up` runs; the demo runs it plain.
WGACTORS_ENV_DROP = ("WGACTORS_PIPELINE", "WGACTORS_INJECT_FAULTS", "WGACTORS_LOG_LEVEL")


class DemoError(Exception):
    """A step failed; the message says which, ``log`` names the log worth showing."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def raise_interrupt(signum: int, _frame: object) -> None:
    """Signal handler: SIGTERM and SIGHUP clean up like Ctrl-C (also used by bench and soak)."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(
    argv: Sequence[Any], *, timeout: float = 10, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded by ``timeout``); output captured as text."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DemoError(f"`{' '.join(args)}` did not finish within {timeout:g} s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise DemoError(f"`{' '.join(args)}` failed ({proc.returncode}): {detail}")
    return proc


def tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- the lab


@dataclass
class Proc:
    """A background process started in a namespace, in its own session."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class Lab:
    """Two namespaces joined by a veth pair, and everything started in them.

    :meth:`close` stops every process, deletes the namespaces and the temp directory; it is
    bounded in time and never raises.
    """

    def __init__(self, prefix: str = "wgd") -> None:
        # ``prefix`` names everything it creates (scripts/bench.py uses its own).
        self.prefix = prefix
        self.tag = secrets.token_hex(2)
        self.ns_a = f"{prefix}-{self.tag}-a"
        self.ns_b = f"{prefix}-{self.tag}-b"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-{self.tag}-"))
        self.namespaces: list[str] = []
        self.procs: list[Proc] = []
        self.sockets: list[Path] = []

    # -- set-up

    def create(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        veth_a, veth_b = f"{self.prefix}{self.tag}va", f"{self.prefix}{self.tag}vb"
        end_a = ["ip", "link", "add", veth_a, "netns", self.ns_a, "type", "veth"]
        run([*end_a, "peer", "name", veth_b, "netns", self.ns_b])
        ends = ((self.ns_a, veth_a, UNDERLAY_A), (self.ns_b, veth_b, UNDERLAY_B))
        for ns, dev, _ in ends:  # up first, then addresses
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        for ns, dev, addr in ends:
            run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
        deadline = time.monotonic() + 5
        for ns, dev, _ in ends:
            while "LOWER_UP" not in run(["ip", "-n", ns, "-o", "link", "show", dev]).stdout:
                if time.monotonic() > deadline:
                    raise DemoError(f"veth {dev} in {ns} has no carrier after 5 s")
                time.sleep(0.02)

    def exec(self, ns: str, *argv: Any, timeout: float = 10, check: bool = True, **kw: Any):
        return run(["ip", "netns", "exec", ns, *argv], timeout=timeout, check=check, **kw)

    def start(self, ns: str, name: str, *argv: Any, env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, *(str(a) for a in argv)],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM its process group, SIGKILL after ``grace``; returns the exit status."""
        p = proc.popen
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            if p.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(wait)
        if proc in self.procs:
            self.procs.remove(proc)
        return p.poll()

    def key_file(self, name: str, key: str) -> Path:
        path = self.tmp / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return path

    def wait_iface(self, ns: str, iface: str, addr: str, proc: Proc) -> None:
        """Wait (bounded) until ``iface`` exists in ``ns`` and carries ``addr``."""
        deadline = time.monotonic() + IFACE_TIMEOUT
        while True:
            res = run(["ip", "-n", ns, "-o", "addr", "show", "dev", iface], check=False)
            if res.returncode == 0 and f"inet {addr}/" in res.stdout:
                return
            if proc.popen.poll() is not None:
                raise DemoError(
                    f"{proc.name} exited with {proc.popen.returncode} before {iface} was up",
                    proc.log,
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{iface} did not come up in {ns} within {IFACE_TIMEOUT:g} s", proc.log
                )
            time.sleep(0.05)

    def gone(self, ns: str, iface: str) -> bool:
        return run(["ip", "-n", ns, "link", "show", "dev", iface], check=False).returncode != 0

    # -- tear-down

    def _ns_pids(self, ns: str) -> list[int]:
        res = run(["ip", "netns", "pids", ns], check=False)
        return [int(t) for t in res.stdout.split() if t.isdigit() and int(t) != os.getpid()]

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for ns in list(self.namespaces):
            # Anything else still running in there (there should be nothing).
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(Exception):
                    pids = self._ns_pids(ns)
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(pid, sig)
                    deadline = time.monotonic() + 2
                    while pids and self._ns_pids(ns) and time.monotonic() < deadline:
                        time.sleep(0.05)
            for _ in range(50):
                with contextlib.suppress(Exception):
                    run(["ip", "netns", "del", ns], check=False)
                with contextlib.suppress(Exception):
                    if not Path("/run/netns", ns).exists():
                        break
                time.sleep(0.1)
            self.namespaces.remove(ns)
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.unlink(missing_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- tunnel ends


def wg_keypair() -> tuple[str, str]:
    private = run(["wg", "genkey"]).stdout.strip()
    public = run(["wg", "pubkey"], input=private + "\n").stdout.strip()
    return private, public


def start_wireguard_go(
    lab: Lab,
    ns: str,
    iface: str,
    private_key: str,
    peer_public: str,
    address: str,
    peer_address: str,
    peer_endpoint: str,
) -> Proc:
    sock = WG_SOCKET_DIR / f"{iface}.sock"
    if sock.exists():
        raise DemoError(f"{sock} already exists: is another {iface} running?")
    env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL="verbose")
    proc = lab.start(ns, f"wireguard-go-{iface}", "wireguard-go", "-f", iface, env=env)
    lab.sockets.append(sock)
    deadline = time.monotonic() + IFACE_TIMEOUT
    while not sock.exists():
        if proc.popen.poll() is not None:
            raise DemoError(f"wireguard-go exited with {proc.popen.returncode}", proc.log)
        if time.monotonic() > deadline:
            raise DemoError(
                f"wireguard-go did not create {sock} within {IFACE_TIMEOUT:g} s", proc.log
            )
        time.sleep(0.02)
    key = lab.key_file(f"{iface}.key", private_key)
    lab.exec(ns, "wg", "set", iface, "private-key", key, "listen-port", WG_PORT)
    lab.exec(
        ns,
        "wg", "set", iface, "peer", peer_public,
        "allowed-ips", f"{peer_address}/32", "endpoint", peer_endpoint,
    )  # fmt: skip
    lab.exec(ns, "ip", "addr", "add", f"{address}/24", "dev", iface)
    lab.exec(ns, "ip", "link", "set", "dev", iface, "mtu", MTU, "up")
    lab.wait_iface(ns, iface, address, proc)
    return proc


def start_wgactors(
    lab: Lab,
    ns: str,
    iface: str,
    private_key: str,
    peer_public: str,
    *extra: str,
    verbose: bool = True,
) -> Proc:
    conf = lab.tmp / f"{iface}.conf"
    text = (
        "[Interface]\n"
        f"PrivateKey = {private_key}\n"
        f"ListenPort = {WG_PORT}\n"
        f"Address = {TUNNEL_A}/24\n"
        "\n[Peer]\n"
        f"PublicKey = {peer_public}\n"
        f"AllowedIPs = {TUNNEL_B}/32\n"
        f"Endpoint = {UNDERLAY_B}:{WG_PORT}\n"
    )
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    env = {k: v for k, v in os.environ.items() if k not in WGACTORS_ENV_DROP}
    flags = ["-v"] if verbose else []
    proc = lab.start(ns, f"wgactors-{iface}", LAUNCHER, "up", conf, *flags, *extra, env=env)
    lab.wait_iface(ns, iface, TUNNEL_A, proc)
    return proc


# --------------------------------------------------------------------------- measurements


@dataclass
class PingResult:
    ok: bool = False
    rtt_avg_ms: float | None = None
    loss_pct: float | None = None
    error: str = ""


@dataclass
class CaseResult:
    key: str
    label: str
    ping_ab: PingResult | None = None
    ping_ba: PingResult | None = None
    upload_mbps: float | None = None
    download_mbps: float | None = None
    upload_ratio: float | None = None
    download_ratio: float | None = None
    failures: list[str] = field(default_factory=list)
    log_tails: dict[str, str] = field(default_factory=dict)
    exit_status: int | None = None  # of wgactors after SIGTERM
    # What wireguard-go in b counted for its peer: proof the traffic went through the tunnel.
    b_rx_bytes: int | None = None
    b_tx_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def ping(lab: Lab, ns: str, target: str) -> PingResult:
    res = lab.exec(ns, "ping", "-n", "-c", 3, "-i", 0.2, "-W", 2, target, timeout=15, check=False)
    out = res.stdout
    result = PingResult(ok=res.returncode == 0)
    if m := re.search(r"([\d.]+)% packet loss", out):
        result.loss_pct = float(m.group(1))
    if m := re.search(r"= [\d.]+/([\d.]+)/", out):
        result.rtt_avg_ms = float(m.group(1))
    if not result.ok:
        lines = [ln for ln in (out + res.stderr).splitlines() if ln.strip()]
        result.error = lines[-1] if lines else f"exit status {res.returncode}"
    return result


def start_iperf_server(lab: Lab, name: str, listen: str = "-Hltn") -> Proc:
    """A one-shot iperf3 server in namespace b, once it is listening (bounded wait)."""
    server = lab.start(lab.ns_b, name, "iperf3", "-s", "-1", "-B", TUNNEL_B, "-p", IPERF_PORT)
    deadline = time.monotonic() + 5
    while True:
        res = lab.exec(lab.ns_b, "ss", listen, f"sport = :{IPERF_PORT}", check=False)
        if res.returncode == 0 and res.stdout.strip():
            return server
        if server.popen.poll() is not None:
            raise DemoError(f"iperf3 server exited with {server.popen.returncode}", server.log)
        if time.monotonic() > deadline:
            raise DemoError("iperf3 server is not listening after 5 s", server.log)
        time.sleep(0.05)


def iperf(lab: Lab, seconds: int, reverse: bool) -> float:
    """TCP throughput in Mbit/s, measured at the receiver; raises DemoError on failure."""
    name = "iperf3-server-" + ("download" if reverse else "upload")
    server = start_iperf_server(lab, name)
    try:
        argv = ["iperf3", "-c", TUNNEL_B, "-p", IPERF_PORT, "-t", seconds, "-J"]
        argv += ["--connect-timeout", 3000] + (["-R"] if reverse else [])
        res = lab.exec(lab.ns_a, *argv, timeout=seconds + 30, check=False)
        try:
            report = json.loads(res.stdout)
        except json.JSONDecodeError:
            detail = (res.stderr or res.stdout).strip()[-500:]
            raise DemoError(
                f"iperf3 client printed no JSON (exit {res.returncode}): {detail}"
            ) from None
        if report.get("error"):
            raise DemoError(f"iperf3: {report['error']}")
        try:
            bps = float(report["end"]["sum_received"]["bits_per_second"])
        except (KeyError, TypeError, ValueError):
            raise DemoError("iperf3 JSON has no end.sum_received.bits_per_second") from None
        if res.returncode != 0 or bps <= 0:
            raise DemoError(f"iperf3 client exit {res.returncode}, {bps:g} bit/s")
        return bps / 1e6
    finally:
        lab.stop(server, grace=2.0)


def measure(lab: Lab, result: CaseResult, seconds: int) -> None:
    for attr, ns, target in (("ping_ab", lab.ns_a, TUNNEL_B), ("ping_ba", lab.ns_b, TUNNEL_A)):
        p = ping(lab, ns, target)
        setattr(result, attr, p)
        if not p.ok:
            arrow = "a→b" if attr == "ping_ab" else "b→a"
            result.failures.append(f"ping {arrow} ({target}) failed: {p.error}")
    for attr, reverse in (("upload_mbps", False), ("download_mbps", True)):
        try:
            setattr(result, attr, iperf(lab, seconds, reverse))
        except DemoError as e:
            result.failures.append(f"{'download' if reverse else 'upload'}: {e}")
            if e.log is not None:
                result.log_tails[e.log.name] = tail(e.log)


def run_case(
    lab: Lab,
    result: CaseResult,
    index: int,
    keys: dict[str, tuple[str, str]],
    seconds: int,
    wgactors_args: Sequence[str] | None,
) -> None:
    """One case: start both ends, measure, stop both ends (errors go into ``result``)."""
    (priv_a, pub_a), (priv_b, pub_b) = keys["a"], keys["b"]
    iface_a, iface_b = f"wgd{lab.tag}{index}a", f"wgd{lab.tag}{index}b"
    started: list[tuple[str, str, Proc]] = []
    watch_logs: list[Path] = []
    try:
        b = start_wireguard_go(
            lab, lab.ns_b, iface_b, priv_b, pub_a, TUNNEL_B, TUNNEL_A, f"{UNDERLAY_A}:{WG_PORT}"
        )
        started.append((lab.ns_b, iface_b, b))
        if wgactors_args is None:
            a = start_wireguard_go(
                lab, lab.ns_a, iface_a, priv_a, pub_b, TUNNEL_A, TUNNEL_B, f"{UNDERLAY_B}:{WG_PORT}"
            )
            watch_logs += [a.log, b.log]
        else:
            a = start_wgactors(lab, lab.ns_a, iface_a, priv_a, pub_b, *wgactors_args)
            watch_logs.append(a.log)
        started.append((lab.ns_a, iface_a, a))
        measure(lab, result, seconds)
        result.b_rx_bytes, result.b_tx_bytes = peer_transfer(lab, iface_b)
    except DemoError as e:
        result.failures.append(f"setting up: {e}")
        if e.log is not None and e.log not in watch_logs:
            watch_logs.append(e.log)
    finally:
        result.exit_status = stop_ends(lab, started)
        if result.failures:
            for log in watch_logs:
                result.log_tails.setdefault(log.name, tail(log))


def peer_transfer(lab: Lab, iface_b: str) -> tuple[int | None, int | None]:
    """What wireguard-go in b counted for its one peer (rx, tx bytes): proof that the
    traffic went through the tunnel."""
    res = lab.exec(lab.ns_b, "wg", "show", iface_b, "transfer", check=False)
    fields = res.stdout.split()
    if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
        return int(fields[1]), int(fields[2])
    return None, None


def stop_ends(lab: Lab, started: Sequence[tuple[str, str, Proc]]) -> int | None:
    """Stop the tunnel ends in reverse order, making sure their interfaces are gone; the
    exit status of wgactors among them (None if it was not one of them)."""
    wgactors_status = None
    for ns, iface, proc in reversed(started):
        status = lab.stop(proc)
        if proc.name.startswith("wgactors"):
            wgactors_status = status
        deadline = time.monotonic() + IFACE_GONE_TIMEOUT
        while not lab.gone(ns, iface) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not lab.gone(ns, iface):
            run(["ip", "-n", ns, "link", "del", "dev", iface], check=False)
    return wgactors_status


# --------------------------------------------------------------------------- report


def fmt_ping(p: PingResult | None) -> str:
    if p is None:
        return "-"
    if not p.ok:
        return "FAIL"
    return f"ok {p.rtt_avg_ms:.2f} ms" if p.rtt_avg_ms is not None else "ok"


def fmt_num(v: float | None, suffix: str = "") -> str:
    return "-" if v is None else f"{v:.1f}{suffix}"


def fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def print_table(results: Sequence[CaseResult]) -> None:
    head = (
        "case",
        "ping a→b",
        "ping b→a",
        "upload Mbit/s",
        "download Mbit/s",
        "up/ref",
        "down/ref",
    )
    rows = [head] + [
        (
            r.label,
            fmt_ping(r.ping_ab),
            fmt_ping(r.ping_ba),
            fmt_num(r.upload_mbps),
            fmt_num(r.download_mbps),
            fmt_ratio(r.upload_ratio),
            fmt_ratio(r.download_ratio),
        )
        for r in results
    ]
    print_rows(rows)


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: the first row is the header, the first column left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def to_json(results: Sequence[CaseResult], seconds: int, quick: bool, ok: bool) -> dict[str, Any]:
    cases = {}
    for r in results:
        d = asdict(r)
        d.pop("log_tails")
        d["ok"] = r.ok
        cases[r.key] = d
    return {"ok": ok, "quick": quick, "seconds": seconds, "cases": cases}


# --------------------------------------------------------------------------- main


def preflight(script: str = "demo") -> str:
    """Why ``scripts/SCRIPT`` (demo, bench, soak) cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return f"needs root (network namespaces, TUN devices): run `sudo scripts/{script}`"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (scripts/setup installs them)"
    return ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Live tunnel demo: wgactors against wireguard-go in network namespaces.",
    )
    parser.add_argument(
        "--seconds", type=int, default=3, metavar="N", help="iperf3 seconds per direction (3)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="wgactors cases only, 1 s per direction"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 1
    if not 1 <= args.seconds <= 600:
        parser.error("--seconds must be 1..600")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = preflight()
    if reason:
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    cases: list[tuple[str, str, list[str] | None]] = [
        ("reference", "wireguard-go ↔ wireguard-go", None),
        ("wgactors", "wgactors ↔ wireguard-go", []),
        ("wgactors-single", "wgactors --single-threaded ↔ wireguard-go", ["--single-threaded"]),
    ]
    if args.quick:
        cases = cases[1:]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupt)
    lab = Lab()
    results: list[CaseResult] = []
    started = time.monotonic()
    try:
        print(f"demo: namespaces {lab.ns_a} and {lab.ns_b}, temp dir {lab.tmp}", flush=True)
        lab.create()
        keys = {"a": wg_keypair(), "b": wg_keypair()}
        for index, (key, label, wgactors_args) in enumerate(cases, start=1):
            print(f"demo: case {index}/{len(cases)}: {label} ...", flush=True)
            result = CaseResult(key, label)
            results.append(result)
            run_case(lab, result, index, keys, args.seconds, wgactors_args)
        ref = next((r for r in results if r.key == "reference"), None)
        for r in results:
            if ref is None or r is ref:
                continue
            if r.upload_mbps is not None and ref.upload_mbps:
                r.upload_ratio = r.upload_mbps / ref.upload_mbps
            if r.download_mbps is not None and ref.download_mbps:
                r.download_ratio = r.download_mbps / ref.download_mbps
        ok = all(r.ok for r in results)
        print()
        print_table(results)
        print(
            f"\n(a = {TUNNEL_A}, b = {TUNNEL_B}; ping -c 3, the first ping a→b includes the "
            f"handshake; iperf3 TCP, {args.seconds} s per direction, from a)"
        )
        for r in results:
            if r.exit_status not in (None, 0):
                print(f"note: {r.label}: wgactors exited with {r.exit_status} on SIGTERM")
        if args.json:
            Path(args.json).write_text(
                json.dumps(to_json(results, args.seconds, args.quick, ok), indent=2) + "\n"
            )
        for r in results:
            if r.ok:
                continue
            print(f"\nFAILED: {r.label}")
            for f in r.failures:
                print(f"  - {f}")
            for name, text in r.log_tails.items():
                print(f"  last {LOG_TAIL_LINES} lines of {name}:")
                for line in (text or "(empty)").splitlines():
                    print(f"    {line}")
        verdict = "all pings and transfers succeeded" if ok else "some checks failed"
        print(f"\ndemo: {verdict} ({time.monotonic() - started:.1f} s)")
        return 0 if ok else 1
    except KeyboardInterrupt as e:
        print(f"\ndemo: interrupted ({e or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    except DemoError as e:
        print(f"\ndemo: {e}", file=sys.stderr)
        if e.log is not None:
            print(tail(e.log), file=sys.stderr)
        return 1
    finally:
        # Clean-up is bounded in time; don't let a second Ctrl-C cut it short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        lab.close()


if __name__ == "__main__":
    sys.exit(main())

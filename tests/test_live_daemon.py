"""wgactors run as a daemon is run: under a service manager's eyes (sd_notify on a socket this
test listens on, journald's line format, logs from the background), scraped by Prometheus
(checked by promtool), from wg-quick files as they are (MTU = 1420, a late-resolving endpoint
name, a route that is already taken), on the unbatched I/O path other architectures take, and
confined to one CPU. Everything runs in namespaces the test creates, against real wireguard-go."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns import Netns, gen_keypair
from wgactors_proc import A4, B4, LAUNCHER, ROOT, Wgactors, wireguard_go_pair, write_conf

from actors.lab import reachable
from actors.lab.procfs import find_process, is_wgactors_python

pytestmark = pytest.mark.netns

TCPCHECK = str(ROOT / "tests" / "tcpcheck.py")
TRANSFER_BYTES = 5_000_000
NOTICE_TIMEOUT = 15.0  # seconds to wait for one sd_notify datagram
UP_TIMEOUT = 30.0  # seconds for a tunnel that first has to resolve its peer's name
METRICS_PORT = 9586
PLACEMENT_LOOKS = 3  # tries to see the threads where `status` says they are
NETNS_ETC = Path("/etc/netns")
SCRAPE = (
    "import sys, urllib.request\n"
    "reply = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
    "sys.stdout.write(reply.headers['Content-Type'] + '\\n' + reply.read().decode())\n"
)


def transfer(server_ns: Netns, client_ns: Netns, server_addr: str) -> None:
    server = server_ns.popen(
        sys.executable, TCPCHECK, "serve", "5201", stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        result = client_ns.run(
            sys.executable, TCPCHECK, "send", server_addr, 5201, TRANSFER_BYTES, timeout=60
        )
        local, remote = result.stdout.split()
        assert local == remote
        assert server.wait(10) == 0
    finally:
        server_ns.stop(server)


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        from netns import _skip_or_fail

        _skip_or_fail("promtool is missing (apt package prometheus; scripts/setup installs it)")
        return
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in:\n{text}")


class NotifyListener:
    """The socket systemd would listen on for a Type=notify service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[dict[str, str]] = []

    def wait_for(self, key: str) -> dict[str, str]:
        deadline = time.monotonic() + NOTICE_TIMEOUT
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.splitlines())
            self.received.append(fields)
            if key in fields:
                return fields
        raise AssertionError(f"no {key} within {NOTICE_TIMEOUT} s; got {self.received}")

    def close(self) -> None:
        self.sock.close()


def test_notify_socket_and_prometheus_metrics(netns_pair: Any, tmp_path: Path) -> None:
    listener = NotifyListener(tmp_path / "notify")
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wgn0")
    env = {"NOTIFY_SOCKET": str(listener.path)}
    metrics = ("--metrics", f"127.0.0.1:{METRICS_PORT}")
    try:
        with Wgactors(netns_pair.a, conf, *metrics, env=env) as daemon:
            ready = listener.wait_for("READY")
            assert ready["READY"] == "1" and ready["STATUS"].startswith("wgn0 up: UDP port 51821")
            assert reachable(netns_pair.a, B4), daemon.log()

            url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
            scraped = netns_pair.a.run(sys.executable, "-c", SCRAPE, url).stdout
            content_type, body = scraped.split("\n", 1)
            assert content_type.startswith("text/plain; version=0.0.4")
            promtool_check(body)
            peer = {"interface": "wgn0", "peer": wggo.public_key}
            handshake = sample(body, "wgactors_peer_latest_handshake_seconds", **peer)
            assert abs(handshake - time.time()) < 60
            assert sample(body, "wgactors_peer_receive_bytes_total", **peer) > 0
            assert sample(body, "wgactors_peer_transmit_bytes_total", **peer) > 0
            stage = {"interface": "wgn0", "stage": "decrypt"}
            assert sample(body, "wgactors_stage_received_packets_total", **stage) >= 3
            assert sample(body, "wgactors_stage_mailbox_high_water_packets", **stage) >= 1
            assert sample(body, "wgactors_stage_restarts_total", **stage) == 0

            status = netns_pair.a.run(str(LAUNCHER), "status", "wgn0", "--prometheus").stdout
            promtool_check(status)
            assert sample(status, "wgactors_peer_latest_handshake_seconds", **peer) == handshake

            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGHUP)  # systemctl reload
            reloading = listener.wait_for("RELOADING")
            assert int(reloading["MONOTONIC_USEC"]) > 0
            assert listener.wait_for("READY")["READY"] == "1"
            assert daemon.proc.poll() is None and reachable(netns_pair.a, B4, count=1)

            assert daemon.terminate() == 0
            assert listener.wait_for("STOPPING")["STOPPING"] == "1"
    finally:
        wggo.stop()
        listener.close()


def traffic_both_ways(netns_pair: Any, daemon: Wgactors) -> str:
    """A ping, a TCP transfer each way, a clean stop: the daemon's whole log."""
    assert reachable(netns_pair.a, B4), daemon.log()
    transfer(netns_pair.b, netns_pair.a, B4)
    transfer(netns_pair.a, netns_pair.b, A4)
    assert daemon.terminate() == 0
    return daemon.log()


def test_wg_quick_file_with_mtu_1420_carries_traffic(netns_pair: Any, tmp_path: Path) -> None:
    """wg-quick's usual MTU works as the file says: one warning, the interface at 1280. The
    peer's AllowedIPs also covers our own Address's prefix, whose route the kernel added: that
    is not a clash."""
    wggo, conf = wireguard_go_pair(
        netns_pair, tmp_path, "wgq0", interface={"MTU": 1420}, peer={"AllowedIPs": "10.99.0.0/24"}
    )
    try:
        with Wgactors(netns_pair.a, conf) as daemon:
            link = netns_pair.a.ip("-o", "link", "show", "dev", "wgq0").stdout
            assert " mtu 1280 " in link
            log = traffic_both_ways(netns_pair, daemon)
            assert len(re.findall(r"MTU 1420 is above the 1280 bytes", log)) == 1, log
    finally:
        wggo.stop()


def conf_without_peer_process(tmp_path: Path, iface: str, allowed_ips: str) -> Path:
    """A wg-quick file for ``iface`` with fresh keys and one peer that nothing runs."""
    ours, _ = gen_keypair()
    _, peer_pub = gen_keypair()
    return write_conf(
        tmp_path,
        iface,
        {"PrivateKey": ours, "Address": f"{A4}/24"},
        [{"PublicKey": peer_pub, "AllowedIPs": allowed_ips}],
    )


def test_route_clash_fails_clearly(netns_pair: Any, tmp_path: Path) -> None:
    """As wg-quick: routes are added, and a prefix someone else routes is not taken over."""
    lan = "10.98.0.0/24"
    netns_pair.a.ip("route", "add", lan, "dev", netns_pair.veth_a)
    conf = conf_without_peer_process(tmp_path, "wgr0", f"10.97.0.0/24, {lan}")
    result = netns_pair.a.run(str(LAUNCHER), "up", str(conf), check=False, timeout=30)
    assert result.returncode == 1, result
    assert f"a route to {lan} already exists" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    routes = netns_pair.a.ip("route", "show", lan).stdout
    assert f"dev {netns_pair.veth_a}" in routes  # the LAN keeps its route
    assert netns_pair.a.ip("link", "show", "dev", "wgr0", check=False).returncode != 0
    assert "10.97.0.0" not in netns_pair.a.ip("route", "show").stdout


@contextlib.contextmanager
def netns_etc(ns: Netns) -> Iterator[Path]:
    """/etc/netns/NAME: `ip netns exec` mounts the files there over /etc's, for that namespace
    only. No name server listens in the namespace, so unknown names fail as "temporary"."""
    directory = NETNS_ETC / ns.name
    directory.mkdir(parents=True, exist_ok=False)
    try:
        (directory / "hosts").write_text("127.0.0.1 localhost\n")
        (directory / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1\n")
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_endpoint_name_that_resolves_late(netns_pair: Any, tmp_path: Path) -> None:
    name = "wgpeer.test"
    with netns_etc(netns_pair.a) as etc:
        wggo, conf = wireguard_go_pair(
            netns_pair, tmp_path, "wge0", peer={"Endpoint": f"{name}:51820"}
        )
        env = {"WG_ENDPOINT_RESOLUTION_RETRIES": "10"}
        daemon = Wgactors(netns_pair.a, conf, env=env)
        try:
            daemon.start(wait_up=False)
            deadline = time.monotonic() + UP_TIMEOUT
            while "cannot resolve" not in daemon.log():
                assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
                assert time.monotonic() < deadline, daemon.log()
                time.sleep(0.1)
            while "retry 2 of 10" not in daemon.log():  # two answers missed before the fix
                assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
                assert time.monotonic() < deadline, daemon.log()
                time.sleep(0.1)
            with open(etc / "hosts", "a") as hosts:  # same inode: the mount sees it
                hosts.write(f"{netns_pair.addr_b4} {name}\n")
            while "up: UDP port" not in daemon.log():
                assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
                assert time.monotonic() < deadline, daemon.log()
                time.sleep(0.1)
            assert reachable(netns_pair.a, B4), daemon.log()
            assert daemon.terminate() == 0
            assert "retry 2 of 10" in daemon.log()
        finally:
            daemon.__exit__(None, None, None)
            wggo.stop()


def test_forced_unbatched_fallback_carries_traffic(netns_pair: Any, tmp_path: Path) -> None:
    """The path an architecture without an AIO table takes, forced through the test hook."""
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wgu0")
    try:
        with Wgactors(netns_pair.a, conf, env={"WGACTORS_TEST_UNBATCHED": "1"}) as daemon:
            log = traffic_both_ways(netns_pair, daemon)
            assert len(re.findall(r"TUN reads and writes are not batched", log)) == 1, log
    finally:
        wggo.stop()


def test_background_daemon_logs_to_stderr_in_journal_format(
    netns_pair: Any, tmp_path: Path
) -> None:
    """`wgactors IFACE` forks; its logs keep going to the stderr it was given (here a file
    posing as the journal's stream), with <N> priorities and no timestamps."""
    stderr_path = tmp_path / "journal.txt"
    with open(stderr_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        env.pop("WG_PROCESS_FOREGROUND", None)
        started = subprocess.run(
            ["ip", "netns", "exec", netns_pair.a.name, str(LAUNCHER), "wgj0"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            timeout=30,
        )
    assert started.returncode == 0, stderr_path.read_text()
    pids = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", "actors.cli wgj0$"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    ]
    assert len(pids) == 1, pids
    try:
        assert netns_pair.a.ip("link", "show", "dev", "wgj0", check=False).returncode == 0
        os.kill(pids[0], signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "wgj0 down" not in stderr_path.read_text():
            assert time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGKILL)
    lines = stderr_path.read_text().splitlines()
    assert "<6>wgj0: SIGTERM received: shutting down" in lines, lines
    assert "<6>wgj0: wgj0 down" in lines
    assert all(re.match(r"<[0-7]>wgj0: ", line) for line in lines), lines


def test_notify_in_single_threaded_mode(netns_pair: Any, tmp_path: Path) -> None:
    """The single loop runs on a thread of its own, as every data plane; SIGHUP is answered and
    STOPPING sent."""
    listener = NotifyListener(tmp_path / "notify")
    ours, _ = gen_keypair()
    conf = write_conf(tmp_path, "wgs0", {"PrivateKey": ours, "Address": f"{A4}/24"}, [])
    env = {"NOTIFY_SOCKET": str(listener.path)}
    try:
        with Wgactors(netns_pair.a, conf, "--single-threaded", env=env) as daemon:
            assert "single-threaded" in listener.wait_for("READY")["STATUS"]
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGHUP)
            listener.wait_for("RELOADING")
            assert listener.wait_for("READY")["READY"] == "1"
            assert daemon.proc.poll() is None
            assert daemon.terminate() == 0
            listener.wait_for("STOPPING")
    finally:
        listener.close()


def _allowed_cpus_of_threads(pid: int) -> dict[str, str]:
    """Each thread's ``Cpus_allowed_list``, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    out[task.name] = line.split(":", 1)[1].strip()
    return out


@pytest.mark.parametrize("mode", ["actors", "single"])
def test_compact_placement_keeps_every_thread_on_one_cpu(
    netns_pair: Any, tmp_path: Path, mode: str
) -> None:
    """Every thread of the daemon, stages included, on one CPU it may use and under SCHED_BATCH,
    but for the placement's watcher, which keeps every CPU the process may use (where a change
    to them shows), and the tunnel works as before: by default in actors mode, asked for
    (WGACTORS_CPUS=compact) in the single-threaded one; and WGACTORS_CPUS=all leaves the
    threads where the kernel puts them."""
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wgc0")
    extra = ("--single-threaded",) if mode == "single" else ()
    env = {"WGACTORS_CPUS": "compact"} if mode == "single" else {}
    try:
        with Wgactors(netns_pair.a, conf, *extra, env=env) as daemon:
            assert reachable(netns_pair.a, B4), daemon.log()
            pid = _python_pid(daemon)
            # The daemon may move its threads (every 2 s at most) between two looks: look
            # again until what `status` says and where the threads are agree.
            for _ in range(PLACEMENT_LOOKS):
                status = netns_pair.a.run(str(LAUNCHER), "status", "wgc0", timeout=30).stdout
                allowed = _allowed_cpus_of_threads(pid)
                watchers = [t for t in allowed if _comm(pid, t) == "wga:placement"]
                assert len(watchers) == 1, {t: _comm(pid, t) for t in allowed}
                kept = allowed.pop(watchers[0])
                said = re.search(r"^  cpus: compact \(CPU (\d+)\)$", status, re.MULTILINE)
                if said and set(allowed.values()) == {said.group(1)}:
                    break
            assert said, status
            cpu = said.group(1)
            assert set(allowed.values()) == {cpu}, allowed
            assert int(cpu) in os.sched_getaffinity(0), cpu
            assert kept == _cpu_list_of(os.sched_getaffinity(0)), kept
            names = {_comm(pid, t) for t in allowed}
            if mode == "actors":
                assert {"wga:decrypt", "wga:encrypt", "wga:tun_writer"} <= names, names
            policies = {os.sched_getscheduler(int(t)) for t in allowed}
            assert policies == {os.SCHED_BATCH}, policies
            log = traffic_both_ways(netns_pair, daemon)
            assert re.search(r"threads confined to CPU \d+ \(compact", log), log
        if mode == "actors" and len(os.sched_getaffinity(0)) > 1:
            with Wgactors(netns_pair.a, conf, env={"WGACTORS_CPUS": "all"}) as daemon:
                assert reachable(netns_pair.a, B4), daemon.log()
                allowed = _allowed_cpus_of_threads(_python_pid(daemon))
                mine = Path("/proc/self/status").read_text().split("Cpus_allowed_list:")[1]
                assert set(allowed.values()) == {mine.split()[0]}, allowed
                assert "threads confined" not in daemon.log()
                status = netns_pair.a.run(str(LAUNCHER), "status", "wgc0", timeout=30).stdout
                assert "  cpus: all CPUs, placed by the kernel" in status, status
    finally:
        wggo.stop()


def _comm(pid: int, tid: str) -> str:
    """A thread's kernel name; empty for one that has ended."""
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return ""


def _cpu_list_of(cpus: set[int]) -> str:
    """As the kernel writes a CPU set in ``Cpus_allowed_list`` (``0-3,6``)."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _python_pid(daemon: Wgactors) -> int:
    assert daemon.proc is not None
    pid = find_process(daemon.proc.pid, is_wgactors_python)
    assert pid is not None
    return pid


def test_a_bad_cpu_list_is_refused_before_anything_is_set_up(
    netns_pair: Any, tmp_path: Path
) -> None:
    conf = conf_without_peer_process(tmp_path, "wgc1", "10.97.0.0/24")
    for value, says in (("fast", "'fast' is not a CPU list"), ("4000", "none of CPUs 4000")):
        result = netns_pair.a.run(
            str(LAUNCHER),
            "up",
            str(conf),
            check=False,
            timeout=30,
            env_extra={"WGACTORS_CPUS": value},
        )
        assert result.returncode == 1, result
        assert f"WGACTORS_CPUS: {says}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert netns_pair.a.ip("link", "show", "dev", "wgc1", check=False).returncode != 0

"""Stopping and starting again: `wg-quick down && wg-quick up` back to back, and a signal that
ends the daemon within SIGNAL_EXIT_LIMIT whatever state it is in."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import NetnsPair
from netns import WG_SOCKET_DIR, Netns, WireguardGo, gen_keypair, socket_in
from wgactors_proc import A4, B4, LAUNCHER, ROOT, Wgactors, wireguard_go_pair, write_conf

pytestmark = pytest.mark.netns

CYCLES = 20  # back-to-back `wg-quick down && wg-quick up`
CYCLE_TIMEOUT = 30.0  # seconds one `wg-quick` call may take
CYCLES_BUDGET = 300.0  # seconds all the cycles may take together
PING_TIMEOUT = 30.0  # seconds the final ping may take
EXIT_WAIT = 15.0  # seconds the tests wait for an exit before giving up on it
# The specification: a signal ends the daemon within this, measured from the signal to the
# exit status seen by waitpid. Everything else is waited for with a bounded deadline.
SIGNAL_EXIT_LIMIT = 2.0
POLL = 0.005  # seconds between looks at a signalled daemon's exit status
SOCKET_POLL = 0.002  # seconds between looks for the UAPI socket's removal


def wait_for(predicate: Callable[[], object], timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def port_is_free(ns: Netns, port: int) -> bool:
    """Whether a dual-stack UDP socket can take ``port`` in ``ns`` (it conflicts with any
    IPv4 or IPv6 bind of it)."""
    with socket_in(ns, socket.AF_INET6) as probe:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind(("::", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


# -- wg-quick down && wg-quick up


@pytest.fixture
def peer_wggo(netns_pair: NetnsPair) -> Iterator[WireguardGo]:
    key, _ = gen_keypair()
    with WireguardGo(netns_pair.b, key, listen_port=51820, addresses=[f"{B4}/24"]) as wggo:
        yield wggo


def test_wg_quick_down_and_up_back_to_back(
    netns_pair: NetnsPair, peer_wggo: WireguardGo, tmp_path: Path
) -> None:
    """`wg-quick down X && wg-quick up X` with a fixed ListenPort: every `up` must find the
    port, the interface name and the UAPI socket free, with no pause between the two."""
    ours, our_pub = gen_keypair()
    peer_wggo.set_peer(our_pub, allowed_ips=[f"{A4}/32"])
    conf = write_conf(
        tmp_path,
        "wgcyc0",
        {"PrivateKey": ours, "ListenPort": 51821, "Address": f"{A4}/24"},
        [
            {
                "PublicKey": peer_wggo.public_key,
                "AllowedIPs": f"{B4}/32",
                "Endpoint": f"{netns_pair.addr_b4}:51820",
            }
        ],
    )
    ns = netns_pair.a
    env = {"WG_QUICK_USERSPACE_IMPLEMENTATION": str(LAUNCHER)}
    quick = ["wg-quick", "{}", str(conf)]
    sock = WG_SOCKET_DIR / "wgcyc0.sock"

    def wg_quick(verb: str) -> subprocess.CompletedProcess[str]:
        argv = [verb if a == "{}" else a for a in quick]
        return ns.run(*argv, env_extra=env, timeout=CYCLE_TIMEOUT, check=False)

    up = wg_quick("up")
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + CYCLES_BUDGET
    try:
        for cycle in range(CYCLES):
            assert time.monotonic() < deadline, f"{cycle} cycles took over {CYCLES_BUDGET} s"
            down = wg_quick("down")
            assert down.returncode == 0, f"cycle {cycle}: down failed:\n{down.stderr}"
            if cycle % 2:  # the contract behind it: once the socket is gone, the port is free
                assert wait_for(lambda: not sock.exists(), EXIT_WAIT, poll=SOCKET_POLL)
                assert port_is_free(ns, 51821), f"cycle {cycle}: the socket went before the port"
            up = wg_quick("up")
            assert up.returncode == 0, f"cycle {cycle}: up failed:\n{up.stderr}"
        ping = ns.run(
            "ping", "-c", "3", "-i", "0.2", "-W", "2", B4, check=False, timeout=PING_TIMEOUT
        )
        assert ping.returncode == 0, ping.stdout
        dump = ns.run("wg", "show", "wgcyc0", "dump").stdout.splitlines()
        fields = dump[1].split("\t")
        assert fields[0] == peer_wggo.public_key and int(fields[4]) > 0  # a handshake
        assert ns.run("wg", "show", "wgcyc0", "listen-port").stdout.strip() == "51821"
    finally:
        wg_quick("down")
    assert wait_for(lambda: not (WG_SOCKET_DIR / "wgcyc0.sock").exists(), EXIT_WAIT)


# -- a signal ends the daemon within SIGNAL_EXIT_LIMIT, in every state

MODES = {"actors": (), "single": ("--single-threaded",)}
IFACE = "wgsig0"  # names unused by other tests: the socket directory is shared
OUR_PORT = 51821
STUCK_WAIT = 15.0  # seconds for a blocking stage to be reached


def exit_time(proc: subprocess.Popen[bytes], sig: int) -> tuple[float, int | None]:
    """Send ``sig``; the seconds until the exit status is there (a pidfd turns readable when
    the process ends: no polling), and the status (None if it did not end within EXIT_WAIT)."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        start = time.monotonic()
        os.kill(proc.pid, sig)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        ended = poller.poll(EXIT_WAIT * 1000)
        elapsed = time.monotonic() - start
    finally:
        os.close(pidfd)
    return elapsed, (proc.wait(EXIT_WAIT) if ended else None)


def pipeline_file(tmp_path: Path, state: str) -> Path | None:
    marker = tmp_path / "stuck"
    stage = {
        "stuck-in-process": "BlockForever",
        "stuck-in-reload": "BlockForever",
        "stuck-on-start": "BlockOnStart",
    }.get(state)
    if stage is None:
        return None
    pipe = tmp_path / "pipeline.toml"
    pipe.write_text(
        f'[[outbound]]\nuse = "custom_stages:{stage}"\noptions = {{ marker = "{marker}" }}\n'
    )
    return pipe


def reach_state(
    netns_pair: NetnsPair, daemon: Wgactors, state: str, marker: Path, pipe: Path | None
) -> None:
    """Bring the running (or starting) daemon into ``state``."""
    ns = netns_pair.a
    if state in ("serving", "underlay-deleted", "links-deleted"):
        assert wait_for(
            lambda: ns.run("ping", "-c", "1", "-W", "1", B4, check=False).returncode == 0,
            PING_TIMEOUT,
        ), daemon.log()
        ns.popen("ping", "-q", "-i", "0.01", "-w", str(int(EXIT_WAIT * 2)), B4)  # traffic
        time.sleep(0.2)  # let the flood run through the stages
        if state in ("underlay-deleted", "links-deleted"):
            ns.ip("link", "del", netns_pair.veth_a)
            assert wait_for(lambda: ns.link_gone(netns_pair.veth_a), EXIT_WAIT)
        if state == "links-deleted":  # the daemon's own interface too: it is stopping already
            ns.ip("link", "del", IFACE)
    elif state in ("stuck-in-process", "stuck-in-reload"):
        ns.popen("ping", "-q", "-i", "0.2", "-w", str(int(STUCK_WAIT)), B4)
        assert wait_for(marker.exists, STUCK_WAIT), daemon.log()
        if state == "stuck-in-reload":  # the main thread waits for the stuck stage to go
            assert pipe is not None
            pipe.write_text("")
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGHUP)
            assert wait_for(lambda: "SIGHUP received" in daemon.log(), STUCK_WAIT)
    elif state == "stuck-on-start":
        assert wait_for(marker.exists, STUCK_WAIT), daemon.log()
    elif state == "starting":  # before its handlers are installed, or during set-up
        time.sleep(0.3)
    else:  # "setting-up": its first log line is out (set-up has begun), "up" not yet
        assert wait_for(lambda: daemon.log().strip() != "", STUCK_WAIT, poll=0.001)


STATES = (
    "serving",
    "underlay-deleted",
    "links-deleted",
    "stuck-in-process",
    "stuck-in-reload",
    "stuck-on-start",
    "starting",
    "setting-up",
)
CASES = [(signal.SIGTERM, state, mode) for state in STATES for mode in MODES] + [
    (signal.SIGINT, state, mode)
    for state in ("serving", "stuck-in-process", "starting")
    for mode in MODES
]


@pytest.mark.parametrize(
    ("sig", "state", "mode"),
    CASES,
    ids=[f"{signal.Signals(s).name}-{state}-{mode}" for s, state, mode in CASES],
)
def test_a_signal_ends_the_daemon_within_the_limit(
    netns_pair: NetnsPair, tmp_path: Path, sig: int, state: str, mode: str
) -> None:
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, IFACE)
    pipe = pipeline_file(tmp_path, state)
    extra = [*MODES[mode], *(["--pipeline", str(pipe)] if pipe else [])]
    daemon = Wgactors(netns_pair.a, conf, *extra, env={"PYTHONPATH": str(ROOT / "tests")})
    try:
        daemon.start(wait_up=state not in ("stuck-on-start", "starting", "setting-up"))
        assert daemon.proc is not None
        reach_state(netns_pair, daemon, state, tmp_path / "stuck", pipe)
        if state != "links-deleted":  # that one may be ending on its own (not reaped yet)
            assert daemon.proc.poll() is None, daemon.log()
        elapsed, status = exit_time(daemon.proc, sig)
        print(f"{signal.Signals(sig).name} {state} {mode}: exit {status} after {elapsed:.3f} s")
        assert status is not None, f"still running {EXIT_WAIT} s after the signal:\n{daemon.log()}"
        assert elapsed <= SIGNAL_EXIT_LIMIT, f"exited after {elapsed:.2f} s:\n{daemon.log()}"
        # a signal before the handlers are installed takes the default action
        assert status in ((0, -sig) if state in ("starting", "setting-up") else (0,)), daemon.log()
        assert not daemon.socket_path.exists()
        assert port_is_free(netns_pair.a, OUR_PORT)
        assert wait_for(lambda: daemon.ns.link_gone(IFACE), EXIT_WAIT)
        if state == "stuck-in-reload":  # the teardown could not even begin: the guard ended it
            assert "shutdown not done within" in daemon.log()
    finally:
        daemon.cleanup()
        wggo.stop()

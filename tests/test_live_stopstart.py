"""Stopping and starting again: `wg-quick down && wg-quick up` back to back, and a signal that
ends the daemon within SIGNAL_EXIT_LIMIT whatever state it is in."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import WG_SOCKET_DIR, Netns, WireguardGo, gen_keypair
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
POLL = 0.02


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# -- wg-quick down && wg-quick up


@pytest.fixture
def peer_wggo(netns_pair) -> Iterator[WireguardGo]:  # type: ignore[no-untyped-def]
    key, _ = gen_keypair()
    with WireguardGo(netns_pair.b, key, listen_port=51820, addresses=[f"{B4}/24"]) as wggo:
        yield wggo


def test_wg_quick_down_and_up_back_to_back(netns_pair, peer_wggo, tmp_path: Path) -> None:
    """`wg-quick down X && wg-quick up X` with a fixed ListenPort: every `up` must find the
    port, the interface name and the UAPI socket free, with no pause between the two."""
    ours, our_pub = gen_keypair()
    peer_wggo.set_peer(our_pub, allowed_ips=[f"{A4}/32"])
    conf = write_conf(
        tmp_path,
        "wgc0",
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
            up = wg_quick("up")
            assert up.returncode == 0, f"cycle {cycle}: up failed:\n{up.stderr}"
        ping = ns.run(
            "ping", "-c", "3", "-i", "0.2", "-W", "2", B4, check=False, timeout=PING_TIMEOUT
        )
        assert ping.returncode == 0, ping.stdout
        dump = ns.run("wg", "show", "wgc0", "dump").stdout.splitlines()
        fields = dump[1].split("\t")
        assert fields[0] == peer_wggo.public_key and int(fields[4]) > 0  # a handshake
        assert ns.run("wg", "show", "wgc0", "listen-port").stdout.strip() == "51821"
    finally:
        wg_quick("down")
    assert wait_for(lambda: not (WG_SOCKET_DIR / "wgc0.sock").exists(), EXIT_WAIT)

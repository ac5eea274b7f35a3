"""Issue 22 item 7, live: wgactors against wireguard-go in namespaces, in both modes.

* A private-key change (``wg set IFACE private-key``) while wireguard-go keeps pinging us on the
  session it has: the pings still arrive (they used to be dropped as ``unknown_index``), our
  answer starts a handshake with the new key at once (which wireguard-go refuses: it does not
  know that key), and once wireguard-go is given our new public key the tunnel works again.
* The transfer counters after one handshake and a few pings: what ``wg show IFACE transfer``
  says of wgactors mirrors what it says of wireguard-go (rx of one is tx of the other), since
  both count every datagram, handshake messages included.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hostile import drops_of
from netns import Netns, WireguardGo, gen_keypair
from wgactors_proc import LAUNCHER, Wgactors

from actors.lab import reachable, wait_until, wireguard_go_peering, write_secret

pytestmark = pytest.mark.netns

MODES = [pytest.param((), id="actors"), pytest.param(("--single-threaded",), id="single")]
A4, B4 = "10.97.0.1", "10.97.0.2"
OUR_PORT, PEER_PORT = 51826, 51827

# The steady ping from wireguard-go's side: bounded in count and in time.
STEADY_INTERVAL = 0.2
STEADY_COUNT = 300
STEADY_SECONDS = 60
FLOWING_DEADLINE = 10.0  # for the first echoes to arrive through the tunnel
ARRIVALS_AFTER_CHANGE = 5  # echoes that must still arrive on the old session
ARRIVAL_DEADLINE = 10.0
REFUSED_DEADLINE = 10.0  # for wireguard-go to log our new initiation as invalid
REHANDSHAKE_PINGS = 3
INVALID_INITIATION = "Received invalid initiation message"
STATUS_TIMEOUT = 30.0

PINGS = 5
MIRROR_DEADLINE = 15.0  # for a moment with no datagram in flight (keepalives come at 10 s)


@dataclass
class Lab:
    a: Netns
    b: Netns
    wggo: WireguardGo
    daemon: Wgactors
    our_public: str
    our_endpoint: str


@contextmanager
def lab(netns_pair: Any, tmp_path: Path, mode: tuple[str, ...]) -> Iterator[Lab]:
    """wgactors in ``a`` (A4), wireguard-go in ``b`` (B4); each knows the other's endpoint."""
    iface = f"wgp{secrets.token_hex(3)}"
    peering = wireguard_go_peering(
        netns_pair.b,
        tmp_path,
        iface,
        ours=[f"{A4}/24"],
        theirs=[f"{B4}/24"],
        our_underlay=netns_pair.addr_a4,
        their_underlay=netns_pair.addr_b4,
        our_port=OUR_PORT,
        their_port=PEER_PORT,
    )
    with peering.wggo as wggo, Wgactors(netns_pair.a, peering.conf, *mode) as daemon:
        yield Lab(
            netns_pair.a,
            netns_pair.b,
            wggo,
            daemon,
            peering.our_public,
            f"{netns_pair.addr_a4}:{OUR_PORT}",
        )


def echoes_received(ns: Netns) -> int:
    """ICMP echo requests the host in ``ns`` has received (its /proc/net/snmp)."""
    lines = [ln.split() for ln in ns.run("cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = [ln for ln in lines if ln and ln[0] == "Icmp:"][:2]
    return int(values[names.index("InEchos")])


def live_drops(t: Lab) -> Counter[str]:
    """The daemon's drop counters now, from ``wgactors status --json``."""
    res = t.a.run(str(LAUNCHER), "status", t.daemon.iface, "--json", timeout=STATUS_TIMEOUT)
    return drops_of(list((json.loads(res.stdout).get("stages") or {}).get("stages") or []))


def transfer(ns: Netns, iface: str) -> tuple[int, int]:
    """(rx, tx) of the one peer of ``iface``, from ``wg show IFACE transfer``."""
    _, rx, tx = ns.run("wg", "show", iface, "transfer").stdout.split()
    return int(rx), int(tx)


@pytest.mark.parametrize("mode", MODES)
def test_private_key_change_keeps_receiving_on_the_peers_session(
    netns_pair: Any, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    with lab(netns_pair, tmp_path, mode) as t:
        steady = t.b.popen(
            "ping",
            "-n",
            "-q",
            "-i",
            STEADY_INTERVAL,
            "-c",
            STEADY_COUNT,
            "-w",
            STEADY_SECONDS,
            A4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            start = echoes_received(t.a)
            assert wait_until(lambda: echoes_received(t.a) >= start + 3, FLOWING_DEADLINE), (
                t.daemon.log()[-3000:]
            )
            refused_before = t.wggo.log_text().count(INVALID_INITIATION)

            new_private, new_public = gen_keypair()
            key_file = write_secret(tmp_path / "new-private.key", new_private)
            t.a.run("wg", "set", t.daemon.iface, "private-key", str(key_file))
            changed = echoes_received(t.a)

            # wireguard-go still sends on its session, and we still receive on it
            arrived = wait_until(
                lambda: echoes_received(t.a) >= changed + ARRIVALS_AFTER_CHANGE, ARRIVAL_DEADLINE
            )
            after = echoes_received(t.a) - changed
            assert arrived, (after, t.daemon.log()[-3000:])
            drops = live_drops(t)
            assert drops["unknown_index"] == 0, drops
            # our answers do not go out on that session: they start a handshake with the new
            # key, which wireguard-go cannot place
            assert wait_until(
                lambda: t.wggo.log_text().count(INVALID_INITIATION) > refused_before,
                REFUSED_DEADLINE,
            ), t.wggo.log_text()[-3000:]

            # wireguard-go learns our new key: a new handshake, and the tunnel works again
            t.wggo.remove_peer(t.our_public)
            t.wggo.set_peer(new_public, allowed_ips=[f"{A4}/32"], endpoint=t.our_endpoint)
            assert reachable(t.b, A4, count=REHANDSHAKE_PINGS), t.daemon.log()[-3000:]
        finally:
            t.b.stop(steady)
        assert t.daemon.terminate() == 0
        print(
            f"\n[parity {mode or ('actors',)}] {after} echoes arrived on the old session after "
            f"the key change; drops before wireguard-go learnt the new key: {dict(drops)}"
        )


@pytest.mark.parametrize("mode", MODES)
def test_transfer_counters_mirror_wireguard_gos(
    netns_pair: Any, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    with lab(netns_pair, tmp_path, mode) as t:
        assert reachable(t.a, B4, count=PINGS), t.daemon.log()[-3000:]
        ours: tuple[int, int] = (0, 0)
        theirs: tuple[int, int] | None = None

        def mirrored() -> bool:
            nonlocal ours, theirs
            ours = transfer(t.a, t.daemon.iface)
            theirs = t.wggo.transfer()
            return theirs is not None and ours == (theirs[1], theirs[0])

        assert wait_until(mirrored, MIRROR_DEADLINE, step=0.02), (ours, theirs)
        rx, tx = ours
        print(
            f"\n[parity {mode or ('actors',)}] after one handshake and {PINGS} pings: "
            f"wgactors rx {rx} / tx {tx}, wireguard-go rx {tx} / tx {rx}"
        )

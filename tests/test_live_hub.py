"""wgactors as a hub: 10,000 peers loaded with the real `wg setconf`, in namespaces.

Only the last peer configured is real (wireguard-go in namespace b); a ping goes through it,
so the route look-up, the handshake (with its static-static DH done at first use) and the
send path all work at the far end of a large table. One peer is then added and removed live,
and the whole table read back with `wg showconf` must be exactly what was loaded. The times
are printed, not asserted: this machine's load decides them, the bench compares them.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from netns import WireguardGo, gen_keypair
from wgactors_proc import LAUNCHER

from actors.lab.hub import UapiTimer, hub_peers, hub_setconf, parse_showconf, spare_peer

pytestmark = pytest.mark.netns

PEERS = 10_000
A4, B4 = "10.99.0.1", "10.99.0.2"
IFACE = "wgh0"
SETCONF_TIMEOUT = 120.0  # seconds `wg setconf` of the whole table may take on a loaded CI box
PING_TRIES = 5  # the first ping waits for the handshake


def _vm_hwm_mb(iface: str) -> float | None:
    found = subprocess.run(
        ["pgrep", "-f", f"actors.cli {iface}$"], capture_output=True, text=True
    ).stdout.split()
    for pid in found:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            continue
    return None


def test_hub_of_10000_peers(netns_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = netns_pair.a
    ours, our_pub = gen_keypair()
    wg_key, _ = gen_keypair()
    with WireguardGo(netns_pair.b, wg_key, listen_port=51820, addresses=[f"{B4}/24"]) as wggo:
        wggo.set_peer(our_pub, allowed_ips=[f"{A4}/32"])
        table = list(hub_peers(PEERS - 1))
        real = (wggo.public_key, f"{B4}/32", f"{netns_pair.addr_b4}:51820")
        conf = tmp_path / "hub.conf"
        conf.write_text(hub_setconf(ours, 51821, table, real))
        conf.chmod(0o600)

        started = time.perf_counter()
        result = a.run(str(LAUNCHER), IFACE, timeout=30)
        assert result.returncode == 0, result.stderr
        launched = time.perf_counter() - started
        try:
            a.ip("addr", "add", f"{A4}/24", "dev", IFACE)
            a.ip("link", "set", IFACE, "up")
            before = time.perf_counter()
            a.run("wg", "setconf", IFACE, str(conf), timeout=SETCONF_TIMEOUT)
            loaded = time.perf_counter() - before

            # Traffic through the last peer configured.
            for _ in range(PING_TRIES):
                if a.run("ping", "-c", "1", "-W", "2", B4, check=False).returncode == 0:
                    break
            assert a.run("ping", "-c", "3", "-i", "0.2", "-W", "2", B4).returncode == 0
            assert wggo.peer(our_pub) is not None

            # One live add and remove, straight on the socket and through `wg set`.
            uapi = UapiTimer(IFACE)
            key, allowed = spare_peer(PEERS)
            add_s = uapi.add(key, allowed)
            shown = a.run("wg", "show", IFACE, "allowed-ips").stdout
            assert f"{key}\t{allowed}" in shown
            remove_s = uapi.remove(key)
            key2, allowed2 = spare_peer(PEERS + 1)
            t = time.perf_counter()
            a.run("wg", "set", IFACE, "peer", key2, "allowed-ips", allowed2)
            wg_add_s = time.perf_counter() - t
            t = time.perf_counter()
            a.run("wg", "set", IFACE, "peer", key2, "remove")
            wg_remove_s = time.perf_counter() - t

            # The table read back is exactly the table loaded.
            t = time.perf_counter()
            a.run("wg", "show", IFACE, timeout=60)
            show_s = time.perf_counter() - t
            got = parse_showconf(a.run("wg", "showconf", IFACE, timeout=60).stdout)
            want = {k: (ip,) for k, ip in table} | {real[0]: (real[1],)}
            assert len(got) == PEERS
            assert got == want
            # ...and the data path still works after the changes.
            assert a.run("ping", "-c", "1", "-W", "2", B4).returncode == 0
            rss = _vm_hwm_mb(IFACE)
        finally:
            a.ip("link", "del", IFACE, check=False)
    print(
        f"\nhub of {PEERS} peers: daemon up {launched:.2f} s, wg setconf {loaded:.2f} s, "
        f"live add {add_s * 1e3:.2f} ms / remove {remove_s * 1e3:.2f} ms on the socket "
        f"(wg set: {wg_add_s * 1e3:.1f} / {wg_remove_s * 1e3:.1f} ms), "
        f"wg show {show_s:.2f} s, peak RSS {rss if rss is None else round(rss)} MB"
    )

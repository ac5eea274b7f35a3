"""Tests of the namespace / wireguard-go harness itself (tests/netns.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from netns import Netns, WireguardGo, gen_keypair, gen_psk, require_root_netns, require_tools


def _alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.netns
def test_netns_pair_pings_v4_and_v6(netns_pair):
    p = netns_pair
    for ns, target in ((p.a, p.addr_b4), (p.b, p.addr_a4), (p.a, p.addr_b6), (p.b, p.addr_a6)):
        ns.run("ping", "-c1", "-W2", target)


@pytest.mark.netns
def test_run_error_mentions_stderr(netns_pair):
    with pytest.raises(subprocess.CalledProcessError, match="does not exist"):
        netns_pair.a.run("ip", "link", "show", "dev", "nosuchdev0")


@pytest.mark.netns
def test_wireguard_go_starts_and_lists_peer(netns_pair):
    require_tools("wireguard-go", "wg")
    priv, pub = gen_keypair()
    _, peer_pub = gen_keypair()
    psk = gen_psk()
    wg = WireguardGo(
        netns_pair.a,
        priv,
        listen_port=51820,
        addresses=["10.99.0.1/24", "fd99::1/64"],
        peers=[
            {
                "public_key": peer_pub,
                "allowed_ips": ["10.99.0.2/32", "fd99::2/128"],
                "endpoint": (netns_pair.addr_b4, 51820),
                "persistent_keepalive": 25,
                "preshared_key": psk,
            }
        ],
    )
    with wg:
        dump = wg.show_dump()
        assert peer_pub in dump
        iface, peers = wg.dump()
        assert iface["public_key"] == pub
        assert iface["listen_port"] == 51820 == wg.listen_port
        (peer,) = peers
        assert peer.public_key == peer_pub
        assert peer.preshared_key == psk
        assert peer.endpoint == f"{netns_pair.addr_b4}:51820"
        assert sorted(peer.allowed_ips) == ["10.99.0.2/32", "fd99::2/128"]
        assert peer.persistent_keepalive == 25
        link = netns_pair.a.run("ip", "-o", "link", "show", "dev", wg.iface).stdout
        assert "mtu 1280" in link
        assert ",UP" in link
        addrs = netns_pair.a.run("ip", "-o", "addr", "show", "dev", wg.iface).stdout
        assert "10.99.0.1/24" in addrs
        assert "fd99::1/64" in addrs
        assert "UAPI: Updating private key" in wg.log_text()  # debug log is captured
        wg.remove_peer(peer_pub)
        assert wg.dump()[1] == []
    assert wg.proc is None
    assert not wg.socket_path.exists()


@pytest.mark.netns
def test_two_wireguard_go_instances_tunnel_traffic(netns_pair):
    """The harness configures wireguard-go well enough for a real handshake."""
    require_tools("wireguard-go", "wg")
    p = netns_pair
    priv_a, pub_a = gen_keypair()
    priv_b, pub_b = gen_keypair()
    psk = gen_psk()
    wg_a = WireguardGo(p.a, priv_a, listen_port=51820, addresses=["10.99.0.1/24", "fd99::1/64"])
    wg_b = WireguardGo(p.b, priv_b, listen_port=51821, addresses=["10.99.0.2/24", "fd99::2/64"])
    with wg_a, wg_b:
        wg_a.set_peer(
            pub_b,
            allowed_ips=["10.99.0.2/32", "fd99::2/128"],
            endpoint=(p.addr_b6, 51821),
            preshared_key=psk,
        )
        wg_b.set_peer(pub_a, allowed_ips=["10.99.0.1/32", "fd99::1/128"], preshared_key=psk)
        p.a.run("ping", "-c1", "-W3", "10.99.0.2")
        p.b.run("ping", "-c1", "-W2", "fd99::1")
        assert wg_a.wait_for_handshake(pub_b).rx_bytes > 0
        # b learned a's endpoint from the authenticated handshake (roaming)
        assert wg_b.peer(pub_a).endpoint == f"[{p.addr_a6}]:51820"


@pytest.mark.netns
def test_cleanup_leaves_no_namespace_or_process(root_netns):
    require_tools("wireguard-go", "wg")
    priv, _ = gen_keypair()
    _, peer_pub = gen_keypair()
    with Netns() as ns:
        name = ns.name
        assert name in _namespaces()
        assert name.startswith("wga-")
        assert len(name) <= 15
        tracked = ns.popen("sleep", "300")
        # an untracked, detached process: only `ip netns pids` can find it
        orphan = int(
            ns.run("sh", "-c", "sleep 300 </dev/null >/dev/null 2>&1 & echo $!").stdout.strip()
        )
        wg = WireguardGo(
            ns, priv, peers=[{"public_key": peer_pub, "allowed_ips": ["10.98.0.2/32"]}]
        )
        wg.start()  # deliberately not stopped: the namespace cleanup must cope
        wg_pid = wg.proc.pid
        assert wg.listen_port > 0
        assert all(_alive(pid) for pid in (tracked.pid, orphan, wg_pid))
        assert set(ns.pids()) >= {tracked.pid, orphan, wg_pid}
    assert name not in _namespaces()
    for pid in (tracked.pid, orphan, wg_pid):
        assert not _alive(pid), f"pid {pid} survived namespace cleanup"
    wg.stop()  # after the namespace is gone: still must not raise
    assert not wg.socket_path.exists()
    assert "UAPI" in wg.log_text()


def test_require_root_netns_skips_or_fails_under_ci(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="root"):
        require_root_netns()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_root_netns()

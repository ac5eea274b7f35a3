"""The whole daemon, live: `wgactors up` in a namespace against real wireguard-go (and itself).

Every test here runs the real launcher on a real TUN device, with kernel traffic (ping, TCP)
crossing the tunnel, in namespaces the test creates. Both modes are covered where it matters:
the actor pipeline and `--single-threaded`.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from netns import WgPeer, WireguardGo, gen_keypair, gen_psk, parse_dump
from wgactors_proc import ROOT, Wgactors, remove_stale_socket, wireguard_go_pair, write_conf

from actors.lab import reachable

pytestmark = pytest.mark.netns

MODES = [pytest.param((), id="actors"), pytest.param(("--single-threaded",), id="single")]
A4, B4, A6, B6 = "10.99.0.1", "10.99.0.2", "fd99::1", "fd99::2"
TCPCHECK = str(ROOT / "tests" / "tcpcheck.py")
TRANSFER_BYTES = 50 * 1024 * 1024


def our_conf(
    tmp_path: Path, iface: str, private: str, peers: list[dict], port: int = 51821
) -> Path:
    return write_conf(
        tmp_path,
        iface,
        {"PrivateKey": private, "ListenPort": port, "Address": f"{A4}/24, {A6}/64"},
        peers,
    )


@pytest.mark.parametrize("mode", MODES)
def test_wgactors_initiates_to_wireguard_go(netns_pair, tmp_path: Path, mode: tuple) -> None:
    ours, our_pub = gen_keypair()
    theirs, _ = gen_keypair()
    psk = gen_psk()
    with WireguardGo(
        netns_pair.b,
        theirs,
        listen_port=51820,
        addresses=[f"{B4}/24", f"{B6}/64"],
        peers=[WgPeer(our_pub, [f"{A4}/32", f"{A6}/128"], preshared_key=psk)],
    ) as wggo:
        conf = our_conf(
            tmp_path,
            "wga0",
            ours,
            [
                {
                    "PublicKey": wggo.public_key,
                    "PresharedKey": psk,
                    "AllowedIPs": f"{B4}/32, {B6}/128",
                    "Endpoint": f"{netns_pair.addr_b4}:51820",
                }
            ],
        )
        with Wgactors(netns_pair.a, conf, *mode) as daemon:
            assert reachable(netns_pair.a, B4), daemon.log()
            assert reachable(netns_pair.a, B6), daemon.log()
            assert reachable(netns_pair.b, A4), daemon.log()
            assert reachable(netns_pair.b, A6), daemon.log()
            peer = wggo.peer(our_pub)
            assert peer is not None and peer.latest_handshake > 0
            assert peer.endpoint == f"{netns_pair.addr_a4}:51821"
            assert daemon.terminate() == 0


@pytest.mark.parametrize("mode", MODES)
def test_wireguard_go_initiates_to_wgactors(netns_pair, tmp_path: Path, mode: tuple) -> None:
    ours, our_pub = gen_keypair()
    theirs, _ = gen_keypair()
    with WireguardGo(
        netns_pair.b,
        theirs,
        listen_port=51820,
        addresses=[f"{B4}/24", f"{B6}/64"],
        peers=[WgPeer(our_pub, [f"{A4}/32", f"{A6}/128"], endpoint=(netns_pair.addr_a4, 51821))],
    ) as wggo:
        # no Endpoint: wgactors learns it from wireguard-go's handshake
        conf = our_conf(
            tmp_path,
            "wga1",
            ours,
            [{"PublicKey": wggo.public_key, "AllowedIPs": f"{B4}/32, {B6}/128"}],
        )
        with Wgactors(netns_pair.a, conf, *mode) as daemon:
            assert reachable(netns_pair.b, A6), daemon.log()
            assert reachable(netns_pair.b, A4), daemon.log()
            assert reachable(netns_pair.a, B4), daemon.log()
            assert daemon.terminate() == 0


def test_ipv6_outer_endpoint(netns_pair, tmp_path: Path) -> None:
    ours, our_pub = gen_keypair()
    theirs, _ = gen_keypair()
    with WireguardGo(
        netns_pair.b,
        theirs,
        listen_port=51820,
        addresses=[f"{B4}/24", f"{B6}/64"],
        peers=[WgPeer(our_pub, [f"{A4}/32", f"{A6}/128"])],
    ) as wggo:
        conf = our_conf(
            tmp_path,
            "wga2",
            ours,
            [
                {
                    "PublicKey": wggo.public_key,
                    "AllowedIPs": f"{B4}/32, {B6}/128",
                    "Endpoint": f"[{netns_pair.addr_b6}]:51820",
                }
            ],
        )
        with Wgactors(netns_pair.a, conf) as daemon:
            assert reachable(netns_pair.a, B4), daemon.log()
            assert reachable(netns_pair.a, B6), daemon.log()
            peer = wggo.peer(our_pub)
            assert peer is not None and peer.endpoint == f"[{netns_pair.addr_a6}]:51821"


def test_wgactors_to_wgactors(netns_pair, tmp_path: Path) -> None:
    a_priv, a_pub = gen_keypair()
    b_priv, b_pub = gen_keypair()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    conf_a = our_conf(
        tmp_path / "a",
        "wgaa",
        a_priv,
        [
            {
                "PublicKey": b_pub,
                "AllowedIPs": f"{B4}/32, {B6}/128",
                "Endpoint": f"{netns_pair.addr_b4}:51820",
            }
        ],
    )
    conf_b = write_conf(
        tmp_path / "b",
        "wgab",
        {"PrivateKey": b_priv, "ListenPort": 51820, "Address": f"{B4}/24, {B6}/64"},
        [{"PublicKey": a_pub, "AllowedIPs": f"{A4}/32, {A6}/128", "PersistentKeepalive": 25}],
    )
    with (
        Wgactors(netns_pair.b, conf_b) as b,
        Wgactors(netns_pair.a, conf_a, "--single-threaded") as a,
    ):
        assert reachable(netns_pair.a, B4), a.log() + b.log()
        assert reachable(netns_pair.b, A6), a.log() + b.log()
        assert a.terminate() == 0
        assert b.terminate() == 0


def test_two_peers_routed_by_allowed_ips(netns_pair, tmp_path: Path) -> None:
    ours, our_pub = gen_keypair()
    k1, _ = gen_keypair()
    k2, _ = gen_keypair()
    with (
        WireguardGo(
            netns_pair.b,
            k1,
            listen_port=51820,
            addresses=["10.99.1.2/24"],
            peers=[WgPeer(our_pub, ["10.99.1.1/32"])],
        ) as go1,
        WireguardGo(
            netns_pair.b,
            k2,
            listen_port=51830,
            addresses=["10.99.2.2/24"],
            peers=[WgPeer(our_pub, ["10.99.2.1/32"])],
        ) as go2,
    ):
        conf = write_conf(
            tmp_path,
            "wga3",
            {"PrivateKey": ours, "ListenPort": 51821, "Address": "10.99.1.1/24, 10.99.2.1/24"},
            [
                {
                    "PublicKey": go1.public_key,
                    "AllowedIPs": "10.99.1.2/32",
                    "Endpoint": f"{netns_pair.addr_b4}:51820",
                },
                {
                    "PublicKey": go2.public_key,
                    "AllowedIPs": "10.99.2.2/32",
                    "Endpoint": f"{netns_pair.addr_b4}:51830",
                },
            ],
        )
        with Wgactors(netns_pair.a, conf) as daemon:
            # explicit sources: each wireguard-go only admits its own subnet's address
            assert reachable(netns_pair.a, "10.99.1.2", source="10.99.1.1"), daemon.log()
            p1 = go1.peer(our_pub)
            p2 = go2.peer(our_pub)
            assert p1 is not None and p1.rx_bytes > 0
            assert p2 is not None and p2.rx_bytes == 0  # nothing was routed to peer 2 yet
            assert reachable(netns_pair.a, "10.99.2.2", source="10.99.2.1"), daemon.log()
            p2 = go2.peer(our_pub)
            assert p2 is not None and p2.rx_bytes > 0


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_tcp_transfer_50mb_with_checksum(netns_pair, tmp_path: Path, direction: str) -> None:
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wga4")
    with wggo, Wgactors(netns_pair.a, conf) as daemon:
        # wireguard-go has no endpoint for us until we have spoken: say hello first
        assert reachable(netns_pair.a, B4, count=1), daemon.log()
        server_ns, client_ns, server_addr = (
            (netns_pair.b, netns_pair.a, B4)
            if direction == "upload"
            else (netns_pair.a, netns_pair.b, A4)
        )
        server = server_ns.popen(
            sys.executable, TCPCHECK, "serve", "5201", stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        result = client_ns.run(
            sys.executable, TCPCHECK, "send", server_addr, 5201, TRANSFER_BYTES, timeout=120
        )
        local, remote = result.stdout.split()
        assert local == remote, daemon.log()[-3000:]
        assert server.wait(10) == 0
        # each stage's thread carries its name, for top -H and ps -L
        assert daemon.proc is not None
        names = set()
        for task in Path(f"/proc/{daemon.proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread may end meanwhile
                names.add((task / "comm").read_text().strip())
        stages = ("udp_ingress", "decrypt", "encrypt", "tun_reader", "tun_writer", "ticker")
        assert {f"wga:{s}" for s in stages} <= names, names
        assert daemon.terminate() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("mode", MODES)
def test_signal_exits_0_and_removes_interface(netns_pair, tmp_path: Path, sig, mode) -> None:
    ours, _ = gen_keypair()
    _, peer_pub = gen_keypair()
    conf = our_conf(tmp_path, "wga5", ours, [{"PublicKey": peer_pub, "AllowedIPs": f"{B4}/32"}])
    daemon = Wgactors(netns_pair.a, conf, *mode).start()
    assert daemon.interface_exists()
    assert daemon.terminate(sig) == 0
    assert not daemon.interface_exists()
    assert "wga5 down" in daemon.log()


def test_crash_leaves_no_interface(netns_pair, tmp_path: Path) -> None:
    ours, _ = gen_keypair()
    _, peer_pub = gen_keypair()
    conf = our_conf(tmp_path, "wga6", ours, [{"PublicKey": peer_pub, "AllowedIPs": f"{B4}/32"}])
    daemon = Wgactors(netns_pair.a, conf).start()
    try:
        assert daemon.interface_exists()
        daemon.terminate(signal.SIGKILL)
        assert not daemon.interface_exists()
        # a killed daemon cannot remove its UAPI socket (nor can wireguard-go); the next start
        # finds nobody listening on it, replaces it, and removes it on a clean exit
        assert daemon.socket_path.exists()
        with Wgactors(netns_pair.a, conf) as again:
            assert again.interface_exists()
            assert again.terminate() == 0
        assert not daemon.socket_path.exists()
    finally:
        daemon.__exit__(None, None, None)
        remove_stale_socket(daemon.socket_path)


@pytest.mark.parametrize(
    ("body", "line", "key"),
    [
        ("[Interface]\nPrivateKey = nonsense\n", 2, "PrivateKey"),
        ("[Interface]\nPrivateKey = {priv}\nMTU = 99999\n", 3, "MTU"),
        (
            "[Interface]\nPrivateKey = {priv}\n\n[Peer]\nPublicKey = {pub}\nAllowedIPs = 10.1.2\n",
            6,
            "AllowedIPs",
        ),
        ("[Interface]\nPrivateKey = {priv}\nListenPort = 99999\n", 3, "ListenPort"),
    ],
)
def test_bad_config_exits_2_and_leaves_nothing(netns_pair, tmp_path: Path, body, line, key) -> None:
    priv, _ = gen_keypair()
    _, pub = gen_keypair()
    conf = tmp_path / "wga7.conf"
    conf.write_text(body.format(priv=priv, pub=pub))
    conf.chmod(0o600)
    result = netns_pair.a.run(str(ROOT / "scripts" / "wgactors"), "up", str(conf), check=False)
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"wgactors: {conf}:{line}: {key}")
    assert priv not in result.stderr
    assert netns_pair.a.ip("link", "show", "dev", "wga7", check=False).returncode != 0
    # nothing listens on UDP in the namespace either
    assert "udp" not in netns_pair.a.run("ss", "-uanH").stdout


def test_wireguard_go_dump_parses() -> None:
    """The harness's `wg show dump` parser, on a known line (used by the assertions above)."""
    _head, peers = parse_dump(
        "priv\tpub\t51820\toff\n"
        "peerkey\t(none)\t10.0.0.2:51820\t10.9.0.0/24\t1700000000\t10\t20\toff\n"
    )
    assert peers[0].endpoint == "10.0.0.2:51820" and peers[0].rx_bytes == 10


@pytest.mark.parametrize("mode", MODES)
def test_raised_mtu_is_answered_with_icmp_too_big(netns_pair, tmp_path: Path, mode) -> None:
    """wg-quick's default MTU is 1420. Oversize packets with DF are dropped, counted and
    answered with ICMP "fragmentation needed" (MTU 1280), so the kernel learns the path MTU and
    TCP works; the raised MTU is noticed in the log, with what it means."""
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wga8")
    with wggo, Wgactors(netns_pair.a, conf, *mode) as daemon:
        assert reachable(netns_pair.a, B4, count=1), daemon.log()
        netns_pair.a.ip("link", "set", "dev", "wga8", "mtu", "1420")
        # 1300 bytes of payload make a 1328-byte packet with DF: the first is answered
        # with "frag needed", then the kernel fragments to 1280 and the rest get through
        big = netns_pair.a.run(
            "ping", "-c", "4", "-i", "0.2", "-W", "1", "-s", "1300", B4, check=False
        )
        assert "mtu = 1280" in big.stdout, big.stdout
        assert " 0 received" not in big.stdout, big.stdout
        # TCP with MSS from MTU 1420 completes, through path MTU discovery
        server = netns_pair.b.popen(
            sys.executable, TCPCHECK, "serve", "5201", stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        sent = netns_pair.a.run(sys.executable, TCPCHECK, "send", B4, 5201, 5_000_000)
        local, remote = sent.stdout.split()
        assert local == remote
        assert daemon.terminate() == 0
        log = daemon.log()
        notice = "wga8: MTU 1420 on the interface: packets above 1280 are fragmented"
        assert log.count(notice) == 1, log
        assert re.search(r"'oversize': [1-9]", log), log[-2000:]

"""The decisive test: the sans-I/O core speaks WireGuard with a real wireguard-go.

wireguard-go runs in namespace ``b`` with a kernel TUN device. From namespace ``a`` the core is
driven over a plain UDP socket, with no TUN of our own: we encrypt ICMP echo requests to
wireguard-go's tunnel address and decrypt the kernel's echo replies; and when wireguard-go
initiates (its kernel pings us), we answer the handshake and the pings ourselves.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable

import pytest
from ippkt import ICMP6_ECHO_REPLY, ICMP_ECHO_REPLY, echo_reply_for, icmp_echo, parse_echo
from netns import WgPeer, WireguardGo, gen_keypair, gen_psk, socket_in

from actors import Packet
from actors.wireguard import Deliver, PeerConfig, Transmit, Tunnel

pytestmark = pytest.mark.netns

OUR_TUN4, PEER_TUN4 = "10.99.0.1", "10.99.0.2"
OUR_TUN6, PEER_TUN6 = "fd99::1", "fd99::2"
DRIVE_TIMEOUT = 10.0  # seconds; every loop below is bounded by it


class Driver:
    """Runs a Tunnel over a real UDP socket: the smallest possible I/O shell."""

    def __init__(self, tunnel: Tunnel, sock: socket.socket) -> None:
        self.tunnel = tunnel
        self.sock = sock
        self.delivered: list[Packet] = []
        self.on_deliver: Callable[[Packet], Packet | None] | None = None

    def _do(self, actions: list[Transmit | Deliver]) -> None:
        for action in actions:
            if isinstance(action, Transmit):
                self.sock.sendto(action.data, action.endpoint)
            else:
                self.delivered.append(action.packet)
                if self.on_deliver is not None:
                    answer = self.on_deliver(action.packet)
                    if answer is not None:
                        self._do(self.tunnel.send(answer, time.monotonic(), time.time()))

    def send(self, packet: Packet) -> None:
        self._do(self.tunnel.send(packet, time.monotonic(), time.time()))

    def run_until(self, done: Callable[[], bool], timeout: float = DRIVE_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.05)
        while time.monotonic() < deadline:
            self._do(self.tunnel.update_timers(time.monotonic(), time.time()))
            if done():
                return True
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self._do(self.tunnel.receive(data, (addr[0], addr[1]), time.monotonic(), time.time()))
        return done()


def make_tunnel(private_b64: str, peer_public_b64: str, psk_b64: str | None, endpoint):
    return Tunnel(
        base64.b64decode(private_b64),
        [
            PeerConfig(
                base64.b64decode(peer_public_b64),
                base64.b64decode(psk_b64) if psk_b64 else None,
                endpoint,
                (f"{PEER_TUN4}/32", f"{PEER_TUN6}/128"),
            )
        ],
        now=time.monotonic(),
    )


def replies(driver: Driver, kind: int) -> list[tuple[int, int, bytes]]:
    out = []
    for p in driver.delivered:
        t, ident, seq, data = parse_echo(p)
        if t == kind:
            out.append((ident, seq, data))
    return out


@pytest.mark.parametrize("outer", ["v4", "v6"])
@pytest.mark.parametrize("with_psk", [False, True], ids=["no-psk", "psk"])
def test_core_initiates_to_wireguard_go(netns_pair, outer: str, with_psk: bool) -> None:
    our_priv, our_pub = gen_keypair()
    peer_priv, _ = gen_keypair()
    psk = gen_psk() if with_psk else None
    family = socket.AF_INET if outer == "v4" else socket.AF_INET6
    peer_addr = netns_pair.addr_b4 if outer == "v4" else netns_pair.addr_b6
    with (
        WireguardGo(
            netns_pair.b,
            peer_priv,
            listen_port=51820,
            addresses=[f"{PEER_TUN4}/24", f"{PEER_TUN6}/64"],
            peers=[WgPeer(our_pub, [f"{OUR_TUN4}/32", f"{OUR_TUN6}/128"], preshared_key=psk)],
        ) as wggo,
        socket_in(netns_pair.a, family) as sock,
    ):
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        driver = Driver(make_tunnel(our_priv, wggo.public_key, psk, (peer_addr, 51820)), sock)
        driver.send(icmp_echo(OUR_TUN4, PEER_TUN4, 0x4242, 1, b"wgactors interop v4"))
        driver.send(icmp_echo(OUR_TUN6, PEER_TUN6, 0x4243, 1, b"wgactors interop v6"))
        assert driver.run_until(
            lambda: replies(driver, ICMP_ECHO_REPLY) and replies(driver, ICMP6_ECHO_REPLY)
        ), f"no echo replies; wireguard-go log:\n{wggo.log_text()[-3000:]}"
        assert replies(driver, ICMP_ECHO_REPLY) == [(0x4242, 1, b"wgactors interop v4")]
        assert replies(driver, ICMP6_ECHO_REPLY) == [(0x4243, 1, b"wgactors interop v6")]
        # wireguard-go saw a completed handshake with our key, and our traffic
        peer = wggo.peer(our_pub)
        assert peer is not None and peer.latest_handshake > 0 and peer.rx_bytes > 0
        # more traffic on the same session, in order
        for seq in range(2, 12):
            driver.send(icmp_echo(OUR_TUN4, PEER_TUN4, 0x4242, seq, b"again"))
        assert driver.run_until(lambda: len(replies(driver, ICMP_ECHO_REPLY)) == 11)
        assert [s for _, s, _ in replies(driver, ICMP_ECHO_REPLY)] == list(range(1, 12))
        assert driver.tunnel.device.peer_stats(base64.b64decode(wggo.public_key)).handshakes == 1


@pytest.mark.parametrize("with_psk", [False, True], ids=["no-psk", "psk"])
def test_wireguard_go_initiates_to_core(netns_pair, with_psk: bool) -> None:
    our_priv, our_pub = gen_keypair()
    peer_priv, _ = gen_keypair()
    psk = gen_psk() if with_psk else None
    with socket_in(netns_pair.a, socket.AF_INET) as sock:
        sock.bind((netns_pair.addr_a4, 0))
        our_port = sock.getsockname()[1]
        with WireguardGo(
            netns_pair.b,
            peer_priv,
            listen_port=51820,
            addresses=[f"{PEER_TUN4}/24", f"{PEER_TUN6}/64"],
            peers=[
                WgPeer(
                    our_pub,
                    [f"{OUR_TUN4}/32", f"{OUR_TUN6}/128"],
                    endpoint=(netns_pair.addr_a4, our_port),
                    preshared_key=psk,
                )
            ],
        ) as wggo:
            # The core has no endpoint for wireguard-go: it must learn it from the handshake.
            driver = Driver(make_tunnel(our_priv, wggo.public_key, psk, None), sock)
            driver.on_deliver = echo_reply_for  # we are the host that answers pings
            ping = netns_pair.b.popen(
                "ping", "-c", "3", "-i", "0.2", "-W", "5", OUR_TUN4, stdout=-1, stderr=-1
            )
            driver.run_until(lambda: ping.poll() is not None)
            out, err = ping.communicate(timeout=5)
            assert ping.returncode == 0, f"ping failed: {out} {err}\n{wggo.log_text()[-3000:]}"
            assert b"3 received" in out
            requests = [parse_echo(p) for p in driver.delivered]
            assert len(requests) >= 3 and all(r[0] == 8 for r in requests)
            dev = driver.tunnel.device
            peer_key = base64.b64decode(wggo.public_key)
            assert dev.events["initiations_answered"] == 1
            assert dev.peer_endpoint(peer_key) == (netns_pair.addr_b4, 51820)
            # and now the other way on the same session: our echo request, the kernel's reply
            driver.on_deliver = None
            driver.send(icmp_echo(OUR_TUN6, PEER_TUN6, 7, 7, b"back"))
            assert driver.run_until(lambda: bool(replies(driver, ICMP6_ECHO_REPLY)))
            assert replies(driver, ICMP6_ECHO_REPLY) == [(7, 7, b"back")]

"""UDP GSO sends and GRO receives on real loopback sockets (no namespaces needed)."""

from __future__ import annotations

import os
import select
import socket
from collections import Counter

from actors.io.mmsg import MmsgReceiver
from actors.io.offloads import OffloadPlan
from actors.io.udp import UdpSocket
from actors.io.udp_gso import MAX_GSO_SEGMENTS, SOL_UDP, UDP_GRO, GroReceiver, GsoSender


def pair(gro: bool) -> tuple[socket.socket, socket.socket]:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    if gro:
        rx.setsockopt(SOL_UDP, UDP_GRO, 1)
    rx.setblocking(False)
    return tx, rx


def drain(receiver: MmsgReceiver, rx: socket.socket, want: int) -> list[bytes]:
    got: list[bytes] = []
    drops: Counter[str] = Counter()
    for _ in range(100):  # bounded: each round waits at most 0.1 s
        if len(got) >= want or not select.select([rx], [], [], 0.1)[0]:
            break
        got += [d for d, _ in receiver.receive(64, drops)]
    assert not drops
    return got


def test_gso_sends_runs_and_gro_splits_them() -> None:
    tx, rx = pair(gro=True)
    with tx, rx:
        sender, receiver = GsoSender(tx), GroReceiver(rx)
        addr = sender.sendable(*rx.getsockname())
        datagrams = [os.urandom(1312) for _ in range(100)] + [b"short"]
        datagrams += [os.urandom(148) for _ in range(3)]  # another size: another run
        drops: Counter[str] = Counter()
        assert sender.send([(d, addr) for d in datagrams], drops) == len(datagrams)
        assert not drops
        # 100 + "short": runs of 49 (64 KB at most each), 49 and 3; the 148-byte ones a fourth
        assert sender.runs_sent == 4 and sender.runs_datagrams == len(datagrams)
        assert sender.bytes_sent == sum(map(len, datagrams))
        assert drain(receiver, rx, len(datagrams)) == datagrams
        assert receiver.runs_received >= 1


def test_gso_sender_keeps_endpoints_apart_and_plain_receiver_sees_datagrams() -> None:
    tx, rx = pair(gro=False)
    _, rx2 = pair(gro=False)
    with tx, rx, rx2:
        sender = GsoSender(tx)
        a, b = sender.sendable(*rx.getsockname()), sender.sendable(*rx2.getsockname())
        items = [(bytes([i]) * 200, a if i % 3 else b) for i in range(MAX_GSO_SEGMENTS * 3)]
        assert sender.send(items, Counter()) == len(items)
        assert drain(MmsgReceiver(rx), rx, 200) == [d for d, t in items if t is a]
        assert drain(MmsgReceiver(rx2), rx2, 200) == [d for d, t in items if t is b]


def test_udp_socket_offload_states_and_refusal() -> None:
    plan = OffloadPlan(wanted=frozenset({"udp_gso", "udp_gro"}), refused=frozenset({"udp_gro"}))
    udp = UdpSocket(0, offloads=plan)
    try:
        assert udp.offloads == {"udp_gso": "on", "udp_gro": "refused"}
        assert isinstance(udp.make_sender(), GsoSender)
        assert not isinstance(udp.make_receiver(), GroReceiver)
        udp.rebind(0)  # a new socket under the same descriptor keeps the states
        assert udp.offloads == {"udp_gso": "on", "udp_gro": "refused"}
    finally:
        udp.close()
    udp = UdpSocket(0)  # no plan: nothing asked for
    try:
        assert udp.offloads == {"udp_gso": "off", "udp_gro": "off"}
    finally:
        udp.close()

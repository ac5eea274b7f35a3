"""The effects layer: the one place where the core's actions become system calls, for every
data plane. A real socket on loopback receives what the Transmitter sends."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from actors import build
from actors.io.effects import BAD_ENDPOINT, Transmitter
from actors.io.udp import UdpSocket
from actors.packet import Packet
from actors.wireguard.actions import (
    Action,
    Deliver,
    DeliverBatch,
    HandshakeWanted,
    Sent,
    Transmit,
    TransmitBatch,
)

PEER = b"p" * 32
WAIT = 5.0  # seconds a receive on loopback may take


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    """Where the datagrams go: a plain socket on loopback."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(WAIT)
    yield s
    s.close()


@pytest.fixture
def udp() -> Iterator[UdpSocket]:
    sock = UdpSocket(0)
    yield sock
    sock.close()


def _packet(n: int) -> Packet:
    return build.udp("10.0.0.1", "10.0.0.2", 1000 + n, 53, bytes([n]))


def test_datagrams_go_out_in_one_batch_and_the_rest_comes_back_in_order(
    udp: UdpSocket, sink: socket.socket
) -> None:
    to = ("127.0.0.1", sink.getsockname()[1])
    p1, p2, p3 = _packet(1), _packet(2), _packet(3)
    wanted, sent = HandshakeWanted(PEER), Sent(PEER, 1, 0, 10)
    actions: list[Action] = [
        TransmitBatch((b"a", b"bb"), to),
        Deliver(p1, PEER),
        wanted,
        Transmit(b"ccc", to),
        DeliverBatch((p2, p3), PEER),
        sent,
    ]
    drops: Counter[str] = Counter()
    delivered: list[Packet] = []
    events: list[Action] = []
    assert Transmitter(udp).carry_out(actions, drops, delivered, events) == (3, 6)
    assert [sink.recv(100) for _ in range(3)] == [b"a", b"bb", b"ccc"]
    assert delivered == [p1, p2, p3]
    assert events == [wanted, sent]
    assert not drops


def test_an_endpoint_the_socket_cannot_reach_is_a_counted_drop_and_the_rest_goes_out(
    udp: UdpSocket, sink: socket.socket
) -> None:
    to = ("127.0.0.1", sink.getsockname()[1])
    drops: Counter[str] = Counter()
    actions: list[Action] = [
        TransmitBatch((b"x", b"y"), ("not an address", 1)),
        Transmit(b"z", ("999.1.1.1", 1)),
        Transmit(b"ok", to),
    ]
    assert Transmitter(udp).carry_out(actions, drops, [], []) == (1, 2)
    assert drops == Counter({BAD_ENDPOINT: 3})
    assert sink.recv(100) == b"ok"


def test_packets_for_the_host_are_only_handed_back(udp: UdpSocket) -> None:
    transmitter = Transmitter(udp)
    delivered: list[Packet] = []
    p = _packet(1)
    assert transmitter.carry_out([Deliver(p, PEER)], Counter(), delivered, []) == (0, 0)
    assert delivered == [p]

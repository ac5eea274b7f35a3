"""Kernel steering for worker processes: receiver indices that name their worker, and the
classic BPF program that delivers each datagram to the owner's socket in a reuseport group.
Real sockets on loopback; the kernel runs the real program."""

from __future__ import annotations

import os
import random
import select
import socket
import struct
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netns import Netns, entered, require_root_netns

from actors.io.mmsg import MmsgReceiver
from actors.io.steering import attach_steering, open_group, rebind_group, steering_program
from actors.io.udp import UdpSocket
from actors.wireguard.actions import HandshakeWanted, Transmit
from actors.wireguard.crypto import public_key
from actors.wireguard.device import Device, PeerConfig
from actors.wireguard.indextable import IndexTable
from actors.wireguard.sharding import MAX_WORKERS, index_for_worker, worker_of_index

WAIT = 5.0  # seconds a datagram on loopback may take


@given(st.integers(0, 2**32 - 1), st.integers(1, MAX_WORKERS), st.data())
def test_an_index_made_for_a_worker_names_that_worker(r: int, workers: int, data) -> None:  # type: ignore[no-untyped-def]
    worker = data.draw(st.integers(0, workers - 1))
    index = index_for_worker(r, worker, workers)
    assert 0 <= index < 2**32
    assert worker_of_index(index, workers) == worker
    assert index >> 8 == r >> 8  # the upper 24 random bits are kept
    assert abs((index & 0xFF) - (r & 0xFF)) < workers


def test_bad_worker_numbers_are_refused() -> None:
    for worker, workers in [(0, 0), (2, 2), (-1, 2), (0, MAX_WORKERS + 1)]:
        with pytest.raises(ValueError):
            index_for_worker(0, worker, workers)
    with pytest.raises(ValueError):
        steering_program(0)


@pytest.fixture(params=[2, 3, 4])
def group(request: pytest.FixtureRequest) -> Iterator[list[socket.socket]]:
    """``workers`` UDP sockets in one reuseport group on loopback, joined in worker order,
    with the steering program attached."""
    workers: int = request.param
    socks: list[socket.socket] = []
    port = 0
    for _ in range(workers):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        port = s.getsockname()[1]
        s.settimeout(WAIT)
        socks.append(s)
    attach_steering(socks[0], workers)
    yield socks
    for s in socks:
        s.close()


def _message(kind: int, index: int) -> bytes:
    if kind == 2:  # response: sender index, then our receiver index
        return struct.pack("<BxxxII", 2, 0xDEADBEEF, index) + bytes(80)
    return struct.pack("<BxxxI", kind, index) + bytes(40)


def test_each_datagram_reaches_the_socket_of_the_worker_that_owns_its_index(
    group: list[socket.socket],
) -> None:
    workers = len(group)
    port = group[0].getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(7)
    try:
        for _ in range(20):
            for kind in (2, 3, 4):
                worker = rng.randrange(workers)
                data = _message(kind, index_for_worker(rng.getrandbits(32), worker, workers))
                sender.sendto(data, ("127.0.0.1", port))
                assert group[worker].recv(2048) == data, (kind, worker)
    finally:
        sender.close()


def test_initiations_are_spread_by_the_kernels_hash_consistently_per_source(
    group: list[socket.socket],
) -> None:
    port = group[0].getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        landed = set()
        for _ in range(5):
            data = b"\x01\0\0\0" + os.urandom(144)
            sender.sendto(data, ("127.0.0.1", port))
            ready, _, _ = select.select(group, [], [], WAIT)
            assert len(ready) == 1
            assert ready[0].recv(2048) == data
            landed.add(group.index(ready[0]))
        assert len(landed) == 1  # one source: one socket, by the hash of its addresses
    finally:
        sender.close()


def test_a_sharded_device_names_its_worker_in_every_index_it_hands_out() -> None:
    """The core side of steering: the initiations (and so the sessions) of a device that is
    worker 2 of 3 carry sender indices that the kernel's filter maps back to worker 2."""
    ours, theirs = os.urandom(32), os.urandom(32)
    device = Device(ours, shard=(2, 3))
    peer = public_key(theirs)
    device.add_peer(PeerConfig(peer, endpoint=("127.0.0.1", 9)), 0.0)
    seen = set()
    for i in range(30):  # a handshake every REKEY_TIMEOUT: a fresh index each time
        now = i * 6.0
        actions = device.handle(HandshakeWanted(peer), now, 1.7e9 + now)
        for action in actions:
            if isinstance(action, Transmit) and action.data[0] == 1:
                index = struct.unpack_from("<I", action.data, 4)[0]
                assert worker_of_index(index, 3) == 2
                seen.add(index)
    assert len(seen) == 30


def test_an_index_table_refuses_a_shard_that_cannot_be() -> None:
    with pytest.raises(ValueError):
        IndexTable(os.urandom, (3, 3))


@pytest.fixture
def ns() -> Iterator[Netns]:
    require_root_netns()
    with Netns() as namespace:
        yield namespace


def _receive(member: UdpSocket, receiver: MmsgReceiver) -> list[bytes]:
    """What ``member`` has (waiting up to WAIT for the first datagram)."""
    if not member.wait_readable(WAIT):
        return []
    return [data for data, _ in member.read_batch(64, Counter(), receiver)]


@pytest.mark.parametrize("workers", [2, 4])
def test_a_group_of_worker_sockets_gets_each_datagram_at_its_workers_socket(
    ns: Netns, workers: int
) -> None:
    """The daemon's own sockets (dual-stack, one per worker, joined in order): each transport
    message reaches its index's worker, over IPv4 and IPv6, also after the group has moved to
    another port."""
    rng = random.Random(11)
    with entered(ns):
        group = open_group(0, workers)
        sender4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            assert all(m.reuseport and m.port == group[0].port for m in group)
            receivers = [m.make_receiver() for m in group]
            for round_ in range(2):
                if round_:
                    rebind_group(group, 0)  # `wg set listen-port`: a new port for all
                    assert len({m.port for m in group}) == 1
                for sender, host in ((sender4, "127.0.0.1"), (sender6, "::1")):
                    for _ in range(3 * workers):
                        worker = rng.randrange(workers)
                        data = _message(4, index_for_worker(rng.getrandbits(32), worker, workers))
                        sender.sendto(data, (host, group[0].port))
                        assert _receive(group[worker], receivers[worker]) == [data]
        finally:
            sender4.close()
            sender6.close()
            for member in group:
                member.close()


def test_one_worker_has_the_plain_socket_it_always_had(ns: Netns) -> None:
    with entered(ns):
        (only,) = open_group(0, 1)
        try:
            assert not only.reuseport
            assert only.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
            with pytest.raises(OSError):  # nobody can join its port
                UdpSocket(only.port, reuseport=True).close()
        finally:
            only.close()

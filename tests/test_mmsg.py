"""sendmmsg and recvmmsg: one system call per batch of datagrams, the same datagrams, order and
sources as one call per datagram."""

from __future__ import annotations

import os
import socket
from collections import Counter

import pytest

from actors.io.mmsg import SOCKADDR_SIZE, MmsgReceiver, MmsgSender


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_mmsg_send_and_receive(family: int) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    rx = socket.socket(family, socket.SOCK_DGRAM)
    tx = socket.socket(family, socket.SOCK_DGRAM)
    try:
        rx.bind((host, 0))
        tx.bind((host, 0))
        rx.setblocking(False)
        sender, receiver = MmsgSender(tx, max_batch=8), MmsgReceiver(rx, max_batch=8)
        addr = sender.sendable(host, rx.getsockname()[1])
        drops: Counter[str] = Counter()
        datagrams = [(b"d%d" % i, addr) for i in range(12)]
        assert sender.send(datagrams, drops) == 12 and not drops
        got = receiver.receive(8, drops) + receiver.receive(8, drops)
        assert [d for d, _ in got] == [b"d%d" % i for i in range(12)]
        assert {src for _, src in got} == {(host, tx.getsockname()[1])}
        assert receiver.receive(8, drops) == [] and not drops
    finally:
        rx.close()
        tx.close()


def test_mmsg_sender_slots_follow_changing_destinations() -> None:
    # A slot keeps its sockaddr between batches while it does not change; when it does, the
    # datagram must still go where its own address says (v4-mapped and v6 lengths differ).
    rxs = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(2)]
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rxs[0].bind(("::ffff:127.0.0.1", 0))
        rxs[1].bind(("::1", 0))
        for rx in rxs:
            rx.setblocking(False)
        sender = MmsgSender(tx, max_batch=4)
        addrs = [
            sender.sendable("::ffff:127.0.0.1", rxs[0].getsockname()[1]),
            sender.sendable("::1", rxs[1].getsockname()[1]),
        ]
        drops: Counter[str] = Counter()
        plans = [[0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
        for round_, plan in enumerate(plans):
            batch = [(b"%d-%d" % (round_, k), addrs[dest]) for k, dest in enumerate(plan)]
            assert sender.send(batch, drops) == 4 and not drops
            for dest, rx in enumerate(rxs):
                want = [b"%d-%d" % (round_, k) for k, d in enumerate(plan) if d == dest]
                got = []
                for _ in want:
                    got.append(rx.recv(64))
                assert got == want, (round_, dest)
                with pytest.raises(BlockingIOError):
                    rx.recv(64)
    finally:
        for s in (*rxs, tx):
            s.close()


def test_mmsg_sender_counts_refused_datagrams_and_carries_on() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        sender = MmsgSender(tx)
        good = sender.sendable("127.0.0.1", rx.getsockname()[1])
        drops: Counter[str] = Counter()
        too_big = b"x" * 70_000  # EMSGSIZE for a UDP datagram
        assert sender.send([(b"a", good), (too_big, good), (b"b", good)], drops) == 2
        assert drops == Counter({"send_emsgsize": 1})
        assert sender.bytes_sent == 2  # only what the kernel took
        assert rx.recv(10) == b"a" and rx.recv(10) == b"b"
    finally:
        rx.close()
        tx.close()


def test_ipv4_mapped_sources_are_shown_as_ipv4() -> None:
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("::", 0))
        rx.setblocking(False)
        tx.sendto(b"v4", ("127.0.0.1", rx.getsockname()[1]))
        os.sched_yield()
        got = MmsgReceiver(rx).receive(4, Counter())
        assert got == [(b"v4", ("127.0.0.1", tx.getsockname()[1]))]
    finally:
        rx.close()
        tx.close()


def test_mmsg_receiver_counts_truncated_datagrams_and_reuses_its_slots() -> None:
    """A datagram larger than its slot is counted, not delivered cut; sources stay right across
    calls that use a different number of slots (the kernel rewrites each used slot's address
    length, the receiver restores it)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    one = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    two = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        port = rx.getsockname()[1]
        receiver = MmsgReceiver(rx, max_batch=4, slot=16)
        drops: Counter[str] = Counter()
        one.sendto(b"first", ("127.0.0.1", port))
        one.sendto(b"x" * 40, ("127.0.0.1", port))
        two.sendto(b"second", ("127.0.0.1", port))
        os.sched_yield()
        got = receiver.receive(4, drops)
        assert got == [
            (b"first", ("127.0.0.1", one.getsockname()[1])),
            (b"second", ("127.0.0.1", two.getsockname()[1])),
        ]
        assert drops == Counter(oversize_datagram=1)
        full = [receiver._words[at] for at in receiver._namelen_at]
        assert full == [SOCKADDR_SIZE] * 4  # the kernel wrote 16 into the used ones: restored
        for rounds in range(3):
            sender = (two, one, two)[rounds]
            sender.sendto(b"again", ("127.0.0.1", port))
            os.sched_yield()
            assert receiver.receive(4, drops) == [
                (b"again", ("127.0.0.1", sender.getsockname()[1]))
            ]
            assert [receiver._words[at] for at in receiver._namelen_at] == full
        assert drops == Counter(oversize_datagram=1)
    finally:
        for s in (rx, one, two):
            s.close()

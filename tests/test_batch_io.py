"""Batched system calls: one io_submit / sendmmsg / recvmmsg per batch, same results as
one call per packet."""

from __future__ import annotations

import os
import socket
from collections import Counter

import pytest

from actors.io.batch import SOCKADDR_SIZE, AioReader, AioWriter, MmsgReceiver, MmsgSender


@pytest.fixture
def dgram_pair():
    """A datagram socket pair: like a TUN fd, every read returns exactly one write."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_aio_writer_writes_each_packet_in_order(dgram_pair) -> None:
    a, b = dgram_pair
    writer = AioWriter(a.fileno(), max_batch=8)
    packets = [bytes([i]) * (i + 1) for i in range(20)]  # more than one batch
    assert writer.write(packets) == [None] * 20
    assert writer.available
    assert [b.recv(100) for _ in range(20)] == packets
    writer.close()


def test_aio_reader_reads_what_is_there_and_stops(dgram_pair) -> None:
    a, b = dgram_pair
    reader = AioReader(b.fileno(), max_batch=16, slot=64)
    assert reader.read(16) == []  # nothing queued: EAGAIN for every slot, no exception
    for i in range(5):
        a.send(b"pkt%d" % i)
    assert reader.read(16) == [b"pkt%d" % i for i in range(5)]
    reader.close()


def test_aio_reader_grows_within_a_call_and_keeps_order(dgram_pair) -> None:
    # The reader starts with a few reads per io_submit (an idle tunnel wastes nothing) and
    # doubles while all of them find a packet, so one call still drains a whole batch.
    a, b = dgram_pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    reader = AioReader(b.fileno(), max_batch=64, slot=64)
    assert reader.available  # the io_submit path, not the plain-read fallback
    for round_ in range(3):
        sent = [b"r%d-%d" % (round_, i) for i in range(100)]
        for data in sent:
            a.send(data)
        first = reader.read(64)
        assert first == sent[:64]  # the full batch in one call, in order
        assert reader.read(64) == sent[64:]
        assert reader.read(64) == []
    a.send(b"one")
    assert reader.read(1) == [b"one"]  # count is still the upper bound
    reader.close()


def test_aio_reader_returns_what_it_read_before_an_error(dgram_pair, monkeypatch) -> None:
    # The kernel has handed over the packets of the first rounds: they come back now, and the
    # error (here a fake one in the second round) is raised by the next call.
    a, b = dgram_pair
    reader = AioReader(b.fileno(), max_batch=64, slot=64)
    for i in range(10):
        a.send(b"p%d" % i)
    real_submit, calls = reader._submit, []

    def failing_second_round(n: int, out: list[bytes]) -> int:
        calls.append(n)
        if len(calls) == 2:
            raise OSError(5, "EIO")
        return real_submit(n, out)

    monkeypatch.setattr(reader, "_submit", failing_second_round)
    first = reader.read(64)
    assert first == [b"p%d" % i for i in range(len(first))] and first  # in order, not lost
    with pytest.raises(OSError):
        reader.read(64)
    monkeypatch.setattr(reader, "_submit", real_submit)
    rest = reader.read(64)
    assert first + rest == [b"p%d" % i for i in range(10)]
    reader.close()


def test_aio_writer_reports_per_packet_errors(dgram_pair) -> None:
    a, b = dgram_pair
    writer = AioWriter(a.fileno(), max_batch=4)
    big = b"x" * (1 << 20)  # larger than the socket buffer: refused
    results = writer.write([b"ok", big, b"ok2"])
    assert results[0] is None and results[2] is None
    assert results[1] is not None and results[1].startswith("write_")
    assert b.recv(10) == b"ok" and b.recv(10) == b"ok2"


def test_fallback_without_aio(dgram_pair) -> None:
    a, b = dgram_pair
    writer = AioWriter(a.fileno())
    writer.close()  # as if the kernel had refused io_setup
    assert not writer.available
    assert writer.write([b"one", b"two"]) == [None, None]
    reader = AioReader(b.fileno())
    reader.close()
    assert reader.read(4) == [b"one", b"two"]


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

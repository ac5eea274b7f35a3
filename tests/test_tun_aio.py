"""Linux AIO on a packet fd: one io_submit per batch, the same results as one call per packet."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from actors.io.tun_aio import AioReader, AioWriter

Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def dgram_pair() -> Iterator[Pair]:
    """A datagram socket pair: like a TUN fd, every read returns exactly one write."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_aio_writer_writes_each_packet_in_order(dgram_pair: Pair) -> None:
    a, b = dgram_pair
    writer = AioWriter(a.fileno(), max_batch=8)
    packets = [bytes([i]) * (i + 1) for i in range(20)]  # more than one batch
    assert writer.write(packets) == [None] * 20
    assert writer.available
    assert [b.recv(100) for _ in range(20)] == packets
    writer.close()


def test_aio_reader_reads_what_is_there_and_stops(dgram_pair: Pair) -> None:
    a, b = dgram_pair
    reader = AioReader(b.fileno(), max_batch=16, slot=64)
    assert reader.read(16) == []  # nothing queued: EAGAIN for every slot, no exception
    for i in range(5):
        a.send(b"pkt%d" % i)
    assert reader.read(16) == [b"pkt%d" % i for i in range(5)]
    reader.close()


def test_aio_reader_grows_within_a_call_and_keeps_order(dgram_pair: Pair) -> None:
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


def test_aio_reader_returns_what_it_read_before_an_error(
    dgram_pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel has handed over the packets of the first rounds: they come back now, and the
    # error (here a fake one in the second round) is raised by the next call.
    a, b = dgram_pair
    reader = AioReader(b.fileno(), max_batch=64, slot=64)
    for i in range(10):
        a.send(b"p%d" % i)
    real_submit, calls = reader._submit, list[int]()

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


def test_aio_writer_reports_per_packet_errors(dgram_pair: Pair) -> None:
    a, b = dgram_pair
    writer = AioWriter(a.fileno(), max_batch=4)
    big = b"x" * (1 << 20)  # larger than the socket buffer: refused
    results = writer.write([b"ok", big, b"ok2"])
    assert results[0] is None and results[2] is None
    assert results[1] is not None and results[1].startswith("write_")
    assert b.recv(10) == b"ok" and b.recv(10) == b"ok2"


def test_fallback_without_aio(dgram_pair: Pair) -> None:
    a, b = dgram_pair
    writer = AioWriter(a.fileno())
    writer.close()  # as if the kernel had refused io_setup
    assert not writer.available
    assert writer.write([b"one", b"two"]) == [None, None]
    reader = AioReader(b.fileno())
    reader.close()
    assert reader.read(4) == [b"one", b"two"]

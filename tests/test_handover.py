"""The hand-over channel between workers: real AF_UNIX socket pairs, as the parent makes them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from ippkt import icmp_echo

from actors.io.handover import (
    HANDOVER_BATCH,
    Channel,
    HandOverReceiver,
    HandOverSender,
    open_channels,
)
from actors.packet import Packet

MAX_ROUNDS = 10_000  # batches sent at most while filling a channel


@pytest.fixture
def channels() -> Iterator[list[Channel]]:
    opened = open_channels(3)
    yield opened
    for channel in opened:
        channel.inbox.close()
        channel.door.close()


def _packets(n: int, tag: int = 0) -> list[Packet]:
    return [icmp_echo("10.0.0.1", "10.0.0.2", tag, i, bytes(64)) for i in range(n)]


def test_packets_and_datagrams_reach_their_owner_in_order(channels: list[Channel]) -> None:
    sender = HandOverSender([c.door for c in channels])
    packets = _packets(3 * HANDOVER_BATCH + 5)  # several channel datagrams
    initiation = b"\x01\0\0\0" + bytes(144)
    sender.packets(2, packets[:100])
    sender.datagram(2, initiation, ("192.0.2.7", 51820))
    sender.packets(2, packets[100:])
    sender.datagram(1, initiation, ("2001:db8::7", 4500))
    assert sender.flush() == len(packets) + 2
    assert sender.flush() == 0  # nothing left over
    got = HandOverReceiver(channels[2].inbox).receive()
    assert [p.data for p in got.packets] == [p.data for p in packets]
    assert got.datagrams == [(initiation, ("192.0.2.7", 51820))]
    other = HandOverReceiver(channels[1].inbox).receive()
    assert other.packets == [] and other.datagrams == [(initiation, ("2001:db8::7", 4500))]
    assert HandOverReceiver(channels[0].inbox).receive() == ([], [])


def test_a_batch_travels_as_one_channel_datagram(channels: list[Channel]) -> None:
    sender = HandOverSender([c.door for c in channels])
    sender.packets(0, _packets(2 * HANDOVER_BATCH))
    sender.flush()
    receiver = HandOverReceiver(channels[0].inbox)
    assert len(receiver.receive(max_reads=1).packets) == HANDOVER_BATCH
    assert len(receiver.receive(max_reads=1).packets) == HANDOVER_BATCH
    assert receiver.receive(max_reads=1) == ([], [])


def test_senders_sharing_a_door_keep_their_own_order(channels: list[Channel]) -> None:
    first = HandOverSender([c.door for c in channels])
    second = HandOverSender([c.door for c in channels])
    a, b = _packets(150, tag=1), _packets(150, tag=2)
    for i in range(0, 150, 50):
        first.packets(0, a[i : i + 50])
        first.flush()
        second.packets(0, b[i : i + 50])
        second.flush()
    got = HandOverReceiver(channels[0].inbox).receive(max_reads=100).packets
    assert [p.data for p in got if p.data in {q.data for q in a}] == [p.data for p in a]
    assert [p.data for p in got if p.data in {q.data for q in b}] == [p.data for p in b]


def test_a_full_channel_drops_and_counts_without_waiting(channels: list[Channel]) -> None:
    """Nobody reads worker 1's inbox: batches go until its queue is full, then are dropped
    whole and counted; what went through arrives complete and in order."""
    sender = HandOverSender([c.door for c in channels])
    batch = _packets(HANDOVER_BATCH)
    handed = 0
    for _ in range(MAX_ROUNDS):
        sender.packets(1, batch)
        handed += len(batch)
        sender.flush()
        if sender.drops["handover_full"]:
            break
    assert sender.drops["handover_full"] == HANDOVER_BATCH
    assert sender.sent + sender.drops["handover_full"] == handed
    receiver = HandOverReceiver(channels[1].inbox)
    got: list[Packet] = []
    for _ in range(MAX_ROUNDS):
        arrived = receiver.receive().packets
        if not arrived:
            break
        got += arrived
    assert len(got) == sender.sent
    assert [p.data for p in got] == [p.data for p in batch] * (sender.sent // HANDOVER_BATCH)


def test_junk_in_an_inbox_is_counted_not_raised(channels: list[Channel]) -> None:
    door, inbox = channels[0].door, channels[0].inbox
    for junk in (b"\x01", b"\x01\0\0\0\xff\xff", b"\x09\0\0\0\0\0", b"\x01\0\0\0\x04\0abcd"):
        door.send(junk)
    sender = HandOverSender([c.door for c in channels])
    sender.datagram(0, b"ok", ("10.0.0.9", 1))
    sender.datagram(0, b"x", ("h" * 300, 1))  # no such host: refused, counted
    sender.flush()
    receiver = HandOverReceiver(inbox)
    got = receiver.receive()
    assert got == ([], [(b"ok", ("10.0.0.9", 1))])
    assert receiver.drops["handover_malformed"] == 4
    assert sender.drops["handover_unencodable"] == 1


def test_each_channel_is_a_private_pair(channels: list[Channel]) -> None:
    for channel in channels:
        assert channel.inbox.family == socket.AF_UNIX
        assert channel.inbox.getsockname() in ("", b"")  # no name: only holders can write
        assert not channel.inbox.getblocking() and not channel.door.getblocking()

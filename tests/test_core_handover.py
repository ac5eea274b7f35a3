"""The core's side of worker processes, sans-I/O with a fake clock: an interface split in two
shards (one Device and one Encryptor each, the same private key), peers owned by one shard or
the other, and a remote WireGuard peer (a plain Tunnel).

What the kernel cannot steer comes out as hand-over actions naming the owner: an initiation
that lands on the wrong shard, once its sender is known, and host packets routed to a peer of
the other shard, in order, by the interface's whole routing table."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable

import pytest
from wgsim import udp4

from actors.io.handover import HandOverReceiver, HandOverSender, open_channels
from actors.packet import Packet
from actors.wireguard import drops
from actors.wireguard.actions import (
    Action,
    Deliver,
    DeliverBatch,
    HandOverDatagram,
    HandOverPackets,
    HandshakeWanted,
    Sent,
    Transmit,
    TransmitBatch,
)
from actors.wireguard.allowedips import parse_prefix
from actors.wireguard.constants import (
    MSG_COOKIE_REPLY,
    MSG_INITIATION,
    MSG_RESPONSE,
    MSG_TRANSPORT,
)
from actors.wireguard.crypto import public_key
from actors.wireguard.device import Device, DeviceError, PeerConfig
from actors.wireguard.encryptor import Encryptor
from actors.wireguard.sharding import PeerDirectory, worker_of_index
from actors.wireguard.tunnel import Tunnel

WALL = 1.7e9  # UNIX time = fake monotonic time + this
OUR_EP = ("192.0.2.1", 51820)
REMOTE_EP = ("198.51.100.7", 40000)
OUR_TUN, REMOTE_TUN = "10.9.0.1", "10.9.0.2"
OTHER_TUN = "10.20.0.5"  # inside the other peer's broad prefix
_EXTERNAL = (Transmit, TransmitBatch, Deliver, DeliverBatch, HandOverPackets, HandOverDatagram)
MAX_STEPS = 1000  # internal actions routed per call at most


class Shard:
    """One worker's core: a Device and an Encryptor wired by direct calls, returning only
    what the shell would carry out (datagrams, packets for the host, hand-overs)."""

    def __init__(self, private: bytes, worker: int, workers: int, seed: int) -> None:
        self.device = Device(private, shard=(worker, workers), rng=random.Random(seed).randbytes)
        self.encryptor = Encryptor()

    def pump(self, actions: Iterable[Action], now: float) -> list[Action]:
        queue, out = list(actions), list[Action]()
        for _ in range(MAX_STEPS):
            if not queue:
                return out
            action = queue.pop(0)
            if isinstance(action, _EXTERNAL):
                out.append(action)
            elif isinstance(action, HandshakeWanted | Sent):
                queue += self.device.handle(action, now, now + WALL)
            else:
                queue += self.encryptor.handle(action, now)
        raise AssertionError("internal actions did not settle")

    def receive(self, data: bytes, source: tuple[str, int], now: float) -> list[Action]:
        return self.pump(self.device.receive_many([(data, source)], now, now + WALL), now)

    def send(self, packets: list[Packet], now: float, handed_over: bool = False) -> list[Action]:
        return self.pump(self.encryptor.send_batch(packets, now, handed_over=handed_over), now)


def _datagrams(actions: Iterable[Action]) -> list[bytes]:
    out: list[bytes] = []
    for a in actions:
        if isinstance(a, Transmit):
            out.append(a.data)
        elif isinstance(a, TransmitBatch):
            out += a.datagrams
    return out


class World:
    """Our interface as shards 0 and 1; the remote peer is owned by ``remote_owner``, another
    (silent) peer with a broad prefix by the other shard."""

    def __init__(self, remote_owner: int = 1) -> None:
        rng = random.Random(5)
        ours, theirs, silent = rng.randbytes(32), rng.randbytes(32), rng.randbytes(32)
        self.now = 100.0
        self.remote_key, self.silent_key = public_key(theirs), public_key(silent)
        remote = PeerConfig(
            self.remote_key, endpoint=REMOTE_EP, allowed_ips=(parse_prefix(f"{REMOTE_TUN}/32"),)
        )
        other = PeerConfig(
            self.silent_key, endpoint=("203.0.113.9", 1), allowed_ips=(parse_prefix("10.0.0.0/8"),)
        )
        self.shards = [Shard(ours, w, 2, seed=10 + w) for w in range(2)]
        self.owner = remote_owner
        self.directory = PeerDirectory(
            2,
            [
                (self.remote_key, remote_owner, remote.allowed_ips),
                (self.silent_key, 1 - remote_owner, other.allowed_ips),
            ],
        )
        for shard, config in (
            (self.shards[remote_owner], remote),
            (self.shards[1 - remote_owner], other),
        ):
            shard.pump(shard.device.add_peer(config, self.now), self.now)
        for shard in self.shards:
            shard.pump(shard.device.set_directory(self.directory), self.now)
        self.remote = Tunnel(
            theirs,
            [
                PeerConfig(
                    public_key(ours), endpoint=OUR_EP, allowed_ips=(parse_prefix(f"{OUR_TUN}/32"),)
                )
            ],
            now=self.now,
            rng=random.Random(7).randbytes,
        )


def test_an_initiation_on_the_wrong_shard_is_handed_over_and_the_handshake_completes() -> None:
    w = World(remote_owner=1)
    wrong, owner = w.shards
    out = w.remote.send(udp4(REMOTE_TUN, OUR_TUN, b"first"), w.now, w.now + WALL)
    (initiation,) = _datagrams(out)
    assert initiation[0] == MSG_INITIATION
    # the kernel's hash put it on shard 0, which learns the sender only by consuming it
    handed = wrong.receive(initiation, REMOTE_EP, w.now)
    assert handed == [HandOverDatagram(1, initiation, REMOTE_EP)]
    assert wrong.device.drops[drops.UNKNOWN_PEER] == 0
    assert wrong.device.events["initiations_handed_over"] == 1
    # the shell passes it on; the owner answers
    w.now += 0.01
    replies = owner.pump(
        owner.device.receive_handed_over([(initiation, REMOTE_EP)], w.now, w.now + WALL), w.now
    )
    (response,) = _datagrams(replies)
    transport = _datagrams(w.remote.receive(response, OUR_EP, w.now, w.now + WALL))
    assert [d[0] for d in transport] == [MSG_TRANSPORT]
    # every later datagram names the owner's index: the kernel steers it to the owner
    receiver = struct.unpack_from("<I", transport[0], 4)[0]
    assert worker_of_index(receiver, 2) == 1
    delivered = owner.receive(transport[0], REMOTE_EP, w.now)
    assert [p.packet.data[28:] for p in delivered if isinstance(p, Deliver)] == [b"first"]
    # and the owner's answer goes back on the new session
    back = _datagrams(owner.send([udp4(OUR_TUN, REMOTE_TUN, b"back")], w.now))
    got = w.remote.receive(back[0], OUR_EP, w.now, w.now + WALL)
    assert [a.packet.data[28:] for a in got if isinstance(a, Deliver)] == [b"back"]


def test_under_load_the_owner_does_not_ask_again_for_the_cookie_the_receiver_checked() -> None:
    """Each shard has its own cookie secret: the owner must trust the check the receiving shard
    made, or every retry would be answered with a cookie the other shard cannot verify."""
    w = World(remote_owner=1)
    wrong, owner = w.shards
    for shard in w.shards:
        shard.device.under_load_threshold = 0  # every handshake message counts as load
    (initiation,) = _datagrams(w.remote.send(udp4(REMOTE_TUN, OUR_TUN, b"x"), w.now, w.now + WALL))
    (cookie,) = _datagrams(wrong.receive(initiation, REMOTE_EP, w.now))
    assert cookie[0] == MSG_COOKIE_REPLY
    w.remote.receive(cookie, OUR_EP, w.now, w.now + WALL)
    w.now += 5.5  # the remote's retry, now with mac2
    (retry,) = _datagrams(w.remote.update_timers(w.now, w.now + WALL))
    (handed,) = wrong.receive(retry, REMOTE_EP, w.now)
    assert isinstance(handed, HandOverDatagram) and handed.worker == 1
    replies = owner.pump(
        owner.device.receive_handed_over([(retry, REMOTE_EP)], w.now, w.now + WALL), w.now
    )
    assert [d[0] for d in _datagrams(replies)] == [MSG_RESPONSE]  # not a cookie
    assert owner.device.drops[drops.COOKIE_SENT] == 0


def test_a_handed_over_initiation_is_never_handed_on() -> None:
    """Directories that disagree (the owner thinks shard 0 owns the peer) end in a drop, not in
    a datagram passed back and forth."""
    w = World(remote_owner=1)
    wrong = w.shards[0]
    (initiation,) = _datagrams(w.remote.send(udp4(REMOTE_TUN, OUR_TUN, b"x"), w.now, w.now + WALL))
    assert (
        wrong.pump(
            wrong.device.receive_handed_over([(initiation, REMOTE_EP)], w.now, w.now + WALL), w.now
        )
        == []
    )
    assert wrong.device.drops[drops.UNKNOWN_PEER] == 1


def test_without_a_directory_a_foreign_initiation_is_an_unknown_peer() -> None:
    w = World(remote_owner=1)
    wrong = w.shards[0]
    wrong.pump(wrong.device.set_directory(None), w.now)
    (initiation,) = _datagrams(w.remote.send(udp4(REMOTE_TUN, OUR_TUN, b"x"), w.now, w.now + WALL))
    assert wrong.receive(initiation, REMOTE_EP, w.now) == []
    assert wrong.device.drops[drops.UNKNOWN_PEER] == 1


def test_host_packets_for_the_other_shards_peers_are_handed_over_in_order() -> None:
    """Shard 0 reads a mix: packets for the remote peer (shard 1's, a /32) and for the silent
    peer (its own, 10.0.0.0/8, which also covers the remote's address). Longest prefix wins
    across shards, and the remote's packets leave as hand-overs, in the order read."""
    w = World(remote_owner=1)
    reader = w.shards[0]
    packets = []
    for i in range(12):
        dst = REMOTE_TUN if i % 3 else OTHER_TUN
        packets.append(udp4(OUR_TUN, dst, f"p{i}".encode()))
    out = reader.send(packets, w.now)
    handed = [a for a in out if isinstance(a, HandOverPackets)]
    assert {a.worker for a in handed} == {1}
    assert [p for a in handed for p in a.packets] == [
        p for p in packets if p.data[16:20] == packets[1].data[16:20]
    ]
    assert len(handed) == 4  # one per run between the silent peer's packets
    # the silent peer's packets stay here: staged for its handshake
    assert reader.encryptor.staged_count(w.silent_key) == 4
    assert reader.encryptor.drops[drops.NO_ROUTE] == 0
    # the owner takes them and asks for a handshake with its peer
    owner = w.shards[1]
    out = owner.send([p for a in handed for p in a.packets], w.now, handed_over=True)
    assert not any(isinstance(a, HandOverPackets) for a in out)
    assert owner.encryptor.staged_count(w.remote_key) == 8
    initiations = [d for d in _datagrams(out) if d[0] == MSG_INITIATION]
    assert len(initiations) == 1


def test_handed_over_packets_that_are_not_ours_are_dropped_not_handed_back() -> None:
    w = World(remote_owner=1)
    packets = [udp4(OUR_TUN, REMOTE_TUN, b"a"), udp4(OUR_TUN, REMOTE_TUN, b"b")]
    assert w.shards[0].send(packets, w.now, handed_over=True) == []
    assert w.shards[0].encryptor.drops[drops.NOT_OURS] == 2


def test_one_worker_without_a_directory_routes_as_before() -> None:
    w = World(remote_owner=1)
    reader = w.shards[0]
    reader.pump(reader.device.set_directory(None), w.now)
    out = reader.send([udp4(OUR_TUN, REMOTE_TUN, b"a")], w.now)
    assert not any(isinstance(a, HandOverPackets) for a in out)
    assert reader.encryptor.staged_count(w.silent_key) == 1  # its own table: the /8


def test_a_directory_is_a_value_checked_against_the_shard() -> None:
    key = bytes(range(32))
    directory = PeerDirectory(3, [(key, 2, [parse_prefix("10.0.0.0/8")])])
    assert directory.owner(key) == 2 and directory.route(bytes([10, 1, 2, 3])) == key
    with pytest.raises(TypeError):
        directory.owners[key] = 0  # type: ignore[index]
    with pytest.raises(ValueError):
        PeerDirectory(2, [(key, 2, [])])
    device = Device(bytes(range(1, 33)), shard=(0, 2))
    with pytest.raises(DeviceError):
        device.set_directory(directory)


def test_the_hand_over_actions_travel_through_a_real_channel() -> None:
    """The pieces fit: what the core asks to hand over goes through the workers' channel
    (actors.io.handover) and the owner's core takes it as it arrives."""
    w = World(remote_owner=1)
    wrong, owner = w.shards
    channels = open_channels(2)
    try:
        sender = HandOverSender([c.door for c in channels])
        (initiation,) = _datagrams(
            w.remote.send(udp4(REMOTE_TUN, OUR_TUN, b"first"), w.now, w.now + WALL)
        )
        host = [udp4(OUR_TUN, REMOTE_TUN, f"h{i}".encode()) for i in range(5)]
        for action in wrong.receive(initiation, REMOTE_EP, w.now) + wrong.send(host, w.now):
            if isinstance(action, HandOverDatagram):
                sender.datagram(action.worker, action.data, action.source)
            elif isinstance(action, HandOverPackets):
                sender.packets(action.worker, action.packets)
        assert sender.flush() == 1 + len(host)
        arrived = HandOverReceiver(channels[1].inbox).receive()
        assert arrived.datagrams == [(initiation, REMOTE_EP)]
        assert [p.data for p in arrived.packets] == [p.data for p in host]
        out = owner.pump(
            owner.device.receive_handed_over(arrived.datagrams, w.now, w.now + WALL), w.now
        )
        out += owner.send(arrived.packets, w.now, handed_over=True)
        (response,) = [d for d in _datagrams(out) if d[0] == MSG_RESPONSE]
        # the remote's first packet confirms the session: the owner's staged packets go out
        (confirm,) = _datagrams(w.remote.receive(response, OUR_EP, w.now, w.now + WALL))
        out = owner.receive(confirm, REMOTE_EP, w.now)
        assert [a.packet.data[28:] for a in out if isinstance(a, Deliver)] == [b"first"]
        delivered = [
            a.packet.data[28:]
            for d in _datagrams(out)
            for a in w.remote.receive(d, OUR_EP, w.now, w.now + WALL)
            if isinstance(a, Deliver)
        ]
        assert delivered == [f"h{i}".encode() for i in range(5)]
    finally:
        for channel in channels:
            channel.inbox.close()
            channel.door.close()


def test_a_restarted_encrypt_side_gets_the_directory_back() -> None:
    w = World(remote_owner=1)
    reader = w.shards[0]
    reader.encryptor = Encryptor()  # as after the encrypt stage restarted
    reader.pump(reader.device.sync_actions(), w.now)
    out = reader.send([udp4(OUR_TUN, REMOTE_TUN, b"a")], w.now)
    assert [a.worker for a in out if isinstance(a, HandOverPackets)] == [1]

"""The transport fast path: a batch gives exactly what the same datagrams one at a time give."""

from __future__ import annotations

import json
import random
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_conformance import big_udp4, big_udp6
from wgsim import A_EP, A_TUN4, A_TUN6, B_TUN4, B_TUN6, Node, Sim, udp4, udp6

from actors import Packet
from actors.lab.corebench import measure
from actors.packet import PacketError
from actors.wireguard import drops
from actors.wireguard.actions import (
    Deliver,
    DeliverBatch,
    HandshakeWanted,
    PeerEndpoint,
    SendKeysUpdate,
    Sent,
    Transmit,
    TransmitBatch,
)
from actors.wireguard.constants import REJECT_AFTER_MESSAGES, REKEY_ON_RECEIVE_AGE
from actors.wireguard.oversize import TOO_BIG_REPLIES_BURST
from actors.wireguard.replay import WINDOW_SIZE, ReplayWindow
from actors.wireguard.transport import expand, seal

_HEADER = struct.Struct("<IIQ")
ROOT = Path(__file__).resolve().parent.parent
BENCH_TIMEOUT = 120.0


def _sealed_from_a(sim: Sim, packets: list[Packet]) -> list[bytes]:
    """What A sends for ``packets``, kept off the wire."""
    for p in packets:
        sim.send(sim.a, p)
    out = [data for _, data, _ in sim.in_flight]
    sim.in_flight.clear()
    return out


def _hostile_mix(sim: Sim) -> list[tuple[bytes, tuple[str, int]]]:
    """Good packets with every kind of bad one between them, in one batch."""
    good = _sealed_from_a(sim, [udp4(A_TUN4, B_TUN4, bytes([i]) * (i * 7)) for i in range(6)])
    six = _sealed_from_a(sim, [udp6(A_TUN6, B_TUN6, b"v6")])[0]
    spoofed = _sealed_from_a(sim, [udp4("10.9.0.99", B_TUN4, b"spoof")])[0]
    # What A's session can seal but no Packet would hold: a bad inner packet, a keepalive.
    peer = sim.a.tunnel.encryptor._peers[sim.b.public]
    assert peer.aead is not None and peer.keys is not None
    bad_inner, keepalive = seal(
        peer.aead, peer.keys.remote_index, peer.counter, [b"\x45" + bytes(30), b""]
    )
    peer.counter += 2
    tampered = good[2][:-1] + bytes([good[2][-1] ^ 1])
    unknown = _HEADER.pack(4, 0xDEADBEEF, 7) + bytes(16)
    short = _HEADER.pack(4, 1, 1)
    reserved = b"\x04\x01" + good[0][2:]
    roam = ("198.51.100.4", 999)
    return [
        (good[1], A_EP),
        (good[0], A_EP),  # reordered inside the window: accepted
        (good[1], A_EP),  # duplicate in the same batch: replay
        (tampered, A_EP),  # bad tag, does not roam
        (unknown, A_EP),
        (good[3], roam),  # roams
        (short, A_EP),
        (good[4], A_EP),  # roams back
        (reserved, A_EP),
        (six, A_EP),
        (good[2], A_EP),  # the genuine one after its forgery
        (good[5], A_EP),
        (spoofed, A_EP),
        (bad_inner, A_EP),
        (keepalive, A_EP),
        (good[5], A_EP),
    ]


def _state(sim: Sim) -> tuple:
    device = sim.b.tunnel.device
    peer = sim.a.public
    stats = device.peer_stats(peer)
    return (
        [bytes(p) for p in sim.b.delivered],
        dict(device.drops),
        dict(device.events),
        stats.rx_bytes,
        device.peer_endpoint(peer),
        sim.b.tunnel.next_deadline(),
    )


def test_batch_equals_one_at_a_time() -> None:
    one, many = Sim(seed=7), Sim(seed=7)
    for sim in (one, many):
        sim.handshake()
    mix_one, mix_many = _hostile_mix(one), _hostile_mix(many)
    assert mix_one == mix_many  # same seeds, same bytes
    for data, source in mix_one:
        one.inject(one.b, data, source)
    many._collect(many.b, many.b.tunnel.receive_many(mix_many, many.now, many.wall()))
    assert _state(one) == _state(many)
    delivered, counted, *_ = _state(many)
    assert len(delivered) == 1 + 6 + 1  # the handshake's packet, six v4, one v6
    assert counted[drops.REPLAY] == 2
    assert counted[drops.BAD_TAG] == 1
    assert counted[drops.UNKNOWN_INDEX] == 1
    assert counted[drops.MALFORMED] == 2
    assert counted[drops.SOURCE_NOT_ALLOWED] == 1
    assert counted[drops.BAD_INNER_PACKET] == 1
    assert many.b.tunnel.device.events["keepalives_received"] == 1


def test_run_leaves_as_one_deliver_batch() -> None:
    sim = Sim()
    sim.handshake()
    sealed = _sealed_from_a(sim, [udp4(A_TUN4, B_TUN4, bytes([i])) for i in range(10)])
    device = sim.b.tunnel.device
    actions = device.receive_batch([(d, A_EP) for d in sealed], sim.now, sim.wall())
    batches = [a for a in actions if type(a) is DeliverBatch]
    assert len(batches) == 1 and batches[0].peer == sim.a.public
    assert [bytes(p)[28:] for p in batches[0].packets] == [bytes([i]) for i in range(10)]
    assert not any(type(a) is Deliver for a in actions)
    assert [type(a) for a in expand(actions)].count(Deliver) == 10


def test_send_batch_runs_per_peer_in_order() -> None:
    sim = Sim()
    sim.handshake()
    enc = sim.a.tunnel.encryptor
    packets = [udp4(A_TUN4, B_TUN4, bytes([i])) for i in range(5)]
    packets.insert(2, udp4(A_TUN4, "10.200.0.1"))  # no route: splits nothing, counted
    actions = enc.send_batch(packets, sim.now)
    runs = [a for a in actions if type(a) is TransmitBatch]
    assert len(runs) == 1 and len(runs[0].datagrams) == 5
    counters = [_HEADER.unpack_from(d)[2] for d in runs[0].datagrams]
    assert counters == list(range(counters[0], counters[0] + 5))
    assert enc.drops[drops.NO_ROUTE] == 1
    sent = [a for a in actions if type(a) is Sent]
    assert len(sent) == 1 and sent[0].data == 5
    assert sent[0].data_bytes == sum(map(len, runs[0].datagrams))
    # the per-packet form of the same call
    more = enc.send_many(packets[:2], sim.now)
    assert [type(a) for a in more].count(Transmit) == 2
    # and B opens all of them, in one batch
    got = sim.b.tunnel.device.receive_batch(
        [(d, A_EP) for d in runs[0].datagrams], sim.now, sim.wall()
    )
    assert sum(len(a.packets) for a in got if type(a) is DeliverBatch) == 5


def test_counter_limit_inside_a_run_stages_the_rest() -> None:
    sim = Sim()
    sim.handshake()
    enc = sim.a.tunnel.encryptor
    enc._peers[sim.b.public].counter = REJECT_AFTER_MESSAGES - 2
    actions = enc.send_batch([udp4(A_TUN4, B_TUN4, bytes([i])) for i in range(5)], sim.now)
    runs = [a for a in actions if type(a) is TransmitBatch]
    assert sum(len(r.datagrams) for r in runs) == 2
    assert enc.staged_count(sim.b.public) == 3
    assert HandshakeWanted(sim.b.public) in actions


def test_core_bench_runs() -> None:
    cost = measure(rounds=1, batches=2)
    assert cost.packets == 64
    assert cost.encrypt_us > 0 and cost.decrypt_us > 0
    assert cost.aead_encrypt_us > 0 and cost.aead_decrypt_us > 0


@pytest.mark.parametrize(
    ("before", "first", "last"),
    [
        ([], 1, 1),
        ([], 1, 200),
        ([0, 5], 6, 63),
        ([70], 71, 64 * 64 * 3 + 5),  # more than a ring lap
        ([10, 9000], 9001, 9001 + 64 * 63),
        ([63], 64, 127),
        ([1, 3, 100], 4000, 4100),
    ],
)
def test_update_run_equals_updates_one_by_one(before: list[int], first: int, last: int) -> None:
    one, run = ReplayWindow(), ReplayWindow()
    for c in before:
        one.update(c)
        run.update(c)
    for c in range(first, last + 1):
        assert one.update(c)
    run.update_run(first, last)
    assert run.newest == one.newest == last
    for c in range(max(0, last - WINDOW_SIZE - 200), last + 200):
        assert run.check(c) == one.check(c), c


def test_update_run_refuses_old_counters() -> None:
    w = ReplayWindow()
    w.update(10)
    with pytest.raises(ValueError):
        w.update_run(10, 12)
    with pytest.raises(ValueError):
        w.update_run(12, 11)


def test_reordered_and_lost_counters_in_one_batch() -> None:
    """Gaps, reordering and duplicates inside a batch: every packet once, replays counted."""
    sim = Sim()
    sim.handshake()
    sealed = _sealed_from_a(sim, [udp4(A_TUN4, B_TUN4, bytes([i])) for i in range(12)])
    order = [0, 1, 3, 4, 2, 2, 7, 5, 6, 6, 11, 10, 0, 8, 9]
    device = sim.b.tunnel.device
    actions = device.receive_batch([(sealed[i], A_EP) for i in order], sim.now, sim.wall())
    got = [bytes(p)[28:] for a in actions if type(a) is DeliverBatch for p in a.packets]
    assert got == [bytes([i]) for i in [0, 1, 3, 4, 2, 7, 5, 6, 11, 10, 8, 9]]
    assert device.drops[drops.REPLAY] == 3
    again = device.receive_batch([(d, A_EP) for d in sealed], sim.now, sim.wall())
    assert not any(type(a) is DeliverBatch for a in again)
    assert device.drops[drops.REPLAY] == 3 + 12


def _from_padded_or_none(buf: bytes) -> Packet | None:
    try:
        return Packet.from_padded(buf)
    except PacketError:
        return None


def _headers() -> st.SearchStrategy[bytes]:
    """Buffers that start like IPv4/IPv6 headers, with lengths around the buffer's own."""
    v4 = st.builds(
        lambda ihl, extra, pad, total: (
            bytes([0x40 | ihl, 0])
            + total.to_bytes(2, "big")
            + bytes(16)
            + bytes(extra)
            + bytes(pad)
        ),
        st.integers(0, 15),
        st.integers(0, 1300),
        st.integers(0, 20),
        st.integers(0, 1400),
    )
    v6 = st.builds(
        lambda payload, body, pad: (
            bytes([0x60, 0, 0, 0])
            + payload.to_bytes(2, "big")
            + bytes(34)
            + bytes(body)
            + bytes(pad)
        ),
        st.integers(0, 1300),
        st.integers(0, 1300),
        st.integers(0, 20),
    )
    return st.one_of(v4, v6, st.binary(max_size=64))


@settings(max_examples=400)
@given(_headers())
def test_unpad_accepts_exactly_what_from_padded_accepts(buf: bytes) -> None:
    fast, slow = Packet.unpad(buf), _from_padded_or_none(buf)
    assert (fast is None) == (slow is None)
    if fast is not None:
        assert fast.data == slow.data and type(fast) is Packet


def test_unpad_on_real_packets() -> None:
    for p in (udp4(A_TUN4, B_TUN4, b"x" * 13), udp6(A_TUN6, B_TUN6, b"y" * 1000)):
        padded = p.data + bytes(-len(p.data) % 16)
        got = Packet.unpad(padded)
        assert got == p and got is not None and got.data == p.data


def _random_traffic(sim: Sim, rng: random.Random) -> list[tuple[bytes, tuple[str, int]]]:
    """A's traffic to B with the faults a network and an attacker add, in a random order."""
    inner = []
    for n in range(rng.randint(20, 90)):
        kind = rng.random()
        if kind < 0.1:
            inner.append(udp6(A_TUN6, B_TUN6, bytes(rng.randint(0, 60))))
        elif kind < 0.13:
            inner.append(udp4("10.9.0.99", B_TUN4, b"spoof"))
        else:
            inner.append(udp4(A_TUN4, B_TUN4, bytes([n]) * rng.randint(0, 1200)))
    sealed = _sealed_from_a(sim, inner)
    peer = sim.a.tunnel.encryptor._peers[sim.b.public]
    assert peer.aead is not None and peer.keys is not None
    extra = seal(peer.aead, peer.keys.remote_index, peer.counter, [b"", b"\x45" + bytes(40)])
    peer.counter += 2
    sealed += extra
    out = []
    for data in sealed:
        r = rng.random()
        source = ("203.0.113.5", 7) if r < 0.03 else A_EP
        if r < 0.06:
            out.append((data[:-1] + bytes([data[-1] ^ 1]), source))  # forged copy first
        out.append((data, source))
        if rng.random() < 0.04:
            out.append((data, A_EP))  # duplicate
    for _ in range(rng.randint(0, 4)):  # some reordering
        a, b = rng.randrange(len(out)), rng.randrange(len(out))
        out[a], out[b] = out[b], out[a]
    return out


@pytest.mark.parametrize("seed", range(25))
def test_random_batches_equal_one_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    one, many = Sim(seed=seed), Sim(seed=seed)
    for sim in (one, many):
        sim.handshake()
    traffic = _random_traffic(one, random.Random(seed))
    assert traffic == _random_traffic(many, random.Random(seed))
    for data, source in traffic:
        one.inject(one.b, data, source)
    i = 0
    while i < len(traffic):
        size = rng.randint(1, 64)
        many._collect(
            many.b, many.b.tunnel.receive_many(traffic[i : i + size], many.now, many.wall())
        )
        i += size
    assert _state(one) == _state(many)
    assert one.b.sent == many.b.sent


def test_gap_forgery_and_keepalive_in_one_batch() -> None:
    one, many = Sim(seed=3), Sim(seed=3)
    batches = []
    for sim in (one, many):
        sim.handshake()
        sealed = _sealed_from_a(sim, [udp4(A_TUN4, B_TUN4, bytes([i])) for i in range(40)])
        peer = sim.a.tunnel.encryptor._peers[sim.b.public]
        assert peer.aead is not None and peer.keys is not None
        sealed += seal(peer.aead, peer.keys.remote_index, peer.counter, [b""])
        del sealed[7]  # lost on the way: a gap
        sealed[20] = sealed[20][:-1] + bytes([sealed[20][-1] ^ 1])  # forged
        batches.append([(d, A_EP) for d in sealed])
    assert batches[0] == batches[1]
    for data, source in batches[0]:
        one.inject(one.b, data, source)
    many._collect(many.b, many.b.tunnel.receive_many(batches[1], many.now, many.wall()))
    assert _state(one) == _state(many)
    assert len(many.b.delivered) == 1 + 40 - 2
    assert many.b.tunnel.device.drops[drops.BAD_TAG] == 1
    assert many.b.tunnel.device.events["keepalives_received"] == 1


def test_bench_core_only_reports_both_directions(tmp_path: Path) -> None:
    """`scripts/bench --core-only` needs no root: it prints the table and writes the JSON."""
    out = tmp_path / "core.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--core-only", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^encrypt\s+[\d.]+\s+[\d.]+\s+[\d.]+x$", res.stdout, re.M), res.stdout
    assert re.search(r"^decrypt\s+[\d.]+\s+[\d.]+\s+[\d.]+x$", res.stdout, re.M), res.stdout
    core = json.loads(out.read_text())["core"]
    assert core["packets"] == 2048 and core["size"] == 1280
    for key in ("encrypt_us", "decrypt_us", "aead_encrypt_us", "aead_decrypt_us"):
        assert core[key] > 0, core


def test_tunnel_batch_methods_keep_runs_whole() -> None:
    sim = Sim()
    sim.handshake()
    packets = [udp4(A_TUN4, B_TUN4, bytes([i])) for i in range(6)]
    sent = sim.a.tunnel.send_batch(packets, sim.now, sim.wall())
    assert [type(a) for a in sent] == [TransmitBatch]
    got = sim.b.tunnel.receive_batch([(d, A_EP) for d in sent[0].datagrams], sim.now, sim.wall())
    assert [type(a) for a in got] == [DeliverBatch]
    assert [bytes(p)[28:] for p in got[0].packets] == [bytes([i]) for i in range(6)]
    # the per-packet forms are unchanged
    assert {type(a) for a in sim.a.tunnel.send_many(packets, sim.now, sim.wall())} == {Transmit}


# ---------------------------------------------------------------------- i12's receive path
#
# Device.receive is i12's one-at-a-time receive_transport; Device.receive_batch is the fast
# path. Below, twin simulations get the same datagrams: one device takes them one at a time,
# the other as one batch. The actions (expanded, in order, peers included) and the device's
# whole state must be the same: timers, keep-key-fresh, session confirmation, roaming,
# oversize inner packets (fragments, ICMP too-big under its rate limit) and wall time.

WALL = 1.8e9  # a UNIX time unlike the monotonic clock, to catch a mix-up of the two


def _capture_from_a(sim: Sim) -> list[bytes]:
    """From now on A's transport messages to B are kept off the wire; the list fills up."""
    kept: list[bytes] = []

    def link(sender: Node, data: bytes) -> bytes | None:
        if sender is sim.a and data[0] == 4:
            kept.append(data)
            return None
        return data

    sim.link = link
    return kept


def _device_state(sim: Sim) -> tuple:
    device = sim.b.tunnel.device
    peer = device.peer_map[sim.a.public]
    return (
        dict(device.drops),
        dict(device.events),
        peer.endpoint,
        peer.stats,
        peer.timers,
        [s.local_index if s is not None else None for s in peer.sessions()],
        [s.replay.newest if s is not None else None for s in peer.sessions()],
        peer.last_sent_handshake,
        len(device.indices),
        device.next_deadline(),
    )


def _one_by_one_and_batch(
    one: Sim, many: Sim, batch: list[tuple[bytes, tuple[str, int]]], wall: float
) -> list:
    """Feed ``batch`` to B of ``one`` datagram by datagram and to B of ``many`` at once;
    assert both give the same actions and state, and return the actions."""
    slow = []
    for data, source in batch:
        slow += one.b.tunnel.device.receive(data, source, one.now, wall)
    fast = many.b.tunnel.device.receive_batch(batch, many.now, wall)
    expanded = expand(fast)
    assert expanded == slow
    peers = [(type(a), getattr(getattr(a, "packet", None), "peer", None)) for a in slow]
    assert [(type(a), getattr(getattr(a, "packet", None), "peer", None)) for a in expanded] == peers
    assert _device_state(one) == _device_state(many)
    return slow


def _twins(seed: int, **kw: Any) -> tuple[Sim, Sim]:
    return Sim(seed=seed, **kw), Sim(seed=seed, **kw)


def test_oversize_roaming_and_keepalives_in_one_batch_match_receive_transport() -> None:
    one, many = _twins(11)
    batches = []
    for sim in (one, many):
        sim.a.tunnel.encryptor.mtu = 1420  # A plays a peer at wg-quick's default MTU
        sim.handshake()
        kept = _capture_from_a(sim)
        inner = [udp4(A_TUN4, B_TUN4, bytes([i]) * 50) for i in range(4)]
        inner.insert(1, big_udp4(1400, df=False))  # fragmented, between delivered packets
        inner.insert(3, big_udp4(1400, df=True))  # dropped, ICMP too-big back
        inner += [big_udp6(1300)] * (TOO_BIG_REPLIES_BURST + 2)  # past the reply limit
        inner += [udp6(A_TUN6, B_TUN6, b"after")]
        for p in inner:
            sim.send(sim.a, p)
        sim.flush()
        peer = sim.a.tunnel.encryptor._peers[sim.b.public]
        assert peer.aead is not None and peer.keys is not None
        kept += seal(peer.aead, peer.keys.remote_index, peer.counter, [b"", b"\x45" + bytes(30)])
        peer.counter += 2
        roam = ("198.51.100.9", 4444)
        sources = [A_EP, A_EP, roam, roam, A_EP] + [A_EP] * len(kept)
        batches.append(list(zip(kept, sources, strict=False)))
    assert batches[0] == batches[1]
    actions = _one_by_one_and_batch(one, many, batches[1], WALL)
    device = many.b.tunnel.device
    assert device.events["inner_packets_fragmented"] == 1
    assert device.events["too_big_replies"] == TOO_BIG_REPLIES_BURST
    assert device.drops[drops.INNER_TOO_BIG] == 1 + TOO_BIG_REPLIES_BURST + 2
    assert device.events["keepalives_received"] == 1
    assert device.drops[drops.BAD_INNER_PACKET] == 1
    assert sum(type(a) is PeerEndpoint for a in actions) == 2  # there and back
    assert all(a.packet.peer == many.a.public for a in actions if type(a) is Deliver)


def test_first_packet_on_the_responders_session_confirms_it_in_both_paths() -> None:
    """B answered A's initiation: A's first data (one batch with more) makes B's session
    current, with the wall-clock handshake time, and B's staged packets leave."""
    one, many = _twins(12)
    batches = []
    for sim in (one, many):
        kept = _capture_from_a(sim)
        for i in range(5):
            sim.send(sim.a, udp4(A_TUN4, B_TUN4, bytes([i])))
        sim.flush()
        peer = sim.b.tunnel.device.peer_map[sim.a.public]
        assert peer.next is not None and peer.current is None
        # A moved as it sent its first packet: roaming comes before the confirmation
        batches.append([(kept[0], ("198.51.100.7", 1))] + [(d, A_EP) for d in kept[1:]])
    assert len(batches[0]) == 5 and batches[0] == batches[1]
    actions = _one_by_one_and_batch(one, many, batches[1], WALL)
    assert [type(a) for a in actions][:2] == [PeerEndpoint, SendKeysUpdate]
    assert [type(a) for a in actions].count(SendKeysUpdate) == 1
    peer = many.b.tunnel.device.peer_map[many.a.public]
    assert peer.current is not None and peer.next is None
    assert peer.stats.last_handshake_ns == int(WALL * 1e9)


def test_ageing_initiator_session_renews_once_per_batch_in_both_paths() -> None:
    """B started the session: past REKEY_ON_RECEIVE_AGE, the first packet B receives starts
    one last-minute handshake; the rest of the batch does not start another."""
    one, many = _twins(13)
    batches = []
    for sim in (one, many):
        sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"B starts"))
        sim.flush()
        sim.now += REKEY_ON_RECEIVE_AGE + 1  # no timer runs: only the packets below act
        kept = _capture_from_a(sim)
        for i in range(6):
            sim.send(sim.a, udp4(A_TUN4, B_TUN4, bytes([i])))
        sim.flush()
        batches.append([(d, A_EP) for d in kept])
    assert len(batches[0]) == 6 and batches[0] == batches[1]
    actions = _one_by_one_and_batch(one, many, batches[1], WALL)
    initiations = [a for a in actions if type(a) is Transmit and a.data[0] == 1]
    assert len(initiations) == 1
    assert many.b.tunnel.device.peer_map[many.a.public].timers.sent_last_minute_handshake


@pytest.mark.parametrize("seed", range(10))
def test_random_traffic_matches_receive_transport(seed: int) -> None:
    one, many = _twins(seed, keepalive_b=25)
    for sim in (one, many):
        sim.handshake()
    traffic = _random_traffic(one, random.Random(seed))
    assert traffic == _random_traffic(many, random.Random(seed))
    rng = random.Random(seed)
    i = 0
    while i < len(traffic):
        size = rng.randint(1, 64)
        _one_by_one_and_batch(one, many, traffic[i : i + size], WALL + i)
        i += size


def test_unpad_sets_the_peer() -> None:
    key = bytes(range(32))
    p = udp4(A_TUN4, B_TUN4, b"z" * 5)
    got = Packet.unpad(p.data + bytes(-len(p.data) % 16), key)
    assert got is not None and got.peer == key and got == Packet.from_padded(p.data, key)
    bare = Packet.unpad(p.data)
    assert bare is not None and bare.peer is None

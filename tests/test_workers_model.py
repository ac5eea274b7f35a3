"""Issue 24: how the parent shares a `wg set` out among workers (actors.workers.model), and the
other pure parts of the pool: the control channel's framing, the summed counters.

The model's contract is that the workers together equal one device: every sequence of
requests, applied once to a single Device and, shared out, to N Devices (each applying its
share), must leave the same peers, in the same order, with the same allowed IPs (in the same
order), keys, endpoints and keepalives. Checked on random request sequences over a small key
and prefix space, where prefixes move between peers of different workers all the time.
"""

from __future__ import annotations

import ipaddress
import os
import random
import threading

import pytest

from actors.uapi import PeerChange, SetRequest
from actors.wireguard.apply import apply_set
from actors.wireguard.crypto import public_key
from actors.wireguard.device import Device
from actors.wireguard.peer import DeviceError, PeerConfig, PeerState
from actors.workers.channel import PART_SIZE, Channel, ChannelClosed, channel_pair
from actors.workers.model import InterfaceModel
from actors.workers.totals import sum_stages

NOW = 100.0
ROUNDS = 300  # random requests per sequence
SEQUENCES = 12
KEYS = [bytes([i]) * 32 for i in range(1, 9)]
PREFIXES = [
    ipaddress.ip_network(text)
    for text in (
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3/32",
        "192.168.0.0/24",
        "fd00::/64",
        "fd00::1/128",
        "0.0.0.0/0",
    )
]


ADDRESSES = [
    ipaddress.ip_address(text).packed
    for text in ("10.1.2.3", "10.1.2.4", "10.1.9.9", "10.9.9.9", "192.168.0.5", "8.8.8.8")
] + [ipaddress.ip_address(text).packed for text in ("fd00::1", "fd00::2", "fe80::1")]


def view(states: list[PeerState]) -> list[tuple[object, ...]]:
    return [
        (s.public_key, s.preshared_key, s.endpoint, s.persistent_keepalive, s.allowed_ips)
        for s in states
    ]


def random_change(rng: random.Random) -> PeerChange:
    key = rng.choice(KEYS)
    if rng.random() < 0.12:
        return PeerChange(key, remove=True)
    return PeerChange(
        key,
        update_only=rng.random() < 0.15,
        preshared_key=rng.choice([None, None, bytes(32), bytes([7]) * 32]),
        endpoint=rng.choice([None, None, ("192.0.2.1", rng.randrange(1, 65536))]),
        persistent_keepalive=rng.choice([None, None, 0, 25]),
        replace_allowed_ips=rng.random() < 0.3,
        allowed_ips=tuple(rng.sample(PREFIXES, rng.randrange(0, 3))),
    )


def random_request(rng: random.Random, own: bytes) -> SetRequest:
    key = None
    if rng.random() < 0.05:
        # sometimes a key whose public half is one of the peers' (that peer must go)
        key = own if rng.random() < 0.5 else os.urandom(32)
    return SetRequest(
        private_key=key,
        replace_peers=rng.random() < 0.03,
        peers=tuple(random_change(rng) for _ in range(rng.randrange(1, 5))),
    )


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("seed", range(SEQUENCES))
def test_workers_together_equal_one_device(workers: int, seed: int) -> None:
    rng = random.Random(seed)
    private = os.urandom(32)
    initial = tuple(PeerConfig(k, allowed_ips=tuple(rng.sample(PREFIXES, 2))) for k in KEYS[:5])
    single = Device(private)
    for peer in initial:
        single.add_peer(peer, NOW)
    model = InterfaceModel(workers, private, initial)
    devices = [Device(private, shard=(w, workers)) for w in range(workers)]
    for w, device in enumerate(devices):
        for peer in model.worker_peers(w):
            device.add_peer(peer, NOW)
    assert view(single.peer_states()) == view(_joined(model, devices))
    # a key one of the peers could have: the device drops that peer when it is set
    own_private = os.urandom(32)
    for _ in range(ROUNDS):
        request = random_request(rng, own_private)
        try:
            apply_set(single, request, NOW)
        except DeviceError:
            continue
        shares = model.split(request)
        for device, share in zip(devices, shares.requests, strict=True):
            if share is not None:
                apply_set(device, share, NOW)
        assert view(single.peer_states()) == view(_joined(model, devices)), request
        assert [p.public_key for p in single.peer_states()] == list(model.peers)
        assert {k: p.allowed_ips for k, p in model.peers.items()} == {
            s.public_key: s.allowed_ips for s in single.peer_states()
        }
        assert sum(model.loads()) == len(single.peer_map)
    # the one device and the model agree on who routes where, and no worker's device lets
    # one of its peers send from an address the interface gives to another worker's peer
    directory = model.directory()
    for device in devices:
        device.set_directory(directory)
    for address in ADDRESSES:
        expected = single.allowed_ips.lookup_bytes(address)
        assert directory.route(address) == expected
        for device in devices:
            assert device.route_of(address) in (None, expected), address


def _joined(model: InterfaceModel, devices: list[Device]) -> list[PeerState]:
    order = model.order()
    states = [s for d in devices for s in d.peer_states()]
    return sorted(states, key=lambda s: order[s.public_key])


def test_new_peers_go_to_the_worker_with_the_fewest() -> None:
    model = InterfaceModel(3, os.urandom(32), [PeerConfig(k) for k in KEYS[:4]])
    assert model.loads() == (2, 1, 1)
    shares = model.split(SetRequest(peers=(PeerChange(KEYS[0], remove=True),)))
    assert shares.requests[0] is not None and shares.requests[1:] == (None, None)
    assert model.loads() == (1, 1, 1)
    model.split(SetRequest(peers=(PeerChange(KEYS[5]), PeerChange(KEYS[6]))))
    assert model.loads() == (2, 2, 1) and model.owners[KEYS[5]] == 0 and model.owners[KEYS[6]] == 1


def test_a_request_a_device_would_refuse_changes_nothing() -> None:
    from actors.wireguard.constants import MAX_PEERS

    model = InterfaceModel(2, os.urandom(32), [PeerConfig(k) for k in KEYS[:2]])
    many = tuple(PeerChange(i.to_bytes(32, "big")) for i in range(1, MAX_PEERS + 1))
    with pytest.raises(DeviceError, match="at most"):
        model.split(SetRequest(peers=many))
    assert list(model.peers) == KEYS[:2] and model.loads() == (1, 1)


def test_a_key_change_goes_to_every_worker_and_drops_the_peer_with_that_public_key() -> None:
    private = os.urandom(32)
    mine = public_key(private)
    model = InterfaceModel(2, os.urandom(32), [PeerConfig(mine), PeerConfig(KEYS[0])])
    shares = model.split(SetRequest(private_key=private))
    assert all(r is not None and r.private_key == private for r in shares.requests)
    assert list(model.peers) == [KEYS[0]] and shares.directory_changed


def test_an_endpoint_change_leaves_the_directory_alone() -> None:
    model = InterfaceModel(2, None, [PeerConfig(KEYS[0], allowed_ips=(PREFIXES[0],))])
    shares = model.split(SetRequest(peers=(PeerChange(KEYS[0], endpoint=("192.0.2.9", 9)),)))
    assert not shares.directory_changed
    assert model.peers[KEYS[0]].endpoint == ("192.0.2.9", 9)


def test_the_channel_carries_large_values_and_descriptors_in_order() -> None:
    left, right = channel_pair()
    a, b = Channel(left), Channel(right)
    big = os.urandom(PART_SIZE * 5 + 17)
    r, w = os.pipe()
    try:
        # larger than the socket's buffer: the sender waits for the reader, part by part
        sender = threading.Thread(
            target=lambda: (a.send(("first", big), fds=(r,)), a.send("second")), daemon=True
        )
        sender.start()
        (name, data), fds = b.receive()
        assert (name, data) == ("first", big) and len(fds) == 1
        os.write(w, b"x")
        assert os.read(fds[0], 1) == b"x"  # the same pipe, passed across
        os.close(fds[0])
        assert b.receive() == ("second", [])
        sender.join(5)
        a.close()
        with pytest.raises(ChannelClosed):
            b.receive()
    finally:
        os.close(r)
        os.close(w)
        b.close()


def test_a_broken_peer_end_closes_the_channel_instead_of_raising_anything_else() -> None:
    left, right = channel_pair()
    b = Channel(right)
    try:
        left.send(b"?garbage")  # neither a part nor a last part
        with pytest.raises(ChannelClosed, match="framing"):
            b.receive()
        left.send(b".not a pickle")
        with pytest.raises(ChannelClosed, match="unreadable"):
            b.receive()
    finally:
        left.close()
        b.close()


def test_stage_counters_sum_across_workers_and_peaks_take_the_largest() -> None:
    w0 = [
        {"name": "decrypt", "packets_in": 3, "drops": {"x": 1}, "mailbox": {"high_water": 5}},
        {"name": "tun_writer", "packets_in": 2, "offloads": "tun_gro=on"},
    ]
    w1 = [
        {"name": "decrypt", "packets_in": 4, "drops": {"y": 2}, "mailbox": {"high_water": 9}},
        {"name": "tun_writer", "packets_in": 1, "offloads": "tun_gro=on"},
        {"name": "extra", "packets_in": 7},
    ]
    total = {s["name"]: s for s in sum_stages([w0, w1])}
    assert list(total) == ["decrypt", "tun_writer", "extra"]
    assert total["decrypt"]["packets_in"] == 7
    assert total["decrypt"]["drops"] == {"x": 1, "y": 2}
    assert total["decrypt"]["mailbox"]["high_water"] == 9
    assert total["tun_writer"]["offloads"] == "tun_gro=on" and total["extra"]["packets_in"] == 7


def test_host_packets_split_by_owner_in_order_with_a_bounded_cache() -> None:
    from actors.packet import Packet
    from actors.wireguard.sharding import PeerDirectory
    from actors.workers.shard import MAX_OWNER_CACHE, split_by_owner

    def udp_to(dst: str, n: int) -> Packet:
        body = bytes([0x45, 0, 0, 28, 0, n, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1])
        return Packet(body + ipaddress.ip_address(dst).packed + bytes(8))

    directory = PeerDirectory(
        3,
        [
            (KEYS[0], 0, [ipaddress.ip_network("10.1.0.0/16")]),
            (KEYS[1], 1, [ipaddress.ip_network("10.2.0.0/16")]),
            (KEYS[2], 2, [ipaddress.ip_network("10.2.9.0/24")]),  # more specific, worker 2
        ],
    )
    packets = [
        udp_to("10.2.0.5", 1),
        udp_to("10.1.0.5", 2),
        udp_to("10.2.9.1", 3),
        udp_to("10.2.0.6", 4),
        udp_to("192.0.2.1", 5),  # no route: stays, the encrypt stage counts it
        udp_to("10.2.0.5", 6),
    ]
    cache: dict[bytes, int | None] = {}
    mine, theirs = split_by_owner(packets, directory, 0, cache)
    assert [p.data[5] for p in mine] == [2, 5]
    assert {w: [p.data[5] for p in ps] for w, ps in theirs.items()} == {1: [1, 4, 6], 2: [3]}
    assert len(cache) == 5
    many = [
        udp_to(str(ipaddress.ip_address("10.1.0.0") + i), 0) for i in range(MAX_OWNER_CACHE + 10)
    ]
    mine, _ = split_by_owner(many, directory, 0, cache)
    assert len(mine) == len(many) and len(cache) <= MAX_OWNER_CACHE


def test_a_directory_crosses_to_a_worker_whole_and_cheaply() -> None:
    """Pickled as its plain lookup tables (a 100,000-peer directory is a fraction of a second
    each way), and routes the same on the other side, IPv4 and IPv6, owners included."""
    import pickle

    from actors.wireguard.sharding import PeerDirectory

    directory = PeerDirectory(
        2,
        [
            (KEYS[0], 0, [PREFIXES[0], PREFIXES[5]]),
            (KEYS[1], 1, [PREFIXES[2], PREFIXES[6]]),
        ],
    )
    copy = pickle.loads(pickle.dumps(directory))
    for address in ADDRESSES:
        assert copy.route(address) == directory.route(address)
    assert dict(copy.owners) == {KEYS[0]: 0, KEYS[1]: 1} and copy.workers == 2
    assert copy.route(ipaddress.ip_address("fd00::1").packed) == KEYS[1]


def test_a_worker_that_cannot_answer_now_reads_as_a_timeout_not_a_failure() -> None:
    """ "busy" (no free slot for a question) and a stage's own timeout become DataPlaneTimeout,
    which `status` shows as an unresponsive worker and `wg` as EIO; a refusal stays an error."""
    from actors.dataplane import DataPlaneTimeout
    from actors.uapi import UapiError
    from actors.workers.messages import Failed
    from actors.workers.pool import _error

    assert isinstance(_error(1, Failed("busy", "worker busy")), DataPlaneTimeout)
    assert isinstance(
        _error(1, Failed("timeout", "the WireGuard stage did not answer")), DataPlaneTimeout
    )
    assert isinstance(_error(1, Failed("uapi", "no", 22)), UapiError)
    assert isinstance(_error(1, Failed("device", "at most")), DeviceError)
    assert not isinstance(_error(1, Failed("error", "RuntimeError")), DataPlaneTimeout)

"""A peer change costs the same at any table size: counted in operations, never in seconds.

Each table counts the entries it touches (``AllowedIPs.operations``); the device's actions say
how much crosses to the encrypt side; the published configuration counts the peers it rebuilt;
the DH precompute is counted by wrapping it. Every count is taken at two table sizes, and must
be the same at both.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import Any

import pytest

from actors import snapshot
from actors.snapshot import ConfigTracker, DeviceConfig
from actors.wireguard import noise
from actors.wireguard.actions import HandshakeWanted, Routes, Sent, Transmit
from actors.wireguard.allowedips import AllowedIPs, RouteChanges
from actors.wireguard.device import Device, PeerConfig
from actors.wireguard.timers import Timers
from actors.wireguard.tunnel import Tunnel

SMALL, LARGE = 50, 2_000
WALL = 1.7e9  # UNIX time: it stamps the initiations these tests make


def _key(i: int) -> bytes:
    return i.to_bytes(4, "big") + bytes(28)


def _net(i: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(((10 << 24) + i, 32))


def _hub(n: int) -> Tunnel:
    return Tunnel(
        bytes(range(1, 33)), [PeerConfig(_key(i), allowed_ips=(_net(i),)) for i in range(n)]
    )


def _work(tunnel: Tunnel, change: Callable[[Device], list[Any]]) -> dict[str, int]:
    """Apply ``change``; count what it cost on both sides and what crossed between them."""
    device_routes = tunnel.device.allowed_ips
    send_routes = tunnel.encryptor._routes
    d0, s0 = device_routes.operations, send_routes.operations
    actions = change(tunnel.device)
    crossed = sum(len(a) for a in actions if isinstance(a, RouteChanges))
    full_copies = sum(1 for a in actions if isinstance(a, Routes))
    tunnel._pump(actions, 0.0, 0.0)
    return {
        "device": device_routes.operations - d0,
        "encryptor": send_routes.operations - s0,
        "route entries sent": crossed,
        "full tables sent": full_copies,
    }


def _add(key: bytes, *nets: ipaddress.IPv4Network) -> Callable[[Device], list[Any]]:
    return lambda d: d.add_peer(PeerConfig(key, allowed_ips=nets), 0.0)


@pytest.mark.parametrize(
    "name",
    ["add", "remove", "replace allowed IPs", "take a prefix from another peer", "update_peer"],
)
def test_a_change_costs_the_same_at_any_table_size(name: str) -> None:
    counts = []
    for n in (SMALL, LARGE):
        tunnel = _hub(n)
        new = _key(1 << 30)
        change: Callable[[Device], list[Any]] = {
            "add": _add(new, _net(1 << 20), _net((1 << 20) + 1)),
            "remove": lambda d: d.remove_peer(_key(7)),
            "replace allowed IPs": _add(_key(7), _net(1 << 21)),
            "take a prefix from another peer": _add(new, _net(7)),
            "update_peer": lambda d: d.update_peer(_key(7), 0.0, allowed_ips=(_net(1 << 22),)),
        }[name]
        counts.append(_work(tunnel, change))
    small, large = counts
    assert small == large, f"{name}: {small} at {SMALL} peers, {large} at {LARGE}"
    assert large["full tables sent"] == 0
    assert 0 < large["route entries sent"] <= 4
    assert large["device"] <= 8 and large["encryptor"] <= 8


def test_both_sides_agree_after_many_changes() -> None:
    """The encrypt side's table, built only from deltas, is the device's table."""
    rng = random.Random(17)
    tunnel = _hub(200)
    for _ in range(2_000):
        key = _key(rng.randrange(260))
        nets = tuple(
            ipaddress.ip_network(
                f"10.{rng.randrange(4)}.{rng.randrange(256)}.0/{length}", strict=False
            )
            for length in rng.sample((16, 20, 24), rng.randrange(3))
        ) + tuple(_net(rng.randrange(300)) for _ in range(rng.randrange(3)))
        if rng.random() < 0.3:
            tunnel.remove_peer(key, 0.0)
        else:
            tunnel.add_peer(PeerConfig(key, allowed_ips=nets), 0.0)
    device, sender = tunnel.device.allowed_ips, tunnel.encryptor._routes
    assert sorted(map(str, device.items())) == sorted(map(str, sender.items()))
    for _ in range(500):
        address = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}"
        assert device.lookup(address) == sender.lookup(address)


def test_reading_every_peer_is_linear() -> None:
    """`wg show` asks every peer for its prefixes: one entry each, not a scan each."""
    for n in (SMALL, LARGE):
        tunnel = _hub(n)
        routes = tunnel.device.allowed_ips
        before = routes.operations
        states = tunnel.device.peer_states()
        assert routes.operations - before == n
        assert [s.allowed_ips for s in states] == [(_net(i),) for i in range(n)]


@pytest.mark.parametrize("n", [SMALL, LARGE])
def test_the_published_configuration_rebuilds_only_what_changed(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tunnel = _hub(n)
    device = tunnel.device
    tracker = ConfigTracker(DeviceConfig(device.private_key, device.configs()))
    rebuilt: list[bytes] = []
    real = Device.config_now

    def counting(self: Device, key: bytes) -> PeerConfig | None:
        rebuilt.append(key)
        return real(self, key)

    monkeypatch.setattr(Device, "config_now", counting)
    new = _key(1 << 30)
    changes = device.add_peer(PeerConfig(new, allowed_ips=(_net(3),)), 0.0)
    tracker.mark([new])
    for action in changes:
        if isinstance(action, RouteChanges):
            tracker.mark(action.owners())
    published = tracker.build(device)
    monkeypatch.undo()
    assert sorted(rebuilt) == sorted([new, _key(3)])  # the new peer, and the one it robbed
    assert set(published.peers) == set(device.configs())


def test_the_static_static_dh_waits_for_the_first_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = noise.dh

    def counting(private: bytes, public: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real(private, public)

    monkeypatch.setattr(noise, "dh", counting)
    ours = bytes(range(1, 33))
    theirs = bytes(range(2, 34))
    peers = [PeerConfig(_key(i), allowed_ips=(_net(i),)) for i in range(LARGE)]
    a = Tunnel(ours, peers)
    assert calls == 0  # loading the table made no DH at all
    b_public = noise.Identity.from_private(theirs).public
    a.add_peer(PeerConfig(b_public, endpoint=("192.0.2.2", 51820)), 0.0)
    assert calls == 0
    before = calls
    out = a.device.handle(HandshakeWanted(b_public), 0.0, WALL)
    assert any(isinstance(x, Transmit) for x in out)
    first = calls - before
    a.device.peer_map[b_public].last_sent_handshake = None
    out = a.device.handle(HandshakeWanted(b_public), 10.0, WALL)
    assert any(isinstance(x, Transmit) for x in out)
    second = calls - before - first
    # The first initiation pays for the static-static DH; the next reuses it and makes only
    # its own ephemeral one.
    assert first == second + 1


def test_a_table_copy_and_journal_are_independent() -> None:
    source: AllowedIPs[str] = AllowedIPs(journal=True)
    source.insert("10.0.0.0/8", "a")
    mirror = source.copy()
    first = source.take_changes()
    assert len(first) == 1 and source.take_changes().entries == ()
    source.insert("10.0.0.0/8", "b")  # moves the prefix: the old owner is in the change
    change = source.take_changes()
    assert change.owners() == {"a", "b"}
    mirror.apply(change)
    assert mirror.lookup("10.1.2.3") == "b" and mirror.prefixes("a") == []


@pytest.mark.parametrize("n", [SMALL, LARGE])
def test_a_tick_looks_only_at_peers_with_a_timer(n: int) -> None:
    """Idle peers cost a tick nothing: only the peers with a deadline armed are visited."""
    tunnel = _hub(n)
    device = tunnel.device
    device.update_timers(1.0, WALL)
    assert len(device.armed) == 0
    busy = _key(5)
    device.add_peer(PeerConfig(busy, endpoint=("192.0.2.9", 51820), persistent_keepalive=25), 2.0)
    assert list(device.armed) == [busy]
    assert device.next_deadline() == 2.0
    out = device.update_timers(2.0, WALL)
    assert [type(a).__name__ for a in out] == ["SendKeepalive"]
    device.update_timers(2.1, WALL)  # nothing pending now: the peer leaves the list...
    assert len(device.armed) == 0
    device.handle(Sent(busy, 0, 1, 32), 2.2, WALL)  # ...until the keepalive's send re-arms it
    assert list(device.armed) == [busy]


def test_the_published_configuration_follows_churn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many adds and removes: the chunked configuration always equals the device's, and the
    chunks stay few (removals are repacked)."""
    monkeypatch.setattr(snapshot, "CONFIG_CHUNK", 8)
    rng = random.Random(7)
    tunnel = _hub(300)
    device = tunnel.device
    tracker = ConfigTracker(DeviceConfig(device.private_key, device.configs()))
    for step in range(3_000):
        key = _key(rng.randrange(2_000))
        if rng.random() < 0.5:
            actions = device.remove_peer(key)
        else:
            actions = device.add_peer(PeerConfig(key, allowed_ips=(_net(rng.randrange(500)),)), 0)
        tracker.mark([key])
        for action in actions:
            if isinstance(action, RouteChanges):
                tracker.mark(action.owners())
        published = tracker.build(device)
        if step % 500 == 0 or step == 2_999:
            assert sorted(published.peers, key=lambda c: c.public_key) == sorted(
                device.configs(), key=lambda c: c.public_key
            )
            assert len(published.peers) == len(device.peer_map)
    assert len(tracker._chunks) <= 2 * (len(device.peer_map) // 8) + 3


def test_every_timer_event_that_sets_a_deadline_reports_the_peer() -> None:
    """The armed map is only as good as its reports: each event method of ``Timers`` that sets
    a deadline must report, or a tick would never visit that peer."""
    events: dict[str, Callable[[Timers], None]] = {
        "handshake_initiated": lambda t: t.handshake_initiated(1.0, 0.0),
        "session_derived": lambda t: t.session_derived(1.0),
        "data_sent": lambda t: t.data_sent(1.0, 0.0),
        "data_received": lambda t: t.data_received(1.0),
        "any_authenticated_packet_traversal": lambda t: t.any_authenticated_packet_traversal(
            1.0, 25
        ),
        "persistent_keepalive_configured": lambda t: t.persistent_keepalive_configured(
            1.0, 25, True
        ),
    }
    for name, event in events.items():
        armed: dict[bytes, None] = {}
        timers = Timers(armed=armed, key=b"k")
        event(timers)
        assert timers.earliest() is not None and list(armed) == [b"k"], name
    armed = {}
    timers = Timers(armed=armed, key=b"k")
    timers.any_authenticated_packet_sent()  # cancelling reports nothing
    timers.any_authenticated_packet_received()
    timers.handshake_complete()
    assert armed == {}

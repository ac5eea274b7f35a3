"""Hostile input to the protocol core: nothing escapes but counted drops.

Random datagrams, and mutations of real ones (which get past the cheap header checks and into
the cryptography), are fed to a device that has live sessions. Whatever arrives, ``receive``
returns actions and counts a drop reason; it never raises.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wgsim import A_EP, A_TUN4, B_TUN4, Sim, udp4

from actors.wireguard import drops
from actors.wireguard.constants import MSG_INITIATION, MSG_RESPONSE, MSG_TRANSPORT

_SIM = Sim()
_SIM.handshake()
_SIM.send(_SIM.a, udp4(A_TUN4, B_TUN4, b"sample"))
_SAMPLES = [d for _, d in _SIM.log]
_SIM.in_flight.clear()
_DEVICE = _SIM.b.tunnel.device
_REASONS = {v for k, v in vars(drops).items() if k.isupper()}

settings.register_profile("fuzz", max_examples=400, suppress_health_check=[HealthCheck.too_slow])


def _receive(data: bytes) -> None:
    before = sum(_DEVICE.drops.values())
    out = _DEVICE.receive(data, ("198.51.100.66", 4242), _SIM.now, _SIM.wall())
    assert isinstance(out, list)
    assert set(_DEVICE.drops) <= _REASONS
    # a datagram that produced nothing to do was counted as a drop
    if not out:
        assert sum(_DEVICE.drops.values()) >= before


@settings(settings.get_profile("fuzz"))
@given(st.binary(max_size=1600))
def test_random_datagrams(data: bytes) -> None:
    _receive(data)


@settings(settings.get_profile("fuzz"))
@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=1600))
def test_random_bodies_with_valid_headers(kind: int, body: bytes) -> None:
    _receive(bytes([kind, 0, 0, 0]) + body)


@settings(settings.get_profile("fuzz"))
@given(
    st.sampled_from(_SAMPLES),
    st.lists(st.tuples(st.integers(0, 1600), st.integers(0, 255)), max_size=4),
    st.integers(-8, 8),
)
def test_mutated_real_messages(sample: bytes, flips: list[tuple[int, int]], resize: int) -> None:
    data = bytearray(sample)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    if resize > 0:
        data += bytes(resize)
    elif resize < 0:
        del data[resize:]
    _receive(bytes(data))


def test_transport_with_unknown_index_and_wrong_counter() -> None:
    transport = next(d for d in _SAMPLES if d[0] == MSG_TRANSPORT)
    before = _DEVICE.drops[drops.UNKNOWN_INDEX]
    forged = struct.pack("<IIQ", MSG_TRANSPORT, 0xDEADBEEF, 7) + transport[16:]
    assert _DEVICE.receive(forged, A_EP, _SIM.now, _SIM.wall()) == []
    assert _DEVICE.drops[drops.UNKNOWN_INDEX] == before + 1


def test_every_sample_kind_is_present() -> None:
    kinds = {d[0] for d in _SAMPLES}
    assert {MSG_INITIATION, MSG_RESPONSE, MSG_TRANSPORT} <= kinds

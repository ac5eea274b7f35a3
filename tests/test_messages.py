"""Codec tests for actors/wireguard/messages.py: sizes, headers, field offsets, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.wireguard.constants import (
    COOKIE_REPLY_SIZE,
    INITIATION_SIZE,
    MSG_COOKIE_REPLY,
    MSG_INITIATION,
    MSG_RESPONSE,
    MSG_TRANSPORT,
    RESPONSE_SIZE,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
)
from actors.wireguard.messages import (
    MAC1_FROM_END,
    MAC2_FROM_END,
    CookieReply,
    Initiation,
    MessageError,
    Response,
    Transport,
    decode,
    encode_transport_header,
    message_type,
)

SIZES = {
    MSG_INITIATION: INITIATION_SIZE,
    MSG_RESPONSE: RESPONSE_SIZE,
    MSG_COOKIE_REPLY: COOKIE_REPLY_SIZE,
}
CLASSES = {
    MSG_INITIATION: Initiation,
    MSG_RESPONSE: Response,
    MSG_COOKIE_REPLY: CookieReply,
    MSG_TRANSPORT: Transport,
}


def fill(n: int, start: int) -> bytes:
    """n distinct-looking bytes, so a field read from the wrong offset is noticed."""
    return bytes((start + i) & 0xFF for i in range(n))


def build_initiation(sender: int = 0x11223344) -> tuple[bytes, dict[str, bytes]]:
    fields = {
        "ephemeral": fill(32, 0x10),
        "encrypted_static": fill(48, 0x40),
        "encrypted_timestamp": fill(28, 0x80),
        "mac1": fill(16, 0xA0),
        "mac2": fill(16, 0xC0),
    }
    data = struct.pack("<BxxxI", MSG_INITIATION, sender) + b"".join(fields.values())
    assert len(data) == 148
    return data, fields


def build_response(
    sender: int = 0xDEADBEEF, receiver: int = 0x01020304
) -> tuple[bytes, dict[str, bytes]]:
    fields = {
        "ephemeral": fill(32, 0x10),
        "encrypted_nothing": fill(16, 0x40),
        "mac1": fill(16, 0x60),
        "mac2": fill(16, 0x90),
    }
    data = struct.pack("<BxxxII", MSG_RESPONSE, sender, receiver) + b"".join(fields.values())
    assert len(data) == 92
    return data, fields


def build_cookie_reply(receiver: int = 0xCAFEF00D) -> tuple[bytes, dict[str, bytes]]:
    fields = {"nonce": fill(24, 0x20), "encrypted_cookie": fill(32, 0x70)}
    data = struct.pack("<BxxxI", MSG_COOKIE_REPLY, receiver) + b"".join(fields.values())
    assert len(data) == 64
    return data, fields


def valid_message(kind: int) -> bytes:
    if kind == MSG_INITIATION:
        return build_initiation()[0]
    if kind == MSG_RESPONSE:
        return build_response()[0]
    if kind == MSG_COOKIE_REPLY:
        return build_cookie_reply()[0]
    return struct.pack("<BxxxIQ", MSG_TRANSPORT, 7, 9) + bytes(16)


def test_constants() -> None:
    assert (INITIATION_SIZE, RESPONSE_SIZE, COOKIE_REPLY_SIZE) == (148, 92, 64)
    assert (TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE) == (16, 32)
    assert (MAC1_FROM_END, MAC2_FROM_END) == (32, 16)


# --- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [MSG_INITIATION, MSG_RESPONSE, MSG_COOKIE_REPLY])
def test_exact_size_accepted(kind: int) -> None:
    data = valid_message(kind)
    assert len(data) == SIZES[kind]
    assert isinstance(decode(data), CLASSES[kind])
    assert message_type(data) == kind


@pytest.mark.parametrize("kind", [MSG_INITIATION, MSG_RESPONSE, MSG_COOKIE_REPLY])
@pytest.mark.parametrize("delta", [-1, +1])
def test_size_off_by_one_refused(kind: int, delta: int) -> None:
    data = valid_message(kind)
    data = data[:-1] if delta < 0 else data + b"\x00"
    assert len(data) == SIZES[kind] + delta
    with pytest.raises(MessageError):
        decode(data)


@pytest.mark.parametrize("kind", [MSG_INITIATION, MSG_RESPONSE, MSG_COOKIE_REPLY])
def test_other_types_size_refused(kind: int) -> None:
    # a message of one type, relabelled with another handshake type, has the wrong size
    data = valid_message(kind)
    for other in (MSG_INITIATION, MSG_RESPONSE, MSG_COOKIE_REPLY):
        if other != kind:
            with pytest.raises(MessageError):
                decode(bytes([other]) + data[1:])


def test_transport_minimum() -> None:
    header = struct.pack("<BxxxIQ", MSG_TRANSPORT, 1, 2)
    msg = decode(header + bytes(16))
    assert isinstance(msg, Transport)
    assert msg.encrypted_packet == bytes(16)
    with pytest.raises(MessageError):
        decode(header + bytes(15))
    with pytest.raises(MessageError):
        decode(header)
    # no maximum besides the datagram
    big = decode(header + bytes(1500))
    assert isinstance(big, Transport)
    assert len(big.encrypted_packet) == 1500


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_short_header_refused(n: int) -> None:
    with pytest.raises(MessageError):
        decode(bytes([MSG_TRANSPORT, 0, 0, 0])[:n])
    with pytest.raises(MessageError):
        message_type(bytes([MSG_INITIATION, 0, 0, 0])[:n])


# --- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [1, 2, 3, 4])
@pytest.mark.parametrize("position", [1, 2, 3])
@pytest.mark.parametrize("value", [1, 0x80, 0xFF])
def test_reserved_bytes_must_be_zero(kind: int, position: int, value: int) -> None:
    data = bytearray(valid_message(kind))
    data[position] = value
    with pytest.raises(MessageError):
        decode(bytes(data))
    with pytest.raises(MessageError):
        message_type(bytes(data))


@pytest.mark.parametrize("kind", [0, 5, 6, 16, 127, 128, 255])
def test_unknown_types_refused(kind: int) -> None:
    for size in (32, 64, 92, 148, 200):
        data = bytes([kind, 0, 0, 0]) + bytes(size - 4)
        with pytest.raises(MessageError):
            decode(data)
        with pytest.raises(MessageError):
            message_type(data)


def test_all_unknown_types_refused() -> None:
    for kind in [0, *range(5, 256)]:
        with pytest.raises(MessageError):
            decode(bytes([kind, 0, 0, 0]) + bytes(144))


def test_message_error_is_value_error() -> None:
    assert issubclass(MessageError, ValueError)


# --- field offsets -----------------------------------------------------------------------------


def test_initiation_fields() -> None:
    data, fields = build_initiation(sender=0x11223344)
    msg = decode(data)
    assert isinstance(msg, Initiation)
    assert msg.sender == 0x11223344
    assert msg.ephemeral == data[8:40] == fields["ephemeral"]
    assert msg.encrypted_static == data[40:88] == fields["encrypted_static"]
    assert msg.encrypted_timestamp == data[88:116] == fields["encrypted_timestamp"]
    assert msg.mac1 == data[116:132] == fields["mac1"]
    assert msg.mac2 == data[132:148] == fields["mac2"]
    assert msg.mac1 == data[-MAC1_FROM_END:-MAC2_FROM_END]
    assert msg.mac2 == data[-MAC2_FROM_END:]


def test_initiation_body_is_bytes_before_mac1() -> None:
    data, _ = build_initiation(sender=0xFFFFFFFE)
    msg = decode(data)
    assert isinstance(msg, Initiation)
    assert msg.body() == data[:116] == data[:-MAC1_FROM_END]
    assert msg.body() + msg.mac1 + msg.mac2 == data


def test_response_fields() -> None:
    data, fields = build_response(sender=0xDEADBEEF, receiver=0x01020304)
    msg = decode(data)
    assert isinstance(msg, Response)
    assert msg.sender == 0xDEADBEEF
    assert msg.receiver == 0x01020304
    assert msg.ephemeral == data[12:44] == fields["ephemeral"]
    assert msg.encrypted_nothing == data[44:60] == fields["encrypted_nothing"]
    assert msg.mac1 == data[60:76] == fields["mac1"]
    assert msg.mac2 == data[76:92] == fields["mac2"]


def test_response_body_is_bytes_before_mac1() -> None:
    data, _ = build_response()
    msg = decode(data)
    assert isinstance(msg, Response)
    assert msg.body() == data[:60] == data[:-MAC1_FROM_END]
    assert msg.body() + msg.mac1 + msg.mac2 == data


def test_cookie_reply_fields_and_round_trip() -> None:
    data, fields = build_cookie_reply(receiver=0xCAFEF00D)
    msg = decode(data)
    assert isinstance(msg, CookieReply)
    assert msg.receiver == 0xCAFEF00D
    assert msg.nonce == data[8:32] == fields["nonce"]
    assert msg.encrypted_cookie == data[32:64] == fields["encrypted_cookie"]
    assert msg.encode() == data


def test_cookie_reply_encode_from_values() -> None:
    reply = CookieReply(receiver=0x01020304, nonce=b"\x01" * 24, encrypted_cookie=b"\x02" * 32)
    data = reply.encode()
    assert data == b"\x03\x00\x00\x00\x04\x03\x02\x01" + b"\x01" * 24 + b"\x02" * 32
    assert decode(data) == reply


def test_transport_fields() -> None:
    payload = fill(48, 0x33)
    data = struct.pack("<BxxxIQ", MSG_TRANSPORT, 0x0A0B0C0D, 0x0102030405060708) + payload
    msg = decode(data)
    assert isinstance(msg, Transport)
    assert msg.receiver == 0x0A0B0C0D
    assert msg.counter == 0x0102030405060708
    assert msg.encrypted_packet == payload


def test_transport_header_encoding() -> None:
    header = encode_transport_header(0x0A0B0C0D, 2**64 - 1)
    assert header == b"\x04\x00\x00\x00\x0d\x0c\x0b\x0a" + b"\xff" * 8
    msg = decode(header + bytes(16))
    assert isinstance(msg, Transport)
    assert (msg.receiver, msg.counter) == (0x0A0B0C0D, 2**64 - 1)


def test_fields_are_bytes_even_from_bytearray_or_memoryview() -> None:
    data, _ = build_initiation()
    for view in (bytearray(data), memoryview(data)):
        msg = decode(view)
        assert isinstance(msg, Initiation)
        assert type(msg.ephemeral) is bytes
        assert msg.body() == data[:116]


def test_messages_are_frozen() -> None:
    msg = decode(build_cookie_reply()[0])
    with pytest.raises(AttributeError):
        msg.receiver = 1  # type: ignore[misc]


# --- fuzzing -----------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_decode_random_bytes_only_raises_message_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except MessageError:
        return
    assert isinstance(msg, (Initiation, Response, CookieReply, Transport))
    assert data[1:4] == b"\x00\x00\x00"


@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=300))
def test_decode_valid_header_random_body(kind: int, body: bytes) -> None:
    data = bytes([kind, 0, 0, 0]) + body
    n = len(data)
    try:
        msg = decode(data)
    except MessageError:
        if kind == MSG_TRANSPORT:
            assert n < TRANSPORT_MIN_SIZE
        else:
            assert n != SIZES[kind]
        return
    assert isinstance(msg, CLASSES[kind])
    if kind == MSG_TRANSPORT:
        assert n >= TRANSPORT_MIN_SIZE
        assert isinstance(msg, Transport)
        assert msg.encrypted_packet == data[16:]
    else:
        assert n == SIZES[kind]
    if isinstance(msg, (Initiation, Response)):
        assert msg.body() + msg.mac1 + msg.mac2 == data
    if isinstance(msg, CookieReply):
        assert msg.encode() == data


@given(st.sampled_from([1, 2, 3]), st.data())
def test_decode_exact_size_random_payload_round_trips(kind: int, data: st.DataObject) -> None:
    payload = data.draw(st.binary(min_size=SIZES[kind] - 4, max_size=SIZES[kind] - 4))
    raw = bytes([kind, 0, 0, 0]) + payload
    msg = decode(raw)
    assert isinstance(msg, CLASSES[kind])
    if isinstance(msg, (Initiation, Response)):
        assert msg.body() + msg.mac1 + msg.mac2 == raw
    else:
        assert isinstance(msg, CookieReply)
        assert msg.encode() == raw

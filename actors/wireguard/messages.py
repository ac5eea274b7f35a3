"""Codecs for the four WireGuard messages (whitepaper section 5.4).

Parsing is strict: the type byte, the three reserved zero bytes and the exact size must all match,
and anything else raises :class:`MessageError`, the only exception this module raises. Decoded
messages are frozen values; their fields are slices of the input and are never mutated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
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

__all__ = [
    "CookieReply",
    "Initiation",
    "MessageError",
    "Response",
    "Transport",
    "decode",
    "message_type",
]

_U32 = struct.Struct("<I")
_TRANSPORT_HEADER = struct.Struct("<IIQ")
# Offsets of mac1 and mac2 from the end of a handshake message: both MACs trail the message.
MAC1_FROM_END = 32
MAC2_FROM_END = 16


class MessageError(ValueError):
    """The datagram is not a well-formed WireGuard message."""


@dataclass(frozen=True, slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes
    mac2: bytes

    def body(self) -> bytes:
        """Everything before mac1: what mac1 covers."""
        return (
            _U32.pack(MSG_INITIATION)
            + _U32.pack(self.sender)
            + self.ephemeral
            + self.encrypted_static
            + self.encrypted_timestamp
        )


@dataclass(frozen=True, slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes
    mac2: bytes

    def body(self) -> bytes:
        return (
            _U32.pack(MSG_RESPONSE)
            + _U32.pack(self.sender)
            + _U32.pack(self.receiver)
            + self.ephemeral
            + self.encrypted_nothing
        )


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def encode(self) -> bytes:
        return (
            _U32.pack(MSG_COOKIE_REPLY)
            + _U32.pack(self.receiver)
            + self.nonce
            + self.encrypted_cookie
        )


@dataclass(frozen=True, slots=True)
class Transport:
    receiver: int
    counter: int
    encrypted_packet: bytes


def message_type(data: bytes) -> int:
    """The message type of a datagram, or raise MessageError if its header is not WireGuard's."""
    if len(data) < 4 or data[1] or data[2] or data[3] or not 1 <= data[0] <= 4:
        raise MessageError("not a WireGuard message header")
    return data[0]


def encode_transport_header(receiver: int, counter: int) -> bytes:
    return _TRANSPORT_HEADER.pack(MSG_TRANSPORT, receiver, counter)


def decode(data: bytes) -> Initiation | Response | CookieReply | Transport:
    """Parse any WireGuard datagram into its message value."""
    kind = message_type(data)
    n = len(data)
    if kind == MSG_TRANSPORT:
        if n < TRANSPORT_MIN_SIZE:
            raise MessageError(
                f"transport message of {n} bytes is shorter than {TRANSPORT_MIN_SIZE}"
            )
        _, receiver, counter = _TRANSPORT_HEADER.unpack_from(data)
        return Transport(receiver, counter, bytes(data[TRANSPORT_HEADER_SIZE:]))
    if kind == MSG_INITIATION:
        if n != INITIATION_SIZE:
            raise MessageError(f"initiation of {n} bytes, expected {INITIATION_SIZE}")
        return Initiation(
            _U32.unpack_from(data, 4)[0],
            bytes(data[8:40]),
            bytes(data[40:88]),
            bytes(data[88:116]),
            bytes(data[116:132]),
            bytes(data[132:148]),
        )
    if kind == MSG_RESPONSE:
        if n != RESPONSE_SIZE:
            raise MessageError(f"response of {n} bytes, expected {RESPONSE_SIZE}")
        return Response(
            _U32.unpack_from(data, 4)[0],
            _U32.unpack_from(data, 8)[0],
            bytes(data[12:44]),
            bytes(data[44:60]),
            bytes(data[60:76]),
            bytes(data[76:92]),
        )
    if n != COOKIE_REPLY_SIZE:
        raise MessageError(f"cookie reply of {n} bytes, expected {COOKIE_REPLY_SIZE}")
    return CookieReply(_U32.unpack_from(data, 4)[0], bytes(data[8:32]), bytes(data[32:64]))

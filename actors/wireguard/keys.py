"""Key text formats: base64 (wg-quick files, `wg` output) and hex (the UAPI protocol).

Both are strict: exactly 32 bytes, canonical encoding, so a typo is an error and never a different
key. Errors never echo the key text back, since it may be a private key.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable

__all__ = ["KeyFormatError", "decode_hex_key", "decode_key", "encode_key", "generate_private_key"]


class KeyFormatError(ValueError):
    """The text is not a 32-byte key in the expected encoding."""


def decode_key(text: str) -> bytes:
    """A base64 key as `wg genkey` prints it: 44 characters ending in '='."""
    text = text.strip()
    if len(text) != 44 or not text.endswith("="):
        raise KeyFormatError("a key is 44 base64 characters")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError("a key must be valid base64") from None
    if len(key) != 32:
        raise KeyFormatError("a key must decode to 32 bytes")
    if base64.b64encode(key).decode() != text:
        raise KeyFormatError("a key must be canonical base64 (its padding bits are not zero)")
    return key


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_hex_key(text: str) -> bytes:
    """A hex key as the UAPI carries it: 64 lowercase or uppercase hex digits."""
    # bytes.fromhex skips whitespace, but 64 characters that decode to 32 bytes can hold none:
    # every one of them was a hex digit. (One check per key, not per digit: a 100,000-peer
    # `wg setconf` carries 100,000 keys.)
    if len(text) != 64:
        raise KeyFormatError("a hex key is 64 hex digits")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFormatError("a hex key is 64 hex digits") from None
    if len(key) != 32:
        raise KeyFormatError("a hex key is 64 hex digits")
    return key


def generate_private_key(rng: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh Curve25519 private key, clamped as `wg genkey` does."""
    key = bytearray(rng(32))
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)

"""The Internet checksum (RFC 1071) in pure Python, at C speed where it matters.

The one's-complement sum of 16-bit big-endian words equals the buffer read as one big integer
modulo 0xFFFF, because 0x10000 is 1 modulo 0xFFFF: every carry out of a word folds back in, as
the end-around carry does. ``int.from_bytes`` and ``%`` run in C over the whole buffer, so a
1280-byte packet costs about a microsecond, with no per-word Python loop.

Sums of pieces add modulo 0xFFFF as long as every piece starts at an even offset of the summed
data (all the headers here are multiples of four bytes).
"""

from __future__ import annotations

__all__ = ["finish", "fold", "pseudo_sum", "raw_sum", "valid"]

_MOD = 0xFFFF


def raw_sum(data: bytes | bytearray | memoryview) -> int:
    """The one's-complement sum of ``data`` modulo 0xFFFF (an odd tail is padded with zero)."""
    if len(data) & 1:
        return (int.from_bytes(data, "big") << 8) % _MOD
    return int.from_bytes(data, "big") % _MOD


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """The sum of the TCP/UDP pseudo header (IPv4 or IPv6: the layout differs, the sum does not)."""
    return (int.from_bytes(src + dst, "big") + proto + length) % _MOD


def finish(total: int) -> int:
    """The checksum field for a sum: its complement, never 0 (0 means "none" in UDP; 0xFFFF is
    the same value in one's complement and is what a sum of zero gets)."""
    return _MOD - total % _MOD


def fold(total: int) -> int:
    """A sum as a 16-bit field, not complemented: what a partial checksum (the pseudo header
    that the device completes) holds. A non-zero sum folds to 0xFFFF, never 0."""
    return total % _MOD or _MOD


def valid(total: int) -> bool:
    """Whether a sum taken over data that includes its checksum field verifies."""
    return total % _MOD == 0

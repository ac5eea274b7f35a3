"""The Internet checksum (RFC 1071), public so that stages never hand-roll one.

Why ``int.from_bytes(buf, "big") % 0xFFFF``: 2**16 is 1 modulo 0xFFFF, so the whole buffer read
as one big integer leaves the same remainder as the sum of its 16-bit words. CPython does that
in C, which is some twenty times faster than summing ``struct``-unpacked words in Python.

The one care it needs: the ones' complement sum of data that is not all zeros is never 0 (the
end-around carry makes it 0xFFFF), while the remainder can be 0. So a remainder of 0 means a sum
of 0xFFFF (checksum 0) unless every byte is zero (sum 0, checksum 0xFFFF).
"""

from __future__ import annotations

__all__ = [
    "finish",
    "fold",
    "internet_checksum",
    "ones_sum",
    "pseudo_header_sum",
    "valid",
]

_MOD = 0xFFFF


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit ones' complement sum of ``data`` (an odd length is padded with a zero byte),
    in 0..0xFFFF. Sums of parts add up: pass one to :func:`internet_checksum` as its
    ``initial``, or add several and finish with :func:`finish` or :func:`fold`."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    s = n % _MOD
    if s == 0 and n != 0:
        return _MOD
    return s


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The checksum to store in a header: the complement of the ones' complement sum of
    ``data`` plus ``initial`` (a sum from :func:`ones_sum` or :func:`pseudo_header_sum`).

    To verify a received header, compute it over the header as it stands: the result is 0.
    """
    total = ones_sum(data) + initial
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return 0xFFFF - total


def pseudo_header_sum(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """The ones' complement sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 768, RFC 8200 8.1)
    for addresses of either family (4 or 16 bytes each)."""
    if len(src) == 4:
        tail = bytes((0, protocol)) + length.to_bytes(2, "big")
    else:
        tail = length.to_bytes(4, "big") + bytes((0, 0, 0, protocol))
    return ones_sum(src + dst + tail)


# -- Sums of pieces, for the offload paths (actors/io/gso.py), which add the sums of headers
# and payload slices and complete partial checksums: any sum congruent modulo 0xFFFF will do
# there, and the 0/0xFFFF distinction is made once, at the end, by finish() or fold().


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

"""Cryptokey routing: the AllowedIPs table (whitepaper section 2).

Outbound, the longest matching prefix of a packet's destination picks the peer; inbound, a
decrypted packet is accepted only if its source routes back to the peer that sent it.

The table is keyed by prefix length: for each length in use, a dict from masked network to peer.
A lookup tries the lengths present from longest to shortest, so its cost is the number of distinct
prefix lengths (a handful in practice), each one dict probe on a Python int. That beats a bitwise
trie in pure Python, where every trie level is an interpreted step.

Values are opaque (the core uses peer public keys), so a table can be copied and handed to another
actor without sharing anything mutable: see :meth:`AllowedIPs.copy`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["AllowedIPs", "parse_prefix"]

V = TypeVar("V", bound=Hashable)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_prefix(text: str) -> Network:
    """Parse ``addr/len`` (or a bare address) leniently, masking host bits as `wg` does."""
    return ipaddress.ip_network(text.strip(), strict=False)


class _Family(Generic[V]):
    __slots__ = ("bits", "by_len", "lengths")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.by_len: dict[int, dict[int, V]] = {}
        self.lengths: tuple[int, ...] = ()

    def _reindex(self) -> None:
        self.lengths = tuple(sorted((n for n, d in self.by_len.items() if d), reverse=True))

    def mask(self, length: int) -> int:
        return ((1 << length) - 1) << (self.bits - length)

    def insert(self, network: int, length: int, value: V) -> None:
        self.by_len.setdefault(length, {})[network] = value
        self._reindex()

    def remove(self, network: int, length: int) -> None:
        table = self.by_len.get(length)
        if table is not None:
            table.pop(network, None)
            self._reindex()

    def lookup(self, address: int) -> V | None:
        bits = self.bits
        by_len = self.by_len
        for length in self.lengths:
            value = by_len[length].get(address >> (bits - length) << (bits - length))
            if value is not None:
                return value
        return None


class AllowedIPs(Generic[V]):
    """Longest-prefix-match table from IPv4/IPv6 prefixes to peers."""

    __slots__ = ("_v4", "_v6")

    def __init__(self) -> None:
        self._v4: _Family[V] = _Family(32)
        self._v6: _Family[V] = _Family(128)

    def insert(self, prefix: Network | str, value: V) -> None:
        """Route ``prefix`` to ``value``; an existing identical prefix moves to the new value."""
        net = parse_prefix(prefix) if isinstance(prefix, str) else prefix
        fam = self._v4 if net.version == 4 else self._v6
        fam.insert(int(net.network_address), net.prefixlen, value)

    def remove(self, prefix: Network | str) -> None:
        net = parse_prefix(prefix) if isinstance(prefix, str) else prefix
        fam = self._v4 if net.version == 4 else self._v6
        fam.remove(int(net.network_address), net.prefixlen)

    def remove_value(self, value: V) -> None:
        """Drop every prefix that routes to ``value`` (a peer being removed)."""
        for fam in (self._v4, self._v6):
            for table in fam.by_len.values():
                for key in [k for k, v in table.items() if v == value]:
                    del table[key]
            fam._reindex()

    def lookup_bytes(self, address: bytes) -> V | None:
        """The peer for a raw 4- or 16-byte address (what a packet header holds)."""
        n = len(address)
        if n == 4:
            return self._v4.lookup(int.from_bytes(address, "big"))
        if n == 16:
            return self._v6.lookup(int.from_bytes(address, "big"))
        return None

    def lookup(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> V | None:
        return self.lookup_bytes(ipaddress.ip_address(address).packed)

    def prefixes(self, value: V) -> list[Network]:
        """The prefixes routed to ``value``, longest first per family (for `wg show`)."""
        out: list[Network] = []
        for fam, cls in ((self._v4, ipaddress.IPv4Network), (self._v6, ipaddress.IPv6Network)):
            for length in sorted(fam.by_len, reverse=True):
                for net, v in fam.by_len[length].items():
                    if v == value:
                        out.append(cls((net, length)))
        return out

    def items(self) -> Iterator[tuple[Network, V]]:
        for fam, cls in ((self._v4, ipaddress.IPv4Network), (self._v6, ipaddress.IPv6Network)):
            for length, table in fam.by_len.items():
                for net, v in table.items():
                    yield cls((net, length)), v

    def copy(self) -> AllowedIPs[V]:
        new: AllowedIPs[V] = AllowedIPs()
        for src, dst in ((self._v4, new._v4), (self._v6, new._v6)):
            dst.by_len = {n: dict(t) for n, t in src.by_len.items()}
            dst._reindex()
        return new

    def __len__(self) -> int:
        return sum(len(t) for fam in (self._v4, self._v6) for t in fam.by_len.values())

"""Cryptokey routing: the AllowedIPs table (whitepaper section 2).

Outbound, the longest matching prefix of a packet's destination picks the peer; inbound, a
decrypted packet is accepted only if its source routes back to the peer that sent it.

The table is keyed by prefix length: for each length in use, a dict from masked network to peer.
A lookup tries the lengths present from longest to shortest, so its cost is the number of distinct
prefix lengths (a handful in practice), each one dict probe on a Python int. That beats a bitwise
trie in pure Python, where every trie level is an interpreted step.

A hub adds and removes peers all day, so every change must cost O(change), never O(table):

* a reverse index (peer -> its prefixes) makes :meth:`AllowedIPs.prefixes` and
  :meth:`AllowedIPs.remove_value` proportional to that peer's prefixes;
* the encrypting side keeps its own copy of the table, and learns of a change as an immutable
  :class:`RouteChanges` value (the journal of inserts and removes since the last one), which it
  replays with :meth:`AllowedIPs.apply`.

Deltas rather than a persistent (path-copying) structure, because the lookup is the hot path: a
persistent map in pure Python turns each packet's route into O(log n) interpreted steps, while
deltas keep it one dict probe per prefix length, and both owners still share nothing mutable.
The two tables agree because the deltas travel in order on one lane; a restarted encrypt side
starts from a full copy (:meth:`AllowedIPs.copy`), which is O(table) once, not per change.

``operations`` counts the entries each table touched (written, removed or visited), so tests can
show that a change's work does not grow with the table without timing anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["AllowedIPs", "RouteChanges", "parse_prefix"]

V = TypeVar("V", bound=Hashable)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_prefix(text: str) -> Network:
    """Parse ``addr/len`` (or a bare address) leniently, masking host bits as `wg` does."""
    return ipaddress.ip_network(text.strip(), strict=False)


@dataclass(frozen=True, slots=True)
class RouteChanges(Generic[V]):
    """What changed in a routing table, in order, as an immutable value for the other owner.

    Each entry is ``(prefix, new, old)``: ``new`` None means the prefix was removed. The old
    owner is there so a reader can tell whose prefixes changed (a prefix given to another peer
    moves away from its old one) without asking the table.
    """

    entries: tuple[tuple[Network, V | None, V | None], ...]

    def __len__(self) -> int:
        return len(self.entries)

    def owners(self) -> set[Any]:
        """Every peer that gained or lost a prefix."""
        out: set[Any] = set()
        for _, new, old in self.entries:
            if new is not None:
                out.add(new)
            if old is not None:
                out.add(old)
        return out


class _Family(Generic[V]):
    __slots__ = ("bits", "by_len", "lengths")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.by_len: dict[int, dict[int, V]] = {}
        self.lengths: tuple[int, ...] = ()

    def _reindex(self) -> None:
        self.lengths = tuple(sorted((n for n, d in self.by_len.items() if d), reverse=True))

    def insert(self, network: int, length: int, value: V) -> V | None:
        table = self.by_len.get(length)
        if table is None:
            table = self.by_len[length] = {}
        old = table.get(network)
        table[network] = value
        if len(table) == 1 and old is None:
            self._reindex()  # a new length came into use
        return old

    def remove(self, network: int, length: int) -> V | None:
        table = self.by_len.get(length)
        if table is None:
            return None
        old = table.pop(network, None)
        if old is not None and not table:
            self._reindex()  # the last prefix of this length went
        return old

    def lookup(self, address: int) -> V | None:
        bits = self.bits
        by_len = self.by_len
        for length in self.lengths:
            value = by_len[length].get(address >> (bits - length) << (bits - length))
            if value is not None:
                return value
        return None


class AllowedIPs(Generic[V]):
    """Longest-prefix-match table from IPv4/IPv6 prefixes to peers.

    With ``journal`` set, every change is also recorded until :meth:`take_changes` hands the
    record over as a :class:`RouteChanges` value. Without ``index`` there is no reverse index
    (about 500 bytes a peer): right for a table that only looks up and replays changes, as the
    encrypt side's does; :meth:`prefixes` and :meth:`remove_value` then scan the table.
    """

    __slots__ = ("_journal", "_owned", "_v4", "_v6", "operations")

    def __init__(self, *, journal: bool = False, index: bool = True) -> None:
        self._v4: _Family[V] = _Family(32)
        self._v6: _Family[V] = _Family(128)
        # peer -> {(version, network, length): prefix}, in insertion order (for `wg show`).
        self._owned: dict[V, dict[tuple[int, int, int], Network]] | None = {} if index else None
        self._journal: list[tuple[Network, V | None, V | None]] | None = [] if journal else None
        self.operations = 0

    # -- changes

    def insert(self, prefix: Network | str, value: V) -> None:
        """Route ``prefix`` to ``value``; an existing identical prefix moves to the new value."""
        net = parse_prefix(prefix) if isinstance(prefix, str) else prefix
        version = net.version
        fam = self._v4 if version == 4 else self._v6
        address = int(net.network_address)
        length = net.prefixlen
        old = fam.insert(address, length, value)
        self.operations += 1
        if self._owned is not None:
            slot = (version, address, length)
            if old is not None:
                self._disown(old, slot)  # to the end of its peer's list, as in wireguard-go
            owned = self._owned.get(value)
            if owned is None:
                owned = self._owned[value] = {}
            owned[slot] = net
        if self._journal is not None:
            self._journal.append((net, value, old))

    def remove(self, prefix: Network | str) -> None:
        net = parse_prefix(prefix) if isinstance(prefix, str) else prefix
        self._remove(net.version, int(net.network_address), net.prefixlen, net)

    def _remove(self, version: int, address: int, length: int, net: Network) -> None:
        fam = self._v4 if version == 4 else self._v6
        old = fam.remove(address, length)
        self.operations += 1
        if old is None:
            return
        self._disown(old, (version, address, length))
        if self._journal is not None:
            self._journal.append((net, None, old))

    def _disown(self, value: V, slot: tuple[int, int, int]) -> None:
        if self._owned is None:
            return
        owned = self._owned.get(value)
        if owned is not None:
            owned.pop(slot, None)
            if not owned:
                del self._owned[value]

    def remove_value(self, value: V) -> None:
        """Drop every prefix that routes to ``value`` (a peer being removed): O(its prefixes)."""
        if self._owned is None:
            for net in [net for net, v in self.items() if v == value]:
                self.remove(net)
            return
        owned = self._owned.get(value)
        if owned is None:
            return
        for (version, address, length), net in list(owned.items()):
            self._remove(version, address, length, net)

    def take_changes(self) -> RouteChanges[V]:
        """The changes recorded since the last call (empty without a journal)."""
        journal = self._journal
        if not journal:
            return RouteChanges(())
        self._journal = []
        return RouteChanges(tuple(journal))

    def apply(self, changes: RouteChanges[V]) -> None:
        """Replay another table's changes, in order: O(len(changes))."""
        for net, new, _ in changes.entries:
            if new is None:
                self.remove(net)
            else:
                self.insert(net, new)

    # -- reading

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
        """The prefixes routed to ``value``, in the order they were inserted (one inserted again
        goes last), as wireguard-go lists them for `wg show`. Without the reverse index there
        is no such order: longest first per family then."""
        if self._owned is None:
            found = [net for net, v in self.items() if v == value]
            return sorted(found, key=lambda n: (n.version, -n.prefixlen))
        owned = self._owned.get(value)
        if not owned:
            return []
        self.operations += len(owned)
        return list(owned.values())

    def items(self) -> Iterator[tuple[Network, V]]:
        if self._owned is not None:
            for value, owned in self._owned.items():
                for net in owned.values():
                    yield net, value
            return
        for fam, cls in ((self._v4, ipaddress.IPv4Network), (self._v6, ipaddress.IPv6Network)):
            for length, table in fam.by_len.items():
                for address, value in table.items():
                    yield cls((address, length)), value

    def lookup_tables(self) -> tuple[dict[int, dict[int, V]], dict[int, dict[int, V]]]:
        """The lookup tables (IPv4, IPv6: prefix length -> network -> value), as plain data:
        what a table that only looks up is made again from (:meth:`from_lookup_tables`),
        another process's copy included. Copies; the table keeps its own."""
        return (
            {n: dict(t) for n, t in self._v4.by_len.items() if t},
            {n: dict(t) for n, t in self._v6.by_len.items() if t},
        )

    @classmethod
    def from_lookup_tables(
        cls, v4: dict[int, dict[int, V]], v6: dict[int, dict[int, V]]
    ) -> AllowedIPs[V]:
        """A table for lookups only (no reverse index, no journal), taking ``v4``/``v6``."""
        table: AllowedIPs[V] = cls(index=False)
        table._v4.by_len, table._v6.by_len = v4, v6
        table._v4._reindex()
        table._v6._reindex()
        return table

    def copy(self, *, index: bool = True) -> AllowedIPs[V]:
        """An independent table with the same routes (no journal): O(table), for a restart."""
        new: AllowedIPs[V] = AllowedIPs(index=index)
        for src, dst in ((self._v4, new._v4), (self._v6, new._v6)):
            dst.by_len = {n: dict(t) for n, t in src.by_len.items() if t}
            dst._reindex()
        if index:
            if self._owned is not None:
                new._owned = {v: dict(o) for v, o in self._owned.items()}
            else:
                new._owned = {}
                for net, value in self.items():
                    slot = (net.version, int(net.network_address), net.prefixlen)
                    new._owned.setdefault(value, {})[slot] = net
        return new

    def __len__(self) -> int:
        return sum(len(t) for fam in (self._v4, self._v6) for t in fam.by_len.values())

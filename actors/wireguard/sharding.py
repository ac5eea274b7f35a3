"""Which worker owns a receiver index: the rule that lets the kernel steer datagrams.

With several worker processes, each peer belongs to one of them, and so does every receiver
index that worker hands out (in its handshakes and sessions). The peer puts our index in front
of every response, cookie reply and transport message it sends us; if the index itself names
the worker, a socket filter in the kernel can deliver each datagram to the socket of the worker
that owns it, with no hand-over in user space (:mod:`actors.io.steering`).

The rule: the index's least significant byte, which travels first (indices are little-endian
on the wire), is congruent to the worker's number modulo the number of workers. That keeps 24
random bits plus the random part of the low byte, so a worker's index space stays far from
exhaustion (a collision needs millions of live entries), and a classic BPF program needs one
load and one modulo to apply it. Pure functions: no I/O.

What the kernel cannot steer, a worker hands to the owner (:mod:`actors.io.handover`): an
initiation, once the first Diffie-Hellman has named its sender, and a packet from the host,
once its destination has named its peer. A worker learns who owns what from a
:class:`PeerDirectory`: a value built where the configuration lives, given whole to every
worker and replaced whole on any change, never edited in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .allowedips import AllowedIPs, Network

__all__ = ["MAX_WORKERS", "PeerDirectory", "index_for_worker", "worker_of_index"]

MAX_WORKERS = 256  # the rule lives in one byte


def _check(worker: int, workers: int) -> None:
    if not 1 <= workers <= MAX_WORKERS or not 0 <= worker < workers:
        raise ValueError(f"worker {worker} of {workers} (1..{MAX_WORKERS} workers)")


def index_for_worker(random32: int, worker: int, workers: int) -> int:
    """A receiver index made from 32 random bits that ``worker`` (of ``workers``) owns: the
    random bits, with the low byte moved to the nearest value that belongs to the worker."""
    _check(worker, workers)
    low = random32 & 0xFF
    owned = low - low % workers + worker
    if owned > 0xFF:  # past the last full round of workers in the byte: the round before
        owned -= workers
    return (random32 & 0xFFFFFF00) | owned


def worker_of_index(index: int, workers: int) -> int:
    """The worker that owns ``index`` (what the kernel's filter computes)."""
    _check(0, workers)
    return (index & 0xFF) % workers


class PeerDirectory:
    """Which worker owns each peer of the interface, and where every destination routes: the
    whole interface's AllowedIPs (all workers' peers), so that a worker routes a packet
    exactly as a single daemon would, longest prefix first, even when a more specific prefix
    belongs to a peer of another worker. Immutable: built once, read by any thread."""

    __slots__ = ("_owners", "_routes", "workers")

    def __init__(self, workers: int, peers: Iterable[tuple[bytes, int, Iterable[Network]]]) -> None:
        """``peers``: (public key, owning worker, allowed IPs) for every peer."""
        _check(0, workers)
        owners: dict[bytes, int] = {}
        routes: AllowedIPs[bytes] = AllowedIPs(index=False)
        for key, worker, prefixes in peers:
            _check(worker, workers)
            owners[key] = worker
            for prefix in prefixes:
                routes.insert(prefix, key)
        self.workers = workers
        self._owners: Mapping[bytes, int] = MappingProxyType(owners)
        self._routes = routes  # never changed after this point

    def __reduce__(self) -> tuple[Any, ...]:
        """Crosses to a worker process as its owners and its routes (the table is rebuilt)."""
        return (_rebuild, (self.workers, dict(self._owners), *self._routes.lookup_tables()))

    def owner(self, key: bytes) -> int | None:
        """The worker that owns peer ``key``; None if no worker does."""
        return self._owners.get(key)

    def route(self, address: bytes) -> bytes | None:
        """The peer a raw 4- or 16-byte destination address routes to."""
        return self._routes.lookup_bytes(address)

    @property
    def owners(self) -> Mapping[bytes, int]:
        return self._owners

    def __len__(self) -> int:
        return len(self._owners)


def _rebuild(
    workers: int,
    owners: dict[bytes, int],
    v4: dict[int, dict[int, bytes]],
    v6: dict[int, dict[int, bytes]],
) -> PeerDirectory:
    directory = PeerDirectory(workers, ())
    directory._owners = MappingProxyType(owners)
    directory._routes = AllowedIPs.from_lookup_tables(v4, v6)
    return directory

"""What makes one pipeline a worker among several: its number, its channels, and the directory.

A worker process runs the same pipeline as a single daemon, given a :class:`Shard`. The stages
that meet the other workers read it: the decrypt stage's device hands out receiver indices that
name this worker and hands on initiations from peers it does not own; the TUN reader hands on
host packets for such peers, and reads what the others handed here
(:mod:`actors.io.handover`). Everything in it is fixed for the worker's life except the
directory, which is replaced whole (never edited) by the worker's control thread whenever the
parent sends a new one.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ..packet import Packet
from ..wireguard.sharding import PeerDirectory

MAX_OWNER_CACHE = 4096  # destinations a TUN reader remembers the worker of

__all__ = [
    "MAX_OWNER_CACHE",
    "DirectoryCell",
    "HandedOver",
    "SetDirectory",
    "Shard",
    "split_by_owner",
]


class DirectoryCell:
    """The current :class:`PeerDirectory` of a worker: one writer (its control thread), read by
    the stages that route (an immutable value swapped whole, like
    :class:`actors.snapshot.ConfigCell`)."""

    def __init__(self, directory: PeerDirectory | None = None) -> None:
        self._lock = threading.Lock()
        self._value = directory

    def publish(self, directory: PeerDirectory | None) -> None:
        with self._lock:
            self._value = directory

    def get(self) -> PeerDirectory | None:
        with self._lock:
            return self._value


@dataclass(frozen=True, eq=False)
class Shard:
    """Worker ``worker`` of ``workers``: it reads ``inbox`` and writes to ``doors[i]`` to reach
    worker ``i`` (its own door is there too, and never used)."""

    worker: int
    workers: int
    inbox: socket.socket
    doors: tuple[socket.socket, ...]
    directory: DirectoryCell

    @property
    def number(self) -> tuple[int, int]:
        return self.worker, self.workers


@dataclass(frozen=True, slots=True)
class SetDirectory:
    """For the decrypt stage: the worker's new directory (already in the cell)."""

    directory: PeerDirectory | None


@dataclass(frozen=True, slots=True)
class TakeEndpoints:
    """For the decrypt stage: the endpoints its peers moved to since the last time asked
    (so that a worker restarted after a death reaches its roaming peers where they are now)."""


@dataclass(frozen=True, slots=True)
class HandedOver:
    """For the decrypt stage: datagrams other workers read for peers this one owns."""

    datagrams: tuple[tuple[bytes, tuple[str, int]], ...]


def split_by_owner(
    packets: Iterable[Packet],
    directory: PeerDirectory,
    worker: int,
    owners: dict[bytes, int | None],
) -> tuple[list[Packet], dict[int, list[Packet]]]:
    """Host packets, routed as the whole interface routes them: those for this worker's peers
    (and those with no route, which the encrypt stage counts), and those for each other
    worker's, each list in the order read. ``owners`` caches destination -> worker for this
    ``directory`` (the caller's own, emptied when the directory changes or it reaches
    :data:`MAX_OWNER_CACHE`): a lookup in the table costs far more than the rest of the work."""
    mine: list[Packet] = []
    theirs: dict[int, list[Packet]] = {}
    route, owner_of = directory.route, directory.owner
    for packet in packets:
        data = packet.data
        dst = data[16:20] if data[0] >> 4 == 4 else data[24:40]
        try:
            owner = owners[dst]
        except KeyError:
            if len(owners) >= MAX_OWNER_CACHE:
                owners.clear()
            key = route(dst)
            owner = owners[dst] = owner_of(key) if key is not None else None
        if owner is None or owner == worker:
            mine.append(packet)
        else:
            theirs.setdefault(owner, []).append(packet)
    return mine, theirs

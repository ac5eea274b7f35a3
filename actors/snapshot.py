"""The current configuration of the device, published for whoever must rebuild it.

The decrypt stage owns the device and is the only writer: after each change it publishes an
immutable :class:`DeviceConfig`. The supervisor reads the latest one when it restarts the stage,
so a restart comes back with what `wg set` configured, not with the start-up file. Only an
immutable value crosses threads here, behind a lock, with one writer: nothing mutable is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from .wireguard.device import Device, PeerConfig

__all__ = ["ConfigCell", "ConfigTracker", "DeviceConfig", "PeerConfigs"]


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    private_key: bytes | None
    peers: Collection[PeerConfig]  # a tuple, or PeerConfigs once the device publishes

    def __repr__(self) -> str:  # never print the key
        return f"DeviceConfig({len(self.peers)} peers)"


class ConfigCell:
    def __init__(self, initial: DeviceConfig) -> None:
        self._lock = threading.Lock()
        self._value = initial

    def publish(self, value: DeviceConfig) -> None:
        with self._lock:
            self._value = value

    def get(self) -> DeviceConfig:
        with self._lock:
            return self._value


class PeerConfigs(Collection[PeerConfig]):
    """An immutable collection of peer configurations, held in chunks.

    Republishing after one change then costs one chunk and the tuple of chunks, not a tuple of
    every peer: at 100,000 peers, building that tuple alone (one reference count touched per
    peer, scattered in memory) took longer than the whole change.
    """

    __slots__ = ("_chunks", "_len")

    def __init__(self, chunks: tuple[tuple[PeerConfig, ...], ...]) -> None:
        self._chunks = chunks
        self._len = sum(len(c) for c in chunks)

    def __iter__(self) -> Iterator[PeerConfig]:
        for chunk in self._chunks:
            yield from chunk

    def __len__(self) -> int:
        return self._len

    def __contains__(self, item: object) -> bool:
        return any(item in chunk for chunk in self._chunks)


CONFIG_CHUNK = 512  # peers per chunk of a published configuration


class ConfigTracker:
    """Builds each published :class:`DeviceConfig` from the last one and what changed since.

    Rebuilding every peer's configuration after each `wg set` costs O(table), which a hub with
    100,000 peers pays on every peer it adds. The decrypt stage instead marks the peers a
    change touched (the request's peers, those whose routes or endpoints moved, those removed)
    and only those are rebuilt, into the chunks that hold them (:class:`PeerConfigs`); the
    other chunks are the last configuration's own immutable tuples. Owned by the decrypt stage's
    thread; only the DeviceConfig it returns leaves it.
    """

    def __init__(self, initial: DeviceConfig) -> None:
        self._chunks: dict[int, dict[bytes, PeerConfig]] = {}
        self._frozen: dict[int, tuple[PeerConfig, ...]] = {}
        self._where: dict[bytes, int] = {}
        self._open = -1  # the chunk new peers go to
        self._next = 0
        self._changed: set[int] = set()
        self._dirty: set[bytes] = set()
        for peer in initial.peers:
            self._put(peer.public_key, peer)
        self._freeze()

    def mark(self, keys: Iterable[bytes]) -> None:
        self._dirty.update(keys)

    def _put(self, key: bytes, config: PeerConfig) -> None:
        where = self._where.get(key)
        if where is None:
            chunk = self._chunks.get(self._open)
            if chunk is None or len(chunk) >= CONFIG_CHUNK:
                self._open, self._next = self._next, self._next + 1
                chunk = self._chunks[self._open] = {}
            where = self._where[key] = self._open
        self._chunks[where][key] = config
        self._changed.add(where)

    def _drop(self, key: bytes) -> None:
        where = self._where.pop(key, None)
        if where is None:
            return
        chunk = self._chunks[where]
        del chunk[key]
        self._changed.add(where)
        if not chunk and where != self._open:
            del self._chunks[where]

    def _freeze(self) -> None:
        for where in self._changed:
            chunk = self._chunks.get(where)
            if chunk:
                self._frozen[where] = tuple(chunk.values())
            else:
                self._frozen.pop(where, None)
        self._changed.clear()
        # Removals can leave many small chunks; past twice the chunks needed, repack them
        # (O(table), paid once per CONFIG_CHUNK removals at the least).
        if len(self._chunks) > 2 * (len(self._where) // CONFIG_CHUNK) + 2:
            peers = [c for chunk in self._chunks.values() for c in chunk.values()]
            self._chunks.clear()
            self._frozen.clear()
            self._where.clear()
            self._open = -1
            for config in peers:
                self._put(config.public_key, config)
            self._freeze()

    def build(self, device: Device) -> DeviceConfig:
        """The configuration now: O(peers marked + chunks)."""
        for key in self._dirty:
            config = device.config_now(key)
            if config is None:
                self._drop(key)
            else:
                self._put(key, config)
        self._dirty.clear()
        self._freeze()
        return DeviceConfig(device.private_key, PeerConfigs(tuple(self._frozen.values())))

"""The current configuration of the device, published for whoever must rebuild it.

The decrypt stage owns the device and is the only writer: after each change it publishes an
immutable :class:`DeviceConfig`. The supervisor reads the latest one when it restarts the stage,
so a restart comes back with what `wg set` configured, not with the start-up file. Only an
immutable value crosses threads here, behind a lock, with one writer: nothing mutable is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from .wireguard.device import Device, PeerConfig

__all__ = ["ConfigCell", "ConfigTracker", "DeviceConfig"]


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    private_key: bytes | None
    peers: tuple[PeerConfig, ...]

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


class ConfigTracker:
    """Builds each published :class:`DeviceConfig` from the last one and what changed since.

    Rebuilding every peer's configuration after each `wg set` costs O(table), which a hub with
    100,000 peers pays on every peer it adds. The decrypt stage instead marks the peers a
    change touched (the request's peers, those whose routes or endpoints moved) and only those
    are rebuilt; the rest are the same immutable :class:`PeerConfig` values as before. Owned by
    the decrypt stage's thread; only the DeviceConfig it returns leaves it.
    """

    def __init__(self, initial: DeviceConfig) -> None:
        self._peers: dict[bytes, PeerConfig] = {p.public_key: p for p in initial.peers}
        self._dirty: set[bytes] = set()
        self._all = False

    def mark(self, keys: Iterable[bytes]) -> None:
        if not self._all:
            self._dirty.update(keys)

    def mark_all(self) -> None:
        self._all = True
        self._dirty.clear()

    def build(self, device: Device) -> DeviceConfig:
        """The configuration now: O(peers marked), plus one copy of the references."""
        if self._all:
            self._peers = {p.public_key: p for p in device.configs()}
        else:
            peers = self._peers
            for key in self._dirty:
                config = device.config_now(key)
                if config is None:
                    peers.pop(key, None)
                else:
                    peers[key] = config
        self._dirty.clear()
        self._all = False
        return DeviceConfig(device.private_key, tuple(self._peers.values()))

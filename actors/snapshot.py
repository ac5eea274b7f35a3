"""The current configuration of the device, published for whoever must rebuild it.

The decrypt stage owns the device and is the only writer: after each change it publishes an
immutable :class:`DeviceConfig`. The supervisor reads the latest one when it restarts the stage,
so a restart comes back with what `wg set` configured, not with the start-up file. Only an
immutable value crosses threads here, behind a lock, with one writer: nothing mutable is shared.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .wireguard.device import PeerConfig

__all__ = ["ConfigCell", "DeviceConfig"]


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

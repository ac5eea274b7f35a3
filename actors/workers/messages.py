"""What the parent and a worker say to each other: immutable values, one per message.

The parent starts a worker with a :class:`WorkerSpec`, then sends it :class:`Request` values,
each answered by one :class:`Reply` with the same number. A worker says :class:`Ready` once its
pipeline runs. Keys cross only inside the spec and the `wg set` requests, never in a repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import resolve
from ..faults import Fault
from ..pipeline_file import StageEntry
from ..stage import Stage
from ..supervisor import Restart, RestartBudget
from ..uapi import SetRequest
from ..wireguard.peer import PeerConfig
from ..wireguard.sharding import PeerDirectory

__all__ = [
    "Configure",
    "Failed",
    "GetState",
    "GetStats",
    "PortableStage",
    "Ready",
    "Rebind",
    "Reload",
    "Reply",
    "Request",
    "SetDirectory",
    "Stop",
    "WorkerSpec",
]


@dataclass(frozen=True, slots=True)
class PortableStage:
    """A pipeline-file entry as it crosses to a worker: the class is found again there, by the
    same ``use`` from the same place (a class loaded from a file has no importable name)."""

    path: str
    name: str
    use: str
    options: Mapping[str, Any]
    restart: Restart
    budget: RestartBudget | None
    capacity: int
    on_error: str
    base: Path | None

    @classmethod
    def of(cls, entry: StageEntry) -> PortableStage:
        return cls(
            entry.path,
            entry.name,
            entry.use,
            dict(entry.options),
            entry.restart,
            entry.budget,
            entry.capacity,
            entry.on_error,
            entry.base,
        )

    def entry(self) -> StageEntry:
        """The entry again; StageLookupError (or TypeError) if ``use`` no longer names a
        stage."""
        found = resolve(self.use, self.base)
        if not issubclass(found, Stage):
            raise TypeError(f"{self.use} is no longer a Stage")
        return StageEntry(
            self.path,
            self.name,
            self.use,
            found,
            dict(self.options),
            self.restart,
            self.budget,
            self.capacity,
            self.on_error,
            self.base,
        )


@dataclass(frozen=True)
class WorkerSpec:
    """Everything worker ``worker`` of ``workers`` is built from. The descriptors are the
    parent's numbers, which the worker inherits as they are."""

    worker: int
    workers: int
    interface: str
    private_key: bytes | None = field(repr=False)
    peers: tuple[PeerConfig, ...]
    directory: PeerDirectory
    inbound: tuple[PortableStage, ...]
    outbound: tuple[PortableStage, ...]
    faults: Mapping[str, Fault]
    udp_fd: int
    udp_offloads: Mapping[str, str]
    fwmark: int
    tun_fd: int
    tun_vnet_hdr: bool
    tun_offloads: Mapping[str, str]
    mtu: int
    inbox_fd: int
    door_fds: tuple[int, ...]
    cpus: str  # WGACTORS_CPUS as the daemon read it
    log_level: str
    switch_interval: float | None
    restarted: bool  # a restart after a death: start the peers' handshakes at once


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker's pipeline runs (``pid`` is the worker's)."""

    pid: int
    placement: str


@dataclass(frozen=True, slots=True)
class Request:
    number: int
    body: Any
    timeout: float  # seconds the worker may wait for its stages


@dataclass(frozen=True, slots=True)
class Reply:
    number: int
    value: Any = None
    failed: Failed | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """Why a request failed: ``kind`` names what the parent raises (``uapi`` with ``code``,
    ``timeout`` or ``busy`` (it could not answer now), ``device`` or ``error``); ``text``
    never holds a key."""

    kind: str
    text: str
    code: int = 0


@dataclass(frozen=True, slots=True)
class GetState:
    """(private key, peer states), for `wg show`."""


@dataclass(frozen=True, slots=True)
class Configure:
    """This worker's share of a `wg set` (:mod:`.model`)."""

    request: SetRequest


@dataclass(frozen=True, slots=True)
class SetDirectory:
    directory: PeerDirectory


@dataclass(frozen=True, slots=True)
class Reload:
    inbound: tuple[PortableStage, ...]
    outbound: tuple[PortableStage, ...]


@dataclass(frozen=True, slots=True)
class GetStats:
    """The worker's stage counters (as :meth:`actors.pipeline.Pipeline.stats`)."""


@dataclass(frozen=True, slots=True)
class GetEndpoints:
    """The endpoints the worker's peers moved to since the last time asked."""


@dataclass(frozen=True, slots=True)
class Rebind:
    """The listen port moved: the descriptor that comes with this message is the group member
    to use from now on (bound to the new port)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop within ``seconds`` and exit."""

    seconds: float

"""The data plane: what the daemon runs to carry packets, whichever way it runs it.

There is more than one way to run the same stages and protocol core: a pipeline of actors
(:class:`actors.pipeline.Pipeline`), one loop on one thread
(:class:`actors.single.SingleThreaded`), and more to come (worker processes). The daemon, the
UAPI controller and the reloader know only the :class:`DataPlane` protocol and the factory
:func:`actors.modes.make_data_plane`: a new way of running is one class and one entry in
:data:`actors.modes.MODES`, and no caller changes.

Every implementation takes the same :class:`DataPlaneSpec` (the start-up configuration, the
kernel objects it is to use, the custom stages), owns the device state behind its own thread(s),
and answers requests for it within a deadline or raises :class:`DataPlaneTimeout`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from .faults import Fault
from .io.tun import TunDevice
from .io.udp import UdpSocket
from .pipeline_file import StageEntry
from .uapi import SetRequest
from .wireguard.device import PeerConfig, PeerState

__all__ = ["DataPlane", "DataPlaneSpec", "DataPlaneTimeout", "ListenSocket"]


class DataPlaneTimeout(TimeoutError):
    """The owner of the device state did not answer within the deadline, or can no longer
    answer (it has stopped): either way the request was not carried out."""


@dataclass(frozen=True)
class DataPlaneSpec:
    """Everything a data plane is built from. The socket and the TUN device are opened (and
    closed) by the daemon; the data plane only reads and writes them."""

    private_key: bytes | None = field(repr=False)  # never in a log line, however it is shown
    peers: tuple[PeerConfig, ...]
    udp: UdpSocket
    tun: TunDevice
    inbound: tuple[StageEntry, ...] = ()
    outbound: tuple[StageEntry, ...] = ()
    # test-only fault injection by stage name (actors.faults); ignored where stages are inline
    faults: Mapping[str, Fault] = field(default_factory=dict)
    # Worker processes: every member of the port's reuseport group and every queue of the
    # interface, in worker order (``udp`` and ``tun`` are the first of each); empty otherwise.
    udp_group: tuple[UdpSocket, ...] = ()
    tun_queues: tuple[TunDevice, ...] = ()
    placement: str = ""  # WGACTORS_CPUS, for a data plane that places its own processes


class ListenSocket(Protocol):
    """The listen port as the UAPI controller changes it (one socket, or a whole group)."""

    @property
    def port(self) -> int: ...

    @property
    def fwmark(self) -> int: ...

    def rebind(self, port: int) -> None: ...

    def set_mark(self, fwmark: int) -> None: ...


class DataPlane(Protocol):
    """A running data plane, as the daemon, the UAPI controller and the reloader see it.

    Every method may be called from any thread; the implementation hands the work to the
    thread that owns the state. ``start`` and ``stop`` are called once each, by the daemon.
    """

    mode: ClassVar[str]  # how `status` names it
    # The interpreter's thread switch interval it wants (None: leave the interpreter's default).
    switch_interval: ClassVar[float | None]
    # Whether it places its own threads (worker processes each place theirs): then the daemon
    # leaves its own process where the kernel puts it, and workers inherit no confinement.
    places_itself: ClassVar[bool]

    def default_placement(self) -> str:
        """The CPU placement that suits it when WGACTORS_CPUS is unset (actors.placement),
        judged when the daemon starts: whether threads run in parallel can depend on what has
        been loaded by then."""

    def start(self) -> None:
        """Start carrying packets; returns once running (the work goes on in other threads)."""

    def stop(self, deadline: float) -> None:
        """Stop reading, let what is queued drain, stop everything, all by ``deadline`` (a
        ``time.monotonic()`` value): what has not stopped by then is abandoned, on threads that
        do not keep the process alive."""

    def failure(self) -> str | None:
        """Why it can no longer carry traffic (the daemon then exits with status 3), or None."""

    def reload(self, inbound: Sequence[StageEntry], outbound: Sequence[StageEntry]) -> str:
        """Swap the custom stages for these (validated) entries; what changed, in one line."""

    def device_state(self, timeout: float) -> tuple[bytes | None, tuple[PeerState, ...]]:
        """The private key and every peer's state, for `wg show` and reloads."""

    def configure(self, request: SetRequest, timeout: float) -> None:
        """Apply a validated `wg set` request (the socket's options excepted: the controller
        sets listen port and fwmark on the socket itself)."""

    def stats(self) -> list[dict[str, Any]]:
        """A snapshot of the counters, one entry per stage (or loop), for `status`."""

    def breakdown(self) -> list[dict[str, Any]]:
        """Per worker process, what the last :meth:`stats` found (empty: one process)."""

    @property
    def sockets(self) -> ListenSocket:
        """The listen port's options, as `wg set listen-port` and `fwmark` change them."""

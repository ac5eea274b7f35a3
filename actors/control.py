"""What `wg` asks for, answered by whoever owns the state.

The UAPI server hands each request to the controller, which hands it to the data plane
(:class:`actors.dataplane.DataPlane`). The data plane passes it to the owner of the device state:
in the actor pipeline the decrypt stage, asked through its mailbox (its stable address); in
single-threaded mode the loop, which runs it between batches. Either way the state is only ever
touched by its owner. Listen port and fwmark are properties of the
UDP socket, which the controller changes itself; requests are serialised, as in wireguard-go.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Iterator

from .dataplane import DataPlane, DataPlaneTimeout, ListenSocket
from .placement import KERNEL_PLACEMENT
from .uapi import EADDRINUSE, EIO, DeviceStatus, PeerStatus, SetRequest, UapiError, format_get_parts
from .wireguard.constants import MAX_PEERS
from .wireguard.device import PeerState

__all__ = ["ASK_TIMEOUT", "Controller"]

ASK_TIMEOUT = 5.0  # seconds a `wg` request waits for the stage that owns the device
# ...plus this much per peer the request names (set) or the device may hold (get): a 100,000-
# peer `wg setconf` or `wg show` is seconds of honest work, not a stage that stopped answering.
ASK_TIME_PER_PEER = 100e-6


def _set_timeout(request: SetRequest) -> float:
    return ASK_TIMEOUT + ASK_TIME_PER_PEER * len(request.peers)


_GET_TIMEOUT = ASK_TIMEOUT + ASK_TIME_PER_PEER * MAX_PEERS


def _status(
    private_key: bytes | None, peers: tuple[PeerState, ...], udp: ListenSocket
) -> Iterator[str]:
    """The reply in parts, each peer's made only when it is sent (a hub's is tens of MB)."""
    return format_get_parts(
        DeviceStatus(
            private_key,
            udp.port,
            udp.fwmark,
            (
                PeerStatus(
                    p.public_key,
                    p.preshared_key,
                    p.endpoint,
                    p.last_handshake_ns,
                    p.rx_bytes,
                    p.tx_bytes,
                    p.persistent_keepalive,
                    p.allowed_ips,
                )
                for p in peers
            ),
        )
    )


class Controller:
    """Answers `wg` for one data plane: reads and changes go to whoever owns the device state
    (:class:`actors.dataplane.DataPlane`), the socket's own options are set here."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.udp = plane.sockets
        self._lock = threading.Lock()
        # Where the threads run (actors.placement), for `status`; the daemon sets it.
        self.placement: Callable[[], str] = lambda: KERNEL_PLACEMENT

    def state(self) -> tuple[bytes | None, tuple[PeerState, ...]]:
        """The device's key and peers, from their owner."""
        with self._lock:
            return self._state()

    def _state(self) -> tuple[bytes | None, tuple[PeerState, ...]]:
        try:
            return self.plane.device_state(_GET_TIMEOUT)
        except DataPlaneTimeout as e:
            raise UapiError(EIO, str(e)) from None

    def get(self) -> Iterator[str]:
        with self._lock:
            private_key, peers = self._state()
            return _status(private_key, peers, self.udp)

    def set(self, request: SetRequest) -> None:
        with self._lock:
            self._socket_options(request)
            try:
                self.plane.configure(request, _set_timeout(request))
            except DataPlaneTimeout as e:
                raise UapiError(EIO, str(e)) from None

    def stats(self) -> str:
        try:
            stages = self.plane.stats()
        except DataPlaneTimeout as e:
            raise UapiError(EIO, str(e)) from None
        report: dict[str, object] = {"mode": self.plane.mode, "cpus": self.placement()}
        report["stages"] = stages
        workers = self.plane.breakdown()
        if workers:
            report["workers"] = workers
        return json.dumps(report, default=str)

    def _socket_options(self, request: SetRequest) -> None:
        if request.listen_port is not None:
            try:
                self.udp.rebind(request.listen_port)
            except OSError as e:
                code = EADDRINUSE if e.errno == errno.EADDRINUSE else EIO
                raise UapiError(code, f"cannot listen on port {request.listen_port}") from None
        if request.fwmark is not None:
            try:
                self.udp.set_mark(request.fwmark)
            except OSError:
                raise UapiError(EADDRINUSE, "cannot set fwmark") from None

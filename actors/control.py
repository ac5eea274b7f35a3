"""What `wg` asks for, answered by whoever owns the state.

The UAPI server hands each request to a controller. In the actor pipeline the device belongs to
the decrypt stage, so the controller asks that stage through its mailbox (its stable address);
in single-threaded mode it hands a function to the loop, which runs it between batches. Either
way the state is only ever touched by its owner. Listen port and fwmark are properties of the
UDP socket, which the controller changes itself; requests are serialised, as in wireguard-go.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pykka

from .io.udp import UdpSocket
from .placement import KERNEL_PLACEMENT
from .stages.decrypt import Configure, GetDeviceState
from .uapi import EADDRINUSE, EIO, DeviceStatus, PeerStatus, SetRequest, UapiError, format_get_parts
from .wireguard.constants import MAX_PEERS
from .wireguard.device import PeerState

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .single import SingleThreaded

__all__ = ["ASK_TIMEOUT", "PipelineController", "SingleController"]

ASK_TIMEOUT = 5.0  # seconds a `wg` request waits for the stage that owns the device
# ...plus this much per peer the request names (set) or the device may hold (get): a 100,000-
# peer `wg setconf` or `wg show` is seconds of honest work, not a stage that stopped answering.
ASK_TIME_PER_PEER = 100e-6


def _set_timeout(request: SetRequest) -> float:
    return ASK_TIMEOUT + ASK_TIME_PER_PEER * len(request.peers)


_GET_TIMEOUT = ASK_TIMEOUT + ASK_TIME_PER_PEER * MAX_PEERS


def _status(
    private_key: bytes | None, peers: tuple[PeerState, ...], udp: UdpSocket
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


class _Base:
    def __init__(self, udp: UdpSocket) -> None:
        self.udp = udp
        self._lock = threading.Lock()
        # Where the threads run (actors.placement), for `status`; the daemon sets it.
        self.placement: Callable[[], str] = lambda: KERNEL_PLACEMENT

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


class PipelineController(_Base):
    def __init__(self, pipeline: Pipeline, udp: UdpSocket) -> None:
        super().__init__(udp)
        self.pipeline = pipeline

    def _ask(self, message: Any, timeout: float) -> Any:
        try:
            return self.pipeline.mailboxes["decrypt"].ask(message, timeout)
        except (pykka.Timeout, pykka.ActorDeadError):
            raise UapiError(EIO, "the WireGuard stage did not answer") from None

    def state(self) -> tuple[bytes | None, tuple[PeerState, ...]]:
        """The device's key and peers, from the stage that owns them."""
        with self._lock:
            return self._ask(GetDeviceState(), _GET_TIMEOUT)  # type: ignore[no-any-return]

    def get(self) -> Iterator[str]:
        with self._lock:
            private_key, peers = self._ask(GetDeviceState(), _GET_TIMEOUT)
            return _status(private_key, peers, self.udp)

    def set(self, request: SetRequest) -> None:
        with self._lock:
            self._socket_options(request)
            self._ask(Configure(request), _set_timeout(request))

    def stats(self) -> str:
        return json.dumps(
            {"mode": "actors", "cpus": self.placement(), "stages": self.pipeline.stats()},
            default=str,
        )


class SingleController(_Base):
    def __init__(self, loop: SingleThreaded, udp: UdpSocket) -> None:
        super().__init__(udp)
        self.loop = loop

    def _call(self, fn: Callable[[], Any], timeout: float = ASK_TIMEOUT) -> Any:
        try:
            return self.loop.call(fn, timeout)
        except TimeoutError:
            raise UapiError(EIO, "the loop did not answer") from None

    def state(self) -> tuple[bytes | None, tuple[PeerState, ...]]:
        with self._lock:
            return self._call(self.loop.device_state, _GET_TIMEOUT)  # type: ignore[no-any-return]

    def get(self) -> Iterator[str]:
        with self._lock:
            private_key, peers = self._call(self.loop.device_state, _GET_TIMEOUT)
            return _status(private_key, peers, self.udp)

    def set(self, request: SetRequest) -> None:
        with self._lock:
            self._socket_options(request)
            self._call(lambda: self.loop.configure(request), _set_timeout(request))

    def stats(self) -> str:
        return json.dumps(
            {
                "mode": "single-threaded",
                "cpus": self.placement(),
                "stages": self._call(self.loop.stats),
            }
        )

"""The single-threaded data plane's life on its own thread, and the controller in front of any
data plane: requests are answered by the owner or refused at once, never left to time out.

A datagram socket pair stands in for the TUN device's descriptor (as in test_tun_aio): the loop
only polls it, and nothing is written to it here."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from actors.control import Controller
from actors.dataplane import DataPlaneSpec, DataPlaneTimeout
from actors.io.batching import MAX_BATCH
from actors.io.tun import READ_SIZE
from actors.io.tun_aio import AioReader
from actors.io.udp import UdpSocket
from actors.pipeline_file import StageEntry, parse_pipeline
from actors.single import SingleThreaded
from actors.uapi import EIO, SetRequest, UapiError

WAIT = 10.0  # seconds any bounded wait below may take
FAILING_START = '[[inbound]]\nuse = "custom_stages:FailOnStart"\n'


class _PairTun:
    """The few things the loop asks of a TUN device, over one end of a socket pair."""

    def __init__(self) -> None:
        self.offloads: dict[str, str] = {}
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)

    def fileno(self) -> int:
        return self.ours.fileno()

    def make_reader(self) -> AioReader:
        return AioReader(self.fileno(), MAX_BATCH, READ_SIZE)

    def frames(self, datas: list[bytes]) -> list[tuple[bytes, int, int]]:
        return [(d, 1, len(d)) for d in datas]

    def read_batch(self, *_: Any) -> list[Any]:
        return []

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def plane_factory() -> Iterator[Any]:
    made: list[tuple[SingleThreaded, UdpSocket, _PairTun]] = []

    def make(inbound: Sequence[StageEntry] = ()) -> SingleThreaded:
        udp, tun = UdpSocket(0), _PairTun()
        spec = DataPlaneSpec(None, (), udp, tun, tuple(inbound))  # type: ignore[arg-type]
        plane = SingleThreaded(spec)
        made.append((plane, udp, tun))
        return plane

    yield make
    for plane, udp, tun in made:
        plane.stop(time.monotonic() + WAIT)
        udp.close()
        tun.close()


def test_the_loop_answers_on_its_thread_and_refuses_at_once_once_stopped(
    plane_factory: Any,
) -> None:
    plane = plane_factory()
    plane.start()
    assert plane.device_state(WAIT) == (None, ())
    assert plane.failure() is None
    assert plane.stats()[0]["name"] == "single"
    plane.stop(time.monotonic() + WAIT)
    assert plane.failure() is None  # asked to stop: not a failure
    with pytest.raises(DataPlaneTimeout, match="stopped"):
        plane.device_state(WAIT)  # at once, not after WAIT
    assert plane.stats()[0]["name"] == "single"  # read directly once the loop has ended


def test_a_stage_that_cannot_start_ends_the_loop_with_the_reason(plane_factory: Any) -> None:
    inbound, _ = parse_pipeline(FAILING_START)
    plane = plane_factory(inbound)
    plane.start()
    assert plane._thread is not None
    plane._thread.join(WAIT)
    reason = plane.failure()
    assert reason is not None and "failonstart" in reason and "on_start" in reason
    with pytest.raises(DataPlaneTimeout, match="stopped"):
        plane.configure(SetRequest(), WAIT)


class _SilentPlane:
    """A data plane whose owner never answers."""

    mode = "silent"

    def __init__(self, udp: UdpSocket) -> None:
        self.sockets = udp

    def breakdown(self) -> list[dict[str, Any]]:
        return []

    def device_state(self, timeout: float) -> Any:
        raise DataPlaneTimeout("the owner did not answer")

    def configure(self, request: SetRequest, timeout: float) -> None:
        raise DataPlaneTimeout("the owner did not answer")

    def stats(self) -> list[dict[str, Any]]:
        raise DataPlaneTimeout("the owner did not answer")


def test_the_controller_turns_an_unanswered_request_into_eio() -> None:
    udp = UdpSocket(0)
    try:
        controller = Controller(_SilentPlane(udp))  # type: ignore[arg-type]
        for request in (controller.get, controller.state, controller.stats):
            with pytest.raises(UapiError) as failed:
                request()
            assert failed.value.errno == EIO
        with pytest.raises(UapiError) as failed:
            controller.set(SetRequest())
        assert failed.value.errno == EIO
    finally:
        udp.close()

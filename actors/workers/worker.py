"""One worker process: the whole actor pipeline, for the peers this worker owns.

Started by the pool (:mod:`.pool`) as ``python -m actors.workers.worker FD``, never by hand:
FD is its end of the control channel, and every other descriptor it uses (its TUN queue, its
member of the UDP group, its hand-over inbox, the others' doors) is inherited with the number
its :class:`~.messages.WorkerSpec` gives. It builds today's pipeline on them with a
:class:`~.shard.Shard`, says :class:`~.messages.Ready`, and serves the parent's requests until
told to stop, or until the channel closes (the parent is gone, however it ended): either way it
stops its stages within :data:`STOP_SECONDS` and exits.

Its own failure (a built-in stage's restart budget spent) ends the process with status 3; the
parent sees the death and restarts it, within the pool's budget.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import socket
import sys
import threading
import time
from typing import Any

from loguru import logger

from ..dataplane import DataPlaneSpec, DataPlaneTimeout
from ..failure import describe
from ..io.tun import TunDevice
from ..io.udp import UdpSocket
from ..log import setup_logging
from ..pipeline import Pipeline
from ..placement import Placement
from ..uapi import UapiError
from ..wireguard.actions import HandshakeWanted
from ..wireguard.peer import DeviceError
from .channel import Channel, ChannelClosed
from .messages import (
    Configure,
    Failed,
    GetEndpoints,
    GetState,
    GetStats,
    Ready,
    Rebind,
    Reload,
    Reply,
    Request,
    SetDirectory,
    Stop,
    WorkerSpec,
)
from .shard import DirectoryCell, Shard

__all__ = ["EXIT_FAILED", "main"]

EXIT_FAILED = 3  # the pipeline failed for good
MAX_REQUESTS = 4  # questions (state, stats) answered at once; more are told "busy"
MAX_CHANGES = 64  # changes waiting for the one thread that applies them, in order
STOP_SECONDS = 1.0  # seconds to stop in when the parent is gone
FAILURE_POLL = 0.1  # seconds between looks at the pipeline's health
# After a restart, handshakes started with the peers that had sessions, this many at a time,
# one batch per RESTART_HANDSHAKE_PAUSE seconds: a hub's worker must not flood its own stage.
RESTART_HANDSHAKE_BATCH = 256
RESTART_HANDSHAKE_PAUSE = 0.05
PR_SET_PDEATHSIG = 1
_CHANGES = (Configure, SetDirectory, Reload, Rebind)


class Worker:
    """The worker's main thread: builds the pipeline, then serves the control channel."""

    def __init__(self, spec: WorkerSpec, control: Channel) -> None:
        self.spec = spec
        self.control = control
        self.slots = threading.BoundedSemaphore(MAX_REQUESTS)
        # Changes are applied by one thread, in the order they came: two of them never race,
        # and none is refused for want of a free slot.
        self.changes: queue.Queue[tuple[Request, list[int]]] = queue.Queue(MAX_CHANGES)
        self.stopping = threading.Event()
        udp = UdpSocket.adopt(
            spec.udp_fd,
            offloads=dict(spec.udp_offloads),
            fwmark=spec.fwmark,
            reuseport=spec.workers > 1,
        )
        tun = TunDevice.adopt(
            spec.tun_fd,
            spec.interface,
            vnet_hdr=spec.tun_vnet_hdr,
            offloads=dict(spec.tun_offloads),
            mtu=spec.mtu,
            multi_queue=spec.workers > 1,
        )
        self.udp = udp
        shard = Shard(
            spec.worker,
            spec.workers,
            socket.socket(fileno=spec.inbox_fd),
            tuple(socket.socket(fileno=fd) for fd in spec.door_fds),
            DirectoryCell(spec.directory),
        )
        self.pipeline = Pipeline(
            DataPlaneSpec(
                private_key=spec.private_key,
                peers=spec.peers,
                udp=udp,
                tun=tun,
                inbound=tuple(s.entry() for s in spec.inbound),
                outbound=tuple(s.entry() for s in spec.outbound),
                faults=dict(spec.faults),
            ),
            shard=shard,
        )
        self.placement = Placement(
            spec.cpus,
            default=self.pipeline.default_placement(),
            worker=(spec.worker, spec.workers),
        )

    def run(self) -> int:
        spec = self.spec
        if spec.switch_interval is not None:
            sys.setswitchinterval(spec.switch_interval)
        self.placement.start()  # before any stage thread: they inherit it
        self.pipeline.start()
        threading.Thread(target=self._watch, name="wga:health", daemon=True).start()
        threading.Thread(target=self._apply_changes, name="wga:changes", daemon=True).start()
        self.control.send(Ready(os.getpid(), self.placement.description))
        logger.debug("worker {} of {} up: {} peer(s)", spec.worker, spec.workers, len(spec.peers))
        if spec.restarted:
            threading.Thread(target=self._rehandshake, name="wga:rehandshake", daemon=True).start()
        return self._serve()

    def _rehandshake(self) -> None:
        """Our peers' sessions died with the previous process: start new ones now rather than
        when traffic next needs them (their side may keep sending on the old ones)."""
        decrypt = self.pipeline.mailboxes["decrypt"]
        keys = [p.public_key for p in self.spec.peers if p.endpoint is not None]
        for start in range(0, len(keys), RESTART_HANDSHAKE_BATCH):
            if self.stopping.is_set():
                return
            for key in keys[start : start + RESTART_HANDSHAKE_BATCH]:
                decrypt.tell(HandshakeWanted(key))
            self.stopping.wait(RESTART_HANDSHAKE_PAUSE)

    def _serve(self) -> int:
        while True:
            try:
                message, fds = self.control.receive()
            except ChannelClosed:
                logger.debug("control channel closed: stopping")
                return self._stop(STOP_SECONDS)
            if not isinstance(message, Request):
                _close(fds)
                continue
            if isinstance(message.body, Stop):
                status = self._stop(message.body.seconds)
                self._reply(Reply(message.number, None))
                return status
            if isinstance(message.body, _CHANGES):
                try:
                    self.changes.put_nowait((message, fds))
                except queue.Full:  # the parent waits for each change: it cannot be this far on
                    _close(fds)
                    self._reply(Reply(message.number, failed=Failed("error", "changes backlog")))
                continue
            if not self.slots.acquire(blocking=False):
                _close(fds)
                self._reply(Reply(message.number, failed=Failed("busy", "worker busy")))
                continue
            threading.Thread(
                target=self._answer, args=(message, fds), name="wga:request", daemon=True
            ).start()

    def _apply_changes(self) -> None:
        while not self.stopping.is_set():
            try:
                request, fds = self.changes.get(timeout=FAILURE_POLL)
            except queue.Empty:
                continue
            self._reply(self._outcome(request, fds))

    def _answer(self, request: Request, fds: list[int]) -> None:
        try:
            reply = self._outcome(request, fds)
        finally:
            self.slots.release()
        self._reply(reply)

    def _outcome(self, request: Request, fds: list[int]) -> Reply:
        try:
            reply = Reply(request.number, self._carry_out(request.body, fds, request.timeout))
        except DataPlaneTimeout as e:
            reply = Reply(request.number, failed=Failed("timeout", str(e)))
        except UapiError as e:
            reply = Reply(request.number, failed=Failed("uapi", e.message, e.errno))
        except DeviceError as e:
            reply = Reply(request.number, failed=Failed("device", str(e)))
        except Exception as e:
            logger.opt(exception=e).debug("request {} failed", type(request.body).__name__)
            reply = Reply(request.number, failed=Failed("error", describe(e)))
        return reply

    def _carry_out(self, body: Any, fds: list[int], timeout: float) -> Any:
        pipeline = self.pipeline
        if isinstance(body, GetState):
            return pipeline.device_state(timeout)
        if isinstance(body, Configure):
            pipeline.configure(body.request, timeout)
            return None
        if isinstance(body, SetDirectory):
            pipeline.set_directory(body.directory, timeout)
            return None
        if isinstance(body, GetStats):
            return pipeline.stats()
        if isinstance(body, GetEndpoints):
            return pipeline.take_endpoints(timeout)
        if isinstance(body, Reload):
            return pipeline.reload(
                [s.entry() for s in body.inbound], [s.entry() for s in body.outbound]
            )
        if isinstance(body, Rebind):
            if len(fds) != 1:
                _close(fds)
                raise ValueError("a rebind comes with one socket")
            self.udp.take(socket.socket(fileno=fds[0]))
            return None
        _close(fds)
        raise TypeError(f"unknown request {type(body).__name__}")

    def _reply(self, reply: Reply) -> None:
        try:
            self.control.send(reply)
        except ChannelClosed:
            pass  # the parent is gone; the main thread sees it too
        except Exception as e:  # an answer that cannot travel: say so instead
            failed = Failed("error", f"answer not sendable: {type(e).__name__}")
            with contextlib.suppress(ChannelClosed):
                self.control.send(Reply(reply.number, failed=failed))

    def _watch(self) -> None:
        while not self.stopping.wait(FAILURE_POLL):
            failure = self.pipeline.failure()
            if failure is not None:
                logger.error("worker {} failed: {}", self.spec.worker, failure)
                self._stop(STOP_SECONDS)
                os._exit(EXIT_FAILED)

    def _stop(self, seconds: float) -> int:
        self.stopping.set()
        self.pipeline.stop(time.monotonic() + seconds)
        self.placement.stop()
        return 0


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _die_with(parent: int) -> bool:
    """Ask the kernel to end this process when the parent's thread that started it ends (the
    parent's main or supervising thread, which live as long as it does); False if the parent
    is gone already. The closed control channel ends a worker too; this also ends one stuck in
    start-up, which never reads the channel."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not all(a.isdigit() for a in args):
        print("this is started by `wgactors --workers`, not by hand", file=sys.stderr)
        return 2
    if not _die_with(int(args[1])):
        return 1
    # The parent alone ends a worker (a Stop, or its own end closing the channel): systemd's
    # SIGTERM to every process of the unit, or a Ctrl-C to the terminal's group, must not
    # look like a worker's death to a parent that is itself shutting down.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    control = Channel(socket.socket(fileno=int(args[0])))
    try:
        spec, fds = control.receive()
    except ChannelClosed:
        return 1
    _close(fds)
    if not isinstance(spec, WorkerSpec):
        return 2
    setup_logging(name=f"{spec.interface}/{spec.worker}", level=spec.log_level)
    try:
        worker = Worker(spec, control)
        status = worker.run()
    except Exception as e:
        logger.opt(exception=e).debug("worker {} did not start", spec.worker)
        logger.error("worker {} did not start: {}", spec.worker, describe(e))
        status = EXIT_FAILED
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())

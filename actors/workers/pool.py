"""Worker processes as one data plane: the parent's side (:class:`WorkerPool`).

The daemon opens the interface with one queue per worker and the listen port as a reuseport
group with one member per worker (:func:`actors.io.steering.open_group`), and keeps them all;
the pool adds a hand-over channel per worker (:func:`actors.io.handover.open_channels`) and
starts each worker as a child process on its own share (:mod:`.worker`). Because the parent
holds every kernel object, a worker that dies (even by SIGKILL) is replaced on the same queue,
socket position and inbox: the others never notice, and only its own peers handshake again.

To the outside it is one daemon. A `wg set` is applied to the configuration's model here and
shared out (:mod:`.model`): each worker gets the part about its peers, new peers go to the
worker with the fewest, and every worker gets the new directory when owners or routes changed.
`wg show` joins the workers' peers in the interface's order; `status` sums their stages
(:mod:`.totals`) and lists each worker. SIGHUP's reload reaches every worker.

Restarts are bounded by :data:`WORKER_BUDGET`; past it :meth:`WorkerPool.failure` reports, and
the daemon exits with status 3, as it does when a stage's budget is spent.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from loguru import logger

from ..dataplane import DataPlaneSpec, DataPlaneTimeout
from ..failure import describe
from ..io.handover import Channel as HandOverChannel
from ..io.handover import open_channels
from ..io.steering import rebind_group
from ..io.tun_steering import SteeringUnavailable, TunSteering
from ..io.udp import UdpSocket
from ..log import current_level
from ..pipeline import GIL_SWITCH_INTERVAL, ReloadError
from ..pipeline_file import StageEntry
from ..placement import ALL
from ..supervisor import RestartBudget
from ..uapi import SetRequest, UapiError
from ..wireguard.peer import DeviceError, PeerConfig, PeerState
from .channel import Channel, ChannelClosed, channel_pair
from .messages import (
    Configure,
    Failed,
    GetEndpoints,
    GetState,
    GetStats,
    PortableStage,
    Ready,
    Rebind,
    Reload,
    Reply,
    Request,
    SetDirectory,
    Stop,
    WorkerSpec,
)
from .model import InterfaceModel
from .totals import sum_stages

__all__ = ["START_TIMEOUT", "WORKERS", "WORKER_BUDGET", "WorkerPool"]

WORKERS = "workers"  # the mode's name
START_TIMEOUT = 30.0  # seconds a worker may take to report ready (imports, its pipeline)
WORKER_BUDGET = RestartBudget(max_restarts=5, within=60.0)  # then the daemon exits 3
ASK_TIMEOUT = 5.0  # seconds a stats request waits for a worker
RELOAD_TIMEOUT = 10.0  # seconds a worker may take to swap its custom stages
DIRECTORY_TIMEOUT = 5.0  # seconds a worker may take to take a new directory
REAP_TIMEOUT = 2.0  # seconds to wait for a dead worker's exit status
REAP_AFTER_KILL = 0.1  # seconds for a killed worker's exit status at shutdown
READY_POLL = 0.05  # seconds between looks for a starting worker's exit
# seconds between asks for the endpoints peers roamed to, kept for a restart of their worker
ENDPOINT_SYNC_INTERVAL = 2.0
ENDPOINT_SYNC_TIMEOUT = 1.0  # seconds it waits for them: a death waits for it to finish
STOP_REPLY_SHARE = 0.8  # of a stop's time, what the workers get to stop in
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where `actors` is importable from


class _Slot:
    """One request in flight: filled by the link's reader thread."""

    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Reply | None = None


class _Link:
    """The parent's side of one worker process: the process, its channel, what it was asked."""

    def __init__(
        self, worker: int, proc: subprocess.Popen[bytes], channel: Channel, on_exit: Any
    ) -> None:
        self.worker = worker
        self.proc = proc
        self.channel = channel
        self.ready = threading.Event()
        self.exited = threading.Event()  # its channel closed: it is gone, or going
        self.placement = ""
        self.alive = True
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._pending: dict[int, _Slot] = {}
        self._next = 0
        threading.Thread(target=self._read, name=f"wga:link{worker}", daemon=True).start()

    def send(self, body: Any, timeout: float, fds: tuple[int, ...] = ()) -> _Slot:
        slot = _Slot()
        with self._lock:
            if not self.alive:
                raise DataPlaneTimeout(f"worker {self.worker} is restarting")
            self._next += 1
            number = self._next
            self._pending[number] = slot
        try:
            self.channel.send(Request(number, body, timeout), fds)
        except ChannelClosed:
            with self._lock:
                self._pending.pop(number, None)
            raise DataPlaneTimeout(f"worker {self.worker} is restarting") from None
        return slot

    def wait(self, slot: _Slot, timeout: float) -> Any:
        if not slot.done.wait(max(0.0, timeout)):
            raise DataPlaneTimeout(f"worker {self.worker} did not answer")
        reply = slot.reply
        if reply is None:
            raise DataPlaneTimeout(f"worker {self.worker} stopped")
        if reply.failed is not None:
            raise _error(self.worker, reply.failed)
        return reply.value

    def ask(self, body: Any, timeout: float, fds: tuple[int, ...] = ()) -> Any:
        return self.wait(self.send(body, timeout, fds), timeout + ASK_TIMEOUT)

    def _read(self) -> None:
        try:
            while True:
                message, fds = self.channel.receive()
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                if isinstance(message, Reply):
                    with self._lock:
                        slot = self._pending.pop(message.number, None)
                    if slot is not None:
                        slot.reply = message
                        slot.done.set()
                elif isinstance(message, Ready):
                    self.placement = message.placement
                    self.ready.set()
        except ChannelClosed:
            pass
        with self._lock:
            self.alive = False
            pending, self._pending = self._pending, {}
        for slot in pending.values():
            slot.done.set()
        self.channel.close()
        self.exited.set()
        self._on_exit(self)

    def wait_ready(self, timeout: float) -> bool:
        """Whether it said Ready within ``timeout``; False at once if it exited first."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(min(READY_POLL, max(0.0, deadline - time.monotonic()))):
            if self.exited.is_set() or time.monotonic() >= deadline:
                return self.ready.is_set()
        return True

    def kill(self) -> None:
        """End it now (its death comes back through the pool's queue, as any other)."""
        with contextlib.suppress(OSError):
            self.proc.kill()


def _error(worker: int, failed: Failed) -> Exception:
    if failed.kind == "uapi":
        return UapiError(failed.code, failed.text)
    if failed.kind == "device":
        return DeviceError(failed.text)
    if failed.kind in ("timeout", "busy"):
        return DataPlaneTimeout(f"worker {worker}: {failed.text}")
    return ReloadError(f"worker {worker}: {failed.text}")


class GroupSockets:
    """The listen port's options for the UAPI controller, applied to every member of the group
    and, for a new port, passed to each worker (its descriptor follows by ``SCM_RIGHTS``)."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    @property
    def port(self) -> int:
        return self._pool.group[0].port

    @property
    def fwmark(self) -> int:
        return self._pool.group[0].fwmark

    def rebind(self, port: int) -> None:
        if port == self._pool.group[0].port and port != 0:
            return
        self._pool.rebind(port)

    def set_mark(self, fwmark: int) -> None:
        for member in self._pool.group:
            member.set_mark(fwmark)


class WorkerPool:
    """The data plane as worker processes (:class:`actors.dataplane.DataPlane`)."""

    mode: ClassVar[str] = WORKERS
    switch_interval: ClassVar[float | None] = None  # the parent's threads carry no packets
    places_itself: ClassVar[bool] = True

    def __init__(self, spec: DataPlaneSpec) -> None:
        group = spec.udp_group or (spec.udp,)
        queues = spec.tun_queues or (spec.tun,)
        if len(group) != len(queues):
            raise ValueError(f"{len(group)} sockets for {len(queues)} TUN queues")
        self.spec = spec
        self.workers = len(group)
        self.group: list[UdpSocket] = list(group)
        self.queues = list(queues)
        self.model = InterfaceModel(self.workers, spec.private_key, spec.peers)
        self.inbound = spec.inbound
        self.outbound = spec.outbound
        self.channels: list[HandOverChannel] = open_channels(self.workers)
        self.links: list[_Link | None] = [None] * self.workers
        self.restarts = [0] * self.workers
        self._sockets = GroupSockets(self)
        self._config = threading.Lock()  # the model: one change (or restart) at a time
        self._stopping = threading.Event()
        self._deaths: queue.Queue[_Link] = queue.Queue()
        self._restart_times: collections.deque[float] = collections.deque()
        self._failure: str | None = None
        self._breakdown: list[dict[str, Any]] = []
        # the kernel steers host packets to their owner's queue where it lets us; else the
        # TUN readers hand them over (either way, they reach the owner)
        self.steering: TunSteering | None = None
        self.steering_note = "handed over by the worker that reads them"

    @property
    def sockets(self) -> GroupSockets:
        return self._sockets

    # -- processes

    def start(self) -> None:
        with self._config:
            self._start_steering()
            for worker in range(self.workers):
                self._spawn(worker, restarted=False)
        deadline = time.monotonic() + START_TIMEOUT
        for link in self.links:
            assert link is not None
            if not link.wait_ready(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(
                    f"worker {link.worker} did not start within {START_TIMEOUT:g} s "
                    f"({'it exited' if not link.alive else 'no answer'}; see its log lines)"
                )
        threading.Thread(target=self._supervise, name="wga:workers", daemon=True).start()

    def _spawn(self, worker: int, *, restarted: bool) -> None:
        """Start worker ``worker`` on its share (called with the model's lock held, so that
        the peers it starts from and the changes sent to it later follow one another)."""
        spec = self.spec
        udp, tun = self.group[worker], self.queues[worker]
        parent_end, child_end = channel_pair()
        started = False
        try:
            value = WorkerSpec(
                worker=worker,
                workers=self.workers,
                interface=tun.name,
                private_key=self.model.private_key,
                peers=self.model.worker_peers(worker),
                directory=self.model.directory(),
                inbound=tuple(PortableStage.of(e) for e in self.inbound),
                outbound=tuple(PortableStage.of(e) for e in self.outbound),
                faults=dict(spec.faults),
                udp_fd=udp.fileno(),
                udp_offloads=dict(udp.offloads),
                fwmark=udp.fwmark,
                tun_fd=tun.fileno(),
                tun_vnet_hdr=tun.vnet_hdr,
                tun_offloads=dict(tun.offloads),
                mtu=tun.mtu,
                inbox_fd=self.channels[worker].inbox.fileno(),
                door_fds=tuple(c.door.fileno() for c in self.channels),
                cpus=spec.placement,
                log_level=current_level(),
                switch_interval=GIL_SWITCH_INTERVAL,
                restarted=restarted,
            )
            fds = (child_end.fileno(), udp.fileno(), tun.fileno(), *self._channel_fds())
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
            )
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "actors.workers.worker",
                    str(child_end.fileno()),
                    str(os.getpid()),
                ],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # signals meant for the daemon's group are its own
            )
            started = True
        finally:
            child_end.close()
            if not started:
                parent_end.close()
        link = _Link(worker, proc, Channel(parent_end), self._deaths.put)
        self.links[worker] = link
        with contextlib.suppress(ChannelClosed):  # it died at once: its reader reports that
            link.channel.send(value)
        logger.debug("worker {} started (pid {})", worker, proc.pid)

    def _start_steering(self) -> None:
        try:
            self.steering = TunSteering(self.queues[0].fileno())
        except SteeringUnavailable as e:
            logger.info(
                "host packets are not steered by the kernel ({}): the worker that reads one "
                "hands it to the owner of its peer",
                e.strerror or e,
            )
            return
        self._steer()
        self.steering_note = "steered to their owner's queue by the kernel"

    def _steer(self) -> None:
        """Bring the kernel's steering maps in line with the model (after the workers have
        the change, so that a packet steered to one finds its peer there)."""
        if self.steering is None:
            return
        owners = self.model.owners
        table = {
            network: owners[key]
            for key, peer in self.model.peers.items()
            for network in peer.allowed_ips
        }
        try:
            self.steering.apply(table)
        except OSError as e:  # e.g. the map is full: the hand-over still gets them there
            logger.warning("kernel steering of host packets stopped ({}): handing over", e)
            self.steering.close()
            self.steering = None
            self.steering_note = "handed over by the worker that reads them"

    def _channel_fds(self) -> list[int]:
        return [fd for c in self.channels for fd in (c.inbox.fileno(), c.door.fileno())]

    def _supervise(self) -> None:
        """Restart workers that die, within the budget (the pool's own thread). A bug met here
        must not end the supervision: it is logged, and the daemon gives up on its workers
        (exit 3) rather than run on without anyone to restart them."""
        try:
            self._supervise_loop()
        except Exception as e:
            logger.opt(exception=e).debug("worker supervision failed")
            self._failure = f"the workers' supervision failed: {describe(e)}"

    def _supervise_loop(self) -> None:
        next_sync = time.monotonic() + ENDPOINT_SYNC_INTERVAL
        while not self._stopping.is_set():
            try:
                link = self._deaths.get(timeout=max(0.0, next_sync - time.monotonic()))
            except queue.Empty:
                with contextlib.suppress(DataPlaneTimeout):  # one restarting: next time
                    self._sync_endpoints()
                next_sync = time.monotonic() + ENDPOINT_SYNC_INTERVAL
                continue
            if self._stopping.is_set() or self.links[link.worker] is not link:
                continue
            worker = link.worker
            try:
                status = link.proc.wait(REAP_TIMEOUT)
            except subprocess.TimeoutExpired:  # its channel closed but it lives on: end it
                link.proc.kill()
                status = link.proc.wait()
            how = (
                f"was killed by {signal.Signals(-status).name}"
                if status < 0
                else f"exited ({status})"
            )
            if not self._spend_budget():
                self._failure = (
                    f"worker {worker} {how}, and {WORKER_BUDGET.max_restarts} workers were "
                    f"restarted within {WORKER_BUDGET.within:g} s"
                )
                return
            peers = len(self.model.worker_peers(worker))
            logger.warning("worker {} {}: restarting it with its {} peer(s)", worker, how, peers)
            self.restarts[worker] += 1
            with self._config:
                if self._stopping.is_set():
                    return
                try:
                    self._spawn(worker, restarted=True)
                except OSError as e:
                    self._failure = f"cannot restart worker {worker}: {e.strerror or e}"
                    return
            new = self.links[worker]
            assert new is not None
            if not new.wait_ready(START_TIMEOUT):
                new.kill()  # a worker that cannot start is one more death, within the budget

    def _sync_endpoints(self) -> None:
        """Keep the model's endpoints where the peers roamed to (a worker killed by SIGKILL
        cannot say), so that its restart reaches them there."""
        moved = self._each(GetEndpoints(), ENDPOINT_SYNC_TIMEOUT, tolerant=True, grace=0.0)
        with self._config:
            for worker, endpoints in enumerate(moved):
                if endpoints:
                    self.model.moved(worker, endpoints)
                    logger.debug("worker {}: {} peer endpoint(s) kept", worker, len(endpoints))

    def _spend_budget(self) -> bool:
        now = time.monotonic()
        times = self._restart_times
        while times and now - times[0] > WORKER_BUDGET.within:
            times.popleft()
        if len(times) >= WORKER_BUDGET.max_restarts:
            return False
        times.append(now)
        return True

    def stop(self, deadline: float) -> None:
        self._stopping.set()  # no restart begins after this
        # a restart under way finishes first, so that its worker is stopped too
        locked = self._config.acquire(timeout=max(0.0, deadline - time.monotonic()) / 2)
        try:
            links = [link for link in self.links if link is not None]
        finally:
            if locked:
                self._config.release()
        seconds = max(0.0, deadline - time.monotonic()) * STOP_REPLY_SHARE
        for link in links:
            with contextlib.suppress(DataPlaneTimeout):
                link.send(Stop(seconds), seconds)
        for link in links:
            with contextlib.suppress(subprocess.TimeoutExpired):
                link.proc.wait(max(0.0, deadline - time.monotonic()))
        for link in links:  # what did not stop in time is ended, all at once, then reaped
            if link.proc.poll() is None:
                link.kill()
        for link in links:
            with contextlib.suppress(subprocess.TimeoutExpired):
                link.proc.wait(REAP_AFTER_KILL)
        for channel in self.channels:
            channel.inbox.close()
            channel.door.close()
        if self.steering is not None:
            self.steering.close()

    def failure(self) -> str | None:
        return self._failure

    def default_placement(self) -> str:
        return ALL  # the parent's threads; each worker places its own (WorkerSpec.cpus)

    # -- the workers, all at once

    def _each(
        self, body: Any, timeout: float, *, tolerant: bool = False, grace: float = ASK_TIMEOUT
    ) -> list[Any]:
        """Ask every worker; their answers in order (a worker that is restarting: None; with
        ``tolerant``, one that does not answer in time as well). Each may take ``timeout`` for
        its stages, and ``grace`` more for the way there and back."""
        asked: list[tuple[_Link, Any] | None] = []
        for link in self.links:
            try:
                asked.append((link, link.send(body, timeout)) if link is not None else None)
            except DataPlaneTimeout:
                asked.append(None)
        deadline = time.monotonic() + timeout + grace
        out: list[Any] = []
        for entry in asked:
            if entry is None:
                out.append(None)
                continue
            link, slot = entry
            try:
                out.append(link.wait(slot, deadline - time.monotonic()))
            except DataPlaneTimeout:
                if link.alive and not tolerant:
                    raise
                out.append(None)  # it died meanwhile, or is too slow to wait for
            except Exception:
                if not tolerant:
                    raise
                out.append(None)  # it could not answer this: shown as unresponsive
        return out

    def device_state(self, timeout: float) -> tuple[bytes | None, tuple[PeerState, ...]]:
        # The model's lock only while asking and copying: a slow answer must not hold up a
        # restart or a change.
        with self._config:
            asked: list[tuple[_Link, _Slot] | None] = []
            for link in self.links:
                try:
                    asked.append((link, link.send(GetState(), timeout)) if link else None)
                except DataPlaneTimeout:
                    asked.append(None)
            configured = [self.model.worker_peers(w) for w in range(self.workers)]
            order = self.model.order()
            private_key = self.model.private_key
        deadline = time.monotonic() + timeout + ASK_TIMEOUT
        peers: list[PeerState] = []
        for worker, entry in enumerate(asked):
            answer = None
            if entry is not None:
                link, slot = entry
                try:
                    answer = link.wait(slot, deadline - time.monotonic())
                except DataPlaneTimeout:
                    if link.alive:
                        raise
            if answer is not None:
                peers += answer[1]
            else:  # restarting: its peers as configured, with no sessions yet
                peers += (_unconnected(p) for p in configured[worker])
        peers.sort(key=lambda p: order.get(p.public_key, len(order)))
        return private_key, tuple(peers)

    def configure(self, request: SetRequest, timeout: float) -> None:
        with self._config:
            shares = self.model.split(request)
            asked = []
            for link, share in zip(self.links, shares.requests, strict=True):
                if link is None or share is None:
                    continue
                # one that is restarting starts from the model, which has the change
                with contextlib.suppress(DataPlaneTimeout):
                    asked.append((link, link.send(Configure(share), timeout)))
            self._await(asked, timeout, "its share of a change")
            if shares.directory_changed:
                directory = self.model.directory()
                asked = []
                for link in self.links:
                    if link is not None:
                        with contextlib.suppress(DataPlaneTimeout):
                            slot = link.send(SetDirectory(directory), DIRECTORY_TIMEOUT)
                            asked.append((link, slot))
                self._await(asked, DIRECTORY_TIMEOUT, "the new directory")
                self._steer()

    @staticmethod
    def _await(asked: list[tuple[_Link, _Slot]], timeout: float, what: str) -> None:
        """Wait for the workers to apply a change. One that refuses it no longer matches the
        model: it is restarted from the model (which has the change). One that is slow still
        applies it, in order, and the caller hears of the timeout."""
        deadline = time.monotonic() + timeout + ASK_TIMEOUT
        late: DataPlaneTimeout | None = None
        for link, slot in asked:
            try:
                link.wait(slot, deadline - time.monotonic())
            except DataPlaneTimeout as e:
                if link.alive and slot.reply is None:
                    late = late or e
                elif link.alive:
                    link.kill()
            except Exception as e:  # it refused: it no longer matches the model
                logger.warning(
                    "worker {} refused {} ({}): restarting it from the configuration",
                    link.worker,
                    what,
                    describe(e),
                )
                link.kill()
        if late is not None:
            raise late

    def rebind(self, port: int) -> None:
        """Move the group to ``port`` (`wg set listen-port`), with no restart in between: each
        worker takes its member's new socket; one that does not is restarted, and inherits it."""
        with self._config:
            rebind_group(self.group, port)
            asked = []
            for worker, link in enumerate(self.links):
                if link is not None:
                    with contextlib.suppress(DataPlaneTimeout):
                        fds = (self.group[worker].fileno(),)
                        asked.append((link, link.send(Rebind(), ASK_TIMEOUT, fds)))
            try:
                self._await(asked, ASK_TIMEOUT, "the new listen port")
            except DataPlaneTimeout:
                for link, _ in asked:
                    link.kill()

    def reload(self, inbound: Sequence[StageEntry], outbound: Sequence[StageEntry]) -> str:
        body = Reload(
            tuple(PortableStage.of(e) for e in inbound),
            tuple(PortableStage.of(e) for e in outbound),
        )
        with self._config:
            try:
                answers = self._each(body, RELOAD_TIMEOUT)
            except Exception:
                # Some workers may have swapped: put the stages that still run everywhere back,
                # and restart any worker that will not take them (it starts from them).
                back = Reload(
                    tuple(PortableStage.of(e) for e in self.inbound),
                    tuple(PortableStage.of(e) for e in self.outbound),
                )
                for link in self.links:
                    if link is not None:
                        try:
                            link.ask(back, RELOAD_TIMEOUT)
                        except Exception:
                            link.kill()
                raise
            self.inbound, self.outbound = tuple(inbound), tuple(outbound)
        said = [a for a in answers if a is not None]
        return said[0] if said else "stages unchanged"

    def stats(self) -> list[dict[str, Any]]:
        answers = self._each(GetStats(), ASK_TIMEOUT, tolerant=True)
        breakdown: list[dict[str, Any]] = []
        per_worker: list[list[dict[str, Any]]] = []
        for worker, (link, stages) in enumerate(zip(self.links, answers, strict=True)):
            per_worker.append(stages or [])
            breakdown.append(
                {
                    "worker": worker,
                    "pid": link.proc.pid if link is not None else None,
                    "alive": link is not None and link.alive,
                    "unresponsive": stages is None and link is not None and link.alive,
                    "restarts": self.restarts[worker],
                    "peers": self.model.loads()[worker],
                    "cpus": link.placement if link is not None else "",
                    "cpu_seconds": _cpu_seconds(link.proc.pid) if link is not None else None,
                    "host_packets": self.steering_note,
                    "stages": stages or [],
                }
            )
        self._breakdown = breakdown
        return sum_stages(per_worker)

    def breakdown(self) -> list[dict[str, Any]]:
        """Each worker's figures, as the last :meth:`stats` found them."""
        return self._breakdown


def _unconnected(peer: PeerConfig) -> PeerState:
    return PeerState(
        peer.public_key,
        peer.preshared_key,
        peer.endpoint,
        0,
        0,
        0,
        peer.persistent_keepalive,
        peer.allowed_ips,
    )


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None

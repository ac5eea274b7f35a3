"""The single-threaded mode: the same work in one loop on one thread.

This is the shape the actor pipeline replaced (connlib's loop before it moved TUN I/O to a
thread of its own), kept as a data plane of its own: it uses the same protocol core (both
halves, wired by :class:`~actors.wireguard.Tunnel`) and the same effects layer
(:mod:`actors.io.effects`) as the pipeline, so comparing the two measures exactly what putting
the stages on their own threads buys. Custom stages live under the same failure policy
(:mod:`actors.failure`): a packet error costs the packet (or passes it on, with ``on_error =
"pass"``) and never ends the loop; ``on_error = "restart"`` builds a fresh instance. A stage
whose ``on_start`` fails at start-up has no supervisor here to retry it: that ends the loop,
with the reason in :attr:`SingleThreaded.escalation_reason` (exit status 3). A fresh instance
that cannot start does not: the one it was to replace carries on, and the failure is logged.
"""

from __future__ import annotations

import queue
import select
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, ClassVar, TypeVar

from loguru import logger

from .dataplane import DataPlaneSpec, DataPlaneTimeout
from .failure import describe
from .io.effects import Transmitter, TunDelivery
from .io.udp import UdpSocket
from .io.udp_gso import GroReceiver
from .packet import Packet
from .pipeline_file import StageEntry, same_entry
from .placement import ALL
from .runner import Runner
from .snapshot import ConfigCell, DeviceConfig
from .stages.base import BATCH_SIZE
from .stages.ticker import TICK_INTERVAL
from .uapi import SetRequest
from .wireguard import Tunnel
from .wireguard.actions import Action
from .wireguard.apply import apply_set
from .wireguard.device import PeerState

__all__ = ["MAX_PENDING_REQUESTS", "STOP_TIMEOUT", "SingleThreaded"]

MAX_PENDING_REQUESTS = 16  # requests from other threads (UAPI, reload) waiting for the loop
STOP_TIMEOUT = 5.0  # seconds stop() waits for the loop to finish its batch and stop its stages
RELOAD_TIMEOUT = 10.0  # seconds a reload waits for the loop to run it
STATS_TIMEOUT = 5.0  # seconds a `status` query waits for the loop

_T = TypeVar("_T")


class SingleThreaded:
    """The data plane as one loop on one thread (:class:`actors.dataplane.DataPlane`)."""

    mode: ClassVar[str] = "single-threaded"
    switch_interval: ClassVar[float | None] = None
    places_itself: ClassVar[bool] = False

    def __init__(self, spec: DataPlaneSpec, *, batch_size: int = BATCH_SIZE) -> None:
        private_key, peers, udp, tun = spec.private_key, spec.peers, spec.udp, spec.tun
        inbound, outbound = spec.inbound, spec.outbound
        now = time.monotonic()
        # What Stage.peer_for reads; republished after each `wg set`, as the decrypt stage does.
        self.config = ConfigCell(DeviceConfig(private_key, tuple(peers)))
        # The same user stages, called inline through the same runner as the pipeline's: built
        # unstarted, their hooks run by this loop.
        self.entries = {"inbound": list(inbound), "outbound": list(outbound)}
        self.inbound = [_build(e, self.config) for e in inbound]
        self.outbound = [_build(e, self.config) for e in outbound]
        self.escalation_reason = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.tunnel = Tunnel(private_key, peers, now=now)
        self.udp = udp
        self.tun = tun
        self.batch_size = batch_size
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        # The same batched system calls as the actor stages, so the comparison is fair.
        self.reader = tun.make_reader()
        self.delivery = TunDelivery(tun)
        self.receiver = udp.make_receiver()
        self.transmitter = Transmitter(udp)
        # Requests from other threads (UAPI, reload): run by the loop, between batches.
        self._requests: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue(
            MAX_PENDING_REQUESTS
        )

    # -- the DataPlane protocol

    @property
    def sockets(self) -> UdpSocket:
        return self.udp

    def breakdown(self) -> list[dict[str, Any]]:
        return []

    def default_placement(self) -> str:
        return ALL  # one busy thread has no neighbour to share a cache with: the kernel places it

    def start(self) -> None:
        """Run the loop on a thread of its own, so that the daemon's main thread serves
        signals and watches, as it does for every data plane."""
        # A daemon thread, like the pipeline's: a stage stuck in `process` or `on_stop` must not
        # keep the process alive once stop() has given up on it.
        self._thread = threading.Thread(target=self._main, name="wga:loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self.run(self._stop)
        except Exception as e:  # a bug of ours: the daemon exits 3 with the reason
            logger.opt(exception=e).debug("the loop failed")
            self._escalate(f"the loop failed: {describe(e)}")
        finally:
            self._refuse_pending()

    def _refuse_pending(self) -> None:
        """Answer every request still queued: the loop will never run them, and each caller
        would otherwise wait out its whole deadline."""
        while True:
            try:
                _, future = self._requests.get_nowait()
            except queue.Empty:
                return
            future.set_exception(DataPlaneTimeout("the loop has stopped"))

    def stop(self, deadline: float) -> None:
        """Ask the loop to stop and wait for it until ``deadline`` (``time.monotonic()``),
        never longer than :data:`STOP_TIMEOUT`; then abandon it."""
        self._stop.set()
        if self._thread is not None:
            wait = min(STOP_TIMEOUT, max(0.0, deadline - time.monotonic()))
            self._thread.join(wait)
            if self._thread.is_alive():
                logger.warning("the loop did not stop in {:.2g} s; abandoning it", wait)

    def failure(self) -> str | None:
        if self.escalation_reason:
            return self.escalation_reason
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            return "the loop ended unexpectedly"
        return None

    def device_state(self, timeout: float) -> tuple[bytes | None, tuple[PeerState, ...]]:
        return self.call(self._device_state, timeout)

    def configure(self, request: SetRequest, timeout: float) -> None:
        self.call(lambda: self._configure(request), timeout)

    def reload(self, inbound: Sequence[StageEntry], outbound: Sequence[StageEntry]) -> str:
        """Swap the custom stages, on the loop's thread, between batches."""
        return self.call(lambda: self._swap_stages(inbound, outbound), RELOAD_TIMEOUT)

    def call(self, fn: Callable[[], _T], timeout: float) -> _T:
        """Run ``fn`` on the loop's thread and return its result (DataPlaneTimeout if it does
        not get there in time)."""
        thread = self._thread
        if self._stop.is_set() or (thread is not None and not thread.is_alive()):
            raise DataPlaneTimeout("the loop has stopped")
        future: Future[_T] = Future()
        try:
            self._requests.put((fn, future), timeout=timeout)
        except queue.Full:
            raise DataPlaneTimeout("the loop did not answer") from None
        if thread is not None and not thread.is_alive():  # it ended while we queued
            self._refuse_pending()
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise DataPlaneTimeout("the loop did not answer") from None

    def _serve_requests(self) -> None:
        for _ in range(MAX_PENDING_REQUESTS):
            try:
                fn, future = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except Exception as e:
                future.set_exception(e)

    def _configure(self, request: SetRequest) -> None:
        now = time.monotonic()
        self._carry_out(
            self.tunnel.apply(lambda device: apply_set(device, request, now), now, time.time())
        )
        device = self.tunnel.device
        self.config.publish(DeviceConfig(device.private_key, tuple(device.configs())))

    def _device_state(self) -> tuple[bytes | None, tuple[PeerState, ...]]:
        device = self.tunnel.device
        return device.private_key, tuple(device.peer_states())

    def _carry_out(self, actions: Sequence[Action], arrival: float | None = None) -> None:
        """Send the datagrams, pass the delivered packets through the inbound stages to the
        TUN device, and send what those stages answered the peer."""
        delivered: list[Packet] = []
        self.transmitter.carry_out(actions, self.drops, delivered, [])
        if delivered:
            self._inbound(delivered, arrival, 0)

    def _inbound(self, packets: list[Packet], arrival: float | None, first: int) -> None:
        """Packets through the inbound stages from ``first`` on, then to the TUN device; what
        those stages answered goes to the peer."""
        replies: list[Packet] = []
        for i in range(first, len(self.inbound)):
            packets = self._through(self.inbound[i], packets, replies, arrival)
        self._write([p.data for p in packets])
        if replies:  # an inbound stage's answers go to the peer; they yield only datagrams
            self._carry_out(self.tunnel.send_batch(replies, time.monotonic(), time.time()))

    def _outbound(self, packets: list[Packet], arrival: float, first: int) -> None:
        """Packets through the outbound stages from ``first`` on, then encrypted and sent;
        what those stages answered goes to the local host."""
        answers: list[Packet] = []
        for i in range(first, len(self.outbound)):
            packets = self._through(self.outbound[i], packets, answers, arrival)
        if answers:  # an outbound stage's answers go to the local host
            self._write([reply.data for reply in answers])
        self._carry_out(self.tunnel.send_batch(packets, time.monotonic(), time.time()))

    def _write(self, datas: list[bytes]) -> None:
        self.delivery.write(datas, self.drops, self.counters)

    def run(self, stop: threading.Event) -> None:
        started: list[Runner] = []
        running = False
        try:
            for stage in self.inbound + self.outbound:
                if not self._start(stage):
                    return
                started.append(stage)
            running = True
            self._loop(stop)
        finally:
            for stage in self.inbound + self.outbound if running else started:
                stage.stop()
            self.reader.close()
            self.delivery.close()

    def _start(self, stage: Runner) -> bool:
        try:
            stage.start()
        except Exception as e:
            self._escalate(f"stage {stage.name} failed in on_start: {describe(e)}")
            return False
        return True

    def _escalate(self, reason: str) -> None:
        if not self.escalation_reason:
            self.escalation_reason = reason
            logger.error("giving up: {}", reason)

    def _through(
        self,
        runner: Runner,
        packets: Sequence[Packet],
        replies: list[Packet],
        arrival: float | None,
    ) -> list[Packet]:
        """One stage's work on a batch, inline, through the same runner as the pipeline's
        (so the same verdicts and failure policy); its replies are added to ``replies``."""
        out, answers = runner.run(tuple(packets), time.monotonic() if arrival is None else arrival)
        runner.passed_on(len(out), sum(len(p.data) for p in out))
        if answers:
            runner.replied(len(answers), 0)
            replies.extend(answers)
        return out

    def _tick(self, now: float) -> None:
        """The custom stages' on_tick, where due, between batches; what a tick passes on
        continues down its path from the next stage."""
        for path in ("inbound", "outbound"):
            chain = self.inbound if path == "inbound" else self.outbound
            for i, runner in enumerate(chain):
                out = runner.tick(now)
                if out is None:
                    continue
                passed, replies = out
                runner.passed_on(len(passed), sum(len(p.data) for p in passed))
                if replies:
                    runner.replied(len(replies), 0)
                if path == "inbound":
                    if replies:
                        self._carry_out(self.tunnel.send_batch(replies, now, time.time()))
                    if passed:
                        self._inbound(passed, now, i + 1)
                else:
                    if replies:
                        self._write([reply.data for reply in replies])
                    if passed:
                        self._outbound(passed, now, i + 1)

    def _swap_stages(self, inbound: Sequence[StageEntry], outbound: Sequence[StageEntry]) -> str:
        """Unchanged entries keep their instance and state, others get a started new one; what
        changed, in one line. Runs on the loop's thread. All or nothing: every new instance of
        both paths starts before any old one stops, and if one cannot start, those started are
        stopped again and the running stages stay as they were."""
        plans: list[tuple[str, list[StageEntry], list[Runner], list[str], list[Runner]]] = []
        started: list[Runner] = []
        try:
            for path, new in (("inbound", list(inbound)), ("outbound", list(outbound))):
                old = self.entries[path]
                live = self.inbound if path == "inbound" else self.outbound
                kept = {e.name: (e, s) for e, s in zip(old, live, strict=True)}
                stages: list[Runner] = []
                words: list[str] = []
                retired: list[Runner] = []
                for entry in new:
                    previous = kept.pop(entry.name, None)
                    if previous is not None and same_entry(previous[0], entry):
                        stages.append(previous[1])
                        continue
                    fresh = _build(entry, self.config)
                    fresh.start()
                    started.append(fresh)
                    stages.append(fresh)
                    if previous is not None:
                        retired.append(previous[1])
                    words.append(("~" if previous else "+") + entry.name)
                for _, gone in kept.values():
                    retired.append(gone)
                    words.append("-" + gone.name)
                plans.append((path, new, stages, words, retired))
        except BaseException:
            for runner in started:
                runner.stop()
            raise
        changes = []
        for path, new, stages, words, retired in plans:
            old_names = [e.name for e in self.entries[path]]
            for runner in retired:
                runner.stop()
            self.entries[path] = new
            (self.inbound if path == "inbound" else self.outbound)[:] = stages
            if words or old_names != [e.name for e in new]:
                now = " -> ".join(e.name for e in new) or "none"
                changes.append(f"{path} {' '.join(words)} (now {now})")
        return "; ".join(changes) or "stages unchanged"

    def _loop(self, stop: threading.Event) -> None:
        poller = select.poll()
        poller.register(self.udp.fileno(), select.POLLIN)
        poller.register(self.tun.fileno(), select.POLLIN)
        udp_fd, tun_fd = self.udp.fileno(), self.tun.fileno()
        tunnel = self.tunnel
        next_tick = time.monotonic()
        while not stop.is_set() and not self.escalation_reason:
            for fd, _ in poller.poll(TICK_INTERVAL * 1000):
                now, wall = time.monotonic(), time.time()
                if fd == udp_fd:
                    batch = self.udp.read_batch(self.batch_size, self.drops, self.receiver)
                    self.counters["datagrams_in"] += len(batch)
                    self._carry_out(tunnel.receive_batch(batch, now, wall), now)
                elif fd == tun_fd:
                    too_big: list[Packet] = []
                    packets = self.tun.read_batch(
                        self.reader.max_batch, self.drops, too_big, self.reader, self.counters
                    )
                    if too_big:
                        self._write([reply.data for reply in too_big])
                    self.counters["packets_in"] += len(packets)
                    self._outbound(packets, now, 0)
            self._serve_requests()
            now = time.monotonic()
            self._tick(now)
            if now >= next_tick:
                next_tick = now + TICK_INTERVAL
                self._carry_out(tunnel.update_timers(now, time.time()))

    def _udp_counts(self) -> dict[str, int]:
        counts = self.transmitter.offload_counts()
        if isinstance(self.receiver, GroReceiver):
            counts["udp_gro_receives"] = self.receiver.runs_received
            counts["udp_gro_datagrams"] = self.receiver.runs_datagrams
        return counts

    def stats(self) -> list[dict[str, Any]]:
        """The counters, read on the loop's thread while it runs (here once it has ended)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._stats()
        return self.call(self._stats, STATS_TIMEOUT)

    def _stats(self) -> list[dict[str, Any]]:
        drops = Counter(self.drops)
        drops.update(self.tunnel.device.drops)
        drops.update(self.tunnel.encryptor.drops)
        out: list[dict[str, Any]] = [
            {
                "name": "single",
                **dict(self.counters),
                "drops": dict(drops),
                "offloads": ",".join(
                    f"{k}={v}" for k, v in {**self.tun.offloads, **self.udp.offloads}.items()
                ),
                **self._udp_counts(),
            }
        ]
        out += [s.snapshot().as_dict() for s in self.inbound + self.outbound]
        return out


def _build(entry: StageEntry, config: ConfigCell) -> Runner:
    """The runner of a stage called inline (not started)."""
    return Runner(
        lambda: entry.cls(**entry.options),
        entry.name,
        path=entry.path,
        on_error=entry.on_error,
        routes=config.get,
    )

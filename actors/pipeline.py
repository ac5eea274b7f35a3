"""Wiring: the stages, their mailboxes, the edges between them, and their supervisor.

    UDP socket -> UdpIngress -> Decrypt -> [inbound stages] -> TunWriter -> TUN
    TUN -> TunReader -> [outbound stages] -> Encrypt -> UDP socket
                 Ticker -> Decrypt (timers);  Decrypt <-> Encrypt (keys, events: control lane)

Every mailbox is created here, once, and every stage is given the mailboxes of its neighbours:
a mailbox is a stage's stable address, so the supervisor can restart a stage without anyone
re-wiring anything. Edges out of the kernel readers block (backpressure reaches the kernel
queues); the decrypt/encrypt exchange travels in control lanes, which never wait on data, so the
one cycle in the graph cannot deadlock.

Start order is downstream first, readers last, so nothing is read before there is somewhere to
put it. Shutdown stops the readers, lets the queues drain (bounded), then stops the rest in
reverse start order, each stop bounded in time.

:meth:`Pipeline.reload` swaps the custom stages of a running pipeline behind their mailboxes:
new stages start before anyone sends to them, neighbours are re-pointed through their control
lanes, removed stages drain before they stop. The interface, the socket, the protocol sessions
and every queued packet stay where they are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import pykka
from loguru import logger

from .dataplane import DataPlaneSpec, DataPlaneTimeout
from .faults import Fault
from .io.udp import UdpSocket
from .mailbox import DEFAULT_CAPACITY, Mailbox
from .pipeline_file import StageEntry, same_entry
from .placement import default_policy
from .snapshot import ConfigCell, DeviceConfig
from .stages import Decrypt, Encrypt, GetStats, Outlet, Ticker, TunReader, TunWriter, UdpIngress
from .stages.base import BATCH_SIZE, Rewire
from .stages.custom import start_stage
from .stages.decrypt import Configure, GetDeviceState
from .stages.ticker import TickTargets
from .supervisor import (
    DEFAULT_BACKOFF,
    DEFAULT_BUDGET,
    AddChild,
    Backoff,
    ChildSpec,
    GetSupervisorStats,
    RemoveChild,
    ReplaceChild,
    RestartBudget,
    Shutdown,
    StopChildren,
    Strategy,
    Supervision,
    Supervisor,
    UpdateSpec,
)
from .uapi import SetRequest
from .wireguard.device import PeerState
from .wireguard.sharding import PeerDirectory
from .workers.shard import SetDirectory, Shard, TakeEndpoints

__all__ = ["DRAIN_TIMEOUT", "GIL_SWITCH_INTERVAL", "READERS", "Pipeline", "ReloadError"]

DRAIN_TIMEOUT = 2.0  # seconds to let queued packets flow out on shutdown (or a reload's removal)
DRAIN_SHARE = 0.5  # the part of what is left of a stop's deadline that the drain may take
MIN_WAIT = 0.001  # seconds a stop still waits for an answer once its deadline is past
ASK_TIMEOUT = 2.0  # seconds a stats query waits for a stage
READERS = ("udp_ingress", "tun_reader", "ticker")
RELOAD_TIMEOUT = 5.0  # seconds each step of a reload may wait for a stage or the supervisor
# Each path of custom stages: (its key in the pipeline file, the stage that feeds it, the stage
# it feeds).
PATHS = (("inbound", "decrypt", "tun_writer"), ("outbound", "tun_reader", "encrypt"))
# Seconds between the interpreter's forced GIL hand-offs: a stage that has work waits at most
# this long for a busy neighbour (5 ms by default, too long for a hop; see actors.io.batching).
GIL_SWITCH_INTERVAL = 0.0002


class ReloadError(RuntimeError):
    """A reload step did not complete (the pipeline keeps what was done so far)."""


class Pipeline:
    """The data plane as a pipeline of supervised actors (:class:`actors.dataplane.DataPlane`)."""

    mode: ClassVar[str] = "actors"
    switch_interval: ClassVar[float | None] = GIL_SWITCH_INTERVAL
    places_itself: ClassVar[bool] = False

    def __init__(
        self,
        spec: DataPlaneSpec,
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = BATCH_SIZE,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        budget: RestartBudget = DEFAULT_BUDGET,
        backoff: Backoff = DEFAULT_BACKOFF,
        shard: Shard | None = None,
    ) -> None:
        """``shard``: this pipeline is one worker process of several (:mod:`actors.workers`)."""
        self.shard = shard
        # The start-up configuration only seeds the cell; from then on the decrypt stage owns
        # the device and publishes each change there.
        self.config = ConfigCell(DeviceConfig(spec.private_key, spec.peers))
        self.udp = spec.udp
        self.tun = spec.tun
        self.capacity = capacity
        self.batch_size = batch_size
        self.chains: dict[str, tuple[StageEntry, ...]] = {
            "inbound": spec.inbound,
            "outbound": spec.outbound,
        }
        self.strategy = strategy
        self.budget = budget
        self.backoff = backoff
        self.faults: dict[str, Fault] = dict(spec.faults)
        self.mailboxes: dict[str, Mailbox] = {}
        self.order: list[str] = []
        self.supervisor: pykka.ActorRef[Supervisor] | None = None
        self.tick_targets = TickTargets()
        self.escalated = threading.Event()
        self.escalation_reason = ""

    @property
    def inbound(self) -> tuple[StageEntry, ...]:
        return self.chains["inbound"]

    @property
    def outbound(self) -> tuple[StageEntry, ...]:
        return self.chains["outbound"]

    def _mailbox(self, name: str, capacity: int | None = None) -> Mailbox:
        if name in self.mailboxes:
            raise ValueError(f"two stages are named {name!r}")
        box = Mailbox(name, capacity or self.capacity)
        self.mailboxes[name] = box
        return box

    def _supervision_args(self, name: str, supervision: Supervision) -> dict[str, Any]:
        fault = self.faults.get(name)
        if fault is not None:
            fault = fault.for_incarnation(supervision.incarnation)
        return {"supervision": supervision, "fault": fault}

    def specs(self) -> list[ChildSpec]:
        """The child specs, in start order (downstream first, readers last)."""
        specs: list[ChildSpec] = []
        tun_writer = self._mailbox("tun_writer")
        decrypt = self._mailbox("decrypt")
        encrypt = self._mailbox("encrypt")
        specs.append(
            ChildSpec(
                "tun_writer",
                lambda box, sup: TunWriter.start(
                    box, self.tun, **self._supervision_args("tun_writer", sup)
                ),
                tun_writer,
            )
        )
        first_inbound = self._chain(specs, self.inbound, tun_writer)
        specs.append(
            ChildSpec(
                "encrypt",
                lambda box, sup: Encrypt.start(
                    box,
                    self.udp,
                    decrypt,
                    self.config,
                    sharded=self.shard is not None,
                    **self._supervision_args("encrypt", sup),
                ),
                encrypt,
            )
        )
        specs.append(self._feeder_spec("decrypt", first_inbound))
        first_outbound = self._chain(specs, self.outbound, encrypt)
        self._mailbox("tun_reader")
        specs.append(self._feeder_spec("tun_reader", first_outbound))
        specs.append(
            ChildSpec(
                "udp_ingress",
                lambda box, sup: UdpIngress.start(
                    box,
                    self.udp,
                    Outlet(decrypt),
                    self.batch_size,
                    **self._supervision_args("udp_ingress", sup),
                ),
                self._mailbox("udp_ingress"),
            )
        )
        specs.append(
            ChildSpec(
                "ticker",
                lambda box, sup: Ticker.start(
                    box,
                    decrypt,
                    stages=self.tick_targets,
                    **self._supervision_args("ticker", sup),
                ),
                self._mailbox("ticker"),
            )
        )
        return specs

    def _feeder_spec(self, name: str, first: Mailbox) -> ChildSpec:
        """The spec of a built-in stage that feeds a chain of custom stages starting at
        ``first`` (rebuilt when a reload changes that first stage)."""
        out = Outlet(first)
        if name == "decrypt":

            def start(box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
                encrypt = self.mailboxes["encrypt"]
                kw = self._supervision_args(name, sup)
                return Decrypt.start(
                    box, self.udp, out, encrypt, self.config, shard=self.shard, **kw
                )

        else:
            icmp = Outlet(self.mailboxes["tun_writer"], block=False)  # too-big: never wait

            def start(box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
                return TunReader.start(
                    box,
                    self.tun,
                    out,
                    self.batch_size,
                    icmp,
                    shard=self.shard,
                    decrypt=self.mailboxes["decrypt"],
                    **self._supervision_args(name, sup),
                )

        return ChildSpec(name, start, self.mailboxes[name])

    def _chain(
        self, specs: list[ChildSpec], stages: Sequence[StageEntry], last: Mailbox
    ) -> Mailbox:
        """Append the specs of custom ``stages`` that feed ``last``, in order; the mailbox of
        the first of them (``last`` itself when there are none)."""
        next_box = last
        for stage in reversed(stages):
            box = self._mailbox(stage.name, stage.capacity)
            specs.append(self._custom_spec(stage, box, next_box))
            next_box = box
        return next_box

    def _custom_spec(self, entry: StageEntry, box: Mailbox, downstream: Mailbox) -> ChildSpec:
        out = Outlet(downstream)
        # The way back: inbound stages answer the peer through encrypt, outbound ones the host.
        back = Outlet(self.mailboxes["encrypt" if entry.path == "inbound" else "tun_writer"])

        def start(box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
            return start_stage(
                entry.cls,
                box,
                out,
                options=entry.options,
                name=entry.name,
                path=entry.path,
                back=back,
                on_error=entry.on_error,
                routes=self.config.get,
                worker=self.shard.number if self.shard is not None else (0, 1),
                **self._supervision_args(entry.name, sup),
            )

        return ChildSpec(entry.name, start, box, entry.restart, budget=entry.budget)

    def _publish_tick_targets(self) -> None:
        """Tell the ticker which mailboxes are those of custom stages that tick (at start and
        after a reload); the others get no ticks at all."""
        names = [
            e.name
            for path in ("inbound", "outbound")
            for e in self.chains[path]
            if getattr(e.cls, "tick_interval", None) is not None
        ]
        self.tick_targets.publish(tuple(self.mailboxes[n] for n in names if n in self.mailboxes))

    def start(self) -> None:
        specs = self.specs()
        self.order = [s.name for s in specs]
        self._publish_tick_targets()
        self.supervisor = Supervisor.start(
            specs,
            strategy=self.strategy,
            budget=self.budget,
            backoff=self.backoff,
            on_escalate=self._on_escalate,
        )
        logger.debug("pipeline started: {}", " ".join(self.order))

    def _on_escalate(self, reason: str) -> None:
        # Runs on the supervisor's thread: it only records the reason and raises the flag.
        self.escalation_reason = reason
        self.escalated.set()

    # -- live reload

    def reload(self, inbound: Sequence[StageEntry], outbound: Sequence[StageEntry]) -> str:
        """Swap the custom stages for these (already validated) entries; what changed, in one
        line. Called from one thread at a time (the daemon's reload)."""
        changes = []
        try:
            for path, new in (("inbound", tuple(inbound)), ("outbound", tuple(outbound))):
                change = self._reload_path(path, new)
                self.chains[path] = new
                if change:
                    changes.append(f"{path} {change}")
        finally:  # a reload that failed part-way still ticks what now runs
            self._publish_tick_targets()
        self.order = self._supervisor_stats()["order"]
        return "; ".join(changes) or "stages unchanged"

    def _reload_path(self, path: str, new: tuple[StageEntry, ...]) -> str:
        sup = self.supervisor
        if sup is None:
            raise ReloadError("the pipeline is not running")
        feeder, last = next((f, t) for p, f, t in PATHS if p == path)
        old = self.chains[path]
        old_by_name = {e.name: e for e in old}
        new_names = [e.name for e in new]
        # every stage's mailbox in the new chain: kept and changed stages keep their address
        boxes = [
            self.mailboxes[e.name] if e.name in old_by_name else Mailbox(e.name, e.capacity)
            for e in new
        ]
        nexts = [*boxes[1:], self.mailboxes[last]]
        after = [*new_names[1:], last]
        added, replaced, removed = [], [], []
        # 1. new stages, downstream first, so each has somewhere to send before it starts
        for i in reversed(range(len(new))):
            entry = new[i]
            if entry.name in old_by_name:
                continue
            self.mailboxes[entry.name] = boxes[i]
            self._supervise(AddChild(self._custom_spec(entry, boxes[i], nexts[i]), after[i]))
            added.append(entry.name)
        # 2. changed stages: a new instance on the same mailbox (queued packets wait for it)
        for i, entry in enumerate(new):
            previous = old_by_name.get(entry.name)
            if previous is None or same_entry(previous, entry):
                continue
            boxes[i].resize(entry.capacity)
            self._supervise(ReplaceChild(self._custom_spec(entry, boxes[i], nexts[i])))
            replaced.append(entry.name)
        # 3. kept stages whose next stage changed, then the built-in stage feeding the chain
        old_after = [*[e.name for e in old[1:]], last] if old else []
        old_next = {e.name: n for e, n in zip(old, old_after, strict=True)}
        for i, entry in enumerate(new):
            previous = old_by_name.get(entry.name)
            if previous is None or not same_entry(previous, entry):
                continue
            if old_next[entry.name] != after[i]:
                self._rewire(boxes[i], nexts[i])
                self._supervise(UpdateSpec(self._custom_spec(entry, boxes[i], nexts[i])))
        first = boxes[0] if boxes else self.mailboxes[last]
        if (old[0].name if old else last) != (new[0].name if new else last):
            self._rewire(self.mailboxes[feeder], first)
            self._supervise(UpdateSpec(self._feeder_spec(feeder, first)))
        # 4. removed stages: nothing is sent to them any more; let them drain, then stop them
        for entry in old:
            if entry.name in new_names:
                continue
            box = self.mailboxes.pop(entry.name)
            if not box.wait_drained(DRAIN_TIMEOUT):
                logger.warning("stage {} did not drain in time; its queue is dropped", entry.name)
            self._supervise(RemoveChild(entry.name))
            box.close()
            removed.append(entry.name)
        if not (added or replaced or removed) and [e.name for e in old] == new_names:
            return ""
        parts = [f"+{n}" for n in reversed(added)] + [f"~{n}" for n in replaced]
        parts += [f"-{n}" for n in removed]
        return " ".join(parts) + f" (now {' -> '.join(new_names) or 'none'})"

    def _supervise(self, message: Any) -> None:
        assert self.supervisor is not None
        try:
            ok = self.supervisor.ask(message, timeout=RELOAD_TIMEOUT)
        except (pykka.Timeout, pykka.ActorDeadError):
            ok = False
        if not ok:
            raise ReloadError(f"the supervisor refused {type(message).__name__}")

    def _rewire(self, box: Mailbox, downstream: Mailbox) -> None:
        """Re-point a running stage; it applies this before its next batch (control first)."""
        try:
            box.ask(Rewire(Outlet(downstream)), RELOAD_TIMEOUT)
        except (pykka.Timeout, pykka.ActorDeadError):
            # Not running now: the updated spec wires its next incarnation, and the letter
            # waits in its mailbox for that incarnation too.
            logger.debug("stage {} is not running; re-wired on restart", box.name)

    # -- shutdown and introspection

    def stop(self, deadline: float, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop readers, drain, then stop the rest in reverse start order, all by ``deadline``
        (``time.monotonic()``): every step waits only for what is left of it, and a stage that
        does not stop in time is abandoned (its thread is a daemon thread)."""
        sup = self.supervisor
        if sup is None:
            return

        def left() -> float:
            return max(MIN_WAIT, deadline - time.monotonic())

        try:
            sup.ask(StopChildren(READERS, deadline=deadline), timeout=left())
            alive = self._alive_children(min(ASK_TIMEOUT, left()))
            # the drain may take a share of what is left; stopping the rest needs the remainder
            now = time.monotonic()
            drain_end = now + min(drain_timeout, max(0.0, deadline - now) * DRAIN_SHARE)
            for name in reversed(self.order):
                if name not in READERS and alive.get(name):
                    self.mailboxes[name].wait_drained(max(0.0, drain_end - time.monotonic()))
            sup.ask(Shutdown(deadline=deadline), timeout=left())
            sup.stop(block=True, timeout=left())
        except (pykka.Timeout, pykka.ActorDeadError):
            logger.warning("supervisor did not shut down in time; abandoning the stages")
        for box in self.mailboxes.values():
            box.close()

    def _supervisor_stats(self, timeout: float = ASK_TIMEOUT) -> dict[str, Any]:
        if self.supervisor is None:
            return {"order": list(self.order), "children": {}}
        try:
            result: dict[str, Any] = self.supervisor.ask(  # type: ignore[assignment]
                GetSupervisorStats(), timeout=timeout
            )
        except (pykka.Timeout, pykka.ActorDeadError):
            return {"order": list(self.order), "children": {}}
        return result

    def _alive_children(self, timeout: float = ASK_TIMEOUT) -> dict[str, bool]:
        children = self._supervisor_stats(timeout)["children"]
        return {name: c["alive"] for name, c in children.items()}

    def stats(self, timeout: float = ASK_TIMEOUT) -> list[dict[str, Any]]:
        """A snapshot of every stage, in start order, asked through its stable address. A stage
        that is not running, or does not answer in time, is reported with its mailbox figures
        only."""
        out = []
        restarts = self._supervisor_stats(timeout)["children"]
        for name in list(self.order):
            box = self.mailboxes.get(name)
            if box is None:
                continue
            child = restarts.get(name, {})
            entry: dict[str, Any] | None = None
            if child.get("alive"):
                try:
                    entry = box.ask(GetStats(), timeout).as_dict()
                except (pykka.Timeout, pykka.ActorDeadError):
                    entry = None
            if entry is None:
                entry = {"name": name, "unresponsive": True, "mailbox": asdict(box.stats())}
            entry["restarts"] = child.get("restarts", 0)
            entry["lost_in_crashes"] = child.get("lost", 0)
            out.append(entry)
        return out

    @property
    def sockets(self) -> UdpSocket:
        return self.udp

    def breakdown(self) -> list[dict[str, Any]]:
        return []

    def default_placement(self) -> str:
        return default_policy()

    def failure(self) -> str | None:
        if self.escalated.is_set():
            return self.escalation_reason
        if self.supervisor is not None and not self.supervisor.is_alive():
            return "the supervisor died"
        return None

    # -- the device, through the stage that owns it

    def _ask_device(self, message: object, timeout: float) -> Any:
        try:
            return self.mailboxes["decrypt"].ask(message, timeout)
        except (pykka.Timeout, pykka.ActorDeadError):
            raise DataPlaneTimeout("the WireGuard stage did not answer") from None

    def device_state(self, timeout: float) -> tuple[bytes | None, tuple[PeerState, ...]]:
        state: tuple[bytes | None, tuple[PeerState, ...]] = self._ask_device(
            GetDeviceState(), timeout
        )
        return state

    def configure(self, request: SetRequest, timeout: float) -> None:
        self._ask_device(Configure(request), timeout)

    def take_endpoints(self, timeout: float) -> dict[bytes, Any]:
        """A worker's peers' endpoints that moved since the last call (peer -> endpoint)."""
        moved: dict[bytes, Any] = self._ask_device(TakeEndpoints(), timeout)
        return moved

    def set_directory(self, directory: PeerDirectory | None, timeout: float) -> None:
        """A worker's new directory: the TUN reader routes by it from its next batch, the
        device (and through it the encrypt stage) once the decrypt stage has taken it."""
        assert self.shard is not None, "only a worker has a directory"
        self.shard.directory.publish(directory)
        self._ask_device(SetDirectory(directory), timeout)

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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import pykka
from loguru import logger

from .faults import Fault
from .io.tun import TunDevice
from .io.udp import UdpSocket
from .mailbox import DEFAULT_CAPACITY, Mailbox
from .pipeline_file import StageEntry
from .snapshot import ConfigCell, DeviceConfig
from .stage import wiring
from .stages import Decrypt, Encrypt, GetStats, Outlet, Ticker, TunReader, TunWriter, UdpIngress
from .stages.base import BATCH_SIZE
from .supervisor import (
    DEFAULT_BACKOFF,
    DEFAULT_BUDGET,
    Backoff,
    ChildSpec,
    GetSupervisorStats,
    RestartBudget,
    Shutdown,
    StopChildren,
    Strategy,
    Supervision,
    Supervisor,
)
from .wireguard.device import PeerConfig

__all__ = ["DRAIN_TIMEOUT", "READERS", "Pipeline"]

DRAIN_TIMEOUT = 2.0  # seconds to let queued packets flow out on shutdown
ASK_TIMEOUT = 2.0  # seconds a stats query waits for a stage
READERS = ("udp_ingress", "tun_reader", "ticker")


class Pipeline:
    def __init__(
        self,
        *,
        private_key: bytes | None,
        peers: Sequence[PeerConfig],
        udp: UdpSocket,
        tun: TunDevice,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = BATCH_SIZE,
        inbound: Sequence[StageEntry] = (),
        outbound: Sequence[StageEntry] = (),
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        budget: RestartBudget = DEFAULT_BUDGET,
        backoff: Backoff = DEFAULT_BACKOFF,
        faults: dict[str, Fault] | None = None,
    ) -> None:
        self.private_key = private_key
        self.peers = tuple(peers)
        self.config = ConfigCell(DeviceConfig(private_key, self.peers))
        self.udp = udp
        self.tun = tun
        self.capacity = capacity
        self.batch_size = batch_size
        self.inbound = tuple(inbound)
        self.outbound = tuple(outbound)
        self.strategy = strategy
        self.budget = budget
        self.backoff = backoff
        self.faults = dict(faults or {})
        self.mailboxes: dict[str, Mailbox] = {}
        self.order: list[str] = []
        self.supervisor: pykka.ActorRef[Supervisor] | None = None
        self.escalated = threading.Event()
        self.escalation_reason = ""

    def _mailbox(self, name: str, capacity: int | None = None) -> Mailbox:
        if name in self.mailboxes:
            raise ValueError(f"two stages are named {name!r}")
        box = Mailbox(name, capacity or self.capacity)
        self.mailboxes[name] = box
        return box

    def _kw(self, name: str, supervision: Supervision) -> dict[str, Any]:
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
                lambda box, sup: TunWriter.start(box, self.tun, **self._kw("tun_writer", sup)),
                tun_writer,
            )
        )
        first_inbound = self._chain(specs, self.inbound, tun_writer)
        specs.append(
            ChildSpec(
                "encrypt",
                lambda box, sup: Encrypt.start(
                    box, self.udp, decrypt, self.config, **self._kw("encrypt", sup)
                ),
                encrypt,
            )
        )
        specs.append(
            ChildSpec(
                "decrypt",
                lambda box, sup: Decrypt.start(
                    box,
                    self.udp,
                    Outlet(first_inbound),
                    encrypt,
                    self.config,
                    **self._kw("decrypt", sup),
                ),
                decrypt,
            )
        )
        first_outbound = self._chain(specs, self.outbound, encrypt)
        specs.append(
            ChildSpec(
                "tun_reader",
                lambda box, sup: TunReader.start(
                    box,
                    self.tun,
                    Outlet(first_outbound),
                    self.batch_size,
                    Outlet(tun_writer, block=False),  # ICMP too-big: never wait for it
                    **self._kw("tun_reader", sup),
                ),
                self._mailbox("tun_reader"),
            )
        )
        specs.append(
            ChildSpec(
                "udp_ingress",
                lambda box, sup: UdpIngress.start(
                    box, self.udp, Outlet(decrypt), self.batch_size, **self._kw("udp_ingress", sup)
                ),
                self._mailbox("udp_ingress"),
            )
        )
        specs.append(
            ChildSpec(
                "ticker",
                lambda box, sup: Ticker.start(box, decrypt, **self._kw("ticker", sup)),
                self._mailbox("ticker"),
            )
        )
        return specs

    def _chain(
        self, specs: list[ChildSpec], stages: Sequence[StageEntry], last: Mailbox
    ) -> Mailbox:
        """Append the specs of custom ``stages`` that feed ``last``, in order; the mailbox of
        the first of them (``last`` itself when there are none)."""
        next_box = last
        for stage in reversed(stages):
            specs.append(self._custom_spec(stage, next_box))
            next_box = specs[-1].mailbox
        return next_box

    def _custom_spec(self, entry: StageEntry, downstream: Mailbox) -> ChildSpec:
        out = Outlet(downstream)
        # The way back: inbound stages answer the peer through encrypt, outbound ones the host.
        back = Outlet(self.mailboxes["encrypt" if entry.path == "inbound" else "tun_writer"])

        def start(box: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
            fault = self._kw(entry.name, sup)["fault"]
            with wiring(
                box,
                out,
                sup,
                entry.name,
                fault,
                back=back,
                routes=self.config.get,
                on_error=entry.on_error,
            ):
                return entry.cls.start(**entry.options)

        return ChildSpec(
            entry.name,
            start,
            self._mailbox(entry.name, entry.capacity),
            entry.restart,
            budget=entry.budget,
        )

    def start(self) -> None:
        specs = self.specs()
        self.order = [s.name for s in specs]
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

    def stop(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop readers, drain, then stop the rest in reverse start order. Bounded in time:
        the drain shares one deadline, and stages that are not running are not waited for."""
        sup = self.supervisor
        if sup is None:
            return
        try:
            sup.ask(StopChildren(READERS), timeout=10)
            alive = self._alive_children()
            deadline = time.monotonic() + drain_timeout
            for name in reversed(self.order):
                if name not in READERS and alive.get(name):
                    self.mailboxes[name].wait_drained(max(0.0, deadline - time.monotonic()))
            sup.ask(Shutdown(), timeout=30)
            sup.stop(block=True, timeout=5)
        except (pykka.Timeout, pykka.ActorDeadError):
            logger.warning("supervisor did not shut down in time; abandoning the stages")
        for box in self.mailboxes.values():
            box.close()

    def _alive_children(self, timeout: float = ASK_TIMEOUT) -> dict[str, bool]:
        if self.supervisor is None:
            return {}
        try:
            children = self.supervisor.ask(GetSupervisorStats(), timeout=timeout)["children"]
        except (pykka.Timeout, pykka.ActorDeadError):
            return {}
        return {name: c["alive"] for name, c in children.items()}

    def stats(self, timeout: float = ASK_TIMEOUT) -> list[dict[str, Any]]:
        """A snapshot of every stage, in start order, asked through its stable address. A stage
        that is not running, or does not answer in time, is reported with its mailbox figures
        only."""
        out = []
        restarts: dict[str, Any] = {}
        if self.supervisor is not None:
            try:
                restarts = self.supervisor.ask(GetSupervisorStats(), timeout=timeout)["children"]
            except (pykka.Timeout, pykka.ActorDeadError):
                restarts = {}
        for name in self.order:
            child = restarts.get(name, {})
            entry: dict[str, Any] | None = None
            if child.get("alive"):
                try:
                    entry = self.mailboxes[name].ask(GetStats(), timeout).as_dict()
                except (pykka.Timeout, pykka.ActorDeadError):
                    entry = None
            if entry is None:
                box = self.mailboxes[name].stats()
                entry = {"name": name, "unresponsive": True, "mailbox": asdict(box)}
            entry["restarts"] = child.get("restarts", 0)
            entry["lost_in_crashes"] = child.get("lost", 0)
            out.append(entry)
        return out

    def alive(self) -> bool:
        return self.supervisor is not None and self.supervisor.is_alive()

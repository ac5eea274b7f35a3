"""Wiring: the stages, their mailboxes and the edges between them.

    UDP socket -> UdpIngress -> Decrypt -> [inbound stages] -> TunWriter -> TUN
    TUN -> TunReader -> [outbound stages] -> Encrypt -> UDP socket
                 Ticker -> Decrypt (timers);  Decrypt <-> Encrypt (keys, events: control lane)

Every mailbox is created here, before any actor, and every stage is given the mailboxes of its
neighbours: a mailbox is a stage's stable address. Edges out of the kernel readers block (so
backpressure reaches the kernel queues); the decrypt/encrypt exchange travels in control lanes,
which never wait on data, so the one cycle in the graph cannot deadlock.

Start order is downstream first, readers last, so nothing is read before there is somewhere to
put it; shutdown stops the readers, lets the queues drain (bounded), then stops the rest in
reverse start order, each stop bounded in time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka
from loguru import logger

from .io.tun import TunDevice
from .io.udp import UdpSocket
from .mailbox import DEFAULT_CAPACITY, Mailbox
from .stages import Decrypt, Encrypt, GetStats, Outlet, Ticker, TunReader, TunWriter, UdpIngress
from .stages.base import BATCH_SIZE
from .wireguard.device import PeerConfig

__all__ = ["DRAIN_TIMEOUT", "STOP_TIMEOUT", "Pipeline", "StageSpec"]

DRAIN_TIMEOUT = 2.0  # seconds to let queued packets flow out on shutdown
STOP_TIMEOUT = 3.0  # seconds each stage gets to stop before it is abandoned with a warning
START_TIMEOUT = 5.0  # seconds the decrypt stage gets to load its peers


@dataclass(frozen=True)
class StageSpec:
    """A custom stage on the inbound or outbound path: how to build it, given its mailbox and
    the outlet it must send to."""

    name: str
    factory: Callable[[Mailbox, Outlet], pykka.ActorRef[Any]]
    capacity: int = DEFAULT_CAPACITY
    options: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        *,
        private_key: bytes,
        peers: Sequence[PeerConfig],
        udp: UdpSocket,
        tun: TunDevice,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = BATCH_SIZE,
        inbound: Sequence[StageSpec] = (),
        outbound: Sequence[StageSpec] = (),
    ) -> None:
        self.private_key = private_key
        self.peers = tuple(peers)
        self.udp = udp
        self.tun = tun
        self.capacity = capacity
        self.batch_size = batch_size
        self.inbound = tuple(inbound)
        self.outbound = tuple(outbound)
        self.mailboxes: dict[str, Mailbox] = {}
        self.refs: dict[str, pykka.ActorRef[Any]] = {}
        self.order: list[str] = []

    def _mailbox(self, name: str, capacity: int | None = None) -> Mailbox:
        box = Mailbox(name, capacity or self.capacity)
        self.mailboxes[name] = box
        return box

    def _start(self, name: str, start: Callable[[], pykka.ActorRef[Any]]) -> None:
        self.refs[name] = start()
        self.order.append(name)

    def start(self) -> None:
        names_in = [s.name for s in self.inbound]
        names_out = [s.name for s in self.outbound]
        if len(set(names_in + names_out)) != len(names_in + names_out):
            raise ValueError("custom stage names must be unique")
        tun_writer = self._mailbox("tun_writer")
        decrypt = self._mailbox("decrypt")
        encrypt = self._mailbox("encrypt")
        tun_reader = self._mailbox("tun_reader")
        udp_ingress = self._mailbox("udp_ingress")
        ticker = self._mailbox("ticker")
        inbound = [self._mailbox(s.name, s.capacity) for s in self.inbound]
        outbound = [self._mailbox(s.name, s.capacity) for s in self.outbound]

        # Downstream first. The inbound chain ends at the TUN writer, the outbound at encrypt.
        self._start("tun_writer", lambda: TunWriter.start(tun_writer, self.tun))
        next_box = tun_writer
        for spec, box in reversed(list(zip(self.inbound, inbound, strict=True))):
            out = Outlet(next_box)
            self._start(spec.name, lambda spec=spec, box=box, out=out: spec.factory(box, out))
            next_box = box
        first_inbound = next_box
        self._start("encrypt", lambda: Encrypt.start(encrypt, self.udp, decrypt))
        self._start(
            "decrypt",
            lambda: Decrypt.start(
                decrypt, self.udp, Outlet(first_inbound), encrypt, self.private_key, self.peers
            ),
        )
        # Wait until the decrypt stage has loaded the peers and sent the routes to encrypt.
        self.refs["decrypt"].ask(GetStats(), timeout=START_TIMEOUT)
        next_box = encrypt
        for spec, box in reversed(list(zip(self.outbound, outbound, strict=True))):
            out = Outlet(next_box)
            self._start(spec.name, lambda spec=spec, box=box, out=out: spec.factory(box, out))
            next_box = box
        first_outbound = next_box
        self._start(
            "tun_reader",
            lambda: TunReader.start(tun_reader, self.tun, Outlet(first_outbound), self.batch_size),
        )
        self._start(
            "udp_ingress",
            lambda: UdpIngress.start(udp_ingress, self.udp, Outlet(decrypt), self.batch_size),
        )
        self._start("ticker", lambda: Ticker.start(ticker, decrypt))
        logger.debug("pipeline started: {}", " ".join(self.order))

    def stop(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop readers, drain, then stop the rest in reverse start order. Bounded in time."""
        readers = [n for n in ("udp_ingress", "tun_reader", "ticker") if n in self.refs]
        for name in readers:
            self._stop_one(name)
        for name in reversed(self.order):
            if name not in readers:
                self.mailboxes[name].wait_drained(drain_timeout)
                self._stop_one(name)
        for box in self.mailboxes.values():
            box.close()

    def _stop_one(self, name: str) -> None:
        ref = self.refs.get(name)
        if ref is None:
            return
        try:
            ref.stop(block=True, timeout=STOP_TIMEOUT)
        except pykka.Timeout:
            logger.warning("stage {} did not stop within {} s; abandoned", name, STOP_TIMEOUT)
        except pykka.ActorDeadError:
            pass

    def stats(self, timeout: float = 2.0) -> list[dict[str, Any]]:
        """A snapshot of every stage, in start order. A stage that does not answer in time is
        reported with its mailbox figures only."""
        out = []
        for name in self.order:
            ref = self.refs[name]
            try:
                out.append(ref.ask(GetStats(), timeout=timeout).as_dict())
            except (pykka.Timeout, pykka.ActorDeadError):
                box = self.mailboxes[name].stats()
                out.append({"name": name, "unresponsive": True, "mailbox": box.__dict__})
        return out

    def alive(self) -> bool:
        return all(ref.is_alive() for ref in self.refs.values())

"""The extension API: :class:`Stage`, the base class of users' own actors.

A user writes the packet logic and nothing else::

    class DropTelnet(Stage):
        def __init__(self, port: int = 23) -> None:
            super().__init__()
            self.port = port

        def process(self, packet: Packet) -> Packet | None:
            return None if packet.dst_port == self.port else packet

The mailbox, batching, backpressure, supervision and statistics come from the pipeline. It
connects a stage to its neighbours while the stage is being constructed (through a context
variable, so that ``__init__`` takes the user's options and nothing else), restarts it when it
fails, and reports its counters in ``wgactors status``.

The rules a stage lives by:

- ``process`` returns a :class:`Packet` (passed on), ``None`` (dropped, and counted), or an
  iterable of packets (all passed on). Anything else is an error.
- An exception from ``process`` never stops the tunnel: it costs the packet that raised,
  counted as a ``stage_error`` drop (or passed on unchanged with ``on_error = "pass"``) and
  logged rate-limited; with ``on_error = "restart"`` the instance is also replaced (see
  :mod:`actors.failure`).
- Packets are immutable; to change one, build a new one.
- Work done in ``__init__`` must not acquire resources: the pipeline builds each stage once at
  start-up just to check its options. Open files and sockets in ``on_start``; close them in
  ``on_stop``.
- A slow stage slows its path down: its mailbox fills and the stage before it waits. Nothing is
  dropped silently and nothing grows.

What a stage can do besides passing packets on:

- ``packet.peer``: on the inbound path, the public key of the WireGuard peer that sent it.
- :meth:`Stage.peer_for`: on either path, which peer an address routes to (the AllowedIPs of
  the current configuration, read from an immutable snapshot; nothing is shared that changes).
- :meth:`Stage.reply`: send a packet the other way: from an inbound stage through encrypt to
  the peer, from an outbound stage through the TUN writer to the local host. Replies travel
  with the same bounds and backpressure as the rest, and count in the stage's ``replies``.
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .failure import LOG_INTERVAL, ON_ERROR, ErrorCarry, ErrorPolicy
from .faults import Fault
from .mailbox import Mailbox
from .packet import AddressLike, Packet, address_bytes
from .snapshot import DeviceConfig
from .stages.base import BATCH_SIZE, Outlet, PipelineActor
from .stats import StageSnapshot, StageStats
from .supervisor import Supervision
from .wireguard.allowedips import AllowedIPs

__all__ = [
    "ERROR_LOG_INTERVAL",
    "MAX_REPLIES_PER_BATCH",
    "ON_ERROR",
    "STAGE_ERROR",
    "BatchOutcome",
    "Stage",
]

MAX_REPLIES_PER_BATCH = 4 * BATCH_SIZE
"""Replies a stage may queue while handling one batch; more are dropped and counted."""
ERROR_LOG_INTERVAL = LOG_INTERVAL
"""Seconds between two log lines about a stage's exceptions (see :mod:`actors.failure`)."""
STAGE_ERROR = "stage_error"
"""The drop reason of a packet whose processing raised."""
_DATA = operator.attrgetter("data")

RouteSource = Callable[[], DeviceConfig]
"""Where a stage reads the current configuration for :meth:`Stage.peer_for`."""


@dataclass(frozen=True, slots=True)
class _Wiring:
    mailbox: Mailbox
    outlet: Outlet | None
    supervision: Supervision | None
    name: str | None
    fault: Fault | None
    back: Outlet | None = None
    routes: RouteSource | None = None
    on_error: str = "drop"
    carry: ErrorCarry | None = None


_WIRING: contextvars.ContextVar[_Wiring | None] = contextvars.ContextVar("wiring", default=None)


@contextlib.contextmanager
def wiring(
    mailbox: Mailbox,
    outlet: Outlet | None,
    supervision: Supervision | None = None,
    name: str | None = None,
    fault: Fault | None = None,
    *,
    back: Outlet | None = None,
    routes: RouteSource | None = None,
    on_error: str = "drop",
    carry: ErrorCarry | None = None,
) -> Iterator[None]:
    """Connect the stage constructed inside this block (the pipeline's business, not users').

    ``back`` is the way back (:meth:`Stage.reply`), ``routes`` where :meth:`Stage.peer_for`
    reads the configuration; ``on_error`` and ``carry`` (the error record and counters of
    the instance this one replaces) are the failure policy's, when no supervisor hands them
    over."""
    token = _WIRING.set(
        _Wiring(mailbox, outlet, supervision, name, fault, back, routes, on_error, carry)
    )
    try:
        yield
    finally:
        _WIRING.reset(token)


@dataclass(slots=True)
class BatchOutcome:
    """What one batch through a stage produced, under the failure policy."""

    passed: list[Packet] = field(default_factory=list)
    replies: list[Packet] = field(default_factory=list)
    errors: int = 0
    last_error: Exception | None = None


class Stage(PipelineActor):
    """Base class for custom actors on the inbound or outbound path."""

    def __init__(self) -> None:
        wired = _WIRING.get()
        if wired is None:  # built outside a pipeline, e.g. in a unit test
            wired = _Wiring(Mailbox(type(self).__name__), None, None, None, None)
        super().__init__(
            wired.mailbox, wired.name, supervision=wired.supervision, fault=wired.fault
        )
        self._outlet = wired.outlet
        self._back = wired.back
        self._route_source = wired.routes
        self._replies: list[Packet] = []
        self.stats.extra["replies"] = 0
        self._route_config: DeviceConfig | None = None
        self._route_table: AllowedIPs[bytes] = AllowedIPs()
        sup = wired.supervision
        carry = sup.carry if sup is not None else wired.carry
        self._errors = ErrorPolicy(
            self.name, sup.on_error if sup is not None else wired.on_error, carry
        )
        if carry is not None and carry.counters is not None:
            self.stats = StageStats.restore(carry.counters)  # a replacement keeps the counts
        self.replace_me = False  # the last batch failed and on_error="restart"

    # -- what users implement

    def process(self, packet: Packet) -> Packet | Iterable[Packet] | None:
        """Handle one packet: return it (or a new one), None to drop it, or several packets."""
        return packet

    def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
        """Handle a batch; override to work on whole batches. Returns the packets to pass on."""
        out: list[Packet] = []
        drops = self.stats.drops
        process = self.process
        for packet in batch:
            try:
                result = process(packet)
                if result is None:
                    drops["dropped"] += 1
                elif isinstance(result, Packet):
                    out.append(result)
                else:
                    out.extend(_packets(self, result))
            except Exception as e:
                if self._stage_error(e, 1):
                    out.append(packet)
        return out

    def stats_extra(self) -> dict[str, Any]:
        """Figures of your own to show in `wgactors status` (override; keep it small)."""
        return {}

    # -- what users call

    def reply(self, packet: Packet) -> None:
        """Send ``packet`` the opposite way: from an inbound stage to the peer (through
        encrypt, routed by its destination), from an outbound stage to the local host (through
        the TUN writer). Sent after the current batch; counted in ``replies``."""
        if not isinstance(packet, Packet):
            raise TypeError(f"reply takes a Packet, not {type(packet).__name__}")
        if len(self._replies) >= MAX_REPLIES_PER_BATCH:
            self.stats.drops["reply_overflow"] += 1
            return
        self._replies.append(packet)

    def peer_for(self, address: AddressLike) -> bytes | None:
        """The public key of the peer that ``address`` routes to (AllowedIPs, longest prefix),
        or None. The table is rebuilt, privately, only when the configuration changes."""
        source = self._route_source
        if source is None:
            return None
        config = source()
        if config is not self._route_config:
            table: AllowedIPs[bytes] = AllowedIPs()
            for peer in config.peers:
                for net in peer.allowed_ips:
                    table.insert(net, peer.public_key)
            self._route_table, self._route_config = table, config
        return self._route_table.lookup_bytes(address_bytes(address))

    # -- plumbing

    @property
    def on_error(self) -> str:
        """What an exception does besides costing its packet (the entry's ``on_error``)."""
        return self._errors.on_error

    def _stage_error(self, error: Exception, count: int) -> bool:
        """``count`` packets raised ``error``: the failure policy (actors.failure). True if
        they go on unchanged (on_error="pass"), False if they are dropped."""
        errors = self._errors
        errors.failed(error, count)
        if errors.passes:
            return True
        self.stats.drops[STAGE_ERROR] += count
        return False

    @property
    def errors(self) -> ErrorPolicy:
        return self._errors

    def run_batch(self, batch: tuple[Packet, ...]) -> BatchOutcome:
        """One batch through ``process_batch`` under the failure policy: an exception costs
        the packet that raised (the whole batch, if ``process_batch`` itself is overridden).
        Shared by the pipeline, the single-threaded loop and :mod:`actors.testing`, so they
        cannot disagree. After it, :attr:`replace_me` says whether on_error="restart" wants a
        fresh instance."""
        stats = self.stats
        stats.packets_in += len(batch)
        stats.bytes_in += sum(map(len, map(_DATA, batch)))  # once per batch, in C
        errors = self._errors
        before = errors.total
        outcome = BatchOutcome()
        try:
            outcome.passed = list(self.process_batch(batch))
        except Exception as e:  # an overridden process_batch: the batch is what raised
            if self._stage_error(e, len(batch)):
                outcome.passed = list(batch)
        outcome.replies, self._replies = self._replies, []
        outcome.errors = errors.total - before
        if outcome.errors:
            outcome.last_error = errors.last_exception
        self.replace_me = outcome.errors > 0 and errors.on_error == "restart"
        return outcome

    def count_replies(self, accepted: int, refused: int) -> None:
        """Account for replies handed to the way back (the pipeline's business)."""
        extra = self.stats.extra
        extra["replies"] = extra.get("replies", 0) + accepted
        if refused:
            self.stats.drops["reply_dropped"] += refused

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        outcome = self.run_batch(batch)
        out = outcome.passed
        outlet = self._outlet
        if outlet is not None:
            for i in range(0, len(out), BATCH_SIZE):
                chunk = tuple(out[i : i + BATCH_SIZE])
                self.emit(outlet, chunk, sum(map(len, map(_DATA, chunk))))
        replies = outcome.replies
        if replies:
            accepted = 0
            back = self._back
            for i in range(0, len(replies), BATCH_SIZE):
                chunk = tuple(replies[i : i + BATCH_SIZE])
                if back is not None and back.push(chunk):
                    accepted += len(chunk)
            self.count_replies(accepted, len(replies) - accepted)
        if self.replace_me:
            self._replace()

    def rewire(self, outlet: Outlet) -> None:
        self._outlet = outlet

    def _replace(self) -> None:
        """on_error="restart": this batch is handled (its output sent); hand over to a fresh
        instance at once, queued packets waiting in the mailbox."""
        if self._dead or not self._as_actor:  # called in-process: the caller replaces it
            return
        self._dead = True
        if self.supervision is not None:
            self.supervision.report(
                self._errors.last_error, 0, replace=True, carry=self._handover()
            )
        self.actor_ref.stop(block=False)

    def on_stop(self) -> None:
        # A replaced instance hands its unlogged count on (carry) instead of logging it.
        if not self._dead and not self.replace_me:
            self._errors.flush()

    def _handover(self) -> ErrorCarry:
        """What a fresh instance replacing this one continues from (on_error="restart")."""
        return self._errors.carry(self.stats.snapshot(self.name, None))

    def snapshot(self) -> StageSnapshot:
        self.stats.extra.update(self.stats_extra())
        return self.stats.snapshot(self.name, self._mailbox.stats(), self._errors.report())


def _packets(stage: Stage, result: Iterable[Any]) -> list[Packet]:
    items = list(result)
    for item in items:
        if not isinstance(item, Packet):
            raise TypeError(
                f"{type(stage).__name__}.process returned {type(item).__name__}, not a Packet"
            )
    return items

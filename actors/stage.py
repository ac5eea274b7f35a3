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
  iterable of packets (all passed on). Anything else is an error, which the supervisor handles.
- Packets are immutable; to change one, build a new one.
- Work done in ``__init__`` must not acquire resources: the pipeline builds each stage once at
  start-up just to check its options. Open files and sockets in ``on_start``; close them in
  ``on_stop``.
- A slow stage slows its path down: its mailbox fills and the stage before it waits. Nothing is
  dropped silently and nothing grows.
- An exception from ``process`` costs only the packet that raised: it is counted under
  ``stage_error`` and logged at most once per stage every few seconds. With ``on_error =
  "restart"`` in the pipeline file the instance is also replaced by a fresh one.

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
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from .faults import Fault
from .mailbox import Mailbox
from .packet import AddressLike, Packet, address_bytes
from .snapshot import DeviceConfig
from .stages.base import BATCH_SIZE, Outlet, PipelineActor
from .stats import StageSnapshot
from .supervisor import Supervision
from .wireguard.allowedips import AllowedIPs

__all__ = [
    "ERROR_LOG_INTERVAL",
    "MAX_REPLIES_PER_BATCH",
    "ON_ERROR",
    "STAGE_ERROR",
    "BatchOutcome",
    "Stage",
    "StageRestart",
]

MAX_REPLIES_PER_BATCH = 4 * BATCH_SIZE
"""Replies a stage may queue while handling one batch; more are dropped and counted."""
ERROR_LOG_INTERVAL = 5.0
"""Seconds between two log lines about a stage's exceptions (the count is in between)."""
STAGE_ERROR = "stage_error"
"""The drop reason of a packet whose processing raised."""
ON_ERROR = ("drop", "restart")
"""What a stage's exception does besides costing its packet: nothing more, or a fresh instance."""

RouteSource = Callable[[], DeviceConfig]
"""Where a stage reads the current configuration for :meth:`Stage.peer_for`."""


class StageRestart(RuntimeError):
    """Raised after a batch in which a stage with ``on_error = "restart"`` failed, so that
    its supervisor replaces the instance; the packets it passed on are already sent."""


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
) -> Iterator[None]:
    """Connect the stage constructed inside this block (the pipeline's business, not users').

    ``back`` is the way back (:meth:`Stage.reply`), ``routes`` where :meth:`Stage.peer_for`
    reads the configuration."""
    token = _WIRING.set(_Wiring(mailbox, outlet, supervision, name, fault, back, routes, on_error))
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
        self.on_error = wired.on_error
        self._replies: list[Packet] = []
        self.stats.extra["replies"] = 0
        self._route_config: DeviceConfig | None = None
        self._route_table: AllowedIPs[bytes] = AllowedIPs()
        self._errors_unlogged = 0
        self._error_logged_at = -ERROR_LOG_INTERVAL

    # -- what users implement

    def process(self, packet: Packet) -> Packet | Iterable[Packet] | None:
        """Handle one packet: return it (or a new one), None to drop it, or several packets."""
        return packet

    def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
        """Handle a batch; override to work on whole batches. Returns the packets to pass on."""
        out: list[Packet] = []
        for packet in batch:
            self._process_one(packet, out)
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

    def _process_one(self, packet: Packet, out: list[Packet]) -> None:
        result = self.process(packet)
        if result is None:
            self.stats.drops["dropped"] += 1
        elif isinstance(result, Packet):
            out.append(result)
        else:
            for item in result:
                if not isinstance(item, Packet):
                    raise TypeError(
                        f"{type(self).__name__}.process returned {type(item).__name__}, "
                        "not a Packet"
                    )
                out.append(item)

    def run_batch(self, batch: tuple[Packet, ...]) -> BatchOutcome:
        """``process_batch`` under the failure policy: an exception costs the packet that
        raised (the whole batch, if ``process_batch`` itself is overridden), counted under
        ``stage_error`` and logged at a bounded rate. Shared by the pipeline, the
        single-threaded loop and :mod:`actors.testing`, so they cannot disagree."""
        outcome = BatchOutcome()
        drops = self.stats.drops
        if type(self).process_batch is Stage.process_batch:
            passed = outcome.passed
            for packet in batch:
                mark = len(passed)
                try:
                    self._process_one(packet, passed)
                except Exception as e:
                    del passed[mark:]
                    drops[STAGE_ERROR] += 1
                    outcome.errors += 1
                    outcome.last_error = e
        else:
            try:
                outcome.passed = list(self.process_batch(batch))
            except Exception as e:
                drops[STAGE_ERROR] += len(batch)
                outcome.errors += len(batch)
                outcome.last_error = e
        outcome.replies, self._replies = self._replies, []
        if outcome.last_error is not None:
            self._log_error(outcome.errors, outcome.last_error)
        return outcome

    def _log_error(self, count: int, error: Exception) -> None:
        self._errors_unlogged += count
        now = time.monotonic()
        if now - self._error_logged_at < ERROR_LOG_INTERVAL:
            return
        logger.warning(
            "stage {}: {} packet(s) lost to exceptions, the last: {!r}",
            self.name,
            self._errors_unlogged,
            error,
        )
        self._errors_unlogged = 0
        self._error_logged_at = now

    def count_replies(self, accepted: int, refused: int) -> None:
        """Account for replies handed to the way back (the pipeline's business)."""
        extra = self.stats.extra
        extra["replies"] = extra.get("replies", 0) + accepted
        if refused:
            self.stats.drops["reply_dropped"] += refused

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        stats = self.stats
        stats.packets_in += len(batch)
        stats.bytes_in += sum(len(p.data) for p in batch)
        outcome = self.run_batch(batch)
        out = outcome.passed
        if self._outlet is not None:
            for i in range(0, len(out), BATCH_SIZE):
                chunk = tuple(out[i : i + BATCH_SIZE])
                self.emit(self._outlet, chunk, sum(len(p.data) for p in chunk))
        replies = outcome.replies
        if replies:
            accepted = 0
            back = self._back
            for i in range(0, len(replies), BATCH_SIZE):
                chunk = tuple(replies[i : i + BATCH_SIZE])
                if back is not None and back.push(chunk):
                    accepted += len(chunk)
            self.count_replies(accepted, len(replies) - accepted)
        if outcome.last_error is not None and self.on_error == "restart":
            self._in_flight = 0  # the batch was handled: nothing of it is lost with us
            raise StageRestart(f"{self.name}: {outcome.last_error!r}")

    def snapshot(self) -> StageSnapshot:
        self.stats.extra.update(self.stats_extra())
        return super().snapshot()

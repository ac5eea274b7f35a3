"""The extension API: :class:`Stage`, the base class of users' own actors.

A user writes the packet logic and nothing else::

    class DropTelnet(Stage):
        def __init__(self, port: int = 23) -> None:
            super().__init__()
            self.port = port

        def process(self, packet: Packet) -> Packet | None:
            return None if packet.dst_port == self.port else packet

A stage is a plain object. The mailbox, batching, backpressure, supervision and statistics
belong to the host that runs it (an actor of the pipeline, the single-threaded loop, or
:mod:`actors.testing`), and all three drive it through the same runner (:mod:`actors.runner`):
it builds the stage with the user's options and nothing else, hands it a :class:`StageContext`
(``self.context``) before ``on_start``, calls ``process`` per packet, applies the failure policy
and counts.

The rules a stage lives by:

- ``process`` returns a verdict: a :class:`Packet` (passed on: the same one or a new one),
  ``None`` (dropped, counted as ``dropped``), ``Drop("reason")`` (dropped, counted under that
  reason), :data:`CONSUMED` (answered or absorbed: not a drop, counted as ``consumed``), or an
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

What a stage can do besides passing packets on (all through its context):

- ``packet.peer``: on the inbound path, the public key of the WireGuard peer that sent it.
- :meth:`Stage.peer_for`: on either path, which peer an address routes to (the AllowedIPs of
  the current configuration, read from an immutable snapshot; nothing is shared that changes).
- :meth:`Stage.reply`: send a packet the other way: from an inbound stage through encrypt to
  the peer, from an outbound stage through the TUN writer to the local host. Replies travel
  with the same bounds and backpressure as the rest, and count in the stage's ``replies``.
- :attr:`Stage.now`: the time the batch being processed was read from the kernel (monotonic
  seconds), and in :meth:`Stage.on_tick` the time of the tick.
- :meth:`Stage.on_tick`: called every :attr:`Stage.tick_interval` seconds, if set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from .packet import AddressLike, Packet

__all__ = ["CONSUMED", "MIN_TICK_INTERVAL", "Drop", "Stage", "StageContext", "Verdict"]

MIN_TICK_INTERVAL = 0.05
"""The shortest ``tick_interval`` a stage may declare (seconds): the pipeline's clock
resolution (:data:`actors.stages.ticker.TICK_INTERVAL`)."""
MAX_DROP_REASON = 64
_REASON_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
"""Characters of a :class:`Drop` reason: it becomes a counter name and a Prometheus label."""


@dataclass(frozen=True, slots=True)
class Drop:
    """The verdict "drop this packet", counted under ``reason`` (e.g. ``Drop("rate")``)."""

    reason: str

    def __post_init__(self) -> None:
        if (
            not isinstance(self.reason, str)
            or not 0 < len(self.reason) <= MAX_DROP_REASON
            or not _REASON_CHARS.issuperset(self.reason)
        ):
            raise ValueError(
                f"a drop reason is 1..{MAX_DROP_REASON} letters, digits, '_', '.' or '-' "
                "(a constant: it names a counter and a metric label)"
            )


class _Consumed:
    """The type of :data:`CONSUMED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CONSUMED"

    def __reduce__(self) -> str:
        return "CONSUMED"


CONSUMED: Final = _Consumed()
"""The verdict "answered or absorbed": the packet goes no further and is not a drop."""

Verdict = Packet | Iterable[Packet] | Drop | _Consumed | None
"""What :meth:`Stage.process` may return."""


@dataclass(frozen=True, slots=True, eq=False)
class StageContext:
    """What the host tells a stage about where it runs; handed over before ``on_start`` as
    ``stage.context``. The fields never change for one instance; :attr:`now` follows the
    batch being processed."""

    name: str
    """The stage's name in the pipeline (and in ``wgactors status``)."""
    path: str | None
    """``"inbound"``, ``"outbound"``, or None where there is no path (a unit test)."""
    on_error: str
    """What an exception in ``process`` does besides costing its packet (actors.failure)."""
    incarnation: int
    """1 for the first instance of this entry; more after each restart or replacement."""
    _reply: Callable[[Packet], None] = field(repr=False)
    _peer_for: Callable[[AddressLike], bytes | None] = field(repr=False)
    _now: Callable[[], float] = field(repr=False)
    _run_each: Callable[[tuple[Packet, ...]], list[Packet]] = field(repr=False)
    worker: tuple[int, int] = (0, 1)
    """(this worker, of how many) where the daemon runs worker processes (``--workers``):
    every worker runs its own instance, for the peers it owns. A stage that keeps something
    for the whole interface (a file, a global limit) should tell its instances apart by it."""

    def reply(self, packet: Packet) -> None:
        """See :meth:`Stage.reply`."""
        self._reply(packet)

    def peer_for(self, address: AddressLike) -> bytes | None:
        """See :meth:`Stage.peer_for`."""
        return self._peer_for(address)

    @property
    def now(self) -> float:
        """See :attr:`Stage.now`."""
        return self._now()


class Stage:
    """Base class for custom actors on the inbound or outbound path."""

    tick_interval: ClassVar[float | None] = None
    """Seconds between two calls of :meth:`on_tick`; None (the default): never. At least
    :data:`MIN_TICK_INTERVAL`."""

    _context: StageContext | None = None

    def __init__(self) -> None:
        """Options from the pipeline file arrive as keyword arguments of a subclass's
        ``__init__``; the base class takes none."""

    # -- what users implement

    def on_start(self) -> None:
        """Open what the stage needs (files, sockets); called once ``context`` is set."""

    def on_stop(self) -> None:
        """Close what ``on_start`` opened."""

    def process(self, packet: Packet) -> Verdict:
        """Handle one packet and return a verdict (see the module docstring)."""
        return packet

    def process_batch(self, batch: tuple[Packet, ...]) -> Iterable[Packet]:
        """Handle a whole batch; override for work per batch. Returns the packets to pass
        on (verdicts other than passing are ``process``'s; what a batch stage keeps back it
        counts in ``stats_extra``)."""
        return self.context._run_each(batch)

    def on_tick(self, now: float) -> Iterable[Packet] | None:
        """Called every :attr:`tick_interval` seconds with the time; may return packets to
        pass on, and may :meth:`reply`. A tick that finds the stage busy is late, not
        doubled: ``now`` says when it ran."""
        return None

    def stats_extra(self) -> dict[str, Any]:
        """Figures of your own to show in `wgactors status` (override; keep it small)."""
        return {}

    # -- what users call

    @property
    def context(self) -> StageContext:
        """Where the stage runs (name, path, on_error, ...); set before ``on_start``. A stage
        used directly, outside any host (a call in a test, a REPL), gets one of its own: no
        path, no routes, replies go nowhere, the time is the clock's, verdicts are applied
        but not counted, and exceptions are raised as plain Python does."""
        context = self._context
        if context is None:
            context = self._context = _detached(self)
        return context

    @property
    def now(self) -> float:
        """When the batch being processed was read from the kernel (monotonic seconds; the
        fake clock's time under actors.testing); in :meth:`on_tick`, the tick's time."""
        return self.context.now

    def reply(self, packet: Packet) -> None:
        """Send ``packet`` the opposite way: from an inbound stage to the peer (through
        encrypt, routed by its destination), from an outbound stage to the local host (through
        the TUN writer). Sent after the current batch; counted in ``replies``."""
        self.context.reply(packet)

    def peer_for(self, address: AddressLike) -> bytes | None:
        """The public key of the peer that ``address`` routes to (AllowedIPs, longest prefix),
        or None. The table is rebuilt, privately, only when the configuration changes."""
        return self.context.peer_for(address)


def _detached(stage: Stage) -> StageContext:
    def run_each(batch: tuple[Packet, ...]) -> list[Packet]:
        out: list[Packet] = []
        for packet in batch:
            verdict = stage.process(packet)
            if isinstance(verdict, Packet):
                out.append(verdict)
            elif verdict is None or isinstance(verdict, Drop | _Consumed):
                continue
            else:
                out.extend(verdict)
        return out

    return StageContext(
        type(stage).__name__.lower(),
        None,
        "drop",
        1,
        lambda packet: None,
        lambda address: None,
        time.monotonic,
        run_each,
    )

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
- An exception from ``process`` costs the packet that raised, counted as a ``stage_error`` drop
  and logged rate-limited; the entry's ``on_error`` says whether the instance is then replaced
  (see :mod:`actors.failure`).
- Packets are immutable; to change one, build a new one.
- Work done in ``__init__`` must not acquire resources: the pipeline builds each stage once at
  start-up just to check its options. Open files and sockets in ``on_start``; close them in
  ``on_stop``.
- A slow stage slows its path down: its mailbox fills and the stage before it waits. Nothing is
  dropped silently and nothing grows.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .failure import ErrorPolicy
from .faults import Fault
from .mailbox import Mailbox
from .packet import Packet
from .stages.base import BATCH_SIZE, Outlet, PipelineActor
from .stats import StageSnapshot
from .supervisor import Supervision

__all__ = ["Stage"]


@dataclass(frozen=True, slots=True)
class _Wiring:
    mailbox: Mailbox
    outlet: Outlet | None
    supervision: Supervision | None
    name: str | None
    fault: Fault | None


_WIRING: contextvars.ContextVar[_Wiring | None] = contextvars.ContextVar("wiring", default=None)


@contextlib.contextmanager
def wiring(
    mailbox: Mailbox,
    outlet: Outlet | None,
    supervision: Supervision | None = None,
    name: str | None = None,
    fault: Fault | None = None,
) -> Iterator[None]:
    """Connect the stage constructed inside this block (the pipeline's business, not users')."""
    token = _WIRING.set(_Wiring(mailbox, outlet, supervision, name, fault))
    try:
        yield
    finally:
        _WIRING.reset(token)


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
        sup = wired.supervision
        self._errors = ErrorPolicy(
            self.name,
            sup.on_error if sup is not None else "drop",
            sup.carry if sup is not None else None,
        )
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
        failed = 0
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
                failed += 1
                self._stage_error(e, 1)
        if failed < len(batch) and self._errors.failing_since is not None:
            self._errors.progress()
        return out

    def stats_extra(self) -> dict[str, Any]:
        """Figures of your own to show in `wgactors status` (override; keep it small)."""
        return {}

    # -- plumbing

    def _stage_error(self, error: Exception, count: int) -> None:
        """``count`` packets lost to ``error``: the failure policy (actors.failure)."""
        self.stats.drops["stage_error"] += count
        errors = self._errors
        stalled = errors.stalled
        errors.failed(error, count)
        if stalled is None and errors.stalled is not None and self.supervision is not None:
            self.supervision.stalled(errors.stalled)

    def adopt(self, policy: ErrorPolicy) -> None:
        """Use this failure policy (the single-threaded loop's way of wiring ``on_error``)."""
        self._errors = policy

    @property
    def errors(self) -> ErrorPolicy:
        return self._errors

    def run_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
        """One batch through ``process_batch`` under the failure policy, in either mode. After
        it, :attr:`replace_me` says whether on_error="restart" wants a fresh instance."""
        # Packets are counted, bytes are not: summing sizes would make every hop cost per
        # packet. The I/O stages at both ends count bytes.
        self.stats.packets_in += len(batch)
        errors = self._errors
        before = errors.total
        try:
            out = self.process_batch(batch)
        except Exception as e:  # an overridden process_batch: the batch is what raised
            self._stage_error(e, len(batch))
            out = []
        self.replace_me = errors.total != before and errors.on_error == "restart"
        return out

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        out = self.run_batch(batch)
        if self.replace_me:
            self._replace()
        if self._outlet is None:
            return
        if len(out) <= BATCH_SIZE:
            self.emit(self._outlet, tuple(out))
            return
        for i in range(0, len(out), BATCH_SIZE):
            self.emit(self._outlet, tuple(out[i : i + BATCH_SIZE]))

    def rewire(self, outlet: Outlet) -> None:
        self._outlet = outlet

    def _replace(self) -> None:
        """on_error="restart": finish this batch, then hand over to a fresh instance."""
        if self._dead:
            return
        self._dead = True
        if self.supervision is not None:
            self.supervision.report(
                self._errors.last_error, 0, replace=True, carry=self._errors.carry()
            )
        self.actor_ref.stop(block=False)

    def on_stop(self) -> None:
        if not self._dead:
            self._errors.flush()

    def snapshot(self) -> StageSnapshot:
        self.stats.extra.update(self.stats_extra())
        return super().snapshot()


def _packets(stage: Stage, result: Iterable[Any]) -> list[Packet]:
    items = list(result)
    for item in items:
        if not isinstance(item, Packet):
            raise TypeError(
                f"{type(stage).__name__}.process returned {type(item).__name__}, not a Packet"
            )
    return items

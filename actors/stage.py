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
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

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

    # -- what users implement

    def process(self, packet: Packet) -> Packet | Iterable[Packet] | None:
        """Handle one packet: return it (or a new one), None to drop it, or several packets."""
        return packet

    def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
        """Handle a batch; override to work on whole batches. Returns the packets to pass on."""
        out: list[Packet] = []
        drops = self.stats.drops
        for packet in batch:
            result = self.process(packet)
            if result is None:
                drops["dropped"] += 1
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
        return out

    def stats_extra(self) -> dict[str, Any]:
        """Figures of your own to show in `wgactors status` (override; keep it small)."""
        return {}

    # -- plumbing

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        stats = self.stats
        stats.packets_in += len(batch)
        stats.bytes_in += sum(len(p.data) for p in batch)
        out = self.process_batch(batch)
        if self._outlet is None:
            return
        for i in range(0, len(out), BATCH_SIZE):
            chunk = tuple(out[i : i + BATCH_SIZE])
            self.emit(self._outlet, chunk, sum(len(p.data) for p in chunk))

    def snapshot(self) -> StageSnapshot:
        self.stats.extra.update(self.stats_extra())
        return super().snapshot()

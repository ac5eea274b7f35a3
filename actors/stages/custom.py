"""The actor that hosts a user's stage in the pipeline: a mailbox in, an outlet on, a way back.

All the stage logic (verdicts, the failure policy, ticks, counters) is the
:class:`~actors.runner.Runner`'s, shared with the single-threaded loop and actors.testing; this
actor only moves batches: it takes one from its mailbox, runs it, and sends what passed on to the
next stage, stamped with the batch's arrival time, and the replies the other way.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import pykka

from ..failure import ErrorCarry
from ..faults import Fault
from ..mailbox import Batch, Mailbox
from ..packet import Packet
from ..runner import RouteSource, Runner, StageOutput
from ..stage import Stage
from ..stats import StageSnapshot
from ..supervisor import Supervision
from .base import BATCH_SIZE, Outlet, PipelineActor
from .ticker import StageTick

__all__ = ["StageActor", "start_stage"]

_DATA = operator.attrgetter("data")


class StageActor(PipelineActor):
    """Runs one custom stage entry; ``make_runner`` builds its :class:`Runner` (and so the
    user's instance) on the supervisor's thread, so a constructor that raises is a failed
    start."""

    def __init__(
        self,
        mailbox: Mailbox,
        make_runner: Callable[[], Runner],
        outlet: Outlet | None,
        back: Outlet | None = None,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.runner = make_runner()
        self.stats = self.runner.stats  # one set of counters: the runner's
        self._outlet = outlet
        self._back = back

    def setup(self) -> None:
        self.runner.start()

    def teardown(self) -> None:
        self.runner.stop()

    def on_batch(self, batch: Batch) -> None:
        self._send(self.runner.run(batch.items, batch.arrival), batch.arrival)

    def on_control(self, message: Any) -> Any:
        if isinstance(message, StageTick):
            # The time the tick runs, not the ticker's: ticks queued behind a slow batch or a
            # slow on_tick are then not due, and cost a comparison each.
            now = self.runner.clock()
            out = self.runner.tick(now)
            if out is not None:
                self._send(out, now)
            return None
        return super().on_control(message)

    def _send(self, output: StageOutput, arrival: float) -> None:
        passed, replies = output
        outlet = self._outlet
        if outlet is not None and passed:
            for i in range(0, len(passed), BATCH_SIZE):
                chunk = tuple(passed[i : i + BATCH_SIZE])
                self.emit(outlet, chunk, sum(map(len, map(_DATA, chunk))), arrival)
        if replies:
            self._reply(replies, arrival)

    def _reply(self, replies: list[Packet], arrival: float) -> None:
        accepted = 0
        back = self._back
        for i in range(0, len(replies), BATCH_SIZE):
            chunk = tuple(replies[i : i + BATCH_SIZE])
            if back is not None and back.push(Batch(chunk, arrival)):
                accepted += len(chunk)
        self.runner.replied(accepted, len(replies) - accepted)

    def rewire(self, outlet: Outlet) -> None:
        self._outlet = outlet

    def handover(self) -> ErrorCarry:
        # A restarted incarnation continues this one's counters and error record.
        return self.runner.handover()

    def snapshot(self) -> StageSnapshot:
        return self.runner.snapshot(self._mailbox.stats())


def start_stage(
    cls: type[Stage],
    mailbox: Mailbox,
    outlet: Outlet | None,
    *,
    options: Mapping[str, Any] | None = None,
    name: str | None = None,
    path: str | None = None,
    back: Outlet | None = None,
    on_error: str = "drop",
    routes: RouteSource | None = None,
    supervision: Supervision | None = None,
    fault: Fault | None = None,
    worker: tuple[int, int] = (0, 1),
) -> pykka.ActorRef[StageActor]:
    """Start ``cls(**options)`` as an actor behind ``mailbox`` (tests and benchmarks; the
    pipeline builds its specs the same way)."""
    kwargs = dict(options or {})

    def make_runner() -> Runner:
        return Runner(
            lambda: cls(**kwargs),
            name or mailbox.name,
            path=path,
            on_error=on_error,
            routes=routes,
            carry=supervision.carry if supervision is not None else None,
            incarnation=supervision.incarnation if supervision is not None else 1,
            worker=worker,
        )

    return StageActor.start(
        mailbox, make_runner, outlet, back, supervision=supervision, fault=fault
    )

"""The ticker: the clock of the protocol core's timers and of custom stages' ``on_tick``.

The core never reads a clock; something must tell it the time. Every TICK_INTERVAL the ticker
sends a :class:`Tick` to the decrypt stage's control lane, where it overtakes queued data, and a
:class:`StageTick` with the time to each custom stage (whose runner calls ``on_tick`` when the
stage's own interval is due). The custom stages to tick are an immutable tuple of mailboxes that
the pipeline publishes in a :class:`TickTargets` cell when it starts and after each reload, so a
restarted ticker finds them too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ..mailbox import Mailbox
from .base import PipelineActor

__all__ = ["TICK_INTERVAL", "StageTick", "Tick", "TickTargets", "Ticker"]

TICK_INTERVAL = 0.05  # seconds; the resolution of every protocol timer and of on_tick


@dataclass(frozen=True, slots=True)
class Tick:
    """Fire the protocol timers that are due."""


@dataclass(frozen=True, slots=True)
class StageTick:
    """The time, for a custom stage's ``on_tick`` (monotonic seconds)."""

    now: float


class TickTargets:
    """The mailboxes of the custom stages, as one immutable tuple: one writer (the pipeline),
    read by the ticker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[Mailbox, ...] = ()

    def publish(self, value: tuple[Mailbox, ...]) -> None:
        with self._lock:
            self._value = value

    def get(self) -> tuple[Mailbox, ...]:
        with self._lock:
            return self._value


class Ticker(PipelineActor):
    def __init__(
        self,
        mailbox: Mailbox,
        target: Mailbox,
        interval: float = TICK_INTERVAL,
        stages: TickTargets | None = None,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.target = target
        self.interval = interval
        self.stages = stages
        self._sleep = threading.Event()  # never set: an interruptible, clock-free sleep

    def setup(self) -> None:
        self.actor_ref.tell(Tick())

    def on_control(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self.begin_batch(1)
            self._sleep.wait(self.interval)
            self.target.tell(Tick())
            self.stats.packets_out += 1
            if self.stages is not None:
                tick = StageTick(time.monotonic())
                for box in self.stages.get():
                    # Never wait: a stage stuck in its code must not stall the core's timers.
                    # A tick it cannot take is skipped (on_tick is late, not doubled).
                    if not box.tell(tick, timeout=0):
                        self.stats.drops["stage_tick_refused"] += 1
            self.actor_ref.tell(Tick())
            return None
        return super().on_control(message)

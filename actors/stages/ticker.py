"""The ticker: the clock of the protocol core's timers.

The core never reads a clock; something must tell it the time. Every TICK_INTERVAL the ticker
sends a :class:`Tick` to the decrypt stage's control lane, where it overtakes queued data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..mailbox import Mailbox
from .base import PipelineActor

__all__ = ["TICK_INTERVAL", "Tick", "Ticker"]

TICK_INTERVAL = 0.05  # seconds; the resolution of every protocol timer


@dataclass(frozen=True, slots=True)
class Tick:
    """Fire the protocol timers that are due."""


class Ticker(PipelineActor):
    def __init__(
        self,
        mailbox: Mailbox,
        target: Mailbox,
        interval: float = TICK_INTERVAL,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.target = target
        self.interval = interval
        self._sleep = threading.Event()  # never set: an interruptible, clock-free sleep

    def on_start(self) -> None:
        self.actor_ref.tell(Tick())

    def on_control(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self.begin_batch(1)
            self._sleep.wait(self.interval)
            self.target.tell(Tick())
            self.stats.packets_out += 1
            self.actor_ref.tell(Tick())
            return None
        return super().on_control(message)

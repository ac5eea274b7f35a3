"""What every stage shares: a stable mailbox, an outlet downstream, counters.

A stage is a ``pykka.ThreadingActor`` whose inbox is a :class:`~actors.mailbox.Mailbox` handed
in from outside. The mailbox is the stage's address: it outlives any one incarnation of the
actor, which is what lets a supervisor restart a stage without re-wiring its neighbours and
without losing what was queued for it.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from typing import Any

import pykka
from loguru import logger
from pykka import ActorDeadError

from ..faults import Fault
from ..mailbox import Mailbox
from ..stats import StageSnapshot, StageStats
from ..supervisor import Supervision

__all__ = [
    "BATCH_SIZE",
    "POLL_INTERVAL",
    "GetStats",
    "InjectedFault",
    "Outlet",
    "PipelineActor",
    "Poll",
]

BATCH_SIZE = 64  # packets read from a kernel queue per message, and the largest batch sent on
POLL_INTERVAL = 0.05  # seconds a reader waits for its fd before looking at its mailbox again


@dataclass(frozen=True, slots=True)
class GetStats:
    """Ask a stage for a snapshot of its counters."""


@dataclass(frozen=True, slots=True)
class Poll:
    """A reader stage's note to itself: read the kernel queue again."""


class InjectedFault(RuntimeError):
    """Raised by a stage on purpose, when a test's fault plan says so."""


@dataclass(frozen=True, slots=True)
class Outlet:
    """A stage's connection to the next one, with the edge's full-mailbox policy."""

    mailbox: Mailbox
    block: bool = True

    def push(self, batch: tuple[Any, ...]) -> bool:
        return self.mailbox.push(batch, block=self.block)


_PR_SET_NAME = 15  # prctl(2)
_TASK_COMM_LEN = 15  # bytes of a thread name the kernel keeps (16 with the NUL)


def name_os_thread(name: str) -> None:
    """Give the calling thread a kernel-visible name, so that ``top -H``, ``ps -L`` and
    /proc/PID/task/*/comm show which stage a thread is. Best effort: never raises."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:_TASK_COMM_LEN], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class PipelineActor(pykka.ThreadingActor):
    """Base class of the built-in stages (and of the public :class:`actors.Stage`)."""

    # A stage stuck in a syscall must not keep the process alive after shutdown gave up on it.
    use_daemon_thread = True

    def __init__(
        self,
        mailbox: Mailbox,
        name: str | None = None,
        *,
        supervision: Supervision | None = None,
        fault: Fault | None = None,
    ) -> None:
        self._mailbox = mailbox  # read by _create_actor_inbox during super().__init__()
        super().__init__()
        self.name = name or mailbox.name
        self.stats = StageStats()
        self.supervision = supervision
        self.fault = fault
        self._batches = 0
        self._in_flight = 0  # packets of the batch being processed: lost if it raises

    def _create_actor_inbox(self) -> Mailbox:  # type: ignore[override]
        return self._mailbox

    @property
    def mailbox(self) -> Mailbox:
        return self._mailbox

    def _actor_loop_setup(self) -> None:
        # pykka's setup, with the test fault plan applied before on_start, so that subclasses
        # (users' stages included) need not call super().on_start().
        name_os_thread(f"wga:{self.name}")
        try:
            if self.fault is not None and self.fault.on_start:
                raise InjectedFault(f"{self.name}: injected failure in on_start")
            self.on_start()
        except Exception:
            self._handle_failure(*sys.exc_info())

    def begin_batch(self, size: int) -> None:
        """Note the batch about to be processed (its packets are lost if processing raises)
        and apply the fault plan, if a test gave one."""
        self._in_flight = size
        self._batches += 1
        if self.fault is not None and self.fault.fails(self._batches):
            raise InjectedFault(f"{self.name}: injected failure on batch {self._batches}")

    def on_receive(self, message: Any) -> Any:
        if type(message) is tuple:
            self.begin_batch(len(message))
            self.on_batch(message)
            self._in_flight = 0
            return None
        if isinstance(message, GetStats):
            return self.snapshot()
        return self.on_control(message)

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        """Handle one batch from the data lane."""
        raise NotImplementedError

    def on_control(self, message: Any) -> Any:
        """Handle a control message other than GetStats."""
        return super().on_receive(message)

    def snapshot(self) -> StageSnapshot:
        return self.stats.snapshot(self.name, self._mailbox.stats())

    def emit(self, outlet: Outlet, batch: tuple[Any, ...], nbytes: int = 0) -> None:
        """Pass a batch on; ``nbytes`` (its size, when the caller knows it) counts as bytes out
        only if the next stage took it."""
        if not batch:
            return
        if outlet.push(batch):
            self.stats.packets_out += len(batch)
            self.stats.bytes_out += nbytes
        else:
            self.stats.drops["downstream_full"] += len(batch)

    def _handle_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        # Every way an actor dies of an exception (on_start, a handler, on_stop) passes here,
        # unlike on_failure: report it to the supervisor before the actor is marked stopped.
        # The supervisor logs the event in one line; the traceback is for -v.
        logger.opt(exception=(exc_type, exc_value, traceback)).debug("{} crashed", self.name)
        if self.supervision is not None:
            self.supervision.report(repr(exc_value), self._in_flight)
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()

    def _actor_loop_teardown(self) -> None:
        # Pykka's teardown empties the inbox and fails what it finds. Our data lane belongs to the
        # stage's address, not to this incarnation: leave it for a successor. Only fail the asks
        # that this incarnation will never answer.
        for envelope in self._mailbox.take_control():
            if envelope.reply_to is not None:
                if isinstance(envelope.message, pykka.messages._ActorStop):
                    envelope.reply_to.set(None)
                else:
                    error = ActorDeadError(f"{self.name} stopped before handling the message")
                    envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))

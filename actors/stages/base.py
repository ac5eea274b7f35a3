"""What every stage shares: a stable mailbox, an outlet downstream, counters, its failure path.

A stage is a ``pykka.ThreadingActor`` that sits behind a :class:`~actors.mailbox.Mailbox` handed
in from outside. The mailbox is the stage's address: it outlives any one incarnation of the
actor, which is what lets a supervisor restart a stage without re-wiring its neighbours and
without losing what was queued for it.

Only pykka's public hooks are used (``on_start``, ``on_receive``, ``on_stop``; ``tell`` and
``stop`` on refs), so any pykka 4.x works and nothing breaks silently when its internals move:

- Pykka's own inbox carries only the mailbox's ``WAKE`` token, ``stop``, and a stage's notes to
  itself (a reader's ``Poll``). On ``WAKE`` the stage drains its mailbox, control first, a
  bounded number of items per wake-up (:data:`WAKE_BUDGET`) so that ``stop`` gets its turn.
- Every exception is caught here, never by pykka: the stage reports it to its supervisor and then
  stops itself, so the report always arrives before the exit notice. That covers starting too:
  pykka's ``on_start`` and ``on_stop`` are this class's, and call the stages' ``setup`` and
  ``teardown`` (pykka would skip ``on_failure`` for an ``on_start`` that raises).
- Data arrives as :class:`~actors.mailbox.Batch` values: the items and the time the reader took
  them from the kernel, which every stage passes on with what the batch became.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import pykka
from loguru import logger

from ..failure import ErrorCarry, describe
from ..faults import Fault
from ..io.handover import HandOverSender
from ..mailbox import WAKE, Batch, Letter, Mailbox
from ..stats import StageSnapshot, StageStats
from ..supervisor import Supervision

__all__ = [
    "BATCH_SIZE",
    "POLL_INTERVAL",
    "READ_TURNS",
    "WAKE_BUDGET",
    "GetStats",
    "InjectedFault",
    "Outlet",
    "PipelineActor",
    "Poll",
    "Rewire",
]

BATCH_SIZE = 64  # packets read from a kernel queue per message, and the largest batch sent on
POLL_INTERVAL = 0.05  # seconds a reader waits for its fd before looking at its mailbox again
WAKE_BUDGET = 64  # mailbox items served per wake-up before pykka's own inbox gets a turn
READ_TURNS = 16  # batches a reader stage reads per turn before pykka's inbox gets a look


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

    def push(self, batch: Batch) -> bool:
        return self.mailbox.push(batch, block=self.block)


@dataclass(frozen=True, slots=True)
class Rewire:
    """Send data on to ``outlet`` from the next batch on (a reload changed the next stage)."""

    outlet: Outlet


_PR_SET_NAME = 15  # prctl(2)
_TASK_COMM_LEN = 15  # bytes of a thread name the kernel keeps (16 with the NUL)


def name_os_thread(name: str) -> None:
    """Give the calling thread a kernel-visible name, so that ``top -H``, ``ps -L`` and
    /proc/PID/task/*/comm show which stage a thread is, and the same Python name, which is
    what marks it as one of the daemon's for CPU placement (:mod:`actors.placement`). Best
    effort: never raises."""
    threading.current_thread().name = name
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
        super().__init__()
        self._mailbox = mailbox
        self.name = name or mailbox.name
        self.stats = StageStats()
        self.supervision = supervision
        self.fault = fault
        self._batches = 0
        self._in_flight = 0  # packets of the batch being processed: lost if it raises
        self._dead = False  # this incarnation failed and is stopping: serve nothing more
        self._start_failed = False

    @property
    def mailbox(self) -> Mailbox:
        return self._mailbox

    def on_start(self) -> None:
        # pykka's hook, final: the fault plan, then setup(); a failure is reported (pykka
        # would skip on_failure here), and the mailbox is attached only once setup is done.
        name_os_thread(f"wga:{self.name}")
        try:
            if self.fault is not None and self.fault.on_start:
                raise InjectedFault(f"{self.name}: injected failure in on_start")
            self.setup()
        except Exception as e:
            self._start_failed = True
            self._crash(e, 0)
            return
        self._mailbox.attach(self.actor_ref)

    def on_stop(self) -> None:
        # pykka's hook, final: teardown() unless the start failed; never raises into pykka.
        self._mailbox.detach(self.actor_ref)
        if self._start_failed:
            return
        try:
            self.teardown()
        except Exception as e:
            logger.opt(exception=e).warning("stage {}: stopping raised {!r}", self.name, e)

    def setup(self) -> None:
        """Open what the stage needs (files, sockets); override. Failures are reported."""

    def teardown(self) -> None:
        """Close what ``setup`` opened; override."""

    # -- the hop: pykka delivers WAKE, the stage drains its mailbox

    def on_receive(self, message: Any) -> Any:
        if message is WAKE:
            self._serve()
            return None
        if self._dead:
            return None
        try:
            return self._control(message)
        except Exception as e:
            self._crash(e, self._in_flight)
            return None

    def _serve(self) -> None:
        take = self._mailbox.take
        for _ in range(WAKE_BUDGET):
            if self._dead:
                return
            item = take()
            if item is None:
                return
            try:
                if type(item) is Letter:
                    self._answer(item)
                else:
                    if type(item) is not Batch:  # a bare tuple: stamped when taken
                        item = Batch(cast(tuple[Any, ...], item), time.monotonic())
                    self.begin_batch(len(item.items))
                    self.on_batch(item)
                    self._in_flight = 0
            except Exception as e:
                self._crash(e, self._in_flight)
                return
        self.actor_ref.tell(WAKE)  # more is queued: come back after pykka's inbox had a turn

    def _answer(self, letter: Letter) -> None:
        reply = letter.reply_to
        if reply is None:
            self._control(letter.message)
            return
        try:
            result = self._control(letter.message)
        except Exception as e:  # an ask that fails answers with the error, as pykka does
            reply.set_exception(exc_info=(type(e), e, e.__traceback__))
            return
        reply.set(result)

    def _control(self, message: Any) -> Any:
        if isinstance(message, GetStats):
            return self.snapshot()
        if isinstance(message, Rewire):
            self.rewire(message.outlet)
            return True
        return self.on_control(message)

    def read_turn(self, wait_readable: Callable[[float], bool], read: Callable[[], None]) -> None:
        """One turn of a reader stage (on its :class:`Poll`): ``read`` a batch each time the
        fd is readable, up to :data:`READ_TURNS` batches, and stop early when pykka's inbox
        holds something (a :data:`WAKE` for control mail, or ``stop``) or the fd stays idle
        for :data:`POLL_INTERVAL`. Then the next turn is queued behind whatever came.

        A busy reader so pays pykka's round trip once per turn rather than once per batch."""
        inbox = self.actor_inbox
        for _ in range(READ_TURNS):
            if not wait_readable(POLL_INTERVAL):
                break
            read()
            if not inbox.empty():
                break
        self.actor_ref.tell(Poll())

    def rewire(self, outlet: Outlet) -> None:
        """Point the stage's data outlet elsewhere (stages that have one override this)."""
        raise TypeError(f"stage {self.name} has no outlet to re-wire")

    def _crash(self, error: Exception, lost: int) -> None:
        """This incarnation is done: report why, then stop (the report arrives first)."""
        if self._dead:
            return
        self._dead = True
        # The supervisor logs the event in one line; the traceback is for -v.
        logger.opt(exception=error).debug("{} crashed", self.name)
        if self.supervision is not None:
            self.supervision.report(describe(error), lost, carry=self.handover())
        self.actor_ref.stop(block=False)

    def handover(self) -> ErrorCarry | None:
        """What the next incarnation continues from after a crash (custom stages: counters)."""
        return None

    def begin_batch(self, size: int) -> None:
        """Note the batch about to be processed (its packets are lost if processing raises)
        and apply the fault plan, if a test gave one."""
        self._in_flight = size
        self._batches += 1
        if self.fault is not None and self.fault.fails(self._batches):
            raise InjectedFault(f"{self.name}: injected failure on batch {self._batches}")

    def on_batch(self, batch: Batch) -> None:
        """Handle one batch from the data lane."""
        raise NotImplementedError

    def on_control(self, message: Any) -> Any:
        """Handle a control message other than GetStats."""
        logger.debug("{}: unexpected control message {!r}", self.name, message)
        return None

    def snapshot(self) -> StageSnapshot:
        more_drops, more = self.figures_beside()
        return self.stats.snapshot(
            self.name, self._mailbox.stats(), more_drops=more_drops, more=more
        )

    def figures_beside(self) -> tuple[Mapping[str, int] | None, Mapping[str, Any] | None]:
        """Drop counts and figures the stage shows but does not count itself (its part of the
        protocol core's, say): read for each snapshot, never merged into its counters."""
        return None, None

    def flush_handover(self, doors: HandOverSender) -> None:
        """Send what this stage gathered for other worker processes (actors.workers), and
        count what went and what was dropped."""
        handed = doors.flush()
        if handed:
            self.stats.tally("handed_over_out", handed)
        self.stats.take_drops(doors.drops)

    def emit(self, outlet: Outlet, items: tuple[Any, ...], nbytes: int, arrival: float) -> bool:
        """Pass a batch on, with the time its packets arrived; ``nbytes`` (its size) counts as
        bytes out only if the next stage took it. False if it was dropped (counted)."""
        if not items:
            return True
        if outlet.push(Batch(items, arrival)):
            self.stats.packets_out += len(items)
            self.stats.bytes_out += nbytes
            return True
        self.stats.drops["downstream_full"] += len(items)
        return False

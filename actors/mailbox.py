"""Bounded two-lane mailboxes: the stable address of a stage, in front of pykka's own inbox.

Pykka gives every actor an unbounded ``queue.Queue`` and one envelope per message. A packet
processor needs more, and pays less:

- **Data is bounded, counted in packets** (default 1000: room for a burst of many batches), so
  memory is capped at capacity x 1280 bytes per stage whatever the traffic does.
- **Control is never stuck behind data, and never holds its sender forever.** Stats queries,
  new session keys, timer ticks and re-wiring go in a separate lane that the stage always
  serves first. It is bounded too (:data:`CONTROL_CAPACITY` messages). A sender that finds it
  full waits, but only up to a deadline (:data:`CONTROL_PUT_TIMEOUT` for a ``tell``, the ask's
  own timeout for an ``ask``): a stage stuck in its code must not take the UAPI or metrics
  thread that asked it with it. An ``ask`` that times out withdraws its letter, so queries to a
  stuck stage do not pile up in its lane.
- **The policy for a full data lane belongs to the edge**, so :meth:`Mailbox.push` takes it:
  ``block`` (wait up to a bound, then drop and count: backpressure for stages that read kernel
  queues) or drop at once and count (where waiting could deadlock).
- **The mailbox outlives the actor.** Senders hold the mailbox, not an actor's ref. The running
  incarnation :meth:`attaches <Mailbox.attach>` itself when it has started; a restarted or
  replaced stage keeps its address, and what was queued for the old incarnation is served by the
  next one. Asks wait for the next incarnation too, within their own timeout.
- **A wake-up only when it is worth one.** Pykka's inbox carries a single :data:`WAKE` token, sent
  when the mailbox goes from idle to non-empty. While the stage is busy, a batch costs its sender
  one lock and nothing else: no envelope, no condition variable, no thread switch. The stage
  drains what is queued with :meth:`Mailbox.take`, one short lock per item.

Only pykka's public API is used: ``ActorRef.tell`` for the token, ``ThreadingFuture`` for asks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any

from pykka import ActorDeadError, ActorRef, ThreadingFuture, Timeout

__all__ = [
    "CONTROL_CAPACITY",
    "CONTROL_PUT_TIMEOUT",
    "DEFAULT_CAPACITY",
    "PUSH_TIMEOUT",
    "WAKE",
    "Batch",
    "Letter",
    "Mailbox",
    "MailboxStats",
]

DEFAULT_CAPACITY = 1000  # packets per stage: 15 full batches, at most ~1.3 MB queued
CONTROL_CAPACITY = 10_000  # control messages; far above any real backlog
PUSH_TIMEOUT = 2.0  # seconds a blocking push waits for room before it drops and counts
CONTROL_PUT_TIMEOUT = 2.0  # seconds a tell waits for room in a full control lane


class _Wake:
    """The one message a mailbox sends through pykka: "you have mail"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WAKE"


WAKE = _Wake()


class Batch:
    """A data-lane message: packets (or datagrams) and when they were read from the kernel.

    The readers stamp the time once per batch (monotonic seconds) and every stage passes it on
    with what the batch became, so a stage sees when its packets arrived, not when it got to
    them. A class with slots, not a dataclass: one is made per batch per hop."""

    __slots__ = ("arrival", "items")

    def __init__(self, items: tuple[Any, ...], arrival: float) -> None:
        self.items = items
        self.arrival = arrival

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"Batch({len(self.items)} items, arrival={self.arrival:.3f})"


@dataclass(frozen=True, slots=True)
class Letter:
    """A control message, and where to put the answer if it was an ask."""

    message: Any
    reply_to: ThreadingFuture[Any] | None = None


@dataclass(frozen=True, slots=True)
class MailboxStats:
    depth: int  # packets queued now
    high_water: int  # most packets ever queued at once
    capacity: int
    control_depth: int
    accepted: int  # packets accepted into the data lane
    dropped: int  # packets refused because the lane was full
    control_refused: int = 0  # control messages refused: the lane stayed full too long


class Mailbox:
    """The bounded inbox of one stage; see the module docstring for the rules."""

    def __init__(self, name: str, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a mailbox holds at least one packet")
        self.name = name
        self.capacity = capacity
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._control: deque[Letter] = deque()
        self._data: deque[Any] = deque()
        self._depth = 0
        self._high_water = 0
        self._accepted = 0
        self._dropped = 0
        self._control_refused = 0
        self._closed = False
        self._target: ActorRef[Any] | None = None  # the running incarnation
        self._scheduled = False  # a WAKE is on its way or being served: no other is needed
        self._waiting = 0  # threads waiting for room or for the lane to drain

    # -- the incarnation behind the address

    def attach(self, ref: ActorRef[Any]) -> None:
        """Point the address at a started incarnation, and wake it if mail is waiting."""
        with self._lock:
            self._target = ref
            self._scheduled = bool(self._control or self._data)
        if self._scheduled:
            self._wake(ref)

    def detach(self, ref: ActorRef[Any]) -> None:
        """The incarnation ``ref`` is gone; mail waits for the next one."""
        with self._lock:
            if self._target is ref:
                self._target = None
                self._scheduled = False

    @staticmethod
    def _wake(ref: ActorRef[Any]) -> None:
        # A dead ref is being replaced; the successor's attach wakes it.
        with contextlib.suppress(ActorDeadError):
            ref.tell(WAKE)

    # -- the stage's side

    def take(self) -> Batch | Letter | None:
        """The next item for the stage: a control :class:`Letter` first, else the oldest data
        batch, else None, after which the next arrival sends a new :data:`WAKE`."""
        with self._lock:
            if self._control:
                letter = self._control.popleft()
                if self._waiting:
                    self._room.notify_all()
                return letter
            if self._data:
                batch = self._data.popleft()
                self._depth -= len(batch)
                if self._waiting:
                    self._room.notify_all()
                return batch  # type: ignore[no-any-return]  # push() takes any Sized; stages give Batch
            self._scheduled = False
            return None

    # -- senders' side: control

    def tell(self, message: Any, timeout: float = CONTROL_PUT_TIMEOUT) -> bool:
        """Send a control message to whichever incarnation of the stage is running. False if
        the control lane stayed full for ``timeout`` seconds (the message is refused, and
        counted) or the mailbox is closed."""
        return self._post(Letter(message), time.monotonic() + timeout)

    def ask(self, message: Any, timeout: float) -> Any:
        """Ask whichever incarnation is running (or the next one) and wait for the answer, at
        most ``timeout`` seconds in all (``pykka.Timeout`` after that). A letter still queued
        when the time is up is withdrawn; one being served answers nobody."""
        deadline = time.monotonic() + timeout
        future: ThreadingFuture[Any] = ThreadingFuture()
        letter = Letter(message, future)
        if not self._post(letter, deadline) and not self._closed:
            raise Timeout(f"{self.name}: control lane full for {timeout:g} s")
        try:
            return future.get(timeout=max(0.0, deadline - time.monotonic()))
        except Timeout:
            self._withdraw(letter)
            raise

    def _post(self, letter: Letter, deadline: float) -> bool:
        with self._lock:
            if self._closed:
                if letter.reply_to is not None:
                    _fail(letter, self.name)
                return False
            if len(self._control) >= CONTROL_CAPACITY:
                self._waiting += 1
                try:
                    while len(self._control) >= CONTROL_CAPACITY and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            self._control_refused += 1
                            return False
                        self._room.wait(remaining)
                finally:
                    self._waiting -= 1
                if self._closed:
                    if letter.reply_to is not None:
                        _fail(letter, self.name)
                    return False
            self._control.append(letter)
            ref = self._target
            if ref is None or self._scheduled:
                return True
            self._scheduled = True
        self._wake(ref)
        return True

    def _withdraw(self, letter: Letter) -> None:
        """Take a timed-out ask's letter out of the lane, if the stage has not taken it yet
        (found by identity: two asks may carry equal messages)."""
        with self._lock:
            for i, queued in enumerate(self._control):
                if queued is letter:
                    del self._control[i]
                    if self._waiting:
                        self._room.notify_all()
                    return

    # -- senders' side: data

    def push(self, batch: Sized, *, block: bool = True, timeout: float = PUSH_TIMEOUT) -> bool:
        """Queue a batch (a :class:`Batch` of packets or datagrams). False if it was dropped.

        With ``block`` the caller waits for room, up to ``timeout``; a batch larger than the
        whole capacity is let in once the lane is empty, so an oversized batch cannot wedge.
        """
        n = len(batch)
        if n == 0:
            return True
        with self._lock:
            if self._depth and self._depth + n > self.capacity:
                if not block or self._closed:
                    self._dropped += n
                    return False
                deadline = time.monotonic() + timeout
                self._waiting += 1
                try:
                    while self._depth and self._depth + n > self.capacity:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or self._closed:
                            self._dropped += n
                            return False
                        self._room.wait(remaining)
                finally:
                    self._waiting -= 1
            self._data.append(batch)
            self._depth += n
            self._accepted += n
            if self._depth > self._high_water:
                self._high_water = self._depth
            ref = self._target
            if ref is None or self._scheduled:
                return True
            self._scheduled = True
        self._wake(ref)
        return True

    def resize(self, capacity: int) -> None:
        """A new capacity (a reload changed the entry's); what is queued stays."""
        if capacity < 1:
            raise ValueError("a mailbox holds at least one packet")
        with self._lock:
            self.capacity = capacity
            if self._waiting:
                self._room.notify_all()

    # -- lifecycle

    def close(self) -> None:
        """No incarnation will come: fail the asks still waiting, and release blocked senders
        (from now on a full lane drops instead of waiting)."""
        with self._lock:
            self._closed = True
            letters = list(self._control)
            self._control.clear()
            self._target = None
            self._room.notify_all()
        for letter in letters:
            if letter.reply_to is not None:
                _fail(letter, self.name)

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the data lane is empty (for a graceful shutdown). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._waiting += 1
            try:
                while self._data:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._room.wait(min(remaining, 0.05))
                return True
            finally:
                self._waiting -= 1

    @property
    def closed(self) -> bool:
        """No incarnation will come (:meth:`close`)."""
        return self._closed

    def empty(self) -> bool:
        with self._lock:
            return not self._control and not self._data

    @property
    def depth(self) -> int:
        return self._depth

    def stats(self) -> MailboxStats:
        with self._lock:
            return MailboxStats(
                self._depth,
                self._high_water,
                self.capacity,
                len(self._control),
                self._accepted,
                self._dropped,
                self._control_refused,
            )

    def __repr__(self) -> str:
        return f"Mailbox({self.name!r}, {self._depth}/{self.capacity})"


def _fail(letter: Letter, name: str) -> None:
    assert letter.reply_to is not None
    error = ActorDeadError(f"{name} stopped before handling the message")
    letter.reply_to.set_exception(exc_info=(ActorDeadError, error, None))

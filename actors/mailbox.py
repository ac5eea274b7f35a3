"""Bounded two-lane mailboxes: the stable address of a stage.

Pykka gives every actor an unbounded ``queue.Queue``. A packet processor needs more:

- **Data is bounded, counted in packets** (default 1000, the seed's channel size), so memory is
  capped at capacity x 1280 bytes per stage whatever the traffic does.
- **Control is never lost and never stuck behind data.** Stop requests, stats queries, new
  session keys and timer ticks go in a separate lane that is always served first. It is bounded
  too (:data:`CONTROL_CAPACITY` messages); a sender that finds it full waits rather than lose a
  control message, which in practice never happens because control is served first.
- **The policy for a full data lane belongs to the edge**, so :meth:`Mailbox.push` takes it:
  ``block`` (wait up to a bound, then drop and count: backpressure for stages that read kernel
  queues) or drop at once and count (where waiting could deadlock).
- **The mailbox outlives the actor.** Senders hold the mailbox, not the actor's ref, so a stage
  that is restarted keeps its address, and the packets queued for the dead incarnation are
  processed by the next one.

It implements pykka's ``ActorInbox`` protocol (``put``/``get``/``empty``) for control messages,
so ``tell``/``ask``/``stop`` keep working; data goes through :meth:`push`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sized
from dataclasses import dataclass
from typing import Any

from pykka import ThreadingFuture
from pykka._envelope import Envelope

__all__ = [
    "CONTROL_CAPACITY",
    "DEFAULT_CAPACITY",
    "PUSH_TIMEOUT",
    "Mailbox",
    "MailboxStats",
]

DEFAULT_CAPACITY = 1000  # packets per stage, as in the seed's bounded channels
CONTROL_CAPACITY = 10_000  # control messages; far above any real backlog
PUSH_TIMEOUT = 2.0  # seconds a blocking push waits for room before it drops and counts


@dataclass(frozen=True, slots=True)
class MailboxStats:
    depth: int  # packets queued now
    high_water: int  # most packets ever queued at once
    capacity: int
    control_depth: int
    accepted: int  # packets accepted into the data lane
    dropped: int  # packets refused because the lane was full


class Mailbox:
    """The bounded inbox of one stage; see the module docstring for the rules."""

    def __init__(self, name: str, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a mailbox holds at least one packet")
        self.name = name
        self.capacity = capacity
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._control: deque[Envelope[Any]] = deque()
        self._data: deque[Any] = deque()
        self._depth = 0
        self._high_water = 0
        self._accepted = 0
        self._dropped = 0
        self._closed = False

    # -- pykka's ActorInbox protocol: the control lane

    def put(self, envelope: Envelope[Any], /) -> None:
        with self._lock:
            while len(self._control) >= CONTROL_CAPACITY:
                self._room.wait(0.1)
            self._control.append(envelope)
            self._readable.notify()

    def get(self) -> Envelope[Any]:
        """The next message: control first, then the oldest data batch."""
        with self._lock:
            while True:
                if self._control:
                    envelope = self._control.popleft()
                    self._room.notify_all()
                    return envelope
                if self._data:
                    batch = self._data.popleft()
                    self._depth -= len(batch)
                    self._room.notify_all()
                    return Envelope(batch)
                self._readable.wait()

    def empty(self) -> bool:
        with self._lock:
            return not self._control and not self._data

    # -- the data lane

    def push(self, batch: Sized, *, block: bool = True, timeout: float = PUSH_TIMEOUT) -> bool:
        """Queue a batch (a tuple of packets or datagrams). False if it was dropped.

        With ``block`` the caller waits for room, up to ``timeout``; a batch larger than the
        whole capacity is let in once the lane is empty, so an oversized batch cannot wedge.
        """
        n = len(batch)
        if n == 0:
            return True
        with self._lock:
            if self._depth and self._depth + n > self.capacity:
                if not block:
                    self._dropped += n
                    return False
                deadline = time.monotonic() + timeout
                while self._depth and self._depth + n > self.capacity:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        self._dropped += n
                        return False
                    self._room.wait(remaining)
            self._data.append(batch)
            self._depth += n
            self._accepted += n
            if self._depth > self._high_water:
                self._high_water = self._depth
            self._readable.notify()
            return True

    def tell(self, message: Any) -> None:
        """Send a control message to whichever incarnation of the stage is running."""
        self.put(Envelope(message))

    def ask(self, message: Any, timeout: float) -> Any:
        """Ask whichever incarnation is running (or the next one) and wait for the answer."""
        future: ThreadingFuture[Any] = ThreadingFuture()
        self.put(Envelope(message, reply_to=future))
        return future.get(timeout=timeout)

    def take_control(self) -> list[Envelope[Any]]:
        """Remove and return the queued control messages (a dead incarnation's asks)."""
        with self._lock:
            taken = list(self._control)
            self._control.clear()
            self._room.notify_all()
            return taken

    def close(self) -> None:
        """Release blocked senders: from now on a full lane drops instead of waiting."""
        with self._lock:
            self._closed = True
            self._room.notify_all()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the data lane is empty (for a graceful shutdown). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._room.wait(min(remaining, 0.05))
            return True

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
            )

    def __repr__(self) -> str:
        return f"Mailbox({self.name!r}, {self._depth}/{self.capacity})"

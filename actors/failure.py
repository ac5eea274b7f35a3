"""What an exception in a custom stage's ``process`` costs: the packet, a count, a rare log line.

A user's stage is code the tunnel does not trust. A bug that hits one packet in ten thousand must
cost those packets and nothing else: not the packets queued behind it, not a restart delay, not
the process. So an exception from ``process`` (or from an overridden ``process_batch``, which
then costs its batch) is:

- **dropped and counted** under the reason ``stage_error``;
- **logged rate-limited**: the first failure at once, then at most one line per
  :data:`LOG_INTERVAL` seconds per stage, with the count since the last line and the last
  exception. A stage failing 10,000 times a second writes one line every few seconds;
- **escalated only on no progress**: when no packet at all has got through the stage for
  :data:`NO_PROGRESS_SECONDS` while at least :data:`NO_PROGRESS_MIN_FAILURES` failed, the stage is
  broken rather than unlucky, and the process ends with exit status 3, the status of a spent
  restart budget (either way the pipeline cannot carry traffic). A stage that passes packets
  between its failures is kept however many it drops.

Whether the instance is replaced after a failure is the entry's choice (``on_error`` in the
pipeline file). ``drop``, the default, keeps the instance: most stage errors are a packet the code
did not expect, and state such as a flow table or an open pcap file is worth more than a fresh
start. ``restart`` replaces the instance at once (no backoff: a packet error is not a start
failure) for stages whose state may be what went wrong; queued packets wait in the mailbox.

The record of a failing streak (:class:`ErrorCarry`) is an immutable value, so that a replaced
instance continues its predecessor's log rate and no-progress clock instead of resetting them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

__all__ = [
    "LOG_INTERVAL",
    "NO_PROGRESS_MIN_FAILURES",
    "NO_PROGRESS_SECONDS",
    "ON_ERROR",
    "ErrorCarry",
    "ErrorPolicy",
]

LOG_INTERVAL = 5.0  # seconds between two log lines about one stage's packet errors
NO_PROGRESS_SECONDS = 5.0  # seconds of failures with nothing passed before the process ends
NO_PROGRESS_MIN_FAILURES = 3  # ...and at least this many failures in that time
ON_ERROR = ("drop", "restart")  # the pipeline file's choices; the first is the default


@dataclass(frozen=True, slots=True)
class ErrorCarry:
    """A failing streak, handed from a replaced instance to its successor."""

    failing_since: float | None = None  # monotonic time of the first failure since progress
    failures: int = 0  # failures since progress
    logged_at: float | None = None  # monotonic time of the last log line
    unlogged: int = 0  # failures since that line
    last_error: str = ""


class ErrorPolicy:
    """One stage's bookkeeping of its packet errors (owned by that stage's thread)."""

    __slots__ = (
        "_clock",
        "failing_since",
        "failures",
        "last_error",
        "last_exception",
        "logged_at",
        "name",
        "on_error",
        "stalled",
        "total",
        "unlogged",
    )

    def __init__(
        self,
        name: str,
        on_error: str = "drop",
        carry: ErrorCarry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error is one of {', '.join(ON_ERROR)}")
        carry = carry or ErrorCarry()
        self.name = name
        self.on_error = on_error
        self.failing_since = carry.failing_since
        self.failures = carry.failures
        self.logged_at = carry.logged_at
        self.unlogged = carry.unlogged
        self.last_error = carry.last_error
        self.last_exception: Exception | None = None  # this instance's, for its callers
        self.stalled: str | None = None  # why the stage is judged broken, once it is
        self.total = 0  # failures of this instance, never reset
        self._clock = clock

    def failed(self, error: Exception, count: int = 1) -> None:
        """``count`` packets were lost to ``error``: count, maybe log, maybe judge stalled."""
        now = self._clock()
        self.last_error = repr(error)
        self.last_exception = error
        self.total += count
        self.failures += count
        self.unlogged += count
        if self.failing_since is None:
            self.failing_since = now
        if self.logged_at is None:
            logger.warning(
                "stage {}: process raised {}; packet dropped (stage_error, on_error={}); "
                "further errors are logged at most every {:g} s",
                self.name,
                self.last_error,
                self.on_error,
                LOG_INTERVAL,
            )
            self.logged_at, self.unlogged = now, 0
        elif now - self.logged_at >= LOG_INTERVAL:
            self.flush(now)
        if (
            self.stalled is None
            and self.failures >= NO_PROGRESS_MIN_FAILURES
            and now - self.failing_since >= NO_PROGRESS_SECONDS
        ):
            self.stalled = (
                f"stage {self.name} let no packet through for "
                f"{now - self.failing_since:.1f} s ({self.failures} failures, last: "
                f"{self.last_error})"
            )

    def progress(self) -> None:
        """A packet got through: the stage works, whatever it drops."""
        self.failing_since = None
        self.failures = 0

    def flush(self, now: float | None = None) -> None:
        """Log the failures not yet logged (at the interval, and when the stage stops)."""
        if not self.unlogged:
            return
        now = self._clock() if now is None else now
        since = now - self.logged_at if self.logged_at is not None else 0.0
        logger.warning(
            "stage {}: {} more stage errors in {:.1f} s (last: {})",
            self.name,
            self.unlogged,
            since,
            self.last_error,
        )
        self.logged_at, self.unlogged = now, 0

    def carry(self) -> ErrorCarry:
        return ErrorCarry(
            self.failing_since, self.failures, self.logged_at, self.unlogged, self.last_error
        )

"""What an exception in a custom stage's ``process`` costs: the packet, a count, a rare log line.

A user's stage is code the tunnel does not trust, and the packets it sees come from peers the
daemon does not control. A bug that one kind of packet triggers must cost those packets and
nothing else: not the packets queued behind it, not a restart delay, and never the process,
since any peer able to send that kind of packet could otherwise end the tunnel. A narrow bug on
a quiet link (a stage that raises on ICMP, a peer that only pings) looks exactly like a hopeless
stage, so nothing here ever escalates. An exception from ``process`` (or from an overridden
``process_batch``, which then costs its batch) is:

- **handled by the entry's ``on_error``** (:data:`ON_ERROR`): ``drop`` (fail-closed, the
  default) drops the packet and counts it under the reason ``stage_error``; ``pass``
  (fail-open) sends the packet on unchanged and counts it as ``stage_error_passed``;
  ``restart`` drops it and replaces the instance at once with a fresh one (no backoff, no
  budget: a packet error is not a start failure), keeping the counters;
- **logged rate-limited**: the stage's first failure at once, with its traceback; then at most
  one line per :data:`LOG_INTERVAL` seconds per stage, with the count since the last line and
  the last exception (its traceback at debug level, i.e. with ``-v``);
- **shown**: a stage with an error in the last :data:`RATE_WINDOW` seconds is *failing*;
  ``wgactors status``, its JSON, the Prometheus gauge ``wgactors_stage_failing`` and systemd's
  ``STATUS=`` line say so, with the error rate and the last error (:meth:`ErrorPolicy.report`).

``drop`` is the default because most stage errors are a packet the code did not expect, and a
filter that fails open would let through what it exists to stop; state such as a flow table is
kept, as it is worth more than a fresh start. ``restart`` is for stages whose state may be what
went wrong; queued packets wait in the mailbox for the new instance.

A replacement happens inside the stage's runner (:mod:`actors.runner`), which keeps the
counters and this record, so they continue instead of starting over. What a crashed incarnation
hands the next one through the supervisor (:class:`ErrorCarry`) is an immutable value.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from .stats import FailureReport, StageSnapshot

__all__ = [
    "LOG_INTERVAL",
    "MAX_ERROR_CHARS",
    "ON_ERROR",
    "RATE_WINDOW",
    "ErrorCarry",
    "ErrorPolicy",
    "describe",
]

LOG_INTERVAL = 5.0  # seconds between two log lines about one stage's packet errors
RATE_WINDOW = 10  # seconds of errors the rate is measured over; failing = an error in them
ON_ERROR = ("drop", "pass", "restart")  # the pipeline file's choices; the first is the default
MAX_ERROR_CHARS = 300  # characters of an exception's repr kept for status and log lines
TRACEBACK_FRAMES = 20  # innermost frames of a logged traceback


@dataclass(frozen=True, slots=True)
class ErrorCarry:
    """What a replaced instance hands its successor: its error record and its counters."""

    errors: int = 0
    passed: int = 0
    logged_at: float | None = None  # monotonic time of the last log line
    unlogged: int = 0  # failures since that line
    last_error: str = ""
    last_error_at: float | None = None
    recent: tuple[tuple[int, int], ...] = ()  # (whole second, errors in it), newest last
    counters: StageSnapshot | None = None


def describe(error: BaseException) -> str:
    """``repr(error)``, cut to :data:`MAX_ERROR_CHARS`. Never raises: a user's exception may
    have a ``__repr__`` that fails, and this runs inside the handler of its failure."""
    try:
        text = repr(error)
    except Exception:
        text = f"<{type(error).__name__}: its repr failed>"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _traceback(error: BaseException) -> str:
    """The traceback with files and lines, no local variables (they may hold keys), and the
    message cut as :func:`describe` cuts it. Never raises."""
    try:
        frames = traceback.format_tb(error.__traceback__, limit=-TRACEBACK_FRAMES)
    except Exception:
        frames = []
    return ("Traceback (most recent call last):\n" + "".join(frames) + describe(error)).rstrip()


class ErrorPolicy:
    """One stage's bookkeeping of its packet errors (owned by that stage's thread)."""

    __slots__ = (
        "_clock",
        "errors",
        "last_error",
        "last_error_at",
        "last_exception",
        "logged_at",
        "name",
        "on_error",
        "passed",
        "recent",
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
            raise ValueError(f"on_error is one of {', '.join(ON_ERROR)}, not {on_error!r}")
        carry = carry or ErrorCarry()
        self.name = name
        self.on_error = on_error
        self.errors = carry.errors  # packets that raised, this instance's predecessors included
        self.passed = carry.passed
        self.logged_at = carry.logged_at
        self.unlogged = carry.unlogged
        self.last_error = carry.last_error
        self.last_error_at = carry.last_error_at
        self.recent: list[tuple[int, int]] = list(carry.recent)
        self.last_exception: BaseException | None = None  # this instance's, for its callers
        self.total = 0  # failures of this instance, never reset
        self._clock = clock

    @property
    def passes(self) -> bool:
        """Whether a packet that raised goes on unchanged (fail-open)."""
        return self.on_error == "pass"

    def failed(self, error: BaseException, count: int = 1, *, hook: str = "process") -> None:
        """``count`` packets raised ``error`` (or ``hook`` did, with no packet at stake):
        count them, and maybe log."""
        now = self._clock()
        self.last_error = describe(error)
        self.last_error_at = now
        self.last_exception = error
        self.total += count
        self.errors += count
        if self.on_error == "pass":
            self.passed += count
        self.unlogged += count
        second = int(now)
        recent = self.recent
        if recent and recent[-1][0] == second:
            recent[-1] = (second, recent[-1][1] + count)
        else:
            recent.append((second, count))
            while recent[0][0] <= second - RATE_WINDOW:
                del recent[0]
        if self.logged_at is None:
            logger.warning(
                "stage {}: {} raised {}; {} (on_error={}); further errors are logged at "
                "most every {:g} s\n{}",
                self.name,
                hook,
                self.last_error,
                "no packet was at stake"
                if hook != "process"
                else "packet passed on unchanged"
                if self.passes
                else "packet dropped",
                self.on_error,
                LOG_INTERVAL,
                _traceback(error),
            )
            self.logged_at, self.unlogged = now, 0
        elif now - self.logged_at >= LOG_INTERVAL:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Log the failures not yet logged (at the interval, and when the stage stops); with
        ``-v`` the last one's traceback too."""
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
        error = self.last_exception
        if error is not None:
            logger.debug("stage {}: the last error's traceback:\n{}", self.name, _traceback(error))
        self.logged_at, self.unlogged = now, 0

    def report(self, now: float | None = None) -> FailureReport:
        now = self._clock() if now is None else now
        floor = int(now) - RATE_WINDOW
        in_window = sum(n for second, n in self.recent if second > floor)
        ago = None if self.last_error_at is None else max(0.0, now - self.last_error_at)
        return FailureReport(
            failing=ago is not None and ago < RATE_WINDOW,
            errors=self.errors,
            passed=self.passed,
            errors_per_second=in_window / RATE_WINDOW,
            last_error=self.last_error,
            last_error_seconds_ago=ago,
            on_error=self.on_error,
        )

    def carry(self, counters: StageSnapshot | None = None) -> ErrorCarry:
        return ErrorCarry(
            self.errors,
            self.passed,
            self.logged_at,
            self.unlogged,
            self.last_error,
            self.last_error_at,
            tuple(self.recent),
            counters,
        )

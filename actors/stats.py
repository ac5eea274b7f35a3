"""Per-stage counters, owned by the stage that updates them.

Nobody else writes a stage's counters; others ask for a :class:`StageSnapshot`, an immutable
copy, through the control lane. Mailbox depth and high-water come from the mailbox itself; a
custom stage's packet errors (failing or not, the rate, the last error) from its failure policy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .mailbox import MailboxStats

__all__ = ["STAGE_ERROR_PASSED", "FailureReport", "StageSnapshot", "StageStats"]

STAGE_ERROR_PASSED = "stage_error_passed"  # the count of packets passed on after an error


@dataclass(frozen=True, slots=True)
class FailureReport:
    """How a stage's packet errors look now, for ``status``, metrics and systemd (made by
    :meth:`actors.failure.ErrorPolicy.report`)."""

    failing: bool  # an error in the last RATE_WINDOW seconds
    errors: int  # packets that raised, ever
    passed: int  # ...of which passed on unchanged (on_error="pass")
    errors_per_second: float  # over the last RATE_WINDOW seconds
    last_error: str
    last_error_seconds_ago: float | None
    on_error: str

    def as_dict(self) -> dict[str, object]:
        return {
            "failing": self.failing,
            "errors": self.errors,
            STAGE_ERROR_PASSED: self.passed,
            "errors_per_second": round(self.errors_per_second, 3),
            "last_error": self.last_error,
            "last_error_seconds_ago": None
            if self.last_error_seconds_ago is None
            else round(self.last_error_seconds_ago, 1),
            "on_error": self.on_error,
        }


@dataclass(slots=True)
class StageStats:
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    def tally(self, key: str, count: int) -> None:
        """Add ``count`` to the stage's own figure ``key`` (a count shown beside the others)."""
        self.extra[key] = self.extra.get(key, 0) + count

    def take_drops(self, drops: Counter[str]) -> None:
        """Move a helper's drop counts (one the stage's thread owns) into the stage's."""
        if drops:
            self.drops.update(drops)
            drops.clear()

    def snapshot(
        self,
        name: str,
        mailbox: MailboxStats | None,
        failure: FailureReport | None = None,
        *,
        more_drops: Mapping[str, int] | None = None,
        more: Mapping[str, Any] | None = None,
    ) -> StageSnapshot:
        """An immutable copy; ``more_drops`` and ``more`` are figures the stage does not own
        itself (its core's drop counts, a stage's own figures), shown beside its counters and
        never merged into them."""
        drops: Mapping[str, int] = self.drops
        if more_drops:
            drops = Counter(self.drops)
            drops.update(more_drops)
        extra = self.extra if not more else {**self.extra, **more}
        return StageSnapshot(
            name,
            self.packets_in,
            self.bytes_in,
            self.packets_out,
            self.bytes_out,
            tuple(sorted(drops.items())),
            mailbox,
            tuple(sorted(extra.items())),
            failure,
        )

    @classmethod
    def restore(cls, snapshot: StageSnapshot) -> StageStats:
        """Counters that continue from ``snapshot`` (a replaced instance's, handed over as an
        immutable value)."""
        return cls(
            snapshot.packets_in,
            snapshot.bytes_in,
            snapshot.packets_out,
            snapshot.bytes_out,
            Counter(dict(snapshot.drops)),
            dict(snapshot.extra),
        )


@dataclass(frozen=True, slots=True)
class StageSnapshot:
    name: str
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    drops: tuple[tuple[str, int], ...]
    mailbox: MailboxStats | None
    extra: tuple[tuple[str, Any], ...] = ()
    failure: FailureReport | None = None  # custom stages: their packet errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "drops": dict(self.drops),
            "mailbox": None
            if self.mailbox is None
            else {
                "depth": self.mailbox.depth,
                "high_water": self.mailbox.high_water,
                "capacity": self.mailbox.capacity,
                "dropped": self.mailbox.dropped,
            },
            **dict(self.extra),
            **({} if self.failure is None else {"failure": self.failure.as_dict()}),
        }

"""Test-only fault injection, so supervision can be tested against the real daemon.

``WGACTORS_INJECT_FAULTS`` holds a comma-separated plan, read once at start-up::

    tun_writer:every=50     each incarnation raises on its 50th data batch
    tun_writer:once=50      only the first incarnation raises, on its 50th batch
    decrypt:always          raises on every batch (the budget must end the process)
    encrypt:start           every incarnation raises in on_start
    encrypt:start-once      only the first incarnation raises in on_start

Unset (the normal case) it does nothing, and it is ignored unless ``WGACTORS_TEST_HOOKS=1`` is
set as well (see actors.settings). It is parsed strictly; a bad plan is a start-up error.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import settings

__all__ = ["FAULTS_ENV", "Fault", "parse_faults"]

FAULTS_ENV = settings.INJECT_FAULTS.name


@dataclass(frozen=True, slots=True)
class Fault:
    every: int = 0  # raise on each multiple of this batch count (0: never)
    on_start: bool = False
    first_only: bool = False  # applies to the first incarnation only

    def for_incarnation(self, incarnation: int) -> Fault | None:
        return None if self.first_only and incarnation > 1 else self

    def fails(self, batch_number: int) -> bool:
        return self.every > 0 and batch_number % self.every == 0


def parse_faults(text: str | None = None) -> dict[str, Fault]:
    text = (settings.get(settings.INJECT_FAULTS) or "") if text is None else text
    plan: dict[str, Fault] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        stage, _, what = item.partition(":")
        kind, _, number = what.partition("=")
        count = int(number) if number.isdigit() and int(number) > 0 else 0
        if what == "always":
            plan[stage] = Fault(every=1)
        elif what in ("start", "start-once"):
            plan[stage] = Fault(on_start=True, first_only=what == "start-once")
        elif kind in ("every", "once") and count:
            plan[stage] = Fault(every=count, first_only=kind == "once")
        else:
            raise ValueError(f"{FAULTS_ENV}: cannot parse {item!r}")
    return plan

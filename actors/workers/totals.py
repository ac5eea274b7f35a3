"""The workers' stage counters summed into one daemon's, for `status` and Prometheus.

Each worker reports its stages as a single daemon does (:meth:`actors.pipeline.Pipeline.stats`);
the interface's figures are their sums, stage by stage, so that every reader of a single
daemon's status reads a pool's unchanged. Counts add up; a level that is a peak
(``high_water``) is the largest; a text that differs between workers is the first worker's
(the per-worker breakdown has them all). Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["sum_stages"]

_PEAKS = frozenset({"high_water"})


def sum_stages(per_worker: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per stage name, in the order the workers list them (the first worker's, then
    any only a later one has), each the sum of that stage in every worker."""
    order: list[str] = []
    merged: dict[str, dict[str, Any]] = {}
    for stages in per_worker:
        for stage in stages:
            name = str(stage.get("name", "?"))
            if name not in merged:
                order.append(name)
                merged[name] = dict(stage)
            else:
                merged[name] = _merge(merged[name], stage)
    return [merged[name] for name in order]


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key not in out or out[key] is None:
            out[key] = value
        else:
            out[key] = _combine(key, out[key], value)
    return out


def _combine(key: str, a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return _merge(a, b)
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) or bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return max(a, b) if key in _PEAKS else a + b
    return a

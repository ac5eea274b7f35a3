"""The ways of running the data plane, by name, and the one factory the daemon calls.

Each mode is a class implementing :class:`actors.dataplane.DataPlane`; adding one adds an entry
here and changes no caller. Worker processes (``--workers N``, N > 1) are the mode
:data:`WORKERS`; one worker is the actor pipeline itself, at no added cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from .dataplane import DataPlane, DataPlaneSpec
from .pipeline import Pipeline
from .single import SingleThreaded
from .wireguard.sharding import MAX_WORKERS
from .workers.pool import WorkerPool

__all__ = [
    "ACTORS",
    "AUTO",
    "MODES",
    "SINGLE_THREADED",
    "WORKERS",
    "make_data_plane",
    "parse_workers",
]

ACTORS = Pipeline.mode
SINGLE_THREADED = SingleThreaded.mode
WORKERS = WorkerPool.mode
MODES: Mapping[str, Callable[[DataPlaneSpec], DataPlane]] = {
    ACTORS: Pipeline,
    SINGLE_THREADED: SingleThreaded,
    WORKERS: WorkerPool,
}
AUTO = "auto"  # one worker per CPU the process may use


def parse_workers(text: str) -> int:
    """``--workers`` / WGACTORS_WORKERS: a count, or ``auto``; ValueError saying why not."""
    text = text.strip().lower()
    if text == AUTO:
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"workers must be a number or {AUTO}, not {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"workers must be 1..{MAX_WORKERS} (or {AUTO}), not {count}")
    return count


def make_data_plane(mode: str, spec: DataPlaneSpec) -> DataPlane:
    """The data plane for ``mode`` (a key of :data:`MODES`), built but not started."""
    try:
        build = MODES[mode]
    except KeyError:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}") from None
    return build(spec)

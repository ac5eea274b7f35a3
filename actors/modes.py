"""The ways of running the data plane, by name, and the one factory the daemon calls.

Each mode is a class implementing :class:`actors.dataplane.DataPlane`; adding one (worker
processes) adds an entry here and changes no caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .dataplane import DataPlane, DataPlaneSpec
from .pipeline import Pipeline
from .single import SingleThreaded

__all__ = ["ACTORS", "MODES", "SINGLE_THREADED", "make_data_plane"]

ACTORS = Pipeline.mode
SINGLE_THREADED = SingleThreaded.mode
MODES: Mapping[str, Callable[[DataPlaneSpec], DataPlane]] = {
    ACTORS: Pipeline,
    SINGLE_THREADED: SingleThreaded,
}


def make_data_plane(mode: str, spec: DataPlaneSpec) -> DataPlane:
    """The data plane for ``mode`` (a key of :data:`MODES`), built but not started."""
    try:
        build = MODES[mode]
    except KeyError:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}") from None
    return build(spec)

"""One data-plane protocol, one factory: the daemon names a mode and gets a DataPlane."""

from __future__ import annotations

import inspect

import pytest

from actors.dataplane import DataPlane
from actors.modes import ACTORS, MODES, SINGLE_THREADED, WORKERS, make_data_plane, parse_workers
from actors.pipeline import Pipeline
from actors.single import SingleThreaded
from actors.workers.pool import WorkerPool

PROTOCOL_METHODS = (
    "start",
    "stop",
    "failure",
    "reload",
    "device_state",
    "configure",
    "stats",
    "breakdown",
    "default_placement",
)
IMPLEMENTATIONS = [Pipeline, SingleThreaded, WorkerPool]


def test_every_mode_is_built_by_the_factory_and_names_itself() -> None:
    assert dict(MODES) == {ACTORS: Pipeline, SINGLE_THREADED: SingleThreaded, WORKERS: WorkerPool}
    assert (Pipeline.mode, SingleThreaded.mode, WorkerPool.mode) == (
        "actors",
        "single-threaded",
        "workers",
    )


@pytest.mark.parametrize("cls", IMPLEMENTATIONS)
def test_each_implementation_declares_the_protocols_attributes(cls: type) -> None:
    for name in ("mode", "switch_interval", "places_itself", "sockets"):
        assert hasattr(cls, name), name


def test_workers_is_a_count_or_auto() -> None:
    import os

    assert parse_workers("3") == 3
    assert parse_workers(" AUTO ") == len(os.sched_getaffinity(0))
    for bad in ("0", "257", "two", "", "-1"):
        with pytest.raises(ValueError, match="workers must be"):
            parse_workers(bad)


@pytest.mark.parametrize("cls", IMPLEMENTATIONS)
def test_each_implementation_has_the_protocols_methods_with_its_signatures(cls: type) -> None:
    for name in PROTOCOL_METHODS:
        want = inspect.signature(getattr(DataPlane, name))
        have = inspect.signature(getattr(cls, name))
        assert list(have.parameters)[: len(want.parameters)] == list(want.parameters), name
        # extra parameters (a pipeline's drain timeout) must have defaults
        extra = list(have.parameters.values())[len(want.parameters) :]
        assert all(p.default is not p.empty for p in extra), name


@pytest.mark.parametrize("cls", IMPLEMENTATIONS)
def test_each_implementation_is_built_from_the_spec_alone(cls: type) -> None:
    params = list(inspect.signature(cls).parameters.values())
    assert params[0].name == "spec"
    assert all(p.default is not p.empty for p in params[1:])


def test_an_unknown_mode_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="expected one of actors, single-threaded, workers"):
        make_data_plane("threads", None)  # type: ignore[arg-type]


def test_no_spec_shows_its_private_key_however_it_is_printed() -> None:
    """An exception or log line that shows a spec ({!r}) must not carry a byte of the key."""
    from actors.daemon import TunnelSpec
    from actors.dataplane import DataPlaneSpec

    key = bytes(range(100, 132))
    for spec in (TunnelSpec("wg0", key), DataPlaneSpec(key, (), None, None)):  # type: ignore[arg-type]
        shown = repr(spec) + str(spec)
        assert key.hex()[:8] not in shown and repr(key)[2:10] not in shown, shown

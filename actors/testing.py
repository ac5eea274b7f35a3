"""Run stages in-process, on a list of packets: no threads, no root, no tunnel.

A unit test of a stage should not need a TUN device and a WireGuard peer. :class:`StageRunner`
calls a stage (or a chain of them) the way the pipeline does, on the calling thread::

    from actors import build
    from actors.testing import run

    def test_blocks_port_9999():
        result = run(BlockPorts, [build.udp("10.0.0.1", "10.0.0.2", 1, 9999)], ports=[9999])
        assert result.passed == []
        assert result.drops == {"dropped": 1}

It keeps the live pipeline's semantics, because it runs the same code (:mod:`actors.runner`):

- the stage gets its context before ``on_start``, which is called before the first packet;
  ``on_stop`` is called at the end;
- verdicts are counted the same way: drops by reason, per stage (:attr:`Result.stats`) and in
  total, ``consumed`` apart;
- replies (:meth:`Stage.reply`) come back in :attr:`Result.replies`, apart from the packets
  passed on, and do not go through the rest of the chain (they travel the other way);
- an exception never ends the run: it costs the packet that raised (``stage_error``), or with
  ``on_error = "pass"`` sends it on unchanged (``stage_error_passed``), and with ``on_error =
  "restart"`` the stage is also replaced by a fresh instance at once, counters kept, as the
  pipeline does; a stage's ``failure`` report in :attr:`Result.stats` says whether it is failing
  (see :mod:`actors.failure`);
- :meth:`Stage.peer_for` answers from the ``routes`` given (prefix -> peer public key);
- time is a :class:`FakeClock` if you give one: each batch is stamped with its time
  (:attr:`Stage.now`), and :meth:`StageRunner.advance` moves it on, calling ``on_tick`` at each
  due interval on the way, in order, with the tick's exact time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .failure import ON_ERROR
from .packet import Packet
from .runner import Runner, StageOutput
from .snapshot import ConfigCell, DeviceConfig
from .stage import Stage
from .stages.base import BATCH_SIZE
from .wireguard.allowedips import parse_prefix
from .wireguard.device import PeerConfig

__all__ = ["MAX_RESULT_ERRORS", "FakeClock", "Result", "StageRunner", "routes_config", "run"]

MAX_RESULT_ERRORS = 1000
"""Exceptions one :class:`Result` keeps (one per failing packet); later ones are counted in
:attr:`Result.errors_dropped`."""

StageSpec = type[Stage] | tuple[type[Stage], Mapping[str, Any]]
"""A stage to build: its class (no options) or ``(class, options)``."""


class FakeClock:
    """A clock that moves only when told: ``clock()`` is the time, in seconds."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the time on (no ticks: :meth:`StageRunner.advance` fires those)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.now += seconds


@dataclass(slots=True)
class Result:
    """What a run produced."""

    passed: list[Packet] = field(default_factory=list)
    """Packets that came out of the end of the chain, in order."""
    replies: list[Packet] = field(default_factory=list)
    """Packets the stages sent the other way, in order."""
    drops: Counter[str] = field(default_factory=Counter)
    """Drops of this run by reason, summed over the stages."""
    errors: list[BaseException] = field(default_factory=list)
    """The exceptions the stages raised, one per failing packet (a failing overridden
    ``process_batch`` or ``on_tick``: one per call), at most :data:`MAX_RESULT_ERRORS`."""
    errors_dropped: int = 0
    """Exceptions beyond :data:`MAX_RESULT_ERRORS`, not kept."""
    restarts: int = 0
    """Stages replaced under ``on_error = "restart"``."""
    stage_error_passed: int = 0
    """Packets that raised and were passed on unchanged (``on_error = "pass"``)."""
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each stage's snapshot after the run, by name, as `wgactors status` shows it."""

    def _keep(self, error: BaseException) -> None:
        if len(self.errors) < MAX_RESULT_ERRORS:
            self.errors.append(error)
        else:
            self.errors_dropped += 1


def routes_config(routes: Mapping[str, bytes]) -> DeviceConfig:
    """A configuration whose AllowedIPs are ``routes`` (prefix -> 32-byte peer key)."""
    by_peer: dict[bytes, list[str]] = {}
    for prefix, key in routes.items():
        parse_prefix(prefix)  # a bad prefix fails here, naming itself
        by_peer.setdefault(key, []).append(prefix)
    peers = tuple(
        PeerConfig(key, allowed_ips=tuple(parse_prefix(p) for p in prefixes))
        for key, prefixes in by_peer.items()
    )
    return DeviceConfig(None, peers)


class StageRunner:
    """A chain of stages run in-process; use it as a context manager (``on_start`` on entry,
    ``on_stop`` on exit), and :meth:`feed` it packets as many times as needed."""

    def __init__(
        self,
        *stages: StageSpec,
        routes: Mapping[str, bytes] | None = None,
        on_error: str = "drop",
        batch_size: int = BATCH_SIZE,
        clock: Callable[[], float] | None = None,
        path: str | None = None,
    ) -> None:
        if not stages:
            raise ValueError("give at least one stage")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error is one of {ON_ERROR}, not {on_error!r}")
        if not 1 <= batch_size <= BATCH_SIZE:
            raise ValueError(f"batch_size is 1..{BATCH_SIZE}")
        if path not in (None, "inbound", "outbound"):
            raise ValueError(f'path is "inbound", "outbound" or None, not {path!r}')
        self._specs = [(s, {}) if isinstance(s, type) else (s[0], dict(s[1])) for s in stages]
        self.config = ConfigCell(routes_config(routes or {}))
        self.on_error = on_error
        self.batch_size = batch_size
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.names = _names([cls for cls, _ in self._specs])
        self._result: Result | None = None  # the result being filled (exceptions go there)
        self.runners = [
            self._runner(i, cls, options, path) for i, (cls, options) in enumerate(self._specs)
        ]
        self._started = False

    def _runner(
        self, index: int, cls: type[Stage], options: dict[str, Any], path: str | None
    ) -> Runner:
        if not isinstance(cls, type) or not issubclass(cls, Stage):
            raise TypeError(f"{cls!r} is not a subclass of actors.Stage")
        return Runner(
            lambda: cls(**options),
            self.names[index],
            path=path,
            on_error=self.on_error,
            routes=self.config.get,
            clock=self.clock,
            on_exception=self._exception,
        )

    def _exception(self, error: BaseException) -> None:
        if self._result is not None:
            self._result._keep(error)

    @property
    def stages(self) -> list[Stage]:
        """The stage instances now (a replaced one is gone from here)."""
        return [r.stage for r in self.runners]

    def set_routes(self, routes: Mapping[str, bytes]) -> None:
        """Change what :meth:`Stage.peer_for` answers, as a `wg set` would."""
        self.config.publish(routes_config(routes))

    def __enter__(self) -> StageRunner:
        for runner in self.runners:
            runner.start()
        self._started = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._started = False
        for runner in self.runners:
            runner.stop()

    def feed(self, packets: Iterable[Packet | bytes]) -> Result:
        """Run ``packets`` through the chain in batches, as the pipeline would, each batch
        stamped with the clock's time; ticks that fell due first run before the first one."""
        if not self._started:
            raise RuntimeError("use the runner in a `with` block, so on_start has run")
        with self._collect() as result:
            self._ticks(self.clock(), result)
            batch: list[Packet] = []
            for item in packets:
                batch.append(item if isinstance(item, Packet) else Packet(item))
                if len(batch) == self.batch_size:
                    self._through(0, tuple(batch), self.clock(), result)
                    batch = []
            if batch:
                self._through(0, tuple(batch), self.clock(), result)
        return result

    def advance(self, seconds: float) -> Result:
        """Move the fake clock on by ``seconds``, calling each stage's ``on_tick`` at every
        interval that falls due on the way, at its exact time and in time order; what the
        ticks pass on goes down the rest of the chain."""
        clock = self.clock
        if not isinstance(clock, FakeClock):
            raise TypeError("advance() needs StageRunner(..., clock=FakeClock())")
        if not self._started:
            raise RuntimeError("use the runner in a `with` block, so on_start has run")
        end = clock.now + seconds
        with self._collect() as result:
            while True:
                due = [r.next_tick for r in self.runners if r.next_tick is not None]
                if not due or min(due) > end:
                    break
                clock.now = max(clock.now, min(due))
                self._ticks(clock.now, result)
            clock.now = max(clock.now, end)
        return result

    def _collect(self) -> _Collecting:
        return _Collecting(self)

    def _ticks(self, now: float, result: Result) -> None:
        for i, runner in enumerate(self.runners):
            out = runner.tick(now)
            if out is not None:
                self._account(i, out, result, now)

    def _through(self, first: int, batch: tuple[Packet, ...], now: float, result: Result) -> None:
        current = batch
        for i in range(first, len(self.runners)):
            current = self._account(i, self.runners[i].run(current, now), result, None)
            if not current:
                return
        result.passed.extend(current)

    def _account(
        self, index: int, output: StageOutput, result: Result, tick: float | None
    ) -> tuple[Packet, ...]:
        """Count what stage ``index`` passed on and replied; after a tick, send what it
        passed on down the rest of the chain. Returns the packets passed on."""
        runner = self.runners[index]
        passed, replies = output
        runner.passed_on(len(passed), sum(len(p.data) for p in passed))
        if replies:
            runner.replied(len(replies), 0)
            result.replies.extend(replies)
        if tick is not None and passed:
            self._through(index + 1, tuple(passed), tick, result)
            return ()
        return tuple(passed)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each stage's snapshot now, by name."""
        return {r.name: r.snapshot().as_dict() for r in self.runners}


class _Collecting:
    """One call's result: drops and counts as differences of the runners' counters."""

    def __init__(self, owner: StageRunner) -> None:
        self.owner = owner
        self.result = Result()

    def __enter__(self) -> Result:
        runners = self.owner.runners
        self.drops = [Counter(r.stats.drops) for r in runners]
        self.passed = [r.errors.passed for r in runners]
        self.replaced = [r.stats.extra["replacements"] for r in runners]
        self.owner._result = self.result
        return self.result

    def __exit__(self, *exc: object) -> None:
        owner, result = self.owner, self.result
        owner._result = None
        for i, runner in enumerate(owner.runners):
            result.drops.update(runner.stats.drops - self.drops[i])
            result.stage_error_passed += runner.errors.passed - self.passed[i]
            result.restarts += runner.stats.extra["replacements"] - self.replaced[i]
        result.stats = owner.stats()


def run(
    stages: StageSpec | Sequence[StageSpec],
    packets: Iterable[Packet | bytes],
    *,
    routes: Mapping[str, bytes] | None = None,
    on_error: str = "drop",
    clock: Callable[[], float] | None = None,
    **options: Any,
) -> Result:
    """Start the stage(s), feed ``packets``, stop them, and return what happened. ``options``
    are the options of a single stage given by its class."""
    chain: list[StageSpec]
    if isinstance(stages, type):
        chain = [(stages, options)]
    elif _is_spec_with_options(stages):
        chain = [stages]  # type: ignore[list-item]  # the shape was just checked
    else:
        chain = list(stages)  # type: ignore[arg-type]  # neither form of one spec: a sequence
    if (options and len(chain) != 1) or (options and not isinstance(stages, type)):
        raise TypeError("keyword options are for one stage given by its class")
    with StageRunner(*chain, routes=routes, on_error=on_error, clock=clock) as runner:
        return runner.feed(packets)


def _is_spec_with_options(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], type)
        and isinstance(value[1], Mapping)
    )


def _names(classes: Sequence[type]) -> list[str]:
    names: list[str] = []
    for cls in classes:
        base = cls.__name__.lower()
        name, n = base, 2
        while name in names:
            name, n = f"{base}{n}", n + 1
        names.append(name)
    return names

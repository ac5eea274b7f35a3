"""Run stages in-process, on a list of packets: no threads, no root, no tunnel.

A unit test of a stage should not need a TUN device and a WireGuard peer. :class:`StageRunner`
calls a stage (or a chain of them) the way the pipeline does, on the calling thread::

    from actors import build
    from actors.testing import run

    def test_blocks_port_9999():
        result = run(BlockPorts, [build.udp("10.0.0.1", "10.0.0.2", 1, 9999)], ports=[9999])
        assert result.passed == []
        assert result.drops == {"dropped": 1}

It keeps the live pipeline's semantics, because it runs the same code (:meth:`Stage.run_batch`):

- ``on_start`` is called before the first packet and ``on_stop`` at the end;
- drops are counted by reason, per stage (:attr:`Result.stats`) and in total;
- replies (:meth:`Stage.reply`) come back in :attr:`Result.replies`, apart from the packets
  passed on, and do not go through the rest of the chain (they travel the other way);
- an exception never ends the run: it costs the packet that raised (``stage_error``), or with
  ``on_error = "pass"`` sends it on unchanged (``stage_error_passed``), and with ``on_error =
  "restart"`` the stage is also replaced by a fresh instance at once, counters kept, as the
  pipeline does; a stage's ``failure`` report in :attr:`Result.stats` says whether it is failing
  (see :mod:`actors.failure`);
- :meth:`Stage.peer_for` answers from the ``routes`` given (prefix -> peer public key).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .failure import ErrorCarry
from .mailbox import Mailbox
from .packet import Packet
from .snapshot import ConfigCell, DeviceConfig
from .stage import ON_ERROR, Stage, wiring
from .stages.base import BATCH_SIZE
from .wireguard.allowedips import parse_prefix
from .wireguard.device import PeerConfig

__all__ = ["Result", "StageRunner", "routes_config", "run"]

StageSpec = type[Stage] | tuple[type[Stage], Mapping[str, Any]]
"""A stage to build: its class (no options) or ``(class, options)``."""


@dataclass(slots=True)
class Result:
    """What a run produced."""

    passed: list[Packet] = field(default_factory=list)
    """Packets that came out of the end of the chain, in order."""
    replies: list[Packet] = field(default_factory=list)
    """Packets the stages sent the other way, in order."""
    drops: Counter[str] = field(default_factory=Counter)
    """Drops of this run by reason, summed over the stages."""
    errors: list[Exception] = field(default_factory=list)
    """The exceptions the stages raised (each cost its packet)."""
    restarts: int = 0
    """Stages replaced under ``on_error = "restart"``."""
    stage_error_passed: int = 0
    """Packets that raised and were passed on unchanged (``on_error = "pass"``)."""
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each stage's snapshot after the run, by name, as `wgactors status` shows it."""


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
    ) -> None:
        if not stages:
            raise ValueError("give at least one stage")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error is one of {ON_ERROR}, not {on_error!r}")
        if not 1 <= batch_size <= BATCH_SIZE:
            raise ValueError(f"batch_size is 1..{BATCH_SIZE}")
        self._specs = [(s, {}) if isinstance(s, type) else (s[0], dict(s[1])) for s in stages]
        self.config = ConfigCell(routes_config(routes or {}))
        self.on_error = on_error
        self.batch_size = batch_size
        self.names = _names([cls for cls, _ in self._specs])
        self.stages: list[Stage] = [self._build(i) for i in range(len(self._specs))]
        self._started = False

    def _build(self, index: int, carry: ErrorCarry | None = None) -> Stage:
        cls, options = self._specs[index]
        if not isinstance(cls, type) or not issubclass(cls, Stage):
            raise TypeError(f"{cls!r} is not a subclass of actors.Stage")
        name = self.names[index]
        box = Mailbox(name)
        with wiring(
            box, None, name=name, routes=self.config.get, on_error=self.on_error, carry=carry
        ):
            return cls(**options)

    def set_routes(self, routes: Mapping[str, bytes]) -> None:
        """Change what :meth:`Stage.peer_for` answers, as a `wg set` would."""
        self.config.publish(routes_config(routes))

    def __enter__(self) -> StageRunner:
        for stage in self.stages:
            stage.on_start()
        self._started = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._started = False
        for stage in self.stages:
            stage.on_stop()

    def feed(self, packets: Iterable[Packet | bytes]) -> Result:
        """Run ``packets`` through the chain in batches, as the pipeline would."""
        if not self._started:
            raise RuntimeError("use the runner in a `with` block, so on_start has run")
        batch: list[Packet] = []
        before = [Counter(s.stats.drops) for s in self.stages]
        result = Result()
        for item in packets:
            batch.append(item if isinstance(item, Packet) else Packet(item))
            if len(batch) == self.batch_size:
                self._one_batch(tuple(batch), result)
                batch = []
        if batch:
            self._one_batch(tuple(batch), result)
        for stage, earlier in zip(self.stages, before, strict=True):
            result.drops.update(stage.stats.drops - earlier)
        result.stats = self.stats()
        return result

    def _one_batch(self, batch: tuple[Packet, ...], result: Result) -> None:
        current = batch
        for i in range(len(self.stages)):
            stage = self.stages[i]
            stats = stage.stats
            outcome = stage.run_batch(current)
            stats.packets_out += len(outcome.passed)
            stats.bytes_out += sum(len(p.data) for p in outcome.passed)
            if outcome.replies:
                stage.count_replies(len(outcome.replies), 0)
                result.replies.extend(outcome.replies)
            if outcome.last_error is not None:
                result.errors.append(outcome.last_error)
                if stage.errors.passes:
                    result.stage_error_passed += outcome.errors
            if stage.replace_me:
                self._restart(i)
                result.restarts += 1
            current = tuple(outcome.passed)
            if not current:
                return
        result.passed.extend(current)

    def _restart(self, index: int) -> None:
        """on_error="restart": a fresh instance at once, continuing the counters and the error
        record (the pipeline hands over the same immutable :class:`ErrorCarry`)."""
        old = self.stages[index]
        carry = old._handover()
        old.on_stop()
        fresh = self._build(index, carry)
        fresh.on_start()
        self.stages[index] = fresh

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each stage's snapshot now, by name."""
        return {s.name: s.snapshot().as_dict() for s in self.stages}


def run(
    stages: StageSpec | Sequence[StageSpec],
    packets: Iterable[Packet | bytes],
    *,
    routes: Mapping[str, bytes] | None = None,
    on_error: str = "drop",
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
    with StageRunner(*chain, routes=routes, on_error=on_error) as runner:
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

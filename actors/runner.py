"""The runner: the one piece of code that drives a user's :class:`~actors.stage.Stage`.

The pipeline's stage actor, the single-threaded loop and :mod:`actors.testing` each own a
:class:`Runner` per stage entry and call it the same way, so the three cannot disagree about
what a verdict means, what an exception costs or what is counted:

- it builds the instance (the user's options and nothing else), hands it its
  :class:`~actors.stage.StageContext` and calls ``on_start``;
- :meth:`Runner.run` takes a batch with its arrival time and returns the packets to pass on and
  the replies to send back; verdicts are counted (``dropped``, drops by the stage's own reason,
  ``consumed``), exceptions go through the failure policy (:mod:`actors.failure`), and under
  ``on_error = "restart"`` a fresh instance replaces the one that raised, right after the
  batch, in the same runner: the counters and the error record simply continue;
- :meth:`Runner.tick` calls ``on_tick`` when the stage's interval is due;
- :meth:`Runner.snapshot` is what ``wgactors status`` shows.

The runner is owned by one thread (the host's); nothing in it is shared.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterable
from typing import Any

from loguru import logger

from .failure import LOG_INTERVAL, ErrorCarry, ErrorPolicy, describe
from .mailbox import MailboxStats
from .packet import AddressLike, Packet, address_bytes
from .snapshot import DeviceConfig
from .stage import CONSUMED, MIN_TICK_INTERVAL, Drop, Stage, StageContext
from .stats import StageSnapshot, StageStats
from .wireguard.allowedips import AllowedIPs

__all__ = [
    "MAX_REPLIES_PER_BATCH",
    "STAGE_ERROR",
    "RouteSource",
    "Runner",
    "StageOutput",
]

MAX_REPLIES_PER_BATCH = 256
MAX_DROP_REASONS = 64  # distinct Drop reasons counted per stage; the rest as DROP_OTHER
DROP_OTHER = "drop_other"
MAX_OWN_FIGURES = 64  # stats_extra figures shown per stage
# What a stage's own figure may not be called (status, metrics and the JSON read these); such
# a figure is shown as stage_NAME instead.
RESERVED_FIGURES = frozenset(
    {"name", "packets_in", "bytes_in", "packets_out", "bytes_out", "drops", "mailbox", "failure"}
)
"""Replies a stage may queue while handling one batch (or one tick); more are dropped and
counted as ``reply_overflow``."""
STAGE_ERROR = "stage_error"
"""The drop reason of a packet whose processing raised."""
_DATA = operator.attrgetter("data")

RouteSource = Callable[[], DeviceConfig]
"""Where a stage reads the current configuration for :meth:`Stage.peer_for`."""
StageOutput = tuple[list[Packet], list[Packet]]
"""(packets to pass on, replies to send the other way)."""


def _no_routes() -> DeviceConfig:
    return _EMPTY


_EMPTY = DeviceConfig(None, ())


class Runner:
    """Drives the instances of one stage entry, one after the other (see the module doc)."""

    def __init__(
        self,
        factory: Callable[[], Stage],
        name: str,
        *,
        path: str | None = None,
        on_error: str = "drop",
        routes: RouteSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        carry: ErrorCarry | None = None,
        incarnation: int = 1,
        on_exception: Callable[[BaseException], None] | None = None,
        worker: tuple[int, int] = (0, 1),
    ) -> None:
        self.factory = factory
        self.name = name
        self.worker = worker
        self.path = path
        self.clock = clock
        self.errors = ErrorPolicy(name, on_error, carry)
        if carry is not None and carry.counters is not None:
            self.stats = StageStats.restore(carry.counters)  # a new incarnation continues
        else:
            self.stats = StageStats()
        extra = self.stats.extra
        extra.setdefault("replies", 0)
        extra.setdefault("consumed", 0)
        extra.setdefault("replacements", 0)
        self.incarnation = incarnation
        self.on_exception = on_exception  # actors.testing keeps every exception
        self._routes = routes or _no_routes
        self._route_config: DeviceConfig | None = None
        self._route_table: AllowedIPs[bytes] = AllowedIPs()
        self._replies: list[Packet] = []
        self._now: float | None = None
        self._raised = False
        self._start_warned = -LOG_INTERVAL
        self.next_tick: float | None = None
        self.stage = self._build()
        self.interval = _interval(self.stage)
        self._per_packet = type(self.stage).process_batch is Stage.process_batch

    @property
    def on_error(self) -> str:
        return self.errors.on_error

    def _build(self) -> Stage:
        stage = self.factory()
        if not isinstance(stage, Stage):
            raise TypeError(f"{type(stage).__name__} is not a subclass of actors.Stage")
        stage._context = StageContext(
            self.name,
            self.path,
            self.errors.on_error,
            self.incarnation,
            self._reply,
            self._peer_for,
            self._current_time,
            self._run_each,
            self.worker,
        )
        return stage

    # -- life cycle

    def start(self) -> None:
        """``on_start``; an exception is the caller's (the host decides what a failed start
        costs)."""
        self.stage.on_start()
        if self.interval is not None:
            self.next_tick = self.clock() + self.interval

    def stop(self) -> None:
        """``on_stop`` (an exception is logged, never raised), and the last error count."""
        _stop(self.stage, self.name)
        self.errors.flush()

    def handover(self) -> ErrorCarry:
        """What the next incarnation of this entry continues from (a crash restart)."""
        return self.errors.carry(self.stats.snapshot(self.name, None))

    # -- the data path

    def run(self, batch: tuple[Packet, ...], arrival: float) -> StageOutput:
        """One batch, read from the kernel at ``arrival`` (monotonic seconds), through the
        stage under the failure policy."""
        stats = self.stats
        stats.packets_in += len(batch)
        stats.bytes_in += sum(map(len, map(_DATA, batch)))  # once per batch, in C
        self._now = arrival
        try:
            if self._per_packet:
                passed = self._run_each(batch)
            else:
                try:
                    passed = self._packets(self.stage.process_batch(batch), "process_batch")
                except BaseException as e:  # an overridden process_batch: the batch is what raised
                    passed = list(batch) if self._failed(e, len(batch)) else []
        finally:
            self._now = None
        return passed, self._after()

    def _run_each(self, batch: tuple[Packet, ...]) -> list[Packet]:
        """``process`` on each packet, its verdict applied (the default ``process_batch``)."""
        out: list[Packet] = []
        append = out.append
        drops = self.stats.drops
        process = self.stage.process
        consumed = 0
        for packet in batch:
            try:
                verdict = process(packet)
                if type(verdict) is Packet:
                    append(verdict)
                elif verdict is None:
                    drops["dropped"] += 1
                elif verdict is CONSUMED:
                    consumed += 1
                elif type(verdict) is Drop:
                    reason = verdict.reason
                    if reason in drops or len(drops) < MAX_DROP_REASONS:
                        drops[reason] += 1
                    else:  # a stage making reasons from packets must not grow this
                        drops[DROP_OTHER] += 1
                else:
                    out.extend(self._packets(verdict, "process"))
            except BaseException as e:  # SystemExit too: a peer's packet must not end anything
                if self._failed(e, 1):
                    append(packet)
        if consumed:
            self.stats.extra["consumed"] += consumed
        return out

    def _packets(self, result: Any, hook: str) -> list[Packet]:
        if isinstance(result, Packet):
            return [result]
        if isinstance(result, str | bytes) or not isinstance(result, Iterable):
            raise TypeError(
                f"{type(self.stage).__name__}.{hook} returned {type(result).__name__}, not a "
                "Packet, None, Drop, CONSUMED or packets"
            )
        items = list(result)
        for item in items:
            if not isinstance(item, Packet):
                raise TypeError(
                    f"{type(self.stage).__name__}.{hook} returned {type(item).__name__} "
                    "among its packets"
                )
        return items

    def _failed(self, error: BaseException, count: int) -> bool:
        """``count`` packets raised ``error``: the failure policy. True if they go on unchanged
        (on_error="pass"), False if they are dropped."""
        self._raised = True
        errors = self.errors
        errors.failed(error, count)
        if self.on_exception is not None:
            self.on_exception(error)
        if errors.passes:
            return True
        if count:
            self.stats.drops[STAGE_ERROR] += count
        return False

    def _after(self) -> list[Packet]:
        """The replies of the batch or tick just run; replaces the instance if it raised and
        on_error="restart"."""
        replies = self._replies
        if replies:
            self._replies = []
        if self._raised:
            self._raised = False
            if self.errors.on_error == "restart":
                self._replace()
        return replies

    # -- time

    def tick(self, now: float) -> StageOutput | None:
        """``on_tick`` if the stage's interval is due at ``now``; None if it is not."""
        due = self.next_tick
        interval = self.interval
        if due is None or interval is None or now < due:
            return None
        due += interval
        self.next_tick = due if due > now else now + interval  # late ticks are not made up
        self._now = now
        passed: list[Packet] = []
        try:
            result = self.stage.on_tick(now)
            if result is not None:
                passed = self._packets(result, "on_tick")
        except BaseException as e:
            self._raised = True
            self.errors.failed(e, 1, hook="on_tick")  # an error, but no packet was lost
            if self.on_exception is not None:
                self.on_exception(e)
        finally:
            self._now = None
        # An on_tick that took longer than the interval: a whole interval for packets before
        # the next, so that ticks (served before data) cannot starve the path.
        end = self.clock()
        if end > self.next_tick:
            self.next_tick = end + interval
        return passed, self._after()

    def _current_time(self) -> float:
        now = self._now
        return self.clock() if now is None else now

    # -- what the context offers

    def _reply(self, packet: Packet) -> None:
        if not isinstance(packet, Packet):
            raise TypeError(f"reply takes a Packet, not {type(packet).__name__}")
        if len(self._replies) >= MAX_REPLIES_PER_BATCH:
            self.stats.drops["reply_overflow"] += 1
            return
        self._replies.append(packet)

    def _peer_for(self, address: AddressLike) -> bytes | None:
        config = self._routes()
        if config is not self._route_config:
            table: AllowedIPs[bytes] = AllowedIPs()
            for peer in config.peers:
                for net in peer.allowed_ips:
                    table.insert(net, peer.public_key)
            self._route_table, self._route_config = table, config
        return self._route_table.lookup_bytes(address_bytes(address))

    # -- accounting

    def passed_on(self, packets: int, nbytes: int) -> None:
        """``packets`` (``nbytes``) went on to the next stage."""
        self.stats.packets_out += packets
        self.stats.bytes_out += nbytes

    def replied(self, accepted: int, refused: int) -> None:
        """Replies handed to the way back, and those it refused (full)."""
        self.stats.extra["replies"] += accepted
        if refused:
            self.stats.drops["reply_dropped"] += refused

    def snapshot(self, mailbox: MailboxStats | None = None) -> StageSnapshot:
        """The counters, with the stage's own figures beside them: never merged into the
        runner's counters, and never in place of a field status and metrics rely on."""
        counters = self.stats.extra
        try:
            mine = dict(self.stage.stats_extra() or {})
        except Exception as e:  # status must not fail because of a stage's figures
            mine = {"stats_extra_error": describe(e)}
        own = {
            (f"stage_{key}" if key in RESERVED_FIGURES or key in counters else key): value
            for key, value in list(mine.items())[:MAX_OWN_FIGURES]
            if isinstance(key, str)
        }
        return self.stats.snapshot(self.name, mailbox, self.errors.report(), more=own)

    # -- on_error = "restart"

    def _replace(self) -> None:
        """A fresh instance in place of the one that raised, its counters and error record
        kept. A packet must not be able to end anything, so a fresh instance that cannot be
        built or started is logged (rate-limited) and the old one carries on."""
        old = self.stage
        # The old instance stops first: what it holds (a port, a file, a lock) is free for the
        # fresh one, as when the supervisor restarts a stage.
        _stop(old, self.name)
        self.incarnation += 1
        try:
            fresh = self._build()
            interval = _interval(fresh)
            fresh.on_start()
        except BaseException as e:
            self.incarnation -= 1
            now = time.monotonic()
            if now - self._start_warned >= LOG_INTERVAL:
                self._start_warned = now
                logger.opt(exception=e).warning(
                    "stage {}: a fresh instance failed to start ({}); the old one carries "
                    "on (logged at most every {:g} s)",
                    self.name,
                    describe(e),
                    LOG_INTERVAL,
                )
            try:  # the old one takes back what it released
                old.on_start()
            except BaseException as again:
                logger.opt(exception=again).debug("stage {}: restarting the old one", self.name)
            return
        self.stage = fresh
        self.interval = interval
        self.next_tick = None if interval is None else self.clock() + interval
        self._per_packet = type(fresh).process_batch is Stage.process_batch
        self.stats.extra["replacements"] += 1
        logger.debug("stage {}: replaced after an error", self.name)


def _interval(stage: Stage) -> float | None:
    interval = stage.tick_interval
    if interval is None:
        return None
    if (
        not isinstance(interval, int | float)
        or isinstance(interval, bool)
        or not interval >= MIN_TICK_INTERVAL
    ):
        raise ValueError(
            f"{type(stage).__name__}.tick_interval is a number of seconds, at least "
            f"{MIN_TICK_INTERVAL:g}, or None; not {interval!r}"
        )
    return float(interval)


def _stop(stage: Stage, name: str) -> None:
    try:
        stage.on_stop()
    except BaseException as e:
        logger.opt(exception=e).warning("stage {}: on_stop raised {}", name, describe(e))

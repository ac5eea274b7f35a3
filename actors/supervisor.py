"""An OTP-style supervisor for the pipeline's stages.

Pykka has no supervision (pykka issue 42), and its failure semantics shape this module:

- a ``tell`` handler that raises stops the actor, and pykka would fail everything queued for it;
- an exception in ``on_start`` stops the actor without calling ``on_failure``;
- a restarted actor is a new object with a new ref.

So the supervisor never relies on ``on_failure`` alone. Each incarnation of a child gets a
watcher thread that waits on the actor's ``actor_stopped`` event and sends the supervisor an
:class:`Exited` notice; the child additionally reports *why* it died (:class:`Failed`) from its
own failure path, which also covers ``on_start``. Addresses are stable: a child is always started
on the same :class:`~actors.mailbox.Mailbox`, so its neighbours never notice a restart and the
packets queued for the dead incarnation are processed by the next one. Only the batch that
raised is lost, and it is counted.

Strategies, restart types, the restart budget and backoff follow Erlang/OTP and Akka's backoff
supervisor. When the budget is spent the supervisor escalates: it calls ``on_escalate`` with one
line saying why, and the owner shuts the process down cleanly (exit status 3).
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka
from loguru import logger

from .failure import ErrorCarry, describe
from .mailbox import Mailbox

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_BUDGET",
    "SHUTDOWN_TIMEOUT",
    "AddChild",
    "Backoff",
    "ChildSpec",
    "Exited",
    "Failed",
    "RemoveChild",
    "ReplaceChild",
    "Restart",
    "RestartBudget",
    "Shutdown",
    "StopChildren",
    "Strategy",
    "Supervision",
    "Supervisor",
    "UpdateSpec",
]

SHUTDOWN_TIMEOUT = 3.0  # seconds a child gets to stop before it is abandoned with a warning
MIN_STOP_WAIT = 0.001  # seconds waited for a child asked to stop once a stop's deadline is past


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"  # restart only the child that died
    REST_FOR_ONE = "rest_for_one"  # ...and every child started after it
    ONE_FOR_ALL = "one_for_all"  # ...and every other child


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only if it died abnormally
    TEMPORARY = "temporary"  # never restarted


@dataclass(frozen=True, slots=True)
class RestartBudget:
    """At most ``max_restarts`` within ``within`` seconds, across all children; then escalate.

    The default suits a packet processor: a stage that crashes on a rare bad packet recovers,
    while one that crashes on every packet exhausts the budget within a couple of seconds
    (backoff included) and takes the process down instead of looping.
    """

    max_restarts: int = 5
    within: float = 10.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restart k (0-based) of a child: min(cap, base * factor**k), +-jitter.
    The count k resets once the child has run ``reset_after`` seconds without failing."""

    base: float = 0.05
    factor: float = 2.0
    cap: float = 2.0
    jitter: float = 0.2
    reset_after: float = 30.0

    def delay(self, k: int, rng: random.Random) -> float:
        d = min(self.cap, self.base * self.factor**k)
        return d * (1 + rng.uniform(-self.jitter, self.jitter))


DEFAULT_BUDGET = RestartBudget()
DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True, slots=True)
class Supervision:
    """Given to each incarnation at construction: where to report its failure, and as whom."""

    supervisor: pykka.ActorRef[Any]
    name: str
    incarnation: int
    carry: ErrorCarry | None = None  # what the incarnation before this one handed on

    def report(self, error: str, lost: int, *, carry: ErrorCarry | None = None) -> None:
        """Say why this incarnation is about to stop (sent before it stops, so the supervisor
        has the reason when the exit notice comes), and what the next one continues from."""
        if self.supervisor.is_alive():
            self.supervisor.tell(Failed(self.name, self.incarnation, error, lost, carry))


@dataclass(frozen=True)
class ChildSpec:
    """How to start one incarnation of a child on its (stable) mailbox."""

    name: str
    start: Callable[[Mailbox, Supervision], pykka.ActorRef[Any]]
    mailbox: Mailbox
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = SHUTDOWN_TIMEOUT
    budget: RestartBudget | None = None  # this child's own budget, instead of the shared one


@dataclass(frozen=True, slots=True)
class Failed:
    """A child's own report of why it is dying (sent before it stops)."""

    name: str
    incarnation: int
    error: str
    lost: int  # packets in the batch that raised; they are not retried
    carry: ErrorCarry | None = None  # error record and counters, for the next incarnation


@dataclass(frozen=True, slots=True)
class Exited:
    """A watcher's notice that an incarnation has stopped, for whatever reason."""

    name: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class RestartDue:
    name: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class GetSupervisorStats:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Stop every child, in reverse start order: each gets ``timeout`` (default: its spec's),
    and all of them together no more than until ``deadline`` (``time.monotonic()``)."""

    timeout: float | None = None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class StopChildren:
    """Stop these children for good (in the order given), e.g. the readers before a drain;
    waiting for them ends at ``deadline`` (``time.monotonic()``) if one is given."""

    names: tuple[str, ...]
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class AddChild:
    """Start a new child (a reload's new stage), placed in start order right after ``after``
    (its downstream neighbour, which must already run)."""

    spec: ChildSpec
    after: str


@dataclass(frozen=True, slots=True)
class RemoveChild:
    """Stop a child for good and forget it (a reload's removed stage, once drained)."""

    name: str


@dataclass(frozen=True, slots=True)
class ReplaceChild:
    """Stop the child's running instance and start one from ``spec`` on the same mailbox (a
    reload's changed stage); what is queued waits for the new instance."""

    spec: ChildSpec


@dataclass(frozen=True, slots=True)
class UpdateSpec:
    """Use ``spec`` for the child's next restarts, without restarting it now (a re-wired
    neighbour)."""

    spec: ChildSpec


@dataclass
class _Child:
    spec: ChildSpec
    ref: pykka.ActorRef[Any] | None = None
    incarnation: int = 0
    started_at: float = 0.0
    restarts: int = 0
    consecutive: int = 0  # restarts since the last stable period, for backoff
    lost: int = 0
    last_error: str | None = None
    failure: Failed | None = None  # report of the current incarnation, if it sent one
    stopping: bool = False  # we stopped it on purpose: its exit is not a failure
    pending_restart: bool = False
    removed: bool = False
    carry: ErrorCarry | None = None  # handed to the next incarnation
    restart_times: deque[float] = field(default_factory=deque)


class Supervisor(pykka.ThreadingActor):
    """Starts children in order, restarts them by strategy, escalates when the budget is spent.

    It is itself a Pykka actor: all its state is touched only on its own thread, and children,
    watchers and backoff timers talk to it only through messages.
    """

    use_daemon_thread = True

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        budget: RestartBudget = DEFAULT_BUDGET,
        backoff: Backoff = DEFAULT_BACKOFF,
        on_escalate: Callable[[str], None] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("child names must be unique")
        self.strategy = strategy
        self.budget = budget
        self.backoff = backoff
        self.on_escalate = on_escalate
        self._children = {s.name: _Child(s) for s in specs}
        self._order = names
        self._restart_times: deque[float] = deque(maxlen=budget.max_restarts + 1)
        self._rng = random.Random(seed)
        self._escalated = False
        self._shutting_down = False
        self._timers: set[threading.Timer] = set()

    # -- lifecycle

    def on_start(self) -> None:
        threading.current_thread().name = "wga:supervisor"  # one of the daemon's (placement)
        for name in self._order:
            self._start_child(self._children[name])

    def on_stop(self) -> None:
        self._shutdown(None)

    def _start_child(self, child: _Child) -> None:
        child.incarnation += 1
        child.failure = None
        child.stopping = False
        child.pending_restart = False
        child.started_at = time.monotonic()
        incarnation = child.incarnation
        supervision = Supervision(self.actor_ref, child.spec.name, incarnation, child.carry)
        child.carry = None
        ref = child.spec.start(child.spec.mailbox, supervision)
        child.ref = ref
        me = self.actor_ref
        name = child.spec.name

        def watch() -> None:
            ref.actor_stopped.wait()
            if me.is_alive():
                me.tell(Exited(name, incarnation))

        threading.Thread(target=watch, name=f"wga:watch-{name}-{incarnation}", daemon=True).start()

    def _stop_child(
        self, child: _Child, timeout: float | None = None, deadline: float | None = None
    ) -> None:
        ref = child.ref
        if ref is None or not ref.is_alive():
            return
        child.stopping = True
        wait = timeout or child.spec.shutdown_timeout
        if deadline is not None:  # a stop past the deadline is still asked for, not waited for
            wait = max(MIN_STOP_WAIT, min(wait, deadline - time.monotonic()))
        try:
            ref.stop(block=True, timeout=wait)
        except pykka.Timeout:
            logger.warning(
                "stage {} did not stop within {:.2g} s; abandoned", child.spec.name, wait
            )
        except pykka.ActorDeadError:
            pass

    def _shutdown(self, timeout: float | None, deadline: float | None = None) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        for t in list(self._timers):
            t.cancel()
        for name in reversed(self._order):
            self._stop_child(self._children[name], timeout, deadline)

    # -- messages

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Failed):
            child = self._children.get(message.name)
            if child is not None and message.incarnation == child.incarnation:
                child.failure = message
        elif isinstance(message, Exited):
            self._on_exit(message)
        elif isinstance(message, RestartDue):
            self._timers = {t for t in self._timers if t.is_alive()}
            child = self._children.get(message.name)
            if (
                child is not None
                and child.pending_restart
                and message.incarnation == child.incarnation
                and not self._shutting_down
            ):
                self._restart_group(child)
        elif isinstance(message, GetSupervisorStats):
            return self.stats()
        elif isinstance(message, AddChild | RemoveChild | ReplaceChild | UpdateSpec):
            return self._change(message)
        elif isinstance(message, Shutdown):
            self._shutdown(message.timeout, message.deadline)
        elif isinstance(message, StopChildren):
            for name in message.names:
                child = self._children.get(name)
                if child is not None:
                    child.removed = True
                    self._stop_child(child, deadline=message.deadline)
        else:
            return super().on_receive(message)
        return None

    def _change(self, message: AddChild | RemoveChild | ReplaceChild | UpdateSpec) -> bool:
        """A reload's change to the children; False if it could not be made."""
        if self._shutting_down:
            return False
        if isinstance(message, AddChild):
            name = message.spec.name
            if name in self._children or message.after not in self._order:
                return False
            self._order.insert(self._order.index(message.after) + 1, name)
            child = self._children[name] = _Child(message.spec)
            return self._start_or_escalate(child)
        if isinstance(message, RemoveChild):
            gone = self._children.get(message.name)
            if gone is None:
                return False
            gone.removed = True
            self._stop_child(gone)
            del self._children[message.name]
            self._order.remove(message.name)
            return True
        known = self._children.get(message.spec.name)
        if known is None:
            return False
        known.spec = message.spec
        if isinstance(message, ReplaceChild):
            self._stop_child(known)
            known.carry = None
            known.consecutive = 0
            return self._start_or_escalate(known)
        return True

    def _on_exit(self, notice: Exited) -> None:
        child = self._children.get(notice.name)
        if child is None or notice.incarnation != child.incarnation:
            return  # a stale notice from an incarnation already replaced
        if child.stopping or self._shutting_down or child.removed:
            return
        # A child that reported a failure died abnormally; one that stopped without a report
        # (and without us asking) ended normally, which only a permanent child is restarted for.
        failure = child.failure
        error = failure.error if failure is not None else "stopped by itself"
        if failure is not None:
            child.lost += failure.lost
            child.carry = failure.carry
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and failure is None):
            child.removed = True
            logger.info(
                "stage {} ended ({}); not restarted ({})", notice.name, error, restart.value
            )
            return
        now = time.monotonic()
        # A child with a budget of its own is judged by it alone, and does not use up the
        # shared one (Erlang's intensity, per child where the pipeline file asks for it).
        budget, times = (
            (self.budget, self._restart_times)
            if child.spec.budget is None
            else (child.spec.budget, child.restart_times)
        )
        times.append(now)
        while len(times) > budget.max_restarts + 1:
            times.popleft()
        if len(times) > budget.max_restarts and now - times[0] <= budget.within:
            self._escalate(
                f"stage {notice.name} failed ({error}): more than {budget.max_restarts} "
                f"restarts within {budget.within:g} s"
            )
            return
        if now - child.started_at >= self.backoff.reset_after:
            child.consecutive = 0
        delay = self.backoff.delay(child.consecutive, self._rng)
        child.consecutive += 1
        child.restarts += 1
        child.last_error = error
        logger.warning(
            "stage {} {}: {}; restart #{} in {:.0f} ms ({} packets lost)",
            notice.name,
            "failed" if failure is not None else "stopped",
            error,
            child.restarts,
            delay * 1000,
            failure.lost if failure is not None else 0,
        )
        child.pending_restart = True
        timer = threading.Timer(delay, self._due, args=(notice.name, child.incarnation))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _due(self, name: str, incarnation: int) -> None:
        # Runs on the timer's thread: it may only send a message, never touch our state.
        if self.actor_ref.is_alive():
            self.actor_ref.tell(RestartDue(name, incarnation))

    def _restart_group(self, failed: _Child) -> None:
        """Restart ``failed`` and, by strategy, its siblings, in start order."""
        index = self._order.index(failed.spec.name)
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [failed.spec.name]
        elif self.strategy is Strategy.REST_FOR_ONE:
            group = self._order[index:]
        else:
            group = list(self._order)
        group = [n for n in group if not self._children[n].removed]
        for name in reversed(group):
            if name != failed.spec.name:
                self._stop_child(self._children[name])
        for name in group:
            child = self._children[name]
            if name != failed.spec.name:
                child.restarts += 1
            if not self._start_or_escalate(child):
                return

    def _start_or_escalate(self, child: _Child) -> bool:
        try:
            self._start_child(child)
        except Exception as e:  # a constructor that raises is a failed start
            self._escalate(f"stage {child.spec.name} could not be restarted: {describe(e)}")
            return False
        return True

    def _escalate(self, reason: str) -> None:
        if self._escalated:
            return
        self._escalated = True
        logger.error("supervisor giving up: {}", reason)
        self._shutdown(None)
        if self.on_escalate is not None:
            self.on_escalate(reason)

    # -- introspection

    def stats(self) -> dict[str, Any]:
        return {
            "order": list(self._order),
            "strategy": self.strategy.value,
            "escalated": self._escalated,
            "children": {
                name: {
                    "restarts": c.restarts,
                    "incarnation": c.incarnation,
                    "lost": c.lost,
                    "last_error": c.last_error,
                    "alive": c.ref is not None and c.ref.is_alive(),
                    "restart": c.spec.restart.value,
                }
                for name, c in self._children.items()
            },
        }

    def child_ref(self, name: str) -> pykka.ActorRef[Any] | None:
        return self._children[name].ref

"""systemd's readiness protocol (sd_notify), without libsystemd.

With ``Type=notify`` systemd considers the service started only when it says ``READY=1``, so
units ordered after it (``After=wgactors@wg0.service``) start once the tunnel exists, not merely
once the process does. The protocol is one datagram of ``KEY=value`` lines to the Unix socket
named by ``NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``). Without
that variable every function here does nothing, so the daemon calls them unconditionally.
Sending never raises: a service manager that went away must not take the tunnel with it.

A custom stage that keeps raising does not stop the tunnel (actors.failure), so the one place an
operator looks, `systemctl status`, must say so: :class:`FailingStages` keeps the ``STATUS=``
line naming the failing stages, polled by the daemon's watcher.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from . import settings

__all__ = ["FailingStages", "failing_text", "notify", "ready", "reloading", "status", "stopping"]

MAX_STATUS_CHARS = 200  # systemd shows STATUS= on one line of `systemctl status`
SEND_TIMEOUT = 1.0  # seconds; the socket is local, so anything longer means it is stuck
HEALTH_INTERVAL = 5.0  # seconds between two looks at the stages for failing ones


def _address(value: str) -> str | bytes:
    return b"\0" + value[1:].encode() if value.startswith("@") else value


def notify(*lines: str) -> bool:
    """Send ``lines`` as one notification; True if it was delivered."""
    target = settings.get(settings.NOTIFY_SOCKET)
    if not target or not lines:
        return False
    payload = "\n".join(line.replace("\n", " ") for line in lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.connect(_address(target))
            sock.sendall(payload)
        return True
    except OSError:
        return False


def _status_line(text: str) -> str:
    return "STATUS=" + text[:MAX_STATUS_CHARS]


def ready(text: str) -> bool:
    """The tunnel is up (or a reload is done)."""
    return notify("READY=1", _status_line(text))


def status(text: str) -> bool:
    return notify(_status_line(text))


def reloading(text: str = "reloading") -> bool:
    """A reload started; call :func:`ready` when it ends. MONOTONIC_USEC lets systemd 253+
    (``Type=notify-reload``) match this notice to the reload it asked for."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", _status_line(text))


def stopping(text: str = "shutting down") -> bool:
    return notify("STOPPING=1", _status_line(text))


def failing_text(up: str, stages: list[dict[str, Any]]) -> str:
    """The ``STATUS=`` text: ``up`` alone, or followed by the failing stages, each with its
    error rate and last error."""
    failing = []
    for stage in stages:
        failure = stage.get("failure")
        if isinstance(failure, dict) and failure.get("failing"):
            failing.append(
                f"{stage.get('name', '?')} ({failure.get('errors_per_second', 0):g} errors/s, "
                f"last: {failure.get('last_error', '')})"
            )
    return f"{up}; stage failing: {'; '.join(failing)}" if failing else up


class FailingStages:
    """Tells systemd which custom stages are failing, when that changes. ``stats`` is the
    controller's stats query (the JSON that `wgactors status` reads); :meth:`poll` is cheap to
    call often, looks at most every ``interval`` seconds, and never raises."""

    def __init__(
        self,
        up: str,
        stats: Callable[[], str],
        interval: float = HEALTH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.up = up
        self._stats = stats
        self._interval = interval
        self._clock = clock
        self._next = clock() + interval
        self.sent = up  # the text systemd has now

    def poll(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._interval
        try:
            stages = json.loads(self._stats()).get("stages") or []
            text = failing_text(self.up, stages)
        except Exception as e:  # a stats query that timed out: try again next time
            logger.debug("stage health not known: {!r}", e)
            return
        if text != self.sent:
            self.sent = text
            status(text)

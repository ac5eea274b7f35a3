"""systemd's readiness protocol (sd_notify), without libsystemd.

With ``Type=notify`` systemd considers the service started only when it says ``READY=1``, so
units ordered after it (``After=wgactors@wg0.service``) start once the tunnel exists, not merely
once the process does. The protocol is one datagram of ``KEY=value`` lines to the Unix socket
named by ``NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``). Without
that variable every function here does nothing, so the daemon calls them unconditionally.
Sending never raises: a service manager that went away must not take the tunnel with it.
"""

from __future__ import annotations

import socket
import time

from . import settings

__all__ = ["notify", "ready", "reloading", "status", "stopping"]

MAX_STATUS_CHARS = 200  # systemd shows STATUS= on one line of `systemctl status`
SEND_TIMEOUT = 1.0  # seconds; the socket is local, so anything longer means it is stuck


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

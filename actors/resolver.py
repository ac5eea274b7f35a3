"""Resolving endpoint names at start-up, retried as wg(8) retries them.

At boot the network (or the DNS server) often comes up after the VPN unit starts, so a name
that fails to resolve now may resolve in a few seconds. wg retries with a growing pause and
reads the number of retries from ``WG_ENDPOINT_RESOLUTION_RETRIES`` (a number, or ``infinity``,
which wg-quick@.service sets); answers that can never change (no such name, a permanent
failure) end the attempt at once, as in wg. We do the same, so a unit that worked with
wireguard-go keeps working.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from loguru import logger

from . import sdnotify, settings

__all__ = [
    "DEFAULT_RETRIES",
    "FIRST_PAUSE",
    "MAX_PAUSE",
    "PERMANENT_ERRORS",
    "Resolver",
    "Retrying",
    "default_resolve",
    "retries_from_env",
]

DEFAULT_RETRIES = 15  # wg's default
FIRST_PAUSE = 1.0  # seconds before the first retry
PAUSE_GROWTH = 1.2  # each pause is this much longer than the one before ...
MAX_PAUSE = 20.0  # ... up to this many seconds
INFINITE = -1
# getaddrinfo answers that no retry will change (glibc's NameResolver notes, as wg reads them)
PERMANENT_ERRORS = frozenset(
    code
    for code in (
        getattr(socket, "EAI_NONAME", None),
        getattr(socket, "EAI_FAIL", None),
        getattr(socket, "EAI_NODATA", None),
    )
    if code is not None
)

#: ``resolve(host, port) -> (address, port)``: turns an endpoint host name into an IP address.
Resolver = Callable[[str, int], tuple[str, int]]


def default_resolve(host: str, port: int) -> tuple[str, int]:
    """Resolve an endpoint host name the way wg(8) does: UDP, any family, IPv4 preferred.

    No AI_ADDRCONFIG, like wg: whether the machine has an address of a family right now
    (it may not at boot) must not change which endpoint the file means.
    """
    results = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0)
    for family in (socket.AF_INET, socket.AF_INET6):
        for fam, _type, _proto, _name, sockaddr in results:
            if fam == family:
                return str(sockaddr[0]), int(sockaddr[1])
    raise OSError("no IPv4 or IPv6 address")


def retries_from_env(value: str | None = None) -> int:
    """Retries allowed by ``WG_ENDPOINT_RESOLUTION_RETRIES``: a count, or -1 for ``infinity``.
    Anything unreadable means the default, with a warning (wg ignores it silently)."""
    text = settings.get(settings.ENDPOINT_RETRIES) if value is None else value
    if not text:
        return DEFAULT_RETRIES
    text = text.strip().lower()
    if text == "infinity":
        return INFINITE
    if text.isdigit():
        return int(text)
    logger.warning(
        "{}={!r} is neither a number nor 'infinity': retrying {} times",
        settings.ENDPOINT_RETRIES.name,
        text,
        DEFAULT_RETRIES,
    )
    return DEFAULT_RETRIES


class Retrying:
    """A :data:`Resolver` that retries transient failures with backoff."""

    def __init__(
        self,
        retries: int = DEFAULT_RETRIES,
        *,
        resolve: Resolver = default_resolve,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retries = retries
        self.resolve = resolve
        self.sleep = sleep

    def __call__(self, host: str, port: int) -> tuple[str, int]:
        pause = FIRST_PAUSE
        attempt = 0
        while True:
            try:
                return self.resolve(host, port)
            except OSError as exc:
                if isinstance(exc, socket.gaierror) and exc.errno in PERMANENT_ERRORS:
                    raise
                if self.retries != INFINITE and attempt >= self.retries:
                    raise
                attempt += 1
                reason = exc.strerror or str(exc)
                logger.warning(
                    "cannot resolve {} ({}): retry {}{} in {:.1f} s",
                    host,
                    reason,
                    attempt,
                    "" if self.retries == INFINITE else f" of {self.retries}",
                    pause,
                )
                sdnotify.status(f"resolving endpoint {host}: {reason} (retry {attempt})")
                self.sleep(pause)
                pause = min(MAX_PAUSE, pause * PAUSE_GROWTH)

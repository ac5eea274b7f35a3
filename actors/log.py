"""Logging: loguru for us, and Pykka's stdlib logger routed into it.

Level precedence: ``-v``/``-q`` on the command line, then ``WGACTORS_LOG_LEVEL``, then
wireguard-go's ``LOG_LEVEL`` (so wg-quick setups that already set it keep working), then INFO.

Every line names the interface, because one host may run several tunnels into one journal.
When stderr is the journal (systemd sets ``JOURNAL_STREAM`` to its device and inode), lines
start with a syslog priority ``<N>`` that journald turns into the entry's priority, and carry no
timestamp, since the journal stamps every entry itself.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

from loguru import logger

from . import settings

__all__ = [
    "LOG_LEVEL_ENV",
    "current_level",
    "journal_priority",
    "print_error",
    "resolve_level",
    "setup_logging",
    "to_journal",
]

LOG_LEVEL_ENV = settings.LOG_LEVEL.name
SILENT = "SILENT"  # no log output at all (wireguard-go's LOG_LEVEL=silent)
_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_WG_LEVELS = {"verbose": "DEBUG", "debug": "DEBUG", "error": "ERROR", "silent": SILENT}
# loguru level -> syslog priority (sd-daemon.h's SD_DEBUG .. SD_CRIT)
_PRIORITIES = {
    "TRACE": 7,
    "DEBUG": 7,
    "INFO": 6,
    "SUCCESS": 5,
    "WARNING": 4,
    "ERROR": 3,
    "CRITICAL": 2,
}


class _ToLoguru(logging.Handler):
    """Forwards stdlib records (Pykka's, pyroute2's) to loguru, keeping level and origin."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("pyroute2") and record.levelno < logging.WARNING:
            return  # netlink message dumps: noise, and they name every attribute
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info, depth=6).log(level, record.getMessage())


_level = "INFO"  # what setup_logging chose, for the processes this one starts


def current_level() -> str:
    """The level this process logs at (set once, by :func:`setup_logging`)."""
    return _level


def resolve_level(verbosity: int = 0) -> str:
    """The level chosen by the command line and the environment (see the module docstring)."""
    if verbosity > 0:
        return "DEBUG" if verbosity == 1 else "TRACE"
    if verbosity < 0:
        return "WARNING" if verbosity == -1 else "ERROR"
    own = (settings.get(settings.LOG_LEVEL) or "").upper()
    if own in _LEVELS:
        return own
    wg = (settings.get(settings.WG_LOG_LEVEL) or "").lower()
    return _WG_LEVELS.get(wg, "INFO")


def to_journal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stderr) is the journal stream systemd announced. The
    device and inode are compared, as sd_journal_stream_fd's documentation asks, because the
    variable is inherited by children whose stderr may have been redirected elsewhere."""
    value = settings.get(settings.JOURNAL_STREAM)
    if not value:
        return False
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat((stream or sys.stderr).fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


def journal_priority(level: str) -> int:
    return _PRIORITIES.get(level, 6)


def print_error(message: str, stream: TextIO | None = None) -> None:
    """One error line on stderr from outside the logger: fatal start-up errors printed before
    logging is set up, and the drop-in parent's report of its child's failure. Under the
    journal it carries the ERROR priority, as the logger's lines do, so that
    ``journalctl -p err`` shows it."""
    out = stream or sys.stderr
    prefix = f"<{journal_priority('ERROR')}>" if to_journal(out) else ""
    print(f"{prefix}wgactors: {message}", file=out, flush=True)


def setup_logging(verbosity: int = 0, *, name: str = "wgactors", level: str | None = None) -> str:
    """Configure logging once for the process; returns the level chosen. ``name`` (the
    interface, once known) starts every line; ``level`` overrides the choice (a worker process
    takes its parent's)."""
    global _level
    level = level or resolve_level(verbosity)
    _level = level
    label = name.replace("{", "{{").replace("}", "}}")
    logger.remove()
    if level != SILENT:

        def journal_format(record: Any) -> str:
            prefix = journal_priority(record["level"].name)
            return f"\\<{prefix}>{label}: {{message}}\n{{exception}}"  # \< : not a colour tag

        fmt: Any = "{time:HH:mm:ss.SSS} {level: <7} " + label + ": {message}"
        if to_journal():
            fmt = journal_format
        logger.add(
            sys.stderr,
            level=level,
            format=fmt,
            colorize=False,
            backtrace=False,
            diagnose=False,  # never print local variables: they may hold keys
        )
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.DEBUG, force=True)
    logging.getLogger("pykka").setLevel(
        logging.DEBUG if level in ("DEBUG", "TRACE") else logging.INFO
    )
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    return level

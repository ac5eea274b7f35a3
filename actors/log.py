"""Logging: loguru for us, and Pykka's stdlib logger routed into it.

Level precedence: ``-v``/``-q`` on the command line, then ``WGACTORS_LOG_LEVEL``, then INFO.
"""

from __future__ import annotations

import logging
import os
import sys

from loguru import logger

__all__ = ["LOG_LEVEL_ENV", "setup_logging"]

LOG_LEVEL_ENV = "WGACTORS_LOG_LEVEL"
_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


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


def setup_logging(verbosity: int = 0, *, name: str = "wgactors") -> str:
    """Configure logging once for the process; returns the level chosen."""
    if verbosity > 0:
        level = "DEBUG" if verbosity == 1 else "TRACE"
    elif verbosity < 0:
        level = "WARNING" if verbosity == -1 else "ERROR"
    else:
        env = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
        level = env if env in _LEVELS else "INFO"
    logger.remove()
    logger.add(
        sys.stderr,
        level=level,
        format="{time:HH:mm:ss.SSS} {level: <7} " + name + ": {message}",
        backtrace=False,
        diagnose=False,  # never print local variables: they may hold keys
    )
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.DEBUG, force=True)
    logging.getLogger("pykka").setLevel(
        logging.DEBUG if level in ("DEBUG", "TRACE") else logging.INFO
    )
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    return level

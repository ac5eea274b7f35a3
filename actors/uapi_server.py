"""The UAPI socket: `/var/run/wireguard/IFACE.sock`, where `wg` configures and reads us.

This is I/O only. The protocol text is parsed and written by :mod:`actors.uapi`; what a request
*does* is the :class:`Controller`'s business (the device lives in the decrypt stage, the socket
options on the UDP socket). Every bound is explicit: connections at once, line length, request
size, and how long a silent client may hold a connection.

Only root (or our own user) may connect: the socket is mode 0600 and each connection's peer
credentials are checked, since `get` reveals the private key.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import socket
import stat
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from loguru import logger

from .gcpause import gc_paused, settle_after
from .uapi import EINVAL, EPROTO, MAX_LINE, MAX_SET_LINES, SetRequest, UapiError, parse_set

__all__ = [
    "CONNECTION_TIMEOUT",
    "MAX_CONNECTIONS",
    "SOCKET_DIR",
    "STATS_OP",
    "Controller",
    "UapiServer",
    "socket_path",
]

SOCKET_DIR = Path("/var/run/wireguard")
MAX_CONNECTIONS = 16  # clients served at once; more are closed straight away
CONNECTION_TIMEOUT = 10.0  # seconds a client may stay silent before it is dropped
ACCEPT_POLL = 0.2  # seconds between looks at the stop flag while idle
STATS_OP = "wgactors-stats=1"  # our own read-only operation, for `wgactors status`
REPLY_CHUNK = 1 << 20  # characters of a get reply gathered, encoded and sent at a time
_UCRED = struct.Struct("3i")


def socket_path(iface: str, directory: Path = SOCKET_DIR) -> Path:
    return directory / f"{iface}.sock"


class Controller(Protocol):
    """What the server needs from the daemon."""

    def get(self) -> Iterable[str]:
        """The body of a `get=1` reply (without the errno line), whole or in parts."""
        ...

    def set(self, request: SetRequest) -> None:
        """Apply a `set=1` request; raise UapiError to report an errno."""
        ...

    def stats(self) -> str:
        """A JSON document of the stages' statistics (no key material)."""
        ...


class UapiServer:
    def __init__(self, iface: str, controller: Controller, directory: Path = SOCKET_DIR) -> None:
        self.iface = iface
        self.controller = controller
        self.path = socket_path(iface, directory)
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> None:
        """Create the socket (refusing one that a live process still serves) and serve it."""
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.path.exists():
            if _in_use(self.path):
                raise OSError(errno.EADDRINUSE, f"{self.path} is in use by another process")
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, stat.S_IRUSR | stat.S_IWUSR)
        listener.listen(MAX_CONNECTIONS)
        listener.settimeout(ACCEPT_POLL)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="uapi", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(ACCEPT_POLL * 5)
        if self._listener is not None:
            self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # -- serving

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # at the bound: refuse rather than queue without limit
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                if not _trusted(conn):
                    return
                conn.settimeout(CONNECTION_TIMEOUT)
                reader = conn.makefile("rb")
                while not self._stop.is_set():
                    try:
                        op = _readline(reader)
                    except UapiError as e:  # an unreadable operation line: answer, then close
                        conn.sendall(f"errno={e.errno}\n\n".encode())
                        return
                    if op is None:
                        return
                    if not self._operation(op, reader, conn):
                        return
        except (OSError, TimeoutError):
            pass  # the client went away or fell silent: nothing to answer
        except Exception as e:  # a bug must not take the daemon down: log it, drop the client
            logger.opt(exception=e).error("UAPI handler failed: {!r}", e)
        finally:
            self._slots.release()

    def _operation(self, op: str, reader: io.BufferedIOBase, conn: socket.socket) -> bool:
        """Serve one operation; False when the connection must be closed."""
        try:
            if op == "get=1":
                if _readline(reader) != "":
                    raise UapiError(EINVAL, "trailing data after get=1")
                with gc_paused():  # a hub's reply is a million short-lived objects
                    _send_parts(conn, self.controller.get())
                conn.sendall(b"errno=0\n\n")
                return True
            if op == "set=1":
                lines = _request_lines(reader)
                with gc_paused():
                    try:
                        request = parse_set(lines)
                    except UapiError:
                        for _ in lines:  # read the rest of a bad request, to stay in step
                            pass
                        raise
                    self.controller.set(request)
                settle_after(len(request.peers))
                conn.sendall(b"errno=0\n\n")
                return True
            if op == STATS_OP:
                if _readline(reader) != "":
                    raise UapiError(EINVAL, "trailing data after the stats request")
                conn.sendall((self.controller.stats() + "\nerrno=0\n\n").encode())
                return True
            raise UapiError(EINVAL, "unknown operation")
        except UapiError as e:
            logger.warning("UAPI {}: {}", op if len(op) < 32 else op[:32] + "…", e.message)
            with contextlib.suppress(OSError):
                conn.sendall(f"errno={e.errno}\n\n".encode())
            # A protocol error leaves the stream in an unknown state: close it.
            return op in ("get=1", "set=1") and e.errno != EPROTO


def _send_parts(conn: socket.socket, body: Iterable[str]) -> None:
    """Send a reply as it is made, about REPLY_CHUNK characters at a time: a hub's reply is
    tens of MB, and holding it whole (and then its encoded copy) would double the daemon's
    peak memory."""
    if isinstance(body, str):
        body = (body,)
    pending: list[str] = []
    size = 0
    for part in body:
        pending.append(part)
        size += len(part)
        if size >= REPLY_CHUNK:
            conn.sendall("".join(pending).encode())
            pending.clear()
            size = 0
    if pending:
        conn.sendall("".join(pending).encode())


def _readline(reader: io.BufferedIOBase) -> str | None:
    """One line without its newline; None at end of stream. Too long or not text: EPROTO."""
    raw = reader.readline(MAX_LINE + 1)
    if not raw:
        return None
    if not raw.endswith(b"\n"):
        if len(raw) > MAX_LINE:
            raise UapiError(EPROTO, "line too long")
        return None  # the stream ended mid-line
    try:
        return raw[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise UapiError(EPROTO, "line is not text") from None


def _request_lines(reader: io.BufferedIOBase) -> Iterator[str]:
    """The lines of a set request, as they arrive: parsed one by one, never all held at once
    (a 100,000-peer `wg setconf` is half a million lines). Past MAX_SET_LINES the stream is
    given up (EPROTO closes it): the parser has refused the request by then."""
    for _ in range(MAX_SET_LINES + 2):
        line = _readline(reader)
        if line is None:
            raise UapiError(EPROTO, "request ended without its blank line")
        if line == "":
            return
        yield line
    raise UapiError(EPROTO, "request too long")


def _trusted(conn: socket.socket) -> bool:
    """Root, or the user we run as: nobody else may read our private key."""
    try:
        _pid, uid, _gid = _UCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError:
        return False
    return uid in (0, os.geteuid())


def _in_use(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()

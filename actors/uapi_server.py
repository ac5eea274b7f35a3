"""The UAPI socket: `/var/run/wireguard/IFACE.sock`, where `wg` configures and reads us.

This is I/O only. The protocol text is parsed and written by :mod:`actors.uapi`; what a request
*does* is the :class:`Controller`'s business (the device lives in the decrypt stage, the socket
options on the UDP socket).

Every client is served, as wireguard-go serves them, and none can hold up another: one thread
runs a ``selectors`` loop over every connection, so a client that connects and says nothing costs
a file descriptor and a few bytes, not a thread or a turn. Requests are parsed as their bytes
arrive and handed, once whole, to one worker thread that calls the controller, so requests to
the device stay serialised while the loop goes on accepting, reading and writing for everyone
else. The bounds: connections at once (at the bound the longest-idle one is closed to make room,
and when none is idle newcomers wait in the listen backlog), line length and request size (in
:mod:`actors.uapi`), and how long a client may stay silent or leave its reply unread.

Only root (or our own user) may connect: the socket is mode 0600 and each connection's peer
credentials are checked, since `get` reveals the private key. Nothing a client sends is ever
logged: an operation line may be a pasted key.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import resource
import select
import selectors
import socket
import stat
import struct
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from loguru import logger

from .gcpause import gc_paused, settle_after
from .uapi import (
    EINVAL,
    EPROTO,
    EUNKNOWN,
    MAX_LINE,
    SetParser,
    SetRequest,
    UapiError,
)

__all__ = [
    "CONNECTION_TIMEOUT",
    "LISTEN_BACKLOG",
    "MAX_CONNECTIONS",
    "SOCKET_DIR",
    "STATS_OP",
    "Controller",
    "UapiServer",
    "socket_path",
]

SOCKET_DIR = Path("/var/run/wireguard")
# Clients connected at once (see FD_SHARE); more wait in the backlog. Small enough that with
# them the process's descriptors stay under 1024, which select() elsewhere cannot go past.
MAX_CONNECTIONS = 512
FD_SHARE = 4  # ...and never more than a quarter of the process's file descriptor limit
LISTEN_BACKLOG = 4096  # connections the kernel holds for us until accepted (somaxconn caps it)
CONNECTION_TIMEOUT = 10.0  # seconds a client may stay silent, or leave its reply unread
EVICT_AFTER = 1.0  # seconds a client must have been idle before a newcomer may take its place
ACCEPT_BATCH = 256  # connections accepted per turn, so those already in are served between
READ_SIZE = 1 << 16  # bytes read from one client per turn
SWEEP_INTERVAL = 0.25  # seconds between looks for clients past their deadline
ACCEPT_RETRY = 0.25  # seconds before accepting again after running out of file descriptors
STOP_WAIT = 1.0  # seconds stop() waits for each thread
STATS_OP = "wgactors-stats=1"  # our own read-only operation, for `wgactors status`
REPLY_CHUNK = 1 << 20  # characters of a get reply gathered, encoded and sent at a time
_UCRED = struct.Struct("3i")
_T = TypeVar("_T")
_STATS_OP = STATS_OP.encode()


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


# What a connection is doing: reading an operation line, waiting for the newline that must
# follow `get=1`, reading a set request's lines, waiting for the blank line after the stats
# operation, waiting for the worker, writing a reply, or waiting for its turn to send a set
# request (one is read at a time, as wireguard-go's lock has it: a hub's request is hundreds
# of MB of parsed lines, and many clients must not hold that many at once).
_OP, _GET_END, _SET, _STATS_END, _BUSY, _REPLY, _SET_WAIT = range(7)
_READING = frozenset({_OP, _GET_END, _SET, _STATS_END})
_NOT_LATE = frozenset({_BUSY, _SET_WAIT})  # waiting for us, not for the client


@dataclass(eq=False, slots=True)
class _Conn:
    sock: socket.socket
    deadline: float
    state: int = _OP
    inbuf: bytearray = field(default_factory=bytearray)
    parser: SetParser | None = None
    # When the line being read began (a deadline runs from its first byte, so a client that
    # trickles a byte at a time cannot keep its place), and when the last whole line came.
    line_started: float = 0.0
    progress_at: float = 0.0
    out: memoryview = field(default_factory=lambda: memoryview(b""))
    parts: Iterator[str] | None = None  # the rest of a get reply, made as it is sent
    close_after: bool = False
    events: int = 0  # what the selector watches for
    advancing: bool = False  # inside _advance: an answer written at once must not re-enter
    closed: bool = False


# The worker's jobs and answers.
_GET, _SET_JOB, _STATS = range(3)


@dataclass(frozen=True, slots=True)
class _Job:
    conn: _Conn
    kind: int
    request: SetRequest | None = None


@dataclass(frozen=True, slots=True)
class _Done:
    conn: _Conn
    kind: int
    body: Iterable[str] | str | None = None  # get and stats
    errno: int = 0


class UapiServer:
    def __init__(self, iface: str, controller: Controller, directory: Path = SOCKET_DIR) -> None:
        self.iface = iface
        self.controller = controller
        self.path = socket_path(iface, directory)
        self.max_connections = _connection_bound()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._threads: list[threading.Thread] = []
        # Owned by the loop thread alone:
        self._selector = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}  # by file descriptor
        self._idle: OrderedDict[int, _Conn] = OrderedDict()  # between requests, oldest first
        self._set_owner: _Conn | None = None  # the one client whose set request is being read
        self._set_waiting: deque[_Conn] = deque()  # those waiting for their turn, in order
        self._accepting = False
        self._pending = select.poll()  # the listener alone: is anyone waiting to be accepted?
        self._accept_again = 0.0

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
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self._pending.register(listener, select.POLLIN)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._set_accepting(True)
        self._threads = [
            threading.Thread(target=self._loop, name="wga:uapi", daemon=True),
            threading.Thread(target=self._work, name="wga:uapi-control", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._jobs.put(None)
        self._wake()
        for thread in self._threads:
            thread.join(STOP_WAIT)
        if not any(t.is_alive() for t in self._threads[:1]):
            self._close_all()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if not any(t.is_alive() for t in self._threads):
            self._wake_r.close()
            self._wake_w.close()

    def connections(self) -> int:
        """Clients connected now (for tests and status)."""
        return len(self._conns)

    # -- the loop

    def _loop(self) -> None:
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            while not self._stop.is_set():
                for key, events in self._selector.select(SWEEP_INTERVAL):
                    conn = key.data
                    if conn is None:
                        self._drain_wake()
                    elif conn is self:
                        self._accept()
                    elif not conn.closed:
                        self._guarded(conn, self._ready, events)
                self._finish_jobs()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + SWEEP_INTERVAL
                    self._sweep(now)
        except Exception as e:  # a bug must not pass silently: say where, never what
            _log_bug("UAPI loop", e)
        finally:
            self._close_all()

    def _guarded(self, conn: _Conn, step: Callable[[_Conn, _T], None], arg: _T) -> None:
        """One client's turn; a bug met there ends that client, not the server."""
        try:
            step(conn, arg)
        except Exception as e:
            _log_bug("UAPI client", e)
            self._close(conn)

    def _set_accepting(self, on: bool) -> None:
        if on == self._accepting or self._listener is None:
            return
        if on:
            self._selector.register(self._listener, selectors.EVENT_READ, self)
        else:
            self._selector.unregister(self._listener)
        self._accepting = on

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            if len(self._conns) >= self.max_connections:
                if not self._pending.poll(0):
                    return  # nobody is waiting: no one to make room for
                if not self._evict_idle():
                    self._set_accepting(False)  # the backlog holds the rest until one leaves
                    return
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    logger.warning("UAPI: cannot accept a client now ({})", os.strerror(e.errno))
                    self._set_accepting(False)
                    self._accept_again = time.monotonic() + ACCEPT_RETRY
                return
            if not _trusted(sock):
                sock.close()
                continue
            sock.setblocking(False)
            now = time.monotonic()
            conn = _Conn(sock, now + CONNECTION_TIMEOUT, line_started=now, progress_at=now)
            self._conns[sock.fileno()] = conn
            self._idle[sock.fileno()] = conn
            self._watch(conn, selectors.EVENT_READ)

    def _evict_idle(self) -> bool:
        """Close a client to make room for a new one: the one idle longest, else the one whose
        last whole line is oldest (a client trickling a partial line makes no progress); only
        after :data:`EVICT_AFTER` without progress. False if no client qualifies."""
        now = time.monotonic()
        conn = next(iter(self._idle.values()), None)
        if conn is None or now - conn.progress_at < EVICT_AFTER:
            reading = (c for c in self._conns.values() if c.state in _READING)
            conn = min(reading, key=lambda c: c.progress_at, default=None)
            if conn is None or now - conn.progress_at < EVICT_AFTER:
                return False  # all have just connected or moved on: their requests may follow
        logger.debug("UAPI: closing a client that made no progress, to serve a new one")
        self._close(conn)
        return True

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if conn.events == 0:
            self._selector.register(conn.sock, events, conn)
        elif events == 0:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _ready(self, conn: _Conn, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._write(conn)
        elif events & selectors.EVENT_READ:
            self._read(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        self._idle.pop(conn.sock.fileno(), None)
        if not data:
            self._ended(conn)
            return
        if not conn.inbuf:  # a new line begins: its deadline runs from now
            conn.line_started = time.monotonic()
        conn.inbuf += data
        # Parsing a hub's set request makes millions of objects: no collector passes over them
        # meanwhile (never while waiting for the client: that would let one client switch the
        # collector off for the whole process).
        with gc_paused():
            self._advance(conn)
        if not conn.closed and conn.state in _READING:
            conn.deadline = conn.line_started + CONNECTION_TIMEOUT

    def _ended(self, conn: _Conn) -> None:
        """The client will send no more: answer a set request cut short (it may still read),
        close otherwise, as wireguard-go does."""
        if conn.state == _SET:
            self._fail(conn, UapiError(EPROTO, "request ended without its blank line"), "set")
        else:
            self._close(conn)

    def _advance(self, conn: _Conn) -> None:
        """Parse what has arrived, request after request, until one waits for the worker or
        for its reply to be written, or the bytes run out. Answers written at once bring the
        connection back here as a loop, not a recursion (a client may pipeline thousands)."""
        if conn.advancing:
            return
        conn.advancing = True
        try:
            while not conn.closed and conn.state in _READING:
                if not self._step(conn):
                    return
        finally:
            conn.advancing = False

    def _step(self, conn: _Conn) -> bool:
        """Take one line (or the byte after `get=1`); False when more bytes are needed."""
        buf = conn.inbuf
        state = conn.state
        if state == _GET_END:
            if not buf:
                return False
            trailing = buf[0] != 0x0A
            del buf[0]  # one byte only, as wireguard-go reads it; the rest is the next op
            conn.progress_at = conn.line_started = time.monotonic()
            if trailing:
                # debug only: the connection stays open, so this can repeat without end
                logger.debug("UAPI get: trailing data after get=1")
                self._fail(conn, UapiError(EINVAL, "trailing data after get=1"))
            else:
                self._submit(conn, _GET)
            return True
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > MAX_LINE:
                if state == _SET:
                    self._fail(conn, UapiError(EPROTO, f"line longer than {MAX_LINE} bytes"), "set")
                else:
                    logger.debug("UAPI: operation line over {} bytes; closing", MAX_LINE)
                    self._close(conn)
            elif not buf and state == _OP:
                self._idle[conn.sock.fileno()] = conn
            return False
        line = bytes(buf[:end])
        del buf[: end + 1]
        conn.progress_at = conn.line_started = time.monotonic()
        if state == _OP:
            self._operation(conn, line)
        elif state == _SET:
            self._set_line(conn, line)
        elif line:  # _STATS_END
            self._fail(conn, UapiError(EINVAL, "trailing data after the stats request"))
        else:
            self._submit(conn, _STATS)
        return True

    def _operation(self, conn: _Conn, op: bytes) -> None:
        if op == b"get=1":
            conn.state = _GET_END
        elif op == b"set=1":
            if self._set_owner is not None:
                conn.state = _SET_WAIT  # its lines wait in the kernel until its turn
                self._watch(conn, 0)
                self._set_waiting.append(conn)
                return
            self._begin_set(conn)
        elif op == _STATS_OP:
            conn.state = _STATS_END
        else:
            # wireguard-go closes without an answer too. The line is not logged: it may be a
            # pasted key.
            logger.debug("UAPI: unknown operation ({} bytes); closing", len(op))
            self._close(conn)

    def _begin_set(self, conn: _Conn) -> None:
        self._set_owner = conn
        conn.state = _SET
        conn.parser = SetParser()

    def _release_set(self, conn: _Conn) -> None:
        """``conn``'s set request is answered or abandoned: the next waiting one's turn."""
        if self._set_owner is not conn:
            return
        self._set_owner = None
        while self._set_waiting:
            waiting = self._set_waiting.popleft()
            if waiting.closed:
                continue
            self._begin_set(waiting)
            now = time.monotonic()
            waiting.line_started = waiting.progress_at = now
            waiting.deadline = now + CONNECTION_TIMEOUT
            self._watch(waiting, selectors.EVENT_READ)
            if waiting.inbuf:
                self._guarded(waiting, lambda c, _: self._advance(c), None)
            return

    def _set_line(self, conn: _Conn, raw: bytes) -> None:
        assert conn.parser is not None
        try:
            if not raw:
                request = conn.parser.finish()
                self._end_set_parse(conn)
                self._submit(conn, _SET_JOB, request)
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UapiError(EPROTO, "a line is not text") from None
            conn.parser.feed(line)
        except UapiError as e:
            self._fail(conn, e, "set")

    def _end_set_parse(self, conn: _Conn) -> None:
        conn.parser = None

    def _fail(self, conn: _Conn, error: UapiError, what: str | None = None) -> None:
        """Answer a refused request with its errno; a failed set also ends the connection,
        since what follows it cannot be trusted to be a request (wireguard-go ends it too)."""
        if what is not None:
            logger.warning("UAPI {}: {}", what, error.message)  # the message holds no key
        close = conn.state in (_SET, _STATS_END) or error.errno == EPROTO
        self._end_set_parse(conn)
        self._release_set(conn)
        self._reply(conn, f"errno={error.errno}\n\n".encode(), close)

    def _submit(self, conn: _Conn, kind: int, request: SetRequest | None = None) -> None:
        conn.state = _BUSY
        self._watch(conn, 0)  # what the client sends next waits in the kernel meanwhile
        self._jobs.put(_Job(conn, kind, request))

    def _finish_jobs(self) -> None:
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return
            if not done.conn.closed:
                self._guarded(done.conn, self._answer, done)

    def _answer(self, conn: _Conn, done: _Done) -> None:
        """Answer a request the worker has finished."""
        conn.deadline = time.monotonic() + CONNECTION_TIMEOUT
        if done.kind == _SET_JOB and not done.errno:
            self._release_set(conn)
        if done.errno:
            conn.state = _SET if done.kind == _SET_JOB else _OP
            self._fail(conn, UapiError(done.errno, ""))
        elif done.kind == _GET:
            body = done.body
            conn.parts = iter((body,) if isinstance(body, str) else body or ())
            self._reply(conn, b"", False)
        elif done.kind == _STATS:
            self._reply(conn, f"{done.body}\nerrno=0\n\n".encode(), False)
        else:
            self._reply(conn, b"errno=0\n\n", False)

    def _reply(self, conn: _Conn, data: bytes, close_after: bool) -> None:
        conn.state = _REPLY
        conn.out = memoryview(data)
        conn.close_after = close_after
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        """Send what the socket takes now; the rest when it is writable again."""
        while True:
            if not conn.out and not self._refill(conn):
                break
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except OSError:
                self._close(conn)
                return
            conn.out = conn.out[sent:]
            conn.deadline = time.monotonic() + CONNECTION_TIMEOUT
        if conn.close_after:
            self._close(conn)
            return
        conn.state = _OP
        conn.progress_at = conn.line_started = time.monotonic()  # answered: a fresh start
        self._watch(conn, selectors.EVENT_READ)
        self._advance(conn)  # a pipelined request may be waiting in the buffer

    def _refill(self, conn: _Conn) -> bool:
        """The next piece of a get reply into ``out``; False when the reply is all sent."""
        parts = conn.parts
        if parts is None:
            return False
        pending: list[str] = []
        size = 0
        try:
            with gc_paused():  # a hub's reply is a million short-lived objects
                for part in parts:
                    pending.append(part)
                    size += len(part)
                    if size >= REPLY_CHUNK:
                        break
                else:
                    conn.parts = None
                    pending.append("errno=0\n\n")
        except Exception as e:
            _log_bug("UAPI get reply", e)
            conn.parts = None
            conn.close_after = True
            return False
        conn.out = memoryview("".join(pending).encode())
        return True

    def _sweep(self, now: float) -> None:
        room = len(self._conns) < self.max_connections or self._idle
        if not self._accepting and now >= self._accept_again and room:
            self._set_accepting(True)
            self._accept()
        late = [c for c in self._conns.values() if c.state not in _NOT_LATE and now > c.deadline]
        for conn in late:
            logger.debug("UAPI: a client silent for {:.0f} s was dropped", CONNECTION_TIMEOUT)
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        fd = conn.sock.fileno()
        self._watch(conn, 0)
        self._conns.pop(fd, None)
        self._idle.pop(fd, None)
        self._end_set_parse(conn)
        conn.parts = None
        conn.sock.close()
        self._release_set(conn)
        if (
            not self._accepting
            and not self._stop.is_set()
            and time.monotonic() >= self._accept_again
        ):
            self._set_accepting(True)

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            with contextlib.suppress(Exception):
                self._close(conn)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._set_accepting(False)
            self._listener.close()
        with contextlib.suppress(Exception):
            self._selector.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    # -- the worker: one request to the controller at a time

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                return
            self._done.put(self._run(job))
            self._wake()

    def _run(self, job: _Job) -> _Done:
        try:
            if job.kind == _GET:
                return _Done(job.conn, _GET, body=self.controller.get())
            if job.kind == _STATS:
                return _Done(job.conn, _STATS, body=self.controller.stats())
            assert job.request is not None
            with gc_paused():
                self.controller.set(job.request)
            settle_after(len(job.request.peers))
            return _Done(job.conn, _SET_JOB)
        except UapiError as e:
            what = ("get", "set", "stats")[job.kind]
            logger.warning("UAPI {}: {}", what, e.message)  # the message holds no key
            return _Done(job.conn, job.kind, errno=e.errno)
        except Exception as e:  # a bug must not take the daemon down: answer, and say where
            _log_bug("UAPI request", e)
            return _Done(job.conn, job.kind, errno=EUNKNOWN)


def _log_bug(what: str, e: BaseException) -> None:
    """An unexpected exception: its type and where it was raised, never its text or locals,
    which may hold a key."""
    frames = traceback.extract_tb(e.__traceback__)
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-4:]))
    logger.error("{} failed: {} at {}", what, type(e).__name__, where or "?")


def _connection_bound() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft // FD_SHARE))


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

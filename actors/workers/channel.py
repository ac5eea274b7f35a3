"""The control channel between the parent and one worker: whole values, in order, both ways.

One ``AF_UNIX`` ``SOCK_SEQPACKET`` socket pair per worker, made by the parent, which keeps one
end and passes the other to the worker it starts: nobody else can reach either end. A value
travels pickled (both ends run this program; the pair is their own, and the messages are the
frozen dataclasses of :mod:`.messages`), in parts of at most :data:`PART_SIZE` bytes, since
one `wg show` of a hub is tens of MB and a packet of a seqpacket socket must fit its buffer.
A value may carry descriptors (``SCM_RIGHTS``), with its first part: that is how a worker
gets its socket back after ``wg set listen-port``.

Bounds: a value is at most :data:`MAX_VALUE` bytes; a longer one from the other end means that
end is broken, and the channel is closed (:class:`ChannelClosed`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import threading
from typing import Any

__all__ = ["MAX_VALUE", "PART_SIZE", "Channel", "ChannelClosed", "channel_pair"]

PART_SIZE = 60 << 10  # bytes of one part: under any default socket buffer
MAX_VALUE = 512 << 20  # bytes of one value (the state of 100,000 peers is ~30 MB)
MAX_FDS = 8  # descriptors one value may carry
_MORE, _LAST = b"+", b"."


class ChannelClosed(ConnectionError):
    """The other end is gone (it exited, or closed the channel) or broke the framing."""


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(the parent's end, the worker's end), both close-on-exec: the worker's is passed on
    explicitly (``pass_fds``)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Channel:
    """One end. :meth:`send` may be called from any thread (whole values never interleave);
    :meth:`receive` from one thread only."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, value: Any, fds: tuple[int, ...] = ()) -> None:
        """Send ``value`` (and ``fds`` with it); ChannelClosed if the other end is gone."""
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_VALUE:
            raise ValueError(f"a control value of {len(data)} bytes (at most {MAX_VALUE})")
        parts = [data[i : i + PART_SIZE] for i in range(0, len(data), PART_SIZE)] or [b""]
        try:
            with self._send_lock:
                for n, part in enumerate(parts):
                    flag = _LAST if n == len(parts) - 1 else _MORE
                    if n == 0 and fds:
                        socket.send_fds(self.sock, [flag + part], list(fds))
                    else:
                        self.sock.sendall(flag + part)
        except OSError as e:
            raise ChannelClosed(f"control channel: {e.strerror or e}") from None

    def receive(self) -> tuple[Any, list[int]]:
        """The next value and the descriptors that came with it (the caller owns them)."""
        chunks: list[bytes] = []
        size = 0
        fds: list[int] = []
        try:
            while True:
                part, got, _flags, _addr = socket.recv_fds(self.sock, PART_SIZE + 1, MAX_FDS)
                fds += got
                if not part:
                    raise ChannelClosed("control channel closed")
                size += len(part) - 1
                if size > MAX_VALUE:
                    raise ChannelClosed("control value too long")
                chunks.append(part[1:])
                if part[:1] == _LAST:
                    break
                if part[:1] != _MORE:
                    raise ChannelClosed("control channel framing broken")
        except ChannelClosed:
            _close_all(fds)
            raise
        except OSError as e:
            _close_all(fds)
            raise ChannelClosed(f"control channel: {e.strerror or e}") from None
        try:
            return pickle.loads(b"".join(chunks)), fds
        except Exception as e:  # the other end sent what it cannot have meant
            _close_all(fds)
            raise ChannelClosed(f"control value unreadable: {type(e).__name__}") from None

    def close(self) -> None:
        self.sock.close()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)

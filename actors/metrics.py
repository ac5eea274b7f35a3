"""Prometheus metrics: the text exposition format, for node_exporter's textfile collector
(``wgactors status --prometheus > /var/lib/node_exporter/wgactors.prom``) and for an optional
HTTP endpoint (``--metrics ADDR:PORT``).

Both render what ``wgactors status`` queries over the UAPI socket, so the figures are the ones
`wg show` and `status` print, and the HTTP endpoint needs no access to the actors' state: it is
one more UAPI client, which keeps every counter with its single owner. Names follow Prometheus's
conventions: counters end in ``_total``, units are bytes and seconds, and labels are
``interface``, ``stage``, ``reason`` and ``peer`` (the peer's base64 public key, as in `wg`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

__all__ = [
    "CONTENT_TYPE",
    "MAX_EXTRA_METRICS",
    "MetricsServer",
    "extra_metric_name",
    "parse_listen_address",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"
LISTEN_BACKLOG = 1024  # connections the kernel queues while all slots are taken (somaxconn caps it)
MAX_CONNECTIONS = 256  # connections served at once; the rest wait in the listen backlog
REQUEST_DEADLINE = (
    5.0  # seconds from accept to the end of the request's headers, all reads together
)
RENDER_DEADLINE = 5.0  # seconds a scrape waits for the shared render before it gets a 503
REPLY_DEADLINE = 5.0  # seconds to hand the whole reply to the kernel
MAX_REQUEST_BYTES = 8192  # request line and headers together
ACCEPT_PAUSE = 0.1  # seconds to wait before accepting again after accept() failed (out of fds)
UP_HELP = "1 if the interface's daemon answered, 0 if it did not."
MAX_EXTRA_METRICS = 64
"""Figures of one stage's own (``stats_extra``) exported; the rest are in ``status --json``."""
EXTRA_PREFIX = "wgactors_stage_extra_"
# The keys of a stage's snapshot that have metrics of their own (or are not figures).
STANDARD_KEYS = frozenset(
    {
        "name",
        "packets_in",
        "bytes_in",
        "packets_out",
        "bytes_out",
        "drops",
        "mailbox",
        "failure",
        "restarts",
        "lost_in_crashes",
        "unresponsive",
        "offloads",
    }
)
# Figures every custom stage has, with names and types of their own.
_RUNNER_COUNTERS = (
    ("replies", "wgactors_stage_replies_total", "Packets a stage sent back the other way."),
    (
        "consumed",
        "wgactors_stage_consumed_packets_total",
        "Packets a stage answered or absorbed (not drops).",
    ),
    (
        "replacements",
        "wgactors_stage_replacements_total",
        "Fresh instances of a stage after an error (on_error=restart).",
    ),
)
_RUNNER_KEYS = frozenset(key for key, _, _ in _RUNNER_COUNTERS)


@dataclass
class _Family:
    name: str
    kind: str  # counter or gauge
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Families:
    def __init__(self) -> None:
        self.by_name: dict[str, _Family] = {}

    def add(self, name: str, kind: str, text: str, labels: dict[str, str], value: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return  # a field a daemon did not send: no sample rather than a made-up zero
        family = self.by_name.setdefault(name, _Family(name, kind, text))
        family.samples.append((labels, value))

    def lines(self) -> Iterable[str]:
        for family in self.by_name.values():
            yield f"# HELP {family.name} {family.help}"
            yield f"# TYPE {family.name} {family.kind}"
            for labels, value in family.samples:
                body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                yield f"{family.name}{{{body}}} {_number(value)}"


def extra_metric_name(key: str) -> str:
    """The metric of a stage's own figure ``key``: ``wgactors_stage_extra_`` and the key with
    anything outside ``[a-z0-9_]`` made an underscore (Prometheus's name rules)."""
    body = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in key.lower())
    return EXTRA_PREFIX + body


def _extra_samples(out: _Families, labels: dict[str, str], stage: dict[str, Any]) -> None:
    for key, name, text in _RUNNER_COUNTERS:
        out.add(name, "counter", text, labels, stage.get(key))
    exported: set[str] = set()
    for key, value in sorted(stage.items()):
        if key in STANDARD_KEYS or key in _RUNNER_KEYS or not isinstance(key, str):
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue  # lists, tables and text stay in status --json
        if len(exported) >= MAX_EXTRA_METRICS:
            break
        name = extra_metric_name(key)
        if name in exported:  # "a-b" and "a_b" clean up alike: one series, or none is valid
            continue
        exported.add(name)
        out.add(
            name,
            "gauge",
            f"A stage's own figure {key!r} (stats_extra; a count or a level).",
            labels,
            value,
        )


def _stage_samples(out: _Families, iface: str, stages: dict[str, Any]) -> None:
    for stage in stages.get("stages", []):
        labels = {"interface": iface, "stage": str(stage.get("name", "?"))}
        for key, name, text in (
            ("packets_in", "wgactors_stage_received_packets_total", "Packets a stage took in."),
            ("bytes_in", "wgactors_stage_received_bytes_total", "Bytes a stage took in."),
            ("packets_out", "wgactors_stage_sent_packets_total", "Packets a stage passed on."),
            ("bytes_out", "wgactors_stage_sent_bytes_total", "Bytes a stage passed on."),
            (
                "restarts",
                "wgactors_stage_restarts_total",
                "Times the supervisor restarted a stage.",
            ),
        ):
            out.add(name, "counter", text, labels, stage.get(key, 0 if key == "restarts" else None))
        for reason, count in sorted((stage.get("drops") or {}).items()):
            out.add(
                "wgactors_stage_dropped_packets_total",
                "counter",
                "Packets a stage dropped, by reason.",
                {**labels, "reason": str(reason)},
                count,
            )
        failure = stage.get("failure")
        if isinstance(failure, dict):  # custom stages: exceptions in process (actors.failure)
            out.add(
                "wgactors_stage_failing",
                "gauge",
                "1 if a custom stage raised in the last seconds (see status), else 0.",
                labels,
                1 if failure.get("failing") else 0,
            )
            out.add(
                "wgactors_stage_errors_per_second",
                "gauge",
                "Packets a custom stage raised on per second, lately.",
                labels,
                failure.get("errors_per_second"),
            )
            out.add(
                "wgactors_stage_errors_total",
                "counter",
                "Packets a custom stage raised on.",
                labels,
                failure.get("errors"),
            )
            out.add(
                "wgactors_stage_error_passed_packets_total",
                "counter",
                "Packets a custom stage raised on and passed on unchanged (on_error=pass).",
                labels,
                failure.get("stage_error_passed"),
            )
        _extra_samples(out, labels, stage)
        box = stage.get("mailbox") or {}
        out.add(
            "wgactors_stage_mailbox_packets",
            "gauge",
            "Packets waiting in a stage's mailbox.",
            labels,
            box.get("depth"),
        )
        out.add(
            "wgactors_stage_mailbox_high_water_packets",
            "gauge",
            "The most packets a stage's mailbox has held.",
            labels,
            box.get("high_water"),
        )
        out.add(
            "wgactors_stage_mailbox_capacity_packets",
            "gauge",
            "How many packets a stage's mailbox holds.",
            labels,
            box.get("capacity"),
        )


def render(infos: Sequence[dict[str, Any]], unreachable: Sequence[str] = ()) -> str:
    """The exposition text for what :func:`actors.status.query` returned, one per interface;
    ``unreachable`` names interfaces whose daemon did not answer (``wgactors_up`` 0)."""
    out = _Families()
    for iface in unreachable:
        out.add("wgactors_up", "gauge", UP_HELP, {"interface": iface}, 0)
    for info in infos:
        iface = str(info["interface"])
        labels = {"interface": iface}
        out.add("wgactors_up", "gauge", UP_HELP, labels, 1)
        out.add(
            "wgactors_listen_port",
            "gauge",
            "The UDP port the interface listens on.",
            labels,
            info.get("listen_port"),
        )
        out.add("wgactors_peers", "gauge", "Configured peers.", labels, len(info["peers"]))
        for peer in info["peers"]:
            peer_labels = {"interface": iface, "peer": str(peer["public_key"])}
            out.add(
                "wgactors_peer_receive_bytes_total",
                "counter",
                "Bytes received from a peer (as `wg show` counts them).",
                peer_labels,
                peer.get("rx_bytes"),
            )
            out.add(
                "wgactors_peer_transmit_bytes_total",
                "counter",
                "Bytes sent to a peer (as `wg show` counts them).",
                peer_labels,
                peer.get("tx_bytes"),
            )
            out.add(
                "wgactors_peer_latest_handshake_seconds",
                "gauge",
                "UNIX time of the latest handshake with a peer; 0 if none yet.",
                peer_labels,
                peer.get("latest_handshake_unix") or 0,
            )
        stages = info.get("stages")
        if isinstance(stages, dict):
            _stage_samples(out, iface, stages)
            _worker_samples(out, iface, stages)
    return "\n".join(out.lines()) + "\n"


def _worker_samples(out: _Families, iface: str, stages: dict[str, Any]) -> None:
    """Worker processes: the stage families above are their sums (what a single daemon
    reports); these break them down by worker, under names of their own, so that summing a
    family never counts a packet twice."""
    for w in stages.get("workers") or []:
        labels = {"interface": iface, "worker": str(w.get("worker"))}
        out.add(
            "wgactors_worker_up",
            "gauge",
            "1 while a worker process runs, 0 while it is being restarted.",
            labels,
            1 if w.get("alive") else 0,
        )
        out.add("wgactors_worker_peers", "gauge", "Peers a worker owns.", labels, w.get("peers"))
        out.add(
            "wgactors_worker_restarts_total",
            "counter",
            "Times a worker process was restarted after it died.",
            labels,
            w.get("restarts"),
        )
        out.add(
            "wgactors_worker_cpu_seconds_total",
            "counter",
            "CPU time of a worker process (all its threads).",
            labels,
            w.get("cpu_seconds"),
        )
        for stage in w.get("stages") or []:
            stage_labels = {**labels, "stage": str(stage.get("name", "?"))}
            for key, name, text in (
                (
                    "packets_in",
                    "wgactors_worker_stage_received_packets_total",
                    "Packets a stage of one worker took in.",
                ),
                (
                    "packets_out",
                    "wgactors_worker_stage_sent_packets_total",
                    "Packets a stage of one worker passed on.",
                ),
            ):
                out.add(name, "counter", text, stage_labels, stage.get(key))
            drops = sum((stage.get("drops") or {}).values())
            out.add(
                "wgactors_worker_stage_dropped_packets_total",
                "counter",
                "Packets a stage of one worker dropped, all reasons.",
                stage_labels,
                drops,
            )


def parse_listen_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6ADDR]:PORT`` or ``:PORT`` (all addresses) -> (host, port). Raises
    ValueError whose message says what was expected, for the command line to show as it is."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"{text!r}: expected ADDR:PORT")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if host:
        try:  # an address, not a name: nothing to resolve at start-up
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: expected ADDR:PORT with ADDR an IP address") from None
    return host, int(port_text)


class _RequestError(Exception):
    """A request that gets an error status instead of the metrics."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_CLIENT_GONE = (ConnectionError, asyncio.IncompleteReadError)


def _reply(status: int, body: bytes, *, content_type: str, head_only: bool = False) -> bytes:
    lines = [
        f"HTTP/1.0 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """(method, path) of the request; its headers are read and ignored (a scrape needs none)."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _RequestError(431, "request too large") from None
        size += len(line)
        if size > MAX_REQUEST_BYTES:
            raise _RequestError(431, "request too large")
        if line.strip():
            lines.append(line)
        elif lines:  # the blank line that ends the headers (leading ones are tolerated)
            break
    parts = lines[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _RequestError(400, "expected an HTTP/1.x request line")
    return parts[0], parts[1].split("?", 1)[0]


class MetricsServer:
    """Serves ``collect()`` on ``GET /metrics`` (and ``/``) over HTTP/1.0.

    One thread runs an asyncio loop that accepts and reads every connection, so a slow or idle
    client costs the others nothing but one of :data:`MAX_CONNECTIONS` slots (the rest wait in
    the listen backlog), and each connection is held to deadlines on the whole request and the
    whole reply, not to a timeout per read that a client dribbling bytes could renew forever.

    ``collect()`` (a UAPI query, which can take a while) runs on a thread of its own, one at a
    time, never on the loop. Scrapes that arrive while it runs wait for it and share its text;
    a finished render is not kept. A cache would hand a later scrape figures older than its own
    timestamp, which skews ``rate()``; sharing only the render in flight bounds the work a flood
    of scrapes can cause to one query at a time, no more than any local client could cause by
    asking the UAPI socket itself. A query that hangs holds that one thread only: scrapes get a
    503 after :data:`RENDER_DEADLINE` until it returns."""

    def __init__(self, address: tuple[str, int], collect: Callable[[], str]) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.address: tuple[str, int] = listener.getsockname()[:2]
        self._collect = collect
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._stopping: asyncio.Future[None] = self._loop.create_future()
        self._render: asyncio.Future[tuple[int, str]] | None = None
        self._thread = threading.Thread(target=self._run, name="wga:metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Closes the listener and every connection; a render still running is left to finish
        on its own (daemon) thread, since a query stuck in the daemon must not hold up exit."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._request_stop)
            self._thread.join()
        else:
            self._listener.close()
            self._loop.close()

    def _request_stop(self) -> None:
        if not self._stopping.done():
            self._stopping.set_result(None)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve_until_stopped())
        finally:
            self._listener.close()
            self._loop.close()

    @staticmethod
    def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        logger.debug("metrics: {}{}", context.get("message"), f": {error!r}" if error else "")

    async def _serve_until_stopped(self) -> None:
        accepting = asyncio.create_task(self._accept())
        await self._stopping
        accepting.cancel()
        await asyncio.gather(accepting, return_exceptions=True)

    async def _accept(self) -> None:
        slots = asyncio.Semaphore(MAX_CONNECTIONS)
        connections: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            connections.discard(task)
            slots.release()

        try:
            while True:
                await slots.acquire()
                try:
                    sock, peer = await self._loop.sock_accept(self._listener)
                except OSError as e:
                    slots.release()
                    if e.errno not in (errno.ECONNABORTED, errno.EPROTO):
                        logger.debug("metrics: cannot accept: {}", e.strerror or e)
                        await asyncio.sleep(ACCEPT_PAUSE)
                    continue
                task = asyncio.create_task(self._serve(sock, peer))
                connections.add(task)
                task.add_done_callback(done)
        finally:
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)

    async def _serve(self, sock: socket.socket, peer: Any) -> None:
        client = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_REQUEST_BYTES)
        except OSError as e:
            sock.close()
            logger.debug("metrics: {} went away: {}", client, e.strerror or e)
            return
        try:
            await self._exchange(client, reader, writer)
        except TimeoutError as e:
            logger.debug("metrics: {} closed: {}", client, e.args[0] if e.args else "too slow")
        except _CLIENT_GONE as e:
            logger.debug("metrics: {} went away: {}", client, _why(e))
        except Exception as e:
            logger.warning("metrics: {}: {!r}", client, e)
        finally:
            writer.transport.abort()

    async def _exchange(
        self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        method = ""
        try:
            try:
                async with asyncio.timeout(REQUEST_DEADLINE):
                    method, path = await _read_request(reader)
            except TimeoutError:
                raise TimeoutError(f"no complete request within {REQUEST_DEADLINE:g} s") from None
            if method not in ("GET", "HEAD"):
                raise _RequestError(405, "only GET and HEAD are served")
            if path not in (PATH, "/"):
                raise _RequestError(404, f"metrics are at {PATH}")
            status, text = await self._rendered()
            reply = _reply(
                status, text.encode(), content_type=CONTENT_TYPE, head_only=method == "HEAD"
            )
            logger.trace("metrics: {} {} {!r} {}", client, method, path, status)
        except _RequestError as e:
            logger.trace("metrics: {} {}: {}", client, e.status, e)
            reply = _reply(
                e.status,
                f"{e}\n".encode(),
                content_type="text/plain; charset=utf-8",
                head_only=method == "HEAD",
            )
        try:
            async with asyncio.timeout(REPLY_DEADLINE):
                writer.transport.set_write_buffer_limits(high=0)  # drain() waits for it all
                writer.write(reply)
                await writer.drain()
        except TimeoutError:
            raise TimeoutError(f"reply not taken within {REPLY_DEADLINE:g} s") from None

    async def _rendered(self) -> tuple[int, str]:
        """The status and text of the render in flight, or of a new one if none is."""
        render = self._render
        if render is None or render.done():
            render = self._render = self._loop.create_future()
            threading.Thread(
                target=self._render_on_thread,
                args=(render,),
                name="wga:metrics-render",
                daemon=True,
            ).start()
        try:
            async with asyncio.timeout(RENDER_DEADLINE):
                return await asyncio.shield(render)
        except TimeoutError:
            return 503, f"metrics not collected within {RENDER_DEADLINE:g} s\n"

    def _render_on_thread(self, render: asyncio.Future[tuple[int, str]]) -> None:
        try:
            outcome = (200, self._collect())
        except Exception as e:  # the daemon is shutting down, say: a 503, not a traceback
            logger.debug("metrics: cannot collect: {!r}", e)
            outcome = (503, f"cannot collect metrics: {e}\n")
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            self._loop.call_soon_threadsafe(_settle, render, outcome)


def _settle(render: asyncio.Future[tuple[int, str]], outcome: tuple[int, str]) -> None:
    if not render.done():
        render.set_result(outcome)


def _why(error: BaseException) -> str:
    if isinstance(error, asyncio.IncompleteReadError):
        return "closed before the end of its request"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return repr(error)

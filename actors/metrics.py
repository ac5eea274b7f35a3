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

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
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
REQUEST_TIMEOUT = 5.0  # seconds a scraper may take to send its request
PATH = "/metrics"
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
    exported = 0
    for key, value in sorted(stage.items()):
        if key in STANDARD_KEYS or key in _RUNNER_KEYS or not isinstance(key, str):
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue  # lists, tables and text stay in status --json
        if exported >= MAX_EXTRA_METRICS:
            break
        exported += 1
        out.add(
            extra_metric_name(key),
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
    return "\n".join(out.lines()) + "\n"


def parse_listen_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6ADDR]:PORT`` or ``:PORT`` (all addresses) -> (host, port). Raises
    ValueError (argparse turns it into a usage error)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"{text!r}: expected ADDR:PORT")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if host:
        ipaddress.ip_address(host)  # an address, not a name: nothing to resolve at start-up
    return host, int(port_text)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in (PATH, "/"):
            self.send_error(404, f"metrics are at {PATH}")
            return
        try:
            body = self.server.collect().encode()
            status = 200
        except Exception as e:  # the daemon is shutting down, say: a 503, not a traceback
            body = f"cannot collect metrics: {e}\n".encode()
            status = 503
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.trace("metrics: " + format, *args)


class _Server(HTTPServer):
    collect: Callable[[], str]
    timeout = REQUEST_TIMEOUT

    def __init__(self, address: tuple[str, int], collect: Callable[[], str]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.collect = collect
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(REQUEST_TIMEOUT)
        super().finish_request(request, client_address)


class MetricsServer:
    """Serves ``collect()`` on ``GET /metrics``, one request at a time on one thread (a scraper
    asks every few seconds; serial handling bounds what a flood of connections can cost)."""

    def __init__(self, address: tuple[str, int], collect: Callable[[], str]) -> None:
        self._server = _Server(address, collect)
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="wga:metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

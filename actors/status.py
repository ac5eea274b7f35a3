"""`wgactors status`: what `wg show` shows, plus the counters of every stage.

``--prometheus`` prints the same in Prometheus's text format (see actors.metrics).

It is a UAPI client: `get=1` for the interface and peers, and our own read-only operation for
the stages. Keys are redacted: the private key never leaves this module (only the public key
derived from it is shown) and preshared keys are shown as present or not.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .log import print_error
from .metrics import STANDARD_KEYS
from .metrics import render as render_prometheus
from .uapi import DeviceStatus, UapiError, format_endpoint, parse_get
from .uapi_server import SOCKET_DIR, STATS_OP, socket_path
from .wireguard.crypto import public_key
from .wireguard.keys import encode_key

__all__ = ["cmd_status", "extra_lines", "failing_lines", "query"]

TIMEOUT = 5.0  # seconds for each query to a daemon
MAX_REPLY = 16 << 20  # bytes: a reply larger than this is refused
MAX_TEXT = 60  # characters of a stage's own text figure shown by `status`


def _request(path: Path, op: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(f"{op}\n\n".encode())
        data = b""
        while not data.endswith(b"\n\n") or b"errno=" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REPLY:
                raise OSError("reply too large")
    return data.decode(errors="replace")


def query(iface: str) -> dict[str, Any]:
    """Everything `status` shows for one interface, redacted, as plain data."""
    path = socket_path(iface)
    status: DeviceStatus = parse_get(_request(path, "get=1"))
    stages: Any = None
    try:
        reply = _request(path, STATS_OP)
        body, _, errno_line = reply.rstrip("\n").rpartition("\n")
        if errno_line == "errno=0":
            stages = json.loads(body)
    except (OSError, ValueError):
        stages = None  # not a wgactors daemon (wireguard-go): no stages to show
    now_ns = time.time_ns()
    return {
        "interface": iface,
        "public_key": encode_key(public_key(status.private_key)) if status.private_key else None,
        "listen_port": status.listen_port,
        "fwmark": status.fwmark,
        "peers": [
            {
                "public_key": encode_key(p.public_key),
                "preshared_key": "(hidden)" if p.preshared_key else None,
                "endpoint": format_endpoint(p.endpoint) if p.endpoint else None,
                "allowed_ips": [str(n) for n in p.allowed_ips],
                "latest_handshake_seconds_ago": (now_ns - p.last_handshake_ns) // 10**9
                if p.last_handshake_ns
                else None,
                "latest_handshake_unix": p.last_handshake_ns // 10**9 or None,
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
                "persistent_keepalive": p.persistent_keepalive or None,
            }
            for p in status.peers
        ],
        "stages": stages,
    }


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def render(info: dict[str, Any]) -> str:
    lines = [f"interface: {info['interface']}"]
    if info["public_key"]:
        lines.append(f"  public key: {info['public_key']}")
    lines.append("  private key: (hidden)")
    lines.append(f"  listening port: {info['listen_port']}")
    if info["fwmark"]:
        lines.append(f"  fwmark: {info['fwmark']:#x}")
    for peer in info["peers"]:
        lines += ["", f"peer: {peer['public_key']}"]
        if peer["preshared_key"]:
            lines.append("  preshared key: (hidden)")
        if peer["endpoint"]:
            lines.append(f"  endpoint: {peer['endpoint']}")
        lines.append(f"  allowed ips: {', '.join(peer['allowed_ips']) or '(none)'}")
        ago = peer["latest_handshake_seconds_ago"]
        if ago is not None:
            lines.append(f"  latest handshake: {ago} seconds ago")
        lines.append(
            f"  transfer: {_bytes(peer['rx_bytes'])} received, {_bytes(peer['tx_bytes'])} sent"
        )
        if peer["persistent_keepalive"]:
            lines.append(f"  persistent keepalive: every {peer['persistent_keepalive']} seconds")
    stages = info.get("stages")
    if stages:
        lines += ["", f"stages ({stages.get('mode', '?')}):"]
        header = (
            f"  {'stage':<14}{'in':>10}{'out':>10}{'queue':>7}{'high':>7}{'restarts':>9}  drops"
        )
        lines.append(header)
        for s in stages.get("stages", []):
            box = s.get("mailbox") or {}
            drops = ", ".join(f"{k}={v}" for k, v in sorted((s.get("drops") or {}).items()))
            lines.append(
                f"  {s.get('name', '?'):<14}{s.get('packets_in', 0):>10}"
                f"{s.get('packets_out', 0):>10}{box.get('depth', 0):>7}"
                f"{box.get('high_water', 0):>7}{s.get('restarts', 0):>9}  {drops or '-'}"
            )
        lines += [f"  {line}" for line in failing_lines(stages)]
        lines += [f"  {line}" for line in extra_lines(stages)]
        offloads = [s["offloads"] for s in stages.get("stages", []) if s.get("offloads")]
        if offloads:  # kernel offloads: on, off, or refused by the kernel (README)
            lines.append(f"  offloads: {','.join(offloads)}")
        if stages.get("cpus"):  # thread placement (actors.placement)
            lines.append(f"  cpus: {stages['cpus']}")
        lines += worker_lines(stages)
    return "\n".join(lines)


def worker_lines(stages: dict[str, Any]) -> list[str]:
    """Worker processes (actors.workers): one line each; the stages above are their sums."""
    workers = stages.get("workers") or []
    if not workers:
        return []
    lines = ["", f"workers ({len(workers)}; the stages above are their sums):"]
    for w in workers:
        by_name = {s.get("name"): s for s in w.get("stages") or []}
        received = (by_name.get("decrypt") or {}).get("packets_in", 0)
        read = (by_name.get("tun_reader") or {}).get("packets_in", 0)
        cpu = w.get("cpu_seconds")
        state = "" if w.get("alive") else " (restarting)"
        lines.append(
            f"  worker {w.get('worker')}: pid {w.get('pid')}{state}, {w.get('peers', 0)} peer(s), "
            f"{received} datagrams in, {read} packets from the host, "
            f"CPU {cpu if cpu is None else f'{cpu:.2f} s'}, restarts {w.get('restarts', 0)}, "
            f"cpus {w.get('cpus') or '?'}"
        )
    return lines


def extra_lines(stages: dict[str, Any]) -> list[str]:
    """One line per custom stage with its own figures (``replies``, ``consumed``, what its
    ``stats_extra`` returns): numbers and short text as they are, a list or table as its
    size (the whole of it is in ``--json``)."""
    lines = []
    for s in stages.get("stages", []):
        if not isinstance(s.get("failure"), dict):  # only custom stages report a failure
            continue
        parts = []
        for key, value in s.items():
            if key in STANDARD_KEYS:
                continue
            if isinstance(value, bool | int | float):
                parts.append(f"{key}={value}")
            elif isinstance(value, str):
                parts.append(f"{key}={value[:MAX_TEXT]}")
            elif isinstance(value, list | dict):
                parts.append(f"{key}=({len(value)} entries, see --json)")
        if parts:
            lines.append(f"{s.get('name', '?')}: {', '.join(parts)}")
    return lines


def failing_lines(stages: dict[str, Any]) -> list[str]:
    """One line per custom stage that is failing (an exception in its ``process`` lately):
    its name, error rate, policy and last error (see actors.failure)."""
    lines = []
    for s in stages.get("stages", []):
        failure = s.get("failure")
        if not isinstance(failure, dict) or not failure.get("failing"):
            continue
        passed = failure.get("stage_error_passed", 0)
        lines.append(
            f"failing: {s.get('name', '?')}: {failure.get('errors_per_second', 0):g} errors/s, "
            f"{failure.get('errors', 0)} in all"
            + (f" ({passed} passed on)" if passed else "")
            + f", on_error={failure.get('on_error', '?')}, last: {failure.get('last_error', '')}"
        )
    return lines


def cmd_status(iface: str | None, *, as_json: bool = False, prometheus: bool = False) -> int:
    if iface:
        names = [iface]
    else:
        names = sorted(p.stem for p in SOCKET_DIR.glob("*.sock")) if SOCKET_DIR.exists() else []
    results, failed = [], []
    for name in names:
        try:
            results.append(query(name))
        except (OSError, UapiError) as e:
            print_error(f"{name}: cannot query: {getattr(e, 'strerror', None) or e}")
            failed.append(name)
    if prometheus:  # a daemon that did not answer is wgactors_up 0 (and the exit status 1)
        sys.stdout.write(render_prometheus(results, failed))
    elif as_json:
        print(json.dumps(results if not iface else (results[0] if results else None), indent=2))
    else:
        print("\n\n".join(render(r) for r in results) or "no interfaces")
    return 1 if failed else 0

"""A hub's table for tests and the bench: many peers in one `wg setconf` file, and ways to
time one live change and to check the table against `wg showconf`.

Only the last peer is real (a wireguard-go end the traffic goes through); the others exist only
in the table. Their public keys are random 32-byte strings: any 32 bytes is a Curve25519 public
key, and nobody ever handshakes with them, so no key pair (and no scalar multiplication) is
needed, which keeps a 100,000-peer file a matter of milliseconds.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .wireguard_go import WG_SOCKET_DIR

__all__ = [
    "HUB_BASE",
    "UapiTimer",
    "hub_peers",
    "hub_setconf",
    "parse_showconf",
    "spare_peer",
]

HUB_BASE = ipaddress.IPv4Address("10.96.0.1")  # the table's peers get HUB_BASE + i, one /32 each
HUB_SPAN = 1 << 20  # addresses from HUB_BASE, 10.99.0.0/16 (the real tunnel) skipped
UAPI_TIMEOUT = 60.0  # seconds one UAPI request may take (a 100,000-peer get is seconds)


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _address(i: int) -> str:
    # Skip 10.99.0.0/16, where the real tunnel's addresses live.
    n = int(HUB_BASE) + i
    if n >= int(ipaddress.IPv4Address("10.99.0.0")):
        n += 1 << 16
    return str(ipaddress.IPv4Address(n))


def hub_peers(count: int) -> Iterator[tuple[str, str]]:
    """``count`` table-only peers: (base64 public key, allowed IP /32)."""
    if not 0 <= count < HUB_SPAN - (1 << 16):
        raise ValueError(f"at most {HUB_SPAN - (1 << 16) - 1} table peers")
    for i in range(count):
        yield _key(), f"{_address(i)}/32"


def spare_peer(count: int) -> tuple[str, str]:
    """A peer that is not among the first ``count``: what a live add puts in the table."""
    return _key(), f"{_address(count)}/32"


def hub_setconf(
    private_key: str,
    listen_port: int,
    table: list[tuple[str, str]],
    real_peer: tuple[str, str, str],
) -> str:
    """A `wg setconf` file: the table's peers, then the real one (public key, allowed IPs,
    endpoint) last, so that traffic to it goes through the last peer configured."""
    parts = [f"[Interface]\nPrivateKey = {private_key}\nListenPort = {listen_port}\n"]
    parts += [f"\n[Peer]\nPublicKey = {key}\nAllowedIPs = {ip}\n" for key, ip in table]
    key, allowed, endpoint = real_peer
    parts.append(f"\n[Peer]\nPublicKey = {key}\nAllowedIPs = {allowed}\nEndpoint = {endpoint}\n")
    return "".join(parts)


def parse_showconf(text: str) -> dict[str, tuple[str, ...]]:
    """`wg showconf` output as {public key: its AllowedIPs, sorted}."""
    table: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = None
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key == "PublicKey":
            current = table.setdefault(value, [])
        elif key == "AllowedIPs" and current is not None:
            current += [v.strip() for v in value.split(",") if v.strip()]
    return {k: tuple(sorted(v)) for k, v in table.items()}


@dataclass
class UapiTimer:
    """One UAPI request straight to the daemon's socket, timed from connect to the errno
    line: the daemon's own cost of a change, without the `wg` process around it."""

    iface: str
    directory: Path = WG_SOCKET_DIR

    def request(self, body: str) -> tuple[float, str]:
        """(seconds, reply) for one request; raises RuntimeError on a non-zero errno."""
        path = str(self.directory / f"{self.iface}.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(UAPI_TIMEOUT)
            start = time.perf_counter()
            s.connect(path)
            s.sendall(body.encode())
            chunks: list[bytes] = []
            tail = b""
            while not (b"errno=" in tail and tail.endswith(b"\n\n")):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                tail = (tail + chunk)[-64:]
            elapsed = time.perf_counter() - start
        reply = b"".join(chunks).decode()
        if "errno=0\n" not in reply[-64:]:
            raise RuntimeError(f"UAPI request failed: {reply[-64:]!r}")
        return elapsed, reply

    def add(self, public_key: str, allowed_ip: str) -> float:
        hex_key = base64.b64decode(public_key).hex()
        return self.request(f"set=1\npublic_key={hex_key}\nallowed_ip={allowed_ip}\n\n")[0]

    def remove(self, public_key: str) -> float:
        hex_key = base64.b64decode(public_key).hex()
        return self.request(f"set=1\npublic_key={hex_key}\nremove=true\n\n")[0]

    def get(self) -> tuple[float, int]:
        """(seconds, peers in the reply) for one get=1."""
        elapsed, reply = self.request("get=1\n\n")
        return elapsed, reply.count("public_key=")

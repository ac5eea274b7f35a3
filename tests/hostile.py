"""The lab of the hostile-traffic tests (test_live_hostile.py, test_live_conformance.py):
wgactors in namespace ``a``, the legitimate wireguard-go peer in ``b``, and a *stranger* in a
namespace of its own joined to ``a`` by a second veth, with what the stranger sends (floods
bounded in count and time, initiations with a valid mac1) and what it reads back."""

from __future__ import annotations

import ast
import json
import random
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns import Netns, WireguardGo, socket_in, veth_pair
from wgactors_proc import LAUNCHER, Wgactors

from actors.lab import wait_until, wireguard_go_peering
from actors.wireguard.constants import LABEL_COOKIE, LABEL_MAC1
from actors.wireguard.crypto import hash_, mac
from actors.wireguard.xchacha import xchacha20poly1305_decrypt

# Tunnel addresses (inside WireGuard), and the stranger's own link to namespace a.
A4, B4, A6, B6 = "10.98.0.1", "10.98.0.2", "fd98::1", "fd98::2"
B4_EXTRA, B6_EXTRA = "10.98.0.3", "fd98::3"  # wireguard-go's addresses we do not allow
LINK_A4, LINK_S4 = "10.78.0.1", "10.78.0.2"
OUR_PORT, PEER_PORT = 51821, 51820


@dataclass
class Lab:
    a: Netns
    b: Netns
    stranger: Netns
    addr_a4: str  # wgactors's underlay address on the veth to b
    addr_b4: str
    wggo: WireguardGo
    daemon: Wgactors
    our_pub: str

    @property
    def target(self) -> tuple[str, int]:
        """wgactors's UDP port as the stranger reaches it."""
        return (LINK_A4, OUR_PORT)

    @property
    def peer_endpoint(self) -> str:
        return f"{self.addr_b4}:{PEER_PORT}"

    def status(self) -> dict[str, Any]:
        res = self.a.run(str(LAUNCHER), "status", self.daemon.iface, "--json", timeout=30)
        return json.loads(res.stdout)

    def readd_peer_on_wireguard_go(self) -> None:
        """Forget us on wireguard-go and add us back: its next packet needs a new handshake."""
        self.wggo.remove_peer(self.our_pub)
        self.wggo.set_peer(
            self.our_pub,
            allowed_ips=[f"{A4}/32", f"{A6}/128"],
            endpoint=(self.addr_a4, OUR_PORT),
        )

    def handshake_again(self, deadline: float) -> tuple[bool, float]:
        """wireguard-go forgets us, then pings us once a try until one gets through (after a
        new handshake) or ``deadline`` seconds pass: (it got through, the seconds it took)."""
        self.readd_peer_on_wireguard_go()
        t0 = time.monotonic()
        ok = wait_until(
            lambda: self.b.run("ping", "-c", "1", "-W", "1", A4, check=False).returncode == 0,
            deadline,
            step=0,
        )
        return ok, time.monotonic() - t0

    def stranger_socket(self) -> tuple[socket.socket, Receiver]:
        """A UDP socket of the stranger's, bound to its link address, and a started
        :class:`Receiver` on it (the caller stops both)."""
        sock = socket_in(self.stranger, socket.AF_INET)
        sock.bind((LINK_S4, 0))
        receiver = Receiver(sock)
        receiver.start()
        return sock, receiver


@contextmanager
def hostile_lab(
    netns_pair: Any, tmp_path: Path, *, wggo_extra: tuple[str, ...] = ()
) -> Iterator[Lab]:
    iface = f"wgh{secrets.token_hex(3)}"  # the UAPI socket path is global: unique per test
    wggo, conf, our_pub = wireguard_go_peering(
        netns_pair.b,
        tmp_path,
        iface,
        ours=[f"{A4}/24", f"{A6}/64"],
        theirs=[f"{B4}/24", f"{B6}/64"],
        extra_addresses=wggo_extra,
        our_underlay=netns_pair.addr_a4,
        their_underlay=netns_pair.addr_b4,
        our_port=OUR_PORT,
        their_port=PEER_PORT,
    )
    with Netns() as stranger:
        veth_pair(netns_pair.a, stranger, LINK_A4, LINK_S4)
        with wggo, Wgactors(netns_pair.a, conf) as daemon:
            yield Lab(
                netns_pair.a,
                netns_pair.b,
                stranger,
                netns_pair.addr_a4,
                netns_pair.addr_b4,
                wggo,
                daemon,
                our_pub,
            )


def final_stats(log: str) -> list[dict[str, Any]]:
    """The `final stats:` line the daemon logs on SIGTERM, as data."""
    assert "final stats:" in log, log[-3000:]
    line = log.rsplit("final stats:", 1)[1].strip().splitlines()[0]
    return ast.literal_eval(line)


def drops_of(stages: list[dict[str, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for stage in stages:
        total.update(stage.get("drops") or {})
    return total


@dataclass
class FloodResult:
    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)


class Flood(threading.Thread):
    """Sends ``datagrams`` from ``sock`` to ``target`` at about ``rate`` per second, until
    ``max_count`` were sent, ``max_seconds`` passed or :meth:`stop` is called."""

    BURST = 25

    def __init__(
        self,
        sock: socket.socket,
        target: tuple[str, int],
        datagrams: Iterator[tuple[str, bytes]],
        *,
        max_count: int,
        max_seconds: float,
        rate: float,
    ) -> None:
        super().__init__(name="flood", daemon=True)
        self.sock, self.target, self.datagrams = sock, target, datagrams
        self.max_count, self.max_seconds, self.rate = max_count, max_seconds, rate
        self.result = FloodResult()
        self._stop_event = threading.Event()

    def stop(self) -> FloodResult:
        """Stop now (if started) and return what was sent."""
        self._stop_event.set()
        return self.finish()

    def finish(self) -> FloodResult:
        """Wait for the flood to reach one of its bounds."""
        if self.ident is None:  # never started
            return self.result
        self.join(self.max_seconds + 5)
        assert not self.is_alive()
        return self.result

    def run(self) -> None:
        r = self.result
        start = time.monotonic()
        while r.sent < self.max_count and not self._stop_event.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= self.max_seconds:
                break
            ahead = r.sent / self.rate - elapsed
            if ahead > 0:
                self._stop_event.wait(min(ahead, 0.05))
                continue
            for _ in range(min(self.BURST, self.max_count - r.sent)):
                kind, data = next(self.datagrams)
                try:
                    self.sock.sendto(data, self.target)
                except OSError:
                    r.errors += 1
                r.sent += 1
                r.kinds[kind] += 1
        r.seconds = time.monotonic() - start


class Attacker:
    """Knows wgactors's public key: stamps a valid mac1 on garbage initiations, and once it has
    a cookie for its own address (from a cookie reply), a valid mac2 as well."""

    def __init__(self, their_public: bytes, rng: random.Random) -> None:
        self.mac1_key = hash_(LABEL_MAC1, their_public)
        self.cookie_key = hash_(LABEL_COOKIE, their_public)
        self.rng = rng
        self.sent_mac1: dict[int, bytes] = {}  # sender index -> mac1, to open cookie replies
        self.cookie: bytes | None = None

    def initiation(self) -> bytes:
        sender = self.rng.getrandbits(32)
        body = struct.pack("<II", 1, sender) + self.rng.randbytes(108)  # 116 bytes
        mac1 = mac(self.mac1_key, body)
        if len(self.sent_mac1) < 100_000:
            self.sent_mac1[sender] = mac1
        mac2 = mac(self.cookie, body + mac1) if self.cookie is not None else bytes(16)
        return body + mac1 + mac2

    def stream(self) -> Iterator[tuple[str, bytes]]:
        while True:
            yield ("mac2" if self.cookie else "mac1"), self.initiation()

    def take_cookie(self, reply: bytes) -> bool:
        receiver = struct.unpack_from("<I", reply, 4)[0]
        mac1 = self.sent_mac1.get(receiver)
        if mac1 is None:
            return False
        self.cookie = xchacha20poly1305_decrypt(self.cookie_key, reply[8:32], reply[32:64], mac1)
        return True


class Receiver(threading.Thread):
    """Collects what comes back to the stranger's socket (bounded in count)."""

    MAX = 200_000

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(name="receiver", daemon=True)
        self.sock = sock
        self.received: list[tuple[float, bytes]] = []
        self._stop_event = threading.Event()
        sock.settimeout(0.1)

    def run(self) -> None:
        while not self._stop_event.is_set() and len(self.received) < self.MAX:
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                break
            self.received.append((time.monotonic(), data))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def cookie_replies(self) -> list[bytes]:
        return [d for _, d in self.received if len(d) == 64 and d[:4] == b"\x03\x00\x00\x00"]

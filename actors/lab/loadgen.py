"""A hub load generator that costs little CPU, so that the daemon is what is measured.

wgactors runs in namespace a with K peers; this module plays all K of them from namespace b.
It needs no second WireGuard implementation: each peer is the project's own sans-I/O core
(:class:`~actors.wireguard.tunnel.Tunnel`) driven over a real UDP socket for its handshake,
and then made to encrypt a few thousand transport datagrams ahead of time, counters
increasing, so that sending them later is only ``sendmmsg`` of bytes already made. A round
must therefore re-handshake (a fresh :class:`HubPeers`): a datagram can be delivered once.

Both directions are counted by the kernel, not by a busy receiver:

* inbound (b -> daemon -> a's host): the inner packets are UDP to the daemon's own tunnel
  address, port :data:`SINK_PORT`, where nothing listens, so a's host drops them at once (and
  counts them as UDP NoPorts); delivered = the rx packets of the daemon's TUN interface;
* outbound (a's host -> daemon -> b): a UDP socket in a sends to the peers' tunnel addresses,
  the daemon encrypts and sends to the peers' sockets in b, whose receive buffers are tiny and
  never read; delivered = b's UDP InDatagrams + RcvbufErrors (not the veth's rx packets: a
  daemon that sends with UDP GSO crosses the veth in a few large packets).

The sender keeps at most :data:`WINDOW` packets in flight (sent, not yet counted delivered or
dropped), so it sends about as fast as the daemon forwards and spends no CPU on packets the
daemon would only drop; a window that stops moving for :data:`STALL_S` is written off as lost.
Every loop is bounded in packets and in time.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from ..io import mmsg
from ..packet import Packet
from ..wireguard.actions import Transmit, TransmitBatch
from ..wireguard.allowedips import parse_prefix
from ..wireguard.crypto import public_key
from ..wireguard.peer import PeerConfig
from ..wireguard.tunnel import Tunnel
from .command import LabError
from .netns import Netns, entered
from .wgactors import write_conf

__all__ = [
    "DAEMON_ADDRESS",
    "HubPeers",
    "NetCounters",
    "PhaseResult",
    "hub_conf",
    "peer_address",
    "run_phase",
]

DAEMON_ADDRESS = "10.99.0.1"  # the daemon's tunnel address; its interface gets a /16
DAEMON_PREFIX = 16
PEER_BASE = ipaddress.IPv4Address("10.99.1.1")  # peer i is PEER_BASE + i (skipping .0/.255)
MAX_PEERS = 1000
SINK_PORT = 9  # the inbound packets' UDP port in a: nothing listens, the host drops them
PEER_SPORT = 40000  # the inbound packets' source port
OUT_PORT = 40001  # the outbound packets' source port (a's host socket)
DEFAULT_SIZE = 1280  # inner IP packet bytes, both directions (the tunnel MTU)
MIN_SIZE = 28  # an IPv4 header and a UDP header
DEFAULT_PER_PEER = 8192  # datagrams encrypted ahead per peer and round (8 peers: ~90 MB)
MAX_PER_PEER = 65536
ENCRYPT_BATCH = 64  # packets per call into the core while encrypting ahead
BURST = 64  # datagrams per sendmmsg
WINDOW = 512  # packets in flight at most: sent, not yet counted delivered or dropped
STALL_S = 0.02  # a full window that does not move for this long is written off as lost
PACE_SLEEP_S = 0.0002  # the sender's nap while the window is full
DRAIN_S = 0.5  # after the last send, how long delivered counts may still grow
DRAIN_QUIET_S = 0.05  # ... and how long they must stand still to be final
HANDSHAKE_TIMEOUT_S = 15.0  # every peer's handshake (the core retries after REKEY_TIMEOUT)
HANDSHAKE_POLL_S = 0.05
PEER_RCVBUF = 4096  # bytes: the peers' sockets in b keep almost nothing of what arrives
RECV_MAX = 2048  # a handshake response or cookie reply fits


def peer_address(i: int) -> str:
    """Peer ``i``'s tunnel address: 10.99.1.1 upwards, never a .0 or .255."""
    if not 0 <= i < MAX_PEERS:
        raise ValueError(f"peer index must be 0..{MAX_PEERS - 1}")
    n = int(PEER_BASE) + i + 2 * (i // 254)
    return str(ipaddress.IPv4Address(n))


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def hub_conf(
    directory: Path, iface: str, private_key: str, listen_port: int, peers: Sequence[bytes]
) -> Path:
    """The daemon's wg-quick file ``DIRECTORY/IFACE.conf``: the K peers (public keys), each
    one /32 and no endpoint, as a hub learns its peers' endpoints."""
    interface = {
        "PrivateKey": private_key,
        "ListenPort": listen_port,
        "Address": f"{DAEMON_ADDRESS}/{DAEMON_PREFIX}",
    }
    table = [
        {"PublicKey": _b64(pub), "AllowedIPs": f"{peer_address(i)}/32"}
        for i, pub in enumerate(peers)
    ]
    return write_conf(directory, iface, interface, table)


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def inner_udp(src: str, dst: str, size: int, sport: int, dport: int) -> bytes:
    """An IPv4 UDP packet of ``size`` bytes (header checksum set, UDP checksum 0)."""
    if not MIN_SIZE <= size <= 1500:
        raise ValueError(f"size must be {MIN_SIZE}..1500")
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0x4000, 64, 17, 0, s, d)
    head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
    udp = struct.pack("!HHHH", sport, dport, size - 20, 0)
    return head + udp + bytes(size - MIN_SIZE)


# the sendmmsg(2) structures, as the daemon's batched I/O lays them out
_Iovec, _Mmsghdr = mmsg.Iovec, mmsg.Mmsghdr


_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.restype = ctypes.c_int


def sockaddr_in(host: str, port: int) -> bytes:
    """The kernel's ``struct sockaddr_in`` for an IPv4 (host, port)."""
    family = socket.AF_INET.to_bytes(2, "little")
    return family + port.to_bytes(2, "big") + socket.inet_aton(host) + bytes(8)


class Burst:
    """Datagrams to one address, made into ``sendmmsg``'s message array once, ahead of the
    load: sending it is one system call and no Python work per datagram."""

    def __init__(self, sock: socket.socket, datagrams: Sequence[bytes], to: tuple[str, int]):
        if not 1 <= len(datagrams) <= BURST:
            raise ValueError(f"a burst is 1..{BURST} datagrams")
        self.fd = sock.fileno()
        self.count = len(datagrams)
        self._keep = list(datagrams)  # the iovecs point into these
        self._name = ctypes.create_string_buffer(sockaddr_in(*to), 16)
        self._iovs = (_Iovec * self.count)()
        self._msgs = (_Mmsghdr * self.count)()
        for i, data in enumerate(self._keep):
            self._iovs[i].iov_base = ctypes.cast(data, ctypes.c_void_p).value  # type: ignore[arg-type]
            self._iovs[i].iov_len = len(data)
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name = ctypes.addressof(self._name)
            hdr.msg_namelen = 16
            hdr.msg_iov = ctypes.pointer(self._iovs[i])
            hdr.msg_iovlen = 1

    def send(self) -> int:
        """Send the burst once; how many datagrams the kernel took (the rest are refused: a
        full buffer or an error, never waited for)."""
        while True:
            sent: int = _sendmmsg(self.fd, self._msgs, self.count, socket.MSG_DONTWAIT)
            if sent >= 0:
                return sent
            if ctypes.get_errno() != errno.EINTR:
                return 0


@dataclass
class _Peer:
    private: bytes
    public: bytes
    address: str
    sock: socket.socket
    tunnel: Tunnel | None = None
    confirmed: bool = False
    wire: list[bytes] = field(default_factory=list)


class HubPeers:
    """K peers of one daemon, each a core with its own UDP socket in namespace ``ns`` (b).

    :meth:`handshake` makes a session with the daemon for every peer (the first data packet
    confirms it, so the daemon may send too); :meth:`encrypt_ahead` then fills each peer's
    queue of transport datagrams. :meth:`close` closes the sockets; use as a context manager.
    """

    def __init__(self, ns: Netns, count: int, local_host: str, daemon: tuple[str, int]) -> None:
        if not 1 <= count <= MAX_PEERS:
            raise ValueError(f"peers must be 1..{MAX_PEERS}")
        self.daemon = daemon
        self.peers: list[_Peer] = []
        try:
            for i in range(count):
                with entered(ns):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((local_host, 0))
                sock.setblocking(False)
                private = os.urandom(32)
                self.peers.append(_Peer(private, public_key(private), peer_address(i), sock))
        except BaseException:
            self.close()
            raise

    @property
    def publics(self) -> list[bytes]:
        return [p.public for p in self.peers]

    def close(self) -> None:
        for p in self.peers:
            with contextlib.suppress(OSError):
                p.sock.close()

    def __enter__(self) -> HubPeers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handshake(self, daemon_public: bytes, timeout: float = HANDSHAKE_TIMEOUT_S) -> float:
        """Every peer's handshake with the daemon, all at once; the seconds it took. Each
        peer's first packet (an inbound packet like the load's) confirms its session."""
        logger.disable("actors")  # the cores' handshake lines are not the bench's output
        try:
            return self._handshake(daemon_public, timeout)
        finally:
            logger.enable("actors")

    def _handshake(self, daemon_public: bytes, timeout: float) -> float:
        start = time.monotonic()
        endpoint = self.daemon
        by_fd: dict[int, _Peer] = {}
        for p in self.peers:
            p.tunnel = Tunnel(
                p.private,
                [
                    PeerConfig(
                        daemon_public, None, endpoint, (parse_prefix(f"{DAEMON_ADDRESS}/32"),)
                    )
                ],
                now=start,
            )
            p.confirmed = False
            first = Packet(inner_udp(p.address, DAEMON_ADDRESS, MIN_SIZE, PEER_SPORT, SINK_PORT))
            self._transmit(p, p.tunnel.send(first, start, time.time()))
            by_fd[p.sock.fileno()] = p
        deadline = start + timeout
        while (pending := [p for p in self.peers if not p.confirmed]) and (
            time.monotonic() < deadline
        ):
            ready, _, _ = select.select([p.sock for p in pending], [], [], HANDSHAKE_POLL_S)
            now, wall = time.monotonic(), time.time()
            for sock in ready:
                p = by_fd[sock.fileno()]
                assert p.tunnel is not None
                with contextlib.suppress(BlockingIOError):
                    data, source = sock.recvfrom(RECV_MAX)
                    actions = p.tunnel.receive(data, source, now, wall)
                    self._transmit(p, actions)
                    p.confirmed = p.confirmed or any(
                        isinstance(a, Transmit) and len(a.data) > 32 and a.data[0] == 4
                        for a in actions
                    )
            for p in pending:  # the core resends an initiation that went unanswered
                assert p.tunnel is not None
                self._transmit(p, p.tunnel.update_timers(now, wall))
        missing = sum(1 for p in self.peers if not p.confirmed)
        if missing:
            raise LabError(f"{missing} of {len(self.peers)} peers got no handshake in {timeout} s")
        for p in self.peers:
            p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PEER_RCVBUF)
        return time.monotonic() - start

    @staticmethod
    def _transmit(p: _Peer, actions: Sequence[object]) -> None:
        for a in actions:
            if isinstance(a, Transmit):
                with contextlib.suppress(BlockingIOError):
                    p.sock.sendto(a.data, a.endpoint)

    def encrypt_ahead(self, per_peer: int, size: int) -> int:
        """``per_peer`` transport datagrams for every peer, each an inbound packet of ``size``
        bytes, encrypted now; the total."""
        if not 1 <= per_peer <= MAX_PER_PEER:
            raise ValueError(f"per peer must be 1..{MAX_PER_PEER}")
        now, wall = time.monotonic(), time.time()
        for p in self.peers:
            if p.tunnel is None or not p.confirmed:
                raise LabError("encrypt_ahead before a handshake")
            packet = Packet(inner_udp(p.address, DAEMON_ADDRESS, size, PEER_SPORT, SINK_PORT))
            wire: list[bytes] = []
            while len(wire) < per_peer:
                n = min(ENCRYPT_BATCH, per_peer - len(wire))
                for a in p.tunnel.send_batch([packet] * n, now, wall):
                    if isinstance(a, TransmitBatch):
                        wire += a.datagrams
                    elif isinstance(a, Transmit):
                        wire.append(a.data)
            p.wire = wire
        return sum(len(p.wire) for p in self.peers)

    def bursts(self) -> list[Burst]:
        """The encrypted datagrams as sendmmsg bursts, the peers taking turns."""
        per_peer = [
            [
                Burst(p.sock, p.wire[i : i + BURST], self.daemon)
                for i in range(0, len(p.wire), BURST)
            ]
            for p in self.peers
        ]
        return _take_turns(per_peer)


def _take_turns(queues: list[list[Burst]]) -> list[Burst]:
    out: list[Burst] = []
    for i in range(max(map(len, queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def outbound_bursts(sock: socket.socket, count: int, per_peer: int, size: int) -> list[Burst]:
    """The outbound load as sendmmsg bursts on ``sock`` (in a): ``per_peer`` UDP payloads to
    each peer's tunnel address, the peers taking turns."""
    payload = bytes(size - MIN_SIZE)
    sizes = [min(BURST, per_peer - start) for start in range(0, per_peer, BURST)]
    return _take_turns(
        [
            [Burst(sock, [payload] * n, (peer_address(i), SINK_PORT)) for n in sizes]
            for i in range(count)
        ]
    )


class NetCounters:
    """One namespace's interface and UDP counters, read with one ``pread`` each from files
    opened inside it: cheap enough to read between two bursts."""

    def __init__(self, ns: Netns) -> None:
        with entered(ns):
            self._dev = os.open("/proc/thread-self/net/dev", os.O_RDONLY)
            self._snmp = os.open("/proc/thread-self/net/snmp", os.O_RDONLY)

    def close(self) -> None:
        for fd in (self._dev, self._snmp):
            with contextlib.suppress(OSError):
                os.close(fd)

    def link(self, dev: str) -> dict[str, int]:
        """rx/tx packets, bytes and drops of ``dev`` (zeros if it is gone)."""
        text = os.pread(self._dev, 1 << 20, 0).decode()
        for line in text.splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() == dev:
                f = [int(x) for x in rest.split()]
                return {
                    "rx_bytes": f[0],
                    "rx_packets": f[1],
                    "rx_dropped": f[3],
                    "tx_bytes": f[8],
                    "tx_packets": f[9],
                    "tx_dropped": f[11],
                }
        return dict.fromkeys(
            ("rx_bytes", "rx_packets", "rx_dropped", "tx_bytes", "tx_packets", "tx_dropped"), 0
        )

    def udp(self) -> dict[str, int]:
        """The ``Udp:`` line of ``/proc/net/snmp`` (InDatagrams, NoPorts, RcvbufErrors...)."""
        text = os.pread(self._snmp, 1 << 16, 0).decode()
        heads = [ln for ln in text.splitlines() if ln.startswith("Udp:")]
        if len(heads) < 2:
            return {}
        names, values = heads[0].split()[1:], heads[1].split()[1:]
        return {n: int(v) for n, v in zip(names, values, strict=False)}


@dataclass
class PhaseResult:
    """One direction's load, once: what was sent and what the kernel counted delivered."""

    sent: int = 0
    delivered: int = 0
    dropped_seen: int = 0  # counted dropped on the way (the daemon's socket, the TUN queue)
    written_off: int = 0  # in flight when the window stalled: taken as lost
    send_errors: int = 0
    seconds: float = 0.0  # first send to the last growth of the delivered count
    generator_cpu_s: float = 0.0  # this thread's CPU while sending
    timed_out: bool = False

    @property
    def pps(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def run_phase(
    bursts: Sequence[Burst],
    delivered: Callable[[], int],
    dropped: Callable[[], int],
    seconds: float,
    window: int = WINDOW,
) -> PhaseResult:
    """Send ``bursts`` with at most ``window`` packets in flight, for at most ``seconds``;
    ``delivered`` and ``dropped`` read the kernel's counters (cumulative). The result counts
    from the first send to the last moment the delivered count grew. The counters are read
    only when the last reading leaves too little room for the next burst."""
    res = PhaseResult()
    base_delivered, base_dropped = delivered(), dropped()
    cpu0 = time.thread_time()
    start = time.monotonic()
    deadline = start + seconds
    last_progress, done = start, 0
    for burst in bursts:
        while res.sent + burst.count - done > window:
            now = time.monotonic()
            fresh = delivered() - base_delivered + dropped() - base_dropped + res.written_off
            if fresh != done:
                done, last_progress = fresh, now
                continue
            if now - last_progress > STALL_S:
                res.written_off += res.sent - done
                done, last_progress = res.sent, now
                break
            if now > deadline:
                break
            time.sleep(PACE_SLEEP_S)
        if time.monotonic() > deadline:
            res.timed_out = True
            break
        took = burst.send()
        res.sent += took
        res.send_errors += burst.count - took
    res.generator_cpu_s = time.thread_time() - cpu0
    # Drain: what is in flight still arrives; the count is final once it stands still.
    end = time.monotonic() + DRAIN_S
    last_t = time.monotonic()
    last = delivered() - base_delivered
    while time.monotonic() < end:
        time.sleep(DRAIN_QUIET_S / 5)
        now_count = delivered() - base_delivered
        if now_count != last:
            last, last_t = now_count, time.monotonic()
        elif time.monotonic() - last_t > DRAIN_QUIET_S:
            break
    res.delivered = last
    res.dropped_seen = dropped() - base_dropped
    res.seconds = max(last_t - start, 1e-6)
    return res

"""The TUN device: created by ioctl, configured through pyroute2, gone when we are.

The device is opened with IFF_TUN | IFF_NO_PI and *not* made persistent, so the kernel deletes
it the moment its last file descriptor closes: on a clean exit, on an exception, and on SIGKILL
alike. That is how "no persistent leftovers after a crash" is guaranteed without any cleanup
code having to run.

With offloads (actors.io.offloads) it is opened with IFF_VNET_HDR as well: every read and
write then carries a virtio-net header, reads may be TCP/UDP super-packets that are split here
(actors.io.gso), and writes may join a TCP flow's segments into one.

With several worker processes the interface has several queues (IFF_MULTI_QUEUE): the kernel
puts each flow on one queue, by a hash of its addresses and ports, or on the queue that last
wrote a packet of that flow (the hash is the same both ways, and entries live a few seconds),
so a flow's packets are read by one reader, in order, and the replies to what a worker writes
come back to that worker.
:meth:`TunDevice.open_queue` opens another queue of the same interface; a queue can be
detached (:meth:`TunDevice.detach`), which takes it out of the kernel's choice but keeps the
interface alive while its descriptor is open: that is how a parent holds a worker's queue
while the worker restarts. A single-queue device (the default) is opened exactly as before.

Every packet crossing the pipeline is at most 1280 bytes, yet `wg-quick up` sets MTU 1420 on
the interface whatever the implementation, so the host sends larger ones. Reads use a buffer
larger than that, and a packet above 1280 is handled as a router whose next hop has MTU 1280
would (RFC 791, RFC 1191, RFC 8201): IPv4 without DF is cut into fragments of at most 1280
bytes that go on through the tunnel; IPv4 with DF and IPv6 are dropped (counted as
``oversize``) and the host is told with ICMP "fragmentation needed" / "packet too big" (MTU
1280), at a bounded rate, so that its path MTU drops. Packets of 1280 bytes or less pay one
length comparison for all this.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from loguru import logger

from ..icmp import too_big_reply
from ..packet import MAX_PACKET_SIZE, Packet, PacketError
from ..wireguard.oversize import TooBigLimiter, dont_fragment, fragment_v4, oversize_packet
from .batching import MAX_BATCH
from .gso import PLAIN_HEADER, VNET_HDR_LEN, GsoError, coalesce, split
from .offloads import OffloadPlan, report_refused
from .tun_aio import AioReader

__all__ = ["READ_SIZE", "HostOversize", "TunDevice", "TunError", "mtu_policy", "open_queues"]

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETQUEUE = 0x400454D9
IFF_TUN = 0x0001
IFF_MULTI_QUEUE = 0x0100
IFF_ATTACH_QUEUE = 0x0200
IFF_DETACH_QUEUE = 0x0400
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
MAX_QUEUES = 256  # queues of one interface (the kernel's MAX_TAP_QUEUES)
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x04, 0x20, 0x40
TSO_FLAGS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
USO_FLAGS = TUN_F_USO4 | TUN_F_USO6
READ_SIZE = 2048  # > wg-quick's MTU 1420, so that an oversize packet is seen whole
VNET_READ_SIZE = VNET_HDR_LEN + 65535  # a GSO frame: the largest IP packet, and its header
VNET_READ_BATCH = 32  # GSO frames read per system call (32 x 64 KB of buffers)
OVERSIZE_NOTICE_INTERVAL = 60.0  # seconds between looks at the interface MTU on oversize reads
# ICMP too-big replies to the host per second, and the burst allowed: the host caches the path
# MTU per destination, so it needs one reply per destination (plus retransmissions); the bound
# keeps a host that floods large DF packets from costing more than a few replies' work.
HOST_TOO_BIG_PER_SECOND = 100.0
HOST_TOO_BIG_BURST = 50
SIOCGIFMTU = 0x8921
TUN_OFFLOADS = ("tun_tso", "tun_uso", "tun_gro")


class TunError(OSError):
    """The TUN device could not be created or configured."""


def _open(name: str, vnet_hdr: bool, multi_queue: bool = False) -> tuple[int, str]:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise TunError(f"cannot open /dev/net/tun: {e.strerror}") from None
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        result = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EINVAL and vnet_hdr:
            raise  # the caller retries without the header
        reason = "already in use" if e.errno == errno.EBUSY else e.strerror
        raise TunError(f"cannot create TUN interface {name!r}: {reason}") from None
    return fd, result[:16].rstrip(b"\0").decode()


class HostOversize:
    """What becomes of a packet above 1280 bytes read from the TUN device (see the module's
    docstring): its fragments, or a drop and perhaps an ICMP too-big, at a bounded rate."""

    __slots__ = ("_limiter",)

    def __init__(self) -> None:
        self._limiter = TooBigLimiter(HOST_TOO_BIG_PER_SECOND, HOST_TOO_BIG_BURST)

    def handle(
        self,
        data: bytes,
        now: float,
        out: list[Packet],
        drops: Counter[str],
        too_big: list[Packet] | None,
        counts: Counter[str] | None,
    ) -> None:
        """Append ``data``'s fragments to ``out``, or count it in ``drops`` and append the
        answer that is due, if the rate allows, to ``too_big``; ``counts`` (if given) counts
        the packets fragmented and the fragments made."""
        packet = oversize_packet(data)
        if packet is None:
            if len(data) < READ_SIZE:
                drops["invalid_packet"] += 1
                return
            # cut short by the read buffer (an MTU above it): only an answer can still help
            packet = data
        elif not dont_fragment(packet):
            try:
                fragments = fragment_v4(packet)
            except ValueError:
                drops["invalid_packet"] += 1
                return
            out += fragments
            if counts is not None:
                counts["oversize_fragmented"] += 1
                counts["oversize_fragments"] += len(fragments)
            return
        drops["oversize"] += 1
        if too_big is not None and self._limiter.allow(now):
            reply = too_big_reply(packet)
            if reply is not None:
                too_big.append(reply)


class TunDevice:
    """One queue of a TUN interface: the descriptor packets are read from and written to.

    The interface has one queue unless opened with ``multi_queue``; then :meth:`open_queue`
    adds queues of the same interface, each an object like this one, for one reader each.
    The interface lives while any of its queues is open (attached or detached)."""

    def __init__(
        self,
        name: str,
        *,
        mtu: int = MAX_PACKET_SIZE,
        offloads: OffloadPlan | None = None,
        multi_queue: bool = False,
    ) -> None:
        if mtu > MAX_PACKET_SIZE:
            raise TunError(f"MTU {mtu} is above the {MAX_PACKET_SIZE} maximum")
        plan = offloads if offloads is not None else OffloadPlan(wanted=frozenset())
        wanted = [n for n in TUN_OFFLOADS if plan.asks(n)]
        # what became of each offload: "on", "off" (not asked for) or "refused" (status shows it)
        self.offloads: dict[str, str] = {n: "off" for n in TUN_OFFLOADS}
        vnet_hdr = bool(wanted)
        try:
            if vnet_hdr and plan.refuses("tun_vnet_hdr"):
                raise OSError(errno.EINVAL, "refused (test switch)")
            fd, self.name = _open(name, vnet_hdr, multi_queue)
        except OSError as e:
            if isinstance(e, TunError):
                raise
            for n in wanted:
                self._refused(name, n, f"IFF_VNET_HDR: {e.strerror}")
            vnet_hdr = False
            fd, self.name = _open(name, False, multi_queue)
        self.vnet_hdr = vnet_hdr
        self.multi_queue = multi_queue
        self._start(fd, mtu)
        if vnet_hdr:
            self._set_offloads(plan, wanted)

    def _start(self, fd: int, mtu: int) -> None:
        """The state of one queue's reader and writer."""
        self.fd = fd
        self.attached = True
        self.mtu = mtu
        # the oversize path's own state: only the one thread that reads the device touches it
        self._oversize = HostOversize()
        self._last_oversize_look = float("-inf")
        self._mtu_told = mtu
        # the largest packet one read takes whole
        self._readable = VNET_READ_SIZE - VNET_HDR_LEN if self.vnet_hdr else READ_SIZE
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    # -- queues

    def open_queue(self) -> TunDevice:
        """Another queue of this interface, opened with the flags the first one got (the
        virtio-net header and the offloads belong to the interface, so they carry over)."""
        if not self.multi_queue:
            raise TunError(f"{self.name} was opened with one queue (multi_queue=False)")
        if self.fd < 0:  # the interface may be gone: opening by name would make a new one
            raise TunError(f"a queue of {self.name} opened from a closed one")
        try:
            fd, name = _open(self.name, self.vnet_hdr, multi_queue=True)
        except TunError:
            raise
        except OSError as e:
            raise TunError(f"cannot open a queue of {self.name}: {e.strerror}") from None
        return TunDevice.adopt(
            fd, name, vnet_hdr=self.vnet_hdr, offloads=self.offloads, mtu=self.mtu
        )

    @classmethod
    def adopt(
        cls,
        fd: int,
        name: str,
        *,
        vnet_hdr: bool,
        offloads: dict[str, str],
        mtu: int = MAX_PACKET_SIZE,
        multi_queue: bool = True,
    ) -> TunDevice:
        """A queue another process opened and passed on (a worker process's own queue):
        ``vnet_hdr`` and ``offloads`` are what the opener got, since both belong to the
        interface and cannot be asked for twice."""
        queue = cls.__new__(cls)
        queue.name = name
        queue.offloads = dict(offloads)
        queue.vnet_hdr = vnet_hdr
        queue.multi_queue = multi_queue
        queue._start(fd, mtu)
        return queue

    def detach(self) -> None:
        """Take this queue out of the kernel's choice: the host's packets go to the other
        queues (or, with none attached, are dropped), reads get nothing, and the open
        descriptor still keeps the interface alive. Polling a detached queue reports an
        error at once: nobody should wait on one."""
        self._set_queue(IFF_DETACH_QUEUE)
        self.attached = False

    def attach(self) -> None:
        """Give a detached queue back its share of the host's packets."""
        self._set_queue(IFF_ATTACH_QUEUE)
        self.attached = True

    def _set_queue(self, flag: int) -> None:
        if not self.multi_queue:
            raise TunError(f"{self.name} has one queue: it cannot be attached or detached")
        try:
            fcntl.ioctl(self.fd, TUNSETQUEUE, struct.pack("16sH22x", b"", flag))
        except OSError as e:
            raise TunError(f"TUNSETQUEUE on {self.name}: {e.strerror}") from None

    def _set_offloads(self, plan: OffloadPlan, wanted: list[str]) -> None:
        """Ask for TSO, then USO on top: each refusal is logged once and the rest kept. The
        writer's coalescing needs no flag (a GSO frame written is always accepted)."""
        flags = 0
        for name, extra in (("tun_tso", TSO_FLAGS), ("tun_uso", TUN_F_CSUM | USO_FLAGS)):
            if name not in wanted:
                continue
            try:
                if plan.refuses(name):
                    raise OSError(errno.EINVAL, "refused (test switch)")
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags | extra)
                flags |= extra
                self.offloads[name] = "on"
            except OSError as e:
                self._refused(self.name, name, f"TUNSETOFFLOAD: {e.strerror}")
        if "tun_gro" in wanted:
            if plan.refuses("tun_gro"):
                self._refused(self.name, "tun_gro", "refused (test switch)")
            else:
                self.offloads["tun_gro"] = "on"

    def _refused(self, owner: str, name: str, why: str) -> None:
        self.offloads[name] = "refused"
        report_refused(owner, name, why)

    # -- configuration (pyroute2)

    def configure(
        self,
        addresses: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = (),
        routes: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        *,
        up: bool = True,
    ) -> None:
        """Set the MTU, the addresses and the routes, then (unless told not to: wg-quick does
        it itself) bring the link up."""
        from pyroute2 import IPRoute

        try:
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=self.name)[0]
                ipr.link("set", index=index, mtu=self.mtu)
                for addr in addresses:
                    extra = {"flags": 0x02} if addr.version == 6 else {}  # IFA_F_NODAD
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(addr.ip),
                        prefixlen=addr.network.prefixlen,
                        **extra,
                    )
                if up:
                    ipr.link("set", index=index, state="up")
                for net in routes:
                    _add_route(ipr, net, index)
        except TunError:
            raise
        except Exception as e:  # pyroute2 raises NetlinkError and friends
            raise TunError(f"cannot configure {self.name}: {e}") from None

    def mtu_text(self) -> str:
        """:func:`mtu_policy` for the interface's MTU now (the one we set, unless the kernel
        says otherwise)."""
        return mtu_policy(interface_mtu(self.name) or self.mtu, self._readable)

    # -- the data path

    def fileno(self) -> int:
        return self.fd

    def wait_readable(self, timeout: float) -> bool:
        return bool(self._poll.poll(timeout * 1000))

    def make_reader(self) -> AioReader:
        """A batched reader for this device (one per reading thread: it owns its buffers),
        with buffers for whole GSO frames when the kernel may send them."""
        if self.vnet_hdr:
            return AioReader(self.fd, VNET_READ_BATCH, VNET_READ_SIZE)
        return AioReader(self.fd, MAX_BATCH, READ_SIZE)

    def read_batch(
        self,
        max_batch: int,
        drops: Counter[str],
        too_big: list[Packet] | None,
        reader: AioReader,
        counts: Counter[str] | None = None,
    ) -> list[Packet]:
        """The packets of up to ``max_batch`` reads that are ready now (with TSO, one read may
        hold dozens of packets; an IPv4 packet above 1280 bytes without DF becomes its
        fragments). Dropped and invalid ones are counted in ``drops``, which belongs to the
        calling stage. For each dropped oversize packet the ICMP "too big" answer, if one is due
        and the rate allows, is appended to ``too_big`` for the caller to deliver back to the
        kernel (see :mod:`actors.icmp`). ``reader`` is the calling stage's own
        (:meth:`make_reader`); GSO frames and the packets split from them, and packets
        fragmented, are counted in ``counts``, if given."""
        try:
            datas = reader.read(max_batch)
        except OSError as e:
            if e.errno == errno.EBADFD:
                return []
            raise
        if self.vnet_hdr:
            datas = self._split(datas, drops, counts)
        out: list[Packet] = []
        for data in datas:
            if len(data) > MAX_PACKET_SIZE:
                self._notice_oversize()
                self._oversize.handle(data, time.monotonic(), out, drops, too_big, counts)
                continue
            try:
                out.append(Packet(data))
            except PacketError:
                drops["invalid_packet"] += 1
        return out

    @staticmethod
    def _split(
        frames: list[bytes], drops: Counter[str], counts: Counter[str] | None
    ) -> list[bytes]:
        datas: list[bytes] = []
        for frame in frames:
            if len(frame) > VNET_HDR_LEN and not frame[0] and not frame[1]:  # plain: the most
                datas.append(frame[VNET_HDR_LEN:])
                continue
            try:
                parts = split(frame)
            except GsoError:
                drops["bad_gso"] += 1
                continue
            datas += parts
            if counts is not None and frame[1]:
                counts["gso_frames"] += 1
                counts["gso_packets"] += len(parts)
        return datas

    def frames(self, datas: list[bytes]) -> list[tuple[bytes, int, int]]:
        """What to write for ``datas``: each buffer with how many packets it carries and
        their bytes. With a vnet header each buffer starts with one; with GRO on, runs of one
        TCP flow share a buffer."""
        if self.offloads["tun_gro"] == "on":
            return coalesce(datas)
        if self.vnet_hdr:
            return [(PLAIN_HEADER + d, 1, len(d)) for d in datas]
        return [(d, 1, len(d)) for d in datas]

    def _notice_oversize(self) -> None:
        """Say once, at info level, what happens to oversize packets when the interface MTU
        is seen above the one we set (`wg-quick up` raises it after we start): the start-up
        line could only describe the MTU of that moment. Looked at once a minute at most."""
        now = time.monotonic()
        if now - self._last_oversize_look < OVERSIZE_NOTICE_INTERVAL:
            return
        self._last_oversize_look = now
        mtu = interface_mtu(self.name)
        if mtu is not None and mtu != self._mtu_told:
            self._mtu_told = mtu
            level = "WARNING" if mtu > self._readable else "INFO"
            logger.log(level, "{}: {}", self.name, mtu_policy(mtu, self._readable))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_queues(
    name: str,
    count: int,
    *,
    mtu: int = MAX_PACKET_SIZE,
    offloads: OffloadPlan | None = None,
) -> list[TunDevice]:
    """The ``count`` queues of a new interface, in order (one per worker). One queue is a
    plain single-queue device, opened exactly as :class:`TunDevice` opens it."""
    if not 1 <= count <= MAX_QUEUES:
        raise TunError(f"{count} queues: 1..{MAX_QUEUES}")
    first = TunDevice(name, mtu=mtu, offloads=offloads, multi_queue=count > 1)
    queues = [first]
    try:
        while len(queues) < count:
            queues.append(first.open_queue())
    except BaseException:
        for queue in queues:
            queue.close()
        raise
    return queues


def mtu_policy(mtu: int, readable: int = READ_SIZE) -> str:
    """What an interface MTU of ``mtu`` means for the host's packets, for the log: the start-up
    line and the notice when the MTU is seen raised. ``readable`` is the largest packet a
    read takes whole."""
    action = (
        f"packets above {MAX_PACKET_SIZE} are fragmented (IPv4 without DF) or answered with "
        "ICMP too-big"
    )
    if mtu > readable:
        return (
            f"MTU {mtu} on the interface: {action}, but those above {readable} bytes cannot be "
            f"read whole: IPv4 without DF is lost (an MTU of {readable} or less avoids it)"
        )
    if mtu > MAX_PACKET_SIZE:
        return f"MTU {mtu} on the interface: {action}"
    return f"MTU {mtu} on the interface; if raised (wg-quick up sets 1420), {action}"


def interface_mtu(name: str) -> int | None:
    """The MTU the kernel has for interface ``name`` now; None if it cannot say."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            result = fcntl.ioctl(s, SIOCGIFMTU, struct.pack("16si12x", name.encode(), 0))
    except OSError:
        return None
    return int(struct.unpack_from("i", result, 16)[0])


ROUTE_EXISTS = errno.EEXIST  # netlink says another route has this prefix


def _add_route(ipr: Any, net: ipaddress.IPv4Network | ipaddress.IPv6Network, index: int) -> None:
    """Add, never replace, as wg-quick does: "replace" would silently take over a route that
    is already there (a LAN's, say), and the host would lose it when we go away."""
    from pyroute2 import NetlinkError

    try:
        ipr.route("add", dst=str(net), oif=index)
    except NetlinkError as e:
        if e.code != ROUTE_EXISTS:
            raise
        if _routed_here(ipr, net, index):
            return  # e.g. the kernel's route for our own Address: wg-quick skips those too
        raise TunError(
            f"a route to {net} already exists (see `ip route show {net}`); wgactors adds routes "
            "and does not take one over: remove it, or narrow the peer's AllowedIPs"
        ) from None


def _routed_here(ipr: Any, net: ipaddress.IPv4Network | ipaddress.IPv6Network, index: int) -> bool:
    family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    for route in ipr.get_routes(family=family, dst_len=net.prefixlen):
        dst = route.get_attr("RTA_DST")
        same = dst is not None and ipaddress.ip_address(dst) == net.network_address
        if same and route.get_attr("RTA_OIF") == index:
            return True
    return False

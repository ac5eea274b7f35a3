"""The TUN device: created by ioctl, configured through pyroute2, gone when we are.

The device is opened with IFF_TUN | IFF_NO_PI and *not* made persistent, so the kernel deletes
it the moment its last file descriptor closes: on a clean exit, on an exception, and on SIGKILL
alike. That is how "no persistent leftovers after a crash" is guaranteed without any cleanup
code having to run.

Reads use a buffer larger than the MTU on purpose: if someone raises the MTU of the live
interface, an oversize packet is seen whole, dropped and counted (with a rate-limited warning)
instead of being truncated into a corrupt one.
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
from .batch import AioReader

__all__ = ["READ_SIZE", "TunDevice", "TunError"]

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_SIZE = 2048  # > MTU so that an oversize packet is detected, not truncated
OVERSIZE_WARNING_INTERVAL = 60.0  # seconds between repeated MTU warnings
WRITE_WAIT_MS = 50  # how long a write waits for a full TUN queue before dropping


class TunError(OSError):
    """The TUN device could not be created or configured."""


class TunDevice:
    def __init__(self, name: str, *, mtu: int = MAX_PACKET_SIZE) -> None:
        if mtu > MAX_PACKET_SIZE:
            raise TunError(f"MTU {mtu} is above the {MAX_PACKET_SIZE} maximum")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise TunError(f"cannot open /dev/net/tun: {e.strerror}") from None
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
            result = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            os.close(fd)
            reason = "already in use" if e.errno == errno.EBUSY else e.strerror
            raise TunError(f"cannot create TUN interface {name!r}: {reason}") from None
        self.fd = fd
        self.name = result[:16].rstrip(b"\0").decode()
        self.mtu = mtu
        self._last_oversize_warning = float("-inf")
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._out_poll = select.poll()
        self._out_poll.register(fd, select.POLLOUT)

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

    def current_mtu(self) -> int:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            link = ipr.link("get", ifname=self.name)[0]
            return int(link.get_attr("IFLA_MTU"))

    # -- the data path

    def fileno(self) -> int:
        return self.fd

    def wait_readable(self, timeout: float) -> bool:
        return bool(self._poll.poll(timeout * 1000))

    def read_batch(
        self,
        max_batch: int,
        drops: Counter[str],
        too_big: list[Packet] | None = None,
        reader: AioReader | None = None,
    ) -> list[Packet]:
        """Up to ``max_batch`` packets that are ready now; oversize and invalid ones are counted
        in ``drops``, which belongs to the calling stage. For each oversize packet the ICMP
        "too big" answer, if one is due, is appended to ``too_big`` for the caller to deliver
        back to the kernel (see :mod:`actors.icmp`). With a ``reader`` (the calling stage's
        own), the batch is read with io_submit, usually in one system call."""
        if reader is not None:
            try:
                datas = reader.read(max_batch)
            except OSError as e:
                if e.errno == errno.EBADFD:
                    return []
                raise
        else:
            datas = self._read_each(max_batch)
        out: list[Packet] = []
        for data in datas:
            if len(data) > MAX_PACKET_SIZE:
                drops["oversize"] += 1
                self._warn_oversize(len(data))
                if too_big is not None:
                    reply = too_big_reply(data)
                    if reply is not None:
                        too_big.append(reply)
                continue
            try:
                out.append(Packet(data))
            except PacketError:
                drops["invalid_packet"] += 1
        return out

    def _read_each(self, max_batch: int) -> list[bytes]:
        datas = []
        for _ in range(max_batch):
            try:
                datas.append(os.read(self.fd, READ_SIZE))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.EBADFD:
                    break
                raise
        return datas

    def _warn_oversize(self, size: int) -> None:
        now = time.monotonic()
        if now - self._last_oversize_warning >= OVERSIZE_WARNING_INTERVAL:
            self._last_oversize_warning = now
            logger.warning(
                "{}: dropped a {}-byte packet: wgactors carries at most {} bytes, and the "
                "interface MTU is above that (senders are told with ICMP too-big; to avoid the "
                "round trip: ip link set {} mtu {}, or MTU = {} in the config)",
                self.name,
                size,
                MAX_PACKET_SIZE,
                self.name,
                MAX_PACKET_SIZE,
                MAX_PACKET_SIZE,
            )

    def write(self, data: bytes) -> str | None:
        """Write one packet; None on success, else the reason it was dropped."""
        try:
            os.write(self.fd, data)
            return None
        except (BlockingIOError, InterruptedError):
            if self._out_poll.poll(WRITE_WAIT_MS):
                try:
                    os.write(self.fd, data)
                    return None
                except OSError:
                    pass
            return "write_full"
        except OSError as e:
            return f"write_{errno.errorcode.get(e.errno or 0, 'error').lower()}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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

"""Kernel steering of the host's packets to the TUN queue of the worker that owns their peer.

With worker processes the interface has one queue per worker, and by default the kernel picks
a queue by a hash of each flow: a packet for a peer of worker 1 is as likely to be read by
worker 0, which must then hand it over (:mod:`actors.io.handover`), at a cost of a few
microseconds per packet. A steering program (``TUNSETSTEERINGEBPF``) instead picks the queue
for each packet as it enters the device: it looks the destination up in two longest-prefix
maps (IPv4 and IPv6) that hold the interface's routing table, prefix -> worker, and returns
that worker's queue; a packet no prefix matches keeps the kernel's flow hash. The parent of the
workers keeps the maps equal to its directory (:meth:`TunSteering.apply`), changed in place
prefix by prefix, so a packet is never steered by a half-built table. The user-space hand-over
stays as the safety net for what the maps have not caught up with yet.

The program is eBPF, assembled here (fifty-odd bytes of it: no compiler, no libbpf); loading it
and creating the maps needs ``CAP_BPF`` or ``CAP_SYS_ADMIN``. Where the kernel refuses
(:class:`SteeringUnavailable`), the hand-over does all the work and nothing else changes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import platform
import struct
from collections.abc import Mapping

__all__ = ["MAX_STEERED_PREFIXES", "SteeringUnavailable", "TunSteering", "steering_program"]

TUNSETSTEERINGEBPF = 0x800454E0  # _IOR('T', 224, int)
MAX_STEERED_PREFIXES = 1 << 20  # entries per map (allocated as used: BPF_F_NO_PREALLOC)
LOG_SIZE = 1 << 16  # bytes of the verifier's log kept when it refuses the program

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361}
_MAP_CREATE, _MAP_UPDATE, _MAP_DELETE, _PROG_LOAD = 0, 2, 3, 5
_LPM_TRIE = 11
_NO_PREALLOC = 1
_SOCKET_FILTER = 1
_PSEUDO_MAP_FD = 1
_LOOKUP = 1  # bpf_map_lookup_elem
_SKB_HASH = 68  # offsetof(struct __sk_buff, hash)

Insn = tuple[int, int, int, int, int]  # code, dst, src, off, imm


class SteeringUnavailable(OSError):
    """The kernel will not run the steering program (privilege, or no eBPF)."""


def _bpf(command: int, attr: bytes) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise SteeringUnavailable(errno.ENOSYS, f"no bpf system call known on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, len(attr))
    result = int(libc.syscall(number, command, buf, len(attr)))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _encode(program: list[Insn]) -> bytes:
    return b"".join(
        struct.pack("<BBhi", code, (src << 4) | dst, off, imm)
        for code, dst, src, off, imm in program
    )


def steering_program(v4_map: int, v6_map: int) -> list[Insn]:
    """The program: the destination's worker from the map of its family, else the flow hash.
    Offsets of jumps count from the next instruction."""

    def ld_word(at: int, slot: int) -> list[Insn]:
        return [
            (0x20, 0, 0, 0, at),  # r0 = ntohl(*(u32 *)(packet + at))
            (0xDC, 0, 0, 0, 32),  # r0 = htobe32(r0): the map compares network order
            (0x63, 10, 0, slot, 0),  # *(u32 *)(r10 + slot) = r0
        ]

    def lookup(map_fd: int, key_at: int) -> list[Insn]:
        return [
            (0x18, 1, _PSEUDO_MAP_FD, 0, map_fd),  # r1 = the map (two slots)
            (0x00, 0, 0, 0, 0),
            (0xBF, 2, 10, 0, 0),  # r2 = r10
            (0x07, 2, 0, 0, key_at),  # r2 += key_at: the key on the stack
            (0x85, 0, 0, 0, _LOOKUP),  # r0 = lookup(r1, r2)
        ]

    v4 = [
        *ld_word(16, -4),
        (0x62, 10, 0, -8, 32),  # the key's prefix length: the whole address
        *lookup(v4_map, -8),
    ]
    v6 = [
        *ld_word(24, -16),
        *ld_word(28, -12),
        *ld_word(32, -8),
        *ld_word(36, -4),
        (0x62, 10, 0, -20, 128),
        *lookup(v6_map, -20),
    ]
    found = [
        (0x15, 0, 0, 2, 0),  # no entry -> the hash
        (0x61, 0, 0, 0, 0),  # r0 = *(u32 *)(r0 + 0): the worker
        (0x95, 0, 0, 0, 0),  # exit
        (0x61, 0, 6, _SKB_HASH, 0),  # r0 = skb->hash
        (0x95, 0, 0, 0, 0),
    ]
    head = [
        (0xBF, 6, 1, 0, 0),  # r6 = ctx (packet loads need it there)
        (0x30, 0, 0, 0, 0),  # r0 = first byte
        (0x74, 0, 0, 0, 4),  # r0 >>= 4: the IP version
        (0x55, 0, 0, len(v4) + 1, 4),  # not 4 -> the IPv6 test
    ]
    after_v4 = [(0x05, 0, 0, len(v6) + 1, 0)]  # -> found
    v6_test = [(0x55, 0, 0, len(v6) + len(found) - 2, 6)]  # neither -> the hash
    return [*head, *v4, *after_v4, *v6_test, *v6, *found]


class _LpmMap:
    def __init__(self, address_bytes: int) -> None:
        self.key_size = 4 + address_bytes
        attr = struct.pack(
            "<IIIIII", _LPM_TRIE, self.key_size, 4, MAX_STEERED_PREFIXES, _NO_PREALLOC, 0
        )
        self.fd = _bpf(_MAP_CREATE, attr.ljust(128, b"\0"))

    def _key(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
        return struct.pack("<I", network.prefixlen) + network.network_address.packed

    def put(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, worker: int) -> None:
        key = ctypes.create_string_buffer(self._key(network), self.key_size)
        value = ctypes.create_string_buffer(struct.pack("<I", worker), 4)
        attr = struct.pack("<IIQQQ", self.fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0)
        _bpf(_MAP_UPDATE, attr.ljust(128, b"\0"))

    def remove(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        key = ctypes.create_string_buffer(self._key(network), self.key_size)
        attr = struct.pack("<IIQ", self.fd, 0, ctypes.addressof(key))
        try:
            _bpf(_MAP_DELETE, attr.ljust(128, b"\0"))
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TunSteering:
    """The steering program of one multi-queue interface, and its maps. Owned by one thread
    of the parent (the one that changes the configuration)."""

    def __init__(self, tun_fd: int) -> None:
        self._maps: list[_LpmMap] = []
        self.prog = -1
        try:
            self._maps = [_LpmMap(4), _LpmMap(16)]
            code = _encode(steering_program(self._maps[0].fd, self._maps[1].fd))
            license_ = ctypes.create_string_buffer(b"GPL")
            insns = ctypes.create_string_buffer(code, len(code))
            log = ctypes.create_string_buffer(LOG_SIZE)
            attr = struct.pack(
                "<IIQQIIQ",
                _SOCKET_FILTER,
                len(code) // 8,
                ctypes.addressof(insns),
                ctypes.addressof(license_),
                1,
                LOG_SIZE,
                ctypes.addressof(log),
            )
            try:
                self.prog = _bpf(_PROG_LOAD, attr.ljust(128, b"\0"))
            except OSError as e:
                why = log.value.decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise SteeringUnavailable(e.errno, f"{e.strerror} {why[0]}".strip()) from None
            fcntl.ioctl(tun_fd, TUNSETSTEERINGEBPF, struct.pack("i", self.prog))
        except SteeringUnavailable:
            self.close()
            raise
        except OSError as e:
            self.close()
            raise SteeringUnavailable(e.errno, e.strerror or str(e)) from None
        self._table: dict[Network, int] = {}

    def apply(self, table: Mapping[Network, int]) -> int:
        """Make the maps hold ``table`` (prefix -> worker): new and changed prefixes first,
        then the ones that went. How many entries changed."""
        old = self._table
        changed = 0
        for network, worker in table.items():
            if old.get(network) != worker:
                self._maps[network.version == 6].put(network, worker)
                changed += 1
        for network in old.keys() - table.keys():
            self._maps[network.version == 6].remove(network)
            changed += 1
        self._table = dict(table)
        return changed

    def close(self) -> None:
        """Detach nothing (the interface goes with its queues); close the descriptors."""
        for lpm in self._maps:
            lpm.close()
        if self.prog >= 0:
            os.close(self.prog)
            self.prog = -1

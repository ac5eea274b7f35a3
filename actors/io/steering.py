"""Kernel steering of WireGuard datagrams to the worker that owns them.

Every worker process has its own UDP socket, all in one ``SO_REUSEPORT`` group on the listen
port. By default the kernel spreads a group's datagrams by a hash of their addresses, which
sends a peer's packets to an arbitrary worker. A classic BPF program attached to the group
(``SO_ATTACH_REUSEPORT_CBPF``) instead returns, for each datagram, the position of the socket
that should get it, and the kernel runs it before any queueing, so steering costs no system
call, no copy and no Python.

What the program reads (its data starts at the UDP payload: the WireGuard message):

- a handshake response (type 2) carries our receiver index at bytes 8..11, a cookie reply
  (type 3) and a transport message (type 4) at bytes 4..7. The index's first byte names its
  worker (:mod:`actors.wireguard.sharding`): the socket at that position gets the datagram;
- an initiation (type 1) names no index of ours: the program returns a position past the
  group, and the kernel falls back to its address hash. The worker that receives it hands it
  to the peer's owner if that is another worker;
- anything shorter than what it reads makes the program return 0 (the kernel's rule for an
  out-of-bounds load): the first worker drops it as it would any junk.

Sockets take positions in the order they join the group (bind), so workers bind in order
(:func:`open_group`). Closing a member moves the last member into its place, so the positions
hold only while every member stays open: whoever restarts a worker must keep its socket.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from ..wireguard.sharding import MAX_WORKERS
from .offloads import OffloadPlan
from .udp import UdpSocket, check_port_free

__all__ = [
    "SO_ATTACH_REUSEPORT_CBPF",
    "attach_steering",
    "open_group",
    "rebind_group",
    "steering_program",
]

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>
FALLBACK = 0xFFFFFFFF  # a position past any group: the kernel's hash decides

# classic BPF opcodes (<linux/filter.h>)
_LD_B_ABS = 0x30  # BPF_LD | BPF_B | BPF_ABS: A = byte at k
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: if A == k jump jt else jf
_JA = 0x05  # BPF_JMP | BPF_JA: jump k
_MOD_K = 0x94  # BPF_ALU | BPF_MOD | BPF_K: A %= k
_RET_A = 0x16  # BPF_RET | BPF_A
_RET_K = 0x06  # BPF_RET | BPF_K

_INITIATION, _RESPONSE = 1, 2
_RESPONSE_INDEX_AT, _INDEX_AT = 8, 4  # offset of the receiver index's first byte

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


def steering_program(workers: int) -> list[Instruction]:
    """The classic BPF program that steers each datagram to one of ``workers`` sockets."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"{workers} workers: 1..{MAX_WORKERS}")
    # Jump offsets count from the next instruction.
    return [
        (_LD_B_ABS, 0, 0, 0),  # 0: A = message type
        (_JEQ_K, 6, 0, _INITIATION),  # 1: initiation -> 8
        (_JEQ_K, 0, 2, _RESPONSE),  # 2: response -> 3, else -> 5
        (_LD_B_ABS, 0, 0, _RESPONSE_INDEX_AT),  # 3: A = first byte of its receiver index
        (_JA, 0, 0, 1),  # 4: -> 6
        (_LD_B_ABS, 0, 0, _INDEX_AT),  # 5: A = first byte of the receiver index
        (_MOD_K, 0, 0, workers),  # 6: A %= workers
        (_RET_A, 0, 0, 0),  # 7: that socket
        (_RET_K, 0, 0, FALLBACK),  # 8: the kernel's hash
    ]


def attach_steering(sock: socket.socket, workers: int) -> None:
    """Attach the steering program to the reuseport group ``sock`` belongs to (any member
    will do; the program is the group's). OSError if the kernel refuses it."""
    program = steering_program(workers)
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def open_group(
    port: int,
    workers: int,
    *,
    fwmark: int = 0,
    offloads: OffloadPlan | None = None,
) -> list[UdpSocket]:
    """The listening sockets of ``workers`` workers: socket ``i`` is worker ``i``'s, at
    position ``i`` of one reuseport group on ``port`` (0: a free port, the same for all),
    with the steering program attached. One worker gets a plain socket, as the daemon has
    always had. OSError (the sockets closed) if the port or the program is refused."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"{workers} workers: 1..{MAX_WORKERS}")
    if workers == 1:
        return [UdpSocket(port, fwmark=fwmark, offloads=offloads)]
    if port:  # a port in use fails here, as one socket's bind would, not joins its group
        check_port_free(port, fwmark)
    group: list[UdpSocket] = []
    try:
        for _ in range(workers):
            member = UdpSocket(port, fwmark=fwmark, offloads=offloads, reuseport=True)
            port = member.port
            group.append(member)
        attach_steering(group[0].sock, workers)
    except BaseException:
        for member in group:
            member.close()
        raise
    return group


def rebind_group(group: list[UdpSocket], port: int) -> None:
    """Move a whole group to ``port`` (``wg set listen-port``), keeping every descriptor and
    every position: every new member is bound first, in order (a failure leaves the group
    where it was), then each takes its place, and the new group gets its program."""
    if len(group) == 1:
        group[0].rebind(port)
        return
    if port:
        check_port_free(port, group[0].fwmark)
    fresh: list[socket.socket] = []
    try:
        for member in group:
            new = member.bind_another(port)
            fresh.append(new)
            port = new.getsockname()[1]
        attach_steering(fresh[0], len(group))
    except BaseException:
        for new in fresh:
            new.close()
        raise
    for member, new in zip(group, fresh, strict=True):
        member.take(new)

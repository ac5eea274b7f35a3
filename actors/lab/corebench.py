"""The core's per-packet cost next to the cipher's: what `scripts/bench --core` prints.

The protocol core's own work per transport packet (routing, counters, replay window, framing,
timers, building the inner :class:`~actors.packet.Packet`) is Python around one ChaCha20-Poly1305
call. Timing the core and the bare cipher on the same packets, interleaved in the same rounds,
gives a ratio that the machine's load mostly cancels out of: the target is at most 2x.

It runs in process, with no I/O: two cores finish a handshake in memory, then one encrypts
batches of full-size packets and the other decrypts them, as the encrypt and decrypt stages do.
"""

from __future__ import annotations

import random
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from loguru import logger

from ..packet import MAX_PACKET_SIZE, Packet
from ..wireguard.actions import Action, Deliver, DeliverBatch, Endpoint, Transmit, TransmitBatch
from ..wireguard.allowedips import parse_prefix
from ..wireguard.crypto import public_key
from ..wireguard.device import PeerConfig
from ..wireguard.tunnel import Tunnel

__all__ = ["CoreCost", "measure", "print_core"]

BATCH = 32  # packets per call, as a stage's batch
BATCHES_PER_ROUND = 64  # 2048 packets per direction per round: a few ms each
DEFAULT_ROUNDS = 15
MAX_ROUNDS = 1000
_NOW = 1000.0  # a fake clock: the session stays fresh for the whole run
_WALL = 1.7e9  # the UNIX time the in-memory handshake is stamped with
_A_EP, _B_EP = ("192.0.2.1", 51820), ("192.0.2.2", 51820)
_A_IP, _B_IP = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
_NONCE = struct.Struct("<4xQ")
# CPU time of this thread, not wall time: on a machine shared with other work, time spent
# descheduled would otherwise land in whichever step was running.
_clock = time.thread_time


@dataclass(frozen=True, slots=True)
class CoreCost:
    """Median microseconds per packet over ``rounds`` rounds of ``packets`` packets each."""

    size: int
    rounds: int
    packets: int
    encrypt_us: float
    decrypt_us: float
    aead_encrypt_us: float
    aead_decrypt_us: float

    @property
    def encrypt_ratio(self) -> float:
        return self.encrypt_us / self.aead_encrypt_us

    @property
    def decrypt_ratio(self) -> float:
        return self.decrypt_us / self.aead_decrypt_us

    def as_dict(self) -> dict[str, float]:
        return {
            "size": self.size,
            "rounds": self.rounds,
            "packets": self.packets,
            "encrypt_us": self.encrypt_us,
            "decrypt_us": self.decrypt_us,
            "aead_encrypt_us": self.aead_encrypt_us,
            "aead_decrypt_us": self.aead_decrypt_us,
            "encrypt_ratio": self.encrypt_ratio,
            "decrypt_ratio": self.decrypt_ratio,
        }


def _ipv4(src: bytes, dst: bytes, size: int, ident: int) -> Packet:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, ident & 0xFFFF, 0, 64, 17, 0, src, dst)
    return Packet(header + bytes(size - len(header)))


def _pair() -> tuple[Tunnel, Tunnel]:
    """Two cores with a confirmed session between them (A initiated, B received data)."""
    rng = random.Random(13)
    ka, kb = rng.randbytes(32), rng.randbytes(32)
    a = Tunnel(
        ka,
        [PeerConfig(public_key(kb), None, _B_EP, (parse_prefix("10.9.0.2/32"),))],
        now=_NOW,
        rng=random.Random(1).randbytes,
    )
    b = Tunnel(
        kb,
        [PeerConfig(public_key(ka), None, _A_EP, (parse_prefix("10.9.0.1/32"),))],
        now=_NOW,
        rng=random.Random(2).randbytes,
    )
    wire = [(b, t) for t in a.send(_ipv4(_A_IP, _B_IP, 100, 0), _NOW, _WALL) if type(t) is Transmit]
    delivered = 0
    for _ in range(16):  # initiation, response, data: a few hops settle it
        if not wire:
            break
        node, action = wire.pop(0)
        assert isinstance(action, Transmit)
        other = a if node is b else b
        src = _A_EP if node is b else _B_EP
        for result in node.receive(action.data, src, _NOW, _WALL):
            if type(result) is Transmit:
                wire.append((other, result))
            elif type(result) is Deliver:
                delivered += 1
    if delivered != 1 or b.device.peer_map[public_key(ka)].current is None:
        raise RuntimeError("the in-memory handshake did not complete")
    return a, b


def _datagrams(actions: list[Action]) -> list[bytes]:
    out: list[bytes] = []
    for action in actions:
        if isinstance(action, TransmitBatch):
            out += action.datagrams
        elif isinstance(action, Transmit):
            out.append(action.data)
    return out


def _delivered(actions: list[Action]) -> int:
    n = 0
    for action in actions:
        if isinstance(action, DeliverBatch):
            n += len(action.packets)
        elif isinstance(action, Deliver):
            n += 1
    return n


def _core_encrypt(
    send: Callable[[list[Packet], float], list[Action]], sources: list[list[Packet]]
) -> tuple[float, list[list[bytes]]]:
    wire: list[list[bytes]] = []
    start = _clock()
    for batch in sources:
        wire.append(_datagrams(send(batch, _NOW)))
    return _clock() - start, wire


def _core_decrypt(
    receive: Callable[[list[tuple[bytes, Endpoint]], float, float], list[Action]],
    inputs: list[list[tuple[bytes, Endpoint]]],
) -> tuple[float, int]:
    got = 0
    start = _clock()
    for batch in inputs:
        got += _delivered(receive(batch, _NOW, _WALL))
    return _clock() - start, got


def _aead_encrypt(
    aead: ChaCha20Poly1305, base: int, plains: list[bytes]
) -> tuple[float, list[bytes]]:
    encrypt = aead.encrypt
    nonce = _NONCE.pack
    start = _clock()
    sealed = [encrypt(nonce(i), p, None) for i, p in enumerate(plains, base)]
    return _clock() - start, sealed


def _aead_decrypt(aead: ChaCha20Poly1305, base: int, sealed: list[bytes]) -> float:
    decrypt = aead.decrypt
    nonce = _NONCE.pack
    start = _clock()
    for i, c in enumerate(sealed, base):
        decrypt(nonce(i), c, None)
    return _clock() - start


def measure(
    *, rounds: int = DEFAULT_ROUNDS, size: int = MAX_PACKET_SIZE, batches: int = BATCHES_PER_ROUND
) -> CoreCost:
    """Median per-packet cost of the core's encrypt and decrypt and of the bare AEAD."""
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds must be 1..{MAX_ROUNDS}")
    if not 28 <= size <= MAX_PACKET_SIZE:
        raise ValueError(f"size must be 28..{MAX_PACKET_SIZE}")
    logger.disable("actors")  # the in-memory handshake's debug lines are not the bench's output
    try:
        a, b = _pair()
    finally:
        logger.enable("actors")
    sources = [
        [_ipv4(_A_IP, _B_IP, size, i * BATCH + j) for j in range(BATCH)] for i in range(batches)
    ]
    n = batches * BATCH
    aead = ChaCha20Poly1305(bytes(range(32)))
    plains = [p.data for batch in sources for p in batch]
    samples: dict[str, list[float]] = {"enc": [], "dec": [], "aead_enc": [], "aead_dec": []}
    for round_no in range(rounds):
        # What the core sends is the decrypt step's input: fresh counters every round.
        seconds, wire = _core_encrypt(a.encryptor.send_batch, sources)
        samples["enc"].append(seconds)
        if sum(map(len, wire)) != n:
            raise RuntimeError("the core did not encrypt every packet")
        inputs = [[(d, _A_EP) for d in w] for w in wire]
        seconds, got = _core_decrypt(b.device.receive_batch, inputs)
        samples["dec"].append(seconds)
        if got != n:
            raise RuntimeError(f"the core delivered {got} of {n} packets")
        seconds, sealed = _aead_encrypt(aead, round_no * n, plains)
        samples["aead_enc"].append(seconds)
        samples["aead_dec"].append(_aead_decrypt(aead, round_no * n, sealed))
    us = {k: statistics.median(v) / n * 1e6 for k, v in samples.items()}
    return CoreCost(size, rounds, n, us["enc"], us["dec"], us["aead_enc"], us["aead_dec"])


def print_core(cost: CoreCost) -> None:
    print(
        f"core: {cost.size}-byte packets, batches of {BATCH}, median of {cost.rounds} rounds"
        f" of {cost.packets} packets"
    )
    print(f"{'':10}{'core µs/pkt':>14}{'AEAD µs/pkt':>14}{'ratio':>8}")
    print(
        f"{'encrypt':10}{cost.encrypt_us:14.2f}{cost.aead_encrypt_us:14.2f}"
        f"{cost.encrypt_ratio:7.2f}x"
    )
    print(
        f"{'decrypt':10}{cost.decrypt_us:14.2f}{cost.aead_decrypt_us:14.2f}"
        f"{cost.decrypt_ratio:7.2f}x"
    )

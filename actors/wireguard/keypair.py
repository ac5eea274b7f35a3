"""Session keys, split by owner.

A completed handshake yields a :class:`Keypair`. Its sending half, :class:`SendKeys`, is an
immutable value that the handshake owner hands to the encrypting stage; the counter that goes with
it is owned there and nowhere else. Its receiving half stays with the handshake owner in a
:class:`ReceiveSession`, with the replay window that only the decrypting stage may touch.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .replay import ReplayWindow

__all__ = ["Keypair", "ReceiveSession", "SendKeys"]


@dataclass(frozen=True, slots=True)
class SendKeys:
    """What the encrypting stage needs to send on one session. Immutable; safe to pass on."""

    peer: bytes
    key: bytes
    local_index: int
    remote_index: int
    created: float
    is_initiator: bool

    def __repr__(self) -> str:  # never print key material
        return f"SendKeys(local={self.local_index:#010x}, remote={self.remote_index:#010x})"


@dataclass(frozen=True, slots=True)
class Keypair:
    send_key: bytes
    recv_key: bytes
    local_index: int
    remote_index: int
    created: float
    is_initiator: bool

    def __repr__(self) -> str:
        return f"Keypair(local={self.local_index:#010x}, initiator={self.is_initiator})"

    def sending(self, peer: bytes) -> SendKeys:
        return SendKeys(
            peer,
            self.send_key,
            self.local_index,
            self.remote_index,
            self.created,
            self.is_initiator,
        )


class ReceiveSession:
    """The receiving side of one keypair: its AEAD (one object per key) and its replay window.

    ``sending_expired``: its sending half must never be used again (our private key changed),
    though it still receives; the device then never hands it to the encrypting stage."""

    __slots__ = ("aead", "keypair", "replay", "sending_expired")

    def __init__(self, keypair: Keypair) -> None:
        self.keypair = keypair
        self.aead = ChaCha20Poly1305(keypair.recv_key)
        self.replay = ReplayWindow()
        self.sending_expired = False

    @property
    def local_index(self) -> int:
        return self.keypair.local_index

    @property
    def created(self) -> float:
        return self.keypair.created

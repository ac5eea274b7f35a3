"""The Noise_IKpsk2 handshake of WireGuard (whitepaper section 5.4), as pure functions.

Each function takes the state it needs and returns bytes or a verdict; nothing here looks up
peers, keeps time or sends. :mod:`device` decides *when* to run them and what to do with the
result. Names follow the paper: C is the chaining key, H the hash, E/S ephemeral/static keys.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .constants import CONSTRUCTION, IDENTIFIER
from .crypto import (
    CryptoError,
    aead_decrypt,
    aead_encrypt,
    dh,
    hash_,
    kdf1,
    kdf2,
    kdf3,
    public_key,
)
from .keypair import Keypair
from .messages import Initiation, Response

__all__ = [
    "HandshakeError",
    "HandshakeState",
    "Identity",
    "PeerHandshake",
    "begin_session",
    "consume_initiation",
    "consume_response",
    "create_initiation",
    "create_response",
]

_U32 = struct.Struct("<I")
_INITIAL_CHAIN = hash_(CONSTRUCTION)
_INITIAL_HASH = hash_(_INITIAL_CHAIN, IDENTIFIER)
_ZERO_KEY = bytes(32)


class HandshakeError(Exception):
    """A handshake message failed authentication or does not fit our state."""


class HandshakeState(enum.Enum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3
    RESPONSE_CONSUMED = 4


@dataclass(frozen=True, slots=True)
class Identity:
    """Our static key pair."""

    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> Identity:
        return cls(private, public_key(private))

    def __repr__(self) -> str:
        return "Identity(<redacted>)"


class PeerHandshake:
    """Handshake state for one peer; owned by the device, mutated only by these functions."""

    __slots__ = (
        "_identity",
        "_static_static",
        "chaining_key",
        "hash",
        "last_timestamp",
        "local_ephemeral",
        "local_index",
        "preshared_key",
        "remote_ephemeral",
        "remote_index",
        "remote_static",
        "state",
    )

    def __init__(
        self, identity: Identity | None, remote_static: bytes, preshared_key: bytes
    ) -> None:
        self.remote_static = remote_static
        self.preshared_key = preshared_key
        # The static-static DH (~100 us) waits for the first handshake that needs it: a hub
        # that loads 100,000 peers would otherwise spend 10 s on it at start-up, mostly for
        # peers that never connect. The first handshake pays it once.
        self._identity = identity
        self._static_static: bytes | _Pending | None = _PENDING
        self.state = HandshakeState.ZEROED
        self.chaining_key = b""
        self.hash = b""
        self.local_ephemeral = b""
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0
        self.last_timestamp = bytes(12)

    def clear(self) -> None:
        self.state = HandshakeState.ZEROED
        self.chaining_key = b""
        self.hash = b""
        self.local_ephemeral = b""
        self.remote_ephemeral = b""

    @property
    def static_static(self) -> bytes | None:
        """DH(our static, their static); None without a private key or for a low-order key."""
        value = self._static_static
        if isinstance(value, _Pending):
            value = self._static_static = _precompute(self._identity, self.remote_static)
        return value

    def rekey_identity(self, identity: Identity | None) -> None:
        self._identity = identity
        self._static_static = _PENDING
        self.clear()


class _Pending:
    """Marks a static-static DH not computed yet (None already means "cannot be computed")."""


_PENDING = _Pending()


def _precompute(identity: Identity | None, remote_static: bytes) -> bytes | None:
    if identity is None:
        return None  # no private key yet: no handshake can be made or answered
    try:
        return dh(identity.private, remote_static)
    except CryptoError:
        return None  # a low-order peer key can never complete a handshake


def create_initiation(
    identity: Identity,
    hs: PeerHandshake,
    local_index: int,
    timestamp: bytes,
    rng: Callable[[int], bytes],
) -> bytes:
    """The initiation body (everything before mac1); moves ``hs`` to INITIATION_CREATED."""
    if hs.static_static is None:
        raise HandshakeError("peer public key is a low-order point")
    c = _INITIAL_CHAIN
    h = hash_(_INITIAL_HASH, hs.remote_static)
    e_priv = rng(32)
    e_pub = public_key(e_priv)
    c = kdf1(c, e_pub)
    h = hash_(h, e_pub)
    c, k = kdf2(c, dh(e_priv, hs.remote_static))
    enc_static = aead_encrypt(k, 0, identity.public, h)
    h = hash_(h, enc_static)
    c, k = kdf2(c, hs.static_static)
    enc_time = aead_encrypt(k, 0, timestamp, h)
    h = hash_(h, enc_time)
    hs.chaining_key, hs.hash = c, h
    hs.local_ephemeral = e_priv
    hs.local_index = local_index
    hs.state = HandshakeState.INITIATION_CREATED
    return _U32.pack(1) + _U32.pack(local_index) + e_pub + enc_static + enc_time


@dataclass(frozen=True, slots=True)
class ConsumedInitiation:
    """What a valid initiation told us, before we commit it to a peer's state."""

    remote_static: bytes
    remote_index: int
    remote_ephemeral: bytes
    timestamp: bytes
    chaining_key: bytes
    hash: bytes


def consume_initiation(identity: Identity, msg: Initiation) -> ConsumedInitiation:
    """Decrypt an initiation addressed to ``identity``: who sent it, and when."""
    try:
        c = _INITIAL_CHAIN
        h = hash_(_INITIAL_HASH, identity.public)
        c = kdf1(c, msg.ephemeral)
        h = hash_(h, msg.ephemeral)
        c, k = kdf2(c, dh(identity.private, msg.ephemeral))
        remote_static = aead_decrypt(k, 0, msg.encrypted_static, h)
        h = hash_(h, msg.encrypted_static)
        c, k = kdf2(c, dh(identity.private, remote_static))
        timestamp = aead_decrypt(k, 0, msg.encrypted_timestamp, h)
        h = hash_(h, msg.encrypted_timestamp)
    except CryptoError as e:
        raise HandshakeError(f"initiation does not decrypt: {e}") from None
    return ConsumedInitiation(remote_static, msg.sender, msg.ephemeral, timestamp, c, h)


def accept_initiation(hs: PeerHandshake, consumed: ConsumedInitiation) -> None:
    """Commit a consumed initiation to the peer's state (after replay and flood checks)."""
    hs.chaining_key = consumed.chaining_key
    hs.hash = consumed.hash
    hs.remote_ephemeral = consumed.remote_ephemeral
    hs.remote_index = consumed.remote_index
    if consumed.timestamp > hs.last_timestamp:
        hs.last_timestamp = consumed.timestamp
    hs.state = HandshakeState.INITIATION_CONSUMED


def create_response(hs: PeerHandshake, local_index: int, rng: Callable[[int], bytes]) -> bytes:
    """The response body (before mac1); moves ``hs`` to RESPONSE_CREATED."""
    if hs.state is not HandshakeState.INITIATION_CONSUMED:
        raise HandshakeError("no initiation to respond to")
    c, h = hs.chaining_key, hs.hash
    e_priv = rng(32)
    e_pub = public_key(e_priv)
    c = kdf1(c, e_pub)
    h = hash_(h, e_pub)
    try:
        c = kdf1(c, dh(e_priv, hs.remote_ephemeral))
        c = kdf1(c, dh(e_priv, hs.remote_static))
    except CryptoError as e:
        raise HandshakeError(str(e)) from None
    c, t, k = kdf3(c, hs.preshared_key)
    h = hash_(h, t)
    enc_nothing = aead_encrypt(k, 0, b"", h)
    h = hash_(h, enc_nothing)
    hs.chaining_key, hs.hash = c, h
    hs.local_ephemeral = e_priv
    hs.local_index = local_index
    hs.state = HandshakeState.RESPONSE_CREATED
    return _U32.pack(2) + _U32.pack(local_index) + _U32.pack(hs.remote_index) + e_pub + enc_nothing


def consume_response(identity: Identity, hs: PeerHandshake, msg: Response) -> None:
    """Check a response against our pending initiation; moves ``hs`` to RESPONSE_CONSUMED."""
    if hs.state is not HandshakeState.INITIATION_CREATED or msg.receiver != hs.local_index:
        raise HandshakeError("response to no pending initiation")
    c, h = hs.chaining_key, hs.hash
    c = kdf1(c, msg.ephemeral)
    h = hash_(h, msg.ephemeral)
    try:
        c = kdf1(c, dh(hs.local_ephemeral, msg.ephemeral))
        c = kdf1(c, dh(identity.private, msg.ephemeral))
    except CryptoError as e:
        raise HandshakeError(str(e)) from None
    c, t, k = kdf3(c, hs.preshared_key)
    h = hash_(h, t)
    try:
        aead_decrypt(k, 0, msg.encrypted_nothing, h)
    except CryptoError:
        raise HandshakeError("response does not authenticate") from None
    h = hash_(h, msg.encrypted_nothing)
    hs.chaining_key, hs.hash = c, h
    hs.remote_ephemeral = msg.ephemeral
    hs.remote_index = msg.sender
    hs.state = HandshakeState.RESPONSE_CONSUMED


def begin_session(hs: PeerHandshake, now: float) -> Keypair:
    """Derive the transport keys from a finished handshake, then forget the handshake secrets."""
    if hs.state is HandshakeState.RESPONSE_CONSUMED:
        is_initiator = True
    elif hs.state is HandshakeState.RESPONSE_CREATED:
        is_initiator = False
    else:
        raise HandshakeError("handshake not finished")
    first, second = kdf2(hs.chaining_key, b"")
    send, recv = (first, second) if is_initiator else (second, first)
    keypair = Keypair(send, recv, hs.local_index, hs.remote_index, now, is_initiator)
    hs.clear()
    return keypair


def zero_key() -> bytes:
    """The preshared key used when none is configured (all zeros, as the paper specifies)."""
    return _ZERO_KEY

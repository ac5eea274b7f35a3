"""The primitives of Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, as the whitepaper names them.

HASH, MAC, HMAC and KDF are BLAKE2s constructions from hashlib; AEAD is pyca/cryptography's
ChaCha20-Poly1305 with WireGuard's 64-bit little-endian counter nonce. Keeping them as small free
functions lets the handshake in :mod:`noise` read like the paper's pseudocode.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .constants import TAI64_BASE, TIMESTAMP_WHITENING_NS

__all__ = [
    "AeadError",
    "CryptoError",
    "aead_decrypt",
    "aead_encrypt",
    "aead_nonce",
    "dh",
    "hash_",
    "hmac",
    "kdf1",
    "kdf2",
    "kdf3",
    "mac",
    "public_key",
    "tai64n",
    "tai64n_to_ns",
]

_NONCE = struct.Struct("<4xQ")
_TAI64N = struct.Struct(">QI")


class CryptoError(Exception):
    """A cryptographic check failed: a bad tag, or a Diffie-Hellman result that is all zeros."""


class AeadError(CryptoError):
    """An AEAD open failed: wrong key, wrong associated data, or tampered bytes."""


def hash_(*parts: bytes) -> bytes:
    """HASH(a || b || ...): BLAKE2s-256 of the concatenation."""
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, data): keyed BLAKE2s with a 16-byte digest (used for mac1, mac2 and cookies)."""
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s-256, the KDF's building block (not keyed BLAKE2s: the paper is explicit)."""
    return _hmac.digest(key, data, hashlib.blake2s)


def kdf1(key: bytes, data: bytes) -> bytes:
    t0 = hmac(key, data)
    return hmac(t0, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    t0 = hmac(key, data)
    t1 = hmac(t0, b"\x01")
    return t1, hmac(t0, t1 + b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    t0 = hmac(key, data)
    t1 = hmac(t0, b"\x01")
    t2 = hmac(t0, t1 + b"\x02")
    return t1, t2, hmac(t0, t2 + b"\x03")


def aead_nonce(counter: int) -> bytes:
    """The 96-bit ChaCha20-Poly1305 nonce: 32 zero bits, then the counter little-endian."""
    return _NONCE.pack(counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_NONCE.pack(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE.pack(counter), ciphertext, ad)
    except InvalidTag:
        raise AeadError("authentication tag mismatch") from None


def public_key(private: bytes) -> bytes:
    """The Curve25519 public key of a 32-byte private key (clamping is done by X25519 itself)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def dh(private: bytes, public: bytes) -> bytes:
    """DH(private, public). A low-order public key yields all zeros, which Noise must reject."""
    if len(private) != 32 or len(public) != 32:
        raise CryptoError("Curve25519 keys are 32 bytes")
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError:
        raise CryptoError("Diffie-Hellman with a low-order point") from None
    if not any(shared):
        raise CryptoError("Diffie-Hellman with a low-order point")
    return shared


def tai64n(unix_ns: int) -> bytes:
    """TAI64N label of a UNIX time in nanoseconds.

    The nanoseconds field is rounded down to a multiple of 2^24 ns (~16 ms), as wireguard-go and
    the kernel do, so the label does not leak a fine-grained clock; labels still only increase.
    """
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return _TAI64N.pack(TAI64_BASE + seconds, nanos - nanos % TIMESTAMP_WHITENING_NS)


def tai64n_to_ns(label: bytes) -> int:
    """Inverse of :func:`tai64n` (without the whitening), for logs and tests."""
    seconds: int
    nanos: int
    seconds, nanos = _TAI64N.unpack(label)
    return (seconds - TAI64_BASE) * 1_000_000_000 + nanos

"""XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha), which WireGuard's cookie replies need.

pyca/cryptography has ChaCha20 and ChaCha20-Poly1305 but not the extended-nonce variant. The
extension is HChaCha20: the ChaCha20 block function without the final feed-forward addition,
keeping words 0-3 and 12-15. One block of the ChaCha20 keystream *is* that state plus the input
state, so subtracting the known input words, modulo 2^32, recovers HChaCha20 exactly. The 16-byte
"nonce" that cryptography's ChaCha20 takes is words 12-15 (counter then nonce), which is precisely
HChaCha20's 128-bit input.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20

from .crypto import AeadError

__all__ = ["hchacha20", "xchacha20poly1305_decrypt", "xchacha20poly1305_encrypt"]

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_WORDS16 = struct.Struct("<16I")
_WORDS4 = struct.Struct("<4I")
_OUT = struct.Struct("<8I")
_MASK = 0xFFFFFFFF


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20(key, 16-byte input) -> 32-byte subkey."""
    if len(key) != 32 or len(nonce16) != 16:
        raise ValueError("HChaCha20 takes a 32-byte key and a 16-byte input")
    block = Cipher(ChaCha20(key, nonce16), mode=None).encryptor().update(bytes(64))
    out = _WORDS16.unpack(block)
    n = _WORDS4.unpack(nonce16)
    return _OUT.pack(
        (out[0] - _SIGMA[0]) & _MASK,
        (out[1] - _SIGMA[1]) & _MASK,
        (out[2] - _SIGMA[2]) & _MASK,
        (out[3] - _SIGMA[3]) & _MASK,
        (out[12] - n[0]) & _MASK,
        (out[13] - n[1]) & _MASK,
        (out[14] - n[2]) & _MASK,
        (out[15] - n[3]) & _MASK,
    )


def _subkey_and_nonce(key: bytes, nonce24: bytes) -> tuple[bytes, bytes]:
    if len(nonce24) != 24:
        raise ValueError("XChaCha20-Poly1305 takes a 24-byte nonce")
    return hchacha20(key, nonce24[:16]), b"\x00\x00\x00\x00" + nonce24[16:]


def xchacha20poly1305_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    subkey, nonce = _subkey_and_nonce(key, nonce24)
    return ChaCha20Poly1305(subkey).encrypt(nonce, plaintext, ad)


def xchacha20poly1305_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    subkey, nonce = _subkey_and_nonce(key, nonce24)
    try:
        return ChaCha20Poly1305(subkey).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise AeadError("authentication tag mismatch") from None

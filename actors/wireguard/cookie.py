"""MAC1, MAC2 and cookie replies: WireGuard's defence against handshake floods (section 5.4.7).

Two halves, one per direction of a handshake:

- :class:`CookieChecker` is ours as a *receiver* of handshake messages. It verifies mac1 (which
  proves the sender knows our public key), and under load verifies mac2 (which proves the sender
  can receive at its source address) or answers with an encrypted cookie for that address.
- :class:`CookieGenerator` is per peer, as a *sender*: it stamps mac1 and, while it holds a fresh
  cookie from that peer, mac2; and it opens the peer's cookie replies.

All comparisons of MACs are constant-time.
"""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Callable

from .constants import COOKIE_NONCE_SIZE, COOKIE_REFRESH_TIME, LABEL_COOKIE, LABEL_MAC1
from .crypto import AeadError, hash_, mac
from .messages import MAC1_FROM_END, MAC2_FROM_END, CookieReply
from .xchacha import xchacha20poly1305_decrypt, xchacha20poly1305_encrypt

__all__ = ["CookieChecker", "CookieGenerator"]

_ZERO_MAC = bytes(16)


class CookieChecker:
    """Verifies the MACs of handshake messages sent to us, and makes cookie replies."""

    __slots__ = ("_cookie_key", "_mac1_key", "_rng", "_secret", "_secret_born")

    def __init__(self, our_public: bytes, rng: Callable[[int], bytes]) -> None:
        self._mac1_key = hash_(LABEL_MAC1, our_public)
        self._cookie_key = hash_(LABEL_COOKIE, our_public)
        self._rng = rng
        self._secret = rng(32)
        self._secret_born: float | None = None

    def check_mac1(self, message: bytes) -> bool:
        body_end = len(message) - MAC1_FROM_END
        expected = mac(self._mac1_key, message[:body_end])
        return _hmac.compare_digest(expected, message[body_end : body_end + 16])

    def _cookie_for(self, source: bytes) -> bytes:
        return mac(self._secret, source)

    def check_mac2(self, message: bytes, source: bytes, now: float) -> bool:
        """True if mac2 carries the cookie we would give ``source`` now."""
        if self._secret_born is None or now - self._secret_born > COOKIE_REFRESH_TIME:
            return False
        body_end = len(message) - MAC2_FROM_END
        expected = mac(self._cookie_for(source), message[:body_end])
        return _hmac.compare_digest(expected, message[body_end:])

    def create_reply(self, message: bytes, receiver: int, source: bytes, now: float) -> bytes:
        """A cookie reply to ``message`` from ``source``, bound to the message's mac1."""
        if self._secret_born is None or now - self._secret_born > COOKIE_REFRESH_TIME:
            self._secret = self._rng(32)
            self._secret_born = now
        mac1 = message[len(message) - MAC1_FROM_END : len(message) - MAC2_FROM_END]
        nonce = self._rng(COOKIE_NONCE_SIZE)
        sealed = xchacha20poly1305_encrypt(self._cookie_key, nonce, self._cookie_for(source), mac1)
        return CookieReply(receiver, nonce, sealed).encode()


class CookieGenerator:
    """Stamps mac1/mac2 on our handshake messages to one peer, and takes that peer's cookies."""

    __slots__ = ("_cookie", "_cookie_born", "_cookie_key", "_last_mac1", "_mac1_key")

    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = hash_(LABEL_MAC1, peer_public)
        self._cookie_key = hash_(LABEL_COOKIE, peer_public)
        self._cookie: bytes | None = None
        self._cookie_born = 0.0
        self._last_mac1: bytes | None = None

    def stamp(self, body: bytes, now: float) -> bytes:
        """``body`` with mac1 and mac2 appended."""
        mac1 = mac(self._mac1_key, body)
        self._last_mac1 = mac1
        if self._cookie is not None and now - self._cookie_born < COOKIE_REFRESH_TIME:
            mac2 = mac(self._cookie, body + mac1)
        else:
            self._cookie = None
            mac2 = _ZERO_MAC
        return body + mac1 + mac2

    def consume_reply(self, reply: CookieReply, now: float) -> bool:
        """Open a cookie reply to our last message; False if it is not one."""
        if self._last_mac1 is None:
            return False
        try:
            cookie = xchacha20poly1305_decrypt(
                self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1
            )
        except AeadError:
            return False
        self._cookie = cookie
        self._cookie_born = now
        return True

"""Protocol constants of WireGuard (whitepaper sections 5 and 6).

Every number the protocol depends on lives here, so that a reader can check them against the
paper in one place and nothing else in the core hides a magic value.
"""

from typing import Final

CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"

KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
MAC_SIZE: Final = 16
TIMESTAMP_SIZE: Final = 12
COOKIE_NONCE_SIZE: Final = 24

# Message types and their exact sizes (transport is a minimum: header + tag).
MSG_INITIATION: Final = 1
MSG_RESPONSE: Final = 2
MSG_COOKIE_REPLY: Final = 3
MSG_TRANSPORT: Final = 4
INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
TRANSPORT_HEADER_SIZE: Final = 16
TRANSPORT_MIN_SIZE: Final = TRANSPORT_HEADER_SIZE + TAG_SIZE
PADDING_MULTIPLE: Final = 16

# Timers, in seconds (whitepaper section 6.1).
REKEY_AFTER_MESSAGES: Final = 1 << 60
REJECT_AFTER_MESSAGES: Final = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
KEEPALIVE_TIMEOUT: Final = 10.0
COOKIE_REFRESH_TIME: Final = 120.0
# Upper bound of the random jitter added to REKEY_TIMEOUT, as wireguard-go and the kernel do.
REKEY_TIMEOUT_JITTER_MAX: Final = 0.334
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)
# A responder refuses initiations from one peer closer together than this (wireguard-go's
# HandshakeInitationRate = time.Second / 50): it caps the CPU one peer's replayed-but-fresh
# initiations can burn.
HANDSHAKE_INITIATION_RATE: Final = 1 / 50
# The initiator renews a session it is receiving on this long before the peer would reject it.
REKEY_ON_RECEIVE_AGE: Final = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT

# Under load (section 5.3): per-source token bucket for initiations that carry a valid cookie.
RATELIMIT_PACKETS_PER_SECOND: Final = 20
RATELIMIT_BURST: Final = 5
RATELIMIT_MAX_SOURCES: Final = 4096
# When cookies are required ("under load") is decided in load.py.

# Bounds on per-peer state that untrusted traffic could otherwise grow.
MAX_STAGED_PACKETS: Final = 128
# A hub's table: 100,000 peers with headroom (wireguard-go stops at 65,536). At about 2.5 KB a
# peer, a full table stays near 330 MB.
MAX_PEERS: Final = 1 << 17

# TAI64N: 2^62 plus the 10 leap seconds that TAI was ahead of UTC in 1972, as the paper says.
TAI64_BASE: Final = (1 << 62) + 10
# Timestamps are rounded down to this many nanoseconds so they do not leak a precise clock.
TIMESTAMP_WHITENING_NS: Final = 1 << 24

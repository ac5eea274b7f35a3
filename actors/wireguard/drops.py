"""Why the core drops what it drops. Every drop is counted under one of these reasons.

Plain string constants rather than an Enum: they are dict keys on the per-packet path and appear
as-is in `wgactors status` and in logs.
"""

from typing import Final

NO_PRIVATE_KEY: Final = "no_private_key"  # handshake traffic while no private key is set
MALFORMED: Final = "malformed"  # not a WireGuard message, or the wrong size for its type
BAD_MAC1: Final = "bad_mac1"  # handshake message without a valid mac1 for our key
COOKIE_SENT: Final = "cookie_sent"  # under load without a valid mac2: answered with a cookie
RATE_LIMITED: Final = "rate_limited"  # under load, the source spent its handshake budget
BAD_HANDSHAKE: Final = "bad_handshake"  # failed to decrypt or authenticate
UNKNOWN_PEER: Final = "unknown_peer"  # authenticated initiation from a key we do not know
STALE_TIMESTAMP: Final = "stale_timestamp"  # initiation not newer than the last one (replay)
INITIATION_FLOOD: Final = "initiation_flood"  # a peer's initiations closer than 20 ms
UNKNOWN_INDEX: Final = "unknown_index"  # receiver index matches no handshake or session
BAD_COOKIE: Final = "bad_cookie"  # cookie reply that does not open
EXPIRED_SESSION: Final = "expired_session"  # session older than REJECT_AFTER_TIME
REPLAY: Final = "replay"  # counter already seen, or older than the window
BAD_TAG: Final = "bad_tag"  # transport packet that does not authenticate
BAD_INNER_PACKET: Final = "bad_inner_packet"  # decrypted payload is not a valid IP packet
INNER_TOO_BIG: Final = "inner_too_big"  # inner packet over 1280 bytes with DF, or IPv6
SOURCE_NOT_ALLOWED: Final = "source_not_allowed"  # inner source outside the peer's AllowedIPs
NO_ROUTE: Final = "no_route"  # outbound destination matches no peer's AllowedIPs
NO_ENDPOINT: Final = "no_endpoint"  # the peer's address is not known yet
STAGED_OVERFLOW: Final = "staged_overflow"  # too many packets waiting for a handshake
STAGED_EXPIRED: Final = "staged_expired"  # the handshake gave up; waiting packets dropped
TOO_BIG: Final = "too_big"  # outbound packet above the MTU
NOT_OURS: Final = "not_ours"  # handed over by another worker, for a peer this one does not own

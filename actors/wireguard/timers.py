"""The per-peer timers of whitepaper section 6 (wireguard-go's timers.go).

Each rule of the paper has one method here, named after the event that triggers it, so that a
reader can check the rules one by one against wireguard-go's ``timers*`` functions and the
kernel's ``wg_timers_*``. The timers are absolute monotonic deadlines; nothing here reads a
clock: every method takes ``now``. :meth:`Timers.expire` says which deadlines have passed, and
the device decides what each one does (send an initiation, a keepalive, zero the keys).

A hub has 100,000 peers and most of them are idle, so a tick must not look at every one: each
event that arms a deadline reports the peer to the device's ``armed`` map (owned by the device,
shared with its peers' timers only), and a tick visits just those peers, dropping each one whose
deadlines have all passed or been cancelled. A method that only cancels reports nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .constants import KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_TIMEOUT

__all__ = ["TimerEvent", "Timers"]


class TimerEvent(enum.Enum):
    """A deadline that passed; the device's reaction is named after it."""

    RETRANSMIT_HANDSHAKE = "retransmit_handshake"
    SEND_KEEPALIVE = "send_keepalive"
    NEW_HANDSHAKE = "new_handshake"
    ZERO_KEY_MATERIAL = "zero_key_material"
    PERSISTENT_KEEPALIVE = "persistent_keepalive"


@dataclass(slots=True)
class Timers:
    """Absolute deadlines (monotonic seconds), None when not pending, and the flags around them."""

    retransmit_handshake: float | None = None
    send_keepalive: float | None = None
    new_handshake: float | None = None
    zero_key_material: float | None = None
    persistent_keepalive: float | None = None
    need_another_keepalive: bool = False
    handshake_attempts: int = 0
    sent_last_minute_handshake: bool = False
    # The device's peers that may have a deadline pending, and this peer's key in it. None for
    # timers used alone (tests), which then report nothing.
    armed: dict[bytes, None] | None = field(default=None, repr=False, compare=False)
    key: bytes = field(default=b"", repr=False, compare=False)

    def _armed(self) -> None:
        """A deadline was set: the next ticks must visit this peer."""
        armed = self.armed
        if armed is not None:
            armed[self.key] = None

    # ------------------------------------------------------------------ events (section 6)

    def handshake_initiated(self, now: float, jitter: float) -> None:
        """We sent an initiation: retry after REKEY_TIMEOUT (plus jitter) unless answered."""
        self.retransmit_handshake = now + REKEY_TIMEOUT + jitter
        self._armed()

    def handshake_complete(self) -> None:
        """A session is confirmed: stop retrying, and allow the next last-minute rekey."""
        self.retransmit_handshake = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False

    def session_derived(self, now: float) -> None:
        """New keys exist: wipe everything if nothing renews them for 3 x REJECT_AFTER_TIME."""
        self.zero_key_material = now + 3 * REJECT_AFTER_TIME
        self._armed()

    def data_sent(self, now: float, jitter: float) -> None:
        """We sent data: expect an answer within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, or start a
        new handshake (the peer may have lost our session)."""
        if self.new_handshake is None:
            self.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter
            self._armed()

    def data_received(self, now: float) -> None:
        """We received data: answer with a keepalive if we send nothing in KEEPALIVE_TIMEOUT."""
        if self.send_keepalive is None:
            self.send_keepalive = now + KEEPALIVE_TIMEOUT
            self._armed()
        else:
            self.need_another_keepalive = True

    def any_authenticated_packet_sent(self) -> None:
        """Anything authenticated we send (data, keepalive, handshake) is the keepalive."""
        self.send_keepalive = None

    def any_authenticated_packet_received(self) -> None:
        """Anything authenticated from the peer (data, keepalive, initiation, response) proves
        it is alive: no new handshake for want of an answer."""
        self.new_handshake = None

    def any_authenticated_packet_traversal(self, now: float, interval: int) -> None:
        """Any authenticated packet either way restarts the persistent keepalive."""
        if interval:
            self.persistent_keepalive = now + interval
            self._armed()

    def persistent_keepalive_configured(self, now: float, interval: int, at_once: bool) -> None:
        """Persistent keepalive switched on (send one now, as wireguard-go does), or off."""
        if not interval:
            self.persistent_keepalive = None
        elif at_once or self.persistent_keepalive is None:
            self.persistent_keepalive = now
            self._armed()

    # ------------------------------------------------------------------ deadlines

    def earliest(self) -> float | None:
        times = [
            t
            for t in (
                self.retransmit_handshake,
                self.send_keepalive,
                self.new_handshake,
                self.zero_key_material,
                self.persistent_keepalive,
            )
            if t is not None
        ]
        return min(times) if times else None

    def expire(self, now: float) -> list[TimerEvent]:
        """Clear every deadline that has passed and return them, in wireguard-go's order."""
        fired: list[TimerEvent] = []
        if self.retransmit_handshake is not None and now >= self.retransmit_handshake:
            self.retransmit_handshake = None
            fired.append(TimerEvent.RETRANSMIT_HANDSHAKE)
        if self.send_keepalive is not None and now >= self.send_keepalive:
            self.send_keepalive = None
            fired.append(TimerEvent.SEND_KEEPALIVE)
            if self.need_another_keepalive:
                self.need_another_keepalive = False
                self.send_keepalive = now + KEEPALIVE_TIMEOUT
                self._armed()
        if self.new_handshake is not None and now >= self.new_handshake:
            self.new_handshake = None
            fired.append(TimerEvent.NEW_HANDSHAKE)
        if self.zero_key_material is not None and now >= self.zero_key_material:
            self.zero_key_material = None
            fired.append(TimerEvent.ZERO_KEY_MATERIAL)
        if self.persistent_keepalive is not None and now >= self.persistent_keepalive:
            self.persistent_keepalive = None
            fired.append(TimerEvent.PERSISTENT_KEEPALIVE)
        return fired

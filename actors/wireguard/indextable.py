"""The receiver index table (wireguard-go's indextable.go).

Every handshake we start or answer, and every session it yields, is named by a random 32-bit
index that the peer puts in front of its messages to us. The table maps an index to its peer
and, once keys exist, to the receive session. An index is deleted when its handshake or session
is abandoned: an entry left behind would route later messages to the wrong place and grow the
table for as long as the peer exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .keypair import ReceiveSession
from .sharding import index_for_worker

if TYPE_CHECKING:
    from .peer import Peer

__all__ = ["IndexExhausted", "IndexTable"]

# Random draws before giving up; a collision needs about 2^32 live entries to be likely.
MAX_INDEX_TRIES = 64

Entry = tuple["Peer", ReceiveSession | None]


class IndexExhausted(RuntimeError):
    """No free index found: only possible with about 2^32 live handshakes and sessions."""


class IndexTable:
    __slots__ = ("_entries", "_rng", "_shard")

    def __init__(self, rng: Callable[[int], bytes], shard: tuple[int, int] = (0, 1)) -> None:
        """``shard`` is (this worker, of how many): every index handed out names this worker
        (:mod:`actors.wireguard.sharding`), so the kernel can steer the peer's replies to it."""
        self._rng = rng
        self._shard = shard
        index_for_worker(0, *shard)  # a bad shard fails here, not at the first handshake
        self._entries: dict[int, Entry] = {}

    def new_index_for_handshake(self, peer: Peer) -> int:
        """A fresh index for a handshake of ``peer``; its session is attached later."""
        worker, workers = self._shard
        for _ in range(MAX_INDEX_TRIES):
            index = int.from_bytes(self._rng(4), "little")
            if workers > 1:
                index = index_for_worker(index, worker, workers)
            if index not in self._entries:
                self._entries[index] = (peer, None)
                return index
        raise IndexExhausted("receiver index space exhausted")

    def swap_for_session(self, index: int, peer: Peer, session: ReceiveSession) -> None:
        """The handshake at ``index`` produced ``session``: the index now names the session."""
        self._entries[index] = (peer, session)

    def lookup(self, index: int) -> Entry | None:
        return self._entries.get(index)

    def delete(self, index: int) -> None:
        self._entries.pop(index, None)

    def delete_handshake(self, index: int, peer: Peer) -> None:
        """Forget ``index`` if it still names a handshake of ``peer`` without keys (never a
        session, whatever state the handshake has moved on to since)."""
        entry = self._entries.get(index)
        if entry is not None and entry[0] is peer and entry[1] is None:
            del self._entries[index]

    def delete_peer(self, peer: Peer) -> None:
        """Forget every index of a peer being removed: its pending handshake's and its
        sessions', the only ones it can hold (the delete_* calls above keep it so). Looking
        them up, rather than scanning the table, costs the same at 100,000 peers as at one."""
        own = [peer.handshake.local_index]
        own += [s.local_index for s in peer.sessions() if s is not None]
        for index in own:
            entry = self._entries.get(index)
            if entry is not None and entry[0] is peer:
                del self._entries[index]

    def __len__(self) -> int:
        return len(self._entries)

"""The interface's configuration as the parent of the workers sees it, and how a change is
shared out among them.

Every peer belongs to one worker, which alone holds its sessions. The parent keeps the
configuration of all of them (keys, endpoints, allowed IPs, who owns each): a restarted worker
starts again from it, the directory every worker routes by is built from it, and a `wg set`
is split here into one request per worker. Applying the request here first, with the same
rules the device applies (:func:`actors.wireguard.apply.apply_set`), is what keeps the workers
together equal to one device: an allowed IP that moves to a peer of another worker is taken
from its old peer by an extra change sent to that peer's worker, since no worker sees the
other's table. A bad request (too many peers) fails here, before any worker has applied part
of it.

Pure: no I/O, no clock. Owned by one thread of the parent (the UAPI controller's, one request
at a time); the values it returns are immutable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..uapi import PeerChange, SetRequest
from ..wireguard.allowedips import AllowedIPs
from ..wireguard.constants import MAX_PEERS
from ..wireguard.crypto import public_key
from ..wireguard.peer import DeviceError, PeerConfig
from ..wireguard.sharding import PeerDirectory

__all__ = ["InterfaceModel", "Shares"]


@dataclass(frozen=True, slots=True)
class Shares:
    """A `wg set` split among the workers: ``requests[i]`` for worker ``i`` (None: nothing
    for it), and whether the directory changed (owners or routes)."""

    requests: tuple[SetRequest | None, ...]
    directory_changed: bool


class InterfaceModel:
    """Every peer's configuration, its owner, and the interface's routing table."""

    def __init__(self, workers: int, private_key: bytes | None, peers: Iterable[PeerConfig]):
        self.workers = workers
        self.private_key: bytes | None = None
        self.public_key: bytes | None = None
        self._set_key(private_key)
        self.peers: dict[bytes, PeerConfig] = {}
        self.owners: dict[bytes, int] = {}
        self._load = [0] * workers
        self._routes: AllowedIPs[bytes] = AllowedIPs(journal=True)
        self._joined_or_left = False
        for peer in peers:
            self._put(peer, self._least_loaded())
        self._settle()  # a prefix two peers of the file name is the later one's

    # -- what the workers need

    def worker_peers(self, worker: int) -> tuple[PeerConfig, ...]:
        """The peers ``worker`` owns, in the interface's order: what it starts from."""
        owners = self.owners
        return tuple(p for k, p in self.peers.items() if owners[k] == worker)

    def directory(self) -> PeerDirectory:
        owners = self.owners
        return PeerDirectory(
            self.workers, ((k, owners[k], p.allowed_ips) for k, p in self.peers.items())
        )

    def order(self) -> dict[bytes, int]:
        """Each peer's place in the interface's order (that of `wg show` on one device)."""
        return {key: i for i, key in enumerate(self.peers)}

    def loads(self) -> tuple[int, ...]:
        """Peers per worker."""
        return tuple(self._load)

    # -- changes

    def moved(self, worker: int, endpoints: dict[bytes, tuple[str, int] | None]) -> None:
        """Where ``worker``'s peers were last heard from (roaming): what a restart of that
        worker starts from. Peers it no longer owns are not its to move."""
        for key, endpoint in endpoints.items():
            if endpoint is not None and self.owners.get(key) == worker:
                self.peers[key] = replace(self.peers[key], endpoint=endpoint)

    def split(self, request: SetRequest) -> Shares:
        """Apply ``request`` here and return each worker's share of it. DeviceError, with the
        model unchanged, if a device would refuse it."""
        self._check(request)
        changes: list[list[PeerChange]] = [[] for _ in range(self.workers)]
        self._joined_or_left = False
        if request.private_key is not None and request.private_key != self.private_key:
            self._set_key(request.private_key)
            own = self.public_key
            if own is not None and own in self.peers:
                self._remove(own)
        if request.replace_peers:
            for key in list(self.peers):
                self._remove(key)
        for change in request.peers:
            key = change.public_key
            if change.remove:
                owner = self.owners.get(key)
                if owner is not None:
                    changes[owner].append(change)
                    self._remove(key)
                continue
            owner = self._update(change)
            if owner is not None:
                changes[owner].append(change)
        # Prefixes that moved to a peer of another worker: that worker's device cannot know,
        # so the old peer's worker is told the old peer's remaining list.
        losers, routes_moved = self._settle()
        touched = routes_moved or self._joined_or_left
        for key in losers:
            changes[self.owners[key]].append(
                PeerChange(
                    key,
                    update_only=True,
                    replace_allowed_ips=True,
                    allowed_ips=self.peers[key].allowed_ips,
                )
            )
        everyone = request.private_key is not None or request.replace_peers
        requests = tuple(
            SetRequest(
                private_key=request.private_key,
                replace_peers=request.replace_peers,
                peers=tuple(mine),
            )
            if mine or everyone
            else None
            for mine in changes
        )
        return Shares(requests, touched)

    def _check(self, request: SetRequest) -> None:
        """Refuse, before changing anything, what the device would refuse part-way."""
        if request.private_key is not None and len(request.private_key) != 32:
            raise DeviceError("a private key is 32 bytes")
        count = 0 if request.replace_peers else len(self.peers)
        known = set() if request.replace_peers else set(self.peers)
        for change in request.peers:
            if change.remove:
                if change.public_key in known:
                    known.discard(change.public_key)
                    count -= 1
            elif not change.update_only and change.public_key not in known:
                known.add(change.public_key)
                count += 1
                if count > MAX_PEERS:
                    raise DeviceError(f"at most {MAX_PEERS} peers")

    def _update(self, change: PeerChange) -> int | None:
        """A peer section, as :meth:`actors.wireguard.device.Device.update_peer` applies it;
        the worker that owns the peer (None: the section changes nothing)."""
        key = change.public_key
        if key == self.public_key:
            return None
        existing = self.peers.get(key)
        if existing is None and change.update_only:
            return None
        base = existing if existing is not None else PeerConfig(key)
        kept = (
            ()
            if change.replace_allowed_ips or existing is None
            else tuple(self._routes.prefixes(key))
        )
        psk = change.preshared_key
        config = replace(
            base,
            preshared_key=base.preshared_key if psk is None else (psk if any(psk) else None),
            endpoint=change.endpoint if change.endpoint is not None else base.endpoint,
            allowed_ips=kept + tuple(change.allowed_ips),
            persistent_keepalive=(
                base.persistent_keepalive
                if change.persistent_keepalive is None
                else change.persistent_keepalive
            ),
        )
        owner = self.owners[key] if existing is not None else self._least_loaded()
        self._routes.remove_value(key)
        self._put(config, owner)
        return owner

    def _put(self, config: PeerConfig, owner: int) -> None:
        key = config.public_key
        if key not in self.owners:
            self._load[owner] += 1
            self._joined_or_left = True
        self.owners[key] = owner
        for net in config.allowed_ips:
            self._routes.insert(net, key)
        self.peers[key] = config

    def _remove(self, key: bytes) -> None:
        self.peers.pop(key)
        self._joined_or_left = True
        self._load[self.owners.pop(key)] -= 1
        self._routes.remove_value(key)

    def _settle(self) -> tuple[list[bytes], bool]:
        """After a request: every peer whose prefixes moved takes its list from the table (a
        later section may have taken a prefix an earlier one gave it); the peers that lost a
        prefix to a peer of another worker, whose own worker's device cannot know it; and
        whether any prefix ends the request with another owner than it began with."""
        touched: dict[bytes, None] = {}
        losers: dict[bytes, None] = {}
        owners = self.owners
        net_change: dict[object, tuple[bytes | None, bytes | None]] = {}
        for net, new, old in self._routes.take_changes().entries:
            net_change[net] = (net_change[net][0] if net in net_change else old, new)
            for key in (new, old):
                if key is not None and key in self.peers:
                    touched[key] = None
            # A removal happens in the worker that owns the peer, which applies it too; only
            # a prefix taken by a peer of another worker leaves a device behind.
            if (
                new is not None
                and old is not None
                and old != new
                and old in owners
                and owners[old] != owners.get(new)
            ):
                losers[old] = None
        prefixes = self._routes.prefixes
        for key in touched:
            self.peers[key] = replace(self.peers[key], allowed_ips=tuple(prefixes(key)))
        return list(losers), any(old != new for old, new in net_change.values())

    def _least_loaded(self) -> int:
        load = self._load
        return min(range(self.workers), key=load.__getitem__)

    def _set_key(self, private_key: bytes | None) -> None:
        if private_key is None or not any(private_key):
            self.private_key, self.public_key = None, None
            return
        self.private_key, self.public_key = private_key, public_key(private_key)

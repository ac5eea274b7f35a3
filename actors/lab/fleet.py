"""Several wireguard-go peers in one namespace, and the wgactors config that has them all: the
test bed of worker processes, whose subject is how a daemon shares its peers out.

Peer ``k`` (from 1) gets a tunnel of its own: we are ``10.98.k.1``, it is ``10.98.k.2``, each
side's interface holds the /24, so that one namespace can route to every peer through its
own wireguard-go interface. Peer ``k`` listens on ``FLEET_PORT + k``; we listen on
``FLEET_PORT``. Nothing here starts anything: :class:`Fleet` holds the parts, ready to start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .keys import gen_keypair
from .netns import Netns
from .wgactors import write_conf
from .wireguard_go import WgPeer, WireguardGo

__all__ = ["FLEET_PORT", "Fleet", "FleetPeer", "fleet", "fleet_peer", "source_routes"]

FLEET_PORT = 51900
MAX_FLEET = 200  # peers: the third byte of the tunnel addresses


@dataclass(frozen=True)
class FleetPeer:
    number: int
    wggo: WireguardGo  # not started

    @property
    def ours(self) -> str:
        """Our tunnel address toward this peer."""
        return f"10.98.{self.number}.1"

    @property
    def theirs(self) -> str:
        return f"10.98.{self.number}.2"

    @property
    def port(self) -> int:
        return FLEET_PORT + self.number


@dataclass(frozen=True)
class Fleet:
    peers: tuple[FleetPeer, ...]
    conf: Path  # wgactors's config with every peer
    our_private: str
    our_public: str


def fleet_peer(
    ns: Netns, number: int, our_public: str, our_underlay: str | None, *, our_port: int = FLEET_PORT
) -> FleetPeer:
    """Peer ``number`` (1..MAX_FLEET): a wireguard-go in ``ns`` that knows us as
    ``our_public`` (at ``our_underlay``, if given)."""
    if not 1 <= number <= MAX_FLEET:
        raise ValueError(f"fleet peer {number}: 1..{MAX_FLEET}")
    private, _ = gen_keypair()
    ours = f"10.98.{number}.1/32"
    endpoint = (our_underlay, our_port) if our_underlay else None
    wggo = WireguardGo(
        ns,
        private,
        listen_port=FLEET_PORT + number,
        addresses=[f"10.98.{number}.2/24"],
        peers=[WgPeer(our_public, [ours], endpoint=endpoint)],
    )
    return FleetPeer(number, wggo)


def fleet(
    ns: Netns,
    directory: Path,
    iface: str,
    count: int,
    *,
    their_underlay: str,
    our_underlay: str | None = None,
    extra_lines: Sequence[tuple[str, str]] = (),
    endpoints: bool = True,
) -> Fleet:
    """``count`` wireguard-go peers in ``ns`` (reached at ``their_underlay``), and
    ``DIRECTORY/IFACE.conf`` for wgactors with all of them; without ``endpoints`` the config
    names none (a hub's clients behind NAT: they must speak first)."""
    our_private, our_public = gen_keypair()
    peers = tuple(fleet_peer(ns, k, our_public, our_underlay) for k in range(1, count + 1))
    conf = write_conf(
        directory,
        iface,
        {
            "PrivateKey": our_private,
            "ListenPort": FLEET_PORT,
            "Address": ", ".join(f"{p.ours}/24" for p in peers),
            **dict(extra_lines),
        },
        [
            {
                "PublicKey": p.wggo.public_key,
                "AllowedIPs": f"{p.theirs}/32",
                **({"Endpoint": f"{their_underlay}:{p.port}"} if endpoints else {}),
            }
            for p in peers
        ],
    )
    return Fleet(peers, conf, our_private, our_public)


def source_routes(ns: Netns, iface: str, peers: Sequence[FleetPeer]) -> None:
    """Make our host speak to each peer from our address toward it: the routes the daemon
    installs name no source, so the host would pick the interface's first address for all of
    them, which the other peers do not allow."""
    for peer in peers:
        ns.ip("route", "replace", f"{peer.theirs}/32", "dev", iface, "src", peer.ours)

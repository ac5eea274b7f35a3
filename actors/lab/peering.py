"""wireguard-go in one namespace as the peer of a wgactors-to-be: the set-up most live tests
start from. wireguard-go gets its tunnel addresses and expects us at our host addresses; the
wgactors config (a wg-quick file) it comes with reaches wireguard-go over the underlay and
allows only wireguard-go's host addresses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .keys import gen_keypair
from .netns import Netns
from .wgactors import write_conf
from .wireguard_go import WgPeer, WireguardGo

OUR_PORT, THEIR_PORT = 51821, 51820  # wgactors's listen port, wireguard-go's


class Peering(NamedTuple):
    wggo: WireguardGo  # not started yet: use it as a context manager, or call start()
    conf: Path  # the wgactors config
    our_public: str  # wgactors's public key, as wireguard-go knows it


def host_route(cidr: str) -> str:
    """``10.0.0.1/24`` -> ``10.0.0.1/32`` (``/128`` for IPv6): the address alone."""
    address = cidr.split("/", 1)[0]
    return f"{address}/128" if ":" in address else f"{address}/32"


def wireguard_go_peering(
    ns: Netns,
    directory: Path,
    iface: str,
    *,
    ours: Sequence[str],
    theirs: Sequence[str],
    their_underlay: str,
    our_underlay: str | None = None,
    our_port: int = OUR_PORT,
    their_port: int = THEIR_PORT,
    extra_addresses: Sequence[str] = (),
    mtu: int = 1280,
    interface: Mapping[str, Any] | None = None,
    peer: Mapping[str, Any] | None = None,
) -> Peering:
    """wireguard-go in ``ns`` with tunnel addresses ``theirs`` (CIDR) plus ``extra_addresses``
    (which our config does not allow), and ``DIRECTORY/IFACE.conf`` for wgactors with addresses
    ``ours``. wireguard-go learns our endpoint only when ``our_underlay`` is given (else from
    our first packet). ``interface``/``peer`` add or override keys of the wgactors config."""
    ours_private, our_public = gen_keypair()
    theirs_private, _ = gen_keypair()
    our_endpoint = (our_underlay, our_port) if our_underlay else None
    wggo = WireguardGo(
        ns,
        theirs_private,
        listen_port=their_port,
        addresses=[*theirs, *extra_addresses],
        peers=[WgPeer(our_public, [host_route(a) for a in ours], endpoint=our_endpoint)],
        mtu=mtu,
    )
    conf = write_conf(
        directory,
        iface,
        {
            "PrivateKey": ours_private,
            "ListenPort": our_port,
            "Address": ", ".join(ours),
            **(interface or {}),
        },
        [
            {
                "PublicKey": wggo.public_key,
                "AllowedIPs": ", ".join(host_route(a) for a in theirs),
                "Endpoint": f"{their_underlay}:{their_port}",
                **(peer or {}),
            }
        ],
    )
    return Peering(wggo, conf, our_public)

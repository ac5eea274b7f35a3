"""Run the real `wgactors up` launcher in a test namespace (the lab's ``Wgactors``), and the
common test set-up: wireguard-go in namespace b, a wgactors config for namespace a."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actors.lab import (
    LAUNCHER,
    ROOT,
    Wgactors,
    WireguardGo,
    remove_stale_socket,
    wireguard_go_peering,
    write_conf,
)
from actors.lab.wgactors import START_TIMEOUT, STOP_TIMEOUT

__all__ = [
    "A4",
    "B4",
    "LAUNCHER",
    "ROOT",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "Wgactors",
    "remove_stale_socket",
    "wireguard_go_pair",
    "write_conf",
]

A4, B4 = "10.99.0.1", "10.99.0.2"  # our tunnel address, wireguard-go's


def wireguard_go_pair(
    netns_pair: Any,
    tmp_path: Path,
    iface: str,
    *,
    interface: dict[str, Any] | None = None,
    peer: dict[str, Any] | None = None,
) -> tuple[WireguardGo, Path]:
    """A started wireguard-go in namespace b (B4/24, expecting us at A4/32), and a wgactors
    config for namespace a that reaches it. ``interface``/``peer`` add or override keys."""
    wggo, conf, _ = wireguard_go_peering(
        netns_pair.b,
        tmp_path,
        iface,
        ours=[f"{A4}/24"],
        theirs=[f"{B4}/24"],
        their_underlay=netns_pair.addr_b4,
        interface=interface,
        peer=peer,
    )
    return wggo.start(), conf

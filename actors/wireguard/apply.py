"""A `wg set` request applied to the core, in the order wireguard-go's uapi.go applies it.

A pure function of the device, the parsed request and ``now``: the decrypt stage and the
single-threaded loop both call it, so one request has one meaning whichever mode runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .actions import Action

if TYPE_CHECKING:
    from ..uapi import SetRequest
    from .device import Device

__all__ = ["apply_set"]


def apply_set(device: Device, request: SetRequest, now: float) -> list[Action]:
    """Apply a parsed `set=1` request (listen port and fwmark belong to the socket's owner)."""
    out: list[Action] = []
    if request.private_key is not None:
        out += device.set_private_key(request.private_key)
    if request.replace_peers:
        out += device.remove_all_peers()
    for change in request.peers:
        if change.remove:
            out += device.remove_peer(change.public_key)
            continue
        out += device.update_peer(
            change.public_key,
            now,
            create=not change.update_only,
            preshared_key=change.preshared_key,
            endpoint=change.endpoint,
            persistent_keepalive=change.persistent_keepalive,
            replace_allowed_ips=change.replace_allowed_ips,
            allowed_ips=change.allowed_ips,
        )
    return out

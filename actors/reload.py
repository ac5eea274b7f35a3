"""Live reload on SIGHUP: new stages and peers without dropping the tunnel.

People iterate on their stages while the tunnel carries traffic; restarting the daemon would lose
every session and the interface. A reload instead:

1. **validates everything first**: the pipeline file (imports, classes, options) and, in ``up``
   mode, the wg-quick file. A bad file changes nothing and logs one line naming the entry.
   Stage files loaded by path are loaded again if they changed (:func:`actors.catalog.resolve`),
   so edited code is what the check judges and what the new instances run; a changed module
   imported by name is named in a warning, its old code still in use;
2. **swaps the custom stages in place** (:meth:`actors.pipeline.Pipeline.reload`, or the
   single-threaded loop's): unchanged entries keep their instance and state, new and changed ones
   start in position, removed ones drain and stop. The interface, the socket, the protocol
   sessions and queued packets stay;
3. in ``up`` mode, **applies peer changes the way `wg syncconf` does**: peers gone from the file
   are removed, new ones added, and only what differs is set on the others, so their sessions
   and handshakes carry on. The listen port and fwmark are applied live; what needs a restart
   (addresses, MTU, routes of changed AllowedIPs) is named in one warning;
4. logs **one line** saying what changed and how long it took.

Reloads run one at a time, never in the signal handler: the handler only raises a flag, and the
daemon's watching thread calls :meth:`Reloader.reload` (see :mod:`actors.daemon`); a SIGHUP that
arrives during a reload is served by one more reload after it.

Hook points (the daemon's systemd notices, ``RELOADING=1`` and ``READY=1``):
:attr:`Reloader.before` is called when a reload starts, :attr:`Reloader.after` when it ends,
with True if it was applied.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from loguru import logger

from .config import ConfigError, InterfaceConfig, load_config
from .pipeline_file import StageEntry, load_pipeline
from .uapi import PeerChange, SetRequest
from .wireguard.device import PeerState

__all__ = ["ZERO_KEY", "Reloader", "sync_request"]

ZERO_KEY = bytes(32)  # a preshared key of zeros clears it (UAPI)


class _Controller(Protocol):
    def state(self) -> tuple[bytes | None, tuple[PeerState, ...]]: ...
    def set(self, request: SetRequest) -> None: ...


Swap = Callable[[Sequence[StageEntry], Sequence[StageEntry]], str]


class Reloader:
    """Serves SIGHUP for one daemon."""

    def __init__(
        self,
        *,
        swap: Swap,
        controller: _Controller,
        pipeline_path: str | None,
        config_path: str | None = None,
        current: InterfaceConfig | None = None,
        port: Callable[[], int] = lambda: 0,
    ) -> None:
        self.swap = swap
        self.controller = controller
        self.pipeline_path = pipeline_path
        self.config_path = config_path  # `up` mode only: the drop-in mode leaves peers to wg
        self.current = current
        self.port = port
        self.before: Callable[[], None] = lambda: None
        self.after: Callable[[bool], None] = lambda applied: None

    def reload(self) -> bool:
        """Validate, then apply; True if the new configuration is in place."""
        started = time.monotonic()
        self.before()
        applied = False
        try:
            applied = self._reload(started)
        except Exception as e:  # a swap step that failed half-way: say so, keep serving
            logger.opt(exception=e).debug("reload failed")
            logger.error("reload failed part-way: {!r}; run `wgactors status` to see the stages", e)
        finally:
            self.after(applied)
        return applied

    def _reload(self, started: float) -> bool:
        try:
            inbound, outbound = (
                load_pipeline(self.pipeline_path) if self.pipeline_path else ([], [])
            )
            config = load_config(self.config_path) if self.config_path else None
        except (ConfigError, ValueError) as e:  # PipelineFileError is a ValueError
            logger.error("reload refused, nothing changed: {}", e)
            return False
        stages = self.swap(inbound, outbound)
        peers = ""
        if config is not None:
            peers = self._sync(config)
        took = (time.monotonic() - started) * 1000
        logger.info("reloaded in {:.0f} ms: {}{}", took, stages, f"; {peers}" if peers else "")
        return True

    def _sync(self, config: InterfaceConfig) -> str:
        private_key, peers = self.controller.state()
        current = self.current
        request, summary = sync_request(config, private_key, peers)
        port = config.listen_port or None
        if port is not None and port != self.port():
            request = dataclasses.replace(request, listen_port=port)
            summary.append(f"listen port {port}")
        if current is not None and config.fwmark != current.fwmark:
            request = dataclasses.replace(request, fwmark=config.fwmark)
            summary.append(f"fwmark {config.fwmark:#x}")
        if request != SetRequest():
            self.controller.set(request)
        restart_only = []
        if current is not None:
            if set(config.addresses) != set(current.addresses):
                restart_only.append("Address")
            if config.mtu != current.mtu:
                restart_only.append("MTU")
            if _routes(config) != _routes(current):
                restart_only.append("routes of changed AllowedIPs")
        if restart_only:
            logger.warning(
                "reload: {} changed in {}; these apply only after a restart",
                ", ".join(restart_only),
                self.config_path,
            )
        self.current = config
        return "peers " + (", ".join(summary) if summary else "unchanged")


def sync_request(
    config: InterfaceConfig, private_key: bytes | None, peers: Sequence[PeerState]
) -> tuple[SetRequest, list[str]]:
    """What `wg syncconf` would send to bring the device to ``config``, touching only what
    differs (so unchanged peers keep their sessions); and a list of words saying what."""
    summary: list[str] = []
    changes: list[PeerChange] = []
    current = {p.public_key: p for p in peers}
    added = updated = 0
    for peer in config.peers:
        state = current.pop(peer.public_key, None)
        psk = peer.preshared_key or ZERO_KEY
        if state is None:
            added += 1
            changes.append(
                PeerChange(
                    peer.public_key,
                    preshared_key=psk,
                    endpoint=peer.endpoint,
                    persistent_keepalive=peer.persistent_keepalive,
                    replace_allowed_ips=True,
                    allowed_ips=peer.allowed_ips,
                )
            )
            continue
        fields: dict[str, Any] = {}
        if psk != (state.preshared_key or ZERO_KEY):
            fields["preshared_key"] = psk
        if peer.endpoint is not None and peer.endpoint != state.endpoint:
            fields["endpoint"] = peer.endpoint
        if peer.persistent_keepalive != state.persistent_keepalive:
            fields["persistent_keepalive"] = peer.persistent_keepalive
        if set(peer.allowed_ips) != set(state.allowed_ips):
            fields["replace_allowed_ips"] = True
            fields["allowed_ips"] = peer.allowed_ips
        if fields:
            updated += 1
            changes.append(PeerChange(peer.public_key, update_only=True, **fields))
    for gone in current:
        changes.append(PeerChange(gone, remove=True))
    if added:
        summary.append(f"+{added}")
    if current:
        summary.append(f"-{len(current)}")
    if updated:
        summary.append(f"~{updated}")
    new_key = config.private_key if config.private_key != private_key else None
    if new_key is not None:
        summary.append("new private key")
    return SetRequest(private_key=new_key, peers=tuple(changes)), summary


def _routes(config: InterfaceConfig) -> set[Any]:
    return {n for p in config.peers for n in p.allowed_ips if n.prefixlen > 0}

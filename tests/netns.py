"""The test suite's door to the lab (``actors.lab``): namespaces, wireguard-go, keys.

The machinery lives in ``actors.lab`` so that the demo, the benchmark and the soak test use
the same code; this module keeps the names tests import, and adds the pytest policy: a test
that cannot get root, namespaces or a tool skips, and under ``CI=true`` fails instead, because
CI must not go green by skipping.
"""

from __future__ import annotations

import os

import pytest

from actors.lab import (
    TERM_GRACE_S,
    WG_SOCKET_DIR,
    CommandError,
    Netns,
    PeerDump,
    WgPeer,
    WireguardGo,
    entered,
    format_endpoint,
    gen_keypair,
    gen_psk,
    missing_tools,
    parse_dump,
    socket_in,
    unavailable_reason,
    veth_pair,
)
from actors.lab.command import run as _run
from actors.lab.command import stop_process as _stop_process

__all__ = [
    "TERM_GRACE_S",
    "WG_SOCKET_DIR",
    "CommandError",
    "Netns",
    "PeerDump",
    "WgPeer",
    "WireguardGo",
    "_run",
    "_stop_process",
    "entered",
    "format_endpoint",
    "gen_keypair",
    "gen_psk",
    "parse_dump",
    "require_root_netns",
    "require_tools",
    "socket_in",
    "veth_pair",
]


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: refusing to skip)", pytrace=False)
    pytest.skip(reason)


def require_root_netns() -> None:
    """Skip the calling test unless root + `ip netns` + /dev/net/tun work (fail under CI)."""
    reason = unavailable_reason()
    if reason:
        _skip_or_fail(reason)


def require_tools(*names: str) -> None:
    """Skip (or fail under CI) unless every named executable is on PATH."""
    missing = missing_tools(*names)
    if missing:
        _skip_or_fail(f"missing tools: {', '.join(missing)} (scripts/test installs them)")

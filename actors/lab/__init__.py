"""The lab: development tooling that builds real WireGuard test beds on one machine.

Network namespaces joined by veth links, the reference wireguard-go, wgactors run through its
own launcher, and traffic (ping, iperf3) between them, with every wait bounded and every
clean-up path safe to run twice. The test suite (``tests/netns.py``, ``tests/wgactors_proc.py``),
``scripts/demo``, ``scripts/bench`` and ``scripts/soak`` all build on it. It needs root and the
command-line tools (``ip``, ``wg``, ``wireguard-go``, ``iperf3``, ``ping``, ``ss``); the
daemon never imports it.

One concept per module: ``command`` (running tools, errors), ``netns`` (namespaces, veth),
``keys``, ``wireguard_go``, ``wgactors`` (the daemon as a process), ``traffic`` (ping,
iperf3), ``procfs`` (what /proc says about a process), ``peering`` (wireguard-go as the
peer of a wgactors config), ``pair`` (the standard two-namespace lab of the demo and the
bench), ``table`` (plain-text tables), ``waiting`` (bounded waits for a condition), ``hub`` (a
many-peer table and a timed UAPI client), ``corebench`` (the protocol core's per-packet cost,
in process) and the ``bench`` package behind ``scripts/bench``.

The lab lives in the source tree but not in the wheel (``pyproject.toml`` leaves it out): the
scripts and tests use it from the checkout, and nothing else in ``actors`` imports it
(``tests/test_imports.py`` checks both).
"""

from __future__ import annotations

from .command import (
    TERM_GRACE_S,
    CommandError,
    CommandTimeout,
    LabError,
    LabTimeout,
    pinned,
    run,
    stop_process,
    tail,
    write_secret,
)
from .keys import gen_keypair, gen_psk, public_key
from .netns import Netns, entered, missing_tools, socket_in, unavailable_reason, veth_pair
from .pair import (
    MTU,
    PLAIN_A,
    PLAIN_B,
    TUNNEL_A,
    TUNNEL_B,
    UNDERLAY_A,
    UNDERLAY_B,
    WG_PORT,
    Keys,
    Lab,
    Tunnel,
    preflight,
)
from .peering import Peering, host_route, wireguard_go_peering
from .table import print_rows
from .traffic import (
    IPERF_PORT,
    IperfServer,
    PingResult,
    iperf3,
    ping,
    reachable,
    tcp_mbps,
    udp_received_pps,
)
from .waiting import wait_for, wait_until
from .wgactors import (
    DAEMON_ENV_VARS,
    LAUNCHER,
    ROOT,
    Wgactors,
    launcher_argv,
    plain_env,
    remove_stale_socket,
    write_conf,
)
from .wireguard_go import WG_SOCKET_DIR, PeerDump, WgPeer, WireguardGo, format_endpoint, parse_dump

__all__ = [
    "DAEMON_ENV_VARS",
    "IPERF_PORT",
    "LAUNCHER",
    "MTU",
    "PLAIN_A",
    "PLAIN_B",
    "ROOT",
    "TERM_GRACE_S",
    "TUNNEL_A",
    "TUNNEL_B",
    "UNDERLAY_A",
    "UNDERLAY_B",
    "WG_PORT",
    "WG_SOCKET_DIR",
    "CommandError",
    "CommandTimeout",
    "IperfServer",
    "Keys",
    "Lab",
    "LabError",
    "LabTimeout",
    "Netns",
    "PeerDump",
    "Peering",
    "PingResult",
    "Tunnel",
    "WgPeer",
    "Wgactors",
    "WireguardGo",
    "entered",
    "format_endpoint",
    "gen_keypair",
    "gen_psk",
    "host_route",
    "iperf3",
    "launcher_argv",
    "missing_tools",
    "parse_dump",
    "ping",
    "pinned",
    "plain_env",
    "preflight",
    "print_rows",
    "public_key",
    "reachable",
    "remove_stale_socket",
    "run",
    "socket_in",
    "stop_process",
    "tail",
    "tcp_mbps",
    "udp_received_pps",
    "unavailable_reason",
    "veth_pair",
    "wait_for",
    "wait_until",
    "wireguard_go_peering",
    "write_conf",
    "write_secret",
]

"""The standard lab: two namespaces, ``a`` and ``b``, joined by veth links, and tunnels
between them. The demo and the benchmark run on it; it is also what a person would build by
hand to try wgactors against wireguard-go.

Layout (every name carries the lab's prefix and a random tag, so runs never collide):

* ``PREFIX-TAG-a`` / ``PREFIX-TAG-b``: the namespaces;
* underlay veth ``10.88.0.1/24`` <-> ``10.88.0.2/24`` (the tunnels' UDP runs over it);
* plain veth ``10.89.0.1/24`` <-> ``10.89.0.2/24`` at MTU 1280, no tunnel: the ceiling;
* tunnel ``10.99.0.1`` (a) <-> ``10.99.0.2`` (b), MTU 1280: wireguard-go always in ``b``;
  wireguard-go or wgactors in ``a``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .keys import gen_keypair
from .netns import Netns, missing_tools, veth_pair
from .procfs import find_process, is_wgactors_python, runs_binary
from .wgactors import Wgactors, write_conf
from .wireguard_go import DEFAULT_BINARY, WgPeer, WireguardGo

UNDERLAY_A, UNDERLAY_B = "10.88.0.1", "10.88.0.2"
PLAIN_A, PLAIN_B = "10.89.0.1", "10.89.0.2"
TUNNEL_A, TUNNEL_B = "10.99.0.1", "10.99.0.2"
WG_PORT = 51820
MTU = 1280  # the project's packet size ceiling: tunnels and the plain link both use it
IFACE_GONE_TIMEOUT = 3.0  # seconds for a stopped end's interface to go before it is deleted
TOOLS = ("ip", "wg", "wireguard-go", "ping", "iperf3", "ss")


def preflight(script: str = "demo") -> str:
    """Why ``scripts/SCRIPT`` (demo, bench, soak) cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return f"needs root (network namespaces, TUN devices): run `sudo scripts/{script}`"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing"
    missing = missing_tools(*TOOLS)
    if missing:
        return f"missing tools: {', '.join(missing)} (scripts/setup installs them)"
    return ""


@dataclass(frozen=True)
class Keys:
    """The two ends' key pairs, made once per lab and reused by every tunnel."""

    a: tuple[str, str]
    b: tuple[str, str]

    @classmethod
    def fresh(cls) -> Keys:
        return cls(gen_keypair(), gen_keypair())


@dataclass
class Tunnel:
    """One tunnel between the namespaces: ``a_end`` is the side under test."""

    a_end: WireguardGo | Wgactors
    b_end: WireguardGo
    started: list[WireguardGo | Wgactors] = field(default_factory=list)

    @property
    def is_wgactors(self) -> bool:
        return isinstance(self.a_end, Wgactors)

    def a_pid(self) -> int | None:
        """The a end's real process (below ``ip netns exec``, the launcher, ``taskset``)."""
        proc = self.a_end.proc
        if proc is None:
            return None
        if isinstance(self.a_end, Wgactors):
            return find_process(proc.pid, is_wgactors_python)
        return find_process(proc.pid, runs_binary(self.a_end.binary))

    def a_alive(self) -> bool:
        proc = self.a_end.proc
        return proc is not None and proc.poll() is None

    def logs(self) -> dict[str, str]:
        """Each end's log, by name, for a failure report."""
        out = {}
        for end in self.started:
            text = end.log() if isinstance(end, Wgactors) else end.log_text()
            out[f"{end.iface}.log"] = text
        return out


class Lab:
    """The two namespaces and what runs in them; :meth:`close` removes all of it.

    ``prefix`` (at most 4 characters) names everything: the demo uses ``wgd``, the bench
    ``wgb``. ``wireguard_go`` is the program every wireguard-go end runs (the peer in b, and
    the reference in a). Closing is bounded in time and never raises.
    """

    def __init__(self, prefix: str = "wgd", wireguard_go: str = DEFAULT_BINARY) -> None:
        self.prefix = prefix
        self.wireguard_go = wireguard_go
        self.tag = secrets.token_hex(2)
        self.a = Netns(f"{prefix}-{self.tag}-a")
        self.b = Netns(f"{prefix}-{self.tag}-b")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-{self.tag}-"))
        self.tunnels: list[Tunnel] = []

    @property
    def ns_a(self) -> str:
        return self.a.name

    @property
    def ns_b(self) -> str:
        return self.b.name

    def create(self) -> Lab:
        self.a.create()
        self.b.create()
        base = f"{self.prefix}{self.tag}"
        veth_pair(self.a, self.b, UNDERLAY_A, UNDERLAY_B, names=(f"{base}va", f"{base}vb"))
        veth_pair(self.a, self.b, PLAIN_A, PLAIN_B, names=(f"{base}pa", f"{base}pb"), mtu=MTU)
        return self

    def __enter__(self) -> Lab:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for tunnel in list(self.tunnels):
            with contextlib.suppress(Exception):
                self.stop_tunnel(tunnel)
        self.a.close()
        self.b.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- tunnels

    def tunnel(
        self,
        serial: int,
        keys: Keys,
        wgactors_args: Sequence[str] | None,
        *,
        verbose: bool = True,
        a_cpus: str | None = None,
        b_cpus: str | None = None,
        a_env: Mapping[str, str] | None = None,
        a_checkout: Path | None = None,
    ) -> Tunnel:
        """Start tunnel number ``serial``: wireguard-go in b, and in a wireguard-go
        (``wgactors_args`` None) or wgactors with those arguments and ``a_env`` added to its
        environment, run from ``a_checkout`` (default this checkout). ``a_cpus``/``b_cpus`` pin
        each end to a CPU list (taskset). Interfaces are ``PREFIXTAG<serial>a/b``."""
        (priv_a, pub_a), (priv_b, pub_b) = keys.a, keys.b
        iface_a = f"{self.prefix}{self.tag}{serial}a"
        iface_b = f"{self.prefix}{self.tag}{serial}b"
        b_end = self._wireguard_go(
            self.b, priv_b, TUNNEL_B, pub_a, TUNNEL_A, UNDERLAY_A, iface_b, b_cpus
        )
        tunnel = Tunnel(a_end=b_end, b_end=b_end)  # a_end is replaced below
        self.tunnels.append(tunnel)
        b_end.start()
        tunnel.started.append(b_end)
        a_end: WireguardGo | Wgactors
        if wgactors_args is None:
            a_end = self._wireguard_go(
                self.a, priv_a, TUNNEL_A, pub_b, TUNNEL_B, UNDERLAY_B, iface_a, a_cpus
            )
        else:
            conf = write_conf(
                self.tmp,
                iface_a,
                {"PrivateKey": priv_a, "ListenPort": WG_PORT, "Address": f"{TUNNEL_A}/24"},
                [
                    {
                        "PublicKey": pub_b,
                        "AllowedIPs": f"{TUNNEL_B}/32",
                        "Endpoint": f"{UNDERLAY_B}:{WG_PORT}",
                    }
                ],
            )
            a_end = Wgactors(
                self.a,
                conf,
                *wgactors_args,
                verbose=verbose,
                log_dir=self.tmp,
                plain=True,
                cpus=a_cpus,
                env=a_env,
                checkout=a_checkout,
            )
        tunnel.a_end = a_end
        tunnel.started.append(a_end)
        a_end.start()
        return tunnel

    def _wireguard_go(
        self,
        ns: Netns,
        private: str,
        tunnel: str,
        peer_public: str,
        peer_tunnel: str,
        peer_underlay: str,
        iface: str,
        cpus: str | None,
    ) -> WireguardGo:
        """One end of a tunnel as wireguard-go (b always; a too when it is not wgactors)."""
        return WireguardGo(
            ns,
            private,
            listen_port=WG_PORT,
            addresses=[f"{tunnel}/24"],
            peers=[WgPeer(peer_public, [f"{peer_tunnel}/32"], endpoint=(peer_underlay, WG_PORT))],
            iface=iface,
            mtu=MTU,
            log_level="verbose",
            cpus=cpus,
            binary=self.wireguard_go,
        )

    def stop_tunnel(self, tunnel: Tunnel) -> int | None:
        """Stop both ends (a first), making sure their interfaces are gone; the exit status of
        wgactors (None when the a end is wireguard-go)."""
        status = None
        for end in reversed(tunnel.started):
            if isinstance(end, Wgactors):
                status = end.stop()
            else:
                end.stop()
            end.ns.wait_link_gone(end.iface, IFACE_GONE_TIMEOUT)
        tunnel.started.clear()
        with contextlib.suppress(ValueError):
            self.tunnels.remove(tunnel)
        return status

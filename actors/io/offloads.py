"""Which kernel offloads to ask for, and what became of each.

Five offloads, each measured on its own (README, "Kernel offloads"; only udp_gso paid, so only
it is on by default):

- ``tun_tso``: the TUN device hands us TCP segments of up to 64 KB and leaves checksums to us
  (IFF_VNET_HDR, TUNSETOFFLOAD with TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6); the reader splits them.
- ``tun_uso``: the same for UDP (TUN_F_USO4 | TUN_F_USO6, Linux 6.2 and later).
- ``tun_gro``: the writer joins consecutive segments of one TCP flow into one GSO frame.
- ``udp_gso``: the socket sends a run of equal-size datagrams with one UDP_SEGMENT send.
- ``udp_gro``: the socket receives runs of datagrams as one buffer (UDP_GRO), split by us.

``WGACTORS_OFFLOADS`` picks them (a comma-separated list; ``none`` for none; unset: the
default). ``WGACTORS_REFUSE_OFFLOADS`` is a test-only switch that makes the kernel's answer
"refused" for the named ones, so the fallback path runs against the real daemon. An offload
that is refused (``tun_vnet_hdr`` refuses the header that all TUN offloads need) is logged
once and shown as ``refused`` in ``wgactors status``.
"""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger

from .. import settings

__all__ = [
    "ALL_OFFLOADS",
    "DEFAULT_OFFLOADS",
    "OFFLOADS_ENV",
    "REFUSABLE",
    "REFUSE_ENV",
    "OffloadPlan",
    "plan_from_env",
]

OFFLOADS_ENV = settings.OFFLOADS.name
REFUSE_ENV = settings.REFUSE_OFFLOADS.name
ALL_OFFLOADS = ("tun_tso", "tun_uso", "tun_gro", "udp_gso", "udp_gro")
# On by default: only what paid in the measurements (README, "Kernel offloads"). The others
# work and are tested; on this project's 2-core lab their Python checksums cost more than the
# kernel work they save (tun_*), or they found nothing to do (udp_gro on veth).
DEFAULT_OFFLOADS: tuple[str, ...] = ("udp_gso",)


REFUSABLE = (*ALL_OFFLOADS, "tun_vnet_hdr")  # the header itself: every TUN offload falls


def _names(text: str, env: str, known: tuple[str, ...] = ALL_OFFLOADS) -> frozenset[str]:
    names = frozenset(filter(None, (part.strip() for part in text.split(","))))
    if names == {"none"}:
        return frozenset()
    unknown = names - set(known)
    if unknown:
        raise ValueError(f"{env}: unknown offload {sorted(unknown)[0]!r} (known: {known})")
    return names


@dataclass(frozen=True, slots=True)
class OffloadPlan:
    """What to ask the kernel for (``wanted``), and what to pretend it refuses (tests)."""

    wanted: frozenset[str] = frozenset(DEFAULT_OFFLOADS)
    refused: frozenset[str] = frozenset()

    def asks(self, name: str) -> bool:
        return name in self.wanted

    def refuses(self, name: str) -> bool:
        return name in self.refused


def plan_from_env() -> OffloadPlan:
    """The plan from the environment (read once at start-up; a bad list is a start-up error)."""
    wanted = settings.get(settings.OFFLOADS)
    return OffloadPlan(
        wanted=frozenset(DEFAULT_OFFLOADS) if wanted is None else _names(wanted, OFFLOADS_ENV),
        refused=_names(settings.get(settings.REFUSE_OFFLOADS) or "", REFUSE_ENV, REFUSABLE),
    )


def report_refused(owner: str, name: str, why: str) -> None:
    """The one log line for an offload the kernel would not give us."""
    logger.info("{}: offload {} not available ({}); carrying on without it", owner, name, why)

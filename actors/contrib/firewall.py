"""A stateless packet filter: ordered allow/deny/reject rules, the first match wins.

Why a stage and not the host's firewall: on the inbound path it filters what peers send before
the host ever sees it, and it is configured with the tunnel, in the pipeline file::

    [[inbound]]
    use = "actors.contrib.firewall:Firewall"
    options = { default = "deny", rules = [
        { name = "ssh", action = "allow", proto = "tcp", src = "10.8.0.0/29", dport = 22 },
        { action = "allow", proto = "icmp" },
        { action = "allow", proto = "udp", dport = [53, "5000-5100"] },
    ] }

A rule's keys are ``action`` ("allow", "deny" or "reject", required), ``proto`` ("tcp",
"udp", "icmp", "icmpv6", "any" or a protocol number; default "any"), ``src`` and ``dst``
(networks in CIDR notation, IPv4 or IPv6; default any address of either family), ``sport``
and ``dport`` (a port, a "lo-hi" range, or a list of those; a rule with ports only matches
packets that carry ports) and ``name`` (shown in ``wgactors status``). Packets no rule matches
get the ``default`` policy.

``deny`` drops silently. ``reject`` drops and answers the sender at once, as a host with nothing
listening would: a TCP reset for TCP, ICMP port unreachable (ICMPv6 destination unreachable,
code 4) for anything else, so that a connection attempt fails with "connection refused" instead
of timing out. The answer goes back the way the packet came (:meth:`actors.Stage.reply`): to the
peer from the inbound path, to the local host from the outbound path. No answer is sent about a
reset, an ICMP error, a non-first fragment, or a multicast or broadcast packet.

It is stateless on purpose: there is no connection tracking, so allowing replies means allowing
them by rule. Rules are checked once, when the stage is built, and compiled into integer
comparisons on the raw address bytes, which keeps the per-packet cost to a few operations per
rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import build
from ..packet import PROTO_TCP, Packet
from ..stage import Stage

__all__ = ["MAX_PORT_SPECS", "MAX_RULES", "MAX_RULE_NAME", "PROTOCOLS", "Firewall"]

MAX_RULES = 1024
"""Rules per firewall: every packet may be compared against all of them."""
MAX_PORT_SPECS = 64
"""Ports and ranges in one ``sport`` or ``dport`` list."""
MAX_RULE_NAME = 64
"""Characters in a rule's ``name``."""
MAX_PORT = 65535
MAX_PROTOCOL = 255

PROTOCOLS: Mapping[str, int | None] = {"any": None, "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
"""Protocol names a rule may use, and their numbers (None: any protocol)."""
# Transports whose header carries ports (TCP, UDP, SCTP, UDP-Lite), as in Packet.src_port.
_PORT_PROTOCOLS = frozenset({6, 17, 132, 136})
_ACTIONS = ("allow", "deny", "reject")
_ALLOW, _DENY, _REJECT = _ACTIONS
_RULE_KEYS = ("action", "proto", "src", "dst", "sport", "dport", "name")

PortRanges = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class _Net:
    """A network as integers: an address matches when ``address & mask == network``."""

    version: int
    network: int
    mask: int


@dataclass(slots=True)
class _Rule:
    label: str | int  # the name, or the index when the rule has none
    action: str
    proto: int | None
    version: int | None  # 4 or 6 when src or dst fixes the family
    src: _Net | None
    dst: _Net | None
    sport: PortRanges | None
    dport: PortRanges | None
    matches: int = 0


class Firewall(Stage):
    """Passes, drops or rejects each packet by the first rule it matches, else by the default.

    Options: ``default`` ("allow", "deny" or "reject"; default "allow") and ``rules``, a list of
    tables (see the module documentation). Counts matches per rule, for the default policy, and
    the answers sent for ``reject``.
    """

    def __init__(self, default: str = "allow", rules: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__()
        if default not in _ACTIONS:
            raise ValueError(f'default must be "allow", "deny" or "reject", not {default!r}')
        if isinstance(rules, str | bytes) or not isinstance(rules, Sequence):
            raise TypeError(f"rules must be a list of tables, not {type(rules).__name__}")
        if len(rules) > MAX_RULES:
            raise ValueError(f"at most {MAX_RULES} rules, not {len(rules)}")
        self.default_action = default
        self.default_matches = 0
        self.rejected = 0
        self.rules: list[_Rule] = [_compile(i, rule) for i, rule in enumerate(rules)]

    def process(self, packet: Packet) -> Packet | None:
        data = packet.data
        version = data[0] >> 4
        proto = packet.protocol
        src: int | None = None
        dst: int | None = None
        ports: tuple[int | None, int | None] | None = None
        for rule in self.rules:
            if rule.proto is not None and rule.proto != proto:
                continue
            if rule.version is not None and rule.version != version:
                continue
            net = rule.src
            if net is not None:
                if src is None:
                    src = int.from_bytes(packet.src_bytes, "big")
                if src & net.mask != net.network:
                    continue
            net = rule.dst
            if net is not None:
                if dst is None:
                    dst = int.from_bytes(packet.dst_bytes, "big")
                if dst & net.mask != net.network:
                    continue
            if rule.sport is not None or rule.dport is not None:
                if ports is None:
                    ports = (packet.src_port, packet.dst_port)
                if not _ports_match(rule.sport, ports[0]) or not _ports_match(rule.dport, ports[1]):
                    continue
            rule.matches += 1
            return self._apply(rule.action, packet)
        self.default_matches += 1
        return self._apply(self.default_action, packet)

    def _apply(self, action: str, packet: Packet) -> Packet | None:
        if action == _ALLOW:
            return packet
        if action == _REJECT:
            if packet.protocol == PROTO_TCP:
                answer = build.tcp_reset(packet)
            else:
                answer = build.port_unreachable(packet)
            if answer is not None:
                self.reply(answer)
                self.rejected += 1
        return None

    def stats_extra(self) -> dict[str, Any]:
        return {
            "firewall": [
                {
                    "rule": rule.label,
                    "action": rule.action,
                    "matches": rule.matches,
                }
                for rule in self.rules
            ],
            "firewall_default": self.default_matches,
            "firewall_rejected": self.rejected,
        }


def _ports_match(ranges: PortRanges | None, port: int | None) -> bool:
    if ranges is None:
        return True
    if port is None:
        return False
    return any(lo <= port <= hi for lo, hi in ranges)


def _compile(index: int, rule: Any) -> _Rule:
    """Check one rule table and turn it into a :class:`_Rule`; errors name ``rules[index]``."""
    where = f"rules[{index}]"
    if not isinstance(rule, Mapping):
        raise TypeError(f"{where} must be a table, not {type(rule).__name__}")
    for key in rule:
        if key not in _RULE_KEYS:
            raise ValueError(f"{where}: unknown key {key!r} (the keys are {', '.join(_RULE_KEYS)})")
    if "action" not in rule:
        raise ValueError(f'{where}: `action` is required ("allow", "deny" or "reject")')
    action = rule["action"]
    if action not in _ACTIONS:
        raise ValueError(f'{where}: `action` must be "allow", "deny" or "reject", not {action!r}')
    label: str | int = index
    if "name" in rule:
        name = rule["name"]
        if not isinstance(name, str):
            raise TypeError(f"{where}: `name` must be a string, not {type(name).__name__}")
        if not name or len(name) > MAX_RULE_NAME:
            raise ValueError(f"{where}: `name` must be 1..{MAX_RULE_NAME} characters")
        label = name
    proto = _protocol(where, rule.get("proto", "any"))
    src = _network(where, "src", rule.get("src"))
    dst = _network(where, "dst", rule.get("dst"))
    if src is not None and dst is not None and src.version != dst.version:
        raise ValueError(f"{where}: `src` is IPv{src.version} but `dst` is IPv{dst.version}")
    version = src.version if src is not None else dst.version if dst is not None else None
    sport = _ports(where, "sport", rule.get("sport"))
    dport = _ports(where, "dport", rule.get("dport"))
    if (sport is not None or dport is not None) and (
        proto is not None and proto not in _PORT_PROTOCOLS
    ):
        raise ValueError(
            f"{where}: `sport`/`dport` need a protocol with ports (tcp, udp, sctp, udplite "
            f"or any), not protocol {proto}"
        )
    return _Rule(label, action, proto, version, src, dst, sport, dport)


def _protocol(where: str, value: Any) -> int | None:
    if isinstance(value, str):
        if value not in PROTOCOLS:
            raise ValueError(
                f"{where}: unknown `proto` {value!r} (use {', '.join(PROTOCOLS)} or a number)"
            )
        return PROTOCOLS[value]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{where}: `proto` must be a name or a number, not {type(value).__name__}")
    if not 0 <= value <= MAX_PROTOCOL:
        raise ValueError(f"{where}: `proto` number must be 0..{MAX_PROTOCOL}, not {value}")
    return value


def _network(where: str, key: str, value: Any) -> _Net | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"{where}: `{key}` must be a CIDR string such as 10.0.0.0/8, not {type(value).__name__}"
        )
    try:
        net = ipaddress.ip_network(value.strip())
    except ValueError as e:
        raise ValueError(f"{where}: `{key}` is not a network: {e}") from None
    return _Net(net.version, int(net.network_address), int(net.netmask))


def _ports(where: str, key: str, value: Any) -> PortRanges | None:
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError(f"{where}: `{key}` must not be an empty list")
    if len(items) > MAX_PORT_SPECS:
        raise ValueError(f"{where}: `{key}` has more than {MAX_PORT_SPECS} entries")
    return tuple(_port_range(where, key, item) for item in items)


def _port_range(where: str, key: str, item: Any) -> tuple[int, int]:
    if isinstance(item, int) and not isinstance(item, bool):
        if not 0 <= item <= MAX_PORT:
            raise ValueError(f"{where}: `{key}` port must be 0..{MAX_PORT}, not {item}")
        return item, item
    if not isinstance(item, str):
        raise TypeError(
            f'{where}: `{key}` takes ports (80) or ranges ("1024-2047"), not {type(item).__name__}'
        )
    lo_text, dash, hi_text = item.partition("-")
    lo_text, hi_text = lo_text.strip(), hi_text.strip()
    if not dash or not lo_text.isdecimal() or not hi_text.isdecimal():
        raise ValueError(f'{where}: `{key}` range must look like "1024-2047", not {item!r}')
    lo, hi = int(lo_text), int(hi_text)
    if not 0 <= lo <= hi <= MAX_PORT:
        raise ValueError(
            f"{where}: `{key}` range {item!r} must have 0 <= low <= high <= {MAX_PORT}"
        )
    return lo, hi

"""The wg-quick configuration file (``/etc/wireguard/wg0.conf``), parsed strictly.

The format is the one wg-quick(8) reads: an ``[Interface]`` section with the keys of wg(8)
(``PrivateKey``, ``ListenPort``, ``FwMark``) plus wg-quick's own (``Address``, ``MTU``, ``DNS``,
``Table``, the hooks, ``SaveConfig``), then ``[Peer]`` sections. Users copy these files from
wg-quick setups, so we accept the same spelling (keys and section names are case-insensitive,
``#`` starts a comment anywhere) — but we are stricter than wg-quick about everything else: an
unknown key, a repeated single-valued key or a port given as a service name is an error rather
than something silently guessed at, because a tunnel that comes up with a half-understood
configuration is worse than one that refuses to start. The MTU is the exception: wg-quick's usual
1420 is above the 1280 bytes wgactors carries in a packet, and a file copied from a wg-quick
setup must work as it is, so a larger MTU is lowered to 1280 with one warning.

Every problem is reported as one :class:`ConfigError` naming the file, the line and the key, so
the launcher can print it as a single line without a traceback. Error messages and warnings
never quote a private or preshared key: values are only echoed back once they are known to be
harmless (numbers, addresses, host names), and no error is chained to a lower-level exception
whose message might quote the input.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from typing import NoReturn

from .resolver import Resolver, default_resolve
from .wireguard.allowedips import Network, parse_prefix
from .wireguard.constants import MAX_PEERS
from .wireguard.crypto import public_key
from .wireguard.device import DeviceError, PeerConfig
from .wireguard.keys import KeyFormatError, decode_key

__all__ = [
    "DEFAULT_NAME",
    "MAX_CONFIG_BYTES",
    "MAX_LINK_MTU",
    "MAX_MTU",
    "MIN_MTU",
    "ConfigError",
    "InterfaceConfig",
    "ResolveError",
    "check_permissions",
    "interface_name_from_path",
    "load_config",
    "parse_config",
]

#: The largest MTU we accept: every packet crossing the pipeline is at most 1280 bytes.
MAX_MTU = 1280
#: The largest MTU a file may give (the largest IP packet); above MAX_MTU it is lowered to it.
MAX_LINK_MTU = 65535
#: The smallest MTU we accept: the minimum IPv4 datagram size every host must handle.
MIN_MTU = 576
#: A real configuration is a few kilobytes; anything past this is a mistake (or /dev/zero).
MAX_CONFIG_BYTES = 1 << 20
#: The interface name given to text parsed without a ``NAME.conf`` path (tests, stdin).
DEFAULT_NAME = "wg0"

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# wg-quick's rule for interface names (and the kernel's IFNAMSIZ - 1 = 15 characters).
_NAME_RE = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")
_CONF_SUFFIX = ".conf"
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)
_HEX_RE = re.compile(r"0x[0-9a-fA-F]+", re.ASCII)
# What may be written as a key name in an error: a short word of letters, as every real key is.
# Anything longer or stranger might be a key pasted in the wrong place, so it is not echoed.
_SHOWABLE_KEY_RE = re.compile(r"[A-Za-z]{1,24}", re.ASCII)
# What may be echoed as a value: printable ASCII without base64's '+' and '=' (a base64 key
# always ends in '='), and either short or containing '.' or ':' (which base64 never does).
_SHOWABLE_VALUE_RE = re.compile(r"[A-Za-z0-9.:/_%\[\]-]{1,64}", re.ASCII)
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
_PREFIX_RE = re.compile(r"([^/]+)(?:/([0-9]{1,3}))?", re.ASCII)

_INTERFACE_KEYS = (
    "PrivateKey",
    "ListenPort",
    "FwMark",
    "Address",
    "MTU",
    "DNS",
    "Table",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
    "SaveConfig",
)
_PEER_KEYS = ("PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive")
_HOOK_KEYS = frozenset({"PreUp", "PostUp", "PreDown", "PostDown"})
_REPEATABLE = frozenset({"Address", "DNS", "AllowedIPs"}) | _HOOK_KEYS
_CANONICAL = {
    "interface": {k.lower(): k for k in _INTERFACE_KEYS},
    "peer": {k.lower(): k for k in _PEER_KEYS},
}
_SECTION_TITLE = {"interface": "[Interface]", "peer": "[Peer]"}
_IGNORED = {
    "DNS": "DNS is ignored by wgactors (set it yourself)",
    "Table": "Table is ignored by wgactors (it does not manage routing tables)",
    "SaveConfig": "SaveConfig is ignored by wgactors (it never writes the file back)",
    **{hook: f"{hook} is ignored by wgactors (it runs no hook commands)" for hook in _HOOK_KEYS},
}


class ConfigError(ValueError):
    """One line for the user: names the file, the line number and the key.

    ``line`` and ``key`` are None when the problem is not tied to one (an unreadable file, a
    missing ``[Interface]``). The message never contains a private or preshared key.
    """

    path: str
    line: int | None
    key: str | None
    message: str

    def __init__(
        self,
        message: str,
        path: str = "<string>",
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.key = key
        self.message = message

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.key is None:
            return f"{where}: {self.message}"
        return f"{where}: {self.key}: {self.message}"

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, int | None, str | None]]:
        # Keep path/line/key across pickling (multiprocessing, actor mailboxes).
        return (type(self), (self.message, self.path, self.line, self.key))


class ResolveError(ConfigError):
    """An endpoint name did not resolve (after retries): the file may well be right, so the
    launcher treats this as a set-up failure, not as a bad file."""


@dataclass(frozen=True, slots=True)
class InterfaceConfig:
    """One parsed wg-quick file: our interface and its peers, ready for the device."""

    name: str
    # Kept out of repr so that logging the config never prints the private key.
    private_key: bytes = field(repr=False)
    listen_port: int | None = None  # None (or 0 in the file): a random port
    addresses: tuple[Address, ...] = ()
    mtu: int = MAX_MTU
    fwmark: int = 0  # 0: off
    dns: tuple[str, ...] = ()  # parsed for wg-quick compatibility, never applied
    peers: tuple[PeerConfig, ...] = ()
    warnings: tuple[str, ...] = ()  # "wg0.conf:5: DNS is ignored by wgactors (...)"

    @property
    def public_key(self) -> bytes:
        """Our public key, as `wg pubkey` would print it from the private key."""
        return public_key(self.private_key)


class _Invalid(Exception):
    """A value that does not parse; becomes a ConfigError carrying the file, line and key."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _shown(text: str) -> str:
    """``": 'text'"`` when echoing the value is harmless, else ``""``.

    A 44-character base64 key ends in '=' and has no '.' or ':', so it never qualifies, and
    neither does a long run of base64 letters (a key missing its padding).
    """
    if _SHOWABLE_VALUE_RE.fullmatch(text) and (len(text) < 20 or "." in text or ":" in text):
        return f": '{text}'"
    return ""


def _uint(text: str, low: int, high: int, expected: str | None = None, label: str = "") -> int:
    """A decimal integer in low..high, as wg(8) parses numbers (no signs, spaces or '_').

    ``expected`` replaces "must be a whole number low..high" when the text is not a number.
    The digit count is capped so a pasted megabyte of digits never reaches int().
    """
    if not _DIGITS_RE.fullmatch(text) or len(text) > 10:
        raise _Invalid(expected or f"must be a whole number {low}..{high}")
    number = int(text)
    if not low <= number <= high:
        raise _Invalid(f"{label}{number} is out of range {low}..{high}")
    return number


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_hostname(text: str) -> bool:
    """A DNS host name (RFC 1123): dot-separated labels, the last one not all digits.

    The all-digits rule keeps shorthand like ``10.1`` or ``167772161`` from reaching
    getaddrinfo, which would read it as an IPv4 address in inet_aton's surprising ways.
    """
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(_LABEL_RE.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def _parse_private_key(value: str) -> bytes:
    try:
        key = decode_key(value)
    except KeyFormatError as exc:
        raise _Invalid(str(exc)) from None  # KeyFormatError never quotes the key
    if not any(key):
        raise _Invalid("an all-zero key is not a key")
    return key


def _parse_address(item: str) -> Address:
    """``addr/prefix`` or a bare address (a /32 or /128), as wg-quick hands to `ip address`."""
    match = _PREFIX_RE.fullmatch(item)
    ip = _ip(match.group(1)) if match else None
    if match is None or ip is None or (ip.version == 6 and ip.scope_id is not None):
        raise _Invalid(f"not an IP address with an optional /prefix{_shown(item)}")
    length = ip.max_prefixlen if match.group(2) is None else int(match.group(2))
    if length > ip.max_prefixlen:
        raise _Invalid(f"prefix /{length} is longer than {ip.max_prefixlen} bits")
    return ipaddress.ip_interface(f"{ip}/{length}")


def _parse_allowed_ip(item: str) -> Network:
    """A prefix for the peer's routing table; host bits are masked off as `wg` does."""
    match = _PREFIX_RE.fullmatch(item)
    ip = _ip(match.group(1)) if match else None
    if match is None or ip is None or (ip.version == 6 and ip.scope_id is not None):
        raise _Invalid(f"not an IP prefix like 10.0.0.0/24 or fd00::/64{_shown(item)}")
    if match.group(2) is not None and int(match.group(2)) > ip.max_prefixlen:
        raise _Invalid(f"prefix /{match.group(2)} is longer than {ip.max_prefixlen} bits")
    return parse_prefix(item)


def _parse_dns(item: str) -> str:
    """A DNS server address or, as wg-quick allows, a search domain."""
    ip = _ip(item)
    if ip is not None:
        return str(ip)
    if _is_hostname(item):
        return item
    raise _Invalid(f"not an IP address or a domain name{_shown(item)}")


def _split_list(value: str, what: str) -> list[str]:
    """A comma-separated list; an empty item (``a,,b`` or a trailing comma) is a typo."""
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise _Invalid(f"empty item in the comma-separated list of {what}")
    return items


@dataclass(slots=True)
class _EndpointSpec:
    host: str
    port: int
    literal: bool  # an IP address, no lookup needed
    line: int


def _parse_endpoint(value: str, line: int) -> _EndpointSpec:
    """``1.2.3.4:51820``, ``[fd00::1]:51820`` or ``host.example:51820``, as wg(8) writes them."""
    if value.startswith("["):
        close = value.find("]")
        if close < 0 or value[close + 1 : close + 2] != ":":
            raise _Invalid("an IPv6 endpoint is written [address]:port")
        host, port_text = value[1:close], value[close + 2 :]
        ip = _ip(host)
        if ip is None or ip.version != 6:
            raise _Invalid(f"not an IPv6 address between the brackets{_shown(host)}")
        return _EndpointSpec(str(ip), _parse_port(port_text), True, line)
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise _Invalid("an endpoint is host:port, e.g. 192.0.2.1:51820")
    if ":" in host:
        raise _Invalid("an IPv6 endpoint needs brackets: [address]:port")
    port = _parse_port(port_text)
    ip = _ip(host)
    if ip is not None:
        return _EndpointSpec(str(ip), port, True, line)
    if not _is_hostname(host):
        raise _Invalid(f"not an IPv4 address or a host name{_shown(host)}")
    return _EndpointSpec(host, port, False, line)


def _parse_port(text: str) -> int:
    return _uint(text, 1, 65535, "the port must be a whole number 1..65535", "port ")


def _parse_keepalive(value: str) -> int:
    """wg(8)'s ``off`` (any case) or a number of seconds."""
    if value.lower() == "off":
        return 0
    return _uint(value, 0, 65535, "must be a number of seconds 0..65535, or off")


def _parse_fwmark(value: str) -> int:
    """``off``, decimal, or ``0x`` hex, 32 bits: exactly what wg(8)'s parse_fwmark accepts."""
    if value.lower() == "off":
        return 0
    if _HEX_RE.fullmatch(value) and len(value) <= 10:
        return int(value, 16)
    return _uint(value, 0, 0xFFFFFFFF, "must be a 32-bit number, 0x hex, or off")


def _parse_mtu(value: str) -> int:
    """The MTU as written; :meth:`_Parser.finish` lowers one above :data:`MAX_MTU`."""
    mtu = _uint(value, 0, 1 << 34, f"must be a whole number {MIN_MTU}..{MAX_LINK_MTU}")
    if mtu > MAX_LINK_MTU:
        raise _Invalid(f"MTU {mtu} is above {MAX_LINK_MTU}, the largest IP packet")
    if mtu < MIN_MTU:
        raise _Invalid(f"MTU {mtu} is below the {MIN_MTU} minimum")
    return mtu


@dataclass(slots=True)
class _InterfaceDraft:
    line: int
    private_key: bytes | None = None
    listen_port: int | None = None
    addresses: list[Address] = field(default_factory=list)
    mtu: int = MAX_MTU
    mtu_line: int = 0
    fwmark: int = 0
    dns: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _PeerDraft:
    line: int
    public_key: bytes | None = None
    public_key_line: int = 0
    preshared_key: bytes | None = None
    allowed_ips: list[Network] = field(default_factory=list)
    endpoint: _EndpointSpec | None = None
    persistent_keepalive: int = 0


class _Parser:
    """One pass over the lines, then the checks that need the whole file, then DNS lookups.

    Host names are resolved last, so a file with a typo further down fails fast instead of
    waiting on the network first.
    """

    def __init__(self, path: str, resolve: Resolver) -> None:
        self.path = path
        self.resolve = resolve
        self.interface: _InterfaceDraft | None = None
        self.peers: list[_PeerDraft] = []
        self.section: str | None = None
        self.seen: dict[str, int] = {}  # single-valued key -> line, for the current section
        self.warnings: list[str] = []

    def error(self, message: str, line: int | None = None, key: str | None = None) -> ConfigError:
        return ConfigError(message, self.path, line, key)

    def parse(self, text: str) -> tuple[_InterfaceDraft, list[_PeerDraft]]:
        text = text.removeprefix("\ufeff")
        # Split on '\n' only (str.splitlines also breaks on \x0c, \x1c, \u2028...), so our line
        # numbers are the ones an editor shows; a CRLF file loses its '\r' with the comment.
        for number, raw in enumerate(text.split("\n"), start=1):
            self.line(raw.partition("#")[0].strip(), number)
        if self.interface is None:
            raise self.error("no [Interface] section")
        if self.interface.private_key is None:
            raise self.error("[Interface] has no PrivateKey", self.interface.line, "PrivateKey")
        return self.interface, self.peers

    def line(self, stripped: str, number: int) -> None:
        if not stripped:
            return
        if stripped.startswith("["):
            self.header(stripped, number)
            return
        name, sep, value = stripped.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            raise self.error("expected 'Key = Value' or a [Section] header", number)
        if self.section is None:
            raise self.error(
                "'Key = Value' outside a section: the file starts with [Interface]",
                number,
                _showable_key(name),
            )
        key = _CANONICAL[self.section].get(name.lower())
        if key is None:
            self.unknown_key(name, number)
        if key not in _REPEATABLE:
            first = self.seen.get(key)
            if first is not None:
                raise self.error(f"given twice in one section (first on line {first})", number, key)
            self.seen[key] = number
        problem: str | None = None
        try:
            self.apply(key, value, number)
        except _Invalid as exc:
            problem = exc.message
        if problem is not None:
            # Raised outside the except block so no lower-level exception (whose message might
            # quote the value) is chained to it.
            raise self.error(problem, number, key)

    def header(self, stripped: str, number: int) -> None:
        if not stripped.endswith("]"):
            raise self.error("a section header is [Interface] or [Peer]", number)
        title = stripped[1:-1].lower()
        if title not in _SECTION_TITLE:
            raise self.error("unknown section: only [Interface] and [Peer] exist", number)
        self.close_peer()
        if title == "interface":
            if self.interface is not None:
                raise self.error(
                    f"a second [Interface] section (the first is on line {self.interface.line})",
                    number,
                )
            self.interface = _InterfaceDraft(number)
        else:
            self.peers.append(_PeerDraft(number))
        self.section = title
        self.seen = {}

    def close_peer(self) -> None:
        """Check the peer section that just ended: a peer without a public key is no peer."""
        if self.section == "peer" and self.peers and self.peers[-1].public_key is None:
            raise self.error("[Peer] has no PublicKey", self.peers[-1].line, "PublicKey")

    def unknown_key(self, name: str, number: int) -> NoReturn:
        assert self.section is not None
        other = "peer" if self.section == "interface" else "interface"
        canonical = _CANONICAL[other].get(name.lower())
        if canonical is not None:
            raise self.error(
                f"belongs in {_SECTION_TITLE[other]}, not {_SECTION_TITLE[self.section]}",
                number,
                canonical,
            )
        if not name:
            raise self.error("a line starting with '=' has no key", number)
        shown = _showable_key(name)
        where = _SECTION_TITLE[self.section]
        if shown is None:
            raise self.error(f"not a key of {where} (the text is not shown)", number)
        raise self.error(f"unknown key in {where}", number, shown)

    def apply(self, key: str, value: str, number: int) -> None:
        if not value and key != "AllowedIPs" and key not in _HOOK_KEYS:
            raise _Invalid("has no value")
        if self.section == "interface":
            assert self.interface is not None
            self.apply_interface(self.interface, key, value, number)
        else:
            self.apply_peer(self.peers[-1], key, value, number)

    def apply_interface(self, draft: _InterfaceDraft, key: str, value: str, number: int) -> None:
        if key == "PrivateKey":
            draft.private_key = _parse_private_key(value)
        elif key == "ListenPort":
            draft.listen_port = _uint(value, 0, 65535) or None
        elif key == "FwMark":
            draft.fwmark = _parse_fwmark(value)
        elif key == "MTU":
            draft.mtu = _parse_mtu(value)
            draft.mtu_line = number
        elif key == "Address":
            for item in _split_list(value, "addresses"):
                address = _parse_address(item)
                if address in draft.addresses:
                    raise _Invalid(f"{address} is listed twice")
                draft.addresses.append(address)
        elif key == "DNS":
            draft.dns.extend(_parse_dns(item) for item in _split_list(value, "DNS servers"))
        if key in _IGNORED:
            self.warnings.append(f"{self.path}:{number}: {_IGNORED[key]}")

    def apply_peer(self, draft: _PeerDraft, key: str, value: str, number: int) -> None:
        if key == "PublicKey":
            draft.public_key = _parse_private_key(value)  # same format and checks
            draft.public_key_line = number
        elif key == "PresharedKey":
            draft.preshared_key = _parse_private_key(value)
        elif key == "AllowedIPs":
            if value:  # `AllowedIPs =` is an empty list, as in wg(8)
                for item in _split_list(value, "AllowedIPs"):
                    network = _parse_allowed_ip(item)
                    if network not in draft.allowed_ips:
                        draft.allowed_ips.append(network)
        elif key == "Endpoint":
            draft.endpoint = _parse_endpoint(value, number)
        elif key == "PersistentKeepalive":
            draft.persistent_keepalive = _parse_keepalive(value)

    def finish(self, text: str, name: str) -> InterfaceConfig:
        interface, drafts = self.parse(text)
        self.close_peer()
        assert interface.private_key is not None
        if len(drafts) > MAX_PEERS:
            raise self.error(f"more than {MAX_PEERS} peers", drafts[MAX_PEERS].line)
        own = public_key(interface.private_key)
        by_key: dict[bytes, int] = {}
        owner: dict[Network, int] = {}
        for draft in drafts:
            assert draft.public_key is not None
            if draft.public_key == own:
                raise self.error(
                    "this is the interface's own public key", draft.public_key_line, "PublicKey"
                )
            first = by_key.setdefault(draft.public_key, draft.public_key_line)
            if first != draft.public_key_line:
                raise self.error(
                    f"the same peer as the one on line {first}", draft.public_key_line, "PublicKey"
                )
            for network in draft.allowed_ips:
                earlier = owner.get(network)
                if earlier is not None:
                    self.warnings.append(
                        f"{self.path}:{draft.line}: AllowedIPs {network} is also given to the "
                        f"peer on line {earlier}; the later peer gets it, as with wg"
                    )
                owner[network] = draft.line
        if interface.mtu > MAX_MTU:
            self.warnings.append(
                f"{self.path}:{interface.mtu_line}: MTU {interface.mtu} is above the {MAX_MTU} "
                f"bytes wgactors carries in a packet: the interface runs at MTU {MAX_MTU}"
            )
            interface.mtu = MAX_MTU
        peers = tuple(self.peer(draft) for draft in drafts)
        return InterfaceConfig(
            name=name,
            private_key=interface.private_key,
            listen_port=interface.listen_port,
            addresses=tuple(interface.addresses),
            mtu=interface.mtu,
            fwmark=interface.fwmark,
            dns=tuple(interface.dns),
            peers=peers,
            warnings=tuple(self.warnings),
        )

    def peer(self, draft: _PeerDraft) -> PeerConfig:
        assert draft.public_key is not None
        endpoint = None if draft.endpoint is None else self.endpoint(draft.endpoint)
        try:
            return PeerConfig(
                public_key=draft.public_key,
                preshared_key=draft.preshared_key,
                endpoint=endpoint,
                allowed_ips=tuple(draft.allowed_ips),
                persistent_keepalive=draft.persistent_keepalive,
            )
        except DeviceError:
            pass  # everything PeerConfig checks was checked above; kept so nothing else escapes
        raise self.error("the device refuses this peer", draft.line)

    def endpoint(self, spec: _EndpointSpec) -> tuple[str, int]:
        if spec.literal:
            return spec.host, spec.port
        result: object = None
        reason = "no address found"
        try:
            result = self.resolve(spec.host, spec.port)
        except OSError as exc:
            reason = exc.strerror or str(exc) or reason
        except Exception as exc:  # a resolver's failure of any kind is this line's problem
            reason = type(exc).__name__
        address = _resolved(result)
        if address is None:
            raise ResolveError(
                f"cannot resolve {spec.host}: {reason}", self.path, spec.line, "Endpoint"
            )
        return address


def _resolved(result: object) -> tuple[str, int] | None:
    """The resolver's answer as (canonical IP text, port), or None if it is not one."""
    if not (isinstance(result, tuple) and len(result) == 2):
        return None
    host, port = result
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port <= 65535:
        return None
    ip = _ip(host.strip("[]"))
    return None if ip is None else (str(ip), port)


def _showable_key(name: str) -> str | None:
    return name if _SHOWABLE_KEY_RE.fullmatch(name) else None


def _name_for(path: str) -> str:
    """The interface name for parse_config: from a ``NAME.conf`` path, else DEFAULT_NAME."""
    if os.path.basename(path).endswith(_CONF_SUFFIX):
        return interface_name_from_path(path)
    return DEFAULT_NAME


def interface_name_from_path(path: str | os.PathLike[str]) -> str:
    """``/etc/wireguard/wg0.conf`` -> ``wg0``, with wg-quick's rules for the name.

    wg-quick names the interface after the file, so a file called ``my tunnel.conf`` or
    ``wireguard-office.conf`` (16 characters) could never be brought up; say so here rather than
    when the kernel refuses the name.
    """
    text = os.fspath(path)
    base = os.path.basename(text)
    if not base.endswith(_CONF_SUFFIX):
        raise ConfigError(
            "the file name must be the interface name followed by .conf, e.g. wg0.conf", text
        )
    name = base[: -len(_CONF_SUFFIX)]
    if not _NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise ConfigError(
            "the interface name (the file name before .conf) must be 1-15 characters "
            "from a-z A-Z 0-9 _ = + . -",
            text,
        )
    return name


def parse_config(
    text: str, path: str = "<string>", *, resolve: Resolver | None = None
) -> InterfaceConfig:
    """Parse wg-quick configuration text; ``path`` is only used for names and messages.

    The interface name comes from ``path`` when it is a ``NAME.conf`` file name, else it is
    :data:`DEFAULT_NAME`. ``resolve`` turns endpoint host names into addresses and defaults to
    :func:`actors.resolver.default_resolve`; tests pass a fake so they never touch the network.
    """
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "surrogatepass")) > (
        MAX_CONFIG_BYTES
    ):
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes: not a configuration file", path)
    name = _name_for(path)
    return _Parser(path, resolve or default_resolve).finish(text, name)


def load_config(
    path: str | os.PathLike[str], *, resolve: Resolver | None = None
) -> InterfaceConfig:
    """Read and parse a wg-quick file; the interface is named after it, as wg-quick does.
    ``resolve`` is as for :func:`parse_config` (the launcher passes a retrying one)."""
    shown = os.fspath(path)
    name = interface_name_from_path(shown)
    data = _read(shown)
    text: str | None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None:
        raise ConfigError("not UTF-8 text", shown)
    return _Parser(shown, resolve or default_resolve).finish(text, name)


def _read(path: str) -> bytes:
    """At most MAX_CONFIG_BYTES + 1 bytes of a regular file, every OS failure a ConfigError."""
    reason: str | None = None
    data = b""
    try:
        # Check first: opening a FIFO would block, and reading a device could never end.
        if not stat.S_ISREG(os.stat(path).st_mode):
            reason = "not a regular file"
        else:
            with open(path, "rb") as file:
                data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    if reason is not None:
        raise ConfigError(f"cannot read: {reason}", path)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes: not a configuration file", path)
    return data


def check_permissions(path: str | os.PathLike[str]) -> str | None:
    """A warning if group or others may read or write the file: it holds our private key.

    wg-quick warns about this too; it is a warning and not an error because the key may already
    be public knowledge for a test setup, and refusing would only make people chmod blindly.
    It never raises: it runs beside :func:`load_config`, which reports unreadable files.
    """
    shown = os.fspath(path)
    try:
        mode = stat.S_IMODE(os.stat(shown).st_mode)
    except OSError:
        return None  # nothing to warn about: load_config reports a file it cannot read
    if mode & 0o077:
        return (
            f"{shown} is accessible by group or others (mode {mode:04o}) but holds a private "
            f"key: chmod 600 {shown}"
        )
    return None

"""The WireGuard cross-platform configuration protocol ("UAPI"), as text and values only.

This is what `wg` speaks over ``/var/run/wireguard/IFACE.sock`` (https://www.wireguard.com/xplatform/),
and its behaviour follows wireguard-go's ``device/uapi.go``. The module is sans-I/O on purpose: the
socket server (:mod:`actors.uapi_server`) owns the bytes and the bounds on reading them, the
controller owns what a request does, and this module only turns lines into values and values into
lines. That keeps the protocol rules in one place where they can be tested exhaustively and
fuzzed without a socket.

Two rules hold everywhere:

* The whole ``set`` request is validated before anything is applied. wireguard-go applies each
  line as it reads it, so a bad line half-way through leaves the device half configured; here
  :func:`parse_set` returns a complete :class:`SetRequest` or raises, and the caller applies all of
  it or nothing. That is a deliberate improvement, not a compatibility bug.
* Error messages never contain key material (or any value the client sent), since the server
  logs them and a private key must not end up in a log. They name the line number and the key
  instead, which is enough for whoever wrote the request to find the mistake. For the same
  reason the reprs of the value classes leave out private and preshared keys.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .wireguard.allowedips import Network, parse_prefix
from .wireguard.keys import KeyFormatError, decode_hex_key

__all__ = [
    "EADDRINUSE",
    "EINVAL",
    "EIO",
    "EPROTO",
    "EUNKNOWN",
    "MAX_LINE",
    "MAX_SET_LINES",
    "DeviceStatus",
    "PeerChange",
    "PeerStatus",
    "SetParser",
    "SetRequest",
    "UapiError",
    "format_endpoint",
    "format_get",
    "format_get_parts",
    "parse_get",
    "parse_set",
]

# errno values exactly as wireguard-go writes them: negative, as in "errno=-22".
EIO = -5
EPROTO = -71
EINVAL = -22
EADDRINUSE = -98
EUNKNOWN = -55

MAX_LINE = 4096  # bytes per line (without its newline); longer is EPROTO
# Lines in one set request; more is EINVAL, so memory stays bounded. Sized for a hub: a `wg
# setconf` of MAX_PEERS peers at 8 lines each (key, endpoint, keepalive, replace, allowed IPs).
MAX_SET_LINES = 1 << 20

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_I64 = 0x7FFF_FFFF_FFFF_FFFF
_NS = 1_000_000_000
_ZERO_KEY = bytes(32)
_ZERO_HEX = "0" * 64

# A key name we may quote in an error message: short and plain, so it never smuggles control
# characters into a log line, and without a run of hex letters long enough to be a piece of a
# key that a client pasted in the wrong place.
_QUOTABLE = re.compile(r"[a-z_]{1,32}")
_HEX_RUN = re.compile(r"[a-f]{8}")
# An IPv6 zone (scope) as an interface name or index: printable, no separators, at most
# IFNAMSIZ - 1 characters. wireguard-go accepts any zone text; we keep it sane for logs.
_ZONE = re.compile(r"[A-Za-z0-9_.@+\-]{1,15}")
# A dotted-quad IPv4 prefix as netip.ParsePrefix takes it: octets 0..255 and a length 0..32,
# neither with leading zeros.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_PREFIX = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}/(3[0-2]|[12][0-9]|[0-9])")


class UapiError(Exception):
    """A request or reply the protocol cannot accept, with the errno to answer it with.

    ``errno`` is negative, as wireguard-go writes it. ``message`` is for logs and never contains
    key material, so it is safe to log as is.
    """

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(errno, message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return f"errno={self.errno}: {self.message}"


# -- values


@dataclass(frozen=True, slots=True)
class PeerChange:
    """One ``public_key=`` section of a set request, with wireguard-go's line order resolved.

    Fields left at their defaults leave the peer unchanged. ``remove`` wins over everything else
    in its section (wireguard-go configures a throw-away peer after ``remove=true``), and
    ``allowed_ips`` holds only the prefixes to add after the optional replace.
    """

    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = field(default=None, repr=False)  # None: unchanged; zero: clear
    endpoint: tuple[str, int] | None = None  # host without brackets
    persistent_keepalive: int | None = None  # None: unchanged
    replace_allowed_ips: bool = False
    allowed_ips: tuple[Network, ...] = ()


@dataclass(frozen=True, slots=True)
class SetRequest:
    """A whole, validated ``set=1`` request: the device keys, then the peer sections in order."""

    private_key: bytes | None = field(default=None, repr=False)  # None: unchanged; zero: remove
    listen_port: int | None = None
    fwmark: int | None = None  # 0 turns the mark off
    replace_peers: bool = False
    peers: tuple[PeerChange, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer as a ``get=1`` reply describes it."""

    public_key: bytes
    preshared_key: bytes | None = field(repr=False)
    endpoint: tuple[str, int] | None
    last_handshake_ns: int  # UNIX ns, 0 = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int
    allowed_ips: tuple[Network, ...]


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """The interface as a ``get=1`` reply describes it."""

    private_key: bytes | None = field(repr=False)
    listen_port: int
    fwmark: int
    peers: Iterable[PeerStatus]  # a tuple when parsed; may be a generator when formatted


# -- field parsers, shared by set and get. Each raises ValueError with a message naming the
# expected form (never the value); the callers wrap it into UapiError with the line number.


def _uint(value: str, maximum: int) -> int:
    """Decimal digits only, as Go's ``strconv.ParseUint(value, 10, bits)``: no sign, no space,
    no underscores, no non-ASCII digits. Leading zeros are accepted, as Go accepts them."""
    if not value or not value.isascii() or not value.isdigit():
        raise ValueError(f"must be a decimal number in 0..{maximum}")
    digits = value.lstrip("0") or "0"
    # Bound the length before int(): a 4000-digit number must not cost a big-int conversion.
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise ValueError(f"must be a decimal number in 0..{maximum}")
    return int(digits)


def _hex_key(value: str) -> bytes:
    try:
        return decode_hex_key(value)
    except KeyFormatError:
        raise ValueError("must be 64 hex digits") from None


def _true(value: str) -> bool:
    if value != "true":
        raise ValueError("may only be 'true'")
    return True


def _ipv6_host(text: str) -> str:
    """An IPv6 literal with an optional ``%zone``, in canonical (compressed) form."""
    addr, pct, zone = text.partition("%")
    if pct and _ZONE.fullmatch(zone) is None:
        raise ValueError("has an invalid IPv6 zone")
    try:
        canonical = str(ipaddress.IPv6Address(addr))
    except ValueError:
        raise ValueError("must be an IPv6 literal inside the brackets") from None
    return f"{canonical}%{zone}" if pct else canonical


def _ipv6_text(addr: ipaddress.IPv6Address) -> str:
    """An IPv6 address as Go's ``netip.Addr.String`` writes it: RFC 5952, as Python does, except
    that an IPv4-mapped address keeps its dotted quad (``::ffff:10.0.0.1``)."""
    mapped = addr.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else str(addr)


def _prefix_text(net: Network) -> str:
    """A prefix as Go's ``netip.Prefix.String`` writes it (see :func:`_ipv6_text`)."""
    if net.version == 6 and net.network_address.ipv4_mapped is not None:
        return f"{_ipv6_text(net.network_address)}/{net.prefixlen}"
    return str(net)


def _endpoint(value: str) -> tuple[str, int]:
    """``1.2.3.4:51820`` or ``[fd00::1]:51820``, as Go's ``netip.ParseAddrPort``: IP literals
    only (no names: resolving is the client's job), brackets for IPv6 and only for IPv6. Port 0
    is taken, as wireguard-go takes it: sending there fails and is counted, like any
    unreachable endpoint."""
    if not value.isascii():
        raise ValueError("must be IPv4:port or [IPv6]:port")
    host, colon, port_text = value.rpartition(":")
    if not colon or not host or not port_text:
        raise ValueError("must be IPv4:port or [IPv6]:port")
    port = _uint(port_text, _U16)
    if host.startswith("["):
        if len(host) < 2 or not host.endswith("]"):
            raise ValueError("has an unclosed '['")
        return _ipv6_host(host[1:-1]), port
    try:
        return str(ipaddress.IPv4Address(host)), port
    except ValueError:
        raise ValueError("must be IPv4:port or [IPv6]:port") from None


def _prefix(value: str) -> Network:
    """``addr/len`` as Go's ``netip.ParsePrefix`` reads it: an IP literal (no zone), a slash,
    a decimal length without sign or leading zeros. Host bits are then masked, as `wg` does,
    by :func:`parse_prefix`; anything Python's ipaddress would also accept beyond that
    (netmasks, bare addresses, surrounding space) is refused first."""
    quad = _IPV4_PREFIX.fullmatch(value)
    if quad is not None:  # the common case, without ipaddress's string parsing (a hub has many)
        a, b, c, d, n = (int(g) for g in quad.groups())
        mask = (0xFFFF_FFFF << (32 - n)) & 0xFFFF_FFFF
        return ipaddress.IPv4Network(((a << 24 | b << 16 | c << 8 | d) & mask, n))
    addr, slash, length = value.partition("/")
    if not slash or not value.isascii() or "%" in addr or any(c.isspace() for c in value):
        raise ValueError("must be address/length")
    if not length.isdigit() or len(length) > 3 or (len(length) > 1 and length[0] == "0"):
        raise ValueError("must be address/length")
    try:
        ipaddress.ip_address(addr)
        return parse_prefix(value)
    except ValueError:
        raise ValueError("must be address/length with a valid address and length") from None


# -- set


def _line_too_long(line: str) -> bool:
    """More than MAX_LINE bytes in UTF-8; cheap for the common short line."""
    if len(line) > MAX_LINE:
        return True
    if len(line) * 4 <= MAX_LINE:
        return False
    return len(line.encode("utf-8", "surrogatepass")) > MAX_LINE


def _quote(key: str) -> str:
    if _QUOTABLE.fullmatch(key) is None or _HEX_RUN.search(key) is not None:
        return "(unprintable)"
    return repr(key)


@dataclass(slots=True)
class _PeerDraft:
    """A peer section while its lines are being read; frozen into a PeerChange at its end."""

    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: list[Network] = field(default_factory=list)

    def freeze(self) -> PeerChange:
        if self.remove:
            return PeerChange(self.public_key, remove=True)
        return PeerChange(
            self.public_key,
            update_only=self.update_only,
            preshared_key=self.preshared_key,
            endpoint=self.endpoint,
            persistent_keepalive=self.persistent_keepalive,
            replace_allowed_ips=self.replace_allowed_ips,
            allowed_ips=tuple(self.allowed_ips),
        )


@dataclass(slots=True)
class _DeviceDraft:
    """The device keys read so far (they all come before the first peer section)."""

    private_key: bytes | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False


def _set_device_line(device: _DeviceDraft, key: str, value: str) -> None:
    if key == "private_key":
        device.private_key = _hex_key(value)  # all zeros is allowed: it removes the key
    elif key == "listen_port":
        device.listen_port = _uint(value, _U16)
    elif key == "fwmark":
        device.fwmark = _uint(value, _U32)
    elif key == "replace_peers":
        device.replace_peers = _true(value)
    else:
        raise KeyError(key)


def _set_peer_line(peer: _PeerDraft, key: str, value: str) -> None:
    if key == "remove":
        peer.remove = _true(value)
    elif key == "update_only":
        peer.update_only = _true(value)
    elif key == "preshared_key":
        peer.preshared_key = _hex_key(value)  # all zeros is allowed: it clears the key
    elif key == "endpoint":
        peer.endpoint = _endpoint(value)
    elif key == "persistent_keepalive_interval":
        peer.persistent_keepalive = _uint(value, _U16)
    elif key == "replace_allowed_ips":
        # wireguard-go removes the peer's prefixes at this line, including any added earlier in
        # the same section: drop those, so "replace then add" means the same thing here.
        peer.replace_allowed_ips = _true(value)
        peer.allowed_ips.clear()
    elif key == "allowed_ip":
        peer.allowed_ips.append(_prefix(value))
    elif key == "protocol_version":
        if value != "1":
            raise ValueError("must be 1")
    else:
        raise KeyError(key)


class SetParser:
    """A ``set=1`` request read one line at a time, so the server can parse a request as its
    bytes arrive without holding the lines (a hub's `wg setconf` is half a million of them).

    :meth:`feed` each line (without its newline, excluding the blank line that ends the
    request), then :meth:`finish`. Errors are raised by the line that causes them, as
    :func:`parse_set` describes.
    """

    __slots__ = ("_device", "_lineno", "_peer", "_peers")

    def __init__(self) -> None:
        self._device = _DeviceDraft()
        self._peers: list[PeerChange] = []
        self._peer: _PeerDraft | None = None
        self._lineno = 0

    def feed(self, line: str) -> None:
        self._lineno += 1
        lineno = self._lineno
        if lineno > MAX_SET_LINES:
            raise UapiError(EINVAL, f"request has more than {MAX_SET_LINES} lines")
        if not isinstance(line, str):
            raise UapiError(EPROTO, f"line {lineno}: not text")
        if _line_too_long(line):
            raise UapiError(EPROTO, f"line {lineno}: longer than {MAX_LINE} bytes")
        key, eq, value = line.partition("=")
        if not eq:
            raise UapiError(EPROTO, f"line {lineno}: not a key=value pair")
        peer = self._peer
        try:
            if key == "public_key":
                if peer is not None:
                    self._peers.append(peer.freeze())
                self._peer = _PeerDraft(_hex_key(value))
            elif peer is None:
                _set_device_line(self._device, key, value)
            else:
                _set_peer_line(peer, key, value)
        except KeyError:
            where = "device" if peer is None else "peer"
            raise UapiError(EINVAL, f"line {lineno}: unknown {where} key {_quote(key)}") from None
        except ValueError as e:
            raise UapiError(EINVAL, f"line {lineno}: {key} {e}") from None

    def finish(self) -> SetRequest:
        """The whole request; the parser is spent afterwards."""
        if self._peer is not None:
            self._peers.append(self._peer.freeze())
            self._peer = None
        device = self._device
        return SetRequest(
            device.private_key,
            device.listen_port,
            device.fwmark,
            device.replace_peers,
            tuple(self._peers),
        )


def parse_set(lines: Iterable[str]) -> SetRequest:
    """Parse the lines of a ``set=1`` request into one validated :class:`SetRequest`.

    ``lines`` are those after ``set=1``, without their newlines, up to but excluding the blank
    line that ends the request. Unlike wireguard-go, which applies each line as it goes, nothing
    here has effects: the request is checked whole, so a bad line anywhere means none of it is
    applied. Errors: EPROTO for a line that is not ``key=value`` or is over MAX_LINE bytes,
    EINVAL for an unknown key, a bad value, or more than MAX_SET_LINES lines (counted as they
    arrive, so an endless iterable is cut off rather than buffered).
    """
    parser = SetParser()
    for line in lines:
        parser.feed(line)
    return parser.finish()


# -- get


def format_endpoint(ep: tuple[str, int]) -> str:
    """``host:port`` as wireguard-go's Linux bind prints it in a get reply: brackets around an
    IPv6 host, an IPv4-mapped one with its dotted quad, and no zone. The zone stays with the
    peer for sending; `wg` itself resolves a zone name it reads, and crashes on one it cannot
    (wg 1.0.20210914 on a name with no interface), so it is never handed one."""
    host, port = ep
    if ":" not in host:
        return f"{host}:{port}"
    host = host.partition("%")[0]
    if host[:7].lower() == "::ffff:" and "." not in host:  # IPv4-mapped, in hex
        with contextlib.suppress(ValueError):
            host = _ipv6_text(ipaddress.IPv6Address(host))
    return f"[{host}]:{port}"


def format_get_parts(status: DeviceStatus) -> Iterator[str]:
    """The body of a ``get=1`` reply, in wireguard-go's order and format.

    A zero or absent private key, port 0 and fwmark 0 are omitted, as wireguard-go omits them;
    a peer's preshared key is always printed (64 zeros when there is none), because `wg` and
    other clients expect it. Every line ends with a newline; the caller appends ``errno=0``
    and the blank line, since only it knows whether the request succeeded.

    The reply comes in parts (the device's lines, then one part per peer), so a hub's reply
    of tens of MB can be sent as it is made: see :func:`format_get` for it whole.
    """
    if status.private_key is not None and status.private_key != _ZERO_KEY:
        yield (f"private_key={status.private_key.hex()}\n")
    if status.listen_port:
        yield f"listen_port={status.listen_port}\n"
    if status.fwmark:
        yield f"fwmark={status.fwmark}\n"
    # One string per peer, not one per line: a hub's 100,000 peers make a million lines.
    for p in status.peers:
        secs, nsecs = divmod(p.last_handshake_ns, _NS)
        endpoint = "" if p.endpoint is None else f"endpoint={format_endpoint(p.endpoint)}\n"
        allowed = "".join([f"allowed_ip={_prefix_text(net)}\n" for net in p.allowed_ips])
        yield (
            f"public_key={p.public_key.hex()}\n"
            f"preshared_key={p.preshared_key.hex() if p.preshared_key else _ZERO_HEX}\n"
            "protocol_version=1\n"
            f"{endpoint}"
            f"last_handshake_time_sec={secs}\n"
            f"last_handshake_time_nsec={nsecs}\n"
            f"tx_bytes={p.tx_bytes}\n"
            f"rx_bytes={p.rx_bytes}\n"
            f"persistent_keepalive_interval={p.persistent_keepalive}\n"
            f"{allowed}"
        )


def format_get(status: DeviceStatus) -> str:
    """The whole body of a ``get=1`` reply (:func:`format_get_parts`, joined)."""
    return "".join(format_get_parts(status))


_GET_PEER_KEYS = frozenset(
    {
        "preshared_key",
        "protocol_version",
        "endpoint",
        "last_handshake_time_sec",
        "last_handshake_time_nsec",
        "tx_bytes",
        "rx_bytes",
        "persistent_keepalive_interval",
        "allowed_ip",
    }
)


@dataclass(slots=True)
class _StatusDraft:
    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None
    handshake_sec: int = 0
    handshake_nsec: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive: int = 0
    allowed_ips: list[Network] = field(default_factory=list)

    def freeze(self) -> PeerStatus:
        return PeerStatus(
            self.public_key,
            self.preshared_key,
            self.endpoint,
            self.handshake_sec * _NS + self.handshake_nsec,
            self.rx_bytes,
            self.tx_bytes,
            self.persistent_keepalive,
            tuple(self.allowed_ips),
        )


def _get_peer_line(peer: _StatusDraft, key: str, value: str) -> None:
    if key == "preshared_key":
        psk = _hex_key(value)
        peer.preshared_key = psk if psk != _ZERO_KEY else None
    elif key == "protocol_version":
        if value != "1":
            raise ValueError("must be 1")
    elif key == "endpoint":
        peer.endpoint = _endpoint(value)
    elif key == "last_handshake_time_sec":
        peer.handshake_sec = _uint(value, _I64)
    elif key == "last_handshake_time_nsec":
        peer.handshake_nsec = _uint(value, _NS - 1)
    elif key == "tx_bytes":
        peer.tx_bytes = _uint(value, _U64)
    elif key == "rx_bytes":
        peer.rx_bytes = _uint(value, _U64)
    elif key == "persistent_keepalive_interval":
        peer.persistent_keepalive = _uint(value, _U16)
    elif key == "allowed_ip":
        peer.allowed_ips.append(_prefix(value))
    # Any other key is ignored, as `wg` ignores it: a newer daemon may report more.


def parse_get(text: str) -> DeviceStatus:
    """Read a ``get=1`` reply (as :func:`format_get` writes it, optionally followed by its
    ``errno=`` line and blank line) back into a :class:`DeviceStatus`.

    It is the client side, for `wgactors status` and tests, so it is strict about structure
    (EPROTO for a line without ``=``, a bad value, a peer key before any ``public_key``, text
    after the blank line, a truncated last line) but ignores keys it does not know, as `wg` does.
    ``errno=0`` is ignored; a non-zero errno is raised as that UapiError, since the reply then
    describes a failure rather than an empty device.
    """
    if text and not text.endswith("\n"):
        raise UapiError(EPROTO, "reply ends in the middle of a line")
    lines = text.split("\n")[:-1] if text else []
    private_key: bytes | None = None
    listen_port = 0
    fwmark = 0
    peers: list[PeerStatus] = []
    peer: _StatusDraft | None = None
    failure: int | None = None
    for i, line in enumerate(lines):
        lineno = i + 1
        if line == "":
            if any(lines[i + 1 :]):
                raise UapiError(EPROTO, f"line {lineno}: data after the end of the reply")
            break
        if _line_too_long(line):
            raise UapiError(EPROTO, f"line {lineno}: longer than {MAX_LINE} bytes")
        key, eq, value = line.partition("=")
        if not eq:
            raise UapiError(EPROTO, f"line {lineno}: not a key=value pair")
        try:
            if key == "errno":
                code = value[1:] if value.startswith("-") else value
                failure = -_uint(code, 0x7FFF_FFFF)
            elif key == "public_key":
                if peer is not None:
                    peers.append(peer.freeze())
                peer = _StatusDraft(_hex_key(value))
            elif peer is not None:
                _get_peer_line(peer, key, value)
            elif key == "private_key":
                sk = _hex_key(value)
                private_key = sk if sk != _ZERO_KEY else None
            elif key == "listen_port":
                listen_port = _uint(value, _U16)
            elif key == "fwmark":
                fwmark = _uint(value, _U32)
            elif key in _GET_PEER_KEYS:
                raise UapiError(EPROTO, f"line {lineno}: {key} before any public_key")
        except ValueError as e:
            raise UapiError(EPROTO, f"line {lineno}: {key} {e}") from None
    if failure:
        raise UapiError(failure, "the daemon reported an error")
    if peer is not None:
        peers.append(peer.freeze())
    return DeviceStatus(private_key, listen_port, fwmark, tuple(peers))

"""DNS filtering inside the tunnel: blocked names get NXDOMAIN from us, the rest pass.

Firezone's connlib answers DNS inside the tunnel; this is the piece of that a pipeline stage can
do on its own. On the outbound path it reads every DNS query leaving through the tunnel (UDP to
port 53, IPv4 or IPv6). A query for a blocked name, or for any name under one, never reaches the
peer: the stage answers it itself with NXDOMAIN, straight back to the local host
(:meth:`actors.Stage.reply`), so the application learns at once instead of waiting for a
timeout. Every other query passes unchanged::

    [[outbound]]
    use = "actors.contrib.dnsfilter:DnsFilter"
    options = { block = ["ads.example", "tracker.example"], block_file = "block.txt" }

``block_file`` holds one name per line; ``#`` starts a comment. ``hosts_file`` is a hosts-format
block list (``0.0.0.0 ads.example tracker.example``): the names of lines whose address is a
sink (``0.0.0.0``, ``::``, loopback) are blocked; lines mapping names to real addresses, and the
usual ``localhost`` lines, are left out. The three options add up. A file line that is not a
valid name (or, in a hosts file, not an address followed by names) is refused when the file is
loaded, naming the file and line; relative file names start at the pipeline file. A packet that
looks like DNS but
does not parse as one query passes through untouched and is counted as ``malformed``; parsing
never raises. Stats: ``dns_seen`` (queries read), ``dns_blocked`` (answered NXDOMAIN),
``dns_malformed``.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import build
from ..packet import PROTO_UDP, Packet
from ..stage import CONSUMED, Stage, Verdict

__all__ = [
    "DNS_PORT",
    "MAX_BLOCKED_NAMES",
    "MAX_BLOCK_FILE_BYTES",
    "DnsFilter",
    "nxdomain",
    "parse_query",
]

DNS_PORT = 53
MAX_BLOCKED_NAMES = 1_000_000
"""Names one filter holds (a large public block list has a few hundred thousand)."""
MAX_BLOCK_FILE_BYTES = 64 << 20
MAX_NAME_LENGTH = 253  # RFC 1035 2.3.4, in text form
_MAX_LABELS = 127
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_OPCODE = 0x7800
_RD = 0x0100
_RA = 0x0080
_NXDOMAIN = 3
_LABEL = re.compile(rb"[a-z0-9_-]{1,63}")  # letters, digits, hyphens; underscores occur in lists
_LOCAL_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
    }
)
"""Names every hosts file maps to loopback: system entries, not blocks."""


def parse_query(message: bytes) -> tuple[int, int, bytes, int] | None:
    """``(id, flags, name, end of question)`` of a standard DNS query with one question; the
    name is lower-case ASCII with dots and no trailing dot. None for anything else."""
    if len(message) < _HEADER.size:
        return None
    ident, flags, qdcount, _ancount, _nscount, _arcount = _HEADER.unpack_from(message)
    if flags & _QR or flags & _OPCODE or qdcount != 1:
        return None
    labels: list[bytes] = []
    at = _HEADER.size
    while True:
        if at >= len(message) or len(labels) > _MAX_LABELS:
            return None
        length = message[at]
        if length == 0:
            at += 1
            break
        if length > 63:  # a compression pointer or a reserved label type: not in a query
            return None
        labels.append(message[at + 1 : at + 1 + length])
        at += 1 + length
    if at + 4 > len(message):  # QTYPE and QCLASS
        return None
    name = b".".join(labels).lower()
    if len(name) > MAX_NAME_LENGTH:
        return None
    return ident, flags, name, at + 4


def nxdomain(message: bytes, ident: int, flags: int, end: int) -> bytes:
    """The NXDOMAIN response to the query ``message``: its id and question, recursion
    available, no records (EDNS is not echoed: the answer is tiny)."""
    answer_flags = _QR | (flags & (_OPCODE | _RD)) | _RA | _NXDOMAIN
    return _HEADER.pack(ident, answer_flags, 1, 0, 0, 0) + message[_HEADER.size : end]


def _normalise(name: object, where: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"{where}: a name is a string, not {type(name).__name__}")
    text = name.strip().rstrip(".").lower()
    try:
        encoded = text.encode("ascii") if text.isascii() else text.encode("idna")
    except UnicodeError as e:
        raise ValueError(f"{where}: {name!r} is not a domain name: {e}") from None
    labels = encoded.split(b".")
    if len(encoded) > MAX_NAME_LENGTH or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{where}: {name!r} is not a domain name")
    return encoded


def _lines(option: str, path: str | os.PathLike[str]) -> Iterable[tuple[list[str], str]]:
    """The words of each line of a list file, without comments, and where the line is."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BLOCK_FILE_BYTES:
            raise ValueError(f"{option} {path}: larger than {MAX_BLOCK_FILE_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{option} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{option} {path}: not UTF-8 text: {e.reason}") from None
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if words:
            yield words, f"{option} {path}:{number}"


def _names_in_file(path: str | os.PathLike[str]) -> Iterable[tuple[str, str]]:
    for words, where in _lines("block_file", path):
        if len(words) != 1:
            raise ValueError(f"{where}: one name per line, not {' '.join(words)!r}")
        yield words[0], where


def _names_in_hosts(path: str | os.PathLike[str]) -> Iterable[tuple[str, str]]:
    for words, where in _lines("hosts_file", path):
        address, *names = words
        try:  # a scope (fe80::1%lo0) is part of an address in hosts files
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{where}: {address!r} is not an address") from None
        if not names:
            raise ValueError(f"{where}: {address} is followed by no name")
        if not (ip.is_unspecified or ip.is_loopback):
            continue  # a name given a real address: not a block
        for name in names:
            if name.lower() in _LOCAL_NAMES or _is_address(name):
                continue
            yield name, where


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class DnsFilter(Stage):
    """Answers DNS queries for blocked names (and their subdomains) with NXDOMAIN; passes the
    rest. Options: ``block`` (a list of names), ``block_file`` (a file of names, one a line)
    and ``hosts_file`` (a hosts-format block list), together or alone."""

    def __init__(
        self,
        block: Iterable[str] = (),
        block_file: Path | str | None = None,
        hosts_file: Path | str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(block, str | bytes):
            raise TypeError("block is a list of names")
        blocked: set[bytes] = set()
        sources: Iterable[tuple[str, str]] = [(n, f"block[{i}]") for i, n in enumerate(block)]
        if block_file is not None:
            sources = itertools.chain(sources, _names_in_file(block_file))
        if hosts_file is not None:
            sources = itertools.chain(sources, _names_in_hosts(hosts_file))
        for name, where in sources:
            blocked.add(_normalise(name, where))
            if len(blocked) > MAX_BLOCKED_NAMES:
                raise ValueError(f"more than {MAX_BLOCKED_NAMES} blocked names")
        self.blocked = frozenset(blocked)
        self.seen = 0
        self.answered = 0
        self.malformed = 0

    def is_blocked(self, name: bytes) -> bool:
        """True if ``name`` or one of the domains above it is blocked."""
        blocked = self.blocked
        while True:
            if name in blocked:
                return True
            dot = name.find(b".")
            if dot < 0:
                return False
            name = name[dot + 1 :]

    def process(self, packet: Packet) -> Verdict:
        if packet.protocol != PROTO_UDP or packet.dst_port != DNS_PORT:
            return packet
        message = packet.payload
        if message is None:
            return packet
        query = parse_query(message)
        if query is None:
            self.malformed += 1
            return packet
        self.seen += 1
        ident, flags, name, end = query
        if not self.is_blocked(name):
            return packet
        sport = packet.src_port
        assert sport is not None
        answer = nxdomain(message, ident, flags, end)
        self.reply(build.udp(packet.dst_bytes, packet.src_bytes, DNS_PORT, sport, answer))
        self.answered += 1
        return CONSUMED  # answered: not a drop

    def stats_extra(self) -> dict[str, Any]:
        return {
            "dns_seen": self.seen,
            "dns_blocked": self.answered,
            "dns_malformed": self.malformed,
        }

"""The wg-quick configuration parser of actors/config.py: valid files, every error, no leaks."""

from __future__ import annotations

import ipaddress
import os
import pickle
import shutil
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import config as config_module
from actors.config import (
    DEFAULT_NAME,
    MAX_CONFIG_BYTES,
    MAX_MTU,
    ConfigError,
    InterfaceConfig,
    check_permissions,
    interface_name_from_path,
    load_config,
    parse_config,
)
from actors.wireguard.crypto import public_key
from actors.wireguard.keys import decode_key, encode_key

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "wg0.conf.example"

# Fixed keys made with `wg genkey` / `wg genpsk` for these tests only.
PRIV = "yDVjElOQd6KrVL8c5UTGv3r4kd/AUpMZpA3zPyqf5l8="
PUB = encode_key(public_key(decode_key(PRIV)))
PEER1 = "LtO7fbV3rUI+Du1EW1lIMUTKMbq2LatujlvDyjfxLHc="
PEER2 = "IffYVqVpmJbxKflxBcqUZmQHtmAybhVCxivsp1fJrVM="
PSK = "RsKEDt4h5XiL5UTZkQwaKz5ypYvgoR6PNPcwhE2KOp8="
# A second private key, used as "a secret pasted in the wrong place".
SECRET = "QOUFzR3Hs+sTjlfj9xEVUQxfF9/73kQisLxIoRbisn8="
SECRET_PUB = encode_key(public_key(decode_key(SECRET)))

FULL = f"""\
# a full configuration
[Interface]
PrivateKey = {PRIV}
ListenPort = 51820
Address = 10.0.0.1/24, fd00::1/64
Address = 10.0.1.1
MTU = 1200
FwMark = 0x1234

[Peer]   # first peer
PublicKey = {PEER1}
PresharedKey = {PSK}
AllowedIPs = 10.0.0.2/32, fd00::2/128
AllowedIPs = 192.168.7.9/24
Endpoint = 192.0.2.1:51820
PersistentKeepalive = 25

[Peer]
PublicKey = {PEER2}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = [2001:db8::7]:4500
"""


class FakeResolver:
    """Answers from a table and records every lookup, so tests never touch DNS."""

    def __init__(self, table: dict[str, str] | None = None) -> None:
        self.table = table or {"vpn.example.com": "198.51.100.4"}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> tuple[str, int]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host], port


def interface(*lines: str) -> str:
    return "\n".join(["[Interface]", f"PrivateKey = {PRIV}", *lines]) + "\n"


def with_peer(*lines: str) -> str:
    return interface() + "\n".join(["[Peer]", f"PublicKey = {PEER1}", *lines]) + "\n"


def parse(text: str, path: str = "wg0.conf") -> InterfaceConfig:
    return parse_config(text, path, resolve=FakeResolver())


def parse_error(text: str, path: str = "wg0.conf") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, path)
    return info.value


# --- valid files -----------------------------------------------------------------------------


def test_full_file() -> None:
    cfg = parse(FULL)
    assert cfg.name == "wg0"
    assert cfg.private_key == decode_key(PRIV)
    assert cfg.public_key == decode_key(PUB)
    assert cfg.listen_port == 51820
    assert cfg.addresses == (
        ipaddress.ip_interface("10.0.0.1/24"),
        ipaddress.ip_interface("fd00::1/64"),
        ipaddress.ip_interface("10.0.1.1/32"),
    )
    assert cfg.mtu == 1200
    assert cfg.fwmark == 0x1234
    assert cfg.dns == ()
    assert cfg.warnings == ()
    first, second = cfg.peers
    assert first.public_key == decode_key(PEER1)
    assert first.preshared_key == decode_key(PSK)
    assert first.allowed_ips == (
        ipaddress.ip_network("10.0.0.2/32"),
        ipaddress.ip_network("fd00::2/128"),
        ipaddress.ip_network("192.168.7.0/24"),  # host bits masked, as wg does
    )
    assert first.endpoint == ("192.0.2.1", 51820)
    assert first.persistent_keepalive == 25
    assert second.public_key == decode_key(PEER2)
    assert second.preshared_key is None
    assert second.endpoint == ("2001:db8::7", 4500)  # no brackets
    assert second.persistent_keepalive == 0
    assert second.allowed_ips == (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def test_defaults() -> None:
    cfg = parse(interface())
    assert cfg.listen_port is None
    assert cfg.mtu == MAX_MTU == 1280
    assert cfg.fwmark == 0
    assert cfg.addresses == ()
    assert cfg.peers == ()
    assert cfg.warnings == ()


def test_listen_port_zero_means_random() -> None:
    assert parse(interface("ListenPort = 0")).listen_port is None
    assert parse(interface("ListenPort = 65535")).listen_port == 65535


def test_hostname_endpoint_resolved_with_given_resolver() -> None:
    resolver = FakeResolver({"vpn.example.com": "198.51.100.4"})
    cfg = parse_config(with_peer("Endpoint = vpn.example.com:51820"), "wg0.conf", resolve=resolver)
    assert cfg.peers[0].endpoint == ("198.51.100.4", 51820)
    assert resolver.calls == [("vpn.example.com", 51820)]


def test_literal_endpoints_are_not_resolved() -> None:
    resolver = FakeResolver({})
    text = with_peer("Endpoint = [fd00::1]:51820")
    assert parse_config(text, resolve=resolver).peers[0].endpoint == ("fd00::1", 51820)
    assert resolver.calls == []


def test_resolver_ipv6_answer_is_unbracketed() -> None:
    resolver = FakeResolver({"v6.example": "[2001:db8::1]"})
    cfg = parse_config(with_peer("Endpoint = v6.example:1"), resolve=resolver)
    assert cfg.peers[0].endpoint == ("2001:db8::1", 1)


def test_hosts_resolved_only_after_the_whole_file_parses() -> None:
    resolver = FakeResolver()
    text = with_peer("Endpoint = vpn.example.com:51820", "Bogus = 1")
    with pytest.raises(ConfigError):
        parse_config(text, resolve=resolver)
    assert resolver.calls == []


def test_case_insensitive_sections_and_keys() -> None:
    text = f"""\
[INTERFACE]
privatekey = {PRIV}
LISTENPORT = 1234
mtu = 1000
address = 10.1.0.1/16
[peer]
PUBLICKEY = {PEER1}
allowedips = 10.1.0.0/16
persistentkeepalive = OFF
endpoint = 192.0.2.9:9
"""
    cfg = parse(text)
    assert (cfg.listen_port, cfg.mtu) == (1234, 1000)
    assert cfg.peers[0].endpoint == ("192.0.2.9", 9)
    assert cfg.peers[0].persistent_keepalive == 0


def test_comments_blank_lines_whitespace_and_crlf() -> None:
    text = (
        "# leading comment\r\n"
        "\r\n"
        "  [Interface]   # trailing comment\r\n"
        f"\tPrivateKey={PRIV}# comment right after the key\r\n"
        "   ListenPort   =   7   \r\n"
        "#ListenPort = 8\r\n"
        "   # indented comment\r\n"
    )
    cfg = parse(text)
    assert cfg.listen_port == 7
    assert cfg.private_key == decode_key(PRIV)


def test_utf8_bom_is_accepted() -> None:
    assert parse("\ufeff" + interface()).private_key == decode_key(PRIV)


def test_fwmark_forms() -> None:
    assert parse(interface("FwMark = off")).fwmark == 0
    assert parse(interface("FwMark = OFF")).fwmark == 0
    assert parse(interface("FwMark = 51820")).fwmark == 51820
    assert parse(interface("FwMark = 0xffffffff")).fwmark == 0xFFFFFFFF


def test_mtu_limits() -> None:
    assert parse(interface("MTU = 1280")).mtu == 1280
    assert parse(interface("MTU = 576")).mtu == 576


@pytest.mark.parametrize("mtu", [1281, 1420, 9000, 65535])
def test_mtu_above_1280_is_lowered_with_one_warning(mtu: int) -> None:
    """wg-quick's usual MTU = 1420 must work as the file says: the interface runs at 1280."""
    cfg = parse(interface(f"MTU = {mtu}"))
    assert cfg.mtu == MAX_MTU == 1280
    mtu_warnings = [w for w in cfg.warnings if "MTU" in w]
    assert mtu_warnings == [
        f"wg0.conf:3: MTU {mtu} is above the 1280 bytes wgactors carries in a packet: "
        "the interface runs at MTU 1280"
    ]


def test_mtu_above_the_largest_ip_packet_refused() -> None:
    err = parse_error(interface("MTU = 65536"))
    assert (err.line, err.key) == (3, "MTU")
    assert "MTU 65536 is above 65535, the largest IP packet" in str(err)


def test_dns_and_wg_quick_only_keys_are_warned_about() -> None:
    text = interface(
        "DNS = 10.0.0.53, fd00::53",
        "DNS = corp.example",
        "Table = off",
        "PreUp = echo a",
        "PostUp = iptables -A FORWARD -i %i -j ACCEPT",
        "PreDown = echo c",
        "PostDown =",
        "SaveConfig = true",
    )
    cfg = parse(text)
    assert cfg.dns == ("10.0.0.53", "fd00::53", "corp.example")
    assert cfg.warnings[0] == "wg0.conf:3: DNS is ignored by wgactors (set it yourself)"
    assert [w.split(": ", 1)[0] for w in cfg.warnings] == [f"wg0.conf:{n}" for n in range(3, 11)]
    for warning, key in zip(
        cfg.warnings[2:],
        ["Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig"],
        strict=True,
    ):
        assert f": {key} is ignored by wgactors" in warning


def test_allowed_ips_empty_and_duplicates() -> None:
    assert parse(with_peer("AllowedIPs =")).peers[0].allowed_ips == ()
    cfg = parse(with_peer("AllowedIPs = 10.0.0.0/8, 10.1.2.3/8"))
    assert cfg.peers[0].allowed_ips == (ipaddress.ip_network("10.0.0.0/8"),)


def test_allowed_ip_shared_between_peers_warns() -> None:
    text = with_peer("AllowedIPs = 10.9.0.0/16") + (
        f"[Peer]\nPublicKey = {PEER2}\nAllowedIPs = 10.9.0.0/16\n"
    )
    cfg = parse(text)
    assert len(cfg.peers) == 2
    assert len(cfg.warnings) == 1
    assert "10.9.0.0/16" in cfg.warnings[0]


def test_repr_hides_private_key() -> None:
    cfg = parse(FULL)
    assert PRIV not in repr(cfg)
    assert repr(decode_key(PRIV)) not in repr(cfg)


def test_default_name_without_conf_path() -> None:
    assert parse_config(interface()).name == DEFAULT_NAME
    assert parse_config(interface(), "/etc/wireguard/office.conf").name == "office"


# --- errors: one per rule ----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, str, int | None, str | None]] = [
    # (id, text, line, key)
    ("empty file", "", None, None),
    ("no interface", f"[Peer]\nPublicKey = {PEER1}\n", None, None),
    ("line outside section", f"ListenPort = 1\n{interface()}", 1, "ListenPort"),
    ("unknown section", interface("[Foo]"), 3, None),
    ("malformed header", interface("[Peer"), 3, None),
    ("header with junk", interface("[Peer] x"), 3, None),
    ("spaced header", interface("[ Peer ]"), 3, None),
    ("no equals sign", interface("ListenPort 51820"), 3, None),
    ("no key", interface("= 5"), 3, None),
    ("unknown key", interface("Frobnicate = 1"), 3, "Frobnicate"),
    ("peer key in interface", interface(f"PublicKey = {PEER1}"), 3, "PublicKey"),
    ("interface key in peer", with_peer("ListenPort = 1"), 5, "ListenPort"),
    ("second interface", interface() + interface(), 3, None),
    ("repeated PrivateKey", interface(f"PrivateKey = {PRIV}"), 3, "PrivateKey"),
    ("repeated ListenPort", interface("ListenPort = 1", "listenport = 2"), 4, "ListenPort"),
    ("repeated MTU", interface("MTU = 1280", "MTU = 1280"), 4, "MTU"),
    ("repeated FwMark", interface("FwMark = 1", "FwMark = 1"), 4, "FwMark"),
    ("repeated Table", interface("Table = off", "Table = off"), 4, "Table"),
    ("repeated SaveConfig", interface("SaveConfig = 1", "SaveConfig = 1"), 4, "SaveConfig"),
    ("repeated PublicKey", with_peer(f"PublicKey = {PEER2}"), 5, "PublicKey"),
    ("repeated Endpoint", with_peer("Endpoint = 1.2.3.4:1", "Endpoint = 1.2.3.4:2"), 6, "Endpoint"),
    (
        "repeated PresharedKey",
        with_peer(f"PresharedKey = {PSK}") + f"PresharedKey={PSK}\n",
        6,
        "PresharedKey",
    ),
    (
        "repeated keepalive",
        with_peer("PersistentKeepalive=1", "PersistentKeepalive=1"),
        6,
        "PersistentKeepalive",
    ),
    ("missing PrivateKey", "[Interface]\nListenPort = 1\n", 1, "PrivateKey"),
    ("missing PublicKey", interface("[Peer]", "AllowedIPs = 10.0.0.0/8"), 3, "PublicKey"),
    (
        "missing PublicKey mid-file",
        interface("[Peer]") + f"[Peer]\nPublicKey={PEER1}\n",
        3,
        "PublicKey",
    ),
    ("empty value", interface("ListenPort ="), 3, "ListenPort"),
    ("bad PrivateKey", "[Interface]\nPrivateKey = abc\n", 2, "PrivateKey"),
    ("zero PrivateKey", f"[Interface]\nPrivateKey = {encode_key(bytes(32))}\n", 2, "PrivateKey"),
    ("non-canonical key", f"[Interface]\nPrivateKey = {PRIV[:42]}9=\n", 2, "PrivateKey"),
    ("ListenPort too big", interface("ListenPort = 65536"), 3, "ListenPort"),
    ("ListenPort negative", interface("ListenPort = -1"), 3, "ListenPort"),
    ("ListenPort service name", interface("ListenPort = wireguard"), 3, "ListenPort"),
    ("ListenPort underscore", interface("ListenPort = 5_1"), 3, "ListenPort"),
    ("ListenPort unicode digits", interface("ListenPort = \u0665\u0661"), 3, "ListenPort"),
    ("Address garbage", interface("Address = nope"), 3, "Address"),
    ("Address prefix too long", interface("Address = 10.0.0.1/33"), 3, "Address"),
    ("Address v6 prefix too long", interface("Address = fd00::1/129"), 3, "Address"),
    ("Address netmask form", interface("Address = 10.0.0.1/255.0.0.0"), 3, "Address"),
    ("Address empty item", interface("Address = 10.0.0.1/24,"), 3, "Address"),
    (
        "Address duplicate",
        interface("Address = 10.0.0.1/24", "Address = 10.0.0.1/24"),
        4,
        "Address",
    ),
    ("Address scoped", interface("Address = fe80::1%eth0/64"), 3, "Address"),
    ("MTU not a number", interface("MTU = big"), 3, "MTU"),
    ("MTU too small", interface("MTU = 575"), 3, "MTU"),
    ("MTU huge", interface("MTU = 99999999999999999999999"), 3, "MTU"),
    ("DNS garbage", interface("DNS = not a name"), 3, "DNS"),
    ("FwMark garbage", interface("FwMark = on"), 3, "FwMark"),
    ("FwMark too big", interface("FwMark = 4294967296"), 3, "FwMark"),
    ("FwMark hex too big", interface("FwMark = 0x100000000"), 3, "FwMark"),
    ("FwMark upper 0X", interface("FwMark = 0X10"), 3, "FwMark"),
    ("bad PublicKey", interface("[Peer]", "PublicKey = x"), 4, "PublicKey"),
    ("bad PublicKey first", interface("[Peer]", "PublicKey = short="), 4, "PublicKey"),
    ("bad PresharedKey", with_peer("PresharedKey = 1234"), 5, "PresharedKey"),
    ("AllowedIPs garbage", with_peer("AllowedIPs = 10.0.0.0/8, bogus"), 5, "AllowedIPs"),
    ("AllowedIPs prefix too long", with_peer("AllowedIPs = ::/200"), 5, "AllowedIPs"),
    ("AllowedIPs empty item", with_peer("AllowedIPs = 10.0.0.0/8,,::/0"), 5, "AllowedIPs"),
    ("Endpoint no port", with_peer("Endpoint = 192.0.2.1"), 5, "Endpoint"),
    ("Endpoint port zero", with_peer("Endpoint = 192.0.2.1:0"), 5, "Endpoint"),
    ("Endpoint port too big", with_peer("Endpoint = 192.0.2.1:65536"), 5, "Endpoint"),
    ("Endpoint service port", with_peer("Endpoint = 192.0.2.1:wg"), 5, "Endpoint"),
    ("Endpoint v6 no brackets", with_peer("Endpoint = fd00::1:51820"), 5, "Endpoint"),
    ("Endpoint unclosed bracket", with_peer("Endpoint = [fd00::1:51820"), 5, "Endpoint"),
    ("Endpoint v4 in brackets", with_peer("Endpoint = [192.0.2.1]:1"), 5, "Endpoint"),
    ("Endpoint bracket no port", with_peer("Endpoint = [fd00::1]"), 5, "Endpoint"),
    ("Endpoint no host", with_peer("Endpoint = :51820"), 5, "Endpoint"),
    ("Endpoint bad host", with_peer("Endpoint = under_score.example:1"), 5, "Endpoint"),
    ("Endpoint numeric shorthand", with_peer("Endpoint = 10.1:1"), 5, "Endpoint"),
    ("Endpoint unresolvable", with_peer("Endpoint = nxdomain.example:1"), 5, "Endpoint"),
    ("keepalive too big", with_peer("PersistentKeepalive = 65536"), 5, "PersistentKeepalive"),
    ("keepalive garbage", with_peer("PersistentKeepalive = sometimes"), 5, "PersistentKeepalive"),
    ("duplicate peer", with_peer() + f"[Peer]\nPublicKey = {PEER1}\n", 6, "PublicKey"),
    ("peer is ourselves", interface("[Peer]", f"PublicKey = {PUB}"), 4, "PublicKey"),
]


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_error_names_file_line_and_key(text: str, line: int | None, key: str | None) -> None:
    err = parse_error(text, "/etc/wireguard/wg0.conf")
    assert (err.line, err.key) == (line, key)
    assert err.path == "/etc/wireguard/wg0.conf"
    where = "/etc/wireguard/wg0.conf" if line is None else f"/etc/wireguard/wg0.conf:{line}"
    assert str(err).startswith(where + ": ")
    if key is not None:
        assert str(err).startswith(f"{where}: {key}: ")
    assert err.message and "\n" not in str(err)
    # nothing chained whose message might quote the input
    assert err.__cause__ is None
    assert err.__context__ is None


def test_public_key_error_reads_like_the_spec() -> None:
    err = parse_error(interface("[Peer]", "PublicKey = nope"))
    assert str(err) == "wg0.conf:4: PublicKey: a key is 44 base64 characters"


def test_config_error_pickles_with_its_fields() -> None:
    err = ConfigError("boom", "a.conf", 3, "MTU")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.line, copy.key, copy.message) == ("a.conf", 3, "MTU", "boom")
    assert str(copy) == "a.conf:3: MTU: boom"
    assert isinstance(copy, ValueError)


def test_resolver_failures_of_any_kind_are_config_errors() -> None:
    def broken(host: str, port: int) -> tuple[str, int]:
        raise RuntimeError("resolver bug")

    def garbage(host: str, port: int) -> tuple[str, int]:
        return ("not an ip", port)

    for resolver in (broken, garbage):
        with pytest.raises(ConfigError) as info:
            parse_config(
                with_peer("Endpoint = vpn.example.com:51820"), "wg0.conf", resolve=resolver
            )
        assert (info.value.line, info.value.key) == (5, "Endpoint")
        assert "vpn.example.com" in str(info.value)


def test_default_resolver_failure_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> list[tuple[object, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ConfigError) as info:
        parse_config(with_peer("Endpoint = vpn.example.com:51820"), "wg0.conf")
    assert (info.value.line, info.value.key) == (5, "Endpoint")
    assert "Name or service not known" in str(info.value)


# --- secrets never appear in errors --------------------------------------------------------------

SECRET_PLACES = [
    interface(f"ListenPort = {SECRET}"),
    interface(f"Address = {SECRET}"),
    interface(f"Address = 10.0.0.1/24, {SECRET}"),
    interface(f"MTU = {SECRET}"),
    interface(f"FwMark = {SECRET}"),
    interface(f"DNS = {SECRET}"),
    interface(f"PrivateKey = {SECRET}"),  # repeated key
    interface(f"PresharedKey = {SECRET}"),  # wrong section
    interface(SECRET),  # a bare line
    interface(f"{SECRET} = 1"),
    interface(f"{SECRET[:-1]} = 1"),
    interface(f"{SECRET[:20]} = 1"),
    interface(f"[{SECRET}]"),
    f"{SECRET}\n[Interface]\nPrivateKey = {PRIV}\n",
    f"PrivateKey = {SECRET}\n",  # outside a section
    f"[Interface]\nPrivateKey = {SECRET[:-1]}\n",  # unpadded
    f"[Interface]\nPrivateKey = {SECRET}x\n",
    f"[Interface]\nPrivateKey = {SECRET} {SECRET}\n",
    f"[Interface]\nPrivateKey = {SECRET}\nPrivateKey = {SECRET}\n",
    f"[Interface]\nPrivateKey = {SECRET}\n[Peer]\nPublicKey = {SECRET_PUB}\n",
    with_peer(f"PrivateKey = {SECRET}"),
    with_peer(f"PresharedKey = {SECRET}x"),
    with_peer(f"PresharedKey = {SECRET[:-1]}"),
    with_peer(f"PresharedKey = {SECRET}", f"PresharedKey = {SECRET}"),
    with_peer(f"AllowedIPs = {SECRET}"),
    with_peer(f"AllowedIPs = {SECRET}/32"),
    with_peer(f"Endpoint = {SECRET}"),
    with_peer(f"Endpoint = {SECRET}:51820"),
    with_peer(f"Endpoint = {SECRET[:-1]}:51820"),
    with_peer(f"Endpoint = [{SECRET}]:51820"),
    with_peer(f"PersistentKeepalive = {SECRET}"),
    with_peer(f"{SECRET}"),
]


def _leaks(message: str) -> bool:
    """Any recognisable part of SECRET: the text, or a 12-character run of it."""
    return any(SECRET[i : i + 12] in message for i in range(len(SECRET) - 12))


@pytest.mark.parametrize("text", SECRET_PLACES, ids=range(len(SECRET_PLACES)))
def test_secret_never_in_error_message(text: str) -> None:
    err = parse_error(text)
    assert not _leaks(str(err))
    assert not _leaks(repr(err))
    assert not any(_leaks(str(arg)) for arg in err.args)
    assert err.__context__ is None and err.__cause__ is None


# --- interface names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/etc/wireguard/wg0.conf", "wg0"),
        ("wg0.conf", "wg0"),
        (Path("rel/dir/office-vpn.conf"), "office-vpn"),
        ("a.b_c=d+e-f.conf", "a.b_c=d+e-f"),
        ("x" * 15 + ".conf", "x" * 15),
    ],
)
def test_interface_name_from_path(path: str | Path, name: str) -> None:
    assert interface_name_from_path(path) == name


@pytest.mark.parametrize(
    "path",
    [
        "wg0",
        "wg0.conf.example",
        ".conf",
        "/etc/wireguard/.conf",
        "x" * 16 + ".conf",
        "my tunnel.conf",
        "wg/0.conf.d",
        "wgé.conf",
        "..conf",
        "...conf",
        "wg0.CONF",
    ],
)
def test_bad_interface_names(path: str) -> None:
    with pytest.raises(ConfigError) as info:
        interface_name_from_path(path)
    assert str(info.value).startswith(path + ": ")


def test_parse_config_checks_conf_path_names() -> None:
    with pytest.raises(ConfigError):
        parse_config(interface(), "/tmp/this-name-is-too-long.conf")


# --- files -----------------------------------------------------------------------------------


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "wgtest.conf"
    path.write_text(FULL.replace("192.0.2.1:51820", "[fd00::9]:51820"))
    cfg = load_config(path)
    assert cfg.name == "wgtest"
    assert cfg.peers[0].endpoint == ("fd00::9", 51820)


def test_load_config_errors_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "wg1.conf"
    path.write_text(interface("MTU = 99999"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:3: MTU: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line is None
    assert "No such file or directory" in str(info.value)
    assert str(info.value).startswith(str(path))


def test_directory_and_fifo_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "wg0.conf").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path / "wg0.conf")
    os.mkfifo(tmp_path / "wg1.conf")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path / "wg1.conf")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text(interface())

    def denied(*args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    # chmod 000 would not stop root, so make the open itself fail
    monkeypatch.setattr(config_module, "open", denied, raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read: Permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    path.write_bytes(interface().encode() + b"# \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_too_large(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    path.write_bytes(interface().encode() + b"#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)
    with pytest.raises(ConfigError, match="larger than"):
        parse_config("#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        parse_config("\u00e9" * (MAX_CONFIG_BYTES // 2 + 1))  # 2 bytes each in UTF-8


def test_permissions(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text(interface())
    path.chmod(0o600)
    assert check_permissions(path) is None
    path.chmod(0o644)
    warning = check_permissions(path)
    assert warning is not None
    assert str(path) in warning and "0644" in warning
    path.chmod(0o620)
    assert check_permissions(path) is not None
    path.chmod(0o400)
    assert check_permissions(path) is None
    assert check_permissions(tmp_path / "missing.conf") is None


def test_example_config_parses(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    shutil.copy(EXAMPLE, path)
    cfg = load_config(path)
    assert cfg.name == "wg0"
    assert cfg.mtu == 1280
    assert len(cfg.peers) == 2
    assert cfg.warnings == ()
    assert all(peer.allowed_ips for peer in cfg.peers)


def test_example_pipeline_is_valid_toml() -> None:
    import tomllib

    data = tomllib.loads((EXAMPLE.parent / "pipeline.toml.example").read_text())
    assert data["inbound"][0]["use"] == "actors.contrib.firewall:Firewall"


# --- property: nothing but ConfigError, and never the secret ------------------------------------

_VOCAB_LINES = st.sampled_from(
    [
        "[Interface]",
        "[Peer]",
        "[interface]",
        "[PEER]",
        "[Other]",
        "[",
        "]",
        "[]",
        "",
        "#",
        f"PrivateKey = {PRIV}",
        f"PrivateKey = {SECRET}",
        f"PublicKey = {PEER1}",
        f"PublicKey = {PEER2}",
        f"PublicKey = {PUB}",
        f"PresharedKey = {PSK}",
        "ListenPort = 51820",
        "MTU = 1280",
        "MTU = 1420",
        "AllowedIPs = 10.0.0.0/8, ::/0",
        "Endpoint = vpn.example.com:51820",
        "Endpoint = nxdomain.example:1",
        "Endpoint = [fd00::1]:1",
        "PersistentKeepalive = off",
        "DNS = 1.1.1.1",
        "PostUp = true",
    ]
)
_KEYS = st.sampled_from(
    [
        "PrivateKey",
        "PublicKey",
        "PresharedKey",
        "ListenPort",
        "FwMark",
        "Address",
        "MTU",
        "DNS",
        "Table",
        "PostUp",
        "SaveConfig",
        "AllowedIPs",
        "Endpoint",
        "PersistentKeepalive",
        "privatekey",
        "Bogus",
        "",
    ]
)
_VALUES = st.one_of(
    st.sampled_from(
        [
            PRIV,
            SECRET,
            PUB,
            "0",
            "65535",
            "65536",
            "off",
            "0x10",
            "10.0.0.1/24",
            "fd00::1/64",
            "10.0.0.1/99",
            "[fd00::1]:5",
            "1.2.3.4:5",
            "vpn.example.com:5",
            "[",
            "]:",
            ",",
            "=",
            "#",
            "%",
        ]
    ),
    st.text(max_size=30),
)
_KEY_LINES = st.builds(
    lambda k, eq, v, junk: f"{k}{eq}{v}{junk}",
    _KEYS,
    st.sampled_from(["=", " = ", "==", "", " "]),
    _VALUES,
    st.sampled_from(["", " # c", "\r", "\t", ","]),
)
_LINES = st.one_of(_VOCAB_LINES, _KEY_LINES, st.text(max_size=40))


def _check_random(text: str, path: str) -> None:
    resolver = FakeResolver()
    try:
        cfg = parse_config(text, path, resolve=resolver)
    except ConfigError as err:
        assert isinstance(err.line, int | None) and isinstance(err.key, str | None)
        assert not _leaks(str(err))
        assert err.__context__ is None or isinstance(err.__context__, ConfigError)
    else:
        assert all(not _leaks(w) for w in cfg.warnings)
        assert cfg.mtu <= MAX_MTU


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=25), st.sampled_from(["wg0.conf", "<string>", "x/y.conf"]))
def test_random_lines_raise_only_config_error(lines: list[str], path: str) -> None:
    _check_random("\n".join(lines), path)


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_random_text_raises_only_config_error(text: str) -> None:
    _check_random(text, "wg0.conf")

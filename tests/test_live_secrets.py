"""Secrets stay secret: keys never appear in logs or `status`; config files are checked."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from netns import WgPeer, WireguardGo, gen_keypair, gen_psk
from wgactors_proc import LAUNCHER, Wgactors, write_conf

pytestmark = pytest.mark.netns

A4, B4 = "10.99.0.1", "10.99.0.2"


def forms(key_b64: str) -> list[str]:
    """A key as base64 and as hex (UAPI), and a distinctive slice of each."""
    raw = base64.b64decode(key_b64)
    return [key_b64, key_b64[:20], raw.hex(), raw.hex()[:24]]


def test_keys_never_logged_even_at_debug(netns_pair, tmp_path: Path) -> None:
    ours, our_pub = gen_keypair()
    theirs, _ = gen_keypair()
    psk = gen_psk()
    log = tmp_path / "daemon.log"
    with WireguardGo(
        netns_pair.b,
        theirs,
        listen_port=51820,
        addresses=[f"{B4}/24"],
        peers=[WgPeer(our_pub, [f"{A4}/32"], preshared_key=psk)],
    ) as wggo:
        env = {"WGACTORS_LOG_FILE": str(log), "WGACTORS_LOG_LEVEL": "TRACE"}
        result = netns_pair.a.run(str(LAUNCHER), "wgk0", env_extra=env)
        assert result.returncode == 0, result.stderr
        try:
            (tmp_path / "k").write_text(ours + "\n")
            (tmp_path / "p").write_text(psk + "\n")
            netns_pair.a.run(
                "wg", "set", "wgk0", "private-key", str(tmp_path / "k"), "peer",
                wggo.public_key, "preshared-key", str(tmp_path / "p"),
                "allowed-ips", f"{B4}/32", "endpoint", f"{netns_pair.addr_b4}:51820",
            )  # fmt: skip
            netns_pair.a.ip("addr", "add", f"{A4}/24", "dev", "wgk0")
            netns_pair.a.ip("link", "set", "wgk0", "up")
            ping = netns_pair.a.run("ping", "-c", "2", "-W", "2", B4, check=False)
            assert ping.returncode == 0
            # a bad request that carries a key, to exercise the error path too
            netns_pair.a.run("wg", "set", "wgk0", "listen-port", "99999999", check=False)
            status = netns_pair.a.run(str(LAUNCHER), "status", "wgk0").stdout
            status_json = netns_pair.a.run(str(LAUNCHER), "status", "wgk0", "--json").stdout
            showconf = netns_pair.a.run("wg", "showconf", "wgk0").stdout
        finally:
            netns_pair.a.ip("link", "del", "wgk0", check=False)
        deadline = time.monotonic() + 10
        while "wgk0 down" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    text = log.read_text()
    assert "handshake" in text and "wgk0 down" in text  # the log did record the session
    for secret in forms(ours) + forms(psk):
        assert secret not in text, "a key reached the log"
        assert secret not in status and secret not in status_json, "a key reached status"
    assert ours in showconf  # `wg showconf` is root's business, as with wireguard-go


def test_world_readable_config_is_warned_about(netns_pair, tmp_path: Path) -> None:
    ours, _ = gen_keypair()
    _, peer = gen_keypair()
    conf = write_conf(
        tmp_path, "wgk1", {"PrivateKey": ours}, [{"PublicKey": peer, "AllowedIPs": f"{B4}/32"}]
    )
    os.chmod(conf, 0o644)
    with Wgactors(netns_pair.a, conf) as daemon:
        assert daemon.terminate() == 0
    log = daemon.log()
    assert "readable" in log and str(conf) in log
    assert ours not in log

"""The reload's pure parts: what `wg syncconf` would send, and which entries keep their
instance. The live swap is tested in test_live_trusted.py."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from netns import gen_keypair

from actors.config import parse_config
from actors.pipeline_file import parse_pipeline, same_entry
from actors.reload import ZERO_KEY, sync_request
from actors.uapi import PeerChange, SetRequest
from actors.wireguard.device import PeerState
from actors.wireguard.keys import decode_key


def conf(priv: str, *peers: tuple[str, str, str | None]) -> str:
    text = f"[Interface]\nPrivateKey = {priv}\n"
    for pub, ips, endpoint in peers:
        text += f"\n[Peer]\nPublicKey = {pub}\nAllowedIPs = {ips}\n"
        if endpoint:
            text += f"Endpoint = {endpoint}\n"
    return text


def state(pub: str, ips: str, endpoint: tuple[str, int] | None = None) -> PeerState:
    return PeerState(
        decode_key(pub),
        None,
        endpoint,
        123,
        1,
        1,
        0,
        tuple(ipaddress.ip_network(n.strip()) for n in ips.split(",")),
    )


def test_an_unchanged_file_sends_nothing() -> None:
    priv, _ = gen_keypair()
    _, p1 = gen_keypair()
    config = parse_config(conf(priv, (p1, "10.0.0.2/32", "192.0.2.1:51820")))
    request, summary = sync_request(
        config, config.private_key, [state(p1, "10.0.0.2/32", ("192.0.2.1", 51820))]
    )
    assert request == SetRequest() and summary == []


def test_only_differences_are_sent_and_gone_peers_removed() -> None:
    priv, _ = gen_keypair()
    _, kept = gen_keypair()
    _, changed = gen_keypair()
    _, gone = gen_keypair()
    _, new = gen_keypair()
    config = parse_config(
        conf(priv, (kept, "10.0.0.2/32", None), (changed, "10.0.0.3/32, 10.1.0.0/16", None),
             (new, "10.0.0.9/32", "192.0.2.9:1"))
    )  # fmt: skip
    current = [
        state(kept, "10.0.0.2/32"),
        state(changed, "10.0.0.3/32"),
        state(gone, "10.0.0.4/32"),
    ]
    request, summary = sync_request(config, config.private_key, current)
    by_key = {p.public_key: p for p in request.peers}
    assert decode_key(kept) not in by_key  # untouched: its session carries on
    assert by_key[decode_key(changed)] == PeerChange(
        decode_key(changed),
        update_only=True,
        replace_allowed_ips=True,
        allowed_ips=config.peers[1].allowed_ips,
    )
    assert by_key[decode_key(gone)].remove
    added = by_key[decode_key(new)]
    assert added.endpoint == ("192.0.2.9", 1) and added.preshared_key == ZERO_KEY
    assert summary == ["+1", "-1", "~1"]
    assert request.private_key is None


def test_a_new_private_key_is_sent() -> None:
    priv, _ = gen_keypair()
    config = parse_config(conf(priv))
    request, summary = sync_request(config, bytes(32), [])
    assert request.private_key == config.private_key and summary == ["new private key"]


def test_entries_that_differ_in_anything_get_a_new_instance() -> None:
    text = '[[inbound]]\nuse = "custom_stages:DropUdpPort"\noptions = { port = 53 }\n'
    (a,), _ = parse_pipeline(text)
    (b,), _ = parse_pipeline(text)
    assert same_entry(a, b)
    assert not same_entry(a, replace(b, options={"port": 54}))
    assert not same_entry(a, replace(b, on_error="restart"))
    assert not same_entry(a, replace(b, capacity=10))

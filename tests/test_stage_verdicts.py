"""Verdicts (issue 23 item 1): pass, replace, drop with a reason of the stage's own, and
consumed (answered or absorbed: not a drop), counted the same way by every host."""

from __future__ import annotations

import base64

import pytest
from ability_stages import AnswerPings

from actors import CONSUMED, Drop, Packet, Stage, build
from actors.contrib.dnsfilter import DnsFilter
from actors.stage import Verdict
from actors.testing import run

PEER = bytes(range(32))


def echo_request(seq: int) -> Packet:
    ping = build.icmp("10.0.0.2", "10.0.0.1", 8, 0, b"\x00\x07" + seq.to_bytes(2, "big") + b"hi")
    return Packet(ping.data, PEER)


def test_answered_pings_are_consumed_not_dropped() -> None:
    options = {"address": "10.0.0.1", "peer": base64.b64encode(PEER).decode()}
    result = run((AnswerPings, options), [echo_request(i) for i in range(11)])
    stats = result.stats["answerpings"]
    assert len(result.replies) == 11 and result.passed == []
    assert stats["consumed"] == 11 and stats["drops"] == {} and result.drops == {}


def test_dnsfilter_answers_are_consumed() -> None:
    query = bytes.fromhex("123401000001000000000000") + b"\x03ads\x07example\x00\x00\x01\x00\x01"
    packet = build.udp("10.0.0.1", "10.0.0.53", 40000, 53, query)
    result = run(DnsFilter, [packet] * 3, block=["ads.example"])
    assert len(result.replies) == 3 and result.drops == {}
    assert result.stats["dnsfilter"]["consumed"] == 3


class Judge(Stage):
    """A verdict chosen by the payload's first byte."""

    def process(self, packet: Packet) -> Verdict:
        kind = (packet.payload or b"?")[:1]
        if kind == b"p":
            return packet
        if kind == b"r":
            return packet.replace(dst_port=9)
        if kind == b"n":
            return None
        if kind == b"d":
            return Drop("not_today")
        if kind == b"c":
            return CONSUMED
        if kind == b"2":
            return (packet, packet)
        return "garbage"  # type: ignore[return-value]


def udp(payload: bytes) -> Packet:
    return build.udp("10.0.0.1", "10.0.0.2", 1, 2, payload)


def test_each_verdict_is_counted_by_what_it_means() -> None:
    packets = [udp(b"p"), udp(b"r"), udp(b"n"), udp(b"d"), udp(b"d"), udp(b"c"), udp(b"2")]
    packets.append(udp(b"?"))
    result = run(Judge, packets)
    assert [(p.payload, p.dst_port) for p in result.passed] == [
        (b"p", 2),
        (b"r", 9),
        (b"2", 2),
        (b"2", 2),
    ]
    assert result.drops == {"dropped": 1, "not_today": 2, "stage_error": 1}
    stats = result.stats["judge"]
    assert stats["consumed"] == 1 and stats["packets_in"] == 8 and stats["packets_out"] == 4
    assert "garbage" not in repr(result.errors) and "Judge.process returned str" in str(
        result.errors[0]
    )


def test_a_drop_reason_is_a_short_string() -> None:
    with pytest.raises(ValueError, match="drop reason"):
        Drop("")
    with pytest.raises(ValueError, match="drop reason"):
        Drop("x" * 65)
    assert repr(CONSUMED) == "CONSUMED"

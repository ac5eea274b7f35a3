"""What a stage can do besides pass or drop: know the peer, answer back, build packets, be
tested in-process, and be found by path or by name (issue 15)."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from wgsim import A_TUN4, B_TUN4, Sim, udp4

from actors import Packet, PacketError, Stage, build
from actors.catalog import StageLookupError, available, resolve
from actors.checksum import internet_checksum, pseudo_header_sum
from actors.contrib.dnsfilter import DnsFilter, parse_query
from actors.contrib.firewall import Firewall
from actors.contrib.flowstats import FlowStats
from actors.contrib.pcap import PcapWriter
from actors.pipeline_file import dropin_pipeline, parse_pipeline
from actors.testing import StageRunner, run

ROOT = Path(__file__).resolve().parent.parent
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))

# --- the Internet checksum ----------------------------------------------------------------


def slow_checksum(data: bytes) -> int:
    """RFC 1071 word by word, as the reference."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@pytest.mark.parametrize(
    "data",
    [b"", b"\0", b"\0\0\0\0", b"\xff\xff", b"\xff\xff" * 7, b"\x00\x01\xff\xfe", b"\x12", b"ab"],
)
def test_checksum_edge_cases_match_rfc1071(data: bytes) -> None:
    assert internet_checksum(data) == slow_checksum(data)


def test_checksum_matches_rfc1071_on_random_data() -> None:
    import random

    rng = random.Random(15)
    for n in range(0, 1300, 7):
        data = rng.randbytes(n)
        assert internet_checksum(data) == slow_checksum(data)


def valid(packet: Packet) -> bool:
    """Every checksum of ``packet`` verifies (IPv4 header; TCP/UDP/ICMP/ICMPv6)."""
    data = packet.data
    offset = packet.transport_offset
    assert offset is not None
    if packet.version == 4 and internet_checksum(data[:offset]) != 0:
        return False
    segment = data[offset:]
    proto = packet.protocol
    initial = (
        0
        if proto == 1
        else pseudo_header_sum(packet.src_bytes, packet.dst_bytes, proto, len(segment))
    )
    return internet_checksum(segment, initial) == 0


# --- building and editing -----------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
def test_built_packets_have_valid_checksums(src: str, dst: str) -> None:
    u = build.udp(src, dst, 1234, 53, b"hello")
    assert (u.src_port, u.dst_port, u.payload, u.ttl) == (1234, 53, b"hello", 64)
    t = build.tcp(src, dst, 1, 2, seq=7, flags=build.TCP_SYN, payload=b"x")
    assert t.tcp_flags == build.TCP_SYN and t.payload == b"x"
    i = build.icmp(src, dst, 8 if u.version == 4 else 128, 0, b"\0\1\0\2data")
    for packet in (u, t, i):
        assert valid(packet), packet
        assert str(packet.src) == src and str(packet.dst) == dst


def test_build_refuses_mixed_families_and_oversize() -> None:
    with pytest.raises(PacketError, match="different IP families"):
        build.udp("10.0.0.1", "fd00::1", 1, 2)
    with pytest.raises(PacketError, match="exceeds"):
        build.udp("10.0.0.1", "10.0.0.2", 1, 2, bytes(1300))
    with pytest.raises(PacketError):
        build.udp("not an address", "10.0.0.2", 1, 2)


@pytest.mark.parametrize(("src", "dst"), [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
def test_replace_fixes_every_checksum(src: str, dst: str) -> None:
    new_dst = "10.9.9.9" if ":" not in dst else "fd00::99"
    for packet in (
        build.udp(src, dst, 1, 2, b"abc"),
        build.tcp(src, dst, 1, 2, payload=b"abc"),
    ):
        edited = packet.replace(dst=new_dst, src_port=1000, dst_port=2000, ttl=5)
        assert (str(edited.dst), edited.src_port, edited.dst_port, edited.ttl) == (
            new_dst,
            1000,
            2000,
            5,
        )
        assert valid(edited) and edited.payload == b"abc"
    ping = build.icmp(src, dst, 8 if ":" not in src else 128, 0, b"\0\1\0\1")
    assert valid(ping.replace(dst=new_dst, ttl=1))
    with pytest.raises(PacketError, match="no ports"):
        ping.replace(dst_port=1)
    with pytest.raises(PacketError, match="is not IPv"):
        ping.replace(src="10.0.0.1" if ":" in src else "fd00::1")


def test_replace_refuses_to_edit_a_fragment_transport() -> None:
    data = bytearray(build.udp("10.0.0.1", "10.0.0.2", 1, 2, b"abcdefgh").data)
    data[6] |= 0x20  # more fragments
    data[10:12] = b"\0\0"
    data[10:12] = internet_checksum(bytes(data[:20])).to_bytes(2, "big")
    fragment = Packet(bytes(data))
    assert fragment.replace(ttl=3).ttl == 3
    with pytest.raises(PacketError, match="fragment"):
        fragment.replace(dst="10.0.0.3")


def test_a_zero_ipv4_udp_checksum_stays_zero() -> None:
    data = bytearray(build.udp("10.0.0.1", "10.0.0.2", 1, 2, b"x").data)
    data[26:28] = b"\0\0"  # "no checksum"
    edited = Packet(bytes(data)).replace(dst_port=9)
    assert edited.data[26:28] == b"\0\0" and edited.dst_port == 9


def test_answers() -> None:
    syn = build.tcp("10.0.0.1", "10.0.0.2", 40000, 80, seq=1000, flags=build.TCP_SYN)
    rst = build.tcp_reset(syn)
    assert rst is not None and valid(rst)
    assert (str(rst.src), rst.src_port, rst.dst_port) == ("10.0.0.2", 80, 40000)
    assert rst.tcp_flags == build.TCP_RST | build.TCP_ACK
    assert struct.unpack_from("!II", rst.data, 24) == (0, 1001)  # seq 0, ack = SYN's seq + 1
    ack = build.tcp("fd00::1", "fd00::2", 1, 2, seq=5, ack=77, flags=build.TCP_ACK)
    rst6 = build.tcp_reset(ack)
    assert rst6 is not None and rst6.tcp_flags == build.TCP_RST and valid(rst6)
    assert struct.unpack_from("!I", rst6.data, 44) == (77,)
    assert build.tcp_reset(rst6) is None  # never answer a reset

    dgram = build.udp("10.0.0.1", "10.0.0.2", 5, 6, b"q")
    unreach = build.port_unreachable(dgram)
    assert unreach is not None and valid(unreach)
    assert (unreach.icmp_type, unreach.icmp_code, str(unreach.dst)) == (3, 3, "10.0.0.1")
    assert unreach.payload == dgram.data  # the whole small datagram is quoted
    assert build.port_unreachable(unreach) is None  # never about an ICMP error
    assert build.port_unreachable(build.udp("10.0.0.1", "224.0.0.9", 5, 6)) is None
    dgram6 = build.udp("fd00::1", "fd00::2", 5, 6, b"q")
    unreach6 = build.port_unreachable(dgram6)
    assert unreach6 is not None and (unreach6.icmp_type, unreach6.icmp_code) == (1, 4)
    assert valid(unreach6) and build.port_unreachable(unreach6) is None

    for src, dst, kind, answer in (
        ("10.0.0.1", "10.0.0.2", 8, 0),
        ("fd00::1", "fd00::2", 128, 129),
    ):
        request = build.icmp(src, dst, kind, 0, b"\x12\x34\x00\x07payload")
        reply = build.echo_reply(request)
        assert reply is not None and valid(reply)
        assert (reply.icmp_type, str(reply.dst), reply.payload) == (answer, src, b"payload")
        assert reply.data[-11:-7] == b"\x12\x34\x00\x07"
        assert build.echo_reply(reply) is None


# --- the peer on a packet -----------------------------------------------------------------


def test_packet_peer_is_optional_immutable_metadata() -> None:
    data = build.udp("10.0.0.1", "10.0.0.2", 1, 2).data
    plain, tagged = Packet(data), Packet(data, KEY_A)
    assert plain.peer is None and tagged.peer == KEY_A
    assert plain == tagged  # equality is about the bytes
    assert pickle.loads(pickle.dumps(tagged)).peer == KEY_A
    with pytest.raises(AttributeError):
        tagged.peer = KEY_B  # type: ignore[misc]
    with pytest.raises(TypeError, match="32-byte"):
        Packet(data, b"short")
    assert Packet.from_padded(data + bytes(12), KEY_B).peer == KEY_B


def test_the_core_delivers_packets_with_the_sending_peer() -> None:
    sim = Sim()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"one"))
    sim.flush()
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"two"))
    sim.flush()
    assert [p.peer for p in sim.b.delivered] == [sim.a.public]
    assert [p.peer for p in sim.a.delivered] == [sim.b.public]


# --- actors.testing -----------------------------------------------------------------------


class Recorder(Stage):
    """Records its life cycle; raises on payload b"boom"; answers b"ping" with b"pong"."""

    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self.tag = tag
        self.events: list[str] = []

    def on_start(self) -> None:
        self.events.append("start")

    def on_stop(self) -> None:
        self.events.append("stop")

    def process(self, packet: Packet) -> Packet | None:
        if packet.payload == b"boom":
            raise RuntimeError("boom")
        if packet.payload == b"ping":
            sport, dport = packet.src_port, packet.dst_port
            assert sport is not None and dport is not None
            self.reply(build.udp(packet.dst, packet.src, dport, sport, b"pong"))
            return None
        if packet.payload == b"who":
            peer = self.peer_for(packet.dst)
            self.events.append("peer:" + (peer.hex()[:4] if peer else "none"))
        return packet


def pkt(payload: bytes, dst: str = "10.0.0.2") -> Packet:
    return build.udp("10.0.0.1", dst, 1000, 2000, payload)


def test_runner_calls_hooks_counts_drops_and_keeps_replies_apart() -> None:
    runner = StageRunner((Recorder, {"tag": "x"}), DnsFilter)
    with runner:
        stage = runner.stages[0]
        assert isinstance(stage, Recorder) and stage.events == ["start"]
        result = runner.feed([pkt(b"a"), pkt(b"ping"), pkt(b"boom"), pkt(b"b")])
    assert stage.events == ["start", "stop"]
    assert [p.payload for p in result.passed] == [b"a", b"b"]
    assert [p.payload for p in result.replies] == [b"pong"]
    assert result.drops == {"dropped": 1, "stage_error": 1}
    assert [str(e) for e in result.errors] == ["boom"]
    stats = result.stats["recorder"]
    assert stats["replies"] == 1 and stats["packets_in"] == 4 and stats["packets_out"] == 2
    assert result.stats["dnsfilter"]["packets_in"] == 2  # the reply did not go down the chain


def test_runner_restart_policy_gives_a_fresh_instance() -> None:
    runner = StageRunner(Recorder, on_error="restart")
    with runner:
        first = runner.stages[0]
        result = runner.feed([pkt(b"a"), pkt(b"boom"), pkt(b"b")])
        second = runner.stages[0]
    assert result.restarts == 1 and second is not first
    assert isinstance(first, Recorder) and first.events == ["start", "stop"]
    assert isinstance(second, Recorder) and second.events == ["start", "stop"]
    assert [p.payload for p in result.passed] == [b"a", b"b"]  # only the raising packet lost
    assert result.stats["recorder"]["drops"] == {"stage_error": 1}


def test_peer_for_follows_the_routes_and_their_changes() -> None:
    runner = StageRunner(Recorder, routes={"10.0.0.0/24": KEY_A, "10.0.0.128/25": KEY_B})
    with runner:
        runner.feed([pkt(b"who", "10.0.0.2"), pkt(b"who", "10.0.0.200"), pkt(b"who", "10.1.0.1")])
        runner.set_routes({"10.1.0.0/16": KEY_B})
        runner.feed([pkt(b"who", "10.1.0.1"), pkt(b"who", "10.0.0.2")])
        stage = runner.stages[0]
    assert isinstance(stage, Recorder)
    assert stage.events[1:-1] == ["peer:0001", "peer:0102", "peer:none", "peer:0102", "peer:none"]


def test_run_takes_options_and_checks_them() -> None:
    result = run(Recorder, [pkt(b"a")], tag="t")
    assert len(result.passed) == 1
    with pytest.raises(TypeError):
        run(Recorder, [pkt(b"a")], colour="red")
    with pytest.raises(RuntimeError, match="with"):
        StageRunner(Recorder).feed([pkt(b"a")])


def test_reply_is_bounded_per_batch() -> None:
    class Chatty(Stage):
        def process(self, packet: Packet) -> None:
            for _ in range(300):
                self.reply(packet)

    result = run(Chatty, [pkt(b"a")])
    assert len(result.replies) == 256 and result.drops["reply_overflow"] == 300 - 256


# --- DnsFilter ----------------------------------------------------------------------------


def dns_query(name: str, ident: int = 0x1234, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, 1)
    )


def dns_packet(name: str, v6: bool = False, ident: int = 0x1234) -> Packet:
    src, dst = ("fd00::1", "fd00::53") if v6 else ("10.0.0.1", "10.0.0.53")
    return build.udp(src, dst, 40000, 53, dns_query(name, ident))


@pytest.mark.parametrize("v6", [False, True])
def test_dnsfilter_answers_blocked_names_and_their_subdomains(v6: bool) -> None:
    queries = [
        dns_packet("ads.example", v6, 1),
        dns_packet("x.y.ADS.example", v6, 2),
        dns_packet("example", v6, 3),
        dns_packet("notads.example", v6, 4),
    ]
    result = run(DnsFilter, queries, block=["ads.example."])
    assert [p for p in result.passed] == queries[2:]
    assert len(result.replies) == 2
    for reply, query in zip(result.replies, queries, strict=False):
        assert valid(reply)
        assert (reply.src, reply.dst, reply.src_port, reply.dst_port) == (
            query.dst,
            query.src,
            53,
            40000,
        )
        answer = reply.payload
        assert answer is not None
        ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", answer)
        assert ident == struct.unpack_from("!H", query.payload or b"")[0]
        assert flags & 0x8000 and flags & 0xF == 3 and flags & 0x0100  # response, NXDOMAIN, RD
        assert (qd, an, ns, ar) == (1, 0, 0, 0)
        assert answer[12:] == (query.payload or b"")[12:]  # the question, echoed
    assert result.stats["dnsfilter"]["dns_seen"] == 4
    assert result.stats["dnsfilter"]["dns_blocked"] == 2


def test_dnsfilter_passes_malformed_dns_untouched_and_counts_it() -> None:
    bad = [
        build.udp("10.0.0.1", "10.0.0.53", 1, 53, b""),
        build.udp("10.0.0.1", "10.0.0.53", 1, 53, b"\x00" * 5),
        build.udp("10.0.0.1", "10.0.0.53", 1, 53, dns_query("ads.example")[:-3]),
        build.udp("10.0.0.1", "10.0.0.53", 1, 53, dns_query("ads.example")[:12] + b"\xc0\x0c"),
        build.udp("10.0.0.1", "10.0.0.53", 1, 53, bytes(range(256)) * 4),
    ]
    result = run(DnsFilter, bad, block=["ads.example"])
    assert result.passed == bad and not result.replies and not result.errors
    assert result.stats["dnsfilter"]["dns_malformed"] == len(bad)
    other = [
        build.udp("10.0.0.1", "10.0.0.53", 1, 54, b"x"),
        build.tcp("10.0.0.1", "10.0.0.2", 1, 53),
    ]
    assert run(DnsFilter, other, block=["a"]).passed == other


def test_dnsfilter_block_file_and_bad_options(tmp_path: Path) -> None:
    listing = tmp_path / "block"
    listing.write_text("# ads\ntracker.example  # trailing\n\nbad.example.\n")
    result = run(
        DnsFilter,
        [dns_packet("a.tracker.example"), dns_packet("bad.example")],
        block_file=str(listing),
    )
    assert len(result.replies) == 2
    with pytest.raises(ValueError, match="block_file"):
        DnsFilter(block_file=str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="list of names"):
        DnsFilter(block="ads.example")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"block\[0\]"):
        DnsFilter(block=[""])
    assert parse_query(dns_query("a.b")) is not None


# --- Firewall reject, and every other shipped stage under actors.testing -------------------


@pytest.mark.parametrize(("src", "dst"), [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
def test_firewall_reject_answers_the_sender(src: str, dst: str) -> None:
    rules = [
        {"action": "reject", "proto": "tcp", "dport": 7001},
        {"action": "reject", "proto": "udp", "dport": 7002},
        {"action": "deny", "proto": "udp", "dport": 7003},
    ]
    syn = build.tcp(src, dst, 40000, 7001, seq=9, flags=build.TCP_SYN)
    dgram = build.udp(src, dst, 40000, 7002, b"x")
    silent = build.udp(src, dst, 40000, 7003, b"x")
    ok = build.udp(src, dst, 40000, 7004, b"x")
    result = run(Firewall, [syn, dgram, silent, ok], rules=rules)
    assert result.passed == [ok]
    rst, unreachable = result.replies
    assert rst.tcp_flags == build.TCP_RST | build.TCP_ACK and rst.dst == syn.src and valid(rst)
    assert unreachable.icmp_type == (3 if syn.version == 4 else 1) and valid(unreachable)
    assert result.stats["firewall"]["firewall_rejected"] == 2
    assert run(Firewall, [syn], default="reject").replies == [rst]


def test_flowstats_and_pcap_under_actors_testing(tmp_path: Path) -> None:
    packets = [pkt(b"a"), pkt(b"b"), pkt(b"c", "10.0.0.3")]
    result = run(FlowStats, packets, top=1)
    assert result.passed == packets
    assert result.stats["flowstats"]["top_talkers"][0]["packets"] == 2
    capture = tmp_path / "x.pcap"
    assert run(PcapWriter, packets, path=str(capture)).passed == packets
    assert capture.stat().st_size == 24 + sum(16 + len(p) for p in packets)


# --- finding stages -----------------------------------------------------------------------


def test_use_a_file_path_relative_to_the_pipeline_file(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "mine.py").write_text(
        "from actors import Stage\n\nclass Mine(Stage):\n    pass\n"
    )
    text = '[[outbound]]\nuse = "stages/mine.py:Mine"\n[[inbound]]\nuse = "dnsfilter"\n'
    inbound, outbound = parse_pipeline(text, "p.toml", tmp_path)
    assert outbound[0].cls.__name__ == "Mine" and inbound[0].cls is DnsFilter
    with pytest.raises(ValueError, match="no file"):
        parse_pipeline('[[outbound]]\nuse = "nope.py:X"\n', "p.toml", tmp_path)
    with pytest.raises(ValueError, match="no stage is registered as 'nope'"):
        parse_pipeline('[[outbound]]\nuse = "nope"\n', "p.toml", tmp_path)
    assert resolve("stages/mine.py:Mine", tmp_path) is outbound[0].cls  # loaded once
    with pytest.raises(StageLookupError):
        resolve("stages/mine.py:Missing", tmp_path)


def test_on_error_key_in_the_pipeline_file() -> None:
    inbound, _ = parse_pipeline('[[inbound]]\nuse = "firewall"\non_error = "restart"\n')
    assert inbound[0].on_error == "restart"
    with pytest.raises(ValueError, match="on_error"):
        parse_pipeline('[[inbound]]\nuse = "firewall"\non_error = "explode"\n')


def test_wgactors_stages_lists_names_and_origins() -> None:
    names = {a.name for a in available()}
    assert {"dnsfilter", "firewall", "flowstats", "mssclamp", "pcap"} <= names
    out = subprocess.run(
        [sys.executable, "-m", "actors.cli", "stages"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "dnsfilter  actors.contrib.dnsfilter:DnsFilter  [wgactors" in out.stdout


def test_dropin_mode_finds_the_pipeline_next_to_the_config(tmp_path: Path) -> None:
    assert dropin_pipeline("wg7", {}, str(tmp_path)) is None
    (tmp_path / "wg7.pipeline.toml").write_text("")
    assert dropin_pipeline("wg7", {}, str(tmp_path)) == str(tmp_path / "wg7.pipeline.toml")
    assert dropin_pipeline("wg7", {"WGACTORS_PIPELINE": "/x.toml"}, str(tmp_path)) == "/x.toml"


# --- the README's test example runs as written ---------------------------------------------


def readme_block(heading: str, index: int = 0) -> str:
    section = (ROOT / "README.md").read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    return section.split("```python", index + 1)[index + 1].split("```", 1)[0]


def readme_blocks(heading: str) -> list[str]:
    section = (ROOT / "README.md").read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    return [part.split("```", 1)[0] for part in section.split("```python")[1:]]


def test_readme_examples_of_what_a_stage_can_do_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every python block of "What a stage can do" runs as written, and its tests pass (one
    per feature: testing, verdicts, the context, arrival time and ticks with a fake clock)."""
    (tmp_path / "myfilters.py").write_text(readme_block("## Write your own actor"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "myfilters", raising=False)
    ran = []
    for index, code in enumerate(readme_blocks("## What a stage can do")):
        namespace: dict[str, object] = {"__name__": f"readme_block_{index}"}
        exec(compile(code, f"README.md block {index}", "exec"), namespace)
        for name, test in namespace.items():
            if name.startswith("test_") and callable(test):
                test()
                ran.append(name)
    assert {
        "test_block_ports_drops_only_the_listed_ports",
        "test_answered_pings_are_consumed_not_dropped",
        "test_the_context_says_where_the_stage_runs",
        "test_arrival_time_and_ticks_follow_the_fake_clock",
    } <= set(ran), ran


# --- the same abilities in a running actor (mailboxes, no root) ---------------------------


def test_a_running_stage_replies_through_its_way_back_and_survives_exceptions() -> None:
    import time

    from actors.mailbox import Mailbox
    from actors.stages.base import GetStats, Outlet
    from actors.stages.custom import start_stage

    first, sink, back = Mailbox("first"), Mailbox("sink"), Mailbox("back")
    ref = start_stage(Recorder, first, Outlet(sink), name="recorder", back=Outlet(back))
    try:
        first.push((pkt(b"a"), pkt(b"ping"), pkt(b"boom"), pkt(b"b")))
        deadline = time.monotonic() + 5
        while (sink.empty() or back.empty()) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [p.payload for p in sink.take()] == [b"a", b"b"]  # type: ignore[union-attr]
        assert [p.payload for p in back.take()] == [b"pong"]  # type: ignore[union-attr]
        snap = ref.ask(GetStats(), timeout=5)
        assert dict(snap.drops) == {"dropped": 1, "stage_error": 1}
        assert dict(snap.extra)["replies"] == 1
        assert ref.is_alive()  # the exception cost one packet, not the stage
    finally:
        ref.stop()


def test_on_error_restart_replaces_the_instance_in_the_running_actor() -> None:
    """The actor keeps running; its runner swaps in a fresh instance after the batch."""
    import time

    from actors.mailbox import Mailbox
    from actors.stages.base import GetStats, Outlet
    from actors.stages.custom import start_stage

    first, sink = Mailbox("first"), Mailbox("sink")
    ref = start_stage(Recorder, first, Outlet(sink), name="recorder", on_error="restart")
    try:
        first.push((pkt(b"a"), pkt(b"boom")))
        first.push((pkt(b"b"),))
        deadline = time.monotonic() + 5
        seen: list[bytes | None] = []
        while len(seen) < 2 and time.monotonic() < deadline:
            item = sink.take()
            if item is None:
                time.sleep(0.005)
                continue
            seen += [p.payload for p in item]  # type: ignore[union-attr]
        assert seen == [b"a", b"b"]
        snap = ref.ask(GetStats(), timeout=5)
        assert dict(snap.extra)["replacements"] == 1 and snap.packets_in == 3
        assert ref.is_alive()
    finally:
        ref.stop()

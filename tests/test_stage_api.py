"""The extension API and the pipeline file: what users write, and how mistakes are reported."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest
from custom_stages import Broken, DropUdpPort, Duplicate
from hypothesis import given
from hypothesis import strategies as st
from netns import gen_keypair
from wgsim import udp4

from actors import Packet, Stage
from actors.mailbox import Mailbox
from actors.pipeline_file import PipelineFileError, parse_pipeline
from actors.stages.base import GetStats, Outlet
from actors.stages.custom import start_stage
from actors.supervisor import Restart
from actors.testing import run

ROOT = Path(__file__).resolve().parent.parent


def test_process_returns_packet_none_or_several() -> None:
    keep = udp4("10.0.0.1", "10.0.0.2", dport=80)
    drop = udp4("10.0.0.1", "10.0.0.2", dport=53)
    result = run(DropUdpPort, [keep, drop, keep], port=53)
    assert result.passed == [keep, keep] and result.drops == {"dropped": 1}
    assert run(Duplicate, [keep], times=3).passed == [keep, keep, keep]
    # called directly, outside any host, the default process_batch applies verdicts too
    assert DropUdpPort(port=53).process_batch((keep, drop, keep)) == [keep, keep]


def test_a_stage_that_returns_garbage_costs_that_packet() -> None:
    result = run(Broken, [udp4("10.0.0.1", "10.0.0.2")])
    assert result.passed == [] and result.drops == {"stage_error": 1}
    assert "not a Packet" in str(result.errors[0])


def test_default_stage_passes_packets_through() -> None:
    packet = udp4("10.0.0.1", "10.0.0.2")
    assert Stage().process_batch((packet,)) == [packet]


def test_stage_in_a_chain_of_mailboxes() -> None:
    first, sink = Mailbox("first"), Mailbox("sink")
    ref = start_stage(DropUdpPort, first, Outlet(sink), options={"port": 9}, name="dropper")
    try:
        batch = tuple(udp4("10.0.0.1", "10.0.0.2", dport=p) for p in (9, 10, 9, 11))
        first.push(batch)
        deadline = time.monotonic() + 5
        while sink.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        out = sink.take()
        assert [p.dst_port for p in out] == [10, 11]
        snap = ref.ask(GetStats(), timeout=5)
        assert snap.name == "dropper"
        assert dict(snap.drops) == {"dropped": 2}
        assert dict(snap.extra)["udp_dropped"] == 2
    finally:
        ref.stop()


def test_a_slow_stage_backpressures_instead_of_dropping() -> None:
    class Slow(Stage):
        def process(self, packet: Packet) -> Packet:
            time.sleep(0.01)
            return packet

    box, sink = Mailbox("slow", capacity=4), Mailbox("sink", capacity=10_000)
    ref = start_stage(Slow, box, Outlet(sink))
    try:
        start = time.monotonic()
        for _ in range(12):  # 12 packets through a 4-packet mailbox, 10 ms each
            assert box.push((udp4("10.0.0.1", "10.0.0.2"),), block=True, timeout=5)
        assert time.monotonic() - start > 0.05  # the sender waited: that is the backpressure
        assert box.stats().dropped == 0
        assert box.stats().high_water <= 4
    finally:
        ref.stop()


PIPELINE_OK = """
[[inbound]]
use = "custom_stages:DropUdpPort"
options = { port = 5353 }
restart = "transient"
budget = { max_restarts = 2, within = 5 }
capacity = 200

[[outbound]]
use = "custom_stages:Duplicate"
name = "twice"
"""


def test_pipeline_file_parses_entries_with_supervision_settings() -> None:
    inbound, outbound = parse_pipeline(PIPELINE_OK, "p.toml")
    (dropper,) = inbound
    assert dropper.cls is DropUdpPort and dropper.options == {"port": 5353}
    assert dropper.restart is Restart.TRANSIENT
    assert dropper.budget is not None and dropper.budget.max_restarts == 2
    assert dropper.capacity == 200 and dropper.name == "dropudpport"
    assert [e.name for e in outbound] == ["twice"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[inbound]]\nuse = "no_such_module:X"\n', "cannot import no_such_module"),
        ('[[inbound]]\nuse = "custom_stages:Nope"\n', "has no Nope"),
        ('[[inbound]]\nuse = "custom_stages:NotAStage"\n', "not a subclass of actors.Stage"),
        ('[[inbound]]\nuse = "custom_stages:DropUdpPort"\n', "option 'port' is required"),
        (
            '[[inbound]]\nuse = "custom_stages:DropUdpPort"\noptions = { port = 70000 }\n',
            "port must be 1..65535",
        ),
        (
            '[[inbound]]\nuse = "custom_stages:DropUdpPort"\noptions = { port = 1, x = 2 }\n',
            "unknown option 'x' (options: port)",
        ),
        ('[[inbound]]\nuse = "custom_stages:Duplicate"\nrestart = "sometimes"\n', "`restart`"),
        ('[[inbound]]\nuse = "custom_stages:Duplicate"\nbudget = { max = 1 }\n', "`budget`"),
        ('[[inbound]]\nuse = "custom_stages:Duplicate"\ncapacity = 0\n', "`capacity`"),
        (
            '[[inbound]]\nuse = "custom_stages:Duplicate"\non_error = "ignore"\n',
            '`on_error` is "drop", "pass" or "restart", not \'ignore\'',
        ),
        (
            '[[inbound]]\nuse = "custom_stages:Duplicate"\non_error = ["drop"]\n',
            '`on_error` is "drop", "pass" or "restart"',
        ),
        ('[[inbound]]\nuse = "custom_stages:Duplicate"\ncolour = "red"\n', "unknown key 'colour'"),
        ('[[inbound]]\nuse = "Duplicate"\n', '"module:Class"'),
        ("[[sideways]]\nuse = 1\n", "unknown section 'sideways'"),
        ("[[inbound]\n", "not valid TOML"),
        ("inbound = 3\n", "write entries as [[inbound]] tables"),
        (
            '[[inbound]]\nuse = "custom_stages:Duplicate"\nname = "decrypt"\n',
            "the name 'decrypt' is taken",
        ),
    ],
)
def test_pipeline_file_errors_name_the_entry(text: str, needle: str) -> None:
    with pytest.raises(PipelineFileError) as info:
        parse_pipeline(text, "p.toml")
    message = str(info.value)
    assert message.startswith("p.toml: ")
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize("choice", ["drop", "pass", "restart"])
def test_pipeline_file_takes_each_on_error_choice(choice: str) -> None:
    (entry,), _ = parse_pipeline(
        f'[[inbound]]\nuse = "custom_stages:Duplicate"\non_error = "{choice}"\n', "p.toml"
    )
    assert entry.on_error == choice
    (default,), _ = parse_pipeline('[[inbound]]\nuse = "custom_stages:Duplicate"\n', "p.toml")
    assert default.on_error == "drop"  # fail-closed unless the entry says otherwise


def test_stage_has_no_hidden_machinery() -> None:
    """A Stage is a plain object: no actor base, no hook wrapping, no wiring by context
    variables; its context comes from the runner, before on_start."""
    import pykka
    from custom_stages import MixinStart

    import actors.stage

    assert not issubclass(Stage, pykka.Actor)
    assert MixinStart.on_start is MixinStart.__mro__[1].__dict__["on_start"]  # the mixin's own
    assert "__init_subclass__" not in Stage.__dict__
    assert not hasattr(actors.stage, "wiring") and not hasattr(actors.stage, "_WIRING")


def test_same_class_twice_gets_distinct_names() -> None:
    entry = '[[inbound]]\nuse = "custom_stages:Duplicate"\n'
    text = entry + entry
    inbound, _ = parse_pipeline(text)
    assert [e.name for e in inbound] == ["duplicate", "duplicate2"]


@given(st.text(max_size=300))
def test_pipeline_parser_raises_only_its_error(text: str) -> None:
    with contextlib.suppress(PipelineFileError):
        parse_pipeline(text)


def test_cli_refuses_a_bad_pipeline_with_one_line_and_exit_2(tmp_path: Path) -> None:
    priv, _ = gen_keypair()
    conf = tmp_path / "wgp0.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {priv}\n")
    conf.chmod(0o600)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[[outbound]]\nuse = "custom_stages:NotAStage"\n')
    env = {"PYTHONPATH": str(ROOT / "tests"), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    for args, extra_env in (
        (["--pipeline", str(pipeline)], {}),
        ([], {"WGACTORS_PIPELINE": str(pipeline)}),
    ):
        result = subprocess.run(
            [str(ROOT / "scripts" / "wgactors"), "up", str(conf), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, **extra_env},
        )
        assert result.returncode == 2, result.stderr
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "outbound[0] (custom_stages:NotAStage)" in lines[0], lines
        assert subprocess.run(["ip", "link", "show", "wgp0"], capture_output=True).returncode != 0

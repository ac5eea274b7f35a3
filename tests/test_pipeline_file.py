"""The pipeline file as a user lives with it (issue 23): stable names across reloads, options
checked against annotations, path options relative to the file, `wgactors check`, stage files
that import their neighbours and are re-imported when edited, and `wgactors stages`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from netns import gen_keypair
from wgactors_proc import LAUNCHER, ROOT

from actors import Packet, Stage, build
from actors.catalog import cmd_stages
from actors.contrib.dnsfilter import DnsFilter
from actors.contrib.pcap import PcapWriter
from actors.dataplane import DataPlaneSpec
from actors.mailbox import Mailbox
from actors.options import OptionError, check_options
from actors.pipeline import Pipeline
from actors.pipeline_file import (
    PipelineFileError,
    StageEntry,
    load_pipeline,
    parse_pipeline,
    same_entry,
)
from actors.single import SingleThreaded, _build
from actors.snapshot import ConfigCell, DeviceConfig
from actors.stages.custom import start_stage
from actors.supervisor import ChildSpec, Supervision, Supervisor
from actors.testing import run

TESTS = str(ROOT / "tests")
STATS_WAIT = 10.0  # seconds a running stage may take to count a batch

# -- 3. names that depend only on their own path ------------------------------------------

BEFORE = """
[[inbound]]
use = "custom_stages:FailEvery"
options = { every = 1000000 }

[[outbound]]
use = "custom_stages:FailEvery"
options = { every = 1000000 }
"""
AFTER = BEFORE.replace(
    "[[outbound]]",
    '[[inbound]]\nuse = "custom_stages:FailEvery"\noptions = { every = 999999 }\n\n[[outbound]]',
)


def test_changing_one_path_renames_nothing_on_the_other() -> None:
    in_a, out_a = parse_pipeline(BEFORE)
    in_b, out_b = parse_pipeline(AFTER)
    assert [e.name for e in in_b] == ["failevery", "failevery2"]
    assert [e.name for e in out_a] == [e.name for e in out_b] == ["failevery_out"]
    assert same_entry(out_a[0], out_b[0]) and same_entry(in_a[0], in_b[0])


def test_explicit_names_and_their_clashes() -> None:
    text = BEFORE.replace("[[outbound]]", '[[outbound]]\nname = "mine"')
    assert [e.name for e in parse_pipeline(text)[1]] == ["mine"]
    clash = BEFORE.replace("[[outbound]]", '[[outbound]]\nname = "failevery"')
    with pytest.raises(PipelineFileError, match="'failevery' is what inbound"):
        parse_pipeline(clash)
    twice = clash.replace("[[inbound]]", '[[inbound]]\nname = "failevery"')
    with pytest.raises(PipelineFileError, match="'failevery' is taken by inbound"):
        parse_pipeline(twice)


def packets(count: int) -> list[Packet]:
    return [build.udp("10.0.0.1", "10.0.0.2", 1000, 2000 + i, b"x") for i in range(count)]


def single_plane(inbound: Sequence[StageEntry], outbound: Sequence[StageEntry]) -> SingleThreaded:
    """A single-threaded data plane with only its custom stages: its reload is what runs."""
    plane = SingleThreaded.__new__(SingleThreaded)
    plane.config = ConfigCell(DeviceConfig(None, ()))
    plane.entries = {"inbound": list(inbound), "outbound": list(outbound)}
    plane.inbound = [_build(e, plane.config) for e in inbound]
    plane.outbound = [_build(e, plane.config) for e in outbound]
    plane.escalation_reason = ""
    return plane


def test_single_threaded_reload_keeps_the_other_paths_instance_and_counters() -> None:
    in_a, out_a = parse_pipeline(BEFORE)
    in_b, out_b = parse_pipeline(AFTER)
    plane = single_plane(in_a, out_a)
    kept = plane.outbound[0]
    plane._through(plane.outbound[0], packets(5), [], None)
    summary = plane._swap_stages(in_b, out_b)
    assert summary == "inbound +failevery2 (now failevery -> failevery2)"
    assert plane.outbound[0] is kept
    plane._through(plane.outbound[0], packets(3), [], None)
    snapshot = kept.snapshot().as_dict()
    assert (snapshot["name"], snapshot["packets_in"]) == ("failevery_out", 8)


@pytest.fixture
def custom_pipeline() -> Iterator[Pipeline]:
    """A pipeline's custom stages under a real supervisor, with sinks in place of the built-in
    stages around them (no TUN device or socket): its own reload code is what runs."""
    in_a, out_a = parse_pipeline(BEFORE)
    spec = DataPlaneSpec(
        private_key=None,
        peers=(),
        udp=None,  # type: ignore[arg-type]
        tun=None,  # type: ignore[arg-type]
        inbound=tuple(in_a),
        outbound=tuple(out_a),
    )
    pipe = Pipeline(spec)
    specs: list[ChildSpec] = []
    for name in ("tun_writer", "encrypt", "decrypt", "tun_reader"):
        specs.append(ChildSpec(name, sink_starter(name), pipe._mailbox(name)))
    pipe._chain(specs, pipe.inbound, pipe.mailboxes["tun_writer"])
    pipe._chain(specs, pipe.outbound, pipe.mailboxes["encrypt"])
    pipe.order = [s.name for s in specs]
    pipe.supervisor = Supervisor.start(specs)
    try:
        yield pipe
    finally:
        pipe.supervisor.stop(block=True, timeout=5)
        for box in pipe.mailboxes.values():
            box.close()


class Sink(Stage):
    """Stands in for a built-in stage: takes batches and re-wirings, passes nothing on."""

    def process(self, packet: Packet) -> None:
        return None


def sink_starter(name: str) -> Callable[[Mailbox, Supervision], Any]:
    def start(box: Mailbox, sup: Supervision) -> Any:
        return start_stage(Sink, box, None, name=name, supervision=sup)

    return start


def wait_packets_in(pipe: Pipeline, name: str, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + STATS_WAIT
    while True:
        stats = {s["name"]: s for s in pipe.stats()}
        if stats.get(name, {}).get("packets_in") == count:
            return stats
        assert time.monotonic() < deadline, stats.get(name)
        time.sleep(0.02)


def test_actor_pipeline_reload_keeps_the_other_paths_instance_and_counters(
    custom_pipeline: Pipeline,
) -> None:
    pipe = custom_pipeline
    box: Mailbox = pipe.mailboxes["failevery_out"]
    assert box.push(tuple(packets(5)))
    wait_packets_in(pipe, "failevery_out", 5)
    in_b, out_b = parse_pipeline(AFTER)
    summary = pipe.reload(in_b, out_b)
    assert summary == "inbound +failevery2 (now failevery -> failevery2)"
    assert pipe.mailboxes["failevery_out"] is box
    assert box.push(tuple(packets(3)))
    stats = wait_packets_in(pipe, "failevery_out", 8)  # the same instance, counting on
    assert stats["failevery_out"]["restarts"] == 0
    assert stats["failevery_out"].get("replacements", 0) == 0


# -- 5. options checked against the constructor's annotations --------------------------------


class Typed(Stage):
    def __init__(
        self,
        mtu: int = 1280,
        rate: float = 1.0,
        verbose: bool = False,
        label: str = "",
        ports: list[int] | None = None,
        limits: dict[str, int] | None = None,
        mode: Literal["fast", "safe"] = "fast",
        pair: tuple[int, str] = (1, "a"),
        anything: Any = None,
        custom: Mailbox | None = None,  # an annotation the loader does not know: accepted
    ) -> None:
        super().__init__()
        self.options = dict(mtu=mtu, rate=rate, verbose=verbose, ports=ports, custom=custom)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mtu": "1200"}, "option 'mtu': expected an integer, got a string ('1200')"),
        ({"mtu": True}, "option 'mtu': expected an integer, got a boolean (True)"),
        ({"verbose": 1}, "option 'verbose': expected true or false, got an integer (1)"),
        ({"rate": "fast"}, "option 'rate': expected a number"),
        ({"label": 3}, "option 'label': expected a string"),
        ({"ports": [1, "2"]}, "option 'ports': expected an array of integers or nothing"),
        ({"ports": 5}, "option 'ports': expected an array of integers"),
        ({"limits": {"a": "b"}}, "option 'limits': expected a table of integers"),
        ({"mode": "slow"}, "option 'mode': expected one of 'fast', 'safe'"),
        ({"pair": [1, 2]}, "option 'pair': expected an array of 2"),
        ({"colour": "red"}, "unknown option 'colour' (options: mtu, rate"),
    ],
)
def test_options_of_the_wrong_type_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError) as info:
        check_options(Typed, options)
    assert message in str(info.value)


def test_options_of_the_right_type_pass_unchanged() -> None:
    options = {
        "mtu": 1200,
        "rate": 2,  # an integer is a number
        "verbose": True,
        "ports": [1, 2],
        "limits": {"a": 1},
        "mode": "safe",
        "pair": [3, "b"],
        "anything": {"x": [1]},
        "custom": "judged by the constructor",
    }
    assert check_options(Typed, options) == options


def test_a_mistyped_option_is_one_line_naming_entry_and_option_at_load() -> None:
    text = '[[outbound]]\nuse = "actors.contrib.flowstats:FlowStats"\noptions = { top = "3" }\n'
    with pytest.raises(PipelineFileError) as info:
        parse_pipeline(text, "p.toml")
    assert str(info.value) == (
        "p.toml: outbound[0] (actors.contrib.flowstats:FlowStats): "
        "option 'top': expected an integer, got a string ('3')"
    )


# -- 4. path options relative to the pipeline file ---------------------------------------------


def test_path_options_start_at_the_pipeline_file(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "block").write_text("ads.example\n")
    pipe = tmp_path / "pipeline.toml"
    pipe.write_text(
        '[[outbound]]\nuse = "dnsfilter"\noptions = { block_file = "lists/block" }\n'
        '[[inbound]]\nuse = "pcap"\noptions = { path = "in.pcap" }\n'
        '[[inbound]]\nuse = "firewall"\noptions = { default = "allow" }\n'
    )
    inbound, outbound = load_pipeline(pipe)
    assert outbound[0].options == {"block_file": tmp_path / "lists" / "block"}
    assert inbound[0].options == {"path": tmp_path / "in.pcap"}
    assert inbound[1].options == {"default": "allow"}  # a plain string stays a string
    query = build.udp("10.0.0.1", "10.0.0.2", 5000, 53, dns_query("ads.example"))
    result = run(DnsFilter, [query], **outbound[0].options)
    assert len(result.replies) == 1
    assert PcapWriter(**inbound[0].options).path == tmp_path / "in.pcap"


def dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return bytes.fromhex("1234 0100 0001 0000 0000 0000") + labels + b"\0\0\1\0\1"


# -- 6. wgactors check --------------------------------------------------------------------------


def wgactors(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": TESTS, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    return subprocess.run(
        [str(LAUNCHER), *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def test_check_summarises_a_good_file_and_exits_0(tmp_path: Path) -> None:
    pipe = tmp_path / "p.toml"
    pipe.write_text(AFTER)
    result = wgactors("check", str(pipe))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"{pipe}: inbound failevery(custom_stages:FailEvery) -> "
        "failevery2(custom_stages:FailEvery); outbound failevery_out(custom_stages:FailEvery)\n"
    )


def test_check_refuses_as_start_up_does_with_exit_2(tmp_path: Path) -> None:
    pipe = tmp_path / "p.toml"
    pipe.write_text(BEFORE.replace("every = 1000000 }", 'every = "often" }', 1))
    checked = wgactors("check", str(pipe))
    priv, _ = gen_keypair()
    conf = tmp_path / "wgc0.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {priv}\n")
    conf.chmod(0o600)
    started = wgactors("up", str(conf), "--pipeline", str(pipe))
    assert checked.returncode == started.returncode == 2
    assert checked.stderr == started.stderr.splitlines(keepends=True)[-1]
    assert checked.stderr == (
        f"wgactors: {pipe}: inbound[0] (custom_stages:FailEvery): "
        "option 'every': expected an integer, got a string ('often')\n"
    )
    assert checked.stdout == ""


# -- 7, 8. stage files: their neighbours importable, edits picked up -----------------------------

STAGE_FILE = """
from actors import Packet, Stage
from helper import VERSION


class Versioned(Stage):
    def __init__(self{extra}) -> None:
        super().__init__()

    def process(self, packet: Packet) -> Packet:
        return packet

    def stats_extra(self) -> dict[str, str]:
        return {{"version": VERSION}}
"""


def write_stage(folder: Path, extra: str = "", version: str = "1") -> None:
    (folder / "stages").mkdir(exist_ok=True)
    (folder / "stages" / "versioned.py").write_text(STAGE_FILE.format(extra=extra))
    (folder / "helper.py").write_text(f'VERSION = "{version}"\n')


def version_of(entry: StageEntry) -> str:
    with_options = (entry.cls, entry.options)
    return str(run(with_options, []).stats[entry.cls.__name__.lower()]["version"])


def test_a_stage_file_imports_what_lies_beside_the_pipeline_file(tmp_path: Path) -> None:
    write_stage(tmp_path)
    pipe = tmp_path / "p.toml"
    pipe.write_text('[[inbound]]\nuse = "stages/versioned.py:Versioned"\n')
    path_before = list(sys.path)
    (entry,), _ = load_pipeline(pipe)
    assert version_of(entry) == "1"
    assert sys.path == path_before  # importable while loading only


def test_an_edited_stage_file_is_loaded_again(tmp_path: Path) -> None:
    write_stage(tmp_path)
    pipe = tmp_path / "p.toml"
    pipe.write_text('[[inbound]]\nuse = "stages/versioned.py:Versioned"\n')
    (first,), _ = load_pipeline(pipe)
    (again,), _ = load_pipeline(pipe)
    assert again.cls is first.cls  # unchanged: the same class, so a reload keeps the instance
    write_stage(tmp_path, extra=", verbose: bool = False")
    pipe.write_text(pipe.read_text() + "options = { verbose = true }\n")
    (edited,), _ = load_pipeline(pipe)
    assert edited.cls is not first.cls and not same_entry(first, edited)
    assert edited.options == {"verbose": True}
    write_stage(tmp_path, extra=", verbose: bool = False", version="2")  # only the helper
    (helper_edited,), _ = load_pipeline(pipe)
    assert helper_edited.cls is not edited.cls
    assert version_of(helper_edited) == "2"


def test_a_module_imported_by_name_says_its_old_code_is_still_loaded(tmp_path: Path) -> None:
    module = tmp_path / "byname_stage_23.py"
    module.write_text(
        STAGE_FILE.format(extra="").replace("from helper import VERSION", "VERSION = 1")
    )
    pipe = tmp_path / "p.toml"
    pipe.write_text('[[inbound]]\nuse = "byname_stage_23:Versioned"\n')
    try:
        load_pipeline(pipe)  # beside the pipeline file: importable by name too
        module.write_text(module.read_text().replace("(self)", "(self, verbose: bool = False)"))
        pipe.write_text(pipe.read_text() + "options = { verbose = true }\n")
        with pytest.raises(PipelineFileError) as info:
            load_pipeline(pipe)
    finally:
        sys.modules.pop("byname_stage_23", None)
    message = str(info.value)
    assert "unknown option 'verbose'" in message
    assert "byname_stage_23 is imported by name and its file changed" in message
    assert "code loaded at start-up is still in use" in message


# -- 12. wgactors stages -------------------------------------------------------------------------


def test_stages_shows_whole_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_stages() == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert "with NXDOMAIN; passes the rest." in flat  # the docstring's line ends at "the"
    assert all(len(line) <= 100 for line in out.splitlines())

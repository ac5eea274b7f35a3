"""A user's stage, or the packets it sees, against the machinery that runs it: slow or failing
ticks, reasons made from packets, figures named like the counters, a process_batch returning
the wrong things, a restart that needs what the old instance held. None of it may stall a
path, grow without bound, break status or metrics, or end anything."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from wgsim import udp4

from actors import build
from actors.metrics import render
from actors.packet import Packet
from actors.runner import DROP_OTHER, MAX_DROP_REASONS, Runner
from actors.stage import Drop, Stage
from actors.status import render as render_status
from actors.testing import FakeClock, run

PACKET = udp4("10.0.0.1", "10.0.0.2")


def test_a_slow_on_tick_leaves_a_whole_interval_for_packets_before_the_next() -> None:
    clock = FakeClock(100.0)

    class Slow(Stage):
        tick_interval: ClassVar[float | None] = 0.05

        def on_tick(self, now: float) -> None:
            clock.advance(0.07)  # longer than its interval

    runner = Runner(Slow, "slow", clock=clock)
    runner.start()
    clock.advance(0.05)
    assert runner.tick(clock()) is not None  # due: runs, and ends at +0.12
    assert runner.tick(clock()) is None  # not again at once: packets get their turn
    clock.advance(0.04)
    assert runner.tick(clock()) is None
    clock.advance(0.01)
    assert runner.tick(clock()) is not None


def test_an_on_tick_that_raises_is_counted_as_an_error_of_on_tick() -> None:
    clock = FakeClock()

    class Broken(Stage):
        tick_interval: ClassVar[float | None] = 0.05

        def on_tick(self, now: float) -> None:
            raise RuntimeError("tick bug")

    runner = Runner(Broken, "broken", clock=clock)
    runner.start()
    for _ in range(5):
        clock.advance(0.05)
        runner.tick(clock())
    report = runner.snapshot().as_dict()
    assert report["failure"]["errors"] == 5
    assert report["drops"] == {}  # no packet was at stake


def test_drop_reasons_made_from_packets_are_bounded() -> None:
    class PerSource(Stage):
        def process(self, packet: Packet) -> Drop:
            return Drop(f"port{packet.src_port}")

    packets = [udp4("10.0.0.1", "10.0.0.2", sport=1000 + i) for i in range(3 * MAX_DROP_REASONS)]
    result = run(PerSource, packets)
    drops = result.stats["persource"]["drops"]
    assert len(drops) == MAX_DROP_REASONS + 1
    assert drops[DROP_OTHER] == 2 * MAX_DROP_REASONS
    assert sum(drops.values()) == len(packets)


def test_a_drop_reason_is_a_constant_name_not_packet_text() -> None:
    for bad in ("blocked 10.0.0.1", "\x1b[31m", "a/b", ""):
        with pytest.raises(ValueError, match="drop reason"):
            Drop(bad)
    assert Drop("rate.bytes-1_x").reason == "rate.bytes-1_x"


class NamesLikeCounters(Stage):
    def stats_extra(self) -> dict[str, Any]:
        return {"drops": 3, "mailbox": 7, "replies": 9, "name": "x", "mine": 1}


def test_a_stages_figures_never_take_the_place_of_the_counters() -> None:
    result = run(NamesLikeCounters, [PACKET])
    stats = result.stats["nameslikecounters"]
    assert stats["name"] == "nameslikecounters" and stats["drops"] == {}
    assert stats["replies"] == 0 and stats["stage_replies"] == 9
    assert (stats["stage_drops"], stats["stage_mailbox"], stats["mine"]) == (3, 7, 1)
    info = {
        "interface": "wg0",
        "public_key": None,
        "listen_port": 1,
        "fwmark": 0,
        "peers": [],
        "stages": {"mode": "actors", "stages": [stats]},
    }
    assert "stage_replies" in render([info])  # metrics render
    assert "stage_replies=9" in render_status(info)  # and the status text does too


def test_figures_whose_names_clean_up_alike_give_one_series() -> None:
    stage = {"name": "s", "queue-depth": 1, "queue_depth": 2}
    text = render([{"interface": "wg0", "peers": [], "stages": {"stages": [stage]}}])
    series = [ln for ln in text.splitlines() if ln.startswith("wgactors_stage_extra_queue_depth{")]
    assert len(series) == 1, series


class ReturnsVerdicts(Stage):
    def process_batch(self, batch: tuple[Packet, ...]) -> list[Any]:
        return [batch[0], Drop("odd")]  # verdicts are process's, not process_batch's


def test_a_process_batch_returning_non_packets_costs_its_batch_not_the_loop() -> None:
    result = run(ReturnsVerdicts, [PACKET, PACKET])
    assert result.passed == []
    assert result.drops["stage_error"] == 2
    assert isinstance(result.errors[0], TypeError)


class Exclusive(Stage):
    """Holds something only one instance at a time may have (a port, a lock)."""

    held = False

    def on_start(self) -> None:
        if Exclusive.held:
            raise OSError(98, "Address already in use")
        Exclusive.held = True

    def on_stop(self) -> None:
        Exclusive.held = False

    def process(self, packet: Packet) -> Packet:
        if packet.protocol == 1:
            raise ValueError("a bug on ICMP")
        return packet


def test_restart_stops_the_old_instance_before_the_fresh_one_starts() -> None:
    ping = build.icmp("10.0.0.1", "10.0.0.2", 8, 0, b"\0\1\0\1")
    result = run(Exclusive, [ping, PACKET], on_error="restart")
    stats = result.stats["exclusive"]
    assert stats["replacements"] == 1
    assert result.passed == [PACKET]
    assert not Exclusive.held  # and the last one stopped at the end


class Marked(Stage):
    """Records its starts and stops in a class-wide log."""

    log: ClassVar[list[str]] = []

    def __init__(self, tag: str = "v1") -> None:
        super().__init__()
        self.tag = tag

    def on_start(self) -> None:
        if self.tag == "broken":
            raise OSError("cannot start")
        Marked.log.append(f"start {self.tag}")

    def on_stop(self) -> None:
        Marked.log.append(f"stop {self.tag}")


def test_a_single_threaded_reload_that_cannot_start_a_stage_changes_nothing() -> None:
    """All or nothing: the new instance started for one entry is stopped again when another
    cannot start, and the running ones are neither stopped nor replaced."""
    from actors.pipeline_file import parse_pipeline
    from actors.single import SingleThreaded, _build
    from actors.snapshot import ConfigCell, DeviceConfig

    def pipeline(a: str, b: str) -> str:
        return "".join(
            f'[[inbound]]\nuse = "test_stage_hostile:Marked"\nname = "{n}"\n'
            f'options = {{ tag = "{t}" }}\n'
            for n, t in (("a", a), ("b", b))
        )

    inbound, _ = parse_pipeline(pipeline("v1", "v1"))
    plane = SingleThreaded.__new__(SingleThreaded)
    plane.config = ConfigCell(DeviceConfig(None, ()))
    plane.entries = {"inbound": list(inbound), "outbound": []}
    plane.inbound = [_build(e, plane.config) for e in inbound]
    plane.outbound = []
    for runner in plane.inbound:
        runner.start()
    running = list(plane.inbound)
    Marked.log.clear()
    new, _ = parse_pipeline(pipeline("v2", "broken"))
    with pytest.raises(OSError, match="cannot start"):
        plane._swap_stages(new, [])
    assert plane.inbound == running and plane.entries["inbound"] == list(inbound)
    assert Marked.log == ["start v2", "stop v2"]  # the v1 instances were never stopped

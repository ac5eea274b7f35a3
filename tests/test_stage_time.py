"""Time for stages (issue 23 item 2): the batch's arrival time, a periodic on_tick at the
interval a stage declares, and a fake clock in actors.testing that drives both."""

from __future__ import annotations

import time

import pytest

from actors import Packet, Stage, build
from actors.lab import wait_for
from actors.mailbox import Batch, Mailbox
from actors.stage import MIN_TICK_INTERVAL, Verdict
from actors.stages.base import GetStats, Outlet
from actors.stages.custom import start_stage
from actors.stages.ticker import TICK_INTERVAL, Ticker, TickTargets
from actors.testing import FakeClock, StageRunner, run

WAIT = 10.0


def udp(payload: bytes = b"x") -> Packet:
    return build.udp("10.0.0.1", "10.0.0.2", 1, 2, payload)


class Clocked(Stage):
    """Records the time of each packet and tick; releases a held packet on each tick."""

    tick_interval = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []
        self.ticks: list[float] = []
        self.held: list[Packet] = []

    def process(self, packet: Packet) -> Verdict:
        self.seen.append(self.now)
        if packet.payload == b"hold":
            self.held.append(packet)
            return None
        return packet

    def on_tick(self, now: float) -> list[Packet]:
        assert now == self.now
        self.ticks.append(now)
        out, self.held = self.held, []
        if out:
            self.reply(udp(b"released"))
        return out

    def stats_extra(self) -> dict[str, int]:
        return {"ticks": len(self.ticks)}


class Counter(Stage):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def process(self, packet: Packet) -> Packet:
        self.times.append(self.now)
        return packet


def test_each_batch_is_stamped_with_the_fake_clock() -> None:
    clock = FakeClock(100.0)
    with StageRunner(Clocked, clock=clock, batch_size=2) as runner:
        runner.feed([udp(), udp(), udp()])  # two batches, one time
        clock.advance(0.25)
        runner.feed([udp()])
        stage = runner.stages[0]
    assert isinstance(stage, Clocked)
    assert stage.seen == [100.0, 100.0, 100.0, 100.25]


def test_advance_fires_every_due_tick_at_its_exact_time() -> None:
    clock = FakeClock(10.0)
    with StageRunner(Clocked, Counter, clock=clock) as runner:
        runner.feed([udp(b"hold"), udp(b"hold")])
        result = runner.advance(3.5)
        clocked, counter = runner.stages
        assert isinstance(clocked, Clocked) and isinstance(counter, Counter)
        assert clocked.ticks == [11.0, 12.0, 13.0] and clock() == 13.5
        # what the first tick released went down the rest of the chain, at the tick's time
        assert [p.payload for p in result.passed] == [b"hold", b"hold"]
        assert counter.times == [11.0, 11.0]
        assert [p.payload for p in result.replies] == [b"released"]
        assert result.stats["clocked"]["ticks"] == 3
        # ticks that fell due before a feed run before its packets
        clock.advance(2.0)
        runner.feed([udp()])
        assert clocked.ticks == [11.0, 12.0, 13.0, 15.5]


def test_a_failing_on_tick_is_a_stage_error_and_restart_replaces() -> None:
    class BadTick(Stage):
        tick_interval = 0.5

        def on_tick(self, now: float) -> None:
            raise RuntimeError("tick bug")

    clock = FakeClock()
    with StageRunner(BadTick, clock=clock, on_error="restart") as runner:
        first = runner.stages[0]
        result = runner.advance(1.0)
        assert runner.stages[0] is not first and runner.stages[0].context.incarnation == 3
    assert result.restarts == 2 and [str(e) for e in result.errors] == ["tick bug"] * 2
    assert result.stats["badtick"]["failure"]["failing"]


def test_the_shortest_interval_is_the_tickers() -> None:
    assert MIN_TICK_INTERVAL == TICK_INTERVAL


@pytest.mark.parametrize("interval", [0.001, 0, -1, "1", True])
def test_a_tick_interval_below_the_clock_resolution_is_refused(interval: object) -> None:
    class TooFast(Stage):
        pass

    TooFast.tick_interval = interval  # type: ignore[assignment]
    with pytest.raises(ValueError, match="tick_interval"):
        run(TooFast, [])


def test_now_outside_a_batch_is_the_clock() -> None:
    clock = FakeClock(5.0)
    with StageRunner(Counter, clock=clock) as runner:
        assert runner.stages[0].now == 5.0
        clock.advance(1)
        assert runner.stages[0].now == 6.0
    with pytest.raises(TypeError, match="FakeClock"):
        StageRunner(Counter).advance(1)


# -- in the pipeline: arrival stamped by the reader, ticks through the control lane


class Slowpoke(Clocked):
    tick_interval = 0.1

    def process(self, packet: Packet) -> Verdict:
        time.sleep(0.02)  # later than the packets' arrival, whatever the machine does
        return super().process(packet)

    def stats_extra(self) -> dict[str, object]:
        return {"ticks": len(self.ticks), "first_seen": self.seen[:2]}


def test_a_running_stage_sees_the_arrival_time_and_passes_it_on() -> None:
    box, sink = Mailbox("clocked"), Mailbox("sink")
    ref = start_stage(Slowpoke, box, Outlet(sink))
    try:
        arrival = time.monotonic() - 1.0  # read a second ago
        assert box.push(Batch((udp(), udp()), arrival))
        wait_for(lambda: not sink.empty(), WAIT)
        out = sink.take()
        assert isinstance(out, Batch) and out.arrival == arrival and len(out) == 2
        snap = box.ask(GetStats(), WAIT)
        assert dict(snap.extra)["first_seen"] == [arrival, arrival]  # not when it got to them
    finally:
        ref.stop()


def test_the_ticker_ticks_custom_stages_through_their_control_lane() -> None:
    box, sink, decrypt = Mailbox("clocked"), Mailbox("sink"), Mailbox("decrypt")
    targets = TickTargets()
    targets.publish((box,))
    stage = start_stage(Slowpoke, box, Outlet(sink))
    ticker = Ticker.start(Mailbox("ticker"), decrypt, stages=targets)
    try:
        # 200 packets keep the stage busy for seconds; ticks overtake them (control first)
        for _ in range(200):
            box.push(Batch((udp(),), time.monotonic()))
        wait_for(lambda: dict(box.ask(GetStats(), WAIT).extra)["ticks"] >= 3, WAIT)
        assert box.ask(GetStats(), WAIT).packets_in < 200  # ticked while data was queued
    finally:
        ticker.stop()
        stage.stop()

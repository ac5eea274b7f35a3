"""A stage's counters where people look (issue 23 item 9): its own figures and replies in
`wgactors status` and Prometheus, kept across a restart, and one exception per failing packet
in actors.testing."""

from __future__ import annotations

from typing import Any

import pykka
from custom_stages import DropUdpPort
from test_live_daemon import promtool_check, sample
from wgsim import udp4

from actors import CONSUMED, Packet, Stage, build
from actors.faults import Fault
from actors.lab import wait_for
from actors.mailbox import Mailbox
from actors.metrics import MAX_EXTRA_METRICS, extra_metric_name, render
from actors.stage import Verdict
from actors.stages.base import GetStats
from actors.stages.custom import start_stage
from actors.status import render as render_status
from actors.supervisor import (
    Backoff,
    ChildSpec,
    GetSupervisorStats,
    Shutdown,
    Supervision,
    Supervisor,
)
from actors.testing import StageRunner

WAIT = 10.0


class Answerer(Stage):
    """Answers every packet, with figures of every kind."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = 0

    def process(self, packet: Packet) -> Verdict:
        self.answered += 1
        self.reply(packet)
        return CONSUMED

    def stats_extra(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "odd-name.x": 1.5,
            "note": "fine",
            "table": [{"a": 1}, {"a": 2}],
            "flag": True,
        }


def stages_info() -> dict[str, Any]:
    with StageRunner(Answerer, (DropUdpPort, {"port": 2})) as runner:
        runner.feed([build.udp("10.0.0.1", "10.0.0.2", 1, 2)] * 4)
        stats = runner.stats()
    return {
        "interface": "wg0",
        "public_key": None,
        "listen_port": 1,
        "fwmark": 0,
        "peers": [],
        "stages": {"mode": "actors", "stages": list(stats.values())},
    }


def test_status_text_shows_a_stages_own_figures_and_replies() -> None:
    text = render_status(stages_info())
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("answerer:")]
    for part in (
        "replies=4",
        "consumed=4",
        "answered=4",
        "odd-name.x=1.5",
        "note=fine",
        "table=(2 entries, see --json)",
    ):
        assert part in line, line
    assert any(
        ln.strip().startswith("dropudpport: ") and "udp_dropped=0" in ln for ln in text.splitlines()
    )


def test_prometheus_exports_numeric_figures_with_a_stage_label() -> None:
    text = render([stages_info()])
    labels = {"interface": "wg0", "stage": "answerer"}
    assert sample(text, "wgactors_stage_replies_total", **labels) == 4
    assert sample(text, "wgactors_stage_consumed_packets_total", **labels) == 4
    assert sample(text, "wgactors_stage_extra_answered", **labels) == 4
    assert sample(text, "wgactors_stage_extra_odd_name_x", **labels) == 1.5
    assert "wgactors_stage_extra_note" not in text and "wgactors_stage_extra_flag" not in text
    assert sample(text, "wgactors_stage_extra_udp_dropped", stage="dropudpport") == 0
    promtool_check(text)


def test_extra_names_are_sanitised_and_bounded() -> None:
    assert extra_metric_name("Rate (B/s)") == "wgactors_stage_extra_rate__b_s_"
    assert extra_metric_name("größe") == "wgactors_stage_extra_gr__e"
    many = {f"k{i}": i for i in range(MAX_EXTRA_METRICS + 10)}
    stage = {"name": "s", "failure": {}, **many}
    text = render([{"interface": "wg0", "peers": [], "stages": {"stages": [stage]}}])
    assert text.count("# TYPE wgactors_stage_extra_") == MAX_EXTRA_METRICS


def test_a_crash_restart_keeps_the_counters() -> None:
    """A custom stage that crashes (here: a fault injected on its 3rd batch) and is restarted
    by the supervisor continues its counters instead of starting at zero."""
    box = Mailbox("s")

    def start(b: Mailbox, sup: Supervision) -> pykka.ActorRef[Any]:
        fault = Fault(every=3).for_incarnation(sup.incarnation) if sup.incarnation == 1 else None
        return start_stage(DropUdpPort, b, None, options={"port": 9}, supervision=sup, fault=fault)

    sup = Supervisor.start(
        [ChildSpec("s", start, box)], backoff=Backoff(base=0.01, factor=1.0, jitter=0.0)
    )
    try:
        for _ in range(12):
            box.push((udp4("10.0.0.1", "10.0.0.2", dport=9),))
        children = lambda: sup.ask(GetSupervisorStats(), timeout=WAIT)["children"]  # noqa: E731
        wait_for(lambda: children()["s"]["incarnation"] == 2 and children()["s"]["alive"], WAIT)

        def counted() -> int:
            try:
                return int(box.ask(GetStats(), WAIT).packets_in)
            except (pykka.Timeout, pykka.ActorDeadError):
                return -1

        wait_for(lambda: counted() == 11, WAIT)  # 12 sent, the crashing batch's one lost
        snap = box.ask(GetStats(), WAIT)
        assert dict(snap.drops)["dropped"] == 11 and children()["s"]["lost"] == 1
    finally:
        sup.ask(Shutdown(), timeout=WAIT)
        sup.stop(block=True, timeout=WAIT)

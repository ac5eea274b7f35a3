"""Supervision of the real daemon: faults injected into each built-in stage under traffic.

The fault plan (``WGACTORS_INJECT_FAULTS``, test-only) makes a stage raise while it holds a
batch. The tunnel must carry on: a checksummed TCP transfer completes, the restart is logged
with the stage, the exception and the count, and the daemon still shuts down cleanly. A stage
that fails on every packet must end the process with status 3, interface removed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wgactors_proc import A4, B4, ROOT, Wgactors, wireguard_go_pair

pytestmark = pytest.mark.netns

TCPCHECK = str(ROOT / "tests" / "tcpcheck.py")
TRANSFER = 20 * 1024 * 1024
RESTART_WAIT = 5.0  # seconds to wait for an injected fault to have fired
ESCALATION_DEADLINE = 20.0  # seconds; the default budget and backoff need under 3
STAGES = ["udp_ingress", "decrypt", "tun_writer", "tun_reader", "encrypt", "ticker"]


def start_pair(netns_pair, tmp_path: Path, iface: str, fault: str):
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, iface)
    return wggo, Wgactors(netns_pair.a, conf, env={"WGACTORS_INJECT_FAULTS": fault})


def transfer(netns_pair, server_side, client_side, addr: str) -> tuple[str, str]:
    server = server_side.popen(
        sys.executable, TCPCHECK, "serve", "5201", stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    result = client_side.run(sys.executable, TCPCHECK, "send", addr, 5201, TRANSFER, timeout=120)
    server.wait(10)
    local, remote = result.stdout.split()
    return local, remote


@pytest.mark.parametrize("stage", STAGES)
def test_fault_in_each_stage_under_traffic(netns_pair, tmp_path: Path, stage: str) -> None:
    wggo, daemon = start_pair(netns_pair, tmp_path, "wgf0", f"{stage}:once=20")
    try:
        with daemon:
            ping = netns_pair.a.run("ping", "-c", "1", "-W", "2", B4, check=False)
            assert ping.returncode == 0, daemon.log()
            local, remote = transfer(netns_pair, netns_pair.b, netns_pair.a, B4)
            assert local == remote, daemon.log()[-3000:]
            local, remote = transfer(netns_pair, netns_pair.a, netns_pair.b, A4)
            assert local == remote, daemon.log()[-3000:]
            pattern = rf"stage {stage} failed: InjectedFault\(.*\); restart #1 in"
            deadline = time.monotonic() + RESTART_WAIT  # the ticker fails on a timer, not data
            while not re.search(pattern, daemon.log()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert re.search(pattern, daemon.log()), daemon.log()[-3000:]
            # the tunnel still works after the restart
            ping = netns_pair.a.run("ping", "-c", "2", "-i", "0.2", "-W", "2", B4, check=False)
            assert ping.returncode == 0, daemon.log()[-3000:]
            assert daemon.terminate() == 0
            final = daemon.log().split("final stats:")[-1]
            counted = re.search(rf"'name': '{stage}'.*?'restarts': (\d+)", final)
            assert counted and int(counted.group(1)) == 1, final
    finally:
        wggo.stop()


@pytest.mark.parametrize("plan", ["decrypt:always", "encrypt:start", "tun_writer:always"])
def test_a_stage_failing_every_time_ends_the_process_with_3(
    netns_pair, tmp_path: Path, plan
) -> None:
    wggo, daemon = start_pair(netns_pair, tmp_path, "wgf1", plan)
    try:
        daemon.start()  # "up" is logged before the stages start, so this works for all plans
        # steady traffic until the daemon gives up (data stages fail only when fed)
        pinger = netns_pair.a.popen(
            "ping", "-i", "0.05", "-c", "600", "-W", "1", B4, stdout=subprocess.DEVNULL
        )
        start = time.monotonic()
        try:
            code = daemon.proc.wait(ESCALATION_DEADLINE)
        finally:
            pinger.kill()
        assert code == 3, daemon.log()[-3000:]
        assert time.monotonic() - start < ESCALATION_DEADLINE
        assert not daemon.interface_exists()
        log = daemon.log()
        assert len(re.findall(r"ERROR .*shutting down: stage \w+ failed", log)) == 1, log[-3000:]
    finally:
        wggo.stop()


def test_on_start_failure_once_is_restarted(netns_pair, tmp_path: Path) -> None:
    wggo, daemon = start_pair(netns_pair, tmp_path, "wgf2", "encrypt:start-once")
    try:
        with daemon:
            ping = netns_pair.a.run("ping", "-c", "3", "-i", "0.2", "-W", "2", B4, check=False)
            assert ping.returncode == 0, daemon.log()
            assert "stage encrypt failed: InjectedFault" in daemon.log()
            assert daemon.terminate() == 0
    finally:
        wggo.stop()

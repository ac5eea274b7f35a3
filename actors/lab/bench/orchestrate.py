"""The bench's rounds: each case started fresh, measured and stopped, round-robin.

Every round runs every case once, in the registry's order, so that machine noise hits all cases
alike; a case that fails to start or measure is recorded in its result, and the next case still
runs. Stopping always happens, also for a case that failed half-way through starting.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..command import LabError
from ..pair import PLAIN_B, TUNNEL_B, Lab
from .cases import CASES, Case
from .measure import (
    METRICS,
    Bench,
    Counters,
    RunResult,
    Setup,
    measure,
    record_counters,
    record_tunnel,
    warm_up_case,
)

PROC_FIND_TIMEOUT = 5.0  # seconds for the a end's real process to appear under its launcher


def start_case(bench: Bench, case: Case, serial: int) -> Setup:
    """Start the case's tunnel ends (none for the plain link) and find the a end's process."""
    lab = bench.lab
    if not case.tunnel:
        return Setup(PLAIN_B, f"{lab.prefix}{lab.tag}pa")
    checkout = None
    if case.baseline:
        if bench.baseline is None:
            raise LabError(f"{case.key} needs --baseline CHECKOUT")
        checkout = bench.baseline
    tunnel = lab.tunnel(
        serial,
        bench.keys,
        case.wgactors_args,
        verbose=False,
        a_cpus=bench.pin.ours,
        b_cpus=bench.pin.peer,
        a_env=dict(case.env),
        a_checkout=checkout,
    )
    setup = Setup(TUNNEL_B, tunnel.a_end.iface, tunnel, checkout=checkout)
    deadline = time.monotonic() + PROC_FIND_TIMEOUT
    while (pid := tunnel.a_pid()) is None:
        if not tunnel.a_alive() or time.monotonic() > deadline:
            raise LabError("cannot find the a end's process")
        time.sleep(0.05)
    setup.pid = pid
    return setup


def run_case(bench: Bench, case: Case, round_no: int, serial: int) -> RunResult:
    """Start the case, measure it, stop it; failures go into the result."""
    result = RunResult(case.key, round_no)
    setup: Setup | None = None
    try:
        setup = start_case(bench, case, serial)
        if setup.pid is not None:
            result.extra["pid"] = setup.pid
        if setup.checkout is not None:
            result.extra["checkout"] = str(setup.checkout)
        warm_up_case(bench, setup)
        before = Counters.read(bench.lab, setup)
        measure(bench, setup, result, serial)
        record_counters(result, setup, before, Counters.read(bench.lab, setup))
        record_tunnel(result, setup)
        up, down = result.metrics.get("tcp_up_mbps"), result.metrics.get("tcp_down_mbps")
        if up is not None and down is not None:
            result.metrics["tcp_sum_mbps"] = up + down
        up_retrans, down_retrans = (result.extra.get(f"tcp_{d}_retrans") for d in ("up", "down"))
        if up_retrans is not None and down_retrans is not None:
            result.metrics["tcp_retrans"] = up_retrans + down_retrans
    except LabError as e:
        result.errors.append(f"setting up: {e}")
    finally:
        stop_case(bench.lab, case, result, setup)
    return result


def stop_case(lab: Lab, case: Case, result: RunResult, setup: Setup | None) -> None:
    """Stop the tunnel ends (also those of a case that failed while starting)."""
    tunnel = setup.tunnel if setup is not None else None
    if tunnel is None and case.tunnel and lab.tunnels:
        tunnel = lab.tunnels[-1]
    if tunnel is None:
        return
    logs = tunnel.logs() if result.errors else {}
    status = lab.stop_tunnel(tunnel)
    if case.is_wgactors:
        result.extra["exit_status"] = status
        if status != 0:
            result.errors.append(f"wgactors exited with {status} on SIGTERM")
    for name, text in logs.items():
        result.extra.setdefault("log_tails", {})[name] = "\n".join(text.splitlines()[-30:])


def run_rounds(bench: Bench, cases: Sequence[str], rounds: int) -> dict[str, list[RunResult]]:
    """Every case once per round, round-robin, printing each run's figures as it ends."""
    runs: dict[str, list[RunResult]] = {c: [] for c in cases}
    serial = 0
    for round_no in range(1, rounds + 1):
        for key in cases:
            serial += 1
            print(f"bench: round {round_no}/{rounds}: {CASES[key].label} ...", flush=True)
            r = run_case(bench, CASES[key], round_no, serial)
            runs[key].append(r)
            shown = ", ".join(
                f"{metric} {spec.format(r.metrics[metric])}"
                for metric, _, spec in METRICS
                if metric in r.metrics and metric not in ("tcp_sum_mbps", "tcp_retrans")
            )
            print(f"         {shown or 'no figures'}", flush=True)
            for e in r.errors:
                print(f"         FAILED: {e}", flush=True)
    return runs

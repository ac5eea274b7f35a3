"""``scripts/bench``'s command line: the options, and one bench run from preflight to verdict.

Exit status: 0 when every measurement worked, 1 when something broke (the failures are
listed), 130 when interrupted. A MISS of a target does not change it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import corebench, loadgen
from ..command import LabError, tail
from ..pair import Keys, Lab, preflight
from ..signals import interruptible
from ..wireguard_go import DEFAULT_BINARY
from . import hub, hubload
from .cases import (
    BASELINE_CASES,
    CASES,
    default_cases,
    parse_cases,
    parse_workers,
    with_baseline,
    with_workers,
)
from .measure import Bench, Pinning
from .orchestrate import run_rounds
from .report import json_report, machine_info, print_log_tails, print_machine, print_report
from .stats import check_targets, compare_to_baseline, compute_ratios, summarize

PREFIX = "wgb"  # namespaces wgb-TAG-a/b, interfaces and veths wgbTAG..., temp dir /tmp/wgb-TAG-*
QUICK_SECONDS, QUICK_ROUNDS = 1, 1


def parse_baseline(text: str) -> Path:
    """``--baseline``: a checkout of wgactors, the directory its launcher runs."""
    path = Path(text).expanduser().resolve()
    launcher = path / "scripts" / "wgactors"
    if not (path / "actors" / "__init__.py").is_file() or not launcher.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a wgactors checkout (no scripts/wgactors)")
    return path


def parse_reference(text: str) -> str:
    """``--reference``: a wireguard-go binary, made absolute (it runs under ``ip netns exec``
    and ``taskset``, whose PATH may differ)."""
    path = Path(text).expanduser().resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: not an executable file")
    return str(path)


def _bounded_int(low: int, high: int, what: str) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"{what} must be {low}..{high}")
        return n

    return parse


def parse_peers(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("peers must be numbers, e.g. 1000,10000") from None
    if not sizes or not all(1 <= n <= 131_072 for n in sizes):
        raise argparse.ArgumentTypeError("peers must be 1..131072")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark wgactors against wireguard-go in network namespaces.",
    )
    parser.add_argument(
        "--seconds", type=int, default=5, metavar="N", help="iperf3 seconds per run (5)"
    )
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds (3)")
    names = ", ".join(
        f"{key} ({', '.join(case.aliases)})" if case.aliases else key
        for key, case in CASES.items()
        if not case.baseline
    )
    parser.add_argument(
        "--cases",
        type=parse_cases,
        default=default_cases(),
        metavar="LIST",
        help=f"comma-separated subset of: {names}; default all but the spread ones",
    )
    parser.add_argument(
        "--baseline",
        type=parse_baseline,
        metavar="CHECKOUT",
        help="another checkout of wgactors (a git worktree of an older commit, with its own "
        ".venv or run on this one's): each chosen wgactors case also runs from there, as "
        "CASE@base, in the same rounds",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="peer side (wireguard-go in b, iperf3 server) on one half of the CPUs, the side "
        "under test (and the iperf3 client) on the other half",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROUNDS} round, {QUICK_SECONDS} s each"
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--core",
        action="store_true",
        help="also time the protocol core in process, per packet, next to the bare AEAD",
    )
    parser.add_argument("--core-only", action="store_true", help="only the --core measurement")
    parser.add_argument(
        "--peers",
        type=parse_peers,
        metavar="N[,N...]",
        help="instead: wgactors as a hub with N peers (e.g. 1000,10000,100000; "
        "see actors/lab/bench/hub.py)",
    )
    parser.add_argument(
        "--workers",
        type=parse_workers,
        metavar="N[,M...]",
        help="run the wgactors case with `--workers N` (a number or auto), one case per value "
        "(wgactors-wN), in the same rounds; without it the daemon gets no --workers flag",
    )
    parser.add_argument(
        "--reference",
        type=parse_reference,
        metavar="PATH",
        help="the wireguard-go binary for the reference case and for the peer in b "
        f"(default: {DEFAULT_BINARY} on PATH)",
    )
    parser.add_argument(
        "--hub-load",
        type=_bounded_int(1, loadgen.MAX_PEERS, "--hub-load"),
        metavar="K",
        help="instead: wgactors with K live peers, loaded each way by a low-cost generator "
        "that plays them all (see actors/lab/bench/hubload.py); --workers picks the cases",
    )
    parser.add_argument(
        "--hub-packets",
        type=_bounded_int(1, loadgen.MAX_PER_PEER, "--hub-packets"),
        default=loadgen.DEFAULT_PER_PEER,
        metavar="N",
        help=f"--hub-load: datagrams per peer and direction each round "
        f"({loadgen.DEFAULT_PER_PEER})",
    )
    parser.add_argument(
        "--hub-size",
        type=_bounded_int(loadgen.MIN_SIZE, 1280, "--hub-size"),
        default=loadgen.DEFAULT_SIZE,
        metavar="BYTES",
        help=f"--hub-load: inner IP packet size ({loadgen.DEFAULT_SIZE})",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = QUICK_SECONDS, QUICK_ROUNDS
    if not 1 <= args.seconds <= 600:
        parser.error("--seconds must be 1..600")
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be 1..100")
    if args.peers and args.hub_load:
        parser.error("--peers and --hub-load are two different runs: give one")
    if args.hub_load and args.reference:
        parser.error("--hub-load runs no wireguard-go: --reference does not apply")
    if args.workers and args.peers:
        parser.error("--workers does not apply to --peers")
    if args.workers and not args.hub_load:
        args.cases = with_workers(args.cases, args.workers)
    if args.baseline is not None:
        if args.peers or args.hub_load:
            parser.error("--baseline compares tunnel cases; it does not apply to --peers")
        args.cases = with_baseline(args.cases)
    elif any(c in BASELINE_CASES for c in args.cases):
        parser.error("an @base case needs --baseline CHECKOUT")
    return args


def bench_main(
    args: argparse.Namespace, lab: Lab, info: dict[str, Any], core: corebench.CoreCost | None
) -> int:
    started = time.monotonic()
    print(f"bench: namespaces {lab.ns_a} and {lab.ns_b}, temp dir {lab.tmp}", flush=True)
    pin = Pinning.split(list(os.sched_getaffinity(0))) if args.pin else Pinning()
    lab.create()
    if args.peers:
        return _hub(lab, args, started)
    if args.hub_load:
        return _hubload(lab, args, started, pin)
    bench = Bench(lab, Keys.fresh(), args.seconds, pin, args.baseline)
    if args.baseline is not None:
        print(f"bench: the @base cases run wgactors from {args.baseline}", flush=True)
    runs = run_rounds(bench, args.cases, args.rounds)
    errors = [
        f"round {r.round}, {case}: {e}" for case in args.cases for r in runs[case] for e in r.errors
    ]
    summary = {c: summarize(runs[c]) for c in args.cases}
    ratios = compute_ratios(summary)
    targets = check_targets(ratios, summary)
    comparison = compare_to_baseline(summary)
    print_report(args.cases, summary, ratios, targets, args.rounds, args.seconds, pin, comparison)
    if args.json:
        report = json_report(args, bench, info, runs, summary, ratios, targets, errors, comparison)
        report["core"] = core.as_dict() if core is not None else None
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_log_tails(runs)
    verdict = "all measurements worked" if not errors else f"{len(errors)} measurement(s) failed"
    print(f"\nbench: {verdict} ({time.monotonic() - started:.0f} s)")
    return 0 if not errors else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    core = None
    if args.core or args.core_only:
        # First, while the machine is quiet: in process, no namespaces, no root needed.
        core = corebench.measure()
        corebench.print_core(core)
        if args.core_only:
            if args.json:
                Path(args.json).write_text(json.dumps({"core": core.as_dict()}, indent=2) + "\n")
            return 0
    reason = preflight("bench")
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 1
    reference = args.reference or DEFAULT_BINARY
    info = machine_info(reference)
    print_machine(info)
    lab = Lab(prefix=PREFIX, wireguard_go=reference)
    try:
        with interruptible():  # on the way out the signals are ignored: clean-up runs whole
            return bench_main(args, lab, info, core)
    except KeyboardInterrupt as e:
        print(f"\nbench: interrupted ({e or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    except LabError as e:
        print(f"\nbench: {e}", file=sys.stderr)
        if e.log is not None:
            print(tail(e.log), file=sys.stderr)
        return 1
    finally:
        lab.close()


def _hub(lab: Lab, args: argparse.Namespace, started: float) -> int:
    results, errors = hub.main_hub(lab, args.peers, args.seconds)
    print()
    hub.print_hub_report(results)
    if args.json:
        report = {"ok": not errors, "hub": hub.to_json(results), "errors": errors}
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    verdict = "all measurements worked" if not errors else f"{len(errors)} failed"
    print(f"\nbench: {verdict} ({time.monotonic() - started:.0f} s)")
    return 0 if not errors else 1


def hub_load_settings(args: argparse.Namespace, pin: Pinning | None = None) -> hubload.HubLoad:
    return hubload.HubLoad(
        peers=args.hub_load,
        per_peer=args.hub_packets,
        size=args.hub_size,
        seconds=args.seconds,
        rounds=args.rounds,
        workers=tuple(args.workers) if args.workers else (None,),
        daemon_cpus=pin.ours if pin else None,
        generator_cpus=pin.peer if pin else None,
    )


def _hubload(lab: Lab, args: argparse.Namespace, started: float, pin: Pinning) -> int:
    report, errors = hubload.main_hubload(lab, hub_load_settings(args, pin))
    if args.json:
        report["namespaces"] = [lab.ns_a, lab.ns_b]
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    verdict = "all measurements worked" if not errors else f"{len(errors)} failed"
    print(f"\nbench: {verdict} ({time.monotonic() - started:.0f} s)")
    return 0 if not errors else 1

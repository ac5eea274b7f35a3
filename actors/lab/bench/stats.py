"""The bench's arithmetic: medians over the rounds, ratios between cases, the targets.

Everything here is a pure function of the rounds' figures, so it is tested without a lab.
Ratios come from the medians; a target whose figures are missing is SKIP, not MISS.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from .cases import BASELINE_SUFFIX, WGACTORS_CASES, WORKERS_PREFIX, is_workers_case
from .measure import HIGHER_IS_BETTER, METRICS, RunResult

TARGET_UPDOWN_RATIO = 1.0  # actors against wireguard-go, TCP up + down
TARGET_EACH_DIRECTION = 0.9  # actors against wireguard-go, upload and download each
TARGET_ACTORS_VS_SINGLE = 0.95
TARGET_RSS_MB = 80.0
TARGET_LATENCY_OVER_SINGLE_MS = 0.1  # actors' added idle latency over single-threaded's
TARGET_TWO_WORKERS_VS_ONE = 0.95  # one peer, TCP up+down, --workers 2 over --workers 1


def summarize(
    runs: Sequence[RunResult], keys: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """{"median"|"min"|"max": {metric: value}} over the runs that have the metric."""
    out: dict[str, dict[str, float]] = {"median": {}, "min": {}, "max": {}}
    for key in keys if keys is not None else [k for k, _, _ in METRICS]:
        values = [r.metrics[key] for r in runs if key in r.metrics]
        if values:
            out["median"][key] = statistics.median(values)
            out["min"][key] = min(values)
            out["max"][key] = max(values)
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def difference(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def compute_ratios(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Each case against the reference and against the plain veth, from the medians."""
    med = {case: s["median"] for case, s in summary.items()}
    ref, veth = med.get("reference", {}), med.get("veth", {})
    out: dict[str, Any] = {}
    for case, m in med.items():
        if case == "veth":
            continue
        out[case] = {
            "up_vs_reference": ratio(m.get("tcp_up_mbps"), ref.get("tcp_up_mbps")),
            "down_vs_reference": ratio(m.get("tcp_down_mbps"), ref.get("tcp_down_mbps")),
            "updown_vs_reference": ratio(m.get("tcp_sum_mbps"), ref.get("tcp_sum_mbps")),
            "pps_vs_reference": ratio(m.get("udp_pps"), ref.get("udp_pps")),
            "added_idle_latency_ms": difference(m.get("ping_idle_ms"), ref.get("ping_idle_ms")),
            "updown_share_of_veth": ratio(m.get("tcp_sum_mbps"), veth.get("tcp_sum_mbps")),
            "pps_share_of_veth": ratio(m.get("udp_pps"), veth.get("udp_pps")),
            "latency_over_veth_ms": difference(m.get("ping_idle_ms"), veth.get("ping_idle_ms")),
            "peak_rss_mb": m.get("rss_mb"),
        }
    out["actors_vs_single_updown"] = ratio(
        med.get("wgactors", {}).get("tcp_sum_mbps"),
        med.get("wgactors-single", {}).get("tcp_sum_mbps"),
    )
    workers = [c for c in med if is_workers_case(c) and not c.endswith(BASELINE_SUFFIX)]
    if len(workers) >= 2:
        first = med[workers[0]]
        out["workers_vs_first"] = {
            "first": workers[0],
            "cases": {
                c: {
                    "updown": ratio(med[c].get("tcp_sum_mbps"), first.get("tcp_sum_mbps")),
                    "retrans": ratio(med[c].get("tcp_retrans"), first.get("tcp_retrans")),
                }
                for c in workers[1:]
            },
        }
    if "wgactors-spread" in med or "wgactors-single-spread" in med:
        out["actors_vs_single_updown_spread"] = ratio(
            med.get("wgactors-spread", {}).get("tcp_sum_mbps"),
            med.get("wgactors-single-spread", {}).get("tcp_sum_mbps"),
        )
    return out


def check_targets(
    ratios: dict[str, Any], summary: dict[str, dict[str, dict[str, float]]]
) -> list[dict[str, Any]]:
    actors = ratios.get("wgactors", {})
    single = ratios.get("wgactors-single", {})
    rss_values = [
        summary[c]["max"]["rss_mb"]
        for c in WGACTORS_CASES
        if c in summary and "rss_mb" in summary[c]["max"]
    ]
    up, down = actors.get("up_vs_reference"), actors.get("down_vs_reference")
    updown = actors.get("updown_vs_reference")
    both = None if None in (updown, up, down) else (updown, up, down)
    targets: list[tuple[str, Any, Callable[[Any], bool], Callable[[Any], str]]] = [
        (
            f"actors ≥ {TARGET_UPDOWN_RATIO:.1f}x wireguard-go up+down, "
            f"≥ {TARGET_EACH_DIRECTION:.1f}x each way",
            both,
            lambda v: v[0] >= TARGET_UPDOWN_RATIO and min(v[1:]) >= TARGET_EACH_DIRECTION,
            lambda v: f"{v[0]:.2f}x (up {v[1]:.2f}x, down {v[2]:.2f}x)",
        ),
        (
            f"actors ≥ {TARGET_ACTORS_VS_SINGLE:g}x single-threaded (up+down)",
            ratios.get("actors_vs_single_updown"),
            lambda v: v >= TARGET_ACTORS_VS_SINGLE,
            lambda v: f"{v:.2f}x",
        ),
        (
            f"actors' added idle latency ≤ single-threaded's"
            f" + {TARGET_LATENCY_OVER_SINGLE_MS:g} ms",
            difference(actors.get("added_idle_latency_ms"), single.get("added_idle_latency_ms")),
            lambda v: v <= TARGET_LATENCY_OVER_SINGLE_MS,
            lambda v: (
                f"{v:+.3f} ms (actors {actors['added_idle_latency_ms']:+.3f}, "
                f"single {single['added_idle_latency_ms']:+.3f})"
            ),
        ),
        (
            f"peak RSS ≤ {TARGET_RSS_MB:g} MB (highest of any round, both wgactors modes)",
            max(rss_values) if rss_values else None,
            lambda v: v <= TARGET_RSS_MB,
            lambda v: f"{v:.1f} MB",
        ),
    ]
    one, two = summary.get(f"{WORKERS_PREFIX}1"), summary.get(f"{WORKERS_PREFIX}2")
    if one is not None and two is not None:
        # Only when both ran: a run without --workers keeps the four targets above.
        pair = (
            ratio(two["median"].get("tcp_sum_mbps"), one["median"].get("tcp_sum_mbps")),
            two["median"].get("tcp_retrans"),
            one["median"].get("tcp_retrans"),
        )
        targets.append(
            (
                f"2 workers ≥ {TARGET_TWO_WORKERS_VS_ONE:g}x 1 worker (TCP up+down), "
                "retransmissions no higher",
                None if None in pair else pair,
                lambda v: v[0] >= TARGET_TWO_WORKERS_VS_ONE and v[1] <= v[2],
                lambda v: f"{v[0]:.2f}x, retransmissions {v[1]:.0f} against {v[2]:.0f}",
            )
        )
    out = []
    for name, value, ok, shown in targets:
        status = "SKIP" if value is None else ("PASS" if ok(value) else "MISS")
        text = "not measured" if value is None else shown(value)
        plain = value[0] if isinstance(value, tuple) else value
        out.append({"target": name, "value": plain, "status": status, "shown": text})
    return out


def compare_to_baseline(
    summary: dict[str, dict[str, dict[str, float]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each case that has its baseline twin in ``summary``, metric by metric: the tree's median
    over the baseline's (``ratio``), and whether the tree's median is worse than the worst of
    the baseline's rounds (``worse``): the round-to-round range is the noise a change has to
    get out of before it counts."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for case, s in summary.items():
        base = summary.get(case + BASELINE_SUFFIX)
        if case.endswith(BASELINE_SUFFIX) or base is None:
            continue
        rows: dict[str, dict[str, Any]] = {}
        for key, _, _ in METRICS:
            now, then = s["median"].get(key), base["median"].get(key)
            if now is None or then is None:
                continue
            higher_better = key in HIGHER_IS_BETTER
            worse = now < base["min"][key] if higher_better else now > base["max"][key]
            rows[key] = {"ratio": ratio(now, then), "worse": worse}
        out[case] = rows
    return out

"""In-process microbenchmark of a hop: what a batch pays to cross one mailbox between stages.

A chain of pass-through stages (``process_batch`` returns its input, so no per-packet work is
measured) ends in a sink. Two figures per batch size:

- **pipelined**: the sender keeps the chain full; µs per batch per hop, in wall time and in CPU
  time of the whole process, is the cost of a hop when stages are busy (locks, envelopes, stats,
  dispatch). CPU time is the figure to trust on a loaded machine.
- **one at a time**: the sender waits for each batch to reach the sink before sending the next;
  µs per batch per hop is the latency of a hop, wake-ups included.

With ``--per-packet`` the pass-through stages implement ``process`` instead (a no-op stage as
users write one), so the runner's loop over the packets is in the figure. ``--stage`` measures
no hop at all: the ns per packet of the runner alone (:class:`actors.runner.Runner`) around a
no-op ``process`` and a no-op ``process_batch``, and of stamping a batch with its arrival time.

Context switches of the whole process (``/proc/self/task/*/status``) are counted per 1000
packets. Each figure is the best of ``--rounds`` runs, since other load only adds time.
Everything is bounded: a fixed number of batches and a deadline per case.

    .venv/bin/python scripts/hopbench.py [--hops 4] [--batches 2000] [--sizes 1,4,64]

:func:`measure` is importable, so other scripts can report the same figures.
"""

from __future__ import annotations

import argparse
import glob
import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from actors.mailbox import Batch, Mailbox
from actors.packet import Packet
from actors.stage import Stage
from actors.stages.base import Outlet
from actors.stages.custom import start_stage

__all__ = ["HopFigures", "measure"]

DEADLINE = 60.0  # seconds one case may take before it is abandoned
PACKET = Packet(bytes.fromhex("4500001c00004000401100007f0000017f000001") + bytes(8))


class _Pass(Stage):
    def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
        return list(batch)


class _PassEach(Stage):
    def process(self, packet: Packet) -> Packet:
        return packet


_SINKS: list[_Sink] = []  # the sink instance, so the sender can read its counters


class _Sink(Stage):
    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.target = 0
        self.done = threading.Event()
        _SINKS.append(self)

    def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
        self.seen += len(batch)
        if self.seen >= self.target:
            self.done.set()
        return []


@dataclass(frozen=True)
class HopFigures:
    batch_size: int
    pipelined_us: float  # per batch per hop, chain kept full
    pipelined_cpu_us: float  # CPU time of the process per batch per hop, chain kept full
    one_at_a_time_us: float  # per batch per hop, one batch in flight
    ctx_per_1000_packets: float  # context switches of the process, pipelined case


def _context_switches() -> int:
    total = 0
    for path in glob.glob("/proc/self/task/*/status"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def _chain(hops: int, per_packet: bool = False) -> tuple[list[object], Mailbox, _Sink]:
    """Start ``hops`` pass-through stages feeding a sink; (refs, first mailbox, sink)."""
    refs: list[object] = []
    sink_box = Mailbox("sink", 100_000)
    sink_ref = start_stage(_Sink, sink_box, None)
    refs.append(sink_ref)
    sink = _SINKS.pop()
    nxt = sink_box
    for i in range(hops - 1):
        box = Mailbox(f"hop{i}", 100_000)
        refs.append(start_stage(_PassEach if per_packet else _Pass, box, Outlet(nxt)))
        nxt = box
    return refs, nxt, sink


def _run(
    first: Mailbox, sink: _Sink, batch: tuple[Packet, ...], count: int, wait_each: bool
) -> tuple[float, float]:
    sink.seen = 0
    sink.done.clear()
    sink.target = count * len(batch)
    start = time.perf_counter()
    cpu = time.process_time()
    deadline = time.monotonic() + DEADLINE
    if wait_each:
        for i in range(count):
            sink.target = (i + 1) * len(batch)
            sink.done.clear()
            first.push(Batch(batch, time.monotonic()))
            if not sink.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("hop bench: the chain stalled")
    else:
        for _ in range(count):
            first.push(Batch(batch, time.monotonic()))
        if not sink.done.wait(DEADLINE):
            raise TimeoutError("hop bench: the chain stalled")
    return time.perf_counter() - start, time.process_time() - cpu


def measure(
    hops: int = 4,
    batches: int = 2000,
    sizes: tuple[int, ...] = (1, 4, 64),
    rounds: int = 3,
    per_packet: bool = False,
) -> list[HopFigures]:
    """Figures per batch size for a chain of ``hops`` mailboxes (the sender's push included),
    each the best of ``rounds`` runs."""
    refs, first, sink = _chain(hops, per_packet)
    out = []
    try:
        for size in sizes:
            batch = (PACKET,) * size
            _run(first, sink, batch, min(200, batches), False)  # warm up
            best = [float("inf")] * 4
            n_one = max(1, batches // 4)
            for _ in range(rounds):
                ctx0 = _context_switches()
                wall, cpu = _run(first, sink, batch, batches, False)
                ctx = _context_switches() - ctx0
                wall1, _ = _run(first, sink, batch, n_one, True)
                for k, v in enumerate((wall / batches, cpu / batches, wall1 / n_one, ctx)):
                    best[k] = min(best[k], v)
            out.append(
                HopFigures(
                    size,
                    best[0] / hops * 1e6,
                    best[1] / hops * 1e6,
                    best[2] / hops * 1e6,
                    best[3] / (batches * size) * 1000,
                )
            )
    finally:
        for ref in refs:
            ref.stop()  # type: ignore[attr-defined]
    return out


def stage_costs(batches: int = 2000, rounds: int = 7) -> dict[str, float]:
    """ns per packet, 64-packet batches, best of ``rounds``: the runner around a no-op
    ``process`` and a no-op ``process_batch``, and a batch's arrival stamp."""
    from actors.runner import Runner

    batch = (PACKET,) * 64
    out: dict[str, float] = {}
    for label, cls in (("process", _PassEach), ("process_batch", _Pass)):
        runner = Runner(cls, label)
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(batches):
                runner.run(batch, 0.0)
            best = min(best, time.perf_counter() - start)
        out[f"runner_{label}_ns"] = best / (batches * len(batch)) * 1e9
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batches):
            Batch(batch, time.monotonic()).items  # noqa: B018  (the cost of making and reading one)
        best = min(best, time.perf_counter() - start)
    out["arrival_stamp_ns"] = best / (batches * len(batch)) * 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hops", type=int, default=4)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--sizes", default="1,4,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--per-packet", action="store_true", help="stages implement process")
    parser.add_argument("--stage", action="store_true", help="the runner alone, ns per packet")
    args = parser.parse_args()
    if args.stage:
        costs = stage_costs(args.batches)
        if args.json:
            print(json.dumps(costs))
        else:
            for key, value in costs.items():
                print(f"{key:>24} {value:8.1f}")
        return
    sizes = tuple(int(s) for s in args.sizes.split(","))
    figures = measure(args.hops, args.batches, sizes, args.rounds, args.per_packet)
    if args.json:
        print(json.dumps([asdict(f) for f in figures]))
        return
    print(f"{args.hops} hops; µs per batch per hop, best of {args.rounds}")
    print(
        f"{'batch':>5} {'pipelined':>10} {'pipelined CPU':>14} {'one at a time':>14} "
        f"{'ctx/1000 pkts':>14}"
    )
    for f in figures:
        print(
            f"{f.batch_size:>5} {f.pipelined_us:>10.2f} {f.pipelined_cpu_us:>14.2f} "
            f"{f.one_at_a_time_us:>14.2f} {f.ctx_per_1000_packets:>14.1f}"
        )


if __name__ == "__main__":
    main()

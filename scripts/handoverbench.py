"""What the hand-over between workers costs per packet (:mod:`actors.io.handover`).

One process hands batches of packets to another over a real channel, as one worker hands the
host's packets to the owner of their peer: the sender packs and sends, the receiver receives,
unpacks and validates each packet (``Packet``). Reported, per packet: CPU time of the sender and
of the receiver (``process_time``: the figure to trust on a loaded machine), wall time of the
whole run, and the share dropped because the receiver's queue was full. Each figure is the best
of ``--rounds`` runs, since other load only adds time. Bounded: a fixed number of batches, and a
deadline per run.

    .venv/bin/python scripts/handoverbench.py [--batches 2000] [--batch 64] [--size 1280]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.io.handover import HandOverReceiver, HandOverSender, open_channels
from actors.packet import Packet

RUN_DEADLINE = 60.0  # seconds one run may take
IDLE_END = 0.5  # seconds without a record after the sender is done: the receiver stops
PACING = 0.001  # seconds the sender waits for room before each batch (select on the door)


def _packet(size: int, seq: int) -> Packet:
    header = bytes([0x45, 0, size >> 8, size & 0xFF, 0, 0, 0, 0, 64, 17, 0, 0])
    header += bytes([10, 0, 0, 1, 10, 0, 0, 2])
    return Packet(header + seq.to_bytes(4, "big") + bytes(size - 24))


def run(batches: int, batch: int, size: int) -> dict[str, float]:
    (channel,) = open_channels(1)
    packets = [_packet(size, i) for i in range(batch)]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the owner: receive until the sender is done and the inbox is quiet
        os.close(read_end)
        receiver = HandOverReceiver(channel.inbox)
        got, cpu = 0, time.process_time()
        deadline = time.monotonic() + RUN_DEADLINE
        while time.monotonic() < deadline:
            if not select.select([channel.inbox], [], [], IDLE_END)[0]:
                break
            got += len(receiver.receive().packets)
        cpu = time.process_time() - cpu
        os.write(write_end, json.dumps({"got": got, "cpu": cpu}).encode())
        os._exit(0)
    os.close(write_end)
    sender = HandOverSender([channel.door])
    start, cpu = time.monotonic(), time.process_time()
    for _ in range(batches):
        select.select([], [channel.door], [], PACING)
        sender.packets(0, packets)
        sender.flush()
    send_cpu = time.process_time() - cpu
    report = json.loads(os.read(read_end, 4096))
    wall = time.monotonic() - start - IDLE_END
    os.waitpid(child, 0)
    os.close(read_end)
    channel.inbox.close()
    channel.door.close()
    handed = batches * batch
    got = max(report["got"], 1)
    return {
        "send_cpu_us": send_cpu / handed * 1e6,
        "receive_cpu_us": report["cpu"] / got * 1e6,
        "wall_us": wall / got * 1e6,
        "dropped_share": sender.drops["handover_full"] / handed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=1280)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = [run(args.batches, args.batch, args.size) for _ in range(args.rounds)]
    best = {key: min(r[key] for r in results) for key in results[0]}
    print(
        f"hand-over, batch {args.batch} x {args.size} B, best of {args.rounds}: "
        f"sender {best['send_cpu_us']:.2f} us/packet CPU, receiver "
        f"{best['receive_cpu_us']:.2f} us/packet CPU, {best['wall_us']:.2f} us/packet wall, "
        f"{best['dropped_share']:.1%} dropped (queue full)"
    )


if __name__ == "__main__":
    main()

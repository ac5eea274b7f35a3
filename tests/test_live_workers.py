"""Issue 24, live: worker processes against real wireguard-go peers, in namespaces.

wgactors in namespace a with several wireguard-go peers in namespace b (actors.lab.fleet),
run with one worker (today's daemon) and with two worker processes:

* traffic both ways for every peer;
* `wg show` of the two-worker daemon is the one-worker daemon's, field for field (timestamps
  and byte counts aside, which no two runs share);
* `wg set` adds a peer to the worker with the fewest and removes one from its owner;
* SIGHUP reloads the custom stages of every worker;
* a worker killed with SIGKILL is restarted with its peers, which carry traffic again, while
  the other worker's peers lose no ping;
* a checksummed TCP transfer through one peer, with its retransmissions compared.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from netns import Netns
from wgactors_proc import LAUNCHER, Wgactors

from actors.lab import reachable, wait_until
from actors.lab.fleet import Fleet, fleet, fleet_peer

pytestmark = pytest.mark.netns

PEERS = 4
WORKERS = [pytest.param(1, id="1worker"), pytest.param(2, id="2workers")]
STATUS_TIMEOUT = 30.0
HANDSHAKE_DEADLINE = 15.0
RESTART_DEADLINE = 5.0  # the target: its peers carry traffic again within 5 s
STEADY_INTERVAL = 0.1  # the other worker's peers are pinged this often while one is killed
STEADY_COUNT = 150  # ... this many times (15 s at most)
STEADY_SECONDS = 40


@dataclass
class Bed:
    a: Netns
    b: Netns
    fleet: Fleet
    daemon: Wgactors
    tmp: Path

    def status(self) -> dict[str, Any]:
        out = self.a.run(
            str(LAUNCHER), "status", self.daemon.iface, "--json", timeout=STATUS_TIMEOUT
        ).stdout
        info: dict[str, Any] = json.loads(out)
        return info

    def wg(self, *args: str) -> str:
        return self.a.run("wg", *args, timeout=STATUS_TIMEOUT).stdout


@contextmanager
def bed(netns_pair: Any, tmp_path: Path, workers: int, *extra: str) -> Iterator[Bed]:
    iface = f"wgw{secrets.token_hex(3)}"
    crew = fleet(
        netns_pair.b,
        tmp_path,
        iface,
        PEERS,
        their_underlay=netns_pair.addr_b4,
        our_underlay=netns_pair.addr_a4,
    )
    with ExitStack() as stack:
        for peer in crew.peers:
            stack.enter_context(peer.wggo)
        daemon = stack.enter_context(
            Wgactors(netns_pair.a, crew.conf, "--workers", str(workers), *extra)
        )
        yield Bed(netns_pair.a, netns_pair.b, crew, daemon, tmp_path)


def owners(info: dict[str, Any]) -> dict[int, int]:
    """Worker -> how many peers it owns, from `status --json`."""
    return {w["worker"]: w["peers"] for w in info["stages"].get("workers", [])}


def worker_pids(info: dict[str, Any]) -> list[int]:
    return [w["pid"] for w in info["stages"]["workers"]]


def masked_dump(text: str) -> list[list[str]]:
    """`wg show IFACE dump` with what differs between any two runs masked: the latest
    handshake (a time) and the byte counts."""
    rows = [line.split("\t") for line in text.strip().splitlines()]
    for row in rows[1:]:
        row[4], row[5], row[6] = "-", "-", "-"
    return rows


def all_reachable(bed: Bed) -> None:
    for peer in bed.fleet.peers:
        # from our address toward that peer: the interface holds one per peer
        assert reachable(bed.a, peer.theirs, count=5, source=peer.ours), (
            f"a cannot reach peer {peer.number}"
        )
        assert reachable(bed.b, peer.ours, count=5, source=peer.theirs), (
            f"peer {peer.number} cannot reach a"
        )


@pytest.mark.parametrize("workers", WORKERS)
def test_every_peer_carries_traffic_both_ways(
    netns_pair: Any, tmp_path: Path, workers: int
) -> None:
    with bed(netns_pair, tmp_path, workers) as b:
        all_reachable(b)
        info = b.status()
        if workers == 1:
            assert info["stages"]["mode"] == "actors" and "workers" not in info["stages"]
        else:
            assert info["stages"]["mode"] == "workers"
            assert sorted(owners(info)) == [0, 1]
            assert sum(owners(info).values()) == PEERS
            assert max(owners(info).values()) - min(owners(info).values()) <= 1
            pids = worker_pids(info)
            assert len(set(pids)) == 2 and b.daemon.proc is not None
            assert b.daemon.proc.pid not in pids
            # summed stages: the decrypt stage of both workers together took in datagrams
            by_name = {s["name"]: s for s in info["stages"]["stages"]}
            per_worker = [
                {s["name"]: s for s in w["stages"]} for w in info["stages"]["workers"]
            ]
            assert by_name["decrypt"]["packets_in"] == sum(
                w["decrypt"]["packets_in"] for w in per_worker
            )
            assert all(w["decrypt"]["packets_in"] > 0 for w in per_worker)

"""Hostile traffic against a live `wgactors up`, with a real wireguard-go peer carrying on.

Three namespaces (the lab, ``tests/hostile.py``): wgactors in ``a``, the legitimate
wireguard-go peer in ``b`` (on the ``netns_pair`` veth), and a *stranger* in its own namespace,
joined to ``a`` by a second veth.
The stranger knows what anyone on the path can know: wgactors's address, port and public key,
and whatever datagrams it can capture. Everything it sends is bounded in count and in time, and
stays inside the namespaces the test creates.

* a flood of junk (every size, every message type, unknown indices) during a checksummed TCP
  transfer;
* a flood of initiations with a valid mac1 (computed from the public key), which must put
  wgactors under load (cookie replies, per-source rate limiting) while the real peer still
  completes a handshake;
* captured transport datagrams (and an initiation) replayed from the stranger: dropped as
  replays, and no roaming;
* a peer sending from an inner address outside its AllowedIPs: dropped.

Figures (what one handshake costs in-process, what the floods cost the daemon) are printed, not
asserted: run with ``-s`` to see them.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import (
    A4,
    A6,
    B4,
    B4_EXTRA,
    B6,
    B6_EXTRA,
    OUR_PORT,
    Attacker,
    Flood,
    Lab,
    drops_of,
    final_stats,
    hostile_lab,
)
from netns import Netns, socket_in
from wgactors_proc import ROOT

from actors.lab import reachable, wait_until
from actors.wireguard import Device, PeerConfig, Transmit, generate_private_key
from actors.wireguard.actions import HandshakeWanted
from actors.wireguard.crypto import public_key
from actors.wireguard.keys import decode_key

pytestmark = pytest.mark.netns

TCPCHECK = str(ROOT / "tests" / "tcpcheck.py")
TRANSFER_BYTES = 20 * 1024 * 1024
TRANSFER_TIMEOUT = 120.0

# Bounds of the floods: each stops at whichever comes first.
JUNK_MAX, JUNK_SECONDS, JUNK_RATE = 20_000, 10.0, 8_000
JUNK_LEAD = 0.3  # seconds of flood before the transfer starts
MAC1_MAX, MAC1_SECONDS, MAC1_RATE = 60_000, 14.0, 5_000
MAC2_MAX, MAC2_SECONDS, MAC2_RATE = 2_000, 3.0, 1_000
LEGIT_HANDSHAKE_DEADLINE = 14.0  # wireguard-go retries 5 s after a cookie: two rounds fit
BENCH_ROUNDS = 200
COUNT_WAIT = 10.0  # seconds the daemon may take to count datagrams sent to it
WALL = 1.7e9  # UNIX time at monotonic 0 for the in-process handshakes


def _say(title: str, figures: dict[str, Any]) -> None:
    print(f"\n[hostile] {title}")
    for k, v in figures.items():
        print(f"[hostile]   {k}: {v:.1f}" if isinstance(v, float) else f"[hostile]   {k}: {v}")


# --------------------------------------------------------------------------- helpers


def stage_of(stages: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(s for s in stages if s.get("name") == name)


def status_stages(info: dict[str, Any]) -> list[dict[str, Any]]:
    return list((info.get("stages") or {}).get("stages") or [])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kernel_drops(ns: Netns) -> int:
    """Datagrams the kernel dropped in ``ns`` before any socket reader saw them: UDP receive
    errors (a full receive buffer, memory pressure; IPv4 and IPv6) and packets the links
    dropped on the way in. What a flood can lose before the daemon counts anything."""
    snmp = ns.run("cat", "/proc/net/snmp").stdout
    rows = [ln.split() for ln in snmp.splitlines() if ln.startswith("Udp:")]
    total = int(rows[1][rows[0].index("InErrors")])
    snmp6 = ns.run("cat", "/proc/net/snmp6").stdout
    total += sum(int(ln.split()[1]) for ln in snmp6.splitlines() if ln.startswith("Udp6InErrors"))
    for line in ns.run("cat", "/proc/net/dev").stdout.splitlines()[2:]:
        total += int(line.split(":", 1)[1].split()[3])  # receive "drop"
    return total


def daemon_pid(lab: Lab) -> int:
    """`ip netns exec` and the launcher both exec, so Popen's pid is the Python daemon."""
    assert lab.daemon.proc is not None
    pid = lab.daemon.proc.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"actors.cli" in cmdline, cmdline
    return pid


# --------------------------------------------------------------------------- junk


def junk(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Random datagrams of every size 0..1500 in turn, interleaved with every message type
    carrying random bytes: initiations (bad mac1), responses and cookie replies to random
    receiver indices, and transport packets with unknown indices."""
    size = 0
    while True:
        yield "random", rng.randbytes(size)
        size = (size + 1) % 1501
        yield "initiation", b"\x01\x00\x00\x00" + rng.randbytes(144)
        yield (
            "response",
            struct.pack("<III", 2, rng.getrandbits(32), rng.getrandbits(32)) + rng.randbytes(80),
        )
        yield "cookie_reply", struct.pack("<II", 3, rng.getrandbits(32)) + rng.randbytes(56)
        header = struct.pack("<IIQ", 4, rng.getrandbits(32), rng.getrandbits(64))
        yield "transport", header + rng.randbytes(rng.randrange(16, 1485))


# --------------------------------------------------------------------------- 1. junk flood


def test_junk_flood_during_transfer(netns_pair, tmp_path: Path) -> None:
    with hostile_lab(netns_pair, tmp_path) as lab:
        assert reachable(lab.b, A4, count=1), lab.daemon.log()
        pid = daemon_pid(lab)
        server = lab.a.popen(
            sys.executable, TCPCHECK, "serve", "5201", stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        before = status_stages(lab.status())
        kernel_lost_before = kernel_drops(lab.a)
        sock = socket_in(lab.stranger, socket.AF_INET)
        flood = Flood(
            sock,
            lab.target,
            junk(random.Random(1)),
            max_count=JUNK_MAX,
            max_seconds=JUNK_SECONDS,
            rate=JUNK_RATE,
        )
        client = None
        try:
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            flood.start()
            time.sleep(JUNK_LEAD)
            # the real peer uploads into wgactors's decrypt path, the one the flood competes for
            client = lab.b.popen(
                sys.executable,
                TCPCHECK,
                "send",
                A4,
                "5201",
                str(TRANSFER_BYTES),
                stdout=subprocess.PIPE,
                text=True,
            )
            t_transfer = time.monotonic()
            out, _ = client.communicate(timeout=TRANSFER_TIMEOUT)
            transfer_s = time.monotonic() - t_transfer
            result = flood.finish()
        finally:
            flood.stop()
            sock.close()
            if client is not None and client.poll() is None:
                client.kill()
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        assert lab.daemon.proc is not None and lab.daemon.proc.poll() is None, lab.daemon.log()
        after = status_stages(lab.status())
        assert client.returncode == 0, out
        local, remote = out.split()
        assert local == remote, lab.daemon.log()[-3000:]
        assert server.wait(10) == 0
        # the tunnel still works, both ways, and the stranger did not move the peer
        assert reachable(lab.b, A4), lab.daemon.log()[-3000:]
        assert reachable(lab.a, B4), lab.daemon.log()[-3000:]
        burst = junk_burst(lab, pid)
        assert lab.daemon.proc.poll() is None, lab.daemon.log()[-3000:]
        assert reachable(lab.b, A4), lab.daemon.log()[-3000:]
        assert lab.status()["peers"][0]["endpoint"] == lab.peer_endpoint
        kernel_lost = kernel_drops(lab.a) - kernel_lost_before
        assert lab.daemon.terminate() == 0
        stages = final_stats(lab.daemon.log())
        drops = drops_of(stages)
        assert drops["malformed"] > 0, drops
        assert drops["bad_mac1"] > 0, drops
        assert drops["unknown_index"] > 0, drops
        # every junk datagram that reached the daemon is counted once, under one of these; the
        # kernel's receive-buffer drops (junk or tunnel traffic) are the only slack
        hostile = sum(
            drops[k] - drops_of(before)[k] for k in ("malformed", "bad_mac1", "unknown_index")
        )
        delivered = result.sent - result.errors + burst["sent"] - burst["send errors"]
        assert delivered - kernel_lost <= hostile <= delivered, (hostile, delivered, kernel_lost)
        absorbed = (
            stage_of(after, "udp_ingress")["packets_in"]
            - stage_of(before, "udp_ingress")["packets_in"]
        )
        _say(
            "junk flood during a 20 MB upload through the tunnel",
            {
                "flood datagrams sent": result.sent,
                "flood seconds": result.seconds,
                "flood kinds": dict(result.kinds),
                f"transfer seconds (started {JUNK_LEAD:.1f} s into the flood)": transfer_s,
                "transfer Mbit/s": TRANSFER_BYTES * 8 / transfer_s / 1e6,
                "datagrams the daemon read (flood + tunnel)": absorbed,
                "... per s over the flood + transfer window": absorbed / (t1 - t0),
                "daemon CPU % (of one core) over the window": 100 * (cpu1 - cpu0) / (t1 - t0),
                "hostile drops counted": {
                    k: drops[k] for k in ("malformed", "bad_mac1", "unknown_index")
                },
                "junk counted / sent, both floods (kernel buffer drops)": (
                    f"{hostile} / {result.sent + burst['sent']} ({kernel_lost})"
                ),
                "all drops": dict(drops),
            },
        )
        _say("the same junk, unpaced (one sender as fast as it goes)", burst)


def junk_burst(lab: Lab, pid: int) -> dict[str, Any]:
    """JUNK_MAX junk datagrams as fast as one sender can: what the daemon absorbs when it is
    overrun, and what that costs it. Waits (bounded) for the daemon to drain its socket."""

    def read_so_far() -> int:
        return stage_of(status_stages(lab.status()), "udp_ingress")["packets_in"]

    start_count = read_so_far()
    sock = socket_in(lab.stranger, socket.AF_INET)
    flood = Flood(
        sock,
        lab.target,
        junk(random.Random(4)),
        max_count=JUNK_MAX,
        max_seconds=JUNK_SECONDS,
        rate=float("inf"),
    )
    try:
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        flood.start()
        result = flood.finish()
    finally:
        flood.stop()
        sock.close()
    count, t_last = start_count, time.monotonic()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now_count = read_so_far()
        if now_count == count:
            break
        count, t_last = now_count, time.monotonic()
    cpu = cpu_seconds(pid) - cpu0
    absorbed = count - start_count
    return {
        "sent": result.sent,
        "send errors": result.errors,
        "send seconds": result.seconds,
        "read by the daemon": absorbed,
        "lost before the daemon (kernel socket buffer)": result.sent - absorbed,
        "daemon read per s (until drained, +-0.5 s)": absorbed / max(t_last - t0, 1e-3),
        "daemon CPU seconds": cpu,
        "datagrams per daemon CPU second": absorbed / cpu if cpu else float("nan"),
    }


# --------------------------------------------------------------------------- 2. mac1 flood


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def measure_core_costs() -> dict[str, float]:
    """What the protocol core spends on one datagram of each kind, in-process (median of
    BENCH_ROUNDS): a valid initiation (a whole responder handshake), and what a flood costs."""
    from loguru import logger

    logger.disable("actors")
    try:
        a_priv, b_priv = generate_private_key(), generate_private_key()
        a_pub, b_pub = public_key(a_priv), public_key(b_priv)
        now = 1000.0
        initiator, responder = Device(a_priv), Device(b_priv)
        initiator.add_peer(PeerConfig(b_pub, endpoint=("192.0.2.2", 51820)), now)
        responder.add_peer(PeerConfig(a_pub), now)
        source = ("192.0.2.1", 51820)
        valid: list[float] = []
        for _ in range(BENCH_ROUNDS):
            now += 10.0  # past the 5 s rekey timeout and the 50 ms initiation rate limit
            sent = initiator.handle(HandshakeWanted(b_pub), now, WALL + now)
            data = next(a.data for a in sent if isinstance(a, Transmit))
            t = time.perf_counter()
            out = responder.receive(data, source, now, WALL + now)
            valid.append(time.perf_counter() - t)
            assert any(isinstance(a, Transmit) and a.data[0] == 2 for a in out)
        assert responder.events["initiations_answered"] == BENCH_ROUNDS

        rng = random.Random(2)
        attacker = Attacker(b_pub, rng)
        loaded = Device(b_priv, under_load_threshold=0)  # always under load: cookie replies
        loaded.add_peer(PeerConfig(a_pub), now)
        costs: dict[str, list[float]] = {"cookie": [], "bad_mac1": [], "unknown_index": []}
        junk_init = b"\x01\x00\x00\x00" + rng.randbytes(144)
        transport = struct.pack("<IIQ", 4, 12345, 0) + rng.randbytes(100)
        for i in range(BENCH_ROUNDS):
            now += 0.001
            for name, device, data in (
                ("cookie", loaded, attacker.initiation()),
                ("bad_mac1", loaded, junk_init),
                ("unknown_index", loaded, transport),
            ):
                t = time.perf_counter()
                out = device.receive(data, (f"198.51.100.{i % 200}", 40000), now, WALL + now)
                costs[name].append(time.perf_counter() - t)
        assert loaded.drops["cookie_sent"] == BENCH_ROUNDS
        return {
            "valid initiation -> response (us, median)": _median_us(valid),
            "valid-mac1 garbage under load -> cookie reply (us, median)": _median_us(
                costs["cookie"]
            ),
            "bad mac1 (us, median)": _median_us(costs["bad_mac1"]),
            "transport, unknown index (us, median)": _median_us(costs["unknown_index"]),
        }
    finally:
        logger.enable("actors")


def test_mac1_flood_cookies_rate_limit_and_peer_still_handshakes(
    netns_pair, tmp_path: Path
) -> None:
    costs = measure_core_costs()
    with hostile_lab(netns_pair, tmp_path) as lab:
        assert reachable(lab.a, B4, count=1), lab.daemon.log()
        pid = daemon_pid(lab)
        attacker = Attacker(decode_key(lab.our_pub), random.Random(3))
        sock, receiver = lab.stranger_socket()
        flood = Flood(
            sock,
            lab.target,
            attacker.stream(),
            max_count=MAC1_MAX,
            max_seconds=MAC1_SECONDS,
            rate=MAC1_RATE,
        )
        try:
            before = status_stages(lab.status())
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            flood.start()
            # under load, wgactors answers with cookies instead of doing handshakes
            cookie_seen = wait_until(lambda: bool(receiver.cookie_replies()), 5.0)
            assert cookie_seen, lab.daemon.log()[-3000:]
            first_cookie_s = time.monotonic() - t0
            # the real peer must handshake again, in the middle of the flood
            legit_ok, legit_s = lab.handshake_again(LEGIT_HANDSHAKE_DEADLINE)
            flood_still_running = flood.is_alive()
            mac1_result = flood.stop()
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            mid = status_stages(lab.status())
            assert legit_ok, (lab.daemon.log()[-3000:], lab.wggo.log_text()[-3000:])
            assert flood_still_running, "the flood ended before the real peer's handshake"

            # with a cookie for its own address the attacker passes mac2: rate limiting decides
            cookies = receiver.cookie_replies()
            assert any(attacker.take_cookie(r) for r in cookies)
            flood = Flood(
                sock,
                lab.target,
                attacker.stream(),
                max_count=MAC2_MAX,
                max_seconds=MAC2_SECONDS,
                rate=MAC2_RATE,
            )
            flood.start()
            mac2_result = flood.finish()
            # a new handshake from the real peer right after the flood works too
            time.sleep(1.5)  # the under-load state lasts one second after the flood
            lab.readd_peer_on_wireguard_go()
            assert reachable(lab.b, A4), lab.daemon.log()[-3000:]
            assert reachable(lab.a, B4), lab.daemon.log()[-3000:]
        finally:
            flood.stop()
            receiver.stop()
            sock.close()
        info = lab.status()
        assert info["peers"][0]["endpoint"] == lab.peer_endpoint
        assert lab.daemon.terminate() == 0
        drops = drops_of(final_stats(lab.daemon.log()))
        assert drops["cookie_sent"] > 0, drops
        assert drops["rate_limited"] > 0, drops
        assert drops["bad_handshake"] > 0, drops  # the few the rate limiter let through
        wggo_log = lab.wggo.log_text()
        absorbed = (
            stage_of(mid, "udp_ingress")["packets_in"]
            - stage_of(before, "udp_ingress")["packets_in"]
        )
        _say("in-process cost of one datagram in the protocol core", costs)
        _say(
            "valid-mac1 initiation flood",
            {
                "phase 1 (mac1 only) sent": mac1_result.sent,
                "phase 1 seconds": mac1_result.seconds,
                "phase 1 send errors": mac1_result.errors,
                "first cookie reply after (s)": first_cookie_s,
                "cookie replies received by the stranger": len(cookies),
                "datagrams the daemon read per s (phase 1)": absorbed / (t1 - t0),
                "daemon CPU % (of one core), phase 1": 100 * (cpu1 - cpu0) / (t1 - t0),
                "real peer's handshake + ping during the flood took (s)": legit_s,
                "wireguard-go got a cookie from us": "Receiving cookie response" in wggo_log,
                "phase 2 (valid mac2) sent": mac2_result.sent,
                "phase 2 seconds": mac2_result.seconds,
                "drops": {
                    k: drops[k]
                    for k in ("cookie_sent", "rate_limited", "bad_handshake", "bad_mac1")
                },
            },
        )


# --------------------------------------------------------------------------- 3. replay


def sniff_wireguard(sock: socket.socket, src: str, dport: int, timeout: float = 1.0) -> list[bytes]:
    """UDP payloads from ``src`` to port ``dport`` that an AF_PACKET (SOCK_DGRAM, ETH_P_IP)
    socket has queued (IPv4 header onwards), until it stays quiet for ``timeout``."""
    sock.settimeout(timeout)
    src_packed = socket.inet_aton(src)
    out = []
    for _ in range(10_000):
        try:
            frame = sock.recv(65536)
        except TimeoutError:
            break
        if len(frame) < 28 or frame[0] >> 4 != 4 or frame[9] != 17 or frame[12:16] != src_packed:
            continue
        ihl = (frame[0] & 15) * 4
        _sport, udp_dport = struct.unpack_from("!HH", frame, ihl)
        if udp_dport == dport:
            out.append(bytes(frame[ihl + 8 :]))
    return out


def test_replayed_datagrams_are_dropped_and_do_not_roam(netns_pair, tmp_path: Path) -> None:
    with hostile_lab(netns_pair, tmp_path) as lab:
        sniffer = socket_in(lab.a, socket.AF_PACKET)
        veth_a = netns_pair.veth_a
        sniffer.bind((veth_a, 0x0800))  # ETH_P_IP, on the link from the real peer
        try:
            # wireguard-go initiates (it has our endpoint) and sends data: capture all of it
            assert reachable(lab.b, A4, count=5), lab.daemon.log()
            captured = sniff_wireguard(sniffer, lab.addr_b4, OUR_PORT)
        finally:
            sniffer.close()
        initiations = [d for d in captured if d[0] == 1 and len(d) == 148]
        transport = [d for d in captured if d[0] == 4 and len(d) > 32]
        assert initiations and len(transport) >= 5, [(d[0], len(d)) for d in captured]

        before = lab.status()
        assert before["peers"][0]["endpoint"] == lab.peer_endpoint
        before_drops = drops_of(status_stages(before))
        sock = socket_in(lab.stranger, socket.AF_INET)
        try:
            for data in transport + initiations:
                sock.sendto(data, lab.target)
                time.sleep(0.01)
        finally:
            sock.close()
        # until every replayed datagram is counted (the stage may still be reading them)
        deadline = time.monotonic() + COUNT_WAIT
        while True:
            after = lab.status()
            after_drops = drops_of(status_stages(after))
            replayed = after_drops["replay"] - before_drops["replay"]
            stale = after_drops["stale_timestamp"] - before_drops["stale_timestamp"]
            done = replayed >= len(transport) and stale >= len(initiations)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert replayed == len(transport), (before_drops, after_drops)
        assert stale == len(initiations), (before_drops, after_drops)
        # no roaming: the peer is still reached where it really is, and the tunnel works
        assert after["peers"][0]["endpoint"] == lab.peer_endpoint, after
        assert reachable(lab.a, B4), lab.daemon.log()[-3000:]
        assert lab.status()["peers"][0]["endpoint"] == lab.peer_endpoint
        assert lab.daemon.terminate() == 0
        drops = drops_of(final_stats(lab.daemon.log()))
        assert drops["replay"] >= len(transport), drops
        _say(
            "replay from the stranger",
            {
                "transport datagrams replayed": len(transport),
                "initiations replayed": len(initiations),
                "counted replay": replayed,
                "counted stale_timestamp": stale,
                "endpoint after": after["peers"][0]["endpoint"],
            },
        )


# --------------------------------------------------------------------------- 4. inner source


def test_inner_source_outside_allowed_ips_is_dropped(netns_pair, tmp_path: Path) -> None:
    extra = (f"{B4_EXTRA}/24", f"{B6_EXTRA}/64")
    with hostile_lab(netns_pair, tmp_path, wggo_extra=extra) as lab:
        # the peer's allowed addresses work (and establish the session)
        assert reachable(lab.b, A4, count=2, source=B4), lab.daemon.log()
        assert reachable(lab.b, A6, count=2, source=B6), lab.daemon.log()
        before = drops_of(status_stages(lab.status()))
        assert before["source_not_allowed"] == 0, before
        # wireguard-go encrypts these for us (A4/A6 are in its AllowedIPs for us), but their
        # inner sources are outside what we allow that peer
        assert not reachable(lab.b, A4, count=3, source=B4_EXTRA)
        assert not reachable(lab.b, A6, count=3, source=B6_EXTRA)
        after = drops_of(status_stages(lab.status()))
        spoofed = after["source_not_allowed"] - before["source_not_allowed"]
        assert spoofed >= 6, (before, after)
        assert reachable(lab.b, A4, count=1, source=B4), lab.daemon.log()
        assert lab.daemon.terminate() == 0
        drops = drops_of(final_stats(lab.daemon.log()))
        assert drops["source_not_allowed"] >= 6, drops
        _say("inner source outside AllowedIPs", {"counted source_not_allowed": spoofed})

"""A TUN interface with one queue per worker: real devices in a namespace the test makes, the
host's own sockets sending into them.

What worker processes rely on: every packet the host sends is read once, from one queue; all
packets of one flow come from the same queue, in the order sent (no reordering within a flow);
a detached queue gets nothing; and a non-persistent interface lives exactly as long as one of
its queues is open."""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from ippkt import ipv4
from netns import Netns, entered, require_root_netns

from actors.io.offloads import OffloadPlan
from actors.io.tun import TunDevice, TunError, open_queues

IFACE = "wgq0"
LOCAL = ipaddress.ip_interface("10.77.0.1/24")
TARGET = "10.77.0.2"  # routed into the device; nobody answers
FLOWS = 32  # UDP flows (source ports); 32 over 4 queues leaves none empty but by 4 * (3/4)**32
PER_ROUND = 5  # packets per flow per round, sent interleaved across flows
ROUNDS = 4  # 32 * 5 = 160 packets a round: well under a queue's 500-packet ring
READ_DEADLINE = 10.0  # seconds for the packets of one round to be read
DRAIN_WAIT = 0.2  # seconds a queue must stay silent to count as empty
LINK_DEADLINE = 5.0  # seconds for the kernel to remove an interface
PORT = 9100
_TAG = struct.Struct("!HH")  # flow, sequence number: the UDP payload

Read = tuple[int, int, int]  # queue, flow, sequence


@pytest.fixture
def ns() -> Iterator[Netns]:
    require_root_netns()
    with Netns() as namespace:
        yield namespace


class Flows:
    """FLOWS UDP sockets (one flow each) sending tagged datagrams to TARGET."""

    def __init__(self) -> None:
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(FLOWS)]
        self.sent = [0] * FLOWS

    def send_round(self) -> int:
        for _ in range(PER_ROUND):
            for flow, sock in enumerate(self.socks):
                sock.sendto(_TAG.pack(flow, self.sent[flow]), (TARGET, PORT))
                self.sent[flow] += 1
        return FLOWS * PER_ROUND

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def _read(queues: list[TunDevice], want: int, deadline: float) -> list[Read]:
    """Tagged packets read from any queue, until ``want`` of them or the deadline; after
    ``want``, queues are drained a little longer so that a duplicate would show."""
    readers = [q.make_reader() for q in queues]
    drops: Counter[str] = Counter()
    got: list[Read] = []
    poll = select.poll()
    for q in queues:
        if q.attached:
            poll.register(q.fd, select.POLLIN)
    settle = None
    while time.monotonic() < deadline:
        if len(got) >= want:
            settle = settle or time.monotonic() + DRAIN_WAIT
            if time.monotonic() > settle:
                break
        for fd, _ in poll.poll(50):
            i = next(n for n, q in enumerate(queues) if q.fd == fd)
            for packet in queues[i].read_batch(64, drops, None, readers[i]):
                data = packet.data
                if data[9] == socket.IPPROTO_UDP and data[16:20] == socket.inet_aton(TARGET):
                    flow, seq = _TAG.unpack_from(data, 28)
                    got.append((i, flow, seq))
    for r in readers:
        r.close()
    return got


def _details(ns: Netns) -> str:
    return ns.ip("-d", "link", "show", "dev", IFACE).stdout


def _up(queues: list[TunDevice]) -> None:
    queues[0].configure([LOCAL])


@pytest.mark.parametrize(
    ("count", "offloads"),
    [(2, frozenset[str]()), (4, frozenset[str]()), (2, frozenset({"tun_tso", "tun_uso"}))],
    ids=["2-queues", "4-queues", "2-queues-vnet"],
)
def test_each_flow_is_read_whole_and_in_order_from_one_queue(
    ns: Netns, count: int, offloads: frozenset[str]
) -> None:
    with entered(ns):
        queues = open_queues(IFACE, count, offloads=OffloadPlan(wanted=offloads))
        flows = Flows()
        try:
            assert f"multi_queue numqueues {count} numdisabled 0" in _details(ns)
            assert all(q.vnet_hdr == bool(offloads) for q in queues)  # the flags carry over
            _up(queues)
            got: list[Read] = []
            for _ in range(ROUNDS):
                want = len(got) + flows.send_round()
                got += _read(queues, want - len(got), time.monotonic() + READ_DEADLINE)
        finally:
            flows.close()
            for q in queues:
                q.close()
    tags = [(flow, seq) for _, flow, seq in got]
    assert sorted(tags) == [(f, s) for f in range(FLOWS) for s in range(ROUNDS * PER_ROUND)]
    by_flow: dict[int, list[Read]] = {}
    for read in got:
        by_flow.setdefault(read[1], []).append(read)
    for flow, reads in by_flow.items():
        assert len({q for q, _, _ in reads}) == 1, f"flow {flow} read from several queues"
        assert [s for _, _, s in reads] == list(range(ROUNDS * PER_ROUND)), f"flow {flow}"
    assert len({q for q, _, _ in got}) == count  # the kernel spread the flows over all queues


def test_a_flow_goes_to_the_queue_that_wrote_its_last_inbound_packet(ns: Netns) -> None:
    """The kernel's flow table: a packet written on a queue marks its flow (by a hash that is
    the same both ways), and the host's packets of that flow then go to that queue. The worker
    that owns a peer writes its decrypted packets on its own queue, so the replies come back
    to it and need no hand-over."""
    count = 4
    with entered(ns):
        queues = open_queues(IFACE, count)
        flows = Flows()
        try:
            _up(queues)
            for sock in flows.socks:
                sock.bind((str(LOCAL.ip), 0))
            got: list[Read] = []
            for _ in range(ROUNDS):
                for flow, sock in enumerate(flows.socks):
                    port = sock.getsockname()[1]
                    udp = struct.pack("!HHHH", PORT, port, 8, 0)  # no checksum: allowed in IPv4
                    os.write(queues[flow % count].fd, ipv4(TARGET, str(LOCAL.ip), 17, udp))
                sent = flows.send_round()
                got += _read(queues, sent, time.monotonic() + READ_DEADLINE)
        finally:
            flows.close()
            for q in queues:
                q.close()
    assert len(got) == FLOWS * PER_ROUND * ROUNDS
    assert all(queue == flow % count for queue, flow, _ in got)


def test_a_detached_queue_gets_nothing_and_its_share_goes_to_the_others(ns: Netns) -> None:
    with entered(ns):
        queues = open_queues(IFACE, 2)
        flows = Flows()
        try:
            _up(queues)
            queues[1].detach()
            assert not queues[1].attached
            assert "numqueues 1 numdisabled 1" in _details(ns)
            sent = flows.send_round()
            got = _read(queues, sent, time.monotonic() + READ_DEADLINE)
            assert {q for q, _, _ in got} == {0} and len(got) == sent
            reader = queues[1].make_reader()
            assert queues[1].read_batch(64, Counter(), None, reader) == []
            reader.close()
            queues[1].attach()
            sent = flows.send_round()
            got = _read(queues, sent, time.monotonic() + READ_DEADLINE)
            assert {q for q, _, _ in got} == {0, 1} and len(got) == sent
        finally:
            flows.close()
            for q in queues:
                q.close()


def _link_present(ns: Netns) -> bool:
    return not ns.link_gone(IFACE)


def _wait_gone(ns: Netns) -> bool:
    deadline = time.monotonic() + LINK_DEADLINE
    while _link_present(ns) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _link_present(ns)


def test_the_interface_lives_while_any_queue_is_open_even_detached(ns: Netns) -> None:
    """The worker-restart case: the queue a worker read is kept (detached) by its parent; the
    interface, not persistent, stays with its addresses, and a new queue can join it."""
    with entered(ns):
        queues = open_queues(IFACE, 2)
        try:
            _up(queues)
            queues[0].close()  # the queue that created the interface
            assert _link_present(ns)
            with pytest.raises(TunError):
                queues[0].open_queue()  # a closed queue cannot vouch for the interface
            queues[1].detach()  # the only descriptor left holds no attached queue
            assert _link_present(ns)
            assert "10.77.0.1/24" in ns.ip("addr", "show", "dev", IFACE).stdout
            fresh = queues[1].open_queue()  # a restarted worker's queue
            flows = Flows()
            try:
                sent = flows.send_round()
                got = _read([fresh], sent, time.monotonic() + READ_DEADLINE)
                assert len(got) == sent
            finally:
                flows.close()
                fresh.close()
            assert _link_present(ns)
        finally:
            queues[1].close()
        assert _wait_gone(ns)


def test_one_queue_is_the_plain_device_it_always_was(ns: Netns) -> None:
    with entered(ns):
        (tun,) = open_queues(IFACE, 1)
        try:
            assert "multi_queue" not in _details(ns)
            with pytest.raises(TunError):
                tun.open_queue()
            with pytest.raises(TunError):
                tun.detach()
        finally:
            tun.close()
        assert _wait_gone(ns)
        with pytest.raises(TunError):
            open_queues(IFACE, 0)

"""The UAPI socket server in-process, with a controller that records what it is asked: how
clients are served (many at once, idle ones, slow readers), one answer per request as
wireguard-go gives it, and no byte of a key in any log line at any level.

The live tests (`wg` against a daemon in a namespace) are in test_live_dropin.py."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from loguru import logger

from actors import uapi_server
from actors.uapi import EINVAL, EPROTO, SetRequest, UapiError
from actors.uapi_server import UapiServer

WAIT = 30.0  # seconds any bounded wait below may take (a loaded machine is slow, not wrong)
PRIV = bytes.fromhex("48f08dd7084a56f0b9a5" + "17c3e2a94d6b805f1e27c9a03b84d56e7f1029384756")
PSK = bytes.fromhex("9c1e7a3b5d2f408e6a1c3b5d7f9e0a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3f")
PUB = bytes(range(32))

BODY = f"private_key={PRIV.hex()}\nlisten_port=51820\n"


class Recorder:
    """A controller that answers at once, serialised as the real one is."""

    def __init__(self, body: str = BODY) -> None:
        self.body = body
        self.sets: list[SetRequest] = []
        self.gets = 0
        self.lock = threading.Lock()
        self.fail_set: UapiError | None = None

    def get(self) -> Iterator[str]:
        with self.lock:
            self.gets += 1
            return iter([self.body])

    def set(self, request: SetRequest) -> None:
        with self.lock:
            if self.fail_set is not None:
                raise self.fail_set
            self.sets.append(request)

    def stats(self) -> str:
        return "{}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[UapiServer]:
    srv = UapiServer("wgt", Recorder(), directory=tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def connect(srv: UapiServer) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(WAIT)
    s.connect(str(srv.path))
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything until the server closes the connection (a close that leaves bytes we sent
    unread is a reset, after what it had sent us)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            data += chunk
    return data


def read_reply(s: socket.socket) -> bytes:
    """One reply: up to and including its errno line and blank line (or until closed), and not
    a byte of the next one."""
    data = b""
    while True:
        peek = s.recv(1 << 22, socket.MSG_PEEK)
        if not peek:
            return data
        end = re.search(rb"(^|\n)errno=-?\d+\n\n", peek)
        want = len(peek) if end is None else end.end()
        while want:
            chunk = s.recv(want)
            data += chunk
            want -= len(chunk)
        if end is not None:
            return data


def request(srv: UapiServer, data: bytes) -> bytes:
    with connect(srv) as s:
        s.sendall(data)
        return read_reply(s)


def wait_for(predicate, timeout: float = WAIT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# -- one answer per request, as wireguard-go


def test_get(server: UapiServer) -> None:
    assert request(server, b"get=1\n\n") == (BODY + "errno=0\n\n").encode()


def test_get_followed_by_junk_gets_one_errno_then_the_connection_closes(
    server: UapiServer,
) -> None:
    with connect(server) as s:
        s.sendall(b"get=1\njunk\n\n")
        assert read_all(s) == b"errno=-22\n\n"


def test_get_with_one_trailing_byte_then_a_request_as_wireguard_go_reads_it(
    server: UapiServer,
) -> None:
    """wireguard-go reads exactly one byte after `get=1\\n`; the rest is the next operation."""
    with connect(server) as s:
        s.sendall(b"get=1\nxget=1\n\n")
        assert read_reply(s) == b"errno=-22\n\n"
        assert read_reply(s) == (BODY + "errno=0\n\n").encode()


def test_requests_pipelined_on_one_connection_each_get_one_answer(server: UapiServer) -> None:
    with connect(server) as s:
        s.sendall(b"get=1\n\nset=1\nlisten_port=1\n\nget=1\n\n")
        assert read_reply(s) == (BODY + "errno=0\n\n").encode()
        assert read_reply(s) == b"errno=0\n\n"
        assert read_reply(s) == (BODY + "errno=0\n\n").encode()
        s.shutdown(socket.SHUT_WR)
        assert read_all(s) == b""


def test_thousands_of_pipelined_requests_each_get_their_answer(server: UapiServer) -> None:
    """Answers written at once must not nest one call per request (the loop would die)."""
    count = 5000
    with connect(server) as s:
        s.sendall(b"get=1\nx" * count + b"get=1\n\n")
        for _ in range(count):
            assert read_reply(s) == f"errno={EINVAL}\n\n".encode()
        assert read_reply(s) == (BODY + "errno=0\n\n").encode()
    assert request(server, b"get=1\n\n").endswith(b"errno=0\n\n")


def test_connection_closes_after_a_failed_set(server: UapiServer) -> None:
    with connect(server) as s:
        s.sendall(b"set=1\nlisten_port=x\n\n")
        assert read_reply(s) == f"errno={EINVAL}\n\n".encode()
        with contextlib.suppress(OSError):
            s.sendall(b"get=1\n\n")
        assert read_all(s) == b""


def test_connection_closes_after_a_set_the_controller_refuses(tmp_path: Path) -> None:
    controller = Recorder()
    controller.fail_set = UapiError(-98, "port in use")
    srv = UapiServer("wgt", controller, directory=tmp_path)
    srv.start()
    try:
        with connect(srv) as s:
            s.sendall(b"set=1\nlisten_port=1\n\nget=1\n\n")
            assert read_all(s) == b"errno=-98\n\n"
    finally:
        srv.stop()


def test_unknown_operation_is_closed_without_an_answer(server: UapiServer) -> None:
    with connect(server) as s:
        s.sendall(b"hello\n\n")
        assert read_all(s) == b""


def test_set_cut_short_is_answered_eproto(server: UapiServer) -> None:
    with connect(server) as s:
        s.sendall(b"set=1\nlisten_port=1\n")
        s.shutdown(socket.SHUT_WR)
        assert read_all(s) == f"errno={EPROTO}\n\n".encode()


def test_oversized_lines(server: UapiServer) -> None:
    with connect(server) as s:
        s.sendall(b"set=1\nlisten_port=" + b"1" * 10_000 + b"\n\n")
        assert read_all(s) == f"errno={EPROTO}\n\n".encode()
    with connect(server) as s:
        s.sendall(b"x" * 10_000 + b"\n")
        assert read_all(s) == b""
    assert request(server, b"get=1\n\n").endswith(b"errno=0\n\n")


# -- every client served


def test_a_thousand_concurrent_gets_are_all_answered(server: UapiServer) -> None:
    """wireguard-go answers 1,000 of 1,000; a thread per client capped at 16 answered ~106."""
    clients = 1000

    def one(_: int) -> bytes:
        try:
            return request(server, b"get=1\n\n")
        except OSError as e:
            return repr(e).encode()

    with ThreadPoolExecutor(200) as pool:
        replies = list(pool.map(one, range(clients)))
    good = sum(r.endswith(b"errno=0\n\n") for r in replies)
    assert good == clients, [r for r in replies if not r.endswith(b"errno=0\n\n")][:3]


def test_idle_clients_cost_nothing_to_others(server: UapiServer) -> None:
    """Many more silent clients than the old cap of 16 threads; a get is still answered at
    once, and then the silent ones are still connected (nobody was turned away)."""
    idle = [connect(server) for _ in range(100)]
    try:
        assert wait_for(lambda: server.connections() == len(idle))
        assert request(server, b"get=1\n\n").endswith(b"errno=0\n\n")
        with connect(server) as s:  # a client half-way through a request, silent
            s.sendall(b"set=1\nlisten_port=1\n")
            assert request(server, b"get=1\n\n").endswith(b"errno=0\n\n")
        assert server.connections() >= len(idle)
    finally:
        for s in idle:
            s.close()


def test_a_client_that_does_not_read_its_reply_holds_up_nobody(tmp_path: Path) -> None:
    big = "".join(f"public_key={i:064x}\nallowed_ip=10.0.0.1/32\n" for i in range(100_000))
    srv = UapiServer("wgt", Recorder(big), directory=tmp_path)
    srv.start()
    try:
        with connect(srv) as slow:
            slow.sendall(b"get=1\n\n")
            first = slow.recv(1)  # its reply has begun, and it reads no more
            for _ in range(3):
                assert request(srv, b"set=1\nlisten_port=1\n\n") == b"errno=0\n\n"
            assert first + read_reply(slow) == (big + "errno=0\n\n").encode()
    finally:
        srv.stop()


def test_silent_clients_are_dropped_after_the_deadline(
    server: UapiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uapi_server, "CONNECTION_TIMEOUT", 0.3)
    with connect(server) as s:
        s.sendall(b"set=1\nlisten_port=1\n")
        assert read_all(s) == b""  # closed, without an answer to a request never finished


def test_at_the_connection_bound_the_longest_idle_client_makes_room(
    server: UapiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uapi_server, "EVICT_AFTER", 0.0)
    server.max_connections = 5
    idle = [connect(server) for _ in range(5)]
    try:
        assert wait_for(lambda: server.connections() == 5)
        assert request(server, b"get=1\n\n").endswith(b"errno=0\n\n")
        assert idle[0].recv(1) == b""  # the oldest was closed for it
        assert server.connections() <= 5
    finally:
        for s in idle:
            s.close()


# -- no key in any log line


def _key_runs(key: bytes) -> set[str]:
    h = key.hex()
    return {h[i : i + 8] for i in range(len(h) - 7)}


def test_no_byte_of_a_key_reaches_a_log_line_at_any_level(server: UapiServer) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{level} {message}")
    p, k = PRIV.hex(), PSK.hex()
    try:
        for data in (
            f"private_key={p}\n\n",  # an operation line that is a key
            f"preshared_key={k}\n\n",
            f"{p}\n\n",
            f"{p.upper()}\n",
            f"get=1\n{p}\n",
            "set=1\n" + f"private_key={p[:-1]}\n\n",
            "set=1\n" + f"private_key={p}zz\n\n",
            "set=1\n" + f"private_key={p}\npublic_key={PUB.hex()}\npreshared_key={k}0\n\n",
            "set=1\n" + f"public_key={PUB.hex()}\n{k}={p}\n\n",
            "set=1\n" + f"{p[:30]}=1\n\n",
            "set=1\n" + f"{'abcdef'.join(k[i : i + 8] for i in range(0, 64, 8))}=1\n\n",
            "set=1\n" + f"public_key={PUB.hex()}\nendpoint=[{k}]:1\n\n",
            "set=1\n" + f"private_key={p * 70}\n\n",  # over MAX_LINE
            f"{p * 70}\n",
            "set=1\n" + f"private_key={p}\n",  # cut short
        ):
            with connect(server) as s:
                s.sendall(data.encode())
                s.shutdown(socket.SHUT_WR)
                read_all(s)
        assert request(server, b"get=1\n\n").endswith(b"errno=0\n\n")
    finally:
        logger.remove(sink)
    assert lines, "the bad requests were not logged at all"
    runs = _key_runs(PRIV) | _key_runs(PSK)
    for line in lines:
        low = line.lower()
        assert not any(r in low for r in runs), line


class Buggy(Recorder):
    """A controller with bugs whose messages carry a key."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def get(self) -> Iterator[str]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError(f"bug holding {PRIV.hex()}")
        if self.calls == 2:
            return self._broken()
        return super().get()

    def _broken(self) -> Iterator[str]:
        yield "listen_port=1\n"
        raise RuntimeError(f"bug mid-reply holding {PSK.hex()}")


def test_a_bug_costs_one_answer_and_says_where_not_what(tmp_path: Path) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{level} {message}")
    srv = UapiServer("wgt", Buggy(), directory=tmp_path)
    srv.start()
    try:
        assert request(srv, b"get=1\n\n") == b"errno=-55\n\n"  # as wireguard-go's unknown
        with connect(srv) as s:
            s.sendall(b"get=1\n\n")
            assert not read_all(s).endswith(b"errno=0\n\n")  # cut off, not completed
        assert request(srv, b"get=1\n\n") == (BODY + "errno=0\n\n").encode()
    finally:
        srv.stop()
        logger.remove(sink)
    bugs = [ln for ln in lines if "RuntimeError" in ln]
    assert len(bugs) == 2 and all("test_uapi_server.py:" in ln for ln in bugs), lines
    runs = _key_runs(PRIV) | _key_runs(PSK)
    assert not any(r in ln.lower() for ln in lines for r in runs)


# -- hostile clients: a trickle of bytes, a set request left open


def test_clients_trickling_partial_lines_at_the_bound_give_way_to_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each byte of a partial line does not buy its client more time: at the connection bound,
    one whose last whole line is older than EVICT_AFTER makes room for a newcomer."""
    monkeypatch.setattr(uapi_server, "EVICT_AFTER", 0.2)
    srv = UapiServer("wgt", Recorder(), directory=tmp_path)
    srv.max_connections = 4
    srv.start()
    held: list[socket.socket] = []
    try:
        for _ in range(srv.max_connections):
            s = connect(srv)
            s.sendall(b"g")  # the start of an operation line, never finished
            held.append(s)
        assert wait_for(lambda: srv.connections() == srv.max_connections)
        newcomer = connect(srv)
        newcomer.sendall(b"get=1\n\n")
        newcomer.settimeout(0.1)
        reply = b""
        deadline = time.monotonic() + WAIT
        while b"errno=" not in reply and time.monotonic() < deadline:
            for s in held:  # a byte each, again and again: the trickle
                with contextlib.suppress(OSError):
                    s.sendall(b"e")
            with contextlib.suppress(TimeoutError):
                reply += newcomer.recv(65536)
        assert reply.endswith(b"errno=0\n\n"), reply
        newcomer.close()
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_a_set_request_left_open_does_not_switch_the_collector_off(server: UapiServer) -> None:
    """The collector is paused while lines are parsed, never while waiting for the client:
    one client must not be able to switch it off for the whole process."""
    import gc

    with connect(server) as slow:
        slow.sendall(b"set=1\nlisten_port=1\n")  # and then nothing
        # another client's answer: by then the loop has read what the first one sent
        assert request(server, b"get=1\n\n").endswith(b"errno=0\n\n")
        assert gc.isenabled()


def test_set_requests_are_read_one_at_a_time_and_each_is_answered_in_turn(
    server: UapiServer,
) -> None:
    """A second client's set waits (its lines in the kernel) while the first one's is read;
    when the first is answered, the second is read and answered too."""
    recorder = server.controller
    assert isinstance(recorder, Recorder)
    with connect(server) as first, connect(server) as second:
        first.sendall(b"set=1\nlisten_port=1\n")
        assert wait_for(lambda: server._set_owner is not None)
        second.sendall(b"set=1\nlisten_port=2\n\n")
        # a get from a third client is still served meanwhile
        assert request(server, b"get=1\n\n").endswith(b"errno=0\n\n")
        assert recorder.sets == []
        first.sendall(b"\n")
        assert read_reply(first) == b"errno=0\n\n"
        assert read_reply(second) == b"errno=0\n\n"
    assert [r.listen_port for r in recorder.sets] == [1, 2]


def test_a_client_that_leaves_mid_set_lets_the_next_one_in(server: UapiServer) -> None:
    recorder = server.controller
    assert isinstance(recorder, Recorder)
    with connect(server) as second:
        with connect(server) as first:
            first.sendall(b"set=1\nlisten_port=1\n")
            assert wait_for(lambda: server._set_owner is not None)
            second.sendall(b"set=1\nlisten_port=2\n\n")
        # first closed without its blank line: its request is refused, the second goes on
        assert read_reply(second) == b"errno=0\n\n"
    assert [r.listen_port for r in recorder.sets] == [2]

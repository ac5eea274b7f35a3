"""The Prometheus text format, checked by promtool, and the HTTP endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import pytest

from actors import metrics
from actors.metrics import CONTENT_TYPE, MetricsServer, parse_listen_address, render

TIMEOUT = 30
SCRAPERS = 4  # scrapes made at once beside a slow or idle client
IDLE_CLIENTS = 8  # more than the old server's 5 s read timeout let through in TIMEOUT
PARALLEL_SCRAPES = 500
DRIBBLE_INTERVAL = 0.1  # seconds between the header lines a slow client sends
DRIBBLE_LINES = 300  # bounded: 30 s of dribbling, under MAX_REQUEST_BYTES in all

INFO = {
    "interface": "wg0",
    "public_key": "x",
    "listen_port": 51820,
    "fwmark": 0,
    "peers": [
        {
            "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "rx_bytes": 1234,
            "tx_bytes": 5678,
            "latest_handshake_unix": 1764441600,
        },
        {"public_key": "BBBB+/==", "rx_bytes": 0, "tx_bytes": 0, "latest_handshake_unix": None},
    ],
    "stages": {
        "mode": "actors",
        "stages": [
            {
                "name": "decrypt",
                "packets_in": 10,
                "bytes_in": 1500,
                "packets_out": 9,
                "bytes_out": 1400,
                "drops": {"replay": 1, 'odd"reason\\': 2},
                "mailbox": {"depth": 0, "high_water": 64, "capacity": 1000, "dropped": 0},
                "restarts": 2,
            },
            {"name": "ticker", "packets_in": 0, "packets_out": 0, "drops": {}, "mailbox": None},
        ],
    },
}


def require_promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        from netns import _skip_or_fail

        _skip_or_fail("promtool is missing (apt package prometheus; scripts/setup installs it)")
    assert path is not None
    return path


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_render_has_the_promised_series() -> None:
    text = render([INFO])
    stage = 'interface="wg0",stage="decrypt"'
    assert f"wgactors_stage_received_packets_total{{{stage}}} 10" in text
    assert f"wgactors_stage_sent_bytes_total{{{stage}}} 1400" in text
    assert f'wgactors_stage_dropped_packets_total{{{stage},reason="replay"}} 1' in text
    assert 'reason="odd\\"reason\\\\"} 2' in text  # label values escaped
    assert f"wgactors_stage_mailbox_high_water_packets{{{stage}}} 64" in text
    assert f"wgactors_stage_restarts_total{{{stage}}} 2" in text
    assert 'wgactors_stage_restarts_total{interface="wg0",stage="ticker"} 0' in text
    assert 'wgactors_stage_received_bytes_total{interface="wg0",stage="ticker"}' not in text
    peer = 'interface="wg0",peer="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="'
    assert f"wgactors_peer_receive_bytes_total{{{peer}}} 1234" in text
    assert f"wgactors_peer_transmit_bytes_total{{{peer}}} 5678" in text
    assert f"wgactors_peer_latest_handshake_seconds{{{peer}}} 1764441600" in text
    assert 'peer="BBBB+/=="} 0' in text
    assert text.count("# TYPE wgactors_stage_received_packets_total counter") == 1
    assert 'wgactors_up{interface="wg0"} 1' in text


def test_a_daemon_that_did_not_answer_is_down() -> None:
    text = render([INFO], unreachable=["wg7"])
    assert 'wgactors_up{interface="wg7"} 0' in text
    assert text.count("# TYPE wgactors_up gauge") == 1


def test_promtool_accepts_the_output() -> None:
    for infos in ([INFO], [], [INFO, {**INFO, "interface": "wg1", "stages": None}]):
        result = promtool_check(render(infos, unreachable=["wg9"]))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "" and result.stderr.strip() == "", result


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9586", ("127.0.0.1", 9586)), ("[::1]:80", ("::1", 80)), (":9586", ("", 9586))],
)
def test_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["9586", "host:1", "1.2.3.4:0", "1.2.3.4:70000", "[::1]"])
def test_bad_listen_address(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(text)


def test_http_endpoint_serves_what_collect_returns() -> None:
    calls = []

    def collect() -> str:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("daemon gone")
        return render([INFO])

    server = MetricsServer(("127.0.0.1", 0), collect)
    server.start()
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=TIMEOUT) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"] == CONTENT_TYPE
            assert reply.read().decode() == render([INFO])
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=TIMEOUT)
        assert info.value.code == 503
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://{host}:{port}/other", timeout=TIMEOUT)
        assert info.value.code == 404
    finally:
        server.stop()


def fixed_text() -> str:
    return render([INFO])


@contextlib.contextmanager
def serving(collect: Callable[[], str] = fixed_text) -> Iterator[int]:
    """A metrics server on a loopback port; yields the port."""
    server = MetricsServer(("127.0.0.1", 0), collect)
    server.start()
    try:
        yield server.address[1]
    finally:
        server.stop()


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Dribbler:
    """A client that sends its request one header line every DRIBBLE_INTERVAL and never ends
    it; ``closed`` is set when the server closes the connection, ``reply`` holds what the server
    sent before."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.sendall(b"GET /metrics HTTP/1.0\r\n")
        self.closed = threading.Event()
        self.lines_sent = 0
        self.reply = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _dribble(self) -> None:
        self.sock.settimeout(DRIBBLE_INTERVAL)
        for n in range(DRIBBLE_LINES):
            if self._stop.is_set():
                return
            try:
                data = self.sock.recv(4096)
                if data == b"":
                    break
                self.reply += data
            except TimeoutError:
                pass
            except OSError:
                break
            try:
                self.sock.sendall(f"X-Slow-{n}: y\r\n".encode())
            except OSError:
                break
            self.lines_sent = n + 1
        else:
            return  # still open after every line: closed stays unset
        self.closed.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.sock.close()


def still_open(sock: socket.socket) -> bool:
    """True unless the server has closed (or reset) the connection."""
    sock.setblocking(False)  # with a timeout set, recv() would wait for data before looking
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(TIMEOUT)


def test_a_slow_client_delays_no_scrape() -> None:
    with serving() as port:
        slow = Dribbler(port)
        try:
            with ThreadPoolExecutor(SCRAPERS) as pool:
                replies = list(pool.map(lambda _: scrape(port), range(SCRAPERS)))
            assert not slow.closed.is_set(), "the slow client was dropped before the scrapes ended"
            assert replies == [(200, fixed_text())] * SCRAPERS
            assert slow.lines_sent < DRIBBLE_LINES
        finally:
            slow.stop()


def test_a_client_that_never_ends_its_request_is_closed_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline covers the whole request: a line every DRIBBLE_INTERVAL does not renew it."""
    monkeypatch.setattr(metrics, "REQUEST_DEADLINE", 10 * DRIBBLE_INTERVAL)
    with serving() as port:
        slow = Dribbler(port)
        try:
            assert slow.closed.wait(DRIBBLE_INTERVAL * DRIBBLE_LINES + TIMEOUT)
            assert slow.reply == b"", "closed for another reason than the deadline"
            assert slow.lines_sent < DRIBBLE_LINES
        finally:
            slow.stop()


def test_idle_connections_delay_no_scrape() -> None:
    with serving() as port:
        idle = [
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            for _ in range(IDLE_CLIENTS)
        ]
        try:
            assert scrape(port) == (200, fixed_text())
            assert all(still_open(sock) for sock in idle), "idle clients were closed first"
        finally:
            for sock in idle:
                sock.close()


def accept_queue(port: int) -> int:
    """Connections the kernel holds for the listener on ``port`` that it has not accepted yet
    (for a listening socket, /proc/net/tcp's rx_queue is its accept queue)."""
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


def test_connections_past_the_bound_wait_in_the_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(metrics, "REQUEST_DEADLINE", 2 * TIMEOUT)  # the idle ones keep their slots
    with serving() as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(2)]
        try:
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(scrape, port)
                deadline = time.monotonic() + TIMEOUT
                while accept_queue(port) < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert accept_queue(port) == 1, "the third connection was taken past the bound"
                assert not waiting.done()
                idle[0].close()  # a slot frees: the scrape is taken and answered
                assert waiting.result(TIMEOUT) == (200, fixed_text())
                assert accept_queue(port) == 0
        finally:
            for sock in idle:
                sock.close()


async def _scrape_async(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        return await reader.read()
    finally:
        writer.close()


async def _scrape_many(port: int, count: int) -> list[bytes | BaseException]:
    async with asyncio.timeout(TIMEOUT):
        return await asyncio.gather(
            *(_scrape_async(port) for _ in range(count)), return_exceptions=True
        )


def test_500_parallel_scrapes_are_all_answered() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * PARALLEL_SCRAPES  # both ends of every connection, and room to spare
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        with serving() as port:
            replies = asyncio.run(_scrape_many(port, PARALLEL_SCRAPES))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    failed = [r for r in replies if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of {PARALLEL_SCRAPES} failed, e.g. {failed[0]!r}"
    heads = {r.split(b"\r\n", 1)[0] for r in replies if isinstance(r, bytes)}
    assert heads == {b"HTTP/1.0 200 OK"}
    assert all(isinstance(r, bytes) and r.endswith(fixed_text().encode()) for r in replies)


def test_a_slow_render_is_shared_and_stalls_nothing_else() -> None:
    calls: list[int] = []
    started = threading.Event()
    release = threading.Event()

    def collect() -> str:
        calls.append(1)
        started.set()
        release.wait(TIMEOUT)
        return fixed_text()

    with serving(collect) as port, ThreadPoolExecutor(1) as pool:
        first = pool.submit(scrape, port)
        assert started.wait(TIMEOUT)
        # Sent from this thread before the probe connects: the server reads it first.
        second = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        try:
            second.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            try:
                assert scrape(port, "/elsewhere")[0] == 404  # answered while the render is stuck
            finally:
                release.set()
            assert first.result(TIMEOUT) == (200, fixed_text())
            with second.makefile("rb") as reply:
                assert reply.read().endswith(b"\r\n\r\n" + fixed_text().encode())
        finally:
            second.close()
    assert len(calls) == 1, "the second scrape started a render of its own"


ABORT_SERVER = """
import sys
import threading
import time
from loguru import logger
from actors.metrics import MetricsServer, render

logger.remove()
logger.add(sys.stderr, level="DEBUG", format="{level} {message}")
go = threading.Event()
calls = []

def collect():
    calls.append(1)
    if len(calls) == 1:
        print("collecting", flush=True)
        go.wait()
    return render([])

server = MetricsServer(("127.0.0.1", 0), collect)
server.start()
print(server.address[1], flush=True)
for line in sys.stdin:  # a line lets the first render finish; the end of input stops the server
    go.set()
server.stop()
"""


class Lines:
    """The lines a subprocess writes to one stream, read on a thread so that every wait for
    one is bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()

    def wait_for(self, wanted: Callable[[str], bool]) -> str | None:
        with self._new:
            self._new.wait_for(lambda: any(wanted(line) for line in self.lines), TIMEOUT)
            return next((line for line in self.lines if wanted(line)), None)

    def join(self) -> None:
        self._thread.join(TIMEOUT)


def test_an_aborted_client_is_one_debug_line_and_no_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", ABORT_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        port_line = out.wait_for(str.isdigit)
        assert port_line is not None, err.lines
        port = int(port_line)
        client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        client_port = client.getsockname()[1]
        client.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert out.wait_for(lambda line: line == "collecting") is not None, err.lines
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        client.close()  # a reset while the render runs: the reply has nowhere to go
        proc.stdin.write("go\n")
        proc.stdin.flush()
        about_client = err.wait_for(lambda line: f":{client_port}" in line)
        assert about_client is not None, "\n".join(err.lines)
        assert scrape(port)[0] == 200  # and the server goes on serving
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        out.join()
        err.join()
    text = "\n".join(err.lines)
    assert "Traceback" not in text, text
    assert [line for line in err.lines if f":{client_port}" in line] == [about_client], text
    assert about_client.startswith("DEBUG metrics: "), text

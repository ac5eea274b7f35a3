"""The Prometheus text format, checked by promtool, and the HTTP endpoint."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import pytest

from actors.metrics import CONTENT_TYPE, MetricsServer, parse_listen_address, render

TIMEOUT = 30

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

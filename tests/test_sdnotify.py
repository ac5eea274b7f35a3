"""sd_notify datagrams, received on a socket the test listens on."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from actors import sdnotify, settings


def _listen(path: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock


def test_messages_reach_a_path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with _listen(path) as sock:
        monkeypatch.setenv(settings.NOTIFY_SOCKET.name, path)
        assert sdnotify.ready("wg0 up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=wg0 up"
        assert sdnotify.reloading()
        lines = sock.recv(4096).decode().split("\n")
        assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
        assert int(lines[1].split("=")[1]) > 0
        assert sdnotify.status("a\nb" + "x" * 500)
        got = sock.recv(4096).decode()
        assert got.startswith("STATUS=a b") and len(got) == len("STATUS=") + 200
        assert sdnotify.stopping()
        assert sock.recv(4096).startswith(b"STOPPING=1\n")


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"wgactors-test-{os.getpid()}"
    with _listen(b"\0" + name.encode()) as sock:
        monkeypatch.setenv(settings.NOTIFY_SOCKET.name, "@" + name)
        assert sdnotify.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_without_a_socket_nothing_happens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.NOTIFY_SOCKET.name, raising=False)
    assert not sdnotify.ready("x")
    monkeypatch.setenv(settings.NOTIFY_SOCKET.name, str(tmp_path / "nobody-listens"))
    assert not sdnotify.stopping()  # and no exception

"""Endpoint names retried as wg retries them, with a fake resolver and a fake sleep."""

from __future__ import annotations

import itertools
import socket

import pytest

from actors import settings
from actors.config import ResolveError, parse_config
from actors.resolver import (
    DEFAULT_RETRIES,
    FIRST_PAUSE,
    MAX_PAUSE,
    Retrying,
    default_resolve,
    retries_from_env,
)

PRIV = "yDVjElOQd6KrVL8c5UTGv3r4kd/AUpMZpA3zPyqf5l8="
PEER = "LtO7fbV3rUI+Du1EW1lIMUTKMbq2LatujlvDyjfxLHc="


def config_with_endpoint(endpoint: str) -> str:
    return (
        f"[Interface]\nPrivateKey = {PRIV}\n\n"
        f"[Peer]\nPublicKey = {PEER}\nAllowedIPs = 10.0.0.2/32\nEndpoint = {endpoint}\n"
    )


class FlakyDns:
    """Fails with EAI_AGAIN ``failures`` times, then answers."""

    def __init__(self, failures: int, error: int = socket.EAI_AGAIN) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self, host: str, port: int) -> tuple[str, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise socket.gaierror(self.error, "Temporary failure in name resolution")
        return "192.0.2.7", port


def test_transient_failures_are_retried_with_growing_pauses() -> None:
    pauses: list[float] = []
    dns = FlakyDns(failures=4)
    resolve = Retrying(15, resolve=dns, sleep=pauses.append)
    assert resolve("vpn.example", 51820) == ("192.0.2.7", 51820)
    assert dns.calls == 5
    assert pauses[0] == FIRST_PAUSE
    assert all(b > a for a, b in itertools.pairwise(pauses))


def test_pauses_are_capped_and_infinity_keeps_going() -> None:
    pauses: list[float] = []
    dns = FlakyDns(failures=60)
    assert Retrying(-1, resolve=dns, sleep=pauses.append)("h", 1) == ("192.0.2.7", 1)
    assert len(pauses) == 60 and max(pauses) == MAX_PAUSE


def test_retries_run_out() -> None:
    pauses: list[float] = []
    dns = FlakyDns(failures=100)
    with pytest.raises(socket.gaierror):
        Retrying(3, resolve=dns, sleep=pauses.append)("h", 1)
    assert dns.calls == 4 and len(pauses) == 3


def test_a_name_that_does_not_exist_is_not_retried() -> None:
    dns = FlakyDns(failures=100, error=socket.EAI_NONAME)
    with pytest.raises(socket.gaierror):
        Retrying(15, resolve=dns, sleep=lambda _: None)("h", 1)
    assert dns.calls == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", DEFAULT_RETRIES), ("infinity", -1), ("Infinity", -1), ("0", 0), ("7", 7), ("x", 15)],
)
def test_retries_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int
) -> None:
    monkeypatch.setenv(settings.ENDPOINT_RETRIES.name, value)
    assert retries_from_env() == expected


def test_an_unresolved_name_is_a_resolve_error_not_a_bad_file() -> None:
    dns = FlakyDns(failures=100)
    with pytest.raises(ResolveError) as info:
        parse_config(config_with_endpoint("vpn.example:51820"), "wg0.conf",
                     resolve=Retrying(1, resolve=dns, sleep=lambda _: None))  # fmt: skip
    assert "cannot resolve vpn.example" in str(info.value)
    assert info.value.key == "Endpoint"


def test_default_resolver_prefers_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, ...]] = []

    def fake_getaddrinfo(*args: object) -> list[tuple[object, ...]]:
        seen.append(args)
        return [
            (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 51820, 0, 0)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.1", 51820)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert default_resolve("vpn.example.com", 51820) == ("192.0.2.1", 51820)
    # AF_UNSPEC, UDP, and no AI_ADDRCONFIG flag
    assert seen == [("vpn.example.com", 51820, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0)]

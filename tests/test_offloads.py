"""The offload plan: which offloads to ask for, and the test-only refusals."""

from __future__ import annotations

import pytest

from actors import settings
from actors.io.offloads import (
    ALL_OFFLOADS,
    DEFAULT_OFFLOADS,
    OFFLOADS_ENV,
    REFUSE_ENV,
    plan_from_env,
)


@pytest.fixture(autouse=True)
def _test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal switch is test-only: it is read only with the test hooks enabled."""
    monkeypatch.setenv(settings.TEST_HOOKS.name, "1")


def test_defaults_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OFFLOADS_ENV, raising=False)
    monkeypatch.delenv(REFUSE_ENV, raising=False)
    assert plan_from_env().wanted == frozenset(DEFAULT_OFFLOADS)
    monkeypatch.setenv(OFFLOADS_ENV, "none")
    assert plan_from_env().wanted == frozenset()
    monkeypatch.setenv(OFFLOADS_ENV, " tun_tso, udp_gso ,")
    plan = plan_from_env()
    assert plan.asks("tun_tso") and plan.asks("udp_gso") and not plan.asks("tun_gro")
    monkeypatch.setenv(OFFLOADS_ENV, ",".join(ALL_OFFLOADS))
    monkeypatch.setenv(REFUSE_ENV, "tun_vnet_hdr,udp_gro")
    plan = plan_from_env()
    assert plan.refuses("tun_vnet_hdr") and plan.refuses("udp_gro") and not plan.refuses("tun_tso")


@pytest.mark.parametrize("env", [OFFLOADS_ENV, REFUSE_ENV])
def test_unknown_names_are_a_clear_error(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv(env, "tun_tso,turbo")
    with pytest.raises(ValueError, match="unknown offload 'turbo'"):
        plan_from_env()


def test_refusals_are_ignored_without_the_test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.TEST_HOOKS.name)
    monkeypatch.setenv(REFUSE_ENV, "udp_gso")
    assert not plan_from_env().refuses("udp_gso")

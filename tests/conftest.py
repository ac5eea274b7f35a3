"""Shared fixtures: real network namespaces for tests marked ``netns``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, settings
from netns import Netns, require_root_netns, veth_pair

# Property tests check what is generated, not how fast: on a shared 2-core machine data
# generation can be slow for reasons that have nothing to do with the code under test.
settings.register_profile("wgactors", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("wgactors")


class NetnsPair(NamedTuple):
    """Two namespaces joined by a veth pair (``veth_a`` in ``a``, ``veth_b`` in ``b``)."""

    a: Netns
    b: Netns
    addr_a4: str
    addr_b4: str
    addr_a6: str
    addr_b6: str
    veth_a: str
    veth_b: str


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        require_root_netns()


@pytest.fixture
def root_netns() -> None:
    """Skip (fail under CI=true) unless root, `ip netns` and /dev/net/tun work."""
    require_root_netns()


@pytest.fixture
def netns_pair(root_netns: None) -> Iterator[NetnsPair]:
    """Namespaces ``a`` (10.77.0.1, fd77::1) and ``b`` (10.77.0.2, fd77::2) on one veth link."""
    addr_a4, addr_b4, addr_a6, addr_b6 = "10.77.0.1", "10.77.0.2", "fd77::1", "fd77::2"
    with Netns() as a, Netns() as b:
        veth_a, veth_b = veth_pair(a, b, addr_a4, addr_b4, addr_a6, addr_b6)
        yield NetnsPair(a, b, addr_a4, addr_b4, addr_a6, addr_b6, veth_a, veth_b)

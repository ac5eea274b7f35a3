"""`scripts/demo --quick` end to end: it passes, reports figures, and leaves nothing behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from netns import require_tools
from scriptrun import cmdlines, namespaces, run_script

TIMEOUT = 120.0
WGACTORS_CASES = ("wgactors", "wgactors-single")

pytestmark = pytest.mark.netns


def _tunnel_procs() -> dict[int, str]:
    return {
        pid: cmd
        for pid, cmd in cmdlines().items()
        if "wireguard-go" in cmd or "actors.cli" in cmd or "scripts/wgactors" in cmd
    }


def test_demo_quick(tmp_path: Path) -> None:
    require_tools("wireguard-go", "wg", "iperf3", "ping", "ss")
    json_path = tmp_path / "demo.json"

    returncode, output = run_script("demo", "--quick", "--json", str(json_path), timeout=TIMEOUT)

    assert returncode == 0, f"scripts/demo --quick exited {returncode}:\n{output}"

    report = json.loads(json_path.read_text())
    assert report["ok"] is True, output
    for key in WGACTORS_CASES:
        case = report["cases"].get(key)
        assert case is not None, f"no {key!r} case in {sorted(report['cases'])}"
        assert case["ping_ab"]["ok"], (key, case, output)
        assert case["ping_ba"]["ok"], (key, case, output)
        assert case["upload_mbps"] > 0, (key, case, output)
        assert case["download_mbps"] > 0, (key, case, output)

    # Nothing it started is left behind: its namespaces (wgd-TAG-a/b), temp dir, processes
    # (wireguard-go runs as `wireguard-go -f wgdTAG<n>b`, wgactors from /tmp/wgd-TAG-*/...).
    # Only this run's tag counts: other test sessions may run tunnels at the same time.
    m = re.search(r"namespaces (wgd-([0-9a-f]+)-a) and (wgd-\2-b), temp dir (\S+)", output)
    assert m, f"the demo did not say which namespaces it used:\n{output}"
    tag, tmpdir = m.group(2), Path(m.group(4))
    leftover_ns = sorted(n for n in namespaces() if n.startswith(f"wgd-{tag}-"))
    assert not leftover_ns, f"namespaces left behind: {leftover_ns}"
    assert not tmpdir.exists(), f"temp dir {tmpdir} left behind"
    leftover = {
        pid: cmd
        for pid, cmd in _tunnel_procs().items()
        if f"wgd{tag}" in cmd or f"wgd-{tag}-" in cmd
    }
    assert not leftover, f"processes left behind: {leftover}"
    assert not list(Path("/var/run/wireguard").glob(f"wgd{tag}*.sock"))

"""The package as people install it: `pip wheel .` and `pip install .` from a clean copy of the
checkout, each into a fresh venv, then `wgactors --version` from there."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from actors import __version__

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300  # seconds for one pip run (it may have to fetch the build backend)
IGNORED = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.pyc"
)

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of the checkout (building in place would leave build/ behind)."""
    dest = tmp_path_factory.mktemp("src") / "wgactors"
    shutil.copytree(ROOT, dest, ignore=IGNORED)
    return dest


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


def test_wheel_has_no_tests_nor_lab_and_installs_into_a_fresh_venv(
    source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, source)
    (wheel,) = out.glob("wgactors-*.whl")
    assert wheel.name.startswith(f"wgactors-{__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"wgactors-{__version__}.dist-info/METADATA").decode()
    assert not [n for n in names if n.startswith(("tests/", "scripts/")) or "/tests/" in n]
    # development tooling (namespaces, wireguard-go, the bench) is used from the checkout only
    tooling = [n for n in names if n.startswith("actors/lab/") or "corebench" in n]
    assert not tooling, f"development tooling in the wheel: {tooling}"
    assert "actors/cli.py" in names and "actors/__main__.py" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in metadata
    assert "Classifier: Operating System :: POSIX :: Linux" in metadata

    bin_dir = fresh_venv(tmp_path / "venv")
    run(bin_dir / "pip", "install", "-q", wheel)
    assert run(bin_dir / "wgactors", "--version").strip() == f"wgactors {__version__}"
    # run from elsewhere, so the checkout cannot be what gets imported
    version = run(bin_dir / "python", "-m", "actors", "--version", cwd=tmp_path)
    assert version.strip() == f"wgactors {__version__}"


def test_pip_install_dot_gives_a_working_command(source: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    run(bin_dir / "pip", "install", "-q", ".", cwd=source)
    assert run(bin_dir / "wgactors", "--version").strip() == f"wgactors {__version__}"
    result = subprocess.run(
        [bin_dir / "wgactors"], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path
    )
    assert result.returncode == 2 and result.stderr.startswith("usage: wgactors")

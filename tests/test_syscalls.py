"""The per-architecture AIO system call table, checked against the kernel's own numbers, and
the unbatched fallback it leads to elsewhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from loguru import logger

from actors import settings
from actors.io import tun_aio
from actors.io.tun_aio import AIO_SYSCALLS, AioReader, AioSyscalls, AioWriter, kernel_abi

CALLS = ("io_setup", "io_destroy", "io_getevents", "io_submit")
INCLUDE = Path("/usr/include")
# Header (from linux-libc-dev) holding each ABI's numbers, where one is installed on any host.
HEADERS = {
    "aarch64": ["asm-generic/unistd.h"],
    "riscv64": ["asm-generic/unistd.h"],
    "loongarch64": ["asm-generic/unistd.h"],
    "x86_64": ["x86_64-linux-gnu/asm/unistd_64.h", "asm/unistd_64.h"],
    "i386": ["x86_64-linux-gnu/asm/unistd_32.h", "i386-linux-gnu/asm/unistd_32.h"],
    "arm": ["arm-linux-gnueabihf/asm/unistd-eabi.h"],
    "ppc64le": ["powerpc64le-linux-gnu/asm/unistd_64.h"],
}
# The kernel's tables for ABIs whose headers a Debian x86_64 host lacks: from
# arch/arm/tools/syscall.tbl and arch/powerpc/kernel/syscalls/syscall.tbl (Linux 6.x; these
# numbers never change once assigned).
DOCUMENTED = {
    "arm": {"io_setup": 243, "io_destroy": 244, "io_getevents": 245, "io_submit": 246},
    "ppc64le": {"io_setup": 227, "io_destroy": 228, "io_getevents": 229, "io_submit": 230},
}
# What the issue reported: x86_64's numbers mean other calls on aarch64.
AARCH64_206_209 = ("sendto", "recvfrom", "setsockopt", "getsockopt")


def header_numbers(abi: str) -> dict[str, int] | None:
    for rel in HEADERS[abi]:
        path = INCLUDE / rel
        if path.exists():
            text = path.read_text()
            found = {
                name: int(m.group(1))
                for name in CALLS
                if (m := re.search(rf"#define __NR_{name}\s+(\d+)\b", text))
            }
            assert set(found) == set(CALLS), f"{path} lacks some of {CALLS}"
            return found
    return None


@pytest.mark.parametrize("abi", sorted(AIO_SYSCALLS))
def test_table_matches_the_kernel(abi: str) -> None:
    numbers = header_numbers(abi) or DOCUMENTED.get(abi)
    if numbers is None:
        pytest.fail(f"no header and no documented table for {abi}")
    assert AIO_SYSCALLS[abi] == AioSyscalls(**numbers)


def test_the_headers_were_there_for_the_main_abis() -> None:
    """On the CI machine (Debian, linux-libc-dev) the generic and x86 tables are checked
    against real headers, not only against our own documented numbers."""
    for abi in ("x86_64", "aarch64", "riscv64", "i386"):
        if os.uname().machine == "x86_64":
            assert header_numbers(abi) is not None, abi


def test_aarch64_does_not_use_the_x86_numbers() -> None:
    generic = (INCLUDE / "asm-generic/unistd.h").read_text()
    for number, name in zip(range(206, 210), AARCH64_206_209, strict=True):
        assert re.search(rf"#define __NR_{name}\s+{number}\b", generic), name
    assert AIO_SYSCALLS["aarch64"].io_setup not in range(206, 210)


@pytest.mark.parametrize(
    ("machine", "bits", "expected"),
    [
        ("x86_64", 64, "x86_64"),
        ("x86_64", 32, "i386"),
        ("i686", 32, "i386"),
        ("aarch64", 64, "aarch64"),
        ("aarch64", 32, "arm"),
        ("armv7l", 32, "arm"),
        ("armv6l", 32, "arm"),
        ("armv8l", 32, "arm"),
        ("riscv64", 64, "riscv64"),
        ("ppc64le", 64, "ppc64le"),
        ("loongarch64", 64, "loongarch64"),
        ("s390x", 64, None),  # big-endian: another iocb layout
        ("mips64", 64, None),
        ("sparc64", 64, None),
    ],
)
def test_kernel_abi(machine: str, bits: int, expected: str | None) -> None:
    assert kernel_abi(machine, bits) == expected


@pytest.fixture
def forced_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.TEST_HOOKS.name, "1")
    monkeypatch.setenv(settings.TEST_UNBATCHED.name, "1")
    monkeypatch.setattr(tun_aio, "_fallback_logged", False)


def test_forced_fallback_still_reads_and_writes(forced_fallback: None) -> None:
    logged: list[str] = []
    handler = logger.add(logged.append, level="WARNING", format="{message}")
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(read_fd, False)
        writer, reader = AioWriter(write_fd), AioReader(read_fd, slot=16)
        assert not writer.available and not reader.available
        assert writer.write([b"abc", b"defg"]) == [None, None]
        # a pipe has no packet boundaries: the per-packet path reads what is there
        assert b"".join(reader.read(4)) == b"abcdefg"
        writer.close()
        reader.close()
    finally:
        logger.remove(handler)
        os.close(read_fd)
        os.close(write_fd)
    assert len(logged) == 1, logged  # once per process, however many contexts
    assert "WGACTORS_TEST_UNBATCHED" in logged[0] and "not batched" in logged[0]


def test_unknown_architecture_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tun_aio, "kernel_abi", lambda: None)
    monkeypatch.setattr(tun_aio, "_fallback_logged", False)
    monkeypatch.delenv(settings.TEST_HOOKS.name, raising=False)
    assert tun_aio.aio_syscalls() is None
    read_fd, write_fd = os.pipe()
    try:
        assert not AioWriter(write_fd).available
    finally:
        os.close(read_fd)
        os.close(write_fd)

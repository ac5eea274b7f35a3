"""Every environment variable wgactors reads, in one table.

The daemon is often started by something else (wg-quick, systemd), so some choices can only come
from the environment. Keeping them here means one place to read them, one place to document
them (the README's table is checked against :data:`SETTINGS` by a test), and one rule for
test-only hooks: they are ignored unless ``WGACTORS_TEST_HOOKS=1`` is set too, so a stray
variable in a production environment cannot inject faults or slow the data path down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "CPUS",
    "ENDPOINT_RETRIES",
    "FOREGROUND",
    "INJECT_FAULTS",
    "JOURNAL_STREAM",
    "LOG_FILE",
    "LOG_LEVEL",
    "NOTIFY_SOCKET",
    "OFFLOADS",
    "PIPELINE",
    "REFUSE_OFFLOADS",
    "SETTINGS",
    "SINGLE_THREADED",
    "SWITCH_INTERVAL",
    "TEST_HOOKS",
    "TEST_UNBATCHED",
    "WG_LOG_LEVEL",
    "WORKERS",
    "Setting",
    "get",
    "is_set",
]


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str  # as documented; "" means unset
    meaning: str
    test_only: bool = False  # read only when TEST_HOOKS is enabled
    foreign: bool = False  # defined by wireguard-go, wg or systemd, honoured here


LOG_LEVEL = Setting(
    "WGACTORS_LOG_LEVEL",
    "INFO",
    "log level: TRACE, DEBUG, INFO, WARNING, ERROR or CRITICAL (`-v`/`-q` take precedence)",
)
WG_LOG_LEVEL = Setting(
    "LOG_LEVEL",
    "",
    "wireguard-go's log level, used when `WGACTORS_LOG_LEVEL` is unset: `verbose` or `debug` "
    "(DEBUG), `error` (ERROR), `silent` (nothing)",
    foreign=True,
)
LOG_FILE = Setting(
    "WGACTORS_LOG_FILE",
    "",
    "in the background (`wgactors IFACE` without `-f`), append the logs to this file instead "
    "of stderr",
)
PIPELINE = Setting(
    "WGACTORS_PIPELINE",
    "",
    "pipeline file of custom stages, when `--pipeline` is not given (the drop-in mode's only way)",
)
SINGLE_THREADED = Setting(
    "WGACTORS_SINGLE_THREADED",
    "",
    "`1`: the drop-in mode runs all stages in one loop, as `up --single-threaded` does",
)
SWITCH_INTERVAL = Setting(
    "WGACTORS_SWITCH_INTERVAL",
    "0.0002",
    "seconds: the interpreter's GIL switch interval in actors mode (see `actors/io/batching.py`)",
)
WORKERS = Setting(
    "WGACTORS_WORKERS",
    "1",
    "worker processes, each a whole pipeline for its share of the peers, when `--workers` is "
    "not given (the drop-in mode's only way): a number, or `auto` for one per CPU the process "
    "may use (see the README's Worker processes)",
)
CPUS = Setting(
    "WGACTORS_CPUS",
    "compact",
    "where the daemon's threads run: `compact` (all on one CPU, the least busy, re-chosen as "
    "load moves; the default in actors mode), `all` (the kernel places them; the default of "
    "`--single-threaded`) or a CPU list such as `1` or `0,2-3` (see `actors/placement.py` and "
    "the README's CPU placement)",
)
FOREGROUND = Setting(
    "WG_PROCESS_FOREGROUND",
    "",
    "`1`: `wgactors IFACE` stays in the foreground, as with `-f` (wireguard-go's variable)",
    foreign=True,
)
ENDPOINT_RETRIES = Setting(
    "WG_ENDPOINT_RESOLUTION_RETRIES",
    "15",
    "how often `wgactors up` retries resolving an endpoint name, with backoff; a number or "
    "`infinity` (wg's variable; wg-quick@.service sets `infinity`)",
    foreign=True,
)
NOTIFY_SOCKET = Setting(
    "NOTIFY_SOCKET",
    "",
    "set by systemd for `Type=notify`: READY=1, STATUS=, RELOADING=1 and STOPPING=1 go there",
    foreign=True,
)
JOURNAL_STREAM = Setting(
    "JOURNAL_STREAM",
    "",
    "set by systemd when stderr is the journal: log lines get `<N>` priority prefixes and no "
    "timestamps",
    foreign=True,
)
OFFLOADS = Setting(
    "WGACTORS_OFFLOADS",
    "udp_gso",
    "kernel offloads to ask for: a comma list of `tun_tso`, `tun_uso`, `tun_gro`, `udp_gso`, "
    "`udp_gro`, or `none` (see `actors/io/offloads.py` and the README's Kernel offloads)",
)
TEST_HOOKS = Setting(
    "WGACTORS_TEST_HOOKS",
    "",
    "test-only: `1` enables the test-only settings below; without it they are ignored",
    test_only=True,
)
INJECT_FAULTS = Setting(
    "WGACTORS_INJECT_FAULTS",
    "",
    "test-only: a fault plan that makes stages raise (see `actors/faults.py`)",
    test_only=True,
)
TEST_UNBATCHED = Setting(
    "WGACTORS_TEST_UNBATCHED",
    "",
    "test-only: `1` forces the unbatched TUN I/O fallback, as on an architecture without a "
    "known AIO system call table",
    test_only=True,
)
REFUSE_OFFLOADS = Setting(
    "WGACTORS_REFUSE_OFFLOADS",
    "",
    "test-only: offloads to treat as refused by the kernel (the names above, or `tun_vnet_hdr` "
    "for every TUN offload), so the fallback path runs for real",
    test_only=True,
)

SETTINGS: tuple[Setting, ...] = (
    LOG_LEVEL,
    WG_LOG_LEVEL,
    LOG_FILE,
    PIPELINE,
    SINGLE_THREADED,
    WORKERS,
    CPUS,
    SWITCH_INTERVAL,
    FOREGROUND,
    ENDPOINT_RETRIES,
    NOTIFY_SOCKET,
    JOURNAL_STREAM,
    OFFLOADS,
    TEST_HOOKS,
    INJECT_FAULTS,
    TEST_UNBATCHED,
    REFUSE_OFFLOADS,
)


def get(setting: Setting) -> str | None:
    """The variable's value, or None when it is unset or empty. A test-only setting reads as
    unset unless ``WGACTORS_TEST_HOOKS=1``."""
    if setting.test_only and setting is not TEST_HOOKS and os.environ.get(TEST_HOOKS.name) != "1":
        return None
    return os.environ.get(setting.name) or None


def is_set(setting: Setting) -> bool:
    """True for a flag set to anything but empty, ``0``, ``false`` or ``no``."""
    value = get(setting)
    return value is not None and value.strip().lower() not in ("0", "false", "no")

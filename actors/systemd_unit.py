"""The systemd unit, from one template: ``config/wgactors@.service`` and ``wgactors
systemd-unit`` are both renderings of :data:`TEMPLATE`.

The shipped file runs ``wgactors`` by name, which systemd finds only on its own search path
(``/usr/local/bin``, ``/usr/bin``...): right for a system-wide install, wrong for a virtual
environment, where ``systemd-analyze verify`` rejects the unit and the service cannot start.
``wgactors systemd-unit`` prints the unit for the installation that runs it, started as
``INTERPRETER -m actors.cli``:

- ``sys.executable`` is the interpreter running this very code, as invoked (a venv's
  ``bin/python`` is kept as it is, not resolved to the base interpreter, so that the venv's
  packages come with it), and ``-m actors.cli`` is the entry point the console script calls.
- The console script's own path is not used: ``sys.argv[0]`` names it only when the command was
  started through it (not through ``python -m actors.cli`` or a checkout's launcher), and
  ``shutil.which("wgactors")`` finds whatever comes first on the caller's PATH, which may be
  another installation, or nothing under sudo's ``secure_path``.

When the package is importable only through ``PYTHONPATH`` (a checkout run by its launcher), the
unit sets that too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["GENERIC_COMMAND", "TEMPLATE", "cmd_systemd_unit", "entry_point", "render"]

GENERIC_COMMAND = ("wgactors",)  # what the shipped file runs: found on systemd's search path
IMPORT_CHECK_TIMEOUT = 30.0  # seconds for the interpreter to say where it imports us from
# Directories ProtectHome=yes hides from the service.
HIDDEN_BY_PROTECT_HOME = (Path("/home"), Path("/root"), Path("/run/user"))

TEMPLATE = """\
# A WireGuard tunnel run by wgactors from /etc/wireguard/%i.conf (a wg-quick file).
#
#   wgactors systemd-unit > /etc/systemd/system/wgactors@.service   # this file, for your install
#   systemctl daemon-reload
#   systemctl enable --now wgactors@wg0      # /etc/wireguard/wg0.conf
#   systemctl reload wgactors@wg0            # SIGHUP: reload the pipeline file's stages
#   journalctl -u wgactors@wg0               # logs, with priorities
#
# Use it instead of wg-quick@wg0 (not beside it: both would create wg0).
[Unit]
Description=WireGuard tunnel %i (wgactors, userspace)
Documentation=man:wg-quick(8) man:wg(8)
After=network-online.target nss-lookup.target
Wants=network-online.target nss-lookup.target

[Service]
# wgactors says READY=1 once the interface, its routes and the UAPI socket are up.
Type=notify
NotifyAccess=main
ExecStart={exec_start} up /etc/wireguard/%i.conf
ExecReload=/bin/kill -HUP $MAINPID
# Exit status 2 is a bad configuration or pipeline file: restarting cannot fix it.
Restart=on-failure
RestartSec=5s
RestartPreventExitStatus=2
# As wg-quick@.service: keep trying to resolve endpoint names while the network comes up.
Environment=WG_ENDPOINT_RESOLUTION_RETRIES=infinity
{environment}\
# Custom stages: Environment=WGACTORS_PIPELINE=/etc/wireguard/%i.pipeline.toml

# TUN devices, routes, addresses and SO_MARK need CAP_NET_ADMIN, and nothing else does.
CapabilityBoundingSet=CAP_NET_ADMIN
AmbientCapabilities=CAP_NET_ADMIN
NoNewPrivileges=yes
# The UAPI socket lives in /run/wireguard, shared with wg and other tunnels: keep it at stop.
RuntimeDirectory=wireguard
RuntimeDirectoryPreserve=yes
RuntimeDirectoryMode=0700
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
UMask=0077
# Not set: MemoryDenyWriteExecute (ctypes and cffi callbacks need writable code pages).

[Install]
WantedBy=multi-user.target
"""


def quote(word: str, *, variables: bool = True) -> str:
    """One word of a unit's setting as systemd reads it: specifiers (``%``) escaped, and
    ``$`` too where systemd substitutes variables (the arguments of a command, not its path
    nor an ``Environment=`` value); quoted when it holds blanks, quotes or backslashes."""
    text = word.replace("%", "%%")
    if variables:
        text = text.replace("$", "$$")
    if any(c.isspace() or c in "\"'\\" for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render(command: Sequence[str], environment: dict[str, str] | None = None) -> str:
    """The unit running ``command`` (the words before ``up CONF``), with extra
    ``Environment=`` lines."""
    env_lines = "".join(
        f"Environment={quote(f'{k}={v}', variables=False)}\n"
        for k, v in (environment or {}).items()
    )
    path, *args = command
    exec_start = " ".join([quote(path, variables=False), *(quote(a) for a in args)])
    return TEMPLATE.format(exec_start=exec_start, environment=env_lines)


def package_root() -> Path:
    """The directory that holds the ``actors`` package now running."""
    return Path(__file__).resolve().parent.parent


def entry_point() -> tuple[list[str], dict[str, str]]:
    """The command that starts this installation, and the environment it needs for that."""
    command = [sys.executable, "-m", "actors.cli"]
    if _imports_us_unaided():
        return command, {}
    return command, {"PYTHONPATH": str(package_root())}


def _imports_us_unaided() -> bool:
    """Whether the interpreter finds this very package without our PYTHONPATH (and not from
    the current directory, which a service does not have)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        found = subprocess.run(
            [sys.executable, "-c", "import actors; print(actors.__file__)"],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=IMPORT_CHECK_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if found.returncode != 0:
        return False
    return Path(found.stdout.strip()).resolve().parent.parent == package_root()


def cmd_systemd_unit() -> int:
    command, environment = entry_point()
    sys.stdout.write(render(command, environment))
    for path in (Path(sys.executable).absolute(), package_root()):
        if any(path.is_relative_to(hidden) for hidden in HIDDEN_BY_PROTECT_HOME):
            print(
                f"wgactors: warning: {path} is under a directory that the unit's "
                "ProtectHome=yes hides from the service; install wgactors elsewhere or set "
                "ProtectHome=read-only",
                file=sys.stderr,
            )
            break
    return 0

"""The command line.

    wgactors up CONF [--single-threaded] [--pipeline FILE] [-v|-q]
        run a tunnel from a wg-quick file, in the foreground
    wgactors [-f|--foreground] IFACE
        the wireguard-go drop-in: create IFACE, serve /var/run/wireguard/IFACE.sock for `wg`,
        and (without -f) return once the socket is up, running on in the background
    wgactors status [IFACE] [--json]
        what `wg show` shows, plus each stage's counters

Exit status: 0 clean shutdown; 1 the interface, socket or UAPI socket could not be set up; 2 a
bad configuration, pipeline file or command line (one line on stderr, nothing left set up); 3
the supervisor's restart budget was spent.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from loguru import logger

from .config import ConfigError, check_permissions, load_config
from .daemon import EXIT_ESCALATED, EXIT_OK, EXIT_SETUP, Daemon, TunnelSpec, daemonize
from .faults import parse_faults
from .log import setup_logging
from .pipeline_file import PIPELINE_ENV, StageEntry, describe, load_pipeline

__all__ = ["EXIT_CONFIG", "EXIT_ESCALATED", "EXIT_OK", "EXIT_SETUP", "main"]

EXIT_CONFIG = 2
SINGLE_THREADED_ENV = "WGACTORS_SINGLE_THREADED"  # the drop-in mode's --single-threaded
_IFACE = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 as well
        self.exit(EXIT_CONFIG, f"wgactors: {message}\n")


def _verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less logging")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wgactors", description="Userspace WireGuard as a pipeline of actors.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a tunnel from a wg-quick configuration file")
    up.add_argument("config", help="wg-quick file; the interface is named after it")
    up.add_argument("--single-threaded", action="store_true", help="run all stages in one loop")
    up.add_argument(
        "--pipeline", metavar="FILE", help=f"custom stages (TOML); default: ${PIPELINE_ENV}"
    )
    _verbosity(up)
    status = sub.add_parser("status", help="show interfaces, peers and stage statistics")
    status.add_argument("interface", nargs="?", help="one interface (default: all of ours)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def build_daemon_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wgactors",
        usage="wgactors [-f] IFACE | wgactors up CONF | wgactors status [IFACE]",
        description="Create IFACE and serve the WireGuard UAPI socket (wireguard-go drop-in).",
    )
    parser.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    parser.add_argument("interface", help="the interface to create")
    _verbosity(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in ("up", "status", "-h", "--help"):
        args = build_parser().parse_args(args_list)
    else:
        args = build_daemon_parser().parse_args(args_list)
        args.command = "daemon"
    try:
        if args.command == "up":
            return cmd_up(args)
        if args.command == "status":
            from .status import cmd_status

            return cmd_status(args.interface, as_json=args.json)
        return cmd_daemon(args)
    except Exception as e:  # a bug: one clear line (details at debug level), no traceback
        logger.opt(exception=e).debug("internal error")
        logger.error("internal error: {!r} (run with -v for details)", e)
        return EXIT_SETUP


def _pipeline_path(path: str | None) -> str | None:
    return path or os.environ.get(PIPELINE_ENV) or None


def _load_stages(path: str | None) -> tuple[list[StageEntry], list[StageEntry]]:
    path = _pipeline_path(path)
    if not path:
        return [], []
    inbound, outbound = load_pipeline(path)
    logger.info("custom stages: inbound {}, outbound {}", describe(inbound), describe(outbound))
    return inbound, outbound


def cmd_up(args: argparse.Namespace) -> int:
    setup_logging(args.verbose - args.quiet)
    try:
        config = load_config(args.config)
        faults = parse_faults()
        inbound, outbound = _load_stages(args.pipeline)
    except (ConfigError, ValueError) as e:  # ValueError: pipeline file or fault plan
        print(f"wgactors: {e}", file=sys.stderr)
        return EXIT_CONFIG
    warning = check_permissions(args.config)
    if warning:
        logger.warning(warning)
    for w in config.warnings:
        logger.warning(w)
    if any(n.prefixlen == 0 for p in config.peers for n in p.allowed_ips):
        logger.warning(
            "{}: a default route in AllowedIPs is not installed by `wgactors up`; use "
            "wg-quick with WG_QUICK_USERSPACE_IMPLEMENTATION=wgactors for full-tunnel routing",
            config.name,
        )
    spec = TunnelSpec(
        config.name,
        config.private_key,
        config.peers,
        config.listen_port or 0,
        config.fwmark,
        config.mtu,
        config.addresses,
    )
    daemon = Daemon(
        spec,
        single_threaded=args.single_threaded,
        faults=faults,
        inbound=inbound,
        outbound=outbound,
        pipeline_path=_pipeline_path(args.pipeline),
        config_path=args.config,
        config=config,
    )
    return daemon.run()


def cmd_daemon(args: argparse.Namespace) -> int:
    name = args.interface
    if not _IFACE.match(name):
        print(f"wgactors: {name!r} is not a valid interface name", file=sys.stderr)
        return EXIT_CONFIG
    try:
        faults = parse_faults()
        inbound, outbound = _load_stages(None)
    except ValueError as e:
        print(f"wgactors: {e}", file=sys.stderr)
        return EXIT_CONFIG
    ready = None if args.foreground or os.environ.get("WG_PROCESS_FOREGROUND") else daemonize()
    setup_logging(args.verbose - args.quiet)
    spec = TunnelSpec(name, None, configure_interface=False)
    daemon = Daemon(
        spec,
        single_threaded=bool(os.environ.get(SINGLE_THREADED_ENV)),
        faults=faults,
        inbound=inbound,
        outbound=outbound,
        pipeline_path=_pipeline_path(None),
    )
    return daemon.run(ready)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

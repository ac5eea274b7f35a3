"""The command line.

    wgactors [-f|--foreground] [-v|-q] [--metrics ADDR:PORT] [--workers N|auto] IFACE
        the wireguard-go drop-in: create IFACE, serve /var/run/wireguard/IFACE.sock for `wg`,
        and (without -f) return once the socket is up, running on in the background
    wgactors up CONF [--single-threaded | --workers N|auto] [--pipeline FILE]
                     [--metrics ADDR:PORT] [-v|-q]
        run a tunnel from a wg-quick file, in the foreground
    wgactors status [IFACE] [--json | --prometheus]
        what `wg show` shows, plus each stage's counters
    wgactors stages
        the stages a pipeline file can name, and where each comes from
    wgactors check PIPELINE
        check a pipeline file as start-up and SIGHUP do (imports, options, names), without root
    wgactors systemd-unit
        the systemd unit (wgactors@.service) that runs this installation, by absolute path
    wgactors --version

A subcommand is any name registered in :func:`build_parser`; anything else is the drop-in form,
because wg-quick runs ``wgactors IFACE`` with nothing before the name.

Exit status: 0 clean shutdown; 1 the interface, socket or UAPI socket could not be set up (or an
endpoint name did not resolve); 2 a bad configuration, pipeline file or command line (one line
on stderr, nothing left set up); 3 the supervisor's restart budget was spent.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from loguru import logger

from . import __version__, settings
from .config import ConfigError, ResolveError, check_permissions, load_config
from .daemon import EXIT_ESCALATED, EXIT_OK, EXIT_SETUP, Daemon, TunnelSpec, daemonize
from .faults import parse_faults
from .log import print_error, setup_logging
from .metrics import parse_listen_address
from .modes import ACTORS, SINGLE_THREADED, parse_workers
from .pipeline_file import PIPELINE_ENV, StageEntry, describe, dropin_pipeline, load_pipeline
from .resolver import Retrying, retries_from_env

__all__ = ["EXIT_CONFIG", "EXIT_ESCALATED", "EXIT_OK", "EXIT_SETUP", "main"]

EXIT_CONFIG = 2
SINGLE_THREADED_ENV = settings.SINGLE_THREADED.name  # the drop-in mode's --single-threaded
_IFACE = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}$")
DAEMON_USAGE = "wgactors [-f] [-v|-q] [--metrics ADDR:PORT] [--workers N|auto] IFACE"
DAEMON_HELP = (
    "the wireguard-go drop-in (what wg-quick runs): create IFACE and serve its UAPI socket for "
    "wg; without -f, return once the socket is up and run on in the background"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code is 2 as well
        self.print_usage(sys.stderr)
        print_error(message)
        self.exit(EXIT_CONFIG)


def _verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less logging")


def _listen_address(text: str) -> tuple[str, int]:
    """argparse shows an ArgumentTypeError's own message; a ValueError it would show as
    "invalid _listen_address value"."""
    try:
        return parse_listen_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        type=_listen_address,
        help="serve Prometheus metrics over HTTP at ADDR:PORT (e.g. 127.0.0.1:9586)",
    )


def _workers(text: str) -> int:
    try:
        return parse_workers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        metavar="N|auto",
        type=_workers,
        help="worker processes, each a whole pipeline for a share of the peers; auto: one per "
        f"CPU (default: ${settings.WORKERS.name}, else 1)",
    )


def _worker_count(args: argparse.Namespace) -> int:
    """The command line's count, else the environment's; ValueError if that is bad."""
    if args.workers is not None:
        count: int = args.workers
        return count
    text = settings.get(settings.WORKERS)
    return parse_workers(text) if text else 1


def _version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"wgactors {__version__}")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand. To add one, add a sub-parser here and a branch in
    :func:`main`; the usage and help list it by themselves."""
    parser = _Parser(
        prog="wgactors",
        description="Userspace WireGuard as a pipeline of actors.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    up = sub.add_parser("up", help="run a tunnel from a wg-quick configuration file")
    up.add_argument("config", metavar="CONF", help="wg-quick file; the interface is named after it")
    up.add_argument("--single-threaded", action="store_true", help="run all stages in one loop")
    _workers_option(up)
    up.add_argument(
        "--pipeline", metavar="FILE", help=f"custom stages (TOML); default: ${PIPELINE_ENV}"
    )
    _metrics_option(up)
    _verbosity(up)
    status = sub.add_parser("status", help="show interfaces, peers and stage statistics")
    status.add_argument(
        "interface", metavar="IFACE", nargs="?", help="one interface (default: all of ours)"
    )
    form = status.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable output")
    form.add_argument(
        "--prometheus", action="store_true", help="Prometheus text format (node_exporter textfile)"
    )
    sub.add_parser("stages", help="list the stages a pipeline file can use, and their origin")
    check = sub.add_parser(
        "check", help="check a pipeline file as start-up does (imports, options, names)"
    )
    check.add_argument("pipeline", metavar="PIPELINE", help="the pipeline file (TOML)")
    sub.add_parser(
        "systemd-unit",
        help="print the systemd unit (wgactors@.service) that runs this installation",
    )
    _finish_usage(parser)
    return parser


def _finish_usage(parser: argparse.ArgumentParser) -> None:
    """One usage line per form, the drop-in form first, so neither --help nor an error hides
    any of them."""
    forms = [DAEMON_USAGE]
    for sub in _subcommands(parser).values():
        text = " ".join(sub.format_usage().removeprefix("usage: ").split())
        forms.append(text.replace("[-h] ", ""))
    forms.append("wgactors --version")
    parser.usage = "\n       ".join(forms)
    parser.epilog = f"IFACE alone: {DAEMON_HELP}. `wgactors COMMAND -h` shows a command's options."


def build_daemon_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wgactors",
        usage=build_parser().usage,
        description=f"wgactors IFACE: {DAEMON_HELP}.",
    )
    _version(parser)
    parser.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    parser.add_argument("interface", metavar="IFACE", help="the interface to create")
    _metrics_option(parser)
    _workers_option(parser)
    _verbosity(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args_list:
        parser.print_usage(sys.stderr)
        print_error("give an interface name or a command (wgactors --help)")
        return EXIT_CONFIG
    if args_list[0] in _subcommands(parser) or args_list[0] in ("-h", "--help", "--version"):
        args = parser.parse_args(args_list)
        if args.command is None:
            parser.print_usage(sys.stderr)
            return EXIT_CONFIG
    else:
        args = build_daemon_parser().parse_args(args_list)
        args.command = "daemon"
    try:
        if args.command == "up":
            return cmd_up(args)
        if args.command == "status":
            from .status import cmd_status

            return cmd_status(args.interface, as_json=args.json, prometheus=args.prometheus)
        if args.command == "stages":
            from .catalog import cmd_stages

            return cmd_stages()
        if args.command == "check":
            return cmd_check(args.pipeline)
        if args.command == "systemd-unit":
            from .systemd_unit import cmd_systemd_unit

            return cmd_systemd_unit()
        return cmd_daemon(args)
    except Exception as e:  # a bug: one clear line (details at debug level), no traceback
        logger.opt(exception=e).debug("internal error")
        logger.error("internal error: {!r} (run with -v for details)", e)
        return EXIT_SETUP


def _pipeline_path(path: str | None) -> str | None:
    return path or settings.get(settings.PIPELINE) or None


def _load_stages(path: str | None) -> tuple[list[StageEntry], list[StageEntry]]:
    path = _pipeline_path(path)
    if not path:
        return [], []
    inbound, outbound = load_pipeline(path)
    logger.info("custom stages: inbound {}, outbound {}", describe(inbound), describe(outbound))
    return inbound, outbound


def cmd_check(path: str) -> int:
    """``wgactors check PIPELINE``: the checks of start-up, with its messages and exit status,
    and nothing set up (no root needed)."""
    try:
        inbound, outbound = load_pipeline(path)
    except ValueError as e:
        print(f"wgactors: {e}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: inbound {describe(inbound)}; outbound {describe(outbound)}")
    return EXIT_OK


def _check_mode(single_threaded: bool, workers: int) -> None:
    if single_threaded and workers > 1:
        raise ValueError(
            "the single-threaded loop runs in one process: it does not take --workers "
            f"{workers} (each worker runs the actor pipeline)"
        )


def cmd_up(args: argparse.Namespace) -> int:
    setup_logging(args.verbose - args.quiet)
    try:
        config = load_config(args.config, resolve=Retrying(retries_from_env()))
        faults = parse_faults()
        inbound, outbound = _load_stages(args.pipeline)
        workers = _worker_count(args)
        _check_mode(args.single_threaded, workers)
    except ResolveError as e:  # the file may be right: a set-up failure, so systemd retries
        print_error(str(e))
        return EXIT_SETUP
    except (ConfigError, ValueError) as e:  # ValueError: pipeline file or fault plan
        print_error(str(e))
        return EXIT_CONFIG
    setup_logging(args.verbose - args.quiet, name=config.name)
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
        mode=SINGLE_THREADED if args.single_threaded else ACTORS,
        workers=workers,
        faults=faults,
        inbound=inbound,
        outbound=outbound,
        metrics=args.metrics,
        pipeline_path=_pipeline_path(args.pipeline),
        config_path=args.config,
        config=config,
    )
    return daemon.run()


def cmd_daemon(args: argparse.Namespace) -> int:
    name = args.interface
    if not _IFACE.match(name):
        print_error(f"{name!r} is not a valid interface name")
        return EXIT_CONFIG
    try:
        faults = parse_faults()
        pipeline_path = dropin_pipeline(name, os.environ)
        inbound, outbound = _load_stages(pipeline_path)
        workers = _worker_count(args)
        single = settings.is_set(settings.SINGLE_THREADED)
        _check_mode(single, workers)
    except ValueError as e:
        print_error(str(e))
        return EXIT_CONFIG
    foreground = args.foreground or settings.is_set(settings.FOREGROUND)
    ready = None if foreground else daemonize()
    setup_logging(args.verbose - args.quiet, name=name)
    spec = TunnelSpec(name, None, configure_interface=False)
    daemon = Daemon(
        spec,
        mode=SINGLE_THREADED if single else ACTORS,
        workers=workers,
        faults=faults,
        inbound=inbound,
        outbound=outbound,
        metrics=args.metrics,
        pipeline_path=pipeline_path,
    )
    return daemon.run(ready)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

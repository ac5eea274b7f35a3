"""The command line: ``wgactors up CONF`` runs a tunnel in the foreground.

Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 2 for a bad configuration or command
line (one line on stderr naming the file, line and key, and nothing left set up), 1 when the
interface or socket cannot be set up.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from loguru import logger

from .config import ConfigError, InterfaceConfig, check_permissions, load_config
from .faults import Fault, parse_faults
from .io import TunDevice, TunError, UdpSocket
from .log import setup_logging
from .pipeline_file import PIPELINE_ENV, StageEntry, describe, load_pipeline

__all__ = ["EXIT_CONFIG", "EXIT_ESCALATED", "EXIT_OK", "EXIT_SETUP", "main"]

EXIT_OK = 0
EXIT_SETUP = 1
EXIT_CONFIG = 2
EXIT_ESCALATED = 3  # the supervisor's restart budget was spent
STATS_LOG_INTERVAL = 60.0  # seconds between periodic stats lines at debug level
WATCH_INTERVAL = 0.1  # seconds between the main thread's looks at the pipeline


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 as well
        self.exit(EXIT_CONFIG, f"wgactors: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wgactors", description="Userspace WireGuard as a pipeline of actors.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a tunnel from a wg-quick configuration file")
    up.add_argument("config", help="wg-quick file; the interface is named after it")
    up.add_argument("--single-threaded", action="store_true", help="run all stages in one loop")
    up.add_argument(
        "--pipeline",
        metavar="FILE",
        help=f"custom stages (TOML); default: ${PIPELINE_ENV} if set",
    )
    up.add_argument("-v", "--verbose", action="count", default=0)
    up.add_argument("-q", "--quiet", action="count", default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            return cmd_up(args)
    except Exception as e:  # a bug: one clear line (the details at debug level), no traceback
        logger.opt(exception=e).debug("internal error")
        logger.error("internal error: {!r} (run with -v for details)", e)
        return EXIT_SETUP
    return EXIT_CONFIG  # unreachable: argparse requires a command


def cmd_up(args: argparse.Namespace) -> int:
    setup_logging(args.verbose - args.quiet)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"wgactors: {e}", file=sys.stderr)
        return EXIT_CONFIG
    warning = check_permissions(args.config)
    if warning:
        logger.warning(warning)
    for w in config.warnings:
        logger.warning(w)
    try:
        faults = parse_faults()
        pipeline_path = args.pipeline or os.environ.get(PIPELINE_ENV) or None
        inbound, outbound = load_pipeline(pipeline_path) if pipeline_path else ([], [])
    except ValueError as e:  # PipelineFileError or a bad fault plan
        print(f"wgactors: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if pipeline_path:
        logger.info("custom stages: inbound {}, outbound {}", describe(inbound), describe(outbound))
    return run(
        config,
        single_threaded=args.single_threaded,
        faults=faults,
        inbound=inbound,
        outbound=outbound,
    )


def run(
    config: InterfaceConfig,
    *,
    single_threaded: bool = False,
    faults: dict[str, Fault] | None = None,
    inbound: Sequence[StageEntry] = (),
    outbound: Sequence[StageEntry] = (),
) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("{} received: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        udp = UdpSocket(config.listen_port or 0, fwmark=config.fwmark)
    except OSError as e:
        logger.error("cannot open UDP port {}: {}", config.listen_port, e.strerror or e)
        return EXIT_SETUP
    try:
        tun = TunDevice(config.name, mtu=config.mtu)
    except TunError as e:
        udp.close()
        logger.error("{}", e)
        return EXIT_SETUP
    try:
        routes = [net for peer in config.peers for net in peer.allowed_ips if net.prefixlen > 0]
        for peer in config.peers:
            if any(net.prefixlen == 0 for net in peer.allowed_ips):
                logger.warning(
                    "{}: a default route in AllowedIPs is not installed by `wgactors up`; use "
                    "wg-quick with WG_QUICK_USERSPACE_IMPLEMENTATION=wgactors for full-tunnel "
                    "routing",
                    config.name,
                )
        tun.configure(config.addresses, routes)
    except TunError as e:
        tun.close()
        udp.close()
        logger.error("{}", e)
        return EXIT_SETUP
    mode = "single-threaded" if single_threaded else "actors"
    logger.info(
        "{} up: UDP port {}, {} peer(s), MTU {}, {} mode",
        config.name,
        udp.port,
        len(config.peers),
        config.mtu,
        mode,
    )
    status = EXIT_OK
    try:
        if single_threaded:
            _run_single(config, udp, tun, stop, inbound, outbound)
        else:
            status = _run_actors(config, udp, tun, stop, faults or {}, inbound, outbound)
    finally:
        tun.close()  # the kernel removes the non-persistent interface here
        udp.close()
    logger.info("{} down", config.name)
    return status


def _run_actors(
    config: InterfaceConfig,
    udp: UdpSocket,
    tun: TunDevice,
    stop: threading.Event,
    faults: dict[str, Fault],
    inbound: Sequence[StageEntry],
    outbound: Sequence[StageEntry],
) -> int:
    from .pipeline import Pipeline

    pipeline = Pipeline(
        private_key=config.private_key,
        peers=config.peers,
        udp=udp,
        tun=tun,
        faults=faults,
        inbound=inbound,
        outbound=outbound,
    )
    pipeline.start()
    status = EXIT_OK
    try:
        last_stats = time.monotonic()
        while not stop.wait(WATCH_INTERVAL):
            if pipeline.escalated.is_set():
                logger.error("shutting down: {}", pipeline.escalation_reason)
                status = EXIT_ESCALATED
                break
            if not pipeline.alive():
                logger.error("shutting down: the supervisor died")
                status = EXIT_ESCALATED
                break
            if time.monotonic() - last_stats >= STATS_LOG_INTERVAL:
                last_stats = time.monotonic()
                logger.debug("stats: {}", pipeline.stats())
    finally:
        logger.debug("final stats: {}", pipeline.stats())
        pipeline.stop()
    return status


def _run_single(
    config: InterfaceConfig,
    udp: UdpSocket,
    tun: TunDevice,
    stop: threading.Event,
    inbound: Sequence[StageEntry],
    outbound: Sequence[StageEntry],
) -> None:
    from .single import SingleThreaded

    loop = SingleThreaded(
        private_key=config.private_key,
        peers=config.peers,
        udp=udp,
        tun=tun,
        inbound=inbound,
        outbound=outbound,
    )
    try:
        loop.run(stop)
    finally:
        logger.debug("final stats: {}", loop.stats())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

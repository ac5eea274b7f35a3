"""Running a tunnel: set up, serve, watch, tear down. Shared by both ways of starting one.

``wgactors up CONF`` configures the interface itself (addresses, routes, link up);
``wgactors IFACE`` (the wireguard-go drop-in) creates a bare interface and leaves the rest to
`wg` and `wg-quick` through the UAPI socket. Both serve that socket, run the same data plane
(:mod:`actors.dataplane`, in the mode asked for), and end the same way: on SIGINT/SIGTERM, when
the interface is deleted (that is how `wg-quick down` stops a userspace implementation), or when
the data plane fails for good. Teardown stops the data plane, releases the UDP port and the
interface (the kernel removes a non-persistent interface when its descriptor closes), and only
then removes the socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loguru import logger

from . import sdnotify, settings
from .config import InterfaceConfig
from .control import Controller
from .dataplane import DataPlane, DataPlaneSpec, DataPlaneTimeout
from .faults import Fault
from .io import TunDevice, TunError, UdpSocket
from .io.offloads import plan_from_env
from .metrics import MetricsServer
from .modes import ACTORS, MODES, make_data_plane
from .pipeline_file import StageEntry
from .placement import Placement
from .reload import Reloader
from .uapi_server import UapiServer
from .wireguard.device import PeerConfig

__all__ = ["EXIT_ESCALATED", "EXIT_OK", "EXIT_SETUP", "Daemon", "TunnelSpec", "daemonize"]

EXIT_OK = 0
EXIT_SETUP = 1
EXIT_ESCALATED = 3  # the data plane failed for good (e.g. a built-in stage's restart budget)
STATS_LOG_INTERVAL = 60.0  # seconds between periodic stats lines at debug level
WATCH_INTERVAL = 0.1  # seconds between the main thread's looks at the data plane
INTERFACE_CHECK_INTERVAL = 0.5  # seconds between checks that the interface still exists
READY_TIMEOUT = 30.0  # seconds the parent of a daemon waits for it to report
READY_STOP_GRACE = 2.0  # seconds a child that never reported gets to exit on SIGTERM
READY_MESSAGE_LIMIT = 4096  # bytes of the child's report the parent reads


@dataclass(frozen=True)
class TunnelSpec:
    name: str
    private_key: bytes | None
    peers: tuple[PeerConfig, ...] = ()
    listen_port: int = 0
    fwmark: int = 0
    mtu: int = 1280
    # `up` mode configures the interface; the drop-in mode leaves it to wg-quick
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()
    configure_interface: bool = True


class Daemon:
    def __init__(
        self,
        spec: TunnelSpec,
        *,
        mode: str = ACTORS,
        faults: dict[str, Fault] | None = None,
        inbound: Sequence[StageEntry] = (),
        outbound: Sequence[StageEntry] = (),
        metrics: tuple[str, int] | None = None,
        pipeline_path: str | None = None,
        config_path: str | None = None,
        config: InterfaceConfig | None = None,
    ) -> None:
        self.spec = spec
        self.metrics = metrics
        self.reload_requested = threading.Event()
        # SIGHUP re-reads these (actors.reload); the config file only in `up` mode
        self.pipeline_path = pipeline_path
        self.config_path = config_path
        self.config = config
        self.reloader: Reloader | None = None
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode
        self.faults = faults or {}
        self.inbound = inbound
        self.outbound = outbound
        self.stop = threading.Event()
        self.status = EXIT_OK
        self.placement = Placement("")
        self.health: sdnotify.FailingStages | None = None  # STATUS= names failing stages

    def _on_signal(self, signum: int, _frame: object) -> None:
        logger.info("{} received: shutting down", signal.Signals(signum).name)
        self.stop.set()

    def _on_hup(self, _signum: int, _frame: object) -> None:
        """Only flags the request (a signal handler must not log or block): the main thread
        runs the reload (see :meth:`_reload`)."""
        self.reload_requested.set()

    def _reload(self) -> None:
        """SIGHUP (``systemctl reload``), the one path in both modes: the reloader tells
        systemd a reload is under way (``RELOADING=1``), re-reads the pipeline file (and the
        wg-quick file in ``up`` mode), swaps what changed, and reports ready again whether or
        not the files were good, so that ``systemctl reload`` never hangs on us. SIGHUPs that
        arrive meanwhile are served by one more reload after it."""
        if self.reloader is None:  # not serving yet: the files were read just now
            return
        logger.info("SIGHUP received: reloading")
        self.reloader.reload()

    def _reloading(self) -> None:
        sdnotify.reloading(f"{self.spec.name}: reloading")

    def _reloaded(self, applied: bool) -> None:
        outcome = "reloaded" if applied else "reload refused, running unchanged"
        sdnotify.ready(f"{self.spec.name} up ({outcome})")

    def run(self, ready: Callable[[str | None], None] | None = None) -> int:
        """Set up and serve until told to stop. ``ready`` is called once, with None when the
        UAPI socket is up, or with the reason set-up failed."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        report = ready or (lambda _: None)
        spec = self.spec
        try:
            offloads = plan_from_env()
        except ValueError as e:
            return self._setup_failed(str(e), report)
        problem = Placement.check(settings.get(settings.CPUS) or "")
        if problem is not None:
            return self._setup_failed(f"{settings.CPUS.name}: {problem}", report)
        try:
            udp = UdpSocket(spec.listen_port, fwmark=spec.fwmark, offloads=offloads)
        except OSError as e:
            reason = f"cannot open UDP port {spec.listen_port}: {e.strerror or e}"
            return self._setup_failed(reason, report)
        try:
            tun = TunDevice(spec.name, mtu=spec.mtu, offloads=offloads)
            if spec.configure_interface:
                routes = [n for p in spec.peers for n in p.allowed_ips if n.prefixlen > 0]
                tun.configure(spec.addresses, routes)
            else:
                tun.configure((), (), up=False)
        except TunError as e:
            udp.close()
            return self._setup_failed(str(e), report)
        try:
            return self._serve(udp, tun, report)
        finally:
            tun.close()  # the kernel removes the non-persistent interface here (idempotent)
            udp.close()
            logger.info("{} down", spec.name)

    def _serve(self, udp: UdpSocket, tun: TunDevice, report: Callable[[str | None], None]) -> int:
        spec = self.spec
        try:
            plane = make_data_plane(
                self.mode,
                DataPlaneSpec(
                    private_key=spec.private_key,
                    peers=spec.peers,
                    udp=udp,
                    tun=tun,
                    inbound=tuple(self.inbound),
                    outbound=tuple(self.outbound),
                    faults=self.faults,
                ),
            )
        except OSError as e:  # e.g. the kernel refused an AIO context (fs.aio-max-nr)
            return self._setup_failed(f"cannot set up the data plane: {e.strerror or e}", report)
        self._tune_interpreter(plane.switch_interval)
        cpus = settings.get(settings.CPUS) or ""
        self.placement = Placement(cpus, default=plane.default_placement())
        controller = Controller(plane, udp)
        controller.placement = lambda: self.placement.description
        self.reloader = Reloader(
            swap=plane.reload,
            controller=controller,
            pipeline_path=self.pipeline_path,
            config_path=self.config_path,
            current=self.config,
            port=lambda: udp.port,
        )
        self.reloader.before = self._reloading
        self.reloader.after = self._reloaded
        server = UapiServer(spec.name, controller)
        metrics_server: MetricsServer | None = None
        serving = False
        try:
            # Before any stage thread exists: threads inherit the affinity of their creator.
            self.placement.start()
            try:
                plane.start()
            except Exception as e:  # a bug of ours, or the system out of threads
                logger.opt(exception=e).debug("the data plane did not start")
                return self._setup_failed(f"cannot start the data plane: {e!r}", report)
            try:
                server.start()
            except OSError as e:  # the socket may be another daemon's: leave it alone
                return self._setup_failed(f"cannot serve {server.path}: {e.strerror or e}", report)
            serving = True
            try:
                metrics_server = self._start_metrics()
            except OSError as e:
                host, port = self.metrics or ("", 0)
                reason = f"cannot serve metrics on {host or '*'}:{port}: {e.strerror or e}"
                return self._setup_failed(reason, report)
            logger.info(
                "{} up: UDP port {}, {} peer(s), {}, {} mode, UAPI {}",
                spec.name,
                udp.port,
                len(spec.peers),
                tun.mtu_text(),
                plane.mode,
                server.path,
            )
            watcher = threading.Thread(target=self._watch_interface, name="ifwatch", daemon=True)
            watcher.start()
            report(None)
            up = f"{spec.name} up: UDP port {udp.port}, {len(spec.peers)} peer(s), {plane.mode}"
            sdnotify.ready(up)
            self.health = sdnotify.FailingStages(up, controller.stats)
            self._watch(plane)
            sdnotify.stopping(f"{spec.name}: shutting down")
            with contextlib.suppress(DataPlaneTimeout):
                logger.opt(lazy=True).debug("final stats: {}", plane.stats)
        finally:
            if metrics_server is not None:
                metrics_server.stop()
            plane.stop()
            self.placement.stop()
            # The port and the interface go before the UAPI socket does: whoever waits for the
            # socket to vanish (wg-quick down, then up again) finds both free.
            udp.close()
            tun.close()
            if serving:
                server.stop()
        return self.status

    @staticmethod
    def _setup_failed(reason: str, report: Callable[[str | None], None]) -> int:
        logger.error("{}", reason)
        report(reason)
        return EXIT_SETUP

    @staticmethod
    def _tune_interpreter(wanted: float | None) -> None:
        """The thread switch interval the data plane asks for (WGACTORS_SWITCH_INTERVAL
        overrides it); None leaves the interpreter's own."""
        if wanted is None:
            return
        text = settings.get(settings.SWITCH_INTERVAL)
        try:
            sys.setswitchinterval(float(text) if text else wanted)
        except ValueError:
            logger.warning(
                "{}={!r} is not a positive number: ignored", settings.SWITCH_INTERVAL.name, text
            )
            sys.setswitchinterval(wanted)

    def _start_metrics(self) -> MetricsServer | None:
        """The ``--metrics`` HTTP endpoint (None without one); OSError if it cannot listen."""
        if self.metrics is None:
            return None
        from .metrics import render
        from .status import query

        name = self.spec.name
        server = MetricsServer(self.metrics, lambda: render([query(name)]))
        server.start()
        logger.info("metrics on http://{}:{}/metrics", *server.address)
        return server

    def _watch(self, plane: DataPlane) -> None:
        """The main thread's work while serving: reloads, the data plane's health, stats."""
        last_stats = time.monotonic()
        while not self.stop.wait(WATCH_INTERVAL):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            failure = plane.failure()
            if failure is not None:
                logger.error("shutting down: {}", failure)
                self.status = EXIT_ESCALATED
                return
            if time.monotonic() - last_stats >= STATS_LOG_INTERVAL:
                last_stats = time.monotonic()
                with contextlib.suppress(DataPlaneTimeout):
                    logger.opt(lazy=True).debug("stats: {}", plane.stats)

    def _watch_interface(self) -> None:
        """`wg-quick down` deletes the interface: that is our cue to exit."""
        while not self.stop.wait(INTERFACE_CHECK_INTERVAL):
            if self.health is not None:
                self.health.poll()
            try:
                socket.if_nametoindex(self.spec.name)
            except OSError:
                logger.info("{} was deleted: shutting down", self.spec.name)
                self.stop.set()


def _await_report(fd: int, timeout: float) -> str | None:
    """The child's report on ``fd`` up to its end of file (the child closes its end once it
    has written, or dies); None if none came within ``timeout``."""
    message = b""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return message.decode(errors="replace").strip()
            message += chunk
            if len(message) > READY_MESSAGE_LIMIT:
                return message[:READY_MESSAGE_LIMIT].decode(errors="replace").strip()
    finally:
        os.close(fd)


def _stop_child(pid: int) -> None:
    """SIGTERM, a grace period, then SIGKILL: a child stalled in start-up must not linger."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + READY_STOP_GRACE
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _keep_stderr() -> bool:
    """Whether the background daemon keeps writing to the stderr it was given: a terminal, a
    file or the journal's socket (systemd, wg-quick@.service) get its logs. A pipe does only
    when a log level was asked for (as wireguard-go keeps its output only with LOG_LEVEL set):
    whoever reads a pipe to its end, like `out=$(wg-quick up wg0)`, would otherwise wait for
    the whole life of the daemon."""
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(2).st_mode)
    except OSError:
        return False
    explicit = settings.get(settings.LOG_LEVEL) or settings.get(settings.WG_LOG_LEVEL)
    return not is_pipe or explicit is not None


def daemonize(ready_timeout: float = READY_TIMEOUT) -> Callable[[str | None], None]:
    """Fork into the background; the parent exits once the child reports.

    The parent waits (at most ``ready_timeout`` seconds) for one line on a pipe: "ok" (exit 0)
    or the reason set-up failed (printed, exit 1). This is how `wgactors IFACE` returns only
    once the UAPI socket is up, which wg-quick relies on. A child that neither reports nor
    exits in time is stopped, so that `wg-quick up` fails instead of hanging. Must be called
    before any thread is started.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        text = _await_report(read_end, ready_timeout)
        if text == "ok":
            os._exit(EXIT_OK)
        if text is None:
            _stop_child(pid)
            text = f"the daemon did not report within {ready_timeout:g} s; stopped it"
        print(f"wgactors: {text or 'the daemon exited during start-up'}", file=sys.stderr)
        os._exit(EXIT_SETUP)
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    log_path = settings.get(settings.LOG_FILE)
    if log_path:
        err = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    elif _keep_stderr():
        err = os.dup(2)
    else:
        err = devnull
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(err, 2)
    if err != devnull:
        os.close(err)

    def notify(failure: str | None) -> None:
        with contextlib.suppress(OSError):
            os.write(write_end, b"ok\n" if failure is None else failure.encode() + b"\n")
            os.close(write_end)

    return notify

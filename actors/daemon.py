"""Running a tunnel: set up, serve, watch, tear down. Shared by both ways of starting one.

``wgactors up CONF`` configures the interface itself (addresses, routes, link up);
``wgactors IFACE`` (the wireguard-go drop-in) creates a bare interface and leaves the rest to
`wg` and `wg-quick` through the UAPI socket. Both serve that socket, run the same data plane
(:mod:`actors.dataplane`, in the mode asked for), and end the same way: on SIGINT/SIGTERM, when
the interface is deleted (that is how `wg-quick down` stops a userspace implementation), or when
the data plane fails for good. Teardown stops the data plane, releases the UDP port and the
interface (the kernel removes a non-persistent interface when its descriptor closes), and only
then removes the socket, so that `wg-quick down && wg-quick up` finds all three free.

Once a stop begins, the process ends within :data:`SHUTDOWN_DEADLINE`, whatever state it is
in: every step of the teardown waits only for what is left of that deadline, and a guard thread,
woken by the signal itself (Python's wakeup fd, written by the C-level handler even while the
main thread is stuck in a call), removes the UAPI socket and ends the process with ``os._exit``
if the teardown has not finished by then. The kernel releases the port and the interface.
"""

from __future__ import annotations

import contextlib
import errno
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
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from . import sdnotify, settings
from .config import InterfaceConfig
from .control import Controller
from .dataplane import DataPlane, DataPlaneSpec, DataPlaneTimeout
from .failure import describe
from .faults import Fault
from .io import TunDevice, TunError, UdpSocket
from .io.offloads import plan_from_env
from .io.steering import open_group
from .io.tun import open_queues
from .log import print_error
from .metrics import MetricsServer
from .modes import ACTORS, MODES, WORKERS, make_data_plane
from .pipeline_file import StageEntry
from .placement import ALL, Placement
from .reload import Reloader
from .uapi_server import UapiServer
from .wireguard.device import PeerConfig

__all__ = ["EXIT_ESCALATED", "EXIT_OK", "EXIT_SETUP", "Daemon", "TunnelSpec", "daemonize"]

EXIT_OK = 0
EXIT_SETUP = 1
EXIT_ESCALATED = 3  # the data plane failed for good (e.g. a built-in stage's restart budget)
STATS_LOG_INTERVAL = 60.0  # seconds between periodic stats lines at debug level
WATCH_INTERVAL = 0.1  # seconds between the main thread's looks at the data plane
INTERFACE_CHECK_INTERVAL = 0.2  # seconds between checks that the interface still exists
HEALTH_POLL_INTERVAL = 1.0  # seconds between looks for failing stages (each rate-limits itself)
# Seconds from the start of a stop (SIGTERM, SIGINT, the interface deleted, the data plane
# failed) to the end of the process: the teardown's steps share them, then the guard exits.
SHUTDOWN_DEADLINE = 1.0
# Seconds of that deadline kept for the steps after the data plane's stop: closing the port and
# the interface, then the UAPI server's stop (its loop wakes at once through its own pipe).
SOCKET_RESERVE = 0.15
TEARDOWN_RESERVE = SOCKET_RESERVE + 0.1
# The part of the data plane's time that the final stats line may take (a stage that does
# not answer is not waited for beyond it).
FINAL_STATS_SHARE = 0.5
GUARD_LOG_WAIT = 0.1  # seconds the guard lets its last log line take before it exits
# Seconds a UAPI socket that another process still serves is waited for at start-up: we could
# create the interface, so its owner has usually lost it (wg-quick down) and is on its way out.
PREVIOUS_OWNER_WAIT = INTERFACE_CHECK_INTERVAL + SHUTDOWN_DEADLINE + 2.0
PREVIOUS_OWNER_POLL = 0.05  # seconds between looks at that socket
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_OTHER_STOP = 0  # the byte that wakes the guard for a stop that is not a signal
READY_TIMEOUT = 30.0  # seconds the parent of a daemon waits for it to report
READY_STOP_GRACE = 2.0  # seconds a child that never reported gets to exit on SIGTERM
READY_MESSAGE_LIMIT = 4096  # bytes of the child's report the parent reads


@dataclass(frozen=True)
class TunnelSpec:
    name: str
    private_key: bytes | None = field(repr=False)  # never in a log line, however it is shown
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
        workers: int = 1,
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
        if workers > 1 and mode != ACTORS:
            raise ValueError(f"{workers} workers run the actor pipeline, not {mode!r}")
        # one worker is the pipeline itself; more are worker processes (actors.workers)
        self.workers = workers
        self.mode = WORKERS if workers > 1 else mode
        self.faults = faults or {}
        self.inbound = inbound
        self.outbound = outbound
        self.stop = threading.Event()
        self.status = EXIT_OK
        self.placement = Placement("")
        self.health: sdnotify.FailingStages | None = None  # STATUS= names failing stages
        self.deadline: float | None = None  # time.monotonic() by which the process ends
        self._stop_signal: str | None = None
        self._wake = -1  # the guard's pipe: signal numbers, and _OTHER_STOP
        self._own_socket: tuple[Path, int, int] | None = None  # path, device, inode

    def _on_signal(self, signum: int, _frame: object) -> None:
        """The C-level handler has already written the signal's number to the guard's pipe
        (the wakeup fd), and the guard acts on it (:meth:`_guard`); installing a handler is what
        keeps the default action (death, or KeyboardInterrupt) away. Should a library have
        replaced the wakeup fd meanwhile (an event loop may), ours is put back and the number
        written here instead."""
        if signal.set_wakeup_fd(self._wake, warn_on_full_buffer=False) != self._wake:
            with contextlib.suppress(OSError):
                os.write(self._wake, bytes([signum]))

    def _arm_guard(self) -> None:
        """Route SIGTERM, SIGINT and SIGHUP to the guard thread, through the wakeup fd."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(read_end, True)
        self._wake = write_end
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for signum in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        threading.Thread(
            target=self._guard, args=(read_end,), name="wga:stopguard", daemon=True
        ).start()

    def _guard(self, fd: int) -> None:
        """Reads the signals as they come: SIGHUP asks for a reload; a stop sets the deadline,
        wakes the main thread, and, if the process still runs at the deadline, ends it."""
        while self.deadline is None:
            try:
                received = os.read(fd, 64)
            except InterruptedError:
                continue
            except OSError:
                return
            if not received:
                return
            for signum in received:
                if signum == signal.SIGHUP:
                    self.reload_requested.set()
                elif signum in STOP_SIGNALS or signum == _OTHER_STOP:
                    if signum != _OTHER_STOP and self._stop_signal is None:
                        self._stop_signal = signal.Signals(signum).name
                    self._begin_stop()
        self.stop.set()
        assert self.deadline is not None
        time.sleep(max(0.0, self.deadline - time.monotonic()))
        self._force_exit()

    def _begin_stop(self) -> float:
        """Start the shutdown clock (once); the deadline."""
        if self.deadline is None:
            self.deadline = time.monotonic() + SHUTDOWN_DEADLINE
        return self.deadline

    def request_stop(self) -> float:
        """Stop for a reason that is not a signal (the interface went, the data plane failed,
        the teardown has begun): under the same deadline and guard as a signal. The deadline."""
        deadline = self._begin_stop()
        self.stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake, bytes([_OTHER_STOP]))
        return deadline

    def _force_exit(self) -> None:
        """The last resort: the teardown did not finish in time (a stage stuck in a call, a
        step that ignored its deadline). Remove our UAPI socket (only if it is still ours: a
        successor may have made its own) and end the process; the kernel closes the port and
        the interface."""
        own = self._own_socket
        if own is not None:
            path, dev, ino = own
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    path.unlink()
        last = threading.Thread(
            target=lambda: logger.error(
                "{}: shutdown not done within {:g} s: exiting now",
                self.spec.name,
                SHUTDOWN_DEADLINE,
            ),
            daemon=True,
        )
        last.start()
        last.join(GUARD_LOG_WAIT)  # a logger stuck on a full stderr must not hold the exit
        os._exit(self.status)

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
        self._arm_guard()
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
            group = open_group(
                spec.listen_port, self.workers, fwmark=spec.fwmark, offloads=offloads
            )
        except OSError as e:
            reason = f"cannot open UDP port {spec.listen_port}: {e.strerror or e}"
            return self._setup_failed(reason, report)
        try:
            queues = open_queues(spec.name, self.workers, mtu=spec.mtu, offloads=offloads)
            tun = queues[0]
            if spec.configure_interface:
                routes = [n for p in spec.peers for n in p.allowed_ips if n.prefixlen > 0]
                tun.configure(spec.addresses, routes)
            else:
                tun.configure((), (), up=False)
        except TunError as e:
            _close_all(group)
            return self._setup_failed(str(e), report)
        try:
            return self._serve(group, queues, report)
        finally:
            _close_all(queues)  # the kernel removes the non-persistent interface here
            _close_all(group)
            logger.info("{} down", spec.name)

    def _serve(
        self,
        group: list[UdpSocket],
        queues: list[TunDevice],
        report: Callable[[str | None], None],
    ) -> int:
        spec = self.spec
        udp, tun = group[0], queues[0]
        cpus = settings.get(settings.CPUS) or ""
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
                    udp_group=tuple(group) if len(group) > 1 else (),
                    tun_queues=tuple(queues) if len(queues) > 1 else (),
                    placement=cpus,
                ),
            )
        except OSError as e:  # e.g. the kernel refused an AIO context (fs.aio-max-nr)
            return self._setup_failed(f"cannot set up the data plane: {e.strerror or e}", report)
        self._tune_interpreter(plane.switch_interval)
        # A data plane of processes places each of them itself; this one stays unconfined, so
        # that the processes it starts inherit no confinement.
        self.placement = Placement(
            ALL if plane.places_itself else cpus, default=plane.default_placement()
        )
        controller = Controller(plane)
        controller.placement = (
            (lambda: "per worker") if plane.places_itself else (lambda: self.placement.description)
        )
        self.reloader = Reloader(
            swap=plane.reload,
            controller=controller,
            pipeline_path=self.pipeline_path,
            config_path=self.config_path,
            current=self.config,
            port=lambda: plane.sockets.port,
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
                return self._setup_failed(f"cannot start the data plane: {describe(e)}", report)
            try:
                self._start_uapi(server)
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
                "{} up: UDP port {}, {} peer(s), {}, {} mode{}, UAPI {}",
                spec.name,
                udp.port,
                len(spec.peers),
                tun.mtu_text(),
                plane.mode,
                f" ({self.workers} worker processes)" if self.workers > 1 else "",
                server.path,
            )
            watcher = threading.Thread(
                target=self._watch_interface, args=(tun,), name="wga:ifwatch", daemon=True
            )
            watcher.start()
            report(None)
            up = f"{spec.name} up: UDP port {udp.port}, {len(spec.peers)} peer(s), {plane.mode}"
            sdnotify.ready(up)
            self.health = sdnotify.FailingStages(up, controller.stats)
            # On a thread of its own: a stuck stage makes a look at the stats slow, and must not
            # delay noticing that the interface went, or a signal.
            threading.Thread(target=self._watch_health, name="wga:health", daemon=True).start()
            self._watch(plane)
            if self._stop_signal is not None:
                logger.info("{} received: shutting down", self._stop_signal)
            sdnotify.stopping(f"{spec.name}: shutting down")
        finally:
            deadline = self.request_stop()
            # The metrics server may wait for a slow client: it stops beside the rest.
            metrics_stop = _in_background(metrics_server.stop) if metrics_server else None
            plane_deadline = deadline - TEARDOWN_RESERVE
            if serving:
                self._final_stats(plane, plane_deadline)
            plane.stop(plane_deadline)
            self.placement.stop()
            # The port and the interface go before the UAPI socket does: whoever waits for the
            # socket to vanish (wg-quick down, then up again) finds both free.
            _close_all(group)
            _close_all(queues)
            if metrics_stop is not None:
                metrics_stop.join(max(0.0, deadline - SOCKET_RESERVE - time.monotonic()))
            if serving:
                server.stop()
                self._own_socket = None
        return self.status

    @staticmethod
    def _final_stats(plane: DataPlane, deadline: float) -> None:
        """The counters at the end, at debug level, for the record (and the live tests):
        asked while the stages still run, for a share of the time left to stop them."""

        def log_stats() -> None:
            with contextlib.suppress(DataPlaneTimeout):
                logger.opt(lazy=True).debug("final stats: {}", plane.stats)

        wait = max(0.0, deadline - time.monotonic()) * FINAL_STATS_SHARE
        _in_background(log_stats).join(wait)

    def _start_uapi(self, server: UapiServer) -> None:
        """Serve the UAPI socket. One that a live process serves is waited for (up to
        PREVIOUS_OWNER_WAIT): we have just created the interface by that name, so its owner
        has usually lost its own and is shutting down (`wg-quick down && wg-quick up`)."""
        give_up = time.monotonic() + PREVIOUS_OWNER_WAIT
        while True:
            try:
                server.start()
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or self.stop.is_set():
                    raise
                if time.monotonic() >= give_up:
                    raise OSError(
                        e.errno, f"{e.strerror or e} (waited {PREVIOUS_OWNER_WAIT:g} s)"
                    ) from None
                time.sleep(PREVIOUS_OWNER_POLL)
        st = os.lstat(server.path)
        self._own_socket = (server.path, st.st_dev, st.st_ino)

    def _setup_failed(self, reason: str, report: Callable[[str | None], None]) -> int:
        logger.error("{}", reason)
        report(reason)
        self.status = EXIT_SETUP  # also what the guard exits with, should it have to
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
                self.request_stop()
                return
            if time.monotonic() - last_stats >= STATS_LOG_INTERVAL:
                last_stats = time.monotonic()
                with contextlib.suppress(DataPlaneTimeout):
                    logger.opt(lazy=True).debug("stats: {}", plane.stats)

    def _watch_health(self) -> None:
        """Keeps systemd's STATUS= line naming the stages that are failing."""
        while not self.stop.wait(HEALTH_POLL_INTERVAL):
            if self.health is not None:
                self.health.poll()

    def _watch_interface(self, tun: TunDevice) -> None:
        """`wg-quick down` deletes the interface: that is our cue to exit. Watched by its
        index, not its name: `wg-quick up` may create the next interface by that name before
        we look."""
        try:
            index = socket.if_nametoindex(tun.name)
        except OSError:
            index = 0
        while index and not self.stop.wait(INTERFACE_CHECK_INTERVAL):
            try:
                socket.if_indextoname(index)
            except OSError:
                break
        if not self.stop.is_set():
            logger.info("{} was deleted: shutting down", self.spec.name)
            self.request_stop()


def _close_all(objects: Sequence[UdpSocket | TunDevice]) -> None:
    for item in objects:
        item.close()


def _in_background(step: Callable[[], None]) -> threading.Thread:
    """Run a teardown step on a daemon thread of its own, for the caller to wait for (or not)."""
    thread = threading.Thread(target=step, name="wga:teardown", daemon=True)
    thread.start()
    return thread


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
        print_error(text or "the daemon exited during start-up")
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

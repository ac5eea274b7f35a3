"""Small user stages for the tests: they use only the public API (`actors.Stage`, `Packet`)."""

from __future__ import annotations

import threading

from actors import Packet, Stage
from actors.stage import StageContext


class DropUdpPort(Stage):
    """Drops UDP packets to one port; passes everything else."""

    def __init__(self, port: int) -> None:
        super().__init__()
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, not {port!r}")
        self.port = port
        self.dropped = 0

    def process(self, packet: Packet) -> Packet | None:
        if packet.protocol == 17 and packet.dst_port == self.port:
            self.dropped += 1
            return None
        return packet

    def stats_extra(self) -> dict[str, int]:
        return {"udp_dropped": self.dropped}


class Duplicate(Stage):
    """Emits every packet ``times`` times (exercises the iterable return)."""

    def __init__(self, times: int = 2) -> None:
        super().__init__()
        self.times = times

    def process(self, packet: Packet) -> list[Packet]:
        return [packet] * self.times


class Broken(Stage):
    """Returns something that is not a packet."""

    def process(self, packet: Packet) -> object:  # type: ignore[override]
        return "not a packet"


class NotAStage:
    pass


class FailEvery(Stage):
    """Raises on every ``every``-th packet (a user's bug that some packets trigger)."""

    def __init__(self, every: int = 25) -> None:
        super().__init__()
        self.every = every
        self.seen = 0
        self.raised = 0

    def process(self, packet: Packet) -> Packet:
        self.seen += 1
        if self.seen % self.every == 0:
            self.raised += 1
            raise RuntimeError(f"injected fault on packet {self.seen}")
        return packet

    def stats_extra(self) -> dict[str, int]:
        return {"raised": self.raised}


class FailOnStart(Stage):
    """Cannot start (a missing file, a port in use...)."""

    def on_start(self) -> None:
        raise OSError("injected on_start failure")


class PingBug(Stage):
    """Raises on ICMP and ICMPv6 only (a plausible narrow bug); passes everything else."""

    def process(self, packet: Packet) -> Packet:
        if packet.protocol in (1, 58):
            raise ZeroDivisionError("cannot handle ICMP")
        return packet


class FirstStartFails:
    """A mixin whose on_start fails in the first incarnation (a file not there yet)."""

    context: StageContext

    def on_start(self) -> None:
        if self.context.incarnation == 1:
            raise OSError("mixin on_start failed")


class MixinStart(FirstStartFails, Stage):
    """A stage whose on_start comes from a mixin placed before Stage."""


class BlockForever(Stage):
    """Blocks for good in `process` (a call that never returns), after touching ``marker`` so
    that a test knows it is stuck."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def process(self, packet: Packet) -> Packet:
        with open(self.marker, "w"):
            pass
        threading.Event().wait()
        return packet


class BlockOnStart(Stage):
    """Blocks for good in `on_start`, after touching ``marker``."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def on_start(self) -> None:
        with open(self.marker, "w"):
            pass
        threading.Event().wait()

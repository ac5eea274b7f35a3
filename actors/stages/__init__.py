"""The built-in stages of the pipeline, one module per stage.

UDP ingress -> WireGuard decrypt -> (custom inbound) -> TUN writer
TUN reader -> (custom outbound) -> WireGuard encrypt -> UDP
plus a ticker that drives the protocol timers and custom stages' ``on_tick``; each custom stage
runs in a :class:`~actors.stages.custom.StageActor`.
"""

from .base import GetStats, Outlet, PipelineActor, Poll
from .decrypt import Decrypt
from .encrypt import Encrypt
from .ticker import Tick, Ticker
from .tun_reader import TunReader
from .tun_writer import TunWriter
from .udp_ingress import UdpIngress

__all__ = [
    "Decrypt",
    "Encrypt",
    "GetStats",
    "Outlet",
    "PipelineActor",
    "Poll",
    "Tick",
    "Ticker",
    "TunReader",
    "TunWriter",
    "UdpIngress",
]

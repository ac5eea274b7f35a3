"""The only code that touches the kernel: the UDP socket and the TUN device.

Stages and the single-threaded loop use these objects; neither the protocol core nor the
pipeline wiring does any I/O of its own (connlib's `io.rs` split).
"""

from .tun import TunDevice, TunError
from .udp import UdpSocket

__all__ = ["TunDevice", "TunError", "UdpSocket"]

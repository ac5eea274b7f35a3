"""wgactors: a userspace WireGuard data plane built as a pipeline of Pykka actors.

The public API is deliberately small: :class:`Packet`, the immutable message that flows between
stages, and :class:`Stage`, the base class of your own actors, with the verdicts its ``process``
may return besides a packet or None (:class:`Drop`, :data:`CONSUMED`); :mod:`actors.build` (making
packets, with :mod:`actors.checksum`) and :mod:`actors.testing` (running stages in a unit test)
serve them. The protocol core lives in :mod:`actors.wireguard`.
"""

from .packet import MAX_PACKET_SIZE, Packet, PacketError
from .stage import CONSUMED, Drop, Stage

__all__ = ["CONSUMED", "MAX_PACKET_SIZE", "Drop", "Packet", "PacketError", "Stage"]
__version__ = "0.1.0"

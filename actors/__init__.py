"""wgactors: a userspace WireGuard data plane built as a pipeline of Pykka actors.

The public API is deliberately small: :class:`Packet`, the immutable message that flows between
stages, and :class:`Stage`, the base class of your own actors; :mod:`actors.build` (making
packets, with :mod:`actors.checksum`) and :mod:`actors.testing` (running stages in a unit test)
serve them. The protocol core lives in :mod:`actors.wireguard`.
"""

from .packet import MAX_PACKET_SIZE, Packet, PacketError
from .stage import Stage

__all__ = ["MAX_PACKET_SIZE", "Packet", "PacketError", "Stage"]
__version__ = "0.1.0"

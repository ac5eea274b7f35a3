"""wgactors: a userspace WireGuard data plane built as a pipeline of Pykka actors.

The public API is deliberately small: :class:`Packet`, the immutable message that flows between
stages. The protocol core lives in :mod:`actors.wireguard`.
"""

from .packet import MAX_PACKET_SIZE, Packet, PacketError

__all__ = ["MAX_PACKET_SIZE", "Packet", "PacketError"]
__version__ = "0.1.0"

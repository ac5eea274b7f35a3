"""The WireGuard protocol core: sans-I/O, bytes and a timestamp in, actions out.

Concepts live one per module, as in wireguard-go's ``device/``: :mod:`.constants`,
:mod:`.crypto`, :mod:`.xchacha`, :mod:`.messages`, :mod:`.noise` (the handshake),
:mod:`.cookie`, :mod:`.ratelimiter`, :mod:`.replay`, :mod:`.allowedips`, :mod:`.keypair`,
:mod:`.device` (the handshake owner and its configuration), :mod:`.peer`, :mod:`.receive`
(the receive path), :mod:`.timers` (section 6, one method per event), :mod:`.indextable`,
:mod:`.load` (when cookies are required), :mod:`.oversize` (inner packets above 1280 bytes),
:mod:`.apply` (a `wg set` request), :mod:`.encryptor` (send path),
:mod:`.actions` (what the core asks the shell to do) and :mod:`.tunnel` (both halves in one
thread).
"""

from .actions import Deliver, Endpoint, Transmit
from .device import Device, DeviceError, PeerConfig
from .encryptor import Encryptor
from .keys import KeyFormatError, decode_key, encode_key, generate_private_key
from .tunnel import Tunnel

__all__ = [
    "Deliver",
    "Device",
    "DeviceError",
    "Encryptor",
    "Endpoint",
    "KeyFormatError",
    "PeerConfig",
    "Transmit",
    "Tunnel",
    "decode_key",
    "encode_key",
    "generate_private_key",
]

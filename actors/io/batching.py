"""Why the I/O objects batch their system calls, and the batch sizes they share.

A thread that releases the GIL for a system call must win it back afterwards, and while another
thread runs Python code that can take up to the interpreter's switch interval. Measured here,
one 1280-byte TUN write costs 2.5 us alone but 480 us with a busy Python thread beside it (the
"convoy effect"); a stage that writes packet by packet is then slower on its own thread than in
a single loop. So every I/O object gives up the GIL once per batch, not once per packet:

- :mod:`actors.io.tun_aio` reads and writes the TUN device with Linux AIO (``io_submit``);
- :mod:`actors.io.mmsg` receives and sends UDP datagrams with ``recvmmsg`` and ``sendmmsg``.

Both go through ctypes, which releases the GIL for the duration of the call, and both fall back
to plain per-packet calls where the kernel refuses.
"""

from __future__ import annotations

__all__ = ["MAX_BATCH", "READ_SLOT"]

MAX_BATCH = 64  # packets per system call; also the size of the preallocated control blocks
READ_SLOT = 2048  # bytes per read buffer: above the MTU, so oversize packets are seen whole

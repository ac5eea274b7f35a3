"""Which worker owns a receiver index: the rule that lets the kernel steer datagrams.

With several worker processes, each peer belongs to one of them, and so does every receiver
index that worker hands out (in its handshakes and sessions). The peer puts our index in front
of every response, cookie reply and transport message it sends us; if the index itself names
the worker, a socket filter in the kernel can deliver each datagram to the socket of the worker
that owns it, with no hand-over in user space (:mod:`actors.io.steering`).

The rule: the index's least significant byte, which travels first (indices are little-endian
on the wire), is congruent to the worker's number modulo the number of workers. That keeps 24
random bits plus the random part of the low byte, so a worker's index space stays far from
exhaustion (a collision needs millions of live entries), and a classic BPF program needs one
load and one modulo to apply it. Pure functions: no I/O.
"""

from __future__ import annotations

__all__ = ["MAX_WORKERS", "index_for_worker", "worker_of_index"]

MAX_WORKERS = 256  # the rule lives in one byte


def _check(worker: int, workers: int) -> None:
    if not 1 <= workers <= MAX_WORKERS or not 0 <= worker < workers:
        raise ValueError(f"worker {worker} of {workers} (1..{MAX_WORKERS} workers)")


def index_for_worker(random32: int, worker: int, workers: int) -> int:
    """A receiver index made from 32 random bits that ``worker`` (of ``workers``) owns: the
    random bits, with the low byte moved to the nearest value that belongs to the worker."""
    _check(worker, workers)
    low = random32 & 0xFF
    owned = low - low % workers + worker
    if owned > 0xFF:  # past the last full round of workers in the byte: the round before
        owned -= workers
    return (random32 & 0xFFFFFF00) | owned


def worker_of_index(index: int, workers: int) -> int:
    """The worker that owns ``index`` (what the kernel's filter computes)."""
    _check(0, workers)
    return (index & 0xFF) % workers

"""A TCP transfer with an end-to-end checksum, run in test namespaces.

    tcpcheck.py serve PORT            accept one connection; read until EOF; reply sha256
    tcpcheck.py send HOST PORT BYTES  send BYTES of seeded pseudo-random data; print
                                      "<local sha256> <remote sha256>"

Bounded: the server accepts one connection and gives up after SERVE_TIMEOUT seconds.
"""

from __future__ import annotations

import hashlib
import random
import socket
import sys

SERVE_TIMEOUT = 120.0
CHUNK = 64 * 1024


def serve(port: int) -> None:
    with socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True) as srv:
        srv.settimeout(SERVE_TIMEOUT)
        print("listening", flush=True)
        conn, _ = srv.accept()
        conn.settimeout(SERVE_TIMEOUT)
        digest = hashlib.sha256()
        with conn:
            while chunk := conn.recv(CHUNK):
                digest.update(chunk)
            conn.sendall(digest.hexdigest().encode())


def send(host: str, port: int, total: int) -> None:
    rng = random.Random(total)
    digest = hashlib.sha256()
    with socket.create_connection((host, port), timeout=SERVE_TIMEOUT) as conn:
        sent = 0
        while sent < total:
            chunk = rng.randbytes(min(CHUNK, total - sent))
            conn.sendall(chunk)
            digest.update(chunk)
            sent += len(chunk)
        conn.shutdown(socket.SHUT_WR)
        remote = b""
        while part := conn.recv(128):
            remote += part
    print(digest.hexdigest(), remote.decode())


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

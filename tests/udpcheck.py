"""Send or receive a few UDP datagrams in a test namespace (bounded in count and time).

udpcheck.py listen PORT SECONDS     print each payload received until SECONDS pass
udpcheck.py send HOST PORT TEXT...  send each TEXT as one datagram
"""

from __future__ import annotations

import socket
import sys
import time

MAX_DATAGRAMS = 100

if __name__ == "__main__":
    if sys.argv[1] == "listen":
        port, seconds = int(sys.argv[2]), float(sys.argv[3])
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", port))
            print("ready", flush=True)
            deadline = time.monotonic() + seconds
            for _ in range(MAX_DATAGRAMS):
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    print(s.recv(2048).decode(), flush=True)
                except TimeoutError:
                    break
    else:
        host, port = sys.argv[2], int(sys.argv[3])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for text in sys.argv[4:]:
                s.sendto(text.encode(), (host, port))
                time.sleep(0.02)

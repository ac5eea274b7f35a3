"""Probes for the live tests of stage abilities, run in test namespaces (bounded in count and
time). Each prints one line per result.

abilitycheck.py dns-serve ADDR SECONDS   answer A queries on ADDR:53 with 192.0.2.1; print
                                         "ready", then each name asked
abilitycheck.py dns-query SERVER NAME    print "rcode=N ms=T" (or "timeout")
abilitycheck.py listen ADDR PORT SECONDS accept TCP and take UDP on ADDR:PORT; print "ready"
abilitycheck.py tcp HOST PORT            print "refused ms=T", "connected" or "timeout"
abilitycheck.py udp HOST PORT            print "refused ms=T" (ICMP unreachable), "answered"
                                         or "timeout"
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time

MAX_QUERIES = 100
WAIT = 2.0


def dns_serve(addr: str, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((addr, 53))
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        for _ in range(MAX_QUERIES):
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                query, peer = s.recvfrom(2048)
            except TimeoutError:
                return
            at, labels = 12, []
            while query[at]:
                labels.append(query[at + 1 : at + 1 + query[at]].decode())
                at += 1 + query[at]
            print(".".join(labels), flush=True)
            question = query[12 : at + 5]
            answer = struct.pack("!HHHHHH", *struct.unpack_from("!H", query), 0x8180, 1, 1, 0, 0)
            record = b"\xc0\x0c" + struct.pack("!HHIH4s", 1, 1, 60, 4, bytes([192, 0, 2, 1]))
            s.sendto(answer + question + record, peer)


def dns_query(server: str, name: str) -> None:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    query = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(WAIT)
        start = time.monotonic()
        s.sendto(query, (server, 53))
        try:
            answer = s.recv(2048)
        except TimeoutError:
            print("timeout")
            return
        ms = (time.monotonic() - start) * 1000
        print(f"rcode={answer[3] & 0xF} ms={ms:.2f}")


def listen(addr: str, port: int, seconds: float) -> None:
    tcp = socket.create_server((addr, port))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((addr, port))
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    for _ in range(MAX_QUERIES):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([tcp, udp], [], [], remaining)
        if tcp in ready:
            conn, _ = tcp.accept()
            conn.close()
        if udp in ready:
            data, peer = udp.recvfrom(2048)
            udp.sendto(data, peer)


def probe(kind: str, host: str, port: int) -> None:
    family = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, family) as s:
        s.settimeout(WAIT)
        start = time.monotonic()
        try:
            s.connect((host, port))
            if kind == "udp":
                s.send(b"probe")
                s.recv(2048)
        except ConnectionRefusedError:
            print(f"refused ms={(time.monotonic() - start) * 1000:.2f}")
            return
        except TimeoutError:
            print("timeout")
            return
        print("connected" if kind == "tcp" else "answered")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "dns-serve":
        dns_serve(sys.argv[2], float(sys.argv[3]))
    elif cmd == "dns-query":
        dns_query(sys.argv[2], sys.argv[3])
    elif cmd == "listen":
        listen(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        probe(cmd, sys.argv[2], int(sys.argv[3]))

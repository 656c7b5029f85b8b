#!/usr/bin/env python3
"""Loopback ping-pong between two processes at a fixed rate, no broker:
what the machine itself adds to a message's latency (scheduler wake-ups,
an idle vCPU's halt). Compare its percentiles with ringmq-bench latency.

    python3 perf/pingpong.py [messages] [rate]
"""
import os
import socket
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 25000
rate = float(sys.argv[2]) if len(sys.argv) > 2 else 5000.0
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
if os.fork() == 0:
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(64)
        if not d:
            os._exit(0)
        c.sendall(d)
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
lat = []
t0 = time.perf_counter()
for i in range(n):
    due = t0 + i / rate
    while time.perf_counter() < due:
        time.sleep(0.00005)
    a = time.perf_counter()
    s.sendall(b"x" * 64)
    got = 0
    while got < 64:
        got += len(s.recv(64))
    lat.append((time.perf_counter() - a) * 1e6)
s.close()
lat.sort()
pick = lambda q: lat[min(n - 1, int(n * q))]
print("ping-pong µs: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f"
      % (pick(0.5), pick(0.9), pick(0.99), pick(0.999), lat[-1]))

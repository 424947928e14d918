"""Socket I/O through each worker's io_uring (docs/io.md): the whole e2e suite runs on it where
the kernel allows it; these tests check that it is really in use (the ring's own completion
counter moves with the requests), that "io_uring": "off" keeps epoll, and the cases the ring
changes most: a client that stops reading, then reads, behind a reply with Connection: close,
and many replies on one connection.
"""
import hashlib
import os
import re
import socket
import time

import pytest

from harness import body_reply, curl, wait_until
from test_client_conn import proc_cpu_seconds

MiB = 1024 * 1024
BIG = hashlib.sha256(b"io").digest() * (3 * MiB // 32)  # 3 MiB: more than loopback's buffers hold


def gateway(backend, estuary, **extra):
    b = backend("origin")
    b.get("/o/small", body_reply(b"small reply"))
    b.get("/o/big", body_reply(BIG, content_type="application/octet-stream"))
    cfg = {"upstreams": {"origin": {"targets": [b.url]}},
           "routes": [{"path": "/px/{rest...}", "proxy": {"upstream": "origin", "path": "/o/{rest...}"}}]}
    cfg.update(extra)
    gw = estuary(cfg)
    gw.origin = b
    return gw


def io_mode(gw):
    """'io_uring' or 'epoll (io_uring: <why>)', as worker 0 logged it at start."""
    wait_until(lambda: "socket I/O on" in gw.stderr(), timeout=5)
    m = re.search(r"worker 0: socket I/O on (io_uring|epoll \(io_uring: [^)]*\))", gw.stderr())
    assert m, gw.stderr()
    return m.group(1)


def read_to_end(s):
    """What the gateway sends until it closes; closes s."""
    data = b""
    s.settimeout(10)
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def ring_completions(pid):
    """CqTail summed over the process's io_uring descriptors (/proc/PID/fdinfo)."""
    total, rings = 0, 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[io_uring]":
                continue
            info = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        m = re.search(r"^CqTail:\s*(\d+)", info, re.M)
        if m:
            total, rings = total + int(m.group(1)), rings + 1
    return total, rings


def test_requests_go_through_the_ring(backend, estuary):
    gw = gateway(backend, estuary)
    mode = io_mode(gw)
    if mode != "io_uring":
        pytest.skip(f"this kernel: {mode}")
    before, rings = ring_completions(gw.proc.pid)
    assert rings >= 1
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        for _ in range(50):
            s.sendall(b"GET /px/small HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while not got.endswith(b"small reply"):
                chunk = s.recv(65536)
                assert chunk, got
                got += chunk
            assert got.startswith(b"HTTP/1.1 200")
    after, _ = ring_completions(gw.proc.pid)
    # each request: the client's read and the backend's read arrive as ring completions, and
    # both writes are ring sends: at least 4 per request (the kernel's counter, not ours)
    assert after - before >= 4 * 50, (before, after)


def test_off_keeps_epoll(backend, estuary):
    gw = gateway(backend, estuary, io_uring="off")
    assert io_mode(gw) == "epoll (io_uring: off in the config)"
    assert ring_completions(gw.proc.pid)[1] == 0
    r = curl(gw.url("/px/big"))
    assert r.status == 200 and r.body == BIG


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_client_that_stops_reading_then_reads(backend, estuary, mode):
    """3 MiB with Connection: close to a client that reads nothing for a second: the reply the
    worker could not send at once is finished once the client reads, then the connection ends."""
    gw = gateway(backend, estuary, io_uring=mode)
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(b"GET /px/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(1.0)
    data = read_to_end(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == BIG


def test_pipelined_replies_in_order(backend, estuary):
    gw = gateway(backend, estuary)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"".join(b"GET /px/small?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20)))
        got = b""
        s.settimeout(10)
        while got.count(b"small reply") < 20:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
    assert got.count(b"HTTP/1.1 200") == 20
    assert gw.origin.request_count == 20


def test_slow_reader_costs_no_busy_wait(backend, estuary):
    """A client reading 3 MiB slowly: the backend's bytes wait (libh2o stops reading it, and
    the ring holds at most one buffer), and the worker sleeps meanwhile instead of spinning."""
    gw = gateway(backend, estuary)
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(b"GET /px/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.3)  # the reply head and the first buffers are in; the rest waits for the client
    cpu0, t0 = proc_cpu_seconds(gw.proc.pid), time.monotonic()
    data = b""
    s.settimeout(10)
    while time.monotonic() - t0 < 2.0:
        data += s.recv(32768)
        time.sleep(0.02)
    cpu = proc_cpu_seconds(gw.proc.pid) - cpu0
    data += read_to_end(s)
    assert data.partition(b"\r\n\r\n")[2] == BIG
    assert cpu < 0.5, f"{cpu:.2f} s of CPU in 2 s of a slow client"

"""SPEC "Client limits": `proxy.buffer` and `client_send_timeout` on proxy routes (issue 13
"Stalled windows", issue 12 item 3).

- A reply up to `proxy.buffer` (default 256 KiB) is read whole from the backend, so its backend
  connection goes back to the pool at once, however slowly (or never) the client reads: HTTP/2
  clients with SETTINGS_INITIAL_WINDOW_SIZE=0 and HTTP/1.1 clients that never read do not pin
  backend connections, and a good client keeps getting 200s.
- A larger reply streams with backpressure; a client that accepts nothing for
  `client_send_timeout` has its connection closed (HTTP/2: the whole connection), the exchange
  is released (the backend sees its connection closed), counted in
  estuary_client_connections_closed_total{reason="send_timeout"}.

The backend is a raw asyncio HTTP/1.1 server that writes the head, then the body in several
writes a few ms apart, so that estuary receives every reply in several reads (a reply that came
in one read was already released before proxy.buffer existed), and counts its open connections.
"""
from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
import urllib.request

import h2.config
import h2.connection
import h2.events
import h2.settings

from harness import free_port, raw_http, wait_for_port
from test_admin import metric, parse_metrics
from test_stream import proc_status, sanitized

KiB = 1024
MiB = 1024 * KiB
BLOCK = bytes(range(256)) * 256  # 64 KiB


class RawBackend:
    """Keep-alive HTTP/1.1 backend on the shared loop. Every request is answered with
    `body_len` bytes (Content-Length): the head, then the body in writes of at most `part`
    bytes `gap` s apart, each awaited (drain), so a backend write blocks when estuary stops
    reading. Counts connections (open now, accepted), requests, completed replies, and
    replies cut by estuary closing the connection (`aborted`)."""

    def __init__(self, aio, body_len: int, part: int = 32 * KiB, gap: float = 0.003):
        self.aio, self.body_len, self.part, self.gap = aio, body_len, part, gap
        self.lock = threading.Lock()
        self.open = self.accepted = self.requests = self.completed = self.aborted = 0
        self.srv = None
        self.port = 0
        aio.run(self._start())

    async def _start(self):
        self.srv = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = self.srv.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, name: str) -> int:
        with self.lock:
            return getattr(self, name)

    def _add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    async def _serve(self, reader, writer):
        self._add("open")
        self._add("accepted")
        replying = False
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # GET only: no request body
                self._add("requests")
                replying = True
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % self.body_len)
                await writer.drain()
                left = self.body_len
                while left:
                    await asyncio.sleep(self.gap)
                    n = min(left, self.part, len(BLOCK))
                    writer.write(BLOCK[:n])
                    await writer.drain()
                    left -= n
                replying = False
                self._add("completed")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            if replying:
                self._add("aborted")
        finally:
            self._add("open", -1)
            writer.close()

    def stop(self):
        async def close():
            self.srv.close()
            await self.srv.wait_closed()
        self.aio.run(close(), timeout=5)


def wait_for(cond, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def gateway(estuary, b: RawBackend, proxy=None, pool: int = 32, **top):
    """One worker, an admin listener, a proxy route /s/{rest...} -> b (`proxy`: more keys of the
    route's proxy object) with a pool of `pool` connections (32: a few dozen pinned exchanges
    are enough to starve it) and a 2 s queue wait; `top`: more top-level keys."""
    admin_port = free_port()
    cfg = {"admin": {"host": "127.0.0.1", "port": admin_port},
           "upstreams": {"origin": {"targets": [b.url], "connect_timeout": "2s", "response_timeout": "5s",
                                    "pool": {"max_connections": pool, "max_idle": pool}}},
           "routes": [{"path": "/s/{rest...}", "proxy": dict({"upstream": "origin", "path": "/o/{rest...}"}, **(proxy or {}))}]}
    cfg.update(top)
    gw = estuary(cfg)
    wait_for_port("127.0.0.1", admin_port, 10, gw.proc)
    gw.admin = f"http://127.0.0.1:{admin_port}"
    return gw


def metrics(gw):
    with urllib.request.urlopen(gw.admin + "/metrics", timeout=5) as r:
        return parse_metrics(r.read().decode())


def upstream_in_use(gw) -> int:
    ms = metrics(gw)
    return int(metric(ms, "estuary_upstream_connections", upstream="origin", state="open")
               - metric(ms, "estuary_upstream_connections", upstream="origin", state="idle"))


def send_timeouts(gw) -> int:
    return int(metric(metrics(gw), "estuary_client_connections_closed_total", reason="send_timeout"))


def good_requests(gw, n: int, path: str = "/s/good"):
    """n sequential requests from a client that reads: (status, body length, seconds) each."""
    out = []
    for _ in range(n):
        r = raw_http(gw.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), timeout=10)
        out.append((r.status, len(r.body), r.elapsed))
    return out


# --------------------------------------------------------------------------- HTTP/2 helpers


class StalledH2:
    """An HTTP/2 (h2c prior knowledge) client that advertises SETTINGS_INITIAL_WINDOW_SIZE=0
    and never sends WINDOW_UPDATE: the server may send HEADERS but not one DATA byte."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self.statuses = {}  # stream id -> status
        self.closed = False  # EOF or reset from the server
        self.goaway = False
        self._out = bytearray()
        self._flush()

    def request(self, path: str, port: int) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                                     (":path", path)], end_stream=True)
        self._flush()
        return sid

    def _flush(self):
        self._out += self.conn.data_to_send()
        while self._out and not self.closed:
            try:
                n = self.sock.send(self._out)
            except BlockingIOError:
                return
            except OSError:
                self.closed = True
                return
            del self._out[:n]

    def pump(self):
        """Reads what is there (never blocks) and handles it; never acknowledges DATA."""
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(data)
            except Exception:  # the server breaking flow control would show here
                self.closed = True
                raise
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived):
                    self.statuses[ev.stream_id] = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = True
        self._flush()

    def close(self):
        self.sock.close()


def pump_all(clients, until, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        socks = [c.sock for c in clients if not c.closed]
        if socks:
            select.select(socks, [], [], 0.05)
        for c in clients:
            c.pump()
        if until():
            return True
    return until()


# =========================================================================== (a) HTTP/2, window 0


def test_h2_zero_window_does_not_pin_backend_connections(aio, estuary):
    """12 connections x 30 streams with SETTINGS_INITIAL_WINDOW_SIZE=0 on a 64 KiB reply
    (< proxy.buffer): every stream gets its 200 head, the backend connections are all back in
    the pool (none in use) while the streams stay open, and a good client gets 200s at once."""
    b = RawBackend(aio, 64 * KiB)
    try:
        gw = gateway(estuary, b)
        clients = [StalledH2(gw.port) for _ in range(12)]
        try:
            for c in clients:
                for _ in range(30):
                    c.request("/s/small", gw.port)
            total = 12 * 30
            assert pump_all(clients, lambda: sum(len(c.statuses) for c in clients) == total, 10), \
                f"{sum(len(c.statuses) for c in clients)} of {total} heads"
            statuses = [s for c in clients for s in c.statuses.values()]
            assert statuses.count(200) == total, sorted(set(statuses))
            assert wait_for(lambda: b.count("completed") == total, 5), (b.count("completed"), b.count("requests"))
            # every exchange ended: the backend connections are idle in the pool, none in use
            assert wait_for(lambda: upstream_in_use(gw) == 0, 5), upstream_in_use(gw)
            assert b.count("open") <= 32 and b.count("aborted") == 0
            # the stalled streams are still open (no DATA could be sent), and a good client is served
            pump_all(clients, lambda: False, 0.1)
            assert not any(c.closed for c in clients)
            good = good_requests(gw, 10)
            assert all(s == 200 and n == 64 * KiB for s, n, _ in good), good
            assert max(t for _, _, t in good) < 1.0, good
        finally:
            for c in clients:
                c.close()
    finally:
        b.stop()


# =========================================================================== (b) HTTP/1.1, never read


def test_h1_clients_that_never_read_do_not_pin_backend_connections(aio, estuary):
    """HTTP/1.1 clients that send a request and never read, twice as many as the pool has
    connections. On loopback Linux lets a never-reading client's connection queue about 3 MiB
    (the send buffer autotunes to 4 MiB; only under memory pressure, e.g. 600 such clients,
    does it stop), so a 256 KiB reply never stalls there: the route sets proxy.buffer to 6 MiB
    and the reply is 3.5 MiB, more than the kernel takes and less than the buffer, the same
    condition as a small reply on a loaded host (8 x 3.5 MiB stays under the worker's 32 MiB
    read-ahead budget). Every backend reply completes, no backend connection stays in use,
    and a good client gets 200s meanwhile."""
    n, size = 8, 3584 * KiB
    b = RawBackend(aio, size, part=256 * KiB, gap=0.002)
    socks = []
    try:
        gw = gateway(estuary, b, proxy={"buffer": "6MiB"}, pool=4)
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(5)
            s.connect(("127.0.0.1", gw.port))
            s.sendall(b"GET /s/big HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        assert wait_for(lambda: b.count("completed") == n, 10), (b.count("completed"), b.count("requests"))
        assert wait_for(lambda: upstream_in_use(gw) == 0, 5), upstream_in_use(gw)
        assert b.count("aborted") == 0
        b.body_len = 64 * KiB
        good = good_requests(gw, 10)
        assert all(s == 200 and n_ == 64 * KiB for s, n_, _ in good), good
        assert max(t for _, _, t in good) < 1.0, good
    finally:
        for s in socks:
            s.close()
        b.stop()


# =========================================================================== (c) client_send_timeout


def _stalled_h1(port: int, path: str, rcvbuf: int = 4096) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def _drain(s: socket.socket, timeout: float):
    """Reads until EOF or reset (True, bytes) or `timeout` (False, bytes)."""
    s.settimeout(0.5)
    got = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, got
        if not d:
            return True, got
        got += len(d)
    return False, got


def test_h1_large_reply_to_a_stalled_client_hits_client_send_timeout(aio, estuary):
    """8 MiB (> proxy.buffer) to a client that never reads, client_send_timeout 1s: within a few
    seconds the exchange is released (the backend's write fails: its connection was closed),
    the client's connection is closed, and the send_timeout counter moves by one."""
    b = RawBackend(aio, 8 * MiB, part=64 * KiB, gap=0)
    try:
        gw = gateway(estuary, b, client_send_timeout="1s")
        before = send_timeouts(gw)
        t0 = time.monotonic()
        s = _stalled_h1(gw.port, "/s/big")
        try:
            assert wait_for(lambda: b.count("requests") == 1, 5)
            assert wait_for(lambda: b.count("aborted") == 1, 6), "the backend connection was not released"
            elapsed = time.monotonic() - t0
            assert 0.9 < elapsed < 4.0, elapsed
            assert b.count("completed") == 0 and b.count("open") == 0
            assert wait_for(lambda: send_timeouts(gw) == before + 1, 5)
            assert upstream_in_use(gw) == 0
            closed, got = _drain(s, 5)
            assert closed and got < 8 * MiB, (closed, got)
        finally:
            s.close()
        # the gateway serves on (a new backend connection; nothing reused from the cut one)
        b.body_len = 1000
        assert good_requests(gw, 1)[0][:2] == (200, 1000)
    finally:
        b.stop()


def test_h2_large_reply_to_a_zero_window_closes_the_connection(aio, estuary):
    """HTTP/2, window 0, an 8 MiB reply: client_send_timeout (1s) closes the whole connection
    (SPEC), the exchange is released, and the counter moves."""
    b = RawBackend(aio, 8 * MiB, part=64 * KiB, gap=0)
    try:
        gw = gateway(estuary, b, client_send_timeout="1s")
        before = send_timeouts(gw)
        c = StalledH2(gw.port)
        try:
            t0 = time.monotonic()
            c.request("/s/big", gw.port)
            assert pump_all([c], lambda: len(c.statuses) == 1, 5) and list(c.statuses.values()) == [200]
            assert pump_all([c], lambda: c.closed, 6), "the connection stayed open"
            elapsed = time.monotonic() - t0
            assert 0.9 < elapsed < 4.0, elapsed
            assert wait_for(lambda: b.count("aborted") == 1, 5), "the backend connection was not released"
            assert wait_for(lambda: send_timeouts(gw) == before + 1, 5)
            assert upstream_in_use(gw) == 0
        finally:
            c.close()
    finally:
        b.stop()


def test_slow_but_reading_h1_client_is_not_cut(aio, estuary):
    """client_send_timeout counts time without any byte accepted, not time per chunk: a client
    with a 16 KiB receive buffer reading at most 16 KiB every 50 ms (a chunk of a few hundred
    KiB can take over 1 s to drain) gets its whole 1 MiB reply with client_send_timeout 1s."""
    total = 1 * MiB
    b = RawBackend(aio, total, part=64 * KiB, gap=0)
    try:
        gw = gateway(estuary, b, client_send_timeout="1s")
        before = send_timeouts(gw)
        s = _stalled_h1(gw.port, "/s/slow", rcvbuf=16 * KiB)
        try:
            got = bytearray()
            t0 = time.monotonic()
            while time.monotonic() < t0 + 12:
                time.sleep(0.05)
                try:
                    d = s.recv(16 * KiB)
                except ConnectionResetError:
                    break
                if not d:
                    break
                got += d
                if len(got) >= total + 100 and len(bytes(got).partition(b"\r\n\r\n")[2]) >= total:
                    break
            elapsed = time.monotonic() - t0
            head, _, body = bytes(got).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and len(body) == total, (head[:40], len(body), elapsed)
            print(f"1 MiB read slowly in {elapsed:.1f}s")
        finally:
            s.close()
        assert send_timeouts(gw) == before
    finally:
        b.stop()


# =========================================================================== read-ahead budget


def test_read_ahead_is_bounded_per_worker(aio, estuary):
    """8 connections x 50 zero-window HTTP/2 streams asking for 240 KiB each (96 MiB if every
    reply were read ahead): the worker's read-ahead stops at its 32 MiB budget, the replies past
    it wait for their clients like large ones (pinning at most the pool's 32 connections, the
    rest get 503 upstream_overloaded), and estuary's RSS grows by less than 56 MiB (without the
    budget: about 96 MiB). The backend writes each reply in 8 parts 20 ms apart: a reply that
    reaches estuary in one socket read is a final delivery, taken whole whatever the budget
    (the exchange cannot hold a final delivery; see docs/streaming.md)."""
    b = RawBackend(aio, 240 * KiB, part=30 * KiB, gap=0.02)
    try:
        gw = gateway(estuary, b)
        rss0 = proc_status(gw.proc.pid)["VmRSS"]
        clients = [StalledH2(gw.port) for _ in range(8)]
        try:
            for c in clients:
                for _ in range(50):
                    c.request("/s/ra", gw.port)
            total = 8 * 50
            assert pump_all(clients, lambda: sum(len(c.statuses) for c in clients) == total, 10), \
                f"{sum(len(c.statuses) for c in clients)} of {total} heads"
            statuses = [s for c in clients for s in c.statuses.values()]
            read_whole = b.count("completed")
            grown = (proc_status(gw.proc.pid)["VmRSS"] - rss0) / 1024
            print(f"statuses {sorted((s, statuses.count(s)) for s in set(statuses))}, replies read whole {read_whole}, "
                  f"RSS +{grown:.1f} MiB")
            assert set(statuses) <= {200, 503}
            # 32 MiB / 240 KiB = 136 replies read ahead, plus those that reached estuary in one
            # socket read (a final delivery is always taken whole); never all of them
            assert 100 <= read_whole < total - 32, read_whole
            assert upstream_in_use(gw) <= 32
            if not sanitized():
                assert grown < 56, f"RSS grew by {grown:.1f} MiB"
        finally:
            for c in clients:
                c.close()
    finally:
        b.stop()

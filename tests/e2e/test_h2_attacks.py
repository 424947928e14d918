"""HTTP/2 attacks against the guarded h2c listener (SPEC "HTTP/2 protections", docs/http2.md).

Each test speaks raw frames (hyperframe/hpack) on one connection while a well-behaved h2c
client (python3-h2) keeps requesting on another, and asserts: the GOAWAY code SPEC names, the
close counted in estuary_client_connections_closed_total{reason}, estuary's RSS growth under
32 MiB, what the backend saw, the process alive, and the good client's p99 under 50 ms.
"""
import select
import shutil
import socket
import threading
import time
import urllib.request

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame, SettingsFrame

import subprocess

from harness import body_reply, delayed, free_port, json_reply, upstream, wait_for_port

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_ERROR, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x0, 0x9, 0xB
END_STREAM, END_HEADERS = 0x1, 0x4
RSS_LIMIT = 32 * 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def closed_metric(admin: str, reason: str) -> int:
    text = urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode()
    key = f'estuary_client_connections_closed_total{{reason="{reason}"}} '
    for line in text.splitlines():
        if line.startswith(key):
            return int(float(line[len(key):]))
    raise AssertionError(f"no {key} in /metrics")


def request_headers(path="/x", method="GET"):
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1")]


def raw_frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


class RawH2:
    """One attacking connection: raw frames out, every frame the server sends parsed."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.goaway = None  # (error code, debug data, last stream id)
        self.rst = {}       # stream id -> error code
        self.ended = set()  # streams whose response ended (END_STREAM seen)
        self.eof = False
        self.enc = hpack.Encoder()
        self.send(PREFACE + SettingsFrame(0).serialize())

    def send(self, data: bytes) -> bool:
        if self.eof:
            return False
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.eof = True
            return False

    def poll(self, timeout: float = 0.0) -> None:
        """Reads what the server sent (waiting up to `timeout` for the first bytes)."""
        while not self.eof:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return
            timeout = 0
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                break
            self.buf += data
            self._parse()
        self._parse()

    def _parse(self) -> None:
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            if isinstance(frame, GoAwayFrame) and self.goaway is None:
                self.goaway = (frame.error_code, bytes(frame.additional_data), frame.last_stream_id)
            elif isinstance(frame, RstStreamFrame):
                self.rst[frame.stream_id] = frame.error_code
            self._on_frame(frame)
            if "END_STREAM" in frame.flags:
                self.ended.add(frame.stream_id)

    def _on_frame(self, frame) -> None:
        """Each frame the server sent, after the GOAWAY / RST_STREAM bookkeeping (subclasses)."""

    def wait_goaway(self, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while self.goaway is None and not self.eof and time.monotonic() < deadline:
            self.poll(0.05)
        return self.goaway

    def wait_eof(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.poll(0.05)
        return self.eof

    def headers(self, sid: int, hdrs, flags: int) -> bytes:
        return raw_frame(0x1, flags, sid, self.enc.encode(hdrs))

    def close(self):
        self.sock.close()


class GoodClient(threading.Thread):
    """A polite h2c client: one GET at a time on its own connection, latencies recorded,
    estuary's RSS sampled after each response."""

    def __init__(self, port: int, pid: int, path: str = "/x"):
        super().__init__(daemon=True)
        self.port, self.pid, self.path = port, pid, path
        self.latencies, self.errors = [], []
        self.rss_peak = 0
        self.stop_evt = threading.Event()

    def run(self):
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            while not self.stop_evt.is_set():
                sid = conn.get_next_available_stream_id()
                t0 = time.monotonic()
                conn.send_headers(sid, request_headers(self.path), end_stream=True)
                sock.sendall(conn.data_to_send())
                status, done = None, False
                while not done:
                    data = sock.recv(1 << 16)
                    if not data:
                        raise ConnectionError("good client: connection closed")
                    for ev in conn.receive_data(data):
                        if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                            status = dict(ev.headers).get(":status")
                        elif isinstance(ev, h2.events.DataReceived):
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                            done = True
                    out = conn.data_to_send()
                    if out:
                        sock.sendall(out)
                self.latencies.append(time.monotonic() - t0)
                if status != "200":
                    self.errors.append(status)
                self.rss_peak = max(self.rss_peak, rss(self.pid))
                time.sleep(0.005)
            sock.close()
        except Exception as e:  # reported by finish()
            self.errors.append(repr(e))

    def finish(self):
        self.stop_evt.set()
        self.join(10)
        assert not self.is_alive(), "good client hung"
        assert not self.errors, f"good client errors: {self.errors[:5]}"
        assert len(self.latencies) >= 20, f"good client made only {len(self.latencies)} requests"
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        assert p99 < 0.050, f"good client p99 {p99 * 1000:.1f} ms over {len(lat)} requests"
        return p99


@pytest.fixture
def h2gw(backend, estuary):
    b = backend("h2b")
    b.get("/x", json_reply({"ok": True}))
    b.get("/r", json_reply({"attack": True}))
    b.route("POST", "/up", json_reply({"up": True}))
    b.get("/slow", delayed(4.0, {"slow": True}))
    b.get("/big", body_reply(b"x" * (64 << 20), content_type="application/octet-stream"))
    admin_port = free_port()
    gw = estuary({
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "client_header_timeout": "2s",
        "client_idle_timeout": "3s",
        "max_request_body": "64KiB",
        "upstreams": {"u": upstream(b)},
        "routes": [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}},
                   {"path": "/r", "proxy": {"upstream": "u", "path": "/r"}},
                   {"path": "/slow", "timeout": "10s", "proxy": {"upstream": "u", "path": "/slow"}},
                   {"path": "/big", "timeout": "10s", "proxy": {"upstream": "u", "path": "/big"}},
                   {"path": "/up", "methods": ["POST"], "proxy": {"upstream": "u", "path": "/up"}}],
    })
    wait_for_port("127.0.0.1", admin_port, 10, gw.proc)
    gw.admin = f"http://127.0.0.1:{admin_port}"
    gw.backend = b
    return gw


class Attack:
    """Starts the good client and records the baseline; check() asserts the common outcome."""

    def __init__(self, gw, reason: str):
        self.gw, self.reason = gw, reason
        self.metric0 = closed_metric(gw.admin, reason)
        self.good = GoodClient(gw.port, gw.proc.pid)
        self.good.start()
        deadline = time.monotonic() + 5
        while len(self.good.latencies) < 5 and not self.good.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        self.rss0 = rss(gw.proc.pid)
        self.backend0 = gw.backend.request_count
        self.t0 = time.monotonic()

    def check(self, conn: RawH2, code: int, min_seconds: float = 2.0):
        goaway = conn.wait_goaway(5)
        assert goaway is not None, f"no GOAWAY (eof={conn.eof})"
        assert goaway[0] == code, f"GOAWAY {goaway}"
        assert conn.wait_eof(5), "the connection stayed open after the GOAWAY"
        # let the good client run on for a while after the attack too
        while time.monotonic() - self.t0 < min_seconds:
            time.sleep(0.02)
        p99 = self.good.finish()
        assert self.gw.running()
        growth = max(self.good.rss_peak, rss(self.gw.proc.pid)) - self.rss0
        print(f"[{self.reason}] GOAWAY {goaway[:2]} after {time.monotonic() - self.t0:.2f}s; good client "
              f"p99 {p99 * 1000:.1f} ms over {len(self.good.latencies)}; RSS +{growth / 1048576:.1f} MiB")
        assert growth < RSS_LIMIT, f"RSS grew by {growth >> 20} MiB"
        assert closed_metric(self.gw.admin, self.reason) == self.metric0 + 1
        return goaway


def test_hpack_bomb(h2gw):
    a = Attack(h2gw, "h2_header_block")
    c = RawH2(h2gw.port)
    # a 4 KB dynamic-table entry, then a 64 KB block that references it 64,000 times (256 MB decoded)
    c.send(c.headers(1, request_headers("/r") + [("x-bomb", "a" * 4000)], END_STREAM | END_HEADERS))
    bomb = c.enc.encode(request_headers("/r"))  # all indexed by now: the x-bomb entry stays at index 62
    refs = bytes([0x80 | 62]) * 16000
    c.send(raw_frame(0x1, END_STREAM, 3, bomb + refs) + raw_frame(0x9, 0, 3, refs) * 2 + raw_frame(0x9, END_HEADERS, 3, refs))
    goaway = a.check(c, ENHANCE_YOUR_CALM)
    assert b"decoded" in goaway[1]
    reqs = h2gw.backend.requests_to("/r")
    assert len(reqs) <= 1 and all(len(r.headers.getall("x-bomb")) == 1 for r in reqs)  # stream 1 only


def test_rapid_reset(h2gw):
    a = Attack(h2gw, "h2_rapid_reset")
    c = RawH2(h2gw.port)
    cancel = (8).to_bytes(4, "big")
    sid, sent = 1, 0
    while c.goaway is None and not c.eof and sent < 5000:
        batch = b""
        for _ in range(50):
            batch += c.headers(sid, request_headers("/r"), END_STREAM | END_HEADERS) + raw_frame(0x3, 0, sid, cancel)
            sid += 2
            sent += 1
        c.send(batch)
        c.poll(0)
    goaway = a.check(c, ENHANCE_YOUR_CALM)
    assert goaway[2] <= 2 * 101 + 1, f"streams up to {goaway[2]} were processed"
    seen = len(h2gw.backend.requests_to("/r"))
    print(f"rapid reset: {sent} streams sent, GOAWAY last stream {goaway[2]}, backend saw {seen}")
    assert seen <= 10, f"the backend saw {seen} of the {sent} reset requests"


def test_continuation_hold(h2gw):
    """An unfinished header block kept open by empty CONTINUATIONs: client_header_timeout (2s)."""
    a = Attack(h2gw, "header_timeout")
    c = RawH2(h2gw.port)
    block = c.enc.encode(request_headers("/r"))
    c.send(raw_frame(0x1, END_STREAM, 1, block[:3]))
    t0 = time.monotonic()
    while c.goaway is None and not c.eof and time.monotonic() - t0 < 6:
        c.send(raw_frame(0x9, 0, 1, b""))
        c.poll(0.2)
    elapsed = time.monotonic() - t0
    a.check(c, ENHANCE_YOUR_CALM)
    assert elapsed >= 1.9, f"closed after {elapsed:.1f}s, before client_header_timeout (2s)"
    assert elapsed <= 4.5, f"closed after {elapsed:.1f}s, long after client_header_timeout (2s)"
    assert not h2gw.backend.requests_to("/r")


def test_continuation_flood(h2gw):
    a = Attack(h2gw, "h2_flood")
    c = RawH2(h2gw.port)
    block = c.enc.encode(request_headers())
    c.send(raw_frame(0x1, END_STREAM, 1, block[:3]))
    for _ in range(30):
        if not c.send(raw_frame(0x9, 0, 1, b"") * 100):
            break
        c.poll(0)
    a.check(c, ENHANCE_YOUR_CALM)


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_flood(h2gw, kind):
    a = Attack(h2gw, "h2_flood")
    c = RawH2(h2gw.port)
    one = raw_frame(0x6, 0, 0, b"12345678") if kind == "ping" else raw_frame(0x4, 0, 0, b"\x00\x03\x00\x00\x00\x64")
    for _ in range(50):
        if not c.send(one * 100):
            break
        c.poll(0)
        if c.goaway is not None:
            break
    a.check(c, ENHANCE_YOUR_CALM)


def test_oversized_header_block(h2gw):
    """A header block over 64 KiB on the wire is refused before it is complete (never decoded)."""
    a = Attack(h2gw, "h2_header_block")
    c = RawH2(h2gw.port)
    block = c.enc.encode(request_headers("/r"))
    c.send(raw_frame(0x1, END_STREAM, 1, block + b"\x00" * 16000))
    for _ in range(5):
        if not c.send(raw_frame(0x9, 0, 1, b"\x00" * 16000)):
            break
        c.poll(0)
    a.check(c, ENHANCE_YOUR_CALM)
    assert not h2gw.backend.requests_to("/r")


def test_table_size_update_above_limit(h2gw):
    a = Attack(h2gw, "h2_compression")
    c = RawH2(h2gw.port)
    block = b"\x3f\xe2\x1f" + hpack.Encoder().encode(request_headers("/r"))  # size update to 4097
    c.send(raw_frame(0x1, END_STREAM | END_HEADERS, 1, block))
    a.check(c, COMPRESSION_ERROR)
    assert not h2gw.backend.requests_to("/r")


def test_request_bodies_over_budget(h2gw):
    """max_request_body (64 KiB) bounds the bodies of one connection's unfinished requests together."""
    a = Attack(h2gw, "body_too_large")
    c = RawH2(h2gw.port)
    chunk = b"z" * 16000
    c.send(c.headers(1, request_headers("/up", "POST"), END_HEADERS))
    c.send(c.headers(3, request_headers("/up", "POST"), END_HEADERS))
    for sid in (1, 1, 1, 3, 3):
        c.send(raw_frame(0x0, 0, sid, chunk))
        c.poll(0)
    a.check(c, ENHANCE_YOUR_CALM)
    assert not h2gw.backend.requests_to("/up")


def test_idle_connection_kept_open_by_pings(h2gw):
    """client_idle_timeout (3s): a connection with no request open, sending only PINGs, is closed."""
    a = Attack(h2gw, "idle_timeout")
    c = RawH2(h2gw.port)
    c.send(c.headers(1, request_headers(), END_STREAM | END_HEADERS))  # one request, answered at once
    t0 = time.monotonic()
    while c.goaway is None and not c.eof and time.monotonic() - t0 < 8:
        c.send(raw_frame(0x6, 0, 0, b"12345678"))
        time.sleep(0.3)
        c.poll(0)
    elapsed = time.monotonic() - t0
    a.check(c, NO_ERROR)
    assert elapsed >= 2.9, f"closed after {elapsed:.1f}s, before client_idle_timeout (3s)"
    assert elapsed <= 5.5, f"closed after {elapsed:.1f}s, long after client_idle_timeout (3s)"


def test_idle_timeout_spares_open_requests(h2gw):
    """A request open longer than client_idle_timeout (a 4 s reply, 3 s timeout) is not cut."""
    c = RawH2(h2gw.port)
    c.send(c.headers(1, request_headers("/slow"), END_STREAM | END_HEADERS))
    deadline = time.monotonic() + 8
    while 1 not in c.ended and c.goaway is None and not c.eof and time.monotonic() < deadline:
        c.poll(0.1)
    stream = 1
    assert stream in c.ended, f"the slow reply did not complete: {(c.ended, c.goaway, c.eof)}"
    assert c.goaway is None, c.goaway
    assert closed_metric(h2gw.admin, "idle_timeout") == 0


def test_streams_over_100_are_refused(h2gw):
    """SETTINGS_MAX_CONCURRENT_STREAMS 100 (libh2o's): streams beyond it get REFUSED_STREAM."""
    c = RawH2(h2gw.port)
    c.send(b"".join(c.headers(1 + 2 * i, request_headers("/slow"), END_STREAM | END_HEADERS) for i in range(110)))
    deadline = time.monotonic() + 9
    while len(c.ended) + len(c.rst) < 110 and not c.eof and time.monotonic() < deadline:
        c.poll(0.2)
    assert set(c.rst.values()) == {0x7} and len(c.rst) == 10, c.rst
    assert len(c.ended) == 100 and c.goaway is None
    assert len(h2gw.backend.requests_to("/slow")) == 100


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_large_download_is_not_a_flood(h2gw):
    """128 MB on one connection with 64 KiB windows: thousands of WINDOW_UPDATEs, all legitimate."""
    r = subprocess.run(["h2load", "-n2", "-c1", "-m1", "-w16", "-W16", h2gw.url("/big")],
                       capture_output=True, text=True, timeout=9)
    assert "2 succeeded" in r.stdout, r.stdout[-500:]
    assert closed_metric(h2gw.admin, "h2_flood") == 0

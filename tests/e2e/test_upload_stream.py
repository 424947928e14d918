"""Streamed uploads on proxy routes (issue 12 item 2, SPEC "Proxy routes", docs/streaming.md):
an HTTP/1.1 request body (Content-Length or chunked) goes to the backend as it arrives, with
backpressure both ways and flat memory; a route's own max_request_body (413, the upstream
request aborted); a body whose streaming started is never retried; `Expect: 100-continue`
answered only once a backend connection is ready; chunked in -> chunked out.

The origin here is a small threaded HTTP/1.1 server (Sink) that reads bodies itself, so the
test sees when each byte arrives, can hold its reading back, and can reset mid-body."""
import hashlib
import json
import os
import select
import socket
import threading
import time

import pytest

from harness import free_port, wait_until
from test_stream import proc_status, sanitized

MiB = 1024 * 1024
BLOCK = os.urandom(MiB)


class Sink:
    """A threaded HTTP/1.1 origin. Each request's body is read (Content-Length or chunked) and
    hashed; the reply is JSON {len, sha256, content-length, transfer-encoding}. `gate` (an
    Event): after a head, the body is not read until it is set. `reset_after`: after that many
    body bytes, the connection is reset (SO_LINGER 0). Counters: connections, closed (ended),
    heads, body_bytes (read so far, all requests), completed (bodies read whole)."""

    def __init__(self, gate=None, reset_after=None):
        self.gate, self.reset_after = gate, reset_after
        self.lock = threading.Lock()
        self.connections = self.closed = self.heads = self.body_bytes = self.completed = 0
        self.head_at = None
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = bytearray()
        c.settimeout(30)

        def fill():
            d = c.recv(256 * 1024)
            if not d:
                raise EOFError
            buf.extend(d)

        def take(n):
            while len(buf) < n:
                fill()
            out = bytes(buf[:n])
            del buf[:n]
            return out

        def line():
            while b"\r\n" not in buf:
                fill()
            i = buf.index(b"\r\n")
            out = bytes(buf[:i])
            del buf[:i + 2]
            return out

        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    fill()
                i = buf.index(b"\r\n\r\n")
                head = bytes(buf[:i]).decode("latin-1").split("\r\n")
                del buf[:i + 4]
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
                with self.lock:
                    self.heads += 1
                    self.head_at = time.monotonic()
                if self.gate is not None:
                    self.gate.wait(20)
                h = hashlib.sha256()
                total = 0

                def got(data):
                    nonlocal total
                    h.update(data)
                    total += len(data)
                    with self.lock:
                        self.body_bytes += len(data)
                    if self.reset_after is not None and total >= self.reset_after:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        raise EOFError

                if "content-length" in hdrs:
                    left = int(hdrs["content-length"])
                    while left:
                        if not buf:
                            fill()
                        n = min(left, len(buf))
                        got(bytes(buf[:n]))
                        del buf[:n]
                        left -= n
                elif hdrs.get("transfer-encoding") == "chunked":
                    while True:
                        size = int(line().split(b";")[0], 16)
                        if size == 0:
                            while line():
                                pass
                            break
                        while size:
                            if not buf:
                                fill()
                            n = min(size, len(buf))
                            got(bytes(buf[:n]))
                            del buf[:n]
                            size -= n
                        assert take(2) == b"\r\n"
                with self.lock:
                    self.completed += 1
                body = json.dumps({"len": total, "sha256": h.hexdigest(),
                                   "content-length": hdrs.get("content-length"),
                                   "transfer-encoding": hdrs.get("transfer-encoding")}).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body))
        except (EOFError, OSError, ValueError, AssertionError):
            pass
        finally:
            with self.lock:
                self.closed += 1
            c.close()

    def close(self):
        self.stop = True
        self.srv.close()


@pytest.fixture
def sink():
    made = []

    def make(**kw):
        s = Sink(**kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def gateway(estuary, url, route_max="2GiB", **extra):
    cfg = {"upstreams": {"o": {"targets": [url], **extra.pop("upstream", {})}},
           "routes": [{"path": "/u/{rest...}", "methods": ["POST", "PUT"], "timeout": "5s",
                       "max_request_body": route_max, "proxy": {"upstream": "o", "path": "/o/{rest...}"}}]}
    cfg.update(extra)
    return estuary(cfg)


def head(n=None, chunked=False, path="/u/x", method="POST", extra=""):
    framing = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {n}\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{framing}{extra}\r\n".encode()


def body_pieces(total, piece=MiB):
    """`total` bytes of BLOCK-derived data in pieces (distinct per MiB, so a reordering shows)."""
    sent, k = 0, 0
    while sent < total:
        n = min(piece, total - sent)
        p = k.to_bytes(8, "little") + BLOCK[8:n] if n >= 8 else BLOCK[:n]
        yield p
        sent += n
        k += 1


def frame(p, chunked):
    return b"%x\r\n%s\r\n" % (len(p), p) if chunked else p


def read_response(s, timeout=30):
    """One response until the connection closes (Connection: close): (status, headers, body)."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not d:
            break
        data += d
    h, _, body = data.partition(b"\r\n\r\n")
    lines = h.decode("latin-1").split("\r\n")
    while lines and lines[0].startswith("HTTP/1.1 100"):  # an interim 100 and its empty line
        lines = lines[2:] if len(lines) > 1 and lines[1] == "" else lines[1:]
    assert lines and lines[0].startswith("HTTP/1.1 "), data[:300]
    status = int(lines[0].split()[1])
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, hdrs, body


def vm(gw):
    return proc_status(gw.proc.pid)


# =========================================================================== intact, low memory


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_upload_streams_intact_in_flat_memory(estuary, sink, chunked):
    """64 MiB (over the top-level 8 MiB default: the route allows 2 GiB) reaches the origin
    byte-exact, chunked in -> chunked out, length in -> length out, and estuary's peak RSS stays
    far below the body (buffering it would take 64 MiB+)."""
    o = sink()
    gw = gateway(estuary, o.url)
    total = 64 * MiB
    h = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(total, chunked))
        for p in body_pieces(total):
            h.update(p)
            s.sendall(frame(p, chunked))
        if chunked:
            s.sendall(b"0\r\n\r\n")
        status, _, body = read_response(s)
    assert status == 200, body[:300]
    got = json.loads(body)
    assert got["len"] == total and got["sha256"] == h.hexdigest()
    if chunked:
        assert got["transfer-encoding"] == "chunked" and got["content-length"] is None
    else:
        assert got["content-length"] == str(total) and got["transfer-encoding"] is None
    mem = vm(gw)
    print(f"estuary VmHWM {mem['VmHWM'] / 1024:.1f} MiB after a 64 MiB upload")
    if sanitized():
        pytest.skip("ASan build: RSS is not meaningful; body verified")
    assert mem["VmHWM"] < 32 * 1024, mem


# =========================================================================== streaming, backpressure


def test_backend_sees_the_body_before_the_client_finished(estuary, sink):
    """A client sends half its body and waits: the origin already has bytes of it (a buffering
    gateway would give it nothing before the last byte)."""
    o = sink()
    gw = gateway(estuary, o.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(2 * MiB))
        s.sendall(BLOCK)
        wait_until(lambda: o.body_bytes >= 64 * 1024, 5, what="the origin reading the first bytes")
        s.sendall(BLOCK)
        status, _, body = read_response(s)
    assert status == 200 and json.loads(body)["len"] == 2 * MiB


def test_slow_backend_blocks_the_client(estuary, sink):
    """The origin does not read the body: the client's sends stall well before its 128 MiB are
    out (TCP buffers only, nothing piles up in estuary), then everything arrives once it reads."""
    gate = threading.Event()
    o = sink(gate=gate)
    gw = gateway(estuary, o.url)
    total = 128 * MiB
    h = hashlib.sha256()
    pieces = list(body_pieces(total, piece=256 * 1024))
    for p in pieces:
        h.update(p)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(total))
        s.setblocking(False)
        sent, i, off = 0, 0, 0
        while i < len(pieces):
            _, w, _ = select.select([], [s], [], 1.0)
            if not w:
                break  # no room for a whole second: the client is blocked
            n = s.send(pieces[i][off:])
            sent += n
            off += n
            if off == len(pieces[i]):
                i, off = i + 1, 0
        assert i < len(pieces), "the client sent its whole body to a backend that reads nothing"
        stalled_at = sent
        mem = vm(gw)
        gate.set()
        s.setblocking(True)
        s.sendall(pieces[i][off:])
        for p in pieces[i + 1:]:
            s.sendall(p)
        status, _, body = read_response(s)
    print(f"client stalled after {stalled_at / MiB:.1f} MiB; estuary VmRSS then {mem['VmRSS'] / 1024:.1f} MiB")
    assert status == 200 and json.loads(body)["sha256"] == h.hexdigest()
    assert stalled_at < 64 * MiB
    if not sanitized():
        assert mem["VmHWM"] < 32 * 1024, mem


def read_one(s, data=b"", timeout=10):
    """One Content-Length response from a kept-alive connection, `data` its bytes already read:
    (status, body, the bytes after it)."""
    s.settimeout(timeout)
    while True:
        if b"\r\n\r\n" in data:
            h, _, rest = data.partition(b"\r\n\r\n")
            n = int(dict(x.split(b": ", 1) for x in h.split(b"\r\n")[1:]).get(b"Content-Length", b"0"))
            if len(rest) >= n:
                return int(h.split()[1]), rest[:n], rest[n:]
        d = s.recv(65536)
        assert d, f"closed before a complete response: {data[:200]!r}"
        data += d


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_connection_kept_after_a_streamed_body(estuary, sink, chunked):
    """A body read whole leaves the connection reusable: two uploads and a pipelined third
    on one connection, each answered in order with its own body."""
    o = sink()
    gw = gateway(estuary, o.url)
    bodies = [os.urandom(300 * 1024), os.urandom(5), os.urandom(70 * 1024)]

    def req(b):
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(b)}"
        return f"PUT /u/k HTTP/1.1\r\nHost: gw\r\n{framing}\r\n\r\n".encode() + \
            (frame(b, True) + b"0\r\n\r\n" if chunked else b)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(req(bodies[0]))
        st, body, rest = read_one(s)
        assert st == 200 and json.loads(body)["sha256"] == hashlib.sha256(bodies[0]).hexdigest()
        s.sendall(req(bodies[1]) + req(bodies[2]))
        got = []
        for _ in range(2):
            st, body, rest = read_one(s, rest)
            got.append((st, json.loads(body)["sha256"]))
    assert got == [(200, hashlib.sha256(b).hexdigest()) for b in bodies[1:]]
    assert o.completed == 3


def test_bad_chunk_mid_stream_400_and_upstream_aborted(estuary, sink):
    """A chunk size that is not hex after 1 MiB of good chunks: 400 bad_request to the client,
    the origin's request cut (its connection closed, never completed)."""
    o = sink()
    gw = gateway(estuary, o.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(chunked=True) + frame(BLOCK, True))
        wait_until(lambda: o.body_bytes >= 64 * 1024, 5, what="the origin reading the first chunk")
        s.sendall(b"0x10\r\n" + b"z" * 16 + b"\r\n0\r\n\r\n")
        status, _, body = read_response(s)
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request", body[:300]
    wait_until(lambda: o.closed == o.connections == 1, 5, what="the origin's connection closed")
    assert o.completed == 0


def test_upload_over_tls(estuary, sink, tls):
    """The same stream behind TLS (records decrypted into the input the body is read from)."""
    import ssl
    o = sink()
    cfg = {"upstreams": {"o": {"targets": [o.url]}},
           "routes": [{"path": "/u/{rest...}", "methods": ["POST"], "max_request_body": "1GiB",
                       "proxy": {"upstream": "o", "path": "/o/{rest...}"}}]}
    gw = estuary(cfg, tls=True)
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    ctx.set_alpn_protocols(["http/1.1"])
    total, h = 16 * MiB, hashlib.sha256()
    with socket.create_connection(("127.0.0.1", gw.tls_port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(head(chunked=True))
            for p in body_pieces(total):
                h.update(p)
                s.sendall(frame(p, True))
            s.sendall(b"0\r\n\r\n")
            status, _, body = read_response(s)
    got = json.loads(body)
    assert status == 200 and got["len"] == total and got["sha256"] == h.hexdigest()


# =========================================================================== limits, retries


def test_route_limit_413_and_upstream_aborted(estuary, sink):
    """A route's own max_request_body (1 MiB, under the top-level 8 MiB): a chunked body that
    goes over gets 413 request_too_large; the origin's request is cut (connection closed, never
    completed); a Content-Length over it is refused before any origin sees it."""
    o = sink()
    gw = gateway(estuary, o.url, route_max="1MiB")
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(chunked=True))
        try:
            for p in body_pieces(2 * MiB, piece=128 * 1024):
                s.sendall(frame(p, True))
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, hdrs, body = read_response(s)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large", body[:300]
    assert o.heads == 1
    wait_until(lambda: o.closed == o.connections == 1, 5, what="the origin's connection closed")
    assert o.completed == 0 and o.body_bytes <= 1 * MiB

    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(1 * MiB + 1))
        status, _, body = read_response(s)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert o.connections == 1 and o.heads == 1


def test_started_body_is_not_retried(estuary, sink):
    """PUT (idempotent; retry on reset allowed, 3 attempts) to an origin that resets after
    reading part of the body: 502, and exactly one attempt (the bytes sent are gone)."""
    o = sink(reset_after=64 * 1024)
    gw = gateway(estuary, o.url, upstream={"retry": {"attempts": 3, "backoff": "10ms", "on": ["connect_failure", "reset"]}})
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(512 * 1024, method="PUT"))

        def send():
            try:
                for p in body_pieces(512 * 1024, piece=64 * 1024):
                    s.sendall(p)
            except OSError:
                pass
        t = threading.Thread(target=send, daemon=True)
        t.start()
        status, _, body = read_response(s)
        t.join(5)
    assert status == 502, body[:300]
    assert json.loads(body)["error"]["code"] == "upstream_unavailable"
    time.sleep(0.2)  # a retry would be under way by now (backoff 10 ms)
    assert o.connections == 1 and o.heads == 1


def test_connect_failure_before_the_body_is_retried(estuary, sink):
    """Two targets, one refusing connections: every upload still arrives whole, the failed
    connect being retried on the other target (no body byte was sent on it)."""
    o = sink()
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = {"upstreams": {"o": {"targets": [dead, o.url],
                               "retry": {"attempts": 2, "backoff": "10ms", "on": ["connect_failure"]}}},
           "routes": [{"path": "/u/{rest...}", "methods": ["POST"], "max_request_body": "1GiB",
                       "proxy": {"upstream": "o", "path": "/o/{rest...}"}}]}
    gw = estuary(cfg)
    for expect in ("", "Expect: 100-continue\r\n"):
        for _ in range(2):  # round robin: one of the two starts on the dead target
            with socket.create_connection(("127.0.0.1", gw.port)) as s:
                s.sendall(head(2 * MiB, extra=expect))
                if expect:
                    s.settimeout(5)
                    assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
                s.sendall(BLOCK * 2)
                status, _, body = read_response(s)
            assert status == 200 and json.loads(body)["len"] == 2 * MiB, body[:300]
    assert o.completed == 4


# =========================================================================== 100-continue


def test_continue_only_once_the_backend_is_connected(estuary, sink, dns):
    """The origin's name takes 0.6 s to resolve: no 100 before the connection is made (a head
    -time 100 would come at once), then the 100, after the origin has the head, and the body
    streams."""
    o = sink()
    dns.set_a("slow.test", "127.0.0.1", ttl=120)
    dns.set_delay("slow.test", 0.6)
    gw = gateway(estuary, f"http://slow.test:{o.port}")
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(MiB, extra="Expect: 100-continue\r\n"))
        s.settimeout(0.4)
        with pytest.raises(socket.timeout):
            early = s.recv(4096)
            pytest.fail(f"answered before the backend connection was ready: {early[:100]!r}")
        s.settimeout(5)
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        s.sendall(BLOCK)
        status, _, body = read_response(s)
    assert status == 200 and json.loads(body)["len"] == MiB
    assert o.connections == 1 and o.heads == 1


def test_continue_not_sent_when_the_backend_is_down(estuary):
    """No backend listening: the client gets the error, never a 100."""
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway(estuary, dead)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head(MiB, extra="Expect: 100-continue\r\n"))
        s.settimeout(10)
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    assert data.startswith(b"HTTP/1.1 502 "), data[:300]
    assert b"100 Continue" not in data


def test_aggregate_route_body_held_to_its_own_cap(estuary, backend):
    """A buffered body (aggregating route) is held to the route's own max_request_body when it
    is below the top-level one: 413 JSON and no backend call; a body within it is fanned out."""
    from harness import json_reply
    b = backend()
    b.route("POST", "/a", json_reply({"a": 1}))
    gw = estuary({
        "max_request_body": "1MiB",
        "upstreams": {"b": {"targets": [b.url]}},
        "routes": [{"path": "/agg", "methods": ["POST"], "max_request_body": 1000,
                    "backends": [{"upstream": "b", "path": "/a", "group": "a"}]}],
    })
    for size, status in ((2000, 413), (500, 200)):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(b"POST /agg HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + 10:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 %d" % status), data[:200]
        if status == 413:
            assert b'"request_too_large"' in data
    assert len(b.requests) == 1

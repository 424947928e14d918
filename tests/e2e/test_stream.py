"""Proxy routes that stream (issue 4): big bodies at flat memory, backpressure both ways,
request bodies and the 413 path, headers both ways, path mapping, failures mid-stream.

Helpers first (generated bodies, a counting HTTP/1.1 client, curl runs that only count
bytes, the gateway's memory figures); nothing holds a big body in memory: the backend
writes one block over and over, the clients count (and hash) what they read.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional

import pytest
from aiohttp import web

from harness import assert_json_error, estuary_bin, raw_http, raw_reply, upstream

MiB = 1024 * 1024
BLOCK = bytes(range(256)) * 4096  # 1 MiB, recognisable pattern


def expected_sha256(total: int) -> str:
    h = hashlib.sha256()
    mv = memoryview(BLOCK)
    left = total
    while left:
        n = min(left, len(BLOCK))
        h.update(mv[:n])
        left -= n
    return h.hexdigest()


class Generated:
    """A backend handler writing `total` bytes of BLOCK, with Content-Length (default) or
    chunked, `pause` s between blocks (and `head_pause` s between the head and the body).
    Records what it wrote (`sent`), whether it finished, and how it ended (`error`, set when
    the downstream side — estuary — went away)."""

    def __init__(self, total: int, chunked: bool = False, block: int = MiB, pause: float = 0.0,
                 head_pause: float = 0.0, status: int = 200, headers: Optional[dict] = None):
        self.total, self.chunked, self.block, self.pause = total, chunked, block, pause
        self.head_pause, self.status, self.headers = head_pause, status, headers
        self.sent = 0
        self.started = 0
        self.finished = False
        self.error: Optional[BaseException] = None

    async def __call__(self, request):
        self.started += 1
        resp = web.StreamResponse(status=self.status, headers=self.headers)
        resp.content_type = "application/octet-stream"
        if self.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = self.total
        mv = memoryview(BLOCK)[:self.block]
        try:
            await resp.prepare(request)
            if self.head_pause:
                with warnings.catch_warnings():  # aiohttp 3.8: deprecated, but flushes the head now
                    warnings.simplefilter("ignore", DeprecationWarning)
                    await resp.drain()
                await asyncio.sleep(self.head_pause)
            left = self.total
            while left:
                n = min(left, len(mv))
                await resp.write(mv[:n])
                self.sent += n
                left -= n
                if self.pause:
                    await asyncio.sleep(self.pause)
            await resp.write_eof()
            self.finished = True
        except BaseException as e:  # CancelledError / ConnectionResetError when estuary leaves
            self.error = e
            raise
        return resp


@dataclass
class Streamed:
    status: int = 0
    headers: Dict[str, str] = field(default_factory=dict)  # lower-case names, last wins
    raw_head: bytes = b""
    head_at: float = 0.0       # seconds from the request to the end of the head
    body_bytes: int = 0
    sha256: str = ""
    complete: bool = False     # Content-Length reached / terminating chunk seen / (close-delimited) EOF
    closed_early: bool = False  # the connection ended before a complete body
    elapsed: float = 0.0


def stream_request(port: int, path: str, method: str = "GET", headers: Optional[dict] = None,
                   body: bytes = b"", timeout: float = 60.0, stop_after: Optional[int] = None,
                   hash_body: bool = True) -> Streamed:
    """One HTTP/1.1 request (Connection: close) over a raw socket; the body is counted and
    hashed, never stored. Framing is checked: `complete` only for a cleanly ended body.
    `stop_after`: close the connection after that many body bytes (a client going away)."""
    hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
    hdrs.update(headers or {})
    if body:
        hdrs["Content-Length"] = str(len(body))
    req = f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in hdrs.items()) + b"\r\n" + body
    out = Streamed()
    h = hashlib.sha256() if hash_body else None
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(req)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                out.closed_early = True
                return out
            buf += d
        end = buf.index(b"\r\n\r\n") + 4
        out.head_at = time.monotonic() - t0
        out.raw_head = bytes(buf[:end])
        lines = out.raw_head.decode("latin-1").split("\r\n")
        out.status = int(lines[0].split()[1])
        for ln in lines[1:]:
            if ln:
                k, v = ln.split(":", 1)
                out.headers[k.strip().lower()] = v.strip()
        rest = bytearray(buf[end:])
        no_body = method == "HEAD" or out.status in (204, 304) or 100 <= out.status < 200

        def take(chunk):
            out.body_bytes += len(chunk)
            if h is not None:
                h.update(chunk)

        def more():
            if stop_after is not None and out.body_bytes >= stop_after:
                raise _Stop()
            d = s.recv(1 << 20)
            return d

        try:
            if no_body:
                out.complete = True
                d = rest + s.recv(65536)
                if d:
                    take(bytes(d))  # anything here is a framing error the test will see
            elif out.headers.get("transfer-encoding", "").lower() == "chunked":
                out.complete = _read_chunked(rest, more, take)
                out.closed_early = not out.complete
            elif "content-length" in out.headers:
                cl = int(out.headers["content-length"])
                take(bytes(rest[:cl]))
                while out.body_bytes < cl:
                    d = more()
                    if not d:
                        break
                    take(d[:cl - out.body_bytes])
                out.complete = out.body_bytes == cl
                out.closed_early = not out.complete
            else:
                take(bytes(rest))
                while True:
                    d = more()
                    if not d:
                        break
                    take(d)
                out.complete = True
        except _Stop:
            pass
        except (ConnectionResetError, socket.timeout):
            out.closed_early = True
    finally:
        s.close()
    out.elapsed = time.monotonic() - t0
    if h is not None:
        out.sha256 = h.hexdigest()
    return out


class _Stop(Exception):
    pass


def _read_chunked(buf: bytearray, more, take) -> bool:
    """Decodes a chunked body from buf + more(); True when the last chunk (0) was seen."""
    while True:
        while b"\r\n" not in buf:
            d = more()
            if not d:
                return False
            buf += d
        i = buf.index(b"\r\n")
        try:
            size = int(bytes(buf[:i]).split(b";")[0], 16)
        except ValueError:
            return False  # broken framing (h2o signals an aborted chunked body with "\r\n1\r\n")
        del buf[:i + 2]
        if size == 0:
            return True  # (trailers ignored)
        need = size + 2
        while need > 0:
            if not buf:
                d = more()
                if not d:
                    return False
                buf += d
            n = min(need, len(buf))
            take(bytes(buf[:min(n, max(0, need - 2))]))
            del buf[:n]
            need -= n


def curl_count(url: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """curl -o /dev/null: stdout is 'status size_download http_version'; rc kept (not raised)."""
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{http_version}",
                           *args, url], capture_output=True, text=True, timeout=timeout)


def proc_status(pid: int) -> Dict[str, int]:
    """VmRSS / VmHWM (kB) of a process."""
    out = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = ln.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


@lru_cache(maxsize=None)
def _binary_is_sanitized(path: str) -> bool:
    try:
        return b"__asan_init" in Path(path).read_bytes()
    except OSError:
        return False


def sanitized() -> bool:
    """True when the binary under test is built with AddressSanitizer (ESTUARY_SANITIZE=ON),
    detected from the binary itself (ASan inflates RSS: shadow memory, quarantine), or when
    ESTUARY_TEST_SANITIZED=1 says so."""
    return os.environ.get("ESTUARY_TEST_SANITIZED") == "1" or _binary_is_sanitized(str(estuary_bin()))


def wait_for(cond, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Sends bytes, returns everything read until the server closes (or `timeout`)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data = bytearray()
    try:
        s.sendall(request)
        while True:
            try:
                d = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not d:
                break
            data += d
    finally:
        s.close()
    return bytes(data)


# =========================================================================== fixtures


@pytest.fixture
def sp(backend, estuary):
    """One gateway with a proxy route /s/{rest...} -> origin /o/{rest...} (GET, HEAD, POST, PUT)."""
    b = backend("origin")
    gw = estuary({"upstreams": {"origin": upstream(b, response_timeout="5s")},
                  "routes": [{"path": "/s/{rest...}", "methods": ["GET", "POST", "PUT"], "timeout": "2s",
                              "proxy": {"upstream": "origin", "path": "/o/{rest...}"}}]})
    gw.origin = b
    return gw


def _mem(gw) -> Dict[str, int]:
    return proc_status(gw.proc.pid)


# =========================================================================== 1. streaming replies


def test_256mib_reply_streams_at_flat_memory(sp):
    """256 MiB generated by the backend, read and hashed by the client: intact, with
    Content-Length passed through, and the gateway's peak RSS (VmHWM) under 64 MiB."""
    total = 256 * MiB
    gen = Generated(total)
    sp.origin.get("/o/big", gen)
    r = stream_request(sp.port, "/s/big", timeout=30)
    assert r.status == 200 and r.complete, r
    assert r.headers.get("content-length") == str(total) and "transfer-encoding" not in r.headers
    assert r.body_bytes == total and r.sha256 == expected_sha256(total)
    mem = _mem(sp)
    print(f"256 MiB in {r.elapsed:.2f}s, estuary VmHWM {mem['VmHWM'] / 1024:.1f} MiB, VmRSS {mem['VmRSS'] / 1024:.1f} MiB")
    assert r.elapsed < 30
    if sanitized():
        pytest.skip(f"ASan build: RSS is not meaningful (VmHWM {mem['VmHWM']} kB); body verified")
    assert mem["VmHWM"] < 64 * 1024, f"peak RSS {mem['VmHWM']} kB"


def test_chunked_reply_stays_chunked_and_intact(sp):
    total = 32 * MiB + 12345
    sp.origin.get("/o/chunked", Generated(total, chunked=True, block=256 * 1024))
    r = stream_request(sp.port, "/s/chunked")
    assert r.status == 200 and r.complete
    assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
    assert r.body_bytes == total and r.sha256 == expected_sha256(total)


@pytest.mark.parametrize("chunked", [False, True])
def test_big_reply_over_http2(sp, chunked):
    total = 64 * MiB
    sp.origin.get("/o/h2", Generated(total, chunked=chunked))
    cp = curl_count(sp.url("/s/h2"), "--http2-prior-knowledge")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["200", str(total), "2"]
    if not sanitized():
        assert _mem(sp)["VmHWM"] < 64 * 1024


@pytest.mark.parametrize("proto", ["--http1.1", "--http2"])
def test_concurrent_big_replies(backend, estuary, tls, proto):
    """8 downloads of 32 MiB at once over TLS (HTTP/2: multiplexed on one connection; h2c
    prior knowledge is not used because curl 7.88 fails to reuse such a connection, with
    nginx as well): each intact, memory bounded per stream, not per body."""
    b = backend("origin")
    total, n = 32 * MiB, 8
    b.get("/o/par/{i}", Generated(total))
    gw = estuary({"upstreams": {"origin": upstream(b)},
                  "routes": [{"path": "/s/{rest...}", "proxy": {"upstream": "origin", "path": "/o/{rest...}"}}]}, tls=True)
    urls = [gw.tls_url(f"/s/par/{i}") for i in range(n)]
    cp = subprocess.run(["curl", "-sS", "--parallel", "--parallel-max", str(n), proto, "--cacert", str(tls.ca_cert),
                         "-w", "%{http_code} %{size_download} %{http_version}\n"] + sum((["-o", "/dev/null", u] for u in urls), []),
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr[-500:]
    version = {"--http1.1": "1.1", "--http2": "2"}[proto]
    assert sorted(cp.stdout.split("\n")[:n]) == [f"200 {total} {version}"] * n, cp.stdout
    if not sanitized():
        assert _mem(gw)["VmHWM"] < 64 * 1024


@pytest.mark.parametrize("proto", ["--http1.1", "--http2"])
def test_big_reply_over_tls(backend, estuary, tls, proto):
    """The client side over TLS (h2o encrypts into its own buffer): intact and flat."""
    b = backend("origin")
    total = 64 * MiB
    b.get("/o/tls", Generated(total))
    gw = estuary({"upstreams": {"origin": upstream(b)},
                  "routes": [{"path": "/s/{rest...}", "proxy": {"upstream": "origin", "path": "/o/{rest...}"}}]}, tls=True)
    cp = curl_count(gw.tls_url("/s/tls"), proto, "--cacert", str(tls.ca_cert))
    assert cp.returncode == 0, cp.stderr
    status, size, version = cp.stdout.split()
    assert status == "200" and size == str(total) and version == {"--http1.1": "1.1", "--http2": "2"}[proto]
    if not sanitized():
        assert _mem(gw)["VmHWM"] < 64 * 1024


def test_head_is_sent_before_the_body(sp):
    """Status and headers reach the client as soon as the upstream sends them."""
    sp.origin.get("/o/late", Generated(1000, head_pause=1.5, headers={"X-Early": "yes"}))
    r = stream_request(sp.port, "/s/late")
    assert r.status == 200 and r.complete and r.body_bytes == 1000
    assert r.headers.get("x-early") == "yes"
    assert r.head_at < 1.0, f"head after {r.head_at:.2f}s"
    assert r.elapsed >= 1.4


def test_head_is_sent_before_the_body_http2(sp):
    sp.origin.get("/o/late", Generated(1000, head_pause=1.5))
    cp = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--http2-prior-knowledge", "-w",
                         "%{http_code} %{time_starttransfer} %{time_total} %{size_download}", sp.url("/s/late")],
                        capture_output=True, text=True, timeout=20)
    status, ttfb, total, size = cp.stdout.split()
    assert cp.returncode == 0 and status == "200" and size == "1000"
    assert float(ttfb) < 1.0 and float(total) >= 1.4, cp.stdout


def _slow_curl(url, *args, seconds=3.0):
    return subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "--limit-rate", "1M", "--max-time", str(seconds),
                             *args, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_slow_reader_backpressure_and_flat_memory(sp, proto):
    """A client reading at 1 MB/s: the upstream is no longer read (the backend's writes stall
    at a few MiB of buffers), estuary's RSS stays flat; when the client leaves, the upstream
    connection is closed (the backend sees it) and not pooled."""
    gen = Generated(512 * MiB, block=64 * 1024)
    sp.origin.get("/o/slow", gen)
    p = _slow_curl(sp.url("/s/slow"), *(["--http2-prior-knowledge"] if proto == "h2" else []), seconds=4)
    try:
        assert wait_for(lambda: gen.sent > 0, 5)
        time.sleep(1.5)
        sent1, rss1 = gen.sent, _mem(sp)["VmRSS"]
        time.sleep(1.5)
        sent2, mem2 = gen.sent, _mem(sp)
    finally:
        p.wait(10)
    print(f"{proto}: backend sent {sent1 / MiB:.1f} -> {sent2 / MiB:.1f} MiB, estuary RSS {rss1} -> {mem2['VmRSS']} kB, "
          f"HWM {mem2['VmHWM']} kB")
    # 3 s at 1 MB/s plus socket buffers (client, estuary both ways, backend) and 256 KiB pending
    assert sent2 < 40 * MiB, f"the backend wrote {sent2} bytes: no backpressure"
    # In 1.5 s the client reads ~1.5 MB; without backpressure the backend would send hundreds
    # of MiB. The slack is the kernel's buffer autotuning, which can still grow the client's
    # receive and the backend's send buffers by several MiB after the first 1.5 s (seen: 8 MiB
    # in one run out of ~10 under ASan, with the buffers of estuary itself flat).
    assert sent2 - sent1 < 16 * MiB, "the upstream kept being read while the client was slow"
    if not sanitized():
        assert mem2["VmRSS"] - rss1 < 8 * 1024, "RSS grew while the client read slowly"
        assert mem2["VmHWM"] < 64 * 1024
    # the client left: estuary closes the upstream connection instead of pooling it
    assert wait_for(lambda: gen.error is not None, 10), "the backend never saw the upstream connection close"
    assert not gen.finished
    sp.origin.get("/o/after", {"ok": True})
    conns = sp.origin.connections
    r = stream_request(sp.port, "/s/after")
    assert r.status == 200 and r.complete
    assert sp.origin.connections == conns + 1, "a connection abandoned mid-body was reused"


def test_client_leaving_mid_body_releases_upstream_h1(sp):
    gen = Generated(256 * MiB, block=64 * 1024)
    sp.origin.get("/o/leave", gen)
    r = stream_request(sp.port, "/s/leave", stop_after=2 * MiB, hash_body=False)
    assert r.status == 200 and r.body_bytes >= 2 * MiB
    assert wait_for(lambda: gen.error is not None, 10), "upstream not released after the client left"
    assert gen.sent < 64 * MiB and not gen.finished


# --------------------------------------------------------------------------- HEAD, 204, 304, 1xx


def test_head_has_no_body_and_keeps_content_length(sp):
    sp.origin.route("HEAD", "/o/h", raw_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"))
    sp.origin.get("/o/h", Generated(5000))
    data = raw_exchange(sp.port, b"HEAD /s/h HTTP/1.1\r\nHost: x\r\n\r\nGET /s/h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"content-length: 5000" in head.lower()
    # the next bytes are the second response: the HEAD answer carried no body
    assert rest.startswith(b"HTTP/1.1 200"), rest[:100]
    assert rest.endswith(BLOCK[:5000])


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(sp, status):
    hdrs = {"ETag": '"v1"'} if status == 304 else {}
    sp.origin.get("/o/nb", raw_reply(f"HTTP/1.1 {status} X\r\n".encode()
                                     + b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs.items())
                                     + b"Connection: close\r\n\r\n"))
    data = raw_exchange(sp.port, b"GET /s/nb HTTP/1.1\r\nHost: x\r\n\r\nGET /s/nb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(f"HTTP/1.1 {status}".encode()), data[:200]
    assert b"transfer-encoding" not in first.lower()
    assert rest.startswith(f"HTTP/1.1 {status}".encode()), rest[:100]  # no body between the two
    if status == 304:
        assert b'etag: "v1"' in first.lower()


def test_interim_1xx_replies_are_skipped(sp):
    sp.origin.get("/o/1xx", raw_reply(b"HTTP/1.1 100 Continue\r\n\r\n"
                                      b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                                      b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: 1\r\n\r\nfinal"))
    r = stream_request(sp.port, "/s/1xx")
    assert r.status == 200 and r.complete and r.body_bytes == 5 and r.headers.get("x-final") == "1"


@pytest.mark.parametrize("location", ["http://internal.example:8080/o/else?a=1", "/o/else", "../relative"])
def test_location_left_as_is(sp, location):
    sp.origin.get("/o/redir", raw_reply(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()))
    r = stream_request(sp.port, "/s/redir")
    assert r.status == 302 and r.headers.get("location") == location


def test_close_delimited_reply_is_chunked_to_the_client(sp):
    sp.origin.get("/o/cd", raw_reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 300000))
    r = stream_request(sp.port, "/s/cd")
    assert r.status == 200 and r.complete and r.body_bytes == 300000
    assert r.headers.get("transfer-encoding") == "chunked"


@pytest.mark.parametrize("status", [404, 500])
def test_backend_errors_passed_through_unchanged(sp, status):
    body = b'{"backend": "says no"}'
    sp.origin.get("/o/err", raw_reply(f"HTTP/1.1 {status} Whatever\r\nContent-Type: application/problem+json\r\n"
                                      f"X-Backend: 1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body))
    r = raw_http(sp.port, b"GET /s/err HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.status == status and r.body == body
    assert r.headers["Content-Type"] == "application/problem+json" and r.headers["X-Backend"] == "1"


# =========================================================================== 6. failures mid-stream


def test_upstream_dying_mid_body_content_length_h1(sp):
    """Content-Length 1 MB, 400 kB sent, then the backend dies: the client must not get a
    clean response (short body and closed connection)."""
    sp.origin.get("/o/die", raw_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"d" * 400000))
    r = stream_request(sp.port, "/s/die")
    assert r.status == 200 and not r.complete and r.closed_early
    assert r.body_bytes < 1000000


def test_upstream_dying_mid_body_chunked_h1(sp):
    """Chunked from the upstream, then the connection drops: no terminating chunk for the client."""
    sp.origin.get("/o/die", raw_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      b"10000\r\n" + b"c" * 0x10000 + b"\r\n8000\r\n" + b"c" * 100))
    r = stream_request(sp.port, "/s/die")
    assert r.status == 200 and not r.complete and r.closed_early
    assert r.body_bytes < 0x10000 + 0x8000


def test_upstream_reset_mid_body_generated(sp):
    """A generated body cut by a TCP reset after ~8 MiB (the backend aborts its transport)."""
    class Cut(Generated):
        async def __call__(self, request):
            async def killer():
                while self.sent < 8 * MiB:
                    await asyncio.sleep(0.01)
                request.transport.abort()
            t = asyncio.ensure_future(killer())
            try:
                return await super().__call__(request)
            finally:
                t.cancel()
    sp.origin.get("/o/cut", Cut(64 * MiB, block=64 * 1024))
    r = stream_request(sp.port, "/s/cut", hash_body=False)
    assert r.status == 200 and not r.complete and r.body_bytes < 64 * MiB


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"d" * 400000,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n" + b"c" * 0x10000 + b"\r\n8000\r\n" + b"c" * 100,
], ids=["content-length", "chunked"])
def test_upstream_dying_mid_body_h2_resets_the_stream(sp, reply):
    sp.origin.get("/o/die", raw_reply(reply))
    cp = curl_count(sp.url("/s/die"), "--http2-prior-knowledge")
    # curl: 92 = HTTP/2 stream error (RST_STREAM), 18 = partial file; never 0
    assert cp.returncode in (18, 92, 56), (cp.returncode, cp.stdout, cp.stderr)

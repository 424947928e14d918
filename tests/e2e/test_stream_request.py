"""Proxy routes (issue 4), the request side and headers: uploads up to max_request_body
forwarded byte-exact, one byte more -> JSON 413 before any backend sees it (HTTP/1.1
content-length and chunked, HTTP/2); hop-by-hop and forwarding headers both ways; Host;
path mapping with percent-encoding and traversal attempts."""
import hashlib
import json
import os
import socket
import subprocess

import pytest
from aiohttp import web

from harness import assert_json_error, echo_reply, raw_http, raw_reply, upstream
from test_stream import MiB, raw_exchange

LIMIT = 8 * MiB  # SPEC default max_request_body


async def digest_reply(request):
    """Answers with the length and sha256 of the body as the backend received it, plus the
    framing headers it saw."""
    body = request["recorded"].body
    return web.json_response({"len": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                              "content-length": request.headers.get("Content-Length"),
                              "transfer-encoding": request.headers.get("Transfer-Encoding")})


def _allow_big_bodies(b):
    """The test backend (aiohttp's low-level web.Server) reads bodies with aiohttp's default
    1 MiB client_max_size: raise it for this backend (set before any connection is made)."""
    srv = b._web_server

    def factory(message, payload, protocol, writer, task):
        return web.BaseRequest(message, payload, protocol, writer, task, srv._loop, client_max_size=64 * MiB)
    srv.request_factory = factory


@pytest.fixture
def up(backend, estuary):
    b = backend("origin")
    _allow_big_bodies(b)
    b.route("*", "/o/{rest...}", digest_reply)
    gw = estuary({"upstreams": {"origin": upstream(b)},
                  "routes": [{"path": "/u/{rest...}", "methods": ["POST", "PUT"], "timeout": "5s",
                              "proxy": {"upstream": "origin", "path": "/o/{rest...}"}}]})
    gw.origin = b
    return gw


def _body(n: int) -> bytes:
    return os.urandom(1024) * (n // 1024) + os.urandom(n % 1024)


def _post_raw(port, path, body, chunked=False, chunk=256 * 1024):
    head = f"POST {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n"
    if chunked:
        parts = [body[i:i + chunk] for i in range(0, len(body), chunk)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        req = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + payload
    else:
        req = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return raw_http(port, req, timeout=30)


# =========================================================================== 2. request bodies


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_at_the_limit_forwarded_byte_exact(up, chunked):
    body = _body(LIMIT)
    r = _post_raw(up.port, "/u/up", body, chunked=chunked)
    assert r.status == 200, r.body[:300]
    got = r.json()
    assert got["len"] == LIMIT and got["sha256"] == hashlib.sha256(body).hexdigest()
    # the body streams (docs/streaming.md): chunked in, chunked out; a length in, that length out
    if chunked:
        assert got["content-length"] is None and got["transfer-encoding"] == "chunked"
    else:
        assert got["content-length"] == str(LIMIT) and got["transfer-encoding"] is None


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_one_byte_over_is_json_413_and_never_forwarded(up, chunked):
    r = _post_raw(up.port, "/u/up", _body(LIMIT + 1), chunked=chunked)
    assert_json_error(r, 413, "request_too_large")
    assert up.origin.request_count == 0


def test_far_over_the_limit_content_length_is_413_at_once(up):
    """A Content-Length far over the limit is refused from the head alone: no need to send
    the body, and nothing reaches the backend."""
    s = socket.create_connection(("127.0.0.1", up.port), timeout=10)
    try:
        s.sendall(b"POST /u/up HTTP/1.1\r\nHost: gw\r\nContent-Length: 1073741824\r\n\r\n")
        data = b""
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            data += d
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), data[:200]
    assert b"content-type: application/json" in head.lower() and b"x-request-id:" in head.lower()
    doc = json.loads(body)
    assert doc["error"]["code"] == "request_too_large" and doc["error"]["status"] == 413
    assert up.origin.request_count == 0


def test_over_the_limit_chunked_is_refused_while_uploading(up):
    """A chunked upload is refused (JSON 413) as soon as it crosses the limit: the client
    does not get to send the rest."""
    s = socket.create_connection(("127.0.0.1", up.port), timeout=10)
    sent = 0
    try:
        s.sendall(b"POST /u/up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
        part = b"%x\r\n%s\r\n" % (MiB, b"z" * MiB)
        try:
            for _ in range(64):  # up to 64 MiB offered
                s.sendall(part)
                sent += MiB
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        except ConnectionResetError:
            pass
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in data, data[:300]
    assert sent < 40 * MiB, f"{sent} bytes accepted before the 413"
    assert up.origin.request_count == 0


def _curl_post_h2(url, path, tmp_path):
    return subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", f"@{path}",
                           "-H", "Content-Type: application/octet-stream", "-w", "\n%{http_code}", url],
                          capture_output=True, timeout=30)


def test_upload_over_http2(up, tmp_path):
    body = _body(LIMIT)
    f = tmp_path / "body"
    f.write_bytes(body)
    cp = _curl_post_h2(up.url("/u/h2"), f, tmp_path)
    assert cp.returncode == 0, cp.stderr
    out, _, status = cp.stdout.rpartition(b"\n")
    assert status == b"200"
    got = json.loads(out)
    assert got["len"] == LIMIT and got["sha256"] == hashlib.sha256(body).hexdigest()


def test_upload_over_the_limit_http2(up, tmp_path):
    """HTTP/2: h2o (limit = max_request_body + 1, see setup_h2o) passes a body of exactly one
    byte over to the handler, which answers the JSON 413; anything bigger makes libh2o 2.2.5
    refuse the stream (RST_STREAM REFUSED_STREAM, no 413; SPEC allows it, docs/streaming.md).
    Either way nothing reaches the backend."""
    f = tmp_path / "body"
    f.write_bytes(_body(LIMIT + 1))
    cp = _curl_post_h2(up.url("/u/h2"), f, tmp_path)
    out, _, status = cp.stdout.rpartition(b"\n")
    assert cp.returncode == 0 and status == b"413" and b'"request_too_large"' in out, (cp.returncode, cp.stdout[:300])
    f.write_bytes(_body(LIMIT + 64 * 1024))
    cp = _curl_post_h2(up.url("/u/h2"), f, tmp_path)
    assert cp.returncode != 0, cp.stdout[:300]
    assert up.origin.request_count == 0


# =========================================================================== 3. headers both ways


@pytest.fixture
def hp(backend, estuary):
    b = backend("origin")
    b.route("*", "/o/x", echo_reply())
    gw = estuary({"upstreams": {"origin": upstream(b)},
                  "routes": [{"path": "/h/{rest...}", "methods": ["GET"], "proxy": {"upstream": "origin", "path": "/o/{rest...}"}},
                             {"path": "/ph/{rest...}", "methods": ["GET"], "preserve_host": True,
                              "proxy": {"upstream": "origin", "path": "/o/{rest...}"}}]})
    gw.origin = b
    return gw


def test_request_hop_by_hop_dropped_forwarding_added(hp):
    r = raw_http(hp.port, b"GET /h/x HTTP/1.1\r\nHost: gw.example:8080\r\nX-Custom: 1\r\n"
                 b"Connection: close, X-Hop, X-Other\r\nX-Hop: a\r\nX-Other: b\r\nKeep-Alive: timeout=5\r\n"
                 b"TE: trailers\r\nTrailer: X-T\r\nProxy-Authorization: Basic eA==\r\n"
                 b"X-Forwarded-For: 10.0.0.1\r\nVia: 1.0 upstream-proxy\r\nX-Request-Id: req-42\r\n\r\n")
    assert r.status == 200, r.body
    h = hp.origin.last.headers
    for hop in ("X-Hop", "X-Other", "Keep-Alive", "TE", "Trailer", "Proxy-Authorization"):
        assert hop not in h, hop
    assert h["X-Custom"] == "1"
    assert h["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http" and h["X-Forwarded-Host"] == "gw.example:8080"
    assert h["Via"] == "1.0 upstream-proxy, 1.1 estuary"
    assert h["X-Request-Id"] == "req-42" and r.headers["X-Request-Id"] == "req-42"
    assert h["Host"] == hp.origin.authority  # the target's authority


def test_preserve_host(hp):
    r = raw_http(hp.port, b"GET /ph/x HTTP/1.1\r\nHost: gw.example:8080\r\nConnection: close\r\n\r\n")
    assert r.status == 200
    assert hp.origin.last.headers["Host"] == "gw.example:8080"


def test_response_hop_by_hop_dropped(hp):
    hp.origin.get("/o/resp", raw_reply(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
        b"X-End: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Request-Id: backend-id\r\n\r\nok"))
    r = raw_http(hp.port, b"GET /h/resp HTTP/1.1\r\nHost: gw\r\nX-Request-Id: mine\r\nConnection: close\r\n\r\n")
    assert r.status == 200 and r.body == b"ok"
    for hop in ("X-Secret", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
        assert hop not in r.headers, hop
    assert r.headers["X-End"] == "1" and r.header_list("Set-Cookie") == ["a=1", "b=2"]
    assert r.header_list("X-Request-Id") == ["mine"]


# =========================================================================== 4. path mapping


@pytest.fixture
def pm(backend, estuary):
    b = backend("origin")
    b.route("*", "/{rest...}", echo_reply())
    gw = estuary({"upstreams": {"origin": upstream(b)},
                  "routes": [{"path": "/api/users/{rest...}", "proxy": {"upstream": "origin", "path": "/users/{rest...}"}},
                             {"path": "/api/items/{id}/detail", "proxy": {"upstream": "origin", "path": "/items/{id}/d"}},
                             {"path": "/admin/{rest...}", "proxy": {"upstream": "origin", "path": "/ADMIN/{rest...}"}}]})
    gw.origin = b
    return gw


def _get(gw, target: str):
    return raw_http(gw.port, f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())


@pytest.mark.parametrize("target,upstream_target", [
    ("/api/users/42", "/users/42"),
    ("/api/users/", "/users/"),
    ("/api/users/a/../b", "/users/b"),
    ("/api/users/a/./b/", "/users/a/b/"),
    ("/api/users/a%2Fb", "/users/a%2Fb"),                               # %2F stays encoded
    ("/api/users/a%2F..%2F..%2Fadmin", "/users/a%2F..%2F..%2Fadmin"),   # not a dot segment
    ("/api/users/%252e%252e/x", "/users/%252e%252e/x"),                 # no double decoding
    ("/api/users/caf%C3%A9/%20sp", "/users/caf%C3%A9/%20sp"),          # encoded bytes as they came
    ("/api/users/x?q=a%20b&r=%26&s=1/../2", "/users/x?q=a%20b&r=%26&s=1/../2"),  # query kept verbatim
    ("/api/items/7/detail?x=1", "/items/7/d?x=1"),
    ("/api/items/a%2Fb/detail", "/items/a%2Fb/d"),
    ("/api/items/%2e%2e%2fadmin/detail", "/items/%2e%2e%2fadmin/d"),
])
def test_path_mapping(pm, target, upstream_target):
    r = _get(pm, target)
    assert r.status == 200, (target, r.status, r.body)
    assert pm.origin.last.raw_path == upstream_target


@pytest.mark.parametrize("target", [
    "/api/users/../../admin/x",          # resolves to /admin/x: another route, not a climb out of /api/users
    "/api/users/%2e%2e/%2e%2e/admin/x",
    "/api/users/%2E%2E/../admin/x",
    "/api/users/.%2e/.%2E/admin/x",
])
def test_traversal_cannot_escape_the_route_template(pm, target):
    """Dot segments (plain or percent-encoded) are resolved before matching, so they select
    the route the resolved path names; they never reach a backend under the proxy prefix."""
    r = _get(pm, target)
    assert r.status == 200, r.body
    assert pm.origin.last.raw_path == "/ADMIN/x"


@pytest.mark.parametrize("target", ["/api/users/../../../etc/passwd", "/api/%2e%2e/%2e%2e/%2e%2e/x"])
def test_climbing_above_the_root_is_400(pm, target):
    assert_json_error(_get(pm, target), 400)
    assert pm.origin.request_count == 0


def test_dot_segment_param_does_not_match(pm):
    """{id} = '..' would climb: the path resolves to /api/detail, which no route serves."""
    assert_json_error(_get(pm, "/api/items/%2e%2e/detail"), 404)
    assert pm.origin.request_count == 0

"""What reaches the backends: query, body, end-to-end vs hop-by-hop headers, X-Request-Id,
Via / X-Forwarded-*, Host."""
import pytest

from harness import REQUEST_ID_RE, echo_reply, raw_http


@pytest.fixture
def two(backend, estuary):
    """An aggregating route GET+POST /r/{id} over two backends (a, b) on different upstreams,
    and a proxy route /p/{rest...} to backend a."""
    a, b = backend("a"), backend("b")
    a.route("*", "/{rest...}", echo_reply())
    b.route("*", "/{rest...}", echo_reply())
    gw = estuary({"upstreams": {"ua": {"targets": [a.url]}, "ub": {"targets": [b.url]}},
                  "routes": [{"path": "/r/{id}", "methods": ["GET", "POST", "PUT", "PATCH"], "backends": [
                      {"upstream": "ua", "path": "/a/{id}", "group": "a"},
                      {"upstream": "ub", "path": "/b/{id}", "group": "b"}]},
                      {"path": "/p/{rest...}", "methods": ["GET", "POST"],
                       "proxy": {"upstream": "ua", "path": "/proxied/{rest...}"}}]})
    return gw, a, b


def send(gw, head: str, body: bytes = b""):
    return raw_http(gw.port, head.replace("\n", "\r\n").encode() + body)


def test_query_string_forwarded_to_every_backend(two, http):
    gw, a, b = two
    r = http.get(gw.url("/r/1?x=1&y=a%20b&z"))
    assert r.status == 200
    assert a.last.query_string == "x=1&y=a%20b&z" and b.last.query_string == "x=1&y=a%20b&z"
    assert a.last.path == "/a/1" and b.last.path == "/b/1"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_request_body_sent_to_every_backend(two, http, method):
    gw, a, b = two
    payload = b'{"hello": "world", "n": 1}'
    r = http.request(method, gw.url("/r/7"), data=payload, headers={"Content-Type": "application/json"})
    assert r.status == 200, r.body
    for be in (a, b):
        assert be.last.method == method
        assert be.last.body == payload
        assert be.last.headers["Content-Length"] == str(len(payload))
        assert be.last.headers["Content-Type"] == "application/json"


def test_chunked_request_body_is_forwarded_whole(two):
    gw, a, b = two
    r = send(gw, "POST /r/3 HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\nConnection: close\n\n",
             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert r.status == 200, r.body
    assert a.last.body == b"hello world" and b.last.body == b"hello world"


def test_end_to_end_headers_forwarded_hop_by_hop_not(two):
    gw, a, b = two
    r = send(gw, "GET /r/1 HTTP/1.1\nHost: gw.example:8080\nX-Custom: yes\nAuthorization: Bearer t\n"
                 "Accept: application/json\nCookie: c=1\nConnection: close, X-Hop\nX-Hop: secret\n"
                 "Keep-Alive: timeout=5\nTE: trailers\nTrailer: X-T\nProxy-Authorization: Basic x\n"
                 "Proxy-Connection: keep-alive\n\n")
    assert r.status == 200, r.body
    for be in (a, b):
        h = be.last.headers
        assert h["X-Custom"] == "yes" and h["Authorization"] == "Bearer t" and h["Cookie"] == "c=1"
        assert h["Accept"] == "application/json"
        for hop in ("X-Hop", "Keep-Alive", "TE", "Trailer", "Proxy-Authorization", "Proxy-Connection"):
            assert hop not in h, f"hop-by-hop header {hop} forwarded to {be.name}"
        assert "x-hop" not in h.get("Connection", "").lower()


def test_forwarding_headers_added(two):
    gw, a, b = two
    r = send(gw, "GET /r/1 HTTP/1.1\nHost: gw.example:8080\nX-Forwarded-For: 10.1.2.3\n"
                 "Connection: close\n\n")
    assert r.status == 200, r.body
    for be in (a, b):
        h = be.last.headers
        assert "1.1 estuary" in h["Via"]
        assert [x.strip() for x in h["X-Forwarded-For"].split(",")] == ["10.1.2.3", "127.0.0.1"]
        assert h["X-Forwarded-Proto"] == "http"
        assert h["X-Forwarded-Host"] == "gw.example:8080"
        assert h["Host"] == be.authority  # the target's authority, not the client's Host


def test_x_forwarded_for_set_when_absent(two, http):
    gw, a, _ = two
    assert http.get(gw.url("/r/1")).status == 200
    assert a.last.headers["X-Forwarded-For"] == "127.0.0.1"


def test_valid_request_id_kept_and_echoed(two, http):
    gw, a, b = two
    rid = "Abc-123_x.Y"
    r = http.get(gw.url("/r/1"), headers={"X-Request-Id": rid})
    assert r.headers["X-Request-Id"] == rid
    assert a.last.headers["X-Request-Id"] == rid and b.last.headers["X-Request-Id"] == rid


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "x" * 129, "ünïcode", ""])
def test_invalid_request_id_replaced(two, bad):
    gw, a, b = two
    head = "GET /r/1 HTTP/1.1\nHost: gw\nConnection: close\n"
    r = raw_http(gw.port, (head.replace("\n", "\r\n") + f"X-Request-Id: {bad}\r\n\r\n").encode("utf-8"))
    assert r.status == 200, r.body
    rid = r.headers["X-Request-Id"]
    assert rid != bad and REQUEST_ID_RE.match(rid)
    assert a.last.headers.getall("X-Request-Id") == [rid] and b.last.headers["X-Request-Id"] == rid


def test_request_id_generated_when_absent(two, http):
    gw, a, b = two
    r1 = http.get(gw.url("/r/1"))
    r2 = http.get(gw.url("/r/2"))
    rid1, rid2 = r1.headers["X-Request-Id"], r2.headers["X-Request-Id"]
    assert REQUEST_ID_RE.match(rid1) and REQUEST_ID_RE.match(rid2) and rid1 != rid2
    assert b.last.headers["X-Request-Id"] == rid2


def test_proxy_route_forwards_the_same_way(two):
    gw, a, _ = two
    r = send(gw, "POST /p/x/y?q=1 HTTP/1.1\nHost: gw.example\nX-Custom: 1\nX-Request-Id: pr-1\n"
                 "Connection: close, X-Hop\nX-Hop: 1\nContent-Length: 4\n\n", b"data")
    assert r.status == 200, r.body
    h = a.last.headers
    assert a.last.raw_path == "/proxied/x/y?q=1" and a.last.body == b"data"
    assert h["X-Custom"] == "1" and "X-Hop" not in h and h["X-Request-Id"] == "pr-1"
    assert "1.1 estuary" in h["Via"] and h["X-Forwarded-Host"] == "gw.example"
    assert r.headers["X-Request-Id"] == "pr-1"


def test_one_server_header_on_every_kind_of_response(two):
    """estuary names itself once (the backend's Server is dropped): proxied, merged and error
    responses, over HTTP/1.1 and HTTP/2."""
    from harness import curl
    gw, a, b = two
    for args in ((), ("--http2-prior-knowledge",)):
        for path, status in (("/p/x", 200), ("/r/1", 200), ("/nope", 404)):
            r = curl(*args, gw.url(path))
            assert r.status == status, (args, path)
            servers = r.headers.getall("Server", [])
            assert len(servers) == 1 and servers[0].startswith("estuary/"), (args, path, servers)
    r = send(gw, "DELETE /p/x HTTP/1.1\nHost: gw\nConnection: close\n\n")
    assert r.status == 405 and r.headers.getall("Server") == [r.headers["Server"]]
    assert r.headers["Server"].startswith("estuary/")

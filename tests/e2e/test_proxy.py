"""Proxy routes: the backend's reply streams through unchanged."""
import hashlib

import pytest

from harness import (assert_json_error, body_reply, chunked_reply, close_delimited_reply, curl, delayed,
                     free_port, raw_http, status_reply)


@pytest.fixture
def px(backend, estuary):
    b = backend("origin")
    gw = estuary({"upstreams": {"origin": {"targets": [b.url]}},
                  "routes": [{"path": "/px/{rest...}", "methods": ["GET", "POST"], "timeout": "1s",
                              "proxy": {"upstream": "origin", "path": "/o/{rest...}"}}]})
    gw.origin = b
    return gw


def test_status_headers_body_pass_through(px, http):
    px.origin.get("/o/thing", body_reply(b"plain text body", status=201, content_type="text/plain",
                                         headers={"X-Origin": "yes", "ETag": '"abc"'}))
    r = http.get(px.url("/px/thing"))
    assert r.status == 201 and r.body == b"plain text body"
    assert r.headers["X-Origin"] == "yes" and r.headers["ETag"] == '"abc"'
    assert r.headers["Content-Type"].startswith("text/plain")


def test_backend_error_status_not_rewritten(px, http):
    px.origin.get("/o/missing", body_reply(b"<h1>nope</h1>", status=404, content_type="text/html"))
    r = http.get(px.url("/px/missing"))
    assert r.status == 404 and r.body == b"<h1>nope</h1>"
    assert r.headers["Content-Type"].startswith("text/html")


def test_retryable_status_last_reply_passed_through(px, http):
    px.origin.get("/o/busy", status_reply(503, {"busy": True}))
    r = http.get(px.url("/px/busy"))
    assert r.status == 503 and r.json() == {"busy": True}


def test_chunked_reply_streams(px, http):
    parts = [b"part-%d;" % i for i in range(20)]
    px.origin.get("/o/chunks", chunked_reply(parts, content_type="text/plain", pause=0.01))
    r = http.get(px.url("/px/chunks"))
    assert r.status == 200 and r.body == b"".join(parts)


def test_close_delimited_reply(px, http):
    px.origin.get("/o/close", close_delimited_reply(b"until-close " * 1000, content_type="text/plain"))
    r = http.get(px.url("/px/close"))
    assert r.status == 200 and r.body == b"until-close " * 1000


def test_large_body_intact_h1_and_h2(px):
    blob = hashlib.sha256(b"seed").digest() * (4 * 1024 * 1024 // 32)  # 4 MiB
    px.origin.get("/o/big", body_reply(blob, content_type="application/octet-stream"))
    for args in ([], ["--http2-prior-knowledge"]):
        r = curl(*args, px.url("/px/big"))
        assert r.status == 200 and len(r.body) == len(blob) and r.body == blob


def test_post_body_forwarded(px, http):
    px.origin.route("POST", "/o/upload", {"stored": True})
    data = b"z" * 100_000
    r = http.post(px.url("/px/upload?x=1"), data=data)
    assert r.status == 200 and r.json() == {"stored": True}
    assert px.origin.last.body == data and px.origin.last.query_string == "x=1"


def test_no_head_within_route_timeout_is_504(px, http):
    px.origin.get("/o/slow", delayed(10, {"late": True}))
    r = http.get(px.url("/px/slow"))
    assert_json_error(r, 504, "upstream_timeout")
    assert r.elapsed < 5


def test_slow_body_after_head_is_not_cut_by_route_timeout(px, http):
    """The route timeout (1s) bounds the head only; a body taking 1.5s still arrives."""
    parts = [b"x" * 10 for _ in range(6)]
    px.origin.get("/o/trickle", chunked_reply(parts, content_type="text/plain", pause=0.3))
    r = http.get(px.url("/px/trickle"))
    assert r.status == 200 and r.body == b"x" * 60


def test_unreachable_upstream_is_502(backend, estuary, http):
    gw = estuary({"upstreams": {"dead": {"targets": [f"http://127.0.0.1:{free_port()}"]}},
                  "routes": [{"path": "/d", "proxy": {"upstream": "dead", "path": "/"}}]})
    assert_json_error(http.get(gw.url("/d")), 502, "upstream_unavailable")


def test_keep_alive_connections_reused(px):
    px.origin.get("/o/ka", {"ok": 1})
    for _ in range(6):
        r = raw_http(px.port, b"GET /px/ka HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        assert r.status == 200
    assert px.origin.request_count == 6
    assert px.origin.connections <= 2, f"{px.origin.connections} upstream connections for 6 requests"

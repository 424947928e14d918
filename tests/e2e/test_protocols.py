"""HTTP/2 (prior knowledge and TLS ALPN) and TLS listeners return the same documents."""
import json

import pytest

from harness import DEMO_BODY, curl, demo_config, upstream


@pytest.fixture
def gw(demo_backends, estuary):
    users, orders = demo_backends
    gw = estuary(demo_config(upstream(users), upstream(orders)), tls=True)
    gw.users = users
    return gw


def test_h2c_prior_knowledge(gw):
    r = curl("--http2-prior-knowledge", gw.url("/gateway/123/456"))
    assert r.version == "2"
    assert r.status == 200 and json.loads(r.body) == DEMO_BODY
    assert r.headers["x-estuary-completed"] == "true"


def test_tls_alpn_h2(gw, tls):
    r = curl("--http2", "--cacert", str(tls.ca_cert), gw.tls_url("/gateway/123/456"))
    assert r.version == "2"
    assert r.status == 200 and json.loads(r.body) == DEMO_BODY


def test_tls_http11(gw, tls):
    r = curl("--http1.1", "--cacert", str(tls.ca_cert), gw.tls_url("/gateway/123/456"))
    assert r.version == "1.1"
    assert r.status == 200 and json.loads(r.body) == DEMO_BODY


def test_tls_h2_insecure_by_ip(gw):
    r = curl("--http2", "-k", gw.tls_url("/gateway/123/456", host="127.0.0.1"))
    assert r.version == "2" and json.loads(r.body) == DEMO_BODY


def test_tls_sets_forwarded_proto_https(gw, tls):
    r = curl("--cacert", str(tls.ca_cert), gw.tls_url("/api/users/5"))
    assert r.status == 200 and json.loads(r.body) == {"id": "5", "name": "user5"}
    assert gw.users.last.headers["X-Forwarded-Proto"] == "https"


def test_h2_errors_are_json(gw):
    r = curl("--http2-prior-knowledge", gw.url("/nope"))
    assert r.status == 404 and json.loads(r.body)["error"]["code"] == "route_not_found"


def test_h2_post_body(backend, estuary, tls):
    a = backend("a")
    a.route("POST", "/in", {"ok": True})
    gw = estuary({"upstreams": {"a": {"targets": [a.url]}},
                  "routes": [{"path": "/in", "methods": ["POST"],
                              "backends": [{"upstream": "a", "path": "/in", "group": "a"}]}]}, tls=True)
    r = curl("--http2", "--cacert", str(tls.ca_cert), "--data-binary", "payload-h2", gw.tls_url("/in"))
    assert r.version == "2" and r.status == 200 and json.loads(r.body) == {"a": {"ok": True}}
    assert a.last.body == b"payload-h2"


def test_proxy_route_over_h2c(gw):
    r = curl("--http2-prior-knowledge", gw.url("/api/users/9"))
    assert r.version == "2" and json.loads(r.body) == {"id": "9", "name": "user9"}

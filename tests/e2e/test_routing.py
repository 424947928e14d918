"""Route matching and the errors estuary produces itself (404, 405, 413, 400)."""
import pytest

from harness import REQUEST_ID_RE, assert_json_error, json_reply, raw_http


@pytest.fixture
def gw(backend, estuary):
    b = backend("echo")
    b.route("*", "/{rest...}", json_reply(lambda p: {"rest": p["rest"]}))
    gw = estuary({
        "max_request_body": "1KiB",
        "upstreams": {"svc": {"targets": [b.url]}},
        "routes": [
            {"path": "/items/special", "backends": [{"upstream": "svc", "path": "/literal", "group": "g"}]},
            {"path": "/items/{id}", "backends": [{"upstream": "svc", "path": "/param/{id}", "group": "g"}]},
            {"path": "/items/{id}/{rest...}", "backends": [{"upstream": "svc", "path": "/rest/{rest...}",
                                                           "group": "g"}]},
            {"path": "/files/{rest...}", "backends": [{"upstream": "svc", "path": "/files/{rest...}",
                                                      "group": "g"}]},
            {"path": "/submit", "methods": ["post", "PUT"],
             "backends": [{"upstream": "svc", "path": "/submit", "group": "g"}]},
            {"path": "/slash/", "backends": [{"upstream": "svc", "path": "/slash", "group": "g"}]},
        ]})
    gw.backend = b
    return gw


def get(gw, path, extra=b""):
    return raw_http(gw.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + extra +
                    b"Connection: close\r\n\r\n")


def test_literal_beats_parameter_beats_rest(gw, http):
    assert http.get(gw.url("/items/special")).json() == {"g": {"rest": "literal"}}
    assert http.get(gw.url("/items/42")).json() == {"g": {"rest": "param/42"}}
    assert http.get(gw.url("/items/42/a/b")).json() == {"g": {"rest": "rest/a/b"}}


def test_rest_parameter_may_be_empty(gw, http):
    assert http.get(gw.url("/files/")).json() == {"g": {"rest": "files/"}}
    assert http.get(gw.url("/files/x/y.txt")).json() == {"g": {"rest": "files/x/y.txt"}}


def test_no_route_is_404_json(gw, http):
    r = http.get(gw.url("/nowhere"), headers={"X-Request-Id": "req-404"})
    err = assert_json_error(r, 404, "route_not_found")
    assert err["request_id"] == "req-404"
    assert r.headers["X-Request-Id"] == "req-404"


def test_trailing_slash_is_significant(gw, http):
    assert http.get(gw.url("/slash/")).status == 200
    assert_json_error(http.get(gw.url("/slash")), 404, "route_not_found")
    # "/items/42/" matches "/items/{id}/{rest...}" with an empty rest
    assert http.get(gw.url("/items/42/")).json() == {"g": {"rest": "rest/"}}


def test_wrong_method_is_405_with_allow(gw, http):
    r = http.get(gw.url("/submit"))
    err = assert_json_error(r, 405, "method_not_allowed")
    assert REQUEST_ID_RE.match(err["request_id"])
    allow = {m.strip().upper() for m in r.headers["Allow"].split(",")}
    assert {"POST", "PUT"} <= allow and "GET" not in allow
    r = http.request("DELETE", gw.url("/items/1"))
    assert_json_error(r, 405, "method_not_allowed")
    assert "GET" in {m.strip().upper() for m in r.headers["Allow"].split(",")}


def test_methods_are_case_insensitive_in_config(gw, http):
    r = http.post(gw.url("/submit"), data=b"{}")
    assert r.status == 200 and r.json() == {"g": {"rest": "submit"}}


def test_request_methods_are_case_sensitive(gw):
    # RFC 9110 9.1: "get" is not GET (nor a method the route allows), whatever the config says
    r = raw_http(gw.port, b"get /items/1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert_json_error(r, 405, "method_not_allowed")
    assert gw.backend.request_count == 0
    r = raw_http(gw.port, b"post /submit HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert_json_error(r, 405, "method_not_allowed")
    assert get(gw, "/items/1").status == 200


def test_body_over_max_request_body_is_413(gw):
    body = b"x" * 2048
    r = raw_http(gw.port, b"POST /submit HTTP/1.1\r\nHost: gw\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: 2048\r\nConnection: close\r\n\r\n" + body)
    assert_json_error(r, 413, "request_too_large")


def test_body_at_max_request_body_is_accepted(gw):
    body = b"y" * 1024
    r = raw_http(gw.port, b"POST /submit HTTP/1.1\r\nHost: gw\r\nContent-Length: 1024\r\n"
                 b"Connection: close\r\n\r\n" + body)
    assert r.status == 200, r.body


def test_dot_segments_are_resolved(gw):
    assert get(gw, "/files/a/../b").json() == {"g": {"rest": "files/b"}}
    assert get(gw, "/nowhere/../items/special").json() == {"g": {"rest": "literal"}}


def test_path_above_root_is_400(gw):
    assert_json_error(get(gw, "/../items/special"), 400)
    assert_json_error(get(gw, "/files/../../etc/passwd"), 400)


def test_encoded_slash_stays_in_one_segment(gw):
    r = get(gw, "/items/a%2Fb")
    assert r.status == 200, r.body  # one segment: "/items/{id}", not "/items/{id}/{rest...}"
    assert gw.backend.last.raw_path == "/param/a%2Fb"  # forwarded encoded, as it came


def test_upgrade_on_non_websocket_route_is_400(gw):
    r = raw_http(gw.port, b"GET /items/1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert_json_error(r, 400, "upgrade_not_allowed")

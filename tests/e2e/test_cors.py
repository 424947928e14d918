"""CORS per route (SPEC "Access control and traffic policy", docs/cors.md): preflights answered by
estuary (204 / 403, never a backend call), allowed origins echoed with Vary: Origin on every reply of
a route with "cors", errors included; nothing for a disallowed origin or a route without "cors"."""
import time

import pytest

from harness import (assert_json_error, body_reply, curl, delayed, echo_reply, free_port, json_reply,
                     raw_http)

APP = "https://app.example"
DEV = "http://localhost:8080"
EVIL = "https://evil.example"


def acx(resp):
    """The reply's Access-Control-* headers, lower-case names."""
    return {k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("access-control-")}


def vary_has_origin(resp):
    values = ", ".join(resp.header_list("Vary"))
    return "origin" in [v.strip().lower() for v in values.split(",")]


def preflight(http, url, origin=APP, method="POST", headers=None, extra=None):
    h = {"Access-Control-Request-Method": method}
    if origin is not None:
        h["Origin"] = origin
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    h.update(extra or {})
    return http.request("OPTIONS", url, headers=h)


@pytest.fixture
def gw(backend, estuary):
    """Routes:
      /c/list   GET, POST (no OPTIONS): cors listing two origins, one header, expose headers,
                credentials, max_age 10m
      /c/any    GET, PUT, OPTIONS: cors "*" restricted to GET, PUT (OPTIONS goes through the gate)
      /c/star   GET, POST: cors with "headers": ["*"]
      /c/dead   GET: cors, the upstream refuses connections (502)
      /c/slow   GET: cors, the backend answers after 3 s, route timeout 300ms (504)
      /c/agg    GET: aggregating route with cors
      /open     GET, OPTIONS: no cors
    """
    b = backend("cors")
    b.route("*", "/list", echo_reply())
    b.route("*", "/any", echo_reply())
    b.route("*", "/star", echo_reply())
    b.route("*", "/slow", delayed(3, {"late": True}))
    b.route("*", "/agg", json_reply({"ok": True}))
    b.route("*", "/open", echo_reply())
    b.route("*", "/own-cors", body_reply(b"{}", content_type="application/json", headers={
        "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Backend", "X-Backend": "1"}))
    cors_list = {"origins": [APP, DEV], "headers": ["X-Token"], "expose_headers": ["X-Total", "X-Page"],
                 "credentials": True, "max_age": "10m"}
    gw = estuary({
        "upstreams": {"b": {"targets": [b.url]},
                      "dead": {"targets": [f"http://127.0.0.1:{free_port()}"]}},
        "routes": [
            {"path": "/c/list", "methods": ["GET", "POST"], "cors": cors_list,
             "proxy": {"upstream": "b", "path": "/list"}},
            {"path": "/c/own", "methods": ["GET"], "cors": cors_list,
             "proxy": {"upstream": "b", "path": "/own-cors"}},
            {"path": "/c/any", "methods": ["GET", "PUT", "OPTIONS"],
             "cors": {"origins": ["*"], "methods": ["GET", "PUT"]},
             "proxy": {"upstream": "b", "path": "/any"}},
            {"path": "/c/star", "methods": ["GET", "POST"], "cors": {"origins": [APP], "headers": ["*"]},
             "proxy": {"upstream": "b", "path": "/star"}},
            {"path": "/c/dead", "cors": {"origins": [APP]}, "proxy": {"upstream": "dead", "path": "/x"}},
            {"path": "/c/slow", "timeout": "300ms", "cors": {"origins": [APP]},
             "proxy": {"upstream": "b", "path": "/slow"}},
            {"path": "/c/agg", "cors": {"origins": [APP]},
             "backends": [{"upstream": "b", "path": "/agg", "group": "a"}]},
            {"path": "/open", "methods": ["GET", "OPTIONS"], "proxy": {"upstream": "b", "path": "/open"}},
        ]})
    gw.b = b
    return gw


# ---- simple (non-preflight) requests


def test_allowed_origin_gets_headers_and_backend_is_called(gw, http):
    for origin in (APP, DEV):
        gw.b.reset_counters()
        r = http.get(gw.url("/c/list"), headers={"Origin": origin})
        assert r.status == 200
        assert acx(r) == {"access-control-allow-origin": origin, "access-control-allow-credentials": "true",
                          "access-control-expose-headers": "X-Total, X-Page"}
        assert vary_has_origin(r)
        assert gw.b.request_count == 1 and gw.b.last.headers["Origin"] == origin


def test_disallowed_origin_gets_no_cors_headers_but_backend_is_called(gw, http):
    r = http.post(gw.url("/c/list"), data=b"{}", headers={"Origin": EVIL})
    assert r.status == 200 and r.json()["method"] == "POST"
    assert acx(r) == {}
    assert vary_has_origin(r)
    assert gw.b.request_count == 1


@pytest.mark.parametrize("origin", [
    "https://APP.example",          # compared byte for byte, as browsers serialize it
    "https://app.example/",         # not a serialized origin
    "https://app.example:443",
    "http://app.example",
    "https://app.example.evil.example",
    "https://app.exampl",
    "null",                         # opaque origins: never matched unless listed
    "https://app.example https://evil.example",
    "",
])
def test_origin_match_is_exact(gw, http, origin):
    r = http.get(gw.url("/c/list"), headers={"Origin": origin})
    assert r.status == 200 and acx(r) == {} and vary_has_origin(r)


def test_duplicate_origin_header_is_not_trusted(gw):
    req = (f"GET /c/list HTTP/1.1\r\nHost: x\r\nOrigin: {APP}\r\nOrigin: {EVIL}\r\n"
           "Connection: close\r\n\r\n").encode()
    r = raw_http(gw.port, req)
    assert r.status == 200 and acx(r) == {} and vary_has_origin(r)


def test_no_origin_still_varies(gw, http):
    r = http.get(gw.url("/c/list"))
    assert r.status == 200 and acx(r) == {} and vary_has_origin(r)


def test_any_origin_answers_star_without_credentials(gw, http):
    r = http.get(gw.url("/c/any"), headers={"Origin": EVIL})
    assert r.status == 200
    assert acx(r) == {"access-control-allow-origin": "*"}
    assert vary_has_origin(r)
    r = http.get(gw.url("/c/any"), headers={"Origin": "null"})
    assert acx(r) == {}, "the null origin must be listed, '*' does not cover it"


def test_route_without_cors_and_unknown_path_get_nothing(gw, http):
    r = http.get(gw.url("/open"), headers={"Origin": APP})
    assert r.status == 200 and acx(r) == {} and not vary_has_origin(r)
    r = preflight(http, gw.url("/open"), method="GET")
    assert r.status == 200 and acx(r) == {}, "a route without cors passes OPTIONS to its backend"
    assert gw.b.last.method == "OPTIONS"
    # a 404 has no route, hence no cors policy (docs/cors.md)
    r = http.get(gw.url("/nowhere"), headers={"Origin": APP})
    assert_json_error(r, 404, "route_not_found")
    assert acx(r) == {} and not vary_has_origin(r)


def test_backend_cors_headers_are_replaced_on_a_cors_route(gw, http):
    r = http.get(gw.url("/c/own"), headers={"Origin": EVIL})
    assert r.status == 200 and r.headers["X-Backend"] == "1"
    assert acx(r) == {}, "the backend's own Access-Control-* must not pass on a cors route"
    r = http.get(gw.url("/c/own"), headers={"Origin": APP})
    assert r.header_list("Access-Control-Allow-Origin") == [APP]
    assert r.header_list("Access-Control-Allow-Credentials") == ["true"]
    assert r.header_list("Access-Control-Expose-Headers") == ["X-Total, X-Page"]


# ---- errors on a cors route keep the headers


def test_502_from_dead_upstream_keeps_cors_headers(gw, http):
    r = http.get(gw.url("/c/dead"), headers={"Origin": APP})
    assert_json_error(r, 502, "upstream_unavailable")
    assert acx(r) == {"access-control-allow-origin": APP} and vary_has_origin(r)


def test_504_timeout_keeps_cors_headers(gw, http):
    r = http.get(gw.url("/c/slow"), headers={"Origin": APP})
    assert_json_error(r, 504, "upstream_timeout")
    assert r.elapsed < 2.5
    assert acx(r) == {"access-control-allow-origin": APP} and vary_has_origin(r)


def test_aggregate_route_carries_cors_headers(gw, http):
    r = http.get(gw.url("/c/agg"), headers={"Origin": APP})
    assert r.status == 200 and r.json() == {"a": {"ok": True}}
    assert acx(r) == {"access-control-allow-origin": APP} and vary_has_origin(r)


# ---- preflights


def test_preflight_on_route_without_options(gw, http):
    r = preflight(http, gw.url("/c/list"), method="POST", headers="X-Token, Content-Type")
    assert r.status == 204 and r.body == b""
    assert "Content-Length" not in r.headers  # RFC 9110 §8.6
    h = acx(r)
    assert h["access-control-allow-origin"] == APP
    assert h["access-control-allow-credentials"] == "true"
    assert [m.strip() for m in h["access-control-allow-methods"].split(",")] == ["GET", "HEAD", "POST"]
    assert h["access-control-allow-headers"] == "x-token,content-type"
    assert h["access-control-max-age"] == "600"
    assert "access-control-expose-headers" not in h
    assert vary_has_origin(r) and r.headers.get("X-Request-Id")
    assert gw.b.request_count == 0, "a preflight must not reach the backend"


def test_preflight_without_request_headers_and_safelisted_ones(gw, http):
    r = preflight(http, gw.url("/c/list"), method="GET")
    assert r.status == 204 and "access-control-allow-headers" not in acx(r)
    # safelisted names need no listing; repeats, case and empty elements are folded
    r = preflight(http, gw.url("/c/list"), method="GET",
                  headers="accept, Accept-Language,,content-language , x-token,X-TOKEN,range")
    assert r.status == 204
    assert acx(r)["access-control-allow-headers"] == "accept,accept-language,content-language,x-token,range"
    # several Access-Control-Request-Headers fields make one list
    req = (f"OPTIONS /c/list HTTP/1.1\r\nHost: x\r\nOrigin: {APP}\r\nAccess-Control-Request-Method: GET\r\n"
           "Access-Control-Request-Headers: x-token\r\nAccess-Control-Request-Headers: content-type\r\n"
           "Connection: close\r\n\r\n").encode()
    r = raw_http(gw.port, req)
    assert r.status == 204 and r.headers["Access-Control-Allow-Headers"] == "x-token,content-type"
    assert gw.b.request_count == 0


def test_preflight_on_route_with_options_is_answered_by_the_gate(gw, http):
    r = preflight(http, gw.url("/c/any"), origin=EVIL, method="PUT")
    assert r.status == 204
    h = acx(r)
    assert h["access-control-allow-origin"] == "*"
    assert [m.strip() for m in h["access-control-allow-methods"].split(",")] == ["GET", "HEAD", "PUT"]
    assert "access-control-allow-credentials" not in h and "access-control-max-age" not in h
    assert gw.b.request_count == 0
    # OPTIONS that is not a preflight (no Access-Control-Request-Method) goes to the backend
    r = http.request("OPTIONS", gw.url("/c/any"), headers={"Origin": EVIL})
    assert r.status == 200 and r.json()["method"] == "OPTIONS"
    assert acx(r) == {"access-control-allow-origin": "*"}
    assert gw.b.request_count == 1


@pytest.mark.parametrize("path,kw,why", [
    ("/c/list", {"origin": EVIL}, "origin"),
    ("/c/list", {"origin": "null"}, "origin"),
    ("/c/list", {"origin": APP.upper()}, "origin"),
    ("/c/list", {"headers": "x-token, x-other"}, "header"),
    ("/c/list", {"headers": "x-token, bad name"}, "malformed"),
    ("/c/list", {"headers": "x-token;"}, "malformed"),
    ("/c/any", {"method": "DELETE"}, "method"),   # the route's OPTIONS reaches the gate: 403
    ("/c/any", {"method": "OPTIONS"}, "method"),  # cors.methods narrows the route's methods
    ("/c/any", {"method": "put"}, "method"),      # method names are case-sensitive
    ("/c/any", {"method": ""}, "method"),
])
def test_refused_preflight_is_403_without_cors_headers(gw, http, path, kw, why):
    r = preflight(http, gw.url(path), **kw)
    err = assert_json_error(r, 403, "forbidden")
    assert why in err["message"]
    assert acx(r) == {}
    assert gw.b.request_count == 0


def test_preflight_for_a_method_no_route_serves_is_the_usual_405(gw, http):
    r = preflight(http, gw.url("/c/list"), method="DELETE")
    assert_json_error(r, 405, "method_not_allowed")
    assert acx(r) == {}
    assert gw.b.request_count == 0


def test_star_headers_echo_what_was_asked(gw, http):
    r = preflight(http, gw.url("/c/star"), method="POST", headers="X-Anything, x-b, X-ANYTHING")
    assert r.status == 204
    assert acx(r)["access-control-allow-headers"] == "x-anything,x-b,x-anything"
    assert "access-control-allow-credentials" not in acx(r)


def test_preflight_over_http2(gw):
    r = curl("--http2-prior-knowledge", "-X", "OPTIONS", "-H", f"Origin: {APP}",
             "-H", "Access-Control-Request-Method: POST", "-H", "Access-Control-Request-Headers: x-token",
             gw.url("/c/list"))
    assert r.version == "2" and r.status == 204 and r.body == b""
    assert "content-length" not in {k.lower() for k in r.headers}
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-allow-headers"] == "x-token"
    assert gw.b.request_count == 0


# ---- hostile input


def test_ten_thousand_requested_headers_are_cheap(gw, http):
    def b36(i):
        s = ""
        while True:
            i, d = divmod(i, 36)
            s = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + s
            if i == 0:
                return s
    names = [f"h{b36(i)}" for i in range(10000)]
    value = ",".join(names)
    assert len(value) < 60000  # under the 64 KiB request head limit
    t0 = time.monotonic()
    req = (f"OPTIONS /c/star HTTP/1.1\r\nHost: x\r\nOrigin: {APP}\r\nAccess-Control-Request-Method: GET\r\n"
           f"Access-Control-Request-Headers: {value}\r\nConnection: close\r\n\r\n").encode()
    r = raw_http(gw.port, req)  # the answer's head is as long as the list: over aiohttp's 8 KiB
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Headers"] == value
    # the same count of allowed names, all repeats: one answer name
    r = preflight(http, gw.url("/c/list"), method="GET", headers=",".join(["X-Token"] * 6000))
    assert r.status == 204 and r.headers["Access-Control-Allow-Headers"] == "x-token"
    # not allowed: refused at the first unknown name, which is quoted bounded
    r = preflight(http, gw.url("/c/list"), method="GET", headers=",".join(names))
    err = assert_json_error(r, 403, "forbidden")
    assert len(err["message"]) < 200
    assert time.monotonic() - t0 < 3
    assert gw.b.request_count == 0


def test_huge_origin_is_refused_and_never_reflected(gw, http):
    origin = APP + "." + "a" * 8000
    r = http.get(gw.url("/c/list"), headers={"Origin": origin})
    assert r.status == 200 and acx(r) == {}
    r = preflight(http, gw.url("/c/list"), origin=origin)
    assert_json_error(r, 403, "forbidden")
    assert acx(r) == {} and b"aaaaaaaa" not in r.body
    r = http.get(gw.url("/c/any"), headers={"Origin": origin})
    assert acx(r) == {"access-control-allow-origin": "*"}


def test_non_token_bytes_in_a_requested_name_are_refused_as_valid_json(gw):
    req = (b"OPTIONS /c/list HTTP/1.1\r\nHost: x\r\nOrigin: " + APP.encode() +
           b"\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: x-token, x-\xff\xfe\"\r\n"
           b"Connection: close\r\n\r\n")
    r = raw_http(gw.port, req)
    err = assert_json_error(r, 403, "forbidden")
    assert "malformed" in err["message"] and "\ufffd" in err["message"]
    assert acx(r) == {}
    assert gw.b.request_count == 0


# ---- with auth and a rate limit on the route: CORS runs first, its headers stay on 401 / 429


@pytest.fixture
def guarded(backend, estuary, tmp_path):
    """/g (no OPTIONS: preflights answered by the front end) and /go (OPTIONS listed: by the gate):
    API key (X-Api-Key) + a rate limit of 1 request per minute per route, no burst; cors for APP."""
    b = backend("guarded")
    b.route("*", "/g", echo_reply())
    keys = tmp_path / "keys.txt"
    keys.write_text("k-good-1234567890\n")
    gw = estuary({
        "auth": {"api_keys": {"partners": {"header": "X-Api-Key", "keys_file": str(keys)}}},
        "rate_limits": {"one": {"rate": 1, "per": "1m", "burst": 0, "key": "route"}},
        "upstreams": {"b": {"targets": [b.url]}},
        "routes": [{"path": "/g", "methods": ["GET", "POST"], "auth": ["partners"], "rate_limit": "one",
                    "cors": {"origins": [APP], "headers": ["X-Api-Key"], "credentials": True},
                    "proxy": {"upstream": "b", "path": "/g"}},
                   {"path": "/go", "methods": ["GET", "POST", "OPTIONS"], "auth": ["partners"], "rate_limit": "one",
                    "cors": {"origins": [APP], "headers": ["X-Api-Key"], "credentials": True},
                    "proxy": {"upstream": "b", "path": "/g"}}]})
    gw.b = b
    return gw


@pytest.mark.parametrize("path", ["/g", "/go"])
def test_preflight_needs_no_credentials_and_spends_no_rate(guarded, http, path):
    for _ in range(3):  # over the limit of 1 if a preflight were counted
        r = preflight(http, guarded.url(path), method="POST", headers="x-api-key, content-type")
        assert r.status == 204, r.body
        assert acx(r)["access-control-allow-origin"] == APP
        assert "WWW-Authenticate" not in r.headers and "RateLimit" not in r.headers
    assert guarded.b.request_count == 0
    # the one request the limit admits is still there
    r = http.get(guarded.url(path), headers={"Origin": APP, "X-Api-Key": "k-good-1234567890"})
    assert r.status == 200 and acx(r)["access-control-allow-origin"] == APP
    assert guarded.b.request_count == 1


def test_401_and_429_keep_cors_headers(guarded, http):
    r = http.get(guarded.url("/g"), headers={"Origin": APP})
    assert_json_error(r, 401, "unauthorized")
    assert acx(r) == {"access-control-allow-origin": APP, "access-control-allow-credentials": "true"}
    assert vary_has_origin(r)
    r = http.get(guarded.url("/g"), headers={"Origin": APP, "X-Api-Key": "k-good-1234567890"})
    assert r.status == 200
    r = http.get(guarded.url("/g"), headers={"Origin": APP, "X-Api-Key": "k-good-1234567890"})
    assert_json_error(r, 429, "rate_limited")
    assert acx(r) == {"access-control-allow-origin": APP, "access-control-allow-credentials": "true"}
    assert vary_has_origin(r)
    # a refused origin gets the same errors without CORS headers
    r = http.get(guarded.url("/g"), headers={"Origin": EVIL})
    assert_json_error(r, 401, "unauthorized")
    assert acx(r) == {} and vary_has_origin(r)
    assert guarded.b.request_count == 1

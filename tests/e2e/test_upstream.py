"""Upstream client behaviour seen from outside: retries, balancing, TLS to backends."""
from harness import assert_json_error, json_reply, status_reply


def flaky(fail_times: int, status: int = 503):
    """503 for the first `fail_times` requests, then 200 {"ok": n}."""
    state = {"n": 0}
    ok, bad = json_reply(lambda p: {"ok": state["n"]}), status_reply(status)

    async def h(request):
        state["n"] += 1
        return await (bad if state["n"] <= fail_times else ok)(request)
    return h


def route_to(upstream_conf, group="g", **route):
    return {"upstreams": {"u": upstream_conf},
            "routes": [dict({"path": "/x", "backends": [{"upstream": "u", "path": "/r", "group": group}]},
                            **route)]}


def test_retry_on_listed_status(backend, estuary, http):
    b = backend("flaky")
    b.get("/r", flaky(2))
    gw = estuary(route_to({"targets": [b.url], "retry": {"attempts": 3, "backoff": "10ms", "on": ["503"]}}))
    r = http.get(gw.url("/x"))
    assert r.status == 200 and r.json() == {"g": {"ok": 3}}
    assert b.request_count == 3


def test_no_retry_on_status_not_listed(backend, estuary, http):
    b = backend("flaky")
    b.get("/r", flaky(1))
    gw = estuary(route_to({"targets": [b.url]}, on_error="fail"))  # default retry.on: connect_failure, reset
    assert_json_error(http.get(gw.url("/x")), 502, "upstream_unavailable")
    assert b.request_count == 1


def test_retry_moves_to_another_target(backend, estuary, http):
    bad, good = backend("bad"), backend("good")
    bad.get("/r", status_reply(503))
    good.get("/r", {"from": "good"})
    gw = estuary(route_to({"targets": [bad.url, good.url],
                           "retry": {"attempts": 2, "backoff": "10ms", "on": ["503"]}}))
    for _ in range(4):
        r = http.get(gw.url("/x"))
        assert r.status == 200 and r.json() == {"g": {"from": "good"}}
    assert good.request_count == 4


def test_round_robin_over_targets(backend, estuary, http):
    b1, b2 = backend("one"), backend("two")
    b1.get("/r", {"t": 1})
    b2.get("/r", {"t": 2})
    gw = estuary(route_to({"targets": [b1.url, b2.url]}))
    seen = [http.get(gw.url("/x")).json()["g"]["t"] for _ in range(6)]
    assert b1.request_count == 3 and b2.request_count == 3, seen


def test_https_upstream_verified_with_ca_file(backend, estuary, http, tls):
    b = backend("tls", ssl_ctx=tls.server_context())
    b.get("/r", {"secure": True})
    gw = estuary(route_to({"targets": [f"https://localhost:{b.port}"], "tls": {"ca_file": str(tls.ca_cert)}}),
                 hosts=True)
    r = http.get(gw.url("/x"))
    assert r.status == 200 and r.json() == {"g": {"secure": True}}


def test_https_upstream_untrusted_cert_fails(backend, estuary, http, tls):
    b = backend("selfsigned", ssl_ctx=tls.server_context(selfsigned=True))
    b.get("/r", {"secure": True})
    gw = estuary(route_to({"targets": [f"https://localhost:{b.port}"], "tls": {"ca_file": str(tls.ca_cert)}}),
                 hosts=True)
    assert_json_error(http.get(gw.url("/x")), 502, "upstream_unavailable")
    assert b.request_count == 0


def test_https_upstream_wrong_name_fails(backend, estuary, http, tls):
    """The CA-signed cert is for localhost/127.0.0.1; server_name 'other.test' must not match."""
    b = backend("tls", ssl_ctx=tls.server_context())
    b.get("/r", {"secure": True})
    gw = estuary(route_to({"targets": [f"https://localhost:{b.port}"],
                           "tls": {"ca_file": str(tls.ca_cert), "server_name": "other.test"}}), hosts=True)
    assert_json_error(http.get(gw.url("/x")), 502, "upstream_unavailable")
    assert b.request_count == 0


def test_https_upstream_verify_off(backend, estuary, http, tls):
    b = backend("selfsigned", ssl_ctx=tls.server_context(selfsigned=True))
    b.get("/r", {"secure": "unverified"})
    gw = estuary(route_to({"targets": [b.url], "tls": {"verify": False}}))
    r = http.get(gw.url("/x"))
    assert r.status == 200 and r.json() == {"g": {"secure": "unverified"}}

"""Upstream client under stress and failure (issue 3): pool bound over many requests, retries
with attempt counts, idempotency, deadline, round robin with retries, passive ejection of a
dead target / address, IP-literal targets without DNS, self-signed certificates.

What test_upstream.py and test_dns.py already prove (listed-status retries, round robin
without failures, CA-verified TLS, TTL cache, NXDOMAIN, stale answers) is not repeated here.
"""
import json
import re
import time

from harness import assert_json_error, delayed, free_port, json_reply, reset_reply, status_reply, wait_until


def read_access_log(path, n):
    def lines():
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        ls = [json.loads(x) for x in text.splitlines()]
        return ls if len(ls) >= n else None
    return wait_until(lines, timeout=5, what=f"{n} access log line(s)")


def failing_first(n_fail, fail_handler, ok_obj):
    """A handler failing the first `n_fail` requests with `fail_handler`, then answering ok_obj."""
    state = {"n": 0}
    ok = json_reply(ok_obj)

    async def h(request):
        state["n"] += 1
        return await (fail_handler if state["n"] <= n_fail else ok)(request)
    return h


def every_nth_fails(n, fail_handler, ok_obj):
    """Fails (with `fail_handler`) every n-th request the backend receives."""
    state = {"n": 0}
    ok = json_reply(ok_obj)

    async def h(request):
        state["n"] += 1
        return await (fail_handler if state["n"] % n == 0 else ok)(request)
    return h


def proxy_cfg(upstream_conf, methods=None, timeout=None, **top):
    route = {"path": "/p", "proxy": {"upstream": "u", "path": "/r"}}
    if methods:
        route["methods"] = methods
    if timeout:
        route["timeout"] = timeout
    return dict({"upstreams": {"u": upstream_conf}, "routes": [route]}, **top)


def dead_attempt_lines(gw, port):
    return re.findall(rf"attempt \d+ to 127\.0\.0\.1:{port} failed: connect_failure", gw.stderr())


# ------------------------------------------------------------------ pool


def test_1000_sequential_requests_stay_within_max_connections(backend, estuary, http):
    b = backend("pool")
    b.get("/r", {"ok": True})
    gw = estuary(proxy_cfg({"targets": [b.url], "pool": {"max_connections": 2, "max_idle": 2}}))
    for i in range(1000):
        r = http.get(gw.url("/p"))
        assert r.status == 200, (i, r.status, r.body)
    assert b.request_count == 1000
    assert b.connections in (1, 2), f"{b.connections} upstream connections for 1000 requests"


# ------------------------------------------------------------------ retries


def test_reset_twice_then_200_after_3_attempts(backend, estuary, http):
    b = backend("resets")
    b.get("/r", failing_first(2, reset_reply(), {"ok": 3}))
    gw = estuary(proxy_cfg({"targets": [b.url], "retry": {"attempts": 3, "backoff": "5ms", "on": ["reset"]}},
                           access_log="access.log"))
    r = http.get(gw.url("/p"))
    assert r.status == 200 and r.json() == {"ok": 3}
    assert b.request_count == 3
    (line,) = read_access_log(gw.workdir / "access.log", 1)
    assert line["upstreams"][0]["attempt"] == 3, line


def test_503_twice_then_200_after_3_attempts(backend, estuary, http):
    b = backend("busy")
    b.get("/r", failing_first(2, status_reply(503), {"ok": 3}))
    gw = estuary(proxy_cfg({"targets": [b.url], "retry": {"attempts": 3, "backoff": "5ms", "on": ["503"]}},
                           access_log="access.log"))
    r = http.get(gw.url("/p"))
    assert r.status == 200 and r.json() == {"ok": 3}
    (line,) = read_access_log(gw.workdir / "access.log", 1)
    assert line["upstreams"][0]["attempt"] == 3 and line["upstreams"][0]["status"] == 200, line


def test_post_reset_after_body_is_not_retried(backend, estuary, http):
    b = backend("post")
    b.route("POST", "/r", reset_reply())  # the test backend reads the whole body first
    gw = estuary(proxy_cfg({"targets": [b.url], "retry": {"attempts": 3, "backoff": "5ms",
                                                          "on": ["connect_failure", "reset", "502"]}},
                           methods=["POST"]))
    r = http.post(gw.url("/p"), data=b'{"order": 1}')
    assert_json_error(r, 502, "upstream_unavailable")
    assert b.request_count == 1
    assert b.last.body == b'{"order": 1}'


def test_hung_backend_is_504_within_the_route_timeout(backend, estuary, http):
    b = backend("hung")
    b.get("/r", delayed(30, {"late": True}))
    # retries on timeout and a response_timeout longer than the route: the deadline must win
    gw = estuary(proxy_cfg({"targets": [b.url], "response_timeout": "10s",
                            "retry": {"attempts": 5, "backoff": "5ms", "on": ["timeout", "reset"]}},
                           timeout="700ms"))
    t0 = time.monotonic()
    r = http.get(gw.url("/p"))
    elapsed = time.monotonic() - t0
    assert_json_error(r, 504, "upstream_timeout")
    assert 0.6 <= elapsed < 2.0, elapsed
    assert b.request_count == 1


def test_each_failed_attempt_logged_and_lone_request_keeps_its_retries(estuary, http):
    """Debug log: one line per failed attempt with its reason. A lone failing request still
    gets all its attempts (the retry budget's minimum is 3 concurrent retries)."""
    dead = free_port()
    gw = estuary(proxy_cfg({"targets": [f"http://127.0.0.1:{dead}"],
                            "retry": {"attempts": 3, "backoff": "1ms", "on": ["connect_failure"]}}),
                 env={"ESTUARY_LOG_LEVEL": "debug"})
    assert_json_error(http.get(gw.url("/p")), 502, "upstream_unavailable")
    wait_until(lambda: len(dead_attempt_lines(gw, dead)) >= 3, timeout=5, what="3 failed-attempt debug lines")
    assert len(dead_attempt_lines(gw, dead)) == 3
    assert "retry budget" not in gw.stderr()


# ------------------------------------------------------------------ balancing and ejection


def test_round_robin_within_10_percent_with_retries(backend, estuary, http):
    b1, b2 = backend("one"), backend("two")
    b1.get("/r", every_nth_fails(5, reset_reply(), {"t": 1}))
    b2.get("/r", every_nth_fails(5, reset_reply(), {"t": 2}))
    gw = estuary(proxy_cfg({"targets": [b1.url, b2.url],
                            "retry": {"attempts": 3, "backoff": "1ms", "on": ["reset"]}}))
    served = {1: 0, 2: 0}
    for _ in range(200):
        r = http.get(gw.url("/p"))
        assert r.status == 200, r.body
        served[r.json()["t"]] += 1
    total = b1.request_count + b2.request_count
    assert total > 200  # retries happened
    assert abs(b1.request_count - b2.request_count) <= 0.1 * total, (b1.request_count, b2.request_count)
    assert abs(served[1] - served[2]) <= 20, served


def test_killed_target_is_ejected_and_route_keeps_answering(backend, estuary, http):
    b1, b2 = backend("alive"), backend("doomed")
    b1.get("/r", {"t": 1})
    b2.get("/r", {"t": 2})
    gw = estuary(proxy_cfg({"targets": [b1.url, b2.url],
                            "retry": {"attempts": 2, "backoff": "1ms", "on": ["connect_failure"]}}),
                 env={"ESTUARY_LOG_LEVEL": "debug"})
    for _ in range(10):
        assert http.get(gw.url("/p")).status == 200
    assert b2.request_count == 5
    port = b2.port
    b2.stop()
    t0 = time.monotonic()
    for i in range(100):
        r = http.get(gw.url("/p"))
        assert r.status == 200 and r.json() == {"t": 1}, (i, r.status, r.body)
    elapsed = time.monotonic() - t0
    assert f"127.0.0.1:{port} ejected" in gw.stderr()
    # 3 failures eject it for 1 s, then one half-open trial per period (1, 2, 4, 8 s ...)
    trials = 1 + int(elapsed >= 1) + int(elapsed >= 3) + int(elapsed >= 7) + int(elapsed >= 15)
    failed = len(dead_attempt_lines(gw, port))
    assert 3 <= failed <= 3 + trials, (failed, elapsed)


def test_address_that_stops_answering_is_skipped(dns, backend, estuary, http):
    """Both addresses of a name are used; when one dies the name keeps answering from the other."""
    b1 = backend("addr1", host="127.0.0.1")
    b1.get("/r", {"ip": 1})
    b2 = backend("addr2", host="127.0.0.2", port=b1.port)
    b2.get("/r", {"ip": 2})
    dns.set_a("two.test", ["127.0.0.1", "127.0.0.2"], ttl=300)
    gw = estuary(proxy_cfg({"targets": [f"http://two.test:{b1.port}"],
                            "retry": {"attempts": 2, "backoff": "1ms", "on": ["connect_failure"]}}),
                 env={"ESTUARY_LOG_LEVEL": "debug"})
    for _ in range(20):
        assert http.get(gw.url("/p")).status == 200
    assert b1.request_count == 10 and b2.request_count == 10
    b2.stop()
    for _ in range(40):
        r = http.get(gw.url("/p"))
        assert r.status == 200 and r.json() == {"ip": 1}, r.body
    assert "127.0.0.2:%d ejected" % b1.port in gw.stderr()
    assert dns.queries("two.test", "A") == 1


def test_least_request_uses_every_address_of_a_name(dns, backend, estuary, http):
    b1 = backend("lr1", host="127.0.0.1")
    b1.get("/r", delayed(0.3, {"ip": 1}))
    b2 = backend("lr2", host="127.0.0.2", port=b1.port)
    b2.get("/r", delayed(0.3, {"ip": 2}))
    dns.set_a("lr.test", ["127.0.0.1", "127.0.0.2"], ttl=300)
    gw = estuary(proxy_cfg({"targets": [f"http://lr.test:{b1.port}"], "balance": "least_request"}))
    rs = http.concurrent([("GET", gw.url("/p"), None, None) for _ in range(8)])
    assert all(r.status == 200 for r in rs), [r.status for r in rs]
    # 8 concurrent requests held 0.3 s each: least_request spreads them over both addresses
    assert b1.request_count + b2.request_count == 8
    assert abs(b1.request_count - b2.request_count) <= 2, (b1.request_count, b2.request_count)


# ------------------------------------------------------------------ DNS and TLS details


def test_ip_literal_targets_skip_dns(dns, backend, estuary, http):
    b = backend("literal")
    b.get("/r", {"ok": True})
    gw = estuary(proxy_cfg({"targets": [b.url]}))  # http://127.0.0.1:PORT
    for _ in range(3):
        assert http.get(gw.url("/p")).status == 200
    assert dns.query_log == []


def test_self_signed_backend_trusted_through_ca_file(backend, estuary, http, tls):
    b = backend("selfsigned", ssl_ctx=tls.server_context(selfsigned=True))
    b.get("/r", {"secure": True})
    url = f"https://localhost:{b.port}"
    untrusted = estuary(proxy_cfg({"targets": [url]}), hosts=True)  # system CA store
    assert_json_error(http.get(untrusted.url("/p")), 502, "upstream_unavailable")
    trusted = estuary(proxy_cfg({"targets": [url], "tls": {"ca_file": str(tls.selfsigned_cert)}}), hosts=True)
    r = http.get(trusted.url("/p"))
    assert r.status == 200 and r.json() == {"secure": True}
    assert b.request_count == 1


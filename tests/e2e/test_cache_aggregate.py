"""Response cache and request coalescing on aggregating routes (SPEC "Caching, coalescing and
hedging", docs/cache.md "Aggregating routes"): hit/miss with Age and Cache-Status, HEAD from a GET
entry, only complete replies stored (a partial or failed fan-out is not), the route ttl as the
lifetime (the backends' Cache-Control does not apply), coalescing of identical in-flight
requests (the merged body or the same error), stale-if-error, stale-while-revalidate with one
background refresh, admin purge and metrics."""
import asyncio
import json
import time

from aiohttp import web

from harness import free_port, upstream, wait_for_port, wait_until


def counting(name, status=200, delay=0.0, headers=None):
    """A backend handler answering {"src": name, "n": N} (N: this handler's request count);
    `status` / `delay` may be callables of N."""
    state = {"n": 0}

    async def h(request):
        state["n"] += 1
        n = state["n"]
        d = delay(n) if callable(delay) else delay
        if d:
            await asyncio.sleep(d)
        st = status(n) if callable(status) else status
        return web.Response(status=st, body=json.dumps({"src": name, "n": n}).encode(),
                            headers=dict(headers or {}, **{"Content-Type": "application/json"}))
    h.state = state
    return h


def gateway(backend, estuary, cache=None, admin=False, coalesce=None, **route_extra):
    """One aggregating route /agg/{id} over two backends (groups "a" and "b"), each its own upstream."""
    ba, bb = backend("a"), backend("b")
    route = dict({"path": "/agg/{id}", "timeout": "3s",
                  "backends": [{"upstream": "ua", "path": "/a/{id}", "group": "a"},
                               {"upstream": "ub", "path": "/b/{id}", "group": "b"}]}, **route_extra)
    if cache is not None:
        route["cache"] = cache
    if coalesce is not None:
        route["coalesce"] = coalesce
    cfg = {"upstreams": {"ua": upstream(ba, retry={"attempts": 1}), "ub": upstream(bb, retry={"attempts": 1})},
           "routes": [route]}
    if admin:
        cfg["admin"] = {"host": "127.0.0.1", "port": free_port()}
    gw = estuary(cfg)
    if admin:
        wait_for_port("127.0.0.1", cfg["admin"]["port"], 10, gw.proc)
        gw.admin = f"http://127.0.0.1:{cfg['admin']['port']}"
    gw.ba, gw.bb = ba, bb
    return gw


def test_miss_stored_then_hit_with_age(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.ba.get("/a/{id}", counting("a", headers={"Cache-Control": "no-store"}))
    gw.bb.get("/b/{id}", counting("b"))
    r = http.get(gw.url("/agg/1"))
    assert r.status == 200 and r.json() == {"a": {"src": "a", "n": 1}, "b": {"src": "b", "n": 1}}
    assert r.headers["X-Estuary-Completed"] == "true"
    # a backend's own Cache-Control (no-store here) does not apply to the merged document
    assert r.headers["Cache-Status"] == "estuary; fwd=uri-miss; fwd-status=200; stored"
    assert "Age" not in r.headers
    first = r.body
    r = http.get(gw.url("/agg/1"))
    assert r.status == 200 and r.body == first
    assert r.headers["Cache-Status"].startswith("estuary; hit; ttl=")
    assert int(r.headers["Age"]) >= 0
    assert r.headers["Content-Type"].startswith("application/json") and r.headers["X-Estuary-Completed"] == "true"
    assert gw.ba.request_count == 1 and gw.bb.request_count == 1
    # HEAD is answered from the GET entry, without its body
    r = http.request("HEAD", gw.url("/agg/1"))
    assert r.status == 200 and r.body == b"" and r.headers["Content-Length"] == str(len(first))
    assert r.headers["Cache-Status"].startswith("estuary; hit")
    # another path is another key
    assert http.get(gw.url("/agg/2")).json()["a"]["n"] == 2
    assert gw.ba.request_count == 2 and gw.bb.request_count == 2


def test_partial_reply_not_stored(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.ba.get("/a/{id}", counting("a"))
    gw.bb.get("/b/{id}", counting("b", status=lambda n: 500 if n == 1 else 200))
    r = http.get(gw.url("/agg/p"))
    assert r.status == 200 and r.headers["X-Estuary-Completed"] == "false"
    assert r.json() == {"a": {"src": "a", "n": 1}}
    cs = r.headers["Cache-Status"]
    assert "stored" not in cs and "detail=incomplete" in cs
    # not stored: the next request fans out again, and its complete reply is stored
    r = http.get(gw.url("/agg/p"))
    assert r.headers["X-Estuary-Completed"] == "true" and r.json() == {"a": {"src": "a", "n": 2}, "b": {"src": "b", "n": 2}}
    assert r.headers["Cache-Status"].endswith("stored")
    r = http.get(gw.url("/agg/p"))
    assert r.headers["Cache-Status"].startswith("estuary; hit") and r.json()["a"]["n"] == 2
    assert gw.ba.request_count == 2 and gw.bb.request_count == 2


def test_failed_reply_not_stored(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"}, on_error="fail")
    gw.ba.get("/a/{id}", counting("a"))
    gw.bb.get("/b/{id}", counting("b", status=lambda n: 503 if n == 1 else 200))
    r = http.get(gw.url("/agg/f"))
    assert r.status == 502 and r.json()["error"]["code"] == "upstream_unavailable"
    assert "stored" not in r.headers["Cache-Status"]
    r = http.get(gw.url("/agg/f"))
    assert r.status == 200 and r.json()["b"]["n"] == 2
    assert gw.ba.request_count == 2 and gw.bb.request_count == 2


def test_backend_cache_control_does_not_shorten_ttl(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.ba.get("/a/{id}", counting("a", headers={"Cache-Control": "max-age=0"}))
    gw.bb.get("/b/{id}", counting("b", headers={"Cache-Control": "private"}))
    assert http.get(gw.url("/agg/t")).headers["Cache-Status"].endswith("stored")
    r = http.get(gw.url("/agg/t"))
    assert r.headers["Cache-Status"].startswith("estuary; hit") and r.json()["a"]["n"] == 1
    assert gw.ba.request_count == 1


def test_bypass_and_route_vary(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s", "vary": ["X-Tenant"]})
    gw.ba.get("/a/{id}", counting("a"))
    gw.bb.get("/b/{id}", counting("b"))
    assert http.get(gw.url("/agg/v"), headers={"X-Tenant": "t1"}).json()["a"]["n"] == 1
    assert http.get(gw.url("/agg/v"), headers={"X-Tenant": "t2"}).json()["a"]["n"] == 2
    assert http.get(gw.url("/agg/v"), headers={"X-Tenant": "t1"}).json()["a"]["n"] == 1
    r = http.get(gw.url("/agg/v"), headers={"X-Tenant": "t1", "Authorization": "Bearer x"})
    assert r.json()["a"]["n"] == 3 and "fwd=bypass" in r.headers["Cache-Status"]
    assert gw.ba.request_count == 3


def test_coalescing_one_fanout(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.ba.get("/a/{id}", counting("a", delay=0.5))
    gw.bb.get("/b/{id}", counting("b", delay=0.5))
    rs = http.concurrent([("GET", gw.url("/agg/c"), None, None)] * 100, timeout=10)
    assert all(r.status == 200 for r in rs), {r.status for r in rs}
    assert len({r.body for r in rs}) == 1
    assert rs[0].json() == {"a": {"src": "a", "n": 1}, "b": {"src": "b", "n": 1}}
    assert sum("collapsed" in r.headers["Cache-Status"] for r in rs) == 99
    assert gw.ba.request_count == 1 and gw.bb.request_count == 1


def test_coalescing_without_cache_shares_the_error(backend, estuary, http):
    gw = gateway(backend, estuary, None, coalesce=True, on_error="fail")
    gw.ba.get("/a/{id}", counting("a", delay=0.5))
    gw.bb.get("/b/{id}", counting("b", status=503, delay=0.5))
    rs = http.concurrent([("GET", gw.url("/agg/e"), None, None)] * 100, timeout=10)
    assert all(r.status == 502 for r in rs), {r.status for r in rs}
    assert {r.json()["error"]["code"] for r in rs} == {"upstream_unavailable"}
    assert {r.json()["error"]["message"] for r in rs} == {"upstream 'ub' answered 503"}
    assert gw.ba.request_count == 1 and gw.bb.request_count == 1
    # nothing was stored: the next request fans out again
    assert http.get(gw.url("/agg/e")).status == 502
    assert gw.ba.request_count == 2


def test_stale_if_error(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "1s", "stale_if_error": "30s"}, on_error="fail")
    gw.ba.get("/a/{id}", counting("a"))
    gw.bb.get("/b/{id}", counting("b", status=lambda n: 200 if n == 1 else 503))
    first = http.get(gw.url("/agg/s"))
    assert first.status == 200
    # once stale (ttl 1 s), the failed fan-out is answered with the stored reply
    r = wait_until(lambda: (lambda x: x if "fwd=stale" in x.headers.get("Cache-Status", "") else None)(
        http.get(gw.url("/agg/s"))), timeout=4)
    assert r.status == 200 and r.body == first.body
    assert "fwd-status=503" in r.headers["Cache-Status"] and "detail=stale-if-error" in r.headers["Cache-Status"]
    assert r.headers["X-Estuary-Completed"] == "true"
    gw.bb.stop()  # connect failure: stale as well
    r = http.get(gw.url("/agg/s"))
    assert r.status == 200 and r.body == first.body and "fwd=stale" in r.headers["Cache-Status"]


def first_stale(http, url, timeout=4):
    """Polls `url` until a reply is served stale (the entry's ttl passed): that request is the one
    that finds the entry stale and wins its refresh."""
    return wait_until(lambda: (lambda x: x if "fwd=stale" in x.headers.get("Cache-Status", "") else None)(
        http.get(url)), timeout=timeout, what="a stale reply")


def first_fresh(http, url, timeout=4):
    """Polls `url` until a reply is a fresh hit (the refresh stored its document)."""
    return wait_until(lambda: (lambda x: x if x.headers.get("Cache-Status", "").startswith("estuary; hit")
                               and "fwd=stale" not in x.headers["Cache-Status"] else None)(http.get(url)),
                      timeout=timeout, what="a fresh hit")


def test_stale_while_revalidate_background_refresh(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "1s", "stale_while_revalidate": "30s"})
    # the refresh's backends are slow: a request carrying it would take at least 0.8 s
    gw.ba.get("/a/{id}", counting("a", delay=lambda n: 0.8 if n == 2 else 0))
    gw.bb.get("/b/{id}", counting("b", delay=lambda n: 0.8 if n == 2 else 0))
    url = gw.url("/agg/w")
    first = http.get(url)
    assert first.json() == {"a": {"src": "a", "n": 1}, "b": {"src": "b", "n": 1}}
    # the request that finds the entry stale wins the refresh and is answered at once, stale
    r = first_stale(http, url)
    assert r.status == 200 and r.body == first.body and r.elapsed < 0.3, r.elapsed
    assert r.headers["Cache-Status"].startswith("estuary; hit; fwd=stale")
    assert r.headers["X-Estuary-Completed"] == "true" and int(r.headers["Age"]) >= 1
    # while the refresh runs every request gets the stale reply at once, and starts none
    rs = http.concurrent([("GET", url, None, None)] * 10, timeout=10)
    assert all(x.status == 200 and x.body == first.body and "fwd=stale" in x.headers["Cache-Status"] for x in rs)
    assert all(x.elapsed < 0.5 for x in rs), [x.elapsed for x in rs]
    # exactly one background fan-out, one request per backend; then its document is a fresh hit
    wait_until(lambda: gw.ba.request_count == 2 and gw.bb.request_count == 2, timeout=3, what="the refresh")
    r = first_fresh(http, url)
    assert r.json() == {"a": {"src": "a", "n": 2}, "b": {"src": "b", "n": 2}}
    assert r.headers["X-Estuary-Completed"] == "true" and r.headers["Content-Type"].startswith("application/json")
    assert gw.ba.request_count == 2 and gw.bb.request_count == 2


def test_stale_while_revalidate_failed_refresh_keeps_entry(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "1s", "stale_while_revalidate": "30s"})
    gw.ba.get("/a/{id}", counting("a"))
    # the first refresh gets a slow 503 from b: its document would be partial, so it is not stored
    gw.bb.get("/b/{id}", counting("b", status=lambda n: 503 if n == 2 else 200, delay=lambda n: 0.8 if n == 2 else 0))
    url = gw.url("/agg/f")
    first = http.get(url)
    assert first.json()["b"]["n"] == 1
    r = first_stale(http, url)
    assert r.status == 200 and r.body == first.body and r.elapsed < 0.3, r.elapsed
    wait_until(lambda: gw.bb.request_count == 2, timeout=3, what="the first refresh")
    # the stale entry keeps answering; once the failed refresh let its flag go, the next stale
    # hit starts another one (b's third request)
    rs = []

    def next_refresh():
        rs.append(http.get(url))
        return gw.bb.request_count == 3

    wait_until(next_refresh, timeout=5, what="a second refresh")
    assert all(x.status == 200 and x.body == first.body and "fwd=stale" in x.headers["Cache-Status"] for x in rs)
    assert all(x.elapsed < 0.5 for x in rs), [x.elapsed for x in rs]
    r = first_fresh(http, url)
    assert r.json() == {"a": {"src": "a", "n": 3}, "b": {"src": "b", "n": 3}}
    assert gw.ba.request_count == 3 and gw.bb.request_count == 3


def test_stale_while_revalidate_dependent_backends_refresh_in_the_request(backend, estuary, http):
    """A route with a dependent backend ({GROUP.path}) is not refreshed in the background: the
    request that wins the refresh fans out itself (docs/cache.md), and its reply is stored."""
    ba, bb = backend("a"), backend("b")
    ba.get("/a/{id}", counting("a"))
    bb.get("/b/{n}", counting("b", delay=lambda n: 0.5 if n == 2 else 0))
    route = {"path": "/dep/{id}", "timeout": "3s", "cache": {"ttl": "1s", "stale_while_revalidate": "30s"},
             "backends": [{"upstream": "ua", "path": "/a/{id}", "group": "a"},
                          {"upstream": "ub", "path": "/b/{a.n}", "group": "b"}]}
    gw = estuary({"upstreams": {"ua": upstream(ba, retry={"attempts": 1}), "ub": upstream(bb, retry={"attempts": 1})},
                  "routes": [route]})
    url = gw.url("/dep/1")
    assert http.get(url).json()["b"]["n"] == 1
    r = first_stale(http, url)
    assert r.json() == {"a": {"src": "a", "n": 2}, "b": {"src": "b", "n": 2}} and r.elapsed >= 0.4
    assert r.headers["Cache-Status"].endswith("stored")
    r = http.get(url)
    assert r.headers["Cache-Status"].startswith("estuary; hit") and r.json()["b"]["n"] == 2
    assert ba.request_count == 2 and bb.request_count == 2


def test_worker_exit_cancels_background_refresh(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "1s", "stale_while_revalidate": "30s"})
    gw.ba.get("/a/{id}", counting("a", delay=lambda n: 8 if n == 2 else 0))
    gw.bb.get("/b/{id}", counting("b"))
    url = gw.url("/agg/x")
    first = http.get(url)
    r = first_stale(http, url)
    assert r.body == first.body and r.elapsed < 0.3, r.elapsed
    wait_until(lambda: gw.ba.request_count == 2, timeout=3, what="the refresh")
    # the refresh has no client connection: the drain does not wait for it, the exit cancels it
    t0 = time.monotonic()
    gw.stop()
    assert time.monotonic() - t0 < 4
    gw.check(0)


def test_admin_purge_and_metrics(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"}, admin=True)
    gw.ba.get("/a/{id}", counting("a"))
    gw.bb.get("/b/{id}", counting("b"))
    assert http.get(gw.url("/agg/x")).json()["a"]["n"] == 1
    assert http.get(gw.url("/agg/y")).json()["a"]["n"] == 2
    assert http.get(gw.url("/agg/x")).headers["Cache-Status"].startswith("estuary; hit")
    r = http.request("DELETE", gw.admin + "/cache?route=/agg/{id}&path=/agg/x")
    assert r.status == 204
    r = http.get(gw.url("/agg/x"))
    assert r.json()["a"]["n"] == 3 and r.headers["Cache-Status"].startswith("estuary; fwd=uri-miss")
    assert http.get(gw.url("/agg/y")).json()["a"]["n"] == 2
    m = http.get(gw.admin + "/metrics").text
    for result, n in (("hit", 2), ("miss", 3), ("stored", 3)):
        assert f'estuary_cache_requests_total{{route="/agg/{{id}}",result="{result}"}} {n}' in m, (result, m)


def test_leader_client_leaving_does_not_fail_waiters(backend, estuary, http):
    import socket
    import threading
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.ba.get("/a/{id}", counting("a", delay=0.6))
    gw.bb.get("/b/{id}", counting("b", delay=0.6))
    # the leader: a raw client that sends its request and goes away before the reply
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET /agg/lead HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: gw.ba.request_count == 1 and gw.bb.request_count == 1, timeout=3)
    out = []
    t = threading.Thread(target=lambda: out.extend(http.concurrent([("GET", gw.url("/agg/lead"), None, None)] * 5,
                                                                   timeout=8)))
    t.start()
    time.sleep(0.2)  # let the waiters join the flight (a missed join only costs one more fan-out)
    s.close()
    t.join(10)
    # the oldest waiter fanned out again for the others: every waiter has the same complete reply
    assert len(out) == 5 and all(r.status == 200 and r.headers["X-Estuary-Completed"] == "true" for r in out)
    assert len({r.body for r in out}) == 1
    assert gw.ba.request_count <= 2 and gw.bb.request_count <= 2


def test_waiter_leaving_does_not_cancel_leader(backend, estuary, http):
    import socket
    import threading
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.ba.get("/a/{id}", counting("a", delay=0.6))
    gw.bb.get("/b/{id}", counting("b"))
    out = []
    t = threading.Thread(target=lambda: out.append(http.get(gw.url("/agg/wl"), timeout=8)))
    t.start()
    wait_until(lambda: gw.ba.request_count == 1, timeout=3)
    socks = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(5)]
    for s in socks:
        s.sendall(b"GET /agg/wl HTTP/1.1\r\nHost: x\r\n\r\n")
    for s in socks:
        s.close()
    t.join(10)
    assert out and out[0].status == 200 and out[0].json()["a"]["n"] == 1
    r = http.get(gw.url("/agg/wl"))
    assert r.json()["a"]["n"] == 1 and r.headers["Cache-Status"].startswith("estuary; hit")
    assert gw.ba.request_count == 1

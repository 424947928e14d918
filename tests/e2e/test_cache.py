"""Response cache and request coalescing on proxy routes (SPEC "Caching, coalescing and
hedging", docs/cache.md): hit/miss/stored, Age, backend Cache-Control over the route ttl,
no-store/private, Authorization bypass, vary, LRU, max_entry, stale-while-revalidate,
stale-if-error, admin purge, metrics, coalescing, HEAD from a GET entry."""
import asyncio
import hashlib
import time

import pytest
from aiohttp import web

from harness import curl, free_port, wait_for_port, wait_until


def counting(body=b"payload", status=200, headers=None, delay=0.0, content_type="text/plain"):
    """A backend handler whose body carries the per-path request count: "body#N"."""
    counts = {}

    async def h(request):
        n = counts[request.path] = counts.get(request.path, 0) + 1
        if delay:
            await asyncio.sleep(delay)
        data = body(n) if callable(body) else body + b"#%d" % n
        return web.Response(status=status, body=data, headers=dict(headers or {}, **{"Content-Type": content_type}))
    h.counts = counts
    return h


def gateway(backend, estuary, route_cache=None, top_cache=None, admin=False, upstream_extra=None, **route_extra):
    b = backend("origin")
    route = dict({"path": "/c/{rest...}", "timeout": "2s", "proxy": {"upstream": "origin", "path": "/o/{rest...}"}},
                 **route_extra)
    if route_cache is not None:
        route["cache"] = route_cache
    cfg = {"upstreams": {"origin": dict({"targets": [b.url], "retry": {"attempts": 1}}, **(upstream_extra or {}))},
           "routes": [route]}
    if top_cache is not None:
        cfg["cache"] = top_cache
    if admin:
        cfg["admin"] = {"host": "127.0.0.1", "port": free_port()}
    gw = estuary(cfg)
    if admin:
        wait_for_port("127.0.0.1", cfg["admin"]["port"], 10, gw.proc)
        gw.admin = f"http://127.0.0.1:{cfg['admin']['port']}"
    gw.origin = b
    return gw


def test_miss_stored_then_hit_with_age(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.origin.get("/o/a", counting(headers={"X-Origin": "yes"}))
    r = http.get(gw.url("/c/a"))
    assert r.status == 200 and r.body == b"payload#1"
    assert r.headers["Cache-Status"] == "estuary; fwd=uri-miss; fwd-status=200; stored"
    assert "Age" not in r.headers
    r = http.get(gw.url("/c/a"))
    assert r.status == 200 and r.body == b"payload#1"
    assert r.headers["Cache-Status"].startswith("estuary; hit")
    assert r.headers["X-Origin"] == "yes" and r.headers["Content-Type"].startswith("text/plain")
    assert int(r.headers["Age"]) >= 0
    assert gw.origin.request_count == 1
    # Age grows (whole seconds): polled, bounded
    r2 = wait_until(lambda: (lambda x: x if int(x.headers["Age"]) >= 1 else None)(http.get(gw.url("/c/a"))), timeout=3)
    assert r2.body == b"payload#1" and gw.origin.request_count == 1
    # a different query is a different key
    assert http.get(gw.url("/c/a?x=1")).body == b"payload#2"


def test_head_from_get_entry(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.origin.get("/o/h", counting())
    assert http.get(gw.url("/c/h")).body == b"payload#1"
    r = http.request("HEAD", gw.url("/c/h"))
    assert r.status == 200 and r.body == b"" and r.headers["Content-Length"] == str(len(b"payload#1"))
    assert r.headers["Cache-Status"].startswith("estuary; hit")
    assert gw.origin.request_count == 1


def test_backend_max_age_overrides_ttl(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "60s"})
    gw.origin.get("/o/m", counting(headers={"Cache-Control": "max-age=1"}))
    assert http.get(gw.url("/c/m")).body == b"payload#1"
    assert http.get(gw.url("/c/m")).body == b"payload#1"
    # max-age=1 wins over the route's 60 s: a new backend request within a bounded wait
    wait_until(lambda: http.get(gw.url("/c/m")).body == b"payload#2", timeout=4)


@pytest.mark.parametrize("cc,detail", [("no-store", "no-store"), ("private", "private")])
def test_not_stored(backend, estuary, http, cc, detail):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.origin.get("/o/n", counting(headers={"Cache-Control": cc}))
    r = http.get(gw.url("/c/n"))
    assert r.body == b"payload#1"
    assert "stored" not in r.headers["Cache-Status"] and f"detail={detail}" in r.headers["Cache-Status"]
    assert http.get(gw.url("/c/n")).body == b"payload#2"


def test_authorization_bypass_unless_shared(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.origin.get("/o/p", counting())
    assert http.get(gw.url("/c/p")).body == b"payload#1"
    r = http.get(gw.url("/c/p"), headers={"Authorization": "Bearer x"})
    assert r.body == b"payload#2" and "fwd=bypass" in r.headers["Cache-Status"]
    r = http.get(gw.url("/c/p"), headers={"Cookie": "s=1"})
    assert r.body == b"payload#3" and "fwd=bypass" in r.headers["Cache-Status"]


def test_shared_route_caches_authorized(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s", "shared": True})
    gw.origin.get("/o/s", counting())
    assert http.get(gw.url("/c/s"), headers={"Authorization": "Bearer x"}).body == b"payload#1"
    r = http.get(gw.url("/c/s"), headers={"Authorization": "Bearer y"})
    assert r.body == b"payload#1" and r.headers["Cache-Status"].startswith("estuary; hit")


def test_route_vary_header(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s", "vary": ["X-Tenant"]})
    gw.origin.get("/o/v", counting())
    assert http.get(gw.url("/c/v"), headers={"X-Tenant": "a"}).body == b"payload#1"
    assert http.get(gw.url("/c/v"), headers={"X-Tenant": "b"}).body == b"payload#2"
    assert http.get(gw.url("/c/v")).body == b"payload#3"
    assert http.get(gw.url("/c/v"), headers={"X-Tenant": "a"}).body == b"payload#1"
    assert http.get(gw.url("/c/v"), headers={"X-Tenant": "b"}).body == b"payload#2"


def test_backend_vary(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.origin.get("/o/bv", counting(headers={"Vary": "Accept-Language"}))
    assert http.get(gw.url("/c/bv"), headers={"Accept-Language": "fr"}).body == b"payload#1"
    r = http.get(gw.url("/c/bv"), headers={"Accept-Language": "de"})
    assert r.body == b"payload#2" and "fwd=vary-miss" in r.headers["Cache-Status"]
    assert http.get(gw.url("/c/bv"), headers={"Accept-Language": "fr"}).body == b"payload#1"
    assert http.get(gw.url("/c/bv"), headers={"Accept-Language": "de"}).body == b"payload#2"


def test_lru_eviction_at_max_size(backend, estuary, http):
    # one shard (max_entry == max_size): an exact LRU; 4 KiB bodies, ~3 fit in 16 KiB with overheads
    gw = gateway(backend, estuary, {"ttl": "30s"}, top_cache={"max_size": "16KiB", "max_entry": "16KiB"})
    gw.origin.get("/o/{k}", counting(body=lambda n: b"x" * 4000 + b"#%d" % n))
    for k in ("k1", "k2", "k3"):
        assert http.get(gw.url(f"/c/{k}")).body.endswith(b"#1")
    assert http.get(gw.url("/c/k1")).headers["Cache-Status"].startswith("estuary; hit")  # k1 most recent now
    for k in ("k4", "k5"):
        assert http.get(gw.url(f"/c/{k}")).body.endswith(b"#1")
    # k2 (least recently used) went first; k1 (used since) is still there
    assert http.get(gw.url("/c/k1")).headers["Cache-Status"].startswith("estuary; hit")
    r = http.get(gw.url("/c/k2"))
    assert "fwd=uri-miss" in r.headers["Cache-Status"] and r.body.endswith(b"#2")


def test_max_entry_not_stored_but_streamed(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"}, top_cache={"max_size": "1MiB", "max_entry": "64KiB"})
    blob = hashlib.sha256(b"seed").digest() * (256 * 1024 // 32)  # 256 KiB
    gw.origin.get("/o/big", counting(body=lambda n: blob + b"#%d" % n))
    r = http.get(gw.url("/c/big"))
    assert r.status == 200 and r.body == blob + b"#1"
    assert "stored" not in r.headers["Cache-Status"]
    assert http.get(gw.url("/c/big")).body == blob + b"#2"
    # the same without Content-Length (chunked): found too large while streaming
    async def chunked(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(blob), 16384):
            await resp.write(blob[i:i + 16384])
        await resp.write_eof()
        return resp
    gw.origin.get("/o/chunked", chunked)
    for _ in range(2):
        r = http.get(gw.url("/c/chunked"))
        assert r.status == 200 and r.body == blob
    assert len(gw.origin.requests_to("/o/chunked")) == 2


def test_stale_while_revalidate_one_refresh(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "1s", "stale_while_revalidate": "30s"})
    n = {"n": 0}

    async def origin(request):
        # the first reply fresh for 1 s, the refreshed one (slow: 1 s) for 60 s; the backend's
        # max-age wins over the route's ttl. (A reply's age includes the backend's delay, RFC 9111 4.2.3.)
        n["n"] += 1
        if n["n"] > 1:
            await asyncio.sleep(1.0)
        return web.Response(body=b"payload#%d" % n["n"], headers={"Cache-Control": "max-age=1" if n["n"] == 1 else "max-age=60"})
    gw.origin.get("/o/swr", origin)
    t0 = time.monotonic()
    assert http.get(gw.url("/c/swr")).body == b"payload#1"
    # the entry is stale once its age (whole seconds of Date) passes the 1 s ttl: at most ~2 s
    wait_until(lambda: time.monotonic() > t0 + 2.2, timeout=4)
    rs = http.concurrent([("GET", gw.url("/c/swr"), None, None)] * 20)
    # every request got the stale reply at once (the refresh runs in the background, 1 s)
    assert all(r.status == 200 and r.body == b"payload#1" and "fwd=stale" in r.headers["Cache-Status"] for r in rs)
    assert all(r.elapsed < 0.9 for r in rs)
    # exactly one refresh went to the backend
    wait_until(lambda: gw.origin.request_count == 2, timeout=3)
    # the refresh stored the new reply
    r = wait_until(lambda: (lambda x: x if x.body == b"payload#2" else None)(http.get(gw.url("/c/swr"))), timeout=3)
    assert r.headers["Cache-Status"].startswith("estuary; hit")
    assert gw.origin.request_count == 2


def test_stale_if_error(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "1s", "stale_if_error": "30s"})
    gw.origin.get("/o/sie", counting())
    assert http.get(gw.url("/c/sie")).body == b"payload#1"
    gw.origin.get("/o/sie", counting(status=503))
    r = wait_until(lambda: (lambda x: x if "fwd=stale" in x.headers.get("Cache-Status", "") else None)(
        http.get(gw.url("/c/sie"))), timeout=4)
    assert r.status == 200 and r.body == b"payload#1" and "fwd-status=503" in r.headers["Cache-Status"]
    gw.origin.stop()  # connect failure: stale as well
    r = http.get(gw.url("/c/sie"))
    assert r.status == 200 and r.body == b"payload#1" and "fwd=stale" in r.headers["Cache-Status"]


def test_coalescing_one_backend_request(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    # SPEC: 500 identical concurrent GETs -> 1 backend request and 500 identical bodies; the
    # origin holds its reply long enough for all 500 to arrive while it is in flight
    gw.origin.get("/o/co", counting(body=lambda n: b"y" * 20000 + b"#%d" % n, delay=1.5))
    rs = http.concurrent([("GET", gw.url("/c/co"), None, None)] * 500, timeout=10)
    assert len(rs) == 500 and all(r.status == 200 for r in rs)
    assert len({r.body for r in rs}) == 1 and rs[0].body.endswith(b"#1")
    assert gw.origin.request_count == 1


def test_coalescing_shares_503(backend, estuary, http):
    gw = gateway(backend, estuary, None, coalesce=True)
    gw.origin.get("/o/e", counting(status=503, delay=1.5))
    rs = http.concurrent([("GET", gw.url("/c/e"), None, None)] * 500, timeout=10)
    assert len(rs) == 500 and all(r.status == 503 for r in rs)
    assert {r.body for r in rs} == {b"payload#1"}
    assert gw.origin.request_count == 1


def test_admin_purge_and_metrics(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"}, admin=True)
    gw.origin.get("/o/{k}", counting())
    assert http.get(gw.url("/c/x")).body == b"payload#1"
    assert http.get(gw.url("/c/y")).body == b"payload#1"
    assert http.get(gw.url("/c/x")).headers["Cache-Status"].startswith("estuary; hit")
    r = http.request("DELETE", gw.admin + "/cache?route=/c/{rest...}&path=/c/x")
    assert r.status == 204
    assert http.get(gw.url("/c/x")).body == b"payload#2"
    assert http.get(gw.url("/c/y")).body == b"payload#1"
    assert http.request("DELETE", gw.admin + "/cache").status == 400
    m = http.get(gw.admin + "/metrics").text
    assert 'estuary_cache_requests_total{route="/c/{rest...}",result="hit"}' in m
    assert 'estuary_cache_requests_total{route="/c/{rest...}",result="stored"}' in m
    line = [l for l in m.splitlines() if l.startswith("estuary_cache_bytes ")]
    assert line and float(line[0].split()[1]) > 0
    st = http.get(gw.admin + "/state").json()["cache"]
    assert st["enabled"] is True and st["entries"] >= 1 and st["bytes"] > 0 and 0 < st["hit_ratio"] <= 1


def test_purge_whole_route_and_method_check(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"}, admin=True)
    gw.origin.get("/o/{k}", counting())
    assert http.get(gw.url("/c/x")).body == b"payload#1"
    assert http.get(gw.url("/c/x")).body == b"payload#1"
    assert http.get(gw.admin + "/cache").status == 405
    # percent-encoded template, no path: the whole route
    assert http.request("DELETE", gw.admin + "/cache?route=%2Fc%2F%7Brest...%7D").status == 204
    assert http.get(gw.url("/c/x")).body == b"payload#2"


def test_leader_client_leaving_does_not_fail_waiters(backend, estuary, http, aio):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.origin.get("/o/lead", counting(delay=0.6))
    import socket

    # the leader: a raw client that sends its request and goes away before the reply
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET /c/lead HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: gw.origin.request_count == 1, timeout=3)
    rs_future = []

    def waiters():
        rs_future.extend(http.concurrent([("GET", gw.url("/c/lead"), None, None)] * 5, timeout=8))
    import threading
    t = threading.Thread(target=waiters)
    t.start()
    time.sleep(0.2)  # let the waiters join the flight (a missed join only costs one more backend request)
    s.close()
    t.join(10)
    assert len(rs_future) == 5 and all(r.status == 200 for r in rs_future)
    assert len({r.body for r in rs_future}) == 1
    assert gw.origin.request_count <= 2


def test_reload_keeps_unchanged_routes_purges_changed(backend, estuary, http):
    from test_reload import reload
    import copy
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.origin.get("/o/{k}", counting())
    assert http.get(gw.url("/c/r")).body == b"payload#1"
    # unchanged route (another route added): the entry stays
    cfg = copy.deepcopy(gw.config)
    cfg["routes"].append({"path": "/other", "proxy": {"upstream": "origin", "path": "/o/other"}})
    reload(gw, cfg)
    r = http.get(gw.url("/c/r"))
    assert r.body == b"payload#1" and r.headers["Cache-Status"].startswith("estuary; hit")
    # the route's cache settings change: its entries go
    cfg = copy.deepcopy(cfg)
    cfg["routes"][0]["cache"]["ttl"] = "20s"
    reload(gw, cfg)
    r = http.get(gw.url("/c/r"))
    assert r.body == b"payload#2" and "fwd=uri-miss" in r.headers["Cache-Status"]


def test_hit_over_http2_and_large_entry(backend, estuary, http):
    gw = gateway(backend, estuary, {"ttl": "30s"})
    blob = hashlib.sha256(b"h2").digest() * (1024 * 1024 // 32)  # 1 MiB: several HTTP/2 DATA frames from one entry
    gw.origin.get("/o/h2", counting(body=lambda n: blob + b"#%d" % n))
    r = curl("--http2-prior-knowledge", gw.url("/c/h2"))
    assert r.status == 200 and r.body == blob + b"#1" and "stored" in r.headers["cache-status"]
    for _ in range(2):
        r = curl("--http2-prior-knowledge", gw.url("/c/h2"))
        assert r.version == "2" and r.body == blob + b"#1" and r.headers["cache-status"].startswith("estuary; hit")
    r = http.get(gw.url("/c/h2"))
    assert r.body == blob + b"#1"
    assert gw.origin.request_count == 1


def test_waiter_leaving_does_not_cancel_leader(backend, estuary, http):
    import socket
    import threading
    gw = gateway(backend, estuary, {"ttl": "30s"})
    gw.origin.get("/o/w", counting(delay=0.6))
    out = []
    t = threading.Thread(target=lambda: out.append(http.get(gw.url("/c/w"), timeout=8)))
    t.start()
    wait_until(lambda: gw.origin.request_count == 1, timeout=3)
    # waiters that go away before the reply
    socks = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(5)]
    for s in socks:
        s.sendall(b"GET /c/w HTTP/1.1\r\nHost: x\r\n\r\n")
    for s in socks:
        s.close()
    t.join(10)
    assert out and out[0].status == 200 and out[0].body == b"payload#1"
    r = http.get(gw.url("/c/w"))
    assert r.body == b"payload#1" and r.headers["Cache-Status"].startswith("estuary; hit")
    assert gw.origin.request_count == 1

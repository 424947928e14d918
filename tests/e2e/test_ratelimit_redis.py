"""Rate limits with "store": "redis" against a real redis-server (Debian's package; see
tests/e2e/redis_server.py and docs/redis.md): one limit shared by three estuary processes,
Redis killed mid-test (on_failure allow and deny), the limit back when Redis returns, a Redis
that accepts and never answers (the timeout path), and estuary_redis_requests_total{result}.

The shared-limit counts are exact: the limit refills once an hour, so over a test the only
thing that admits a request is the burst (burst + 1 requests per key), whatever the
machine's speed; spread over three processes the total allowed must be exactly that."""
import http.client as hc
import json
import threading
import time

import pytest

import redis_server
from harness import json_reply, upstream, wait_until
from redis_server import RedisServer, SilentServer
from test_admin import admin_config, admin_started, metric, parse_metrics

pytestmark = pytest.mark.skipif(not redis_server.available(), reason="redis-server is not installed")

CAP = "1h"  # no refill during a test


@pytest.fixture
def redis(tmp_path):
    """Factory: redis(port=None) -> a started RedisServer; all stopped (by PID) at teardown."""
    made = []

    def make(port=None):
        srv = RedisServer(tmp_path / f"redis{len(made)}", port=port).start()
        made.append(srv)
        return srv
    yield make
    for srv in made:
        srv.stop()


@pytest.fixture
def silent():
    made = []

    def make():
        s = SilentServer()
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def get(gw, path):
    c = hc.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def ok_backend(backend):
    b = backend("rl")
    b.get("/ok", json_reply({"ok": True}))
    return b


def config(b, address, burst, on_failure="allow", timeout="500ms", key="route"):
    cfg, admin = admin_config({
        "upstreams": {"u": upstream(b)},
        "rate_limits": {"global": {"rate": 1, "per": CAP, "burst": burst, "key": key, "store": "redis"}},
        "redis": {"address": address, "timeout": timeout, "on_failure": on_failure},
        "routes": [{"path": "/r", "rate_limit": "global", "proxy": {"upstream": "u", "path": "/ok"}},
                   {"path": "/open", "proxy": {"upstream": "u", "path": "/ok"}}],
    })
    return cfg, admin


def redis_metrics(http, admin):
    ms = parse_metrics(http.get(admin + "/metrics").text)
    return {r: metric(ms, "estuary_redis_requests_total", result=r) for r in ("ok", "error", "timeout")}


def test_one_limit_shared_by_three_processes(backend, estuary, redis, http, dns):
    """N allowed in all, not N per process: 3N requests round-robin over three gateways (two
    workers each, so six connections to Redis), exactly N pass, each reply's RateLimit
    counts down the shared bucket."""
    n = 12
    b = ok_backend(backend)
    srv = redis()
    dns.set_a("redis.test", "127.0.0.1")  # one gateway reaches Redis by name, through its resolver
    gws, admins = [], []
    for i in range(3):
        address = f"redis.test:{srv.port}" if i == 2 else srv.address
        cfg, admin = config(b, address, burst=n - 1)
        cfg["workers"] = 2
        gws.append(admin_started(estuary(cfg)))
        admins.append(admin)

    got = []
    for k in range(3 * n):
        st, h, body = get(gws[k % 3], "/r")
        got.append(st)
        if st == 200:
            # what is left after this one in the one bucket all three share, and the time
            # until it is full again (j hours after j requests)
            j = got.count(200)
            assert h["RateLimit"] == f'"global";r={n - j};t={3600 * j}'
        else:
            assert st == 429, body
            assert json.loads(body)["error"]["code"] == "rate_limited"
            assert int(h["Retry-After"]) > 0
    assert got == [200] * n + [429] * (2 * n)
    assert len(b.requests_to("/ok")) == n  # a refused request never reaches the backend

    # the bucket is one Redis key that expires by itself once it would be full again
    keys = srv.command("KEYS", "estuary:rl:*")
    assert len(keys) == 1, keys
    ttl = srv.command("PTTL", keys[0])
    assert 0 < ttl <= n * 3600 * 1000 + 1000

    # every request was one answered round trip, counted by the process that made it
    per = [redis_metrics(http, a) for a in admins]
    assert sum(m["ok"] for m in per) == 3 * n
    assert all(m["ok"] == n for m in per)
    assert all(m["error"] == 0 and m["timeout"] == 0 for m in per)


def test_rate_over_time_shared_by_three_processes(backend, estuary, redis):
    """A steady rate: 40 per second, no burst, traffic spread over three gateways for about
    two seconds: the total allowed is the rate times the time (plus the first request)
    within 10%, not three times that."""
    rate, secs = 40, 2.0
    b = ok_backend(backend)
    srv = redis()
    gws = []
    for _ in range(3):
        cfg, _ = config(b, srv.address, burst=0)
        cfg["rate_limits"]["global"].update({"rate": rate, "per": "1s"})
        gws.append(estuary(cfg))
    counts = [[0, 0] for _ in gws]  # [allowed, sent] per gateway
    start = time.monotonic()
    deadline = start + secs

    def hammer(i):
        c = hc.HTTPConnection("127.0.0.1", gws[i].port, timeout=10)
        try:
            while time.monotonic() < deadline:
                c.request("GET", "/r")
                r = c.getresponse()
                r.read()
                assert r.status in (200, 429), r.status
                counts[i][0] += r.status == 200
                counts[i][1] += 1
        finally:
            c.close()
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - start
    allowed, sent = sum(c[0] for c in counts), sum(c[1] for c in counts)
    expected = 1 + rate * elapsed
    assert sent >= 2 * expected, f"the test could not send fast enough ({sent} requests)"
    assert all(c[0] > 0 for c in counts)  # every gateway got its share of the one bucket
    assert abs(allowed - expected) <= 0.1 * expected, (allowed, expected, counts)
    assert len(b.requests_to("/ok")) == allowed


def test_outage_allow_then_recovery(backend, estuary, redis, http):
    b = ok_backend(backend)
    srv = redis()
    cfg, admin = config(b, srv.address, burst=2, on_failure="allow")
    gw = admin_started(estuary(cfg))
    assert [get(gw, "/r")[0] for _ in range(4)] == [200, 200, 200, 429]

    srv.kill()  # mid-test, by PID: the connection drops
    t0 = time.monotonic()
    got = [get(gw, "/r") for _ in range(20)]
    assert [st for st, _, _ in got] == [200] * 20  # allow: the limit is not applied
    assert all("RateLimit" not in h for _, h, _ in got)  # nothing was counted
    assert time.monotonic() - t0 < 5  # failing fast, not waiting a timeout each
    m = redis_metrics(http, admin)
    assert m["error"] >= 1 and m["ok"] == 4
    assert get(gw, "/open")[0] == 200

    # Redis returns (empty: no persistence, and without the cached script: NOSCRIPT -> EVAL);
    # within the backoff (at most 2 s) the limit applies again, from a fresh bucket
    srv.start()
    def limited():
        return get(gw, "/r")[0] == 429
    wait_until(limited, timeout=8, interval=0.05, what="the limit to apply again")
    assert [get(gw, "/r")[0] for _ in range(5)] == [429] * 5
    assert srv.command("KEYS", "estuary:rl:*")  # the new bucket lives in the new server
    stats = srv.command("INFO", "commandstats").decode()
    assert "cmdstat_eval:" in stats  # the script was cached again through EVAL
    assert redis_metrics(http, admin)["ok"] > 4
    assert gw.running()


def test_outage_deny(backend, estuary, redis, http):
    b = ok_backend(backend)
    srv = redis()
    cfg, admin = config(b, srv.address, burst=100, on_failure="deny")
    gw = admin_started(estuary(cfg))
    assert get(gw, "/r")[0] == 200
    srv.kill()
    for _ in range(5):
        st, _, body = get(gw, "/r")
        assert st == 503, body
        err = json.loads(body)["error"]
        assert err["status"] == 503 and err["code"] == "upstream_unavailable"
    assert get(gw, "/open")[0] == 200  # only the limited route depends on Redis
    before = len(b.requests_to("/ok"))
    assert before == 2  # the first /r and /open: a denied request never reaches the backend
    srv.start()
    wait_until(lambda: get(gw, "/r")[0] == 200, timeout=8, interval=0.05, what="Redis to be used again")
    m = redis_metrics(http, admin)
    assert m["error"] >= 5 and m["ok"] >= 2
    assert gw.running()


def test_redis_that_never_answers(backend, estuary, silent, http):
    """A server that accepts and hangs: each call gives up after `timeout`; after a few in a
    row the client drops the connection and fails fast while it backs off."""
    b = ok_backend(backend)
    s = silent()
    cfg, admin = config(b, s.address, burst=100, on_failure="deny", timeout="300ms")
    gw = admin_started(estuary(cfg))
    t0 = time.monotonic()
    st, _, body = get(gw, "/r")
    took = time.monotonic() - t0
    assert st == 503 and json.loads(body)["error"]["code"] == "upstream_unavailable"
    assert 0.25 <= took < 2.0, took  # ~timeout, not forever
    wait_until(lambda: s.received > 0, timeout=5, what="the command to reach the server")
    assert redis_metrics(http, admin)["timeout"] == 1
    for _ in range(3):
        assert get(gw, "/r")[0] == 503
    m = redis_metrics(http, admin)
    assert m["timeout"] >= 3 and m["ok"] == 0


def test_timeout_allow(backend, estuary, silent, http):
    b = ok_backend(backend)
    s = silent()
    cfg, admin = config(b, s.address, burst=0, on_failure="allow", timeout="200ms")
    gw = admin_started(estuary(cfg))
    t0 = time.monotonic()
    assert [get(gw, "/r")[0] for _ in range(3)] == [200] * 3  # burst 0, yet allowed: not counted
    assert time.monotonic() - t0 >= 0.5  # each waited its timeout (the third one drops the connection)
    assert redis_metrics(http, admin)["timeout"] == 3
    assert len(b.requests_to("/ok")) == 3

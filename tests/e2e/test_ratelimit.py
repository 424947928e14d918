"""Rate limits with the local store (SPEC "Access control and traffic policy", rate_limits;
docs/ratelimit.md): GCRA exact counts with a burst, per key (client_ip, header:NAME, route),
the 429 reply and its headers, the RateLimit header on allowed replies, one limit shared by
the workers, reload keeping an unchanged policy's state, metrics, and no refused request
reaching the backend.

The limits use a slow refill ("per": "1h") wherever a test counts, so that no request is
refilled while the test runs and the counts are exact, whatever the machine's speed."""
import http.client as hc
import json
import signal
import time

from harness import json_reply, upstream, wait_until
from test_admin import admin_config, admin_started, metric, parse_metrics

CAP = "1h"  # no refill during a test


def get(gw, path, headers=None, source="127.0.0.1"):
    """One GET on a fresh connection from `source` (any 127.x address) -> (status, headers, body)."""
    c = hc.HTTPConnection("127.0.0.1", gw.port, timeout=10, source_address=(source, 0))
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def statuses(gw, path, n, **kw):
    return [get(gw, path, **kw)[0] for _ in range(n)]


def config(b, limits, routes, **extra):
    cfg = {"upstreams": {"u": upstream(b)}, "rate_limits": limits,
           "routes": [dict({"path": p, "rate_limit": rl, "proxy": {"upstream": "u", "path": "/ok"}}, **rx)
                      for p, rl, rx in routes]}
    cfg.update(extra)
    return cfg


def ok_backend(backend):
    b = backend("rl")
    b.get("/ok", json_reply({"ok": True}))
    return b


def reload(gw, cfg):
    before = gw.stderr().count("reloaded")
    gw.config = cfg
    gw.config_path.write_text(json.dumps(cfg, indent=2))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.stderr().count("reloaded") > before, timeout=10, what="the reload")


def test_burst_exact_count_and_backend_sees_only_allowed(backend, estuary):
    b = ok_backend(backend)
    gw = estuary(config(b, {"p": {"rate": 1, "per": CAP, "burst": 4, "key": "client_ip"}}, [("/a", "p", {})]))
    got = statuses(gw, "/a", 9)
    assert got == [200] * 5 + [429] * 4  # burst + 1 at once, then refused
    assert len(b.requests_to("/ok")) == 5  # a refused request never reaches the backend


def test_refused_reply_json_and_headers(backend, estuary):
    b = ok_backend(backend)
    gw = estuary(config(b, {"slow": {"rate": 2, "per": "10s", "burst": 1, "key": "client_ip"}}, [("/a", "slow", {})]))
    st, h, body = get(gw, "/a")
    assert st == 200
    # allowed: RateLimit (r = what is left after this one, t = until the bucket is full) and the policy
    assert h.get_all("RateLimit") == ['"slow";r=1;t=5']
    assert h.get_all("RateLimit-Policy") == ['"slow";q=2;w=10']
    assert json.loads(body) == {"ok": True}
    st, h, _ = get(gw, "/a")
    assert st == 200 and h["RateLimit"] == '"slow";r=0;t=10'
    st, h, body = get(gw, "/a")
    assert st == 429
    err = json.loads(body)["error"]
    assert err["status"] == 429 and err["code"] == "rate_limited"
    assert err["request_id"] == h["X-Request-Id"]
    assert h["Content-Type"].startswith("application/json")
    # one request every 5s: the next is allowed in (almost) 5s, rounded up
    assert h.get_all("Retry-After") == ["5"]
    assert h.get_all("RateLimit-Policy") == ['"slow";q=2;w=10']
    assert h.get_all("RateLimit") == ['"slow";r=0;t=5']
    assert len(b.requests_to("/ok")) == 2


def test_refill_at_the_rate(backend, estuary):
    """burst 0, 4 per second: one now, refused, one again 250ms later (polled, bounded)."""
    b = ok_backend(backend)
    gw = estuary(config(b, {"q": {"rate": 4, "per": "1s", "burst": 0, "key": "client_ip"}}, [("/a", "q", {})]))
    st, h, _ = get(gw, "/a")
    assert st == 200 and h["RateLimit"] == '"q";r=0;t=1'
    st, h, _ = get(gw, "/a")
    if st == 429:  # (unless 250ms passed between the two, on a very slow machine)
        assert h["Retry-After"] == "1"
    t0 = time.monotonic()
    wait_until(lambda: get(gw, "/a")[0] == 200, timeout=5, what="a refill")
    assert time.monotonic() - t0 < 2


def test_per_client_ip(backend, estuary):
    b = ok_backend(backend)
    gw = estuary(config(b, {"ip": {"rate": 1, "per": CAP, "burst": 1, "key": "client_ip"}}, [("/a", "ip", {})]))
    assert statuses(gw, "/a", 3, source="127.0.0.2") == [200, 200, 429]
    assert statuses(gw, "/a", 3, source="127.0.0.3") == [200, 200, 429]
    assert statuses(gw, "/a", 1, source="127.0.0.2") == [429]


def test_per_header_and_absent_header_bucket(backend, estuary):
    b = ok_backend(backend)
    gw = estuary(config(b, {"u": {"rate": 1, "per": CAP, "burst": 1, "key": "header:x-user"}}, [("/a", "u", {})]))
    assert statuses(gw, "/a", 3, headers={"X-User": "alice"}) == [200, 200, 429]
    assert statuses(gw, "/a", 2, headers={"x-user": "bob"}) == [200, 200]
    # the header's value, not its name's case, makes the key; values are case-sensitive
    assert statuses(gw, "/a", 1, headers={"X-USER": "alice"}) == [429]
    assert statuses(gw, "/a", 2, headers={"X-User": "Alice"}) == [200, 200]
    # without the header: one shared bucket for every such request (never unlimited)
    assert statuses(gw, "/a", 3) == [200, 200, 429]
    # an empty value is a value, apart from "absent"
    assert statuses(gw, "/a", 2, headers={"X-User": ""}) == [200, 200]
    # a long value (hashed to a bounded key) still has its own bucket
    long_a, long_b = "a" * 3000, "a" * 2999 + "b"
    assert statuses(gw, "/a", 3, headers={"X-User": long_a}) == [200, 200, 429]
    assert statuses(gw, "/a", 1, headers={"X-User": long_b}) == [200]


def test_per_route_key_and_policy_shared_by_routes(backend, estuary):
    b = ok_backend(backend)
    gw = estuary(config(b, {"r": {"rate": 1, "per": CAP, "burst": 2, "key": "route"}},
                        [("/a", "r", {}), ("/b/{id}", "r", {})]))
    # "route": one bucket per route, whoever calls it
    assert statuses(gw, "/a", 2, source="127.0.0.2") == [200, 200]
    assert statuses(gw, "/a", 2, source="127.0.0.3") == [200, 429]
    # another route naming the same policy: the same rate and burst, its own bucket
    assert statuses(gw, "/b/1", 2) == [200, 200]
    assert statuses(gw, "/b/2", 2) == [200, 429]


def test_two_workers_share_one_limit(backend, estuary):
    b = ok_backend(backend)
    gw = estuary(config(b, {"p": {"rate": 1, "per": CAP, "burst": 9, "key": "client_ip"}}, [("/a", "p", {})],
                        workers=2))
    # 60 connections, spread over both workers by the kernel: 10 allowed in all, not 10 each
    got = statuses(gw, "/a", 60)
    assert got.count(200) == 10 and got.count(429) == 50
    assert len(b.requests_to("/ok")) == 10


def test_reload_keeps_unchanged_policy_and_resets_changed(backend, estuary):
    b = ok_backend(backend)
    limits = {"same": {"rate": 1, "per": CAP, "burst": 1, "key": "client_ip"},
              "chg": {"rate": 1, "per": CAP, "burst": 1, "key": "client_ip"}}
    routes = [("/same", "same", {}), ("/chg", "chg", {})]
    gw = estuary(config(b, limits, routes, workers=2))
    assert statuses(gw, "/same", 3) == [200, 200, 429]
    assert statuses(gw, "/chg", 3) == [200, 200, 429]
    new_limits = dict(limits, chg={"rate": 1, "per": CAP, "burst": 2, "key": "client_ip"})
    reload(gw, dict(config(b, new_limits, routes + [("/new", "same", {})], workers=2), listen=gw.config["listen"]))
    # unchanged: still exhausted, on every worker (8 connections)
    assert statuses(gw, "/same", 8) == [429] * 8
    # changed (burst 1 -> 2): a new bucket of 3
    assert statuses(gw, "/chg", 4) == [200, 200, 200, 429]
    # and a reload back keeps the (now changed again) policy fresh, the unchanged one still exhausted
    reload(gw, dict(config(b, limits, routes, workers=2), listen=gw.config["listen"]))
    assert statuses(gw, "/same", 2) == [429, 429]
    assert statuses(gw, "/chg", 3) == [200, 200, 429]


def test_metrics_rate_limited_by_route(backend, estuary, http):
    b = ok_backend(backend)
    acfg, admin = admin_config()
    gw = admin_started(estuary(config(b, {"p": {"rate": 1, "per": CAP, "burst": 0, "key": "client_ip"}},
                                      [("/a", "p", {}), ("/b", "p", {})], **acfg)))
    assert statuses(gw, "/a", 4) == [200, 429, 429, 429]
    assert statuses(gw, "/b", 2) == [429, 429]  # client_ip: one bucket for both routes
    ms = parse_metrics(http.get(admin + "/metrics").text)
    assert metric(ms, "estuary_rate_limited_total", route="/a") == 3
    assert metric(ms, "estuary_rate_limited_total", route="/b") == 2


def test_route_without_rate_limit_is_untouched(backend, estuary):
    b = ok_backend(backend)
    cfg = config(b, {"p": {"rate": 1, "per": CAP, "burst": 0, "key": "client_ip"}}, [("/a", "p", {})])
    cfg["routes"].append({"path": "/free", "proxy": {"upstream": "u", "path": "/ok"}})
    gw = estuary(cfg)
    for _ in range(5):
        st, h, _ = get(gw, "/free")
        assert st == 200 and "RateLimit" not in h
    assert statuses(gw, "/a", 2) == [200, 429]


# ---- the stage with "store": "redis" (the Redis client itself: test_ratelimit_redis.py)

import pytest  # noqa: E402

import redis_server  # noqa: E402


@pytest.fixture
def redis(tmp_path):
    if not redis_server.available():
        pytest.skip("redis-server is not installed (scripts/install-deps.sh)")
    srv = redis_server.RedisServer(tmp_path / "redis").start()
    yield srv
    srv.stop()


def redis_config(b, address, on_failure, burst=2):
    return config(b, {"shared": {"rate": 1, "per": CAP, "burst": burst, "key": "header:x-user", "store": "redis"}},
                  [("/a", "shared", {})],
                  redis={"address": address, "timeout": "500ms", "on_failure": on_failure})


def test_redis_store_exact_count_and_headers(backend, estuary, redis):
    b = ok_backend(backend)
    gw = estuary(redis_config(b, redis.address, "deny"))
    for r in (2, 1, 0):
        st, h, _ = get(gw, "/a", headers={"X-User": "carol"})
        assert st == 200 and h["RateLimit"] == f'"shared";r={r};t={3600 * (3 - r)}'
        assert h["RateLimit-Policy"] == '"shared";q=3;w=3600'
    st, h, body = get(gw, "/a", headers={"X-User": "carol"})
    assert st == 429 and json.loads(body)["error"]["code"] == "rate_limited"
    assert h["Retry-After"] == "3600" and h["RateLimit"] == '"shared";r=0;t=3600'
    assert statuses(gw, "/a", 1, headers={"X-User": "dave"}) == [200]
    assert len(b.requests_to("/ok")) == 4


def test_redis_down_on_failure_deny_and_allow(backend, estuary, redis):
    b = ok_backend(backend)
    address = redis.address
    redis.stop()
    deny = estuary(redis_config(b, address, "deny"))
    st, h, body = get(deny, "/a", headers={"X-User": "erin"})
    assert st == 503 and json.loads(body)["error"]["code"] == "upstream_unavailable"
    assert "RateLimit" not in h
    allow = estuary(redis_config(b, address, "allow", burst=0))
    for _ in range(3):  # burst 0, yet all pass: the store is down and on_failure allows
        st, h, _ = get(allow, "/a", headers={"X-User": "erin"})
        assert st == 200 and "RateLimit" not in h
    assert len(b.requests_to("/ok")) == 3


# ---- claim:NAME keys (the auth stage sets the claims)

def test_per_claim_and_absent_claim_bucket(backend, estuary, tmp_path):
    from authkit import AUDIENCE, ISSUER, AuthKit
    kit = AuthKit()
    secret = kit.write_secret(tmp_path / "hs.key")
    b = ok_backend(backend)
    cfg = config(b, {"user": {"rate": 1, "per": CAP, "burst": 1, "key": "claim:sub"}}, [("/a", "user", {})],
                 auth={"jwt": {"idp": {"secret_file": secret, "algorithms": ["HS256"],
                                       "issuer": ISSUER, "audience": AUDIENCE}}})
    cfg["routes"][0]["auth"] = ["idp"]
    gw = estuary(cfg)

    def call(n, **claims):
        return statuses(gw, "/a", n, headers={"Authorization": "Bearer " + kit.token("HS256", **claims)})

    assert call(3, sub="alice") == [200, 200, 429]
    assert call(2, sub="bob") == [200, 200]
    # a non-string claim is keyed by its JSON text: 7 and "7" are different users
    assert call(3, sub=7) == [200, 200, 429]
    assert call(1, sub="7") == [200]
    # no "sub": one shared bucket for every such token
    assert call(3, sub=None) == [200, 200, 429]
    # refused by auth first: not counted by the limit
    assert statuses(gw, "/a", 3) == [401, 401, 401]
    assert call(1, sub="bob") == [429]
    assert len(b.requests_to("/ok")) == 9


def test_redis_hanging_client_leaves_then_timeout_denies(backend, estuary):
    """A Redis that never answers: a client that leaves while its request waits cancels the
    call (no crash, no late resume: the sanitizer build checks); one that stays gets the
    on_failure reply within redis.timeout (sooner when the client has already given up on
    that connection: redis.md)."""
    srv = redis_server.SilentServer()
    try:
        b = ok_backend(backend)
        cfg = redis_config(b, srv.address, "deny")
        cfg["redis"]["timeout"] = "1s"
        gw = estuary(cfg)
        for _ in range(5):
            c = hc.HTTPConnection("127.0.0.1", gw.port, timeout=0.2)
            c.request("GET", "/a", headers={"X-User": "frank"})
            try:
                c.getresponse()
                raise AssertionError("a reply before redis.timeout")
            except TimeoutError:
                pass
            c.close()  # gone while waiting for Redis
        t0 = time.monotonic()
        st, h, body = get(gw, "/a", headers={"X-User": "frank"})
        assert st == 503 and json.loads(body)["error"]["code"] == "upstream_unavailable"
        assert time.monotonic() - t0 < 3
        assert "RateLimit" not in h
        assert len(b.requests_to("/ok")) == 0
    finally:
        srv.close()


def test_refused_reload_does_not_lose_state(backend, estuary):
    """A reload refused after its policies were built (a listener that cannot be bound) leaves
    the serving generation's state as the one the next reload keeps."""
    import socket
    b = ok_backend(backend)
    limits = {"p": {"rate": 1, "per": CAP, "burst": 1, "key": "client_ip"}}
    gw = estuary(config(b, limits, [("/a", "p", {})]))
    assert statuses(gw, "/a", 3) == [200, 200, 429]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        bad = dict(config(b, limits, [("/a", "p", {})]),
                   listen=gw.config["listen"] + [{"host": "127.0.0.1", "port": busy.getsockname()[1]}])
        before = gw.stderr().count("reload failed")
        gw.config_path.write_text(json.dumps(bad))
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: gw.stderr().count("reload failed") > before, timeout=10, what="the refused reload")
    finally:
        busy.close()
    assert statuses(gw, "/a", 1) == [429]
    reload(gw, dict(config(b, limits, [("/a", "p", {}), ("/b", "p", {})]), listen=gw.config["listen"]))
    assert statuses(gw, "/a", 2) == [429, 429]

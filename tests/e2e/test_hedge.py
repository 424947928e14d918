"""Hedging per upstream (SPEC "Caching, coalescing and hedging"; docs/upstream.md "Hedging"):
one slow replica does not drag the client's tail, within the budget; POST is never hedged; a
hedge loser's connection is closed; the hedges are counted and logged."""
import json
import time

from harness import delayed, json_reply, wait_until
from test_admin import admin_config, admin_started, metric
from test_metrics_move import scrape


def two_replicas(backend, slow_seconds):
    slow, fast = backend("slow"), backend("fast")
    slow.get("/r", delayed(slow_seconds, {"who": "slow"}))
    fast.get("/r", json_reply({"who": "fast"}))
    slow.route("POST", "/r", delayed(slow_seconds, {"who": "slow"}))
    fast.route("POST", "/r", json_reply({"who": "fast"}))
    return slow, fast


def config(slow, fast, hedge=None, **extra):
    up = {"targets": [slow.url, fast.url]}
    if hedge is not None:
        up["hedge"] = hedge
    cfg, admin = admin_config({"workers": 1, "upstreams": {"u": up},
                               "routes": [{"path": "/p", "methods": ["GET", "POST"], "proxy": {"upstream": "u", "path": "/r"}}],
                               **extra})
    return cfg, admin


def timed_gets(http, gw, n):
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        r = http.get(gw.url("/p"))
        times.append(time.monotonic() - t0)
        assert r.status == 200
    return sorted(times)


def test_hedged_tail_close_to_the_fast_replica(backend, estuary, http):
    slow, fast = two_replicas(backend, 0.3)
    cfg, admin = config(slow, fast, {"delay": "50ms", "budget": "50%"}, access_log="access.log")
    gw = admin_started(estuary(cfg))
    timed_gets(http, gw, 4)  # the budget counts first attempts: let it have some
    times = timed_gets(http, gw, 40)
    p99 = times[int(len(times) * 0.99) - 1] if len(times) >= 100 else times[-1]
    assert p99 < 0.2, f"p99 {p99 * 1000:.0f} ms with one replica at 300 ms"
    m = scrape(http, admin)
    won = metric(m, "estuary_upstream_hedges_total", upstream="u", result="won")
    lost = metric(m, "estuary_upstream_hedges_total", upstream="u", result="lost")
    refused = metric(m, "estuary_upstream_hedges_total", upstream="u", result="refused")
    assert won >= 20, (won, lost, refused)  # every request sent to the slow replica in the measured 40
    # backend requests: 44 first attempts, plus the hedges, never more than 50% of them
    sent = slow.request_count + fast.request_count
    assert sent == 44 + won + lost + metric(m, "estuary_upstream_hedges_total", upstream="u", result="failed")
    assert sent <= 44 * 1.5, sent
    lines = wait_until(lambda: (lambda ls: ls if len(ls) >= 44 else None)(
        [json.loads(x) for x in (gw.workdir / "access.log").read_text().splitlines() if x.strip()]
        if (gw.workdir / "access.log").exists() else []), timeout=5, what="44 access log lines")
    hedged = [ln for ln in lines if ln["upstreams"] and ln["upstreams"][0].get("hedge") is True]
    assert len(hedged) >= 20
    assert all(ln["upstreams"][0]["hedge_won"] for ln in hedged[-20:])
    assert all("hedge" not in ln["upstreams"][0] for ln in lines if ln not in hedged)


def test_without_hedge_the_slow_replica_shows(backend, estuary, http):
    slow, fast = two_replicas(backend, 0.3)
    cfg, admin = config(slow, fast)
    gw = admin_started(estuary(cfg))
    times = timed_gets(http, gw, 6)
    assert times[-1] >= 0.3  # round robin: every second request waits for the slow replica
    assert slow.request_count + fast.request_count == 6


def test_post_is_never_hedged(backend, estuary, http):
    slow, fast = two_replicas(backend, 0.3)
    cfg, admin = config(slow, fast, {"delay": "10ms", "budget": "100%"})
    gw = admin_started(estuary(cfg))
    for _ in range(4):
        assert http.post(gw.url("/p"), data=b'{"a": 1}', headers={"Content-Type": "application/json"}).status == 200
    assert (slow.request_count, fast.request_count) == (2, 2)
    m = scrape(http, admin)
    for result in ("won", "lost", "failed", "refused"):
        assert metric(m, "estuary_upstream_hedges_total", upstream="u", result=result) == 0, result


def test_hedge_loser_connection_is_closed(backend, raw_backend, estuary, http):
    hung = raw_backend()  # never answers a path under /hang
    fast = backend("fast")
    fast.get("/hang", json_reply({"who": "fast"}))
    cfg, admin = admin_config({"workers": 1,
                               "upstreams": {"u": {"targets": [hung.url, fast.url],
                                                   "hedge": {"delay": "30ms", "budget": "100%"}}},
                               "routes": [{"path": "/p", "proxy": {"upstream": "u", "path": "/hang"}}]})
    gw = admin_started(estuary(cfg))
    for _ in range(4):
        r = http.get(gw.url("/p"))
        assert r.status == 200 and r.json()["who"] == "fast"
    # two of the four went to the hung replica first and were hedged: both of its connections closed
    assert hung.connections == 2
    wait_until(lambda: hung.closed == 2, timeout=5, what="the hedge losers' connections closed")
    m = scrape(http, admin)
    assert metric(m, "estuary_upstream_hedges_total", upstream="u", result="won") == 2

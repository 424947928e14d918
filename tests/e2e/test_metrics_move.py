"""Every upstream metric that docs/configuration.md ("Visibility") documents moves when its
event happens, and by the right amount: connections created / reused / open / idle, queue
waits, passive-health ejections and retries refused by the retry budget (issue 18, item 4)."""
from harness import delayed, free_port, json_reply, status_reply, upstream, wait_until
from test_admin import admin_config, admin_started, metric, parse_metrics


def scrape(http, admin):
    """A scrape every worker answered (under load one may miss the admin's 1 s window)."""
    return wait_until(lambda: (lambda m: m if metric(m, "estuary_workers_missing") == 0 else None)(
        parse_metrics(http.get(admin + "/metrics").body.decode())), timeout=10, what="a complete scrape")


def test_pool_metrics_move(backend, estuary, http):
    b = backend("pool")
    b.get("/slow", delayed(0.3, {"ok": True}))
    cfg, admin = admin_config({
        "workers": 1,
        "upstreams": {"u": upstream(b, pool={"max_connections": 1, "max_idle": 1})},
        "routes": [{"path": "/slow", "proxy": {"upstream": "u", "path": "/slow"}}]})
    gw = admin_started(estuary(cfg))
    before = scrape(http, admin)
    for name in ("estuary_upstream_queue_waits_total", "estuary_upstream_connections_reused_total",
                 "estuary_upstream_connections_created_total", "estuary_upstream_ejections_total",
                 "estuary_upstream_retries_budget_exceeded_total", "estuary_upstream_tls_resumptions_total"):
        assert (name, frozenset({"upstream": "u"}.items())) in before, name
        assert metric(before, name, upstream="u") == 0, name

    # two at once through one connection: the second waits for it, then reuses it
    rs = http.concurrent([("GET", gw.url("/slow"), None, None)] * 2)
    assert [r.status for r in rs] == [200, 200]
    m = wait_until(lambda: (lambda m: m if metric(m, "estuary_upstream_connections", upstream="u", state="idle") == 1
                            else None)(scrape(http, admin)), timeout=5, what="the connection back in the pool")
    assert metric(m, "estuary_upstream_queue_waits_total", upstream="u") == 1
    assert metric(m, "estuary_upstream_connections_created_total", upstream="u") == 1
    assert metric(m, "estuary_upstream_connections_reused_total", upstream="u") == 1
    assert metric(m, "estuary_upstream_connections", upstream="u", state="open") == 1
    assert b.connections == 1


def test_ejection_is_counted(backend, estuary, http):
    alive = backend("alive")
    alive.get("/r", json_reply({"t": 1}))
    dead_port = free_port()
    cfg, admin = admin_config({
        "workers": 1,
        "upstreams": {"u": {"targets": [alive.url, f"http://127.0.0.1:{dead_port}"],
                            "retry": {"attempts": 2, "backoff": "1ms", "on": ["connect_failure"]}}},
        "routes": [{"path": "/p", "proxy": {"upstream": "u", "path": "/r"}}]})
    gw = admin_started(estuary(cfg))
    for _ in range(10):  # round robin: every second request tries the dead address first
        assert http.get(gw.url("/p")).status == 200
    m = scrape(http, admin)
    # 3 connect failures eject the address (docs/configuration.md); the rest go to the live one
    assert metric(m, "estuary_upstream_ejections_total", upstream="u") == 1
    assert metric(m, "estuary_upstream_attempts_total", upstream="u", result="connect_failure") == 3


def test_retry_budget_refusals_are_counted(backend, estuary, http):
    b = backend("busy")
    b.get("/r", status_reply(503, {"busy": True}))
    cfg, admin = admin_config({
        "workers": 1,
        "upstreams": {"u": upstream(b, retry={"attempts": 2, "backoff": "400ms", "max_backoff": "400ms",
                                              "on": ["503"]})},
        "routes": [{"path": "/p", "proxy": {"upstream": "u", "path": "/r"}}]})
    gw = admin_started(estuary(cfg))
    # 10 failing at once: at most max(3, 20% of 10) retries may be in progress (their 200-400 ms
    # backoff keeps them so); the other failures are refused a retry and counted
    rs = http.concurrent([("GET", gw.url("/p"), None, None)] * 10)
    assert [r.status for r in rs] == [503] * 10
    m = scrape(http, admin)
    exceeded = metric(m, "estuary_upstream_retries_budget_exceeded_total", upstream="u")
    retries = metric(m, "estuary_upstream_retries_total", upstream="u")
    assert exceeded + retries == 10, (exceeded, retries)
    assert exceeded >= 1, "no retry was refused by the budget"
    assert b.request_count == 10 + retries

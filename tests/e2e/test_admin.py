"""Admin listener: /healthz, /readyz (503 while draining), /metrics, /config (redacted), 404."""
import re
import signal
import threading

from harness import delayed, free_port, json_reply, upstream, wait_for_port, wait_until

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset(labels.items())): float}; checks the 0.0.4 text format as it goes."""
    out = {}
    types = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            assert typ in ("counter", "gauge", "histogram"), line
            types[name] = typ
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        name, labels = m.group(1), dict(LABEL.findall(m.group(3) or ""))
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"sample without # TYPE: {line!r}"
        key = (name, frozenset(labels.items()))
        assert key not in out, f"duplicate sample: {line!r}"
        out[key] = float(m.group(4))
    return out


def metric(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())), 0.0)


def admin_started(gw):
    """The harness waits for the gateway's listeners; the admin one opens just after them."""
    wait_for_port("127.0.0.1", gw.config["admin"]["port"], 10, gw.proc)
    return gw


def admin_config(extra=None):
    port = free_port()
    cfg = {"admin": {"host": "127.0.0.1", "port": port}}
    cfg.update(extra or {})
    return cfg, f"http://127.0.0.1:{port}"


def gateway(backend, estuary, workers=2, shutdown_timeout="2s", **kw):
    b = backend("adm")
    b.get("/a", json_reply({"a": 1}))
    b.get("/b", json_reply({"b": 2}))
    b.get("/slow", delayed(1.5, {"slow": True}))
    cfg, admin = admin_config({
        "workers": workers, "shutdown_timeout": shutdown_timeout,
        "upstreams": {"u": upstream(b)},
        "routes": [{"path": "/a", "backends": [{"upstream": "u", "path": "/a", "group": "a"}]},
                   {"path": "/p/{x}", "proxy": {"upstream": "u", "path": "/b"}},
                   {"path": "/slow", "proxy": {"upstream": "u", "path": "/slow"}}]})
    gw = admin_started(estuary(cfg, **kw))
    return gw, admin, b


def test_healthz_readyz_and_404(backend, estuary, http):
    gw, admin, _ = gateway(backend, estuary)
    r = http.get(admin + "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}
    # /readyz turns 200 once the workers are up, which can be just after the ports accept
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(http.get(admin + "/readyz")), timeout=5,
                   what="/readyz 200")
    assert r.json() == {"status": "ready"}
    r = http.get(admin + "/nope")
    assert r.status == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["status"] == 404
    r = http.post(admin + "/healthz", data=b"x")
    assert r.status == 405


def test_readyz_503_while_draining(backend, estuary, http):
    gw, admin, b = gateway(backend, estuary, shutdown_timeout="10s")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", http.get(gw.url("/slow"))))
    t.start()
    wait_until(lambda: b.request_count == 1, timeout=5, what="the slow request to reach the backend")
    assert http.get(admin + "/readyz").status == 200
    gw.proc.send_signal(signal.SIGTERM)
    r = wait_until(lambda: (lambda x: x if x.status == 503 else None)(http.get(admin + "/readyz", timeout=2)),
                   timeout=5, what="/readyz to answer 503")
    assert r.json() == {"status": "draining"}
    # the admin listener stays up during the drain, and the in-flight request is still running
    assert gw.running()
    assert http.get(admin + "/healthz").status == 200
    t.join(10)
    assert result["r"].status == 200 and result["r"].json() == {"slow": True}
    assert gw.stop() == 0


def test_metrics_move_exactly(backend, estuary, http):
    gw, admin, _ = gateway(backend, estuary)
    r = http.get(admin + "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    # a worker busy starting up may miss the 1 s snapshot deadline on a loaded machine
    before = wait_until(lambda: (lambda m: m if metric(m, "estuary_workers_missing") == 0 else None)(
        parse_metrics(http.get(admin + "/metrics").text)), timeout=10, what="every worker to answer")
    assert metric(before, "estuary_workers") == 2
    assert metric(before, "estuary_config_generation") == 1
    assert metric(before, "estuary_ready") == 1
    for name in ("estuary_dns_cache_hits_total", "estuary_dns_cache_misses_total",
                 "estuary_dns_stale_answers_total", "estuary_client_connections"):
        assert ("%s" % name, frozenset()) in before, name
    assert ("estuary_dns_queries_total", frozenset({"result": "ok"}.items())) in before
    assert ("estuary_config_reloads_total", frozenset({"result": "ok"}.items())) in before
    # every route has its histogram, even before any request
    assert metric(before, "estuary_request_duration_seconds_count", route="/a") == 0
    assert ("estuary_request_duration_seconds_bucket", frozenset({"route": "/a", "le": "+Inf"}.items())) in before

    key = dict(route="/a", method="GET", status="200")
    for i in range(1, 4):
        assert http.get(gw.url("/a")).status == 200
        after = wait_until(lambda: (lambda m: m if metric(m, "estuary_requests_total", **key) >= i else None)(
            parse_metrics(http.get(admin + "/metrics").text)), timeout=5, what="the request counter")
        assert metric(after, "estuary_requests_total", **key) == i
    # nothing else moved: no other route/status series got a request
    others = {k: v for k, v in after.items() if k[0] == "estuary_requests_total" and dict(k[1]) != key}
    assert others == {}
    assert metric(after, "estuary_request_duration_seconds_count", route="/a") == 3
    assert metric(after, "estuary_request_duration_seconds_bucket", route="/a", le="+Inf") == 3
    assert metric(after, "estuary_request_duration_seconds_sum", route="/a") > 0
    assert metric(after, "estuary_upstream_attempts_total", upstream="u", result="ok") == 3
    assert metric(after, "estuary_upstream_connections_created_total", upstream="u") >= 1

    # a proxy request and a 404 land in their own series
    assert http.get(gw.url("/p/1")).status == 200
    assert http.get(gw.url("/nowhere")).status == 404
    final = wait_until(lambda: (lambda m: m if metric(m, "estuary_requests_total", route="none", method="GET",
                                                      status="404") == 1 and
                                metric(m, "estuary_requests_total", route="/p/{x}", method="GET", status="200") == 1
                                else None)(parse_metrics(http.get(admin + "/metrics").text)),
                       timeout=5, what="the proxy and 404 counters")
    assert metric(final, "estuary_requests_total", **key) == 3
    assert metric(final, "estuary_upstream_attempts_total", upstream="u", result="ok") == 4


def test_metrics_upstream_failures_and_retries(backend, estuary, http):
    dead = f"http://127.0.0.1:{free_port()}"
    cfg, admin = admin_config({
        "upstreams": {"dead": upstream(dead, retry={"attempts": 2, "backoff": "1ms", "on": ["connect_failure"]})},
        "routes": [{"path": "/d", "proxy": {"upstream": "dead", "path": "/"}}]})
    gw = admin_started(estuary(cfg))
    assert http.get(gw.url("/d")).status == 502
    m = wait_until(lambda: (lambda m: m if metric(m, "estuary_requests_total", route="/d", method="GET",
                                                  status="502") == 1 else None)(
        parse_metrics(http.get(admin + "/metrics").text)), timeout=5, what="the 502 counter")
    assert metric(m, "estuary_upstream_attempts_total", upstream="dead", result="connect_failure") == 2
    assert metric(m, "estuary_upstream_retries_total", upstream="dead") == 1
    assert metric(m, "estuary_upstream_attempts_total", upstream="dead", result="ok") == 0


def test_config_redacts_secrets(backend, estuary, http):
    cfg, admin = admin_config({"upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
                               "routes": [{"path": "/", "proxy": {"upstream": "u", "path": "/"}}]})
    gw = admin_started(estuary(cfg, tls=True))
    r = http.get(admin + "/config")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    tls_listener = [ln for ln in doc["listen"] if "tls" in ln][0]
    assert tls_listener["tls"]["key_file"] == "<redacted>"
    assert tls_listener["tls"]["certificate_file"].endswith(".pem")
    assert "<redacted>" not in r.text.replace('"key_file": "<redacted>"', "")
    assert doc["routes"] == cfg["routes"]
    assert doc["admin"] == cfg["admin"]

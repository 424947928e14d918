"""Tracing (SPEC "Tracing"): W3C traceparent/tracestate continued or started, a new parent id
per upstream attempt, spans exported as OTLP/HTTP JSON to a collector run by the test, which
checks the encoding and that each request's spans form one tree; a collector that is down or
slow leaves request latency unchanged and its losses are counted on /metrics."""
import json
import re
import statistics
import time

from aiohttp import web

from harness import delayed, free_port, json_reply, upstream, wait_until
from test_admin import admin_config, admin_started, metric, parse_metrics

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
IN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
IN_PARENT = "00f067aa0ba902b7"


def check_otlp(doc):
    """Checks one ExportTraceServiceRequest (OTLP/HTTP JSON encoding); returns its spans."""
    assert set(doc) == {"resourceSpans"}, doc.keys()
    out = []
    for rs in doc["resourceSpans"]:
        attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
        assert attrs["service.name"] == {"stringValue": "edge"}
        for ss in rs["scopeSpans"]:
            assert ss["scope"]["name"] == "estuary"
            for sp in ss["spans"]:
                assert HEX32.match(sp["traceId"]) and sp["traceId"] != "0" * 32, sp
                assert HEX16.match(sp["spanId"]) and sp["spanId"] != "0" * 16, sp
                if "parentSpanId" in sp:
                    assert HEX16.match(sp["parentSpanId"]), sp
                assert sp["kind"] in (2, 3), sp
                assert isinstance(sp["name"], str) and sp["name"]
                start, end = int(sp["startTimeUnixNano"]), int(sp["endTimeUnixNano"])
                assert 0 < start <= end and abs(start / 1e9 - time.time()) < 60, sp
                for a in sp["attributes"]:
                    assert set(a) == {"key", "value"} and len(a["value"]) == 1, a
                assert isinstance(sp["status"], dict)
                sp["attrs"] = {a["key"]: next(iter(a["value"].values())) for a in sp["attributes"]}
                out.append(sp)
    return out


class Collector:
    """An OTLP/HTTP endpoint: POST /v1/traces with a JSON body, answered 200 (after `delay`)."""

    def __init__(self, backend, delay=0.0):
        self.b = backend("otlp")
        self.delay = delay

        async def receive(request):
            assert request.headers["Content-Type"] == "application/json"
            doc = json.loads(await request.read())
            check_otlp(doc)  # an invalid document is a test failure (raised in spans())
            if self.delay:
                await __import__("asyncio").sleep(self.delay)
            return web.json_response({})

        self.b.route("POST", "/v1/traces", receive)

    @property
    def endpoint(self):
        return f"{self.b.url}/v1/traces"

    def spans(self):
        out = []
        for r in list(self.b.requests):
            assert r.method == "POST" and r.path == "/v1/traces"
            out += check_otlp(json.loads(r.body))
        return out

    def trace(self, trace_id, n, timeout=5):
        """The spans of one trace once `n` of them arrived (bounded wait)."""
        return wait_until(lambda: (lambda s: s if len(s) >= n else None)(
            [sp for sp in self.spans() if sp["traceId"] == trace_id]), timeout=timeout,
            what=f"{n} spans of trace {trace_id}")


def tracing(endpoint, ratio=1.0):
    return {"otlp_endpoint": endpoint, "service_name": "edge", "sample_ratio": ratio}


def seen_traceparent(rec):
    m = TRACEPARENT.match(rec.headers.get("traceparent", ""))
    assert m, rec.headers.get("traceparent")
    return m.groups()  # trace id, parent id, flags


def one_tree(spans):
    """The spans of one request: exactly one root (server span), every client span its child."""
    servers = [s for s in spans if s["kind"] == 2]
    clients = [s for s in spans if s["kind"] == 3]
    assert len(servers) == 1, spans
    srv = servers[0]
    ids = {s["spanId"] for s in spans}
    assert len(ids) == len(spans), "span ids are unique"
    for c in clients:
        assert c["parentSpanId"] == srv["spanId"], (c, srv)
    return srv, clients


def start(backend, estuary, routes, ups, trace_conf, **extra):
    cfg = {"upstreams": ups, "routes": routes}
    if trace_conf is not None:
        cfg["tracing"] = trace_conf
    cfg.update(extra)
    return estuary(cfg)


def test_proxy_request_is_one_tree(backend, estuary, http):
    col = Collector(backend)
    b = backend("users")
    b.get("/users/{id}", json_reply({"id": 1}))
    gw = start(backend, estuary, [{"path": "/u/{id}", "proxy": {"upstream": "users", "path": "/users/{id}"}}],
               {"users": upstream(b)}, tracing(col.endpoint))
    r = http.get(gw.url("/u/7?secret=1"))
    assert r.status == 200
    trace_id, parent, flags = seen_traceparent(b.last)
    assert flags == "01"
    srv, clients = one_tree(col.trace(trace_id, 2))
    assert "parentSpanId" not in srv, "a new trace: the server span is the root"
    assert srv["name"] == "GET /u/{id}"
    assert srv["attrs"]["http.request.method"] == "GET"
    assert srv["attrs"]["http.route"] == "/u/{id}"
    assert srv["attrs"]["url.path"] == "/u/7", "no query string"
    assert srv["attrs"]["http.response.status_code"] == "200"
    assert srv["status"] == {}
    (c,) = clients
    assert c["spanId"] == parent, "the backend's parent-id is the client span"
    assert c["attrs"]["estuary.upstream"] == "users"
    assert c["attrs"]["network.peer.address"] == "127.0.0.1"
    assert c["attrs"]["network.peer.port"] == str(b.port)
    assert c["attrs"]["estuary.attempt"] == "1"
    assert c["attrs"]["http.response.status_code"] == "200"
    assert int(srv["startTimeUnixNano"]) <= int(c["startTimeUnixNano"]) <= int(c["endTimeUnixNano"]) \
        <= int(srv["endTimeUnixNano"])
    assert "tracestate" not in b.last.headers


def test_incoming_sampled_is_continued(backend, estuary, http):
    col = Collector(backend)
    b = backend("users")
    b.get("/x", json_reply({}))
    gw = start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
               {"u": upstream(b)}, tracing(col.endpoint, ratio=0))
    r = http.get(gw.url("/x"), headers={"traceparent": f"00-{IN_TRACE}-{IN_PARENT}-01",
                                        "tracestate": "vendor=abc,other=1"})
    assert r.status == 200
    trace_id, parent, flags = seen_traceparent(b.last)
    assert (trace_id, flags) == (IN_TRACE, "01"), "same trace, sampled flag honoured over ratio 0"
    assert parent != IN_PARENT, "replaced by estuary's own span"
    assert b.last.headers.getall("traceparent") == [f"00-{IN_TRACE}-{parent}-01"], "sent once, not forwarded"
    assert b.last.headers.getall("tracestate") == ["vendor=abc,other=1"]
    srv, (c,) = one_tree(col.trace(IN_TRACE, 2))
    assert srv["parentSpanId"] == IN_PARENT, "the server span is a child of the client's span"
    assert c["spanId"] == parent


def test_unsampled_is_propagated_not_exported(backend, estuary, http):
    col = Collector(backend)
    b = backend("users")
    b.get("/x", json_reply({}))
    gw = start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
               {"u": upstream(b)}, tracing(col.endpoint, ratio=1.0))
    unsampled = "a" * 32
    r = http.get(gw.url("/x"), headers={"traceparent": f"00-{unsampled}-{IN_PARENT}-00"})
    assert r.status == 200
    trace_id, parent, flags = seen_traceparent(b.last)
    assert (trace_id, flags) == (unsampled, "00") and parent != IN_PARENT
    # a sampled request after it: once its spans arrived, the unsampled one would have too
    r = http.get(gw.url("/x"), headers={"traceparent": f"00-{IN_TRACE}-{IN_PARENT}-01"})
    col.trace(IN_TRACE, 2)
    assert not [s for s in col.spans() if s["traceId"] == unsampled]


def test_ratio_zero_exports_nothing_of_its_own(backend, estuary, http):
    col = Collector(backend)
    b = backend("users")
    b.get("/x", json_reply({}))
    gw = start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
               {"u": upstream(b)}, tracing(col.endpoint, ratio=0))
    started = set()
    for _ in range(20):
        assert http.get(gw.url("/x")).status == 200
        trace_id, _parent, flags = seen_traceparent(b.last)
        assert flags == "00"
        started.add(trace_id)
    assert len(started) == 20, "every request starts its own trace"
    # a sampled request (continued) flushes through the same queue: nothing else came with it
    http.get(gw.url("/x"), headers={"traceparent": f"00-{IN_TRACE}-{IN_PARENT}-01"})
    col.trace(IN_TRACE, 2)
    assert {s["traceId"] for s in col.spans()} == {IN_TRACE}


def test_retries_get_one_span_each(backend, estuary, http):
    col = Collector(backend)
    b = backend("flaky")
    calls = []

    async def flaky(request):
        calls.append(1)
        if len(calls) <= 2:
            return web.json_response({"busy": True}, status=503)
        return web.json_response({"ok": True})

    b.get("/f", flaky)
    ups = {"f": upstream(b, retry={"attempts": 3, "backoff": "1ms", "on": ["503"]})}
    gw = start(backend, estuary, [{"path": "/f", "proxy": {"upstream": "f", "path": "/f"}}], ups, tracing(col.endpoint))
    assert http.get(gw.url("/f")).status == 200
    seen = [seen_traceparent(r) for r in b.requests_to("/f")]
    assert len(seen) == 3
    assert len({t for t, _, _ in seen}) == 1, "one trace"
    parents = [p for _, p, _ in seen]
    assert len(set(parents)) == 3, "a new parent id per attempt"
    srv, clients = one_tree(col.trace(seen[0][0], 4))
    by_id = {c["spanId"]: c for c in clients}
    assert set(by_id) == set(parents)
    for n, p in enumerate(parents, 1):
        assert by_id[p]["attrs"]["estuary.attempt"] == str(n)
    assert by_id[parents[0]]["attrs"]["http.response.status_code"] == "503"
    assert by_id[parents[0]]["status"].get("code") == 2
    assert by_id[parents[2]]["attrs"]["http.response.status_code"] == "200"
    assert by_id[parents[2]]["attrs"]["http.request.resend_count"] == "2"


def test_failed_attempts_and_5xx_are_errors(backend, estuary, http):
    col = Collector(backend)
    dead = f"http://127.0.0.1:{free_port()}"
    ups = {"dead": upstream(dead, retry={"attempts": 2, "backoff": "1ms", "on": ["connect_failure"]})}
    gw = start(backend, estuary, [{"path": "/d", "proxy": {"upstream": "dead", "path": "/"}}], ups, tracing(col.endpoint))
    r = http.get(gw.url("/d"), headers={"traceparent": f"00-{IN_TRACE}-{IN_PARENT}-01"})
    assert r.status == 502
    srv, clients = one_tree(col.trace(IN_TRACE, 3))
    assert srv["status"]["code"] == 2 and srv["attrs"]["http.response.status_code"] == "502"
    assert sorted(c["attrs"]["estuary.attempt"] for c in clients) == ["1", "2"]
    for c in clients:
        assert c["attrs"]["error.type"] == "connect_failure" and c["status"]["code"] == 2


def test_aggregate_two_backends_two_children(backend, estuary, http):
    col = Collector(backend)
    b1, b2 = backend("users"), backend("orders")
    b1.get("/users/{id}", json_reply({"id": 1}))
    b2.get("/orders/{id}", json_reply({"id": 2}))
    route = {"path": "/g/{id}", "backends": [{"upstream": "users", "path": "/users/{id}", "group": "user"},
                                             {"upstream": "orders", "path": "/orders/{id}", "group": "order"}]}
    gw = start(backend, estuary, [route], {"users": upstream(b1), "orders": upstream(b2)}, tracing(col.endpoint))
    assert http.get(gw.url("/g/5")).status == 200
    t1, p1, _ = seen_traceparent(b1.last)
    t2, p2, _ = seen_traceparent(b2.last)
    assert t1 == t2 and p1 != p2
    srv, clients = one_tree(col.trace(t1, 3))
    assert {c["spanId"]: c["attrs"]["estuary.upstream"] for c in clients} == {p1: "users", p2: "orders"}
    assert srv["attrs"]["http.route"] == "/g/{id}"


def test_without_tracing_traceparent_passes_unchanged(backend, estuary, http):
    b = backend("users")
    b.get("/x", json_reply({}))
    gw = start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}], {"u": upstream(b)}, None)
    tp = f"00-{IN_TRACE}-{IN_PARENT}-01"
    assert http.get(gw.url("/x"), headers={"traceparent": tp, "tracestate": "k=v"}).status == 200
    assert b.last.headers.getall("traceparent") == [tp]
    assert b.last.headers.getall("tracestate") == ["k=v"]
    assert http.get(gw.url("/x")).status == 200
    assert "traceparent" not in b.last.headers, "no trace is started without tracing"


def test_access_log_has_trace_id(backend, estuary, http):
    col = Collector(backend)
    b = backend("users")
    b.get("/x", json_reply({}))
    gw = start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}], {"u": upstream(b)},
               tracing(col.endpoint, ratio=0), access_log="access.log")
    r = http.get(gw.url("/x"))
    assert r.status == 200
    trace_id, _, _ = seen_traceparent(b.last)
    path = gw.workdir / "access.log"
    line = wait_until(lambda: path.exists() and path.read_text().strip(), timeout=5, what="an access log line")
    entry = json.loads(line.splitlines()[0])
    assert entry["trace_id"] == trace_id, "logged also when not sampled"


def latencies(http, url, n=40):
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        assert http.get(url).status == 200
        out.append(time.monotonic() - t0)
    return out


def dropped(http, admin):
    return metric(parse_metrics(http.get(admin + "/metrics").body.decode()), "estuary_tracing_spans_dropped_total")


def test_collector_down_costs_nothing(backend, estuary, http):
    b = backend("users")
    b.get("/x", json_reply({}))
    down = f"http://127.0.0.1:{free_port()}/v1/traces"
    cfg, admin = admin_config()
    gw = admin_started(start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
                             {"u": upstream(b)}, tracing(down), **cfg))
    lat = latencies(http, gw.url("/x"))
    assert statistics.median(lat) < 0.05, lat
    # every second an export fails at once (connection refused): its spans are counted
    wait_until(lambda: dropped(http, admin) >= 2, timeout=5, what="dropped spans on /metrics")
    ms = parse_metrics(http.get(admin + "/metrics").body.decode())
    assert metric(ms, "estuary_tracing_spans_exported_total") == 0


def test_slow_collector_costs_nothing(backend, estuary, http):
    col = Collector(backend, delay=6.0)
    b = backend("users")
    b.get("/x", json_reply({}))
    cfg, admin = admin_config()
    gw = admin_started(start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
                             {"u": upstream(b)}, tracing(col.endpoint), **cfg))
    http.get(gw.url("/x"))
    wait_until(lambda: col.b.request_count >= 1, timeout=3, what="the first export to hang")
    lat = latencies(http, gw.url("/x"))  # while the export hangs (at most one in flight)
    assert statistics.median(lat) < 0.05, lat
    assert col.b.request_count == 1, "at most one export in flight per worker"
    # the export is cut at its 5 s bound: its spans are counted as dropped
    wait_until(lambda: dropped(http, admin) >= 2, timeout=6, what="the hung export's spans counted as dropped")


def test_metrics_count_exported(backend, estuary, http):
    col = Collector(backend)
    b = backend("users")
    b.get("/x", json_reply({}))
    cfg, admin = admin_config()
    gw = admin_started(start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
                             {"u": upstream(b)}, tracing(col.endpoint), **cfg))
    for _ in range(3):
        assert http.get(gw.url("/x")).status == 200
    wait_until(lambda: len(col.spans()) >= 6, timeout=5, what="6 spans")
    wait_until(lambda: metric(parse_metrics(http.get(admin + "/metrics").body.decode()),
                              "estuary_tracing_spans_exported_total") >= 6, timeout=3, what="exported count")
    assert dropped(http, admin) == 0


def test_spans_queued_at_sigterm_are_exported(backend, estuary, http):
    """Requests made just before SIGTERM: their spans, still queued (the exporter's tick is 1 s),
    reach the collector in the last export of the graceful shutdown."""
    col = Collector(backend)
    b = backend("users")
    b.get("/x", json_reply({}))
    gw = start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
               {"u": upstream(b)}, tracing(col.endpoint))
    traces = []
    for _ in range(3):
        assert http.get(gw.url("/x")).status == 200
        traces.append(seen_traceparent(b.last)[0])
    assert gw.stop() == 0
    # estuary has exited: what it exported has been received
    got = {sp["traceId"] for sp in col.spans()}
    assert all(t in got for t in traces), (traces, got)
    for t in traces:
        one_tree([sp for sp in col.spans() if sp["traceId"] == t])


def test_last_export_at_shutdown_is_bounded(backend, estuary, http):
    """A collector that hangs does not hold the exit: the last export gets at most 1 s."""
    col = Collector(backend, delay=6.0)
    b = backend("users")
    b.get("/x", json_reply({}))
    gw = start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
               {"u": upstream(b)}, tracing(col.endpoint))
    assert http.get(gw.url("/x")).status == 200
    t0 = time.monotonic()
    assert gw.stop() == 0
    took = time.monotonic() - t0
    assert took < 2.5, took
    assert col.b.request_count >= 1, "the queued spans were sent (and hung)"


def test_invalid_or_repeated_traceparent_starts_a_trace(backend, estuary, http, aio):
    col = Collector(backend)
    b = backend("users")
    b.get("/x", json_reply({}))
    gw = start(backend, estuary, [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}],
               {"u": upstream(b)}, tracing(col.endpoint))
    bad = [f"ff-{IN_TRACE}-{IN_PARENT}-01", f"00-{IN_TRACE.upper()}-{IN_PARENT}-01", f"00-{'0' * 32}-{IN_PARENT}-01",
           f"00-{IN_TRACE}-{'0' * 16}-01", f"00-{IN_TRACE}-{IN_PARENT}-01-extra"]
    for value in bad:
        assert http.get(gw.url("/x"), headers={"traceparent": value, "tracestate": "k=v"}).status == 200
        trace_id, parent, flags = seen_traceparent(b.last)
        assert trace_id != IN_TRACE and flags == "01", value
        assert "tracestate" not in b.last.headers, "no tracestate without a valid traceparent"
        srv, _ = one_tree(col.trace(trace_id, 2))
        assert "parentSpanId" not in srv
    # two traceparent fields: invalid as a whole (W3C Trace Context 3.2.1)
    from multidict import CIMultiDict
    hdrs = CIMultiDict([("traceparent", f"00-{IN_TRACE}-{IN_PARENT}-01"), ("traceparent", f"00-{IN_TRACE}-{IN_PARENT}-01")])
    assert http.get(gw.url("/x"), headers=hdrs).status == 200
    trace_id, _, _ = seen_traceparent(b.last)
    assert trace_id != IN_TRACE and len(b.last.headers.getall("traceparent")) == 1
    # a later version is read for its first four fields
    assert http.get(gw.url("/x"), headers={"traceparent": f"01-{IN_TRACE}-{IN_PARENT}-01-extra"}).status == 200
    assert seen_traceparent(b.last)[0] == IN_TRACE


def test_reload_turns_tracing_on_and_off(backend, estuary, http):
    from test_reload import reload
    col = Collector(backend)
    b = backend("users")
    b.get("/x", json_reply({}))
    base = {"upstreams": {"u": upstream(b)}, "routes": [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}]}
    gw = estuary(dict(base))
    tp = f"00-{IN_TRACE}-{IN_PARENT}-01"
    assert http.get(gw.url("/x"), headers={"traceparent": tp}).status == 200
    assert b.last.headers["traceparent"] == tp
    reload(gw, dict(base, tracing=tracing(col.endpoint), listen=gw.config["listen"], workers=1,
                    dns=gw.config["dns"], shutdown_timeout="2s"))
    assert http.get(gw.url("/x"), headers={"traceparent": tp}).status == 200
    assert b.last.headers["traceparent"] != tp
    col.trace(IN_TRACE, 2)
    reload(gw, dict(base, listen=gw.config["listen"], workers=1, dns=gw.config["dns"], shutdown_timeout="2s"))
    assert http.get(gw.url("/x"), headers={"traceparent": tp}).status == 200
    assert b.last.headers["traceparent"] == tp, "passed through unchanged again"


def test_check_reports_bad_tracing(tmp_path):
    from harness import run_estuary
    path = tmp_path / "t.json"
    path.write_text('{\n  "tracing": {"otlp_endpoint": "ftp://c/v1/traces",\n    "sample_ratio": 2,\n'
                    '    "servic_name": "x"}\n}\n')
    cp = run_estuary(["--check", "-c", str(path)])
    assert cp.returncode == 1
    assert cp.stderr.splitlines() == [
        f'{path}:2:32: tracing.otlp_endpoint: bad URL "ftp://c/v1/traces": it must start with http:// or https://',
        f"{path}:3:21: tracing.sample_ratio: expected a number from 0 to 1, got 2",
        f'{path}:4:5: unknown key "servic_name" in tracing (did you mean "service_name"?)',
    ], cp.stderr
    path.write_text('{"tracing": {"otlp_endpoint": "https://collector.example:4318/v1/traces", "sample_ratio": 0.5}}')
    cp = run_estuary(["--check", "-c", str(path)])
    assert cp.returncode == 0 and cp.stdout.strip() == f"{path}: ok", cp.stderr

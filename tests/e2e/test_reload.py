"""Hot reload (SIGHUP): new requests use the new file, in-flight ones finish on the old one,
no request fails; an invalid file changes nothing and is logged as FILE:LINE:COLUMN;
listeners are added and removed; an unchanged upstream keeps its pooled connection;
reload counters and the config generation move in /metrics."""
import http.client as hc
import json
import re
import signal
import socket
import threading
import time

from harness import delayed, free_port, json_reply, port_open, upstream, wait_for_port, wait_until
from test_admin import admin_config, admin_started, metric, parse_metrics


def reload(gw, config, expect="reloaded"):
    """Writes `config`, sends SIGHUP and waits (bounded) for the outcome in the log."""
    before = gw.stderr().count(expect)
    gw.config = config
    gw.config_path.write_text(json.dumps(config, indent=2))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.stderr().count(expect) > before, timeout=10, what=f"{expect!r} in the log")


def get(port, path, conn=None):
    """GET over `conn` (an http.client connection, kept alive) or a fresh one -> (status, body)."""
    c = conn or hc.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if conn is None:
            c.close()


def two_backends(backend):
    a, b = backend("a"), backend("b")
    for be, name in ((a, "a"), (b, "b")):
        be.get("/r", json_reply({"from": name}))
        be.get("/new", json_reply({"new": name}))
        be.get("/slow", delayed(1.0, {"slow": name}))
    return a, b


def base_config(a, b, route_to="a", extra_routes=()):
    return {"workers": 2,
            "upstreams": {"a": upstream(a), "b": upstream(b)},
            "routes": [{"path": "/r", "proxy": {"upstream": route_to, "path": "/r"}},
                       {"path": "/slow", "proxy": {"upstream": route_to, "path": "/slow"}}] + list(extra_routes)}


def test_reload_under_load_has_zero_failures(backend, estuary):
    a, b = two_backends(backend)
    cfg = base_config(a, b)
    gw = estuary(cfg)
    port = gw.port
    cfg = dict(cfg, listen=gw.config["listen"])
    new_cfg = base_config(a, b, route_to="b", extra_routes=[{"path": "/new", "proxy": {"upstream": "b", "path": "/new"}}])
    new_cfg["listen"] = gw.config["listen"]

    per_thread, threads = 600, 4  # 2,400 requests, keep-alive, some on fresh connections
    results, errors, done = [], [], [0]
    lock = threading.Lock()

    def client(i):
        conn = hc.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for n in range(per_thread):
                if n % 50 == 49:  # now and then a new connection
                    conn.close()
                    conn = hc.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    status, body = get(port, "/r", conn)
                    with lock:
                        results.append((status, body))
                        done[0] += 1
                except Exception as e:  # any failure is a test failure
                    with lock:
                        errors.append(repr(e))
                    conn.close()
                    conn = hc.HTTPConnection("127.0.0.1", port, timeout=10)
        finally:
            conn.close()

    # a slow request in flight across the reload finishes on the old generation
    slow = {}
    st = threading.Thread(target=lambda: slow.setdefault("r", get(port, "/slow")))
    st.start()
    wait_until(lambda: len(a.requests_to("/slow")) == 1, timeout=5, what="the slow request to reach a")

    ts = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    wait_until(lambda: done[0] >= 400, timeout=30, what="400 requests")
    reload(gw, new_cfg)
    wait_until(lambda: done[0] >= 1200, timeout=30, what="1200 requests")
    reload(gw, cfg)  # and back
    wait_until(lambda: done[0] >= 1800, timeout=30, what="1800 requests")
    reload(gw, new_cfg)
    for t in ts:
        t.join(60)
    st.join(10)

    assert errors == [], errors[:5]
    assert len(results) == per_thread * threads
    bad = [r for r in results if r[0] != 200 or json.loads(r[1]) not in ({"from": "a"}, {"from": "b"})]
    assert bad == [], bad[:5]
    assert {json.loads(r[1])["from"] for r in results} == {"a", "b"}
    assert slow["r"] == (200, b'{"slow":"a"}') or json.loads(slow["r"][1]) == {"slow": "a"}

    # new requests see the new config: the route's backend changed, a route was added
    wait_until(lambda: get(port, "/r") == (200, b'{"from":"b"}') or json.loads(get(port, "/r")[1]) == {"from": "b"},
               timeout=5, what="/r to answer from b")
    st_new, body_new = get(port, "/new")
    assert st_new == 200 and json.loads(body_new) == {"new": "b"}
    assert "configuration generation 4" in gw.stderr()


def test_invalid_reload_keeps_serving_and_logs_file_line_column(backend, estuary, http):
    a, b = two_backends(backend)
    acfg, admin = admin_config()
    cfg = dict(base_config(a, b), **acfg)
    gw = admin_started(estuary(cfg))
    cfg["listen"] = gw.config["listen"]
    port = gw.port
    conn = http_conn = hc.HTTPConnection("127.0.0.1", port, timeout=10)
    assert get(port, "/r", conn)[0] == 200  # an idle keep-alive connection across the reloads

    # two problems: an unknown key and an unknown upstream name
    bad = json.dumps(cfg, indent=2).replace('"workers": 2', '"workers": 2,\n  "wrokers": 3')
    bad = bad.replace('"upstream": "a"', '"upstream": "nope"', 1)
    gw.config_path.write_text(bad)
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in gw.stderr(), timeout=10, what="the reload to fail")
    path = re.escape(str(gw.config_path))
    lines = [ln for ln in gw.stderr().splitlines() if re.search(path + r":\d+:\d+: ", ln)]
    assert len(lines) == 2, gw.stderr()
    assert any("wrokers" in ln for ln in lines) and any("nope" in ln for ln in lines)

    # still serving the old config, the keep-alive connection too
    assert json.loads(get(port, "/r", conn)[1]) == {"from": "a"}
    assert json.loads(get(port, "/r")[1]) == {"from": "a"}
    ms = parse_metrics(http.get(admin + "/metrics").text)
    assert metric(ms, "estuary_config_reloads_total", result="error") == 1
    assert metric(ms, "estuary_config_reloads_total", result="ok") == 0
    assert metric(ms, "estuary_config_generation") == 1

    # a syntax error is reported with its position as well
    gw.config_path.write_text('{\n  "listen": [\n')
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.stderr().count("reload failed") == 2, timeout=10, what="the second reload to fail")
    assert re.search(path + r":3:\d+: ", gw.stderr()), gw.stderr()[-2000:]

    # a valid reload then applies and moves the counters
    reload(gw, dict(base_config(a, b, route_to="b"), **acfg, listen=cfg["listen"]))
    wait_until(lambda: json.loads(get(port, "/r")[1]) == {"from": "b"}, timeout=5, what="the new config")
    assert json.loads(get(port, "/r", conn)[1]) == {"from": "b"}  # same connection, new config
    ms = parse_metrics(http.get(admin + "/metrics").text)
    assert metric(ms, "estuary_config_reloads_total", result="ok") == 1
    assert metric(ms, "estuary_config_reloads_total", result="error") == 2
    assert metric(ms, "estuary_config_generation") == 2
    # /config shows the new file
    assert http.get(admin + "/config").json()["routes"][0]["proxy"]["upstream"] == "b"
    http_conn.close()


def test_reload_adds_and_removes_listeners(backend, estuary):
    a, b = two_backends(backend)
    p1, p2 = free_port(), free_port()
    cfg = dict(base_config(a, b), listen=[{"host": "127.0.0.1", "port": p1}])
    gw = estuary(cfg)
    old_conn = hc.HTTPConnection("127.0.0.1", p1, timeout=10)
    assert get(p1, "/r", old_conn)[0] == 200
    assert not port_open("127.0.0.1", p2)

    reload(gw, dict(cfg, listen=[{"host": "127.0.0.1", "port": p1}, {"host": "127.0.0.1", "port": p2}]))
    wait_for_port("127.0.0.1", p2, 5, gw.proc)
    for _ in range(20):  # every worker has the new listener (SO_REUSEPORT spreads new connections)
        assert get(p2, "/r")[0] == 200
    assert get(p1, "/r", old_conn)[0] == 200  # kept listener, kept connection

    reload(gw, dict(cfg, listen=[{"host": "127.0.0.1", "port": p2}]))
    wait_until(lambda: not port_open("127.0.0.1", p1), timeout=5, what=f"port {p1} to close")
    assert get(p2, "/r")[0] == 200
    # a connection accepted on the removed listener is not dropped
    assert get(p1, "/r", old_conn)[0] == 200
    old_conn.close()
    gw.config = dict(cfg, listen=[{"host": "127.0.0.1", "port": p2}])


def test_unchanged_upstream_keeps_its_pooled_connection(backend, estuary):
    a, b = two_backends(backend)
    cfg = dict(base_config(a, b), workers=1)
    cfg["routes"].append({"path": "/viab", "proxy": {"upstream": "b", "path": "/r"}})
    gw = estuary(cfg)
    cfg["listen"] = gw.config["listen"]
    port = gw.port
    assert json.loads(get(port, "/r")[1]) == {"from": "a"}
    assert json.loads(get(port, "/viab")[1]) == {"from": "b"}
    assert a.connections == 1 and b.connections == 1

    # "a" unchanged (a route is added); "b" changed (its connect_timeout)
    new = json.loads(json.dumps(cfg))
    new["routes"].append({"path": "/new", "proxy": {"upstream": "a", "path": "/new"}})
    new["upstreams"]["b"]["connect_timeout"] = "3s"
    reload(gw, new)
    wait_until(lambda: get(port, "/new")[0] == 200, timeout=5, what="the new route")
    for _ in range(5):
        assert json.loads(get(port, "/r")[1]) == {"from": "a"}
        assert json.loads(get(port, "/viab")[1]) == {"from": "b"}
    assert a.connections == 1, "the unchanged upstream opened a new connection"
    assert b.connections == 2, "the changed upstream should have a new pool"


def test_reload_while_requests_are_in_flight_on_an_unchanged_upstream(backend, estuary):
    """A connection released by an exchange of the old generation joins the new pool."""
    a, b = two_backends(backend)
    cfg = dict(base_config(a, b), workers=1)
    gw = estuary(cfg)
    cfg["listen"] = gw.config["listen"]
    port = gw.port
    slow = {}
    t = threading.Thread(target=lambda: slow.setdefault("r", get(port, "/slow")))
    t.start()
    wait_until(lambda: len(a.requests_to("/slow")) == 1, timeout=5, what="the slow request")
    new = json.loads(json.dumps(cfg))
    new["routes"].append({"path": "/new", "proxy": {"upstream": "a", "path": "/new"}})
    reload(gw, new)
    t.join(10)
    assert slow["r"][0] == 200
    assert get(port, "/new")[0] == 200
    assert get(port, "/r")[0] == 200
    assert a.connections == 1, "the connection of the old generation's exchange was not handed over"


def test_workers_change_is_logged_and_deferred(backend, estuary):
    a, b = two_backends(backend)
    cfg = base_config(a, b)
    gw = estuary(cfg)
    reload(gw, dict(cfg, workers=3, listen=gw.config["listen"]))
    assert re.search(r'"workers" changed \(2 -> 3\); takes effect at the next start', gw.stderr())
    assert get(gw.port, "/r")[0] == 200


def test_open_websocket_survives_reload(backend, estuary, aio):
    import asyncio

    from aiohttp import ClientSession
    from test_websocket import ws_echo

    a, b = two_backends(backend)
    a.get("/ws/{rest...}", ws_echo)
    cfg = dict(base_config(a, b), workers=1)
    cfg["routes"].append({"path": "/live/{rest...}", "websocket": True,
                          "proxy": {"upstream": "a", "path": "/ws/{rest...}"}})
    gw = estuary(cfg)
    cfg["listen"] = gw.config["listen"]
    new = json.loads(json.dumps(cfg))
    new["routes"][0]["proxy"]["upstream"] = "b"
    new["upstreams"]["a"]["connect_timeout"] = "4s"  # even its upstream changes

    async def talk():
        async with ClientSession() as s:
            async with s.ws_connect(gw.url("/live/x"), timeout=5) as ws:
                await ws.send_str("before")
                first = (await asyncio.wait_for(ws.receive(), 5)).data
                await asyncio.get_running_loop().run_in_executor(None, reload, gw, new)
                await ws.send_str("after")
                second = (await asyncio.wait_for(ws.receive(), 5)).data
                await ws.close()
                return first, second
    assert aio.run(talk(), timeout=30) == ("echo:before", "echo:after")
    assert json.loads(get(gw.port, "/r")[1]) == {"from": "b"}


def test_reload_keeps_a_tls_listener_working(backend, estuary, tls):
    """The kept TLS listener serves new connections with the new generation's context."""
    import ssl

    a, b = two_backends(backend)
    cfg = base_config(a, b)
    gw = estuary(cfg, tls=True)
    cfg["listen"] = gw.config["listen"]
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))

    def tls_get(path):
        c = hc.HTTPSConnection("localhost", gw.tls_port, context=ctx, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    kept = hc.HTTPSConnection("localhost", gw.tls_port, context=ctx, timeout=10)
    kept.request("GET", "/r")
    assert json.loads(kept.getresponse().read()) == {"from": "a"}
    reload(gw, dict(cfg, routes=base_config(a, b, route_to="b")["routes"]))
    for _ in range(10):
        st, body = tls_get("/r")
        assert st == 200 and json.loads(body) == {"from": "b"}
    kept.request("GET", "/r")  # the TLS connection made before the reload
    assert json.loads(kept.getresponse().read()) == {"from": "b"}
    kept.close()


def test_route_counters_continue_across_reload(backend, estuary, http):
    a, b = two_backends(backend)
    acfg, admin = admin_config()
    cfg = dict(base_config(a, b), **acfg)
    gw = admin_started(estuary(cfg))
    cfg["listen"] = gw.config["listen"]

    def count():
        ms = parse_metrics(http.get(admin + "/metrics").text)
        assert metric(ms, "estuary_workers_missing") == 0
        return metric(ms, "estuary_requests_total", route="/r", method="GET", status="200")

    for _ in range(5):
        assert get(gw.port, "/r")[0] == 200
    wait_until(lambda: count() == 5, timeout=5, what="5 requests counted")
    new = json.loads(json.dumps(cfg))
    new["routes"].insert(0, {"path": "/new", "proxy": {"upstream": "b", "path": "/new"}})  # indexes shift
    reload(gw, new)
    wait_until(lambda: get(gw.port, "/new")[0] == 200, timeout=5, what="the new route")
    for _ in range(3):
        assert get(gw.port, "/r")[0] == 200
    wait_until(lambda: count() == 8, timeout=5, what="8 requests counted")
    ms = parse_metrics(http.get(admin + "/metrics").text)
    assert metric(ms, "estuary_requests_total", route="/new", method="GET", status="200") >= 1

"""Dependent backends (SPEC "Dependent backends"): a backend's path, query and headers use
{GROUP.dot.path} of an earlier backend's reply; it starts once what it names has answered,
independent backends still start at once; unusable values and failures propagate as
dependency_failed; the route timeout bounds the chain."""
import asyncio
import time

import pytest
from aiohttp import web

import harness
from harness import assert_json_error, delayed, server_timing, status_reply


def gateway(backend, estuary, entries, route=None):
    """One aggregating route "/r/{id}" over one test backend.

    entries: [(test_backend_template, reply, backend_conf)]: the test backend serves
    `reply` at the template; backend_conf is the route's backend entry (upstream "t").
    """
    b = backend("dep")
    for tpl, reply, _ in entries:
        b.route("*", tpl, reply)
    backends = [dict({"upstream": "t"}, **conf) for _, _, conf in entries]
    cfg = {"upstreams": {"t": harness.upstream(b)},
           "routes": [dict({"path": "/r/{id}", "backends": backends}, **(route or {}))]}
    return b, estuary(cfg)


def calls(b, prefix):
    return [r for r in b.requests if r.raw_path.startswith(prefix)]


def test_path_header_and_number_from_an_earlier_reply(backend, estuary, http):
    a_reply = {"id": "u/1?x#y%z", "token": "tok-1", "n": 12345678901234567890, "user": {"last": 77}}
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", a_reply, {"path": "/a/{id}", "group": "a"}),
        ("/b/{rest...}", {"ok": True},
         {"path": "/b/{a.id}/{a.user.last}/{a.n}?q={a.id}", "group": "b",
          "headers": {"Authorization": "Bearer {a.token}", "X-N": "{a.n}", "X-Route": "r-{id}"}}),
    ])
    r = http.get(gw.url("/r/7?k=v"), headers={"Authorization": "client", "X-Other": "kept"})
    assert r.status == 200, r.body
    assert r.headers["X-Estuary-Completed"] == "true"
    assert r.json() == {"a": a_reply, "b": {"ok": True}}
    [ra] = calls(b, "/a/")
    [rb] = calls(b, "/b/")
    # one path segment each: '/', '?', '#', '%' of the value are percent-encoded
    assert rb.raw_path == "/b/u%2F1%3Fx%23y%25z/77/12345678901234567890?q=u%2F1%3Fx%23y%25z&k=v"
    assert rb.headers.getall("Authorization") == ["Bearer tok-1"]  # replaces the client's
    assert rb.headers["X-N"] == "12345678901234567890"  # a number as the backend wrote it
    assert rb.headers["X-Route"] == "r-7"
    assert rb.headers["X-Other"] == "kept"
    assert ra.headers["Authorization"] == "client"  # other backends keep the client's


def test_dependent_starts_after_its_dependency_answered(backend, estuary, http):
    times = {}

    async def a(request):
        await asyncio.sleep(0.2)
        times["a_replied"] = time.monotonic()
        return web.json_response({"id": "x"})

    async def bb(request):
        times["b_started"] = time.monotonic()
        return web.json_response({"b": 1})

    b, gw = gateway(backend, estuary, [
        ("/a/{id}", a, {"path": "/a/{id}", "group": "a"}),
        ("/b/{rest...}", bb, {"path": "/b/{a.id}", "group": "b"}),
    ])
    r = http.get(gw.url("/r/1"))
    assert r.status == 200 and r.json() == {"a": {"id": "x"}, "b": {"b": 1}}, r.body
    assert times["b_started"] >= times["a_replied"]
    # B's own duration, not A's + B's
    timing = server_timing(r)
    assert float(timing["a"]["dur"]) >= 190
    assert float(timing["b"]["dur"]) < 150, timing


@pytest.mark.parametrize("value", [{"o": 1}, [1, 2], None, "missing"], ids=["object", "array", "null", "missing"])
def test_unusable_value_fails_the_dependent_without_calling_it(backend, estuary, http, value):
    a_reply = {"other": 1} if value == "missing" else {"id": value}
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", a_reply, {"path": "/a/{id}", "group": "a"}),
        ("/b/{rest...}", {"b": 1}, {"path": "/b/{a.id}", "group": "b"}),
        ("/c", {"c": 1}, {"path": "/c", "group": "c"}),
    ])
    r = http.get(gw.url("/r/1"))
    assert r.status == 200, r.body
    assert r.json() == {"a": a_reply, "c": {"c": 1}}
    assert r.headers["X-Estuary-Completed"] == "false"
    assert server_timing(r)["b"]["desc"] == "dependency_failed"
    assert calls(b, "/b") == []


def test_unusable_header_value_fails_the_dependent(backend, estuary, http):
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", {"t": {"x": 1}}, {"path": "/a/{id}", "group": "a"}),
        ("/b", {"b": 1}, {"path": "/b", "group": "b", "headers": {"X-T": "{a.t}"}}),
    ])
    r = http.get(gw.url("/r/1"))
    assert r.status == 200 and r.json() == {"a": {"t": {"x": 1}}}, r.body
    assert server_timing(r)["b"]["desc"] == "dependency_failed"
    assert calls(b, "/b") == []


def test_header_value_with_crlf_is_refused(backend, estuary, http):
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", {"t": "x\r\nX-Injected: 1"}, {"path": "/a/{id}", "group": "a"}),
        ("/b", {"b": 1}, {"path": "/b", "group": "b", "headers": {"X-T": "{a.t}"}}),
    ])
    r = http.get(gw.url("/r/1"))
    assert r.status == 200 and "b" not in r.json(), r.body
    assert server_timing(r)["b"]["desc"] == "dependency_failed"
    assert calls(b, "/b") == []


@pytest.mark.parametrize("value", ["..", ".", ""], ids=["dotdot", "dot", "empty"])
def test_value_naming_another_resource_is_refused(backend, estuary, http, value):
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", {"id": value}, {"path": "/a/{id}", "group": "a"}),
        ("/b/{rest...}", {"b": 1}, {"path": "/b/{a.id}", "group": "b"}),
    ])
    r = http.get(gw.url("/r/1"))
    assert r.status == 200 and r.json() == {"a": {"id": value}}, r.body
    assert server_timing(r)["b"]["desc"] == "dependency_failed"
    assert calls(b, "/b") == []


def test_failed_dependency_propagates(backend, estuary, http):
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", status_reply(500), {"path": "/a/{id}", "group": "a"}),
        ("/b/{rest...}", {"b": 1}, {"path": "/b/{a.id}", "group": "b"}),
        ("/c/{rest...}", {"c": 1}, {"path": "/c/{b.id}", "group": "c"}),  # through b
        ("/d", {"d": 1}, {"path": "/d", "group": "d"}),
    ])
    r = http.get(gw.url("/r/1"))
    assert r.status == 200, r.body
    assert r.json() == {"d": {"d": 1}}
    assert r.headers["X-Estuary-Completed"] == "false"
    timing = server_timing(r)
    assert timing["a"]["desc"] == "500"
    assert timing["b"]["desc"] == "dependency_failed"
    assert timing["c"]["desc"] == "dependency_failed"
    assert calls(b, "/b") == [] and calls(b, "/c") == []


def test_chain_runs_beside_an_independent_backend(backend, estuary, http):
    """A (200 ms) -> B (200 ms) while C (300 ms) runs beside: about 400 ms, not 700."""
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", delayed(0.2, {"id": "k"}), {"path": "/a/{id}", "group": "a"}),
        ("/b/{rest...}", delayed(0.2, {"b": 1}), {"path": "/b/{a.id}", "group": "b"}),
        ("/c", delayed(0.3, {"c": 1}), {"path": "/c", "group": "c"}),
    ])
    http.get(gw.url("/r/warm"))  # connections and DNS out of the measurement
    r = http.get(gw.url("/r/1"))
    assert r.status == 200 and r.json() == {"a": {"id": "k"}, "b": {"b": 1}, "c": {"c": 1}}, r.body
    assert 0.38 <= r.elapsed < 0.55, f"A->B beside C took {r.elapsed:.3f}s"
    timing = server_timing(r)
    assert 190 <= float(timing["b"]["dur"]) < 300, timing


def test_independent_backends_still_start_at_once(backend, estuary, http):
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", delayed(0.3, {"id": "k"}), {"path": "/a/{id}", "group": "a"}),
        ("/c", delayed(0.3, {"c": 1}), {"path": "/c", "group": "c"}),
        ("/b/{rest...}", {"b": 1}, {"path": "/b/{a.id}", "group": "b"}),
    ])
    http.get(gw.url("/r/warm"))
    r = http.get(gw.url("/r/1"))
    assert r.status == 200 and r.headers["X-Estuary-Completed"] == "true", r.body
    assert r.elapsed < 0.45, f"two independent 300 ms backends took {r.elapsed:.3f}s"


@pytest.mark.parametrize("on_error", ["partial", "fail"])
def test_route_timeout_bounds_the_chain(backend, estuary, http, on_error):
    b, gw = gateway(backend, estuary, [
        ("/a/{id}", delayed(0.2, {"id": "k"}), {"path": "/a/{id}", "group": "a"}),
        ("/b/{rest...}", delayed(2, {"b": 1}), {"path": "/b/{a.id}", "group": "b"}),
    ], route={"timeout": "1s", "on_error": on_error})
    r = http.get(gw.url("/r/1"))
    assert r.elapsed < 1.3, f"route timeout 1s, reply after {r.elapsed:.2f}s"
    assert r.elapsed >= 0.9
    if on_error == "partial":
        assert r.status == 200 and r.json() == {"a": {"id": "k"}}, r.body
        assert r.headers["X-Estuary-Completed"] == "false"
        timing = server_timing(r)
        assert timing["b"]["desc"] == "timeout"
        # B's own time: it started about 200 ms in
        assert float(timing["b"]["dur"]) < 950, timing
    else:
        assert_json_error(r, 504, "upstream_timeout")

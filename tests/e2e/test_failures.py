"""Backend failures on aggregating routes: partial replies, on_error fail, 502/504, deadlines."""
import time

from harness import (assert_json_error, body_reply, delayed, free_port, reset_reply, server_timing,
                     status_reply)


def test_partial_failure_returns_the_others(aggregate):
    r, _, _ = aggregate([(status_reply(500), {"group": "user"}), ({"id": "456"}, {"group": "order"})])
    assert r.status == 200, r.body
    assert r.json() == {"order": {"id": "456"}}
    assert r.headers["X-Estuary-Completed"] == "false"
    timing = server_timing(r)
    assert timing["user"]["desc"] == "500"
    assert timing["order"]["desc"] == "200"


def test_reset_is_partial_by_default(aggregate):
    r, _, _ = aggregate([(reset_reply(), {"group": "reset"}), ({"a": 1}, {"group": "ok"})])
    assert r.status == 200 and r.json() == {"ok": {"a": 1}}, r.body
    assert r.headers["X-Estuary-Completed"] == "false"


def test_connection_refused_is_partial(backend, estuary, http):
    b = backend("ok")
    b.get("/ok", {"a": 1})
    gw = estuary({"upstreams": {"up": {"targets": [b.url]},
                                "down": {"targets": [f"http://127.0.0.1:{free_port()}"]}},
                  "routes": [{"path": "/x", "backends": [{"upstream": "down", "path": "/y", "group": "down"},
                                                          {"upstream": "up", "path": "/ok", "group": "up"}]}]})
    r = http.get(gw.url("/x"))
    assert r.status == 200 and r.json() == {"up": {"a": 1}}
    assert r.headers["X-Estuary-Completed"] == "false"
    assert set(server_timing(r)) == {"down", "up"}


def test_on_error_fail_gives_502(aggregate):
    r, _, _ = aggregate([(status_reply(500), {"group": "user"}), ({"id": 1}, {"group": "order"})],
                        route={"on_error": "fail"})
    assert_json_error(r, 502, "upstream_unavailable")
    assert r.headers["X-Estuary-Completed"] == "false"
    assert set(server_timing(r)) == {"user", "order"}


def test_on_error_fail_all_ok_is_200(aggregate):
    r, _, _ = aggregate([({"a": 1}, {"group": "a"}), ({"b": 1}, {"group": "b"})],
                        route={"on_error": "fail"})
    assert r.status == 200 and r.json() == {"a": {"a": 1}, "b": {"b": 1}}
    assert r.headers["X-Estuary-Completed"] == "true"


def test_all_failed_gives_502(aggregate):
    r, _, _ = aggregate([(status_reply(500), {"group": "a"}),
                         (body_reply(b"not json"), {"group": "b"}),
                         (status_reply(404), {"group": "c"})])
    assert_json_error(r, 502, "upstream_unavailable")
    assert r.headers["X-Estuary-Completed"] == "false"
    timing = server_timing(r)
    assert timing["a"]["desc"] == "500" and timing["c"]["desc"] == "404"


def test_all_timed_out_gives_504(aggregate):
    r, _, _ = aggregate([(delayed(10, {"a": 1}), {"group": "a"}), (delayed(10, {"b": 1}), {"group": "b"})],
                        route={"timeout": "500ms"})
    err = assert_json_error(r, 504, "upstream_timeout")
    assert r.elapsed < 5, f"took {r.elapsed:.2f}s with a 500ms route timeout"
    assert r.headers["X-Estuary-Completed"] == "false"
    timing = server_timing(r)
    assert timing["a"]["desc"] == "timeout" and timing["b"]["desc"] == "timeout"
    assert err["message"]


def test_response_timeout_counts_as_timeout(aggregate):
    r, _, _ = aggregate([(delayed(10, {"a": 1}), {"group": "a"})],
                        route={"timeout": "5s"}, upstream_extra={"response_timeout": "300ms"})
    assert_json_error(r, 504, "upstream_timeout")
    assert r.elapsed < 4.5


def test_route_timeout_returns_what_arrived(aggregate):
    t0 = time.monotonic()
    r, _, _ = aggregate([(delayed(10, {"slow": 1}), {"group": "slow"}), ({"fast": 1}, {"group": "fast"})],
                        route={"timeout": "700ms"})
    elapsed = time.monotonic() - t0
    assert r.status == 200 and r.json() == {"fast": {"fast": 1}}, r.body
    assert r.headers["X-Estuary-Completed"] == "false"
    assert 0.6 <= r.elapsed < 5, f"route deadline 700ms, reply after {r.elapsed:.2f}s"
    assert elapsed < 15
    timing = server_timing(r)
    assert timing["slow"]["desc"] == "timeout" and timing["fast"]["desc"] == "200"
    assert float(timing["slow"]["dur"]) >= 600


def test_mixed_timeout_and_error_is_502(aggregate):
    r, _, _ = aggregate([(delayed(10, {"a": 1}), {"group": "a"}), (status_reply(503), {"group": "b"})],
                        route={"timeout": "500ms"})
    assert_json_error(r, 502)


def test_backends_are_called_concurrently(aggregate):
    r, _, _ = aggregate([(delayed(0.6, {"a": 1}), {"group": "a"}), (delayed(0.6, {"b": 1}), {"group": "b"}),
                         (delayed(0.6, {"c": 1}), {"group": "c"})])
    assert r.status == 200 and r.headers["X-Estuary-Completed"] == "true"
    assert r.elapsed < 1.7, f"3 x 600ms backends took {r.elapsed:.2f}s: not concurrent"

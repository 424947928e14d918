"""The demo of the README: GET /gateway/{user_id}/{order_id} merges users + orders."""
import json

from harness import (DEMO_BODY, REPO_ROOT, curl, demo_config, named_upstream, server_timing,
                     upstream)

EXACT = b'{"user":{"id":"123","name":"user123"},"order":{"id":"456","product":"item456"}}'


def assert_demo_reply(r):
    assert r.status == 200, r.body
    assert r.body.rstrip(b"\n") == EXACT
    assert list(json.loads(r.body)) == ["user", "order"]  # config order
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    assert r.headers["X-Estuary-Completed"] == "true"
    timing = server_timing(r)
    assert set(timing) == {"user", "order"}
    assert timing["user"]["desc"] == "200" and timing["order"]["desc"] == "200"
    for entry in timing.values():
        assert float(entry["dur"]) >= 0


def test_demo_through_test_dns(dns, demo_backends, estuary):
    users, orders = demo_backends
    dns.set_a("users.test", "127.0.0.1", ttl=60)
    dns.set_a("orders.test", "127.0.0.1", ttl=60)
    gw = estuary(demo_config(named_upstream("users.test", users), named_upstream("orders.test", orders)))
    assert_demo_reply(curl(gw.url("/gateway/123/456")))
    assert dns.queries("users.test") >= 1 and dns.queries("orders.test") >= 1
    assert users.last.path == "/users/123" and orders.last.path == "/orders/456"


def test_demo_through_hosts_file(dns, demo_backends, estuary):
    users, orders = demo_backends
    gw = estuary(demo_config(named_upstream("localhost", users), named_upstream("localhost", orders)),
                 hosts=True)
    assert_demo_reply(curl(gw.url("/gateway/123/456")))
    assert dns.queries("localhost") == 0, "hosts file entries must not be asked from DNS"


def test_shipped_default_config(dns, demo_backends, estuary):
    """conf/estuary.json as shipped, with only the ports moved to the test backends/listener."""
    users, orders = demo_backends
    cfg = json.loads((REPO_ROOT / "conf" / "estuary.json").read_text())
    assert cfg["upstreams"]["users"]["targets"] == ["http://localhost:8081"]
    assert cfg["upstreams"]["orders"]["targets"] == ["http://localhost:8082"]
    cfg["upstreams"]["users"]["targets"] = [f"http://localhost:{users.port}"]
    cfg["upstreams"]["orders"]["targets"] = [f"http://localhost:{orders.port}"]
    del cfg["listen"]
    cfg["workers"] = 2
    gw = estuary(cfg, hosts=True)
    assert_demo_reply(curl(gw.url("/gateway/123/456")))
    r = curl(gw.url("/api/users/77"))
    assert r.status == 200 and json.loads(r.body) == {"id": "77", "name": "user77"}


def test_demo_repeated_and_concurrent(demo_backends, estuary, http):
    users, orders = demo_backends
    gw = estuary(demo_config(upstream(users), upstream(orders)), )
    reqs = [("GET", gw.url(f"/gateway/{i}/{i + 1000}"), None, None) for i in range(20)]
    for i, r in enumerate(http.concurrent(reqs)):
        assert r.status == 200
        assert r.json() == {"user": {"id": str(i), "name": f"user{i}"},
                            "order": {"id": str(i + 1000), "product": f"item{i + 1000}"}}


def test_head_on_aggregate_route(demo_backends, estuary, http):
    users, orders = demo_backends
    gw = estuary(demo_config(upstream(users), upstream(orders)))
    r = http.request("HEAD", gw.url("/gateway/123/456"))
    assert r.status == 200 and r.body == b""
    assert users.last.method == "GET" and orders.last.method == "GET"


def test_demo_json_equals_document(demo_backends, estuary, http):
    users, orders = demo_backends
    gw = estuary(demo_config(upstream(users), upstream(orders)))
    assert http.get(gw.url("/gateway/123/456")).json() == DEMO_BODY

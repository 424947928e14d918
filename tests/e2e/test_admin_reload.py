"""SIGHUP applies a new admin address (SPEC: reload applies admin settings): the admin
listener moves, the old address stops accepting; a new address that cannot be bound keeps
the old one and the rest of the reload still applies."""
import socket

from harness import free_port, json_reply, port_open, upstream, wait_until
from test_admin import admin_config, admin_started
from test_reload import reload


def test_reload_moves_the_admin_listener(backend, estuary, http):
    b = backend("b")
    b.get("/r", json_reply({"ok": True}))
    cfg, admin = admin_config({"workers": 1, "upstreams": {"b": upstream(b)},
                               "routes": [{"path": "/r", "proxy": {"upstream": "b", "path": "/r"}}]})
    gw = admin_started(estuary(cfg))
    old_port = gw.config["admin"]["port"]
    assert http.get(admin + "/healthz").status == 200

    new_port = free_port()
    reload(gw, dict(gw.config, admin={"host": "127.0.0.1", "port": new_port}))
    wait_until(lambda: port_open("127.0.0.1", new_port), timeout=5, what="the new admin port")
    assert http.get(f"http://127.0.0.1:{new_port}/healthz").status == 200
    wait_until(lambda: not port_open("127.0.0.1", old_port), timeout=5, what="the old admin port to close")
    assert http.get(gw.url("/r")).status == 200


def test_reload_admin_address_taken_keeps_the_old_one(backend, estuary, http):
    b = backend("b")
    b.get("/r", json_reply({"ok": True}))
    cfg, admin = admin_config({"workers": 1, "upstreams": {"b": upstream(b)},
                               "routes": [{"path": "/r", "proxy": {"upstream": "b", "path": "/r"}}]})
    gw = admin_started(estuary(cfg))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        new_cfg = dict(gw.config, admin={"host": "127.0.0.1", "port": taken},
                       routes=gw.config["routes"] + [{"path": "/r2", "proxy": {"upstream": "b", "path": "/r"}}])
        reload(gw, new_cfg)
        assert "the admin listener keeps its address" in gw.stderr()
        assert http.get(admin + "/healthz").status == 200
        assert http.get(gw.url("/r2")).status == 200  # the rest of the reload applied
    finally:
        blocker.close()

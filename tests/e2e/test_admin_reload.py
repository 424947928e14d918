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


def _metric(http, admin, name):
    text = http.get(admin + "/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return line
    return None


def test_reload_turns_the_admin_listener_on_and_off(backend, estuary, http):
    """SPEC "Reload and shutdown": SIGHUP applies admin settings, including turning the
    listener on (it then reports the current generation and reload counts) and off, and on again."""
    b = backend("b")
    b.get("/r", json_reply({"ok": True}))
    base = {"workers": 2, "upstreams": {"b": upstream(b)},
            "routes": [{"path": "/r", "proxy": {"upstream": "b", "path": "/r"}}]}
    gw = estuary(dict(base))
    base = dict(gw.config)  # with the listener the harness added
    port = free_port()
    admin = f"http://127.0.0.1:{port}"
    assert not port_open("127.0.0.1", port)

    reload(gw, dict(base, admin={"host": "127.0.0.1", "port": port}))
    wait_until(lambda: port_open("127.0.0.1", port), timeout=5, what="the admin port to open")
    assert http.get(admin + "/healthz").status == 200
    assert http.get(admin + "/readyz").status == 200
    assert http.get(gw.url("/r")).status == 200
    assert _metric(http, admin, "estuary_config_generation") == "estuary_config_generation 2"
    assert _metric(http, admin, 'estuary_config_reloads_total{result="ok"}') == 'estuary_config_reloads_total{result="ok"} 1'
    assert 'estuary_requests_total{route="/r",method="GET",status="200"} 1' in http.get(admin + "/metrics").body.decode()
    assert http.get(admin + "/config").json()["admin"]["port"] == port

    reload(gw, dict(base))
    assert "admin listener closed" in gw.stderr()
    wait_until(lambda: not port_open("127.0.0.1", port), timeout=5, what="the admin port to close")
    assert http.get(gw.url("/r")).status == 200

    port2 = free_port()
    reload(gw, dict(base, admin={"host": "127.0.0.1", "port": port2}))
    wait_until(lambda: port_open("127.0.0.1", port2), timeout=5, what="the admin port to open again")
    admin2 = f"http://127.0.0.1:{port2}"
    assert _metric(http, admin2, "estuary_config_generation") == "estuary_config_generation 4"
    assert http.get(admin2 + "/config").json()["admin"]["port"] == port2


def test_reload_retries_an_admin_address_that_was_taken(backend, estuary, http):
    """A bind error keeps the old state; the same config reloaded once the address is free applies it."""
    b = backend("b")
    b.get("/r", json_reply({"ok": True}))
    base = {"workers": 1, "upstreams": {"b": upstream(b)},
            "routes": [{"path": "/r", "proxy": {"upstream": "b", "path": "/r"}}]}
    gw = estuary(dict(base))
    base = dict(gw.config)  # with the listener the harness added
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    cfg = dict(base, admin={"host": "127.0.0.1", "port": taken})
    reload(gw, cfg)
    assert "the admin listener stays off" in gw.stderr()
    blocker.close()
    reload(gw, cfg)
    wait_until(lambda: port_open("127.0.0.1", taken), timeout=5, what="the admin port after the retry")
    assert http.get(f"http://127.0.0.1:{taken}/healthz").status == 200

"""TLS sessions to an upstream are resumed on reconnect (issue 3): with pooling off every
request opens a new TLS connection, and after the first full handshake the cached session
is offered and accepted by the backend."""
from harness import wait_until
from test_upstream_hardening import proxy_cfg


def test_tls_session_resumed_on_reconnect(backend, estuary, http, tls):
    b = backend("tls", ssl_ctx=tls.server_context(selfsigned=True))
    b.get("/r", {"secure": True})
    cfg = proxy_cfg({"targets": [f"https://localhost:{b.port}"], "tls": {"ca_file": str(tls.selfsigned_cert)},
                     "pool": {"max_idle": 0}})
    gw = estuary(cfg, hosts=True, env={"ESTUARY_LOG_LEVEL": "debug"})
    for _ in range(4):
        r = http.get(gw.url("/p"))
        assert r.status == 200 and r.json() == {"secure": True}
    assert b.connections == 4  # no pooling: each request made its own TLS connection
    wait_until(lambda: gw.stderr().count("TLS session resumed") >= 2, timeout=5, what="resumed handshakes in the log")

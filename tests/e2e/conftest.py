"""pytest fixtures for the estuary e2e suite. See harness.py for the pieces.

Fixtures
  aio            (session) the background asyncio loop used by backends and the aiohttp client
  dns_server     (session) the DNSTestServer; `dns` (function) is the same server, reset
  tls            (session) TlsMaterial: CA, CA-signed server cert for localhost/127.0.0.1, self-signed
  backend        (function) factory: backend(name="b", host="127.0.0.1", port=None, ssl_ctx=None)
                 -> started Backend (HTTPS when ssl_ctx is given, e.g. tls.server_context())
  demo_backends  (function) (users, orders) backends answering like tests/backends/*.py
  estuary        (function) factory: estuary(config, hosts=None, tls=False, env=None, start=True)
                 -> started Estuary; stopped at teardown with SIGTERM, which must give exit 0
                 and no sanitizer report
  http           (function) client helpers bound to the loop: http.get(url, ...), http.request(...)
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import (AsyncLoop, Backend, DNSTestServer, Estuary, free_port,  # noqa: E402
                     http_concurrent, http_request, json_reply, make_tls_material)


def pytest_report_header(config):
    b = harness.estuary_bin()
    return f"estuary binary: {b}{'' if b.exists() else ' (MISSING)'}"


@pytest.fixture(scope="session")
def aio():
    loop = AsyncLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def dns_server():
    srv = DNSTestServer()
    yield srv
    srv.close()


@pytest.fixture
def dns(dns_server):
    """The test DNS server with no records and zeroed counters."""
    dns_server.reset()
    yield dns_server
    dns_server.reset()


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def backend(aio):
    """Factory for test backends; all are stopped at teardown."""
    started = []

    def make(name: str = "backend", host: str = "127.0.0.1", port=None, ssl_ctx=None) -> Backend:
        b = Backend(aio, name=name, host=host, port=port, ssl_ctx=ssl_ctx).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def raw_backend():
    """Factory: raw_backend() -> harness.RawBackend (records every byte; closed at teardown)."""
    made = []

    def make() -> harness.RawBackend:
        rb = harness.RawBackend()
        made.append(rb)
        return rb
    yield make
    for rb in made:
        rb.close()


@pytest.fixture
def demo_backends(backend):
    users = backend("users")
    users.get("/users/{id}", json_reply(harness.demo_users))
    orders = backend("orders")
    orders.get("/orders/{id}", json_reply(harness.demo_orders))
    return users, orders


@pytest.fixture
def estuary(tmp_path, dns_server, tls):
    """Factory: estuary(config, hosts=None, tls=False, env=None, start=True) -> Estuary.

    `config` is a dict; missing keys are filled for tests: `listen` (one plain listener on a
    free 127.0.0.1 port, plus a TLS one with the CA-signed cert when tls=True), `workers` 1,
    `shutdown_timeout` "2s", and `dns` pointing at the test DNS server (timeout 2s, 1
    attempt). hosts=True writes a hosts file "127.0.0.1 localhost" and sets
    ESTUARY_HOSTS_FILE; a dict {name: ip} writes those entries instead.
    At teardown each process gets SIGTERM and must exit 0 with no sanitizer report.
    """
    procs = []

    def make(config: dict, hosts=None, tls: bool = False, env=None, start: bool = True) -> Estuary:
        cfg = copy.deepcopy(config)
        if "listen" not in cfg:
            cfg["listen"] = [{"host": "127.0.0.1", "port": free_port()}]
            if tls:
                cfg["listen"].append({"host": "127.0.0.1", "port": free_port(), "tls": {
                    "certificate_file": str(tls_material.server_cert),
                    "key_file": str(tls_material.server_key)}})
        cfg.setdefault("workers", 1)
        cfg.setdefault("shutdown_timeout", "2s")
        cfg.setdefault("dns", {"servers": [dns_server.address], "timeout": "2s", "attempts": 1})
        if hosts is True:
            hosts = {"localhost": "127.0.0.1"}
        gw = Estuary(cfg, tmp_path / f"estuary{len(procs)}", env=env, hosts=hosts)
        procs.append(gw)
        if start:
            gw.start()
        return gw

    tls_material = tls
    yield make
    problems = []
    for gw in procs:
        if gw.proc is None and gw.returncode is None:
            continue  # never started
        gw.stop()
        try:
            gw.check(0)
        except AssertionError as e:
            problems.append(str(e))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


class _Http:
    def __init__(self, aio):
        self.aio = aio

    def request(self, method, url, **kw):
        return http_request(self.aio, method, url, **kw)

    def get(self, url, **kw):
        return http_request(self.aio, "GET", url, **kw)

    def post(self, url, data=None, **kw):
        return http_request(self.aio, "POST", url, data=data, **kw)

    def concurrent(self, reqs, **kw):
        return http_concurrent(self.aio, reqs, **kw)


@pytest.fixture
def http(aio):
    return _Http(aio)


@pytest.fixture
def aggregate(backend, estuary, http):
    """Builds one aggregating route over one test backend and sends one request.

    aggregate(specs, route=None, request_path="/agg", method="GET", headers=None, data=None,
              config=None)
      specs: [(reply, backend_conf), ...]; backend i serves GET/POST "/b{i}" with `reply`
             (a handler or a JSON value) through its own upstream "u{i}"; backend_conf adds
             keys to the route's backend entry (group, target, allow, deny, mapping, ...).
      route: extra route keys (timeout, on_error, methods, ...); config: extra top-level keys.
    Returns (response, backend, gateway).
    """
    def run(specs, route=None, request_path="/agg", method="GET", headers=None, data=None,
            config=None, upstream_extra=None):
        b = backend("agg")
        ups, entries = {}, []
        for i, (reply, conf) in enumerate(specs):
            b.route("*", f"/b{i}", reply)
            ups[f"u{i}"] = harness.upstream(b, **(upstream_extra or {}))
            entries.append(dict({"upstream": f"u{i}", "path": f"/b{i}"}, **(conf or {})))
        route_conf = dict({"path": "/agg", "backends": entries}, **(route or {}))
        cfg = dict({"upstreams": ups, "routes": [route_conf]}, **(config or {}))
        gw = estuary(cfg)
        resp = http.request(method, gw.url(request_path), headers=headers, data=data)
        return resp, b, gw
    return run

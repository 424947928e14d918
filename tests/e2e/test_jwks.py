"""The JWKS cache (docs/jwks.md) through the gateway: a jwt policy with jwks_url pointing at a
JWKS server in the test that counts its hits, rotates keys, goes down and answers badly.
Tokens are made with python3-jwt (RS256) and python3-cryptography."""
from __future__ import annotations

import json
import signal
import threading
import time

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import wait_until


class Key:
    def __init__(self, kid: str):
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})

    def token(self, sub: str = "alice") -> str:
        now = int(time.time())
        return jwt.encode({"sub": sub, "iat": now, "exp": now + 300}, self.private, algorithm="RS256",
                          headers={"kid": self.kid})


@pytest.fixture(scope="module")
def keys():
    return {k: Key(k) for k in ("a", "b", "c")}


def jwks_of(*ks: Key) -> bytes:
    return json.dumps({"keys": [k.jwk for k in ks]}).encode()


class Idp:
    """The identity provider's /jwks: serves `body` with `status`, records when it was hit."""

    def __init__(self, backend, ssl_ctx=None):
        self.lock = threading.Lock()
        self.status, self.body = 200, b'{"keys": []}'
        self.hits: list = []
        self.b = backend("idp", ssl_ctx=ssl_ctx)
        self.b.get("/jwks", self.handle)

    async def handle(self, request):
        with self.lock:
            self.hits.append(time.monotonic())
            status, body = self.status, self.body
        return web.Response(status=status, body=body, content_type="application/json")

    def serve(self, body: bytes, status: int = 200):
        with self.lock:
            self.status, self.body = status, body

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.hits)

    def wait_hits(self, n: int, timeout: float):
        assert wait_until(lambda: self.count >= n, timeout), f"JWKS hits: {self.count}, expected {n}"

    @property
    def url(self) -> str:
        return self.b.url + "/jwks"


def gateway(estuary, backend, idp: Idp, refresh: str = "5m", workers: int = 1, **policy):
    app = backend("app")
    app.get("/api", {"ok": True})
    return estuary({
        "workers": workers,
        "upstreams": {"app": {"targets": [app.url]}},
        "auth": {"jwt": {"idp": dict({"jwks_url": idp.url, "jwks_refresh": refresh, "algorithms": ["RS256"]}, **policy)}},
        "routes": [{"path": "/api", "auth": ["idp"], "proxy": {"upstream": "app", "path": "/api"}}],
    })


def reload(gw, config: dict) -> None:
    """Writes `config`, sends SIGHUP and waits (bounded) for the reload in the log."""
    before = gw.stderr().count("reloaded")
    gw.config = config
    gw.config_path.write_text(json.dumps(config, indent=2))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.stderr().count("reloaded") > before, 10, what="the reload")


def call(http, gw, token: str) -> int:
    return http.get(gw.url("/api"), headers={"Authorization": f"Bearer {token}"}, timeout=10).status


def test_rotation_refetches_once_shared_and_limited(estuary, backend, http, keys):
    """After a rotation a new kid is accepted after exactly one refetch, shared by 50
    concurrent requests; a kid still unknown within 10 s of a fetch causes no fetch (401)."""
    idp = Idp(backend)
    idp.serve(jwks_of(keys["a"]))
    gw = gateway(estuary, backend, idp)
    assert call(http, gw, keys["a"].token()) == 200  # joins the first fetch if it still runs
    assert idp.count == 1
    first = idp.hits[0]

    # kid b is not published yet, and a fetch just ran: no refetch, 401 at once
    assert call(http, gw, keys["b"].token()) == 401
    assert idp.count == 1

    # the IdP rotates; once 10 s passed since the last fetch, kid b triggers one refetch
    idp.serve(jwks_of(keys["a"], keys["b"]))
    time.sleep(max(0.0, first + 10.3 - time.monotonic()))
    tok = keys["b"].token()
    reqs = [("GET", gw.url("/api"), {"Authorization": f"Bearer {tok}"}, None)] * 50
    statuses = [r.status for r in http.concurrent(reqs, timeout=10)]
    assert statuses == [200] * 50
    assert idp.count == 2

    # another unknown kid right after: no fetch, 401; the known ones still pass
    assert call(http, gw, keys["c"].token()) == 401
    assert call(http, gw, keys["a"].token()) == 200
    assert idp.count == 2


def test_idp_down_keeps_last_good_set(estuary, backend, http, keys):
    """Refreshes that fail (500, then the IdP gone) keep the last good set serving; one
    warning per failure streak."""
    idp = Idp(backend)
    idp.serve(jwks_of(keys["a"]))
    gw = gateway(estuary, backend, idp, refresh="2s")
    assert call(http, gw, keys["a"].token()) == 200
    idp.serve(b'{"error": "down"}', status=500)
    idp.wait_hits(3, 6)  # two failed fetches: the refresh (~1.8 s) and its retry (1 s later)
    assert call(http, gw, keys["a"].token()) == 200
    idp.b.stop()  # connection refused from now on
    n = idp.count
    time.sleep(2.5)  # at least one more (refused) attempt: the retry comes within 2 s
    assert idp.count == n
    assert call(http, gw, keys["a"].token()) == 200
    assert gw.stderr().count("fetch failed") == 1, gw.stderr()


def test_bad_replies_keep_last_good_set(estuary, backend, http, keys):
    """Not JSON, 1,000 keys, over 1 MiB: each is refused and the last good set serves; a good
    set afterwards is taken."""
    idp = Idp(backend)
    idp.serve(jwks_of(keys["a"]))
    gw = gateway(estuary, backend, idp, refresh="2s")
    assert call(http, gw, keys["a"].token()) == 200
    many = dict(keys["b"].jwk)
    thousand = json.dumps({"keys": [dict(many, kid=f"k{i}") for i in range(999)] + [keys["b"].jwk]}).encode()
    huge = json.dumps({"keys": [keys["a"].jwk, keys["b"].jwk], "pad": "x" * (1024 * 1024)}).encode()
    for body in (b"<html><body>502 Bad Gateway</body></html>", thousand, huge):
        idp.serve(body)
        idp.wait_hits(idp.count + 1, 5)
        time.sleep(0.3)  # the reply is refused by then (a local, small or size-refused body)
        assert call(http, gw, keys["a"].token()) == 200
        assert call(http, gw, keys["b"].token()) == 401  # b was only in the refused replies
    idp.serve(jwks_of(keys["a"], keys["b"]))
    assert wait_until(lambda: call(http, gw, keys["b"].token()) == 200, 6, interval=0.2)
    assert gw.stderr().count("fetch failed") == 1, gw.stderr()


def test_refresh_ahead_one_fetch_for_two_workers(estuary, backend, http, keys):
    """jwks_refresh 2s: the set is refreshed before 2 s have passed, by one fetch per refresh
    for the whole process (workers: 2)."""
    idp = Idp(backend)
    idp.serve(jwks_of(keys["a"]))
    gw = gateway(estuary, backend, idp, refresh="2s", workers=2)
    idp.wait_hits(4, 8)
    with idp.lock:
        hits = list(idp.hits)
    gaps = [b - a for a, b in zip(hits, hits[1:])]
    assert all(1.5 <= g < 2.0 for g in gaps), gaps
    for _ in range(4):  # both workers serve with the shared set
        assert call(http, gw, keys["a"].token()) == 200


def test_reload_keeps_source_of_same_url(estuary, backend, http, keys):
    """A reload whose policy keeps the URL (renamed, route changed) keeps the key set with no
    fetch; a new URL is fetched once, the old source is dropped."""
    idp = Idp(backend)
    idp.serve(jwks_of(keys["a"]))
    gw = gateway(estuary, backend, idp)
    assert call(http, gw, keys["a"].token()) == 200
    assert idp.count == 1

    cfg = json.loads(json.dumps(gw.config))
    cfg["auth"]["jwt"] = {"renamed": cfg["auth"]["jwt"]["idp"]}
    cfg["routes"][0]["auth"] = ["renamed"]
    cfg["routes"].append({"path": "/other", "proxy": {"upstream": "app", "path": "/api"}})
    reload(gw, cfg)
    assert call(http, gw, keys["a"].token()) == 200
    assert idp.count == 1

    idp.serve(jwks_of(keys["b"]))
    cfg["auth"]["jwt"]["renamed"]["jwks_url"] = idp.url + "?v=2"
    reload(gw, cfg)
    idp.wait_hits(2, 5)
    assert wait_until(lambda: call(http, gw, keys["b"].token()) == 200, 5, interval=0.1)
    time.sleep(0.5)
    assert idp.count == 2


def test_https_idp_verified(estuary, backend, http, keys, tls):
    """An https jwks_url goes through the upstream client's TLS: verified against jwks_tls's CA;
    an IdP whose certificate that CA did not sign gives no key set (401), the fetch failing."""
    good = Idp(backend, ssl_ctx=tls.server_context())
    good.serve(jwks_of(keys["a"]))
    gw = gateway(estuary, backend, good, jwks_tls={"ca_file": str(tls.ca_cert)})
    assert good.url.startswith("https://")
    assert call(http, gw, keys["a"].token()) == 200
    assert good.count == 1

    bad = Idp(backend, ssl_ctx=tls.server_context(selfsigned=True))
    bad.serve(jwks_of(keys["a"]))
    gw2 = gateway(estuary, backend, bad, jwks_tls={"ca_file": str(tls.ca_cert)})
    assert call(http, gw2, keys["a"].token()) == 401
    wait_until(lambda: "fetch failed (tls)" in gw2.stderr(), 5, what="the TLS failure in the log")

"""The auth stage (SPEC "Access control and traffic policy"): JWT (jwks_file, secret_file) and
API key policies on routes, 401/403 replies with WWW-Authenticate (RFC 6750 §3), scopes,
forward_claims, any-of policies, estuary_auth_rejected_total, the verified-token cache.

Every refusal is checked to reach no backend (the Backend records every request it gets).
jwks_url policies are covered by test_jwks.py.
"""
import json
import re
import signal
import time

import pytest

from authkit import AUDIENCE, ISSUER, AuthKit, sha256_hex
from harness import echo_reply, free_port, raw_http, upstream, wait_for_port, wait_until

PLAIN_KEY = "plain-key-0123"
HASHED_KEY = "hashed-key-4567"
ALL_ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "ES256", "EdDSA"]


@pytest.fixture(scope="module")
def kit():
    return AuthKit()


@pytest.fixture
def gw(tmp_path, kit, backend, estuary):
    """A gateway with these routes over one echoing backend (paths /b/...):
      /jwt/{id}     auth ["files"]: jwks_file (RSA, P-256, Ed25519 and the oct key), every
                    asymmetric algorithm + HS256, iss/aud, leeway 30s, forward_claims sub
      /hmac/{id}    auth ["hmac"]: secret_file, HS256/384/512
      /scoped/{id}  auth ["files"], scopes ["orders:write"]
      /key/{id}     auth ["partners"]: API keys (a plain line and a SHA-256 line)
      /any/{id}     auth ["files", "partners"]
      /scoped-any/{id} auth ["files", "partners"], scopes ["orders:write"]
      /open/{id}    no auth
    Returns (gateway, backend, admin base URL)."""
    return make_gateway(tmp_path, kit, backend, estuary)


def make_gateway(tmp_path, kit, backend, estuary, env=None):
    b = backend("api")
    b.route("*", "/b/{rest...}", echo_reply())
    keys = tmp_path / "partners.txt"
    keys.write_text(f"# partners\n{PLAIN_KEY}\n\n  {sha256_hex(HASHED_KEY).upper()}  \n")
    admin_port = free_port()

    def proxied(path, **extra):
        return dict({"path": path, "proxy": {"upstream": "api", "path": "/b/{id}"}}, **extra)

    cfg = {
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "upstreams": {"api": upstream(b)},
        "auth": {
            "jwt": {
                "files": {"jwks_file": kit.write_jwks(tmp_path / "jwks.json", ("rsa", "ec", "ed", "hmac")),
                          "algorithms": ALL_ASYMMETRIC + ["HS256"], "issuer": ISSUER, "audience": [AUDIENCE],
                          "leeway": "30s", "forward_claims": {"sub": "X-User-Id"}},
                "hmac": {"secret_file": kit.write_secret(tmp_path / "hs.key"),
                         "algorithms": ["HS256", "HS384", "HS512"]},
            },
            "api_keys": {"partners": {"header": "X-Api-Key", "keys_file": str(keys)}},
        },
        "routes": [
            proxied("/jwt/{id}", auth=["files"]),
            proxied("/hmac/{id}", auth=["hmac"]),
            proxied("/scoped/{id}", auth=["files"], scopes=["orders:write"]),
            proxied("/key/{id}", auth=["partners"]),
            proxied("/any/{id}", auth=["files", "partners"]),
            proxied("/scoped-any/{id}", auth=["files", "partners"], scopes=["orders:write"]),
            proxied("/open/{id}"),
        ],
    }
    g = estuary(cfg, env=env)
    wait_for_port("127.0.0.1", admin_port, 10, g.proc)
    return g, b, f"http://127.0.0.1:{admin_port}"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def refused(http, b, url, headers, status=401, challenge='Bearer error="invalid_token"', reason=None, secret=None):
    """Sends the request, checks the refusal and that the backend got nothing; returns the reply."""
    before = b.request_count
    r = http.get(url, headers=headers)
    assert r.status == status, (r.status, r.text)
    assert r.headers.getall("WWW-Authenticate") == [challenge]
    body = r.json()["error"]
    assert body["status"] == status
    assert body["code"] == ("forbidden" if status == 403 else "unauthorized")
    if reason is not None:
        assert reason in body["message"], body
    if secret is not None:
        assert secret not in r.text  # never echoed
    assert b.request_count == before, "a refused request reached the backend"
    return r


def accepted(http, b, url, headers):
    before = b.request_count
    r = http.get(url, headers=headers)
    assert r.status == 200, (r.status, r.text)
    assert b.request_count == before + 1
    return b.last


# ---- acceptance

def test_each_algorithm_accepted(gw, kit, http):
    g, b, _ = gw
    for alg in ALL_ASYMMETRIC + ["HS256"]:
        rec = accepted(http, b, g.url("/jwt/1"), bearer(kit.token(alg, sub=f"u-{alg}")))
        assert rec.path == "/b/1"
        assert rec.headers.getall("X-User-Id") == [f"u-{alg}"], alg
    for alg in ("HS256", "HS384", "HS512"):
        # secret_file: one key, no kid needed
        accepted(http, b, g.url("/hmac/2"), bearer(kit.token(alg, kid=None, iss=None, aud=None)))
    # the scheme is case-insensitive (RFC 9110 §11.1)
    accepted(http, b, g.url("/jwt/3"), {"Authorization": "bearer " + kit.token("ES256")})
    # the open route needs nothing
    assert http.get(g.url("/open/4")).status == 200


# ---- refusals: hostile and invalid tokens

def test_hostile_tokens_refused(gw, kit, http):
    g, b, _ = gw
    url = g.url("/jwt/1")
    none = kit.token_alg_none()
    refused(http, b, url, bearer(none), reason="alg_not_allowed", secret=none)
    # HS256 signed with the RSA public PEM, naming the RSA key's kid: the policy allows HS256,
    # but an HMAC is never computed with a public key
    confusion = kit.token_confusion()
    refused(http, b, url, bearer(confusion), reason="key_mismatch", secret=confusion)
    tampered = kit.token_tampered("RS256")
    refused(http, b, url, bearer(tampered), reason="bad_signature", secret=tampered)
    # a token signed by another key under our kid
    other = AuthKit().token("ES256", kid=kit.kids["ec"])
    refused(http, b, url, bearer(other), reason="bad_signature")
    # a kid the set does not know (jwks_file: no refetch)
    refused(http, b, url, bearer(kit.token("RS256", kid="nobody")), reason="unknown_kid")
    # an algorithm the policy does not list
    refused(http, b, g.url("/hmac/1"), bearer(kit.token("RS256")), reason="alg_not_allowed")
    assert g.running()


def test_time_claims_with_leeway(gw, kit, http):
    g, b, _ = gw
    url, now = g.url("/jwt/1"), int(time.time())
    refused(http, b, url, bearer(kit.token("RS256", exp=now - 120)), reason="expired")
    accepted(http, b, url, bearer(kit.token("RS256", exp=now - 5)))  # within the 30 s leeway
    accepted(http, b, url, bearer(kit.token("RS256", nbf=now + 5)))
    refused(http, b, url, bearer(kit.token("RS256", nbf=now + 120)), reason="not_yet_valid")
    refused(http, b, url, bearer(kit.token("RS256", exp="tomorrow")), reason="bad_claims")


def test_issuer_and_audience(gw, kit, http):
    g, b, _ = gw
    url = g.url("/jwt/1")
    refused(http, b, url, bearer(kit.token("RS256", iss="https://evil.test/")), reason="bad_issuer")
    refused(http, b, url, bearer(kit.token("RS256", aud="other-api")), reason="bad_audience")
    refused(http, b, url, bearer(kit.token("RS256", aud=None)), reason="bad_audience")
    accepted(http, b, url, bearer(kit.token("RS256", aud=["x", AUDIENCE])))


def test_oversized_tokens(gw, kit, http):
    g, b, _ = gw
    # over the verifier's 8 KiB bound but inside the request head limit: 401 too_large
    big = kit.token("RS256", pad="x" * 9000)
    refused(http, b, g.url("/jwt/1"), bearer(big), reason="too_large")
    # 64 KiB: the head limit answers first (431) or the verifier refuses it (401); no crash
    huge = "a" * 65536 + "." + "b" * 10 + "." + "c" * 10
    before = b.request_count
    r = raw_http(g.port, (f"GET /jwt/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {huge}\r\n"
                          "Connection: close\r\n\r\n").encode())
    assert r.status in (401, 431), r.status
    assert huge[:100] not in r.text
    assert b.request_count == before
    accepted(http, b, g.url("/jwt/1"), bearer(kit.token("RS256")))


def test_missing_and_malformed_credentials(gw, kit, http):
    g, b, _ = gw
    url = g.url("/jwt/1")
    realm = 'Bearer realm="estuary"'
    refused(http, b, url, {}, challenge=realm)
    # another scheme is no Bearer credentials at all (RFC 6750 §3: no error code)
    refused(http, b, url, {"Authorization": "Basic dXNlcjpwYXNz"}, challenge=realm)
    # the API key header is not a credential for a JWT-only route
    refused(http, b, url, {"X-Api-Key": PLAIN_KEY}, challenge=realm)
    for value in ("Bearer", "Bearer  ", "Bearer a b", "Bearer a,b", "Bearer tok=en"):
        refused(http, b, url, {"Authorization": value}, reason="malformed")
    # exactly one Authorization header: two are refused even when one is valid
    good = kit.token("RS256")
    before = b.request_count
    r = raw_http(g.port, (f"GET /jwt/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\n"
                          f"Authorization: Bearer {good}\r\nConnection: close\r\n\r\n").encode())
    assert r.status == 401 and r.headers.getall("WWW-Authenticate") == ['Bearer error="invalid_token"']
    assert good not in r.text
    assert b.request_count == before


def test_scopes(gw, kit, http):
    g, b, _ = gw
    url = g.url("/scoped/1")
    r = refused(http, b, url, bearer(kit.token("RS256", scope="orders:read")), status=403,
                challenge='Bearer error="insufficient_scope"')
    assert r.json()["error"]["code"] == "forbidden"
    # scopes match as whole tokens, not prefixes
    refused(http, b, url, bearer(kit.token("RS256", scope="orders:writer")), status=403,
            challenge='Bearer error="insufficient_scope"')
    accepted(http, b, url, bearer(kit.token("RS256", scope="orders:read orders:write")))
    accepted(http, b, url, bearer(kit.token("RS256", scope=None, scp=["orders:write"])))
    # an invalid token on a scoped route is a 401, not a 403
    refused(http, b, url, bearer(kit.token("RS256", scope="orders:write", iss="x")), reason="bad_issuer")
    # beside an API key policy: a key carries no scopes and passes; a valid token without the
    # scope is still a 403, also when a wrong key comes with it
    url = g.url("/scoped-any/1")
    accepted(http, b, url, {"X-Api-Key": PLAIN_KEY})
    accepted(http, b, url, dict(bearer(kit.token("RS256", scope="orders:read")), **{"X-Api-Key": PLAIN_KEY}))
    for extra in ({}, {"X-Api-Key": "wrong"}):
        refused(http, b, url, dict(bearer(kit.token("RS256", scope="orders:read")), **extra), status=403,
                challenge='Bearer error="insufficient_scope"')


def test_forward_claims_replace_client_headers(gw, kit, http):
    g, b, _ = gw
    forged = {"X-User-Id": "admin"}
    rec = accepted(http, b, g.url("/jwt/1"), dict(bearer(kit.token("EdDSA", sub="user-7")), **forged))
    assert rec.headers.getall("X-User-Id") == ["user-7"]
    # a token without the claim: the client's header is removed and nothing is added
    rec = accepted(http, b, g.url("/jwt/1"), dict(bearer(kit.token("EdDSA", sub=None)), **forged))
    assert "X-User-Id" not in rec.headers
    # a claim that cannot be a header value is not forwarded
    rec = accepted(http, b, g.url("/jwt/1"), dict(bearer(kit.token("EdDSA", sub="a\r\nX-Evil: 1")), **forged))
    assert "X-User-Id" not in rec.headers and "X-Evil" not in rec.headers
    # accepted by the API key policy of the same route: the forged header still never passes
    rec = accepted(http, b, g.url("/any/1"), {"X-Api-Key": PLAIN_KEY, "X-User-Id": "admin"})
    assert "X-User-Id" not in rec.headers
    # several forged copies, raw
    before = b.request_count
    r = raw_http(g.port, (f"GET /any/2 HTTP/1.1\r\nHost: x\r\nX-User-Id: a\r\nX-Api-Key: {PLAIN_KEY}\r\n"
                          "x-user-id: b\r\nConnection: close\r\n\r\n").encode())
    assert r.status == 200 and b.request_count == before + 1
    assert "X-User-Id" not in b.last.headers


def test_api_keys(gw, http):
    g, b, _ = gw
    url = g.url("/key/1")
    accepted(http, b, url, {"X-Api-Key": PLAIN_KEY})
    accepted(http, b, url, {"X-Api-Key": HASHED_KEY})  # the file holds its SHA-256 only
    # a 64-hex-digit line is a digest: sending the digest itself is not the key
    refused(http, b, url, {"X-Api-Key": sha256_hex(HASHED_KEY)}, reason="invalid_api_key")
    refused(http, b, url, {"X-Api-Key": PLAIN_KEY + "x"}, reason="invalid_api_key", secret=PLAIN_KEY)
    refused(http, b, url, {"X-Api-Key": ""}, reason="invalid_api_key")
    refused(http, b, url, {}, challenge='Bearer realm="estuary"')
    # two X-Api-Key headers are refused even when one is good
    before = b.request_count
    r = raw_http(g.port, (f"GET /key/1 HTTP/1.1\r\nHost: x\r\nX-Api-Key: {PLAIN_KEY}\r\nX-Api-Key: {PLAIN_KEY}\r\n"
                          "Connection: close\r\n\r\n").encode())
    assert r.status == 401 and b.request_count == before


def test_any_of_two_policies(gw, kit, http):
    g, b, _ = gw
    url = g.url("/any/1")
    accepted(http, b, url, bearer(kit.token("PS256")))
    accepted(http, b, url, {"X-Api-Key": HASHED_KEY})
    # a bad token does not stop a good key, nor a bad key a good token
    accepted(http, b, url, dict(bearer(kit.token("PS256", exp=int(time.time()) - 999)), **{"X-Api-Key": PLAIN_KEY}))
    accepted(http, b, url, dict(bearer(kit.token("PS256")), **{"X-Api-Key": "wrong"}))
    # both bad: the reason is the token's (it got further than an unknown key)
    refused(http, b, url, dict(bearer(kit.token("PS256", exp=int(time.time()) - 999)), **{"X-Api-Key": "wrong"}),
            reason="expired")
    refused(http, b, url, {}, challenge='Bearer realm="estuary"')


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r'^estuary_auth_rejected_total\{route="([^"]*)",reason="([^"]*)"\} (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def test_rejection_metrics(gw, kit, http):
    g, b, admin = gw
    now = int(time.time())
    http.get(g.url("/jwt/1"))
    http.get(g.url("/jwt/1"), headers=bearer(kit.token("RS256", exp=now - 999)))
    http.get(g.url("/jwt/1"), headers=bearer(kit.token("RS256", exp=now - 999)))
    http.get(g.url("/key/1"), headers={"X-Api-Key": "nope"})
    http.get(g.url("/scoped/1"), headers=bearer(kit.token("RS256")))
    http.get(g.url("/jwt/1"), headers=bearer(kit.token("RS256")))  # accepted: not counted
    want = {("/jwt/{id}", "missing"): 1, ("/jwt/{id}", "expired"): 2, ("/key/{id}", "invalid_api_key"): 1,
            ("/scoped/{id}", "insufficient_scope"): 1}
    got = wait_until(lambda: (lambda m: m if m == want else None)(parse_metrics(http.get(admin + "/metrics").text)),
                     timeout=5, what="the auth rejection counters")
    assert got == want


def test_repeated_token_served_from_cache(tmp_path, kit, backend, estuary, http):
    """The verified-token cache: a repeated token is not verified again (the debug log says
    which path each request took; one worker, so one cache)."""
    g, b, _ = make_gateway(tmp_path, kit, backend, estuary, env={"ESTUARY_LOG_LEVEL": "debug"})
    t1, t2 = kit.token("RS256", sub="one"), kit.token("RS256", sub="two")
    for _ in range(3):
        accepted(http, b, g.url("/jwt/1"), bearer(t1))
    accepted(http, b, g.url("/jwt/1"), bearer(t2))
    # a cached token still carries its claims downstream
    assert b.last.headers.getall("X-User-Id") == ["two"]
    rec = accepted(http, b, g.url("/jwt/1"), dict(bearer(t1), **{"X-User-Id": "forged"}))
    assert rec.headers.getall("X-User-Id") == ["one"]

    def counts():
        err = g.stderr()
        return err.count("auth.jwt.files: token verified"), err.count("auth.jwt.files: token accepted from the verified-token cache")
    got = wait_until(lambda: (lambda c: c if c == (2, 3) else None)(counts()), timeout=5, what="the cache log lines")
    assert got == (2, 3)
    # credentials never appear in the log
    err = g.stderr()
    assert t1 not in err and t2 not in err and t1.split(".")[2] not in err


def test_bad_key_file_refuses_config(tmp_path, kit, estuary):
    """A jwks_file that is not a JWKS: the configuration is refused, the error names the policy."""
    bad = tmp_path / "bad.json"
    bad.write_text("<html>502</html>")
    cfg = {"upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
           "auth": {"jwt": {"idp": {"jwks_file": str(bad), "algorithms": ["RS256"]}}},
           "routes": [{"path": "/x", "auth": ["idp"], "proxy": {"upstream": "u", "path": "/x"}}]}
    g = estuary(cfg, start=False)
    with pytest.raises(RuntimeError):
        g.start(timeout=5)
    g.stop()
    g.returncode = 0  # the refusal is the expected outcome; teardown checks sanitizer reports only
    assert "auth.jwt.idp" in g.stderr() and str(bad) in g.stderr()


def test_reload_with_unusable_key_file_keeps_config(gw, kit, http, tmp_path):
    """A reload whose secret_file became unusable is refused: the running policies keep
    serving (the old keys still verify, the new route does not exist)."""
    g, b, _ = gw
    good = kit.token("HS256", kid=None, iss=None, aud=None)
    accepted(http, b, g.url("/hmac/1"), bearer(good))
    cfg = json.loads(json.dumps(g.config))
    short = tmp_path / "short.key"
    short.write_text("too-short\n")  # under the 32 bytes HS256 needs (RFC 7518 §3.2)
    cfg["auth"]["jwt"]["hmac"]["secret_file"] = str(short)
    cfg["routes"].append({"path": "/new", "proxy": {"upstream": "api", "path": "/b/new"}})
    before = g.stderr().count("reload failed")
    g.config_path.write_text(json.dumps(cfg))
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: g.stderr().count("reload failed") > before, timeout=10, what="the refused reload")
    assert f"auth.jwt.hmac: secret_file {short}" in g.stderr()
    assert "too-short" not in g.stderr()  # the secret is never logged
    accepted(http, b, g.url("/hmac/2"), bearer(good))
    assert http.get(g.url("/new")).status == 404


def h2c_get(port, path, headers, timeout=5.0):
    """One GET over h2c (prior knowledge) with extra header fields (repeats allowed) -> status."""
    import socket
    import h2.config
    import h2.connection
    import h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    status = None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"),
                                (b":path", path.encode())] + [(k.encode(), v.encode()) for k, v in headers],
                          end_stream=True)
        s.sendall(conn.data_to_send())
        done = False
        while not done:
            data = s.recv(65536)  # bounded by the socket timeout
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    done = True
            s.sendall(conn.data_to_send())
    return status


def test_http2_credentials(gw, kit):
    """The same rules over HTTP/2: one authorization field, forged claim headers removed."""
    g, b, _ = gw
    token = kit.token("ES256", sub="h2-user")
    before = b.request_count
    assert h2c_get(g.port, "/jwt/1", [("authorization", f"Bearer {token}"), ("x-user-id", "forged")]) == 200
    assert b.request_count == before + 1 and b.last.headers.getall("X-User-Id") == ["h2-user"]
    assert h2c_get(g.port, "/jwt/1", [("authorization", f"Bearer {token}")] * 2) == 401
    assert h2c_get(g.port, "/key/1", [("x-api-key", PLAIN_KEY), ("x-api-key", PLAIN_KEY)]) == 401
    assert h2c_get(g.port, "/jwt/1", []) == 401
    assert b.request_count == before + 1

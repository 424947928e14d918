"""estuary --check on the policy keys (SPEC "Access control and traffic policy"): auth (jwt,
api_keys), rate_limits, redis and a route's auth/scopes/rate_limit/cors. Good files pass; bad
ones print every problem as FILE:LINE:COLUMN at the offending key or value. GET /config shows
file paths only, never key material."""
import hashlib
import json
import re
import secrets

from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from harness import REPO_ROOT, free_port, run_estuary, wait_for_port

ERR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")


def errors(cp, file):
    """[(line, col, msg)] of the 'FILE:LINE:COLUMN: message' lines of stderr for FILE."""
    out = []
    for ln in cp.stderr.splitlines():
        m = ERR_LINE.match(ln)
        assert m, f"stderr line not in FILE:LINE:COLUMN form: {ln!r}"
        if m.group("file") == file:
            out.append((int(m.group("line")), int(m.group("col")), m.group("msg")))
    return out


def pos(text, needle, nth=0):
    """1-based (line, column) of the nth occurrence of `needle` in `text` (columns in characters)."""
    i = -1
    for _ in range(nth + 1):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    return line, i - (text.rfind("\n", 0, i) + 1) + 1


def make_keys(d):
    """An HS256 secret, a JWKS of one EC key and an API keys file (one plain, one SHA-256 line)
    in d/keys; returns the secret material, to look for where it must not be."""
    k = d / "keys"
    k.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    (k / "hs256.key").write_text(secret + "\n")
    jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    (k / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    plain, hashed = "plain-" + secrets.token_hex(16), "hashed-" + secrets.token_hex(16)
    (k / "partners.txt").write_text(f"{plain}\n{hashlib.sha256(hashed.encode()).hexdigest()}\n")
    return [secret, plain, hashed, jwk["x"]]


def check(tmp_path, text, name="policy.json"):
    f = tmp_path / name
    f.write_text(text)
    return run_estuary(["--check", "-c", name], cwd=tmp_path), name


GOOD = """{
  "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
  "auth": {
    "jwt": {
      "idp": {"jwks_url": "https://127.0.0.1:8443/.well-known/jwks.json", "jwks_refresh": "1m",
              "jwks_tls": {"verify": true, "ca_file": "keys/jwks.json"},
              "issuer": "https://idp/", "audience": "api", "algorithms": ["RS256", "ES256"],
              "forward_claims": {"sub": "X-User-Id"}},
      "local": {"jwks_file": "keys/jwks.json", "algorithms": ["ES256"], "leeway": "5s"},
      "dev": {"secret_file": "keys/hs256.key", "algorithms": ["HS256"]}
    },
    "api_keys": {"partners": {"header": "X-Api-Key", "keys_file": "keys/partners.txt"}}
  },
  "rate_limits": {
    "per_client": {"rate": 10, "per": "1s", "burst": 5},
    "per_user": {"rate": 100, "per": "1m", "key": "claim:sub", "store": "redis"},
    "per_key": {"rate": 1, "per": "1s", "key": "header:X-Api-Key"}
  },
  "redis": {"address": "[::1]:6379", "timeout": "20ms", "on_failure": "deny"},
  "routes": [
    {"path": "/a", "auth": ["idp", "local", "partners"], "scopes": ["read"], "rate_limit": "per_user",
     "cors": {"origins": ["https://app.example", "http://localhost:3000"], "methods": ["GET"],
              "headers": ["Authorization"], "expose_headers": ["RateLimit"], "credentials": true, "max_age": "10m"},
     "proxy": {"upstream": "u"}},
    {"path": "/b", "auth": ["dev"], "rate_limit": "per_key", "cors": {"origins": ["*"]}, "proxy": {"upstream": "u"}}
  ]
}
"""


def test_check_policy_example_in_place():
    """conf/examples/policy.json with the key files beside it (test_check.py checks it too, copied)."""
    d = REPO_ROOT / "conf" / "examples"
    cp = run_estuary(["--check", "-c", "policy.json"], cwd=d)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "policy.json: ok"


def test_check_good_policy(tmp_path):
    make_keys(tmp_path)
    cp, name = check(tmp_path, GOOD)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"{name}: ok"


BAD = """{
  "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
  "auth": {
    "jwt": {
      "idp": {"jwks_url": "https://idp/jwks", "secret_file": "keys/hs256.key", "algorithms": ["none"]},
      "nokeys": {"algorithms": ["HS256"]},
      "dev": {"secret_file": "keys/missing.key", "algorithms": ["HS256"], "jwks_refresh": "1m",
              "forward_claims": {"sub": "Content-Length"}}
    },
    "api_keys": {"dev": {"keys_file": "keys/partners.txt"}, "ops": {"header": "X Key", "keys_file": "keys/partners.txt"}}
  },
  "rate_limits": {
    "per_user": {"rate": 0, "per": "1s", "key": "claim:sub"},
    "shared": {"rate": 1, "per": "1s", "store": "redis", "bursts": 1}
  },
  "routes": [
    {"path": "/a", "auth": ["ipd"], "scopes": ["read"], "rate_limit": "per_usr", "proxy": {"upstream": "u"}},
    {"path": "/b", "auth": ["ops"], "scopes": ["read"], "rate_limit": "per_user", "proxy": {"upstream": "u"}},
    {"path": "/c", "cors": {"origins": ["*"], "credentials": true}, "proxy": {"upstream": "u"}},
    {"path": "/d", "cors": {"origins": ["https://app.example/"]}, "proxy": {"upstream": "u"}}
  ]
}
"""


def test_check_bad_policy_positions(tmp_path):
    make_keys(tmp_path)
    cp, name = check(tmp_path, BAD)
    assert cp.returncode == 1
    assert "ok" not in cp.stdout
    got = errors(cp, name)
    t = BAD
    want = [
        (pos(t, '"secret_file"', 0), 'auth.jwt.idp.secret_file: use only one of "jwks_url", "jwks_file" and "secret_file"'),
        (pos(t, '"none"'), '"none" is never accepted'),
        (pos(t, '{"algorithms": ["HS256"]}'), 'auth.jwt.nokeys: missing the keys'),
        (pos(t, '"keys/missing.key"'), 'cannot read "keys/missing.key"'),
        (pos(t, '"jwks_refresh"'), 'auth.jwt.dev.jwks_refresh: applies only with "jwks_url"'),
        (pos(t, '"Content-Length"'), '"content-length" is a connection or framing header'),
        (pos(t, '"dev"', 1), 'auth.api_keys.dev: policy name "dev" is already used by auth.jwt'),
        (pos(t, '"X Key"'), 'bad header name "X Key"'),
        (pos(t, '0, "per"'), "rate_limits.per_user.rate: expected an integer from 1"),
        (pos(t, '"redis"', 0), 'rate_limits.shared.store: "redis" needs a top-level "redis" section'),
        (pos(t, '"bursts"'), 'unknown key "bursts" in rate_limits.shared (did you mean "burst"?)'),
        (pos(t, '"ipd"'), 'routes[0].auth[0]: auth policy "ipd" is not defined in auth.jwt or auth.api_keys (did you mean "idp"?)'),
        (pos(t, '"per_usr"'), 'routes[0].rate_limit: rate limit "per_usr" is not defined in rate_limits (did you mean "per_user"?)'),
        (pos(t, '"scopes"', 1), 'routes[1].scopes: scopes are checked in a JWT'),
        (pos(t, '"per_user"', 1), 'routes[1].rate_limit: rate limit "per_user" is keyed by a claim'),
        (pos(t, 'true}'), 'routes[2].cors.credentials: "origins": ["*"] cannot be used with credentials'),
        (pos(t, '"https://app.example/"'), 'bad origin "https://app.example/": an origin has no path'),
    ]
    assert len(got) == len(want), "\n".join(f"{ln}:{col}: {m}" for ln, col, m in got)
    for (ln, col, msg), ((wl, wc), wmsg) in zip(got, want):
        assert (ln, col) == (wl, wc) and wmsg in msg, f"got {ln}:{col}: {msg}\nwant {wl}:{wc}: ...{wmsg}..."


def test_check_cors_wildcard_with_credentials(tmp_path):
    """SPEC: "origins": ["*"] together with credentials is a config error."""
    text = ('{"upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},\n'
            ' "routes": [{"path": "/", "proxy": {"upstream": "u"},\n'
            '   "cors": {"origins": ["*"], "credentials": true}}]}\n')
    cp, name = check(tmp_path, text)
    assert cp.returncode == 1
    assert [(ln, col) for ln, col, _ in errors(cp, name)] == [pos(text, "true")], cp.stderr
    # the same without credentials passes
    cp, name = check(tmp_path, text.replace(', "credentials": true', ""), "ok.json")
    assert cp.returncode == 0, cp.stderr


def test_check_redis_store_needs_redis(tmp_path):
    text = ('{"rate_limits": {"r": {"rate": 1, "per": "1s",\n'
            '   "store": "redis"}}}\n')
    cp, name = check(tmp_path, text)
    assert cp.returncode == 1
    assert [(ln, col) for ln, col, _ in errors(cp, name)] == [pos(text, '"redis"')], cp.stderr
    cp, name = check(tmp_path, text.replace("}}}", '}}, "redis": {"address": "127.0.0.1:6379"}}'), "ok.json")
    assert cp.returncode == 0, cp.stderr


def test_config_endpoint_holds_no_key_material(tmp_path, estuary, http):
    """GET /config serves the document as loaded: only file paths, never a secret, key or JWK."""
    material = make_keys(tmp_path)
    port = free_port()
    cfg = json.loads(GOOD)
    # the gateway runs in its own folder: absolute key paths; no JWKS fetch and no Redis needed
    del cfg["auth"]["jwt"]["idp"]
    cfg["rate_limits"]["per_user"]["store"] = "local"
    del cfg["redis"]
    cfg["routes"][0]["auth"] = ["local", "partners"]
    for j in cfg["auth"]["jwt"].values():
        for k in ("jwks_file", "secret_file"):
            if k in j:
                j[k] = str(tmp_path / j[k])
    cfg["auth"]["api_keys"]["partners"]["keys_file"] = str(tmp_path / "keys/partners.txt")
    cfg["admin"] = {"host": "127.0.0.1", "port": port}
    gw = estuary(cfg)
    wait_for_port("127.0.0.1", port, 10, gw.proc)
    r = http.get(f"http://127.0.0.1:{port}/config")
    assert r.status == 200
    for m in material:
        assert m not in r.text
    assert hashlib.sha256(material[2].encode()).hexdigest() not in r.text
    doc = r.json()
    assert doc["auth"]["api_keys"]["partners"]["keys_file"] == str(tmp_path / "keys/partners.txt")
    assert doc["auth"]["jwt"]["local"]["jwks_file"] == str(tmp_path / "keys/jwks.json")

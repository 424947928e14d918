"""Keys, key sets and tokens for the auth e2e tests, made with Debian's python3-jwt (PyJWT) and
python3-cryptography.

    kit = AuthKit()                        # fresh RSA 2048, EC P-256, Ed25519 keys + HMAC secret
    kit.token("RS256", sub="u1")           # signed, kid set, iss/aud/exp defaults (see claims())
    kit.jwks()                             # {"keys": [...]} of the public keys (+ the oct key if asked)
    kit.write_jwks(path); kit.write_secret(path)

Hostile tokens are built by hand (PyJWT refuses to make them): alg "none", HS256 keyed with the
RSA public PEM (algorithm confusion), a tampered payload.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Optional

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://idp.test/"
AUDIENCE = "orders-api"

# algorithm -> the kit's key name it signs with
KEY_OF = {"RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa", "PS384": "rsa", "PS512": "rsa",
          "ES256": "ec", "EdDSA": "ed", "HS256": "hmac", "HS384": "hmac", "HS512": "hmac"}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int, size: Optional[int] = None) -> str:
    return b64u(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


def _compact(header: dict, payload: dict) -> str:
    return (b64u(json.dumps(header, separators=(",", ":")).encode()) + "." +
            b64u(json.dumps(payload, separators=(",", ":")).encode()))


class AuthKit:
    def __init__(self, prefix: str = "k"):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        # printable, so a secret_file is plain text; 64 bytes serve HS512 too (RFC 7518 §3.2)
        self.secret = secrets.token_hex(32).encode()
        self.kids = {"rsa": f"{prefix}-rsa", "ec": f"{prefix}-ec", "ed": f"{prefix}-ed", "hmac": f"{prefix}-hmac"}

    # ---- key sets
    def jwk(self, name: str) -> dict:
        kid = self.kids[name]
        if name == "rsa":
            n = self.rsa.public_key().public_numbers()
            return {"kty": "RSA", "kid": kid, "use": "sig", "n": _uint(n.n), "e": _uint(n.e)}
        if name == "ec":
            n = self.ec.public_key().public_numbers()
            return {"kty": "EC", "kid": kid, "crv": "P-256", "x": _uint(n.x, 32), "y": _uint(n.y, 32)}
        if name == "ed":
            raw = self.ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return {"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64u(raw)}
        if name == "hmac":
            return {"kty": "oct", "kid": kid, "k": b64u(self.secret)}
        raise KeyError(name)

    def jwks(self, names=("rsa", "ec", "ed")) -> dict:
        return {"keys": [self.jwk(n) for n in names]}

    def write_jwks(self, path: Path, names=("rsa", "ec", "ed")) -> str:
        Path(path).write_text(json.dumps(self.jwks(names)))
        return str(path)

    def write_secret(self, path: Path, newline: bool = True) -> str:
        Path(path).write_bytes(self.secret + (b"\n" if newline else b""))
        return str(path)

    def rsa_public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    # ---- tokens
    @staticmethod
    def claims(**extra) -> dict:
        """iss/aud of the tests' policies, sub, an exp 10 minutes ahead; None values are dropped."""
        now = int(time.time())
        c = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": now, "exp": now + 600,
             "scope": "orders:read"}
        c.update(extra)
        return {k: v for k, v in c.items() if v is not None}

    def signing_key(self, alg: str):
        name = KEY_OF[alg]
        return self.secret if name == "hmac" else getattr(self, name)

    def token(self, alg: str = "RS256", kid: Optional[str] = "", headers: Optional[dict] = None, **claims) -> str:
        """A token signed by the kit's key for `alg`; kid "" = the key's own kid, None = no kid."""
        hdr = dict(headers or {})
        if kid == "":
            kid = self.kids[KEY_OF[alg]]
        if kid is not None:
            hdr["kid"] = kid
        return jwt.encode(self.claims(**claims), self.signing_key(alg), algorithm=alg, headers=hdr)

    def token_alg_none(self, **claims) -> str:
        return _compact({"alg": "none", "typ": "JWT", "kid": self.kids["rsa"]}, self.claims(**claims)) + "."

    def token_confusion(self, **claims) -> str:
        """HS256 keyed with the RSA public key's PEM, naming the RSA key's kid: a verifier that
        lets the token pick HMAC over a public key would accept it."""
        signing_input = _compact({"alg": "HS256", "typ": "JWT", "kid": self.kids["rsa"]}, self.claims(**claims))
        mac = hmac.new(self.rsa_public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64u(mac)

    def token_tampered(self, alg: str = "RS256", **claims) -> str:
        """A valid token whose payload is swapped for another (sub "admin") under the same signature."""
        h, _p, s = self.token(alg, **claims).split(".")
        forged = b64u(json.dumps(self.claims(sub="admin", **claims), separators=(",", ":")).encode())
        return f"{h}.{forged}.{s}"


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def main(argv=None) -> int:
    """Bench helper: writes a key set and long-lived tokens for an auth scenario.

        /usr/bin/python3 tests/e2e/authkit.py OUT_DIR [--ttl SECONDS]

    OUT_DIR/jwks.json (RSA, P-256, Ed25519 public keys), OUT_DIR/hs.key (HMAC secret, one
    trailing newline), OUT_DIR/token_<ALG>.txt for RS256, ES256, EdDSA and HS256 (iss/aud as
    ISSUER/AUDIENCE, scope "orders:read", exp now + ttl, default one day), and
    OUT_DIR/policy.json: an "auth" section using them ({"jwt": {"bench_rs": ..., "bench_hs": ...}}).
    """
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--ttl", type=int, default=86400)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kit = AuthKit("bench")
    jwks = kit.write_jwks(out / "jwks.json")
    secret = kit.write_secret(out / "hs.key")
    exp = int(time.time()) + args.ttl
    for alg in ("RS256", "ES256", "EdDSA"):
        (out / f"token_{alg}.txt").write_text(kit.token(alg, exp=exp))
    (out / "token_HS256.txt").write_text(kit.token("HS256", kid=None, exp=exp))
    policy = {"jwt": {"bench_rs": {"jwks_file": str(Path(jwks).resolve()), "algorithms": ["RS256", "ES256", "EdDSA"],
                                   "issuer": ISSUER, "audience": [AUDIENCE]},
                      "bench_hs": {"secret_file": str(Path(secret).resolve()), "algorithms": ["HS256"]}}}
    (out / "policy.json").write_text(json.dumps(policy, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

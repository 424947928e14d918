#!/usr/bin/python3
"""Generates the fixed keys, key sets and tokens of tests/unit/policy (run once; the outputs
are committed, so the unit tests need no Python).

    /usr/bin/python3 tests/unit/policy/data/make_tokens.py   # Debian's python3-jwt, python3-cryptography

Every token is issued at NOW (the clock test_jwt.c passes to the verifier) with an exp far in
the future (2100), so the files stay valid. Signatures of PS256/ES256/ES384 are randomized:
re-running the script changes the files, not their meaning.
"""
import base64
import hashlib
import hmac
import json
import os

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1700000000
FAR = 4102444800  # 2100-01-01
ISS = "https://idp.test/"
AUD = "orders-api"


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


def write(name, data):
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(os.path.join(HERE, name), mode) as f:
        f.write(data)


def pem_private(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk_rsa(key, kid):
    n = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": uint(n.n), "e": uint(n.e)}


def jwk_ec(key, kid, crv, size):
    n = key.public_key().public_numbers()
    return {"kty": "EC", "kid": kid, "crv": crv, "x": uint(n.x, size), "y": uint(n.y, size)}


def jwk_ed(key, kid):
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64u(raw)}


def claims(**extra):
    c = {"iss": ISS, "aud": AUD, "sub": "user-42", "iat": NOW, "exp": FAR,
         "scope": "orders:read orders:write", "tenant": 7}
    c.update(extra)
    return c


def manual(header, payload, sign):
    signing_input = b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64u(json.dumps(payload, separators=(",", ":")).encode())
    return signing_input + "." + b64u(sign(signing_input.encode()))


def main():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec256 = ec.generate_private_key(ec.SECP256R1())
    ec384 = ec.generate_private_key(ec.SECP384R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    secret = os.urandom(64)

    write("rsa_pub.pem", pem_public(rsa_key))
    write("hs.key", secret)

    keys = [jwk_rsa(rsa_key, "rsa1"), jwk_ec(ec256, "ec256", "P-256", 32),
            jwk_ec(ec384, "ec384", "P-384", 48), jwk_ed(ed, "ed1"),
            {"kty": "oct", "kid": "hs1", "k": b64u(secret)},
            # skipped: an encryption key, and a key type we do not know
            dict(jwk_rsa(rsa_key, "rsa-enc"), use="enc"),
            {"kty": "OKP", "kid": "x448", "crv": "X448", "x": b64u(b"\x01" * 56)}]
    write("jwks.json", json.dumps({"keys": keys}, indent=1))

    # 1,000 distinct usable Ed25519 keys: over the 100-key bound
    many = [jwk_ed(ed25519.Ed25519PrivateKey.generate(), "k%d" % i) for i in range(1000)]
    write("jwks_1000.json", json.dumps({"keys": many}))
    write("jwks_not_json.txt", "<html><body>502 Bad Gateway</body></html>\n")

    tokens = {}
    rsa_pem = pem_private(rsa_key)
    for alg in ("RS256", "RS384", "RS512", "PS256"):
        tokens[alg] = jwt.encode(claims(), rsa_pem, algorithm=alg, headers={"kid": "rsa1"})
    tokens["ES256"] = jwt.encode(claims(), pem_private(ec256), algorithm="ES256", headers={"kid": "ec256"})
    tokens["ES384"] = jwt.encode(claims(), pem_private(ec384), algorithm="ES384", headers={"kid": "ec384"})
    tokens["EdDSA"] = jwt.encode(claims(), pem_private(ed), algorithm="EdDSA", headers={"kid": "ed1"})
    for alg in ("HS256", "HS384", "HS512"):
        tokens[alg] = jwt.encode(claims(), secret, algorithm=alg, headers={"kid": "hs1"})
    tokens["HS256_nokid"] = jwt.encode(claims(), secret, algorithm="HS256")
    tokens["RS256_nokid"] = jwt.encode(claims(), rsa_pem, algorithm="RS256")
    tokens["expired"] = jwt.encode(claims(exp=NOW - 3600), rsa_pem, algorithm="RS256", headers={"kid": "rsa1"})
    tokens["nbf_future"] = jwt.encode(claims(nbf=NOW + 3600), rsa_pem, algorithm="RS256", headers={"kid": "rsa1"})
    tokens["wrong_aud"] = jwt.encode(claims(aud=["other-api", "billing"]), rsa_pem, algorithm="RS256",
                                     headers={"kid": "rsa1"})
    tokens["aud_list"] = jwt.encode(claims(aud=["billing", AUD]), rsa_pem, algorithm="RS256",
                                    headers={"kid": "rsa1"})
    tokens["wrong_iss"] = jwt.encode(claims(iss="https://evil.test/"), rsa_pem, algorithm="RS256",
                                     headers={"kid": "rsa1"})
    tokens["scp_list"] = jwt.encode(claims(scope=None, scp=["orders:read", "admin"]), rsa_pem,
                                    algorithm="RS256", headers={"kid": "rsa1"})
    tokens["unknown_kid"] = jwt.encode(claims(), rsa_pem, algorithm="RS256", headers={"kid": "rotated-away"})

    h, p, s = tokens["RS256"].split(".")
    evil = b64u(json.dumps(claims(sub="admin"), separators=(",", ":")).encode())
    tokens["tampered_payload"] = h + "." + evil + "." + s
    # flip the first signature character: the bytes change, the encoding stays canonical
    tokens["tampered_signature"] = h + "." + p + "." + ("B" if s[0] == "A" else "A") + s[1:]

    tokens["alg_none"] = manual({"alg": "none", "typ": "JWT"}, claims(), lambda m: b"")
    tokens["alg_none_kid"] = manual({"alg": "none", "kid": "rsa1"}, claims(), lambda m: b"")
    # algorithm confusion: HS256 keyed with the RSA public key PEM, kid of the RSA key
    rsa_pub_pem = pem_public(rsa_key)
    tokens["confusion_hs256"] = manual({"alg": "HS256", "kid": "rsa1"}, claims(),
                                       lambda m: hmac.new(rsa_pub_pem, m, hashlib.sha256).digest())
    tokens["confusion_hs256_nokid"] = manual({"alg": "HS256"}, claims(),
                                             lambda m: hmac.new(rsa_pub_pem, m, hashlib.sha256).digest())
    tokens["es256_der"] = manual({"alg": "ES256", "kid": "ec256"}, claims(),
                                 lambda m: ec256.sign(m, ec.ECDSA(hashes.SHA256())))
    tokens["crit"] = manual({"alg": "HS256", "kid": "hs1", "crit": ["b64"], "b64": False}, claims(),
                            lambda m: hmac.new(secret, m, hashlib.sha256).digest())
    tokens["big_64k"] = manual({"alg": "HS256", "kid": "hs1"}, claims(pad="A" * 65536),
                               lambda m: hmac.new(secret, m, hashlib.sha256).digest())
    # signature made by a key of the right type but not the published one
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens["wrong_key"] = jwt.encode(claims(), pem_private(other), algorithm="RS256", headers={"kid": "rsa1"})

    for name, tok in tokens.items():
        write("token_%s.txt" % name, tok)


if __name__ == "__main__":
    main()

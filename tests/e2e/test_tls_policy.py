"""TLS policy on listeners (SPEC "Access control and traffic policy", docs/tls.md): TLS 1.2 and
1.3 only, forward-secret AEAD suites in the server's order, tls.min_version and tls.ciphers,
resumption by session tickets (also across a SIGHUP reload), OCSP stapling from tls.ocsp_file.

A refused handshake is the server ending it after the ClientHello: its alert
(protocol_version, handshake_failure) or, as libh2o does, closing the connection without
flushing the alert. The client is set up to really offer the old protocol or suite (security
level 0), so a test fails if the server accepts it, and a client-side refusal (no protocols
or ciphers available, which fails before anything is sent) does not count."""
import json
import signal
import socket
import ssl
import subprocess
import time

import pytest

from harness import free_port, run_estuary, wait_until

PROTOCOL_ALERT = "TLSV1_ALERT_PROTOCOL_VERSION"
HANDSHAKE_ALERT = "SSLV3_ALERT_HANDSHAKE_FAILURE"


def tls_listener(port, cert, key, **extra):
    return {"host": "127.0.0.1", "port": port,
            "tls": dict({"certificate_file": str(cert), "key_file": str(key)}, **extra)}


def start(estuary, tls, **tls_extra):
    """estuary with one TLS listener (the CA-signed EC P-256 cert) carrying `tls_extra`."""
    cfg = {"listen": [tls_listener(free_port(), tls.server_cert, tls.server_key, **tls_extra)],
           "routes": []}
    return estuary(cfg)


def client_ctx(tls, max_version=None, min_version=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(tls.ca_cert))
    if ciphers is not None or (max_version is not None and max_version < ssl.TLSVersion.TLSv1_2):
        # security level 0 so that this client really offers what the server must refuse
        ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


class Result:
    def __init__(self, s: ssl.SSLSocket, reply: bytes):
        self.version = s.version()
        self.cipher = s.cipher()[0]
        self.session = s.session
        self.reused = s.session_reused
        self.reply = reply


def connect(port, ctx, session=None, path="/nothing") -> Result:
    """Handshake, one HTTP/1.1 request read to the end (TLS 1.3 tickets arrive after the
    handshake), then the session the server gave."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 "), reply[:200]
            return Result(s, reply)


def server_refusal(e: Exception, alert: str) -> bool:
    """True when `e` is the server ending the handshake: its alert, or a close (EOF/reset)."""
    return (alert in str(e) or isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError))
            or "EOF occurred" in str(e))


def refused(port, ctx, alert):
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as e:
        connect(port, ctx)
    assert server_refusal(e.value, alert), f"expected the server to refuse ({alert} or a close), got {e.value!r}"


# ---------------------------------------------------------------- protocol versions

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["1.0", "1.1"])
def test_old_protocols_refused(estuary, tls, version):
    gw = start(estuary, tls)
    refused(gw.tls_port, client_ctx(tls, min_version=ssl.TLSVersion.TLSv1, max_version=version), PROTOCOL_ALERT)


def test_old_protocol_refused_by_openssl_cli(estuary, tls):
    gw = start(estuary, tls)
    cp = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{gw.tls_port}", "-tls1_1",
                         "-cipher", "DEFAULT:@SECLEVEL=0"],
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert cp.returncode != 0
    assert "Cipher is (NONE)" in cp.stdout, cp.stdout  # no session was established
    # the ClientHello went out; the server answered with its alert or closed without a byte
    assert "alert protocol version" in cp.stderr or "SSL handshake has read 0 bytes" in cp.stdout, cp.stdout + cp.stderr


def test_tls12_and_tls13_accepted(estuary, tls):
    gw = start(estuary, tls)
    r12 = connect(gw.tls_port, client_ctx(tls, max_version=ssl.TLSVersion.TLSv1_2))
    assert r12.version == "TLSv1.2" and r12.cipher.startswith("ECDHE-ECDSA-") and "GCM" in r12.cipher
    r13 = connect(gw.tls_port, client_ctx(tls))
    assert r13.version == "TLSv1.3"


def test_min_version_13_refuses_12(estuary, tls):
    gw = start(estuary, tls, min_version="1.3")
    refused(gw.tls_port, client_ctx(tls, max_version=ssl.TLSVersion.TLSv1_2), PROTOCOL_ALERT)
    assert connect(gw.tls_port, client_ctx(tls)).version == "TLSv1.3"


# ---------------------------------------------------------------- cipher suites (TLS 1.2)

TLS12 = ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("ciphers", ["ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384",  # CBC, SHA-2 MACs
                                     "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"],  # CBC, SHA-1 MACs
                         ids=["cbc-sha2", "cbc-sha1"])
def test_cbc_suites_refused(estuary, tls, ciphers):
    gw = start(estuary, tls)
    refused(gw.tls_port, client_ctx(tls, max_version=TLS12, ciphers=ciphers), HANDSHAKE_ALERT)


def rsa_cert(tls, d):
    """An RSA server certificate for localhost signed by the test CA (RSA key exchange needs one)."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=30)
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "rsa.key", "-out", "rsa.csr", "-subj", "/CN=localhost")
    (d / "rsa.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "rsa.csr", "-CA", str(tls.ca_cert), "-CAkey", str(tls.ca_key), "-CAcreateserial",
        "-out", "rsa.pem", "-days", "2", "-extfile", "rsa.ext")
    return d / "rsa.pem", d / "rsa.key"


def test_rsa_key_exchange_refused_ecdhe_rsa_accepted(estuary, tls, tmp_path):
    cert, key = rsa_cert(tls, tmp_path)
    gw = estuary({"listen": [tls_listener(free_port(), cert, key)], "routes": []})
    refused(gw.tls_port, client_ctx(tls, max_version=TLS12, ciphers="AES128-GCM-SHA256:AES256-GCM-SHA384"),
            HANDSHAKE_ALERT)
    r = connect(gw.tls_port, client_ctx(tls, max_version=TLS12,
                                        ciphers="AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"))
    assert r.cipher == "ECDHE-RSA-AES128-GCM-SHA256"


def test_server_order_wins(estuary, tls):
    """The client prefers ChaCha20; the default server order puts AES-GCM first."""
    gw = start(estuary, tls)
    r = connect(gw.tls_port, client_ctx(tls, max_version=TLS12,
                                        ciphers="ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"))
    assert r.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_custom_ciphers_honoured(estuary, tls):
    gw = start(estuary, tls, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA256")
    # AES-GCM is no longer in the list
    refused(gw.tls_port, client_ctx(tls, max_version=TLS12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"), HANDSHAKE_ALERT)
    # the operator's list (with a CBC suite) is used as given, in its order
    r = connect(gw.tls_port, client_ctx(tls, max_version=TLS12,
                                        ciphers="ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"))
    assert r.cipher == "ECDHE-ECDSA-CHACHA20-POLY1305"
    r = connect(gw.tls_port, client_ctx(tls, max_version=TLS12, ciphers="ECDHE-ECDSA-AES128-SHA256"))
    assert r.cipher == "ECDHE-ECDSA-AES128-SHA256"


# ---------------------------------------------------------------- resumption

def reload(gw, config):
    """Writes `config`, sends SIGHUP, waits (bounded) for "reloaded" in the log. The workers
    switch generation on their own loop a moment later: callers poll for the new behaviour."""
    before = gw.stderr().count("reloaded")
    gw.config = config
    gw.config_path.write_text(json.dumps(config, indent=2))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.stderr().count("reloaded") > before, timeout=10, what="'reloaded' in the log")


# a route whose upstream is closed: 502 once the generation that has it serves
MARKER_ROUTE = {"path": "/marker", "proxy": {"upstream": "closed", "path": "/"}}


def with_marker(cfg):
    return dict(cfg, upstreams={"closed": {"targets": [f"http://127.0.0.1:{free_port()}"]}}, routes=[MARKER_ROUTE])


def status(port, ctx, path):
    return int(connect(port, ctx, path=path).reply.split(b" ", 2)[1])


@pytest.mark.parametrize("max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["1.2", "1.3"])
def test_ticket_resumption_also_across_reload(estuary, tls, max_version):
    gw = start(estuary, tls)
    ctx = client_ctx(tls, max_version=max_version)
    first = connect(gw.tls_port, ctx)
    assert not first.reused and first.session is not None and first.session.has_ticket
    again = connect(gw.tls_port, ctx, session=first.session)
    assert again.reused, "the ticket was not accepted"
    # a reload builds new SSL_CTXs; the ticket keys are process-wide, so the ticket still works
    reload(gw, with_marker(gw.config))
    probe = client_ctx(tls, max_version=max_version)  # full handshakes while polling
    wait_until(lambda: status(gw.tls_port, probe, "/marker") == 502, timeout=5, what="the new generation")
    after = connect(gw.tls_port, ctx, session=first.session)
    assert after.reused, "the ticket was not accepted after a reload"


def test_reload_applies_min_version(estuary, tls):
    gw = start(estuary, tls)
    tls12 = client_ctx(tls, max_version=ssl.TLSVersion.TLSv1_2)
    assert connect(gw.tls_port, tls12).version == "TLSv1.2"
    cfg = json.loads(json.dumps(gw.config))
    cfg["listen"][0]["tls"]["min_version"] = "1.3"
    reload(gw, cfg)

    def refuses_12():
        try:
            connect(gw.tls_port, tls12)
            return False
        except (ssl.SSLError, ConnectionResetError) as e:
            assert server_refusal(e, PROTOCOL_ALERT), repr(e)
            return True
    wait_until(refuses_12, timeout=5, what="TLS 1.2 refused after the reload")
    assert connect(gw.tls_port, client_ctx(tls)).version == "TLSv1.3"
    assert "1 kept" in gw.stderr(), "the listener (and its queued connections) should be kept"


def test_session_from_another_process_not_resumed(estuary, tls):
    """Control: a ticket from another estuary process (other keys) gives a full handshake."""
    a = start(estuary, tls)
    b = start(estuary, tls)
    ctx = client_ctx(tls)
    first = connect(a.tls_port, ctx)
    assert connect(a.tls_port, ctx, session=first.session).reused
    assert not connect(b.tls_port, ctx, session=first.session).reused


# ---------------------------------------------------------------- OCSP stapling

def ocsp_response(tls, d, status="V", name="resp.der"):
    """An OCSP response for the server certificate, signed by the test CA (openssl ocsp)."""
    def run(*args):
        return subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, text=True, timeout=30)
    serial = run("x509", "-in", str(tls.server_cert), "-noout", "-serial").stdout.strip().split("=", 1)[1]
    expiry = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 86400))
    revoked = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() - 60)) if status == "R" else ""
    (d / "index.txt").write_text(f"{status}\t{expiry}\t{revoked}\t{serial}\tunknown\t/CN=localhost\n")
    run("ocsp", "-issuer", str(tls.ca_cert), "-cert", str(tls.server_cert), "-no_nonce", "-reqout", "req.der")
    run("ocsp", "-index", "index.txt", "-rsigner", str(tls.ca_cert), "-rkey", str(tls.ca_key), "-CA",
        str(tls.ca_cert), "-reqin", "req.der", "-respout", name, "-ndays", "1")
    return d / name


def s_client_status(port, *extra):
    cp = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                         "-status", *extra], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert "CONNECTED" in cp.stdout, cp.stdout + cp.stderr
    return cp.stdout


def test_ocsp_stapled_and_reread_on_reload(estuary, tls, tmp_path):
    resp = ocsp_response(tls, tmp_path)
    gw = start(estuary, tls, ocsp_file=str(resp))
    for extra in ((), ("-tls1_2",)):
        out = s_client_status(gw.tls_port, *extra)
        assert "OCSP Response Status: successful" in out, out
        assert "Cert Status: good" in out, out
    # a renewed file (here: the certificate revoked) is stapled after a reload
    ocsp_response(tls, tmp_path, status="R")
    reload(gw, gw.config)
    wait_until(lambda: "Cert Status: revoked" in s_client_status(gw.tls_port), timeout=5,
               what="the renewed OCSP response stapled")
    assert "says the certificate is \"revoked\"" in gw.stderr()


def test_no_ocsp_without_ocsp_file(estuary, tls):
    gw = start(estuary, tls)
    out = s_client_status(gw.tls_port)
    assert "OCSP response: no response sent" in out, out


def test_ocsp_garbage_refused_at_start(tls, tmp_path):
    bad = tmp_path / "bad.der"
    bad.write_bytes(b"\x30\x03\x0a\x01\x00 trailing")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"listen": [tls_listener(free_port(), tls.server_cert, tls.server_key,
                                                        ocsp_file=str(bad))], "routes": []}))
    cp = run_estuary(["-c", str(path)])
    assert cp.returncode != 0
    assert "is not a DER-encoded OCSP response" in cp.stderr, cp.stderr


# ---------------------------------------------------------------- config errors (--check)

def check(tmp_path, tls_obj):
    cfg = {"listen": [{"host": "127.0.0.1", "port": 8443, "tls": tls_obj}], "routes": []}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg, indent=2))
    return run_estuary(["--check", "-c", str(path)]), path


def base_tls(tls, **extra):
    return dict({"certificate_file": str(tls.server_cert), "key_file": str(tls.server_key)}, **extra)


def test_check_accepts_the_new_keys(tmp_path, tls):
    resp = ocsp_response(tls, tmp_path)
    cp, _ = check(tmp_path, base_tls(tls, min_version="1.3", ciphers="ECDHE+AESGCM", ocsp_file=str(resp)))
    assert cp.returncode == 0, cp.stderr


@pytest.mark.parametrize("extra, key, message", [
    ({"ocsp_file": "/nonexistent/ocsp.der"}, "ocsp_file", "cannot read"),
    ({"min_version": "1.1"}, "min_version", 'expected "1.2" or "1.3"'),
    ({"min_version": 1.3}, "min_version", "expected a string"),
    ({"ciphers": "NOPE-NOTHING"}, "ciphers", "matches no TLS 1.2 cipher suite"),
    ({"ciphers": "ECDHE-ECDSA-AES128-SHA256:AES128-GCM-SHA256"}, "ciphers", "no forward-secret AEAD suite"),
    ({"session_cache": True}, "session_cache", "unknown"),
], ids=["ocsp-missing", "min-1.1", "min-number", "ciphers-invalid", "ciphers-no-fs-aead", "unknown-key"])
def test_check_errors_with_position(tmp_path, tls, extra, key, message):
    cp, path = check(tmp_path, base_tls(tls, **extra))
    assert cp.returncode != 0
    text = path.read_text().splitlines()
    line = next(i for i, ln in enumerate(text, 1) if f'"{key}"' in ln)
    lines = [ln for ln in cp.stderr.splitlines() if ln.startswith(f"{path}:{line}:")]
    assert lines and message.lower() in lines[0].lower(), cp.stderr

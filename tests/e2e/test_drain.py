"""Graceful drain (SIGTERM/SIGINT): in-flight requests finish (with Connection: close),
idle keep-alive clients are closed at once, an idle process exits fast, and a drain cut by
shutdown_timeout logs the requests it cut and still exits 0."""
import json
import signal
import socket
import threading
import time

from harness import delayed, json_reply, upstream, wait_until


def raw_request(sock, path, trailing=b""):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() + trailing)


def read_response(sock, timeout=10.0):
    """Reads one Content-Length response: (head lower-cased, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([ln.split(b":")[1] for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")][0])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head.lower(), body


def is_closed(sock, timeout):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def gateway(backend, estuary, shutdown_timeout="10s", workers=2, slow=1.0):
    b = backend("d")
    b.get("/fast", json_reply({"fast": True}))
    b.get("/slow", delayed(slow, {"slow": True}))
    return b, estuary({"workers": workers, "shutdown_timeout": shutdown_timeout,
                       "upstreams": {"u": upstream(b)},
                       "routes": [{"path": "/fast", "proxy": {"upstream": "u", "path": "/fast"}},
                                  {"path": "/slow", "proxy": {"upstream": "u", "path": "/slow"}}]})


def test_idle_process_exits_fast(backend, estuary):
    _, gw = gateway(backend, estuary)
    t0 = time.monotonic()
    rc = gw.stop(signal.SIGTERM)
    elapsed = time.monotonic() - t0
    assert rc == 0
    assert elapsed < 1.0, f"an idle SIGTERM took {elapsed:.2f}s"


def test_idle_keep_alive_client_is_closed_at_drain_start(backend, estuary):
    _, gw = gateway(backend, estuary)  # shutdown_timeout 10s, http1 req_timeout 10s
    s = socket.create_connection(("127.0.0.1", gw.port))
    raw_request(s, "/fast", trailing=b"\r\n")  # a stray empty line (RFC 7230 3.5) keeps it idle
    head, body = read_response(s)
    assert head.startswith(b"http/1.1 200") and b"connection: close" not in head
    t0 = time.monotonic()
    rc = gw.stop(signal.SIGTERM)
    elapsed = time.monotonic() - t0
    assert rc == 0
    assert elapsed < 2.0, f"exit took {elapsed:.2f}s with an idle keep-alive client"
    assert is_closed(s, 2.0), "the idle keep-alive connection was not closed"
    s.close()


def test_in_flight_request_finishes_with_connection_close(backend, estuary):
    b, gw = gateway(backend, estuary, slow=1.0)
    s = socket.create_connection(("127.0.0.1", gw.port))
    raw_request(s, "/slow")
    wait_until(lambda: b.request_count == 1, timeout=5, what="the slow request to reach the backend")
    idle = socket.create_connection(("127.0.0.1", gw.port))  # a second, idle client
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert is_closed(idle, 1.0), "the idle client was not closed promptly"
    head, body = read_response(s)
    assert head.startswith(b"http/1.1 200") and json.loads(body) == {"slow": True}
    assert b"connection: close" in head
    assert is_closed(s, 2.0), "the connection stays open after the drained response"
    rc = gw.stop()
    assert rc == 0 and time.monotonic() - t0 < 3.0
    s.close()
    idle.close()


def test_sigterm_with_slow_request_exits_zero_after_it(backend, estuary, http):
    b, gw = gateway(backend, estuary, slow=1.0)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", http.get(gw.url("/slow"))))
    t.start()
    wait_until(lambda: b.request_count == 1, timeout=5, what="the slow request to reach the backend")
    assert gw.stop(signal.SIGTERM) == 0
    t.join(10)
    assert result["r"].status == 200 and result["r"].json() == {"slow": True}
    assert "cut" not in gw.stderr()


def test_shutdown_timeout_cut_is_logged_and_exits_zero(backend, estuary, http):
    b, gw = gateway(backend, estuary, shutdown_timeout="500ms", slow=5.0)
    result = {}

    def call():
        try:
            result["r"] = http.get(gw.url("/slow?x=1"), timeout=10)
        except Exception as e:  # the cut request fails on the client: expected
            result["e"] = e

    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: b.request_count == 1, timeout=5, what="the slow request to reach the backend")
    t0 = time.monotonic()
    assert gw.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 3.0
    t.join(10)
    err = gw.stderr()
    assert "shutdown_timeout reached" in err and "1 request(s) in flight" in err, err[-2000:]
    assert "cut request: GET /slow?x=1" in err, err[-2000:]
    assert "drain cut by shutdown_timeout: 1 request(s) did not finish" in err


def test_request_being_uploaded_at_drain_start_is_not_cut(backend, estuary):
    b = backend("d")
    b.route("POST", "/up", json_reply({"ok": True}))
    gw = estuary({"workers": 1, "shutdown_timeout": "10s", "upstreams": {"u": upstream(b)},
                  "routes": [{"path": "/up", "methods": ["POST"], "proxy": {"upstream": "u", "path": "/up"}}]})
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"a\": ")
    time.sleep(0.2)  # let the gateway read the partial body (nothing to wait on from outside)
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    s.sendall(b"12345}")
    head, body = read_response(s)
    assert head.startswith(b"http/1.1 200") and json.loads(body) == {"ok": True}
    assert b"connection: close" in head
    assert gw.stop() == 0
    s.close()

"""HTTP/1.1 request framing (SPEC "Request framing (HTTP/1.1)", "Client limits"): estuary's own
HTTP/1.1 layer (src/h1/conn.c, docs/http1.md).

Every refused request is sent over a raw socket, most with a second ("smuggled") request after
it; each must get exactly one JSON error with `Connection: close`, the connection must close,
and the backend (a RawBackend recording every byte) must receive nothing at all.
"""
import json
import os
import re
import socket
import time
import urllib.request

import pytest

from harness import echo_reply, free_port, json_reply, wait_until

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"


def gateway(estuary, target_url, **extra):
    cfg = {
        "upstreams": {"b": {"targets": [target_url]}},
        "routes": [{"path": "/{rest...}", "methods": ["GET", "POST", "PUT", "OPTIONS"],
                    "proxy": {"upstream": "b", "path": "/{rest...}"}}],
    }
    cfg.update(extra)
    return estuary(cfg)


def read_all(s, timeout=5.0):
    """Everything the server sends until it closes (bounded); (data, closed)."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def parse_one(data):
    """(status, headers dict lower-cased, body, rest after the response) of a Content-Length response."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {data[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    n = int(headers.get("content-length", "0"))
    return status, headers, rest[:n], rest[n:]


def read_response(s, timeout=5.0):
    """One complete Content-Length response from `s`: (status, headers, body)."""
    s.settimeout(timeout)
    data = b""
    while True:
        if b"\r\n\r\n" in data:
            st, headers, body, _ = parse_one(data)
            if len(body) == int(headers.get("content-length", "0")):
                return st, headers, body
        chunk = s.recv(65536)
        assert chunk, f"closed before a complete response: {data[:300]!r}"
        data += chunk


def assert_refused(gw, raw, request, status, code, smuggle=True):
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        try:
            s.sendall(request + (SMUGGLED if smuggle else b""))
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = read_all(s)
    st, headers, body, rest = parse_one(data)
    assert (st, json.loads(body)["error"]["code"]) == (status, code), data[:500]
    assert json.loads(body)["error"]["status"] == status
    assert headers.get("content-type") == "application/json"
    assert headers.get("connection", "").lower() == "close"
    assert rest == b"", f"more than one response: {rest[:200]!r}"
    assert closed, "the connection stayed open after the error"
    time.sleep(0.05)  # a forwarded request would have reached the backend by now
    assert raw.received == b"" and raw.connections == 0, f"the backend got {raw.received[:200]!r}"


def req(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("latin-1") + body


# (name, request bytes, status, code): SPEC "Request framing" one by one
FRAMING_CASES = [
    ("two_content_lengths", req("POST /x HTTP/1.1\nHost: gw\nContent-Length: 0\nContent-Length: 43\n\n"), 400, "bad_request"),
    ("content_length_list", req("POST /x HTTP/1.1\nHost: gw\nContent-Length: 5, 6\n\n", b"hello"), 400, "bad_request"),
    ("content_length_not_digits", req("POST /x HTTP/1.1\nHost: gw\nContent-Length: 1e3\n\n"), 400, "bad_request"),
    ("content_length_signed", req("POST /x HTTP/1.1\nHost: gw\nContent-Length: +5\n\n", b"hello"), 400, "bad_request"),
    ("te_and_cl", req("POST /x HTTP/1.1\nHost: gw\nContent-Length: 5\nTransfer-Encoding: chunked\n\n", b"0\r\n\r\n"),
     400, "bad_request"),
    ("cl_and_te", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\nContent-Length: 5\n\n", b"0\r\n\r\n"),
     400, "bad_request"),
    ("te_last_not_chunked", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked, gzip\n\n"), 400, "bad_request"),
    ("te_chunked_twice", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked, chunked\n\n", b"0\r\n\r\n"),
     400, "bad_request"),
    ("te_two_fields", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n",
                          b"0\r\n\r\n"), 400, "bad_request"),
    ("te_unknown_coding", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: foo, chunked\n\n", b"0\r\n\r\n"),
     501, "not_implemented"),
    ("te_only_gzip", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: gzip\n\n"), 400, "bad_request"),
    ("chunk_size_0x", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n", b"0x5\r\nhello\r\n0\r\n\r\n"),
     400, "bad_request"),
    ("chunk_size_plus", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n", b"+5\r\nhello\r\n0\r\n\r\n"),
     400, "bad_request"),
    ("chunk_size_space", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n", b" 5\r\nhello\r\n0\r\n\r\n"),
     400, "bad_request"),
    ("chunk_size_overflow", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n",
                                b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n"), 400, "bad_request"),
    ("chunk_bare_lf", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n", b"5\nhello\r\n0\r\n\r\n"),
     400, "bad_request"),
    ("chunk_data_not_crlf", req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n", b"5\r\nhelloXX0\r\n\r\n"),
     400, "bad_request"),
    ("no_host", req("GET /x HTTP/1.1\n\n"), 400, "bad_request"),
    ("two_hosts", req("GET /x HTTP/1.1\nHost: gw\nHost: other\n\n"), 400, "bad_request"),
    ("space_before_colon", req("GET /x HTTP/1.1\nHost: gw\nX-A : 1\n\n"), 400, "bad_request"),
    ("obs_fold", req("GET /x HTTP/1.1\nHost: gw\nX-A: 1\n  folded\n\n"), 400, "bad_request"),
    ("nul_in_field", req("GET /x HTTP/1.1\nHost: gw\nX-A: a\0b\n\n"), 400, "bad_request"),
    ("cr_in_field", req("GET /x HTTP/1.1\nHost: gw\nX-A: a\rb\n\n"), 400, "bad_request"),
    ("line_without_colon", req("GET /x HTTP/1.1\nHost: gw\nX-A\n\n"), 400, "bad_request"),
    ("request_line_extra_space", req("GET  /x HTTP/1.1\nHost: gw\n\n"), 400, "bad_request"),
    ("request_line_trailing_space", req("GET /x HTTP/1.1 \nHost: gw\n\n"), 400, "bad_request"),
    ("target_without_slash", req("GET x HTTP/1.1\nHost: gw\n\n"), 400, "bad_request"),
    ("version_1_2", req("GET /x HTTP/1.2\nHost: gw\n\n"), 505, "http_version_not_supported"),
    ("version_2_0", req("GET /x HTTP/2.0\nHost: gw\n\n"), 505, "http_version_not_supported"),
]


@pytest.fixture
def framing_gw(estuary, raw_backend):
    raw = raw_backend()
    gw = gateway(estuary, raw.url, admin={"host": "127.0.0.1", "port": free_port()})
    return gw, raw


@pytest.mark.parametrize("name,request_bytes,status,code", FRAMING_CASES, ids=[c[0] for c in FRAMING_CASES])
def test_framing_refused(framing_gw, name, request_bytes, status, code):
    gw, raw = framing_gw
    assert_refused(gw, raw, request_bytes, status, code)


def metric(gw, name, labels=""):
    port = gw.config["admin"]["port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(r"^" + re.escape(name + labels) + r" (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def test_refusals_are_counted(framing_gw):
    gw, raw = framing_gw
    assert_refused(gw, raw, FRAMING_CASES[0][1], 400, "bad_request")
    assert metric(gw, "estuary_client_connections_closed_total", '{reason="bad_request"}') >= 1


def test_uri_too_long(framing_gw):
    gw, raw = framing_gw
    assert_refused(gw, raw, b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 414, "uri_too_long")


def test_too_many_fields(framing_gw):
    gw, raw = framing_gw
    fields = "".join(f"X-F{i}: {i}\n" for i in range(150))
    assert_refused(gw, raw, req("GET /x HTTP/1.1\nHost: gw\n" + fields + "\n"), 431, "headers_too_large")


def test_header_too_large(framing_gw):
    gw, raw = framing_gw
    assert_refused(gw, raw, req("GET /x HTTP/1.1\nHost: gw\nX-Big: " + "a" * (100 * 1024) + "\n\n"), 431,
                   "headers_too_large")


def test_body_over_max_request_body(estuary, raw_backend):
    raw = raw_backend()
    gw = gateway(estuary, raw.url, max_request_body=1000)
    assert_refused(gw, raw, req("POST /x HTTP/1.1\nHost: gw\nContent-Length: 1001\n\n", b"a" * 1001), 413,
                   "request_too_large", smuggle=False)
    # a chunked body crossing the limit
    assert_refused(gw, raw, req("POST /x HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n",
                                b"3e8\r\n" + b"a" * 1000 + b"\r\n1\r\na\r\n0\r\n\r\n"), 413, "request_too_large",
                   smuggle=False)


def test_head_timeout_408(estuary, raw_backend):
    raw = raw_backend()
    gw = gateway(estuary, raw.url, client_header_timeout="1s", admin={"host": "127.0.0.1", "port": free_port()})
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /x HTTP/1.1\r\nHost: gw\r\n")  # the head never ends
        data, closed = read_all(s, timeout=5)
        elapsed = time.monotonic() - t0
    st, headers, body, _ = parse_one(data)
    assert (st, json.loads(body)["error"]["code"]) == (408, "request_timeout")
    assert headers["connection"].lower() == "close" and closed
    assert 0.8 < elapsed < 3.0, elapsed
    assert raw.connections == 0
    assert metric(gw, "estuary_client_connections_closed_total", '{reason="header_timeout"}') == 1


def test_body_timeout_408(estuary, raw_backend):
    raw = raw_backend()
    gw = gateway(estuary, raw.url, client_body_timeout="1s")
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        # 7 bytes never come; on a proxy route the body streams (docs/streaming.md): the first
        # bytes went to the backend (which, on /hang, waits for the rest), whose request is
        # then aborted
        s.sendall(b"POST /hang HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabc")
        data, closed = read_all(s, timeout=5)
    st, headers, body, _ = parse_one(data)
    assert (st, json.loads(body)["error"]["code"]) == (408, "request_timeout")
    assert closed
    assert wait_until(lambda: raw.closed == raw.connections, 5), "the backend's request was not aborted"


def test_idle_timeout(estuary, backend):
    b = backend().get("/x", {"ok": True})
    gw = gateway(estuary, b.url, client_idle_timeout="1s", admin={"host": "127.0.0.1", "port": free_port()})
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert read_response(s)[0] == 200
        t0 = time.monotonic()
        rest, closed = read_all(s, timeout=5)
        elapsed = time.monotonic() - t0
    assert closed and rest == b"" and 0.8 < elapsed < 3.0, elapsed
    assert metric(gw, "estuary_client_connections_closed_total", '{reason="idle_timeout"}') == 1


def test_pipelining_in_order(estuary, backend):
    b = backend().route("GET", "/{rest...}", echo_reply())
    gw = gateway(estuary, b.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"".join(b"GET /p/%d HTTP/1.1\r\nHost: gw\r\n\r\n" % i for i in range(3)))
        s.settimeout(5)
        data = b""
        out = []
        while len(out) < 3:
            try:
                st, headers, body, rest = parse_one(data)
                if len(body) == int(headers.get("content-length", "0")):
                    out.append(json.loads(body)["path"])
                    data = rest
                    continue
            except AssertionError:
                pass
            chunk = s.recv(65536)
            assert chunk, f"closed after {out}"
            data += chunk
    assert out == ["/p/0", "/p/1", "/p/2"]


def test_bytes_after_connection_close_are_ignored(estuary, backend):
    b = backend().route("GET", "/{rest...}", echo_reply())
    gw = gateway(estuary, b.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n" + SMUGGLED)
        data, closed = read_all(s)
    st, headers, body, rest = parse_one(data)
    assert st == 200 and json.loads(body)["path"] == "/a" and headers["connection"] == "close"
    assert rest == b"" and closed
    assert [r.path for r in b.requests] == ["/a"]


def test_http10(estuary, backend):
    b = backend().route("GET", "/{rest...}", echo_reply())
    gw = gateway(estuary, b.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:  # no keep-alive: closed after
        s.sendall(b"GET /a HTTP/1.0\r\n\r\n")
        data, closed = read_all(s)
    st, headers, body, _ = parse_one(data)
    assert data.startswith(b"HTTP/1.1 200") and json.loads(body)["path"] == "/a" and closed
    with socket.create_connection(("127.0.0.1", gw.port)) as s:  # keep-alive asked: kept
        s.sendall(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        st, headers, body = read_response(s)
        assert st == 200 and headers["connection"].lower() == "keep-alive"
        s.sendall(b"GET /c HTTP/1.0\r\n\r\n")
        data, closed = read_all(s)
        assert json.loads(parse_one(data)[2])["path"] == "/c" and closed


def test_expect_100_continue(estuary, backend):
    b = backend().route("POST", "/{rest...}", echo_reply())
    gw = gateway(estuary, b.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        s.settimeout(5)
        interim = s.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert b.request_count == 0
        s.sendall(b"hello")
        st, _, body = read_response(s)
    assert st == 200 and json.loads(body)["body"] == "hello"


def test_options_asterisk_reaches_the_handler(estuary, raw_backend):
    raw = raw_backend()
    gw = gateway(estuary, raw.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n")
        st, headers, body = read_response(s)
        # answered by the handler (a request id proves it ran), not refused by the parser,
        # and the connection stays usable
        assert "x-request-id" in headers and st not in (505, 501) and "connection" not in headers
        json.loads(body)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        data, closed = read_all(s)
    assert parse_one(data)[0] == 200 and closed


def test_absolute_form(estuary, backend):
    b = backend().route("GET", "/{rest...}", echo_reply())
    gw = gateway(estuary, b.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"GET http://api.example/p/1?q=2 HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n")
        data, _ = read_all(s)
    st, _, body, _ = parse_one(data)
    seen = json.loads(body)
    assert st == 200 and seen["path"] == "/p/1" and seen["query"] == "q=2"
    assert seen["headers"].get("X-Forwarded-Host") == "api.example"


def test_invalid_utf8_path_gives_valid_json(estuary, raw_backend):
    raw = raw_backend()
    cfg = {"upstreams": {"b": {"targets": [raw.url]}},
           "routes": [{"path": "/only", "proxy": {"upstream": "b", "path": "/only"}}]}
    gw = estuary(cfg)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"GET /\xff\xfe\xc3 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        data, _ = read_all(s)
    st, _, body, _ = parse_one(data)
    assert st in (400, 404)
    assert json.loads(body.decode("utf-8"))["error"]["status"] == st
    assert raw.connections == 0


def test_client_leaving_disposes_the_request(estuary, raw_backend):
    raw = raw_backend()
    gw = gateway(estuary, raw.url)
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET /hang HTTP/1.1\r\nHost: gw\r\n\r\n")
    wait_until(lambda: b"/hang" in raw.received, 5)
    time.sleep(0.2)
    assert '"path":"/hang"' not in gw.stderr()  # still waiting on the backend, which never answers
    s.close()  # the client leaves
    # nginx's behaviour: the request is disposed at once (its access-log line is written when
    # its pool is freed, with no status sent), which releases its upstream exchange
    line = wait_until(lambda: next((ln for ln in gw.stderr().splitlines() if '"path":"/hang"' in ln), None), 3)
    assert json.loads(line)["status"] == 0


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_descriptor_exhaustion(estuary, backend):
    b = backend().get("/x", {"ok": True})
    admin_port = free_port()
    cfg = {"upstreams": {"b": {"targets": [b.url]}},
           "routes": [{"path": "/x", "proxy": {"upstream": "b", "path": "/x"}}],
           "admin": {"host": "127.0.0.1", "port": admin_port}}
    gw = estuary(cfg, start=False)
    gw.prefix = ["prlimit", "--nofile=64:64"]
    gw.start()
    wait_until(lambda: _healthz(admin_port), 5)
    clients = []
    try:
        for _ in range(100):  # more than the process may open
            c = socket.socket()
            c.settimeout(2)
            c.connect(("127.0.0.1", gw.port))  # completes in the kernel's backlog
            clients.append(c)
        time.sleep(0.3)  # let the worker run into the limit
        cpu0 = proc_cpu_seconds(gw.proc.pid)
        t0 = time.monotonic()
        time.sleep(2)
        used = proc_cpu_seconds(gw.proc.pid) - cpu0
        assert used < 0.3 * (time.monotonic() - t0), f"estuary used {used:.2f} s of CPU in 2 s"
        assert _healthz(admin_port), "the admin listener stopped answering"
        assert metric(gw, "estuary_accept_paused_total") >= 1
        assert "out of file descriptors" in gw.stderr()
    finally:
        for c in clients:
            c.close()
    # accepting resumes by itself
    def ok():
        try:
            return urllib.request.urlopen(gw.url("/x"), timeout=2).status == 200
        except OSError:
            return False
    wait_until(ok, 5)


def _healthz(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
    except OSError:
        return False


def test_upgrade_h2c_is_answered_in_http11(estuary, backend):
    b = backend().route("GET", "/{rest...}", echo_reply())
    gw = gateway(estuary, b.url)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"GET /h HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        st, headers, body = read_response(s)
    assert st == 200 and json.loads(body)["path"] == "/h"
    seen = {k.lower() for k in json.loads(body)["headers"]}
    assert "upgrade" not in seen and "http2-settings" not in seen


def test_send_timeout_closes_a_client_that_does_not_read(estuary, backend):
    big = b"x" * (32 * 1024 * 1024)
    from harness import body_reply
    b = backend().get("/big", body_reply(big, content_type="application/octet-stream"))
    gw = gateway(estuary, b.url, client_send_timeout="1s", admin={"host": "127.0.0.1", "port": free_port()})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", gw.port))
    try:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n")  # and never read
        wait_until(lambda: metric(gw, "estuary_client_connections_closed_total", '{reason="send_timeout"}') == 1, 10)
    finally:
        s.close()


def test_framing_refused_over_tls(estuary, raw_backend, tls):
    raw = raw_backend()
    cfg = {"upstreams": {"b": {"targets": [raw.url]}},
           "routes": [{"path": "/{rest...}", "methods": ["GET", "POST"], "proxy": {"upstream": "b", "path": "/{rest...}"}}]}
    gw = estuary(cfg, tls=True)
    ctx = tls.client_context()
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", gw.tls_port)) as plain:
        with ctx.wrap_socket(plain, server_hostname="localhost") as s:
            s.sendall(FRAMING_CASES[4][1] + SMUGGLED)  # Content-Length with Transfer-Encoding
            data, closed = read_all(s)
    st, headers, body, rest = parse_one(data)
    assert (st, json.loads(body)["error"]["code"]) == (400, "bad_request")
    assert headers["connection"] == "close" and rest == b"" and closed
    assert raw.received == b"" and raw.connections == 0

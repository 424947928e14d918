"""HTTP/1.1 client connections while a request is in flight.

estuary keeps reading an HTTP/1.1 client socket while the request is handled (it saves two
epoll_ctl calls per request, see src/server/handler.c keep_reading). These tests pin what a
client must see: pipelined requests answered in order and intact (also when they arrive
while an earlier one waits on its backend, and when they are larger than the read bound),
a body followed by a pipelined request, a client that goes away mid-request costs no CPU
spin and leaves the worker serving, and the same over TLS.
"""
import json
import os
import socket
import ssl
import time

import pytest

from harness import delayed, json_reply, wait_until


def route_config(backend):
    return {
        "upstreams": {"b": {"targets": [backend.url]}},
        "routes": [
            {"path": "/px/{rest...}", "proxy": {"upstream": "b", "path": "/{rest...}"}},
            {"path": "/agg/{n}", "backends": [{"upstream": "b", "path": "/fast/{n}", "group": "g"}]},
            {"path": "/post", "methods": ["POST"], "proxy": {"upstream": "b", "path": "/echo"}},
        ],
    }


@pytest.fixture
def gw(backend, estuary):
    b = backend("b")
    b.get("/slow/{n}", delayed(0.4, json_reply(lambda p: {"slow": p["n"]})))
    b.get("/fast/{n}", json_reply(lambda p: {"fast": p["n"]}))

    async def echo(request):
        from aiohttp import web
        data = await request.read()
        return web.Response(body=json.dumps({"len": len(data)}).encode(), content_type="application/json")
    b.route("POST", "/echo", echo)
    g = estuary(route_config(b), tls=True)
    g.b = b
    return g


def get(path: str, close: bool = False) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: gw\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def read_responses(sock, count: int, timeout: float = 20.0):
    """Reads `count` Content-Length responses from `sock`; returns [(status, body bytes)]."""
    buf = b""
    out = []
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while len(out) < count:
        head_end = buf.find(b"\r\n\r\n")
        if head_end != -1:
            head = buf[:head_end].decode("latin-1").split("\r\n")
            clen = 0
            for line in head[1:]:
                k, _, v = line.partition(":")
                assert k.strip().lower() != "transfer-encoding", head
                if k.strip().lower() == "content-length":
                    clen = int(v.strip())
            if len(buf) >= head_end + 4 + clen:
                out.append((int(head[0].split(" ")[1]), buf[head_end + 4:head_end + 4 + clen]))
                buf = buf[head_end + 4 + clen:]
                continue
        assert time.monotonic() < deadline, f"got {len(out)} of {count} responses"
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} of {count} responses"
        buf += chunk
    return out, buf


def test_pipelined_in_one_write(gw):
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(get("/px/slow/1") + get("/px/fast/2") + get("/agg/3"))
        res, rest = read_responses(s, 3)
    assert [st for st, _ in res] == [200, 200, 200]
    assert [json.loads(b) for _, b in res] == [{"slow": "1"}, {"fast": "2"}, {"g": {"fast": "3"}}]
    assert rest == b""


def test_pipelined_while_first_waits_on_backend(gw):
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(get("/px/slow/1"))
        wait_until(lambda: gw.b.request_count >= 1, 5)  # the first is now in flight
        s.sendall(get("/px/fast/2"))
        s.sendall(get("/px/fast/3", close=True))
        res, rest = read_responses(s, 3)
        assert s.recv(1) == b""  # closed after the Connection: close request
    assert [json.loads(b) for _, b in res] == [{"slow": "1"}, {"fast": "2"}, {"fast": "3"}]
    assert rest == b""


def test_pipeline_larger_than_the_busy_read_bound(gw):
    # ~100 KiB of requests arrive while the first waits: more than estuary reads ahead
    # (64 KiB), so it stops reading and resumes after the response; every one is answered.
    n = 1500
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(get("/px/slow/0"))
        wait_until(lambda: gw.b.request_count >= 1, 5)
        s.sendall(b"".join(get(f"/px/fast/{i}") for i in range(1, n)))
        res, rest = read_responses(s, n, timeout=60)
    assert json.loads(res[0][1]) == {"slow": "0"}
    assert all(json.loads(b) == {"fast": str(i)} for i, (_, b) in enumerate(res) if i > 0)
    assert rest == b""


def test_body_then_pipelined_get(gw):
    body = os.urandom(20000)  # over the size estuary copies (16 KiB): the stock path
    small = b"x" * 100
    req = (b"POST /post HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    req += (b"POST /post HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % len(small)) + small
    req += get("/px/fast/9")
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(req)
        res, rest = read_responses(s, 3)
    assert [json.loads(b) for _, b in res] == [{"len": 20000}, {"len": 100}, {"fast": "9"}]


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_client_gone_mid_request_no_spin(gw):
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(get("/px/slow/1"))
        wait_until(lambda: gw.b.request_count >= 1, 5)
        s.shutdown(socket.SHUT_WR)  # end of stream while the request waits on its backend
        cpu0 = proc_cpu_seconds(gw.proc.pid)
        # the client left (docs/http1.md): the connection is closed, the request cancelled,
        # and nothing is sent
        s.settimeout(5)
        try:
            rest = s.recv(65536)
        except ConnectionResetError:
            rest = b""
        cpu1 = proc_cpu_seconds(gw.proc.pid)
    assert rest == b""
    assert cpu1 - cpu0 < 0.2, f"estuary used {cpu1 - cpu0:.2f} s of CPU while waiting"
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(get("/px/fast/5", close=True))
        res, _ = read_responses(s, 1)
    assert json.loads(res[0][1]) == {"fast": "5"}


def test_client_reset_mid_request(gw):
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(get("/px/slow/1"))
        wait_until(lambda: gw.b.request_count >= 1, 5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST while the request waits
        gw.b.reset_counters()
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(get("/px/fast/6") + get("/px/fast/7", close=True))
        res, _ = read_responses(s, 2)
    assert [json.loads(b) for _, b in res] == [{"fast": "6"}, {"fast": "7"}]


def test_pipelined_over_tls(gw, tls):
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", gw.tls_port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(get("/px/slow/1"))
            wait_until(lambda: gw.b.request_count >= 1, 5)
            s.sendall(get("/px/fast/2") + get("/agg/3"))
            res, rest = read_responses(s, 3)
    assert [json.loads(b) for _, b in res] == [{"slow": "1"}, {"fast": "2"}, {"g": {"fast": "3"}}]


def test_request_fields_intact_when_a_pipeline_arrives(backend, estuary):
    # The first request's headers live in its socket's input buffer, and a retry rebuilds the
    # upstream request from them after a backoff. Pipelined bytes read during the backoff, and
    # other connections reusing freed buffers meanwhile, must not change what the retry sends.
    b = backend("b")
    calls = []

    async def flaky(request):
        from aiohttp import web
        calls.append(request.headers.get("X-Probe"))
        status = 503 if len(calls) == 1 else 200
        return web.Response(status=status, body=json.dumps({"probe": calls[-1]}).encode(), content_type="application/json")
    b.get("/flaky", flaky)
    b.get("/fast/{n}", json_reply(lambda p: {"fast": p["n"]}))
    cfg = route_config(b)
    cfg["upstreams"]["b"]["retry"] = {"attempts": 2, "backoff": "600ms", "max_backoff": "600ms", "on": ["503"]}
    cfg["workers"] = 1  # the other connections below share the first one's thread (and its buffer cache)
    g = estuary(cfg)
    probe = "p" * 300
    n = 400
    with socket.create_connection(("127.0.0.1", g.port)) as s:
        s.sendall(f"GET /px/flaky HTTP/1.1\r\nHost: gw\r\nX-Probe: {probe}\r\n\r\n".encode())
        wait_until(lambda: len(calls) >= 1, 5)  # first attempt answered 503; the retry waits >= 300 ms
        s.sendall(b"".join(get(f"/px/fast/{i}") for i in range(1, n)))
        for i in range(5):
            with socket.create_connection(("127.0.0.1", g.port)) as o:
                o.sendall(f"GET /px/fast/o{i}?{'q' * 300} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
                assert json.loads(read_responses(o, 1)[0][0][1]) == {"fast": f"o{i}"}
        res, _ = read_responses(s, n, timeout=60)
    assert calls == [probe, probe]
    assert res[0][0] == 200 and json.loads(res[0][1]) == {"probe": probe}
    assert all(json.loads(body) == {"fast": str(i)} for i, (_, body) in enumerate(res) if i > 0)


def test_nothing_answered_after_connection_close(gw):
    # a request with Connection: close ends the connection after its response, even when more
    # requests were pipelined behind it (read while it was handled)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(get("/px/slow/1", close=True) + get("/px/fast/2"))
        res, rest = read_responses(s, 1)
        s.settimeout(10)
        while True:  # then the server closes; nothing else is sent
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    assert json.loads(res[0][1]) == {"slow": "1"}
    assert rest == b""


def test_http10_request_then_close(gw):
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"GET /px/slow/10 HTTP/1.0\r\nHost: gw\r\n\r\n")
        res, _ = read_responses(s, 1)
        s.settimeout(10)
        assert s.recv(1) == b""
    assert json.loads(res[0][1]) == {"slow": "10"}

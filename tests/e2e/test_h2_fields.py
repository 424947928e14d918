"""HTTP/2 requests held to the field rules of RFC 9113 §8.2-§8.3 (SPEC "Request framing":
"HTTP/2 requests are held to the same field rules"), client_body_timeout over HTTP/2, and
libh2o's own errors as JSON (docs/http2.md).

Each malformed request is sent as raw frames (hyperframe/hpack) on a guarded h2c connection;
the test asserts the stream's outcome (RST_STREAM PROTOCOL_ERROR, or a JSON 400 `bad_request`)
and that the backend (a RawBackend, which records every byte) saw nothing.
"""
import json
import time

import hpack
import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame

from harness import free_port, upstream, wait_for_port, wait_until
from test_h2_attacks import PREFACE, RawH2, closed_metric, raw_frame

PROTOCOL_ERROR, CANCEL = 0x1, 0x8
END_STREAM, END_HEADERS = 0x1, 0x4


class Client(RawH2):
    """RawH2 that also decodes the server's response heads and bodies per stream."""

    def __init__(self, port: int):
        self.dec = hpack.Decoder()
        self.heads = {}   # stream id -> [(name, value)]
        self.bodies = {}  # stream id -> bytes
        super().__init__(port)

    def _on_frame(self, frame) -> None:
        if isinstance(frame, HeadersFrame):
            self.heads.setdefault(frame.stream_id, []).extend(
                (n.decode() if isinstance(n, bytes) else n, v.decode() if isinstance(v, bytes) else v)
                for n, v in self.dec.decode(frame.data))
        elif isinstance(frame, DataFrame):
            self.bodies[frame.stream_id] = self.bodies.get(frame.stream_id, b"") + bytes(frame.data)

    def outcome(self, sid: int, timeout: float = 3.0):
        """('rst', code), ('status', status, body), ('goaway', code) or None (nothing in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.05)
            if sid in self.rst:
                return ("rst", self.rst[sid])
            if sid in self.ended:
                return ("status", dict(self.heads.get(sid, [])).get(":status"), self.bodies.get(sid, b""))
            if self.goaway is not None:
                return ("goaway", self.goaway[0])
            if self.eof:
                return None
        return None


@pytest.fixture
def gw(estuary, raw_backend):
    rb = raw_backend()
    admin_port = free_port()
    g = estuary({
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "client_body_timeout": "1s",
        "max_request_body": "64KiB",
        "upstreams": {"u": upstream(rb.url)},
        "routes": [{"path": "/x", "methods": ["GET", "POST", "OPTIONS"], "proxy": {"upstream": "u", "path": "/x"}},
                   {"path": "/", "methods": ["OPTIONS"], "proxy": {"upstream": "u", "path": "/"}}],
    })
    wait_for_port("127.0.0.1", admin_port, 10, g.proc)
    g.admin = f"http://127.0.0.1:{admin_port}"
    g.rb = rb
    return g


def base(path="/x", method="GET"):
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1")]


# (id, header list, extra DATA or None, expected outcome); every request is malformed per RFC
# 9113 §8.2-§8.3. "400": our JSON bad_request (libh2o's own 400 rewritten, or src/h2/fields.c);
# "rst": libh2o's RST_STREAM PROTOCOL_ERROR; "goaway": libh2o's GOAWAY PROTOCOL_ERROR (a stream
# error treated as a connection error, which RFC 9113 §5.4 allows).
MALFORMED = [
    ("upper_case_name", base() + [("X-Upper", "1")], None, "400"),
    ("space_in_name", base() + [("x bad", "1")], None, "400"),
    ("colon_in_name", base() + [("x:bad", "1")], None, "400"),
    ("nul_in_value", base() + [("x-v", "a\x00b")], None, "400"),
    ("cr_in_value", base() + [("x-v", "a\rb")], None, "400"),
    ("lf_in_value", base() + [("x-v", "a\nb")], None, "400"),
    ("leading_space_value", base() + [("x-v", " a")], None, "400"),
    ("trailing_tab_value", base() + [("x-v", "a\t")], None, "400"),
    ("connection", base() + [("connection", "close")], None, "goaway"),
    ("keep_alive", base() + [("keep-alive", "5")], None, "400"),
    ("proxy_connection", base() + [("proxy-connection", "x")], None, "400"),
    ("transfer_encoding", base() + [("transfer-encoding", "chunked")], None, "goaway"),
    ("upgrade", base() + [("upgrade", "websocket")], None, "goaway"),
    ("te_gzip", base() + [("te", "gzip")], None, "goaway"),
    ("pseudo_after_regular", base()[:3] + [("x-a", "1"), (":authority", "127.0.0.1")], None, "goaway"),
    ("unknown_pseudo", base() + [(":foo", "1")], None, "goaway"),
    ("status_pseudo", base() + [(":status", "200")], None, "goaway"),
    ("duplicate_method", base() + [(":method", "GET")], None, "goaway"),
    ("duplicate_path", base() + [(":path", "/x")], None, "goaway"),
    ("duplicate_scheme", base() + [(":scheme", "http")], None, "goaway"),
    ("missing_method", base()[1:], None, "rst"),
    ("missing_path", [base()[0], base()[1], base()[3]], None, "rst"),
    ("missing_scheme", [base()[0], base()[2], base()[3]], None, "rst"),
    ("empty_path", base(path=""), None, "400"),
    ("relative_path", base(path="x"), None, "400"),
    ("asterisk_get", base(path="*"), None, "400"),
    ("ctl_in_path", base(path="/x\x01"), None, "400"),
    ("space_in_path", base(path="/x y"), None, "400"),
    ("empty_method", base(method=""), None, "400"),
    ("space_in_method", base(method="G T"), None, "400"),
    ("content_length_short", base(method="POST") + [("content-length", "10")], b"12345", "rst"),
    ("content_length_long", base(method="POST") + [("content-length", "2")], b"12345", "rst"),
    ("content_length_two", base(method="POST") + [("content-length", "5"), ("content-length", "6")], b"12345", "rst"),
    ("content_length_nondigit", base(method="POST") + [("content-length", "+5")], b"12345", "goaway"),
    # refused by the frame guard (libh2o compares the length only when a body follows)
    ("content_length_no_data", base() + [("content-length", "3")], None, "goaway"),
]


def send_request(c: Client, sid: int, hdrs, data):
    block = c.enc.encode(hdrs)
    if data is None:
        c.send(raw_frame(0x1, END_STREAM | END_HEADERS, sid, block))
    else:
        c.send(raw_frame(0x1, END_HEADERS, sid, block) + raw_frame(0x0, END_STREAM, sid, data))


@pytest.mark.parametrize("name,hdrs,data,expect", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request(gw, name, hdrs, data, expect):
    c = Client(gw.port)
    send_request(c, 1, hdrs, data)
    out = c.outcome(1)
    assert out is not None, f"{name}: no answer"
    if expect == "400":
        assert out[:2] == ("status", "400"), out[:2]
        err = json.loads(out[2])["error"]
        assert err["status"] == 400 and err["code"] == "bad_request" and err["request_id"], err
        heads = dict(c.heads[1])
        assert heads["content-type"] == "application/json" and heads["x-request-id"] == err["request_id"], heads
        assert int(heads["content-length"]) == len(out[2])
    elif expect == "rst":
        assert out == ("rst", PROTOCOL_ERROR), out
    else:
        assert out == ("goaway", PROTOCOL_ERROR), out
    if expect != "goaway":
        # a malformed request is a stream error (RFC 9113 §8.1.1): the connection goes on
        send_request(c, 3, base(), None)
        out = c.outcome(3)
        assert out is not None and out[:2] == ("status", "200"), f"after {name}: {out}"
        assert wait_until(lambda: gw.rb.received.count(b"\r\n\r\n") == 1, 3)
    received = gw.rb.received
    # the backend saw the good request only, never the malformed one
    assert received.count(b"\r\n\r\n") == (0 if expect == "goaway" else 1), received[:400]
    assert b"POST" not in received and b"x-v" not in received.lower(), received[:400]
    c.close()


def test_valid_edge_cases_pass(gw):
    """What the rules must not refuse: TE: trailers, OPTIONS *, a matching content-length,
    inner whitespace in a value, a value with obs-text."""
    c = Client(gw.port)
    send_request(c, 1, base() + [("te", "trailers"), ("x-v", "a b\tc"), ("x-o", "caf\xe9")], None)
    send_request(c, 3, base(method="POST") + [("content-length", "5")], b"12345")
    send_request(c, 5, base(path="*", method="OPTIONS"), None)
    send_request(c, 7, base() + [("content-length", "0")], None)
    for sid in (1, 3, 7):
        out = c.outcome(sid)
        assert out is not None and out[0] == "status" and out[1] == "200", f"stream {sid}: {out}"
    out = c.outcome(5)
    assert out is not None and out[0] == "status", f"OPTIONS *: {out}"
    c.close()


def test_body_timeout_resets_stream(gw):
    """A request body that stalls for client_body_timeout (1 s) gets RST_STREAM and is counted;
    the backend sees nothing, the connection stays usable."""
    before = closed_metric(gw.admin, "body_timeout")
    c = Client(gw.port)
    block = c.enc.encode(base(method="POST") + [("content-length", "10")])
    c.send(raw_frame(0x1, END_HEADERS, 1, block) + raw_frame(0x0, 0, 1, b"12345"))
    t0 = time.monotonic()
    out = c.outcome(1, timeout=4)
    took = time.monotonic() - t0
    assert out == ("rst", CANCEL), out
    assert 0.9 <= took <= 3.0, took
    assert wait_until(lambda: closed_metric(gw.admin, "body_timeout") == before + 1, 3)
    send_request(c, 3, base(), None)
    out = c.outcome(3)
    assert out is not None and out[:2] == ("status", "200"), out
    assert gw.rb.received.count(b"POST") == 0
    c.close()


def test_body_timeout_not_hit_by_a_slow_steady_body(gw):
    c = Client(gw.port)
    block = c.enc.encode(base(method="POST") + [("content-length", "6")])
    c.send(raw_frame(0x1, END_HEADERS, 1, block))
    for i in range(5):
        time.sleep(0.4)
        c.send(raw_frame(0x0, END_STREAM if i == 5 else 0, 1, b"1"))
    c.send(raw_frame(0x0, END_STREAM, 1, b"1"))
    out = c.outcome(1)
    assert out is not None and out[:2] == ("status", "200"), out
    c.close()


def test_goaway_over_tls(estuary, raw_backend, tls):
    """A refusal on a TLS HTTP/2 connection sends its GOAWAY through the TLS record layer
    (written in libh2o's write gap), then closes."""
    import socket
    import ssl
    rb = raw_backend()
    g = estuary({"upstreams": {"u": upstream(rb.url)},
                 "routes": [{"path": "/x", "proxy": {"upstream": "u", "path": "/x"}}]}, tls=True)
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", g.tls_port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    assert s.selected_alpn_protocol() == "h2"
    enc = hpack.Encoder()
    block = b"\x3f\xe2\x1f" + enc.encode(base())  # a table size update to 4097: COMPRESSION_ERROR
    s.sendall(PREFACE + raw_frame(0x4, 0, 0, b"") + raw_frame(0x1, END_STREAM | END_HEADERS, 1, block))
    buf, goaway, deadline = b"", None, time.monotonic() + 5
    while goaway is None and time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not data:
            break
        buf += data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9:9 + length]))
            buf = buf[9 + length:]
            if isinstance(frame, GoAwayFrame):
                goaway = (frame.error_code, bytes(frame.additional_data))
    assert goaway is not None and goaway[0] == 0x9, goaway
    s.close()
    assert rb.received == b""


def test_stream_refused_by_libh2o_leaves_the_body_budget(estuary, raw_backend):
    """libh2o refuses a stream whose body passes max_request_entity_size (the top-level
    max_request_body); the guard's connection budget is the largest route's. A client that
    keeps sending on the refused stream must not use up the budget of its other streams."""
    rb = raw_backend()
    g = estuary({"max_request_body": "1KiB",
                 "upstreams": {"u": upstream(rb.url)},
                 "routes": [{"path": "/x", "methods": ["POST"], "proxy": {"upstream": "u", "path": "/x"}},
                            {"path": "/big", "methods": ["POST"], "max_request_body": "64KiB",
                             "proxy": {"upstream": "u", "path": "/big"}}]})
    c = Client(g.port)
    c.send(raw_frame(0x1, END_HEADERS, 1, c.enc.encode(base(path="/x", method="POST"))))
    for _ in range(4):
        c.send(raw_frame(0x0, 0, 1, b"a" * 16250))  # 65,000 bytes in all, refused after the first
    c.send(raw_frame(0x1, END_HEADERS, 3, c.enc.encode(base(path="/x", method="POST"))))
    c.send(raw_frame(0x0, END_STREAM, 3, b"b" * 1000))  # 66,000 with the refused stream's: over 64 KiB
    out = c.outcome(3)
    assert out is not None and out[:2] == ("status", "200"), (out, c.goaway, c.rst)
    refused = c.outcome(1)  # libh2o's refusal of the stream over the body limit
    assert refused is not None and refused[0] == "rst", (refused, c.rst)
    assert c.goaway is None, c.goaway
    c.close()


def test_libh2o_error_to_head_has_no_body(gw):
    """libh2o's own 400, rewritten into JSON, still carries no body on a HEAD request."""
    c = Client(gw.port)
    send_request(c, 1, base(method="HEAD") + [("X-Upper", "1")], None)
    out = c.outcome(1)
    assert out is not None and out[:2] == ("status", "400"), out
    assert out[2] == b"", out[2]
    heads = dict(c.heads[1])
    assert heads["content-type"] == "application/json" and int(heads["content-length"]) > 0, heads
    c.close()

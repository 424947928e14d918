"""Error bodies are always valid JSON (RFC 8259 section 8.1: UTF-8 text). A 404 for a path
holding bytes that are not UTF-8 quotes the path with U+FFFD in their place; valid UTF-8 is
kept as is. Over HTTP/2 (h2c, raw HPACK bytes) such a path reaches the router; over HTTP/1.1
the front end may refuse a non-ASCII request-target first (RFC 9112 section 3.2), and its reply,
when JSON, is valid JSON too."""
import json
import socket

import h2.config
import h2.connection
import h2.events
import pytest

from harness import REQUEST_ID_RE, json_reply, raw_http, upstream


def strict_json(body: bytes):
    return json.loads(body.decode("utf-8"))  # strict: invalid UTF-8 raises


def h2_get(port: int, path: bytes, timeout: float = 5.0):
    """One GET over h2c (prior knowledge) with `path` sent as raw bytes -> (status, headers, body)."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                    normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(cfg)
    status, headers, body, done = None, {}, b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", path)],
                          end_stream=True)
        s.sendall(conn.data_to_send())
        while not done:
            data = s.recv(65536)  # bounded by the socket timeout
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    headers = dict(ev.headers)
                    status = int(headers[b":status"])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    done = True
            s.sendall(conn.data_to_send())
    return status, headers, body


@pytest.fixture
def gw(backend, estuary):
    b = backend("b")
    b.get("/r", json_reply({"ok": True}))
    return estuary({"workers": 1, "upstreams": {"b": upstream(b)},
                    "routes": [{"path": "/r", "proxy": {"upstream": "b", "path": "/r"}}]})


CASES = [
    (b"/\xff\xfe", "/\ufffd\ufffd"),
    (b"/a\x80b", "/a\ufffdb"),
    (b"/\xc3", "/\ufffd"),
    (b"/\xc0\xaf/x", "/\ufffd\ufffd/x"),                 # overlong '/'
    (b"/\xed\xa0\x80", "/\ufffd\ufffd\ufffd"),           # UTF-16 surrogate
    (b"/\xf4\x90\x80\x80", "/\ufffd\ufffd\ufffd\ufffd"),  # above U+10FFFF
    (b"/caf\xc3\xa9/\xe2\x82\xac", "/caf\u00e9/\u20ac"),  # valid UTF-8: kept
]
IDS = ["ff-fe", "lone-continuation", "truncated", "overlong", "surrogate", "above-max", "valid"]


@pytest.mark.parametrize("path,shown", CASES, ids=IDS)
def test_h2_404_for_non_utf8_path_is_valid_json(gw, path, shown):
    status, headers, body = h2_get(gw.port, path)
    assert status == 404, (status, body[:300])
    assert headers.get(b"content-type", b"").split(b";")[0] == b"application/json"
    err = strict_json(body)["error"]
    assert err["status"] == 404 and err["code"] == "route_not_found", err
    assert REQUEST_ID_RE.match(err["request_id"]), err
    assert shown in err["message"], err["message"]


def test_h2_404_message_cut_inside_a_character_is_valid_json(gw):
    # the message quotes at most 100 bytes of the path: the cut keeps 1 byte of the 3-byte euro sign
    status, _, body = h2_get(gw.port, b"/" + b"a" * 98 + "\u20ac".encode() + b"/tail")
    assert status == 404, body[:300]
    err = strict_json(body)["error"]
    assert err["message"].endswith("/" + "a" * 98 + "\ufffd"), err["message"][-20:]


@pytest.mark.parametrize("path,shown", CASES, ids=IDS)
def test_h1_non_ascii_target_answered_with_valid_json(gw, backend, path, shown):
    r = raw_http(gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
    assert r.status in (400, 404), (r.status, r.body[:300])
    assert r.headers.get("Content-Type", "").split(";")[0] == "application/json", r.headers
    err = strict_json(r.body)["error"]
    assert err["status"] == r.status
    if r.status == 404:
        assert shown in err["message"], err["message"]


@pytest.mark.parametrize("path", [b"/a\x01b", b"/a\x1fb", b"/\x7f", b"/a\tb"], ids=["x01", "x1f", "del", "tab"])
def test_h1_control_bytes_in_target_refused(gw, path):
    """A control byte in the target never reaches a router or a backend; a JSON reply is valid."""
    r = raw_http(gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
    assert r.status == 400, (r.status, r.body[:300])
    if r.headers.get("Content-Type", "").split(";")[0] == "application/json":
        assert strict_json(r.body)["error"]["status"] == 400

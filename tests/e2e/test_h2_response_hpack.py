"""HTTP/2 response heads as estuary encodes them (src/h2/hpack_out.c, docs/http2.md "Response
heads"): fields that repeat (Server, Date, Content-Type, a backend's stable token fields) are
indexed and sent again as one byte; X-Request-Id and the other non-token fields are never put in
the dynamic table; Set-Cookie is "never indexed" (RFC 7541 §7.1.3); a head larger than a frame
goes out as HEADERS + CONTINUATION; every head decodes with an independent HPACK decoder
(python3-hpack) whose dynamic table stays in step over many responses.

These fail if libh2o's own encoder runs instead (it indexes every field, X-Request-Id included).
"""
import time

import hpack
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame

from harness import body_reply, upstream
from test_h2_attacks import RawH2
from test_h2_fields import base, send_request


class Heads(RawH2):
    """Raw h2c client that joins HEADERS + CONTINUATION and decodes each head in order."""

    def __init__(self, port: int):
        self.dec = hpack.Decoder()
        self.heads = {}    # stream id -> [HeaderTuple]
        self.blocks = {}   # stream id -> the raw header block
        self.frames = {}   # stream id -> [(frame type, payload length, END_HEADERS)]
        self._partial = {}
        super().__init__(port)

    def _on_frame(self, frame) -> None:
        if not isinstance(frame, (HeadersFrame, ContinuationFrame)):
            return
        sid = frame.stream_id
        self.frames.setdefault(sid, []).append((type(frame).__name__, len(frame.data), "END_HEADERS" in frame.flags))
        block = self._partial.pop(sid, b"") + bytes(frame.data)
        if "END_HEADERS" not in frame.flags:
            self._partial[sid] = block
            return
        self.blocks[sid] = block
        self.heads[sid] = self.dec.decode(block)

    def get(self, sid: int, path: str, timeout: float = 5.0):
        send_request(self, sid, base(path), None)
        deadline = time.monotonic() + timeout
        while sid not in self.ended and time.monotonic() < deadline and not self.eof:
            self.poll(0.05)
        assert sid in self.ended, f"stream {sid}: no complete reply"
        return {n: v for n, v in self.heads[sid]}

    def table(self):
        return [(n.decode(), v.decode()) for n, v in self.dec.header_table.dynamic_entries]


@pytest.fixture
def gw(estuary, backend):
    b = backend("origin")
    b.get("/x", body_reply("ok", headers={"Set-Cookie": "s=1; HttpOnly", "Cache-Control": "max-age=0",
                                          "X-Stable": "same"}))
    b.get("/teapot", body_reply("short and stout", status=418))
    b.get("/big", body_reply("big", headers={"X-Big": "v" * 40000}))
    g = estuary({
        "upstreams": {"o": upstream(b.url)},
        "routes": [{"path": "/x", "proxy": {"upstream": "o", "path": "/x"}},
                   {"path": "/teapot", "proxy": {"upstream": "o", "path": "/teapot"}},
                   {"path": "/big", "proxy": {"upstream": "o", "path": "/big"}}],
    })
    return g


def test_repeating_fields_indexed_unique_ones_never(gw):
    c = Heads(gw.port)
    ids = set()
    for i in range(12):
        sid = 1 + 2 * i
        h = c.get(sid, "/x")
        assert h[":status"] == "200" and h["x-stable"] == "same" and h["set-cookie"] == "s=1; HttpOnly", h
        ids.add(h["x-request-id"])
        # Set-Cookie is sent "never indexed" (RFC 7541 §6.2.3)
        cookie = [t for t in c.heads[sid] if t[0] == "set-cookie"]
        assert len(cookie) == 1 and isinstance(cookie[0], hpack.NeverIndexedHeaderTuple), c.heads[sid]
    assert len(ids) == 12
    names = {n for n, _ in c.table()}
    # the per-response and sensitive fields never entered the table ...
    assert not names & {"x-request-id", "set-cookie", "content-length", "x-stable", "via"}, c.table()
    # ... the repeating token fields did, and later heads reuse them
    assert {"server", "date", "content-type", "cache-control"} <= names, c.table()
    assert len(c.blocks[23]) < len(c.blocks[1]), (len(c.blocks[1]), len(c.blocks[23]))
    c.close()


def test_status_outside_the_static_table(gw):
    c = Heads(gw.port)
    assert c.get(1, "/teapot")[":status"] == "418"
    assert c.get(3, "/x")[":status"] == "200"
    assert c.get(5, "/teapot")[":status"] == "418"
    c.close()


def test_head_larger_than_a_frame_uses_continuation(gw):
    c = Heads(gw.port)
    h = c.get(1, "/big")
    assert h[":status"] == "200" and h["x-big"] == "v" * 40000
    frames = c.frames[1]
    assert frames[0][0] == "HeadersFrame" and len(frames) >= 2, frames
    assert all(t == "ContinuationFrame" for t, _, _ in frames[1:]), frames
    assert [e for _, _, e in frames] == [False] * (len(frames) - 1) + [True], frames
    assert all(n <= 16384 for _, n, _ in frames), frames  # SETTINGS_MAX_FRAME_SIZE default
    # the table is still in step: the next head decodes and reuses it
    assert c.get(3, "/x")["x-stable"] == "same"
    c.close()

"""WebSocket pass-through on proxy routes with "websocket": true."""
import asyncio

from aiohttp import ClientSession, WSMsgType, web

from harness import upstream


async def ws_echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


def test_websocket_relayed_both_ways(backend, estuary, aio):
    b = backend("ws")
    b.get("/ws/{rest...}", ws_echo)
    gw = estuary({"upstreams": {"ws": upstream(b)},
                  "routes": [{"path": "/live/{rest...}", "websocket": True,
                              "proxy": {"upstream": "ws", "path": "/ws/{rest...}"}}]})

    async def talk():
        async with ClientSession() as s:
            async with s.ws_connect(gw.url("/live/chat"), timeout=5) as ws:
                out = []
                for text in ("hello", "world"):
                    await ws.send_str(text)
                    out.append((await asyncio.wait_for(ws.receive(), 5)).data)
                await ws.send_bytes(b"\x01\x02\x03")
                out.append((await asyncio.wait_for(ws.receive(), 5)).data)
                await ws.close()
                return out
    assert aio.run(talk(), timeout=20) == ["echo:hello", "echo:world", b"\x03\x02\x01"]
    assert b.last.path == "/ws/chat" and b.last.headers["Upgrade"].lower() == "websocket"


# ---------------------------------------------------------------- issue 4: closes, idle, refusal

import time  # noqa: E402

from harness import assert_json_error, raw_http  # noqa: E402


class WsBackend:
    """A WebSocket backend that greets first ("hi", before the client says anything), echoes,
    closes on "bye", and records how each session ended."""

    def __init__(self):
        self.ended = []  # "client-close" / "server-close" per session

    async def __call__(self, request):
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.send_str("hi")
        how = "eof"
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "bye":
                await ws.close(code=4000, message=b"server says bye")
                how = "server-close"
                break
            if msg.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        else:
            how = "client-close" if ws.close_code is not None else "eof"
        self.ended.append(how)
        return ws


def _ws_gateway(backend, estuary, **upstream_extra):
    b = backend("ws")
    h = WsBackend()
    b.get("/ws/{rest...}", h)
    gw = estuary({"upstreams": {"ws": upstream(b, **upstream_extra)},
                  "routes": [{"path": "/live/{rest...}", "websocket": True,
                              "proxy": {"upstream": "ws", "path": "/ws/{rest...}"}},
                             {"path": "/plain/{rest...}", "proxy": {"upstream": "ws", "path": "/ws/{rest...}"}}]})
    return gw, b, h


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def test_websocket_server_greets_first_and_client_closes(backend, estuary, aio):
    gw, b, h = _ws_gateway(backend, estuary)

    async def talk():
        async with ClientSession() as s:
            async with s.ws_connect(gw.url("/live/a"), timeout=5, autoping=False) as ws:
                out = [(await asyncio.wait_for(ws.receive(), 5)).data]
                big = bytes(range(256)) * 1024  # 256 KiB binary message, both ways
                await ws.send_bytes(big)
                m = await asyncio.wait_for(ws.receive(), 5)
                out.append(m.data == big)
                await ws.send_str("é ✓")
                out.append((await asyncio.wait_for(ws.receive(), 5)).data)
                await ws.close()
                return out
    assert aio.run(talk(), timeout=20) == ["hi", True, "echo:é ✓"]
    assert _wait(lambda: h.ended == ["client-close"]), h.ended


def test_websocket_server_closes(backend, estuary, aio):
    gw, b, h = _ws_gateway(backend, estuary)

    async def talk():
        async with ClientSession() as s:
            async with s.ws_connect(gw.url("/live/b"), timeout=5, autoping=False) as ws:
                assert (await asyncio.wait_for(ws.receive(), 5)).data == "hi"
                await ws.send_str("bye")
                m = await asyncio.wait_for(ws.receive(), 5)
                return m.type, ws.close_code
    mtype, code = aio.run(talk(), timeout=20)
    assert mtype in (WSMsgType.CLOSE, WSMsgType.CLOSED) and code == 4000
    # the backend's handler records the close after the frame left it: poll, bounded
    assert _wait(lambda: h.ended == ["server-close"]), h.ended


def test_websocket_idle_timeout_is_the_upstream_response_timeout(backend, estuary, aio):
    """No traffic either way for response_timeout (here 1s) closes the tunnel; traffic keeps it."""
    gw, b, h = _ws_gateway(backend, estuary, response_timeout="1s")

    async def talk():
        async with ClientSession() as s:
            async with s.ws_connect(gw.url("/live/c"), timeout=5, autoping=False, heartbeat=None) as ws:
                assert (await asyncio.wait_for(ws.receive(), 5)).data == "hi"
                for i in range(5):  # 2.5 s of traffic every 0.5 s: stays open
                    await asyncio.sleep(0.5)
                    await ws.send_str(str(i))
                    assert (await asyncio.wait_for(ws.receive(), 5)).data == f"echo:{i}"
                t0 = time.monotonic()
                m = await asyncio.wait_for(ws.receive(), 10)  # now idle: estuary closes
                return m.type, time.monotonic() - t0
    mtype, waited = aio.run(talk(), timeout=30)
    assert mtype in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    assert 0.5 < waited < 4, waited
    assert _wait(lambda: len(h.ended) == 1)  # the backend side was closed too


def test_websocket_upgrade_refused_without_the_flag(backend, estuary):
    gw, b, h = _ws_gateway(backend, estuary)
    r = raw_http(gw.port, b"GET /plain/x HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert_json_error(r, 400, "upgrade_not_allowed")
    assert b.request_count == 0

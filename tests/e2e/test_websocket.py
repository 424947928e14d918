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

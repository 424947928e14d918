"""Shared runner for the demo backends (users.py, orders.py): one aiohttp app answering
GET /<collection>/{id} with a JSON object built from the id."""
import argparse
from typing import Callable

from aiohttp import web


def serve(name: str, collection: str, default_port: int, body: Callable[[str], dict], doc: str) -> None:
    """Parses --host/--port and serves GET /<collection>/{id} -> body(id) until interrupted."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=default_port)
    args = ap.parse_args()

    async def get(request: web.Request) -> web.Response:
        return web.json_response(body(request.match_info["id"]))

    app = web.Application()
    app.router.add_get(f"/{collection}/{{id}}", get)
    web.run_app(app, host=args.host, port=args.port, access_log=None,
                print=lambda *_: print(f"{name} backend on http://{args.host}:{args.port}", flush=True))

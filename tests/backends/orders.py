#!/usr/bin/python3
"""Demo backend "orders": GET /orders/{id} -> {"id": "<id>", "product": "item<id>"}.

    /usr/bin/python3 tests/backends/orders.py [--host 127.0.0.1] [--port 8082]
"""
import argparse

from aiohttp import web


async def get_order(request: web.Request) -> web.Response:
    oid = request.match_info["id"]
    return web.json_response({"id": oid, "product": f"item{oid}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8082)
    args = ap.parse_args()
    app = web.Application()
    app.router.add_get("/orders/{id}", get_order)
    web.run_app(app, host=args.host, port=args.port, access_log=None,
                print=lambda *_: print(f"orders backend on http://{args.host}:{args.port}", flush=True))


if __name__ == "__main__":
    main()

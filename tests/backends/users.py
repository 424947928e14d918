#!/usr/bin/python3
"""Demo backend "users": GET /users/{id} -> {"id": "<id>", "name": "user<id>"}.

    /usr/bin/python3 tests/backends/users.py [--host 127.0.0.1] [--port 8081]
"""
import argparse

from aiohttp import web


async def get_user(request: web.Request) -> web.Response:
    uid = request.match_info["id"]
    return web.json_response({"id": uid, "name": f"user{uid}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    args = ap.parse_args()
    app = web.Application()
    app.router.add_get("/users/{id}", get_user)
    web.run_app(app, host=args.host, port=args.port, access_log=None,
                print=lambda *_: print(f"users backend on http://{args.host}:{args.port}", flush=True))


if __name__ == "__main__":
    main()

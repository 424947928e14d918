#!/usr/bin/python3
"""Demo backend "users": GET /users/{id} -> {"id": "<id>", "name": "user<id>"}.

    /usr/bin/python3 tests/backends/users.py [--host 127.0.0.1] [--port 8081]
"""
from demo import serve

if __name__ == "__main__":
    serve("users", "users", 8081, lambda uid: {"id": uid, "name": f"user{uid}"}, __doc__)

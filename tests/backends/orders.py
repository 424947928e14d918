#!/usr/bin/python3
"""Demo backend "orders": GET /orders/{id} -> {"id": "<id>", "product": "item<id>"}.

    /usr/bin/python3 tests/backends/orders.py [--host 127.0.0.1] [--port 8082]
"""
from demo import serve

if __name__ == "__main__":
    serve("orders", "orders", 8082, lambda oid: {"id": oid, "product": f"item{oid}"}, __doc__)

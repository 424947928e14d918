"""Self-tests of the e2e harness (no estuary needed): the DNS server and the test backends."""
import time

import pytest

from harness import (body_reply, chunked_reply, close_delimited_reply, delayed, dns_query, free_port,
                     json_reply, raw_http, reset_reply)


def test_dns_server_answers_and_counts(dns):
    dns.set_a("svc.test", ["127.0.0.1", "127.0.0.2"], ttl=42)
    r = dns_query(dns, "svc.test", "A")
    assert sorted(str(a.rdata) for a in r.rr) == ["127.0.0.1", "127.0.0.2"]
    assert {a.ttl for a in r.rr} == {42}
    r = dns_query(dns, "svc.test", "AAAA")
    assert r.header.rcode == 0 and not r.rr          # NODATA
    r = dns_query(dns, "missing.test", "A")
    assert r.header.rcode == 3                        # NXDOMAIN
    assert dns.queries("svc.test") == 2 and dns.queries("svc.test", "A") == 1


def test_dns_server_outage(dns):
    dns.set_a("svc.test", "127.0.0.1")
    dns.set_answering(False)
    with pytest.raises(Exception):
        dns_query(dns, "svc.test", timeout=0.3)
    assert dns.queries("svc.test") == 1
    dns.set_answering(True)
    assert dns_query(dns, "svc.test").rr


def test_backend_replies(backend):
    b = backend("selftest")
    b.get("/json/{id}", json_reply(lambda p: {"id": p["id"]}))
    b.get("/chunked", chunked_reply([b'{"a":', b' 1}']))
    b.get("/close", close_delimited_reply(b'{"c": 2}'))
    b.get("/empty", body_reply(status=204))
    b.get("/slow", delayed(0.2, {"s": 1}))
    b.get("/reset", reset_reply())
    req = lambda p: raw_http(b.port, f"GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert req("/json/7").json() == {"id": "7"}
    assert req("/chunked").json() == {"a": 1}
    r = req("/close")
    assert r.json() == {"c": 2} and "Content-Length" not in r.headers
    assert req("/empty").status == 204
    t0 = time.monotonic()
    assert req("/slow").json() == {"s": 1} and time.monotonic() - t0 >= 0.2
    with pytest.raises(AssertionError):
        req("/reset")
    assert b.request_count == 6 and b.connections == 6
    assert b.requests_to("/json/7")[0].params == {"id": "7"}


def test_free_port_is_bindable():
    import socket
    p = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))

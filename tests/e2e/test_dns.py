"""Upstream name resolution: test DNS server, TTL cache, negative cache, stale answers,
hosts file."""
import pytest

from harness import assert_json_error, named_upstream, wait_until


def one_backend_config(name, b, dns_extra=None, dns_server=None, proxy=False, workers=1):
    cfg = {"workers": workers,
           "upstreams": {"svc": named_upstream(name, b)},
           "routes": [{"path": "/agg", "backends": [{"upstream": "svc", "path": "/who", "group": "svc"}]},
                      {"path": "/proxy", "proxy": {"upstream": "svc", "path": "/who"}}]}
    if dns_extra is not None:
        cfg["dns"] = dict({"servers": [dns_server.address], "timeout": "2s", "attempts": 1}, **dns_extra)
    return cfg


@pytest.fixture
def who(backend):
    """A backend on 127.0.0.1 answering GET /who with {"ip": "127.0.0.1"}."""
    b = backend("who1", host="127.0.0.1")
    b.get("/who", {"ip": "127.0.0.1"})
    return b


def test_nxdomain_is_502(dns, who, estuary, http):
    gw = estuary(one_backend_config("missing.test", who))
    assert_json_error(http.get(gw.url("/agg")), 502, "upstream_unavailable")
    assert_json_error(http.get(gw.url("/proxy")), 502, "upstream_unavailable")
    assert dns.queries("missing.test") >= 1
    assert who.request_count == 0


def test_servfail_is_502(dns, who, estuary, http):
    dns.set_rcode("broken.test", "SERVFAIL")
    gw = estuary(one_backend_config("broken.test", who))
    assert_json_error(http.get(gw.url("/agg")), 502, "upstream_unavailable")


def test_answer_cached_for_its_ttl(dns, who, estuary, http):
    dns.set_a("svc.test", "127.0.0.1", ttl=120)
    gw = estuary(one_backend_config("svc.test", who))  # workers 1
    for _ in range(10):
        r = http.get(gw.url("/agg"))
        assert r.status == 200 and r.json() == {"svc": {"ip": "127.0.0.1"}}
    assert http.get(gw.url("/proxy")).status == 200
    assert dns.queries("svc.test", "A") == 1, dns.query_log
    assert who.request_count == 11


def test_answer_cached_per_worker(dns, who, estuary, http):
    dns.set_a("svc.test", "127.0.0.1", ttl=120)
    gw = estuary(one_backend_config("svc.test", who, workers=2))
    for _ in range(12):
        assert http.get(gw.url("/agg")).status == 200
    assert dns.queries("svc.test", "A") in (1, 2), dns.query_log


def test_concurrent_lookups_share_one_query(dns, who, estuary, http):
    dns.set_a("slow.test", "127.0.0.1", ttl=120)
    dns.set_delay("slow.test", 0.3)
    gw = estuary(one_backend_config("slow.test", who, dns_extra={"timeout": "2s"}, dns_server=dns))
    rs = http.concurrent([("GET", gw.url("/agg"), None, None) for _ in range(8)])
    assert all(r.status == 200 for r in rs), [r.status for r in rs]
    assert dns.queries("slow.test", "A") == 1, dns.query_log


def test_new_answer_used_after_ttl_and_old_address_dropped(dns, backend, estuary, http):
    b1 = backend("who1", host="127.0.0.1")
    b1.get("/who", {"ip": "127.0.0.1"})
    b2 = backend("who2", host="127.0.0.2", port=b1.port)
    b2.get("/who", {"ip": "127.0.0.2"})
    dns.set_a("moving.test", "127.0.0.1", ttl=1)
    gw = estuary(one_backend_config("moving.test", b1, dns_extra={"min_ttl": "1s"}, dns_server=dns))
    assert http.get(gw.url("/agg")).json() == {"svc": {"ip": "127.0.0.1"}}
    dns.set_a("moving.test", "127.0.0.2", ttl=1)

    def moved():
        r = http.get(gw.url("/agg"))
        assert r.status == 200, r.body
        return r.json() == {"svc": {"ip": "127.0.0.2"}}
    wait_until(moved, timeout=8, interval=0.1, what="estuary to follow the new DNS answer")
    for _ in range(3):  # pooled connections to the old address are not reused
        assert http.get(gw.url("/agg")).json() == {"svc": {"ip": "127.0.0.2"}}
    assert dns.queries("moving.test", "A") >= 2


def test_stale_answer_served_during_dns_outage(dns, who, estuary, http):
    dns.set_a("flaky.test", "127.0.0.1", ttl=1)
    gw = estuary(one_backend_config("flaky.test", who, dns_server=dns,
                                    dns_extra={"min_ttl": "1s", "stale_ttl": "60s", "timeout": "500ms"}))
    assert http.get(gw.url("/agg")).status == 200
    before = dns.queries("flaky.test", "A")
    dns.set_answering(False)

    def refresh_attempted():
        r = http.get(gw.url("/agg"))
        assert r.status == 200 and r.json() == {"svc": {"ip": "127.0.0.1"}}, (r.status, r.body)
        return dns.queries("flaky.test", "A") > before
    wait_until(refresh_attempted, timeout=8, interval=0.1, what="a DNS refresh after the TTL")
    for _ in range(3):
        assert http.get(gw.url("/agg")).status == 200


def test_failure_cached_for_negative_ttl(dns, who, estuary, http):
    gw = estuary(one_backend_config("late.test", who, dns_server=dns, dns_extra={"negative_ttl": "60s"}))
    assert_json_error(http.get(gw.url("/agg")), 502, "upstream_unavailable")
    dns.set_a("late.test", "127.0.0.1", ttl=60)
    for _ in range(3):
        assert_json_error(http.get(gw.url("/agg")), 502, "upstream_unavailable")
    assert dns.queries("late.test", "A") == 1, dns.query_log


def test_hosts_file_before_dns(dns, who, estuary, http):
    dns.set_a("both.test", "127.0.0.9", ttl=60)  # DNS would send it elsewhere
    gw = estuary(one_backend_config("both.test", who), hosts={"both.test": "127.0.0.1"})
    assert http.get(gw.url("/agg")).json() == {"svc": {"ip": "127.0.0.1"}}
    assert dns.queries("both.test") == 0


def test_ttl_zero_cached_for_min_ttl(dns, who, estuary, http):
    """An answer with TTL 0 is kept for min_ttl (default 1 s): within that second the name is
    not asked again, not even by an early refresh; after it, it is."""
    import time
    dns.set_a("zero.test", "127.0.0.1", ttl=0)
    gw = estuary(one_backend_config("zero.test", who, dns_server=dns, dns_extra={}))  # min_ttl default
    start = time.monotonic()  # the answer comes after this
    assert http.get(gw.url("/agg")).status == 200
    assert dns.queries("zero.test", "A") == 1, dns.query_log
    n = 0
    while time.monotonic() < start + 0.8:
        assert http.get(gw.url("/agg")).status == 200
        n += 1
        time.sleep(0.05)
    assert n >= 3
    assert dns.queries("zero.test", "A") == 1, dns.query_log

    def asked_again():
        assert http.get(gw.url("/agg")).status == 200
        return dns.queries("zero.test", "A") >= 2
    wait_until(asked_again, timeout=5, interval=0.1, what="a new DNS query once min_ttl is over")

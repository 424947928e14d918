"""Process lifecycle: graceful stop finishes in-flight requests and exits 0."""
import signal
import threading

from harness import delayed, upstream


def test_sigterm_finishes_in_flight_request(backend, estuary, http):
    b = backend("slow")
    b.get("/slow", delayed(0.8, {"done": True}))
    gw = estuary({"upstreams": {"s": upstream(b)},
                  "routes": [{"path": "/s", "backends": [{"upstream": "s", "path": "/slow", "group": "s"}]}]})
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", http.get(gw.url("/s"))))
    t.start()
    from harness import wait_until
    wait_until(lambda: b.request_count == 1, timeout=5, what="the request to reach the backend")
    rc = gw.stop(signal.SIGTERM)
    t.join(10)
    assert rc == 0
    assert result["r"].status == 200 and result["r"].json() == {"s": {"done": True}}


def test_sigint_exits_zero(estuary):
    gw = estuary({"upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
                  "routes": [{"path": "/", "proxy": {"upstream": "u", "path": "/"}}]})
    assert gw.stop(signal.SIGINT) == 0

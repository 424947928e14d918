"""Access log: one JSON line per request with SPEC's fields; SIGUSR1 reopens the file."""
import json
import os
import signal

from harness import free_port, json_reply, upstream, wait_until

FIELDS = {"time", "request_id", "remote", "method", "path", "route", "status", "bytes_sent",
          "duration_ms", "upstreams", "retries"}
UPSTREAM_FIELDS = {"upstream", "address", "status", "connect_ms", "duration_ms", "attempt"}


def read_lines(path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    assert text == "" or text.endswith("\n"), "a partial line was written"
    return [json.loads(line) for line in text.splitlines()]


def lines_when(path, n):
    return wait_until(lambda: (lambda ls: ls if len(ls) >= n else None)(read_lines(path)),
                      timeout=5, what=f"{n} access log line(s) in {path}")


def start_gateway(backend, estuary, extra=None):
    b = backend("log")
    b.get("/a", json_reply({"a": 1}))
    b.get("/b", json_reply({"b": 2}))
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = {"workers": 2, "access_log": "access.log",
           "upstreams": {"u": upstream(b),
                         "dead": upstream(dead, retry={"attempts": 2, "backoff": "1ms", "on": ["connect_failure"]})},
           "routes": [{"path": "/agg/{id}", "backends": [{"upstream": "u", "path": "/a", "group": "a"},
                                                         {"upstream": "u", "path": "/b", "group": "b"}]},
                      {"path": "/p", "proxy": {"upstream": "u", "path": "/b"}},
                      {"path": "/dead", "proxy": {"upstream": "dead", "path": "/"}}]}
    cfg.update(extra or {})
    gw = estuary(cfg)
    return gw, gw.workdir / "access.log"


def test_lines_have_the_fields(backend, estuary, http):
    gw, path = start_gateway(backend, estuary)
    r1 = http.get(gw.url("/agg/7?q=1"), headers={"X-Request-Id": "req-one"})
    r2 = http.get(gw.url("/p"))
    r3 = http.get(gw.url("/dead"))
    r4 = http.get(gw.url("/nope\"\\x"))
    assert (r1.status, r2.status, r3.status, r4.status) == (200, 200, 502, 404)
    lines = lines_when(path, 4)
    assert len(lines) == 4, "one line per request"
    for ln in lines:
        assert set(ln) == FIELDS, ln
        assert ln["time"].endswith("Z") and "T" in ln["time"]
        assert ln["remote"].startswith("127.0.0.1:")
        assert ln["method"] == "GET"
        assert ln["duration_ms"] >= 0
        for u in ln["upstreams"]:
            assert UPSTREAM_FIELDS <= set(u), u
    by_id = {ln["request_id"]: ln for ln in lines}

    agg = by_id["req-one"]
    assert agg["path"] == "/agg/7?q=1" and agg["route"] == "/agg/{id}" and agg["status"] == 200
    assert agg["bytes_sent"] > 0 and agg["retries"] == 0
    assert len(agg["upstreams"]) == 2
    for u in agg["upstreams"]:
        assert u["upstream"] == "u" and u["status"] == 200 and u["attempt"] == 1
        assert u["address"].startswith("127.0.0.1:")

    prx = by_id[r2.headers["x-request-id"]]
    assert prx["route"] == "/p" and prx["status"] == 200 and len(prx["upstreams"]) == 1
    assert prx["bytes_sent"] == len(r2.body)

    dead = by_id[r3.headers["x-request-id"]]
    assert dead["status"] == 502 and dead["retries"] == 1
    assert dead["upstreams"][0]["status"] == 0 and dead["upstreams"][0]["attempt"] == 2
    assert dead["upstreams"][0]["error"] == "connect_failure"

    nf = by_id[r4.headers["x-request-id"]]
    assert nf["route"] is None and nf["status"] == 404 and nf["upstreams"] == []
    assert nf["path"] == "/nope%22%5Cx"  # as the client sent it (aiohttp encodes); escaping: unit tests


def test_sigusr1_reopens_the_file(backend, estuary, http):
    gw, path = start_gateway(backend, estuary)
    assert http.get(gw.url("/p")).status == 200
    old = lines_when(path, 1)
    rotated = path.with_name("access.log.1")
    os.rename(path, rotated)
    gw.proc.send_signal(signal.SIGUSR1)
    wait_until(path.exists, timeout=5, what="the access log to be reopened")
    rids = [http.get(gw.url("/p")).headers["x-request-id"] for _ in range(3)]
    new = lines_when(path, 3)
    assert [ln["request_id"] for ln in new] == rids or sorted(ln["request_id"] for ln in new) == sorted(rids)
    assert read_lines(rotated) == old


def test_stderr_by_default_and_off(backend, estuary, http):
    gw, _ = start_gateway(backend, estuary, {"access_log": "stderr"})
    rid = http.get(gw.url("/p")).headers["x-request-id"]

    def found():
        for line in gw.stderr().splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                if doc["request_id"] == rid:
                    return doc
        return None
    assert wait_until(found, timeout=5, what="the access log line on stderr")["status"] == 200

    gw2, path = start_gateway(backend, estuary, {"access_log": "off"})
    assert http.get(gw2.url("/p")).status == 200
    gw2.stop()
    assert not path.exists()
    assert not any(line.startswith("{") for line in gw2.stderr().splitlines())

"""Aggregation without loss (SPEC "Aggregating routes" -> "Fidelity") and its memory bounds
(SPEC "Client limits": max_backend_reply, aggregate_memory).

Backends answer raw bytes (no Python JSON round trip), and the client's body is compared
byte for byte: the merge copies the backends' spans, compacted."""

import pytest

from harness import body_reply, chunked_reply, server_timing, wait_until
from test_stream import proc_status, sanitized
from test_upstream_hardening import read_access_log


def raw_json(data):
    return body_reply(data, content_type="application/json")


# every value SPEC names, and a few more; each must come out exactly as written
FIDELITY_VALUES = [
    b"12345678901234567890",
    b"1e400",
    b"-0",
    b"1.10",
    b"0.1",
    b"19.99",
    b"3.141592653589793238462643383279",
    b"-1E-400",
    b"[18446744073709551616,-9223372036854775809,0.30000000000000004]",
    b'"\\u0000"',
    b'"a\\u0000b"',
    '"été €😀"'.encode(),
    b'"\\ud83d\\ude00 \\u00e9 \\/ \\" \\\\"',
    b'{"\xc3\xa9":1.0,"k":[1.0,2.50]}',
]


def test_every_fidelity_value_byte_for_byte(aggregate):
    specs = [(raw_json(b'{"x": ' + v + b'}'), {"group": f"v{i}"}) for i, v in enumerate(FIDELITY_VALUES)]
    r, _, _ = aggregate(specs)
    assert r.status == 200, r.body
    want = b"{" + b",".join(b'"v%d":{"x":%s}' % (i, v) for i, v in enumerate(FIDELITY_VALUES)) + b"}"
    assert r.body == want
    assert r.headers["X-Estuary-Completed"] == "true"


def test_fidelity_through_transforms_and_merge(aggregate):
    """target, allow, deny, mapping and the no-group merge keep the bytes too."""
    r, _, _ = aggregate([
        (raw_json(b'{"data": {"price": 19.99, "id": 12345678901234567890, "drop": 1e400}}'),
         {"target": "data", "allow": ["price", "id"], "mapping": {"id": "big"}}),
        (raw_json(b'[1.10, {"n": -0, "secret": 0.1}]'), {"deny": ["secret"]}),
        (raw_json(b'[3.141592653589793238462643383279]'), {}),
    ])
    assert r.status == 200, r.body
    assert r.body == (b'{"price":19.99,"big":12345678901234567890,'
                      b'"collection":[1.10,{"n":-0},3.141592653589793238462643383279]}')


def test_duplicate_keys_keep_the_last(aggregate):
    r, _, _ = aggregate([(raw_json(b'{"a": 1, "b": {"k": 1, "k": 2}, "a": 3}'), {"group": "g"})])
    assert r.status == 200, r.body
    assert r.body == b'{"g":{"a":3,"b":{"k":2}}}'


def test_nesting_600_levels(aggregate):
    deep = b'{"a":[' * 600 + b"]}" * 600
    r, _, _ = aggregate([(raw_json(deep), {"group": "g"})])
    assert r.status == 200, r.body[:200]
    assert r.body == b'{"g":' + deep + b"}"


INVALID = [
    ("trailing_garbage", b'{"a": 1} x'),
    ("lone_surrogate", b'{"a": "\\ud800"}'),
    ("bad_utf8", b'{"a": "\xc3\x28"}'),
    ("leading_zero", b'{"a": 01}'),
    ("nan", b'{"a": NaN}'),
]


def test_invalid_json_fails_that_backend(aggregate):
    specs = [(raw_json(body), {"group": name}) for name, body in INVALID]
    specs.append((raw_json(b'{"ok": 1.10}'), {"group": "good"}))
    r, _, gw = aggregate(specs, config={"access_log": "access.log"})
    assert r.status == 200, r.body
    assert r.body == b'{"good":{"ok":1.10}}'  # nothing of a failed backend, never a part
    assert r.headers["X-Estuary-Completed"] == "false"
    st = server_timing(r)
    for name, _ in INVALID:
        assert st[name]["desc"] == "invalid_json", st
    assert st["good"]["desc"] == "200"
    (line,) = read_access_log(gw.workdir / "access.log", 1)
    errors = sorted(u.get("error", "") for u in line["upstreams"])
    assert errors == [""] + ["invalid_json"] * len(INVALID), line


def test_invalid_json_everywhere_is_502(aggregate):
    r, _, _ = aggregate([(raw_json(b"[1,]"), {"group": "a"}), (raw_json(b"{"), {"group": "b"})])
    assert r.status == 502, r.body
    assert r.headers["X-Estuary-Completed"] == "false"


def test_max_backend_reply(aggregate):
    """A reply over max_backend_reply fails with reply_too_large, with or without Content-Length."""
    big = b"[" + b",".join(b"1" for _ in range(3000)) + b"]"  # ~6 KB
    r, _, gw = aggregate([(raw_json(big), {"group": "sized"}),
                          (chunked_reply([big[:3000], big[3000:]]), {"group": "chunked"}),
                          (raw_json(b"[" + b"2," * 1000 + b"2]"), {"group": "fits"})],
                         config={"max_backend_reply": "4KiB", "access_log": "access.log"})
    assert r.status == 200, r.body
    assert r.body == b'{"fits":[' + b"2," * 1000 + b"2]}"
    st = server_timing(r)
    assert st["sized"]["desc"] == "reply_too_large", st
    assert st["chunked"]["desc"] == "reply_too_large", st
    assert r.headers["X-Estuary-Completed"] == "false"
    (line,) = read_access_log(gw.workdir / "access.log", 1)
    assert sorted(u.get("error", "") for u in line["upstreams"]) == ["", "reply_too_large", "reply_too_large"], line


def test_aggregate_memory(aggregate, http):
    """Two 700 KB replies held at once pass a 1 MiB process bound: one fails; the bytes are given
    back when the fan-out ends, so one such reply alone then passes."""
    big = b"[" + b",".join(b"%d" % (i % 10) for i in range(350_000)) + b"]"  # 700 KB
    r, _, gw = aggregate([(raw_json(big), {"group": "a"}), (raw_json(big), {"group": "b"})],
                         config={"aggregate_memory": "1MiB", "workers": 1})
    assert r.status == 200, r.body[:200]
    st = server_timing(r)
    assert sorted([st["a"]["desc"], st["b"]["desc"]]) == ["200", "reply_too_large"], st
    assert r.headers["X-Estuary-Completed"] == "false"
    ok = "a" if st["a"]["desc"] == "200" else "b"
    assert r.body == b'{"%s":%s}' % (ok.encode(), big)
    # released at the end: again, the first to arrive fits (never both)
    for _ in range(3):
        r2 = http.get(gw.url("/agg"))
        st2 = server_timing(r2)
        assert sorted([st2["a"]["desc"], st2["b"]["desc"]]) == ["200", "reply_too_large"], st2


def test_60mb_reply_memory(aggregate, http):
    """A 60 MB reply of small integers: peak RSS under 3x its size, back near the baseline after."""
    # 60 MB of 7-digit integers, built from one block repeated (building 8M numbers one by one
    # takes seconds of the test's budget)
    block = ",".join(map(str, range(1_000_000, 1_800_000))).encode()
    body = b"[" + b",".join([block] * 10) + b"]"
    assert 60_000_000 < len(body) < 66_000_000
    r, _, gw = aggregate([(raw_json(b'{"small": true}'), {"group": "s"}), (raw_json(body), {"group": "big"})],
                         config={"workers": 1}, route={"timeout": "20s"})
    assert r.status == 200, r.body[:200]
    assert len(r.body) == len(body) + len(b'{"s":{"small":true},"big":}')
    assert r.body.startswith(b'{"s":{"small":true},"big":[1000000,1000001,') and r.body.endswith(b",1799999]}")
    del r
    pid = gw.proc.pid
    mem = proc_status(pid)
    print(f"60 MB reply: estuary VmHWM {mem['VmHWM'] / 1024:.1f} MiB, VmRSS {mem['VmRSS'] / 1024:.1f} MiB")
    if sanitized():
        pytest.skip(f"ASan build: RSS is not meaningful (VmHWM {mem['VmHWM']} kB); body verified")
    assert mem["VmHWM"] * 1024 < 3 * len(body), mem
    # the memory goes back once the response is done (the client has read it all)
    wait_until(lambda: proc_status(pid)["VmRSS"] < 40 * 1024, timeout=5, what="RSS back under 40 MiB")


def test_aggregate_memory_given_back_on_timeout(aggregate, http):
    """A reply cut by the route timeout gives its bytes back: with a 4 MiB process bound, four
    fan-outs each cut while holding 1.5-3 MB of a reply all end as a timeout, none as
    reply_too_large (a leak would pass the bound by the third)."""
    part = b"[" + b"1," * 750_000  # 1.5 MB, the rest never comes in time
    r, _, gw = aggregate([(chunked_reply([part, b"1]"], pause=5.0), {"group": "slow"}),
                          (raw_json(b'{"ok": true}'), {"group": "fast"})],
                         route={"timeout": "700ms"}, config={"aggregate_memory": "4MiB", "workers": 1})
    for i in range(4):
        if i:
            r = http.get(gw.url("/agg"))
        assert r.status == 200, r.body[:200]
        assert r.body == b'{"fast":{"ok":true}}'
        st = server_timing(r)
        assert st["slow"]["desc"] == "timeout", (i, st)


def test_aggregate_memory_counts_transform_nodes(aggregate):
    """allow on a large array of objects builds nodes per element: those bytes count toward
    aggregate_memory too. A 300 KB reply of 20,000 small objects: its index is ~2 MB (16 bytes
    per entry), the nodes of its `allow` ~10 MB; with a 6 MiB bound the reply copied as it is
    fits, the filtered one fails (its nodes given back at once, so the other is not hurt)."""
    big = b"[" + b",".join(b'{"id":%d,"x":0}' % i for i in range(20_000)) + b"]"  # ~300 KB
    r, _, _ = aggregate([(raw_json(big), {"group": "filtered", "allow": ["id"]}),
                         (raw_json(big), {"group": "whole"})],
                        config={"aggregate_memory": "6MiB", "workers": 1})
    assert r.status == 200, r.body[:200]
    st = server_timing(r)
    assert st["filtered"]["desc"] == "reply_too_large", st
    assert st["whole"]["desc"] == "200", st
    assert r.body == b'{"whole":' + big + b"}"

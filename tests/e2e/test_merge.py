"""Merge rules of aggregating routes: target, allow, deny, mapping, group, no-group merge."""

from harness import body_reply, chunked_reply, close_delimited_reply, json_reply, server_timing


def ok(r):
    assert r.status == 200, r.body
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    return r.json()


def test_group_puts_each_reply_under_its_key(aggregate):
    r, _, _ = aggregate([({"a": 1}, {"group": "first"}), ([1, 2], {"group": "second"}),
                         ("text", {"group": "third"})])
    assert ok(r) == {"first": {"a": 1}, "second": [1, 2], "third": "text"}
    assert r.headers["X-Estuary-Completed"] == "true"


def test_target_takes_nested_value(aggregate):
    body = {"data": {"user": {"id": 1, "name": "n"}, "other": 2}, "meta": {"page": 1}}
    r, _, _ = aggregate([(body, {"target": "data.user", "group": "u"}),
                         (body, {"target": "data", "group": "d"})])
    assert ok(r) == {"u": {"id": 1, "name": "n"}, "d": {"user": {"id": 1, "name": "n"}, "other": 2}}


def test_missing_target_fails_that_backend(aggregate):
    r, _, _ = aggregate([({"data": {}}, {"target": "data.user", "group": "u"}),
                         ({"x": 1}, {"group": "ok"})])
    assert ok(r) == {"ok": {"x": 1}}
    assert r.headers["X-Estuary-Completed"] == "false"


def test_allow_keeps_listed_fields_with_nesting(aggregate):
    body = {"id": 1, "name": "n", "secret": "s", "address": {"city": "c", "zip": "z"}}
    r, _, _ = aggregate([(body, {"group": "u", "allow": ["id", "address.city"]})])
    assert ok(r) == {"u": {"id": 1, "address": {"city": "c"}}}


def test_deny_drops_listed_fields(aggregate):
    body = {"id": 1, "name": "n", "secret": "s", "address": {"city": "c", "zip": "z"}}
    r, _, _ = aggregate([(body, {"group": "u", "deny": ["secret", "address.zip"]})])
    assert ok(r) == {"u": {"id": 1, "name": "n", "address": {"city": "c"}}}


def test_mapping_renames_fields(aggregate):
    r, _, _ = aggregate([({"id": "456", "product": "item456"}, {"group": "order",
                                                               "mapping": {"product": "item"}})])
    assert ok(r) == {"order": {"id": "456", "item": "item456"}}


def test_transform_order_target_allow_mapping_group(aggregate):
    """The SPEC example: target -> allow -> mapping -> group."""
    body = {"data": {"id": "456", "product": "item456", "price": 10}, "meta": 1}
    r, _, _ = aggregate([(body, {"group": "order", "target": "data", "allow": ["id", "product"],
                                 "mapping": {"product": "item"}})])
    assert ok(r) == {"order": {"id": "456", "item": "item456"}}


def test_allow_and_mapping_apply_to_each_array_element(aggregate):
    body = [{"id": 1, "x": 1, "n": "a"}, {"id": 2, "x": 2, "n": "b"}]
    r, _, _ = aggregate([(body, {"group": "list", "allow": ["id", "n"], "mapping": {"n": "name"}})])
    assert ok(r) == {"list": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def test_deny_applies_to_each_array_element(aggregate):
    r, _, _ = aggregate([([{"id": 1, "x": 1}, {"id": 2, "x": 2}], {"group": "l", "deny": ["x"]})])
    assert ok(r) == {"l": [{"id": 1}, {"id": 2}]}


def test_no_group_merges_objects_later_wins(aggregate):
    r, _, _ = aggregate([({"a": 1, "shared": "first"}, {}), ({"b": 2, "shared": "second"}, {})])
    assert ok(r) == {"a": 1, "b": 2, "shared": "second"}


def test_no_group_arrays_concatenate_under_collection(aggregate):
    r, _, _ = aggregate([([1, 2], {}), ({"a": 1}, {}), ([3], {})])
    assert ok(r) == {"a": 1, "collection": [1, 2, 3]}


def test_group_and_no_group_mixed(aggregate):
    r, _, _ = aggregate([({"top": 1}, {}), ({"inner": 2}, {"group": "g"})])
    assert ok(r) == {"top": 1, "g": {"inner": 2}}


def test_scalar_without_group_fails_that_backend(aggregate):
    r, _, _ = aggregate([(42, {}), ({"a": 1}, {})])
    assert ok(r) == {"a": 1}
    assert r.headers["X-Estuary-Completed"] == "false"


def test_empty_and_204_contribute_nothing(aggregate):
    r, _, _ = aggregate([(body_reply(status=204), {"group": "none"}),
                         (body_reply(b"", status=200), {"group": "empty"}),
                         ({"a": 1}, {"group": "full"})])
    assert ok(r) == {"full": {"a": 1}}
    assert r.headers["X-Estuary-Completed"] == "true"


def test_content_type_is_not_consulted(aggregate):
    r, _, _ = aggregate([(body_reply(b'{"a": 1}', content_type="text/plain"), {"group": "g"})])
    assert ok(r) == {"g": {"a": 1}}


def test_non_json_reply_fails_that_backend(aggregate):
    r, _, _ = aggregate([(body_reply(b"<html>not json</html>", content_type="application/json"),
                          {"group": "bad"}), ({"a": 1}, {"group": "good"})])
    assert ok(r) == {"good": {"a": 1}}
    assert r.headers["X-Estuary-Completed"] == "false"


def test_chunked_and_close_delimited_replies_merge(aggregate):
    r, _, _ = aggregate([(chunked_reply([b'{"a": ', b'"chunk', b'ed"}'], pause=0.02), {"group": "c"}),
                         (close_delimited_reply(b'{"b": "close-delimited"}'), {"group": "d"})])
    assert ok(r) == {"c": {"a": "chunked"}, "d": {"b": "close-delimited"}}
    assert r.headers["X-Estuary-Completed"] == "true"


def test_large_reply_merges(aggregate):
    big = {"items": [{"i": i, "pad": "x" * 100} for i in range(5000)]}  # ~600 KB
    r, _, _ = aggregate([(big, {"group": "big", "target": "items", "allow": ["i"]})])
    assert ok(r) == {"big": [{"i": i} for i in range(5000)]}


def test_server_timing_names_clash(backend, estuary, http):
    """Without group, entries are named by upstream; a clash gets '#2'."""
    b = backend("st")
    b.get("/one", {"a": 1})
    b.get("/two", {"b": 2})
    gw = estuary({"upstreams": {"svc": {"targets": [b.url]}},
                  "routes": [{"path": "/x", "backends": [{"upstream": "svc", "path": "/one"},
                                                          {"upstream": "svc", "path": "/two"}]}]})
    r = http.get(gw.url("/x"))
    assert r.json() == {"a": 1, "b": 2}
    timing = server_timing(r)
    assert set(timing) == {"svc", "svc#2"}, r.headers.getall("Server-Timing")


def test_route_params_fill_backend_paths(backend, estuary, http):
    b = backend("params")
    b.get("/users/{id}/orders/{oid}", json_reply(lambda p: p))
    gw = estuary({"upstreams": {"svc": {"targets": [b.url]}},
                  "routes": [{"path": "/u/{uid}/{order}", "backends": [
                      {"upstream": "svc", "path": "/users/{uid}/orders/{order}", "group": "g"}]}]})
    assert http.get(gw.url("/u/abc/99")).json() == {"g": {"id": "abc", "oid": "99"}}
    assert b.last.path == "/users/abc/orders/99"

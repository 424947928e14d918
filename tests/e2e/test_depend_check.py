"""estuary --check on dependent backends (SPEC "Dependent backends"): a reference to a later
group (a cycle), to the backend's own group or to no group, bad backend headers, each at its
FILE:LINE:COLUMN; a valid chain passes."""
import re

from harness import run_estuary

ERR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")

GOOD = """{
  "listen": [{"host": "127.0.0.1", "port": 8080}],
  "upstreams": {"users": {"targets": ["http://127.0.0.1:9"]},
                "orders": {"targets": ["http://127.0.0.1:9"]}},
  "routes": [
    {"path": "/me/{id}", "backends": [
      {"upstream": "users", "path": "/session/{id}", "group": "session"},
      {"upstream": "users", "path": "/users/{id}", "group": "user"},
      {"upstream": "orders", "path": "/orders/{user.last_order_id}?s={session.id}", "group": "order",
       "headers": {"Authorization": "Bearer {session.token}", "X-Static": "1"}}
    ]}
  ]
}
"""

BAD = """{
  "listen": [{"host": "127.0.0.1", "port": 8080}],
  "upstreams": {"users": {"targets": ["http://127.0.0.1:9"]}},
  "routes": [
    {"path": "/a", "backends": [
      {"upstream": "users", "path": "/x/{b.id}", "group": "a"},
      {"upstream": "users", "path": "/y/{a.id}", "group": "b"},
      {"upstream": "users", "path": "/z/{c.id}", "group": "c"},
      {"upstream": "users", "path": "/w", "headers": {"X-T": "{usr.token}", "Host": "h"}}
    ]},
    {"path": "/p", "proxy": {"upstream": "users", "path": "/q/{a.id}"}}
  ]
}
"""


def errors(cp, file):
    out = []
    for ln in cp.stderr.splitlines():
        m = ERR_LINE.match(ln)
        assert m, f"stderr line not in FILE:LINE:COLUMN form: {ln!r}"
        assert m.group("file") == file
        out.append((int(m.group("line")), int(m.group("col")), m.group("msg")))
    return out


def col_of(text, line, needle):
    """1-based column of `needle` on 1-based `line` of `text`."""
    return text.splitlines()[line - 1].index(needle) + 1


def test_check_accepts_a_chain(tmp_path):
    f = tmp_path / "good.json"
    f.write_text(GOOD)
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"{f}: ok"


def test_check_reports_cycles_unknown_groups_and_bad_headers(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(BAD)
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode == 1
    assert "ok" not in cp.stdout
    errs = errors(cp, str(f))
    want = [
        (6, col_of(BAD, 6, "{b.id}"), "later backend"),
        (8, col_of(BAD, 8, "{c.id}"), "own group"),
        (9, col_of(BAD, 9, "{usr.token}"), 'no backend listed before this one has group "usr"'),
        (9, col_of(BAD, 9, '"Host"'), "a backend cannot set it"),
        (11, col_of(BAD, 11, "{a.id}"), "a proxy has no groups"),
    ]
    assert len(errs) == len(want), cp.stderr
    for (line, col, msg), (wl, wc, part) in zip(errs, want):
        assert (line, col) == (wl, wc) and part in msg, (errs, want)
    # the backend that names an earlier group is fine: nothing on line 7
    assert all(line != 7 for line, _, _ in errs), errs


def test_check_group_reference_in_route_path(tmp_path):
    text = ('{"upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},\n'
            ' "routes": [{"path": "/r/{a.id}", "backends": [{"upstream": "u", "path": "/x", "group": "a"}]}]}\n')
    f = tmp_path / "route.json"
    f.write_text(text)
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode == 1
    errs = errors(cp, str(f))
    assert [(ln, col) for ln, col, _ in errs] == [(2, col_of(text, 2, "{a.id}"))], cp.stderr
    assert "names a group" in errs[0][2]

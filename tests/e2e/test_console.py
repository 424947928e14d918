"""Admin console (SPEC "Admin console"): GET /state, the page at GET / loaded in headless
Chromium, and the admin.token rule beyond loopback."""
import html.parser
import json
import os
import shutil
import subprocess

import pytest

from harness import REPO_ROOT, free_port, json_reply, run_estuary, status_reply, upstream, wait_for_port, wait_until
from test_reload import reload

TOKEN = "s3cret-admin-token-0123456789"
# a valid route template that would be markup if the page ever wrote it as HTML
HOSTILE = "/x/<b_id=pwn>\"'&amp;"


def start(backend, estuary, admin_host="127.0.0.1", token=None, workers=2, extra_routes=(), dns=None):
    """Two routes on a working upstream, one on an upstream nobody listens on."""
    b = backend("console")
    b.get("/a", json_reply({"a": 1}))
    b.get("/items/{id}", json_reply({"item": True}))
    b.get("/bad", status_reply(503))
    b.get("/named", json_reply({"named": True}))
    dead = f"http://127.0.0.1:{free_port()}"
    port = free_port(admin_host)
    admin = {"host": admin_host, "port": port}
    if token is not None:
        admin["token"] = token
    ups = {}
    routes = []
    if dns is not None:  # an upstream by DNS name, for the DNS cache entries
        dns.set_a("svc.test", "127.0.0.1", ttl=120)
        ups["named"] = upstream(f"http://svc.test:{b.port}")
        routes.append({"path": "/named", "proxy": {"upstream": "named", "path": "/named"}})
    cfg = {"workers": workers, "admin": admin,
           "upstreams": {**ups, "u": upstream(b), "dead": upstream(dead, retry={"attempts": 2, "backoff": "1ms",
                                                                         "on": ["connect_failure"]})},
           "routes": [{"path": "/a", "proxy": {"upstream": "u", "path": "/a"}},
                      {"path": "/items/{id}", "proxy": {"upstream": "u", "path": "/items/{id}"}},
                      {"path": "/bad", "proxy": {"upstream": "u", "path": "/bad"}},
                      {"path": "/dead", "proxy": {"upstream": "dead", "path": "/"}}, *routes, *extra_routes]}
    gw = estuary(cfg)
    wait_for_port(admin_host, port, 10, gw.proc)
    return gw, f"http://{admin_host}:{port}", dead


def traffic(gw, http):
    for _ in range(3):
        assert http.get(gw.url("/a")).status == 200
    for i in range(2):
        assert http.get(gw.url(f"/items/{i}")).status == 200
    assert http.get(gw.url("/bad")).status == 503
    assert http.get(gw.url("/dead")).status == 502
    assert http.get(gw.url("/nowhere")).status == 404


def state_when(http, admin, cond, what, headers=None):
    """/state once every worker answered and cond(doc) holds (bounded)."""
    def get():
        r = http.get(admin + "/state", headers=headers or {})
        assert r.status == 200 and r.headers["content-type"] == "application/json", r.text
        doc = r.json()
        return doc if doc["config"]["workers_missing"] == 0 and cond(doc) else None
    return wait_until(get, timeout=8, interval=0.05, what=what)


def by_path(doc):
    return {r["path"] if not r["unmatched"] else None: r for r in doc["routes"]}


def by_name(doc):
    return {u["name"]: u for u in doc["upstreams"]}


def total_requests(doc):
    return sum(r["requests"] for r in doc["routes"])


def test_state_shape_and_exact_counts(backend, estuary, http):
    gw, admin, dead = start(backend, estuary)
    first = state_when(http, admin, lambda d: True, "a first /state")
    assert set(first) >= {"routes", "upstreams", "dns", "cache", "policy", "config"}
    assert total_requests(first) == 0
    traffic(gw, http)
    doc = state_when(http, admin, lambda d: total_requests(d) == 8, "8 requests in /state")

    routes = by_path(doc)
    assert set(routes) == {"/a", "/items/{id}", "/bad", "/dead", None}
    a = routes["/a"]
    assert a["requests"] == 3 and a["by_class"]["2xx"] == 3 and a["errors"] == 0 and a["error_ratio"] == 0
    assert a["p50_ms"] is not None and 0 < a["p50_ms"] <= a["p99_ms"] <= 5000
    assert routes["/items/{id}"]["requests"] == 2 and routes["/items/{id}"]["by_class"]["2xx"] == 2
    assert routes["/bad"]["by_class"]["5xx"] == 1 and routes["/bad"]["error_ratio"] == 1
    assert routes["/dead"]["requests"] == 1 and routes["/dead"]["by_class"]["5xx"] == 1
    assert routes[None]["requests"] == 1 and routes[None]["by_class"]["4xx"] == 1
    for r in doc["routes"]:
        assert r["auth_rejected"] == 0 and r["rate_limited"] == 0

    ups = by_name(doc)
    assert ups["u"]["attempts_ok"] == 6 and ups["u"]["attempts_failed"] == 0
    assert ups["u"]["targets"] == [gw.config["upstreams"]["u"]["targets"][0]]
    assert ups["u"]["connections"]["created"] >= 1
    assert ups["u"]["connections"]["waiting"] == 0
    addr_u = ups["u"]["targets"][0].split("//")[1]
    assert [(a["address"], a["health"]) for a in ups["u"]["addresses"]] == [(addr_u, "ok")]
    d = ups["dead"]
    assert d["targets"] == [dead]
    assert d["attempts"] == 2 and d["attempts_ok"] == 0 and d["failures"]["connect_failure"] == 2
    assert d["retries"] == 1
    # two connect failures: below the ejection threshold (3 in a row on one worker)
    assert [a["address"] for a in d["addresses"]] == [dead.split("//")[1]]
    assert d["addresses"][0]["health"] == "ok" and d["ejections"] == 0

    assert set(doc["dns"]) >= {"queries_ok", "queries_failed", "cache_hits", "cache_misses", "stale_served"}
    assert doc["cache"] == {"enabled": False}
    assert doc["policy"]["auth_rejected"] == 0 and doc["policy"]["rate_limited"] == 0
    assert set(doc["policy"]["redis"]) == {"ok", "error", "timeout"}
    c = doc["config"]
    assert c["generation"] == 1 and c["reloads_ok"] == 0 and c["reloads_failed"] == 0
    assert c["last_reload"] == {"result": None, "time": None}
    assert c["workers"] == 2

    # rates come from the samples /state keeps (at most one a second): a later poll has them
    later = state_when(http, admin, lambda d: by_path(d)["/a"]["rps"] is not None and
                       len(by_path(d)["/a"]["rps_history"]) >= 1, "a rate from two samples")
    a = by_path(later)["/a"]
    assert a["rps"] >= 0 and all(v >= 0 for v in a["rps_history"])
    assert a["error_ratio_1m"] in (None, 0)
    # the latency chart has one value per interval of the rate chart (null for an interval
    # without requests)
    assert len(a["p99_history"]) == len(a["rps_history"])
    assert all(v is None or v > 0 for v in a["p99_history"])
    assert a["p99_ms_1m"] is None or a["p99_ms_1m"] > 0

    # a reload shows in config
    reload(gw, gw.config)
    after = state_when(http, admin, lambda d: d["config"]["generation"] == 2, "generation 2")
    assert after["config"]["reloads_ok"] == 1
    assert after["config"]["last_reload"]["result"] == "ok" and after["config"]["last_reload"]["time"] > 0


def eject_dead(gw, http, admin, dead):
    """/dead until every worker ejected the dead address (3 connect failures in a row each)."""
    def ejected():
        assert http.get(gw.url("/dead")).status == 502
        doc = http.get(admin + "/state").json()
        a = by_name(doc)["dead"]["addresses"]
        return doc if a and a[0]["ejected_workers"] == doc["config"]["workers"] else None
    return wait_until(ejected, timeout=8, what="the dead address ejected on every worker")


def test_state_shows_ejected_address_and_dns_entries(backend, estuary, http, dns):
    gw, admin, dead = start(backend, estuary, dns=dns)
    assert http.get(gw.url("/a")).status == 200
    assert http.get(gw.url("/named")).status == 200
    doc = eject_dead(gw, http, admin, dead)
    d = by_name(doc)["dead"]
    a = d["addresses"][0]
    assert a["address"] == dead.split("//")[1] and a["target"] == dead
    assert a["health"] == "ejected" and 0 < a["ejected_for_ms"] <= 30000 and a["consecutive_failures"] >= 0
    assert d["ejections"] >= 2  # one per worker (more if a half-open trial failed meanwhile)
    assert by_name(doc)["u"]["addresses"][0]["health"] == "ok"
    # the DNS name the /named request resolved (on one worker); IP literals are not listed
    named = by_name(doc)["named"]
    assert named["targets"][0].startswith("http://svc.test:")
    assert named["addresses"][0]["address"] == "127.0.0.1:" + named["targets"][0].rsplit(":", 1)[1]
    entries = doc["dns"]["entries"]
    assert [e["name"] for e in entries] == ["svc.test"], entries
    e = entries[0]
    assert e["addresses"] == ["127.0.0.1"] and e["stale"] is False and e["failure"] is None and e["workers"] == 1
    assert 100_000 < e["ttl_left_ms"] <= 120_000


def test_page_is_self_contained(backend, estuary, http):
    gw, admin, _ = start(backend, estuary, workers=1)
    r = http.get(admin + "/")
    assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    assert "<script" in page and "fetch(" in page
    # no outside assets: no URL with a scheme or protocol-relative //host anywhere but the SVG namespace
    for marker in ("http://", "https://", 'src="//', "href=", "@import", "url("):
        rest = page.replace("http://www.w3.org/2000/svg", "")
        assert marker not in rest, marker
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "document.write" not in page
    assert http.get(admin + "/nope").status == 404


def admin_get(http, url, token=None):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return http.get(url, headers=headers)


def test_token_required_beyond_loopback(backend, estuary, http):
    gw, admin, _ = start(backend, estuary, admin_host="127.0.0.2", token=TOKEN, workers=1)
    for path in ("/", "/state", "/config"):
        for tok in (None, "wrong-token-wrong-token-xx", TOKEN[:-1], TOKEN + "x"):
            r = admin_get(http, admin + path, tok)
            assert r.status == 401, (path, tok)
            assert r.headers["www-authenticate"] == 'Bearer realm="estuary-admin"'
            assert r.json()["error"]["code"] == "unauthorized"
        r = http.get(admin + path, headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status == 401
        r = admin_get(http, admin + path, TOKEN)
        assert r.status == 200, path
        r = http.get(admin + path, headers={"Authorization": f"bearer {TOKEN}"})  # the scheme is case-insensitive
        assert r.status == 200, path
    # /config never shows the token
    r = admin_get(http, admin + "/config", TOKEN)
    assert r.json()["admin"]["token"] == "<redacted>" and TOKEN not in r.text
    # probes and scrapers stay open
    assert http.get(admin + "/healthz").status == 200
    assert http.get(admin + "/metrics").status == 200
    wait_until(lambda: http.get(admin + "/readyz").status == 200, timeout=5, what="/readyz 200 without a token")


def test_no_token_configured_beyond_loopback_always_401(backend, estuary, http):
    gw, admin, _ = start(backend, estuary, admin_host="127.0.0.2", workers=1)
    for path in ("/", "/state", "/config"):
        assert admin_get(http, admin + path).status == 401
        assert admin_get(http, admin + path, TOKEN).status == 401
    assert http.get(admin + "/metrics").status == 200


def test_loopback_needs_no_token_and_reload_follows(backend, estuary, http):
    gw, admin, _ = start(backend, estuary, admin_host="127.0.0.1", token=TOKEN, workers=1)
    assert http.get(admin + "/state").status == 200
    assert http.get(admin + "/").status == 200
    # moved beyond loopback by a reload: the token rule applies there, with the new token
    port = free_port("127.0.0.2")
    new_token = "another-admin-token-abcdef"
    reload(gw, dict(gw.config, admin={"host": "127.0.0.2", "port": port, "token": new_token}))
    wait_for_port("127.0.0.2", port, 10, gw.proc)
    moved = f"http://127.0.0.2:{port}"
    assert http.get(moved + "/state").status == 401
    assert admin_get(http, moved + "/state", TOKEN).status == 401
    assert admin_get(http, moved + "/state", new_token).status == 200


def test_token_too_short_is_a_config_error(tmp_path):
    cfg = {"listen": [{"host": "127.0.0.1", "port": free_port()}], "admin": {"port": free_port(), "token": "short"},
           "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
           "routes": [{"path": "/", "proxy": {"upstream": "u", "path": "/"}}]}
    f = tmp_path / "c.json"
    f.write_text(json.dumps(cfg))
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode != 0 and "token" in cp.stderr and "16" in cp.stderr
    cfg["admin"]["token"] = "x" * 16
    f.write_text(json.dumps(cfg))
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode == 0, cp.stderr


# ---- the page in a real browser ---------------------------------------------------------------

def chromium():
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing (scripts/install-deps.sh installs it): the console test must run in CI")
        pytest.skip("chromium is not installed")
    return exe


class Rows(html.parser.HTMLParser):
    """{(kind, key): {cell class: text}} for the rows with data-route / data-upstream / data-dns."""

    def __init__(self):
        super().__init__()
        self.rows, self.row, self.cell, self.tags = {}, None, None, set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        a = dict(attrs)
        kinds = [k for k in ("route", "upstream", "dns") if "data-" + k in a]
        if tag == "tr" and kinds:
            key = (kinds[0], a["data-" + kinds[0]])
            self.row = self.rows.setdefault(key, {})
        elif tag == "td" and self.row is not None:
            self.cell = (a.get("class") or "").split(" ")[0]
            self.row[self.cell] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self.row is not None and self.cell is not None:
            self.row[self.cell] += data


def browser(exe, tmp_path, *args):
    return subprocess.run([exe, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                           "--virtual-time-budget=3000", *args],
                          capture_output=True, text=True, timeout=60)


def test_page_renders_in_chromium(backend, estuary, http, tmp_path, dns):
    exe = chromium()
    gw, admin, dead = start(backend, estuary, extra_routes=[{"path": HOSTILE, "proxy": {"upstream": "u", "path": "/a"}}],
                            dns=dns)
    traffic(gw, http)
    assert http.get(gw.url("/named")).status == 200
    state_when(http, admin, lambda d: total_requests(d) == 9, "9 requests in /state")
    eject_dead(gw, http, admin, dead)
    cp = browser(exe, tmp_path, "--dump-dom", admin + "/")
    assert cp.returncode == 0, cp.stderr[-2000:]
    p = Rows()
    p.feed(cp.stdout)
    rows = p.rows
    assert rows[("route", "/a")]["requests"] == "3", rows
    assert rows[("route", "/a")]["path"] == "/a"
    assert rows[("route", "/items/{id}")]["requests"] == "2"
    assert int(rows[("route", "/dead")]["c5xx"]) >= 3
    d = rows[("upstream", "dead")]
    assert int(d["failed"]) >= 6 and "connect_failure" in d["failures"] and d["targets"] == dead
    # ejected, or half-open once the ejection period passed (no traffic re-ejects it)
    assert d["addresses"].startswith(dead.split("//")[1] + " "), d
    assert "ejected" in d["addresses"] or "half-open" in d["addresses"], d
    assert rows[("upstream", "u")]["addresses"].endswith(" ok")
    assert rows[("upstream", "u")]["failed"] == "0"
    assert 'id="generation">1<' in cp.stdout
    assert rows[("dns", "svc.test")]["targets"] == "127.0.0.1" and rows[("dns", "svc.test")]["state"] == "fresh"
    # user data stays text: the hostile route path is shown as such and made no element
    assert rows[("route", HOSTILE)]["path"] == HOSTILE and rows[("route", HOSTILE)]["requests"] == "0"
    assert not any(t.startswith("b_id") for t in p.tags), p.tags

    shot = tmp_path / "console.png"
    cp = browser(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,800", admin + "/")
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("ESTUARY_CONSOLE_SCREENSHOT"):  # to refresh docs/console.png
        shutil.copy(shot, os.environ["ESTUARY_CONSOLE_SCREENSHOT"])


class Marks(html.parser.HTMLParser):
    """The polylines' points and the circles' centres inside <div id="out">."""

    def __init__(self):
        super().__init__()
        self.lines, self.dots = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "polyline":
            self.lines.append([tuple(float(c) for c in p.split(",")) for p in a["points"].split()])
        elif tag == "circle":
            self.dots.append((float(a["cx"]), float(a["cy"])))


def test_sparkline_leaves_gaps_for_null(backend, estuary, http, tmp_path):
    """The page's own sparkline function, run in Chromium on a p99 history with nulls (intervals
    without requests): they are gaps, never points at 0."""
    exe = chromium()
    gw, admin, _ = start(backend, estuary, workers=1)
    page = http.get(admin + "/").text
    begin = page.index("  function sparkline(")
    body = page[begin:page.index("\n  }\n", begin) + 4]
    probe = tmp_path / "spark.html"
    probe.write_text("<!doctype html><div id=\"out\"></div><script>\n" + body +
                     "document.getElementById('out').appendChild(sparkline([1, null, 2, 3, null, null, 4, null]));\n"
                     "document.getElementById('out').appendChild(sparkline([null, null]));\n</script>")
    cp = browser(exe, tmp_path, "--dump-dom", probe.as_uri())
    assert cp.returncode == 0, cp.stderr[-2000:]
    m = Marks()
    m.feed(cp.stdout)
    # x = i * 118 / 7 + 1; y = 20 - v / 4 * 18: a line through 2 and 3, dots at 1 and 4, no 0
    assert [[round(x, 1) for x, _ in line] for line in m.lines] == [[34.7, 51.6]], cp.stdout
    assert [(round(x, 1), round(y, 1)) for x, y in m.dots] == [(1.0, 15.5), (102.1, 2.0)], cp.stdout
    assert cp.stdout.count("<svg") == 2

"""The /metrics exposition passes `promtool check metrics` (Prometheus's own linter: names,
types, units, help texts), with every family present: traffic through an open route, a
policy-refused request, a rate-limited one and a failing upstream (issue 18 item 5).
promtool comes from scripts/promtool.sh (Debian's prometheus package, binary only)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import free_port, json_reply, upstream, wait_until
from test_admin import admin_config, admin_started, metric, parse_metrics

ROOT = Path(__file__).resolve().parents[2]


def promtool():
    for p in (os.environ.get("PROMTOOL"), shutil.which("promtool"), str(ROOT / ".cache/tools/promtool")):
        if p and os.access(p, os.X_OK):
            return p
    if os.environ.get("CI"):
        pytest.fail("promtool is missing: scripts/test.sh runs scripts/promtool.sh first")
    pytest.skip("promtool not found (run scripts/promtool.sh)")


def test_metrics_pass_promtool(backend, estuary, http, tmp_path):
    tool = promtool()
    b = backend("pm")
    b.get("/ok", json_reply({"ok": True}))
    keys = tmp_path / "keys.txt"
    keys.write_text("secret-key-1\n")
    cfg, admin = admin_config({
        "workers": 2,
        "upstreams": {"u": upstream(b), "dead": {"targets": [f"http://127.0.0.1:{free_port()}"]}},
        "auth": {"api_keys": {"k": {"keys_file": str(keys)}}},
        "rate_limits": {"one": {"rate": 1, "per": "1m", "burst": 0, "key": "route"}},
        "routes": [{"path": "/ok", "proxy": {"upstream": "u", "path": "/ok"}},
                   {"path": "/key", "auth": ["k"], "proxy": {"upstream": "u", "path": "/ok"}},
                   {"path": "/limited", "rate_limit": "one", "proxy": {"upstream": "u", "path": "/ok"}},
                   {"path": "/dead", "proxy": {"upstream": "dead", "path": "/"}}]})
    gw = admin_started(estuary(cfg))
    assert http.get(gw.url("/ok")).status == 200
    assert http.get(gw.url("/key")).status == 401
    assert [http.get(gw.url("/limited")).status for _ in range(2)] == [200, 429]
    assert http.get(gw.url("/dead")).status == 502
    assert http.get(gw.url("/nope")).status == 404

    def complete():
        text = http.get(admin + "/metrics").body.decode()
        m = parse_metrics(text)
        return text if metric(m, "estuary_workers_missing") == 0 and \
            metric(m, "estuary_rate_limited_total", route="/limited") == 1 else None
    text = wait_until(complete, timeout=10, what="a complete scrape")
    assert 'estuary_auth_rejected_total{route="/key",reason="missing"} 1' in text
    r = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr

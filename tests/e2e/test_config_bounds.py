"""Config loader bounds (docs/configuration.md): a hostile file is refused quickly with a
bounded number of FILE:LINE:COLUMN lines, by `--check` and by a reload. A SIGHUP onto such a
file leaves the gateway running and serving its old config; the reload counts as an error."""
import re
import signal
import time

import pytest

from harness import json_reply, run_estuary, upstream, wait_until
from test_admin import admin_config, admin_started, metric, parse_metrics

MIB = 1 << 20


def hostile(kind: str) -> str:
    """The text of one hostile config file."""
    if kind == "too_big":  # the file: 20 MiB of {"routes":[1,1,...]}
        return '{"routes":[' + "1," * (10 * MIB) + "1]}"
    if kind == "many_values":  # 10 MB, under the size limit: 5 million values
        return '{"routes":[' + "1," * (5 * MIB) + "1]}"
    if kind == "many_errors":  # under the value limit, one error per element
        return '{"routes":[\n' + "1,\n" * 20000 + "1]}"
    if kind == "deep":
        return "[" * (5 * MIB) + "]" * (5 * MIB)
    if kind == "huge_string":
        return '{"routes":[{"path":"/' + "a" * (10 * MIB) + '","proxy":{"upstream":"nope"}}]}'
    if kind == "huge_key":  # every error under a 4 MB name
        return '{"upstreams":{"' + "k" * (4 * MIB) + '":{"targets":[' + "1," * 40000 + "1]}}}"
    if kind == "many_keys":
        return "{" + ",".join(f'"k{i}":1' for i in range(90000)) + "}"
    raise ValueError(kind)


KINDS = ["too_big", "many_values", "many_errors", "deep", "huge_string", "huge_key", "many_keys"]
LINE = re.compile(r"^(.+?):(\d+):(\d+): (.+)$")


@pytest.mark.parametrize("kind", KINDS)
def test_check_refuses_hostile_file_quickly(kind, tmp_path):
    path = tmp_path / f"{kind}.json"
    path.write_text(hostile(kind))
    start = time.monotonic()
    cp = run_estuary(["--check", "-c", str(path)], timeout=30)
    took = time.monotonic() - start
    assert cp.returncode == 1, cp.stderr[-2000:]
    lines = [ln for ln in cp.stderr.splitlines() if ln.startswith(str(path) + ":")]
    assert len(lines) in range(1, 102), len(lines)  # at least one error, at most 100 + the cut line
    for ln in lines:
        assert LINE.match(ln), ln
        assert len(ln) < 2048, ln[:300]  # no message repeats the huge value or key whole
    assert len(cp.stderr) < 200_000
    if kind == "too_big":
        assert lines == [f"{path}:1:1: the config file is larger than 16 MiB; refusing to read it"]
    if kind in ("many_values", "deep"):
        assert len(lines) == 1 and "more than 100000 JSON values" in lines[0], lines
    if kind == "many_errors":
        assert len(lines) == 101 and lines[-1].endswith("too many errors: only the first 100 are shown"), lines[-2:]
    assert took < 5, f"--check took {took:.1f}s"


def test_sighup_onto_hostile_files_keeps_serving(backend, estuary, http, tmp_path):
    a = backend("a")
    a.get("/r", json_reply({"from": "a"}))
    acfg, admin = admin_config()
    gw = admin_started(estuary(dict({"workers": 1, "upstreams": {"a": upstream(a)},
                                     "routes": [{"path": "/r", "proxy": {"upstream": "a", "path": "/r"}}]}, **acfg)))
    path = str(gw.config_path)
    for i, kind in enumerate(KINDS, start=1):
        before = len(gw.stderr())
        gw.config_path.write_text(hostile(kind))
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: gw.stderr().count("reload failed") == i or not gw.running(), timeout=15,
                   what=f"the reload onto {kind} to fail")
        assert gw.running(), f"estuary exited ({gw.proc.poll()}) on a reload onto {kind}:\n{gw.stderr()[-3000:]}"
        logged = [ln for ln in gw.stderr()[before:].splitlines() if path + ":" in ln]
        assert len(logged) in range(1, 102), (kind, len(logged))
        r = http.get(gw.url("/r"))
        assert r.status == 200 and r.json() == {"from": "a"}, (kind, r.status, r.body)
        ms = parse_metrics(http.get(admin + "/metrics").text)
        assert metric(ms, "estuary_config_reloads_total", result="error") == i
        assert metric(ms, "estuary_config_reloads_total", result="ok") == 0
        assert metric(ms, "estuary_config_generation") == 1

"""estuary --check, --version, --help."""
import re
import shutil

import pytest

from harness import REPO_ROOT, run_estuary

ERR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")
EXAMPLES = sorted((REPO_ROOT / "conf" / "examples").glob("*.json"))


def errors(cp, file):
    """Parses stderr lines 'FILE:LINE:COLUMN: message' for FILE; returns [(line, col, msg)]."""
    out = []
    for ln in cp.stderr.splitlines():
        m = ERR_LINE.match(ln)
        if m and m.group("file") == file:
            out.append((int(m.group("line")), int(m.group("col")), m.group("msg")))
    return out


def test_check_default_config():
    cp = run_estuary(["--check", "-c", "conf/estuary.json"], cwd=REPO_ROOT)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "conf/estuary.json: ok"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_check_examples(example, tmp_path, tls):
    """Examples are copied beside generated TLS files and the example keys (relative paths)."""
    d = tmp_path / "conf"
    (d / "tls").mkdir(parents=True)
    shutil.copy(tls.server_cert, d / "tls" / "cert.pem")
    shutil.copy(tls.server_key, d / "tls" / "key.pem")
    shutil.copy(tls.ca_cert, d / "tls" / "ca.pem")
    shutil.copytree(example.parent / "keys", d / "keys")  # key files of the policy example
    target = d / example.name
    shutil.copy(example, target)
    cp = run_estuary(["--check", "-c", example.name], cwd=d)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"{example.name}: ok"


BROKEN = """{
  "listen": [{"host": "127.0.0.1", "port": 8080}],
  "bogus_key": true,
  "upstreams": {
    "users": {"targets": ["http://localhost:8081"], "response_timeout": "5 seconds"}
  },
  "routes": [
    {"path": "/a/{id}", "backends": [{"upstream": "nope", "path": "/x/{id}"}]},
    {"path": "/b/{id}", "backends": [{"upstream": "users", "path": "/y/{other}"}]}
  ]
}
"""


def test_check_reports_every_problem_with_position(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text(BROKEN)
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode == 1
    assert "ok" not in cp.stdout
    errs = errors(cp, str(f))
    assert errs, f"no FILE:LINE:COLUMN lines on stderr:\n{cp.stderr}"
    lines = {ln for ln, _, _ in errs}
    # unknown key at line 3; its key starts at column 3 (the quote; 4 if the name is meant)
    assert any(ln == 3 and col in (3, 4) for ln, col, _ in errs), errs
    assert 5 in lines, f"bad duration on line 5 not reported: {errs}"
    assert 8 in lines, f"unknown upstream on line 8 not reported: {errs}"
    assert 9 in lines, f"unbound {{other}} on line 9 not reported: {errs}"
    for ln in cp.stderr.strip().splitlines():
        assert ERR_LINE.match(ln), f"stderr line not in FILE:LINE:COLUMN form: {ln!r}"


def test_check_syntax_error(tmp_path):
    f = tmp_path / "syntax.json"
    f.write_text('{\n  "listen": [{"host": "127.0.0.1", "port": 8080}]\n  "routes": []\n}\n')
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode == 1
    errs = errors(cp, str(f))
    assert errs and errs[0][0] == 3, cp.stderr


def test_check_relative_path_is_reported_as_given(tmp_path):
    (tmp_path / "bad.json").write_text('{\n  "nonsense": 1\n}\n')
    cp = run_estuary(["--check", "-c", "bad.json"], cwd=tmp_path)
    assert cp.returncode == 1
    errs = errors(cp, "bad.json")
    assert errs and errs[0][0] == 2 and errs[0][1] in (3, 4), cp.stderr


def test_check_unreadable_certificate(tmp_path):
    f = tmp_path / "tls.json"
    f.write_text('{\n  "listen": [{"host": "127.0.0.1", "port": 8443,\n'
                 '    "tls": {"certificate_file": "missing/cert.pem", "key_file": "missing/key.pem"}}],\n'
                 '  "upstreams": {}, "routes": []\n}\n')
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode == 1
    assert any(ln == 3 for ln, _, _ in errors(cp, str(f))), cp.stderr


def test_check_clashing_routes(tmp_path):
    f = tmp_path / "clash.json"
    f.write_text('{\n  "upstreams": {"u": {"targets": ["http://127.0.0.1:1"]}},\n  "routes": [\n'
                 '    {"path": "/a/{x}", "backends": [{"upstream": "u", "path": "/"}]},\n'
                 '    {"path": "/a/{y}", "backends": [{"upstream": "u", "path": "/"}]}\n  ]\n}\n')
    cp = run_estuary(["--check", "-c", str(f)])
    assert cp.returncode == 1
    assert errors(cp, str(f)), cp.stderr


def test_check_missing_file(tmp_path):
    cp = run_estuary(["--check", "-c", str(tmp_path / "absent.json")])
    assert cp.returncode == 1
    assert str(tmp_path / "absent.json") in cp.stderr


def test_version_and_help():
    cp = run_estuary(["--version"])
    assert cp.returncode == 0 and "estuary" in cp.stdout and re.search(r"\d+\.\d+\.\d+", cp.stdout)
    cp = run_estuary(["--help"])
    assert cp.returncode == 0 and "--check" in (cp.stdout + cp.stderr)

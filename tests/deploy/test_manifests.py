"""Checks of deploy/ and docker/ that need no cluster and no Docker daemon.

    ESTUARY_BIN=build/estuary /usr/bin/python3 -m pytest tests/deploy

Kubernetes manifests: valid YAML with the expected kinds; probes on the admin port
(liveness /healthz, readiness /readyz); termination grace above the config's
shutdown_timeout plus the preStop sleep; the ConfigMap's config passes `estuary --check`.
Also: docker/estuary.json passes --check, compose.yaml is valid YAML naming the services,
the Dockerfile keeps the contract (ENTRYPOINT/CMD/USER/EXPOSE/HEALTHCHECK), and the
systemd unit keeps TimeoutStopSec above shutdown_timeout.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
BIN = Path(os.environ.get("ESTUARY_BIN", ROOT / "build" / "estuary"))
if not BIN.is_absolute():
    BIN = ROOT / BIN


def duration_s(text):
    """SPEC durations ("250ms", "1m30s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def load_docs():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


@pytest.fixture(scope="module")
def docs():
    return load_docs()


def one(docs, kind):
    found = [d for _, d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment(docs):
    return one(docs, "Deployment")


@pytest.fixture(scope="module")
def container(deployment):
    cs = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in cs if c["name"] == "estuary")


@pytest.fixture(scope="module")
def config(docs):
    cm = one(docs, "ConfigMap")
    return json.loads(cm["data"]["estuary.json"])


def check_config(tmp_path, text, name="estuary.json"):
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: build it (scripts/build.sh) or set ESTUARY_BIN")
    f = tmp_path / name
    f.write_text(text)
    r = subprocess.run([str(BIN), "--check", "-c", str(f)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"estuary --check failed:\n{r.stdout}{r.stderr}"
    assert r.stdout.strip() == f"{f}: ok"


def test_yaml_valid_and_kinds(docs):
    for name, d in docs:
        assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind"), name
        if d["kind"] != "Kustomization":
            assert d["metadata"]["name"], name
    kinds = {d["kind"] for _, d in docs}
    assert {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


def test_kustomization_lists_every_manifest(docs):
    kust = one(docs, "Kustomization")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_selectors_match(docs, deployment):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    sel = deployment["spec"]["selector"]["matchLabels"]
    assert sel.items() <= labels.items()
    for _, d in docs:
        if d["kind"] == "Service":
            assert d["spec"]["selector"].items() <= labels.items()
        if d["kind"] == "PodDisruptionBudget":
            assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]


def test_configmap_config_passes_check(docs, tmp_path):
    cm = one(docs, "ConfigMap")
    check_config(tmp_path, cm["data"]["estuary.json"])


def test_config_mounted_where_args_point(deployment, container, docs):
    cm = one(docs, "ConfigMap")
    args = container["args"]
    path = args[args.index("-c") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    vols = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    name = next(n for n, v in vols.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"])
    assert path == mounts[name].rstrip("/") + "/estuary.json"


def test_probes_on_admin_port(container, config):
    admin_port = config["admin"]["port"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == admin_port
    assert ports["http"] == config["listen"][0]["port"]
    assert config["admin"]["host"] == "0.0.0.0", "the kubelet probes the pod IP, not loopback"
    live = container["livenessProbe"]["httpGet"]
    ready = container["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz"
    assert ready["path"] == "/readyz"
    for probe in (live, ready, container.get("startupProbe", {}).get("httpGet", live)):
        assert probe["port"] in ("admin", admin_port)


def test_termination_grace_covers_drain(deployment, container, config):
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = duration_s(config.get("shutdown_timeout", "10s"))
    pre = container.get("lifecycle", {}).get("preStop", {})
    sleep = 0
    if "exec" in pre:
        cmd = pre["exec"]["command"]
        sleep = float(cmd[-1]) if cmd[0].endswith("sleep") else 0
    elif "sleep" in pre:
        sleep = pre["sleep"]["seconds"]
    assert sleep > 0, "a preStop pause lets endpoints drop the pod before SIGTERM"
    assert grace > shutdown + sleep


def test_reload_annotation_and_security(deployment, container):
    ann = deployment["spec"]["template"]["metadata"]["annotations"]
    assert any("config" in k and "sha256" in k for k in ann), "config checksum annotation"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert deployment["spec"]["replicas"] >= 2


def test_docker_config_passes_check(tmp_path):
    check_config(tmp_path, (ROOT / "docker" / "estuary.json").read_text())


def test_compose_services():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    svcs = compose["services"]
    assert {"estuary", "users", "orders"} <= svcs.keys()
    cfg = json.loads((ROOT / "docker" / "estuary.json").read_text())
    hosts = {re.match(r"https?://([^:/]+)", t).group(1) for u in cfg["upstreams"].values() for t in u["targets"]}
    assert hosts <= svcs.keys(), "docker/estuary.json names its upstreams by compose service name"
    assert duration_s(svcs["estuary"]["stop_grace_period"]) > duration_s(cfg.get("shutdown_timeout", "10s"))


def test_dockerfile_contract():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) >= 2, "multi-stage"
    assert re.search(r"^ARG DEBIAN_IMAGE=debian:bookworm-slim$", text, re.M)
    assert '-DESTUARY_TESTS=OFF' in text
    assert re.search(r'^ENTRYPOINT \["estuary"\]$', text, re.M)
    assert re.search(r'^CMD \["-c", "/etc/estuary/estuary.json"\]$', text, re.M)
    assert re.search(r"^USER \d+", text, re.M) and not re.search(r"^USER (0|root)\b", text, re.M)
    assert re.search(r"^EXPOSE 8080 9901$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/healthz" in text
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignore and "build*/" in ignore


def test_systemd_unit():
    unit = (ROOT / "deploy" / "systemd" / "estuary.service").read_text()
    kv = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert kv["Type"] == "simple"
    assert kv["KillSignal"] == "SIGTERM"
    assert kv["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert kv["NoNewPrivileges"] == "yes" and kv["ProtectSystem"] == "strict"
    assert kv.get("DynamicUser") == "yes" or kv.get("User")
    assert duration_s(kv["TimeoutStopSec"]) > 10, "above the default shutdown_timeout"


def test_systemd_unit_verifies(tmp_path):
    """systemd-analyze verify (skipped where systemd is not installed)."""
    import shutil
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: build it (scripts/build.sh) or set ESTUARY_BIN")
    unit = (ROOT / "deploy" / "systemd" / "estuary.service").read_text()
    f = tmp_path / "estuary.service"
    f.write_text(unit.replace("/usr/local/bin/estuary", str(BIN)))
    r = subprocess.run([tool, "verify", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    problems = [line for line in r.stderr.splitlines() if "estuary.service" in line]
    assert not problems, "\n".join(problems)

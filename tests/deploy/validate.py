"""Validates the docker compose stack without a Docker engine (there is none on the CI machine).

Usage: validate.py METRICS_TEXT_FILE
- docker-compose.yml against the Compose specification JSON schema (the copy shipped in the
  docker-compose 1.29.2 wheel on PyPI, fetched once into .venv/compose-spec/), plus: every
  bind-mounted file and build context exists, the gateway's config path matches the Dockerfile.
- deploy/prometheus.yml with `promtool check config` (Debian's prometheus package; required
  under CI).
- the Grafana provisioning and dashboard: JSON/YAML parse, datasource uids agree, and every
  metric a panel queries is one the gateway exports (docs/metrics.md, which a unit test keeps
  equal to the exposition; a live /metrics scrape must be a subset of it).
- deploy/otel-collector.yaml: every pipeline names receivers, processors and exporters defined.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
problems = []


def fail(msg):
    problems.append(msg)
    print("FAIL", msg)


def compose_schema():
    cache = ROOT / ".venv" / "compose-spec" / "compose_spec.json"
    if not cache.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--disable-pip-version-check", "docker-compose==1.29.2", "-d", tmp],
                check=True)
            wheel = next(Path(tmp).glob("docker_compose-1.29.2-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                data = z.read("compose/config/compose_spec.json")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(data)
    return json.loads(cache.read_text())


def check_compose():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    schema = compose_schema()
    # The 2021 schema predates the top-level `name` (added to the spec later); check the rest.
    checked = {k: v for k, v in doc.items() if k != "name"}
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(checked))
    for e in errors:
        fail(f"docker-compose.yml: {'/'.join(map(str, e.path))}: {e.message}")
    services = doc["services"]
    for want in ["gateway", "qdrant", "prometheus", "grafana", "otel-collector", "mcp-kv"]:
        if want not in services:
            fail(f"docker-compose.yml: no `{want}` service")
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            fail(f"service {name}: neither image nor build")
        if "build" in svc and not (ROOT / svc["build"] / "Dockerfile").exists():
            fail(f"service {name}: build context {svc['build']} has no Dockerfile")
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./") and not (ROOT / src).exists():
                fail(f"service {name}: mounts {src}, which is not in the repository")
        for dep in svc.get("depends_on", []):
            if dep not in services:
                fail(f"service {name}: depends on unknown service {dep}")
    gw = services["gateway"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    mounted = [v.split(":")[1] for v in gw["volumes"] if v.startswith("./deploy/switchyard.toml")]
    if not mounted or mounted[0] not in dockerfile:
        fail("the gateway's config is not mounted where the Dockerfile's CMD reads it")
    print("ok   docker-compose.yml")


def check_prometheus():
    promtool = shutil.which("promtool")
    if not promtool:
        if os.environ.get("CI"):
            fail("promtool is missing (apt-get install prometheus)")
        else:
            print("skip promtool (not installed)")
        return
    r = subprocess.run([promtool, "check", "config", str(ROOT / "deploy/prometheus.yml")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail("promtool: " + r.stdout + r.stderr)
    conf = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = [t for job in conf["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    if "gateway:8080" not in targets:
        fail("prometheus does not scrape gateway:8080")
    print("ok   deploy/prometheus.yml (promtool)")


def check_grafana(exported):
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    if ds["datasources"][0]["url"] != "http://prometheus:9090":
        fail("grafana datasource does not point at the prometheus service")
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/switchyard.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    if not any(m.endswith(":" + path + ":ro") or m.split(":")[1] == path for m in mounts):
        fail(f"grafana dashboards path {path} is not mounted")
    dash = json.loads((ROOT / "deploy/grafana/dashboards/switchyard.json").read_text())
    used = set()
    for p in dash["panels"]:
        if p["datasource"]["uid"] not in uids:
            fail(f"panel {p['title']}: unknown datasource {p['datasource']['uid']}")
        if not p.get("targets"):
            fail(f"panel {p['title']}: no queries")
        for t in p["targets"]:
            for m in re.findall(r"\bswitchyard_[a-z_]+", t["expr"]):
                used.add(re.sub(r"_(bucket|sum|count)$", "", m))
    for m in sorted(used):
        if m not in exported:
            fail(f"dashboard queries {m}, which the gateway does not export")
    for topic in ["switchyard_requests_total", "switchyard_cache_lookups_total",
                  "switchyard_cache_saved_usd_total", "switchyard_mcp_tool_calls_total",
                  "switchyard_request_duration_seconds"]:
        if topic not in used:
            fail(f"dashboard does not show {topic}")
    print(f"ok   grafana dashboard ({len(dash['panels'])} panels, {len(used)} metrics, all exported)")


def check_collector():
    c = yaml.safe_load((ROOT / "deploy/otel-collector.yaml").read_text())
    for name, pipe in c["service"]["pipelines"].items():
        for kind in ["receivers", "processors", "exporters"]:
            for comp in pipe.get(kind, []):
                if comp not in (c.get(kind) or {}):
                    fail(f"collector pipeline {name}: {kind[:-1]} {comp} is not defined")
    grpc = c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    if not grpc.endswith(":4317"):
        fail("collector does not receive OTLP/gRPC on 4317")
    print("ok   deploy/otel-collector.yaml")


def exported_names(metrics_file):
    names = set()
    for line in Path(metrics_file).read_text().splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            name, kind = m.groups()
            names.add(name + "_total" if kind == "counter" and not name.endswith("_total") else name)
    return names


def documented_names():
    doc = (ROOT / "docs/metrics.md").read_text()
    return set(re.findall(r"^\| `(switchyard_[a-z_]+)`", doc, re.M))


if __name__ == "__main__":
    # docs/metrics.md lists every metric the gateway can export (a unit test in
    # src/telemetry/metrics.rs keeps the two equal); a live scrape shows only families that have
    # been counted, so it must be a subset.
    exported = documented_names()
    live = exported_names(sys.argv[1])
    if len(live) < 5 or not live <= exported:
        fail(f"live scrape names {sorted(live - exported)} are not in docs/metrics.md")
    check_compose()
    check_prometheus()
    check_grafana(exported)
    check_collector()
    if problems:
        sys.exit(1)
    print("deploy: all checks passed")

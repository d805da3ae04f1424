"""deploy/, the Dockerfile and configs/docker.yaml agree with each other and with streamlearn's contract:
configs validate, ports and probe paths match the HTTP API, the dashboard covers every metric family."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamlearn.config import load_config, load_config_dict
from streamlearn.metrics import ConnectionMetrics, GuardMetrics, LearnerMetrics, ServingMetrics
from tests.deploy.conftest import DASHBOARD, DEPLOY, PROM_DIR, ROOT

K8S = DEPLOY / "k8s"
PORT = 8080
LIVE, READY = "/v2/health/live", "/v2/health/ready"
CONFIG_PATH = "/etc/streamlearn/config.yaml"
CHECKPOINTS = "/var/lib/streamlearn/checkpoints"

# Series names by sample suffix, for a family the registry lists before it has any sample (one with
# labels and no children yet, e.g. streamlearn_offset_resets_total before the first reset).
_SERIES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
    "info": ("_info",),
}


def exported_series() -> list[str]:
    """Every series name streamlearn exports, read from the metric classes in a fresh registry, so a
    metric added to streamlearn/metrics.py is checked against the dashboard without editing this test.

    Families with samples give their real series names: the two gradient-alignment histograms have
    negative buckets, for which prometheus_client exports no ``_sum`` (a sum of signed observations is
    not a valid OpenMetrics histogram sum). ``_created`` series are bookkeeping no panel should read.
    """
    registry = CollectorRegistry()
    LearnerMetrics(registry)
    GuardMetrics(registry)
    ServingMetrics(registry, role="learner", learner="er", model="mlp")
    ConnectionMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        sampled = {s.name for s in family.samples if not s.name.endswith("_created")}
        names |= sampled or {family.name + suffix for suffix in _SERIES[family.type]}
    return sorted(names)


METRIC_FAMILIES = [*exported_series(), "up"]  # `up`: Prometheus's own, per scrape target


def test_the_family_list_is_derived_not_empty() -> None:
    assert len(METRIC_FAMILIES) >= 45, METRIC_FAMILIES
    assert "streamlearn_offset_resets_total" in METRIC_FAMILIES
    assert "streamlearn_gradient_alignment_dot_distribution_sum" not in METRIC_FAMILIES


def _yaml_files() -> list[Path]:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
    return [*files, ROOT / "configs" / "docker.yaml"]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for p in sorted(K8S.glob("*.yaml")):
        if p.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return docs


def _k8s(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"]]


# ---- YAML and configs -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def test_docker_config_validates() -> None:
    cfg = load_config(ROOT / "configs" / "docker.yaml", environ={})
    assert cfg.kafka.bootstrap_servers == "kafka:9092"
    assert cfg.checkpoint.dir == CHECKPOINTS
    assert (cfg.serve.host, cfg.serve.port, cfg.serve.enabled) == ("0.0.0.0", PORT, True)
    mer = _load(ROOT / "configs" / "mer.yaml")
    assert cfg.learner.name == mer["learner"]["name"] == "mer"
    assert cfg.learner.hparams == mer["learner"]["hparams"]
    assert cfg.to_dict()["model"] == load_config_dict({"model": mer["model"]}).to_dict()["model"]


def test_k8s_configmap_config_validates_and_matches_docker_config() -> None:
    cm = _k8s("ConfigMap", "streamlearn-config")
    data = yaml.safe_load(cm["data"]["config.yaml"])
    cfg = load_config_dict(data, source="deploy/k8s/configmap.yaml")
    docker = load_config(ROOT / "configs" / "docker.yaml", environ={})
    for section in ("model", "learner", "checkpoint", "evaluation", "runtime", "serve"):
        assert getattr(cfg, section) == getattr(docker, section), section
    assert cfg.fingerprint() == docker.fingerprint()


# ---- Kubernetes -------------------------------------------------------------------------------------
def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize(
    ("kind", "name"), [("StatefulSet", "streamlearn"), ("Deployment", "streamlearn-serve")]
)
def test_k8s_workload_ports_probes_and_security(kind: str, name: str) -> None:
    w = _k8s(kind, name)
    pod = w["spec"]["template"]
    c = _container(w)
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("http", PORT)]
    assert c["livenessProbe"]["httpGet"] == {"path": LIVE, "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": READY, "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == LIVE
    ann = pod["metadata"]["annotations"]
    assert ann == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(PORT),
        "prometheus.io/path": "/metrics",
    }
    sec = pod["spec"]["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # the config comes from the ConfigMap, at the path the args name
    assert c["args"][c["args"].index("-c") + 1] == CONFIG_PATH
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"]["mountPath"] == str(Path(CONFIG_PATH).parent)
    vols = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    assert vols["config"]["configMap"]["name"] == "streamlearn-config"
    assert "checkpoints" not in mounts, "checkpoints live in object storage: no shared volume"
    assert mounts["tmp"]["mountPath"] == "/tmp"
    (secret,) = c["envFrom"]  # endpoint and credentials from the AWS chain, never from the config
    assert secret["secretRef"] == {"name": "streamlearn-s3", "optional": True}
    assert w["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_k8s_learners_are_a_fleet_with_checkpoints_in_object_storage(tmp_path: Path) -> None:
    sts = _k8s("StatefulSet", "streamlearn")
    assert sts["spec"]["replicas"] == 2, "active + hot standby"
    c = _container(sts)
    assert c["args"][0] == "run"
    assert "volumeClaimTemplates" not in sts["spec"], "no ReadWriteMany (nor any) volume"
    env = _env(c)
    assert env["STREAMLEARN__CHECKPOINT__DIR"].startswith("s3://")
    # the ConfigMap's config with the pod's environment validates, with leadership on
    cm = _k8s("ConfigMap", "streamlearn-config")
    (tmp_path / "config.yaml").write_text(cm["data"]["config.yaml"])
    cfg = load_config(tmp_path / "config.yaml", environ=env)
    assert cfg.fleet.enabled and cfg.checkpoint.dir == env["STREAMLEARN__CHECKPOINT__DIR"]
    assert not any(
        d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
        for d in _k8s_docs()
    )
    # a drain takes one member at a time: the other keeps learning or takes over
    pdb = _k8s("PodDisruptionBudget", "streamlearn")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= sts["spec"]["template"]["metadata"]["labels"].items()
    )


def test_k8s_replicas_read_the_learners_bucket() -> None:
    sts = _k8s("StatefulSet", "streamlearn")
    dep = _k8s("Deployment", "streamlearn-serve")
    c = _container(dep)
    assert c["args"][0] == "serve"
    url = _env(_container(sts))["STREAMLEARN__CHECKPOINT__DIR"]
    assert c["args"][c["args"].index("--checkpoint-dir") + 1] == url
    vols = {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert "checkpoints" not in vols
    hpa = _k8s("HorizontalPodAutoscaler", "streamlearn-serve")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "streamlearn-serve",
    }


@pytest.mark.parametrize(
    ("svc", "workload"), [("streamlearn", "StatefulSet"), ("streamlearn-serve", "Deployment")]
)
def test_k8s_services_select_their_pods(svc: str, workload: str) -> None:
    s = _k8s("Service", svc)
    w = _k8s(workload, svc)
    assert s["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    assert [(p["name"], p["port"], p["targetPort"]) for p in s["spec"]["ports"]] == [("http", PORT, "http")]
    if workload == "StatefulSet":
        assert w["spec"]["serviceName"] == svc


def test_k8s_servicemonitor_scrapes_both_services() -> None:
    sm = _k8s("ServiceMonitor", "streamlearn")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("http", "/metrics")]
    sel = sm["spec"]["selector"]["matchLabels"].items()
    for name in ("streamlearn", "streamlearn-serve"):
        assert sel <= _k8s("Service", name)["metadata"]["labels"].items()


def test_kustomization_lists_every_manifest() -> None:
    kust = _load(K8S / "kustomization.yaml")
    listed = set(kust["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert not any("namespace" in d["metadata"] for d in _k8s_docs()), "manifests stay namespace-less"


# ---- compose ----------------------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    return _load(DEPLOY / "compose.yaml")


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of the bind mounts (sources that are paths, not named volumes)."""
    out = {}
    for v in service.get("volumes", []):
        src, target = v.split(":")[:2]
        if src.startswith("."):
            out[target] = src
    return out


def test_compose_services_and_kraft_kafka() -> None:
    svcs = _compose()["services"]
    assert {"kafka", "streamlearn", "streamlearn-serve", "producer", "prometheus", "grafana"} <= set(svcs)
    env = svcs["kafka"]["environment"]
    assert svcs["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "ZOOKEEPER" not in json.dumps(env).upper()


def test_compose_streamlearn_services() -> None:
    c = _compose()
    svcs = c["services"]
    learner, replica, producer = svcs["streamlearn"], svcs["streamlearn-serve"], svcs["producer"]
    assert (DEPLOY / learner["build"]["context"] / learner["build"]["dockerfile"]).is_file()
    assert learner["command"] == ["run", "-c", CONFIG_PATH]
    assert _bind_mounts(learner)[CONFIG_PATH] == "../configs/docker.yaml"
    url = learner["environment"]["STREAMLEARN__CHECKPOINT__DIR"]
    assert url.startswith("s3://") and learner["environment"]["STREAMLEARN__FLEET__ENABLED"] == "true"
    assert f"{PORT}:{PORT}" in learner["ports"]
    # the fleet: a second identical learner, and MinIO with its bucket made before either starts
    standby = svcs["streamlearn-standby"]
    assert standby["command"] == learner["command"] and standby["environment"] == learner["environment"]
    assert standby["ports"] != learner["ports"]
    assert svcs["minio"]["image"].startswith("minio/minio:")
    assert learner["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    bucket = url.removeprefix("s3://").split("/")[0]
    assert f"local/{bucket}" in " ".join(svcs["minio-init"]["command"])
    assert learner["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert replica["command"][0] == "serve"
    assert replica["command"][replica["command"].index("--checkpoint-dir") + 1] == url
    assert replica["environment"]["AWS_ENDPOINT_URL"] == learner["environment"]["AWS_ENDPOINT_URL"]
    assert any(p.endswith(f":{PORT}") for p in replica["ports"])
    for svc in (learner, replica):
        assert svc["image"] == learner["image"]
        test = " ".join(svc["healthcheck"]["test"])
        assert f"127.0.0.1:{PORT}{LIVE}" in test
    assert producer["command"][0] == "produce"
    assert producer["command"][producer["command"].index("--bootstrap-servers") + 1] == "kafka:9092"
    cfg = load_config(ROOT / "configs" / "docker.yaml", environ={})
    assert producer["command"][producer["command"].index("--topic") + 1] == cfg.kafka.topic


def test_compose_bind_mounts_exist_and_match_prometheus_and_grafana() -> None:
    svcs = _compose()["services"]
    for name, svc in svcs.items():
        for source in _bind_mounts(svc).values():
            assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    assert _bind_mounts(svcs["prometheus"])["/etc/prometheus"] == "./prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in svcs["prometheus"]["command"]
    graf = _bind_mounts(svcs["grafana"])
    assert graf["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = _load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamlearn.yml")["providers"][0]
    assert graf[provider["options"]["path"]] == "./grafana/dashboards"
    (ds,) = _load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert (ds["uid"], ds["type"], ds["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    assert "9090:9090" in svcs["prometheus"]["ports"] and "3000:3000" in svcs["grafana"]["ports"]


def test_prometheus_scrapes_the_compose_services() -> None:
    cfg = _load(PROM_DIR / "prometheus.yml")
    assert cfg["global"]["scrape_interval"] == "15s"
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    services = _compose()["services"]
    for job in ("streamlearn", "streamlearn-serve"):
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"
        (static,) = jobs[job]["static_configs"]
        assert static["targets"] == [f"{job}:{PORT}"]
        assert job in services


# ---- Dockerfile -------------------------------------------------------------------------------------
def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text and "FROM ${PYTHON_IMAGE}" in text
    torch = re.search(r"ARG TORCH_VERSION=(\d+)\.(\d+)\.(\d+)", text)
    assert torch, "torch must be pinned"
    pin = tuple(int(g) for g in torch.groups())
    spec = re.search(r'"torch>=(\d+)\.(\d+),<(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert spec
    lo, hi = tuple(int(g) for g in spec.groups()[:2]), tuple(int(g) for g in spec.groups()[2:])
    assert lo <= pin[:2] < hi, f"torch {pin} outside the pyproject range"
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert '--index-url "${TORCH_INDEX_URL}"' in text and "pip install -c requirements.lock ." in text
    assert "USER 10001" in text and "EXPOSE 8080" in text
    assert f"http://127.0.0.1:{PORT}{LIVE}" in text.split("HEALTHCHECK", 1)[1]
    assert 'ENTRYPOINT ["streamlearn"]' in text
    assert f'CMD ["run", "-c", "{CONFIG_PATH}"]' in text
    assert "OPENBLAS_NUM_THREADS=1" in text
    assert "chown -R 10001:10001 /var/lib/streamlearn" in text


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "runs", "**/__pycache__", ".pytest_cache"} <= ignored
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    sources = [s for line in copied for s in line.split()]
    assert sources == [
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "streamlearn",
        "configs/docker.yaml",
    ]
    for s in sources:
        assert (ROOT / s).exists()
        assert s not in ignored and s.split("/")[0] not in ignored


# ---- alerts -----------------------------------------------------------------------------------------
def test_every_alert_has_severity_summary_description_and_is_documented() -> None:
    readme = (DEPLOY / "README.md").read_text()
    (group,) = _load(PROM_DIR / "alerts.yml")["groups"]
    assert group["name"] == "streamlearn"
    for rule in group["rules"]:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert "Runbook" in rule["annotations"]["description"], name
        # what the live check (tests/deploy/test_live_prometheus.py) can evaluate with `bool`
        assert not re.search(r"\babsent(_over_time)?\s*\(|\bunless\b", rule["expr"]), name
        assert f"`{name}`" in readme, f"{name} is not described in deploy/README.md"


# ---- Grafana ----------------------------------------------------------------------------------------
def test_dashboard_panels_use_the_prometheus_datasource() -> None:
    d = _dashboard()
    assert d["uid"] == "streamlearn" and 38 <= d["schemaVersion"] <= 41
    assert d["templating"]["list"] == []
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        x, w = p["gridPos"]["x"], p["gridPos"]["w"]
        assert x >= 0 and x + w <= 24, p["title"]
    panels = _panels()
    assert {p["type"] for p in panels} <= {"timeseries", "stat", "heatmap", "bargauge"}
    assert {"timeseries", "stat", "heatmap"} <= {p["type"] for p in panels}
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "prometheus"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "prometheus", p["title"]
            assert t["expr"].strip(), p["title"]


def test_dashboard_uses_only_the_rate_and_interval_variables() -> None:
    for expr in _exprs():
        assert set(re.findall(r"\$\{?\w+", expr)) <= {"$__rate_interval", "$__interval"}, expr
        if "rate(" in expr or "increase(" in expr:
            assert "[$__rate_interval]" in expr, expr


@pytest.mark.parametrize("family", METRIC_FAMILIES)
def test_dashboard_covers_metric_family(family: str) -> None:
    pattern = re.compile(rf"(?<![\w:]){re.escape(family)}(?![\w:])")
    assert any(pattern.search(e) for e in _exprs()), f"no dashboard query reads {family}"


def test_dashboard_json_is_what_the_builder_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", DEPLOY / "grafana" / "build_dashboard.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert DASHBOARD.read_text(encoding="utf-8") == mod.render(), (
        "deploy/grafana/dashboards/streamlearn.json is stale: run python deploy/grafana/build_dashboard.py"
    )

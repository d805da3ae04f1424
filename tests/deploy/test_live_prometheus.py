"""A real Prometheus, configured from deploy/prometheus, scrapes exporters built from streamlearn.metrics.

Checks what promtool cannot: every dashboard query and every alert expression (each comparison turned
into ``op bool``) returns data from series named and labelled exactly as streamlearn exports them, and
no alert fires while the metrics are healthy. The exporters are the real metric classes
(streamlearn/metrics.py) behind a tiny HTTP server, so this runs in seconds without Kafka or a model;
the end-to-end check against a running daemon lives with the integration tests.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamlearn.metrics import ConnectionMetrics, GuardMetrics, LearnerMetrics, ServingMetrics, render
from tests.deploy.conftest import DASHBOARD, PROM_DIR

SCRAPE = "500ms"


def _learner_registry() -> tuple[CollectorRegistry, Callable[[], None]]:
    """A learner's registry with every labelled series present and healthy values; ``tick`` advances it."""
    reg = CollectorRegistry()
    m = LearnerMetrics(reg)
    s = ServingMetrics(reg, role="learner", learner="lamaml", model="mlp")
    m.accuracy.set(0.85)
    m.accuracy_rolling.set(0.9)
    m.loss.set(0.4)
    m.kappa.set(0.8)
    m.update_loss.set(0.3)
    m.alignment_cos.set(0.2)
    m.alignment_dot.set(0.01)
    for stat, v in (("mean", 0.15), ("min", 0.0), ("max", 0.4)):
        m.learning_rate.labels(stat=stat).set(v)
    m.buffer_capacity.set(200)
    m.buffer_examples.set(200)
    m.buffer_bytes.set(200 * 785 * 4)
    m.checkpoint_time.set(time.time())
    m.checkpoint_age.set(5)
    m.drifts.inc(0)
    m.checkpoint_failures.inc(0)
    m.broker_up.set(1)
    m.broker_outages.inc(0)
    m.serve_restarts.inc(0)
    # A reset has no series until it happens; export one at 0 so the "Offset resets" panel's query is
    # checked against the real name and labels (the integration test's daemon never resets).
    m.offset_resets.labels(topic="examples", partition="0", policy="earliest").inc(0)
    m.updates_undone.inc(0)
    m.rejected.labels(reason="non_finite_update").inc(0)
    m.model_learned.set(12345)
    c = ConnectionMetrics(reg)
    c.open.set(3)
    c.client_disconnects.inc(0)
    c.closed.labels(reason="evicted").inc(0)
    g = GuardMetrics(reg)  # a healthy gate: promoting, never held, nothing rolled back
    for reason in ("paired", "golden"):
        g.held.labels(reason=reason).set(0)
    for model in ("champion", "challenger"):
        for signal in ("paired", "golden"):
            g.accuracy.labels(model=model, signal=signal).set(0.9)
    g.rollbacks.inc(0)
    g.quarantined.inc(0)
    g.paused.set(0)
    s.ready.set(1)
    state = {"version": 0}

    def tick() -> None:
        m.consumed.inc(100)
        m.learned.inc(99)
        m.rejected.labels(reason="wrong_length").inc(1)
        for task in ("0", "1"):
            m.task_accuracy.labels(task=task).set(0.8)
        for label in range(10):
            m.buffer_class.labels(class_label=str(label)).set(20)
        for part in ("0", "1"):
            m.lag.labels(topic="examples", partition=part).set(3)
            m.offset.labels(topic="examples", partition=part).inc(50)
        for _ in range(5):
            m.update_seconds.observe(0.004)
        m.alignment_cos_hist.observe(0.2)
        m.alignment_dot_hist.observe(0.01)
        m.checkpoint_seconds.observe(0.03)
        m.checkpoints.inc()
        g.promotions.inc()
        state["version"] += 99
        m.model_version.set(state["version"])
        m.published_version.set(state["version"])
        _serve_traffic(s, state["version"])

    return reg, tick


def _serve_traffic(s: ServingMetrics, version: int) -> None:
    for endpoint, code in (("predict", "200"), ("infer", "200"), ("metadata", "200"), ("predict", "400")):
        s.requests.labels(endpoint=endpoint, code=code).inc()
        s.seconds.labels(endpoint=endpoint).observe(0.0008)
    s.rows.inc(4)
    s.serving_version.set(version)
    s.reloads.inc()


def _replica_registry() -> tuple[CollectorRegistry, Callable[[], None]]:
    reg = CollectorRegistry()
    s = ServingMetrics(reg, role="replica", learner="lamaml", model="mlp")
    s.ready.set(1)
    return reg, lambda: _serve_traffic(s, 1000)


class _Exporter:
    """Serves one registry at /metrics, advancing it on every scrape (like a live process)."""

    def __init__(self, registry: CollectorRegistry, tick: Callable[[], None]) -> None:
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    tick()
                    body = render(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        qs = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:
            doc = json.load(resp)
        assert doc["status"] == "success", (expr, doc)
        return list(doc["data"]["result"])


@pytest.fixture(scope="module")
def prom(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    learner, replica = _Exporter(*_learner_registry()), _Exporter(*_replica_registry())
    # The real config, with the compose host names swapped for the local exporters and faster scrapes.
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = SCRAPE
    targets = {"streamlearn": learner.address, "streamlearn-serve": replica.address}
    for job in cfg["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    (tmp / "alerts.yml").write_text((PROM_DIR / "alerts.yml").read_text())
    port = _free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    p = _Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            try:
                counts = p.query("count_over_time(up[1m])")
                if len(counts) == 2 and min(float(r["value"][1]) for r in counts) >= 4:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not scrape both targets 4 times in 30 s"
            time.sleep(0.25)
        yield p
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        learner.close()
        replica.close()


def _dashboard_exprs() -> list[str]:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    return [t["expr"] for p in panels for t in p["targets"]]


def _alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"] for r in g["rules"]]


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def with_bool(expr: str) -> str:
    """``a > 0`` -> ``a > bool 0``: the comparison's truth value as 0/1 instead of a filter."""
    return _COMPARISON.sub(lambda m: f"{m.group(1)} bool", expr)


def test_with_bool() -> None:
    assert with_bool("a >= 1 and b == 0") == "a >= bool 1 and b == bool 0"
    assert with_bool('x{code=~"5.."} > bool 0') == 'x{code=~"5.."} > bool 0'


def test_targets_are_up(prom: _Prometheus) -> None:
    got = {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
    assert got == {"streamlearn": "1", "streamlearn-serve": "1"}


def test_rules_are_loaded(prom: _Prometheus) -> None:
    with urllib.request.urlopen(f"{prom.url}/api/v1/rules", timeout=10) as resp:
        groups = json.load(resp)["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert loaded == {r["alert"] for r in _alerts()}
    assert all(r.get("health") in ("ok", "unknown") for g in groups for r in g["rules"]), groups


@pytest.mark.parametrize("expr", _dashboard_exprs())
def test_dashboard_query_returns_data(prom: _Prometheus, expr: str) -> None:
    q = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    assert prom.query(q), f"no data for dashboard query: {q}"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_alert_expression_evaluates_on_real_series(prom: _Prometheus, rule: dict[str, Any]) -> None:
    q = with_bool(rule["expr"])
    assert prom.query(q), f"{rule['alert']}: no series for {q}"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_alert_is_quiet_while_healthy(prom: _Prometheus, rule: dict[str, Any]) -> None:
    assert prom.query(rule["expr"]) == [], f"{rule['alert']} fires on healthy metrics"


def _rules(prom: _Prometheus) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prom.url}/api/v1/rules?type=alert", timeout=10) as resp:
        return [r for g in json.load(resp)["data"]["groups"] for r in g["rules"]]


def test_prometheus_itself_holds_every_rule_inactive_while_healthy(prom: _Prometheus) -> None:
    """Prometheus's own rule evaluation, not our reading of the expressions: every alert rule has been
    evaluated on these series and is neither pending nor firing."""
    started = time.time()
    # Rules evaluate every SCRAPE; wait for two evaluations after this point so none is still unevaluated.
    while True:
        rules = _rules(prom)
        stamps = [r.get("lastEvaluation", "") for r in rules]
        if all(s and not s.startswith("0001-") for s in stamps) and time.time() - started >= 1.0:
            break
        assert time.time() - started < 30, f"rules not evaluated in 30 s: {stamps}"
        time.sleep(0.25)
    assert {r["name"] for r in rules} == {r["alert"] for r in _alerts()}
    active = [(r["name"], r["state"], r.get("alerts")) for r in rules if r["state"] != "inactive"]
    assert not active, f"alerts pending or firing on healthy metrics: {active}"
    with urllib.request.urlopen(f"{prom.url}/api/v1/alerts", timeout=10) as resp:
        assert json.load(resp)["data"]["alerts"] == []

"""A real Prometheus scrapes a real daemon and a replica; every dashboard and alert query returns data.

The dashboard is tested, not just written: each ``expr`` of every panel in
``deploy/grafana/dashboards/streamlearn.json`` and of every rule in ``deploy/prometheus/alerts.yml``
(loaded into this Prometheus, so they must parse) goes through ``/api/v1/query`` and must return at
least one finite sample. Alert expressions are asked with each comparison turned into its ``bool``
form, so a healthy system answers 0 instead of nothing — the query and its inputs are still checked.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamlearn.ingest.broker import find_free_port
from tests.integration.test_replica import wait_for
from tests.integration.test_serving import learning_daemon, request

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/streamlearn.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"


def dashboard_exprs() -> list[tuple[str, str]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    doc = json.loads(DASHBOARD.read_text())
    return [(p.get("title", "?"), t["expr"]) for p in walk(doc["panels"]) for t in p.get("targets", [])]


def alert_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"] if "alert" in r]


#: Counters whose labelled series appear only once their event happened; the daemon here never resets
#: an offset, so a panel reading only these has no data. Its query must still parse and run (``query``
#: asserts success); tests/deploy/test_live_prometheus.py exports such a series and checks the panel.
EVENT_ONLY = (
    "streamlearn_offset_resets_total",
    'reason="non_finite_update"',  # the non-finite guard never fires on this clean stream
    "streamlearn_http_connections_closed_total",
    # exported only with guard.gate on (there is no champion to score otherwise)
    "streamlearn_gate_accuracy",
)

#: Alerts that fire on a real, expected event of this test's stream (task switches are drift), which
#: may hold them active only while the event's own counter says it happened.
EVENT_ALERTS = {"DriftDetected": "streamlearn_drift_detections_total"}


def with_bool(expr: str) -> str:
    """Turn every top-level comparison (outside label matchers and strings) into its bool form."""
    out, i, depth, quote = [], 0, 0, ""
    while i < len(expr):
        c = expr[i]
        if quote:
            out.append(c)
            if c == "\\":
                out.append(expr[i + 1])
                i += 1
            elif c == quote:
                quote = ""
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0 and c in "=!<>":
            op = expr[i : i + 2] if expr[i : i + 2] in ("==", "!=", ">=", "<=") else c
            if op in ("==", "!=", ">=", "<=", ">", "<"):
                rest = expr[i + len(op) :]
                out.append(op if rest.lstrip().startswith("bool") else op + " bool")
                i += len(op)
                continue
        out.append(c)
        i += 1
    return "".join(out)


def test_with_bool_leaves_matchers_alone() -> None:
    assert with_bool('a{code!="200"} > 0.5') == 'a{code!="200"} > bool 0.5'
    assert with_bool("x == 0") == "x == bool 0"
    assert with_bool("x >= bool 1") == "x >= bool 1"
    assert with_bool("a < 0.8 * b") == "a < bool 0.8 * b"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/install-prometheus.sh (make setup does)")
    port = find_free_port()
    cfg = tmp_path / "prometheus.yml"
    data = tmp_path / "tsdb"
    proc_holder: dict[str, subprocess.Popen[bytes]] = {}

    def start(targets: dict[str, int]) -> None:
        cfg.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]}
                        for job, p in targets.items()
                    ],
                }
            )
        )
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc_holder["p"] = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: _ok(f"http://127.0.0.1:{port}/-/ready"), 60)

    yield port, tmp_path, start  # type: ignore[misc]
    if "p" in proc_holder:
        proc_holder["p"].terminate()
        proc_holder["p"].wait(timeout=30)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", (expr, doc)
    return doc["data"]["result"]


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [float(s["value"][1]) for s in result if math.isfinite(float(s["value"][1]))]


def test_every_dashboard_and_alert_query_returns_data(broker, topic, tmp_path, prometheus) -> None:
    prom_port, _, start_prometheus = prometheus
    stack = contextlib.ExitStack()
    daemon, cfg = stack.enter_context(learning_daemon(broker, topic, tmp_path, n_tasks=3, rate=150))
    replica_port = find_free_port()
    (tmp_path / "replica.yaml").write_text(yaml.safe_dump({"learner": {"name": "lamaml"}}))
    replica = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlearn.cli",
            "serve",
            "-c",
            str(tmp_path / "replica.yaml"),
            "--checkpoint-dir",
            cfg["checkpoint"]["dir"],
            "--port",
            str(replica_port),
            "--poll-seconds",
            "0.5",
        ],
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    client: threading.Thread | None = None
    try:
        wait_for(lambda: _ok(f"http://127.0.0.1:{replica_port}/v2/health/ready"), 60)
        start_prometheus({"streamlearn": daemon.serve_port, "streamlearn-serve": replica_port})

        def clients() -> None:
            row = [0.0] * 784
            while not stop.is_set():
                for port in (daemon.serve_port, replica_port):
                    request(port, "POST", "/predict", {"x": row})
                    request(
                        port,
                        "POST",
                        "/v2/models/streamlearn/infer",
                        {"inputs": [{"name": "i", "shape": [1, 784], "datatype": "FP32", "data": row}]},
                    )
                request(daemon.serve_port, "POST", "/predict", {"x": [1.0]})  # a 400, so codes vary
                time.sleep(0.05)

        client = threading.Thread(target=clients, daemon=True)
        client.start()
        # enough scrapes for rate() and increase() over the dashboard's windows to have two points
        wait_for(
            lambda: (
                len(query(prom_port, "streamlearn_model_version[1m]")[0]["values"]) >= 12
                if query(prom_port, "streamlearn_model_version[1m]")
                else False
            ),
            90,
        )

        missing: list[str] = []
        exprs = [(f"panel {t!r}", e) for t, e in dashboard_exprs()]
        exprs += [(f"alert {a}", with_bool(e)) for a, e in alert_exprs()]
        assert len(exprs) >= 30
        for where, expr in exprs:
            q = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
            if not finite_values(query(prom_port, q)) and not any(name in q for name in EVENT_ONLY):
                missing.append(f"{where}: {q}")
        assert not missing, "queries without data:\n" + "\n".join(missing)

        # Prometheus evaluated the rules itself (they loaded, they run); all healthy, none firing.
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout=10) as r:
            rules = [rule for g in json.loads(r.read())["data"]["groups"] for rule in g["rules"]]
        assert len(rules) == len(alert_exprs())
        assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
        assert all(not rule["lastEvaluation"].startswith("0001-") for rule in rules), "a rule never ran"
        active = [
            (rule["name"], rule["state"])
            for rule in rules
            if rule["state"] != "inactive"
            and not (
                rule["name"] in EVENT_ALERTS
                and any(float(v["value"][1]) > 0 for v in query(prom_port, EVENT_ALERTS[rule["name"]]))
            )
        ]
        assert not active, f"alerts pending or firing while the daemon is healthy: {active}"
        assert query(prom_port, 'up{job="streamlearn"}')[0]["value"][1] == "1"
        assert query(prom_port, 'up{job="streamlearn-serve"}')[0]["value"][1] == "1"
    finally:
        stop.set()
        if client is not None:
            client.join(timeout=30)  # before the servers go away under it
        replica.terminate()
        replica.wait(timeout=30)
        stack.close()

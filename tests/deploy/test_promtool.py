"""deploy/prometheus passes promtool: config, rules and the rule unit tests, and promtool notices breakage."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import PROM_DIR

REQUIRED_ALERTS = {
    "StreamlearnDown",
    "StreamlearnNotReady",
    "PrequentialAccuracyDrop",
    "PrequentialAccuracyLow",
    "DriftDetected",
    "ConsumerLagGrowing",
    "LearningStalled",
    "NoRecentCheckpoint",
    "CheckpointFailing",
    "HighRejectRate",
    "PredictionLatencyHigh",
    "PredictionErrors",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def _rules() -> list[dict]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _copy_prom_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "prometheus"
    shutil.copytree(PROM_DIR, dst)
    return dst


def test_alerts_file_has_the_required_alerts() -> None:
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(names)


def test_check_config(promtool: str) -> None:
    res = _run(promtool, "check", "config", str(PROM_DIR / "prometheus.yml"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "1 rule files found" in out, out
    assert f"SUCCESS: {len(_rules())} rules found" in out, out


def test_check_rules(promtool: str) -> None:
    res = _run(promtool, "check", "rules", str(PROM_DIR / "alerts.yml"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"SUCCESS: {len(_rules())} rules found" in out, out


def test_rule_unit_tests_pass(promtool: str) -> None:
    res = _run(promtool, "test", "rules", str(PROM_DIR / "alerts_test.yml"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "SUCCESS" in out and "FAILED" not in out, out


def test_unit_tests_make_every_alert_fire_and_check_healthy_cases() -> None:
    doc = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    fired, quiet = set(), 0
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
                for alert in case["exp_alerts"]:
                    assert {"summary", "description"} <= set(alert.get("exp_annotations", {}))
            else:
                quiet += 1
    assert fired == {r["alert"] for r in _rules()}
    assert quiet >= 10, "too few checks that alerts stay quiet when healthy"


def test_promtool_rejects_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    d = _copy_prom_dir(tmp_path)
    p = d / "alerts.yml"
    p.write_text(p.read_text().replace('expr: up{job="streamlearn"} == 0', 'expr: up{job="streamlearn" == 0'))
    assert _run(promtool, "check", "rules", str(p)).returncode != 0
    assert _run(promtool, "check", "config", str(d / "prometheus.yml")).returncode != 0


def test_rule_unit_tests_fail_when_an_alert_stops_firing(promtool: str, tmp_path: Path) -> None:
    d = _copy_prom_dir(tmp_path)
    p = d / "alerts.yml"
    text = p.read_text()
    assert "streamlearn_checkpoint_age_seconds > 900" in text
    p.write_text(
        text.replace("streamlearn_checkpoint_age_seconds > 900", "streamlearn_checkpoint_age_seconds > 9e9")
    )
    res = _run(promtool, "test", "rules", str(d / "alerts_test.yml"))
    assert res.returncode != 0
    assert "NoRecentCheckpoint" in res.stdout + res.stderr


def test_check_config_rejects_a_missing_rule_file(promtool: str, tmp_path: Path) -> None:
    d = _copy_prom_dir(tmp_path)
    (d / "alerts.yml").unlink()
    assert _run(promtool, "check", "config", str(d / "prometheus.yml")).returncode != 0

"""Writes dashboards/streamlearn.json, the Grafana dashboard of every metric streamlearn exports.

The JSON is generated so that panels stay uniform (datasource, units, legends, layout) and the
queries can be read in one place; edit this file, then run

    python deploy/grafana/build_dashboard.py          # rewrites deploy/grafana/dashboards/streamlearn.json

tests/deploy/test_manifests.py fails when the JSON and this script disagree.

Every query is plain PromQL; the only Grafana variables are ``$__rate_interval`` and ``$__interval``.
Series with an ``instance`` label come from the learner (job ``streamlearn``) and the read-only
replicas (job ``streamlearn-serve``) alike; learning metrics only exist on the learner.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "streamlearn.json"
DS = {"type": "prometheus", "uid": "prometheus"}
RI = "$__rate_interval"


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping into new lines."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.line_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "datasource": DS,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.line_h = max(self.line_h, h)

    def _newline(self) -> None:
        self.y += self.line_h
        self.x = 0
        self.line_h = 0


def target(expr: str, legend: str = "__auto", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True, **extra}


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries(
    title: str,
    tgts: list[dict[str, Any]],
    unit: str = "short",
    description: str = "",
    *,
    min_: float | None = None,
    max_: float | None = None,
    stack: bool = False,
    bars: bool = False,
    thresholds: list[tuple[str, float | None]] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 80 if bars else 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if thresholds else "off"},
        },
        "color": {"mode": "palette-classic"},
        "thresholds": _thresholds(thresholds),
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    tgts: list[dict[str, Any]],
    unit: str = "short",
    description: str = "",
    *,
    thresholds: list[tuple[str, float | None]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    text_mode: str = "auto",
    decimals: int | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": _thresholds(thresholds),
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    for t in tgts:
        t["instant"] = True
        t["range"] = False
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": text_mode,
        },
    }


def heatmap(title: str, expr: str, unit: str, description: str = "") -> dict[str, Any]:
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, "{{le}}", format="heatmap")],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "exponent": 0.5,
                "steps": 64,
                "fill": "dark-orange",
            },
            "yAxis": {"axisPlacement": "left", "unit": unit},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"show": True, "yHistogram": False},
            "legend": {"show": True},
        },
    }


def bargauge(
    title: str, tgts: list[dict[str, Any]], unit: str = "short", description: str = ""
) -> dict[str, Any]:
    for t in tgts:
        t["instant"] = True
        t["range"] = False
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "thresholds": _thresholds(None),
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "vertical",
            "displayMode": "basic",
            "showUnfilled": True,
        },
    }


def _thresholds(steps: list[tuple[str, float | None]] | None) -> dict[str, Any]:
    steps = steps or [("green", None)]
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.99)) -> list[tuple[str, str]]:
    """histogram_quantile lines for ``metric`` (no suffix), grouped by ``by`` labels."""
    group = f"{by}, le" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RI}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in qs
    ]


def mean(metric: str, by: str = "") -> tuple[str, str]:
    agg = f"sum by ({by}) " if by else "sum"
    prefix = "{{" + by + "}} " if by else ""
    return (f"{agg}(rate({metric}_sum[{RI}])) / {agg}(rate({metric}_count[{RI}]))", f"{prefix}mean")


def build() -> dict[str, Any]:
    L = Layout()
    up_map = [
        {
            "type": "value",
            "options": {"0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}},
        }
    ]
    ready_map = [
        {
            "type": "value",
            "options": {"0": {"text": "NOT READY", "color": "red"}, "1": {"text": "READY", "color": "green"}},
        }
    ]

    L.row("Overview")
    L.add(
        stat(
            "Targets up",
            targets(('up{job=~"streamlearn|streamlearn-serve"}', "{{job}} {{instance}}")),
            description="Prometheus scrape success of the learner (job streamlearn) and the replicas "
            "(job streamlearn-serve).",
            thresholds=[("red", None), ("green", 1)],
            mappings=up_map,
        ),
        w=5,
        h=4,
    )
    L.add(
        stat(
            "Ready",
            targets(("streamlearn_ready", "{{job}} {{instance}}")),
            description="/v2/health/ready: model restored (and, for the learner, Kafka partitions assigned).",
            thresholds=[("red", None), ("green", 1)],
            mappings=ready_map,
        ),
        w=5,
        h=4,
    )
    L.add(
        stat(
            "Build",
            targets(("streamlearn_build_info", "{{role}} {{version}} {{learner}}/{{model}}")),
            description="streamlearn_build_info: version, role (learner or replica), learner and model.",
            text_mode="name",
        ),
        w=6,
        h=4,
    )
    L.add(
        stat(
            "Prequential accuracy",
            targets(
                ("streamlearn_prequential_accuracy", "cumulative"),
                ("streamlearn_prequential_accuracy_rolling", "rolling"),
            ),
            unit="percentunit",
            thresholds=[("red", None), ("orange", 0.5), ("green", 0.7)],
            decimals=3,
        ),
        w=4,
        h=4,
    )
    L.add(
        stat(
            "Model version",
            targets(("streamlearn_model_version", "updates")),
            description="Updates applied to the learning model.",
        ),
        w=4,
        h=4,
    )

    L.row("Throughput")
    L.add(
        timeseries(
            "Examples per second",
            targets(
                (
                    f"sum by (instance) (rate(streamlearn_examples_consumed_total[{RI}]))",
                    "consumed {{instance}}",
                ),
                (
                    f"sum by (instance) (rate(streamlearn_examples_learned_total[{RI}]))",
                    "learned {{instance}}",
                ),
            ),
            unit="ops",
            description="Messages read from the topic and examples learned (each predicted first).",
        ),
        w=12,
        h=8,
    )
    L.add(
        timeseries(
            "Rejected messages by reason",
            targets((f"sum by (reason) (rate(streamlearn_examples_rejected_total[{RI}]))", "{{reason}}")),
            unit="ops",
            stack=True,
            description="Messages sent to the dead-letter topic per second, by reason code.",
        ),
        w=12,
        h=8,
    )

    L.row("Prequential evaluation")
    L.add(
        timeseries(
            "Prequential accuracy",
            targets(
                ("streamlearn_prequential_accuracy", "cumulative"),
                ("streamlearn_prequential_accuracy_rolling", "rolling (evaluation.window)"),
            ),
            unit="percentunit",
            min_=0,
            max_=1,
            description="Test-then-train accuracy: each example is predicted before it is learned.",
        ),
        w=12,
        h=8,
    )
    L.add(
        timeseries(
            "Prequential accuracy per task",
            targets(("streamlearn_prequential_task_accuracy", "task {{task}}")),
            unit="percentunit",
            min_=0,
            max_=1,
            description="Only messages that carry a `task` field.",
        ),
        w=12,
        h=8,
    )
    L.add(
        timeseries(
            "Prequential log-loss",
            targets(("streamlearn_prequential_loss", "log-loss")),
            description="Mean log-loss of the predictions made before learning, over the rolling window.",
        ),
        w=6,
        h=8,
    )
    L.add(
        timeseries(
            "Cohen's kappa",
            targets(("streamlearn_prequential_kappa", "kappa")),
            max_=1,
            description="Agreement of the prequential predictions with the labels beyond chance.",
        ),
        w=6,
        h=8,
    )
    L.add(
        timeseries(
            "Drift detections",
            targets(
                (f"increase(streamlearn_drift_detections_total[{RI}])", "detections"),
            ),
            bars=True,
            description="ADWIN drifts flagged on the prequential error stream.",
        ),
        w=6,
        h=8,
    )
    L.add(
        timeseries(
            "Training loss of the last update",
            targets(("streamlearn_update_loss", "loss")),
            description="What the learner reported for its latest update (batch + replay).",
        ),
        w=6,
        h=8,
    )

    L.row("Learner internals")
    L.add(
        timeseries(
            "Gradient alignment cosine",
            targets(
                ("streamlearn_gradient_alignment_cosine", "last probe"),
                *quantiles("streamlearn_gradient_alignment_cosine_distribution", qs=(0.1, 0.5, 0.9)),
            ),
            min_=-1,
            max_=1,
            description="Cosine between the incoming-batch gradient and a replay-sample gradient: the last "
            "probe and quantiles over the probes of each interval. Negative: learning the new data "
            "interferes with the old (what MER/La-MAML counteract).",
        ),
        w=8,
        h=8,
    )
    L.add(
        timeseries(
            "Gradient alignment dot product",
            targets(
                ("streamlearn_gradient_alignment_dot", "last probe"),
                *quantiles("streamlearn_gradient_alignment_dot_distribution", qs=(0.1, 0.5, 0.9)),
            ),
            # No mean from _sum/_count: prometheus_client exports no _sum for histograms with
            # negative buckets, which both alignment histograms have.
            description="The same probe as a dot product (scales with the gradients).",
        ),
        w=8,
        h=8,
    )
    L.add(
        heatmap(
            "Gradient alignment cosine distribution",
            f"sum by (le) (increase(streamlearn_gradient_alignment_cosine_distribution_bucket[{RI}]))",
            unit="short",
            description="Probes per cosine bucket (-1 .. 1) in each interval.",
        ),
        w=8,
        h=8,
    )
    L.add(
        timeseries(
            "Gradient alignment probes",
            targets(
                (f"sum(increase(streamlearn_gradient_alignment_cosine_distribution_count[{RI}]))", "cosine"),
                (f"sum(increase(streamlearn_gradient_alignment_dot_distribution_count[{RI}]))", "dot"),
            ),
            bars=True,
            description="Probes per interval (one every learner.alignment_every updates; 0 = off).",
        ),
        w=6,
        h=8,
    )
    L.add(
        timeseries(
            "La-MAML learning rates",
            targets(("streamlearn_learning_rate", "{{stat}}")),
            description="Effective per-parameter learning rates relu(alpha) of La-MAML/C-MAML; "
            "absent for other learners.",
        ),
        w=6,
        h=8,
    )
    L.add(
        timeseries(
            "Update duration",
            targets(
                *quantiles("streamlearn_update_duration_seconds"),
                mean("streamlearn_update_duration_seconds"),
            ),
            unit="s",
            description="Wall time of one learner update (predict + learn one micro-batch).",
        ),
        w=6,
        h=8,
    )
    L.add(
        timeseries(
            "Updates per second",
            targets((f"sum(rate(streamlearn_update_duration_seconds_count[{RI}]))", "updates/s")),
            unit="ops",
        ),
        w=6,
        h=8,
    )

    L.row("Replay buffer")
    L.add(
        timeseries(
            "Replay buffer fill",
            targets(
                ("streamlearn_replay_buffer_examples", "examples"),
                ("streamlearn_replay_buffer_capacity_examples", "capacity"),
            ),
            min_=0,
        ),
        w=8,
        h=8,
    )
    L.add(
        timeseries(
            "Replay buffer memory",
            targets(("streamlearn_replay_buffer_bytes", "bytes")),
            unit="bytes",
            min_=0,
        ),
        w=8,
        h=8,
    )
    L.add(
        bargauge(
            "Replay buffer by class",
            targets(("streamlearn_replay_buffer_class_examples", "{{class_label}}")),
            description="Examples per class label currently held in the reservoir.",
        ),
        w=8,
        h=8,
    )

    L.row("Kafka consumer")
    L.add(
        timeseries(
            "Consumer lag per partition",
            targets(("streamlearn_consumer_lag_messages", "{{topic}}/{{partition}}")),
            min_=0,
            description="High watermark minus the next offset to learn.",
        ),
        w=12,
        h=8,
    )
    L.add(
        timeseries(
            "Consumer offset per partition",
            targets(("streamlearn_consumer_offset", "{{topic}}/{{partition}}")),
            description="Next offset to learn (what the next checkpoint commits).",
        ),
        w=12,
        h=8,
    )
    L.add(
        timeseries(
            "Broker reachable / outages",
            targets(
                ("streamlearn_broker_up", "broker up {{instance}}"),
                (f"increase(streamlearn_broker_outages_total[{RI}])", "outages {{instance}}"),
            ),
            min_=0,
            description="1 while the Kafka cluster answers the learner's metadata probe (about once a "
            "second). While it is 0 the learner serves predictions but learns nothing, reports not "
            "ready, and defers offset commits; it reconnects by itself.",
        ),
        w=12,
        h=6,
    )
    L.add(
        timeseries(
            "Offset resets",
            targets(
                (
                    f"increase(streamlearn_offset_resets_total[{RI}])",
                    "{{topic}}/{{partition}} to {{policy}}",
                ),
            ),
            min_=0,
            description="Positions moved because they left the log (topic recreated, retention passed "
            "them) under kafka.offset_out_of_range earliest/latest: each reset skipped or re-read "
            "messages. No series until the first reset.",
        ),
        w=12,
        h=6,
    )

    L.row("Guardrails")
    L.add(
        timeseries(
            "Updates undone by the non-finite guard",
            targets(
                (f"increase(streamlearn_updates_undone_total[{RI}])", "undone {{instance}}"),
                (
                    f'increase(streamlearn_examples_rejected_total{{reason="non_finite_update"}}[{RI}])',
                    "messages dead-lettered {{instance}}",
                ),
            ),
            min_=0,
            description="Updates that would have left a non-finite value, or one beyond "
            "guard.max_abs_value, in the model or its replay memory: undone exactly, their messages "
            "dead-lettered with reason non_finite_update. A producer sending unscaled or corrupt "
            "features shows here first; alert UpdatesUndone.",
        ),
        w=12,
        h=6,
    )
    L.add(
        stat(
            "Examples the model has learned",
            targets(("streamlearn_model_examples_learned", "{{instance}}")),
            description="In the model's whole life, restored from its checkpoint (the "
            "examples_learned_total counter restarts at 0 with the process).",
        ),
        w=12,
        h=6,
    )

    L.add(
        timeseries(
            "Promotion gate held",
            targets(
                ("max by (instance, reason) (streamlearn_serving_held)", "held: {{reason}} {{instance}}"),
                ("streamlearn_learning_paused", "paused by an operator {{instance}}"),
            ),
            min_=0,
            description="1 while the gate holds the served model (the champion) back because the learning "
            "model (the challenger) is worse: reason paired (on the live stream) or golden (on the golden "
            "set: corrupted labels). The reason is also in /v2/models/{name} metadata. Alert ServingHeld.",
        ),
        w=8,
        h=6,
    )
    L.add(
        timeseries(
            "Champion vs challenger accuracy",
            targets(
                ("streamlearn_gate_accuracy", "{{model}} {{signal}} {{instance}}"),
            ),
            unit="percentunit",
            description="What the gate compares: paired = accuracy of both models on the examples "
            "since the last promotion (each predicted before the challenger learned it); golden = on "
            "the golden set at the last candidate (guard.golden).",
        ),
        w=8,
        h=6,
    )
    L.add(
        timeseries(
            "Promotions, rollbacks, quarantined examples",
            targets(
                (f"increase(streamlearn_promotions_total[{RI}])", "promotions {{instance}}"),
                (f"increase(streamlearn_rollbacks_total[{RI}])", "rollbacks {{instance}}"),
                (f"increase(streamlearn_examples_quarantined_total[{RI}])", "quarantined {{instance}}"),
            ),
            min_=0,
            description="A rollback resets the learner to the champion and copies the examples learned "
            "since to the quarantine topic (guard.quarantine_topic); replay them after review with "
            "streamlearn produce --from-topic. Alert GuardRollback.",
        ),
        w=8,
        h=6,
    )

    L.row("Checkpoints")
    L.add(
        timeseries(
            "Checkpoint age",
            targets(("streamlearn_checkpoint_age_seconds", "age")),
            unit="s",
            min_=0,
            thresholds=[("green", None), ("red", 900)],
            description="Seconds since the last durable checkpoint; alert NoRecentCheckpoint above 900 s.",
        ),
        w=6,
        h=8,
    )
    L.add(
        stat(
            "Last checkpoint",
            targets(("streamlearn_checkpoint_last_success_timestamp_seconds * 1000", "last success")),
            unit="dateTimeFromNow",
            description="Time of the last durable checkpoint of this process (1970 = none yet).",
        ),
        w=6,
        h=8,
    )
    L.add(
        timeseries(
            "Checkpoint duration",
            targets(
                *quantiles("streamlearn_checkpoint_duration_seconds"),
                mean("streamlearn_checkpoint_duration_seconds"),
            ),
            unit="s",
            description="Write + fsync + offset commit.",
        ),
        w=6,
        h=8,
    )
    L.add(
        timeseries(
            "Checkpoints written / failed",
            targets(
                (f"increase(streamlearn_checkpoints_written_total[{RI}])", "written"),
                (f"increase(streamlearn_checkpoint_failures_total[{RI}])", "failed"),
            ),
            bars=True,
        ),
        w=6,
        h=8,
    )

    L.row("Serving")
    L.add(
        timeseries(
            "Model version: learning vs published vs served",
            targets(
                ("streamlearn_model_version", "learning model"),
                ("streamlearn_snapshot_published_version", "published snapshot"),
                ("streamlearn_serving_model_version", "served by {{job}} {{instance}}"),
            ),
            description="Replicas serve the newest checkpoint, so they trail the learner by up to one "
            "checkpoint interval.",
        ),
        w=12,
        h=8,
    )
    L.add(
        timeseries(
            "Model reloads / server process restarts",
            targets(
                (
                    f"sum by (job, instance) (increase(streamlearn_serving_reloads_total[{RI}]))",
                    "reloads {{job}} {{instance}}",
                ),
                (
                    f"increase(streamlearn_serving_process_restarts_total[{RI}])",
                    "server restarts {{instance}}",
                ),
            ),
            bars=True,
            description="Snapshots loaded by each prediction server (checkpoint reloads on replicas), and "
            "restarts of the learner's prediction-server process after it died (OOM killer, crash).",
        ),
        w=12,
        h=8,
    )
    L.add(
        timeseries(
            "Requests by endpoint and code",
            targets(
                (
                    f"sum by (endpoint, code) (rate(streamlearn_prediction_requests_total[{RI}]))",
                    "{{endpoint}} {{code}}",
                )
            ),
            unit="reqps",
            stack=True,
        ),
        w=8,
        h=8,
    )
    L.add(
        timeseries(
            "Prediction latency by endpoint",
            targets(
                *quantiles("streamlearn_prediction_duration_seconds", by="endpoint"),
                mean("streamlearn_prediction_duration_seconds", by="endpoint"),
            ),
            unit="s",
            thresholds=[("green", None), ("red", 0.05)],
            description="p50/p99 from the histogram; alert PredictionLatencyHigh fires above 50 ms "
            "(predict, infer).",
        ),
        w=8,
        h=8,
    )
    L.add(
        timeseries(
            "Rows predicted per second",
            targets((f"sum by (job) (rate(streamlearn_prediction_rows_total[{RI}]))", "{{job}}")),
            unit="ops",
        ),
        w=8,
        h=8,
    )
    L.add(
        heatmap(
            "Prediction latency distribution",
            f"sum by (le) (increase(streamlearn_prediction_duration_seconds_bucket[{RI}]))",
            unit="s",
            description="All endpoints of all prediction servers.",
        ),
        w=24,
        h=8,
    )
    L.add(
        timeseries(
            "HTTP connections",
            targets(
                ("streamlearn_http_open_connections", "open {{instance}}"),
                (
                    f"increase(streamlearn_http_client_disconnects_total[{RI}])",
                    "client hang-ups {{instance}}",
                ),
                (
                    f"sum by (reason) (increase(streamlearn_http_connections_closed_total[{RI}]))",
                    "closed by server: {{reason}}",
                ),
            ),
            min_=0,
            description="Open connections (at most serve.max_connections); clients that hung up before "
            "their answer (normal, not logged); connections the server closed: evicted at the cap, "
            "refused (503), request_timeout (408, slowloris), idle_timeout. No 'closed' series until "
            "the first one.",
        ),
        w=24,
        h=6,
    )

    for i, p in enumerate(L.panels, start=1):
        p["id"] = i
    return {
        "uid": "streamlearn",
        "title": "streamlearn",
        "description": "Online continual learning: throughput, prequential accuracy, drift, gradient "
        "alignment, replay buffer, Kafka lag, checkpoints and serving.",
        "tags": ["streamlearn", "continual-learning"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "",
        "annotations": {"list": []},
        "templating": {"list": []},
        "links": [],
        "panels": L.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)

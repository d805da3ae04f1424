"""The live page's data: the ring buffer, the parsed learner metrics, GET /v2/status and GET /."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamlearn.delivery import Pending
from streamlearn.ingest.decode import Example
from streamlearn.ingest.labels import TaskMap
from streamlearn.metrics import LearnerMetrics, render
from streamlearn.serving.history import COLUMNS, SIZE, History
from streamlearn.serving.live_meta import page_meta
from streamlearn.serving.status import LiveStatus, parse_learner_metrics
from tests.serving.test_http import StaticSource, _start, _view


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_the_ring_buffer_keeps_the_newest_size_samples_in_fixed_memory() -> None:
    h = History(size=5)
    assert h.nbytes == 5 * len(COLUMNS) * 8
    for t in range(1, 13):
        h.append(float(t), {"accuracy": t / 100, "lag": None})
    assert len(h) == 5 and h.nbytes == 5 * len(COLUMNS) * 8
    got = h.since(0.0)
    assert got["t"] == [8.0, 9.0, 10.0, 11.0, 12.0]
    assert got["accuracy"] == [0.08, 0.09, 0.1, 0.11, 0.12]
    assert got["lag"] == [None] * 5  # missing values are null, not NaN (invalid JSON)
    assert h.since(10.0)["t"] == [11.0, 12.0]
    assert History().size == SIZE == 3600


def learner_text(labels: list[str]) -> bytes:
    """A learner's exposition as the daemon renders it."""
    reg = CollectorRegistry()
    prom = LearnerMetrics(reg)
    prom.consumed.inc(12)
    prom.rejected.labels(reason="not_json").inc(3)
    prom.accuracy.set(0.75)
    prom.accuracy_rolling.set(0.8)
    prom.task_accuracy.labels(task="0").set(0.5)
    prom.task_accuracy.labels(task="1").set(0.9)
    prom.drifts.inc(2)
    prom.learning_rate.labels(stat="mean").set(0.1)
    prom.model_learned.set(1234)
    for i, name in enumerate(labels):
        prom.buffer_class.labels(class_label=name).set(i + 1)
    prom.lag.labels(topic="t", partition="0").set(5)
    prom.lag.labels(topic="t", partition="1").set(7)
    prom.alignment_cos.set(0.25)
    return render(reg)


def test_the_learner_fields_are_parsed_from_its_exposition() -> None:
    p = parse_learner_metrics(learner_text(["cat", "dog"]))
    assert p.values["accuracy"] == 0.75 and p.values["rolling"] == 0.8
    assert p.values["learned"] == 1234 and p.values["drifts"] == 2 and p.values["consumed"] == 12
    assert p.labelled["tasks"] == {"0": 0.5, "1": 0.9}
    assert p.labelled["rejected"] == {"not_json": 3}
    assert p.labelled["buffer"] == {"cat": 1, "dog": 2}
    assert sum(p.labelled["lag"].values()) == 12


def test_status_names_tasks_orders_classes_and_marks_events() -> None:
    meta: dict[str, Any] = {
        "labels": ["dog", "cat"],
        "task_names": ["rot-a", "<b>rot-b</b>"],
        "task": "rot-a",
    }
    text = learner_text(["cat", "dog", "stale"])
    live = LiveStatus(lambda: text, lambda: meta, lambda: {"role": "learner"}, size=10)
    live.sample(100.0)
    meta["task"] = "<b>rot-b</b>"
    live.sample(101.0)
    doc = json.loads(live.document("/v2/status"))
    now = doc["now"]
    assert now["role"] == "learner" and now["learned"] == 1234 and now["lag"] == 12
    assert now["tasks"] == {"rot-a": 0.5, "<b>rot-b</b>": 0.9}  # names, as sent: escaping is the page's
    assert list(now["buffer"]) == ["dog", "cat"]  # the model's order; a stale label is left out
    assert now["lr"] == {"mean": 0.1}
    assert doc["series"]["t"] == [100.0, 101.0] and doc["series"]["rate"] == [None, 0.0]
    assert [e["text"] for e in doc["events"] if e["kind"] == "task"] == ["rot-a", "<b>rot-b</b>"]
    newer = json.loads(live.document("/v2/status?since=100.0"))
    assert newer["series"]["t"] == [101.0] and [e["t"] for e in newer["events"]] == [101.0]
    assert json.loads(live.document("/v2/status?since=nan"))["series"]["t"] == [100.0, 101.0]


def test_the_learned_rate_and_drift_events_follow_the_samples() -> None:
    values = {"learned": 100.0, "drifts": 0.0}

    def text() -> bytes:
        return (
            f"streamlearn_model_examples_learned {values['learned']}\n"
            f"streamlearn_drift_detections_total {values['drifts']}\n"
        ).encode()

    live = LiveStatus(text, dict, dict, size=10)
    live.sample(10.0)
    values.update(learned=150.0, drifts=1.0)
    live.sample(12.0)
    doc = json.loads(live.document("/v2/status"))
    assert doc["series"]["rate"] == [None, 25.0]
    assert [e["kind"] for e in doc["events"]] == ["drift"]


def test_the_published_meta_carries_the_task_and_one_recent_example() -> None:
    pending, tasks = Pending(), TaskMap()
    x = np.array([0.25, 0.5], dtype=np.float32)
    pending.examples.append(Example(x, 0, "<i>cat</i>", tasks.index("t-1"), None, None))
    pending.clear()  # learned: the example stays as the last one seen
    meta = page_meta(["<i>cat</i>"], "er", pending, tasks)
    assert meta["task"] == "t-1" and meta["task_names"] == ["t-1"]
    assert meta["example"] == {"x": [0.25, 0.5], "label": "<i>cat</i>", "task": "t-1"}
    assert len(json.dumps(page_meta(["a"], "er", Pending(), TaskMap()))) < 200


@pytest.mark.parametrize("path", ["/", "/v2/status"])
def test_the_page_and_its_data_are_public_even_with_a_token(path: str) -> None:
    view, _ = _view()
    _app, port = _start(StaticSource(view), auth_token="s3cret")
    status, _headers, body = get(port, path)
    assert status == 200, body
    if path == "/v2/status":
        doc = json.loads(body)
        assert doc["now"]["auth"] is True and doc["now"]["role"] == "replica"
        assert doc["now"]["n_inputs"] == 6 and doc["history_size"] == 3600


def test_the_page_is_one_self_contained_document_under_a_strict_policy() -> None:
    view, _ = _view()
    _app, port = _start(StaticSource(view))
    status, headers, body = get(port, "/")
    html = body.decode()
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    # nothing loaded from elsewhere: no src/href to another origin, no external script or style
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script src" not in html and "<link" not in html and "/*SCRIPT*/" not in html
    csp = headers["content-security-policy"]
    script = re.search(r"<script>(.*)</script>", html, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp  # only this script runs: no inline handlers
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    # producer strings reach the DOM through textContent only
    js = script.group(1)
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    head = get(port, "/")[1]
    assert head["cache-control"] == "no-cache"


def test_a_replica_status_has_no_learner_fields_and_the_served_version() -> None:
    view, _ = _view()
    app, port = _start(StaticSource(view))
    app.current()  # as a prediction would: the served version is the view's
    app.live.sample()
    doc = json.loads(get(port, "/v2/status")[2])
    now = doc["now"]
    assert now["served_version"] == 17 and now["ready"] is True
    assert now["accuracy"] is None and now["lr"] is None and doc["example"] is None
    assert now["learned"] is None  # StaticSource publishes examples_learned_total, not the model's count
    assert doc["series"]["served_version"] == [17.0]


def test_the_history_is_bounded_in_memory() -> None:
    live = LiveStatus(lambda: learner_text(["a"]), dict, dict, size=SIZE)
    for t in range(SIZE + 50):
        live.sample(float(t))
    assert len(live.history) == SIZE and live.history.nbytes == SIZE * len(COLUMNS) * 8
    assert len(json.loads(live.document("/v2/status?since=3640"))["series"]["t"]) == 9

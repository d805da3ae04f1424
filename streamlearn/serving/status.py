"""``GET /v2/status``: what the live page draws, from what the server process already has.

The learner publishes its Prometheus text and a small metadata dict into the shared snapshot once a
second (``live_meta.py``); a replica has its own registry and the checkpoint it loaded. A sampler
thread parses the fields the page needs once a second into a :class:`~.history.History` and notes
events (drift detections, task changes) in a bounded list; a request answers the newest values
(parsed again only when the learner published new text) and the samples newer than its ``since``
query parameter, so a page polling every second gets a few hundred bytes, not the hour.

>>> text = b'streamlearn_prequential_accuracy 0.5\\n'
>>> text += b'streamlearn_examples_rejected_total{reason="bad_json"} 2\\n'
>>> p = parse_learner_metrics(text)
>>> p.values["accuracy"], p.labelled["rejected"]
(0.5, {'bad_json': 2})
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.serving.history import SIZE, History

log = logging.getLogger(__name__)

#: seconds between samples (the page polls at this rate too)
INTERVAL_S = 1.0
#: events (drifts, task changes) kept; older ones fall off like the samples do
MAX_EVENTS = 500

#: sample name in the learner's exposition -> the page's name for it
VALUES = {
    "streamlearn_prequential_accuracy": "accuracy",
    "streamlearn_prequential_accuracy_rolling": "rolling",
    "streamlearn_prequential_kappa": "kappa",
    "streamlearn_prequential_loss": "loss",
    "streamlearn_model_examples_learned": "learned",
    "streamlearn_gradient_alignment_cosine": "cosine",
    "streamlearn_model_version": "model_version",
    "streamlearn_snapshot_published_version": "published_version",
    "streamlearn_checkpoint_age_seconds": "checkpoint_age",
    "streamlearn_broker_up": "broker_up",
    "streamlearn_drift_detections_total": "drifts",
    "streamlearn_replay_buffer_examples": "buffer_examples",
    "streamlearn_replay_buffer_capacity_examples": "buffer_capacity",
    "streamlearn_examples_consumed_total": "consumed",
}
#: labelled samples: sample name -> (the page's name, the label that names each value)
LABELLED = {
    "streamlearn_prequential_task_accuracy": ("tasks", "task"),
    "streamlearn_replay_buffer_class_examples": ("buffer", "class_label"),
    "streamlearn_examples_rejected_total": ("rejected", "reason"),
    "streamlearn_learning_rate": ("lr", "stat"),
    "streamlearn_consumer_lag_messages": ("lag", "partition"),
}
_PREFIXES = tuple(VALUES) + tuple(LABELLED)


@dataclass
class Parsed:
    """The page's fields of one exposition: plain values and labelled ones (label value -> value)."""

    values: dict[str, float] = field(default_factory=dict)
    labelled: dict[str, dict[str, float]] = field(default_factory=dict)


def parse_learner_metrics(text: bytes) -> Parsed:
    """The fields the page shows, from the learner's exposition text (other lines are skipped
    before parsing: the histograms' buckets are most of the text)."""
    lines = [ln for ln in text.decode("utf-8", "replace").splitlines() if ln.startswith(_PREFIXES)]
    out = Parsed()
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for s in family.samples:
            if s.name in VALUES:
                out.values[VALUES[s.name]] = s.value
            elif s.name in LABELLED:
                name, label = LABELLED[s.name]
                key = s.labels.get(label, "")
                if name == "lag":  # one gauge per topic/partition: the page shows their sum
                    key = s.labels.get("topic", "") + "/" + key
                out.labelled.setdefault(name, {})[key] = s.value
    return out


def _task_name(index: str, names: list[str]) -> str:
    """A task's name from its index (the metrics label); the index itself for integer task ids."""
    i = int(index) if index.isdigit() else -1
    return names[i] if 0 <= i < len(names) else index


def _finite(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) or math.isinf(v) else v


class LiveStatus:
    """The sampler and the status document of one server.

    ``metrics_text`` and ``meta`` read what the model source has (the learner's exposition and
    published metadata; ``b""`` and ``{}`` on a replica); ``extra`` adds the server's own facts
    (role, ready state, served version) to every sample. :meth:`start` runs the sampler thread;
    without it (tests) a request still answers the current values.
    """

    def __init__(
        self,
        metrics_text: Callable[[], bytes],
        meta: Callable[[], dict[str, Any]],
        extra: Callable[[], dict[str, Any]],
        *,
        size: int = SIZE,
    ) -> None:
        self._metrics_text = metrics_text
        self._meta = meta
        self._extra = extra
        self.history = History(size)
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._lock = threading.Lock()
        self._text: bytes | None = None
        self._parsed = Parsed()
        self._last: tuple[float, float, float, str | None] | None = None  # t, learned, drifts, task
        self._stop = threading.Event()

    # -- sampling -----------------------------------------------------------------------------
    def current(self) -> dict[str, Any]:
        """The newest values: the learner's (parsed again only if its text changed) and ours."""
        text = self._metrics_text()
        with self._lock:
            if text != self._text:
                self._parsed = parse_learner_metrics(text) if text else Parsed()
                self._text = text
            parsed = self._parsed
        meta = self._meta()
        # every field, null when this server does not have it (a replica has no learner metrics)
        now: dict[str, Any] = {k: _finite(parsed.values.get(k)) for k in VALUES.values()}
        labelled = parsed.labelled
        for name in ("tasks", "buffer", "rejected"):
            now[name] = labelled.get(name, {})
        labels = meta.get("labels")
        if labels:  # the label names in model order (a class named before its label was known is stale)
            now["buffer"] = {k: now["buffer"][k] for k in labels if k in now["buffer"]}
        task_names = meta.get("task_names") or []
        now["tasks"] = {_task_name(k, task_names): v for k, v in now["tasks"].items()}
        lr = labelled.get("lr")
        now["lr"] = {k: _finite(v) for k, v in lr.items()} if lr else None
        lag = labelled.get("lag")
        now["lag"] = sum(lag.values()) if lag else None
        now["task"] = meta.get("task")
        now.update(self._extra())
        for key in ("learned", "checkpoint_age"):  # a replica's, from the checkpoint it serves
            if now.get(key) is None and meta.get(key) is not None:
                now[key] = meta[key]
        return {"now": now, "example": meta.get("example"), "labels": meta.get("labels") or []}

    def sample(self, t: float | None = None) -> None:
        """Take one sample (the sampler thread calls this every ``INTERVAL_S``)."""
        t = time.time() if t is None else t
        cur = self.current()["now"]
        learned, drifts, task = cur.get("learned"), cur.get("drifts"), cur.get("task")
        rate = None
        last = self._last
        if last is not None and learned is not None and learned >= last[1] and t > last[0]:
            rate = (learned - last[1]) / (t - last[0])
        if last is not None and drifts is not None and drifts > last[2]:
            self.events.append({"t": t, "kind": "drift", "text": f"drift #{int(drifts)}"})
        if task is not None and (last is None or task != last[3]):
            self.events.append({"t": t, "kind": "task", "text": str(task)})
        self._last = (t, learned if learned is not None else math.nan, drifts or 0.0, task)
        lr = cur.get("lr") or {}
        self.history.append(
            t,
            {
                "accuracy": cur.get("accuracy"),
                "rolling": cur.get("rolling"),
                "learned": learned,
                "rate": rate,
                "lag": cur.get("lag"),
                "cosine": cur.get("cosine"),
                "lr_mean": lr.get("mean"),
                "lr_min": lr.get("min"),
                "lr_max": lr.get("max"),
                "model_version": cur.get("model_version"),
                "published_version": cur.get("published_version"),
                "served_version": cur.get("served_version"),
                "loss": cur.get("loss"),
            },
        )

    def start(self) -> threading.Thread:
        """Sample every ``INTERVAL_S`` on a daemon thread until :meth:`stop`."""

        def run() -> None:
            while not self._stop.wait(INTERVAL_S - time.time() % INTERVAL_S):
                try:
                    self.sample()
                except Exception:  # a bad exposition must not end the page's history
                    log.exception("live status sample failed")

        thread = threading.Thread(target=run, name="live-status", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    # -- the document -------------------------------------------------------------------------
    def document(self, path: str) -> bytes:
        """The status JSON for ``GET /v2/status[?since=<t>]``: settings, newest values, and the
        samples and events newer than ``since`` (all of them without it)."""
        query = parse_qs(urlsplit(path).query)
        try:
            since = float(query.get("since", ["0"])[0])
        except ValueError:
            since = 0.0
        if math.isnan(since):
            since = 0.0
        doc = self.current()
        doc.update(
            time=time.time(),
            interval_s=INTERVAL_S,
            history_size=self.history.size,
            series=self.history.since(since),
            events=[e for e in list(self.events) if e["t"] > since],
        )
        return orjson.dumps(doc)

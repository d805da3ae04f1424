"""The learning model's whole state, and the checkpoint dict the daemon writes and restores.

One checkpoint is one dict (as nanoGPT's): the learner (model, optimiser, learned rates, replay
buffer), the label and task maps, the prequential metric state, the model-lifetime counts, the
process RNG states, the promotion gate's champion and journal (``guard``, empty with the gate off)
and the next offset of every partition. ``format`` and the keys below are a
file format: a checkpoint written by an earlier version must still load.

>>> sorted(CHECKPOINT_KEYS)  # doctest: +NORMALIZE_WHITESPACE
['config_fingerprint', 'counters', 'created', 'format', 'guard', 'labels', 'learner',
 'metrics', 'offsets', 'rng', 'tasks', 'version']
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import numpy as np
import torch

from streamlearn import __version__
from streamlearn.config import Config
from streamlearn.errors import ConfigError
from streamlearn.evaluation.prequential import PrequentialMetrics
from streamlearn.guard.guardrails import Guardrails
from streamlearn.ingest.labels import LabelMap, TaskMap
from streamlearn.learners import Learner, build_model, make_learner
from streamlearn.metrics import LearnerMetrics, counter_value, counter_values

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = frozenset(
    {
        "format",
        "version",
        "created",
        "config_fingerprint",
        "learner",
        "labels",
        "tasks",
        "metrics",
        "offsets",
        "counters",
        "rng",
        "guard",
    }
)


def build_learner(cfg: Config) -> Learner:
    model = build_model(
        cfg.model.kind,
        cfg.model.n_inputs,
        cfg.model.n_classes,
        tuple(cfg.model.hidden),
        seed=cfg.learner.seed,
    )
    try:
        learner = make_learner(
            cfg.learner.name,
            model,
            n_classes=cfg.model.n_classes,
            device=cfg.learner.device,
            seed=cfg.learner.seed,
            alignment_every=cfg.learner.alignment_every,
            **cfg.learner.hparams,
        )
    except ConfigError as exc:
        raise ConfigError(str(exc), source=cfg.source) from None
    learner.max_abs_value = cfg.guard.max_abs_value
    return learner


def process_rng_state() -> dict[str, Any]:
    """Python, numpy and torch global RNG states, as plain lists (the checkpoint is loaded with
    ``weights_only``)."""
    py = random.getstate()
    np_state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, cached = np_state
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }


def restore_process_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


class LifetimeCounts:
    """Messages consumed and rejected over the model's whole life, counted once.

    Each event is recorded by one call, on its Prometheus counter (``prom.consumed.inc()``,
    ``prom.rejected.labels(reason=...).inc()``). A Prometheus counter restarts at 0 with the
    process, as it should; the lifetime total is what the restored checkpoint had counted plus
    what this process's counter reads. (Examples learned are the learner's own ``examples``.)
    """

    def __init__(self, prom: LearnerMetrics) -> None:
        self._prom = prom
        self._consumed_before = 0
        self._rejected_before: Counter[str] = Counter()

    @property
    def consumed(self) -> int:
        return self._consumed_before + int(counter_value(self._prom.consumed))

    @property
    def rejected(self) -> Counter[str]:
        """Rejections by reason code."""
        now = Counter({reason: int(n) for reason, n in counter_values(self._prom.rejected, "reason").items()})
        return self._rejected_before + now

    def state_dict(self, learned: int) -> dict[str, Any]:
        return {"consumed": self.consumed, "learned": learned, "rejected": dict(self.rejected)}

    def load_state_dict(self, counters: dict[str, Any]) -> None:
        """Restore before this process counts anything (the counters must still read 0)."""
        self._consumed_before = int(counters["consumed"])
        self._rejected_before = Counter({k: int(v) for k, v in counters["rejected"].items()})


class ModelState:
    """The learner and everything that travels with it in a checkpoint, except the offsets."""

    def __init__(self, cfg: Config, prom: LearnerMetrics) -> None:
        self.cfg = cfg
        self.learner = build_learner(cfg)
        self.labels = LabelMap(cfg.model.n_classes)
        self.tasks = TaskMap()
        self.prequential = PrequentialMetrics(
            cfg.model.n_classes, window=cfg.evaluation.window, drift_delta=cfg.evaluation.drift_delta
        )
        self.counts = LifetimeCounts(prom)
        self.guard = Guardrails(cfg.guard, self.learner, self.prequential, lambda: build_learner(cfg))

    def state_dict(self, offsets: dict[str, int]) -> dict[str, Any]:
        """The checkpoint dict; ``offsets`` maps ``topic:partition`` to the next offset to read."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "created": time.time(),
            "config_fingerprint": self.cfg.fingerprint(),
            "learner": self.learner.state_dict(),
            "labels": self.labels.state_dict(),
            "tasks": self.tasks.state_dict(),
            "metrics": {"state": self.prequential.state_dict(), "summary": self.prequential.snapshot()},
            "offsets": dict(offsets),
            "counters": self.counts.state_dict(self.learner.examples),
            "rng": process_rng_state(),
            "guard": self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> dict[str, int]:
        """Restore a checkpoint dict (process RNGs included); returns its offsets."""
        self.learner.load_state_dict(state["learner"])
        self.labels.load_state_dict(state["labels"])
        self.tasks.load_state_dict(state["tasks"])
        self.prequential.load_state_dict(state["metrics"]["state"])
        self.counts.load_state_dict(state["counters"])
        restore_process_rng_state(state["rng"])
        self.guard.load_state_dict(state.get("guard", {}))  # absent before the gate existed
        return {k: int(v) for k, v in state["offsets"].items()}

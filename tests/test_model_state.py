"""The checkpoint dict the daemon writes: its format stays loadable, lifetime counts survive restarts."""

from __future__ import annotations

from pathlib import Path

import torch
from prometheus_client import CollectorRegistry

from streamlearn import checkpoint
from streamlearn.config import Config, load_config_dict
from streamlearn.metrics import LearnerMetrics
from streamlearn.model_state import CHECKPOINT_KEYS, LifetimeCounts, ModelState

# Written by streamlearn before the daemon's state moved to model_state.py (same config as below):
# 6 examples learned, 9 consumed, rejected {"bad_x": 2, "not_json": 1}, no offsets.
FORMAT_1 = Path(__file__).parent / "data" / "checkpoint-format1-er.slc"


def small_config() -> Config:
    return load_config_dict(
        {
            "model": {"n_inputs": 4, "n_classes": 3, "hidden": [5]},
            "learner": {"name": "er", "hparams": {"memories": 8}},
        },
        "test",
    )


def test_a_checkpoint_written_by_the_earlier_daemon_still_loads() -> None:
    state = checkpoint.read(FORMAT_1)
    assert set(state) == CHECKPOINT_KEYS - {"guard"}  # written before the promotion gate existed
    model = ModelState(small_config(), LearnerMetrics(CollectorRegistry()))
    assert model.load_state_dict(state) == {}
    assert model.learner.examples == 6
    assert model.counts.consumed == 9
    assert model.counts.rejected == {"bad_x": 2, "not_json": 1}
    again = model.state_dict({"t:0": 15})
    assert set(again) == CHECKPOINT_KEYS
    assert again["counters"] == {"consumed": 9, "learned": 6, "rejected": {"bad_x": 2, "not_json": 1}}
    assert again["offsets"] == {"t:0": 15}
    for name, tensor in state["learner"]["model"].items():
        assert torch.equal(again["learner"]["model"][name], tensor), name


def test_lifetime_counts_are_the_checkpoints_plus_this_process_counters() -> None:
    reg = CollectorRegistry()
    prom = LearnerMetrics(reg)
    counts = LifetimeCounts(prom)
    counts.load_state_dict({"consumed": 100, "learned": 90, "rejected": {"bad_x": 4}})
    prom.consumed.inc(3)
    prom.rejected.labels(reason="bad_x").inc()
    prom.rejected.labels(reason="not_json").inc()
    assert counts.consumed == 103
    assert counts.rejected == {"bad_x": 5, "not_json": 1}
    # the per-process counters stay per process: Prometheus counters restart at 0
    assert reg.get_sample_value("streamlearn_examples_consumed_total") == 3
    assert counts.state_dict(learned=95) == {
        "consumed": 103,
        "learned": 95,
        "rejected": {"bad_x": 5, "not_json": 1},
    }


def test_a_restored_model_continues_the_same_counts() -> None:
    cfg = small_config()
    first_prom = LearnerMetrics(CollectorRegistry())
    first = ModelState(cfg, first_prom)
    first.learner.learn(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), task=0)
    first_prom.consumed.inc(7)
    first_prom.rejected.labels(reason="bad_x").inc()
    second_prom = LearnerMetrics(CollectorRegistry())
    second = ModelState(cfg, second_prom)
    second.load_state_dict(first.state_dict({}))
    second_prom.consumed.inc(2)
    assert second.learner.examples == 6
    assert second.counts.consumed == 9
    assert second.counts.rejected == {"bad_x": 1}

"""The human/JSON summary of a checkpoint that ``streamlearn checkpoint inspect`` prints."""

from __future__ import annotations

import time
from typing import Any


def describe(state: dict[str, Any]) -> dict[str, Any]:
    learner = state.get("learner", {})
    model = learner.get("model", {})
    buffer = learner.get("buffer")
    return {
        "format": state.get("format"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.get("created", 0))),
        "config_fingerprint": state.get("config_fingerprint"),
        "learner": learner.get("learner"),
        "hparams": learner.get("hparams"),
        "updates": learner.get("updates"),
        "examples_learned": learner.get("examples"),
        "model_parameters": {k: list(v.shape) for k, v in model.items()},
        "replay_buffer": None
        if buffer is None
        else {"capacity": buffer["capacity"], "size": int(buffer["x"].shape[0]), "seen": buffer["seen"]},
        "labels": state.get("labels"),
        "offsets": state.get("offsets"),
        "counters": state.get("counters"),
        "metrics": (state.get("metrics") or {}).get("summary"),
    }

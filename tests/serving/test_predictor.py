"""Model views built from a flat snapshot predict exactly what the learning model predicts."""

from __future__ import annotations

import numpy as np
import torch

from streamlearn.config import ModelConfig
from streamlearn.learners import build_model
from streamlearn.serving.predictor import Predictor, param_arrays


def _flat(model: torch.nn.Module) -> np.ndarray:
    return np.concatenate([a.reshape(-1) for a in param_arrays(model)]).astype(np.float32)


def _torch_probs(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


def test_mlp_and_cnn_views_match_the_source_model() -> None:
    rng = np.random.default_rng(0)
    for cfg in (ModelConfig(kind="mlp", n_inputs=784, n_classes=10), ModelConfig(kind="cnn", n_inputs=784)):
        source = build_model(cfg.kind, cfg.n_inputs, cfg.n_classes, tuple(cfg.hidden), seed=7)
        p = Predictor(cfg)
        view = p.load_flat(_flat(source), version=5, labels=[str(i) for i in range(10)])
        x = rng.random((3, 784), dtype=np.float32)
        np.testing.assert_allclose(view.predict_proba(x), _torch_probs(source, x), rtol=1e-5, atol=1e-6)
        assert p.version == 5


def test_a_taken_view_is_unaffected_by_a_newer_load() -> None:
    cfg = ModelConfig(n_inputs=6, n_classes=3, hidden=[5])
    a = build_model("mlp", 6, 3, (5,), seed=1)
    b = build_model("mlp", 6, 3, (5,), seed=2)
    p = Predictor(cfg)
    x = np.ones((1, 6), dtype=np.float32)
    old = p.load_flat(_flat(a), 1, ["a", "b", "c"])
    before = old.predict_proba(x).copy()
    p.load_flat(_flat(b), 2, ["a", "b", "c"])
    np.testing.assert_array_equal(old.predict_proba(x), before)  # a request in flight keeps its model
    np.testing.assert_allclose(p.view.predict_proba(x), _torch_probs(b, x), rtol=1e-5)  # type: ignore[union-attr]
    assert not np.allclose(before, p.view.predict_proba(x))  # type: ignore[union-attr]


def test_load_state_from_a_checkpoint_dict() -> None:
    cfg = ModelConfig(n_inputs=6, n_classes=3, hidden=[5])
    m = build_model("mlp", 6, 3, (5,), seed=3)
    p = Predictor(cfg)
    view = p.load_state(m.state_dict(), 9, ["x", "y", "z"])
    x = np.full((2, 6), 0.5, dtype=np.float32)
    np.testing.assert_allclose(view.predict_proba(x), _torch_probs(m, x), rtol=1e-5)
    assert view.version == 9 and view.labels == ("x", "y", "z")

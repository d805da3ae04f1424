"""Predictions from a parameter snapshot: the model is rebuilt from config, never unpickled.

A :class:`Predictor` holds one immutable :class:`ModelView` at a time: its own copy of the
parameters, a version and the label names. ``load_flat`` builds a new view and swaps the reference
in one assignment, so a request that took a view keeps predicting with a consistent model while
a newer one is being loaded, and request threads never take a lock.

Linear/ReLU MLPs predict with the numpy kernel (a fraction of torch's per-call cost); any other
module goes through ``torch.func.functional_call`` with the snapshot's tensors, so the template
module is never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from streamlearn.config import ModelConfig
from streamlearn.learners import build_model
from streamlearn.learners.kernels import NumpyMLP


def flat_size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_arrays(model: nn.Module) -> list[np.ndarray]:
    """The model's parameters as CPU numpy arrays, in ``parameters()`` order (views when on CPU)."""
    return [p.detach().cpu().numpy() for p in model.parameters()]


@dataclass(frozen=True)
class ModelView:
    version: int
    labels: tuple[str, ...]
    predict_proba: Callable[[np.ndarray], np.ndarray]
    #: every weight finite: a model that is not cannot answer, and the server must say so rather
    #: than blame the caller's features (the learner's guard keeps this true; this is the backstop)
    finite: bool = True


class Predictor:
    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.template = build_model(cfg.kind, cfg.n_inputs, cfg.n_classes, tuple(cfg.hidden))
        self.template.eval()
        self._names = [n for n, _ in self.template.named_parameters()]
        self._shapes = [tuple(p.shape) for p in self.template.parameters()]
        self.n_params = flat_size(self.template)
        self._buffers = dict(self.template.named_buffers())
        # Linear/ReLU MLPs: parameters alternate weight, bias, which is the numpy kernel's layout.
        self._is_mlp = NumpyMLP.from_module(self.template) is not None
        self.view: ModelView | None = None

    @property
    def version(self) -> int:
        return -1 if self.view is None else self.view.version

    def _split(self, flat: np.ndarray) -> list[np.ndarray]:
        out, i = [], 0
        for shape in self._shapes:
            n = int(np.prod(shape))
            out.append(flat[i : i + n].reshape(shape))
            i += n
        return out

    def load_flat(self, flat: np.ndarray, version: int, labels: Sequence[str]) -> ModelView:
        """Make ``flat`` (owned by the caller: it is not copied) the served model."""
        if flat.shape != (self.n_params,):
            raise ValueError(f"snapshot has {flat.shape} parameters, the model {self.n_params}")
        arrays = self._split(flat)
        predict: Callable[[np.ndarray], np.ndarray]
        if self._is_mlp:
            predict = NumpyMLP(Ws=arrays[0::2], bs=arrays[1::2]).predict_proba
        else:
            params = {n: torch.from_numpy(a) for n, a in zip(self._names, arrays, strict=True)}
            params.update(self._buffers)
            template = self.template

            def predict(x: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    logits = functional_call(template, params, (torch.from_numpy(x),))
                    return torch.softmax(logits, dim=1).numpy()

        finite = bool(np.isfinite(flat).all())
        view = ModelView(version=version, labels=tuple(labels), predict_proba=predict, finite=finite)
        self.view = view  # one reference assignment: readers see the old or the new view
        return view

    def load_state(
        self, model_state: dict[str, torch.Tensor], version: int, labels: Sequence[str]
    ) -> ModelView:
        """From a checkpoint's ``learner.model`` state dict (read-only replicas)."""
        flat = np.concatenate(
            [model_state[n].detach().cpu().numpy().astype(np.float32).reshape(-1) for n in self._names]
        )
        return self.load_flat(flat, version, labels)

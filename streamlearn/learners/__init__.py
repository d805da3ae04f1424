"""Learners behind one contract (see ``base.Learner``): the daemon never knows which one it drives.

>>> from streamlearn.learners import make_learner, mlp
>>> learner = make_learner("mer", mlp(4, 3, hidden=(8,)), n_classes=3, memories=5)
>>> learner.name, learner.default_batch_size
('mer', 1)
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any

from torch import nn

from streamlearn import typecheck
from streamlearn.errors import ConfigError
from streamlearn.learners.base import Learner, UpdateStats
from streamlearn.learners.er import ER
from streamlearn.learners.lamaml import CMAML, LaMAML
from streamlearn.learners.mer import MER
from streamlearn.learners.nets import build_model, mlp, small_cnn
from streamlearn.learners.sgd import SGD

LEARNERS: dict[str, type[Learner]] = {cls.name: cls for cls in (SGD, ER, MER, LaMAML, CMAML)}


_NOT_HPARAMS = {"self", "model", "n_classes"}


def hparam_types(name: str, *, include_extras: bool = False) -> dict[str, Any]:
    """The keyword arguments of a learner and their annotated types (the config maps 1:1 onto them);
    ``include_extras`` keeps the limits (``Annotated[float, Range(0, low_open=True)]``)."""
    cls = LEARNERS[name]
    hints = typing.get_type_hints(cls.__init__, include_extras=include_extras)
    params = inspect.signature(cls.__init__).parameters
    return {k: hints.get(k, Any) for k in params if k not in _NOT_HPARAMS}


def validate_hparams(
    name: str, hparams: dict[str, Any], *, source: str | None = None, prefix: str = ""
) -> None:
    """Raise ConfigError naming the key for an unknown learner or hyper-parameter, a wrong type,
    a value outside the limits the signature declares, or a float that is not finite."""
    if name not in LEARNERS:
        raise ConfigError(
            f"unknown learner {name!r}; expected one of {sorted(LEARNERS)}",
            source=source,
            key="learner.name" if prefix else "learner",
        )
    types = hparam_types(name, include_extras=True)
    for key, value in hparams.items():
        if key not in types:
            raise ConfigError(
                f"unknown hyper-parameter for learner {name!r}; expected one of {sorted(types)}",
                source=source,
                key=prefix + key,
            )
        try:
            typecheck.check(value, types[key], prefix + key)
        except typecheck.Mismatch as exc:
            raise ConfigError(exc.message, source=source, key=exc.key) from None
        if isinstance(value, float) and not math.isfinite(value):  # nan passes "lr: float" unlimited
            raise ConfigError(f"expected a finite number, got {value}", source=source, key=prefix + key)


def make_learner(name: str, model: nn.Module, *, n_classes: int, **hparams: Any) -> Learner:
    """Build a learner by name; unknown names, unknown or mistyped hyper-parameters are errors."""
    validate_hparams(name, hparams)
    return LEARNERS[name](model, n_classes=n_classes, **hparams)


__all__ = [
    "CMAML",
    "ER",
    "LEARNERS",
    "MER",
    "SGD",
    "LaMAML",
    "Learner",
    "UpdateStats",
    "build_model",
    "hparam_types",
    "make_learner",
    "mlp",
    "small_cnn",
]

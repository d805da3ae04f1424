"""Checks a field's own annotation cannot make: a token's strength, settings that must agree with
each other, and the learner's hyper-parameters (whose types and limits are the learner's signature).

The hyper-parameters are checked last: knowing the learners means importing them, and with them
torch (seconds), so every other mistake in a config is reported without that wait.
"""

from __future__ import annotations

from streamlearn.config.kafka_security import check_security
from streamlearn.config.schema import Config, LearnerConfig
from streamlearn.errors import ConfigError

#: Set in the learner section itself: the daemon passes them to the learner and records them.
_LEARNER_KEYS = ("device", "seed", "alignment_every")
#: A bearer token shorter than this is guessable; "" would turn auth on with a token anyone sends.
MIN_TOKEN_CHARS = 8


def check_rules(cfg: Config) -> None:
    """Raise ConfigError (naming ``cfg.source`` and the key) for the first rule ``cfg`` breaks."""
    check_auth_token(cfg.serve.auth_token, cfg.source)
    check_security(cfg.kafka, source=cfg.source)
    check_hparams(cfg.learner, cfg.source)


def check_auth_token(token: str | None, source: str) -> None:
    if token is not None and (len(token) < MIN_TOKEN_CHARS or token != token.strip()):
        raise ConfigError(
            f"expected null (no auth) or a token of at least {MIN_TOKEN_CHARS} characters "
            "without surrounding spaces",
            source=source,
            key="serve.auth_token",
        )


def check_hparams(learner: LearnerConfig, source: str) -> None:
    for key in _LEARNER_KEYS:
        if key in learner.hparams:
            raise ConfigError(f"set learner.{key} instead", source=source, key=f"learner.hparams.{key}")
    from streamlearn.learners import validate_hparams  # here, last: it imports torch

    validate_hparams(learner.name, learner.hparams, source=source, prefix="learner.hparams.")

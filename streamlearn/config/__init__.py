"""Configuration: YAML mapped onto typed dataclasses, validated on load.

* ``schema``: the sections and keys, each with its type, default and limits beside it;
* ``safe_yaml``: reading a file safely and within bounds (size, depth, aliases, tags);
* ``loading``: file < environment < ``--set`` precedence, then the checks;
* ``rules``: what one field's annotation cannot say (token strength, Kafka security settings that
  must agree, the learner's hyper-parameters, checked against its signature last).

Every error names the file, the key path and the expected type — an operator fixes it without
reading code:

>>> load_config_dict({"kafka": {"topic": 5}}, source="demo.yaml")
Traceback (most recent call last):
...
streamlearn.errors.ConfigError: demo.yaml: kafka.topic: expected str, got int 5
>>> load_config_dict({"kafka": {"poll_timeout_ms": -1}}, source="demo.yaml")
Traceback (most recent call last):
...
streamlearn.errors.ConfigError: demo.yaml: kafka.poll_timeout_ms: expected an integer in 0..2147483647, got -1
"""

from streamlearn.config.loading import ENV_PREFIX, load_config, load_config_dict
from streamlearn.config.safe_yaml import MAX_DEPTH, MAX_FILE_BYTES, MAX_INT_BITS, MAX_VALUES
from streamlearn.config.schema import (
    CheckpointConfig,
    Config,
    EvaluationConfig,
    FleetConfig,
    GuardConfig,
    KafkaConfig,
    LearnerConfig,
    ModelConfig,
    RuntimeConfig,
    ServeConfig,
)

__all__ = [
    "ENV_PREFIX",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_INT_BITS",
    "MAX_VALUES",
    "CheckpointConfig",
    "Config",
    "EvaluationConfig",
    "FleetConfig",
    "GuardConfig",
    "KafkaConfig",
    "LearnerConfig",
    "ModelConfig",
    "RuntimeConfig",
    "ServeConfig",
    "load_config",
    "load_config_dict",
]

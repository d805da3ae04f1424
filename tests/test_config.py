import pytest

from streamlearn.config import Config, load_config, load_config_dict
from streamlearn.errors import ConfigError


@pytest.mark.parametrize("name", ["mer", "lamaml"])
def test_shipped_configs_load(name) -> None:
    cfg = load_config(f"configs/{name}.yaml", environ={})
    assert cfg.learner.name == name
    assert cfg.model.n_inputs == 784


def test_defaults_without_a_file() -> None:
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.kafka.bootstrap_servers == "embedded"


@pytest.mark.parametrize(
    "yaml_text,match",
    [
        ("kafka:\n  topik: x\n", r"cfg\.yaml: kafka\.topik: unknown key; expected one of .*topic"),
        ("kafka:\n  topic: 5\n", r"cfg\.yaml: kafka\.topic: expected str, got int 5"),
        ("model:\n  n_inputs: many\n", r"model\.n_inputs: expected int, got str 'many'"),
        ("model:\n  n_inputs: true\n", r"model\.n_inputs: expected int, got bool"),
        ("model:\n  hidden: [100, x]\n", r"model\.hidden\[1\]: expected int"),
        ("learner: 3\n", r"learner: expected mapping"),
        ("learner:\n  name: gem\n", r"learner\.name: unknown learner .gem."),
        ("learner:\n  hparams:\n    betta: 0.1\n", r"learner\.hparams\.betta: unknown hyper-parameter"),
        ("learner:\n  hparams:\n    lr: fast\n", r"cfg\.yaml: learner\.hparams\.lr: expected float"),
        (
            "kafka:\n  auto_offset_reset: middle\n",
            r"kafka\.auto_offset_reset: expected one of earliest, latest",
        ),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("kafka: [\n", r"not valid YAML"),
        ("checkpoint:\n  keep: 0\n", r"checkpoint\.keep: expected a positive integer"),
    ],
)
def test_bad_config_names_file_key_and_expected_type(tmp_path, yaml_text, match) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, environ={})


def test_env_and_flag_overrides_in_that_order(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  topic: from-file\nlearner:\n  seed: 1\n")
    env = {"STREAMLEARN__KAFKA__TOPIC": "from-env", "STREAMLEARN__LEARNER__SEED": "7", "OTHER": "x"}
    cfg = load_config(path, ["kafka.topic=from-flag"], environ=env)
    assert cfg.kafka.topic == "from-flag"
    assert cfg.learner.seed == 7
    with pytest.raises(ConfigError, match=r"learner\.seed: expected int"):
        load_config(path, environ={"STREAMLEARN__LEARNER__SEED": "seven"})


def test_ints_are_accepted_for_floats() -> None:
    assert load_config_dict({"checkpoint": {"every_seconds": 5}}).checkpoint.every_seconds == 5.0


def test_missing_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize("token", ["", "   ", "short", " padded-token "])
def test_a_weak_or_empty_auth_token_is_refused(token: str) -> None:
    with pytest.raises(ConfigError, match=r"serve\.auth_token: expected null"):
        load_config_dict({"serve": {"auth_token": token}}, source="t.yaml")
    assert load_config_dict({"serve": {"auth_token": "a-long-token"}}, source="t.yaml").serve.auth_token

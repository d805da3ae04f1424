import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import torch

from streamlearn.bounds import PositiveFloat, PositiveInt, UnitFloat
from streamlearn.config import MAX_FILE_BYTES, Config, load_config, load_config_dict
from streamlearn.errors import ConfigError
from streamlearn.learners import LEARNERS

ROOT = Path(__file__).resolve().parents[1]
#: the subprocess imports this checkout's streamlearn, as the tests do
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


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


# -- limits beside the fields, and the learners' limits from their signatures ---------------------
@pytest.mark.parametrize(
    "data,match",
    [
        (
            {"kafka": {"poll_timeout_ms": -1}},
            r"kafka\.poll_timeout_ms: expected an integer in 0\.\.2147483647, got -1",
        ),
        (
            {"kafka": {"partitions": [0, -1]}},
            r"kafka\.partitions\[1\]: expected an integer in 0\.\.2147483647",
        ),
        ({"kafka": {"partitions": [0, "x"]}}, r"kafka\.partitions\[1\]: expected int, got str 'x'"),
        ({"kafka": {"topic": "  "}}, r"kafka\.topic: expected a non-empty string, got '  '"),
        (
            {"kafka": {"security_protocol": "TLS"}},
            r"kafka\.security_protocol: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got str '",
        ),
        ({"model": {"hidden": [100, 0]}}, r"model\.hidden\[1\]: expected a positive integer, got 0"),
        ({"learner": {"batch_size": 0}}, r"learner\.batch_size: expected a positive integer, got 0"),
        ({"learner": {"batch_size": "x"}}, r"learner\.batch_size: expected int or null, got str 'x'"),
        (
            {"learner": {"device": "gpu"}},
            r"learner\.device: expected a torch device such as cpu, cuda or cuda:1",
        ),
        (
            {"evaluation": {"drift_delta": 1}},
            r"evaluation\.drift_delta: expected a number in \(0, 1\), got 1\.0",
        ),
        (
            {"checkpoint": {"every_seconds": float("nan")}},
            r"checkpoint\.every_seconds: expected a non-negative number, got nan",
        ),
        (
            {"serve": {"max_connections": 0}},
            r"serve\.max_connections: expected an integer in 1\.\.65535, got 0",
        ),
        (
            {"serve": {"request_timeout_seconds": 0}},
            r"serve\.request_timeout_seconds: expected a positive number",
        ),
    ],
)
def test_limits_are_checked_and_named(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match="^t.yaml: " + match):
        load_config_dict(data, source="t.yaml")


def test_the_serve_keys_for_connections() -> None:
    serve = load_config_dict({}).serve
    assert (serve.max_connections, serve.request_timeout_seconds) == (128, 10.0)
    serve = load_config_dict({"serve": {"max_connections": 65535, "request_timeout_seconds": 1}}).serve
    assert (serve.max_connections, serve.request_timeout_seconds) == (65535, 1.0)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12", "mps", "xpu:1", "hip", "hpu", "xla"])
def test_every_device_the_pattern_accepts_is_a_torch_device(device: str) -> None:
    assert load_config_dict({"learner": {"device": device}}).learner.device == device
    torch.device(device)  # raises if the pattern lets through what torch refuses


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:01", "cuda:-1", " cpu", "cuda: 1", "meta"])
def test_devices_torch_refuses_or_no_learner_runs_on_are_refused(device: str) -> None:
    with pytest.raises(ConfigError, match=r"learner\.device: expected a torch device"):
        load_config_dict({"learner": {"device": device}})


class _Odd:
    """A limit that is neither a Range nor from streamlearn.bounds: only the protocol counts."""

    def contains(self, value: Any) -> bool:
        return value % 2 == 1

    def describe(self, tp: Any) -> str:
        return "an odd integer"


class _Dummy:
    """Learner-like: validate_hparams reads nothing but the signature of ``__init__``."""

    def __init__(
        self,
        model: Any,
        *,
        n_classes: int,
        lr: PositiveFloat = 0.1,
        clip: PositiveFloat | None = None,
        memories: PositiveInt = 10,
        mix: UnitFloat = 0.5,
        glances: Annotated[int, _Odd()] = 1,
        mode: Literal["a", "b"] = "a",
        momentum: float = 0.0,
        device: str = "cpu",
        seed: int = 0,
        alignment_every: int = 0,
    ) -> None: ...


@pytest.fixture
def dummy(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(LEARNERS, "dummy", _Dummy)
    return "dummy"


def _hparams(name: str, **hparams: Any) -> Config:
    return load_config_dict({"learner": {"name": name, "hparams": hparams}}, source="h.yaml")


@pytest.mark.parametrize(
    "hparams,match",
    [
        ({"lr": -0.1}, r"lr: expected a positive number, got -0\.1"),
        ({"lr": 0}, r"lr: expected a positive number, got 0"),
        ({"lr": True}, r"lr: expected float, got bool True"),
        ({"clip": 0.0}, r"clip: expected a positive number, got 0\.0"),  # the limit inside `X | None`
        ({"clip": "x"}, r"clip: expected float or null, got str 'x'"),
        ({"memories": -5}, r"memories: expected a positive integer, got -5"),
        ({"memories": 2.5}, r"memories: expected int, got float 2\.5"),
        ({"mix": 1.5}, r"mix: expected a number in \[0, 1\], got 1\.5"),
        ({"glances": 2}, r"glances: expected an odd integer, got 2"),
        ({"mode": "c"}, r"mode: expected one of a, b, got str 'c'"),
        ({"momentum": float("inf")}, r"momentum: expected a finite number, got inf"),
        ({"seed": 1}, r"seed: set learner\.seed instead"),
        ({"device": "cpu"}, r"device: set learner\.device instead"),
        ({"alignment_every": 1}, r"alignment_every: set learner\.alignment_every instead"),
        (
            {"nope": 1},
            r"nope: unknown hyper-parameter for learner 'dummy'; expected one of \['alignment_every', 'cl",
        ),
    ],
)
def test_hparams_are_checked_against_the_learners_signature(
    dummy: str, hparams: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=r"^h\.yaml: learner\.hparams\." + match):
        _hparams(dummy, **hparams)


def test_hparams_within_their_limits_are_kept_as_written(dummy: str) -> None:
    hparams = {"lr": 1, "clip": None, "memories": 1, "mix": 0, "glances": 3, "mode": "b", "momentum": -1.0}
    assert _hparams(dummy, **hparams).learner.hparams == hparams
    assert type(_hparams(dummy, lr=1).learner.hparams["lr"]) is int  # as written: the fingerprint hashes it


@pytest.mark.parametrize(("key", "value"), [("memories", -5), ("lr", -0.1)])
def test_mer_hyper_parameters_out_of_range_are_refused(key: str, value: float) -> None:
    # Needs the limits in MER's signature (memories: PositiveInt, lr: PositiveFloat).
    with pytest.raises(
        ConfigError, match=rf"^h\.yaml: learner\.hparams\.{key}: expected a positive .*, got {value}$"
    ):
        _hparams("mer", **{key: value})


# -- the file's size, and what loading imports ----------------------------------------------------
def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 2**20)  # sparse: 50 MB that take no disk
    tracemalloc.start()
    try:
        with pytest.raises(
            ConfigError, match=rf"huge\.yaml: expected a config file of at most {MAX_FILE_BYTES} "
        ):
            load_config(path, environ={})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak / 2**20:.1f} MiB read"  # stat, not read


def test_a_file_at_the_size_limit_loads_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    head = "kafka: {topic: t}\n"
    path.write_text(head + "#" * (MAX_FILE_BYTES - len(head) - 1) + "\n")
    assert path.stat().st_size == MAX_FILE_BYTES
    assert load_config(path, environ={}).kafka.topic == "t"
    path.write_text(head + "#" * (MAX_FILE_BYTES - len(head)) + "\n")
    with pytest.raises(ConfigError, match="at most"):
        load_config(path, environ={})


def _imported_after(code: str) -> set[str]:
    """The streamlearn and torch modules a fresh interpreter holds after running ``code``."""
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT, env=ENV
    )
    return {m for m in out.stdout.split() if m.split(".")[0] in ("streamlearn", "torch")}


def test_a_bad_config_is_reported_without_importing_torch_or_ingest() -> None:
    modules = _imported_after(
        "from streamlearn.config import load_config_dict\n"
        "from streamlearn.errors import ConfigError\n"
        "for bad in ({'learner': {'device': 'gpu'}}, {'kafka': {'topic': 5}},\n"
        "            {'serve': {'auth_token': 'x'}}, {'learner': {'hparams': {'seed': 1}}}):\n"
        "    try:\n"
        "        load_config_dict(bad)\n"
        "    except ConfigError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(f'accepted {bad}')"
    )
    assert "streamlearn.config" in modules
    assert not {
        m for m in modules if m == "torch" or m.startswith(("streamlearn.ingest", "streamlearn.learners"))
    }

"""The command line's edges: what starts up without torch, and where flags take their defaults.

The verbs themselves run against the real broker in ``tests/integration/test_cli.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamlearn import cli, cli_flags
from streamlearn.config import load_config

# Runs the CLI's main() and reports whether torch got imported, whatever the exit.
_PROBE = """
import sys
from streamlearn.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("run", "--help"),
        ("serve", "--help"),
        ("demo", "--help"),
        ("produce", "--help"),
        ("bench", "--help"),
        ("checkpoint", "inspect", "--help"),
    ],
)
def test_help_answers_without_importing_torch(args: tuple[str, ...]) -> None:
    res = probe(*args)
    assert res.returncode == 0 and "usage:" in res.stdout
    assert "torch imported: False" in res.stderr


def test_a_config_error_answers_without_importing_torch(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  topic: 5\n")
    res = probe("run", "-c", str(bad))
    assert res.returncode == 2
    assert f"{bad}: kafka.topic: expected str, got int 5" in res.stderr
    assert "torch imported: False" in res.stderr


def test_the_static_name_lists_match_the_registries() -> None:
    from streamlearn.learners import LEARNERS
    from streamlearn.streams import STREAM_NAMES

    assert tuple(sorted(LEARNERS)) == cli_flags.LEARNER_NAMES
    assert cli_flags.STREAM_NAMES == STREAM_NAMES


def test_env_var_follows_one_rule() -> None:
    assert cli_flags.env_var("--log-level") == "STREAMLEARN_LOG_LEVEL"
    assert cli_flags.env_var("--config") == "STREAMLEARN_CONFIG"
    assert cli_flags.env_var("--threads", "runtime.threads") == "STREAMLEARN__RUNTIME__THREADS"
    assert cli_flags.env_var("--checkpoint-dir", "checkpoint.dir") == "STREAMLEARN__CHECKPOINT__DIR"


def test_help_names_each_flags_variable() -> None:
    texts = {
        verb: subprocess.run(
            [sys.executable, "-m", "streamlearn.cli", *verb.split(), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.replace("\n", " ")
        for verb in ("", "bench", "serve", "demo")
    }
    assert "STREAMLEARN_LOG_LEVEL" in texts[""]
    assert "STREAMLEARN__RUNTIME__THREADS" in texts["bench"] and "--hparam" in texts["bench"]
    for name in ("STREAMLEARN_CONFIG", "STREAMLEARN__CHECKPOINT__DIR", "STREAMLEARN__SERVE__PORT"):
        assert name in texts["serve"]
    assert "STREAMLEARN__LEARNER__NAME" in texts["demo"]


def test_a_flag_outside_the_config_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMLEARN__RUNTIME__THREADS", "3")
    monkeypatch.setenv("STREAMLEARN_LOG_LEVEL", "DEBUG")
    args = cli.build_parser().parse_args(["bench", "--learner", "er"])
    assert args.threads == 3 and args.log_level == "DEBUG"
    args = cli.build_parser().parse_args(["bench", "--learner", "er", "--threads", "2"])
    assert args.threads == 2


def test_a_flag_that_mirrors_a_config_key_keeps_the_configs_precedence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMLEARN__CHECKPOINT__DIR", "/from/env")
    parser = cli.build_parser()

    def checkpoint_dir(*argv: str) -> str:
        args = parser.parse_args(["serve", *argv])
        return load_config(args.config, cli_flags.config_overrides(args)).checkpoint.dir

    assert checkpoint_dir() == "/from/env"
    assert checkpoint_dir("--set", "checkpoint.dir=/from/set") == "/from/set"  # --set outranks the env
    assert checkpoint_dir("--set", "checkpoint.dir=/from/set", "--checkpoint-dir", "/flag") == "/flag"


def test_a_retired_variable_is_named_with_its_replacement(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN")}
    env["STREAMLEARN_THREADS"] = "4"
    res = probe("run", "-c", str(tmp_path / "missing.yaml"), env=env)
    assert res.returncode == 2
    assert "STREAMLEARN_THREADS is no longer read: set STREAMLEARN__RUNTIME__THREADS instead" in res.stderr

"""The command line's shared option plumbing: environment defaults, config overrides, name lists.

Environment defaults follow one rule, and ``--help`` names the variable of every flag that has one:

- a flag that mirrors a config key reads that key's variable, ``STREAMLEARN__SECTION__KEY`` (double
  underscores: a config path), the one ``load_config`` reads, so one variable sets both;
- any other flag reads ``STREAMLEARN_`` + its long name in capitals, dashes as underscores (single
  underscore: a flag), e.g. ``--log-level`` → ``STREAMLEARN_LOG_LEVEL``.

Nothing here imports torch: the name lists are written out, and pinned to the learner and stream
registries by ``tests/test_cli.py``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from streamlearn.config import ENV_PREFIX

#: ``sorted(streamlearn.learners.LEARNERS)`` and ``streamlearn.streams.STREAM_NAMES``, written out
#: so that building the parser imports neither torch nor the image libraries.
LEARNER_NAMES = ("cmaml", "er", "lamaml", "mer", "sgd")
STREAM_NAMES = ("rotated-mnist-10k", "permuted-mnist-10k")

FLAG_ENV_PREFIX = "STREAMLEARN_"


def env_var(flag: str, config_key: str | None = None) -> str:
    """The environment variable that gives ``flag`` its default (the rule in the module docstring).

    >>> env_var("--log-level"), env_var("--threads", "runtime.threads")
    ('STREAMLEARN_LOG_LEVEL', 'STREAMLEARN__RUNTIME__THREADS')
    """
    if config_key is not None:
        return ENV_PREFIX + config_key.upper().replace(".", "__")
    return FLAG_ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_")


def env_flag(
    p: argparse.ArgumentParser,
    *flags: str,
    help: str,
    default: Any = None,
    shown_default: str | None = None,
    config_key: str | None = None,
    from_config: bool = False,
    **kwargs: Any,
) -> None:
    """Add an option whose default comes from its environment variable, named in ``--help``.

    ``shown_default`` describes the default in ``--help`` where ``default`` (None) says nothing.

    ``from_config``: the verb loads the config, and ``load_config`` reads the key's variable itself,
    so the file < environment < ``--set`` precedence holds. The flag's default then stays None and
    the verb passes a given flag on as the override ``config_key=value`` (:func:`config_overrides`).
    """
    var = env_var(flags[-1], config_key)
    if from_config:
        assert config_key is not None
        value = None
        help = f"{help} (env {var}; default: the config's {config_key})"
        p.set_defaults(config_flags={**(p.get_default("config_flags") or {}), flags[-1]: config_key})
    else:
        # argparse applies ``type`` to a string default, so a bad value is a usage error (exit 2).
        value = os.environ.get(var, default)
        shown = shown_default or (None if default is None else str(default))
        help = f"{help} (env {var}" + ("" if shown is None else f"; default: {shown}") + ")"
    p.add_argument(*flags, default=value, help=help, **kwargs)


def config_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items, then the flags given that mirror config keys (a flag wins over ``--set``)."""
    out = list(args.overrides)
    for flag, key in getattr(args, "config_flags", {}).items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            out.append(f"{key}={value}")
    return out


def parse_hparams(items: Sequence[str]) -> dict[str, Any]:
    """``--hparam name=value`` pairs; values are read as YAML scalars (0.1, true, null, 5)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--hparam expects name=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def add_config_args(p: argparse.ArgumentParser) -> None:
    env_flag(p, "-c", "--config", shown_default="the built-in defaults", help="YAML config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value, e.g. --set learner.name=lamaml --set kafka.topic=x "
        "(repeatable; outranks the file and the environment's STREAMLEARN__SECTION__KEY)",
    )

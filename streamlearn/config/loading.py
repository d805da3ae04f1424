"""Loading a config: the file, then the environment, then ``--set`` flags, then the checks.

Precedence, lowest to highest: defaults < YAML file < environment < ``--set`` flags.
Environment overrides use ``STREAMLEARN__SECTION__KEY`` (double underscores separate the path),
e.g. ``STREAMLEARN__KAFKA__BOOTSTRAP_SERVERS=broker:9092``; values are read as YAML scalars, except
that a string key takes the text as it is where YAML would read something else (a password
``123456``, ``*secret`` or ``a: b`` stays that text).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.reader import ReaderError

from streamlearn import typecheck
from streamlearn.config.rules import check_rules
from streamlearn.config.safe_yaml import check_bounds, parse_yaml, read_file
from streamlearn.config.schema import Config
from streamlearn.errors import ConfigError
from streamlearn.typecheck import show

ENV_PREFIX = "STREAMLEARN__"


def load_config_dict(data: Mapping[str, Any] | None, source: str = "<dict>") -> Config:
    """A Config from plain data, every value and rule checked; ConfigError naming ``source``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of sections, got {type(data).__name__}", source=source
        )
    check_bounds(data, source)
    cfg: Config = _checked(data, Config, "", source)
    cfg.source = source
    check_rules(cfg)
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load ``path`` (or defaults), apply env and ``key.path=value`` overrides, validate."""
    environ = os.environ if environ is None else environ
    source = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = read_file(path, source) if path is not None else {}
    for name, raw_value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            parts = _key_parts(name[len(ENV_PREFIX) :].lower().replace("__", "."))
            where = f"environment {name}"
            _set_path(data, parts, _override(raw_value, parts, where), where)
    for item in overrides:
        key, sep, raw_value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key.path=value, got {show(item)}", source="command line")
        parts = _key_parts(key.strip())
        _set_path(data, parts, _override(raw_value, parts, "command line"), "command line")
    return load_config_dict(data, source=source)


def _checked(value: Any, tp: Any, key: str, source: str) -> Any:
    try:
        return typecheck.check(value, tp, key)
    except typecheck.Mismatch as exc:
        raise ConfigError(exc.message, source=source, key=exc.key or None) from None


def _key_parts(path: str) -> list[str]:
    return [p for p in path.split(".") if p]


def _set_path(data: dict[str, Any], parts: Sequence[str], value: Any, where: str) -> None:
    """Set ``data[parts[0]][parts[1]]... = value``; ``where`` names the override in messages."""
    if not parts:
        raise ConfigError("expected a key path such as kafka.topic, got an empty one", source=where)
    node = data
    for i, p in enumerate(parts[:-1]):
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"expected a section (a mapping) at {'.'.join(parts[: i + 1])}, got {type(child).__name__}",
                source=where,
                key=".".join(parts),
            )
        node = child
    node[parts[-1]] = value


def _declared_type(parts: Sequence[str]) -> Any:
    """The type of the config key ``parts`` (``["kafka", "topic"]``) without its limits, or None."""
    tp: Any = Config
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part == "source" or part not in hints:
            return None
        tp = hints[part]
    return tp


def _takes_text(tp: Any) -> bool:
    """A key whose values are text (``str``, a choice of words), perhaps among other types."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_text(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    return tp is str


def _override(raw: str, parts: Sequence[str], where: str) -> Any:
    """An environment or ``--set`` value: a YAML scalar, except that a string key takes the text
    itself where YAML reads something else (a token ``123456``, a password ``*x`` or ``a: b``)."""
    tp = _declared_type(parts)
    takes_text = _takes_text(tp)
    try:
        value = parse_yaml(raw, where)
    except ReaderError:  # characters no config may hold (control, invalid UTF-8)
        raise ConfigError(f"cannot parse value {show(raw)}", source=where) from None
    except yaml.YAMLError:
        if takes_text:
            return raw
        raise ConfigError(f"cannot parse value {show(raw)}", source=where) from None
    if (
        takes_text
    ):  # the type alone decides: a YAML '' for a topic is refused later as empty, not taken as "''"
        try:
            check_bounds(value, where)
            typecheck.check(value, tp, ".".join(parts))
        except (ConfigError, typecheck.Mismatch):
            return raw
    return value

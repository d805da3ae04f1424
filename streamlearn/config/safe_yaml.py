"""Reading a config file's YAML safely and within bounds, whoever wrote it.

Only plain data tags (``!!python/...`` is refused, never run), one document, no key twice in a
mapping, files of at most ``MAX_FILE_BYTES`` (checked before reading, and never more read), at most
``MAX_DEPTH`` levels, ``MAX_VALUES`` values once aliases are expanded (a "billion laughs" document is
refused, not expanded) and integers of at most ``MAX_INT_BITS`` bits.

>>> parse_yaml("kafka: {topic: a}", "x.yaml")
{'kafka': {'topic': 'a'}}
>>> try:
...     parse_yaml("kafka: {topic: a, topic: b}", "x.yaml")
... except yaml.YAMLError as exc:
...     print(exc.problem)
found the key 'topic' twice
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from streamlearn.errors import ConfigError
from streamlearn.typecheck import show

#: A config is a few dozen values, a few KiB; a 50 MB file took 26 s and 530 MB to refuse whole.
MAX_FILE_BYTES = 1024 * 1024
#: Bounds on a document. A config is at most four levels deep; YAML aliases let a few lines stand
#: for billions of values or for a structure that contains itself.
MAX_DEPTH = 32
MAX_VALUES = 10_000
#: No setting needs more (the seed is the widest); Python cannot even print a 4300-digit integer.
MAX_INT_BITS = 64

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``, with the edges of hand-written and hostile files made into YAML errors.

    PyYAML keeps the last of two equal keys silently, recurses once per nesting level (a few
    thousand brackets are a RecursionError), and lets a scalar it cannot build escape as
    ValueError, IndexError, KeyError... (``2001-13-45``, ``!!float x``, ``!!int`` alone, a
    5000-digit integer).
    """

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self.name = name
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            # PyYAML's scalar constructors fail on odd scalars with these: "!!int" alone is an
            # IndexError, "!!bool x" a KeyError, "!!timestamp x" an AttributeError.
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            detail = f" ({exc})" if type(exc) is ValueError else ""
            message = f"cannot read {show(node.value)} as {tag}{detail}"
            raise ConstructorError(None, None, message, node.start_mark) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):  # else ("!!set x") the base class says what is wrong
            self._refuse_repeated_keys(node, deep)
        return super().construct_mapping(node, deep)

    def _refuse_repeated_keys(self, node: MappingNode, deep: bool) -> None:
        # Keys merged in with ``<<`` may be overridden (that is what merging is for); keys written
        # in the mapping itself may not repeat.
        written = [key_node for key_node, _ in node.value if key_node.tag != _MERGE_TAG]
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node in written:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class refuses it with its position
                continue
            if repeated:
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {show(key)} twice",
                    key_node.start_mark,
                )


def parse_yaml(text: str, name: str) -> Any:
    """One YAML document of plain data; any problem with it is a ``yaml.YAMLError``."""
    loader = _Loader(text, name)
    try:
        return loader.get_single_data()
    except RecursionError:  # a backstop: nesting is bounded above, so no known input gets here
        raise yaml.YAMLError("nested too deeply to read") from None
    finally:
        loader.dispose()


def read_file(path: str | Path, source: str) -> dict[str, Any]:
    """The mapping a config file holds (``{}`` for an empty file); ConfigError naming ``source``."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # stat first (a 50 MB file is refused unread); then read one byte past the limit, for
            # files whose size stat does not know (a pipe, /dev/zero) or that grew meanwhile.
            raw = b"" if size > MAX_FILE_BYTES else f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", source=source) from None
    if size > MAX_FILE_BYTES or len(raw) > MAX_FILE_BYTES:
        shown = f"{size} bytes" if size > MAX_FILE_BYTES else "more"
        limit = f"{MAX_FILE_BYTES} bytes ({MAX_FILE_BYTES / 2**20:g} MiB)"
        raise ConfigError(f"expected a config file of at most {limit}, got {shown}", source=source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", source=source) from None
    try:
        loaded = parse_yaml(text, source)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(
            f"the top level must be a mapping of sections, got {type(loaded).__name__}", source=source
        )
    return loaded or {}


def check_bounds(data: Any, source: str) -> None:
    """Refuse what no config is before anything walks, copies or prints it (iteratively: a
    structure that contains itself is just one that is too deep)."""
    count = 0
    todo: list[tuple[Any, str, int]] = [(data, "", 0)]
    while todo:
        value, path, depth = todo.pop()
        count += 1
        key = path or None
        if count > MAX_VALUES:
            raise ConfigError(
                f"expected at most {MAX_VALUES} values in all (YAML aliases repeat what they name), got more",
                source=source,
                key=key,
            )
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"expected at most {MAX_DEPTH} levels of nesting, got more", source=source, key=key
            )
        if _too_wide(value):
            raise ConfigError(_wide_text(value), source=source, key=key)
        if isinstance(value, Mapping):
            for k, v in value.items():
                if _too_wide(k):
                    raise ConfigError(f"a key: {_wide_text(k)}", source=source, key=key)
                todo.append((v, f"{path}.{k}" if path else str(k), depth + 1))
        elif isinstance(value, list | tuple | set | frozenset):
            todo.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))


def _too_wide(value: Any) -> bool:
    return isinstance(value, int) and value.bit_length() > MAX_INT_BITS


def _wide_text(value: int) -> str:
    return f"expected an integer of at most {MAX_INT_BITS} bits, got one of {value.bit_length()} bits"

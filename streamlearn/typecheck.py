"""Check a value against a type annotation, and say in one line what was wrong.

One checker for the config dataclasses and the learners' keyword arguments. It reads what
``typing.get_type_hints(..., include_extras=True)`` returns: ``Annotated`` limits (any object with
``contains(value)`` and ``describe(tp)``, see ``streamlearn.bounds``), ``Literal`` choices, unions and
``Optional``, ``list``, ``dict``, dataclasses (built from a mapping), ``Any`` and plain classes.
Values are as YAML gives them: an int is accepted (and returned as float) where a float is
expected, a bool is never an int.

>>> from typing import Annotated, Literal
>>> from streamlearn.bounds import Range
>>> check(3, float)
3.0
>>> check(0, Annotated[int, Range(1)] | None, "keep")
Traceback (most recent call last):
...
streamlearn.typecheck.Mismatch: keep: expected a positive integer, got 0
>>> check(True, int, "n")
Traceback (most recent call last):
...
streamlearn.typecheck.Mismatch: n: expected int, got bool True
>>> type_name(Literal["earliest", "latest"] | None)
'one of earliest, latest or null'
"""

from __future__ import annotations

import contextlib
import dataclasses
import reprlib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

#: ``repr`` refuses integers of more than 4300 digits; no setting needs more than 64 bits.
_LONGEST_SHOWN_INT_BITS = 64


class Mismatch(ValueError):
    """``value`` does not fit the annotation at ``key`` (a path such as ``model.hidden[1]``).

    ``shape_matched`` says the value had the right outer type (the failure is a limit, or inside
    it), so a union reports this error rather than "expected X or Y".
    """

    def __init__(self, key: str, message: str, *, shape_matched: bool) -> None:
        self.key = key
        self.message = message
        self.shape_matched = shape_matched
        super().__init__(f"{key}: {message}" if key else message)


class _ShortRepr(reprlib.Repr):
    """``repr`` cut to a length a message can carry (the value may be a long string or a big list)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 80
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _LONGEST_SHOWN_INT_BITS:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


#: ``repr`` of a value, short enough for a one-line message.
show = _ShortRepr().repr


def type_name(tp: Any) -> str:
    """What an annotation is called in messages: ``int``, ``list of int``, ``mapping``, ``int or null``."""
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return type_name(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (list, Sequence):
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list of {type_name(inner)}"
    if origin in (dict, Mapping) or dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check(value: Any, tp: Any, key: str = "") -> Any:
    """``value`` as annotation ``tp`` wants it (ints made floats, mappings made dataclasses).

    Raises :class:`Mismatch` naming ``key`` (extended with ``.name`` and ``[i]`` inside).
    """
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *limits = typing.get_args(tp)
        value = check(value, base, key)
        for limit in limits:
            # None is "not set" (an Optional inside the Annotated); limits are about set values.
            if hasattr(limit, "contains") and value is not None and not limit.contains(value):
                message = f"expected {limit.describe(base)}, got {show(value)}"
                raise Mismatch(key, message, shape_matched=True)
        return value
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, tp, key)
    if origin is typing.Literal:
        if any(type(value) is type(a) and value == a for a in typing.get_args(tp)):
            return value
        raise _mismatch(value, tp, key)
    if tp is type(None):
        if value is None:
            return None
        raise _mismatch(value, tp, key)
    if origin is list:
        if not isinstance(value, list):
            raise _mismatch(value, tp, key)
        (inner,) = typing.get_args(tp) or (Any,)
        with _inside():
            return [check(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _mismatch(value, tp, key)
        _, inner = typing.get_args(tp) or (str, Any)
        with _inside():
            return {k: check(v, inner, _join(key, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise _mismatch(value, tp, key)
        with _inside():
            return _build(tp, value, key)
    if isinstance(tp, type):
        return _check_class(value, tp, key)
    if origin is not None and isinstance(origin, type):  # another generic (tuple[int, ...]): its class
        if isinstance(value, origin):
            return value
        raise _mismatch(value, tp, key)
    return value  # a typing construct nothing here uses (TypeVar, Callable): not checked


def _check_class(value: Any, tp: type, key: str) -> Any:
    if tp in (int, float) and isinstance(value, bool):
        raise _mismatch(value, tp, key)  # True is an int to Python, never a count or a rate to us
    if tp is float and isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise _mismatch(value, tp, key) from None
    if isinstance(value, tp):
        return value
    raise _mismatch(value, tp, key)


def _check_union(value: Any, tp: Any, key: str) -> Any:
    errors: list[Mismatch] = []
    for alternative in typing.get_args(tp):
        try:
            return check(value, alternative, key)
        except Mismatch as exc:
            errors.append(exc)
    # The value had the shape of one alternative but broke a limit inside it: that is the news
    # ("expected a positive integer, got 0"), not "expected int or null, got int 0".
    for error in errors:
        if error.shape_matched:
            raise error
    raise _mismatch(value, tp, key)


def _build(cls: type, data: Mapping[Any, Any], key: str) -> Any:
    """An instance of dataclass ``cls`` from ``data``; fields with ``metadata={"internal": True}``
    are not keys (``Config.source``)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    kwargs = {}
    for name, value in data.items():
        path = _join(key, name)
        if name not in names:
            message = f"unknown key; expected one of {', '.join(names)}"
            raise Mismatch(path, message, shape_matched=True)
        kwargs[name] = check(value, hints[name], path)
    return cls(**kwargs)


@contextlib.contextmanager
def _inside() -> Iterator[None]:
    """An error inside a list, mapping or dataclass: the outer shape matched (for unions)."""
    try:
        yield
    except Mismatch as exc:
        raise Mismatch(exc.key, exc.message, shape_matched=True) from None


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _mismatch(value: Any, tp: Any, key: str) -> Mismatch:
    message = f"expected {type_name(tp)}, got {type(value).__name__} {show(value)}"
    return Mismatch(key, message, shape_matched=False)


__all__ = ["Mismatch", "check", "show", "type_name"]

"""The one checker for config values and learner hyper-parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pytest

from streamlearn.bounds import NonEmpty, PositiveInt, Range
from streamlearn.typecheck import Mismatch, check, type_name


@dataclass
class _Section:
    name: Annotated[str, NonEmpty()] = "x"
    sizes: list[PositiveInt] = field(default_factory=list)
    hidden: str = field(default="", metadata={"internal": True})


@pytest.mark.parametrize(
    "value,tp,expected",
    [
        (3, float, 3.0),
        (None, PositiveInt | None, None),
        ("b", Literal["a", "b"], "b"),
        ({"a": 1}, dict[str, float], {"a": 1.0}),
        ([1, 2], list[PositiveInt] | None, [1, 2]),
        ({"anything": [1]}, Any, {"anything": [1]}),
        ((1, 2), tuple[int, ...], (1, 2)),
    ],
)
def test_values_that_fit_come_back_as_the_annotation_wants(value: Any, tp: Any, expected: Any) -> None:
    got = check(value, tp, "k")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "value,tp,key,message",
    [
        (True, int, "k", "expected int, got bool True"),
        (False, float, "k", "expected float, got bool False"),
        (1, Literal[True], "k", "expected one of True, got int 1"),  # 1 == True, but not a bool
        (2**2000, float, "k", "expected float, got int <an integer of 2001 bits>"),
        (0, PositiveInt | None, "k", "expected a positive integer, got 0"),
        ("x", PositiveInt | None, "k", "expected int or null, got str 'x'"),
        ([1, "x"], list[int] | None, "k[1]", "expected int, got str 'x'"),
        ({"a": "x"}, dict[str, int], "k.a", "expected int, got str 'x'"),
        ({1: 2}, dict[str, int], "k", "expected mapping, got dict {1: 2}"),
        (2.5, Annotated[float, Range(0, 1)], "k", "expected a number in [0, 1], got 2.5"),
        ("a" * 200, int, "k", f"expected int, got str '{'a' * 37}...{'a' * 38}'"),  # cut short
    ],
)
def test_values_that_do_not_fit_name_the_key_and_what_was_expected(
    value: Any, tp: Any, key: str, message: str
) -> None:
    with pytest.raises(Mismatch) as caught:
        check(value, tp, "k")
    assert (caught.value.key, caught.value.message) == (key, message)


def test_dataclasses_are_built_from_mappings_with_their_keys_and_limits() -> None:
    assert check({"name": "a", "sizes": [1]}, _Section, "s") == _Section("a", [1])
    for data, key, message in [
        ({"nam": "a"}, "s.nam", "unknown key; expected one of name, sizes"),
        ({"hidden": "a"}, "s.hidden", "unknown key; expected one of name, sizes"),  # internal: not a key
        ({"name": " "}, "s.name", "expected a non-empty string, got ' '"),
        ({"sizes": [1, -1]}, "s.sizes[1]", "expected a positive integer, got -1"),
    ]:
        with pytest.raises(Mismatch) as caught:
            check(data, _Section, "s")
        assert (caught.value.key, caught.value.message) == (key, message)
    with pytest.raises(Mismatch, match="s: expected mapping, got list"):
        check([], _Section, "s")


def test_type_names() -> None:
    assert type_name(list[PositiveInt] | None) == "list of int or null"
    assert type_name(dict[str, Any]) == type_name(_Section) == "mapping"

"""Limits that sit beside the field they limit: ``Annotated[int, Range(1)]``.

One vocabulary for the config dataclasses and for the learners' keyword arguments, so a range is
written once, next to the name it belongs to, and one checker (``streamlearn.typecheck``) reads it
from either place (``typing.get_type_hints(..., include_extras=True)``).

>>> Range(1).describe(int)
'a positive integer'
>>> Range(0, 1, low_open=True, high_open=True).describe(float)
'a number in (0, 1)'
>>> Range(0, low_open=True).contains(float("nan"))
False
>>> Pattern(r"cpu|cuda(:[0-9]+)?", "a device such as cpu or cuda:1").contains("cuda:1")
True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` where the end is open); ``None`` leaves that end free.

    A float must also be finite: no hyper-parameter or setting means anything at nan or inf.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self, tp: Any = float) -> str:
        whole = tp is int
        noun = "integer" if whole else "number"
        lo, hi = _num(self.low), _num(self.high)
        if self.high is None and self.low is not None:
            if whole and not self.low_open and self.low == 1:
                return "a positive integer"
            if not self.low_open and self.low == 0:
                return f"a non-negative {noun}"
            if self.low_open and self.low == 0:
                return f"a positive {noun}" if not whole else "a positive integer"
            return f"a{'n' if whole else ''} {noun} {'>' if self.low_open else '≥'} {lo}"
        if self.low is None and self.high is not None:
            return f"a{'n' if whole else ''} {noun} {'<' if self.high_open else '≤'} {hi}"
        if self.low is None and self.high is None:
            return f"a{'n' if whole else ' finite'} {noun}"
        if whole and not self.low_open and not self.high_open:
            return f"an integer in {lo}..{hi}"
        return f"a {noun} in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class NonEmpty:
    """A string with something other than white space in it."""

    def contains(self, value: Any) -> bool:
        return not isinstance(value, str) or bool(value.strip())

    def describe(self, tp: Any = str) -> str:
        return "a non-empty string"


@dataclass(frozen=True)
class Pattern:
    """A string that ``regex`` matches in full; ``meaning`` says in words what such a string is."""

    regex: str
    meaning: str

    def contains(self, value: Any) -> bool:
        return not isinstance(value, str) or re.fullmatch(self.regex, value) is not None

    def describe(self, tp: Any = str) -> str:
        return self.meaning


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**63 else repr(v)


INT32_MAX = 2**31 - 1

#: The common shapes, so a signature reads ``lr: PositiveFloat = 0.1``.
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
#: in [0, 1]: interpolation weights such as MER's beta and gamma
UnitFloat = Annotated[float, Range(0, 1)]

__all__ = [
    "INT32_MAX",
    "NonEmpty",
    "NonNegativeFloat",
    "NonNegativeInt",
    "Pattern",
    "PositiveFloat",
    "PositiveInt",
    "Range",
    "UnitFloat",
]

"""The promotion rule: is the challenger (the learning model) not worse than the champion?

Two signals, each compared *paired* — both models scored on the same examples, so the noise of
the examples themselves cancels:

- **paired prequential**: every labelled example is predicted by the champion as well as by the
  challenger (before the challenger learns it). Over the examples since the last promotion, the
  challenger's accuracy may be at most ``margin`` below the champion's. It catches a model made
  worse on the live stream (a diverging or over-fitting update, poisoning that breaks the model
  on normal inputs). It cannot catch corrupted labels: a model that learned the bug agrees with
  the bug, so it scores *better* on the buggy stream.
- **golden set**: trusted labelled examples, scored for each candidate; the challenger's accuracy
  may be at most ``golden_margin`` below the champion's. It catches corrupted labels and any
  damage visible on the golden examples. It is scored on the golden examples of the task being
  learned when it has some (a model adapting to a new task must not be held for what it forgets of
  an old one), so it cannot catch a bug in a task it holds no examples of, nor a bug the golden
  set itself carries.

A candidate comes every ``promote_every`` examples. It is promoted when neither signal objects;
else the gate *holds* (the served model stays the champion) with the reason, and the paired
tallies keep growing, so the next candidate is judged on more evidence. Once the gate has held
for ``rollback_after`` examples, :meth:`PromotionGate.verdict` asks for a rollback.

>>> g = PromotionGate(promote_every=2, margin=0.0, golden_margin=0.0, rollback_after=2)
>>> g.observe(challenger_right=[False, False], champion_right=[True, True])
>>> g.verdict()
Verdict(action='hold', reason='paired')
>>> g.observe(challenger_right=[False, False], champion_right=[True, True])
>>> g.verdict().action
'rollback'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

#: why the gate holds (the ``reason`` label of ``streamlearn_serving_held``)
REASONS = ("paired", "golden")


class Verdict(NamedTuple):
    #: "wait" (no candidate yet), "promote", "hold" or "rollback"
    action: str
    reason: str = ""


class PromotionGate:
    """The paired tallies since the last promotion, and the rule over them."""

    def __init__(
        self, *, promote_every: int, margin: float, golden_margin: float, rollback_after: int
    ) -> None:
        self.promote_every = int(promote_every)
        self.margin = float(margin)
        self.golden_margin = float(golden_margin)
        self.rollback_after = int(rollback_after)
        self.reset()
        #: why the gate holds now ("" while it does not)
        self.reason = ""
        #: golden-set accuracies of the last candidate (None: no golden set)
        self.golden: tuple[float, float] | None = None

    def reset(self) -> None:
        """A promotion or rollback: the challenger equals the champion again."""
        self.n = 0
        self.challenger_correct = 0
        self.champion_correct = 0
        self.next_candidate = self.promote_every
        self.held_since: int | None = None  # self.n when the gate began to hold
        self.reason = ""

    def observe(self, *, challenger_right: Sequence[bool], champion_right: Sequence[bool]) -> None:
        """One learned batch: whether each model predicted each example right (before learning it)."""
        self.n += len(challenger_right)
        self.challenger_correct += int(sum(challenger_right))
        self.champion_correct += int(sum(champion_right))

    @property
    def candidate_due(self) -> bool:
        return self.n >= self.next_candidate

    @property
    def scores(self) -> tuple[float, float]:
        """(challenger, champion) paired accuracy since the last promotion (1.0 before any example)."""
        if self.n == 0:
            return 1.0, 1.0
        return self.challenger_correct / self.n, self.champion_correct / self.n

    def verdict(self, golden: tuple[float, float] | None = None) -> Verdict:
        """Judge the challenger now if a candidate is due; ``golden`` = (challenger, champion)
        accuracy on the golden set (None: no golden set)."""
        if not self.candidate_due:
            return Verdict("wait", self.reason)
        self.next_candidate = self.n + self.promote_every
        self.golden = golden
        challenger, champion = self.scores
        reason = ""
        if golden is not None and golden[0] < golden[1] - self.golden_margin:
            reason = "golden"
        elif challenger < champion - self.margin:
            reason = "paired"
        if not reason:
            return Verdict("promote")
        if self.held_since is None:
            self.held_since = self.n
        self.reason = reason
        if self.rollback_after and self.n - self.held_since >= self.rollback_after:
            return Verdict("rollback", reason)
        return Verdict("hold", reason)

    def state_dict(self) -> dict[str, int | str]:
        return {
            "n": self.n,
            "challenger_correct": self.challenger_correct,
            "champion_correct": self.champion_correct,
            "next_candidate": self.next_candidate,
            "held_since": -1 if self.held_since is None else self.held_since,
            "reason": self.reason,
        }

    def load_state_dict(self, state: dict[str, int | str]) -> None:
        self.n = int(state["n"])
        self.challenger_correct = int(state["challenger_correct"])
        self.champion_correct = int(state["champion_correct"])
        self.next_candidate = int(state["next_candidate"])
        held = int(state["held_since"])
        self.held_since = None if held < 0 else held
        self.reason = str(state["reason"])

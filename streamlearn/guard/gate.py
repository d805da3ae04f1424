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
  may be at most ``golden_margin`` below the *best champion's of this task so far* (not the last
  champion's: a label bug that each step makes only a little worse would otherwise pass every
  candidate and ratchet the served model down one promotion at a time). It catches corrupted labels and any
  damage visible on the golden examples. It is scored on the golden examples of the task being
  learned when it has some (a model adapting to a new task must not be held for what it forgets of
  an old one), so it cannot catch a bug in a task it holds no examples of, nor a bug the golden
  set itself carries. It is *slow* against a label bug: a replaying learner (MER) is made worse
  on the golden examples only after a hundred or more bad examples, by which time candidates
  carrying some of them would have been promoted.
- **labels** (stream against golden set): the champion's accuracy on the examples arriving since
  the last promotion may be at most ``golden_margin`` below its accuracy on the golden examples of
  the same task. The champion is fixed and has learned neither, so both are held-out accuracies of
  one model on one distribution — unless the stream's labels (or features) are not what the
  golden set says they should be. It catches a producer bug in the first candidate that holds it,
  before any challenger has been promoted on it, which is what makes the quarantine precise. It
  is used only for a task the golden set holds examples of (a batch with a task id the set
  knows): without one, a genuine drift would look the same (the champion does worse on the new
  stream than on old golden examples), and holding it would stop adaptation. It cannot catch
  corrupted labels the golden set also carries, nor a bug too small to move the champion's
  accuracy beyond the margin.

The paired and golden signals object only when the challenger is worse by more than its margin
*and* the difference is significant: of the examples the two models disagree on, the champion is
right on ``b`` and the challenger on ``c``; worse means ``(b - c) / n > margin`` and ``b - c > Z·sqrt(b + c)``
(McNemar's test, normal approximation, Z = 2: about 2% false alarms per candidate for two equal
models). The labels signal compares two accuracies of the champion (stream and golden, two
independent samples): it objects when the difference passes ``golden_margin`` and ``Z_LABELS``
standard errors (pooled two-proportion test); Z = 3 there, as it is judged on every candidate of
a healthy stream too, where each false alarm would quarantine ``promote_every`` good examples.
An online learner's accuracy moves by a few points from one step to the next; without
the test those moves hold (and roll back) good data, with it a systematic disagreement — a label
bug, a broken update — still shows within a few dozen examples.

A candidate comes every ``promote_every`` examples. It is promoted when neither signal objects;
else the gate *holds* (the served model stays the champion) with the reason, and the paired
tallies keep growing, so the next candidate is judged on more evidence. A candidate that fails
with ``rollback_after`` or more examples learned since the last promotion asks for a rollback
(:meth:`PromotionGate.verdict`): the challenger has then been worse for all of them, by the
evidence of the whole window. (``rollback_after`` at most ``promote_every``: roll back at the
first failed candidate.) A learner whose every update the non-finite guard undoes learns nothing
and so meets no candidate; :meth:`PromotionGate.stalled` asks for a rollback after
``rollback_after`` such examples in a row (reason ``stalled``): what damaged it was learned, so
it is in the journal and goes to quarantine.

>>> g = PromotionGate(promote_every=10, margin=0.0, golden_margin=0.0, rollback_after=20)
>>> g.observe(challenger_right=[False] * 10, champion_right=[True] * 10)
>>> g.verdict()
Verdict(action='hold', reason='paired')
>>> g.observe(challenger_right=[False] * 10, champion_right=[True] * 10)
>>> g.verdict().action
'rollback'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

#: McNemar's threshold, in standard deviations of the discordant-pair difference
Z = 2.0
#: the labels signal's threshold (two-proportion test): stricter, see the module docstring
Z_LABELS = 3.0

#: why the gate holds (the ``reason`` label of ``streamlearn_serving_held``)
REASONS = ("labels", "paired", "golden", "stalled")


class Verdict(NamedTuple):
    #: "wait" (no candidate yet), "promote", "hold" or "rollback"
    action: str
    reason: str = ""


def worse(champion_only: int, challenger_only: int, n: int, margin: float) -> bool:
    """Is the challenger worse by more than ``margin``, significantly? (counts of the examples only
    the champion / only the challenger got right, out of ``n``)

    >>> worse(30, 10, 100, 0.05), worse(3, 0, 100, 0.0), worse(10, 2, 1000, 0.02)
    (True, False, False)
    """
    diff = champion_only - challenger_only
    return n > 0 and diff / n > margin and diff > Z * (champion_only + challenger_only) ** 0.5


def disagrees(stream_right: int, n: int, golden_right: int, m: int, margin: float) -> bool:
    """Is one model's accuracy on ``n`` stream examples lower than on ``m`` golden ones by more than
    ``margin``, significantly (``Z_LABELS`` standard errors of the pooled two-proportion test)?

    >>> disagrees(1, 25, 240, 300, 0.03), disagrees(19, 25, 240, 300, 0.03), disagrees(5, 5, 0, 0, 0.0)
    (True, False, False)
    """
    if n == 0 or m == 0:
        return False
    diff = golden_right / m - stream_right / n
    p = (stream_right + golden_right) / (n + m)
    return diff > margin and diff > Z_LABELS * (p * (1 - p) * (1 / n + 1 / m)) ** 0.5


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
        #: golden-set accuracies of the last candidate and of the reference (None: no golden set)
        self.golden: tuple[float, float] | None = None
        #: per task: which golden examples the best champion so far got right
        self.golden_best: dict[str, list[bool]] = {}

    def reset(self) -> None:
        """A promotion or rollback: the challenger equals the champion again."""
        self.n = 0
        self.challenger_correct = 0
        self.champion_correct = 0
        self.champion_only = 0  # examples only the champion predicted right
        self.challenger_only = 0
        self.next_candidate = self.promote_every
        self.undone_in_a_row = 0
        self.reason = ""

    def observe(self, *, challenger_right: Sequence[bool], champion_right: Sequence[bool]) -> None:
        """One learned batch: whether each model predicted each example right (before learning it)."""
        self.undone_in_a_row = 0
        self.n += len(challenger_right)
        self.challenger_correct += int(sum(challenger_right))
        self.champion_correct += int(sum(champion_right))
        for a, b in zip(challenger_right, champion_right, strict=True):
            self.champion_only += int(b and not a)
            self.challenger_only += int(a and not b)

    @property
    def candidate_due(self) -> bool:
        return self.n >= self.next_candidate

    @property
    def scores(self) -> tuple[float, float]:
        """(challenger, champion) paired accuracy since the last promotion (1.0 before any example)."""
        if self.n == 0:
            return 1.0, 1.0
        return self.challenger_correct / self.n, self.champion_correct / self.n

    def verdict(
        self,
        golden: tuple[Sequence[bool], Sequence[bool]] | None = None,
        task: int | None = None,
        *,
        task_matched: bool = False,
    ) -> Verdict:
        """Judge the challenger now if a candidate is due; ``golden`` = whether the challenger and
        the champion got each golden example (of ``task``) right (None: no golden set);
        ``task_matched``: the golden set holds examples of ``task`` (the labels signal applies)."""
        if not self.candidate_due:
            return Verdict("wait", self.reason)
        self.next_candidate = self.n + self.promote_every
        reason = ""
        mine: list[bool] = []
        key = str(task)
        if golden is not None:
            mine, theirs = [bool(v) for v in golden[0]], [bool(v) for v in golden[1]]
            n = len(mine)
            if task_matched and disagrees(self.champion_correct, self.n, sum(theirs), n, self.golden_margin):
                reason = "labels"
            # the reference: the best champion of this task so far, not the last one (see the
            # module docstring: a slow bug must not ratchet the bar down one promotion at a time)
            ref = self.golden_best.get(key)
            if ref is None or len(ref) != n or sum(theirs) > sum(ref):
                ref = self.golden_best[key] = theirs
            self.golden = (sum(mine) / max(n, 1), sum(ref) / max(n, 1))
            champion_only = sum(b and not a for a, b in zip(mine, ref, strict=True))
            challenger_only = sum(a and not b for a, b in zip(mine, ref, strict=True))
            if not reason and worse(champion_only, challenger_only, n, self.golden_margin):
                reason = "golden"
        if not reason and worse(self.champion_only, self.challenger_only, self.n, self.margin):
            reason = "paired"
        if not reason:
            if mine and sum(mine) > sum(self.golden_best[key]):
                self.golden_best[key] = mine
            return Verdict("promote")
        self.reason = reason
        if self.rollback_after and self.n >= self.rollback_after:
            return Verdict("rollback", reason)
        return Verdict("hold", reason)

    def stalled(self, n: int) -> Verdict:
        """``n`` examples whose update the non-finite guard undid (nothing learned)."""
        self.undone_in_a_row += n
        if self.rollback_after and self.undone_in_a_row >= self.rollback_after:
            self.reason = "stalled"
            return Verdict("rollback", "stalled")
        return Verdict("wait", self.reason)

    def state_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "challenger_correct": self.challenger_correct,
            "champion_correct": self.champion_correct,
            "champion_only": self.champion_only,
            "challenger_only": self.challenger_only,
            "next_candidate": self.next_candidate,
            "reason": self.reason,
            "golden_best": {k: [int(b) for b in v] for k, v in self.golden_best.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n = int(state["n"])
        self.challenger_correct = int(state["challenger_correct"])
        self.champion_correct = int(state["champion_correct"])
        self.champion_only = int(state["champion_only"])
        self.challenger_only = int(state["challenger_only"])
        self.next_candidate = int(state["next_candidate"])
        self.reason = str(state["reason"])
        self.golden_best = {k: [bool(b) for b in v] for k, v in state.get("golden_best", {}).items()}

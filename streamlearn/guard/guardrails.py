"""The champion, the challenger and the journal between them; promotion and rollback.

With ``guard.gate`` on, the served model is the champion: a copy of the learner's *full* state at
the last promotion (model, optimiser, α, replay buffer with its counter, RNGs, prequential metric
state), kept as a state dict, plus a second learner built from it that predicts every incoming
batch (the paired prequential signal). The learner itself is the challenger. Every example the
challenger learns is journaled — its source and its bytes as sent — until the next promotion.
A promotion copies the learner's state into the champion and clears the journal; a rollback
loads the champion's state back into the learner and hands the journal to the caller, who must
quarantine it *before* the rollback is checkpointed (``guard/quarantine.py``).

The champion and the journal travel in the checkpoint (key ``guard``): a restart after a crash
resumes with the same champion, serving it, and can still quarantine what the challenger learned
since. With the gate off this class only reports the learner as the served model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from streamlearn.config.schema import GuardConfig
from streamlearn.evaluation.prequential import PrequentialMetrics
from streamlearn.guard.gate import PromotionGate, Verdict
from streamlearn.guard.golden import GoldenSet
from streamlearn.learners import Learner

log = logging.getLogger(__name__)

#: one journaled example: (topic, partition, offset, bytes as sent)
Source = tuple[str, int, int, bytes]


class Guardrails:
    """Promotion gate and rollback around one learner; all calls from the learner's thread."""

    def __init__(
        self,
        cfg: GuardConfig,
        learner: Learner,
        prequential: PrequentialMetrics,
        make_learner: Callable[[], Learner],
        golden: GoldenSet | None = None,
    ) -> None:
        self.enabled = cfg.gate
        self.learner = learner
        self.prequential = prequential
        self.golden = golden
        self.gate = PromotionGate(
            promote_every=cfg.promote_every,
            margin=cfg.margin,
            golden_margin=cfg.golden_margin,
            rollback_after=cfg.rollback_after,
        )
        self.journal: list[Source] = []
        #: learning paused by an operator (POST /v2/admin/pause): the daemon stops consuming
        self.paused = False
        #: an operator rollback to a checkpoint whose unlearned examples are not yet quarantined:
        #: ``topic:partition`` -> [start, end) offsets (checkpointed: a restart sends them)
        self.rewind: dict[str, list[int]] = {}
        #: +1 at every rollback that unlearns examples: a checkpoint of an earlier lineage holds a
        #: model that learned examples now in quarantine, so an operator may not roll back to it
        self.lineage = 0
        self.promotions = 0
        self.rollbacks = 0
        self.champion: Learner | None = None
        self._champion_state: dict[str, Any] = {}
        #: the champion's golden scores per task (cleared when the champion changes)
        self._golden_cache: dict[int | None, list[bool]] = {}
        self.champion_version = learner.updates
        if self.enabled:
            self.champion = make_learner()
            self.promote(reason="start")

    # -- what is served -----------------------------------------------------------------------
    @property
    def served_model(self) -> nn.Module:
        return self.champion.model if self.champion is not None else self.learner.model

    @property
    def served_version(self) -> int:
        return self.champion_version if self.champion is not None else self.learner.updates

    @property
    def held(self) -> str:
        """Why the gate holds the served model back now ("" when it does not)."""
        return self.gate.reason if self.enabled else ""

    # -- per batch ----------------------------------------------------------------------------
    def champion_predict(self, x: torch.Tensor) -> torch.Tensor | None:
        """The champion's probabilities on a batch about to be learned (None with the gate off)."""
        return self.champion.predict_proba(x) if self.champion is not None else None

    def learned(
        self,
        probs: torch.Tensor,
        champion_probs: torch.Tensor | None,
        y: torch.Tensor,
        task: int | None,
        sources: list[Source],
    ) -> Verdict:
        """A batch was learned: journal it, tally both models' predictions, promote when due.

        Returns the verdict; on "rollback" the caller quarantines :attr:`journal` and then calls
        :meth:`roll_back`. "promote" is already done (the caller publishes the champion)."""
        if champion_probs is None:
            return Verdict("wait")
        self.journal.extend(sources)
        self.gate.observe(  # on the host, where the labels are (learner.device: cuda)
            challenger_right=(probs.argmax(dim=1).cpu() == y.cpu()).tolist(),
            champion_right=(champion_probs.argmax(dim=1).cpu() == y.cpu()).tolist(),
        )
        if not self.gate.candidate_due:
            return Verdict("wait", self.gate.reason)
        golden = None
        matched = False
        if self.golden is not None:
            golden = (self.golden.correct(self.learner, task), self._champion_golden(task))
            matched = self.golden.has_task(task)
        verdict = self.gate.verdict(golden, task, task_matched=matched)
        if verdict.action == "promote":
            self.promote(reason="gate")
            if golden is not None:  # the new champion is this challenger: its scores are known
                self._golden_cache[task] = golden[0]
        return verdict

    def _champion_golden(self, task: int | None) -> list[bool]:
        """The champion's golden scores, computed once per champion and task (it does not learn)."""
        assert self.champion is not None and self.golden is not None
        if task not in self._golden_cache:
            self._golden_cache[task] = self.golden.correct(self.champion, task)
        return self._golden_cache[task]

    def undone(self, n: int) -> Verdict:
        """The non-finite guard undid an update of ``n`` examples (dead-lettered, not journaled)."""
        return self.gate.stalled(n) if self.champion is not None else Verdict("wait")

    # -- promotion and rollback ---------------------------------------------------------------
    def promote(self, *, reason: str) -> None:
        """Make the learner's current state the champion's (and forget the journal)."""
        if self.champion is None:
            return
        self._champion_state = {
            "learner": self.learner.state_dict(),
            "metrics": self.prequential.state_dict(),
        }
        # the champion learner only predicts: its weights suffice (the full state, replay buffer
        # included, is in _champion_state for a rollback); copied in place, as load_state_dict does
        with torch.no_grad():
            own = self.champion.model.state_dict()
            for k, v in self._champion_state["learner"]["model"].items():
                own[k].copy_(v)
        self._golden_cache = {}
        self.champion_version = self.learner.updates
        self.journal = []
        self.gate.reset()
        self.promotions += 1
        log.debug("promoted (%s): version %d", reason, self.champion_version)

    def roll_back(self) -> int:
        """Reset the learner to the champion's full state; returns how many examples it unlearned.

        The caller must have quarantined :attr:`journal` (acknowledged) first."""
        if self.champion is None:
            return 0
        n = self.learner.examples - self._champion_state["learner"]["examples"]
        self.lineage += bool(self.journal)
        self.learner.load_state_dict(self._champion_state["learner"])
        self.prequential.load_state_dict(self._champion_state["metrics"])
        self.journal = []
        self.gate.reset()
        self.rollbacks += 1
        return n

    def adopt(self, learner_state: dict[str, Any], metrics_state: dict[str, Any]) -> None:
        """The operator rolled the learner back to a checkpoint: it becomes learner and champion."""
        self.lineage += 1
        self.learner.load_state_dict(learner_state)
        self.prequential.load_state_dict(metrics_state)
        if self.champion is not None:
            self.promote(reason="operator rollback")
        self.journal = []

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.champion is None:
            return {"rewind": dict(self.rewind), "lineage": self.lineage} if self.lineage else {}
        return {
            "rewind": dict(self.rewind),
            "lineage": self.lineage,
            "champion": self._champion_state,
            "champion_version": self.champion_version,
            "journal": [list(s) for s in self.journal],
            "gate": self.gate.state_dict(),
            "paused": self.paused,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the champion and journal (an empty ``state``: a checkpoint written with the gate
        off, or before it existed — the restored learner becomes the champion)."""
        self.paused = bool(state.get("paused", False))
        self.rewind = {str(k): [int(v[0]), int(v[1])] for k, v in state.get("rewind", {}).items()}
        self.lineage = int(state.get("lineage", 0))
        if self.champion is None:
            return
        if "champion" not in state:
            self.promote(reason="restore")
            return
        self._champion_state = state["champion"]
        self.champion.load_state_dict(self._champion_state["learner"])
        self._golden_cache = {}
        self.champion_version = int(state["champion_version"])
        self.journal = [(str(t), int(p), int(o), bytes(raw)) for t, p, o, raw in state["journal"]]
        self.gate.load_state_dict(state["gate"])

"""The guardrails in the daemon: what its loop calls, so ``daemon.py`` keeps a few hook lines.

- :meth:`GuardHooks.connect` / :meth:`close`: the quarantine producer and the golden set;
- :meth:`learned` after each learned batch: journal, tally, promote or roll back;
- :meth:`operate` for an operator request (pause, resume, promote, rollback);
- :meth:`refresh_gauges` and :meth:`meta` once a second, for ``/metrics`` and ``/v2/models/{name}``.
A rollback sets :attr:`checkpoint_owed`: the loop checkpoints at once (the rollback's state is
then durable; before that a crash restarts from the state before it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import Config
from streamlearn.delivery import NON_FINITE_UPDATE, Pending, dead_letter_batch
from streamlearn.errors import CheckpointError
from streamlearn.guard.gate import REASONS
from streamlearn.guard.golden import GoldenSet
from streamlearn.guard.guardrails import Guardrails
from streamlearn.guard.operator import checkpoint_name
from streamlearn.guard.quarantine import Quarantine
from streamlearn.guard.rewind import read_ranges, unlearned_ranges
from streamlearn.ingest.deadletter import DeadLetterSink
from streamlearn.ingest.decode import Decoder
from streamlearn.logs import Throttled
from streamlearn.metrics import GuardMetrics, LearnerMetrics

log = logging.getLogger(__name__)


class GuardHooks:
    def __init__(
        self, cfg: Config, guard: Guardrails, registry: CollectorRegistry, store: CheckpointStore
    ) -> None:
        self.cfg = cfg
        self.guard = guard
        self.prom = GuardMetrics(registry)
        self.store = store
        self.quarantine: Quarantine | None = None
        self._sink: DeadLetterSink | None = None
        #: a rollback happened: checkpoint before anything else
        self.checkpoint_owed = False
        self._bootstrap = ""
        # At most a line a minute, with a count: a poisoning burst would write one per message.
        self._undone_log = Throttled(log, every_s=60.0)

    @property
    def paused(self) -> bool:
        return self.guard.paused

    def connect(self, bootstrap: str, decoder: Decoder) -> None:
        """Open the quarantine topic's producer and load the golden set (gate on only; with it off
        the producer opens at an operator rollback to a checkpoint, the one use it has then)."""
        self._bootstrap = bootstrap
        self.send_rewind()  # an operator rollback checkpointed before its quarantine was sent
        if not self.guard.enabled:
            return
        g = self.cfg.guard
        self._open_quarantine()
        if g.golden is not None and self.guard.golden is None:
            if g.golden.startswith("topic:"):
                from streamlearn.produce import topic_messages

                raw = [v for v, _ in topic_messages(bootstrap, g.golden[6:], self.cfg.kafka)]
                self.guard.golden = GoldenSet.from_messages(raw, decoder, source=g.golden)
            else:
                self.guard.golden = GoldenSet.from_file(g.golden, decoder)
            log.info("golden set: %d examples from %s", len(self.guard.golden), g.golden)

    def _open_quarantine(self) -> Quarantine:
        if self.quarantine is None:
            kafka = dataclasses.replace(self.cfg.kafka, dead_letter_topic=self.cfg.guard.quarantine_topic)
            self._sink = DeadLetterSink(kafka, self._bootstrap)
            self.quarantine = Quarantine(self._sink)
        return self.quarantine

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    # -- per batch ----------------------------------------------------------------------------
    def dead_letter_undone(
        self, sink: DeadLetterSink, pending: Pending, why: str, prom: LearnerMetrics
    ) -> None:
        """The non-finite guard undid the update: its messages are dead-lettered unchanged."""
        dead_letter_batch(sink, pending, NON_FINITE_UPDATE, why, prom)
        prom.updates_undone.inc()
        if self.guard.undone(len(pending.sources)).action == "rollback":  # learning stalled
            self.roll_back("every update undone for guard.rollback_after examples")
        self._undone_log.warning(
            "non-finite guard: update undone and dead-lettered (%s): %s", NON_FINITE_UPDATE, why
        )

    def learned(
        self,
        probs: torch.Tensor,
        champion_probs: torch.Tensor | None,
        y: torch.Tensor,
        task: int | None,
        sources: list[tuple[TopicPartition, int, bytes]],
    ) -> None:
        if champion_probs is None:  # gate off: nothing to journal or score, on every update
            return
        journal = [(tp.topic, tp.partition, off, raw) for tp, off, raw in sources]
        verdict = self.guard.learned(probs, champion_probs, y, task, journal)
        if verdict.action == "promote":
            self.prom.promotions.inc()
        elif verdict.action == "rollback":
            self.roll_back(f"the gate held ({verdict.reason}) for guard.rollback_after examples")

    def roll_back(self, detail: str) -> bool:
        assert self.quarantine is not None
        n = self.quarantine.roll_back(self.guard, detail)
        if n is None:
            return False
        self.prom.rollbacks.inc()
        self.prom.quarantined.inc(n)
        self.checkpoint_owed = True
        log.warning(
            "rollback: learner reset to the champion (version %d); %d examples quarantined to %s (%s)",
            self.guard.champion_version,
            n,
            self.cfg.guard.quarantine_topic,
            detail,
        )
        return True

    # -- operator -----------------------------------------------------------------------------
    def operate(
        self,
        action: str,
        arg: int,
        checkpoint: Callable[[str], bool],
        consumed: dict[TopicPartition, int] | None = None,
    ) -> bool:
        """Carry out ``POST /v2/admin/<action>``: ``checkpoint`` or an operator control; True when
        done (and checkpointed where it changes the model). ``consumed``: the daemon's next offset
        per partition (what a rollback to a checkpoint unlearns ends there)."""
        if action == "checkpoint":
            return checkpoint("requested")
        log.warning("operator: %s%s", action, f" {checkpoint_name(arg)}" if arg else "")
        if action in ("pause", "resume"):
            self.guard.paused = action == "pause"
            checkpoint(f"operator {action}")  # so that the pause survives a restart, if it can
            return True
        if action == "promote":
            if self.guard.champion is None:
                return True  # gate off: the learning model is already the served one
            self.guard.promote(reason="operator")
            self.prom.promotions.inc()
            return checkpoint("operator promote")
        if action == "rollback" and not arg:
            if self.guard.champion is None or self.quarantine is None:
                log.error("operator rollback to the champion needs guard.gate: true (or name a checkpoint)")
                return False
            return self.roll_back("operator rollback") and checkpoint("operator rollback")
        if action == "rollback":
            return self._roll_back_to(checkpoint_name(arg), checkpoint, consumed or {})
        return False

    def _roll_back_to(
        self, name: str, checkpoint: Callable[[str], bool], consumed: dict[TopicPartition, int]
    ) -> bool:
        """Adopt checkpoint ``name``; what the learner learned since goes to quarantine first
        (``guard/rewind.py``), acknowledged, then the rollback is checkpointed."""
        found = [info for info in self.store.list() if info.path.name == name]
        if not found:
            log.error("operator rollback: no checkpoint %s in %s", name, self.store.dir)
            return False
        try:
            state = self.store.read(found[0])
        except CheckpointError as exc:
            log.error("operator rollback: %s", exc)
            return False
        if int(state.get("guard", {}).get("lineage", 0)) != self.guard.lineage:
            log.error(
                "operator rollback: %s was written before a later rollback; its model learned examples "
                "that are now in quarantine (roll back to a checkpoint written since)",
                name,
            )
            return False
        self.guard.adopt(state["learner"], state["metrics"]["state"])
        self.guard.rewind = unlearned_ranges(state["offsets"], consumed)
        self.prom.rollbacks.inc()
        if not checkpoint("operator rollback"):  # the intent is not durable: quarantine anyway
            log.error("operator rollback to %s: not checkpointed", name)
        return self.send_rewind(f"operator rollback to {name}")

    def send_rewind(self, detail: str = "operator rollback to a checkpoint") -> bool:
        """Quarantine what an operator rollback unlearned (:attr:`Guardrails.rewind`); True when
        acknowledged (the next checkpoint then forgets the ranges; until then a restart resends)."""
        if not self.guard.rewind:
            return True
        try:
            messages = list(read_ranges(self._bootstrap, self.cfg.kafka, self.guard.rewind))
            n = self._open_quarantine().send(messages, detail)
        except Exception as exc:  # KafkaError, TimeoutError: kept, sent again at the next start
            log.error("%s: the unlearned examples are not quarantined yet: %s", detail, exc)
            return False
        self.guard.rewind = {}
        self.prom.quarantined.inc(n)
        self.checkpoint_owed = True
        log.warning(
            "%s: %d examples it unlearned quarantined to %s", detail, n, self.cfg.guard.quarantine_topic
        )
        return True

    # -- reporting ----------------------------------------------------------------------------
    def refresh_gauges(self) -> None:
        held = self.guard.held
        for reason in REASONS:
            self.prom.held.labels(reason=reason).set(int(held == reason))
        self.prom.paused.set(int(self.guard.paused))
        if self.guard.enabled:
            challenger, champion = self.guard.gate.scores
            self.prom.accuracy.labels(model="challenger", signal="paired").set(challenger)
            self.prom.accuracy.labels(model="champion", signal="paired").set(champion)
            if self.guard.gate.golden is not None:
                self.prom.accuracy.labels(model="challenger", signal="golden").set(self.guard.gate.golden[0])
                self.prom.accuracy.labels(model="champion", signal="golden").set(self.guard.gate.golden[1])

    def meta(self) -> dict[str, Any]:
        """The gate's state for ``/v2/models/{name}`` (empty with the gate off)."""
        if not self.guard.enabled:
            return {"paused": self.guard.paused} if self.guard.paused else {}
        return {
            "held": self.guard.held or None,
            "champion_version": self.guard.champion_version,
            "challenger_version": self.guard.learner.updates,
            "paused": self.guard.paused,
        }

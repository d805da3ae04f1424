"""The promotion gate and rollback on a real learner, without Kafka."""

from __future__ import annotations

import torch
from prometheus_client import CollectorRegistry

from streamlearn.config import Config
from streamlearn.config.schema import GuardConfig
from streamlearn.guard.gate import PromotionGate, Verdict
from streamlearn.guard.golden import GoldenSet
from streamlearn.guard.guardrails import Guardrails
from streamlearn.guard.quarantine import ROLLED_BACK, Quarantine
from streamlearn.metrics import LearnerMetrics
from streamlearn.model_state import ModelState, build_learner


class ListSink:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.fail = False

    def send(self, value, *, reason, detail, topic, partition, offset) -> None:
        self.sent.append(
            {"value": value, "reason": reason, "topic": topic, "partition": partition, "offset": offset}
        )

    def flush(self, timeout_s: float = 30.0) -> None:
        if self.fail:
            raise RuntimeError("broker away")


def _cfg(**guard) -> Config:
    cfg = Config()
    cfg.model.n_inputs, cfg.model.n_classes, cfg.model.hidden = 4, 3, [8]
    cfg.learner.name = "sgd"
    cfg.guard = GuardConfig(gate=True, **guard)
    return cfg


def _feed(state: ModelState, x: torch.Tensor, y: torch.Tensor, offset0: int = 0) -> list[str]:
    actions = []
    for i in range(x.shape[0]):
        xi, yi = x[i : i + 1], y[i : i + 1]
        probs = state.learner.predict_proba(xi)
        champ = state.guard.champion_predict(xi)
        state.learner.learn(xi, yi)
        src = [("examples", 0, offset0 + i, f"m{offset0 + i}".encode())]
        actions.append(state.guard.learned(probs, champ, yi, None, src).action)
    return actions


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) * 0.3
    x[torch.arange(n), y] += 2.0
    return x, y


def test_gate_promotes_a_learner_that_improves_and_serves_the_champion() -> None:
    state = ModelState(_cfg(promote_every=20), LearnerMetrics(CollectorRegistry()))
    assert state.guard.served_model is not state.learner.model
    x, y = _data(100)
    actions = _feed(state, x, y)
    assert "promote" in actions
    assert state.guard.champion_version == state.learner.updates  # the last candidate was promoted
    for a, b in zip(state.guard.served_model.parameters(), state.learner.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_golden_set_holds_corrupted_labels_and_rollback_restores_the_champion() -> None:
    cfg = _cfg(promote_every=20, rollback_after=40, golden_margin=0.05)
    state = ModelState(cfg, LearnerMetrics(CollectorRegistry()))
    x, y = _data(300)
    _feed(state, x, y)
    gx, gy = _data(200, seed=1)
    state.guard.golden = GoldenSet(gx, gy, torch.zeros(200, dtype=torch.long).numpy())
    bx, by = _data(200, seed=2)
    actions = _feed(state, bx, (by + 1) % 3, offset0=1000)  # a producer bug: labels shifted
    assert "hold" in actions and "rollback" in actions
    assert "promote" not in actions[actions.index("hold") :]
    # a rollback waits for the quarantine: the journal is what the learner learned since the champion
    assert (
        len(state.guard.journal)
        == state.learner.examples - state.guard._champion_state["learner"]["examples"]
    )
    assert state.guard.held == "golden"


def test_quarantine_sends_the_journal_before_rolling_back_and_retries_on_failure() -> None:
    state = ModelState(_cfg(promote_every=1000), LearnerMetrics(CollectorRegistry()))
    before = state.learner.state_dict()
    x, y = _data(30)
    _feed(state, x, y, offset0=7)
    sink = ListSink()
    q = Quarantine(sink)
    sink.fail = True
    assert q.roll_back(state.guard, "test") is None
    assert state.learner.examples == 30  # nothing rolled back while unacknowledged
    sink.fail = False
    assert q.roll_back(state.guard, "test") == 30
    assert [m["offset"] for m in sink.sent] == list(range(7, 37))  # each sent once, in order
    assert {m["reason"] for m in sink.sent} == {ROLLED_BACK} and sink.sent[0]["value"] == b"m7"
    assert state.learner.examples == 0 and state.guard.journal == []
    for k, v in state.learner.state_dict()["model"].items():
        assert torch.equal(v, before["model"][k])


def test_checkpoint_round_trip_keeps_champion_and_journal() -> None:
    cfg = _cfg(promote_every=25)
    state = ModelState(cfg, LearnerMetrics(CollectorRegistry()))
    x, y = _data(60)
    _feed(state, x, y)
    saved = state.state_dict({"examples:0": 60})
    again = ModelState(cfg, LearnerMetrics(CollectorRegistry()))
    again.load_state_dict(saved)
    assert again.guard.champion_version == state.guard.champion_version
    assert again.guard.journal == state.guard.journal and len(again.guard.journal) == 10
    for a, b in zip(
        again.guard.served_model.parameters(), state.guard.served_model.parameters(), strict=True
    ):
        assert torch.equal(a, b)


def test_gate_off_serves_the_learner() -> None:
    learner = build_learner(Config())
    from streamlearn.evaluation.prequential import PrequentialMetrics

    g = Guardrails(GuardConfig(), learner, PrequentialMetrics(10), lambda: build_learner(Config()))
    assert g.served_model is learner.model and g.champion_predict(torch.zeros(1, 784)) is None
    assert g.state_dict() == {}


def test_paired_signal_holds_then_rolls_back() -> None:
    g = PromotionGate(promote_every=20, margin=0.1, golden_margin=0.0, rollback_after=40)
    g.observe(challenger_right=[True] * 12 + [False] * 8, champion_right=[True] * 20)
    assert g.verdict() == ("hold", "paired")  # 8 of 20 lost: 0.4 > 0.1, and 8 > 2·sqrt(8)
    g.observe(challenger_right=[True] * 20, champion_right=[False] * 4 + [True] * 16)
    assert g.verdict().action == "promote"  # 8 lost, 4 won over 40: within the noise
    g.reset()
    g.observe(challenger_right=[False] * 40, champion_right=[True] * 40)
    assert g.verdict() == ("rollback", "paired")  # worse over 40 >= rollback_after examples
    g.reset()
    g.observe(challenger_right=[False, True] * 10, champion_right=[True, False] * 10)
    assert g.verdict().action == "promote"  # as many won as lost: noise, not a regression
    g.reset()
    assert g.stalled(30).action == "wait" and g.stalled(10) == ("rollback", "stalled")
    g.reset()
    g.stalled(30)
    g.observe(challenger_right=[True], champion_right=[True])  # learned again: the count restarts
    assert g.stalled(30).action == "wait"


def test_labels_signal_holds_a_stream_the_golden_set_contradicts_before_any_learning_shows() -> None:
    g = PromotionGate(promote_every=25, margin=0.02, golden_margin=0.03, rollback_after=25)
    golden = ([True] * 240 + [False] * 60, [True] * 240 + [False] * 60)  # both 80 %: no golden damage
    # the champion gets 1 of 25 right on the stream but 80 % of the golden examples of the same task
    g.observe(challenger_right=[False] * 24 + [True], champion_right=[False] * 24 + [True])
    assert g.verdict(golden, 3, task_matched=True) == ("rollback", "labels")
    g.reset()
    g.observe(challenger_right=[False] * 24 + [True], champion_right=[False] * 24 + [True])
    # the golden set holds no examples of this task: a new distribution, not evidence of a bug
    assert g.verdict(golden, 4, task_matched=False).action == "promote"
    g.reset()
    g.observe(challenger_right=[True] * 18 + [False] * 7, champion_right=[True] * 18 + [False] * 7)
    assert g.verdict(golden, 3, task_matched=True).action == "promote"  # 72 % vs 80 %: noise


def test_a_label_bug_is_quarantined_from_its_first_candidate() -> None:
    cfg = _cfg(promote_every=20, rollback_after=20, golden_margin=0.05)
    state = ModelState(cfg, LearnerMetrics(CollectorRegistry()))
    x, y = _data(300)
    _feed_task(state, x, y, 0)
    state.guard.promote(reason="test")
    gx, gy = _data(200, seed=1)
    state.guard.golden = GoldenSet(gx, gy, torch.zeros(200, dtype=torch.long).numpy())
    learned_before = state.learner.examples
    bx, by = _data(100, seed=2)
    sink = ListSink()
    q = Quarantine(sink)
    verdicts = []
    for i in range(0, 100, 20):  # as the daemon: a rollback verdict quarantines, then resets
        verdicts += _feed_task(state, bx[i : i + 20], (by[i : i + 20] + 1) % 3, 0, offset0=1000 + i)
        if verdicts[-1].action == "rollback":
            assert q.roll_back(state.guard, "test") == 20
    # every candidate of the bug fails on the labels signal, from the first: nothing promoted
    assert [v for v in verdicts if v.action != "wait"] == [("rollback", "labels")] * 5
    assert sorted(m["offset"] for m in sink.sent) == list(range(1000, 1100))
    assert state.learner.examples == learned_before


def _feed_task(
    state: ModelState, x: torch.Tensor, y: torch.Tensor, task: int, offset0: int = 0
) -> list[Verdict]:
    actions = []
    for i in range(x.shape[0]):
        xi, yi = x[i : i + 1], y[i : i + 1]
        probs = state.learner.predict_proba(xi)
        champ = state.guard.champion_predict(xi)
        state.learner.learn(xi, yi, task=task)
        src = [("examples", 0, offset0 + i, b"")]
        actions.append(state.guard.learned(probs, champ, yi, task, src))
    return actions

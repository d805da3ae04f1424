"""The contract every learner must honour (the daemon relies on each point)."""

import inspect
import io
import typing

import pytest
import torch

from streamlearn.bounds import Range
from streamlearn.errors import ConfigError
from streamlearn.learners import LEARNERS, Learner, make_learner, mlp, small_cnn

SMALL = {
    "sgd": {},
    "er": dict(memories=30, replay_batch_size=5),
    "mer": dict(memories=30, replay_batch_size=5, batches_per_example=2),
    "lamaml": dict(memories=30, replay_batch_size=5, glances=2),
    "cmaml": dict(memories=30, replay_batch_size=5, glances=2),
}
#: Marks of a case on the GPU: run with ``-m cuda``; skipped, and listed by -rs, where there is none.
ON_CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
#: (learner, fast_path, device): every path on the CPU, then every learner's default and reference
#: path on the GPU (the default there is the device path for mer, lamaml and cmaml).
CASES = [
    (name, fast, "cpu")
    for name in sorted(LEARNERS)
    for fast in ((True, False, "device") if name in ("mer", "lamaml", "cmaml") else (None,))
] + [
    pytest.param(name, fast, "cuda", marks=ON_CUDA, id=f"{name}-{fast}-cuda")
    for name in sorted(LEARNERS)
    for fast in ((None, False) if name in ("mer", "lamaml", "cmaml") else (None,))
]


def build(
    name: str, fast: bool | str | None, seed: int = 0, model=None, device: str = "cpu", **extra
) -> Learner:
    hp = dict(SMALL[name], **extra)
    if fast is not None:
        hp["fast_path"] = fast
    model = model or mlp(6, 3, (8,), seed=seed)
    return make_learner(name, model, n_classes=3, seed=seed, device=device, **hp)


def feed(learner: Learner, x, y, start: int, stop: int) -> None:
    bs = learner.default_batch_size
    for i in range(start, stop, bs):
        learner.learn(x[i : i + bs], y[i : i + bs], task=i // 100)


def state_vector(learner: Learner) -> torch.Tensor:
    parts = [p.detach().reshape(-1) for p in learner.model.parameters()]
    if learner.buffer is not None:
        parts += [learner.buffer.x.reshape(-1), learner.buffer.y.float()]
    parts += [a.detach().reshape(-1) for a in getattr(learner, "alpha", {}).values()]
    return torch.cat(parts).cpu()


@pytest.mark.parametrize("name,fast,device", CASES)
def test_learns_an_easy_problem(blobs, name, fast, device) -> None:
    x, y = blobs
    learner = build(name, fast, device=device)
    feed(learner, x, y, 0, 300)
    acc = float((learner.predict_proba(x[300:]).argmax(1).cpu() == y[300:]).float().mean())
    assert acc > 0.9, f"{name}: held-out accuracy {acc:.2f}"


@pytest.mark.parametrize("name,fast,device", CASES)
def test_save_load_continue_is_bit_identical(blobs, name, fast, device) -> None:
    x, y = blobs
    straight = build(name, fast, device=device)
    feed(straight, x, y, 0, 120)

    first = build(name, fast, device=device)
    feed(first, x, y, 0, 60)
    blob = io.BytesIO()
    torch.save(first.state_dict(), blob)
    blob.seek(0)
    # a different start, overwritten
    resumed = build(name, fast, seed=123, model=mlp(6, 3, (8,), seed=99), device=device)
    resumed.load_state_dict(torch.load(blob, weights_only=True))
    feed(resumed, x, y, 60, 120)
    assert torch.equal(state_vector(straight), state_vector(resumed))
    assert resumed.examples == straight.examples == 120


@pytest.mark.parametrize("name,fast,device", CASES)
def test_deterministic_under_a_seed(blobs, name, fast, device) -> None:
    x, y = blobs
    a, b, c = (build(name, fast, seed=s, device=device) for s in (0, 0, 1))
    for learner in (a, b, c):
        feed(learner, x, y, 0, 60)
    assert torch.equal(state_vector(a), state_vector(b))
    assert not torch.equal(state_vector(a), state_vector(c))


@pytest.mark.parametrize("name,fast,device", CASES)
def test_predict_is_a_probability_and_mutates_nothing(blobs, name, fast, device) -> None:
    x, y = blobs
    learner = build(name, fast, device=device)
    feed(learner, x, y, 0, 30)
    before = state_vector(learner).clone()
    learner.model.train()
    p1 = learner.predict_proba(x[:50]).cpu()
    p2 = learner.predict_proba(x[:50]).cpu()
    assert p1.shape == (50, 3)
    assert torch.allclose(p1.sum(1), torch.ones(50), atol=1e-5) and bool((p1 >= 0).all())
    assert torch.equal(p1, p2)
    assert torch.equal(before, state_vector(learner))
    assert learner.model.training  # mode restored


@pytest.mark.parametrize(
    "name,fast,device",
    [
        *((name, None, "cpu") for name in sorted(LEARNERS)),
        *((name, "device", "cpu") for name in ("mer", "lamaml", "cmaml")),
        *(pytest.param(name, None, "cuda", marks=ON_CUDA) for name in sorted(LEARNERS)),
    ],
)
def test_any_module_works_a_small_cnn(name, fast, device) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 64, generator=g)
    y = torch.randint(0, 3, (20,), generator=g)
    learner = build(name, fast, model=small_cnn((1, 8, 8), 3, channels=2), device=device)
    before = state_vector(learner).clone()
    feed(learner, x, y, 0, 20)
    assert not torch.equal(
        before[: sum(p.numel() for p in learner.model.parameters())],
        state_vector(learner)[: sum(p.numel() for p in learner.model.parameters())],
    )
    assert learner.predict_proba(x).shape == (20, 3)


@pytest.mark.parametrize("name", ["er", "mer", "lamaml"])
def test_gradient_alignment_reported_every_n_updates(blobs, name) -> None:
    x, y = blobs
    learner = build(name, None, alignment_every=3)
    seen = []
    bs = learner.default_batch_size
    for _u, i in enumerate(range(0, 60, bs)):
        st = learner.learn(x[i : i + bs], y[i : i + bs])
        seen.append(st.alignment_cos is not None)
        if st.alignment_cos is not None:
            assert -1.0 <= st.alignment_cos <= 1.0
            assert st.alignment_dot is not None
    # every 3rd update once the buffer holds something (update 0 has an empty buffer)
    assert seen == [u % 3 == 0 and u > 0 for u in range(len(seen))]


def test_alignment_of_an_example_with_itself_is_one() -> None:
    learner = make_learner("er", mlp(6, 3, (8,)), n_classes=3, memories=1, alignment_every=1, lr=1e-9)
    x, y = torch.rand(1, 6), torch.tensor([1])
    learner.learn(x, y)
    st = learner.learn(x, y)
    assert st.alignment_cos == pytest.approx(1.0, abs=1e-5)
    assert st.alignment_dot is not None and st.alignment_dot > 0


def test_lamaml_reports_learning_rate_stats(blobs) -> None:
    x, y = blobs
    learner = build("lamaml", None)
    st = learner.learn(x[:10], y[:10])
    assert set(st.lr_stats) == {"mean", "min", "max"}
    assert st.lr_stats["min"] <= st.lr_stats["mean"] <= st.lr_stats["max"]
    assert st.lr_stats["mean"] != pytest.approx(0.15)  # the rates were learned, not left at alpha_init


def test_bad_hyper_parameters_are_named() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        make_learner("mer", mlp(6, 3), n_classes=3, bogus=1)
    with pytest.raises(ConfigError, match="lr: expected float"):
        make_learner("mer", mlp(6, 3), n_classes=3, lr="fast")
    with pytest.raises(ConfigError, match="unknown learner"):
        make_learner("gem", mlp(6, 3), n_classes=3)


# What checkpoints and `bench` recorded before hparams() was read from the signature: same keys,
# same values (fast_path, device, seed, alignment_every are not hyper-parameters).
DEFAULT_HPARAMS = {
    "sgd": {"lr": 0.01, "grad_clip_norm": None},
    "er": {"lr": 0.1, "grad_clip_norm": None, "memories": 200, "replay_batch_size": 10, "glances": 5},
    "mer": {
        "lr": 0.1,
        "beta": 0.01,
        "gamma": 1.0,
        "memories": 200,
        "replay_batch_size": 10,
        "batches_per_example": 5,
        "grad_clip_norm": None,
    },
    "lamaml": {
        "memories": 200,
        "replay_batch_size": 10,
        "glances": 5,
        "alpha_init": 0.15,
        "opt_lr": 0.3,
        "opt_wt": 0.1,
        "learn_lr": True,
        "sync_update": False,
        "second_order": False,
        "grad_clip_norm": 2.0,
        "use_old_task_memory": False,
    },
    "cmaml": {
        "memories": 200,
        "replay_batch_size": 10,
        "glances": 5,
        "alpha_init": 0.1,
        "opt_wt": 0.1,
        "second_order": False,
        "grad_clip_norm": 2.0,
        "use_old_task_memory": False,
    },
}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_hparams_are_the_signature_and_what_checkpoints_recorded(name) -> None:
    assert make_learner(name, mlp(6, 3), n_classes=3).hparams() == DEFAULT_HPARAMS[name]
    learner = make_learner(name, mlp(6, 3), n_classes=3, memories=7) if name != "sgd" else None
    if learner is not None:
        assert learner.hparams()["memories"] == 7


def _ranges(tp) -> list[Range]:
    """The Range annotations of a type, looking inside ``X | None``."""
    if typing.get_origin(tp) is typing.Annotated:
        return [m for m in tp.__metadata__ if isinstance(m, Range)]
    return [r for arg in typing.get_args(tp) for r in _ranges(arg)]


def _is_choice(tp) -> bool:
    """bool, a Literal, or a union of those and None: a choice, with no range to declare."""
    if tp is bool or tp is type(None) or typing.get_origin(tp) is typing.Literal:
        return True
    args = typing.get_args(tp)
    return typing.get_origin(tp) is not typing.Annotated and bool(args) and all(map(_is_choice, args))


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_every_numeric_argument_declares_its_range_and_the_default_is_in_it(name) -> None:
    cls = LEARNERS[name]
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    checked = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind is not p.KEYWORD_ONLY or p.name == "device" or _is_choice(hints[p.name]):
            continue
        ranges = _ranges(hints[p.name])
        assert len(ranges) == 1, f"{name}.{p.name}: {hints[p.name]} declares no range"
        if p.default is not inspect.Parameter.empty and p.default is not None:
            assert ranges[0].contains(p.default), f"{name}.{p.name}: default {p.default} out of range"
        checked.append(p.name)
    assert "grad_clip_norm" in checked and "seed" in checked


@pytest.mark.parametrize(
    "name,key,value",
    [
        ("sgd", "lr", 0.0),
        ("er", "glances", 0),  # ZeroDivisionError in learn() before ranges were declared
        ("er", "replay_batch_size", 0),
        ("mer", "lr", -0.1),
        ("mer", "beta", 0.0),
        ("mer", "gamma", -1.0),
        ("mer", "batches_per_example", -1),
        ("mer", "grad_clip_norm", -1.0),
        ("lamaml", "glances", -3),
        ("lamaml", "alpha_init", 0.0),
        ("cmaml", "opt_wt", 0.0),
    ],
)
def test_settings_that_learn_nothing_are_out_of_range(name, key, value) -> None:
    tp = typing.get_type_hints(LEARNERS[name].__init__, include_extras=True)[key]
    ranges = _ranges(tp)
    assert ranges and not any(r.contains(value) for r in ranges)

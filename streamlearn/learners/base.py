"""The contract every learner honours, so the daemon never knows which one it drives.

A learner owns a model and (if it replays) a reservoir buffer. It learns from a micro-batch of
tensors, predicts probabilities, and round-trips its whole state through ``state_dict`` — tensors
and plain Python values only, so a checkpoint loads with ``torch.load(weights_only=True)``.

A subclass declares its hyper-parameters once, as typed keyword arguments of ``__init__`` with their
range beside them (``lr: PositiveFloat = 0.1``, see ``streamlearn.bounds``), and stores each under the
same attribute name; ``hparams()`` reads them back from the signature. A learner with a kernel for
plain MLPs calls ``_choose_path`` once; ``_kernel`` is then the lean path (``CompiledMLP`` when numba
is there, else ``NumpyMLP``), or None for the reference (torch.func) path; ``path`` names the choice.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from streamlearn.bounds import NonNegativeInt, PositiveInt
from streamlearn.errors import ConfigError
from streamlearn.learners import functional as F_
from streamlearn.learners.kernels import NumpyMLP
from streamlearn.learners.undo import DEFAULT_MAX_ABS_VALUE, UpdateUndo, restore_rng_states, rng_states
from streamlearn.replay import ReservoirBuffer
from streamlearn.replay.reservoir import OUTLIER_FACTOR

log = logging.getLogger(__name__)

#: The ``fast_path`` keyword of learners with a kernel: None picks the fastest path the model allows,
#: False the reference path, True a lean path or a ValueError, "compiled" / "numpy" that lean path,
#: "device" the device-resident torch path (``device_path.py``; the default on a non-CPU device),
#: "cuda_graph" that path with its updates captured in CUDA graphs (``cuda_graphs.py``; opt-in).
FastPath = bool | Literal["compiled", "numpy", "device", "cuda_graph"] | None


@dataclass
class UpdateStats:
    """What one call to ``learn`` reports; the daemon turns it into metrics."""

    n: int
    loss: float
    # Cosine / dot product between the gradient on the incoming batch and on a replay sample,
    # measured at the parameters before the update (None when not measured this update).
    alignment_cos: float | None = None
    alignment_dot: float | None = None
    # La-MAML: statistics of the effective per-parameter learning rates relu(alpha).
    lr_stats: dict[str, float] = field(default_factory=dict)
    # Why the update was undone (the non-finite guard, see ``undo.py``), or None: it was learned.
    undone: str | None = None
    # The device path's loss and rate statistics, still on the device: ``learn`` reads them into
    # ``loss`` and ``lr_stats`` in the guard's one transfer (``UpdateUndo.settle``), then empties it.
    on_device: dict[str, torch.Tensor] = field(default_factory=dict)


class Learner:
    """Base class: model, device, seeded RNGs, prediction and the state round-trip."""

    name: ClassVar[str] = "base"
    #: micro-batch size the daemon feeds by default (MER learns one example at a time).
    default_batch_size: ClassVar[int] = 1
    #: keyword arguments of ``__init__`` that are not hyper-parameters: what the learner trains, where,
    #: from which seed, what it measures, and ``fast_path``, which picks an implementation of the same
    #: maths (checkpoints and ``bench`` never recorded it).
    _NOT_HPARAMS: ClassVar[frozenset[str]] = frozenset(
        {"model", "n_classes", "device", "seed", "alignment_every", "fast_path"}
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: PositiveInt,
        device: str = "cpu",
        seed: NonNegativeInt = 0,
        alignment_every: NonNegativeInt = 0,
    ) -> None:
        self.device = available_device(device)
        self.model = model.to(self.device)
        self.n_classes = int(n_classes)
        self.seed = int(seed)
        self.alignment_every = int(alignment_every)
        self.updates = 0
        self.examples = 0
        # One generator for the learner's own random choices (batch shuffles); the buffer has
        # its own, and alignment probes use a third so measuring never changes what is learned.
        self.rng = np.random.Generator(np.random.PCG64([seed, 1]))
        self._probe_rng = np.random.Generator(np.random.PCG64([seed, 2]))
        self.buffer: ReservoirBuffer | None = None
        n_inputs = F_.infer_n_inputs(model)
        self.n_inputs = n_inputs
        # The numpy kernel when the lean path applies, else None: prediction and updates then run
        # the reference path (any module, any device). Set by _choose_path; fast_path reports it.
        self._kernel: NumpyMLP | None = None
        self.fast_path = False
        self.path: Literal["compiled", "numpy", "device", "reference"] = "reference"
        #: the device path's captured CUDA graphs by input shape (fast_path "cuda_graph"), else None
        self.cuda_graphs: dict[Any, Any] | None = None
        #: the non-finite guard's bound on any learned value (config ``guard.max_abs_value``)
        self.max_abs_value = DEFAULT_MAX_ABS_VALUE
        self._undo: UpdateUndo | None = None  # made at the first update, once every tensor exists

    def _choose_path(self, fast_path: FastPath, *, needs: str, possible: bool = True) -> None:
        """Decide once between the compiled, the numpy and the reference path (same maths).

        ``fast_path`` None or True takes the numpy path where the model allows it (True insists:
        ValueError naming ``needs`` when it cannot), False the reference path, "numpy" or "compiled"
        that one. The compiled (numba) path is opt-in for now: it is about 3x faster, but compiling
        costs 14-27 s at a process's first start (cached on disk after, which a read-only pod
        loses), and on one seed its float32 rounding moves the benchmark's RA by up to 0.01 (as a
        1e-7 nudge of the initial weights does on the numpy path; over 3 seeds the means agree).
        ``possible`` False rules the lean paths out for a reason of the learner's own (La-MAML's
        second-order updates need autograd). "device", and None on a non-CPU device, take the
        device path (any module, any device; see ``device_path.py``).
        """
        if fast_path in ("device", "cuda_graph") or (fast_path is None and self.device.type != "cpu"):
            if fast_path == "cuda_graph" and self.device.type != "cuda":
                raise ValueError(f"fast_path='cuda_graph' needs a CUDA device, not {self.device}")
            self._kernel, self.fast_path, self.path = None, False, "device"
            self.cuda_graphs = {} if fast_path == "cuda_graph" else None
            return
        kernel = NumpyMLP.from_module(self.model) if fast_path is not False and possible else None
        if fast_path not in (None, False) and kernel is None:
            raise ValueError(f"fast_path={fast_path!r} needs {needs}")
        if kernel is not None and fast_path == "compiled":
            compiled = _compiled(kernel)
            if compiled is None and fast_path == "compiled":
                raise ValueError("fast_path='compiled' needs numba (pip install numba)")
            kernel = compiled or kernel
        self._kernel = kernel
        self.fast_path = kernel is not None
        self.path = "reference" if kernel is None else "numpy" if type(kernel) is NumpyMLP else "compiled"

    # -- the contract -------------------------------------------------------------------------
    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None = None) -> UpdateStats:
        """Learn from a micro-batch: ``x`` float (n, n_inputs), ``y`` long (n,)."""
        x = x.to(self.device, torch.float32)
        y = y.to(self.device, torch.long)
        probe = self._alignment_probe(x, y) if self._alignment_due() else None
        # The non-finite guard (undo.py): mark, update, check; a broken update leaves no trace.
        if self._undo is None:
            self._undo = UpdateUndo(self._learned_tensors(), self.max_abs_value)
        self._undo.max_abs_value = self.max_abs_value
        self._undo.mark()
        rngs = rng_states(self.rng, self._probe_rng)
        extra = self._mark_extra()
        if self.buffer is not None:
            self.buffer.mark()
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is the guard's to judge
            stats = self._learn(x, y, task)
        stored = self.buffer.written() if self.buffer is not None else None
        if stats.on_device:  # the device path: its loss and rates come back with the guard's read
            problem, read = self._undo.settle(stats.on_device, stored)
            stats.loss, stats.on_device = read.pop("loss"), {}
            stats.lr_stats = read
        else:
            problem = self._undo.problem(stats.loss, stored)
        if problem is not None:
            self._undo.undo()
            restore_rng_states((self.rng, self._probe_rng), rngs)
            self._undo_extra(extra)
            if self.buffer is not None:
                self.buffer.undo()
                self._evict_replay_outliers()
            return UpdateStats(n=int(x.shape[0]), loss=stats.loss, undone=problem)
        if self.buffer is not None:
            self.buffer.release()
        self.updates += 1
        self.examples += int(x.shape[0])
        if probe is not None:
            stats.alignment_cos, stats.alignment_dot = probe
        return stats

    def _learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
        raise NotImplementedError

    def _evict_replay_outliers(self) -> None:
        """After an undone update: a stored example of extreme magnitude, replayed, may be the
        cause, and would undo every later update that draws it. Drop such rows (with a warning)."""
        assert self.buffer is not None
        evicted = self.buffer.evict_outliers()
        if evicted:
            log.warning(
                "an update was undone and the replay memory held %d example(s) of extreme magnitude "
                "(over %g times the median example's largest feature): removed them",
                evicted,
                OUTLIER_FACTOR,
            )

    def _learned_tensors(self) -> list[torch.Tensor]:
        """Every tensor an update changes in place; the guard copies them before each update.

        The model's parameters and buffers here; a subclass that learns more (La-MAML's rates)
        adds its own.
        """
        return [*self.model.parameters(), *self.model.buffers()]

    def _mark_extra(self) -> Any:
        """Plain state an update may change besides the tensors (undone with ``_undo_extra``)."""
        return None

    def _undo_extra(self, saved: Any) -> None:
        pass

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (n, n_classes); never changes the model."""
        if self._kernel is not None and x.device.type == "cpu":
            return torch.from_numpy(self._kernel.predict_proba(x.to(torch.float32).numpy()))
        was_training = self.model.training
        self.model.eval()
        try:
            logits = self.model(x.to(self.device, torch.float32))
        finally:
            self.model.train(was_training)
        return torch.softmax(logits, dim=1)

    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters, under the same names as the constructor's keyword arguments.

        Read from the signature (as river's ``_get_params`` does), so a new keyword argument is
        recorded in checkpoints and ``bench`` output without a second list to keep in step.
        """
        params = inspect.signature(type(self).__init__).parameters.values()
        return {
            p.name: getattr(self, p.name)
            for p in params
            if p.kind is p.KEYWORD_ONLY and p.name not in self._NOT_HPARAMS
        }

    # -- gradient alignment -------------------------------------------------------------------
    def _alignment_due(self) -> bool:
        return (
            self.alignment_every > 0
            and self.buffer is not None
            and len(self.buffer) > 0
            and self.updates % self.alignment_every == 0
        )

    def _alignment_probe(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        assert self.buffer is not None
        n = min(len(self.buffer), max(10, int(x.shape[0])))
        idx = torch.as_tensor(self._probe_rng.choice(len(self.buffer), size=n, replace=False))
        idx = idx.to(self.device)
        return F_.gradient_alignment(self.model, x, y, self.buffer.x[idx], self.buffer.y[idx])

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "learner": self.name,
            "hparams": self.hparams(),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "updates": self.updates,
            "examples": self.examples,
            "rng": self.rng.bit_generator.state,
            "probe_rng": self._probe_rng.bit_generator.state,
        }
        if self.buffer is not None:
            state["buffer"] = self.buffer.state_dict()
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("learner") != self.name:
            raise ValueError(f"state is for learner {state.get('learner')!r}, this is {self.name!r}")
        with torch.no_grad():
            # copy_ into the existing tensors: the numpy kernel (lean path) holds views of them.
            own = self.model.state_dict()
            missing = set(own) ^ set(state["model"])
            if missing:
                raise ValueError(f"model state does not match this model: {sorted(missing)[:5]}")
            for k, v in state["model"].items():
                own[k].copy_(v)
        self.updates = int(state["updates"])
        self.examples = int(state["examples"])
        self.rng.bit_generator.state = state["rng"]
        self._probe_rng.bit_generator.state = state["probe_rng"]
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def available_device(device: str) -> torch.device:
    """``device`` as a torch device, or a ConfigError saying plainly that it is not on this machine
    (torch's own error is an AssertionError from deep inside ``model.to``)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "without CUDA"
        raise ConfigError(
            f"{device!r}: no CUDA device is available here (torch {torch.__version__}, built {build}); "
            "use device cpu",
            key="device",
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"{device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)", key="device"
        )
    return dev


def _compiled(kernel: NumpyMLP) -> NumpyMLP | None:
    """The compiled kernel over the same weights, or None where numba is not installed.

    Imported here, not at the top: numba takes ~0.3 s to import and only learners that use it pay.
    """
    try:
        from streamlearn.learners.compiled import CompiledMLP
    except ImportError:
        return None
    return CompiledMLP(kernel.Ws, kernel.bs)

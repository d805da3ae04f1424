"""Compiled (numba) inner loops for ReLU MLPs: one call per MER example and per La-MAML glance.

The numpy kernels (``kernels.py``) spend most of their time between BLAS calls: a MER step is ~20
numpy calls of a few µs each on vectors of 100 floats. Here the whole sequence of steps runs in one
compiled function, so nothing returns to the interpreter between the sequential steps. The maths is
that of ``NumpyMLP`` (DESIGN.md §9; the tests hold compiled, numpy and reference paths to 1e-5 of
each other); only the order of some float32 additions differs.

Exact shortcuts for the first layer (784 inputs, most of them 0 in an image), whose update in one
step is an outer product with the input, so zero wherever the pixel is 0:

* MER (``compiled_mer.py``): an example's batches work on the first layer transposed (pixel rows),
  so the batch's pre-activations and its Reptile update touch the rows of non-zero pixels only;
* La-MAML (``compiled_lamaml.py``): the meta rows' first-layer pre-activations are *updated* after
  each inner step over the pixels they share with the example, not recomputed; the current
  examples are meta rows too, so their inner steps read theirs from there; the α-gradient of the
  first layer is summed per pixel over the (example, meta row) pairs that share it.

numba settings and shared loops are in ``compiled_jit.py``: compiled on first call, cached on disk
where a directory is writable (else compiled at each start, with a warning), no fastmath, one
thread. Weights come in as tuples of numpy *views* of the torch parameters, so an update here is
what ``predict_proba`` and ``state_dict`` see at once.
"""

from __future__ import annotations

import numpy as np

from streamlearn.learners.compiled_jit import _lr_stats
from streamlearn.learners.compiled_lamaml import _lamaml_glance, _lamaml_update
from streamlearn.learners.compiled_mer import _mer_example
from streamlearn.learners.kernels import NumpyMLP


class CompiledMLP(NumpyMLP):
    """``NumpyMLP`` whose MER example and La-MAML glance/update run as compiled functions."""

    def __init__(self, Ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
        super().__init__(Ws, bs)
        # Tuples, not lists: numba types a tuple of same-typed arrays without copying it.
        self._Ws = tuple(Ws)
        self._bs = tuple(bs)

    def mer_example(
        self,
        x: np.ndarray,
        y: int,
        bank_x: np.ndarray,
        bank_y: np.ndarray,
        idx: np.ndarray,
        lr: float,
        beta: float,
        gamma: float,
        max_norm: float | None,
    ) -> float:
        """All of one example's MER batches: batch b is ``x`` then ``bank_x[idx[b]]``.

        Within-batch Reptile with ``beta`` after each batch, across-batch with ``gamma`` after all.
        Returns the sum of the per-step losses.
        """
        clip = -1.0 if max_norm is None else float(max_norm)
        return float(_mer_example(self._Ws, self._bs, x, int(y), bank_x, bank_y, idx, lr, beta, gamma, clip))

    def lamaml_glance_compiled(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        BX: np.ndarray,
        BY: np.ndarray,
        alpha_W: list[np.ndarray],
        alpha_b: list[np.ndarray],
        alpha_grads: bool = True,
    ) -> tuple[float, list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """``NumpyMLP.lamaml_glance`` without the callback: mean meta-loss, ∇θ (W, b), ∇α (W, b)."""
        m, n = BX.shape[0], xs.shape[0]
        if m >= n and np.array_equal(BX[m - n :], xs):  # the meta batch ends with xs, as La-MAML's does
            E, cur = BX, m - n
        else:
            E, cur = np.concatenate([BX, xs]), m
        meta, gW, gb, aW, ab = _lamaml_glance(
            self._Ws, self._bs, tuple(alpha_W), tuple(alpha_b), xs, ys, E, BY, m, cur, alpha_grads
        )
        return float(meta), list(gW), list(gb), list(aW), list(ab)

    def lamaml_update(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        BX: np.ndarray,
        BY: np.ndarray,
        alpha_W: tuple[np.ndarray, ...],
        alpha_b: tuple[np.ndarray, ...],
        *,
        learn_lr: bool,
        opt_lr: float,
        opt_wt: float,
        sync_update: bool,
        max_norm: float | None,
    ) -> float:
        """One glance and its update of α and θ in place (as ``LaMAML._apply``); the mean meta-loss."""
        clip = -1.0 if max_norm is None else float(max_norm)
        return float(
            _lamaml_update(
                self._Ws,
                self._bs,
                alpha_W,
                alpha_b,
                xs,
                ys,
                BX,
                BY,
                learn_lr,
                opt_lr,
                opt_wt,
                sync_update,
                clip,
            )
        )

    @staticmethod
    def lr_stats(alpha_W: tuple[np.ndarray, ...], alpha_b: tuple[np.ndarray, ...]) -> dict[str, float]:
        """``LaMAML.lr_stats`` over the rates' numpy views: mean, min and max of relu(α)."""
        mean, lo, hi = _lr_stats(alpha_W, alpha_b)
        return {"mean": float(mean), "min": float(lo), "max": float(hi)}

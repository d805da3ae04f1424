"""Compiled (numba) inner loops for ReLU MLPs: one call per MER example and per La-MAML glance.

The numpy kernels (``kernels.py``) spend most of their time between BLAS calls: a MER step is ~20
numpy calls of a few µs each on vectors of 100 floats. Here the whole sequence of steps runs in one
compiled function, so nothing returns to the interpreter between the sequential steps. The maths is
that of ``NumpyMLP`` (DESIGN.md §9, the tests hold the three paths to 1e-5 of each other); what
differs is only the order of some float32 additions.

Two more exact shortcuts, for La-MAML's first layer (its big one, 784 inputs): an inner step moves
the first-layer weights by ``relu(α) ⊙ (x dᵀ)``, which is zero wherever the input pixel is 0, so

* the meta batch's first-layer pre-activations are *updated* after each inner step, over the
  pixels the example and each meta row share, instead of recomputed (a GEMM over all 784 inputs);
* the α-gradient of the first layer, Σ_r Σ_b (d_r ⊙ C_r[b]) ⊗ (x_r ⊙ BX[b]), is accumulated over
  the same shared pixels only.

Every function is ``njit(cache=True, nogil=True)``: compiled on first call and cached on disk
(``NUMBA_CACHE_DIR``, else beside this file, else the user's cache), no fastmath (float results
must not depend on the compiler's reassociation), no ``parallel`` (one thread, as ``pin_threads``
wants). Small matrix products go to BLAS through ``np.dot``; elementwise loops are plain loops.

Weights come in as tuples of numpy *views* of the torch parameters, so an update here is what
``predict_proba`` and ``state_dict`` see at once.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from typing import Any

import numba
import numpy as np
from numba import njit

from streamlearn.learners.kernels import NumpyMLP

log = logging.getLogger(__name__)
F32 = np.float32


def _probe() -> None:
    pass


def _cache_possible() -> bool:
    """Whether numba finds a writable cache for this file (it raises at decoration when not)."""
    try:
        njit(cache=True)(_probe)
    except RuntimeError:
        return False
    return True


def _choose_cache() -> bool:
    """Cache compiled code on disk where some directory is writable; otherwise compile every start.

    numba looks at NUMBA_CACHE_DIR, then beside this file, then the user's cache directory. In a
    container with a read-only root filesystem all three can fail, and numba then raises on import;
    the temp directory (a writable volume there) is the last resort.
    """
    if _cache_possible():
        return True
    try:
        fallback = os.path.join(tempfile.gettempdir(), f"streamlearn-numba-{os.getuid()}")
    except OSError:  # no usable temp directory at all
        fallback = ""
    numba.config.CACHE_DIR = fallback
    if fallback and _cache_possible():
        log.info("numba cache in %s (NUMBA_CACHE_DIR and the package directory are not writable)", fallback)
        return True
    log.warning(
        "numba cannot cache the compiled learner kernels (no writable cache directory; set "
        "NUMBA_CACHE_DIR): they compile at each start, about 10-20 s"
    )
    return False


_JIT: dict[str, Any] = {"cache": _choose_cache(), "nogil": True, "fastmath": False}


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
        alpha_W: list[np.ndarray],
        alpha_b: list[np.ndarray],
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
                tuple(alpha_W),
                tuple(alpha_b),
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


# -- shared pieces ------------------------------------------------------------------------------
@njit(**_JIT)
def _relu_into(out, z):
    for i in range(z.shape[0]):
        out[i] = z[i] if z[i] > 0 else F32(0.0)


@njit(**_JIT)
def _add_outer(M, alpha, u, v):
    """M += alpha·u vᵀ, scaling u first as BLAS sger does."""
    a = F32(alpha)
    for i in range(M.shape[0]):
        s = a * u[i]
        row = M[i]
        for j in range(v.shape[0]):
            row[j] += s * v[j]


@njit(**_JIT)
def _nonzero_into(out, v):
    """Write the indices of v's non-zero entries to out; their count. Branch-free: which pixels
    are zero is data the CPU cannot predict, and a mispredicted branch costs more than a store."""
    n = 0
    for p in range(v.shape[0]):
        out[n] = p
        n += v[p] != 0
    return n


@njit(**_JIT)
def _sq(v):
    s = 0.0
    for i in range(v.shape[0]):
        s += float(v[i]) * float(v[i])
    return s


@njit(**_JIT)
def _interpolate(cur, old, frac):
    """cur = old + frac·(cur − old), elementwise over any shape (flattened views)."""
    c = cur.reshape(-1)
    o = old.reshape(-1)
    f = F32(frac)
    for i in range(c.shape[0]):
        c[i] = (c[i] - o[i]) * f + o[i]


# -- MER ----------------------------------------------------------------------------------------
@njit(**_JIT)
def _transpose_into(dst, src):
    """dst = srcᵀ, writing dst row by row (measured faster than tiles for 100 × 784)."""
    m, n = src.shape
    for j in range(n):
        row = dst[j]
        for i in range(m):
            row[i] = src[i, j]


@njit(**_JIT)
def _mer_batch(Ws, bs, W1T, X, Y, lr, beta, max_norm):
    """``NumpyMLP.mer_batch``: sequential SGD over the rows of X, then within-batch Reptile.

    The first layer's weights are read and updated in ``W1T`` (inputs × units), not ``Ws[0]``:
    rows of W1T are pixels, so both first-layer products run over the non-zero pixels only.
    """
    L = len(Ws)
    k, n_in = X.shape
    b1 = bs[0]
    h1 = W1T.shape[1]
    nz = np.empty((k, n_in), dtype=np.int64)  # the non-zero pixels of each row
    n_nz = np.zeros(k, dtype=np.int64)
    for j in range(k):
        n_nz[j] = _nonzero_into(nz[j], X[j])
    # z1 of every row at the batch's starting weights; each step's first-layer update is folded
    # into the rows after it through the Gram matrix (DESIGN.md §9).
    A = np.empty((k, h1), dtype=np.float32)
    for j in range(k):
        a_row = A[j]
        a_row[:] = b1
        for t in range(n_nz[j]):
            p = nz[j, t]
            xp = X[j, p]
            w_row = W1T[p]
            for i in range(h1):
                a_row[i] += xp * w_row[i]
    K = np.dot(X, X.T)
    G1 = np.zeros((k, h1), dtype=np.float32)  # clip-scaled dL/dz1 of each step
    saved_W = [Ws[l].copy() for l in range(1, L)]
    saved_b = [bs[l].copy() for l in range(1, L)]
    zs = [np.empty(Ws[l].shape[0], dtype=np.float32) for l in range(L)]
    hs = [np.empty(Ws[l].shape[0], dtype=np.float32) for l in range(L)]  # hs[l] = relu(zs[l])
    ds = [np.empty(Ws[l].shape[0], dtype=np.float32) for l in range(L)]  # dL/dz of each layer
    total = 0.0
    for j in range(k):
        zs[0][:] = A[j]
        for l in range(1, L):
            _relu_into(hs[l - 1], zs[l - 1])
            z = np.dot(Ws[l], hs[l - 1])
            b = bs[l]
            z_out = zs[l]  # locals, not list items, in loops: a list item costs a refcount each time
            for i in range(z.shape[0]):
                z_out[i] = z[i] + b[i]
        # softmax cross-entropy and its gradient w.r.t. the logits
        z = zs[L - 1]
        m = z.max()
        d = ds[L - 1]
        s = 0.0
        for i in range(z.shape[0]):
            d[i] = math.exp(z[i] - m)
            s += d[i]
        y = Y[j]
        total += math.log(s) + float(m - z[y])
        fs = F32(s)
        for i in range(z.shape[0]):
            d[i] = d[i] / fs
        d[y] -= F32(1.0)
        for l in range(L - 1, 0, -1):
            g = np.dot(ds[l], Ws[l])  # W_lᵀ d, with W_l before this step's update
            zp = zs[l - 1]
            dp = ds[l - 1]
            for i in range(dp.shape[0]):
                dp[i] = g[i] if zp[i] > 0 else F32(0.0)
        c = 1.0
        if max_norm > 0:
            sq = _sq(ds[0]) * (float(K[j, j]) + 1.0)  # + 1: the bias input
            for l in range(1, L):
                sq += _sq(ds[l]) * (_sq(hs[l - 1]) + 1.0)
            c = min(1.0, max_norm / (math.sqrt(sq) + 1e-6))
        step = -lr * c
        for l in range(1, L):
            _add_outer(Ws[l], step, ds[l], hs[l - 1])
            fstep = F32(step)
            b = bs[l]
            dl = ds[l]
            for i in range(b.shape[0]):
                b[i] += fstep * dl[i]
        fc = F32(c)
        d0 = ds[0]
        for i in range(h1):
            G1[j, i] = d0[i] if c == 1.0 else d0[i] * fc
        flr = F32(-lr)
        for jj in range(j + 1, k):
            a = flr * (K[jj, j] + F32(1.0))
            for i in range(h1):
                A[jj, i] += a * G1[j, i]
    # θ_before + β(θ_after − θ_before): for W1 that is W1_0 − β·lr·G1ᵀX (rank k), which touches
    # the rows of W1T of each example's non-zero pixels only.
    coef = F32(-beta * lr)
    for j in range(k):
        g_row = G1[j]
        for t in range(n_nz[j]):
            p = nz[j, t]
            a = coef * X[j, p]
            w_row = W1T[p]
            for i in range(h1):
                w_row[i] += a * g_row[i]
    for i in range(h1):
        g_sum = F32(0.0)
        for j in range(k):
            g_sum += G1[j, i]
        b1[i] += coef * g_sum
    for l in range(1, L):
        _interpolate(Ws[l], saved_W[l - 1], beta)
        _interpolate(bs[l], saved_b[l - 1], beta)
    return total


@njit(**_JIT)
def _mer_example(Ws, bs, x, y, bank_x, bank_y, idx, lr, beta, gamma, max_norm):
    L = len(Ws)
    n_batches, r = idx.shape
    before_W = [Ws[l].copy() for l in range(L if gamma != 1.0 else 0)]
    before_b = [bs[l].copy() for l in range(L if gamma != 1.0 else 0)]
    X = np.empty((r + 1, x.shape[0]), dtype=np.float32)
    Y = np.empty(r + 1, dtype=np.int64)
    X[0] = x
    Y[0] = y
    # The example's batches work on the first layer transposed (see _mer_batch); two transposes
    # per example cost less than one dense first-layer product per batch.
    W1 = Ws[0]
    W1T = np.empty((W1.shape[1], W1.shape[0]), dtype=np.float32)
    _transpose_into(W1T, W1)
    total = 0.0
    for b in range(n_batches):
        for j in range(r):
            X[j + 1] = bank_x[idx[b, j]]
            Y[j + 1] = bank_y[idx[b, j]]
        total += _mer_batch(Ws, bs, W1T, X, Y, lr, beta, max_norm)
    _transpose_into(W1, W1T)
    if gamma != 1.0:  # gamma = 1 makes the across-batch step the identity
        for l in range(L):
            _interpolate(Ws[l], before_W[l], gamma)
            _interpolate(bs[l], before_b[l], gamma)
    return total


# -- La-MAML ------------------------------------------------------------------------------------
@njit(**_JIT)
def _lamaml_glance(Ws, bs, aW, ab, xs, ys, E, BY, m, cur, alpha_grads):
    """``NumpyMLP.lamaml_glance``: mean meta-loss and its first-order gradients w.r.t. θ and α.

    The meta batch is ``E[:m]``; row ``cur + s`` of E is the current example ``xs[s]``, so that
    its inner step reads its layer-0 pre-activation from the rows kept up to date anyway.
    """
    L = len(Ws)
    n, n_in = xs.shape
    BX = E[:m]
    h0 = Ws[0].shape[0]
    rate_W = [np.maximum(aW[l], F32(0.0)) for l in range(L)]  # relu(α): the inner steps' rates
    rate_b = [np.maximum(ab[l], F32(0.0)) for l in range(L)]
    # θ'; layer 0's adapted weights are never formed, only their products with the rows of E
    adapted_W = [Ws[l].copy() for l in range(L)]
    adapted_b = [bs[l].copy() for l in range(L)]
    # pixel-major rates: an inner step changes only the rows of the example's non-zero pixels
    rate0T = np.ascontiguousarray(rate_W[0].T)
    # The layer-0 pre-activations of E's rows, kept up to date step by step (module docstring).
    Z0 = np.dot(E, Ws[0].T)
    b0 = bs[0]
    for b in range(E.shape[0]):
        for i in range(h0):
            Z0[b, i] += b0[i]
    d0 = np.zeros((n, h0), dtype=np.float32)  # inner-step deltas of layer 0
    D0 = np.zeros((n, m, h0), dtype=np.float32)  # meta-loss deltas of layer 0, per step
    inner_sum_W = [np.zeros_like(Ws[l]) for l in range(L)]  # U_s, layers ≥ 1
    inner_sum_b = [np.zeros_like(bs[l]) for l in range(L)]
    grad_W = [np.zeros_like(Ws[l]) for l in range(L)]
    grad_b = [np.zeros_like(bs[l]) for l in range(L)]
    alpha_grad_W = [np.zeros_like(Ws[l]) for l in range(L)]
    alpha_grad_b = [np.zeros_like(bs[l]) for l in range(L)]
    zs = [np.empty(Ws[l].shape[0], dtype=np.float32) for l in range(L)]
    hs = [np.empty(Ws[l].shape[0], dtype=np.float32) for l in range(L)]
    Hs = [np.empty((m, Ws[l].shape[0]), dtype=np.float32) for l in range(L)]  # relu of meta layers
    Zs = [np.empty((m, Ws[l].shape[0]), dtype=np.float32) for l in range(L)]
    nz = np.empty(n_in, dtype=np.int64)
    shared = np.empty(n_in, dtype=np.int64)
    T = np.empty(h0, dtype=np.float32)
    inv_m = F32(1.0 / m)
    total = 0.0
    for s in range(n):
        x = xs[s]
        n_nz = _nonzero_into(nz, x)  # zero inputs change nothing: skipping them is exact
        # inner step on one current example, at the adapted weights
        zs[0][:] = Z0[cur + s]
        for l in range(1, L):
            _relu_into(hs[l - 1], zs[l - 1])
            z = np.dot(adapted_W[l], hs[l - 1])
            z_out = zs[l]
            bl = adapted_b[l]
            for i in range(z.shape[0]):
                z_out[i] = z[i] + bl[i]
        z = zs[L - 1]
        zmax = z.max()
        d = np.empty(z.shape[0], dtype=np.float32)
        e_sum = F32(0.0)
        for i in range(z.shape[0]):
            d[i] = math.exp(z[i] - zmax)
            e_sum += d[i]
        for i in range(z.shape[0]):
            d[i] = d[i] / e_sum
        d[ys[s]] -= F32(1.0)
        for l in range(L - 1, -1, -1):
            rb = rate_b[l]
            if alpha_grads:
                inner_sum_b[l] += d
            if l == 0:
                d0[s] = d
                # θ'₀ -= relu(α₀) ⊙ (x dᵀ) over the non-zero inputs: what that does to each row's z
                for b in range(E.shape[0]):
                    bx = E[b]
                    T[:] = rb
                    n_shared = 0  # the pixels non-zero in both x and this meta row
                    for t in range(n_nz):
                        shared[n_shared] = nz[t]
                        n_shared += bx[nz[t]] != 0
                    for t in range(n_shared):
                        p = shared[t]
                        q = bx[p] * x[p]
                        rrow = rate0T[p]
                        for i in range(h0):
                            T[i] += q * rrow[i]
                    zb = Z0[b]
                    for i in range(h0):
                        zb[i] -= T[i] * d[i]
                b0 = adapted_b[0]
                for i in range(h0):
                    b0[i] -= rb[i] * d[i]
                break
            bl = adapted_b[l]
            for i in range(d.shape[0]):
                bl[i] -= rb[i] * d[i]
            h_in = hs[l - 1]
            d_prev = np.dot(d, adapted_W[l])  # with the adapted weights before this step
            zp = zs[l - 1]
            for i in range(d_prev.shape[0]):
                d_prev[i] = d_prev[i] if zp[i] > 0 else F32(0.0)
            W = adapted_W[l]
            R = rate_W[l]
            U = inner_sum_W[l]
            for i in range(W.shape[0]):
                di = d[i]
                for j in range(W.shape[1]):
                    g = di * h_in[j]
                    if alpha_grads:
                        U[i, j] += g
                    W[i, j] -= g * R[i, j]
            d = d_prev
        # meta-loss of the adapted weights on the whole batch (mean cross-entropy)
        Zs[0][:] = Z0[:m]
        for l in range(1, L):
            Hp = Hs[l - 1]
            Zp = Zs[l - 1]
            for b in range(m):
                for i in range(Zp.shape[1]):
                    Hp[b, i] = Zp[b, i] if Zp[b, i] > 0 else F32(0.0)
            Z = np.dot(Hp, adapted_W[l].T)
            bl = adapted_b[l]
            Z_out = Zs[l]
            for b in range(m):
                for i in range(Z.shape[1]):
                    Z_out[b, i] = Z[b, i] + bl[i]
        Z = Zs[L - 1]
        D = np.empty_like(Z)
        for b in range(m):
            zmax = Z[b].max()
            e_sum = F32(0.0)
            for i in range(Z.shape[1]):
                D[b, i] = math.exp(Z[b, i] - zmax)
                e_sum += D[b, i]
            total += (math.log(e_sum) + float(zmax) - float(Z[b, BY[b]])) / m
            for i in range(Z.shape[1]):
                D[b, i] = D[b, i] / e_sum * inv_m
            D[b, BY[b]] -= inv_m
        for l in range(L - 1, -1, -1):
            Gb = D.sum(axis=0)
            grad_b[l] += Gb
            if alpha_grads:
                alpha_grad_b[l] += Gb * inner_sum_b[l]
            if l == 0:
                D0[s] = D
                break
            GW = np.dot(D.T, Hs[l - 1])
            D_prev = np.dot(D, adapted_W[l])
            Zp = Zs[l - 1]
            for b in range(m):
                for i in range(Zp.shape[1]):
                    D_prev[b, i] = D_prev[b, i] if Zp[b, i] > 0 else F32(0.0)
            grad_W[l] += GW
            if alpha_grads:
                alpha_grad_W[l] += GW * inner_sum_W[l]
            D = D_prev
    D_sum = D0[0].copy()
    for s in range(1, n):
        D_sum += D0[s]
    grad_W[0] = np.dot(D_sum.T, BX)
    if alpha_grads:
        alpha_grad_W[0] = _layer0_alpha_grad(d0, D0, xs, BX)
    inv_n = F32(1.0 / n)
    for l in range(L):
        grad_W[l] *= inv_n
        grad_b[l] *= inv_n
        # ∂/∂α = −U·∇θ'_s L · relu'(α); relu'(0) = 0 as in torch.
        agW = alpha_grad_W[l].reshape(-1)
        a_flat = aW[l].reshape(-1)
        for i in range(agW.shape[0]):
            agW[i] = agW[i] * -inv_n if a_flat[i] > 0 else F32(0.0)
        agb = alpha_grad_b[l]
        a_b = ab[l]
        for i in range(agb.shape[0]):
            agb[i] = agb[i] * -inv_n if a_b[i] > 0 else F32(0.0)
    return total / n, grad_W, grad_b, alpha_grad_W, alpha_grad_b


@njit(**_JIT)
def _layer0_alpha_grad(d0, D0, xs, BX):
    """Σ_s U_s ⊙ (D_sᵀ BX) for the first layer, U_s = Σ_{r≤s} d_r x_rᵀ.

    Column j is Σ_r Σ_b (x_r[j]·BX[b, j]) · (d_r ⊙ C_r[b]) with C_r = Σ_{s≥r} D_s: a sum of unit
    vectors over the pairs (r, b) in which pixel j is non-zero in both, so each column is summed
    once in a small buffer over those pairs only, and columns that no pair reaches stay zero.
    """
    n, m, h = D0.shape
    n_in = xs.shape[1]
    C = D0.copy()
    for r in range(n - 2, -1, -1):  # C[r] = Σ_{s≥r} D0[s]
        C[r] += C[r + 1]
    P = np.empty((n, m, h), dtype=np.float32)  # P[r, b] = d_r ⊙ C_r[b]
    for r in range(n):
        for b in range(m):
            for i in range(h):
                P[r, b, i] = d0[r, i] * C[r, b, i]
    xsT = np.ascontiguousarray(xs.T)  # pixel-major, so each column's values are contiguous
    BXT = np.ascontiguousarray(BX.T)
    out = np.zeros((h, n_in), dtype=np.float32)
    acc = np.empty(h, dtype=np.float32)
    rs = np.empty(n, dtype=np.int64)
    bs_ = np.empty(m, dtype=np.int64)
    for j in range(n_in):
        xj = xsT[j]
        bj = BXT[j]
        n_r = _nonzero_into(rs, xj)
        n_b = _nonzero_into(bs_, bj)
        if n_r == 0 or n_b == 0:
            continue
        acc[:] = 0
        for u in range(n_r):
            r = rs[u]
            for v in range(n_b):
                b = bs_[v]
                q = xj[r] * bj[b]
                pr = P[r, b]
                for i in range(h):
                    acc[i] += q * pr[i]
        for i in range(h):
            out[i, j] = acc[i]
    return out


@njit(**_JIT)
def _clip_coef(arrays_W, arrays_b, max_norm):
    """torch's clip_grad_norm_ scale for the total L2 norm of all the arrays."""
    if max_norm <= 0:
        return 1.0
    sq = 0.0
    for l in range(len(arrays_W)):
        sq += _sq(arrays_W[l].reshape(-1)) + _sq(arrays_b[l])
    return min(1.0, max_norm / (math.sqrt(sq) + 1e-6))


@njit(**_JIT)
def _lamaml_update(Ws, bs, aW, ab, xs, ys, BX, BY, learn_lr, opt_lr, opt_wt, sync_update, max_norm):
    """One glance, then ``LaMAML._apply``: clip ∇θ and ∇α apart, step α, step θ.

    The meta batch ``BX`` ends with the current examples ``xs``, as ``LaMAML`` draws it.
    """
    meta, gW, gb, agW, agb = _lamaml_glance(
        Ws, bs, aW, ab, xs, ys, BX, BY, BX.shape[0], BX.shape[0] - xs.shape[0], learn_lr
    )
    L = len(Ws)
    c_theta = F32(_clip_coef(gW, gb, max_norm))
    c_alpha = F32(_clip_coef(agW, agb, max_norm))
    f_lr = F32(opt_lr)
    f_wt = F32(opt_wt)
    for l in range(L):
        for a, ga, p, gp in (
            (aW[l].reshape(-1), agW[l].reshape(-1), Ws[l].reshape(-1), gW[l].reshape(-1)),
            (ab[l], agb[l], bs[l], gb[l]),
        ):
            for i in range(a.shape[0]):
                if learn_lr:
                    g_a = ga[i] * c_alpha if c_alpha < 1 else ga[i]
                    a[i] -= f_lr * g_a
                g_p = gp[i] * c_theta if c_theta < 1 else gp[i]
                if sync_update:
                    p[i] -= f_wt * g_p
                else:  # the step sizes are the just-updated learning rates, clipped at zero
                    p[i] -= g_p * (a[i] if a[i] > 0 else F32(0.0))
    return meta

"""Lean CPU inner loops for ReLU MLPs: hand-written forward/backward in numpy.

MER is thousands of tiny sequential SGD steps; for a 784-100-100-10 MLP the cost of one step is
framework overhead, not arithmetic (autograd + optimizer ≈ 0.3–1.3 ms a step, a numpy step a few
tens of µs). These kernels compute *the same maths* as the reference paths in ``mer.py`` and
``lamaml.py`` — the tests hold them to 1e-5 of each other — with few calls per step and no
parameter copies beyond what Reptile needs.

The parameters are numpy *views* of the torch module's tensors (shared memory), so an update
here is immediately what ``predict_proba`` and ``state_dict`` see.

MER's first layer uses an exact identity (DESIGN.md §9): inside one batch of k sequential SGD
steps, the first-layer weights after i steps are ``W1_0 − lr·Σ_{i'<i} g_i' x_i'ᵀ``, so every
pre-activation is ``(X W1_0ᵀ + b1)[j] − lr·Σ_{i<j} (x_i·x_j + 1)·g_i``: one GEMM and a k×k Gram
matrix for the whole batch, and the within-batch Reptile update of W1 is one rank-k GEMM.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg.blas import sgemm, sger
from torch import nn

F32 = np.float32


def _rank1_(M: np.ndarray, alpha: float, u: np.ndarray, v: np.ndarray) -> None:
    """M += alpha·u vᵀ in place, as one BLAS call (a C-ordered M is F-ordered Mᵀ for BLAS).

    Three numpy calls (outer, scale, subtract) cost ~9 µs for a 100×100 layer; this ~2.4 µs.
    """
    out = sger(alpha, v, u, a=M.T, overwrite_a=1)
    if not np.shares_memory(out, M):  # would mean BLAS got a copy; never for contiguous float32
        M[...] = out.T


@dataclass
class NumpyMLP:
    """numpy views of an MLP's weights ``Ws[l]`` (out, in) and biases ``bs[l]`` (out,)."""

    Ws: list[np.ndarray]
    bs: list[np.ndarray]

    @classmethod
    def from_module(cls, model: nn.Module) -> NumpyMLP | None:
        """Views of ``model`` if it is a CPU float32 ``Sequential`` of Linear/ReLU ending in Linear."""
        if not isinstance(model, nn.Sequential) or len(model) == 0:
            return None
        layers = list(model)
        linears = layers[0::2]
        relus = layers[1::2]
        if not all(isinstance(m, nn.Linear) and m.bias is not None for m in linears):
            return None
        if not all(isinstance(m, nn.ReLU) for m in relus) or len(linears) != len(relus) + 1:
            return None
        ws: list[np.ndarray] = []
        bs: list[np.ndarray] = []
        for m in linears:
            assert isinstance(m, nn.Linear) and m.bias is not None
            for p in (m.weight, m.bias):
                if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
                    return None
            ws.append(m.weight.detach().numpy())
            bs.append(m.bias.detach().numpy())
        return cls(ws, bs)

    @property
    def n_layers(self) -> int:
        return len(self.Ws)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax of the network at the current weights; a fraction of torch's per-call cost."""
        z0 = X @ self.Ws[0].T
        z0 += self.bs[0]
        h = forward(z0, self.Ws, self.bs)[0][-1]
        h -= h.max(axis=1, keepdims=True)
        np.exp(h, out=h)
        h /= h.sum(axis=1, keepdims=True)
        return h

    # -- MER ------------------------------------------------------------------------------------
    def mer_batch(
        self, X: np.ndarray, Y: np.ndarray, lr: float, beta: float, max_norm: float | None
    ) -> float:
        """Sequential SGD over the rows of X (batch size 1 each), then within-batch Reptile.

        Returns the sum of the per-step losses.
        """
        Ws, bs, L = self.Ws, self.bs, self.n_layers
        k = X.shape[0]
        W1, b1 = Ws[0], bs[0]
        A = X @ W1.T
        A += b1
        K = X @ X.T
        K += F32(1.0)  # the bias input
        G1 = np.zeros((k, W1.shape[0]), dtype=F32)  # clip-scaled dL/dz1 of each step
        saved_W = [W.copy() for W in Ws[1:]]
        saved_b = [b.copy() for b in bs[1:]]
        total = 0.0
        deltas: list[np.ndarray] = [A[0]] * L
        for j in range(k):
            # A[j] already holds z1 of step j: each earlier step's first-layer update was folded
            # into the rows after it (rank-1, through the Gram matrix).
            zs, hs = forward(A[j], Ws, bs)
            z = zs[-1]
            # softmax cross-entropy and its gradient w.r.t. the logits
            m = z.max()
            e = np.exp(z - m)
            s = e.sum()
            y = int(Y[j])
            total += math.log(s) + float(m - z[y])
            d = e / s
            d[y] -= 1.0
            deltas[L - 1] = d
            for l in range(L - 1, 0, -1):
                d = (Ws[l].T @ d) * (zs[l - 1] > 0)  # uses W_l before this step's update
                deltas[l - 1] = d
            c = 1.0
            if max_norm is not None:
                sq = float(deltas[0] @ deltas[0]) * float(K[j, j])
                for l in range(1, L):
                    sq += float(deltas[l] @ deltas[l]) * (float(hs[l - 1] @ hs[l - 1]) + 1.0)
                c = min(1.0, max_norm / (math.sqrt(sq) + 1e-6))
            step = -lr * c
            for l in range(1, L):
                _rank1_(Ws[l], step, deltas[l], hs[l - 1])
                bs[l] += F32(step) * deltas[l]
            g1 = deltas[0] if c == 1.0 else deltas[0] * F32(c)
            G1[j] = g1
            if j + 1 < k:
                _rank1_(A[j + 1 :], -lr, K[j + 1 :, j].copy(), g1)
        # θ_before + β(θ_after − θ_before): for W1 that is W1_0 − β·lr·G1ᵀX, one rank-k GEMM.
        # W1ᵀ (F-ordered view of the C-ordered W1) += −β·lr · Xᵀ G1, accumulated in place by BLAS.
        out = sgemm(-beta * lr, X.T, G1.T, beta=1.0, c=W1.T, trans_b=1, overwrite_c=1)
        if not np.shares_memory(out, W1):
            W1[...] = out.T
        b1 -= F32(beta * lr) * G1.sum(axis=0)
        fbeta = F32(beta)
        for l in range(1, L):
            for cur, old in ((Ws[l], saved_W[l - 1]), (bs[l], saved_b[l - 1])):
                cur -= old
                cur *= fbeta
                cur += old
        return total

    # -- La-MAML --------------------------------------------------------------------------------
    def lamaml_glance(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        BX: np.ndarray,
        BY: np.ndarray,
        alpha_W: list[np.ndarray],
        alpha_b: list[np.ndarray],
        after_inner_step: Callable[[int], None] | None = None,
        alpha_grads: bool = True,
    ) -> tuple[float, list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """One first-order La-MAML glance at the current parameters θ (which it does not change).

        For each current example s in order: an inner SGD step on it with per-parameter rates
        relu(α) (adapted weights θ'_s = θ'_{s-1} − relu(α)·g_s), then the meta-loss of θ'_s on the
        batch (BX, BY). Returns the mean meta-loss and its gradients w.r.t. θ (W, b) and α (W, b).

        First order: the inner gradients g_s are constants, so θ'_s = θ − relu(α)·U_s with
        U_s = Σ_{r≤s} g_r (the inner sum); hence ∂θ'_s/∂θ = I and ∂θ'_s/∂α = −U_s·relu'(α).

        ``alpha_grads=False`` (C-MAML: fixed rates) skips the α-gradients, returned as zeros.
        """
        Ws, bs, L = self.Ws, self.bs, self.n_layers
        n, m = xs.shape[0], BX.shape[0]
        rate_W = [np.maximum(a, 0) for a in alpha_W]  # relu(α): the inner steps' learning rates
        rate_b = [np.maximum(a, 0) for a in alpha_b]
        adapted_W = [W.copy() for W in Ws]  # θ'; adapted_W[0] stays unused: layer 0 lives in adapted0T
        adapted_b = [b.copy() for b in bs]
        # Layer 0's adapted weights are held transposed (inputs × units): an inner step changes only
        # the rows of inputs that are non-zero (most pixels of an image are 0), and rows are contiguous.
        adapted0T = np.ascontiguousarray(Ws[0].T)
        rate0T = np.ascontiguousarray(rate_W[0].T)
        # Layer 0 (the big one) never materialises U or a per-step gradient: its meta-batch input BX
        # is the same at every step, so Σ_s U_s ⊙ (D_sᵀ BX) = Σ_{r,b} (d_r ⊙ C_r[b])ᵀ (x_r ⊙ BX[b])
        # with C_r = Σ_{s≥r} D_s — one GEMM per glance (see _layer0_alpha_grad).
        d0 = np.empty((n, Ws[0].shape[0]), dtype=F32)  # inner-step deltas of layer 0
        D0 = np.empty((n, m, Ws[0].shape[0]), dtype=F32)  # meta-loss deltas of layer 0, per step
        inner_sum_W = [np.zeros_like(W) for W in Ws]  # U_s, layers ≥ 1
        inner_sum_b = [np.zeros_like(b) for b in bs]
        grad_W = [np.zeros_like(W) for W in Ws]  # ∂(meta-loss)/∂θ
        grad_b = [np.zeros_like(b) for b in bs]
        alpha_grad_W = [np.zeros_like(W) for W in Ws]  # ∂(meta-loss)/∂α
        alpha_grad_b = [np.zeros_like(b) for b in bs]
        tmp0T = np.empty_like(adapted0T)
        onehot = np.zeros((m, Ws[-1].shape[0]), dtype=F32)
        rows = np.arange(m)
        onehot[rows, BY] = 1.0
        inv_m = F32(1.0 / m)
        total = 0.0
        for s in range(n):
            # inner step on one current example, at the adapted weights
            x = xs[s]
            z0 = x @ adapted0T
            z0 += adapted_b[0]
            zs, hs = forward(z0, adapted_W, adapted_b)
            ins = [x, *hs]  # the input of each layer
            z = zs[-1]
            e = np.exp(z - z.max())
            d = e / e.sum()
            d[int(ys[s])] -= 1.0
            for l in range(L - 1, -1, -1):
                if alpha_grads:
                    inner_sum_b[l] += d
                adapted_b[l] -= rate_b[l] * d
                if l == 0:
                    d0[s] = d
                    nz = np.flatnonzero(x)
                    if len(nz) == len(x):
                        np.outer(x, d, out=tmp0T)
                        tmp0T *= rate0T
                        adapted0T -= tmp0T
                    elif len(nz):
                        # zero inputs change nothing; skipping them is exact, not an approximation
                        upd = np.outer(x[nz], d)
                        upd *= rate0T[nz]
                        adapted0T[nz] -= upd
                    break
                g = np.outer(d, ins[l])
                d = (adapted_W[l].T @ d) * (zs[l - 1] > 0)
                if alpha_grads:
                    inner_sum_W[l] += g
                g *= rate_W[l]
                adapted_W[l] -= g
            if after_inner_step is not None:
                after_inner_step(s)
            # meta-loss of the adapted weights on the whole batch (mean cross-entropy)
            Z0 = BX @ adapted0T
            Z0 += adapted_b[0]
            Zs, Hs = forward(Z0, adapted_W, adapted_b)
            Ins = [BX, *Hs]
            Z = Zs[-1]
            Zmax = Z.max(axis=1, keepdims=True)
            E = np.exp(Z - Zmax)
            S = E.sum(axis=1, keepdims=True)
            total += (float(np.log(S).sum()) + float(Zmax.sum()) - float(Z[rows, BY].sum())) / m
            D = E / S
            D -= onehot
            D *= inv_m
            for l in range(L - 1, -1, -1):
                Gb = D.sum(axis=0)
                grad_b[l] += Gb
                if alpha_grads:
                    alpha_grad_b[l] += Gb * inner_sum_b[l]
                if l == 0:
                    D0[s] = D
                    break
                GW = D.T @ Ins[l]
                D = (D @ adapted_W[l]) * (Zs[l - 1] > 0)
                grad_W[l] += GW
                if alpha_grads:
                    GW *= inner_sum_W[l]
                    alpha_grad_W[l] += GW
        grad_W[0] = D0.sum(axis=0).T @ BX
        if alpha_grads:
            alpha_grad_W[0] = _layer0_alpha_grad(d0, D0, xs, BX)
        inv_n = F32(1.0 / n)
        for l in range(L):
            grad_W[l] *= inv_n
            grad_b[l] *= inv_n
            # ∂/∂α = −U·∇θ'_s L · relu'(α); relu'(0) = 0 as in torch.
            alpha_grad_W[l] *= -inv_n * (alpha_W[l] > 0)
            alpha_grad_b[l] *= -inv_n * (alpha_b[l] > 0)
        return total / n, grad_W, grad_b, alpha_grad_W, alpha_grad_b


def forward(
    z0: np.ndarray, Ws: list[np.ndarray], bs: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The network from layer 0's pre-activation ``z0`` on: every layer's pre-activation, and relus.

    Returns ``zs`` (``zs[-1]`` the logits) and ``hs[l] = relu(zs[l])``, the input of layer l + 1.
    Layer 0 is the caller's because each caller gets it differently (MER folds its updates into a
    precomputed GEMM, La-MAML holds it transposed); ``Ws[0]`` is not read. ``z0`` is one example
    (a vector) or a batch (rows): the same BLAS call either way, so the lean paths stay bit-equal.
    """
    zs, hs = [z0], []
    for l in range(1, len(Ws)):
        h = np.maximum(zs[-1], 0)
        hs.append(h)
        z = Ws[l] @ h if h.ndim == 1 else h @ Ws[l].T
        z += bs[l]
        zs.append(z)
    return zs, hs


def _layer0_alpha_grad(d0: np.ndarray, D0: np.ndarray, xs: np.ndarray, BX: np.ndarray) -> np.ndarray:
    """Σ_s U_s ⊙ (D_sᵀ BX) for the first layer, U_s = Σ_{r≤s} d_r x_rᵀ, as one GEMM.

    Element (i, j) is Σ_r Σ_b (d_r[i]·C_r[b, i]) · (x_r[j]·BX[b, j]) with C_r = Σ_{s≥r} D_s.
    Column j is exactly zero when pixel j is zero in every current example, so only the others
    are computed (most of an image is background).
    """
    n, m, h = D0.shape
    C = D0.copy()
    for r in range(n - 2, -1, -1):  # C[r] = Σ_{s≥r} D0[s]
        C[r] += C[r + 1]
    C *= d0[:, None, :]
    P = C.reshape(n * m, h)
    cols = np.flatnonzero(xs.any(axis=0))
    out = np.zeros((h, BX.shape[1]), dtype=F32)
    if len(cols):
        Q = (xs[:, None, cols] * BX[None, :, cols]).reshape(n * m, len(cols))
        out[:, cols] = P.T @ Q
    return out

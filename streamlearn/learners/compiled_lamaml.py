"""La-MAML's glance and update as one compiled call (same maths as ``NumpyMLP.lamaml_glance``)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamlearn.learners.compiled_jit import _JIT, F32, _nonzero_into, _relu_into, _sq


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

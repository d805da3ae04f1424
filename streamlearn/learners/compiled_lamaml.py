"""La-MAML's glance and update as one compiled call (same maths as ``NumpyMLP.lamaml_glance``).

Where a glance's time goes (784-100-100-10, 10 current examples, meta batch 20): the meta-loss
forward and backward at layers ≥ 1 after each inner step (dense 20 × 100 × 100 products, ~40 %),
the first layer's pre-activation updates over shared pixels (~15 %), the first layer's α-gradient
(~20 %), and passes over the 100 × 784 first-layer arrays (rates, gradients, the update). Those
passes are the part worth saving: layer 0's adapted weights, inner sums and zeroed gradients are
never allocated, and the update scales, measures and applies the gradients in two passes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamlearn.learners.compiled_jit import _JIT, F32, _nonzero_into, _relu_into


@njit(**_JIT)
def _relu_transposed(a):
    """relu(a)ᵀ, contiguous: layer 0's rates, pixel-major."""
    h, n_in = a.shape
    out = np.empty((n_in, h), dtype=np.float32)
    for j in range(n_in):
        row = out[j]
        for i in range(h):
            v = a[i, j]
            row[i] = v if v > 0 else F32(0.0)
    return out


@njit(**_JIT)
def _glance_sums(Ws, bs, aW, ab, xs, ys, E, BY, m, cur, alpha_grads):
    """The glance's mean meta-loss and its gradient *sums* over the n inner steps.

    Returns ``total, grad_W, grad_b, alpha_grad_W, alpha_grad_b`` with the gradients not yet
    divided by n, and the α-gradients not yet negated nor masked by relu'(α) (``_lamaml_glance``
    and ``_lamaml_update`` do that, the latter fused with the clip and the step). The meta batch
    is ``E[:m]``; row ``cur + s`` of E is the current example ``xs[s]``, so that its inner step
    reads its layer-0 pre-activation from the rows kept up to date anyway.
    """
    L = len(Ws)
    n, n_in = xs.shape
    BX = E[:m]
    h0 = Ws[0].shape[0]
    empty = np.empty((0, 0), dtype=np.float32)
    # relu(α): the inner steps' rates; layer 0's pixel-major (an inner step changes only the rows
    # of the example's non-zero pixels)
    rate_W = [empty] + [np.maximum(aW[l], F32(0.0)) for l in range(1, L)]
    rate_b = [np.maximum(ab[l], F32(0.0)) for l in range(L)]
    rate0T = _relu_transposed(aW[0])
    # θ'; layer 0's adapted weights are never formed, only their products with the rows of E
    adapted_W = [empty] + [Ws[l].copy() for l in range(1, L)]
    adapted_b = [bs[l].copy() for l in range(L)]
    # The layer-0 pre-activations of E's rows, kept up to date step by step (module docstring).
    Z0 = np.dot(E, Ws[0].T)
    b0 = bs[0]
    for b in range(E.shape[0]):
        for i in range(h0):
            Z0[b, i] += b0[i]
    d0 = np.zeros((n, h0), dtype=np.float32)  # inner-step deltas of layer 0
    D0 = np.zeros((n, m, h0), dtype=np.float32)  # meta-loss deltas of layer 0, per step
    inner_sum_W = [empty] + [np.zeros_like(Ws[l]) for l in range(1, L)]  # U_s, layers ≥ 1
    inner_sum_b = [np.zeros_like(bs[l]) for l in range(L)]
    grad_W = [empty] + [np.zeros_like(Ws[l]) for l in range(1, L)]
    grad_b = [np.zeros_like(bs[l]) for l in range(L)]
    alpha_grad_W = [empty] + [np.zeros_like(Ws[l]) for l in range(1, L)]
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
                    # four pixels a pass over T: T lives in memory, so each pass costs a load
                    # and a store per entry besides the products
                    n4 = n_shared - n_shared % 4
                    for t in range(0, n4, 4):
                        p0, p1, p2, p3 = shared[t], shared[t + 1], shared[t + 2], shared[t + 3]
                        q0, q1 = bx[p0] * x[p0], bx[p1] * x[p1]
                        q2, q3 = bx[p2] * x[p2], bx[p3] * x[p3]
                        r0, r1, r2, r3 = rate0T[p0], rate0T[p1], rate0T[p2], rate0T[p3]
                        for i in range(h0):
                            T[i] += (q0 * r0[i] + q1 * r1[i]) + (q2 * r2[i] + q3 * r3[i])
                    for t in range(n4, n_shared):
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
            if alpha_grads:  # two loops, not a branch per entry
                for i in range(W.shape[0]):
                    di = d[i]
                    for j in range(W.shape[1]):
                        g = di * h_in[j]
                        U[i, j] += g
                        W[i, j] -= g * R[i, j]
            else:
                for i in range(W.shape[0]):
                    di = d[i]
                    for j in range(W.shape[1]):
                        W[i, j] -= (di * h_in[j]) * R[i, j]
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
            gb = grad_b[l]
            agb = alpha_grad_b[l]
            Ub = inner_sum_b[l]
            for i in range(Gb.shape[0]):
                gb[i] += Gb[i]
                if alpha_grads:
                    agb[i] += Gb[i] * Ub[i]
            if l == 0:
                D0[s] = D
                break
            GW = np.dot(D.T, Hs[l - 1])
            D_prev = np.dot(D, adapted_W[l])
            Zp = Zs[l - 1]
            for b in range(m):
                for i in range(Zp.shape[1]):
                    D_prev[b, i] = D_prev[b, i] if Zp[b, i] > 0 else F32(0.0)
            gw = grad_W[l].reshape(-1)
            gw_s = GW.reshape(-1)
            if alpha_grads:
                agw = alpha_grad_W[l].reshape(-1)
                u = inner_sum_W[l].reshape(-1)
                for i in range(gw.shape[0]):
                    gw[i] += gw_s[i]
                    agw[i] += gw_s[i] * u[i]
            else:
                for i in range(gw.shape[0]):
                    gw[i] += gw_s[i]
            D = D_prev
    D_sum = D0[0].copy()
    for s in range(1, n):
        D_sum += D0[s]
    grad_W[0] = np.dot(D_sum.T, BX)
    alpha_grad_W[0] = _layer0_alpha_grad(d0, D0, xs, BX) if alpha_grads else np.zeros_like(Ws[0])
    return total / n, grad_W, grad_b, alpha_grad_W, alpha_grad_b


@njit(**_JIT)
def _lamaml_glance(Ws, bs, aW, ab, xs, ys, E, BY, m, cur, alpha_grads):
    """``NumpyMLP.lamaml_glance``: mean meta-loss and its first-order gradients w.r.t. θ and α."""
    meta, grad_W, grad_b, alpha_grad_W, alpha_grad_b = _glance_sums(
        Ws, bs, aW, ab, xs, ys, E, BY, m, cur, alpha_grads
    )
    inv_n = F32(1.0 / xs.shape[0])
    for l in range(len(Ws)):
        grad_W[l] *= inv_n
        grad_b[l] *= inv_n
        # ∂/∂α = −U·∇θ'_s L · relu'(α); relu'(0) = 0 as in torch.
        _scale_sq(alpha_grad_W[l].reshape(-1), -inv_n, aW[l].reshape(-1), True)
        _scale_sq(alpha_grad_b[l], -inv_n, ab[l], True)
    return meta, grad_W, grad_b, alpha_grad_W, alpha_grad_b


@njit(**_JIT)
def _scale_sq(g, f, a, where_a_positive):
    """g = g·f in place (where α > 0, else 0, with ``where_a_positive``); the sum of squares of the
    result in float64, in four partial sums (one float64 add chain is latency-bound)."""
    s0 = s1 = s2 = s3 = 0.0
    n4 = g.shape[0] - g.shape[0] % 4
    zero = F32(0.0)
    for i in range(0, n4, 4):
        v0, v1, v2, v3 = g[i] * f, g[i + 1] * f, g[i + 2] * f, g[i + 3] * f
        if where_a_positive:
            v0 = v0 if a[i] > 0 else zero
            v1 = v1 if a[i + 1] > 0 else zero
            v2 = v2 if a[i + 2] > 0 else zero
            v3 = v3 if a[i + 3] > 0 else zero
        g[i], g[i + 1], g[i + 2], g[i + 3] = v0, v1, v2, v3
        s0 += float(v0) * float(v0)
        s1 += float(v1) * float(v1)
        s2 += float(v2) * float(v2)
        s3 += float(v3) * float(v3)
    for i in range(n4, g.shape[0]):
        v = g[i] * f if not where_a_positive or a[i] > 0 else zero
        g[i] = v
        s0 += float(v) * float(v)
    return (s0 + s1) + (s2 + s3)


@njit(**_JIT)
def _layer0_alpha_grad(d0, D0, xs, BX):
    """Σ_s U_s ⊙ (D_sᵀ BX) for the first layer, U_s = Σ_{r≤s} d_r x_rᵀ.

    Column j is Σ_r Σ_b (x_r[j]·BX[b, j]) · (d_r ⊙ C_r[b]) with C_r = Σ_{s≥r} D_s: a sum of unit
    vectors over the pairs (r, b) in which pixel j is non-zero in both, so each column is summed
    once in a small buffer over those pairs only (four pairs per pass over the buffer), and
    columns that no pair reaches stay zero.
    """
    n, m, h = D0.shape
    n_in = xs.shape[1]
    C = D0.copy()
    for r in range(n - 2, -1, -1):  # C[r] = Σ_{s≥r} D0[s]
        C[r] += C[r + 1]
    P = np.empty((n * m, h), dtype=np.float32)  # P[r·m + b] = d_r ⊙ C_r[b]
    for r in range(n):
        for b in range(m):
            pr = P[r * m + b]
            for i in range(h):
                pr[i] = d0[r, i] * C[r, b, i]
    xsT = np.ascontiguousarray(xs.T)  # pixel-major, so each column's values are contiguous
    BXT = np.ascontiguousarray(BX.T)
    out = np.zeros((h, n_in), dtype=np.float32)
    acc = np.empty(h, dtype=np.float32)
    rs = np.empty(n, dtype=np.int64)
    bs_ = np.empty(m, dtype=np.int64)
    pair = np.empty(n * m, dtype=np.int64)
    qs = np.empty(n * m, dtype=np.float32)
    for j in range(n_in):
        xj = xsT[j]
        bj = BXT[j]
        n_r = _nonzero_into(rs, xj)
        n_b = _nonzero_into(bs_, bj)
        if n_r == 0 or n_b == 0:
            continue
        k = 0
        for u in range(n_r):
            r = rs[u]
            for v in range(n_b):
                b = bs_[v]
                pair[k] = r * m + b
                qs[k] = xj[r] * bj[b]
                k += 1
        acc[:] = 0
        k4 = k - k % 4
        for t in range(0, k4, 4):
            q0, q1, q2, q3 = qs[t], qs[t + 1], qs[t + 2], qs[t + 3]
            p0, p1, p2, p3 = P[pair[t]], P[pair[t + 1]], P[pair[t + 2]], P[pair[t + 3]]
            for i in range(h):
                acc[i] += (q0 * p0[i] + q1 * p1[i]) + (q2 * p2[i] + q3 * p3[i])
        for t in range(k4, k):
            q = qs[t]
            p = P[pair[t]]
            for i in range(h):
                acc[i] += q * p[i]
        for i in range(h):
            out[i, j] = acc[i]
    return out


@njit(**_JIT)
def _clip_of(sq, max_norm):
    """torch's clip_grad_norm_ scale for a total squared L2 norm, as float32 (1 when not clipping)."""
    if max_norm <= 0:
        return F32(1.0)
    return F32(min(1.0, max_norm / (math.sqrt(sq) + 1e-6)))


@njit(**_JIT)
def _lamaml_update(Ws, bs, aW, ab, xs, ys, BX, BY, learn_lr, opt_lr, opt_wt, sync_update, max_norm):
    """One glance, then ``LaMAML._apply``: clip ∇θ and ∇α apart, step α, step θ.

    The meta batch ``BX`` ends with the current examples ``xs``, as ``LaMAML`` draws it. Two passes
    over the parameters: scale the gradient sums (1/n, and −relu'(α)/n for α) while summing their
    squares, then step. With fixed rates (``learn_lr`` False) the α-gradients are never formed.
    """
    meta, gW, gb, agW, agb = _glance_sums(
        Ws, bs, aW, ab, xs, ys, BX, BY, BX.shape[0], BX.shape[0] - xs.shape[0], learn_lr
    )
    L = len(Ws)
    inv_n = F32(1.0 / xs.shape[0])
    sq_theta = 0.0
    sq_alpha = 0.0
    for l in range(L):
        sq_theta += _scale_sq(gW[l].reshape(-1), inv_n, gW[l].reshape(-1), False)
        sq_theta += _scale_sq(gb[l], inv_n, gb[l], False)
        if learn_lr:
            sq_alpha += _scale_sq(agW[l].reshape(-1), -inv_n, aW[l].reshape(-1), True)
            sq_alpha += _scale_sq(agb[l], -inv_n, ab[l], True)
    c_theta = _clip_of(sq_theta, max_norm)
    c_alpha = _clip_of(sq_alpha, max_norm)
    f_lr = F32(opt_lr)
    f_wt = F32(opt_wt)
    for l in range(L):
        _step(
            aW[l].reshape(-1),
            agW[l].reshape(-1),
            Ws[l].reshape(-1),
            gW[l].reshape(-1),
            learn_lr,
            f_lr,
            c_alpha,
            sync_update,
            f_wt,
            c_theta,
        )
        _step(ab[l], agb[l], bs[l], gb[l], learn_lr, f_lr, c_alpha, sync_update, f_wt, c_theta)
    return meta


@njit(**_JIT)
def _step(a, ga, p, gp, learn_lr, f_lr, c_alpha, sync_update, f_wt, c_theta):
    """``LaMAML._apply`` on one parameter array and its rates (gradients already scaled)."""
    clip_theta = c_theta < 1
    if learn_lr:
        clip_alpha = c_alpha < 1
        for i in range(a.shape[0]):
            g_a = ga[i] * c_alpha if clip_alpha else ga[i]
            a[i] -= f_lr * g_a
    if sync_update:
        for i in range(p.shape[0]):
            g_p = gp[i] * c_theta if clip_theta else gp[i]
            p[i] -= f_wt * g_p
    else:  # the step sizes are the just-updated learning rates, clipped at zero
        for i in range(p.shape[0]):
            g_p = gp[i] * c_theta if clip_theta else gp[i]
            p[i] -= g_p * (a[i] if a[i] > 0 else F32(0.0))

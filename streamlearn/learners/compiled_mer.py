"""MER's batches as one compiled call per example (same maths as ``NumpyMLP.mer_batch``)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamlearn.learners.compiled_jit import (
    _JIT,
    F32,
    _add_outer,
    _interpolate,
    _nonzero_into,
    _relu_into,
    _sq,
    _transpose_into,
)


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

"""A plain, slow implementation of GV generation, for the tests.

Per sequence and static dimension: the kept constraint rows (boundary and
voicing rules written out frame by frame), the window matrix restricted to
the voiced frames with ``scipy.sparse``, ``J`` with its gradient and Hessian
written densely, and ``scipy.optimize.minimize(method="trust-exact")`` from
the same start point as :func:`mlpgx.gv.mlpg_gv` (the MLPG solution rescaled
to the target variance).  Shares no code with :mod:`mlpgx.gv`.
"""
from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.sparse

from .windows import DELTA, as_windows


def _kept(windows, l, t, n, boundary, voiced, rule):
    """Whether window ``l``'s constraint at frame ``t`` (of ``n``) is kept."""
    w = windows[l]
    if l > 0:
        if boundary == "per-window" and (t - w.left < 0 or t + w.right >= n):
            return False
        if boundary == "nnmnkwii":
            K = max(max(x.left, x.right) for x in windows)
            if t < K or t >= n - K:
                return False
    for j, cj in enumerate(w.coeffs):
        u = t - w.left + j
        if rule == "sptk" and cj == 0.0:
            continue
        if 0 <= u < n and not voiced[u]:
            return False
    return True


class _Dim:
    """One sequence and dimension: ``J`` over the voiced frames."""

    def __init__(self, mu, prec, windows, n, boundary, voiced, rule, omega, mv, vv, gw):
        L = len(windows)
        frames = np.flatnonzero(voiced[:n])
        col = {int(t): i for i, t in enumerate(frames)}
        rows, cols, vals, p, m = [], [], [], [], []
        r = 0
        for l, w in enumerate(windows):
            for t in range(n):
                if not _kept(windows, l, t, n, boundary, voiced, rule):
                    continue
                for j, cj in enumerate(w.coeffs):
                    u = t - w.left + j
                    if 0 <= u < n and cj != 0.0:
                        rows.append(r)
                        cols.append(col[u])
                        vals.append(cj)
                p.append(prec[t, l])
                m.append(mu[t, l])
                r += 1
        self.W = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(r, len(frames)))
        self.p, self.mu = np.array(p), np.array(m)
        self.frames, self.N = frames, len(frames)
        self.omega = omega if omega is not None else 1.0 / (L * max(self.N, 1))
        # v is identically 0 with fewer than 2 frames: no GV term (as mlpg_gv)
        self.mv, self.vv, self.gw = mv, vv, (gw if self.N >= 2 else 0.0)

    def ml_solution(self):
        R = (self.W.T @ scipy.sparse.diags(self.p) @ self.W).toarray()
        return np.linalg.solve(R, self.W.T @ (self.p * self.mu))

    def J(self, x):
        e = self.W @ x - self.mu
        ml = -0.5 * self.omega * np.sum(self.p * e * e)
        return ml - 0.5 * self.gw / self.vv * (np.var(x) - self.mv) ** 2 if self.gw else ml

    def grad(self, x):
        e = self.W @ x - self.mu
        if not self.gw:
            return -self.omega * (self.W.T @ (self.p * e))
        dv = 2.0 / self.N * (x - x.mean())
        return (-self.omega * (self.W.T @ (self.p * e))
                - self.gw / self.vv * (np.var(x) - self.mv) * dv)

    def hess(self, x):
        N = self.N
        R = (self.W.T @ scipy.sparse.diags(self.p) @ self.W).toarray()
        dv = 2.0 / N * (x - x.mean())
        Pc = np.eye(N) - np.ones((N, N)) / N
        return -(self.omega * R + self.gw / self.vv * (
            np.outer(dv, dv) + (np.var(x) - self.mv) * 2.0 / N * Pc))

    def solve(self):
        c = self.ml_solution()
        if self.N < 2 or self.gw == 0:
            return c
        if np.var(c) > 0:
            c = c.mean() + np.sqrt(self.mv / np.var(c)) * (c - c.mean())
        s = 1.0 / self.omega       # minimise -J / omega: the ML part is O(1) per frame
        res = scipy.optimize.minimize(
            lambda x: -s * self.J(x), c, jac=lambda x: -s * self.grad(x),
            hess=lambda x: -s * self.hess(x), method="trust-exact",
            options=dict(gtol=1e-13, maxiter=1000))
        x = res.x
        for _ in range(3):         # polish: plain Newton steps while they help
            y = x - np.linalg.solve(self.hess(x), self.grad(x))
            if not self.J(y) >= self.J(x):
                break
            x = y
        return x


def mlpg_gv_reference(means, variances=None, windows=DELTA, gv_mean=None, gv_variance=None, *,
                      precisions=None, gv_weight=1.0, ml_weight=None, lengths=None,
                      boundary="per-window", voiced=None, msd_rule="hts",
                      unvoiced_value=np.nan):
    """``(trajectory (B, T, D) float64, objective (B, D))`` for valid input
    (no checks); arguments as :func:`mlpgx.gv.mlpg_gv`, always batched output."""
    wins = as_windows(windows)
    L = len(wins)
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim == 2:
        mu = mu[None]
        voiced = None if voiced is None else np.asarray(voiced)[None]
    B, T, LD = mu.shape
    D = LD // L
    if precisions is not None:
        prec = np.broadcast_to(np.asarray(precisions, dtype=np.float64), mu.shape)
    elif variances is not None:
        with np.errstate(divide="ignore"):
            prec = 1.0 / np.broadcast_to(np.asarray(variances, dtype=np.float64), mu.shape)
    else:
        prec = np.ones_like(mu)
    lengths = np.full(B, T) if lengths is None else np.atleast_1d(lengths)
    vmask = np.ones((B, T, D), bool) if voiced is None else np.asarray(voiced, bool)
    mv = np.broadcast_to(np.asarray(gv_mean, dtype=np.float64), (B, D))
    vv = np.broadcast_to(np.asarray(gv_variance, dtype=np.float64), (B, D))
    out = np.zeros((B, T, D))
    obj = np.zeros((B, D))
    for b in range(B):
        n = int(lengths[b])
        for d in range(D):
            cols = [l * D + d for l in range(L)]
            dim = _Dim(mu[b][:, cols], prec[b][:, cols], wins, n, boundary, vmask[b, :, d],
                       msd_rule, ml_weight, mv[b, d], vv[b, d], gv_weight)
            x = dim.solve()
            out[b, :n, d] = unvoiced_value if voiced is not None else 0.0
            out[b, dim.frames, d] = x
            obj[b, d] = dim.J(x)
    return out, obj


def gradient_reference(c, means, variances=None, windows=DELTA, gv_mean=None,
                       gv_variance=None, *, gv_weight=1.0, ml_weight=None, lengths=None,
                       boundary="per-window", voiced=None, msd_rule="hts"):
    """``max |dJ/dc|`` over the voiced frames per ``(b, d)`` for a trajectory
    ``c`` ``(B, T, D)`` (the plain gradient of :class:`_Dim`)."""
    wins = as_windows(windows)
    L = len(wins)
    mu = np.asarray(means, dtype=np.float64)
    B, T, LD = mu.shape
    D = LD // L
    prec = (np.ones_like(mu) if variances is None
            else 1.0 / np.broadcast_to(np.asarray(variances, np.float64), mu.shape))
    lengths = np.full(B, T) if lengths is None else np.atleast_1d(lengths)
    vmask = np.ones((B, T, D), bool) if voiced is None else np.asarray(voiced, bool)
    mv = np.broadcast_to(np.asarray(gv_mean, dtype=np.float64), (B, D))
    vv = np.broadcast_to(np.asarray(gv_variance, dtype=np.float64), (B, D))
    out = np.zeros((B, D))
    for b in range(B):
        for d in range(D):
            cols = [l * D + d for l in range(L)]
            dim = _Dim(mu[b][:, cols], prec[b][:, cols], wins, int(lengths[b]), boundary,
                       vmask[b, :, d], msd_rule, ml_weight, mv[b, d], vv[b, d], gv_weight)
            x = np.asarray(c, dtype=np.float64)[b, dim.frames, d]
            out[b, d] = np.abs(dim.grad(x)).max() if dim.N else 0.0
    return out

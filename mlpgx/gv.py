r"""Global-variance (GV) constrained parameter generation (Toda & Tokuda, 2007).

MLPG trajectories are over-smoothed: their variance over an utterance is
smaller than that of natural speech.  GV generation adds a Gaussian on the
per-utterance variance of each static dimension and maximises, per sequence
``b`` and static dimension ``d``,

.. math::

    J(c) = \omega \log \mathcal N(Wc;\, \mu, P^{-1})
           + w_{gv} \log \mathcal N\big(v(c);\, \mu_v, \sigma_v^2\big),
    \qquad
    v(c) = \frac1N \sum_{t \in S} (c_t - \bar c)^2,

``S`` the frames with a real output (inside the sequence's length and, with
``voiced=``, voiced), ``N = |S|``, ``\bar c`` the mean over ``S``.  Up to
additive constants that do not depend on ``c``,

.. math::

    J(c) = -\frac{\omega}{2} (Wc - \mu)^\top P (Wc - \mu)
           - \frac{w_{gv}}{2 \sigma_v^2} (v(c) - \mu_v)^2 ,

which is the value reported in :class:`GVInfo`.  See :func:`mlpg_gv` and
``docs/gv.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._api import solve_unchecked_result
from ._msd import effective_precisions
from ._validate import (array_namespace, check_int, check_real, check_unvoiced_value,
                        make_problem, scalar_repr)
from .windows import DELTA

__all__ = ["mlpg_gv", "GVInfo"]

#: Armijo constant and the most backtracking halvings of one line search.
_ARMIJO = 1e-4
_MAX_BACKTRACK = 60
#: Inner conjugate-gradient iterations per Newton step and their relative tolerance.
_CG_MAXITER = 30
_CG_RTOL = 1e-6
#: Fraction of the smallest static precision kept when the preconditioner
#: takes in a negative GV curvature.
_SHIFT_MARGIN = 0.05


@dataclass(frozen=True)
class GVInfo:
    """What :func:`mlpg_gv` did (``return_info=True``).

    Arrays are ``(B, D)`` for a batch and ``(D,)`` for one sequence.

    Attributes
    ----------
    iterations : ndarray of int
        Newton steps taken per sequence and dimension (0 where GV does not
        act: ``gv_weight == 0`` or fewer than 2 frames).
    objective : ndarray of float64, shape (n_iter + 1, ...)
        ``J`` (up to constants, see :mod:`mlpgx.gv`) at the start point and
        after each iteration; a sequence/dimension that has stopped repeats its
        last value.  Non-decreasing along the first axis (the line search only
        accepts steps that increase ``J``; the increments are computed
        directly, without cancellation, and accumulated).
    converged : ndarray of bool
        The last Newton step was below ``tol`` times the target standard
        deviation ``sqrt(max(gv_mean, v))`` (always True where GV does not act).
    grad_norm : ndarray of float64
        ``max_t |dJ/dc_t|`` at the returned trajectory.
    gv : ndarray of float64
        ``v(c)`` of the returned trajectory.
    ml_weight : ndarray of float64
        The ``omega`` used.
    """

    iterations: np.ndarray
    objective: np.ndarray
    converged: np.ndarray
    grad_norm: np.ndarray
    gv: np.ndarray
    ml_weight: np.ndarray


# ---------------------------------------------------------------------------
# validation of the GV arguments
# ---------------------------------------------------------------------------

def _gv_stat(x, name, B, D, batched, positive):
    if x is None:
        raise ValueError(f"{name} is required: the target GV statistics, shape (D,) = ({D},)"
                         + (f" or (B, D) = ({B}, {D})" if batched else ""))
    try:
        a = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real array; got dtype {a.dtype}")
    a = a.astype(np.float64)
    shapes = [(D,)] + ([(B, D)] if batched else [])
    if a.shape not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name} must have shape {want}; got {a.shape}")
    if not np.isfinite(a).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ValueError(f"{name} must be finite; {name}{list(idx)} = {scalar_repr(a[idx])}")
    bad = ~(a > 0) if positive else ~(a >= 0)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        rel = "positive" if positive else ">= 0"
        raise ValueError(f"{name} must be {rel}; {name}{list(idx)} = {scalar_repr(a[idx])}")
    return np.ascontiguousarray(np.broadcast_to(a, (B, D)))


def _options(gv_weight, ml_weight, max_iter, tol):
    gv_weight = check_real(gv_weight, "gv_weight")
    if gv_weight < 0:
        raise ValueError(f"gv_weight must be >= 0; got {gv_weight}")
    if ml_weight is not None:
        ml_weight = check_real(ml_weight, "ml_weight")
        if ml_weight <= 0:
            raise ValueError(f"ml_weight must be positive (or None for HTS's 1/(L*N)); "
                             f"got {ml_weight}")
    max_iter = check_int(max_iter, "max_iter", 0)
    tol = check_real(tol, "tol")
    if tol <= 0:
        raise ValueError(f"tol must be positive; got {tol}")
    return gv_weight, ml_weight, max_iter, tol


# ---------------------------------------------------------------------------
# the state of one GV problem (NumPy, float64)
# ---------------------------------------------------------------------------

class _State:
    """Everything the optimiser needs, batched ``(B, T, ., D)`` in float64.

    ``P`` are the effective precisions of :func:`mlpgx._msd.effective_precisions`
    (boundary, lengths, voicing; the placeholder ``c[t] = 0`` on unvoiced
    frames), ``mu`` the means with dropped entries zeroed, ``m`` the 0/1
    frame mask of ``S``.
    """

    def __init__(self, problem, gv_mean, gv_variance, gv_weight, ml_weight, backend,
                 num_threads=None):
        self.problem = problem
        self.wins = problem.windows
        B, T, D, L = (problem.batch_size, problem.n_frames, problem.static_dim,
                      problem.n_windows)
        self.B, self.T, self.D, self.L = B, T, D, L
        P, fmask = effective_precisions(problem)
        self.P = np.asarray(P, dtype=np.float64).reshape(B, T, L, D)
        self.m = np.asarray(fmask, dtype=np.float64)
        self.inside = (np.arange(T)[None, :] < problem.lengths[:, None])[:, :, None]
        mu = np.asarray(problem.means, dtype=np.float64).reshape(B, T, L, D)
        mu = np.where(self.P > 0, mu, 0.0)
        mu[:, :, 0, :] *= self.m            # placeholder equations: c[t] = 0
        self.mu = mu
        self.N = self.m.sum(axis=1)                                   # (B, D)
        self.pmin = np.where(self.m > 0, self.P[:, :, 0, :], np.inf).min(axis=1, initial=np.inf)
        self.pmin[~np.isfinite(self.pmin)] = 0.0
        self.active = (self.N >= 2) & (gv_weight > 0)
        Nsafe = np.maximum(self.N, 1.0)
        self.omega = (np.full((B, D), float(ml_weight)) if ml_weight is not None
                      else 1.0 / (L * Nsafe))
        self.Nsafe = Nsafe
        self.mv = gv_mean
        self.vv = gv_variance
        self.gv_weight = gv_weight
        self.a = np.where(self.active, gv_weight / gv_variance, 0.0)  # (B, D)
        self.backend = backend
        self.num_threads = num_threads
        self.ml = max(w.left for w in self.wins)
        self.mr = max(w.right for w in self.wins)
        self.k = max(w.left + w.right for w in self.wins)
        self.bands = self._bands()
        self.r = self.WT(self.P * self.mu)

    def subset(self, cols):
        """A shallow copy restricted to the static dimensions ``cols``."""
        out = object.__new__(_State)
        out.__dict__.update(self.__dict__)
        out.D = len(cols)
        for name in ("P", "mu", "m", "bands", "r"):
            setattr(out, name, getattr(self, name)[..., cols])
        for name in ("N", "Nsafe", "pmin", "active", "omega", "mv", "vv", "a"):
            setattr(out, name, getattr(self, name)[:, cols])
        return out

    # -- window products --------------------------------------------------
    def W(self, x):
        """``(B, T, D) -> (B, T, L, D)``: every window applied (zero padding)."""
        T = self.T
        xp = np.pad(x, ((0, 0), (self.ml, self.mr), (0, 0)))
        out = np.zeros((x.shape[0], T, self.L, x.shape[2]))
        for l, w in enumerate(self.wins):
            for j, cj in enumerate(w.coeffs):
                if cj != 0.0:
                    s = self.ml - w.left + j
                    out[:, :, l, :] += cj * xp[:, s:s + T, :]
        return out

    def WT(self, y):
        """``(B, T, L, D) -> (B, T, D)``: ``sum_l W_l^T y_l``, masked to the lengths."""
        T = self.T
        # (W_l^T y)[i] = sum_j w[j] y[i + left - j]
        yp = np.pad(y, ((0, 0), (self.mr, self.ml), (0, 0), (0, 0)))
        out = np.zeros((y.shape[0], T, y.shape[3]))
        for l, w in enumerate(self.wins):
            for j, cj in enumerate(w.coeffs):
                if cj != 0.0:
                    s = self.mr + w.left - j
                    out += cj * yp[:, s:s + T, l, :]
        return out * self.inside

    def _bands(self):
        """``(k + 1, B, T, D)``: ``bands[a][:, i] = R[i, i - a]`` (``P`` fixed)."""
        T = self.T
        bands = np.zeros((self.k + 1, self.B, T, self.D))
        for l, w in enumerate(self.wins):
            p = self.P[:, :, l, :]
            for j, wj in enumerate(w.coeffs):
                for jp in range(j + 1):
                    wjp = w.coeffs[jp]
                    if wj == 0.0 or wjp == 0.0:
                        continue
                    a, shift = j - jp, j - w.left    # row t touches c[t + shift]
                    lo, hi = max(a, shift), min(T, T + shift)
                    if lo < hi:
                        bands[a][:, lo:hi] += wj * wjp * p[:, lo - shift:hi - shift]
        return bands

    def R(self, x):
        """``R x`` from the bands, ``(B, T, D)``, masked to the lengths."""
        bd = self.bands
        out = bd[0] * x
        for a in range(1, self.k + 1):
            if a >= self.T:
                break
            out[:, a:] += bd[a][:, a:] * x[:, :-a]
            out[:, :-a] += bd[a][:, a:] * x[:, a:]
        return out * self.inside

    # -- objective pieces -------------------------------------------------
    def stats(self, c):
        cbar = (self.m * c).sum(axis=1) / self.Nsafe                  # (B, D)
        dev = self.m * (c - cbar[:, None, :])
        v = (dev * dev).sum(axis=1) / self.Nsafe
        return dev, v

    def objective(self, c):
        """``J(c)`` evaluated directly."""
        e = self.W(c) - self.mu
        _, v = self.stats(c)
        ml = -0.5 * self.omega * (self.P * e * e).sum(axis=(1, 2))
        return ml - 0.5 * self.a * (v - self.mv) ** 2

    def gradient(self, pt):
        """``dJ/dc`` (the ascent direction) at a :class:`_Point`, ``(B, T, D)``."""
        g = (2.0 / self.Nsafe)[:, None, :] * pt.dev
        return (-(self.omega[:, None, :] * pt.Rr)
                - (self.a * (pt.v - self.mv))[:, None, :] * g)

    def delta_objective(self, pt, d, Rd):
        """``J(c + d) - J(c)`` without cancellation (``Rd = R d``)."""
        dml = -self.omega * (_dot(pt.Rr, d) + 0.5 * _dot(d, Rd))
        dd = self.m * (d - (_dot(self.m, d) / self.Nsafe)[:, None, :])
        dv = (2.0 * _dot(pt.dev, dd) + _dot(dd, dd)) / self.Nsafe
        dgv = -0.5 * self.a * dv * (2.0 * (pt.v - self.mv) + dv)
        return dml + dgv

    # -- curvature --------------------------------------------------------
    def curvature(self, dev, v):
        """The Hessian of ``-J`` at a point, as :class:`_Hessian`."""
        return _Hessian(self, dev, v)

    def solve_banded(self, prec, rhs):
        """``A^{-1} rhs`` for ``A = sum_l W_l^T diag(prec_l) W_l`` (``prec``
        ``(B, T, L, D)``, ``rhs`` ``(k*B, T, D)``: ``k`` right-hand sides per sequence)."""
        k = rhs.shape[0] // self.B if self.B else 1    # (an empty batch: one "rhs")
        pr = prec.reshape(self.B, self.T, self.L * self.D)
        if k > 1:
            pr = np.concatenate([pr] * k, axis=0)
        lengths = np.tile(self.problem.lengths, k)
        try:
            # (its result is not checked finite: the iteration handles
            # overflowing iterates itself, see _optimise)
            return solve_unchecked_result(rhs, windows=self.wins, precisions=pr,
                                          lengths=lengths, boundary="none",
                                          backend=self.backend, num_threads=self.num_threads)
        except ValueError as exc:   # (LinAlgError included)
            # the iterate left the float64 range: not this internal call's fault
            if not (np.isfinite(pr).all() and np.isfinite(rhs).all()):
                raise _GVOverflow from exc
            raise


def _dot(x, y):
    return (x * y).sum(axis=1)


class _Hessian:
    r"""Exact Hessian ``H`` of ``-J`` and its positive definite part ``M``.

    With ``s = a (v - mu_v) 2 / N``, ``g = (2/N) m (c - cbar)`` and
    ``Pc = diag(m) - m m^T / N`` (a projection)::

        H = omega R + s Pc + a g g^T
        M = omega R + s' Pc + a g g^T,   s' = max(s, -(1 - eps) omega p_min)

    ``p_min`` is the smallest static precision on ``S``: the banded part
    ``A = omega R + s' diag(m)`` then has non-negative precisions (static ones
    positive), so it is positive definite and goes through
    :func:`mlpgx.mlpg_solve`; ``U C U^T`` with ``U = [m, g]``,
    ``C = diag(-s'/N, a)`` is added by Woodbury.  ``M`` is positive definite
    (``-s'/N >= 0`` where ``s' < 0``) and equals ``H`` unless ``s`` is below
    the bound (a strong pull towards a larger variance).
    """

    def __init__(self, st: _State, dev, v):
        self.st = st
        N = st.Nsafe
        self.s = st.a * (v - st.mv) * 2.0 / N                         # (B, D)
        self.sp = np.maximum(self.s, -(1.0 - _SHIFT_MARGIN) * st.omega * st.pmin)
        self.g = (2.0 / N)[:, None, :] * dev
        prec = st.P * st.omega[:, None, None, :]
        prec[:, :, 0, :] += self.sp[:, None, :] * st.m
        self.prec = prec
        self.c1 = -self.sp / N
        self.c2 = st.a
        Z = st.solve_banded(prec, np.concatenate([st.m, self.g], axis=0))
        self.Zm, self.Zg = Z[:st.B], Z[st.B:]
        m, g = st.m, self.g
        k11 = 1.0 + self.c1 * _dot(m, self.Zm)
        k12 = self.c1 * _dot(m, self.Zg)
        k21 = self.c2 * _dot(g, self.Zm)
        k22 = 1.0 + self.c2 * _dot(g, self.Zg)
        det = k11 * k22 - k12 * k21
        self.Kinv = (k22 / det, -k12 / det, -k21 / det, k11 / det)

    def apply(self, x):
        """``H x``."""
        st = self.st
        rx = st.R(x)
        mx = st.m * x
        pcx = mx - st.m * (_dot(st.m, x) / st.Nsafe)[:, None, :]
        return (st.omega[:, None, :] * rx + self.s[:, None, :] * pcx
                + (self.c2 * _dot(self.g, x))[:, None, :] * self.g)

    def precondition(self, y):
        """``M^{-1} y``."""
        st = self.st
        Ay = st.solve_banded(self.prec, y)
        w1 = self.c1 * _dot(st.m, Ay)
        w2 = self.c2 * _dot(self.g, Ay)
        i11, i12, i21, i22 = self.Kinv
        q1 = i11 * w1 + i12 * w2
        q2 = i21 * w1 + i22 * w2
        return Ay - q1[:, None, :] * self.Zm - q2[:, None, :] * self.Zg

    def pcg(self, rhs, rtol, maxiter, newton):
        """Preconditioned CG on ``H x = rhs``, vectorised over ``(B, D)``.

        ``newton=True`` (a Newton step): stop at the first direction of
        non-positive curvature, returning the iterate so far, or the
        preconditioned right-hand side ``M^{-1} rhs`` if it is the first;
        every such result is an ascent direction for ``J``.  Returns
        ``(x, ok)``, ``ok`` False where negative curvature was met.
        """
        x = np.zeros_like(rhs)
        r = rhs.copy()
        z = self.precondition(r)
        p = z.copy()
        rz = _dot(r, z)
        rn0 = np.sqrt(_dot(rhs, rhs))
        live = rn0 > 0
        ok = np.ones(live.shape, dtype=bool)
        for k in range(maxiter):
            if not live.any():
                break
            Hp = self.apply(p)
            pHp = _dot(p, Hp)
            neg = live & ~(pHp > 0)
            if neg.any():
                ok &= ~neg
                if newton and k == 0:
                    x = np.where(neg[:, None, :], z, x)
                live &= ~neg
            alpha = np.where(live, rz / np.where(live, pHp, 1.0), 0.0)
            x = x + alpha[:, None, :] * p
            r = r - alpha[:, None, :] * Hp
            live &= np.sqrt(_dot(r, r)) > rtol * rn0
            if not live.any():
                break
            z = self.precondition(r)
            rz_new = _dot(r, z)
            beta = np.where(live, rz_new / np.where(rz != 0, rz, 1.0), 0.0)
            p = np.where(live[:, None, :], z + beta[:, None, :] * p, p)
            rz = rz_new
        return x, ok


def _mlpg_start(st: _State):
    """The MLPG solution (float64) and the HTS start point: the MLPG
    trajectory rescaled around its mean to the target variance on ``S``."""
    c_ml = st.solve_banded(st.P, st.r)
    dev, v = st.stats(c_ml)
    scale = np.where(st.active & (v > 0), np.sqrt(st.mv / np.where(v > 0, v, 1.0)), 1.0)
    c0 = c_ml + (scale - 1.0)[:, None, :] * dev
    return c_ml, c0


class _Point:
    """``c`` and what the objective needs there: ``Rr = R c - r`` (the
    likelihood gradient over ``-omega``), the deviation on ``S`` and ``v``."""

    def __init__(self, st: _State, c, Rc=None):
        self.c = c
        self.Rr = (st.R(c) if Rc is None else Rc) - st.r
        self.dev, self.v = st.stats(c)

    def moved(self, st: _State, d, Rd):
        """The point ``c + d`` (``Rd = R d``)."""
        return _Point(st, self.c + d, self.Rr + st.r + Rd)

    def subset(self, cols):
        """The static dimensions ``cols`` only."""
        out = object.__new__(_Point)
        out.c, out.Rr, out.dev = self.c[..., cols], self.Rr[..., cols], self.dev[..., cols]
        out.v = self.v[:, cols]
        return out

    def replaced(self, cols, part):
        """A copy with the static dimensions ``cols`` taken from ``part``."""
        out = object.__new__(_Point)
        for name in ("c", "Rr", "dev", "v"):
            a = getattr(self, name).copy()
            a[..., cols] = getattr(part, name)
            setattr(out, name, a)
        return out


def _radial(st: _State, pt: _Point):
    """Best rescaling of the deviation around the mean: ``c -> cbar + k (c - cbar)``
    on ``S`` with ``k > 0`` maximising ``J`` (``k = 1``: no change).

    Along this line ``J`` is a quartic in ``k`` whose derivative is the
    depressed cubic ``2 a v^2 k^3 + (omega q - 2 a v mu_v) k + omega (p - q) = 0``
    (``p = dev . (R c - r)``, ``q = dev . R dev``); its roots come from the
    companion matrices.  Returns ``(rescaled point, dJ)``, ``dJ >= 0``
    computed without cancellation.
    """
    Rdev = st.R(pt.dev)
    pp = _dot(pt.dev, pt.Rr)
    qq = _dot(pt.dev, Rdev)
    om, a, mv, v = st.omega, st.a, st.mv, pt.v
    c3 = 2.0 * a * v * v
    ok = st.active & (c3 > 0)
    best_k = np.ones_like(v)
    best = np.zeros_like(v)
    n = int(ok.sum())
    if n:
        c3, c1, c0 = c3[ok], (om * qq - 2.0 * a * v * mv)[ok], (om * (pp - qq))[ok]
        om, a, mv, v, pp, qq = om[ok], a[ok], mv[ok], v[ok], pp[ok], qq[ok]
        comp = np.zeros((n, 3, 3))
        comp[:, 0, 1] = -c1 / c3
        comp[:, 0, 2] = -c0 / c3
        comp[:, 1, 0] = 1.0
        comp[:, 2, 1] = 1.0
        if not np.isfinite(comp).all():
            raise _GVOverflow
        roots = np.linalg.eigvals(comp)                               # (n, 3)
        real = np.abs(roots.imag) <= 1e-9 * (1.0 + np.abs(roots.real))
        kr = np.where(real & (roots.real > 0), roots.real, 1.0)
        kb, gb = np.ones(n), np.zeros(n)
        for j in range(3):
            k = kr[:, j]
            u = k - 1.0
            gain = (-0.5 * om * u * (2.0 * pp + u * qq)
                    - 0.5 * a * (u * (2.0 + u) * v) * ((k * k + 1.0) * v - 2.0 * mv))
            better = gain > gb
            kb = np.where(better, k, kb)
            gb = np.where(better, gain, gb)
        best_k[ok] = kb
        best[ok] = gb
    u = (best_k - 1.0)[:, None, :]
    return pt.moved(st, u * pt.dev, u * Rdev), best


def _step(st: _State, pt: _Point, done, gn0, tol):
    """One Newton-CG step with the curvilinear Armijo search, for the
    ``(b, d)`` not ``done``.  Returns ``(point, dJ, small, accepted)``."""
    J0 = np.zeros(done.shape)
    live = ~done[:, None, :]
    G = st.gradient(pt) * live
    gn = np.sqrt(_dot(G, G))
    # forcing term (Eisenstat-Walker style): solve more exactly as G shrinks
    eta = np.clip(gn / np.where(gn0 > 0, gn0, 1.0), _CG_RTOL, 0.1)
    H = st.curvature(pt.dev, pt.v)
    dx, _ = H.pcg(G, eta, _CG_MAXITER, newton=True)
    dx *= live
    small = np.abs(dx).max(axis=1, initial=0.0) <= tol * np.sqrt(np.maximum(st.mv, pt.v))
    slope = _dot(G, dx)
    Rdx = st.R(dx)
    alpha = np.ones_like(J0)
    accepted = done.copy()
    dJ = np.zeros_like(J0)
    new = pt
    for _ in range(_MAX_BACKTRACK):
        trial = ~accepted
        if not trial.any():
            break
        al = alpha[:, None, :]
        d1 = st.delta_objective(pt, al * dx, al * Rdx)
        tp, d2 = _radial(st, pt.moved(st, al * dx, al * Rdx))
        dJk = d1 + d2
        good = trial & (dJk >= _ARMIJO * alpha * slope) & (dJk >= 0)
        dJ = np.where(good, dJk, dJ)
        new = _select(good, tp, new)
        accepted |= good
        alpha = np.where(trial & ~good, 0.5 * alpha, alpha)
    return new, dJ, small, accepted


class _GVOverflow(ArithmeticError):
    """The iteration's values left the float64 range (see :func:`_optimise`)."""


def _optimise(st: _State, max_iter, tol):
    """:func:`_optimise_unchecked`, with an overflow of its iterates (GV
    statistics or means of extreme magnitude) reported as a ValueError that
    names the arguments, instead of an error about an internal array."""
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return _optimise_unchecked(st, max_iter, tol)
    except _GVOverflow:
        raise ValueError(
            "mlpg_gv: the GV iteration overflowed float64: gv_mean or the means are too "
            "large in magnitude, or gv_variance or the variances (1 / precisions) too "
            "small, for this problem") from None


def _optimise_unchecked(st: _State, max_iter, tol):
    """Newton-CG with a curvilinear Armijo line search (each trial point is
    followed by the best radial rescaling); returns ``(c, info dict)``.

    Each iteration works on the static dimensions that some sequence still
    iterates on (the others are sliced away)."""
    _, c = _mlpg_start(st)
    pt = _Point(st, c)
    J = st.objective(c)
    hist = [J.copy()]
    done = ~st.active
    converged = ~st.active
    iters = np.zeros(st.active.shape, dtype=np.int64)
    gn0 = None
    for _ in range(max_iter):
        if done.all():
            break
        if gn0 is None:
            G = st.gradient(pt)
            gn0 = np.sqrt(_dot(G, G))
        cols = np.flatnonzero((~done).any(axis=0))
        whole = len(cols) == st.D
        sub = st if whole else st.subset(cols)
        new, dJ, small, accepted = _step(sub, pt if whole else pt.subset(cols),
                                         done[:, cols], gn0[:, cols], tol)
        pt = new if whole else pt.replaced(cols, new)
        iters += ~done
        J[:, cols] += dJ
        hist.append(J.copy())
        fin = np.zeros_like(done)
        fin[:, cols] = small
        converged = converged | (fin & ~done)
        fin[:, cols] |= ~accepted
        done = done | fin
    G = st.gradient(pt)
    info = dict(iterations=iters, objective=np.stack(hist), converged=converged,
                grad_norm=np.abs(G).max(axis=1, initial=0.0), gv=pt.v, ml_weight=st.omega)
    return pt.c, info


def _select(mask, a: _Point, b: _Point) -> _Point:
    """Per ``(b, d)``: ``a`` where ``mask``, else ``b``."""
    if mask.all():
        return a
    out = object.__new__(_Point)
    m3 = mask[:, None, :]
    out.c = np.where(m3, a.c, b.c)
    out.Rr = np.where(m3, a.Rr, b.Rr)
    out.dev = np.where(m3, a.dev, b.dev)
    out.v = np.where(mask, a.v, b.v)
    return out


def _prepare(means, variances, windows, gv_mean, gv_variance, *, precisions, gv_weight,
             ml_weight, max_iter, tol, lengths, boundary, voiced, msd_rule, backend,
             num_threads=None):
    gv_weight, ml_weight, max_iter, tol = _options(gv_weight, ml_weight, max_iter, tol)
    # (make_problem checks msd_rule; passed always so that a bad one is an
    # error without voiced= too, as in mlpgx.mlpg)
    kw = dict(voiced=voiced, msd_rule=msd_rule)
    if means is None:
        raise TypeError("means is required")
    problem = make_problem(means, variances, windows, precisions=precisions,
                           lengths=lengths, boundary=boundary, num_threads=num_threads, **kw)
    if array_namespace(problem.means) is not np:
        raise TypeError("mlpg_gv takes NumPy arrays (the optimiser runs on the host); "
                        "move CuPy arrays with .get()")
    B, D = problem.batch_size, problem.static_dim
    mv = _gv_stat(gv_mean, "gv_mean", B, D, problem.batched, positive=False)
    vv = _gv_stat(gv_variance, "gv_variance", B, D, problem.batched, positive=True)
    # (statistics of extreme magnitude overflow here: the iteration then
    # reports it by name, see _optimise, without warnings on the way)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        st = _State(problem, mv, vv, gv_weight, ml_weight, backend, problem.num_threads)
    return st, max_iter, tol


def _output(st: _State, c, unvoiced_value):
    """The trajectory in the caller's dtype: 0 beyond the lengths,
    ``unvoiced_value`` on unvoiced frames."""
    pb = st.problem
    with np.errstate(over="ignore"):   # (reported below, by name)
        out = np.where(st.inside, c, 0.0).astype(pb.dtype)
    carried = st.inside & (st.m != 0) if pb.voiced is not None else st.inside
    bad = ~np.isfinite(out) & carried
    if bad.any():   # (float32: the float64 iterate does not fit)
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        shown = idx if pb.batched else idx[1:]
        raise ValueError(
            f"mlpg_gv: output{list(shown)} = {scalar_repr(out[idx])} is not finite: the trajectory "
            f"exceeds the range of {pb.dtype} (means or gv_mean too large in magnitude)")
    if pb.voiced is not None:
        with np.errstate(over="ignore"):   # (a marker beyond float32's range is inf)
            out = np.where(st.inside & (st.m == 0), pb.dtype.type(unvoiced_value), out)
    return out if pb.batched else out[0]


def _strip_info(st: _State, info):
    if st.problem.batched:
        return GVInfo(**info)
    return GVInfo(**{k: (v[:, 0] if k == "objective" else v[0]) for k, v in info.items()})


def mlpg_gv(means, variances=None, windows=DELTA, gv_mean=None, gv_variance=None, *,
            precisions=None, gv_weight=1.0, ml_weight=None, max_iter=50, tol=1e-8,
            lengths=None, boundary="per-window", voiced=None, msd_rule="hts",
            unvoiced_value=np.nan, backend="auto", num_threads=None, return_info=False):
    r"""Parameter generation with a global-variance constraint.

    Per sequence ``b`` and static dimension ``d`` maximise (Toda & Tokuda, 2007)

    .. math::

        J(c) = -\frac{\omega}{2} (Wc - \mu)^\top P (Wc - \mu)
               - \frac{w_{gv}}{2 \sigma_v^2} \big(v(c) - \mu_v\big)^2,
        \qquad v(c) = \frac1N \sum_{t \in S} (c_t - \bar c)^2,

    i.e. ``omega log N(Wc; mu, P^-1) + w_gv log N(v(c); mu_v, sigma_v^2)`` up
    to constants.  ``W``, ``P`` and ``mu`` are those of :func:`mlpgx.mlpg`
    (boundary rule, lengths and voicing applied); ``S`` are the frames with a
    real output (inside the length, voiced) and ``N = |S|``.  HTS_engine
    weights the likelihood by ``omega = 1 / (L N)`` (``ml_weight=None``).

    The start point is the MLPG trajectory rescaled around its mean to the
    target variance (as HTS_engine does).  Each iteration takes a Newton
    step, computed by conjugate gradients on the exact Hessian of ``-J``
    preconditioned by a positive definite approximation of it (a banded solve
    plus a rank-2 Woodbury correction; the first direction of negative
    curvature stops CG with an ascent direction), and a backtracking (Armijo)
    line search in which every trial point is followed by the best rescaling
    of its deviation around the mean (exact: the roots of a cubic); only
    steps that increase ``J`` are taken, so ``J`` never decreases.  The cost
    is ``O(T)`` per dimension and iteration; see ``docs/gv.md``.

    Parameters
    ----------
    means, variances, windows, precisions, lengths, boundary, backend, num_threads
        As in :func:`mlpgx.mlpg` (``backend`` and ``num_threads`` run the
        banded solves; on a busy machine ``num_threads=1`` avoids waiting
        for descheduled threads at every one of the many small solves).
    gv_mean : array_like, shape (D,) or (B, D)
        Target variance ``mu_v`` per static dimension (``>= 0``), e.g. the
        mean over training utterances of each utterance's variance.
    gv_variance : array_like, shape (D,) or (B, D)
        ``sigma_v^2`` (``> 0``): how strongly the target is enforced.
    gv_weight : float
        ``w_gv >= 0``; 0 gives the MLPG trajectory.
    ml_weight : float, optional
        ``omega > 0``; default ``1 / (L N)`` per sequence and dimension
        (HTS_engine, with ``L`` windows and ``N`` frames in ``S``).
    max_iter : int
        Most Newton iterations (0: the rescaled start point).
    tol : float
        Stop when a Newton step is at most ``tol * sqrt(max(mu_v, v))`` in
        every frame.
    voiced : array_like of bool, shape (T, D) or (B, T, D), optional
        Voicing mask of an MSD stream (log F0), as in :func:`mlpgx.mlpg`;
        ``v`` is taken over voiced frames only.
    msd_rule : {"hts", "sptk"}
        As in :func:`mlpgx.mlpg`.
    unvoiced_value : float
        Output on unvoiced frames (with ``voiced=``).
    return_info : bool
        Also return a :class:`GVInfo`.

    Returns
    -------
    trajectory : ndarray, shape (T, D) or (B, T, D)
        In the dtype of the inputs (computed in float64); 0 beyond each
        sequence's length.  A dimension with fewer than 2 frames in ``S``
        (where ``v`` is identically 0) gets the MLPG trajectory.
    info : GVInfo
        Only with ``return_info=True``.

    Raises
    ------
    ValueError, TypeError
        Everything :func:`mlpgx.mlpg` checks; ``gv_mean`` / ``gv_variance``
        missing, of the wrong shape, not finite, negative (``gv_mean``) or
        not positive (``gv_variance``); ``gv_weight < 0``; ``ml_weight <= 0``;
        ``max_iter < 0``; ``tol <= 0``.

    Examples
    --------
    Over-smoothed means (a step-wise, "HMM state" sequence) give an MLPG
    trajectory with too small a variance; GV restores the target:

    >>> import numpy as np, mlpgx
    >>> from mlpgx.gv import mlpg_gv
    >>> t = np.arange(200)
    >>> static = np.repeat(np.sin(t[::10] / 3.0), 10)[:, None]   # (200, 1)
    >>> means = np.concatenate([static, 0 * static, 0 * static], axis=1)
    >>> variances = np.ones_like(means)
    >>> c_ml = mlpgx.mlpg(means, variances)
    >>> c, info = mlpg_gv(means, variances, gv_mean=[0.6], gv_variance=[1e-4],
    ...                   return_info=True)
    >>> bool(c_ml.var() < 0.5), round(float(c.var()), 2)
    (True, 0.6)
    >>> bool(info.converged[0]), bool(np.all(np.diff(info.objective[:, 0]) >= 0))
    (True, True)
    """
    if not isinstance(return_info, (bool, np.bool_)):
        raise TypeError(f"return_info must be a bool; got {return_info!r}")
    st, max_iter, tol = _prepare(
        means, variances, windows, gv_mean, gv_variance, precisions=precisions,
        gv_weight=gv_weight, ml_weight=ml_weight, max_iter=max_iter, tol=tol,
        lengths=lengths, boundary=boundary, voiced=voiced, msd_rule=msd_rule, backend=backend,
        num_threads=num_threads)
    unvoiced_value = check_unvoiced_value(unvoiced_value)
    c, info = _optimise(st, max_iter, tol)
    out = _output(st, c, unvoiced_value)
    if return_info:
        return out, _strip_info(st, info)
    return out


def _hessian_solve(st: _State, c, rhs, rtol=1e-13, maxiter=1000):
    """``H^{-1} rhs`` for the exact Hessian ``H`` of ``-J`` at ``c`` (the
    backward pass of :mod:`mlpgx._torch_gv`); ``rhs`` ``(B, T, D)`` float64.

    Preconditioned CG (PD preconditioner: the Gauss-Newton part of ``H``);
    ``H`` is positive definite at a strict local maximum.  Raises
    ``numpy.linalg.LinAlgError`` where it is not (a saddle point)."""
    dev, v = st.stats(c)
    H = st.curvature(dev, v)
    x, ok = H.pcg(rhs, rtol, maxiter, newton=False)
    if not ok.all():
        b, d = (int(i) for i in np.argwhere(~ok)[0])
        raise np.linalg.LinAlgError(
            f"the Hessian of the GV objective is not positive definite at sequence {b}, "
            f"dim {d}: the trajectory is not a strict local maximum")
    return x

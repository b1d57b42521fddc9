"""The reference backend: plain ``scipy.sparse``, the ground truth of mlpgx.

Every other backend is tested against this one, so it is written to be
obviously right rather than fast.  For each sequence ``b`` and each static
dimension ``d`` it builds, in float64 and over the ``n = lengths[b]`` frames
that exist,

* one sparse ``n x n`` Toeplitz matrix ``W_l`` per window,
  ``W_l[t, t - left + j] = coeffs[j]`` (terms whose column falls outside
  ``[0, n)`` dropped);
* the precisions ``p_l`` (``1 / variance``, the given precisions, or 1), with
  the boundary rule applied to the dynamic windows ``l >= 1``;
* ``R = sum_l W_l^T diag(p_l) W_l`` and ``r = sum_l W_l^T diag(p_l) mu_l``,
* with a voicing mask (MSD streams), ``p_l[t] = 0`` wherever window ``l``'s
  support at ``t`` touches an unvoiced frame, and the unknowns restricted to
  the voiced frames (unvoiced frames are simply not in the system),

and solves ``R c = r`` with a sparse LU factorisation
(:func:`scipy.sparse.linalg.splu`).  It shares no code with the fast paths:
in particular the boundary rule is derived here again from its definition
(it does not use :meth:`mlpgx._problem.Problem.zero_frame_ranges`), and the
voicing rule from its definition (not :mod:`mlpgx._msd`).
"""
from __future__ import annotations

import functools
import warnings
from typing import List, Optional, Tuple

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from .._problem import Problem
from ._base import Backend

__all__ = ["ReferenceBackend"]


def _window_matrix(window, n: int) -> scipy.sparse.csr_matrix:
    """The ``n x n`` matrix of one window.

    Parameters
    ----------
    window : Window
        Has ``left``, ``right`` and ``coeffs``; ``coeffs[j]`` multiplies
        ``c[t - left + j]``.
    n : int
        Number of frames.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``W`` with ``(W c)[t] = sum_j coeffs[j] * c[t - left + j]``, terms whose
        column is outside ``[0, n)`` dropped.
    """
    rows, cols, vals = [], [], []
    for t in range(n):
        for j, coeff in enumerate(window.coeffs):
            col = t - int(window.left) + j
            if 0 <= col < n:
                rows.append(t)
                cols.append(col)
                vals.append(float(coeff))
    return scipy.sparse.coo_matrix(
        (np.asarray(vals, dtype=np.float64),
         (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
        shape=(n, n),
    ).tocsr()


def _max_halfwidth(windows) -> int:
    """``K``: the largest ``left`` or ``right`` over all windows."""
    k = 0
    for w in windows:
        k = max(k, int(w.left), int(w.right))
    return k


def _dropped_frames(problem: Problem, l: int, n: int) -> np.ndarray:
    """Boolean mask over ``n`` frames: where the boundary rule sets the
    precision of window ``l`` to 0.

    Parameters
    ----------
    problem : Problem
    l : int
        Window index; the static window ``l = 0`` is never dropped.
    n : int
        Length of the sequence.

    Returns
    -------
    ndarray of bool, shape ``(n,)``
    """
    t = np.arange(n)
    if l == 0 or problem.boundary == "none":
        return np.zeros(n, dtype=bool)
    if problem.boundary == "per-window":
        w = problem.windows[l]
        return (t - int(w.left) < 0) | (t + int(w.right) >= n)
    if problem.boundary == "nnmnkwii":
        k = _max_halfwidth(problem.windows)
        return (t < k) | (t >= n - k)
    raise ValueError(f"unknown boundary rule {problem.boundary!r}")


def _touches_unvoiced(problem: Problem, l: int, unvoiced: np.ndarray) -> np.ndarray:
    """Boolean mask over the frames of one sequence and dimension: where the
    support of window ``l`` reaches an unvoiced frame (the MSD rule).

    Under ``msd_rule="hts"`` every frame ``t - left .. t + right`` counts;
    under ``"sptk"`` only those under a nonzero coefficient.  Frames outside
    the sequence are the boundary rule's business, not this one's.
    """
    w = problem.windows[l]
    n = unvoiced.shape[0]
    out = np.zeros(n, dtype=bool)
    for t in range(n):
        for j, coef in enumerate(w.coeffs):
            s = t - int(w.left) + j
            if 0 <= s < n and unvoiced[s] and (problem.msd_rule == "hts" or coef != 0.0):
                out[t] = True
    return out


def _raw_precisions(problem: Problem, b: int, n: int) -> np.ndarray:
    """Precisions of sequence ``b`` before the boundary rule.

    Returns
    -------
    ndarray, shape ``(n, L*D)``, float64
        ``1 / variance`` (0 where the variance is ``+inf``), the given
        precisions, or 1 when ``problem.weights`` is ``None``.
    """
    ld = problem.n_windows * problem.static_dim
    if problem.weights is None:
        return np.ones((n, ld), dtype=np.float64)
    if problem.global_weights:
        w = np.broadcast_to(np.asarray(problem.weights, dtype=np.float64), (n, ld))
    else:
        w = np.asarray(problem.weights[b, :n], dtype=np.float64)
    if problem.weight_kind == "precision":
        return np.array(w, dtype=np.float64)
    if problem.weight_kind == "variance":
        with np.errstate(divide="ignore"):
            return np.where(np.isinf(w), 0.0, 1.0 / w)
    raise ValueError(f"unknown weight kind {problem.weight_kind!r}")


def _quiet_overflow(method):
    """Run ``method`` without NumPy's overflow warnings: finite inputs so
    extreme that float64 overflows give inf/NaN results here as in the
    kernels, and the validation layer reports that with one error naming the
    inputs (``mlpgx._validate.check_result``), not with warnings first."""
    @functools.wraps(method)
    def quiet(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return method(*args, **kwargs)
    return quiet


class _System:
    """The MLPG system of one sequence and one static dimension.

    Attributes
    ----------
    W : list of scipy.sparse.csr_matrix
        One ``n x n`` matrix per window.
    p : list of ndarray
        Per window, the ``(n,)`` precisions after the boundary rule.
    dropped : list of ndarray
        Per window, the ``(n,)`` mask of frames the boundary rule or the
        voicing rule zeroed.
    frames : ndarray
        The voiced frames (all frames without a voicing mask): the unknowns.
        Unvoiced frames are not part of the system; their solution is 0.
    R : scipy.sparse.csc_matrix
        ``sum_l W_l^T diag(p_l) W_l`` restricted to ``frames``.
    """

    def __init__(self, problem: Problem, b: int, d: int, W: List, prec: np.ndarray):
        n = prec.shape[0]
        D = problem.static_dim
        self.b, self.d, self.n = b, d, n
        self.W = W
        self.p = []
        self.dropped = []
        if problem.voiced is None:
            unvoiced = np.zeros(n, dtype=bool)
        else:
            # one flag per frame (shape (B, T, 1)) or per dimension
            voiced = np.asarray(problem.voiced)
            unvoiced = ~voiced[b, :n, min(d, voiced.shape[2] - 1)]
        R = scipy.sparse.csr_matrix((n, n), dtype=np.float64)
        for l in range(problem.n_windows):
            dropped = _dropped_frames(problem, l, n) | _touches_unvoiced(problem, l, unvoiced)
            p_l = np.where(dropped, 0.0, prec[:, l * D + d])
            self.p.append(p_l)
            self.dropped.append(dropped)
            R = R + W[l].T @ scipy.sparse.diags(p_l) @ W[l]
        self.frames = np.flatnonzero(~unvoiced)
        self.R = scipy.sparse.csc_matrix(R[self.frames][:, self.frames])
        self._lu = None

    #: Gaussian elimination without pivoting on an SPD matrix has positive
    #: pivots; a pivot below this fraction of its diagonal entry is rounding
    #: noise, i.e. R is singular to working precision.
    PIVOT_RTOL = 1e-13

    def _fail(self, t: int, why: str) -> np.linalg.LinAlgError:
        return np.linalg.LinAlgError(
            f"MLPG system is not positive definite at frame t={t}, static dimension "
            f"d={self.d} of sequence b={self.b}: {why}"
        )

    def _factor(self):
        """LU without row pivoting in the natural order: for the SPD ``R`` this
        is ``L D L^T`` (``U``'s diagonal is ``D``), and a non-positive pivot
        means ``R`` is not positive definite."""
        if self._lu is not None:
            return self._lu
        diag = self.R.diagonal()
        bad = np.flatnonzero(~np.isfinite(self.R.data))
        if bad.size:   # (valid precisions whose sums left the float64 range)
            t = int(self.frames[self.R.indices[bad[0]]])
            raise self._fail(t, "R's entries overflowed float64 (precisions so large, "
                                "variances so small, that their sums are inf)")
        bad = np.flatnonzero(~(diag > 0))
        if bad.size:
            raise self._fail(int(self.frames[bad[0]]), f"R[t, t] = {float(diag[bad[0]])} (every "
                             f"precision touching the frame may be zero)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.sparse.linalg.MatrixRankWarning)
            warnings.simplefilter("ignore", scipy.sparse.SparseEfficiencyWarning)
            try:
                lu = scipy.sparse.linalg.splu(self.R, permc_spec="NATURAL",
                                              diag_pivot_thresh=0.0,
                                              options=dict(SymmetricMode=True))
            except RuntimeError as exc:
                raise self._fail(0, f"sparse LU failed ({exc}); some precisions "
                                 "that the system needs may be zero") from None
        pivots = lu.U.diagonal()
        bad = np.flatnonzero(~(pivots > self.PIVOT_RTOL * diag))
        if bad.size:
            raise self._fail(int(self.frames[bad[0]]), f"pivot {float(pivots[bad[0]]):.3g} for "
                             f"R[t, t] = {float(diag[bad[0]]):.3g} (R is singular; "
                             f"some precisions it needs may be zero)")
        self._lu = lu
        return lu

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``R^{-1} rhs`` for a ``(n,)`` right-hand side (entries of unvoiced
        frames are ignored; the solution is 0 there)."""
        x = np.zeros(self.n, dtype=np.float64)
        if self.frames.size == 0:
            return x
        lu = self._factor()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.sparse.linalg.MatrixRankWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            x[self.frames] = lu.solve(np.asarray(rhs, dtype=np.float64)[self.frames])
        return x

    def rhs(self, mu: np.ndarray) -> np.ndarray:
        """``r = sum_l W_l^T diag(p_l) mu_l`` for ``mu`` of shape ``(n, L)``."""
        r = np.zeros(self.n, dtype=np.float64)
        for l, W_l in enumerate(self.W):
            r += W_l.T @ (self.p[l] * mu[:, l])
        return r


class ReferenceBackend(Backend):
    """Ground-truth MLPG backend: ``scipy.sparse`` in float64, one sparse LU
    per sequence and static dimension.

    Slow, but written so that it can be checked by reading it; every other
    backend is tested against it.  Inputs of either dtype are computed in
    float64 and the results cast back to ``problem.dtype``.
    """

    name = "reference"
    array_module = "numpy"
    #: applies the voicing (MSD) rule itself: dropped rows, voiced frames only
    handles_voicing = True
    description = "scipy.sparse, float64, per sequence and dimension (slow; the ground truth)"

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _systems(problem: Problem):
        """Yield ``(b, n, prec, [(d, _System), ...])`` for every sequence with
        ``n > 0``; the window matrices are shared by its dimensions."""
        for b in range(problem.batch_size):
            n = int(problem.lengths[b])
            if n == 0:
                continue
            W = [_window_matrix(w, n) for w in problem.windows]
            prec = _raw_precisions(problem, b, n)
            systems = [(d, _System(problem, b, d, W, prec))
                       for d in range(problem.static_dim)]
            yield b, n, systems

    @staticmethod
    def _window_means(problem: Problem, b: int, n: int, d: int) -> np.ndarray:
        """``(n, L)`` float64 means of dimension ``d`` of sequence ``b``."""
        D = problem.static_dim
        cols = [l * D + d for l in range(problem.n_windows)]
        return np.asarray(problem.means[b, :n][:, cols], dtype=np.float64)

    # -- operations ----------------------------------------------------------

    @_quiet_overflow
    def forward(self, problem: Problem) -> np.ndarray:
        """Static trajectory ``c = R^{-1} r``.

        Parameters
        ----------
        problem : Problem
            Must have ``means``.

        Returns
        -------
        ndarray, shape ``(B, T, D)``, ``problem.dtype``
            Zeros at frames ``t >= lengths[b]``.

        Raises
        ------
        numpy.linalg.LinAlgError
            When some ``R`` is singular.
        """
        B, T, D = problem.batch_size, problem.n_frames, problem.static_dim
        out = np.zeros((B, T, D), dtype=np.float64)
        for b, n, systems in self._systems(problem):
            for d, sys_ in systems:
                mu = self._window_means(problem, b, n, d)
                out[b, :n, d] = sys_.solve(sys_.rhs(mu))
        return out.astype(problem.dtype, copy=False)

    @_quiet_overflow
    def adjoint(self, problem: Problem, grad_output) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Vector-Jacobian product of :meth:`forward`.

        With ``v = R^{-1} g``: ``grad_mu_l = p_l * (W_l v)`` and
        ``grad_p_l = (W_l v) * (mu_l - W_l c)`` (0 where the boundary rule
        zeroed ``p_l``); for variances ``grad_var_l = -p_l**2 * grad_p_l``
        (0 where the variance is ``+inf``).

        Parameters
        ----------
        problem : Problem
            Must have ``means``.
        grad_output : ndarray, shape ``(B, T, D)``
            Upstream gradient; frames ``t >= lengths[b]`` are ignored.

        Returns
        -------
        grad_means : ndarray, shape ``(B, T, L*D)``
        grad_weights : ndarray or None
            Shape of ``problem.weights`` (summed over frames and batch for
            global weights); ``None`` when ``problem.weights`` is ``None``.

        Raises
        ------
        numpy.linalg.LinAlgError
            When some ``R`` is singular.
        """
        B, T, D = problem.batch_size, problem.n_frames, problem.static_dim
        L = problem.n_windows
        g_all = np.asarray(grad_output, dtype=np.float64)
        grad_mu = np.zeros((B, T, L * D), dtype=np.float64)
        grad_w = np.zeros((B, T, L * D), dtype=np.float64)
        for b, n, systems in self._systems(problem):
            for d, sys_ in systems:
                mu = self._window_means(problem, b, n, d)
                c = sys_.solve(sys_.rhs(mu))
                v = sys_.solve(g_all[b, :n, d])
                for l, W_l in enumerate(sys_.W):
                    col = l * D + d
                    Wv = W_l @ v
                    grad_mu[b, :n, col] = sys_.p[l] * Wv
                    resid = mu[:, l] - W_l @ c
                    grad_p = Wv * resid
                    grad_p[sys_.dropped[l]] = 0.0
                    if problem.weight_kind == "variance":
                        # -p^2 grad_p, as -(p W v)(p resid): p^2 alone
                        # overflows for variances below ~1e-154
                        g_var = -(sys_.p[l] * Wv) * (sys_.p[l] * resid)
                        g_var[sys_.dropped[l]] = 0.0
                        g_var[sys_.p[l] == 0.0] = 0.0  # +inf variances (and dropped)
                        grad_w[b, :n, col] = g_var
                    else:
                        grad_w[b, :n, col] = grad_p
        grad_means = grad_mu.astype(problem.dtype, copy=False)
        if problem.weights is None:
            return grad_means, None
        if problem.global_weights:
            grad_w = grad_w.sum(axis=(0, 1))
        return grad_means, grad_w.astype(problem.dtype, copy=False)

    @_quiet_overflow
    def solve(self, problem: Problem, rhs) -> np.ndarray:
        """Solve ``R x = rhs`` per sequence and static dimension.

        Parameters
        ----------
        problem : Problem
            ``means`` is ignored.
        rhs : ndarray, shape ``(B, T, D)``
            Frames ``t >= lengths[b]`` are ignored.

        Returns
        -------
        ndarray, shape ``(B, T, D)``, ``problem.dtype``
            Zeros at frames ``t >= lengths[b]``.

        Raises
        ------
        numpy.linalg.LinAlgError
            When some ``R`` is singular.
        """
        B, T, D = problem.batch_size, problem.n_frames, problem.static_dim
        rhs = np.asarray(rhs, dtype=np.float64)
        out = np.zeros((B, T, D), dtype=np.float64)
        for b, n, systems in self._systems(problem):
            for d, sys_ in systems:
                out[b, :n, d] = sys_.solve(rhs[b, :n, d])
        return out.astype(problem.dtype, copy=False)

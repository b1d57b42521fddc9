"""The public NumPy API: :func:`mlpg`, :func:`mlpg_adjoint`, :func:`mlpg_solve`
and :func:`window_matrix`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from . import _msd
from . import backends as _backends
from ._validate import (array_namespace, check_int, check_result, check_unvoiced_value,
                        finish_means_scan, finite_inside, frames_array, make_problem,
                        inputs_reported_first, settle_deferred_scans, finish_weights_scan)
from .windows import DELTA, as_windows


def _strip(problem, a):
    return a if a is None or problem.batched else a[0]


def _for_backend(b, problem):
    """The problem as backend ``b`` takes it: backends that do not implement
    the voicing rule get the equivalent plain problem (:func:`_msd.lower`)."""
    if problem.voiced is None or getattr(b, "handles_voicing", False):
        return problem
    return _msd.lower(problem)


def _mark_unvoiced(problem, out, unvoiced_value):
    """Write ``unvoiced_value`` on unvoiced frames (inside the lengths)."""
    if problem.voiced is None:
        return out
    xp = array_namespace(out)
    unvoiced = _msd.unvoiced_frames(problem.voiced, problem.lengths)
    return xp.where(unvoiced, out.dtype.type(unvoiced_value), out)


def run_forward(b, problem, unvoiced_value=0.0, check_finite=False):
    """:meth:`Backend.forward` of ``problem`` on backend ``b`` (batched), with
    ``unvoiced_value`` on unvoiced frames; ``check_finite``: the result is
    checked finite (:func:`check_result`) before the marker is written."""
    problem = settle_deferred_scans(problem, b)
    with inputs_reported_first(problem, np.linalg.LinAlgError):   # (before a singular R)
        out, (known_finite,) = b.forward_checked(_for_backend(b, problem))
    # (a deferred means scan tests the output first: when it passes, that is
    # the result check too; the weights the kernel did not read come next.
    # A backend that tested the output finite spares both the scan of it)
    shown = finish_means_scan(problem, out, known_finite)
    finish_weights_scan(problem)
    if check_finite and not (shown or known_finite):
        unvoiced = None if problem.voiced is None else \
            _msd.unvoiced_frames(problem.voiced, problem.lengths)
        check_results("forward", problem, (out,), ignore=unvoiced)
    return _mark_unvoiced(problem, out, unvoiced_value)


def _adjoint_call(b, problem, g, output, weight_grad=True):
    """``b.adjoint_checked``, given ``output`` only when it is there and ``b``
    reuses it: ``((grad_means, grad_weights), (means_finite, weights_finite))``.
    ``weight_grad=False``: the means gradient alone (``grad_weights`` is
    ``None``), by the backend where it has ``means_only_adjoint`` (which
    needs no ``output``); the others run the adjoint as they always do, and
    the weights' gradient is dropped here, so that their methods never see
    the keyword."""
    if not weight_grad and getattr(b, "means_only_adjoint", False):
        return b.adjoint_checked(problem, g, weight_grad=False)
    if output is None or not getattr(b, "reuses_output", False):
        result = b.adjoint_checked(problem, g)
    else:
        result = b.adjoint_checked(problem, g, output=output)
    if weight_grad:
        return result
    (gm, _), (gm_finite, _) = result
    return (gm, None), (gm_finite, False)


def check_results(operation, problem, results, given_output=False, ignore=None):
    """The results of ``operation`` (``"forward"``: ``(output,)``,
    ``"solve"``: ``(x,)``, ``"adjoint"``: ``(grad_means, grad_weights)``,
    batched, as the backend returned them) checked finite
    (:func:`~mlpgx._validate.check_result`; ``None`` entries skipped)."""
    if operation == "adjoint":
        inputs = "grad_output" + (", output" if given_output else "") + ", means"
        names = ("grad_means", "grad_" + problem.weight_kind + "s")
    else:
        inputs, names = ("means", ("output",)) if operation == "forward" else ("rhs", ("x",))
    for x, name in zip(results, names):
        if x is not None:
            check_result(x, problem, name, inputs, ignore)


def run_adjoint(b, problem, g, output=None, weight_grad=True):
    """:meth:`Backend.adjoint` of ``problem`` on backend ``b``, with the
    voicing rule: ``g`` must already be 0 on unvoiced frames; constraints the
    rule drops get exactly 0.  ``output``: ``None`` or the forward's result
    for ``problem`` (batched; any values on unvoiced frames), which backends
    with ``reuses_output`` read instead of solving for it again.
    ``weight_grad=False``: ``(grad_means, None)``."""
    return run_adjoint_checked(b, problem, g, output, weight_grad)[0]


def run_adjoint_checked(b, problem, g, output=None, weight_grad=True):
    """:func:`run_adjoint` as ``((grad_means, grad_weights), (means_finite,
    weights_finite))``: each flag ``True`` when the backend tested that
    gradient finite (:meth:`Backend.adjoint_checked`)."""
    if problem.voiced is None:
        return _adjoint_call(b, problem, g, output, weight_grad)
    lowered = _for_backend(b, problem)
    if output is not None and lowered is not problem:
        output = _msd.lowered_output(problem, output)
    (gm, gw), (gm_finite, gw_finite) = _adjoint_call(b, lowered, g, output, weight_grad)
    keep = _msd._keep4(problem)
    gm = _msd.where_kept(keep, gm, 0)
    if problem.weights is None or gw is None:
        return (gm, None), (gm_finite, False)
    gw = _msd.where_kept(keep, gw, 0) if gw.ndim > 1 else gw
    if problem.global_weights and gw.ndim > 1:   # lowered weights are per frame
        with np.errstate(over="ignore", invalid="ignore"):   # (see check_result)
            gw = gw.sum(axis=(0, 1), dtype=np.float64).astype(problem.dtype)
        gw_finite = False   # (the sum may overflow)
    return (gm, gw), (gm_finite, gw_finite)


def mlpg(means, variances=None, windows=DELTA, *, precisions=None, lengths=None,
         boundary="per-window", voiced=None, unvoiced_value=np.nan, msd_rule="hts",
         backend="auto", check_finite=True, num_threads=None):
    r"""Maximum likelihood parameter generation.

    For every sequence and static dimension ``d``, with ``mu_l`` the column
    of window ``l``, ``p_l`` its precisions (``1 / variance``) and ``W_l``
    the banded window matrix,

    .. math::

        R = \sum_l W_l^\top \operatorname{diag}(p_l) W_l, \qquad
        r = \sum_l W_l^\top \operatorname{diag}(p_l)\, \mu_l, \qquad
        c = R^{-1} r.

    ``R`` is symmetric positive definite and banded (half-bandwidth
    ``k = max_l(left_l + right_l)``), so the work is ``O(T k^2)`` per
    dimension; no ``T x T`` matrix is ever formed.

    Parameters
    ----------
    means : array_like, shape (T, L*D) or (B, T, L*D)
        Means of the static and dynamic features, columns window-major:
        ``[static d=0..D-1, window 1 d=0..D-1, ..., window L-1 d=0..D-1]``
        (nnmnkwii, Merlin and diffsptk use this layout).  float32 or
        float64; integers are converted to float64, float16 to float32.
    variances : array_like, optional
        Same shape as ``means``, or ``(L*D,)`` global variances shared by
        every frame.  ``+inf`` means precision 0 ("no constraint").  At
        least 2.9e-39 in float32 and 5.6e-309 in float64 (subnormals):
        below that ``1 / variance`` overflows.
        Default: unit variances.
    windows : window specification, optional
        Anything :func:`mlpgx.windows.as_windows` accepts; default
        :data:`mlpgx.windows.DELTA` (static, ``[-0.5, 0, 0.5]``,
        ``[1, -2, 1]``).
    precisions : array_like, optional
        Alternative to ``variances`` (``>= 0``, finite).  Not both.
    lengths : array_like of int, shape (B,), optional
        Valid lengths of a padded batch: frames ``t >= lengths[b]`` are
        ignored exactly as if the sequence ended there, and output 0.
        Their values are neither read nor checked (zero-padded variances
        and NaN-padded means are fine).
    boundary : {"per-window", "nnmnkwii", "none"}
        How dynamic windows behave at the ends of a sequence.
        ``"per-window"`` (SPTK ``mlpg -R 1``, HTS_engine, diffsptk): window
        ``l``'s precision is 0 at frame ``t`` when ``t - left_l < 0`` or
        ``t + right_l >= T``.  ``"nnmnkwii"`` (nnmnkwii, Merlin): every
        dynamic window's precision is 0 when ``t < K`` or ``t >= T - K``,
        ``K`` the largest extent of any window.  ``"none"``: every row is
        kept and values outside the sequence count as 0.  The static window
        is never dropped.
    voiced : array_like of bool, optional
        Voicing mask of a multi-space (MSD) stream such as log F0:
        ``(T,)`` / ``(B, T)`` (one flag per frame) or ``(T, D)`` /
        ``(B, T, D)`` (per static dimension); bools or 0/1 numbers (a vuv
        column).  A window's precision is 0 at frame ``t`` when its support
        touches an unvoiced frame (see ``msd_rule``), so each voiced run is
        solved as its own sequence (HTS_engine, SPTK ``mlpg -magic``).
        Means and variances of the dropped constraints are never read and
        may hold anything (NaN, SPTK's magic number).  ``None``: all voiced.
    unvoiced_value : float
        Output on unvoiced frames; default NaN (SPTK writes its magic
        number, e.g. ``-1e10``: pass that to match it).  Frames beyond a
        sequence's length stay 0.
    msd_rule : {"hts", "sptk"}
        ``"hts"``: every frame ``t - left_l .. t + right_l`` of the window's
        support must be voiced; ``"sptk"``: only the frames under nonzero
        coefficients (the centre of ``[-0.5, 0, 0.5]`` is not tested).
    backend : str or Backend
        ``"auto"`` (by array type: NumPy -> ``"cython"``), a registered
        name (see :mod:`mlpgx.backends`) or a backend instance.
    check_finite : bool
        Scan ``means`` for NaN/inf (one pass), and the result: finite
        inputs so extreme that the float64 arithmetic overflows (a mean of
        1e200 with a variance of 1e-200) raise ``ValueError`` instead of
        giving inf or NaN.  ``False`` skips both scans.  (Backends whose
        output always shows a bad mean, ``"cython"``, scan the means after
        the kernel through the output and the sequences' edge frames; the
        errors are the same.)
    num_threads : int, optional
        Threads for the compiled backend; default: ``OMP_NUM_THREADS`` or
        all cores (one thread for small problems).  Capped at the CPUs
        this process may run on.

    Returns
    -------
    ndarray, shape (T, D) or (B, T, D)
        The static trajectory, in the dtype of the inputs (float32 inputs
        are stored in float32 and computed in float64 arithmetic);
        ``unvoiced_value`` on unvoiced frames.

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes, values, windows, lengths or options (the message
        names the argument); finite inputs whose arithmetic overflows (with
        ``check_finite``).
    numpy.linalg.LinAlgError
        ``R`` is not positive definite (e.g. every precision touching a
        frame is zero); the message names the frame and dimension.

    Examples
    --------
    A static stream with consistent deltas is returned unchanged:

    >>> import numpy as np, mlpgx
    >>> c = np.array([0.0, 1.0, 4.0, 9.0, 16.0])
    >>> delta = np.gradient(c)                      # [-0.5, 0, 0.5] inside
    >>> accel = np.convolve(c, [1, -2, 1], "same")
    >>> means = np.stack([c, delta, accel], axis=1)  # (T, 3): D = 1
    >>> mlpgx.mlpg(means, boundary="per-window").round(6)
    array([[ 0.],
           [ 1.],
           [ 4.],
           [ 9.],
           [16.]])

    An F0-like stream with an unvoiced gap: the two voiced runs are solved
    independently and the gap gets the marker:

    >>> voiced = np.array([1, 1, 0, 1, 1], dtype=bool)
    >>> mlpgx.mlpg(means, voiced=voiced, unvoiced_value=-1e10).ravel()
    array([ 0.0e+00,  1.0e+00, -1.0e+10,  9.0e+00,  1.6e+01])
    """
    unvoiced_value = check_unvoiced_value(unvoiced_value)
    problem = make_problem(means, variances, windows, precisions=precisions, lengths=lengths,
                           boundary=boundary, check_finite=check_finite,
                           num_threads=num_threads, voiced=voiced, msd_rule=msd_rule,
                           defer_means_scan=True, defer_weights_scan=True)
    with inputs_reported_first(problem):
        b = _backends.resolve(backend, means, operation="forward", dtype=problem.dtype,
                              boundary=problem.boundary)
    return _strip(problem, run_forward(b, problem, unvoiced_value, check_finite))


def mlpg_adjoint(grad_output, means, variances=None, windows=DELTA, *, precisions=None,
                 lengths=None, boundary="per-window", voiced=None, msd_rule="hts",
                 output=None, weight_grad=True, backend="auto", check_finite=True,
                 num_threads=None):
    r"""Vector-Jacobian product of :func:`mlpg` (its backward pass).

    With ``c = R^{-1} r`` the output of :func:`mlpg` and ``g`` the gradient
    of a loss w.r.t. ``c``:

    .. math::

        v = R^{-1} g, \quad
        \frac{\partial L}{\partial \mu_l} = p_l \odot (W_l v), \quad
        \frac{\partial L}{\partial p_l} = (W_l v) \odot (\mu_l - W_l c), \quad
        \frac{\partial L}{\partial \sigma^2_l} = -p_l^2 \odot
        \frac{\partial L}{\partial p_l}.

    One banded factorisation serves both ``c`` and ``v``; the cost is that of
    a forward pass plus one more substitution.  A caller that already has
    ``c`` (the backward pass of a training step) passes it as ``output`` and
    only ``v`` is solved for.  Frames whose precision the boundary rule fixes
    to 0, and frames beyond a sequence's length, get exactly 0.

    Parameters
    ----------
    grad_output : array_like, shape (T, D) or (B, T, D)
        Gradient w.r.t. the output of :func:`mlpg`; with ``voiced``, its
        unvoiced frames are ignored (the output there is a constant marker).
    means, variances, windows, precisions, lengths, boundary, voiced, msd_rule, backend, check_finite, num_threads
        As in :func:`mlpg`.  Constraints dropped by the voicing rule get
        exactly 0.
    output : array_like, shape (T, D) or (B, T, D), optional
        The result of :func:`mlpg` for these same inputs and options
        (whatever its ``unvoiced_value``).  Backends that can
        (``Backend.reuses_output``: ``"cython"``) read ``c`` from it instead
        of solving for it again, which takes 10-20% off the call in float64
        and up to 15% in float32 (less on batches of short sequences); the
        others ignore it.  It is not checked to be that result: any other
        array gives the gradient at a different point.  In float32 the
        variance gradient then uses the rounded ``c``: its error is of order
        ``eps32 * (|mu| + |W c|)`` (the scale :func:`verify` judges it by),
        not of ``|mu - W c|``, which can be far smaller when the model's
        statics and deltas are consistent.
    weight_grad : bool, default True
        ``False``: compute the means gradient alone, for callers whose
        variances need no gradient (fixed or global variances in MGE
        training; :mod:`mlpgx.torch` asks for it when the variances do not
        require grad).  ``p_l W_l R^{-1} g`` depends on the weights and
        ``g`` only, so the means are then neither read nor scanned for
        NaN/inf (their shape and dtype are still checked; with ``voiced``,
        those the voicing rule keeps are scanned), and ``output`` is not
        needed (nor scanned).  Backends with ``Backend.means_only_adjoint``
        (``"cython"``) skip the weights' gradient and the reads it needs,
        30-40% of the adjoint's data movement (docs/performance.md); the
        others run their adjoint (given ``output`` where they reuse it) and
        the weights' gradient is dropped.

    Returns
    -------
    grad_means : ndarray
        Shape of ``means``.
    grad_variances : ndarray or None
        Gradient w.r.t. ``variances`` (or w.r.t. ``precisions`` when those
        were given), with their shape (global ``(L*D,)`` weights get the sum
        over frames and sequences); ``None`` for unit variances or
        ``weight_grad=False``.

    Examples
    --------
    The adjoint satisfies ``<J dmu, g> == <dmu, J^T g>``:

    >>> import numpy as np, mlpgx
    >>> rng = np.random.default_rng(0)
    >>> mu, var = rng.normal(size=(50, 6)), rng.uniform(0.5, 2, size=(50, 6))
    >>> g, dmu = rng.normal(size=(50, 2)), rng.normal(size=(50, 6))
    >>> gmu, gvar = mlpgx.mlpg_adjoint(g, mu, var)
    >>> lhs = np.vdot(mlpgx.mlpg(dmu, var), g)      # mlpg is linear in the means
    >>> bool(np.isclose(lhs, np.vdot(dmu, gmu)))
    True

    With the forward's output at hand, the same gradients for less work:

    >>> c = mlpgx.mlpg(mu, var)
    >>> gmu2, gvar2 = mlpgx.mlpg_adjoint(g, mu, var, output=c)
    >>> bool(np.allclose(gmu2, gmu) and np.allclose(gvar2, gvar))
    True

    The means gradient alone:

    >>> gmu3, none = mlpgx.mlpg_adjoint(g, mu, var, weight_grad=False)
    >>> bool(np.allclose(gmu3, gmu)), none is None
    (True, True)
    """
    if not isinstance(weight_grad, (bool, np.bool_)):
        raise TypeError(f"weight_grad must be a bool; got {weight_grad!r}")
    # the means reach the weight gradient only: without weights they are
    # scanned first, as in mlpg; with them, through it (see run_forward);
    # without the weight gradient, not at all (their values are not used)
    problem = make_problem(means, variances, windows, precisions=precisions, lengths=lengths,
                           boundary=boundary, check_finite=check_finite,
                           num_threads=num_threads, voiced=voiced, msd_rule=msd_rule,
                           defer_means_scan=variances is not None or precisions is not None,
                           defer_weights_scan=True, scan_means=weight_grad)
    with inputs_reported_first(problem):
        g = _output_frames(problem, grad_output, "grad_output", check_finite)
        # (not needed without the weight gradient: its shape alone is checked)
        c = None if output is None else _output_frames(problem, output, "output",
                                                       check_finite and weight_grad)
        b = _backends.resolve(backend, means, operation="adjoint", dtype=problem.dtype,
                              boundary=problem.boundary)
    problem = settle_deferred_scans(problem, b)
    with inputs_reported_first(problem, np.linalg.LinAlgError):
        (gm, gw), (gm_finite, gw_finite) = run_adjoint_checked(b, problem, g, c, weight_grad)
    # (a deferred means scan tests gw first: when it passes, gw needs no
    # result check of its own; the weights the kernel did not read come next.
    # Gradients the backend tested finite are not scanned again)
    shown = finish_means_scan(problem, gw, gw_finite)
    finish_weights_scan(problem)
    if check_finite:
        check_results("adjoint", problem, (None if gm_finite else gm,
                                           None if shown or gw_finite else gw),
                      given_output=c is not None)
    gw = gw if problem.global_weights else _strip(problem, gw)
    return _strip(problem, gm), gw


def _output_frames(problem, x, name, check_finite):
    """An array shaped like mlpg's output (``grad_output``, ``output=``)
    validated by :func:`frames_array` (batched, contiguous, the problem's
    dtype).  With a voicing mask its unvoiced frames are set to 0 first:
    mlpg's output is a marker there, so they may hold anything (NaN) and are
    neither scanned nor read."""
    if problem.voiced is None:
        return frames_array(x, problem, name, check_finite)
    a = frames_array(x, problem, name, check_finite=False)
    a = array_namespace(a).where(_msd.unvoiced_frames(problem.voiced, problem.lengths),
                                 a.dtype.type(0), a)
    if check_finite:   # (checked in the caller's coordinates)
        a = finite_inside(_strip(problem, a), problem.lengths, name, problem.num_threads)
        a = a.reshape(problem.batch_size, problem.n_frames, problem.static_dim)
    return a


def mlpg_solve(rhs, variances=None, windows=DELTA, *, precisions=None, lengths=None,
               boundary="per-window", backend="auto", check_finite=True, num_threads=None):
    r"""Solve the precision-weighted system ``R x = rhs`` per dimension.

    ``R = sum_l W_l^T diag(p_l) W_l`` as in :func:`mlpg`.  This is the
    operation the backward pass of :func:`mlpg` is built from
    (``v = R^{-1} g``).

    Parameters
    ----------
    rhs : array_like, shape (T, D) or (B, T, D)
    variances : array_like, optional
        ``(..., T, L*D)`` or ``(L*D,)``; default unit variances.
    windows, precisions, lengths, boundary, backend, check_finite, num_threads
        As in :func:`mlpg`.

    Returns
    -------
    ndarray
        ``x``, shaped like ``rhs`` (0 beyond each sequence's length).

    Examples
    --------
    ``mlpg`` is the solve of ``r = sum_l W_l^T P_l mu_l``; with unit
    variances and a static window only, ``R`` is the identity:

    >>> import numpy as np, mlpgx
    >>> mlpgx.mlpg_solve(np.arange(3.0)[:, None], windows="static").ravel()
    array([0., 1., 2.])
    """
    problem, x, finite = _solve(rhs, variances, windows, precisions, lengths, boundary,
                                backend, check_finite, num_threads)
    if check_finite and not finite:   # (unless the backend tested it: Backend.solve_checked)
        check_results("solve", problem, (x,))
    return _strip(problem, x)


def _solve(rhs, variances, windows, precisions, lengths, boundary, backend, check_finite,
           num_threads):
    """:func:`mlpg_solve` up to the scan of its result: ``(problem, x,
    finite)``, ``x`` batched, ``finite`` whether the backend tested it finite."""
    problem = make_problem(None, variances, windows, precisions=precisions, lengths=lengths,
                           boundary=boundary, check_finite=check_finite,
                           num_threads=num_threads, dtype_from=rhs)
    x = frames_array(rhs, problem, "rhs", check_finite)
    b = _backends.resolve(backend, rhs, operation="solve", dtype=problem.dtype,
                          boundary=problem.boundary)
    x, (finite,) = b.solve_checked(problem, x)
    return problem, x, finite


def solve_unchecked_result(rhs, variances=None, windows=DELTA, *, precisions=None,
                           lengths=None, boundary="per-window", backend="auto",
                           num_threads=None):
    """:func:`mlpg_solve` with its inputs validated but its result not
    scanned for overflow: for :mod:`mlpgx.gv`, whose iteration handles
    iterates that leave the float64 range itself."""
    problem, x, _ = _solve(rhs, variances, windows, precisions, lengths, boundary, backend,
                           True, num_threads)
    return _strip(problem, x)


@dataclass(frozen=True)
class BandedMatrix:
    """A ``T x T`` banded matrix in LAPACK / :func:`scipy.linalg.solve_banded`
    layout: ``data[upper + i - j, j] == A[i, j]``.

    Attributes
    ----------
    lower, upper : int
        Numbers of sub- and super-diagonals (a window's ``left`` and ``right``).
    data : ndarray, shape (lower + upper + 1, T)
    """

    lower: int
    upper: int
    data: np.ndarray

    @property
    def shape(self) -> Tuple[int, int]:
        """``(T, T)``."""
        n = self.data.shape[1]
        return (n, n)

    def tosparse(self):
        """As a ``scipy.sparse.csr_matrix``."""
        import scipy.sparse

        n = self.shape[0]
        # row r of data holds diagonal upper - r (entries data[r, j] with
        # column j); diagonals that do not fit in an n x n matrix are dropped
        offsets, diags = [], []
        for r in range(self.data.shape[0]):
            off = self.upper - r
            if abs(off) < n:
                offsets.append(off)
                diags.append(self.data[r, max(0, off): n + min(0, off)])
        if not offsets:
            return scipy.sparse.csr_matrix((n, n))
        return scipy.sparse.diags(diags, offsets, shape=(n, n), format="csr")

    def toarray(self) -> np.ndarray:
        """As a dense array (for inspection and small tests only)."""
        return self.tosparse().toarray()

    def dot(self, x) -> np.ndarray:
        """``A @ x`` for ``x`` of shape ``(T,)`` or ``(T, m)``, without densifying."""
        return self.tosparse() @ np.asarray(x)


def window_matrix(windows, T, *, format="banded"):
    """The ``T x T`` window matrices ``W_l`` of a window set.

    ``W_l[t, t - left + j] = coeffs[j]``; terms that fall outside the
    sequence are dropped (boundary rules act on precisions, not here).

    Parameters
    ----------
    windows : window specification
        Anything :func:`mlpgx.windows.as_windows` accepts.
    T : int
        Number of frames (``>= 0``).
    format : {"banded", "sparse"}
        ``"banded"``: a tuple of :class:`BandedMatrix` (built by the compiled
        extension); ``"sparse"``: a tuple of ``scipy.sparse.csr_matrix``.

    Returns
    -------
    tuple
        One matrix per window.

    Examples
    --------
    >>> import mlpgx
    >>> W = mlpgx.window_matrix(mlpgx.windows.DELTA, 4)
    >>> W[1].lower, W[1].upper
    (1, 1)
    >>> W[1].toarray()
    array([[ 0. ,  0.5,  0. ,  0. ],
           [-0.5,  0. ,  0.5,  0. ],
           [ 0. , -0.5,  0. ,  0.5],
           [ 0. ,  0. , -0.5,  0. ]])
    """
    wins = as_windows(windows)
    T = check_int(T, "T", 0)      # (a bool is not a length)
    if format not in ("banded", "sparse"):
        raise ValueError(f"format must be 'banded' or 'sparse'; got {format!r}")
    from ._ext._window_matrix import banded_window_matrix

    mats = tuple(
        BandedMatrix(w.left, w.right,
                     banded_window_matrix(np.asarray(w.coeffs, dtype=np.float64),
                                          w.left, w.right, T))
        for w in wins)
    if format == "sparse":
        return tuple(m.tosparse() for m in mats)
    return mats

"""The one validation layer.

Every public function turns its arguments into a :class:`~mlpgx._problem.Problem`
here, once: dtypes, shapes, contiguity, finiteness, positive variances,
lengths, windows, boundary rule.  Backends and kernels assume what this module
guarantees and never check again.  Inputs are never modified (conversions
copy).

dtype policy
------------
float32 and float64 are computed natively; the result has the dtype that
``numpy.result_type`` gives for the means and the variances/precisions.
Integer arrays are converted to float64, float16 to float32 and
``longdouble`` to float64.  Booleans, complex numbers, strings and objects
raise ``TypeError``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
import os
from typing import Optional

import numpy as np

from ._msd import MSD_RULES, voiced_keep_mask, where_kept
from ._problem import BOUNDARIES, Problem
from .windows import as_windows

_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))

#: The smallest variance of each dtype whose reciprocal (the precision, which
#: the kernels compute in the storage type) is finite: a subnormal.  Below
#: it 1/variance overflows to inf, which would read as a singular system.
#: (The compiled checks test the same bit patterns, from
#: mlpgx/_ext/mlpgx_variance_bits.h; a test checks that the two agree.)
SMALLEST_VARIANCE = {
    np.dtype(np.float32): np.array(0x00200001, np.uint32).view(np.float32)[()],
    np.dtype(np.float64): np.array(0x0004000000000001, np.uint64).view(np.float64)[()],
}

try:   # the compiled scans; without the extension NumPy's reductions check
    from ._ext import solver as _solver
    WeightsRejected = _solver.WeightsRejected
except ImportError:
    _solver = None

    class WeightsRejected(ValueError):
        """(The compiled solver's exception; never raised without it.)"""


def array_namespace(x):
    """The array library of ``x``: ``cupy`` for CuPy arrays (validated on
    their device, for the ``"cuda"`` backend), else ``numpy``."""
    if type(x) is np.ndarray:   # (the common case first: this runs on every call)
        return np
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def _float_array(x, name: str):
    """``x`` as a NumPy (or CuPy) array of a float dtype we compute in (no
    copy if it is one)."""
    if not isinstance(x, np.ndarray) and array_namespace(x) is np:
        mod = type(x).__module__.split(".")[0]
        if mod in ("torch", "jax", "jaxlib", "tensorflow"):
            hint = "use mlpgx.torch.mlpg for tensors" if mod == "torch" else "convert to NumPy"
            raise TypeError(f"{name} is a {mod} array; mlpgx.mlpg takes NumPy or CuPy "
                            f"arrays ({hint})")
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    kind = x.dtype.kind
    if kind == "f":
        if x.dtype.itemsize == 2:
            return x.astype(np.float32)
        if x.dtype.itemsize > 8:
            return x.astype(np.float64)
        return x
    if kind in "iu":
        return x.astype(np.float64)
    raise TypeError(
        f"{name} must be a real floating-point (or integer) array; got dtype {x.dtype}")


def _first_bad_index(mask):
    idx = array_namespace(mask).argwhere(mask)[0]
    return tuple(int(i) for i in idx)


def _compiled_scans_take(x) -> bool:
    """Whether the compiled scans (``mlpgx/_ext/mlpgx_scan.h``) take ``x``:
    a C-contiguous float32/float64 NumPy array, with the extension built."""
    return (_solver is not None and type(x) is np.ndarray and x.dtype in _NATIVE
            and x.flags.c_contiguous)


def _weights_check(kind: str) -> str:
    """The scan check of valid weights of ``kind`` (see ``scan_valid``)."""
    return "positive" if kind == "variance" else "nonnegative"


def _compiled_scan(x, check: str, num_threads):
    """The compiled one-pass scan for NumPy arrays it takes; ``None`` for
    others (CuPy arrays, other layouts)."""
    if _compiled_scans_take(x):
        return _solver.scan_valid(x, check, num_threads)
    return None


def _all_finite(x, num_threads=None) -> bool:
    """One pass and no temporary: ``True`` proves every entry finite
    (``False``: a bad value; on CuPy, also an overflowing sum)."""
    ok = _compiled_scan(x, "finite", num_threads)
    if ok is not None:
        return ok
    with np.errstate(all="ignore"):
        return math.isfinite(float(x.sum()))


def _smallest_variance(dtype):
    # (only float32 and float64 reach the kernels; the CuPy path may ask
    # about others, which are checked against float64's bound)
    return SMALLEST_VARIANCE.get(np.dtype(dtype), SMALLEST_VARIANCE[np.dtype(np.float64)])


def _weights_ok(w, kind: str, num_threads=None) -> bool:
    """One pass: ``True`` proves the weights valid (see :func:`_check_weights`)."""
    if w.size == 0:
        return True
    ok = _compiled_scan(w, _weights_check(kind), num_threads)
    if ok is not None:
        return ok
    if kind == "variance":
        return bool(w.min() >= _smallest_variance(w.dtype))     # min() propagates NaN
    return bool(w.min() >= 0) and _all_finite(w)


def scalar_repr(value) -> str:
    """An entry of an array as messages show it: the Python number (``nan``,
    ``1e+200``, ``-3``), the same for NumPy and CuPy arrays (whose reprs are
    ``np.float64(nan)`` and ``array(nan)``)."""
    return repr(value.item()) if hasattr(value, "item") else repr(value)


def _check_finite(x: np.ndarray, name: str, num_threads=None) -> None:
    # the element-wise scan that locates a bad entry only runs when the
    # one-pass check fails
    xp = array_namespace(x)
    if _all_finite(x, num_threads):
        return
    bad = ~xp.isfinite(x)
    if bad.any():
        idx = _first_bad_index(bad)
        raise ValueError(f"{name} must be finite; {name}{list(idx)} = {scalar_repr(x[idx])}")


def _check_weights(w: np.ndarray, kind: str, name: str, num_threads=None) -> None:
    if _weights_ok(w, kind, num_threads):
        return
    if kind == "variance":
        tiny = _smallest_variance(w.dtype)
        idx = _first_bad_index(~(w >= tiny))     # NaN, 0, negatives and tiny ones
        if w[idx] > 0:
            raise ValueError(
                f"{name} must be at least {float(tiny):.7g} in {w.dtype} (its reciprocal, the "
                f"precision, overflows below that); {name}{list(idx)} = {scalar_repr(w[idx])}")
        raise ValueError(
            f"{name} must be positive (+inf allowed: no constraint); "
            f"{name}{list(idx)} = {scalar_repr(w[idx])}")
    bad = ~(w >= 0)
    if bad.any():
        idx = _first_bad_index(bad)
        raise ValueError(f"{name} must be >= 0; {name}{list(idx)} = {scalar_repr(w[idx])}")
    bad = ~array_namespace(w).isfinite(w)
    if bad.any():   # (else only the one-pass sum overflowed: the precisions are valid)
        idx = _first_bad_index(bad)
        raise ValueError(f"{name} must be finite; {name}{list(idx)} = {scalar_repr(w[idx])}")


def _padding_filled(x, lengths: np.ndarray, fill):
    """A copy of ``x`` (``(B, T, C)``, or ``(T, C)`` for one sequence) with
    the padding frames ``t >= lengths[b]`` set to ``fill``.  Those frames are
    never read, so may hold anything (zero-padded variances, NaN); the
    validation layer replaces them only when a scan fails, so that it
    reports the entries that count and every backend gets valid values."""
    xp = array_namespace(x)
    T = x.shape[-2]
    inside = xp.arange(T)[None, :] < xp.asarray(lengths)[:, None]      # (B, T)
    out = xp.where(inside[:, :, None], x.reshape((-1,) + x.shape[-2:]), x.dtype.type(fill))
    return out.reshape(x.shape)


def _check_weights_inside(w, lengths: np.ndarray, kind: str, name: str, num_threads=None):
    """:func:`_check_weights` of per-frame weights ``w`` (the caller's shape)
    on the frames inside the lengths: the padding, never read, is set to 1
    first (in a copy).  Global weights are checked whole."""
    if w.ndim > 1 and _has_padding(lengths, w.shape[-2]):
        w = _padding_filled(w, lengths, 1)
    _check_weights(w, kind, name, num_threads)


def _has_padding(lengths: np.ndarray, T: int) -> bool:
    return lengths.size > 0 and int(lengths.min()) < T


def finite_inside(x, lengths: np.ndarray, name: str, num_threads=None):
    """``x`` (``(B, T, C)`` or ``(T, C)``, the caller's shape) checked finite
    on the frames inside the lengths: one scan when it passes; otherwise
    the padding (never read) is set to 0 in a copy before a bad entry is
    located and named.  Returns ``x`` or that copy."""
    if _all_finite(x, num_threads):
        return x
    if _has_padding(lengths, x.shape[-2]):
        x = _padding_filled(x, lengths, 0)
    _check_finite(x, name, num_threads)
    return x


def _weights_name(problem: Problem) -> str:
    if problem.weights is None:
        return ""
    return " and precisions" if problem.weight_kind == "precision" else " and variances"


def overflow_reason(dtype) -> str:
    """Why a result of finite inputs is not finite (for the messages of
    :func:`check_result` and of :class:`~mlpgx.streaming.StreamingMLPG`)."""
    fits = "" if np.dtype(dtype) == np.float64 else \
        f", or the value exceeds the range of {np.dtype(dtype)}, which stores it"
    return ("their values are so extreme that the float64 arithmetic overflowed (e.g. a "
            f"mean of 1e200 with a variance of 1e-200){fits}")


def check_result(x, problem: Problem, name: str, inputs: str, ignore=None) -> None:
    """Raise ``ValueError`` when ``x``, a result computed from inputs that
    the layer has checked finite, is not finite: the inputs are so extreme
    that a product in the kernels' float64 arithmetic overflowed (a mean of
    1e200 with a variance of 1e-200), or the result does not fit its
    float32 storage.  The backends cannot tell; without this check such
    results would come back inf or NaN silently.

    One scan of ``x`` (an output, a fraction of the inputs' size, or a
    gradient) when it passes.  ``name``: what ``x`` is to the caller
    (``"output"``, ``"grad_means"``); ``inputs``: the arguments it was
    computed from (``"means"``; the weights' name is added); ``ignore``: ``None`` or a bool mask,
    broadcastable to ``x``, of entries that carry no result (unvoiced
    frames before their marker is written).  ``x`` is batched as the
    problem is; indices are reported in the caller's coordinates."""
    if _all_finite(x, problem.num_threads):
        return
    xp = array_namespace(x)
    bad = ~xp.isfinite(x)
    if ignore is not None:
        bad &= ~ignore
    if not bool(bad.any()):   # (ignored entries, or only a one-pass sum overflowed)
        return
    if not problem.batched and x.ndim == 3:   # (the caller's coordinates)
        x, bad = x[0], bad[0]
    idx = _first_bad_index(bad)
    inputs += _weights_name(problem)
    raise ValueError(f"{name}{list(idx)} = {scalar_repr(x[idx])} is not finite although "
                     f"{inputs} are: {overflow_reason(problem.dtype)}; rescale {inputs}")


def check_boundary(boundary) -> str:
    if not isinstance(boundary, str) or boundary not in BOUNDARIES:
        raise ValueError(
            f"boundary must be one of {', '.join(map(repr, BOUNDARIES))}; got {boundary!r}")
    return boundary


def check_int(value, name: str, minimum: int) -> int:
    """``value`` as an ``int >= minimum`` (bools are not ints here)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int >= {minimum}; got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int >= {minimum}; got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


def check_real(x, name: str, *, finite: bool = True) -> float:
    """``x`` as a float; a real number (not a bool), finite unless ``finite=False``."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        allowed = "" if finite else " (NaN allowed)"
        raise TypeError(f"{name} must be a real number{allowed}; got {x!r}")
    x = float(x)
    if finite and not math.isfinite(x):
        raise ValueError(f"{name} must be finite; got {x!r}")
    return x


def check_unvoiced_value(unvoiced_value) -> float:
    """The marker of unvoiced frames: any real number, NaN included."""
    if type(unvoiced_value) is float:   # (the default, NaN: checked on every call)
        return unvoiced_value
    return check_real(unvoiced_value, "unvoiced_value", finite=False)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _check_num_threads(num_threads):
    """An int >= 1, capped at :func:`usable_cpus`: more threads than CPUs
    only oversubscribe them, and OpenMP cannot start tens of thousands."""
    if num_threads is None:
        return None
    return min(check_int(num_threads, "num_threads", 1), usable_cpus())


def integer_lengths(lengths) -> np.ndarray:
    """``lengths`` (host data) as an integer array; ``[]`` or ``()`` (float64
    to NumPy) is an empty one, for an empty batch."""
    arr = np.asarray(lengths)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.intp)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers; got dtype {arr.dtype}")
    return arr


def _lengths(lengths, batch: int, T: int, batched: bool) -> np.ndarray:
    if lengths is None:
        return np.array((T,) * batch, dtype=np.intp)
    if array_namespace(lengths) is not np:   # lengths live on the host
        lengths = lengths.get()
    arr = integer_lengths(lengths)
    if not batched:
        if arr.ndim != 0:
            raise ValueError(
                f"lengths for an unbatched (T, L*D) input must be a single integer; got "
                f"shape {arr.shape} (pass means of shape (B, T, L*D) for a batch)")
        arr = arr.reshape(1)
    expected = (batch,)
    if arr.shape != expected:
        raise ValueError(
            f"lengths must have shape {expected} (one length per sequence); got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > T):
        idx = int(np.flatnonzero((arr < 0) | (arr > T))[0])
        raise ValueError(f"lengths must lie in [0, T={T}]; lengths[{idx}] = {int(arr[idx])}")
    return arr.astype(np.intp)


def check_msd_rule(msd_rule) -> str:
    if not isinstance(msd_rule, str) or msd_rule not in MSD_RULES:
        raise ValueError(
            f"msd_rule must be one of {', '.join(map(repr, MSD_RULES))}; got {msd_rule!r}")
    return msd_rule


def _voiced(voiced, xp, B: int, T: int, D: int, batched: bool):
    """The voicing mask as ``(B, T, 1)`` or ``(B, T, D)`` bool (a copy), from
    ``(T,)`` / ``(T, D)`` (unbatched) or ``(B, T)`` / ``(B, T, D)`` (batched)
    arrays of bools or of 0/1 numbers (a vuv feature column)."""
    if array_namespace(voiced) is not xp:
        if xp is np:
            raise TypeError("voiced must be a NumPy array (like the means); got a "
                            f"{type(voiced).__module__.split('.')[0]} array")
        voiced = xp.asarray(voiced)
    if xp is np:
        try:
            voiced = np.asarray(voiced)
        except Exception as exc:
            raise TypeError(f"voiced could not be converted to an array: {exc}") from None
    kind = voiced.dtype.kind
    if kind == "b":
        v = voiced
    elif kind in "iuf":
        if voiced.size and not bool(((voiced == 0) | (voiced == 1)).all()):
            bad = _first_bad_index(~((voiced == 0) | (voiced == 1)))
            raise ValueError(f"voiced must be boolean or 0/1; voiced{list(bad)} = "
                             f"{scalar_repr(voiced[bad])}")
        v = voiced != 0
    else:
        raise TypeError(f"voiced must be a boolean (or 0/1) array; got dtype {voiced.dtype}")
    lead = (B, T) if batched else (T,)
    if v.shape == lead:
        v = v[..., None]
    elif v.shape != lead + (D,):
        per_utt = "(B, T)" if batched else "(T,)"
        per_dim = "(B, T, D)" if batched else "(T, D)"
        raise ValueError(f"voiced must have shape {per_utt} = {lead} (one flag per frame) "
                         f"or {per_dim} = {lead + (D,)} (per static dimension); got {v.shape}")
    return xp.array(v.reshape((B, T, v.shape[-1])), dtype=bool)   # (-1 fails on size 0)


def _weights(variances, precisions):
    if variances is not None and precisions is not None:
        raise ValueError("give either variances or precisions, not both")
    if precisions is not None:
        return precisions, "precision", "precisions"
    return variances, "variance", "variances"


def make_problem(means, variances=None, windows=None, *, precisions=None, lengths=None,
                 boundary="per-window", check_finite=True, num_threads=None,
                 static_dim=None, dtype_from=None, voiced=None, msd_rule="hts",
                 defer_means_scan=False, defer_weights_scan=False,
                 scan_means=True) -> Problem:
    """Validate the arguments of :func:`mlpgx.mlpg` and friends.

    ``means`` may be ``None`` for a pure solve; then ``static_dim`` and
    ``dtype_from`` (the right-hand side, ``(..., T, D)``) give the shape.
    With a voicing mask, constraints that the voicing rule drops are not
    checked (their values are never read); where some of them are not
    finite (or not valid weights), the problem holds a copy with 0 (means)
    or 1 (weights) there.

    ``scan_means=False``: the means' values are not used by the caller (the
    means-only adjoint), so they are not scanned for NaN/inf where no voicing
    mask is given (their shape and dtype are still checked).

    ``defer_means_scan``: with ``check_finite`` and no voicing mask, leave
    the means' NaN/inf scan to :func:`finish_means_scan` after the kernel
    (``Problem.means_scan_deferred``); bad weights are still reported after
    bad means, as without it.  ``defer_weights_scan``: the same for the
    check of per-frame weights (without a voicing mask), left to the
    backend's kernel and :func:`finish_weights_scan`
    (``Problem.weights_scan_deferred``).
    """
    wins = as_windows(windows)
    L = len(wins)
    boundary = check_boundary(boundary)
    if not isinstance(check_finite, (bool, np.bool_)):
        raise TypeError(f"check_finite must be a bool; got {check_finite!r}")
    msd_rule = check_msd_rule(msd_rule)
    if voiced is not None and means is None:
        raise ValueError("voiced is only supported with means (not for a pure solve)")
    num_threads = _check_num_threads(num_threads)
    weights, kind, wname = _weights(variances, precisions)

    if means is not None:
        m = _float_array(means, "means")
        if m.ndim not in (2, 3):
            raise ValueError(
                f"means must have shape (T, L*D) or (B, T, L*D); got shape {m.shape}")
        batched = m.ndim == 3
        LD = m.shape[-1]
        if LD % L:
            raise ValueError(
                f"means has {LD} columns, which is not a multiple of the number of "
                f"windows ({L}); columns are laid out [static d=0..D-1, window 1 "
                f"d=0..D-1, ...]")
        D = LD // L
        T = m.shape[-2]
        dtype = m.dtype
    else:
        m = None
        ref = _float_array(dtype_from, "rhs")
        if ref.ndim not in (2, 3):
            raise ValueError(f"rhs must have shape (T, D) or (B, T, D); got shape {ref.shape}")
        batched = ref.ndim == 3
        T, D = ref.shape[-2], ref.shape[-1]
        LD = L * D
        dtype = ref.dtype

    w = None
    if weights is not None:
        w = _float_array(weights, wname)
        full = (m.shape if m is not None else (ref.shape[:-1] + (LD,)))
        if w.shape != full and w.shape != (LD,):
            what = "means" if m is not None else "rhs with L*D columns"
            raise ValueError(
                f"{wname} must have the shape of {what} {full} or be global with shape "
                f"({LD},); got {w.shape}")
        if array_namespace(w) is not array_namespace(m if m is not None else ref):
            raise TypeError(f"{wname} and {'means' if m is not None else 'rhs'} must come "
                            f"from the same array library (NumPy or CuPy)")
        if w.dtype != dtype:
            dtype = np.result_type(dtype, w.dtype)
    if dtype not in _NATIVE:  # only reachable through odd promotions
        dtype = np.dtype(np.float64)

    B = (m.shape[0] if m is not None else ref.shape[0]) if batched else 1
    lens = _lengths(lengths, B, T, batched)

    padded = lengths is not None and _has_padding(lens, T)
    vmask = keep = None
    if voiced is not None:
        vmask = _voiced(voiced, array_namespace(m), B, T, D, batched)
        # (B, T, L, 1 or D): which entries are ever read
        keep = voiced_keep_mask(vmask, lens, wins, msd_rule)

    # checks run on the caller's shapes so that reported indices are theirs
    if m is not None:
        xp = array_namespace(m)
        m = xp.ascontiguousarray(m, dtype=dtype)
        # Entries the voicing rule drops are never read and may hold anything
        # (NaN, a magic number); when they are not all finite, the problem
        # gets a copy with zeros there (so its means are finite everywhere).
        # A passing first scan already proves the means finite.
        # Padding frames (t >= lengths[b]) are not read either: replaced by
        # zeros too when not all finite.
        deferred = bool(defer_means_scan and check_finite and scan_means and keep is None
                        and _every_window_nonzero(wins))
        if keep is None:
            if check_finite and scan_means and not deferred:
                m = finite_inside(m, lens, "means", num_threads)
        elif not _all_finite(m, num_threads):
            m = where_kept(keep, m, 0)
            if padded:
                m = _padding_filled(m, lens, 0)
            if check_finite:
                _check_finite(m, "means", num_threads)
        m_caller_shape = m.shape
        m = m.reshape(B, T, LD)
    else:
        deferred = False
    weights_deferred = False
    if w is not None:
        xp = array_namespace(w)
        w = xp.ascontiguousarray(w, dtype=dtype)
        weights_deferred = bool(defer_weights_scan and w.ndim > 1 and keep is None)
        # the same for invalid weights that are never read: 1 there
        if not weights_deferred and not _weights_ok(w, kind, num_threads):
            if deferred:   # (bad means are reported first, as without deferring)
                finite_inside(m.reshape(m_caller_shape), lens, "means", num_threads)
            if keep is not None and w.ndim > 1:
                w = where_kept(keep, w, 1)
            _check_weights_inside(w, lens, kind, wname, num_threads)
        if w.ndim > 1:
            w = w.reshape(B, T, LD)

    return Problem(means=m, weights=w, weight_kind=kind, windows=wins, lengths=lens,
                   boundary=boundary, static_dim=D, n_frames=T, dtype=np.dtype(dtype),
                   batched=batched, num_threads=num_threads, voiced=vmask,
                   msd_rule=msd_rule, voicing_keep=keep, means_scan_deferred=deferred,
                   weights_scan_deferred=weights_deferred)


@functools.lru_cache(maxsize=64)
def _every_window_nonzero(windows) -> bool:
    """Whether every window has a nonzero coefficient (a window of zeros
    never carries its means into a result: those must be scanned first)."""
    return all(any(c != 0 for c in w.coeffs) for w in windows)


def finish_means_scan(problem: Problem, output=None, known_finite: bool = False) -> bool:
    """The NaN/inf scan of ``problem.means`` that :func:`make_problem`
    deferred (``means_scan_deferred``); raises the ``ValueError`` it would
    have raised, naming the first bad entry.

    ``output``: the forward's result (or the adjoint's weight gradient),
    computed by a backend with ``nonfinite_means_reach_output``.  When it
    is finite, only the frames
    where a bad mean might not reach it are scanned: the first and last
    ``windows.max_halfwidth`` frames of each sequence (a window may be
    dropped there by the boundary rule, or have its nonzero coefficients
    outside the sequence).  ``None`` (no result: the kernel failed, or the
    backend cannot show bad means) scans them all.  ``known_finite``: the
    backend tested ``output`` finite as it computed it (``forward_checked``),
    so it is not scanned again.  Returns whether ``output`` was found finite
    (its result check can then be skipped)."""
    if not problem.means_scan_deferred:
        return False
    m, lens = problem.means, problem.lengths
    if output is not None and (known_finite or _all_finite(output, problem.num_threads)):
        K = problem.windows.max_halfwidth
        if K == 0 or _edge_frames_ok(m, lens, K):
            return True
    finite_inside(m if problem.batched else m[0], lens, "means", problem.num_threads)
    return False


@functools.lru_cache(maxsize=16)
def weights_range(dtype, kind: str):
    """``(lo, hi)``: valid weights of ``kind`` lie in ``[lo, hi]`` (NaN
    outside), as :func:`_check_weights` has it and as the compiled solver's
    ``check_weights`` takes it: variances from the smallest whose reciprocal
    fits float64 (see ``SMALLEST_VARIANCE``) to ``+inf``, precisions from 0
    to the largest finite number of ``dtype``."""
    if kind == "variance":
        return float(_smallest_variance(dtype)), math.inf
    return 0.0, float(np.finfo(dtype).max)


def _scan_weights(problem: Problem) -> None:
    """The whole check of the weights that :func:`make_problem` deferred:
    raises the ``ValueError`` it would have raised (a bad mean first)."""
    w, lens, kind = problem.weights, problem.lengths, problem.weight_kind
    if _weights_ok(w, kind, problem.num_threads):
        return
    finish_means_scan(problem)   # (bad means are reported first)
    _check_weights_inside(w if problem.batched else w[0], lens, kind,
                          "precisions" if kind == "precision" else "variances",
                          problem.num_threads)


def finish_weights_scan(problem: Problem, checked_in_kernel: bool = True) -> None:
    """The check of ``problem.weights`` that :func:`make_problem` deferred
    (``weights_scan_deferred``); raises the ``ValueError`` it would have
    raised, naming the first bad entry.

    ``checked_in_kernel``: a backend with ``Backend.checks_weights`` solved
    the problem without complaint, so every weight it read is valid; those
    are all but the frames where the boundary rule may drop a window, the
    first and last ``max(zero_frame_ranges())`` frames of each sequence,
    which are scanned here.  ``False`` scans them all."""
    if not problem.weights_scan_deferred:
        return
    if checked_in_kernel:
        K = problem.zero_frame_margin()
        if K == 0 or _edge_frames_ok(problem.weights, problem.lengths, K, "weights",
                                     problem.weight_kind):
            return
    _scan_weights(problem)


class inputs_reported_first:
    """Run the block; when it raises one of ``errors``, or the compiled
    solver's ``WeightsRejected``, the means scan and the weights check that
    :func:`make_problem` deferred run first, so that bad means and then bad
    weights are reported before the block's error, as they were when the
    inputs were checked before everything else.  ``problem`` ``None``:
    nothing deferred.

    (A class rather than a generator-based context manager: it is entered
    on every call of the public functions, and this costs a third as much.)"""

    __slots__ = ("problem", "caught")

    def __init__(self, problem: Optional[Problem], errors=Exception):
        self.problem = problem
        self.caught = (WeightsRejected,) + (errors if isinstance(errors, tuple) else (errors,))

    def __enter__(self):
        return None

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or not issubclass(exc_type, self.caught):
            return False
        if self.problem is not None:
            finish_means_scan(self.problem)
            finish_weights_scan(self.problem, checked_in_kernel=False)
        if issubclass(exc_type, WeightsRejected):   # (the full check found nothing)
            raise RuntimeError("the solver's weight check and the validation layer's "
                               "disagree: please report this") from None
        return False


def settle_deferred_scans(problem: Problem, backend) -> Problem:
    """``problem`` for ``backend``: a deferred means scan runs now (and the
    problem says it ran) unless the backend's results show bad means
    (``Backend.nonfinite_means_reach_output``); a deferred weights check
    runs now unless the backend checks the weights it reads
    (``Backend.checks_weights(problem)``)."""
    if problem.means_scan_deferred and not getattr(backend, "nonfinite_means_reach_output",
                                                   False):
        finish_means_scan(problem)
        problem = dataclasses.replace(problem, means_scan_deferred=False)
    if problem.weights_scan_deferred and not backend.checks_weights(problem):
        finish_weights_scan(problem, checked_in_kernel=False)
        problem = dataclasses.replace(problem, weights_scan_deferred=False)
    return problem


def _edge_frames_ok(m, lengths, K: int, check: str = "finite",
                    kind: Optional[str] = None) -> bool:
    """Whether frames ``0..K-1`` and ``n-K..n-1`` of every sequence of ``m``
    (``(B, T, C)``; ``n = lengths[b]``) pass ``check`` (``"finite"``, or
    ``"weights"``: valid weights of ``kind``, see :func:`_weights_ok`)."""
    if (_compiled_scans_take(m) and m.ndim == 3 and type(lengths) is np.ndarray
            and lengths.dtype == np.intp):   # (one compiled call)
        scan = "finite" if check == "finite" else _weights_check(kind)
        return _solver.scan_edges(m, scan, K, lengths)
    ok = _all_finite if check == "finite" else (lambda x: _weights_ok(x, kind))
    B, T = m.shape[0], m.shape[1]
    xp = array_namespace(m)
    head = xp.ascontiguousarray(m[:, :K])
    if head.size and not ok(head):
        return False
    n = np.asarray(lengths)
    if bool((n == T).all()):
        tail = xp.ascontiguousarray(m[:, max(T - K, 0):])
    else:
        t = n.reshape(-1, 1) - K + np.arange(K)                         # (B, K)
        b = np.broadcast_to(np.arange(n.shape[0]).reshape(-1, 1), t.shape)
        inside = t >= 0      # (frames >= n are padding; those < K were scanned)
        tail = m[xp.asarray(b[inside]), xp.asarray(t[inside])]
    return tail.size == 0 or ok(tail)


def frames_array(x, problem: Problem, name: str, check_finite=True) -> np.ndarray:
    """Validate a ``(..., T, D)`` array (an upstream gradient or a right-hand
    side) against ``problem``; returns it ``(B, T, D)``, contiguous, in the
    problem's dtype."""
    a = _float_array(x, name)
    B, T, D = problem.batch_size, problem.n_frames, problem.static_dim
    expected = (B, T, D) if problem.batched else (T, D)
    if a.shape != expected:
        raise ValueError(f"{name} must have shape {expected}; got {a.shape}")
    ref = problem.means if problem.means is not None else problem.weights
    if ref is not None and array_namespace(ref) is not array_namespace(a):
        raise TypeError(f"{name} must come from the same array library as the means "
                        f"and variances (NumPy or CuPy)")
    a = array_namespace(a).ascontiguousarray(a, dtype=problem.dtype)
    if check_finite:
        a = finite_inside(a, problem.lengths, name, problem.num_threads)
    return a.reshape(B, T, D)

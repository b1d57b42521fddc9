"""Voiced/unvoiced (multi-space distribution, MSD) streams.

F0 exists on voiced frames only.  HTS_engine and SPTK (``mlpg -magic``)
generate log F0 by dropping every dynamic constraint whose window touches an
unvoiced frame and solving each voiced run as its own sequence; unvoiced
output frames get a marker value.

The rule, per static dimension ``d`` of a sequence of ``n`` frames
(``u[t]`` = frame ``t`` is unvoiced, frames outside ``[0, n)`` are left to
the boundary rule):

- ``"hts"`` (HTS_engine): window ``l``'s precision at frame ``t`` is 0 when
  any frame ``t - left_l .. t + right_l`` of its support is unvoiced;
- ``"sptk"`` (SPTK ``mlpg``): only the frames under *nonzero* coefficients
  are tested (the centre of ``[-0.5, 0, 0.5]`` is not).

The static window's support is the frame itself, so every constraint on an
unvoiced frame is dropped under both rules, and no remaining constraint
couples it to any other frame (a constraint that reaches it with a nonzero
coefficient is dropped).  Voiced runs are therefore independent sequences.

The fast backends do not know about voicing: :func:`lower` rewrites a
problem into a plain one with the same solution on voiced frames (dropped
constraints get precision 0; each unvoiced frame gets the placeholder
equation ``c[t] = 0``, which keeps ``R`` nonsingular and is decoupled from
everything else), and the API layer writes the marker afterwards.  The
reference backend applies the rule itself, plainly, on the reduced system of
voiced frames.

Everything here works on NumPy and CuPy arrays (and the slicing helpers on
torch tensors): it only slices, compares and selects.
"""
from __future__ import annotations

import dataclasses

import numpy as np

#: Voicing rules understood by :func:`keep_mask`.
MSD_RULES = ("hts", "sptk")


def _offsets(window, rule: str):
    """Frame offsets ``j`` (relative to ``t``) that window's support test
    looks at."""
    offs = range(-int(window.left), int(window.right) + 1)
    if rule == "sptk":
        return [j for j, c in zip(offs, window.coeffs) if c != 0.0]
    return list(offs)


def shifted_any(unvoiced, offsets, *, zeros, concat):
    """``out[..., t, :] = any(unvoiced[..., t + j, :] for j in offsets)``,
    frames outside ``[0, T)`` counting as voiced.

    ``unvoiced`` is ``(B, T, D)`` bool; ``zeros(shape)`` and
    ``concat(arrays, axis)`` come from its array library (so that the same
    code serves NumPy, CuPy and torch).
    """
    B, T, D = unvoiced.shape
    if not offsets:
        return zeros((B, T, D))
    lo = max(0, -min(offsets))
    hi = max(0, max(offsets))
    padded = concat([zeros((B, lo, D)), unvoiced, zeros((B, hi, D))], 1)
    out = None
    for j in offsets:
        s = padded[:, lo + j: lo + j + T, :]
        out = s if out is None else (out | s)
    return out


def keep_mask(unvoiced, windows, rule: str, *, zeros, concat):
    """``(B, T, L*D)`` bool: which precisions the voicing rule keeps.

    Parameters
    ----------
    unvoiced : (B, T, D) bool array
        Unvoiced frames that exist (``t < lengths[b]``); padding counts as
        voiced so that only the boundary rule acts there.
    windows : WindowSet
    rule : {"hts", "sptk"}
    zeros, concat
        Constructors of the array library (see :func:`shifted_any`).
    """
    cols = [~shifted_any(unvoiced, _offsets(w, rule), zeros=zeros, concat=concat)
            for w in windows]
    return concat(cols, 2)


def _xp_ops(xp):
    return (lambda shape: xp.zeros(shape, dtype=bool)), xp.concatenate


def _xp_of(x):
    from ._validate import array_namespace
    return array_namespace(x)


def _xp(problem):
    return _xp_of(problem.voiced if problem.voiced is not None else problem.means)


def unvoiced_frames(voiced, lengths):
    """``(B, T, D)`` bool: unvoiced frames inside each sequence's length
    (``voiced`` ``(B, T, D)`` bool, ``lengths`` ``(B,)``)."""
    xp = _xp_of(voiced)
    T = voiced.shape[1]
    n = xp.asarray(lengths)
    inside = xp.arange(T)[None, :, None] < n[:, None, None]
    return ~voiced & inside


def voiced_keep_mask(voiced, lengths, windows, rule: str):
    """:func:`keep_mask` for a ``(B, T, D)`` voicing mask and lengths."""
    zeros, concat = _xp_ops(_xp_of(voiced))
    return keep_mask(unvoiced_frames(voiced, lengths), windows, rule,
                     zeros=zeros, concat=concat)


def problem_keep_mask(problem):
    """:func:`keep_mask` of a problem with ``voiced`` set."""
    return voiced_keep_mask(problem.voiced, problem.lengths, problem.windows,
                            problem.msd_rule)


def _static_unvoiced(problem, unvoiced):
    """``(B, T, L*D)`` bool: the static columns of unvoiced frames."""
    xp = _xp(problem)
    L = problem.n_windows
    rest = xp.zeros(unvoiced.shape[:2] + (unvoiced.shape[2] * (L - 1),), dtype=bool)
    return xp.concatenate([unvoiced, rest], axis=2)


def lower(problem):
    """The plain problem (``voiced=None``) whose solution equals ``problem``'s
    on voiced frames; unvoiced frames solve ``c[t] = 0``.

    Dropped constraints get precision 0 (variance ``+inf``) and mean 0, so
    values there are never read (they may be NaN); the static column of an
    unvoiced frame gets unit precision and mean 0.  Weights become per-frame
    ``(B, T, L*D)`` (global and unit weights are broadcast).  Returns the
    problem itself when it has no voicing mask.
    """
    if problem.voiced is None:
        return problem
    xp = _xp(problem)
    keep = problem_keep_mask(problem)
    placeholder = _static_unvoiced(problem, unvoiced_frames(problem.voiced, problem.lengths))
    dt = problem.dtype
    shape = keep.shape
    means = None
    if problem.means is not None:
        means = xp.where(keep, problem.means, dt.type(0))
    if problem.weight_kind == "precision":
        dropped_value, kind = 0.0, "precision"
    else:
        dropped_value, kind = np.inf, "variance"
    if problem.weights is None:
        w = xp.ones(shape, dtype=dt)
    else:
        w = xp.broadcast_to(problem.weights, shape)
    w = xp.where(keep, w, dt.type(dropped_value))
    w = xp.where(placeholder, dt.type(1), w)
    return dataclasses.replace(
        problem, means=None if means is None else xp.ascontiguousarray(means),
        weights=xp.ascontiguousarray(w), weight_kind=kind, voiced=None)


def effective_precisions(problem):
    """All rules applied: ``(precisions, frame_mask)``.

    Returns
    -------
    precisions : (B, T, L*D) float64 array
        ``1 / variance`` (0 for ``+inf``), the given precisions, or 1;
        then 0 where the boundary rule or the voicing rule drops the
        constraint and beyond each sequence's length; 1 on the static column
        of unvoiced frames (the placeholder equation ``c[t] = 0`` of
        :func:`lower`).  Solving with these precisions, ``boundary="none"``
        and the same ``lengths`` gives the problem's solution.
    frame_mask : (B, T, D) bool array
        Frames that carry a real output: inside the length and voiced.
    """
    from ._validate import array_namespace
    pb = lower(problem)
    xp = array_namespace(pb.weights if pb.weights is not None else pb.means)
    B, T, D, L = pb.batch_size, pb.n_frames, pb.static_dim, pb.n_windows
    if pb.weights is None:
        p = xp.ones((B, T, L * D), dtype=np.float64)
    else:
        w = xp.broadcast_to(xp.asarray(pb.weights, dtype=np.float64), (B, T, L * D))
        if pb.weight_kind == "variance":
            with np.errstate(divide="ignore"):
                p = xp.where(xp.isinf(w), 0.0, 1.0 / w)
        else:
            p = xp.array(w)
    lengths = xp.asarray(pb.lengths)
    t = xp.arange(T)[None, :]
    n = lengths[:, None]
    inside = t < n                                     # (B, T)
    lo, hi = pb.zero_frame_ranges()
    p = p.reshape(B, T, L, D)
    for l in range(1, L):
        drop = (t < int(lo[l])) | (t >= n - int(hi[l]))
        p[:, :, l, :] = xp.where(drop[:, :, None], 0.0, p[:, :, l, :])
    p = xp.where(inside[:, :, None, None], p, 0.0).reshape(B, T, L * D)
    frame_mask = xp.broadcast_to(inside[:, :, None], (B, T, D))
    if problem.voiced is not None:
        frame_mask = frame_mask & ~unvoiced_frames(problem.voiced, problem.lengths)
    return xp.ascontiguousarray(p), xp.ascontiguousarray(frame_mask)

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
constraints get precision 0; the static constraint of each unvoiced frame
keeps unit precision, a placeholder equation ``c[t] = mu_static[t]`` that
keeps ``R`` nonsingular and is decoupled from everything else), and the API
layer writes the marker over it afterwards.  The
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

    ``unvoiced`` is ``(B, T, Dm)`` bool; ``zeros(shape)`` and
    ``concat(arrays, axis)`` come from its array library (so that the same
    code serves NumPy, CuPy and torch).
    """
    B, T, Dm = unvoiced.shape
    if not offsets:
        return zeros((B, T, Dm))
    lo = max(0, -min(offsets))
    hi = max(0, max(offsets))
    padded = concat([zeros((B, lo, Dm)), unvoiced, zeros((B, hi, Dm))], 1)
    out = None
    for j in offsets:
        s = padded[:, lo + j: lo + j + T, :]
        out = s if out is None else (out | s)
    return out


def keep_mask(unvoiced, windows, rule: str, *, zeros, concat):
    """``(B, T, L, Dm)`` bool: which precisions the voicing rule keeps.

    Parameters
    ----------
    unvoiced : (B, T, Dm) bool array
        Unvoiced frames that exist (``t < lengths[b]``); padding counts as
        voiced so that only the boundary rule acts there.  ``Dm`` is 1 for
        one flag per frame (the result then broadcasts over ``D``) or ``D``.
    windows : WindowSet
    rule : {"hts", "sptk"}
    zeros, concat
        Constructors of the array library (see :func:`shifted_any`).
    """
    cols = [~shifted_any(unvoiced, _offsets(w, rule), zeros=zeros, concat=concat)[:, :, None]
            for w in windows]
    return concat(cols, 2)


def _xp_of(x):
    from ._validate import array_namespace
    return array_namespace(x)


def unvoiced_frames(voiced, lengths):
    """``(B, T, Dm)`` bool: unvoiced frames inside each sequence's length
    (``voiced`` ``(B, T, Dm)`` bool, ``lengths`` ``(B,)``)."""
    xp = _xp_of(voiced)
    T = voiced.shape[1]
    n = xp.asarray(lengths)
    inside = xp.arange(T)[None, :, None] < n[:, None, None]
    return ~voiced & inside


def voiced_keep_mask(voiced, lengths, windows, rule: str):
    """:func:`keep_mask` for a ``(B, T, Dm)`` voicing mask and lengths."""
    xp = _xp_of(voiced)
    return keep_mask(unvoiced_frames(voiced, lengths), windows, rule,
                     zeros=lambda shape: xp.zeros(shape, dtype=bool), concat=xp.concatenate)


def _keep4(problem):
    """The problem's ``(B, T, L, Dm)`` keep mask (computed once, by the
    validation layer)."""
    if problem.voicing_keep is not None:
        return problem.voicing_keep
    return voiced_keep_mask(problem.voiced, problem.lengths, problem.windows,
                            problem.msd_rule)


def problem_keep_mask(problem):
    """``(B, T, L*D)`` bool: which precisions of a problem with ``voiced``
    set the voicing rule keeps (column ``l*D + d``)."""
    xp = _xp_of(problem.voiced)
    keep = _keep4(problem)
    B, T, L, D = keep.shape[0], keep.shape[1], problem.n_windows, problem.static_dim
    return xp.ascontiguousarray(xp.broadcast_to(keep, (B, T, L, D))).reshape(B, T, L * D)


def where_kept(keep, x, fill):
    """``x`` (``(B, T, L*D)``, or ``(T, L*D)`` for ``B = 1``) with the
    entries that the ``(B, T, L, Dm)`` mask ``keep`` drops replaced by
    ``fill`` (a new contiguous array; ``x`` is not modified)."""
    B, T, L = keep.shape[:3]
    # (the last axis spelt out: -1 cannot be inferred for an empty batch)
    out = _xp_of(x).where(keep, x.reshape(B, T, L, x.shape[-1] // L), x.dtype.type(fill))
    return out.reshape(x.shape)


def lower(problem):
    """The plain problem (``voiced=None``) whose solution equals ``problem``'s
    on voiced frames; each unvoiced frame is decoupled from every other.

    Dropped constraints get precision 0 (variance ``+inf``), so their means
    (finite: the validation layer zeroed any that were not) are multiplied by
    0; the static column of an unvoiced frame gets unit precision, so
    ``c[t]`` there is its (ignored) static mean.  Only the weights are
    copied: they become per-frame ``(B, T, L*D)`` (global and unit weights
    are broadcast).  Returns the problem itself when it has no voicing mask.
    """
    if problem.voiced is None:
        return problem
    xp = _xp_of(problem.voiced)
    B, T, L, D = problem.batch_size, problem.n_frames, problem.n_windows, problem.static_dim
    dt = problem.dtype
    dropped_value = 0.0 if problem.weight_kind == "precision" else np.inf
    if problem.weights is None:
        w = xp.ones((B, T, L * D), dtype=dt)
    elif problem.global_weights:
        w = xp.broadcast_to(problem.weights, (B, T, L * D))
    else:
        w = problem.weights
    w = where_kept(_keep4(problem), w, dropped_value)
    # the placeholder equation of unvoiced frames: unit static precision
    static = w.reshape(B, T, L, D)[:, :, 0, :]
    static[...] = xp.where(unvoiced_frames(problem.voiced, problem.lengths), dt.type(1), static)
    return dataclasses.replace(problem, weights=w, voiced=None, voicing_keep=None)


def lowered_output(problem, output):
    """The solution of :func:`lower` ``(problem)`` from ``output``, the result
    of ``mlpg`` for ``problem`` (batched; any values on unvoiced frames): each
    unvoiced frame of the lowered problem has unit static precision and no
    other constraint, so it solves to its static mean exactly."""
    xp = _xp_of(output)
    static = problem.means[..., :problem.static_dim]
    return xp.where(unvoiced_frames(problem.voiced, problem.lengths), static, output)


def effective_precisions(problem):
    """All rules applied: ``(precisions, frame_mask)``.

    Returns
    -------
    precisions : (B, T, L*D) float64 array
        ``1 / variance`` (0 for ``+inf``), the given precisions, or 1;
        then 0 where the boundary rule or the voicing rule drops the
        constraint and beyond each sequence's length; 1 on the static column
        of unvoiced frames (the decoupled placeholder equation of
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
    return xp.ascontiguousarray(p), xp.ascontiguousarray(xp.broadcast_to(frame_mask, (B, T, D)))

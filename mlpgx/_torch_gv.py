r"""Differentiable GV-constrained generation for PyTorch (CPU tensors).

:func:`mlpg_gv` is :func:`mlpgx.gv.mlpg_gv` on tensors, differentiable
w.r.t. ``means``, ``variances`` (or ``precisions``), ``gv_mean`` and
``gv_variance`` by implicit differentiation at the optimum.

At the returned trajectory ``c*`` the gradient of the objective vanishes,
``F(c*, theta) = -dJ/dc (c*, theta) = 0`` with

.. math::

    F(c, \theta) = \omega\, (R c - r)
                 + \frac{w_{gv}}{\sigma_v^2} (v(c) - \mu_v)\, g(c), \qquad
    g = \frac{2}{N} m \odot (c - \bar c),

so ``dc*/dtheta = -H^{-1} dF/dtheta`` with ``H = dF/dc`` the Hessian of
``-J`` (positive definite at a strict maximum).  For an upstream gradient
``g_out`` the backward solves ``H lambda = g_out`` (conjugate gradients
preconditioned by the positive definite Gauss-Newton part of ``H``, a banded
solve plus a rank-2 Woodbury correction, O(T) per iteration; see
:func:`mlpgx.gv._hessian_solve`) and returns ``-lambda^T dF/dtheta``: one
autograd vector-Jacobian product through ``F`` written with torch operations
(window products as zero-padded shifts, ``c*`` held constant).

Forward: the NumPy optimiser on detached tensors (float64 arithmetic).
Only first derivatives (the backward is not itself differentiable).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import gv as _gv
from ._msd import effective_precisions
from ._validate import _weights, check_unvoiced_value
from .torch import _apply_windows, _as_float_tensor, _lengths_tensor
from .windows import DELTA, as_windows

__all__ = ["mlpg_gv"]


def _apply_windows_T(y, wins, D):
    """``sum_l W_l^T y_l``: ``(B, T, L*D) -> (B, T, D)`` (zero padding), differentiable."""
    out = None
    for l, w in enumerate(wins):
        # (W^T y)[i] = sum_j w[j] y[i + left - j]: the reversed window
        term = _apply_windows(y[..., l * D:(l + 1) * D], [w.right], [w.left],
                              list(reversed(w.coeffs)))
        out = term if out is None else out + term
    return out


def _np(t):
    return None if t is None else t.detach().cpu().numpy()


def _stat_tensor(x, name, like):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return _as_float_tensor(x, name)
    return _as_float_tensor(x, name, like=like)


class _Fixed:
    """The non-differentiable arguments and what the forward computed."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _masks(st):
    """``(keep, placeholder)`` 0/1 float64 ``(B, T, L*D)``: constraints the
    rules keep, and the static columns of unvoiced frames (equation ``c = 0``)."""
    pb = dataclasses.replace(st.problem, weights=None, weight_kind="variance")
    unit, _ = effective_precisions(pb)
    unit = np.asarray(unit, dtype=np.float64).reshape(st.B, st.T, st.L, st.D)
    place = np.zeros_like(unit)
    place[:, :, 0, :] = st.inside * (1.0 - st.m)
    keep = unit * (1.0 - place)
    shape = (st.B, st.T, st.L * st.D)
    return keep.reshape(shape), place.reshape(shape)


def _grad_F(fx, c, means, weights, gv_mean, gv_variance):
    """``F(c, theta) = -dJ/dc`` in torch (``c`` constant), ``(B, T, D)`` float64."""
    st = fx.st
    B, T, D, L = st.B, st.T, st.D, st.L
    keep = torch.from_numpy(fx.keep)
    # entries the problem drops (padding, unvoiced, boundary) may hold
    # anything (zero variances, NaN means): replaced before any arithmetic,
    # since keep * inf or a reciprocal's gradient there would be NaN
    kept = keep != 0
    mu = torch.where(kept, means.to(torch.float64).reshape(B, T, L * D), 0.0)
    if weights is None:
        p = torch.ones((), dtype=torch.float64)
    else:
        w = weights.to(torch.float64)
        if w.dim() > 1:
            w = torch.where(kept, w.reshape(B, T, L * D), 1.0)
        p = w if fx.kind == "precision" else torch.reciprocal(w)
    P = keep * p + torch.from_numpy(fx.place)
    ct = torch.from_numpy(c)
    e = _apply_windows(ct, *fx.win_args) - keep * mu
    omega = torch.from_numpy(np.tile(st.omega, (1, L)))[:, None, :]      # (B, 1, L*D)
    F = _apply_windows_T(omega * P * e, st.wins, D) * torch.from_numpy(st.inside * 1.0)
    dev, v = st.stats(c)
    g = torch.from_numpy((2.0 / st.Nsafe)[:, None, :] * dev)
    active = torch.from_numpy(st.active * 1.0)
    mv = torch.broadcast_to(gv_mean.to(torch.float64), (B, D))
    vv = torch.broadcast_to(gv_variance.to(torch.float64), (B, D))
    coef = active * st.gv_weight / vv * (torch.from_numpy(v) - mv)
    return F + coef[:, None, :] * g


class _GV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, weights, gv_mean, gv_variance, fx):
        st, max_iter, tol = _gv._prepare(
            _np(means), _np(weights) if fx.kind == "variance" else None, fx.wins,
            _np(gv_mean), _np(gv_variance),
            precisions=_np(weights) if fx.kind == "precision" else None,
            gv_weight=fx.gv_weight, ml_weight=fx.ml_weight, max_iter=fx.max_iter,
            tol=fx.tol, lengths=fx.lengths, boundary=fx.boundary, voiced=fx.voiced,
            msd_rule=fx.msd_rule, backend="auto", num_threads=fx.num_threads)
        c, info = _gv._optimise(st, max_iter, tol)
        fx.st, fx.c, fx.info = st, c, info
        fx.keep, fx.place = _masks(st)
        w = st.wins
        fx.win_args = ([x.left for x in w], [x.right for x in w],
                       [float(a) for x in w for a in x.coeffs])
        ctx.fx = fx
        ctx.save_for_backward(means, weights, gv_mean, gv_variance)
        out = _gv._output(st, c, fx.unvoiced_value)
        return torch.from_numpy(np.ascontiguousarray(out)).to(means.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        fx = ctx.fx
        st = fx.st
        means, weights, gv_mean, gv_variance = ctx.saved_tensors
        g = grad.detach().to(torch.float64).cpu().numpy().reshape(st.B, st.T, st.D)
        g = np.where(st.m > 0, g, 0.0)           # unvoiced / padded outputs are constants
        lam = _gv._hessian_solve(st, fx.c, g)
        inputs = [means, weights, gv_mean, gv_variance]
        need = ctx.needs_input_grad[:4]
        leaves = [x.detach().requires_grad_(n) if x is not None else None
                  for x, n in zip(inputs, need)]
        with torch.enable_grad():
            F = _grad_F(fx, fx.c, *leaves)
            wrt = [x for x, n in zip(leaves, need) if n and x is not None]
            grads = torch.autograd.grad(F, wrt, grad_outputs=-torch.from_numpy(lam),
                                        allow_unused=True) if wrt else ()
        out, it = [], iter(grads)
        for x, n in zip(leaves, need):
            gx = next(it) if (n and x is not None) else None
            if gx is None and n and x is not None:
                gx = torch.zeros_like(x)
            out.append(gx)
        return (*out, None)


def mlpg_gv(means, variances=None, windows=DELTA, gv_mean=None, gv_variance=None, *,
            precisions=None, gv_weight=1.0, ml_weight=None, max_iter=50, tol=1e-8,
            lengths=None, boundary="per-window", voiced=None, msd_rule="hts",
            unvoiced_value=math.nan, num_threads=None):
    r"""GV-constrained generation (:func:`mlpgx.gv.mlpg_gv`) on torch tensors.

    Differentiable w.r.t. ``means``, ``variances`` (or ``precisions``),
    ``gv_mean`` and ``gv_variance`` by implicit differentiation at the
    optimum ``c*`` (where ``dJ/dc = 0``): the backward solves
    ``H lambda = grad_output`` with the exact Hessian ``H`` of ``-J`` at
    ``c*`` and returns ``-lambda^T dF/dtheta``, ``F = -dJ/dc``.  The
    gradients are exact to the accuracy of the optimum: lower ``tol`` for
    gradient checks.

    Parameters
    ----------
    means : Tensor, shape (T, L*D) or (B, T, L*D)
        CPU tensor, float32 or float64.
    variances, precisions : Tensor, optional
        Shape of ``means`` or ``(L*D,)``; same dtype.
    gv_mean, gv_variance : Tensor or array_like, shape (D,) or (B, D)
        Target variance and its variance (see :func:`mlpgx.gv.mlpg_gv`).
    windows, gv_weight, ml_weight, max_iter, tol, lengths, boundary, voiced, msd_rule, unvoiced_value, num_threads
        As in :func:`mlpgx.gv.mlpg_gv`.

    Returns
    -------
    Tensor, shape (T, D) or (B, T, D)
        Dtype of ``means``.  Unvoiced frames (``unvoiced_value``) and frames
        beyond the lengths (0) are constants.

    Raises
    ------
    ValueError, TypeError
        As :func:`mlpgx.gv.mlpg_gv`; tensors of different dtypes.
    RuntimeError
        Tensors not on the CPU.
    numpy.linalg.LinAlgError
        In the backward, when ``c*`` is not a strict local maximum.

    Examples
    --------
    >>> import torch
    >>> from mlpgx._torch_gv import mlpg_gv
    >>> t = torch.arange(120, dtype=torch.float64)
    >>> static = torch.sin(t // 10 / 2.0)[:, None]
    >>> means = torch.cat([static, 0 * static, 0 * static], 1).requires_grad_()
    >>> gv_mean = torch.tensor([0.6], dtype=torch.float64, requires_grad=True)
    >>> c = mlpg_gv(means, torch.ones(120, 3, dtype=torch.float64), gv_mean=gv_mean,
    ...             gv_variance=[1e-3])
    >>> round(float(c.detach().var(unbiased=False)), 2)
    0.6
    >>> c.pow(2).sum().backward()
    >>> means.grad.shape, gv_mean.grad.shape
    (torch.Size([120, 3]), torch.Size([1]))
    """
    wins = as_windows(windows)
    weights, kind, wname = _weights(variances, precisions)
    means = _as_float_tensor(means, "means")
    if means.device.type != "cpu":
        raise RuntimeError(f"mlpgx.torch.mlpg_gv runs on CPU tensors; got {means.device} "
                           f"(move them with .cpu())")
    if weights is not None:
        weights = _as_float_tensor(weights, wname, like=means)
        if weights.dtype != means.dtype:
            raise TypeError(f"means and {wname} must have the same dtype; got "
                            f"{str(means.dtype).replace('torch.', '')} and "
                            f"{str(weights.dtype).replace('torch.', '')}")
    gm = _stat_tensor(gv_mean, "gv_mean", means)
    gvar = _stat_tensor(gv_variance, "gv_variance", means)
    if gm is None or gvar is None:       # let the NumPy layer raise its message
        _gv._prepare(_np(means), None, wins, _np(gm), _np(gvar), precisions=None,
                     gv_weight=gv_weight, ml_weight=ml_weight, max_iter=max_iter, tol=tol,
                     lengths=None, boundary=boundary, voiced=None, msd_rule=msd_rule,
                     backend="auto")
    lens = _lengths_tensor(lengths)
    vmask = voiced.detach().cpu().numpy() if isinstance(voiced, torch.Tensor) else voiced
    fx = _Fixed(wins=wins, kind=kind, gv_weight=gv_weight, ml_weight=ml_weight,
                max_iter=max_iter, tol=tol, lengths=None if lens is None else lens.numpy(),
                boundary=boundary, voiced=vmask, msd_rule=msd_rule,
                unvoiced_value=check_unvoiced_value(unvoiced_value), num_threads=num_threads)
    return _GV.apply(means, weights, gm, gvar, fx)

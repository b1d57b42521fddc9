"""Differentiable MLPG for PyTorch.

``import mlpgx.torch`` (``import mlpgx`` alone never imports torch).

Public API
----------
mlpg(means, variances=None, windows=DELTA, *, precisions=None, lengths=None, boundary="per-window", voiced=None, ...)
    The trajectory, differentiable w.r.t. ``means`` and ``variances`` (or
    ``precisions``), to any order; ``voiced=`` for MSD (log F0) streams.
mlpg_solve(rhs, variances=None, windows=DELTA, *, precisions=None, lengths=None, boundary=...)
    ``R^{-1} rhs``, differentiable w.r.t. ``rhs`` and the weights.
mlpg_gv(means, variances=None, windows=DELTA, gv_mean=..., gv_variance=..., ...)
    Global-variance constrained generation (:func:`mlpgx.mlpg_gv`),
    differentiable w.r.t. the means, variances and the GV statistics.
MLPG
    ``torch.autograd.Function`` with nnmnkwii's call shape,
    ``MLPG.apply(means, variances, windows)``.
MLPGLayer
    ``nn.Module`` wrapping :func:`mlpg`.

How it is built
---------------
Three ``torch.library.custom_op`` operators, each with a ``register_fake``
(shapes only, for ``torch.compile``/meta tensors):

``mlpgx::mlpg``          ``c = R^{-1} r``                   (autograd registered)
``mlpgx::mlpg_solve``    ``x = R^{-1} rhs``                 (autograd registered)
``mlpgx::mlpg_adjoint``  fused ``(dL/dmu, dL/dw)``          (no autograd: first-order fast path;
                         takes the saved output ``c``, and
                         ``weight_grad``)

Windows cross the operator boundary as ``int[] lefts, int[] rights,
float[] coeffs`` (coefficients concatenated), the boundary rule and the
weight kind (``"variance"``/``"precision"``/``"none"``) as ``str``,
``lengths`` as ``Tensor?`` (int64, on the CPU).  The backend of a device
comes from the registry (:func:`mlpgx.backends.for_torch_device`; a tensor on
a device without an available backend gets a ``RuntimeError`` with the
reason, e.g. "install mlpgx[cuda12] or mlpgx[cuda13]" or "no CUDA GPU").

CPU kernels: zero-copy NumPy views of the tensors go to :func:`mlpgx.mlpg`,
:func:`mlpgx.mlpg_adjoint` and :func:`mlpgx.mlpg_solve`
(``backend="cython"``), so CPU results equal the NumPy API bit for bit.

CUDA kernels (the ``"cuda"`` backend, CuPy): on the tensors' device, with
torch's current stream there made CuPy's current stream
(``cupy.cuda.Stream.from_external(torch.cuda.current_stream(device))``, or
``cupy.cuda.ExternalStream(stream.cuda_stream, device_index)`` before CuPy 14),
the inputs become CuPy views (``cupy.from_dlpack``, no copies; a
non-contiguous input is made contiguous by torch first), go through the same
validation layer as the NumPy API (on the device: same checks and messages,
except that NumPy prints a scalar as ``np.float64(...)`` and CuPy as
``array(...)``), and the kernel writes into outputs allocated by torch
(``torch.empty`` on the device), so results live in torch's caching
allocator and are stream-ordered with the surrounding torch work.  Nothing
runs on CuPy's default stream.  Host synchronisation: the kernel's status
word is read back after each launch (the ``numpy.linalg.LinAlgError`` of a
non-positive pivot needs it), and the validation's reductions (finiteness
scan of means / right-hand side, positivity of the variances, and the
finiteness of the forward's and solve's results) read back a scalar each; so the ops cannot be captured in a CUDA graph.  The factor
scratch comes from CuPy's memory pool (stream-ordered on the same stream).

Backward of ``mlpgx::mlpg`` for an upstream gradient ``g`` (``docs/math.md``)::

    v = R^{-1} g                                   (mlpgx::mlpg_solve)
    dL/dmu_l = m_l * p_l * (W_l v)
    dL/dp_l  = m_l * (W_l v) * (mu_l - W_l c)       dL/dvar_l = -p_l^2 dL/dp_l

with ``m_l`` the 0/1 mask of the boundary rule and the lengths.  When the
backward runs without ``create_graph`` (grad mode off inside the backward),
it calls the fused ``mlpgx::mlpg_adjoint`` (the exact NumPy adjoint) with
the saved output ``c``, so only ``v`` is solved for (``output=`` of
:func:`mlpgx.mlpg_adjoint`); when the variances (precisions) need no
gradient, it asks for the means' gradient alone (``weight_grad=False``),
which reads neither ``c`` nor the means.  With ``create_graph=True`` it evaluates the
formula above from differentiable pieces: ``mlpgx::mlpg_solve`` (itself differentiable:
``dL/drhs = R^{-1} gx``, ``dL/dp_l = -m_l (W_l R^{-1} gx) (W_l x)``), the
saved output ``c`` (differentiable through ``mlpgx::mlpg``) and window
applications ``W_l x`` written as zero-padded shifts times constant
coefficients.  So every order of derivative is again O(T) per dimension.

MSD streams (``voiced=``) need no operator of their own: the voicing rule
is applied to the inputs with ``torch.where`` (dropped constraints get
precision 0 and no gradient, unvoiced frames the decoupled placeholder
``c[t] = 0``; see :mod:`mlpgx._msd`), then ``mlpgx::mlpg`` runs and the
unvoiced frames get the marker, so every derivative order works unchanged.

``torch.func``: each op has a vmap rule (``register_vmap``) that folds the
vmapped dimension into the batch, so ``vmap`` makes one kernel call.  On
torch.func's wrapper tensors the public functions (and the backward) call
the ops through ``setup_context``-style ``autograd.Function`` s with the same
formulas, so ``grad``/``vjp`` (and their compositions with ``vmap``) work;
the eager NumPy validation is skipped there (wrapper tensors have no storage)
and the kernel validates instead, finiteness included.

Validation: :func:`mlpg` runs the NumPy validation layer
(:func:`mlpgx._validate.make_problem`, same messages) on zero-copy views
before any kernel runs (eager mode), and checks the result as
:func:`mlpgx.mlpg` does: finite inputs whose float64 arithmetic overflows
(a mean of 1e200 with a variance of 1e-200) raise its ``ValueError``.  The
backward does not scan: like torch's own operators (and ``GradScaler``,
which watches for them), it passes unrepresentable gradients on as
inf/NaN.  Under ``torch.compile`` the fake
implementation checks shapes and the kernel validates values at run time.
"""
from __future__ import annotations

import contextlib
import functools
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import mlpgx
from ._api import check_results
from ._problem import Problem
from .backends._base import result_flags
from ._validate import (_weights, check_boundary, check_msd_rule, check_unvoiced_value,
                        finish_means_scan, frames_array, integer_lengths, make_problem,
                        inputs_reported_first)
from .windows import DELTA, WindowSet, as_windows

__all__ = ["mlpg", "mlpg_solve", "mlpg_gv", "MLPG", "MLPGLayer"]


_FLOATS = (torch.float32, torch.float64)


# ---------------------------------------------------------------------------
# windows <-> operator arguments
# ---------------------------------------------------------------------------

def _encode(wins: WindowSet) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[float, ...]]:
    lefts = tuple(w.left for w in wins)
    rights = tuple(w.right for w in wins)
    coeffs = tuple(float(c) for w in wins for c in w.coeffs)
    return lefts, rights, coeffs


@functools.lru_cache(maxsize=256)
def _decode(lefts: Tuple[int, ...], rights: Tuple[int, ...], coeffs: Tuple[float, ...]):
    """WindowSet, per-window coefficient tuples, boundary margins cache."""
    if len(lefts) != len(rights) or not lefts:
        raise ValueError(f"windows: lefts and rights must be non-empty and of equal length; "
                         f"got {list(lefts)} and {list(rights)}")
    n = sum(l + r + 1 for l, r in zip(lefts, rights))
    if n != len(coeffs):
        raise ValueError(f"windows: {len(coeffs)} coefficients given, the extents need {n}")
    triples, k = [], 0
    for l, r in zip(lefts, rights):
        triples.append((l, r, list(coeffs[k:k + l + r + 1])))
        k += l + r + 1
    return as_windows(triples)


def _args(lefts, rights, coeffs):
    return tuple(int(x) for x in lefts), tuple(int(x) for x in rights), \
        tuple(float(x) for x in coeffs)


@functools.lru_cache(maxsize=256)
def _margins(wins: WindowSet, boundary: str):
    pb = Problem(means=None, weights=None, weight_kind="variance", windows=wins,
                 lengths=np.zeros(0, dtype=np.intp), boundary=boundary, static_dim=0,
                 n_frames=0, dtype=np.dtype(np.float64))
    lo, hi = pb.zero_frame_ranges()
    return tuple(int(x) for x in lo), tuple(int(x) for x in hi)


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------

def _np(t: Optional[torch.Tensor]):
    return None if t is None else t.detach().numpy()


def _weights_kw(weights, kind, convert=_np):
    if kind == "variance":
        return dict(variances=convert(weights))
    if kind == "precision":
        return dict(precisions=convert(weights))
    return {}


def _backend_for(device: torch.device) -> str:
    """Name of the registered backend that computes on ``device`` (the
    registry decides: a backend lists the torch device types it takes in
    ``Backend.torch_devices``; ``"cython"`` for CPU tensors, ``"cuda"`` for
    CUDA tensors when CuPy and a GPU are there).  Raises ``RuntimeError`` with
    the registry's reasons (:func:`_no_backend_message`) otherwise."""
    try:
        return mlpgx.backends.for_torch_device(device.type).name
    except RuntimeError as exc:
        raise RuntimeError(_no_backend_message(device, exc)) from None


def _no_backend_message(device: torch.device, reason) -> str:
    """The error for tensors on ``device`` that no available backend takes;
    ``reason`` is the registry's (which backends were tried and why each is
    unavailable, e.g. "install mlpgx[cuda12] or mlpgx[cuda13]")."""
    return f"mlpgx.torch: {reason}; tensors on {device}: move them to the CPU with .cpu()"


def _cpu_lengths(lengths):
    return None if lengths is None else lengths.detach().cpu().numpy()


@torch.library.custom_op("mlpgx::mlpg", mutates_args=())
def _mlpg_op(means: torch.Tensor, weights: Optional[torch.Tensor], weight_kind: str,
             lefts: List[int], rights: List[int], coeffs: List[float],
             lengths: Optional[torch.Tensor], boundary: str, check_finite: bool) -> torch.Tensor:
    wins = _decode(*_args(lefts, rights, coeffs))
    out = mlpgx.mlpg(_np(means), windows=wins, lengths=_cpu_lengths(lengths),
                     boundary=boundary, backend=_backend_for(means.device),
                     check_finite=check_finite, **_weights_kw(weights, weight_kind))
    return torch.from_numpy(out)


@torch.library.custom_op("mlpgx::mlpg_solve", mutates_args=())
def _solve_op(rhs: torch.Tensor, weights: Optional[torch.Tensor], weight_kind: str,
              lefts: List[int], rights: List[int], coeffs: List[float],
              lengths: Optional[torch.Tensor], boundary: str, check_finite: bool) -> torch.Tensor:
    wins = _decode(*_args(lefts, rights, coeffs))
    out = mlpgx.mlpg_solve(_np(rhs), windows=wins, lengths=_cpu_lengths(lengths),
                           boundary=boundary, backend=_backend_for(rhs.device),
                           check_finite=check_finite, **_weights_kw(weights, weight_kind))
    return torch.from_numpy(out)


@torch.library.custom_op("mlpgx::mlpg_adjoint", mutates_args=())
def _adjoint_op(grad_output: torch.Tensor, means: torch.Tensor, weights: Optional[torch.Tensor],
                weight_kind: str, lefts: List[int], rights: List[int], coeffs: List[float],
                lengths: Optional[torch.Tensor], boundary: str, check_finite: bool,
                output: Optional[torch.Tensor] = None,
                weight_grad: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    wins = _decode(*_args(lefts, rights, coeffs))
    gm, gw = mlpgx.mlpg_adjoint(_np(grad_output), _np(means), windows=wins,
                                lengths=_cpu_lengths(lengths), boundary=boundary,
                                output=_np(output), weight_grad=weight_grad,
                                backend=_backend_for(means.device),
                                check_finite=check_finite, **_weights_kw(weights, weight_kind))
    gw = torch.from_numpy(gw) if gw is not None else means.new_empty(0)
    return torch.from_numpy(gm), gw


# ---------------------------------------------------------------------------
# CUDA kernels: DLPack views, torch's current stream, torch-allocated outputs
# ---------------------------------------------------------------------------

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


@contextlib.contextmanager
def _torch_stream(device: torch.device):
    """CuPy (yielded) with ``device`` current and torch's current stream on it
    as CuPy's current stream: every CuPy allocation, copy, reduction and
    launch inside is ordered after the torch work that produced the inputs
    and before the torch work that reads the outputs; CuPy's own default
    stream is not used."""
    from .backends.cuda import _import_cupy

    cp = _import_cupy()
    stream = torch.cuda.current_stream(device)
    with torch.cuda.device(device), cp.cuda.Device(device.index), \
            _cupy_stream(cp, stream, device.index):
        yield cp


def _cupy_stream(cp, stream, device_index: int):
    """The torch ``stream`` as a CuPy stream object (not owned by CuPy):
    ``cupy.cuda.Stream.from_external`` through the CUDA stream protocol
    (``torch.cuda.Stream.__cuda_stream__``) where CuPy has it (>= 14, which
    deprecates the alternative), else ``cupy.cuda.ExternalStream(ptr,
    device_id)``."""
    from_external = getattr(cp.cuda.Stream, "from_external", None)
    if from_external is not None and hasattr(stream, "__cuda_stream__"):
        return from_external(stream)
    return cp.cuda.ExternalStream(stream.cuda_stream, device_index)


def _cupy_view(cp, t: Optional[torch.Tensor]):
    """A CuPy array sharing ``t``'s memory (``cupy.from_dlpack``; inside
    :func:`_torch_stream`, CuPy hands torch's current stream to
    ``Tensor.__dlpack__``, which then has nothing to wait for).  A
    non-contiguous ``t`` is first made contiguous by torch (the copy the
    validation layer would make anyway)."""
    if t is None:
        return None
    t = t.detach().contiguous()
    if t.numel() == 0:  # no memory to share (and no data pointer to export)
        return cp.empty(tuple(t.shape), dtype=np.dtype(str(t.dtype).replace("torch.", "")))
    return cp.from_dlpack(t)


def _cuda_results(mode, pb: Problem, means, weights, device):
    """The op's outputs, allocated by torch on ``device`` (uninitialised)."""
    dt = _TORCH_DTYPES[np.dtype(pb.dtype)]
    if mode != "adjoint":
        lead = (pb.batch_size,) if pb.batched else ()
        return (torch.empty(lead + (pb.n_frames, pb.static_dim), dtype=dt, device=device),)
    gw = None if pb.weights is None else torch.empty(weights.shape, dtype=dt, device=device)
    return torch.empty(means.shape, dtype=dt, device=device), gw


def _cuda_run(mode, frames, means, weights, weight_kind, lefts, rights, coeffs, lengths,
              boundary, check_finite, given_output=None):
    """One op on CUDA tensors, without copies: CuPy views of the inputs go
    through the shared validation layer (:func:`make_problem`,
    :func:`frames_array`: the checks and messages of :func:`mlpgx.mlpg`, run
    on the device) to the backend's kernel, which writes into tensors
    allocated by torch (``outputs=`` of ``KernelBackend._run``), all on
    torch's current stream of the inputs' device.  ``frames``: the right-hand
    side (solve) or the upstream gradient (adjoint).  ``given_output``
    (adjoint): the forward's output ``c``, which the kernel reads instead of
    solving for it (``output=`` of :func:`mlpgx.mlpg_adjoint`).  Returns the
    tuple of output tensors."""
    x = means if means is not None else frames
    device = x.device
    name = _backend_for(device)
    wins = _decode(*_args(lefts, rights, coeffs))
    with _torch_stream(device) as cp:
        view = functools.partial(_cupy_view, cp)
        m, f = view(means), view(frames)
        pb = make_problem(m, windows=wins, lengths=_cpu_lengths(lengths), boundary=boundary,
                          check_finite=check_finite, dtype_from=f,
                          **_weights_kw(weights, weight_kind, view))
        if f is not None:
            f = frames_array(f, pb, "rhs" if mode == "solve" else "grad_output", check_finite)
        c = None if given_output is None else \
            frames_array(view(given_output), pb, "output", check_finite)
        b = mlpgx.backends.resolve(name, operation=mode, dtype=pb.dtype, boundary=pb.boundary)
        results = _cuda_results(mode, pb, means, weights, device)
        B, T, LD = pb.batch_size, pb.n_frames, pb.n_windows * pb.static_dim
        shapes = ((B, T, pb.static_dim),) if mode != "adjoint" else \
            ((B, T, LD), None if pb.weights is None else pb.weights.shape)
        outputs = tuple(None if r is None else view(r).reshape(s)
                        for r, s in zip(results, shapes))
        given = {} if c is None or not b.reuses_output else {"given_output": c}
        # (the status read-back synchronises the stream)
        _, finite = b._run(mode, pb, f, outputs=outputs, report_finite=True, **given)
        if check_finite:   # (overflow of finite inputs, as mlpgx.mlpg checks it)
            # results the kernel tested finite are not scanned again
            untested = tuple(None if tested else r
                             for r, tested in zip(outputs, result_flags(mode, pb, finite)))
            check_results(mode, pb, untested, given_output=bool(given))
    return results


def _cuda_mlpg(means, weights, weight_kind, lefts, rights, coeffs, lengths, boundary,
               check_finite):
    return _cuda_run("forward", None, means, weights, weight_kind, lefts, rights, coeffs,
                     lengths, boundary, check_finite)[0]


def _cuda_solve(rhs, weights, weight_kind, lefts, rights, coeffs, lengths, boundary,
                check_finite):
    return _cuda_run("solve", rhs, None, weights, weight_kind, lefts, rights, coeffs,
                     lengths, boundary, check_finite)[0]


def _cuda_adjoint(grad_output, means, weights, weight_kind, lefts, rights, coeffs, lengths,
                  boundary, check_finite, output=None, weight_grad=True):
    # output: c, read by the kernel instead of solved for (Backend.reuses_output).
    # weight_grad=False: the cuda kernels have no means-only adjoint
    # (Backend.means_only_adjoint), so the weights' gradient is computed and
    # dropped, as mlpgx.mlpg_adjoint does for such backends
    gm, gw = _cuda_run("adjoint", grad_output, means, weights, weight_kind, lefts, rights,
                       coeffs, lengths, boundary, check_finite, given_output=output)
    return gm, gw if gw is not None and weight_grad else means.new_empty(0)


_mlpg_op.register_kernel("cuda")(_cuda_mlpg)
_solve_op.register_kernel("cuda")(_cuda_solve)
_adjoint_op.register_kernel("cuda")(_cuda_adjoint)


def _fake_checks(x, L, name):
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (T, L*D) or (B, T, L*D); got shape "
                         f"{tuple(x.shape)}")


@_mlpg_op.register_fake
def _(means, weights, weight_kind, lefts, rights, coeffs, lengths, boundary, check_finite):
    _fake_checks(means, len(lefts), "means")
    L = len(lefts)
    torch._check(means.shape[-1] % L == 0,
                 lambda: f"means has {means.shape[-1]} columns, which is not a multiple "
                         f"of the number of windows ({L})")
    return means.new_empty(tuple(means.shape[:-1]) + (means.shape[-1] // L,))


@_solve_op.register_fake
def _(rhs, weights, weight_kind, lefts, rights, coeffs, lengths, boundary, check_finite):
    if rhs.dim() not in (2, 3):
        raise ValueError(f"rhs must have shape (T, D) or (B, T, D); got shape {tuple(rhs.shape)}")
    return torch.empty_like(rhs, memory_format=torch.contiguous_format)


@_adjoint_op.register_fake
def _(grad_output, means, weights, weight_kind, lefts, rights, coeffs, lengths, boundary,
      check_finite, output=None, weight_grad=True):
    gm = torch.empty_like(means, memory_format=torch.contiguous_format)
    if weights is None or not weight_grad:
        return gm, means.new_empty(0)
    return gm, torch.empty_like(weights, memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------------
# differentiable building blocks for the backward
# ---------------------------------------------------------------------------

def _apply_windows(x: torch.Tensor, lefts, rights, coeffs) -> torch.Tensor:
    """``[W_0 x, ..., W_{L-1} x]`` along the last axis: ``(B, T, D) -> (B, T, L*D)``.

    Terms outside ``[0, T)`` count as 0 (zero padding); differentiable."""
    T = x.shape[-2]
    ml, mr = max(lefts), max(rights)
    xp = F.pad(x, (0, 0, ml, mr)) if (ml or mr) else x
    outs, k = [], 0
    for left, right in zip(lefts, rights):
        acc = None
        for j in range(left + right + 1):
            c = coeffs[k + j]
            if c == 0.0:
                continue
            s = ml - left + j
            term = xp[..., s:s + T, :]
            term = term if c == 1.0 else term * c
            acc = term if acc is None else acc + term
        k += left + right + 1
        outs.append(acc if acc is not None else torch.zeros_like(x))
    return torch.cat(outs, dim=-1)


def _mask(B, T, D, lengths, lo, hi, dtype, device) -> torch.Tensor:
    """0/1 ``(B, T, L*D)``: where window ``l`` counts at frame ``t`` (boundary rule
    and lengths)."""
    t = torch.arange(T, device=device).view(1, T, 1)
    n = lengths.to(device=device).view(B, 1, 1) if lengths is not None else T
    lo_t = torch.tensor(lo, device=device).view(1, 1, -1)
    hi_t = torch.tensor(hi, device=device).view(1, 1, -1)
    m = (t >= lo_t) & (t < n - hi_t)
    return m.repeat_interleave(D, dim=-1).to(dtype)


def _padding_cleared(x3, lengths, fill):
    """``x3`` (``(B, T, C)``) with the frames ``t >= lengths[b]`` set to
    ``fill``.  Padding may hold anything (zero variances, NaN means): the
    kernels never read it, but the composite formulas of the higher-order
    gradients read every frame, and ``0 * inf`` there would be NaN."""
    if lengths is None or x3 is None or x3.dim() != 3:
        return x3
    T = x3.shape[1]
    inside = torch.arange(T, device=x3.device).view(1, T, 1) < \
        lengths.to(device=x3.device).view(-1, 1, 1)
    return torch.where(inside, x3, torch.full((), fill, dtype=x3.dtype, device=x3.device))


def _batched(means_like, weights, lengths):
    """Unbatched ``(T, .)`` inputs as a batch of one."""
    if means_like.dim() == 3:
        return means_like, weights, lengths
    w = weights.unsqueeze(0) if weights is not None and weights.dim() == 2 else weights
    n = lengths.reshape(1) if lengths is not None else None
    return means_like.unsqueeze(0), w, n


def _precisions(weights, kind):
    if weights is None:
        return None
    return weights if kind == "precision" else torch.reciprocal(weights)


def _weight_grad(a, b, weights, p, kind):
    """``dL/dp = a * b`` (full) -> the gradient for ``weights`` (global:
    summed over frames).  For variances ``-p^2 dL/dp``, formed as
    ``-(p a)(p b)``: ``p^2`` alone overflows for variances below ~1e-154
    where the gradient itself is finite."""
    g = a * b if kind == "precision" else -(p * a) * (p * b)
    return g.sum(dim=(0, 1)) if weights.dim() == 1 else g


class _Spec:
    """The non-tensor arguments of an op call, unpacked once."""

    __slots__ = ("kind", "lefts", "rights", "coeffs", "boundary", "lo", "hi")

    def __init__(self, kind, lefts, rights, coeffs, boundary):
        self.kind = kind
        self.lefts, self.rights, self.coeffs = _args(lefts, rights, coeffs)
        self.boundary = boundary
        self.lo, self.hi = _margins(_decode(self.lefts, self.rights, self.coeffs), boundary)

    def op_args(self):
        return self.kind, list(self.lefts), list(self.rights), list(self.coeffs)


def _solve(rhs, weights, lengths, spec: _Spec):
    return _call(_solve_op, rhs, weights, *spec.op_args(), lengths, spec.boundary, False)


#: Whether the first-order backward hands the saved output to the adjoint
#: (which then reads ``c`` instead of solving for it again).  Only
#: benchmarks/bench_torch.py and the tests turn it off, to compare.
_BACKWARD_REUSES_OUTPUT = True


def _mlpg_backward(g, means, weights, lengths, out, spec: _Spec, need_m, need_w):
    if not need_m and not need_w:
        return None, None
    if not torch.is_grad_enabled():
        # first order: the fused adjoint (exactly mlpgx.mlpg_adjoint), reading
        # c from the saved output instead of solving for it again; the means'
        # gradient alone when the weights need none (on the CPU it reads
        # neither c nor the means; the cuda backend, which has no such mode,
        # still reads c there)
        weight_grad = need_w and weights is not None
        gm, gw = _adjoint_op(g, means, weights, *spec.op_args(), lengths, spec.boundary, False,
                             out if _BACKWARD_REUSES_OUTPUT else None, weight_grad)
        return (gm if need_m else None), (gw if need_w and weights is not None else None)
    unbatched = means.dim() == 2
    g3, w3, n3 = _batched(g, weights, lengths)
    mu3 = means if not unbatched else means.unsqueeze(0)
    w3, mu3 = _padding_cleared(w3, n3, 1.0), _padding_cleared(mu3, n3, 0.0)
    c3 = out if not unbatched else out.unsqueeze(0)
    B, T, D = g3.shape
    mask = _mask(B, T, D, n3, spec.lo, spec.hi, g3.dtype, g3.device)
    p = _precisions(w3, spec.kind)
    v = _solve(g3, w3, n3, spec)
    Wv = _apply_windows(v, spec.lefts, spec.rights, spec.coeffs)
    gm = gw = None
    if need_m:
        gm = Wv * (mask if p is None else p * mask)
        gm = gm.squeeze(0) if unbatched else gm
    if need_w and weights is not None:
        Wc = _apply_windows(c3, spec.lefts, spec.rights, spec.coeffs)
        gw = _weight_grad(mask * Wv, mu3 - Wc, w3, p, spec.kind)
        gw = gw.squeeze(0) if unbatched and weights.dim() == 2 else gw
    return gm, gw


def _solve_backward(gx, weights, lengths, x, spec: _Spec, need_r, need_w):
    if not need_r and not need_w:
        return None, None
    u = _solve(gx, weights, lengths, spec)
    gw = None
    if need_w and weights is not None:
        unbatched = gx.dim() == 2
        u3, w3, n3 = _batched(u, weights, lengths)
        w3 = _padding_cleared(w3, n3, 1.0)
        x3 = x if not unbatched else x.unsqueeze(0)
        B, T, D = u3.shape
        mask = _mask(B, T, D, n3, spec.lo, spec.hi, u3.dtype, u3.device)
        Wu = _apply_windows(u3, spec.lefts, spec.rights, spec.coeffs)
        Wx = _apply_windows(x3, spec.lefts, spec.rights, spec.coeffs)
        gw = _weight_grad(-(mask * Wu), Wx, w3, _precisions(w3, spec.kind), spec.kind)
        gw = gw.squeeze(0) if unbatched and weights.dim() == 2 else gw
    return (u if need_r else None), gw


def _setup(ctx, inputs, output):
    x, weights, kind, lefts, rights, coeffs, lengths, boundary, _ = inputs
    ctx.spec = _Spec(kind, lefts, rights, coeffs, boundary)
    ctx.save_for_backward(x, weights, lengths, output)


def _mlpg_op_backward(ctx, grad):
    means, weights, lengths, out = ctx.saved_tensors
    gm, gw = _mlpg_backward(grad, means, weights, lengths, out, ctx.spec,
                            ctx.needs_input_grad[0], ctx.needs_input_grad[1])
    return gm, gw, None, None, None, None, None, None, None


def _solve_op_backward(ctx, grad):
    rhs, weights, lengths, x = ctx.saved_tensors
    gr, gw = _solve_backward(grad, weights, lengths, x, ctx.spec,
                             ctx.needs_input_grad[0], ctx.needs_input_grad[1])
    return gr, gw, None, None, None, None, None, None, None


_mlpg_op.register_autograd(_mlpg_op_backward, setup_context=_setup)
_solve_op.register_autograd(_solve_op_backward, setup_context=_setup)


# ---------------------------------------------------------------------------
# vmap: fold the vmapped dimension into the batch
# ---------------------------------------------------------------------------
#
# ``torch.func.vmap`` over any of the ops calls the op once on a batch of
# V*B problems instead of V times (no per-sample fallback).  A per-sample
# ``(T, .)`` input becomes a batch of V, a per-sample ``(B, T, .)`` one a
# batch of V*B (vmapped dimension moved to the front, then reshaped).
# Unvmapped tensors are expanded along V, except global ``(L*D,)`` weights,
# which stay global (shared by every sample) when they are not vmapped;
# vmapped global weights become per-frame ``(V*B, T, L*D)``.  ``lengths`` is
# repeated per sample (not vmapped) or flattened (vmapped).

def _vm_stack(V, x, d):
    """``x`` with its vmapped dimension ``d`` (``None``: not vmapped) first, size V."""
    return x.movedim(d, 0) if d is not None else x.unsqueeze(0).expand(V, *x.shape)


def _vm_frames(V, x, d):
    """Frame tensor -> folded batch; also its per-sample shape."""
    xs = _vm_stack(V, x, d)
    ps = tuple(xs.shape[1:])
    return (xs.reshape(-1, *ps[1:]) if len(ps) == 3 else xs), ps


def _vm_weights(V, w, d, frames_ps, keep_global=True):
    """Weights -> folded per-frame ``(V*B, T, last)``, or still global when shared."""
    if w is None:
        return None
    if d is None and w.dim() == 1 and keep_global:
        return w
    ws = _vm_stack(V, w, d)
    if ws.dim() == 2:  # global (L*D,) per sample -> per frame
        full = (V,) + tuple(frames_ps[:-1]) + (ws.shape[-1],)
        ws = ws.reshape((V,) + (1,) * (len(full) - 2) + (ws.shape[-1],)).expand(full)
    # an invalid shape passes through; the kernel's validation reports it
    return ws.reshape(-1, *ws.shape[2:]) if len(frames_ps) == 3 and ws.dim() == 4 else ws


def _vm_lengths(V, n, d):
    return None if n is None else _vm_stack(V, n, d).reshape(-1)


def _vm_unfold(V, out, frames_ps):
    return out.reshape(V, frames_ps[0], *out.shape[1:]) if len(frames_ps) == 3 else out


def _vm_call(V, frames_ps, op, *args):
    """``op(*args)`` on the folded batch; a ``ValueError`` (a bad entry, an
    overflow) names indices of the folded batch, so it gets the key to the
    caller's coordinates appended."""
    try:
        return op(*args)
    except ValueError as e:
        if len(frames_ps) == 3:
            B = frames_ps[0]
            key = (f"the {V} vmapped samples of {B} sequences each are folded into one "
                   f"batch of {V * B}: a leading index i is sample i // {B}, sequence i % {B}")
        else:
            key = (f"the {V} vmapped samples are folded into one batch: a leading index i "
                   f"is sample i")
        raise ValueError(f"{e} (under torch.func.vmap, {key})") from e


def _vm_single(op):
    def rule(info, in_dims, x, weights, kind, lefts, rights, coeffs, lengths, boundary,
             check_finite):
        V = info.batch_size
        xf, ps = _vm_frames(V, x, in_dims[0])
        wf = _vm_weights(V, weights, in_dims[1], ps)
        nf = _vm_lengths(V, lengths, in_dims[6])
        out = _vm_call(V, ps, op, xf, wf, kind, lefts, rights, coeffs, nf, boundary,
                       check_finite)
        return _vm_unfold(V, out, ps), 0
    return rule


def _adjoint_vmap(info, in_dims, grad_output, means, weights, kind, lefts, rights, coeffs,
                  lengths, boundary, check_finite, output=None):
    V = info.batch_size
    gf, _ = _vm_frames(V, grad_output, in_dims[0])
    of = None if output is None else _vm_frames(V, output, in_dims[10])[0]
    mf, ps = _vm_frames(V, means, in_dims[1])
    # gradients of global weights are per-sample sums: compute them per frame
    glob = weights is not None and weights.dim() - (in_dims[2] is not None) == 1
    wf = _vm_weights(V, weights, in_dims[2], ps, keep_global=False)
    nf = _vm_lengths(V, lengths, in_dims[7])
    gm, gw = _vm_call(V, ps, _adjoint_op, gf, mf, wf, kind, lefts, rights, coeffs, nf,
                      boundary, check_finite, of)
    gm = _vm_unfold(V, gm, ps)
    if weights is None:
        gw = gw.new_empty(V, 0)
    elif glob:
        gw = gw.reshape(V, -1, gw.shape[-1]).sum(dim=1)
    else:
        gw = _vm_unfold(V, gw, ps)
    return (gm, gw), (0, 0)


torch.library.register_vmap(_mlpg_op, _vm_single(_mlpg_op))
torch.library.register_vmap(_solve_op, _vm_single(_solve_op))
torch.library.register_vmap(_adjoint_op, _adjoint_vmap)


# ---------------------------------------------------------------------------
# torch.func (grad, vjp, jacrev, ...)
# ---------------------------------------------------------------------------
#
# The autograd that ``register_autograd`` installs is an old-style
# ``autograd.Function`` that torch.func's grad transforms refuse ("must
# override the setup_context staticmethod").  On torch.func's wrapper tensors
# the ops are therefore called through these Functions instead: the same
# backward formulas, ``setup_context`` style, and ``generate_vmap_rule`` so
# that under ``vmap`` the forward and backward reach the ops' vmap rules above
# (one folded call, no per-sample loop).  Plain tensors (eager, torch.compile)
# call the ops directly.

def _functorch_wrapped(*tensors) -> bool:
    if torch.compiler.is_compiling():  # dynamo cannot trace the check; fake tensors anyway
        return False
    return any(isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t)
               for t in tensors)


def _func_for(op, op_backward):
    class _Fn(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x, weights, kind, lefts, rights, coeffs, lengths, boundary, check_finite):
            return op(x, weights, kind, lefts, rights, coeffs, lengths, boundary, check_finite)

        @staticmethod
        def setup_context(ctx, inputs, output):
            _setup(ctx, inputs, output)

        @staticmethod
        def backward(ctx, grad):
            return op_backward(ctx, grad)

    _Fn.__name__ = _Fn.__qualname__ = f"_Func_{op._name.split('::')[-1]}"
    return _Fn


_FUNCS = {_mlpg_op: _func_for(_mlpg_op, _mlpg_op_backward),
          _solve_op: _func_for(_solve_op, _solve_op_backward)}


def _call(op, x, weights, *rest):
    """``op(x, weights, *rest)``; through its torch.func-ready Function on wrapper tensors."""
    if _functorch_wrapped(x, weights, rest[4]):
        return _FUNCS[op].apply(x, weights, *rest)
    return op(x, weights, *rest)


# ---------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------

def _as_float_tensor(x, name, like=None):
    """``x`` as a floating tensor; the dtype policy of the NumPy API."""
    if not isinstance(x, torch.Tensor):
        if like is None:
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__} "
                            f"(use mlpgx.mlpg for NumPy arrays)")
        x = torch.as_tensor(np.asarray(x), device=like.device)
    dt = x.dtype
    if dt in _FLOATS:
        return x
    if dt in (torch.float16, torch.bfloat16):
        return x.to(torch.float32)
    if not dt.is_floating_point and not dt.is_complex and dt != torch.bool:
        return x.to(torch.float64)
    raise TypeError(f"{name} must be a real floating-point (or integer) array; got dtype "
                    f"{str(dt).replace('torch.', '')}")


def _lengths_tensor(lengths):
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be integers; got dtype "
                            f"{str(lengths.dtype).replace('torch.', '')}")
        return lengths.detach().to(device="cpu", dtype=torch.int64)
    return torch.as_tensor(integer_lengths(lengths).astype(np.int64))


def _prepare(x, weights, kind, lengths, x_name):
    """Shared tensor checks of :func:`mlpg` / :func:`mlpg_solve`."""
    x = _as_float_tensor(x, x_name)
    wname = "precisions" if kind == "precision" else "variances"
    if weights is not None:
        weights = _as_float_tensor(weights, wname, like=x)
        if weights.device != x.device:
            raise ValueError(f"{x_name} and {wname} must be on the same device; got "
                             f"{x.device} and {weights.device}")
        if weights.dtype != x.dtype:
            raise TypeError(f"{x_name} and {wname} must have the same dtype; got "
                            f"{str(x.dtype).replace('torch.', '')} and "
                            f"{str(weights.dtype).replace('torch.', '')} (convert one with .to())")
    _backend_for(x.device)
    return x, weights, _lengths_tensor(lengths)


def _eager_validation(*tensors) -> bool:
    """Whether the wrapper validates before the kernel (on NumPy views).

    Not under ``torch.compile`` (fake tensors), not on the wrapper tensors
    of ``torch.func`` transforms (``vmap``'s BatchedTensor, ``grad``'s
    GradTrackingTensor: no storage, so no NumPy view), and not for CUDA
    tensors (no NumPy view either); there the kernel validates (and checks
    finiteness) when it runs on real tensors, on the device for CUDA."""
    if torch.compiler.is_compiling():
        return False
    if tensors[0].device.type != "cpu":
        return False
    return not _functorch_wrapped(*tensors)


def _voiced_tensor(voiced, B, T, D, batched, device):
    """The voicing mask as a ``(B, T, 1)`` or ``(B, T, D)`` bool tensor on
    ``device`` (values and shapes were checked by the eager validation, when
    it runs)."""
    v = voiced if isinstance(voiced, torch.Tensor) else torch.as_tensor(np.asarray(voiced))
    v = v.to(device=device)
    v = v if v.dtype == torch.bool else v != 0
    lead = (B, T) if batched else (T,)
    if tuple(v.shape) not in (lead, lead + (D,)):
        raise ValueError(f"voiced must have shape {lead} or {lead + (D,)}; got {tuple(v.shape)}")
    # (-1 cannot be inferred for an empty batch)
    return v.reshape(B, T, 1 if tuple(v.shape) == lead else D)


def _check_eager_result(mode, problem, out, unvoiced=None):
    """The result check of :func:`mlpgx.mlpg` / :func:`mlpgx.mlpg_solve`
    (:func:`mlpgx._api.check_results`) for the eager CPU path, whose
    validation ran before the op and told it not to check again; ``problem``
    is that validation's (``None``: the op checked, or nothing to check).
    ``out``: the op's result; ``unvoiced``: frames whose result is ignored."""
    if problem is None:
        return
    x = out.detach()
    x = x if x.dim() == 3 else x.unsqueeze(0)
    if finish_means_scan(problem, x.numpy()):   # (a deferred means scan checked x too)
        return
    check_results(mode, problem, (x.numpy(),),
                  ignore=None if unvoiced is None else unvoiced.numpy())


def _mlpg_voiced(means, weights, kind, wins, lens, boundary, voiced, unvoiced_value,
                 msd_rule, check_finite, checked=None):
    """MLPG of an MSD stream from differentiable pieces: the lowered plain
    problem (:func:`mlpgx._msd.lower`, written with ``torch.where`` so that
    dropped constraints and unvoiced frames get no gradient) through
    ``mlpgx::mlpg``, then the marker on unvoiced frames.  ``checked``: the
    eager validation's problem, whose result check runs here, before the
    marker (see :func:`_check_eager_result`)."""
    from . import _msd

    batched = means.dim() == 3
    mb = means if batched else means.unsqueeze(0)
    B, T, LD = mb.shape
    L = len(wins)
    D = LD // L
    dev = means.device
    v = _voiced_tensor(voiced, B, T, D, batched, dev)                 # (B, T, Dm)
    n = (torch.full((B,), T, dtype=torch.int64) if lens is None else lens).to(dev)
    unvoiced = ~v & (torch.arange(T, device=dev)[None, :, None] < n[:, None, None])
    keep = _msd.keep_mask(unvoiced, wins, msd_rule,                   # (B, T, L, Dm)
                          zeros=lambda shape: torch.zeros(shape, dtype=torch.bool, device=dev),
                          concat=torch.cat)
    placeholder = torch.cat([unvoiced[:, :, None],
                             torch.zeros_like(keep[:, :, 1:])], dim=2)
    zero = torch.zeros((), dtype=mb.dtype, device=dev)
    one = torch.ones((), dtype=mb.dtype, device=dev)
    m_low = torch.where(keep, mb.reshape(B, T, L, D), zero).reshape(B, T, LD)
    if kind == "precision":
        dropped_value = zero
    else:
        kind = "variance"
        dropped_value = torch.full((), float("inf"), dtype=mb.dtype, device=dev)
    if weights is None:
        w = one
    elif weights.dim() == 1:
        w = weights.reshape(L, D)
    else:
        w = weights.reshape(B, T, L, D)
    w_low = torch.where(placeholder, one, torch.where(keep, w, dropped_value))
    w_low = w_low.expand(B, T, L, D).reshape(B, T, LD)
    lefts, rights, coeffs = _encode(wins)
    if not batched:   # (as given: an error raised by the op names the caller's indices)
        m_low, w_low = m_low[0], w_low[0]
    out = _call(_mlpg_op, m_low.contiguous(), w_low.contiguous(), kind, list(lefts),
                list(rights), list(coeffs), lens, boundary, check_finite)
    out = out if batched else out.unsqueeze(0)
    _check_eager_result("forward", checked, out, unvoiced)
    out = torch.where(unvoiced, torch.full((), unvoiced_value, dtype=out.dtype, device=dev),
                      out)
    return out if batched else out.squeeze(0)


def mlpg(means, variances=None, windows=DELTA, *, precisions=None, lengths=None,
         boundary="per-window", voiced=None, unvoiced_value=float("nan"), msd_rule="hts"):
    """Differentiable MLPG: :func:`mlpgx.mlpg` on torch tensors.

    Parameters
    ----------
    means : Tensor, shape (T, L*D) or (B, T, L*D)
        float32 or float64 (integers -> float64, float16/bfloat16 -> float32).
    variances : Tensor, optional
        Shape of ``means`` or ``(L*D,)``; same dtype and device as ``means``.
    windows : window specification
        Anything :func:`mlpgx.windows.as_windows` accepts.
    precisions : Tensor, optional
        Instead of ``variances``.
    lengths : Tensor or sequence of int, optional
        ``(B,)`` valid lengths of a padded batch.
    boundary : {"per-window", "nnmnkwii", "none"}
    voiced : Tensor or array_like of bool, optional
        Voicing mask of an MSD stream (log F0), ``(T,)``/``(B, T)`` or
        ``(T, D)``/``(B, T, D)``; see :func:`mlpgx.mlpg`.
    unvoiced_value : float
        Output on unvoiced frames (default NaN).
    msd_rule : {"hts", "sptk"}

    Returns
    -------
    Tensor, shape (T, D) or (B, T, D)
        On the device of ``means``, in the dtype computed in: that of
        ``means`` (float32 for float16/bfloat16, float64 for integers; see
        ``means``); differentiable (any order) w.r.t.
        ``means`` and the variances / precisions.  With ``voiced``, gradients
        flow through voiced frames only: unvoiced outputs are constants and
        constraints the voicing rule drops get zero gradient.

    Raises
    ------
    ValueError, TypeError
        Same checks and messages as :func:`mlpgx.mlpg`; also tensors on
        different devices or of different dtypes.
    RuntimeError
        Tensors on a device without an available backend (CUDA tensors
        without CuPy or a visible GPU; the message says which).

    Examples
    --------
    >>> import torch, mlpgx.torch
    >>> mu = torch.randn(100, 9, dtype=torch.float64, requires_grad=True)
    >>> c = mlpgx.torch.mlpg(mu, torch.ones(100, 9, dtype=torch.float64))
    >>> c.shape
    torch.Size([100, 3])
    >>> c.sum().backward(); mu.grad.shape
    torch.Size([100, 9])
    """
    wins = as_windows(windows)
    boundary = check_boundary(boundary)
    # (checked with or without voiced=, as mlpgx.mlpg does)
    unvoiced_value = check_unvoiced_value(unvoiced_value)
    msd_rule = check_msd_rule(msd_rule)
    weights, kind, _ = _weights(variances, precisions)
    means, weights, lens = _prepare(means, weights, kind, lengths, "means")
    if weights is None:
        kind = "none"
    validate = _eager_validation(means, weights, lens)
    pb = None   # (the eager validation's problem: its result is checked below)
    if validate:
        if means.device.type == "cpu":
            means = means.contiguous()
            weights = weights.contiguous() if weights is not None else None
            vmask = voiced
            if isinstance(voiced, torch.Tensor):
                vmask = voiced.detach().cpu().numpy()
            # (the means' NaN/inf scan after the op when its kernel shows them:
            # see mlpgx._validate.finish_means_scan; the weights are checked
            # by the op's own mlpgx.mlpg, in its kernel where it can, and
            # named here, after the means, when that raises)
            defer = getattr(mlpgx.backends.get(_backend_for(means.device)),
                            "nonfinite_means_reach_output", False)
            pb = make_problem(_np(means), windows=wins, lengths=_np_lengths(lengths, lens),
                              boundary=boundary, voiced=vmask, msd_rule=msd_rule,
                              defer_means_scan=defer, defer_weights_scan=True,
                              **_weights_kw(weights, kind))
    if voiced is not None:
        return _mlpg_voiced(means, weights, kind, wins, lens, boundary, voiced,
                            unvoiced_value, msd_rule, not validate, pb)
    lefts, rights, coeffs = _encode(wins)
    # (bad means before bad weights, and both before a singular R)
    with inputs_reported_first(pb, (np.linalg.LinAlgError, ValueError)):
        out = _call(_mlpg_op, means, weights, kind, list(lefts), list(rights), list(coeffs),
                    lens, boundary, not validate)
    _check_eager_result("forward", pb, out)
    return out


def _np_lengths(lengths, lens):
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor) or lens is None:
        return lens.numpy()
    return lengths


def mlpg_solve(rhs, variances=None, windows=DELTA, *, precisions=None, lengths=None,
               boundary="per-window"):
    """``R^{-1} rhs`` (see :func:`mlpgx.mlpg_solve`) on torch tensors,
    differentiable w.r.t. ``rhs`` and the variances / precisions.

    ``rhs`` is ``(T, D)`` or ``(B, T, D)``; the weights ``(..., T, L*D)`` or
    ``(L*D,)``.
    """
    wins = as_windows(windows)
    boundary = check_boundary(boundary)
    weights, kind, _ = _weights(variances, precisions)
    rhs, weights, lens = _prepare(rhs, weights, kind, lengths, "rhs")
    if weights is None:
        kind = "none"
    validate = _eager_validation(rhs, weights, lens)
    pb = None   # (the eager validation's problem: its result is checked below)
    if validate:
        if rhs.device.type == "cpu":
            rhs = rhs.contiguous()
            weights = weights.contiguous() if weights is not None else None
            pb = make_problem(None, windows=wins, lengths=_np_lengths(lengths, lens),
                              boundary=boundary, dtype_from=_np(rhs),
                              **_weights_kw(weights, kind))
            # (make_problem checks the weights; the kernel is told not to
            # check again, so the right-hand side is scanned here)
            frames_array(_np(rhs), pb, "rhs")
    lefts, rights, coeffs = _encode(wins)
    out = _call(_solve_op, rhs, weights, kind, list(lefts), list(rights), list(coeffs), lens,
                boundary, not validate)
    _check_eager_result("solve", pb, out)
    return out


class MLPG(torch.autograd.Function):
    """nnmnkwii's ``MLPG`` call shape on the mlpgx operators.

    ``MLPG.apply(means, variances, windows, boundary="per-window", lengths=None)``;
    ``variances`` may be ``None`` (unit) and may require grad (nnmnkwii's
    could not).  Note nnmnkwii itself used ``boundary="nnmnkwii"``.
    Supports double backward.
    """

    @staticmethod
    def forward(ctx, means, variances, windows=DELTA, boundary="per-window", lengths=None):
        wins = as_windows(windows)
        boundary = check_boundary(boundary)
        out = mlpg(means, variances, wins, lengths=lengths, boundary=boundary)
        kind = "variance" if variances is not None else "none"
        ctx.spec = _Spec(kind, *_encode(wins), boundary)
        weights = None if variances is None else _as_float_tensor(variances, "variances")
        ctx.save_for_backward(means, weights, _lengths_tensor(lengths), out)
        return out

    @staticmethod
    def backward(ctx, grad):
        means, weights, lengths, out = ctx.saved_tensors
        gm, gw = _mlpg_backward(grad, means, weights, lengths, out, ctx.spec,
                                ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gm, gw, None, None, None


class MLPGLayer(torch.nn.Module):
    """MLPG as a module: ``MLPGLayer(windows, boundary=...)(means, variances=None, lengths=None)``.

    ``precisions=True`` reads the second argument as precisions.
    """

    def __init__(self, windows=DELTA, boundary="per-window", *, precisions=False,
                 unvoiced_value=float("nan"), msd_rule="hts"):
        super().__init__()
        self.windows = as_windows(windows)
        self.boundary = check_boundary(boundary)
        if not isinstance(precisions, (bool, np.bool_)):
            raise TypeError(f"precisions must be a bool (read the second argument as "
                            f"precisions); got {precisions!r}")
        self.precisions = bool(precisions)
        self.unvoiced_value = check_unvoiced_value(unvoiced_value)
        self.msd_rule = check_msd_rule(msd_rule)

    def forward(self, means, variances=None, lengths=None, voiced=None):
        weights = {"precisions" if self.precisions else "variances": variances}
        return mlpg(means, windows=self.windows, lengths=lengths, boundary=self.boundary,
                    voiced=voiced, unvoiced_value=self.unvoiced_value,
                    msd_rule=self.msd_rule, **weights)

    def extra_repr(self) -> str:
        return f"windows={self.windows!r}, boundary={self.boundary!r}"


def __getattr__(name):
    # GV generation (implicit differentiation through the optimum) lives in
    # mlpgx._torch_gv, which builds on the helpers above: loaded on first use
    if name == "mlpg_gv":
        from ._torch_gv import mlpg_gv
        return mlpg_gv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

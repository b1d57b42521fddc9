"""The ``"cython"`` backend: the fused banded solver of :mod:`mlpgx._ext._solver`.

O(T k^2) per sequence and static dimension with ``k = max(left + right)``;
float32 and float64 storage, float64 arithmetic; OpenMP over (sequence,
d-range) work items; the GIL is released while it runs.  Window sets whose
windows reach at most one frame to each side (DELTA and every 3-tap set)
run on a kernel written for that band (mlpgx/_ext/mlpgx_band2.h).
"""
from __future__ import annotations

import numpy as np

from .._problem import Problem
from .._validate import weights_range
from ._base import KernelBackend, allocate_outputs

try:
    from .._ext import solver as _solver, simd as SIMD
    _IMPORT_ERROR = None
except ImportError as exc:  # the extension was not built
    _solver = None
    SIMD = None
    _IMPORT_ERROR = exc


def _readonly_zero(dtype):
    a = np.zeros(1, dtype=dtype)
    a.setflags(write=False)
    return a


class CythonBackend(KernelBackend):
    """Compiled CPU backend (the default for NumPy arrays)."""

    name = "cython"
    array_module = "numpy"
    torch_devices = ("cpu",)       # zero-copy through Tensor.numpy()
    reuses_output = True           # mode "adjoint_from_output" of the solver
    means_only_adjoint = True      # mode "adjoint_means" of the solver
    # both kernels form p * mu for every mean of an active window (0 * nan
    # too) and add it into r with its nonzero coefficients; a NaN in r[i]
    # reaches c[i] through y[i] / D[i]
    nonfinite_means_reach_output = True
    description = "compiled banded LDL^T (Cython, OpenMP), O(T) per dimension"

    @property
    def simd(self):
        """Instruction-set build in use (``"avx2"`` or ``"baseline"``)."""
        return SIMD

    def availability(self):
        if _solver is None:
            return False, f"the compiled extension mlpgx._ext._solver did not import ({_IMPORT_ERROR})"
        return True, ""

    #: one-element stand-ins for the arrays an operation does not use (the
    #: kernel never touches them); shared between calls, so read-only
    _PLACEHOLDERS = {np.dtype(dt): _readonly_zero(dt) for dt in (np.float32, np.float64)}

    @classmethod
    def _placeholder(cls, dtype):
        return cls._PLACEHOLDERS[np.dtype(dtype)]

    def checks_weights(self, problem: Problem) -> bool:
        # The k <= 2 kernel's forward sweep can check the weights it reads,
        # as it loads them, instead of a pass over the whole array before
        # the call.  Float64 (in the load loop): forward 3-11% faster,
        # adjoint 2-5% (one thread, T = 1e3-1e5, D = 60, and the B = 32
        # batch; two A/B runs on the 2-core AMD EPYC).  Float32 variances
        # (one unsigned maximum of their reciprocals' bits in the same loop,
        # mlpgx_band2_impl.h) and precisions (a second pass over the row at
        # float32 width): on the Intel Xeon the second pass for both took
        # the forward 0.95-0.99x the time of the forward and the scan at
        # T = 1e3, 0.93-0.97x at 1e4, 0.90-0.91x at 1e5, the adjoint
        # 0.94-1.00x (one thread, D = 60, three alternating rounds); the
        # reciprocals' bits take the variances' forward kernel to 0.91-0.94x
        # of that.  The general kernel has no check.
        return _solver is not None and bool(_solver.band2_applies(problem.windows))

    # The k <= 2 kernel's float64 clones test their results finite as they
    # store them (the forward's through its first row, where a value that
    # is not finite anywhere in a column arrives: see mlpgx_band2_impl.h),
    # so that the API layer need not scan them again: 7-13% of the adjoint
    # (one thread, T = 1e3-1e5, D = 60), which re-reads two full-size
    # gradients for it, and 2-6% of the forward (KernelBackend.forward_checked).
    tests_results = True

    def _run(self, mode: str, pb: Problem, g=None, given_output=None, report_finite=False,
             weight_grad=True):
        T, D = pb.n_frames, pb.static_dim
        dt = pb.dtype
        ph = self._placeholder(dt)
        lo, hi = pb.zero_frame_ranges()
        # (the means-only adjoint reads no means: their gradient is
        # p W R^{-1} g, whatever they are)
        has_means = pb.means is not None and weight_grad
        has_weights = pb.weights is not None
        out, gmeans, gweights, gw_acc = allocate_outputs(np, mode, pb, weight_grad=weight_grad)
        solver_mode = mode
        if mode == "adjoint" and not weight_grad:
            solver_mode = "adjoint_means"
        elif given_output is not None:   # read by the kernel, never written
            out = given_output
            solver_mode = "adjoint_from_output"
        # (the solver takes any C-contiguous arrays, read as flat: no reshapes)
        _, finite = _solver.run(
            solver_mode,
            pb.windows, lo, hi, pb.weight_kind,
            pb.means if has_means else ph,
            pb.weights if has_weights else ph,
            g if g is not None else ph,
            out if out is not None else ph,
            gmeans if gmeans is not None else ph,
            gweights if gweights is not None else ph,
            gw_acc if gw_acc is not None else self._PLACEHOLDERS[np.dtype(np.float64)],
            pb.lengths.astype(np.intp, copy=False), T, D,
            has_means, has_weights, pb.global_weights, g is not None,
            gweights is not None, gw_acc is not None,
            num_threads=pb.num_threads,
            check_weights=(weights_range(dt, pb.weight_kind) if pb.weights_scan_deferred
                           else None),
        )
        if mode != "adjoint":
            return (out, finite) if report_finite else out
        if gw_acc is not None:
            # (a sum beyond the dtype's range is inf, which the validation
            # layer reports by name: no NumPy warning on the way)
            with np.errstate(over="ignore", invalid="ignore"):
                gweights = gw_acc.sum(axis=0).astype(dt)
        return ((gmeans, gweights), finite) if report_finite else (gmeans, gweights)

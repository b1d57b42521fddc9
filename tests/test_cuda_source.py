"""The CUDA backend's kernel source, verified without a GPU.

1. The per-sequence routine of ``mlpgx/cuda/mlpg_kernels.cu`` is
   ``__host__ __device__`` and free of CUDA-only constructs: it is compiled
   here for the CPU with a host C++ compiler (``tests/cuda_host_harness.cpp``
   loops over (b, d) in place of the thread grid), driven through the same
   host-side preparation as the GPU backend (:func:`mlpgx.backends.cuda.launch_plan`)
   and checked against the reference backend: forward, solve and adjoint,
   float32 / float64, every boundary rule, several window sets, lengths,
   per-frame / global variances, precisions with zeros, +inf variances,
   unit variances, and the singular-system status and its message.
2. The whole source is compiled with nvcc for sm_80 and sm_90 so that a
   syntax or template error fails CI without a GPU (skipped without nvcc).
3. The backend module imports without CuPy and reports itself unavailable
   with a reason.
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import mlpgx
from mlpgx._validate import make_problem
from mlpgx.backends import Backend
from mlpgx.backends import cuda as cuda_backend
from mlpgx.backends.cuda import (NO_FAILURE, STATUS_INIT, CudaBackend, failure_message,
                                 kernel_name, launch_plan)
from mlpgx.cuda import MAXK_VALUES, kernel_source, required_maxk
from mlpgx.windows import DELTA, DELTA1, as_windows, regression

from test_against_reference import WEIGHT_FORMS, make_weights

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "cuda_host_harness.cpp"
CU_FILE = Path(mlpgx.cuda.__file__).resolve().parent / mlpgx.cuda.KERNEL_FILE

RTOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]
BOUNDARIES = ["per-window", "nnmnkwii", "none"]
WINDOW_SETS = {
    "static": as_windows([[1]]),
    "delta1": DELTA1,
    "delta": DELTA,
    "asym": as_windows([(0, 0, [1]), (1, 0, [-1, 1]), (0, 2, [0.3, -0.2, 0.5])]),
    # max(left) + max(right) = 2k: needs the next ring size up
    "skew": as_windows([(0, 0, [1]), (2, 0, [1, -2, 1]), (0, 2, [1, -2, 1])]),
    "delta+3rd": as_windows([[1], [-0.5, 0, 0.5], [1, -2, 1], [-0.5, 1, 0, -1, 0.5]]),
    "wide9": regression([4, 4]),
    "even": as_windows([[1], [-1, 1], [1, -3, 3, -1]]),
}
WINDOW_PARAMS = [pytest.param(w, id=k) for k, w in WINDOW_SETS.items()]


# --------------------------------------------------------------------------
# the host build of the kernel's per-sequence routine
# --------------------------------------------------------------------------

def _cxx():
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    cxx = _cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler (g++/c++/clang++) to build the kernel harness")
    out = tmp_path_factory.mktemp("cuda_harness") / "mlpgx_cuda_host.so"
    cmd = [cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
           f"-I{CU_FILE.parent}", str(HARNESS), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    lib = ctypes.CDLL(str(out))
    vp, i64p, dp = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
    i64, i32 = ctypes.c_int64, ctypes.c_int
    lib.mlpgx_host_run.restype = ctypes.c_int
    lib.mlpgx_host_run.argtypes = (
        [i32, i32, i32] + [vp] * 6 + [dp, vp, dp, vp, i64p] + [i64p] * 3 + [dp] + [i64p] * 2
        + [i64] * 6 + [i32] * 3 + [ctypes.c_double])
    lib.mlpgx_host_required_maxk.restype = ctypes.c_int
    lib.mlpgx_host_required_maxk.argtypes = [i64, i64]
    return lib


def _ptr(a):
    return None if a is None else a.ctypes.data


#: the harness's code for each kernel of the backend
HARNESS_KERNEL = {"general": 0, "split": 1}


def host_run(lib, mode, pb, g=None, maxk=None, sentinel=np.nan, pf=8, kernel=None,
             given_output=None, report_finite=False):
    """CudaBackend._run with the host build: same plan, same buffers (outputs
    and work buffers pre-filled with ``sentinel`` to catch entries the kernel
    does not write, or reads before writing).  The plan picks the routines as
    on the GPU (``kernel``: as :func:`launch_plan`'s; the k <= 2 ones with
    prefetch depth ``pf``); ``maxk`` forces the general one with that ring size.
    ``given_output`` (adjoint): ``c``, read instead of solved for.
    ``report_finite``: return ``(result, finite)`` with the kernels' result
    test (status word 1), as ``CudaBackend._run``."""
    given = given_output is not None and mode == "adjoint"
    plan = launch_plan(pb, "adjoint_given_output" if given else mode,
                       kernel="general" if maxk is not None else kernel)
    maxk = plan.maxk if maxk is None else maxk
    dt = np.dtype(pb.dtype)
    B, T, D, L = pb.batch_size, pb.n_frames, pb.static_dim, pb.n_windows
    out = gmeans = gweights = gw_acc = None
    if mode == "adjoint":
        gmeans = np.full((B, T, L * D), sentinel, dtype=dt)
        if pb.weights is not None and not pb.global_weights:
            gweights = np.full((B, T, L * D), sentinel, dtype=dt)
        elif pb.weights is not None:
            gw_acc = np.zeros((B, L * D), dtype=np.float64)
    else:
        out = np.full((B, T, D), sentinel, dtype=dt)
    if given:    # the kernel's `out` is c's in this mode
        out = np.ascontiguousarray(given_output, dtype=dt)
    scratch = np.full(max(plan.scratch_size, 1), sentinel, dtype=dt)
    work = np.full(max(plan.work_size, 1), sentinel, dtype=np.float64)
    status = STATUS_INIT.copy()
    lengths = np.ascontiguousarray(pb.lengths, dtype=np.int64)
    keep = [pb.means, pb.weights, g, lengths, *plan.tables]  # alive during the call
    rc = lib.mlpgx_host_run(
        int(dt == np.float64), HARNESS_KERNEL[plan.kernel],
        maxk if plan.kernel == "general" else pf, _ptr(pb.means if mode != "solve" else None),
        _ptr(pb.weights), _ptr(g), _ptr(out), _ptr(gmeans), _ptr(gweights), _ptr(gw_acc),
        _ptr(scratch), _ptr(work), _ptr(status), _ptr(lengths), *[_ptr(a) for a in plan.tables],
        *[s.item() for s in plan.scalars])
    del keep
    assert rc in (0, 1), rc
    key = int(status[0])
    assert (rc == 1) == (key != int(NO_FAILURE))
    if key != int(NO_FAILURE):
        raise np.linalg.LinAlgError(failure_message(key, T, D))
    assert int(status[1]) in (0, 1)
    finite = int(status[1]) == 0
    if mode != "adjoint":
        return (out, finite) if report_finite else out
    if gw_acc is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            gweights = gw_acc.sum(axis=0).astype(dt)
    return ((gmeans, gweights), finite) if report_finite else (gmeans, gweights)


# --------------------------------------------------------------------------
# inputs and comparison
# --------------------------------------------------------------------------

def assert_close(name, got, ref, rtol):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    assert np.all(np.isfinite(got)), f"{name}: non-finite entries"
    scale = max(np.max(np.abs(ref), initial=0.0), np.finfo(np.float64).tiny)
    err = np.max(np.abs(got - ref), initial=0.0) / scale
    assert err <= rtol, f"{name}: scaled max error {err:.3g} > {rtol:g}"


class HostBuildBackend(Backend):
    """The host build of the kernel routine as a backend instance, so that the
    library's own checks (:func:`mlpgx.verify`, the public API) drive it."""

    name = "cuda-host-build"
    array_module = "numpy"
    reuses_output = True     # as CudaBackend: mode "adjoint_given_output"

    def __init__(self, lib, maxk=None, pf=8, kernel=None):
        self.lib, self.kw = lib, dict(maxk=maxk, pf=pf, kernel=kernel)

    def forward(self, problem):
        return host_run(self.lib, "forward", problem, **self.kw)

    def adjoint(self, problem, grad_output, output=None):
        return host_run(self.lib, "adjoint", problem, grad_output, given_output=output,
                        **self.kw)

    def solve(self, problem, rhs):
        return host_run(self.lib, "solve", problem, rhs, **self.kw)

    # the kernels' result test, reported as CudaBackend reports it
    def forward_checked(self, problem):
        out, finite = host_run(self.lib, "forward", problem, report_finite=True, **self.kw)
        return out, (finite,)

    def solve_checked(self, problem, rhs):
        x, finite = host_run(self.lib, "solve", problem, rhs, report_finite=True, **self.kw)
        return x, (finite,)

    def adjoint_checked(self, problem, grad_output, output=None):
        res, finite = host_run(self.lib, "adjoint", problem, grad_output, given_output=output,
                               report_finite=True, **self.kw)
        return res, (finite, finite and not problem.global_weights)


def check_all(lib, rng, dtype, windows, boundary, means, wkw, lengths, maxk=None, pf=8,
              kernel=None):
    """forward, adjoint (via mlpgx.verify's scaled metric) and solve of the
    host build vs the reference; dtypes, shapes, exact zeros at padded frames."""
    wkw = {k: v for k, v in wkw.items() if v is not None}    # unit variances: {}
    hb = HostBuildBackend(lib, maxk, pf, kernel)
    rtol = RTOL[dtype]
    L = len(windows)
    B, T, LD = means.shape
    D = LD // L
    g = rng.standard_normal((B, T, D)).astype(dtype)
    rhs = rng.standard_normal((B, T, D)).astype(dtype)
    common = dict(windows=windows, lengths=lengths, boundary=boundary)

    rep = mlpgx.verify(means, backend=hb, grad_output=g, rtol=rtol, **common, **wkw)
    assert rep.passed, str(rep)

    c = mlpgx.mlpg(means, **wkw, **common, backend=hb)
    gm, gw = mlpgx.mlpg_adjoint(g, means, **wkw, **common, backend=hb)
    x = mlpgx.mlpg_solve(rhs, **wkw, **common, backend=hb)
    # the adjoint given the forward's output (mode "adjoint_given_output";
    # its accuracy is verify's " (output=)" rows above): c is only read, and
    # not beyond the lengths
    c_given = c.copy()
    for b, n in enumerate(lengths if lengths is not None else [T] * B):
        c_given[b, n:] = np.nan
    c_seen = c_given.copy()
    gm_o, gw_o = mlpgx.mlpg_adjoint(g, means, **wkw, **common, backend=hb, output=c_given)
    np.testing.assert_array_equal(c_given, c_seen)
    for name, a, shape in [("forward", c, (B, T, D)), ("solve", x, (B, T, D)),
                           ("grad_means", gm, means.shape),
                           ("grad_means (output=)", gm_o, means.shape)]:
        assert a.dtype == dtype and a.shape == shape, (name, a.dtype, a.shape)
        assert np.all(np.isfinite(a)), name
    if not wkw:
        assert gw is None and gw_o is None
    else:
        w = next(iter(wkw.values()))
        for a in (gw, gw_o):
            assert a.dtype == dtype and a.shape == w.shape
            assert np.all(np.isfinite(a))
    wide = {k: np.asarray(v, dtype=np.float64) for k, v in wkw.items()}
    c_ref = mlpgx.mlpg(means.astype(np.float64), **wide, **common, backend="reference")
    x_ref = mlpgx.mlpg_solve(rhs.astype(np.float64), **wide, **common, backend="reference")
    assert_close("forward", c, c_ref, rtol)
    assert_close("solve", x, x_ref, rtol)
    # padded frames are exactly 0 (host_run's outputs start as NaN)
    for b, n in enumerate(lengths if lengths is not None else [T] * B):
        for name, a in [("forward", c), ("solve", x), ("grad_means", gm),
                        ("grad_means (output=)", gm_o)] + (
                [("grad_weights", gw), ("grad_weights (output=)", gw_o)]
                if gw is not None and gw.ndim == 3 else []):
            assert np.all(a[b, n:] == 0), f"{name}: padded frames of sequence {b} not 0"


# --------------------------------------------------------------------------
# numerics of the kernel routine (host build) against the reference
# --------------------------------------------------------------------------

@pytest.mark.parametrize("form", WEIGHT_FORMS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("windows", WINDOW_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_build_matches_reference(harness, rng, dtype, windows, boundary, form):
    L, D, T = len(windows), 3, 13
    lengths = [T, 0, 1, 2, 9]
    shape = (len(lengths), T, L * D)
    means = rng.standard_normal(shape).astype(dtype)
    wkw = make_weights(rng, form, shape, L, D, dtype)
    check_all(harness, rng, dtype, windows, boundary, means, wkw, lengths)


# windows the k <= 2 routine takes (max left <= 1, max right <= 1, L <= 4)
BAND2_SETS = {
    "static": as_windows([[1]]),
    "delta1": DELTA1,
    "delta": DELTA,
    "left-tap": as_windows([[1], [-1, 1]]),                 # left 1, right 0
    "right-tap": as_windows([(0, 0, [1]), (0, 1, [-1, 1])]),  # left 0, right 1
    "L4": as_windows([[1], [-0.5, 0, 0.5], [1, -2, 1], [0.25, 0.5, -0.75]]),
    "padded-static": as_windows([(1, 1, [0, 1, 0]), (1, 1, [0.5, 0.0, -0.5])]),
}


def test_split_rule():
    for name, w in BAND2_SETS.items():
        assert cuda_backend.band2_fits(w), name
    for name in ("asym", "skew", "delta+3rd", "wide9", "even"):
        assert not cuda_backend.band2_fits(WINDOW_SETS[name]), name
    assert not cuda_backend.band2_fits(as_windows([[1]] + [[-0.5, 0, 0.5]] * 4))  # L = 5
    pf = cuda_backend.BAND2_PREFETCH
    pb = make_problem(np.zeros((2, 5, 9)), variances=np.ones(9), windows=DELTA)
    plan = launch_plan(pb, "adjoint")
    assert plan.kernel == cuda_backend.K2_KERNEL == "split"
    assert plan.scratch_size == 5 * (2 + 2) * 2 * 3 and plan.work_size == 5 * 6 * 2 * 3
    assert launch_plan(pb, "forward").work_size == 5 * 4 * 2 * 3
    # given c: g the one right-hand side, v alone in the x buffer
    given = launch_plan(pb, "adjoint_given_output")
    assert given.scratch_size == 5 * (2 + 1) * 2 * 3 and given.work_size == 5 * 5 * 2 * 3
    assert cuda_backend.plan_kernels(given, np.float64) == [
        ("mlpg_split_rows_kernel<double, 3, 0>", "frame"),
        (f"mlpg_split_solve_kernel<double, 3, {pf}>", "sequence"),
        ("mlpg_split_grads_kernel<double, 3, 0>", "sequence")]
    assert launch_plan(pb, "adjoint_given_output", kernel="general").scratch_size == \
        5 * (2 + 1) * 2 * 3
    general = launch_plan(pb, "adjoint", kernel="general")
    assert general.kernel == "general" and general.work_size == 0
    pb1 = make_problem(np.zeros((1, 5, 4)), windows=BAND2_SETS["left-tap"])
    assert pb1.windows.bandwidth == 1
    # k = 1, but the k <= 2 routines still store two factors per row
    assert launch_plan(pb1, "forward").scratch_size == 5 * (2 + 1) * 1 * 2
    assert launch_plan(pb1, "forward", kernel="general").scratch_size == 5 * (1 + 1) * 1 * 2
    wide = make_problem(np.zeros((1, 5, 6)), windows=WINDOW_SETS["wide9"])
    assert launch_plan(wide, "forward").kernel == "general"
    with pytest.raises(ValueError, match="at most one frame"):
        launch_plan(wide, "forward", kernel="split")
    with pytest.raises(ValueError, match="kernel must be one of"):
        launch_plan(pb, "forward", kernel="banded")
    # the launch sequences (global weights: gradients per (b, d))
    assert cuda_backend.plan_kernels(plan, np.float32) == [
        ("mlpg_split_rows_kernel<float, 3, 1>", "frame"),
        (f"mlpg_split_solve_kernel<float, 2, {pf}>", "sequence"),
        ("mlpg_split_grads_kernel<float, 3, 0>", "sequence")]
    per_frame = make_problem(np.zeros((2, 5, 9)), variances=np.ones((2, 5, 9)), windows=DELTA)
    assert cuda_backend.plan_kernels(launch_plan(per_frame, "adjoint"), np.float64)[-1] == \
        ("mlpg_split_grads_kernel<double, 3, 1>", "frame")
    solve = make_problem(None, variances=np.ones((2, 5, 9)), windows=DELTA, static_dim=3,
                         dtype_from=np.zeros((2, 5, 3)))
    assert cuda_backend.plan_kernels(launch_plan(solve, "solve"), np.float64) == [
        ("mlpg_split_rows_kernel<double, 3, 0>", "frame"),
        (f"mlpg_split_solve_kernel<double, 1, {pf}>", "sequence")]
    # the split path's kernels are compiled as one module per (dtype, L, depth)
    for p in (plan, launch_plan(per_frame, "adjoint"), launch_plan(solve, "solve"), given):
        for dt in (np.float32, np.float64):
            group = cuda_backend.split_group(dt, 3, pf)
            assert all(n in group for n, _ in cuda_backend.plan_kernels(p, dt))
    assert cuda_backend.plan_kernels(launch_plan(wide, "solve"), np.float64) == [
        (kernel_name(np.float64, launch_plan(wide, "solve").maxk), "sequence")]


# every window set at the GPU's default depth 8; the other depths the
# harness builds (1: no ring; 3: not a divisor of the lengths) on three sets
BAND2_CASES = [pytest.param(w, 8, id=f"{k}-pf8") for k, w in BAND2_SETS.items()] + [
    pytest.param(BAND2_SETS[k], pf, id=f"{k}-pf{pf}")
    for k in ("delta", "right-tap", "L4") for pf in (1, 3)]


def test_block_size_spreads_small_grids():
    """Per-sequence kernels: blocks shrink (to one warp at least) until the
    grid covers every multiprocessor twice; large grids keep BLOCK."""
    bs = cuda_backend.block_size
    assert bs(32 * 187, 132) == 32          # a training batch: 187 blocks of a warp
    assert bs(60, 132) == 32                # B = 1
    assert bs(1_000_000, 132) == cuda_backend.BLOCK
    assert bs(64 * 264, 132) == 64          # just enough blocks of 64
    for n in (1, 100, 5000, 40_000, 10**6):
        b = bs(n, 132)
        assert 32 <= b <= cuda_backend.BLOCK and b % 32 == 0


@pytest.mark.parametrize("form", WEIGHT_FORMS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("windows,pf", BAND2_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_split_routines_match_reference(harness, rng, dtype, windows, pf, boundary, form):
    """The k <= 2 (split) routines: lengths 0..3 (shorter than the ring),
    around and across multiples of the prefetch depth."""
    L, D, T = len(windows), 3, 19
    lengths = [T, 0, 1, 2, 3, 8, 9, 16, 17]
    shape = (len(lengths), T, L * D)
    means = rng.standard_normal(shape).astype(dtype)
    wkw = make_weights(rng, form, shape, L, D, dtype)
    check_all(harness, rng, dtype, windows, boundary, means, wkw, lengths, pf=pf)


@pytest.mark.parametrize("mode", ["forward", "solve", "adjoint"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_split_routines_equal_general_routine(harness, rng, dtype, mode):
    """Both paths on the same DELTA problem: the same numbers to rounding."""
    B, T, D = 3, 200, 5
    means = (rng.standard_normal((B, T, 3 * D)) * 2 + 1).astype(dtype)
    var = rng.uniform(0.1, 3.0, (B, T, 3 * D)).astype(dtype)
    g = rng.standard_normal((B, T, D)).astype(dtype)
    pb = make_problem(means if mode != "solve" else None, variances=var, windows=DELTA,
                      lengths=[T, 150, 7], **({"static_dim": D, "dtype_from": g}
                                              if mode == "solve" else {}))
    args = () if mode == "forward" else (g,)
    gen = host_run(harness, mode, pb, *args, maxk=2)
    split = host_run(harness, mode, pb, *args, kernel="split")
    for x, y in zip(split if mode == "adjoint" else [split],
                    gen if mode == "adjoint" else [gen]):
        assert_close(mode, x, y, RTOL[dtype])


@pytest.mark.parametrize("maxk", [16, 32])
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_build_larger_rings(harness, rng, dtype, maxk):
    """Any instantiation at least as large as required gives the same answer."""
    windows = DELTA
    L, D, T = 3, 4, 40
    lengths = [T, 17, 33]
    shape = (3, T, L * D)
    means = rng.standard_normal(shape).astype(dtype)
    wkw = make_weights(rng, "per-frame", shape, L, D, dtype)
    check_all(harness, rng, dtype, windows, "per-window", means, wkw, lengths, maxk=maxk)


@pytest.mark.parametrize("windows", [pytest.param(WINDOW_SETS[k], id=k)
                                     for k in ("delta", "skew", "wide9")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_build_long_sequences(harness, rng, dtype, windows):
    """Rings wrap around many times; realistic D."""
    L, D, T = len(windows), 24, 700
    lengths = [T, 512]
    shape = (2, T, L * D)
    means = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    wkw = make_weights(rng, "precisions", shape, L, D, dtype)
    check_all(harness, rng, dtype, windows, "per-window", means, wkw, lengths)


def test_host_build_real_data(harness, rng):
    """The embedded ARCTIC utterance, float32, global variances."""
    from mlpgx.data import load_arctic_a0001

    feats = load_arctic_a0001()[:, :180][None]
    var = rng.uniform(0.05, 1.0, 180).astype(np.float32)
    check_all(harness, rng, np.float32, DELTA, "per-window", feats, {"variances": var},
              None)


def test_required_maxk(harness):
    for k in range(0, 40):
        for pq in range(k, 2 * k + 1):
            m = required_maxk(k, pq)
            assert m == harness.mlpgx_host_required_maxk(k, pq)
            assert m >= 2 and m & (m - 1) == 0
            assert k <= m and max(pq, k) + 1 <= 2 * m
            assert m == 2 or not (k <= m // 2 and max(pq, k) + 1 <= m)  # smallest
    for name, w in WINDOW_SETS.items():
        m = required_maxk(w.bandwidth, w.max_left + w.max_right)
        assert m in MAXK_VALUES, name
    assert required_maxk(2, 4) == 4  # the "skew" set


# --------------------------------------------------------------------------
# singular systems: the status key and the CPU backend's message
# --------------------------------------------------------------------------

def _both_errors(harness, mode, pb, g=None):
    with pytest.raises(np.linalg.LinAlgError) as ours:
        host_run(harness, mode, pb, g)
    cpu = mlpgx.backends.get("cython")
    if not cpu.availability()[0]:
        return str(ours.value), None
    with pytest.raises(np.linalg.LinAlgError) as theirs:
        getattr(cpu, mode)(pb, *(() if g is None else (g,)))
    return str(ours.value), str(theirs.value)


@pytest.mark.parametrize("mode", ["forward", "solve", "adjoint"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_singular_zero_diagonal(harness, rng, dtype, mode):
    """Zero static precisions where nothing else constrains the frame."""
    B, T, D = 3, 8, 4
    prec = rng.uniform(0.5, 2.0, (B, T, D)).astype(dtype)
    prec[1, 5, 0] = 0.0
    prec[1, 3, 2] = 0.0   # the first failure: smallest (b, t, d)
    prec[2, 0, 0] = 0.0
    means = rng.standard_normal((B, T, D)).astype(dtype)
    pb = make_problem(means if mode != "solve" else None, precisions=prec,
                      windows=[[1]], boundary="none", static_dim=D,
                      dtype_from=np.zeros((B, T, D), dtype))
    g = rng.standard_normal((B, T, D)).astype(dtype) if mode != "forward" else None
    ours, cpu = _both_errors(harness, mode, pb, g)
    assert ours.startswith("MLPG system is not positive definite at frame t=3, static "
                           "dimension d=2 of sequence b=1: "), ours
    if cpu is not None:
        assert ours == cpu


@pytest.mark.parametrize("dtype", DTYPES)
def test_singular_pivot(harness, rng, dtype):
    """Positive diagonal, singular R: only deltas constrain dimension 1 of
    sequence 0 and the boundary rule drops them where they would reach
    outside, so constants are in the null space; found by the pivot test."""
    B, T, D, L = 2, 10, 3, 3
    means = rng.standard_normal((B, T, L * D)).astype(dtype)
    prec = rng.uniform(0.5, 2.0, (B, T, L * D)).astype(dtype)
    prec[0, :, 1] = 0.0
    pb = make_problem(means, precisions=prec, windows=DELTA, boundary="per-window")
    ours, cpu = _both_errors(harness, "forward", pb)
    assert "static dimension d=1 of sequence b=0" in ours, ours
    if cpu is not None:
        assert ours == cpu
    # a length-0 or healthy sequence elsewhere does not matter; with the bad
    # sequence cut to length 0 the batch solves
    pb = make_problem(means, precisions=prec, windows=DELTA, boundary="per-window",
                      lengths=[0, T])
    c = host_run(harness, "forward", pb)
    assert np.all(c[0] == 0)


@pytest.mark.parametrize("operation", ["forward", "solve", "adjoint", "adjoint_given_output"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["split", "general", "wide"])
def test_kernels_call_results_finite_exactly_when_they_are(harness, dtype, kernel, operation):
    """Status word 1: the kernels test every result they store (as rounded
    to the dtype) and the summed global-weight gradient aside, say "finite"
    exactly when all are.  Random sizes, lengths, boundary rules and weight
    kinds; half the cases with an input that makes some result overflow."""
    from test_result_check import random_cases

    windows = WINDOW_SETS["wide9" if kernel == "wide" else "delta"]
    rng = np.random.default_rng(abs(hash((kernel, operation, np.dtype(dtype).name))) % 2**32)
    for pb, g, weight_kind, info in random_cases(rng, windows, operation, 16, [1, 2, 3, 4],
                                                 BOUNDARIES, dtype):
        run = functools.partial(host_run, harness, pb=pb, report_finite=True,
                                kernel="general" if kernel == "general" else None)
        try:
            with np.errstate(all="ignore"):
                if operation in ("forward", "solve"):
                    out, finite = run(operation, g=g if operation == "solve" else None)
                    results = [out]
                else:
                    given = None
                    if operation == "adjoint_given_output":
                        given = run("forward")[0]
                        if not np.isfinite(given).all():
                            continue   # (the adjoint is given a finite output)
                    (gm, gw), finite = run("adjoint", g=g, given_output=given)
                    results = [gm] if gw is None or weight_kind == "global" else [gm, gw]
        except np.linalg.LinAlgError:
            continue   # (extreme precisions can make a pivot non-positive)
        all_finite = all(bool(np.isfinite(r).all()) for r in results)
        assert finite == all_finite, info


@pytest.mark.parametrize("operation", ["forward", "solve", "adjoint", "adjoint_given_output"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["split", "general", "wide"])
def test_kernels_report_overflowing_results(harness, dtype, kernel, operation):
    """Finite inputs whose results overflow at one (b, d) of a batch: status
    word 1 says so (the random cases above rarely overflow in float32, whose
    arithmetic is double)."""
    windows = WINDOW_SETS["wide9" if kernel == "wide" else "delta"]
    L, B, T, D = len(windows), 2, 40, 3
    rng = np.random.default_rng(3)
    big = np.finfo(dtype).max / 4
    m = rng.standard_normal((B, T, L * D))
    var = rng.uniform(0.5, 2.0, (B, T, L * D))
    g = rng.standard_normal((B, T, D))
    if operation == "forward":
        if dtype == np.float64:     # r = p mu overflows float64
            m[1, 4, 2], var[1, 4, 2] = 1e200, 1e-200
        else:   # a weak static constraint, steep deltas: c outgrows float32
            var[1, :, 2], m[1, :, D + 2], var[1, :, D + 2] = 1e6, big, 1.0
    elif operation == "solve":      # v = R^{-1} g beyond the dtype's range
        g[1, 4, 2], var[1, :, 2::D] = big, 1e10
    else:   # dL/dvar = -(p W v)(p (mu - W c)): a big g, means far from consistent
        g[1, 4, 2] = big
        m[1, :, 2::D] *= 1e6
    m, var, g = m.astype(dtype), var.astype(dtype), g.astype(dtype)
    pb = make_problem(m if operation != "solve" else None, variances=var, windows=windows,
                      static_dim=D, dtype_from=g)
    run = functools.partial(host_run, harness, pb=pb, report_finite=True,
                            kernel="general" if kernel == "general" else None)
    with np.errstate(all="ignore"):
        if operation in ("forward", "solve"):
            out, finite = run(operation, g=g if operation == "solve" else None)
            results = [out]
        else:
            given = run("forward")[0] if operation == "adjoint_given_output" else None
            (gm, gw), finite = run("adjoint", g=g, given_output=given)
            results = [gm, gw]
    assert not all(np.isfinite(r).all() for r in results)     # (the case overflows)
    assert finite is False
    assert all(np.isfinite(r[0]).all() for r in results)      # (sequence 0 does not)


def test_failure_message_decodes_key():
    T, D = 7, 5
    key = (2 * T + 6) * D + 4
    msg = failure_message(key, T, D)
    assert msg.startswith("MLPG system is not positive definite at frame t=6, static "
                          "dimension d=4 of sequence b=2: non-positive pivot")


# --------------------------------------------------------------------------
# the source itself: nvcc compile check, shipping, the backend module
# --------------------------------------------------------------------------

def test_kernel_source_is_package_data():
    src = kernel_source()
    assert src == CU_FILE.read_text(encoding="utf-8")
    assert "__host__ __device__ int mlpg_sequence" in src
    assert "__global__ void mlpg_kernel" in src
    # NVRTC (cupy.RawModule) has no C/C++ library headers
    assert not any(line.lstrip().startswith("#include") for line in src.splitlines())


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_kernels(tmp_path, arch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the CUDA kernel source is not compile-checked")
    obj = tmp_path / f"mlpg_kernels_{arch}.o"
    # every (dtype, MAXK) instantiation the backend may request
    cmd = [nvcc, "-std=c++17", f"-arch={arch}", "-DMLPGX_EXPLICIT_INSTANTIATION",
           "-Werror", "all-warnings", "-x", "cu", "-c", str(CU_FILE), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    assert obj.stat().st_size > 0
    # the names the backend passes to RawModule(name_expressions=...) resolve
    probe = tmp_path / "probe.cu"
    names = [kernel_name(dt, m) for dt in (np.float32, np.float64) for m in MAXK_VALUES]
    # every split-path kernel the backend may launch
    for dt in (np.float32, np.float64):
        for L in range(1, 5):
            pb = make_problem(np.zeros((1, 4, 3 * L), dt),
                              variances=np.ones((1, 4, 3 * L), dt),
                              windows=as_windows([[1]] + [[-0.5, 0, 0.5]] * (L - 1)))
            pbg = make_problem(np.zeros((1, 4, 3 * L), dt), variances=np.ones(3 * L, dt),
                               windows=pb.windows)
            for mode in ("forward", "solve", "adjoint"):
                for p in (pb, pbg):
                    names += [n for n, _ in cuda_backend.plan_kernels(
                        launch_plan(p, mode, kernel="split"), dt)]
    names = sorted(set(names))
    probe.write_text(f'#include "{CU_FILE}"\n' + "".join(
        f"void* probe_{i} = (void*)&{n};\n" for i, n in enumerate(names)))
    cmd = [nvcc, "-std=c++17", f"-arch={arch}", "-c", str(probe), "-o",
           str(tmp_path / "probe.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


def test_backend_module_without_gpu():
    b = CudaBackend()
    assert b.name == "cuda" and b.array_module == "cupy"
    ok, why = b.availability()
    assert isinstance(ok, bool) and isinstance(why, str)
    try:
        import cupy  # noqa: F401
        have_cupy = True
    except Exception:
        have_cupy = False
    if not have_cupy:
        assert not ok and "cupy is not importable" in why
    if not ok:
        assert why
        assert "unavailable" in repr(b)


def test_launch_plan_types():
    pb = make_problem(np.zeros((2, 5, 9)), variances=np.ones(9), windows=DELTA)
    plan = launch_plan(pb, "adjoint")
    assert plan.maxk == 2 and plan.nrhs == 2
    assert [type(s) for s in plan.scalars] == [np.int64] * 6 + [np.int32] * 3 + [np.float64]
    assert plan.global_weights == 1 and plan.weight_kind == 1 and plan.mode == 2
    assert plan.scratch_size == 5 * (2 + 2) * 2 * 3
    assert all(a.dtype == np.int64 for a in plan.tables if a is not plan.tables.coeffs)
    wide = as_windows([[1], [1] * 65])
    with pytest.raises(ValueError, match="half-bandwidth"):
        launch_plan(make_problem(np.zeros((4, 2)), windows=wide), "forward")
    assert kernel_name(np.float32, 8) == "mlpg_kernel<float, 8>"
    assert cuda_backend.BLOCK % 32 == 0

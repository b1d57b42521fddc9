"""The ``"cuda"`` backend: the banded MLPG solver on NVIDIA GPUs (CuPy).

CuPy arrays in, CuPy arrays out (the problem's dtype, on the inputs' device).
The kernels (:mod:`mlpgx.cuda`, ``mlpg_kernels.cu``) follow the algorithm of
the CPU backend: ``R`` and ``r`` formed from the inputs, banded ``L D L^T``
in double precision, both substitutions and the adjoint gradients, with the
factor rows in a ``(T, k + nrhs, B*D)`` scratch buffer (coalesced).  Two
paths:

- windows reaching at most one frame to either side (static + delta +
  delta-delta; :func:`band2_fits`): the *split* path.  The rows of ``R`` and
  ``r`` (and, for the adjoint, the gradients) are computed with one thread
  per (sequence, frame, dimension); only the ``L D L^T`` recurrence runs one
  thread per (sequence, dimension), reading the rows several frames ahead;
- any other windows: the general kernel, everything in one thread per
  (sequence, dimension), sequential over frames.

They are compiled with ``cupy.RawModule`` (NVRTC) on first use, one module
per kernel group, and cached.

Streams and synchronisation: everything (uploads of the lengths and window
tables, the launch, the status read-back) goes to CuPy's *current* stream,
which :mod:`mlpgx.torch` sets to torch's current stream
(``cupy.cuda.ExternalStream``) for CUDA tensors, whose data reach the kernel
as DLPack views and whose results the kernel writes into torch-allocated
tensors (``outputs=`` of :meth:`CudaBackend._run`).  The one host
synchronisation of a launch is the read-back of the 8-byte status word, which
the ``LinAlgError`` of a non-positive pivot needs (the validation layer's
reductions, e.g. the finiteness scan, read back a scalar each as well); the
first use of a window set on a device also waits for its table upload.

Importing this module needs neither CuPy nor a GPU; :meth:`availability`
reports why the backend cannot run.  The host-side preparation
(:func:`launch_plan`, :func:`failure_message`) is plain NumPy so that the test
suite can drive the kernels' per-sequence routine compiled for the CPU
(``tests/test_cuda_source.py``).
"""
from __future__ import annotations

import functools
import os
import threading
from typing import NamedTuple, Optional, Tuple

import numpy as np
from numpy.linalg import LinAlgError

from .._problem import Problem
from ..cuda import MAXK_VALUES, kernel_source, required_maxk
from ._base import KernelBackend, adjoint_result, allocate_outputs

#: A pivot must exceed this fraction of ``R[i, i]`` (as in the CPU backend).
PIVOT_RTOL = 1e-13
#: Kernel mode codes (``MLPG_MODE_*`` in the source).  ``"adjoint_given_output"``:
#: the adjoint reading ``c`` from the forward's output (``output=``), solving
#: for ``v`` alone.
MODES = {"forward": 0, "solve": 1, "adjoint": 2, "adjoint_given_output": 3}
#: Weight kind codes (``MLPG_KIND_*``); ``None``: no weights (unit variances).
WEIGHT_KINDS = {None: 0, "variance": 1, "precision": 2}
#: Threads per block (at most; see :func:`block_size`).
BLOCK = 128
#: Windows the k <= 2 kernel takes: at most this many, each reaching at most
#: one frame to each side (``MLPG_B2_MAX_WINDOWS`` in the source).
BAND2_MAX_WINDOWS = 4
#: Prefetch depth of the k <= 2 kernels: frames whose loads are in flight
#: ahead of the serial LDL^T recurrence (template parameter ``PF``).  The
#: environment variable ``MLPGX_CUDA_PREFETCH`` overrides it (for tuning).
BAND2_PREFETCH = int(os.environ.get("MLPGX_CUDA_PREFETCH", "8"))
#: Which kernel takes the windows :func:`band2_fits` accepts: ``"split"`` (rows
#: of R and r, and the adjoint's gradients, one thread per frame; only the
#: LDL^T recurrence one thread per sequence and dimension) or ``"general"``
#: (the kernel for any width).  Environment variable ``MLPGX_CUDA_K2_KERNEL``.
K2_KERNEL = os.environ.get("MLPGX_CUDA_K2_KERNEL", "split")
K2_KERNELS = ("split", "general")
#: Threads per block of the per-frame kernels of the split path.
FRAME_BLOCK = 256
#: Status value meaning "no failure" (the kernel keeps the smallest failing key).
NO_FAILURE = np.iinfo(np.uint64).max
#: The status words a launch starts from: ``[NO_FAILURE, 0]``; the kernels
#: set the second to 1 when a result they stored was not finite.
STATUS_INIT = np.array([NO_FAILURE, 0], dtype=np.uint64)
STATUS_INIT.setflags(write=False)

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


class WindowTables(NamedTuple):
    """Window tables and boundary margins as the kernel reads them."""
    win_left: np.ndarray    # (L,) int64
    win_width: np.ndarray   # (L,) int64
    win_offset: np.ndarray  # (L,) int64
    coeffs: np.ndarray      # (sum of widths,) float64
    zero_lo: np.ndarray     # (L,) int64
    zero_hi: np.ndarray     # (L,) int64


class LaunchPlan(NamedTuple):
    """Everything but the data arrays that one kernel launch needs."""
    tables: WindowTables
    maxk: int
    nrhs: int
    B: np.int64
    T: np.int64
    D: np.int64
    L: np.int64
    k: np.int64
    P: np.int64
    mode: np.int32
    weight_kind: np.int32
    global_weights: np.int32
    pivot_rtol: np.float64
    kernel: str = "general"

    @property
    def scratch_size(self) -> int:
        """Entries of the ``(T, k + nrhs, B*D)`` scratch buffer (``k = 2`` for
        the k <= 2 kernels, which always store two factors per row)."""
        per_frame = (int(self.k) if self.kernel == "general" else 2) + self.nrhs
        return int(self.T) * per_frame * int(self.B) * int(self.D)

    @property
    def work_size(self) -> int:
        """Float64 entries of the split path's work buffer: the rows of R and
        r ``(T, 4, B*D)``, then (adjoint) c and v ``(T, 2, B*D)`` or (adjoint
        given the output) v ``(T, 1, B*D)``; 0 otherwise."""
        if self.kernel != "split":
            return 0
        solutions = {MODES["adjoint"]: 2, MODES["adjoint_given_output"]: 1}.get(int(self.mode), 0)
        return int(self.T) * (4 + solutions) * int(self.B) * int(self.D)

    @property
    def scalars(self) -> tuple:
        """The scalar kernel arguments, in order, with explicit NumPy types."""
        return (self.B, self.T, self.D, self.L, self.k, self.P, self.mode,
                self.weight_kind, self.global_weights, self.pivot_rtol)


@functools.lru_cache(maxsize=64)
def window_tables(windows, zero_lo: tuple, zero_hi: tuple) -> WindowTables:
    """Flatten a :class:`~mlpgx.windows.WindowSet` and the boundary margins."""
    L = len(windows)
    left = np.array([w.left for w in windows], dtype=np.int64)
    width = np.array([w.left + w.right + 1 for w in windows], dtype=np.int64)
    offset = np.zeros(L, dtype=np.int64)
    offset[1:] = np.cumsum(width)[:L - 1]
    coeffs = np.concatenate([np.asarray(w.coeffs, dtype=np.float64) for w in windows])
    tabs = WindowTables(left, width, offset, coeffs,
                        np.asarray(zero_lo, dtype=np.int64).reshape(L),
                        np.asarray(zero_hi, dtype=np.int64).reshape(L))
    for a in tabs:
        a.setflags(write=False)
    return tabs


def band2_fits(windows) -> bool:
    """Whether the k <= 2 kernels (``mlpg_split_*``) can run ``windows``:
    at most :data:`BAND2_MAX_WINDOWS` windows, none reaching more than one
    frame to either side (static + delta + delta-delta and its subsets)."""
    return (len(windows) <= BAND2_MAX_WINDOWS and windows.max_left <= 1
            and windows.max_right <= 1)


def launch_plan(problem: Problem, mode: str, *, kernel: Optional[str] = None) -> LaunchPlan:
    """The tables, ring size and typed scalars of a launch for ``problem``.

    ``mode``: a key of :data:`MODES`.  ``kernel``: ``"general"`` or
    ``"split"`` (only for windows :func:`band2_fits`); by default
    :data:`K2_KERNEL` for such windows and ``"general"`` for the others.

    Raises ``ValueError`` when the windows are wider than the largest
    instantiated ring (``MAXK = max(MAXK_VALUES)``).
    """
    wins = problem.windows
    k, P, Q = int(wins.bandwidth), int(wins.max_left), int(wins.max_right)
    maxk = required_maxk(k, P + Q)
    if maxk > max(MAXK_VALUES):
        raise ValueError(
            f"backend 'cuda' supports windows with a half-bandwidth k = max(left + right) "
            f"of at most {max(MAXK_VALUES)} (and max(left) + max(right) < "
            f"{2 * max(MAXK_VALUES)}); got k={k}, max(left)={P}, max(right)={Q}")
    lo, hi = problem.zero_frame_ranges()
    tables = window_tables(wins, tuple(int(x) for x in lo), tuple(int(x) for x in hi))
    kind = problem.weight_kind if problem.weights is not None else None
    return LaunchPlan(
        tables=tables, maxk=maxk, nrhs=2 if mode == "adjoint" else 1,   # (given c: v alone)
        B=np.int64(problem.batch_size), T=np.int64(problem.n_frames),
        D=np.int64(problem.static_dim), L=np.int64(problem.n_windows), k=np.int64(k),
        P=np.int64(P), mode=np.int32(MODES[mode]), weight_kind=np.int32(WEIGHT_KINDS[kind]),
        global_weights=np.int32(bool(problem.global_weights)),
        pivot_rtol=np.float64(PIVOT_RTOL),
        kernel=_pick_kernel(wins, kernel))


def _pick_kernel(windows, kernel: Optional[str]) -> str:
    fits = band2_fits(windows)
    if kernel is None:
        kernel = K2_KERNEL if fits else "general"
    if kernel not in K2_KERNELS:
        raise ValueError(f"kernel must be one of {K2_KERNELS}; got {kernel!r}")
    if kernel != "general" and not fits:
        raise ValueError(f"the {kernel!r} kernel needs at most {BAND2_MAX_WINDOWS} windows "
                         f"reaching at most one frame to either side")
    return kernel


def failure_message(key: int, T: int, D: int) -> str:
    """The ``LinAlgError`` message for the status key ``(b*T + t)*D + d``
    (the same wording as the CPU backend)."""
    key = int(key)
    b, rem = divmod(key, int(T) * int(D))
    t, d = divmod(rem, int(D))
    return (f"MLPG system is not positive definite at frame t={t}, static dimension "
            f"d={d} of sequence b={b}: non-positive pivot (every precision touching "
            f"the frame may be zero: infinite variances, zero precisions or the "
            f"boundary rule; or the system is singular; or precisions so large, "
            f"variances so small, that R's entries overflowed float64)")


def kernel_name(dtype, maxk: int) -> str:
    """The ``name_expressions`` entry of the kernel for ``dtype`` and ``maxk``."""
    return f"mlpg_kernel<{_CTYPES[np.dtype(dtype)]}, {int(maxk)}>"


def plan_kernels(plan: LaunchPlan, dtype) -> list:
    """The kernels a launch of ``plan`` runs, in order, each as ``(name_expression,
    threads per)``: ``"frame"`` (one thread per (b, t, d)) or ``"sequence"``
    (one per (b, d))."""
    ct, L, mode = _CTYPES[np.dtype(dtype)], int(plan.L), int(plan.mode)
    if plan.kernel == "general":
        return [(kernel_name(dtype, plan.maxk), "sequence")]
    # (r is needed for c: not by the solve, nor by the adjoint given c)
    has_means = int(mode in (MODES["forward"], MODES["adjoint"]))
    steps = [(f"mlpg_split_rows_kernel<{ct}, {L}, {has_means}>", "frame"),
             (f"mlpg_split_solve_kernel<{ct}, {mode}, {BAND2_PREFETCH}>", "sequence")]
    if mode in (MODES["adjoint"], MODES["adjoint_given_output"]):
        # global weights: their gradient sums over frames, one thread per (b, d)
        per_frame = int(not (plan.weight_kind != WEIGHT_KINDS[None] and plan.global_weights))
        steps.append((f"mlpg_split_grads_kernel<{ct}, {L}, {per_frame}>",
                      "frame" if per_frame else "sequence"))
    return steps


# -- CuPy side ---------------------------------------------------------------

_MODULE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _import_cupy():
    import cupy

    return cupy


@functools.lru_cache(maxsize=None)
def _raw_module(names: tuple):
    """The compiled module of a group of kernel instantiations (CuPy compiles
    per device on first launch and keeps its own on-disk cache)."""
    cp = _import_cupy()
    return cp.RawModule(code=kernel_source(), options=("-std=c++17",),
                        name_expressions=list(names))


def _kernel(name: str, group: tuple = ()):
    """Kernel ``name``, compiled together with the names in ``group`` (one
    NVRTC run for the kernels a path launches in turn)."""
    with _MODULE_LOCK:  # RawModule compilation is not re-entrant per module
        return _raw_module(tuple(group) or (name,)).get_function(name)


def split_group(dtype, n_windows: int, prefetch: int) -> tuple:
    """Every split-path kernel for one dtype, window count and prefetch depth
    (compiled as one module: every mode and both weight layouts)."""
    ct = _CTYPES[np.dtype(dtype)]
    return tuple([f"mlpg_split_rows_kernel<{ct}, {n_windows}, {h}>" for h in (0, 1)]
                 + [f"mlpg_split_solve_kernel<{ct}, {m}, {prefetch}>"
                    for m in sorted(MODES.values())]
                 + [f"mlpg_split_grads_kernel<{ct}, {n_windows}, {p}>" for p in (0, 1)])


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_id: int) -> int:
    return int(_import_cupy().cuda.Device(device_id).attributes["MultiProcessorCount"])


def block_size(n_threads: int, multiprocessors: int) -> int:
    """Threads per block: :data:`BLOCK`, halved (down to one warp) while the
    grid would leave multiprocessors idle.  One thread per sequence and
    dimension gives only a few thousand threads for a typical batch; spread
    over every multiprocessor, each has fewer threads competing for its load
    units and all of them issue loads."""
    block = BLOCK
    while block > 32 and -(-n_threads // block) < 2 * multiprocessors:
        block //= 2
    return block


_device_tables_cache = {}
_device_tables_lock = threading.Lock()


def _device_tables(tables: WindowTables, device_id: int):
    """The window tables on ``device_id`` (cached; tables are immutable).

    The upload runs on the current stream, and the cache entry is published
    only after that stream has been synchronised (once per table set and
    device): later launches on any other stream, from any thread, then read
    finished tables."""
    key = (id(tables), device_id)
    with _device_tables_lock:
        hit = _device_tables_cache.get(key)
        if hit is not None and hit[0] is tables:
            return hit[1]
    cp = _import_cupy()
    dev = tuple(cp.asarray(a) for a in tables)
    cp.cuda.get_current_stream().synchronize()
    with _device_tables_lock:
        if len(_device_tables_cache) > 256:
            _device_tables_cache.clear()
        _device_tables_cache[key] = (tables, dev)
    return dev


class CudaBackend(KernelBackend):
    """GPU backend for CuPy arrays (the default for them)."""

    name = "cuda"
    array_module = "cupy"
    #: ``mlpgx.torch`` hands CUDA tensors to it through DLPack (no copies) and
    #: launches on torch's current stream; see :mod:`mlpgx.torch`.
    torch_devices = ("cuda",)
    #: ``adjoint(..., output=c)`` reads ``c`` instead of solving for it
    #: (kernel mode ``"adjoint_given_output"``): one right-hand side in the
    #: recurrence, and (split path) no ``r`` from the means.
    reuses_output = True
    description = ("CUDA banded LDL^T (CuPy RawModule): rows and gradients per frame, the "
                   "recurrence per sequence and dimension")

    def __init__(self):
        self._availability: Optional[Tuple[bool, str]] = None

    def availability(self) -> Tuple[bool, str]:
        if self._availability is None:
            self._availability = self._probe()
        return self._availability

    @staticmethod
    def _probe() -> Tuple[bool, str]:
        try:
            cp = _import_cupy()
        except Exception as exc:  # ImportError, or a broken CUDA install
            return False, (f"cupy is not importable ({type(exc).__name__}: {exc}); "
                           f"install mlpgx[cuda12] or mlpgx[cuda13]")
        try:
            count = int(cp.cuda.runtime.getDeviceCount())
        except Exception as exc:  # no driver, no device
            return False, f"no CUDA GPU is visible ({type(exc).__name__}: {exc})"
        if count < 1:
            return False, "no CUDA GPU is visible (cupy.cuda.runtime.getDeviceCount() == 0)"
        return True, ""

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _device_id(*arrays) -> int:
        cp = _import_cupy()
        for a in arrays:
            if isinstance(a, cp.ndarray):
                return a.device.id
        return cp.cuda.Device().id

    # The kernels test every result they store finite (status word 1, read
    # back with the pivot status, see mlpg_report_nonfinite), so that the API
    # layer need not scan them again: one reduction and one host
    # synchronisation less per result array (KernelBackend.forward_checked).
    tests_results = True

    def _run(self, mode: str, pb: Problem, g=None, outputs=None, given_output=None,
             report_finite=False):
        """``mode`` ``"forward"``, ``"solve"`` or ``"adjoint"``; ``given_output``
        (adjoint only): the forward's result ``c`` ``(B, T, D)``, read by the
        kernel (never written; frames beyond the lengths are not read).
        ``report_finite``: return ``(result, finite)``, ``finite`` True when
        every value the kernels stored is finite (the summed global-weight
        gradient aside)."""
        cp = _import_cupy()
        dt = np.dtype(pb.dtype)
        given = given_output is not None and mode == "adjoint"
        plan = launch_plan(pb, "adjoint_given_output" if given else mode)
        B, T, D = pb.batch_size, pb.n_frames, pb.static_dim
        has_weights = pb.weights is not None
        with cp.cuda.Device(self._device_id(pb.means, pb.weights, g)):
            # (a no-op for contiguous CuPy arrays of the right dtype)
            means = cp.ascontiguousarray(cp.asarray(pb.means), dtype=dt) \
                if mode != "solve" else None
            weights = cp.ascontiguousarray(cp.asarray(pb.weights), dtype=dt) \
                if has_weights else None
            rhs = cp.ascontiguousarray(cp.asarray(g), dtype=dt) if g is not None else None
            out, gmeans, gweights, gw_acc = allocate_outputs(cp, mode, pb, outputs)
            if given:   # (the kernel's `out` argument is c's in this mode)
                out = cp.ascontiguousarray(cp.asarray(given_output), dtype=dt)
            finite = True   # (empty results)
            if B * T * D:
                finite = self._launch(cp, plan, dt, pb, means, weights, rhs, out, gmeans,
                                      gweights, gw_acc)
            elif mode == "adjoint":
                gmeans.fill(0)
                if gweights is not None:
                    gweights.fill(0)
            else:
                out.fill(0)
            result = out if mode != "adjoint" else \
                adjoint_result(pb, gmeans, gweights, gw_acc, outputs)
            return (result, finite) if report_finite else result

    @staticmethod
    def _launch(cp, plan: LaunchPlan, dt, pb, means, weights, rhs, out, gmeans, gweights,
                gw_acc) -> bool:
        """Run the plan's kernels; raise ``LinAlgError`` for a non-positive
        pivot; return whether every result stored was finite."""
        ph = cp.empty(1, dtype=dt)              # placeholder for absent arrays
        ph64 = cp.empty(1, dtype=np.float64)
        scratch = cp.empty(max(plan.scratch_size, 1), dtype=dt)
        work = cp.empty(max(plan.work_size, 1), dtype=np.float64)
        status = cp.asarray(STATUS_INIT)
        lengths = cp.asarray(np.ascontiguousarray(pb.lengths, dtype=np.int64))
        device_id = cp.cuda.Device().id
        tabs = _device_tables(plan.tables, device_id)
        pick = lambda a, p: a if a is not None else p  # noqa: E731
        args = (pick(means, ph), pick(weights, ph), pick(rhs, ph), pick(out, ph),
                pick(gmeans, ph), pick(gweights, ph), pick(gw_acc, ph64), scratch, work,
                status, lengths, *tabs, *plan.scalars)
        per_sequence = int(plan.B) * int(plan.D)
        group = split_group(dt, int(plan.L), BAND2_PREFETCH) if plan.kernel == "split" else ()
        for name, per in plan_kernels(plan, dt):
            if per == "frame":
                nthreads, block = per_sequence * int(plan.T), FRAME_BLOCK
            else:
                nthreads = per_sequence
                block = block_size(nthreads, _multiprocessors(device_id))
            _kernel(name, group)(((nthreads + block - 1) // block,), (block,), args)
        # the launch's one host synchronisation (the current stream): the
        # LinAlgError below needs the status word
        key, nonfinite = (int(x) for x in status.get())
        if key != int(NO_FAILURE):
            raise LinAlgError(failure_message(key, int(plan.T), int(plan.D)))
        return nonfinite == 0

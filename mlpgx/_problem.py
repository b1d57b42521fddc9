"""The normalised MLPG problem that every backend receives.

The validation layer (:mod:`mlpgx._validate`) builds a :class:`Problem` once per
public call; backends then assume everything documented here and never check
it again.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .windows import WindowSet

#: Boundary rules understood by every backend (see :func:`mlpgx.mlpg`).
BOUNDARIES = ("per-window", "nnmnkwii", "none")
#: How :attr:`Problem.weights` is to be read.
WEIGHT_KINDS = ("variance", "precision")


@dataclass(frozen=True, eq=False)
class Problem:
    """A validated MLPG problem in batched, contiguous form.

    Attributes
    ----------
    means : ndarray or None
        ``(B, T, L*D)`` C-contiguous array of ``dtype`` (NumPy, or CuPy for
        the ``"cuda"`` backend; ``weights`` come from the same library), window-major columns
        ``[static d=0..D-1, window 1 d=0..D-1, ...]``; finite (unless
        ``means_scan_deferred``).  ``None`` for a
        pure solve (:meth:`Backend.solve`), which needs no means.
    weights : ndarray or None
        Variances or precisions (see ``weight_kind``), C-contiguous, ``dtype``,
        shaped ``(B, T, L*D)`` or ``(L*D,)`` (global: the same for every frame
        and sequence).  ``None`` means unit variances.  Variances are in
        ``(0, +inf]`` (``+inf`` means precision 0); precisions are finite and
        ``>= 0``.
    weight_kind : {"variance", "precision"}
    windows : WindowSet
        ``L`` windows, the first the static window ``[1]``.
    lengths : ndarray
        ``(B,)`` int64 with ``0 <= lengths[b] <= T``; frames ``t >= lengths[b]``
        of sequence ``b`` do not exist (their outputs and gradients are 0).
    boundary : {"per-window", "nnmnkwii", "none"}
    static_dim : int
        ``D``.
    n_frames : int
        ``T`` (padded length).
    dtype : numpy.dtype
        float32 or float64: the dtype of every array in and out.
    batched : bool
        Whether the caller passed a batch axis (the API layer strips it again).
    num_threads : int or None
        Threads a backend may use (``None``: its default).
    voiced : ndarray or None
        ``(B, T, Dm)`` bool voicing mask of an MSD stream (see
        :mod:`mlpgx._msd`), ``Dm`` 1 (one flag per frame, broadcast over the
        dimensions) or ``D``, from the array library of ``means``; ``None``:
        every frame is voiced.  Backends that do not set
        ``Backend.handles_voicing`` receive the lowered problem instead
        (``voiced`` is then ``None``).
    msd_rule : {"hts", "sptk"}
        Which frames of a window's support the voicing rule tests.
    voicing_keep : ndarray or None
        ``(B, T, L, Dm)`` bool: the precisions the voicing rule keeps,
        computed once by the validation layer (``None`` without ``voiced``).
    means_scan_deferred : bool
        ``means`` have not been scanned for NaN/inf yet: the API layer scans
        them after the kernel, and only where the output cannot show them
        (see :func:`mlpgx._validate.finish_means_scan`).  Only backends that
        set ``Backend.nonfinite_means_reach_output`` receive such a problem.
    weights_scan_deferred : bool
        ``weights`` (per frame) have not been checked yet: a backend whose
        ``Backend.checks_weights`` says so checks those it reads while it
        solves (raising ``WeightsRejected`` of the compiled solver), and the
        API layer checks the rest after it (see
        :func:`mlpgx._validate.finish_weights_scan`).  Other backends never
        receive such a problem.
    """

    means: Optional[np.ndarray]
    weights: Optional[np.ndarray]
    weight_kind: str
    windows: WindowSet
    lengths: np.ndarray
    boundary: str
    static_dim: int
    n_frames: int
    dtype: np.dtype
    batched: bool = True
    num_threads: Optional[int] = None
    voiced: Optional[np.ndarray] = None
    msd_rule: str = "hts"
    voicing_keep: Optional[np.ndarray] = None
    means_scan_deferred: bool = False
    weights_scan_deferred: bool = False

    # Written out (the dataclass keeps it) because the generated __init__ of
    # a frozen dataclass sets each field through object.__setattr__: 1.9 us
    # per call here, a tenth of a short sequence's whole mlpg call.  The
    # fields must stay in step with the annotations above (tests compare).
    def __init__(self, means, weights, weight_kind, windows, lengths, boundary, static_dim,
                 n_frames, dtype, batched=True, num_threads=None, voiced=None,
                 msd_rule="hts", voicing_keep=None, means_scan_deferred=False,
                 weights_scan_deferred=False):
        self.__dict__.update(
            means=means, weights=weights, weight_kind=weight_kind, windows=windows,
            lengths=lengths, boundary=boundary, static_dim=static_dim, n_frames=n_frames,
            dtype=dtype, batched=batched, num_threads=num_threads, voiced=voiced,
            msd_rule=msd_rule, voicing_keep=voicing_keep,
            means_scan_deferred=means_scan_deferred,
            weights_scan_deferred=weights_scan_deferred)

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    @property
    def global_weights(self) -> bool:
        return self.weights is not None and self.weights.ndim == 1

    def zero_frame_ranges(self):
        """Per window, the ``(lo, hi)`` frame margins where the boundary rule
        fixes the precision to 0: frame ``t`` of a sequence of length ``n`` is
        dropped for window ``l`` when ``t < lo[l]`` or ``t >= n - hi[l]``.

        The static window (index 0) is never dropped.  The arrays are
        read-only (they are shared between calls).
        """
        return _zero_frame_ranges(self.windows, self.boundary)

    def zero_frame_margin(self) -> int:
        """The widest of the margins of :meth:`zero_frame_ranges` (0 when
        the boundary rule drops nothing), as an int."""
        return _zero_frame_margin(self.windows, self.boundary)


@functools.lru_cache(maxsize=128)
def _zero_frame_ranges(windows: WindowSet, boundary: str):
    # see Problem.zero_frame_ranges; cached: it is asked for on every call
    lo = np.zeros(len(windows), dtype=np.int64)
    hi = np.zeros(len(windows), dtype=np.int64)
    if boundary == "per-window":
        for l, w in enumerate(windows):
            if l:
                lo[l], hi[l] = w.left, w.right
    elif boundary == "nnmnkwii":
        k = windows.max_halfwidth
        lo[1:] = k
        hi[1:] = k
    lo.setflags(write=False)
    hi.setflags(write=False)
    return lo, hi


@functools.lru_cache(maxsize=128)
def _zero_frame_margin(windows: WindowSet, boundary: str) -> int:
    # see Problem.zero_frame_margin
    lo, hi = _zero_frame_ranges(windows, boundary)
    return int(max(lo.max(initial=0), hi.max(initial=0)))

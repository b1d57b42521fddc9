"""Streaming (time-recursive, fixed-lag) MLPG: :class:`StreamingMLPG`.

Frames go in one at a time (or in chunks) and static frames come out
``delay`` frames later; each output frame is the exact MLPG solution of the
frames received so far.  The kernel (``mlpgx/_ext/_streaming.pyx``) keeps a
banded ``L D L^T`` factorisation of the rows that can no longer change and
finishes it per emitted frame; see ``docs/streaming.md``.
"""
from __future__ import annotations


import numpy as np

from ._ext._solver import PIVOT_RTOL
from ._ext._streaming import StreamKernel
from ._problem import Problem
from ._validate import (_check_finite, _check_weights, _float_array, check_boundary, check_int,
                        overflow_reason, scalar_repr)
from .windows import DELTA, as_windows

__all__ = ["StreamingMLPG"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class StreamingMLPG:
    r"""Fixed-lag streaming MLPG: the exact solution of every prefix.

    Frames of means and variances are pushed as they arrive; each push
    returns the static frames that are ready, ``delay`` frames behind the
    newest input.  After frames ``0..m`` have been pushed, frame
    ``n = m - delay`` is emitted, and its value is exactly

    .. code-block:: python

        mlpgx.mlpg(means[:m + 1], variances[:m + 1], windows, boundary=boundary)[n]

    the MLPG solution of the prefix as if the sequence ended at frame ``m``
    (the boundary rule applies at both ends of the prefix).  So output frame
    ``n`` depends only on the inputs of frames ``0..n + delay``.
    :meth:`flush` declares the end of the utterance (``T`` = frames pushed)
    and returns the remaining frames ``max(0, T - delay)..T-1``, equal to
    ``mlpgx.mlpg(means, variances, ...)[n]`` of the whole sequence; with
    ``delay >= T`` the stream therefore equals the full solution.

    For each static dimension, with ``R_m = sum_l W_l^T diag(p_l) W_l`` and
    ``r_m = sum_l W_l^T diag(p_l) mu_l`` over the prefix, the emitted frame is
    row ``n`` of ``R_m^{-1} r_m``.  Rows of ``R`` more than ``M`` frames from
    the end of the prefix no longer change when the sequence grows (``M`` is
    the largest ``left_l`` plus the boundary rule's end margin of window
    ``l``: ``k`` for ``"per-window"``); their banded ``L D L^T`` factors are
    computed once.  Each emitted frame then costs the factorisation of the
    ``M`` last rows and a back substitution over ``delay + 1`` rows:
    ``O(D (M k^2 + delay k))`` operations and ``O(D (delay + M) k)`` memory,
    independent of how many frames came before.  All arithmetic is float64.

    Parameters
    ----------
    windows : window specification, optional
        Anything :func:`mlpgx.windows.as_windows` accepts; default
        :data:`mlpgx.windows.DELTA`.
    static_dim : int
        ``D``, the number of static dimensions (``>= 1``); every frame has
        ``L * D`` columns, window-major as in :func:`mlpgx.mlpg`.
    delay : int
        Look-ahead in frames (``>= 0``).  ``0`` emits each frame as soon as it
        is pushed (the solution of the prefix ending there).
    boundary : {"per-window", "nnmnkwii", "none"}
        As in :func:`mlpgx.mlpg`; applied at the start of the sequence and at
        the end of every prefix.
    dtype : {numpy.float64, numpy.float32}
        Storage dtype of the inputs and outputs.  Inputs are converted to it
        (integers first to float64, float16 to float32, as in
        :func:`mlpgx.mlpg`); the arithmetic is float64 either way.

    Raises
    ------
    ValueError, TypeError
        Bad ``windows``, ``static_dim``, ``delay``, ``boundary`` or ``dtype``
        (the message names the argument).

    Notes
    -----
    A :class:`numpy.linalg.LinAlgError` from :meth:`push` or :meth:`flush`
    (the system of a prefix is not positive definite), or a ``ValueError``
    for emitted frames that are not finite (finite inputs so extreme that
    the float64 arithmetic overflowed: a mean of 1e200 with a variance of
    1e-200), leaves the stream unusable: further calls raise
    ``RuntimeError`` until :meth:`reset`.
    A stream is not thread-safe: use one object per utterance being
    generated concurrently.

    Examples
    --------
    Frames come out ``delay`` frames late and equal the prefix solutions;
    after :meth:`flush` the last frames equal the full solution:

    >>> import numpy as np, mlpgx
    >>> from mlpgx.streaming import StreamingMLPG
    >>> rng = np.random.default_rng(0)
    >>> means = rng.normal(size=(20, 3 * 2))            # T = 20, L = 3, D = 2
    >>> variances = rng.uniform(0.5, 2.0, size=(20, 6))
    >>> stream = StreamingMLPG(mlpgx.windows.DELTA, static_dim=2, delay=3)
    >>> first = [stream.push(means[t], variances[t]) for t in range(20)]
    >>> [f.shape for f in first[:5]]
    [(0, 2), (0, 2), (0, 2), (1, 2), (1, 2)]
    >>> prefix = mlpgx.mlpg(means[:4], variances[:4])  # frames 0..3 pushed
    >>> bool(np.allclose(first[3][0], prefix[0], rtol=1e-12, atol=0))
    True
    >>> rest = stream.flush()                          # frames 17, 18, 19
    >>> full = mlpgx.mlpg(means, variances)
    >>> rest.shape, bool(np.allclose(rest, full[17:], rtol=1e-12, atol=0))
    ((3, 2), True)
    >>> stream.frames_pushed                           # ready for the next utterance
    0
    """

    def __init__(self, windows=DELTA, static_dim=1, delay=0, *, boundary="per-window",
                 dtype=np.float64):
        wins = as_windows(windows)
        D = check_int(static_dim, "static_dim", 1)
        delay = check_int(delay, "delay", 0)
        boundary = check_boundary(boundary)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be numpy.float32 or numpy.float64; got {dtype!r}") \
                from None
        if dt not in _DTYPES:
            raise TypeError(f"dtype must be numpy.float32 or numpy.float64; got {dt}")
        # the boundary rule's margins, from the one place that defines them
        lo, hi = Problem(means=None, weights=None, weight_kind="variance", windows=wins,
                         lengths=np.zeros(1, dtype=np.intp), boundary=boundary,
                         static_dim=D, n_frames=0, dtype=dt).zero_frame_ranges()
        self._windows = wins
        self._D = D
        self._LD = len(wins) * D
        self._delay = delay
        self._boundary = boundary
        self._dtype = dt
        self._kernel = StreamKernel(wins, lo, hi, D, delay, PIVOT_RTOL)
        self._emitted = 0
        self._failed = False
        self._unit = np.ones(1, dtype=dt)

    # -- properties -------------------------------------------------------
    @property
    def windows(self):
        """The :class:`~mlpgx.windows.WindowSet` (read-only)."""
        return self._windows

    @property
    def static_dim(self) -> int:
        """``D`` (read-only)."""
        return self._D

    @property
    def delay(self) -> int:
        """Look-ahead in frames (read-only)."""
        return self._delay

    @property
    def boundary(self) -> str:
        """The boundary rule (read-only)."""
        return self._boundary

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of inputs and outputs (read-only)."""
        return self._dtype

    @property
    def frames_pushed(self) -> int:
        """Frames pushed since the last :meth:`reset` or :meth:`flush`."""
        return int(self._kernel.frames_pushed)

    @property
    def frames_emitted(self) -> int:
        """Static frames returned since the last :meth:`reset` or :meth:`flush`."""
        return self._emitted

    # -- streaming --------------------------------------------------------
    def _frames(self, x, name: str, n=None) -> np.ndarray:
        """``x`` as C-contiguous frames of the stream's dtype, in the caller's
        shape: ``(n, L*D)`` or ``(L*D,)``; ``n`` given: one row per frame of
        the means, or ``(L*D,)`` for all of them."""
        a = _float_array(x, name)
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array (StreamingMLPG runs on the CPU); "
                            f"got {type(x).__module__}.{type(x).__name__}")
        LD = self._LD
        if a.ndim == 2 and a.shape[1] == LD and (n is None or a.shape[0] == n):
            pass
        elif a.ndim == 1 and a.shape[0] == LD:
            pass
        else:
            rows = "n" if n is None else str(n)
            raise ValueError(
                f"{name} must have shape ({rows}, {LD}) or ({LD},) (L*D = "
                f"{len(self._windows)}*{self._D} columns, window-major); got {a.shape}")
        return np.ascontiguousarray(a, dtype=self._dtype)

    def _check_usable(self):
        if self._failed:
            raise RuntimeError("StreamingMLPG: a previous call raised LinAlgError or "
                               "overflowed; call reset() before pushing again")

    def _check_output(self, out, first_frame: int, inputs: str):
        """Emitted frames of finite inputs that are not finite: the inputs'
        values are so extreme that the float64 arithmetic overflowed.  The
        stream's state holds the overflow, so the stream becomes unusable
        (as after a ``LinAlgError``)."""
        if out.size == 0 or np.isfinite(out).all():
            return
        self._failed = True
        i, d = (int(v) for v in np.argwhere(~np.isfinite(out))[0])
        raise ValueError(
            f"emitted frame {first_frame + i}, dimension {d} is {scalar_repr(out[i, d])} although "
            f"{inputs} are finite: {overflow_reason(self._dtype)}; rescale them.  Call "
            f"reset() before pushing again")

    def push(self, means_frames, variances_frames=None, *, precisions=None):
        """Push frames; return the static frames that are now ready.

        Parameters
        ----------
        means_frames : array_like, shape (n, L*D) or (L*D,)
            The next ``n`` frames (or one frame) of means, window-major.
        variances_frames : array_like, optional
            Variances of the same frames: shape ``(n, L*D)``, or ``(L*D,)``
            for the same variances on every pushed frame.  ``+inf`` means
            precision 0.  Default: unit variances.
        precisions : array_like, optional
            Alternative to ``variances_frames`` (``>= 0``, finite), same
            shapes.  Not both.

        Returns
        -------
        ndarray, shape (n_ready, D)
            Frames ``frames_emitted .. frames_pushed - 1 - delay`` (none
            while fewer than ``delay + 1`` frames have been pushed), each the
            solution of the prefix that ended ``delay`` frames after it.

        Raises
        ------
        ValueError, TypeError
            Bad shapes, dtypes or values (NaN/inf means, variances ``<= 0``
            or NaN, negative or non-finite precisions, both variances and
            precisions); nothing is pushed.  Also (``ValueError``) ready
            frames that are not finite although the inputs are (overflow;
            the stream is then unusable until :meth:`reset`).
        numpy.linalg.LinAlgError
            A prefix's system is not positive definite (e.g. every
            precision touching a frame is zero); names the frame and
            dimension.
        RuntimeError
            After a ``LinAlgError``, until :meth:`reset`.
        """
        self._check_usable()
        if variances_frames is not None and precisions is not None:
            raise ValueError("give either variances_frames or precisions, not both")
        weights, kind, wname = ((precisions, "precision", "precisions")
                                if precisions is not None
                                else (variances_frames, "variance", "variances_frames"))
        m = self._frames(means_frames, "means_frames")
        _check_finite(m, "means_frames")
        n = m.shape[0] if m.ndim == 2 else 1
        if weights is None:
            w, kind, stride = self._unit, None, 0
        else:
            w = self._frames(weights, wname, n)
            try:
                _check_weights(w, kind, wname)
            except ValueError as exc:
                given = np.asarray(weights).dtype
                if not (given.kind == "f" and given.itemsize > w.dtype.itemsize):
                    raise   # (only a narrowing conversion can have made it invalid)
                # (1e-50 in float64 is 0.0 in a float32 stream: say where it came from)
                raise ValueError(f"{exc} (converted from {given} to the stream's "
                                 f"{w.dtype})") from None
            stride = self._LD if w.ndim == 2 else 0
        out = np.empty((n, self._D), dtype=self._dtype)
        try:
            nout = self._kernel.push(m.reshape(-1), w.reshape(-1), stride, kind,
                                     out.reshape(-1))
        except np.linalg.LinAlgError:
            self._failed = True
            raise
        self._check_output(out[:nout], self._emitted,
                           "means_frames" if weights is None else f"means_frames and {wname}")
        self._emitted += nout
        return out[:nout]

    def flush(self):
        """End the utterance: return the frames not emitted yet and reset.

        Returns
        -------
        ndarray, shape (min(delay, T), D)
            Frames ``max(0, T - delay) .. T - 1`` of the whole-sequence
            solution ``mlpgx.mlpg(means, variances, ...)`` (``T`` = frames
            pushed).  The stream is then empty, ready for the next utterance.

        Raises
        ------
        ValueError
            A remaining frame is not finite although the inputs are
            (overflow; the stream is then unusable until :meth:`reset`).
        numpy.linalg.LinAlgError
            The whole sequence's system is not positive definite.
        RuntimeError
            After a ``LinAlgError``, until :meth:`reset`.
        """
        self._check_usable()
        T = self.frames_pushed
        out = np.empty((min(self._delay, T), self._D), dtype=self._dtype)
        try:
            self._kernel.flush(out.reshape(-1))
        except np.linalg.LinAlgError:
            self._failed = True
            raise
        self._check_output(out, T - out.shape[0], "the pushed frames")
        self.reset()
        return out

    def reset(self):
        """Forget every pushed frame (start a new utterance)."""
        self._kernel.reset()
        self._emitted = 0
        self._failed = False

    def __repr__(self):
        return (f"StreamingMLPG({self._windows!r}, static_dim={self._D}, delay={self._delay}, "
                f"boundary={self._boundary!r}, dtype={self._dtype.name}, "
                f"frames_pushed={self.frames_pushed})")

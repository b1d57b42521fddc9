"""Check a backend against the scipy.sparse reference on the same input."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict

import numpy as np

from . import _msd
from . import backends as _backends
from ._api import run_adjoint, run_forward
from ._validate import array_namespace, check_int, check_real, frames_array, make_problem
from .windows import DELTA

#: Default scaled tolerances by dtype: ``max|x - ref| <= rtol * max|ref|``.
#: float32 results are rounded to ~6e-8 and R's conditioning amplifies
#: that; float64 agrees to ~1e-13 on well-conditioned problems.
DEFAULT_RTOL = {"float32": 1e-4, "float64": 1e-10}


def _host(x):
    """A NumPy view or copy of a NumPy or CuPy array."""
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x


@dataclass(frozen=True)
class Comparison:
    """Error of one output against the reference."""

    max_abs: float
    max_rel: float   # max_i |x_i - ref_i| / max(|ref_i|, scale_i)

    @classmethod
    def of(cls, x, ref, scale=0.0) -> "Comparison":
        """Compare ``x`` with ``ref`` element by element.

        Each error is divided by ``max(|ref_i|, scale_i)``, where ``scale``
        (scalar or per element) is the magnitude of the terms the quantity
        is computed from, so an output that cancels to ~0 is not judged by
        its own rounding noise.  Where both are 0 the error must be 0.
        """
        x = np.asarray(_host(x), dtype=np.float64)
        ref = np.asarray(_host(ref), dtype=np.float64)
        if x.shape != ref.shape:
            raise AssertionError(f"shape {x.shape} != reference shape {ref.shape}")
        if x.size == 0:
            return cls(0.0, 0.0)
        if not np.all(np.isfinite(x)):
            return cls(float("inf"), float("inf"))
        err = np.abs(x - ref)
        denom = np.maximum(np.abs(ref), scale)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(denom > 0, err / np.where(denom > 0, denom, 1.0),
                           np.where(err > 0, np.inf, 0.0))
        return cls(float(err.max()), float(rel.max()))


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify`.

    Attributes
    ----------
    backend, dtype : str
    rtol : float
        Scaled tolerance every comparison must meet.
    results : dict of str to Comparison
        ``"forward"``, ``"grad_means"`` and, with weights,
        ``"grad_variances"`` / ``"grad_precisions"``; for a backend whose
        adjoint reuses the forward's output (``Backend.reuses_output``), the
        gradients of that path too, as ``"grad_means (output=)"`` etc.
    """

    backend: str
    dtype: str
    rtol: float
    results: Dict[str, Comparison] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every comparison is within ``rtol``."""
        return all(c.max_rel <= self.rtol for c in self.results.values())

    @property
    def max_rel(self) -> float:
        """The largest relative error of all comparisons."""
        return max((c.max_rel for c in self.results.values()), default=0.0)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        lines = [f"backend {self.backend!r} vs reference ({self.dtype}, rtol {self.rtol:g}): "
                 f"{'PASS' if self.passed else 'FAIL'}"]
        width = max((len(name) for name in self.results), default=0)   # one column
        for name, c in self.results.items():
            lines.append(f"  {name:<{width}} max abs {c.max_abs:.3e}  max rel {c.max_rel:.3e}")
        return "\n".join(lines)


def _solution_scale(x, windows):
    """Per element of a ``(B, T, L*D)`` output: ``sum_j |w_l[j]|`` times the
    largest ``|x|`` of that sequence and dimension -- the magnitude of
    ``W_l x`` that a normwise-accurate solve ``x`` is accurate relative to."""
    colmax = np.max(np.abs(x), axis=1, keepdims=True, initial=0.0)   # (B, 1, D)
    wsum = [sum(abs(c) for c in w.coeffs) for w in windows]
    return np.concatenate([s * colmax for s in wsum], axis=2)


def verify(means, variances=None, windows=DELTA, *, backend="auto", precisions=None,
           lengths=None, boundary="per-window", voiced=None, msd_rule="hts",
           grad_output=None, rtol=None, seed=0, num_threads=None) -> VerifyReport:
    """Run ``backend`` and the reference on the same input and compare.

    The forward pass and the adjoint (means and variances/precisions) are
    compared; the reference runs in float64 on the same values (float32
    inputs are widened exactly), so its error is negligible.  A backend
    whose adjoint can reuse the forward's output (``output=`` of
    :func:`mlpgx.mlpg_adjoint`) has that path checked as well, given its own
    forward result, and one with a means-only adjoint (``weight_grad=False``,
    ``Backend.means_only_adjoint``) that one.

    Parameters
    ----------
    means, variances, windows, precisions, lengths, boundary, voiced, msd_rule, num_threads
        As in :func:`mlpgx.mlpg` (unvoiced frames are compared as 0 on both
        sides instead of carrying the marker).
    backend : str or Backend
        The backend to check.
    grad_output : array_like, optional
        Upstream gradient for the adjoint; default standard normal noise
        from ``seed``.
    rtol : float, optional
        Scaled tolerance (``max|x - ref| <= rtol * max|ref|`` for every
        output); default :data:`DEFAULT_RTOL` for the dtype.
    seed : int, optional
        Seed of the default ``grad_output`` (an int >= 0, or anything
        ``numpy.random.default_rng`` takes: a Generator, BitGenerator or
        SeedSequence).

    Returns
    -------
    VerifyReport
        Truthy when every comparison passes; ``str()`` gives a table.

    Examples
    --------
    >>> import numpy as np, mlpgx
    >>> rng = np.random.default_rng(0)
    >>> rep = mlpgx.verify(rng.normal(size=(100, 9)), rng.uniform(0.5, 2, (100, 9)),
    ...                    backend="cython")
    >>> rep.passed, sorted(rep.results)     # doctest: +NORMALIZE_WHITESPACE
    (True, ['forward', 'grad_means', 'grad_means (output=)',
            'grad_means (weight_grad=False)', 'grad_variances',
            'grad_variances (output=)'])
    """
    if rtol is not None:
        rtol = check_real(rtol, "rtol")
        if rtol < 0:
            raise ValueError(f"rtol must be >= 0; got {rtol}")
    if seed is not None and not isinstance(
            seed, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)):
        seed = check_int(seed, "seed", 0)
    problem = make_problem(means, variances, windows, precisions=precisions, lengths=lengths,
                           boundary=boundary, num_threads=num_threads, voiced=voiced,
                           msd_rule=msd_rule)
    b = _backends.resolve(backend, means, dtype=problem.dtype, boundary=problem.boundary)
    ref = _backends.get("reference")
    # the reference runs on the host in float64 on the same values
    wide = dataclasses.replace(
        problem, dtype=np.dtype(np.float64),
        means=_host(problem.means).astype(np.float64),
        weights=None if problem.weights is None else _host(problem.weights).astype(np.float64),
        voiced=None if problem.voiced is None else _host(problem.voiced),
        voicing_keep=None if problem.voiced is None else _host(problem.voicing_keep))
    if grad_output is None:
        rng = np.random.default_rng(seed)
        g = rng.standard_normal((problem.batch_size, problem.n_frames, problem.static_dim))
        g = array_namespace(problem.means).asarray(g.astype(problem.dtype))
    else:
        g = frames_array(grad_output, problem, "grad_output")
    if problem.voiced is not None:   # the output is a constant marker there
        g = array_namespace(g).where(_msd.unvoiced_frames(problem.voiced, problem.lengths),
                                     g.dtype.type(0), g)
    dtype = problem.dtype.name
    tol = DEFAULT_RTOL[dtype] if rtol is None else rtol
    g64 = _host(g).astype(np.float64)
    c_ref = ref.forward(wide)
    c = run_forward(b, problem)
    results = {"forward": Comparison.of(c, c_ref, np.max(np.abs(c_ref), initial=0.0))}
    rgm, rgw = ref.adjoint(wide, g64)
    # Natural magnitudes: v and c are accurate relative to their size over
    # the sequence, so dL/dmu = p W v and dL/dp = W v (mu - W c) are judged
    # relative to p |W| max|v| and |mu| + |W| max|c| element by element.
    v_ref = ref.solve(wide, g64)
    abs_wv = _solution_scale(v_ref, problem.windows)
    abs_wc = _solution_scale(c_ref, problem.windows)
    shape = wide.means.shape
    if wide.weights is None:
        prec = np.ones(shape)
    else:
        prec = np.broadcast_to(1.0 / wide.weights if wide.weight_kind == "variance"
                               else wide.weights, shape)
    power = 2 if problem.weight_kind == "variance" else 0
    mag = prec ** power * abs_wv * (np.abs(wide.means) + abs_wc)
    gw_name = "grad_variances" if problem.weight_kind == "variance" else "grad_precisions"
    paths = {"": None}
    if getattr(b, "reuses_output", False):
        paths[" (output=)"] = c
    for suffix, output in paths.items():
        gm, gw = run_adjoint(b, problem, g, output)
        results["grad_means" + suffix] = Comparison.of(gm, rgm, prec * abs_wv)
        if rgw is not None:
            results[gw_name + suffix] = Comparison.of(
                gw, rgw, mag.sum(axis=(0, 1)) if problem.global_weights else mag)
    if getattr(b, "means_only_adjoint", False):
        gm, gw = run_adjoint(b, problem, g, weight_grad=False)
        if gw is not None:
            raise AssertionError(f"backend {b.name!r}: the means-only adjoint "
                                 f"(weight_grad=False) returned a weight gradient")
        results["grad_means (weight_grad=False)"] = Comparison.of(gm, rgm, prec * abs_wv)
    return VerifyReport(backend=b.name, dtype=dtype, rtol=tol, results=results)

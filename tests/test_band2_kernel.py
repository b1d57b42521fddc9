"""The k <= 2 kernel (mlpgx/_ext/mlpgx_band2.h) against the general kernel.

Window sets whose windows reach at most one frame to each side (DELTA and
every 3-tap set) run on a kernel of their own; the grid of
test_against_reference.py checks it against the scipy.sparse reference.  Here
the two compiled kernels are run on the same inputs, in every mode, weight
form, boundary rule and dtype, and must agree to rounding; and the k <= 2
kernel must be the one that runs where it applies.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.linalg import LinAlgError

import mlpgx
from mlpgx.backends import cython as cython_backend
from mlpgx.windows import DELTA, DELTA1, as_windows, regression

from test_against_reference import make_weights

BAND2_SETS = {
    "static": as_windows([[1]]),
    "delta1": DELTA1,
    "delta": DELTA,   # exactly DELTA: the clones with literal coefficients
    # a zero-centre window 1 that is not DELTA's: the clones that read them
    "delta-scaled": as_windows([[1], [-1, 0, 1], [1, -2, 1]]),
    "backward": as_windows([(0, 0, [1]), (1, 0, [-1, 1])]),
    "forward": as_windows([(0, 0, [1]), (0, 1, [-1, 1]), (1, 1, [0.2, -0.7, 0.4])]),
    "four": as_windows([[1], [-0.5, 0, 0.5], [1, -2, 1], [0.25, 0.5, -0.1]]),
    # window 1 without a zero centre: the clones that keep every term
    "four-accel-first": as_windows([[1], [1, -2, 1], [-0.5, 0, 0.5], [0.2, 0.3, 0.1]]),
}
GENERAL_SETS = {
    "right2": as_windows([(0, 0, [1]), (0, 2, [0.3, -0.2, 0.5])]),
    "wide9": regression([4, 4]),
    "five": as_windows([[1]] + [[-0.5, 0, 0.5]] * 4),   # more windows than it takes
}
WEIGHT_FORMS = ["per-frame", "global", "precisions", "unit", "inf"]
TOL = {np.float64: 1e-13, np.float32: 2e-6}


@pytest.fixture
def solver():
    """The solver build in use, restored to its default kernel choice."""
    mod = cython_backend._solver
    saved = mod.USE_BAND2
    yield mod
    mod.USE_BAND2 = saved


def _kernels_used(monkeypatch, solver):
    used = []
    real = solver.run

    def recording(*args, **kwargs):
        kernel, results_finite = real(*args, **kwargs)
        used.append(kernel)
        return kernel, results_finite

    monkeypatch.setattr(solver, "run", recording)
    return used


@pytest.mark.parametrize("name", BAND2_SETS)
def test_applies_to_one_frame_windows(name, solver):
    assert solver.band2_applies(BAND2_SETS[name])


@pytest.mark.parametrize("name", GENERAL_SETS)
def test_not_for_wider_windows(name, solver):
    assert not solver.band2_applies(GENERAL_SETS[name])


def test_the_kernel_that_runs(monkeypatch, solver, rng):
    used = _kernels_used(monkeypatch, solver)
    x = rng.standard_normal((20, 12))
    mlpgx.mlpg(x, windows=DELTA)
    mlpgx.mlpg(x, windows=GENERAL_SETS["wide9"])
    mlpgx.mlpg_adjoint(rng.standard_normal((20, 4)), x, np.ones_like(x), windows=DELTA)
    mlpgx.mlpg_adjoint(rng.standard_normal((20, 4)), x, windows=DELTA,
                       output=mlpgx.mlpg(x, windows=DELTA))
    mlpgx.mlpg_adjoint(rng.standard_normal((20, 4)), x, np.ones_like(x), windows=DELTA,
                       weight_grad=False)
    mlpgx.mlpg_adjoint(rng.standard_normal((20, 4)), x, np.ones_like(x),
                       windows=GENERAL_SETS["wide9"], weight_grad=False)
    solver.USE_BAND2 = False
    mlpgx.mlpg(x, windows=DELTA)
    assert used == ["band2", "general", "band2", "band2", "band2", "band2", "general",
                    "general"]


def _both(solver, fn):
    out = []
    for flag in (True, False):
        solver.USE_BAND2 = flag
        out.append(fn())
    return out


def _close(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= TOL[dtype] * scale, np.abs(a - b).max() / scale


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii", "none"])
@pytest.mark.parametrize("form", WEIGHT_FORMS)
@pytest.mark.parametrize("name", BAND2_SETS)
def test_agrees_with_general_kernel(name, form, boundary, dtype, solver, rng):
    windows = BAND2_SETS[name]
    L = len(windows)
    for B, T, D in [(1, 1, 1), (3, 2, 5), (3, 9, 70), (2, 40, 3)]:
        means = rng.standard_normal((B, T, L * D)).astype(dtype)
        wkw = make_weights(rng, form, (B, T, L * D), L, D, dtype)
        lengths = rng.integers(0, T + 1, B)
        lengths[0] = T
        g = rng.standard_normal((B, T, D)).astype(dtype)
        kw = dict(windows=windows, lengths=lengths, boundary=boundary, num_threads=2)
        c = _both(solver, lambda: mlpgx.mlpg(means, **kw, **wkw))
        _close(c[0], c[1], dtype)
        assert c[0].dtype == dtype
        assert not np.any(c[0][1:][np.arange(T)[None, :] >= lengths[1:, None]])
        adj = _both(solver, lambda: mlpgx.mlpg_adjoint(g, means, **kw, **wkw))
        # and given the forward's output (the padding of c[1] is never read)
        c_padded = c[0].copy()
        c_padded[np.arange(T)[None, :] >= lengths[:, None]] = np.nan
        adj_o = _both(solver, lambda: mlpgx.mlpg_adjoint(g, means, **kw, **wkw, output=c_padded,
                                                         check_finite=False))
        for got, want in zip(adj[0] + adj_o[0] + adj_o[1], adj[1] * 3):
            if want is None:
                assert got is None
                continue
            assert np.all(np.isfinite(got))
            _close(got, want, dtype)
        # the means-only adjoint (mode "adjoint_means"), means NaN: not read
        nan_means = np.full_like(means, np.nan)
        adj_m = _both(solver, lambda: mlpgx.mlpg_adjoint(g, nan_means, **kw, **wkw,
                                                         weight_grad=False))
        for got in (adj_m[0], adj_m[1]):
            assert got[1] is None and np.all(np.isfinite(got[0]))
            _close(got[0], adj[1][0], dtype)
        if "precisions" in wkw or "variances" in wkw:
            rhs_kw = dict(wkw)
            x = _both(solver, lambda: mlpgx.mlpg_solve(g, **kw, **rhs_kw))
            _close(x[0], x[1], dtype)


def test_same_error_as_general_kernel(solver, rng):
    """A singular k <= 2 system is reported with the frame and dimension."""
    T, D = 12, 4
    means = rng.standard_normal((T, 3 * D))
    prec = np.ones((T, 3 * D))
    prec[4:7, [3, D + 3, 2 * D + 3]] = 0.0   # nothing touches frame 5, dimension 3
    errors = []
    for flag in (True, False):
        solver.USE_BAND2 = flag
        with pytest.raises(LinAlgError) as info:
            mlpgx.mlpg(means, precisions=prec)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert "t=5" in errors[0] and "d=3" in errors[0]


def test_arctic_features(solver):
    """Real data (arctic_a0001 mgc with Δ, Δ²): the kernels agree to rounding."""
    from mlpgx.data import MGC, load_arctic_a0001
    feats = np.ascontiguousarray(load_arctic_a0001()[:, MGC], dtype=np.float64)
    variances = np.broadcast_to(np.var(feats, axis=0) + 1e-3, feats.shape)
    noisy = feats + 0.1 * np.sqrt(variances) * np.random.default_rng(0).standard_normal(feats.shape)
    c = _both(solver, lambda: mlpgx.mlpg(noisy, variances))
    _close(c[0], c[1], np.float64)

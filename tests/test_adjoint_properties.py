"""Properties of the adjoint, independent of the reference's formulas.

* dot-product tests: ``mlpg`` is linear in the means, so
  ``<mlpg(dmu), g> == <dmu, mlpg_adjoint(g)[0]>``; ``mlpg_solve`` is
  symmetric, ``<solve(a), b> == <a, solve(b)>``;
* central finite differences of ``sum(g * mlpg(...))`` w.r.t. means,
  variances (per frame and global) and precisions;
* exact zeros of the gradients at frames the boundary rule drops and at
  ``+inf`` variances;
* hypothesis: random windows, shapes, lengths and boundary rules, backend ==
  reference (including who raises ``LinAlgError``).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlpgx
from mlpgx.windows import DELTA, DELTA1, Window, WindowSet, as_windows, regression

from conftest import to_backend, to_numpy

BOUNDARIES = ["per-window", "nnmnkwii", "none"]
WINDOWS = {
    "delta": DELTA,
    "asym": as_windows([(0, 0, [1]), (1, 0, [-1, 1]), (0, 2, [0.3, -0.2, 0.5])]),
    "wide5": regression([2, 2]),
}


def _call(fn, backend, *arrays, **kw):
    """``fn`` on backend arrays, result(s) back as NumPy."""
    conv = {k: to_backend(v, backend) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    out = fn(*(to_backend(a, backend) for a in arrays), backend=backend, **conv)
    if isinstance(out, tuple):
        return tuple(to_numpy(o) for o in out)
    return to_numpy(out)


def _assert_dot_equal(lhs, rhs, scale, rtol=1e-12):
    """``|lhs - rhs| <= rtol * scale``, ``scale`` the sum of the absolute
    terms of the inner product (its natural magnitude)."""
    assert abs(lhs - rhs) <= rtol * scale, (lhs, rhs, abs(lhs - rhs) / scale)


# --------------------------------------------------------------------------
# dot-product tests
# --------------------------------------------------------------------------

@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("wname", list(WINDOWS))
def test_dot_product_means(backend, wname, boundary, rng):
    windows = WINDOWS[wname]
    L = len(windows)
    for shape, lengths in [((40, 3), None), ((3, 25, 2), [25, 11, 0]), ((1, 1), None)]:
        T, D = shape[-2], shape[-1]
        mshape = shape[:-1] + (L * D,)
        var = rng.uniform(0.5, 2.0, mshape)
        mu = rng.standard_normal(mshape)
        dmu = rng.standard_normal(mshape)
        g = rng.standard_normal(shape)
        kw = dict(windows=windows, lengths=lengths, boundary=boundary)
        c = _call(mlpgx.mlpg, backend, dmu, var, **kw)
        gm, _ = _call(mlpgx.mlpg_adjoint, backend, g, mu, var, **kw)
        _assert_dot_equal(np.vdot(c, g), np.vdot(dmu, gm),
                          max(np.vdot(np.abs(c), np.abs(g)), np.vdot(np.abs(dmu), np.abs(gm))))
        # mlpg is linear in the means
        c2 = _call(mlpgx.mlpg, backend, 2.0 * dmu - 3.0 * mu, var, **kw)
        cm = _call(mlpgx.mlpg, backend, mu, var, **kw)
        np.testing.assert_allclose(c2, 2.0 * c - 3.0 * cm, rtol=0,
                                   atol=1e-12 * (np.abs(c).max() + np.abs(cm).max() + 1e-300) * 5)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("wname", list(WINDOWS))
@pytest.mark.parametrize("form", ["variances", "global", "precisions", "unit"])
def test_solve_symmetric(backend, wname, boundary, form, rng):
    windows = WINDOWS[wname]
    L = len(windows)
    B, T, D = 2, 30, 3
    lengths = [T, 17]
    if form == "variances":
        kw = {"variances": rng.uniform(0.5, 2.0, (B, T, L * D))}
    elif form == "global":
        kw = {"variances": rng.uniform(0.5, 2.0, L * D)}
    elif form == "precisions":
        p = rng.uniform(0.5, 2.0, (B, T, L * D))
        p[..., D:][rng.random((B, T, (L - 1) * D)) < 0.3] = 0.0
        kw = {"precisions": p}
    else:
        kw = {}
    a = rng.standard_normal((B, T, D))
    b = rng.standard_normal((B, T, D))
    common = dict(windows=windows, lengths=lengths, boundary=boundary, **kw)
    xa = _call(mlpgx.mlpg_solve, backend, a, **common)
    xb = _call(mlpgx.mlpg_solve, backend, b, **common)
    # padded entries of the rhs are ignored, so compare on the valid frames
    mask = np.arange(T)[None, :, None] < np.asarray(lengths)[:, None, None]
    a, b = a * mask, b * mask
    _assert_dot_equal(np.vdot(xa, b), np.vdot(a, xb),
                      max(np.vdot(np.abs(xa), np.abs(b)), np.vdot(np.abs(a), np.abs(xb))))


# --------------------------------------------------------------------------
# finite differences
# --------------------------------------------------------------------------

def _fd_case(rng, windows, boundary, form, lengths, backend, n_picks=5):
    L = len(windows)
    B, T, D = 2, 12, 2
    mu = rng.standard_normal((B, T, L * D))
    g = rng.standard_normal((B, T, D))
    if form == "global":
        w = rng.uniform(0.5, 2.0, L * D)
    else:
        w = rng.uniform(0.5, 2.0, (B, T, L * D))
    wkey = "precisions" if form == "precisions" else "variances"
    kw = dict(windows=windows, lengths=lengths, boundary=boundary)

    def f(mu_, w_):
        c = _call(mlpgx.mlpg, backend, mu_, **{wkey: w_}, **kw)
        return float(np.sum(g * c))

    gm, gw = _call(mlpgx.mlpg_adjoint, backend, g, mu, **{wkey: w}, **kw)
    assert gw.shape == w.shape

    def central(x, idx, which):
        h = 1e-6 * max(1.0, abs(x[idx]))
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        if which == "mu":
            return (f(xp, w) - f(xm, w)) / (2 * h)
        return (f(mu, xp) - f(mu, xm)) / (2 * h)

    # truncation error ~h^2, rounding error ~eps |f| / h: ~1e-9 of the
    # gradient's magnitude; allow 1e-6 of it
    for arr, grad, which in [(mu, gm, "mu"), (w, gw, "w")]:
        scale = np.abs(grad).max()
        assert scale > 0
        flat = rng.choice(arr.size, size=min(n_picks, arr.size), replace=False)
        if grad.ndim == 3:  # always probe one frame beyond the second length
            flat = np.append(flat, np.ravel_multi_index((1, lengths[1], 0), arr.shape))
        for k in flat:
            idx = np.unravel_index(k, arr.shape)
            fd = central(arr, idx, which)
            assert abs(fd - grad[idx]) <= 1e-6 * scale, (which, idx, fd, grad[idx])


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("wname", list(WINDOWS))
@pytest.mark.parametrize("form", ["variances", "global", "precisions"])
def test_finite_differences(backend, wname, boundary, form, rng):
    _fd_case(rng, WINDOWS[wname], boundary, form, [12, 7], backend)


# --------------------------------------------------------------------------
# exact zeros where the boundary rule drops a window, and at +inf variances
# --------------------------------------------------------------------------

def _dropped_mask(windows, boundary, n, T):
    """``(T, L)`` bool: window l's precision is forced to 0 at frame t (or the
    frame does not exist), derived from the documented rules."""
    L = len(windows)
    t = np.arange(T)
    out = np.zeros((T, L), dtype=bool)
    K = max(max(w.left, w.right) for w in windows)
    for l, w in enumerate(windows):
        if l == 0 or boundary == "none":
            drop = np.zeros(T, dtype=bool)
        elif boundary == "per-window":
            drop = (t - w.left < 0) | (t + w.right >= n)
        else:
            drop = (t < K) | (t >= n - K)
        out[:, l] = drop | (t >= n)
    return out


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("wname", list(WINDOWS))
def test_gradients_zero_at_dropped_frames(backend, wname, boundary, rng):
    windows = WINDOWS[wname]
    L, D, T = len(windows), 3, 15
    lengths = [T, 9]
    mu = rng.standard_normal((2, T, L * D))
    var = rng.uniform(0.5, 2.0, mu.shape)
    g = rng.standard_normal((2, T, D))
    gm, gv = _call(mlpgx.mlpg_adjoint, backend, g, mu, var, windows=windows,
                   lengths=lengths, boundary=boundary)
    for b, n in enumerate(lengths):
        drop = np.repeat(_dropped_mask(windows, boundary, n, T), D, axis=1)  # (T, L*D)
        assert np.all(gm[b][drop] == 0), f"grad_means not 0 at dropped frames of sequence {b}"
        assert np.all(gv[b][drop] == 0), f"grad_variances not 0 at dropped frames of sequence {b}"
        keep = ~drop
        keep[:, :D] &= np.arange(T)[:, None] < n
        # elsewhere the gradients are generically non-zero
        assert np.count_nonzero(gm[b][keep]) == keep.sum()


def test_dropped_frames_explicit(backend, rng):
    """The documented examples: per-window DELTA drops the dynamic columns at
    t = 0 and T - 1; nnmnkwii with a width-5 window the first/last 2 frames."""
    T, D = 10, 2
    g = rng.standard_normal((T, D))
    mu = rng.standard_normal((T, 3 * D))
    var = rng.uniform(0.5, 2.0, mu.shape)
    gm, gv = _call(mlpgx.mlpg_adjoint, backend, g, mu, var, boundary="per-window")
    for a in (gm, gv):
        assert np.all(a[[0, T - 1], D:] == 0)
        assert np.all(a[1:T - 1, D:] != 0)
        assert np.all(a[:, :D] != 0)
    w5 = regression([2, 2])
    gm, gv = _call(mlpgx.mlpg_adjoint, backend, g, mu, var, windows=w5, boundary="nnmnkwii")
    for a in (gm, gv):
        assert np.all(a[[0, 1, T - 2, T - 1], D:] == 0)
        assert np.all(a[2:T - 2, D:] != 0)
        assert np.all(a[:, :D] != 0)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_inf_variance_gradients_zero(backend, boundary, rng):
    T, D, L = 20, 3, 3
    mu = rng.standard_normal((T, L * D))
    var = rng.uniform(0.5, 2.0, mu.shape)
    hole = np.zeros(mu.shape, dtype=bool)
    hole[:, D:] = rng.random((T, (L - 1) * D)) < 0.4
    var[hole] = np.inf
    g = rng.standard_normal((T, D))
    gm, gv = _call(mlpgx.mlpg_adjoint, backend, g, mu, var, boundary=boundary)
    assert np.all(gv[hole] == 0)
    assert np.all(gm[hole] == 0)
    assert np.all(np.isfinite(gv)) and np.all(np.isfinite(gm))
    # +inf variance is the same as precision 0
    prec = np.where(hole, 0.0, 1.0 / var)
    gm_p, gp = _call(mlpgx.mlpg_adjoint, backend, g, mu, precisions=prec, boundary=boundary)
    np.testing.assert_allclose(gm_p, gm, rtol=1e-12, atol=1e-14)
    # and dL/dvar = -p^2 dL/dp where p > 0
    np.testing.assert_allclose(gv[~hole], -(prec ** 2 * gp)[~hole], rtol=1e-10,
                               atol=1e-13 * np.abs(gv).max())


# --------------------------------------------------------------------------
# hypothesis: random windows and shapes, backend == reference
# --------------------------------------------------------------------------

@st.composite
def window_sets(draw):
    n_dyn = draw(st.integers(0, 3))
    wins = [Window(0, 0, (1.0,))]
    for _ in range(n_dyn):
        left = draw(st.integers(0, 3))
        right = draw(st.integers(0, 3))
        coeffs = draw(st.lists(st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False,
                                         allow_subnormal=False).map(lambda v: round(v, 3)),
                               min_size=left + right + 1, max_size=left + right + 1))
        if not any(coeffs):
            coeffs[0] = 1.0
        wins.append(Window(left, right, tuple(coeffs)))
    return WindowSet(wins)


@st.composite
def problems(draw):
    windows = draw(window_sets())
    L = len(windows)
    T = draw(st.integers(1, 40))
    D = draw(st.integers(1, 4))
    batched = draw(st.booleans())
    B = draw(st.integers(1, 3)) if batched else 1
    lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B)) if batched else None
    boundary = draw(st.sampled_from(BOUNDARIES))
    form = draw(st.sampled_from(["variances", "global", "precisions", "unit"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return windows, T, D, B, batched, lengths, boundary, form, seed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(problems())
def test_random_problems_match_reference(backend, case):
    windows, T, D, B, batched, lengths, boundary, form, seed = case
    rng = np.random.default_rng(seed)
    L = len(windows)
    shape = (B, T, L * D) if batched else (T, L * D)
    means = rng.standard_normal(shape)
    if form == "variances":
        kw = {"variances": rng.uniform(0.1, 10.0, shape)}
    elif form == "global":
        kw = {"variances": rng.uniform(0.1, 10.0, L * D)}
    elif form == "precisions":
        kw = {"precisions": 1.0 / rng.uniform(0.1, 10.0, shape)}
    else:
        kw = {}
    common = dict(windows=windows, lengths=lengths, boundary=boundary, **kw)

    def outcome(fn):
        try:
            return fn(), None
        except np.linalg.LinAlgError as exc:
            return None, exc

    rep, err = outcome(lambda: mlpgx.verify(means, backend=backend, rtol=1e-9, **common))
    ref, ref_err = outcome(lambda: mlpgx.mlpg(means, backend="reference", **common))
    out, out_err = outcome(lambda: mlpgx.mlpg(means, backend=backend, **common))
    assert (ref_err is None) == (out_err is None), (ref_err, out_err)
    if ref_err is None:
        assert err is None, err
        assert rep.passed, str(rep)
        rhs = rng.standard_normal(shape[:-1] + (D,))
        x = mlpgx.mlpg_solve(rhs, backend=backend, **common)
        x_ref = mlpgx.mlpg_solve(rhs, backend="reference", **common)
        from mlpgx._verify import Comparison
        cmp = Comparison.of(x, x_ref, np.max(np.abs(x_ref), initial=0.0))
        assert cmp.max_rel <= 1e-9, cmp


# --------------------------------------------------------------------------
# singular systems: every backend and the reference raise LinAlgError
# --------------------------------------------------------------------------

def _singular_cases():
    T = 10
    rng = np.random.default_rng(3)
    cases = []
    var = np.ones((T, 1))
    var[3] = np.inf        # static only: R[3, 3] = 0
    cases.append(("static-inf-frame", rng.standard_normal((T, 1)),
                  dict(variances=var, windows=[[1]])))
    cases.append(("T1-zero-precisions", rng.standard_normal((1, 3)),
                  dict(precisions=np.zeros((1, 3)))))
    for boundary in ("per-window", "nnmnkwii"):
        # no static constraint at all: constants are in the null space of
        # every delta / delta-delta row that the rule keeps, R 1 = 0 exactly
        var = np.ones((T, 3))
        var[:, 0] = np.inf
        cases.append((f"delta-no-static-{boundary}", rng.standard_normal((T, 3)),
                      dict(variances=var, boundary=boundary)))
        p = np.ones((T, 2))
        p[:, 0] = 0.0
        cases.append((f"delta1-no-static-{boundary}", rng.standard_normal((T, 2)),
                      dict(precisions=p, windows="delta1", boundary=boundary)))
    return cases


def _check_raises(name, case):
    _, means, kw = case
    D = means.shape[1] // len(as_windows(kw.get("windows", DELTA)))
    g = np.ones((means.shape[0], D))
    with pytest.raises(np.linalg.LinAlgError):
        mlpgx.mlpg(means, backend=name, **kw)
    with pytest.raises(np.linalg.LinAlgError):
        mlpgx.mlpg_adjoint(g, means, backend=name, **kw)
    with pytest.raises(np.linalg.LinAlgError):
        mlpgx.mlpg_solve(g, backend=name, **kw)


@pytest.mark.parametrize("case", _singular_cases(), ids=lambda c: c[0])
def test_singular_system_raises(backend, case):
    """R is exactly singular: the documented contract is LinAlgError
    (forward, adjoint and solve)."""
    _check_raises(backend, case)


@pytest.mark.parametrize("case", _singular_cases(), ids=lambda c: c[0])
def test_singular_system_raises_reference(case):
    """The ground truth must agree with the backends on singular systems
    (the hypothesis test above relies on it: who raises must match)."""
    _check_raises("reference", case)


def test_nonsingular_without_static_at_one_frame(backend, rng):
    """Dropping the static constraint at one frame keeps R definite: no error,
    and the backend matches the reference."""
    T = 10
    means = rng.standard_normal((T, 3))
    var = np.ones((T, 3))
    var[0, 0] = np.inf
    for boundary in BOUNDARIES:
        rep = mlpgx.verify(means, var, backend=backend, boundary=boundary, rtol=1e-12)
        assert rep.passed, str(rep)

"""GV-constrained generation (:mod:`mlpgx.gv`) against the plain reference
(:mod:`mlpgx._gv_reference`: scipy.sparse + ``trust-exact``), its invariants
and its input checks."""
from __future__ import annotations

import doctest
import warnings
import zlib

import numpy as np
import pytest

import mlpgx
import mlpgx.gv
from mlpgx._gv_reference import gradient_reference, mlpg_gv_reference
from mlpgx.gv import GVInfo, mlpg_gv

WINDOWS = {
    "delta": mlpgx.windows.DELTA,
    "delta1": mlpgx.windows.DELTA1,
    "regression-2-1": [2, 1],
    "hts-even": [[1.0], [-1.0, 1.0, 0.0], [1.0, -2.0, 1.0]],
}


def smooth_case(B=2, T=36, D=2, windows="delta", seed=0, seg=5, ratio=2.0):
    """Step-wise ("HMM state") means: MLPG is over-smoothed, the target GV is
    ``ratio`` times the variance of the step sequence."""
    rng = np.random.default_rng(seed)
    L = len(mlpgx.windows.as_windows(WINDOWS.get(windows, windows)))
    static = np.repeat(rng.normal(size=(B, -(-T // seg), D)), seg, axis=1)[:, :T]
    means = np.concatenate([static, 0.1 * rng.normal(size=(B, T, (L - 1) * D))], axis=2)
    variances = rng.uniform(0.5, 2.0, size=means.shape)
    gv_mean = ratio * static.var(axis=1)
    return means, variances, gv_mean


def _rel(a, b):
    return np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-300)


@pytest.mark.parametrize("windows", sorted(WINDOWS))
@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii", "none"])
def test_matches_reference(windows, boundary):
    wins = WINDOWS[windows]
    means, var, mv = smooth_case(windows=windows, seed=zlib.crc32((windows + boundary).encode()) % 1000)
    kw = dict(lengths=[36, 27], boundary=boundary)
    c, info = mlpg_gv(means, var, wins, mv, [1e-3, 1e-2], return_info=True, **kw)
    cr, Jr = mlpg_gv_reference(means, var, wins, mv, [1e-3, 1e-2], **kw)
    assert c.dtype == np.float64 and c.shape == (2, 36, 2)
    assert _rel(c, cr) < 1e-6
    assert _rel(info.objective[-1], Jr) < 1e-9
    assert info.converged.all()
    assert np.all(c[1, 27:] == 0)
    # the gradient of J (written plainly) vanishes at the returned trajectory
    gr = gradient_reference(c, means, var, wins, mv, [1e-3, 1e-2], **kw)
    assert gr.max() < 1e-9
    assert np.allclose(gr, info.grad_norm, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("gv_var", [1e-5, 1e-2, 1.0, 100.0])
@pytest.mark.parametrize("ratio", [0.3, 1.5, 4.0])
def test_matches_reference_across_weights(gv_var, ratio):
    """Strong and weak GV terms, targets below and above the MLPG variance
    (the banded part of the Hessian is indefinite in some of these)."""
    means, var, mv = smooth_case(B=1, T=30, D=2, seed=7, ratio=ratio)
    c, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=gv_var * mv ** 2, return_info=True)
    cr, Jr = mlpg_gv_reference(means, var, gv_mean=mv, gv_variance=gv_var * mv ** 2)
    assert _rel(c, cr) < 1e-6
    assert _rel(info.objective[-1], Jr) < 1e-9
    assert info.converged.all()


def test_ml_weight_and_gv_weight():
    means, var, mv = smooth_case(B=1, T=30, D=2, seed=3)
    for kw in [dict(ml_weight=0.5), dict(gv_weight=0.1), dict(ml_weight=2.0, gv_weight=3.0)]:
        c, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2], return_info=True,
                          **kw)
        cr, Jr = mlpg_gv_reference(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2], **kw)
        assert _rel(c, cr) < 1e-6 and _rel(info.objective[-1], Jr) < 1e-9
        if "ml_weight" in kw:
            assert np.all(info.ml_weight == kw["ml_weight"])
    _, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2], return_info=True)
    assert np.allclose(info.ml_weight, 1.0 / (3 * 30))          # HTS: 1 / (L N)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_and_unbatched(dtype):
    means, var, mv = smooth_case(B=1, T=40, D=3, seed=11)
    m1, v1 = means[0].astype(dtype), var[0].astype(dtype)
    c, info = mlpg_gv(m1, v1, gv_mean=mv[0], gv_variance=np.full(3, 1e-2), return_info=True)
    cr, Jr = mlpg_gv_reference(m1, v1, gv_mean=mv[0], gv_variance=np.full(3, 1e-2))
    assert c.dtype == dtype and c.shape == (40, 3)
    tol = 1e-6 if dtype == np.float64 else 1e-5
    assert _rel(c, cr[0]) < tol
    assert info.iterations.shape == (3,) and info.objective.ndim == 2
    assert info.objective.shape[1] == 3 and info.gv.shape == (3,)
    assert _rel(info.objective[-1], Jr[0]) < (1e-9 if dtype == np.float64 else 1e-6)
    assert isinstance(info, GVInfo)


def test_global_variances_precisions_and_unit():
    means, var, mv = smooth_case(B=2, T=30, D=2, seed=5)
    gvar = var[0, 0]                                              # (L*D,)
    c1 = mlpg_gv(means, gvar, gv_mean=mv, gv_variance=[1e-2, 1e-2])
    c2 = mlpg_gv(means, precisions=1.0 / gvar, gv_mean=mv, gv_variance=[1e-2, 1e-2])
    cr, _ = mlpg_gv_reference(means, np.broadcast_to(gvar, means.shape), gv_mean=mv,
                              gv_variance=[1e-2, 1e-2])
    assert _rel(c1, cr) < 1e-6 and _rel(c2, cr) < 1e-6
    cu = mlpg_gv(means, gv_mean=mv, gv_variance=[1e-2, 1e-2])
    cur, _ = mlpg_gv_reference(means, gv_mean=mv, gv_variance=[1e-2, 1e-2])
    assert _rel(cu, cur) < 1e-6


def test_gv_weight_zero_is_mlpg():
    means, var, mv = smooth_case(seed=2)
    for boundary in ["per-window", "nnmnkwii"]:
        c, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2], gv_weight=0.0,
                          lengths=[36, 20], boundary=boundary, return_info=True)
        ref = mlpgx.mlpg(means, var, lengths=[36, 20], boundary=boundary)
        np.testing.assert_allclose(c, ref, rtol=1e-12, atol=1e-12)
        assert np.all(info.iterations == 0) and info.converged.all()


def test_target_equal_to_mlpg_variance_stays():
    means, var, _ = smooth_case(seed=4)
    ref = mlpgx.mlpg(means, var, lengths=[36, 30])
    mv = np.stack([ref[0].var(axis=0), ref[1, :30].var(axis=0)])
    c, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-3, 1e-3], lengths=[36, 30],
                      return_info=True)
    np.testing.assert_allclose(c, ref, rtol=1e-10, atol=1e-12)
    assert info.converged.all() and np.all(info.iterations <= 1)


def test_objective_is_monotone_and_reaches_target():
    means, var, mv = smooth_case(B=3, T=60, D=4, seed=9, ratio=3.0)
    c, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=1e-4 * mv ** 2, lengths=[60, 45, 33],
                      return_info=True)
    assert np.all(np.diff(info.objective, axis=0) >= 0)
    assert info.objective.shape[0] == info.iterations.max() + 1
    assert info.converged.all()
    v = np.stack([c[0].var(0), c[1, :45].var(0), c[2, :33].var(0)])
    np.testing.assert_allclose(v, info.gv, rtol=1e-10)
    np.testing.assert_allclose(v, mv, rtol=1e-2)                  # strong GV: near target
    ml = mlpgx.mlpg(means, var, lengths=[60, 45, 33])
    vml = np.stack([ml[0].var(0), ml[1, :45].var(0), ml[2, :33].var(0)])
    assert np.all(vml < 0.9 * mv)                                   # MLPG was over-smoothed


def test_max_iter_zero_is_the_rescaled_start():
    means, var, mv = smooth_case(seed=6)
    c, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2], max_iter=0,
                      return_info=True)
    np.testing.assert_allclose(c.var(axis=1), mv, rtol=1e-10)
    ml = mlpgx.mlpg(means, var)
    np.testing.assert_allclose(c.mean(axis=1), ml.mean(axis=1), rtol=1e-10, atol=1e-12)
    assert info.objective.shape == (1, 2, 2) and not info.converged.any()


def test_fewer_than_two_frames_is_mlpg():
    means, var, mv = smooth_case(B=3, T=20, D=2, seed=8)
    lengths = [20, 1, 0]
    c, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-3, 1e-3], lengths=lengths,
                      return_info=True)
    ref = mlpgx.mlpg(means, var, lengths=lengths)
    np.testing.assert_allclose(c[1:], ref[1:], rtol=1e-12, atol=1e-14)
    assert np.all(info.iterations[1:] == 0) and info.converged.all()
    assert np.all(info.iterations[0] > 0)


@pytest.mark.parametrize("rule", ["hts", "sptk"])
@pytest.mark.parametrize("boundary", ["per-window", "none"])
def test_voiced_matches_reference(rule, boundary):
    means, var, mv = smooth_case(B=2, T=40, D=2, seed=12)
    rng = np.random.default_rng(1)
    voiced = rng.uniform(size=(2, 40, 2)) > 0.25
    voiced[:, 5:9] = False                              # an unvoiced run
    voiced[1, :, 1] = False
    voiced[1, 20, 1] = True                             # a single voiced frame: N = 1
    kw = dict(lengths=[40, 33], boundary=boundary, voiced=voiced, msd_rule=rule)
    c, info = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-3, 1e-2], return_info=True, **kw)
    cr, Jr = mlpg_gv_reference(means, var, gv_mean=mv, gv_variance=[1e-3, 1e-2], **kw)
    assert np.array_equal(np.isnan(c), np.isnan(cr))
    ok = ~np.isnan(cr)
    assert _rel(c[ok], cr[ok]) < 1e-6
    assert _rel(info.objective[-1], Jr) < 1e-9
    # v is taken over voiced frames
    sel = voiced[0, :, 0]
    np.testing.assert_allclose(c[0, sel, 0].var(), info.gv[0, 0], rtol=1e-10)
    assert np.all(c[1, 33:] == 0)
    assert info.iterations[1, 1] == 0
    # the plain MLPG result on the single-frame dimension
    ref = mlpgx.mlpg(means, var, lengths=[40, 33], boundary=boundary, voiced=voiced,
                     msd_rule=rule)
    np.testing.assert_allclose(c[1, 20, 1], ref[1, 20, 1], rtol=1e-10)
    c2 = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-3, 1e-2], unvoiced_value=-1.0, **kw)
    assert np.all(c2[~np.isnan(c)] == c[~np.isnan(c)]) and np.all(c2[np.isnan(c)] == -1.0)


def test_reference_backend_gives_the_same():
    means, var, mv = smooth_case(B=1, T=25, D=2, seed=13)
    a = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2])
    b = mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2], backend="reference")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_inputs_unmodified():
    means, var, mv = smooth_case(seed=14)
    copies = [x.copy() for x in (means, var, mv)]
    mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2])
    for x, y in zip((means, var, mv), copies):
        assert np.array_equal(x, y)


BAD = [
    (dict(gv_mean=None), ValueError, "gv_mean is required"),
    (dict(gv_variance=None), ValueError, "gv_variance is required"),
    (dict(gv_mean=[1.0]), ValueError, "gv_mean must have shape"),
    (dict(gv_mean=np.ones((3, 2))), ValueError, "gv_mean must have shape"),
    (dict(gv_mean=[-1.0, 1.0]), ValueError, "gv_mean must be >= 0"),
    (dict(gv_mean=[np.nan, 1.0]), ValueError, "gv_mean must be finite"),
    (dict(gv_mean=["a", "b"]), TypeError, "gv_mean must be a real array"),
    (dict(gv_variance=[0.0, 1.0]), ValueError, "gv_variance must be positive"),
    (dict(gv_variance=[1.0, -1.0]), ValueError, "gv_variance must be positive"),
    (dict(gv_variance=[np.inf, 1.0]), ValueError, "gv_variance must be finite"),
    (dict(gv_weight=-1.0), ValueError, "gv_weight must be >= 0"),
    (dict(gv_weight=np.nan), ValueError, "gv_weight must be finite"),
    (dict(gv_weight="1"), TypeError, "gv_weight must be a real number"),
    (dict(ml_weight=0.0), ValueError, "ml_weight must be positive"),
    (dict(ml_weight=-2.0), ValueError, "ml_weight must be positive"),
    (dict(max_iter=-1), ValueError, "max_iter must be >= 0"),
    (dict(max_iter=2.5), TypeError, "max_iter must be an int"),
    (dict(max_iter=True), TypeError, "max_iter must be an int"),
    (dict(tol=0.0), ValueError, "tol must be positive"),
    (dict(tol=-1e-3), ValueError, "tol must be positive"),
    (dict(tol=np.inf), ValueError, "tol must be finite"),
    (dict(unvoiced_value="x"), TypeError, "unvoiced_value must be a real number"),
    (dict(variances=-np.ones((2, 10, 6))), ValueError, "variances must be positive"),
    (dict(boundary="bad"), ValueError, "boundary must be one of"),
    (dict(lengths=[11, 3]), ValueError, "lengths must lie in"),
    (dict(msd_rule="bogus"), ValueError, "msd_rule must be one of"),   # (without voiced=)
    (dict(return_info="yes"), TypeError, "return_info must be a bool"),
]


@pytest.mark.parametrize("shape", [(0, 5, 6), (3, 0, 6), (0, 6)])
def test_empty_batch(shape):
    out, info = mlpg_gv(np.zeros(shape), np.ones(shape), gv_mean=np.ones(2),
                        gv_variance=np.ones(2), return_info=True)
    assert out.shape == shape[:-1] + (2,)


# Statistics far enough out that every backend's iteration overflows, at
# each place where it checks (the radial rescaling's cubic, the inner banded
# solves, the start point).  Milder ones (gv_mean 1e50 or gv_variance 1e-200
# with unit-scale means) sit on the edge: whether an iterate overflows there
# depends on the last bits of the solves, and the reference backend solves
# them (converged, or a finite result after max_iter), so they are not here.
@pytest.mark.parametrize("backend", ["reference", "cython"])
@pytest.mark.parametrize("kw", [dict(gv_mean=[1e100] * 2, gv_variance=[0.01] * 2),
                                dict(gv_mean=[0.5] * 2, gv_variance=[0.1] * 2, scale=1e150),
                                dict(gv_mean=[0.5] * 2, gv_variance=[1e-310] * 2),
                                dict(gv_mean=[0.5] * 2, gv_variance=[1.0] * 2, var=1e-307),
                                dict(gv_mean=[0.5] * 2, gv_variance=[1.0] * 2, var=1e-300,
                                     scale=1e100)])
def test_overflowing_iteration_names_the_arguments(kw, backend):
    # GV statistics (or means) whose iteration leaves the float64 range: a
    # ValueError naming them, not one about an internal right-hand side or
    # NumPy's eigvals, and no overflow warnings on the way
    if backend not in mlpgx.backends.available():
        pytest.skip(f"backend {backend!r} not built")
    kw = dict(kw)
    rng = np.random.default_rng(0)
    means = rng.normal(size=(30, 6)) * kw.pop("scale", 1.0)
    variances = rng.uniform(0.5, 2.0, size=(30, 6)) * kw.pop("var", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="GV iteration overflowed float64: gv_mean "
                                             "or the means .* gv_variance or the variances"):
            mlpg_gv(means, variances, backend=backend, **kw)


def test_iterates_beyond_float64_are_the_iterations_business():
    # The GV iteration's inner solves may overflow on extreme statistics; it
    # handles that itself (this one converges), so those solves must not
    # raise mlpg_solve's overflow error about its internal rhs and precisions
    means = np.random.default_rng(0).normal(size=(8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = mlpg_gv(means, np.full((8, 3), 1e50), gv_mean=[1.0], gv_variance=[1e-300],
                      max_iter=20)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.var(axis=0), 1.0, rtol=1e-6)


def test_float32_trajectory_beyond_its_range_raises():
    # float64 iterates that do not fit the float32 output: a ValueError, as
    # mlpgx.mlpg gives, not inf after a cast warning
    T = 8
    means = np.zeros((T, 3), np.float32)
    means[:, 1] = 3e38                       # deltas adding up beyond float32's range
    variances = np.ones((T, 3), np.float32)
    variances[:, 0] = 1e4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"mlpg_gv: output\[\d+, 0\] = .* is not finite: "
                                             r"the trajectory exceeds the range of float32"):
            mlpg_gv(means, variances, gv_mean=[1.0], gv_variance=[1.0], gv_weight=0.0)


@pytest.mark.parametrize("kw, exc, msg", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_input(kw, exc, msg):
    args = dict(means=np.random.default_rng(0).normal(size=(2, 10, 6)),
                variances=np.ones((2, 10, 6)), gv_mean=np.ones(2), gv_variance=np.ones(2))
    args.update(kw)
    with pytest.raises(exc, match=msg):
        mlpg_gv(**args)


def test_unbatched_rejects_batched_gv_stats():
    with pytest.raises(ValueError, match=r"gv_mean must have shape \(2,\)"):
        mlpg_gv(np.zeros((10, 6)), gv_mean=np.ones((1, 2)), gv_variance=np.ones(2))


def test_doctests():
    res = doctest.testmod(mlpgx.gv, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


def test_objective_of_each_iterate_increases():
    """``J`` evaluated plainly (the reference's formula) on the trajectory
    after ``k`` iterations never decreases in ``k`` and equals the history."""
    from mlpgx._gv_reference import _Dim

    means, var, mv = smooth_case(B=1, T=40, D=2, seed=21, ratio=4.0)
    gv_var = 1e-5 * mv[0] ** 2
    dims = [_Dim(means[0][:, [d, 2 + d, 4 + d]], 1.0 / var[0][:, [d, 2 + d, 4 + d]],
                 mlpgx.windows.DELTA, 40, "per-window", np.ones(40, bool), "hts", None,
                 mv[0, d], gv_var[d], 1.0) for d in range(2)]
    prev = None
    for k in range(8):
        c, info = mlpg_gv(means[0], var[0], gv_mean=mv[0], gv_variance=gv_var, max_iter=k,
                          return_info=True)
        J = np.array([dims[d].J(c[:, d]) for d in range(2)])
        np.testing.assert_allclose(info.objective[-1], J, rtol=1e-10)
        if prev is not None:
            assert np.all(J >= prev - 1e-12 * np.abs(prev))
        prev = J

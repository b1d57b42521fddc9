"""Bad, odd and edge-case input to the public functions, on every backend.

Every error case asserts the exception type *and* that the message names the
offending argument; every case runs on both built-in backends (the same bad
input must raise the same exception type everywhere) and, where it applies,
through all three public functions.  Inputs are passed read-only and compared
with copies afterwards: they must come back unmodified.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.linalg import LinAlgError

import mlpgx
from mlpgx._validate import SMALLEST_VARIANCE, usable_cpus
from mlpgx.windows import DELTA, as_windows

BACKENDS = ["cython", "reference"]
FUNCS = ["mlpg", "mlpg_adjoint", "mlpg_solve"]
MEANS_FUNCS = ["mlpg", "mlpg_adjoint"]          # the ones that take means

T, D, L = 8, 2, 3
LD = L * D


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FUNCS)
def func(request):
    return request.param


@pytest.fixture(params=MEANS_FUNCS)
def mfunc(request):
    return request.param


def _rng(seed=0):
    return np.random.default_rng(seed)


def _means(shape=(T, LD), seed=0, dtype=np.float64):
    return _rng(seed).normal(size=shape).astype(dtype)


def _variances(shape=(T, LD), seed=1, dtype=np.float64):
    return _rng(seed).uniform(0.5, 2.0, size=shape).astype(dtype)


def _readonly(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _n_windows(kw):
    try:
        return len(as_windows(kw.get("windows", DELTA)))
    except Exception:
        return L


def call(fn, means, variances=None, *, backend, grad=None, **kw):
    """Call public function ``fn`` ("mlpg", "mlpg_adjoint", "mlpg_solve").

    For the adjoint and the solve, ``grad`` (the upstream gradient or the
    right-hand side) defaults to ones shaped like the output implied by
    ``means``.  ``mlpg_solve`` ignores ``means`` except for that shape.
    """
    if grad is None and fn != "mlpg":
        m = np.asarray(means)
        grad = np.ones(m.shape[:-1] + (m.shape[-1] // _n_windows(kw),))
    if fn == "mlpg":
        return mlpgx.mlpg(means, variances, backend=backend, **kw)
    if fn == "mlpg_adjoint":
        return mlpgx.mlpg_adjoint(grad, means, variances, backend=backend, **kw)
    if fn == "mlpg_solve":
        return mlpgx.mlpg_solve(grad, variances, backend=backend, **kw)
    raise AssertionError(fn)


def expect_error(exc, match, fn, means, variances=None, *, backend, grad=None, **kw):
    """Assert ``fn`` raises ``exc`` matching ``match`` on read-only inputs,
    and that the inputs come back unmodified."""
    arrays = {"means": means, "variances": variances, "grad": grad,
              "precisions": kw.get("precisions")}
    copies = {k: (None if v is None else np.array(v, copy=True))
              for k, v in arrays.items() if isinstance(v, np.ndarray)}
    ro = {k: _readonly(v) for k, v in copies.items()}
    if "precisions" in ro:
        kw["precisions"] = ro["precisions"]
    with pytest.raises(exc, match=match) as info:
        call(fn, ro.get("means", means), ro.get("variances", variances), backend=backend,
             grad=ro.get("grad", grad), **kw)
    for k, v in ro.items():
        assert _same(v, copies[k]), f"{k} was modified"
    return info


def _same(a, b):
    if a.dtype.kind in "fc":
        return np.array_equal(a, b, equal_nan=True)
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.all(a == b))


def _outputs(res):
    """The arrays of a result (mlpg_adjoint returns a pair, maybe with None)."""
    if isinstance(res, tuple):
        return [r for r in res if r is not None]
    return [res]


# --------------------------------------------------------------------------
# NaN / inf means
# --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_means(backend, mfunc, bad):
    m = _means()
    m[3, 4] = bad
    info = expect_error(ValueError, "means", mfunc, m, _variances(), backend=backend)
    assert "finite" in str(info.value)
    assert re.search(r"means\[(0, )?3, 4\]", str(info.value)), str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_means_batched(backend, mfunc, bad):
    m = _means((2, T, LD))
    m[1, 5, 0] = bad
    info = expect_error(ValueError, "means", mfunc, m, backend=backend)
    assert "means[1, 5, 0]" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_finite_false_skips_scan(backend, mfunc, bad):
    m = _means()
    m[3, 4] = bad
    ro = _readonly(m)
    with np.errstate(all="ignore"):
        res = call(mfunc, ro, _variances(), backend=backend, check_finite=False)
    for r in _outputs(res):
        assert isinstance(r, np.ndarray)
    assert np.array_equal(ro, m, equal_nan=True)


@pytest.mark.parametrize("scans", ["compiled", "numpy"])
def test_overflowing_but_finite_precisions_accepted(scans, monkeypatch):
    # Without the compiled scans the one-pass check of the precisions is a
    # sum, which overflows on huge finite values: that must not raise.
    import mlpgx._validate as validate
    if scans == "numpy":
        monkeypatch.setattr(validate, "_solver", None)
    p = np.ones((T, LD))
    p[0, 0] = p[1, 0] = 1.5e308
    res = mlpgx.mlpg(np.zeros((T, LD)), precisions=p, backend="cython")
    assert np.all(np.isfinite(res))


@pytest.mark.parametrize("scans", ["compiled", "numpy"])
def test_overflowing_but_finite_means_accepted(backend, mfunc, scans, monkeypatch):
    # Without the compiled scans the finiteness checks (of the means, and of
    # the result) sum first; an overflowing sum of finite values must not be
    # reported as a non-finite mean or result.
    import mlpgx._validate as validate
    if scans == "numpy":
        monkeypatch.setattr(validate, "_solver", None)
    m = np.zeros((T, D))
    m[0, 0] = m[1, 0] = 1.5e308
    res = call(mfunc, m, backend=backend, windows="static")
    assert all(isinstance(r, np.ndarray) for r in _outputs(res))
    if mfunc == "mlpg":
        np.testing.assert_array_equal(res, m)


# --------------------------------------------------------------------------
# finite inputs whose arithmetic overflows
# --------------------------------------------------------------------------

def _overflowing(func, dtype, B=None):
    """Finite, valid inputs of ``func`` whose results overflow: ``(means,
    variances, grad, name of the non-finite result)``.  float64: a mean of
    1e200 with a variance of 1e-200 (p * mu = 1e400), a right-hand side of
    1e300 over precisions 1e-10, an upstream gradient of 1e300 over
    precisions 1e10 (grad_variances ~ p^2 W v); float32 (in range for the
    float64 arithmetic): a trajectory whose deltas of 3e38 add up beyond
    float32's range, and the same solve and gradient at 1e38."""
    lead = () if B is None else (B,)
    m = np.zeros(lead + (T, LD), dtype)
    v = np.ones(lead + (T, LD), dtype)
    g = np.ones(lead + (T, D), dtype)
    at = (Ellipsis, 3, 0)
    if func == "mlpg_solve":
        g[...] = 1e300 if dtype == np.float64 else 1e38
        v[...] = 1e10
        return m, v, g, "x"
    if func == "mlpg_adjoint":
        g[...] = 1e300 if dtype == np.float64 else 1e38
        m[...] = 1
        v[...] = 1e-10 if dtype == np.float64 else 1e-3
        return m, v, g, "grad_variances"
    if dtype == np.float64:
        m[at], v[at] = 1e200, 1e-200
    else:
        m[..., D:2 * D] = 3e38     # every delta, with a weak static stream
        v[..., :D] = 1e4
    return m, v, g, "output"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overflowing_arithmetic_raises(backend, func, dtype):
    # Each input is finite and valid, but the results are not representable:
    # one ValueError naming the result and the inputs, not inf/NaN.
    m, v, g, result = _overflowing(func, dtype)
    with np.errstate(all="raise"):   # (and no NumPy warning on the way)
        info = expect_error(ValueError, rf"^{result}\[\d+, \d+\] = .* is not finite although",
                            func, m, v, backend=backend, grad=g)
    msg = str(info.value)
    inputs = {"mlpg": "means and variances", "mlpg_solve": "rhs and variances",
              "mlpg_adjoint": "grad_output, means and variances"}[func]
    assert f"although {inputs} are" in msg and f"rescale {inputs}" in msg, msg
    assert ("range of float32" in msg) == (dtype == np.float32), msg
    # check_finite=False skips this scan too: the caller gets the values
    with np.errstate(all="ignore"):
        res = call(func, m, v, backend=backend, grad=g, check_finite=False)
    assert not all(np.isfinite(r).all() for r in _outputs(res))


def test_overflowing_arithmetic_names_the_sequence(backend, func):
    m, v, g, result = _overflowing(func, np.float64)
    ok_m, ok_v, ok_g = _means(), _variances(), np.ones((T, D))
    m, v, g = (np.stack([a, b]) for a, b in ((ok_m, m), (ok_v, v), (ok_g, g)))
    info = expect_error(ValueError, rf"^{result}\[1, \d+, \d+\] = ", func, m, v,
                        backend=backend, grad=g)
    assert "not finite" in str(info.value)


def test_overflow_in_padding_or_unvoiced_frames_is_ignored(backend, mfunc):
    # Frames that are never read (padding) or whose constraints the voicing
    # rule drops may hold extreme values; the unvoiced marker NaN is not an
    # overflow either.
    m, v, g, _ = _overflowing("mlpg", np.float64, B=2)
    lengths = [T, 3]                       # frame 3 of sequence 1 is padding
    m[0], v[0] = _means(), _variances()
    res = call(mfunc, m, v, backend=backend, grad=g, lengths=lengths)
    assert all(np.isfinite(r).all() for r in _outputs(res))
    m, v, g, _ = _overflowing("mlpg", np.float64)
    voiced = np.arange(T) != 3
    res = call(mfunc, m, v, backend=backend, grad=g, voiced=voiced)
    if mfunc == "mlpg":
        assert np.isnan(res[3]).all() and np.isfinite(np.delete(res, 3, axis=0)).all()
    else:
        assert all(np.isfinite(r).all() for r in _outputs(res))


@pytest.mark.parametrize("form", ["precisions", "global"])
def test_overflowing_gradient_of_weights_named(backend, form):
    g = np.full((T, D), 1e300)
    m = np.ones((T, LD))
    if form == "precisions":   # (W v ~ 1e305 times mu - W c ~ 1e10)
        info = expect_error(ValueError, r"^grad_precisions\[\d+, \d+\]", "mlpg_adjoint",
                            1e10 * m, backend=backend, grad=g,
                            precisions=np.full((T, LD), 1e-5))
        assert "although grad_output, means and precisions are" in str(info.value)
    else:   # the gradient of global variances: a sum over frames
        info = expect_error(ValueError, r"^grad_variances\[\d+\] = ", "mlpg_adjoint", m,
                            np.full(LD, 1e-10), backend=backend, grad=g)
        assert "although grad_output, means and variances are" in str(info.value)


@pytest.mark.parametrize("form", ["full", "global"])
def test_tiny_variances_have_representable_gradients(backend, form):
    # dL/dvar = -p^2 dL/dp with p = 1 / variance: p^2 alone overflows below
    # variances of ~1e-154, though the gradient (~p |g| |mu - W c|) does
    # not; it must come back finite, not as an overflow error, and match
    # -p^2 dL/dp evaluated in extended precision (dL/dp from precisions=)
    rng = _rng(3)
    m = rng.normal(size=(T, LD))
    var = (rng.uniform(0.5, 2.0, size=(T, LD)) if form == "full" else
           rng.uniform(0.5, 2.0, size=LD)) * 1e-160
    g = rng.normal(size=(T, D))
    gm, gv = call("mlpg_adjoint", m, var, backend=backend, grad=g)
    p = 1.0 / var
    gm_p, gp = call("mlpg_adjoint", m, backend=backend, grad=g, precisions=p)
    np.testing.assert_allclose(gm, gm_p, rtol=1e-12)
    want = -(p.astype(np.longdouble) ** 2) * gp.astype(np.longdouble)
    assert np.isfinite(gv).all() and np.abs(gv).max() > 1e150
    np.testing.assert_allclose(gv, want.astype(np.float64), rtol=1e-9,
                               atol=1e-12 * float(np.abs(want).max()))
    # with a zero upstream gradient every gradient is exactly 0
    gm0, gv0 = call("mlpg_adjoint", m, var, backend=backend, grad=np.zeros((T, D)))
    assert not gm0.any() and not gv0.any()


def test_no_warning_before_an_overflow_error(backend):
    # sums of global-weight gradients beyond float32 (and a voicing mask,
    # whose lowered problem has per-frame weights summed by the layer):
    # one ValueError, no NumPy warning first
    m = _means(dtype=np.float32)
    g = np.full((T, D), 3e38, np.float32)
    w = np.full(LD, 1e-25, np.float32)   # (terms ~1e63: even their sum's rounding overflows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kw in ({}, dict(voiced=np.arange(T) != 4)):
            with pytest.raises(ValueError, match=r"^grad_(means|variances)\[\d+(, \d+)*\] = "):
                mlpgx.mlpg_adjoint(g, m, w, backend=backend, **kw)


def test_overflowing_adjoint_given_output(backend):
    m, v, g, _ = _overflowing("mlpg_adjoint", np.float64)
    c = mlpgx.mlpg(m, v, backend=backend)
    info = expect_error(ValueError, r"^grad_variances\[", "mlpg_adjoint", m, v,
                        backend=backend, grad=g, output=c)
    assert "although grad_output, output, means and variances are" in str(info.value)


# --------------------------------------------------------------------------
# variances / precisions
# --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-1.0, 0.0, np.nan, -np.inf])
def test_bad_variances(backend, func, bad):
    v = _variances()
    v[3, 4] = bad
    v[6, 1] = -5.0   # a later bad value: the message must name the first
    info = expect_error(ValueError, "variances", func, _means(), v, backend=backend)
    msg = str(info.value)
    assert "positive" in msg
    assert re.search(r"variances\[(0, )?3, 4\]", msg), msg


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["full", "global"])
def test_variances_whose_precision_overflows(backend, func, dtype, form):
    # A positive variance below SMALLEST_VARIANCE (a subnormal) has a
    # reciprocal that overflows the dtype: rejected by name, for every
    # backend alike (the reference, in float64, could have taken it).
    smallest = SMALLEST_VARIANCE[np.dtype(dtype)]
    # (means below 1: in float64 the precision 1/smallest is near the
    # largest double, so p * mu would overflow for |mu| > 1)
    m = (0.1 * _means()).astype(dtype)
    v = _variances(dtype=dtype) if form == "full" else np.ones(LD, dtype)
    # (a static column: a dynamic window with precision 1e38 makes R singular
    # to rounding, as it would be in any arithmetic of this width)
    at = (3, 0) if form == "full" else (0,)
    v[at] = np.nextafter(smallest, dtype(0))
    g = np.ones((T, D), dtype)    # (a float64 right-hand side would make it a float64 solve)
    info = expect_error(ValueError, "variances", func, m, v, backend=backend, grad=g)
    assert f"variances{list(at)}" in str(info.value)
    assert "at least" in str(info.value) and "overflows" in str(info.value)
    # the smallest accepted one gives a finite answer that agrees with the reference
    v[at] = smallest
    # (grad_variances = -p^2 dL/dp is formed as -(p W v)(p (mu - W c)): p^2
    # alone would overflow float64 here, the gradient does not)
    res = call(func, m, v, backend=backend, grad=g)
    ref = call(func, m, v, backend="reference", grad=g)
    n = None
    for r, e in zip(_outputs(res)[:n], _outputs(ref)[:n]):
        assert np.all(np.isfinite(r))
        np.testing.assert_allclose(r, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", [-1.0, 0.0, np.nan])
def test_bad_global_variances(backend, func, bad):
    v = np.ones(LD)
    v[4] = bad
    info = expect_error(ValueError, "variances", func, _means(), v, backend=backend)
    assert "variances[4]" in str(info.value)


def test_variances_so_small_that_r_overflows(backend, func):
    # valid variances (above SMALLEST_VARIANCE) whose precisions add up
    # beyond float64 in R: a LinAlgError that says so, on every backend
    v = np.full((T, LD), 1e-308)
    info = expect_error(LinAlgError, "not positive definite", func, 1e-3 * _means(), v,
                        backend=backend)
    assert "entries overflowed float64" in str(info.value), str(info.value)


def test_infinite_variances_allowed(backend, func):
    # +inf variance = precision 0 = no constraint; the static stream stays
    # constrained, so the system remains positive definite.
    v = _variances()
    v[:, 2 * D:] = np.inf        # the accel window unconstrained everywhere
    v[2, 0] = np.inf             # and one static entry (deltas still pin frame 2)
    v[5, D + 1] = np.inf         # and one delta entry
    m = _means()
    res = call(func, _readonly(m), _readonly(v), backend=backend)
    ref = call(func, m, v, backend="reference")
    for r, e in zip(_outputs(res), _outputs(ref)):
        assert np.all(np.isfinite(r))
        np.testing.assert_allclose(r, e, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf, -np.inf])
def test_bad_precisions(backend, func, bad):
    p = _variances()
    p[2, 5] = bad
    info = expect_error(ValueError, "precisions", func, _means(), backend=backend,
                        precisions=p)
    assert re.search(r"precisions\[(0, )?2, 5\]", str(info.value)), str(info.value)


def test_both_variances_and_precisions(backend, func):
    expect_error(ValueError, "variances.*precisions", func, _means(), _variances(),
                 backend=backend, precisions=_variances())


@pytest.mark.parametrize("vshape", [(T, LD + 1), (T + 1, LD), (T, LD - 1), (LD + 1,),
                                    (LD - 1,), (1, LD), (2, T, LD), (T * LD,)])
def test_variance_shape_mismatch(backend, func, vshape):
    expect_error(ValueError, "variances", func, _means(), np.ones(vshape), backend=backend)


def test_precision_shape_mismatch(backend, func):
    expect_error(ValueError, "precisions", func, _means(), backend=backend,
                 precisions=np.ones((T, LD + 3)))


def test_variance_shape_mismatch_batched(backend, func):
    expect_error(ValueError, "variances", func, _means((2, T, LD)), np.ones((3, T, LD)),
                 backend=backend)


@pytest.mark.parametrize("bad", [np.complex128, np.bool_, object])
def test_bad_variance_dtype(backend, func, bad):
    expect_error(TypeError, "variances", func, _means(), np.ones((T, LD), dtype=bad),
                 backend=backend)


# --------------------------------------------------------------------------
# shapes of means
# --------------------------------------------------------------------------

@pytest.mark.parametrize("cols", [LD + 1, LD - 1, 1, 2])
def test_columns_not_multiple_of_windows(backend, mfunc, cols):
    m = _means((T, cols))
    with pytest.raises(ValueError, match="means.*windows"):
        call(mfunc, _readonly(m), backend=backend, grad=np.ones((T, 1)))


@pytest.mark.parametrize("shape", [(LD,), (1, 2, T, LD), (2, 2, 2, T, LD)])
def test_means_bad_ndim(backend, mfunc, shape):
    expect_error(ValueError, "means", mfunc, _means(shape), backend=backend,
                 grad=np.ones((T, D)))


def test_scalar_means(backend, mfunc):
    with pytest.raises(ValueError, match="means"):
        call(mfunc, np.float64(1.0), backend=backend, grad=np.ones((T, D)))


def test_ragged_means(backend, mfunc):
    with pytest.raises(TypeError, match="means"):
        call(mfunc, [[1.0, 2.0, 3.0], [1.0, 2.0]], backend=backend, grad=np.ones((2, 1)))


def test_nested_list_means_explicit_backend(backend, mfunc):
    m = _means()
    res = call(mfunc, m.tolist(), backend=backend)
    ref = call(mfunc, m, backend=backend)
    for r, e in zip(_outputs(res), _outputs(ref)):
        np.testing.assert_array_equal(r, e)


@pytest.mark.parametrize("fn", FUNCS)
def test_nested_list_input_default_backend(fn):
    # means / rhs are documented as array_like; the default backend="auto"
    # must accept plain nested lists just as backend="cython" does.
    m = _means()
    g = np.ones((T, D))
    if fn == "mlpg":
        res, ref = mlpgx.mlpg(m.tolist()), mlpgx.mlpg(m)
    elif fn == "mlpg_adjoint":
        res, ref = mlpgx.mlpg_adjoint(g.tolist(), m.tolist()), mlpgx.mlpg_adjoint(g, m)
    else:
        res, ref = mlpgx.mlpg_solve(g.tolist()), mlpgx.mlpg_solve(g)
    for r, e in zip(_outputs(res), _outputs(ref)):
        np.testing.assert_array_equal(r, e)


# --------------------------------------------------------------------------
# grad_output / rhs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("gshape", [(T, D + 1), (T - 1, D), (T,), (1, T, D), (T, LD)])
def test_grad_output_wrong_shape(backend, gshape):
    expect_error(ValueError, "grad_output", "mlpg_adjoint", _means(), _variances(),
                 backend=backend, grad=np.ones(gshape))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_grad_output_non_finite(backend, bad):
    g = np.ones((T, D))
    g[4, 1] = bad
    expect_error(ValueError, "grad_output", "mlpg_adjoint", _means(), _variances(),
                 backend=backend, grad=g)


def test_grad_output_bad_dtype(backend):
    expect_error(TypeError, "grad_output", "mlpg_adjoint", _means(), backend=backend,
                 grad=np.ones((T, D), dtype=complex))


@pytest.mark.parametrize("rshape", [(T,), (1, 1, T, D), (T, D + 1), (T + 1, D)])
def test_rhs_wrong_shape(backend, rshape):
    # (T,) and 4-D: wrong ndim; (T, D+1), (T+1, D): do not match the variances
    with pytest.raises(ValueError, match="rhs|variances"):
        mlpgx.mlpg_solve(_readonly(np.ones(rshape)), _variances(), backend=backend)


@pytest.mark.parametrize("rshape", [(T,), (1, 1, T, D)])
def test_rhs_wrong_ndim_names_rhs(backend, rshape):
    with pytest.raises(ValueError, match="rhs"):
        mlpgx.mlpg_solve(np.ones(rshape), backend=backend)


def test_rhs_non_finite_and_bad_dtype(backend):
    r = np.ones((T, D))
    r[0, 0] = np.nan
    with pytest.raises(ValueError, match="rhs"):
        mlpgx.mlpg_solve(r, backend=backend)
    with pytest.raises(TypeError, match="rhs"):
        mlpgx.mlpg_solve(np.ones((T, D), dtype=complex), backend=backend)


# --------------------------------------------------------------------------
# lengths
# --------------------------------------------------------------------------

BATCH = (2, T, LD)


@pytest.mark.parametrize("lengths, exc", [
    ([T], ValueError),                 # wrong shape
    ([T, T, T], ValueError),
    ([[T, T]], ValueError),
    (T, ValueError),                   # scalar for a batch
    ([T, 3.0], TypeError),             # float dtype
    (np.array([4.0, 5.0]), TypeError),
    ([True, False], TypeError),
    ([T, -1], ValueError),             # negative
    ([T + 1, 3], ValueError),          # > T
    (["8", "3"], TypeError),
])
def test_bad_lengths_batched(backend, func, lengths, exc):
    expect_error(exc, "lengths", func, _means(BATCH), _variances(BATCH), backend=backend,
                 lengths=lengths)


@pytest.mark.parametrize("lengths, exc", [
    (-1, ValueError),
    (T + 1, ValueError),
    (3.0, TypeError),
    (True, TypeError),
    ([T, T], ValueError),
    ([[T]], ValueError),
])
def test_bad_lengths_unbatched(backend, func, lengths, exc):
    expect_error(exc, "lengths", func, _means(), _variances(), backend=backend,
                 lengths=lengths)


@pytest.mark.parametrize("lengths", [[T], np.array([5])])
def test_unbatched_lengths_must_be_scalar_int(backend, func, lengths):
    # For an unbatched (T, L*D) input only a scalar int length is meaningful;
    # a length-1 sequence is a wrong lengths argument.
    expect_error((ValueError, TypeError), "lengths", func, _means(), _variances(),
                 backend=backend, lengths=lengths)


@pytest.mark.parametrize("n", [0, 1, 5, T])
def test_unbatched_scalar_length(backend, func, n):
    m, v = _means(), _variances()
    for length in (n, np.int64(n)):
        res = call(func, m, v, backend=backend, lengths=length)
        short = call(func, m[:n], v[:n], backend=backend,
                     grad=np.ones((n, D)) if func != "mlpg" else None)
        for r, s in zip(_outputs(res), _outputs(short)):
            np.testing.assert_allclose(r[:n], s, rtol=1e-12, atol=1e-12)
            assert np.all(r[n:] == 0)


# --------------------------------------------------------------------------
# empty and short inputs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape, out", [((0, LD), (0, D)), ((3, 0, LD), (3, 0, D)),
                                        ((0, T, LD), (0, T, D)), ((0, 0, LD), (0, 0, D))])
def test_empty_inputs(backend, shape, out):
    m = np.zeros(shape)
    v = np.ones(shape)
    c = mlpgx.mlpg(m, v, backend=backend)
    assert c.shape == out and c.dtype == np.float64
    gm, gv = mlpgx.mlpg_adjoint(np.zeros(out), m, v, backend=backend)
    assert gm.shape == shape and gv.shape == shape
    gm, gv = mlpgx.mlpg_adjoint(np.zeros(out), m, np.ones(LD), backend=backend)
    assert gm.shape == shape and gv.shape == (LD,)
    assert np.all(gv == 0)
    x = mlpgx.mlpg_solve(np.zeros(out), v, backend=backend)
    assert x.shape == out
    c32 = mlpgx.mlpg(m.astype(np.float32), backend=backend)
    assert c32.shape == out and c32.dtype == np.float32


@pytest.mark.parametrize("shape, vshape", [((0, LD), (0,)), ((0, T, LD), (0, T)),
                                           ((3, 0, LD), (3, 0)), ((0, LD), (0, D))])
def test_empty_inputs_with_voicing(backend, shape, vshape):
    m, v = np.zeros(shape), np.ones(shape)
    voiced = np.zeros(vshape, bool)
    out = shape[:-1] + (D,)
    assert mlpgx.mlpg(m, v, backend=backend, voiced=voiced).shape == out
    gm, gv = mlpgx.mlpg_adjoint(np.zeros(out), m, v, backend=backend, voiced=voiced)
    assert gm.shape == shape and gv.shape == shape
    gm, gv = mlpgx.mlpg_adjoint(np.zeros(out), m, np.ones(LD), backend=backend, voiced=voiced)
    assert gv.shape == (LD,) and np.all(gv == 0)


@pytest.mark.parametrize("lengths", [[], (), np.array([], dtype=np.int32)])
def test_empty_lengths_for_an_empty_batch(backend, func, lengths):
    res = call(func, np.zeros((0, T, LD)), np.ones((0, T, LD)), backend=backend,
               lengths=lengths)
    assert all(r.shape[0] == 0 for r in _outputs(res))


def test_zero_static_dimensions(backend):
    m = np.zeros((T, 0))
    assert mlpgx.mlpg(m, backend=backend).shape == (T, 0)
    gm, gv = mlpgx.mlpg_adjoint(np.zeros((T, 0)), m, np.ones((T, 0)), backend=backend)
    assert gm.shape == (T, 0) and gv.shape == (T, 0)


@pytest.mark.parametrize("windows", ["delta", [2, 2], [[1], [1, -1]],
                                     [(0, 0, [1.0]), (0, 2, [1.0, 2.0, 3.0]),
                                      (3, 0, [1.0, 2.0, 3.0, 4.0])]])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii", "none"])
def test_sequence_shorter_than_window(func, windows, n, boundary):
    nw = len(as_windows(windows))
    m = _means((n, nw * D))
    v = _variances((n, nw * D))
    g = _means((n, D), seed=5)
    res = call(func, m, v, backend="cython", grad=g, windows=windows, boundary=boundary)
    ref = call(func, m, v, backend="reference", grad=g, windows=windows, boundary=boundary)
    for r, e in zip(_outputs(res), _outputs(ref)):
        assert r.shape == e.shape
        np.testing.assert_allclose(r, e, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------

@pytest.mark.parametrize("windows, exc", [
    ([], ValueError),                                    # empty
    ((), ValueError),
    ([[-0.5, 0, 0.5], [1]], ValueError),                 # static not first
    ([[1, -2, 1]], ValueError),
    ([(0, 0, [1.0]), (1, 1, [-0.5, 0.5])], ValueError),  # count != extents
    ([(0, 0, [1.0]), (2, 0, [1.0])], ValueError),
    ([[1], [np.nan, 0, 1]], ValueError),                 # non-finite
    ([[1], [0, np.inf, 1]], ValueError),
    ([[1], []], ValueError),
    ("not-a-preset", ValueError),
    (object(), TypeError),                               # garbage
    (3.5, TypeError),
    (None, TypeError),
    ({"a": 1}, TypeError),
    ([[1], "x"], TypeError),
    ([[1], [object(), 0, 1]], TypeError),
    ([[1], [True, 0, 1]], TypeError),
    ([[1], 1], TypeError),                               # widths mixed with windows
    ([(0.5, 0, [1.0])], TypeError),
])
def test_bad_windows(backend, func, windows, exc):
    # every parser message names the windows argument ("windows" or "windows[i]")
    expect_error(exc, "windows", func, _means(), _variances(), backend=backend,
                 windows=windows)


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("idtype", [np.int32, np.int64, np.uint8, np.int16])
def test_integer_means_become_float64(backend, mfunc, idtype):
    m = _rng(3).integers(0, 10, size=(T, LD)).astype(idtype)
    v = _variances()
    res = call(mfunc, m, v, backend=backend)
    ref = call(mfunc, m.astype(np.float64), v, backend=backend)
    for r, e in zip(_outputs(res), _outputs(ref)):
        assert r.dtype == np.float64
        np.testing.assert_array_equal(r, e)


def test_integer_everything_becomes_float64(backend, func):
    m = _rng(3).integers(0, 10, size=(T, LD))
    v = _rng(4).integers(1, 5, size=(T, LD))
    g = _rng(5).integers(-3, 3, size=(T, D))
    res = call(func, m, v, backend=backend, grad=g)
    ref = call(func, m.astype(float), v.astype(float), backend=backend, grad=g.astype(float))
    for r, e in zip(_outputs(res), _outputs(ref)):
        assert r.dtype == np.float64
        np.testing.assert_array_equal(r, e)


def test_float16_means_become_float32(backend, mfunc):
    m = _means(dtype=np.float16)
    res = call(mfunc, m, backend=backend, grad=np.ones((T, D), np.float32))
    ref = call(mfunc, m.astype(np.float32), backend=backend, grad=np.ones((T, D), np.float32))
    for r, e in zip(_outputs(res), _outputs(ref)):
        assert r.dtype == np.float32
        np.testing.assert_array_equal(r, e)


def test_float16_rhs_becomes_float32(backend):
    r = _means((T, D), dtype=np.float16)
    x = mlpgx.mlpg_solve(r, backend=backend)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, mlpgx.mlpg_solve(r.astype(np.float32), backend=backend))


@pytest.mark.parametrize("bad", [np.complex64, np.complex128, np.bool_, object, "U5", "S3"])
def test_bad_means_dtype(backend, mfunc, bad):
    m = np.ones((T, LD)).astype(bad)
    expect_error(TypeError, "means", mfunc, m, backend=backend)


@pytest.mark.parametrize("mdt, vdt", [(np.float32, np.float64), (np.float64, np.float32),
                                      (np.float32, np.float32), (np.float64, np.float64),
                                      (np.float32, np.int64), (np.float16, np.float64)])
@pytest.mark.parametrize("global_var", [False, True])
def test_mixed_dtypes_follow_result_type(backend, func, mdt, vdt, global_var):
    m = _means(dtype=mdt)
    v = (np.ones(LD) * 2).astype(vdt) if global_var else np.ceil(_variances()).astype(vdt)
    expected = np.result_type(np.float32 if mdt == np.float16 else mdt,
                              np.float64 if np.dtype(vdt).kind == "i" else vdt)
    g = np.ones((T, D), dtype=mdt)
    res = call(func, m, v, backend=backend, grad=g)
    for r in _outputs(res):
        assert r.dtype == expected, (r.dtype, expected)


# --------------------------------------------------------------------------
# memory layouts
# --------------------------------------------------------------------------

def _layout(a, kind, tmp_path, tag):
    if kind == "contiguous":
        return a
    if kind == "strided":                      # every other column of a wider array
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        wide[..., ::2] = a
        out = wide[..., ::2]
        assert not out.flags.c_contiguous
        return out
    if kind == "fortran":
        out = np.asfortranarray(a)
        assert not out.flags.c_contiguous or a.ndim < 2
        return out
    if kind == "transposed":                   # .T of a Fortran array of the transpose
        out = np.asfortranarray(np.swapaxes(a, -1, -2)).T if a.ndim == 2 else \
            np.asfortranarray(a.T).T
        return out
    if kind == "reversed":                     # negative strides
        return a[..., ::-1, :][..., ::-1, :]
    if kind == "readonly":
        return _readonly(a)
    if kind == "mmap":
        path = tmp_path / f"{tag}.npy"
        np.save(path, a)
        out = np.load(path, mmap_mode="r")
        assert isinstance(out, np.memmap)
        return out
    raise AssertionError(kind)


LAYOUTS = ["strided", "fortran", "transposed", "reversed", "readonly", "mmap"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layouts_match_contiguous(backend, func, layout, batched, dtype, tmp_path):
    shape = (2, T, LD) if batched else (T, LD)
    m = _means(shape, dtype=dtype)
    v = _variances(shape, dtype=dtype)
    g = _means(shape[:-1] + (D,), seed=7, dtype=dtype)
    ref = call(func, m, v, backend=backend, grad=g)
    mm = _layout(m, layout, tmp_path, "m")
    vv = _layout(v, layout, tmp_path, "v")
    gg = _layout(g, layout, tmp_path, "g")
    np.testing.assert_array_equal(mm, m)
    res = call(func, mm, vv, backend=backend, grad=gg)
    for r, e in zip(_outputs(res), _outputs(ref)):
        assert r.dtype == e.dtype and r.shape == e.shape
        np.testing.assert_array_equal(r, e)
    # inputs unmodified
    np.testing.assert_array_equal(mm, m)
    np.testing.assert_array_equal(vv, v)
    np.testing.assert_array_equal(gg, g)


@pytest.mark.parametrize("layout", ["strided", "readonly", "mmap"])
def test_layouts_global_variances_and_precisions(backend, func, layout, tmp_path):
    m = _means()
    gv = np.linspace(0.5, 2.0, LD)
    p = _variances()
    for kw in ({"variances": gv}, {"precisions": p}):
        ref = call(func, m, kw.get("variances"), backend=backend,
                   **({"precisions": kw["precisions"]} if "precisions" in kw else {}))
        lk = {k: _layout(a, layout, tmp_path, k) for k, a in kw.items()}
        res = call(func, _layout(m, layout, tmp_path, "m"), lk.get("variances"),
                   backend=backend,
                   **({"precisions": lk["precisions"]} if "precisions" in lk else {}))
        for r, e in zip(_outputs(res), _outputs(ref)):
            np.testing.assert_array_equal(r, e)


def test_writable_inputs_unmodified(backend, func):
    m, v = _means((2, T, LD)), _variances((2, T, LD))
    g = _means((2, T, D), seed=9)
    lengths = np.array([T, 5])
    copies = [a.copy() for a in (m, v, g, lengths)]
    for kw in ({}, {"lengths": lengths}, {"boundary": "nnmnkwii"}):
        call(func, m, v, backend=backend, grad=g, **kw)
        call(func, m, None, backend=backend, grad=g, precisions=v, **kw)
    for a, c in zip((m, v, g, lengths), copies):
        np.testing.assert_array_equal(a, c)


def test_float32_inputs_unmodified(backend, func):
    # float32 inputs are not copied by validation: the kernel must not write
    m = _means(dtype=np.float32)
    v = _variances(dtype=np.float32)
    g = _means((T, D), seed=9, dtype=np.float32)
    copies = [a.copy() for a in (m, v, g)]
    call(func, m, v, backend=backend, grad=g)
    for a, c in zip((m, v, g), copies):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------
# output= of mlpg_adjoint (the forward's result)
# --------------------------------------------------------------------------

def _adjoint_with_output(backend, output, **kw):
    return mlpgx.mlpg_adjoint(np.ones((T, D)), _readonly(_means()), _readonly(_variances()),
                              output=output, backend=backend, **kw)


@pytest.mark.parametrize("oshape", [(T, D + 1), (T - 1, D), (T,), (1, T, D), (T, LD)])
def test_output_wrong_shape(backend, oshape):
    with pytest.raises(ValueError, match="output"):
        _adjoint_with_output(backend, np.ones(oshape))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_output_non_finite(backend, bad):
    c = mlpgx.mlpg(_means(), _variances(), backend=backend)
    c[4, 1] = bad
    with pytest.raises(ValueError, match=r"output\[4, 1\]"):
        _adjoint_with_output(backend, _readonly(c))
    # unchecked on request, like the other inputs: a backend that reads it
    # gives NaN variance gradients near frame 4 only (the means' gradient
    # does not read c); the others ignore it
    gm, gv = _adjoint_with_output(backend, c, check_finite=False)
    assert np.isfinite(gm).all()
    if mlpgx.backends.get(backend).reuses_output:
        assert not np.isfinite(gv[4, 1]) and np.isfinite(gv[:3]).all() and np.isfinite(gv[6:]).all()
    else:
        assert np.isfinite(gv).all()


@pytest.mark.parametrize("bad", [complex, object, "U3"])
def test_output_bad_dtype(backend, bad):
    with pytest.raises(TypeError, match="output"):
        _adjoint_with_output(backend, np.ones((T, D), dtype=bad))


def test_output_layouts_and_dtypes_match_contiguous(backend, tmp_path):
    """A strided, Fortran-ordered, read-only or memory-mapped output, or one
    of another float dtype (cast to the problem's), gives the same gradients,
    and is left as it was."""
    m, v, g = _means(), _variances(), _means((T, D), seed=7)
    c = mlpgx.mlpg(m, v, backend=backend)
    ref = mlpgx.mlpg_adjoint(g, m, v, output=c, backend=backend)
    for layout in LAYOUTS:
        cc = _layout(c, layout, tmp_path, "c")
        res = mlpgx.mlpg_adjoint(g, m, v, output=cc, backend=backend)
        for r, e in zip(res, ref):
            np.testing.assert_array_equal(r, e)
        np.testing.assert_array_equal(cc, c)
    res = mlpgx.mlpg_adjoint(g, m, v, output=c.astype(np.float32).astype(np.float64).tolist(),
                             backend=backend)
    assert res[0].dtype == np.float64
    # float32 inputs: a float64 output is cast (it is read, never written)
    m32, v32 = m.astype(np.float32), v.astype(np.float32)
    c32 = mlpgx.mlpg(m32, v32, backend=backend)
    a = mlpgx.mlpg_adjoint(g.astype(np.float32), m32, v32, output=c32, backend=backend)
    b = mlpgx.mlpg_adjoint(g.astype(np.float32), m32, v32, output=c32.astype(np.float64),
                           backend=backend)
    for r, e in zip(a, b):
        assert r.dtype == np.float32
        np.testing.assert_array_equal(r, e)


def test_output_none_is_the_plain_adjoint(backend):
    m, v, g = _means(), _variances(), _means((T, D), seed=7)
    for r, e in zip(mlpgx.mlpg_adjoint(g, m, v, output=None, backend=backend),
                    mlpgx.mlpg_adjoint(g, m, v, backend=backend)):
        np.testing.assert_array_equal(r, e)


# --------------------------------------------------------------------------
# options: backend, boundary, num_threads
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nope", "Cython", "", 3, None])
def test_unknown_backend(func, name):
    exc = TypeError if not isinstance(name, str) else ValueError
    with pytest.raises(exc, match="backend") as info:
        call(func, _means(), backend=name)
    if exc is ValueError:
        assert "'cython'" in str(info.value) or "cython" in str(info.value)
        assert "reference" in str(info.value)


@pytest.mark.parametrize("boundary", ["nope", "PER-WINDOW", "", None, 1])
def test_unknown_boundary(backend, func, boundary):
    info = expect_error(ValueError, "boundary", func, _means(), backend=backend,
                        boundary=boundary)
    for choice in ("per-window", "nnmnkwii", "none"):
        assert choice in str(info.value)


@pytest.mark.parametrize("n, exc", [(0, ValueError), (-1, ValueError), ("2", TypeError),
                                    (2.0, TypeError), ([2], TypeError)])
def test_bad_num_threads(backend, func, n, exc):
    expect_error(exc, "num_threads", func, _means(), backend=backend, num_threads=n)


@pytest.mark.parametrize("n", [10**6, 2**63, np.int64(2**40)])
def test_num_threads_above_the_cpus_are_capped(backend, func, n):
    # asking OpenMP for a million threads used to kill the process; more
    # threads than CPUs are capped (1000 sequences: 1000 work items)
    m, v = _means((1000, 3, 3)), _variances((1000, 3, 3))
    ref = call(func, m, v, backend=backend, num_threads=1)
    res = call(func, m, v, backend=backend, num_threads=n)
    for r, e in zip(_outputs(res), _outputs(ref)):
        np.testing.assert_array_equal(r, e)
    assert mlpgx._validate._check_num_threads(n) == usable_cpus() >= 1


@pytest.mark.parametrize("n", [1, 2, 7, np.int64(3)])
def test_num_threads_do_not_change_results(backend, func, n):
    m, v = _means((3, T, LD)), _variances((3, T, LD))
    ref = call(func, m, v, backend=backend)
    res = call(func, m, v, backend=backend, num_threads=n)
    for r, e in zip(_outputs(res), _outputs(ref)):
        np.testing.assert_array_equal(r, e)


# --------------------------------------------------------------------------
# singular systems
# --------------------------------------------------------------------------

def _singular_cases():
    # T = 1: dynamic windows are dropped by the boundary rule; a static
    # variance of +inf leaves no precision on the frame.
    m1 = np.zeros((1, LD))
    v1 = np.ones((1, LD))
    v1[0, 1] = np.inf
    yield "T1-static-inf", dict(means=m1, variances=v1), 0, 1
    # static window only, every precision of frame 3 zero
    p = np.ones((6, D))
    p[3, :] = 0.0
    yield "static-frame-zero", dict(means=np.zeros((6, D)), precisions=p,
                                     windows="static"), 3, 0
    # static window only, one zero precision
    p = np.ones((6, D))
    p[4, 1] = 0.0
    yield "static-one-zero", dict(means=np.zeros((6, D)), precisions=p,
                                   windows="static"), 4, 1
    # static window only, +inf variance
    v = np.ones((6, D))
    v[2, 1] = np.inf
    yield "static-inf-var", dict(means=np.zeros((6, D)), variances=v,
                                  windows="static"), 2, 1


SINGULAR = list(_singular_cases())


@pytest.mark.parametrize("case", SINGULAR, ids=[c[0] for c in SINGULAR])
def test_singular_system(backend, func, case):
    _, kw, t, d = case
    kw = dict(kw)
    m = kw.pop("means")
    v = kw.pop("variances", None)
    with pytest.raises(LinAlgError) as info:
        call(func, m, v, backend=backend, **kw)
    msg = str(info.value)
    assert re.search(rf"\bt={t}\b", msg), msg
    assert re.search(rf"\bd={d}\b", msg), msg


def test_singular_all_precisions_zero_for_frames(backend, func):
    # DELTA windows, every precision of frames 3..7 zero: frames 4..6 are
    # touched by no window at all.
    p = np.ones((12, LD))
    p[3:8, :] = 0.0
    with pytest.raises(LinAlgError) as info:
        call(func, np.zeros((12, LD)), None, backend=backend, precisions=p)
    msg = str(info.value)
    assert re.search(r"\bt=\d+", msg) and re.search(r"\bd=0\b", msg), msg


def test_singular_same_exception_type_on_every_backend(func):
    _, kw, _, _ = SINGULAR[1]
    types_ = set()
    for be in BACKENDS:
        kw2 = dict(kw)
        try:
            call(func, kw2.pop("means"), None, backend=be, **kw2)
        except Exception as exc:  # noqa: BLE001 - comparing types
            types_.add(type(exc))
    assert types_ == {LinAlgError}


def test_singular_in_one_sequence_of_batch(backend):
    p = np.ones((3, 6, D))
    p[2, 1, 1] = 0.0
    with pytest.raises(LinAlgError, match=r"b=2"):
        mlpgx.mlpg(np.zeros((3, 6, D)), precisions=p, windows="static", backend=backend)


def test_zero_precision_beyond_length_is_fine(backend):
    # frames beyond a sequence's length do not exist: their precisions may be 0
    p = np.ones((2, 6, D))
    p[1, 4:, :] = 0.0
    c = mlpgx.mlpg(np.ones((2, 6, D)), precisions=p, windows="static", lengths=[6, 4],
                   backend=backend)
    assert np.all(c[1, 4:] == 0) and np.allclose(c[1, :4], 1.0)


@pytest.mark.parametrize("garbage", [np.nan, 0.0, -1.0, np.inf])
@pytest.mark.parametrize("weights", ["variances", "precisions"])
@pytest.mark.parametrize("func, voicing", [(f, v) for f in FUNCS for v in (False, True)
                                           if not (f == "mlpg_solve" and v)])
def test_padding_may_hold_anything(backend, func, voicing, garbage, weights):
    """Frames beyond a sequence's length are never read, so they are not
    checked: zero-padded variances or NaN-padded means, gradients and
    right-hand sides give the results of the unpadded sequences; a bad value
    inside a sequence is still named with its index.  (A pure solve takes
    no voicing mask.)"""
    n = 5
    lengths = [n, T]
    m, w = _means(BATCH), _variances(BATCH)
    grad = _rng(7).normal(size=BATCH[:-1] + (D,))

    def run(means, wts, g, **kw):
        if voicing:
            kw["voiced"] = np.ones(means.shape[:-1], bool)
        if weights == "precisions":
            return call(func, means, None, grad=g, backend=backend, precisions=wts, **kw)
        return call(func, means, wts, grad=g, backend=backend, **kw)

    ref = [run(m[b, :n_b], w[b, :n_b], grad[b, :n_b]) for b, n_b in enumerate(lengths)]
    mp, wp, gp = m.copy(), w.copy(), grad.copy()
    mp[0, n:], wp[0, n:], gp[0, n:] = np.nan, garbage, np.nan
    copies = [a.copy() for a in (mp, wp, gp)]
    res = run(_readonly(mp), _readonly(wp), _readonly(gp), lengths=lengths)
    for a, c in zip((mp, wp, gp), copies):
        assert _same(a, c)
    for b, n_b in enumerate(lengths):
        for r, e in zip(_outputs(res), _outputs(ref[b])):
            np.testing.assert_allclose(r[b, :n_b], e, rtol=1e-12, atol=1e-14)
            assert np.all(r[b, n_b:] == 0)
    # a bad value inside the first sequence is still found, and named
    what = {"mlpg": "means", "mlpg_adjoint": "grad_output", "mlpg_solve": "rhs"}[func]
    (mp if what == "means" else gp)[0, 2, 1] = np.nan
    with pytest.raises(ValueError, match=rf"{what}\[0, 2, 1\]"):
        run(mp, wp, gp, lengths=lengths)
    (mp if what == "means" else gp)[0, 2, 1] = 0.0
    wp[0, 3, 4] = -1.0
    with pytest.raises(ValueError, match=rf"{weights}\[0, 3, 4\]"):
        run(mp, wp, gp, lengths=lengths)


def test_padding_of_a_given_output_may_hold_anything():
    m, v = _means(BATCH), _variances(BATCH)
    g = _rng(7).normal(size=BATCH[:-1] + (D,))
    c = mlpgx.mlpg(m, v, lengths=[5, T])
    ref = mlpgx.mlpg_adjoint(g, m, v, lengths=[5, T], backend="cython")
    c[0, 5:] = np.nan
    res = mlpgx.mlpg_adjoint(g, m, v, lengths=[5, T], backend="cython", output=_readonly(c))
    for r, e in zip(res, ref):
        np.testing.assert_array_equal(r, e)
    c[0, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"output\[0, 2, 0\]"):
        mlpgx.mlpg_adjoint(g, m, v, lengths=[5, T], backend="cython", output=c)


# --------------------------------------------------------------------------
# first-bad-index in messages uses the caller's coordinates
# --------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["means", "variances", "precisions", "grad_output"])
def test_bad_value_index_in_callers_coordinates(backend, arg):
    # For an unbatched (T, L*D) input the message's index must index the
    # caller's array (2 numbers), not the internal (1, T, L*D) copy.
    m, v, g = _means(), _variances(), np.ones((T, D))
    kw = {}
    if arg == "means":
        m[3, 4] = np.nan
    elif arg == "variances":
        v[3, 4] = -1.0
    elif arg == "precisions":
        v[3, 4] = -1.0
        kw = {"precisions": v}
        v = None
    else:
        g[3, 1] = np.nan
    with pytest.raises(ValueError, match=arg) as info:
        mlpgx.mlpg_adjoint(g, m, v, backend=backend, **kw)
    want = f"{arg}[3, 1]" if arg == "grad_output" else f"{arg}[3, 4]"
    assert want in str(info.value), str(info.value)


# --------------------------------------------------------------------------
# foreign array types
# --------------------------------------------------------------------------

def test_torch_tensor_means():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="means"):
        mlpgx.mlpg(torch.zeros((T, LD)), backend="cython")


class _ArrayLike:
    """Not a NumPy array, but NumPy converts it (as pandas frames are)."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


@pytest.mark.parametrize("wrap", [memoryview, _ArrayLike], ids=["memoryview", "__array__"])
def test_array_likes_pick_the_numpy_backend(func, wrap):
    # backend="auto" picks by array library: what NumPy converts counts as NumPy
    m, v = _means(), _variances()
    ref = call(func, m, v, backend="cython")
    res = call(func, wrap(m), wrap(v), backend="auto")
    for r, e in zip(_outputs(res), _outputs(ref)):
        np.testing.assert_array_equal(r, e)
    assert mlpgx.verify(wrap(m), wrap(v), backend="cython").passed


def test_torch_tensor_means_with_auto_backend():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="torch"):
        mlpgx.mlpg(torch.zeros((T, LD)))


def test_cupy_array_means():
    cupy = pytest.importorskip("cupy")
    with pytest.raises((TypeError, RuntimeError), match="means|cupy|backend"):
        mlpgx.mlpg(cupy.zeros((T, LD)))


# --------------------------------------------------------------------------
# the compiled one-pass scans behind the checks (mlpgx/_ext/mlpgx_scan.h)
# --------------------------------------------------------------------------

_SCAN_SPECIALS = [1.0, 0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, -1.0, "tiny", "max",
                  "subnormal", "smallest variance", "below smallest variance"]


def _special(value, dtype):
    info = np.finfo(dtype)
    smallest = SMALLEST_VARIANCE[np.dtype(dtype)]
    return {"tiny": info.tiny, "max": info.max, "subnormal": info.smallest_subnormal,
            "smallest variance": smallest,
            "below smallest variance": np.nextafter(smallest, dtype(0))}.get(value, value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smallest_variance_is_where_the_precision_overflows(dtype):
    smallest = SMALLEST_VARIANCE[np.dtype(dtype)]
    with np.errstate(over="ignore", divide="ignore"):
        assert np.isfinite(dtype(1) / smallest)
        assert not np.isfinite(dtype(1) / np.nextafter(smallest, dtype(0)))


def test_the_c_headers_bits_are_the_smallest_variances():
    # the scans and the k <= 2 kernel's float32 check test variances by bits
    # from one header (shipped with the package); it must say what
    # SMALLEST_VARIANCE says
    header = Path(mlpgx.__file__).parent / "_ext" / "mlpgx_variance_bits.h"
    macros = dict(re.findall(r"#define (MLPGX_\w+) UINT\d+_C\((0x[0-9A-Fa-f]+)\)",
                             header.read_text()))
    for dtype, bits, suffix in ((np.float32, np.uint32, "F32"), (np.float64, np.uint64, "F64")):
        smallest = np.asarray(SMALLEST_VARIANCE[np.dtype(dtype)], dtype)
        assert int(macros[f"MLPGX_SMALLEST_VARIANCE_BITS_{suffix}"], 16) == int(smallest.view(bits))
        inf = np.asarray(np.inf, dtype)
        assert int(macros[f"MLPGX_INF_BITS_{suffix}"], 16) == int(inf.view(bits))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("check", ["finite", "positive", "nonnegative"])
def test_scan_valid_agrees_with_numpy(dtype, check):
    from mlpgx._ext import solver
    rules = {"finite": np.isfinite,
             "positive": lambda a: a >= SMALLEST_VARIANCE[np.dtype(dtype)],  # (NaN fails)
             "nonnegative": lambda a: (a >= 0) & np.isfinite(a)}
    n = 3 * solver.SCAN_BLOCK + 5          # several blocks and a short last one
    for value in _SCAN_SPECIALS:
        v = np.asarray(_special(value, dtype), dtype=dtype)
        expected = bool(rules[check](v))
        for pos in (0, solver.SCAN_BLOCK - 1, solver.SCAN_BLOCK, n - 1):
            x = np.full(n, 1.5, dtype=dtype)
            x[pos] = v
            before = x.copy()
            for threads in (None, 1, 2):
                got = solver.scan_valid(x, check, threads)
                assert got is expected, (value, pos, threads)
            np.testing.assert_array_equal(x, before)   # read, never written
        assert solver.scan_valid(v.reshape(1), check) is expected, value
    assert solver.scan_valid(np.empty(0, dtype=dtype), check) is True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("check", ["finite", "weights"])
@pytest.mark.parametrize("scans", ["compiled", "numpy"])
def test_edge_frames_scan(dtype, check, scans, monkeypatch):
    # The check of the frames a kernel does not read: frames 0..K-1 and
    # n-K..n-1 of each sequence, never the padding (t >= n), whatever K
    # and n; the compiled scan and the NumPy one of a build without it agree
    # with a frame-by-frame oracle.
    import mlpgx._validate as validate
    if scans == "numpy":
        monkeypatch.setattr(validate, "_solver", None)
    bad = np.nan if check == "finite" else -1.0
    kinds = ["variance", "precision"] if check == "weights" else [None]
    B, T, C = 3, 7, 5
    for kind in kinds:
        for lengths in ([7, 7, 7], [7, 3, 0], [1, 2, 6]):
            lens = np.array(lengths, dtype=np.intp)
            for K in (0, 1, 2, 3, 4, 8):
                for b in range(B):
                    for t in range(T):
                        x = np.ones((B, T, C), dtype=dtype)
                        x[b, t, 2] = bad
                        before = x.copy()
                        n = lengths[b]
                        edge = t < n and (t < K or t >= n - K)
                        got = validate._edge_frames_ok(x, lens, K, check, kind)
                        # (NumPy's scan may also test padding inside the
                        # first K frames: a conservative False is allowed
                        # there, never a True for a bad edge frame)
                        if not (scans == "numpy" and n <= t < K):
                            assert got is (not edge), (kind, lengths, K, b, t)
                        else:
                            assert got in (True, False)
                        np.testing.assert_array_equal(x, before)


def test_scan_edges_rejects_what_it_cannot_scan():
    from mlpgx._ext import solver
    ok = np.ones((2, 4, 3))
    lens = np.array([4, 4], dtype=np.intp)
    assert solver.scan_edges(ok, "finite", 1, lens) is True
    assert solver.scan_edges(np.ones((0, 4, 3)), "finite", 1, np.empty(0, np.intp)) is True
    with pytest.raises(TypeError, match="C-contiguous"):
        solver.scan_edges(ok[:, :, ::2], "finite", 1, lens)
    with pytest.raises(TypeError, match="C-contiguous"):
        solver.scan_edges(ok[0], "finite", 1, lens)
    with pytest.raises(TypeError, match="float32 or float64"):
        solver.scan_edges(ok.astype(np.int64), "finite", 1, lens)
    with pytest.raises(TypeError, match="lengths"):
        solver.scan_edges(ok, "finite", 1, lens.astype(np.int32))
    with pytest.raises(ValueError, match="lengths"):
        solver.scan_edges(ok, "finite", 1, lens[:1])
    with pytest.raises(ValueError, match=r"lengths\[1\] = 5"):
        solver.scan_edges(ok, "finite", 1, np.array([4, 5], dtype=np.intp))
    with pytest.raises(ValueError, match="K must be >= 0"):
        solver.scan_edges(ok, "finite", -1, lens)
    with pytest.raises(KeyError):
        solver.scan_edges(ok, "even", 1, lens)


def test_scan_valid_rejects_what_it_cannot_scan():
    from mlpgx._ext import solver
    with pytest.raises(TypeError, match="C-contiguous"):
        solver.scan_valid(np.ones((4, 4))[:, ::2], "finite")
    with pytest.raises(TypeError, match="float32 or float64"):
        solver.scan_valid(np.ones(4, dtype=np.int64), "finite")
    with pytest.raises(KeyError):
        solver.scan_valid(np.ones(4), "even")


@pytest.mark.parametrize("scans", ["compiled", "numpy"])
@pytest.mark.parametrize("threads", [None, 1, 2])
def test_bad_entry_found_in_a_large_input(threads, scans, monkeypatch):
    # large enough for the scans to split into blocks over threads; the
    # message still names the first bad entry in the caller's coordinates.
    # "numpy": the checks a build without the extension runs
    import mlpgx._validate as validate
    if scans == "numpy":
        monkeypatch.setattr(validate, "_solver", None)
    assert (validate._compiled_scan(np.ones(3), "finite", None) is None) == (scans == "numpy")
    T_big = 2 * (1 << 16) // LD + 7
    m = np.random.default_rng(0).standard_normal((2, T_big, LD))
    v = np.ones_like(m)
    m[1, T_big - 1, LD - 1] = np.nan
    info = expect_error(ValueError, "means", "mlpg", m, v, backend="cython",
                        num_threads=threads)
    assert f"means[1, {T_big - 1}, {LD - 1}]" in str(info.value)
    m[1, T_big - 1, LD - 1] = 0.0
    v[1, 3, 2] = -0.0
    v[1, 4, 2] = 0.0
    info = expect_error(ValueError, "variances", "mlpg", m, v, backend="cython",
                        num_threads=threads)
    assert "variances[1, 3, 2]" in str(info.value)
    p = np.ones_like(m)
    p[0, T_big - 2, 1] = np.inf
    info = expect_error(ValueError, "precisions", "mlpg", m, precisions=p, backend="cython",
                        num_threads=threads)
    assert f"precisions[0, {T_big - 2}, 1]" in str(info.value)
    p[0, T_big - 2, 1] = -0.0        # a negative zero precision is a zero precision
    mlpgx.testing.assert_matches_reference(m[:, :40], precisions=p[:, :40], backend="cython")


# ---------------------------------------------------------------------------
# The deferred means scan: the cython backend's forward scans the means after
# the kernel (all of them only when the output is not finite, else the first
# and last max_halfwidth frames of each sequence).  A bad mean anywhere must
# still raise, with the message of the up-front scan.
# ---------------------------------------------------------------------------

_DEFER_WINDOWS = {
    "delta": DELTA,
    # one-sided taps: at the last frame, [0, 0, 1]'s only nonzero tap lies
    # outside the sequence under boundary="none"
    "one-sided": as_windows([(0, 0, [1.0]), (1, 1, [0.0, 0.0, 1.0]), (1, 0, [1.0, 0.0])]),
    "wide": as_windows([(0, 0, [1.0]), (1, 1, [-0.5, 0.0, 0.5]),
                        (3, 2, [0.1, -0.2, 0.3, 0.0, -0.4, 0.2])]),
    "static": as_windows([(0, 0, [1.0])]),
    # a window of zeros carries no mean anywhere: scanned before the kernel
    "zero-window": as_windows([(0, 0, [1.0]), (1, 1, [0.0, 0.0, 0.0]), (2, 2, [0.0] * 5)]),
}


@pytest.mark.parametrize("windows", list(_DEFER_WINDOWS))
@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii", "none"])
@pytest.mark.parametrize("weights", ["variances", "inf-variances", "precisions", "global", "none"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op", ["mlpg", "adjoint", "adjoint-given-output"])
def test_bad_mean_anywhere_raises_after_the_kernel(windows, boundary, weights, dtype, op):
    wins = _DEFER_WINDOWS[windows]
    Lw, Dw, Tw = len(wins), 2, 9
    lengths = np.array([Tw, 6, 1])
    mu = _means((3, Tw, Lw * Dw), dtype=dtype)
    kw = {}
    if weights == "variances":
        kw["variances"] = _variances((3, Tw, Lw * Dw), dtype=dtype)
    elif weights == "inf-variances":   # precision 0 wherever a dynamic window is
        var = _variances((3, Tw, Lw * Dw), dtype=dtype)
        var[..., Dw:] = np.inf
        kw["variances"] = var
    elif weights == "precisions":
        prec = _variances((3, Tw, Lw * Dw), dtype=dtype)
        prec[:, ::2, Dw:] = 0.0
        kw["precisions"] = prec
    elif weights == "global":
        kw["variances"] = _variances((Lw * Dw,), dtype=dtype)
    grad = _means((3, Tw, Dw), seed=4, dtype=dtype)
    given = mlpgx.mlpg(mu, windows=wins, lengths=lengths, boundary=boundary, **kw) \
        if op == "adjoint-given-output" else None
    checked = 0
    for b in range(3):
        for t in range(lengths[b]):
            for col in range(Lw * Dw):
                for bad in (np.nan, np.inf, -np.inf):
                    m = mu.copy()
                    m[b, t, col] = bad
                    want = f"means must be finite; means[{b}, {t}, {col}] = {bad!r}"
                    for backend in ("cython", "reference"):
                        opts = dict(windows=wins, lengths=lengths, boundary=boundary,
                                    backend=backend, **kw)
                        with pytest.raises(ValueError) as info:
                            if op == "mlpg":
                                mlpgx.mlpg(m, **opts)
                            else:
                                mlpgx.mlpg_adjoint(grad, m, output=given, **opts)
                        assert str(info.value) == want, (backend, str(info.value))
                    checked += 1
    assert checked == 3 * (Tw + 6 + 1) * Lw * Dw
    # padding may still hold anything
    m = mu.copy()
    m[1, 6:] = np.nan
    m[2, 1:] = np.inf
    opts = dict(windows=wins, lengths=lengths, boundary=boundary, **kw)
    if op == "mlpg":
        np.testing.assert_array_equal(mlpgx.mlpg(m, **opts),
                                      mlpgx.mlpg(np.where(np.isfinite(m), m, 0), **opts))
    else:
        got = mlpgx.mlpg_adjoint(grad, m, output=given, **opts)
        want = mlpgx.mlpg_adjoint(grad, np.where(np.isfinite(m), m, 0), output=given, **opts)
        for a, b in zip(got, want):
            if b is not None:
                np.testing.assert_array_equal(a, b)


def test_deferred_means_scan_keeps_the_order_of_errors():
    # bad means are named before bad variances, an unknown backend and a
    # singular R, as when the means were scanned first
    m = _means()
    m[3, 1] = np.nan
    v = _variances()
    v[5, 0] = -1.0
    with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
        mlpgx.mlpg(m, v)
    with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
        mlpgx.mlpg(m, backend="no-such-backend")
    g = _means((T, D), seed=2)
    with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
        mlpgx.mlpg_adjoint(g, m, v)
    with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
        mlpgx.mlpg_adjoint(g[:-1], m, _variances())                # bad grad_output shape
    with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
        mlpgx.mlpg_adjoint(g, m, _variances(), backend="no-such-backend")
    prec = np.zeros((T, LD))                                 # R singular everywhere
    with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
        mlpgx.mlpg(m, precisions=prec)
    with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
        mlpgx.mlpg_adjoint(g, m, precisions=prec)
    with pytest.raises(LinAlgError):
        mlpgx.mlpg(_means(), precisions=prec)
    # check_finite=False: no scan at all, before or after
    out = mlpgx.mlpg(m, check_finite=False)
    assert not np.isfinite(out).all()


# ---------------------------------------------------------------------------
# The deferred weights check: for windows reaching one frame to each side
# the cython backend's kernel checks the per-frame variances or precisions it
# reads, and the API layer scans the frames it may not read (the first and
# last frames where the boundary rule drops a window) after it.  A bad
# weight anywhere must still raise, with the message of the up-front check
# (which the reference backend, which checks nothing itself, gets).
# ---------------------------------------------------------------------------

def _bad_weights(kind, dtype):
    if kind == "variances":
        tiny = SMALLEST_VARIANCE[np.dtype(dtype)]
        below = np.nextafter(tiny, dtype(0))     # its reciprocal overflows
        # (-0.0: its reciprocal, -inf, has the sign bit set; the float32
        # kernel checks the reciprocals' bits: mlpgx_band2_impl.h)
        return [np.nan, 0.0, -0.0, -1.0, -np.inf, below]
    return [np.nan, -1.0, np.inf]


def _raised(call):
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("windows", ["delta", "one-sided", "wide", "static"])
@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii", "none"])
@pytest.mark.parametrize("kind", ["variances", "precisions"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, "float32-scan"])
@pytest.mark.parametrize("op", ["mlpg", "adjoint", "adjoint-given-output"])
def test_bad_weight_anywhere_raises_with_the_up_front_message(windows, boundary, kind, dtype,
                                                               op, monkeypatch):
    if dtype == "float32-scan":
        # the backend has the k <= 2 kernel check the weights it reads; the
        # up-front scan it replaces is tested all the same
        from mlpgx.backends.cython import CythonBackend
        monkeypatch.setattr(CythonBackend, "checks_weights", lambda self, pb: False)
        dtype = np.float32
    wins = _DEFER_WINDOWS[windows]
    Lw, Dw, Tw = len(wins), 2, 9
    lengths = np.array([Tw, 6, 1])
    mu = _means((3, Tw, Lw * Dw), dtype=dtype)
    w = _variances((3, Tw, Lw * Dw), dtype=dtype)
    grad = _means((3, Tw, Dw), seed=4, dtype=dtype)
    given = mlpgx.mlpg(mu, windows=wins, lengths=lengths, boundary=boundary, **{kind: w}) \
        if op == "adjoint-given-output" else None

    def run(weights, backend):
        opts = dict(windows=wins, lengths=lengths, boundary=boundary, backend=backend,
                    **{kind: weights})
        if op == "mlpg":
            return mlpgx.mlpg(mu, **opts)
        return mlpgx.mlpg_adjoint(grad, mu, output=given, **opts)

    checked = 0
    for b in range(3):
        for t in range(lengths[b]):
            for col in range(Lw * Dw):
                for bad in _bad_weights(kind, dtype):
                    x = w.copy()
                    x[b, t, col] = bad
                    want = _raised(lambda: run(x, "reference"))
                    assert f"{kind}[{b}, {t}, {col}] = " in want, want
                    assert _raised(lambda: run(x, "cython")) == want
                    checked += 1
    assert checked == (Tw + 6 + 1) * Lw * Dw * len(_bad_weights(kind, dtype))
    # padding may still hold anything
    x = w.copy()
    x[1, 6:] = np.nan
    x[2, 1:] = -1.0
    clean = np.where(np.isfinite(x) & (x > 0), x, 1)
    got, want = run(x, "cython"), run(clean, "cython")
    for a, b in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["variances", "precisions"])
def test_bad_weight_after_a_general_kernel_rerun_is_named(kind):
    # the k <= 2 kernel hands a system whose pivot it finds non-positive to
    # the general kernel, which does not check weights: when that one solves
    # it (a rounding borderline), the weights of the rows the first kernel
    # did not reach are checked on their own; forced here for every solve
    from mlpgx._ext import solver
    m, w = _means(), _variances()
    before = solver._rerun_general(True)
    try:
        np.testing.assert_allclose(mlpgx.mlpg(m, **{kind: w}),
                                   mlpgx.mlpg(m, backend="reference", **{kind: w}), rtol=1e-12)
        for t in (0, 1, T // 2, T - 2, T - 1):
            x = w.copy()
            x[t, D + 1] = -1.0
            want = _raised(lambda: mlpgx.mlpg(m, backend="reference", **{kind: x}))
            assert _raised(lambda: mlpgx.mlpg(m, **{kind: x})) == want
            assert _raised(lambda: mlpgx.mlpg_adjoint(m[:, :D], m, **{kind: x})) == want
    finally:
        solver._rerun_general(before)


def test_deferred_weights_check_keeps_the_order_of_errors():
    # bad means first, then bad weights, then everything the up-front check
    # came before: grad_output, output=, an unknown backend, a singular R
    m, v = _means(), _variances()
    v[T // 2, D] = np.nan                               # read by the kernel
    v_edge = _variances()
    v_edge[0, D] = -1.0                                 # dropped by the boundary rule
    g = _means((T, D), seed=2)
    for bad_v, where in ((v, f"[{T // 2}, {D}]"), (v_edge, f"[0, {D}]")):
        msg = r"^variances must be positive \(\+inf allowed: no constraint\); variances" + \
            re.escape(where)
        m_bad = m.copy()
        m_bad[3, 1] = np.inf
        with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
            mlpgx.mlpg(m_bad, bad_v)
        with pytest.raises(ValueError, match=r"^means must be finite; means\[3, 1\]"):
            mlpgx.mlpg_adjoint(g, m_bad, bad_v)
        with pytest.raises(ValueError, match=msg):
            mlpgx.mlpg(m, bad_v)
        with pytest.raises(ValueError, match=msg):
            mlpgx.mlpg(m, bad_v, backend="no-such-backend")
        with pytest.raises(ValueError, match=msg):
            mlpgx.mlpg_adjoint(g[:-1], m, bad_v)                 # bad grad_output shape
        g_bad = g.copy()
        g_bad[2, 0] = np.nan
        with pytest.raises(ValueError, match=msg):
            mlpgx.mlpg_adjoint(g_bad, m, bad_v)
        with pytest.raises(ValueError, match=msg):
            mlpgx.mlpg_adjoint(g, m, bad_v, output=g_bad)
        # a singular R (no constraint anywhere): the bad weight is named first
        singular = np.where(np.isnan(bad_v) | (bad_v < 0), bad_v, np.inf)
        with pytest.raises(ValueError, match=msg):
            mlpgx.mlpg(m, singular)
        with pytest.raises(ValueError, match=msg):
            mlpgx.mlpg_adjoint(g, m, singular)
    prec = np.zeros((T, LD))
    prec[T // 2, 0] = -2.0
    with pytest.raises(ValueError, match=r"^precisions must be >= 0; precisions\[" +
                       str(T // 2) + r", 0\]"):
        mlpgx.mlpg(m, precisions=prec)
    singular = np.full((T, LD), np.inf)
    with pytest.raises(LinAlgError):
        mlpgx.mlpg(m, singular)


def test_per_frame_weights_are_not_scanned_before_the_band2_kernel(monkeypatch):
    # the point of the deferred check: no pass over the whole weight array
    # (the k <= 2 kernel checks what it reads; the API scans only edge frames)
    import mlpgx._validate as validate
    sizes = []
    real = validate._weights_ok

    def counting(w, kind, num_threads=None):
        sizes.append(w.size)
        return real(w, kind, num_threads)

    edges = []
    real_edges = validate._edge_frames_ok

    def counting_edges(x, lengths, K, check="finite", kind=None):
        if check == "weights":
            edges.append(K)
        return real_edges(x, lengths, K, check, kind)

    monkeypatch.setattr(validate, "_weights_ok", counting)
    monkeypatch.setattr(validate, "_edge_frames_ok", counting_edges)
    for dtype in (np.float64, np.float32):
        m, v = _means(dtype=dtype), _variances(dtype=dtype)
        c = mlpgx.mlpg(m, v)
        mlpgx.mlpg_adjoint(c, m, v)
        mlpgx.mlpg_adjoint(c, m, v, output=c)
        assert all(size < v.size // 4 for size in sizes), (dtype, sizes)
        assert edges == [DELTA.max_halfwidth] * 3, (dtype, edges)    # one edge scan per call
        edges.clear()
    sizes.clear()
    mlpgx.mlpg(m, v, backend="reference")               # checks nothing itself
    assert v.size in sizes
    sizes.clear()
    wide = as_windows([(0, 0, [1.0]), (2, 2, [0.1, 0.2, 0.0, -0.2, -0.1])])
    mlpgx.mlpg(_means((T, 2 * D)), _variances((T, 2 * D)), wide)   # the general kernel
    assert 2 * T * D in sizes


@pytest.mark.parametrize("op", ["mlpg", "adjoint"])
def test_window_set_beyond_the_compiled_term_table_names_the_way_out(op):
    # a 401-tap regression window: more (offset, window) terms than the
    # compiled general kernel's table holds; the error says which backend
    # takes it, and that backend does
    from mlpgx.windows import regression
    wins = regression([200])
    mu, var = _means((7, 2)), _variances((7, 2))
    before = (mu.copy(), var.copy())

    def call(backend):
        if op == "mlpg":
            return mlpgx.mlpg(mu, var, wins, backend=backend)
        return mlpgx.mlpg_adjoint(_means((7, 1), seed=3), mu, var, wins, backend=backend)

    with pytest.raises(ValueError, match=r"401 distinct .* at most 256 .*'cython' backend; "
                                         r"backend='reference'"):
        call("cython")
    ref = call("reference")
    # T = 7 < 401: every dynamic frame dropped (per-window), the static stream stays
    expected = mlpgx.mlpg(mu[:, :1], var[:, :1], as_windows([[1.0]]), backend="reference")
    if op == "mlpg":
        np.testing.assert_allclose(ref, expected, rtol=1e-12)
    else:   # the dropped window's frames get zero gradient
        gm, gv = ref
        assert gm.shape == gv.shape == mu.shape
        assert not gm[:, 1].any() and not gv[:, 1].any() and gm[:, 0].all()
    np.testing.assert_array_equal(mu, before[0])
    np.testing.assert_array_equal(var, before[1])

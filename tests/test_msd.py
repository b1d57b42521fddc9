"""Voiced/unvoiced (MSD) streams: ``voiced=`` in every backend and in torch.

The reference applies the voicing rule plainly (dropped rows, unknowns
restricted to voiced frames); the other backends receive the lowered plain
problem.  Independently of both, the HTS rule makes every voiced run its own
sequence, and consistent log F0 features are reproduced exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

import mlpgx
from mlpgx.data import LF0, VUV, load_arctic_a0001
from mlpgx.windows import DELTA, as_windows

from conftest import to_backend, to_numpy
from test_against_reference import WINDOW_PARAMS, make_weights

RTOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]
BOUNDARIES = ["per-window", "nnmnkwii", "none"]
RULES = ["hts", "sptk"]
WEIGHT_FORMS = ["per-frame", "global", "precisions", "unit", "inf"]


def random_voicing(rng, shape, p_unvoiced=0.3):
    """Runs of voiced and unvoiced frames (like F0), along axis -2 of a
    ``(..., T, X)`` shape or the last axis of ``(..., T)``."""
    flips = rng.random(shape) < p_unvoiced / 2
    return (np.cumsum(flips, axis=-1 if len(shape) == 1 else 1) % 2 == 0)


def _case(rng, dtype, windows, per_dim, form, B=2, T=37, D=3):
    L = len(windows)
    means = rng.standard_normal((B, T, L * D)).astype(dtype)
    wkw = make_weights(rng, form, means.shape, L, D, dtype)
    voiced = random_voicing(rng, (B, T, D) if per_dim else (B, T))
    lengths = np.array([T, T - 9][:B])
    return means, wkw, voiced, lengths


# -- every backend against the reference ------------------------------------------

@pytest.mark.parametrize("form", WEIGHT_FORMS)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("windows", WINDOW_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backend_matches_reference(backend, dtype, windows, boundary, rule, form, rng):
    per_dim = form in ("global", "inf")       # both mask forms across the grid
    means, wkw, voiced, lengths = _case(rng, dtype, windows, per_dim, form)
    kw = dict(windows=windows, lengths=lengths, boundary=boundary, voiced=voiced,
              msd_rule=rule)
    originals = [means.copy(), voiced.copy()] + [v.copy() for v in wkw.values()
                                                 if v is not None]
    rep = mlpgx.verify(to_backend(means, backend), backend=backend, rtol=RTOL[dtype],
                       **{k: to_backend(v, backend) for k, v in wkw.items()},
                       **kw)
    assert rep.passed, str(rep)

    # public API: markers, zeros past the lengths, dtype
    out = to_numpy(mlpgx.mlpg(to_backend(means, backend), backend=backend,
                              unvoiced_value=-1e10,
                              **{k: to_backend(v, backend) for k, v in wkw.items()}, **kw))
    ref = mlpgx.mlpg(means, backend="reference", unvoiced_value=-1e10, **wkw, **kw)
    assert out.dtype == dtype
    v3 = voiced if per_dim else np.broadcast_to(voiced[..., None], out.shape)
    inside = np.broadcast_to(np.arange(out.shape[1])[None, :, None] < lengths[:, None, None],
                             out.shape)
    np.testing.assert_array_equal(out[inside & ~v3], -1e10)
    np.testing.assert_array_equal(out[~inside], 0.0)
    np.testing.assert_allclose(out, ref, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * 10 * np.abs(ref[inside & v3]).max())
    for a, b in zip([means, voiced] + [v for v in wkw.values() if v is not None], originals):
        np.testing.assert_array_equal(a, b)


# -- the rule itself, checked without either implementation of it --------------------

def _runs(mask):
    """``[(start, stop), ...]`` of the True runs of a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


@pytest.mark.parametrize("backend_name", ["cython", "reference"])
def test_hts_rule_solves_each_voiced_run_as_its_own_sequence(backend_name, rng):
    T, D = 120, 2
    means = rng.standard_normal((T, 3 * D))
    var = rng.uniform(0.5, 2, (T, 3 * D))
    voiced = random_voicing(rng, (T,), 0.2)
    out = mlpgx.mlpg(means, var, voiced=voiced, backend=backend_name)
    runs = _runs(voiced)
    assert len(runs) >= 3
    for a, b in runs:
        np.testing.assert_allclose(out[a:b], mlpgx.mlpg(means[a:b], var[a:b],
                                                        backend="reference"),
                                   rtol=1e-12, atol=1e-12)
    assert np.isnan(out[~voiced]).all()


def test_sptk_rule_skips_zero_coefficients():
    # one unvoiced frame t=5: HTS drops the delta rows at 4, 5, 6; SPTK keeps
    # the one at t=5 (its centre coefficient is 0), which couples the runs
    T = 11
    voiced = np.ones(T, dtype=bool)
    voiced[5] = False
    rng = np.random.default_rng(0)
    means = rng.standard_normal((T, 3))
    keep = {}
    for rule in RULES:
        pb = mlpgx._validate.make_problem(means, windows=DELTA, voiced=voiced, msd_rule=rule)
        keep[rule] = mlpgx._msd.problem_keep_mask(pb)[0]
    assert not keep["hts"][4:7, 1].any()
    assert keep["sptk"][5, 1] and not keep["sptk"][4, 1] and not keep["sptk"][6, 1]
    assert not keep["hts"][4:7, 2].any() and not keep["sptk"][4:7, 2].any()
    hts = mlpgx.mlpg(means, voiced=voiced)
    sptk = mlpgx.mlpg(means, voiced=voiced, msd_rule="sptk")
    np.testing.assert_allclose(hts[:5], mlpgx.mlpg(means[:5]), rtol=1e-12)
    assert not np.allclose(hts[:5], sptk[:5])
    np.testing.assert_allclose(sptk, mlpgx.mlpg(means, voiced=voiced, msd_rule="sptk",
                                                backend="reference"), rtol=1e-12)


def test_arctic_lf0_is_reproduced_on_voiced_frames():
    # the features' deltas are consistent with the static stream (to float32
    # rounding), so the natural log F0 meets every constraint the rule keeps
    feats = load_arctic_a0001().astype(np.float64)
    lf0, vuv = feats[:, LF0], feats[:, VUV]
    voiced = vuv > 0.5
    assert 0 < voiced.sum() < len(voiced)
    for rule in RULES:
        out = mlpgx.mlpg(lf0, voiced=vuv, msd_rule=rule)
        np.testing.assert_allclose(out[voiced, 0], lf0[voiced, 0], rtol=1e-6)  # f32 data
        assert np.isnan(out[~voiced]).all()
    # with noise: every backend against the reference, f32 and f64
    noisy = lf0 + np.random.default_rng(1).normal(0, 0.05, lf0.shape)
    var = np.full(3, 0.01)
    for dtype in (np.float64, np.float32):
        rep = mlpgx.verify(noisy.astype(dtype), var.astype(dtype), voiced=voiced,
                           backend="cython", rtol=RTOL[dtype])
        assert rep.passed, str(rep)


def test_dropped_values_are_never_read():
    rng = np.random.default_rng(2)
    T = 50
    means = rng.standard_normal((T, 6))
    var = rng.uniform(0.5, 2, (T, 6))
    voiced = random_voicing(rng, (T,), 0.3)
    pb = mlpgx._validate.make_problem(means, var, DELTA, voiced=voiced)
    dropped = ~mlpgx._msd.problem_keep_mask(pb)[0]
    assert dropped.any()
    m2, v2 = means.copy(), var.copy()
    m2[dropped] = np.nan            # model outputs at unvoiced frames, magic numbers...
    v2[dropped] = -1.0
    g = rng.standard_normal((T, 2))
    g2 = g.copy()
    g2[~voiced] = np.nan            # the loss of marker frames
    for backend_name in ("cython", "reference"):
        a = mlpgx.mlpg(means, var, voiced=voiced, backend=backend_name)
        b = mlpgx.mlpg(m2, v2, voiced=voiced, backend=backend_name)
        np.testing.assert_array_equal(a, b)
        ga = mlpgx.mlpg_adjoint(g, means, var, voiced=voiced, backend=backend_name)
        gb = mlpgx.mlpg_adjoint(g2, m2, v2, voiced=voiced, backend=backend_name)
        # given the forward's output, whose unvoiced frames hold the NaN marker
        assert np.isnan(b[~voiced]).all()
        gc = mlpgx.mlpg_adjoint(g2, m2, v2, voiced=voiced, output=b, backend=backend_name)
        for x, y, z in zip(ga, gb, gc):
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(z, y)
            assert (x[dropped] == 0).all()
    # a kept entry is still checked, with its index
    m3 = means.copy()
    t = int(np.flatnonzero(voiced)[3])
    m3[t, 0] = np.nan
    with pytest.raises(ValueError, match=rf"means must be finite; means\[{t}, 0\]"):
        mlpgx.mlpg(m3, var, voiced=voiced)


def test_adjoint_dot_test_and_finite_differences():
    rng = np.random.default_rng(3)
    B, T, D = 2, 40, 2
    means = rng.standard_normal((B, T, 3 * D))
    var = rng.uniform(0.5, 2, (B, T, 3 * D))
    voiced = random_voicing(rng, (B, T, D), 0.3)
    kw = dict(voiced=voiced, unvoiced_value=0.0, lengths=[40, 31])
    g = rng.standard_normal((B, T, D))
    gm, gv = mlpgx.mlpg_adjoint(g, means, var, voiced=voiced, lengths=[40, 31])
    dmu = rng.standard_normal(means.shape)
    # mlpg is linear in the means when the marker is 0
    assert np.isclose(np.vdot(mlpgx.mlpg(dmu, var, **kw), g), np.vdot(dmu, gm), rtol=1e-10)
    dvar = rng.standard_normal(var.shape) * 1e-6
    fd = np.vdot(mlpgx.mlpg(means, var + dvar, **kw) - mlpgx.mlpg(means, var - dvar, **kw),
                 g) / 2
    assert np.isclose(fd, np.vdot(dvar, gv), rtol=1e-6)


def test_all_unvoiced_and_lengths():
    means = np.ones((2, 10, 3))
    out = mlpgx.mlpg(means, voiced=np.zeros((2, 10), bool), lengths=[10, 6],
                     unvoiced_value=-1.0)
    np.testing.assert_array_equal(out[0], -1.0)
    np.testing.assert_array_equal(out[1, :6], -1.0)
    np.testing.assert_array_equal(out[1, 6:], 0.0)      # padding stays 0
    gm, _ = mlpgx.mlpg_adjoint(np.ones((2, 10, 1)), means, voiced=np.zeros((2, 10), bool))
    np.testing.assert_array_equal(gm, 0.0)
    ref = mlpgx.mlpg(means, voiced=np.zeros((2, 10), bool), backend="reference")
    assert np.isnan(ref).all()


def test_vuv_column_and_bool_masks_agree():
    rng = np.random.default_rng(4)
    means = rng.standard_normal((30, 3))
    mask = random_voicing(rng, (30,))
    a = mlpgx.mlpg(means, voiced=mask)
    np.testing.assert_array_equal(a, mlpgx.mlpg(means, voiced=mask.astype(np.float32)))
    np.testing.assert_array_equal(a, mlpgx.mlpg(means, voiced=mask.astype(int).tolist()))
    np.testing.assert_array_equal(a, mlpgx.mlpg(means, voiced=mask[:, None]))   # (T, D)


# -- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("voiced, exc, match", [
    (np.ones(9, bool), ValueError, r"voiced must have shape \(T,\) = \(10,\)"),
    (np.ones((10, 3), bool), ValueError, r"\(T, D\) = \(10, 2\)"),
    (np.full(10, 0.5), ValueError, r"voiced must be boolean or 0/1; voiced\[0\] = "),
    (np.full(10, 2), ValueError, r"boolean or 0/1"),
    (np.ones(10, complex), TypeError, r"voiced must be a boolean \(or 0/1\) array"),
    (np.array(["a"] * 10), TypeError, r"voiced must be a boolean"),
    (np.ones(10, object), TypeError, r"voiced must be a boolean"),
])
def test_bad_voiced(voiced, exc, match):
    means = np.zeros((10, 6))
    with pytest.raises(exc, match=match):
        mlpgx.mlpg(means, voiced=voiced)


def test_bad_voiced_batched_shape_and_options():
    means = np.zeros((2, 10, 6))
    with pytest.raises(ValueError, match=r"\(B, T\) = \(2, 10\)"):
        mlpgx.mlpg(means, voiced=np.ones(10, bool))
    with pytest.raises(ValueError, match=r"msd_rule must be one of 'hts', 'sptk'; got 'x'"):
        mlpgx.mlpg(means, voiced=np.ones((2, 10), bool), msd_rule="x")
    with pytest.raises(TypeError, match="unvoiced_value must be a real number"):
        mlpgx.mlpg(means, voiced=np.ones((2, 10), bool), unvoiced_value="nan")
    with pytest.raises(ValueError, match="grad_output must have shape"):
        mlpgx.mlpg_adjoint(np.zeros((10, 2)), means, voiced=np.ones((2, 10), bool))
    with pytest.raises(ValueError, match=r"grad_output must be finite; grad_output\[0, 0, 0\]"):
        mlpgx.mlpg_adjoint(np.full((2, 10, 2), np.nan), means,
                           voiced=np.ones((2, 10), bool))


def test_isolated_voiced_frame_keeps_its_static_value():
    means = np.arange(7.0)[:, None] * np.array([[1.0, 0.3, 0.2]])
    voiced = np.array([0, 0, 0, 1, 0, 0, 0], bool)
    out = mlpgx.mlpg(means, voiced=voiced)
    assert out[3, 0] == 3.0 and np.isnan(np.delete(out[:, 0], 3)).all()


# -- torch --------------------------------------------------------------------------

def test_torch_matches_numpy_and_gradchecks():
    torch = pytest.importorskip("torch")
    import mlpgx.torch as mt

    rng = np.random.default_rng(5)
    B, T, D = 2, 25, 2
    voiced = random_voicing(rng, (B, T), 0.3)
    lengths = [25, 18]
    m = torch.tensor(rng.standard_normal((B, T, 3 * D)), requires_grad=True)
    v = torch.tensor(rng.uniform(0.5, 2, (B, T, 3 * D)), requires_grad=True)
    for rule in RULES:
        out = mt.mlpg(m, v, voiced=torch.as_tensor(voiced), lengths=lengths, msd_rule=rule,
                      unvoiced_value=-7.0)
        ref = mlpgx.mlpg(m.detach().numpy(), v.detach().numpy(), voiced=voiced,
                         lengths=lengths, msd_rule=rule, unvoiced_value=-7.0)
        np.testing.assert_array_equal(out.detach().numpy(), ref)
        g = torch.tensor(rng.standard_normal((B, T, D)))
        gm, gv = torch.autograd.grad(out, (m, v), g)
        rgm, rgv = mlpgx.mlpg_adjoint(g.numpy(), m.detach().numpy(), v.detach().numpy(),
                                      voiced=voiced, lengths=lengths, msd_rule=rule)
        np.testing.assert_allclose(gm.numpy(), rgm, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gv.numpy(), rgv, rtol=1e-12, atol=1e-14)

    def f(m, v):
        return mt.mlpg(m, v, voiced=voiced, lengths=lengths, unvoiced_value=0.0)

    small_m = m[:, :12].detach().clone().requires_grad_()
    small_v = v[:, :12].detach().clone().requires_grad_()
    voiced = voiced[:, :12]
    lengths = [12, 9]
    assert torch.autograd.gradcheck(f, (small_m, small_v))
    assert torch.autograd.gradgradcheck(f, (small_m, small_v))


def test_torch_layer_global_variances_and_nan_inputs():
    torch = pytest.importorskip("torch")
    import mlpgx.torch as mt

    rng = np.random.default_rng(6)
    T = 30
    voiced = random_voicing(rng, (T,), 0.3)
    means = rng.standard_normal((T, 3))
    means[~voiced] = np.nan                                 # never read
    gvar = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64, requires_grad=True)
    mu = torch.tensor(means, requires_grad=True)
    layer = mt.MLPGLayer(unvoiced_value=0.0)
    out = layer(mu, gvar, voiced=torch.as_tensor(voiced))
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(gvar.grad).all()
    assert (mu.grad[torch.as_tensor(~voiced)] == 0).all()
    _, rg = mlpgx.mlpg_adjoint(2 * out.detach().numpy(), means, gvar.detach().numpy(),
                               voiced=voiced)
    np.testing.assert_allclose(gvar.grad.numpy(), rg, rtol=1e-12)
    with pytest.raises(ValueError, match="voiced must have shape"):
        mt.mlpg(mu, gvar, voiced=np.ones(T + 1, bool))


def test_torch_compile_and_vmap_with_voicing():
    torch = pytest.importorskip("torch")
    import mlpgx.torch as mt
    from torch.func import vmap

    torch.manual_seed(0)
    m = torch.randn(2, 30, 6, dtype=torch.float64, requires_grad=True)
    v = torch.rand(2, 30, 6, dtype=torch.float64) + 0.5
    voiced = torch.rand(2, 30) > 0.3

    def f(m, v):
        return mt.mlpg(m, v, voiced=voiced, unvoiced_value=0.0)

    eager = f(m, v)
    compiled = torch.compile(f, fullgraph=True)(m, v)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    g_eager, = torch.autograd.grad(eager.sum(), m)
    g_comp, = torch.autograd.grad(compiled.sum(), m)
    torch.testing.assert_close(g_comp, g_eager, rtol=0, atol=0)
    mapped = vmap(lambda mm, vv, oo: mt.mlpg(mm, vv, voiced=oo, unvoiced_value=0.0))(
        m, v, voiced)
    torch.testing.assert_close(mapped, eager, rtol=1e-12, atol=1e-12)

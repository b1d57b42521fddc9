"""The means-only adjoint: ``mlpgx.mlpg_adjoint(..., weight_grad=False)``.

``dL/dmu_l = p_l W_l R^{-1} g`` depends on the weights and ``g`` alone, so a
caller whose variances need no gradient (MGE training with fixed or global
variances; ``mlpgx.torch`` when the variances do not require grad) asks for
it without the weights' gradient.  The grid of test_against_reference.py
checks it against the full adjoint on every backend, dtype, window set and
boundary rule (and bit for bit against the adjoint given the output on the
cython backend); test_band2_kernel.py runs both compiled kernels in that
mode.  Here: what the API promises around it (the means are not read or
scanned, the output is not read, the weights are still checked), the
voicing rule, the registry contract for backends without it, and the torch
backward that asks for it.
"""
from __future__ import annotations

import numpy as np
import pytest

import mlpgx
import mlpgx.backends as B
from mlpgx.backends import Backend
from mlpgx.windows import DELTA

from conftest import to_backend, to_numpy

T, D = 30, 4


def _inputs(seed=0, batch=None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    means = rng.standard_normal(lead + (T, 3 * D)).astype(dtype)
    var = rng.uniform(0.5, 2.0, lead + (T, 3 * D)).astype(dtype)
    g = rng.standard_normal(lead + (T, D)).astype(dtype)
    return means, var, g


@pytest.mark.parametrize("weights", ["variances", "precisions", "global", "unit"])
def test_equals_the_means_gradient_of_the_full_adjoint(backend, weights):
    means, var, g = _inputs(batch=3)
    wkw = {"variances": dict(variances=var), "precisions": dict(precisions=1.0 / var),
           "global": dict(variances=var[0, 0]), "unit": {}}[weights]
    kw = dict(lengths=[T, 17, 0], backend=backend)
    bkw = {k: to_backend(v, backend) for k, v in wkw.items()}
    gm, _ = mlpgx.mlpg_adjoint(to_backend(g, backend), to_backend(means, backend), **bkw, **kw)
    gm_m, gw_m = mlpgx.mlpg_adjoint(to_backend(g, backend), to_backend(means, backend), **bkw,
                                    **kw, weight_grad=False)
    assert gw_m is None
    np.testing.assert_allclose(to_numpy(gm_m), to_numpy(gm), rtol=1e-12, atol=1e-14)
    ref, _ = mlpgx.mlpg_adjoint(g, means, **wkw, lengths=[T, 17, 0], backend="reference",
                                weight_grad=False)
    np.testing.assert_allclose(to_numpy(gm_m), ref, rtol=1e-12, atol=1e-14)
    assert np.all(to_numpy(gm_m)[1, 17:] == 0) and np.all(to_numpy(gm_m)[2] == 0)


def test_the_means_are_not_read_or_scanned(backend):
    """The means gradient does not depend on the means: NaN/inf means give
    the same gradient and no error; only their shape and dtype count."""
    means, var, g = _inputs()
    want, _ = mlpgx.mlpg_adjoint(g, means, var, backend="reference")
    bad = means.copy()
    bad[3, 1], bad[7, D + 2] = np.nan, np.inf
    got, gw = mlpgx.mlpg_adjoint(to_backend(g, backend), to_backend(bad, backend),
                                 to_backend(var, backend), backend=backend, weight_grad=False)
    assert gw is None
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-14)
    # the full adjoint still reports them
    gb, vb = to_backend(g, backend), to_backend(var, backend)
    with pytest.raises(ValueError, match=r"means must be finite; means\[3, 1\]"):
        mlpgx.mlpg_adjoint(gb, to_backend(bad, backend), vb, backend=backend)
    with pytest.raises(ValueError, match="means"):
        mlpgx.mlpg_adjoint(gb, to_backend(means[:, :-1], backend), vb, backend=backend,
                           weight_grad=False)
    with pytest.raises(TypeError, match="means"):
        mlpgx.mlpg_adjoint(gb, to_backend(means.astype(np.complex128), backend), vb,
                           backend=backend, weight_grad=False)


def test_the_weights_and_grad_output_are_still_checked(backend):
    means, var, g = _inputs()
    on = lambda a: to_backend(a, backend)   # noqa: E731
    bad_var = var.copy()
    bad_var[5, 2] = -1.0
    with pytest.raises(ValueError, match=r"variances\[5, 2\]"):
        mlpgx.mlpg_adjoint(on(g), on(means), on(bad_var), backend=backend, weight_grad=False)
    bad_g = g.copy()
    bad_g[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"grad_output must be finite; grad_output\[4, 0\]"):
        mlpgx.mlpg_adjoint(on(bad_g), on(means), on(var), backend=backend, weight_grad=False)
    # a singular system is still an error naming the frame
    prec = np.ones_like(means)
    prec[10:13] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match="t=11"):
        mlpgx.mlpg_adjoint(on(g), on(means), precisions=on(prec), backend=backend,
                           weight_grad=False)


def test_output_is_not_read_but_its_shape_is_checked(backend):
    means, var, g = (to_backend(a, backend) for a in _inputs())
    want, _ = mlpgx.mlpg_adjoint(g, means, var, backend=backend, weight_grad=False)
    junk = to_backend(np.full((T, D), np.nan), backend)
    got, gw = mlpgx.mlpg_adjoint(g, means, var, output=junk, backend=backend,
                                 weight_grad=False)
    assert gw is None
    np.testing.assert_array_equal(to_numpy(got), to_numpy(want))
    with pytest.raises(ValueError, match="output"):
        mlpgx.mlpg_adjoint(g, means, var, output=to_backend(np.zeros((T, D + 1)), backend),
                           backend=backend, weight_grad=False)


@pytest.mark.parametrize("flag", [0, 1, None, "no", np.array([True])])
def test_weight_grad_must_be_a_bool(flag):
    means, var, g = _inputs()
    with pytest.raises(TypeError, match="weight_grad must be a bool"):
        mlpgx.mlpg_adjoint(g, means, var, weight_grad=flag)


def test_inputs_untouched_and_float32(backend):
    means, var, g = _inputs(batch=2, dtype=np.float32)
    copies = [a.copy() for a in (means, var, g)]
    gm32, gw = mlpgx.mlpg_adjoint(to_backend(g, backend), to_backend(means, backend),
                                  to_backend(var, backend), backend=backend, weight_grad=False)
    assert gw is None and to_numpy(gm32).dtype == np.float32
    for before, now in zip(copies, (means, var, g)):
        np.testing.assert_array_equal(before, now)
    want, _ = mlpgx.mlpg_adjoint(g.astype(np.float64), means.astype(np.float64),
                                 var.astype(np.float64), backend="reference")
    scale = np.abs(want).max()
    assert np.abs(to_numpy(gm32) - want).max() <= 1e-5 * scale


def test_voicing_rule():
    """With an MSD mask the dropped constraints get exactly 0, and the values
    there (NaN means and -1 variances, as a model may output) are ignored."""
    rng = np.random.default_rng(5)
    means, var, g = _inputs(seed=5)
    voiced = rng.random(T) > 0.3
    voiced[:4] = True
    full, _ = mlpgx.mlpg_adjoint(g, means, var, voiced=voiced)
    for backend in ("cython", "reference"):
        got, gw = mlpgx.mlpg_adjoint(g, means, var, voiced=voiced, backend=backend,
                                     weight_grad=False)
        assert gw is None
        np.testing.assert_allclose(got, full, rtol=1e-12, atol=1e-14)
    pb = mlpgx._validate.make_problem(means, var, DELTA, voiced=voiced)
    dropped = ~mlpgx._msd.problem_keep_mask(pb)[0]
    assert dropped.any() and np.all(full[dropped] == 0)
    m2, v2 = means.copy(), var.copy()
    m2[dropped], v2[dropped] = np.nan, -1.0
    got, _ = mlpgx.mlpg_adjoint(g, m2, v2, voiced=voiced, weight_grad=False)
    np.testing.assert_array_equal(got, full)


class PlainAdjoint(Backend):
    """A third-party backend without ``means_only_adjoint``: its adjoint
    takes no ``weight_grad`` (a TypeError if the API passed one)."""

    name = "plain"

    def __init__(self):
        self.calls = 0

    def forward(self, problem):
        return B.get("reference").forward(problem)

    def adjoint(self, problem, grad_output):
        self.calls += 1
        return B.get("reference").adjoint(problem, grad_output)


class CheckedReusing(PlainAdjoint):
    """Without ``means_only_adjoint``, reusing the output, with an
    ``adjoint_checked`` of the signature from before ``weight_grad``."""

    name = "checked-reusing"
    reuses_output = True

    def __init__(self):
        super().__init__()
        self.given = []

    def adjoint_checked(self, problem, grad_output, output=None):
        self.given.append(output is not None)
        ref = B.get("reference").adjoint(problem, grad_output)
        return ref, (False, False)


def test_backends_with_the_old_checked_signature_get_the_output_and_no_keyword():
    b = CheckedReusing()
    B.register("checked-test", b)
    try:
        means, var, g = _inputs()
        c = mlpgx.mlpg(means, var)
        gm, gw = mlpgx.mlpg_adjoint(g, means, var, output=c, backend="checked-test",
                                    weight_grad=False)
        assert gw is None and b.given == [True]
        want, _ = mlpgx.mlpg_adjoint(g, means, var, backend="reference")
        np.testing.assert_array_equal(gm, want)
    finally:
        B.unregister("checked-test")


def test_backends_without_it_compute_and_drop_the_weight_gradient():
    b = PlainAdjoint()
    B.register("plain-test", b)
    try:
        means, var, g = _inputs()
        gm, gw = mlpgx.mlpg_adjoint(g, means, var, backend="plain-test", weight_grad=False)
        assert gw is None and b.calls == 1
        want, _ = mlpgx.mlpg_adjoint(g, means, var, backend="reference")
        np.testing.assert_array_equal(gm, want)
        # verify checks the means-only path only where a backend has one
        rep = mlpgx.verify(means, var, backend="plain-test")
        assert rep.passed and "grad_means (weight_grad=False)" not in rep.results
    finally:
        B.unregister("plain-test")
    assert B.get("cython").means_only_adjoint and not B.get("reference").means_only_adjoint
    rep = mlpgx.verify(means, var, backend="cython")
    assert rep.passed and "grad_means (weight_grad=False)" in rep.results


def test_the_cython_kernel_runs_in_its_own_mode(monkeypatch):
    from mlpgx.backends import cython as cython_backend

    solver = cython_backend._solver
    modes = []
    real = solver.run

    def recording(mode, *args, **kwargs):
        modes.append((mode, args[4] is not None and args[4].size > 1))   # means passed?
        return real(mode, *args, **kwargs)

    monkeypatch.setattr(solver, "run", recording)
    means, var, g = _inputs()
    mlpgx.mlpg_adjoint(g, means, var, weight_grad=False)
    mlpgx.mlpg_adjoint(g, means, var)
    assert modes == [("adjoint_means", False), ("adjoint", True)]


# ---------------------------------------------------------------------------
# mlpgx.torch: the first-order backward asks for it when the weights need no
# gradient
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("global_w", [False, True])
@pytest.mark.parametrize("kind", ["variance", "precision"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_backward_uses_it_when_the_weights_need_no_gradient(monkeypatch, kind, dtype,
                                                                   global_w):
    torch = pytest.importorskip("torch")
    import mlpgx.torch as mt

    means, var, g = _inputs(batch=2, dtype=dtype)
    w = var[0, 0] if global_w else var
    w = w if kind == "variance" else (1.0 / w).astype(dtype)
    wkey = "variances" if kind == "variance" else "precisions"
    seen = []
    real = mlpgx.mlpg_adjoint
    monkeypatch.setattr(mlpgx, "mlpg_adjoint", lambda *a, **k: (
        seen.append((k.get("weight_grad", True), k.get("output") is not None)),
        real(*a, **k))[1])
    grads = []
    for w_needs_grad in (True, False):
        m = torch.from_numpy(means).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_(w_needs_grad)
        mt.mlpg(m, **{wkey: tw}, windows=DELTA, lengths=[T, 21]).backward(torch.from_numpy(g))
        grads.append(m.grad.numpy())
        assert (tw.grad is not None) == w_needs_grad
    # the output is passed either way (the cuda backend reads it; the cython
    # backend's means-only adjoint does not)
    assert seen == [(True, True), (False, True)]
    np.testing.assert_array_equal(grads[1], grads[0])

"""Differentiable GV generation (:mod:`mlpgx._torch_gv`): the forward equals the
NumPy API, gradients by implicit differentiation pass ``gradcheck``."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mlpgx  # noqa: E402
import mlpgx._torch_gv  # noqa: E402
from mlpgx._torch_gv import mlpg_gv  # noqa: E402
from mlpgx.gv import mlpg_gv as np_mlpg_gv  # noqa: E402


def case(B=2, T=12, D=2, seed=0, seg=3):
    rng = np.random.default_rng(seed)
    static = np.repeat(rng.normal(size=(B, -(-T // seg), D)), seg, axis=1)[:, :T]
    means = np.concatenate([static, 0.1 * rng.normal(size=(B, T, 2 * D))], axis=2)
    var = rng.uniform(0.5, 2.0, size=means.shape)
    mv = 2.0 * static.var(axis=1)
    return means, var, mv


def leaf(x):
    return torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)


def test_forward_equals_numpy():
    means, var, mv = case(T=30, seed=1)
    c = mlpg_gv(torch.tensor(means), torch.tensor(var), gv_mean=torch.tensor(mv),
                gv_variance=[1e-2, 1e-2], lengths=[30, 21])
    ref = np_mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-2], lengths=[30, 21])
    assert c.dtype == torch.float64
    np.testing.assert_array_equal(c.numpy(), ref)
    c32 = mlpg_gv(torch.tensor(means, dtype=torch.float32),
                  torch.tensor(var, dtype=torch.float32), gv_mean=mv, gv_variance=[1e-2, 1e-2],
                  lengths=[30, 21])
    assert c32.dtype == torch.float32


@pytest.mark.parametrize("boundary", ["per-window", "none"])
def test_gradcheck_variances(boundary):
    means, var, mv = case(seed=2)
    inputs = (leaf(means), leaf(var), leaf(mv), leaf([1e-2, 1e-1]))

    def f(m, v, a, b):
        return mlpg_gv(m, v, gv_mean=a, gv_variance=b, tol=1e-13, lengths=[12, 9],
                       boundary=boundary)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_full_small():
    """The whole Jacobian on a tiny problem (target below and above MLPG's)."""
    means, var, mv = case(B=1, T=8, D=2, seed=3)
    mv = mv * np.array([[3.0, 0.3]])
    inputs = (leaf(means), leaf(var), leaf(mv[0]), leaf([1e-2, 1e-1]))

    def f(m, v, a, b):
        return mlpg_gv(m[0], v[0], gv_mean=a, gv_variance=b, tol=1e-13)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_precisions_global_and_ml_weight():
    means, var, mv = case(seed=4)
    inputs = (leaf(means), leaf(1.0 / var[0, 0]), leaf(mv))

    def f(m, p, a):
        return mlpg_gv(m, precisions=p, gv_mean=a, gv_variance=[1e-2, 1e-2], tol=1e-13,
                       ml_weight=0.05, gv_weight=2.0, windows=[1, 1])

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_voiced():
    means, var, mv = case(B=2, T=16, D=2, seed=5)
    voiced = np.ones((2, 16, 2), bool)
    voiced[0, 4:7, 0] = False
    voiced[1, 10:, 1] = False
    voiced[1, :2, 0] = False
    inputs = (leaf(means), leaf(var), leaf(mv), leaf([1e-2, 1e-1]))

    def f(m, v, a, b):
        out = mlpg_gv(m, v, gv_mean=a, gv_variance=b, tol=1e-13, lengths=[16, 13],
                      voiced=torch.tensor(voiced), unvoiced_value=0.0)
        return out

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    out = f(*inputs)
    ref = np_mlpg_gv(means, var, gv_mean=mv, gv_variance=[1e-2, 1e-1], tol=1e-13,
                     lengths=[16, 13], voiced=voiced, unvoiced_value=0.0)
    np.testing.assert_array_equal(out.detach().numpy(), ref)
    out.sum().backward()
    g = inputs[0].grad.numpy()
    assert np.isfinite(g).all()


def test_gv_weight_zero_gradient_is_mlpg_gradient():
    import mlpgx.torch as mt

    means, var, mv = case(seed=6, T=20)
    m1, v1 = leaf(means), leaf(var)
    c = mlpg_gv(m1, v1, gv_mean=mv, gv_variance=[1.0, 1.0], gv_weight=0.0)
    w = torch.randn(c.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (c * w).sum().backward()
    m2, v2 = leaf(means), leaf(var)
    (mt.mlpg(m2, v2) * w).sum().backward()
    np.testing.assert_allclose(m1.grad.numpy(), m2.grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(v1.grad.numpy(), v2.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_padding_may_hold_anything():
    # NaN means and zero variances beyond the lengths: the results and
    # gradients of the unpadded sequence, zero gradients in the padding
    rng = np.random.default_rng(0)
    m, v = rng.normal(size=(2, 8, 6)), rng.uniform(0.5, 2.0, (2, 8, 6))
    m[0, 5:], v[0, 5:] = np.nan, 0.0
    stats = dict(gv_mean=torch.full((2,), 0.5, dtype=torch.float64),
                 gv_variance=torch.ones(2, dtype=torch.float64))
    tm, tv = torch.tensor(m, requires_grad=True), torch.tensor(v, requires_grad=True)
    out = mlpg_gv(tm, tv, lengths=torch.tensor([5, 8]), **stats)
    out.sum().backward()
    um = torch.tensor(m[0, :5], requires_grad=True)
    uv = torch.tensor(v[0, :5], requires_grad=True)
    ref = mlpg_gv(um, uv, **stats)
    ref.sum().backward()
    torch.testing.assert_close(out[0, :5], ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tm.grad[0, :5], um.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(tv.grad[0, :5], uv.grad, rtol=1e-8, atol=1e-10)
    assert torch.all(tm.grad[0, 5:] == 0) and torch.all(tv.grad[0, 5:] == 0)
    assert torch.all(out[0, 5:] == 0)


def test_bad_input():
    means = torch.zeros(10, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="gv_mean is required"):
        mlpg_gv(means, gv_variance=[1.0, 1.0])
    with pytest.raises(ValueError, match="gv_variance must be positive"):
        mlpg_gv(means, gv_mean=[1.0, 1.0], gv_variance=[0.0, 1.0])
    with pytest.raises(TypeError, match="same dtype"):
        mlpg_gv(means, torch.ones(10, 6, dtype=torch.float32), gv_mean=[1.0, 1.0],
                gv_variance=[1.0, 1.0])
    with pytest.raises(TypeError, match="torch.Tensor"):
        mlpg_gv(np.zeros((10, 6)), gv_mean=[1.0, 1.0], gv_variance=[1.0, 1.0])


def test_doctests():
    res = doctest.testmod(mlpgx._torch_gv,
                          optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


def test_reexported_as_mlpgx_torch_mlpg_gv():
    import mlpgx.torch

    assert mlpgx.torch.mlpg_gv is mlpg_gv and "mlpg_gv" in mlpgx.torch.__all__

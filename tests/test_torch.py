"""mlpgx.torch: the custom ops, their autograd (first and second order), the
wrappers, torch.compile, an MGE training loop and DDP.

Everything runs on CPU; CUDA is only checked for its error where the cuda
backend is unavailable (the GPU path is tested in test_torch_cuda.py).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mlpgx  # noqa: E402
import mlpgx.torch as mt  # noqa: E402
from mlpgx.torch import _adjoint_op, _encode, _mlpg_op, _solve_op  # noqa: E402
from mlpgx.windows import DELTA, as_windows  # noqa: E402

BOUNDARIES = ("per-window", "nnmnkwii", "none")
#: asymmetric: a width-4 window reaching 2 back and 1 ahead, next to a delta
ASYM = as_windows([(0, 0, [1.0]), (1, 1, [-0.5, 0.0, 0.5]), (2, 1, [0.3, -1.0, 0.5, 0.2])])
KINDS = ("variance", "precision", "none")


def _kw(kind, w):
    return {"variance": dict(variances=w), "precision": dict(precisions=w), "none": {}}[kind]


def _problem(rng, B=2, T=9, D=2, windows=ASYM, dtype=np.float64, global_w=False):
    L = len(as_windows(windows))
    shape = (B, T, L * D) if B is not None else (T, L * D)
    mu = rng.normal(size=shape).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=(L * D,) if global_w else shape).astype(dtype)
    return mu, w


def _op_args(x, w, kind, windows, lengths, boundary):
    l, r, c = _encode(as_windows(windows))
    return (x, w, kind if w is not None else "none", list(l), list(r), list(c), lengths,
            boundary, False)


# ---------------------------------------------------------------------------
# forward: bit for bit equal to the NumPy API
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_bit_for_bit(rng, dtype, boundary, kind):
    mu, w = _problem(rng, B=3, T=40, D=5, dtype=dtype)
    lengths = [40, 17, 0]
    got = mt.mlpg(torch.from_numpy(mu), windows=ASYM, lengths=lengths, boundary=boundary,
                  **_kw(kind, torch.from_numpy(w)))
    want = mlpgx.mlpg(mu, windows=ASYM, lengths=lengths, boundary=boundary, **_kw(kind, w))
    assert got.dtype == torch.from_numpy(want).dtype and got.device.type == "cpu"
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("case", ["unbatched", "global", "tensor-lengths", "default-windows"])
def test_forward_bit_for_bit_shapes(rng, case):
    if case == "unbatched":
        mu, w = _problem(rng, B=None, T=30, D=3)
        got = mt.mlpg(torch.from_numpy(mu), torch.from_numpy(w), ASYM, lengths=21)
        want = mlpgx.mlpg(mu, w, ASYM, lengths=21)
    elif case == "global":
        mu, w = _problem(rng, B=2, T=30, D=3, global_w=True)
        got = mt.mlpg(torch.from_numpy(mu), torch.from_numpy(w), ASYM)
        want = mlpgx.mlpg(mu, w, ASYM)
    elif case == "tensor-lengths":
        mu, w = _problem(rng, B=2, T=30, D=3)
        got = mt.mlpg(torch.from_numpy(mu), torch.from_numpy(w), ASYM,
                      lengths=torch.tensor([3, 30], dtype=torch.int32))
        want = mlpgx.mlpg(mu, w, ASYM, lengths=[3, 30])
    else:
        mu, w = _problem(rng, B=2, T=30, D=4, windows=DELTA)
        got = mt.mlpg(torch.from_numpy(mu), torch.from_numpy(w))
        want = mlpgx.mlpg(mu, w)
    np.testing.assert_array_equal(got.numpy(), want)


def test_inputs_unmodified_and_noncontiguous(rng):
    mu, w = _problem(rng, B=2, T=25, D=3)
    tm = torch.from_numpy(mu.copy()).transpose(0, 1).contiguous().transpose(0, 1)  # strided
    assert not tm.is_contiguous()
    tw = torch.from_numpy(w.copy())
    got = mt.mlpg(tm, tw, ASYM)
    np.testing.assert_array_equal(got.numpy(), mlpgx.mlpg(mu, w, ASYM))
    np.testing.assert_array_equal(tm.numpy(), mu)
    np.testing.assert_array_equal(tw.numpy(), w)


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["variance", "precision", "none"])
def test_grad_equals_numpy_adjoint(rng, dtype, kind):
    """First-order backward is the fused adjoint given the saved output, bit
    for bit; and (float32: to rounding) the adjoint that solves for c."""
    mu, w = _problem(rng, B=3, T=50, D=4, dtype=dtype)
    lengths = [50, 31, 7]
    g = rng.normal(size=(3, 50, 4)).astype(dtype)
    m = torch.from_numpy(mu).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    out = mt.mlpg(m, windows=ASYM, lengths=lengths, boundary="nnmnkwii", **_kw(kind, tw))
    out.backward(torch.from_numpy(g))
    common = dict(windows=ASYM, lengths=lengths, boundary="nnmnkwii", **_kw(kind, w))
    gm, gw = mlpgx.mlpg_adjoint(g, mu, output=out.detach().numpy(), **common)
    np.testing.assert_array_equal(m.grad.numpy(), gm)
    if kind == "none":
        assert tw.grad is None
    else:
        np.testing.assert_array_equal(tw.grad.numpy(), gw)
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    gm_solved, gw_solved = mlpgx.mlpg_adjoint(g, mu, **common)
    np.testing.assert_allclose(m.grad.numpy(), gm_solved, **tol)
    if kind != "none":
        np.testing.assert_allclose(tw.grad.numpy(), gw_solved, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_without_reusing_output_is_the_same(rng, dtype, monkeypatch):
    """The switch bench_torch.py compares with: a backward that solves for c
    again gives the same gradients (to rounding), and the default reuses it
    (the op is called with the saved output)."""
    mu, w = _problem(rng, B=2, T=40, D=3, dtype=dtype)
    g = torch.from_numpy(rng.normal(size=(2, 40, 3)).astype(dtype))
    seen = []
    real = mlpgx.mlpg_adjoint
    monkeypatch.setattr(mlpgx, "mlpg_adjoint", lambda *a, **k: (
        seen.append(k.get("output") is not None), real(*a, **k))[1])
    grads = []
    for reuse in (True, False):
        monkeypatch.setattr(mt, "_BACKWARD_REUSES_OUTPUT", reuse)
        m = torch.from_numpy(mu).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        mt.mlpg(m, tw, windows=DELTA, lengths=[40, 29]).backward(g)
        grads.append((m.grad.numpy(), tw.grad.numpy()))
    assert seen == [True, False]
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("global_w", [False, True])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("kind", ["variance", "precision"])
def test_differentiable_backward_equals_adjoint(rng, kind, batched, global_w):
    """The create_graph=True backward (composed from torch ops and
    mlpgx::mlpg_solve) equals the fused adjoint to rounding."""
    mu, w = _problem(rng, B=2 if batched else None, T=40, D=3, global_w=global_w)
    lengths = [40, 23] if batched else 33
    g = rng.normal(size=mu.shape[:-1] + (3,))
    m = torch.from_numpy(mu).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    out = mt.mlpg(m, windows=ASYM, lengths=lengths, **_kw(kind, tw))
    gm_t, gw_t = torch.autograd.grad(out, (m, tw), torch.from_numpy(g), create_graph=True)
    assert gm_t.requires_grad and gw_t.requires_grad
    gm, gw = mlpgx.mlpg_adjoint(g, mu, windows=ASYM, lengths=lengths, **_kw(kind, w))
    np.testing.assert_allclose(gm_t.detach().numpy(), gm, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw_t.detach().numpy(), gw, rtol=1e-10, atol=1e-12)


def test_finite_differences(rng):
    mu, w = _problem(rng, B=1, T=12, D=1)
    g = rng.normal(size=(1, 12, 1))
    f = lambda m, v: float((mlpgx.mlpg(m, v, ASYM) * g).sum())  # noqa: E731
    m = torch.from_numpy(mu).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    (mt.mlpg(m, tw, ASYM) * torch.from_numpy(g)).sum().backward()
    eps = 1e-6
    for idx in [(0, 0, 0), (0, 5, 1), (0, 11, 2), (0, 4, 2)]:
        for arr, grad in ((mu, m.grad), (w, tw.grad)):
            a, b = arr.copy(), arr.copy()
            a[idx] += eps
            b[idx] -= eps
            args_a = (a, w) if arr is mu else (mu, a)
            args_b = (b, w) if arr is mu else (mu, b)
            fd = (f(*args_a) - f(*args_b)) / (2 * eps)
            assert abs(fd - float(grad[idx])) < 1e-6 * max(1.0, abs(fd))


GC_WINDOWS = {"asym": ASYM, "delta": DELTA}


@pytest.mark.parametrize("windows", ["asym", "delta"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_gradgradcheck(rng, windows, boundary, kind):
    wins = GC_WINDOWS[windows]
    mu, w = _problem(rng, B=2, T=7, D=1, windows=wins)
    lengths = torch.tensor([7, 5])
    m = torch.from_numpy(mu).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_(kind != "none")

    def f(m, tw):
        return mt.mlpg(m, windows=wins, lengths=lengths, boundary=boundary, **_kw(kind, tw))

    inputs = (m, tw) if kind != "none" else (m,)
    fn = f if kind != "none" else (lambda m: f(m, None))
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("kind", ["variance", "precision"])
def test_gradcheck_global_and_unbatched(rng, kind):
    mu, w = _problem(rng, B=None, T=8, D=1, global_w=True)
    m = torch.from_numpy(mu).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    f = lambda m, tw: mt.mlpg(m, windows=ASYM, lengths=6, **_kw(kind, tw))  # noqa: E731
    assert torch.autograd.gradcheck(f, (m, tw))
    assert torch.autograd.gradgradcheck(f, (m, tw))


@pytest.mark.parametrize("kind", ["variance", "precision"])
def test_solve_gradcheck(rng, kind):
    _, w = _problem(rng, B=2, T=7, D=1)
    rhs = torch.from_numpy(rng.normal(size=(2, 7, 1))).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    f = lambda r, tw: mt.mlpg_solve(r, windows=ASYM, lengths=[7, 4], **_kw(kind, tw))  # noqa: E731
    np.testing.assert_array_equal(
        f(rhs, tw).detach().numpy(),
        mlpgx.mlpg_solve(rhs.detach().numpy(), windows=ASYM, lengths=[7, 4], **_kw(kind, w)))
    assert torch.autograd.gradcheck(f, (rhs, tw))
    assert torch.autograd.gradgradcheck(f, (rhs, tw))


def test_third_order(rng):
    """Derivatives of every order come from the same ops."""
    mu, w = _problem(rng, B=1, T=6, D=1)
    m = torch.from_numpy(mu).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    y = (mt.mlpg(m, tw, ASYM) ** 2).sum()
    (gw,) = torch.autograd.grad(y, tw, create_graph=True)
    (gww,) = torch.autograd.grad(gw.sum(), tw, create_graph=True)
    (gwww,) = torch.autograd.grad(gww.sum(), m)
    assert torch.isfinite(gwww).all() and gwww.abs().sum() > 0


# ---------------------------------------------------------------------------
# opcheck
# ---------------------------------------------------------------------------

def _opcheck_inputs(rng, layout):
    L, D, T, B = len(ASYM), 2, 9, 3
    if layout == "empty-batch":
        mu = torch.from_numpy(rng.normal(size=(0, T, L * D)))
        w = torch.from_numpy(rng.uniform(0.5, 2, size=(0, T, L * D)))
        return mu, w, torch.zeros(0, dtype=torch.int64)
    if layout == "non-contiguous":  # (B, T, LD) as a transpose of (T, B, LD) / of (B, LD, T)
        mu = torch.from_numpy(rng.normal(size=(T, B, L * D))).transpose(0, 1)
        w = torch.from_numpy(rng.uniform(0.5, 2, size=(B, L * D, T))).transpose(1, 2)
        assert not mu.is_contiguous() and not w.is_contiguous()
    elif layout == "offset":  # views starting inside a bigger storage
        big = torch.from_numpy(rng.normal(size=(B + 1, T + 2, L * D)))
        bigw = torch.from_numpy(rng.uniform(0.5, 2, size=(B + 1, T, L * D + 3)))
        mu, w = big[1:, 2:], bigw[1:, :, 3:]
        assert mu.storage_offset() > 0 and w.storage_offset() > 0
    else:
        mu = torch.from_numpy(rng.normal(size=(B, T, L * D)))
        w = torch.from_numpy(rng.uniform(0.5, 2, size=(B, T, L * D)))
    return mu, w, torch.tensor([9, 4, 1])


@pytest.mark.parametrize("layout", ["normal", "empty-batch", "non-contiguous", "offset"])
def test_opcheck(rng, layout):
    mu, w, lengths = _opcheck_inputs(rng, layout)
    D = mu.shape[-1] // len(ASYM)
    g = torch.from_numpy(rng.normal(size=tuple(mu.shape[:-1]) + (D,)))
    rhs = g.clone()
    for kind, ww in (("variance", w), ("precision", w), ("none", None)):
        for boundary in ("per-window", "nnmnkwii"):
            m = mu.detach().requires_grad_()
            wg = ww.detach().requires_grad_() if ww is not None else None
            torch.library.opcheck(_mlpg_op, _op_args(m, wg, kind, ASYM, lengths, boundary))
            torch.library.opcheck(_solve_op, _op_args(rhs.detach().requires_grad_(), wg, kind,
                                                      ASYM, lengths, boundary))
            l, r, c = _encode(ASYM)
            torch.library.opcheck(_adjoint_op, (g, mu, ww, kind, list(l), list(r), list(c),
                                                lengths, boundary, False))
            # with the forward's output given (what the backward passes)
            c_out = _mlpg_op(mu, ww, kind, list(l), list(r), list(c), lengths, boundary, False)
            torch.library.opcheck(_adjoint_op, (g, mu, ww, kind, list(l), list(r), list(c),
                                                lengths, boundary, False, c_out))
    # the kernels read strided / offset inputs correctly
    want = mlpgx.mlpg(mu.numpy(), w.numpy(), ASYM, lengths=lengths.numpy())
    np.testing.assert_array_equal(mt.mlpg(mu, w, ASYM, lengths=lengths).numpy(), want)


# ---------------------------------------------------------------------------
# bad input: the NumPy messages
# ---------------------------------------------------------------------------

def _bad_cases(rng):
    mu, w = _problem(rng, B=2, T=6, D=2, windows=DELTA)
    neg = w.copy()
    neg[1, 2, 3] = -1.0
    nan = mu.copy()
    nan[0, 1, 2] = np.nan
    return {
        "shape": (dict(means=mu[0, 0]), {}),
        "columns": (dict(means=mu[..., :5]), {}),
        "var-shape": (dict(means=mu, variances=w[:, :3]), {}),
        "neg-var": (dict(means=mu, variances=neg), {}),
        "neg-prec": (dict(means=mu, precisions=neg), {}),
        "nan": (dict(means=nan, variances=w), {}),
        "lengths-range": (dict(means=mu, variances=w), dict(lengths=[6, 7])),
        "lengths-shape": (dict(means=mu, variances=w), dict(lengths=[6])),
        "lengths-float": (dict(means=mu, variances=w), dict(lengths=[6.0, 2.0])),
        "boundary": (dict(means=mu), dict(boundary="edge")),
        "windows": (dict(means=mu), dict(windows=[[0.5], [1, 0, 1]])),
        "both": (dict(means=mu, variances=w, precisions=w), {}),
        "bool": (dict(means=mu > 0), {}),
    }


@pytest.mark.parametrize("case", ["shape", "columns", "var-shape", "neg-var", "neg-prec", "nan",
                                  "lengths-range", "lengths-shape", "lengths-float", "boundary",
                                  "windows", "both", "bool"])
def test_bad_input_same_message(rng, case):
    arrays, opts = _bad_cases(rng)[case]
    with pytest.raises((ValueError, TypeError)) as want:
        mlpgx.mlpg(**arrays, **opts)
    targs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    with pytest.raises(want.type) as got:
        mt.mlpg(**targs, **opts)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_solve_rhs_must_be_finite(rng, bad):
    # eager validation checks the weights in make_problem and tells the
    # kernel not to check again: the right-hand side was never scanned
    rhs = np.zeros((2, 6, 2))
    rhs[1, 3, 0] = bad
    w = np.ones((2, 6, 6))
    with pytest.raises(ValueError) as want:
        mlpgx.mlpg_solve(rhs, w)
    with pytest.raises(ValueError) as got:
        mt.mlpg_solve(torch.from_numpy(rhs), torch.from_numpy(w))
    assert str(got.value) == str(want.value) and "rhs[1, 3, 0]" in str(got.value)


@pytest.mark.parametrize("boundary", ["per-window", "none"])
def test_bad_mean_anywhere_same_error_as_numpy(boundary):
    # the eager path scans the means after the op (the cython kernel shows
    # them in its output; the edge frames are scanned explicitly): every
    # position still gets mlpgx.mlpg's error
    T, D = 6, 2
    mu = np.random.default_rng(3).normal(size=(T, 3 * D))
    for t in range(T):
        for col in range(3 * D):
            m = mu.copy()
            m[t, col] = np.nan
            with pytest.raises(ValueError) as want:
                mlpgx.mlpg(m, boundary=boundary)
            with pytest.raises(ValueError) as got:
                mt.mlpg(torch.from_numpy(m), boundary=boundary)
            assert str(got.value) == str(want.value) == \
                f"means must be finite; means[{t}, {col}] = nan"


@pytest.mark.parametrize("boundary", ["per-window", "none"])
@pytest.mark.parametrize("kind", ["variances", "precisions"])
def test_bad_weight_anywhere_same_error_as_numpy(boundary, kind):
    # the eager path leaves the weights to its op's mlpgx.mlpg (its kernel
    # checks them as it reads them, the edge frames are scanned after it):
    # every position still gets mlpgx.mlpg's error, after a bad mean's
    T, D = 6, 2
    mu = np.random.default_rng(3).normal(size=(T, 3 * D))
    w = np.random.default_rng(4).uniform(0.5, 2.0, size=(T, 3 * D))
    for t in range(T):
        for col in range(3 * D):
            x = w.copy()
            x[t, col] = -1.0
            with pytest.raises(ValueError) as want:
                mlpgx.mlpg(mu, boundary=boundary, **{kind: x})
            with pytest.raises(ValueError) as got:
                mt.mlpg(torch.from_numpy(mu), boundary=boundary, **{kind: torch.from_numpy(x)})
            assert str(got.value) == str(want.value) and f"{kind}[{t}, {col}] = -1.0" in \
                str(got.value)
            m = mu.copy()
            m[(t + 3) % T, 0] = np.inf
            with pytest.raises(ValueError, match=r"^means must be finite"):
                mt.mlpg(torch.from_numpy(m), boundary=boundary, **{kind: torch.from_numpy(x)})
    # and before a singular system
    x = np.full((T, 3 * D), np.inf if kind == "variances" else 0.0)
    x[2, 1] = -1.0
    with pytest.raises(ValueError, match=rf"{kind}\[2, 1\] = -1.0"):
        mt.mlpg(torch.from_numpy(mu), **{kind: torch.from_numpy(x)})


def test_eager_forward_does_not_scan_the_weights_whole(monkeypatch):
    # float64 per-frame weights with DELTA: checked in the op's kernel, not
    # by a pass over the whole array (neither in the eager validation nor in
    # the op)
    import mlpgx._validate as validate
    sizes, edges = [], []
    real, real_edges = validate._weights_ok, validate._edge_frames_ok
    monkeypatch.setattr(validate, "_weights_ok",
                        lambda w, kind, num_threads=None: sizes.append(w.size) or
                        real(w, kind, num_threads))
    monkeypatch.setattr(validate, "_edge_frames_ok",
                        lambda x, lengths, K, check="finite", kind=None:
                        (check == "weights" and edges.append(K)) or
                        real_edges(x, lengths, K, check, kind))
    mu, var = torch.randn(50, 6, dtype=torch.float64), torch.ones(50, 6, dtype=torch.float64)
    mt.mlpg(mu, var)
    assert all(size < var.numel() // 4 for size in sizes), sizes
    assert edges == [1], edges      # the edge frames only (DELTA: one each side)


def test_overflowing_arithmetic_raises_in_the_forward_only():
    # Finite inputs so extreme that the float64 arithmetic overflows: the
    # forward raises mlpgx.mlpg's ValueError.  The backward, like torch's
    # own operators (and GradScaler, which looks for inf gradients), does
    # not scan: an unrepresentable gradient comes back inf/NaN.
    T, D = 8, 2
    m, v = np.zeros((T, 3 * D)), np.ones((T, 3 * D))
    m[3, 0], v[3, 0] = 1e200, 1e-200
    with pytest.raises(ValueError) as want:
        mlpgx.mlpg(m, v)
    with pytest.raises(ValueError) as got:
        mt.mlpg(torch.from_numpy(m), torch.from_numpy(v))
    assert str(got.value) == str(want.value) and "not finite although" in str(got.value)
    # with a voicing mask: checked on voiced frames (before the NaN marker is
    # written); an unvoiced frame's extreme values are never read
    tm, tv = torch.from_numpy(m), torch.from_numpy(v)
    with pytest.raises(ValueError, match="not finite although means and variances"):
        mt.mlpg(tm, tv, voiced=torch.arange(T) != 6)
    out = mt.mlpg(tm, tv, voiced=torch.arange(T) != 3)
    assert torch.isnan(out[3]).all() and torch.isfinite(out[torch.arange(T) != 3]).all()
    mu = torch.ones(T, 3 * D, dtype=torch.float64, requires_grad=True)
    var = torch.full((T, 3 * D), 1e-10, dtype=torch.float64, requires_grad=True)
    out = mt.mlpg(mu, var)
    assert torch.isfinite(out).all()
    (out * 1e300).sum().backward()
    assert torch.isfinite(mu.grad).all() and not torch.isfinite(var.grad).all()


@pytest.mark.parametrize("global_w", [False, True])
def test_tiny_variances_have_finite_gradients_at_every_order(global_w):
    # dL/dvar = -p^2 dL/dp: p^2 alone overflows below variances of ~1e-154;
    # the fused adjoint and the composite formula of create_graph both form
    # it without that intermediate, and agree
    rng = np.random.default_rng(5)
    T, D = 9, 2
    mu = torch.from_numpy(rng.normal(size=(T, 3 * D))).requires_grad_()
    shape = (3 * D,) if global_w else (T, 3 * D)
    var = torch.from_numpy(rng.uniform(0.5, 2.0, size=shape) * 1e-160).requires_grad_()
    g = torch.from_numpy(rng.normal(size=(T, D)))
    first = torch.autograd.grad(mt.mlpg(mu, var), (mu, var), g)
    graph = torch.autograd.grad(mt.mlpg(mu, var), (mu, var), g, create_graph=True)
    for a, b in zip(first, graph):
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
        torch.testing.assert_close(b.detach(), a, rtol=1e-9, atol=0)
    assert first[1].abs().max() > 1e150
    want = mlpgx.mlpg_adjoint(g.numpy(), mu.detach().numpy(), var.detach().numpy())[1]
    np.testing.assert_allclose(first[1].numpy(), want, rtol=1e-12)


def test_padding_may_hold_anything(rng):
    # frames beyond the lengths are neither read nor checked (zero-padded
    # variances, NaN means): results and gradients as for the unpadded data
    m = rng.normal(size=(2, 8, 6))
    v = rng.uniform(0.5, 2.0, (2, 8, 6))
    m[0, 5:], v[0, 5:] = np.nan, 0.0
    tm = torch.tensor(m, requires_grad=True)
    tv = torch.tensor(v, requires_grad=True)
    c = mt.mlpg(tm, tv, lengths=torch.tensor([5, 8]))
    c.sum().backward()
    assert torch.all(c[0, 5:] == 0)
    np.testing.assert_array_equal(c[0, :5].detach().numpy(), mlpgx.mlpg(m[0, :5], v[0, :5]))
    gm, gv = mlpgx.mlpg_adjoint(np.ones((5, 2)), m[0, :5], v[0, :5])
    np.testing.assert_allclose(tm.grad[0, :5].numpy(), gm, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tv.grad[0, :5].numpy(), gv, rtol=1e-12, atol=1e-15)
    assert torch.all(tm.grad[0, 5:] == 0) and torch.all(tv.grad[0, 5:] == 0)
    # the composite formulas of higher orders read every frame: still finite
    L = torch.tensor([5, 8])
    g = torch.autograd.grad(mt.mlpg(tm, tv, lengths=L).sum(), (tm, tv), create_graph=True)
    gg = torch.autograd.grad(sum((x ** 2).sum() for x in g), (tm, tv))
    fg = torch.func.grad(lambda a, b: mt.mlpg(a, b, lengths=L).sum(), argnums=(0, 1))(
        tm.detach(), tv.detach())
    for x in (*g, *gg, *fg):
        assert torch.all(torch.isfinite(x)) and torch.all(x[0, 5:] == 0)
    np.testing.assert_allclose(g[1][0, :5].detach().numpy(), gv, rtol=1e-12, atol=1e-15)
    # the solve's weight gradient, with NaN in the right-hand side's padding too
    r = torch.tensor(rng.normal(size=(2, 8, 2)))
    r[0, 5:] = np.nan
    r.requires_grad_()
    tv.grad = None
    mt.mlpg_solve(r, tv, lengths=L).sum().backward()
    assert torch.all(torch.isfinite(tv.grad)) and torch.all(torch.isfinite(r.grad))
    assert torch.all(tv.grad[0, 5:] == 0) and torch.all(r.grad[0, 5:] == 0)


@pytest.mark.parametrize("shape, vshape", [((0, 5, 6), (0, 5)), ((0, 6), (0,)),
                                           ((3, 0, 6), (3, 0))])
def test_empty_batches(shape, vshape):
    # as mlpgx.mlpg: empty results (and gradients), with voiced= and lengths=[]
    m = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    w = torch.ones(shape, dtype=torch.float64)
    c = mt.mlpg(m, w, voiced=torch.zeros(vshape, dtype=torch.bool))
    c.sum().backward()
    assert c.shape == shape[:-1] + (2,) and m.grad.shape == shape
    if len(shape) == 3 and shape[0] == 0:
        assert mt.mlpg(m, w, lengths=[]).shape == shape[:-1] + (2,)
        stats = dict(gv_mean=torch.ones(2, dtype=torch.float64),
                     gv_variance=torch.ones(2, dtype=torch.float64))
        assert mt.mlpg_gv(m, w, lengths=[], **stats).shape == shape[:-1] + (2,)


def test_layer_and_mlpg_check_their_options():
    with pytest.raises(TypeError, match="unvoiced_value"):
        mt.MLPGLayer(unvoiced_value="x")
    with pytest.raises(TypeError, match="precisions"):
        mt.MLPGLayer(precisions="yes")
    with pytest.raises(ValueError, match="msd_rule"):
        mt.MLPGLayer(msd_rule="bogus")
    mu = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="msd_rule"):     # without voiced=, as mlpgx.mlpg
        mt.mlpg(mu, msd_rule="bogus")
    with pytest.raises(TypeError, match="unvoiced_value"):
        mt.mlpg(mu, unvoiced_value="x")


def test_dtype_and_device_mismatch(rng):
    mu, w = _problem(rng, B=2, T=6, D=2)
    with pytest.raises(TypeError, match="same dtype"):
        mt.mlpg(torch.from_numpy(mu), torch.from_numpy(w.astype(np.float32)), ASYM)
    with pytest.raises(ValueError, match="same device"):
        mt.mlpg(torch.from_numpy(mu), torch.from_numpy(w).to("meta"), ASYM)
    with pytest.raises(TypeError, match="torch.Tensor"):
        mt.mlpg(mu, windows=ASYM)
    # half precision computes in float32, integers in float64 (NumPy policy)
    assert mt.mlpg(torch.ones(5, 3, dtype=torch.float16), windows="delta").dtype == torch.float32
    assert mt.mlpg(torch.ones(5, 3, dtype=torch.int32), windows="delta").dtype == torch.float64


def test_cuda_tensors_without_an_available_backend():
    ok, why = mlpgx.backends.get("cuda").availability()
    if ok:  # pragma: no cover - CPU CI
        pytest.skip("the cuda backend is available here (see test_torch_cuda.py)")
    match = r"no available backend computes on cuda torch tensors \(cuda: "
    with pytest.raises(RuntimeError, match=match) as info:
        mt._backend_for(torch.device("cuda", 0))
    assert why in str(info.value) and ".cpu()" in str(info.value)
    if torch.cuda.is_available():  # pragma: no cover - a GPU without CuPy
        with pytest.raises(RuntimeError, match=match):
            mt.mlpg(torch.ones(5, 3, device="cuda"), windows="delta")


def test_meta_tensors_shape_only():
    out = _mlpg_op(*_op_args(torch.empty(4, 10, 9, device="meta"), None, "none", DELTA, None,
                             "per-window"))
    assert out.shape == (4, 10, 3) and out.device.type == "meta"


# ---------------------------------------------------------------------------
# the nnmnkwii-shaped Function and the module
# ---------------------------------------------------------------------------

def test_mlpg_function_seed_call_shape(rng):
    mu, w = _problem(rng, B=None, T=30, D=3, windows=DELTA)
    m = torch.from_numpy(mu).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    wins = DELTA.to_nnmnkwii()
    out = mt.MLPG.apply(m, tw, wins)
    np.testing.assert_array_equal(out.detach().numpy(), mlpgx.mlpg(mu, w, wins))
    g = rng.normal(size=(30, 3))
    out.backward(torch.from_numpy(g))
    gm, gw = mlpgx.mlpg_adjoint(g, mu, w, wins)
    np.testing.assert_array_equal(m.grad.numpy(), gm)
    np.testing.assert_array_equal(tw.grad.numpy(), gw)
    small_m = torch.from_numpy(mu[:6]).requires_grad_()
    small_w = torch.from_numpy(w[:6]).requires_grad_()
    f = lambda a, b: mt.MLPG.apply(a, b, wins, "nnmnkwii")  # noqa: E731
    assert torch.autograd.gradcheck(f, (small_m, small_w))
    assert torch.autograd.gradgradcheck(f, (small_m, small_w))


def test_layer(rng):
    mu, w = _problem(rng, B=2, T=20, D=2)
    layer = mt.MLPGLayer(ASYM, boundary="none")
    assert "none" in repr(layer)
    out = layer(torch.from_numpy(mu), torch.from_numpy(w), lengths=[20, 5])
    np.testing.assert_array_equal(
        out.numpy(), mlpgx.mlpg(mu, w, ASYM, lengths=[20, 5], boundary="none"))
    player = mt.MLPGLayer(ASYM, precisions=True)
    np.testing.assert_array_equal(player(torch.from_numpy(mu), torch.from_numpy(w)).numpy(),
                                  mlpgx.mlpg(mu, windows=ASYM, precisions=w))


# ---------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------

def _compile_works():
    try:
        import torch._inductor  # noqa: F401
        return True, ""
    except Exception as exc:  # pragma: no cover
        return False, f"torch.compile cannot run here: {exc}"


@pytest.mark.skipif(not _compile_works()[0], reason=_compile_works()[1])
def test_torch_compile_fullgraph(rng):
    torch.manual_seed(0)
    lin = torch.nn.Linear(9, 9).double()
    logvar = torch.nn.Parameter(torch.zeros(9, dtype=torch.float64))
    lengths = torch.tensor([30, 18])

    def model(x):
        mu = lin(x)
        var = torch.exp(logvar).expand_as(mu)
        return (mt.mlpg(mu, var, lengths=lengths) ** 2).sum()

    x = torch.from_numpy(rng.normal(size=(2, 30, 9)))
    eager = model(x)
    ge = torch.autograd.grad(eager, [lin.weight, lin.bias, logvar])
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    got = compiled(x)
    gc = torch.autograd.grad(got, [lin.weight, lin.bias, logvar])
    torch.testing.assert_close(got, eager, rtol=1e-12, atol=0)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not _compile_works()[0], reason=_compile_works()[1])
def test_overflow_under_compile_and_vmap_names_the_callers_entry():
    # the ops check their own results where the wrapper cannot (torch.compile,
    # torch.func): an unbatched voiced call reports the unbatched index, and a
    # vmapped call says how the folded batch maps to the caller's samples
    T, D = 8, 2
    m, v = torch.zeros(T, 3 * D, dtype=torch.float64), torch.ones(T, 3 * D, dtype=torch.float64)
    m[3, 1], v[3, 1] = 1e200, 1e-200
    voiced = torch.arange(T) != 6
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: mt.mlpg(a, b, voiced=voiced), fullgraph=True)
    with pytest.raises(ValueError) as want:   # (eager: the first non-finite entry)
        mt.mlpg(m, v, voiced=voiced)
    assert str(want.value).startswith("output[0, 1] = nan is not finite although means")
    with pytest.raises(ValueError) as got:
        compiled(m, v)
    assert str(got.value) == str(want.value)
    ms, vs = torch.zeros(4, T, 3 * D, dtype=torch.float64), torch.ones(4, T, 3 * D,
                                                                       dtype=torch.float64)
    ms[2], vs[2] = m, v
    with pytest.raises(ValueError) as info:
        torch.func.vmap(mt.mlpg)(ms, vs)
    msg = str(info.value)
    assert msg.startswith("output[2, 0, 1] = nan is not finite although"), msg
    assert "a leading index i is sample i" in msg, msg
    mb, vb = ms.reshape(2, 2, T, 3 * D), vs.reshape(2, 2, T, 3 * D)   # sample 1, sequence 0
    with pytest.raises(ValueError, match=r"^output\[2, 0, 1\] = .*sample i // 2, sequence i % 2"):
        torch.func.vmap(mt.mlpg)(mb, vb)


# ---------------------------------------------------------------------------
# MGE training on a real utterance
# ---------------------------------------------------------------------------

def test_mge_training_loop_reduces_error():
    """A linear model maps noisy features to mgc means; the loss is the MSE
    between MLPG's output and the clean static stream.  150 Adam steps cut
    the trajectory error by at least 20x (measured: ~115x)."""
    from mlpgx.data import MGC, load_arctic_a0001

    torch.manual_seed(0)
    feats = torch.from_numpy(load_arctic_a0001()[:, MGC]).float()  # (578, 180)
    D = 60
    sel = torch.cat([torch.arange(l * D, l * D + 8) for l in range(3)])  # 8 dims x 3 windows
    clean = feats[:, sel]                                    # (578, 24)
    target = clean[:, :8]                                    # clean static stream
    noisy = clean + 0.5 * clean.std(0) * torch.randn_like(clean)
    var = clean.var(0)                                       # global variances
    model = torch.nn.Linear(24, 24)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn():
        return torch.mean((mt.mlpg(model(noisy), var.expand_as(clean)) - target) ** 2)

    with torch.no_grad():
        first = float(loss_fn())
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(loss_fn())
    print(f"MGE loss {first:.4g} -> {last:.4g} ({first / last:.1f}x)")
    assert last < first / 20, (first, last)


# ---------------------------------------------------------------------------
# DDP
# ---------------------------------------------------------------------------

def _ddp_worker(rank, world, store, x, lengths, out_dir):
    import datetime

    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(x.shape[-1], x.shape[-1]).double()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        per = x.shape[0] // world
        xs, ls = x[rank * per:(rank + 1) * per], lengths[rank * per:(rank + 1) * per]
        # mean over the global batch == mean of the per-rank means (equal shards)
        loss = (mt.mlpg(ddp(xs), lengths=ls) ** 2).sum(dim=(1, 2)).mean()
        loss.backward()
        torch.save([p.grad for p in model.parameters()], os.path.join(out_dir, f"ddp{rank}.pt"))
    finally:
        dist.destroy_process_group()
    # Skip interpreter teardown: with torch 2.13 a process that used any
    # torch.library custom op together with gloo intermittently aborts there
    # ("terminate called without an active exception"; reproduced with a
    # trivial custom op, without mlpgx).  The results are already saved.
    os._exit(0)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")
def test_ddp_two_processes_match_single_process(rng, tmp_path):
    """2-process DDP (gloo, file store: no ports) gives the gradients of a
    single process on the same global batch.  A hung worker fails the test
    after 120 s instead of hanging the run."""
    import time

    x = torch.from_numpy(rng.normal(size=(4, 20, 6)))
    lengths = torch.tensor([20, 11, 17, 6])
    ctx = torch.multiprocessing.spawn(
        _ddp_worker, args=(2, str(tmp_path / "store"), x, lengths, str(tmp_path)),
        nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish within 120 s")
    got = torch.load(os.path.join(tmp_path, "ddp0.pt"))
    got1 = torch.load(os.path.join(tmp_path, "ddp1.pt"))
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 6).double()
    loss = (mt.mlpg(model(x), lengths=lengths) ** 2).sum(dim=(1, 2)).mean()
    loss.backward()
    for a, a1, b in zip(got, got1, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a1, a, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# torch.func: vmap folds into the batch; grad / vjp compose with it
# ---------------------------------------------------------------------------

def _vmap_problem(rng, V=3, B=2, T=11, D=2):
    L = len(ASYM)
    t = lambda *s: torch.from_numpy(rng.normal(size=s))  # noqa: E731
    mu, var = t(V, B, T, L * D), t(V, B, T, L * D).abs() + 0.5
    return mu, var, t(L * D).abs() + 0.5, t(V, L * D).abs() + 0.5


def _loop(f, *args, in_dims=0):
    dims = in_dims if isinstance(in_dims, tuple) else (in_dims,) * len(args)
    V = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    outs = [f(*(a if d is None else a.select(d, i) for a, d in zip(args, dims))) for i in range(V)]
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(o) for o in zip(*outs))
    return torch.stack(outs)


def _assert_same(got, want):
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_vmap_mlpg_equals_loop(rng):
    mu, var, gvar, vgvar = _vmap_problem(rng)
    lengths = torch.tensor([11, 6])
    f = lambda m, v: mt.mlpg(m, v, ASYM, lengths=lengths)  # noqa: E731
    cases = [((mu, var), 0), ((mu, var[0]), (0, None)), ((mu[0], var), (None, 0)),
             ((mu, gvar), (0, None)), ((mu[0], vgvar), (None, 0)), ((mu, vgvar), 0),
             ((mu.movedim(0, 2), var.movedim(0, 1)), (2, 1))]
    for args, dims in cases:
        _assert_same(torch.func.vmap(f, in_dims=dims)(*args), _loop(f, *args, in_dims=dims))
    # unbatched (T, L*D) samples; no weights; vmapped lengths
    g = lambda m, v: mt.mlpg(m, v, ASYM, boundary="nnmnkwii")  # noqa: E731
    _assert_same(torch.func.vmap(g)(mu[:, 0], var[:, 0]), _loop(g, mu[:, 0], var[:, 0]))
    h = lambda m: mt.mlpg(m, windows=ASYM)  # noqa: E731
    _assert_same(torch.func.vmap(h)(mu), _loop(h, mu))
    n = torch.tensor([[11, 6], [0, 11], [3, 1]])
    k = lambda m, v, n: mt.mlpg(m, v, ASYM, lengths=n)  # noqa: E731
    _assert_same(torch.func.vmap(k)(mu, var, n), _loop(k, mu, var, n))


def test_vmap_mlpg_solve_equals_loop(rng):
    mu, var, gvar, vgvar = _vmap_problem(rng)
    rhs = mu[..., :2]
    f = lambda r, v: mt.mlpg_solve(r, v, ASYM, lengths=[11, 4])  # noqa: E731
    for args, dims in [((rhs, var), 0), ((rhs, gvar), (0, None)), ((rhs[0], vgvar), (None, 0))]:
        _assert_same(torch.func.vmap(f, in_dims=dims)(*args), _loop(f, *args, in_dims=dims))


def test_vmap_rule_folds_into_one_kernel_call(rng, monkeypatch):
    """The registered rules run: one kernel call per op, not one per sample."""
    calls = []
    for name in ("mlpg", "mlpg_solve", "mlpg_adjoint"):
        real = getattr(mlpgx, name)
        monkeypatch.setattr(mlpgx, name, lambda *a, _r=real, _n=name, **k: (
            calls.append((_n, a[0].shape)), _r(*a, **k))[1])
    mu, var, gvar, _ = _vmap_problem(rng, V=5)
    torch.func.vmap(lambda m, v: mt.mlpg(m, v, ASYM))(mu, var)
    assert calls == [("mlpg", (10, 11, 6))]
    calls.clear()
    torch.func.vmap(lambda r: mt.mlpg_solve(r, gvar, ASYM))(mu[:, 0, :, :2])
    assert calls == [("mlpg_solve", (5, 11, 2))]
    calls.clear()
    l, r, c = _encode(ASYM)
    g = mu[..., :2]
    gm, gw = torch.func.vmap(lambda g, m: _adjoint_op(g, m, gvar, "variance", list(l), list(r),
                                                      list(c), None, "per-window", True))(g, mu)
    assert calls == [("mlpg_adjoint", (10, 11, 2))] and gw.shape == (5, 6)
    want = _loop(lambda g, m: _adjoint_op(g, m, gvar, "variance", list(l), list(r), list(c),
                                          None, "per-window", True), g, mu)
    _assert_same(gm, want[0])
    torch.testing.assert_close(gw, want[1], rtol=1e-12, atol=1e-12)
    calls.clear()
    # the forward's output, vmapped like the gradient
    out = torch.func.vmap(lambda m: mt.mlpg(m, gvar, ASYM))(mu)
    calls.clear()
    gm, gw = torch.func.vmap(lambda g, m, o: _adjoint_op(
        g, m, gvar, "variance", list(l), list(r), list(c), None, "per-window", True, o))(g, mu, out)
    assert calls == [("mlpg_adjoint", (10, 11, 2))] and gw.shape == (5, 6)
    _assert_same(gm, want[0])
    torch.testing.assert_close(gw, want[1], rtol=1e-12, atol=1e-12)
    calls.clear()
    loss = lambda m, v: mt.mlpg(m, v, ASYM).square().sum()  # noqa: E731
    torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)))(mu, var)
    assert [n for n, _ in calls] == ["mlpg", "mlpg_solve"] and calls[1][1] == (10, 11, 2)


def test_vmap_composes_with_grad_and_vjp(rng):
    mu, var, gvar, _ = _vmap_problem(rng)
    tgt = mu[..., :2].flip(-2)
    lengths = torch.tensor([11, 7])

    def loss(m, v, t):
        return (mt.mlpg(m, v, ASYM, lengths=lengths) - t).square().sum()

    per_sample = torch.func.grad(loss, argnums=(0, 1))
    for args, dims in [((mu, var, tgt), 0), ((mu, gvar, tgt), (0, None, 0))]:
        got = torch.func.vmap(per_sample, in_dims=dims)(*args)
        _assert_same(got, _loop(per_sample, *args, in_dims=dims))
    # the same gradients as ordinary autograd, sample by sample
    got = torch.func.vmap(per_sample)(mu, var, tgt)
    for i in range(mu.shape[0]):
        m, v = mu[i].clone().requires_grad_(), var[i].clone().requires_grad_()
        loss(m, v, tgt[i]).backward()
        torch.testing.assert_close(got[0][i], m.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[1][i], v.grad, rtol=1e-10, atol=1e-12)

    def vjp(m, v, ct):
        return torch.func.vjp(lambda m, v: mt.mlpg(m, v, ASYM, lengths=lengths), m, v)[1](ct)

    _assert_same(torch.func.vmap(vjp)(mu, var, tgt), _loop(vjp, mu, var, tgt))
    # second order: grad of a gradient norm, per sample
    gg = torch.func.grad(lambda m, v, t: torch.func.grad(loss)(m, v, t).square().sum())
    torch.testing.assert_close(torch.func.vmap(gg)(mu, var, tgt), _loop(gg, mu, var, tgt),
                               rtol=1e-10, atol=1e-12)

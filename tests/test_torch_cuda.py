"""mlpgx.torch on CUDA tensors: the ``"cuda"`` backend behind the custom ops.

Two parts:

1. CPU-runnable (always): the error a CUDA tensor gets while the backend is
   unavailable (no CuPy, no GPU) and the function that builds it; the
   registry picking a backend for ``"cuda"``; the plumbing of the CUDA
   kernels (:func:`mlpgx.torch._cuda_run`: validation, output allocation,
   views, shapes, the preallocated-outputs hook of the backends) driven on CPU
   tensors with NumPy standing in for CuPy and a host backend honouring
   ``outputs=``; the wrapper handing CUDA tensors to the kernel for validation.
2. ``@pytest.mark.cuda`` (skipped here, with the reason): the real thing on a
   GPU: forward / backward against the CPU results, gradcheck in float64,
   outputs on the inputs' device, launches on torch's current stream (a
   non-default ``torch.cuda.Stream``), zero-copy hand-over, ``LinAlgError``
   and validation errors as on the CPU, ``opcheck`` and ``torch.compile``.
"""
from __future__ import annotations

import contextlib
import re
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mlpgx  # noqa: E402
import mlpgx.torch as mt  # noqa: E402
from mlpgx.backends import cuda as cuda_backend  # noqa: E402
from mlpgx.backends._base import KernelBackend, adjoint_result, allocate_outputs  # noqa: E402
from mlpgx.torch import _adjoint_op, _encode, _mlpg_op, _solve_op  # noqa: E402
from mlpgx.windows import DELTA  # noqa: E402
from test_torch import ASYM, BOUNDARIES, KINDS, _bad_cases, _kw, _op_args, _problem  # noqa: E402

RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}


# ---------------------------------------------------------------------------
# 1. without a GPU
# ---------------------------------------------------------------------------

def test_cuda_backend_declares_torch_cuda():
    assert mlpgx.backends.get("cuda").torch_devices == ("cuda",)
    assert mlpgx.backends.describe()["cuda"]["torch_devices"] == ("cuda",)


def test_cuda_tensor_error_names_the_reason():
    """Here (no CuPy or no GPU) a CUDA tensor gets the backend's own reason."""
    ok, why = mlpgx.backends.get("cuda").availability()
    if ok:
        pytest.skip("the cuda backend is available here")
    with pytest.raises(RuntimeError) as err:
        mt._backend_for(torch.device("cuda", 0))
    msg = str(err.value)
    assert msg.startswith("mlpgx.torch: ") and why in msg and "cuda:0" in msg and ".cpu()" in msg


@contextlib.contextmanager
def _fresh_cuda_backend(monkeypatch, import_cupy):
    """A new CudaBackend (no cached availability) registered as "cuda", with
    ``import_cupy`` in place of the CuPy import."""
    monkeypatch.setattr(cuda_backend, "_import_cupy", import_cupy)
    old = mlpgx.backends.get("cuda")
    mlpgx.backends.register("cuda", cuda_backend.CudaBackend(), replace=True)
    try:
        yield
    finally:
        mlpgx.backends.register("cuda", old, replace=True)


def _no_cupy():
    raise ModuleNotFoundError("No module named 'cupy'")


def _cupy_without_gpu():
    def count():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    return types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=count)))


@pytest.mark.parametrize("case, expected", [
    ("no-cupy", "install mlpgx[cuda12] or mlpgx[cuda13]"),
    ("no-gpu", "no CUDA GPU is visible"),
])
def test_for_torch_device_cuda_reason(monkeypatch, case, expected):
    importer = _no_cupy if case == "no-cupy" else _cupy_without_gpu
    with _fresh_cuda_backend(monkeypatch, importer):
        with pytest.raises(RuntimeError, match=re.escape(expected)) as err:
            mlpgx.backends.for_torch_device("cuda")
        assert "cuda: " in str(err.value)
        with pytest.raises(RuntimeError, match=re.escape(expected)):
            mt._backend_for(torch.device("cuda", 1))


def test_no_backend_message():
    msg = mt._no_backend_message(torch.device("cuda", 3), "cuda: no CUDA GPU is visible")
    assert msg == ("mlpgx.torch: cuda: no CUDA GPU is visible; tensors on cuda:3: move them "
                   "to the CPU with .cpu()")


class _Available(mlpgx.backends.Backend):
    name = "zz-test-cuda"
    torch_devices = ("cuda",)


def test_for_torch_device_picks_an_available_backend():
    mlpgx.backends.register("zz-test-cuda", _Available)
    try:
        want = "cuda" if mlpgx.backends.get("cuda").availability()[0] else "zz-test-cuda"
        assert mlpgx.backends.for_torch_device("cuda").name == want
        assert mt._backend_for(torch.device("cuda", 0)) == want
    finally:
        mlpgx.backends.unregister("zz-test-cuda")


def test_eager_validation_is_left_to_the_kernel_off_cpu():
    """CUDA tensors have no NumPy view: the kernel validates them (with the
    finiteness scan) on the device; CPU tensors are validated eagerly."""
    assert mt._eager_validation(torch.ones(3)) is True
    assert mt._eager_validation(torch.ones(3, device="meta")) is False


@pytest.mark.parametrize("fn", ["mlpg", "mlpg_solve"])
def test_wrappers_ask_the_kernel_to_scan_off_cpu(monkeypatch, fn):
    """Off the CPU (meta tensors standing in for CUDA ones) the op gets
    ``check_finite=True``; CPU tensors were scanned eagerly, so ``False``."""
    calls = []
    result = torch.zeros(5, 1)   # (what the op returns: the CPU path checks it finite)
    monkeypatch.setattr(mt, "_backend_for", lambda device: "cython")
    monkeypatch.setattr(mt, "_call", lambda op, *args: calls.append(args) or result)
    x = torch.ones(5, 3 if fn == "mlpg" else 1)
    assert getattr(mt, fn)(x.to("meta"), windows="delta") is result
    assert calls[-1][-1] is True
    assert getattr(mt, fn)(x, windows="delta") is result
    assert calls[-1][-1] is False
    result[2, 0] = float("inf")   # an overflow the op was told not to look for
    with pytest.raises(ValueError, match=r"(output|x)\[2, 0\] = .* is not finite although"):
        getattr(mt, fn)(x, windows="delta")


# -- the stream set-up, with stand-ins for torch.cuda and CuPy ----------------

class _Ctx:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def __enter__(self):
        self.log.append(("enter", self.name))
        return self

    def __exit__(self, *exc):
        self.log.append(("exit", self.name))


class _TorchStream:
    cuda_stream = 0x5eed

    def __cuda_stream__(self):
        return (0, self.cuda_stream)


def _fake_cupy(log, from_external=True):
    stream_cls = types.SimpleNamespace()
    if from_external:
        stream_cls.from_external = lambda obj: _Ctx(log, f"cupy stream {obj.__cuda_stream__()}")
    return types.SimpleNamespace(cuda=types.SimpleNamespace(
        Device=lambda i: _Ctx(log, f"cupy device {i}"),
        Stream=stream_cls,
        ExternalStream=lambda ptr, dev: _Ctx(log, f"cupy external stream {ptr} on {dev}")))


@pytest.mark.parametrize("from_external", [True, False])
def test_torch_stream_becomes_cupy_current_stream(monkeypatch, from_external):
    """Inside ``_torch_stream(cuda:1)``: torch's device 1, CuPy's device 1, and
    torch's current stream of device 1 as CuPy's stream (entered in that
    order, left in reverse); ``Stream.from_external`` where CuPy has it."""
    log, asked = [], []
    cp = _fake_cupy(log, from_external)
    monkeypatch.setattr(cuda_backend, "_import_cupy", lambda: cp)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device=None: asked.append(device) or _TorchStream())
    monkeypatch.setattr(torch.cuda, "device", lambda d: _Ctx(log, f"torch device {d}"))
    dev = torch.device("cuda", 1)
    with mt._torch_stream(dev) as got:
        assert got is cp
        log.append(("body", None))
    stream = ("cupy stream (0, 24301)" if from_external
              else "cupy external stream 24301 on 1")
    names = ["torch device cuda:1", "cupy device 1", stream]
    assert asked == [dev]
    assert log == ([("enter", n) for n in names] + [("body", None)]
                   + [("exit", n) for n in reversed(names)])


# -- the CUDA kernels' plumbing, on the CPU ---------------------------------

class _HostOutputs(KernelBackend):
    """The cython backend's results written into ``outputs=``: stands in for
    the cuda backend on the CPU (records every call)."""

    name = "host-outputs"
    reuses_output = True     # as the cuda backend
    #: what ``_run(..., report_finite=True)`` says of the results (the cuda
    #: kernels test them; nothing is tested here, and a test may claim it)
    finite = False

    def __init__(self):
        self.calls = []

    def _run(self, mode, pb, g=None, outputs=None, given_output=None, report_finite=False):
        self.calls.append(dict(mode=mode, problem=pb, frames=g, outputs=outputs,
                               given_output=given_output))
        result = self._results(mode, pb, g, outputs, given_output)
        return (result, self.finite) if report_finite else result

    def _results(self, mode, pb, g, outputs, given_output):
        cy = mlpgx.backends.get("cython")
        if given_output is not None:
            res = cy.adjoint(pb, g, output=given_output)
        else:
            res = cy.forward(pb) if mode == "forward" else getattr(cy, mode)(pb, g)
        out, gm, gw, acc = allocate_outputs(np, mode, pb, outputs)
        if mode != "adjoint":
            out[...] = res
            return out
        gm[...] = res[0]
        if gw is not None:
            gw[...] = res[1]
        if acc is not None:  # the batch sum in row 0
            acc[0] = res[1]
        return adjoint_result(pb, gm, gw, acc, outputs)


@pytest.fixture
def host_cuda(monkeypatch):
    """``mlpgx.torch``'s CUDA kernels on CPU tensors: NumPy for CuPy, the
    host backend above for the cuda backend."""
    backend = _HostOutputs()
    mlpgx.backends.register(backend.name, backend)

    @contextlib.contextmanager
    def stream(device):
        yield types.SimpleNamespace(from_dlpack=np.from_dlpack, empty=np.empty)

    monkeypatch.setattr(mt, "_torch_stream", stream)
    monkeypatch.setattr(mt, "_backend_for", lambda device: backend.name)
    try:
        yield backend
    finally:
        mlpgx.backends.unregister(backend.name)


def _shares(a, t):
    return np.shares_memory(np.asarray(a), t.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["batched", "unbatched", "global", "empty"])
def test_cuda_kernels_plumbing_on_host(rng, host_cuda, dtype, kind, layout):
    B = {"batched": 3, "unbatched": None, "global": 2, "empty": 0}[layout]
    mu, w = _problem(rng, B=B, T=11, D=2, dtype=dtype, global_w=layout == "global")
    lengths = {"batched": torch.tensor([11, 5, 0]), "unbatched": torch.tensor(7),
               "global": None, "empty": torch.zeros(0, dtype=torch.int64)}[layout]
    m, tw = torch.from_numpy(mu), torch.from_numpy(w)
    g = torch.from_numpy(rng.normal(size=mu.shape[:-1] + (2,)).astype(dtype))
    ww = tw if kind != "none" else None
    args = _op_args(m, ww, kind, ASYM, lengths, "nnmnkwii")
    l, r, c = _encode(ASYM)
    adj_args = (g, m, ww, args[2], list(l), list(r), list(c), lengths, "nnmnkwii", True)
    solve_args = (g,) + args[1:]

    want = _mlpg_op(*args)     # the CPU kernel (its forward() also reaches the host backend)
    got = mt._cuda_mlpg(*args)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    call = host_cuda.calls[-1]
    if got.numel():  # zero copies: inputs are views, the result was written in place
        assert _shares(call["problem"].means, m) and _shares(call["outputs"][0], got)
        if ww is not None and layout != "global":
            assert _shares(call["problem"].weights, tw)

    got = mt._cuda_solve(*solve_args)
    np.testing.assert_array_equal(got.numpy(), _solve_op(*solve_args).numpy())

    wgm, wgw = _adjoint_op(*adj_args)
    gm, gw = mt._cuda_adjoint(*adj_args)
    assert gm.shape == wgm.shape and gw.shape == wgw.shape and gw.dtype == wgw.dtype
    np.testing.assert_array_equal(gm.numpy(), wgm.numpy())
    np.testing.assert_array_equal(gw.numpy(), wgw.numpy())
    outs = host_cuda.calls[-1]["outputs"]
    assert host_cuda.calls[-1]["given_output"] is None
    if gm.numel():
        assert _shares(outs[0], gm)
    if ww is not None and gw.numel():
        assert _shares(outs[1], gw)

    # the backward's call: the saved output reaches the kernel, without a copy
    c = _mlpg_op(*args)
    wgm, wgw = _adjoint_op(*adj_args, c)
    gm, gw = mt._cuda_adjoint(*adj_args, output=c)
    np.testing.assert_array_equal(gm.numpy(), wgm.numpy())
    np.testing.assert_array_equal(gw.numpy(), wgw.numpy())
    given = host_cuda.calls[-1]["given_output"]
    if c.numel():
        assert given is not None and _shares(given, c)

    # the backward when the weights need no gradient: the means' gradient
    # of the CPU's means-only adjoint, no weight gradient (the cuda backend
    # has no such mode: it runs the adjoint given c and drops the other)
    wgm, wgw = _adjoint_op(*adj_args, c, False)
    gm, gw = mt._cuda_adjoint(*adj_args, output=c, weight_grad=False)
    assert wgw.numel() == 0 and gw.numel() == 0
    np.testing.assert_allclose(gm.numpy(), wgm.numpy(), rtol=RTOL[torch.from_numpy(mu).dtype],
                               atol=1e-12)


@pytest.mark.parametrize("global_w", [False, True])
def test_cuda_kernels_scan_only_untested_results(rng, host_cuda, monkeypatch, global_w):
    # the cuda kernels test their results finite (CudaBackend._run's
    # report_finite): what they tested is not scanned again, the summed
    # global-weight gradient always is
    from test_result_check import _scanned_arrays, _was_scanned

    mu, w = _problem(rng, B=2, T=6, D=2, global_w=global_w)
    m, tw = torch.from_numpy(mu), torch.from_numpy(w)
    l, r, c = _encode(ASYM)
    rest = (tw, "variance", list(l), list(r), list(c), None, "per-window", True)
    g = torch.from_numpy(rng.normal(size=mu.shape[:-1] + (2,)))
    seen = _scanned_arrays(monkeypatch)
    for tested in (False, True):
        host_cuda.finite = tested
        calls = {"forward": lambda: (mt._cuda_mlpg(m, *rest),),
                 "solve": lambda: (mt._cuda_solve(g, *rest),),
                 "adjoint": lambda: mt._cuda_adjoint(g, m, *rest),
                 # (the given output itself is an input: validated, scanned)
                 "adjoint given c": lambda: mt._cuda_adjoint(g, m, *rest, output=out)}
        out = calls["forward"]()[0]
        for name, call in calls.items():
            seen.clear()
            results = call()
            for i, res in enumerate(results):
                untested = not tested or (i == 1 and global_w)
                assert _was_scanned(seen, res.numpy()) is untested, (name, i, tested)


def test_cuda_kernels_validate_like_the_cpu(rng, host_cuda):
    mu, w = _problem(rng, B=2, T=6, D=2)
    bad = mu.copy()
    bad[1, 2, 3] = np.nan
    args = _op_args(torch.from_numpy(bad), torch.from_numpy(w), "variance", ASYM, None,
                    "per-window")
    with pytest.raises(ValueError) as want:
        mlpgx.mlpg(bad, w, ASYM)
    with pytest.raises(ValueError) as got:
        mt._cuda_mlpg(*args[:-1], True)
    assert str(got.value) == str(want.value)
    mt._cuda_mlpg(*args[:-1], False)    # the backward's calls skip the scan, as on CPU


@pytest.mark.parametrize("mode", ["forward", "solve", "adjoint"])
def test_cuda_kernels_check_their_results_like_the_cpu(host_cuda, mode):
    # finite inputs whose arithmetic overflows: the results are scanned
    # after the kernel, with mlpgx.mlpg's message; check_finite=False (the
    # backward's calls) skips that scan too
    T, D = 8, 2
    m, w = np.zeros((T, 3 * D)), np.ones((T, 3 * D))
    g = np.ones((T, D))
    if mode == "forward":
        m[3, 0], w[3, 0] = 1e200, 1e-200
    elif mode == "solve":
        g[...], w[...] = 1e300, 1e10
    else:
        g[...], m[...], w[...] = 1e300, 1.0, 1e-10
    args = _op_args(torch.from_numpy(m), torch.from_numpy(w), "variance", DELTA, None,
                    "per-window")
    l, r, c = _encode(DELTA)
    rest = (torch.from_numpy(w), "variance", list(l), list(r), list(c), None, "per-window")
    call = {"forward": lambda check: mt._cuda_mlpg(*args[:-1], check),
            "solve": lambda check: mt._cuda_solve(torch.from_numpy(g), *rest, check),
            "adjoint": lambda check: mt._cuda_adjoint(torch.from_numpy(g), torch.from_numpy(m),
                                                      *rest, check)}[mode]
    with pytest.raises(ValueError) as want:
        {"forward": lambda: mlpgx.mlpg(m, w), "solve": lambda: mlpgx.mlpg_solve(g, w),
         "adjoint": lambda: mlpgx.mlpg_adjoint(g, m, w)}[mode]()
    with pytest.raises(ValueError) as got:
        call(True)
    assert str(got.value) == str(want.value) and "not finite although" in str(got.value)
    with np.errstate(all="ignore"):
        res = call(False)
    res = res if isinstance(res, tuple) else (res,)
    assert not all(torch.isfinite(x).all() for x in res)


def test_preallocated_outputs_checked(rng):
    mu, w = _problem(rng, B=2, T=5, D=2)
    pb = mlpgx._validate.make_problem(mu, w, ASYM)
    out = np.empty((2, 5, 2))
    assert allocate_outputs(np, "forward", pb, (out,))[0] is out
    with pytest.raises(ValueError, match="preallocated outputs for 'forward'"):
        allocate_outputs(np, "forward", pb, (np.empty((2, 5, 3)),))
    with pytest.raises(ValueError, match="C-contiguous"):
        allocate_outputs(np, "forward", pb, (np.empty((2, 2, 5)).transpose(0, 2, 1),))
    with pytest.raises(ValueError, match="float64"):
        allocate_outputs(np, "adjoint", pb, (np.empty(mu.shape, np.float32), np.empty(w.shape)))


# ---------------------------------------------------------------------------
# 2. on a GPU
# ---------------------------------------------------------------------------

def _gpu_reason():
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch (torch.cuda.is_available() is False)"
    ok, why = mlpgx.backends.get("cuda").availability()
    return "" if ok else f"backend 'cuda' is unavailable: {why}"


_REASON = _gpu_reason()
#: the GPU tests: marked ``cuda`` and skipped, with the reason, without a GPU
gpu = pytest.mark.skipif(bool(_REASON), reason=_REASON or "a GPU is available")


def _cuda(x, dtype=None, grad=False):
    t = torch.as_tensor(np.asarray(x)).to("cuda")
    t = t.to(dtype) if dtype is not None else t
    return t.requires_grad_() if grad else t


def _close(got, want, dtype):
    want = want.detach().cpu()
    scale = float(want.abs().max()) if want.numel() else 0.0
    np.testing.assert_allclose(got.detach().cpu().numpy(), want.numpy(),
                               rtol=RTOL[dtype], atol=RTOL[dtype] * (scale + 1))


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["batched", "unbatched", "global"])
def test_forward_backward_vs_cpu(rng, dtype, boundary, kind, layout):
    B = None if layout == "unbatched" else 3
    mu, w = _problem(rng, B=B, T=60, D=4, global_w=layout == "global")
    lengths = [60, 31, 4] if B else 45
    g = rng.normal(size=mu.shape[:-1] + (4,))
    res = {}
    for dev in ("cpu", "cuda"):
        m = torch.from_numpy(mu).to(dev, dtype).requires_grad_()
        tw = torch.from_numpy(w).to(dev, dtype).requires_grad_(kind != "none")
        out = mt.mlpg(m, windows=ASYM, lengths=lengths, boundary=boundary,
                      **_kw(kind, tw if kind != "none" else None))
        out.backward(torch.from_numpy(g).to(dev, dtype))
        res[dev] = (out, m.grad, tw.grad)
    out, gm, gw = res["cuda"]
    assert out.device.type == "cuda" and out.dtype == dtype and gm.device == out.device
    for got, want in zip(res["cuda"], res["cpu"]):
        if want is None:
            assert got is None
        else:
            _close(got, want, dtype)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["variance", "precision"])
def test_backward_with_weights_that_need_no_gradient_vs_cpu(rng, dtype, kind):
    """The backward asks for the means' gradient alone (weight_grad=False):
    on the CPU the means-only kernel, on CUDA the adjoint given c."""
    mu, w = _problem(rng, B=3, T=60, D=4)
    g = rng.normal(size=(3, 60, 4))
    res = {}
    for dev in ("cpu", "cuda"):
        m = torch.from_numpy(mu).to(dev, dtype).requires_grad_()
        tw = torch.from_numpy(w).to(dev, dtype)
        out = mt.mlpg(m, windows=ASYM, lengths=[60, 31, 4], **_kw(kind, tw))
        out.backward(torch.from_numpy(g).to(dev, dtype))
        assert tw.grad is None
        res[dev] = m.grad
    assert res["cuda"].device.type == "cuda"
    _close(res["cuda"], res["cpu"], dtype)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_solve_and_adjoint_ops_vs_cpu(rng, dtype):
    mu, w = _problem(rng, B=2, T=40, D=3)
    g = rng.normal(size=(2, 40, 3))
    l, r, c = _encode(ASYM)
    for kind in KINDS:
        ww = w if kind != "none" else None
        res = {}
        for dev in ("cpu", "cuda"):
            t = lambda a: None if a is None else torch.from_numpy(a).to(dev, dtype)  # noqa: E731
            n = torch.tensor([40, 17])
            res[dev] = (_solve_op(t(g), t(ww), kind, list(l), list(r), list(c), n, "none", True),
                        *_adjoint_op(t(g), t(mu), t(ww), kind, list(l), list(r), list(c), n,
                                     "none", True))
        for got, want in zip(res["cuda"], res["cpu"]):
            assert got.device.type == "cuda" and got.shape == want.shape
            if want.numel():
                _close(got, want, dtype)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_on_cuda(rng, kind):
    mu, w = _problem(rng, B=2, T=7, D=1)
    m = _cuda(mu, grad=True)
    tw = _cuda(w, grad=kind != "none")
    lengths = torch.tensor([7, 5])

    def f(m, tw=None):
        return mt.mlpg(m, windows=ASYM, lengths=lengths, boundary="nnmnkwii", **_kw(kind, tw))

    inputs = (m, tw) if kind != "none" else (m,)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)
    rhs = _cuda(rng.normal(size=(2, 7, 1)), grad=True)
    if kind != "none":
        fs = lambda r, tw: mt.mlpg_solve(r, windows=ASYM, **_kw(kind, tw))  # noqa: E731
        assert torch.autograd.gradcheck(fs, (rhs, tw))


@pytest.mark.cuda
@gpu
def test_launch_on_torch_current_stream(rng, monkeypatch):
    """Inputs produced on a non-default stream behind a long sleep: the
    kernel is launched on that stream (not CuPy's default one), so it reads
    the finished inputs, and the output is ready after synchronising it."""
    import cupy

    seen = []
    launch = cuda_backend.CudaBackend._launch

    def spy(*args, **kwargs):
        seen.append(cupy.cuda.get_current_stream().ptr)
        return launch(*args, **kwargs)

    monkeypatch.setattr(cuda_backend.CudaBackend, "_launch", staticmethod(spy))
    mu, w = _problem(rng, B=4, T=500, D=8)
    base, tw = _cuda(mu), _cuda(w)
    want = mt.mlpg(base, tw, ASYM)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)            # ~0.1 s of GPU time before the inputs exist
        means = base * 1.0
        got = mt.mlpg(means, tw, ASYM)
        got2 = got * 1.0                          # consumer on the same stream
    side.synchronize()
    assert seen[-1] == side.cuda_stream
    assert got.device == means.device
    torch.testing.assert_close(got2, want, rtol=0, atol=0)


@pytest.mark.cuda
@gpu
def test_zero_copy(rng, monkeypatch):
    """The kernel reads the tensors' own memory and writes into a tensor that
    torch allocated: no CuPy-side copies of inputs or outputs."""
    seen = []
    run = cuda_backend.CudaBackend._run

    def spy(self, mode, pb, g=None, outputs=None, **kw):
        seen.append((pb.means.data.ptr if pb.means is not None else None,
                     pb.weights.data.ptr if pb.weights is not None else None,
                     [o.data.ptr for o in outputs if o is not None]))
        return run(self, mode, pb, g, outputs, **kw)

    monkeypatch.setattr(cuda_backend.CudaBackend, "_run", spy)
    mu, w = _problem(rng, B=2, T=300, D=16)
    m, tw = _cuda(mu), _cuda(w)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = mt.mlpg(m, tw, ASYM)
    torch.cuda.synchronize()
    grew = torch.cuda.memory_allocated() - before
    assert seen[-1] == (m.data_ptr(), tw.data_ptr(), [out.data_ptr()])
    assert grew == -(-out.numel() * out.element_size() // 512) * 512   # the output only


@pytest.mark.cuda
@gpu
def test_linalg_error_propagates(rng):
    mu, _ = _problem(rng, B=2, T=10, D=2)
    prec = np.ones_like(mu)
    prec[1, 4, :] = 0.0                                       # frame 4 of sequence 1: nothing
    prec[1, :, 2:] = 0.0                                      # and no dynamic windows
    with pytest.raises(np.linalg.LinAlgError) as want:
        mt.mlpg(torch.from_numpy(mu), precisions=torch.from_numpy(prec), windows=ASYM)
    with pytest.raises(np.linalg.LinAlgError) as got:
        mt.mlpg(_cuda(mu), precisions=_cuda(prec), windows=ASYM)
    assert str(got.value) == str(want.value)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("case", ["shape", "columns", "var-shape", "neg-var", "neg-prec", "nan",
                                  "lengths-range", "lengths-shape", "lengths-float", "boundary",
                                  "windows", "both", "bool"])
def test_bad_input_same_message_on_cuda(rng, case):
    arrays, opts = _bad_cases(rng)[case]
    targs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    with pytest.raises((ValueError, TypeError)) as want:
        mt.mlpg(**targs, **opts)
    with pytest.raises(want.type) as got:
        mt.mlpg(**{k: v.cuda() for k, v in targs.items()}, **opts)
    assert str(got.value) == str(want.value)   # (values print as Python numbers on both)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("layout", ["normal", "empty-batch", "non-contiguous"])
def test_opcheck_on_cuda(rng, layout):
    from test_torch import _opcheck_inputs

    mu, w, lengths = _opcheck_inputs(rng, layout)
    mu, w = mu.cuda(), w.cuda()
    D = mu.shape[-1] // len(ASYM)
    g = torch.from_numpy(rng.normal(size=tuple(mu.shape[:-1]) + (D,))).cuda()
    l, r, c = _encode(ASYM)
    for kind, ww in (("variance", w), ("none", None)):
        m = mu.detach().requires_grad_()
        wg = ww.detach().requires_grad_() if ww is not None else None
        torch.library.opcheck(_mlpg_op, _op_args(m, wg, kind, ASYM, lengths, "per-window"))
        torch.library.opcheck(_solve_op, _op_args(g.detach().requires_grad_(), wg, kind, ASYM,
                                                  lengths, "per-window"))
        torch.library.opcheck(_adjoint_op, (g, mu, ww, kind, list(l), list(r), list(c),
                                            lengths, "per-window", False))
    want = mt.mlpg(mu.cpu(), w.cpu(), ASYM, lengths=lengths)
    _close(mt.mlpg(mu, w, ASYM, lengths=lengths), want, torch.float64)


@pytest.mark.cuda
@gpu
def test_torch_compile_on_cuda(rng):
    torch.manual_seed(0)
    lin = torch.nn.Linear(9, 9).double().cuda()
    logvar = torch.nn.Parameter(torch.zeros(9, dtype=torch.float64, device="cuda"))
    lengths = torch.tensor([30, 18])

    def model(x):
        mu = lin(x)
        return (mt.mlpg(mu, torch.exp(logvar).expand_as(mu), lengths=lengths) ** 2).sum()

    x = _cuda(rng.normal(size=(2, 30, 9)))
    eager = model(x)
    ge = torch.autograd.grad(eager, [lin.weight, lin.bias, logvar])
    torch._dynamo.reset()
    got = torch.compile(model, fullgraph=True)(x)
    gc = torch.autograd.grad(got, [lin.weight, lin.bias, logvar])
    torch.testing.assert_close(got, eager, rtol=1e-12, atol=0)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.cuda
@gpu
def test_default_windows_mlpg_on_cuda_matches_numpy(rng):
    """The NumPy API on CuPy arrays and mlpgx.torch on CUDA tensors agree."""
    import cupy

    mu, w = _problem(rng, B=2, T=100, D=5, windows=DELTA)
    a = cupy.asnumpy(mlpgx.mlpg(cupy.asarray(mu), cupy.asarray(w)))
    t = mt.mlpg(_cuda(mu), _cuda(w)).cpu().numpy()
    np.testing.assert_array_equal(t, a)
    np.testing.assert_allclose(t, mlpgx.mlpg(mu, w), rtol=1e-12, atol=1e-12)

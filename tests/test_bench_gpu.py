"""benchmarks/bench_gpu.py: the parts that need no GPU.

The dense operator it times against reproduces :func:`mlpgx.mlpg` with unit
variances (boundary rule "none") on CPU tensors; the byte counts behind its
bandwidth column; the report (ratios and targets) from given timings; and
the script exits with status 0, a message and no files where there is no
GPU.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mlpgx  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compulsory_bytes(bench):
    # B=32, T=1000, D=187, L=3, float32: means + variances read, output written
    fwd = bench.compulsory_bytes(32, 1000, 187, 4)
    assert fwd == 32 * 1000 * (2 * 561 + 187) * 4 == 167_552_000
    # + upstream gradient read, gradients for means and variances written
    both = bench.compulsory_bytes(32, 1000, 187, 4, backward=True)
    assert both - fwd == 32 * 1000 * (187 + 2 * 561) * 4
    assert bench.compulsory_bytes(1, 5000, 60, 8) == 5000 * (2 * 180 + 60) * 8
    assert bench.compulsory_bytes(2, 7, 3, 8, n_windows=2) == 2 * 7 * (2 * 6 + 3) * 8


def test_stack_windows_layout(bench):
    B, T, D = 2, 5, 3
    mu = torch.arange(B * T * 3 * D, dtype=torch.float64).reshape(B, T, 3 * D)
    X = bench.stack_windows(mu)
    assert X.shape == (B, 3 * T, D)
    for l in range(3):
        torch.testing.assert_close(X[:, l * T:(l + 1) * T], mu[..., l * D:(l + 1) * D])


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_dense_operator_reproduces_mlpg(rng, bench, dtype, tol):
    """``M @ stack(means)`` is MLPG with unit variances and boundary "none"
    (forward), and ``M^T g`` the adjoint's gradient for the means."""
    B, T, D = 3, 40, 4
    mu = rng.normal(size=(B, T, 3 * D))
    g = rng.normal(size=(B, T, D))
    M = bench.dense_operator(T, dtype)
    assert M.shape == (T, 3 * T) and M.dtype == dtype and M.device.type == "cpu"
    X = bench.stack_windows(torch.from_numpy(mu).to(dtype)).requires_grad_()
    c = torch.matmul(M, X)
    want = mlpgx.mlpg(mu, boundary=bench.BOUNDARY, backend="reference")
    assert bench.relative_error(c.detach().numpy(), want) < tol
    c.backward(torch.from_numpy(g).to(dtype))
    gm, _ = mlpgx.mlpg_adjoint(g, mu, boundary=bench.BOUNDARY, backend="reference")
    want_gx = bench.stack_windows(torch.from_numpy(gm)).numpy()
    assert bench.relative_error(X.grad.numpy(), want_gx) < tol
    # and it is not the answer under another boundary rule (the rule matters)
    other = mlpgx.mlpg(mu, boundary="per-window", backend="reference")
    assert bench.relative_error(c.detach().numpy(), other) > 1e-3


def test_relative_error_and_slug(bench):
    assert bench.relative_error(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == 0.5
    assert bench.relative_error(np.zeros(0), np.zeros(0)) == 0.0
    assert bench.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench.device_slug("  ") == "gpu"


def test_report_ratios_and_targets(bench):
    base = dict(case="batch", B=32, T=4000, D=187, dtype="float32")
    nbytes = bench.compulsory_bytes(32, 4000, 187, 4)
    rows = [dict(base, path="torch fwd", ms=1.0, bytes=nbytes),
            dict(base, path="torch fwd+bwd", ms=4.0,
                 bytes=bench.compulsory_bytes(32, 4000, 187, 4, True)),
            dict(base, path="dense fwd", ms=20.0),
            dict(base, path="dense fwd+bwd", ms=30.0),
            dict(base, T=1000, path="cupy fwd", ms=1.0, bytes=nbytes / 4)]
    copy_bw = 3e12                                         # 670 GB/s / 3 TB/s = 22%
    bench.annotate(rows, copy_bw)
    fwd, bwd, dfwd, dbwd, short = rows
    assert fwd["copy_fraction"] == pytest.approx(nbytes / 1e-3 / copy_bw)
    assert fwd["dense_x"] == pytest.approx(20.0) and bwd["dense_x"] == pytest.approx(7.5)
    assert fwd["targets"] == "BW>=33%: NOT met; >=10x dense: met"
    assert bwd["targets"] == ">=10x dense: NOT met"        # no bandwidth target for fwd+bwd
    assert "dense_x" not in dfwd and dfwd["targets"] == ""
    assert "dense_x" not in short                          # no dense row at T=1000 here
    text = bench.table(rows)
    assert text.count("\n") == len(rows) + 1 and "| 20.0x |" in text


def _gpu_here(bench):
    return not bench.unavailable_reason()


def test_main_without_gpu_exits_cleanly(bench, tmp_path, capsys):
    if _gpu_here(bench):
        pytest.skip("a GPU is available here: the script would run")
    assert bench.main(["--out-dir", str(tmp_path)]) == 0
    assert bench.main(["--check", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("bench_gpu: nothing to do, nothing written: ") == 2
    assert bench.unavailable_reason() in out
    assert list(tmp_path.iterdir()) == []


def test_script_without_gpu_exit_status(bench, tmp_path):
    if _gpu_here(bench):
        pytest.skip("a GPU is available here: the script would run")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bench_gpu: nothing to do, nothing written:" in proc.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_run_case_on_cpu_stand_ins(bench, monkeypatch, dtype):
    """Every path of a case, verified against the reference backend, with the
    CPU standing in for the GPU (NumPy for CuPy, CPU tensors for CUDA ones,
    one untimed call for the CUDA-event timing): the checks pass and a row
    comes out per path."""
    import types

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(asarray=np.asarray,
                                                                    asnumpy=np.asarray))
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    dense = bench.dense_operator
    monkeypatch.setattr(bench, "dense_operator", lambda T, dt, device: dense(T, dt))
    monkeypatch.setattr(bench, "cuda_median_ms", lambda fn, lib, warmup, reps: [fn(), 1.0][1])
    rows = bench.run_case("batch", 2, 20, 3, dtype, True, "reference", 0, 1)
    assert [r["path"] for r in rows] == list(bench.PATHS)
    assert all(r["ms"] == 1.0 and r["dtype"] == np.dtype(dtype).name for r in rows)
    item = np.dtype(dtype).itemsize
    assert rows[0]["bytes"] == bench.compulsory_bytes(2, 20, 3, item)
    assert rows[1]["bytes"] == bench.compulsory_bytes(2, 20, 3, item, backward=True)
    assert "bytes" not in rows[-1]
    # a wrong path is caught before it is timed
    monkeypatch.setattr(bench, "BOUNDARY", "per-window")  # the dense operator ignores it
    with pytest.raises(AssertionError, match="dense fwd: relative error"):
        bench.run_case("batch", 2, 20, 3, dtype, True, "reference", 0, 1)


def test_result_check_bench_variants_and_exit_without_gpu(tmp_path, capsys):
    """benchmarks/bench_gpu_result_check.py: its variants swap the cuda
    backend's result reporting and restore it; without a usable cuda backend
    it says why and writes nothing."""
    from mlpgx.backends.cuda import CudaBackend

    path = SCRIPT.parent / "bench_gpu_result_check.py"
    spec = importlib.util.spec_from_file_location("bench_gpu_result_check", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert CudaBackend.tests_results
    try:
        mod._variant("scan")
        assert not CudaBackend.tests_results
    finally:
        mod._variant("kernel")
    assert CudaBackend.tests_results
    ok, why = mlpgx.backends.get("cuda").availability()
    if ok:
        pytest.skip("a GPU is available here: the script would run")
    assert mod.main(["--out-dir", str(tmp_path)]) == 0
    assert "bench_gpu_result_check: nothing to do, nothing written: " in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_write_cupy_bench(bench, tmp_path, capsys):
    """The shared report of the CuPy-only GPU benchmarks: the table printed,
    and .md/.json named by kind and device, with the run settings."""
    import argparse
    import json
    import types

    args = argparse.Namespace(reps=5, warmup=2, out_dir=str(tmp_path))
    gpu = (types.SimpleNamespace(__version__="14.2.0"), "NVIDIA H100 80GB HBM3")
    bench.write_cupy_bench("gpu-x", "mlpgx cuda x on the H100", "header line", "| a |\n|---|",
                           args, gpu, [{"a": 1}], rounds=3)
    assert "header line\n\n| a |" in capsys.readouterr().out
    stem = f"gpu-x-{bench.device_slug(gpu[1])}-{bench.today()}"
    payload = json.loads((tmp_path / f"{stem}.json").read_text())
    assert payload["rows"] == [{"a": 1}] and payload["rounds"] == 3
    assert (payload["reps"], payload["warmup"]) == (5, 2)
    assert payload["machine"]["cupy"] == "14.2.0"
    md = (tmp_path / f"{stem}.md").read_text()
    assert md.startswith("# mlpgx cuda x on the H100, ") and "| a |" in md

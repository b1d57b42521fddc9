"""GPU benchmark of the ``"cuda"`` backend: through ``mlpgx.torch`` on CUDA
tensors and through the NumPy API on CuPy arrays, against the memory floor
and the dense-matmul MLPG.

Usage::

    python benchmarks/bench_gpu.py             # the table below (needs a GPU, CuPy, torch with CUDA)
    python benchmarks/bench_gpu.py --check     # tiny sizes: verify every timed path, time briefly, write nothing
    python benchmarks/bench_gpu.py --reps 50 --out-dir /tmp/results

Without a GPU, CuPy or a CUDA build of torch it prints why, writes nothing
and exits with status 0.

Cases (windows DELTA, L = 3; ``boundary="none"`` everywhere so that the
dense operator solves the same system; float32 and float64):

- B=32, T=1000, D=187 and B=32, T=4000, D=187: every path below;
- B=1, T=5000, D=60: latency of the mlpgx paths.

Paths (each checked against :func:`mlpgx.mlpg` / :func:`mlpgx.mlpg_adjoint`
on the CPU before it is timed: the ``"cython"`` backend at full size, the
``"reference"`` backend with ``--check``):

``torch fwd``      ``mlpgx.torch.mlpg(means, variances)`` on CUDA tensors
``torch fwd+bwd``  the same, then ``.backward(g)`` (gradients for means and
                   variances; the backward reads the saved output ``c``)
``torch fwd+bwd, c re-solved``  the same with the backward solving for ``c``
                   again (``mlpgx.torch._BACKWARD_REUSES_OUTPUT = False``)
``cupy fwd``       ``mlpgx.mlpg(means, variances)`` on CuPy arrays
``cupy fwd+bwd``   ``c = mlpgx.mlpg(...)`` then ``mlpgx.mlpg_adjoint(..., output=c)``
                   on CuPy arrays
``cupy fwd+bwd, c re-solved``  the same without ``output=``
``dense fwd``      ``torch.matmul(M, X)``: ``M = (W^T W)^{-1} W^T`` precomputed
                   (not timed) for unit variances, ``X`` the means stacked
                   window-major ``(B, L*T, D)`` (nnmnkwii's ``UnitVarianceMLPG``)
``dense fwd+bwd``  the same, then ``.backward(g)``

Times: CUDA events around each call (torch's on torch's current stream,
CuPy's on CuPy's), after warm-up, median of ``--reps``.  Effective
bandwidth: :func:`compulsory_bytes` (means and variances read once, the
output written; with the backward also the upstream gradient read and the
two gradients written) / time, as a fraction of the measured device-to-device
copy bandwidth (``2 * bytes / time`` of a 1 GiB ``copy_`` / ``cupy.copyto``,
the faster of the two).  Targets printed next to the numbers: forward >= 33%
of the copy bandwidth; >= 10x faster than the dense matmul at T = 4000.

Writes ``benchmarks/results/<device-name-slug>-<date>.{md,json}`` (device
name from ``torch.cuda.get_device_name()``) and prints the Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mlpgx  # noqa: E402
from mlpgx.windows import DELTA  # noqa: E402
from _common import RESULTS, machine_info, today, write_results  # noqa: E402

L = len(DELTA)
BOUNDARY = "none"
#: (name, B, T, D, with the dense baseline)
CASES = [("batch", 32, 1000, 187, True), ("batch", 32, 4000, 187, True),
         ("latency", 1, 5000, 60, False)]
CHECK_CASES = [("batch", 3, 24, 5, True), ("batch", 2, 40, 4, True), ("latency", 1, 50, 3, False)]
PATHS = ("torch fwd", "torch fwd+bwd", "torch fwd+bwd, c re-solved", "cupy fwd",
         "cupy fwd+bwd", "cupy fwd+bwd, c re-solved", "dense fwd", "dense fwd+bwd")
TARGET_BW = 0.33
TARGET_DENSE_X = 10.0
TARGET_DENSE_T = 4000
COPY_BYTES = 1 << 30


# ---------------------------------------------------------------------------
# the parts that need no GPU (tests/test_bench_gpu.py)
# ---------------------------------------------------------------------------

def compulsory_bytes(B, T, D, itemsize, backward=False, n_windows=L):
    """Bytes a call must move at least: means and variances ``(B, T, L*D)``
    read, the output ``(B, T, D)`` written; with ``backward`` also the upstream
    gradient ``(B, T, D)`` read and the gradients for means and variances
    ``(B, T, L*D)`` each written."""
    frames = B * T
    n = frames * (2 * n_windows * D + D)
    if backward:
        n += frames * (D + 2 * n_windows * D)
    return n * itemsize


def stack_windows(means, n_windows=L):
    """``(B, T, L*D)`` means (window-major columns) -> ``(B, L*T, D)``, the
    row layout of ``W = [W_0; ...; W_{L-1}]`` that the dense operator takes."""
    B, T, LD = means.shape
    D = LD // n_windows
    return means.reshape(B, T, n_windows, D).permute(0, 2, 1, 3).reshape(B, n_windows * T, D)


def dense_operator(T, dtype, device="cpu"):
    """``M = (W^T W)^{-1} W^T``, ``(T, L*T)``: unit-variance MLPG as one matrix
    (boundary rule ``"none"``: window terms outside the sequence dropped,
    every row kept), built in float64 by ``benchmarks/bench_torch.py``'s
    :func:`unit_variance_matrix` and then cast and moved."""
    import torch
    from bench_torch import unit_variance_matrix

    return unit_variance_matrix(T, torch.float64).to(device=device, dtype=dtype)


def device_slug(name):
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def cupy_bench_args(script, doc, argv, **extra):
    """The arguments of a CuPy-only GPU benchmark (``--reps``, ``--warmup``,
    ``--out-dir``, and ``extra``: name -> default, integers), and ``(cupy,
    device name)``, or ``None`` after saying why the ``cuda`` backend cannot
    run here (the script then exits 0, having written nothing)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    for key, default in extra.items():
        ap.add_argument(f"--{key}", type=int, default=default)
    ap.add_argument("--out-dir", default=RESULTS)
    args = ap.parse_args(argv)
    ok, why = mlpgx.backends.get("cuda").availability()
    if not ok:
        print(f"{script}: nothing to do, nothing written: {why}")
        return args, None
    import cupy as cp

    return args, (cp, cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode())


def write_cupy_bench(kind, title, header, text, args, gpu, rows, **extra):
    """Print a CuPy-only GPU benchmark's table and write it with its rows as
    ``<args.out_dir>/<kind>-<device>-<date>.{md,json}`` (``gpu``: the
    ``(cupy, device name)`` of :func:`cupy_bench_args`; ``extra``: more run
    settings for the JSON)."""
    cp, name = gpu
    print(header + "\n\n" + text)
    payload = dict(machine=machine_info(gpu=name, cupy=cp.__version__), date=today(),
                   reps=args.reps, warmup=args.warmup, **extra, rows=rows)
    json.dumps(payload)   # fail before writing anything if it does not serialise
    write_results(f"{kind}-{device_slug(name)}", title, payload,
                  [(None, header), (None, text)], out_dir=args.out_dir)


def unavailable_reason():
    """Why the GPU paths cannot run here (``""`` when they can)."""
    try:
        import torch
    except Exception as exc:
        return f"torch is not importable ({type(exc).__name__}: {exc})"
    if not torch.cuda.is_available():
        return f"torch sees no CUDA GPU (torch {torch.__version__}, torch.cuda.is_available() is False)"
    try:
        import cupy  # noqa: F401
    except Exception as exc:
        return (f"cupy is not importable ({type(exc).__name__}: {exc}); install mlpgx[cuda12] "
                f"or mlpgx[cuda13]")
    ok, why = mlpgx.backends.get("cuda").availability()
    if not ok:
        return f"backend 'cuda' is unavailable: {why}"
    try:
        mlpgx.backends.for_torch_device("cuda")
    except RuntimeError as exc:
        return str(exc)
    return ""


def relative_error(got, want):
    """``max |got - want| / max |want|`` (NumPy arrays)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if want.size == 0:
        return 0.0
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------

def cuda_median_ms(fn, lib, warmup=3, reps=20):
    """Median time of ``fn()`` in ms from CUDA events recorded just before and
    after it on the current stream of ``lib`` (``"torch"`` or ``"cupy"``)."""
    if lib == "torch":
        import torch

        new_event = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
        elapsed = lambda a, b: a.elapsed_time(b)  # noqa: E731
    else:
        import cupy

        new_event, elapsed = cupy.cuda.Event, cupy.cuda.get_elapsed_time
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = new_event(), new_event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(elapsed(start, end))
    return statistics.median(times)


def copy_bandwidth(warmup, reps, nbytes=COPY_BYTES):
    """Device-to-device copy bandwidth, bytes/s (read + write), torch and CuPy."""
    import cupy
    import torch

    n = nbytes // 4
    src, dst = torch.ones(n, device="cuda"), torch.empty(n, device="cuda")
    t_torch = cuda_median_ms(lambda: dst.copy_(src), "torch", warmup, reps)
    del src, dst
    src, dst = cupy.ones(n, dtype=np.float32), cupy.empty(n, dtype=np.float32)
    t_cupy = cuda_median_ms(lambda: cupy.copyto(dst, src), "cupy", warmup, reps)
    del src, dst
    return dict(torch=2 * 4 * n / (t_torch * 1e-3), cupy=2 * 4 * n / (t_cupy * 1e-3))


# ---------------------------------------------------------------------------
# one case
# ---------------------------------------------------------------------------

def _inputs(B, T, D, dtype, seed):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(B, T, L * D)).astype(dtype)
    var = rng.uniform(0.5, 2.0, size=(B, T, L * D)).astype(dtype)
    g = rng.normal(size=(B, T, D)).astype(dtype)
    return mu, var, g


def _check(label, err, tol):
    if not err <= tol:
        raise AssertionError(f"{label}: relative error {err:.3g} > {tol:g} against mlpgx.mlpg "
                             f"on the CPU")


def run_case(name, B, T, D, dtype, dense, oracle, warmup, reps, seed=0):
    """Verify, then time, every path of one case; a row per path."""
    import cupy
    import torch

    import mlpgx.torch as mt

    mu, var, g = _inputs(B, T, D, dtype, seed)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    want = mlpgx.mlpg(mu, var, boundary=BOUNDARY, backend=oracle)
    want_gm, want_gv = mlpgx.mlpg_adjoint(g, mu, var, boundary=BOUNDARY, backend=oracle)
    itemsize = np.dtype(dtype).itemsize
    tdt = getattr(torch, np.dtype(dtype).name)
    tmu, tvar, tg = (torch.from_numpy(a).cuda() for a in (mu, var, g))
    cmu, cvar, cg = (cupy.asarray(a) for a in (mu, var, g))
    rows = []

    def row(path, ms, backward=None):
        r = dict(case=name, B=B, T=T, D=D, dtype=np.dtype(dtype).name, path=path, ms=ms)
        if backward is not None:
            r["bytes"] = compulsory_bytes(B, T, D, itemsize, backward)
        rows.append(r)

    # torch: forward, forward + backward
    got = mt.mlpg(tmu, tvar, boundary=BOUNDARY)
    _check(f"{name} torch fwd", relative_error(got.cpu().numpy(), want), tol)
    row("torch fwd", cuda_median_ms(lambda: mt.mlpg(tmu, tvar, boundary=BOUNDARY), "torch",
                                    warmup, reps), False)
    gmu, gvar = tmu.clone().requires_grad_(), tvar.clone().requires_grad_()

    def torch_fwd_bwd():
        gmu.grad = gvar.grad = None
        mt.mlpg(gmu, gvar, boundary=BOUNDARY).backward(tg)

    for path, reuse in (("torch fwd+bwd", True), ("torch fwd+bwd, c re-solved", False)):
        saved, mt._BACKWARD_REUSES_OUTPUT = mt._BACKWARD_REUSES_OUTPUT, reuse
        try:
            torch_fwd_bwd()
            _check(f"{name} {path} (means)", relative_error(gmu.grad.cpu().numpy(), want_gm),
                   tol)
            _check(f"{name} {path} (variances)",
                   relative_error(gvar.grad.cpu().numpy(), want_gv), tol)
            row(path, cuda_median_ms(torch_fwd_bwd, "torch", warmup, reps), True)
        finally:
            mt._BACKWARD_REUSES_OUTPUT = saved
    del gmu, gvar

    # CuPy arrays through the NumPy API
    got = mlpgx.mlpg(cmu, cvar, boundary=BOUNDARY)
    _check(f"{name} cupy fwd", relative_error(cupy.asnumpy(got), want), tol)
    row("cupy fwd", cuda_median_ms(lambda: mlpgx.mlpg(cmu, cvar, boundary=BOUNDARY), "cupy",
                                   warmup, reps), False)

    def cupy_fwd_bwd(reuse):
        c = mlpgx.mlpg(cmu, cvar, boundary=BOUNDARY)
        return c, mlpgx.mlpg_adjoint(cg, cmu, cvar, boundary=BOUNDARY,
                                     output=c if reuse else None)

    for path, reuse in (("cupy fwd+bwd", True), ("cupy fwd+bwd, c re-solved", False)):
        _, (gm, gv) = cupy_fwd_bwd(reuse)
        _check(f"{name} {path} (means)", relative_error(cupy.asnumpy(gm), want_gm), tol)
        _check(f"{name} {path} (variances)", relative_error(cupy.asnumpy(gv), want_gv), tol)
        row(path, cuda_median_ms(lambda: cupy_fwd_bwd(reuse), "cupy", warmup, reps), True)
    del gm, gv

    if dense:
        rows.extend(_dense_rows(name, B, T, D, dtype, tdt, tmu, tg, oracle, warmup, reps))
    return rows


def _dense_rows(name, B, T, D, dtype, tdt, tmu, tg, oracle, warmup, reps):
    """The dense baseline (unit variances), checked against mlpgx's unit-variance solution."""
    import torch

    mu, g = tmu.cpu().numpy(), tg.cpu().numpy()
    want = mlpgx.mlpg(mu, boundary=BOUNDARY, backend=oracle)
    want_gm, _ = mlpgx.mlpg_adjoint(g, mu, boundary=BOUNDARY, backend=oracle)
    tol = 1e-3 if dtype == np.float32 else 1e-7
    M = dense_operator(T, tdt, "cuda")
    X = stack_windows(tmu).contiguous()
    _check(f"{name} dense fwd", relative_error(torch.matmul(M, X).cpu().numpy(), want), tol)
    rows = [dict(case=name, B=B, T=T, D=D, dtype=np.dtype(dtype).name, path="dense fwd",
                 ms=cuda_median_ms(lambda: torch.matmul(M, X), "torch", warmup, reps))]
    Xg = X.clone().requires_grad_()

    def fwd_bwd():
        Xg.grad = None
        torch.matmul(M, Xg).backward(tg)

    fwd_bwd()
    _check(f"{name} dense bwd", relative_error(Xg.grad.cpu().numpy(),
                                               stack_windows(torch.from_numpy(want_gm)).numpy()),
           tol)
    rows.append(dict(rows[0], path="dense fwd+bwd",
                     ms=cuda_median_ms(fwd_bwd, "torch", warmup, reps)))
    return rows


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

def annotate(rows, copy_bw):
    """Bandwidth, fraction of the copy bandwidth, speed-up over the dense
    matmul of the same case and direction, and the targets met or not."""
    dense = {(r["B"], r["T"], r["D"], r["dtype"], r["path"].split()[1]): r["ms"]
             for r in rows if r["path"].startswith("dense")}
    for r in rows:
        if "bytes" in r:
            r["GBps"] = r["bytes"] / (r["ms"] * 1e-3) / 1e9
            r["copy_fraction"] = r["bytes"] / (r["ms"] * 1e-3) / copy_bw
        d = dense.get((r["B"], r["T"], r["D"], r["dtype"], r["path"].split()[1]))
        if d is not None and not r["path"].startswith("dense"):
            r["dense_x"] = d / r["ms"]
        targets = []
        if r["path"].endswith(" fwd") and "copy_fraction" in r:
            targets.append(f"BW>=33%: {'met' if r['copy_fraction'] >= TARGET_BW else 'NOT met'}")
        if "dense_x" in r and r["T"] == TARGET_DENSE_T:
            targets.append(f">=10x dense: {'met' if r['dense_x'] >= TARGET_DENSE_X else 'NOT met'}")
        r["targets"] = "; ".join(targets)
    return rows


def table(rows):
    out = ["| case | B | T | D | dtype | path | median ms | MB moved | GB/s | % of copy BW "
           "| dense / this | targets |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mb = f"{r['bytes'] / 1e6:.1f}" if "bytes" in r else "-"
        gbs = f"{r['GBps']:.0f}" if "GBps" in r else "-"
        frac = f"{100 * r['copy_fraction']:.1f}%" if "copy_fraction" in r else "-"
        dx = f"{r['dense_x']:.1f}x" if "dense_x" in r else "-"
        out.append(f"| {r['case']} | {r['B']} | {r['T']} | {r['D']} | {r['dtype']} | {r['path']} "
                   f"| {r['ms']:.3f} | {mb} | {gbs} | {frac} | {dx} | {r['targets'] or '-'} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="tiny sizes, every path verified against the reference backend; "
                         "nothing written")
    ap.add_argument("--reps", type=int, default=20, help="timed calls per path (median)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per path first")
    ap.add_argument("--out-dir", default=RESULTS, help="where the .md/.json go")
    args = ap.parse_args(argv)

    why = unavailable_reason()
    if why:
        print(f"bench_gpu: nothing to do, nothing written: {why}")
        return 0

    import cupy
    import torch

    reps, warmup = (2, 1) if args.check else (args.reps, args.warmup)
    cases = CHECK_CASES if args.check else CASES
    oracle = "reference" if args.check else "cython"
    name = torch.cuda.get_device_name()
    bw = copy_bandwidth(warmup, reps, nbytes=(1 << 24) if args.check else COPY_BYTES)
    copy_bw = max(bw.values())
    rows = []
    for case, B, T, D, dense in cases:
        for dtype in (np.float32, np.float64):
            rows.extend(run_case(case, B, T, D, dtype, dense, oracle, warmup, reps))
            print(f"  {case} B={B} T={T} D={D} {np.dtype(dtype).name}: verified, timed",
                  file=sys.stderr)
    annotate(rows, copy_bw)
    header = (f"{name}; copy bandwidth {copy_bw / 1e9:.0f} GB/s (torch {bw['torch'] / 1e9:.0f}, "
              f"CuPy {bw['cupy'] / 1e9:.0f}); median of {reps} after {warmup} warm-up; "
              f"boundary={BOUNDARY!r}; every path verified against mlpgx.mlpg "
              f"(backend={oracle!r}) first.  Targets: forward >= {TARGET_BW:.0%} of the copy "
              f"bandwidth; >= {TARGET_DENSE_X:g}x the dense matmul at T = {TARGET_DENSE_T}")
    print(header + "\n")
    print(table(rows))
    if args.check:
        print("\nbench_gpu --check: every timed path matches the CPU reference; nothing written")
        return 0
    payload = dict(machine=machine_info(gpu=name, torch=torch.__version__,
                                        cupy=cupy.__version__,
                                        cuda_runtime=cupy.cuda.runtime.runtimeGetVersion()),
                   date=today(), copy_bandwidth=bw, reps=reps, warmup=warmup,
                   boundary=BOUNDARY, targets=dict(copy_fraction=TARGET_BW,
                                                   dense_speedup=TARGET_DENSE_X,
                                                   dense_T=TARGET_DENSE_T),
                   rows=rows)
    json.dumps(payload)  # fail before writing anything if it does not serialise
    write_results(device_slug(name), f"mlpgx cuda backend on {name}", payload,
                  [(None, header), (None, table(rows))], out_dir=args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

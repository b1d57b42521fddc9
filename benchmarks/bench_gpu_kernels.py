"""A/B of the ``"cuda"`` backend's kernels on CuPy arrays: the general kernel
(``mlpg_kernel``, any window width) against the k <= 2 path ``split`` (rows
and gradients one thread per frame, the recurrence one thread per sequence
and dimension: ``mlpg_split_*``) at several prefetch depths, and each one's
adjoint given the forward's output (``output=c``: ``v`` alone solved for)
against the adjoint that solves for ``c`` again.  (The results of 2026-11-26
also show a ``fused`` k <= 2 kernel, all in the per-sequence thread, that the
split path replaced, and prefetch depths 1 and 16.)

Usage::

    python benchmarks/bench_gpu_kernels.py [--reps 20] [--out-dir DIR]

DELTA windows, per-frame variances, ``boundary="none"``, float32 and
float64; cases B=32, T=1000, D=187 (a training batch) and B=1, T=5000, D=60
(inference latency).  Every variant's forward and adjoint are first checked
against the ``"cython"`` backend on the same arrays (scaled max error at the
dtype's tolerance); then each is timed with CUDA events (median of
``--reps`` after warm-up).  Prints a table and writes
``<out-dir>/gpu-kernels-<device>-<date>.{md,json}``.  Without a GPU and
CuPy it says why and exits 0.
"""
from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mlpgx  # noqa: E402
from mlpgx.backends import cuda as cuda_backend  # noqa: E402
from mlpgx.windows import DELTA  # noqa: E402
from bench_gpu import (cuda_median_ms, cupy_bench_args, relative_error,  # noqa: E402
                       write_cupy_bench)

CASES = [(32, 1000, 187), (1, 5000, 60)]
#: (label, K2_KERNEL, prefetch depth)
VARIANTS = [("general", "general", 8), ("split pf=4", "split", 4), ("split pf=8", "split", 8)]
TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def main(argv=None):
    args, gpu = cupy_bench_args("bench_gpu_kernels", __doc__, argv)
    if gpu is None:
        return 0
    cp, name = gpu
    rng = np.random.default_rng(0)
    rows = []
    saved = (cuda_backend.K2_KERNEL, cuda_backend.BAND2_PREFETCH)
    try:
        for B, T, D in CASES:
            for dtype in (np.float32, np.float64):
                dt = np.dtype(dtype)
                m = rng.standard_normal((B, T, 3 * D)).astype(dt)
                v = rng.uniform(0.2, 2.0, (B, T, 3 * D)).astype(dt)
                g = rng.standard_normal((B, T, D)).astype(dt)
                kw = dict(windows=DELTA, boundary="none")
                c_ref = mlpgx.mlpg(m, v, backend="cython", **kw)
                gm_ref, gv_ref = mlpgx.mlpg_adjoint(g, m, v, backend="cython", **kw)
                md, vd, gd = cp.asarray(m), cp.asarray(v), cp.asarray(g)
                for label, kernel, pf in VARIANTS:
                    cuda_backend.K2_KERNEL, cuda_backend.BAND2_PREFETCH = kernel, pf
                    c = mlpgx.mlpg(md, vd, backend="cuda", **kw)
                    gm, gv = mlpgx.mlpg_adjoint(gd, md, vd, backend="cuda", **kw)
                    gmo, gvo = mlpgx.mlpg_adjoint(gd, md, vd, backend="cuda", output=c, **kw)
                    err = max(relative_error(cp.asnumpy(c), c_ref),
                              relative_error(cp.asnumpy(gm), gm_ref),
                              relative_error(cp.asnumpy(gv), gv_ref),
                              relative_error(cp.asnumpy(gmo), gm_ref),
                              relative_error(cp.asnumpy(gvo), gv_ref))
                    if not err <= TOL[dt]:
                        raise AssertionError(f"{label} B={B} T={T} D={D} {dt.name}: "
                                             f"scaled error {err:.3g} > {TOL[dt]:g}")
                    fwd = cuda_median_ms(lambda: mlpgx.mlpg(md, vd, backend="cuda", **kw),
                                         "cupy", args.warmup, args.reps)
                    adj = cuda_median_ms(
                        lambda: mlpgx.mlpg_adjoint(gd, md, vd, backend="cuda", **kw),
                        "cupy", args.warmup, args.reps)
                    adj_out = cuda_median_ms(
                        lambda: mlpgx.mlpg_adjoint(gd, md, vd, backend="cuda", output=c, **kw),
                        "cupy", args.warmup, args.reps)
                    rows.append(dict(B=B, T=T, D=D, dtype=dt.name, variant=label,
                                     fwd_ms=fwd, adjoint_ms=adj, adjoint_output_ms=adj_out,
                                     max_scaled_error=err))
                    print(f"  B={B} T={T} D={D} {dt.name} {label}: fwd {fwd:.3f} ms, "
                          f"adjoint {adj:.3f} ms, given c {adj_out:.3f} ms, error {err:.2g}",
                          file=sys.stderr)
    finally:
        cuda_backend.K2_KERNEL, cuda_backend.BAND2_PREFETCH = saved
    base = {}
    for r in rows:
        if r["variant"] == "general":
            base[(r["B"], r["T"], r["D"], r["dtype"])] = r
    lines = ["| B | T | D | dtype | kernel | fwd ms | adjoint ms | adjoint given c ms "
             "| given c / adjoint | fwd speed-up vs general | adjoint speed-up "
             "| max scaled error |", "|" + "---|" * 12]
    for r in rows:
        b = base[(r["B"], r["T"], r["D"], r["dtype"])]
        lines.append(f"| {r['B']} | {r['T']} | {r['D']} | {r['dtype']} | {r['variant']} | "
                     f"{r['fwd_ms']:.3f} | {r['adjoint_ms']:.3f} | "
                     f"{r['adjoint_output_ms']:.3f} | "
                     f"{r['adjoint_output_ms'] / r['adjoint_ms']:.2f} | "
                     f"{b['fwd_ms'] / r['fwd_ms']:.1f}x | "
                     f"{b['adjoint_ms'] / r['adjoint_ms']:.1f}x | "
                     f"{r['max_scaled_error']:.1e} |")
    text = "\n".join(lines)
    header = (f"{name}; CuPy arrays through mlpgx.mlpg / mlpgx.mlpg_adjoint (validation "
              f"included); DELTA, per-frame variances, boundary='none'; median of "
              f"{args.reps} after {args.warmup} warm-up; every variant checked against "
              f"backend='cython' first")
    write_cupy_bench("gpu-kernels", f"mlpgx cuda kernels A/B on {name}", header, text, args,
                     gpu, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A/B of the ``"cuda"`` backend's in-kernel result test against the
validation layer's scan of the results.

The kernels test every result they store finite and report it with the
pivot status (``CudaBackend.tests_results``: its ``forward_checked`` /
``adjoint_checked`` / ``solve_checked`` pass that on), so the API layer does
not scan those results again.  Variant ``scan`` turns ``tests_results`` off,
restoring the scan, to measure what that saves.

Usage::

    python benchmarks/bench_gpu_result_check.py [--reps 20] [--out-dir DIR]

DELTA windows, per-frame variances, ``boundary="none"``; B=32, T=1000,
D=187 and B=1, T=5000, D=60; float32 and float64; ``mlpgx.mlpg``,
``mlpgx.mlpg_adjoint`` and ``mlpgx.mlpg_adjoint(..., output=c)`` on CuPy
arrays (validation included).  Both variants are timed in alternation
(``--rounds`` rounds of CUDA-event medians, the median of those reported).
Prints a table and writes ``<out-dir>/gpu-result-check-<device>-<date>.{md,json}``.
Without a GPU and CuPy it says why and exits 0.
"""
from __future__ import annotations

import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mlpgx  # noqa: E402
from mlpgx.backends import cuda as cuda_backend  # noqa: E402
from mlpgx.windows import DELTA  # noqa: E402
from bench_gpu import cuda_median_ms, cupy_bench_args, write_cupy_bench  # noqa: E402

CASES = [(32, 1000, 187), (1, 5000, 60)]


def _variant(name):
    """Set the cuda backend's result reporting: ``"kernel"`` (its kernels'
    test, ``tests_results``) or ``"scan"`` (nothing reported: the layer
    scans)."""
    cuda_backend.CudaBackend.tests_results = name == "kernel"


def main(argv=None):
    args, gpu = cupy_bench_args("bench_gpu_result_check", __doc__, argv, rounds=3)
    if gpu is None:
        return 0
    cp, name = gpu
    rng = np.random.default_rng(0)
    rows = []
    try:
        for B, T, D in CASES:
            for dtype in (np.float32, np.float64):
                dt = np.dtype(dtype)
                kw = dict(windows=DELTA, boundary="none", backend="cuda")
                md = cp.asarray(rng.standard_normal((B, T, 3 * D)).astype(dt))
                vd = cp.asarray(rng.uniform(0.2, 2.0, (B, T, 3 * D)).astype(dt))
                gd = cp.asarray(rng.standard_normal((B, T, D)).astype(dt))
                c = mlpgx.mlpg(md, vd, **kw)
                calls = {"forward": lambda: mlpgx.mlpg(md, vd, **kw),
                         "adjoint": lambda: mlpgx.mlpg_adjoint(gd, md, vd, **kw),
                         "adjoint given c": lambda: mlpgx.mlpg_adjoint(gd, md, vd, output=c,
                                                                       **kw)}
                for op, fn in calls.items():
                    times = {"kernel": [], "scan": []}
                    for _ in range(args.rounds):
                        for variant in ("kernel", "scan"):
                            _variant(variant)
                            times[variant].append(
                                cuda_median_ms(fn, "cupy", args.warmup, args.reps))
                    _variant("kernel")
                    k, s = (statistics.median(times[v]) for v in ("kernel", "scan"))
                    rows.append(dict(B=B, T=T, D=D, dtype=dt.name, operation=op,
                                     kernel_ms=k, scan_ms=s, rounds=times))
                    print(f"  B={B} T={T} D={D} {dt.name} {op}: tested in the kernel "
                          f"{k:.3f} ms, scanned {s:.3f} ms", file=sys.stderr)
    finally:
        _variant("kernel")
    lines = ["| B | T | D | dtype | operation | tested in the kernel, ms | scanned, ms "
             "| kernel / scan |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['B']} | {r['T']} | {r['D']} | {r['dtype']} | {r['operation']} | "
                     f"{r['kernel_ms']:.3f} | {r['scan_ms']:.3f} | "
                     f"{r['kernel_ms'] / r['scan_ms']:.2f} |")
    text = "\n".join(lines)
    header = (f"{name}; CuPy arrays through mlpgx.mlpg / mlpgx.mlpg_adjoint (validation "
              f"included); DELTA, per-frame variances, boundary='none'; each cell the median "
              f"of {args.rounds} rounds (alternating the variants) of a median of "
              f"{args.reps} calls after {args.warmup} warm-up")
    write_cupy_bench("gpu-result-check",
                     f"mlpgx cuda: results tested in the kernel vs scanned, on {name}",
                     header, text, args, gpu, rows, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

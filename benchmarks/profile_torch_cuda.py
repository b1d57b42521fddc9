"""Where the time of ``mlpgx.torch`` on CUDA tensors goes, next to the same
work through the NumPy API on CuPy arrays (bench_gpu.py measured the torch
path 0.2-1.2 ms slower on an H100).

Usage (needs a GPU, CuPy and a CUDA build of torch)::

    python benchmarks/profile_torch_cuda.py --out-dir DIR [--dtype float32] [--B 32 --T 1000 --D 187]

Writes to ``DIR``:

- ``profile-summary.txt``: host wall-clock per call (``perf_counter`` between
  two ``torch.cuda.synchronize()``, median of 30) of each path and of the
  pieces of the torch forward (DLPack views, the validation layer on the
  views, the kernel launch with its status read-back, the output
  allocation, the two validation reductions);
- ``profile-cprofile-<path>.txt``: cProfile of 30 calls of each path, top 40
  functions by cumulative and by own time;
- ``profile-torch-fwdbwd.txt``: ``torch.profiler`` key averages (CPU and CUDA
  time) of 10 forward + backward steps.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlpgx  # noqa: E402
from mlpgx.windows import DELTA  # noqa: E402
from bench_gpu import unavailable_reason  # noqa: E402

REPS = 30


def wall_ms(fn, sync, reps=REPS, warmup=3):
    """Median host wall-clock of ``fn()`` between two device synchronisations."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cprofile_text(fn, sync, reps=REPS):
    fn()
    sync()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(reps):
        fn()
    sync()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(40)
    return out.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--D", type=int, default=187)
    args = ap.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"profile_torch_cuda: nothing to do: {reason}")
        return

    import cupy
    import torch

    import mlpgx.torch as mt
    from mlpgx import torch as mtorch_mod
    from mlpgx._validate import make_problem

    os.makedirs(args.out_dir, exist_ok=True)
    B, T, D, L = args.B, args.T, args.D, 3
    dt = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(B, T, L * D)).astype(dt)
    var = rng.uniform(0.5, 2.0, size=(B, T, L * D)).astype(dt)
    g = rng.normal(size=(B, T, D)).astype(dt)
    tmu, tvar, tg = (torch.from_numpy(a).cuda() for a in (mu, var, g))
    cmu, cvar, cg = (cupy.asarray(a) for a in (mu, var, g))
    sync = torch.cuda.synchronize
    gmu, gvar = tmu.clone().requires_grad_(), tvar.clone().requires_grad_()

    def torch_fwd():
        return mt.mlpg(tmu, tvar)

    def torch_fwd_bwd():
        gmu.grad = gvar.grad = None
        mt.mlpg(gmu, gvar).backward(tg)

    def cupy_fwd():
        return mlpgx.mlpg(cmu, cvar)

    def cupy_adj():
        return mlpgx.mlpg_adjoint(cg, cmu, cvar)

    def cupy_fwd_bwd():
        return cupy_fwd(), cupy_adj()

    paths = {"torch-fwd": torch_fwd, "torch-fwdbwd": torch_fwd_bwd, "cupy-fwd": cupy_fwd,
             "cupy-adjoint": cupy_adj, "cupy-fwdbwd": cupy_fwd_bwd}
    lines = [f"B={B} T={T} D={D} {dt.name}; {torch.cuda.get_device_name()}; torch "
             f"{torch.__version__}, cupy {cupy.__version__}", "",
             "host wall-clock per call, median of %d (ms):" % REPS]
    for name, fn in paths.items():
        lines.append(f"  {name:14s} {wall_ms(fn, sync):8.3f}")

    # the pieces of the torch forward, one at a time, inside torch's stream context
    backend = mlpgx.backends.get("cuda")
    with mtorch_mod._torch_stream(tmu.device) as cp:
        view = lambda t: mtorch_mod._cupy_view(cp, t)  # noqa: E731
        m, w = view(tmu), view(tvar)
        pb = make_problem(m, w, DELTA)
        out = torch.empty((B, T, D), dtype=tmu.dtype, device=tmu.device)
        pieces = {
            "2 DLPack views": lambda: (view(tmu), view(tvar)),
            "make_problem (validation)": lambda: make_problem(m, w, DELTA),
            "make_problem, no finite scan": lambda: make_problem(m, w, DELTA,
                                                                 check_finite=False),
            "torch.empty output": lambda: torch.empty((B, T, D), dtype=tmu.dtype,
                                                      device=tmu.device),
            "kernel via backend._run": lambda: backend._run("forward", pb, None,
                                                            outputs=(view(out),)),
            "cupy sum (finite scan)": lambda: float(m.sum()),
            "cupy min (variance scan)": lambda: float(w.min()),
        }
        lines += ["", "pieces of the torch forward (ms):"]
        for name, fn in pieces.items():
            lines.append(f"  {name:30s} {wall_ms(fn, sync):8.3f}")

    with open(os.path.join(args.out_dir, "profile-summary.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    for name in ("torch-fwd", "torch-fwdbwd", "cupy-fwdbwd"):
        with open(os.path.join(args.out_dir, f"profile-cprofile-{name}.txt"), "w") as fh:
            fh.write(cprofile_text(paths[name], sync))

    from torch.profiler import ProfilerActivity, profile
    torch_fwd_bwd()
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            torch_fwd_bwd()
        sync()
    with open(os.path.join(args.out_dir, "profile-torch-fwdbwd.txt"), "w") as fh:
        fh.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))
        fh.write("\n\n")
        fh.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
    print("wrote", args.out_dir)


if __name__ == "__main__":
    main()

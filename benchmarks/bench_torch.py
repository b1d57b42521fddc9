"""PyTorch benchmark: forward + backward of ``mlpgx.torch.mlpg`` against the
dense differentiable baselines.

Prints a Markdown table and writes ``benchmarks/results/torch-<date>.json``.
Every ratio in a row comes from the same run.

Usage::

    python benchmarks/bench_torch.py            # B {1,32} x T {200,1000,4000} x D {60,187} x f32/f64 (~3 min)
    python benchmarks/bench_torch.py --quick    # a few small sizes
    python benchmarks/bench_torch.py --full     # no flop cap on the dense baselines (slow)

Columns
-------
mlpgx      ``mlpgx.torch.mlpg(means, variances)`` forward + backward (gradients
           for means AND time-varying variances), ``boundary="none"``
c again    the same with a backward that solves for ``c`` again instead of
           reading the saved output (as before ``output=`` existed); the
           ratio is that time / mlpgx's
dense MM   (a) the "unit-variance MLPG matrix" ``M = (W^T W)^{-1} W^T``
           (nnmnkwii ``UnitVarianceMLPG``, diffsptk), precomputed once (not
           timed), then ``torch.matmul(M, means)`` forward + backward; unit
           variances only
solve      (b) ``torch.linalg.solve`` on the dense ``R = sum_l W_l^T P_l W_l``
           (built with ``diag_embed`` from the precisions, timed), forward +
           backward w.r.t. means and variances
x          baseline time / mlpgx time (> 1: mlpgx is faster)
overhead   one op call (forward + backward) at B=1, T=8, D=1

(a) is skipped ("-") when it would need more than 2 GB or, without ``--full``,
more than ``--flop-cap`` floating-point operations per call.  (b) is timed on
the first ``Ds`` static dimensions that fit those limits and scaled by
``D / Ds`` (dimensions are independent; JSON ``solve_dims_timed``); "-" when
not even one dimension fits.
Each baseline is checked against mlpgx on its first run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

def _threads_from_argv(argv):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


# before numpy/torch/mlpgx start their thread pools: the same thread count for all
os.environ.setdefault("OMP_NUM_THREADS", _threads_from_argv(sys.argv))

import numpy as np  # noqa: E402
import torch  # noqa: E402

try:  # the installed package; else the checkout this script is in (built in place)
    import mlpgx  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlpgx  # noqa: E402
import mlpgx.torch as mt  # noqa: E402
from mlpgx.windows import DELTA  # noqa: E402

GB = 1 << 30


def best_time(fn, budget=0.5, min_runs=2, max_runs=20):
    t0 = time.perf_counter()
    fn()  # warm-up (first-call set-up, page faults)
    if time.perf_counter() - t0 > 4 * budget:  # slow: one more run is the measurement
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget and len(times) < max_runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def dense_windows(T, dtype):
    """``W_all`` ``(L*T, T)`` (rows window-major, terms outside [0, T) dropped)."""
    mats = mlpgx.window_matrix(DELTA, T, format="sparse")
    return torch.from_numpy(np.vstack([m.toarray() for m in mats])).to(dtype)


def unit_variance_matrix(T, dtype):
    """``M = (W^T W)^{-1} W^T``, ``(T, L*T)``, via mlpgx's own banded solve."""
    Wt = dense_windows(T, torch.float64).T.contiguous().numpy()   # (T, L*T)
    M = mlpgx.mlpg_solve(Wt, windows=DELTA, boundary="none")      # R = W^T W
    return torch.from_numpy(M).to(dtype)


def dense_R(p, T):
    """``R`` ``(B, D, T, T)`` from precisions ``p`` ``(B, D, L, T)``; differentiable."""
    R = None
    ml = max(w.left for w in DELTA)
    mr = max(w.right for w in DELTA)
    pp = torch.nn.functional.pad(p, (ml + mr + 2, ml + mr + 2))
    P0 = ml + mr + 2
    for l, w in enumerate(DELTA):
        for j, a in enumerate(w.coeffs):
            for jj, b in enumerate(w.coeffs):
                if a == 0.0 or b == 0.0:
                    continue
                o = jj - j                      # diagonal offset u - s
                n = T - abs(o)
                # entry i of the diagonal is (s, s + o), s = i + max(0, -o); t = s + left - j
                start = P0 + max(0, -o) + w.left - j
                vec = pp[:, :, l, start:start + n] * (a * b)
                term = torch.diag_embed(vec, offset=o)
                R = term if R is None else R + term
    return R


def rhs_dense(mu, p, W):
    """``r = sum_l W_l^T P_l mu_l`` ``(B, D, T)`` with ``mu``, ``p`` ``(B, D, L, T)``."""
    B, D, L, T = mu.shape
    return ((p * mu).reshape(B, D, L * T)) @ W          # (B, D, T): W is (L*T, T)


def run_case(B, T, D, dtype, flop_cap, rng):
    L = len(DELTA)
    item = torch.tensor([], dtype=dtype).element_size()
    mu_np = rng.normal(size=(B, T, L * D)).astype(np.float64)
    var_np = rng.uniform(0.5, 2.0, size=(B, T, L * D))
    mu = torch.from_numpy(mu_np).to(dtype).requires_grad_()
    var = torch.from_numpy(var_np).to(dtype).requires_grad_()
    g = torch.from_numpy(rng.normal(size=(B, T, D))).to(dtype)
    row = dict(B=B, T=T, D=D, dtype=str(dtype).replace("torch.", ""))

    def ours():
        mu.grad = var.grad = None
        mt.mlpg(mu, var, boundary="none").backward(g)

    row["mlpgx_s"] = best_time(ours)
    mt._BACKWARD_REUSES_OUTPUT = False
    try:
        row["mlpgx_c_again_s"] = best_time(ours)
    finally:
        mt._BACKWARD_REUSES_OUTPUT = True
    c_ref = mt.mlpg(mu.detach(), var.detach(), boundary="none")
    tol = 1e-3 if dtype == torch.float32 else 1e-7

    # (a) unit-variance MLPG matrix, apply only
    flops_a = 2 * 2 * B * T * (L * T) * D          # forward + backward matmul
    mem_a = T * L * T * item + 2 * B * L * T * D * item
    if mem_a <= 2 * GB and (flop_cap is None or flops_a <= flop_cap):
        M = unit_variance_matrix(T, dtype)
        X = mu.detach().reshape(B, T, L, D).permute(0, 2, 1, 3).reshape(B, L * T, D)
        X = X.contiguous().requires_grad_()

        def dense_mm():
            X.grad = None
            torch.matmul(M, X).backward(g)

        c_mm = torch.matmul(M, X.detach())
        c_unit = mt.mlpg(mu.detach(), boundary="none")
        err = float((c_mm - c_unit).abs().max() / c_unit.abs().max())
        if err > tol:
            raise AssertionError(f"dense MLPG matrix disagrees with mlpgx: {err}")
        row["dense_mm_s"] = best_time(dense_mm)
        del M, X
    else:
        row["dense_mm_s"] = None

    # (b) torch.linalg.solve on the dense R; dimensions are independent, so when
    # all D do not fit, time the first Ds of them and scale by D / Ds
    def need(d):
        flops = B * d * (2 * (2 / 3) * T ** 3 + 4 * T ** 2 * L * 9)  # LU fwd + bwd solve, R build
        return flops, 5 * B * d * T * T * item                        # R, its sum, LU, grad R
    Ds = D
    while Ds > 1 and (need(Ds)[1] > 2 * GB or (flop_cap is not None and need(Ds)[0] > flop_cap)):
        Ds = max(1, Ds // 2)
    flops_b, mem_b = need(Ds)
    if mem_b <= 2 * GB and (flop_cap is None or flops_b <= flop_cap):
        W = dense_windows(T, dtype)
        cols = torch.cat([torch.arange(l * D, l * D + Ds) for l in range(L)])
        mu_s = mu.detach()[..., cols].contiguous().requires_grad_()
        var_s = var.detach()[..., cols].contiguous().requires_grad_()
        g_s = g[..., :Ds]

        def naive():
            mu_s.grad = var_s.grad = None
            m4 = mu_s.reshape(B, T, L, Ds).permute(0, 3, 2, 1)     # (B, Ds, L, T)
            p4 = torch.reciprocal(var_s).reshape(B, T, L, Ds).permute(0, 3, 2, 1)
            R = dense_R(p4, T)
            c = torch.linalg.solve(R, rhs_dense(m4, p4, W).unsqueeze(-1)).squeeze(-1)
            c = c.transpose(1, 2)                                   # (B, T, Ds)
            c.backward(g_s)
            return c

        c_nv = naive().detach()
        ref = c_ref[..., :Ds]
        err = float((c_nv - ref).abs().max() / ref.abs().max())
        if err > tol * 10:
            raise AssertionError(f"dense solve disagrees with mlpgx: {err}")
        row["solve_s"] = best_time(naive, budget=0.2, min_runs=1) * (D / Ds)
        row["solve_dims_timed"] = Ds
        del W
    else:
        row["solve_s"] = None
    return row


def overhead():
    mu = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    var = torch.ones(8, 3, dtype=torch.float64, requires_grad=True)
    g = torch.ones(8, 1, dtype=torch.float64)

    def call():
        mt.mlpg(mu, var).backward(g)

    call()
    n = 300
    t = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t) / n


def fmt_t(s):
    if s is None:
        return "-"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def fmt_x(base, ours):
    return "-" if base is None else f"{base / ours:.1f}x"


def table(rows):
    out = ["| B | T | D | dtype | mlpgx fwd+bwd | c again / mlpgx | dense MM (a) | (a)/mlpgx "
           "| solve (b) | (b)/mlpgx |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['B']} | {r['T']} | {r['D']} | {r['dtype']} | {fmt_t(r['mlpgx_s'])} | "
                   f"{r['mlpgx_c_again_s'] / r['mlpgx_s']:.2f}x | "
                   f"{fmt_t(r['dense_mm_s'])} | {fmt_x(r['dense_mm_s'], r['mlpgx_s'])} | "
                   f"{fmt_t(r['solve_s'])} | {fmt_x(r['solve_s'], r['mlpgx_s'])} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few small sizes")
    ap.add_argument("--full", action="store_true", help="no flop cap on the baselines")
    ap.add_argument("--flop-cap", type=float, default=1.5e11,
                    help="skip a baseline needing more flops per call (default 1.5e11)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for torch and the mlpgx kernel (default 1; OMP_NUM_THREADS wins)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/torch-<date>.json)")
    args = ap.parse_args(argv)

    if args.quick:
        grid = [(1, 200, 60), (1, 1000, 60), (32, 1000, 60)]
        dtypes = [torch.float64]
    else:
        grid = [(B, T, D) for B in (1, 32) for T in (200, 1000, 4000) for D in (60, 187)]
        dtypes = [torch.float32, torch.float64]
    cap = None if args.full else args.flop_cap
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rng = np.random.default_rng(0)
    rows = []
    t0 = time.perf_counter()
    for B, T, D in grid:
        for dt in dtypes:
            rows.append(run_case(B, T, D, dt, cap, rng))
            print(f"  B={B} T={T} D={D} {dt}: {fmt_t(rows[-1]['mlpgx_s'])} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    ov = overhead()
    print(table(rows))
    print(f"\nop-call overhead (forward + backward, B=1, T=8, D=1, float64): {ov * 1e6:.0f} us")
    meta = dict(date=datetime.date.today().isoformat(), torch=torch.__version__,
                mlpgx=mlpgx.__version__, machine=platform.machine(),
                processor=platform.processor(), cpus=os.cpu_count(),
                torch_threads=torch.get_num_threads(), quick=args.quick,
                flop_cap=cap, overhead_s=ov)
    path = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                    f"torch-{meta['date']}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(dict(meta=meta, rows=rows), fh, indent=1)
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

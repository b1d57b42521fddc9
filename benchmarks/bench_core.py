"""Core CPU benchmark: forward and adjoint of the compiled backend against the
memory floor, the scipy.sparse reference and a hand-written
``scipy.linalg.solveh_banded`` loop.

Prints a Markdown table and writes ``benchmarks/results/core-<host>-<date>.json``
(and ``.md``).  Every ratio in a row comes from the same run.

Usage::

    python benchmarks/bench_core.py            # the full table (a few minutes)
    python benchmarks/bench_core.py --quick    # small sizes only

Columns
-------
floor      one ``np.copy`` of means + variances (read + write the inputs once)
fwd, adj   ``mlpgx.mlpg`` / ``mlpgx.mlpg_adjoint`` (cython backend, validation included)
fwd/floor  the target is <= 2 (stretch 1.5) at T >= 1000
adj/fwd    the target is <= 2
adj(out)/fwd  the adjoint given the forward's output (``output=``, what a
           training step's backward does: c is read, only R^{-1} g is solved)
adj(means)/fwd  the means-only adjoint (``weight_grad=False``: the variances
           need no gradient; neither c nor the means are read)
ns/frame/dim  forward time per frame and static dimension (flatness across T)
peak/in    peak extra memory of the adjoint call / bytes of means + variances
reference  the scipy.sparse backend (timed on a few dimensions, scaled to D)
solveh     a per-dimension ``scipy.linalg.solveh_banded`` loop, R built with NumPy
general    the forward on the general banded kernel; DELTA (windows reaching one
           frame each side) otherwise runs on the k <= 2 kernel (mlpgx_band2.h)

A second table gives the fixed cost of a call (validation, dispatch, output
allocation) on short sequences, one thread, float64: each public call against
the compiled backend's kernel entry alone on the same validated problem
(``Backend._run``), the difference being the overhead per call.
"""
from __future__ import annotations

import gc
import os
import sys
import tracemalloc

import numpy as np
import scipy.linalg

import mlpgx
from mlpgx._ext import solver as _solver

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (arg_parser, best_time, machine_info, save_figure, today,  # noqa: E402
                     write_results)


#: Timed runs of a call slower than 4x its budget (the T = 1e6 rows); see
#: bench_case.
SLOW_RUNS = 3


def peak_extra_bytes(fn):
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del out
    return peak - base


def solveh_banded_loop(means, variances, windows):
    """What users write by hand: per dimension, build R's upper bands and r
    with NumPy (per-window boundary rule) and call solveh_banded."""
    T, LD = means.shape
    L = len(windows)
    D = LD // L
    k = windows.bandwidth
    out = np.empty((T, D))
    t = np.arange(T)
    for d in range(D):
        ab = np.zeros((k + 1, T))      # upper form: ab[k + i - j, j] = R[i, j]
        r = np.zeros(T)
        for l, w in enumerate(windows):
            p = 1.0 / variances[:, l * D + d]
            if l:
                p = np.where((t - w.left >= 0) & (t + w.right < T), p, 0.0)
            pm = p * means[:, l * D + d]
            for u, cu in enumerate(w.coeffs):          # c index i = t - left + u
                i0 = u - w.left
                lo, hi = max(0, -i0), min(T, T - i0)
                r[lo + i0:hi + i0] += cu * pm[lo:hi]
                for a in range(u + 1):                 # pair (u, u - a): R[i - a, i]
                    ca = w.coeffs[u - a]
                    if cu == 0 or ca == 0:
                        continue
                    lo2 = max(lo, a - i0)
                    ab[k - a, lo2 + i0:hi + i0] += cu * ca * p[lo2:hi]
        out[:, d] = scipy.linalg.solveh_banded(ab, r)
    return out


def make_inputs(B, T, D, dtype, seed=0):
    rng = np.random.default_rng(seed)
    shape = (T, 3 * D) if B is None else (B, T, 3 * D)
    means = rng.standard_normal(shape).astype(dtype)
    variances = rng.uniform(0.5, 2.0, shape).astype(dtype)
    return means, variances


def bench_case(B, T, D, dtype, threads, with_peers):
    means, variances = make_inputs(B, T, D, dtype)
    nbytes = means.nbytes + variances.nbytes
    g = np.random.default_rng(1).standard_normal(means.shape[:-1] + (D,)).astype(dtype)
    row = dict(B=B or 1, T=T, D=D, dtype=np.dtype(dtype).name, threads=threads,
               input_MB=nbytes / 2**20)
    budget = 0.3 if T * (B or 1) < 10**6 else 0.05
    # the longest calls (T = 1e6) are timed SLOW_RUNS times, not once:
    # each touches ~1-3 GB of fresh outputs and scratch, whose first-touch
    # cost varied by up to 4x from call to call on a virtual machine

    def timed(fn):
        return best_time(fn, budget, slow_runs=SLOW_RUNS)

    row["floor_s"] = timed(lambda: (np.copy(means), np.copy(variances)))
    row["fwd_s"] = timed(lambda: mlpgx.mlpg(means, variances, num_threads=threads))
    row["adj_s"] = timed(
        lambda: mlpgx.mlpg_adjoint(g, means, variances, num_threads=threads))
    c = mlpgx.mlpg(means, variances, num_threads=threads)
    row["adj_out_s"] = timed(
        lambda: mlpgx.mlpg_adjoint(g, means, variances, output=c, num_threads=threads))
    row["adj_means_s"] = timed(
        lambda: mlpgx.mlpg_adjoint(g, means, variances, weight_grad=False, num_threads=threads))
    row["fwd_nocheck_s"] = timed(
        lambda: mlpgx.mlpg(means, variances, num_threads=threads, check_finite=False))
    row["fwd_per_floor"] = row["fwd_s"] / row["floor_s"]
    row["adj_per_fwd"] = row["adj_s"] / row["fwd_s"]
    row["adj_out_per_fwd"] = row["adj_out_s"] / row["fwd_s"]
    row["adj_means_per_fwd"] = row["adj_means_s"] / row["fwd_s"]
    row["ns_per_frame_dim"] = row["fwd_s"] / ((B or 1) * T * D) * 1e9
    row["peak_fwd_per_input"] = peak_extra_bytes(
        lambda: mlpgx.mlpg(means, variances, num_threads=threads)) / nbytes
    row["peak_adj_per_input"] = peak_extra_bytes(
        lambda: mlpgx.mlpg_adjoint(g, means, variances, num_threads=threads)) / nbytes
    if with_peers:
        # The peers are per dimension; time a slice of dimensions and scale.
        nd = D if (B or 1) * T * D <= 60_000 else max(1, min(D, 600_000 // ((B or 1) * T)))
        m1 = means if B is None else means[0]
        v1 = variances if B is None else variances[0]
        cols = np.concatenate([np.arange(l * D, l * D + nd) for l in range(3)])
        ms, vs = np.ascontiguousarray(m1[:, cols]), np.ascontiguousarray(v1[:, cols])
        scale = (D / nd) * (B or 1)
        if T <= 100_000:
            row["reference_s"] = best_time(
                lambda: mlpgx.mlpg(ms, vs, backend="reference"), 0.1, 1, 3) * scale
        wins = mlpgx.windows.DELTA
        ms64, vs64 = ms.astype(np.float64), vs.astype(np.float64)
        row["solveh_s"] = best_time(lambda: solveh_banded_loop(ms64, vs64, wins), 0.1, 1, 3) * scale
        row["peer_dims_timed"] = nd
        # the same call on the general banded kernel (DELTA otherwise runs on
        # the k <= 2 kernel, mlpgx/_ext/mlpgx_band2.h)
        saved, _solver.USE_BAND2 = _solver.USE_BAND2, False
        try:
            row["general_fwd_s"] = timed(
                lambda: mlpgx.mlpg(means, variances, num_threads=threads))
        finally:
            _solver.USE_BAND2 = saved
    return row


def fmt_row(r):
    ref = f"{r['reference_s'] / r['fwd_s']:.0f}x" if "reference_s" in r else "-"
    sol = f"{r['solveh_s'] / r['fwd_s']:.0f}x" if "solveh_s" in r else "-"
    gen = f"{r['general_fwd_s'] / r['fwd_s']:.2f}x" if "general_fwd_s" in r else "-"
    return (f"| {r['B']} | {r['T']:>7} | {r['D']} | {r['dtype']} | {r['threads']} "
            f"| {r['floor_s'] * 1e3:.3f} | {r['fwd_s'] * 1e3:.3f} | {r['adj_s'] * 1e3:.3f} "
            f"| {r['fwd_per_floor']:.2f} | {r['fwd_nocheck_s'] / r['floor_s']:.2f} "
            f"| {r['adj_per_fwd']:.2f} | {r['adj_out_per_fwd']:.2f} "
            f"| {r['adj_means_per_fwd']:.2f} "
            f"| {r['ns_per_frame_dim']:.2f} "
            f"| {r['peak_adj_per_input']:.2f} | {ref} | {sol} | {gen} |")


HEADER = ("| B | T | D | dtype | threads | floor ms | fwd ms | adj ms | fwd/floor "
          "| fwd/floor (no scan) | adj/fwd | adj(out)/fwd | adj(means)/fwd | ns/frame/dim "
          "| peak/in (adj) | reference / fwd | solveh loop / fwd | general kernel / fwd |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def plot(rows, path, machine):
    """Log-log time vs T for D=60, one line per method and the memory floor."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    nmax = machine["omp_max_threads"]
    for ax, dtype in zip(axes, ("float32", "float64")):
        sel = [r for r in rows if r["B"] == 1 and r["D"] == 60 and r["dtype"] == dtype]
        one = sorted((r for r in sel if r["threads"] == 1), key=lambda r: r["T"])
        allt = sorted((r for r in sel if r["threads"] == nmax), key=lambda r: r["T"])
        T = [r["T"] for r in one]
        ax.loglog(T, [r["floor_s"] * 1e3 for r in one], "k:", label="memory floor (np.copy)")
        ax.loglog(T, [r["fwd_s"] * 1e3 for r in one], "C0-o", label="mlpgx forward, 1 thread")
        ax.loglog(T, [r["adj_s"] * 1e3 for r in one], "C0--s", label="mlpgx adjoint, 1 thread")
        ax.loglog(T, [r["adj_out_s"] * 1e3 for r in one], "C0:d",
                  label="mlpgx adjoint given the output, 1 thread")
        ax.loglog(T, [r["adj_means_s"] * 1e3 for r in one], "C4-.x",
                  label="mlpgx means-only adjoint, 1 thread")
        if nmax > 1:
            ax.loglog([r["T"] for r in allt], [r["fwd_s"] * 1e3 for r in allt], "C2-o",
                      label=f"mlpgx forward, {nmax} threads")
        for key, style, label in (("solveh_s", "C1-^", "solveh_banded loop"),
                                  ("reference_s", "C3-v", "scipy.sparse reference")):
            pts = [(r["T"], r[key] * 1e3) for r in one if key in r]
            if pts:
                ax.loglog(*zip(*pts), style, label=label)
        ax.set_title(f"D=60, L=3, {dtype}")
        ax.set_xlabel("T (frames)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("time (ms)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"mlpgx core benchmark ({machine['processor']}, {machine['cpus']} cores, "
                 f"kernel build {machine['simd']})", fontsize=10)
    save_figure(fig, path)


CALLS_PER_TIMING = 200

OVERHEAD_HEADER = ("| T | D | call | call us | kernel us | overhead us |\n"
                   "|---|---|---|---|---|---|")


def overhead_rows(Ts=(1, 10, 100), D=60):
    """Per-call time of the public functions on short float64 sequences (one
    thread) against the kernel entry alone (``Backend._run`` on the problem
    the validation layer built); see the module docstring."""
    from mlpgx._validate import make_problem
    backend = mlpgx.backends.get("cython")
    rows = []
    for T in Ts:
        means, variances = make_inputs(None, T, D, np.float64)
        g = np.random.default_rng(1).standard_normal((T, D))
        c = mlpgx.mlpg(means, variances, num_threads=1)
        # (weights checked in the kernel, as the public calls have it)
        pb = make_problem(means, variances, mlpgx.windows.DELTA, num_threads=1,
                          defer_weights_scan=True)
        gb, cb = g.reshape(1, T, D), c.reshape(1, T, D)
        calls = [
            ("mlpg", lambda: mlpgx.mlpg(means, variances, num_threads=1),
             lambda: backend._run("forward", pb)),
            ("mlpg, check_finite=False",
             lambda: mlpgx.mlpg(means, variances, num_threads=1, check_finite=False),
             lambda: backend._run("forward", pb)),
            ("mlpg_adjoint", lambda: mlpgx.mlpg_adjoint(g, means, variances, num_threads=1),
             lambda: backend._run("adjoint", pb, gb)),
            ("mlpg_adjoint, output=",
             lambda: mlpgx.mlpg_adjoint(g, means, variances, output=c, num_threads=1),
             lambda: backend._run("adjoint", pb, gb, given_output=cb)),
            ("mlpg_adjoint, weight_grad=False",
             lambda: mlpgx.mlpg_adjoint(g, means, variances, weight_grad=False, num_threads=1),
             lambda: backend._run("adjoint", pb, gb, weight_grad=False)),
        ]
        for name, call, kernel in calls:
            def many(fn):
                def run():   # (each result dropped at once: no heap growth)
                    for _ in range(CALLS_PER_TIMING):
                        fn()
                return run
            t_call = best_time(many(call), 0.3) / CALLS_PER_TIMING
            t_kernel = best_time(many(kernel), 0.3) / CALLS_PER_TIMING
            rows.append(dict(T=T, D=D, call=name, call_s=t_call, kernel_s=t_kernel,
                             overhead_s=t_call - t_kernel))
    return rows


def fmt_overhead(r):
    return (f"| {r['T']} | {r['D']} | {r['call']} | {r['call_s'] * 1e6:.1f} | "
            f"{r['kernel_s'] * 1e6:.1f} | {r['overhead_s'] * 1e6:.1f} |")


def main(argv=None):
    ap = arg_parser(__doc__, "small sizes only")
    ap.add_argument("--no-peers", action="store_true", help="skip reference / solveh timings")
    ap.add_argument("--plot", action="store_true",
                    help="also write a log-log PNG of time vs T (needs matplotlib)")
    ap.add_argument("--update-readme", action="store_true",
                    help="replace the table between the BENCH-TABLE markers of README.md")
    args = ap.parse_args(argv)

    nmax = _solver.max_threads()
    thread_counts = sorted({1, nmax})
    Ts = [100, 1000, 10_000] if args.quick else [100, 1000, 10_000, 100_000, 1_000_000]
    cases = [(None, T, 60) for T in Ts] + [(32, 1000, 187)]
    rows = []
    print(HEADER)
    for B, T, D in cases:
        for dtype in (np.float32, np.float64):
            for th in thread_counts:
                r = bench_case(B, T, D, dtype, th, with_peers=not args.no_peers and th == 1)
                rows.append(r)
                print(fmt_row(r), flush=True)

    overhead = overhead_rows()
    print("\nper-call overhead (float64, one thread):\n" + OVERHEAD_HEADER)
    for r in overhead:
        print(fmt_overhead(r), flush=True)

    machine = machine_info(omp_max_threads=nmax, openmp=_solver.openmp_enabled(),
                           scipy=scipy.__version__,
                           kernel="band2" if _solver.band2_applies(mlpgx.windows.DELTA)
                           else "general")
    stamp = today()
    base = write_results("core", "mlpgx core CPU benchmark",
                         dict(machine=machine, rows=rows, overhead=overhead),
                         [(None, HEADER + "\n" + "\n".join(fmt_row(r) for r in rows)),
                          ("Per-call overhead (float64, one thread)",
                           OVERHEAD_HEADER + "\n" + "\n".join(fmt_overhead(r)
                                                               for r in overhead))],
                         quick=args.quick, out_dir=args.out)
    if args.plot:
        plot(rows, base + ".png", machine)
        print(f"wrote {base}.png")
    if args.update_readme:
        readme = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
        with open(readme) as fh:
            text = fh.read()
        start, end = "<!-- BENCH-TABLE -->", "<!-- /BENCH-TABLE -->"
        i, j = text.index(start), text.index(end)
        table = (f"{start}\n{stamp}, {machine['processor']}, {machine['cpus']} cores, "
                 f"OpenMP threads {nmax}, kernel build {machine['simd']}; times in ms "
                 f"(best of several runs after a warm-up; {SLOW_RUNS} at T = 1e6):\n\n{HEADER}\n"
                 + "\n".join(fmt_row(r) for r in rows) + "\n")
        with open(readme, "w") as fh:
            fh.write(text[:i] + table + text[j:])
        print(f"updated {os.path.normpath(readme)}")


if __name__ == "__main__":
    main()

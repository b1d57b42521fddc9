"""GV-constrained generation on the arctic example: over-smoothing undone, cost.

A model-like, over-smoothed input is made from CMU ARCTIC a0001 (slt): the
means are the features averaged over consecutive segments of ``--seg``
frames (like the states of an HMM), the variances the within-segment spread
(floored).  The target GV is the per-dimension variance of the natural
static features (log F0: over voiced frames, with the ``VUV`` column as the
voicing mask), and its variance ``(--rel-std * target)^2``.

Prints a Markdown table and writes ``benchmarks/results/gv-<date>.{json,md,png}``:

- per-dimension variance of the natural features, of MLPG and of GV
  generation (a few mgc dimensions, log F0, and over all mgc dimensions the
  geometric mean of the ratio to the natural variance);
- time of :func:`mlpgx.gv.mlpg_gv` and of :func:`mlpgx.mlpg` on the same
  input (best of several runs, one thread), Newton iterations, objective;
- the plot: GV per mgc dimension (log scale) and a stretch of trajectories.

Usage::

    python benchmarks/bench_gv.py            # about half a minute
    python benchmarks/bench_gv.py --seg 5 --rel-std 0.1
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlpgx  # noqa: E402
from mlpgx.data import LF0, MGC, VUV, load_arctic_a0001  # noqa: E402
from mlpgx.gv import mlpg_gv  # noqa: E402
from _common import arg_parser, best_time, machine_info, save_figure, write_results  # noqa: E402

DIMS = [0, 1, 2, 5, 10, 20, 40, 59]


def oversmoothed(x, seg, floor=1e-2):
    """Segment means and within-segment variances (floored at ``floor`` times
    the column variance) of ``x`` (T, L*D): a state-like model output."""
    T = x.shape[0]
    idx = np.arange(T) // seg
    means = np.empty_like(x)
    var = np.empty_like(x)
    for k in range(idx[-1] + 1):
        s = idx == k
        means[s] = x[s].mean(axis=0)
        var[s] = x[s].var(axis=0)
    return means, np.maximum(var, floor * x.var(axis=0) + 1e-10)


def run_stream(name, x, seg, rel_std, voiced=None, threads=1):
    """MLPG and GV generation of one stream; a dict of results."""
    D = x.shape[1] // 3
    means, var = oversmoothed(x, seg)
    sel = voiced if voiced is not None else np.ones(x.shape[0], bool)
    natural = x[sel, :D].var(axis=0)
    gv_var = (rel_std * natural) ** 2
    kw = dict(voiced=voiced[:, None]) if voiced is not None else {}
    c_ml = mlpgx.mlpg(means, var, num_threads=threads, **kw)
    c_gv, info = mlpg_gv(means, var, gv_mean=natural, gv_variance=gv_var, return_info=True,
                         num_threads=threads, **kw)
    t_ml = best_time(lambda: mlpgx.mlpg(means, var, num_threads=threads, **kw), budget=1.0)
    t_gv = best_time(lambda: mlpg_gv(means, var, gv_mean=natural, gv_variance=gv_var,
                                     num_threads=threads, **kw), budget=1.0)
    v_ml = c_ml[sel].var(axis=0)
    v_gv = c_gv[sel].var(axis=0)
    geo = lambda r: float(np.exp(np.mean(np.log(r))))            # noqa: E731
    return dict(
        stream=name, T=int(x.shape[0]), D=D, seg=seg, rel_std=rel_std,
        voiced_frames=int(sel.sum()), natural=natural.tolist(), mlpg=v_ml.tolist(),
        gv=v_gv.tolist(), ratio_mlpg=geo(v_ml / natural), ratio_gv=geo(v_gv / natural),
        time_mlpg_s=t_ml, time_gv_s=t_gv, iterations_max=int(info.iterations.max()),
        iterations_mean=float(info.iterations.mean()),
        converged=bool(info.converged.all()),
        objective_start=float(info.objective[0].sum()),
        objective_final=float(info.objective[-1].sum()),
        grad_norm_max=float(info.grad_norm.max()),
        trajectories=dict(natural=x[:, :D], mlpg=c_ml, gv=c_gv), means=means[:, :D])


def tables(results):
    lines = ["| stream | dim | natural var | MLPG var | GV var | MLPG/natural | GV/natural |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        dims = DIMS if r["D"] > 1 else [0]
        for d in dims:
            n, m, g = r["natural"][d], r["mlpg"][d], r["gv"][d]
            lines.append(f"| {r['stream']} | {d} | {n:.3e} | {m:.3e} | {g:.3e} | "
                         f"{m / n:.3f} | {g / n:.4f} |")
        if r["D"] > 1:
            lines.append(f"| {r['stream']} | all {r['D']} (geometric mean) | | | | "
                         f"{r['ratio_mlpg']:.3f} | {r['ratio_gv']:.4f} |")
    lines += ["", "| stream | T | D | mlpg ms | mlpg_gv ms | ratio | iterations max / mean "
              "| converged | J start | J final | max abs grad |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['stream']} | {r['T']} | {r['D']} | {1e3 * r['time_mlpg_s']:.2f} | "
            f"{1e3 * r['time_gv_s']:.2f} | {r['time_gv_s'] / r['time_mlpg_s']:.0f}x | "
            f"{r['iterations_max']} / {r['iterations_mean']:.1f} | {r['converged']} | "
            f"{r['objective_start']:.6g} | {r['objective_final']:.6g} | "
            f"{r['grad_norm_max']:.1e} |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mgc = next(r for r in results if r["stream"] == "mgc")
    lf0 = next((r for r in results if r["stream"] == "lf0"), None)
    fig, axes = plt.subplots(1, 3 if lf0 else 2, figsize=(15 if lf0 else 10, 4))
    ax = axes[0]
    d = np.arange(mgc["D"])
    for key, style in [("natural", "k-"), ("mlpg", "C0--"), ("gv", "C3:")]:
        ax.semilogy(d, mgc[key], style, label={"natural": "natural", "mlpg": "MLPG",
                                               "gv": "MLPG + GV"}[key])
    ax.set_xlabel("mgc dimension")
    ax.set_ylabel("variance over the utterance")
    ax.set_title("global variance per dimension")
    ax.legend()
    ax = axes[1]
    tr, k = mgc["trajectories"], 1
    t = np.arange(150, 350)
    ax.plot(t, tr["natural"][t, k], "k-", lw=1, label="natural")
    ax.plot(t, mgc["means"][t, k], color="0.6", lw=1, label="segment means")
    ax.plot(t, tr["mlpg"][t, k], "C0--", label="MLPG")
    ax.plot(t, tr["gv"][t, k], "C3-", lw=1, label="MLPG + GV")
    ax.set_xlabel("frame (5 ms)")
    ax.set_title(f"mgc dimension {k}")
    ax.legend(fontsize=8)
    if lf0:
        ax = axes[2]
        tr = lf0["trajectories"]
        t = np.arange(60, 330)
        ax.plot(t, tr["natural"][t, 0], "k-", lw=1, label="natural (interpolated)")
        ax.plot(t, tr["mlpg"][t, 0], "C0--", label="MLPG")
        ax.plot(t, tr["gv"][t, 0], "C3-", lw=1, label="MLPG + GV")
        ax.set_xlabel("frame (5 ms)")
        ax.set_title("log F0 (voiced frames)")
        ax.legend(fontsize=8)
    fig.suptitle(f"GV-constrained generation, CMU ARCTIC a0001 (slt), segments of "
                 f"{mgc['seg']} frames, sigma_v = {mgc['rel_std']} x target", fontsize=10)
    save_figure(fig, path)


def main(argv=None):
    ap = arg_parser(__doc__)
    ap.add_argument("--seg", type=int, default=8, help="frames per segment (state)")
    ap.add_argument("--rel-std", type=float, default=0.05,
                    help="GV standard deviation relative to the target")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)

    feats = load_arctic_a0001().astype(np.float64)
    voiced = feats[:, VUV] > 0.5
    results = [run_stream("mgc", feats[:, MGC], args.seg, args.rel_std),
               run_stream("lf0", feats[:, LF0], args.seg, args.rel_std, voiced=voiced)]
    text = tables(results)
    print(text)

    machine = machine_info(threads=1)
    rows = [{k: v for k, v in r.items() if k not in ("trajectories", "means")}
            for r in results]
    base = write_results(
        "gv", "GV-constrained generation, arctic a0001",
        dict(machine=machine, seg=args.seg, rel_std=args.rel_std, rows=rows),
        [(None, f"Segments of {args.seg} frames, sigma_v = {args.rel_std} x target; "
                f"one thread."), (None, text)], out_dir=args.out)
    if not args.no_plot:
        plot(results, base + ".png")
        print(f"wrote {base}.png")


if __name__ == "__main__":
    main()

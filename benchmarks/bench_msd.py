"""Voiced/unvoiced (MSD) benchmark: what ``voiced=`` costs.

Times, in one run, on one thread and on the same inputs (log F0-like streams:
runs of voiced frames, about half unvoiced):

plain        ``mlpgx.mlpg`` without a mask (the same values, no voicing rule)
voiced       ``mlpgx.mlpg(..., voiced=mask)`` (lowering + the same kernel)
per-run      what users write today: one ``mlpgx.mlpg`` call per voiced run
reference    the scipy.sparse reference with the mask (a few sequences,
             scaled to the batch)
adjoint      ``mlpgx.mlpg_adjoint(..., voiced=mask)``

Prints a Markdown table and writes ``benchmarks/results/msd-<date>.{json,md}``.

Usage::

    python benchmarks/bench_msd.py [--quick]
"""
from __future__ import annotations

import os
import sys

import numpy as np

import mlpgx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import arg_parser, best_time, machine_info, write_results  # noqa: E402

HEADER = ("| B | T | D | dtype | plain ms | voiced ms | voiced/plain | per-run ms "
          "| per-run/voiced | reference ms | ref/voiced | adjoint ms |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def voicing(rng, B, T, p_flip=0.03):
    """Runs of voiced and unvoiced frames (mean run length ~ 1 / p_flip)."""
    flips = rng.random((B, T)) < p_flip
    return np.cumsum(flips, axis=1) % 2 == 0


def runs(mask):
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def per_run(means, variances, voiced):
    """One ``mlpgx.mlpg`` call per voiced run (NaN elsewhere)."""
    B, T, LD = means.shape
    out = np.full((B, T, LD // 3), np.nan, dtype=means.dtype)
    for b in range(B):
        for a, e in runs(voiced[b]):
            out[b, a:e] = mlpgx.mlpg(means[b, a:e], variances[b, a:e], num_threads=1)
    return out


def bench_case(B, T, D, dtype, seed=0, ref_seqs=2):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((B, T, 3 * D)).astype(dtype)
    variances = rng.uniform(0.5, 2.0, (B, T, 3 * D)).astype(dtype)
    voiced = voicing(rng, B, T)
    g = rng.standard_normal((B, T, D)).astype(dtype)
    # the same answer three ways (checked before timing)
    a = mlpgx.mlpg(means, variances, voiced=voiced)
    b = per_run(means, variances, voiced)
    np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    t_plain = best_time(lambda: mlpgx.mlpg(means, variances, num_threads=1))
    t_voiced = best_time(lambda: mlpgx.mlpg(means, variances, voiced=voiced, num_threads=1))
    t_run = best_time(lambda: per_run(means, variances, voiced), budget=0.2, min_runs=1)
    nr = min(B, ref_seqs)
    t_ref = best_time(lambda: mlpgx.mlpg(means[:nr], variances[:nr], voiced=voiced[:nr],
                                         backend="reference"),
                      budget=0.1, min_runs=1, max_runs=2) * B / nr
    t_adj = best_time(lambda: mlpgx.mlpg_adjoint(g, means, variances, voiced=voiced,
                                                num_threads=1))
    return dict(B=B, T=T, D=D, dtype=np.dtype(dtype).name,
                unvoiced_fraction=float(1 - voiced.mean()),
                plain_ms=t_plain * 1e3, voiced_ms=t_voiced * 1e3, per_run_ms=t_run * 1e3,
                reference_ms=t_ref * 1e3, adjoint_ms=t_adj * 1e3)


def fmt_row(r):
    return (f"| {r['B']} | {r['T']} | {r['D']} | {r['dtype']} | {r['plain_ms']:.3f} "
            f"| {r['voiced_ms']:.3f} | {r['voiced_ms'] / r['plain_ms']:.2f} "
            f"| {r['per_run_ms']:.2f} | {r['per_run_ms'] / r['voiced_ms']:.1f} "
            f"| {r['reference_ms']:.1f} | {r['reference_ms'] / r['voiced_ms']:.0f} "
            f"| {r['adjoint_ms']:.3f} |")


def main(argv=None):
    ap = arg_parser(__doc__, "small sizes only")
    args = ap.parse_args(argv)
    # lf0 (D=1) batches for MGE training, and a per-dimension mask case
    cases = [(1, 1000, 1), (32, 1000, 1)] if args.quick else \
        [(1, 1000, 1), (32, 1000, 1), (32, 4000, 1), (8, 1000, 60)]
    rows = []
    print(HEADER)
    for B, T, D in cases:
        for dtype in (np.float32, np.float64):
            r = bench_case(B, T, D, dtype)
            rows.append(r)
            print(fmt_row(r), flush=True)
    table = HEADER + "\n" + "\n".join(fmt_row(r) for r in rows)
    write_results("msd", "mlpgx MSD (voiced=) benchmark",
                  dict(machine=machine_info(), rows=rows), [(None, table)],
                  quick=args.quick, out_dir=args.out)


if __name__ == "__main__":
    main()

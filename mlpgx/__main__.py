"""``python -m mlpgx``: MLPG on the embedded real example with every
available backend, each verified against the reference, as a table."""
from __future__ import annotations

import sys
import time

import numpy as np


def main(argv=None) -> int:
    import mlpgx
    from mlpgx.data import MGC, load_arctic_a0001

    feats = load_arctic_a0001()
    means = np.ascontiguousarray(feats[:, MGC])
    T, LD = means.shape
    D = LD // 3
    # Realistic variances: the per-column variance of the features, with
    # prediction-like noise on the means so MLPG has something to smooth.
    rng = np.random.default_rng(0)
    variances = np.broadcast_to(means.var(axis=0) + 1e-6, means.shape).astype(np.float32)
    noisy = (means + rng.normal(scale=0.3, size=means.shape) * np.sqrt(variances)).astype(np.float32)

    print(f"mlpgx {mlpgx.__version__}: MLPG on CMU ARCTIC slt arctic_a0001 "
          f"(T={T}, D={D} mgc, windows static/delta/accel)")
    print(f"{'backend':<12}{'dtype':<9}{'time (ms)':>10}{'fwd rel err':>13}"
          f"{'adj rel err':>13}  verdict")
    ok_all = True
    for name in mlpgx.backends.available():
        for dtype in (np.float32, np.float64):
            m, v = noisy.astype(dtype), variances.astype(dtype)
            t0 = time.perf_counter()
            c = mlpgx.mlpg(m, v, backend=name)
            ms = (time.perf_counter() - t0) * 1e3
            rep = mlpgx.verify(m, v, backend=name)
            adj = max(x.max_rel for k, x in rep.results.items() if k != "forward")
            ok_all &= rep.passed
            print(f"{name:<12}{np.dtype(dtype).name:<9}{ms:>10.2f}"
                  f"{rep.results['forward'].max_rel:>13.1e}{adj:>13.1e}  "
                  f"{'PASS' if rep.passed else 'FAIL'}")
    c = mlpgx.mlpg(noisy.astype(np.float64), variances.astype(np.float64))
    truth = means[:, :D].astype(np.float64)
    rough = lambda x: float(np.mean(np.diff(x, axis=0) ** 2))
    print(f"\nnoisy static stream: frame-difference energy {rough(noisy[:, :D]):.4f}, "
          f"RMSE to clean {np.sqrt(np.mean((noisy[:, :D] - truth) ** 2)):.4f}")
    print(f"MLPG trajectory:     frame-difference energy {rough(c):.4f}, "
          f"RMSE to clean {np.sqrt(np.mean((c - truth) ** 2)):.4f}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())

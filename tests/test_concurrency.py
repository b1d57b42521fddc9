"""Thread safety and determinism of the compiled backends.

* many Python threads calling mlpg / mlpg_adjoint / mlpg_solve at once on
  different inputs get bit-for-bit the results of sequential calls;
* the OpenMP work split (num_threads=1 vs 2 vs the default) does not change
  the arithmetic: results are bit-for-bit identical.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mlpgx

from conftest import to_backend, to_numpy

N_THREADS = 8
CALLS_PER_THREAD = 10


def _inputs(seed):
    """Inputs of varied shape, dtype, boundary and weight form per seed."""
    rng = np.random.default_rng(seed)
    windows = [mlpgx.windows.DELTA, mlpgx.windows.DELTA1,
               mlpgx.windows.regression([2, 2])][seed % 3]
    L = len(windows)
    dtype = np.float64 if seed % 2 else np.float32
    B, T, D = 1 + seed % 3, 30 + 7 * (seed % 5), 1 + seed % 11
    if seed % 10 == 9:  # large enough for the default to use several OpenMP threads
        B, T, D = 2, 300, 40
    means = rng.standard_normal((B, T, L * D)).astype(dtype)
    if seed % 4 == 0:
        wkw = {"variances": rng.uniform(0.5, 2.0, L * D).astype(dtype)}
    elif seed % 4 == 1:
        wkw = {"precisions": rng.uniform(0.5, 2.0, means.shape).astype(dtype)}
    else:
        wkw = {"variances": rng.uniform(0.5, 2.0, means.shape).astype(dtype)}
    lengths = rng.integers(0, T + 1, size=B)
    lengths[0] = T
    g = rng.standard_normal((B, T, D)).astype(dtype)
    kw = dict(windows=windows, lengths=lengths,
              boundary=["per-window", "nnmnkwii", "none"][seed % 3], **wkw)
    return means, g, kw


def _work(backend, seed, num_threads=None):
    means, g, kw = _inputs(seed)
    kw = {k: to_backend(v, backend) if isinstance(v, np.ndarray) and k != "lengths" else v
          for k, v in kw.items()}
    m, gg = to_backend(means, backend), to_backend(g, backend)
    c = mlpgx.mlpg(m, backend=backend, num_threads=num_threads, **kw)
    gm, gw = mlpgx.mlpg_adjoint(gg, m, backend=backend, num_threads=num_threads, **kw)
    x = mlpgx.mlpg_solve(gg, backend=backend, num_threads=num_threads, **kw)
    return tuple(to_numpy(a) for a in (c, gm, gw, x))


def _assert_identical(a, b, what):
    for name, u, v in zip(("mlpg", "grad_means", "grad_weights", "mlpg_solve"), a, b):
        assert u.dtype == v.dtype and u.shape == v.shape, (what, name)
        assert np.array_equal(u, v), f"{what}: {name} differs (max |diff| " \
                                     f"{np.max(np.abs(u.astype(float) - v.astype(float)))})"


@pytest.mark.parametrize("num_threads", [None, 1, 2])
def test_python_threads_match_sequential(backend, num_threads):
    seeds = list(range(N_THREADS * CALLS_PER_THREAD))
    sequential = {s: _work(backend, s, num_threads) for s in seeds}

    def worker(chunk):
        return [(s, _work(backend, s, num_threads)) for s in chunk]

    chunks = [seeds[i::N_THREADS] for i in range(N_THREADS)]
    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        results = [r for rs in pool.map(worker, chunks) for r in rs]
    assert len(results) == len(seeds)
    for s, res in results:
        _assert_identical(res, sequential[s], f"seed {s}")


def test_python_threads_same_input(backend):
    """Many threads on the very same (read-only) input arrays."""
    means, g, kw = _inputs(7)
    for a in [means, g] + [v for v in kw.values() if isinstance(v, np.ndarray)]:
        a.flags.writeable = False
    expected = _work(backend, 7)
    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        outs = list(pool.map(lambda _: _work(backend, 7), range(4 * N_THREADS)))
    for res in outs:
        _assert_identical(res, expected, "same input")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 400, 60), (3, 200, 20), (5, 120, 7)],
                         ids=["B1-D60", "B3-D20", "B5-D7"])
def test_num_threads_bitwise_identical(backend, dtype, shape):
    """The work split over sequences and d-ranges changes nothing: every
    thread count gives the same bits."""
    rng = np.random.default_rng(11)
    B, T, D = shape
    L = 3
    means = rng.standard_normal((B, T, L * D)).astype(dtype)
    cases = {
        "per-frame": {"variances": rng.uniform(0.5, 2.0, means.shape).astype(dtype)},
        "global": {"variances": rng.uniform(0.5, 2.0, L * D).astype(dtype)},
        "precisions": {"precisions": rng.uniform(0.5, 2.0, means.shape).astype(dtype)},
    }
    g = rng.standard_normal((B, T, D)).astype(dtype)
    lengths = np.full(B, T)
    lengths[-1] = T // 2
    for name, wkw in cases.items():
        results = {}
        for nt in (1, 2, 3, None):
            mb = to_backend(means, backend)
            wb = {k: to_backend(v, backend) for k, v in wkw.items()}
            c = mlpgx.mlpg(mb, lengths=lengths, backend=backend, num_threads=nt, **wb)
            gm, gw = mlpgx.mlpg_adjoint(to_backend(g, backend), mb, lengths=lengths,
                                        backend=backend, num_threads=nt, **wb)
            x = mlpgx.mlpg_solve(to_backend(g, backend), lengths=lengths, backend=backend,
                                 num_threads=nt, **wb)
            results[nt] = tuple(to_numpy(a) for a in (c, gm, gw, x))
        for nt in (2, 3, None):
            _assert_identical(results[nt], results[1], f"{name}: num_threads={nt} vs 1")

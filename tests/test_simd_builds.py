"""Every compiled build of the solver (baseline and, on x86-64, AVX2 + FMA)
matches the reference, and the run-time choice between them is right."""
import importlib
import importlib.machinery
import importlib.util
import os

import numpy as np
import pytest

import mlpgx
import mlpgx._ext as ext
from mlpgx.backends import cython as cython_backend

BUILDS = ["_solver", "_solver_avx2"]


def _build(name):
    try:
        mod = importlib.import_module(f"mlpgx._ext.{name}")
    except ImportError as exc:
        pytest.skip(f"{name} is not built here ({exc})")
    if name == "_solver_avx2" and not ext._cpu_has_avx2_fma():
        pytest.skip("this CPU has no AVX2 + FMA")
    return mod


@pytest.mark.parametrize("name", BUILDS)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii", "none"])
def test_build_matches_reference(name, dtype, rtol, boundary, monkeypatch):
    mod = _build(name)
    assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    monkeypatch.setattr(cython_backend, "_solver", mod)
    rng = np.random.default_rng(7)
    for D, T in [(1, 5), (21, 40), (70, 33)]:      # partial tiles, several chunks
        means = rng.standard_normal((2, T, 3 * D)).astype(dtype)
        variances = rng.uniform(0.5, 2.0, (2, T, 3 * D)).astype(dtype)
        rep = mlpgx.verify(means, variances, backend="cython", boundary=boundary,
                           lengths=[T, T // 2], rtol=rtol)
        assert rep.passed, str(rep)


def test_builds_agree_bit_for_bit_in_structure():
    """Both builds solve the same system: results agree to rounding."""
    base = _build("_solver")
    avx2 = _build("_solver_avx2")
    rng = np.random.default_rng(3)
    means = rng.standard_normal((300, 3 * 9))
    variances = rng.uniform(0.5, 2.0, (300, 3 * 9))
    outs = []
    for mod in (base, avx2):
        cython_backend._solver, saved = mod, cython_backend._solver
        try:
            outs.append(mlpgx.mlpg(means, variances))
        finally:
            cython_backend._solver = saved
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-13, atol=1e-13)


def test_runtime_choice():
    has_avx2 = importlib.util.find_spec("mlpgx._ext._solver_avx2") is not None
    expected = "avx2" if has_avx2 and ext._cpu_has_avx2_fma() else "baseline"
    forced = os.environ.get("MLPGX_SIMD", "auto").lower()
    if forced in ("baseline", "avx2"):
        expected = forced
    assert ext.simd == expected
    assert mlpgx.backends.get("cython").simd == expected


def test_simd_env_override(monkeypatch):
    monkeypatch.setenv("MLPGX_SIMD", "baseline")
    mod, name = ext._select()
    assert name == "baseline" and mod is ext._baseline
    monkeypatch.setenv("MLPGX_SIMD", "sse9")
    with pytest.raises(ValueError, match="MLPGX_SIMD"):
        ext._select()

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


# ---------------------------------------------------------------------------
# The AVX-512 clones of the k <= 2 kernel (in the AVX2 build, GCC only; run
# for the forward, the solve and the adjoint given c where the CPU has
# AVX-512F/VL/DQ)
# ---------------------------------------------------------------------------

def _cpu_runs_avx512_clones():
    """The AVX2 build runs here and the CPU has AVX-512F/VL/DQ."""
    feats = ext._cpu_features()
    return ext._cpu_has_avx2_fma() and all(feats.get(f)
                                           for f in ("AVX512F", "AVX512VL", "AVX512DQ"))


def _built_with_gcc():
    import sysconfig
    cc = (sysconfig.get_config_var("CC") or "") + " " + os.environ.get("CC", "")
    return "clang" not in cc


def test_avx512_clones_present_where_they_run():
    """The AVX2 build has the clones when GCC built it, and offers them
    exactly where the CPU can run them; the baseline build never does."""
    base = _build("_solver")
    assert not base.avx512_available() and not base.use_avx512()
    with pytest.raises(ValueError, match="AVX-512"):
        base.use_avx512(True)
    avx2 = _build("_solver_avx2")
    if _built_with_gcc():
        assert avx2.avx512_available() == _cpu_runs_avx512_clones()
    if not avx2.avx512_available():
        with pytest.raises(ValueError, match="AVX-512"):
            avx2.use_avx512(True)
    elif os.environ.get("MLPGX_AVX512", "1") not in ("0", ""):
        assert avx2.use_avx512()    # on by default


def _cpu_is_intel():
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.split(":")[-1].strip() == "GenuineIntel"
                       for line in fh if line.startswith("vendor_id"))
    except OSError:
        return None


def test_avx512_adjoint_default_and_switch():
    """The standalone adjoint runs the AVX-512 clones by default on Intel
    CPUs only (where the AVX2 build with GCC has them); the switch returns
    the setting before the call."""
    base = _build("_solver")
    assert base.avx512_adjoint() is False   # (no clones: the Intel check is compiled out)
    avx2 = _build("_solver_avx2")
    intel = _cpu_is_intel()
    if _built_with_gcc() and intel is not None and avx2.avx512_available():
        assert avx2.avx512_adjoint() == intel
    before = avx2.avx512_adjoint()
    try:
        assert avx2.avx512_adjoint(not before) == before
        assert avx2.avx512_adjoint() == (not before)
    finally:
        avx2.avx512_adjoint(before)
    assert avx2.avx512_adjoint() == before


@pytest.fixture
def avx512_solver():
    mod = _build("_solver_avx2")
    if not mod.avx512_available():
        pytest.skip("no AVX-512 clones here (not a GCC build, or the CPU lacks AVX-512)")
    before = mod.use_avx512()
    # the standalone adjoint on the AVX-512 clones too, whatever the CPU's
    # maker (by default only on Intel's: _avx512_adjoint)
    adjoint_before = mod.avx512_adjoint(True)
    yield mod
    mod.use_avx512(before)
    mod.avx512_adjoint(adjoint_before)


_CLONE_WINDOWS = {
    "static": [[1.0]],
    "delta": mlpgx.windows.DELTA,                     # window 1 with a zero centre
    "nnmnkwii3": [[1.0], [-0.5, 0.0, 0.5], [1.0, -2.0, 1.0], [0.3, 0.4, 0.3]],
    "two-tap": [(0, 0, [1.0]), (1, 0, [-1.0, 1.0])],
    "asym": [(0, 0, [1.0]), (0, 1, [-1.0, 1.0]), (1, 1, [0.2, -0.7, 0.5])],
}


@pytest.mark.parametrize("windows", list(_CLONE_WINDOWS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weights", ["variances", "precisions", "global", "none"])
@pytest.mark.parametrize("boundary", ["per-window", "none"])
def test_avx512_clones_match_avx2_and_reference(avx512_solver, monkeypatch, windows, dtype,
                                                weights, boundary):
    monkeypatch.setattr(cython_backend, "_solver", avx512_solver)
    wins = mlpgx.windows.as_windows(_CLONE_WINDOWS[windows])
    rng = np.random.default_rng(11)
    L, B = len(wins), 3
    results = {}
    for D, T in [(1, 7), (21, 40), (70, 33)]:        # partial vectors, several chunks
        mu = rng.standard_normal((B, T, L * D)).astype(dtype)
        kw = {}
        if weights == "variances":
            kw["variances"] = rng.uniform(0.5, 2.0, (B, T, L * D)).astype(dtype)
        elif weights == "precisions":
            kw["precisions"] = rng.uniform(0.5, 2.0, (B, T, L * D)).astype(dtype)
        elif weights == "global":
            kw["variances"] = rng.uniform(0.5, 2.0, (L * D,)).astype(dtype)
        g = rng.standard_normal((B, T, D)).astype(dtype)
        opts = dict(windows=wins, lengths=[T, T // 2, 1], boundary=boundary, **kw)
        for wide in (False, True):
            avx512_solver.use_avx512(wide)
            c = mlpgx.mlpg(mu, **opts)
            x = mlpgx.mlpg_solve(g, **opts)
            adj = mlpgx.mlpg_adjoint(g, mu, **opts)
            adj_c = mlpgx.mlpg_adjoint(g, mu, output=c, **opts)
            results[wide] = [c, x, *adj, *adj_c]
            rep = mlpgx.verify(mu, windows=wins, lengths=[T, T // 2, 1], boundary=boundary,
                               backend="cython", **kw)
            assert rep.passed, (wide, str(rep))
        rtol = 1e-13 if dtype == np.float64 else 2e-6
        for a, b in zip(results[False], results[True]):
            if a is None:
                assert b is None
                continue
            scale = max(float(np.abs(a).max()), 1e-30)
            np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * scale)

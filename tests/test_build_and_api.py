"""The compiled extension is built and used; window matrices; ``python -m
mlpgx``; ``verify`` / ``assert_matches_reference``; the public API surface."""
from __future__ import annotations

import importlib.machinery
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse

import mlpgx
import mlpgx.backends as B
from mlpgx import BandedMatrix
from mlpgx.windows import DELTA, as_windows

T, D, L = 9, 2, 3


# --------------------------------------------------------------------------
# the compiled extension
# --------------------------------------------------------------------------

def test_extension_is_compiled():
    from mlpgx._ext import _solver, _window_matrix

    for mod in (_solver, _window_matrix):
        assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), \
            mod.__file__
    assert B.get("cython").availability() == (True, "")


def test_auto_resolves_to_cython():
    assert B.resolve("auto", np.zeros(1)).name == "cython"
    assert B.resolve("auto", np.zeros((2, 3), dtype=np.float32)).name == "cython"


def test_default_backend_calls_compiled_kernel(monkeypatch):
    from mlpgx.backends import cython as cy

    calls = []
    real = cy._solver.run

    def counting(mode, *args, **kwargs):
        calls.append(mode)
        return real(mode, *args, **kwargs)

    monkeypatch.setattr(cy._solver, "run", counting)
    rng = np.random.default_rng(0)
    m, v = rng.normal(size=(T, L * D)), rng.uniform(0.5, 2, (T, L * D))
    g = rng.normal(size=(T, D))
    c = mlpgx.mlpg(m, v)
    mlpgx.mlpg_adjoint(g, m, v)
    mlpgx.mlpg_solve(g, v)
    mlpgx.mlpg(m.astype(np.float32), v.astype(np.float32))
    assert calls == ["forward", "adjoint", "solve", "forward"]
    np.testing.assert_allclose(c, mlpgx.mlpg(m, v, backend="reference"), rtol=1e-10)


def test_solver_entry_checks_the_arrays_it_is_given():
    """The kernels trust their input; the solver's entry point still refuses
    arrays whose dtype, layout or size would make them read out of bounds."""
    from mlpgx._ext import solver
    from mlpgx.windows import DELTA

    Tn, Dn = 6, 2
    lo, hi = np.zeros(3, np.int64), np.zeros(3, np.int64)
    ph = np.zeros(1)

    def call(means=None, weights=None, out=None, lengths=None):
        means = np.zeros(Tn * 3 * Dn) if means is None else means
        weights = np.ones(Tn * 3 * Dn) if weights is None else weights
        out = np.empty(Tn * Dn) if out is None else out
        lengths = np.array([Tn], dtype=np.intp) if lengths is None else lengths
        return solver.run("forward", DELTA, lo, hi, "variance", means, weights, ph, out,
                          ph, ph, ph, lengths, Tn, Dn, True, True, False, False, False, False)

    kernel, results_finite = call()
    assert kernel in ("band2", "general") and results_finite in (True, False)
    with pytest.raises(TypeError, match="means has dtype float32"):
        call(means=np.zeros(Tn * 3 * Dn, np.float32))
    with pytest.raises(ValueError, match="weights must be C-contiguous"):
        call(weights=np.ones(2 * Tn * 3 * Dn)[::2])
    with pytest.raises(ValueError, match="means has 35 elements, expected 36"):
        call(means=np.zeros(Tn * 3 * Dn - 1))
    out = np.empty(Tn * Dn)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out must be writable"):
        call(out=out)
    with pytest.raises(TypeError, match="lengths has dtype"):
        call(lengths=np.array([Tn], dtype=np.int8))
    with pytest.raises(ValueError, match=r"lengths\[0\] = 7 is outside \[0, 6\]"):
        call(lengths=np.array([Tn + 1], dtype=np.intp))
    with pytest.raises(TypeError, match="float32 or float64"):
        solver.run("forward", DELTA, lo, hi, "variance", np.zeros(36, np.int64), ph, ph,
                   np.empty(12, np.int64), ph, ph, ph, np.array([Tn], dtype=np.intp), Tn, Dn,
                   True, False, False, False, False, False)
    # the means-only adjoint reads no means and writes no weight gradient:
    # asked for either, the entry refuses
    g = np.ones(Tn * Dn)
    gm = np.empty(Tn * 3 * Dn)
    for has_means, has_gw, has_acc in [(True, False, False), (False, True, False),
                                       (False, False, True)]:
        with pytest.raises(ValueError, match="'adjoint_means' reads no means"):
            solver.run("adjoint_means", DELTA, lo, hi, "variance", np.zeros(Tn * 3 * Dn),
                       np.ones(Tn * 3 * Dn), g, ph, gm, np.empty(Tn * 3 * Dn), np.zeros(3 * Dn),
                       np.array([Tn], dtype=np.intp), Tn, Dn, has_means, True, False, True,
                       has_gw, has_acc)
    kernel, _ = solver.run("adjoint_means", DELTA, lo, hi, "variance", ph, np.ones(Tn * 3 * Dn),
                           g, ph, gm, ph, ph, np.array([Tn], dtype=np.intp), Tn, Dn,
                           False, True, False, True, False, False)
    assert kernel == "band2" and np.all(np.isfinite(gm))
    # the other adjoint modes with weights write their gradient somewhere
    for mode in ("adjoint", "adjoint_from_output"):
        with pytest.raises(ValueError, match="give gweights or gw_acc"):
            solver.run(mode, DELTA, lo, hi, "variance", np.zeros(Tn * 3 * Dn),
                       np.ones(Tn * 3 * Dn), g, np.zeros(Tn * Dn), gm, ph, ph,
                       np.array([Tn], dtype=np.intp), Tn, Dn, True, True, False, True,
                       False, False)


def test_openmp_flag_is_bool():
    from mlpgx._ext import _solver

    flag = _solver.openmp_enabled()
    assert isinstance(flag, bool)
    assert isinstance(_solver.max_threads(), int) and _solver.max_threads() >= 1
    print(f"openmp_enabled={flag} max_threads={_solver.max_threads()}")


# --------------------------------------------------------------------------
# window_matrix
# --------------------------------------------------------------------------

def dense_window_matrix(left, right, coeffs, n):
    """``W[t, t - left + j] = coeffs[j]``, terms outside the sequence dropped."""
    W = np.zeros((n, n))
    for t in range(n):
        for j, c in enumerate(coeffs):
            col = t - left + j
            if 0 <= col < n:
                W[t, col] = c
    return W


WINDOW_SPECS = {
    "delta": DELTA,
    "asymmetric": [(0, 0, [1.0]), (0, 2, [1.0, -2.0, 3.0]), (3, 1, [0.5, 1.0, -4.0, 2.0, 7.0])],
    "even": [[1.0], [1.0, -1.0], [0.25, -0.5, 1.5, 2.0]],
    "regression": [2, 2],
}
SIZES = [0, 1, 2, 5, 13]


def _expected(spec, n):
    return [dense_window_matrix(w.left, w.right, w.coeffs, n) for w in as_windows(spec)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("spec", list(WINDOW_SPECS), ids=list(WINDOW_SPECS))
def test_window_matrix_banded(spec, n):
    wins = as_windows(WINDOW_SPECS[spec])
    mats = mlpgx.window_matrix(WINDOW_SPECS[spec], n, format="banded")
    assert isinstance(mats, tuple) and len(mats) == len(wins)
    for m, w, W in zip(mats, wins, _expected(WINDOW_SPECS[spec], n)):
        assert isinstance(m, BandedMatrix)
        assert (m.lower, m.upper) == (w.left, w.right)
        assert m.data.shape == (w.left + w.right + 1, n)
        assert m.shape == (n, n)
        # LAPACK layout: data[upper + i - j, j] == W[i, j]
        for i in range(n):
            for j in range(max(0, i - m.lower), min(n, i + m.upper + 1)):
                assert m.data[m.upper + i - j, j] == W[i, j]
        np.testing.assert_array_equal(m.toarray(), W)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("spec", list(WINDOW_SPECS), ids=list(WINDOW_SPECS))
def test_window_matrix_sparse(spec, n):
    mats = mlpgx.window_matrix(WINDOW_SPECS[spec], n, format="sparse")
    for m, W in zip(mats, _expected(WINDOW_SPECS[spec], n)):
        assert scipy.sparse.issparse(m)
        assert m.shape == (n, n)
        np.testing.assert_array_equal(m.toarray(), W)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("spec", list(WINDOW_SPECS), ids=list(WINDOW_SPECS))
def test_banded_matrix_views_consistent(spec, n):
    rng = np.random.default_rng(n)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=(n, 3))
    for m, W in zip(mlpgx.window_matrix(WINDOW_SPECS[spec], n), _expected(WINDOW_SPECS[spec], n)):
        S = m.tosparse()
        assert scipy.sparse.issparse(S)
        np.testing.assert_array_equal(S.toarray(), m.toarray())
        np.testing.assert_allclose(m.dot(x1), W @ x1, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(m.dot(x2), W @ x2, rtol=1e-14, atol=1e-14)
        assert m.dot(x2).shape == (n, 3)


@pytest.mark.parametrize("n", [1, 2, 5, 13])
@pytest.mark.parametrize("window", [(1, 1, [1.0, 4.0, 1.0]), (1, 0, [-1.0, 2.0]),
                                    (0, 2, [3.0, 1.0, -0.5]), (2, 1, [0.1, -0.2, 5.0, 1.0])])
def test_solve_banded_agrees_with_dense(window, n):
    # diagonally dominant, hence invertible
    (m,) = [mm for mm in mlpgx.window_matrix([(0, 0, [1.0]), window], n)][1:]
    b = np.random.default_rng(3).normal(size=(n, 2))
    x = scipy.linalg.solve_banded((m.lower, m.upper), m.data, b)
    np.testing.assert_allclose(x, np.linalg.solve(m.toarray(), b), rtol=1e-10, atol=1e-12)


def test_window_matrix_static_is_identity():
    (m,) = mlpgx.window_matrix("static", 4)
    np.testing.assert_array_equal(m.toarray(), np.eye(4))


@pytest.mark.parametrize("T_, exc", [(-1, ValueError), (2.5, TypeError), ("3", TypeError),
                                     (None, TypeError), (3.0, TypeError), (True, TypeError)])
def test_window_matrix_bad_T(T_, exc):
    with pytest.raises(exc, match="T"):
        mlpgx.window_matrix(DELTA, T_)


def test_window_matrix_numpy_int_T():
    a = mlpgx.window_matrix(DELTA, np.int64(5))
    b = mlpgx.window_matrix(DELTA, 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.data, y.data)


@pytest.mark.parametrize("fmt", ["dense", "BANDED", "", None, 1])
def test_window_matrix_bad_format(fmt):
    with pytest.raises(ValueError, match="format"):
        mlpgx.window_matrix(DELTA, 5, format=fmt)


@pytest.mark.parametrize("windows, exc", [([], ValueError), (object(), TypeError),
                                          ([[-0.5, 0, 0.5]], ValueError)])
def test_window_matrix_bad_windows(windows, exc):
    with pytest.raises(exc, match="windows"):
        mlpgx.window_matrix(windows, 5)


def test_window_matrix_matches_reference_R():
    # sum_l W_l^T P_l W_l with the matrices from window_matrix reproduces mlpg
    # for boundary="none" (no precision is dropped).
    n = 11
    rng = np.random.default_rng(5)
    mu = rng.normal(size=(n, 3))
    var = rng.uniform(0.5, 2, size=(n, 3))
    Ws = mlpgx.window_matrix(DELTA, n, format="sparse")
    R = sum(W.T @ scipy.sparse.diags(1 / var[:, l]) @ W for l, W in enumerate(Ws))
    r = sum(W.T @ (mu[:, l] / var[:, l]) for l, W in enumerate(Ws))
    c = np.linalg.solve(R.toarray(), r)
    np.testing.assert_allclose(mlpgx.mlpg(mu, var, boundary="none")[:, 0], c, rtol=1e-10)


# --------------------------------------------------------------------------
# python -m mlpgx
# --------------------------------------------------------------------------

def test_python_m_mlpgx_in_the_checkout():
    # The README's first command, ``pip install . && python -m mlpgx``, runs in
    # the checkout, where Python imports ./mlpgx ahead of the installed
    # package: setup.py copies the built extensions there (a plain pip install
    # once left the checkout without them, and the cython backend unavailable)
    root = pathlib.Path(__file__).resolve().parents[1]
    if not ((root / "setup.py").is_file() and (root / "mlpgx" / "__init__.py").is_file()):
        pytest.skip("the tests do not run from a source checkout")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "mlpgx"], capture_output=True, text=True,
                          timeout=120, cwd=root, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [ln.split() for ln in proc.stdout.splitlines()]
    for dtype in ("float32", "float64"):
        assert any(r[:2] == ["cython", dtype] and r[-1] == "PASS" for r in rows), proc.stdout


def test_unbuilt_checkout_says_so(tmp_path):
    # a source tree without its compiled extensions: Python's own error was
    # a circular import of mlpgx._ext; the package names the missing build
    src = pathlib.Path(mlpgx.__file__).resolve().parent
    shutil.copytree(src, tmp_path / "mlpgx",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.c"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import mlpgx, mlpgx.backends as B\n"
            "print(B.available())\n"
            "import mlpgx._ext\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # mlpgx itself imports, without the compiled backend
    assert "'reference'" in proc.stdout and "'cython'" not in proc.stdout, proc.stdout
    assert "ImportError: not built in this source checkout" in proc.stderr, proc.stderr
    assert "pip install ." in proc.stderr


def test_python_m_mlpgx():
    root = str(pathlib.Path(mlpgx.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "mlpgx"], capture_output=True, text=True,
                          timeout=120, cwd=root, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    for name in B.available():
        for dtype in ("float32", "float64"):
            rows = [ln for ln in lines if ln.split()[:2] == [name, dtype]]
            assert len(rows) == 1, (name, dtype, out)
            assert rows[0].rstrip().endswith("PASS"), rows[0]
    assert "FAIL" not in out


# --------------------------------------------------------------------------
# verify / assert_matches_reference
# --------------------------------------------------------------------------

class OffBackend(B.Backend):
    """Reference output + 1e-3: deliberately wrong."""

    name = "off-by-1e-3"

    def forward(self, problem):
        return B.get("reference").forward(problem) + 1e-3

    def adjoint(self, problem, grad_output):
        return B.get("reference").adjoint(problem, grad_output)

    def solve(self, problem, rhs):
        return B.get("reference").solve(problem, rhs)


@pytest.fixture
def off_backend():
    B.register("off-by-1e-3", OffBackend)
    try:
        yield "off-by-1e-3"
    finally:
        B.unregister("off-by-1e-3")


def _data(dtype=np.float64, shape=(T, L * D)):
    rng = np.random.default_rng(0)
    return (rng.normal(size=shape).astype(dtype),
            rng.uniform(0.5, 2.0, size=shape).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_assert_matches_reference_passes_for_cython(dtype):
    m, v = _data(dtype)
    rep = mlpgx.testing.assert_matches_reference(m, v, backend="cython")
    assert rep.passed
    mlpgx.testing.assert_matches_reference(m, None, backend="cython")
    mlpgx.testing.assert_matches_reference(m, backend="cython", precisions=v)
    mb, vb = _data(dtype, (2, T, L * D))
    mlpgx.testing.assert_matches_reference(mb, vb, backend="cython", lengths=[T, 4],
                                           boundary="nnmnkwii")


def test_assert_matches_reference_fails_for_wrong_backend(off_backend):
    m, v = _data()
    with pytest.raises(AssertionError, match="FAIL"):
        mlpgx.testing.assert_matches_reference(m, v, backend=off_backend)
    with pytest.raises(AssertionError):
        mlpgx.testing.assert_matches_reference(m, v, backend=OffBackend())


def test_verify_report_fields():
    m, v = _data()
    rep = mlpgx.verify(m, v, backend="cython")
    assert isinstance(rep, mlpgx.VerifyReport)
    assert rep.backend == "cython" and rep.dtype == "float64"
    # the cython adjoint reuses the forward's output and has a means-only
    # path: those are checked too
    assert set(rep.results) == {"forward", "grad_means", "grad_variances",
                                "grad_means (output=)", "grad_variances (output=)",
                                "grad_means (weight_grad=False)"}
    for c in rep.results.values():
        assert c.max_abs >= 0 and c.max_rel >= 0
        assert c.max_rel <= rep.rtol
    assert rep.passed and bool(rep)
    assert rep.max_rel == max(c.max_rel for c in rep.results.values())
    s = str(rep)
    assert "PASS" in s and "cython" in s and "forward" in s and "grad_variances (output=)" in s
    # one row per comparison, the numbers in one column however long the names
    rows = s.splitlines()[1:]
    assert len(rows) == len(rep.results)
    assert len({row.index(" max abs ") for row in rows}) == 1, s
    rp = mlpgx.verify(m, backend="cython", precisions=v)
    assert set(rp.results) == {"forward", "grad_means", "grad_precisions",
                               "grad_means (output=)", "grad_precisions (output=)",
                               "grad_means (weight_grad=False)"}
    assert set(mlpgx.verify(m, backend="cython").results) == {
        "forward", "grad_means", "grad_means (output=)", "grad_means (weight_grad=False)"}


def test_verify_report_fail(off_backend):
    m, v = _data()
    rep = mlpgx.verify(m, v, backend=off_backend)
    assert not rep.passed and not bool(rep)
    assert rep.results["forward"].max_rel > rep.rtol
    assert rep.results["forward"].max_abs == pytest.approx(1e-3, rel=1e-6)
    assert "FAIL" in str(rep)
    # an explicit loose tolerance makes it pass
    assert mlpgx.verify(m, v, backend=off_backend, rtol=1.0).passed


@pytest.mark.parametrize("kw, exc, name", [
    (dict(rtol="a"), TypeError, "rtol"), (dict(rtol=-1e-3), ValueError, "rtol"),
    (dict(rtol=float("nan")), ValueError, "rtol"), (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"), (dict(seed="0"), TypeError, "seed")])
def test_verify_bad_arguments(kw, exc, name):
    m = np.zeros((10, 3))
    with pytest.raises(exc, match=name):
        mlpgx.verify(m, backend="cython", **kw)


@pytest.mark.parametrize("seed", [None, 3, np.random.default_rng(3), np.random.PCG64(3),
                                  np.random.SeedSequence(3)], ids=lambda s: type(s).__name__)
def test_verify_takes_what_default_rng_takes_as_seed(seed):
    m = np.random.default_rng(0).normal(size=(10, 3))
    assert mlpgx.verify(m, backend="cython", seed=seed).passed


@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_check_finite_must_be_a_bool(value):
    with pytest.raises(TypeError, match="check_finite"):
        mlpgx.mlpg(np.zeros((4, 3)), check_finite=value)


def test_verify_default_tolerance_is_dtype_aware():
    from mlpgx._verify import DEFAULT_RTOL

    r32 = mlpgx.verify(*_data(np.float32), backend="cython")
    r64 = mlpgx.verify(*_data(np.float64), backend="cython")
    assert r32.dtype == "float32" and r64.dtype == "float64"
    assert r32.rtol == DEFAULT_RTOL["float32"]
    assert r64.rtol == DEFAULT_RTOL["float64"]
    assert r32.rtol > r64.rtol
    assert r32.passed and r64.passed
    assert mlpgx.verify(*_data(), backend="cython", rtol=1e-3).rtol == 1e-3


def test_verify_reference_against_itself_is_exact():
    rep = mlpgx.verify(*_data(), backend="reference")
    assert rep.passed and rep.max_rel == 0.0


# --------------------------------------------------------------------------
# public API surface
# --------------------------------------------------------------------------

def test_all_names_exist():
    for name in mlpgx.__all__:
        assert hasattr(mlpgx, name), name
    for name in B.__all__:
        assert hasattr(B, name), name


def test_public_api_surface():
    import mlpgx.testing
    import mlpgx.windows

    for f in (mlpgx.mlpg, mlpgx.mlpg_adjoint, mlpgx.mlpg_solve, mlpgx.window_matrix,
              mlpgx.verify, mlpgx.testing.assert_matches_reference, B.available, B.get,
              B.register, B.unregister, B.use, B.describe, B.resolve):
        assert callable(f)
    assert isinstance(mlpgx.windows.DELTA, mlpgx.windows.WindowSet)
    assert len(mlpgx.windows.DELTA) == 3
    assert isinstance(mlpgx.__version__, str)
    assert issubclass(B.Backend, object) and B.OPERATIONS == ("forward", "adjoint", "solve")
    from mlpgx.data import MGC, load_arctic_a0001  # noqa: F401

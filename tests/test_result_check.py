"""The compiled kernel's test of its own results.

The k <= 2 kernel's float64 clones test the results they store finite (the
gradients value by value, the solution through its first row, where a value
that is not finite anywhere in a column arrives), so that the API layer need
not scan them again (``Backend.forward_checked`` / ``adjoint_checked``).  What
must hold: the kernel never calls a result finite that is not, and calls
every ordinary result finite; the API layer scans exactly the results nobody
tested, and the errors stay the same (``test_bad_input.py``'s overflow tests).
"""
from __future__ import annotations

import numpy as np
import pytest

import mlpgx
import mlpgx._validate as validate
from mlpgx import backends
from mlpgx._validate import make_problem
from mlpgx.windows import DELTA, DELTA1, as_windows

pytest.importorskip("mlpgx._ext._solver")

CY = backends.get("cython")

#: every 3-tap layout the k <= 2 kernel has a clone for: exactly DELTA
#: (literal coefficients), another zero-centre window 1, general 3-tap
#: windows, 2-tap differences, 4 windows
BAND2_SETS = {
    "delta": DELTA,
    "delta-scaled": as_windows([[1.0], [-1.0, 0.0, 1.0], [1.0, -2.0, 1.0]]),
    "delta1": DELTA1,
    "3tap": as_windows([[1.0], [-0.3, 0.1, 0.4], [0.7, -1.5, 0.9]]),
    "2tap": as_windows([(0, 0, [1.0]), (1, 0, [-1.0, 1.0]), (0, 1, [-1.0, 1.0])]),
    "4win": as_windows([[1.0], [-0.5, 0.0, 0.5], [1.0, -2.0, 1.0], [0.2, 0.3, -0.1]]),
}
WIDE = as_windows([(0, 0, [1.0]), (2, 2, [0.1, 0.2, 0.0, -0.2, -0.1])])


def _case(rng, windows, weight_kind, B, T, D, lengths):
    L = len(windows)
    m = rng.normal(size=(B, T, L * D))
    if weight_kind == "global":
        w = rng.uniform(0.5, 2.0, size=L * D)
    elif weight_kind is None:
        w = None
    else:
        w = rng.uniform(0.5, 2.0, size=(B, T, L * D))
    g = rng.normal(size=(B, T, D))
    return m, w, g


#: (big, huge) finite values per dtype for _inject
OVERFLOWING = {np.dtype(np.float64): (1e200, 1e300), np.dtype(np.float32): (1e30, 1e38)}


def _inject(rng, m, w, g, weight_kind, operation):
    """Finite inputs whose results overflow somewhere: a mean of 1e200 over a
    variance of 1e-200 (or a precision of 1e200), or an upstream gradient of
    1e300 (over precisions near 1e10 where there are per-frame weights);
    float32 arrays get 1e30 and 1e38 for 1e200 and 1e300."""
    big, huge = OVERFLOWING[m.dtype]
    B, T = m.shape[:2]
    b, t = rng.integers(B), rng.integers(T)
    if operation in ("forward",) or (operation == "adjoint" and rng.random() < 0.5):
        col = rng.integers(m.shape[2])
        m[b, t, col] = big
        if w is not None and w.ndim == 3:
            w[b, t, col] = 1 / big if weight_kind == "variance" else big
    else:
        g[b, t, rng.integers(g.shape[2])] = huge
        if w is not None and w.ndim == 3:
            w[b, max(t - 1, 0):t + 2] = 1e-10 if weight_kind == "variance" else 1e10


def random_cases(rng, windows, operation, trials, dims, boundaries, dtype=np.float64):
    """Problems for a test of a kernel's result check: random sizes (D from
    ``dims``), lengths, boundary rules (cycled), 1-2 threads and weight kinds
    (variances, precisions, global variances, none, cycled); half of them
    with an input that makes some result overflow (:func:`_inject`).  Yields
    ``(problem, g, weight_kind, info)``; cases whose injected weight is out
    of the valid range are left out."""
    for trial in range(trials):
        B = int(rng.integers(1, 4))
        T = int(rng.integers(1, 12))
        D = int(rng.choice(dims))
        lengths = rng.integers(0, T + 1, size=B) if rng.random() < 0.3 else None
        weight_kind = ["variance", "precision", "global", None][trial % 4]
        m, w, g = (None if a is None else a.astype(dtype)
                   for a in _case(rng, windows, weight_kind, B, T, D, lengths))
        inject = trial % 8 >= 4
        if inject:
            _inject(rng, m, w, g, "variance" if weight_kind == "global" else weight_kind,
                    operation.split("_")[0])
        kw = {"precisions": w} if weight_kind == "precision" else {"variances": w}
        try:
            pb = make_problem(m, windows=windows, lengths=lengths,
                              boundary=boundaries[trial % len(boundaries)],
                              num_threads=int(rng.integers(1, 3)), **kw)
        except ValueError:
            continue   # (an injected weight outside the valid range)
        yield pb, g, weight_kind, (trial, B, T, D, weight_kind, lengths, inject)


@pytest.mark.parametrize("operation", ["forward", "solve", "adjoint", "adjoint_given_output"])
@pytest.mark.parametrize("name", sorted(BAND2_SETS))
@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii", "none"])
def test_kernel_calls_results_finite_exactly_when_they_are(operation, name, boundary):
    # float64, every k <= 2 layout and boundary rule, random sizes (two
    # column chunks when D > 64), lengths and weight kinds; half the cases
    # with an input that makes some result overflow
    windows = BAND2_SETS[name]
    rng = np.random.default_rng(abs(hash((operation, name, boundary))) % 2**32)
    for pb, g, weight_kind, info in random_cases(rng, windows, operation, 24, [1, 3, 70],
                                                 [boundary]):
        try:
            with np.errstate(all="ignore"):
                if operation == "forward":
                    out, finite = CY._run("forward", pb, report_finite=True)
                    results = [out]
                elif operation == "solve":
                    out, finite = CY._run("solve", pb, g, report_finite=True)
                    results = [out]
                else:
                    given = None
                    if operation == "adjoint_given_output":
                        given = CY._run("forward", pb)
                        if not np.isfinite(given).all():
                            continue   # (the adjoint is given a finite output)
                    (gm, gw), finite = CY._run("adjoint", pb, g, given_output=given,
                                               report_finite=True)
                    # global weights: the kernel tests grad_means, not the sums
                    results = [gm] if gw is None or weight_kind == "global" else [gm, gw]
        except np.linalg.LinAlgError:
            continue   # (extreme precisions can make a pivot non-positive)
        all_finite = all(bool(np.isfinite(r).all()) for r in results)
        assert finite == all_finite, info


@pytest.mark.parametrize("operation", ["forward", "adjoint"])
def test_float32_and_the_general_kernel_test_nothing(operation):
    # no claim where no test ran: the API layer scans those results itself
    rng = np.random.default_rng(5)
    for windows, dtype in ((DELTA, np.float32), (WIDE, np.float64), (WIDE, np.float32)):
        L = len(windows)
        m = rng.normal(size=(1, 9, L * 2)).astype(dtype)
        v = rng.uniform(0.5, 2, size=m.shape).astype(dtype)
        pb = make_problem(m, v, windows)
        if operation == "forward":
            _, finite = CY._run("forward", pb, report_finite=True)
        else:
            _, finite = CY._run("adjoint", pb, np.ones((1, 9, 2), dtype), report_finite=True)
        assert finite is False, (windows, dtype)


def _scanned_arrays(monkeypatch):
    seen = []
    real = validate._all_finite

    def recording(x, num_threads=None):
        seen.append(x)
        return real(x, num_threads)

    monkeypatch.setattr(validate, "_all_finite", recording)
    return seen


def _was_scanned(seen, result):
    return any(np.shares_memory(x, result) for x in seen if isinstance(x, np.ndarray))


@pytest.mark.parametrize("output_given", [False, True])
def test_results_the_kernel_tested_are_not_scanned_again(monkeypatch, output_given):
    rng = np.random.default_rng(0)
    T, D = 40, 3
    m, v = rng.normal(size=(T, 3 * D)), rng.uniform(0.5, 2, size=(T, 3 * D))
    g = rng.normal(size=(T, D))
    seen = _scanned_arrays(monkeypatch)
    c = mlpgx.mlpg(m, v)
    assert not _was_scanned(seen, c)
    seen.clear()
    gm, gv = mlpgx.mlpg_adjoint(g, m, v, output=c if output_given else None)
    assert not _was_scanned(seen, gm) and not _was_scanned(seen, gv)
    np.testing.assert_allclose(gm, mlpgx.mlpg_adjoint(g, m, v, backend="reference")[0],
                               rtol=1e-10, atol=1e-12)
    # global variances: the gradient of the means is tested, the summed
    # variance gradient is not (the sum may overflow) and is scanned
    seen.clear()
    gm, gv = mlpgx.mlpg_adjoint(g, m, v[0])
    assert not _was_scanned(seen, gm) and _was_scanned(seen, gv)
    # the solve (Backend.solve_checked)
    seen.clear()
    x = mlpgx.mlpg_solve(g, v)
    assert not _was_scanned(seen, x)
    np.testing.assert_allclose(x, mlpgx.mlpg_solve(g, v, backend="reference"), rtol=1e-10,
                               atol=1e-12)


def test_results_nobody_tested_are_scanned(monkeypatch):
    rng = np.random.default_rng(1)
    T, D = 40, 3
    seen = _scanned_arrays(monkeypatch)
    for windows, dtype, backend in ((DELTA, np.float32, "cython"),
                                    (WIDE, np.float64, "cython"),
                                    (DELTA, np.float64, "reference")):
        L = len(windows)
        m = rng.normal(size=(T, L * D)).astype(dtype)
        v = rng.uniform(0.5, 2, size=(T, L * D)).astype(dtype)
        seen.clear()
        c = mlpgx.mlpg(m, v, windows, backend=backend)
        assert _was_scanned(seen, c), (windows, dtype, backend)
        seen.clear()
        gm, gv = mlpgx.mlpg_adjoint(np.ones((T, D), dtype), m, v, windows, backend=backend)
        assert _was_scanned(seen, gm) and _was_scanned(seen, gv), (windows, dtype, backend)
        seen.clear()
        x = mlpgx.mlpg_solve(np.ones((T, D), dtype), v, windows, backend=backend)
        assert _was_scanned(seen, x), (windows, dtype, backend)


def test_overflow_found_by_the_kernel_is_named_by_the_layer():
    # the kernel only says "not finite"; the layer's scan names the entry,
    # with the message the scan alone gave (f64, the k <= 2 kernel)
    T, D = 12, 2
    m, v = np.zeros((T, 3 * D)), np.ones((T, 3 * D))
    m[5, 1], v[5, 1] = 1e200, 1e-200
    with pytest.raises(ValueError, match=r"^output\[\d+, 1\] = .* is not finite although "
                                         r"means and variances are"):
        mlpgx.mlpg(m, v)
    g = np.ones((T, D))
    g[7, 0] = 1e300
    v2 = np.full((T, 3 * D), 1e-10)
    with pytest.raises(ValueError, match=r"^grad_(means|variances)\[\d+, \d+\] = .* is not "
                                         r"finite although grad_output, means and variances"):
        mlpgx.mlpg_adjoint(g, np.ones((T, 3 * D)), v2)
    with pytest.raises(ValueError, match=r"^x\[\d+, \d+\] = .* is not finite although rhs "
                                         r"and variances"):
        mlpgx.mlpg_solve(np.full((T, D), 1e300), np.full((T, 3 * D), 1e10))

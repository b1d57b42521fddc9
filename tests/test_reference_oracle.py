"""Check the reference backend against an even more naive dense oracle.

The oracle below builds dense ``n x n`` window matrices with Python loops,
re-derives the boundary rules from their definitions and solves with
``numpy.linalg.solve``; it works in complex arithmetic too, so its gradients
are taken by complex-step differentiation (exact to rounding), independent of
the adjoint formulas the reference uses.  The reference adjoint is also
checked against central finite differences of the reference forward.

The reference module is loaded so that neither ``mlpgx/__init__.py`` nor the
compiled extension (nor, if it is missing, ``mlpgx/windows.py``) is needed.
"""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys
import types
import warnings
import zlib
from collections import namedtuple

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG_DIR = ROOT / "mlpgx"

# --------------------------------------------------------------------------
# Loading the module under test
# --------------------------------------------------------------------------

StandInWindow = namedtuple("StandInWindow", ["left", "right", "coeffs"])


class StandInWindowSet(list):
    """Tiny stand-in for :class:`mlpgx.windows.WindowSet`."""

    @property
    def max_halfwidth(self):
        return max(max(w.left, w.right) for w in self)


def _load():
    """Return ``(ReferenceBackend, Problem, windows_module_or_None)``."""
    try:  # the real package, when it imports completely
        from mlpgx._problem import Problem
        from mlpgx.backends.reference import ReferenceBackend
        import mlpgx.windows as win

        return ReferenceBackend, Problem, win
    except Exception:
        pass
    name = "_mlpgx_reference_oracle_pkg"
    if name + ".backends.reference" in sys.modules:
        mod = sys.modules[name + ".backends.reference"]
        prob = sys.modules[name + "._problem"]
        return mod.ReferenceBackend, prob.Problem, sys.modules.get(name + "._real_windows")
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(PKG_DIR)]
    sys.modules[name] = pkg
    sub = types.ModuleType(name + ".backends")
    sub.__path__ = [str(PKG_DIR / "backends")]
    sys.modules[name + ".backends"] = sub
    win = None
    try:
        win = importlib.import_module(name + ".windows")
        sys.modules[name + "._real_windows"] = win
    except Exception:
        sys.modules.pop(name + ".windows", None)
        stub = types.ModuleType(name + ".windows")
        stub.Window = StandInWindow
        stub.WindowSet = StandInWindowSet
        sys.modules[name + ".windows"] = stub
    prob = importlib.import_module(name + "._problem")
    spec = importlib.util.spec_from_file_location(
        name + ".backends.reference", PKG_DIR / "backends" / "reference.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.ReferenceBackend, prob.Problem, win


ReferenceBackend, Problem, _real_windows = _load()
REF = ReferenceBackend()


def _matches(ws, spec):
    try:
        return len(ws) == len(spec) and all(
            int(w.left) == l and int(w.right) == r
            and np.allclose(np.asarray(w.coeffs, float), c)
            for w, (l, r, c) in zip(ws, spec)
        ) and int(ws.max_halfwidth) == max(max(l, r) for l, r, _ in spec)
    except Exception:
        return False


def make_windows(spec):
    """A WindowSet for ``[(left, right, coeffs), ...]``: the real one when it
    can be built and reads back as ``spec``, else the stand-in."""
    if _real_windows is not None:
        W, WS = getattr(_real_windows, "Window", None), getattr(_real_windows, "WindowSet", None)
        attempts = [
            lambda: WS([W(left=l, right=r, coeffs=tuple(map(float, c))) for l, r, c in spec]),
            lambda: WS([W(l, r, tuple(map(float, c))) for l, r, c in spec]),
        ]
        for attempt in attempts:
            try:
                ws = attempt()
            except Exception:
                continue
            if _matches(ws, spec):
                return ws
    return StandInWindowSet(StandInWindow(l, r, tuple(float(x) for x in c)) for l, r, c in spec)


# --------------------------------------------------------------------------
# Window sets used throughout
# --------------------------------------------------------------------------

STATIC = [(0, 0, [1.0])]
DELTA = [(0, 0, [1.0]), (1, 1, [-0.5, 0.0, 0.5]), (1, 1, [1.0, -2.0, 1.0])]
ASYM = [(0, 0, [1.0]), (1, 0, [-1.0, 1.0]), (0, 2, [0.3, -0.2, 0.5])]
WIDE = [(0, 0, [1.0]), (1, 1, [-0.5, 0.0, 0.5]),
        (4, 4, [0.1, -0.3, 0.2, 0.5, -1.0, 0.4, 0.25, -0.15, 0.3])]
WINDOW_SETS = {"static": STATIC, "delta": DELTA, "asym": ASYM, "wide": WIDE}
BOUNDARIES = ("per-window", "nnmnkwii", "none")


# --------------------------------------------------------------------------
# The dense oracle
# --------------------------------------------------------------------------

def dense_window(left, right, coeffs, n):
    W = np.zeros((n, n))
    for t in range(n):
        for j in range(left + right + 1):
            s = t - left + j
            if 0 <= s < n:
                W[t, s] = coeffs[j]
    return W


def dropped(spec, boundary, l, n):
    """Frames (list of ints) whose precision the boundary rule zeroes."""
    if l == 0 or boundary == "none":
        return []
    if boundary == "per-window":
        left, right, _ = spec[l]
        return [t for t in range(n) if t < left or t > n - 1 - right]
    assert boundary == "nnmnkwii"
    K = max(max(left, right) for left, right, _ in spec)
    return [t for t in range(n) if t < K or t > n - 1 - K]


def oracle_precisions(weights, kind, shape):
    """Precisions ``shape`` = (B, T, L*D), complex-safe."""
    if weights is None:
        return np.ones(shape)
    w = np.broadcast_to(weights, shape)
    if kind == "precision":
        return w
    inf = np.isinf(w.real)
    return np.where(inf, 0.0, 1.0 / np.where(inf, 1.0, w))


def oracle_system(spec, boundary, p_cols, n):
    """Dense ``R`` and the per-window precisions after the boundary rule."""
    Ws = [dense_window(l_, r_, c_, n) for l_, r_, c_ in spec]
    ps = []
    R = np.zeros((n, n), dtype=np.result_type(p_cols, float))
    for l, W in enumerate(Ws):
        p = np.array(p_cols[:, l], dtype=R.dtype)
        for t in dropped(spec, boundary, l, n):
            p[t] = 0.0
        ps.append(p)
        R = R + W.T @ np.diag(p) @ W
    return Ws, ps, R


def oracle_forward(spec, boundary, means, weights, kind, lengths, D, T):
    B = len(lengths)
    L = len(spec)
    dt = np.result_type(means, weights if weights is not None else 1.0, float)
    P = oracle_precisions(weights, kind, (B, T, L * D))
    out = np.zeros((B, T, D), dtype=dt)
    for b in range(B):
        n = int(lengths[b])
        if n == 0:
            continue
        for d in range(D):
            cols = [l * D + d for l in range(L)]
            Ws, ps, R = oracle_system(spec, boundary, P[b, :n][:, cols], n)
            r = sum(W.T @ (p * means[b, :n, col]) for W, p, col in zip(Ws, ps, cols))
            out[b, :n, d] = np.linalg.solve(R, r)
    return out


def oracle_solve(spec, boundary, weights, kind, lengths, D, T, rhs):
    B, L = len(lengths), len(spec)
    P = oracle_precisions(weights, kind, (B, T, L * D))
    out = np.zeros((B, T, D))
    for b in range(B):
        n = int(lengths[b])
        for d in range(D):
            if n == 0:
                continue
            cols = [l * D + d for l in range(L)]
            _, _, R = oracle_system(spec, boundary, P[b, :n][:, cols], n)
            out[b, :n, d] = np.linalg.solve(R, rhs[b, :n, d])
    return out


def oracle_adjoint(spec, boundary, means, weights, kind, lengths, D, T, g):
    """Complex-step gradients of ``sum(g * c)`` w.r.t. means and weights."""
    h = 1e-30

    def loss(m, w):
        c = oracle_forward(spec, boundary, m, w, kind, lengths, D, T)
        return np.sum(g * c)

    gm = np.zeros(means.shape)
    for idx in np.ndindex(*means.shape):
        m = means.astype(complex)
        m[idx] += 1j * h
        gm[idx] = loss(m, weights).imag / h
    if weights is None:
        return gm, None
    gw = np.zeros(weights.shape)
    for idx in np.ndindex(*weights.shape):
        if np.isinf(weights[idx]):
            continue  # precision fixed at 0: gradient 0
        w = weights.astype(complex)
        w[idx] += 1j * h
        gw[idx] = loss(means, w).imag / h
    return gm, gw


# --------------------------------------------------------------------------
# Random problems
# --------------------------------------------------------------------------

def make_problem(spec, boundary, means, weights, kind, lengths, D, T, dtype=np.float64):
    dtype = np.dtype(dtype)
    return Problem(
        means=None if means is None else np.ascontiguousarray(means, dtype=dtype),
        weights=None if weights is None else np.ascontiguousarray(weights, dtype=dtype),
        weight_kind=kind,
        windows=make_windows(spec),
        lengths=np.asarray(lengths, dtype=np.int64),
        boundary=boundary,
        static_dim=D,
        n_frames=T,
        dtype=dtype,
    )


def random_inputs(rng, spec, T, D, lengths, weight_mode):
    """``(means, weights, kind)`` for ``weight_mode`` in
    {"variance", "global", "none", "precision0", "inf"}."""
    L = len(spec)
    B = len(lengths)
    means = rng.standard_normal((B, T, L * D))
    if weight_mode == "none":
        return means, None, "variance"
    if weight_mode == "global":
        return means, rng.uniform(0.3, 3.0, L * D), "variance"
    w = rng.uniform(0.3, 3.0, (B, T, L * D))
    if weight_mode == "variance":
        return means, w, "variance"
    if weight_mode == "inf":
        # +inf variances anywhere on dynamic windows, and on some static frames
        inf = rng.random((B, T, L * D)) < 0.3
        inf[:, :, :D] &= (rng.random((B, T, D)) < 0.3) & (L > 1)
        w[inf] = np.inf
        return means, w, "variance"
    assert weight_mode == "precision0"
    p = 1.0 / w
    zero = rng.random((B, T, L * D)) < 0.3
    zero[:, :, :D] &= (rng.random((B, T, D)) < 0.3) & (L > 1)  # static: rarer
    p[zero] = 0.0
    return means, p, "precision"


def nonsingular(spec, boundary, weights, kind, lengths, D, T, cond_max=1e6):
    B, L = len(lengths), len(spec)
    P = oracle_precisions(weights, kind, (B, T, L * D))
    for b in range(B):
        n = int(lengths[b])
        for d in range(D):
            if n == 0:
                continue
            cols = [l * D + d for l in range(L)]
            _, _, R = oracle_system(spec, boundary, P[b, :n][:, cols], n)
            if np.linalg.cond(R) > cond_max:
                return False
    return True


def draw(rng, spec, boundary, T, D, lengths, weight_mode):
    for _ in range(200):
        means, weights, kind = random_inputs(rng, spec, T, D, lengths, weight_mode)
        if nonsingular(spec, boundary, weights, kind, lengths, D, T):
            return means, weights, kind
    raise AssertionError("could not draw a nonsingular problem")  # pragma: no cover


def seed_of(*key):
    """A seed that is stable across processes (unlike ``hash``)."""
    return zlib.crc32(repr(key).encode())


def masked(x, lengths):
    """Copy of ``x`` (B, T, ...) with frames beyond each length zeroed."""
    x = np.array(x)
    for b, n in enumerate(lengths):
        x[b, int(n):] = 0
    return x


CASES = [
    (wname, boundary, T)
    for wname in WINDOW_SETS
    for boundary in BOUNDARIES
    for T in (1, 2, 3, 5, 12)
]
WEIGHT_MODES = ("variance", "global", "none", "precision0", "inf")


def _lengths_for(T, rng):
    # full length, length 0, and a random one in between (when T > 1)
    return [T, 0, int(rng.integers(1, T + 1))]


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

@pytest.mark.parametrize("weight_mode", WEIGHT_MODES)
@pytest.mark.parametrize("wname,boundary,T", CASES)
def test_forward_matches_dense_oracle(wname, boundary, T, weight_mode):
    spec = WINDOW_SETS[wname]
    rng = np.random.default_rng(seed_of((wname, boundary, T, weight_mode)))
    D = 2
    lengths = _lengths_for(T, rng)
    means, weights, kind = draw(rng, spec, boundary, T, D, lengths, weight_mode)
    prob = make_problem(spec, boundary, means, weights, kind, lengths, D, T)
    c = REF.forward(prob)
    assert c.dtype == np.float64 and c.shape == (len(lengths), T, D)
    expected = oracle_forward(spec, boundary, means, weights, kind, lengths, D, T)
    np.testing.assert_allclose(c, expected, rtol=1e-9, atol=1e-9)
    for b, n in enumerate(lengths):
        assert np.all(c[b, n:] == 0)


def test_forward_ignores_padding():
    rng = np.random.default_rng(1)
    spec, T, D, lengths = DELTA, 7, 2, [7, 4, 0]
    means, weights, kind = draw(rng, spec, "per-window", T, D, lengths, "variance")
    a = REF.forward(make_problem(spec, "per-window", means, weights, kind, lengths, D, T))
    m2, w2 = means.copy(), weights.copy()
    m2[1, 4:] = 1e6
    w2[1, 4:] = 1e-6
    m2[2] = -5.0
    b = REF.forward(make_problem(spec, "per-window", m2, w2, kind, lengths, D, T))
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# Adjoint
# --------------------------------------------------------------------------

ADJ_CASES = [
    (wname, boundary, T)
    for wname in WINDOW_SETS
    for boundary in BOUNDARIES
    for T in (1, 3, 5, 12)
]


@pytest.mark.parametrize("weight_mode", WEIGHT_MODES)
@pytest.mark.parametrize("wname,boundary,T", ADJ_CASES)
def test_adjoint_matches_dense_oracle(wname, boundary, T, weight_mode):
    spec = WINDOW_SETS[wname]
    rng = np.random.default_rng(seed_of(("adj", wname, boundary, T, weight_mode)))
    D = 2 if T < 12 else 1
    lengths = [T, 0, int(rng.integers(1, T + 1))] if T < 12 else [T, 9]
    means, weights, kind = draw(rng, spec, boundary, T, D, lengths, weight_mode)
    g = rng.standard_normal((len(lengths), T, D))
    prob = make_problem(spec, boundary, means, weights, kind, lengths, D, T)
    gm, gw = REF.adjoint(prob, g)
    em, ew = oracle_adjoint(spec, boundary, means, weights, kind, lengths, D, T, masked(g, lengths))
    assert gm.dtype == np.float64 and gm.shape == means.shape
    np.testing.assert_allclose(gm, em, rtol=1e-8, atol=1e-9)
    if weights is None:
        assert gw is None
    else:
        assert gw.dtype == np.float64 and gw.shape == weights.shape
        np.testing.assert_allclose(gw, ew, rtol=1e-8, atol=1e-9)
        if weights.ndim == 3:
            # gradients are exactly 0 beyond the lengths, at +inf variances,
            # and where the boundary rule fixed the precision to 0
            for b, n in enumerate(lengths):
                assert np.all(gw[b, n:] == 0) and np.all(gm[b, n:] == 0)
                for l in range(len(spec)):
                    for t in dropped(spec, boundary, l, n):
                        assert np.all(gw[b, t, l * D:(l + 1) * D] == 0)
                        assert np.all(gm[b, t, l * D:(l + 1) * D] == 0)
            if kind == "variance":
                assert np.all(gw[np.isinf(weights)] == 0)


def _fd_check(spec, boundary, T, D, lengths, weight_mode, seed):
    rng = np.random.default_rng(seed)
    means, weights, kind = draw(rng, spec, boundary, T, D, lengths, weight_mode)
    g = masked(rng.standard_normal((len(lengths), T, D)), lengths)

    def loss(m, w):
        return float(np.sum(g * REF.forward(make_problem(spec, boundary, m, w, kind, lengths, D, T))))

    gm, gw = REF.adjoint(make_problem(spec, boundary, means, weights, kind, lengths, D, T), g)
    h = 1e-6
    fm = np.zeros_like(means)
    for idx in np.ndindex(*means.shape):
        mp, mm = means.copy(), means.copy()
        mp[idx] += h
        mm[idx] -= h
        fm[idx] = (loss(mp, weights) - loss(mm, weights)) / (2 * h)
    np.testing.assert_allclose(gm, fm, rtol=1e-5, atol=1e-7)
    if weights is None:
        return
    fw = np.zeros_like(weights)
    for idx in np.ndindex(*weights.shape):
        if not np.isfinite(weights[idx]):
            continue
        hw = h * max(abs(weights[idx]), 1e-3) if kind == "variance" else h
        wp, wm = weights.copy(), weights.copy()
        wp[idx] += hw
        wm[idx] -= hw
        fw[idx] = (loss(means, wp) - loss(means, wm)) / (2 * hw)
    np.testing.assert_allclose(gw, fw, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("weight_mode", ("variance", "global", "none", "precision0", "inf"))
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("wname", list(WINDOW_SETS))
def test_adjoint_matches_finite_differences(wname, boundary, weight_mode):
    _fd_check(WINDOW_SETS[wname], boundary, 5, 1, [5, 0, 3], weight_mode,
              seed=seed_of(("fd", wname, boundary, weight_mode)))


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_adjoint_finite_differences_two_dims(boundary):
    _fd_check(DELTA, boundary, 4, 2, [4, 3], "variance", seed=7)


# --------------------------------------------------------------------------
# Solve
# --------------------------------------------------------------------------

@pytest.mark.parametrize("weight_mode", WEIGHT_MODES)
@pytest.mark.parametrize("wname,boundary,T", CASES)
def test_solve_matches_oracle_and_is_symmetric(wname, boundary, T, weight_mode):
    spec = WINDOW_SETS[wname]
    rng = np.random.default_rng(seed_of(("solve", wname, boundary, T, weight_mode)))
    D = 2
    lengths = _lengths_for(T, rng)
    _, weights, kind = draw(rng, spec, boundary, T, D, lengths, weight_mode)
    prob = make_problem(spec, boundary, None, weights, kind, lengths, D, T)
    a = rng.standard_normal((len(lengths), T, D))
    b = rng.standard_normal((len(lengths), T, D))
    xa, xb = REF.solve(prob, a), REF.solve(prob, b)
    assert xa.dtype == np.float64 and xa.shape == a.shape
    np.testing.assert_allclose(xa, oracle_solve(spec, boundary, weights, kind, lengths, D, T, a),
                               rtol=1e-9, atol=1e-9)
    for bb, n in enumerate(lengths):
        assert np.all(xa[bb, n:] == 0)
    # <R^-1 a, b> == <a, R^-1 b> over the frames that exist
    am, bm = masked(a, lengths), masked(b, lengths)
    lhs, rhs = np.sum(xa * bm), np.sum(am * xb)
    assert abs(lhs - rhs) <= 1e-10 * (1 + abs(lhs) + abs(rhs))


def test_forward_is_solve_of_rhs():
    """forward(mu) == solve(r) with r = sum_l W_l^T P_l mu_l (dense)."""
    rng = np.random.default_rng(3)
    spec, T, D, lengths, boundary = ASYM, 8, 2, [8, 5], "per-window"
    means, weights, kind = draw(rng, spec, boundary, T, D, lengths, "variance")
    prob = make_problem(spec, boundary, means, weights, kind, lengths, D, T)
    P = oracle_precisions(weights, kind, weights.shape)
    r = np.zeros((2, T, D))
    for b, n in enumerate(lengths):
        for d in range(D):
            cols = [l * D + d for l in range(len(spec))]
            Ws, ps, _ = oracle_system(spec, boundary, P[b, :n][:, cols], n)
            r[b, :n, d] = sum(W.T @ (p * means[b, :n, c]) for W, p, c in zip(Ws, ps, cols))
    np.testing.assert_allclose(REF.solve(prob, r), REF.forward(prob), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# dtypes, boundary rule examples, singular systems, metadata
# --------------------------------------------------------------------------

@pytest.mark.parametrize("weight_mode", ("variance", "global", "none"))
def test_float32_in_float32_out(weight_mode):
    rng = np.random.default_rng(11)
    spec, T, D, lengths = DELTA, 6, 2, [6, 0, 3]
    means, weights, kind = draw(rng, spec, "per-window", T, D, lengths, weight_mode)
    p32 = make_problem(spec, "per-window", means, weights, kind, lengths, D, T, np.float32)
    p64 = make_problem(spec, "per-window", p32.means.astype(np.float64),
                       None if weights is None else p32.weights.astype(np.float64),
                       kind, lengths, D, T)
    g = rng.standard_normal((3, T, D)).astype(np.float32)
    c = REF.forward(p32)
    gm, gw = REF.adjoint(p32, g)
    x = REF.solve(p32, g)
    assert c.dtype == np.float32 and gm.dtype == np.float32 and x.dtype == np.float32
    if weights is not None:
        assert gw.dtype == np.float32 and gw.shape == weights.shape
    np.testing.assert_allclose(c, REF.forward(p64), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x, REF.solve(p64, g.astype(np.float64)), rtol=1e-5, atol=1e-5)
    gm64, gw64 = REF.adjoint(p64, g.astype(np.float64))
    np.testing.assert_allclose(gm, gm64, rtol=1e-5, atol=1e-5)
    if weights is not None:
        np.testing.assert_allclose(gw, gw64, rtol=1e-4, atol=1e-5)


def _zeroed_frames_seen_by_reference(spec, boundary, n):
    """Per dynamic window, the frames where the reference's variance gradient
    is exactly 0 (it is nonzero almost surely elsewhere)."""
    rng = np.random.default_rng(5)
    D, L = 1, len(spec)
    means = rng.standard_normal((1, n, L * D))
    weights = rng.uniform(0.5, 2.0, (1, n, L * D))
    prob = make_problem(spec, boundary, means, weights, "variance", [n], D, n)
    _, gw = REF.adjoint(prob, rng.standard_normal((1, n, D)))
    return [sorted(np.flatnonzero(gw[0, :, l] == 0).tolist()) for l in range(1, L)]


def test_nnmnkwii_rule_delta_example():
    assert dropped(DELTA, "nnmnkwii", 1, 5) == [0, 4]
    assert _zeroed_frames_seen_by_reference(DELTA, "nnmnkwii", 5) == [[0, 4], [0, 4]]


def test_nnmnkwii_rule_uses_widest_window():
    spec = DELTA + [(2, 2, [0.1, -0.2, 0.4, -0.2, 0.1])]
    assert make_windows(spec).max_halfwidth == 2
    # K = 2 for every dynamic window, even the width-3 ones
    assert _zeroed_frames_seen_by_reference(spec, "nnmnkwii", 7) == [[0, 1, 5, 6]] * 3
    # per-window drops each window's own margins
    assert _zeroed_frames_seen_by_reference(spec, "per-window", 7) == [[0, 6], [0, 6], [0, 1, 5, 6]]
    assert _zeroed_frames_seen_by_reference(spec, "none", 7) == [[], [], []]


def test_per_window_rule_asymmetric():
    assert _zeroed_frames_seen_by_reference(ASYM, "per-window", 6) == [[0], [4, 5]]
    assert _zeroed_frames_seen_by_reference(ASYM, "nnmnkwii", 6) == [[0, 1, 4, 5]] * 2


def test_all_dynamic_dropped_when_sequence_short():
    # nnmnkwii with K = 4 and n = 5: every dynamic precision is zeroed, so the
    # result is just the static means
    rng = np.random.default_rng(2)
    means = rng.standard_normal((1, 5, 3))
    prob = make_problem(WIDE, "nnmnkwii", means, None, "variance", [5], 1, 5)
    np.testing.assert_allclose(REF.forward(prob)[0, :, 0], means[0, :, 0], rtol=1e-12)


def _singular_problems():
    yield make_problem(STATIC, "none", np.ones((1, 1, 1)), np.zeros((1, 1, 1)),
                       "precision", [1], 1, 1)
    yield make_problem(STATIC, "none", np.ones((1, 1, 1)), np.full((1, 1, 1), np.inf),
                       "variance", [1], 1, 1)
    # a static precision of 0 at one frame in the middle of a longer sequence
    p = np.ones((2, 4, 1))
    p[1, 2, 0] = 0.0
    yield make_problem(STATIC, "none", np.ones((2, 4, 1)), p, "precision", [4, 4], 1, 4)
    # no static information at all, only a delta whose boundary rows are
    # dropped: constants are in the null space (R has a positive diagonal)
    spec = [(0, 0, [1.0]), (1, 0, [-1.0, 1.0])]
    p = np.ones((1, 4, 2))
    p[0, :, 0] = 0.0
    yield make_problem(spec, "per-window", np.ones((1, 4, 2)), p, "precision", [4], 1, 4)


@pytest.mark.parametrize("k", range(4))
def test_singular_system_raises(k):
    prob = list(_singular_problems())[k]
    B, T = prob.batch_size, prob.n_frames
    g = np.ones((B, T, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
            REF.forward(prob)
        with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
            REF.adjoint(prob, g)
        with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
            REF.solve(prob, g)


def test_singular_message_names_frame_sequence_and_dimension():
    p = np.ones((2, 3, 2))
    p[1, 1, 1] = 0.0
    prob = make_problem(STATIC, "none", np.ones((2, 3, 2)), p, "precision", [3, 3], 2, 3)
    with pytest.raises(np.linalg.LinAlgError) as info:
        REF.forward(prob)
    msg = str(info.value)
    assert "t=1" in msg and "d=1" in msg and "b=1" in msg, msg


def test_no_warnings_leak():
    rng = np.random.default_rng(4)
    means, weights, kind = draw(rng, WIDE, "none", 12, 2, [12, 7, 0], "precision0")
    prob = make_problem(WIDE, "none", means, weights, kind, [12, 7, 0], 2, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        REF.forward(prob)
        REF.adjoint(prob, np.ones((3, 12, 2)))
        REF.solve(prob, np.ones((3, 12, 2)))


def test_all_lengths_zero():
    prob = make_problem(DELTA, "per-window", np.ones((2, 3, 3)), np.ones((2, 3, 3)),
                        "variance", [0, 0], 1, 3)
    assert np.all(REF.forward(prob) == 0)
    gm, gw = REF.adjoint(prob, np.ones((2, 3, 1)))
    assert np.all(gm == 0) and np.all(gw == 0)
    assert np.all(REF.solve(prob, np.ones((2, 3, 1))) == 0)


def test_metadata():
    assert REF.name == "reference"
    assert REF.array_module == "numpy"
    assert set(REF.operations) == {"forward", "adjoint", "solve"}
    assert "ground truth" in REF.description
    assert REF.availability() == (True, "")

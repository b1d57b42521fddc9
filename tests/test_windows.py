"""Tests for mlpgx/windows.py (window specs, presets, HTS files)."""
import copy
import dataclasses
import doctest
import importlib.util
import math
import pathlib
import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_PATH = pathlib.Path(__file__).resolve().parents[1] / "mlpgx" / "windows.py"


def _load():
    # Load the file directly: the package's compiled extension may not be built.
    name = "_mlpgx_windows_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


w = _load()
Window, WindowSet, as_windows = w.Window, w.WindowSet, w.as_windows

DELTA_TRIPLES = [(0, 0, np.array([1.0])), (1, 1, np.array([-0.5, 0.0, 0.5])),
                 (1, 1, np.array([1.0, -2.0, 1.0]))]


# --------------------------------------------------------------------------
# doctests
# --------------------------------------------------------------------------

def test_doctests():
    res = doctest.testmod(w, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 10
    assert res.failed == 0


def test_all_exports_exist():
    for name in w.__all__:
        assert hasattr(w, name)


# --------------------------------------------------------------------------
# Window
# --------------------------------------------------------------------------

def test_window_basic():
    win = Window(1, 1, np.array([-0.5, 0, 0.5]))
    assert win.coeffs == (-0.5, 0.0, 0.5)
    assert isinstance(win.coeffs, tuple)
    assert all(type(c) is float for c in win.coeffs)
    assert type(win.left) is int and type(win.right) is int
    assert win.width == 3
    a = win.as_array()
    assert a.dtype == np.float64 and not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1.0
    assert hash(win) == hash(Window(1, 1, [-0.5, 0.0, 0.5]))
    assert win == Window(np.int64(1), 1, (-0.5, 0, 0.5))


def test_window_frozen():
    win = Window(0, 0, [1.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        win.left = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        win.coeffs = (2.0,)


@pytest.mark.parametrize("args, exc", [
    ((True, 0, [1.0, 2.0]), TypeError),
    ((0, False, [1.0]), TypeError),
    ((1.0, 0, [1.0, 2.0]), TypeError),
    ((-1, 0, [1.0]), ValueError),
    ((0, 0, []), ValueError),
    ((0, 0, [1.0, 2.0]), ValueError),
    ((0, 0, [math.nan]), ValueError),
    ((0, 0, [math.inf]), ValueError),
    ((0, 0, ["1.0"]), TypeError),
    ((0, 0, "1"), TypeError),
    ((0, 0, [True]), TypeError),
    ((0, 0, 1.0), TypeError),
    ((0, 0, np.array([[1.0]])), ValueError),
    ((0, 0, np.array([1 + 0j])), TypeError),
])
def test_window_invalid(args, exc):
    with pytest.raises(exc, match="Window"):
        Window(*args)


# --------------------------------------------------------------------------
# accepted forms
# --------------------------------------------------------------------------

EQUIVALENT_DELTA = [
    "delta",
    "DELTA",
    " Delta ",
    [1, 1],
    (1, 1),
    np.array([1, 1]),
    DELTA_TRIPLES,
    [tuple(t) for t in DELTA_TRIPLES],
    [[0, 0, [1.0]], [1, 1, [-0.5, 0, 0.5]], [1, 1, (1, -2, 1)]],
    [[1.0], [-0.5, 0, 0.5], [1, -2, 1]],
    ((1,), (-0.5, 0.0, 0.5), (1.0, -2.0, 1.0)),
    [np.array([1.0]), np.array([-0.5, 0, 0.5]), np.array([1, -2, 1])],
    np.array([[0.0, 1.0, 0.0], [-0.5, 0, 0.5], [1, -2, 1]]),
    [(1, 1, [0, 1, 0]), [-0.5, 0, 0.5], (1, 1, [1, -2, 1])],
    [Window(0, 0, [1]), Window(1, 1, [-0.5, 0, 0.5]),
     Window(1, 1, [1, -2, 1])],
    [Window(2, 0, [0, 0, 1]), (1, 1, [-0.5, 0, 0.5]), [1, -2, 1]],
    iter([[1.0], [-0.5, 0, 0.5], [1, -2, 1]]),
]


@pytest.mark.parametrize("spec", EQUIVALENT_DELTA,
                         ids=[str(i) for i in range(len(EQUIVALENT_DELTA))])
def test_equivalent_forms(spec):
    ws = as_windows(spec)
    assert isinstance(ws, WindowSet)
    assert ws == w.DELTA
    assert hash(ws) == hash(w.DELTA)
    assert ws.windows == w.DELTA.windows
    assert ws[0] == Window(0, 0, (1.0,))


def test_windowset_passthrough():
    assert as_windows(w.DELTA) is w.DELTA
    ws = WindowSet([Window(0, 0, [1.0])])
    assert as_windows(ws) is ws


def test_presets():
    assert as_windows("static") is w.STATIC
    assert as_windows("Delta1") is w.DELTA1
    assert as_windows("delta") is w.DELTA
    assert w.STATIC.windows == (Window(0, 0, (1.0,)),)
    assert w.DELTA1 == as_windows([[1], [-0.5, 0, 0.5]])
    assert w.DELTA1 == as_windows([1])
    assert w.STATIC == as_windows([[1]])
    assert len(w.DELTA) == 3
    assert [x.coeffs for x in w.DELTA] == [(1.0,), (-0.5, 0.0, 0.5),
                                          (1.0, -2.0, 1.0)]
    for ws in (w.STATIC, w.DELTA, w.DELTA1):
        assert isinstance(ws, WindowSet)


def test_static_normalised():
    for spec in ([[0, 1, 0]], [(1, 1, [0, 1, 0])], [(2, 0, [0.0, 0.0, 1.0])],
                 [(0, 3, [1, 0, 0, 0])], [[0, 1]]):
        ws = as_windows(spec)
        assert ws == w.STATIC
        assert ws[0].left == 0 and ws[0].right == 0
    ws = WindowSet([Window(1, 1, [0, 1, 0]), Window(1, 0, [1, -1])])
    assert ws[0] == Window(0, 0, (1.0,))
    assert ws[1] == Window(1, 0, (1.0, -1.0))


@pytest.mark.parametrize("n", range(1, 9))
def test_placement(n):
    coeffs = [float(j + 1) for j in range(n)]
    win = as_windows([[1.0], coeffs])[1]
    assert win.left + win.right + 1 == n
    if n % 2:
        assert win.left == win.right == n // 2
    else:
        assert win.left == n // 2 and win.right == n // 2 - 1
    assert win.coeffs == tuple(coeffs)


def test_even_length_two():
    ws = as_windows([[1], [1, -1]])
    assert ws[1] == Window(1, 0, (1.0, -1.0))


def test_asymmetric_extents():
    ws = as_windows([[1], [1, -1], [0.2, 0.3, 0, -0.3, -0.2, 0.1, 0.0],
                     (0, 2, [1, 2, 3]), (4, 0, [1, 0, 0, 0, 0])])
    assert [(x.left, x.right) for x in ws] == [(0, 0), (1, 0), (3, 3), (0, 2),
                                               (4, 0)]
    assert ws.max_left == 4
    assert ws.max_right == 3
    assert ws.bandwidth == 6
    assert ws.max_halfwidth == 4
    ws2 = as_windows([[1], (0, 2, [1, 2, 3]), (1, 0, [1, 2])])
    assert ws2.max_left == 1
    assert ws2.max_right == 2
    assert ws2.bandwidth == 2
    assert ws2.max_halfwidth == 2
    assert w.STATIC.bandwidth == 0 and w.STATIC.max_halfwidth == 0
    assert w.DELTA.max_left == w.DELTA.max_right == 1
    assert w.DELTA.bandwidth == 2 and w.DELTA.max_halfwidth == 1


# --------------------------------------------------------------------------
# WindowSet behaviour
# --------------------------------------------------------------------------

def test_sequence_protocol():
    ws = w.DELTA
    assert len(ws) == 3
    assert ws[-1] == Window(1, 1, (1.0, -2.0, 1.0))
    assert ws[np.int64(1)] == Window(1, 1, (-0.5, 0.0, 0.5))
    assert ws[1:] == ws.windows[1:]
    assert isinstance(ws[1:], tuple)
    assert list(ws) == list(ws.windows)
    assert Window(1, 1, (-0.5, 0.0, 0.5)) in ws
    assert ws.index(Window(1, 1, (1.0, -2.0, 1.0))) == 2
    with pytest.raises(IndexError):
        ws[3]
    with pytest.raises(TypeError):
        ws["a"]
    with pytest.raises(TypeError):
        ws[True]


def test_immutability_and_hash():
    ws = as_windows("delta")
    with pytest.raises(AttributeError):
        ws._windows = ()
    with pytest.raises(AttributeError):
        ws.foo = 1
    with pytest.raises(AttributeError):
        del ws._windows
    with pytest.raises(AttributeError):
        ws.windows = ()
    assert isinstance(ws.windows, tuple)
    assert isinstance(ws[1].coeffs, tuple)
    d = {w.DELTA: "x"}
    assert d[as_windows([1, 1])] == "x"
    assert len({w.DELTA, as_windows("delta"), w.DELTA1, w.STATIC}) == 3
    assert w.DELTA != w.DELTA1
    assert not (w.DELTA == w.DELTA.windows)
    assert w.DELTA != list(w.DELTA)


def test_pickle_copy():
    for ws in (w.STATIC, w.DELTA, as_windows([[1], [1, -1]])):
        assert pickle.loads(pickle.dumps(ws)) == ws
        assert copy.deepcopy(ws) == ws
        assert copy.copy(ws) == ws


def test_repr():
    assert repr(w.DELTA) == ("WindowSet([(0, 0, [1.0]), (1, 1, [-0.5, 0.0, 0.5]),"
                             " (1, 1, [1.0, -2.0, 1.0])])")
    assert repr(w.STATIC) == "WindowSet([(0, 0, [1.0])])"


def test_to_nnmnkwii_round_trip():
    ws = as_windows([[1], [1, -1], [0.2, 0.3, 0, -0.3, -0.2, 0.1, 0.0]])
    triples = ws.to_nnmnkwii()
    assert isinstance(triples, list)
    for (l, r, c), win in zip(triples, ws):
        assert (l, r) == (win.left, win.right)
        assert isinstance(c, np.ndarray) and c.dtype == np.float64
        np.testing.assert_array_equal(c, win.coeffs)
    assert as_windows(triples) == ws
    triples[1][2][0] = 99.0  # copies: the set is unaffected
    assert ws[1].coeffs == (1.0, -1.0)
    out = w.DELTA.to_nnmnkwii()
    for (l, r, c), (l2, r2, c2) in zip(out, DELTA_TRIPLES):
        assert (l, r) == (l2, r2)
        np.testing.assert_array_equal(c, c2)


def test_windowset_constructor_errors():
    with pytest.raises(ValueError, match="windows"):
        WindowSet([])
    with pytest.raises(TypeError, match=r"windows\[1\]"):
        WindowSet([Window(0, 0, [1]), (1, 1, [-0.5, 0, 0.5])])
    with pytest.raises(TypeError, match="windows"):
        WindowSet(3)
    with pytest.raises(TypeError, match="windows"):
        WindowSet("delta")
    with pytest.raises(ValueError, match=r"windows\[0\] must be the static"):
        WindowSet([Window(1, 1, [-0.5, 0, 0.5])])


# --------------------------------------------------------------------------
# regression windows
# --------------------------------------------------------------------------

def _sptk_order1(n):
    j = np.arange(-n, n + 1, dtype=float)
    return j / np.sum(j ** 2)


def _sptk_order2(n):
    j = np.arange(-n, n + 1, dtype=float)
    a0 = 2 * n + 1
    a1 = np.sum(j ** 2)
    a2 = np.sum(j ** 4)
    return 2 * (a0 * j ** 2 - a1) / (a2 * a0 - a1 ** 2)


@pytest.mark.parametrize("n1", [1, 2, 3, 4])
@pytest.mark.parametrize("n2", [1, 2, 3, 4])
def test_regression_matches_sptk(n1, n2):
    ws = w.regression([n1, n2])
    assert len(ws) == 3
    assert ws[0] == Window(0, 0, (1.0,))
    assert (ws[1].left, ws[1].right) == (n1, n1)
    assert (ws[2].left, ws[2].right) == (n2, n2)
    np.testing.assert_allclose(ws[1].coeffs, _sptk_order1(n1), rtol=1e-14,
                               atol=1e-15)
    np.testing.assert_allclose(ws[2].coeffs, _sptk_order2(n2), rtol=1e-14,
                               atol=1e-15)
    assert as_windows([n1, n2]) == ws


def test_regression_width1_exact():
    ws = w.regression([1, 1])
    assert ws[1].coeffs == (-0.5, 0.0, 0.5)
    assert ws[2].coeffs == (1.0, -2.0, 1.0)
    assert ws == w.DELTA
    # offset 0 of odd-order windows is exactly zero
    for n in range(1, 6):
        assert w.regression([n])[1].coeffs[n] == 0.0


def test_regression_matches_pinv():
    for widths in ([1, 1], [2, 3, 2], [3, 2, 4, 3]):
        ws = w.regression(widths)
        for i, n in enumerate(widths, start=1):
            j = np.arange(-n, n + 1, dtype=float)
            V = j[:, None] ** np.arange(i + 1)[None, :]
            ref = math.factorial(i) * np.linalg.pinv(V)[i]
            np.testing.assert_allclose(ws[i].coeffs, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("widths", [[1, 1, 2], [2, 2, 2], [3, 1, 4],
                                    [1, 2, 3, 2], [2, 2, 3, 3, 4]])
def test_regression_defining_property(widths):
    # sum_j coef_j * j**m == order! if m == order else 0, for m <= order
    ws = w.regression(widths)
    for order, n in enumerate(widths, start=1):
        coeffs = np.array(ws[order].coeffs)
        j = np.arange(-n, n + 1, dtype=float)
        for m in range(order + 1):
            moment = np.sum(coeffs * j ** m)
            expected = math.factorial(order) if m == order else 0.0
            assert moment == pytest.approx(expected, abs=1e-10)


def test_regression_order3_needs_width2():
    with pytest.raises(ValueError, match=r"widths\[2\].*too small"):
        w.regression([1, 1, 1])
    with pytest.raises(ValueError, match=r"windows\[2\].*too small"):
        as_windows([1, 1, 1])
    w.regression([1, 1, 2])


@pytest.mark.parametrize("widths, exc", [
    ([], ValueError),
    ([0], ValueError),
    ([-1], ValueError),
    ([1.0], TypeError),
    ([True], TypeError),
    (1, TypeError),
    ("11", TypeError),
    ([1, "1"], TypeError),
    ([1, 2**40], ValueError),     # (used to hang: exact coefficients cost O(width))
    ([w.MAX_REGRESSION_WIDTH + 1], ValueError),
])
def test_regression_invalid(widths, exc):
    with pytest.raises(exc, match="widths"):
        w.regression(widths)


# --------------------------------------------------------------------------
# invalid specs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("spec, exc, pattern", [
    ([], ValueError, r"^windows"),
    ((), ValueError, r"^windows"),
    (None, TypeError, r"^windows"),
    (1, TypeError, r"^windows"),
    (1.5, TypeError, r"^windows"),
    (b"delta", TypeError, r"^windows"),
    ({"a": 1}, TypeError, r"^windows"),
    ({1, 2}, TypeError, r"^windows"),
    (np.float64(1.0), TypeError, r"^windows"),
    (np.array(1), TypeError, r"^windows"),
    ("deltas", ValueError, r"^windows.*unknown preset"),
    ("", ValueError, r"^windows.*unknown preset"),
    ([True], TypeError, r"^windows\[0\]"),
    ([1, True], TypeError, r"^windows\[1\]"),
    ([np.bool_(True)], TypeError, r"^windows\[0\]"),
    (["delta"], TypeError, r"^windows\[0\]"),
    ([[1.0], "abc"], TypeError, r"^windows\[1\]"),
    ([[1.0], None], TypeError, r"^windows\[1\]"),
    ([[1.0], 2.5], TypeError, r"^windows\[1\]"),
    ([1.0, 2.0], TypeError, r"^windows\[0\]"),
    ([[1.0], []], ValueError, r"^windows\[1\].*empty"),
    ([[]], ValueError, r"^windows\[0\].*empty"),
    ([[1.0], [0.5, math.nan, 0.5]], ValueError, r"^windows\[1\].*finite"),
    ([[1.0], [0.5, math.inf, 0.5]], ValueError, r"^windows\[1\].*finite"),
    ([[1.0], np.array([0.5, np.nan, 0.5])], ValueError, r"^windows\[1\].*finite"),
    ([[1.0], [1e400, 0.0, 1.0]], ValueError, r"^windows\[1\].*finite"),
    ([[1.0], [10 ** 400, 0, 1]], ValueError, r"^windows\[1\].*finite"),
    ([[1.0], [[1.0, 2.0], [3.0]]], TypeError, r"^windows\[1\]"),
    ([[1.0], [1.0, [2.0], 3.0, 4.0]], TypeError, r"^windows\[1\]"),
    ([[1.0], ["1", "2", "3", "4"]], TypeError, r"^windows\[1\]"),
    ([[1.0], [True, False, True, False]], TypeError, r"^windows\[1\]"),
    ([[1.0], np.array([[1.0, 2.0, 3.0]])], ValueError, r"^windows\[1\]"),
    ([[1.0], np.array(["a", "b"])], TypeError, r"^windows\[1\]"),
    ([[1.0], np.array([True, False])], TypeError, r"^windows\[1\]"),
    ([[1.0], np.array([1j, 0, 1])], TypeError, r"^windows\[1\]"),
    ([[1.0], {1.0, 2.0}], TypeError, r"^windows\[1\]"),
    ([[1.0], (1, 1, [1.0, 2.0])], ValueError, r"^windows\[1\].*3 coefficients"),
    ([[1.0], (1, 0, [1.0, 2.0, 3.0])], ValueError, r"^windows\[1\].*coefficients"),
    ([[1.0], (-1, 2, [1.0, 2.0])], ValueError, r"^windows\[1\].*left.*>= 0"),
    ([[1.0], (1, -1, [1.0])], ValueError, r"^windows\[1\].*right.*>= 0"),
    ([[1.0], (1.0, 1, [1.0, 2.0, 3.0])], TypeError, r"^windows\[1\].*left.*int"),
    ([[1.0], (1, 1.5, [1.0, 2.0, 3.0])], TypeError, r"^windows\[1\].*right.*int"),
    ([[1.0], (True, 1, [1.0, 2.0, 3.0])], TypeError, r"^windows\[1\].*left"),
    ([[1.0], ("1", 1, [1.0, 2.0, 3.0])], TypeError, r"^windows\[1\].*left"),
    ([[1.0], (1, 1, "abc")], TypeError, r"^windows\[1\]"),
    ([[1.0], (1, 1, [1.0, "x", 2.0])], TypeError, r"^windows\[1\]"),
    ([[1.0], 1], TypeError, r"^windows.*mix"),
    ([1, [1.0]], TypeError, r"^windows.*mix"),
    ([1, 0], ValueError, r"^windows\[1\]"),
    ([-0.5, 0, 0.5], TypeError, r"^windows\[0\]"),
    # static window not first
    ([[-0.5, 0, 0.5], [1.0]], ValueError, r"^windows\[0\] must be the static"),
    ([[2.0]], ValueError, r"^windows\[0\] must be the static"),
    ([[0.0]], ValueError, r"^windows\[0\] must be the static"),
    ([[1, 0, 0]], ValueError, r"^windows\[0\] must be the static"),
    ([[0, 1, 0.1]], ValueError, r"^windows\[0\] must be the static"),
    ([(0, 1, [0.0, 1.0])], ValueError, r"^windows\[0\] must be the static"),
    ([Window(1, 1, [1, -2, 1])], ValueError, r"^windows\[0\] must be the static"),
])
def test_invalid_specs(spec, exc, pattern):
    with pytest.raises(exc, match=pattern):
        as_windows(spec)


def test_static_error_message_text():
    with pytest.raises(ValueError) as info:
        as_windows([[-0.5, 0, 0.5]])
    msg = str(info.value)
    assert msg.startswith("windows[0] must be the static window [1.0] "
                          "(coefficient 1 at offset 0, zeros elsewhere); got")
    assert "-0.5" in msg


# --------------------------------------------------------------------------
# inputs not modified
# --------------------------------------------------------------------------

def test_inputs_not_modified():
    arrays = [np.array([0.0, 1.0, 0.0]), np.array([-0.5, 0.0, 0.5]),
              np.array([1.0, -2.0, 1.0])]
    triples = [(1, 1, arrays[0]), (1, 1, arrays[1]), (1, 1, arrays[2])]
    backup = [a.copy() for a in arrays]
    ws = as_windows(triples)
    assert ws == w.DELTA
    for a, b in zip(arrays, backup):
        np.testing.assert_array_equal(a, b)
        assert a.flags.writeable
    assert triples[0][2] is arrays[0]
    # the set does not alias the caller's arrays
    arrays[1][0] = 42.0
    assert ws[1].coeffs == (-0.5, 0.0, 0.5)

    lists = [[1.0], [-0.5, 0, 0.5], [1, -2, 1]]
    snapshot = copy.deepcopy(lists)
    as_windows(lists)
    assert lists == snapshot
    widths = [2, 1]
    w.regression(widths)
    as_windows(widths)
    assert widths == [2, 1]
    mat = np.array([[0.0, 1.0, 0.0], [-0.5, 0, 0.5]])
    mat_copy = mat.copy()
    as_windows(mat)
    np.testing.assert_array_equal(mat, mat_copy)


# --------------------------------------------------------------------------
# HTS window files
# --------------------------------------------------------------------------

def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_hts_delta(tmp_path):
    paths = [_write(tmp_path, "mgc.win1", "1 1.0\n"),
             _write(tmp_path, "mgc.win2", "3 -0.5 0.0 0.5\n"),
             _write(tmp_path, "mgc.win3", "3 1.0 -2.0 1.0\n")]
    assert w.from_hts_files(paths) == w.DELTA
    assert w.from_hts_files([str(p) for p in paths]) == w.DELTA
    assert w.from_hts_files(iter(paths)) == w.DELTA
    assert w.from_hts_files(paths[:1]) == w.STATIC


def test_hts_byte_order_mark(tmp_path):
    # a UTF-8 byte-order mark (Windows editors write one) is not part of the count
    p = tmp_path / "mgc.win2"
    p.write_bytes(b"\xef\xbb\xbf3 -0.5 0.0 0.5\n")
    ws = w.from_hts_files([_write(tmp_path, "mgc.win1", "1 1.0"), p])
    assert ws[1] == Window(1, 1, (-0.5, 0.0, 0.5))


def test_hts_layout_and_even(tmp_path):
    paths = [_write(tmp_path, "w1", "  3\n0 1 0\n"),
             _write(tmp_path, "w2", "2\t1.0\n-1.0"),
             _write(tmp_path, "w3", "5 0.2 0.1 0 -0.1 -0.2"),
             _write(tmp_path, "w4", "4 1e-1 2E-1 -3 4")]
    ws = w.from_hts_files(paths)
    assert ws[0] == Window(0, 0, (1.0,))
    assert ws[1] == Window(1, 0, (1.0, -1.0))
    assert ws[2] == Window(2, 2, (0.2, 0.1, 0.0, -0.1, -0.2))
    assert ws[3] == Window(2, 1, (0.1, 0.2, -3.0, 4.0))


@pytest.mark.parametrize("text, pattern", [
    ("", "empty"),
    ("   \n\t", "empty"),
    ("3.0 -0.5 0.0 0.5", "integer coefficient count"),
    ("x -0.5 0.0 0.5", "integer coefficient count"),
    ("3 -0.5 0.0", "count says 3 coefficients but 2 follow"),
    ("3 -0.5 0.0 0.5 0.7", "count says 3 coefficients but 4 follow"),
    ("2", "count says 2 coefficients but 0 follow"),
    ("0", "count must be >= 1"),
    ("-1 1.0", "count must be >= 1"),
    ("3 -0.5 abc 0.5", "not a number"),
    ("3 -0.5 nan 0.5", "finite"),
    ("3 -0.5 inf 0.5", "finite"),
    ("3 -0.5 1_0 0.5", "not a number"),        # Python's float() reads 10
    ("3 -0.5 0 \uff11", "not a number"),       # a full-width digit
    ("\uff13 -0.5 0 0.5", "integer coefficient count"),
    ("3 -0.5 0x1 0.5", "not a number"),
])
def test_hts_bad_files(tmp_path, text, pattern):
    static = _write(tmp_path, "win1", "1 1.0")
    bad = _write(tmp_path, "bad.win", text)
    with pytest.raises(ValueError, match=pattern) as info:
        w.from_hts_files([static, bad])
    assert str(bad) in str(info.value)
    assert "paths[1]" in str(info.value)


def test_hts_binary_file(tmp_path):
    static = _write(tmp_path, "win1", "1 1.0")
    bad = tmp_path / "bin.win"
    bad.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="bin.win"):
        w.from_hts_files([static, bad])


def test_hts_static_not_first(tmp_path):
    p = _write(tmp_path, "mgc.win2", "3 -0.5 0.0 0.5")
    q = _write(tmp_path, "mgc.win1", "1 1.0")
    with pytest.raises(ValueError, match=r"^windows\[0\].*must be the static") as info:
        w.from_hts_files([p, q])
    assert str(p) in str(info.value)
    # padded static is fine
    r = _write(tmp_path, "padded", "3 0 1 0")
    assert w.from_hts_files([r]) == w.STATIC


def test_hts_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        w.from_hts_files([tmp_path / "missing.win"])
    with pytest.raises(ValueError, match="paths"):
        w.from_hts_files([])
    with pytest.raises(TypeError, match="paths"):
        w.from_hts_files(str(tmp_path / "mgc.win1"))
    with pytest.raises(TypeError, match="paths"):
        w.from_hts_files(tmp_path / "mgc.win1")
    with pytest.raises(TypeError, match=r"paths\[0\]"):
        w.from_hts_files([1])
    with pytest.raises(TypeError, match="paths"):
        w.from_hts_files(None)


# --------------------------------------------------------------------------
# property-based round trip
# --------------------------------------------------------------------------

_coef = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False,
                  allow_infinity=False)


@st.composite
def _triples(draw):
    out = [(0, 0, [1.0])]
    for _ in range(draw(st.integers(0, 4))):
        left = draw(st.integers(0, 4))
        right = draw(st.integers(0, 4))
        coeffs = draw(st.lists(_coef, min_size=left + right + 1,
                               max_size=left + right + 1))
        out.append((left, right, coeffs))
    return out


@settings(max_examples=200, deadline=None)
@given(_triples(), st.booleans())
def test_round_trip_triples(triples, as_arrays):
    spec = [(l, r, np.array(c) if as_arrays else list(c))
            for l, r, c in triples]
    ws = as_windows(spec)
    assert len(ws) == len(triples)
    for win, (l, r, c) in zip(ws, triples):
        assert (win.left, win.right) == (l, r)
        assert win.coeffs == tuple(float(x) for x in c)
    assert as_windows(ws.to_nnmnkwii()) == ws
    assert hash(as_windows(ws.to_nnmnkwii())) == hash(ws)
    assert as_windows(list(ws)) == ws
    assert WindowSet(ws) == ws
    assert ws.max_left == max(l for l, _, _ in triples)
    assert ws.max_right == max(r for _, r, _ in triples)
    assert ws.bandwidth == max(l + r for l, r, _ in triples)
    assert ws.max_halfwidth == max(max(l, r) for l, r, _ in triples)
    assert pickle.loads(pickle.dumps(ws)) == ws


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(_coef, min_size=1, max_size=9), max_size=4))
def test_round_trip_bare_coefficients(dyn):
    ws = as_windows([[1.0]] + dyn)
    for win, c in zip(ws[1:], dyn):
        n = len(c)
        assert (win.left, win.right) == (n // 2, n - 1 - n // 2)
        assert win.coeffs == tuple(c)
        again = as_windows([[1.0], (win.left, win.right, c)])
        assert again[1] == win

"""Window specifications: parse, validate, presets and HTS window files.

A *window* describes one feature stream of the MLPG observation vector.  Window
``w`` with extents ``left`` and ``right`` and coefficients ``coeffs`` maps a
static trajectory ``c`` to

    ``(W c)[t] = sum_{j=0}^{n-1} coeffs[j] * c[t - left + j]``,
    ``n = left + right + 1``,

so ``coeffs[left]`` multiplies the current frame.  A :class:`WindowSet` is an
immutable, hashable sequence of windows whose first entry is the static window
``[1.0]``.  :func:`as_windows` is the single parser that every public function
of :mod:`mlpgx` uses to turn a user's window specification into a
:class:`WindowSet`.

This module depends only on NumPy and the standard library.
"""
from __future__ import annotations

import collections.abc
import math
import numbers
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Sequence, Union

import numpy as np

__all__ = [
    "Window",
    "WindowSet",
    "as_windows",
    "regression",
    "from_hts_files",
    "STATIC",
    "DELTA",
    "DELTA1",
    "PRESETS",
]


# --------------------------------------------------------------------------
# small validation helpers (messages always start with ``where``)
# --------------------------------------------------------------------------

def _is_bool(x) -> bool:
    return isinstance(x, (bool, np.bool_))


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not _is_bool(x)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not _is_bool(x)


def _describe(x) -> str:
    """A short description of ``x`` for error messages."""
    text = repr(x)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(x).__name__} {text}"


def _check_extent(value, name: str, where: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{where}: {name} must be an int >= 0, got {_describe(value)}")
    value = int(value)
    if value < 0:
        raise ValueError(f"{where}: {name} must be >= 0, got {value}")
    return value


def _check_coeffs(coeffs, where: str) -> tuple:
    """Coefficients as a non-empty tuple of finite Python floats."""
    if isinstance(coeffs, np.ndarray):
        if coeffs.ndim != 1:
            raise ValueError(
                f"{where}: coefficients must be a 1-D sequence of numbers, "
                f"got an array of shape {coeffs.shape}")
        if coeffs.dtype.kind not in "iuf":
            raise TypeError(
                f"{where}: coefficients must be real numbers, got an array of "
                f"dtype {coeffs.dtype}")
        items = coeffs.tolist()
    elif isinstance(coeffs, (str, bytes)) or not isinstance(
            coeffs, collections.abc.Sequence):
        raise TypeError(
            f"{where}: coefficients must be a sequence of numbers, got "
            f"{_describe(coeffs)}")
    else:
        items = list(coeffs)
        for j, x in enumerate(items):
            if not _is_real(x):
                raise TypeError(
                    f"{where}: coefficient {j} must be a real number, got "
                    f"{_describe(x)}")
    if not items:
        raise ValueError(f"{where}: coefficients must not be empty")
    out = []
    for j, x in enumerate(items):
        try:
            v = float(x)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            raise ValueError(
                f"{where}: coefficients must be finite, coefficient {j} is {x!r}")
        out.append(v)
    return tuple(out)


def _validated(left, right, coeffs, where: str):
    left = _check_extent(left, "left", where)
    right = _check_extent(right, "right", where)
    coeffs = _check_coeffs(coeffs, where)
    if len(coeffs) != left + right + 1:
        raise ValueError(
            f"{where}: expected left + right + 1 = {left + right + 1} "
            f"coefficients (left={left}, right={right}), got {len(coeffs)}")
    return left, right, coeffs


def _centred_extents(n: int):
    """``(left, right)`` for ``n`` coefficients: odd centred, even extra left."""
    return n // 2, n - 1 - n // 2


# --------------------------------------------------------------------------
# Window
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """One window: a finite impulse response over neighbouring frames.

    ``(W c)[t] = sum_j coeffs[j] * c[t - left + j]`` for
    ``j = 0, ..., left + right``.

    Parameters
    ----------
    left : int
        Number of frames before ``t`` the window reaches (``>= 0``).
    right : int
        Number of frames after ``t`` the window reaches (``>= 0``).
    coeffs : sequence of float
        ``left + right + 1`` finite coefficients; stored as a tuple of Python
        floats.

    Raises
    ------
    TypeError
        If an extent is not an int (bools are rejected) or a coefficient is
        not a real number.
    ValueError
        If an extent is negative, the coefficient count is not
        ``left + right + 1`` or a coefficient is not finite.

    Examples
    --------
    >>> w = Window(1, 1, [-0.5, 0, 0.5])
    >>> w
    Window(left=1, right=1, coeffs=(-0.5, 0.0, 0.5))
    >>> w.width
    3
    >>> w.as_array()
    array([-0.5,  0. ,  0.5])
    """

    left: int
    right: int
    coeffs: tuple

    def __post_init__(self):
        left, right, coeffs = _validated(self.left, self.right, self.coeffs,
                                         "Window")
        object.__setattr__(self, "left", left)
        object.__setattr__(self, "right", right)
        object.__setattr__(self, "coeffs", coeffs)

    @property
    def width(self) -> int:
        """Number of coefficients, ``left + right + 1``.

        Examples
        --------
        >>> Window(2, 0, [1.0, -2.0, 1.0]).width
        3
        """
        return self.left + self.right + 1

    def as_array(self) -> np.ndarray:
        """The coefficients as a new read-only float64 array.

        Examples
        --------
        >>> a = Window(1, 1, [1, -2, 1]).as_array()
        >>> a, a.dtype, a.flags.writeable
        (array([ 1., -2.,  1.]), dtype('float64'), False)
        """
        a = np.array(self.coeffs, dtype=np.float64)
        a.flags.writeable = False
        return a


_STATIC_WINDOW = Window(0, 0, (1.0,))


def _is_static(w: Window) -> bool:
    return w.coeffs[w.left] == 1.0 and all(
        c == 0.0 for j, c in enumerate(w.coeffs) if j != w.left)


def _static_error(w: Window, where: str = "windows[0]") -> ValueError:
    return ValueError(
        f"{where} must be the static window [1.0] (coefficient 1 at offset 0, "
        f"zeros elsewhere); got (left={w.left}, right={w.right}, "
        f"coeffs={list(w.coeffs)})")


# --------------------------------------------------------------------------
# WindowSet
# --------------------------------------------------------------------------

class WindowSet(collections.abc.Sequence):
    """An immutable, hashable sequence of windows, the static window first.

    Parameters
    ----------
    windows : iterable of Window
        At least one window.  The first must be the static window: a unit
        impulse at offset 0.  A zero-padded static window such as
        ``Window(1, 1, [0, 1, 0])`` is accepted and normalised to
        ``Window(0, 0, (1.0,))``.  To build a set from other forms (triples,
        coefficient lists, regression widths, preset names) use
        :func:`as_windows`.

    Raises
    ------
    TypeError
        If ``windows`` is not an iterable of :class:`Window`.
    ValueError
        If ``windows`` is empty or its first window is not the static window.

    Examples
    --------
    >>> ws = WindowSet([Window(0, 0, [1.0]), Window(1, 1, [-0.5, 0.0, 0.5])])
    >>> ws
    WindowSet([(0, 0, [1.0]), (1, 1, [-0.5, 0.0, 0.5])])
    >>> len(ws), ws.bandwidth, ws[1].coeffs
    (2, 2, (-0.5, 0.0, 0.5))
    >>> ws == as_windows([[1], [-0.5, 0, 0.5]])
    True
    """

    # (the extents are computed once: the validation layer asks for them on
    # every call)
    __slots__ = ("_windows", "_hash", "_extents")

    def __init__(self, windows: Iterable[Window]):
        if isinstance(windows, (str, bytes)) or not isinstance(
                windows, collections.abc.Iterable):
            raise TypeError(
                f"windows must be an iterable of Window, got {_describe(windows)}"
                "; use as_windows() to parse other window specifications")
        items = tuple(windows)
        if not items:
            raise ValueError("windows must contain at least one window "
                             "(the static window [1.0])")
        for i, w in enumerate(items):
            if not isinstance(w, Window):
                raise TypeError(
                    f"windows[{i}] must be a Window, got {_describe(w)}; use "
                    "as_windows() to parse other window specifications")
        if not _is_static(items[0]):
            raise _static_error(items[0])
        items = (_STATIC_WINDOW,) + items[1:]
        object.__setattr__(self, "_windows", items)
        object.__setattr__(self, "_hash", hash(items))
        object.__setattr__(self, "_extents", (
            max(w.left for w in items), max(w.right for w in items),
            max(w.left + w.right for w in items), max(max(w.left, w.right) for w in items)))

    # immutability -------------------------------------------------------
    def __setattr__(self, name, value):
        raise AttributeError(f"WindowSet is immutable; cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"WindowSet is immutable; cannot delete {name!r}")

    def __reduce__(self):
        return (WindowSet, (self._windows,))

    # sequence protocol --------------------------------------------------
    def __len__(self) -> int:
        return len(self._windows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._windows[index]
        if _is_bool(index):
            raise TypeError("WindowSet indices must be integers or slices, "
                            "not bool")
        return self._windows[index]

    def __iter__(self):
        return iter(self._windows)

    def __eq__(self, other):
        if isinstance(other, WindowSet):
            return self._windows == other._windows
        return NotImplemented

    def __ne__(self, other):
        if isinstance(other, WindowSet):
            return self._windows != other._windows
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        body = ", ".join(f"({w.left}, {w.right}, {list(w.coeffs)!r})"
                         for w in self._windows)
        return f"WindowSet([{body}])"

    # properties ---------------------------------------------------------
    @property
    def windows(self) -> tuple:
        """The windows as a tuple of :class:`Window`.

        Examples
        --------
        >>> DELTA1.windows
        (Window(left=0, right=0, coeffs=(1.0,)), Window(left=1, right=1, coeffs=(-0.5, 0.0, 0.5)))
        """
        return self._windows

    @property
    def max_left(self) -> int:
        """Largest ``left`` extent over the windows.

        Examples
        --------
        >>> as_windows([[1], [1, -1]]).max_left
        1
        """
        return self._extents[0]

    @property
    def max_right(self) -> int:
        """Largest ``right`` extent over the windows.

        Examples
        --------
        >>> as_windows([[1], [1, -1]]).max_right
        0
        """
        return self._extents[1]

    @property
    def bandwidth(self) -> int:
        """Half-bandwidth ``k`` of ``R = sum_l W_l^T P_l W_l``.

        The largest ``left + right`` over the windows.

        Examples
        --------
        >>> DELTA.bandwidth
        2
        """
        return self._extents[2]

    @property
    def max_halfwidth(self) -> int:
        """Largest ``max(left, right)`` over the windows.

        This is nnmnkwii's boundary margin ``K``.

        Examples
        --------
        >>> as_windows([(0, 0, [1.0]), (2, 1, [1, 2, 3, 4])]).max_halfwidth
        2
        """
        return self._extents[3]

    def to_nnmnkwii(self) -> list:
        """The windows in nnmnkwii's ``[(left, right, coeffs), ...]`` form.

        Returns
        -------
        list of tuple
            ``(left, right, ndarray)`` triples; the arrays are new, writable
            float64 copies.

        Examples
        --------
        >>> DELTA1.to_nnmnkwii()
        [(0, 0, array([1.])), (1, 1, array([-0.5,  0. ,  0.5]))]
        >>> as_windows(DELTA.to_nnmnkwii()) == DELTA
        True
        """
        return [(w.left, w.right, np.array(w.coeffs, dtype=np.float64))
                for w in self._windows]


# --------------------------------------------------------------------------
# regression windows
# --------------------------------------------------------------------------

def _regression_coeffs(width: int, order: int) -> tuple:
    """``order! * pinv(V)[order]`` for offsets ``-width..width``, exactly.

    ``V[j, k] = j**k`` (``k = 0..order``).  The normal equations are solved in
    rational arithmetic, so the result is the correctly rounded value of the
    exact least-squares derivative filter.
    """
    offsets = range(-width, width + 1)
    m = order + 1
    # Gram matrix G[a][b] = sum_j j^(a+b), and solve G x = e_order.
    moments = [sum(Fraction(j) ** p for j in offsets) for p in range(2 * m - 1)]
    a = [[moments[r + c] for c in range(m)] + [Fraction(int(r == order))]
         for r in range(m)]
    for col in range(m):                      # Gauss-Jordan, exact
        piv = next(r for r in range(col, m) if a[r][col] != 0)
        a[col], a[piv] = a[piv], a[col]
        p = a[col][col]
        a[col] = [v / p for v in a[col]]
        for r in range(m):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [v - f * u for v, u in zip(a[r], a[col])]
    x = [a[r][m] for r in range(m)]
    fact = math.factorial(order)
    out = []
    for j in offsets:
        v = fact * sum(xk * Fraction(j) ** k for k, xk in enumerate(x))
        out.append(float(v))
    top = max(abs(v) for v in out)
    # exact arithmetic already gives exact zeros; keep the guard anyway
    return tuple(0.0 if abs(v) < 1e-15 * top else v for v in out)


#: The widest regression window :func:`regression` builds (each side).
MAX_REGRESSION_WIDTH = 10_000


def _regression(widths, name: str) -> WindowSet:
    if isinstance(widths, (str, bytes)) or not isinstance(
            widths, (collections.abc.Sequence, np.ndarray)):
        raise TypeError(
            f"{name} must be a sequence of int regression widths (one per "
            f"dynamic window), got {_describe(widths)}")
    widths = list(widths)
    if not widths:
        raise ValueError(f"{name} must contain at least one regression width")
    windows = [_STATIC_WINDOW]
    for i, n in enumerate(widths):
        order = i + 1
        where = f"{name}[{i}]"
        if not _is_int(n):
            raise TypeError(
                f"{where}: a regression width must be an int >= 1, got "
                f"{_describe(n)}")
        n = int(n)
        if n < 1:
            raise ValueError(
                f"{where}: a regression width must be >= 1, got {n}")
        if n > MAX_REGRESSION_WIDTH:
            # (the exact coefficients cost O(width); the compiled backends
            # take at most 256 distinct terms in all anyway)
            raise ValueError(
                f"{where}: regression width {n} is larger than the {MAX_REGRESSION_WIDTH} "
                f"this library builds (a window over {2 * n + 1} frames)")
        if 2 * n + 1 <= order:
            raise ValueError(
                f"{where}: regression width {n} is too small for a window of "
                f"order {order} (need 2*width + 1 > order)")
        windows.append(Window(n, n, _regression_coeffs(n, order)))
    return WindowSet(windows)


def regression(widths: Sequence[int]) -> WindowSet:
    """Static window plus polynomial-regression dynamic windows.

    The ``i``-th width ``n`` (``i = 1, 2, ...``) gives a window over the offsets
    ``j = -n..n`` whose coefficients are the ``i``-th derivative at 0 of the
    least-squares polynomial of degree ``i`` through the points at ``j``:
    ``i! * pinv(V)[i]`` with ``V[j, k] = j**k``.  This is SPTK's
    ``delta -r`` (and diffsptk's ``seed=[n1, n2, ...]``): order 1 gives
    ``j / sum(j**2)`` and order 2 gives
    ``2 * (a0 * j**2 - a1) / (a2 * a0 - a1**2)`` with ``a0 = 2n + 1``,
    ``a1 = sum(j**2)``, ``a2 = sum(j**4)``.

    Parameters
    ----------
    widths : sequence of int
        One width ``n >= 1`` per dynamic window; the static window is
        implied.  The ``i``-th window needs ``2n + 1 > i``.

    Returns
    -------
    WindowSet
        ``len(widths) + 1`` windows.

    Raises
    ------
    TypeError
        If ``widths`` is not a sequence of ints.
    ValueError
        If ``widths`` is empty or a width is too small.

    Examples
    --------
    >>> regression([1, 1]) == DELTA
    True
    >>> regression([2])[1].coeffs
    (-0.2, -0.1, 0.0, 0.1, 0.2)
    """
    return _regression(widths, "widths")


# --------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------

#: The static window alone, ``[1]``.
STATIC = WindowSet([_STATIC_WINDOW])
#: Static, delta ``[-0.5, 0, 0.5]`` and delta-delta ``[1, -2, 1]``.
DELTA = WindowSet([_STATIC_WINDOW, Window(1, 1, (-0.5, 0.0, 0.5)),
                   Window(1, 1, (1.0, -2.0, 1.0))])
#: Static and delta ``[-0.5, 0, 0.5]``.
DELTA1 = WindowSet(DELTA[:2])
#: Preset names understood by :func:`as_windows` (case-insensitive).
PRESETS = {"static": STATIC, "delta": DELTA, "delta1": DELTA1}


# --------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------

def _is_nonscalar(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.ndim > 0
    return isinstance(x, collections.abc.Iterable) and not isinstance(
        x, (str, bytes))


def _classify(item, where: str) -> str:
    if isinstance(item, Window):
        return "window"
    if _is_int(item):
        return "width"
    if isinstance(item, (str, bytes)):
        raise TypeError(
            f"{where} must be a window, not a string ({item!r}); preset names "
            f"({', '.join(map(repr, PRESETS))}) are accepted only as the whole "
            "windows argument")
    if isinstance(item, np.ndarray):
        if item.ndim == 1:
            return "coeffs"
        raise ValueError(
            f"{where}: a window given as an array must be 1-D coefficients, "
            f"got shape {item.shape}")
    if isinstance(item, collections.abc.Sequence):
        if len(item) == 3 and _is_nonscalar(item[2]):
            return "triple"
        return "coeffs"
    raise TypeError(
        f"{where} must be a Window, a (left, right, coeffs) triple, a sequence "
        f"of coefficients or an int regression width; got {_describe(item)}")


WindowSpec = Union[WindowSet, str, Sequence]


def as_windows(spec: WindowSpec) -> WindowSet:
    """Parse a window specification into a :class:`WindowSet`.

    This is the one parser that every public function of :mod:`mlpgx` uses for
    its ``windows`` argument.

    Parameters
    ----------
    spec : WindowSet, str or sequence
        One of

        * a :class:`WindowSet` (returned unchanged);
        * a preset name, case-insensitive: ``"static"`` (:data:`STATIC`),
          ``"delta"`` (:data:`DELTA`) or ``"delta1"`` (:data:`DELTA1`);
        * a sequence of windows, each a :class:`Window`, a
          ``(left, right, coeffs)`` triple (nnmnkwii's format; ``coeffs`` must
          itself be a sequence) or a bare sequence of coefficients.  ``n`` bare
          coefficients are placed centred when ``n`` is odd
          (``left = right = n // 2``) and with the extra coefficient on the
          left when ``n`` is even (``left = n // 2``, ``right = n // 2 - 1``),
          as SPTK and HTS do.  The first window must be the static window;
        * a flat sequence of ints: regression widths of the dynamic windows,
          the static window implied (see :func:`regression`).  Note that
          ``[1]`` therefore means static + a width-1 delta; write ``[[1]]``
          for the static window alone.

    Returns
    -------
    WindowSet

    Raises
    ------
    TypeError
        For a spec or entry of the wrong type (bools, strings inside the list,
        nested garbage, integer widths mixed with explicit windows, ...).
    ValueError
        For an empty spec, an empty or non-finite coefficient list, a
        coefficient count other than ``left + right + 1``, negative extents,
        an unknown preset name or a first window that is not static.

    Examples
    --------
    >>> as_windows("delta")
    WindowSet([(0, 0, [1.0]), (1, 1, [-0.5, 0.0, 0.5]), (1, 1, [1.0, -2.0, 1.0])])
    >>> as_windows([[1.0], [-0.5, 0, 0.5], [1, -2, 1]]) == DELTA
    True
    >>> as_windows([1, 1]) == DELTA
    True
    >>> as_windows([[1], [1, -1]])[1]
    Window(left=1, right=0, coeffs=(1.0, -1.0))
    """
    if isinstance(spec, WindowSet):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key not in PRESETS:
            raise ValueError(
                f"windows: unknown preset {spec!r}; expected one of "
                f"{', '.join(map(repr, PRESETS))}")
        return PRESETS[key]
    if isinstance(spec, np.ndarray):
        if spec.ndim == 0:
            raise TypeError(
                "windows must be a sequence of windows, got a 0-d array")
        items = list(spec)
    elif isinstance(spec, (bytes, collections.abc.Mapping, collections.abc.Set)) \
            or not isinstance(spec, collections.abc.Iterable):
        raise TypeError(
            "windows must be a WindowSet, a preset name or a sequence of "
            f"windows / regression widths, got {_describe(spec)}")
    else:
        items = list(spec)
    if not items:
        raise ValueError("windows must not be empty; it needs at least the "
                         "static window [1.0]")

    kinds = [_classify(item, f"windows[{i}]") for i, item in enumerate(items)]
    if "width" in kinds:
        if any(k != "width" for k in kinds):
            i = next(i for i, k in enumerate(kinds) if k != "width")
            raise TypeError(
                "windows: cannot mix int regression widths with explicit "
                f"windows (windows[{i}] is {_describe(items[i])}); give either "
                "all widths or all windows")
        return _regression(items, "windows")

    windows = []
    for i, (item, kind) in enumerate(zip(items, kinds)):
        where = f"windows[{i}]"
        if kind == "window":
            windows.append(item)
            continue
        if kind == "triple":
            left, right, coeffs = _validated(item[0], item[1], item[2], where)
        else:
            coeffs = _check_coeffs(item, where)
            left, right = _centred_extents(len(coeffs))
        windows.append(Window(left, right, coeffs))
    if not _is_static(windows[0]):
        raise _static_error(windows[0])
    return WindowSet(windows)


# --------------------------------------------------------------------------
# HTS window files
# --------------------------------------------------------------------------

_HTS_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
# decimal or exponent notation, and the inf/nan spellings (rejected below as
# not finite, with that message)
_HTS_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                        r"|inf|infinity|nan)", re.ASCII | re.IGNORECASE)


def _read_hts_window(path, index: int) -> Window:
    name = os.fspath(path)
    where = f"windows file {name!r} (paths[{index}])"
    # utf-8-sig: a byte-order mark (editors on Windows write one) is skipped
    with open(path, "r", encoding="utf-8-sig") as fh:
        try:
            text = fh.read()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where}: not a text file ({exc})") from None
    tokens = text.split()
    if not tokens:
        raise ValueError(f"{where}: the file is empty; expected the "
                         "coefficient count followed by the coefficients")
    try:
        # plain ASCII numbers only, as the C readers of HTS and SPTK take
        # them (Python's int/float would also read "1_0" and non-ASCII digits)
        if not _HTS_INT.fullmatch(tokens[0]):
            raise ValueError
        count = int(tokens[0])
    except ValueError:
        raise ValueError(
            f"{where}: the first number must be the integer coefficient count, "
            f"got {tokens[0]!r}") from None
    if count < 1:
        raise ValueError(f"{where}: the coefficient count must be >= 1, got "
                         f"{count}")
    rest = tokens[1:]
    if len(rest) != count:
        raise ValueError(
            f"{where}: the count says {count} coefficients but "
            f"{len(rest)} follow")
    coeffs = []
    for j, tok in enumerate(rest):
        try:
            if not _HTS_FLOAT.fullmatch(tok):
                raise ValueError
            v = float(tok)
        except ValueError:
            raise ValueError(
                f"{where}: coefficient {j} is not a number: {tok!r}") from None
        if not math.isfinite(v):
            raise ValueError(
                f"{where}: coefficients must be finite, coefficient {j} is "
                f"{tok!r}")
        coeffs.append(v)
    left, right = _centred_extents(count)
    return Window(left, right, coeffs)


def from_hts_files(paths: Iterable[Union[str, os.PathLike]]) -> WindowSet:
    """Read HTS window files (``mgc.win1``, ``mgc.win2``, ...).

    Each file holds whitespace-separated numbers: the coefficient count ``n``
    (an integer) and then ``n`` coefficients, e.g. ``"3 -0.5 0.0 0.5"``.
    Odd ``n`` is placed centred; even ``n`` puts the extra coefficient on the
    left, as HTS does.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        One file per window; the first must hold the static window.

    Returns
    -------
    WindowSet

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    TypeError
        If ``paths`` is a single path rather than a sequence of paths.
    ValueError
        If ``paths`` is empty, a file is malformed (empty, count not an
        integer, count not matching the coefficients, non-numeric or
        non-finite text; the message names the file) or the first file is not
        the static window.

    Examples
    --------
    >>> import os, tempfile
    >>> texts = ["1 1.0", "3 -0.5 0.0 0.5", "3 1.0 -2.0 1.0"]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     paths = [os.path.join(d, f"mgc.win{i + 1}") for i in range(3)]
    ...     for p, t in zip(paths, texts):
    ...         with open(p, "w") as fh:
    ...             _ = fh.write(t + "\\n")
    ...     ws = from_hts_files(paths)
    >>> ws == DELTA
    True
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(
            "paths must be a sequence of window file paths (one per window), "
            f"not a single path {_describe(paths)}")
    if not isinstance(paths, collections.abc.Iterable):
        raise TypeError(
            "paths must be a sequence of window file paths, got "
            f"{_describe(paths)}")
    paths = list(paths)
    if not paths:
        raise ValueError("paths must name at least one window file (the "
                         "static window)")
    for i, p in enumerate(paths):
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(
                f"paths[{i}] must be a str or os.PathLike, got {_describe(p)}")
    windows = [_read_hts_window(p, i) for i, p in enumerate(paths)]
    if not _is_static(windows[0]):
        raise _static_error(
            windows[0], f"windows[0] (file {os.fspath(paths[0])!r})")
    return WindowSet(windows)

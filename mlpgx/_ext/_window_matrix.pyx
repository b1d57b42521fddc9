"""Banded window-matrix construction.

``W[t, t - left + j] = coeffs[j]`` for ``0 <= t - left + j < T`` (terms that
fall outside the sequence are dropped).  The result uses the LAPACK / SciPy
``solve_banded`` layout with ``(l, u) = (left, right)``:
``ab[u + i - j, j] = W[i, j]``.
"""
import numpy as np

include "_build_info.pxi"


def banded_window_matrix(const double[::1] coeffs, Py_ssize_t left, Py_ssize_t right,
                         Py_ssize_t T):
    """Return ``ab`` of shape ``(left + right + 1, T)`` (float64)."""
    cdef Py_ssize_t n = left + right + 1
    ab = np.zeros((n, T), dtype=np.float64)
    cdef double[:, ::1] out = ab
    cdef Py_ssize_t t, j, col
    with nogil:
        for j in range(n):
            # row of ab holding coefficient j: u + t - (t - left + j)
            for t in range(T):
                col = t - left + j
                if col >= 0 and col < T:
                    out[right + left - j, col] = coeffs[j]
    return ab

"""Fused banded MLPG solver, compiled for the baseline instruction set of the platform.

Fused banded MLPG solver: R and r formed on the fly, banded LDL^T, both
substitutions and (in adjoint mode) the gradients, one pass per sequence.

For one sequence of ``n`` frames and one static dimension d,

    R = sum_l W_l^T diag(p_l) W_l,    r = sum_l W_l^T diag(p_l) mu_l,

with half-bandwidth ``k = max_l(left_l + right_l)``.  Row ``i`` of the lower
triangle is

    R[i, i-a] = sum_l sum_u  w_l[u] w_l[u-a] p_l[i + left_l - u]

so it can be formed from the precisions of frames ``i - Q .. i + P`` only
(``P``/``Q`` the largest left/right extents), which live in a small ring.
``R = L D L^T`` is factored row by row (the last ``k`` rows of L and D stay
in double-precision rings), the forward substitution runs in the same sweep
and the factors go to a per-thread scratch of ``n x (k + nrhs)`` rows of the
input dtype; the back substitution then runs from the end.  All arithmetic is
float64 whatever the storage dtype; float32 inputs only round the stored
factors and the results.

Data layout: ``(B, T, L*D)`` rows, contiguous across d.  Every inner loop
runs over a chunk of contiguous d (t outer, d inner), so it vectorises; work
items are (sequence, d-range) pairs run in an OpenMP ``prange``.

Kernels assume validated input (see :mod:`mlpgx._validate`) and never raise:
a non-positive pivot is returned as an info code and turned into
``numpy.linalg.LinAlgError`` after the nogil region.
"""

include "_solver_impl.pxi"

"""Fused banded MLPG solver, built for AVX2 and FMA (x86-64; chosen at run time when the CPU has them).

The algorithm and its layout are described at the top of _solver_impl.pxi.
"""

include "_solver_impl.pxi"

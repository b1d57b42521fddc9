"""Fused banded MLPG solver, built for the baseline instruction set of the platform.

The algorithm and its layout are described at the top of _solver_impl.pxi.
"""

include "_solver_impl.pxi"

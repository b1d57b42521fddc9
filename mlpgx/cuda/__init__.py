"""CUDA C++ source of the ``"cuda"`` backend's kernels (package data).

:func:`kernel_source` returns the text of ``mlpg_kernels.cu``, which
:mod:`mlpgx.backends.cuda` compiles with ``cupy.RawModule`` (NVRTC) and the
test suite compiles with nvcc (sm_80 / sm_90 syntax check) and, for its
``__host__ __device__`` per-sequence routine, with a host C++ compiler.

This module needs neither CuPy nor a GPU.
"""
from __future__ import annotations

import functools
from importlib import resources

__all__ = ["kernel_source", "KERNEL_FILE", "MAXK_VALUES", "required_maxk"]

#: File name of the kernel source inside this package.
KERNEL_FILE = "mlpg_kernels.cu"

#: Ring sizes the kernel is instantiated for (template parameter ``MAXK``).
MAXK_VALUES = (2, 4, 8, 16, 32)


@functools.lru_cache(maxsize=1)
def kernel_source() -> str:
    """The CUDA C++ source of the MLPG kernels."""
    return resources.files(__name__).joinpath(KERNEL_FILE).read_text(encoding="utf-8")


def required_maxk(k: int, pq: int) -> int:
    """Smallest power of two ``MAXK >= 2`` the kernel needs for half-bandwidth
    ``k`` and ``pq = max(left) + max(right)`` (mirrors ``mlpg_required_maxk``
    in the source: ``k <= MAXK`` and ``max(pq, k) + 1 <= 2 * MAXK``)."""
    m = 2
    while m < k or 2 * m < pq + 1 or 2 * m < k + 1:
        m *= 2
    return m

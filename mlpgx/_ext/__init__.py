"""Compiled kernels.

``solver`` is the build of the fused MLPG solver this CPU runs best: the
AVX2 + FMA build (``_solver_avx2``) on x86-64 CPUs that have both, else the
baseline build (``_solver``).  Set ``MLPGX_SIMD=baseline`` to force the
baseline build (``MLPGX_SIMD=avx2`` forces AVX2 and fails without it).
The AVX2 build, when GCC compiled it, also holds AVX-512 clones of the
k <= 2 kernel, which it runs on CPUs with AVX-512F/VL/DQ
(``solver.avx512_available()``; ``MLPGX_AVX512=0`` or
``solver.use_avx512(False)`` turns them off).
"""
from __future__ import annotations

import glob
import os

try:
    from . import _solver as _baseline
except ImportError as exc:
    _here = os.path.dirname(os.path.abspath(__file__))
    if glob.glob(os.path.join(_here, "_solver.*.so")) or glob.glob(os.path.join(_here, "_solver*.pyd")):
        raise
    # (a source checkout whose extensions were never built: Python's own
    # message, a circular import of mlpgx._ext, says nothing of that)
    raise ImportError(
        f"not built in this source checkout ({_here}): run `pip install .` (which copies "
        "the extensions here too) or `python setup.py build_ext --inplace`") from exc


def _cpu_features() -> dict:
    """NumPy's own run-time CPU feature detection (``{}`` where unavailable)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # NumPy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            return {}
    return dict(feats)


def _cpu_has_avx2_fma() -> bool:
    feats = _cpu_features()
    return bool(feats.get("AVX2")) and bool(feats.get("FMA3"))


def _select():
    want = os.environ.get("MLPGX_SIMD", "auto").lower()
    if want not in ("auto", "baseline", "avx2"):
        raise ValueError(f"MLPGX_SIMD must be 'auto', 'baseline' or 'avx2'; got {want!r}")
    if want == "baseline":
        return _baseline, "baseline"
    try:
        from . import _solver_avx2
    except ImportError:
        _solver_avx2 = None
    if want == "avx2":
        if _solver_avx2 is None:
            raise ImportError("MLPGX_SIMD=avx2, but the AVX2 build of mlpgx is not installed")
        return _solver_avx2, "avx2"
    if _solver_avx2 is not None and _cpu_has_avx2_fma():
        return _solver_avx2, "avx2"
    return _baseline, "baseline"


#: The solver module in use and the name of its instruction-set build.
solver, simd = _select()

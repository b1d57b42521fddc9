"""mlpgx: exact, fast maximum likelihood parameter generation (MLPG).

MLPG turns per-frame Gaussian means and variances of static and dynamic
(delta, delta-delta) features into the static trajectory that maximises
their likelihood.  See :func:`mlpg`.

Public API
----------
mlpg, mlpg_adjoint, mlpg_solve
    The solve, its vector-Jacobian product, the precision-weighted solve.
windows
    Window specifications (:data:`windows.DELTA`, parsers, HTS files).
window_matrix
    Banded (or sparse) window matrices.
backends
    The backend registry (``"cython"``, ``"reference"``, plug-ins).
mlpg_gv, GVInfo
    Global-variance constrained generation (:mod:`mlpgx.gv`).
StreamingMLPG
    Low-latency generation with a fixed look-ahead (:mod:`mlpgx.streaming`).
verify, testing
    Check any backend against the scipy.sparse reference.
"""
from . import backends, windows
from ._api import BandedMatrix, mlpg, mlpg_adjoint, mlpg_solve, window_matrix
from ._verify import VerifyReport, verify
from .gv import GVInfo, mlpg_gv
from . import testing

__version__ = "0.1.0"


def __getattr__(name):
    # StreamingMLPG needs its compiled kernel: loaded on first use, so that
    # ``import mlpgx`` itself never loads an extension module
    if name == "StreamingMLPG":
        from .streaming import StreamingMLPG
        return StreamingMLPG
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["mlpg", "mlpg_adjoint", "mlpg_solve", "window_matrix", "BandedMatrix",
           "mlpg_gv", "GVInfo", "StreamingMLPG",
           "windows", "backends", "verify", "VerifyReport", "testing", "__version__"]

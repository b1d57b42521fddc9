"""Testing helpers for users and backend authors."""
from __future__ import annotations

from ._verify import verify
from .windows import DELTA

__all__ = ["assert_matches_reference"]


def assert_matches_reference(means, variances=None, windows=DELTA, *, backend="auto",
                             rtol=None, **kwargs):
    """Raise ``AssertionError`` unless ``backend`` matches the reference.

    Same arguments as :func:`mlpgx.verify`; returns the report when it passes.

    Examples
    --------
    >>> import numpy as np, mlpgx.testing
    >>> rep = mlpgx.testing.assert_matches_reference(np.ones((20, 3)), backend="cython")
    """
    report = verify(means, variances, windows, backend=backend, rtol=rtol, **kwargs)
    if not report.passed:
        raise AssertionError(str(report))
    return report

"""Shared fixtures and helpers for the backend-vs-reference tests.

``backend`` parametrises a test over every registered backend except the
ground truth ``"reference"``; a backend that cannot run here (its
``availability()`` is ``(False, reason)``) is still listed, but skipped with
its reason so that the reason shows up in the test report.

``to_backend`` / ``to_numpy`` move arrays to and from a backend's array
module (NumPy today; CuPy for a future ``"cuda"`` backend).
"""
from __future__ import annotations

import numpy as np
import pytest

try:  # a broken install must not stop tests that do not need mlpgx from running
    import mlpgx
except Exception as exc:  # pragma: no cover - only when the package is broken
    mlpgx = None
    _MLPGX_IMPORT_ERROR = exc

try:  # optional: only needed by backends whose array module is cupy
    import cupy as _cupy
except Exception:  # ImportError, or a broken CUDA install
    _cupy = None

REFERENCE = "reference"


def backend_params():
    """``pytest.param`` per registered non-reference backend (skipped, with
    the backend's own reason, where it is unavailable)."""
    if mlpgx is None:
        return [pytest.param("cython", marks=pytest.mark.skip(
            reason=f"mlpgx does not import: {_MLPGX_IMPORT_ERROR}"), id="cython")]
    params = []
    for name in mlpgx.backends.names():
        if name == REFERENCE:
            continue
        ok, why = mlpgx.backends.get(name).availability()
        marks = () if ok else (pytest.mark.skip(
            reason=f"backend {name!r} is unavailable: {why}"),)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=backend_params())
def backend(request) -> str:
    """Name of a registered, non-reference backend."""
    return request.param


def array_module(backend) -> str:
    b = backend if isinstance(backend, mlpgx.backends.Backend) else mlpgx.backends.get(backend)
    return b.array_module


def to_backend(x, backend):
    """``x`` (NumPy array, or None) as an array of ``backend``'s array module."""
    if x is None:
        return None
    mod = array_module(backend)
    if mod == "numpy":
        return np.asarray(x) if not isinstance(x, np.ndarray) else x
    if mod == "cupy":
        if _cupy is None:
            pytest.skip("cupy is not importable")
        return _cupy.asarray(x)
    raise NotImplementedError(f"no conversion to array module {mod!r}")


def to_numpy(x):
    """A NumPy array from a NumPy or CuPy array (``None`` passes through)."""
    if x is None:
        return None
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy.asnumpy(x)
    return np.asarray(x)


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so every test is reproducible."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))

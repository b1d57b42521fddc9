"""Run the docstring examples of every module of the installed package."""
from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

MODULES = ["mlpgx", "mlpgx._api", "mlpgx.windows", "mlpgx._verify", "mlpgx.testing",
           "mlpgx.backends", "mlpgx.backends.reference", "mlpgx.backends.cython",
           "mlpgx.data", "mlpgx.streaming", "mlpgx.gv"]
#: Modules whose docstrings contain examples (at least one must run).
WITH_EXAMPLES = {"mlpgx._api", "mlpgx.windows", "mlpgx._verify", "mlpgx.testing",
                 "mlpgx.backends", "mlpgx.data", "mlpgx.streaming", "mlpgx.gv"}


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    import mlpgx.backends

    module = importlib.import_module(name)
    registry_before = dict(mlpgx.backends._REGISTRY)
    with np.printoptions(legacy=False):
        res = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE
                              | doctest.ELLIPSIS, verbose=False, report=True)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples failed in {name}"
    if name in WITH_EXAMPLES:
        assert res.attempted > 0, f"no examples ran in {name}"
    # the examples clean up after themselves
    assert dict(mlpgx.backends._REGISTRY) == registry_before
    assert mlpgx.backends.resolve("auto", np.zeros(1)).name == "cython"

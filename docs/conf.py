"""Sphinx configuration of the mlpgx documentation.

Build:  sphinx-build -W -b html docs docs/_build/html
Check the examples of the pages:  sphinx-build -W -b doctest docs docs/_build/doctest
(``tests/test_docs.py`` runs both.)
"""
from __future__ import annotations

import os
import sys

# Document the installed package; fall back to the source tree next to docs/.
try:
    import mlpgx  # noqa: F401
except ImportError:  # pragma: no cover - only for an uninstalled checkout
    sys.path.insert(0, os.path.abspath(".."))
    import mlpgx  # noqa: F401

project = "mlpgx"
author = "the mlpgx authors"
copyright = "the mlpgx authors"
release = mlpgx.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# -- MyST: the .md pages are plain Markdown (GitHub renders them too) ------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# -- autodoc / autosummary / numpydoc ---------------------------------------
autosummary_generate = False          # the API page lists everything itself
autodoc_member_order = "bysource"
autodoc_typehints = "none"            # numpydoc sections carry the types
numpydoc_show_class_members = False   # members are listed explicitly
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
numpydoc_xref_param_type = False

# -- doctest builder: the ``{doctest}`` blocks of the pages -----------------
# Docstring examples are run by tests/test_doctests.py; here only the pages.
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import numpy as np
import mlpgx
"""
import doctest as _doctest  # noqa: E402

doctest_default_flags = (_doctest.ELLIPSIS | _doctest.NORMALIZE_WHITESPACE
                         | _doctest.IGNORE_EXCEPTION_DETAIL
                         | _doctest.DONT_ACCEPT_TRUE_FOR_1)

# -- HTML --------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"mlpgx {release}"
html_static_path: list = []
html_theme_options = {
    "description": "Exact O(T) MLPG and its adjoint",
    "fixed_sidebar": True,
}

"""The documentation builds without warnings and its examples run.

``sphinx-build -W --keep-going -b html docs <tmp>`` (warnings are errors),
then ``sphinx-build -b doctest`` on the same doctrees, which runs the
``{doctest}`` blocks of the Markdown pages (the docstring examples are run by
``tests/test_doctests.py``).  Both run in a subprocess outside the source
tree, so they document the installed package.

Sphinx, myst-parser and numpydoc come with ``pip install ".[docs]"`` (and
the ``test`` extra).  Without them the tests are skipped with the reason --
except when the environment variable ``CI`` is set: there a missing docs
toolchain is a failure, so CI cannot pass without building the docs.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
REQUIRED = {"sphinx": "sphinx", "myst_parser": "myst-parser", "numpydoc": "numpydoc"}
#: Pages whose ``{doctest}`` blocks must run (a page losing its examples fails).
PAGES_WITH_EXAMPLES = {"getting-started", "conventions", "migration"}
#: Objects the API reference must document.
API_OBJECTS = [
    "mlpgx.mlpg", "mlpgx.mlpg_adjoint", "mlpgx.mlpg_solve", "mlpgx.window_matrix",
    "mlpgx.BandedMatrix", "mlpgx.verify", "mlpgx.VerifyReport",
    "mlpgx.testing.assert_matches_reference",
    "mlpgx.windows.Window", "mlpgx.windows.WindowSet", "mlpgx.windows.as_windows",
    "mlpgx.windows.regression", "mlpgx.windows.from_hts_files", "mlpgx.windows.DELTA",
    "mlpgx.windows.DELTA1", "mlpgx.windows.STATIC",
    "mlpgx.backends.Backend", "mlpgx.backends.register", "mlpgx.backends.get",
    "mlpgx.backends.available", "mlpgx.backends.use", "mlpgx.backends.resolve",
    "mlpgx.backends.describe", "mlpgx.backends.unregister",
    "mlpgx.data.load_arctic_a0001",
]
TIMEOUT_S = 300


def _require_toolchain():
    missing = [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]
    if not missing:
        return
    msg = (f"the docs build needs {', '.join(missing)} (pip install '.[docs]')")
    if os.environ.get("CI"):
        pytest.fail(f"{msg}; CI is set, so a missing docs toolchain is a failure")
    pytest.skip(msg)


def _sphinx(builder, out, doctrees, cwd):
    """Run ``sphinx-build -W --keep-going -b builder``; fail with its output."""
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", builder,
           "-d", str(doctrees), str(DOCS), str(out)]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"sphinx-build -b {builder} took more than {TIMEOUT_S} s")
    if proc.returncode != 0:
        pytest.fail(f"sphinx-build -b {builder} failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The HTML build: ``(html_dir, doctrees_dir, workdir)``."""
    _require_toolchain()
    if not (DOCS / "conf.py").is_file():
        pytest.skip(f"no docs/conf.py next to the tests ({DOCS})")
    root = tmp_path_factory.mktemp("docs")
    html, doctrees = root / "html", root / "doctrees"
    _sphinx("html", html, doctrees, cwd=root)   # cwd outside the source tree
    return html, doctrees, root


def test_html_builds_without_warnings(built):
    html, _, _ = built
    for page in ["index", "getting-started", "cli", "math", "conventions", "api",
                 "backends", "migration", "performance"]:
        assert (html / f"{page}.html").is_file(), f"page {page!r} was not built"


def test_api_reference_documents_the_public_api(built):
    html, _, _ = built
    text = (html / "api.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'id="(mlpgx\.[^"]+)"', text))
    missing = [name for name in API_OBJECTS if name not in ids]
    assert not missing, f"not in the API reference: {missing}"


def test_readme_benchmark_table_is_included(built):
    html, _, _ = built
    text = (html / "performance.html").read_text(encoding="utf-8")
    assert "ns/frame/dim" in text and "<table" in text


def test_page_examples_run(built):
    _, doctrees, root = built
    out = root / "doctest"
    _sphinx("doctest", out, doctrees, cwd=root)
    report = (out / "output.txt").read_text(encoding="utf-8")
    tested = set(re.findall(r"^Document: (\S+)", report, flags=re.M))
    assert PAGES_WITH_EXAMPLES <= tested, \
        f"pages whose examples did not run: {sorted(PAGES_WITH_EXAMPLES - tested)}"
    m = re.search(r"^\s*(\d+) tests\s*$", report, flags=re.M)
    assert m and int(m.group(1)) >= 30, f"too few examples ran:\n{report[-2000:]}"
    assert re.search(r"^\s*0 failures in tests", report, flags=re.M), report[-4000:]

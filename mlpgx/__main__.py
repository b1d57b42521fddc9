"""``python -m mlpgx``: the ``mlpgx`` command line (see :mod:`mlpgx.cli`).

With no arguments it runs MLPG on the embedded real example with every
available backend, each verified against the reference, as a table
(``python -m mlpgx`` -> exit status 0 when every backend passes).
"""
from __future__ import annotations

import sys

from mlpgx.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

"""The embedded example: CMU ARCTIC slt utterance a0001 (see ``COPYING``)."""
from __future__ import annotations

from importlib import resources

import numpy as np

#: Column ranges of the 187-column feature matrix.
MGC = slice(0, 180)          # mgc static (0-59), delta (60-119), delta-delta (120-179)
LF0 = slice(180, 183)        # log F0 static, delta, delta-delta (interpolated)
VUV = 183                    # voiced flag
BAP = slice(184, 187)        # band aperiodicity static, delta, delta-delta


def load_arctic_a0001() -> np.ndarray:
    """The (578, 187) float32 features of arctic_a0001 (slt), 5 ms frames.

    Columns: mgc 60 x [static, delta, accel] (window-major, 0-179), lf0 x 3
    (180-182), vuv (183), bap x 3 (184-186).  The deltas use the windows of
    :data:`mlpgx.windows.DELTA` and are consistent with the static stream in
    the interior frames.  CMU ARCTIC licence: ``mlpgx/data/COPYING``.

    Examples
    --------
    >>> from mlpgx.data import load_arctic_a0001, MGC
    >>> load_arctic_a0001()[:, MGC].shape
    (578, 180)
    """
    with resources.files(__name__).joinpath("arctic_a0001.npz").open("rb") as fh:
        with np.load(fh) as npz:
            return np.array(npz["data"])

"""MLPG on a real utterance: CMU ARCTIC slt a0001 (578 frames, 60 mgc
dimensions with DELTA dynamics, float32)."""
from __future__ import annotations

import numpy as np
import pytest

import mlpgx
from mlpgx.data import MGC, load_arctic_a0001

from conftest import to_backend, to_numpy

D = 60


@pytest.fixture(scope="module")
def mgc():
    feats = load_arctic_a0001()
    assert feats.shape == (578, 187) and feats.dtype == np.float32
    m = feats[:, MGC]
    assert m.shape == (578, 3 * D)
    return m


def _mlpg(backend, means, variances=None, **kw):
    return to_numpy(mlpgx.mlpg(to_backend(means, backend), to_backend(variances, backend),
                               backend=backend, **kw))


# The deltas of the data are consistent with the static stream in the
# interior; at the two end frames they were computed with some padding of the
# edges.  The per-window and nnmnkwii rules (the same for DELTA: K = 1) drop
# exactly those rows and reproduce the static stream at every frame; "none"
# keeps the inconsistent end rows, whose error decays into the interior.
@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_consistent_features_give_back_the_statics(backend, mgc, boundary, dtype):
    static = mgc[:, :D].astype(np.float64)
    c = _mlpg(backend, mgc.astype(dtype), boundary=boundary)
    assert c.dtype == dtype and c.shape == (len(mgc), D)
    err = np.abs(c - static)
    scale = np.maximum(1.0, np.abs(static))
    assert np.max(err[10:-10] / scale[10:-10]) < 1e-4
    assert np.max(err / scale) < 1e-5          # in fact every frame, to float32 rounding


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_consistent_features_boundary_none_interior_only(backend, mgc, dtype):
    static = mgc[:, :D].astype(np.float64)
    c = _mlpg(backend, mgc.astype(dtype), boundary="none")
    err = np.abs(c - static)
    assert np.max(err[10:-10]) < 1e-4
    # the inconsistent edge rows are kept: visible errors at the ends
    assert err[0].max() > 1e-2 and err[-1].max() > 1e-2


@pytest.mark.parametrize("weights", ["noise-variances", "global", "unit"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_denoising(backend, mgc, dtype, weights):
    """Noisy means: the MLPG trajectory is smoother than the noisy static
    stream and closer to the clean one."""
    rng = np.random.default_rng(20240601)
    clean = mgc.astype(np.float64)
    sd = 0.3 * clean.std(axis=0)
    noisy = (clean + rng.standard_normal(clean.shape) * sd).astype(dtype)
    var = {"noise-variances": np.broadcast_to(sd ** 2, clean.shape).astype(dtype),
           "global": (sd ** 2).astype(dtype), "unit": None}[weights]
    c = _mlpg(backend, noisy, var).astype(np.float64)
    static, noisy_static = clean[:, :D], noisy[:, :D].astype(np.float64)

    def roughness(x):
        return np.mean(np.diff(x, axis=0) ** 2)

    def rmse(x):
        return np.sqrt(np.mean((x - static) ** 2))

    assert roughness(c) < 0.6 * roughness(noisy_static)
    assert rmse(c) < 0.6 * rmse(noisy_static)
    # smoothing does not flatten the trajectory: still close to the clean roughness
    assert roughness(c) < 1.2 * roughness(static)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_real_data_matches_reference(backend, mgc, dtype):
    """verify (forward + adjoint) on the real utterance with realistic
    per-column variances, a padded batch of two copies, the second truncated."""
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    means = mgc.astype(dtype)
    var = np.broadcast_to(mgc.astype(np.float64).var(axis=0), mgc.shape).astype(dtype)
    batch = np.stack([means, means])
    vbatch = np.stack([var, var])
    lengths = [len(mgc), 300]
    rep = mlpgx.verify(batch, vbatch, backend=backend, lengths=lengths, rtol=rtol)
    assert rep.passed, str(rep)
    # the truncated copy equals the utterance cut at 300 frames
    c = _mlpg(backend, batch, vbatch, lengths=lengths)
    c300 = _mlpg(backend, means[:300], var[:300])
    np.testing.assert_array_equal(c[1, :300], c300)
    np.testing.assert_array_equal(c[0], _mlpg(backend, means, var))
    assert np.all(c[1, 300:] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_real_data_global_variances_nnmnkwii(backend, mgc, dtype):
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    var = mgc.astype(np.float64).var(axis=0).astype(dtype)
    rep = mlpgx.verify(mgc.astype(dtype), var, backend=backend, boundary="nnmnkwii", rtol=rtol)
    assert rep.passed, str(rep)

"""Streaming (fixed-lag) MLPG: :class:`mlpgx.streaming.StreamingMLPG`.

The contract: after frames ``0..m`` have been pushed, frame ``m - delay``
comes out equal to ``mlpgx.mlpg(means[:m + 1], ...)[m - delay]`` (the prefix
solution), and ``flush()`` returns the rest of the whole-sequence solution.
Every test here compares the stream with those ``mlpgx.mlpg`` calls; the
main exactness grid uses the scipy.sparse reference backend.
"""
from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
from numpy.linalg import LinAlgError

import mlpgx
import mlpgx.streaming
from mlpgx.streaming import StreamingMLPG
from mlpgx.windows import DELTA, as_windows

#: Window sets: L = 3, 1, 2 (even length, backward difference) and 4 (width 9,
#: asymmetric and even-length windows, one looking only ahead).
WINDOW_SETS = {
    "delta": DELTA,
    "static": as_windows("static"),
    "even-L2": as_windows([(0, 0, [1.0]), (1, 0, [-1.0, 1.0])]),
    "wide-L4": as_windows([
        (0, 0, [1.0]),
        (4, 4, [0.1, -0.3, 0.2, 0.4, -1.0, 0.4, 0.2, -0.3, 0.1]),
        (2, 1, [0.5, -1.0, 0.25, 0.25]),
        (0, 2, [1.0, -2.0, 1.0]),
    ]),
}
BOUNDARIES = ["per-window", "nnmnkwii", "none"]
RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def _data(T, windows, D, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    LD = len(windows) * D
    means = rng.normal(size=(T, LD)).astype(dtype)
    variances = rng.uniform(0.5, 2.0, size=(T, LD)).astype(dtype)
    return means, variances


def _chunks(T, how, seed=0):
    """Chunk sizes summing to T: one frame at a time, random sizes, all at once."""
    if how == "one":
        return [1] * T
    if how == "all":
        return [T]
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < T:
        sizes.append(int(min(rng.integers(0, 7), T - sum(sizes))))
    return sizes


def _run(stream, means, chunks, weights=None, kind="variances", global_weights=False):
    """Push ``means`` in ``chunks``; return the pushed outputs and the flush."""
    outs, t = [], 0
    for size in chunks:
        kw = {}
        if weights is not None:
            w = weights if global_weights else weights[t:t + size]
            kw = {"variances_frames": w} if kind == "variances" else {"precisions": w}
        outs.append(stream.push(means[t:t + size], **kw))
        t += size
    return outs, stream.flush()


def _expected(means, delay, weights=None, kind="variances", global_weights=False, **kw):
    """Per frame n: the solution of the prefix ending at n + delay (or of the
    whole sequence when that is past the end), from the scipy.sparse
    reference backend (which shares no code with the streaming kernel) when
    ``kw`` says ``backend="reference"``."""
    T = means.shape[0]
    out = np.empty((T, means.shape[1] // len(kw.get("windows", DELTA))), dtype=means.dtype)
    cache = {}
    for n in range(T):
        m = min(n + delay, T - 1)
        if m not in cache:
            w = None if weights is None else (weights if global_weights else weights[:m + 1])
            cache = {m: mlpgx.mlpg(means[:m + 1], **({kind: w} if w is not None else {}),
                                   **kw)}
        out[n] = cache[m][n]
    return out


def _assert_close(got, ref, dtype=np.float64):
    rtol = RTOL[np.dtype(dtype).type]
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


def _check_stream(windows, boundary, delay, chunks_how, dtype=np.float64, T=30, D=3,
                  kind="variances", global_weights=False, weights="random", seed=0,
                  backend="cython"):
    means, variances = _data(T, windows, D, dtype, seed)
    if weights == "unit":
        w = None
    elif kind == "precisions":
        w = (1.0 / variances).astype(dtype)
    else:
        w = variances
    if w is not None and global_weights:
        w = w[0]
    stream = StreamingMLPG(windows, static_dim=D, delay=delay, boundary=boundary,
                           dtype=dtype)
    outs, rest = _run(stream, means, _chunks(T, chunks_how, seed), w, kind, global_weights)
    ref = _expected(means, delay, w, kind, global_weights, windows=windows,
                    boundary=boundary, backend=backend)
    pushed = np.concatenate(outs)
    n_pushed = max(0, T - delay)
    assert pushed.shape == (n_pushed, D) and rest.shape == (T - n_pushed, D)
    assert pushed.dtype == rest.dtype == np.dtype(dtype)
    _assert_close(pushed, ref[:n_pushed], dtype)
    _assert_close(rest, ref[n_pushed:], dtype)
    assert stream.frames_pushed == 0 and stream.frames_emitted == 0   # flush resets


# ---------------------------------------------------------------------------
# exactness against the prefix definition
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("delay", [0, 1, 3, 10, 30, 45])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("wname", list(WINDOW_SETS))
def test_every_frame_equals_its_prefix_solution(wname, boundary, delay):
    # against the scipy.sparse reference; the other tests use the cython
    # backend (itself checked against the reference) to stay fast
    _check_stream(WINDOW_SETS[wname], boundary, delay, "one", T=24, backend="reference")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunks", ["one", "random", "all"])
@pytest.mark.parametrize("delay", [0, 3, 10])
@pytest.mark.parametrize("wname", ["delta", "wide-L4"])
def test_chunk_sizes_and_dtypes(wname, delay, chunks, dtype):
    _check_stream(WINDOW_SETS[wname], "per-window", delay, chunks, dtype=dtype, seed=delay)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("wname", list(WINDOW_SETS))
def test_float32_and_float64_every_window_set(wname, boundary, dtype):
    _check_stream(WINDOW_SETS[wname], boundary, 4, "random", dtype=dtype, T=24)


@pytest.mark.parametrize("kind,global_weights,weights", [
    ("variances", False, "random"), ("variances", True, "random"),
    ("precisions", False, "random"), ("precisions", True, "random"),
    ("variances", False, "unit"),
])
@pytest.mark.parametrize("chunks", ["one", "random"])
def test_weight_forms(kind, global_weights, weights, chunks):
    _check_stream(DELTA, "per-window", 3, chunks, kind=kind, global_weights=global_weights,
                  weights=weights)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_infinite_variances_and_zero_precisions(boundary, dtype):
    T, D = 40, 2
    means, variances = _data(T, DELTA, D, dtype, seed=3)
    variances[5:9, D:] = np.inf            # dynamic windows unconstrained
    variances[20, :D] = np.inf             # one static frame unconstrained
    variances[30, :] = np.inf              # a frame with no constraint at all
    stream = StreamingMLPG(DELTA, D, 5, boundary=boundary, dtype=dtype)
    outs, rest = _run(stream, means, _chunks(T, "random"), variances)
    ref = _expected(means, 5, variances, boundary=boundary)
    _assert_close(np.concatenate(outs + [rest]), ref, dtype)
    precisions = np.where(np.isinf(variances), 0.0, 1.0 / variances).astype(dtype)
    outs, rest = _run(stream, means, _chunks(T, "one"), precisions, kind="precisions")
    _assert_close(np.concatenate(outs + [rest]), ref, dtype)


def test_single_frames_as_1d_arrays_and_lists():
    means, variances = _data(12, DELTA, 2)
    stream = StreamingMLPG(DELTA, 2, 2)
    got = [stream.push(list(means[t]), variances[t]) for t in range(12)]
    assert [g.shape for g in got] == [(0, 2)] * 2 + [(1, 2)] * 10
    ref = _expected(means, 2, variances)
    _assert_close(np.concatenate(got + [stream.flush()]), ref)


def test_empty_push_and_empty_flush():
    stream = StreamingMLPG(DELTA, 2, 3)
    assert stream.push(np.zeros((0, 6))).shape == (0, 2)
    assert stream.flush().shape == (0, 2)
    assert stream.frames_pushed == 0


def test_integer_and_float16_inputs_follow_the_dtype_policy():
    means = np.arange(30, dtype=np.int64).reshape(10, 3)
    stream = StreamingMLPG(DELTA, 1, 2)
    out = np.concatenate([stream.push(means), stream.flush()])
    assert out.dtype == np.float64
    _assert_close(out, _expected(means.astype(np.float64), 2))
    s32 = StreamingMLPG(DELTA, 1, 20, dtype=np.float32)
    s32.push(means.astype(np.float16))
    assert s32.flush().dtype == np.float32


# ---------------------------------------------------------------------------
# causality, reuse, properties
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("delay", [0, 2, 7])
@pytest.mark.parametrize("wname", ["delta", "wide-L4"])
def test_frame_n_never_depends_on_frames_beyond_n_plus_delay(wname, delay, boundary):
    windows = WINDOW_SETS[wname]
    T, D = 40, 2
    means, variances = _data(T, windows, D, seed=5)
    base = StreamingMLPG(windows, D, delay, boundary=boundary)
    base_out = np.concatenate([base.push(means[t], variances[t]) for t in range(T)])
    rng = np.random.default_rng(9)
    for cut in (0, 1, 10, 25, T - 1):      # frames cut.. change
        m2, v2 = means.copy(), variances.copy()
        m2[cut:] = rng.normal(size=m2[cut:].shape) * 10
        v2[cut:] = rng.uniform(0.1, 5.0, size=v2[cut:].shape)
        s = StreamingMLPG(windows, D, delay, boundary=boundary)
        out = np.concatenate([s.push(m2[t], v2[t]) for t in range(T)])
        n_safe = max(0, cut - delay)       # frames n with n + delay < cut
        np.testing.assert_array_equal(out[:n_safe], base_out[:n_safe])
        if cut == 0:                       # (the test can see a change)
            assert not np.array_equal(out[0], base_out[0])


def test_reusable_after_flush_and_reset():
    D, delay = 3, 4
    stream = StreamingMLPG(DELTA, D, delay, dtype=np.float64)
    for T, seed in ((25, 1), (9, 2), (3, 3), (40, 4)):
        means, variances = _data(T, DELTA, D, seed=seed)
        outs, rest = _run(stream, means, _chunks(T, "random", seed), variances)
        _assert_close(np.concatenate(outs + [rest]), _expected(means, delay, variances))
        _assert_close(rest, mlpgx.mlpg(means, variances)[max(0, T - delay):])
    # reset() in the middle of an utterance
    means, variances = _data(20, DELTA, D, seed=7)
    stream.push(means[:13] * 5, variances[:13])
    stream.reset()
    assert (stream.frames_pushed, stream.frames_emitted) == (0, 0)
    outs, rest = _run(stream, means, [20], variances)
    _assert_close(np.concatenate(outs + [rest]), _expected(means, delay, variances))


def test_delay_at_least_T_gives_the_full_solution():
    means, variances = _data(17, DELTA, 4, seed=2)
    for delay in (17, 100):
        stream = StreamingMLPG(DELTA, 4, delay)
        assert stream.push(means, variances).shape == (0, 4)
        _assert_close(stream.flush(), mlpgx.mlpg(means, variances))


def test_properties_and_counters():
    stream = StreamingMLPG("delta", static_dim=2, delay=3, boundary="nnmnkwii",
                           dtype=np.float32)
    assert stream.windows == DELTA and stream.static_dim == 2 and stream.delay == 3
    assert stream.boundary == "nnmnkwii" and stream.dtype == np.float32
    stream.push(np.zeros((5, 6)))
    assert (stream.frames_pushed, stream.frames_emitted) == (5, 2)
    stream.push(np.zeros(6))
    assert (stream.frames_pushed, stream.frames_emitted) == (6, 3)
    assert "delay=3" in repr(stream)
    for name in ("windows", "static_dim", "delay", "frames_pushed", "frames_emitted"):
        with pytest.raises(AttributeError):
            setattr(stream, name, 1)


def test_inputs_are_not_modified():
    means, variances = _data(20, DELTA, 2)
    for a in (means, variances):
        a.setflags(write=False)
    m0, v0 = means.copy(), variances.copy()
    stream = StreamingMLPG(DELTA, 2, 3)
    _run(stream, means, _chunks(20, "random"), variances)
    _run(stream, means, _chunks(20, "one"), variances[0], global_weights=True)
    np.testing.assert_array_equal(means, m0)
    np.testing.assert_array_equal(variances, v0)


# ---------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arctic_mgc_stream(dtype):
    from mlpgx.data import MGC, load_arctic_a0001

    means = load_arctic_a0001()[:, MGC].astype(dtype)            # (578, 180)
    variances = means.var(axis=0)                                 # global, (180,)
    delay = 10
    stream = StreamingMLPG(DELTA, 60, delay, dtype=dtype)
    outs, rest = _run(stream, means, _chunks(len(means), "random", 11), variances,
                      global_weights=True)
    got = np.concatenate(outs + [rest])
    ref = _expected(means, delay, variances, global_weights=True)
    _assert_close(got, ref, dtype)
    _assert_close(rest, mlpgx.mlpg(means, variances)[-delay:], dtype)


def test_error_vs_full_solution_decreases_with_delay():
    T, D = 100, 4
    rng = np.random.default_rng(0)
    t = np.arange(T)[:, None]
    static = np.sin(2 * np.pi * t / rng.uniform(15, 40, size=D)) + 0.1 * rng.normal(size=(T, D))
    means = np.concatenate([static, np.gradient(static, axis=0),
                            np.gradient(np.gradient(static, axis=0), axis=0)], axis=1)
    means += 0.2 * rng.normal(size=means.shape)
    variances = rng.uniform(0.5, 2.0, size=means.shape)
    full = mlpgx.mlpg(means, variances)
    errors = []
    for delay in (0, 1, 5, 10, 30, T):
        stream = StreamingMLPG(DELTA, D, delay)
        got = np.concatenate([stream.push(means, variances), stream.flush()])
        errors.append(float(np.abs(got - full).max()))
    assert all(b < a for a, b in zip(errors[:-2], errors[1:-1])), errors
    assert errors[-2] < 1e-6 * np.abs(full).max(), errors     # delay 30
    assert errors[-1] < 1e-12 * np.abs(full).max(), errors    # delay >= T: exact


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(delay=-1), ValueError, "delay"),
    (dict(delay=1.5), TypeError, "delay"),
    (dict(delay=True), TypeError, "delay"),
    (dict(delay="3"), TypeError, "delay"),
    (dict(static_dim=0), ValueError, "static_dim"),
    (dict(static_dim=2.0), TypeError, "static_dim"),
    (dict(boundary="zero"), ValueError, "boundary"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(dtype=np.float16), TypeError, "dtype"),
    (dict(dtype="nonsense"), TypeError, "dtype"),
    (dict(windows=[[0.5, 0, 0.5]]), ValueError, "windows"),
    (dict(windows=42), TypeError, "windows"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    args = dict(windows=DELTA, static_dim=2, delay=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        StreamingMLPG(args.pop("windows"), **args)


def _bad_push_cases():
    LD = 6
    good = np.ones((4, LD))
    nan, inf = good.copy(), good.copy()
    nan[2, 3], inf[1, 0] = np.nan, np.inf
    zero_var, neg_var, nan_var = good.copy(), good.copy(), good.copy()
    zero_var[0, 1], neg_var[3, 5], nan_var[2, 2] = 0.0, -1.0, np.nan
    neg_p, inf_p = good.copy(), good.copy()
    neg_p[1, 1], inf_p[0, 4] = -0.5, np.inf
    return [
        ("columns", dict(means_frames=np.ones((4, 5))), ValueError, "means_frames"),
        ("columns-1d", dict(means_frames=np.ones(7)), ValueError, "means_frames"),
        ("ndim", dict(means_frames=np.ones((2, 4, LD))), ValueError, "means_frames"),
        ("nan-mean", dict(means_frames=nan), ValueError, "means_frames"),
        ("inf-mean", dict(means_frames=inf), ValueError, "means_frames"),
        ("complex", dict(means_frames=good + 1j), TypeError, "means_frames"),
        ("bool", dict(means_frames=good > 0), TypeError, "means_frames"),
        ("zero-var", dict(means_frames=good, variances_frames=zero_var), ValueError,
         "variances_frames"),
        ("neg-var", dict(means_frames=good, variances_frames=neg_var), ValueError,
         "variances_frames"),
        ("nan-var", dict(means_frames=good, variances_frames=nan_var), ValueError,
         "variances_frames"),
        ("var-rows", dict(means_frames=good, variances_frames=np.ones((3, LD))),
         ValueError, "variances_frames"),
        ("var-cols", dict(means_frames=good, variances_frames=np.ones(5)), ValueError,
         "variances_frames"),
        ("neg-prec", dict(means_frames=good, precisions=neg_p), ValueError, "precisions"),
        ("inf-prec", dict(means_frames=good, precisions=inf_p), ValueError, "precisions"),
        ("both", dict(means_frames=good, variances_frames=good, precisions=good), ValueError,
         "variances_frames or precisions"),
    ]


def test_variance_lost_in_conversion_says_so():
    # a float64 variance of 1e-50 is 0.0 in a float32 stream: the message
    # names the conversion (the value it shows is the converted one)
    stream = StreamingMLPG(DELTA, 1, 2, dtype=np.float32)
    v = np.ones((2, 3))
    v[0, 0] = 1e-50
    with pytest.raises(ValueError, match=r"variances_frames\[0, 0\] = .*0\.0.* \(converted "
                                         r"from float64 to the stream's float32\)"):
        stream.push(np.zeros((2, 3)), v)
    with pytest.raises(ValueError, match=r"variances_frames\[0, 0\]") as info:
        stream.push(np.zeros((2, 3), np.float32), v.astype(np.float32))
    assert "converted" not in str(info.value)
    # a widening conversion cannot have made it invalid: not mentioned
    wide = StreamingMLPG(DELTA, 1, 2)
    with pytest.raises(ValueError, match=r"variances_frames\[0, 0\]") as info:
        wide.push(np.zeros((2, 3)), np.array([[0, 1, 1], [1, 1, 1]]))
    assert "converted" not in str(info.value)


@pytest.mark.parametrize("case,kwargs,exc,match", _bad_push_cases(),
                         ids=[c[0] for c in _bad_push_cases()])
def test_bad_push_input_raises_and_changes_nothing(case, kwargs, exc, match):
    means, variances = _data(6, DELTA, 2, seed=1)
    stream = StreamingMLPG(DELTA, 2, 2)
    first = stream.push(means[:3], variances[:3])
    copies = {k: np.array(v, copy=True) for k, v in kwargs.items()}
    for v in kwargs.values():
        v.setflags(write=False)
    with pytest.raises(exc, match=match):
        stream.push(**kwargs)
    for k, v in kwargs.items():
        np.testing.assert_array_equal(v, copies[k])
    # nothing was pushed: the stream goes on exactly as if the call never happened
    assert (stream.frames_pushed, stream.frames_emitted) == (3, 1)
    rest = [stream.push(means[3:], variances[3:]), stream.flush()]
    _assert_close(np.concatenate([first] + rest), _expected(means, 2, variances))


def test_infinite_variances_are_allowed():
    stream = StreamingMLPG(DELTA, 1, 0)
    v = np.array([1.0, np.inf, np.inf])
    assert stream.push(np.ones(3), v).shape == (1, 1)


@pytest.mark.parametrize("delay", [0, 3])
def test_singular_frame_raises_linalgerror_naming_frame_and_dimension(delay):
    T, D = 12, 3
    means, _ = _data(T, as_windows("static"), D)
    precisions = np.ones((T, D))
    precisions[5, 1] = 0.0                 # frame 5, dimension 1: no constraint at all
    with pytest.raises(LinAlgError):       # the batch solver agrees
        mlpgx.mlpg(means, precisions=precisions, windows="static")
    stream = StreamingMLPG("static", D, delay)
    stream.push(means[:5], precisions=precisions[:5])
    with pytest.raises(LinAlgError, match=r"frame t=5, static dimension d=1"):
        stream.push(means[5:], precisions=precisions[5:])
    with pytest.raises(RuntimeError, match="reset"):
        stream.push(means[:1])
    with pytest.raises(RuntimeError, match="reset"):
        stream.flush()
    stream.reset()
    got = np.concatenate([stream.push(means), stream.flush()])
    _assert_close(got, means)              # static window, unit variances: c = mu


def test_all_zero_precision_block_raises_with_delta_windows():
    T, D = 20, 2
    means, _ = _data(T, DELTA, D)
    precisions = np.ones((T, 3 * D))
    precisions[8:13, :] = 0.0              # frames 8..12: every window of every dim
    with pytest.raises(LinAlgError):
        mlpgx.mlpg(means, precisions=precisions)
    stream = StreamingMLPG(DELTA, D, 2)
    with pytest.raises(LinAlgError, match=r"frame t=\d+, static dimension d=0"):
        stream.push(means, precisions=precisions)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("delay", [0, 2, 30])
def test_overflowing_arithmetic_raises_and_needs_a_reset(dtype, delay):
    # Finite, valid frames whose arithmetic overflows (float64: a mean of
    # 1e200 with a variance of 1e-200; float32: deltas of 3e38 that add up
    # beyond its range) give a ValueError, as mlpgx.mlpg does, instead of
    # NaN frames; the stream's state holds the overflow, so it then needs a
    # reset, as after a LinAlgError.
    T, D = 12, 1
    means = np.zeros((T, 3 * D), dtype)
    variances = np.ones((T, 3 * D), dtype)
    if dtype == np.float64:
        means[3, 0], variances[3, 0] = 1e200, 1e-200
    else:
        means[:, 1], variances[:, 0] = 3e38, 1e4
    with pytest.raises(ValueError, match="although means and variances are"):
        mlpgx.mlpg(means, variances)
    stream = StreamingMLPG(DELTA, D, delay, dtype=dtype)
    with pytest.raises(ValueError) as info:
        for t in range(T):
            stream.push(means[t], variances[t])
        stream.flush()
    msg = str(info.value)
    assert re.match(r"emitted frame \d+, dimension 0 is .* although (means_frames and "
                    r"variances_frames|the pushed frames) are finite", msg), msg
    assert ("range of float32" in msg) == (dtype == np.float32) and "reset()" in msg
    with pytest.raises(RuntimeError, match="reset"):
        stream.push(means[0])
    stream.reset()   # then it works as a new stream
    fine = np.random.default_rng(0).uniform(0.5, 2.0, size=(T, 3 * D)).astype(dtype)
    fresh = StreamingMLPG(DELTA, D, delay, dtype=dtype)
    want = np.concatenate([fresh.push(fine, fine), fresh.flush()])
    got = np.concatenate([stream.push(fine, fine), stream.flush()])
    np.testing.assert_array_equal(got, want)


def test_module_doctests_run():
    res = doctest.testmod(mlpgx.streaming, optionflags=doctest.NORMALIZE_WHITESPACE
                          | doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0



@pytest.mark.parametrize("delay", [10**12, 2**62, 2**63 - 1])
def test_absurd_delay_is_a_memory_error_not_a_crash(delay):
    with pytest.raises(MemoryError, match="the state grows with the delay"):
        StreamingMLPG(DELTA, static_dim=60, delay=delay)

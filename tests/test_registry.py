"""The backend registry: built-ins, custom backends, ``use``, capabilities,
availability, entry points.  Every registration is cleaned up."""
from __future__ import annotations

import collections
import importlib.metadata
import threading

import numpy as np
import pytest

import mlpgx
import mlpgx.backends as B
from mlpgx.backends import Backend

from conftest import to_backend, to_numpy

T, D, L = 7, 2, 3


def _problem(seed=0, shape=(T, L * D)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.uniform(0.5, 2.0, size=shape)


def _unregister_all(names):
    """Remove the test's registrations that are still there."""
    for n in names:
        if n in B._REGISTRY:
            B.unregister(n)


@pytest.fixture(autouse=True)
def builtins_intact():
    """Every test must leave the registry as it found it."""
    before = dict(B._REGISTRY)
    yield
    assert dict(B._REGISTRY) == before
    assert B.resolve("auto", np.zeros(1)).name == "cython"


@pytest.fixture
def reg():
    """``reg(name, backend, **kw)`` registers and is undone afterwards."""
    names = []

    def _register(name, backend, **kw):
        out = B.register(name, backend, **kw)
        names.append(name)
        return out

    try:
        yield _register
    finally:
        _unregister_all(names)


class Counting(Backend):
    """Wraps the reference backend and counts calls."""

    name = "counting"
    description = "reference, counted"

    def __init__(self):
        self.calls = collections.Counter()

    @property
    def _ref(self):
        return B.get("reference")

    def forward(self, problem):
        self.calls["forward"] += 1
        return self._ref.forward(problem)

    def adjoint(self, problem, grad_output):
        self.calls["adjoint"] += 1
        return self._ref.adjoint(problem, grad_output)

    def solve(self, problem, rhs):
        self.calls["solve"] += 1
        return self._ref.solve(problem, rhs)


# --------------------------------------------------------------------------
# built-ins and lookup
# --------------------------------------------------------------------------

def test_builtins_available():
    av = B.available()
    assert "cython" in av and "reference" in av
    assert set(av) <= set(B.names())
    assert isinstance(B.get("cython"), Backend)
    assert B.get("cython").name == "cython"
    assert B.get("reference").name == "reference"


@pytest.mark.parametrize("name", ["nope", "CYTHON", "", None, 3])
def test_get_unknown(name):
    with pytest.raises(ValueError, match="known backends") as info:
        B.get(name)
    msg = str(info.value)
    assert "cython" in msg and "reference" in msg


def test_resolve_auto_is_cython_for_numpy():
    assert B.resolve("auto", np.zeros(3)).name == "cython"
    assert B.resolve().name == "cython"


def test_resolve_rejects_garbage():
    with pytest.raises(TypeError, match="backend"):
        B.resolve(3.5, np.zeros(3))


# --------------------------------------------------------------------------
# custom backends
# --------------------------------------------------------------------------

class ReusingOutput(Counting):
    """Declares ``reuses_output`` and records what its adjoint is given."""

    name = "reusing"
    reuses_output = True

    def __init__(self):
        super().__init__()
        self.given = []

    def adjoint(self, problem, grad_output, output=None):
        self.given.append(output)
        return super().adjoint(problem, grad_output)


def test_output_reaches_only_backends_that_reuse_it(reg):
    b = reg("reusing-test", ReusingOutput)
    m, v = _problem()
    g = np.ones((T, D))
    c = mlpgx.mlpg(m, v, backend="reference")
    mlpgx.mlpg_adjoint(g, m, v, backend="reusing-test")
    mlpgx.mlpg_adjoint(g, m, v, output=c.tolist(), backend="reusing-test")
    assert b.given[0] is None
    # validated like grad_output: batched, contiguous, the problem's dtype
    assert b.given[1].shape == (1, T, D) and b.given[1].flags.c_contiguous
    np.testing.assert_array_equal(b.given[1][0], c)
    assert B.get("cython").reuses_output and not B.get("reference").reuses_output
    # verify checks the path that reuses the output too
    rep = mlpgx.verify(m, v, backend="reusing-test")
    assert rep.passed and "grad_means (output=)" in rep.results
    reg("counting-test", Counting)
    assert "grad_means (output=)" not in mlpgx.verify(m, v, backend="counting-test").results


def test_register_custom_and_use_by_name(reg):
    b = reg("counting-test", Counting)          # a class: instantiated
    assert isinstance(b, Counting)
    assert B.get("counting-test") is b
    assert "counting-test" in B.available()
    m, v = _problem()
    g = np.ones((T, D))
    c = mlpgx.mlpg(m, v, backend="counting-test")
    gm, gv = mlpgx.mlpg_adjoint(g, m, v, backend="counting-test")
    x = mlpgx.mlpg_solve(g, v, backend="counting-test")
    assert b.calls == {"forward": 1, "adjoint": 1, "solve": 1}
    # its adjoint takes no output=: one given to mlpg_adjoint is not passed on
    assert not b.reuses_output
    for r, e in zip(mlpgx.mlpg_adjoint(g, m, v, output=c, backend="counting-test"), (gm, gv)):
        np.testing.assert_array_equal(r, e)
    b.calls["adjoint"] -= 1
    np.testing.assert_array_equal(c, mlpgx.mlpg(m, v, backend="reference"))
    np.testing.assert_array_equal(x, mlpgx.mlpg_solve(g, v, backend="reference"))
    # a Backend instance is accepted directly too
    c2 = mlpgx.mlpg(m, v, backend=b)
    assert b.calls["forward"] == 2
    np.testing.assert_array_equal(c, c2)


def test_register_instance(reg):
    inst = Counting()
    assert reg("counting-inst", inst) is inst
    assert B.get("counting-inst") is inst


def test_use_changes_auto_and_restores(reg):
    b = reg("counting-use", Counting)
    m, _ = _problem()
    assert B.resolve("auto", m).name == "cython"
    with B.use("counting-use"):
        assert B.resolve("auto", m) is b
        mlpgx.mlpg(m)
        mlpgx.mlpg_adjoint(np.ones((T, D)), m)
        mlpgx.mlpg_solve(np.ones((T, D)))
        # an explicit name still wins over the default
        assert B.resolve("cython", m).name == "cython"
    assert b.calls == {"forward": 1, "adjoint": 1, "solve": 1}
    assert B.resolve("auto", m).name == "cython"
    mlpgx.mlpg(m)
    assert b.calls["forward"] == 1


def test_use_nested(reg):
    reg("counting-outer", Counting)
    with B.use("counting-outer"):
        with B.use("reference"):
            assert B.resolve("auto").name == "reference"
        assert B.resolve("auto") is B.get("counting-outer")
    assert B.resolve("auto").name == "cython"


def test_use_instance():
    inst = Counting()
    with B.use(inst):
        mlpgx.mlpg(np.ones((T, L * D)))
    assert inst.calls["forward"] == 1
    assert B.resolve("auto").name == "cython"


def test_use_restores_after_exception(reg):
    reg("counting-exc", Counting)
    with pytest.raises(RuntimeError, match="boom"):
        with B.use("counting-exc"):
            assert B.resolve("auto").name == "counting"
            raise RuntimeError("boom")
    assert B.resolve("auto").name == "cython"
    # an error from mlpgx itself inside the block
    with pytest.raises(ValueError, match="means"):
        with B.use("counting-exc"):
            mlpgx.mlpg(np.full((T, L * D), np.nan))
    assert B.resolve("auto").name == "cython"


def test_use_unknown_name_fails_early():
    with pytest.raises(ValueError, match="known backends"):
        with B.use("nope"):
            pass  # pragma: no cover
    assert B.resolve("auto").name == "cython"


@pytest.mark.parametrize("what", [None, 3, b"cython", ["cython"]])
def test_use_rejects_what_is_neither_a_name_nor_a_backend(what):
    with pytest.raises(TypeError, match="backend name or a Backend instance"):
        with B.use(what):
            pass  # pragma: no cover
    assert B.resolve("auto").name == "cython"


def test_get_auto_says_what_auto_is():
    with pytest.raises(ValueError) as info:
        B.get("auto")
    msg = str(info.value)
    assert "array type" in msg and "cython" in msg and "reference" in msg
    assert "known backends: auto" not in msg


def test_use_is_per_thread(reg):
    b = reg("counting-thread", Counting)
    seen = {}
    barrier = threading.Event()

    def worker():
        seen["name"] = B.resolve("auto", np.zeros(1)).name
        seen["out"] = mlpgx.mlpg(np.ones((T, L * D)))
        barrier.set()

    with B.use("counting-thread"):
        th = threading.Thread(target=worker)
        th.start()
        th.join(timeout=30)
        assert barrier.is_set()
        assert B.resolve("auto").name == "counting"
    assert seen["name"] == "cython"
    assert b.calls["forward"] == 0


def test_use_in_other_thread_does_not_leak(reg):
    reg("counting-thread2", Counting)
    inside = threading.Event()
    release = threading.Event()

    def worker():
        with B.use("counting-thread2"):
            inside.set()
            release.wait(timeout=30)

    th = threading.Thread(target=worker)
    th.start()
    try:
        assert inside.wait(timeout=30)
        assert B.resolve("auto").name == "cython"
    finally:
        release.set()
        th.join(timeout=30)


def test_register_duplicate(reg):
    first = reg("dup-test", Counting)
    with pytest.raises(ValueError, match="already registered"):
        B.register("dup-test", Counting)
    assert B.get("dup-test") is first
    second = B.register("dup-test", Counting, replace=True)
    assert second is not first and B.get("dup-test") is second
    # the built-ins are protected the same way
    with pytest.raises(ValueError, match="already registered"):
        B.register("cython", Counting)
    assert B.get("cython").name == "cython"


@pytest.mark.parametrize("obj", [object(), "reference", 3, None, lambda: None,
                                 type("NotABackend", (), {}), np.zeros(3),
                                 B.Backend, B.Backend()])   # (the base class itself)
def test_register_non_backend(obj):
    with pytest.raises(TypeError, match="Backend"):
        B.register("bad-test", obj)
    assert "bad-test" not in B.names()


@pytest.mark.parametrize("name", ["auto", "", None, 3])
def test_register_bad_name(name):
    with pytest.raises(ValueError, match="name"):
        B.register(name, Counting)


def test_register_unknown_operation():
    class Weird(Counting):
        operations = ("forward", "teleport")

    with pytest.raises(ValueError, match="teleport"):
        B.register("weird-test", Weird)
    assert "weird-test" not in B.names()


def test_unregister(reg):
    reg("unreg-test", Counting)
    assert "unreg-test" in B.names()
    B.unregister("unreg-test")
    assert "unreg-test" not in B.names()
    assert "unreg-test" not in B.available()
    with pytest.raises(ValueError, match="unreg-test"):
        B.get("unreg-test")
    with pytest.raises(ValueError, match="unreg-test"):
        mlpgx.mlpg(np.ones((T, L * D)), backend="unreg-test")
    with pytest.raises(ValueError, match="known backends"):
        B.unregister("unreg-test")


# --------------------------------------------------------------------------
# capabilities
# --------------------------------------------------------------------------

class ForwardOnly(Counting):
    name = "forward-only"
    operations = ("forward",)


class Float64Only(Counting):
    name = "float64-only"
    dtypes = ("float64",)


class PerWindowOnly(Counting):
    name = "per-window-only"
    boundaries = ("per-window",)


def test_missing_operation_refused(reg):
    b = reg("forward-only", ForwardOnly)
    m, v = _problem()
    mlpgx.mlpg(m, v, backend="forward-only")
    with pytest.raises(ValueError, match=r"forward-only.*adjoint"):
        mlpgx.mlpg_adjoint(np.ones((T, D)), m, v, backend="forward-only")
    with pytest.raises(ValueError, match=r"forward-only.*solve"):
        mlpgx.mlpg_solve(np.ones((T, D)), v, backend="forward-only")
    assert b.calls == {"forward": 1}


def test_missing_dtype_refused(reg):
    b = reg("float64-only", Float64Only)
    m, v = _problem()
    g = np.ones((T, D))
    mlpgx.mlpg(m, v, backend="float64-only")
    m32, v32, g32 = m.astype(np.float32), v.astype(np.float32), g.astype(np.float32)
    with pytest.raises(TypeError, match=r"float64-only.*float32"):
        mlpgx.mlpg(m32, v32, backend="float64-only")
    with pytest.raises(TypeError, match=r"float64-only.*float32"):
        mlpgx.mlpg_adjoint(g32, m32, v32, backend="float64-only")
    with pytest.raises(TypeError, match=r"float64-only.*float32"):
        mlpgx.mlpg_solve(g32, v32, backend="float64-only")
    assert b.calls == {"forward": 1}


@pytest.mark.parametrize("boundary", ["nnmnkwii", "none"])
def test_missing_boundary_refused(reg, boundary):
    b = reg("per-window-only", PerWindowOnly)
    m, v = _problem()
    g = np.ones((T, D))
    mlpgx.mlpg(m, v, backend="per-window-only", boundary="per-window")
    with pytest.raises(ValueError, match=rf"per-window-only.*{boundary}"):
        mlpgx.mlpg(m, v, backend="per-window-only", boundary=boundary)
    with pytest.raises(ValueError, match=rf"per-window-only.*{boundary}"):
        mlpgx.mlpg_adjoint(g, m, v, backend="per-window-only", boundary=boundary)
    with pytest.raises(ValueError, match=rf"per-window-only.*{boundary}"):
        mlpgx.mlpg_solve(g, v, backend="per-window-only", boundary=boundary)
    assert b.calls == {"forward": 1}


class Unavailable(Counting):
    name = "unavailable"

    def availability(self):
        return False, "needs a flux capacitor"


def test_unavailable_backend(reg):
    b = reg("unavailable-test", Unavailable)
    assert "unavailable-test" in B.names()
    assert "unavailable-test" not in B.available()
    m, v = _problem()
    for call in (lambda: mlpgx.mlpg(m, v, backend="unavailable-test"),
                 lambda: mlpgx.mlpg_adjoint(np.ones((T, D)), m, v, backend="unavailable-test"),
                 lambda: mlpgx.mlpg_solve(np.ones((T, D)), v, backend="unavailable-test"),
                 lambda: mlpgx.mlpg(m, v, backend=b)):
        with pytest.raises(RuntimeError, match="flux capacitor"):
            call()
    with B.use("unavailable-test"):
        with pytest.raises(RuntimeError, match="flux capacitor"):
            mlpgx.mlpg(m, v)
    d = B.describe()["unavailable-test"]
    assert d["available"] is False and "flux capacitor" in d["reason"]
    assert "unavailable" in repr(b) and "flux capacitor" in repr(b)
    assert b.calls == {}


def test_describe():
    desc = B.describe()
    assert set(desc) == set(B.names())
    keys = {"available", "reason", "array_module", "dtypes", "boundaries", "operations",
            "exact", "description"}
    for name, d in desc.items():
        assert keys <= set(d), name
        b = B.get(name)
        assert d["operations"] == tuple(b.operations)
        assert d["dtypes"] == tuple(b.dtypes)
        assert d["boundaries"] == tuple(b.boundaries)
    for name in ("cython", "reference"):
        d = desc[name]
        assert d["available"] is True and d["reason"] == ""
        assert d["array_module"] == "numpy"
        assert set(d["operations"]) == {"forward", "adjoint", "solve"}
        assert set(d["dtypes"]) == {"float32", "float64"}
        assert set(d["boundaries"]) == {"per-window", "nnmnkwii", "none"}
        assert d["exact"] is True
        assert d["description"]


def test_describe_includes_custom(reg):
    reg("forward-only-desc", ForwardOnly)
    d = B.describe()["forward-only-desc"]
    assert d["operations"] == ("forward",) and d["available"] is True


# --------------------------------------------------------------------------
# every registered backend implements what it declares
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(B.available()))
def test_declared_operations_work(name):
    # every declared dtype x boundary x operation runs, on arrays of the
    # backend's own array module (CuPy for "cuda"), and equals the reference
    b = B.get(name)
    ref = B.get("reference")
    rng = np.random.default_rng(1)
    for dtype in b.dtypes:
        for boundary in b.boundaries:
            m = rng.normal(size=(2, T, L * D)).astype(dtype)
            v = rng.uniform(0.5, 2.0, size=(2, T, L * D)).astype(dtype)
            g = rng.normal(size=(2, T, D)).astype(dtype)
            mb, vb, gb = (to_backend(a, b) for a in (m, v, g))
            kw = dict(boundary=boundary, lengths=[T, T - 2])
            tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-9,
                                                                            atol=1e-12)
            if "forward" in b.operations:
                c = mlpgx.mlpg(mb, vb, backend=name, **kw)
                assert type(c) is type(mb)
                c = to_numpy(c)
                assert c.shape == (2, T, D) and c.dtype == np.dtype(dtype)
                if b.exact:
                    np.testing.assert_allclose(c, mlpgx.mlpg(m, v, backend=ref, **kw), **tol)
            if "adjoint" in b.operations:
                gm, gv = (to_numpy(a) for a in mlpgx.mlpg_adjoint(gb, mb, vb, backend=name,
                                                                    **kw))
                assert gm.shape == m.shape and gv.shape == v.shape
                assert gm.dtype == np.dtype(dtype) and gv.dtype == np.dtype(dtype)
                if b.exact:
                    rgm, rgv = mlpgx.mlpg_adjoint(g, m, v, backend=ref, **kw)
                    np.testing.assert_allclose(gm, rgm, **tol)
                    np.testing.assert_allclose(gv, rgv, **tol)
            if "solve" in b.operations:
                x = to_numpy(mlpgx.mlpg_solve(gb, vb, backend=name, **kw))
                assert x.shape == g.shape and x.dtype == np.dtype(dtype)
                if b.exact:
                    np.testing.assert_allclose(
                        x, mlpgx.mlpg_solve(g, v, backend=ref, **kw), **tol)


def test_base_backend_raises_not_implemented(reg):
    class Empty(Backend):
        name = "empty"

    reg("empty-test", Empty)
    m, v = _problem()
    with pytest.raises(NotImplementedError, match="empty"):
        mlpgx.mlpg(m, v, backend="empty-test")


# --------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------

class FakeEntryPoint:
    def __init__(self, name, loader, value="fake_pkg.module:thing"):
        self.name = name
        self.value = value
        self.group = B.ENTRY_POINT_GROUP
        self._loader = loader

    def load(self):
        return self._loader()


@pytest.fixture
def fake_entry_points(monkeypatch):
    """``fake_entry_points(*eps)``: make importlib.metadata report ``eps`` for
    the mlpgx.backends group and force a reload; registrations made through
    them are removed afterwards."""
    added = []

    def _install(*eps):
        def entry_points(*args, **kwargs):
            if kwargs.get("group") == B.ENTRY_POINT_GROUP:
                return list(eps)
            if not args and not kwargs:
                return {B.ENTRY_POINT_GROUP: list(eps)}
            return []

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
        monkeypatch.setattr(B, "_ENTRY_POINTS_LOADED", False)
        added.extend(ep.name for ep in eps if ep.name not in B._REGISTRY)

    try:
        yield _install
    finally:
        _unregister_all(added)


def test_entry_point_subclass(fake_entry_points):
    fake_entry_points(FakeEntryPoint("ep-counting", lambda: Counting))
    assert "ep-counting" in B.available()
    b = B.get("ep-counting")
    assert isinstance(b, Counting)
    m, v = _problem()
    np.testing.assert_array_equal(mlpgx.mlpg(m, v, backend="ep-counting"),
                                  mlpgx.mlpg(m, v, backend="reference"))
    assert b.calls["forward"] == 1
    assert B._ENTRY_POINTS_LOADED is True


def test_entry_point_instance_and_factory(fake_entry_points):
    inst = Counting()
    fake_entry_points(FakeEntryPoint("ep-instance", lambda: inst),
                      FakeEntryPoint("ep-factory", lambda: (lambda: Counting())))
    names = B.names()
    assert "ep-instance" in names and "ep-factory" in names
    assert B.get("ep-instance") is inst
    assert isinstance(B.get("ep-factory"), Counting)


def test_entry_point_does_not_replace_existing(fake_entry_points):
    fake_entry_points(FakeEntryPoint("cython", lambda: Counting))
    assert B.get("cython").name == "cython"
    assert type(B.get("cython")).__name__ == "CythonBackend"


def test_entry_point_loaded_once(fake_entry_points):
    calls = []

    def loader():
        calls.append(1)
        return Counting

    fake_entry_points(FakeEntryPoint("ep-once", loader))
    B.names()
    B.available()
    B.get("ep-once")
    assert calls == [1]


@pytest.mark.parametrize("loader, why", [
    (lambda: (_ for _ in ()).throw(ImportError("no module named fake_pkg")),
     "no module named fake_pkg"),
    (lambda: object, "Backend"),                 # not a backend (object() is no Backend)
    (lambda: (lambda: 42), "Backend"),           # factory returning garbage
])
def test_broken_entry_point_warns(fake_entry_points, loader, why):
    fake_entry_points(FakeEntryPoint("ep-broken", loader),
                      FakeEntryPoint("ep-good", lambda: Counting))
    with pytest.warns(RuntimeWarning, match=r"ep-broken") as rec:
        av = B.available()
    assert any(why in str(w.message) for w in rec), [str(w.message) for w in rec]
    assert "ep-broken" not in B.names()
    assert "ep-good" in av                       # a broken plugin does not stop the others
    assert "cython" in av and "reference" in av
    # mlpgx still works
    m, v = _problem()
    c = mlpgx.mlpg(m, v)
    np.testing.assert_allclose(c, mlpgx.mlpg(m, v, backend="reference"), rtol=1e-9)


def test_problem_init_matches_its_fields():
    # Problem's __init__ is written out (speed); it must take exactly the
    # dataclass fields, with their defaults, and the instance stay frozen.
    import dataclasses
    import inspect

    from mlpgx._problem import Problem
    params = list(inspect.signature(Problem.__init__).parameters.values())[1:]
    fields = dataclasses.fields(Problem)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields):
        want = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default == want, f.name
    pb = mlpgx._validate.make_problem(np.zeros((4, 3)), np.ones((4, 3)), mlpgx.windows.DELTA,
                                      lengths=None)
    assert all(getattr(pb, f.name) is not dataclasses.MISSING for f in fields)
    moved = dataclasses.replace(pb, boundary="none", means_scan_deferred=True)
    assert (moved.boundary, moved.means_scan_deferred, moved.means is pb.means) == \
        ("none", True, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pb.boundary = "none"


@pytest.mark.parametrize("boundary", ["per-window", "nnmnkwii", "none"])
@pytest.mark.parametrize("spec", ["static", "delta", [[1], [1, -1]], [[1], [0, 0, 0, 1, 0]],
                                  [2, 1]])
def test_problem_zero_frame_margin(boundary, spec):
    wins = mlpgx.windows.as_windows(spec)
    D = 2
    pb = mlpgx._validate.make_problem(np.zeros((9, len(wins) * D)), None, wins,
                                      boundary=boundary)
    lo, hi = pb.zero_frame_ranges()
    assert isinstance(pb.zero_frame_margin(), int)
    assert pb.zero_frame_margin() == max(int(lo.max()), int(hi.max()))

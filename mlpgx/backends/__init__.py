"""The backend registry.

A backend is an object implementing :class:`~mlpgx.backends.Backend`
(``forward``, ``adjoint``, ``solve``) and declaring what it supports (array
module, dtypes, boundary rules, operations).  Every public function takes
``backend=``: a registered name, a :class:`Backend` instance, or ``"auto"``,
which picks by array type (NumPy arrays -> ``"cython"``) unless a default has
been set with :func:`use`.

Built in: ``"cython"`` (the fast path), ``"reference"`` (scipy.sparse, the
ground truth) and ``"cuda"`` (CuPy; unavailable without CuPy and a GPU, with
the reason in :func:`describe`).  Third-party packages register more through the entry-point
group ``mlpgx.backends``; the entry point may name a :class:`Backend`
instance, subclass, or a zero-argument factory.

Examples
--------
>>> import mlpgx
>>> {"cython", "reference"} <= set(mlpgx.backends.available())
True
>>> with mlpgx.backends.use("reference"):
...     mlpgx.backends.resolve("auto").name
'reference'
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import warnings
from typing import Dict, List, Union

import numpy as np

from ._base import OPERATIONS, Backend

__all__ = ["Backend", "OPERATIONS", "register", "get", "available", "names", "use",
           "resolve", "describe", "unregister", "for_torch_device"]

_REGISTRY: Dict[str, Backend] = {}
_LOCK = threading.Lock()
_ENTRY_POINTS_LOADED = False
_DEFAULT: contextvars.ContextVar = contextvars.ContextVar("mlpgx_backend", default="auto")
#: ``"auto"`` picks the first available backend for the array's module.
_AUTO_ORDER = {"numpy": ("cython",), "cupy": ("cuda",)}
ENTRY_POINT_GROUP = "mlpgx.backends"


def register(name: str, backend: Union[Backend, type], *, replace: bool = False) -> Backend:
    """Register ``backend`` under ``name``.

    Parameters
    ----------
    name : str
        Registry name (not ``"auto"``).
    backend : Backend or Backend subclass
        Instance (or class, instantiated without arguments).
    replace : bool
        Allow replacing an existing registration.

    Returns
    -------
    Backend
        The registered instance.

    Examples
    --------
    >>> import mlpgx
    >>> class Mine(mlpgx.backends.Backend):
    ...     name = "mine"
    >>> b = mlpgx.backends.register("mine", Mine)
    >>> mlpgx.backends.get("mine") is b
    True
    >>> mlpgx.backends.unregister("mine")
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"backend name must be a non-empty string other than 'auto'; got {name!r}")
    if isinstance(backend, type) and issubclass(backend, Backend):
        backend = backend()
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a mlpgx.backends.Backend instance or subclass; "
                        f"got {type(backend).__name__}")
    if type(backend) is Backend:   # the base class implements no operation
        raise TypeError("backend must be a subclass of mlpgx.backends.Backend (or an "
                        "instance of one), not the base class itself")
    missing = [op for op in backend.operations if op not in OPERATIONS]
    if missing:
        raise ValueError(f"backend {name!r} declares unknown operations {missing}; "
                         f"known: {list(OPERATIONS)}")
    with _LOCK:
        if name in _REGISTRY and not replace and _REGISTRY[name] is not backend:
            raise ValueError(f"a backend named {name!r} is already registered "
                             f"(pass replace=True to replace it)")
        _REGISTRY[name] = backend
    return backend


def unregister(name: str) -> None:
    """Remove a registered backend (built-ins included)."""
    with _LOCK:
        if name not in _REGISTRY:
            raise ValueError(_unknown(name))
        del _REGISTRY[name]


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            obj = ep.load()
            if not isinstance(obj, Backend):
                obj = obj()
            register(ep.name, obj)
        except Exception as exc:  # a broken plugin must not break mlpgx
            warnings.warn(f"mlpgx: could not load backend {ep.name!r} from entry point "
                          f"{ep.value!r}: {exc}", RuntimeWarning, stacklevel=3)


def names() -> List[str]:
    """Every registered backend name, available here or not."""
    _load_entry_points()
    return sorted(_REGISTRY)


def _unknown(name) -> str:
    return f"Unknown backend {name!r}; known backends: {', '.join(['auto'] + names())}"


def get(name: str) -> Backend:
    """The backend registered as ``name`` (``ValueError`` listing the known
    names if there is none)."""
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        if name == "auto":
            raise ValueError(
                "'auto' is not a backend of its own: it picks one by the array type at "
                "each call (resolve('auto', array) says which); registered backends: "
                f"{', '.join(names())}") from None
        raise ValueError(_unknown(name)) from None


def available() -> List[str]:
    """Names of the registered backends that can run here."""
    return [n for n in names() if _REGISTRY[n].availability()[0]]


def describe() -> Dict[str, dict]:
    """What every registered backend supports and whether it can run here."""
    out = {}
    for n in names():
        b = _REGISTRY[n]
        ok, why = b.availability()
        out[n] = dict(available=ok, reason=why, array_module=b.array_module,
                      dtypes=tuple(b.dtypes), boundaries=tuple(b.boundaries),
                      operations=tuple(b.operations), exact=b.exact,
                      torch_devices=tuple(b.torch_devices), description=b.description)
    return out


@contextlib.contextmanager
def use(name: Union[str, Backend]):
    """Make ``name`` the backend that ``backend="auto"`` resolves to, within
    the ``with`` block (per thread / async context).

    Examples
    --------
    >>> import numpy as np, mlpgx
    >>> with mlpgx.backends.use("reference"):
    ...     c = mlpgx.mlpg(np.ones((4, 3)))
    """
    # fail early on what resolve() would reject at the next call
    if isinstance(name, str):
        if name != "auto":
            get(name)
    elif not isinstance(name, Backend):
        raise TypeError(f"use() takes a backend name or a Backend instance; got {name!r}")
    token = _DEFAULT.set(name)
    try:
        yield
    finally:
        _DEFAULT.reset(token)


#: array libraries whose arrays are not NumPy's (their names stay in the
#: error "no backend handles ... arrays"; mlpgx.torch takes tensors)
_FOREIGN_ARRAY_MODULES = ("cupy", "torch", "jax", "jaxlib", "tensorflow")


def _array_module(array) -> str:
    """The array library of ``array``: ``"cupy"`` and the other libraries
    of ``_FOREIGN_ARRAY_MODULES`` by name; anything else (lists, scalars,
    NumPy arrays, memoryviews, objects with ``__array__`` such as pandas
    frames) is converted by NumPy, so counts as ``"numpy"``."""
    if array is None or isinstance(array, (list, tuple, int, float, np.ndarray, np.generic)):
        return "numpy"
    module = type(array).__module__.split(".")[0]
    return module if module in _FOREIGN_ARRAY_MODULES else "numpy"


_DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def _dtype_name(dtype) -> str:
    # str(dtype) costs a microsecond per call; the common ones are looked up
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):
        return str(dtype)


def resolve(backend: Union[str, Backend] = "auto", array=None, *, operation=None,
            dtype=None, boundary=None) -> Backend:
    """Turn ``backend`` (a name, ``"auto"`` or an instance) into a usable
    :class:`Backend` for ``array`` and check it supports the request."""
    if backend == "auto":
        backend = _DEFAULT.get()
    if isinstance(backend, str) and backend == "auto":
        module = _array_module(array)
        order = _AUTO_ORDER.get(module, ())
        for n in order:
            if n in _REGISTRY or n in names():   # (names() loads entry points)
                b = _REGISTRY[n]
                ok, why = b.availability()
                if ok:
                    break
                raise RuntimeError(f"backend {n!r} (the default for {module} arrays) is "
                                   f"unavailable: {why}")
        else:
            raise TypeError(f"no backend handles {module} arrays; known backends: "
                            f"{', '.join(names())}")
    elif isinstance(backend, Backend):
        b = backend
    elif isinstance(backend, str):
        b = get(backend)
    else:
        raise TypeError(f"backend must be a name or a Backend instance; got {backend!r}")
    ok, why = b.availability()
    if not ok:
        raise RuntimeError(f"backend {b.name!r} is unavailable: {why}")
    if operation is not None and operation not in b.operations:
        raise ValueError(f"backend {b.name!r} does not implement {operation!r} "
                         f"(it implements {', '.join(b.operations)})")
    if dtype is not None and _dtype_name(dtype) not in b.dtypes:
        raise TypeError(f"backend {b.name!r} does not compute in {dtype} "
                        f"(it supports {', '.join(b.dtypes)})")
    if boundary is not None and boundary not in b.boundaries:
        raise ValueError(f"backend {b.name!r} does not implement boundary={boundary!r} "
                         f"(it supports {', '.join(b.boundaries)})")
    return b


def for_torch_device(device_type: str) -> Backend:
    """The available backend that provides the kernels of :mod:`mlpgx.torch`
    for torch tensors on ``device_type`` (``"cpu"``, ``"cuda"``).

    Raises
    ------
    RuntimeError
        When no registered backend declares ``device_type`` in its
        ``torch_devices`` or none of those is available (the reasons are
        in the message).

    Examples
    --------
    >>> import mlpgx
    >>> mlpgx.backends.for_torch_device("cpu").name
    'cython'
    """
    reasons = []
    for n in names():
        b = _REGISTRY[n]
        if device_type in b.torch_devices:
            ok, why = b.availability()
            if ok:
                return b
            reasons.append(f"{n}: {why}")
    detail = "; ".join(reasons) if reasons else "no registered backend takes such tensors"
    raise RuntimeError(f"no available backend computes on {device_type} torch tensors "
                       f"({detail})")


def _register_builtins() -> None:
    from .cuda import CudaBackend
    from .cython import CythonBackend
    from .reference import ReferenceBackend

    register("cython", CythonBackend())
    register("reference", ReferenceBackend())
    register("cuda", CudaBackend())


_register_builtins()

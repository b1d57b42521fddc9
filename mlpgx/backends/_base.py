"""The interface every MLPG backend implements."""
from __future__ import annotations

from typing import Optional, Tuple

from .._problem import BOUNDARIES, Problem

#: The operations a backend may provide.
OPERATIONS = ("forward", "adjoint", "solve")


def allocate_outputs(xp, mode: str, problem: Problem, outputs=None, weight_grad=True):
    """Uninitialised outputs of one operation, allocated with ``xp`` (numpy or
    cupy): ``(out, grad_means, grad_weights, grad_weights_acc)``.

    ``out`` ``(B, T, D)`` for forward/solve; for the adjoint ``grad_means``
    ``(B, T, L*D)`` and either ``grad_weights`` (per-frame weights) or a zeroed
    float64 ``(B, L*D)`` accumulator (global weights; summed over B by the
    caller, see :func:`adjoint_result`).  Entries that do not apply are ``None``.

    ``outputs`` (optional): arrays of ``xp`` to write the results into instead
    of allocating them (``mlpgx.torch`` passes views of torch-allocated
    tensors): ``(out,)`` for forward/solve, ``(grad_means, grad_weights)`` for
    the adjoint, C-contiguous, of the problem's dtype, shaped as above
    (``grad_weights``: the shape of ``problem.weights``, ``(L*D,)`` for global
    weights; ``None`` without weights).  The global-weights accumulator is
    still allocated here.  ``weight_grad=False`` (the means-only adjoint):
    neither ``grad_weights`` nor the accumulator.
    """
    if outputs is not None:
        return _preallocated(mode, problem, outputs)
    B, T, D, L = problem.batch_size, problem.n_frames, problem.static_dim, problem.n_windows
    dt = problem.dtype
    if mode != "adjoint":
        return xp.empty((B, T, D), dtype=dt), None, None, None
    gmeans = xp.empty((B, T, L * D), dtype=dt)
    gweights = gw_acc = None
    if not weight_grad:
        pass
    elif problem.weights is not None and not problem.global_weights:
        gweights = xp.empty((B, T, L * D), dtype=dt)
    elif problem.weights is not None:
        gw_acc = xp.zeros((B, L * D), dtype=xp.float64)
    return None, gmeans, gweights, gw_acc


def _preallocated(mode: str, problem: Problem, outputs):
    """:func:`allocate_outputs` for caller-given ``outputs`` (checked, not copied)."""
    B, T, D, L = problem.batch_size, problem.n_frames, problem.static_dim, problem.n_windows
    if mode != "adjoint":
        expected = ((B, T, D),)
    else:
        wshape = None if problem.weights is None else tuple(problem.weights.shape)
        expected = ((B, T, L * D), wshape)
    got = tuple(outputs)
    shapes = tuple(None if a is None else tuple(a.shape) for a in got)
    if shapes != expected or any(a is not None and (a.dtype != problem.dtype or
                                                    not a.flags.c_contiguous) for a in got):
        raise ValueError(f"preallocated outputs for {mode!r} must be C-contiguous "
                         f"{problem.dtype} arrays of shapes {expected}; got shapes {shapes}")
    if mode != "adjoint":
        return got[0], None, None, None
    if problem.weights is None or not problem.global_weights:
        return None, got[0], got[1], None
    from .._validate import array_namespace

    xp = array_namespace(got[0])
    return None, got[0], None, xp.zeros((B, L * D), dtype=xp.float64)


def result_flags(mode: str, problem: Problem, finite: bool) -> tuple:
    """Per-result "tested finite" flags of ``mode``'s results from a kernel's
    one flag ``finite`` (every value it stored tested finite):
    ``(output_finite,)`` for forward/solve, ``(means_finite,
    weights_finite)`` for the adjoint, where a summed global-weight gradient
    is never covered (the sum over frames may overflow)."""
    if mode != "adjoint":
        return (finite,)
    return finite, finite and not problem.global_weights


def adjoint_result(problem: Problem, grad_means, grad_weights, grad_weights_acc,
                   outputs=None):
    """``(grad_means, grad_weights)`` from the buffers of :func:`allocate_outputs`
    after the kernel ran: for global weights the accumulator summed over the
    batch, in the problem's dtype (written into the preallocated
    ``outputs[1]`` when given)."""
    if grad_weights_acc is None:
        return grad_means, grad_weights
    total = grad_weights_acc.sum(axis=0).astype(problem.dtype)
    if outputs is None:
        return grad_means, total
    outputs[1][...] = total
    return grad_means, outputs[1]


class Backend:
    """Base class of MLPG backends.

    A backend receives a validated :class:`mlpgx._problem.Problem` (batched,
    C-contiguous, one dtype) and returns arrays of the problem's dtype from
    its own array module.  Subclasses set the class attributes and implement
    the operations they list in ``operations``.

    Attributes
    ----------
    name : str
        Registry name.
    array_module : str
        Module of the arrays it takes and returns (``"numpy"``, ``"cupy"``).
    dtypes : tuple of str
        dtypes it computes natively.
    boundaries : tuple of str
        Boundary rules it implements.
    operations : tuple of str
        Subset of ``("forward", "adjoint", "solve")``.
    exact : bool
        Whether it is meant to agree with the reference to rounding error.
    torch_devices : tuple of str
        Device types of torch tensors this backend computes on without
        copies (``mlpgx.torch`` registers it as the kernel of its custom ops
        for those devices); empty when it has no torch path.
    handles_voicing : bool
        Whether it applies the voicing (MSD) rule of ``problem.voiced``
        itself.  Otherwise (the default) it receives the equivalent plain
        problem built by :func:`mlpgx._msd.lower` and never sees a mask.
    reuses_output : bool
        Whether its :meth:`adjoint` takes ``output=`` (the forward's result
        for the same problem) and reads ``c`` from it instead of solving for
        it again.  Backends without it are never given one.
    means_only_adjoint : bool
        Whether its :meth:`adjoint` takes ``weight_grad=False`` and then
        computes the means gradient alone (``p_l W_l R^{-1} g``, which reads
        neither the means nor ``c``), returning ``None`` for the weights'
        gradient.  Backends without it are never given the keyword, here or
        in :meth:`adjoint_checked`: the API layer drops the weights' gradient
        they compute.
    nonfinite_means_reach_output : bool
        Whether a NaN or inf in ``problem.means`` at any frame that is at
        least ``windows.max_halfwidth`` frames inside its sequence's ends
        always makes the forward's output, and the adjoint's weight
        gradient, non-finite (IEEE arithmetic on every mean, ``0 * nan``
        included, and no NaN-absorbing operation on the way: a ``NaN``
        right-hand side entry reaches the solution; ``mu - W c`` enters the
        weight gradient at the mean's own entry).  The API layer then scans
        the means after the kernel, and all of them only when that result
        is not finite (see :func:`mlpgx._validate.finish_means_scan`),
        instead of scanning them before every call.

    A backend may also check the per-frame weights it reads while it solves
    (see :meth:`checks_weights`), and report that its results are finite
    without the API layer scanning them (see :meth:`forward_checked`).
    """

    name: str = "base"
    array_module: str = "numpy"
    dtypes: Tuple[str, ...] = ("float32", "float64")
    boundaries: Tuple[str, ...] = BOUNDARIES
    operations: Tuple[str, ...] = OPERATIONS
    exact: bool = True
    torch_devices: Tuple[str, ...] = ()
    handles_voicing: bool = False
    reuses_output: bool = False
    means_only_adjoint: bool = False
    nonfinite_means_reach_output: bool = False
    description: str = ""

    def availability(self) -> Tuple[bool, str]:
        """``(True, "")`` when usable here, else ``(False, reason)``."""
        return True, ""

    def checks_weights(self, problem: Problem) -> bool:
        """Whether this backend, given ``problem`` with
        ``weights_scan_deferred``, checks every weight it reads (all frames
        inside the lengths, but for the windows the boundary rule drops)
        against :func:`mlpgx._validate.weights_range` while it solves, and
        raises the compiled solver's ``WeightsRejected`` when one fails.  The
        API layer then checks the weights it did not read after it (see
        :func:`mlpgx._validate.finish_weights_scan`) instead of scanning them
        all before every call.  ``False`` (the default): the API layer checks
        them before the backend runs, which never sees such a problem."""
        return False

    def forward(self, problem: Problem):
        """Return the static trajectory ``c``, ``(B, T, D)``, zeros for
        frames ``t >= lengths[b]``."""
        raise NotImplementedError(f"backend {self.name!r} has no forward")

    def adjoint(self, problem: Problem, grad_output, output=None,
                weight_grad: bool = True) -> Tuple[object, Optional[object]]:
        """Vector-Jacobian product for ``grad_output`` ``(B, T, D)``.

        ``output`` (only passed to backends with ``reuses_output``): ``None``,
        or the forward's result ``c`` ``(B, T, D)`` for this problem (its
        array module and dtype, C-contiguous, finite inside the lengths),
        read where ``c`` is needed (``dL/dp = (W v)(mu - W c)``) instead of
        solving ``R c = r`` again.  Only ``v = R^{-1} g`` is solved then.

        ``weight_grad`` (``False`` only passed to backends with
        ``means_only_adjoint``): ``False`` computes ``grad_means`` alone, and
        ``grad_weights`` is ``None``.

        Returns ``(grad_means, grad_weights)``: ``grad_means`` ``(B, T, L*D)``;
        ``grad_weights`` has the shape of ``problem.weights`` (summed over
        frames and batch for global weights) and is the gradient w.r.t. the
        variances or the precisions (``problem.weight_kind``); ``None`` when
        ``problem.weights`` is ``None``.  Frames dropped by the boundary rule
        or beyond a sequence's length get exactly 0.
        """
        raise NotImplementedError(f"backend {self.name!r} has no adjoint")

    def forward_checked(self, problem: Problem):
        """``(output, (finite,))``: :meth:`forward`'s result, and ``True``
        when the backend tested every entry of it finite while it computed
        it and found them so; ``False`` when it did not test them or found
        one that is not (the API layer then scans the result, see
        :func:`mlpgx._validate.check_result`).  The default tests nothing."""
        return self.forward(problem), (False,)

    def adjoint_checked(self, problem: Problem, grad_output, output=None,
                        weight_grad: bool = True):
        """``((grad_means, grad_weights), (means_finite, weights_finite))``:
        :meth:`adjoint`'s results, each with ``True`` when the backend tested
        it finite as it computed it (see :meth:`forward_checked`).  The
        default tests nothing.  ``weight_grad`` (``False`` only passed to
        backends with ``means_only_adjoint``): as in :meth:`adjoint`."""
        kw = {} if output is None else {"output": output}
        if not weight_grad:
            kw["weight_grad"] = False
        return self.adjoint(problem, grad_output, **kw), (False, False)

    def solve_checked(self, problem: Problem, rhs):
        """``(x, (finite,))``: :meth:`solve`'s result, with ``True`` when the
        backend tested it finite (see :meth:`forward_checked`).  The default
        tests nothing."""
        return self.solve(problem, rhs), (False,)

    def solve(self, problem: Problem, rhs):
        """Solve ``R x = rhs`` per sequence and static dimension, ``rhs`` and
        the result ``(B, T, D)``; ``problem.means`` is ignored.  Entries of
        ``rhs`` beyond a sequence's length are ignored and come back 0."""
        raise NotImplementedError(f"backend {self.name!r} has no solve")

    def __repr__(self) -> str:
        ok, why = self.availability()
        state = "available" if ok else f"unavailable: {why}"
        return f"<mlpgx backend {self.name!r} ({self.array_module}, {state})>"


class KernelBackend(Backend):
    """A backend whose three operations are one kernel entry point
    ``_run(mode, problem, frames=None, outputs=None)`` with ``mode`` in
    :data:`OPERATIONS` (``frames`` is the upstream gradient or the right-hand
    side); a backend with ``reuses_output`` also takes ``given_output=`` (the
    forward's result) in mode ``"adjoint"``, and one with
    ``means_only_adjoint`` ``weight_grad=False`` (the means gradient alone,
    ``None`` for the weights').  ``outputs``, when given, are preallocated result arrays (see
    :func:`allocate_outputs`) that the kernel writes into and returns; a
    backend listing ``"cuda"`` in ``torch_devices`` must accept them
    (``mlpgx.torch`` passes CuPy views of torch-allocated tensors), and
    ``report_finite=True``, returning ``(result, finite)`` (``finite``: every
    result the kernel stored tested finite; ``False`` when not tested).

    ``tests_results``: whether ``_run(..., report_finite=True)`` reports a
    kernel's own test of its results; then :meth:`forward_checked`,
    :meth:`solve_checked` and :meth:`adjoint_checked` pass it on (see
    :func:`result_flags`) and the API layer does not scan those results."""

    tests_results: bool = False

    def _run(self, mode: str, problem: Problem, frames=None, outputs=None):
        raise NotImplementedError(f"backend {self.name!r} has no kernel")

    def forward_checked(self, problem: Problem):
        if not self.tests_results:
            return super().forward_checked(problem)
        out, finite = self._run("forward", problem, report_finite=True)
        return out, result_flags("forward", problem, finite)

    def solve_checked(self, problem: Problem, rhs):
        if not self.tests_results:
            return super().solve_checked(problem, rhs)
        x, finite = self._run("solve", problem, rhs, report_finite=True)
        return x, result_flags("solve", problem, finite)

    def adjoint_checked(self, problem: Problem, grad_output, output=None,
                        weight_grad: bool = True):
        if not self.tests_results:
            return super().adjoint_checked(problem, grad_output, output, weight_grad)
        if not weight_grad:   # (only with means_only_adjoint)
            (gm, _), finite = self._run("adjoint", problem, grad_output, report_finite=True,
                                        weight_grad=False)
            return (gm, None), (finite, False)
        given = {} if output is None else {"given_output": output}
        grads, finite = self._run("adjoint", problem, grad_output, report_finite=True, **given)
        return grads, result_flags("adjoint", problem, finite)

    def forward(self, problem: Problem):
        return self._run("forward", problem)

    def adjoint(self, problem: Problem, grad_output, output=None, weight_grad=True):
        # (backends without reuses_output, or means_only_adjoint, are never
        # given output, or weight_grad=False)
        kw = {} if output is None else {"given_output": output}
        if not weight_grad:
            kw["weight_grad"] = False
        return self._run("adjoint", problem, grad_output, **kw)

    def solve(self, problem: Problem, rhs):
        return self._run("solve", problem, rhs)

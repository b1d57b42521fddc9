# The solver's implementation, compiled twice: _solver.pyx (baseline
# instruction set) and _solver_avx2.pyx (AVX2 + FMA); see mlpgx/_ext/__init__.py.
#
# Fused banded MLPG solver: R and r formed on the fly, banded LDL^T, both
# substitutions and (in adjoint mode) the gradients, one pass per sequence.
#
# For one sequence of ``n`` frames and one static dimension d,
#
#     R = sum_l W_l^T diag(p_l) W_l,    r = sum_l W_l^T diag(p_l) mu_l,
#
# with half-bandwidth ``k = max_l(left_l + right_l)``.  Row ``i`` of the lower
# triangle is
#
#     R[i, i-a] = sum_l sum_u  w_l[u] w_l[u-a] p_l[i + left_l - u]
#
# so it can be formed from the precisions of frames ``i - Q .. i + P`` only
# (``P``/``Q`` the largest left/right extents), which live in a small ring.
# ``R = L D L^T`` is factored row by row (the last ``k`` rows of L and D stay
# in double-precision rings), the forward substitution runs in the same sweep
# and the factors go to a per-thread scratch of ``n x (k + nrhs)`` rows of the
# input dtype; the back substitution then runs from the end.  All arithmetic is
# float64 whatever the storage dtype; float32 inputs only round the stored
# factors and the results.
#
# Data layout: ``(B, T, L*D)`` rows, contiguous across d.  Frames are the
# outer loop and contiguous d the inner one: each row is processed in tiles of
# TILE (16) columns whose arithmetic is done on generic vectors
# (mlpgx_tile.h), so accumulators stay in registers; work items are
# (sequence, d-range) pairs run in an OpenMP ``prange``.
#
# This general kernel runs any window set.  Sets whose windows reach at most
# one frame to each side (DELTA, every 3-tap set) go to a kernel written for
# that band instead, mlpgx_band2.h: the same mathematics with the band's
# structure fixed at compile time (see _solve_chunk).
#
# Kernels assume validated input (see :mod:`mlpgx._validate`) and never raise:
# a non-positive pivot is returned as an info code and turned into
# ``numpy.linalg.LinAlgError`` after the nogil region.

import os
import threading

import numpy as np
from numpy.linalg import LinAlgError

from cython cimport floating

include "_solver_decl.pxi"
include "_build_info.pxi"
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free, malloc
from libc.string cimport memset
cimport numpy as cnp

cnp.import_array()

cdef extern from "mlpgx_tile.h" nogil:
    # tiles of TILE double lanes (see the header)
    ctypedef struct tile "mlpgx_tile":
        pass
    enum: TILE "MLPGX_TILE"
    tile tile_load(const double* p)
    void tile_store(double* p, tile x)
    tile tile_loadf(const float* p)
    void tile_storef(float* p, tile x)
    tile tile_zero()
    tile tile_axpy(tile acc, double c, tile x)
    tile tile_fnma(tile acc, tile a, tile b)
    tile tile_mul(tile a, tile b)
    tile tile_recip(tile a)
    int tile_any_le(tile a, double c, tile b)

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int mlpgx_max_threads(void) { return omp_get_max_threads(); }
    static int mlpgx_have_openmp(void) { return 1; }
    #else
    static int mlpgx_max_threads(void) { return 1; }
    static int mlpgx_have_openmp(void) { return 0; }
    #endif
    """
    int mlpgx_max_threads() noexcept nogil
    int mlpgx_have_openmp() noexcept nogil

#: Widest column chunk a work item keeps in its rings (doubles); keeps the
#: rings in L1/L2 for any D.  At most MLPGX_B2_RS (mlpgx_band2.h), the row
#: stride of the k <= 2 kernel's rings.
DEF_CHUNK = 64
if DEF_CHUNK > B2_RING_STRIDE:
    raise ImportError("DEF_CHUNK exceeds the k <= 2 kernel's ring stride MLPGX_B2_RS")
#: Chunks start at multiples of this many columns (whole tiles).
CHUNK_ALIGN = TILE

cdef enum:
    # distinct (frame offset, window) pairs a row of R may read: a window of
    # width n contributes n, so this allows e.g. 4 windows of width 64
    MAX_SOURCES = 256
#: A pivot must exceed this fraction of R[i, i]; the pivot of a singular
#: system is rounding noise of order (k + 1) * eps * R[i, i], far below it.
PIVOT_RTOL = 1e-13

MODES = {"forward": MODE_FORWARD, "solve": MODE_SOLVE, "adjoint": MODE_ADJOINT,
         "adjoint_from_output": MODE_ADJOINT_FROM_OUTPUT, "adjoint_means": MODE_ADJOINT_MEANS}
WEIGHT_KINDS = {"variance": KIND_VARIANCE, "precision": KIND_PRECISION, None: KIND_UNIT}


def openmp_enabled():
    """Whether the extension was compiled with OpenMP."""
    return bool(mlpgx_have_openmp())


def max_threads():
    """OpenMP's default thread count (``OMP_NUM_THREADS`` or the cores)."""
    return int(mlpgx_max_threads())


cdef inline Py_ssize_t _pow2_above(Py_ssize_t x):
    cdef Py_ssize_t p = 1
    while p <= x:
        p *= 2
    return p


cdef Py_ssize_t _workspace_doubles(const Plan* pl) noexcept nogil:
    cdef Py_ssize_t CH = pl.chunk, L = pl.L, k = pl.k, nr = pl.nrhs
    cdef Py_ssize_t NR = pl.frame_mask + 1
    cdef Py_ssize_t NF = pl.factor_mask + 1
    cdef Py_ssize_t NS = pl.sol_mask + 1
    # pring, pmring | g row | L ring | 1/D ring | y ring | solution ring
    # | Wv, Wc, p rows | tile temporaries R, E, Lc (k+1 each) and rhs (nr)
    return (CH * (2 * NR * L + 1 + NF * (k + 1) + NF + NF * nr + NS * nr + 3)
            + TILE * (3 * (k + 1) + nr))


cdef inline void _store_tile(floating* p, tile x) noexcept nogil:
    if floating is float:
        tile_storef(p, x)
    else:
        tile_store(p, x)


cdef inline tile _load_tile(const floating* p) noexcept nogil:
    if floating is float:
        return tile_loadf(p)
    else:
        return tile_load(p)


cdef inline bint _writes_gradients(int mode) noexcept nogil:
    # The adjoint modes write dL/dmu (and but for MODE_ADJOINT_MEANS
    # dL/dweights); the others write out.
    return (mode == MODE_ADJOINT or mode == MODE_ADJOINT_FROM_OUTPUT
            or mode == MODE_ADJOINT_MEANS)


cdef inline bint _active(const Plan* pl, Py_ssize_t l, Py_ssize_t t, Py_ssize_t n) noexcept nogil:
    # Window l constrains frame t of an n-frame sequence (boundary rule).
    return t >= 0 and t >= pl.zero_lo[l] and t < n - pl.zero_hi[l]


cdef inline void _precision_row(const Plan* pl, const floating* weights, Py_ssize_t t,
                                Py_ssize_t l, Py_ssize_t d0, Py_ssize_t nd,
                                double* p) noexcept nogil:
    # p[0:nd] = precisions of window l at frame t (caller checked _active).
    cdef Py_ssize_t d
    cdef const floating* w
    if pl.weight_kind == KIND_UNIT:
        for d in range(nd):
            p[d] = 1.0
        return
    w = weights + t * pl.w_row_stride + l * pl.D + d0
    if pl.weight_kind == KIND_VARIANCE:
        for d in range(nd):
            # 1 / inf = 0: "no constraint"; float32 input divides in float32
            p[d] = <double>((<floating>1.0) / w[d])
    else:
        for d in range(nd):
            p[d] = w[d]


cdef inline void _load_frame(const Plan* pl, const floating* means, const floating* weights,
                             Py_ssize_t n, Py_ssize_t t, Py_ssize_t d0, Py_ssize_t nd,
                             double* pring, double* pmring) noexcept nogil:
    # Put the (boundary-masked) precisions of frame t, and p * mu, in the ring.
    cdef Py_ssize_t l, d
    cdef Py_ssize_t slot = t & pl.frame_mask
    cdef double* p
    cdef double* pm
    cdef const floating* mu
    for l in range(pl.L):
        p = pring + (slot * pl.L + l) * pl.chunk
        pm = pmring + (slot * pl.L + l) * pl.chunk
        if not _active(pl, l, t, n):
            memset(p, 0, nd * sizeof(double))
            memset(pm, 0, nd * sizeof(double))
            continue
        _precision_row(pl, weights, t, l, d0, nd, p)
        if means != NULL:
            mu = means + t * pl.LD + l * pl.D + d0
            for d in range(nd):
                pm[d] = p[d] * mu[d]


cdef int _solve_chunk(const Plan* pl, const floating* means, const floating* weights,
                      const floating* g, floating* out, floating* gmeans,
                      floating* gweights, double* gw_acc,
                      Py_ssize_t n, Py_ssize_t d0, Py_ssize_t nd,
                      double* ws, floating* scratch, Py_ssize_t* bad) noexcept nogil:
    """One sequence (arrays point at its first frame), columns d0 .. d0+nd-1.

    Windows reaching at most one frame to each side go to the k <= 2 kernel
    (mlpgx_band2.h); everything else, and a k <= 2 system with a non-positive
    pivot (so that the error names its frame), to the general kernel.
    Returns 0, or 1 with ``bad = (frame, dimension)``; or, when the k <= 2
    kernel's weight check failed (``check_weights``), nonzero with
    ``bad[0] = -2``.  ``bad[2]`` is set to 1 unless the results were tested
    finite and are (the k <= 2 kernel's float64 clones test them, see
    ``mlpgx_b2_run``; the general kernel and the float32 clones do not).
    """
    cdef int status = 1
    cdef bint in_range = True
    # the AVX-512 clones where they run and pay: the standalone adjoint
    # only where _avx512_adjoint (Intel: faster there; slower beyond
    # T = 1000 on the AMD Zen 5, see mlpgx_band2.h)
    cdef bint wide = _use_avx512 and (pl.mode != MODE_ADJOINT or _avx512_adjoint)
    if pl.band2 != NULL:
        if floating is float:
            if wide:
                status = mlpgx_b2_run_f512(pl.band2, means, weights, g, out, gmeans, gweights,
                                           gw_acc, n, d0, nd, ws, scratch)
            else:
                status = mlpgx_b2_run_f(pl.band2, means, weights, g, out, gmeans, gweights,
                                        gw_acc, n, d0, nd, ws, scratch)
        else:
            if wide:
                status = mlpgx_b2_run_d512(pl.band2, means, weights, g, out, gmeans, gweights,
                                           gw_acc, n, d0, nd, ws, scratch)
            else:
                status = mlpgx_b2_run_d(pl.band2, means, weights, g, out, gmeans, gweights,
                                        gw_acc, n, d0, nd, ws, scratch)
    if status & 2:   # an invalid weight: the validation layer names it
        bad[0] = -2
        return status
    if floating is float:
        bad[2] = 1
    elif status & 4:
        bad[2] = 1   # (a result that is not finite: the validation layer names it)
    # (without the k <= 2 kernel status is still 1: the general kernel below
    # sets bad[2])
    status &= ~4
    if _always_rerun_general and pl.band2 != NULL:
        status = 1
    if status != 0:
        bad[2] = 1   # (the general kernel tests no results)
        status = _solve_chunk_general(pl, means, weights, g, out, gmeans, gweights, gw_acc,
                                      n, d0, nd, ws, scratch, bad)
        if status != 0:
            return status
        # (the general kernel solved a system whose pivot the k <= 2 kernel
        # found non-positive, a rounding borderline: the weights of the rows
        # that kernel did not reach are checked here)
        if pl.band2 != NULL and pl.band2.check_weights:
            if floating is float:
                in_range = mlpgx_b2_weights_in_range_f(pl.band2, weights, n, d0, nd)
            else:
                in_range = mlpgx_b2_weights_in_range_d(pl.band2, weights, n, d0, nd)
        if not in_range:
            bad[0] = -2
            return 2
    # ---- frames beyond the sequence's length are 0
    cdef Py_ssize_t t, l
    for t in range(n, pl.T):
        if _writes_gradients(pl.mode):
            for l in range(pl.L):
                memset(gmeans + t * pl.LD + l * pl.D + d0, 0, nd * sizeof(floating))
                if gweights != NULL:
                    memset(gweights + t * pl.LD + l * pl.D + d0, 0, nd * sizeof(floating))
        else:
            memset(out + t * pl.D + d0, 0, nd * sizeof(floating))
    return 0


cdef int _solve_chunk_general(const Plan* pl, const floating* means, const floating* weights,
                              const floating* g, floating* out, floating* gmeans,
                              floating* gweights, double* gw_acc,
                              Py_ssize_t n, Py_ssize_t d0, Py_ssize_t nd,
                              double* ws, floating* scratch, Py_ssize_t* bad) noexcept nogil:
    """The general kernel: one sequence, columns d0 .. d0+nd-1, rows < n.

    Row i is processed in tiles of TILE columns whose inner loops have a
    constant trip count, so the compiler keeps the accumulators in vector
    registers.  Lanes past ``nd`` in the last tile are padding: their
    precisions are 1 and their right-hand sides 0, so they stay finite and
    are never stored.  Returns 0, or 1 with ``bad = (frame, dimension)`` of a
    non-positive pivot.
    """
    cdef Py_ssize_t CH = pl.chunk, L = pl.L, k = pl.k, nr = pl.nrhs
    cdef Py_ssize_t P = pl.P, D = pl.D, LD = pl.LD
    cdef Py_ssize_t NR = pl.frame_mask + 1, NF = pl.factor_mask + 1, NS = pl.sol_mask + 1
    cdef Py_ssize_t S = (k + nr) * CH      # scratch row stride
    cdef double* pring = ws                         # (NR, L, CH) precisions
    cdef double* pmring = pring + NR * L * CH       # (NR, L, CH) precision * mean
    cdef double* grow = pmring + NR * L * CH        # (CH,) g at row i
    cdef double* Lring = grow + CH                  # (NF, k+1, CH): L[j, j-a]
    cdef double* Dinv = Lring + NF * (k + 1) * CH   # (NF, CH): 1 / D[j]
    cdef double* yring = Dinv + NF * CH             # (NF, nr, CH): forward substitution
    cdef double* sring = yring + NF * nr * CH       # (NS, nr, CH): solutions c, v
    cdef double* Wv = sring + NS * nr * CH
    cdef double* Wc = Wv + CH
    cdef double* prow = Wc + CH
    cdef double* Rt = prow + CH                     # (k+1, TILE): R[i, i-a]
    cdef double* Et = Rt + (k + 1) * TILE           # (k+1, TILE): L[i, i-a] D[i-a]
    cdef double* Lt = Et + (k + 1) * TILE           # (k+1, TILE): L[i, i-a]
    cdef double* rt = Lt + (k + 1) * TILE           # (nr, TILE): right-hand sides
    cdef tile vacc, vpiv, vdinv
    cdef double piv[TILE]
    cdef const double* psrc[MAX_SOURCES]   # p ring rows of frame i + shift, window l
    cdef const double* pmsrc[MAX_SOURCES]  # p*mu ring rows of the same
    cdef Py_ssize_t i, t, a, b, j, d, dd, l, r, u, jo, term, amax, bmax, fslot, jslot, islot
    cdef Py_ssize_t jt, q
    cdef Py_ssize_t ntiles = (nd + TILE - 1) // TILE
    cdef double coef
    cdef const double* src
    cdef double* dst
    cdef double* x
    cdef const double* y
    cdef const floating* gi
    cdef const floating* mu
    cdef floating* o
    cdef floating* sc
    cdef const floating* scl
    cdef floating* gw
    cdef const floating* crow
    # the forward's output given: c is read from out, never solved for
    cdef bint given = pl.mode == MODE_ADJOINT_FROM_OUTPUT
    # the means-only adjoint: no c at all, no weight gradient
    cdef bint means_only = pl.mode == MODE_ADJOINT_MEANS
    cdef bint grads = _writes_gradients(pl.mode)
    # the sweep reads the means for r only
    cdef const floating* sweep_means = means
    if given or means_only:
        sweep_means = NULL
    cdef bint has_means = sweep_means != NULL

    # padding lanes: precision 1 for every window and frame, everything else 0
    memset(ws, 0, _workspace_doubles(pl) * sizeof(double))
    for j in range(NR * L):
        for d in range(nd, CH):
            pring[j * CH + d] = 1.0

    # ---- forward sweep: form row i of R and r, factor it, forward-substitute
    for t in range(-pl.Q, P):
        _load_frame(pl, sweep_means, weights, n, t, d0, nd, pring, pmring)
    for i in range(n):
        _load_frame(pl, sweep_means, weights, n, i + P, d0, nd, pring, pmring)
        if g != NULL:
            gi = g + i * D + d0
            for d in range(nd):
                grow[d] = gi[d]
        amax = k if k < i else i
        fslot = i & pl.factor_mask
        sc = scratch + i * S
        for q in range(pl.n_sources):
            j = (((i + pl.source_shift[q]) & pl.frame_mask) * L + pl.source_window[q]) * CH
            psrc[q] = pring + j
            pmsrc[q] = pmring + j
        for jt in range(ntiles):
            jo = jt * TILE
            # R[i, i-a] = sum over terms of coef * p_l[i + shift]
            for a in range(amax + 1):
                vacc = tile_zero()
                for term in range(pl.rterm_lag_start[a], pl.rterm_lag_start[a + 1]):
                    vacc = tile_axpy(vacc, pl.rterm_coef[term], tile_load(psrc[pl.rterm_source[term]] + jo))
                tile_store(Rt + a * TILE, vacc)
            r = 0
            if has_means:
                vacc = tile_zero()
                for term in range(pl.n_vterms):
                    vacc = tile_axpy(vacc, pl.vterm_coef[term], tile_load(pmsrc[pl.vterm_source[term]] + jo))
                tile_store(rt, vacc)
                r = 1
            if g != NULL:
                tile_store(rt + r * TILE, tile_load(grow + jo))

            # L[i, i-a] for a = amax .. 1, then the pivot D[i]
            for a in range(amax, 0, -1):
                jslot = (i - a) & pl.factor_mask
                vacc = tile_load(Rt + a * TILE)
                for b in range(a + 1, amax + 1):
                    vacc = tile_fnma(vacc, tile_load(Et + b * TILE),
                                   tile_load(Lring + (jslot * (k + 1) + (b - a)) * CH + jo))
                tile_store(Et + a * TILE, vacc)
                tile_store(Lt + a * TILE, tile_mul(vacc, tile_load(Dinv + jslot * CH + jo)))
            vpiv = tile_load(Rt)
            for a in range(1, amax + 1):
                vpiv = tile_fnma(vpiv, tile_load(Et + a * TILE), tile_load(Lt + a * TILE))
            # (pivots depend only on the validated precisions: never NaN)
            if tile_any_le(vpiv, pl.pivot_rtol, tile_load(Rt)):
                tile_store(piv, vpiv)
                for dd in range(min(TILE, nd - jo)):
                    if not (piv[dd] > pl.pivot_rtol * Rt[dd]):
                        bad[0] = i
                        bad[1] = d0 + jo + dd
                        return 1

            vdinv = tile_recip(vpiv)
            tile_store(Dinv + fslot * CH + jo, vdinv)
            for a in range(1, amax + 1):
                vacc = tile_load(Lt + a * TILE)
                tile_store(Lring + (fslot * (k + 1) + a) * CH + jo, vacc)
                _store_tile(sc + (a - 1) * CH + jo, vacc)
            for r in range(nr):
                vacc = tile_load(rt + r * TILE)
                for a in range(1, amax + 1):
                    vacc = tile_fnma(vacc, tile_load(Lt + a * TILE),
                                   tile_load(yring + (((i - a) & pl.factor_mask) * nr + r) * CH + jo))
                tile_store(yring + (fslot * nr + r) * CH + jo, vacc)
                _store_tile(sc + (k + r) * CH + jo, tile_mul(vacc, vdinv))

    # ---- back substitution from the end; in adjoint mode frame t = i + P is
    # complete once row i is solved, so its gradients are written right away
    i = n - 1
    while i >= (-P if grads else 0):
        if i >= 0:
            islot = i & pl.sol_mask
            bmax = k if k < n - 1 - i else n - 1 - i
            for jt in range(ntiles):
                jo = jt * TILE
                for r in range(nr):
                    vacc = _load_tile(scratch + i * S + (k + r) * CH + jo)
                    for b in range(1, bmax + 1):
                        vacc = tile_fnma(vacc, _load_tile(scratch + (i + b) * S + (b - 1) * CH + jo),
                                       tile_load(sring + (((i + b) & pl.sol_mask) * nr + r) * CH + jo))
                    tile_store(sring + (islot * nr + r) * CH + jo, vacc)
            if not grads:
                src = sring + islot * nr * CH
                o = out + i * D + d0
                for d in range(nd):
                    o[d] = <floating>src[d]
        t = i + P
        if grads and t < n:
            # the rows read next (mlpgx_band2.h)
            mlpgx_prefetch_grad_rows(means, weights, t, <int>L, D, LD, pl.w_row_stride, d0, nd,
                                     sizeof(floating))
            for l in range(L):
                o = gmeans + t * LD + l * D + d0
                gw = NULL
                if gweights != NULL:
                    gw = gweights + t * LD + l * D + d0
                if not _active(pl, l, t, n):
                    memset(o, 0, nd * sizeof(floating))
                    if gw != NULL:
                        memset(gw, 0, nd * sizeof(floating))
                    continue
                # W_l c and W_l v at frame t (the solutions are c: 0, v: 1;
                # v alone when c is given)
                for jt in range(ntiles):
                    jo = jt * TILE
                    vacc = tile_zero()
                    vpiv = tile_zero()
                    for u in range(pl.win_width[l]):
                        j = t - pl.win_left[l] + u
                        coef = pl.coeffs[pl.win_offset[l] + u]
                        if j < 0 or j >= n or coef == 0.0:
                            continue
                        src = sring + (j & pl.sol_mask) * nr * CH + jo
                        if not (given or means_only):
                            vacc = tile_axpy(vacc, coef, tile_load(src))
                        vpiv = tile_axpy(vpiv, coef, tile_load(src + (nr - 1) * CH))
                    tile_store(Wc + jo, vacc)
                    tile_store(Wv + jo, vpiv)
                if given:
                    # W_l c from the output's rows (element-wise: a whole
                    # tile could read past the end of the array)
                    for u in range(pl.win_width[l]):
                        j = t - pl.win_left[l] + u
                        coef = pl.coeffs[pl.win_offset[l] + u]
                        if j < 0 or j >= n or coef == 0.0:
                            continue
                        crow = out + j * D + d0
                        for d in range(nd):
                            Wc[d] += coef * crow[d]
                _precision_row(pl, weights, t, l, d0, nd, prow)
                # dL/dmu = p W v;  dL/dp = (W v)(mu - W c);  dL/dvar = -p^2 dL/dp,
                # formed as -(p W v)(p (mu - W c)) (p^2 alone overflows for
                # variances below ~1e-154 where the gradient is finite)
                for d in range(nd):
                    o[d] = <floating>(prow[d] * Wv[d])
                if pl.weight_kind == KIND_UNIT or means_only:
                    continue
                mu = means + t * LD + l * D + d0
                if pl.weight_kind == KIND_VARIANCE:
                    for d in range(nd):
                        Wc[d] = -(prow[d] * Wv[d]) * (prow[d] * (mu[d] - Wc[d]))
                else:
                    for d in range(nd):
                        Wc[d] = Wv[d] * (mu[d] - Wc[d])
                if gw != NULL:
                    for d in range(nd):
                        gw[d] = <floating>Wc[d]
                else:
                    x = gw_acc + l * D + d0
                    for d in range(nd):
                        x[d] += Wc[d]
        i -= 1
    return 0


def _window_tables(windows, zero_lo, zero_hi):
    """Flatten a WindowSet into the arrays the Plan points at."""
    L = len(windows)
    win_left = np.array([w.left for w in windows], dtype=np.intp)
    win_width = np.array([w.left + w.right + 1 for w in windows], dtype=np.intp)
    win_offset = np.zeros(L, dtype=np.intp)
    win_offset[1:] = np.cumsum(win_width)[:L - 1]
    coeffs = np.concatenate([np.asarray(w.coeffs, dtype=np.float64) for w in windows])
    rl, rs, ra, rc, vl, vs, vc = [], [], [], [], [], [], []
    for l, w in enumerate(windows):
        c = w.coeffs
        for u in range(len(c)):
            if c[u] == 0.0:
                continue
            vl.append(l); vs.append(w.left - u); vc.append(c[u])
            for a in range(u + 1):
                if c[u - a] != 0.0:
                    rl.append(l); rs.append(w.left - u); ra.append(a); rc.append(c[u] * c[u - a])
    # distinct (shift, window) pairs: the ring rows one row of R and r reads
    sources = sorted(set(zip(rs, rl)) | set(zip(vs, vl)))
    if len(sources) > MAX_SOURCES:
        # (the general kernel's fixed-size table; the reference backend has none)
        raise ValueError(f"windows: {len(sources)} distinct (offset, window) terms; "
                         f"at most {MAX_SOURCES} are supported by the 'cython' backend; "
                         "backend='reference' solves any window set")
    src_index = {sw: q for q, sw in enumerate(sources)}
    rq = [src_index[(a, b)] for a, b in zip(rs, rl)]
    vq = [src_index[(a, b)] for a, b in zip(vs, vl)]
    order = sorted(range(len(ra)), key=lambda q: ra[q])
    rq = [rq[q] for q in order]
    rl, rs, ra, rc = ([v[q] for q in order] for v in (rl, rs, ra, rc))
    k = windows.bandwidth
    lag_start = np.searchsorted(np.array(ra, dtype=np.intp), np.arange(k + 2), side="left")
    ip = lambda v: np.array(v, dtype=np.intp).reshape(-1)
    fp = lambda v: np.array(v, dtype=np.float64).reshape(-1)
    return dict(
        win_left=win_left, win_width=win_width, win_offset=win_offset, coeffs=coeffs,
        zero_lo=np.ascontiguousarray(zero_lo, dtype=np.intp),
        zero_hi=np.ascontiguousarray(zero_hi, dtype=np.intp),
        rterm_coef=fp(rc),
        rterm_lag_start=ip(lag_start), rterm_source=ip(rq), vterm_source=ip(vq),
        source_shift=ip([sw[0] for sw in sources]), source_window=ip([sw[1] for sw in sources]),
        vterm_coef=fp(vc),
    )


cdef const Py_ssize_t* _ip(object a):
    cdef const Py_ssize_t[::1] mv = a
    return &mv[0] if mv.shape[0] else NULL


cdef const double* _dp(object a):
    cdef const double[::1] mv = a
    return &mv[0] if mv.shape[0] else NULL


#: Scratch buffers up to this size are kept for the next call of the same
#: Python thread: a fresh buffer costs a page fault per 4 KiB, which for long
#: sequences is as expensive as the solve itself.
SCRATCH_CACHE_BYTES = 256 * 2**20
_scratch_cache = threading.local()


#: Doubles of slack that let a buffer start on a 64-byte boundary.
ALIGN_DOUBLES = 8


cdef inline void* _aligned(void* p) noexcept:
    # the first 64-byte boundary at or after p (p is at least 4-byte aligned)
    return <void*>((<size_t>p + 63) & ~(<size_t>63))


def _scratch_buffer(Py_ssize_t size, dtype):
    """A flat array of at least ``size`` elements of ``dtype``, reused between calls."""
    key = np.dtype(dtype).char
    cache = getattr(_scratch_cache, "buffers", None)
    if cache is None:
        cache = _scratch_cache.buffers = {}
    buf = cache.get(key)
    if buf is None or buf.shape[0] < size:
        buf = np.empty(max(size, 1), dtype=dtype)
        if buf.nbytes <= SCRATCH_CACHE_BYTES:
            cache[key] = buf
        else:
            cache.pop(key, None)
    return buf


def _plan_threads(Py_ssize_t B, Py_ssize_t D, Py_ssize_t T, num_threads):
    """Thread count and the d-ranges each sequence is split into.

    Whole sequences are the work items while there are enough of them; only
    when ``B`` is smaller than the thread count is D split (in multiples of
    ``CHUNK_ALIGN`` columns).
    """
    if num_threads is None:
        nthreads = max_threads()
        # OpenMP start-up costs more than a small problem takes.
        if B * T * D < 20000:
            nthreads = 1
    else:
        nthreads = int(num_threads)
    nthreads = max(1, min(nthreads, B * max(1, -(-D // CHUNK_ALIGN))))
    nsplit = 1 if B >= nthreads else min(-(-nthreads // B), -(-D // CHUNK_ALIGN))
    width = -(-D // nsplit)
    width = -(-width // CHUNK_ALIGN) * CHUNK_ALIGN
    starts = list(range(0, D, width))
    return nthreads, starts, width


#: Whether sets of windows reaching at most one frame to each side use the
#: k <= 2 kernel (mlpgx_band2.h).  Tests set it to False to check the general
#: kernel on the same inputs.
USE_BAND2 = True

#: Whether the k <= 2 kernel runs its AVX-512 clones (mlpgx_band2.h): on CPUs
#: with AVX-512F/VL/DQ, in builds that have them (the AVX2 build with GCC).
#: ``MLPGX_AVX512=0`` turns them off; :func:`use_avx512` switches them.
cdef bint _use_avx512 = (mlpgx_b2_cpu_avx512() != 0
                         and os.environ.get("MLPGX_AVX512", "1") not in ("0", ""))


#: Whether the standalone adjoint (mode "adjoint") runs the AVX-512 clones
#: too, where :data:`_use_avx512` is on: on Intel CPUs (mlpgx_band2.h,
#: mlpgx_b2_cpu_intel); :func:`avx512_adjoint` switches it.
cdef bint _avx512_adjoint = mlpgx_b2_cpu_intel() != 0


def avx512_adjoint(flag=None):
    """Whether the standalone adjoint runs the k <= 2 kernel's AVX-512 clones
    (while :func:`use_avx512` is on; by default on Intel CPUs, where they
    measured faster for it); ``flag`` switches it.  Returns the setting
    before the call.  Not for use while another thread runs the solver."""
    global _avx512_adjoint
    before = bool(_avx512_adjoint)
    if flag is not None:
        _avx512_adjoint = bool(flag)
    return before


def avx512_available():
    """Whether this build has the kernel's AVX-512 clones and this CPU runs them."""
    return mlpgx_b2_cpu_avx512() != 0


def use_avx512(flag=None):
    """Whether the k <= 2 kernel runs its AVX-512 clones; ``flag`` switches
    them on (where :func:`avx512_available`) or off.  Returns the setting
    before the call.  Not for use while another thread runs the solver."""
    global _use_avx512
    before = bool(_use_avx512)
    if flag is not None:
        if flag and not avx512_available():
            raise ValueError("the AVX-512 clones are not in this build or this CPU lacks "
                             "AVX-512F/VL/DQ")
        _use_avx512 = bool(flag)
    return before


def _band2_fits(windows):
    # every window reaches at most one frame to each side, and few enough windows
    return (len(windows) <= B2_MAX_WINDOWS
            and windows.max_left <= 1 and windows.max_right <= 1)


def band2_applies(windows):
    """Whether ``run`` gives these windows to the k <= 2 kernel."""
    return USE_BAND2 and _band2_fits(windows)


#: Tests set it (``_rerun_general``) to make every k <= 2 solve rerun on the
#: general kernel, the path of a pivot the k <= 2 kernel found non-positive.
cdef bint _always_rerun_general = False


def _rerun_general(flag):
    """Tests: whether every k <= 2 solve is redone by the general kernel, as
    after a non-positive pivot (returns the previous setting)."""
    global _always_rerun_general
    before = _always_rerun_general
    _always_rerun_general = bool(flag)
    return before


class WeightsRejected(ValueError):
    """Raised by :func:`run` when its ``check_weights`` found a weight outside
    the range it was given.  The validation layer catches it and scans the
    weights to name the first bad entry (mlpgx._validate.finish_weights_scan)."""


cdef class _WindowPlan:
    """The window fields of a Plan (and of the k <= 2 kernel's plan) for one
    window set and boundary margins, flattened once and kept for later calls:
    rebuilding them cost more than solving a short sequence."""
    cdef object tables          # the arrays ``base``'s pointers point into
    cdef Plan base              # window fields; sizes and mode are set per call
    cdef bint band2             # the k <= 2 kernel can run these windows
    cdef mlpgx_b2plan b2        # its coefficients and margins

    def __cinit__(self, windows, zero_lo, zero_hi):
        cdef Py_ssize_t l, u
        tables = _window_tables(windows, zero_lo, zero_hi)
        for a in tables.values():
            a.setflags(write=False)
        self.tables = tables
        memset(&self.base, 0, sizeof(Plan))
        self.base.L = len(windows)
        self.base.P = windows.max_left
        self.base.Q = windows.max_right
        self.base.k = windows.bandwidth
        self.base.frame_mask = _pow2_above(self.base.P + self.base.Q) - 1
        self.base.factor_mask = _pow2_above(self.base.k) - 1
        self.base.sol_mask = _pow2_above(max(self.base.P + self.base.Q, self.base.k)) - 1
        self.base.pivot_rtol = PIVOT_RTOL
        self.base.win_left = _ip(tables["win_left"])
        self.base.win_width = _ip(tables["win_width"])
        self.base.win_offset = _ip(tables["win_offset"])
        self.base.coeffs = _dp(tables["coeffs"])
        self.base.zero_lo = _ip(tables["zero_lo"])
        self.base.zero_hi = _ip(tables["zero_hi"])
        self.base.rterm_coef = _dp(tables["rterm_coef"])
        self.base.rterm_lag_start = _ip(tables["rterm_lag_start"])
        self.base.rterm_source = _ip(tables["rterm_source"])
        self.base.vterm_source = _ip(tables["vterm_source"])
        self.base.n_sources = tables["source_shift"].shape[0]
        self.base.source_shift = _ip(tables["source_shift"])
        self.base.source_window = _ip(tables["source_window"])
        self.base.n_vterms = tables["vterm_coef"].shape[0]
        self.base.vterm_coef = _dp(tables["vterm_coef"])
        self.base.band2 = NULL
        memset(&self.b2, 0, sizeof(mlpgx_b2plan))
        self.band2 = _band2_fits(windows)
        if self.band2:
            self.b2.L = <int>self.base.L
            self.b2.pivot_rtol = PIVOT_RTOL
            for l, w in enumerate(windows):
                # coefficient u sits on frame offset u - left, in {-1, 0, 1}
                for u, c in enumerate(w.coeffs):
                    self.b2.w[l][u - w.left + 1] = c
                self.b2.zero_lo[l] = self.base.zero_lo[l]
                self.b2.zero_hi[l] = self.base.zero_hi[l]


#: (windows, zero_lo, zero_hi) -> _WindowPlan; cleared when it grows past
#: _PLAN_CACHE_SIZE entries (a program uses a handful of window sets).
_plans = {}
_PLAN_CACHE_SIZE = 64


cdef _WindowPlan _window_plan(windows, zero_lo, zero_hi):
    key = (windows, tuple(np.asarray(zero_lo).tolist()), tuple(np.asarray(zero_hi).tolist()))
    wp = _plans.get(key)
    if wp is None:
        wp = _WindowPlan(windows, key[1], key[2])
        if len(_plans) >= _PLAN_CACHE_SIZE:
            _plans.clear()
        _plans[key] = wp
    return wp


cdef void* _data(a, int typenum, Py_ssize_t need, bint writable, str name) except NULL:
    # The address of a validated array's first element, after the checks
    # that the kernels' assumptions rest on.
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{name} has dtype {arr.dtype}, expected "
                        f"{np.dtype(cnp.PyArray_DescrFromType(typenum))}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be C-contiguous")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} must be writable")
    if cnp.PyArray_SIZE(arr) < max(need, 1):
        raise ValueError(f"{name} has {cnp.PyArray_SIZE(arr)} elements, expected {need}")
    return cnp.PyArray_DATA(arr)


def run(str mode, windows, zero_lo, zero_hi, weight_kind,
        means, weights, g, out, gmeans, gweights, gw_acc,
        lengths, Py_ssize_t T, Py_ssize_t D,
        bint has_means, bint has_weights, bint global_weights, bint has_g,
        bint has_gweights, bint has_gw_acc, num_threads=None, check_weights=None):
    """Run the solver over a batch (C-contiguous arrays of any shape, read
    as flat; validated).

    means (B*T*L*D), weights (B*T*L*D or L*D), g (B*T*D); outputs out
    (B*T*D) for forward/solve, gmeans and gweights (B*T*L*D) or gw_acc
    (B*L*D, float64, zeroed) for adjoint; all of one float dtype (gw_acc
    float64), lengths intp.  Mode ``"adjoint_from_output"`` is the adjoint
    with ``out`` an input: the forward's output c for these inputs, read
    instead of solved for (one right-hand side, g); ``"adjoint_means"`` the
    adjoint's means gradient alone (one right-hand side, g; reads neither
    ``out`` nor the means, writes ``gmeans`` only: gweights and gw_acc must
    be absent).  Absent arrays are
    placeholders flagged by the ``has_*`` arguments.  Raises LinAlgError naming the sequence, frame and
    dimension of a non-positive pivot.  Returns ``(kernel, results_finite)``:
    the kernel planned, ``"band2"`` (windows reaching at most one frame to
    each side, see mlpgx_band2.h) or ``"general"`` (``"none"`` for an empty
    batch); and whether the results (``out``; or ``gmeans`` and ``gweights``,
    not ``gw_acc``) were tested finite as the kernel stored them and are.
    ``False`` says only that they were not shown finite: the k <= 2 kernel
    tests them in float64, the general kernel and float32 do not.

    ``check_weights``: ``None``, or ``(lo, hi)``: the k <= 2 kernel then checks
    every weight it reads (those of the frames and windows the boundary rule
    keeps, inside the lengths) to lie in ``[lo, hi]``, NaN failing, and
    :class:`WeightsRejected` is raised when one does not.  The general kernel
    checks nothing (see :func:`band2_applies`).
    """
    dtype = (gmeans if _writes_gradients(MODES[mode]) else out).dtype
    if dtype == np.float64:
        return _run_typed[double](mode, windows, zero_lo, zero_hi, weight_kind, means, weights,
                                  g, out, gmeans, gweights, gw_acc, lengths, T, D, has_means,
                                  has_weights, global_weights, has_g, has_gweights,
                                  has_gw_acc, num_threads, check_weights, cnp.NPY_DOUBLE)
    if dtype == np.float32:
        return _run_typed[float](mode, windows, zero_lo, zero_hi, weight_kind, means, weights,
                                 g, out, gmeans, gweights, gw_acc, lengths, T, D, has_means,
                                 has_weights, global_weights, has_g, has_gweights,
                                 has_gw_acc, num_threads, check_weights, cnp.NPY_FLOAT)
    raise TypeError(f"the solver runs on float32 or float64 arrays, got {dtype}")


cdef int _check_lengths(const Py_ssize_t* lens, Py_ssize_t B, Py_ssize_t T) except -1:
    """Raise ValueError unless every ``lens[b]`` lies in ``[0, T]`` (the
    validation layer checked them; the compiled entries check again because
    they index with them)."""
    cdef Py_ssize_t b
    for b in range(B):
        if lens[b] < 0 or lens[b] > T:
            raise ValueError(f"lengths[{b}] = {lens[b]} is outside [0, {T}]")
    return 0


cdef void _solve_item(const Plan* pl, Py_ssize_t it, Py_ssize_t nstarts, Py_ssize_t width,
                      Py_ssize_t T, Py_ssize_t D, const Py_ssize_t* lens,
                      const floating* mp, const floating* wpt, const floating* gp,
                      floating* op, floating* gmp, floating* gwp, double* gap,
                      double* ws, floating* scratch, Py_ssize_t* bad) noexcept nogil:
    """Work item ``it`` of :func:`_run_typed`: sequence ``it // nstarts``,
    columns from ``(it % nstarts) * width`` (at most ``width``), in chunks of
    ``pl.chunk``; ``ws`` and ``scratch`` are the calling thread's."""
    cdef Py_ssize_t b = it // nstarts
    cdef Py_ssize_t d0 = (it % nstarts) * width
    cdef Py_ssize_t nd = min(width, D - d0)
    cdef Py_ssize_t c0 = d0, cw
    while c0 < d0 + nd:
        cw = min(pl.chunk, d0 + nd - c0)
        if _solve_chunk(
                pl,
                (mp + b * T * pl.LD) if mp != NULL else NULL,
                (wpt + b * pl.w_batch_stride) if wpt != NULL else NULL,
                (gp + b * T * D) if gp != NULL else NULL,
                (op + b * T * D) if op != NULL else NULL,
                (gmp + b * T * pl.LD) if gmp != NULL else NULL,
                (gwp + b * T * pl.LD) if gwp != NULL else NULL,
                (gap + b * pl.LD) if gap != NULL else NULL,
                lens[b], c0, cw, ws, scratch, bad + 3 * it) != 0:
            return
        c0 = c0 + cw


cdef object _run_typed(str mode, windows, zero_lo, zero_hi, weight_kind,
                       means, weights, g, out, gmeans, gweights, gw_acc,
                       lengths, Py_ssize_t T, Py_ssize_t D,
                       bint has_means, bint has_weights, bint global_weights, bint has_g,
                       bint has_gweights, bint has_gw_acc, num_threads, check_weights,
                       int typenum, floating dtype_tag=0):
    cdef Py_ssize_t B = cnp.PyArray_SIZE(<cnp.ndarray?>lengths)
    cdef Py_ssize_t L = len(windows)
    cdef Py_ssize_t nthreads, width, nitems, it, b, tid, wsz, ssz, nstarts
    cdef Plan pl
    cdef mlpgx_b2plan b2
    if B == 0 or T == 0 or D == 0:
        return "none", True
    cdef _WindowPlan wp = _window_plan(windows, zero_lo, zero_hi)
    pl = wp.base
    pl.T = T
    pl.D = D
    pl.LD = L * D
    pl.mode = MODES[mode]
    pl.nrhs = 2 if pl.mode == MODE_ADJOINT else 1   # (the output given: g alone)
    if pl.mode == MODE_ADJOINT_MEANS and (has_gweights or has_gw_acc or has_means):
        raise ValueError("mode 'adjoint_means' reads no means and writes no weight gradient")
    if ((pl.mode == MODE_ADJOINT or pl.mode == MODE_ADJOINT_FROM_OUTPUT) and has_weights
            and not (has_gweights or has_gw_acc)):
        raise ValueError(f"mode {mode!r} with weights writes their gradient: give gweights "
                         f"or gw_acc (the means gradient alone is mode 'adjoint_means')")
    pl.weight_kind = WEIGHT_KINDS[weight_kind if has_weights else None]
    pl.w_row_stride = 0 if global_weights else L * D
    pl.w_batch_stride = 0 if global_weights else T * L * D

    nthreads, starts, width = _plan_threads(B, D, T, num_threads)
    nstarts = len(starts)
    nitems = B * nstarts
    # workspace columns: the widest chunk, padded to whole tiles
    pl.chunk = -(-min(width, DEF_CHUNK, D) // TILE) * TILE
    wsz = _workspace_doubles(&pl)
    ssz = T * (pl.k + pl.nrhs) * pl.chunk
    if wp.band2 and USE_BAND2:
        b2 = wp.b2
        b2.mode = pl.mode
        b2.weight_kind = pl.weight_kind
        b2.D = pl.D
        b2.LD = pl.LD
        b2.w_row_stride = pl.w_row_stride
        b2.CH = pl.chunk
        b2.check_weights = 0
        if check_weights is not None and has_weights and not global_weights:
            b2.check_weights = 1
            b2.weight_lo = float(check_weights[0])
            b2.weight_hi = float(check_weights[1])
        b2.check_by_reciprocal = mlpgx_b2_checks_by_reciprocal(&b2, typenum == cnp.NPY_FLOAT)
        pl.band2 = &b2
        wsz = max(wsz, mlpgx_b2_workspace_doubles(pl.chunk, <int>L, <int>pl.nrhs))
        ssz = max(ssz, T * mlpgx_b2_scratch_row(pl.chunk, <int>pl.nrhs))

    cdef Py_ssize_t n_in = B * T * L * D
    cdef Py_ssize_t n_w = (L * D) if global_weights else n_in
    cdef const floating* mp = NULL
    cdef const floating* wpt = NULL
    cdef const floating* gp = NULL
    cdef floating* op = NULL
    cdef floating* gmp = NULL
    cdef floating* gwp = NULL
    cdef double* gap = NULL
    cdef const Py_ssize_t* lens = <const Py_ssize_t*>_data(lengths, cnp.NPY_INTP, B, False, "lengths")
    if has_means:
        mp = <const floating*>_data(means, typenum, n_in, False, "means")
    if has_weights:
        wpt = <const floating*>_data(weights, typenum, n_w, False, "weights")
    if has_g:
        gp = <const floating*>_data(g, typenum, B * T * D, False, "g")
    if not _writes_gradients(pl.mode):
        op = <floating*>_data(out, typenum, B * T * D, True, "out")
    else:
        if pl.mode == MODE_ADJOINT_FROM_OUTPUT:   # read, never written
            op = <floating*>_data(out, typenum, B * T * D, False, "out")
        gmp = <floating*>_data(gmeans, typenum, n_in, True, "gmeans")
        if has_gweights:
            gwp = <floating*>_data(gweights, typenum, n_in, True, "gweights")
        if has_gw_acc:
            gap = <double*>_data(gw_acc, cnp.NPY_DOUBLE, B * L * D, True, "gw_acc")
    _check_lengths(lens, B, T)

    # Both start on a cache line (the rows inside are multiples of TILE
    # elements): misaligned vectors cost about 15% here.
    workspace = np.empty(nthreads * wsz + ALIGN_DOUBLES, dtype=np.float64)
    scratch = _scratch_buffer(nthreads * ssz + ALIGN_DOUBLES * 2,
                              np.float64 if floating is double else np.float32)
    cdef double* ws_p = <double*>_aligned(cnp.PyArray_DATA(<cnp.ndarray>workspace))
    cdef floating* sc_p = <floating*>_aligned(cnp.PyArray_DATA(<cnp.ndarray>scratch))
    # per work item: (frame, dimension) of a non-positive pivot, or -1; and
    # 1 when its results were not tested finite, or were not (_solve_chunk)
    cdef Py_ssize_t* bad = <Py_ssize_t*>malloc(3 * nitems * sizeof(Py_ssize_t))
    if bad == NULL:
        raise MemoryError()
    for it in range(nitems):
        bad[3 * it] = -1
        bad[3 * it + 1] = -1
        bad[3 * it + 2] = 0

    # One thread (every small problem): no OpenMP region, whose start costs
    # about as much as a short sequence's solve.
    with nogil:
        if nthreads == 1:
            for it in range(nitems):
                _solve_item(&pl, it, nstarts, width, T, D, lens, mp, wpt, gp, op, gmp, gwp,
                            gap, ws_p, sc_p, bad)
        else:
            for it in prange(nitems, num_threads=nthreads, schedule="dynamic"):
                tid = threadid()
                _solve_item(&pl, it, nstarts, width, T, D, lens, mp, wpt, gp, op, gmp, gwp,
                            gap, ws_p + tid * wsz, sc_p + tid * ssz, bad)

    rejected = False
    rows = []
    results_finite = True
    for it in range(nitems):
        if bad[3 * it] == -2:
            rejected = True
        if bad[3 * it] >= 0:
            rows.append((it // nstarts, bad[3 * it], bad[3 * it + 1]))
        if bad[3 * it + 2] != 0:
            results_finite = False
    free(bad)
    if rejected:   # (before a pivot: the invalid weight may have caused it)
        raise WeightsRejected("a weight outside the range given to check_weights")
    if rows:
        b, t, d = min(rows)
        raise LinAlgError(
            f"MLPG system is not positive definite at frame t={t}, static dimension "
            f"d={d} of sequence b={b}: non-positive pivot (every precision touching "
            f"the frame may be zero: infinite variances, zero precisions or the "
            f"boundary rule; or the system is singular; or precisions so large, "
            f"variances so small, that R's entries overflowed float64)")
    return ("band2" if pl.band2 != NULL else "general"), results_finite


#: Elements per scan block (one OpenMP work item), and the size below which a
#: scan runs on one thread (OpenMP start-up would cost more than the scan).
SCAN_BLOCK = 1 << 16
SCAN_SERIAL_BELOW = 1 << 17
SCAN_CHECKS = {"finite": SCAN_FINITE, "positive": SCAN_POSITIVE, "nonnegative": SCAN_NONNEG}


def scan_valid(x, str check, num_threads=None):
    """Whether every entry of ``x`` passes ``check``, in one parallel pass.

    ``x``: a C-contiguous float32/float64 NumPy array.  ``check``:
    ``"finite"`` (no inf or NaN), ``"positive"`` (variances: at least
    ``_validate.SMALLEST_VARIANCE``, whose reciprocal is finite; +inf
    allowed, NaN not) or ``"nonnegative"`` (>= 0 and finite: precisions).
    Only answers yes or no: the validation layer locates a bad entry itself.
    """
    cdef int c = SCAN_CHECKS[check]
    if not cnp.PyArray_Check(x) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x):
        raise TypeError("scan_valid takes a C-contiguous NumPy array")
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef int typenum = cnp.PyArray_TYPE(arr)
    if typenum != cnp.NPY_DOUBLE and typenum != cnp.NPY_FLOAT:
        raise TypeError(f"scan_valid takes float32 or float64, got {arr.dtype}")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(arr)
    cdef Py_ssize_t block = SCAN_BLOCK
    cdef Py_ssize_t nblocks = (n + block - 1) // block, blk, lo, nthreads   # (cdivision)
    cdef int nbad = 0
    cdef const double* xd = <const double*>cnp.PyArray_DATA(arr)
    cdef const float* xf = <const float*>cnp.PyArray_DATA(arr)
    cdef bint is_double = typenum == cnp.NPY_DOUBLE
    if num_threads is None:
        nthreads = 1 if n < SCAN_SERIAL_BELOW else max_threads()
    else:
        nthreads = int(num_threads)
    nthreads = max(1, min(nthreads, nblocks))
    if nthreads == 1:   # (no OpenMP region: most scans are of a few frames)
        with nogil:
            nbad = mlpgx_scan_d(xd, n, c) if is_double else mlpgx_scan_f(xf, n, c)
        return nbad == 0
    with nogil:
        for blk in prange(nblocks, num_threads=nthreads, schedule="static"):
            lo = blk * block
            if is_double:
                nbad += mlpgx_scan_d(xd + lo, min(block, n - lo), c)
            else:
                nbad += mlpgx_scan_f(xf + lo, min(block, n - lo), c)
    return nbad == 0


def scan_edges(x, str check, Py_ssize_t K, lengths):
    """Whether the edge frames of every sequence of ``x`` pass ``check``.

    ``x``: a C-contiguous float32/float64 NumPy array ``(B, T, C)``;
    ``lengths``: ``(B,)`` intp, ``0 <= lengths[b] <= T``.  Scans frames
    ``0 .. K-1`` and ``n-K .. n-1`` of sequence ``b`` (``n = lengths[b]``;
    frames ``>= n`` are padding and not read), on the calling thread: the
    validation layer's check of the frames a kernel did not read (see
    ``_validate.finish_means_scan``), one call for what were four NumPy
    slices and scans.  ``check`` as in :func:`scan_valid`.
    """
    cdef int c = SCAN_CHECKS[check]
    if (not cnp.PyArray_Check(x) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
            or cnp.PyArray_NDIM(<cnp.ndarray>x) != 3):
        raise TypeError("scan_edges takes a C-contiguous (B, T, C) NumPy array")
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef int typenum = cnp.PyArray_TYPE(arr)
    if typenum != cnp.NPY_DOUBLE and typenum != cnp.NPY_FLOAT:
        raise TypeError(f"scan_edges takes float32 or float64, got {arr.dtype}")
    cdef Py_ssize_t B = cnp.PyArray_DIM(arr, 0), T = cnp.PyArray_DIM(arr, 1)
    cdef Py_ssize_t C = cnp.PyArray_DIM(arr, 2)
    if K < 0:
        raise ValueError(f"K must be >= 0, got {K}")
    if B == 0:   # (an empty batch: nothing to scan, and no lengths to read)
        return True
    cdef const Py_ssize_t* lens = <const Py_ssize_t*>_data(lengths, cnp.NPY_INTP, B, False,
                                                           "lengths")
    cdef Py_ssize_t b, n, head, tail
    _check_lengths(lens, B, T)
    cdef const double* xd = <const double*>cnp.PyArray_DATA(arr)
    cdef const float* xf = <const float*>cnp.PyArray_DATA(arr)
    cdef bint is_double = typenum == cnp.NPY_DOUBLE
    cdef int nbad = 0
    with nogil:
        for b in range(B):
            n = lens[b]
            head = min(K, n)                # frames [0, head)
            tail = max(n - K, head)         # frames [tail, n), not scanned twice
            if is_double:
                nbad += mlpgx_scan_d(xd + b * T * C, head * C, c)
                nbad += mlpgx_scan_d(xd + (b * T + tail) * C, (n - tail) * C, c)
            else:
                nbad += mlpgx_scan_f(xf + b * T * C, head * C, c)
                nbad += mlpgx_scan_f(xf + (b * T + tail) * C, (n - tail) * C, c)
            if nbad:
                break
    return nbad == 0

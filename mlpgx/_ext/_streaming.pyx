# Fixed-lag streaming MLPG: the exact solution of every prefix, one frame at a time.
#
# After frames 0..m-1 have been pushed (a prefix of n = m frames), output
# frame n-1-delay is row n-1-delay of c = R_n^{-1} r_n, the MLPG solution of
# the prefix as if the sequence ended there (same boundary rule at both ends).
#
# Which rows are final.  Row i of R's lower triangle and r[i] read the
# precisions (and p * mu) of frames i - right_l .. i + left_l of every window
# l.  Extending the sequence changes only which frames the boundary rule
# drops at the end: window l is dropped at frame t when t >= n - hi_l
# (``Problem.zero_frame_ranges``; hi_0 = 0, and frames t >= n do not exist).
# So row i is the same for every length n' >= n as soon as
# i + left_l + hi_l < n for every window, i.e. i <= n - 1 - M with the margin
#
#     M = max_l (left_l + hi_l)        (per-window: k, nnmnkwii: P + K, none: P).
#
# The banded LDL^T factorisation of R proceeds row by row and row i of L, D
# and of the forward substitution y = L^{-1} r depends only on rows 0..i of
# R and r, so rows 0..n-1-M are *committed* once: they are identical for this
# prefix, every longer one and the whole sequence.  To emit a frame the kernel
# factors the M non-final tail rows with the prefix-end boundary rule (into
# the same ring; the next commit overwrites them with the final values) and
# back-substitutes from row n-1 down to the emitted row:
#
#     x[i] = y[i] / D[i] - sum_{b=1..min(k, n-1-i)} L[i+b, i] x[i+b].
#
# State (all float64, d contiguous):
#   frame ring   (NR, L, D)  precisions and p * mu of the last NR frames, raw
#                            (the boundary rule is applied when a row is formed)
#   factor ring  (NF, k+1, D) L[i, i-a];  (NF, D) 1/D[i];  (NF, D) y[i]
#   solution     (k+1, D)    x[i .. i+k] during the back substitution
# with NR = M + Q + 2 (rows n-1-M-Q .. n-1 of frames are read) and
# NF = max(delay + 1, M + k) + 1 (rows n-1-delay .. n-1 are read back, rows
# i-k .. i while factoring row i).  Per emitted frame the cost is
# O(D * (M k^2 + delay k)), independent of the frames pushed before.
#
# Kernels assume validated, C-contiguous input and return an info code (the
# frame and dimension of a non-positive pivot); the Python methods raise
# numpy.linalg.LinAlgError after the nogil region.

from numpy.linalg import LinAlgError

from cython cimport floating
from libc.stdlib cimport calloc, free
from libc.string cimport memset

include "_build_info.pxi"

cdef enum:
    KIND_VARIANCE = 0
    KIND_PRECISION = 1
    KIND_UNIT = 2

KINDS = {"variance": KIND_VARIANCE, "precision": KIND_PRECISION, None: KIND_UNIT}


ctypedef struct State:
    Py_ssize_t D, L, LD, k, Q, margin, delay
    Py_ssize_t NR, NF, NX       # ring sizes (frames, factor rows, solution rows)
    double pivot_rtol
    Py_ssize_t m                # frames pushed
    Py_ssize_t committed        # rows 0 .. committed-1 are factored with final values
    Py_ssize_t bad_frame, bad_dim
    # windows
    Py_ssize_t* win_left
    Py_ssize_t* win_width
    Py_ssize_t* win_offset
    double* coeffs
    Py_ssize_t* zero_lo
    Py_ssize_t* zero_hi
    # rings and row temporaries
    double* prec                # (NR, L, D)
    double* pmu                 # (NR, L, D)
    double* Lf                  # (NF, k+1, D): Lf[i, a] = L[i, i-a], a = 1..k
    double* Dinv                # (NF, D)
    double* y                   # (NF, D)
    double* x                   # (NX, D)
    double* Rrow                # (k+1, D): R[i, i-a]
    double* E                   # (k+1, D): L[i, i-a] D[i-a]
    double* rrow                # (D,)


cdef inline Py_ssize_t _imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline bint _active(const State* s, Py_ssize_t l, Py_ssize_t t, Py_ssize_t n) noexcept nogil:
    # Window l constrains frame t of an n-frame prefix; n < 0: a final row,
    # where no end rule can reach t any more.
    return t >= 0 and t >= s.zero_lo[l] and (n < 0 or t < n - s.zero_hi[l])


cdef void _store_frame(State* s, const floating* mu, const floating* w, int kind) noexcept nogil:
    # Frame s.m (one row of L*D means and weights) into the frame ring.
    cdef Py_ssize_t l, d, D = s.D
    cdef Py_ssize_t slot = s.m % s.NR
    cdef double* p
    cdef double* pm
    cdef const floating* ml
    cdef const floating* wl
    for l in range(s.L):
        p = s.prec + (slot * s.L + l) * D
        pm = s.pmu + (slot * s.L + l) * D
        ml = mu + l * D
        if kind == KIND_UNIT:
            for d in range(D):
                p[d] = 1.0
        elif kind == KIND_VARIANCE:
            wl = w + l * D
            for d in range(D):
                # 1 / inf = 0: no constraint; float32 divides in float32 as the batch solver
                p[d] = <double>((<floating>1.0) / wl[d])
        else:
            wl = w + l * D
            for d in range(D):
                p[d] = wl[d]
        for d in range(D):
            pm[d] = p[d] * ml[d]
    s.m += 1


cdef void _form_row(State* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    # Rrow[a] = R[i, i-a] (a = 0..min(k, i)) and rrow = r[i] for an n-frame
    # prefix (n < 0: the final row).
    cdef Py_ssize_t D = s.D, amax = _imin(s.k, i), l, u, a, t, d
    cdef double cu, coef
    cdef const double* c
    cdef const double* p
    cdef const double* pm
    cdef double* row
    cdef double* rr = s.rrow
    memset(s.Rrow, 0, (amax + 1) * D * sizeof(double))
    memset(rr, 0, D * sizeof(double))
    for l in range(s.L):
        c = s.coeffs + s.win_offset[l]
        for u in range(s.win_width[l]):
            cu = c[u]
            t = i + s.win_left[l] - u          # the frame whose window row puts c[u] on c[i]
            if cu == 0.0 or not _active(s, l, t, n):
                continue
            p = s.prec + ((t % s.NR) * s.L + l) * D
            pm = s.pmu + ((t % s.NR) * s.L + l) * D
            for d in range(D):
                rr[d] += cu * pm[d]
            for a in range(_imin(u, amax) + 1):
                coef = cu * c[u - a]
                if coef == 0.0:
                    continue
                row = s.Rrow + a * D
                for d in range(D):
                    row[d] += coef * p[d]


cdef int _factor_row(State* s, Py_ssize_t i) noexcept nogil:
    # Row i of L, 1/D and y from Rrow, rrow and rows i-k .. i-1 of the ring.
    cdef Py_ssize_t D = s.D, k = s.k, amax = _imin(s.k, i), a, b, d
    cdef Py_ssize_t slot = i % s.NF
    cdef double* Li = s.Lf + slot * (k + 1) * D
    cdef double* Ea
    cdef double* La
    cdef const double* Eb
    cdef const double* Lj
    cdef const double* Dj
    cdef const double* yj
    cdef double* piv = s.Rrow           # R[i, i] becomes the pivot in place ...
    cdef double* dinv = s.Dinv + slot * D
    cdef double* yi = s.y + slot * D
    for a in range(amax, 0, -1):
        # E[a] = R[i, i-a] - sum_{b>a} E[b] L[i-a, i-b];  L[i, i-a] = E[a] / D[i-a]
        Ea = s.E + a * D
        for d in range(D):
            Ea[d] = s.Rrow[a * D + d]
        for b in range(a + 1, amax + 1):
            Eb = s.E + b * D
            Lj = s.Lf + (((i - a) % s.NF) * (k + 1) + (b - a)) * D
            for d in range(D):
                Ea[d] -= Eb[d] * Lj[d]
        Dj = s.Dinv + ((i - a) % s.NF) * D
        La = Li + a * D
        for d in range(D):
            La[d] = Ea[d] * Dj[d]
    # ... and rrow = r[i] becomes y[i]; dinv temporarily holds R[i, i]
    for d in range(D):
        dinv[d] = piv[d]
        yi[d] = s.rrow[d]
    for a in range(1, amax + 1):
        Ea = s.E + a * D
        La = Li + a * D
        yj = s.y + ((i - a) % s.NF) * D
        for d in range(D):
            piv[d] -= Ea[d] * La[d]
            yi[d] -= La[d] * yj[d]
    for d in range(D):
        if not (piv[d] > s.pivot_rtol * dinv[d]):
            s.bad_frame = i
            s.bad_dim = d
            return 1
    for d in range(D):
        dinv[d] = 1.0 / piv[d]
    return 0


cdef int _commit(State* s) noexcept nogil:
    # Factor every row that no later frame can change any more.
    while s.committed <= s.m - 1 - s.margin:
        _form_row(s, s.committed, -1)
        if _factor_row(s, s.committed):
            return 1
        s.committed += 1
    return 0


cdef int _tail(State* s) noexcept nogil:
    # Factor rows committed .. m-1 for the prefix of m frames.
    cdef Py_ssize_t i
    for i in range(s.committed, s.m):
        _form_row(s, i, s.m)
        if _factor_row(s, i):
            return 1
    return 0


cdef void _back(State* s, Py_ssize_t lo, floating* out, bint every_row) noexcept nogil:
    # Back substitution of the m-frame prefix from row m-1 down to row lo;
    # writes row lo to out[0], or (every_row) rows lo .. m-1 to out[0 .. m-1-lo].
    cdef Py_ssize_t D = s.D, k = s.k, n = s.m, i, b, d, bmax
    cdef double* xi
    cdef const double* xb
    cdef const double* Lb
    cdef const double* yi
    cdef const double* dinv
    cdef floating* o
    i = n - 1
    while i >= lo:
        xi = s.x + (i % s.NX) * D
        yi = s.y + (i % s.NF) * D
        dinv = s.Dinv + (i % s.NF) * D
        for d in range(D):
            xi[d] = yi[d] * dinv[d]
        bmax = _imin(k, n - 1 - i)
        for b in range(1, bmax + 1):
            xb = s.x + ((i + b) % s.NX) * D
            Lb = s.Lf + (((i + b) % s.NF) * (k + 1) + b) * D
            for d in range(D):
                xi[d] -= Lb[d] * xb[d]
        if every_row or i == lo:
            o = out + (i - lo) * D
            for d in range(D):
                o[d] = <floating>xi[d]
        i -= 1


cdef Py_ssize_t _push(State* s, const floating* means, const floating* weights,
                      Py_ssize_t w_stride, int kind, Py_ssize_t nframes,
                      floating* out, int* status) noexcept nogil:
    # Push nframes frames; for each, emit the frame `delay` behind it if it
    # exists.  Returns the number of rows written to out.
    cdef Py_ssize_t j, nout = 0
    status[0] = 0
    for j in range(nframes):
        _store_frame(s, means + j * s.LD,
                     (weights + j * w_stride) if weights != NULL else NULL, kind)
        if _commit(s):
            status[0] = 1
            return nout
        if s.m - 1 - s.delay >= 0:
            if _tail(s):
                status[0] = 1
                return nout
            _back(s, s.m - 1 - s.delay, out + nout * s.D, 0)
            nout += 1
    return nout


cdef class StreamKernel:
    """State of one fixed-lag MLPG stream (see the comment at the top of the
    file).  Built and driven by :class:`mlpgx.streaming.StreamingMLPG`, which
    validates everything first."""

    cdef State st
    cdef readonly Py_ssize_t margin

    def __cinit__(self, windows, zero_lo, zero_hi, Py_ssize_t static_dim,
                  Py_ssize_t delay, double pivot_rtol):
        cdef State* s = &self.st
        cdef Py_ssize_t l, j, off = 0, L = len(windows)
        memset(s, 0, sizeof(State))
        # the factor rings hold about delay x (k + 3) x D doubles: refuse sizes
        # whose byte count does not fit in a Py_ssize_t before computing any
        # of them in C (Python ints cannot overflow)
        rows = int(delay) + int(windows.bandwidth) + 64
        if rows * (int(windows.bandwidth) + 3) * int(static_dim) * 8 >= 2**62:
            raise MemoryError(f"StreamingMLPG: delay={delay} with static_dim={static_dim} "
                              f"needs more memory than can be addressed; the state "
                              f"grows with the delay")
        s.D = static_dim
        s.L = L
        s.LD = L * static_dim
        s.k = windows.bandwidth
        s.Q = windows.max_right
        s.delay = delay
        s.pivot_rtol = pivot_rtol
        s.margin = 0
        for l in range(L):
            s.margin = max(s.margin, <Py_ssize_t>windows[l].left + <Py_ssize_t>zero_hi[l])
        self.margin = s.margin
        s.NR = s.margin + s.Q + 2
        s.NF = max(delay + 1, s.margin + s.k) + 1
        s.NX = s.k + 1
        ncoef = sum(w.width for w in windows)
        s.win_left = <Py_ssize_t*>calloc(L, sizeof(Py_ssize_t))
        s.win_width = <Py_ssize_t*>calloc(L, sizeof(Py_ssize_t))
        s.win_offset = <Py_ssize_t*>calloc(L, sizeof(Py_ssize_t))
        s.zero_lo = <Py_ssize_t*>calloc(L, sizeof(Py_ssize_t))
        s.zero_hi = <Py_ssize_t*>calloc(L, sizeof(Py_ssize_t))
        s.coeffs = <double*>calloc(ncoef, sizeof(double))
        s.prec = <double*>calloc(s.NR * s.LD, sizeof(double))
        s.pmu = <double*>calloc(s.NR * s.LD, sizeof(double))
        s.Lf = <double*>calloc(s.NF * (s.k + 1) * s.D, sizeof(double))
        s.Dinv = <double*>calloc(s.NF * s.D, sizeof(double))
        s.y = <double*>calloc(s.NF * s.D, sizeof(double))
        s.x = <double*>calloc(s.NX * s.D, sizeof(double))
        s.Rrow = <double*>calloc((s.k + 1) * s.D, sizeof(double))
        s.E = <double*>calloc((s.k + 1) * s.D, sizeof(double))
        s.rrow = <double*>calloc(s.D, sizeof(double))
        if (s.win_left == NULL or s.win_width == NULL or s.win_offset == NULL
                or s.zero_lo == NULL or s.zero_hi == NULL or s.coeffs == NULL
                or s.prec == NULL or s.pmu == NULL or s.Lf == NULL or s.Dinv == NULL
                or s.y == NULL or s.x == NULL or s.Rrow == NULL or s.E == NULL
                or s.rrow == NULL):
            raise MemoryError(
                f"StreamingMLPG: could not allocate the stream state (about "
                f"{8 * s.NF * (s.k + 3) * s.D / 2**20:.0f} MiB for delay={delay}, "
                f"static_dim={s.D}; the state grows with the delay)")
        for l, w in enumerate(windows):
            s.win_left[l] = w.left
            s.win_width[l] = w.width
            s.win_offset[l] = off
            s.zero_lo[l] = int(zero_lo[l])
            s.zero_hi[l] = int(zero_hi[l])
            for j in range(w.width):
                s.coeffs[off + j] = w.coeffs[j]
            off += w.width

    def __dealloc__(self):
        cdef State* s = &self.st
        free(s.win_left); free(s.win_width); free(s.win_offset)
        free(s.zero_lo); free(s.zero_hi); free(s.coeffs)
        free(s.prec); free(s.pmu); free(s.Lf); free(s.Dinv); free(s.y); free(s.x)
        free(s.Rrow); free(s.E); free(s.rrow)

    @property
    def frames_pushed(self):
        return self.st.m

    def reset(self):
        """Forget every frame (the buffers are reused)."""
        self.st.m = 0
        self.st.committed = 0

    def push(self, const floating[::1] means, const floating[::1] weights, Py_ssize_t w_stride,
             weight_kind, floating[::1] out):
        """Push ``len(means) // (L*D)`` frames; write the ready frames to
        ``out`` (room for one per frame) and return how many."""
        cdef State* s = &self.st
        cdef Py_ssize_t nframes = means.shape[0] // s.LD, nout
        cdef int kind = KINDS[weight_kind], status = 0
        with nogil:
            nout = _push(s, &means[0] if nframes else NULL,
                         &weights[0] if kind != KIND_UNIT and nframes else NULL,
                         w_stride, kind, nframes, &out[0] if nframes else NULL, &status)
        if status:
            self._raise()
        return nout

    def flush(self, floating[::1] out):
        """Write the frames not emitted yet (the whole-sequence solution of
        the last ``min(delay, frames pushed)`` frames) to ``out``; return
        how many."""
        cdef State* s = &self.st
        cdef Py_ssize_t lo = max(0, s.m - s.delay), nout = s.m - lo
        cdef int status = 0
        if nout == 0:
            return 0
        with nogil:
            status = _tail(s)
            if status == 0:
                _back(s, lo, &out[0], 1)
        if status:
            self._raise()
        return nout

    def _raise(self):
        cdef State* s = &self.st
        raise LinAlgError(
            f"MLPG system is not positive definite at frame t={s.bad_frame}, static "
            f"dimension d={s.bad_dim} of the stream's prefix of {s.m} frames: "
            f"non-positive pivot (every precision touching the frame may be zero: "
            f"infinite variances, zero precisions or the boundary rule; or the system "
            f"is singular)")

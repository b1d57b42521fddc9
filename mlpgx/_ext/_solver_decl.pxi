# Declarations of the fused banded MLPG solver (included by _solver_impl.pxi).

cdef extern from "mlpgx_band2.h" nogil:
    # the kernel for windows reaching at most one frame to each side (k <= 2)
    enum: B2_MAX_WINDOWS "MLPGX_B2_MAX_WINDOWS"
    enum: B2_RING_STRIDE "MLPGX_B2_RS"     # the widest chunk the kernel takes
    ctypedef struct mlpgx_b2plan:
        int L
        int mode
        int weight_kind
        Py_ssize_t D
        Py_ssize_t LD
        Py_ssize_t w_row_stride
        Py_ssize_t CH
        double pivot_rtol
        int check_weights
        double weight_lo
        double weight_hi
        int check_by_reciprocal
        double w[4][3]
        Py_ssize_t zero_lo[4]
        Py_ssize_t zero_hi[4]
    # the adjoint's gradient pass prefetches the rows it reads a few frames on
    void mlpgx_prefetch_grad_rows(const void* means, const void* weights, Py_ssize_t t,
                                  int L, Py_ssize_t D, Py_ssize_t LD, Py_ssize_t w_row_stride,
                                  Py_ssize_t d0, Py_ssize_t nd, Py_ssize_t itemsize)
    # whether float32 variances can be checked by their reciprocals' bits
    int mlpgx_b2_checks_by_reciprocal(const mlpgx_b2plan* pl, int float32)
    Py_ssize_t mlpgx_b2_workspace_doubles(Py_ssize_t CH, int L, int nrhs)
    Py_ssize_t mlpgx_b2_scratch_row(Py_ssize_t CH, int nrhs)
    int mlpgx_b2_run_d(const mlpgx_b2plan* pl, const double* means, const double* weights,
                       const double* g, double* out, double* gmeans, double* gweights,
                       double* gw_acc, Py_ssize_t n, Py_ssize_t d0, Py_ssize_t nd,
                       double* ws, double* scratch)
    int mlpgx_b2_run_f(const mlpgx_b2plan* pl, const float* means, const float* weights,
                       const float* g, float* out, float* gmeans, float* gweights,
                       double* gw_acc, Py_ssize_t n, Py_ssize_t d0, Py_ssize_t nd,
                       double* ws, float* scratch)
    # the AVX-512 clones (aliases of the two above where not compiled)
    int mlpgx_b2_run_d512(const mlpgx_b2plan* pl, const double* means, const double* weights,
                          const double* g, double* out, double* gmeans, double* gweights,
                          double* gw_acc, Py_ssize_t n, Py_ssize_t d0, Py_ssize_t nd,
                          double* ws, double* scratch)
    int mlpgx_b2_run_f512(const mlpgx_b2plan* pl, const float* means, const float* weights,
                          const float* g, float* out, float* gmeans, float* gweights,
                          double* gw_acc, Py_ssize_t n, Py_ssize_t d0, Py_ssize_t nd,
                          double* ws, float* scratch)
    int mlpgx_b2_cpu_avx512()
    int mlpgx_b2_cpu_intel()
    # the kernel's weight check alone (check_weights), frames 0 .. n-1
    int mlpgx_b2_weights_in_range_d(const mlpgx_b2plan* pl, const double* weights,
                                    Py_ssize_t n, Py_ssize_t d0, Py_ssize_t nd)
    int mlpgx_b2_weights_in_range_f(const mlpgx_b2plan* pl, const float* weights,
                                    Py_ssize_t n, Py_ssize_t d0, Py_ssize_t nd)

cdef enum SolverMode:
    MODE_FORWARD = 0    # rhs = r from the means; writes c
    MODE_SOLVE = 1      # rhs = the given g; writes x = R^{-1} g
    MODE_ADJOINT = 2    # rhs = (r, g); writes dL/dmu and dL/dweights
    MODE_ADJOINT_FROM_OUTPUT = 3   # rhs = g, c read from out (the forward's
                                   # output); writes dL/dmu and dL/dweights
    MODE_ADJOINT_MEANS = 4   # rhs = g; writes dL/dmu alone (reads neither c
                             # nor the means)

cdef enum WeightKind:
    KIND_VARIANCE = 0
    KIND_PRECISION = 1
    KIND_UNIT = 2

# Everything a work item needs that does not change between items: sizes,
# window tables and ring-buffer geometry.  Filled once per call (with the GIL)
# and then only read inside the nogil region.
ctypedef struct Plan:
    Py_ssize_t T            # padded number of frames
    Py_ssize_t D            # static dimension
    Py_ssize_t L            # number of windows
    Py_ssize_t LD
    Py_ssize_t k            # half-bandwidth of R = max(left + right)
    Py_ssize_t P            # max left extent
    Py_ssize_t Q            # max right extent
    Py_ssize_t chunk        # capacity (columns) of the per-thread workspace
    Py_ssize_t nrhs         # 2 (adjoint), else 1
    Py_ssize_t frame_mask   # precision ring: power of two > P + Q, minus 1
    Py_ssize_t factor_mask  # factor ring: power of two > k, minus 1
    Py_ssize_t sol_mask     # solution ring: power of two > max(P + Q, k), minus 1
    int mode
    int weight_kind
    Py_ssize_t w_batch_stride   # 0 for global weights
    Py_ssize_t w_row_stride     # 0 for global weights
    double pivot_rtol           # pivot must exceed pivot_rtol * R[i, i]
    # windows: left extent, width, offset into coeffs, boundary margins
    const Py_ssize_t* win_left
    const Py_ssize_t* win_width
    const Py_ssize_t* win_offset
    const double* coeffs
    const Py_ssize_t* zero_lo
    const Py_ssize_t* zero_hi
    # R[i, i-a] = sum of rterm_coef * p_l[i + shift] over the terms of lag a,
    # [rterm_lag_start[a], rterm_lag_start[a+1]); each term reads source
    # rterm_source (a distinct (shift, window) pair); the nonzero products
    # w[u] w[u-a].  r[i] = sum of vterm_coef * (p mu)_l[i + shift], the nonzero w[u].
    const double* rterm_coef
    const Py_ssize_t* rterm_lag_start
    const Py_ssize_t* rterm_source
    Py_ssize_t n_vterms
    const double* vterm_coef
    const Py_ssize_t* vterm_source
    # the distinct (shift, window) pairs the terms read
    Py_ssize_t n_sources
    const Py_ssize_t* source_shift
    const Py_ssize_t* source_window
    # the k <= 2 kernel's plan, or NULL when the general kernel runs
    const mlpgx_b2plan* band2

cdef extern from "mlpgx_scan.h" nogil:
    # one-pass validity scans of the validation layer
    enum: SCAN_FINITE "MLPGX_SCAN_FINITE"
    enum: SCAN_POSITIVE "MLPGX_SCAN_POSITIVE"
    enum: SCAN_NONNEG "MLPGX_SCAN_NONNEG"
    int mlpgx_scan_d(const double* x, Py_ssize_t n, int check)
    int mlpgx_scan_f(const float* x, Py_ssize_t n, int check)

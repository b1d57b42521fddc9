// mlpgx CUDA kernels: the banded MLPG solver.  The general kernel runs one
// thread per (sequence b, static dimension d) for windows of any width; the
// split k <= 2 kernels (below) serve the static + delta + delta-delta sets.
//
// The algorithm is the one of the CPU backend (mlpgx/_ext/_solver_impl.pxi,
// docs/math.md).  For one sequence of n frames and one static dimension,
//
//     R = sum_l W_l^T diag(p_l) W_l,    r = sum_l W_l^T diag(p_l) mu_l,
//
// half-bandwidth k = max_l(left_l + right_l), and row i of R's lower triangle
//
//     R[i, i-a] = sum_l sum_u w_l[u] w_l[u-a] p_l[i + left_l - u]
//
// is formed on the fly from the (boundary-masked) precisions of frames
// i - right_l .. i + left_l.  R = L D L^T is factored row by row (the last k
// rows of L and 1/D stay in double-precision rings in local memory), the
// forward substitution runs in the same sweep, and the factor rows go to a
// scratch buffer in global memory laid out (T, k + nrhs, B*D) so that the
// loads and stores of consecutive threads (consecutive d) are coalesced.  The
// back substitution then runs from the end; in adjoint mode the gradients of
// frame t = i + P are formed as soon as row i is solved.  All arithmetic is
// double; the storage type S (float or double) only rounds the stored
// factors and the results.
//
// Layouts (C order): means, weights, grad_means, grad_weights (B, T, L*D)
// with window-major columns l*D + d; global weights (L*D,); rhs / grad_output
// and out (B, T, D); gw_acc (B, L*D) double (global-weight gradient, summed
// over b on the host: every entry belongs to exactly one thread, no atomics).
//
// The routines (mlpg_sequence, mlpg_split_*) are __host__ __device__ and use
// no CUDA-only construct (intrinsics behind __CUDA_ARCH__ only), so the test
// suite compiles them with a host C++ compiler (tests/cuda_host_harness.cpp)
// and checks them against the reference backend without a GPU.  Only the
// __global__ entry points at the end are CUDA-specific.
//
// No #include: NVRTC (cupy.RawModule) has no C library headers.

typedef long long mlpg_i64;
typedef unsigned long long mlpg_u64;

enum {
    MLPG_MODE_FORWARD = 0,   // out = R^{-1} r
    MLPG_MODE_SOLVE = 1,     // out = R^{-1} rhs
    MLPG_MODE_ADJOINT = 2,   // grad_means, grad_weights from c = R^{-1} r, v = R^{-1} g
    MLPG_MODE_ADJOINT_GIVEN_C = 3  // the same from c given in `out` (read only), v = R^{-1} g
};

// Both adjoint modes: gradients out, no `out` written.
__host__ __device__ inline bool mlpg_is_adjoint(int mode) {
    return mode == MLPG_MODE_ADJOINT || mode == MLPG_MODE_ADJOINT_GIVEN_C;
}

enum {
    MLPG_KIND_UNIT = 0,      // no weights: every precision is 1
    MLPG_KIND_VARIANCE = 1,  // weights are variances (+inf: precision 0)
    MLPG_KIND_PRECISION = 2  // weights are precisions
};

// Everything one launch needs (pointers to device memory on the GPU, to host
// memory in the host harness).  Absent arrays may be null; which ones are
// read or written follows from mode, weight_kind and global_weights.
template <typename S>
struct MlpgArgs {
    const S* means;          // (B, T, L*D); forward, adjoint
    const S* weights;        // (B, T, L*D) or (L*D,); unless KIND_UNIT
    const S* rhs;            // (B, T, D): rhs (solve) or grad_output (adjoint)
    S* out;                  // (B, T, D); forward, solve (written); ADJOINT_GIVEN_C: c (read)
    S* grad_means;           // (B, T, L*D); adjoint
    S* grad_weights;         // (B, T, L*D); adjoint, per-frame weights
    double* gw_acc;          // (B, L*D); adjoint, global weights
    S* scratch;              // (T, k + nrhs, B*D)
    double* work;            // split k <= 2 kernels: rows (T, 4, B*D), then x: (T, 2, B*D)
                             // (c, v) for ADJOINT, (T, 1, B*D) (v) for ADJOINT_GIVEN_C
    mlpg_u64* status;        // 2 entries: [0] initialised to ~0, the smallest failing
                             // b*T*D + t*D + d; [1] initialised to 0, set to 1 when a
                             // result stored was not finite (mlpg_report_nonfinite)
    const mlpg_i64* lengths; // (B,)
    const mlpg_i64* win_left;    // (L,)
    const mlpg_i64* win_width;   // (L,) left + right + 1
    const mlpg_i64* win_offset;  // (L,) into coeffs
    const double* coeffs;        // (sum of widths,)
    const mlpg_i64* zero_lo;     // (L,) boundary margins: window l is dropped
    const mlpg_i64* zero_hi;     // at t < zero_lo[l] or t >= n - zero_hi[l]
    mlpg_i64 B, T, D, L;
    mlpg_i64 k;              // half-bandwidth max_l(left_l + right_l)
    mlpg_i64 P;              // max_l left_l
    int mode, weight_kind, global_weights;
    double pivot_rtol;       // a pivot must exceed pivot_rtol * R[i, i]
};

// Smallest MAXK instantiation (a power of two) usable for half-bandwidth k
// and max left + max right = PQ: the factor rings need k <= MAXK, the
// solution ring (2 * MAXK entries) frames i .. i + max(PQ, k).
__host__ __device__ inline int mlpg_required_maxk(mlpg_i64 k, mlpg_i64 PQ) {
    int m = 2;
    while (m < k || 2 * m < PQ + 1 || 2 * m < k + 1) m *= 2;
    return m;
}

__host__ __device__ inline void mlpg_report_failure(mlpg_u64* status, mlpg_u64 key) {
#ifdef __CUDA_ARCH__
    atomicMin(status, key);
#else
    if (key < *status) *status = key;
#endif
}

// The results are tested finite as they are stored, so that the API layer
// need not scan them again (one reduction and one host synchronisation per
// result array): each thread ORs "not finite" over the values it stores, as
// rounded to S (a double that fits may overflow float), and reports it once
// in status[1], which the host reads back with the pivot status.  x - x is
// 0 exactly when x is finite (inf - inf and NaN - NaN are NaN); no header is
// needed, and the test is the same on the host build.
template <typename S>
__host__ __device__ inline bool mlpg_nonfinite(S stored) {
    return !(stored - stored == (S)0);
}

__host__ __device__ inline void mlpg_report_nonfinite(mlpg_u64* status, bool nonfinite) {
    if (!nonfinite) return;
#ifdef __CUDA_ARCH__
    atomicOr(status + 1, 1ULL);
#else
    status[1] |= 1ULL;
#endif
}

// Window l constrains frame t of an n-frame sequence (boundary rule).
template <typename S>
__host__ __device__ inline bool mlpg_active(const MlpgArgs<S>& A, mlpg_i64 l, mlpg_i64 t,
                                            mlpg_i64 n) {
    return t >= 0 && t < n && t >= A.zero_lo[l] && t < n - A.zero_hi[l];
}

// Reciprocals, correctly rounded as 1 / x is (so the GPU and the host build
// agree bit for bit), through the cheaper reciprocal intrinsics on the GPU.
__host__ __device__ inline float mlpg_rcp(float x) {
#ifdef __CUDA_ARCH__
    return __frcp_rn(x);
#else
    return 1.0f / x;
#endif
}
__host__ __device__ inline double mlpg_rcp(double x) {
#ifdef __CUDA_ARCH__
    return __drcp_rn(x);
#else
    return 1.0 / x;
#endif
}

// The precision a stored weight stands for (KIND_VARIANCE or KIND_PRECISION);
// the reciprocal of a variance is taken in its storage type, like the CPU
// backend: 1 / +inf = 0.
template <typename S>
__host__ __device__ inline double mlpg_weight_precision(int kind, S w) {
    return (kind == MLPG_KIND_VARIANCE) ? (double)mlpg_rcp(w) : (double)w;
}

// Precision of window l, frame t of sequence b, dimension d (before the
// boundary rule).
template <typename S>
__host__ __device__ inline double mlpg_precision(const MlpgArgs<S>& A, mlpg_i64 b, mlpg_i64 t,
                                                 mlpg_i64 l, mlpg_i64 d) {
    if (A.weight_kind == MLPG_KIND_UNIT) return 1.0;
    const mlpg_i64 LD = A.L * A.D;
    const mlpg_i64 idx = A.global_weights ? (l * A.D + d) : ((b * A.T + t) * LD + l * A.D + d);
    return mlpg_weight_precision(A.weight_kind, A.weights[idx]);
}

// The adjoint's outputs for window l at frame t (flat index o = (b*T + t)*L*D
// + l*D + d) from the precision q and (W_l c)_t, (W_l v)_t:
//     dL/dmu = q W v;  dL/dq = (W v)(mu - W c);  dL/dvar = -q^2 dL/dq
// (the last as -(q W v)(q (mu - W c))).
// Per-frame weights get their gradient stored; for global weights it is
// returned, for the caller to sum over frames (0 otherwise).  `nonfinite`
// gathers the test of the values stored (the summed global gradient is not
// tested: the host's sum may overflow).
template <typename S>
__host__ __device__ inline double mlpg_store_grads(const MlpgArgs<S>& A, mlpg_i64 o, double q,
                                                   double Wc, double Wv, bool per_frame,
                                                   bool& nonfinite) {
    const S gm = (S)(q * Wv);
    A.grad_means[o] = gm;
    nonfinite |= mlpg_nonfinite(gm);
    if (A.weight_kind == MLPG_KIND_UNIT) return 0.0;
    // dL/dvar as -(q W v)(q (mu - W c)): q^2 alone overflows for variances
    // below ~1e-154 where the gradient itself is finite
    const double dmu = (double)A.means[o] - Wc;
    const double gq = (A.weight_kind == MLPG_KIND_VARIANCE) ? -(q * Wv) * (q * dmu) : Wv * dmu;
    if (!per_frame) return gq;
    const S gw = (S)gq;
    A.grad_weights[o] = gw;
    nonfinite |= mlpg_nonfinite(gw);
    return 0.0;
}

// The adjoint's outputs for window l at frame t when the boundary rule drops
// the window there: zero.
template <typename S>
__host__ __device__ inline void mlpg_zero_grads(const MlpgArgs<S>& A, mlpg_i64 o,
                                                bool per_frame) {
    A.grad_means[o] = (S)0;
    if (per_frame) A.grad_weights[o] = (S)0;
}

// Frames n .. T-1 (beyond sequence b's length) of the outputs of (b, d) are 0.
template <typename S>
__host__ __device__ inline void mlpg_zero_tail(const MlpgArgs<S>& A, mlpg_i64 b, mlpg_i64 d,
                                               mlpg_i64 n) {
    const mlpg_i64 T = A.T, D = A.D, LD = A.L * A.D;
    const bool per_frame = A.weight_kind != MLPG_KIND_UNIT && !A.global_weights;
    for (mlpg_i64 t = n; t < T; ++t) {
        if (mlpg_is_adjoint(A.mode)) {
            for (mlpg_i64 l = 0; l < A.L; ++l)
                mlpg_zero_grads(A, (b * T + t) * LD + l * D + d, per_frame);
        } else {
            A.out[(b * T + t) * D + d] = (S)0;
        }
    }
}

// One sequence b, one static dimension d.  Returns 0, or 1 after reporting a
// non-positive pivot in A.status.
template <typename S, int MAXK>
__host__ __device__ int mlpg_sequence(const MlpgArgs<S>& A, mlpg_i64 b, mlpg_i64 d) {
    const int RM = MAXK - 1;          // factor ring mask
    const int SR = 2 * MAXK;          // solution ring size
    const int SM = SR - 1;
    const mlpg_i64 T = A.T, D = A.D, L = A.L, LD = L * D, k = A.k, P = A.P;
    const mlpg_i64 BD = A.B * D, bd = b * D + d;
    const mlpg_i64 n = A.lengths[b];
    const int mode = A.mode;
    const bool adjoint = mlpg_is_adjoint(mode);
    // right-hand sides: r (forward, adjoint), g (solve, both adjoints); the
    // given-c adjoint reads c from A.out and solves for v alone
    const int nr = (mode == MLPG_MODE_ADJOINT) ? 2 : 1;
    const mlpg_i64 SS = k + nr;       // scratch entries per frame
    const bool has_means = mode == MLPG_MODE_FORWARD || mode == MLPG_MODE_ADJOINT;
    const bool has_g = mode != MLPG_MODE_FORWARD;
    const int vslot = nr - 1;         // v's column of the solution ring (adjoints)

    double Lring[MAXK][MAXK + 1];     // L[j, j-a], a = 1..k, of the last k rows j
    double Dinv[MAXK];                // 1 / D[j]
    double yring[MAXK][2];            // forward substitution
    double xring[SR][2];              // solutions (c, v; v alone given c) of the back substitution
    double Rrow[MAXK + 1];            // R[i, i-a]
    double Et[MAXK + 1];              // L[i, i-a] D[i-a]
    double Lt[MAXK + 1];              // L[i, i-a]
    double pw[MAXK + 1];              // precisions feeding row i, one window
    double pmw[MAXK + 1];             // precision * mean, same frames
    double rv[2];
    bool nonfinite = false;           // a result stored was not finite

    // ---- forward sweep: row i of R and r, its L D L^T row, forward substitution
    for (mlpg_i64 i = 0; i < n; ++i) {
        const mlpg_i64 amax = k < i ? k : i;
        for (mlpg_i64 a = 0; a <= amax; ++a) Rrow[a] = 0.0;
        double r = 0.0;
        for (mlpg_i64 l = 0; l < L; ++l) {
            const mlpg_i64 left = A.win_left[l], width = A.win_width[l];
            const double* c = A.coeffs + A.win_offset[l];
            for (mlpg_i64 u = 0; u < width; ++u) {
                const mlpg_i64 j = i + left - u;   // frame whose window-l row reaches i
                if (c[u] != 0.0 && mlpg_active(A, l, j, n)) {
                    const double p = mlpg_precision(A, b, j, l, d);
                    pw[u] = p;
                    pmw[u] = has_means ? p * (double)A.means[(b * T + j) * LD + l * D + d] : 0.0;
                } else {
                    pw[u] = 0.0;
                    pmw[u] = 0.0;
                }
            }
            for (mlpg_i64 u = 0; u < width; ++u) {
                if (pw[u] == 0.0) continue;
                r += c[u] * pmw[u];
                const mlpg_i64 am = u < amax ? u : amax;
                for (mlpg_i64 a = 0; a <= am; ++a) Rrow[a] += c[u] * c[u - a] * pw[u];
            }
        }
        int q = 0;
        if (has_means) rv[q++] = r;
        if (has_g) rv[q++] = (double)A.rhs[(b * T + i) * D + d];

        // L[i, i-a] for a = amax .. 1, then the pivot D[i]
        for (mlpg_i64 a = amax; a >= 1; --a) {
            const int js = (int)((i - a) & RM);
            double acc = Rrow[a];
            for (mlpg_i64 bb = a + 1; bb <= amax; ++bb) acc -= Et[bb] * Lring[js][bb - a];
            Et[a] = acc;
            Lt[a] = acc * Dinv[js];
        }
        double piv = Rrow[0];
        for (mlpg_i64 a = 1; a <= amax; ++a) piv -= Et[a] * Lt[a];
        if (!(piv > A.pivot_rtol * Rrow[0])) {
            mlpg_report_failure(A.status, (mlpg_u64)((b * T + i) * D + d));
            return 1;
        }
        const double dinv = mlpg_rcp(piv);
        const int slot = (int)(i & RM);
        S* sc = A.scratch + i * SS * BD + bd;
        for (int rr = 0; rr < nr; ++rr) {
            double y = rv[rr];
            for (mlpg_i64 a = 1; a <= amax; ++a) y -= Lt[a] * yring[(i - a) & RM][rr];
            yring[slot][rr] = y;
            sc[(k + rr) * BD] = (S)(y * dinv);
        }
        // (ring row `slot` may be row i - MAXK, read above: write it last)
        Dinv[slot] = dinv;
        for (mlpg_i64 a = 1; a <= amax; ++a) {
            Lring[slot][a] = Lt[a];
            sc[(a - 1) * BD] = (S)Lt[a];
        }
    }

    // ---- back substitution from the end; in adjoint mode frame t = i + P is
    // complete once row i is solved (its windows reach frames i .. i + P + Q)
    const mlpg_i64 iend = adjoint ? -P : 0;
    for (mlpg_i64 i = n - 1; i >= iend; --i) {
        if (i >= 0) {
            const mlpg_i64 bmax = k < n - 1 - i ? k : n - 1 - i;
            const S* sc = A.scratch + i * SS * BD + bd;
            for (int rr = 0; rr < nr; ++rr) {
                double x = (double)sc[(k + rr) * BD];
                for (mlpg_i64 bb = 1; bb <= bmax; ++bb)
                    x -= (double)A.scratch[((i + bb) * SS + bb - 1) * BD + bd]
                         * xring[(i + bb) & SM][rr];
                xring[i & SM][rr] = x;
            }
            if (!adjoint) {
                const S x = (S)xring[i & SM][0];
                A.out[(b * T + i) * D + d] = x;
                nonfinite |= mlpg_nonfinite(x);
            }
        }
        const mlpg_i64 t = i + P;
        if (adjoint && t < n) {
            for (mlpg_i64 l = 0; l < L; ++l) {
                const mlpg_i64 o = (b * T + t) * LD + l * D + d;
                const bool per_frame = A.weight_kind != MLPG_KIND_UNIT && !A.global_weights;
                if (!mlpg_active(A, l, t, n)) {
                    mlpg_zero_grads(A, o, per_frame);
                    continue;
                }
                // W_l c and W_l v at frame t
                const mlpg_i64 left = A.win_left[l], width = A.win_width[l];
                const double* c = A.coeffs + A.win_offset[l];
                double Wc = 0.0, Wv = 0.0;
                for (mlpg_i64 u = 0; u < width; ++u) {
                    const mlpg_i64 j = t - left + u;
                    if (j < 0 || j >= n || c[u] == 0.0) continue;
                    Wc += c[u] * ((mode == MLPG_MODE_ADJOINT) ? xring[j & SM][0]
                                                              : (double)A.out[(b * T + j) * D + d]);
                    Wv += c[u] * xring[j & SM][vslot];
                }
                const double gq = mlpg_store_grads(A, o, mlpg_precision(A, b, t, l, d), Wc, Wv,
                                                   per_frame, nonfinite);
                if (A.weight_kind != MLPG_KIND_UNIT && A.global_weights)
                    A.gw_acc[b * LD + l * D + d] += gq;
            }
        }
    }

    mlpg_zero_tail(A, b, d, n);
    mlpg_report_nonfinite(A.status, nonfinite);
    return 0;
}

// ---------------------------------------------------------------------------
// Windows that reach at most one frame to each side (max left <= 1, max
// right <= 1, L <= MLPG_B2_MAX_WINDOWS: the static + delta + delta-delta sets
// every TTS/VC recipe uses).  Half-bandwidth k <= 2, so R is pentadiagonal
// and, with every window padded to the three taps w(-1), w(0), w(+1),
//
//     R[i, i]   = smm[i+1] + s00[i] + spp[i-1]
//     R[i, i-1] = s0m[i]   + sp0[i-1]
//     R[i, i-2] = spm[i-1]
//     r[i]      = rm[i+1]  + r0[i]  + rp[i-1]
//
// where each frame f contributes the precision-weighted tap products
// smm[f] = sum_l q_l[f] w_l(-1)^2, s0m[f] = sum_l q_l[f] w_l(0) w_l(-1), ...,
// rm[f] = sum_l q_l[f] mu_l[f] w_l(-1), ... (q_l[f]: the boundary-masked
// precision; frames outside [0, n) contribute nothing).  Rows of R and r
// thus depend only on the inputs, not on the factorisation: only the LDL^T
// recurrence is serial.
#define MLPG_B2_MAX_WINDOWS 4

#ifdef __CUDACC__
#define MLPG_UNROLL _Pragma("unroll")
#else
#define MLPG_UNROLL
#endif

// The three taps w(-1), w(0), w(+1) of each window (zeros where a window
// does not reach), its boundary margins as an active range zlo <= t < zhi
// for a sequence of n frames, and, with global weights, its precision for
// static dimension d (1 otherwise).
template <int L>
struct MlpgTaps {
    double wm[L], w0[L], wp[L], qglob[L];
    mlpg_i64 zlo[L], zhi[L];
};

template <typename S, int L>
__host__ __device__ inline void mlpg_load_taps(const MlpgArgs<S>& A, mlpg_i64 n, mlpg_i64 d,
                                               MlpgTaps<L>& W) {
    MLPG_UNROLL
    for (int l = 0; l < L; ++l) {
        const mlpg_i64 left = A.win_left[l], width = A.win_width[l];
        const double* c = A.coeffs + A.win_offset[l];
        // tap at offset o (frame t + o) is c[o + left]
        W.wm[l] = (left - 1 >= 0 && left - 1 < width) ? c[left - 1] : 0.0;
        W.w0[l] = (left < width) ? c[left] : 0.0;
        W.wp[l] = (left + 1 < width) ? c[left + 1] : 0.0;
        W.zlo[l] = A.zero_lo[l] > 0 ? A.zero_lo[l] : 0;
        W.zhi[l] = n - A.zero_hi[l];
        if (W.zhi[l] > n) W.zhi[l] = n;
        W.qglob[l] = 1.0;
        if (A.weight_kind != MLPG_KIND_UNIT && A.global_weights)
            W.qglob[l] = mlpg_weight_precision(A.weight_kind, A.weights[l * A.D + d]);
    }
}

// ---------------------------------------------------------------------------
// The k <= 2 solve is split in three, so that everything but the LDL^T
// recurrence runs with one thread per (b, t, d) instead of one per (b, d):
//
//   1. mlpg_split_rows (per frame): row i of R and r from the frames i - 1,
//      i, i + 1 (the formulas above), in double, into the rows buffer
//      work[(i * 4 + j) * B*D + b*D + d], j = R[i, i], R[i, i-1], R[i, i-2], r[i].
//   2. mlpg_split_solve (per sequence and dimension): the LDL^T recurrence,
//      forward and back substitution, reading the rows PF frames ahead
//      into a register ring (static slots: the loop is unrolled PF times);
//      factors stored in S in the scratch buffer (T, 2 + nrhs, B*D):
//      L[i, i-1], L[i, i-2], then y / D of each right-hand side; the
//      solution goes to out, or (adjoint) c and v to the x buffer
//      work[T * 4 * B*D + (t * 2 + j) * B*D + b*D + d] in double, or (adjoint
//      given c: no r, g the one right-hand side) v to work[T * 4 * B*D +
//      t * B*D + b*D + d].
//   3. mlpg_split_grads (adjoints only; per frame, or per sequence and
//      dimension for global weights, whose gradient sums over frames): the
//      gradients of frame t from c and v at t - 1 .. t + 1 (c from `out`
//      when given).
//
// One thread per (b, d) leaves the GPU nearly idle for typical batches (a
// few thousand threads for over a hundred multiprocessors), and each of
// those threads then spends most of its time on the loads, reciprocals and
// tap products of the frame sums; the split hands those to B*T*D threads and
// leaves the serial thread about twenty floating-point operations a frame.
// (Measured on an H100, benchmarks/results/gpu-kernels-*: 1.2-2.4x faster
// than doing all of it in the per-sequence thread, which was 4-8x faster than
// the general kernel.)  Numbers are those of mlpg_sequence up to the order
// of the sums: double arithmetic, factors stored in S.

template <typename S, int L, bool HAS_MEANS>
__host__ __device__ void mlpg_split_rows(const MlpgArgs<S>& A, mlpg_i64 b, mlpg_i64 i,
                                         mlpg_i64 d) {
    const mlpg_i64 n = A.lengths[b];
    if (i >= n) return;
    const mlpg_i64 T = A.T, D = A.D, LD = (mlpg_i64)L * D, BD = A.B * D;
    const int kind = A.weight_kind;
    const bool per_frame = kind != MLPG_KIND_UNIT && !A.global_weights;
    MlpgTaps<L> W;
    mlpg_load_taps(A, n, d, W);
    double Rii = 0.0, R1 = 0.0, R2 = 0.0, r = 0.0;
    MLPG_UNROLL
    for (int o = -1; o <= 1; ++o) {            // frame f = i + o
        const mlpg_i64 f = i + o;
        if (f < 0 || f >= n) continue;
        MLPG_UNROLL
        for (int l = 0; l < L; ++l) {
            if (f < W.zlo[l] || f >= W.zhi[l]) continue;
            const mlpg_i64 at = (b * T + f) * LD + l * D + d;
            const double q = per_frame ? mlpg_weight_precision(kind, A.weights[at])
                                       : W.qglob[l];
            if (q == 0.0) continue;            // no constraint: the mean is not read
            const double qm = HAS_MEANS ? q * (double)A.means[at] : 0.0;
            // frame f's window row reaches frames f - 1, f, f + 1 with w(-1), w(0),
            // w(+1); row i is frame f + (-o), i.e. tap -o of it
            if (o == -1) {                     // f = i - 1: taps w(+1) (i), w(0) (i-1), w(-1) (i-2)
                Rii += q * W.wp[l] * W.wp[l];
                R1 += q * W.wp[l] * W.w0[l];
                R2 += q * W.wp[l] * W.wm[l];
                r += qm * W.wp[l];
            } else if (o == 0) {               // f = i: taps w(0) (i), w(-1) (i-1)
                Rii += q * W.w0[l] * W.w0[l];
                R1 += q * W.w0[l] * W.wm[l];
                r += qm * W.w0[l];
            } else {                           // f = i + 1: tap w(-1) (i)
                Rii += q * W.wm[l] * W.wm[l];
                r += qm * W.wm[l];
            }
        }
    }
    double* row = A.work + i * 4 * BD + b * D + d;
    row[0] = Rii;
    row[BD] = R1;
    row[2 * BD] = R2;
    row[3 * BD] = r;
}

template <typename S, int MODE, int PF>
__host__ __device__ int mlpg_split_solve(const MlpgArgs<S>& A, mlpg_i64 b, mlpg_i64 d) {
    constexpr bool HAS_MEANS = MODE == MLPG_MODE_FORWARD || MODE == MLPG_MODE_ADJOINT;
    constexpr bool HAS_G = MODE != MLPG_MODE_FORWARD;
    constexpr int NR = (MODE == MLPG_MODE_ADJOINT) ? 2 : 1;
    constexpr int SS = 2 + NR;                 // scratch entries per frame
    const mlpg_i64 T = A.T, D = A.D, BD = A.B * D, bd = b * D + d;
    const mlpg_i64 n = A.lengths[b];
    const double* rows = A.work + bd;          // + (i * 4 + j) * BD
    double* xs = A.work + T * 4 * BD + bd;     // + (t * 2 + j) * BD
    const S* g_row = A.rhs + b * T * D + d;    // + t * D
    S* sc_row = A.scratch + bd;                // + (t * SS + j) * BD

    // ---- forward: ring slot i % PF holds row i (and g[i])
    double fR0[PF], fR1[PF], fR2[PF], fr[PF], fg[PF];
    MLPG_UNROLL
    for (int j = 0; j < PF; ++j) {
        fR0[j] = fR1[j] = fR2[j] = fr[j] = fg[j] = 0.0;
        if (j < n) {
            const double* row = rows + j * 4 * BD;
            fR0[j] = row[0]; fR1[j] = row[BD]; fR2[j] = row[2 * BD];
            if (HAS_MEANS) fr[j] = row[3 * BD];
            if (HAS_G) fg[j] = (double)g_row[j * D];
        }
    }
    double L1_prev = 0, dinv1 = 0, dinv2 = 0;  // L[i-1, i-2], 1/D[i-1], 1/D[i-2]
    double y1[NR], y2[NR];
    MLPG_UNROLL
    for (int rr = 0; rr < NR; ++rr) { y1[rr] = 0; y2[rr] = 0; }
    for (mlpg_i64 i0 = 0; i0 < n; i0 += PF) {
        MLPG_UNROLL
        for (int j = 0; j < PF; ++j) {
            const mlpg_i64 i = i0 + j;
            if (i >= n) break;
            const double Rii = fR0[j], E2 = fR2[j];
            const double L2 = E2 * dinv2;
            const double E1 = fR1[j] - E2 * L1_prev;
            const double L1 = E1 * dinv1;
            const double piv = Rii - E2 * L2 - E1 * L1;
            if (!(piv > A.pivot_rtol * Rii)) {
                mlpg_report_failure(A.status, (mlpg_u64)((b * T + i) * D + d));
                return 1;
            }
            const double dinv = mlpg_rcp(piv);
            double rv[NR];
            int q = 0;
            if (HAS_MEANS) rv[q++] = fr[j];
            if (HAS_G) rv[q++] = fg[j];
            // refill the slot with row i + PF
            const mlpg_i64 f = i + PF;
            if (f < n) {
                const double* row = rows + f * 4 * BD;
                fR0[j] = row[0]; fR1[j] = row[BD]; fR2[j] = row[2 * BD];
                if (HAS_MEANS) fr[j] = row[3 * BD];
                if (HAS_G) fg[j] = (double)g_row[f * D];
            }
            S* sc = sc_row + i * SS * BD;
            sc[0] = (S)L1;
            sc[BD] = (S)L2;
            MLPG_UNROLL
            for (int rr = 0; rr < NR; ++rr) {
                const double y = rv[rr] - L1 * y1[rr] - L2 * y2[rr];
                sc[(2 + rr) * BD] = (S)(y * dinv);
                y2[rr] = y1[rr];
                y1[rr] = y;
            }
            L1_prev = L1;
            dinv2 = dinv1;
            dinv1 = dinv;
        }
    }

    // ---- back substitution: slot m % PF holds row n - 1 - m's factors
    S sL1[PF], sL2[PF], sz[PF][NR];
    MLPG_UNROLL
    for (int j = 0; j < PF; ++j) {
        const mlpg_i64 i = n - 1 - j;
        sL1[j] = sL2[j] = (S)0;
        MLPG_UNROLL
        for (int rr = 0; rr < NR; ++rr) sz[j][rr] = (S)0;
        if (i >= 0) {
            const S* sc = sc_row + i * SS * BD;
            sL1[j] = sc[0];
            sL2[j] = sc[BD];
            MLPG_UNROLL
            for (int rr = 0; rr < NR; ++rr) sz[j][rr] = sc[(2 + rr) * BD];
        }
    }
    double x1[NR], x2[NR];                     // rows i + 1, i + 2 (0 beyond n)
    bool nonfinite = false;                    // a result stored was not finite
    // L1_next = L[i+1, i] (row i+1's first factor), L2_next2 = L[i+2, i] (row
    // i+2's second factor); L2_next = L[i+1, i-1] becomes L2_next2 next step
    double L1_next = 0, L2_next = 0, L2_next2 = 0;
    MLPG_UNROLL
    for (int rr = 0; rr < NR; ++rr) { x1[rr] = 0; x2[rr] = 0; }
    for (mlpg_i64 m0 = 0; m0 < n; m0 += PF) {
        MLPG_UNROLL
        for (int j = 0; j < PF; ++j) {
            const mlpg_i64 m = m0 + j;
            if (m >= n) break;
            const mlpg_i64 i = n - 1 - m;
            const double fL1 = (double)sL1[j], fL2 = (double)sL2[j];
            double x0[NR];
            MLPG_UNROLL
            for (int rr = 0; rr < NR; ++rr)
                x0[rr] = (double)sz[j][rr] - L1_next * x1[rr] - L2_next2 * x2[rr];
            const mlpg_i64 mi = i - PF;
            if (mi >= 0) {
                const S* sc = sc_row + mi * SS * BD;
                sL1[j] = sc[0];
                sL2[j] = sc[BD];
                MLPG_UNROLL
                for (int rr = 0; rr < NR; ++rr) sz[j][rr] = sc[(2 + rr) * BD];
            }
            if (MODE == MLPG_MODE_ADJOINT) {
                MLPG_UNROLL
                for (int rr = 0; rr < NR; ++rr) xs[(i * 2 + rr) * BD] = x0[rr];
            } else if (MODE == MLPG_MODE_ADJOINT_GIVEN_C) {
                xs[i * BD] = x0[0];
            } else {
                const S x = (S)x0[0];
                A.out[(b * T + i) * D + d] = x;
                nonfinite |= mlpg_nonfinite(x);
            }
            MLPG_UNROLL
            for (int rr = 0; rr < NR; ++rr) { x2[rr] = x1[rr]; x1[rr] = x0[rr]; }
            L2_next2 = L2_next;
            L2_next = fL2;
            L1_next = fL1;
        }
    }
    mlpg_zero_tail(A, b, d, n);
    mlpg_report_nonfinite(A.status, nonfinite);   // (adjoints: the grads kernel tests)
    return 0;
}

// Adjoint gradients of frames t0 .. t1 - 1 (< the length) of (b, d) from c and
// v in the x buffer (ADJOINT_GIVEN_C: c from `out`, v alone in the buffer);
// global weights: their gradient summed over those frames is added to gw_acc
// (so a launch gives each (b, d) to one thread).
template <typename S, int L>
__host__ __device__ void mlpg_split_grads(const MlpgArgs<S>& A, mlpg_i64 b, mlpg_i64 d,
                                          mlpg_i64 t0, mlpg_i64 t1) {
    const mlpg_i64 n = A.lengths[b];
    if (t1 > n) t1 = n;
    if (t0 >= t1) return;
    const mlpg_i64 T = A.T, D = A.D, LD = (mlpg_i64)L * D, BD = A.B * D;
    const int kind = A.weight_kind;
    const bool per_frame = kind != MLPG_KIND_UNIT && !A.global_weights;
    MlpgTaps<L> W;
    mlpg_load_taps(A, n, d, W);
    const double* xs = A.work + T * 4 * BD + b * D + d;   // + (t * 2 + j) * BD, given c: + t * BD
    const bool given_c = A.mode == MLPG_MODE_ADJOINT_GIVEN_C;
    const S* c_given = A.out + b * T * D + d;              // + t * D
    double gacc[L];
    MLPG_UNROLL
    for (int l = 0; l < L; ++l) gacc[l] = 0.0;
    bool nonfinite = false;                    // a gradient stored was not finite
    for (mlpg_i64 t = t0; t < t1; ++t) {
        double c[3], v[3];                     // frames t - 1, t, t + 1 (0 outside)
        MLPG_UNROLL
        for (int o = 0; o < 3; ++o) {
            const mlpg_i64 f = t - 1 + o;
            const bool in = f >= 0 && f < n;
            if (given_c) {
                c[o] = in ? (double)c_given[f * D] : 0.0;
                v[o] = in ? xs[f * BD] : 0.0;
            } else {
                c[o] = in ? xs[(f * 2) * BD] : 0.0;
                v[o] = in ? xs[(f * 2 + 1) * BD] : 0.0;
            }
        }
        MLPG_UNROLL
        for (int l = 0; l < L; ++l) {
            const mlpg_i64 o = (b * T + t) * LD + l * D + d;
            if (t < W.zlo[l] || t >= W.zhi[l]) {
                mlpg_zero_grads(A, o, per_frame);
                continue;
            }
            const double Wc = W.wm[l] * c[0] + W.w0[l] * c[1] + W.wp[l] * c[2];
            const double Wv = W.wm[l] * v[0] + W.w0[l] * v[1] + W.wp[l] * v[2];
            const double q = per_frame ? mlpg_weight_precision(kind, A.weights[o])
                                       : W.qglob[l];
            gacc[l] += mlpg_store_grads(A, o, q, Wc, Wv, per_frame, nonfinite);
        }
    }
    mlpg_report_nonfinite(A.status, nonfinite);
    if (kind != MLPG_KIND_UNIT && A.global_weights) {
        MLPG_UNROLL
        for (int l = 0; l < L; ++l) A.gw_acc[b * LD + l * D + d] += gacc[l];
    }
}

// The kernels' parameter list (pointers, then scalars with explicit types:
// the host passes long long / int / double) and the MlpgArgs made from it.
#define MLPG_KERNEL_PARAMS(S)                                                          \
    const S *means, const S *weights, const S *rhs, S *out, S *grad_means,            \
        S *grad_weights, double *gw_acc, S *scratch, double *work, mlpg_u64 *status,   \
        const mlpg_i64 *lengths, const mlpg_i64 *win_left, const mlpg_i64 *win_width,  \
        const mlpg_i64 *win_offset, const double *coeffs, const mlpg_i64 *zero_lo,     \
        const mlpg_i64 *zero_hi, mlpg_i64 B, mlpg_i64 T, mlpg_i64 D, mlpg_i64 L,       \
        mlpg_i64 k, mlpg_i64 P, int mode, int weight_kind, int global_weights,         \
        double pivot_rtol

template <typename S>
__host__ __device__ inline MlpgArgs<S> mlpg_args(MLPG_KERNEL_PARAMS(S)) {
    MlpgArgs<S> A;
    A.means = means; A.weights = weights; A.rhs = rhs; A.out = out;
    A.grad_means = grad_means; A.grad_weights = grad_weights; A.gw_acc = gw_acc;
    A.scratch = scratch; A.work = work; A.status = status; A.lengths = lengths;
    A.win_left = win_left; A.win_width = win_width; A.win_offset = win_offset;
    A.coeffs = coeffs; A.zero_lo = zero_lo; A.zero_hi = zero_hi;
    A.B = B; A.T = T; A.D = D; A.L = L; A.k = k; A.P = P;
    A.mode = mode; A.weight_kind = weight_kind; A.global_weights = global_weights;
    A.pivot_rtol = pivot_rtol;
    return A;
}

#define MLPG_KERNEL_ARGS                                                               \
    means, weights, rhs, out, grad_means, grad_weights, gw_acc, scratch, work, status, \
        lengths, win_left, win_width, win_offset, coeffs, zero_lo, zero_hi, B, T, D,   \
        L, k, P, mode, weight_kind, global_weights, pivot_rtol

#ifdef __CUDACC__
// One thread per (b, d), consecutive threads consecutive d (coalesced on the
// (B, T, L*D) and (T, k + nrhs, B*D) layouts).
template <typename S, int MAXK>
__global__ void mlpg_kernel(MLPG_KERNEL_PARAMS(S)) {
    const mlpg_i64 gid = (mlpg_i64)blockIdx.x * (mlpg_i64)blockDim.x + (mlpg_i64)threadIdx.x;
    if (gid >= B * D) return;
    mlpg_sequence<S, MAXK>(mlpg_args<S>(MLPG_KERNEL_ARGS), gid / D, gid % D);
}

// The split k <= 2 kernels.  Per-frame kernels: one thread per (b, t, d),
// consecutive threads consecutive d.
template <typename S, int NW, int HAS_MEANS>
__global__ void mlpg_split_rows_kernel(MLPG_KERNEL_PARAMS(S)) {
    const mlpg_i64 gid = (mlpg_i64)blockIdx.x * (mlpg_i64)blockDim.x + (mlpg_i64)threadIdx.x;
    if (gid >= B * T * D) return;
    const mlpg_i64 d = gid % D, bt = gid / D;
    mlpg_split_rows<S, NW, HAS_MEANS != 0>(mlpg_args<S>(MLPG_KERNEL_ARGS), bt / T, bt % T, d);
}

template <typename S, int MODE, int PF>
__global__ void mlpg_split_solve_kernel(MLPG_KERNEL_PARAMS(S)) {
    const mlpg_i64 gid = (mlpg_i64)blockIdx.x * (mlpg_i64)blockDim.x + (mlpg_i64)threadIdx.x;
    if (gid >= B * D) return;
    mlpg_split_solve<S, MODE, PF>(mlpg_args<S>(MLPG_KERNEL_ARGS), gid / D, gid % D);
}

// PER_FRAME 1: one thread per (b, t, d); 0: one per (b, d) over every frame
// (global weights: the gradient sums over frames without atomics).
template <typename S, int NW, int PER_FRAME>
__global__ void mlpg_split_grads_kernel(MLPG_KERNEL_PARAMS(S)) {
    const mlpg_i64 gid = (mlpg_i64)blockIdx.x * (mlpg_i64)blockDim.x + (mlpg_i64)threadIdx.x;
    if (PER_FRAME) {
        if (gid >= B * T * D) return;
        const mlpg_i64 d = gid % D, bt = gid / D, t = bt % T;
        mlpg_split_grads<S, NW>(mlpg_args<S>(MLPG_KERNEL_ARGS), bt / T, d, t, t + 1);
    } else {
        if (gid >= B * D) return;
        mlpg_split_grads<S, NW>(mlpg_args<S>(MLPG_KERNEL_ARGS), gid / D, gid % D, 0, T);
    }
}

#ifdef MLPGX_EXPLICIT_INSTANTIATION
// For offline compile checks with nvcc (cupy instantiates through
// name_expressions instead).
#define MLPGX_INST(S, K) template __global__ void mlpg_kernel<S, K>(MLPG_KERNEL_PARAMS(S));
MLPGX_INST(float, 2) MLPGX_INST(float, 4) MLPGX_INST(float, 8) MLPGX_INST(float, 16)
MLPGX_INST(float, 32)
MLPGX_INST(double, 2) MLPGX_INST(double, 4) MLPGX_INST(double, 8) MLPGX_INST(double, 16)
MLPGX_INST(double, 32)
#undef MLPGX_INST
#ifndef MLPGX_B2_PF
#define MLPGX_B2_PF 8
#endif
#define MLPGX_INST_SPLIT_L(S, L) \
    template __global__ void mlpg_split_rows_kernel<S, L, 0>(MLPG_KERNEL_PARAMS(S)); \
    template __global__ void mlpg_split_rows_kernel<S, L, 1>(MLPG_KERNEL_PARAMS(S)); \
    template __global__ void mlpg_split_grads_kernel<S, L, 0>(MLPG_KERNEL_PARAMS(S)); \
    template __global__ void mlpg_split_grads_kernel<S, L, 1>(MLPG_KERNEL_PARAMS(S));
#define MLPGX_INST_SPLIT(S) MLPGX_INST_SPLIT_L(S, 1) MLPGX_INST_SPLIT_L(S, 2) \
    MLPGX_INST_SPLIT_L(S, 3) MLPGX_INST_SPLIT_L(S, 4) \
    template __global__ void mlpg_split_solve_kernel<S, 0, MLPGX_B2_PF>(MLPG_KERNEL_PARAMS(S)); \
    template __global__ void mlpg_split_solve_kernel<S, 1, MLPGX_B2_PF>(MLPG_KERNEL_PARAMS(S)); \
    template __global__ void mlpg_split_solve_kernel<S, 2, MLPGX_B2_PF>(MLPG_KERNEL_PARAMS(S)); \
    template __global__ void mlpg_split_solve_kernel<S, 3, MLPGX_B2_PF>(MLPG_KERNEL_PARAMS(S));
MLPGX_INST_SPLIT(float) MLPGX_INST_SPLIT(double)
#undef MLPGX_INST_SPLIT
#undef MLPGX_INST_SPLIT_L
#endif
#endif  // __CUDACC__

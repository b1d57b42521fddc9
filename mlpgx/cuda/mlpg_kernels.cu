// mlpgx CUDA kernels: the fused banded MLPG solver, one thread per
// (sequence b, static dimension d).
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
// The per-sequence routine mlpg_sequence is __host__ __device__ and uses no
// CUDA-only construct, so the test suite compiles it with a host C++
// compiler (tests/cuda_host_harness.cpp) and checks it against the reference
// backend without a GPU.  Only the __global__ entry point below is
// CUDA-specific.
//
// No #include: NVRTC (cupy.RawModule) has no C library headers.

typedef long long mlpg_i64;
typedef unsigned long long mlpg_u64;

enum {
    MLPG_MODE_FORWARD = 0,   // out = R^{-1} r
    MLPG_MODE_SOLVE = 1,     // out = R^{-1} rhs
    MLPG_MODE_ADJOINT = 2    // grad_means, grad_weights from c = R^{-1} r, v = R^{-1} g
};

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
    S* out;                  // (B, T, D); forward, solve
    S* grad_means;           // (B, T, L*D); adjoint
    S* grad_weights;         // (B, T, L*D); adjoint, per-frame weights
    double* gw_acc;          // (B, L*D); adjoint, global weights
    S* scratch;              // (T, k + nrhs, B*D)
    mlpg_u64* status;        // 1 entry, initialised to ~0: smallest failing b*T*D + t*D + d
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

// Window l constrains frame t of an n-frame sequence (boundary rule).
template <typename S>
__host__ __device__ inline bool mlpg_active(const MlpgArgs<S>& A, mlpg_i64 l, mlpg_i64 t,
                                            mlpg_i64 n) {
    return t >= 0 && t < n && t >= A.zero_lo[l] && t < n - A.zero_hi[l];
}

// Precision of window l, frame t of sequence b, dimension d (before the
// boundary rule).  Variances divide in the storage type, like the CPU
// backend: 1 / +inf = 0.
template <typename S>
__host__ __device__ inline double mlpg_precision(const MlpgArgs<S>& A, mlpg_i64 b, mlpg_i64 t,
                                                 mlpg_i64 l, mlpg_i64 d) {
    if (A.weight_kind == MLPG_KIND_UNIT) return 1.0;
    const mlpg_i64 LD = A.L * A.D;
    const mlpg_i64 idx = A.global_weights ? (l * A.D + d) : ((b * A.T + t) * LD + l * A.D + d);
    const S w = A.weights[idx];
    if (A.weight_kind == MLPG_KIND_VARIANCE) return (double)((S)1 / w);
    return (double)w;
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
    const int nr = (mode == MLPG_MODE_ADJOINT) ? 2 : 1;
    const mlpg_i64 SS = k + nr;       // scratch entries per frame
    const bool has_means = mode != MLPG_MODE_SOLVE;
    const bool has_g = mode != MLPG_MODE_FORWARD;

    double Lring[MAXK][MAXK + 1];     // L[j, j-a], a = 1..k, of the last k rows j
    double Dinv[MAXK];                // 1 / D[j]
    double yring[MAXK][2];            // forward substitution
    double xring[SR][2];              // solutions (c, v) of the back substitution
    double Rrow[MAXK + 1];            // R[i, i-a]
    double Et[MAXK + 1];              // L[i, i-a] D[i-a]
    double Lt[MAXK + 1];              // L[i, i-a]
    double pw[MAXK + 1];              // precisions feeding row i, one window
    double pmw[MAXK + 1];             // precision * mean, same frames
    double rv[2];

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
        const double dinv = 1.0 / piv;
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
    const mlpg_i64 iend = (mode == MLPG_MODE_ADJOINT) ? -P : 0;
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
            if (mode != MLPG_MODE_ADJOINT) A.out[(b * T + i) * D + d] = (S)xring[i & SM][0];
        }
        const mlpg_i64 t = i + P;
        if (mode == MLPG_MODE_ADJOINT && t < n) {
            for (mlpg_i64 l = 0; l < L; ++l) {
                const mlpg_i64 o = (b * T + t) * LD + l * D + d;
                const bool per_frame = A.weight_kind != MLPG_KIND_UNIT && !A.global_weights;
                if (!mlpg_active(A, l, t, n)) {
                    A.grad_means[o] = (S)0;
                    if (per_frame) A.grad_weights[o] = (S)0;
                    continue;
                }
                // W_l c and W_l v at frame t
                const mlpg_i64 left = A.win_left[l], width = A.win_width[l];
                const double* c = A.coeffs + A.win_offset[l];
                double Wc = 0.0, Wv = 0.0;
                for (mlpg_i64 u = 0; u < width; ++u) {
                    const mlpg_i64 j = t - left + u;
                    if (j < 0 || j >= n || c[u] == 0.0) continue;
                    Wc += c[u] * xring[j & SM][0];
                    Wv += c[u] * xring[j & SM][1];
                }
                const double p = mlpg_precision(A, b, t, l, d);
                // dL/dmu = p W v;  dL/dp = (W v)(mu - W c);  dL/dvar = -p^2 dL/dp
                A.grad_means[o] = (S)(p * Wv);
                if (A.weight_kind == MLPG_KIND_UNIT) continue;
                double gp = Wv * ((double)A.means[o] - Wc);
                if (A.weight_kind == MLPG_KIND_VARIANCE) gp = -p * p * gp;
                if (per_frame) A.grad_weights[o] = (S)gp;
                else A.gw_acc[b * LD + l * D + d] += gp;
            }
        }
    }

    // ---- frames beyond the sequence's length are 0
    for (mlpg_i64 t = n; t < T; ++t) {
        if (mode == MLPG_MODE_ADJOINT) {
            const bool per_frame = A.weight_kind != MLPG_KIND_UNIT && !A.global_weights;
            for (mlpg_i64 l = 0; l < L; ++l) {
                const mlpg_i64 o = (b * T + t) * LD + l * D + d;
                A.grad_means[o] = (S)0;
                if (per_frame) A.grad_weights[o] = (S)0;
            }
        } else {
            A.out[(b * T + t) * D + d] = (S)0;
        }
    }
    return 0;
}

#ifdef __CUDACC__
// One thread per (b, d), consecutive threads consecutive d (coalesced on the
// (B, T, L*D) and (T, k + nrhs, B*D) layouts).  Scalars are passed with
// explicit types (long long / int / double) by the host.
template <typename S, int MAXK>
__global__ void mlpg_kernel(const S* means, const S* weights, const S* rhs, S* out,
                            S* grad_means, S* grad_weights, double* gw_acc, S* scratch,
                            mlpg_u64* status, const mlpg_i64* lengths,
                            const mlpg_i64* win_left, const mlpg_i64* win_width,
                            const mlpg_i64* win_offset, const double* coeffs,
                            const mlpg_i64* zero_lo, const mlpg_i64* zero_hi,
                            mlpg_i64 B, mlpg_i64 T, mlpg_i64 D, mlpg_i64 L, mlpg_i64 k,
                            mlpg_i64 P, int mode, int weight_kind, int global_weights,
                            double pivot_rtol) {
    const mlpg_i64 gid = (mlpg_i64)blockIdx.x * (mlpg_i64)blockDim.x + (mlpg_i64)threadIdx.x;
    if (gid >= B * D) return;
    MlpgArgs<S> A;
    A.means = means; A.weights = weights; A.rhs = rhs; A.out = out;
    A.grad_means = grad_means; A.grad_weights = grad_weights; A.gw_acc = gw_acc;
    A.scratch = scratch; A.status = status; A.lengths = lengths;
    A.win_left = win_left; A.win_width = win_width; A.win_offset = win_offset;
    A.coeffs = coeffs; A.zero_lo = zero_lo; A.zero_hi = zero_hi;
    A.B = B; A.T = T; A.D = D; A.L = L; A.k = k; A.P = P;
    A.mode = mode; A.weight_kind = weight_kind; A.global_weights = global_weights;
    A.pivot_rtol = pivot_rtol;
    mlpg_sequence<S, MAXK>(A, gid / D, gid % D);
}

#ifdef MLPGX_EXPLICIT_INSTANTIATION
// For offline compile checks with nvcc (cupy instantiates through
// name_expressions instead).
#define MLPGX_INST(S, K) template __global__ void mlpg_kernel<S, K>( \
    const S*, const S*, const S*, S*, S*, S*, double*, S*, mlpg_u64*, const mlpg_i64*, \
    const mlpg_i64*, const mlpg_i64*, const mlpg_i64*, const double*, const mlpg_i64*, \
    const mlpg_i64*, mlpg_i64, mlpg_i64, mlpg_i64, mlpg_i64, mlpg_i64, mlpg_i64, int, int, \
    int, double);
MLPGX_INST(float, 2) MLPGX_INST(float, 4) MLPGX_INST(float, 8) MLPGX_INST(float, 16)
MLPGX_INST(float, 32)
MLPGX_INST(double, 2) MLPGX_INST(double, 4) MLPGX_INST(double, 8) MLPGX_INST(double, 16)
MLPGX_INST(double, 32)
#undef MLPGX_INST
#endif
#endif  // __CUDACC__

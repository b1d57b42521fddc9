// Host build of the CUDA kernels' per-sequence routine (mlpgx/cuda/mlpg_kernels.cu),
// so tests/test_cuda_source.py can check the GPU algorithm against the
// reference backend without a GPU.  Compiled by the test with
//     g++ -std=c++17 -O1 -shared -fPIC -I<dir of the .cu> cuda_host_harness.cpp
// The __global__ entry point is not compiled here (__CUDACC__ is undefined);
// mlpgx_host_run loops over (b, d) sequentially in place of the thread grid.
#ifndef __CUDACC__
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#endif

#include "mlpg_kernels.cu"

template <typename S>
static int run_typed(int maxk, const MlpgArgs<S>& A) {
    int failed = 0;
    for (mlpg_i64 b = 0; b < A.B; ++b) {
        for (mlpg_i64 d = 0; d < A.D; ++d) {
            int st;
            switch (maxk) {
                case 2: st = mlpg_sequence<S, 2>(A, b, d); break;
                case 4: st = mlpg_sequence<S, 4>(A, b, d); break;
                case 8: st = mlpg_sequence<S, 8>(A, b, d); break;
                case 16: st = mlpg_sequence<S, 16>(A, b, d); break;
                case 32: st = mlpg_sequence<S, 32>(A, b, d); break;
                default: return -1;
            }
            failed |= st;
        }
    }
    return failed;
}

// The split k <= 2 routines, in the order of their launches: rows for every
// (b, t, d), the solve for every (b, d), then (adjoint) the gradients, per
// frame, or per (b, d) over all frames for global weights.
template <typename S, int L>
static int run_split_l(int pf, const MlpgArgs<S>& A) {
    const bool has_means = A.mode == MLPG_MODE_FORWARD || A.mode == MLPG_MODE_ADJOINT;
    for (mlpg_i64 b = 0; b < A.B; ++b)
        for (mlpg_i64 t = 0; t < A.T; ++t)
            for (mlpg_i64 d = 0; d < A.D; ++d) {
                if (has_means) mlpg_split_rows<S, L, true>(A, b, t, d);
                else mlpg_split_rows<S, L, false>(A, b, t, d);
            }
    int failed = 0;
    for (mlpg_i64 b = 0; b < A.B; ++b)
        for (mlpg_i64 d = 0; d < A.D; ++d) {
            int st = -1;
#define MLPGX_CASE(M, PF) \
    case M * 100 + PF: st = mlpg_split_solve<S, M, PF>(A, b, d); break;
            switch (A.mode * 100 + pf) {
                MLPGX_CASE(MLPG_MODE_FORWARD, 1) MLPGX_CASE(MLPG_MODE_FORWARD, 3)
                MLPGX_CASE(MLPG_MODE_FORWARD, 8) MLPGX_CASE(MLPG_MODE_SOLVE, 1)
                MLPGX_CASE(MLPG_MODE_SOLVE, 3) MLPGX_CASE(MLPG_MODE_SOLVE, 8)
                MLPGX_CASE(MLPG_MODE_ADJOINT, 1) MLPGX_CASE(MLPG_MODE_ADJOINT, 3)
                MLPGX_CASE(MLPG_MODE_ADJOINT, 8) MLPGX_CASE(MLPG_MODE_ADJOINT_GIVEN_C, 1)
                MLPGX_CASE(MLPG_MODE_ADJOINT_GIVEN_C, 3) MLPGX_CASE(MLPG_MODE_ADJOINT_GIVEN_C, 8)
                default: return -1;
            }
#undef MLPGX_CASE
            failed |= st;
        }
    if (failed || !mlpg_is_adjoint(A.mode)) return failed;
    const bool per_frame_launch = A.weight_kind == MLPG_KIND_UNIT || !A.global_weights;
    for (mlpg_i64 b = 0; b < A.B; ++b)
        for (mlpg_i64 d = 0; d < A.D; ++d) {
            if (per_frame_launch) {
                for (mlpg_i64 t = 0; t < A.T; ++t) mlpg_split_grads<S, L>(A, b, d, t, t + 1);
            } else {
                mlpg_split_grads<S, L>(A, b, d, 0, A.T);
            }
        }
    return 0;
}

template <typename S>
static int run_split_typed(int pf, const MlpgArgs<S>& A) {
    switch (A.L) {
        case 1: return run_split_l<S, 1>(pf, A);
        case 2: return run_split_l<S, 2>(pf, A);
        case 3: return run_split_l<S, 3>(pf, A);
        case 4: return run_split_l<S, 4>(pf, A);
        default: return -1;
    }
}

template <typename S>
static int run_typed_any(int split, int size, const void* means, const void* weights,
                         const void* rhs, void* out, void* grad_means, void* grad_weights,
                         double* gw_acc, void* scratch, double* work, mlpg_u64* status,
                         const mlpg_i64* lengths, const mlpg_i64* win_left,
                         const mlpg_i64* win_width, const mlpg_i64* win_offset,
                         const double* coeffs, const mlpg_i64* zero_lo,
                         const mlpg_i64* zero_hi, mlpg_i64 B, mlpg_i64 T, mlpg_i64 D,
                         mlpg_i64 L, mlpg_i64 k, mlpg_i64 P, int mode, int weight_kind,
                         int global_weights, double pivot_rtol) {
    const MlpgArgs<S> A = mlpg_args<S>(
        (const S*)means, (const S*)weights, (const S*)rhs, (S*)out, (S*)grad_means,
        (S*)grad_weights, gw_acc, (S*)scratch, work, status, lengths, win_left, win_width,
        win_offset, coeffs, zero_lo, zero_hi, B, T, D, L, k, P, mode, weight_kind,
        global_weights, pivot_rtol);
    return split ? run_split_typed<S>(size, A) : run_typed<S>(size, A);
}

extern "C" {

// is_double: 0 float, 1 double.  split: 0 runs the general routine with ring
// size `size` (maxk), 1 the split k <= 2 routines with prefetch depth `size`
// (1, 3 or 8).  Returns -1 for an unsupported size or L, else 0 / 1 (some sequence
// failed; *status holds the smallest b*T*D + t*D + d).
int mlpgx_host_run(int is_double, int split, int size, const void* means,
                   const void* weights, const void* rhs, void* out, void* grad_means,
                   void* grad_weights, double* gw_acc, void* scratch, double* work,
                   mlpg_u64* status,
                   const mlpg_i64* lengths, const mlpg_i64* win_left,
                   const mlpg_i64* win_width, const mlpg_i64* win_offset,
                   const double* coeffs, const mlpg_i64* zero_lo, const mlpg_i64* zero_hi,
                   mlpg_i64 B, mlpg_i64 T, mlpg_i64 D, mlpg_i64 L, mlpg_i64 k, mlpg_i64 P,
                   int mode, int weight_kind, int global_weights, double pivot_rtol) {
    return (is_double ? run_typed_any<double> : run_typed_any<float>)(
        split, size, means, weights, rhs, out, grad_means, grad_weights, gw_acc, scratch, work,
        status, lengths, win_left, win_width, win_offset, coeffs, zero_lo, zero_hi, B, T, D,
        L, k, P, mode, weight_kind, global_weights, pivot_rtol);
}

int mlpgx_host_required_maxk(mlpg_i64 k, mlpg_i64 pq) { return mlpg_required_maxk(k, pq); }

}

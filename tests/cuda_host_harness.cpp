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

template <typename S>
static MlpgArgs<S> make_args(const void* means, const void* weights, const void* rhs, void* out,
                             void* grad_means, void* grad_weights, double* gw_acc,
                             void* scratch, mlpg_u64* status, const mlpg_i64* lengths,
                             const mlpg_i64* win_left, const mlpg_i64* win_width,
                             const mlpg_i64* win_offset, const double* coeffs,
                             const mlpg_i64* zero_lo, const mlpg_i64* zero_hi, mlpg_i64 B,
                             mlpg_i64 T, mlpg_i64 D, mlpg_i64 L, mlpg_i64 k, mlpg_i64 P,
                             int mode, int weight_kind, int global_weights, double pivot_rtol) {
    MlpgArgs<S> A;
    A.means = (const S*)means; A.weights = (const S*)weights; A.rhs = (const S*)rhs;
    A.out = (S*)out; A.grad_means = (S*)grad_means; A.grad_weights = (S*)grad_weights;
    A.gw_acc = gw_acc; A.scratch = (S*)scratch; A.status = status; A.lengths = lengths;
    A.win_left = win_left; A.win_width = win_width; A.win_offset = win_offset;
    A.coeffs = coeffs; A.zero_lo = zero_lo; A.zero_hi = zero_hi;
    A.B = B; A.T = T; A.D = D; A.L = L; A.k = k; A.P = P;
    A.mode = mode; A.weight_kind = weight_kind; A.global_weights = global_weights;
    A.pivot_rtol = pivot_rtol;
    return A;
}

extern "C" {

// is_double: 0 float, 1 double.  Returns -1 for an unsupported maxk, else
// 0 / 1 (some sequence failed; *status holds the smallest b*T*D + t*D + d).
int mlpgx_host_run(int is_double, int maxk, const void* means, const void* weights,
                   const void* rhs, void* out, void* grad_means, void* grad_weights,
                   double* gw_acc, void* scratch, mlpg_u64* status, const mlpg_i64* lengths,
                   const mlpg_i64* win_left, const mlpg_i64* win_width,
                   const mlpg_i64* win_offset, const double* coeffs, const mlpg_i64* zero_lo,
                   const mlpg_i64* zero_hi, mlpg_i64 B, mlpg_i64 T, mlpg_i64 D, mlpg_i64 L,
                   mlpg_i64 k, mlpg_i64 P, int mode, int weight_kind, int global_weights,
                   double pivot_rtol) {
    if (is_double)
        return run_typed<double>(maxk, make_args<double>(
            means, weights, rhs, out, grad_means, grad_weights, gw_acc, scratch, status,
            lengths, win_left, win_width, win_offset, coeffs, zero_lo, zero_hi, B, T, D, L, k,
            P, mode, weight_kind, global_weights, pivot_rtol));
    return run_typed<float>(maxk, make_args<float>(
        means, weights, rhs, out, grad_means, grad_weights, gw_acc, scratch, status, lengths,
        win_left, win_width, win_offset, coeffs, zero_lo, zero_hi, B, T, D, L, k, P, mode,
        weight_kind, global_weights, pivot_rtol));
}

int mlpgx_host_required_maxk(mlpg_i64 k, mlpg_i64 pq) { return mlpg_required_maxk(k, pq); }

}

/* Fused MLPG solver for windows that reach at most one frame to each side.
 *
 * Every window of the common sets (DELTA: static, [-0.5, 0, 0.5], [1, -2, 1];
 * any nnmnkwii/Merlin 3-tap set; 2-tap differences) has left and right
 * extents <= 1, so R = sum_l W_l^T P_l W_l has half-bandwidth k <= 2.  For
 * those, _solver_impl.pxi calls this kernel instead of its general one.  The
 * mathematics is the same (rows of R formed on the fly, banded LDL^T, both
 * substitutions, the adjoint's gradients in the backward sweep); what differs
 * is the shape of the code:
 *
 *   - the band structure is fixed (k = 2, windows padded to 3 taps), so row i
 *     of R and r are straight-line sums over windows instead of loops over
 *     term tables, and the factorisation keeps no temporaries;
 *   - the number of windows L, the number of right-hand sides and whether
 *     window 1 has a zero centre coefficient (the delta window; its zero
 *     terms are then left out) are compile-time constants in each of the
 *     clones the dispatcher picks from, so the window loop unrolls;
 *   - each row is one loop over the contiguous d axis that GCC and Clang
 *     vectorise (``#pragma GCC ivdep``: the rows written never overlap the
 *     rows read).
 *
 * A general 3-tap window is padded to coefficients (w0, w1, w2) on frames
 * (t-1, t, t+1); then, with p_l[f] = 0 outside the sequence or where the
 * boundary rule drops the window,
 *
 *     R[i, i]   = sum_l  w0^2 p_l[i+1] + w1^2 p_l[i] + w2^2 p_l[i-1]
 *     R[i, i-1] = sum_l  w1 w0 p_l[i]  + w2 w1 p_l[i-1]
 *     R[i, i-2] = sum_l  w2 w0 p_l[i-1]
 *     r[i]      = sum_l  w0 (p mu)_l[i+1] + w1 (p mu)_l[i] + w2 (p mu)_l[i-1]
 *
 * and the static window (exactly [1]) adds p_0[i] and (p mu)_0[i].  Padded
 * zero coefficients multiply finite precisions, so they add exact zeros.
 *
 * This file is included twice by mlpgx_band2.h-users through
 * mlpgx_band2_impl.h (storage type double and float); arithmetic is double.
 *
 * Tried on the 2-core AMD EPYC (Zen 5) and left out, each measured with the
 * kernel alone in a C harness (D = 60 unless given, DELTA, one sequence,
 * best of repeated calls, the old and new code alternating; 2026-11-27):
 *   - divisions do not bound the in-cache forward: with each one replaced
 *     by a multiplication, float64 at T = 1000 took the same time (0.111
 *     ms either way);
 *   - float32 arithmetic in the float32 clones: forward 1.33-1.35x and
 *     adjoints 1.2-2.0x faster (T = 1e3-1e5, AVX-512), but the forward's
 *     error against float64 grew from ~1e-7 (double arithmetic, for any
 *     spread of the variances) to 1e-6, 9e-6 and 6e-5 with variances
 *     spread over 10x, 1e3x and 1e5x;
 *   - software prefetch of the forward sweep's input rows 4-16 frames
 *     ahead: the float64 forward 1.2-1.3x faster at T = 1e4 (inputs near
 *     the L3 size) and the float32 adjoint given c 1.2-1.3x faster, but the
 *     float64 forward 1.1-1.3x slower at T = 1e3-3e3, the float32 forward
 *     and adjoint 1.15-1.45x slower, and no change at T = 1e5;
 *   - no scalar remainder loops (the forward row loop padded to a multiple
 *     of 8 columns, other loops re-running their last 8 columns): bitwise
 *     the same results, but 1.02-3.0x slower in 76 of 80 cases (D = 7, 30,
 *     59, 60, 64; both dtypes, every mode, AVX-512 and AVX2 clones), the
 *     padded row loop alone 1.2-1.5x slower;
 *   - the float32 row loop through rows of doubles (g copied in, the
 *     scratch row copied out; only where nd is not a multiple of 8), so that
 *     GCC runs it in vectors of 8 with no scalar remainder: bitwise the same
 *     results, the forward at D = 60 1.08x slower (three rounds, quiet
 *     machine), the solve and the adjoint given c 1.05-1.08x faster;
 *   - the factor scratch stored in reverse frame order, so that the back
 *     substitution reads ascending addresses and the sweep writes
 *     descending ones: bitwise the same, the float64 forward 0.97-1.07x the
 *     time (T = 1e3-1e5, both layouts in one binary).  Neither direction
 *     bounds it: in the same harness the forward takes 76-99 ns per frame
 *     (D = 60) from T = 100, where everything sits in L2, to T = 3000,
 *     130 ns at T = 5000, and about 300 ns from T = 1e4 on (inputs and
 *     scratch past the 32 MiB L3).
 * And on a 2-core AMD EPYC Zen 3 VM (AVX2, no AVX-512; D = 64, float64,
 * the same kind of harness, 2026-11-27, a noisy machine: +-10% between
 * repeats):
 *   - a register-resident forward: frames inner, a tile of 4, 8 or 16
 *     columns carried through the frames with the sweep's state (the rows
 *     of R as window-summed partial sums, 1/D, L[i-1, i-2] and y of the
 *     last two rows) in registers instead of rings, frames blocked by 32 so
 *     that the tiles of a block share its input lines: 0.91-1.12x as fast
 *     as this kernel at T = 300-1e5 with tiles of 4 or 8 columns, 0.63-0.88x
 *     with 16 (likely spills: AVX2 has 16 vector registers); results
 *     within 2e-15 of it.  So the rings' loads and stores do not bound it
 *     there either;
 *   - every division replaced by a multiplication (as above): 1-15%
 *     faster at T = 300-1000, within the noise.
 * Kept, on the same Zen 3 VM (2026-11-28; kernel alone, D = 60, T = 1000,
 * DELTA with per-frame variances, best of 300 calls, both orders of the two
 * clones in one binary; a noisy machine): the exactly-DELTA clones (CZ1 = 2
 * in mlpgx_band2_impl.h), whose forward sweep takes the coefficients as
 * literals.  The row loop's multiply-class operations (multiplications and
 * FMAs, which share two pipes on Zen; additions have their own) go from 23
 * to 15 per vector of the forward (GCC 12, AVX2, in the object code: 49
 * instructions with 14 FMAs and 9 multiplications before, 42 with 10 and
 * 5 after; llvm-mca's Zen 3 model has the two multiply pipes as the
 * bottleneck of that loop).  Against the
 * clones that read the coefficients from the plan: float64 forward
 * 1.14-1.18x faster, the adjoint 1.04-1.08x, the adjoint given c
 * 1.03-1.07x, the means-only adjoint 1.05-1.07x; float32 forward
 * 1.14-1.22x, adjoint 1.11-1.14x, adjoint given c 1.08-1.12x.  The results
 * differ from those clones' by rounding (at most 3.6e-13 relative per
 * element of the float64 forward there).
 * Per column, the float32 forward at D = 60 took 1.3x the time it takes at
 * D = 64 on the Zen 5 (0.137-0.144 vs 0.109-0.110 ms at T = 1000), where
 * float64 does not; and in one process, through _solver.run, the float32
 * forward took 129-131 us against 103-106 us for float64.  The reason, on
 * the 2-core Intel Xeon (AVX-512, 2026-11-29; the kernel alone in a C
 * harness, one binary, best of 300-400 calls): GCC 12 vectorises the
 * mixed float/double column loops of the float32 AVX-512 clones 16
 * columns at a time with one vector epilogue of 8, leaving 60 = 3 x 16 +
 * 8 + 4 columns to scalar code (the float64 loops, 8 columns with a
 * 4-column epilogue, leave none).  There the float32 forward took 2.50-2.70
 * ns per frame and column at D = 60 against 1.95-2.17 at D = 56 and 64.
 * Those clones now split the tail off (B2_FOR_COLS in mlpgx_band2_impl.h,
 * for the forward sweep's row and load loops and the back substitution):
 * 2.21-2.48 ns at D = 60; against the plain loops (three alternating
 * rounds, T = 1000 and 1e4) the forward took 0.88-0.97x the time (the same
 * at 1e5), the means-only adjoint 0.92-0.98x, the adjoint given c
 * 0.97-1.03x; bitwise the same outputs (T = 37, D = 1-64, every mode).
 * The same split of the adjoint's gradient loop gained nothing there.
 * (The float32 AVX2 clones vectorise 8 columns with an epilogue of 4: no
 * scalar code at D = 60; there D = 60 costs what D = 56 and 64 do.)
 * Also tried there and left out (2026-11-29, same harness, T = 1000 unless
 * given, best of 8 alternating runs of two binaries):
 *   - a finite test of the float32 values the forward's back substitution
 *     stores (b2_nonfinite_bits, as the float64 clones test their row 0),
 *     so that the validation layer's scan of the output could go: the
 *     kernel 1.03x slower on the AVX-512 clones (0.152 against 0.147 ms),
 *     1.02x on AVX2, 1.01x at T = 1e4, while that scan is 3-4% of the
 *     float32 forward through the API (the README's fwd/floor with and
 *     without it): no gain beyond the noise;
 *   - every division of the float32 forward replaced by a multiplication:
 *     0.93x the time (0.124 against 0.133 ms; float64 1.01x), almost all
 *     of it the pivots' 1 / D[i] (the variances' reciprocals alone: within
 *     the noise).  So an approximate reciprocal with a Newton step
 *     (vrcp14ps, which needs its own handling of infinite variances) can
 *     win at most that, and was not tried.
 * Caution for
 * such A/B runs: the same code built into two binaries differed by up to
 * 1.2x here (code layout), so differences below that need repeated builds.
 */
#ifndef MLPGX_BAND2_H
#define MLPGX_BAND2_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mlpgx_variance_bits.h"

#define MLPGX_B2_MAX_WINDOWS 4

/* Whether the clones included next split their column loops' tails
 * (B2_FOR_COLS in mlpgx_band2_impl.h): the float32 AVX-512 ones only. */
#define MLPGX_B2_SPLIT_TAIL 0

typedef struct {
    int L;                  /* windows, 1 .. MLPGX_B2_MAX_WINDOWS; window 0 is [1] */
    int mode;               /* 0 forward (rhs r), 1 solve (rhs g), 2 adjoint (r and g),
                             * 3 adjoint with c given in ``out`` (rhs g),
                             * 4 means-only adjoint (rhs g; gmeans alone) */
    int weight_kind;        /* 0 variances, 1 precisions, 2 none (unit) */
    ptrdiff_t D, LD;
    ptrdiff_t w_row_stride; /* 0 for global (per-column) weights */
    ptrdiff_t CH;           /* column stride of the workspace and scratch rows, >= nd */
    double pivot_rtol;      /* a pivot must exceed pivot_rtol * R[i, i] */
    int check_weights;      /* 1: the forward sweep checks every weight it reads to
                             * lie in [weight_lo, weight_hi] (NaN fails); a weight
                             * outside makes the kernel return with bit 2 set */
    double weight_lo, weight_hi;
    int check_by_reciprocal;   /* 1: float32 variances in the validation layer's
                                * range, checked by their reciprocals' bits
                                * (mlpgx_b2_checks_by_reciprocal) */
    double w[MLPGX_B2_MAX_WINDOWS][3];   /* coefficients on frames t-1, t, t+1 */
    ptrdiff_t zero_lo[MLPGX_B2_MAX_WINDOWS], zero_hi[MLPGX_B2_MAX_WINDOWS];
} mlpgx_b2plan;

/* Whether the kernel can check the weights the plan has it check by their
 * reciprocals' bits (B2_RECIP_CHECKED in mlpgx_band2_impl.h, where the rule
 * is explained): float32 variances (``float32`` nonzero), checked against
 * exactly the validation layer's range [SMALLEST_VARIANCE, +inf].  Any other
 * range or kind keeps the comparisons.  The plan builder (_solver_impl.pxi)
 * stores the answer in pl->check_by_reciprocal once per call. */
static inline int mlpgx_b2_checks_by_reciprocal(const mlpgx_b2plan *pl, int float32) {
    const float lo = (float)pl->weight_lo;
    uint32_t lo_bits;
    if (!float32 || !pl->check_weights || pl->weight_kind != 0)
        return 0;
    memcpy(&lo_bits, &lo, sizeof lo_bits);
    return lo_bits == MLPGX_SMALLEST_VARIANCE_BITS_F32 && (double)lo == pl->weight_lo &&
           isinf(pl->weight_hi) && pl->weight_hi > 0;
}

/* The adjoint's gradient pass (of this kernel and of the general one in
 * _solver_impl.pxi) runs backwards in time and re-reads the means and
 * weights of frame t as it goes: a descending stream that the hardware
 * prefetchers of the x86-64 machine we measured on follow poorly.  The pass
 * prefetches frame t - MLPGX_GRAD_PREFETCH.  Measured on a 2-core AMD EPYC
 * (T = 1e4 and 1e5, D = 60, two runs each):
 *   - this kernel: the adjoint 1.1-1.2x faster for float32 on 1 thread and
 *     1.1-1.5x on 2 threads; float64 1.1x faster on 2 threads and within 5%
 *     (slower) on 1;
 *   - the general kernel (on the same DELTA inputs): float32 1.2-1.4x,
 *     float64 1.0-1.2x.
 * 8 frames ahead was worse for float64; prefetching the scratch rows that
 * the back substitution reads gained nothing, and the forward sweep's rows
 * a net loss (measured at the top of this file). */
#define MLPGX_GRAD_PREFETCH 4
#if defined(__GNUC__) || defined(__clang__)
#define MLPGX_PREFETCH(p) __builtin_prefetch(p)
#else
#define MLPGX_PREFETCH(p) ((void)(p))
#endif

/* Bring the ``bytes`` bytes from ``p`` on towards the caches, a line at a
 * time.  A last partial line is left out: the rows of a frame's windows are
 * adjacent, so it is mostly the next window's first line (prefetching it
 * too measured slower). */
static inline void mlpgx_prefetch_span(const void *p, ptrdiff_t bytes) {
    const char *c = (const char *)p;
    ptrdiff_t o;
    for (o = 0; o < bytes; o += 64) MLPGX_PREFETCH(c + o);
}

/* The gradient pass at frame t: prefetch the means and (per-frame) weights
 * of frame t - MLPGX_GRAD_PREFETCH, columns d0 .. d0+nd-1 of each of the L
 * windows (rows of LD elements of ``itemsize`` bytes; w_row_stride 0 for
 * global weights, which are not prefetched; means NULL in the means-only
 * adjoint, which reads none). */
static inline void mlpgx_prefetch_grad_rows(const void *means, const void *weights,
                                            ptrdiff_t t, int L, ptrdiff_t D, ptrdiff_t LD,
                                            ptrdiff_t w_row_stride, ptrdiff_t d0,
                                            ptrdiff_t nd, ptrdiff_t itemsize) {
    const ptrdiff_t ahead = t - MLPGX_GRAD_PREFETCH;
    int l;
    if (ahead < 0)
        return;
    for (l = 0; l < L; l++) {
        const ptrdiff_t col = (l * D + d0) * itemsize;
        if (means != NULL)
            mlpgx_prefetch_span((const char *)means + ahead * LD * itemsize + col,
                                nd * itemsize);
        if (weights != NULL && w_row_stride != 0)
            mlpgx_prefetch_span((const char *)weights + ahead * w_row_stride * itemsize + col,
                                nd * itemsize);
    }
}

/* Row stride (doubles) of the forward sweep's rings: the widest chunk of
 * columns (CH <= MLPGX_B2_RS; _solver_impl.pxi's DEF_CHUNK).  A compile-time
 * stride, with the sweep's rows unrolled by the rings' period of 4, puts
 * every ring row at a constant offset from one base register; with CH as
 * the stride the row loop kept some 20 ring pointers and spilled them
 * (T = 1000, D = 60: 8-10% of the forward, 6% of the adjoint). */
#define MLPGX_B2_RS 64

/* Products of the padded coefficients of each window (index l; window 0 is
 * the static one), as the forward sweep uses them. */
typedef struct {
    double w0[MLPGX_B2_MAX_WINDOWS], w1[MLPGX_B2_MAX_WINDOWS], w2[MLPGX_B2_MAX_WINDOWS];
    double a0[MLPGX_B2_MAX_WINDOWS], a1[MLPGX_B2_MAX_WINDOWS], a2[MLPGX_B2_MAX_WINDOWS];
    double b1[MLPGX_B2_MAX_WINDOWS], b2[MLPGX_B2_MAX_WINDOWS], e2[MLPGX_B2_MAX_WINDOWS];
} mlpgx_b2coef;

/* The workspace of one call, offsets in doubles: the forward sweep's rings
 * in rows of MLPGX_B2_RS, then the back substitution's in rows of CH:
 *   p ring (4 slots x L) | p*mu ring (4 x L) | 1/D ring (2: rows i-1, i-2)
 *   | y ring (2 x nrhs) | L[i-1, i-2] | solution ring (4 x nrhs, rows of CH)
 *   | a zero row (CH).
 * (Constants once L and nrhs are, as in the kernel's clones.) */
static inline ptrdiff_t mlpgx_b2_pm_ring(int L) { return 4 * (ptrdiff_t)L * MLPGX_B2_RS; }
static inline ptrdiff_t mlpgx_b2_d_ring(int L) { return 8 * (ptrdiff_t)L * MLPGX_B2_RS; }
static inline ptrdiff_t mlpgx_b2_y_ring(int L) { return mlpgx_b2_d_ring(L) + 2 * MLPGX_B2_RS; }
static inline ptrdiff_t mlpgx_b2_lprev(int L, int nrhs) {
    return mlpgx_b2_y_ring(L) + 2 * (ptrdiff_t)nrhs * MLPGX_B2_RS;
}
static inline ptrdiff_t mlpgx_b2_c_ring(int L, int nrhs) {
    return mlpgx_b2_lprev(L, nrhs) + MLPGX_B2_RS;
}

/* Doubles of workspace one call needs (CH <= MLPGX_B2_RS columns). */
static inline ptrdiff_t mlpgx_b2_workspace_doubles(ptrdiff_t CH, int L, int nrhs) {
    return mlpgx_b2_c_ring(L, nrhs) + CH * (4 * (ptrdiff_t)nrhs + 1);
}

/* Storage elements of scratch per frame (CH columns each). */
static inline ptrdiff_t mlpgx_b2_scratch_row(ptrdiff_t CH, int nrhs) {
    return CH * (2 + nrhs);   /* L[i, i-1], L[i, i-2], y[i] / D[i] per rhs */
}

/* Whether the plan's windows are exactly DELTA (static, [-0.5, 0, 0.5],
 * [1, -2, 1]; coefficients on frames t-1, t, t+1): the clones whose forward
 * sweep takes the coefficients as literals (CZ1 = 2 in mlpgx_band2_impl.h).
 * Exact comparisons: any other set, a scaled delta window included, runs the
 * clones that read the coefficients from the plan. */
static inline int mlpgx_b2_is_delta(const mlpgx_b2plan *pl) {
    return pl->L == 3 && pl->w[0][0] == 0.0 && pl->w[0][1] == 1.0 && pl->w[0][2] == 0.0 &&
           pl->w[1][0] == -0.5 && pl->w[1][1] == 0.0 && pl->w[1][2] == 0.5 &&
           pl->w[2][0] == 1.0 && pl->w[2][1] == -2.0 && pl->w[2][2] == 1.0;
}

/* Integer lanes as wide as each clone's storage type (mlpgx_b2_mask_<suffix>):
 * an OR-reduced comparison mask of another width costs a widening per vector. */
typedef long long mlpgx_b2_mask_d;
typedef int mlpgx_b2_mask_f;
typedef long long mlpgx_b2_mask_d512;
typedef int mlpgx_b2_mask_f512;

/* Unsigned integers of each clone's storage width, for the bit tests of
 * the results stored (b2_nonfinite_bits). */
typedef unsigned long long mlpgx_b2_bits_d;
typedef unsigned int mlpgx_b2_bits_f;
typedef unsigned long long mlpgx_b2_bits_d512;
typedef unsigned int mlpgx_b2_bits_f512;

#define MLPGX_B2_T double
#define MLPGX_B2_SUF d
#include "mlpgx_band2_impl.h"
#undef MLPGX_B2_T
#undef MLPGX_B2_SUF

#define MLPGX_B2_T float
#define MLPGX_B2_SUF f
#include "mlpgx_band2_impl.h"
#undef MLPGX_B2_T
#undef MLPGX_B2_SUF

/* AVX-512 clones of the kernel (mlpgx_b2_run_d512 / _f512), compiled into
 * the AVX2 build (setup.py defines MLPGX_B2_AVX512 there; GCC only, through
 * a target pragma, so that no third build of the whole solver is needed) and
 * called when the CPU has AVX-512F/VL/DQ (mlpgx_b2_cpu_avx512; the
 * solver's USE_AVX512 switch).  512-bit vectors halve the instructions of
 * the column loops and the divisions' issue slots.  Measured on the 2-core
 * AMD EPYC (Zen 5), D = 60, float64, kernel alone in one binary: the
 * forward 25% faster at T = 1000-3000 (neutral beyond, where memory
 * bounds it), the solve 22%, the adjoint given c 7-17%; the standalone
 * adjoint 15% faster at T = 1000 but 5-15% slower at T >= 3000, so that
 * mode stays on the AVX2 code (_solver_impl.pxi) except on Intel CPUs
 * (mlpgx_b2_cpu_intel). */
#if defined(MLPGX_B2_AVX512) && defined(__GNUC__) && !defined(__clang__) && \
    (defined(__x86_64__) || defined(_M_X64))
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,prefer-vector-width=512")
#define MLPGX_B2_T double
#define MLPGX_B2_SUF d512
#include "mlpgx_band2_impl.h"
#undef MLPGX_B2_T
#undef MLPGX_B2_SUF
#define MLPGX_B2_T float
#define MLPGX_B2_SUF f512
#undef MLPGX_B2_SPLIT_TAIL
#define MLPGX_B2_SPLIT_TAIL 1   /* (see B2_FOR_COLS) */
#include "mlpgx_band2_impl.h"
#undef MLPGX_B2_SPLIT_TAIL
#define MLPGX_B2_SPLIT_TAIL 0
#undef MLPGX_B2_T
#undef MLPGX_B2_SUF
#pragma GCC pop_options
/* whether this CPU (and its OS: libgcc checks the saved register state)
 * runs the clones */
static int mlpgx_b2_cpu_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
}
/* whether this CPU is Intel's: there the standalone adjoint runs the
 * AVX-512 clones too (the solver's _avx512_adjoint).  On the 2-core Intel
 * Xeon (AVX-512, 2026-11-29; D = 60, kernel alone in a C harness, both
 * clones in one binary, three rounds) they took 0.80-0.99x the time of the
 * AVX2 clone for float64 at T = 1000, 0.84-0.94x at 1e4, 0.86-0.88x at
 * 1e5; float32 1.01-1.09x at 1000, 0.98-1.04x at 1e4, 0.94-0.97x at 1e5.
 * On the AMD EPYC (Zen 5) they were 5-15% slower from T = 3000 on. */
static int mlpgx_b2_cpu_intel(void) {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel");
}
#else
#define mlpgx_b2_run_d512 mlpgx_b2_run_d
#define mlpgx_b2_run_f512 mlpgx_b2_run_f
static int mlpgx_b2_cpu_avx512(void) { return 0; }
static int mlpgx_b2_cpu_intel(void) { return 0; }
#endif

#endif /* MLPGX_BAND2_H */

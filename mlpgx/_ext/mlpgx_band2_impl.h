/* The k <= 2 MLPG kernel for one storage type; see mlpgx_band2.h.
 *
 * Included with MLPGX_B2_T (double or float: the storage type of inputs,
 * outputs and scratch) and MLPGX_B2_SUF (name suffix) defined.  Arithmetic
 * is double throughout; a float32 variance is inverted in float32, as in the
 * general kernel.
 */
#ifndef MLPGX_B2_HELPERS
#define MLPGX_B2_HELPERS
#define MLPGX_B2_CAT_(a, b) a##_##b
#define MLPGX_B2_CAT(a, b) MLPGX_B2_CAT_(a, b)
#if defined(__GNUC__) || defined(__clang__)
#define MLPGX_B2_INLINE static inline __attribute__((always_inline))
#define MLPGX_B2_IVDEP _Pragma("GCC ivdep")
#else
#define MLPGX_B2_INLINE static inline
#define MLPGX_B2_IVDEP
#endif
/* mlpgx_b2_run is declared hot, so that GCC optimises every block of it
 * for speed.  Without profile feedback GCC vectorises only the loops whose
 * guessed frequency makes them hot, and with some twenty inlined copies of
 * a loop in a clone (weight kinds, gradient forms, windows) that guess
 * called the copies of the adjoint's gradient loop (b2_grad_window) in the
 * clones of the adjoint given c (mode 3) cold: they ran scalar, 35.8M
 * instructions against 19.1M for the standalone adjoint, which solves two
 * right-hand sides (callgrind, float64, T = 1000, D = 60, AVX2).  A hot
 * function's blocks are all hot (GCC's maybe_hot_count_p).  Forcing the
 * loop alone with "omp simd reduction(|:bad)" (faddd76) vectorised those
 * copies too, but left every copy without the 16-byte vector epilogue GCC
 * adds on its own (the scalar remainder of D = 60 in float32): against it,
 * through the API on an Intel Xeon (one thread, D = 60, T = 1e3 and 1e4,
 * best of three alternating runs of both builds), the hot function made
 * the float32 adjoints 1.10-1.25x faster, the float64 adjoint given c and
 * the means-only adjoint 1.06-1.11x, the forward 0.99-1.02x; the
 * standalone float64 adjoint 0.96x and 0.84x, then 1.00x and 0.96x in a
 * rerun of that mode alone (six alternations; that size varied by 1.2x
 * between runs of one build).  Callgrind (T = 1000, AVX2): the forward's
 * instructions unchanged, the adjoints' 2% fewer (means-only) to 11% more
 * (float64 given c: the epilogues). */
#if defined(__GNUC__) || defined(__clang__)
#define MLPGX_B2_HOT __attribute__((hot))
#else
#define MLPGX_B2_HOT
#endif
#endif

#define B2_FN(name) MLPGX_B2_CAT(name, MLPGX_B2_SUF)
#define B2_T MLPGX_B2_T

/* A loop over the columns d = 0 .. nd-1 of a row (the body as the macro's
 * last arguments), vectorised along d (MLPGX_B2_IVDEP: the rows written
 * never overlap the rows read).  In the clones built with
 * MLPGX_B2_SPLIT_TAIL (float32 storage with 512-bit vectors, mlpgx_band2.h)
 * it runs as three loops when nd % 8 >= 4: the first nd - nd % 8 columns,
 * then four columns in a loop of constant trip count, which GCC runs as
 * one vector of four, then the last nd % 4.  GCC vectorises a mixed
 * float/double loop there 16 columns at a time with one vector epilogue of
 * 8, so a plain loop leaves nd % 8 columns (4 of D = 60) to scalar code. */
#if MLPGX_B2_SPLIT_TAIL
#define B2_FOR_COLS(d, nd, ...) \
    if (((nd) & 7) >= 4) { \
        const ptrdiff_t b2_n8 = (nd) & ~(ptrdiff_t)7; \
        MLPGX_B2_IVDEP \
        for (d = 0; d < b2_n8; d++) { __VA_ARGS__ } \
        MLPGX_B2_IVDEP \
        for (ptrdiff_t b2_j = 0; b2_j < 4; b2_j++) { d = b2_n8 + b2_j; __VA_ARGS__ } \
        for (d = b2_n8 + 4; d < (nd); d++) { __VA_ARGS__ } \
    } else { \
        MLPGX_B2_IVDEP \
        for (d = 0; d < (nd); d++) { __VA_ARGS__ } \
    }
#else
#define B2_FOR_COLS(d, nd, ...) \
    MLPGX_B2_IVDEP \
    for (d = 0; d < (nd); d++) { __VA_ARGS__ }
#endif

/* Whether this clone tests its results finite: float64 only.  The float32
 * clones would test the values rounded to float32 (a double result may
 * overflow there): on AVX-512 that narrowing made the adjoint given c
 * 1.7-1.9x slower, so float32 results are left to the validation layer's
 * scan. */
#define B2_TESTS_RESULTS (sizeof(B2_T) == sizeof(double))

/* Results stored are tested finite with integer operations on their bits
 * (as mlpgx_scan.h does), which vectorise at the storage width on AVX2 and
 * AVX-512 alike: a floating-point compare turned into an integer mask cost
 * the AVX-512 clones 20-35% of the adjoint given c, while these bit tests
 * cost 0-2% of the forward, 1-2% of the adjoint (AVX2) and 0-7% of the
 * adjoint given c (AVX-512), measured against the kernel without tests
 * (bit tests of both gradients, instead of dL/dvar alone: +15%).  The
 * exponent field plus its lowest bit carries into the sign bit exactly when
 * the field is all ones (inf or NaN): OR these over the values stored, and
 * the sign bit of the OR says whether any was not finite (B2_NONFINITE). */
#define B2_BITS B2_FN(mlpgx_b2_bits)
MLPGX_B2_INLINE B2_BITS B2_FN(b2_nonfinite_bits)(B2_T stored) {
    const B2_BITS exp_field = sizeof(B2_T) == 8 ? (B2_BITS)MLPGX_INF_BITS_F64 : (B2_BITS)MLPGX_INF_BITS_F32;
    const B2_BITS exp_lsb = sizeof(B2_T) == 8 ? (B2_BITS)0x0010000000000000ULL : (B2_BITS)0x00800000U;
    B2_BITS bits;
    memcpy(&bits, &stored, sizeof bits);
    return (bits & exp_field) + exp_lsb;
}
#define B2_NONFINITE(acc) \
    (((acc) >> (8 * sizeof(B2_BITS) - 1)) != 0)

/* The precision of a variance: 1 / inf = 0 ("no constraint"); a float32
 * variance is inverted in float32, as in the general kernel. */
MLPGX_B2_INLINE double B2_FN(b2_recip)(B2_T v) {
    return (double)((B2_T)1 / v);
}

/* Float32 variances checked as they are inverted (pl->check_weights).  The
 * validation layer's rule, v in [SMALLEST_VARIANCE, +inf] with NaN outside
 * (weights_range), holds exactly when the float32 reciprocal 1 / v is +0 or
 * positive and finite: SMALLEST_VARIANCE is the smallest variance whose
 * reciprocal is finite, so 0 and the subnormals below it give +inf, a
 * negative variance (-0 and -inf among them) a negative reciprocal or -0,
 * and NaN a NaN.  Read as unsigned integers, exactly those reciprocals have
 * bits below those of +inf: the sign bit is the top bit, and inf and NaN
 * have an exponent of all ones.  So the check is an unsigned maximum of the
 * bits, one instruction per vector in the loop that inverts the variances
 * (B2_RECIP_CHECKED), instead of a second pass of two comparisons per
 * value over the row (b2_weights_bad), which converting to double lanes
 * makes costly in the loop itself.  Measured on the 2-core Intel Xeon
 * (AVX-512; kernel alone in a C harness, D = 60, DELTA, best of 8
 * alternating runs of two binaries, 2026-11-29): the float32 forward with
 * the check took 0.91-0.94x the time of the second pass (T = 1000 and
 * 1e4, AVX-512 and AVX2 clones), the adjoints 0.96-0.97x; the check
 * itself went from 12-15% of the forward's time to 1-7%; float64 as it
 * was, the outputs bitwise the same (T = 500, every mode).  Float64 keeps
 * its comparisons in the loop: the unsigned 64-bit maximum is one AVX-512
 * instruction but not an AVX2 one.  Taken only when the plan's range is
 * that rule's (pl->check_by_reciprocal, which the plan builder sets from
 * mlpgx_b2_checks_by_reciprocal); the float64 clones compile the branch
 * out (B2_RECIP_RULE). */
#define B2_RECIP_RULE(pl) (sizeof(B2_T) == sizeof(float) && (pl)->check_by_reciprocal)
/* const B2_T pf = 1 / v, with top the largest bits so far (B2_RECIP_RULE) */
#define B2_RECIP_CHECKED(pf, v, top) \
    const B2_T pf = (B2_T)1 / (v); \
    { \
        B2_BITS b2_bits_; \
        memcpy(&b2_bits_, &pf, sizeof b2_bits_); \
        top = b2_bits_ > top ? b2_bits_ : top; \
    }
/* whether the largest bits of reciprocals were those of an invalid variance */
#define B2_RECIP_BAD(top) ((top) >= (B2_BITS)MLPGX_INF_BITS_F32)

/* Whether window l constrains frame f of an n-frame sequence. */
MLPGX_B2_INLINE int B2_FN(b2_active)(const mlpgx_b2plan *pl, int l, ptrdiff_t f, ptrdiff_t n) {
    return f >= 0 && f < n && f >= pl->zero_lo[l] && f < n - pl->zero_hi[l];
}

/* Whether any of w[0:nd] lies outside [lo, hi] or is NaN (the validation
 * layer's rule for the weights, which it leaves to the forward sweep: see
 * mlpgx._validate.finish_weights_scan).  A separate pass over the row that
 * the sweep has just brought into L1: the load loops stay as they were. */
MLPGX_B2_INLINE int B2_FN(b2_weights_bad)(const mlpgx_b2plan *pl, const B2_T *w, ptrdiff_t nd) {
    /* compared in the storage type (the bounds are numbers of it: the
     * validation layer's weights_range), which for float32 keeps the loop
     * at float32 vector width */
    const B2_T lo = (B2_T)pl->weight_lo, hi = (B2_T)pl->weight_hi;
    B2_FN(mlpgx_b2_mask) bad = 0;   /* integers as wide as the lanes compared */
    ptrdiff_t d;
    MLPGX_B2_IVDEP
    for (d = 0; d < nd; d++) {
        /* bitwise, not &&: a branch-free loop that vectorises */
        const B2_T x = w[d];
        bad |= (B2_FN(mlpgx_b2_mask))!(x >= lo) | (B2_FN(mlpgx_b2_mask))(x > hi);   /* NaN: !(x >= lo) */
    }
    return (int)(bad != 0);
}

/* Whether every weight the boundary rule keeps at frames 0 .. n-1, columns
 * d0 .. d0+nd-1, lies in [weight_lo, weight_hi] (b2_weights_bad: NaN fails):
 * the kernel's weight check on its own, for the rows the kernel did not
 * reach when the general kernel took a system over (_solve_chunk).  A rare
 * path: not forced inline. */
static inline int B2_FN(mlpgx_b2_weights_in_range)(const mlpgx_b2plan *pl, const B2_T *weights,
                                                   ptrdiff_t n, ptrdiff_t d0, ptrdiff_t nd) {
    ptrdiff_t f;
    int l;
    for (f = 0; f < n; f++)
        for (l = 0; l < pl->L; l++)
            if (B2_FN(b2_active)(pl, l, f, n) &&
                B2_FN(b2_weights_bad)(pl, weights + f * pl->w_row_stride + l * pl->D + d0, nd))
                return 0;
    return 1;
}

/* p[0:nd] = precisions of window l at frame f (the caller checked b2_active).
 * CHECK: return whether a weight read is invalid (with pl->check_weights). */
MLPGX_B2_INLINE int B2_FN(b2_precisions)(const mlpgx_b2plan *pl, const B2_T *weights,
                                         int l, ptrdiff_t f, ptrdiff_t d0, ptrdiff_t nd,
                                         double *p, const int CHECK) {
    ptrdiff_t d;
    const B2_T *w;
    if (pl->weight_kind == 2) {
        for (d = 0; d < nd; d++) p[d] = 1.0;
        return 0;
    }
    w = weights + f * pl->w_row_stride + l * pl->D + d0;
    if (pl->weight_kind == 0) {
        if (CHECK && B2_RECIP_RULE(pl)) {
            B2_BITS top = 0;
            B2_FOR_COLS(d, nd,
                B2_RECIP_CHECKED(pf, w[d], top)
                p[d] = (double)pf;
            )
            return B2_RECIP_BAD(top);
        }
        for (d = 0; d < nd; d++) p[d] = B2_FN(b2_recip)(w[d]);
    } else {
        for (d = 0; d < nd; d++) p[d] = (double)w[d];
    }
    return (CHECK && pl->check_weights) ? B2_FN(b2_weights_bad)(pl, w, nd) : 0;
}

/* Ring slot SLOT = f & 3 (a compile-time constant) of the precision and
 * precision * mean rings: frame f.  Returns whether a weight read is
 * invalid (with pl->check_weights). */
MLPGX_B2_INLINE int B2_FN(b2_load_frame)(const mlpgx_b2plan *pl, const int L, const int SLOT,
                                          const B2_T *means, const B2_T *weights,
                                          ptrdiff_t n, ptrdiff_t f, ptrdiff_t d0, ptrdiff_t nd,
                                          double *pring, double *pmring) {
    ptrdiff_t d;
    int wbad = 0;
    for (int l = 0; l < L; l++) {
        double *p = pring + (SLOT * L + l) * MLPGX_B2_RS;
        double *pm = pmring + (SLOT * L + l) * MLPGX_B2_RS;
        if (!B2_FN(b2_active)(pl, l, f, n)) {
            memset(p, 0, nd * sizeof(double));
            memset(pm, 0, nd * sizeof(double));
            continue;
        }
        if (means != NULL && pl->weight_kind == 0) {
            /* the common case in one pass (one loop less per window and
             * frame: about 20% of the time at T = 1000, D = 60) */
            const B2_T *mu = means + f * pl->LD + l * pl->D + d0;
            const B2_T *w = weights + f * pl->w_row_stride + l * pl->D + d0;
            if (pl->check_weights && sizeof(B2_T) == sizeof(double)) {
                /* float64: the same loop, checking each variance too (a
                 * second pass over the row measured 2-5% slower) */
                const B2_T lo = (B2_T)pl->weight_lo, hi = (B2_T)pl->weight_hi;
                long long bad = 0;
                MLPGX_B2_IVDEP
                for (d = 0; d < nd; d++) {
                    const B2_T x = w[d];
                    const double pv = B2_FN(b2_recip)(w[d]);
                    p[d] = pv;
                    pm[d] = pv * (double)mu[d];
                    bad |= (long long)!(x >= lo) | (long long)(x > hi);   /* NaN: !(x >= lo) */
                }
                wbad |= bad != 0;
                continue;
            }
            if (B2_RECIP_RULE(pl)) {
                /* float32: the check in the same loop, on the reciprocals */
                B2_BITS top = 0;
                B2_FOR_COLS(d, nd,
                    B2_RECIP_CHECKED(pf, w[d], top)
                    p[d] = (double)pf;
                    pm[d] = (double)pf * (double)mu[d];
                )
                wbad |= B2_RECIP_BAD(top);
                continue;
            }
            B2_FOR_COLS(d, nd,
                const double pv = B2_FN(b2_recip)(w[d]);
                p[d] = pv;
                pm[d] = pv * (double)mu[d];
            )
            /* (another range: a second pass at float32 vector width) */
            if (pl->check_weights) wbad |= B2_FN(b2_weights_bad)(pl, w, nd);
            continue;
        }
        wbad |= B2_FN(b2_precisions)(pl, weights, l, f, d0, nd, p, 1);
        if (means != NULL) {
            const B2_T *mu = means + f * pl->LD + l * pl->D + d0;
            for (d = 0; d < nd; d++) pm[d] = p[d] * (double)mu[d];
        }
    }
    return wbad;
}

/* The adjoint's gradients of one window at one frame, in one pass:
 * W v and W c at frame t from the solutions at frames t-1, t, t+1, then
 * gm = p W v and the weight gradient.  v is read from vm, v0, vp (ring rows);
 * c from the ring rows cm, c0, cp, or with GIVEN from the rows xm, x0, xp of
 * the forward's output (storage type).  KIND: 0 variances, 1 precisions
 * (read from w), 2 unit precisions and no weight gradient; ACC: 0 store the
 * weight gradient to gw, 1 add it to acc (global weights), 2 no weight
 * gradient (the means-only adjoint: c, mu, gw and acc are not read).
 * Returns whether a value stored to gm or gw is not finite (b2_nonfinite_bits;
 * the sums in acc are the caller's to check). */
MLPGX_B2_INLINE int B2_FN(b2_grad_window)(const int KIND, const int ACC, const int GIVEN,
                                           ptrdiff_t nd, double u0, double u1, double u2,
                                           const double *vm, const double *v0, const double *vp,
                                           const double *cm, const double *c0, const double *cp,
                                           const B2_T *xm, const B2_T *x0, const B2_T *xp,
                                           const B2_T *w, const B2_T *mu, B2_T *gm, B2_T *gw,
                                           double *acc) {
    ptrdiff_t d;
    B2_BITS bad = 0;
    MLPGX_B2_IVDEP
    for (d = 0; d < nd; d++) {
        const double wv = u0 * vm[d] + u1 * v0[d] + u2 * vp[d];
        double p, wc, dp;
        if (KIND == 2) {
            gm[d] = (B2_T)wv;
            if (B2_TESTS_RESULTS) bad |= B2_FN(b2_nonfinite_bits)((B2_T)wv);
            continue;
        }
        p = (KIND == 0) ? B2_FN(b2_recip)(w[d]) : (double)w[d];
        if (ACC == 2) {
            gm[d] = (B2_T)(p * wv);
            if (B2_TESTS_RESULTS) bad |= B2_FN(b2_nonfinite_bits)((B2_T)(p * wv));
            continue;
        }
        wc = GIVEN == 1 ? u0 * (double)xm[d] + u1 * (double)x0[d] + u2 * (double)xp[d]
                   : u0 * cm[d] + u1 * c0[d] + u2 * cp[d];
        gm[d] = (B2_T)(p * wv);
        /* variances: dL/dvar below is -gm times a number, so a gm that is
         * not finite makes it so too: testing dL/dvar alone is enough */
        if (B2_TESTS_RESULTS && !(KIND == 0 && !ACC))
            bad |= B2_FN(b2_nonfinite_bits)((B2_T)(p * wv));
        /* dL/dvar = -p^2 dL/dp as -(p W v)(p (mu - W c)): p^2 alone overflows
         * for variances below ~1e-154 where the gradient itself is finite */
        dp = (KIND == 0) ? -(p * wv) * (p * ((double)mu[d] - wc)) : wv * ((double)mu[d] - wc);
        if (ACC) {
            acc[d] += dp;
        } else {
            gw[d] = (B2_T)dp;
            if (B2_TESTS_RESULTS) bad |= B2_FN(b2_nonfinite_bits)((B2_T)dp);
        }
    }
    return B2_NONFINITE(bad);
}

/* Forward sweep, row i (ring slot SLOT = i & 3, a compile-time constant):
 * load frame i + 1, form row i of R and r, its LDL^T row and the forward
 * substitution; store L[i, i-1], L[i, i-2] and y[i] / D[i] (per right-hand
 * side) to the scratch row.  The rings lie in ws (mlpgx_b2_workspace_doubles)
 * with rows of MLPGX_B2_RS doubles.  Returns bit 1 when a pivot is not
 * positive, bit 2 when a weight of frame i + 1 is invalid. */
MLPGX_B2_INLINE int B2_FN(b2_forward_row)(const mlpgx_b2plan *pl, const int L, const int NR,
                                          const int RHS_R, const int CZ1, const int SLOT,
                                          ptrdiff_t i, const B2_T *means, const B2_T *weights,
                                          const B2_T *g, ptrdiff_t n, ptrdiff_t d0,
                                          ptrdiff_t nd, double *ws, B2_T *scratch,
                                          const mlpgx_b2coef *cf) {
    const ptrdiff_t RS = MLPGX_B2_RS, CH = pl->CH;
    const int NEXT = (SLOT + 1) & 3, PREV = (SLOT + 3) & 3;   /* frames i + 1, i - 1 */
    double *pring = ws, *pmring = ws + mlpgx_b2_pm_ring(L);
    double *dinv_old = ws + mlpgx_b2_d_ring(L) + (SLOT & 1) * RS;         /* 1/D[i-2], becomes 1/D[i] */
    const double *dinv_prev = ws + mlpgx_b2_d_ring(L) + (NEXT & 1) * RS;  /* 1/D[i-1] */
    double *y_old = ws + mlpgx_b2_y_ring(L) + (SLOT & 1) * NR * RS;       /* y[i-2], becomes y[i] */
    const double *y_prev = ws + mlpgx_b2_y_ring(L) + (NEXT & 1) * NR * RS;
    double *lprev = ws + mlpgx_b2_lprev(L, NR);                           /* L[i-1, i-2] */
    const B2_T *gi = (g != NULL) ? g + i * pl->D + d0 : NULL;
    B2_T *sc = scratch + i * mlpgx_b2_scratch_row(CH, NR);
    const double rtol = pl->pivot_rtol;
    long long bad = 0;   /* 64-bit: the width of the pivot comparison lanes */
    ptrdiff_t d;
    int l;

    const int wbad = B2_FN(b2_load_frame)(pl, L, NEXT, means, weights, n, i + 1, d0, nd,
                                          pring, pmring);
    B2_FOR_COLS(d, nd,
        /* the static window: R[i, i] += p_0[i], r[i] += (p mu)_0[i] */
        double r0 = pring[(SLOT * L) * RS + d], r1 = 0.0, r2 = 0.0;
        double rhs0 = RHS_R ? pmring[(SLOT * L) * RS + d] : (double)gi[d];
        double lk2, ek1, lk1, piv, dinv, y;
        if (CZ1 == 2) {
            /* exactly DELTA (L = 3: [-0.5, 0, 0.5], [1, -2, 1]; mlpgx_b2_is_delta):
             * the coefficients as literals, so that the unit ones become
             * additions (the add pipes) and the terms of a window's p at
             * frames i - 1 and i + 1 with equal coefficients share one
             * product: 15 multiplications and FMAs per vector of the
             * forward's row instead of 23 (measured at the top of
             * mlpgx_band2.h) */
            const double pA1 = pring[(NEXT * 3 + 1) * RS + d], pC1 = pring[(PREV * 3 + 1) * RS + d];
            const double pA2 = pring[(NEXT * 3 + 2) * RS + d], pB2 = pring[(SLOT * 3 + 2) * RS + d];
            const double pC2 = pring[(PREV * 3 + 2) * RS + d];
            r0 = (r0 + 0.25 * (pA1 + pC1)) + ((pA2 + pC2) + 4.0 * pB2);
            r1 = -2.0 * (pB2 + pC2);
            r2 = pC2 - 0.25 * pC1;
            if (RHS_R)
                rhs0 = (rhs0 + 0.5 * (pmring[(PREV * 3 + 1) * RS + d] - pmring[(NEXT * 3 + 1) * RS + d]))
                     + ((pmring[(NEXT * 3 + 2) * RS + d] + pmring[(PREV * 3 + 2) * RS + d])
                        - 2.0 * pmring[(SLOT * 3 + 2) * RS + d]);
        } else
        for (l = 1; l < L; l++) {
            const double pA = pring[(NEXT * L + l) * RS + d];
            const double pB = pring[(SLOT * L + l) * RS + d];
            const double pC = pring[(PREV * L + l) * RS + d];
            r0 += cf->a0[l] * pA + cf->a2[l] * pC;
            r2 += cf->e2[l] * pC;
            if (RHS_R)
                rhs0 += cf->w0[l] * pmring[(NEXT * L + l) * RS + d]
                      + cf->w2[l] * pmring[(PREV * L + l) * RS + d];
            if (!(CZ1 && l == 1)) {   /* terms with the centre coefficient w1 */
                r0 += cf->a1[l] * pB;
                r1 += cf->b1[l] * pB + cf->b2[l] * pC;
                if (RHS_R)
                    rhs0 += cf->w1[l] * pmring[(SLOT * L + l) * RS + d];
            }
        }
        /* L[i, i-2] = R[i, i-2] / D[i-2];
         * L[i, i-1] = (R[i, i-1] - L[i, i-2] D[i-2] L[i-1, i-2]) / D[i-1];
         * D[i] = R[i, i] - L[i, i-2]^2 D[i-2] - L[i, i-1]^2 D[i-1] */
        lk2 = r2 * dinv_old[d];
        ek1 = r1 - r2 * lprev[d];
        lk1 = ek1 * dinv_prev[d];
        piv = r0 - r2 * lk2 - ek1 * lk1;
        bad |= !(piv > rtol * r0);
        dinv = 1.0 / piv;
        dinv_old[d] = dinv;
        lprev[d] = lk1;
        y = rhs0 - lk2 * y_old[d] - lk1 * y_prev[d];
        y_old[d] = y;
        sc[d] = (B2_T)lk1;
        sc[CH + d] = (B2_T)lk2;
        sc[2 * CH + d] = (B2_T)(y * dinv);
        if (NR == 2) {
            y = (double)gi[d] - lk2 * y_old[RS + d] - lk1 * y_prev[RS + d];
            y_old[RS + d] = y;
            sc[3 * CH + d] = (B2_T)(y * dinv);
        }
    )
    return (bad != 0) | (wbad << 1);
}

/* One sequence, columns d0 .. d0+nd-1 (see mlpgx_b2_run_*).  L windows;
 * NR right-hand sides; RHS_R: the first right-hand side is r (else g);
 * CZ1: 1, window 1's centre coefficient is 0 (the delta window [-0.5, 0, 0.5]),
 * so the terms it multiplies are left out; 2, the window set is exactly DELTA
 * (L = 3), whose coefficients the forward sweep uses as literals; GIVEN (NR = 1, right-hand side
 * g): 1, the adjoint with the forward's output given in ``out`` (c is read,
 * not solved for); 2, the means-only adjoint (gmeans alone: neither c nor
 * the means are read, gweights and gw_acc must be NULL). */
MLPGX_B2_INLINE int B2_FN(b2_core)(const mlpgx_b2plan *pl, const int L, const int NR,
                                   const int RHS_R, const int CZ1, const int GIVEN,
                                   const B2_T *means, const B2_T *weights, const B2_T *g,
                                   B2_T *out, B2_T *gmeans, B2_T *gweights, double *gw_acc,
                                   ptrdiff_t n, ptrdiff_t d0, ptrdiff_t nd,
                                   double *ws, B2_T *scratch) {
    const ptrdiff_t CH = pl->CH, D = pl->D, LD = pl->LD;
    const ptrdiff_t S = mlpgx_b2_scratch_row(CH, NR);
    /* the workspace (mlpgx_b2_workspace_doubles) */
    double *pring = ws;                               /* (4, L, RS): precisions of 4 frames */
    double *pmring = ws + mlpgx_b2_pm_ring(L);        /* (4, L, RS): precision * mean */
    double *cring = ws + mlpgx_b2_c_ring(L, NR);      /* (4, NR, CH): solutions c (and v) */
    double *zero = cring + 4 * NR * CH;               /* (CH,) zeros */
    const int GRADS = NR == 2 || GIVEN;               /* the adjoint's gradient pass */
    const B2_T *sweep_means = RHS_R ? means : NULL;   /* the sweep reads means for r only */
    mlpgx_b2coef cf;
    double *w0 = cf.w0, *w1 = cf.w1, *w2 = cf.w2;
    ptrdiff_t i, d;
    int l;

    for (l = 0; l < L; l++) {
        w0[l] = pl->w[l][0]; w1[l] = pl->w[l][1]; w2[l] = pl->w[l][2];
        cf.a0[l] = w0[l] * w0[l]; cf.a1[l] = w1[l] * w1[l]; cf.a2[l] = w2[l] * w2[l];
        cf.b1[l] = w1[l] * w0[l]; cf.b2[l] = w2[l] * w1[l]; cf.e2[l] = w2[l] * w0[l];
    }
    /* every ring but the p and p*mu rings, which the sweep fills first */
    memset(ws + mlpgx_b2_d_ring(L), 0,
           (mlpgx_b2_workspace_doubles(CH, L, NR) - mlpgx_b2_d_ring(L)) * sizeof(double));

    /* ---- forward sweep: row i of R and r, its LDL^T row, forward substitution */
    int status;
    B2_FN(b2_load_frame)(pl, L, 3, sweep_means, weights, n, -1, d0, nd, pring, pmring);
    if (B2_FN(b2_load_frame)(pl, L, 0, sweep_means, weights, n, 0, d0, nd, pring, pmring))
        return 2;
    /* rows in groups of 4, one per ring slot, so that the slots are
     * compile-time constants (see MLPGX_B2_RS) */
#define B2_FORWARD_ROW(SLOT, row) \
    B2_FN(b2_forward_row)(pl, L, NR, RHS_R, CZ1, SLOT, row, sweep_means, weights, g, n, d0, nd, \
                          ws, scratch, &cf)
    for (i = 0; i + 4 <= n; i += 4) {
        if ((status = B2_FORWARD_ROW(0, i))) return status;
        if ((status = B2_FORWARD_ROW(1, i + 1))) return status;
        if ((status = B2_FORWARD_ROW(2, i + 2))) return status;
        if ((status = B2_FORWARD_ROW(3, i + 3))) return status;
    }
    /* the last n % 4 rows (slots 0, 1, 2): status 1 (a pivot) makes the
     * caller rerun the general kernel, which names the frame; bit 2 (a
     * weight) goes back to the validation layer */
    if (i < n && (status = B2_FORWARD_ROW(0, i))) return status;
    if (i + 1 < n && (status = B2_FORWARD_ROW(1, i + 1))) return status;
    if (i + 2 < n && (status = B2_FORWARD_ROW(2, i + 2))) return status;
#undef B2_FORWARD_ROW

    /* ---- back substitution from the end; in adjoint mode the gradients of
     * frame t = i + 1 are complete once row i is solved.  The results are
     * tested finite (bit 4 of the return value), so that the validation
     * layer need not read them again to know it: the gradients as they are
     * stored, the float64 solution through its row 0 (below). */
    long long results_bad = 0;
    for (i = n - 1; i >= (GRADS ? -1 : 0); i--) {
        double *c = cring + (i & 3) * NR * CH;
        if (i >= 0) {
            const double *c1 = cring + ((i + 1) & 3) * NR * CH;
            const double *c2 = cring + ((i + 2) & 3) * NR * CH;
            /* L[i+1, i] and L[i+2, i]; rows past the end multiply zeros */
            const B2_T *l1 = (i + 1 < n) ? scratch + (i + 1) * S : (const B2_T *)zero;
            const B2_T *l2 = (i + 2 < n) ? scratch + (i + 2) * S + CH : (const B2_T *)zero;
            const B2_T *z = scratch + i * S + 2 * CH;
            B2_T *o = (NR == 1 && !GIVEN) ? out + i * D + d0 : NULL;
            B2_FOR_COLS(d, nd,
                double x = (double)z[d] - (double)l1[d] * c1[d] - (double)l2[d] * c2[d];
                c[d] = x;
                if (NR == 1 && !GIVEN) o[d] = (B2_T)x;
                if (NR == 2) {
                    x = (double)z[CH + d] - (double)l1[d] * c1[CH + d] - (double)l2[d] * c2[CH + d];
                    c[CH + d] = x;
                }
            )
        } else {
            memset(c, 0, NR * CH * sizeof(double));   /* c[-1] = v[-1] = 0 */
        }
        if (!GRADS && i == 0 && B2_TESTS_RESULTS) {
            /* The forward and the solve in float64: a value of the solution
             * that is not finite makes every one of lower frames so
             * (x[i] = z[i] - L[i+1, i] x[i+1] - L[i+2, i] x[i+2], and inf or
             * NaN times anything, 0 included, is not finite), so row 0 tells
             * for its whole column: no test per value.  (Float32 storage may
             * overflow where the double arithmetic did not: not tested.) */
            B2_BITS row_bad = 0;
            MLPGX_B2_IVDEP
            for (d = 0; d < nd; d++) row_bad |= B2_FN(b2_nonfinite_bits)((B2_T)c[d]);
            results_bad |= B2_NONFINITE(row_bad);
        }
        if (GRADS && i + 1 < n) {
            const ptrdiff_t t = i + 1;
            mlpgx_prefetch_grad_rows(means, weights, t, L, D, LD, pl->w_row_stride, d0, nd,
                                     (ptrdiff_t)sizeof(B2_T));   /* the rows read next */
            const double *cm = c;                                  /* frame t-1 */
            const double *c0 = cring + (t & 3) * NR * CH;          /* frame t */
            const double *cp = cring + ((t + 1) & 3) * NR * CH;    /* frame t+1 */
            /* v: the last right-hand side's solution rows; with GIVEN, c from
             * the given output (terms outside the sequence multiply zeros) */
            const double *vm = cm + (NR - 1) * CH, *v0 = c0 + (NR - 1) * CH;
            const double *vp = cp + (NR - 1) * CH;
            const B2_T *xm = NULL, *x0 = NULL, *xp = NULL;
            if (GIVEN == 1) {
                xm = (t >= 1) ? out + (t - 1) * D + d0 : (const B2_T *)zero;
                x0 = out + t * D + d0;
                xp = (t + 1 < n) ? out + (t + 1) * D + d0 : (const B2_T *)zero;
            }
            for (l = 0; l < L; l++) {
                B2_T *gm = gmeans + t * LD + l * D + d0;
                B2_T *gw = (gweights != NULL) ? gweights + t * LD + l * D + d0 : NULL;
                double *acc = (gw_acc != NULL) ? gw_acc + l * D + d0 : NULL;
                const B2_T *mu = (means != NULL) ? means + t * LD + l * D + d0 : NULL;
                const double u0 = w0[l], u1 = w1[l], u2 = w2[l];
                if (!B2_FN(b2_active)(pl, l, t, n)) {
                    memset(gm, 0, nd * sizeof(B2_T));
                    if (gw != NULL) memset(gw, 0, nd * sizeof(B2_T));
                    continue;
                }
                /* dL/dmu = p W v;  dL/dp = (W v)(mu - W c);  dL/dvar = -p^2 dL/dp;
                 * one pass per window (the precisions recomputed in it) */
#define B2_GRAD(KIND, ACC, wt, gm, gw, acc) \
    B2_FN(b2_grad_window)(KIND, ACC, GIVEN, nd, u0, u1, u2, vm, v0, vp, cm, c0, cp, \
                          xm, x0, xp, wt, mu, gm, gw, acc)
                if (pl->weight_kind == 2) {
                    results_bad |= B2_GRAD(2, 0, NULL, gm, NULL, NULL);
                } else if (GIVEN == 2) {
                    /* the means-only adjoint: gm = p W v in one pass */
                    const B2_T *wt = weights + t * pl->w_row_stride + l * D + d0;
                    if (pl->weight_kind == 0)
                        results_bad |= B2_GRAD(0, 2, wt, gm, NULL, NULL);
                    else
                        results_bad |= B2_GRAD(1, 2, wt, gm, NULL, NULL);
                } else {
                    const B2_T *wt = weights + t * pl->w_row_stride + l * D + d0;
                    if (pl->weight_kind == 0) {
                        if (gw != NULL)
                            results_bad |= B2_GRAD(0, 0, wt, gm, gw, NULL);
                        else
                            results_bad |= B2_GRAD(0, 1, wt, gm, NULL, acc);
                    } else {
                        if (gw != NULL)
                            results_bad |= B2_GRAD(1, 0, wt, gm, gw, NULL);
                        else
                            results_bad |= B2_GRAD(1, 1, wt, gm, NULL, acc);
                    }
                }
#undef B2_GRAD
            }
        }
    }
    return (results_bad != 0) << 2;
}

#define B2_CLONE(Lc, NRc, RHSc, CZc, GIVc) \
    B2_FN(b2_core)(pl, Lc, NRc, RHSc, CZc, GIVc, means, weights, g, out, gmeans, gweights, \
                   gw_acc, n, d0, nd, ws, scratch)
#define B2_BY_L(NRc, RHSc, GIVc) \
    switch (pl->L * 2 + (pl->L > 1 && pl->w[1][1] == 0.0)) { \
    case 2: return B2_CLONE(1, NRc, RHSc, 0, GIVc); \
    case 4: return B2_CLONE(2, NRc, RHSc, 0, GIVc); \
    case 5: return B2_CLONE(2, NRc, RHSc, 1, GIVc); \
    case 6: return B2_CLONE(3, NRc, RHSc, 0, GIVc); \
    case 7: \
        if (mlpgx_b2_is_delta(pl)) return B2_CLONE(3, NRc, RHSc, 2, GIVc); \
        return B2_CLONE(3, NRc, RHSc, 1, GIVc); \
    case 8: return B2_CLONE(4, NRc, RHSc, 0, GIVc); \
    default: return B2_CLONE(4, NRc, RHSc, 1, GIVc); \
    }

/* Solve one sequence (pointers at its frame 0) over columns d0 .. d0+nd-1.
 * ws: mlpgx_b2_workspace_doubles(CH, L, nrhs) doubles; scratch: n rows of
 * mlpgx_b2_scratch_row(CH, nrhs) elements.  Rows t >= n are not touched.
 * Returns 0; or, with the outputs undefined, bit 1 when a pivot is not
 * positive, bit 2 when pl->check_weights found an invalid weight; or, the
 * outputs written, bit 4 (alone) when a value stored to gmeans or gweights
 * (modes 2, 3 and 4) or to out (modes 0 and 1) is not finite.  Float64 only
 * (B2_TESTS_RESULTS): without bit 4 those are all finite.  The float32
 * clones and the sums added to gw_acc test nothing. */
MLPGX_B2_HOT static int B2_FN(mlpgx_b2_run)(const mlpgx_b2plan *pl,
                               const B2_T *means, const B2_T *weights, const B2_T *g,
                               B2_T *out, B2_T *gmeans, B2_T *gweights, double *gw_acc,
                               ptrdiff_t n, ptrdiff_t d0, ptrdiff_t nd,
                               double *ws, B2_T *scratch) {
    if (pl->mode == 0) {
        B2_BY_L(1, 1, 0)
    } else if (pl->mode == 1) {
        B2_BY_L(1, 0, 0)
    } else if (pl->mode == 2) {
        B2_BY_L(2, 1, 0)
    } else if (pl->mode == 3) {
        B2_BY_L(1, 0, 1)   /* the adjoint with c given */
    } else {
        B2_BY_L(1, 0, 2)   /* mode 4: the means-only adjoint */
    }
}

#undef B2_BY_L
#undef B2_FOR_COLS
#undef B2_CLONE
#undef B2_NONFINITE
#undef B2_BITS
#undef B2_RECIP_CHECKED
#undef B2_RECIP_BAD
#undef B2_RECIP_RULE
#undef B2_TESTS_RESULTS
#undef B2_FN
#undef B2_T

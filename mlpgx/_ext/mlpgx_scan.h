/* One-pass validity scans of the validation layer (mlpgx/_validate.py).
 *
 * NumPy's reductions that the layer used before (x.sum() to prove means
 * finite, w.min() to prove variances positive) cost two single-threaded
 * passes, and the pairwise float sum runs at a fraction of the memory
 * bandwidth.  These scans test the IEEE-754 bit patterns instead: integer
 * compares and an OR, which any compiler vectorises (no floating-point
 * reduction to keep in order), and the caller splits the array into blocks
 * over OpenMP threads.  They only answer "all valid?"; the layer then finds
 * and names the first bad entry with NumPy, on the rare invalid input.
 *
 * Checks (MLPGX_SCAN_*), with E the all-ones exponent and S the sign bit:
 *   FINITE     not inf/NaN:                      (bits & E) != E
 *   POSITIVE   a variance: > 0 and its reciprocal (the precision, computed
 *              in the storage type by the kernels) finite; +inf allowed,
 *              NaN not:                          M <= bits <= E (unsigned),
 *              M the bits of the smallest such value
 *              (MLPGX_SMALLEST_VARIANCE_BITS_*, mlpgx_variance_bits.h)
 *   NONNEG     >= 0 and finite (-0.0 allowed):   bits < E or bits == S
 */
#ifndef MLPGX_SCAN_H
#define MLPGX_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mlpgx_variance_bits.h"

enum { MLPGX_SCAN_FINITE = 0, MLPGX_SCAN_POSITIVE = 1, MLPGX_SCAN_NONNEG = 2 };

/* The bits of x[i] are read with memcpy, not through a cast pointer (that
 * would break C's aliasing rules); compilers turn it into a plain load. */
#define MLPGX_SCAN_BODY(FT, UT, E, S, M)                                     \
    UT bad = 0, b;                                                          \
    ptrdiff_t i;                                                            \
    switch (check) {                                                        \
    case MLPGX_SCAN_FINITE:                                                 \
        for (i = 0; i < n; i++) {                                           \
            memcpy(&b, x + i, sizeof b);                                    \
            bad |= (UT)((b & (E)) == (E));                                  \
        }                                                                   \
        break;                                                              \
    case MLPGX_SCAN_POSITIVE:                                               \
        for (i = 0; i < n; i++) {                                           \
            memcpy(&b, x + i, sizeof b);                                    \
            bad |= (UT)((UT)(b - (M)) > (UT)((E) - (M)));                   \
        }                                                                   \
        break;                                                              \
    default:                                                                \
        for (i = 0; i < n; i++) {                                           \
            memcpy(&b, x + i, sizeof b);                                    \
            bad |= (UT)((b >= (E)) & (b != (S)));                           \
        }                                                                   \
        break;                                                              \
    }                                                                       \
    return bad != 0;

/* 1 when some entry of x[0:n] fails the check, else 0. */
static inline int mlpgx_scan_d(const double *x, ptrdiff_t n, int check) {
    MLPGX_SCAN_BODY(double, uint64_t, MLPGX_INF_BITS_F64, UINT64_C(0x8000000000000000),
                    MLPGX_SMALLEST_VARIANCE_BITS_F64)
}

static inline int mlpgx_scan_f(const float *x, ptrdiff_t n, int check) {
    MLPGX_SCAN_BODY(float, uint32_t, MLPGX_INF_BITS_F32, UINT32_C(0x80000000),
                    MLPGX_SMALLEST_VARIANCE_BITS_F32)
}

#undef MLPGX_SCAN_BODY
#endif /* MLPGX_SCAN_H */

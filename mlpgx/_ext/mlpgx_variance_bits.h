/* The bit patterns of the validation layer's range for variances,
 * [SMALLEST_VARIANCE, +inf] (mlpgx/_validate.py: weights_range), for the C
 * code that tests variances by their bits: the one-pass scans (mlpgx_scan.h)
 * and the float32 check of the k <= 2 kernel (mlpgx_band2_impl.h,
 * B2_RECIP_CHECKED).
 *
 *   MLPGX_SMALLEST_VARIANCE_BITS_*  the smallest variance whose reciprocal
 *                                   (the precision, computed in the storage
 *                                   type) is finite: a subnormal, 2.938737e-39
 *                                   in float32, 5.56268464626801e-309 in
 *                                   float64.  _validate.SMALLEST_VARIANCE
 *                                   holds the same values; a test
 *                                   (tests/test_bad_input.py) reads this file
 *                                   and checks that they agree.
 *   MLPGX_INF_BITS_*                +inf, the largest variance ("no
 *                                   constraint"); also the exponent field
 *                                   (all ones), which inf and NaN share.
 */
#ifndef MLPGX_VARIANCE_BITS_H
#define MLPGX_VARIANCE_BITS_H

#include <stdint.h>

#define MLPGX_SMALLEST_VARIANCE_BITS_F32 UINT32_C(0x00200001)
#define MLPGX_SMALLEST_VARIANCE_BITS_F64 UINT64_C(0x0004000000000001)
#define MLPGX_INF_BITS_F32 UINT32_C(0x7F800000)
#define MLPGX_INF_BITS_F64 UINT64_C(0x7FF0000000000000)

#endif /* MLPGX_VARIANCE_BITS_H */

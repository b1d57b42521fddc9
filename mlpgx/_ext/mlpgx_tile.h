/* Eight-lane double-precision tiles for the MLPG solver (_solver.pyx).
 *
 * The solver processes TILE = 8 static dimensions at a time.  With GCC and
 * Clang a tile is a generic vector (vector_size extension): the compiler
 * lowers it to whatever the target has (4 SSE2, 2 AVX2 or 1 AVX-512
 * operation) and keeps accumulators in registers, which plain loops over
 * pointers did not reliably get.  Other compilers get a struct of 8 doubles
 * and scalar loops: the same results, just slower.
 *
 * Loads and stores are unaligned (memcpy), so tiles may start anywhere.
 */
#ifndef MLPGX_TILE_H
#define MLPGX_TILE_H

#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
/* A tile is a struct of native-width vectors (a 64-byte generic vector
 * would be kept in memory on targets without 512-bit registers). */
#if defined(__AVX512F__) && !defined(MLPGX_NO_512)
#define MLPGX_W 8
#elif defined(__AVX__)
#define MLPGX_W 4
#else
#define MLPGX_W 2
#endif
#define MLPGX_NV (8 / MLPGX_W)
typedef double mlpgx_vd __attribute__((vector_size(8 * MLPGX_W)));
typedef float mlpgx_vf __attribute__((vector_size(4 * MLPGX_W)));
typedef long long mlpgx_vi __attribute__((vector_size(8 * MLPGX_W)));
/* the same vectors with 8-byte alignment: the GCC idiom for unaligned access */
typedef double mlpgx_vdu __attribute__((vector_size(8 * MLPGX_W), aligned(8), may_alias));
typedef float mlpgx_vfu __attribute__((vector_size(4 * MLPGX_W), aligned(4), may_alias));
typedef struct { mlpgx_vd v[MLPGX_NV]; } mlpgx_v8;
#define MLPGX_INLINE static inline __attribute__((always_inline))
#define MLPGX_EACH for (int j = 0; j < MLPGX_NV; j++)

MLPGX_INLINE mlpgx_v8 v8_load(const double *p) {
    mlpgx_v8 x; MLPGX_EACH x.v[j] = *(const mlpgx_vdu *)(p + j * MLPGX_W); return x;
}
MLPGX_INLINE void v8_store(double *p, mlpgx_v8 x) {
    MLPGX_EACH *(mlpgx_vdu *)(p + j * MLPGX_W) = x.v[j];
}
MLPGX_INLINE mlpgx_v8 v8_loadf(const float *p) {
    mlpgx_v8 x;
    MLPGX_EACH x.v[j] = __builtin_convertvector(*(const mlpgx_vfu *)(p + j * MLPGX_W), mlpgx_vd);
    return x;
}
MLPGX_INLINE void v8_storef(float *p, mlpgx_v8 x) {
    MLPGX_EACH *(mlpgx_vfu *)(p + j * MLPGX_W) = __builtin_convertvector(x.v[j], mlpgx_vf);
}
MLPGX_INLINE mlpgx_v8 v8_zero(void) { mlpgx_v8 x; MLPGX_EACH x.v[j] = (mlpgx_vd){0}; return x; }
/* acc + c * x */
MLPGX_INLINE mlpgx_v8 v8_axpy(mlpgx_v8 acc, double c, mlpgx_v8 x) { MLPGX_EACH acc.v[j] += c * x.v[j]; return acc; }
/* acc - a * b */
MLPGX_INLINE mlpgx_v8 v8_fnma(mlpgx_v8 acc, mlpgx_v8 a, mlpgx_v8 b) { MLPGX_EACH acc.v[j] -= a.v[j] * b.v[j]; return acc; }
MLPGX_INLINE mlpgx_v8 v8_mul(mlpgx_v8 a, mlpgx_v8 b) { MLPGX_EACH a.v[j] *= b.v[j]; return a; }
MLPGX_INLINE mlpgx_v8 v8_recip(mlpgx_v8 a) { MLPGX_EACH a.v[j] = 1.0 / a.v[j]; return a; }
/* number of lanes with a <= c * b (ordered comparison) */
MLPGX_INLINE int v8_count_le(mlpgx_v8 a, double c, mlpgx_v8 b) {
    mlpgx_vi m = (mlpgx_vi)(a.v[0] <= c * b.v[0]);
    for (int j = 1; j < MLPGX_NV; j++) m |= (mlpgx_vi)(a.v[j] <= c * b.v[j]);
    long long s = 0;
    for (int i = 0; i < MLPGX_W; i++) s |= m[i];
    return s != 0;
}
#else
typedef struct { double v[8]; } mlpgx_v8;
#define MLPGX_INLINE static inline

MLPGX_INLINE mlpgx_v8 v8_load(const double *p) { mlpgx_v8 x; memcpy(x.v, p, sizeof x.v); return x; }
MLPGX_INLINE void v8_store(double *p, mlpgx_v8 x) { memcpy(p, x.v, sizeof x.v); }
MLPGX_INLINE mlpgx_v8 v8_loadf(const float *p) { mlpgx_v8 x; for (int i = 0; i < 8; i++) x.v[i] = p[i]; return x; }
MLPGX_INLINE void v8_storef(float *p, mlpgx_v8 x) { for (int i = 0; i < 8; i++) p[i] = (float)x.v[i]; }
MLPGX_INLINE mlpgx_v8 v8_zero(void) { mlpgx_v8 x; memset(x.v, 0, sizeof x.v); return x; }
MLPGX_INLINE mlpgx_v8 v8_axpy(mlpgx_v8 acc, double c, mlpgx_v8 x) { for (int i = 0; i < 8; i++) acc.v[i] += c * x.v[i]; return acc; }
MLPGX_INLINE mlpgx_v8 v8_fnma(mlpgx_v8 acc, mlpgx_v8 a, mlpgx_v8 b) { for (int i = 0; i < 8; i++) acc.v[i] -= a.v[i] * b.v[i]; return acc; }
MLPGX_INLINE mlpgx_v8 v8_mul(mlpgx_v8 a, mlpgx_v8 b) { for (int i = 0; i < 8; i++) a.v[i] *= b.v[i]; return a; }
MLPGX_INLINE mlpgx_v8 v8_recip(mlpgx_v8 a) { for (int i = 0; i < 8; i++) a.v[i] = 1.0 / a.v[i]; return a; }
MLPGX_INLINE int v8_count_le(mlpgx_v8 a, double c, mlpgx_v8 b) {
    int s = 0; for (int i = 0; i < 8; i++) s += a.v[i] <= c * b.v[i]; return s;
}
#endif

#endif /* MLPGX_TILE_H */

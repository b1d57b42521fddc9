/* Tiles of MLPGX_TILE double-precision lanes for the MLPG solver (_solver.pyx).
 *
 * The solver processes MLPGX_TILE static dimensions at a time.  With GCC and
 * Clang a tile is a small struct of native-width generic vectors
 * (vector_size extension): the compiler lowers every operation to the
 * target's instructions (SSE2, AVX2 or AVX-512, whatever the build enables)
 * and keeps accumulators in registers, which plain loops over pointers did
 * not reliably get.  Other compilers get a struct of doubles and scalar
 * loops: the same results, only slower.
 *
 * Loads and stores are unaligned, so tiles may start anywhere.
 */
#ifndef MLPGX_TILE_H
#define MLPGX_TILE_H

#include <string.h>

#define MLPGX_TILE 16

#if defined(__GNUC__) || defined(__clang__)
#if defined(__AVX512F__) && !defined(MLPGX_NO_512)
#define MLPGX_W 8
#elif defined(__AVX__)
#define MLPGX_W 4
#else
#define MLPGX_W 2
#endif
#define MLPGX_NV (MLPGX_TILE / MLPGX_W)
typedef double mlpgx_vd __attribute__((vector_size(8 * MLPGX_W)));
typedef float mlpgx_vf __attribute__((vector_size(4 * MLPGX_W)));
typedef long long mlpgx_vi __attribute__((vector_size(8 * MLPGX_W)));
/* the same vectors with element alignment: GCC's idiom for unaligned access */
typedef double mlpgx_vdu __attribute__((vector_size(8 * MLPGX_W), aligned(8), may_alias));
typedef float mlpgx_vfu __attribute__((vector_size(4 * MLPGX_W), aligned(4), may_alias));
typedef struct { mlpgx_vd v[MLPGX_NV]; } mlpgx_tile;
#define MLPGX_INLINE static inline __attribute__((always_inline))
#define MLPGX_EACH for (int j = 0; j < MLPGX_NV; j++)

MLPGX_INLINE mlpgx_tile tile_load(const double *p) {
    mlpgx_tile x; MLPGX_EACH x.v[j] = *(const mlpgx_vdu *)(p + j * MLPGX_W); return x;
}
MLPGX_INLINE void tile_store(double *p, mlpgx_tile x) {
    MLPGX_EACH *(mlpgx_vdu *)(p + j * MLPGX_W) = x.v[j];
}
MLPGX_INLINE mlpgx_tile tile_loadf(const float *p) {
    mlpgx_tile x;
    MLPGX_EACH x.v[j] = __builtin_convertvector(*(const mlpgx_vfu *)(p + j * MLPGX_W), mlpgx_vd);
    return x;
}
MLPGX_INLINE void tile_storef(float *p, mlpgx_tile x) {
    MLPGX_EACH *(mlpgx_vfu *)(p + j * MLPGX_W) = __builtin_convertvector(x.v[j], mlpgx_vf);
}
MLPGX_INLINE mlpgx_tile tile_zero(void) { mlpgx_tile x; MLPGX_EACH x.v[j] = (mlpgx_vd){0}; return x; }
/* acc + c * x */
MLPGX_INLINE mlpgx_tile tile_axpy(mlpgx_tile acc, double c, mlpgx_tile x) { MLPGX_EACH acc.v[j] += c * x.v[j]; return acc; }
/* acc - a * b */
MLPGX_INLINE mlpgx_tile tile_fnma(mlpgx_tile acc, mlpgx_tile a, mlpgx_tile b) { MLPGX_EACH acc.v[j] -= a.v[j] * b.v[j]; return acc; }
MLPGX_INLINE mlpgx_tile tile_mul(mlpgx_tile a, mlpgx_tile b) { MLPGX_EACH a.v[j] *= b.v[j]; return a; }
MLPGX_INLINE mlpgx_tile tile_recip(mlpgx_tile a) { MLPGX_EACH a.v[j] = 1.0 / a.v[j]; return a; }
/* nonzero when some lane has a <= c * b (ordered comparison: NaN lanes do not count) */
MLPGX_INLINE int tile_any_le(mlpgx_tile a, double c, mlpgx_tile b) {
    mlpgx_vi m = (mlpgx_vi)(a.v[0] <= c * b.v[0]);
    for (int j = 1; j < MLPGX_NV; j++) m |= (mlpgx_vi)(a.v[j] <= c * b.v[j]);
    long long s = 0;
    for (int i = 0; i < MLPGX_W; i++) s |= m[i];
    return s != 0;
}
#else
typedef struct { double v[MLPGX_TILE]; } mlpgx_tile;
#define MLPGX_INLINE static inline
#define MLPGX_LANES for (int i = 0; i < MLPGX_TILE; i++)

MLPGX_INLINE mlpgx_tile tile_load(const double *p) { mlpgx_tile x; memcpy(x.v, p, sizeof x.v); return x; }
MLPGX_INLINE void tile_store(double *p, mlpgx_tile x) { memcpy(p, x.v, sizeof x.v); }
MLPGX_INLINE mlpgx_tile tile_loadf(const float *p) { mlpgx_tile x; MLPGX_LANES x.v[i] = p[i]; return x; }
MLPGX_INLINE void tile_storef(float *p, mlpgx_tile x) { MLPGX_LANES p[i] = (float)x.v[i]; }
MLPGX_INLINE mlpgx_tile tile_zero(void) { mlpgx_tile x; memset(x.v, 0, sizeof x.v); return x; }
MLPGX_INLINE mlpgx_tile tile_axpy(mlpgx_tile acc, double c, mlpgx_tile x) { MLPGX_LANES acc.v[i] += c * x.v[i]; return acc; }
MLPGX_INLINE mlpgx_tile tile_fnma(mlpgx_tile acc, mlpgx_tile a, mlpgx_tile b) { MLPGX_LANES acc.v[i] -= a.v[i] * b.v[i]; return acc; }
MLPGX_INLINE mlpgx_tile tile_mul(mlpgx_tile a, mlpgx_tile b) { MLPGX_LANES a.v[i] *= b.v[i]; return a; }
MLPGX_INLINE mlpgx_tile tile_recip(mlpgx_tile a) { MLPGX_LANES a.v[i] = 1.0 / a.v[i]; return a; }
MLPGX_INLINE int tile_any_le(mlpgx_tile a, double c, mlpgx_tile b) {
    int s = 0; MLPGX_LANES s |= a.v[i] <= c * b.v[i]; return s;
}
#endif

#endif /* MLPGX_TILE_H */

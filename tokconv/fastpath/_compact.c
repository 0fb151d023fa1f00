/* Compact weights: a float32 matrix whose every 16 consecutive values along a row lie on an 8-bit
 * grid (v = offset + scale * q, q in 0..255) is kept as one byte per value plus a float32 scale and
 * offset per 16 values (1.5 bytes per weight instead of 4), and multiplied from that form.
 *
 * Why: the experiments make short model calls (1 to a few dozen rows), and those are bound by
 * reading the weights. A model dequantized from a GGUF file (Q8_0, Q4_0/1, Q5_0/1, Q4_K, Q5_K,
 * Q6_K: all affine in at most 8-bit integers within groups of 16 or 32) or from MLX's 4/8-bit
 * groups has exactly this structure, so the compact form holds the same numbers: the recovery
 * below accepts a matrix only when every value is reproduced to within a few float32 ulps, so the
 * products differ from BLAS on the float32 matrix by summation order only. A matrix without that
 * structure (float16 originals) is refused and stays on BLAS. No library does this for MLX on a
 * CPU (MLX's own quantized matmul is slow there, see ../../BENCHMARKS.md), hence this file.
 *
 * libmlx computes x @ W.T as cblas_sgemm(RowMajor, NoTrans, Trans, M, N, K, 1, x, lda, W, K,
 * beta, out, ldc). The interposer in front of the BLAS (_mkl_pack.c or _blas_shim.c) calls
 * tokconv_compact_sgemm first; it answers calls whose B is a registered matrix and whose M is at
 * most the row limit, and returns 0 for every other call.
 *
 * Int16 inputs (the default where the CPU has AVX-512 VNNI): the rows of x are rounded to 16-bit
 * integers with one scale per group of 16 (the weights' own groups), so that each group's sum of
 * products is one exact integer dot product (vpdpwssd: twice the multiply-adds of a float32 FMA per
 * instruction). What that rounding changes in a model's predictions is measured against float32
 * (bench/native_calls.py, BENCHMARKS.md) and tested (tests/test_compact.py, tests/test_native.py);
 * tokconv_compact_set_int16(0) (TOKCONV_NO_INT16=1) keeps float32 inputs.
 *
 * Built once by tokconv/fastpath/compact.py:  gcc -O3 -march=native -shared -fPIC _compact.c -lpthread
 * The float32 kernel is written in GNU C vectors of 16 floats, which gcc turns into AVX-512 code; on
 * AVX2 CPUs (no AVX-512) a kernel in AVX2 intrinsics replaces it, because gcc spilled those vectors
 * to the stack there (see tile below). Other CPUs get the GNU C vectors as gcc compiles them, which
 * spill the same way (built so on an AVX2 CPU, they ran slower than float32 BLAS: BENCHMARKS.md):
 * tokconv_compact_kernel() says which, and compact.py leaves compact weights off on such CPUs unless
 * TOKCONV_COMPACT=1.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
/* TILE: most rows multiplied in one pass over the weights, their accumulators in registers. More
 * rows per pass spread the cost of dequantizing each weight over more products; past 16, gcc runs
 * out of AVX-512 registers and the passes got slower, not faster. AVX2 has 16 registers of half the
 * width: two accumulators per row, so 6 rows leave room for the weights being widened. */
#ifndef TILE_ROWS
#if defined(__AVX512F__) || !defined(__AVX2__)
#define TILE_ROWS 16
#else
#define TILE_ROWS 6
#endif
#endif
enum { G = 16, TILE = TILE_ROWS, MAX_THREADS = 64 };
/* Rows per pass of the int16 kernel: each row holds a float and an integer accumulator in registers,
 * next to the weights of one group, so 12 rows fill the 32 AVX-512 registers. */
enum { TILE16 = 12 };
/* A worker spins this long for the next product before it sleeps: a model call's products come a
 * few dozen microseconds apart, and waking a sleeping thread costs about as much as a small product.
 * It spins with sched_yield: on 2 cores the caller (MLX's stream thread), Python's thread (building
 * the next ops) and the worker often share them, and a worker burning a shared core's time slice
 * would stall the very product it waits for. */
#define SPIN_SECONDS 300e-6
#ifndef PREFETCH
#define PREFETCH 8 /* blocks ahead */
#endif
/* Products with less work than this (bytes of compact weights x rows) run on the calling thread
 * alone: handing half of them to a worker costs more than it saves. */
#define MIN_SPLIT_BYTES ((size_t)1 << 20)
/* Work per chunk (bytes of compact weights x rows): small enough that a thread stalled mid-chunk
 * holds up the product only briefly, large enough that claiming chunks costs nothing. */
#ifndef CHUNK_WORK
#define CHUNK_WORK ((size_t)256 << 10)
#endif
/* ... but a chunk of a product with many rows gets at least this many block columns, while the
 * product still has four chunks per thread: at 9 or more rows the work bound alone left chunks of
 * two block columns, whose claims and cold first blocks (no prefetch reaches across chunks) slowed
 * the products of a whole model call (bench/compact_chunks.py, BENCHMARKS.md). */
#ifndef MIN_CHUNK_COLUMNS
#define MIN_CHUNK_COLUMNS 16
#endif

typedef float v16f __attribute__((vector_size(64)));
typedef uint8_t v16b __attribute__((vector_size(16)));

/* One group of 16 inputs (k) for one block of 16 outputs (n): q[kk][nn], then 16 scales, 16 offsets. */
struct block {
  uint8_t q[G][G];
  float scale[G], offset[G];
};

struct slot {
  const float *b;
  int n, k;
  struct block *blocks; /* [n / 16][k / 16] */
  size_t bytes;
  int owned; /* mapped here (unmapped on remove), or the caller's (a memory-mapped cache file) */
};

#include "_weights_table.h"
static int max_rows = 48; /* compact.py sets TOKCONV_COMPACT_MAX_ROWS at load */
static int n_threads = 1;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define HAVE_INT16 1
static int int16_inputs = 1; /* compact.py sets TOKCONV_NO_INT16 at load */
#else
#define HAVE_INT16 0
static int int16_inputs = 0;
#endif
static size_t compact_bytes;
static long long calls, hits; /* statistics for tests and benchmarks */

/* ---- recovery of the grid ---------------------------------------------------------------- */

static float fabsf_(float x) { return x < 0 ? -x : x; }

/* Fit v[0..15] as offset + scale * q, q in 0..255; 0 on success: every value reproduced within 4
 * float32 ulps of the group's largest magnitude. The grid step is the smallest gap between two
 * values divided by 1..16 (a group need not hold two neighbouring levels). */
__attribute__((unused)) static int fit_group_scalar(const float *v, uint8_t *q, float *scale, float *offset) {
  float lo = v[0], hi = v[0];
  for (int i = 1; i < G; i++) {
    lo = v[i] < lo ? v[i] : lo;
    hi = v[i] > hi ? v[i] : hi;
  }
  float big = fabsf_(lo) > fabsf_(hi) ? fabsf_(lo) : fabsf_(hi);
  float tol = big * 4 * 1.1920929e-7f; /* 4 ulps */
  if (hi == lo) {
    *scale = 0, *offset = lo;
    memset(q, 0, G);
    return 0;
  }
  float sorted[G]; /* insertion sort: the smallest gap between two distinct values is between neighbours */
  for (int i = 0; i < G; i++) {
    int j = i;
    for (; j > 0 && sorted[j - 1] > v[i]; j--) sorted[j] = sorted[j - 1];
    sorted[j] = v[i];
  }
  float gap = hi - lo;
  for (int i = 1; i < G; i++) {
    float d = sorted[i] - sorted[i - 1];
    if (d > tol && d < gap) gap = d;
  }
  for (int div = 1; div <= 16; div++) {
    float top = __builtin_rintf((hi - lo) / (gap / div));
    if (top > 255) break;
    float s = (hi - lo) / top; /* the step from the whole span: one rounding instead of one per level */
    float inv = 1.0f / s;
    int ok = 1;
    for (int i = 0; i < G && ok; i++) {
      float qi = __builtin_rintf((v[i] - lo) * inv);
      if (qi < 0 || qi > 255 || fabsf_(lo + s * qi - v[i]) > tol) ok = 0;
      q[i] = (uint8_t)qi;
    }
    if (ok) {
      *scale = s, *offset = lo;
      return 0;
    }
  }
  return 1;
}

#if defined(__AVX512F__)
/* fit_group_scalar in one AVX-512 register: no sort, no branches per value (loading a model
 * fits every group of 16 weights once, so this decides the load time). */
static int fit_group(const float *v, uint8_t *q, float *scale, float *offset) {
  __m512 x = _mm512_loadu_ps(v);
  float lo = _mm512_reduce_min_ps(x), hi = _mm512_reduce_max_ps(x);
  float big = fabsf_(lo) > fabsf_(hi) ? fabsf_(lo) : fabsf_(hi);
  float tol = big * 4 * 1.1920929e-7f;
  if (hi == lo) {
    *scale = 0, *offset = lo;
    memset(q, 0, G);
    return 0;
  }
  /* the smallest gap between two distinct values: against every rotation of the group */
  __m512 vtol = _mm512_set1_ps(tol), gaps = _mm512_set1_ps(hi - lo);
  __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  for (int r = 1; r < G; r++) {
    __m512i idx = _mm512_and_epi32(_mm512_add_epi32(iota, _mm512_set1_epi32(r)), _mm512_set1_epi32(G - 1));
    __m512 d = _mm512_abs_ps(_mm512_sub_ps(x, _mm512_permutexvar_ps(idx, x)));
    gaps = _mm512_mask_min_ps(gaps, _mm512_cmp_ps_mask(d, vtol, _CMP_GT_OQ), gaps, d);
  }
  float gap = _mm512_reduce_min_ps(gaps);
  __m512 vlo = _mm512_set1_ps(lo);
  for (int div = 1; div <= 16; div++) {
    float top = __builtin_rintf((hi - lo) / (gap / div));
    if (top > 255) break;
    float s = (hi - lo) / top;
    __m512 vs = _mm512_set1_ps(s);
    __m512 qi = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(x, vlo), _mm512_set1_ps(1.0f / s)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 err = _mm512_abs_ps(_mm512_sub_ps(_mm512_fmadd_ps(vs, qi, vlo), x));
    __mmask16 bad = _mm512_cmp_ps_mask(err, vtol, _CMP_GT_OQ) | _mm512_cmp_ps_mask(qi, _mm512_setzero_ps(), _CMP_LT_OQ) |
                    _mm512_cmp_ps_mask(qi, _mm512_set1_ps(255), _CMP_GT_OQ);
    if (bad == 0) {
      _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(qi)));
      *scale = s, *offset = lo;
      return 0;
    }
  }
  return 1;
}
#elif defined(__AVX2__)
/* The same in two AVX2 registers (the scalar fit's sort and branches were most of a first load's
 * fitting, BENCHMARKS.md): the group's rotations come from unaligned loads of it written twice. */
static int fit_group(const float *v, uint8_t *q, float *scale, float *offset) {
  float twice[2 * G];
  memcpy(twice, v, sizeof(float) * G);
  memcpy(twice + G, v, sizeof(float) * G);
  __m256 x0 = _mm256_loadu_ps(v), x1 = _mm256_loadu_ps(v + 8);
  float lo = v[0], hi = v[0];
  for (int i = 1; i < G; i++) {
    lo = v[i] < lo ? v[i] : lo;
    hi = v[i] > hi ? v[i] : hi;
  }
  float big = fabsf_(lo) > fabsf_(hi) ? fabsf_(lo) : fabsf_(hi);
  float tol = big * 4 * 1.1920929e-7f;
  if (hi == lo) {
    *scale = 0, *offset = lo;
    memset(q, 0, G);
    return 0;
  }
  /* the smallest gap between two distinct values: against every rotation of the group */
  const __m256 sign = _mm256_set1_ps(-0.0f), vtol = _mm256_set1_ps(tol);
  __m256 gaps = _mm256_set1_ps(hi - lo);
  for (int r = 1; r < G; r++) {
    __m256 d0 = _mm256_andnot_ps(sign, _mm256_sub_ps(x0, _mm256_loadu_ps(twice + r)));
    __m256 d1 = _mm256_andnot_ps(sign, _mm256_sub_ps(x1, _mm256_loadu_ps(twice + r + 8)));
    gaps = _mm256_blendv_ps(gaps, _mm256_min_ps(gaps, d0), _mm256_cmp_ps(d0, vtol, _CMP_GT_OQ));
    gaps = _mm256_blendv_ps(gaps, _mm256_min_ps(gaps, d1), _mm256_cmp_ps(d1, vtol, _CMP_GT_OQ));
  }
  float g8[8], gap = hi - lo;
  _mm256_storeu_ps(g8, gaps);
  for (int i = 0; i < 8; i++) gap = g8[i] < gap ? g8[i] : gap;
  const __m256 vlo = _mm256_set1_ps(lo), zero = _mm256_setzero_ps(), top8 = _mm256_set1_ps(255);
  for (int div = 1; div <= 16; div++) {
    float top = __builtin_rintf((hi - lo) / (gap / div));
    if (top > 255) break;
    float s = (hi - lo) / top;
    __m256 vs = _mm256_set1_ps(s), inv = _mm256_set1_ps(1.0f / s), bad = zero;
    __m256 qi[2];
    for (int h = 0; h < 2; h++) {
      __m256 x = h ? x1 : x0;
      qi[h] = _mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(x, vlo), inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      __m256 err = _mm256_andnot_ps(sign, _mm256_sub_ps(_mm256_fmadd_ps(vs, qi[h], vlo), x));
      bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(err, vtol, _CMP_GT_OQ),
                                           _mm256_or_ps(_mm256_cmp_ps(qi[h], zero, _CMP_LT_OQ), _mm256_cmp_ps(qi[h], top8, _CMP_GT_OQ))));
    }
    if (_mm256_movemask_ps(bad) == 0) {
      int32_t qq[G];
      _mm256_storeu_si256((__m256i *)qq, _mm256_cvtps_epi32(qi[0]));
      _mm256_storeu_si256((__m256i *)(qq + 8), _mm256_cvtps_epi32(qi[1]));
      for (int i = 0; i < G; i++) q[i] = (uint8_t)qq[i];
      *scale = s, *offset = lo;
      return 0;
    }
  }
  return 1;
}
#else
#define fit_group fit_group_scalar
#endif

/* Build block columns [nb0, nb1) of the compact form of the row-major n x k matrix `w`. */
static int compact_columns(const float *w, int k, int nb0, int nb1, struct block *out) {
  int kb = k / G;
  for (int nb = nb0; nb < nb1; nb++) {
    for (int g = 0; g < kb; g++) {
      struct block *blk = &out[(size_t)nb * kb + g];
      for (int nn = 0; nn < G; nn++) {
        uint8_t q[G];
        if (fit_group(w + (size_t)(nb * G + nn) * k + g * G, q, &blk->scale[nn], &blk->offset[nn])) return 5;
        for (int kk = 0; kk < G; kk++) blk->q[kk][nn] = q[kk];
      }
    }
  }
  return 0;
}

struct build_part {
  const float *w;
  int k, nb0, nb1, rc;
  struct block *out;
};

static void *build_part_run(void *arg) {
  struct build_part *p = arg;
  p->rc = compact_columns(p->w, p->k, p->nb0, p->nb1, p->out);
  return NULL;
}

/* Build the compact form of the row-major n x k matrix `w` on `threads` threads; 0 on success, 5
 * when some group of 16 values is not on an 8-bit grid (the matrix stays on BLAS), 6 for a shape
 * it does not take. */
static int compact_matrix(const float *w, int n, int k, struct block *out, int threads) {
  if (n % G || k % G) return 6;
  int nbs = n / G;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  if (threads < 2 || (size_t)n * k < ((size_t)1 << 20)) return compact_columns(w, k, 0, nbs, out);
  struct build_part parts[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (int t = 0; t < threads; t++) {
    parts[t] = (struct build_part){w, k, (int)((long long)nbs * t / threads), (int)((long long)nbs * (t + 1) / threads), 0, out};
    if (t > 0) started[t] = pthread_create(&ids[t], NULL, build_part_run, &parts[t]) == 0;
    if (t > 0 && !started[t]) build_part_run(&parts[t]);
  }
  build_part_run(&parts[0]);
  int rc = parts[0].rc;
  for (int t = 1; t < threads; t++) {
    if (started[t]) pthread_join(ids[t], NULL);
    if (parts[t].rc) rc = parts[t].rc;
  }
  return rc;
}

/* ---- the product ------------------------------------------------------------------------- */

static inline __attribute__((always_inline)) v16f load_weights(const struct block *blk, int kk, v16f s, v16f o) {
  v16f w;
  /* gcc turns a generic u8 -> float vector conversion into scalar code: widen with intrinsics */
#if defined(__AVX512F__)
  __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)blk->q[kk])));
  memcpy(&w, &f, sizeof w);
#else
  for (int i = 0; i < G; i++) w[i] = blk->q[kk][i];
#endif
  return w * s + o;
}

#if defined(__AVX2__) && !defined(__AVX512F__)
/* Weights kk of a block (16 outputs) as floats: offset + scale * q. Each half comes from its own
 * 8-byte load, which folds into the widening instruction (no shift for the upper half). */
static inline __attribute__((always_inline)) void widen(const struct block *blk, int kk, __m256 *lo, __m256 *hi) {
  __m256i ql = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)blk->q[kk]));
  __m256i qh = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(blk->q[kk] + 8)));
  *lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ql), _mm256_loadu_ps(blk->scale), _mm256_loadu_ps(blk->offset));
  *hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(qh), _mm256_loadu_ps(blk->scale + 8), _mm256_loadu_ps(blk->offset + 8));
}

/* Dequantize block column `col` (kb blocks) to floats: panel[g][kk][16]. */
static void dequantize_column(const struct block *col, int kb, float *panel) {
  for (int g = 0; g < kb; g++) {
    float *w = panel + (size_t)g * G * G;
#pragma GCC unroll 16
    for (int kk = 0; kk < G; kk++) {
      __m256 lo, hi;
      widen(&col[g], kk, &lo, &hi);
      _mm256_store_ps(w + kk * G, lo);
      _mm256_store_ps(w + kk * G + 8, hi);
    }
  }
}

/* Rows [0, R) of x (stride lda) times one block column of 16 outputs, in AVX2 registers. The
 * generic 64-byte vectors below would do the same, but without AVX-512 gcc moves them through the
 * stack at every step: products ran slower than float32 BLAS on the whole matrix. Up to five rows
 * of a single pass widen each weight in registers as they go (1-2 rows are bound by reading the
 * weights; at 3-5 faster than the float block, BENCHMARKS.md); six rows leave no
 * registers for widening, so they first write each block's weights as floats (or take them from
 * `panel`, the whole column written once for several passes), and each weight is one load. Every
 * path multiplies the same floats in the same order, so a row's results never depend on the rows
 * beside it. */
static inline __attribute__((always_inline)) void tile(int R, const float *a, int lda, const struct block *col,
                                                       int kb, float *c, int ldc, float beta, const float *panel) {
  __m256 lo[TILE], hi[TILE];
  float wbuf[G * G] __attribute__((aligned(32)));
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) lo[r] = hi[r] = _mm256_setzero_ps();
  for (int g = 0; g < kb; g++) {
    const struct block *blk = &col[g];
    const float *ag = a + g * G;
    if (R <= 2 || (R <= 5 && panel == NULL)) {
      for (int line = 0; line < (int)sizeof(struct block); line += 64) __builtin_prefetch((const char *)(blk + PREFETCH) + line);
#pragma GCC unroll 4
      for (int kk = 0; kk < G; kk++) {
        __m256 wl, wh;
        widen(blk, kk, &wl, &wh);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
          __m256 xb = _mm256_broadcast_ss(ag + (size_t)r * lda + kk);
          lo[r] = _mm256_fmadd_ps(xb, wl, lo[r]);
          hi[r] = _mm256_fmadd_ps(xb, wh, hi[r]);
        }
      }
      continue;
    }
    const float *w = panel != NULL ? panel + (size_t)g * G * G : wbuf;
    if (panel == NULL) {
      for (int line = 0; line < (int)sizeof(struct block); line += 64) __builtin_prefetch((const char *)(blk + PREFETCH) + line);
      dequantize_column(blk, 1, wbuf);
    }
#pragma GCC unroll 4
    for (int kk = 0; kk < G; kk++) {
      __m256 wl = _mm256_load_ps(w + kk * G), wh = _mm256_load_ps(w + kk * G + 8);
#pragma GCC unroll 16
      for (int r = 0; r < R; r++) {
        __m256 xb = _mm256_broadcast_ss(ag + (size_t)r * lda + kk);
        lo[r] = _mm256_fmadd_ps(xb, wl, lo[r]);
        hi[r] = _mm256_fmadd_ps(xb, wh, hi[r]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) {
    float *cr = c + (size_t)r * ldc;
    if (beta != 0.0f) {
      __m256 b = _mm256_set1_ps(beta);
      lo[r] = _mm256_fmadd_ps(b, _mm256_loadu_ps(cr), lo[r]);
      hi[r] = _mm256_fmadd_ps(b, _mm256_loadu_ps(cr + 8), hi[r]);
    }
    _mm256_storeu_ps(cr, lo[r]);
    _mm256_storeu_ps(cr + 8, hi[r]);
  }
}
#define HAVE_PANEL 1
#else
/* Rows [0, R) of x (stride lda) times one block column of 16 outputs; R is a constant per call
 * site, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void tile(int R, const float *a, int lda, const struct block *col,
                                                       int kb, float *c, int ldc, float beta, const float *panel) {
  (void)panel;
  v16f acc[TILE];
  for (int r = 0; r < R; r++) acc[r] = (v16f){0};
  for (int g = 0; g < kb; g++) {
    const struct block *blk = &col[g];
    /* the weights stream through once per product: ask for a block a few ahead (the hardware
     * prefetcher alone left a one-row product at about half the machine's read bandwidth) */
    for (int line = 0; line < (int)sizeof(struct block); line += 64) __builtin_prefetch((const char *)(blk + PREFETCH) + line);
    v16f s, o;
    memcpy(&s, blk->scale, sizeof s);
    memcpy(&o, blk->offset, sizeof o);
    const float *ag = a + g * G;
#pragma GCC unroll 4
    for (int kk = 0; kk < G; kk++) {
      v16f w = load_weights(blk, kk, s, o);
      for (int r = 0; r < R; r++) acc[r] += ag[(size_t)r * lda + kk] * w;
    }
  }
  for (int r = 0; r < R; r++) {
    float *cr = c + (size_t)r * ldc;
    if (beta != 0.0f) {
      v16f old;
      memcpy(&old, cr, sizeof old);
      acc[r] += beta * old;
    }
    memcpy(cr, &acc[r], sizeof acc[r]);
  }
}
#endif

#define TILE_CASE(R) \
  case R:            \
    tile(R <= TILE ? R : TILE, a, lda, col, kb, c, ldc, beta, panel); \
    break;

static void rows_times_column(int rows, const float *a, int lda, const struct block *col, int kb, float *c,
                              int ldc, float beta, const float *panel) {
  switch (rows) {
    TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6)
    TILE_CASE(7) TILE_CASE(8) TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12)
#if TILE_ROWS > 12
    TILE_CASE(13) TILE_CASE(14) TILE_CASE(15) TILE_CASE(16)
#endif
#if TILE_ROWS > 16
    TILE_CASE(17) TILE_CASE(18) TILE_CASE(19) TILE_CASE(20) TILE_CASE(21) TILE_CASE(22) TILE_CASE(23) TILE_CASE(24)
#endif
  }
}

/* ---- int16 inputs ------------------------------------------------------------------------ */

/* x rounded for the int16 kernel: per row, k/2 int32 words (two int16 values each, as vpdpwssd takes
 * them), and per group of 16 the scale of those integers and the exact float sum of the group's
 * inputs (for the weights' offsets: sum(x * (offset + scale * q)) = offset * sum(x) + scale * sum(x * q)). */
struct rounded {
  int32_t *pairs;     /* [m][k / 2] */
  float *step;        /* [m][k / 16] */
  float *sum;         /* [m][k / 16] */
  unsigned char *bad; /* [m]: the row holds NaN or infinity (rounded as zeros; its product runs on float32) */
};

/* One buffer per thread, grown as needed: a product's inputs are rounded on its calling thread. */
static __thread void *round_buf;
static __thread size_t round_cap;

/* Round the m x k rows of `a` (stride lda): the number of rows that hold NaN or infinity (which
 * float32 inputs carry through as BLAS does), or -1 out of memory. */
static int round_inputs(int m, int k, const float *a, int lda, struct rounded *x) {
  int kb = k / G, bad = 0;
  size_t need = (size_t)m * k * 2 + (size_t)m * kb * 8 + (size_t)m + 64;
  if (need > round_cap) {
    free(round_buf);
    round_cap = 0;
    round_buf = aligned_alloc(64, (need + 63) / 64 * 64);
    if (round_buf == NULL) return -1;
    round_cap = need;
  }
  x->pairs = round_buf;
  x->step = (float *)((char *)round_buf + (size_t)m * k * 2);
  x->sum = x->step + (size_t)m * kb;
  x->bad = (unsigned char *)(x->sum + (size_t)m * kb);
#if HAVE_INT16
  for (int r = 0; r < m; r++) {
    const float *row = a + (size_t)r * lda;
    int16_t *q = (int16_t *)(x->pairs + (size_t)r * (k / 2));
    float *step = x->step + (size_t)r * kb, *sum = x->sum + (size_t)r * kb;
    x->bad[r] = 0;
    for (int g = 0; g < kb; g++) {
      __m512 v = _mm512_loadu_ps(row + g * G);
      if (_mm512_fpclass_ps_mask(v, 0x99)) { /* NaN or infinity */
        x->bad[r] = 1;
        break;
      }
      float big = _mm512_reduce_max_ps(_mm512_abs_ps(v));
      float inv = big > 0.0f ? 32767.0f / big : 0.0f;
      /* round to nearest even (the default rounding mode); |v * inv| <= 32767, so int16 holds it */
      _mm256_storeu_si256((__m256i *)(q + g * G), _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v, _mm512_set1_ps(inv)))));
      step[g] = big / 32767.0f;
      sum[g] = _mm512_reduce_add_ps(v);
    }
    if (x->bad[r]) {
      memset(q, 0, (size_t)k * 2);
      memset(step, 0, sizeof(float) * kb);
      memset(sum, 0, sizeof(float) * kb);
      bad++;
    }
  }
#else
  (void)a, (void)lda;
#endif
  return bad;
}

#if HAVE_INT16
/* Rows [0, R) of rounded x times one block column of 16 outputs. Per group, the 16 x 16 weights are
 * widened to int16 pairs (k, k+1) once and held in registers; then each row's 8 pair products run as
 * one integer dot product and join the float accumulator with the group's two scales. */
static inline __attribute__((always_inline)) void tile16(int R, const struct rounded *x, int k, int r0,
                                                         const struct block *col, int kb, float *c, int ldc, float beta) {
  /* (q[2p][i], q[2p+1][i]) next to each other: lanes 0..15 are row 2p, 16..31 row 2p+1 after widening */
  const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                         5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  __m512 acc[TILE16];
  const int32_t *xp = x->pairs + (size_t)r0 * (k / 2);
  const float *step = x->step + (size_t)r0 * kb, *sum = x->sum + (size_t)r0 * kb;
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
  for (int g = 0; g < kb; g++) {
    const struct block *blk = &col[g];
    for (int line = 0; line < (int)sizeof(struct block); line += 64) __builtin_prefetch((const char *)(blk + PREFETCH) + line);
    __m512i dot[TILE16];
    for (int r = 0; r < R; r++) dot[r] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int p = 0; p < G / 2; p++) {
      __m512i w = _mm512_permutexvar_epi16(pairs, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)blk->q[2 * p])));
      for (int r = 0; r < R; r++)
        dot[r] = _mm512_dpwssd_epi32(dot[r], w, _mm512_set1_epi32(xp[(size_t)r * (k / 2) + g * (G / 2) + p]));
    }
    __m512 s = _mm512_loadu_ps(blk->scale), o = _mm512_loadu_ps(blk->offset);
    for (int r = 0; r < R; r++) {
      __m512 scaled = _mm512_mul_ps(s, _mm512_set1_ps(step[(size_t)r * kb + g]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r]), scaled, acc[r]);
      acc[r] = _mm512_fmadd_ps(o, _mm512_set1_ps(sum[(size_t)r * kb + g]), acc[r]);
    }
  }
  for (int r = 0; r < R; r++) {
    float *cr = c + (size_t)r * ldc;
    if (beta != 0.0f) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(cr), acc[r]);
    _mm512_storeu_ps(cr, acc[r]);
  }
}

#define TILE16_CASE(R) \
  case R:              \
    tile16(R, x, k, r0, col, kb, c, ldc, beta); \
    break;

static void rows_times_column16(int rows, const struct rounded *x, int k, int r0, const struct block *col, int kb,
                                float *c, int ldc, float beta) {
  switch (rows) {
    TILE16_CASE(1) TILE16_CASE(2) TILE16_CASE(3) TILE16_CASE(4) TILE16_CASE(5) TILE16_CASE(6)
    TILE16_CASE(7) TILE16_CASE(8) TILE16_CASE(9) TILE16_CASE(10) TILE16_CASE(11) TILE16_CASE(12)
  }
}
#endif

struct job {
  const struct rounded *x; /* int16 inputs, or NULL for float32 */
  int m, kb;
  const float *a;
  int lda;
  const struct block *blocks;
  float *c;
  int ldc;
  float beta;
  int n_blocks;
  int chunk, n_chunks;  /* block columns per chunk; chunks are claimed one at a time */
  int done;             /* chunks finished (atomic) */
};

#ifdef HAVE_PANEL
/* One panel per thread, grown as needed (kb blocks of 16 x 16 floats), or NULL out of memory. */
static __thread float *panel_buf;
static __thread size_t panel_cap;

static float *column_panel(int kb) {
  size_t need = (size_t)kb * G * G * sizeof(float);
  if (need > panel_cap) {
    free(panel_buf);
    panel_cap = 0;
    if ((panel_buf = aligned_alloc(64, need)) == NULL) return NULL;
    panel_cap = need;
  }
  return panel_buf;
}
#endif

static void run_chunk(const struct job *j, int chunk) {
  int lo = chunk * j->chunk, hi = lo + j->chunk < j->n_blocks ? lo + j->chunk : j->n_blocks;
  for (int nb = lo; nb < hi; nb++) {
    const struct block *col = j->blocks + (size_t)nb * j->kb;
    /* passes of near-equal rows (20 rows: 10 + 10, not 16 + a 4-row pass that costs nearly as much) */
    int tile = j->x != NULL ? TILE16 : TILE;
    int passes = (j->m + tile - 1) / tile;
    const float *panel = NULL;
#ifdef HAVE_PANEL
    if (j->x == NULL && passes > 1 && (panel = column_panel(j->kb)) != NULL) dequantize_column(col, j->kb, (float *)panel);
#endif
    for (int p = 0, r0 = 0; p < passes; p++) {
      int rows = (j->m - r0) / (passes - p);
#if HAVE_INT16
      if (j->x != NULL)
        rows_times_column16(rows, j->x, j->kb * G, r0, col, j->kb, j->c + (size_t)r0 * j->ldc + nb * G, j->ldc, j->beta);
      else
#endif
        rows_times_column(rows, j->a + (size_t)r0 * j->lda, j->lda, col, j->kb, j->c + (size_t)r0 * j->ldc + nb * G,
                          j->ldc, j->beta, panel);
      r0 += rows;
    }
  }
}

/* ---- a small pool of worker threads ------------------------------------------------------
 * A product is cut into chunks that the calling thread and the workers claim one at a time, so a
 * worker that is slow to wake (its core busy with another process) only means the caller does
 * more of the chunks itself: never a wait for a thread that is not running. Workers wait on a
 * futex after a short spin.
 *
 * `state` holds the current job's generation (high 32 bits) and its next unclaimed chunk (low 32
 * bits); a chunk is claimed by compare-and-swap, so a claim can never land on another job. Jobs
 * live in a ring: a new job is published only after every chunk of the previous one is done. */

#define RING 4
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER; /* one multi-threaded product at a time */
static int pool_size;                                          /* workers started */
static struct job ring[RING];
static uint64_t state;       /* (generation << 32) | next chunk */
static volatile int wake_seq; /* futex word: bumped on every publish */

static long futex(volatile int *addr, int op, int val) { return syscall(SYS_futex, addr, op, val, NULL, NULL, 0); }

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Claim and run chunks of the current job until none is left; returns the generation seen. */
static uint32_t work(void) {
  for (;;) {
    uint64_t v = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    uint32_t gen = (uint32_t)(v >> 32), next = (uint32_t)v;
    struct job *j = &ring[gen % RING];
    if ((int)next >= __atomic_load_n(&j->n_chunks, __ATOMIC_RELAXED)) return gen;
    if (!__atomic_compare_exchange_n(&state, &v, v + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
    run_chunk(j, (int)next); /* the job stays put: no new one is published before this chunk is done */
    __atomic_add_fetch(&j->done, 1, __ATOMIC_ACQ_REL);
  }
}

static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    int seq = __atomic_load_n(&wake_seq, __ATOMIC_ACQUIRE);
    work();
    double until = now() + SPIN_SECONDS;
    /* yield, not just pause: the caller (MLX's stream thread) and Python's thread may need this core */
    while (__atomic_load_n(&wake_seq, __ATOMIC_ACQUIRE) == seq && now() < until) sched_yield();
    while (__atomic_load_n(&wake_seq, __ATOMIC_ACQUIRE) == seq) futex(&wake_seq, FUTEX_WAIT_PRIVATE, seq);
  }
  return NULL;
}

static void run_job(struct job *j, int threads) {
  size_t bytes = (size_t)j->n_blocks * j->kb * sizeof(struct block) * (size_t)j->m;
  if (threads > 1 && j->n_blocks >= 2 && bytes >= MIN_SPLIT_BYTES &&
      pthread_mutex_trylock(&pool_lock) == 0) {
    while (pool_size < threads - 1 && pool_size < MAX_THREADS - 1) {
      pthread_t t;
      if (pthread_create(&t, NULL, worker, NULL) != 0) break;
      pthread_detach(t);
      pool_size++;
    }
    int per = (int)(CHUNK_WORK / ((size_t)j->kb * sizeof(struct block) * (size_t)j->m));
    int least = j->n_blocks / (4 * threads);
    if (least > MIN_CHUNK_COLUMNS) least = MIN_CHUNK_COLUMNS;
    if (per < least) per = least;
    j->chunk = per < 1 ? 1 : per;
    j->n_chunks = (j->n_blocks + j->chunk - 1) / j->chunk;
    j->done = 0;
    uint32_t gen = (uint32_t)(__atomic_load_n(&state, __ATOMIC_ACQUIRE) >> 32) + 1;
    ring[gen % RING] = *j;
    __atomic_store_n(&state, (uint64_t)gen << 32, __ATOMIC_RELEASE);
    __atomic_add_fetch(&wake_seq, 1, __ATOMIC_ACQ_REL);
    futex(&wake_seq, FUTEX_WAKE_PRIVATE, pool_size);
    work();
    struct job *cur = &ring[gen % RING];
    while (__atomic_load_n(&cur->done, __ATOMIC_ACQUIRE) < cur->n_chunks) sched_yield(); /* a worker mid-chunk */
    pthread_mutex_unlock(&pool_lock);
    return;
  }
  j->chunk = j->n_blocks;
  j->n_chunks = 1;
  run_chunk(j, 0);
}

/* ---- the interface ----------------------------------------------------------------------- */

void tokconv_compact_set_max_rows(int rows) { max_rows = rows; }
int tokconv_compact_get_max_rows(void) { return max_rows; }
void tokconv_compact_set_threads(int n) { n_threads = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n; }
int tokconv_compact_get_threads(void) { return n_threads; }
/* Int16 inputs on (1) or off (0); stays 0 where this CPU has no AVX-512 VNNI. */
void tokconv_compact_set_int16(int on) { int16_inputs = HAVE_INT16 && on; }
int tokconv_compact_get_int16(void) { return int16_inputs; }
/* Which float32 kernel this build has: 2 AVX-512 (GNU C vectors of 16 floats, one register each), 1
 * AVX2 intrinsics, 0 gcc's generic vectors (other CPUs: written for neither, and not fast there where
 * measured, so compact.py does not turn them on by itself). */
int tokconv_compact_kernel(void) {
#if defined(__AVX512F__)
  return 2;
#elif defined(__AVX2__)
  return 1;
#else
  return 0;
#endif
}

static int insert(const float *b, int n, int k, struct block *blocks, size_t bytes, int owned) {
  int rc = table_insert((struct slot){b, n, k, blocks, bytes, owned});
  if (rc == 0) __atomic_add_fetch(&compact_bytes, bytes, __ATOMIC_RELAXED);
  return rc;
}

/* Bytes of the compact form of an n x k matrix (0 for a shape it does not take). */
long long tokconv_compact_size(int n, int k) {
  if (n <= 0 || k <= 0 || n % G || k % G) return 0;
  return (long long)(n / G) * (k / G) * (long long)sizeof(struct block);
}

/* Build the compact form of the row-major n x k float32 matrix at `b` into `out` (size above).
 * 0 on success, 5 not on an 8-bit grid, 6 shape not a multiple of 16. */
int tokconv_compact_build(const float *b, int n, int k, void *out) {
  if (tokconv_compact_size(n, k) == 0 || b == NULL) return 6;
  return compact_matrix(b, n, k, (struct block *)out, n_threads);
}

/* Check `samples` groups of `blocks` (spread over the matrix) against the float32 matrix `b`: 0
 * when each reproduces its 16 weights within 4 ulps, 1 otherwise (a stale or damaged cache file). */
int tokconv_compact_verify(const float *b, int n, int k, const void *blocks, int samples) {
  if (tokconv_compact_size(n, k) == 0) return 1;
  const struct block *bl = blocks;
  int kb = k / G;
  size_t groups = (size_t)n * kb, step = groups / (samples > 0 ? samples : 1);
  if (step == 0) step = 1;
  for (size_t i = 0; i < groups; i += step) {
    size_t row = i / kb, g = i % kb;
    const struct block *blk = &bl[(row / G) * kb + g];
    int nn = (int)(row % G);
    for (int kk = 0; kk < G; kk++) {
      float want = b[row * k + g * G + kk];
      float got = blk->offset[nn] + blk->scale[nn] * blk->q[kk][nn];
      float big = fabsf_(blk->offset[nn]) + fabsf_(blk->scale[nn]) * 255;
      if (!(fabsf_(got - want) <= big * 8 * 1.1920929e-7f)) return 1;
    }
  }
  return 0;
}

/* Register `b` with a compact form the caller built (tokconv_compact_build) and keeps alive until
 * tokconv_compact_remove: a memory-mapped cache file. Same answers as tokconv_compact_add. */
int tokconv_compact_add_built(const float *b, int n, int k, void *blocks) {
  if (tokconv_compact_size(n, k) == 0 || b == NULL || b == TOMBSTONE || blocks == NULL) return 6;
  return insert(b, n, k, (struct block *)blocks, (size_t)tokconv_compact_size(n, k), 0);
}

/* Register `b` as another address of a matrix registered already (the same values in another
 * buffer: a weight first known by its file's memory map, then by MLX's copy), sharing its blocks.
 * Same answers as tokconv_compact_add; its bytes are counted once, under the first address. */
int tokconv_compact_add_alias(const float *b, int n, int k, void *blocks) {
  if (tokconv_compact_size(n, k) == 0 || b == NULL || b == TOMBSTONE || blocks == NULL) return 6;
  return insert(b, n, k, (struct block *)blocks, 0, 0);
}

/* Register the row-major n x k float32 matrix at `b` (for products x @ b.T). 0 on success, -1 if
 * already there, 3 out of memory, 4 table full, 5 not on an 8-bit grid, 6 shape not a multiple of 16. */
int tokconv_compact_add(const float *b, int n, int k) {
  if (b == NULL || b == TOMBSTONE || tokconv_compact_size(n, k) == 0) return 6;
  size_t bytes = ((size_t)tokconv_compact_size(n, k) + 4095) / 4096 * 4096;
  void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 3;
  if (bytes >= ((size_t)2 << 20)) madvise(mem, bytes, MADV_HUGEPAGE);
  int rc = compact_matrix(b, n, k, (struct block *)mem, n_threads);
  if (rc == 0) rc = insert(b, n, k, (struct block *)mem, bytes, 1);
  if (rc != 0) munmap(mem, bytes);
  return rc;
}

/* Forget the compact form of `b` (call before `b`'s memory can be freed). 0 if it was there. */
int tokconv_compact_remove(const float *b) {
  struct slot gone = table_remove(b);
  if (gone.b == NULL) return 1;
  __atomic_sub_fetch(&compact_bytes, gone.bytes, __ATOMIC_RELAXED);
  if (gone.owned) munmap(gone.blocks, gone.bytes);
  return 0;
}

/* out: products seen (offered by the interposer or asked for directly, as tokconv/engine/_native.c
 * does), products answered, bytes held. */
void tokconv_compact_stats(long long *out) {
  out[0] = __atomic_load_n(&calls, __ATOMIC_RELAXED);
  out[1] = __atomic_load_n(&hits, __ATOMIC_RELAXED);
  out[2] = (long long)__atomic_load_n(&compact_bytes, __ATOMIC_RELAXED);
}

/* The product with explicit threads, for tests: c = x @ W.T (+ beta * c) for a registered `b`.
 * 0 on success, 1 when `b` is not registered with this shape. */
int tokconv_compact_gemm(int m, int n, int k, const float *a, int lda, const float *b, float beta, float *c, int ldc,
                         int threads) {
  if (m > 0) __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
  pthread_rwlock_rdlock(&table_lock);
  struct slot *s = find(b);
  if (s == NULL || s->n != n || s->k != k) {
    pthread_rwlock_unlock(&table_lock);
    return 1;
  }
  struct rounded x;
  int bad = m > 0 && int16_inputs ? round_inputs(m, k, a, lda, &x) : -1;
  float *kept = NULL; /* rows with NaN or infinity: their product on float32 inputs, made first */
  if (bad > 0 && (kept = malloc(sizeof(float) * (size_t)bad * n)) == NULL) bad = -1;
  if (bad > 0)
    for (int r = 0, i = 0; r < m; r++) {
      if (!x.bad[r]) continue;
      float *row = kept + (size_t)i++ * n;
      if (beta != 0.0f) memcpy(row, c + (size_t)r * ldc, sizeof(float) * n);
      struct job one = {NULL, 1, k / G, a + (size_t)r * lda, lda, s->blocks, row, n, beta, n / G, 0, 0, 0};
      run_job(&one, threads);
    }
  /* each row is rounded on its own and the rest of its product is the same, so a row's results do
   * not depend on the rows beside it (lockstep sweeps equal one-by-one runs) */
  struct job j = {bad >= 0 ? &x : NULL, m, k / G, a, lda, s->blocks, c, ldc, beta, n / G, 0, 0, 0};
  run_job(&j, threads); /* the read lock stays held so that a remove cannot unmap mid-product */
  if (bad > 0) {
    for (int r = 0, i = 0; r < m; r++)
      if (x.bad[r]) memcpy(c + (size_t)r * ldc, kept + (size_t)i++ * n, sizeof(float) * n);
    free(kept);
  }
  pthread_rwlock_unlock(&table_lock);
  if (m > 0) __atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
  return 0;
}

/* Called by the interposer first: 1 when this call was answered here, 0 to pass it on. */
int tokconv_compact_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                          const float *b, int ldb, float beta, float *c, int ldc) {
  if (order != ROW_MAJOR || ta != NO_TRANS || tb != TRANS || alpha != 1.0f || m < 1 || m > max_rows || ldb != k ||
      ldc < n) {
    __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
    return 0;
  }
  return tokconv_compact_gemm(m, n, k, a, lda, b, beta, c, ldc, n_threads) == 0; /* counts the call (and hit) */
}

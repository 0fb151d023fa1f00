/* The CPU scoring head over float32 logits: per row, the argmax (first of equal maxima), its
 * probability, the entropy and whether the row was finite, in two passes over the row (max; then
 * exp, sums and argmax). numpy's version (tokconv/engine/head.py, the fallback) makes six passes
 * and two temporaries; this one is faster and its block-wise double sums are closer to a float64
 * reference (see BENCHMARKS.md). Built by tokconv/engine/head.py with -O3 -march=native
 * -ffast-math, so that gcc vectorises the loops and expf (glibc's libmvec).
 *
 * A NaN or an infinity anywhere in a row makes its sum NaN or its maximum infinite. -ffast-math
 * lets gcc assume there are none, so the check reads the bits of the two results instead of
 * calling isfinite(), which it may fold to true. Such a row gets argmax 0, as numpy's and MLX's
 * argmax give over NaN, so an audited run shows what an unchecked one would have done.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

static int finite_bits(double v) {
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  return ((u >> 52) & 0x7ff) != 0x7ff;
}

enum { BLOCK = 1024 }; /* float sums over a block (64 terms per SIMD lane), double across blocks */

static void row_head(const float *restrict row, int32_t V, int64_t *argmax, float *prob, float *entropy,
                     uint8_t *finite) {
  float m = -INFINITY;
  for (int32_t i = 0; i < V; i++) m = row[i] > m ? row[i] : m;
  double s = 0.0, t = 0.0;
  int32_t a = V;
  for (int32_t b = 0; b < V; b += BLOCK) {
    int32_t end = b + BLOCK < V ? b + BLOCK : V;
    float bs = 0.0f, bt = 0.0f;
    for (int32_t i = b; i < end; i++) {
      float d = row[i] - m;
      float e = expf(d);
      bs += e;
      bt += e * d;
      int32_t j = d == 0.0f ? i : V;
      a = j < a ? j : a;
    }
    s += bs;
    t += bt;
  }
  int ok = finite_bits(s) && finite_bits((double)m) && finite_bits(t);
  *finite = (uint8_t)ok;
  *argmax = ok && a < V ? a : 0;
  *prob = (float)(1.0 / s);
  *entropy = (float)(log(s) - t / s);
}

void tokconv_entropy_rows(const float *x, int64_t rows, int32_t V, int64_t *argmax, float *prob, float *entropy,
                          uint8_t *finite) {
  for (int64_t r = 0; r < rows; r++)
    row_head(x + r * (int64_t)V, V, argmax + r, prob + r, entropy + r, finite + r);
}

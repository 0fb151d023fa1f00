/* One whole llama/qwen2 model call for one sequence, in C, on compact weights.
 *
 * Why: an experiment is made of short calls (1 to a few dozen new tokens after a cached prefix).
 * Through MLX such a call pays ~12 ms for rebuilding and dispatching its graph of ~40 nodes per
 * layer whatever the row count (BENCHMARKS.md), about as much as its products on a small model.
 * Here the same layers are plain loops between the compact kernel's products: nothing to rebuild,
 * nothing to dispatch, no buffers allocated per node. The products are the compact kernel's own
 * (tokconv_compact_gemm, handed in as a function pointer), so they are the products MLX's calls
 * make bit for bit; the rest (norms, RoPE, attention, SwiGLU) is the same arithmetic in another
 * summation order, so logits agree with the MLX path to float32 rounding, not bit for bit
 * (tests/test_native.py states the bounds).
 *
 * Scope: mlx-lm's llama and qwen2 layers as tokconv/engine/lean.py accepts them (RMSNorm, rotate-half
 * RoPE from tables, grouped-query attention, SwiGLU, optional q/k/v biases), every matrix registered
 * with the compact kernel. The keys and values live in the caller's arrays:
 * k[layer][kv_head][position][head_dim], `cap` positions each.
 *
 * Built once by tokconv/engine/native.py: gcc -O3 -march=native -ffast-math -fopenmp-simd -shared -fPIC
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* c = a @ W.T (+ beta * c) for a registered W (n x k): 0 on success, 1 when W is not registered. */
typedef int (*gemm_fn)(int m, int n, int k, const float *a, int lda, const float *w, float beta, float *c, int ldc,
                       int threads);

struct nat_layer {
  const float *norm1, *norm2;
  const float *q, *k, *v, *o, *gate, *up, *down; /* row-major (out, in): products x @ W.T */
  const float *bq, *bk, *bv;                     /* NULL without biases */
  float eps1, eps2;
};

struct nat_model {
  int layers, hidden, heads, kv_heads, head_dim, inter, vocab;
  float eps, scale;
  const float *embed; /* (vocab, hidden) */
  const float *head;  /* (vocab, hidden): logits = x @ head.T */
  const float *norm;
  const struct nat_layer *layer;
  gemm_fn gemm;
};

/* For bench/native_calls.py only: round the input of every product as a lower-precision kernel
 * would (1: int8 with one scale per `probe_group` values, 2: bfloat16, 3: int16 with one scale per
 * `probe_group` values), to measure what such a kernel
 * would change. 0 (the default): untouched. */
static int probe_kind, probe_group = 16;

void tokconv_native_set_probe(int kind, int group) {
  probe_kind = kind;
  probe_group = group > 0 ? group : 16;
}

static void round_inputs(const float *a, int m, int k, int lda, float *t) {
  for (int r = 0; r < m; r++) {
    const float *x = a + (size_t)r * lda;
    float *y = t + (size_t)r * k;
    if (probe_kind == 2) {
      for (int i = 0; i < k; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u; /* round to nearest even */
        memcpy(&y[i], &u, 4);
      }
      continue;
    }
    for (int g = 0; g < k; g += probe_group) {
      int w = k - g < probe_group ? k - g : probe_group;
      float big = 0.0f;
      for (int i = 0; i < w; i++) big = fabsf(x[g + i]) > big ? fabsf(x[g + i]) : big;
      float step = big / (probe_kind == 3 ? 32767.0f : 127.0f), inv = step > 0.0f ? 1.0f / step : 0.0f;
      for (int i = 0; i < w; i++) y[g + i] = nearbyintf(x[g + i] * inv) * step;
    }
  }
}

/* m->gemm, through round_inputs while a probe is on. */
static int product(const struct nat_model *m, int rows, int n, int k, const float *a, int lda, const float *w, float beta,
                   float *c, int ldc, int threads) {
  if (probe_kind == 0 || rows == 0) return m->gemm(rows, n, k, a, lda, w, beta, c, ldc, threads);
  float *t = malloc(sizeof(float) * (size_t)rows * k);
  if (t == NULL) return 3;
  round_inputs(a, rows, k, lda, t);
  int rc = m->gemm(rows, n, k, t, k, w, beta, c, ldc, threads);
  free(t);
  return rc;
}

static void rms_norm(const float *x, const float *w, float eps, int n, int e, float *y) {
  float inv = 1.0f / (float)e;
  for (int i = 0; i < n; i++) {
    const float *xi = x + (size_t)i * e;
    float *yi = y + (size_t)i * e, s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < e; j++) s += xi[j] * xi[j];
    float r = 1.0f / sqrtf(s * inv + eps);
#pragma omp simd
    for (int j = 0; j < e; j++) yi[j] = (xi[j] * r) * w[j];
  }
}

/* Rotate-half RoPE of `heads` vectors of `d` at one position: cos, sin hold d / 2 values. */
static void rope(float *x, int heads, int d, const float *c, const float *s) {
  int h = d / 2;
  for (int hh = 0; hh < heads; hh++) {
    float *v = x + (size_t)hh * d;
#pragma omp simd
    for (int i = 0; i < h; i++) {
      float a = v[i], b = v[i + h];
      v[i] = a * c[i] - b * s[i];
      v[i + h] = b * c[i] + a * s[i];
    }
  }
}

/* out (n, cols) = a (n, k) @ W.T + bias (NULL: none), on the compact kernel. */
static int project(const struct nat_model *m, const float *a, int n, int k, const float *w, const float *bias, int cols,
                   float *out, int threads) {
  if (bias != NULL)
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * cols, bias, sizeof(float) * cols);
  return product(m, n, cols, k, a, k, w, bias != NULL ? 1.0f : 0.0f, out, cols, threads);
}

/* Causal attention of n queries at positions offset.. over the cached keys and values of one layer. */
static void attend(const struct nat_model *m, const float *q, const float *kc, const float *vc, int cap, int n,
                   int offset, float *p, float *o) {
  int H = m->heads, D = m->head_dim, rep = m->heads / m->kv_heads;
  for (int i = 0; i < n; i++) {
    int len = offset + i + 1;
    for (int h = 0; h < H; h++) {
      const float *qi = q + ((size_t)i * H + h) * D;
      const float *K = kc + (size_t)(h / rep) * cap * D, *V = vc + (size_t)(h / rep) * cap * D;
      float best = 0.0f;
      for (int t = 0; t < len; t++) {
        const float *kt = K + (size_t)t * D;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int d = 0; d < D; d++) s += qi[d] * kt[d];
        p[t] = s;
        if (t == 0 || s > best) best = s;
      }
      float sum = 0.0f;
      for (int t = 0; t < len; t++) sum += p[t] = expf(p[t] - best);
      float inv = 1.0f / sum;
      float *oi = o + ((size_t)i * H + h) * D;
      memset(oi, 0, sizeof(float) * D);
      for (int t = 0; t < len; t++) {
        const float *vt = V + (size_t)t * D;
        float w = p[t] * inv;
#pragma omp simd
        for (int d = 0; d < D; d++) oi[d] += w * vt[d];
      }
    }
  }
}

/* Logits (sum of n[r], vocab) for `rows` sequences at once: row r's tokens tok[r][0..n[r]) at positions
 * offset[r].. after the offset[r] cached positions of kc[r]/vc[r] (cap[r] positions each), whose
 * positions offset[r].. take the new keys and values. The products take every row's tokens together
 * (one pass over the weights); RoPE, the cache and attention are each row's own, so a row's results
 * do not depend on the other rows. cos/sin: (>= max offset + n, head_dim / 2) tables. 0 on success,
 * 1 a matrix not registered with the compact kernel, 2 a cache too short, 3 out of memory. */
int tokconv_native_rows(const struct nat_model *m, int rows, const int32_t *const *tok, const int *n, const int *offset,
                        float *const *kc, float *const *vc, const int *cap, const float *cos, const float *sin,
                        float *logits, int threads) {
  int E = m->hidden, H = m->heads, G = m->kv_heads, D = m->head_dim, I = m->inter, h2 = D / 2;
  int N = 0, longest = 0;
  for (int r = 0; r < rows; r++) {
    if (n[r] < 1 || offset[r] < 0 || offset[r] + n[r] > cap[r]) return 2;
    N += n[r];
    if (offset[r] + n[r] > longest) longest = offset[r] + n[r];
  }
  if (N < 1) return 2;
  size_t qd = (size_t)N * H * D, kd = (size_t)N * G * D;
  float *buf = malloc(sizeof(float) * ((size_t)N * (2 * E + 2 * I) + 2 * qd + 2 * kd + longest));
  if (buf == NULL) return 3;
  float *x = buf, *y = x + (size_t)N * E, *q = y + (size_t)N * E, *o = q + qd, *k = o + qd, *v = k + kd;
  float *g = v + kd, *u = g + (size_t)N * I, *p = u + (size_t)N * I;
  for (int r = 0, at = 0; r < rows; at += n[r], r++)
    for (int i = 0; i < n[r]; i++) memcpy(x + (size_t)(at + i) * E, m->embed + (size_t)tok[r][i] * E, sizeof(float) * E);
  int rc = 0;
  for (int l = 0; l < m->layers && rc == 0; l++) {
    const struct nat_layer *L = &m->layer[l];
    rms_norm(x, L->norm1, L->eps1, N, E, y);
    if ((rc = project(m, y, N, E, L->q, L->bq, H * D, q, threads)) || (rc = project(m, y, N, E, L->k, L->bk, G * D, k, threads)) ||
        (rc = project(m, y, N, E, L->v, L->bv, G * D, v, threads)))
      break;
    for (int r = 0, at = 0; r < rows; at += n[r], r++) {
      float *K = kc[r] + (size_t)l * G * cap[r] * D, *V = vc[r] + (size_t)l * G * cap[r] * D;
      for (int i = 0; i < n[r]; i++) {
        size_t row = (size_t)at + i;
        const float *c = cos + (size_t)(offset[r] + i) * h2, *s = sin + (size_t)(offset[r] + i) * h2;
        rope(q + row * H * D, H, D, c, s);
        rope(k + row * G * D, G, D, c, s);
        for (size_t j = 0; j < (size_t)H * D; j++) q[row * H * D + j] *= m->scale;
        for (int gg = 0; gg < G; gg++) {
          memcpy(K + ((size_t)gg * cap[r] + offset[r] + i) * D, k + (row * G + gg) * D, sizeof(float) * D);
          memcpy(V + ((size_t)gg * cap[r] + offset[r] + i) * D, v + (row * G + gg) * D, sizeof(float) * D);
        }
      }
      attend(m, q + (size_t)at * H * D, K, V, cap[r], n[r], offset[r], p, o + (size_t)at * H * D);
    }
    if ((rc = product(m, N, E, H * D, o, H * D, L->o, 1.0f, x, E, threads))) break; /* x += o @ Wo.T */
    rms_norm(x, L->norm2, L->eps2, N, E, y);
    if ((rc = project(m, y, N, E, L->gate, NULL, I, g, threads)) || (rc = project(m, y, N, E, L->up, NULL, I, u, threads)))
      break;
    for (size_t j = 0; j < (size_t)N * I; j++) g[j] = g[j] / (1.0f + expf(-g[j])) * u[j]; /* SwiGLU */
    rc = product(m, N, E, I, g, I, L->down, 1.0f, x, E, threads); /* x += mlp @ Wdown.T */
  }
  if (rc == 0) {
    rms_norm(x, m->norm, m->eps, N, E, y);
    rc = product(m, N, m->vocab, E, y, E, m->head, 0.0f, logits, m->vocab, threads);
  }
  free(buf);
  return rc;
}

/* 0 when every matrix of `m` is registered with the compact kernel at its shape (a product of no rows). */
int tokconv_native_check(const struct nat_model *m) {
  int E = m->hidden, HD = m->heads * m->head_dim, GD = m->kv_heads * m->head_dim, I = m->inter;
  for (int l = 0; l < m->layers; l++) {
    const struct nat_layer *L = &m->layer[l];
    if (m->gemm(0, HD, E, NULL, E, L->q, 0, NULL, HD, 1) || m->gemm(0, GD, E, NULL, E, L->k, 0, NULL, GD, 1) ||
        m->gemm(0, GD, E, NULL, E, L->v, 0, NULL, GD, 1) || m->gemm(0, E, HD, NULL, HD, L->o, 0, NULL, E, 1) ||
        m->gemm(0, I, E, NULL, E, L->gate, 0, NULL, I, 1) || m->gemm(0, I, E, NULL, E, L->up, 0, NULL, I, 1) ||
        m->gemm(0, E, I, NULL, I, L->down, 0, NULL, E, 1))
      return 1;
  }
  return m->gemm(0, m->vocab, E, NULL, E, m->head, 0, NULL, m->vocab, 1);
}

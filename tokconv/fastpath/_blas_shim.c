/* Give libmlx the unprefixed CBLAS GEMMs it imports, forwarded to an OpenBLAS
 * build whose exports carry the scipy_ prefix (scipy-openblas32, or numpy's
 * bundled 64-bit-index build). Built once by tokconv/runtime.py:
 *   scipy-openblas32:  gcc -O2 -shared -fPIC _blas_shim.c LIB
 *   numpy's openblas:  ... -DBLASINT=long -DSUFFIX=64_
 * MLX passes 32-bit ints; with BLASINT=long the call widens them. */
#include <stddef.h>

#ifndef BLASINT
#define BLASINT int
#endif
#ifndef SUFFIX
#define SUFFIX
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define TARGET(name) CAT(scipy_##name, SUFFIX)

typedef BLASINT bi;

/* Compact weights (_compact.c) answer short products first where tokconv/fastpath/blas.py set this. */
typedef int (*hook_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                       int);
static hook_fn compact_hook;
void tokconv_set_compact_hook(void *fn) { compact_hook = (hook_fn)fn; }

void TARGET(cblas_sgemm)(int, int, int, bi, bi, bi, float, const float *, bi,
                         const float *, bi, float, float *, bi);
void TARGET(cblas_dgemm)(int, int, int, bi, bi, bi, double, const double *, bi,
                         const double *, bi, double, double *, bi);
void TARGET(cblas_cgemm)(int, int, int, bi, bi, bi, const void *, const void *,
                         bi, const void *, bi, const void *, void *, bi);

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta,
                 float *c, int ldc) {
  if (compact_hook != NULL && compact_hook(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  TARGET(cblas_sgemm)(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_dgemm(int order, int ta, int tb, int m, int n, int k, double alpha,
                 const double *a, int lda, const double *b, int ldb,
                 double beta, double *c, int ldc) {
  TARGET(cblas_dgemm)(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_cgemm(int order, int ta, int tb, int m, int n, int k,
                 const void *alpha, const void *a, int lda, const void *b,
                 int ldb, const void *beta, void *c, int ldc) {
  TARGET(cblas_cgemm)(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

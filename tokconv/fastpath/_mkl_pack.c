/* Pre-packed weights for MKL: libmlx's cblas_sgemm, answered from packed copies.
 *
 * MLX computes `x @ W.T` with cblas_sgemm(RowMajor, NoTrans, Trans, M, N, K, 1, x, K, W, K, 0,
 * out, N). For few rows (one sequence: M ~ 20) MKL spends most of such a call re-packing W into
 * its kernel's layout; cblas_sgemm_pack does that once per weight and cblas_sgemm_compute then
 * runs 1.3-1.5x faster at 4-64 rows and still 1.07-1.14x at 256-640 (not at 1 row, nor from ~2048 on,
 * hence the row limits). MLX has no hook for
 * this, so this library is loaded before MKL and exports cblas_sgemm itself: a call whose B is a
 * registered weight (same pointer, N, K, ldb, transposed, alpha 1) with at most `max_rows` rows
 * uses the pack; every other call goes to MKL's cblas_sgemm unchanged.
 * Built once by tokconv/runtime.py:  gcc -O2 -shared -fPIC _mkl_pack.c -ldl -lpthread
 * tokconv/packing.py registers a model's weights (keeping them alive) and removes them with it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, B_MATRIX = 162, PACKED = 151 };

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *,
                         int, float, float *, int);
typedef size_t (*size_fn)(int, int, int, int);
typedef void (*pack_fn)(int, int, int, int, int, int, float, const float *, int, float *);
typedef void (*compute_fn)(int, int, int, int, int, int, const float *, int, const float *, int,
                           float, float *, int);

static sgemm_fn real_sgemm;
static size_fn pack_size;
static pack_fn pack;
static compute_fn compute;

struct slot {
  const float *b;
  int n, k;
  float *packed;  /* inside an mmap of `bytes`: pages MKL never writes stay unbacked */
  size_t bytes;
};
#include "_weights_table.h"
static int max_rows = 1024;
static size_t packed_bytes;
static long long calls, hits; /* statistics for tests and benchmarks */

/* Compact weights (_compact.c) answer short products first where tokconv/fastpath/blas.py set this. */
typedef int (*hook_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                       int);
static hook_fn compact_hook;
void tokconv_set_compact_hook(void *fn) { compact_hook = (hook_fn)fn; }


/* `*bytes` of zeroed memory (rounded up to what was mapped), on 2 MB pages where `huge` and the
 * kernel allows (transparent huge pages in "madvise" mode are common): 1x20 scoring of SmolLM2
 * ran 7% faster with its big packs on 2 MB pages. Small weights stay on 4 kB pages, since MKL
 * scatters a pack over a reservation of 4-20x the weight's size and every touched page counts. */
#define HUGE ((size_t)2 << 20)
static void *map_pack(size_t *bytes, int huge) {
  size_t align = huge ? HUGE : 4096, len = (*bytes + align - 1) / align * align;
  char *raw = mmap(NULL, len + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char *start = (char *)(((uintptr_t)raw + align - 1) / align * align);
  if (start > raw) munmap(raw, start - raw); /* keep exactly [start, start + len) */
  if (start + len < raw + len + align) munmap(start + len, raw + len + align - (start + len));
  if (huge) madvise(start, len, MADV_HUGEPAGE);
  *bytes = len;
  return start;
}

/* Called once, after MKL is loaded: `mkl` is the path of libmkl_rt. 0 on success. */
int tokconv_pack_init(const char *mkl) {
  void *h = dlopen(mkl, RTLD_NOW | RTLD_NOLOAD);
  if (h == NULL) return 1;
  real_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
  pack_size = (size_fn)dlsym(h, "cblas_sgemm_pack_get_size");
  pack = (pack_fn)dlsym(h, "cblas_sgemm_pack");
  compute = (compute_fn)dlsym(h, "cblas_sgemm_compute");
  return real_sgemm && pack_size && pack && compute ? 0 : 2;
}

void tokconv_pack_set_max_rows(int rows) { max_rows = rows; }
int tokconv_pack_get_max_rows(void) { return max_rows; }

/* Pack the row-major n x k weight at `b` for products x @ b.T. 0 on success, -1 if already packed. */
int tokconv_pack_add(const float *b, int n, int k) {
  if (pack == NULL || b == NULL || b == TOMBSTONE) return 1;
  size_t bytes = pack_size(B_MATRIX, max_rows, n, k);
  void *mem = map_pack(&bytes, (size_t)n * k * sizeof(float) >= HUGE);
  if (mem == NULL) return 3;
  pack(ROW_MAJOR, B_MATRIX, TRANS, max_rows, n, k, 1.0f, b, k, (float *)mem);
  int rc = table_insert((struct slot){b, n, k, (float *)mem, bytes});
  if (rc != 0)
    munmap(mem, bytes);
  else
    __atomic_add_fetch(&packed_bytes, bytes, __ATOMIC_RELAXED);
  return rc;
}

/* Forget the pack of `b` (call before `b`'s memory can be freed). 0 if it was there. */
int tokconv_pack_remove(const float *b) {
  struct slot gone = table_remove(b);
  if (gone.b == NULL) return 1;
  __atomic_sub_fetch(&packed_bytes, gone.bytes, __ATOMIC_RELAXED);
  munmap(gone.packed, gone.bytes);
  return 0;
}

/* out: calls of cblas_sgemm, calls answered from a pack, bytes reserved for packs. */
void tokconv_pack_stats(long long *out) {
  out[0] = __atomic_load_n(&calls, __ATOMIC_RELAXED);
  out[1] = __atomic_load_n(&hits, __ATOMIC_RELAXED);
  out[2] = (long long)__atomic_load_n(&packed_bytes, __ATOMIC_RELAXED);
}

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc) {
  __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
  if (compact_hook != NULL && compact_hook(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  /* one row: the pack ran 0.86-0.93x the plain call (bench/results/pack-curve.log) */
  if (order == ROW_MAJOR && tb == TRANS && alpha == 1.0f && m >= 2 && m <= max_rows && ldb == k &&
      compute != NULL) {
    pthread_rwlock_rdlock(&table_lock);
    struct slot *s = find(b);
    if (s != NULL && s->n == n && s->k == k) {
      /* the read lock stays held so that a concurrent remove cannot unmap the pack mid-call */
      compute(ROW_MAJOR, ta, PACKED, m, n, k, a, lda, s->packed, ldb, beta, c, ldc);
      pthread_rwlock_unlock(&table_lock);
      __atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
      return;
    }
    pthread_rwlock_unlock(&table_lock);
  }
  if (real_sgemm == NULL) real_sgemm = (sgemm_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
  if (real_sgemm == NULL) {
    fputs("tokconv: _mkl_pack was loaded without MKL behind it; load MKL's libmkl_rt instead\n", stderr);
    abort();
  }
  real_sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

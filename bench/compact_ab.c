/* A/B of compact kernel builds, per product, in one process (BENCHMARKS.md, 2026-12-02).
 *
 * Each library is a build of tokconv/fastpath/_compact.c (say, of two commits), loaded with dlopen
 * so that they take turns on the same matrix and inputs: the machines are too noisy to compare
 * numbers from separate runs.
 *
 *   cp tokconv/fastpath/_weights_table.h /tmp/ab/ && git show OLD:tokconv/fastpath/_compact.c > /tmp/ab/old.c
 *   gcc -O3 -march=native -shared -fPIC -o /tmp/ab/old.so /tmp/ab/old.c -lpthread
 *   gcc -O3 -march=native -shared -fPIC -o /tmp/ab/new.so tokconv/fastpath/_compact.c -lpthread
 *   gcc -O2 bench/compact_ab.c -o /tmp/ab/ab -ldl
 *   for m in 1 2 6 9 12 20; do /tmp/ab/ab 4864 896 $m 1 /tmp/ab/old.so /tmp/ab/new.so; done
 *
 * Arguments: n k rows threads library... Prints min and median microseconds per library. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef int (*add_t)(const float *, int, int);
typedef int (*gemm_t)(int, int, int, const float *, int, const float *, float, float *, int, int);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc, char **argv){
  int n = atoi(argv[1]), k = atoi(argv[2]), m = atoi(argv[3]), th = atoi(argv[4]), nl = argc - 5;
  float *w = aligned_alloc(64, sizeof(float) * n * k);
  srand(1);
  for (long i = 0; i < (long)n * k; i++) w[i] = (float)(rand() % 256) * 0.0078125f * (1 + (i / 16) % 7);
  float *x = malloc(sizeof(float) * m * k), *c = malloc(sizeof(float) * m * n);
  for (int i = 0; i < m * k; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
  gemm_t g[16]; 
  for (int l = 0; l < nl; l++) { void *h = dlopen(argv[5 + l], RTLD_NOW | RTLD_LOCAL); if(!h){printf("%s\n",dlerror());return 1;}
    add_t a = (add_t)dlsym(h, "tokconv_compact_add"); g[l] = (gemm_t)dlsym(h, "tokconv_compact_gemm"); if (a(w, n, k)) return 2; }
  enum { REPS = 25 }; double t[16][REPS];
  for (int rep = 0; rep < REPS; rep++) for (int l = 0; l < nl; l++) { double t0 = now(); for (int i=0;i<3;i++) g[l](m, n, k, x, k, w, 0, c, n, th); t[l][rep] = (now() - t0)/3; }
  for (int l = 0; l < nl; l++) { qsort(t[l], REPS, sizeof(double), cmp);
    printf("%-12s m=%2d th=%d: min %6.0f med %6.0f us  %.1f G MAC/s (med)\n", argv[5+l], m, th, t[l][0]*1e6, t[l][REPS/2]*1e6, (double)m*n*k/t[l][REPS/2]/1e9); }
}

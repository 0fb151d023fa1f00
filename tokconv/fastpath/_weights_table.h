/* A table of registered weights, keyed by the address libmlx hands to cblas_sgemm: open
 * addressing with tombstones, guarded by a read-write lock (products hold the read lock while they
 * use an entry, so a removal cannot free it mid-product). Shared by _mkl_pack.c and _compact.c;
 * the including file defines `struct slot`, whose first member is `const float *b`.
 * tokconv/fastpath/build.py puts this file's text into the build cache key of its includers. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define SLOTS 16384
#define TOMBSTONE ((const float *)1)
static struct slot table[SLOTS];
static pthread_rwlock_t table_lock = PTHREAD_RWLOCK_INITIALIZER;

static size_t home(const float *b) { return ((uintptr_t)b >> 6) * 0x9E3779B97F4A7C15ull % SLOTS; }

/* The entry of `b`, or NULL; call with the lock held. */
static struct slot *find(const float *b) {
  for (size_t i = home(b), n = 0; n < SLOTS; i = (i + 1) % SLOTS, n++) {
    if (table[i].b == b) return &table[i];
    if (table[i].b == NULL) return NULL;
  }
  return NULL;
}

/* Add `entry`: 0 on success, -1 when its address is already there, 4 when the table is full. */
static int table_insert(struct slot entry) {
  int rc = 0;
  pthread_rwlock_wrlock(&table_lock);
  if (find(entry.b) != NULL) {
    rc = -1;
  } else {
    size_t i = home(entry.b), seen = 0;
    while (table[i].b != NULL && table[i].b != TOMBSTONE && seen++ < SLOTS) i = (i + 1) % SLOTS;
    if (seen >= SLOTS)
      rc = 4;
    else
      table[i] = entry;
  }
  pthread_rwlock_unlock(&table_lock);
  return rc;
}

/* Take the entry of `b` out (its slot becomes a tombstone); the returned copy has b == NULL when
 * there was none. Free what it holds only after this returns. */
static struct slot table_remove(const float *b) {
  struct slot gone = {0};
  pthread_rwlock_wrlock(&table_lock);
  struct slot *s = find(b);
  if (s != NULL) {
    gone = *s;
    *s = (struct slot){0};
    s->b = TOMBSTONE;
  }
  pthread_rwlock_unlock(&table_lock);
  return gone;
}

// Counts the heap allocations of a whole process (malloc, calloc, realloc, posix_memalign,
// aligned_alloc) and prints the count to stderr at exit: how BENCHMARKS.md counts allocations per
// call of the `callpath` runner (the difference of a short and a long run, over the difference of
// their calls, so that start-up and the runner's own allocations cancel out).
//
//   cc -O2 -shared -fPIC -o /tmp/malloc-count.so Benchmarks/scripts/malloc-count.c -ldl
//   LD_PRELOAD=/tmp/malloc-count.so .build/release/callpath --what retry --threads 1 --seconds 0.5 --rounds 1
//
// Linux (glibc) only: it forwards to glibc's own allocator entry points.
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_ulong allocations;

void *malloc(size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_realloc(pointer, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL) return 12; // ENOMEM
    *result = pointer;
    return 0;
}

void *aligned_alloc(size_t alignment, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_memalign(alignment, size);
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "malloc-count: %lu allocations\n", atomic_load(&allocations));
}

/*
 * Worker pool for the CPU backend: N threads, the caller counted as one,
 * that run one parallel-for at a time and meet at a barrier when it ends.
 */
#ifndef TAPHOUSE_CPU_POOL_H
#define TAPHOUSE_CPU_POOL_H

#include <stdint.h>

struct cpu_pool;

/* Work item: called once per thread with ITH in 0 .. NTH - 1. */
typedef void (*cpu_pool_fn)(void *arg, int ith, int nth);

/* Start a pool of N_THREADS (at least 1); returns NULL on failure. */
struct cpu_pool *cpu_pool_new(int n_threads);
void cpu_pool_free(struct cpu_pool *pool);
int cpu_pool_size(const struct cpu_pool *pool);

/*
 * Run FN(ARG, ith, nth) on every thread of the pool, the caller
 * included, and return when all calls have finished. NTH is the pool
 * size. Not reentrant: one caller at a time.
 */
void cpu_pool_run(struct cpu_pool *pool, cpu_pool_fn fn, void *arg);

/* Split N items into NTH near-equal ranges; store range ITH's bounds. */
void cpu_pool_range(int64_t n, int ith, int nth, int64_t *begin,
                    int64_t *end);

#endif

/*
 * Worker pool with a generation counter. The caller publishes a job by
 * bumping the generation. Workers spin on it briefly, because the
 * operations of one forward pass follow each other within microseconds.
 * Then they sleep on a condition variable, so an idle server burns no
 * CPU.
 * The caller waits for a pending counter to drop to zero.
 */
#include "engine/cpu/cpu_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spins before a worker falls back to sleeping; about 100 us on x86. */
#define POOL_SPIN_LIMIT 20000

struct cpu_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_uint generation;
    atomic_int pending;
    atomic_int stop;
    cpu_pool_fn fn;
    void *arg;
};

struct worker_arg {
    struct cpu_pool *pool;
    int ith;
};

/* Wait until the generation differs from SEEN; return the new value. */
static unsigned wait_for_job(struct cpu_pool *pool, unsigned seen)
{
    unsigned gen;

    for (int i = 0; i < POOL_SPIN_LIMIT; i++) {
        gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (gen != seen)
            return gen;
        cpu_relax();
    }
    pthread_mutex_lock(&pool->lock);
    while ((gen = atomic_load(&pool->generation)) == seen)
        pthread_cond_wait(&pool->wake, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
    return gen;
}

static void *worker_main(void *p)
{
    struct worker_arg wa = *(struct worker_arg *)p;
    struct cpu_pool *pool = wa.pool;
    unsigned seen = 0;

    free(p);
    for (;;) {
        seen = wait_for_job(pool, seen);
        if (atomic_load(&pool->stop))
            break;
        pool->fn(pool->arg, wa.ith, pool->n_threads);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
    }
    return NULL;
}

struct cpu_pool *cpu_pool_new(int n_threads)
{
    struct cpu_pool *pool = calloc(1, sizeof(*pool));

    if (!pool)
        return NULL;
    if (n_threads < 1)
        n_threads = 1;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!pool->threads)
        goto fail;
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof(*wa));
        if (!wa)
            goto fail;
        wa->pool = pool;
        wa->ith = i;
        if (pthread_create(&pool->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            goto fail;
        }
    }
    return pool;

fail:
    /* Threads started so far are stopped and joined by cpu_pool_free. */
    cpu_pool_free(pool);
    return NULL;
}

void cpu_pool_free(struct cpu_pool *pool)
{
    if (!pool)
        return;
    atomic_store(&pool->stop, 1);
    pthread_mutex_lock(&pool->lock);
    atomic_fetch_add(&pool->generation, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; pool->threads && i < pool->n_threads; i++)
        if (pool->threads[i])
            pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool);
}

int cpu_pool_size(const struct cpu_pool *pool)
{
    return pool->n_threads;
}

void cpu_pool_run(struct cpu_pool *pool, cpu_pool_fn fn, void *arg)
{
    if (pool->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store(&pool->pending, pool->n_threads - 1);

    /* The lock orders the bump against a worker about to sleep. */
    pthread_mutex_lock(&pool->lock);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    fn(arg, 0, pool->n_threads);

    /*
     * Spin while the workers are likely still running, then yield: on a
     * machine with more runnable threads than cores, a worker may be
     * waiting for the very core this loop would otherwise burn.
     */
    for (int i = 0;
         atomic_load_explicit(&pool->pending, memory_order_acquire) > 0;
         i++) {
        if (i < POOL_SPIN_LIMIT)
            cpu_relax();
        else
            sched_yield();
    }
}

void cpu_pool_range(int64_t n, int ith, int nth, int64_t *begin,
                    int64_t *end)
{
    int64_t per = n / nth, extra = n % nth;

    *begin = ith * per + (ith < extra ? ith : extra);
    *end = *begin + per + (ith < extra ? 1 : 0);
}

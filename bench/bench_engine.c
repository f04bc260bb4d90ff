/*
 * bench_engine: measures the engine's forward pass the way llama.cpp's
 * llama-bench does, so the two can be run side by side on one GGUF file.
 *
 *   pp<P>: one eng_model_step over a prompt of P random tokens, starting
 *          from an empty KV cache.
 *   tg<N>: N single-token steps, starting from an empty KV cache.
 *
 * Each test runs once untimed as a warm-up, then -r times; the median
 * speed is reported in tokens per second. Output is one line per test of
 * space-separated key=value pairs, then a line with the peak resident set
 * size of the process.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "engine/eng_model.h"

#define MAX_REPS 100

struct bench_args {
    const char *model;
    int threads, n_prompt, n_gen, reps;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Sorts V in place and returns its median. */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* Fills TOKENS with ids in [3, n_vocab), skipping the control tokens. */
static void fill_tokens(int32_t *tokens, int n, int n_vocab, uint64_t *s)
{
    for (int i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = 3 + (int32_t)((*s >> 33) % (uint64_t)(n_vocab - 3));
    }
}

/* Time one N-token step on a cleared cache. Returns seconds, or -1. */
static double run_pp(struct eng_model *m, struct eng_kv *kv,
                     const int32_t *tokens, int n, float *logits)
{
    struct eng_seq_batch b = { .kv = kv, .tokens = tokens, .n_tokens = n,
                               .logits = logits };

    eng_kv_clear(kv);
    double t0 = now_s();
    if (eng_model_step(m, &b, 1) < 0)
        return -1.0;
    return now_s() - t0;
}

/* Time N one-token steps on a cleared cache. Returns seconds, or -1. */
static double run_tg(struct eng_model *m, struct eng_kv *kv,
                     const int32_t *tokens, int n, float *logits)
{
    eng_kv_clear(kv);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        struct eng_seq_batch b = { .kv = kv, .tokens = &tokens[i],
                                   .n_tokens = 1, .logits = logits };
        if (eng_model_step(m, &b, 1) < 0)
            return -1.0;
    }
    return now_s() - t0;
}

/*
 * Run one test: a warm-up, then REPS timed runs. Prints the result line
 * and returns 0, or returns -1 when a step fails.
 */
static int bench_test(struct eng_model *m, struct eng_kv *kv,
                      const struct bench_args *a, int is_pp,
                      const int32_t *tokens, float *logits)
{
    int n = is_pp ? a->n_prompt : a->n_gen;
    double tps[MAX_REPS] = { 0 };

    for (int r = -1; r < a->reps; r++) {
        double t = is_pp ? run_pp(m, kv, tokens, n, logits)
                         : run_tg(m, kv, tokens, n, logits);
        if (t < 0) {
            fprintf(stderr, "bench_engine: %s%d: eng_model_step failed\n",
                    is_pp ? "pp" : "tg", n);
            return -1;
        }
        if (r >= 0)
            tps[r] = (double)n / t;
    }

    double mid = median(tps, a->reps);     /* sorts tps */
    printf("test=%s%d threads=%d reps=%d median_tps=%.2f min_tps=%.2f "
           "max_tps=%.2f\n", is_pp ? "pp" : "tg", n, a->threads, a->reps,
           mid, tps[0], tps[a->reps - 1]);
    fflush(stdout);
    return 0;
}

static void usage(FILE *fp)
{
    fprintf(fp,
        "usage: bench_engine -m MODEL [options]\n"
        "  -m FILE    GGUF model to load\n"
        "  -t N       worker threads (default 0: the number of online "
        "cores)\n"
        "  -p N       prompt tokens in the pp test, 0 to skip "
        "(default 512)\n"
        "  -n N       generated tokens in the tg test, 0 to skip "
        "(default 128)\n"
        "  -r N       timed repetitions per test, 1 to %d (default 3)\n",
        MAX_REPS);
}

static int parse_int(const char *opt, const char *s, int min, int max,
                     int *out)
{
    char *end;

    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min || v > max) {
        fprintf(stderr, "bench_engine: invalid value '%s' for %s: expected "
                "an integer from %d to %d\n", s, opt, min, max);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct bench_args *a)
{
    *a = (struct bench_args){ .n_prompt = 512, .n_gen = 128, .reps = 3 };

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_engine: missing value for %s\n", o);
            return -1;
        }
        const char *v = argv[++i];
        int rc;
        if (strcmp(o, "-m") == 0) {
            a->model = v;
            rc = 0;
        } else if (strcmp(o, "-t") == 0) {
            rc = parse_int(o, v, 0, 1024, &a->threads);
        } else if (strcmp(o, "-p") == 0) {
            rc = parse_int(o, v, 0, 1 << 20, &a->n_prompt);
        } else if (strcmp(o, "-n") == 0) {
            rc = parse_int(o, v, 0, 1 << 20, &a->n_gen);
        } else if (strcmp(o, "-r") == 0) {
            rc = parse_int(o, v, 1, MAX_REPS, &a->reps);
        } else {
            fprintf(stderr, "bench_engine: unknown option %s\n", o);
            usage(stderr);
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (!a->model) {
        fprintf(stderr, "bench_engine: -m MODEL is required\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_args a;
    struct eng_model *m = NULL;
    struct eng_kv *kv = NULL;
    int32_t *tokens = NULL;
    float *logits = NULL;
    char err[512];
    int rc = 1;

    if (parse_args(argc, argv, &a) < 0)
        return 2;

    double t0 = now_s();
    if (eng_model_load(a.model, a.threads, &m, err, sizeof err) < 0) {
        fprintf(stderr, "bench_engine: %s\n", err);
        return 1;
    }
    const struct eng_model_info *info = eng_model_info(m);
    printf("model=%s n_embd=%d n_layer=%d n_vocab=%d load_s=%.3f\n",
           a.model, info->n_embd, info->n_layer, info->n_vocab,
           now_s() - t0);

    /* The larger test sets the cache size, and tg uses a token prefix. */
    int n_max = a.n_prompt > a.n_gen ? a.n_prompt : a.n_gen;
    uint64_t seed = 1;
    kv = eng_kv_new(m, n_max > 0 ? n_max : 1);
    tokens = malloc((size_t)(n_max > 0 ? n_max : 1) * sizeof *tokens);
    logits = malloc((size_t)info->n_vocab * sizeof *logits);
    if (!kv || !tokens || !logits) {
        fprintf(stderr, "bench_engine: out of memory for a cache of %d "
                "positions\n", n_max);
        goto out;
    }
    fill_tokens(tokens, n_max, info->n_vocab, &seed);

    if (a.n_prompt > 0 && bench_test(m, kv, &a, 1, tokens, logits) < 0)
        goto out;
    if (a.n_gen > 0 && bench_test(m, kv, &a, 0, tokens, logits) < 0)
        goto out;

    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        printf("peak_rss_mib=%.1f\n", (double)ru.ru_maxrss / 1024.0);
    rc = 0;

out:
    free(logits);
    free(tokens);
    eng_kv_free(kv);
    eng_model_free(m);
    return rc;
}

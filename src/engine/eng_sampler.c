/*
 * Token sampler. Each call adjusts the logits in this order: logit bias,
 * presence and frequency penalties (both also in greedy mode), then
 * either greedy argmax (temperature 0) or temperature, top-k, softmax,
 * top-p and a draw from a seeded xoshiro256** generator. The generator is
 * our own, so a seed gives the same tokens from run to run; another libm
 * could round exp() differently and change a draw near a boundary.
 */
#include "engine/eng_sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct candidate {
    int32_t id;
    float logit;
};

struct eng_sampler {
    struct eng_sampler_params p;
    struct eng_logit_bias *bias;   /* owned copy of p.bias */
    int n_vocab;
    int *counts;                   /* accepted tokens per id */
    struct candidate *cand;        /* scratch, n_vocab entries */
    uint64_t rng[4];               /* xoshiro256** state */
};

/* splitmix64 step; expands the 64-bit seed into the generator state. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna, 2018). */
static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform double in [0, 1) from the top 53 bits. */
static double rng_uniform(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

struct eng_sampler *eng_sampler_new(const struct eng_sampler_params *p,
                                    int n_vocab)
{
    struct eng_sampler *s;
    uint64_t x;

    if (!p || n_vocab <= 0 || p->n_bias < 0 || (p->n_bias > 0 && !p->bias))
        return NULL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->counts = calloc((size_t)n_vocab, sizeof(*s->counts));
    s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
    if (!s->counts || !s->cand)
        goto fail;
    if (p->n_bias > 0) {
        s->bias = malloc((size_t)p->n_bias * sizeof(*s->bias));
        if (!s->bias)
            goto fail;
        memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof(*s->bias));
    }
    s->p.bias = s->bias;

    x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    return s;

fail:
    eng_sampler_free(s);
    return NULL;
}

void eng_sampler_free(struct eng_sampler *s)
{
    if (!s)
        return;
    free(s->bias);
    free(s->cand);
    free(s->counts);
    free(s);
}

void eng_sampler_accept(struct eng_sampler *s, int32_t id)
{
    if (s && id >= 0 && id < s->n_vocab && s->counts[id] < INT32_MAX)
        s->counts[id]++;
}

/* True when A ranks before B: higher logit, then lower id. NaN ranks
 * last so a broken logit is never chosen over a real one. */
static int ranks_before(const struct candidate *a, const struct candidate *b)
{
    if (isnan(a->logit))
        return 0;
    if (isnan(b->logit))
        return 1;
    if (a->logit != b->logit)
        return a->logit > b->logit;
    return a->id < b->id;
}

static int cmp_candidate(const void *pa, const void *pb)
{
    const struct candidate *a = pa, *b = pb;

    if (ranks_before(a, b))
        return -1;
    if (ranks_before(b, a))
        return 1;
    return 0;
}

static int32_t argmax(const float *logits, int n)
{
    struct candidate best = { 0, logits[0] };

    for (int i = 1; i < n; i++) {
        struct candidate c = { i, logits[i] };

        if (ranks_before(&c, &best))
            best = c;
    }
    return best.id;
}

/* Apply logit bias and the OpenAI penalties:
 * logit -= count * frequency_penalty + (count > 0) * presence_penalty. */
static void adjust_logits(const struct eng_sampler *s, float *logits)
{
    for (int i = 0; i < s->p.n_bias; i++) {
        int32_t id = s->bias[i].id;

        if (id >= 0 && id < s->n_vocab)
            logits[id] += s->bias[i].bias;
    }
    if (s->p.presence_penalty == 0.0f && s->p.frequency_penalty == 0.0f)
        return;
    for (int i = 0; i < s->n_vocab; i++) {
        int c = s->counts[i];

        if (c > 0)
            logits[i] -= (float)c * s->p.frequency_penalty +
                         s->p.presence_penalty;
    }
}

/* Sift-down for a min-heap ordered so that the worst candidate sits at
 * the root; used to keep the K best in O(n log k). */
static void heap_sift_down(struct candidate *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        struct candidate tmp;

        if (l < n && ranks_before(&h[w], &h[l]))
            w = l;
        if (r < n && ranks_before(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        tmp = h[i];
        h[i] = h[w];
        h[w] = tmp;
        i = w;
    }
}

/* Fill s->cand with the K best logits, sorted best first. Returns K. */
static int select_top_k(struct eng_sampler *s, const float *logits, int k)
{
    struct candidate *h = s->cand;

    for (int i = 0; i < k; i++) {
        h[i].id = i;
        h[i].logit = logits[i];
    }
    for (int i = k / 2 - 1; i >= 0; i--)
        heap_sift_down(h, k, i);
    for (int i = k; i < s->n_vocab; i++) {
        struct candidate c = { i, logits[i] };

        if (ranks_before(&c, &h[0])) {
            h[0] = c;
            heap_sift_down(h, k, 0);
        }
    }
    qsort(h, (size_t)k, sizeof(*h), cmp_candidate);
    return k;
}

int32_t eng_sampler_sample(struct eng_sampler *s, float *logits)
{
    struct candidate *c = s->cand;
    int n = s->n_vocab;
    float inv_t;
    double max, total, cum, u;
    int sorted = 0;

    adjust_logits(s, logits);
    if (!(s->p.temperature > 0.0f))
        return argmax(logits, n);

    /* Temperature, then the candidate set (top-k keeps the K best). */
    inv_t = 1.0f / s->p.temperature;
    for (int i = 0; i < n; i++)
        logits[i] *= inv_t;
    if (s->p.top_k > 0 && s->p.top_k < n) {
        n = select_top_k(s, logits, s->p.top_k);
        sorted = 1;
    } else {
        for (int i = 0; i < n; i++) {
            c[i].id = i;
            c[i].logit = logits[i];
        }
    }
    if (s->p.top_p < 1.0f && !sorted) {
        qsort(c, (size_t)n, sizeof(*c), cmp_candidate);
        sorted = 1;
    }

    /* Softmax, subtracting the max so exp never overflows. A candidate
     * set with no finite logit falls back to the greedy choice. */
    max = -INFINITY;
    for (int i = 0; i < n; i++)
        if (c[i].logit > max)
            max = c[i].logit;
    if (!isfinite(max))
        return argmax(logits, s->n_vocab);
    total = 0.0;
    for (int i = 0; i < n; i++) {
        double e = isnan(c[i].logit) ? 0.0 : exp(c[i].logit - max);

        c[i].logit = (float)e;
        total += c[i].logit;
    }

    /* Top-p: keep the shortest sorted prefix whose mass reaches top_p,
     * and always at least the best token, so top_p <= 0 is greedy. */
    if (s->p.top_p < 1.0f) {
        double keep = s->p.top_p * total;
        int m = 0;

        cum = 0.0;
        while (m < n) {
            cum += c[m].logit;
            m++;
            if (cum >= keep)
                break;
        }
        n = m;
        total = cum;
    }

    /* Draw. */
    u = rng_uniform(s->rng) * total;
    cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += c[i].logit;
        if (u < cum)
            return c[i].id;
    }
    /* Rounding can leave u just above the sum; take the last token that
     * has any mass. */
    for (int i = n - 1; i > 0; i--)
        if (c[i].logit > 0.0f)
            return c[i].id;
    return c[0].id;
}

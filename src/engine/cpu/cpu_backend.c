/*
 * CPU implementation of the backend interface (eng_backend.h). Buffers
 * are host memory; weights mapped from a GGUF file are used in place.
 * matmul, attention and large swiglu calls are split across a worker
 * pool; the other element-wise operations run on the calling thread.
 * Q8_0 and Q4_0 matmuls use the tiled kernels of cpu_gemm.c where the
 * build has AVX-512 VNNI, else cpu_vec_dot for each (row, token).
 *
 * Numerics follow ggml's CPU backend where it is cheap to do so.
 * Activations are converted to F16 or quantized to Q8_0 before a dot
 * product with F16 or quantized weights. With an F16 KV cache, the
 * query and the softmax weights are rounded to F16 too.
 */
#include "engine/eng_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/cpu/cpu_gemm.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/cpu/cpu_pool.h"

/* Below this many multiply-adds a matmul stays on one thread, because
 * waking the pool costs more than it saves. */
#define CPU_PARALLEL_MIN_WORK 32768
/* Fewer tokens than this are converted for a matmul on the calling
 * thread: one token's row takes well under a pool wake-up. */
#define CPU_PARALLEL_MIN_TOKENS 4
/* Values from which swiglu is split over the pool. */
#define CPU_PARALLEL_MIN_SWIGLU 16384
/* Largest n_rot cpu_rope accepts (it keeps one token's angles). */
#define CPU_ROPE_MAX_ROT 1024

struct eng_buf {
    uint8_t *data;
    size_t size;
    int owned;
};

struct cpu_backend {
    struct eng_backend base;
    struct cpu_pool *pool;
    int n_threads;
    uint8_t *act;            /* converted activations for matmul */
    size_t act_size;
    float *att;              /* per-thread attention scratch */
    size_t att_per_thread;   /* floats */
};

static struct cpu_backend *cpu(struct eng_backend *be)
{
    return (struct cpu_backend *)be;
}

static void *tensor_data(const struct eng_tensor *t)
{
    return t->buf->data + t->offset;
}

static size_t row_bytes(const struct eng_tensor *t)
{
    return ggml_row_size(t->type, (uint64_t)t->ne0);
}

/* Grow *BUF to at least N bytes; returns 0 or -1 when out of memory. */
static int grow(void **buf, size_t *size, size_t n)
{
    void *p;

    if (n <= *size)
        return 0;
    p = realloc(*buf, n);
    if (!p)
        return -1;
    *buf = p;
    *size = n;
    return 0;
}

static int cpu_supports_type(struct eng_backend *be, enum ggml_type type)
{
    (void)be;
    return ggml_row_size(type, CPU_QK) != 0;
}

static struct eng_buf *cpu_buf_alloc(struct eng_backend *be, size_t nbytes)
{
    struct eng_buf *b = calloc(1, sizeof(*b));

    (void)be;
    if (!b)
        return NULL;
    /* 64-byte alignment keeps SIMD loads within cache lines. */
    size_t rounded = (nbytes + 63) / 64 * 64;
    b->data = aligned_alloc(64, rounded ? rounded : 64);
    if (!b->data) {
        free(b);
        return NULL;
    }
    memset(b->data, 0, rounded ? rounded : 64);
    b->size = nbytes;
    b->owned = 1;
    return b;
}

static struct eng_buf *cpu_buf_from_host(struct eng_backend *be,
                                         const void *host, size_t nbytes)
{
    struct eng_buf *b = calloc(1, sizeof(*b));

    (void)be;
    if (!b)
        return NULL;
    /* Used in place and never written through: weights stay read-only. */
    b->data = (uint8_t *)host;
    b->size = nbytes;
    return b;
}

static void cpu_buf_free(struct eng_backend *be, struct eng_buf *buf)
{
    (void)be;
    if (!buf)
        return;
    if (buf->owned)
        free(buf->data);
    free(buf);
}

static int cpu_buf_upload(struct eng_backend *be, struct eng_buf *buf,
                          size_t offset, const void *src, size_t nbytes)
{
    (void)be;
    if (!buf->owned || offset > buf->size || nbytes > buf->size - offset)
        return -1;
    memcpy(buf->data + offset, src, nbytes);
    return 0;
}

static int cpu_buf_download(struct eng_backend *be, struct eng_buf *buf,
                            size_t offset, void *dst, size_t nbytes)
{
    (void)be;
    if (offset > buf->size || nbytes > buf->size - offset)
        return -1;
    memcpy(dst, buf->data + offset, nbytes);
    return 0;
}

static int cpu_get_rows(struct eng_backend *be, const struct eng_tensor *dst,
                        const struct eng_tensor *w, const int32_t *ids,
                        int n)
{
    const uint8_t *wd = tensor_data(w);
    float *out = tensor_data(dst);
    size_t rb = row_bytes(w);

    (void)be;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= w->ne1)
            return -1;
        cpu_dequantize_row(w->type, wd + (size_t)ids[i] * rb,
                           out + (size_t)i * w->ne0, w->ne0);
    }
    return 0;
}

/* Weight matrices one matmul job may run; matmul_multi splits more. */
#define CPU_MATMUL_MAX 4

struct matmul_job {
    int n_mats;
    enum ggml_type w_type;            /* shared by every matrix */
    size_t w_row_bytes;
    int64_t ne0;
    const uint8_t *w[CPU_MATMUL_MAX];
    int64_t w_rows[CPU_MATMUL_MAX];
    float *dst[CPU_MATMUL_MAX];       /* (n_tokens, w_rows[i]) */
    const float *xf;          /* (n_tokens, ne0) F32 input */
    enum ggml_type x_type;    /* cpu_activation_type(w_type) */
    const uint8_t *x;         /* converted activations */
    size_t x_row_bytes;
    void *packed;             /* cpu_gemm activations, or NULL */
    int64_t n_tokens;
};

/* Convert or pack the activations of a range of tokens. */
static void convert_worker(void *arg, int ith, int nth)
{
    const struct matmul_job *j = arg;
    int64_t u0, u1;

    if (j->packed) {
        cpu_pool_range(cpu_gemm_pack_units(j->n_tokens), ith, nth, &u0, &u1);
        cpu_gemm_pack(j->w_type, j->xf, j->ne0, j->n_tokens, u0, u1,
                      j->packed);
        return;
    }
    cpu_pool_range(j->n_tokens, ith, nth, &u0, &u1);
    for (int64_t t = u0; t < u1; t++)
        cpu_convert_row(j->x_type, j->xf + t * j->ne0,
                        (uint8_t *)j->x + t * j->x_row_bytes, j->ne0);
}

/* Each thread takes a range of rows of every weight matrix and all
 * tokens, so a weight row is read from memory once per call. */
static void matmul_worker(void *arg, int ith, int nth)
{
    const struct matmul_job *j = arg;

    for (int m = 0; m < j->n_mats; m++) {
        int64_t r0, r1;

        cpu_pool_range(j->w_rows[m], ith, nth, &r0, &r1);
        if (j->packed) {
            if (r0 < r1)
                cpu_gemm_rows(j->w_type, j->w[m], j->w_row_bytes, j->ne0,
                              r0, r1, j->packed, j->n_tokens, j->dst[m],
                              j->w_rows[m]);
            continue;
        }
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *wr = j->w[m] + (size_t)r * j->w_row_bytes;
            for (int64_t t = 0; t < j->n_tokens; t++)
                j->dst[m][t * j->w_rows[m] + r] =
                    cpu_vec_dot(j->w_type, wr, j->x + t * j->x_row_bytes,
                                j->ne0);
        }
    }
}

/* Grow the 64-byte aligned activation scratch to N bytes; 0 or -1. */
static int grow_act(struct cpu_backend *c, size_t n)
{
    void *p;

    if (n <= c->act_size)
        return 0;
    n = (n + 63) / 64 * 64;
    p = aligned_alloc(64, n);
    if (!p)
        return -1;
    free(c->act);
    c->act = p;
    c->act_size = n;
    return 0;
}

/*
 * DST[i] = X times the transpose of W[i] for i < N (at most
 * CPU_MATMUL_MAX), for weights of one type and row length: X is
 * converted once and one dispatch computes every product.
 */
static int run_matmuls(struct cpu_backend *c, int n,
                       const struct eng_tensor *const *dst,
                       const struct eng_tensor *const *w,
                       const struct eng_tensor *x)
{
    enum ggml_type at = cpu_activation_type(w[0]->type);
    size_t xrb = ggml_row_size(at, (uint64_t)w[0]->ne0);
    size_t packed_size;
    struct matmul_job job;
    int64_t work = 0;

    memset(&job, 0, sizeof(job));
    for (int i = 0; i < n; i++) {
        if (w[i]->type != w[0]->type || w[i]->ne0 != w[0]->ne0 ||
            x->ne0 != w[i]->ne0 || dst[i]->ne0 != w[i]->ne1 ||
            dst[i]->ne1 != x->ne1 || xrb == 0)
            return -1;
        job.w[i] = tensor_data(w[i]);
        job.w_rows[i] = w[i]->ne1;
        job.dst[i] = tensor_data(dst[i]);
        work += w[i]->ne0 * w[i]->ne1 * x->ne1;
    }
    job.n_mats = n;
    job.w_type = w[0]->type;
    job.w_row_bytes = row_bytes(w[0]);
    job.ne0 = w[0]->ne0;
    job.xf = tensor_data(x);
    job.x_type = at;
    job.x_row_bytes = xrb;
    job.n_tokens = x->ne1;

    /* (n_tokens, ne0) F32 -> packed for cpu_gemm, or the activation
     * type; split over the pool when there are enough tokens to pay for
     * a wake-up. */
    packed_size = cpu_gemm_packed_size(job.w_type, job.ne0, x->ne1);
    if (packed_size > 0) {
        if (grow_act(c, packed_size) < 0)
            return -1;
        job.packed = c->act;
    } else if (at == GGML_TYPE_F32) {
        job.x = (const uint8_t *)job.xf;
    } else {
        if (grow_act(c, xrb * (size_t)x->ne1) < 0)
            return -1;
        job.x = c->act;
    }
    int parallel = work >= CPU_PARALLEL_MIN_WORK;
    if (at != GGML_TYPE_F32 || job.packed) {
        if (parallel && x->ne1 >= CPU_PARALLEL_MIN_TOKENS)
            cpu_pool_run(c->pool, convert_worker, &job);
        else
            convert_worker(&job, 0, 1);
    }

    if (parallel)
        cpu_pool_run(c->pool, matmul_worker, &job);
    else
        matmul_worker(&job, 0, 1);
    return 0;
}

static int cpu_matmul(struct eng_backend *be, const struct eng_tensor *dst,
                      const struct eng_tensor *w, const struct eng_tensor *x)
{
    return run_matmuls(cpu(be), 1, &dst, &w, x);
}

static int cpu_matmul_multi(struct eng_backend *be, int n,
                            const struct eng_tensor *const *dst,
                            const struct eng_tensor *const *w,
                            const struct eng_tensor *x)
{
    struct cpu_backend *c = cpu(be);
    int same = n <= CPU_MATMUL_MAX;

    if (n <= 0)
        return -1;
    for (int i = 1; i < n; i++)
        if (w[i]->type != w[0]->type || w[i]->ne0 != w[0]->ne0)
            same = 0;
    if (same)
        return run_matmuls(c, n, dst, w, x);
    /* Mixed types or many matrices: one product at a time. */
    for (int i = 0; i < n; i++)
        if (run_matmuls(c, 1, &dst[i], &w[i], x) < 0)
            return -1;
    return 0;
}

static int cpu_rmsnorm(struct eng_backend *be, const struct eng_tensor *dst,
                       const struct eng_tensor *x, const struct eng_tensor *w,
                       float eps)
{
    const float *xd = tensor_data(x), *wd = tensor_data(w);
    float *out = tensor_data(dst);
    int64_t n = x->ne0;

    (void)be;
    if (w->type != GGML_TYPE_F32 || w->ne0 != n || dst->ne0 != n)
        return -1;
    for (int64_t t = 0; t < x->ne1; t++) {
        const float *xr = xd + t * n;
        float *o = out + t * n;
        double sum = 0.0;

        for (int64_t i = 0; i < n; i++)
            sum += (double)(xr[i] * xr[i]);
        float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
        for (int64_t i = 0; i < n; i++)
            o[i] = (xr[i] * scale) * wd[i];
    }
    return 0;
}

static int cpu_rope(struct eng_backend *be, const struct eng_tensor *x,
                    const int32_t *pos, int n_head, int head_dim, int n_rot,
                    float base)
{
    float *xd = tensor_data(x);
    /* The angle step is applied by repeated multiplication, as ggml
     * does, so the angles round the same way. */
    float theta_scale = powf(base, -2.0f / (float)n_rot);
    float cs[CPU_ROPE_MAX_ROT / 2], sn[CPU_ROPE_MAX_ROT / 2];

    (void)be;
    if (x->ne0 != (int64_t)n_head * head_dim || n_rot > head_dim ||
        n_rot % 2 != 0 || n_rot > CPU_ROPE_MAX_ROT)
        return -1;
    for (int64_t t = 0; t < x->ne1; t++) {
        /* The angles depend on the position only: once for all heads. */
        float theta = (float)pos[t];
        for (int i = 0; i < n_rot / 2; i++) {
            cs[i] = cosf(theta);
            sn[i] = sinf(theta);
            theta *= theta_scale;
        }
        for (int h = 0; h < n_head; h++) {
            float *v = xd + t * x->ne0 + (int64_t)h * head_dim;

            for (int i = 0; i < n_rot; i += 2) {
                float x0 = v[i], x1 = v[i + 1];

                v[i] = x0 * cs[i / 2] - x1 * sn[i / 2];
                v[i + 1] = x0 * sn[i / 2] + x1 * cs[i / 2];
            }
        }
    }
    return 0;
}

static int cpu_copy_rows(struct eng_backend *be, const struct eng_tensor *dst,
                         const struct eng_tensor *src)
{
    const float *s = tensor_data(src);
    uint8_t *d = tensor_data(dst);
    size_t drb = row_bytes(dst);

    (void)be;
    if (src->type != GGML_TYPE_F32 || src->ne0 != dst->ne0 ||
        src->ne1 != dst->ne1 ||
        (dst->type != GGML_TYPE_F32 && dst->type != GGML_TYPE_F16))
        return -1;
    for (int64_t t = 0; t < src->ne1; t++)
        cpu_convert_row(dst->type, s + t * src->ne0, d + t * drb, src->ne0);
    return 0;
}

struct attn_job {
    struct cpu_backend *c;
    float *dst;
    const float *q;
    const uint8_t *k, *v;
    enum ggml_type kv_type;
    size_t kv_row_bytes;
    int64_t n_tokens;
    int n_past, n_head, group, head_dim, q_dim;
};

/* Softmax over the scores S[0..n) in place, sums in double as ggml. */
static void softmax(float *s, int n)
{
    float max = cpu_max_f32(s, n);

    for (int j = 0; j < n; j++)
        s[j] = expf(s[j] - max);
    cpu_scale_f32(s, (float)(1.0 / cpu_sum_f32_f64(s, n)), n);
}

/* One (token, head) pair: scores, softmax, weighted sum of values. */
static void attend_one(const struct attn_job *j, float *scores, int64_t t,
                       int h)
{
    const float *q = j->q + t * j->q_dim + (int64_t)h * j->head_dim;
    float *out = j->dst + t * j->q_dim + (int64_t)h * j->head_dim;
    size_t head_off = (size_t)(h / j->group) * (size_t)j->head_dim;
    int n_kv = j->n_past + (int)t + 1;
    float scale = 1.0f / sqrtf((float)j->head_dim);
    int f16 = j->kv_type == GGML_TYPE_F16;
    uint16_t *q16 = (uint16_t *)(scores + n_kv);

    if (f16) {
        cpu_convert_row(GGML_TYPE_F16, q, q16, j->head_dim);
        cpu_dot_f16_rows(scores, (const uint16_t *)j->k + head_off,
                         (int64_t)(j->kv_row_bytes / sizeof(uint16_t)),
                         n_kv, q16, j->head_dim);
        cpu_scale_f32(scores, scale, n_kv);
    } else {
        for (int p = 0; p < n_kv; p++) {
            const uint8_t *kr = j->k + (size_t)p * j->kv_row_bytes;
            scores[p] = cpu_dot_f32((const float *)kr + head_off, q,
                                    j->head_dim) * scale;
        }
    }
    softmax(scores, n_kv);

    if (f16) {
        /* The weights are rounded to F16, as ggml rounds them. */
        cpu_round_f16(scores, n_kv);
        cpu_weighted_sum_f16(out, scores, (const uint16_t *)j->v + head_off,
                             (int64_t)(j->kv_row_bytes / sizeof(uint16_t)),
                             n_kv, j->head_dim);
        return;
    }
    memset(out, 0, (size_t)j->head_dim * sizeof(float));
    for (int p = 0; p < n_kv; p++) {
        const float *vv = (const float *)(j->v + (size_t)p * j->kv_row_bytes)
                          + head_off;
        for (int d = 0; d < j->head_dim; d++)
            out[d] += scores[p] * vv[d];
    }
}

static void attn_worker(void *arg, int ith, int nth)
{
    const struct attn_job *j = arg;
    float *scores = j->c->att + (size_t)ith * j->c->att_per_thread;

    /* Every NTH-th (token, head) pair: with the causal mask later
     * tokens cost more, so contiguous ranges would be unbalanced. */
    for (int64_t i = ith; i < j->n_tokens * j->n_head; i += nth)
        attend_one(j, scores, i / j->n_head, (int)(i % j->n_head));
}

static int cpu_attention(struct eng_backend *be, const struct eng_tensor *dst,
                         const struct eng_tensor *q,
                         const struct eng_tensor *k_cache,
                         const struct eng_tensor *v_cache, int n_past,
                         int n_head, int n_head_kv, int head_dim)
{
    struct cpu_backend *c = cpu(be);
    struct attn_job job;
    int64_t n_ctx = k_cache->ne1;

    if (n_head_kv <= 0 || n_head % n_head_kv != 0 ||
        q->ne0 != (int64_t)n_head * head_dim || dst->ne0 != q->ne0 ||
        dst->ne1 != q->ne1 ||
        k_cache->ne0 != (int64_t)n_head_kv * head_dim ||
        k_cache->type != v_cache->type || k_cache->ne0 != v_cache->ne0 ||
        n_past + q->ne1 > n_ctx)
        return -1;

    /* Per thread: n_ctx scores, then head_dim halves for the query. */
    size_t per = (size_t)n_ctx + (size_t)head_dim;
    size_t have = c->att_per_thread * (size_t)c->n_threads * sizeof(float);
    if (per > c->att_per_thread) {
        if (grow((void **)&c->att, &have,
                 per * (size_t)c->n_threads * sizeof(float)) < 0)
            return -1;
        c->att_per_thread = per;
    }

    job.c = c;
    job.dst = tensor_data(dst);
    job.q = tensor_data(q);
    job.k = tensor_data(k_cache);
    job.v = tensor_data(v_cache);
    job.kv_type = k_cache->type;
    job.kv_row_bytes = row_bytes(k_cache);
    job.n_tokens = q->ne1;
    job.n_past = n_past;
    job.n_head = n_head;
    job.group = n_head / n_head_kv;
    job.head_dim = head_dim;
    job.q_dim = (int)q->ne0;
    cpu_pool_run(c->pool, attn_worker, &job);
    return 0;
}

static int same_shape(const struct eng_tensor *a, const struct eng_tensor *b)
{
    return a->ne0 == b->ne0 && a->ne1 == b->ne1;
}

struct swiglu_job {
    const float *gate, *up;
    float *dst;
    int64_t n;
};

static void swiglu_worker(void *arg, int ith, int nth)
{
    const struct swiglu_job *j = arg;
    int64_t i0, i1;

    cpu_pool_range(j->n, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++)
        j->dst[i] = j->gate[i] / (1.0f + expf(-j->gate[i])) * j->up[i];
}

static int cpu_swiglu(struct eng_backend *be, const struct eng_tensor *dst,
                      const struct eng_tensor *gate,
                      const struct eng_tensor *up)
{
    struct swiglu_job job;

    if (!same_shape(dst, gate) || !same_shape(dst, up))
        return -1;
    job.gate = tensor_data(gate);
    job.up = tensor_data(up);
    job.dst = tensor_data(dst);
    job.n = dst->ne0 * dst->ne1;
    /* One expf per value: worth the pool for prompts, not one token. */
    if (job.n >= CPU_PARALLEL_MIN_SWIGLU)
        cpu_pool_run(cpu(be)->pool, swiglu_worker, &job);
    else
        swiglu_worker(&job, 0, 1);
    return 0;
}

static int cpu_add(struct eng_backend *be, const struct eng_tensor *dst,
                   const struct eng_tensor *a, const struct eng_tensor *b)
{
    const float *ad = tensor_data(a), *bd = tensor_data(b);
    float *o = tensor_data(dst);
    int64_t n = dst->ne0 * dst->ne1;

    (void)be;
    if (!same_shape(dst, a) || !same_shape(dst, b))
        return -1;
    for (int64_t i = 0; i < n; i++)
        o[i] = ad[i] + bd[i];
    return 0;
}

static void cpu_destroy(struct eng_backend *be)
{
    struct cpu_backend *c = cpu(be);

    if (!c)
        return;
    cpu_pool_free(c->pool);
    free(c->act);
    free(c->att);
    free(c);
}

static const struct eng_backend_ops cpu_ops = {
    .destroy = cpu_destroy,
    .supports_type = cpu_supports_type,
    .buf_alloc = cpu_buf_alloc,
    .buf_from_host = cpu_buf_from_host,
    .buf_free = cpu_buf_free,
    .buf_upload = cpu_buf_upload,
    .buf_download = cpu_buf_download,
    .get_rows = cpu_get_rows,
    .matmul = cpu_matmul,
    .matmul_multi = cpu_matmul_multi,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .copy_rows = cpu_copy_rows,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
};

int cpu_backend_create(int n_threads, struct eng_backend **out, char *err,
                       size_t errlen)
{
    struct cpu_backend *c;

    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "cpu backend: out of memory");
        return -1;
    }
    c->base.ops = &cpu_ops;
    c->base.name = "cpu";
    c->n_threads = n_threads;
    c->pool = cpu_pool_new(n_threads);
    if (!c->pool) {
        snprintf(err, errlen, "cpu backend: cannot start %d threads",
                 n_threads);
        free(c);
        return -1;
    }
    *out = &c->base;
    return 0;
}

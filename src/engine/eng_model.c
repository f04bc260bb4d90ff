/*
 * Llama-architecture model: loads the weights named by llama.cpp's GGUF
 * converter, checks every shape and type, and runs the forward pass
 * through the backend's operations only.
 *
 * One step concatenates the tokens of all its sequences into one block,
 * so each weight matrix is read once per step. Only RoPE positions, KV
 * writes and attention are per sequence. The backend's scratch memory
 * makes eng_model_step single-caller: the scheduler owns the model.
 */
#include "engine/eng_model.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_backend.h"
#include "util/util_log.h"

struct eng_layer {
    struct eng_tensor attn_norm;   /* (1, n_embd) F32 */
    struct eng_tensor wq;          /* (n_embd, n_embd) */
    struct eng_tensor wk;          /* (n_head_kv * head_dim, n_embd) */
    struct eng_tensor wv;          /* (n_head_kv * head_dim, n_embd) */
    struct eng_tensor wo;          /* (n_embd, n_embd) */
    struct eng_tensor ffn_norm;    /* (1, n_embd) F32 */
    struct eng_tensor gate;        /* (n_ff, n_embd) */
    struct eng_tensor up;          /* (n_ff, n_embd) */
    struct eng_tensor down;        /* (n_embd, n_ff) */
};

/* Activations for up to cap_tokens tokens and cap_seqs sequences. */
struct eng_scratch {
    int cap_tokens, cap_seqs;
    struct eng_buf *buf;
    struct eng_tensor x, xb, q, k, v, att, gate, up;   /* (N, ...) */
    struct eng_tensor last, last_norm, logits;         /* (S, ...) */
    int32_t *ids, *pos;                                /* host, N */
};

struct eng_model {
    struct gguf_file *gguf;
    struct eng_model_info info;
    int head_dim, kv_dim;
    struct eng_backend *be;
    struct eng_buf *weights;
    const uint8_t *weights_host;   /* host start of the weights buffer */
    struct eng_tensor tok_embd, output_norm, output;
    struct eng_layer *layers;
    struct eng_scratch s;
};

struct eng_kv {
    struct eng_model *m;
    int n_ctx;
    int n_past;
    struct eng_buf *buf;
    struct eng_tensor *k, *v;      /* per layer: (n_ctx, kv_dim) F16 */
};

/* Read a required positive integer from llama.KEY into *OUT. */
static int read_dim(struct gguf_file *f, const char *key, int *out,
                    char *err, size_t errlen)
{
    uint32_t v;

    if (gguf_get_u32(f, key, &v) < 0 || v == 0 || v > INT_MAX / 4) {
        snprintf(err, errlen, "%s: missing or invalid %s", f->path, key);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Read and check the hyperparameters under llama.* into M->info. */
static int read_info(struct eng_model *m, char *err, size_t errlen)
{
    struct gguf_file *f = m->gguf;
    struct eng_model_info *in = &m->info;
    char *arch = gguf_get_str_dup(f, "general.architecture");
    uint32_t rot;
    int bad_arch = !arch || strcmp(arch, "llama") != 0;

    if (bad_arch) {
        snprintf(err, errlen, "%s: architecture '%s' is not supported "
                 "(only llama)", f->path, arch ? arch : "(missing)");
        free(arch);
        return -1;
    }
    free(arch);
    if (read_dim(f, "llama.context_length", &in->n_ctx_train, err,
                 errlen) < 0 ||
        read_dim(f, "llama.embedding_length", &in->n_embd, err,
                 errlen) < 0 ||
        read_dim(f, "llama.feed_forward_length", &in->n_ff, err,
                 errlen) < 0 ||
        read_dim(f, "llama.block_count", &in->n_layer, err, errlen) < 0 ||
        read_dim(f, "llama.attention.head_count", &in->n_head, err,
                 errlen) < 0)
        return -1;
    in->n_head_kv = in->n_head;
    if (gguf_find_kv(f, "llama.attention.head_count_kv") &&
        read_dim(f, "llama.attention.head_count_kv", &in->n_head_kv, err,
                 errlen) < 0)
        return -1;
    if (in->n_embd % in->n_head != 0 || in->n_head % in->n_head_kv != 0) {
        snprintf(err, errlen, "%s: n_embd %d, head_count %d and "
                 "head_count_kv %d do not divide evenly", f->path,
                 in->n_embd, in->n_head, in->n_head_kv);
        return -1;
    }
    m->head_dim = in->n_embd / in->n_head;
    m->kv_dim = m->head_dim * in->n_head_kv;

    in->n_rot = m->head_dim;
    if (gguf_get_u32(f, "llama.rope.dimension_count", &rot) == 0)
        in->n_rot = (int)rot;
    if (in->n_rot <= 0 || in->n_rot > m->head_dim || in->n_rot % 2) {
        snprintf(err, errlen, "%s: rope dimension count %d is not an even "
                 "number in 2..%d", f->path, in->n_rot, m->head_dim);
        return -1;
    }
    in->rope_freq_base = 10000.0f;
    gguf_get_f32(f, "llama.rope.freq_base", &in->rope_freq_base);
    in->rms_eps = 1e-5f;
    gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &in->rms_eps);
    if (!(in->rope_freq_base > 0.0f) || !(in->rms_eps > 0.0f)) {
        snprintf(err, errlen, "%s: invalid rope.freq_base or rms epsilon",
                 f->path);
        return -1;
    }
    return 0;
}

/*
 * Bind tensor NAME to OUT, requiring NE0 values per row, NE1 rows (any
 * count when NE1 < 0) and a type the backend computes; F32_ONLY for
 * norm weights.
 */
static int bind(struct eng_model *m, const char *name, int64_t ne0,
                int64_t ne1, int f32_only, struct eng_tensor *out,
                char *err, size_t errlen)
{
    const struct gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    const char *path = m->gguf->path;

    if (!t) {
        snprintf(err, errlen, "%s: missing tensor '%s'", path, name);
        return -1;
    }
    if (t->n_dims > 2 || (int64_t)t->ne[0] != ne0 ||
        (ne1 >= 0 && (int64_t)t->ne[1] != ne1)) {
        snprintf(err, errlen, "%s: tensor '%s' has shape [%llu, %llu], "
                 "expected [%lld, %lld]", path, name,
                 (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                 (long long)ne0, (long long)ne1);
        return -1;
    }
    if (f32_only ? t->type != GGML_TYPE_F32
                 : !m->be->ops->supports_type(m->be, t->type)) {
        snprintf(err, errlen, "%s: tensor '%s' has type %s (%d), which "
                 "the %s backend does not support here", path, name,
                 ggml_type_name(t->type), (int)t->type, m->be->name);
        return -1;
    }
    out->buf = m->weights;
    out->offset = (size_t)((const uint8_t *)t->data - m->weights_host);
    out->type = t->type;
    out->ne0 = ne0;
    out->ne1 = (int64_t)t->ne[1];
    return 0;
}

/* Hand the tensor data region of the file to the backend as one buffer. */
static int map_weights(struct eng_model *m, char *err, size_t errlen)
{
    const struct gguf_file *f = m->gguf;
    const uint8_t *lo = f->map + f->map_size, *hi = f->map;

    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const uint8_t *d = f->tensors[i].data;
        if (d < lo)
            lo = d;
        if (d + f->tensors[i].nbytes > hi)
            hi = d + f->tensors[i].nbytes;
    }
    if (hi <= lo) {
        snprintf(err, errlen, "%s: the file has no tensor data", f->path);
        return -1;
    }
    m->weights_host = lo;
    m->weights = m->be->ops->buf_from_host(m->be, lo, (size_t)(hi - lo));
    if (!m->weights) {
        snprintf(err, errlen, "%s: cannot place %zu bytes of weights on "
                 "the %s backend", f->path, (size_t)(hi - lo), m->be->name);
        return -1;
    }
    return 0;
}

static int bind_layer(struct eng_model *m, int il, char *err, size_t errlen)
{
    struct eng_layer *l = &m->layers[il];
    int64_t e = m->info.n_embd, ff = m->info.n_ff, kvd = m->kv_dim;
    char name[64];
    int rc = 0;

#define BIND(suffix, ne0, ne1, f32, field)                                 \
    do {                                                                  \
        snprintf(name, sizeof(name), "blk.%d.%s.weight", il, suffix);     \
        if (rc == 0)                                                      \
            rc = bind(m, name, ne0, ne1, f32, &l->field, err, errlen);    \
    } while (0)

    BIND("attn_norm", e, 1, 1, attn_norm);
    BIND("attn_q", e, e, 0, wq);
    BIND("attn_k", e, kvd, 0, wk);
    BIND("attn_v", e, kvd, 0, wv);
    BIND("attn_output", e, e, 0, wo);
    BIND("ffn_norm", e, 1, 1, ffn_norm);
    BIND("ffn_gate", e, ff, 0, gate);
    BIND("ffn_up", e, ff, 0, up);
    BIND("ffn_down", ff, e, 0, down);
#undef BIND
    return rc;
}

/* Bind every weight of the model; the vocabulary size comes from the
 * embedding's row count. */
static int bind_weights(struct eng_model *m, char *err, size_t errlen)
{
    int64_t e = m->info.n_embd;
    const char *out_name = "output.weight";

    if (bind(m, "token_embd.weight", e, -1, 0, &m->tok_embd, err,
             errlen) < 0)
        return -1;
    if (m->tok_embd.ne1 > INT_MAX / 4) {
        snprintf(err, errlen, "%s: vocabulary of %lld tokens is too large",
                 m->gguf->path, (long long)m->tok_embd.ne1);
        return -1;
    }
    m->info.n_vocab = (int)m->tok_embd.ne1;
    /* Models with tied embeddings have no output.weight. */
    if (!gguf_find_tensor(m->gguf, out_name))
        out_name = "token_embd.weight";
    if (bind(m, "output_norm.weight", e, 1, 1, &m->output_norm, err,
             errlen) < 0 ||
        bind(m, out_name, e, m->info.n_vocab, 0, &m->output, err,
             errlen) < 0)
        return -1;

    m->layers = calloc((size_t)m->info.n_layer, sizeof(*m->layers));
    if (!m->layers) {
        snprintf(err, errlen, "%s: out of memory", m->gguf->path);
        return -1;
    }
    for (int il = 0; il < m->info.n_layer; il++)
        if (bind_layer(m, il, err, errlen) < 0)
            return -1;
    return 0;
}

int eng_model_load(const char *path, int n_threads, struct eng_model **out,
                   char *err, size_t errlen)
{
    struct eng_model *m = calloc(1, sizeof(*m));
    char berr[256];

    *out = NULL;
    if (!m) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    if (gguf_open(path, &m->gguf, err, errlen) < 0)
        goto fail;
    if (read_info(m, err, errlen) < 0)
        goto fail;
    if (cpu_backend_create(n_threads, &m->be, berr, sizeof(berr)) < 0) {
        snprintf(err, errlen, "%s: %s", path, berr);
        goto fail;
    }
    if (map_weights(m, err, errlen) < 0 || bind_weights(m, err, errlen) < 0)
        goto fail;

    log_info("engine", "loaded %s: %d layers, n_embd %d, n_vocab %d, "
             "backend %s", path, m->info.n_layer, m->info.n_embd,
             m->info.n_vocab, m->be->name);
    *out = m;
    return 0;

fail:
    eng_model_free(m);
    return -1;
}

static void scratch_free(struct eng_model *m)
{
    if (m->s.buf)
        m->be->ops->buf_free(m->be, m->s.buf);
    free(m->s.ids);
    free(m->s.pos);
    memset(&m->s, 0, sizeof(m->s));
}

void eng_model_free(struct eng_model *m)
{
    if (!m)
        return;
    if (m->be) {
        scratch_free(m);
        if (m->weights)
            m->be->ops->buf_free(m->be, m->weights);
        m->be->ops->destroy(m->be);
    }
    free(m->layers);
    gguf_close(m->gguf);
    free(m);
}

const struct eng_model_info *eng_model_info(const struct eng_model *m)
{
    return &m->info;
}

const struct gguf_file *eng_model_gguf(const struct eng_model *m)
{
    return m->gguf;
}

/* Lay out tensor T of ROWS x NE0 F32 at *OFF in the scratch buffer. */
static void place(struct eng_model *m, struct eng_tensor *t, int64_t rows,
                  int64_t ne0, size_t *off)
{
    t->buf = m->s.buf;
    t->offset = *off;
    t->type = GGML_TYPE_F32;
    t->ne0 = ne0;
    t->ne1 = rows;
    *off += ((size_t)(rows * ne0) * sizeof(float) + 63) / 64 * 64;
}

/* Size the activations for N tokens in S sequences; grows, never shrinks. */
static int scratch_reserve(struct eng_model *m, int n, int s)
{
    const struct eng_model_info *in = &m->info;
    struct eng_scratch *sc = &m->s;
    size_t off = 0;
    int64_t e = in->n_embd, kvd = m->kv_dim, ff = in->n_ff;

    if (n <= sc->cap_tokens && s <= sc->cap_seqs)
        return 0;
    if (n < sc->cap_tokens)
        n = sc->cap_tokens;
    if (s < sc->cap_seqs)
        s = sc->cap_seqs;
    scratch_free(m);

    /* (N, n_embd) x4, (N, kv_dim) x2, (N, n_ff) x2, (S, n_embd) x2,
     * (S, n_vocab), each padded to 64 bytes. */
    size_t per_tok = (size_t)(4 * e + 2 * kvd + 2 * ff) * sizeof(float);
    size_t per_seq = (size_t)(2 * e + in->n_vocab) * sizeof(float);
    size_t total = per_tok * (size_t)n + per_seq * (size_t)s + 11 * 64;
    sc->buf = m->be->ops->buf_alloc(m->be, total);
    sc->ids = malloc((size_t)n * sizeof(int32_t));
    sc->pos = malloc((size_t)n * sizeof(int32_t));
    if (!sc->buf || !sc->ids || !sc->pos) {
        scratch_free(m);
        return -1;
    }
    place(m, &sc->x, n, e, &off);
    place(m, &sc->xb, n, e, &off);
    place(m, &sc->q, n, e, &off);
    place(m, &sc->att, n, e, &off);
    place(m, &sc->k, n, kvd, &off);
    place(m, &sc->v, n, kvd, &off);
    place(m, &sc->gate, n, ff, &off);
    place(m, &sc->up, n, ff, &off);
    place(m, &sc->last, s, e, &off);
    place(m, &sc->last_norm, s, e, &off);
    place(m, &sc->logits, s, in->n_vocab, &off);
    sc->cap_tokens = n;
    sc->cap_seqs = s;
    return 0;
}

struct eng_kv *eng_kv_new(struct eng_model *m, int n_ctx)
{
    struct eng_kv *kv;
    int nl = m->info.n_layer;

    if (n_ctx <= 0 || (size_t)n_ctx > SIZE_MAX / 2 / (size_t)m->kv_dim /
                                          (size_t)nl / 2)
        return NULL;
    kv = calloc(1, sizeof(*kv));
    if (!kv)
        return NULL;
    kv->m = m;
    kv->n_ctx = n_ctx;
    kv->k = calloc((size_t)nl, sizeof(*kv->k));
    kv->v = calloc((size_t)nl, sizeof(*kv->v));
    /* F16, as llama.cpp's default cache, so attention rounds the same. */
    size_t per = ggml_row_size(GGML_TYPE_F16, (uint64_t)m->kv_dim) *
                 (size_t)n_ctx;
    kv->buf = m->be->ops->buf_alloc(m->be, per * 2 * (size_t)nl);
    if (!kv->k || !kv->v || !kv->buf) {
        eng_kv_free(kv);
        return NULL;
    }
    for (int il = 0; il < nl; il++) {
        struct eng_tensor t = { kv->buf, 0, GGML_TYPE_F16, m->kv_dim,
                                n_ctx };
        t.offset = per * (size_t)(2 * il);
        kv->k[il] = t;
        t.offset += per;
        kv->v[il] = t;
    }
    return kv;
}

void eng_kv_free(struct eng_kv *kv)
{
    if (!kv)
        return;
    if (kv->buf)
        kv->m->be->ops->buf_free(kv->m->be, kv->buf);
    free(kv->k);
    free(kv->v);
    free(kv);
}

int eng_kv_n_past(const struct eng_kv *kv)
{
    return kv->n_past;
}

int eng_kv_n_ctx(const struct eng_kv *kv)
{
    return kv->n_ctx;
}

void eng_kv_clear(struct eng_kv *kv)
{
    kv->n_past = 0;
}

/* Check every sequence before anything changes; returns the token total
 * or -1. */
static int validate(struct eng_model *m, const struct eng_seq_batch *seqs,
                    int n_seqs)
{
    int total = 0;

    if (!seqs || n_seqs <= 0)
        return -1;
    for (int i = 0; i < n_seqs; i++) {
        const struct eng_seq_batch *sq = &seqs[i];

        if (!sq->kv || sq->kv->m != m || !sq->tokens || !sq->logits ||
            sq->n_tokens <= 0)
            return -1;
        if (sq->n_tokens > sq->kv->n_ctx - sq->kv->n_past) {
            log_debug("engine", "step rejected: %d tokens at n_past %d "
                      "overflow n_ctx %d", sq->n_tokens, sq->kv->n_past,
                      sq->kv->n_ctx);
            return -1;
        }
        for (int t = 0; t < sq->n_tokens; t++)
            if (sq->tokens[t] < 0 || sq->tokens[t] >= m->info.n_vocab)
                return -1;
        for (int j = 0; j < i; j++)
            if (seqs[j].kv == sq->kv)
                return -1;
        if (sq->n_tokens > INT_MAX - total)
            return -1;
        total += sq->n_tokens;
    }
    return total;
}

#define CHECK(expr)                                                       \
    do {                                                                  \
        if ((expr) < 0)                                                   \
            return -1;                                                    \
    } while (0)

/* DST[i] = matmul of W[i] and X for i < N, in one backend call when
 * the backend has matmul_multi. */
static int matmul_group(struct eng_model *m, int n,
                        const struct eng_tensor *const *dst,
                        const struct eng_tensor *const *w,
                        const struct eng_tensor *x)
{
    const struct eng_backend_ops *op = m->be->ops;

    if (op->matmul_multi)
        return op->matmul_multi(m->be, n, dst, w, x);
    for (int i = 0; i < n; i++)
        CHECK(op->matmul(m->be, dst[i], w[i], x));
    return 0;
}

/* Attention block of layer IL for all sequences; reads s.xb (N, n_embd)
 * and leaves the block's output in s.xb. */
static int attention_block(struct eng_model *m, int il,
                           const struct eng_seq_batch *seqs, int n_seqs)
{
    const struct eng_backend_ops *op = m->be->ops;
    struct eng_backend *be = m->be;
    const struct eng_layer *l = &m->layers[il];
    const struct eng_model_info *in = &m->info;
    struct eng_scratch *s = &m->s;
    int64_t n = s->x.ne1;
    struct eng_tensor q = eng_tensor_rows(&s->q, 0, n);
    struct eng_tensor k = eng_tensor_rows(&s->k, 0, n);
    struct eng_tensor v = eng_tensor_rows(&s->v, 0, n);
    struct eng_tensor att = eng_tensor_rows(&s->att, 0, n);
    struct eng_tensor xb = eng_tensor_rows(&s->xb, 0, n);

    /* Projections: (N, n_embd) -> q (N, n_embd), k and v (N, kv_dim). */
    const struct eng_tensor *qkv[3] = { &q, &k, &v };
    const struct eng_tensor *wqkv[3] = { &l->wq, &l->wk, &l->wv };
    CHECK(matmul_group(m, 3, qkv, wqkv, &xb));
    CHECK(op->rope(be, &q, s->pos, in->n_head, m->head_dim, in->n_rot,
                   in->rope_freq_base));
    CHECK(op->rope(be, &k, s->pos, in->n_head_kv, m->head_dim, in->n_rot,
                   in->rope_freq_base));

    /* Per sequence: append k and v to its cache, attend over it. */
    int64_t row = 0;
    for (int i = 0; i < n_seqs; i++) {
        struct eng_kv *kv = seqs[i].kv;
        int nt = seqs[i].n_tokens;
        struct eng_tensor kc = eng_tensor_rows(&kv->k[il], kv->n_past, nt);
        struct eng_tensor vc = eng_tensor_rows(&kv->v[il], kv->n_past, nt);
        struct eng_tensor ks = eng_tensor_rows(&k, row, nt);
        struct eng_tensor vs = eng_tensor_rows(&v, row, nt);
        struct eng_tensor qs = eng_tensor_rows(&q, row, nt);
        struct eng_tensor as = eng_tensor_rows(&att, row, nt);

        CHECK(op->copy_rows(be, &kc, &ks));
        CHECK(op->copy_rows(be, &vc, &vs));
        CHECK(op->attention(be, &as, &qs, &kv->k[il], &kv->v[il],
                            kv->n_past, in->n_head, in->n_head_kv,
                            m->head_dim));
        row += nt;
    }

    /* Output projection: (N, n_embd) -> (N, n_embd). */
    CHECK(op->matmul(be, &xb, &l->wo, &att));
    return 0;
}

/* Transformer layer IL over s.x (N, n_embd), in place. */
static int layer_forward(struct eng_model *m, int il,
                         const struct eng_seq_batch *seqs, int n_seqs)
{
    const struct eng_backend_ops *op = m->be->ops;
    struct eng_backend *be = m->be;
    const struct eng_layer *l = &m->layers[il];
    struct eng_scratch *s = &m->s;
    int64_t n = s->x.ne1;
    struct eng_tensor x = s->x;
    struct eng_tensor xb = eng_tensor_rows(&s->xb, 0, n);
    struct eng_tensor gate = eng_tensor_rows(&s->gate, 0, n);
    struct eng_tensor up = eng_tensor_rows(&s->up, 0, n);

    /* Attention with residual. */
    CHECK(op->rmsnorm(be, &xb, &x, &l->attn_norm, m->info.rms_eps));
    CHECK(attention_block(m, il, seqs, n_seqs));
    CHECK(op->add(be, &x, &x, &xb));

    /* SwiGLU feed-forward with residual: (N, n_embd) -> (N, n_ff) ->
     * (N, n_embd). */
    CHECK(op->rmsnorm(be, &xb, &x, &l->ffn_norm, m->info.rms_eps));
    const struct eng_tensor *gate_up[2] = { &gate, &up };
    const struct eng_tensor *w_gate_up[2] = { &l->gate, &l->up };
    CHECK(matmul_group(m, 2, gate_up, w_gate_up, &xb));
    CHECK(op->swiglu(be, &gate, &gate, &up));
    CHECK(op->matmul(be, &xb, &l->down, &gate));
    CHECK(op->add(be, &x, &x, &xb));
    return 0;
}

/* Forward pass of N tokens (already in s.ids and s.pos); writes each
 * sequence's last-token logits. */
static int forward(struct eng_model *m, struct eng_seq_batch *seqs,
                   int n_seqs, int n)
{
    const struct eng_backend_ops *op = m->be->ops;
    struct eng_backend *be = m->be;
    struct eng_scratch *s = &m->s;
    struct eng_tensor last, last_norm, logits;
    size_t logits_bytes = (size_t)m->info.n_vocab * sizeof(float);

    /* Token embeddings: (N, n_embd). */
    s->x.ne1 = n;
    CHECK(op->get_rows(be, &s->x, &m->tok_embd, s->ids, n));
    for (int il = 0; il < m->info.n_layer; il++)
        CHECK(layer_forward(m, il, seqs, n_seqs));

    /* Gather each sequence's last row: (S, n_embd). */
    last = eng_tensor_rows(&s->last, 0, n_seqs);
    last_norm = eng_tensor_rows(&s->last_norm, 0, n_seqs);
    logits = eng_tensor_rows(&s->logits, 0, n_seqs);
    int64_t row = 0;
    for (int i = 0; i < n_seqs; i++) {
        row += seqs[i].n_tokens;
        struct eng_tensor src = eng_tensor_rows(&s->x, row - 1, 1);
        struct eng_tensor dst = eng_tensor_rows(&last, i, 1);
        CHECK(op->copy_rows(be, &dst, &src));
    }

    /* Final norm and output matrix: (S, n_embd) -> (S, n_vocab). */
    CHECK(op->rmsnorm(be, &last_norm, &last, &m->output_norm,
                      m->info.rms_eps));
    CHECK(op->matmul(be, &logits, &m->output, &last_norm));
    for (int i = 0; i < n_seqs; i++)
        CHECK(op->buf_download(be, logits.buf,
                               logits.offset + (size_t)i * logits_bytes,
                               seqs[i].logits, logits_bytes));
    return 0;
}

int eng_model_step(struct eng_model *m, struct eng_seq_batch *seqs,
                   int n_seqs)
{
    int n = validate(m, seqs, n_seqs);

    if (n < 0)
        return -1;
    if (scratch_reserve(m, n, n_seqs) < 0) {
        log_error("engine", "out of memory for %d tokens", n);
        return -1;
    }

    /* Token ids and positions of the concatenated batch. */
    int row = 0;
    for (int i = 0; i < n_seqs; i++) {
        for (int t = 0; t < seqs[i].n_tokens; t++) {
            m->s.ids[row] = seqs[i].tokens[t];
            m->s.pos[row] = seqs[i].kv->n_past + t;
            row++;
        }
    }
    if (forward(m, seqs, n_seqs, n) < 0) {
        log_error("engine", "backend %s failed in a step of %d tokens",
                  m->be->name, n);
        return -1;
    }
    for (int i = 0; i < n_seqs; i++)
        seqs[i].kv->n_past += seqs[i].n_tokens;
    return 0;
}

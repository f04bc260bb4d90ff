/*
 * gen_model: writes a GGUF v3 file of the llama architecture with random
 * weights of a given shape and tensor type (F32, F16, Q8_0 or Q4_0), for
 * benchmarks at real model sizes. Metadata keys and tensor names follow
 * llama.cpp's converter, so llama.cpp loads the files too. The tokenizer
 * (every tokenizer.ggml.* key) is copied from a source GGUF file.
 *
 * Weights are uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)] from a seeded
 * generator, so the same arguments always give the same bytes. Tensors
 * are generated and written row by row, so memory stays small even for
 * models of billions of weights.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/eng_gguf.h"

#define GEN_ALIGNMENT 32
#define QK 32                  /* values per Q8_0 / Q4_0 block */
#define MAX_TENSORS 4096

struct gen_args {
    const char *out;
    const char *vocab_from;
    enum ggml_type type;
    uint32_t dim, ff, layers, heads, kv_heads, ctx;
    uint64_t seed;
};

/* One tensor to write: name, shape (ne[0] is the row length), type. */
struct gen_tensor {
    char name[64];
    uint64_t ne0, ne1;         /* ne1 = 1 for a vector */
    uint32_t n_dims;
    enum ggml_type type;
    uint64_t offset;           /* from the start of the data section */
    uint64_t nbytes;
};

/* xorshift64* generator: fast and good enough for random weights. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* Uniform float in [-1, 1). */
static float rng_sym(uint64_t *s)
{
    return (float)(rng_next(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* Mix the seed with the tensor index so tensors differ (splitmix64). */
static uint64_t rng_seed(uint64_t seed, uint64_t index)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (index + 1);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1;
}

/* Convert to IEEE half, rounding to nearest even. Inputs are never NaN. */
static uint16_t fp32_to_fp16(float f)
{
    uint32_t x;

    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exponent = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;

    if (exponent >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (exponent <= 0) {
        /* Subnormal half: shift in the implicit bit, round to even. */
        if (exponent < -10)
            return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exponent);
        uint32_t half = mant >> shift;
        uint32_t rest = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exponent << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    /* A carry out of the mantissa correctly bumps the exponent. */
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)h;
}

/* Q8_0 block: fp16 scale d = max|x| / 127, then 32 int8 round(x / d). */
static void quant_q8_0(const float *x, uint8_t *out)
{
    float amax = 0.0f;

    for (int i = 0; i < QK; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t dh = fp32_to_fp16(d);

    memcpy(out, &dh, 2);
    for (int i = 0; i < QK; i++)
        out[2 + i] = (uint8_t)(int8_t)roundf(x[i] * id);
}

/*
 * Q4_0 block: the value of largest magnitude, with its sign, maps to -8,
 * so d = max / -8. Stored nibbles are round(x / d) + 8 clamped to 0..15;
 * byte j holds value j in its low nibble and value j + 16 in its high.
 * Ties round up (floor of x / d + 8.5), as llama-quantize (b9749) does,
 * so both tools write the same bytes from the same F32 weights.
 */
static void quant_q4_0(const float *x, uint8_t *out)
{
    float amax = 0.0f, max = 0.0f;

    for (int i = 0; i < QK; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    float d = max / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t dh = fp32_to_fp16(d);

    memcpy(out, &dh, 2);
    for (int j = 0; j < QK / 2; j++) {
        int lo = (int)floorf(x[j] * id + 8.5f);
        int hi = (int)floorf(x[j + QK / 2] * id + 8.5f);
        lo = lo < 0 ? 0 : lo;
        hi = hi < 0 ? 0 : hi;
        lo = lo > 15 ? 15 : lo;
        hi = hi > 15 ? 15 : hi;
        out[2 + j] = (uint8_t)(lo | (hi << 4));
    }
}

/* Encode N floats (a multiple of QK for the block types) into OUT. */
static void encode_row(enum ggml_type type, const float *x, uint64_t n,
                       uint8_t *out)
{
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(out, x, n * sizeof(float));
        break;
    case GGML_TYPE_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = fp32_to_fp16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case GGML_TYPE_Q8_0:
        for (uint64_t i = 0; i < n / QK; i++)
            quant_q8_0(x + i * QK, out + i * 34);
        break;
    case GGML_TYPE_Q4_0:
        for (uint64_t i = 0; i < n / QK; i++)
            quant_q4_0(x + i * QK, out + i * 18);
        break;
    default:
        break;
    }
}

/* Little-endian writers. Each sets *ERR to -1 on a short write. */
static void put(FILE *fp, const void *p, size_t n, int *err)
{
    if (fwrite(p, 1, n, fp) != n)
        *err = -1;
}

static void put_u32(FILE *fp, uint32_t v, int *err)
{
    put(fp, &v, 4, err);
}

static void put_u64(FILE *fp, uint64_t v, int *err)
{
    put(fp, &v, 8, err);
}

static void put_str(FILE *fp, const char *s, uint64_t len, int *err)
{
    put_u64(fp, len, err);
    put(fp, s, len, err);
}

static void put_kv_u32(FILE *fp, const char *key, uint32_t v, int *err)
{
    put_str(fp, key, strlen(key), err);
    put_u32(fp, GGUF_TYPE_UINT32, err);
    put_u32(fp, v, err);
}

static void put_kv_f32(FILE *fp, const char *key, float v, int *err)
{
    put_str(fp, key, strlen(key), err);
    put_u32(fp, GGUF_TYPE_FLOAT32, err);
    put(fp, &v, 4, err);
}

static void put_kv_str(FILE *fp, const char *key, const char *v, int *err)
{
    put_str(fp, key, strlen(key), err);
    put_u32(fp, GGUF_TYPE_STRING, err);
    put_str(fp, v, strlen(v), err);
}

/* Return the bytes of one scalar of TYPE, or 0 for strings and arrays. */
static size_t scalar_size(enum gguf_type type)
{
    switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/*
 * Copy one key-value pair from the source file. The reader widens
 * scalars to 64 bits, so narrow them back to the source's width.
 */
static void put_kv_copy(FILE *fp, const struct gguf_kv *kv, int *err)
{
    put_str(fp, kv->key.data, kv->key.len, err);
    put_u32(fp, kv->type, err);
    if (kv->type == GGUF_TYPE_STRING) {
        put_str(fp, kv->v.str.data, kv->v.str.len, err);
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        put_u32(fp, kv->v.arr.type, err);
        put_u64(fp, kv->v.arr.count, err);
        if (kv->v.arr.type == GGUF_TYPE_STRING) {
            for (uint64_t i = 0; i < kv->v.arr.count; i++)
                put_str(fp, kv->v.arr.strs[i].data, kv->v.arr.strs[i].len,
                        err);
        } else {
            put(fp, kv->v.arr.data,
                kv->v.arr.count * scalar_size(kv->v.arr.type), err);
        }
    } else if (kv->type == GGUF_TYPE_FLOAT32) {
        float f = (float)kv->v.f64;
        put(fp, &f, 4, err);
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        put(fp, &kv->v.f64, 8, err);
    } else {
        /* Little-endian: the low bytes of the 64-bit value come first. */
        put(fp, &kv->v.u64, scalar_size(kv->type), err);
    }
}

static int is_tokenizer_key(const struct gguf_kv *kv)
{
    static const char prefix[] = "tokenizer.ggml.";

    return kv->key.len > sizeof prefix - 1 &&
           memcmp(kv->key.data, prefix, sizeof prefix - 1) == 0;
}

/* llama.cpp's general.file_type for a model that is mostly TYPE. */
static uint32_t file_type_of(enum ggml_type type)
{
    switch (type) {
    case GGML_TYPE_F16:
        return 1;
    case GGML_TYPE_Q4_0:
        return 2;
    case GGML_TYPE_Q8_0:
        return 7;
    default:
        return 0;
    }
}

static void add_tensor(struct gen_tensor *t, int *n, const char *name,
                       uint64_t ne0, uint64_t ne1, enum ggml_type type)
{
    struct gen_tensor *g = &t[(*n)++];

    snprintf(g->name, sizeof g->name, "%s", name);
    g->ne0 = ne0;
    g->ne1 = ne1;
    g->n_dims = ne1 > 1 ? 2 : 1;
    g->type = type;
    g->nbytes = ggml_row_size(type, ne0) * ne1;
}

/* List every tensor of the model with its shape, in llama.cpp's names. */
static int plan_tensors(const struct gen_args *a, uint64_t n_vocab,
                        struct gen_tensor *t)
{
    uint64_t kv_dim = (uint64_t)a->dim / a->heads * a->kv_heads;
    char name[64];
    int n = 0;

    add_tensor(t, &n, "token_embd.weight", a->dim, n_vocab, a->type);
    for (uint32_t l = 0; l < a->layers; l++) {
        static const char *const fmt[] = {
            "blk.%u.attn_norm.weight", "blk.%u.attn_q.weight",
            "blk.%u.attn_k.weight", "blk.%u.attn_v.weight",
            "blk.%u.attn_output.weight", "blk.%u.ffn_norm.weight",
            "blk.%u.ffn_gate.weight", "blk.%u.ffn_up.weight",
            "blk.%u.ffn_down.weight",
        };
        const uint64_t ne0[] = { a->dim, a->dim, a->dim, a->dim, a->dim,
                                 a->dim, a->dim, a->dim, a->ff };
        const uint64_t ne1[] = { 1, a->dim, kv_dim, kv_dim, a->dim,
                                 1, a->ff, a->ff, a->dim };
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, fmt[i], l);
            add_tensor(t, &n, name, ne0[i], ne1[i],
                       ne1[i] == 1 ? GGML_TYPE_F32 : a->type);
        }
    }
    add_tensor(t, &n, "output_norm.weight", a->dim, 1, GGML_TYPE_F32);
    add_tensor(t, &n, "output.weight", a->dim, n_vocab, a->type);

    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        t[i].offset = off;
        off += (t[i].nbytes + GEN_ALIGNMENT - 1) / GEN_ALIGNMENT *
               GEN_ALIGNMENT;
    }
    return n;
}

/* Write the header: metadata, then every tensor's info, then padding. */
static void write_header(FILE *fp, const struct gen_args *a,
                         const struct gguf_file *src,
                         const struct gen_tensor *t, int n_tensors,
                         int *err)
{
    uint64_t n_tok = 0;

    for (uint64_t i = 0; i < src->n_kv; i++)
        n_tok += is_tokenizer_key(&src->kv[i]);

    put(fp, "GGUF", 4, err);
    put_u32(fp, 3, err);
    put_u64(fp, (uint64_t)n_tensors, err);
    put_u64(fp, 12 + n_tok, err);      /* keep in step with the list */

    put_kv_str(fp, "general.architecture", "llama", err);
    put_kv_str(fp, "general.name", "llama", err);
    put_kv_u32(fp, "llama.context_length", a->ctx, err);
    put_kv_u32(fp, "llama.embedding_length", a->dim, err);
    put_kv_u32(fp, "llama.feed_forward_length", a->ff, err);
    put_kv_u32(fp, "llama.attention.head_count", a->heads, err);
    put_kv_u32(fp, "llama.attention.head_count_kv", a->kv_heads, err);
    put_kv_u32(fp, "llama.block_count", a->layers, err);
    put_kv_u32(fp, "llama.rope.dimension_count", a->dim / a->heads, err);
    put_kv_f32(fp, "llama.attention.layer_norm_rms_epsilon", 1e-5f, err);
    put_kv_u32(fp, "general.quantization_version", 2, err);
    put_kv_u32(fp, "general.file_type", file_type_of(a->type), err);
    for (uint64_t i = 0; i < src->n_kv; i++)
        if (is_tokenizer_key(&src->kv[i]))
            put_kv_copy(fp, &src->kv[i], err);

    for (int i = 0; i < n_tensors; i++) {
        put_str(fp, t[i].name, strlen(t[i].name), err);
        put_u32(fp, t[i].n_dims, err);
        put_u64(fp, t[i].ne0, err);
        if (t[i].n_dims == 2)
            put_u64(fp, t[i].ne1, err);
        put_u32(fp, t[i].type, err);
        put_u64(fp, t[i].offset, err);
    }

    long pos = ftell(fp);
    static const uint8_t zeros[GEN_ALIGNMENT];
    if (pos < 0)
        *err = -1;
    else if (pos % GEN_ALIGNMENT)
        put(fp, zeros, GEN_ALIGNMENT - (size_t)(pos % GEN_ALIGNMENT), err);
}

/*
 * Write one tensor's data at its planned offset. Norm weights are 1, as
 * a freshly initialised llama has them; matrices are random.
 */
static int write_tensor(FILE *fp, const struct gen_tensor *t,
                        uint64_t seed, float *row, uint8_t *enc)
{
    size_t row_bytes = ggml_row_size(t->type, t->ne0);
    float scale = 1.0f / sqrtf((float)t->ne0);
    uint64_t s = seed;
    int err = 0;

    for (uint64_t r = 0; r < t->ne1 && !err; r++) {
        for (uint64_t i = 0; i < t->ne0; i++)
            row[i] = t->n_dims == 1 ? 1.0f : rng_sym(&s) * scale;
        encode_row(t->type, row, t->ne0, enc);
        put(fp, enc, row_bytes, &err);
    }
    static const uint8_t zeros[GEN_ALIGNMENT];
    uint64_t pad = (GEN_ALIGNMENT - t->nbytes % GEN_ALIGNMENT) %
                   GEN_ALIGNMENT;
    put(fp, zeros, pad, &err);
    return err;
}

static int parse_type(const char *s, enum ggml_type *out)
{
    static const struct { const char *name; enum ggml_type type; } t[] = {
        { "f32", GGML_TYPE_F32 }, { "f16", GGML_TYPE_F16 },
        { "q8_0", GGML_TYPE_Q8_0 }, { "q4_0", GGML_TYPE_Q4_0 },
    };

    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcasecmp(s, t[i].name) == 0) {
            *out = t[i].type;
            return 0;
        }
    }
    return -1;
}

static void usage(FILE *fp)
{
    fprintf(fp,
        "usage: gen_model --out FILE --vocab-from GGUF [options]\n"
        "  --type T        f32, f16, q8_0 or q4_0 for every matrix "
        "(default q8_0)\n"
        "  --dim N         embedding length (default 768)\n"
        "  --ff N          feed-forward length (default 2048)\n"
        "  --layers N      block count (default 12)\n"
        "  --heads N       attention heads (default 12)\n"
        "  --kv-heads N    key/value heads (default: --heads)\n"
        "  --ctx N         llama.context_length (default 2048)\n"
        "  --seed N        random seed (default 1)\n"
        "  --vocab-from F  GGUF file whose tokenizer.ggml.* keys are "
        "copied;\n"
        "                  its token count sets the vocabulary size\n");
}

/* Parse a positive integer option value; returns -1 when invalid. */
static int parse_u32(const char *opt, const char *s, uint32_t *out)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v == 0 || v > UINT32_MAX) {
        fprintf(stderr, "gen_model: invalid value '%s' for %s: expected "
                "a positive integer\n", s, opt);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct gen_args *a)
{
    *a = (struct gen_args){ .type = GGML_TYPE_Q8_0, .dim = 768,
                            .ff = 2048, .layers = 12, .heads = 12,
                            .ctx = 2048, .seed = 1 };

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gen_model: missing value for %s\n", o);
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        uint32_t seed;
        if (strcmp(o, "--out") == 0)
            a->out = v;
        else if (strcmp(o, "--vocab-from") == 0)
            a->vocab_from = v;
        else if (strcmp(o, "--type") == 0) {
            rc = parse_type(v, &a->type);
            if (rc < 0)
                fprintf(stderr, "gen_model: invalid --type '%s': expected "
                        "f32, f16, q8_0 or q4_0\n", v);
        } else if (strcmp(o, "--dim") == 0)
            rc = parse_u32(o, v, &a->dim);
        else if (strcmp(o, "--ff") == 0)
            rc = parse_u32(o, v, &a->ff);
        else if (strcmp(o, "--layers") == 0)
            rc = parse_u32(o, v, &a->layers);
        else if (strcmp(o, "--heads") == 0)
            rc = parse_u32(o, v, &a->heads);
        else if (strcmp(o, "--kv-heads") == 0)
            rc = parse_u32(o, v, &a->kv_heads);
        else if (strcmp(o, "--ctx") == 0)
            rc = parse_u32(o, v, &a->ctx);
        else if (strcmp(o, "--seed") == 0) {
            rc = parse_u32(o, v, &seed);
            a->seed = seed;
        } else {
            fprintf(stderr, "gen_model: unknown option %s\n", o);
            usage(stderr);
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (!a->kv_heads)
        a->kv_heads = a->heads;
    return 0;
}

/* Reject shapes that llama.cpp or the block types cannot represent. */
static int check_shape(const struct gen_args *a)
{
    if (!a->out || !a->vocab_from) {
        fprintf(stderr, "gen_model: --out and --vocab-from are required\n");
        return -1;
    }
    if (a->dim % a->heads || a->heads % a->kv_heads) {
        fprintf(stderr, "gen_model: --dim (%u) must be a multiple of "
                "--heads (%u), and --heads of --kv-heads (%u)\n",
                a->dim, a->heads, a->kv_heads);
        return -1;
    }
    if ((a->dim / a->heads) % 2) {
        fprintf(stderr, "gen_model: head dimension %u must be even for "
                "RoPE\n", a->dim / a->heads);
        return -1;
    }
    if ((a->type == GGML_TYPE_Q8_0 || a->type == GGML_TYPE_Q4_0) &&
        (a->dim % QK || a->ff % QK)) {
        fprintf(stderr, "gen_model: %s needs --dim and --ff to be "
                "multiples of %d\n", ggml_type_name(a->type), QK);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct gen_args a;
    struct gguf_file *src = NULL;
    struct gen_tensor *t = NULL;
    float *row = NULL;
    uint8_t *enc = NULL;
    FILE *fp = NULL;
    char err_text[512];
    int err = 0, rc = 1;

    if (parse_args(argc, argv, &a) < 0 || check_shape(&a) < 0)
        return 2;
    if (gguf_open(a.vocab_from, &src, err_text, sizeof err_text) < 0) {
        fprintf(stderr, "gen_model: %s\n", err_text);
        return 1;
    }
    const struct gguf_kv *tokens = gguf_find_kv(src, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != GGUF_TYPE_ARRAY ||
        tokens->v.arr.type != GGUF_TYPE_STRING) {
        fprintf(stderr, "gen_model: %s has no tokenizer.ggml.tokens string "
                "array to copy\n", a.vocab_from);
        goto out;
    }
    uint64_t n_vocab = tokens->v.arr.count;
    if ((uint64_t)a.layers * 9 + 3 > MAX_TENSORS) {
        fprintf(stderr, "gen_model: --layers %u is over the maximum of "
                "%d\n", a.layers, (MAX_TENSORS - 3) / 9);
        goto out;
    }

    t = calloc(MAX_TENSORS, sizeof *t);
    uint64_t max_row = a.dim > a.ff ? a.dim : a.ff;
    row = malloc(max_row * sizeof *row);
    enc = malloc(max_row * sizeof(float));
    fp = fopen(a.out, "wb");
    if (!t || !row || !enc) {
        fprintf(stderr, "gen_model: out of memory\n");
        goto out;
    }
    if (!fp) {
        fprintf(stderr, "gen_model: cannot open %s for writing: %s\n",
                a.out, strerror(errno));
        goto out;
    }
    setvbuf(fp, NULL, _IOFBF, 1 << 20);

    int n = plan_tensors(&a, n_vocab, t);
    write_header(fp, &a, src, t, n, &err);
    for (int i = 0; i < n && !err; i++)
        err = write_tensor(fp, &t[i], rng_seed(a.seed, (uint64_t)i), row,
                           enc);
    if (fclose(fp) != 0)
        err = -1;
    fp = NULL;
    if (err) {
        fprintf(stderr, "gen_model: writing %s failed: %s\n", a.out,
                strerror(errno));
        remove(a.out);
        goto out;
    }
    rc = 0;

out:
    if (fp)
        fclose(fp);
    free(enc);
    free(row);
    free(t);
    gguf_close(src);
    return rc;
}

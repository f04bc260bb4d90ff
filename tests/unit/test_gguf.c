/*
 * GGUF reader tests. The shipped models and vocabulary files load with
 * the expected metadata and tensor tables, and a small version 2 file
 * built here loads with every value intact. Truncated, corrupted or
 * malformed files fail with one message naming the file and do not
 * crash; run this under AddressSanitizer to check that.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_gguf.h"

#define MODELS "../shared/models/"
#define VOCAB "../shared/reference/vocab/"

static char tmp_dir[64];

static struct gguf_file *open_ok(const char *path)
{
    struct gguf_file *f = NULL;
    char err[512] = "";
    int rc = gguf_open(path, &f, err, sizeof(err));

    if (rc != 0)
        fprintf(stderr, "gguf_open: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(f);
    return f;
}

/* Open PATH, expect failure, and return the message (static buffer). */
static const char *open_fails(const char *path)
{
    static char err[512];
    struct gguf_file *f = (void *)1;

    err[0] = '\0';
    assert_true(gguf_open(path, &f, err, sizeof(err)) < 0);
    assert_null(f);
    assert_non_null(strstr(err, path));
    assert_null(strchr(err, '\n'));
    return err;
}

static void check_tensor(const struct gguf_file *f, const char *name,
                         enum ggml_type type, uint64_t ne0, uint64_t ne1)
{
    const struct gguf_tensor *t = gguf_find_tensor(f, name);

    assert_non_null(t);
    assert_int_equal(t->type, type);
    assert_int_equal(t->ne[0], ne0);
    assert_int_equal(t->ne[1], ne1);
    assert_int_equal(t->nbytes, ggml_row_size(type, ne0) * ne1);
    assert_true((const uint8_t *)t->data >= f->map);
    assert_true((const uint8_t *)t->data + t->nbytes <= f->map + f->map_size);
    assert_int_equal(((const uint8_t *)t->data - f->map) % f->alignment, 0);
}

static void check_llama_meta(const struct gguf_file *f, uint64_t n_tensors,
                             uint32_t n_embd, uint32_t n_ff,
                             uint32_t n_layer, uint32_t n_vocab)
{
    uint32_t v;
    float eps;
    char *arch = gguf_get_str_dup(f, "general.architecture");
    const struct gguf_kv *tokens = gguf_find_kv(f, "tokenizer.ggml.tokens");

    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, 32);
    assert_int_equal(f->n_tensors, n_tensors);
    assert_string_equal(arch, "llama");
    free(arch);
    assert_int_equal(gguf_get_u32(f, "llama.embedding_length", &v), 0);
    assert_int_equal(v, n_embd);
    assert_int_equal(gguf_get_u32(f, "llama.feed_forward_length", &v), 0);
    assert_int_equal(v, n_ff);
    assert_int_equal(gguf_get_u32(f, "llama.block_count", &v), 0);
    assert_int_equal(v, n_layer);
    assert_int_equal(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon",
                                  &eps), 0);
    assert_true(eps > 0.99e-5f && eps < 1.01e-5f);
    assert_non_null(tokens);
    assert_int_equal(tokens->type, GGUF_TYPE_ARRAY);
    assert_int_equal(tokens->v.arr.type, GGUF_TYPE_STRING);
    assert_int_equal(tokens->v.arr.count, n_vocab);
    assert_int_equal(tokens->v.arr.strs[1].len, 3);
    assert_memory_equal(tokens->v.arr.strs[1].data, "<s>", 3);
    assert_int_equal(gguf_get_u32(f, "no.such.key", &v), -1);
    assert_null(gguf_find_tensor(f, "no.such.tensor"));
}

static void test_open_stories(void **state)
{
    struct gguf_file *f = open_ok(MODELS "stories260K-f32.gguf");
    int64_t sep;

    (void)state;
    check_llama_meta(f, 48, 64, 172, 5, 512);
    check_tensor(f, "token_embd.weight", GGML_TYPE_F32, 64, 512);
    check_tensor(f, "output.weight", GGML_TYPE_F32, 64, 512);
    check_tensor(f, "blk.4.ffn_down.weight", GGML_TYPE_F32, 172, 64);
    check_tensor(f, "blk.0.attn_k.weight", GGML_TYPE_F32, 64, 32);
    check_tensor(f, "blk.0.attn_norm.weight", GGML_TYPE_F32, 64, 1);
    /* 4294967295 stored as uint32 reads back unchanged as an i64. */
    assert_int_equal(gguf_get_i64(f, "tokenizer.ggml.seperator_token_id",
                                  &sep), 0);
    assert_int_equal(sep, 4294967295LL);
    gguf_close(f);

    f = open_ok(MODELS "stories260K-q8_0.gguf");
    check_llama_meta(f, 48, 64, 172, 5, 512);
    check_tensor(f, "token_embd.weight", GGML_TYPE_Q8_0, 64, 512);
    check_tensor(f, "blk.2.attn_q.weight", GGML_TYPE_Q8_0, 64, 64);
    check_tensor(f, "blk.2.ffn_down.weight", GGML_TYPE_F16, 172, 64);
    check_tensor(f, "output_norm.weight", GGML_TYPE_F32, 64, 1);
    gguf_close(f);
}

static void test_open_rand_d128(void **state)
{
    static const struct { const char *path; enum ggml_type type; } m[] = {
        { MODELS "rand-d128-f16.gguf", GGML_TYPE_F16 },
        { MODELS "rand-d128-q8_0.gguf", GGML_TYPE_Q8_0 },
        { MODELS "rand-d128-q4_0.gguf", GGML_TYPE_Q4_0 },
    };
    (void)state;
    for (int i = 0; i < 3; i++) {
        struct gguf_file *f = open_ok(m[i].path);
        uint32_t ctx;

        check_llama_meta(f, 21, 128, 384, 2, 32000);
        assert_int_equal(gguf_get_u32(f, "llama.context_length", &ctx), 0);
        assert_int_equal(ctx, 512);
        check_tensor(f, "token_embd.weight", m[i].type, 128, 32000);
        check_tensor(f, "output.weight", m[i].type, 128, 32000);
        check_tensor(f, "blk.1.attn_v.weight", m[i].type, 128, 64);
        check_tensor(f, "blk.1.ffn_down.weight", m[i].type, 384, 128);
        check_tensor(f, "blk.1.ffn_norm.weight", GGML_TYPE_F32, 128, 1);
        gguf_close(f);
    }
}

static void test_open_tiny_random(void **state)
{
    struct gguf_file *f = open_ok(MODELS "llama-2-tiny-random.gguf");
    uint32_t heads;

    (void)state;
    check_llama_meta(f, 12, 8, 32, 1, 32000);
    assert_int_equal(gguf_get_u32(f, "llama.attention.head_count", &heads),
                     0);
    assert_int_equal(heads, 2);
    check_tensor(f, "token_embd.weight", GGML_TYPE_F16, 8, 32000);
    check_tensor(f, "blk.0.ffn_up.weight", GGML_TYPE_F16, 8, 32);
    gguf_close(f);
}

static void test_open_vocab_files(void **state)
{
    static const struct { const char *file, *model; } v[] = {
        { "ggml-vocab-bert-bge.gguf", "bert" },
        { "ggml-vocab-deepseek-coder.gguf", "gpt2" },
        { "ggml-vocab-deepseek-llm.gguf", "gpt2" },
        { "ggml-vocab-falcon.gguf", "gpt2" },
        { "ggml-vocab-gpt-2.gguf", "gpt2" },
        { "ggml-vocab-llama-spm.gguf", "llama" },
        { "ggml-vocab-phi-3.gguf", "llama" },
        { "ggml-vocab-starcoder.gguf", "gpt2" },
    };
    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), VOCAB "%s", v[i].file);
        struct gguf_file *f = open_ok(path);
        char *model = gguf_get_str_dup(f, "tokenizer.ggml.model");
        const struct gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");

        assert_int_equal(f->version, 3);
        assert_int_equal(f->n_tensors, 0);
        assert_non_null(model);
        assert_string_equal(model, v[i].model);
        assert_non_null(tok);
        assert_true(tok->v.arr.count > 1000);
        for (uint64_t k = 0; k < tok->v.arr.count; k++)
            assert_true(tok->v.arr.strs[k].data >= (const char *)f->map);
        free(model);
        gguf_close(f);
    }
}

/* A growable byte buffer for writing GGUF files by hand. */
struct bytes {
    uint8_t data[4096];
    size_t len;
};

static void put(struct bytes *b, const void *p, size_t n)
{
    assert_true(b->len + n <= sizeof(b->data));
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u32(struct bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct bytes *b, uint64_t v) { put(b, &v, 8); }

static void put_str(struct bytes *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void put_key(struct bytes *b, const char *key, enum gguf_type t)
{
    put_str(b, key);
    put_u32(b, t);
}

/* The variations a test can make to the small file. */
struct small_spec {
    uint32_t version;
    uint32_t alignment;
    uint32_t b_type;          /* type of tensor "b" */
    uint64_t b_ne0;           /* row length of tensor "b" */
    uint32_t b_ndims;
    uint64_t b_offset;        /* offset of tensor "b" */
    uint64_t key_len;         /* length written for the first key */
    uint64_t n_kv_add;        /* added to the metadata count */
    int nested_array;
    int duplicate_key;
    size_t cut;               /* bytes removed from the end */
};

static const struct small_spec small_default = {
    .version = 2, .alignment = 64, .b_type = GGML_TYPE_Q4_0, .b_ne0 = 32,
    .b_ndims = 2, .b_offset = 64,
};

/*
 * Write a small file: 10 metadata values of all kinds and three tensors,
 * "a" F32 [4, 2] at 0, "b" Q4_0 [32, 2] at 64 and "c" F16 [3] at 128.
 * Returns the path.
 */
static const char *write_small(const struct small_spec *sp, const char *tag)
{
    static char path[128];
    struct bytes *b = calloc(1, sizeof(*b));
    uint32_t n_kv = 10 + (sp->nested_array ? 1 : 0) +
                    (sp->duplicate_key ? 1 : 0);
    int16_t i16 = -1234;
    int8_t i8 = -5;
    uint8_t u8 = 200, yes = 1;
    float f32 = 0.5f;
    double f64 = -2.25;
    int32_t arr[3] = { 7, -8, 9 };
    FILE *fp;

    assert_non_null(b);
    snprintf(path, sizeof(path), "%s/%s.gguf", tmp_dir, tag);
    put(b, "GGUF", 4);
    put_u32(b, sp->version);
    put_u64(b, 3);
    put_u64(b, n_kv + sp->n_kv_add);

    put_u64(b, sp->key_len ? sp->key_len : strlen("general.architecture"));
    put(b, "general.architecture", strlen("general.architecture"));
    put_u32(b, GGUF_TYPE_STRING);
    put_str(b, "llama");
    put_key(b, "general.alignment", GGUF_TYPE_UINT32);
    put_u32(b, sp->alignment);
    put_key(b, "t.u8", GGUF_TYPE_UINT8);
    put(b, &u8, 1);
    put_key(b, "t.i8", GGUF_TYPE_INT8);
    put(b, &i8, 1);
    put_key(b, "t.i16", GGUF_TYPE_INT16);
    put(b, &i16, 2);
    put_key(b, "t.f32", GGUF_TYPE_FLOAT32);
    put(b, &f32, 4);
    put_key(b, "t.f64", GGUF_TYPE_FLOAT64);
    put(b, &f64, 8);
    put_key(b, "t.bool", GGUF_TYPE_BOOL);
    put(b, &yes, 1);
    put_key(b, "t.ints", GGUF_TYPE_ARRAY);
    put_u32(b, GGUF_TYPE_INT32);
    put_u64(b, 3);
    put(b, arr, sizeof(arr));
    put_key(b, "t.strs", GGUF_TYPE_ARRAY);
    put_u32(b, GGUF_TYPE_STRING);
    put_u64(b, 2);
    put_str(b, "hello");
    put_str(b, "");
    if (sp->nested_array) {
        put_key(b, "t.nested", GGUF_TYPE_ARRAY);
        put_u32(b, GGUF_TYPE_ARRAY);
        put_u64(b, 1);
        put_u32(b, GGUF_TYPE_UINT8);
        put_u64(b, 1);
        put(b, &u8, 1);
    }
    if (sp->duplicate_key) {
        put_key(b, "t.u8", GGUF_TYPE_UINT8);
        put(b, &u8, 1);
    }

    put_str(b, "a");
    put_u32(b, 2);
    put_u64(b, 4);
    put_u64(b, 2);
    put_u32(b, GGML_TYPE_F32);
    put_u64(b, 0);
    put_str(b, "b");
    put_u32(b, sp->b_ndims);
    for (uint32_t d = 0; d < sp->b_ndims && d < 8; d++)
        put_u64(b, d == 0 ? sp->b_ne0 : 2);
    put_u32(b, sp->b_type);
    put_u64(b, sp->b_offset);
    put_str(b, "c");
    put_u32(b, 1);
    put_u64(b, 3);
    put_u32(b, GGML_TYPE_F16);
    put_u64(b, 128);

    /* Pad to the alignment, then the data: a = 0..7, b = 2 Q4_0 blocks
     * with d = 1.0 and nibbles (i % 16), c = 1.0, -2.0, 0.5. */
    uint32_t align = sp->alignment && !(sp->alignment & (sp->alignment - 1))
                     ? sp->alignment : 32;
    while (b->len % align)
        put(b, "", 1);
    size_t data = b->len;
    for (int i = 0; i < 8; i++) {
        float v = (float)i;
        put(b, &v, 4);
    }
    while (b->len < data + 64)
        put(b, "", 1);
    for (int blk = 0; blk < 2; blk++) {
        uint16_t one = 0x3c00;
        put(b, &one, 2);
        for (int i = 0; i < 16; i++) {
            uint8_t q = (uint8_t)(i | (15 - i) << 4);
            put(b, &q, 1);
        }
    }
    while (b->len < data + 128)
        put(b, "", 1);
    uint16_t c[3] = { 0x3c00, 0xc000, 0x3800 };
    put(b, c, sizeof(c));

    fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b->data, 1, b->len - sp->cut, fp),
                     b->len - sp->cut);
    fclose(fp);
    free(b);
    return path;
}

static void test_small_v2_file(void **state)
{
    struct gguf_file *f = open_ok(write_small(&small_default, "small"));
    const struct gguf_kv *kv;
    int64_t i;
    uint32_t u;
    float x;
    bool yes;

    (void)state;
    assert_int_equal(f->version, 2);
    assert_int_equal(f->alignment, 64);
    assert_int_equal(f->n_kv, 10);
    assert_int_equal(gguf_get_u32(f, "t.u8", &u), 0);
    assert_int_equal(u, 200);
    assert_int_equal(gguf_get_i64(f, "t.i8", &i), 0);
    assert_int_equal(i, -5);
    assert_int_equal(gguf_get_i64(f, "t.i16", &i), 0);
    assert_int_equal(i, -1234);
    assert_int_equal(gguf_get_u32(f, "t.i16", &u), -1);   /* negative */
    assert_int_equal(gguf_get_f32(f, "t.f32", &x), 0);
    assert_true(x == 0.5f);
    assert_int_equal(gguf_get_f32(f, "t.f64", &x), 0);
    assert_true(x == -2.25f);
    assert_int_equal(gguf_get_f32(f, "t.i16", &x), 0);
    assert_true(x == -1234.0f);
    assert_int_equal(gguf_get_bool(f, "t.bool", &yes), 0);
    assert_true(yes);
    assert_int_equal(gguf_get_bool(f, "t.u8", &yes), -1);
    assert_int_equal(gguf_get_u32(f, "general.architecture", &u), -1);
    assert_null(gguf_get_str_dup(f, "t.u8"));

    kv = gguf_find_kv(f, "t.ints");
    assert_non_null(kv);
    assert_int_equal(kv->v.arr.type, GGUF_TYPE_INT32);
    assert_int_equal(kv->v.arr.count, 3);
    int32_t ints[3];
    memcpy(ints, kv->v.arr.data, sizeof(ints));
    assert_int_equal(ints[1], -8);
    kv = gguf_find_kv(f, "t.strs");
    assert_non_null(kv);
    assert_int_equal(kv->v.arr.count, 2);
    assert_int_equal(kv->v.arr.strs[0].len, 5);
    assert_memory_equal(kv->v.arr.strs[0].data, "hello", 5);
    assert_int_equal(kv->v.arr.strs[1].len, 0);

    const struct gguf_tensor *a = gguf_find_tensor(f, "a");
    const struct gguf_tensor *b = gguf_find_tensor(f, "b");
    const struct gguf_tensor *c = gguf_find_tensor(f, "c");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_int_equal(a->nbytes, 32);
    assert_int_equal(b->nbytes, 36);
    assert_int_equal(c->nbytes, 6);
    assert_int_equal(c->n_dims, 1);
    assert_int_equal(c->ne[1], 1);
    float a7;
    memcpy(&a7, (const uint8_t *)a->data + 28, 4);
    assert_true(a7 == 7.0f);
    assert_int_equal(((const uint8_t *)b->data)[2], 0xf0);
    uint16_t h[3];
    memcpy(h, c->data, sizeof(h));
    assert_true(ggml_fp16_to_fp32(h[0]) == 1.0f);
    assert_true(ggml_fp16_to_fp32(h[1]) == -2.0f);
    assert_true(ggml_fp16_to_fp32(h[2]) == 0.5f);
    gguf_close(f);
}

static void test_half_and_bf16(void **state)
{
    (void)state;
    assert_true(ggml_fp16_to_fp32(0x0000) == 0.0f);
    assert_true(ggml_fp16_to_fp32(0x7bff) == 65504.0f);
    assert_true(ggml_fp16_to_fp32(0x0001) == 5.9604644775390625e-8f);
    assert_true(ggml_fp16_to_fp32(0x8400) == -6.103515625e-5f);
    assert_true(ggml_fp16_to_fp32(0x7c00) > 1e38f);
    assert_true(ggml_fp16_to_fp32(0x7e00) != ggml_fp16_to_fp32(0x7e00));
    assert_true(ggml_bf16_to_fp32(0x3f80) == 1.0f);
    assert_true(ggml_bf16_to_fp32(0xc040) == -3.0f);
    assert_int_equal(ggml_row_size(GGML_TYPE_Q8_0, 64), 68);
    assert_int_equal(ggml_row_size(GGML_TYPE_Q4_0, 64), 36);
    assert_int_equal(ggml_row_size(GGML_TYPE_Q4_0, 33), 0);
    assert_int_equal(ggml_row_size(GGML_TYPE_BF16, 3), 6);
    assert_int_equal(ggml_row_size((enum ggml_type)12, 256), 0);
    assert_string_equal(ggml_type_name(GGML_TYPE_Q4_0), "Q4_0");
}

/* Each malformed variation fails with a message containing WHAT. */
static void test_malformed_files(void **state)
{
    struct {
        const char *tag, *what;
        struct small_spec sp;
    } cases[12];
    int n = 0;

    (void)state;
#define CASE(t, w, field, value)                                          \
    do {                                                                  \
        cases[n].tag = t;                                                 \
        cases[n].what = w;                                                \
        cases[n].sp = small_default;                                      \
        cases[n].sp.field = value;                                        \
        n++;                                                              \
    } while (0)
    CASE("v1", "unsupported GGUF version 1", version, 1);
    CASE("v4", "unsupported GGUF version 4", version, 4);
    CASE("type12", "unknown tensor type 12", b_type, 12);
    CASE("ndims5", "5 dimensions", b_ndims, 5);
    CASE("zerodim", "invalid size 0", b_ne0, 0);
    CASE("rowlen", "not a multiple of the Q4_0 block size", b_ne0, 31);
    CASE("misaligned", "is not a multiple of the alignment", b_offset, 96);
    CASE("pastend", "runs past the end", b_offset, 1u << 20);
    CASE("align3", "not a power of two", alignment, 3);
    CASE("hugekey", "past the end of the file", key_len, UINT64_MAX / 2);
    CASE("nested", "arrays of arrays", nested_array, 1);
    CASE("dupkey", "duplicate metadata key 't.u8'", duplicate_key, 1);
#undef CASE
    for (int i = 0; i < n; i++) {
        const char *err = open_fails(write_small(&cases[i].sp, cases[i].tag));
        if (!strstr(err, cases[i].what))
            fprintf(stderr, "%s: got '%s'\n", cases[i].tag, err);
        assert_non_null(strstr(err, cases[i].what));
    }

    struct small_spec sp = small_default;
    sp.n_kv_add = UINT64_MAX / 4;
    assert_non_null(strstr(open_fails(write_small(&sp, "hugecount")),
                           "metadata count"));
    sp = small_default;
    sp.cut = 1;
    assert_non_null(strstr(open_fails(write_small(&sp, "cut")),
                           "runs past the end"));
}

/* Copy the first N bytes of SRC into DST. */
static void write_prefix(const uint8_t *src, size_t n, const char *dst)
{
    FILE *fp = fopen(dst, "wb");

    assert_non_null(fp);
    assert_int_equal(fwrite(src, 1, n, fp), n);
    fclose(fp);
}

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;

    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *size = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc(*size);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, *size, fp), *size);
    fclose(fp);
    return buf;
}

/* Every truncation before the end of the last tensor's data fails. */
static void test_truncated_files(void **state)
{
    size_t size, end = 0;
    uint8_t *orig = read_all(MODELS "stories260K-q8_0.gguf", &size);
    struct gguf_file *f = open_ok(MODELS "stories260K-q8_0.gguf");
    char path[128];

    (void)state;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        size_t e = (size_t)((const uint8_t *)f->tensors[i].data - f->map) +
                   f->tensors[i].nbytes;
        if (e > end)
            end = e;
    }
    gguf_close(f);
    assert_true(end <= size);
    snprintf(path, sizeof(path), "%s/trunc.gguf", tmp_dir);

    srand(12345);
    for (int i = 0; i < 64 + 64 + 200; i++) {
        size_t cut;
        if (i < 64)
            cut = (size_t)i * 1024;           /* every KB of 64 KB */
        else if (i < 128)
            cut = (size_t)(i - 64);           /* every header byte */
        else
            cut = (size_t)rand() % end;       /* random positions */
        if (cut >= end)
            continue;
        write_prefix(orig, cut, path);
        open_fails(path);
    }
    free(orig);
}

/* Random byte changes in the metadata never crash the reader; a failure
 * always names the file. */
static void test_corrupted_bytes(void **state)
{
    size_t size;
    uint8_t *orig = read_all(MODELS "stories260K-q8_0.gguf", &size);
    uint8_t *copy = malloc(size);
    struct gguf_file *f = open_ok(MODELS "stories260K-q8_0.gguf");
    size_t meta_end = (size_t)((const uint8_t *)f->tensors[0].data - f->map);
    char path[128];
    int n_failed = 0;

    (void)state;
    gguf_close(f);
    assert_non_null(copy);
    snprintf(path, sizeof(path), "%s/flip.gguf", tmp_dir);
    srand(777);
    for (int i = 0; i < 400; i++) {
        memcpy(copy, orig, size);
        /* Half the time hit the first 64 bytes: header, first keys. */
        size_t pos = (size_t)rand() % (i % 2 ? meta_end : 64);
        copy[pos] = (uint8_t)(rand() & 0xff);
        if (i % 4 == 0)
            copy[pos] ^= 0x80;
        write_prefix(copy, size, path);

        struct gguf_file *g = NULL;
        char err[512] = "";
        if (gguf_open(path, &g, err, sizeof(err)) == 0) {
            gguf_close(g);
        } else {
            assert_non_null(strstr(err, path));
            n_failed++;
        }
    }
    /* Flips in the magic and counts must have been caught. */
    assert_true(n_failed > 20);
    free(copy);
    free(orig);
}

static void test_missing_and_empty(void **state)
{
    char path[128];

    (void)state;
    open_fails("../shared/models/does-not-exist.gguf");
    snprintf(path, sizeof(path), "%s/empty.gguf", tmp_dir);
    write_prefix((const uint8_t *)"", 0, path);
    assert_non_null(strstr(open_fails(path), "truncated"));
    write_prefix((const uint8_t *)"GGML and then some padding bytes", 32,
                 path);
    assert_non_null(strstr(open_fails(path), "bad magic"));
    assert_non_null(strstr(open_fails(tmp_dir), "not a regular file"));
}

static int make_tmp(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/test_gguf.XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

/* Remove the files the tests wrote, then the folder. */
static int remove_tmp(void **state)
{
    static const char *names[] = {
        "small", "v1", "v4", "type12", "ndims5", "zerodim", "rowlen",
        "misaligned", "pastend", "align3", "hugekey", "nested", "dupkey",
        "hugecount", "cut", "trunc", "flip", "empty",
    };
    char path[128];

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s.gguf", tmp_dir, names[i]);
        unlink(path);
    }
    return rmdir(tmp_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_stories),
        cmocka_unit_test(test_open_rand_d128),
        cmocka_unit_test(test_open_tiny_random),
        cmocka_unit_test(test_open_vocab_files),
        cmocka_unit_test(test_small_v2_file),
        cmocka_unit_test(test_half_and_bf16),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_truncated_files),
        cmocka_unit_test(test_corrupted_bytes),
        cmocka_unit_test(test_missing_and_empty),
    };
    return cmocka_run_group_tests(tests, make_tmp, remove_tmp);
}

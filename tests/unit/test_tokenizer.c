/*
 * Tokenizer tests against llama.cpp's outputs: the vocabulary test sets
 * (ids without BOS), every model's tokenize.json (ids with and without
 * BOS and special-token parsing, pieces, detokenized text), the
 * streaming detokenizer on split multi-byte characters, and rejection of
 * tokenizer models other than "llama".
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "engine/eng_gguf.h"
#include "engine/eng_tokenizer.h"

#define SHARED "../shared/"
#define VOCAB_DIR SHARED "reference/vocab/"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            if (len)
                *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

struct loaded {
    struct gguf_file *gguf;
    struct eng_tokenizer *tok;
};

static void load_or_fail(const char *path, struct loaded *l)
{
    char err[256] = "";

    if (gguf_open(path, &l->gguf, err, sizeof(err)) < 0)
        fail_msg("gguf_open %s: %s", path, err);
    if (eng_tok_load(l->gguf, &l->tok, err, sizeof(err)) < 0)
        fail_msg("eng_tok_load %s: %s", path, err);
}

static void unload(struct loaded *l)
{
    eng_tok_free(l->tok);
    gguf_close(l->gguf);
}

/* Print both id lists when they differ, then fail. */
static void check_ids(const char *what, const char *text, const int32_t *got,
                      int n_got, const int32_t *want, int n_want)
{
    if (n_got == n_want &&
        (n_got == 0 || memcmp(got, want, (size_t)n_got * 4) == 0))
        return;
    fprintf(stderr, "%s mismatch for text \"%s\"\n  got: ", what, text);
    for (int i = 0; i < n_got; i++)
        fprintf(stderr, " %d", got[i]);
    fprintf(stderr, "\n  want:");
    for (int i = 0; i < n_want; i++)
        fprintf(stderr, " %d", want[i]);
    fprintf(stderr, "\n");
    fail_msg("%s mismatch", what);
}

/* ---- (a) llama.cpp's vocabulary test sets ---- */

static int parse_id_line(const char *line, size_t len, int32_t *ids, int cap)
{
    int n = 0;
    size_t i = 0;

    while (i < len) {
        long v = 0;

        while (i < len && line[i] == ' ')
            i++;
        if (i >= len)
            break;
        while (i < len && line[i] >= '0' && line[i] <= '9')
            v = v * 10 + (line[i++] - '0');
        if (n < cap)
            ids[n] = (int32_t)v;
        n++;
    }
    return n;
}

static void run_vocab_cases(const char *name, int expected_cases)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char path[512];
    struct loaded l;
    char *inp, *outp, *ip, *op;
    size_t inp_len, out_len;
    int n_cases = 0, n_pass = 0;

    snprintf(path, sizeof(path), VOCAB_DIR "%s", name);
    load_or_fail(path, &l);
    snprintf(path, sizeof(path), VOCAB_DIR "%s.inp", name);
    inp = read_file(path, &inp_len);
    snprintf(path, sizeof(path), VOCAB_DIR "%s.out", name);
    outp = read_file(path, &out_len);
    assert_non_null(inp);
    assert_non_null(outp);

    ip = inp;
    op = outp;
    for (;;) {
        char *end = strstr(ip, sep);
        char *eol;
        int32_t want[1024], *got;
        int n_want, n_got;

        if (!end)
            break;
        eol = strchr(op, '\n');
        assert_non_null(eol);
        n_want = parse_id_line(op, (size_t)(eol - op), want, 1024);
        assert_true(n_want <= 1024);
        *end = '\0';
        assert_int_equal(eng_tok_encode(l.tok, ip, (size_t)(end - ip),
                                        false, false, &got, &n_got), 0);
        check_ids(name, ip, got, n_got, want, n_want);
        free(got);
        n_pass++;
        n_cases++;
        ip = end + strlen(sep);
        op = eol + 1;
    }
    assert_int_equal(*op, '\0');
    assert_int_equal(n_cases, expected_cases);
    printf("[          ] %s: %d/%d cases\n", name, n_pass, n_cases);
    free(inp);
    free(outp);
    unload(&l);
}

static void test_vocab_llama_spm(void **state)
{
    (void)state;
    run_vocab_cases("ggml-vocab-llama-spm.gguf", 46);
}

static void test_vocab_phi3(void **state)
{
    (void)state;
    run_vocab_cases("ggml-vocab-phi-3.gguf", 46);
}

/* ---- (b) tokenize.json of every model ---- */

static int json_ids(const cJSON *arr, int32_t *ids, int cap)
{
    int n = 0;
    const cJSON *it;

    cJSON_ArrayForEach(it, arr) {
        if (n < cap)
            ids[n] = (int32_t)it->valueint;
        n++;
    }
    return n;
}

static void check_encode(struct eng_tokenizer *tok, const cJSON *c,
                         const char *field, bool add_bos, bool special)
{
    const cJSON *text = cJSON_GetObjectItem(c, "text");
    const cJSON *want_json = cJSON_GetObjectItem(c, field);
    int32_t want[4096], *got;
    int n_want, n_got;

    assert_non_null(want_json);
    n_want = json_ids(want_json, want, 4096);
    assert_true(n_want <= 4096);
    assert_int_equal(eng_tok_encode(tok, text->valuestring,
                                    strlen(text->valuestring), add_bos,
                                    special, &got, &n_got), 0);
    check_ids(field, text->valuestring, got, n_got, want, n_want);
    free(got);
}

/* Compare each id's piece with pieces_nobos and their concatenation
 * with detok_nobos. */
static void check_pieces(struct eng_tokenizer *tok, const cJSON *c)
{
    const cJSON *ids = cJSON_GetObjectItem(c, "ids_nobos");
    const cJSON *pieces = cJSON_GetObjectItem(c, "pieces_nobos");
    const cJSON *detok = cJSON_GetObjectItem(c, "detok_nobos");
    char all[8192];
    size_t n_all = 0;

    assert_int_equal(cJSON_GetArraySize(ids), cJSON_GetArraySize(pieces));
    for (int i = 0; i < cJSON_GetArraySize(ids); i++) {
        int32_t id = (int32_t)cJSON_GetArrayItem(ids, i)->valueint;
        const cJSON *p = cJSON_GetArrayItem(pieces, i);
        char want[256], got[256];
        int n_want = 0, n_got;

        if (cJSON_IsString(p)) {
            n_want = (int)strlen(p->valuestring);
            memcpy(want, p->valuestring, (size_t)n_want);
        } else {
            const cJSON *b;

            cJSON_ArrayForEach(b, p)
                want[n_want++] = (char)b->valueint;
        }
        n_got = eng_tok_piece(tok, id, got, sizeof(got));
        if (n_got != n_want || memcmp(got, want, (size_t)n_want) != 0)
            fail_msg("piece of id %d in \"%s\": got %d bytes \"%.*s\"", id,
                     cJSON_GetObjectItem(c, "text")->valuestring, n_got,
                     n_got, got);
        assert_true(n_all + (size_t)n_got < sizeof(all));
        memcpy(all + n_all, got, (size_t)n_got);
        n_all += (size_t)n_got;
    }
    assert_int_equal(n_all, strlen(detok->valuestring));
    assert_memory_equal(all, detok->valuestring, n_all);
}

static void run_model_reference(const char *model)
{
    static const struct {
        const char *field;
        bool add_bos, special;
    } modes[] = {
        { "ids_bos", true, false },
        { "ids_nobos", false, false },
        { "ids_bos_parse_special", true, true },
        { "ids_nobos_parse_special", false, true },
    };
    char path[512];
    struct loaded l;
    cJSON *root, *cases, *c;
    char *json;
    int n = 0;

    snprintf(path, sizeof(path), SHARED "models/%s.gguf", model);
    load_or_fail(path, &l);
    snprintf(path, sizeof(path), SHARED "reference/%s/tokenize.json", model);
    json = read_file(path, NULL);
    if (!json)
        fail_msg("cannot read %s", path);
    root = cJSON_Parse(json);
    assert_non_null(root);
    cases = cJSON_GetObjectItem(root, "cases");
    assert_true(cJSON_GetArraySize(cases) > 0);
    cJSON_ArrayForEach(c, cases) {
        for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++)
            check_encode(l.tok, c, modes[m].field, modes[m].add_bos,
                         modes[m].special);
        check_pieces(l.tok, c);
        n++;
    }
    printf("[          ] %s: %d/%d cases\n", model, n,
           cJSON_GetArraySize(cases));
    cJSON_Delete(root);
    free(json);
    unload(&l);
}

static void test_models_tokenize_json(void **state)
{
    DIR *dir = opendir(SHARED "models");
    struct dirent *e;
    int n_models = 0;

    (void)state;
    assert_non_null(dir);
    while ((e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        char model[256];

        if (len < 6 || len >= sizeof(model) ||
            strcmp(e->d_name + len - 5, ".gguf") != 0)
            continue;
        memcpy(model, e->d_name, len - 5);
        model[len - 5] = '\0';
        run_model_reference(model);
        n_models++;
    }
    closedir(dir);
    assert_true(n_models >= 6);
}

/* ---- (c) streaming detokenizer ---- */

/* Check that BUF[0..N) is valid UTF-8. */
static int valid_utf8(const char *buf, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = (unsigned char)buf[i];
        int need = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2
                 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4
                 : 0;

        if (need == 0 || i + (size_t)need > n)
            return 0;
        for (int k = 1; k < need; k++)
            if (((unsigned char)buf[i + k] & 0xc0) != 0x80)
                return 0;
        i += (size_t)need;
    }
    return 1;
}

static void stream_and_check(struct eng_tokenizer *tok, const char *text,
                             const char *expected)
{
    struct eng_detok d = { 0 };
    int32_t *ids;
    int n_ids, n_bytes = 0;
    char all[4096], chunk[256];
    size_t n_all = 0, n;

    assert_int_equal(eng_tok_encode(tok, text, strlen(text), false, false,
                                    &ids, &n_ids), 0);
    for (int i = 0; i < n_ids; i++) {
        char piece[64];

        if (eng_tok_piece(tok, ids[i], piece, sizeof(piece)) == 1 &&
            ((unsigned char)piece[0] & 0x80))
            n_bytes++;
        n = eng_detok_push(&d, tok, ids[i], chunk, sizeof(chunk));
        assert_true(n <= sizeof(chunk));
        assert_true(valid_utf8(chunk, n));
        memcpy(all + n_all, chunk, n);
        n_all += n;
    }
    n = eng_detok_flush(&d, chunk, sizeof(chunk));
    assert_int_equal(n, 0);
    /* The text must really have gone through byte tokens. */
    assert_true(n_bytes >= 4);
    assert_int_equal(n_all, strlen(expected));
    assert_memory_equal(all, expected, n_all);
    free(ids);
}

static void test_detok_stream_multibyte(void **state)
{
    struct loaded l;

    (void)state;
    load_or_fail(SHARED "models/stories260K-f32.gguf", &l);
    stream_and_check(l.tok, "emoji \xf0\x9f\x98\x80 and \xe4\xb8\xad\xe6\x96"
                     "\x87 \xf0\x9f\xa6\x99!",
                     " emoji \xf0\x9f\x98\x80 and \xe4\xb8\xad\xe6\x96\x87 "
                     "\xf0\x9f\xa6\x99!");
    unload(&l);
}

/* Byte tokens that never form a character come out as U+FFFD. */
static void test_detok_invalid_bytes(void **state)
{
    struct loaded l;
    struct eng_detok d = { 0 };
    char out[64];
    size_t n;
    int32_t lead, cont, letter_a;
    char name[8];

    (void)state;
    load_or_fail(VOCAB_DIR "ggml-vocab-llama-spm.gguf", &l);
    /* In the llama vocabulary, <0xNN> is id NN + 3. */
    lead = 0xe4 + 3;
    cont = 0xb8 + 3;
    letter_a = 0x41 + 3;
    assert_int_equal(eng_tok_piece(l.tok, lead, name, sizeof(name)), 1);
    assert_int_equal((unsigned char)name[0], 0xe4);

    /* Lead byte, one continuation, then a plain letter. */
    assert_int_equal(eng_detok_push(&d, l.tok, lead, out, sizeof(out)), 0);
    assert_int_equal(eng_detok_push(&d, l.tok, cont, out, sizeof(out)), 0);
    n = eng_detok_push(&d, l.tok, letter_a, out, sizeof(out));
    assert_int_equal(n, 4);
    assert_memory_equal(out, "\xef\xbf\xbd" "A", 4);

    /* A lone continuation byte is replaced at once. */
    n = eng_detok_push(&d, l.tok, cont, out, sizeof(out));
    assert_int_equal(n, 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);

    /* An unfinished character at the end is replaced by the flush. */
    assert_int_equal(eng_detok_push(&d, l.tok, lead, out, sizeof(out)), 0);
    n = eng_detok_flush(&d, out, sizeof(out));
    assert_int_equal(n, 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(eng_detok_flush(&d, out, sizeof(out)), 0);

    /* A full buffer drops whole characters and never overflows: the
     * U+FFFD for the stray lead byte does not fit in 2 bytes, the 'A'
     * after it does. */
    assert_int_equal(eng_detok_push(&d, l.tok, lead, out, sizeof(out)), 0);
    memset(out, 'x', sizeof(out));
    n = eng_detok_push(&d, l.tok, letter_a, out, 2);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 'A');
    assert_int_equal(out[1], 'x');
    n = eng_detok_push(&d, l.tok, letter_a, out, 0);
    assert_int_equal(n, 0);
    unload(&l);
}

static void test_piece_control_and_range(void **state)
{
    struct loaded l;
    char buf[16];

    (void)state;
    load_or_fail(VOCAB_DIR "ggml-vocab-llama-spm.gguf", &l);
    assert_int_equal(eng_tok_piece(l.tok, eng_tok_bos(l.tok), buf,
                                   sizeof(buf)), 0);
    assert_int_equal(eng_tok_piece(l.tok, eng_tok_eos(l.tok), buf,
                                   sizeof(buf)), 0);
    assert_int_equal(eng_tok_piece(l.tok, -1, buf, sizeof(buf)), -1);
    assert_int_equal(eng_tok_piece(l.tok, eng_tok_n_vocab(l.tok), buf,
                                   sizeof(buf)), -1);
    assert_int_equal(eng_tok_n_vocab(l.tok), 32000);
    assert_int_equal(eng_tok_bos(l.tok), 1);
    assert_int_equal(eng_tok_eos(l.tok), 2);
    assert_true(eng_tok_add_bos(l.tok));
    assert_true(eng_tok_is_eog(l.tok, 2));
    assert_false(eng_tok_is_eog(l.tok, 1));
    assert_false(eng_tok_is_eog(l.tok, 100));
    unload(&l);
}

/*
 * Phi-3's special tokens: llama.cpp strips the whitespace after them
 * (chosen by general.name "Phi3") except after <s>, <unk> and
 * <|endoftext|>, and a fragment after a special token gets the space
 * prefix again. Without parse_special, control tokens stay plain text.
 * Expected ids follow llama.cpp's partition rules by hand.
 */
static void test_phi3_special_tokens(void **state)
{
    static const char chat[] = "<|user|>\nHi<|end|>\n<|assistant|>";
    static const int32_t want_special[] = { 1, 32010, 6324, 32007, 32001 };
    static const char mixed[] = "a <|end|>  b</s> c";
    static const int32_t want_mixed[] = { 263, 29871, 32007, 289, 2, 274 };
    struct loaded l;
    int32_t *ids;
    int n_ids;

    (void)state;
    load_or_fail(VOCAB_DIR "ggml-vocab-phi-3.gguf", &l);
    assert_int_equal(eng_tok_encode(l.tok, chat, strlen(chat), true, true,
                                    &ids, &n_ids), 0);
    check_ids("phi-3 chat", chat, ids, n_ids, want_special, 5);
    free(ids);

    assert_int_equal(eng_tok_encode(l.tok, chat, strlen(chat), false,
                                    false, &ids, &n_ids), 0);
    assert_true(n_ids > 10);
    for (int i = 0; i < n_ids; i++)
        assert_true(ids[i] < 32000);
    free(ids);

    assert_int_equal(eng_tok_encode(l.tok, mixed, strlen(mixed), false,
                                    true, &ids, &n_ids), 0);
    check_ids("phi-3 mixed", mixed, ids, n_ids, want_mixed, 6);
    free(ids);

    assert_true(eng_tok_is_eog(l.tok, 32007));
    assert_true(eng_tok_is_eog(l.tok, 32000));
    assert_false(eng_tok_is_eog(l.tok, 32010));
    unload(&l);
}

/* ---- (d) other tokenizer models ---- */

static void test_rejects_gpt2(void **state)
{
    struct gguf_file *f;
    struct eng_tokenizer *tok = (struct eng_tokenizer *)&tok;
    char err[256] = "";

    (void)state;
    assert_int_equal(gguf_open(VOCAB_DIR "ggml-vocab-gpt-2.gguf", &f, err,
                               sizeof(err)), 0);
    assert_true(eng_tok_load(f, &tok, err, sizeof(err)) < 0);
    assert_null(tok);
    assert_non_null(strstr(err, "unsupported tokenizer model 'gpt2'"));
    gguf_close(f);

    assert_int_equal(gguf_open(VOCAB_DIR "ggml-vocab-bert-bge.gguf", &f,
                               err, sizeof(err)), 0);
    assert_true(eng_tok_load(f, &tok, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "unsupported tokenizer model 'bert'"));
    gguf_close(f);
}

/* ---- robustness ---- */

/* A megabyte with no merges across it and a megabyte of one repeated
 * letter both finish quickly and cover every byte. */
static void test_large_input(void **state)
{
    struct loaded l;
    const size_t len = 1 << 20;
    char *text = malloc(len);
    int32_t *ids;
    int n_ids;
    clock_t start;
    double secs;

    (void)state;
    assert_non_null(text);
    load_or_fail(VOCAB_DIR "ggml-vocab-llama-spm.gguf", &l);

    start = clock();
    memset(text, 'a', len);
    assert_int_equal(eng_tok_encode(l.tok, text, len, true, true, &ids,
                                    &n_ids), 0);
    assert_true(n_ids > 1);
    assert_int_equal(ids[0], 1);
    free(ids);

    for (size_t i = 0; i < len; i++)
        text[i] = "ab <s>\xe4\xb8\xad\n"[i % 10];
    assert_int_equal(eng_tok_encode(l.tok, text, len, false, true, &ids,
                                    &n_ids), 0);
    assert_true(n_ids > (int)(len / 10));
    free(ids);
    secs = (double)(clock() - start) / CLOCKS_PER_SEC;
    assert_true(secs < 10.0);
    unload(&l);
    free(text);
}

static void test_empty_input(void **state)
{
    struct loaded l;
    int32_t *ids;
    int n_ids;

    (void)state;
    load_or_fail(VOCAB_DIR "ggml-vocab-llama-spm.gguf", &l);
    assert_int_equal(eng_tok_encode(l.tok, "", 0, false, false, &ids,
                                    &n_ids), 0);
    assert_non_null(ids);
    assert_int_equal(n_ids, 0);
    free(ids);
    assert_int_equal(eng_tok_encode(l.tok, "", 0, true, false, &ids,
                                    &n_ids), 0);
    assert_int_equal(n_ids, 1);
    assert_int_equal(ids[0], 1);
    free(ids);
    unload(&l);
}

/*
 * Protected ranges keep control-token text inside them as plain text,
 * leave special tokens outside them alone, and change nothing for text
 * that contains no special token.
 */
static void test_protected_ranges(void **state)
{
    static const char text[] = "<s>hi </s> there</s>";
    static const char inner[] = "hi </s> there";
    struct eng_tok_range range = { 3, 3 + sizeof inner - 1 };
    struct loaded l;
    int32_t *got, *plain, *full;
    int n_got, n_plain, n_full;

    (void)state;
    load_or_fail(VOCAB_DIR "ggml-vocab-llama-spm.gguf", &l);
    assert_int_equal(eng_tok_encode_protected(l.tok, text, strlen(text),
                                              false, &range, 1, &got,
                                              &n_got), 0);
    assert_int_equal(eng_tok_encode(l.tok, inner, strlen(inner), false,
                                    false, &plain, &n_plain), 0);
    /* <s>, then the inner text as plain text, then </s>. */
    assert_int_equal(n_got, n_plain + 2);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[n_got - 1], 2);
    assert_memory_equal(got + 1, plain, sizeof(*plain) * (size_t)n_plain);
    for (int i = 1; i < n_got - 1; i++)
        assert_int_not_equal(got[i], 2);
    free(got);
    free(plain);

    /* Benign text: the same ids as plain special-token parsing. */
    static const char benign[] = "<s>hello there</s>";
    struct eng_tok_range r2 = { 3, 14 };
    assert_int_equal(eng_tok_encode_protected(l.tok, benign, strlen(benign),
                                              true, &r2, 1, &got, &n_got),
                     0);
    assert_int_equal(eng_tok_encode(l.tok, benign, strlen(benign), true,
                                    true, &full, &n_full), 0);
    assert_int_equal(n_got, n_full);
    assert_memory_equal(got, full, sizeof(*full) * (size_t)n_full);
    free(got);
    free(full);
    unload(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protected_ranges),
        cmocka_unit_test(test_vocab_llama_spm),
        cmocka_unit_test(test_vocab_phi3),
        cmocka_unit_test(test_models_tokenize_json),
        cmocka_unit_test(test_detok_stream_multibyte),
        cmocka_unit_test(test_detok_invalid_bytes),
        cmocka_unit_test(test_piece_control_and_range),
        cmocka_unit_test(test_phi3_special_tokens),
        cmocka_unit_test(test_rejects_gpt2),
        cmocka_unit_test(test_large_input),
        cmocka_unit_test(test_empty_input),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Parity tests of the llama forward pass against llama.cpp's reference
 * logits and greedy generations, plus batching, thread-count and input
 * validation checks. Reference data lives in ../shared beside the
 * repository; tolerances follow how each model's weights are stored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_model.h"

#define MODELS "../shared/models/"
#define REFS "../shared/reference/"

/* How the greedy reference of a model is checked. */
enum greedy_mode {
    GREEDY_NONE,      /* logits nearly flat: no greedy check */
    GREEDY_CHECK,     /* ids exact up to the first near tie, then forced */
};

/*
 * TOL bounds the top-10 logits after the logits.json prompts. GREEDY_TOL
 * bounds the top-2 logits at the greedy steps. It is looser for the
 * trained stories260K model, because its cache holds F16 (as llama.cpp's
 * does) and activations are rounded to F16 or Q8_0. Float-order
 * differences of about 1e-7 then occasionally round one cached value or
 * quantized activation the other way. With this data each such flip
 * moved logits near 20 by up to about 1e-2 (F32) or 0.2 (Q8_0), and the
 * flips add up over the steps. The ids must still match exactly.
 */
struct model_case {
    const char *name;
    float tol;         /* absolute logit tolerance after the prompt */
    float greedy_tol;  /* the same at greedy steps */
    enum greedy_mode greedy;
};

static const struct model_case model_cases[] = {
    { "stories260K-f32", 1e-3f, 2e-2f, GREEDY_CHECK },
    { "stories260K-q8_0", 5e-2f, 0.25f, GREEDY_CHECK },
    { "rand-d128-f16", 1e-2f, 1e-2f, GREEDY_CHECK },
    { "rand-d128-q8_0", 5e-2f, 5e-2f, GREEDY_CHECK },
    { "rand-d128-q4_0", 5e-2f, 5e-2f, GREEDY_CHECK },
    { "llama-2-tiny-random", 1e-2f, 1e-2f, GREEDY_NONE },
};

static struct eng_model *load_model(const char *name, int n_threads)
{
    char path[256], err[512];
    struct eng_model *m = NULL;

    snprintf(path, sizeof(path), MODELS "%s.gguf", name);
    int rc = eng_model_load(path, n_threads, &m, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "load failed: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(m);
    return m;
}

static cJSON *load_json(const char *model, const char *file)
{
    char path[256];
    FILE *fp;
    long size;
    char *text;
    cJSON *json;

    snprintf(path, sizeof(path), REFS "%s/%s", model, file);
    fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, fp), (size_t)size);
    text[size] = '\0';
    fclose(fp);
    json = cJSON_Parse(text);
    free(text);
    assert_non_null(json);
    return json;
}

/* A field that may hold JSON directly or as a string of JSON text.
 * Returns a new tree the caller frees. */
static cJSON *field_json(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    assert_non_null(it);
    if (cJSON_IsString(it))
        return cJSON_Parse(it->valuestring);
    return cJSON_Duplicate(it, 1);
}

/* Copy a JSON array of integers into a new int32 array. */
static int32_t *json_ids(const cJSON *arr, int *n)
{
    int32_t *ids;
    int i = 0;
    const cJSON *it;

    assert_true(cJSON_IsArray(arr));
    *n = cJSON_GetArraySize(arr);
    ids = calloc((size_t)*n + 1, sizeof(int32_t));
    assert_non_null(ids);
    cJSON_ArrayForEach(it, arr)
        ids[i++] = (int32_t)it->valueint;
    return ids;
}

static int argmax(const float *v, int n)
{
    int best = 0;

    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* Feed TOKENS through a single-sequence step. */
static int step_one(struct eng_model *m, struct eng_kv *kv,
                    const int32_t *tokens, int n, float *logits)
{
    struct eng_seq_batch sb = { kv, tokens, n, logits };

    return eng_model_step(m, &sb, 1);
}

/*
 * Compare the reference top-10 with LOGITS: every reference logit within
 * TOL, and any id in our own top 10 but not in the reference's must tie
 * (within TOL) with the reference's 10th logit.
 */
static void check_top10(const char *name, const cJSON *top10,
                        const float *logits, int n_vocab, float tol)
{
    int ref_ids[10], n_ref = 0, ours[10];
    float ref_last = 0.0f;
    const cJSON *e;
    float *work = malloc((size_t)n_vocab * sizeof(float));

    assert_non_null(work);
    cJSON_ArrayForEach(e, top10) {
        int id = cJSON_GetObjectItem(e, "id")->valueint;
        float ref = (float)cJSON_GetObjectItem(e, "logit")->valuedouble;
        float diff = fabsf(logits[id] - ref);

        if (diff > tol)
            fprintf(stderr, "%s: id %d logit %f, reference %f\n", name, id,
                    logits[id], ref);
        assert_true(diff <= tol);
        assert_true(n_ref < 10);
        ref_ids[n_ref++] = id;
        ref_last = ref;
    }
    assert_int_equal(n_ref, 10);

    memcpy(work, logits, (size_t)n_vocab * sizeof(float));
    for (int k = 0; k < 10; k++) {
        ours[k] = argmax(work, n_vocab);
        work[ours[k]] = -INFINITY;
    }
    for (int k = 0; k < 10; k++) {
        int found = 0;
        for (int r = 0; r < 10; r++)
            found |= ours[k] == ref_ids[r];
        if (!found)
            assert_true(fabsf(logits[ours[k]] - ref_last) <= tol);
    }
    free(work);
}

static void check_logits_cases(const struct model_case *mc,
                               struct eng_model *m)
{
    cJSON *json = load_json(mc->name, "logits.json");
    const cJSON *cases = cJSON_GetObjectItem(json, "cases"), *c;
    int n_vocab = eng_model_info(m)->n_vocab, n_cases = 0;
    float *logits = malloc((size_t)n_vocab * sizeof(float));

    assert_non_null(logits);
    cJSON_ArrayForEach(c, cases) {
        cJSON *pj = field_json(c, "prompt_ids");
        cJSON *top10 = field_json(c, "top10");
        int n;
        int32_t *ids = json_ids(pj, &n);
        struct eng_kv *kv = eng_kv_new(m, 512);

        assert_non_null(kv);
        assert_int_equal(step_one(m, kv, ids, n, logits), 0);
        assert_int_equal(eng_kv_n_past(kv), n);
        check_top10(mc->name, top10, logits, n_vocab, mc->tol);
        eng_kv_free(kv);
        free(ids);
        cJSON_Delete(pj);
        cJSON_Delete(top10);
        n_cases++;
    }
    assert_int_equal(n_cases, 3);
    free(logits);
    cJSON_Delete(json);
}

/*
 * One greedy case: feed the prompt, then at each step require our argmax
 * to equal the reference id while the reference's top-2 margin is at
 * least 1e-2, and the reference's top-2 logits within GREEDY_TOL.
 * The next input is always the reference id, which equals our greedy
 * choice up to the first near tie and teacher-forces after it.
 */
static void check_greedy_case(const struct model_case *mc,
                              struct eng_model *m, const cJSON *c,
                              float *logits)
{
    cJSON *pj = field_json(c, "prompt_ids");
    cJSON *gj = field_json(c, "generated_ids");
    cJSON *tj = field_json(c, "top2_per_step");
    cJSON *fj = field_json(c, "first_step_with_margin_below_1e-2");
    int n_prompt, n_gen, n_vocab = eng_model_info(m)->n_vocab;
    int32_t *prompt = json_ids(pj, &n_prompt);
    int32_t *gen = json_ids(gj, &n_gen);
    int exact_steps = cJSON_IsNumber(fj) ? fj->valueint : n_gen;
    struct eng_kv *kv = eng_kv_new(m, 512);

    assert_non_null(kv);
    assert_int_equal(cJSON_GetArraySize(tj), n_gen);
    assert_int_equal(step_one(m, kv, prompt, n_prompt, logits), 0);
    for (int k = 0; k < n_gen; k++) {
        const cJSON *top2 = cJSON_GetArrayItem(tj, k), *e;

        if (k < exact_steps) {
            int ours = argmax(logits, n_vocab);
            if (ours != gen[k])
                fprintf(stderr, "%s: step %d: argmax %d, reference %d\n",
                        mc->name, k, ours, gen[k]);
            assert_int_equal(ours, gen[k]);
        }
        cJSON_ArrayForEach(e, top2) {
            int id = cJSON_GetArrayItem(e, 0)->valueint;
            float ref = (float)cJSON_GetArrayItem(e, 1)->valuedouble;
            float tol = mc->greedy_tol;
            if (fabsf(logits[id] - ref) > tol)
                fprintf(stderr, "%s: step %d: id %d logit %f, ref %f\n",
                        mc->name, k, id, logits[id], ref);
            assert_true(fabsf(logits[id] - ref) <= tol);
        }
        if (k + 1 < n_gen)
            assert_int_equal(step_one(m, kv, &gen[k], 1, logits), 0);
    }
    assert_int_equal(eng_kv_n_past(kv), n_prompt + n_gen - 1);
    eng_kv_free(kv);
    free(prompt);
    free(gen);
    cJSON_Delete(pj);
    cJSON_Delete(gj);
    cJSON_Delete(tj);
    cJSON_Delete(fj);
}

static void check_greedy_cases(const struct model_case *mc,
                               struct eng_model *m)
{
    cJSON *json = load_json(mc->name, "greedy.json");
    const cJSON *c;
    int n_vocab = eng_model_info(m)->n_vocab, n_cases = 0;
    float *logits = malloc((size_t)n_vocab * sizeof(float));

    assert_non_null(logits);
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(json, "cases")) {
        check_greedy_case(mc, m, c, logits);
        n_cases++;
    }
    assert_int_equal(n_cases, 10);
    free(logits);
    cJSON_Delete(json);
}

static void test_parity(void **state)
{
    const struct model_case *mc = *state;
    struct eng_model *m = load_model(mc->name, 2);

    check_logits_cases(mc, m);
    if (mc->greedy == GREEDY_CHECK)
        check_greedy_cases(mc, m);
    eng_model_free(m);
}

static int setup_case(void **state, int i)
{
    *state = (void *)&model_cases[i];
    return 0;
}

static int setup_0(void **s) { return setup_case(s, 0); }
static int setup_1(void **s) { return setup_case(s, 1); }
static int setup_2(void **s) { return setup_case(s, 2); }
static int setup_3(void **s) { return setup_case(s, 3); }
static int setup_4(void **s) { return setup_case(s, 4); }
static int setup_5(void **s) { return setup_case(s, 5); }

static void test_model_info(void **state)
{
    struct eng_model *m = load_model("stories260K-f32", 1);
    const struct eng_model_info *in = eng_model_info(m);

    (void)state;
    assert_int_equal(in->n_vocab, 512);
    assert_int_equal(in->n_ctx_train, 512);
    assert_int_equal(in->n_embd, 64);
    assert_int_equal(in->n_ff, 172);
    assert_int_equal(in->n_layer, 5);
    assert_int_equal(in->n_head, 8);
    assert_int_equal(in->n_head_kv, 4);
    assert_int_equal(in->n_rot, 8);
    assert_true(fabsf(in->rope_freq_base - 10000.0f) < 1e-3f);
    assert_true(fabsf(in->rms_eps - 1e-5f) < 1e-9f);
    assert_non_null(eng_model_gguf(m));
    eng_model_free(m);
}

/* Two sequences in one step give the logits each gives alone. */
/*
 * A sequence's logits are bit-identical whether it runs alone or shares
 * a step with another sequence, for every weight type: the batched and
 * single-token kernels must do the same arithmetic per token, or greedy
 * output would depend on server load.
 */
static void check_batch_invariance(const char *name)
{
    static const int32_t a[] = { 1, 403, 407, 261, 378 };
    static const int32_t b[] = { 1, 300, 301, 302, 303, 304, 305, 306 };
    struct eng_model *m = load_model(name, 2);
    int nv = eng_model_info(m)->n_vocab;
    size_t bytes = (size_t)nv * sizeof(float);
    float *la = malloc(bytes), *lb = malloc(bytes);
    float *ba = malloc(bytes), *bb = malloc(bytes);
    struct eng_kv *ka = eng_kv_new(m, 64), *kb = eng_kv_new(m, 64);
    int32_t next_a = 432, next_b = 383;

    /* Alone: prefill, then one decode step each. */
    assert_int_equal(step_one(m, ka, a, 5, la), 0);
    assert_int_equal(step_one(m, ka, &next_a, 1, la), 0);
    assert_int_equal(step_one(m, kb, b, 8, lb), 0);
    assert_int_equal(step_one(m, kb, &next_b, 1, lb), 0);
    eng_kv_clear(ka);
    eng_kv_clear(kb);

    /* Together: prefill both in one step, then decode both in one. */
    struct eng_seq_batch batch[2] = { { ka, a, 5, ba }, { kb, b, 8, bb } };
    assert_int_equal(eng_model_step(m, batch, 2), 0);
    batch[0].tokens = &next_a;
    batch[0].n_tokens = 1;
    batch[1].tokens = &next_b;
    batch[1].n_tokens = 1;
    assert_int_equal(eng_model_step(m, batch, 2), 0);
    assert_int_equal(eng_kv_n_past(ka), 6);
    assert_int_equal(eng_kv_n_past(kb), 9);
    if (memcmp(ba, la, bytes) != 0 || memcmp(bb, lb, bytes) != 0)
        fprintf(stderr, "%s: batched logits differ from single ones\n",
                name);
    assert_memory_equal(ba, la, bytes);
    assert_memory_equal(bb, lb, bytes);

    /* A prompt fed token by token ends with the same logits as the
     * prompt in one step. */
    eng_kv_clear(ka);
    for (int i = 0; i < 5; i++)
        assert_int_equal(step_one(m, ka, &a[i], 1, ba), 0);
    eng_kv_clear(kb);
    assert_int_equal(step_one(m, kb, a, 5, bb), 0);
    assert_memory_equal(ba, bb, bytes);

    eng_kv_free(ka);
    eng_kv_free(kb);
    free(la);
    free(lb);
    free(ba);
    free(bb);
    eng_model_free(m);
}

static void test_batch_matches_single(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof model_cases / sizeof model_cases[0]; i++)
        check_batch_invariance(model_cases[i].name);
}

/* One and two worker threads give the same logits. */
static void test_threads_agree(void **state)
{
    static const int32_t p[] = { 1, 15043, 3186, 29892, 590, 1024 };
    struct eng_model *m1 = load_model("rand-d128-q4_0", 1);
    struct eng_model *m2 = load_model("rand-d128-q4_0", 2);
    int nv = eng_model_info(m1)->n_vocab;
    float *l1 = malloc(nv * sizeof(float)), *l2 = malloc(nv * sizeof(float));
    struct eng_kv *k1 = eng_kv_new(m1, 32), *k2 = eng_kv_new(m2, 32);

    (void)state;
    assert_int_equal(step_one(m1, k1, p, 6, l1), 0);
    assert_int_equal(step_one(m2, k2, p, 6, l2), 0);
    for (int i = 0; i < nv; i++)
        assert_true(fabsf(l1[i] - l2[i]) <= 1e-4f);
    assert_int_equal(step_one(m1, k1, &p[1], 1, l1), 0);
    assert_int_equal(step_one(m2, k2, &p[1], 1, l2), 0);
    for (int i = 0; i < nv; i++)
        assert_true(fabsf(l1[i] - l2[i]) <= 1e-4f);
    eng_kv_free(k1);
    eng_kv_free(k2);
    free(l1);
    free(l2);
    eng_model_free(m1);
    eng_model_free(m2);
}

/* Invalid tokens and KV overflow fail without moving any n_past. */
static void test_step_rejects_bad_input(void **state)
{
    struct eng_model *m = load_model("stories260K-f32", 2);
    int nv = eng_model_info(m)->n_vocab;
    float *logits = malloc(nv * sizeof(float));
    float *other = malloc(nv * sizeof(float));
    struct eng_kv *kv = eng_kv_new(m, 4), *kv2 = eng_kv_new(m, 16);
    int32_t good[] = { 1, 403, 407 }, too_big[] = { 1, 512 };
    int32_t negative[] = { -1 }, two[] = { 261, 378 };

    (void)state;
    assert_non_null(kv);
    assert_null(eng_kv_new(m, 0));
    assert_int_equal(step_one(m, kv, too_big, 2, logits), -1);
    assert_int_equal(eng_kv_n_past(kv), 0);
    assert_int_equal(step_one(m, kv, negative, 1, logits), -1);
    assert_int_equal(eng_kv_n_past(kv), 0);
    assert_int_equal(step_one(m, kv, good, 0, logits), -1);
    assert_int_equal(step_one(m, kv, good, 3, logits), 0);
    assert_int_equal(eng_kv_n_past(kv), 3);

    /* 3 + 2 > n_ctx 4. */
    assert_int_equal(step_one(m, kv, two, 2, logits), -1);
    assert_int_equal(eng_kv_n_past(kv), 3);

    /* A batch with one bad sequence changes neither sequence. */
    struct eng_seq_batch batch[2] = { { kv2, good, 3, other },
                                      { kv, two, 2, logits } };
    assert_int_equal(eng_model_step(m, batch, 2), -1);
    assert_int_equal(eng_kv_n_past(kv2), 0);
    assert_int_equal(eng_kv_n_past(kv), 3);
    batch[1].kv = kv2;
    assert_int_equal(eng_model_step(m, batch, 2), -1);   /* same cache */
    assert_int_equal(eng_kv_n_past(kv2), 0);

    /* The cache still works after the failures. */
    assert_int_equal(step_one(m, kv, two, 1, logits), 0);
    assert_int_equal(eng_kv_n_past(kv), 4);
    assert_int_equal(eng_kv_n_ctx(kv), 4);
    assert_int_equal(step_one(m, kv, two, 1, logits), -1);
    eng_kv_free(kv);
    eng_kv_free(kv2);
    free(logits);
    free(other);
    eng_model_free(m);
}

/* Load errors name the file. */
static void test_load_errors(void **state)
{
    const char *paths[] = {
        MODELS "no-such-model.gguf",
        REFS "vocab/ggml-vocab-llama-spm.gguf",
        REFS "vocab/ggml-vocab-gpt-2.gguf",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct eng_model *m = (void *)1;
        char err[512] = "";
        assert_int_equal(eng_model_load(paths[i], 1, &m, err, sizeof(err)),
                         -1);
        assert_null(m);
        assert_non_null(strstr(err, paths[i]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_info),
        cmocka_unit_test_setup(test_parity, setup_0),
        cmocka_unit_test_setup(test_parity, setup_1),
        cmocka_unit_test_setup(test_parity, setup_2),
        cmocka_unit_test_setup(test_parity, setup_3),
        cmocka_unit_test_setup(test_parity, setup_4),
        cmocka_unit_test_setup(test_parity, setup_5),
        cmocka_unit_test(test_batch_matches_single),
        cmocka_unit_test(test_threads_agree),
        cmocka_unit_test(test_step_rejects_bad_input),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

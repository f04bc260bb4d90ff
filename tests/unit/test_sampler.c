/*
 * Sampler tests: greedy choice and its tie rule, seeded reproducibility,
 * top-k/top-p limits, logit bias, penalties, and the empirical
 * distribution against the softmax.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/eng_sampler.h"

#define N_VOCAB 8

static const float base_logits[N_VOCAB] = {
    0.5f, 2.0f, 1.0f, 2.5f, -1.0f, 0.0f, 2.4f, 1.5f
};

static struct eng_sampler_params default_params(void)
{
    struct eng_sampler_params p;

    memset(&p, 0, sizeof(p));
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    p.top_k = 0;
    p.seed = 42;
    return p;
}

static int32_t sample_once(struct eng_sampler *s, const float *logits)
{
    float buf[N_VOCAB];

    memcpy(buf, logits, sizeof(buf));
    return eng_sampler_sample(s, buf);
}

static void test_greedy_argmax(void **state)
{
    struct eng_sampler_params p = default_params();
    struct eng_sampler *s;

    (void)state;
    p.temperature = 0.0f;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    for (int i = 0; i < 10; i++)
        assert_int_equal(sample_once(s, base_logits), 3);
    eng_sampler_free(s);
}

static void test_greedy_tie_lowest_id(void **state)
{
    struct eng_sampler_params p = default_params();
    float tied[N_VOCAB] = { 0, 1, 3, 0, 3, 3, 1, 2 };
    struct eng_sampler *s;

    (void)state;
    p.temperature = 0.0f;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    assert_int_equal(sample_once(s, tied), 2);
    eng_sampler_free(s);
}

static void draw_sequence(uint64_t seed, int32_t *out, int n)
{
    struct eng_sampler_params p = default_params();
    struct eng_sampler *s;

    p.seed = seed;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    for (int i = 0; i < n; i++)
        out[i] = sample_once(s, base_logits);
    eng_sampler_free(s);
}

static void test_same_seed_same_sequence(void **state)
{
    int32_t a[100], b[100];

    (void)state;
    draw_sequence(1234, a, 100);
    draw_sequence(1234, b, 100);
    assert_memory_equal(a, b, sizeof(a));
}

static void test_different_seed_differs(void **state)
{
    int32_t a[100], b[100];

    (void)state;
    draw_sequence(1, a, 100);
    draw_sequence(2, b, 100);
    assert_memory_not_equal(a, b, sizeof(a));
}

static void test_top_k_one_is_greedy(void **state)
{
    struct eng_sampler_params p = default_params();
    struct eng_sampler *s;

    (void)state;
    p.top_k = 1;
    p.temperature = 2.0f;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    for (int i = 0; i < 200; i++)
        assert_int_equal(sample_once(s, base_logits), 3);
    eng_sampler_free(s);
}

static void test_top_k_limits_set(void **state)
{
    struct eng_sampler_params p = default_params();
    struct eng_sampler *s;
    int seen[N_VOCAB] = { 0 };

    (void)state;
    p.top_k = 3;
    p.temperature = 5.0f;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    for (int i = 0; i < 2000; i++)
        seen[sample_once(s, base_logits)]++;
    /* The three best are ids 3, 6 and 1. */
    assert_true(seen[3] > 0);
    assert_true(seen[6] > 0);
    assert_true(seen[1] > 0);
    assert_int_equal(seen[3] + seen[6] + seen[1], 2000);
    eng_sampler_free(s);
}

static void test_top_p_tiny_is_greedy(void **state)
{
    struct eng_sampler_params p = default_params();
    struct eng_sampler *s;

    (void)state;
    p.top_p = 1e-6f;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    for (int i = 0; i < 200; i++)
        assert_int_equal(sample_once(s, base_logits), 3);
    eng_sampler_free(s);
}

static void test_bias_bans_and_forces(void **state)
{
    struct eng_sampler_params p = default_params();
    struct eng_logit_bias ban = { 3, -100.0f };
    struct eng_logit_bias force = { 4, 100.0f };
    struct eng_sampler *s;

    (void)state;
    p.bias = &ban;
    p.n_bias = 1;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    for (int i = 0; i < 2000; i++)
        assert_int_not_equal(sample_once(s, base_logits), 3);
    eng_sampler_free(s);

    p.bias = &force;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(sample_once(s, base_logits), 4);
    eng_sampler_free(s);
}

static void test_bias_applies_in_greedy(void **state)
{
    struct eng_sampler_params p = default_params();
    struct eng_logit_bias bias[3] = {
        { 3, -100.0f }, { 6, -100.0f }, { 0, 1.5f }
    };
    struct eng_sampler *s;

    (void)state;
    p.temperature = 0.0f;
    p.bias = bias;
    p.n_bias = 3;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    /* Id 0 goes from 0.5 to 2.0, tying id 1, and the lower id wins. */
    assert_int_equal(sample_once(s, base_logits), 0);
    eng_sampler_free(s);
}

static void test_bias_is_copied(void **state)
{
    struct eng_sampler_params p = default_params();
    struct eng_logit_bias bias = { 4, 100.0f };
    struct eng_sampler *s;

    (void)state;
    p.temperature = 0.0f;
    p.bias = &bias;
    p.n_bias = 1;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    bias.id = 5;
    bias.bias = 0.0f;
    assert_int_equal(sample_once(s, base_logits), 4);
    eng_sampler_free(s);
}

/* Count how often the most likely token (id 3) comes up in 400 draws
 * with a fixed seed, accepting every draw. */
static int count_top_token(float frequency_penalty, float presence_penalty)
{
    struct eng_sampler_params p = default_params();
    struct eng_sampler *s;
    int hits = 0;

    p.seed = 7;
    p.frequency_penalty = frequency_penalty;
    p.presence_penalty = presence_penalty;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    for (int i = 0; i < 400; i++) {
        int32_t id = sample_once(s, base_logits);

        if (id == 3)
            hits++;
        eng_sampler_accept(s, id);
    }
    eng_sampler_free(s);
    return hits;
}

static void test_frequency_penalty_reduces_repeats(void **state)
{
    int plain, penalized;

    (void)state;
    plain = count_top_token(0.0f, 0.0f);
    penalized = count_top_token(0.5f, 0.0f);
    /* Softmax gives id 3 about 28% of the mass; with the penalty the
     * counts even out towards 400 / 8 = 50 each. */
    assert_in_range(plain, 90, 140);
    assert_true(penalized < 70);
}

static void test_penalty_formula_greedy(void **state)
{
    struct eng_sampler_params p = default_params();
    struct eng_sampler *s;
    float buf[N_VOCAB];

    (void)state;
    p.temperature = 0.0f;
    p.frequency_penalty = 0.25f;
    p.presence_penalty = 0.5f;
    s = eng_sampler_new(&p, N_VOCAB);
    assert_non_null(s);
    eng_sampler_accept(s, 3);
    eng_sampler_accept(s, 3);
    memcpy(buf, base_logits, sizeof(buf));
    assert_int_equal(eng_sampler_sample(s, buf), 6);
    /* 2.5 - (2 * 0.25 + 0.5) = 1.5 */
    assert_float_equal(buf[3], 1.5f, 1e-6f);
    assert_float_equal(buf[6], 2.4f, 1e-6f);
    eng_sampler_free(s);
}

static void test_distribution_matches_softmax(void **state)
{
    struct eng_sampler_params p = default_params();
    float logits[3] = { 1.0f, 2.0f, 0.5f };
    double expect[3], z = 0.0;
    int counts[3] = { 0 };
    const int draws = 20000;
    struct eng_sampler *s;

    (void)state;
    for (int i = 0; i < 3; i++) {
        expect[i] = exp(logits[i]);
        z += expect[i];
    }
    s = eng_sampler_new(&p, 3);
    assert_non_null(s);
    for (int i = 0; i < draws; i++) {
        float buf[3];
        int32_t id;

        memcpy(buf, logits, sizeof(buf));
        id = eng_sampler_sample(s, buf);
        assert_in_range(id, 0, 2);
        counts[id]++;
    }
    for (int i = 0; i < 3; i++) {
        double freq = (double)counts[i] / draws;

        assert_true(fabs(freq - expect[i] / z) < 0.02);
    }
    eng_sampler_free(s);
}

static void test_rejects_bad_params(void **state)
{
    struct eng_sampler_params p = default_params();

    (void)state;
    assert_null(eng_sampler_new(&p, 0));
    p.n_bias = 2;
    p.bias = NULL;
    assert_null(eng_sampler_new(&p, N_VOCAB));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_argmax),
        cmocka_unit_test(test_greedy_tie_lowest_id),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_different_seed_differs),
        cmocka_unit_test(test_top_k_one_is_greedy),
        cmocka_unit_test(test_top_k_limits_set),
        cmocka_unit_test(test_top_p_tiny_is_greedy),
        cmocka_unit_test(test_bias_bans_and_forces),
        cmocka_unit_test(test_bias_applies_in_greedy),
        cmocka_unit_test(test_bias_is_copied),
        cmocka_unit_test(test_frequency_penalty_reduces_repeats),
        cmocka_unit_test(test_penalty_formula_greedy),
        cmocka_unit_test(test_distribution_matches_softmax),
        cmocka_unit_test(test_rejects_bad_params),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

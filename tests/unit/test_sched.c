/*
 * Scheduler tests on the real stories260K model: greedy output through
 * the scheduler equals llama.cpp's reference, requests running together
 * do not disturb each other, stop strings that span tokens are cut, and
 * a cancelled request ends promptly.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/eng_model.h"
#include "engine/eng_sched.h"
#include "engine/eng_tokenizer.h"

#define MODEL_PATH "models/stories260K-f32.gguf"

/* The first 64 greedy tokens after "Once upon a time", decoded, from
 * llama.cpp's reference run of the same model. */
static const char *const REFERENCE_TEXT =
    ", there was a little girl named Lily. She loved to play outside in "
    "the park. One day, she saw a big, red ball. She wanted to play with "
    "it, but it was too high.\nLily's mom said";

struct fixture {
    struct eng_model *model;
    struct eng_tokenizer *tok;
    struct eng_sched *sched;
};

static int setup(void **state)
{
    static struct fixture f;
    char err[256];
    struct eng_sched_config cfg = { .n_slots = 3, .n_ctx = 256,
                                    .prefill_chunk = 3 };

    if (eng_model_load(MODEL_PATH, 2, &f.model, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (eng_tok_load(eng_model_gguf(f.model), &f.tok, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    /* A prefill chunk of 3 makes the 5-token prompt take two steps. */
    if (eng_sched_start(f.model, f.tok, &cfg, &f.sched, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    eng_sched_free(f->sched);
    eng_tok_free(f->tok);
    eng_model_free(f->model);
    return 0;
}

static struct eng_request *submit(struct fixture *f, const char *prompt,
                                  int max_tokens, const char *stop)
{
    int32_t *ids = NULL;
    int n_ids = 0;
    struct eng_gen_params p = { 0 };

    assert_int_equal(eng_tok_encode(f->tok, prompt, strlen(prompt), true,
                                    true, &ids, &n_ids), 0);
    p.max_tokens = max_tokens;
    p.sampling.temperature = 0;
    p.sampling.top_p = 1;
    if (stop) {
        p.stop[0] = stop;
        p.n_stop = 1;
    }
    struct eng_request *r = eng_req_new(ids, n_ids, &p);
    free(ids);
    assert_non_null(r);
    assert_int_equal(eng_sched_submit(f->sched, r), 0);
    return r;
}

/* Collect a request's whole text; returns its finish reason. */
static enum eng_finish collect(struct eng_request *r, char *buf, size_t cap,
                               int *n_completion)
{
    size_t len = 0;
    struct eng_req_update u;
    for (int i = 0; i < 2000; i++) {
        eng_req_take(r, 50, &u);
        assert_true(len + u.text_len < cap);
        if (u.text_len > 0)
            memcpy(buf + len, u.text, u.text_len);
        len += u.text_len;
        if (u.finish != ENG_FINISH_NONE)
            break;
    }
    buf[len] = '\0';
    *n_completion = u.n_completion;
    return u.finish;
}

static void greedy_matches_reference(void **state)
{
    struct fixture *f = *state;
    char text[4096];
    int n = 0;
    struct eng_request *r = submit(f, "Once upon a time", 64, NULL);
    assert_int_equal(collect(r, text, sizeof text, &n), ENG_FINISH_LENGTH);
    assert_string_equal(text, REFERENCE_TEXT);
    assert_int_equal(n, 64);
    eng_req_release(r);
}

static void concurrent_requests_agree(void **state)
{
    struct fixture *f = *state;
    struct eng_request *r[5];
    char text[4096];
    int n = 0;

    /* More requests than slots: two wait in the queue. */
    for (int i = 0; i < 5; i++)
        r[i] = submit(f, "Once upon a time", 64, NULL);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(collect(r[i], text, sizeof text, &n),
                         ENG_FINISH_LENGTH);
        assert_string_equal(text, REFERENCE_TEXT);
        eng_req_release(r[i]);
    }
}

static void stop_string_is_cut(void **state)
{
    struct fixture *f = *state;
    char text[4096];
    int n = 0;

    /* "girl named" spans several tokens. */
    struct eng_request *r = submit(f, "Once upon a time", 64, "girl named");
    assert_int_equal(collect(r, text, sizeof text, &n), ENG_FINISH_STOP);
    assert_string_equal(text, ", there was a little ");
    assert_true(n < 64);
    eng_req_release(r);

    /* A stop string that never occurs leaves the text whole. */
    r = submit(f, "Once upon a time", 64, "dragon");
    assert_int_equal(collect(r, text, sizeof text, &n), ENG_FINISH_LENGTH);
    assert_string_equal(text, REFERENCE_TEXT);
    eng_req_release(r);
}

static void cancel_ends_request(void **state)
{
    struct fixture *f = *state;
    char text[4096];
    int n = 0;

    struct eng_request *r = submit(f, "Once upon a time", 200, NULL);
    struct eng_req_update u;
    eng_req_take(r, 1000, &u);
    eng_req_cancel(r);
    assert_int_equal(collect(r, text, sizeof text, &n),
                     ENG_FINISH_CANCELLED);
    assert_true(n < 200);
    eng_req_release(r);

    /* The slot is free again: a new request runs to completion. */
    r = submit(f, "Once upon a time", 64, NULL);
    assert_int_equal(collect(r, text, sizeof text, &n), ENG_FINISH_LENGTH);
    assert_string_equal(text, REFERENCE_TEXT);
    eng_req_release(r);
}

static void context_limit_ends_with_length(void **state)
{
    struct fixture *f = *state;
    char text[8192];
    int n = 0;

    /* The slots hold 256 positions; ask for more. */
    struct eng_request *r = submit(f, "Once upon a time", 10000, NULL);
    enum eng_finish fin = collect(r, text, sizeof text, &n);
    assert_true(fin == ENG_FINISH_LENGTH || fin == ENG_FINISH_STOP);
    assert_true(n <= 256 - 5 + 1);
    eng_req_release(r);
}

static struct eng_request *submit_group(struct fixture *f,
                                        struct eng_sched *sched,
                                        int64_t group, int max_tokens)
{
    static const struct eng_logit_bias no_eos = { 2, -100.0f };
    int32_t prompt[] = { 1, 403, 407, 261, 378 };
    struct eng_gen_params p = { 0 };

    (void)f;
    p.max_tokens = max_tokens;
    p.sampling.top_p = 1;
    p.sampling.bias = &no_eos;
    p.sampling.n_bias = 1;
    p.group = group;
    struct eng_request *r = eng_req_new(prompt, 5, &p);
    assert_non_null(r);
    assert_int_equal(eng_sched_submit(sched, r), 0);
    return r;
}

static void groups_take_turns(void **state)
{
    struct fixture *f = *state;
    struct eng_sched_config cfg = { .n_slots = 1, .n_ctx = 128,
                                    .prefill_chunk = 64 };
    struct eng_sched *sched;
    char err[128];
    assert_int_equal(eng_sched_start(f->model, f->tok, &cfg, &sched, err,
                                     sizeof err), 0);

    /* Group 1 queues three requests before group 2 queues one. */
    struct eng_request *r[4];
    r[0] = submit_group(f, sched, 1, 60);
    r[1] = submit_group(f, sched, 1, 60);
    r[2] = submit_group(f, sched, 1, 60);
    r[3] = submit_group(f, sched, 2, 60);

    int order[4], n_done = 0;
    bool done[4] = { false };
    for (int round = 0; round < 4000 && n_done < 4; round++) {
        for (int i = 0; i < 4; i++) {
            struct eng_req_update u;
            if (done[i])
                continue;
            eng_req_take(r[i], 1, &u);
            if (u.finish != ENG_FINISH_NONE) {
                assert_int_equal(u.finish, ENG_FINISH_LENGTH);
                done[i] = true;
                order[n_done++] = i;
            }
        }
    }
    assert_int_equal(n_done, 4);
    /* Group 2 goes right after the request that was running. */
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 1);
    assert_int_equal(order[3], 2);
    for (int i = 0; i < 4; i++)
        eng_req_release(r[i]);
    eng_sched_free(sched);
}

static void full_queue_rejects(void **state)
{
    struct fixture *f = *state;
    struct eng_sched_config cfg = { .n_slots = 1, .n_ctx = 128,
                                    .prefill_chunk = 64, .max_queue = 1 };
    struct eng_sched *sched;
    char err[128];
    assert_int_equal(eng_sched_start(f->model, f->tok, &cfg, &sched, err,
                                     sizeof err), 0);

    int32_t prompt[] = { 1, 403 };
    struct eng_gen_params p = { .max_tokens = 100 };
    p.sampling.top_p = 1;
    int accepted = 0, rejected = 0;
    struct eng_request *r[5];
    for (int i = 0; i < 5; i++) {
        r[i] = eng_req_new(prompt, 2, &p);
        int rc = eng_sched_submit(sched, r[i]);
        if (rc == 0)
            accepted++;
        else if (rc == -EAGAIN)
            rejected++;
    }
    /* At most one running and one waiting. */
    assert_true(accepted >= 1);
    assert_true(accepted <= 2);
    assert_int_equal(accepted + rejected, 5);

    for (int i = 0; i < 5; i++)
        eng_req_cancel(r[i]);
    struct eng_req_update u;
    for (int i = 0; i < 2000; i++) {
        eng_req_take(r[0], 5, &u);
        if (u.finish != ENG_FINISH_NONE)
            break;
    }

    /* One call with more sequences than max_queue is taken whole once
     * the queue has room. */
    struct eng_request *many[3];
    for (int i = 0; i < 3; i++)
        many[i] = eng_req_new(prompt, 2, &p);
    int rc = -1;
    for (int i = 0; i < 200 && rc != 0; i++) {
        rc = eng_sched_submit_all(sched, many, 3);
        if (rc != 0)
            usleep(10000);
    }
    assert_int_equal(rc, 0);
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 2000; k++) {
            eng_req_take(many[i], 5, &u);
            if (u.finish != ENG_FINISH_NONE)
                break;
        }
        assert_int_equal(u.finish, ENG_FINISH_LENGTH);
        eng_req_release(many[i]);
    }

    eng_sched_stop(sched);
    assert_int_equal(eng_sched_submit(sched, r[0]), -ESHUTDOWN);
    for (int i = 0; i < 5; i++)
        eng_req_release(r[i]);
    eng_sched_free(sched);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greedy_matches_reference),
        cmocka_unit_test(concurrent_requests_agree),
        cmocka_unit_test(stop_string_is_cut),
        cmocka_unit_test(cancel_ends_request),
        cmocka_unit_test(context_limit_ends_with_length),
        cmocka_unit_test(groups_take_turns),
        cmocka_unit_test(full_queue_rejects),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

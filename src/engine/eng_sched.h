/*
 * Scheduler: one thread owns the model and advances every running
 * request step by step. A free slot goes to the waiting request whose
 * group (tenant) has the fewest running sequences, oldest first, so one
 * tenant's burst cannot hold back the others. Each step gathers the running sequences (a
 * prefill chunk or one decode token each) into one eng_model_step call,
 * samples, detokenizes and applies stop strings, then wakes the threads
 * waiting on each request's output.
 *
 * A request is shared by the submitting thread and the scheduler and is
 * freed when both have released it (eng_req_release).
 */
#ifndef TAPHOUSE_ENG_SCHED_H
#define TAPHOUSE_ENG_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng_model.h"
#include "engine/eng_sampler.h"
#include "engine/eng_tokenizer.h"

#define ENG_MAX_STOP 4

enum eng_finish {
    ENG_FINISH_NONE = 0,   /* still running */
    ENG_FINISH_STOP,       /* end-of-generation token or a stop string */
    ENG_FINISH_LENGTH,     /* max_tokens or the context is full */
    ENG_FINISH_CANCELLED,  /* the client went away */
    ENG_FINISH_ERROR,      /* the engine failed; see the log */
    ENG_FINISH_ABORTED,    /* the server is shutting down */
};

#define ENG_MAX_TOP_LOGPROBS 20

struct eng_gen_params {
    struct eng_sampler_params sampling;  /* bias is copied */
    int max_tokens;                      /* >= 1 */
    int n_stop;
    const char *stop[ENG_MAX_STOP];      /* copied */
    int64_t group;                       /* fairness group (the tenant) */
    bool logprobs;                       /* report each token's logprob */
    int top_logprobs;                    /* 0..ENG_MAX_TOP_LOGPROBS */
};

/* A token and its log-probability under the model (before sampling). */
struct eng_token_logprob {
    int32_t id;
    float logprob;
};

/* One generated token, with the most likely alternatives at its step. */
struct eng_token_info {
    int32_t id;
    float logprob;
    int n_top;
    struct eng_token_logprob top[ENG_MAX_TOP_LOGPROBS];
};

struct eng_request;
struct eng_sched;

struct eng_sched_config {
    int n_slots;        /* sequences that run at once */
    int n_ctx;          /* KV positions per slot */
    int prefill_chunk;  /* max prompt tokens per sequence per step */
    int max_queue;      /* requests waiting for a slot; 0: no limit */
};

int eng_sched_start(struct eng_model *model, struct eng_tokenizer *tok,
                    const struct eng_sched_config *cfg,
                    struct eng_sched **out, char *err, size_t errlen);
/*
 * End running and queued requests as ABORTED and join the thread. Later
 * submissions fail with -ESHUTDOWN until eng_sched_free.
 */
void eng_sched_stop(struct eng_sched *s);
/* Stop (if running) and free the scheduler. */
void eng_sched_free(struct eng_sched *s);
int eng_sched_n_ctx(const struct eng_sched *s);

/* Create a request for PROMPT (copied). Returns NULL on failure. */
struct eng_request *eng_req_new(const int32_t *prompt, int n_prompt,
                                const struct eng_gen_params *params);
/*
 * Queue a request; the scheduler takes its own reference. Returns 0,
 * -EAGAIN when max_queue sequences are already waiting, or -ESHUTDOWN
 * while the scheduler stops.
 */
int eng_sched_submit(struct eng_sched *s, struct eng_request *r);
/*
 * Queue N requests that belong to one API call, all or none: the limit
 * is checked once, so a call with more sequences than max_queue still
 * runs when the queue has room. Returns as eng_sched_submit.
 */
int eng_sched_submit_all(struct eng_sched *s, struct eng_request **r,
                         int n);
/* Ask the scheduler to drop the request at its next step. */
void eng_req_cancel(struct eng_request *r);
/* Drop the caller's reference. */
void eng_req_release(struct eng_request *r);

/* A snapshot of a request's progress, taken under its lock. */
struct eng_req_update {
    const char *text;        /* new text since the last take (not NUL-
                                terminated), valid until the next take */
    size_t text_len;
    /* With params.logprobs: the tokens generated since the last take,
     * valid until the next take. End-of-generation tokens are left out. */
    const struct eng_token_info *tokens;
    int n_tokens;
    int n_prompt;
    int n_completion;        /* tokens generated so far */
    enum eng_finish finish;  /* NONE while running */
};

/*
 * Wait up to TIMEOUT_MS for new text or the end of the request and take
 * the text produced since the previous call. Returns 0, or 1 when the
 * wait timed out with nothing new.
 */
int eng_req_take(struct eng_request *r, int timeout_ms,
                 struct eng_req_update *u);

const char *eng_finish_name(enum eng_finish f);

#endif

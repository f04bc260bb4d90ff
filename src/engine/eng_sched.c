/*
 * Scheduler thread: admits queued requests into a fixed set of slots,
 * each with its own KV cache, and advances all running slots with one
 * eng_model_step per iteration. See eng_sched.h for the contract.
 */
#include "engine/eng_sched.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util_log.h"

/* Bytes of one token's text: pieces are short, but be generous. */
#define PIECE_MAX 512
/* Groups whose last admission is remembered; older ones count as never. */
#define RECENT_GROUPS 64

struct eng_request {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;

    int32_t *prompt;
    int n_prompt;
    struct eng_gen_params params;
    struct eng_logit_bias *bias;
    char *stop[ENG_MAX_STOP];

    /* Written by the scheduler under lock. */
    char *out;
    size_t out_len, out_cap;
    size_t out_taken;
    int n_completion;
    enum eng_finish finish;
    bool cancelled;

    /* Per-token log-probabilities, with params.logprobs. */
    struct eng_token_info *infos;
    int n_infos, infos_cap, infos_taken;

    /* Read side, touched only by the thread calling eng_req_take. */
    char *taken;
    size_t taken_cap;
    struct eng_token_info *infos_read;
    int infos_read_cap;

    struct eng_request *next;   /* queue link */
};

/* A running sequence; only the scheduler thread touches it. */
struct slot {
    struct eng_request *req;
    struct eng_kv *kv;
    struct eng_sampler *sampler;
    struct eng_detok detok;
    int n_fed;                 /* prompt tokens already in the cache */
    int32_t last;              /* token to feed next when decoding */
    int n_gen;
    char *held;                /* text held back by stop-string matching */
    size_t held_len, held_cap;
};

struct eng_sched {
    struct eng_model *model;
    struct eng_tokenizer *tok;
    struct eng_sched_config cfg;
    int n_vocab;

    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    struct eng_request *queue_head, *queue_tail;
    int n_queued;

    /* When each recent group was last admitted, for tie-breaks. */
    struct { int64_t group; uint64_t seq; } recent[RECENT_GROUPS];
    uint64_t admit_seq;

    struct slot *slots;
    struct eng_seq_batch *batch;
    int *batch_slot;
    float *logits;             /* (n_slots, n_vocab) */
    float *raw_logits;         /* (n_vocab): copy kept for logprobs */
};

const char *eng_finish_name(enum eng_finish f)
{
    switch (f) {
    case ENG_FINISH_STOP: return "stop";
    case ENG_FINISH_LENGTH: return "length";
    case ENG_FINISH_CANCELLED: return "cancelled";
    case ENG_FINISH_ERROR: return "error";
    case ENG_FINISH_ABORTED: return "aborted";
    default: return "none";
    }
}

/* ---- requests ---- */

struct eng_request *eng_req_new(const int32_t *prompt, int n_prompt,
                                const struct eng_gen_params *params)
{
    struct eng_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->refs = 1;
    r->params = *params;
    if (r->params.top_logprobs < 0)
        r->params.top_logprobs = 0;
    if (r->params.top_logprobs > ENG_MAX_TOP_LOGPROBS)
        r->params.top_logprobs = ENG_MAX_TOP_LOGPROBS;

    r->prompt = malloc(sizeof *prompt * (size_t)(n_prompt > 0 ? n_prompt : 1));
    if (!r->prompt)
        goto fail;
    memcpy(r->prompt, prompt, sizeof *prompt * (size_t)n_prompt);
    r->n_prompt = n_prompt;

    if (params->sampling.n_bias > 0) {
        size_t n = (size_t)params->sampling.n_bias;
        r->bias = malloc(sizeof *r->bias * n);
        if (!r->bias)
            goto fail;
        memcpy(r->bias, params->sampling.bias, sizeof *r->bias * n);
    }
    r->params.sampling.bias = r->bias;

    for (int i = 0; i < params->n_stop && i < ENG_MAX_STOP; i++) {
        r->stop[i] = strdup(params->stop[i]);
        if (!r->stop[i])
            goto fail;
        r->params.stop[i] = r->stop[i];
    }
    return r;

fail:
    eng_req_release(r);
    return NULL;
}

void eng_req_release(struct eng_request *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    int left = --r->refs;
    pthread_mutex_unlock(&r->lock);
    if (left > 0)
        return;

    for (int i = 0; i < ENG_MAX_STOP; i++)
        free(r->stop[i]);
    free(r->bias);
    free(r->prompt);
    free(r->out);
    free(r->taken);
    free(r->infos);
    free(r->infos_read);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void eng_req_cancel(struct eng_request *r)
{
    pthread_mutex_lock(&r->lock);
    r->cancelled = true;
    pthread_mutex_unlock(&r->lock);
}

/* Append LEN bytes of output and wake the reader. Caller holds no lock. */
static void req_emit(struct eng_request *r, const char *text, size_t len)
{
    if (len == 0)
        return;
    pthread_mutex_lock(&r->lock);
    if (r->out_len + len > r->out_cap) {
        size_t cap = r->out_cap ? r->out_cap * 2 : 256;
        while (cap < r->out_len + len)
            cap *= 2;
        char *grown = realloc(r->out, cap);
        if (!grown) {
            pthread_mutex_unlock(&r->lock);
            log_error("sched", "out of memory for request output");
            return;
        }
        r->out = grown;
        r->out_cap = cap;
    }
    memcpy(r->out + r->out_len, text, len);
    r->out_len += len;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void req_finish(struct eng_request *r, enum eng_finish f)
{
    pthread_mutex_lock(&r->lock);
    if (r->finish == ENG_FINISH_NONE)
        r->finish = f;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

int eng_req_take(struct eng_request *r, int timeout_ms,
                 struct eng_req_update *u)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&r->lock);
    int rc = 0;
    while (r->out_taken == r->out_len && r->infos_taken == r->n_infos &&
           r->finish == ENG_FINISH_NONE) {
        if (pthread_cond_timedwait(&r->cond, &r->lock, &deadline)
                == ETIMEDOUT) {
            rc = 1;
            break;
        }
    }

    size_t n = r->out_len - r->out_taken;
    if (n > r->taken_cap) {
        char *grown = realloc(r->taken, n);
        if (grown) {
            r->taken = grown;
            r->taken_cap = n;
        } else {
            n = r->taken_cap;   /* take what fits; the rest comes later */
        }
    }
    if (n > 0) {
        memcpy(r->taken, r->out + r->out_taken, n);
        r->out_taken += n;
        rc = 0;
    }
    u->text = r->taken;
    u->text_len = n;

    int n_new = r->n_infos - r->infos_taken;
    if (n_new > r->infos_read_cap) {
        struct eng_token_info *grown = realloc(
            r->infos_read, sizeof *grown * (size_t)n_new);
        if (grown) {
            r->infos_read = grown;
            r->infos_read_cap = n_new;
        } else {
            n_new = r->infos_read_cap;
        }
    }
    if (n_new > 0) {
        memcpy(r->infos_read, r->infos + r->infos_taken,
               sizeof *r->infos * (size_t)n_new);
        r->infos_taken += n_new;
        rc = 0;
    }
    u->tokens = r->infos_read;
    u->n_tokens = n_new;
    u->n_prompt = r->n_prompt;
    u->n_completion = r->n_completion;
    /* Report the end only once all output has been taken. */
    bool all_taken = r->out_taken == r->out_len &&
                     r->infos_taken == r->n_infos;
    u->finish = all_taken ? r->finish : ENG_FINISH_NONE;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* ---- log-probabilities ---- */

/*
 * Fill INFO with the log-probabilities of the N_VOCAB raw LOGITS: the
 * TOP most likely tokens. The chosen token's entry is set after
 * sampling, from the same distribution.
 */
static float logprob_prepare(const float *logits, int n_vocab, int top,
                             struct eng_token_info *info)
{
    float max = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++)
        sum += exp((double)(logits[i] - max));
    float lse = max + (float)log(sum);

    /* Insertion into a short sorted list: TOP is at most 20. */
    info->n_top = 0;
    for (int i = 0; i < n_vocab && top > 0; i++) {
        int n = info->n_top;
        if (n == top && logits[i] <= info->top[n - 1].logprob)
            continue;
        int at = n < top ? n : top - 1;
        while (at > 0 && info->top[at - 1].logprob < logits[i]) {
            info->top[at] = info->top[at - 1];
            at--;
        }
        info->top[at].id = i;
        info->top[at].logprob = logits[i];
        if (n < top)
            info->n_top++;
    }
    for (int k = 0; k < info->n_top; k++)
        info->top[k].logprob -= lse;
    return lse;
}

static void req_add_info(struct eng_request *r,
                         const struct eng_token_info *info)
{
    pthread_mutex_lock(&r->lock);
    if (r->n_infos == r->infos_cap) {
        int cap = r->infos_cap ? r->infos_cap * 2 : 16;
        struct eng_token_info *grown = realloc(r->infos,
                                               sizeof *grown * (size_t)cap);
        if (!grown) {
            pthread_mutex_unlock(&r->lock);
            log_error("sched", "out of memory for token log-probabilities");
            return;
        }
        r->infos = grown;
        r->infos_cap = cap;
    }
    r->infos[r->n_infos++] = *info;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* ---- stop strings ---- */

static int held_append(struct slot *sl, const char *text, size_t len)
{
    if (sl->held_len + len > sl->held_cap) {
        size_t cap = sl->held_cap ? sl->held_cap * 2 : 128;
        while (cap < sl->held_len + len)
            cap *= 2;
        char *grown = realloc(sl->held, cap);
        if (!grown)
            return -1;
        sl->held = grown;
        sl->held_cap = cap;
    }
    memcpy(sl->held + sl->held_len, text, len);
    sl->held_len += len;
    return 0;
}

/* Length of the longest suffix of TEXT that is a proper prefix of STOP. */
static size_t partial_stop_len(const char *text, size_t len,
                               const char *stop)
{
    size_t n_stop = strlen(stop);
    size_t max = n_stop - 1 < len ? n_stop - 1 : len;
    for (size_t k = max; k > 0; k--)
        if (memcmp(text + len - k, stop, k) == 0)
            return k;
    return 0;
}

/*
 * Release the held text that can no longer become part of a stop string.
 * Returns true when a stop string was found; the text before it is
 * released and the rest dropped.
 */
static bool release_held(struct slot *sl)
{
    const struct eng_gen_params *p = &sl->req->params;
    size_t cut = sl->held_len;
    bool stopped = false;

    for (int i = 0; i < p->n_stop; i++) {
        const char *hit = memmem(sl->held, sl->held_len, p->stop[i],
                                 strlen(p->stop[i]));
        if (hit && (size_t)(hit - sl->held) <= cut) {
            cut = (size_t)(hit - sl->held);
            stopped = true;
        }
    }

    size_t keep = 0;
    if (!stopped) {
        for (int i = 0; i < p->n_stop; i++) {
            size_t k = partial_stop_len(sl->held, sl->held_len, p->stop[i]);
            if (k > keep)
                keep = k;
        }
        cut = sl->held_len - keep;
    }

    req_emit(sl->req, sl->held, cut);
    if (stopped) {
        sl->held_len = 0;
    } else {
        memmove(sl->held, sl->held + cut, keep);
        sl->held_len = keep;
    }
    return stopped;
}

/* ---- slots ---- */

static void slot_end(struct eng_sched *s, struct slot *sl, enum eng_finish f)
{
    /* Text held back for a possible stop string is real output. */
    if (f == ENG_FINISH_STOP || f == ENG_FINISH_LENGTH) {
        char tail[16];
        size_t n = eng_detok_flush(&sl->detok, tail, sizeof tail);
        if (n > 0 && held_append(sl, tail, n) == 0 && release_held(sl))
            f = ENG_FINISH_STOP;
        req_emit(sl->req, sl->held, sl->held_len);
    }
    sl->held_len = 0;
    req_finish(sl->req, f);
    eng_req_release(sl->req);
    eng_sampler_free(sl->sampler);
    sl->sampler = NULL;
    sl->req = NULL;
    eng_kv_clear(sl->kv);
    (void)s;
}

static int slot_begin(struct eng_sched *s, struct slot *sl,
                      struct eng_request *r)
{
    /* The API checks this first; a prompt must leave room for a token. */
    if (r->n_prompt <= 0 || r->n_prompt >= eng_kv_n_ctx(sl->kv))
        return -1;
    sl->sampler = eng_sampler_new(&r->params.sampling, s->n_vocab);
    if (!sl->sampler)
        return -1;
    sl->req = r;
    sl->n_fed = 0;
    sl->n_gen = 0;
    sl->held_len = 0;
    memset(&sl->detok, 0, sizeof sl->detok);
    eng_kv_clear(sl->kv);
    return 0;
}

/* Handle the token sampled for SL. Returns the finish reason, or NONE. */
static enum eng_finish slot_accept(struct eng_sched *s, struct slot *sl,
                                   int32_t id)
{
    struct eng_request *r = sl->req;

    sl->n_gen++;
    pthread_mutex_lock(&r->lock);
    r->n_completion = sl->n_gen;
    pthread_mutex_unlock(&r->lock);

    if (eng_tok_is_eog(s->tok, id))
        return ENG_FINISH_STOP;

    eng_sampler_accept(sl->sampler, id);
    char text[PIECE_MAX + 16];
    size_t n = eng_detok_push(&sl->detok, s->tok, id, text, sizeof text);
    if (n > 0) {
        if (held_append(sl, text, n) != 0)
            return ENG_FINISH_ERROR;
        if (release_held(sl))
            return ENG_FINISH_STOP;
    }

    if (sl->n_gen >= r->params.max_tokens)
        return ENG_FINISH_LENGTH;
    if (eng_kv_n_past(sl->kv) >= eng_kv_n_ctx(sl->kv))
        return ENG_FINISH_LENGTH;
    sl->last = id;
    return ENG_FINISH_NONE;
}

/* ---- the loop ---- */

static bool any_running(const struct eng_sched *s)
{
    for (int i = 0; i < s->cfg.n_slots; i++)
        if (s->slots[i].req)
            return true;
    return false;
}

/* Running sequences of GROUP. Caller holds s->lock. */
static int group_load(const struct eng_sched *s, int64_t group)
{
    int n = 0;
    for (int i = 0; i < s->cfg.n_slots; i++)
        if (s->slots[i].req && s->slots[i].req->params.group == group)
            n++;
    return n;
}

/* Admission number of GROUP's last admission, 0 if not recent. */
static uint64_t group_last_admit(const struct eng_sched *s, int64_t group)
{
    for (int i = 0; i < RECENT_GROUPS; i++)
        if (s->recent[i].seq && s->recent[i].group == group)
            return s->recent[i].seq;
    return 0;
}

static void group_note_admit(struct eng_sched *s, int64_t group)
{
    int slot = 0;
    for (int i = 0; i < RECENT_GROUPS; i++) {
        if (s->recent[i].seq && s->recent[i].group == group) {
            slot = i;
            break;
        }
        if (s->recent[i].seq < s->recent[slot].seq)
            slot = i;   /* the oldest entry is replaced */
    }
    s->recent[slot].group = group;
    s->recent[slot].seq = ++s->admit_seq;
}

/*
 * Unlink and return the queued request whose group has the fewest
 * running sequences; among equals, the group admitted least recently,
 * then the oldest request. Caller holds s->lock.
 */
static struct eng_request *dequeue_fair(struct eng_sched *s)
{
    struct eng_request *best = NULL, *best_prev = NULL, *prev = NULL;
    int best_load = 0;
    uint64_t best_last = 0;

    for (struct eng_request *r = s->queue_head; r; prev = r, r = r->next) {
        int load = group_load(s, r->params.group);
        uint64_t last = group_last_admit(s, r->params.group);
        if (!best || load < best_load ||
            (load == best_load && last < best_last)) {
            best = r;
            best_prev = prev;
            best_load = load;
            best_last = last;
        }
    }
    if (!best)
        return NULL;
    if (best_prev)
        best_prev->next = best->next;
    else
        s->queue_head = best->next;
    if (s->queue_tail == best)
        s->queue_tail = best_prev;
    best->next = NULL;
    s->n_queued--;
    group_note_admit(s, best->params.group);
    return best;
}

/* Move queued requests into free slots. Waits while there is no work. */
static void admit(struct eng_sched *s)
{
    pthread_mutex_lock(&s->lock);
    while (!s->stopping && !s->queue_head && !any_running(s))
        pthread_cond_wait(&s->cond, &s->lock);

    for (int i = 0; i < s->cfg.n_slots && s->queue_head; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->req)
            continue;
        struct eng_request *r = dequeue_fair(s);
        if (slot_begin(s, sl, r) != 0) {
            req_finish(r, ENG_FINISH_ERROR);
            eng_req_release(r);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* Build the step's batch; returns the number of sequences in it. */
static int build_batch(struct eng_sched *s)
{
    int n = 0;
    for (int i = 0; i < s->cfg.n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->req)
            continue;

        pthread_mutex_lock(&sl->req->lock);
        bool cancelled = sl->req->cancelled;
        pthread_mutex_unlock(&sl->req->lock);
        if (cancelled || s->stopping) {
            slot_end(s, sl, cancelled ? ENG_FINISH_CANCELLED
                                      : ENG_FINISH_ABORTED);
            continue;
        }

        struct eng_seq_batch *b = &s->batch[n];
        b->kv = sl->kv;
        b->logits = s->logits + (size_t)n * (size_t)s->n_vocab;
        if (sl->n_fed < sl->req->n_prompt) {
            int left = sl->req->n_prompt - sl->n_fed;
            b->tokens = sl->req->prompt + sl->n_fed;
            b->n_tokens = left < s->cfg.prefill_chunk
                              ? left : s->cfg.prefill_chunk;
        } else {
            b->tokens = &sl->last;
            b->n_tokens = 1;
        }
        s->batch_slot[n] = i;
        n++;
    }
    return n;
}

static void run_step(struct eng_sched *s)
{
    int n = build_batch(s);
    if (n == 0)
        return;

    if (eng_model_step(s->model, s->batch, n) != 0) {
        log_error("sched", "forward step failed for %d sequences", n);
        for (int j = 0; j < n; j++)
            slot_end(s, &s->slots[s->batch_slot[j]], ENG_FINISH_ERROR);
        return;
    }

    for (int j = 0; j < n; j++) {
        struct slot *sl = &s->slots[s->batch_slot[j]];
        bool prefill = sl->n_fed < sl->req->n_prompt;
        if (prefill) {
            sl->n_fed += s->batch[j].n_tokens;
            if (sl->n_fed < sl->req->n_prompt)
                continue;   /* more prompt chunks to go */
        }
        float *logits = s->batch[j].logits;
        struct eng_token_info info;
        float lse = 0, chosen_logit = 0;
        bool logprobs = sl->req->params.logprobs;

        /* The sampler changes the logits, so read them first. */
        if (logprobs) {
            lse = logprob_prepare(logits, s->n_vocab,
                                  sl->req->params.top_logprobs, &info);
            memcpy(s->raw_logits, logits, sizeof *logits *
                   (size_t)s->n_vocab);
        }
        int32_t id = eng_sampler_sample(sl->sampler, logits);
        if (logprobs) {
            chosen_logit = s->raw_logits[id];
            info.id = id;
            info.logprob = chosen_logit - lse;
            if (!eng_tok_is_eog(s->tok, id))
                req_add_info(sl->req, &info);
        }
        enum eng_finish f = slot_accept(s, sl, id);
        if (f != ENG_FINISH_NONE)
            slot_end(s, sl, f);
    }
}

static void *sched_main(void *arg)
{
    struct eng_sched *s = arg;
    for (;;) {
        admit(s);
        pthread_mutex_lock(&s->lock);
        bool stop = s->stopping;
        pthread_mutex_unlock(&s->lock);
        if (stop && !any_running(s))
            break;
        run_step(s);
    }
    return NULL;
}

/* ---- lifecycle ---- */

int eng_sched_start(struct eng_model *model, struct eng_tokenizer *tok,
                    const struct eng_sched_config *cfg,
                    struct eng_sched **out, char *err, size_t errlen)
{
    struct eng_sched *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->model = model;
    s->tok = tok;
    s->cfg = *cfg;
    s->n_vocab = eng_model_info(model)->n_vocab;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);

    size_t n_slots = (size_t)cfg->n_slots;
    s->slots = calloc(n_slots, sizeof *s->slots);
    s->batch = calloc(n_slots, sizeof *s->batch);
    s->batch_slot = calloc(n_slots, sizeof *s->batch_slot);
    s->logits = malloc(n_slots * (size_t)s->n_vocab * sizeof(float));
    s->raw_logits = malloc((size_t)s->n_vocab * sizeof(float));
    if (!s->slots || !s->batch || !s->batch_slot || !s->logits ||
        !s->raw_logits)
        goto nomem;
    for (int i = 0; i < cfg->n_slots; i++) {
        s->slots[i].kv = eng_kv_new(model, cfg->n_ctx);
        if (!s->slots[i].kv)
            goto nomem;
    }

    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        snprintf(err, errlen, "cannot start the scheduler thread");
        s->thread = 0;
        eng_sched_free(s);
        return -EAGAIN;
    }
    *out = s;
    return 0;

nomem:
    snprintf(err, errlen, "out of memory for %d slots of %d positions",
             cfg->n_slots, cfg->n_ctx);
    s->thread = 0;
    eng_sched_free(s);
    return -ENOMEM;
}

void eng_sched_stop(struct eng_sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    struct eng_request *r = s->queue_head;
    s->queue_head = s->queue_tail = NULL;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);

    while (r) {
        struct eng_request *next = r->next;
        req_finish(r, ENG_FINISH_ABORTED);
        eng_req_release(r);
        r = next;
    }
    if (s->thread) {
        pthread_join(s->thread, NULL);
        s->thread = 0;
    }
}

void eng_sched_free(struct eng_sched *s)
{
    if (!s)
        return;
    eng_sched_stop(s);
    for (int i = 0; s->slots && i < s->cfg.n_slots; i++) {
        eng_kv_free(s->slots[i].kv);
        free(s->slots[i].held);
    }
    free(s->slots);
    free(s->batch);
    free(s->batch_slot);
    free(s->logits);
    free(s->raw_logits);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int eng_sched_n_ctx(const struct eng_sched *s)
{
    return s->cfg.n_ctx;
}

int eng_sched_submit_all(struct eng_sched *s, struct eng_request **r,
                         int n)
{
    pthread_mutex_lock(&s->lock);
    if (s->stopping || (s->cfg.max_queue > 0 &&
                        s->n_queued >= s->cfg.max_queue)) {
        int rc = s->stopping ? -ESHUTDOWN : -EAGAIN;
        pthread_mutex_unlock(&s->lock);
        for (int i = 0; i < n; i++)
            req_finish(r[i], ENG_FINISH_ABORTED);
        return rc;
    }
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&r[i]->lock);
        r[i]->refs++;
        pthread_mutex_unlock(&r[i]->lock);
        s->n_queued++;
        if (s->queue_tail)
            s->queue_tail->next = r[i];
        else
            s->queue_head = r[i];
        s->queue_tail = r[i];
    }
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int eng_sched_submit(struct eng_sched *s, struct eng_request *r)
{
    return eng_sched_submit_all(s, &r, 1);
}

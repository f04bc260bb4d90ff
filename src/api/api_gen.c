/*
 * The generation job behind /v1/completions and /v1/chat/completions:
 * submits one engine request per choice, collects their text, writes
 * the usage row, and shapes OpenAI's response or event stream.
 *
 * Usage is recorded exactly once per HTTP request: before the response
 * is built (whole responses), before the last events are written
 * (streams), or when a stream is closed early because the client left.
 */
#include "api/api_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "util/util_log.h"

/* How long to wait for the engine before checking the client again. */
#define WAIT_SLICE_MS 50
/* How long a closing stream waits for its cancelled requests. */
#define CANCEL_WAIT_MS 60000
/* Status recorded for a request whose client went away (nginx's 499). */
#define STATUS_CLIENT_GONE 499

struct choice {
    struct eng_request *req;
    int prompt_index;
    char *text;
    size_t len, cap;
    int n_completion;
    enum eng_finish finish;
    bool finish_sent;
    struct eng_token_info *infos;   /* whole responses with logprobs */
    int n_infos, infos_cap;
    size_t text_offset;             /* completions logprobs, streaming */
};

struct api_stream {
    struct api_server *srv;
    bool chat;
    bool include_usage;
    bool logprobs;
    int top_logprobs;
    char id[48];
    int64_t created;
    struct store_key key;
    int64_t start_ms;
    struct api_conn conn;

    int n_choices;
    struct choice choices[API_MAX_PROMPTS * API_MAX_N];
    int prompt_tokens;
    char *echo[API_MAX_PROMPTS];

    bool recorded;
    bool role_sent;
    bool done_sent;
    char *out;
    size_t out_len, out_off, out_cap;
};

static const char *endpoint_of(bool chat)
{
    return chat ? "/v1/chat/completions" : "/v1/completions";
}

static void make_id(char *buf, size_t cap, const char *prefix)
{
    unsigned char raw[12];
    char hex[sizeof raw * 2 + 1];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    snprintf(buf, cap, "%s-%s", prefix, hex);
}

/* ---- metering ---- */

static int record_usage(struct api_stream *st, int status,
                        const char *finish)
{
    struct store_usage u;
    int completion = 0;

    memset(&u, 0, sizeof u);
    for (int i = 0; i < st->n_choices; i++)
        completion += st->choices[i].n_completion;
    u.ts_ms = st->start_ms;
    snprintf(u.request_id, sizeof u.request_id, "%s", st->id);
    snprintf(u.key_id, sizeof u.key_id, "%s", st->key.key_id);
    u.tenant_id = st->key.tenant_id;
    snprintf(u.model, sizeof u.model, "%s", st->srv->model_id);
    snprintf(u.endpoint, sizeof u.endpoint, "%s", endpoint_of(st->chat));
    u.prompt_tokens = st->prompt_tokens;
    u.completion_tokens = completion;
    u.latency_ms = api_now_ms() - st->start_ms;
    u.http_status = status;
    snprintf(u.finish_reason, sizeof u.finish_reason, "%s", finish);

    st->recorded = true;
    int rc = gw_ledger_record(st->srv->ledger, &u);
    if (rc != 0)
        log_error("api", "request %s: usage row for key %s was not "
                  "recorded (rc %d)", st->id, st->key.key_id, rc);
    return rc;
}

void api_record_failure(struct api_server *srv, const struct api_call *call,
                        const char *endpoint, struct api_reply *reply)
{
    struct store_usage u;
    int status = reply->status;
    memset(&u, 0, sizeof u);
    u.ts_ms = call->start_ms;
    make_id(u.request_id, sizeof u.request_id, "req");
    snprintf(reply->request_id, sizeof reply->request_id, "%s",
             u.request_id);
    snprintf(u.key_id, sizeof u.key_id, "%s", call->key->key_id);
    u.tenant_id = call->key->tenant_id;
    snprintf(u.model, sizeof u.model, "%s", srv->model_id);
    snprintf(u.endpoint, sizeof u.endpoint, "%s", endpoint);
    u.latency_ms = api_now_ms() - call->start_ms;
    u.http_status = status;
    snprintf(u.finish_reason, sizeof u.finish_reason, "error");
    if (gw_ledger_record(srv->ledger, &u) != 0)
        log_error("api", "usage row for a failed request by key %s was "
                  "not recorded", call->key->key_id);
}

/* ---- collecting output ---- */

static int append(char **buf, size_t *len, size_t *cap, const char *text,
                  size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t grown_cap = *cap ? *cap * 2 : 256;
        while (grown_cap < *len + n + 1)
            grown_cap *= 2;
        char *grown = realloc(*buf, grown_cap);
        if (!grown)
            return -1;
        *buf = grown;
        *cap = grown_cap;
    }
    memcpy(*buf + *len, text, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/*
 * Take what choice C has produced, waiting up to TIMEOUT_MS. Returns the
 * new text through TEXT/N (valid until the next take) and updates the
 * choice's counters.
 */
static void take(struct choice *c, int timeout_ms, const char **text,
                 size_t *n, const struct eng_token_info **tokens,
                 int *n_tokens)
{
    struct eng_req_update u;
    eng_req_take(c->req, timeout_ms, &u);
    c->n_completion = u.n_completion;
    c->finish = u.finish;
    *text = u.text;
    *n = u.text_len;
    *tokens = u.tokens;
    *n_tokens = u.n_tokens;
}

static int keep_infos(struct choice *c, const struct eng_token_info *tokens,
                      int n)
{
    if (n == 0)
        return 0;
    if (c->n_infos + n > c->infos_cap) {
        int cap = c->infos_cap ? c->infos_cap * 2 : 32;
        while (cap < c->n_infos + n)
            cap *= 2;
        struct eng_token_info *grown = realloc(c->infos,
                                               sizeof *grown * (size_t)cap);
        if (!grown)
            return -1;
        c->infos = grown;
        c->infos_cap = cap;
    }
    memcpy(c->infos + c->n_infos, tokens, sizeof *tokens * (size_t)n);
    c->n_infos += n;
    return 0;
}

static bool all_finished(const struct api_stream *st)
{
    for (int i = 0; i < st->n_choices; i++)
        if (st->choices[i].finish == ENG_FINISH_NONE)
            return false;
    return true;
}

static bool client_gone(const struct api_stream *st)
{
    return st->conn.client_gone && st->conn.client_gone(st->conn.ctx);
}

static void cancel_all(struct api_stream *st)
{
    for (int i = 0; i < st->n_choices; i++)
        if (st->choices[i].req)
            eng_req_cancel(st->choices[i].req);
}

/* Wait until every choice has finished, cancelled ones included. */
static void drain(struct api_stream *st, int limit_ms)
{
    int64_t deadline = api_now_ms() + limit_ms;
    for (int i = 0; i < st->n_choices; i++) {
        struct choice *c = &st->choices[i];
        while (c->req && c->finish == ENG_FINISH_NONE &&
               api_now_ms() < deadline) {
            const char *text;
            const struct eng_token_info *tokens;
            size_t n;
            int n_tokens;
            take(c, WAIT_SLICE_MS, &text, &n, &tokens, &n_tokens);
        }
    }
}

static void job_free(struct api_stream *st)
{
    for (int i = 0; i < st->n_choices; i++) {
        eng_req_release(st->choices[i].req);
        free(st->choices[i].text);
        free(st->choices[i].infos);
    }
    for (int i = 0; i < API_MAX_PROMPTS; i++)
        free(st->echo[i]);
    free(st->out);
    free(st);
}

/* ---- response shapes ---- */

static const char *finish_reason(enum eng_finish f)
{
    return f == ENG_FINISH_LENGTH ? "length" : "stop";
}

static cJSON *usage_json(const struct api_stream *st)
{
    int completion = 0;
    for (int i = 0; i < st->n_choices; i++)
        completion += st->choices[i].n_completion;
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", st->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", completion);
    cJSON_AddNumberToObject(u, "total_tokens",
                            st->prompt_tokens + completion);
    return u;
}

static cJSON *envelope(const struct api_stream *st, bool chunk)
{
    const char *object;
    if (st->chat)
        object = chunk ? "chat.completion.chunk" : "chat.completion";
    else
        object = "text_completion";
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", st->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)st->created);
    cJSON_AddStringToObject(root, "model", st->srv->model_id);
    cJSON_AddStringToObject(root, "system_fingerprint", "taphouse");
    return root;
}

static char *whole_response(const struct api_stream *st)
{
    cJSON *root = envelope(st, false);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    for (int i = 0; i < st->n_choices; i++) {
        const struct choice *c = &st->choices[i];
        cJSON *item = cJSON_CreateObject();
        cJSON_AddNumberToObject(item, "index", i);
        if (st->chat) {
            cJSON *msg = cJSON_AddObjectToObject(item, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            cJSON_AddStringToObject(msg, "content", c->text ? c->text : "");
            cJSON_AddNullToObject(msg, "refusal");
        } else {
            cJSON_AddStringToObject(item, "text", c->text ? c->text : "");
        }
        if (!st->logprobs) {
            cJSON_AddNullToObject(item, "logprobs");
        } else if (st->chat) {
            cJSON_AddItemToObject(item, "logprobs", api_logprobs_chat(
                st->srv, c->infos, c->n_infos));
        } else {
            const char *echo = st->echo[c->prompt_index];
            size_t offset = echo ? strlen(echo) : 0;
            cJSON_AddItemToObject(item, "logprobs", api_logprobs_completion(
                st->srv, c->infos, c->n_infos, st->top_logprobs, &offset));
        }
        cJSON_AddStringToObject(item, "finish_reason",
                                finish_reason(c->finish));
        cJSON_AddItemToArray(choices, item);
    }
    cJSON_AddItemToObject(root, "usage", usage_json(st));
    char *body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return body;
}

/* Append one "data: JSON\n\n" event and free ROOT. */
static int emit_event(struct api_stream *st, cJSON *root)
{
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json)
        return -1;
    int rc = append(&st->out, &st->out_len, &st->out_cap, "data: ", 6);
    if (rc == 0)
        rc = append(&st->out, &st->out_len, &st->out_cap, json,
                    strlen(json));
    if (rc == 0)
        rc = append(&st->out, &st->out_len, &st->out_cap, "\n\n", 2);
    free(json);
    return rc;
}

/* A chunk for choice INDEX with TEXT (may be NULL) and FINISH (NULL while
 * running). ROLE adds the assistant role to a chat delta. TOKENS are the
 * log-probabilities to send with the text, when requested. */
static int emit_chunk(struct api_stream *st, int index, const char *text,
                      size_t n, const char *finish, bool role,
                      const struct eng_token_info *tokens, int n_tokens)
{
    cJSON *root = envelope(st, true);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *item = cJSON_CreateObject();
    cJSON_AddNumberToObject(item, "index", index);

    char *copy = NULL;
    if (text) {
        copy = malloc(n + 1);
        if (!copy) {
            cJSON_Delete(item);
            cJSON_Delete(root);
            return -1;
        }
        memcpy(copy, text, n);
        copy[n] = '\0';
    }
    if (st->chat) {
        cJSON *delta = cJSON_AddObjectToObject(item, "delta");
        if (role)
            cJSON_AddStringToObject(delta, "role", "assistant");
        if (copy)
            cJSON_AddStringToObject(delta, "content", copy);
    } else {
        cJSON_AddStringToObject(item, "text", copy ? copy : "");
    }
    free(copy);
    if (st->logprobs && n_tokens > 0) {
        struct choice *c = &st->choices[index];
        cJSON *lp = st->chat
            ? api_logprobs_chat(st->srv, tokens, n_tokens)
            : api_logprobs_completion(st->srv, tokens, n_tokens,
                                      st->top_logprobs, &c->text_offset);
        cJSON_AddItemToObject(item, "logprobs", lp);
    } else {
        cJSON_AddNullToObject(item, "logprobs");
    }
    if (finish)
        cJSON_AddStringToObject(item, "finish_reason", finish);
    else
        cJSON_AddNullToObject(item, "finish_reason");
    cJSON_AddItemToArray(choices, item);
    if (st->include_usage)
        cJSON_AddNullToObject(root, "usage");
    return emit_event(st, root);
}

/* Result of a finished job: HTTP status, finish reason and, for a
 * failure, the message for the client. */
struct outcome {
    int status;
    const char *finish;
    const char *message;
};

static struct outcome job_outcome(const struct api_stream *st)
{
    struct outcome o = { 200, finish_reason(st->choices[0].finish), NULL };
    for (int i = 0; i < st->n_choices; i++) {
        enum eng_finish f = st->choices[i].finish;
        if (f == ENG_FINISH_ERROR) {
            o = (struct outcome){ 500, "error", "The model failed to "
                                  "generate; see the server log." };
            break;
        }
        if (f == ENG_FINISH_ABORTED || f == ENG_FINISH_CANCELLED)
            o = (struct outcome){ 503, "aborted", "The server is shutting "
                                  "down; retry the request." };
    }
    return o;
}

/* ---- streaming ---- */

/* The events that end a stream: usage or an error, then [DONE]. */
static void emit_tail(struct api_stream *st)
{
    struct outcome o = job_outcome(st);
    if (record_usage(st, o.status, o.finish) != 0 && o.status == 200) {
        o.status = 500;
        o.message = "The usage ledger could not be written.";
    }

    if (o.status != 200) {
        cJSON *root = cJSON_CreateObject();
        cJSON *error = cJSON_AddObjectToObject(root, "error");
        cJSON_AddStringToObject(error, "message", o.message);
        cJSON_AddStringToObject(error, "type", "server_error");
        cJSON_AddNullToObject(error, "param");
        cJSON_AddNullToObject(error, "code");
        emit_event(st, root);
    } else if (st->include_usage) {
        cJSON *root = envelope(st, true);
        cJSON_AddArrayToObject(root, "choices");
        cJSON_AddItemToObject(root, "usage", usage_json(st));
        emit_event(st, root);
    }
    append(&st->out, &st->out_len, &st->out_cap, "data: [DONE]\n\n", 14);
    st->done_sent = true;
}

/* Poll one choice; returns true if it produced an event. */
static bool poll_choice(struct api_stream *st, int i, int timeout_ms)
{
    struct choice *c = &st->choices[i];
    const char *text;
    const struct eng_token_info *tokens;
    size_t n;
    int n_tokens;
    bool emitted = false;

    if (c->finish_sent)
        return false;
    take(c, timeout_ms, &text, &n, &tokens, &n_tokens);
    if (n > 0 || n_tokens > 0) {
        emit_chunk(st, i, text, n, NULL, false, tokens, n_tokens);
        emitted = true;
    }
    if (c->finish == ENG_FINISH_STOP || c->finish == ENG_FINISH_LENGTH) {
        emit_chunk(st, i, NULL, 0, finish_reason(c->finish), false, NULL,
                   0);
        c->finish_sent = true;
        emitted = true;
    } else if (c->finish != ENG_FINISH_NONE) {
        /* Failed or aborted: the tail carries the error event. */
        c->finish_sent = true;
    }
    return emitted;
}

/* Fill st->out with the next events. Returns -1 if the client left. */
static int produce(struct api_stream *st)
{
    if (!st->role_sent) {
        st->role_sent = true;
        for (int i = 0; i < st->n_choices; i++) {
            const char *echo = st->echo[st->choices[i].prompt_index];
            if (st->chat) {
                emit_chunk(st, i, "", 0, NULL, true, NULL, 0);
            } else if (echo) {
                emit_chunk(st, i, echo, strlen(echo), NULL, false, NULL, 0);
                st->choices[i].text_offset = strlen(echo);
            }
        }
        if (st->out_len > 0)
            return 0;
    }

    for (;;) {
        bool emitted = false;
        for (int i = 0; i < st->n_choices; i++)
            emitted |= poll_choice(st, i, 0);
        if (all_finished(st)) {
            bool all_sent = true;
            for (int i = 0; i < st->n_choices; i++)
                all_sent &= st->choices[i].finish_sent;
            if (all_sent && !emitted)
                emit_tail(st);
            return 0;
        }
        if (emitted)
            return 0;
        if (client_gone(st))
            return -1;

        /* Nothing new: wait on the first running choice. */
        for (int i = 0; i < st->n_choices; i++) {
            if (!st->choices[i].finish_sent) {
                emitted = poll_choice(st, i, WAIT_SLICE_MS);
                break;
            }
        }
        if (emitted)
            return 0;
    }
}

ssize_t api_stream_read(struct api_stream *st, char *buf, size_t cap)
{
    while (st->out_off == st->out_len) {
        if (st->done_sent)
            return -1;
        st->out_len = 0;
        st->out_off = 0;
        if (produce(st) < 0)
            return -1;
    }
    size_t n = st->out_len - st->out_off;
    if (n > cap)
        n = cap;
    memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    return (ssize_t)n;
}

void api_stream_close(struct api_stream *st)
{
    if (!st)
        return;
    if (!st->recorded) {
        cancel_all(st);
        drain(st, CANCEL_WAIT_MS);
        int tokens = 0;
        for (int i = 0; i < st->n_choices; i++)
            tokens += st->choices[i].n_completion;
        log_info("api", "request %s: client went away after %d tokens",
                 st->id, tokens);
        record_usage(st, STATUS_CLIENT_GONE, "cancelled");
    }
    job_free(st);
}

/* ---- running a job ---- */

static int check_context(struct api_server *srv, struct api_gen *g,
                         struct api_reply *reply)
{
    for (int i = 0; i < g->n_prompts; i++) {
        int n_prompt = g->n_prompt[i];
        int max_tokens = g->max_tokens;

        if (max_tokens == 0)
            max_tokens = g->chat ? srv->n_ctx - n_prompt : 16;
        if (max_tokens < 1 || n_prompt + max_tokens > srv->n_ctx) {
            api_reply_error(reply, 400, "invalid_request_error",
                            g->chat ? "messages" : "prompt",
                            "context_length_exceeded",
                            "This model's maximum context length is %d "
                            "tokens. However, you requested %d tokens "
                            "(%d in the prompt, %d for the completion). "
                            "Please reduce the prompt or max_tokens.",
                            srv->n_ctx, n_prompt + (max_tokens > 0 ?
                            max_tokens : 0), n_prompt,
                            max_tokens > 0 ? max_tokens : 0);
            return -1;
        }
    }
    if (g->max_tokens == 0 && !g->chat)
        g->max_tokens = 16;
    return 0;
}

static int submit_all(struct api_server *srv, struct api_stream *st,
                      struct api_gen *g)
{
    struct eng_request *reqs[API_MAX_PROMPTS * API_MAX_N];
    uint64_t seed = g->params.sampling.seed;

    for (int p = 0; p < g->n_prompts; p++) {
        for (int k = 0; k < g->n; k++) {
            struct eng_gen_params params = g->params;
            params.max_tokens = g->max_tokens ? g->max_tokens
                                              : srv->n_ctx - g->n_prompt[p];
            /* Each copy of a prompt draws differently, reproducibly. */
            params.sampling.seed = seed + (uint64_t)k;
            params.group = st->key.tenant_id;

            struct choice *c = &st->choices[st->n_choices];
            c->prompt_index = p;
            c->req = eng_req_new(g->prompts[p], g->n_prompt[p], &params);
            if (!c->req)
                return -ENOMEM;
            reqs[st->n_choices++] = c->req;
        }
    }
    return eng_sched_submit_all(srv->sched, reqs, st->n_choices);
}

/* Wait for every choice of a whole (non-stream) response. */
static int collect(struct api_stream *st)
{
    for (;;) {
        /* Block on the first running choice only, then poll the rest. */
        bool waited = false;
        for (int i = 0; i < st->n_choices; i++) {
            struct choice *c = &st->choices[i];
            const char *text;
            const struct eng_token_info *tokens;
            size_t n;
            int n_tokens;
            if (c->finish != ENG_FINISH_NONE)
                continue;
            take(c, waited ? 0 : WAIT_SLICE_MS, &text, &n, &tokens,
                 &n_tokens);
            waited = true;
            if (n > 0 && append(&c->text, &c->len, &c->cap, text, n) != 0)
                return -1;
            if (keep_infos(c, tokens, n_tokens) != 0)
                return -1;
        }
        if (all_finished(st))
            return 0;
        if (client_gone(st))
            return -1;
    }
}

void api_gen_run(struct api_server *srv, const struct api_call *call,
                 struct api_gen *g, struct api_reply *reply)
{
    struct api_stream *st = NULL;

    if (check_context(srv, g, reply) < 0)
        goto fail;

    st = calloc(1, sizeof *st);
    if (!st) {
        api_reply_error(reply, 500, "server_error", NULL, NULL,
                        "out of memory");
        goto fail;
    }
    st->srv = srv;
    st->chat = g->chat;
    st->include_usage = g->include_usage;
    st->logprobs = g->params.logprobs;
    st->top_logprobs = g->params.top_logprobs;
    make_id(st->id, sizeof st->id, g->chat ? "chatcmpl" : "cmpl");
    snprintf(reply->request_id, sizeof reply->request_id, "%s", st->id);
    st->created = call->start_ms / 1000;
    st->key = *call->key;
    st->start_ms = call->start_ms;
    st->conn = call->conn;
    for (int p = 0; p < g->n_prompts; p++) {
        st->prompt_tokens += g->n_prompt[p];
        st->echo[p] = g->echo[p];
        g->echo[p] = NULL;
    }

    int rc = submit_all(srv, st, g);
    if (rc != 0) {
        /* Nothing was queued, so no choice generated a token. */
        record_usage(st, 503, "error");
        log_warn("api", "request %s for key %s rejected: %s", st->id,
                 st->key.key_id, rc == -EAGAIN ? "queue full"
                 : rc == -ESHUTDOWN ? "shutting down" : "out of memory");
        api_reply_error(reply, 503, "server_error", NULL, "overloaded",
                        "%s", rc == -EAGAIN
                        ? "The server has too many requests waiting; "
                          "retry later."
                        : "The server is shutting down or out of memory.");
        job_free(st);
        api_gen_free(g);
        return;
    }
    api_gen_free(g);

    if (g->stream) {
        reply->status = 200;
        reply->stream = st;
        return;
    }

    if (collect(st) != 0) {
        cancel_all(st);
        drain(st, CANCEL_WAIT_MS);
        record_usage(st, STATUS_CLIENT_GONE, "cancelled");
        api_reply_error(reply, 499, "invalid_request_error", NULL, NULL,
                        "The client closed the connection.");
        job_free(st);
        return;
    }

    for (int i = 0; i < st->n_choices; i++) {
        /* Echoed prompt text comes first (completions only). */
        const char *echo = st->echo[st->choices[i].prompt_index];
        if (echo) {
            struct choice *c = &st->choices[i];
            char *joined = NULL;
            size_t len = 0, cap = 0;
            append(&joined, &len, &cap, echo, strlen(echo));
            if (c->text)
                append(&joined, &len, &cap, c->text, c->len);
            free(c->text);
            c->text = joined;
            c->len = len;
            c->cap = cap;
        }
    }
    struct outcome o = job_outcome(st);
    rc = record_usage(st, o.status, o.finish);
    if (o.status != 200) {
        api_reply_error(reply, o.status, "server_error", NULL, NULL, "%s",
                        o.message);
    } else if (rc != 0) {
        api_reply_error(reply, 500, "server_error", NULL, NULL,
                        "The usage ledger could not be written; the "
                        "request was not served.");
    } else {
        reply->status = 200;
        reply->body = whole_response(st);
    }
    job_free(st);
    return;

fail:
    api_gen_free(g);
    if (reply->status >= 400)
        api_record_failure(srv, call, endpoint_of(g->chat), reply);
}

void api_generate(struct api_server *srv, const struct api_call *call,
                  bool chat, api_parse_fn parse, struct api_reply *reply)
{
    struct api_gen *g = calloc(1, sizeof *g);
    cJSON *root = NULL;

    if (!g) {
        api_reply_error(reply, 500, "server_error", NULL, NULL,
                        "out of memory");
        return;
    }
    g->chat = chat;
    root = api_parse_body(call, reply);
    if (!root)
        goto fail;
    if (api_parse_common(srv, root, g, reply) < 0)
        goto fail;
    if (parse(srv, root, g, reply) < 0)
        goto fail;

    api_gen_run(srv, call, g, reply);
    cJSON_Delete(root);
    free(g);
    return;

fail:
    api_gen_free(g);
    cJSON_Delete(root);
    free(g);
    api_record_failure(srv, call, endpoint_of(chat), reply);
}
